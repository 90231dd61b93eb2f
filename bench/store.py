"""Results store: one JSON record per run, named by the hash of its spec.

    <out>/records/<run_id>.json      the record (schema below, version SCHEMA_VERSION)
    <out>/predictions/<run_id>.npz   test-set predictions and labels
    <out>/logs/<run_id>.log          the worker's stdout/stderr

Writes go to a temporary file and ``os.replace`` it, so a killed run never leaves a
truncated record, and parallel writers never share a file. Reports read only this store.

Record keys: ``schema_version``, ``run_id``, ``spec`` (everything that defines the run),
``status`` (ok | failed | skipped | diverged) and ``reason``, ``metrics`` (meV/atom, meV/Å,
GPa; ``per_group``), ``curve`` (per epoch), ``timing``, ``parameters`` (trainable/total),
``blocks``, ``environment`` (packages, threads, device, CPU), ``provenance`` (commit,
host, times).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped", "diverged")


class StoreError(RuntimeError):
    """A results directory this version cannot use (never overwritten)."""


# What to do about a results directory this version refuses; records are never migrated in
# place, since an older schema's metrics cannot be told apart from this one's by content.
NEW_OUT = ("nothing was changed; write to a new --out directory (or move this one aside), "
           "and rerun the sweep there: records are not migrated between schema versions")


def _load_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a StoreError naming the file (truncated, not JSON, not a dict)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable {what} ({exc}); move it aside to rerun it") from exc
    if not isinstance(data, dict):
        raise StoreError(f"{path}: unreadable {what} (a JSON {type(data).__name__}, not an object); "
                         "move it aside to rerun it")
    return data


def run_id(spec: dict) -> str:
    """Stable hash of a run spec (canonical JSON)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=float))
    os.replace(tmp, path)


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.records = self.root / "records"

    def prepare(self) -> Store:
        """Create or reopen a results directory; refuse one of another schema version before
        touching anything in it (it is checked first, and nothing is created or rewritten)."""
        if not self._check_marker() and self.records.is_dir():
            for path in sorted(self.records.glob("*.json")):  # records from before the marker existed
                self._read(path)
        for sub in ("records", "predictions", "logs", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not self.marker.exists():
            atomic_write_json(self.marker, {"schema_version": SCHEMA_VERSION})
        return self

    @property
    def marker(self) -> Path:
        return self.root / "store.json"

    def _check_marker(self) -> bool:
        """Whether ``store.json`` exists; a StoreError if it names another schema version."""
        if not self.marker.exists():
            return False
        version = _load_json(self.marker, "store marker").get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.marker}: results of schema version {version}, but this ftbench reads and "
                             f"writes version {SCHEMA_VERSION}; {NEW_OUT}")
        return True

    def path(self, rid: str) -> Path:
        return self.records / f"{rid}.json"

    def get(self, rid: str) -> dict | None:
        path = self.path(rid)
        if not path.exists():
            return None
        return self._read(path)

    def _read(self, path: Path) -> dict:
        record = _load_json(path, "record")
        if record.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: record of schema version {record.get('schema_version')}, but this "
                             f"ftbench reads and writes version {SCHEMA_VERSION}; {NEW_OUT}")
        return record

    def put(self, record: dict) -> None:
        if record["status"] not in STATUSES:
            raise ValueError(f"status {record['status']!r} not in {STATUSES}")
        atomic_write_json(self.path(record["run_id"]), record)

    def all(self) -> list[dict]:
        if not self.records.is_dir():
            raise StoreError(f"{self.root}: no records/ directory; is this a results directory?")
        self._check_marker()  # e.g. `bench report` on an old directory: refuse before writing a report
        return [self._read(p) for p in sorted(self.records.glob("*.json"))]
