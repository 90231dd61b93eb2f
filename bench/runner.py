"""Plan a sweep into run specs and execute each in its family's environment.

Planning loads the datasets (light: numpy + ASE), fixes the splits, and expands models ×
strategies × sizes × seeds (+ one timing job per model) into specs whose hash names the
record. Execution skips runs already ``ok`` (resume) and hands the rest to the executor
(``bench.executors``); each run is claimed, runs in a worker forked from its family's fork
server, and stores its record: a crash, kill or timeout becomes a ``failed`` record with
the tail of its log, a missing checkpoint or uncovered element a ``skipped`` one, and the
sweep goes on.

Example:
    >>> plan = make_plan(SweepConfig.from_preset("quick", models="chgnet"))
    >>> execute(plan, Store(Path("reports/quick")).prepare())
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.io import write

from bench import envs
from bench.config import SweepConfig
from bench.executors import make_executor
from bench.progress import Progress
from bench.provenance import now, provenance
from bench.registry import ModelInfo, Strategy, get_model, resolve_models, resolve_strategy
from bench.store import SCHEMA_VERSION, Store, atomic_write_json, run_id
from bench.targets import SWEEP_LOG
from bench.workers import ForkServer, WorkerLost, WorkerSlot, WorkerTimeout, describe_exit, log_to_stderr
from datasets import Dataset, load_dataset
from datasets.registry import catalog
from datasets.splits import plan_split, resolve_size


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    spec: dict
    model: ModelInfo
    strategy: Strategy | None  # None for a model's timing job (spec kind "perf")
    train_idx: tuple[int, ...]
    val_idx: tuple[int, ...]
    replay_idx: tuple[int, ...] = ()  # structures of the replay dataset's pool mixed into training

    @property
    def label(self) -> str:
        return _label({"spec": self.spec})


@dataclass
class Plan:
    config: SweepConfig
    datasets: dict[str, Dataset]
    runs: list[PlannedRun]
    replay: Dataset | None = None  # the other domain for replay and forgetting

    def describe(self) -> str:
        return "; ".join(f"{name}: {len(d.pool)} pool / {len(d.test)} test structures"
                         for name, d in self.datasets.items())


def _strategy_fields(cfg: SweepConfig, strategy: Strategy, replay: Dataset | None) -> dict:
    """Spec fields a strategy adds (only where they apply, so other specs keep their hash)."""
    fields: dict = {}
    if replay is not None and not strategy.scratch:
        fields["forgetting"] = {"dataset": replay.name, "sha256": replay.sha256,
                                "n_structures": min(cfg.forgetting_size, len(replay.test))}
    if strategy.lora:
        fields["lora"] = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha}
    if strategy.soft:
        fields["lr_factors"] = dict(cfg.lr_factors)
    if strategy.replay:
        fields["replay"] = {"dataset": replay.name, "sha256": replay.sha256, "fraction": cfg.replay_fraction}
    return fields


def _surrogate_run(cfg: SweepConfig, model: ModelInfo, base: dict, splits: dict) -> PlannedRun:
    """The distillation job: teacher fine-tuned on the whole pool (first seed), a small
    student of the same family trained on the teacher's labels."""
    s = cfg.surrogate
    teacher = resolve_strategy(s["teacher_strategy"], model)
    seed = cfg.seeds[0]
    split = splits[seed]
    n = len(split.order)
    spec = {**base, "kind": "surrogate", "teacher_strategy": teacher.name, "freeze_k": teacher.freeze_k,
            "e0_policy": cfg.e0_policy, "train_size": n, "pool_size": n, "seed": seed, "n_val": len(split.val),
            "train_config": cfg.train_config(),
            "student": {"architecture": dict(s["student"]), "epochs": s["student_epochs"], "lr": s["student_lr"]},
            "rattle": {"copies": s["rattle_copies"], "stdev_ang": s["rattle_stdev_ang"], "strain": s["rattle_strain"]},
            "md": {"structures": s["md_structures"], "steps": s["md_steps"], "every": s["md_every"],
                   "temperature_k": s["md_temperature_k"]},
            "speed_structures": s["speed_structures"]}
    return PlannedRun(run_id(spec), spec, model, teacher, split.train(n), split.val)


