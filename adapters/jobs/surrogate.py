"""The surrogate job: distil a fine-tuned foundation into a small student.

The teacher (the foundation adapted and trained as the spec's teacher strategy says, on
the whole pool) labels the pool, rattled copies of it and snapshots of short MD it drives
itself; a small student of the same family trains on those labels from scratch. Student,
teacher and foundation are then tested on the same test set and timed on the same
structures.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from adapters.distill import md_snapshots, rattled
from adapters.jobs import prepare
from adapters.jobs.common import JobFrames, Skipped, adapter_class, energy_and_forces, test_metrics
from adapters.perf import atoms_per_second
from adapters.training import refit_reference_energies, train
from bench.core.contract import Result
from bench.core.util import peak_rss_mb
from datasets.labels import has_stress

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.core.contract import Job


def run(job: Job, progress: Callable[[dict], None]) -> Result:
    spec = job.spec
    frames = JobFrames(job.data)
    stress = has_stress([*frames.train, *frames.val, *frames.test])
    covers = [*frames.train, *frames.val, *frames.test]
    try:
        foundation = prepare.load(job, covers=covers, seed=spec.seed)
        teacher = prepare.load(job, covers=covers, seed=spec.seed)
    except Skipped as exc:
        raise Skipped(f"teacher: {exc.reason}", exc.scope) from exc

    cfg = spec.train_config
    prepare.adapt(teacher, freeze_k=spec.freeze_k, e0_policy=spec.e0_policy, lora=None, train_frames=frames.train)
    train(teacher, frames.train, frames.val, cfg,
          on_epoch=lambda row: progress({**row, "epochs": cfg.epochs, "phase": "teacher"}))

    rng = np.random.default_rng(spec.seed)
    r, md = spec.rattle, spec.md
    extra_rattled = rattled(frames.train, copies=r["copies"], stdev_ang=r["stdev_ang"], strain=r["strain"], rng=rng)
    md_start = [teacher.periodic(a) for a in frames.train[: md["structures"]]]  # the library sees no open axis
    extra_md = md_snapshots(teacher.ase_calculator(), md_start, steps=md["steps"],
                            every=md["every"], temperature_k=md["temperature_k"], rng=rng)
    labelled = teacher.label([*frames.train, *extra_rattled, *extra_md], stress=stress)
    val_labelled = teacher.label(frames.val, stress=stress)

    cls = adapter_class(job.adapter)
    student = cls(spec.checkpoint, device=job.device, seed=spec.seed)
    numbers = sorted({int(z) for a in [*frames.train, *frames.test] for z in a.numbers})
    student.load(student=spec.student["architecture"], numbers=numbers)
    refit_reference_energies(student, labelled)
    student_cfg = dataclasses.replace(cfg, epochs=spec.student["epochs"], lr=spec.student["lr"])
    hist = train(student, labelled, val_labelled, student_cfg,
                 on_epoch=lambda row: progress({**row, "epochs": student_cfg.epochs, "phase": "student"}))

    models = {"foundation": foundation, "teacher": teacher, "student": student}
    metrics = {name: test_metrics(m, frames.test) for name, m in models.items()}
    speed_frames = frames.test[: spec.speed_structures]
    speed = atoms_per_second(models, speed_frames, stress=stress)
    arch = spec.student["architecture"]
    summary = hist.as_dict()
    return Result.from_dict({
        "status": "ok", "metrics": metrics["student"],
        "surrogate": {
            "teacher": {"strategy": spec.teacher_strategy, "n_train": len(frames.train),
                        "metrics": energy_and_forces(metrics["teacher"]), "parameters": teacher.parameter_counts()},
            "student": {"architecture": f"{cls.family} " + ", ".join(f"{k}={v}" for k, v in arch.items()),
                        "parameters": student.parameter_counts(), "n_labelled": len(labelled),
                        "n_pool": len(frames.train), "n_rattled": len(extra_rattled), "n_md": len(extra_md),
                        "metrics": energy_and_forces(metrics["student"]), "epochs_run": len(summary["epochs"]) - 1},
            "foundation": {"metrics": energy_and_forces(metrics["foundation"]),
                           "parameters": foundation.parameter_counts()},
            "speed": {"n_structures": len(speed_frames), "n_atoms": sum(len(a) for a in speed_frames),
                      **{f"{name}_atoms_per_s": v for name, v in speed.items()},
                      "speedup_vs_teacher": speed["student"] / speed["teacher"],
                      "speedup_vs_foundation": speed["student"] / speed["foundation"]}},
        "curve": summary.pop("epochs"),
        "timing": {"student_s_per_epoch": summary["s_per_epoch"], "peak_rss_mb": peak_rss_mb()}})
