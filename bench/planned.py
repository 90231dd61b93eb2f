"""What the last ``bench run`` into a results directory set out to run, so that a report
built while runs are missing (interrupted, still running, or running elsewhere) says so
instead of reading as a finished sweep.

``execute`` writes ``planned.json`` (the spec id and label of every planned run, derived
runs included) before it starts; a sweep's follow-up runs (best models trained again, MD
jobs on saved models) are added to it; the report compares it with the stored records.

Example:
    >>> incomplete_note(Path("reports/studies/mlearn-Mo-m3gnet"), Store(...).all())
    'Incomplete: 21 of 38 runs planned by the last `bench run` ...'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from bench.core.util import atomic_write_json

if TYPE_CHECKING:
    from bench.core.contract import Record
    from bench.plan import Plan

PLANNED = "planned.json"
SHOWN = 8  # missing runs named in the note; the count covers the rest


def write_planned(root: Path, plan: Plan, started_at: str, *, add: bool = False) -> None:
    """Record ``plan``'s runs; ``add``: the same sweep's follow-up runs, kept beside the runs
    it planned first (not replacing them)."""
    specs = {}
    path = Path(root) / PLANNED
    if add and path.is_file():
        before = json.loads(path.read_text())
        specs, started_at = before["specs"], before["started_at"]
    specs.update({r.spec.spec_id: r.spec.label for run in plan.runs for r in (run, *run.derived)})
    atomic_write_json(path, {"preset": plan.config.preset, "started_at": started_at, "specs": specs})


def incomplete_note(root: Path, records: list[Record]) -> str | None:
    """A sentence naming the planned runs that have no record, or None when none is missing
    (or nothing was planned here)."""
    path = Path(root) / PLANNED
    if not path.is_file():
        return None
    planned = json.loads(path.read_text())
    stored = {r.spec_id for r in records}
    missing = [label for spec_id, label in planned["specs"].items() if spec_id not in stored]
    if not missing:
        return None
    named = "; ".join(missing[:SHOWN]) + (f"; and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
    return (f"Incomplete: {len(missing)} of {len(planned['specs'])} runs planned by the last `bench run` "
            f"(preset {planned['preset']}, started {planned['started_at']}) have no record: interrupted, still "
            f"running or running elsewhere. What follows is from the stored runs only; the same command "
            f"resumes the others. Missing: {named}.")
