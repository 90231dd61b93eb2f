"""Saved models: which run is the best of each model, pruning the others, the MD runs on
saved models, and copying them out (``python -m bench export``).

A trained run asked to save writes its model in the library's own format under
``<out>/models/<run_id>/`` (the worker's ``Adapter.export``) and its record points at it
(``artefacts.model``: path, sha256, bytes, format). With ``--save-models best`` every trained
run saves, since the best is known only when the sweep ends; then, per model (dataset ×
model × checkpoint), the run with the lowest validation force RMSE of its restored weights
is kept (never the test set, which the report then uses) and the other files are removed,
their records saying so. Saving is not part of a run's identity: a stored run that lacks the
model a sweep asks for is trained again (``all``: every such run; ``best``: the best ones).

Example:
    >>> best = best_runs(Store(Path("reports/quick")).all())
    >>> export(Path("reports/quick"), "best", Path("models"))
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from bench.config import SweepConfig
from bench.core.contract import MDSpec, Record, TrainSpec
from bench.core.util import atomic_write_json, file_sha256
from bench.registry import MODELS
from bench.store import Store
from datasets.registry import catalog

# How each format is loaded (the README's "Use the fine-tuned model"); printed by `bench export`.
LOADERS = {
    "mace-model": "mace.calculators.MACECalculator(model_paths=PATH, device='cpu', default_dtype='float32'); "
                  "LAMMPS: mace_create_lammps_model PATH",
    "sevenn-checkpoint": "sevenn.calculator.SevenNetCalculator(PATH, device='cpu'); LAMMPS: sevenn_get_model PATH",
    "chgnet-file": "chgnet.model.dynamics.CHGNetCalculator(model=chgnet.model.CHGNet.from_file(PATH))",
    "matgl-directory": "matgl.ext.ase.PESCalculator(matgl.load_model(PATH), stress_unit='eV/A3')",
}
SUFFIX = {"mace-model": ".model", "sevenn-checkpoint": ".pth", "chgnet-file": ".pth.tar", "matgl-directory": ""}
HOW = ("rerun the sweep's `bench run` command with --save-models {mode} (and the same --out): stored runs "
       "that lack the model it asks for are trained again and saved")


class ExportError(ValueError):
    """Nothing to export; the message says why and how to get the model."""


def validation_forces(record: Record) -> float | None:
    """Validation force RMSE (meV/Å) of the weights the run kept (training restores its best epoch)."""
    return record.convergence.val_forces_best_mev_per_ang if record.convergence else None


def model_key(record: Record) -> tuple[str, str, str]:
    spec = record.spec
    return spec.dataset, spec.model, spec.checkpoint


def best_runs(records: list[Record]) -> dict[tuple[str, str, str], Record]:
    """Per model (dataset, model, checkpoint): the trained learning-curve run with the lowest
    validation force RMSE (ties: the lower run id)."""
    best: dict[tuple, Record] = {}
    for r in sorted(records, key=lambda r: r.run_id):
        spec, val = r.spec, validation_forces(r)
        if not (r.ok and isinstance(spec, TrainSpec) and spec.trains and spec.role == "curve" and val is not None):
            continue
        held = best.get(model_key(r))
        if held is None or val < validation_forces(held):
            best[model_key(r)] = r
    return best


def saved_model(record: Record, root: Path) -> Path | None:
    """The record's saved model file (or directory), if it says it has one and it is there."""
    art = record.artefacts.model if record.artefacts else None
    if art is None or not art.available or not (root / art.path).exists():
        return None
    return root / art.path


def why_missing(record: Record, root: Path) -> str:
    """Why a run has no saved model, in words."""
    art = record.artefacts.model if record.artefacts else None
    if art is None:
        return "its sweep did not save it (--save-models none, or not a trained run)"
    if art.error:
        return f"its export failed: {art.error}"
    if art.pruned:
        return f"it was removed after the sweep: {art.pruned}"
    return f"{root / art.path} is gone"


def prune(store: Store, keep: set[str], records: list[Record]) -> int:
    """Remove the saved models of every run not in ``keep`` (run ids), each record saying why."""
    best = {model_key(store.get(rid)): store.get(rid) for rid in keep}
    removed = 0
    for r in records:
        path = saved_model(r, store.root)
        if path is None or r.run_id in keep:
            continue
        held = best.get(model_key(r))
        why = ("not the best of its model by validation force RMSE" +
               (f" (kept: {held.spec.label}, {validation_forces(held):.1f} meV/Å)" if held else ""))
        if path.parent.parent == store.root / "models":  # models/<run id>/<file>: nothing else is removed
            shutil.rmtree(path.parent, ignore_errors=True)
        model = dataclasses.replace(r.artefacts.model, pruned=why)
        store.put(dataclasses.replace(r, artefacts=dataclasses.replace(r.artefacts, model=model)))
        removed += 1
    return removed


