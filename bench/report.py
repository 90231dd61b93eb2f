"""Markdown and single-file HTML reports built only from stored records.

    python -m bench report reports/quick       # writes report.md and report.html there

Runs that differ only in seed are aggregated (mean ± std). The headline numbers come from
``bench.headline`` and the plots from ``bench.figures``. Where records carry them, physical
properties (``properties``), saved models and their MD stability (``artefacts.model``, spec
kind ``md``), forgetting (``forgetting``) and surrogate distillation jobs (spec kind
``surrogate``) get sections of their own; surrogate jobs stay out of every other
table but the failures. Failed, skipped and diverged runs are listed with their reasons,
never dropped. Plots are PNGs embedded in the HTML (it opens
offline, no scripts) and written beside the Markdown.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path

from bench import figures, lr_grid, targets
from bench import headline as hl
from bench.core.contract import Environment, Provenance, Record, SurrogateSpec, TrainSpec
from bench.planned import incomplete_note
from bench.registry import MODELS
from bench.saved_report import saved_models_section
from bench.sections import Section
from bench.sections import fmt as _fmt
from bench.store import Store
from bench.summary import published, summarise

HEADLINE_SETTINGS = "headline.json"

MAX_GROUPS = 20  # per-group rows per run group (OC20 has hundreds of trajectories)
MAX_ROWS = 60  # rows per property, forgetting and surrogate table (the rest are in the records)


def _ms(stat: hl.Stat | None, digits=1, scale=1.0) -> str:
    if stat is None:
        return "–"
    if stat.n == 1:
        return _fmt(scale * stat.mean, digits)
    return f"{_fmt(scale * stat.mean, digits)} ± {_fmt(scale * stat.std, digits)}"


def _size(p: hl.Point | None, missing="–") -> str:
    if p is None:
        return missing
    if not p.size:
        return "zero-shot"
    return f"{p.size} ({100 * p.fraction:.0f} %)" if p.fraction else str(p.size)


def _model(key) -> str:
    return f"{key.model} ({key.model_key[2]})"


def _rm(point: hl.Point, rmse: str, digits: int = 1) -> str:
    """RMSE (mean ± std over seeds) / MAE (mean) of a point."""
    return f"{_ms(point.stat(rmse), digits)} / {_fmt(point.mean(rmse.replace('_rmse_', '_mae_')), digits)}"


def _headline_section(h: hl.Headline, labels: dict) -> Section:
    s = h.settings
    tol = f"{100 * s['tolerance']:g} %"
    fr = [f"{100 * f:g} %" for f in s["fractions"]]
    sec = Section("Headline", folded=True, text=(
        f"One row per dataset × model × strategy, mean over seeds; errors as RMSE / MAE. Reference: "
        f"scratch training of the same model at its largest stored training size (first table, with "
        f"whether it supports claims and why not). Claims need a valid reference (see the summary's "
        f"rules); without one, 'claims' says why and the claim columns stay empty. 'within {tol} "
        f"from': smallest training size whose mean + std test RMSE over seeds is "
        f"≤ (1 + {s['tolerance']:g}) × the reference's ('not reached': never). 'F/ref @ {fr[0]}' etc.: "
        f"mean test RMSE at that fraction of the training pool / the reference's; * = log-log "
        f"interpolated between the neighbouring sizes, – = outside the measured sizes. Chemical "
        f"accuracy: energy error per structure ≤ 1 kcal/mol = {s['chemical_accuracy_mev']:g} meV, the "
        f"error per structure being the test energy RMSE per atom × the mean number of atoms per test "
        f"structure; the smallest size reaching it. Time to target: training wall time (epoch "
        f"elapsed_s) until the validation force RMSE first reaches the model's target (below), at the "
        f"largest size; (k/n): seeds that reached it, the time is their mean. Step vs finetune: "
        f"training step time per structure relative to full fine-tuning, same model and size."))
    refs = []
    for (ds, model, ckpt), ref in sorted(h.references.items()):
        p = ref.point
        target = s["time_target_mev_per_ang"] or ref.val_forces_target(s["tolerance"])
        zero = ref.zero_e0
        refs.append([ds, f"{model} ({ckpt})", _size(p), str(len(p.records)), _rm(p, hl.FORCES), _rm(p, hl.ENERGY),
                     f"{_fmt(zero.mean(hl.FORCES))} / {_fmt(zero.mean(hl.ENERGY))}" if zero else "–",
                     _fmt(ref.val_forces), _fmt(target) if ref.verdict.valid else "–",
                     "valid" if ref.verdict.valid else f"⚠ {ref.verdict.text}"])
    sec.table(["dataset", "model", "reference: scratch at", "seeds", "F RMSE / MAE (meV/Å)",
               "E RMSE / MAE (meV/atom)", "zero-shot-e0 F / E RMSE", "final val F RMSE (meV/Å)",
               "val F target (meV/Å)", "supports claims?"], refs)

    def ratio(a: hl.AtFraction | None) -> str:
        return "–" if a is None else f"{a.ratio:.2f}×{'*' if a.interpolated else ''}"

    def within(row, metric) -> str:
        return "–" if row.blocked else _size(row.within.get(metric), "not reached")

    rows = []
    for r in h.rows:
        t = r.time_to_target
        time = "–" if t is None else (f"{_fmt(t.seconds.mean, 0)} s ({t.reached}/{t.runs})" if t.seconds
                                       else f"not reached (0/{t.runs})")
        rows.append([r.key.dataset, _model(r.key), labels[r.key],
                     f"{_size(r.largest)}, {len(r.largest.records)} seed(s)",
                     _rm(r.largest, hl.FORCES), _rm(r.largest, hl.ENERGY),
                     "valid" if r.blocked is None else f"none: {r.blocked}",
                     within(r, hl.FORCES), within(r, hl.ENERGY),
                     *[ratio(r.at_fraction.get((m, f))) for m in (hl.FORCES, hl.ENERGY) for f in s["fractions"]],
                     _size(r.chemical_accuracy, "not reached"), time,
                     "–" if r.step_ratio is None else f"{r.step_ratio:.2f}×",
                     _fmt(r.inference_atoms_per_s, 0), _fmt(r.peak_rss_mb, 0)])
    sec.table(["dataset", "model", "strategy", "largest size", "F RMSE / MAE (meV/Å)", "E RMSE / MAE (meV/atom)",
               "claims", f"F within {tol} from", f"E within {tol} from",
               *[f"{m}/ref @ {f}" for m in "FE" for f in fr], "chem. acc. from", "time to val F target",
               "step vs finetune", "inference (atoms/s)", "peak RSS (MB)"], rows)
    return sec


def _best_per_family(curves: dict, dataset: str) -> dict[str, hl.CurveKey]:
    """Per family, the trained curve with the lowest mean test force RMSE at its largest size."""
    best: dict[str, hl.CurveKey] = {}
    for key, pts in curves.items():
        if (key.dataset == dataset and pts[-1].records[0].spec.trains
                and pts[-1].mean(hl.FORCES) is not None):
            cur = best.get(key.family)
            if cur is None or pts[-1].mean(hl.FORCES) < curves[cur][-1].mean(hl.FORCES):
                best[key.family] = key
    return dict(sorted(best.items()))


def _figure_sections(curves: dict, h: hl.Headline, labels: dict, root: Path | None) -> list[Section]:
    lc = Section("Learning curves", "Test error vs training size (log-log), RMSE (top) and MAE (bottom), one "
                 "line per strategy, error bars: std over seeds; dashed: zero-shot; dotted: the scratch reference "
                 f"at its largest size, shaded up to +{100 * h.settings['tolerance']:g} % (grey: it supports no "
                 "claim); dash-dotted in the MAE panels: published potentials trained on the whole training set.")
    for mk in sorted({k.model_key for k in curves}):
        series = {labels[k]: pts for k, pts in sorted(curves.items(), key=lambda kv: hl.strategy_rank(kv[0].strategy))
                  if k.model_key == mk}
        lc.figure(f"curves-{'-'.join(mk)}", figures.learning_curves(
            series, h.references.get(mk), f"{mk[1]} ({mk[2]}) on {mk[0]}: test error vs training size",
            h.settings["tolerance"], published(mk[0])[1]))
    cross = Section("Families compared", "Each family at its best strategy (lowest mean test force RMSE "
                    "at the largest size); dashed: that model's zero-shot.")
    parity = Section("Parity: DFT vs predicted", "Test set, best model of each family as above, at its "
                     "largest size, lowest seed.")
    for ds in sorted({k.dataset for k in curves}):
        best = _best_per_family(curves, ds)
        zero = {k.model_key: pts[0] for k, pts in curves.items() if not pts[0].size}
        cross.text(f"{ds}: " + "; ".join(f"{fam}: {_model(k)} {labels[k]}" for fam, k in best.items()))
        cross.figure(f"families-{ds}", figures.cross_family(
            {f"{fam}: {labels[k]}": (curves[k], zero.get(k.model_key)) for fam, k in best.items()},
            f"{ds}: each family at its best strategy"))
        runs, missing = {}, []
        for fam, k in best.items():
            rec = min(curves[k][-1].records, key=lambda r: r.spec.seed)
            rel = rec.artefacts.predictions if rec.artefacts else None
            path = root / rel if root and rel else None
            if path and path.is_file():
                runs[f"{fam} {labels[k]} n={rec.spec.train_size}"] = path
            else:
                missing.append(f"{fam} ({rel or 'no predictions artefact'})")
        if missing:
            parity.text(f"{ds}: predictions file missing for " + ", ".join(missing) + "; no parity plot.")
        parity.figure(f"parity-{ds}", figures.parity(runs, f"{ds}: DFT vs predicted"))
    return [lc, cross, parity]


def _frozen(rec: Record) -> str:
    spec = rec.spec
    k, blocks = spec.freeze_k, rec.blocks or ()
    text = "–" if k is None else ("none" if k == 0 else f"all {k}" if k == len(blocks) else
                                  f"{k}: {', '.join(b.name for b in blocks[:k])}")
    native = dict(MODELS[spec.model].native_freeze).get(k) if spec.model in MODELS else None
    text = f"{text} ({native})" if native else text
    return "; ".join([text, *_adaptation(spec)])


def _adaptation(spec: TrainSpec) -> list[str]:
    """What a LoRA, soft-freeze or replay run adds to its frozen blocks, in words."""
    out = []
    if spec.lora:
        out.append(f"LoRA adapters rank {spec.lora.rank}, alpha {spec.lora.alpha:g}")
    factors = spec.train_config.lr_factors if spec.train_config else None
    if factors:
        out.append("LR × " + ", ".join(f"{v:g} {k}" for k, v in factors.items()))
    if spec.replay:
        out.append(f"replay of {spec.replay.dataset}, {spec.replay.fraction} per training structure")
    return out


def _ordered(curves: dict) -> list[tuple[hl.CurveKey, list[hl.Point]]]:
    return sorted(curves.items(), key=lambda kv: (kv[0].dataset, kv[0].family, kv[0].model,
                                                  hl.strategy_rank(kv[0].strategy), kv[0].setting))


def _tables(curves: dict, labels: dict, max_groups: int) -> list[Section]:
    ordered = _ordered(curves)
    ft_step = {(k.model_key, k.setting, p.size): p.timing("step_s_per_structure")
               for k, pts in curves.items() if pts[0].records[0].spec.is_full_finetune for p in pts}
    results, groups, timing = [], [], []
    for key, pts in ordered:
        for p in pts:
            rec, size = p.records[0], _size(p)
            base = [key.dataset, _model(key), labels[key]]
            params = rec.parameters
            trained = ("0" if not rec.spec.trains else
                       f"{params.trainable:,} / {params.total:,}" if params else "–")
            conv = [r.convergence for r in p.records if r.convergence]
            stopped = ", ".join(sorted({f"{c.stopped} @ {c.epochs_run}" + (" (plateau)" if c.plateau else "")
                                        for c in conv})) or "–"
            results.append([*base, _frozen(rec), size, str(len(p.records)), _ms(p.stat(hl.ENERGY)),
                            _fmt(p.mean("energy_mae_mev_per_atom")), _ms(p.stat(hl.FORCES)),
                            _fmt(p.mean("forces_mae_mev_per_ang")), _ms(p.stat("stress_rmse_gpa"), 2), trained,
                            stopped])
            per = [r.metrics.per_group or {} for r in p.records]
            names = sorted(per[0])
            for g in names[:max_groups]:
                vals = [q[g] for q in per if g in q]
                groups.append([*base, size, g, str(vals[0].n_structures),
                               *[_ms(hl.Stat.of(v.value(m) for v in vals), d) for m, d in
                                 ((hl.ENERGY, 1), (hl.FORCES, 1), ("stress_rmse_gpa", 2))]])
            if len(names) > max_groups:
                groups.append([*base, size, f"… {len(names) - max_groups} more groups (in the records)",
                               "", "", "", ""])
            step = p.timing("step_s_per_structure")
            ref = ft_step.get((key.model_key, hl.plain_setting(key.setting), p.size))
            frac = p.timing("data_fraction_after_epoch1")
            timing.append([*base, size, _ms(p.timing("train_s"), 0), _ms(step, 1, 1000),
                           f"{step.mean / ref.mean:.2f}×" if step and ref else "–",
                           _ms(p.timing("inference_atoms_per_s"), 0), _ms(p.timing("peak_rss_mb"), 0),
                           _ms(frac, 1, 100)])
    res = Section("Results per dataset, model, strategy and size",
                  "Test-set RMSE (mean ± std over seeds) and MAE (mean); frozen blocks in forward order (native "
                  "option); stopped: why training ended, at which epoch (plateau: early stopping while the "
                  "learning rate was still at least 20 % of its peak).", folded=True)
    res.table(["dataset", "model", "strategy", "frozen blocks", "train size", "seeds", "E RMSE (meV/atom)",
               "E MAE", "F RMSE (meV/Å)", "F MAE", "S RMSE (GPa)", "trained / total params", "stopped"], results)
    grp = Section("Errors per group of the test set",
                  f"At most {max_groups} groups per run group (alphabetical); the rest are in the records.",
                  folded=True)
    grp.table(["dataset", "model", "strategy", "train size", "group", "structures", "E RMSE (meV/atom)",
               "F RMSE (meV/Å)", "S RMSE (GPa)"], groups)
    tim = Section("Timing and cost",
                  "Train time: the whole training loop. Step: forward + backward + optimizer step per training "
                  "structure; frozen blocks need no parameter gradients, so steps get cheaper as more is "
                  "frozen (ratio vs finetune: same model, size and machine). Data prep: share of epoch time "
                  "spent on data after epoch 1 (graphs are built once, so it should be near 0).", folded=True)
    tim.table(["dataset", "model", "strategy", "train size", "train time (s)", "step (ms/structure)",
               "vs finetune", "inference (atoms/s)", "peak RSS (MB)", "data prep after epoch 1 (%)"], timing)
    return [res, grp, tim]


def _short(message, n: int = 90) -> str:
    """First non-empty line of an error message, at most ``n`` characters."""
    line = next((x.strip() for x in str(message).splitlines() if x.strip()), "?")
    return line if len(line) <= n else line[:n - 1] + "…"


def _error(entry) -> str | None:
    """The message of a result that failed (``{"error": msg}``; anything not a dict), else None."""
    if isinstance(entry, dict):
        return str(entry["error"]) if entry.get("error") else None
    return str(entry)


def _same(values) -> hl.Stat | None:
    """Stat of values that should agree (a DFT reference stored with every run): no ± when they do."""
    s = hl.Stat.of(values)
    return hl.Stat(s.mean, 0.0, 1) if s and s.std <= 1e-9 * max(1.0, abs(s.mean)) else s


def _vs(stat: hl.Stat | None, ref: hl.Stat | None, digits: int) -> str:
    """Mean ± std and, against a reference, the % error of the mean: ``465 (-1.5 %)``."""
    text = _ms(stat, digits)
    if stat and ref and ref.mean:
        text += f" ({100 * (stat.mean - ref.mean) / abs(ref.mean):+.1f} %)"
    return text


def _capped(rows: list[list[str]], width: int, what: str = "rows") -> list[list[str]]:
    if len(rows) <= MAX_ROWS:
        return rows
    return rows[:MAX_ROWS] + [[f"… {len(rows) - MAX_ROWS} more {what} (in the records)"] + [""] * (width - 1)]


def _note(n_ok: int, errors: list[str]) -> str:
    if not errors:
        return ""
    if not n_ok:
        return f"error: {_short(errors[0])}"
    return f"{len(errors)} of {n_ok + len(errors)} seeds failed: {_short(errors[0])}"


ELASTIC = (("a0_ang", "a0 (Å)"), ("C11_gpa", "C11 (GPa)"), ("C12_gpa", "C12 (GPa)"), ("C44_gpa", "C44 (GPa)"),
           ("bulk_modulus_gpa", "B (GPa)"))


def _property_results(curves: dict) -> dict[tuple[str, str, str], list]:
    """(dataset, property, system) -> [(curve key, point, ok results, error messages)], in table order;
    relaxation has one system, ""."""
    found: dict[tuple[str, str, str], list] = defaultdict(list)
    for key, pts in _ordered(curves):
        for p in pts:
            per: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
            for r in p.records:
                props = r.properties
                if not isinstance(props, dict):
                    continue
                for prop in ("elastic", "mixing", "relaxation"):
                    if props.get(prop) is None:
                        continue
                    value = props[prop]
                    whole = prop == "relaxation" or not isinstance(value, dict) or set(value) == {"error"}
                    for system, entry in ({"": value} if whole else value).items():
                        msg = _error(entry)
                        per[(prop, system)][1 if msg else 0].append(msg or entry)
            for (prop, system), (oks, errors) in per.items():
                found[(key.dataset, prop, system)].append((key, p, oks, errors))
    return found


def _properties_section(curves: dict, labels: dict) -> Section | None:
    found = _property_results(curves)
    if not found:
        return None
    sec = Section("Physical properties", (
        "Computed by the worker with each trained model on the same cells as the DFT reference. Elastic: "
        "the same strained cells as DFT, elastic constants from a linear strain–stress fit (cubic "
        "symmetry where stated), B = bulk modulus, a0 = the equilibrium lattice constant; each model "
        "value is followed by its % error vs DFT. Mixing: energy of mixing of binary cells relative "
        "to the elemental bcc references, mean over the cells and MAE vs DFT per cell. Relaxation: "
        "ΔE from the first to the last frame of each relaxation trajectory of the test set, MAE vs "
        "DFT, and the RMSE of the energies along the paths. Mean ± std over seeds; the first row of "
        "each table is DFT."))

    def lead(key, p, oks):
        return [_model(key), labels[key], _size(p), str(len(oks))]

    def dft(what: str, *cells: str) -> list[str]:
        return [what, "", "", "", *cells, ""]

    for (ds, prop, system), rows in sorted(found.items(), key=lambda kv: (
            kv[0][0], ("elastic", "mixing", "relaxation").index(kv[0][1]), kv[0][2])):
        oks = [e for _, _, ok, _ in rows for e in ok]
        where = f"{ds}, {system}" if system else ds
        if prop == "elastic":
            first = oks[0] if oks else {}
            ref = {k: _same((e.get("dft") or {}).get(k) for e in oks) for k, _ in ELASTIC}
            digits = {k: 3 if k == "a0_ang" else (0 if ref[k] and abs(ref[k].mean) >= 100 else 1) for k, _ in ELASTIC}
            strain = first.get("max_strain")
            sec.text(f"{where}: elastic constants ({first.get('symmetry', '?')} fit over "
                     f"{first.get('n_cells', '?')} strained cells up to ±"
                     f"{'?' if strain is None else f'{100 * strain:g}'} % strain); DFT: {first.get('reference', '?')}.")
            table = [[*lead(key, p, ok),
                      *[_vs(hl.Stat.of((e.get("model") or {}).get(k) for e in ok), ref[k], digits[k])
                        for k, _ in ELASTIC], _note(len(ok), err)] for key, p, ok, err in rows]
            sec.table(["model", "strategy", "train size", "seeds", *[t for _, t in ELASTIC], "note"],
                      [dft("DFT", *[_ms(ref[k], digits[k]) for k, _ in ELASTIC]), *_capped(table, 10)])
            errors = {}
            for key, p, ok, _ in rows:
                if not ok or (p.size and p is not curves[key][-1]):  # untrained and each curve's largest size
                    continue
                model = {k: hl.Stat.of((e.get("model") or {}).get(k) for e in ok) for k, _ in ELASTIC}
                errors[f"{key.model} {labels[key]} {_size(p)}"] = {
                    title.split(" ")[0]: 100 * (model[k].mean - ref[k].mean) / abs(ref[k].mean)
                    for k, title in ELASTIC if model[k] and ref[k] and ref[k].mean}
            sec.figure(f"elastic-{ds}-{system}", figures.property_errors(
                errors, f"{where}: elastic constants, model vs DFT (largest size of each strategy)"))
        elif prop == "mixing":
            ref = _same(e.get("dft_mean_mev_per_atom") for e in oks)
            cells = sorted({e.get("n_cells") for e in oks if e.get("n_cells") is not None})
            sec.text(f"{where}: energy of mixing over {', '.join(map(str, cells)) or '?'} cells vs the "
                     f"elemental bcc references.")
            table = [[*lead(key, p, ok), _ms(hl.Stat.of(e.get("model_mean_mev_per_atom") for e in ok)),
                      _ms(hl.Stat.of(e.get("mae_mev_per_atom") for e in ok)), _note(len(ok), err)]
                     for key, p, ok, err in rows]
            sec.table(["model", "strategy", "train size", "seeds", "mean E_mix (meV/atom)",
                       "E_mix MAE vs DFT (meV/atom)", "note"], [dft("DFT", _ms(ref), "–"), *_capped(table, 7)])
        else:
            ref = _same(e.get("relax_energy_dft_mean_mev") for e in oks)
            n = sorted({e.get("n_trajectories") for e in oks if e.get("n_trajectories") is not None})
            sec.text(f"{ds}: relaxation, {', '.join(map(str, n)) or '?'} test-set trajectories.")
            table = [[*lead(key, p, ok), _ms(hl.Stat.of(e.get("relax_energy_model_mean_mev") for e in ok)),
                      _ms(hl.Stat.of(e.get("relax_energy_mae_mev") for e in ok)),
                      _ms(hl.Stat.of(e.get("path_energy_rmse_mev") for e in ok)), _note(len(ok), err)]
                     for key, p, ok, err in rows]
            sec.table(["model", "strategy", "train size", "seeds", "mean ΔE relax (meV)", "ΔE relax MAE (meV)",
                       "path E RMSE (meV)", "note"], [dft("DFT", _ms(ref), "–", "–"), *_capped(table, 8)])
    return sec


def _forgetting_section(curves: dict, labels: dict) -> Section | None:
    sets: dict[tuple, list[list[str]]] = defaultdict(list)
    for key, pts in _ordered(curves):
        for p in pts:
            found = [r.forgetting for r in p.records if r.forgetting is not None]
            if not found:
                continue
            ok = [f for f in found if not f.error]
            errors = [f.error for f in found if f.error]
            first = (ok or found)[0]

            def stat(name, side=None, ok=ok, of=hl.Stat.of):
                return of((getattr(f, side) or {}).get(name) if side else getattr(f, name) for f in ok)

            before_after = [f"{_ms(stat(m, 'dft_before', of=_same))} → {_ms(stat(m, 'dft_after'))}"
                            for m in (hl.ENERGY, hl.FORCES)]
            sets[(first.dataset or "?", first.n_structures or "?")].append(
                [key.dataset, _model(key), labels[key], _size(p), str(len(ok)),
                 _ms(stat("drift_energy_rmse_mev_per_atom")), _ms(stat("drift_forces_rmse_mev_per_ang")),
                 *before_after, _note(len(ok), errors)])
    if not sets:
        return None
    sec = Section("Forgetting", (
        "What training on one system costs elsewhere: after training, each model started from a "
        "foundation predicts held-out structures of another domain, and its predictions are compared "
        "with those of the foundation it started from (drift: RMSE, 0 = nothing forgotten) and with "
        "DFT (before: the foundation, after: the trained model). Mean ± std over seeds."))
    for (ds, n), rows in sorted(sets.items(), key=lambda kv: str(kv[0])):
        sec.text(f"Held-out set: {ds}, {n} structures.")
        sec.table(["dataset", "model", "strategy", "train size", "seeds", "drift E (meV/atom)", "drift F (meV/Å)",
                   "DFT E RMSE before → after (meV/atom)", "DFT F RMSE before → after (meV/Å)", "note"],
                  _capped(rows, 10))
    return sec


def _surrogate_section(records: list[dict]) -> Section | None:
    recs = sorted((r for r in records if isinstance(r.spec, SurrogateSpec) and r.ok and isinstance(r.surrogate, dict)),
                  key=lambda r: tuple(str(getattr(r.spec, k)) for k in ("dataset", "model", "teacher_strategy",
                                                                        "train_size", "seed")))
    if not recs:
        return None

    def params(side: dict) -> str:
        p = side.get("parameters") or {}
        n = p.get("total", p.get("trainable"))
        return "?" if n is None else f"{n:,}"

    def speedup(x) -> str:
        return "–" if x is None else f"{x:,.1f}×"

    rows, settings = [], {}
    for r in recs:
        spec, sg = r.spec, r.surrogate
        t, st, fd, sp = (sg.get(k) or {} for k in ("teacher", "student", "foundation", "speed"))
        metrics = [r.metrics.to_dict() if r.metrics else st.get("metrics") or {}, t.get("metrics") or {},
                   fd.get("metrics") or {}]
        teacher = (f"{spec.model} ({spec.checkpoint}) {t.get('strategy') or spec.teacher_strategy}"
                   f", n={t.get('n_train', spec.train_size)}, {params(t)} params")
        parts = " + ".join(_fmt(st.get(k), 0) for k in ("n_pool", "n_rattled", "n_md"))
        rows.append([
            spec.dataset, teacher, str(spec.seed),
            f"{st.get('architecture', '?')}, {params(st)} params", f"{_fmt(st.get('n_labelled'), 0)} ({parts})",
            *[" / ".join(_fmt(m.get(name)) for m in metrics) for name in (hl.FORCES, hl.ENERGY)],
            " / ".join(_fmt(sp.get(f"{who}_atoms_per_s"), 0) for who in ("student", "teacher", "foundation")),
            speedup(sp.get("speedup_vs_teacher")), speedup(sp.get("speedup_vs_foundation")),
            f"{sp.get('n_structures', '?')} ({sp.get('n_atoms', '?')} atoms)"])
        how = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in getattr(spec, name).items())
                        for name in ("rattle", "md"))
        settings.setdefault(how, []).append(spec.dataset)
    sec = Section("Surrogate distillation", (
        "A small student model trained from scratch on structures labelled by a fine-tuned teacher: "
        "the teacher's training pool, rattled copies of it and frames of short MD runs with the teacher "
        "(labelled = pool + rattled + MD). Errors: test-set RMSE vs DFT of student / teacher / the "
        "foundation the teacher started from. Inference: atoms per second predicting the same test "
        "structures on the same machine; speed-up = student's atoms/s over the other's. One row per run."))
    for how, datasets in settings.items():
        sec.text(f"Labels ({', '.join(sorted(set(datasets)))}): {how}.")
    sec.table(["dataset", "teacher", "seed", "student", "labelled (pool + rattled + MD)",
               "F RMSE student / teacher / foundation (meV/Å)", "E RMSE student / teacher / foundation (meV/atom)",
               "inference student / teacher / foundation (atoms/s)", "speed-up vs teacher",
               "speed-up vs foundation", "timed on"], _capped(rows, 11, "runs"))
    return sec


def _environment(records: list[Record]) -> Section:
    seen: dict[tuple, list] = {}
    for r in records:
        if not r.ok:
            continue
        e, p = r.environment or Environment(), r.provenance or Provenance()
        row = (r.spec.model, ", ".join(f"{k} {v}" for k, v in sorted(e.packages.items())),
               *(str(v if v is not None else "–") for v in (e.device, e.threads, e.cpu)),
               p.hostname or "–", f"{(p.commit or 'unknown')[:10]}{' (dirty)' if p.dirty else ''}")
        seen.setdefault(row, []).append(r.timing.reference_workload_s if r.timing else None)
    env = Section("Environment and provenance", "Reference workload: a fixed torch workload timed by "
                  "the worker, to compare timings across machines.", folded=True)
    env.table(["model", "packages", "device", "threads", "CPU", "host", "commit", "reference workload (s)"],
              [[*row, _ms(hl.Stat.of(w), 3)] for row, w in seen.items()])
    return env


def build_sections(records: list[Record], root: Path | None = None, headline: dict | None = None,
                   max_groups: int = MAX_GROUPS) -> list[Section]:
    """Report sections; ``root`` (the results directory) is needed for the parity plots,
    ``headline`` holds ``bench.headline.headline`` settings (a preset's ``[headline]``)."""
    counts: dict[str, int] = defaultdict(int)
    kinds: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.status] += 1
        kinds[r.spec.kind] += 1
    h = hl.headline(records, **(headline or {}))
    curves = hl.curves(records)
    labels = hl.strategy_labels(curves)
    jobs = [f"{kinds[k]} {name}{'s' if kinds[k] > 1 else ''}" for k, name in
            (("perf", "timing job"), ("surrogate", "surrogate job"), ("md", "MD job")) if kinds[k]]
    intro = Section("Summary", f"{len(records)} stored runs: " +
                    ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                    (f" ({', '.join(jobs)})" if jobs else "") +
                    ". Errors are on each dataset's fixed test set; mean ± std over seeds.")
    if root and (note := incomplete_note(root, records)):
        intro.text(note)
    paragraphs, best_table = summarise(h, curves, labels)
    for text in paragraphs:
        intro.text(text)
    intro.table(*best_table)
    bad = Section("Failed, skipped and diverged runs")
    bad.table(["dataset", "model", "strategy", "train size", "seed", "status", "reason"],
              [[r.spec.dataset, r.spec.model, r.spec.what,
                *(str(getattr(r.spec, k, "–")) for k in ("train_size", "seed"))]
               + [r.status, (r.reason or "")[:400]] for r in records if not r.ok])
    perf = Section("Performance targets",
                   "Each model's timing job compares the adapter's batched predict (featurization included) "
                   "with the library's own ASE calculator on the same structures; both use the same "
                   "weights, so they must agree. On a CPU inference is compute-bound and batching gains "
                   "little; the ratio grows on a GPU.")
    perf.table(*targets.target_rows(records, targets.read_sweeps(root) if root else []))
    extra = [_properties_section(curves, labels), saved_models_section(records), _forgetting_section(curves, labels),
             _surrogate_section(records), _lr_grid_section(records)]
    lc, cross, parity = _figure_sections(curves, h, labels, root)
    return [intro, cross, lc, _headline_section(h, labels), parity, *filter(None, extra),
            *_tables(curves, labels, max_groups), perf, bad, _environment(records)]


