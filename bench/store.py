"""Results store: one JSON record per run (``bench.core.contract.Record``).

    <out>/records/<run_id>.json      the record (schema version SCHEMA_VERSION)
    <out>/predictions/<run_id>.npz   test-set predictions and labels
    <out>/logs/<run_id>.log          the worker's stdout/stderr

A run's id covers its spec and its runtime (device kind, key package versions), so the
same spec run on a CPU and on a GPU are two records. Writes go to a temporary file and
``os.replace`` it, so a killed run never leaves a truncated record, and parallel writers
never share a file. A new record of a spec replaces that spec's earlier records that are
not ``ok`` (an earlier failure of the same run); ``ok`` records made elsewhere stay.
Reports read only this store.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bench.core.contract import SCHEMA_VERSION, ContractError, Record, Runtime, Spec, run_id
from bench.core.util import atomic_write_json


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


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.records = self.root / "records"
        self._by_spec: dict[str, set[str]] | None = None  # spec_id -> run ids, read once

    def prepare(self) -> Store:
        """Create or reopen a results directory; refuse one of another schema version before
        touching anything in it (it is checked first, and nothing is created or rewritten)."""
        self._check_marker()
        if self.records.is_dir():
            self._index()  # every record readable, of this schema version
        for sub in ("records", "predictions", "logs", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not self.marker.exists():
            atomic_write_json(self.marker, {"schema_version": SCHEMA_VERSION})
        return self

    @property
    def marker(self) -> Path:
        return self.root / "store.json"

    def _check_marker(self) -> None:
        """A StoreError if ``store.json`` names another schema version."""
        if not self.marker.exists():
            return
        version = _load_json(self.marker, "store marker").get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.marker}: results of schema version {version}, but this ftbench reads and "
                             f"writes version {SCHEMA_VERSION}; {NEW_OUT}")

    def path(self, rid: str) -> Path:
        return self.records / f"{rid}.json"

    def get(self, rid: str) -> Record | None:
        path = self.path(rid)
        return self._read(path) if path.exists() else None

    def _read(self, path: Path) -> Record:
        data = _load_json(path, "record")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: record of schema version {data.get('schema_version')}, but this "
                             f"ftbench reads and writes version {SCHEMA_VERSION}; {NEW_OUT}")
        try:
            return Record.from_dict(data)
        except (ContractError, ValueError, TypeError) as exc:
            raise StoreError(f"{path}: not a record this ftbench can read ({exc}); move it aside to rerun it") from exc

    def _index(self) -> dict[str, set[str]]:
        if self._by_spec is None:
            by_spec: dict[str, set[str]] = defaultdict(set)
            for path in sorted(self.records.glob("*.json")):
                by_spec[self._read(path).spec_id].add(path.stem)
            self._by_spec = by_spec
        return self._by_spec

    def find(self, spec: Spec, runtime: Runtime) -> Record | None:
        """The stored record of this spec on this runtime (also one stored under an older
        id, before ids covered the runtime), or None."""
        record = self.get(run_id(spec, runtime))
        if record is not None:
            return record
        for rid in sorted(self._index().get(spec.spec_id, ())):
            other = self.get(rid)
            if other is not None and other.runtime == runtime:
                return other
        return None

    def put(self, record: Record) -> None:
        atomic_write_json(self.path(record.run_id), record.to_dict())
        ids = self._index()[record.spec_id]
        for rid in sorted(ids - {record.run_id}):  # an earlier failure of this run is superseded
            old = self.get(rid)
            if old is None or not old.ok:
                self.path(rid).unlink(missing_ok=True)
                ids.discard(rid)
        ids.add(record.run_id)

    def all(self) -> list[Record]:
        if not self.records.is_dir():
            raise StoreError(f"{self.root}: no records/ directory; is this a results directory?")
        self._check_marker()  # e.g. `bench report` on an old directory: refuse before writing a report
        return [self._read(p) for p in sorted(self.records.glob("*.json"))]
