"""Report figures as PNG bytes (matplotlib's object API: no pyplot state, no display)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from bench.core.metrics import METRICS
from bench.headline import ENERGY, FORCES, Point, Reference

PANELS = (ENERGY, FORCES)
MAE_PANELS = ("energy_mae_mev_per_atom", "forces_mae_mev_per_ang")
MARKERS = "osD^v<>ph*"  # with the 10 default colours: any number of strategies stays distinguishable


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _size_ticks(ax, points: list[Point]) -> None:
    ticks = {p.size: p.fraction for p in points if p.size}
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(ticks), [f"{n}\n({100 * f:.0f} %)" if f else str(n) for n, f in sorted(ticks.items())])
    ax.xaxis.set_minor_locator(NullLocator())
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 40, not 4×10¹ (minor labels on short ranges)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("training structures (% of pool)")
    ax.grid(True, which="both", alpha=0.3)


def _series(ax, points: list[Point], metric: str, **style) -> None:
    pts = [p for p in points if p.size and p.stat(metric)]
    ax.errorbar([p.size for p in pts], [p.stat(metric).mean for p in pts],
                yerr=[p.stat(metric).std for p in pts], capsize=3, **{"marker": "o", **style})


def _style(i: int) -> dict:
    """Colour, marker and (past ten lines) dash of the i-th line: no fixed strategy list."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "linestyle": "-" if i < 10 else "--"}


def learning_curves(series: dict[str, list[Point]], reference: Reference | None, title: str,
                    tolerance: float, published: dict[str, dict[str, float]] | None = None) -> bytes | None:
    """Test error vs training size, RMSE (top) and MAE (bottom), one line per strategy (error
    bars: std over seeds); zero-shot as a dashed line, scratch at the largest size as the
    dotted reference (grey when it supports no claim), and the ``published`` potentials'
    test MAE (name -> ``energy_mae_mev_per_atom``, ``forces_mae_mev_per_ang``) as dash-dotted
    lines in the MAE panels."""
    trained = {name: pts for name, pts in series.items() if any(p.size for p in pts)}
    if not trained:
        return None
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    for ax, metric in zip(axes.flat, (*PANELS, *MAE_PANELS), strict=True):
        for i, (name, pts) in enumerate(trained.items()):
            _series(ax, pts, metric, label=name, **_style(i))
        for name, pts in series.items():
            if name not in trained and pts[0].stat(metric):
                ax.axhline(pts[0].stat(metric).mean, color="k", linestyle="--", label=name)
        if reference and reference.point.stat(metric):
            ref = reference.point.stat(metric).mean
            valid = reference.verdict.valid
            ax.axhline(ref, color="grey", linestyle=":", label=f"reference: scratch n={reference.point.size}"
                       + ("" if valid else " (supports no claim)"))
            if valid:
                ax.axhspan(ref, ref * (1 + tolerance), color="grey", alpha=0.12)
        for j, (name, values) in enumerate((published or {}).items()):
            if metric in values:
                ax.axhline(values[metric], color=f"C{(j + 6) % 10}", linestyle="-.", label=f"{name} (published)")
        _size_ticks(ax, [p for pts in trained.values() for p in pts])
        ax.set_ylabel(METRICS[metric])
    axes[0][1].legend(fontsize=8)
    if published:
        axes[1][1].legend(fontsize=8, handles=[h for h in axes[1][1].get_lines() if "published" in h.get_label()])
    fig.suptitle(title)
    return _png(fig)


def cross_family(best: dict[str, tuple[list[Point], Point | None]], title: str) -> bytes | None:
    """Each family at its best strategy; its zero-shot as a dashed line of the same colour."""
    if not best:
        return None
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, PANELS, strict=True):
        for i, (label, (points, zero)) in enumerate(best.items()):
            style = _style(i)
            colour = style["color"]
            _series(ax, points, metric, label=label, **style)
            if zero and zero.stat(metric):
                ax.axhline(zero.stat(metric).mean, color=colour, linestyle="--", alpha=0.7)
        _size_ticks(ax, [p for pts, _ in best.values() for p in pts])
        ax.set_ylabel(METRICS[metric])
    axes[1].legend(fontsize=8, title="dashed: zero-shot")
    fig.suptitle(title)
    return _png(fig)


def parity(runs: dict[str, Path], title: str, max_points: int = 20000) -> bytes | None:
    """DFT vs predicted energy per atom and force components, one row per run."""
    if not runs:
        return None
    fig = Figure(figsize=(9, 4 * len(runs)))
    axes = fig.subplots(len(runs), 2, squeeze=False)
    rng = np.random.default_rng(0)
    for (label, path), (ax_e, ax_f) in zip(runs.items(), axes, strict=True):
        with np.load(path) as d:
            e_ref, e_pred = d["ref_energy"] / d["ref_n_atoms"], d["pred_energy"] / d["pred_n_atoms"]
            f_ref, f_pred = d["ref_forces"].ravel(), d["pred_forces"].ravel()
        if f_ref.size > max_points:  # keeps big test sets (OC20) plottable
            keep = rng.choice(f_ref.size, max_points, replace=False)
            f_ref, f_pred = f_ref[keep], f_pred[keep]
        for ax, ref, pred, unit, what in ((ax_e, e_ref, e_pred, "eV/atom", "energy"),
                                          (ax_f, f_ref, f_pred, "eV/Å", "force components")):
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
            ax.scatter(ref, pred, s=4, alpha=0.5, rasterized=True)
            rmse = 1000 * float(np.sqrt(np.mean((pred - ref) ** 2)))
            ax.set_title(f"{label}\n{what}: RMSE {rmse:.1f} m{unit}", fontsize=9)
            ax.set_xlabel(f"DFT ({unit})")
            ax.set_ylabel(f"predicted ({unit})")
            ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title)
    return _png(fig)


def property_errors(errors: dict[str, dict[str, float]], title: str) -> bytes | None:
    """% error vs DFT per property (x) for each model (one marker style each): the physical
    properties table at a glance."""
    if not errors:
        return None
    names = list(dict.fromkeys(n for values in errors.values() for n in values))
    fig = Figure(figsize=(11, 4.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(errors))
    for i, (label, values) in enumerate(errors.items()):
        xs = [names.index(n) - 0.4 + (i + 0.5) * width for n in values]
        style = _style(i)
        ax.plot(xs, list(values.values()), linestyle="none", marker=style["marker"], color=style["color"],
                label=label)
    ax.axhline(0, color="k", linewidth=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("model − DFT (% of DFT)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    return _png(fig)