def _lr_grid_section(records: list[Record]) -> Section | None:
    found = lr_grid.candidates(records)
    if not found:
        return None
    sec = Section("Learning rates chosen on the validation set",
                  "Each trained strategy ran once per candidate learning rate at one training size (first seed); "
                  "the candidate with the lowest best validation loss is used at every size. The test set is "
                  "not looked at.")
    rows = []
    for (ds, model, strategy), cands in sorted(found.items()):
        ok = [c for c in cands if c.val_loss is not None]
        best = min(ok, key=lambda c: c.val_loss) if ok else None
        rows.append([ds, model, strategy, str(cands[0].record.spec.train_size),
                     ", ".join(f"{c.lr:g}: {'–' if c.val_loss is None else f'{c.val_loss:.4g}'}" for c in cands),
                     f"{best.lr:g}" if best else "none (no candidate finished)"])
    sec.table(["dataset", "model", "strategy", "at size", "candidate: best validation loss", "chosen"], rows)
    return sec


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    esc = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1600px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#eee}tr:nth-child(even){background:#fafafa}img{max-width:100%;display:block;margin:1em 0}
summary h2{display:inline;cursor:pointer}details{margin:1em 0}"""


def write_report(results_dir: Path, headline: dict | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` (+ PNGs) and a self-contained ``report.html`` into ``results_dir``.

    ``headline`` settings default to those the sweep stored (``headline.json``), if any.
    """
    results_dir = Path(results_dir)
    settings = results_dir / HEADLINE_SETTINGS
    if headline is None and settings.is_file():
        headline = json.loads(settings.read_text())
    sections = build_sections(Store(results_dir).all(), results_dir, headline)
    title = "ftbench report"
    md, body = [f"# {title}\n"], [f"<h1>{title}</h1>"]
    for sec in sections:
        md.append(f"## {sec.title}\n")
        if sec.folded:  # wide tables: one click away, below the answer and the figures
            body.append(f"<details><summary><h2>{html.escape(sec.title)}</h2></summary>")
        else:
            body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for kind, part in sec.parts:
            if kind == "text":
                md.append(part + "\n")
                body.append(f"<p>{html.escape(part)}</p>")
            elif kind == "table":
                md.append(_md_table(*part))
                body.append(_html_table(*part))
            else:
                name, png = part
                (results_dir / name).write_bytes(png)
                md.append(f"![{name}]({name})\n")
                b64 = base64.b64encode(png).decode()
                body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">')
        if sec.folded:
            body.append("</details>")
    md_path, html_path = results_dir / "report.md", results_dir / "report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
                         f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    return md_path, html_path