def _dataset_runs(cfg: SweepConfig, models: list[ModelInfo], dataset: Dataset,
                  replay: Dataset | None) -> list[PlannedRun]:
    leak = [a.info["leak_group"] for a in dataset.pool]
    splits = {seed: plan_split(leak, seed=seed, val_fraction=cfg.val_fraction, val_size=cfg.val_size or None,
                               pool_size=cfg.pool_size or None) for seed in cfg.seeds}
    replay_order = {seed: tuple(int(i) for i in np.random.default_rng(seed).permutation(len(replay.pool)))
                    for seed in cfg.seeds} if replay is not None else {}
    runs: list[PlannedRun] = []
    for model in models:
        first = len(runs)
        strategies = [resolve_strategy(name, model) for name in cfg.strategies]
        checkpoint = cfg.checkpoint_for(model.key, len(models)) or model.default_checkpoint
        base = {"schema_version": SCHEMA_VERSION, "kind": "train", "model": model.key,
                "family": model.family, "checkpoint": checkpoint, "dataset": dataset.name,
                "dataset_sha256": dataset.sha256}
        for strategy in strategies:
            if strategy.freeze_k is None:
                spec = {**base, "strategy": strategy.name, "freeze_k": None, "e0_policy": "foundation",
                        "train_size": 0, "train_size_requested": 0, "seed": 0, "train_config": None}
                runs.append(PlannedRun(run_id(spec), spec, model, strategy, (), ()))
                continue
            extra = _strategy_fields(cfg, strategy, replay)
            train_config = cfg.train_config() | ({"lr_factors": dict(cfg.lr_factors)} if strategy.soft else {})
            seeds = cfg.seeds[: cfg.seeds_by_strategy.get(strategy.name, len(cfg.seeds))]
            for seed, split in splits.items():
                if seed not in seeds:
                    continue
                for requested in cfg.sizes_by_strategy.get(strategy.name, cfg.sizes):
                    n = resolve_size(requested, len(split.order))
                    spec = {**base, "strategy": strategy.name, "freeze_k": strategy.freeze_k,
                            "e0_policy": cfg.e0_policy, "train_size": n,
                            "train_size_requested": requested, "pool_size": len(split.order),
                            "train_fraction": n / len(split.order), "seed": seed,
                            "val_fraction": cfg.val_fraction, "val_size": cfg.val_size,
                            "n_val": len(split.val), "train_config": train_config, **extra}
                    n_replay = math.ceil(cfg.replay_fraction * n) if strategy.replay else 0
                    runs.append(PlannedRun(run_id(spec), spec, model, strategy, split.train(n), split.val,
                                           replay_order.get(seed, ())[:n_replay]))
        if cfg.surrogate and cfg.surrogate["model"] == model.key:
            runs.append(_surrogate_run(cfg, model, base, splits))
        if cfg.perf_structures:  # last: by then the background environment builds are done
            n = min(cfg.perf_structures, len(dataset.test))
            spec = {**base, "kind": "perf", "n_structures": n}
            runs.append(PlannedRun(run_id(spec), spec, model, None, (), ()))
        runs[first:] = sorted(runs[first:], key=_longest_first)
    return runs


def _longest_first(run: PlannedRun) -> tuple:
    """A model's runs, longest first (the surrogate job, then by training size) so parallel
    slots finish together; its timing job last, when background environment builds are done."""
    rank = {"surrogate": 0, "train": 1, "perf": 2}[run.spec["kind"]]
    return rank, -run.spec.get("train_size", 0)


def make_plan(cfg: SweepConfig) -> Plan:
    models = resolve_models(cfg.models)
    datasets = {}
    for name in cfg.datasets:
        dataset = load_dataset(name)
        datasets[dataset.name] = dataset
    replay = load_dataset(cfg.replay_dataset) if cfg.replay_dataset else None
    if cfg.surrogate:  # a misspelt teacher fails here; one outside --models just has no job
        get_model(cfg.surrogate["model"])
    runs = [run for d in datasets.values() for run in _dataset_runs(cfg, models, d, replay)]
    return Plan(cfg, datasets, runs, replay)


def _write_frames(path: Path, frames) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _record(run: PlannedRun, status: str, reason: str | None, started: str, **fields) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run.run_id, "spec": run.spec,
            "status": status, "reason": reason,
            "provenance": {**provenance(), "started_at": started, "finished_at": now()}, **fields}


def _job_data(run: PlannedRun, data: dict, cfg: SweepConfig) -> dict:
    """The data files, indices and property definitions a worker needs for one run."""
    files = {**data[run.spec["dataset"]], "train": list(run.train_idx), "val": list(run.val_idx)}
    other = (run.spec.get("replay") or run.spec.get("forgetting") or {}).get("dataset")
    if other:
        files["replay"] = {**data[other], "train": list(run.replay_idx)}
    properties = catalog().get(run.spec["dataset"], {}).get("properties")
    return {"data": files, "properties": properties if _wants_properties(run.spec, cfg) else None}


