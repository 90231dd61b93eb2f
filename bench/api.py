"""A small Python API over the run contract, for notebooks and scripts.

Everything here is what ``python -m bench run`` and ``bench report`` do, with typed
results instead of files to parse. Like the command line, it never imports torch or a model
library: runs happen in the families' worker environments.

Example:
    >>> from bench import api
    >>> results = api.run("quick", models="m3gnet", out="reports/m3gnet-quick")
    >>> results = api.load("reports/quick")            # an existing results directory
    >>> [r.spec.label for r in results.ok]
    >>> results.table()[0]                              # one flat row per record
    >>> h = results.headline()                          # bench.headline.Headline
    >>> results.report()                                # writes report.md and report.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench import lr_grid
from bench.config import SweepConfig
from bench.core.contract import Record
from bench.core.metrics import METRICS
from bench.core.util import atomic_write_json
from bench.headline import Headline, curves, headline
from bench.plan import Plan, make_plan
from bench.report import HEADLINE_SETTINGS, write_report
from bench.runner import execute
from bench.store import Store


@dataclass
class Results:
    """A results directory's records (``bench.core.contract.Record``) and what is derived
    from them."""

    root: Path
    records: list[Record]
    headline_settings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)  # of the sweep that made them, when run here

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    @property
    def not_ok(self) -> list[Record]:
        """Failed, skipped and diverged runs; each says why in ``reason``."""
        return [r for r in self.records if not r.ok]

    def headline(self, **settings) -> Headline:
        """Headline rows (settings as a preset's ``[headline]``; default: the sweep's)."""
        return headline(self.records, **{**self.headline_settings, **settings})

    def curves(self) -> dict:
        return curves(self.records)

    def table(self) -> list[dict]:
        """One flat row per record: what ran, where, its status and its test metrics."""
        rows = []
        for r in self.records:
            spec = r.spec
            row = {"run_id": r.run_id, "kind": spec.kind, "dataset": spec.dataset, "model": spec.model,
                   "checkpoint": spec.checkpoint, "what": spec.what, "train_size": getattr(spec, "train_size", None),
                   "seed": getattr(spec, "seed", None), "device": r.runtime.device, "status": r.status,
                   "reason": r.reason}
            row |= {name: r.metrics.value(name) if r.metrics else None for name in METRICS}
            rows.append(row)
        return rows

    def report(self) -> tuple[Path, Path]:
        return write_report(self.root, headline=self.headline_settings)


def config(preset: str = "quick", **settings) -> SweepConfig:
    """A preset's settings with keyword overrides (the names of ``SweepConfig``'s fields)."""
    return SweepConfig.from_preset(preset, **settings)


def plan(preset: str = "quick", **settings) -> Plan:
    """The runs a sweep would do (``plan.runs[i].spec``), without running anything."""
    return make_plan(config(preset, **settings))


def run_sweep(cfg: SweepConfig, *, report: bool = True, log=None) -> Results:
    """Run (or resume) a sweep into ``cfg.out``; records ``ok`` on the same runtime are reused.
    With a learning-rate grid, the grid runs first, then the curves at the chosen rates."""
    store = Store(Path(cfg.out)).prepare()
    counts: dict = {}
    chosen: dict = {}
    while True:
        plan = make_plan(cfg, chosen)
        for status, n in execute(plan, store).items():
            counts[status] = counts.get(status, 0) + n
        now = lr_grid.choose(store.all(), cfg.lr_grid) if plan.waiting else chosen
        if not plan.waiting or now == chosen:  # done, or a grid that cannot choose (its failures say why)
            break
        chosen = now
        if log:
            log(f"learning rates chosen on the validation set: {chosen}")
    atomic_write_json(store.root / HEADLINE_SETTINGS, cfg.headline)  # `bench report` reuses them
    if report:
        write_report(store.root, headline=cfg.headline)
    return Results(store.root, store.all(), dict(cfg.headline), counts)


def run(preset: str = "quick", *, report: bool = True, **settings) -> Results:
    """``python -m bench run --preset PRESET`` with keyword overrides."""
    return run_sweep(config(preset, **settings), report=report)


def load(path: str | Path) -> Results:
    """An existing results directory's records (refused clearly if of another schema version)."""
    root = Path(path)
    settings_path = root / HEADLINE_SETTINGS
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    return Results(root, Store(root).all(), settings)
