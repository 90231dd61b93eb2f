"""The committed study (reports/studies/*): its report is what its records say.

A study takes hours on a 2-core CPU, so its records, test predictions and report are
committed; this checks that the committed report.md is rebuilt, byte for byte, from the
committed records by the current code, so the report can never drift from its evidence.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.report import write_report
from bench.store import Store

STUDIES = sorted(p for p in (Path(__file__).parents[1] / "reports" / "studies").glob("*") if p.is_dir())


def test_a_study_is_committed():
    assert STUDIES, "reports/studies/ holds no study"


@pytest.mark.parametrize("study", STUDIES, ids=[p.name for p in STUDIES])
def test_the_committed_report_is_rebuilt_from_the_committed_records(study, tmp_path):
    copy = tmp_path / study.name
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("*.png", "report.*"))
    assert Store(copy).all(), f"{study}: no records"
    md, _ = write_report(copy)
    assert md.read_text() == (study / "report.md").read_text(), (
        f"{study}/report.md differs from the report its records give: rebuild it with "
        f"`python -m bench report {study}`")
