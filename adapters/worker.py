"""Worker: runs jobs inside a family's environment.

    <family-env>/bin/python -m adapters.worker job.json          # one job
    <family-env>/bin/python -m adapters.worker --serve MODULE    # a fork server

The job (written by ``bench.runner``) names the adapter, checkpoint, strategy, data files
and indices; the worker writes one result JSON (atomically) and a predictions ``.npz``,
and appends one JSON line per epoch to the progress file. Expected outcomes (checkpoint
missing, elements not covered, divergence) become ``skipped``/``diverged`` results; any
other exception is written as ``failed`` with its traceback before exiting non-zero.

The fork server imports torch and the family's library once (seconds per run saved), then
reads job paths from stdin, one per line, runs each in a forked child (so a crash, leak or
OOM kill stays with that run) and answers each with the child's exit code on stdout.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from bench.store import atomic_write_json


def environment(family_packages: list[str], threads: int, device: str) -> dict:
    import torch  # noqa: PLC0415

    versions = {}
    for pkg in ["torch", "numpy", "ase", "e3nn", *family_packages]:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"packages": versions, "python": platform.python_version(), "threads": threads,
            "device": device, "cpu": cpu, "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
            "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}


def _read_frames(path: str):
    from datasets.converters import read_ase_file  # noqa: PLC0415

    return read_ase_file(Path(path))


def _labels(frames) -> dict:
    has_stress = all("stress" in a.calc.results for a in frames)
    return {
        "energy": np.array([a.calc.results["energy"] for a in frames]),
        "forces": np.concatenate([a.calc.results["forces"] for a in frames]),
        "stress": np.array([a.calc.results["stress"] for a in frames]) if has_stress else None,
        "n_atoms": np.array([len(a) for a in frames]),
    }


def _adapter_class(adapter: str):
    module, cls_name = adapter.split(":")
    return getattr(importlib.import_module(module), cls_name)


def run_perf(job: dict) -> dict:
    """The model's timing job: batched predict vs the library's ASE calculator."""
    from adapters.base import CheckpointUnavailable  # noqa: PLC0415
    from adapters.perf import predict_vs_calculator  # noqa: PLC0415

    frames = _read_frames(job["data"]["test"])[: job["n_structures"]]
    adapter = _adapter_class(job["adapter"])(job["checkpoint"], device=job["device"], seed=0)
    try:
        adapter.load()
        source = f"foundation {adapter.checkpoint}"
    except CheckpointUnavailable as exc:  # same architecture: timings do not depend on weights
        adapter.load(scratch=True)
        source = f"random init of the {adapter.checkpoint} architecture ({str(exc).splitlines()[0][:200]})"
    adapter.check_elements(frames)
    stress = all("stress" in a.calc.results for a in frames)
    timing = predict_vs_calculator(adapter, frames, stress=stress)
    timing["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"status": "ok", "reason": None, "model_source": source, "timing": timing,
            "parameters": adapter.parameter_counts()}


def _predictions(adapter, frames, *, stress: bool, graphs: list | None = None) -> dict:
    p = adapter.predict(frames, stress=stress, graphs=graphs)
    return {"energy": p.energy, "forces": p.forces, "stress": p.stress, "n_atoms": p.n_atoms}


def _test_metrics(adapter, test) -> dict:
    from bench.metrics import error_metrics  # noqa: PLC0415

    ref = _labels(test)
    return error_metrics(_predictions(adapter, test, stress=ref["stress"] is not None), ref,
                         [a.info["group"] for a in test])


def _ef(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("energy_rmse_mev_per_atom", "forces_rmse_mev_per_ang")}


def _forgetting(job: dict, frames, before: dict, after: dict) -> dict:
    """Drift from the foundation's own predictions, and DFT error before/after, on held-out
    structures of another domain."""
    from bench.metrics import error_metrics  # noqa: PLC0415

    dft = {**_labels(frames), "stress": None}
    drift = _ef(error_metrics(after, {**before, "stress": None}))
    return {"dataset": job["forgetting"]["dataset"], "n_structures": len(frames),
            "drift_energy_rmse_mev_per_atom": drift["energy_rmse_mev_per_atom"],
            "drift_forces_rmse_mev_per_ang": drift["forces_rmse_mev_per_ang"],
            "dft_before": _ef(error_metrics(before, dft)), "dft_after": _ef(error_metrics(after, dft))}


def _properties(job: dict, adapter, pool, test, test_energy) -> dict:
    from adapters.properties import compute_properties  # noqa: PLC0415

    def predict(frames, stress: bool):
        p = adapter.predict(frames, stress=stress)
        return p.energy, p.stress

    return compute_properties(job["properties"], pool, test, predict, test_energy=test_energy)


def run_job(job: dict, progress) -> dict:
    """Load, freeze, train and evaluate as the job says; return the result fields."""
    from adapters import lora  # noqa: PLC0415
    from adapters.base import CheckpointUnavailable, UnsupportedElements  # noqa: PLC0415
    from adapters.training import Diverged, TrainConfig, refit_reference_energies, train  # noqa: PLC0415
    from bench.metrics import error_metrics  # noqa: PLC0415

    cls = _adapter_class(job["adapter"])
    result: dict = {"status": "ok", "reason": None}
    pool, test = _read_frames(job["data"]["pool"]), _read_frames(job["data"]["test"])
    train_frames = [pool[i] for i in job["data"]["train"]]
    val_frames = [pool[i] for i in job["data"]["val"]]
    strategy = job["strategy"]
    other = job["data"].get("replay")
    forget_frames = _read_frames(other["test"])[: job["forgetting"]["n_structures"]] if job.get("forgetting") else []
    replay_pool = _read_frames(other["pool"]) if job.get("replay") else []
    replay_frames = [replay_pool[i] for i in other["train"]] if replay_pool else []

    t0 = time.perf_counter()
    adapter = cls(job["checkpoint"], device=job["device"], seed=job["seed"])
    try:
        adapter.load(scratch=strategy == "scratch")
        adapter.check_elements([*train_frames, *val_frames, *test])
    except CheckpointUnavailable as exc:
        return {"status": "skipped", "reason": str(exc), "skip_scope": "checkpoint"}
    except UnsupportedElements as exc:
        return {"status": "skipped", "reason": str(exc), "skip_scope": "model"}
    try:
        adapter.check_elements([*forget_frames, *replay_frames])
    except UnsupportedElements as exc:
        return {"status": "skipped", "reason": f"replay/forgetting dataset: {exc}"}
    timing = {"load_s": time.perf_counter() - t0}
    result["blocks"] = [{"name": b.name, "kind": b.kind, "n_params": b.n_params} for b in adapter.blocks()]
    before = _predictions(adapter, forget_frames, stress=False) if forget_frames else None

    if strategy != "zero-shot":
        with_stress = all("stress" in a.calc.results for a in [*train_frames, *val_frames])
        replay_labelled = adapter.label(replay_frames, stress=with_stress) if replay_frames else []
        e0 = job["e0_policy"]
        adapter.freeze(job["freeze_k"], train_reference=e0 == "train")
        if job.get("lora"):
            adapted = lora.inject(adapter.model_, adapter.block_prefixes("interaction", "readout"), rank=job["lora"]["rank"], alpha=job["lora"]["alpha"])
            if not adapted:
                return {**result, "status": "skipped", "reason": f"{adapter.family}: no weight matrix "
                        f"larger than rank {job['lora']['rank']} in its interaction/readout blocks"}
            result["lora"] = {**job["lora"], "adapted_matrices": len(adapted)}
        if e0 == "refit":
            refit = refit_reference_energies(adapter, train_frames)
            result["reference_energies_ev"] = {str(z): v for z, v in refit.items()}
        cfg = TrainConfig(**job["train_config"])
        result["resolved_train_config"] = dataclasses.asdict(cfg)  # every loss/optimizer setting
        trainable = adapter.parameter_counts()["trainable"]  # LoRA's, before they are merged
        if replay_labelled:
            result["replay_structures"] = len(replay_labelled)
        try:
            hist = train(adapter, [*train_frames, *replay_labelled], val_frames, cfg,
                         on_epoch=lambda row: progress({**row, "epochs": cfg.epochs}))
        except Diverged as exc:
            return {**result, "status": "diverged", "reason": str(exc), "diverged_epoch": exc.epoch}
        if job.get("lora"):
            unmerged = _predictions(adapter, val_frames, stress=False)
            lora.merge(adapter.model_)
            merged = _predictions(adapter, val_frames, stress=False)
            result["lora"]["merge_max_abs_de_mev"] = 1000 * float(np.abs(merged["energy"] - unmerged["energy"]).max())
        summary = hist.as_dict()
        result["curve"] = summary.pop("epochs")
        timing |= summary
        later = [row for row in result["curve"] if row["epoch"] >= 2]
        if later:
            timing["data_fraction_after_epoch1"] = (
                sum(r["data_s"] for r in later) / sum(r["epoch_s"] for r in later))
        if before is not None:
            result["forgetting"] = _forgetting(job, forget_frames, before,
                                               _predictions(adapter, forget_frames, stress=False))
    result["parameters"] = adapter.parameter_counts()
    if strategy != "zero-shot":
        result["parameters"]["trainable"] = trainable

    test_graphs = [adapter.featurize(a) for a in test]
    ref = _labels(test)
    t0 = time.perf_counter()  # stress only where the labels have it (not for OC20 slabs)
    pred = _predictions(adapter, test, stress=ref["stress"] is not None, graphs=test_graphs)
    timing["test_predict_s"] = time.perf_counter() - t0
    result["metrics"] = error_metrics(pred, ref, [a.info["group"] for a in test])
    np.savez_compressed(job["predictions_path"], **{f"pred_{k}": v for k, v in pred.items() if v is not None},
                        **{f"ref_{k}": v for k, v in ref.items() if v is not None},
                        groups=np.array([a.info["group"] for a in test]))
    if job.get("properties"):
        t0 = time.perf_counter()
        try:
            result["properties"] = _properties(job, adapter, pool, test, pred["energy"])
        except Exception as exc:  # a property definition problem must not lose the run
            result["properties_error"] = f"{type(exc).__name__}: {exc}"
        timing["properties_s"] = time.perf_counter() - t0
    timing["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["timing"] = timing
    return result


def run_surrogate(job: dict, progress) -> dict:
    """Teacher (foundation fine-tuned as the job says) labels the pool, rattled copies and MD
    snapshots; a small student of the family trains on those labels from scratch."""
    from adapters.base import CheckpointUnavailable  # noqa: PLC0415
    from adapters.distill import md_snapshots, rattled  # noqa: PLC0415
    from adapters.perf import atoms_per_second  # noqa: PLC0415
    from adapters.training import TrainConfig, refit_reference_energies, train  # noqa: PLC0415

    cls = _adapter_class(job["adapter"])
    pool, test = _read_frames(job["data"]["pool"]), _read_frames(job["data"]["test"])
    train_frames = [pool[i] for i in job["data"]["train"]]
    val_frames = [pool[i] for i in job["data"]["val"]]
    stress = all("stress" in a.calc.results for a in [*train_frames, *val_frames, *test])
    models = {name: cls(job["checkpoint"], device=job["device"], seed=job["seed"])
              for name in ("foundation", "teacher", "student")}
    try:
        models["foundation"].load()
        models["teacher"].load()
    except CheckpointUnavailable as exc:
        return {"status": "skipped", "reason": f"teacher: {exc}", "skip_scope": "checkpoint"}
    teacher = models["teacher"]
    teacher.check_elements([*train_frames, *val_frames, *test])

    cfg = TrainConfig(**job["train_config"])
    teacher.freeze(job["freeze_k"])
    if job["e0_policy"] == "refit":
        refit_reference_energies(teacher, train_frames)
    train(teacher, train_frames, val_frames, cfg,
          on_epoch=lambda row: progress({**row, "epochs": cfg.epochs, "phase": "teacher"}))

    rng = np.random.default_rng(job["seed"])
    r, md = job["rattle"], job["md"]
    extra_rattled = rattled(train_frames, copies=r["copies"], stdev_ang=r["stdev_ang"], strain=r["strain"], rng=rng)
    extra_md = md_snapshots(teacher.ase_calculator(), train_frames[: md["structures"]], steps=md["steps"],
                            every=md["every"], temperature_k=md["temperature_k"], rng=rng)
    labelled = teacher.label([*train_frames, *extra_rattled, *extra_md], stress=stress)
    val_labelled = teacher.label(val_frames, stress=stress)

    student = models["student"]
    numbers = sorted({int(z) for a in [*train_frames, *test] for z in a.numbers})
    student.load(student=job["student"]["architecture"], numbers=numbers)
    refit_reference_energies(student, labelled)
    student_cfg = dataclasses.replace(cfg, epochs=job["student"]["epochs"], lr=job["student"]["lr"])
    hist = train(student, labelled, val_labelled, student_cfg,
                 on_epoch=lambda row: progress({**row, "epochs": student_cfg.epochs, "phase": "student"}))

    metrics = {name: _test_metrics(m, test) for name, m in models.items()}
    speed_frames = test[: job["speed_structures"]]
    speed = atoms_per_second(models, speed_frames, stress=stress)
    arch = job["student"]["architecture"]
    summary = hist.as_dict()
    return {"status": "ok", "reason": None, "metrics": metrics["student"],
            "surrogate": {
                "teacher": {"strategy": job["teacher_strategy"], "n_train": len(train_frames),
                            "metrics": _ef(metrics["teacher"]), "parameters": teacher.parameter_counts()},
                "student": {"architecture": f"{cls.family} " + ", ".join(f"{k}={v}" for k, v in arch.items()),
                            "parameters": student.parameter_counts(), "n_labelled": len(labelled),
                            "n_pool": len(train_frames), "n_rattled": len(extra_rattled), "n_md": len(extra_md),
                            "metrics": _ef(metrics["student"]), "epochs_run": len(summary["epochs"]) - 1},
                "foundation": {"metrics": _ef(metrics["foundation"]),
                               "parameters": models["foundation"].parameter_counts()},
                "speed": {"n_structures": len(speed_frames), "n_atoms": sum(len(a) for a in speed_frames),
                          **{f"{name}_atoms_per_s": v for name, v in speed.items()},
                          "speedup_vs_teacher": speed["student"] / speed["teacher"],
                          "speedup_vs_foundation": speed["student"] / speed["foundation"]}},
            "curve": summary.pop("epochs"),
            "timing": {"student_s_per_epoch": summary["s_per_epoch"],
                       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}


def _resolve_device(device: str) -> str:
    import torch  # noqa: PLC0415

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA device is visible to this worker")
    return device


def run_file(job_path: Path) -> int:
    """Run one job file; the result file always gets written, whatever happens."""
    job = json.loads(job_path.read_text())
    import torch  # noqa: PLC0415

    from adapters.perf import reference_workload_s  # noqa: PLC0415

    torch.set_num_threads(job["threads"])
    torch.set_default_dtype(torch.float32)
    progress_path = Path(job["progress_path"])

    def progress(row: dict) -> None:
        with progress_path.open("a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    started = time.time()
    try:
        job["device"] = _resolve_device(job["device"])
        reference_s = reference_workload_s()
        kind = job.get("kind")
        result = (run_perf(job) if kind == "perf" else run_surrogate(job, progress) if kind == "surrogate"
                  else run_job(job, progress))
        if result.get("timing") is not None:
            result["timing"]["reference_workload_s"] = reference_s
        code = 0
    except Exception as exc:  # any failure becomes a record, never a lost run
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
        code = 1
    result["environment"] = environment(job["packages"], job["threads"], job["device"])
    result["wall_s"] = time.time() - started
    atomic_write_json(Path(job["result_path"]), result)
    return code


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(job_path: Path) -> None:
    """In the forked child: own log, die with the server, run the job, never return."""
    code = 1
    try:
        _die_with_parent()
        job = json.loads(job_path.read_text())
        fd = os.open(job["log_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = run_file(job_path)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(adapter: str) -> int:
    """Import once, then fork a child per job path read from stdin."""
    _die_with_parent()  # with the orchestrator; if it is already gone, leave at once
    if os.environ.get("BENCH_PARENT_PID") not in (None, str(os.getppid())):
        return 1
    answer = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol channel
    os.dup2(2, 1)  # what libraries print goes to the server's log, not into the protocol
    import torch  # noqa: F401, PLC0415

    import adapters.training  # noqa: F401, PLC0415

    cls = _adapter_class(adapter)
    for module in cls.library_modules:
        importlib.import_module(module)
    print("ready", file=answer)
    for line in sys.stdin:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(Path(line.strip()))
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", file=answer)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[0] == "--serve":
        return serve(args[1])
    return run_file(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