def _wants_properties(spec: dict, cfg: SweepConfig) -> bool:
    """``largest``: zero-shot and each strategy's largest training size only (CPU budgets)."""
    if cfg.properties == "none" or spec["kind"] != "train":
        return False
    if cfg.properties == "all" or spec["strategy"] == "zero-shot":
        return True
    sizes = cfg.sizes_by_strategy.get(spec["strategy"], cfg.sizes)
    return spec["train_size"] == max(resolve_size(s, spec["pool_size"]) for s in sizes)


def run_worker(run: PlannedRun, server: ForkServer, threads: int, data: dict, store: Store, cfg: SweepConfig,
               on_epoch=None) -> dict:
    """Run one spec in a forked worker and turn whatever happens into a record."""
    started = now()
    attempt = f"{run.run_id}-{os.getpid()}-{time.time_ns()}"
    jobs = store.root / "jobs"
    result_path, progress_path = jobs / f"{attempt}.result.json", jobs / f"{attempt}.progress.jsonl"
    log_path = store.root / "logs" / f"{run.run_id}.log"
    job = {**run.spec, "adapter": run.model.adapter, "packages": list(run.model.packages),
           **_job_data(run, data, cfg), "device": cfg.device, "threads": threads, "result_path": str(result_path),
           "progress_path": str(progress_path), "log_path": str(log_path),
           "predictions_path": str(store.root / "predictions" / f"{run.run_id}.npz")}
    job_path = jobs / f"{attempt}.job.json"
    atomic_write_json(job_path, job)
    seen = 0

    def tick() -> None:
        nonlocal seen
        if progress_path.exists():
            lines = progress_path.read_text().splitlines()
            if on_epoch:
                for line in lines[seen:]:
                    on_epoch(run.label, json.loads(line))
            seen = len(lines)

    failure = None
    try:
        server.submit(job_path)
        code = server.wait(cfg.run_timeout_s, tick)
        failure = None if code == 0 or result_path.exists() else describe_exit(code)
    except (WorkerTimeout, WorkerLost, BrokenPipeError) as exc:
        failure = str(exc)
    artefacts = {"log": str(log_path.relative_to(store.root))}
    if failure is None and result_path.exists():
        result = json.loads(result_path.read_text())
        status, reason = result.pop("status"), result.pop("reason")
        if status == "ok" and run.spec["kind"] == "train":
            artefacts["predictions"] = f"predictions/{run.run_id}.npz"
        record = _record(run, status, reason, started, artefacts=artefacts, **result)
    else:
        record = _record(run, "failed", failure, started, artefacts=artefacts, log_tail=_tail(log_path))
    for path in (job_path, result_path, progress_path):
        path.unlink(missing_ok=True)
    return record


def _summary(record: dict) -> str:
    m = record.get("metrics") or {}
    if record["status"] != "ok":
        return (record.get("reason") or "").splitlines()[0][:160] if record.get("reason") else ""
    if record["spec"]["kind"] == "perf":
        t = record["timing"]
        return (f"batched predict {t['speedup_vs_ase_calculator']:.1f}x the ASE calculator, "
                f"{t['inference_atoms_per_s']:.0f} atoms/s")
    if record["spec"]["kind"] == "surrogate":
        speed = record["surrogate"]["speed"]
        return (f"student F {m['forces_rmse_mev_per_ang']:.1f} meV/Å, "
                f"{speed['speedup_vs_teacher']:.1f}x the teacher's speed")
    text = f"E {m['energy_rmse_mev_per_atom']:.1f} meV/atom, F {m['forces_rmse_mev_per_ang']:.1f} meV/Å"
    if m.get("stress_rmse_gpa") is not None:
        text += f", S {m['stress_rmse_gpa']:.2f} GPa"
    return text


def _data_files(dataset: Dataset, store: Store) -> dict[str, str]:
    data_dir = store.root / "data" / f"{dataset.name}-{dataset.sha256[:12]}"
    data = {"pool": str(data_dir / "pool.xyz"), "test": str(data_dir / "test.xyz")}
    _write_frames(Path(data["pool"]), dataset.pool)
    _write_frames(Path(data["test"]), dataset.test)
    return data


@contextlib.contextmanager
def _claim(store: Store, rid: str):
    """An exclusive lock on one run, so concurrent sweeps on one results directory never
    run it twice; the kernel drops it when its holder dies (kill -9 included)."""
    path = store.root / "locks" / f"{rid}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _skip_scopes(run: PlannedRun) -> list[tuple]:
    scopes = [(run.model.key, run.spec["checkpoint"], "model")]
    if run.strategy is not None and not run.strategy.scratch:
        scopes.append((run.model.key, run.spec["checkpoint"], "checkpoint"))
    return scopes


