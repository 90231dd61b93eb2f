"""Plan a sweep into run specs and execute each in its family's environment.

Planning loads the dataset (light: numpy + ASE), fixes the split, and expands models ×
strategies × sizes × seeds into specs whose hash names the record. Execution skips runs
already ``ok`` (resume), writes ``skipped`` records for families without an adapter or
checkpoint, and runs every other spec as a worker subprocess; a crash, kill or timeout of
the worker becomes a ``failed`` record with the tail of its log, and the sweep goes on.

Example:
    >>> plan = make_plan(SweepConfig(models="chgnet"))
    >>> execute(plan, Store(Path("reports/default")).prepare())
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ase.io import write

from bench import PROJECT_ROOT, envs
from bench.config import SweepConfig
from bench.progress import Progress
from bench.provenance import now, provenance
from bench.registry import ModelInfo, Strategy, resolve_models, resolve_strategy
from bench.store import SCHEMA_VERSION, Store, atomic_write_json, run_id
from datasets import Dataset, load_dataset
from datasets.splits import plan_split, resolve_size


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    spec: dict
    model: ModelInfo
    strategy: Strategy
    train_idx: tuple[int, ...]
    val_idx: tuple[int, ...]

    @property
    def label(self) -> str:
        s = self.spec
        size = "" if s["strategy"] == "zero-shot" else f" n={s['train_size']} seed={s['seed']}"
        return f"{s['model']} {s['strategy']}{size}"


@dataclass
class Plan:
    config: SweepConfig
    dataset: Dataset
    runs: list[PlannedRun]


def make_plan(cfg: SweepConfig) -> Plan:
    models = resolve_models(cfg.models)
    dataset = load_dataset(cfg.dataset)
    leak = [a.info["leak_group"] for a in dataset.pool]
    runs = []
    for model in models:
        strategies = [resolve_strategy(name, model) for name in cfg.strategies]
        checkpoint = cfg.checkpoint_for(model.key, len(models)) or model.default_checkpoint
        base = {"schema_version": SCHEMA_VERSION, "model": model.key, "family": model.family,
                "checkpoint": checkpoint, "dataset": dataset.name, "dataset_sha256": dataset.sha256}
        for strategy in strategies:
            if strategy.freeze_k is None:
                spec = {**base, "strategy": strategy.name, "freeze_k": None, "e0_policy": "foundation",
                        "train_size": 0, "train_size_requested": 0, "seed": 0, "train_config": None}
                runs.append(PlannedRun(run_id(spec), spec, model, strategy, (), ()))
                continue
            for seed in cfg.seeds:
                split = plan_split(leak, seed=seed, val_fraction=cfg.val_fraction)
                for requested in cfg.sizes:
                    n = resolve_size(requested, len(split.order))
                    spec = {**base, "strategy": strategy.name, "freeze_k": strategy.freeze_k,
                            "e0_policy": cfg.e0_policy, "train_size": n,
                            "train_size_requested": requested,
                            "train_fraction": n / len(split.order), "seed": seed,
                            "val_fraction": cfg.val_fraction, "n_val": len(split.val),
                            "train_config": cfg.train_config()}
                    runs.append(PlannedRun(run_id(spec), spec, model, strategy,
                                           split.train(n), split.val))
    return Plan(cfg, dataset, runs)


def _write_frames(path: Path, frames) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """Workers get SIGKILL when the orchestrator dies, so no orphan keeps training."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _record(run: PlannedRun, status: str, reason: str | None, started: str, **fields) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run.run_id, "spec": run.spec,
            "status": status, "reason": reason,
            "provenance": {**provenance(), "started_at": started, "finished_at": now()}, **fields}


