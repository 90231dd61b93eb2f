"""Worker process plumbing inside a family's environment (the recipes: ``adapters.jobs``).

    <family-env>/bin/python -m adapters.worker job.json          # one job, in a fresh process (GPU runs)
    <family-env>/bin/python -m adapters.worker --serve MODULE    # a fork server (CPU runs)

A job file (``bench.core.contract.Job``, written by ``bench.runner``) names the spec, the
data files and the output paths; the worker runs the recipe of the spec's kind and writes
one ``Result`` (atomically), and the recipe appends one JSON line per epoch to the progress
file. Expected outcomes (checkpoint missing, elements not covered) become ``skipped``
results; any exception, wherever it happens (describing the environment included), is
written as ``failed`` with its traceback: a readable job never ends without a result.

The fork server imports torch and the family's library once (seconds per run saved), then
reads job and log paths from stdin, one job per line, runs each in a forked child (so a crash, leak or
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
import signal
import sys
import time
import traceback
from pathlib import Path

from bench.core.contract import COMMON_PACKAGES, Job, Result


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def environment(packages: tuple[str, ...], threads: int, device: str) -> dict:
    """Where this worker ran: package versions, threads, device, CPU, dtype, CUDA and GPU.
    Never raises: what cannot be found out is recorded as such."""
    versions = {}
    for pkg in dict.fromkeys([*packages, *COMMON_PACKAGES]):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    env = {"packages": versions, "python": platform.python_version(), "executable": sys.executable,
           "threads": threads, "device": device, "cpu": _cpu_name()}
    try:
        import torch

        env |= {"dtype": str(torch.get_default_dtype()).removeprefix("torch."), "cuda": torch.version.cuda}
        if device.startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except Exception as exc:  # e.g. the CUDA driver fails: keep the rest of the description
        env["error"] = f"{type(exc).__name__}: {exc}"
    return env


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA device is visible to this worker")
    return device


def run_job(job: Job) -> tuple[Result, int]:
    """Run the job's recipe; every outcome, an exception included, becomes a Result."""
    from adapters.jobs import recipe
    from adapters.jobs.common import Skipped

    progress_path = Path(job.paths.progress)

    def progress(row: dict) -> None:
        with progress_path.open("a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    try:
        import torch

        from adapters.perf import reference_workload_s

        torch.set_num_threads(job.threads)
        torch.set_default_dtype(torch.float32)
        resolve_device(job.device)
        reference_s = reference_workload_s()
        result = recipe(job.spec.kind)(job, progress)
        if result.timing is not None:
            result = dataclasses.replace(result, timing=dataclasses.replace(result.timing,
                                                                            reference_workload_s=reference_s))
        return result, 0
    except Skipped as exc:
        return Result(status="skipped", reason=exc.reason, skip_scope=exc.scope), 0
    except Exception as exc:  # any failure becomes a record, never a lost run
        return Result(status="failed", reason=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc()[-4000:]), 1


def run_file(job_path: Path) -> int:
    """Run one job file; the result file gets written whatever happens once the job is read."""
    started = time.time()
    job = Job.read(job_path)
    try:
        result, code = run_job(job)
        fields = result.to_dict()
    except Exception as exc:  # a result that does not fit the contract is itself a failure
        fields = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
        code = 1
    fields |= {"environment": environment(job.packages, job.threads, job.device), "wall_s": time.time() - started}
    Result.from_dict(fields).write(Path(job.paths.result))
    return code


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(job_path: Path, log_path: Path) -> None:
    """In the forked child: own log, die with the server, run the job, never return. What
    escapes ``run_file`` (an unreadable job file) is printed to the run's log first."""
    code = 1
    try:
        _die_with_parent()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = run_file(job_path)
    except BaseException:
        traceback.print_exc()
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
    import torch  # noqa: F401 - imported once, before the forks

    import adapters.jobs.train  # noqa: F401 - the recipes and the training loop
    from adapters.jobs.common import adapter_class

    for module in adapter_class(adapter).library_modules:
        importlib.import_module(module)
    print("ready", file=answer)
    for line in sys.stdin:  # "<job file>\t<log file>"
        sys.stdout.flush()
        sys.stderr.flush()
        job_path, log_path = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            _child(Path(job_path), Path(log_path))
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", file=answer)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[0] == "--serve":
        return serve(args[1])
    if os.environ.get("BENCH_PARENT_PID"):  # a fresh process per job: it dies with the orchestrator
        _die_with_parent()
    return run_file(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
