"""Execute a planned sweep: each run in its family's environment, each outcome a record.

Execution hands the runs to the executor (``bench.executors``). Each run is claimed,
placed (its runtime resolved in the slot that runs it: device kind and key package
versions, see ``bench.core.contract``), skipped when an ``ok`` record of the same spec on
the same runtime is stored (resume; a run that must save its model and has none saved runs
again), else run in a worker forked from its family's fork server; it stores its record
itself, pointing at the model the worker saved where it was asked to. A crash, kill or
timeout becomes a ``failed`` record with the tail of its log, a missing checkpoint or
uncovered element a ``skipped`` one, and the sweep goes on.

Example:
    >>> plan = make_plan(SweepConfig.from_preset("quick", models="chgnet"))
    >>> execute(plan, Store(Path("reports/quick")).prepare())
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ase.io import write

from bench import envs
from bench.config import SweepConfig
from bench.core.contract import (
    UNKNOWN_DEVICE,
    Artefacts,
    DataFiles,
    DerivedRun,
    Job,
    JobPaths,
    ModelArtefact,
    Parameters,
    Provenance,
    Record,
    Result,
    Runtime,
    TrainSpec,
    run_id,
)
from bench.executors import Lost, make_executor
from bench.plan import Plan, PlannedRun
from bench.planned import write_planned
from bench.progress import Progress
from bench.provenance import now, provenance
from bench.registry import ModelInfo
from bench.saved import saved_model
from bench.store import Store
from bench.targets import SWEEP_LOG
from bench.workers import (
    ForkServer,
    FreshProcesses,
    Placement,
    WorkerLost,
    WorkerSlot,
    WorkerTimeout,
    describe_exit,
    log_to_stderr,
)
from datasets import Dataset
from datasets.registry import catalog
from datasets.splits import resolve_size


@dataclass(frozen=True)
class Outcome:
    """What became of one planned run: its record (None: another process holds the run),
    the records of the runs derived from it, and whether they were reused from the store."""

    record: Record | None
    reused: bool = False
    derived: tuple[Record, ...] = ()


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


def _provenance(started: str) -> Provenance:
    return Provenance.from_dict({**provenance(), "started_at": started, "finished_at": now()})


def _verdict(run: PlannedRun, runtime: Runtime, status: str, reason: str, started: str, **fields) -> Record:
    """A record the orchestrator writes for a run no worker finished (failed or skipped)."""
    return Record(status=status, reason=reason, spec=run.spec, runtime=runtime, run_id=run_id(run.spec, runtime),
                  provenance=_provenance(started), **fields)


def _other_data(run: PlannedRun, data: dict[str, dict]) -> DataFiles | None:
    spec = run.spec
    other = getattr(spec, "replay", None) or getattr(spec, "forgetting", None)
    return DataFiles(**data[other.dataset], train=run.replay_idx) if other else None


def _wants_properties(spec, cfg: SweepConfig) -> bool:
    """``largest``: the untrained model and each strategy's largest training size only (CPU budgets)."""
    if cfg.properties == "none" or not isinstance(spec, TrainSpec):
        return False
    if cfg.properties == "all" or not spec.trains:
        return True
    sizes = cfg.sizes_by_strategy.get(spec.strategy, cfg.sizes)
    return spec.train_size == max(resolve_size(s, spec.pool_size) for s in sizes)


def _job(run: PlannedRun, placement: Placement, threads: int, data: dict, store: Store, cfg: SweepConfig,
         attempt: str) -> Job:
    rid = run_id(run.spec, placement.runtime)
    jobs = store.root / "jobs"
    properties = catalog().get(run.spec.dataset, {}).get("properties")
    return Job(spec=run.spec, run_id=rid, runtime=placement.runtime, adapter=run.model.adapter,
               packages=envs.key_packages(run.model), data=DataFiles(**data[run.spec.dataset], train=run.train_idx,
                                                                     val=run.val_idx),
               other=_other_data(run, data), properties=properties if _wants_properties(run.spec, cfg) else None,
               device=placement.device, threads=threads,
               derived=tuple(DerivedRun(spec=d.spec, run_id=run_id(d.spec, placement.runtime), train=d.train_idx)
                             for d in run.derived),
               save_model_to=str(store.root / "models" / rid) if run.save_model else None,
               model_file=str(run.model_file) if run.model_file else None,
               paths=JobPaths(result=str(jobs / f"{attempt}.result.json"),
                              progress=str(jobs / f"{attempt}.progress.jsonl"),
                              log=str(store.root / "logs" / f"{rid}.log"),
                              predictions=str(store.root / "predictions" / f"{rid}.npz")))