def run_worker(run: PlannedRun, python: Path, data: dict, store: Store, cfg: SweepConfig,
               progress: Progress) -> dict:
    """Run one spec in a worker process and turn whatever happens into a record."""
    started = now()
    attempt = f"{run.run_id}-{os.getpid()}-{time.time_ns()}"
    jobs = store.root / "jobs"
    result_path, progress_path = jobs / f"{attempt}.result.json", jobs / f"{attempt}.progress.jsonl"
    log_path = store.root / "logs" / f"{run.run_id}.log"
    threads = cfg.threads or os.cpu_count() or 1
    job = {**run.spec, "adapter": run.model.adapter, "packages": list(run.model.packages),
           "data": {**data, "train": list(run.train_idx), "val": list(run.val_idx)},
           "device": cfg.device, "threads": threads, "result_path": str(result_path),
           "progress_path": str(progress_path),
           "predictions_path": str(store.root / "predictions" / f"{run.run_id}.npz")}
    job_path = jobs / f"{attempt}.job.json"
    atomic_write_json(job_path, job)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(python), "-m", "adapters.worker", str(job_path)],
                                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        seen, deadline, timed_out = 0, time.monotonic() + cfg.run_timeout_s, False
        while proc.poll() is None:
            time.sleep(0.5)
            if progress_path.exists():
                lines = progress_path.read_text().splitlines()
                for line in lines[seen:]:
                    progress.epoch(json.loads(line))
                seen = len(lines)
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    artefacts = {"log": str(log_path.relative_to(store.root))}
    if result_path.exists():
        result = json.loads(result_path.read_text())
        status, reason = result.pop("status"), result.pop("reason")
        if status == "ok":
            artefacts["predictions"] = f"predictions/{run.run_id}.npz"
        record = _record(run, status, reason, started, artefacts=artefacts, **result)
    else:
        reason = (f"timed out after {cfg.run_timeout_s:.0f} s" if timed_out
                  else _describe_exit(proc.returncode))
        record = _record(run, "failed", reason, started, artefacts=artefacts,
                         log_tail=_tail(log_path))
    for path in (job_path, result_path, progress_path):
        path.unlink(missing_ok=True)
    return record


def _summary(record: dict) -> str:
    m = record.get("metrics") or {}
    if record["status"] != "ok":
        return (record.get("reason") or "").splitlines()[0][:160] if record.get("reason") else ""
    text = f"E {m['energy_rmse_mev_per_atom']:.1f} meV/atom, F {m['forces_rmse_mev_per_ang']:.1f} meV/Å"
    if m.get("stress_rmse_gpa") is not None:
        text += f", S {m['stress_rmse_gpa']:.2f} GPa"
    return text


def execute(plan: Plan, store: Store, *, log=print) -> dict[str, int]:
    """Run every planned spec not already ``ok``; returns counts by status."""
    ds = plan.dataset
    data_dir = store.root / "data" / f"{ds.name}-{ds.sha256[:12]}"
    data = {"pool": str(data_dir / "pool.xyz"), "test": str(data_dir / "test.xyz")}
    _write_frames(Path(data["pool"]), ds.pool)
    _write_frames(Path(data["test"]), ds.test)
    pythons: dict[str, Path | Exception] = {}
    known_skips: dict[tuple, str] = {}  # a missing checkpoint is tried once per sweep
    counts = {"reused": 0}
    progress = Progress(len(plan.runs))
    for run in plan.runs:
        progress.start(run.label)
        existing = store.get(run.run_id)
        if existing and existing["status"] == "ok":
            counts["reused"] += 1
            progress.finish("ok (stored)", _summary(existing))
            continue
        started = now()
        scopes = [(run.model.key, run.spec["checkpoint"], "model")]
        if not run.strategy.scratch:
            scopes.append((run.model.key, run.spec["checkpoint"], "checkpoint"))
        known = next((known_skips[s] for s in scopes if s in known_skips), None)
        if known:
            record = _record(run, "skipped", known, started)
        else:
            if run.model.env not in pythons:
                try:
                    pythons[run.model.env] = envs.ensure(run.model, log=log)
                except envs.EnvironmentBuildError as exc:
                    pythons[run.model.env] = exc
            python = pythons[run.model.env]
            if isinstance(python, Exception):
                record = _record(run, "failed", f"environment unavailable: {python}", started)
            else:
                record = run_worker(run, python, data, store, plan.config, progress)
                if record.get("skip_scope"):
                    known_skips[(run.model.key, run.spec["checkpoint"], record["skip_scope"])] = record["reason"]
        store.put(record)
        counts[record["status"]] = counts.get(record["status"], 0) + 1
        progress.finish(record["status"], _summary(record))
    return counts
