"""Per-family virtual environments, built on demand from the ``pyproject.toml`` extras.

MACE pins e3nn 0.4.4 and SevenNet needs e3nn >= 0.5, so every family gets its own
environment at ``$BENCH_ENV_DIR/<env>`` (default ``.venvs/`` in the project). An
environment is reused when its probe (importing the family's packages and the adapter
module) passes; otherwise it is (re)built with
``pip install -c constraints.txt -e .[<env>]``. tox.ini points its family testenvs at the
same directories, so tests and sweeps share them.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from bench import PROJECT_ROOT
from bench.registry import ModelInfo

CONSTRAINTS = PROJECT_ROOT / "constraints.txt"


class EnvironmentBuildError(RuntimeError):
    """The family's environment could not be created; the message has pip's output tail."""


def env_root() -> Path:
    return Path(os.environ.get("BENCH_ENV_DIR", PROJECT_ROOT / ".venvs"))


def env_python(model: ModelInfo) -> Path:
    return env_root() / model.env / "bin" / "python"


def probe(model: ModelInfo) -> bool:
    """True when the environment exists and imports the family's adapter."""
    python = env_python(model)
    if not python.exists():
        return False
    module = model.adapter.split(":")[0]
    code = f"import {module}"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, cwd=PROJECT_ROOT,
                          timeout=300, check=False)
    return proc.returncode == 0


def ensure(model: ModelInfo, *, log=print) -> Path:
    """Return the family's python, building its environment first if needed."""
    root = env_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{model.env}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time per family
        if probe(model):
            return env_python(model)
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
        if not probe(model):
            raise EnvironmentBuildError(f"the {model.env} environment was built but cannot import "
                                        f"{model.adapter}; delete {target} and retry")
        log(f"{model.env} environment ready")
        return env_python(model)
