"""Worker processes: per family environment a fork server that runs jobs one by one, and
the worker slot (one per parallel worker) that owns a set of them.

The server (``adapters.worker --serve``) imports torch and the family's library once and
forks a child per job, so a sweep pays the imports once per family instead of once per
run, while every run still gets its own process. The server and its children form one
process group: a timeout kills the group (the next job starts a fresh server), and they
all die with the orchestrator (the server sets PR_SET_PDEATHSIG itself, see
``adapters.worker.serve``), so no orphan keeps training.

Example:
    >>> server = ForkServer(python, "adapters.chgnet_adapter:CHGNetAdapter", log_path, env)
    >>> server.submit(job_path, log_path); code = server.wait(timeout_s=3600, tick=lambda: None)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import PROJECT_ROOT, envs
from bench.core.contract import Runtime
from bench.registry import ModelInfo


def describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"


def _pythonpath() -> str:
    """The project first (an interpreter given with --python has no ftbench installed), then
    whatever the caller's environment adds (e.g. a wrapper's own package directories)."""
    return os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))


class WorkerTimeout(RuntimeError):
    """The job ran past its time limit; the server's process group was killed."""


class WorkerLost(RuntimeError):
    """The server itself died (killed, or its environment cannot import the library)."""


class ForkServer:
    def __init__(self, python: Path, adapter: str, log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [str(python), "-m", "adapters.worker", "--serve", adapter], cwd=PROJECT_ROOT, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                start_new_session=True)  # no preexec_fn: pool slots start servers from threads

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, job_path: Path, log_path: Path) -> None:
        self.proc.stdin.write(f"{job_path}\t{log_path}\n")
        self.proc.stdin.flush()

    def wait(self, timeout_s: float, tick) -> int:
        """The job's exit code; calls ``tick()`` every half second while it runs."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("exit "):
                    return int(line.split()[1])
                if not line:
                    self.proc.wait()
                    tail = self.log_path.read_text(errors="replace")[-1500:]
                    raise WorkerLost(f"{describe_exit(self.proc.returncode)} (fork server); log tail:\n{tail}")
                continue  # "ready"
            tick()
            if time.monotonic() > deadline:
                self.kill()
                raise WorkerTimeout(f"timed out after {timeout_s:.0f} s")

    def kill(self) -> None:
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.alive:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class FreshProcesses:
    """A fresh ``python -m adapters.worker job.json`` process per job, with ForkServer's
    interface. Used for GPU runs: a server that has imported a CUDA library (and may have
    initialised CUDA or started threads doing so) is not safe to fork for CUDA work. It pays
    the imports once per run, which a GPU run's length dwarfs."""

    def __init__(self, python: Path, env: dict[str, str]):
        self.python, self.env = python, env
        self.proc: subprocess.Popen | None = None

    alive = True  # nothing persists between jobs

    def submit(self, job_path: Path, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            self.proc = subprocess.Popen([str(self.python), "-m", "adapters.worker", str(job_path)], cwd=PROJECT_ROOT,
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def wait(self, timeout_s: float, tick) -> int:
        """The job's exit code; calls ``tick()`` every half second while it runs."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                tick()
                if time.monotonic() > deadline:
                    self.kill()
                    raise WorkerTimeout(f"timed out after {timeout_s:.0f} s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        self.kill()


ISOLATIONS = ("auto", "fork", "process")


def log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Placement:
    """Where a family's runs go in a slot: the runtime they are recorded under, the device
    string the worker uses (cpu, cuda, cuda:N), and why they cannot run, if so."""

    runtime: Runtime
    device: str
    problem: str | None = None


def place(environment: envs.Environment, model: ModelInfo, device: str, visible: str | None) -> Placement:
    """Resolve ``--device`` (auto, cpu, cuda, cuda:N) for this environment; ``visible``: the
    slot's CUDA_VISIBLE_DEVICES, if it sets one."""
    packages = environment.packages
    if device == "cpu" or (device == "auto" and not environment.cuda_devices):
        return Placement(Runtime(device="cpu", packages=packages), "cpu")
    names = environment.cuda_devices or ()
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index < len(names):
        return Placement(Runtime(device=f"cuda:{names[index]}", packages=packages), device if device != "auto"
                         else "cuda")
    if environment.cuda_devices is None:
        why = "nvidia-smi lists no GPU on this machine"
    elif environment.torch_cuda is None:
        why = f"the {model.env} environment's torch {packages.get('torch', '?')} is built without CUDA"
    else:
        why = f"torch sees {len(names)} CUDA device(s){f' (CUDA_VISIBLE_DEVICES={visible})' if visible else ''}"
    return Placement(Runtime(device=f"{device} (not visible)", packages=packages), device,
                     f"--device {device}: no CUDA device is visible to the {model.env} workers: {why}")


class WorkerSlot:
    """One worker's processes (per family environment a fork server, started on first use
    and restarted when lost, or a fresh process per job), its torch threads and extra
    environment (e.g. its GPU). ``isolation``: ``auto`` forks from a server on the CPU
    (imports paid once per family) and starts a fresh process per job on a GPU; ``fork``
    and ``process`` force one or the other."""

    def __init__(self, store_root: Path, threads: int, env: dict[str, str] | None = None,
                 isolation: str = "auto", pythons: dict[str, str] | None = None):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation {isolation!r} not in {ISOLATIONS}")
        self.store_root, self.threads, self.env = Path(store_root), threads, env or {}
        self.isolation, self.pythons = isolation, dict(pythons or {})
        self.environments: dict[str, envs.Environment | Exception] = {}
        self.servers: dict[str, ForkServer | FreshProcesses] = {}
        self.env_setup_s = 0.0  # checking (and building) environments

    def placement(self, model: ModelInfo, device: str) -> Placement | Exception:
        """Where this slot runs the family's runs, or why its environment is unavailable."""
        if model.env not in self.environments:
            t0 = time.perf_counter()
            try:
                found = envs.ensure(model, log=log_to_stderr, python=self.pythons.get(model.env))
                if device != "cpu" and envs.visible_gpus():
                    found = envs.probe(model, found.python, cuda=True, env=self.env) or found
                self.environments[model.env] = found
            except envs.EnvironmentBuildError as exc:
                self.environments[model.env] = exc
            self.env_setup_s += time.perf_counter() - t0
        found = self.environments[model.env]
        if isinstance(found, Exception):
            return found
        return place(found, model, device, self.env.get("CUDA_VISIBLE_DEVICES"))

    def server(self, model: ModelInfo, placement: Placement) -> ForkServer | FreshProcesses:
        """What runs the family's jobs in this slot (after ``placement`` found its environment)."""
        fresh = self.isolation == "process" or (self.isolation == "auto" and placement.runtime.on_gpu)
        key = f"{model.env}:{'fresh' if fresh else 'fork'}"
        server = self.servers.get(key)
        if server is None or not server.alive:
            python = self.environments[model.env].python
            env = {**os.environ, "PYTHONPATH": _pythonpath(), "OMP_NUM_THREADS": str(self.threads),
                   "PYTHONUNBUFFERED": "1", "BENCH_PARENT_PID": str(os.getpid()), **self.env}
            if fresh:
                server = FreshProcesses(python, env)
            else:
                log = self.store_root / "logs" / f"server-{model.env}-{os.getpid()}-{id(self)}.log"
                server = ForkServer(python, model.adapter, log, env)
            self.servers[key] = server
        return server

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
