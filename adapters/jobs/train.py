"""The train job: one point of a learning curve.

Load the model the strategy starts from, adapt it (freeze, LoRA, E0 policy), train it with
the shared loop on the training subset (plus replayed structures of another domain, which
the foundation labels), merge LoRA back, then evaluate it on the test set (predictions
saved beside the record), and where asked measure forgetting on the other domain and the
catalog's physical properties, and save the model in its library's own format.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adapters.jobs import prepare
from adapters.jobs.common import JobFrames, energy_and_forces, predictions, read_frames
from adapters.training import Diverged, e0_shift, train
from bench.core.contract import Result
from bench.core.metrics import error_metrics
from bench.core.util import file_sha256, peak_rss_mb
from datasets.labels import has_stress, label_arrays

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.core.contract import Job


def _forgetting(job: Job, frames, before: dict, after: dict) -> dict:
    """Drift from the foundation's own predictions, and DFT error before/after, on held-out
    structures of another domain."""
    dft = {**label_arrays(frames), "stress": None}
    drift = energy_and_forces(error_metrics(after, {**before, "stress": None}))
    return {"dataset": job.spec.forgetting.dataset, "n_structures": len(frames),
            "drift_energy_rmse_mev_per_atom": drift["energy_rmse_mev_per_atom"],
            "drift_forces_rmse_mev_per_ang": drift["forces_rmse_mev_per_ang"],
            "dft_before": energy_and_forces(error_metrics(before, dft)),
            "dft_after": energy_and_forces(error_metrics(after, dft))}


def _properties(job: Job, adapter, frames: JobFrames, test_energy) -> dict:
    from adapters.properties import compute_properties

    def predict(structures, stress: bool):
        p = adapter.predict(structures, stress=stress)
        return p.energy, p.stress

    return compute_properties(job.properties, frames.pool, frames.test, predict, test_energy=test_energy)


def _train(job: Job, adapter, frames: JobFrames, replay_frames, progress, fields: dict, timing: dict) -> None:
    """Adapt and train the model in place, filling the result's fields; raises Diverged."""
    spec = job.spec
    replay_labelled = adapter.label(replay_frames, stress=has_stress([*frames.train, *frames.val])) \
        if replay_frames else []
    fields.update(prepare.adapt(adapter, freeze_k=spec.freeze_k, e0_policy=spec.e0_policy, lora=spec.lora,
                                train_frames=frames.train))
    cfg = spec.train_config
    fields["resolved_train_config"] = dataclasses.asdict(cfg)  # every loss/optimizer setting
    fields["trainable"] = adapter.parameter_counts()["trainable"]  # LoRA's, before they are merged
    if replay_labelled:
        fields["replay_structures"] = len(replay_labelled)
    hist = train(adapter, [*frames.train, *replay_labelled], frames.val, cfg,
                 on_epoch=lambda row: progress({**row, "epochs": cfg.epochs}))
    prepare.finish(adapter, fields.get("lora"), frames.val)
    fields["convergence"] = hist.convergence()
    summary = hist.as_dict()
    fields["curve"] = summary.pop("epochs")
    timing |= summary
    later = [row for row in fields["curve"] if row["epoch"] >= 2]
    if later:
        timing["data_fraction_after_epoch1"] = sum(r["data_s"] for r in later) / sum(r["epoch_s"] for r in later)


