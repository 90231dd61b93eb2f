"""Per-family virtual environments, built on demand from the ``pyproject.toml`` extras.

MACE pins e3nn 0.4.4 and SevenNet needs e3nn >= 0.5, so every family gets its own
environment at ``$BENCH_ENV_DIR/<env>`` (default ``.venvs/`` in the project). An
environment is reused when its probe (importing the family's adapter module in it and
reading its key package versions) passes; otherwise it is (re)built with
``pip install -c constraints.txt -e .[<env>]``. tox.ini points its family testenvs at the
same directories, so tests and sweeps share them. The probe's versions are part of every
run's identity (``bench.core.contract.Runtime``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from bench import PROJECT_ROOT
from bench.registry import ModelInfo

CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
PROBE_MARK = "BENCH-PROBE "
# versions of these (and of the family's packages) are part of a run's runtime
CORE_PACKAGES = ("torch", "e3nn")
_PROBE_CODE = """
import importlib, importlib.metadata as md, json, sys
modules, names, cuda, adapter = json.loads(sys.argv[1])
for module in modules:
    importlib.import_module(module)
if adapter:  # the library itself, not only the adapter module that imports it lazily
    module, name = adapter.split(":")
    for library in getattr(importlib.import_module(module), name).library_modules:
        importlib.import_module(library)
packages = {}
for name in names:
    try:
        packages[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
out = {"packages": packages, "python": sys.version.split()[0]}
if cuda:
    import torch
    out["cuda"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                   if torch.cuda.is_available() else [])
    out["torch_cuda"] = torch.version.cuda
print("BENCH-PROBE " + json.dumps(out))
"""


class EnvironmentBuildError(RuntimeError):
    """The family's environment could not be created; the message has pip's output tail."""


@dataclass(frozen=True)
class Environment:
    """A family's working interpreter and what it has: key package versions and, when
    asked, the CUDA devices its torch sees (names; empty: none)."""

    python: Path
    packages: dict[str, str]
    cuda_devices: tuple[str, ...] | None = None
    torch_cuda: str | None = None  # CUDA version torch was built with (None: a CPU build)


def env_root() -> Path:
    return Path(os.environ.get("BENCH_ENV_DIR", PROJECT_ROOT / ".venvs"))


def env_python(model: ModelInfo) -> Path:
    return env_root() / model.env / "bin" / "python"


def key_packages(model: ModelInfo) -> tuple[str, ...]:
    """Packages whose versions identify a family environment (those installed are recorded)."""
    return tuple(dict.fromkeys([*CORE_PACKAGES, *model.packages, *model.accelerators]))


def visible_gpus() -> int:
    """GPUs on this machine, without importing torch (0 when there is no nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return 0
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return sum(line.startswith("GPU ") for line in proc.stdout.splitlines()) if proc.returncode == 0 else 0


_probed: dict[tuple, Environment | None] = {}
_probe_lock = threading.Lock()


def _probe(model: ModelInfo, python: Path, cuda: bool, libraries: bool,
           extra: dict[str, str]) -> subprocess.CompletedProcess:
    modules = [model.adapter.split(":")[0]]
    args = [modules, list(key_packages(model)), cuda, model.adapter if libraries else None]
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([str(python), "-c", _PROBE_CODE, json.dumps(args)], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": pythonpath, **extra})


def _probe_error(model: ModelInfo, python: Path) -> str:
    proc = _probe(model, python, False, True, {})
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def probe(model: ModelInfo, python: Path | None = None, *, cuda: bool = False, libraries: bool = False,
          env: dict[str, str] | None = None) -> Environment | None:
    """The environment, when its python imports the family's adapter module (and, with
    ``libraries``, the library modules the adapter names) (None when it does not); ``cuda``:
    also list the CUDA devices it sees (with ``env``'s variables, e.g. a pool slot's
    CUDA_VISIBLE_DEVICES). Successful probes are remembered per process."""
    python = Path(python or env_python(model))
    extra = dict(env or {})
    key = (str(python), model.env, cuda, libraries, extra.get("CUDA_VISIBLE_DEVICES"))
    with _probe_lock:
        if key in _probed:
            return _probed[key]
    if not python.exists():
        return None
    proc = _probe(model, python, cuda, libraries, extra)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(PROBE_MARK)), None)
    if proc.returncode != 0 or line is None:
        return None
    out = json.loads(line[len(PROBE_MARK):])
    found = Environment(python, out["packages"], tuple(out["cuda"]) if "cuda" in out else None,
                        out.get("torch_cuda"))
    with _probe_lock:
        _probed[key] = found
    return found


def given_python(model: ModelInfo) -> str | None:
    """An interpreter the user supplied for the family: ``--python FAMILY=PATH`` is passed
    in, ``$BENCH_PYTHON_<ENV>`` (e.g. BENCH_PYTHON_MACE) is the presets' and clusters' way."""
    return os.environ.get(f"BENCH_PYTHON_{model.env.upper()}")


def ensure(model: ModelInfo, *, log=print, python: str | None = None) -> Environment:
    """The family's environment: the interpreter the user gave (``python``, else
    ``given_python``), checked and never modified, or the project's own, built first if needed."""
    python = python or given_python(model)
    if python:
        return _existing(model, Path(python))
    root = env_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{model.env}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time per family
        found = probe(model)
        if found:
            return found
        target = root / model.env
        log(f"building the {model.env} environment in {target} (first use; reused afterwards)...")
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(target)],
            [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "-c", str(CONSTRAINTS), "-e", f"{PROJECT_ROOT}[{model.env}]"],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout)[-2000:]
                raise EnvironmentBuildError(
                    f"building the {model.env} environment failed at `{' '.join(cmd[:4])} ...`:\n{tail}")
        found = probe(model)
        if not found:
            raise EnvironmentBuildError(f"the {model.env} environment was built but cannot import "
                                        f"{model.adapter}; delete {target} and retry")
        log(f"{model.env} environment ready")
        return found


def _existing(model: ModelInfo, python: Path) -> Environment:
    """An interpreter ftbench did not build (a cluster module, a conda environment, a GPU
    machine without a package index): it must import the adapter and the family's library
    (ftbench itself comes from the project directory on PYTHONPATH)."""
    if not python.exists():
        raise EnvironmentBuildError(f"--python {model.env}={python}: no such interpreter")
    found = probe(model, python, libraries=True)
    if found is None:
        raise EnvironmentBuildError(f"--python {model.env}={python} cannot import {model.adapter} and "
                                    f"{', '.join(model.packages)}: {_probe_error(model, python)}")
    return found