def run_worker(run: PlannedRun, placement: Placement, server: ForkServer | FreshProcesses, threads: int, data: dict,
               store: Store, cfg: SweepConfig, on_epoch=None) -> tuple[Record, Result | None]:
    """Run one spec in a worker process and turn whatever happens into a record; also returns
    the worker's result, if it wrote one."""
    started = now()
    attempt = f"{run_id(run.spec, placement.runtime)}-{os.getpid()}-{time.time_ns()}"
    job = _job(run, placement, threads, data, store, cfg, attempt)
    job_path = store.root / "jobs" / f"{attempt}.job.json"
    job.write(job_path)
    result_path, progress_path, log_path = (Path(p) for p in (job.paths.result, job.paths.progress, job.paths.log))
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
        server.submit(job_path, log_path)
        code = server.wait(cfg.run_timeout_s, tick)
        failure = None if code == 0 or result_path.exists() else describe_exit(code)
    except (WorkerTimeout, WorkerLost, BrokenPipeError) as exc:
        failure = str(exc)
    log = str(log_path.relative_to(store.root))
    if failure is None and result_path.exists():
        result = Result.read(result_path)
        trained = result.ok and isinstance(run.spec, TrainSpec)
        artefacts = Artefacts(log=log, predictions=f"predictions/{job.run_id}.npz" if trained else None,
                              model=_model_artefact(result.model, store.root))
        record = Record.of(result, spec=run.spec, runtime=placement.runtime, rid=job.run_id,
                           provenance=_provenance(started), artefacts=artefacts)
    else:
        result = None
        record = _verdict(run, placement.runtime, "failed", failure, started, artefacts=Artefacts(log=log),
                          log_tail=_tail(log_path))
    for path in (job_path, result_path, progress_path):
        path.unlink(missing_ok=True)
    return record, result


def _model_artefact(model: ModelArtefact | None, root: Path) -> ModelArtefact | None:
    """The worker's saved model with its path relative to the results directory."""
    if model is None or model.path is None:
        return model
    return dataclasses.replace(model, path=str(Path(model.path).relative_to(root)))


def _derived_records(run: PlannedRun, record: Record, result: Result | None) -> tuple[Record, ...]:
    """The records of the runs derived from ``run``: what its worker computed for them, or
    its own status and reason where it computed nothing."""
    out = []
    for d in run.derived:
        rid = run_id(d.spec, record.runtime)
        found = (result.derived or {}).get(rid) if result is not None and result.ok else None
        common = {"spec": d.spec, "runtime": record.runtime, "run_id": rid, "provenance": record.provenance}
        if found is not None:
            total = record.parameters.total if record.parameters else 0
            out.append(Record(status="ok", metrics=found.metrics, reference_energies_ev=found.reference_energies_ev,
                              parameters=Parameters(trainable=0, total=total), environment=record.environment,
                              **common))
        else:
            out.append(Record(status="failed" if record.ok else record.status,
                              reason=record.reason or f"{record.spec.label} computed no E0 refit for it", **common))
    return tuple(out)


def _summary(record: Record) -> str:
    if not record.ok:
        return record.reason.splitlines()[0][:160] if record.reason else ""
    m, t = record.metrics, record.timing
    if record.spec.kind == "perf":
        return (f"batched predict {t.speedup_vs_ase_calculator:.1f}x the ASE calculator, "
                f"{t.inference_atoms_per_s:.0f} atoms/s")
    if record.spec.kind == "md":
        runs = (record.md or {}).get("runs", {})
        return "; ".join(f"{t} K {r['verdict']}" for t, r in runs.items())[:200]
    if record.spec.kind == "surrogate":
        return (f"student F {m.forces_rmse_mev_per_ang:.1f} meV/Å, "
                f"{record.surrogate['speed']['speedup_vs_teacher']:.1f}x the teacher's speed")
    text = f"E {m.energy_rmse_mev_per_atom:.1f} meV/atom, F {m.forces_rmse_mev_per_ang:.1f} meV/Å"
    if m.stress_rmse_gpa is not None:
        text += f", S {m.stress_rmse_gpa:.2f} GPa"
    return text


def _data_files(dataset: Dataset, store: Store) -> dict[str, str]:
    data_dir = store.root / "data" / f"{dataset.name}-{dataset.variant}"  # other keys or test set: other files
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
    """Which earlier skips apply: the model's elements always, its checkpoint where the run
    needs the foundation's weights."""
    scopes = [(run.model.key, run.spec.checkpoint, "model")]
    if run.spec.needs_foundation:
        scopes.append((run.model.key, run.spec.checkpoint, "checkpoint"))
    return scopes