def run(job: Job, progress: Callable[[dict], None]) -> Result:
    spec = job.spec
    frames = JobFrames(job.data)
    other = job.other
    forget_frames = read_frames(other.test)[: spec.forgetting.n_structures] if spec.forgetting else []
    replay_pool = read_frames(other.pool) if spec.replay else []
    replay_frames = [replay_pool[i] for i in other.train] if replay_pool else []

    t0 = time.perf_counter()
    adapter = prepare.load(job, init=spec.init, covers=[*frames.train, *frames.val, *frames.test],
                           also_covers=[*forget_frames, *replay_frames], seed=spec.seed)
    timing: dict = {"load_s": time.perf_counter() - t0}
    fields: dict = {"blocks": [{"name": b.name, "kind": b.kind, "n_params": b.n_params} for b in adapter.blocks()],
                    "accelerator": prepare.accelerator(adapter)}
    before = predictions(adapter, forget_frames, stress=False) if forget_frames else None
    if not spec.trains and spec.e0_policy == "refit":  # the foundation with its E0 refit, no training
        fields.update(prepare.adapt(adapter, freeze_k=0, e0_policy="refit", lora=None, train_frames=frames.train))
    if spec.trains:
        try:
            _train(job, adapter, frames, replay_frames, progress, fields, timing)
        except Diverged as exc:
            fields.pop("trainable", None)
            return Result.from_dict({"status": "diverged", "reason": str(exc), "diverged_epoch": exc.epoch,
                                     **fields})
        if before is not None:
            fields["forgetting"] = _forgetting(job, forget_frames, before,
                                               predictions(adapter, forget_frames, stress=False))
    parameters = adapter.parameter_counts()
    if "trainable" in fields:
        parameters["trainable"] = fields.pop("trainable")

    test_graphs = [adapter.featurize(a) for a in frames.test]
    ref = label_arrays(frames.test)
    t0 = time.perf_counter()  # stress only where the labels have it (not for OC20 slabs)
    pred = predictions(adapter, frames.test, stress=ref["stress"] is not None, graphs=test_graphs)
    timing["test_predict_s"] = time.perf_counter() - t0
    groups = [a.info["group"] for a in frames.test]
    fields["metrics"] = error_metrics(pred, ref, groups)
    np.savez_compressed(job.paths.predictions, **{f"pred_{k}": v for k, v in pred.items() if v is not None},
                        **{f"ref_{k}": v for k, v in ref.items() if v is not None}, groups=np.array(groups))
    if job.properties:
        t0 = time.perf_counter()
        try:
            fields["properties"] = _properties(job, adapter, frames, pred["energy"])
        except Exception as exc:  # a property definition problem must not lose the run
            fields["properties_error"] = f"{type(exc).__name__}: {exc}"
        timing["properties_s"] = time.perf_counter() - t0
    if job.derived:
        fields["derived"] = _e0_refits(job, adapter, frames, pred, ref, groups)
    if job.save_model_to:
        fields["model"] = _save(adapter, Path(job.save_model_to))
    timing["peak_rss_mb"] = peak_rss_mb()
    if adapter.on_gpu:
        import torch

        timing["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(adapter.device) / 2**20
    return Result.from_dict({"status": "ok", **fields, "parameters": parameters, "timing": timing})


def _save(adapter, folder: Path) -> dict:
    """The trained model in its library's own format (``Adapter.export``), with its sha256
    and size; a failed export is recorded and the run kept (its metrics stand). The folder
    starts empty: a run trained again replaces its earlier file."""
    t0 = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    try:
        path = adapter.export(folder)
        sha256, size = file_sha256(path)
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return {"format": adapter.export_format, "error": f"{type(exc).__name__}: {exc}"}
    return {"format": adapter.export_format, "path": str(path), "sha256": sha256, "bytes": size,
            "export_s": time.perf_counter() - t0}


def _e0_refits(job: Job, adapter, frames: JobFrames, test_pred: dict, test_ref: dict, groups: list[str]) -> dict:
    """Test errors of this untrained model with its reference energies refit on each derived
    run's training subset: a per-element shift of the energies (forces and stress unchanged),
    from one prediction of the training structures they use."""
    used = sorted({i for d in job.derived for i in d.train})
    pool_energy = dict(zip(used, adapter.predict([frames.pool[i] for i in used], stress=False).energy, strict=True))
    references = adapter.reference_energies()
    out = {}
    for d in job.derived:
        shift = e0_shift([frames.pool[i] for i in d.train], np.array([pool_energy[i] for i in d.train]))
        moved = np.array([sum(shift.get(int(z), 0.0) for z in a.numbers) for a in frames.test])
        metrics = error_metrics({**test_pred, "energy": test_pred["energy"] + moved}, test_ref, groups)
        out[d.run_id] = {"metrics": metrics,
                         "reference_energies_ev": {str(z): references[z] + v for z, v in shift.items()}}
    return out
