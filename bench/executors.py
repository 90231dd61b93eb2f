"""Executors: how the runs a sweep still needs get carried out.

* ``local`` (default): one after another, in one worker slot with all the cores.
* ``pool``: ``--workers N`` slots on this machine, each with its own fork servers and
  cores/N torch threads (so they do not oversubscribe the CPU) and, when several GPUs are
  visible (``nvidia-smi -L``), one GPU each (``CUDA_VISIBLE_DEVICES``).
* ``slurm``: one submitit job per run, submitted as a Slurm job array (partition, time,
  GPUs, CPUs from ``--slurm-*`` or the preset's ``[sweep.slurm]``; logs per job under
  ``<out>/submitit``). ``submitit-local`` runs the same jobs as local processes through
  submitit's LocalExecutor: that is how CI tests this path.

Every executor calls ``job(run, slot) -> outcome``; the job claims the run, runs it and
stores its record itself (one file per record, atomic), so records never depend on the
orchestrator surviving. To add an engine (Ray, Dask, ...): write a class with ``slots``
and ``run(runs, job)`` yielding each job's outcome as it finishes (or a :class:`Lost` for
a remote job that died before storing anything), where each remote task
calls ``in_fresh_slot(job, run, store_root, threads)``, and register it in ``EXECUTORS``.

Example:
    >>> executor = make_executor(cfg, store_root)
    >>> for record in executor.run(pending, job): ...
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.envs import visible_gpus
from bench.workers import WorkerSlot

EXECUTORS = ("local", "pool", "slurm", "submitit-local")
SLURM_KEYS = {"partition": "slurm_partition", "time_min": "timeout_min", "gpus_per_node": "gpus_per_node",
              "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "array_parallelism": "slurm_array_parallelism",
              "account": "slurm_account", "qos": "slurm_qos", "constraint": "slurm_constraint"}


def in_fresh_slot(job: Callable, run, store_root: Path, threads: int, options: dict | None = None):
    """Run one job in a slot of its own (remote engines: one job per process)."""
    slot = WorkerSlot(store_root, threads, **(options or {}))
    try:
        return job(run, slot)
    finally:
        slot.close()


@dataclass(frozen=True)
class Lost:
    """A run whose remote job died before it could store a record (the caller records it)."""

    run: object
    reason: str
    log_tail: str


class Local:
    live_progress = True

    def __init__(self, store_root: Path, threads: int, **options):
        self.slots = [WorkerSlot(store_root, threads, **options)]

    def run(self, runs: list, job: Callable) -> Iterator:
        try:
            for run in runs:
                yield job(run, self.slots[0])
        finally:
            self.slots[0].close()


_FINISHED = object()  # a pool worker has no more runs


class Pool:
    live_progress = False  # interleaved epochs of parallel runs would be unreadable

    def __init__(self, store_root: Path, threads: int, workers: int, gpus: int, **options):
        if workers < 1:
            raise ValueError(f"--workers {workers} must be >= 1")
        per = max(1, threads // workers)
        self.slots = [WorkerSlot(store_root, per, {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else None, **options)
                      for i in range(workers)]

    def run(self, runs: list, job: Callable) -> Iterator:
        todo: queue.Queue = queue.Queue()
        for run in runs:
            todo.put(run)
        done: queue.Queue = queue.Queue()

        def worker(slot: WorkerSlot) -> None:
            try:
                while True:
                    try:
                        run = todo.get_nowait()
                    except queue.Empty:
                        return
                    done.put(job(run, slot))
            finally:
                slot.close()
                done.put(_FINISHED)

        threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in self.slots]
        for t in threads:
            t.start()
        finished = 0
        while finished < len(threads):
            outcome = done.get()
            if outcome is _FINISHED:
                finished += 1
            else:
                yield outcome


class Submitit:
    live_progress = False

    def __init__(self, store_root: Path, threads: int, cluster: str, slurm: dict, parallel: int, **options):
        import submitit  # only this executor needs it

        unknown = sorted(set(slurm) - set(SLURM_KEYS))
        if unknown:
            raise ValueError(f"unknown slurm setting(s) {unknown}; known: {sorted(SLURM_KEYS)}")
        self.cluster, self.parallel = cluster, max(1, parallel)
        self.store_root = Path(store_root)
        local_share = max(1, threads // self.parallel)  # local jobs share this machine's cores
        self.threads = int(slurm.get("cpus_per_task", local_share if cluster == "local" else threads))
        self.executor = submitit.AutoExecutor(folder=self.store_root / "submitit", cluster=cluster)
        params = {SLURM_KEYS[k]: v for k, v in slurm.items()}
        params.setdefault("timeout_min", 24 * 60)
        if cluster == "local":  # the local executor takes only the generic parameters
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        self.executor.update_parameters(**params)
        self.slots, self.options = [], options

    def _submit(self, job: Callable, run):
        return self.executor.submit(in_fresh_slot, job, run, self.store_root, self.threads, self.options)

    def _result(self, submitted, run):
        try:
            return submitted.result()
        except Exception as exc:  # the job died (killed, OOM, node failure): keep a record
            return Lost(run, f"submitit job {submitted.job_id} failed: {str(exc).strip().splitlines()[-1][:300]}",
                        (submitted.stderr() or "")[-3000:])

    def run(self, runs: list, job: Callable) -> Iterator:
        import submitit

        if self.cluster != "local":  # one job array; Slurm's array parallelism throttles it
            with self.executor.batch():
                jobs = [self._submit(job, run) for run in runs]
            by_id = {j.job_id: run for j, run in zip(jobs, runs, strict=True)}
            for j in submitit.helpers.as_completed(jobs, poll_frequency=30):
                yield self._result(j, by_id[j.job_id])
            return
        pending, active = list(runs), []  # local processes: at most `parallel` at a time
        while pending or active:
            while pending and len(active) < self.parallel:
                run = pending.pop(0)
                active.append((self._submit(job, run), run))
            finished = [(j, r) for j, r in active if j.done()]
            if not finished:
                time.sleep(0.5)
                continue
            active = [pair for pair in active if pair not in finished]
            for submitted, run in finished:
                yield self._result(submitted, run)


def make_executor(cfg, store_root: Path) -> Local | Pool | Submitit:
    threads = cfg.threads or os.cpu_count() or 1
    options = {"isolation": cfg.isolation, "pythons": dict(cfg.python)}
    if cfg.executor == "local":
        return Local(store_root, threads, **options)
    if cfg.executor == "pool":
        return Pool(store_root, threads, cfg.workers, visible_gpus() if cfg.device != "cpu" else 0, **options)
    try:  # slurm or submitit-local (SweepConfig checked the name)
        return Submitit(store_root, threads, "slurm" if cfg.executor == "slurm" else "local",
                        dict(cfg.slurm), cfg.workers, **options)
    except (ImportError, RuntimeError) as exc:
        raise ValueError(f"--executor {cfg.executor}: {exc} (submitit is installed with "
                         "`pip install -e .[slurm]`; `--executor submitit-local` runs the same jobs "
                         "as local processes)") from exc
