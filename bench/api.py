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

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from bench import lr_grid, saved
from bench.config import SweepConfig
from bench.core.contract import Record
from bench.core.metrics import METRICS
from bench.core.util import atomic_write_json
from bench.headline import Headline, curves, headline
from bench.plan import Plan, PlannedRun, make_plan
from bench.registry import get_model
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
    With a learning-rate grid, the grid runs first, then the curves at the chosen rates. Then
    the saved models (``cfg.save_models``; ``best``: the best run of each model trained again
    where its model is missing, the others' files removed) and their MD runs (``cfg.md``)."""
    log = log or (lambda text: None)
    store = Store(Path(cfg.out)).prepare()
    counts: dict = {}

    def run(plan: Plan, follow_up: bool = False) -> None:
        for status, n in execute(plan, store, follow_up=follow_up).items():
            counts[status] = counts.get(status, 0) + n

    chosen: dict = {}
    while True:
        plan = make_plan(cfg, chosen)
        if cfg.save_models == "all":
            lacking = [r for r in _planned(plan, store) if r.ok and getattr(r.spec, "trains", False)
                       and saved.saved_model(r, store.root) is None]
            if lacking:
                log(f"{len(lacking)} stored run(s) lack a saved model: they are trained again (--save-models all)")
        run(plan)
        now = lr_grid.choose(store.all(), cfg.lr_grid) if plan.waiting else chosen
        if not plan.waiting or now == chosen:  # done, or a grid that cannot choose (its failures say why)
            break
        chosen = now
        log(f"learning rates chosen on the validation set: {chosen}")
    if cfg.save_models == "best":
        _keep_best_models(plan, store, run, log)
    if cfg.md != "none":
        specs, notes = saved.md_specs(cfg, _planned(plan, store), store.root)
        for note in notes:
            log(f"note: {note}")
        if specs:
            run(dataclasses.replace(plan, runs=[PlannedRun(spec, get_model(spec.model), model_file=path)
                                                for spec, path in specs]), follow_up=True)
    atomic_write_json(store.root / HEADLINE_SETTINGS, cfg.headline)  # `bench report` reuses them
    if report:
        write_report(store.root, headline=cfg.headline)
    return Results(store.root, store.all(), dict(cfg.headline), counts)


def _planned(plan: Plan, store: Store) -> list[Record]:
    """The stored records of this sweep's runs (a results directory may hold other sweeps')."""
    ids = {r.spec.spec_id for r in plan.runs}
    return [r for r in store.all() if r.spec_id in ids]


def _keep_best_models(plan: Plan, store: Store, run, log) -> None:
    """``--save-models best``: train again the best runs whose model is not saved (stored by an
    earlier sweep that did not save, or pruned then), then remove this sweep's other saved models."""
    best = saved.best_runs(_planned(plan, store))
    lacking = {r.spec_id for r in best.values() if saved.saved_model(r, store.root) is None
               and not (r.artefacts and r.artefacts.model and r.artefacts.model.error)}
    if lacking:
        log(f"training again {len(lacking)} best run(s) whose model is not saved")
        run(dataclasses.replace(plan, runs=[dataclasses.replace(r, require_model=True) for r in plan.runs
                                            if r.spec.spec_id in lacking]), follow_up=True)
    records = _planned(plan, store)
    keep = {r.run_id for r in best.values()} | {r.run_id for r in records if r.spec_id in lacking}
    for r in records:
        if r.run_id in keep and saved.saved_model(r, store.root) is None:
            log(f"no saved model for {r.spec.label}: {saved.why_missing(r, store.root)}")
    removed = saved.prune(store, keep, records)
    if removed:
        log(f"kept the best saved model of each model; removed {removed} others")


def run(preset: str = "quick", *, report: bool = True, **settings) -> Results:
    """``python -m bench run --preset PRESET`` with keyword overrides."""
    return run_sweep(config(preset, **settings), report=report)


def load(path: str | Path) -> Results:
    """An existing results directory's records (refused clearly if of another schema version)."""
    root = Path(path)
    settings_path = root / HEADLINE_SETTINGS
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    return Results(root, Store(root).all(), settings)
