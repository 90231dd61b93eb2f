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
        for sub in ("records", "predictions", "logs", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        marker = self.root / "store.json"
        if marker.exists():
            version = json.loads(marker.read_text()).get("schema_version")
            if version != SCHEMA_VERSION:
                raise StoreError(f"{self.root} holds results of schema version {version}; this "
                                 f"ftbench writes version {SCHEMA_VERSION}. Use a new --out directory.")
        else:
            atomic_write_json(marker, {"schema_version": SCHEMA_VERSION})
        return self

    def path(self, rid: str) -> Path:
        return self.records / f"{rid}.json"

    def get(self, rid: str) -> dict | None:
        path = self.path(rid)
        if not path.exists():
            return None
        return self._read(path)

    def _read(self, path: Path) -> dict:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}: unreadable record ({exc}); move it aside to rerun it") from exc
        if record.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: schema version {record.get('schema_version')} "
                             f"!= {SCHEMA_VERSION}; use a new --out directory")
        return record

    def put(self, record: dict) -> None:
        if record["status"] not in STATUSES:
            raise ValueError(f"status {record['status']!r} not in {STATUSES}")
        atomic_write_json(self.path(record["run_id"]), record)

    def all(self) -> list[dict]:
        if not self.records.is_dir():
            raise StoreError(f"{self.root}: no records/ directory; is this a results directory?")
        return [self._read(p) for p in sorted(self.records.glob("*.json"))]