def run_planned(run: PlannedRun, slot: WorkerSlot, *, data: dict, store: Store, cfg: SweepConfig,
                known_skips: dict, on_epoch=None) -> dict | None:
    """Claim, run and store one planned run (in any executor, local or remote); returns its
    record, or None when another process holds it."""
    with _claim(store, run.run_id) as mine:
        if not mine:
            return None
        existing = store.get(run.run_id)
        if existing and existing["status"] == "ok":  # finished meanwhile by another sweep
            return {**existing, "_reused": True}
        started = now()
        known = next((known_skips[s] for s in _skip_scopes(run) if s in known_skips), None)
        server = None if known else slot.server(run.model)
        if known:
            record = _record(run, "skipped", known, started)
        elif isinstance(server, Exception):
            record = _record(run, "failed", f"environment unavailable: {server}", started)
        else:
            record = run_worker(run, server, slot.threads, data, store, cfg, on_epoch)
            if record.get("skip_scope"):
                known_skips[(run.model.key, run.spec["checkpoint"], record["skip_scope"])] = record["reason"]
        store.put(record)
        return record


def execute(plan: Plan, store: Store) -> dict[str, float]:
    """Run every planned spec not already ``ok`` with the configured executor; returns counts
    by status (+ ``reused``, ``env_setup_s``) and appends the sweep to ``sweeps.jsonl``."""
    t_start, sweep_started = time.perf_counter(), now()
    datasets = {**plan.datasets, **({plan.replay.name: plan.replay} if plan.replay else {})}
    data = {name: _data_files(ds, store) for name, ds in datasets.items()}
    counts: dict[str, float] = {"reused": 0}
    progress = Progress(len(plan.runs))
    pending = []
    for run in plan.runs:
        existing = store.get(run.run_id)
        if existing and existing["status"] == "ok":
            counts["reused"] += 1
            progress.finish(run.label, "ok (stored)", _summary(existing))
        else:
            pending.append(run)
    executor = make_executor(plan.config, store.root)
    if plan.config.executor in ("local", "pool"):
        _prepare_environments([run.model for run in pending[1:]])
    job = functools.partial(run_planned, data=data, store=store, cfg=plan.config, known_skips={},
                            on_epoch=progress.epoch if executor.live_progress else None)
    if executor.live_progress:
        job = _announcing(job, progress)
    for record in executor.run(pending, job):
        if record is None:
            counts["running elsewhere"] = counts.get("running elsewhere", 0) + 1
            continue
        if "_lost_run" in record:  # a remote job died before it could store a record
            run = record.pop("_lost_run")
            record = _record(run, "failed", record["reason"], now(), log_tail=record["log_tail"])
            store.put(record)
        status = "reused" if record.pop("_reused", False) else record["status"]
        counts[status] = counts.get(status, 0) + 1
        progress.finish(_label(record), status, _summary(record))
    env_setup_s = sum(slot.env_setup_s for slot in executor.slots)
    counts["env_setup_s"] = round(env_setup_s, 1)
    entry = {"preset": plan.config.preset, "executor": plan.config.executor, "workers": len(executor.slots),
             "started_at": sweep_started, "wall_s": time.perf_counter() - t_start, "n_runs": len(plan.runs),
             "counts": counts, "env_build_s": env_setup_s, **provenance()}
    with (store.root / SWEEP_LOG).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
    return counts


def _prepare_environments(models: list[ModelInfo]) -> None:
    """Check (or build) the environments later runs need, one at a time in the background,
    while the first family runs: building is mostly pip I/O. ``envs.ensure`` holds a lock
    per environment, so a slot that needs one meanwhile waits for it; a failure is left to
    that slot, which records it."""
    order = list(dict.fromkeys(m.env for m in models))
    by_env = {m.env: m for m in models}

    def build() -> None:
        for env in order:
            try:
                envs.ensure(by_env[env], log=log_to_stderr)
            except envs.EnvironmentBuildError:
                continue

    threading.Thread(target=build, daemon=True).start()


def _announcing(job, progress: Progress):
    """Sequential runs: show each run as it starts (parallel ones show when they finish)."""
    def announced(run: PlannedRun, slot: WorkerSlot):
        progress.start(run.label)
        return job(run, slot)
    return announced


def _label(record: dict) -> str:
    s = record["spec"]
    if s["kind"] == "perf":
        return f"{s['model']} timing ({s['n_structures']} structures)"
    if s["kind"] == "surrogate":
        return f"{s['model']} surrogate ({s['teacher_strategy']} teacher n={s['train_size']} -> small student)"
    size = "" if s["strategy"] == "zero-shot" else f" n={s['train_size']} seed={s['seed']}"
    return f"{s['model']} {s['strategy']}{size}"