def run_planned(run: PlannedRun, slot: WorkerSlot, *, data: dict, store: Store, cfg: SweepConfig,
                known_skips: dict, on_epoch=None) -> Outcome:
    """Place, claim, run and store one planned run (in any executor, local or remote)."""
    started = now()
    placement = slot.placement(run.model, cfg.device)
    if isinstance(placement, Exception):
        runtime = Runtime(device=UNKNOWN_DEVICE)
        record = _verdict(run, runtime, "failed", f"environment unavailable: {placement}", started)
        with _claim(store, record.run_id) as mine:
            if not mine:
                return Outcome(None)
            derived = _derived_records(run, record, None)
            for rec in (record, *derived):
                store.put(rec)
        return Outcome(record, derived=derived)
    with _claim(store, run_id(run.spec, placement.runtime)) as mine:
        if not mine:
            return Outcome(None)
        existing = [store.find(r.spec, placement.runtime) for r in (run, *run.derived)]
        if all(r is not None and r.ok for r in existing) and (  # stored earlier, or meanwhile by another sweep
                not run.require_model or saved_model(existing[0], store.root) is not None):
            return Outcome(existing[0], reused=True, derived=tuple(existing[1:]))
        known = next((known_skips[s] for s in _skip_scopes(run) if s in known_skips), None)
        result = None
        if known:
            record = _verdict(run, placement.runtime, "skipped", known, started)
        elif placement.problem:
            record = _verdict(run, placement.runtime, "failed", placement.problem, started)
        else:
            record, result = run_worker(run, placement, slot.server(run.model, placement), slot.threads, data, store,
                                        cfg, on_epoch)
            if result is not None and result.skip_scope:
                known_skips[(run.model.key, run.spec.checkpoint, result.skip_scope)] = record.reason
        derived = _derived_records(run, record, result)
        for rec in (record, *derived):
            store.put(rec)
        return Outcome(record, derived=derived)


def execute(plan: Plan, store: Store, *, follow_up: bool = False) -> dict[str, float]:
    """Run every planned spec not already ``ok`` with the configured executor; returns counts
    by status (+ ``reused``, ``env_setup_s``) and appends the sweep to ``sweeps.jsonl``.
    ``follow_up``: more runs of the sweep just executed (``planned.json`` gains them)."""
    t_start, sweep_started = time.perf_counter(), now()
    write_planned(store.root, plan, sweep_started, add=follow_up)
    datasets = {**plan.datasets, **({plan.other.name: plan.other} if plan.other else {})}
    data = {name: _data_files(ds, store) for name, ds in datasets.items()}
    counts: dict[str, float] = {"reused": 0}
    progress = Progress(len(plan.runs))
    executor = make_executor(plan.config, store.root)
    if plan.config.executor in ("local", "pool"):
        _prepare_environments([run.model for run in plan.runs[1:]], plan.config.python)
    job = functools.partial(run_planned, data=data, store=store, cfg=plan.config, known_skips={},
                            on_epoch=progress.epoch if executor.live_progress else None)
    if executor.live_progress:
        job = _announcing(job, progress)
    for outcome in executor.run(plan.runs, job):
        if isinstance(outcome, Lost):  # a remote job died before it could store a record
            record = _verdict(outcome.run, Runtime(device=UNKNOWN_DEVICE), "failed", outcome.reason, now(),
                              log_tail=outcome.log_tail)
            derived = _derived_records(outcome.run, record, None)
            for rec in (record, *derived):
                store.put(rec)
            outcome = Outcome(record, derived=derived)
        if outcome.record is None:
            counts["running elsewhere"] = counts.get("running elsewhere", 0) + 1
            continue
        record = outcome.record
        for rec in (record, *outcome.derived):
            status = "reused" if outcome.reused else rec.status
            counts[status] = counts.get(status, 0) + 1
        progress.finish(record.spec.label, "ok (stored)" if outcome.reused else record.status, _summary(record))
    env_setup_s = sum(slot.env_setup_s for slot in executor.slots)
    counts["env_setup_s"] = round(env_setup_s, 1)
    entry = {"preset": plan.config.preset, "executor": plan.config.executor, "workers": len(executor.slots),
             "started_at": sweep_started, "wall_s": time.perf_counter() - t_start, "n_runs": len(plan.runs),
             "counts": counts, "env_build_s": env_setup_s, **provenance()}
    with (store.root / SWEEP_LOG).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
    return counts


def _prepare_environments(models: list[ModelInfo], pythons: dict[str, str]) -> None:
    """Check (or build) the environments later runs need, one at a time in the background,
    while the first family runs: building is mostly pip I/O. ``envs.ensure`` holds a lock
    per environment, so a slot that needs one meanwhile waits for it; a failure is left to
    that slot, which records it."""
    order = list(dict.fromkeys(m.env for m in models))
    by_env = {m.env: m for m in models}

    def build() -> None:
        for env in order:
            try:
                envs.ensure(by_env[env], log=log_to_stderr, python=pythons.get(env))
            except envs.EnvironmentBuildError:
                continue

    threading.Thread(target=build, daemon=True).start()


def _announcing(job, progress: Progress):
    """Sequential runs: show each run as it starts (parallel ones show when they finish)."""
    def announced(run: PlannedRun, slot: WorkerSlot) -> Outcome:
        progress.start(run.label)
        return job(run, slot)
    return announced
