"""Markdown and single-file HTML reports built only from stored records.

    python -m bench report reports/quick       # writes report.md and report.html there

Runs that differ only in seed are aggregated (mean ± std). The headline numbers come from
``bench.headline`` and the plots from ``bench.figures``. Failed, skipped and diverged runs
are listed with their reasons, never dropped. Plots are PNGs embedded in the HTML (it opens
offline, no scripts) and written beside the Markdown.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from bench import figures, targets
from bench import headline as hl
from bench.registry import MODELS
from bench.store import Store

HEADLINE_SETTINGS = "headline.json"

MAX_GROUPS = 20  # per-group rows per run group (OC20 has hundreds of trajectories)


def _fmt(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


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
    return f"{key.model} ({key.checkpoint})"


class Section:
    """A titled sequence of paragraphs, tables and figures, rendered in order."""

    def __init__(self, title: str, text: str = ""):
        self.title = title
        self.parts: list[tuple[str, object]] = []
        if text:
            self.text(text)

    def text(self, text: str) -> None:
        self.parts.append(("text", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.parts.append(("table", (header, rows)))

    def figure(self, name: str, png: bytes | None) -> None:
        if png:
            self.parts.append(("figure", (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png", png)))


def _headline_section(h: hl.Headline, labels: dict) -> Section:
    s = h.settings
    tol = f"{100 * s['tolerance']:g} %"
    fr = [f"{100 * f:g} %" for f in s["fractions"]]
    sec = Section("Headline", (
        f"One row per dataset × model × strategy, mean over seeds. Reference: scratch training of the "
        f"same model at its largest stored training size (table below; flagged where that is less than "
        f"the whole training pool). 'within {tol} from': smallest training size whose mean test RMSE is "
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
        refs.append([ds, f"{model} ({ckpt})", _size(p), str(len(p.records)),
                     _ms(p.stat(hl.FORCES)), _ms(p.stat(hl.ENERGY)), _fmt(ref.val_forces), _fmt(target),
                     "" if ref.full_pool else "⚠ < 100 % of the training pool"])
    sec.table(["dataset", "model", "reference: scratch at", "seeds", "F RMSE (meV/Å)", "E RMSE (meV/atom)",
               "final val F RMSE (meV/Å)", "val F target (meV/Å)", "note"], refs)

    def ratio(a: hl.AtFraction | None) -> str:
        return "–" if a is None else f"{a.ratio:.2f}×{'*' if a.interpolated else ''}"

    def within(row, metric) -> str:
        return _size(row.within.get(metric), "not reached") if row.reference else "no reference"

    rows = []
    for r in h.rows:
        t = r.time_to_target
        time = "–" if t is None else (f"{_fmt(t.seconds.mean, 0)} s ({t.reached}/{t.runs})" if t.seconds
                                       else f"not reached (0/{t.runs})")
        rows.append([r.key.dataset, _model(r.key), labels[r.key],
                     f"{_size(r.largest)}, {len(r.largest.records)} seed(s)",
                     _ms(r.largest.stat(hl.FORCES)), _ms(r.largest.stat(hl.ENERGY)),
                     within(r, hl.FORCES), within(r, hl.ENERGY),
                     *[ratio(r.at_fraction.get((m, f))) for m in (hl.FORCES, hl.ENERGY) for f in s["fractions"]],
                     _size(r.chemical_accuracy, "not reached"), time,
                     "–" if r.step_ratio is None else f"{r.step_ratio:.2f}×",
                     _fmt(r.inference_atoms_per_s, 0), _fmt(r.peak_rss_mb, 0)])
    sec.table(["dataset", "model", "strategy", "largest size", "F RMSE (meV/Å)", "E RMSE (meV/atom)",
               f"F within {tol} from", f"E within {tol} from",
               *[f"{m}/ref @ {f}" for m in "FE" for f in fr], "chem. acc. from", "time to val F target",
               "step vs finetune", "inference (atoms/s)", "peak RSS (MB)"], rows)
    return sec


def _best_per_family(curves: dict, dataset: str) -> dict[str, hl.CurveKey]:
    """Per family, the trained curve with the lowest mean test force RMSE at its largest size."""
    best: dict[str, hl.CurveKey] = {}
    for key, pts in curves.items():
        if key.dataset == dataset and pts[-1].size and pts[-1].mean(hl.FORCES) is not None:
            cur = best.get(key.family)
            if cur is None or pts[-1].mean(hl.FORCES) < curves[cur][-1].mean(hl.FORCES):
                best[key.family] = key
    return dict(sorted(best.items()))


def _figure_sections(curves: dict, h: hl.Headline, labels: dict, root: Path | None) -> list[Section]:
    lc = Section("Learning curves", "Test error vs training size (log-log), one line per strategy, error "
                 "bars: std over seeds; dashed: zero-shot; dotted: the scratch reference at its largest "
                 f"size, shaded up to +{100 * h.settings['tolerance']:g} %.")
    for mk in sorted({k.model_key for k in curves}):
        series = {labels[k]: pts for k, pts in sorted(curves.items(), key=lambda kv: hl.strategy_rank(kv[0].strategy))
                  if k.model_key == mk}
        lc.figure(f"curves-{'-'.join(mk)}", figures.learning_curves(
            series, h.references.get(mk), f"{mk[1]} ({mk[2]}) on {mk[0]}: test error vs training size",
            h.settings["tolerance"]))
    cross = Section("Families compared", "Each family at its best strategy (lowest mean test force RMSE "
                    "at the largest size); dashed: that model's zero-shot.")
    parity = Section("Parity: DFT vs predicted", "Test set, best model of each family as above, at its "
                     "largest size, lowest seed.")
    for ds in sorted({k.dataset for k in curves}):
        best = _best_per_family(curves, ds)
        zero = {k.model_key: pts[0] for k, pts in curves.items() if k.strategy == "zero-shot"}
        cross.text(f"{ds}: " + "; ".join(f"{fam}: {_model(k)} {labels[k]}" for fam, k in best.items()))
        cross.figure(f"families-{ds}", figures.cross_family(
            {f"{fam}: {labels[k]}": (curves[k], zero.get(k.model_key)) for fam, k in best.items()},
            f"{ds}: each family at its best strategy"))
        runs, missing = {}, []
        for fam, k in best.items():
            rec = min(curves[k][-1].records, key=lambda r: r["spec"]["seed"])
            rel = (rec.get("artefacts") or {}).get("predictions")
            path = root / rel if root and rel else None
            if path and path.is_file():
                runs[f"{fam} {labels[k]} n={rec['spec']['train_size']}"] = path
            else:
                missing.append(f"{fam} ({rel or 'no predictions artefact'})")
        if missing:
            parity.text(f"{ds}: predictions file missing for " + ", ".join(missing) + "; no parity plot.")
        parity.figure(f"parity-{ds}", figures.parity(runs, f"{ds}: DFT vs predicted"))
    return [lc, cross, parity]


def _frozen(rec: dict) -> str:
    k, blocks = rec["spec"]["freeze_k"], rec.get("blocks", [])
    text = "–" if k is None else ("none" if k == 0 else f"{k}: {', '.join(b['name'] for b in blocks[:k])}")
    native = dict(MODELS[rec["spec"]["model"]].native_freeze).get(k) if rec["spec"]["model"] in MODELS else None
    return f"{text} ({native})" if native else text


def _tables(curves: dict, labels: dict, max_groups: int) -> list[Section]:
    ordered = sorted(curves.items(), key=lambda kv: (kv[0].dataset, kv[0].family, kv[0].model,
                                                     hl.strategy_rank(kv[0].strategy), kv[0].setting))
    ft_step = {(k.model_key, k.setting, p.size): p.timing("step_s_per_structure")
               for k, pts in curves.items() if k.strategy == "finetune" for p in pts}
    results, groups, timing = [], [], []
    for key, pts in ordered:
        for p in pts:
            rec, size = p.records[0], _size(p)
            base = [key.dataset, _model(key), labels[key]]
            k = rec["spec"]["freeze_k"]
            params = rec.get("parameters", {})
            results.append([*base, _frozen(rec), size, str(len(p.records)), _ms(p.stat(hl.ENERGY)),
                            _ms(p.stat(hl.FORCES)), _ms(p.stat("stress_rmse_gpa"), 2),
                            f"{params.get('trainable', 0):,} / {params.get('total', 0):,}" if k is not None else "0"])
            per = [r["metrics"].get("per_group", {}) for r in p.records]
            names = sorted(per[0])
            for g in names[:max_groups]:
                vals = [q[g] for q in per if g in q]
                groups.append([*base, size, g, str(vals[0]["n_structures"]),
                               *[_ms(hl.Stat.of(v.get(m) for v in vals), d) for m, d in
                                 ((hl.ENERGY, 1), (hl.FORCES, 1), ("stress_rmse_gpa", 2))]])
            if len(names) > max_groups:
                groups.append([*base, size, f"… {len(names) - max_groups} more groups (in the records)",
                               "", "", "", ""])
            step, ref = p.timing("step_s_per_structure"), ft_step.get((key.model_key, key.setting, p.size))
            frac = p.timing("data_fraction_after_epoch1")
            timing.append([*base, size, _ms(p.timing("train_s"), 0), _ms(step, 1, 1000),
                           f"{step.mean / ref.mean:.2f}×" if step and ref else "–",
                           _ms(p.timing("inference_atoms_per_s"), 0), _ms(p.timing("peak_rss_mb"), 0),
                           _ms(frac, 1, 100)])
    res = Section("Results per dataset, model, strategy and size",
                  "Test-set RMSE, mean ± std over seeds; frozen blocks in forward order (native option).")
    res.table(["dataset", "model", "strategy", "frozen blocks", "train size", "seeds", "E RMSE (meV/atom)",
               "F RMSE (meV/Å)", "S RMSE (GPa)", "trained / total params"], results)
    grp = Section("Errors per group of the test set",
                  f"At most {max_groups} groups per run group (alphabetical); the rest are in the records.")
    grp.table(["dataset", "model", "strategy", "train size", "group", "structures", "E RMSE (meV/atom)",
               "F RMSE (meV/Å)", "S RMSE (GPa)"], groups)
    tim = Section("Timing and cost",
                  "Train time: the whole training loop. Step: forward + backward + optimizer step per training "
                  "structure; frozen blocks need no parameter gradients, so steps get cheaper as more is "
                  "frozen (ratio vs finetune: same model, size and machine). Data prep: share of epoch time "
                  "spent on data after epoch 1 (graphs are built once, so it should be near 0).")
    tim.table(["dataset", "model", "strategy", "train size", "train time (s)", "step (ms/structure)",
               "vs finetune", "inference (atoms/s)", "peak RSS (MB)", "data prep after epoch 1 (%)"], timing)
    return [res, grp, tim]


def _environment(records: list[dict]) -> Section:
    seen: dict[tuple, list] = {}
    for r in records:
        if r["status"] != "ok":
            continue
        e, p = r.get("environment", {}), r.get("provenance", {})
        row = (r["spec"]["model"], ", ".join(f"{k} {v}" for k, v in sorted(e.get("packages", {}).items())),
               *(str(e.get(k, "–")) for k in ("device", "threads", "cpu")),
               str(p.get("hostname") or p.get("host") or "–"),
               f"{(p.get('commit') or 'unknown')[:10]}{' (dirty)' if p.get('dirty') else ''}")
        seen.setdefault(row, []).append((r.get("timing") or {}).get("reference_workload_s"))
    env = Section("Environment and provenance", "Reference workload: a fixed torch workload timed by "
                  "the worker, to compare timings across machines.")
    env.table(["model", "packages", "device", "threads", "CPU", "host", "commit", "reference workload (s)"],
              [[*row, _ms(hl.Stat.of(w), 3)] for row, w in seen.items()])
    return env


def build_sections(records: list[dict], root: Path | None = None, headline: dict | None = None,
                   max_groups: int = MAX_GROUPS) -> list[Section]:
    """Report sections; ``root`` (the results directory) is needed for the parity plots,
    ``headline`` holds ``bench.headline.headline`` settings (a preset's ``[headline]``)."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r["status"]] += 1
    h = hl.headline(records, **(headline or {}))
    curves = hl.curves(records)
    labels = hl.strategy_labels(curves)
    intro = Section("Summary", f"{len(records)} stored runs: " +
                    ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                    ". Errors are on each dataset's fixed test set; mean ± std over seeds.")
    bad = Section("Failed, skipped and diverged runs")
    bad.table(["dataset", "model", "strategy", "train size", "seed", "status", "reason"],
              [[str(r["spec"].get(k, "timing job" if k == "strategy" else "–"))
                for k in ("dataset", "model", "strategy", "train_size", "seed")]
               + [r["status"], (r.get("reason") or "")[:400]] for r in records if r["status"] != "ok"])
    perf = Section("Performance targets",
                   "Each model's timing job compares the adapter's batched predict (featurization included) "
                   "with the library's own ASE calculator on the same structures; both use the same "
                   "weights, so they must agree. On a CPU inference is compute-bound and batching gains "
                   "little; the ratio grows on a GPU.")
    perf.table(*targets.target_rows(records, targets.read_sweeps(root) if root else []))
    return [intro, _headline_section(h, labels), *_figure_sections(curves, h, labels, root),
            *_tables(curves, labels, max_groups), perf, bad, _environment(records)]


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
th{background:#eee}tr:nth-child(even){background:#fafafa}img{max-width:100%;display:block;margin:1em 0}"""


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
    md_path, html_path = results_dir / "report.md", results_dir / "report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
                         f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    return md_path, html_path