def md_specs(cfg: SweepConfig, records: list[Record], root: Path) -> tuple[list[tuple[MDSpec, Path]], list[str]]:
    """The MD runs ``cfg.md`` asks for on the saved models (``best``: the best run of each
    model; ``all``: every saved one), and notes on what cannot be run."""
    notes: list[str] = []
    chosen = list(best_runs(records).values()) if cfg.md == "best" else records
    out = []
    for r in chosen:
        path = saved_model(r, root)
        if path is None:
            if cfg.md == "best":
                notes.append(f"{r.spec.label}: no MD, no saved model ({why_missing(r, root)})")
            continue
        table = catalog().get(r.spec.dataset, {}).get("md")
        if table is None:
            notes.append(f"{r.spec.dataset}: no [{r.spec.dataset}.md] in datasets/catalog.toml, so no MD runs on it")
            continue
        s = cfg.md_settings
        spec = MDSpec(model=r.spec.model, family=r.spec.family, checkpoint=r.spec.checkpoint, dataset=r.spec.dataset,
                      dataset_sha256=r.spec.dataset_sha256, model_run=r.run_id,
                      model_sha256=r.artefacts.model.sha256, strategy=r.spec.strategy, train_size=r.spec.train_size,
                      seed=r.spec.seed, cell_group=table["cell_group"],
                      temperatures_k=(300.0, float(table["high_temperature_k"])), timestep_fs=table["timestep_fs"],
                      langevin_ps=s["langevin_ps"], nve_ps=s["nve_ps"], friction_per_fs=s["friction_per_fs"],
                      criteria=dict(s["criteria"]), dimer=dict(s["dimer"]))
        out.append((spec, path))
    return out, list(dict.fromkeys(notes))


def _name(record: Record) -> str:
    s = record.spec
    return f"{s.model}-{s.dataset}-{s.strategy}-n{s.train_size}-seed{s.seed}-{record.run_id[:8]}"


def _chosen(records: list[Record], which: str) -> list[Record]:
    if which == "best":
        best = list(best_runs(records).values())
        if not best:
            raise ExportError("no trained run finished with a validation error: no best model to export")
        return best
    found = [r for r in records if r.run_id.startswith(which)]
    if len(found) != 1:
        raise ExportError(f"{'no' if not found else len(found)} stored run(s) match {which!r}; "
                          "give a run id (records/<run id>.json) or 'best'")
    return found


def export(root: Path, which: str, to: Path | None = None) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Copy saved models out of a results directory: ``which`` is a run id (or a unique
    prefix) or ``best`` (the best run of each model). Each copy is checked against the
    recorded sha256 and gets a ``.json`` beside it (run, metrics, how to load it). Returns
    each copy with that description and, for runs without a usable model, why and how to
    get it."""
    root = Path(root)
    to = Path(to) if to else root / "export"
    records = Store(root).all()
    copies, problems = [], []
    for r in _chosen(records, which):
        path = saved_model(r, root)
        if path is None:
            mode = "best" if which == "best" else "all"
            problems.append(f"{r.spec.label} ({r.run_id}) has no saved model: {why_missing(r, root)}; "
                            + HOW.format(mode=mode))
            continue
        art = r.artefacts.model
        if file_sha256(path)[0] != art.sha256:
            problems.append(f"{path}: its sha256 is not the recorded {art.sha256[:12]}; it changed after the run")
            continue
        dest = to / (_name(r) + SUFFIX.get(art.format, path.suffix))
        to.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(path, dest)
        about = {"run_id": r.run_id, "run": r.spec.label, "spec": r.spec.to_dict(), "runtime": r.runtime.to_dict(),
                 "format": art.format, "sha256": art.sha256, "bytes": art.bytes, "file": dest.name,
                 "load": LOADERS.get(art.format, "?").replace("PATH", dest.name),
                 "validation_forces_rmse_mev_per_ang": validation_forces(r),
                 "test_metrics": r.metrics.to_dict() if r.metrics else None,
                 "licence_of_the_foundation": MODELS[r.spec.model].licence if r.spec.model in MODELS else None}
        atomic_write_json(to / f"{_name(r)}.json", about)
        copies.append((dest, about))
    return copies, problems
