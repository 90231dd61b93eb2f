"""Small helpers shared by the orchestrator and the workers (standard library only)."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import resource
from pathlib import Path


def canonical_json(data) -> str:
    """One text per value: sorted keys, no whitespace (what identities are hashed from)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def digest(data, length: int = 16) -> str:
    """A short stable hash of a JSON-able value."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:length]


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and ``os.replace``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=float))


def did_you_mean(name: str, choices) -> str:
    """' Did you mean ...?' naming the closest choices, or ''."""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 and size in bytes of a file, or of a directory (a saved model may be one): the
    hash of every file's relative name and sha256, in name order."""
    path = Path(path)
    if not path.is_dir():
        return _sha256_of_file(path), path.stat().st_size
    total, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        total.update(f"{f.relative_to(path).as_posix()}\0{_sha256_of_file(f)}\n".encode())
        size += f.stat().st_size
    return total.hexdigest(), size
