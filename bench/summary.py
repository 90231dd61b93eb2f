"""The report's opening: the answer a sweep supports, in words, from the headline alone.

Per dataset: for each model, the data-efficiency claim its valid reference supports (or
why none is made: ``bench.validity``), its best strategy at each training size, and how
far its best model is from the published potentials trained on the same data
(``[<dataset>.published]`` in the dataset catalog). When no model of a dataset has a valid
reference, the summary says plainly that the sweep cannot answer the question at its budget.

Example:
    >>> paragraphs, (header, rows) = summarise(headline(records), labels)
"""

from __future__ import annotations

from collections import defaultdict

from bench import headline as hl
from bench.validity import RULES
from datasets.registry import catalog

FORCES_MAE, ENERGY_MAE = "forces_mae_mev_per_ang", "energy_mae_mev_per_atom"


def published(dataset: str) -> tuple[str, dict[str, dict[str, float]]]:
    """(where the numbers come from, potential -> test MAE) for a catalog dataset, or ('', {})."""
    entry = dict(catalog().get(dataset, {}).get("published", {}))
    source = entry.pop("source", "")
    return source, {name: values for name, values in entry.items() if isinstance(values, dict)}


def _pm(point: hl.Point, metric: str, digits: int = 1) -> str:
    s = point.stat(metric)
    if s is None:
        return "–"
    return f"{s.mean:,.{digits}f}" + (f" ± {s.std:,.{digits}f}" if s.n > 1 else "")


def _size(point: hl.Point) -> str:
    return f"{point.size} structures ({100 * point.fraction:.0f} %)" if point.fraction else f"{point.size} structures"


def _trained(points: list[hl.Point]) -> bool:
    return points[0].records[0].spec.trains


def _claims(h: hl.Headline, labels: dict, mk: tuple) -> list[str]:
    tol = f"{100 * h.settings['tolerance']:g} %"
    ref = h.references[mk]
    out = []
    for row in h.rows:
        if row.key.model_key != mk or not _trained([row.largest]) or row.largest.records[0].spec.is_reference:
            continue
        parts = []
        for metric, what, digits in ((hl.FORCES, "forces", 0), (hl.ENERGY, "energy", 1)):
            p = row.within.get(metric)
            parts.append(f"{what} from {_size(p)} ({_pm(p, metric, digits)} vs {_pm(ref.point, metric, digits)})"
                         if p else f"{what} at no size up to {_size(row.largest)}")
        out.append(f"{labels[row.key]} within {tol} of the reference: " + "; ".join(parts))
    return out


def _best(curves: dict, mk: tuple) -> dict[int, tuple[hl.CurveKey, hl.Point]]:
    """Training size -> the strategy with the lowest mean test force RMSE there (trained or
    E0-refit curves: what a practitioner could use at that size)."""
    best: dict[int, tuple[hl.CurveKey, hl.Point]] = {}
    for key, points in curves.items():
        if key.model_key != mk:
            continue
        for p in points:
            if p.size and p.mean(hl.FORCES) is not None and (
                    p.size not in best or p.mean(hl.FORCES) < best[p.size][1].mean(hl.FORCES)):
                best[p.size] = (key, p)
    return best


def _capped(curves: dict, dataset: str) -> str:
    """The caveat for published numbers when this sweep's test set was capped (--test-size)."""
    caps = {r.spec.test_size for key, points in curves.items() if key.dataset == dataset
            for p in points for r in p.records if r.spec.test_size}
    if not caps:
        return ""
    return (f" The published potentials were measured on the full test set; this sweep's was capped to at most "
            f"{', '.join(str(c) for c in sorted(caps))} frames (--test-size), so the two are not on the same frames.")


def summarise(h: hl.Headline, curves: dict, labels: dict) -> tuple[list[str], tuple[list[str], list[list[str]]]]:
    """Paragraphs answering the sweep's question, and a table of the best strategy per size."""
    paragraphs: list[str] = []
    table_rows: list[list[str]] = []
    by_dataset: dict[str, list[tuple]] = defaultdict(list)
    for key in curves:
        if key.model_key not in by_dataset[key.dataset]:
            by_dataset[key.dataset].append(key.model_key)
    for dataset, models in sorted(by_dataset.items()):
        valid = [mk for mk in models if mk in h.references and h.references[mk].verdict.valid]
        lines = []
        for mk in sorted(models):
            name = f"{mk[1]} ({mk[2]})"
            ref = h.references.get(mk)
            if ref is None:
                lines.append(f"{name}: no scratch reference, so no data-efficiency claim.")
            elif not ref.verdict.valid:
                lines.append(f"{name}: no data-efficiency claim: {ref.verdict.text}.")
            else:
                claims = _claims(h, labels, mk)
                lines.append(f"{name}: valid reference, scratch on {_size(ref.point)}: "
                             f"F {_pm(ref.point, hl.FORCES, 0)} meV/Å, E {_pm(ref.point, hl.ENERGY)} meV/atom. "
                             + (" ".join(f"{c}." for c in claims) if claims else "No trained strategy to compare."))
            best = _best(curves, mk)
            for size in sorted(best):
                key, p = best[size]
                table_rows.append([dataset, name, _size(p), labels[key], _pm(p, hl.FORCES, 0), _pm(p, FORCES_MAE, 0),
                                   _pm(p, hl.ENERGY), _pm(p, ENERGY_MAE)])
        if not valid:
            lines.insert(0, f"{dataset}: this sweep cannot say whether fine-tuning on a fraction of the data matches "
                            "converged scratch training on all of it: no model has a valid reference at this budget "
                            "(reasons below).")
        source, refs = published(dataset)
        if refs:
            pub = "; ".join(f"{name} E {v['energy_mae_mev_per_atom']:g} meV/atom, F {v['forces_mae_mev_per_ang']:g} "
                            f"meV/Å" for name, v in refs.items())
            here = []
            for mk in sorted(models):
                best = _best(curves, mk)
                if best:
                    key, p = best[max(best)]
                    here.append(f"{mk[1]} {labels[key]} on {_size(p)}: E {_pm(p, ENERGY_MAE)} meV/atom, "
                                f"F {_pm(p, FORCES_MAE, 0)} meV/Å")
            lines.append(f"Published potentials trained on the whole training set, test MAE ({source}): {pub}. "
                         f"Best here at the largest size, test MAE: " + ("; ".join(here) or "none") + "."
                         + _capped(curves, dataset))
        paragraphs += lines
    paragraphs.append(RULES)
    header = ["dataset", "model", "training size", "best strategy (lowest test F RMSE)", "F RMSE (meV/Å)",
              "F MAE (meV/Å)", "E RMSE (meV/atom)", "E MAE (meV/atom)"]
    return paragraphs, (header, table_rows)
