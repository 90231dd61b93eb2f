"""Where a record came from: commit, host, time (the worker adds packages and CPU)."""

from __future__ import annotations

import datetime
import platform
import subprocess
from functools import cache

import bench
from bench import PROJECT_ROOT


@cache
def git_state() -> dict:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"commit": commit, "dirty": dirty}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def provenance() -> dict:
    return {"ftbench_version": bench.__version__, **git_state(), "hostname": platform.node(),
            "machine": platform.machine()}
