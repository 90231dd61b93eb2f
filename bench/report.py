"""Markdown and single-file HTML reports built only from stored records.

    python -m bench report reports/default     # writes report.md and report.html there

Runs that differ only in seed are aggregated (mean ± std). Failed, skipped and diverged
runs are listed with their reasons, never dropped. Plots are PNGs embedded in the HTML
(it opens offline) and written beside the Markdown.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.metrics import METRICS
from bench.registry import MODELS
from bench.store import Store

STRATEGY_ORDER = ["zero-shot", "scratch", "finetune", "freeze-embedding", "freeze-interactions",
                  "readout-only"]


def _fmt(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def _mean_std(values: list[float], digits=1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return _fmt(values[0], digits)
    return f"{_fmt(float(np.mean(values)), digits)} ± {_fmt(float(np.std(values)), digits)}"


def _strategy_key(name: str) -> tuple:
    return (STRATEGY_ORDER.index(name), 0) if name in STRATEGY_ORDER else (len(STRATEGY_ORDER), name)


def _group_key(spec: dict) -> tuple:
    return (spec["dataset"], spec["model"], spec["checkpoint"], spec["strategy"],
            spec["train_size"], spec["e0_policy"],
            str(sorted((spec.get("train_config") or {}).items())))


class Section:
    def __init__(self, title: str, text: str = ""):
        self.title, self.text = title, text
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self.figures: list[tuple[str, bytes]] = []


def _results_table(groups: dict[tuple, list[dict]]) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "model", "strategy", "frozen blocks", "train size", "seeds",
              "E RMSE (meV/atom)", "F RMSE (meV/Å)", "S RMSE (GPa)", "trained params",
              "train time (s)", "step (ms/structure)", "inference (atoms/s)"]
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], _strategy_key(k[3]), k[4])):
        recs = groups[key]
        spec = recs[0]["spec"]
        m = [r["metrics"] for r in recs]
        t = [r.get("timing", {}) for r in recs]
        params = recs[0].get("parameters", {})
        blocks = recs[0].get("blocks", [])
        k = spec["freeze_k"]
        frozen = "–" if k is None else ("none" if k == 0 else
                                        f"{k}: {', '.join(b['name'] for b in blocks[:k])}")
        native = dict(MODELS[spec["model"]].native_freeze).get(k) if spec["model"] in MODELS else None
        if native:
            frozen += f" ({native})"
        step = [x.get("step_s_per_structure") for x in t]
        rows.append([
            spec["dataset"], f"{spec['model']} ({spec['checkpoint']})", spec["strategy"], frozen,
            str(spec["train_size"]) if spec["train_size"] else "–", str(len(recs)),
            _mean_std([x["energy_rmse_mev_per_atom"] for x in m]),
            _mean_std([x["forces_rmse_mev_per_ang"] for x in m]),
            _mean_std([x.get("stress_rmse_gpa") for x in m], 2),
            f"{params.get('trainable', 0):,} / {params.get('total', 0):,}" if k is not None else "0",
            _mean_std([x.get("train_s") for x in t], 0),
            _mean_std([1000 * s if s else None for s in step], 0),
            _mean_std([x.get("inference_atoms_per_s") for x in t], 0),
        ])
    return header, rows


def _step_time_table(groups: dict[tuple, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """Training step time per strategy relative to full fine-tuning, same model and size."""
    header = ["model", "train size", "strategy", "trained params", "step (ms/structure)", "vs finetune"]
    rows = []
    by_model: dict[tuple, dict[str, float]] = defaultdict(dict)
    params: dict[tuple, int] = {}
    for key, recs in groups.items():
        steps = [r["timing"].get("step_s_per_structure") for r in recs if r.get("timing")]
        steps = [s for s in steps if s]
        if steps and key[3] != "zero-shot":
            by_model[(key[0], key[1], key[4])][key[3]] = float(np.mean(steps))
            params[(key[0], key[1], key[4], key[3])] = recs[0]["parameters"]["trainable"]
    for (ds, model, size), strategies in sorted(by_model.items()):
        ref = strategies.get("finetune")
        for name in sorted(strategies, key=_strategy_key):
            ratio = f"{strategies[name] / ref:.2f}×" if ref else "–"
            rows.append([model, str(size), name, f"{params[(ds, model, size, name)]:,}",
                         _fmt(1000 * strategies[name], 0), ratio])
    return header, rows


def _group_table(groups: dict[tuple, list[dict]]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "strategy", "train size", "group", "structures", "E RMSE (meV/atom)",
              "F RMSE (meV/Å)", "S RMSE (GPa)"]
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], _strategy_key(k[3]), k[4])):
        recs = groups[key]
        per = [r["metrics"].get("per_group", {}) for r in recs]
        for g in sorted(per[0]):
            vals = [p[g] for p in per if g in p]
            rows.append([key[1], key[3], str(key[4]) if key[4] else "–", g, str(vals[0]["n_structures"]),
                         _mean_std([v["energy_rmse_mev_per_atom"] for v in vals]),
                         _mean_std([v["forces_rmse_mev_per_ang"] for v in vals]),
                         _mean_std([v.get("stress_rmse_gpa") for v in vals], 2)])
    return header, rows


def _curves_figure(groups: dict[tuple, list[dict]], dataset: str, model: str) -> bytes | None:
    import matplotlib  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    series: dict[str, list[tuple[int, list[dict]]]] = defaultdict(list)
    zero = None
    for key, recs in groups.items():
        if key[0] != dataset or key[1] != model:
            continue
        if key[3] == "zero-shot":
            zero = recs[0]["metrics"]
        else:
            series[key[3]].append((key[4], [r["metrics"] for r in recs]))
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ["energy_rmse_mev_per_atom", "forces_rmse_mev_per_ang"], strict=True):
        for name in sorted(series, key=_strategy_key):
            pts = sorted(series[name])
            x = [p[0] for p in pts]
            y = [float(np.mean([m[metric] for m in p[1]])) for p in pts]
            err = [float(np.std([m[metric] for m in p[1]])) for p in pts]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
        if zero:
            ax.axhline(zero[metric], color="k", linestyle="--", label="zero-shot")
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("training structures")
        ax.set_ylabel(METRICS[metric])
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{model} on {dataset}: test error vs training size")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def build_sections(records: list[dict]) -> list[Section]:
    ok = [r for r in records if r["status"] == "ok"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ok:
        groups[_group_key(r["spec"])].append(r)
    counts = defaultdict(int)
    for r in records:
        counts[r["status"]] += 1
    intro = Section("Summary", f"{len(records)} stored runs: " +
                    ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                    ". Errors are on the dataset's fixed test set; mean ± std over seeds.")
    sections = [intro]
    res = Section("Accuracy, cost and trained parameters")
    res.tables.append(_results_table(groups))
    sections.append(res)
    curves = Section("Learning curves")
    for ds, model in sorted({(k[0], k[1]) for k in groups}):
        png = _curves_figure(groups, ds, model)
        if png:
            curves.figures.append((f"curves-{ds}-{model}.png", png))
    sections.append(curves)
    steps = Section("Training step time by strategy",
                    "Forward + backward + optimizer step per training structure (total step time / "
                    "structures seen); frozen blocks need no parameter gradients, so steps should "
                    "get cheaper as more is frozen. Ratios compare runs of one model, size and "
                    "machine.")
    steps.tables.append(_step_time_table(groups))
    sections.append(steps)
    per_group = Section("Errors per group of the test set")
    per_group.tables.append(_group_table(groups))
    sections.append(per_group)
    bad = Section("Failed, skipped and diverged runs")
    bad.tables.append((["model", "strategy", "train size", "seed", "status", "reason"],
                       [[r["spec"]["model"], r["spec"]["strategy"], str(r["spec"]["train_size"]),
                         str(r["spec"]["seed"]), r["status"], (r.get("reason") or "")[:400]]
                        for r in records if r["status"] != "ok"]))
    sections.append(bad)
    env = Section("Environment and provenance")
    seen = {}
    for r in ok:
        e, p = r.get("environment", {}), r.get("provenance", {})
        row = [r["spec"]["model"], ", ".join(f"{k} {v}" for k, v in sorted(e.get("packages", {}).items())),
               str(e.get("device")), str(e.get("threads")), str(e.get("cpu")),
               f"{(p.get('commit') or 'unknown')[:10]}{' (dirty)' if p.get('dirty') else ''}"]
        seen[tuple(row)] = row
    env.tables.append((["model", "packages", "device", "threads", "CPU", "commit"], list(seen.values())))
    sections.append(env)
    return sections


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#eee}tr:nth-child(even){background:#fafafa}img{max-width:100%}"""


def write_report(results_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` (+ PNGs) and a self-contained ``report.html`` into ``results_dir``."""
    records = Store(results_dir).all()
    sections = build_sections(records)
    title = "ftbench report"
    md, body = [f"# {title}\n"], [f"<h1>{title}</h1>"]
    for sec in sections:
        md.append(f"## {sec.title}\n")
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            md.append(sec.text + "\n")
            body.append(f"<p>{html.escape(sec.text)}</p>")
        for header, rows in sec.tables:
            md.append(_md_table(header, rows))
            body.append(_html_table(header, rows))
        for name, png in sec.figures:
            (results_dir / name).write_bytes(png)
            md.append(f"![{name}]({name})\n")
            b64 = base64.b64encode(png).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">')
    md_path, html_path = results_dir / "report.md", results_dir / "report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
                         f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    return md_path, html_path
