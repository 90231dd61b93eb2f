"""`python -m bench compare`: the CI regression gate over two results directories."""

from __future__ import annotations

import copy
import json

import pytest

from bench.cli import main
from bench.compare import DEFAULT_TOLERANCES, compare
from bench.core.contract import Record
from bench.core.metrics import METRICS
from bench.core.util import digest
from bench.store import Store
from tests.conftest import edited

DATASET = {"dataset": "mlearn-Mo", "dataset_sha256": "3220d8c0c039c93dcd3d6f80e920076e8ec4c4b467fb61652c67f78aa884adc0",
           "schema_version": 1}
TRAIN = {"batch_size": 4, "epochs": 4, "lr": 0.001, "max_time_s": 1800.0, "patience": 5}


def _record(spec: dict, metrics: dict, timing: dict) -> dict:
    spec = {**DATASET, "train_size_requested": spec["train_size"], **spec}
    return {"schema_version": 1, "run_id": digest(spec), "spec": spec, "status": "ok", "reason": None,
            "metrics": metrics, "timing": timing,
            "environment": {"device": "cpu", "threads": 2, "cpu": "Intel(R) Xeon(R) Processor"}}


# Two records of an earlier default run (per_group and curve left out).
M3GNET_SCRATCH = _record(
    {"model": "m3gnet", "family": "m3gnet", "checkpoint": "M3GNet-MatPES-PBE-v2025.1-PES", "strategy": "scratch",
     "freeze_k": 0, "e0_policy": "refit", "train_size": 15, "train_fraction": 0.0815, "seed": 0, "train_config": TRAIN},
    {"energy_rmse_mev_per_atom": 405.566, "energy_mae_mev_per_atom": 332.157, "forces_rmse_mev_per_ang": 1565.327,
     "forces_mae_mev_per_ang": 946.712, "stress_rmse_gpa": 12.377},
    {"train_s": 9.498, "s_per_epoch": 2.374, "step_s_per_structure": 0.122, "inference_atoms_per_s": 1509.6,
     "peak_rss_mb": 1771.5, "load_s": 4.895, "reference_workload_s": 0.050})
CHGNET_ZERO_SHOT = _record(
    {"model": "chgnet", "family": "chgnet", "checkpoint": "0.3.0", "strategy": "zero-shot", "freeze_k": None,
     "e0_policy": "foundation", "train_size": 0, "seed": 0, "train_config": None},
    {"energy_rmse_mev_per_atom": 125.5, "energy_mae_mev_per_atom": 118.2, "forces_rmse_mev_per_ang": 507.1,
     "forces_mae_mev_per_ang": 330.4, "stress_rmse_gpa": None},
    {"inference_atoms_per_s": 326.0, "peak_rss_mb": 2860.8, "load_s": 1.195, "reference_workload_s": 0.050})


def write(root, *records) -> str:
    store = Store(root).prepare()
    for rec in records:
        store.put(rec if isinstance(rec, Record) else Record.from_dict(rec))
    return str(root)


@pytest.fixture
def dirs(tmp_path):
    """(baseline dir, a function writing a candidate dir from edited copies of the baseline records)."""
    base = write(tmp_path / "base", M3GNET_SCRATCH, CHGNET_ZERO_SHOT)

    def candidate(edit=lambda recs: None) -> str:
        recs = {r["spec"]["strategy"]: copy.deepcopy(r) for r in (M3GNET_SCRATCH, CHGNET_ZERO_SHOT)}
        edit(recs)
        return write(tmp_path / "cand", *recs.values())

    return base, candidate


def run(capsys, *args) -> tuple[int, str]:
    code = main(["compare", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def scale(strategy: str, section: str, key: str, factor: float):
    def edit(recs):
        recs[strategy][section][key] *= factor
    return edit


def test_one_tolerance_per_metric():
    assert set(DEFAULT_TOLERANCES) == set(METRICS)


def test_identical_passes(dirs, capsys):
    base, candidate = dirs
    code, out = run(capsys, base, candidate())
    assert code == 0 and "0 REGRESSION" in out and "PASS" in out


@pytest.mark.parametrize("factor, code, verdict", [(1.2, 1, "REGRESSION"), (1.03, 0, "ok"), (0.8, 0, "improved")])
def test_forces_rmse_against_tolerance(dirs, capsys, tmp_path, factor, code, verdict):
    base, candidate = dirs
    report = tmp_path / "cmp.json"
    got, out = run(capsys, base, candidate(scale("scratch", "metrics", "forces_rmse_mev_per_ang", factor)),
                   "--json", str(report))
    assert got == code
    rows = json.loads(report.read_text())["rows"]
    row = next(r for r in rows if r["metric"] == "forces_rmse_mev_per_ang" and r["run"].startswith("m3gnet"))
    assert row["verdict"] == verdict
    assert {r["verdict"] for r in rows if r is not row} == {"ok"}
    if code:
        assert "regressions:\n  m3gnet scratch n=15 seed=0" in out and "forces_rmse_mev_per_ang: 1565 -> 1878" in out


def test_tolerances_from_cli_toml_and_dict(dirs, capsys, tmp_path):
    base, candidate = dirs
    cand = candidate(scale("scratch", "metrics", "forces_rmse_mev_per_ang", 1.2))
    assert run(capsys, base, cand, "--tolerance", "forces_rmse_mev_per_ang=0.25")[0] == 0
    assert run(capsys, base, cand, "--tolerance", "forces_mae_mev_per_ang=25%")[0] == 1
    config = tmp_path / "ci.toml"
    config.write_text("[compare]\ntiming_ratio = 2.0\n[compare.tolerances]\n"
                      "forces_rmse_mev_per_ang = { rel = 0.0, abs = 400.0 }\n")
    assert run(capsys, base, cand, "--config", str(config))[0] == 0
    config.write_text("[compare]\ntiming_ratios = 2.0\n")
    code, out = run(capsys, base, cand, "--config", str(config))
    assert code == 2 and "timing_ratios" in out and str(config) in out
    config.write_text("timing_ratio = 'fast'\n")
    code, out = run(capsys, base, cand, "--config", str(config))
    assert code == 2 and "timing_ratio = 'fast'" in out
    cand_recs = Store(cand).all()
    assert compare(Store(base).all(), cand_recs)["summary"]["regressions"] == 1
    assert compare(Store(base).all(), cand_recs, tolerances={"forces_rmse_mev_per_ang": 0.3})["summary"]["passed"]


def test_slower_on_the_same_machine_is_a_regression(dirs, capsys):
    base, candidate = dirs
    code, out = run(capsys, base, candidate(scale("scratch", "timing", "s_per_epoch", 2.0)))
    assert code == 1 and "s_per_epoch" in out.split("regressions:")[1]
    assert "x2.00 (raw x2.00)" in out


def test_slower_machine_is_not_a_regression(dirs, capsys):
    base, candidate = dirs

    def slower_machine(recs):
        for rec in recs.values():
            for key in ("s_per_epoch", "step_s_per_structure", "reference_workload_s"):
                if key in rec["timing"]:
                    rec["timing"][key] *= 2
            rec["timing"]["inference_atoms_per_s"] /= 2
    code, out = run(capsys, base, candidate(slower_machine))
    assert code == 0 and "x1.00 (raw x2.00)" in out and "0 warn" in out


def test_without_reference_workload_timing_only_warns(dirs, capsys):
    base, candidate = dirs

    def edit(recs):
        recs["scratch"]["timing"]["s_per_epoch"] *= 2
        del recs["scratch"]["timing"]["reference_workload_s"]
    code, out = run(capsys, base, candidate(edit))
    assert code == 0 and "1 warn" in out and "raw ratio: no reference_workload_s in candidate" in out


def test_memory_growth_fails_unless_timings_are_skipped(dirs, capsys):
    base, candidate = dirs
    cand = candidate(scale("zero-shot", "timing", "peak_rss_mb", 1.5))
    code, out = run(capsys, base, cand)
    assert code == 1 and "peak_rss_mb" in out.split("regressions:")[1]
    assert run(capsys, base, cand, "--memory-ratio", "1.6")[0] == 0
    assert run(capsys, base, cand, "--no-timing")[0] == 0


@pytest.mark.parametrize("status", ["failed", "diverged", "skipped"])
def test_ok_run_not_ok_in_candidate_is_a_regression(dirs, capsys, status):
    base, candidate = dirs

    def edit(recs):
        recs["scratch"] |= {"status": status, "reason": "worker exited with code -9\nKilled", "metrics": None}
    code, out = run(capsys, base, candidate(edit))
    assert code == 1 and f"status: ok -> {status}" in out and "Killed" in out


def test_missing_run_fails_unless_allowed_and_new_run_is_info(dirs, capsys, tmp_path):
    base, _ = dirs
    cand = write(tmp_path / "only-scratch", M3GNET_SCRATCH)
    code, out = run(capsys, base, cand)
    assert code == 1 and "missing in candidate" in out and "chgnet zero-shot" in out.split("regressions:")[1]
    code, out = run(capsys, base, cand, "--allow-missing")
    assert code == 0 and "1 missing in candidate" in out
    code, out = run(capsys, cand, base)
    assert code == 0 and "1 new in candidate" in out


def test_bad_input_exits_2_naming_the_path(dirs, capsys, tmp_path):
    base, candidate = dirs
    code, out = run(capsys, base, str(tmp_path / "nope"))
    assert code == 2 and str(tmp_path / "nope") in out
    empty = tmp_path / "empty"
    Store(empty).prepare()
    code, out = run(capsys, base, str(empty))
    assert code == 2 and "no records" in out and str(empty) in out
    cand = candidate()
    path = next(Store(cand).records.glob("*.json"))
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema_version": 0}))
    code, out = run(capsys, base, cand)
    assert code == 2 and str(path) in out and "schema version" in out
    other = write(tmp_path / "other", _record({**M3GNET_SCRATCH["spec"], "new_field": 1}, {}, {}))
    code, out = run(capsys, base, other)
    assert code == 2 and "no run in common" in out and "new_field" in out


def test_the_committed_regression_baseline_passes_itself_and_fails_when_made_worse(tmp_path, capsys):
    """The CI gate on the real baseline records (reports/baselines/regression)."""
    from bench import PROJECT_ROOT

    baseline = PROJECT_ROOT / "reports" / "baselines" / "regression"
    records = Store(baseline).all()
    trained = [r for r in records if r.ok and r.spec.trains]
    assert {r.spec.model for r in trained} == {"chgnet", "mace", "m3gnet", "sevennet"}
    assert all(r.timing.reference_workload_s > 0 for r in trained)
    assert main(["compare", str(baseline), write(tmp_path / "same", *records)]) == 0

    def worse_forces(d):
        d["metrics"]["forces_rmse_mev_per_ang"] *= 1.25

    worse = [edited(r, worse_forces) if r.spec.model == "m3gnet" and r.spec.what == "finetune" else r
             for r in records]
    capsys.readouterr()
    assert main(["compare", str(baseline), write(tmp_path / "worse", *worse)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "forces_rmse_mev_per_ang" in out


def test_surrogate_jobs_are_compared_by_run_id_on_the_students_metrics(synthetic_store, tmp_path, capsys):
    """Surrogate records (no strategy, teacher named in the spec) go through the gate like any run."""
    records = Store(synthetic_store).all()
    result = compare(records, records)
    assert result["summary"]["passed"] and result["summary"]["runs_matched"] == len(records) == 79
    surrogate = [r for r in result["rows"] if " surrogate (" in r["run"]]
    assert {r["run"].rsplit(" ", 1)[0] for r in surrogate} == {
        "chgnet surrogate (finetune teacher n=100 -> small student)",
        "m3gnet surrogate (freeze-interactions teacher n=100 -> small student)"}
    assert {r["metric"] for r in surrogate} >= {"status", "forces_rmse_mev_per_ang", "energy_rmse_mev_per_atom"}
    base = write(tmp_path / "base", *records)
    student = next(r for r in records if r.spec.kind == "surrogate" and r.ok)

    def worse_student(d):
        d["metrics"]["forces_rmse_mev_per_ang"] *= 1.25  # 120 -> 150 meV/Å

    worse = [edited(r, worse_student) if r is student else r for r in records]
    code, out = run(capsys, base, write(tmp_path / "worse", *worse))
    assert code == 1 and "1 REGRESSION" in out
    assert "chgnet surrogate (finetune teacher" in out.split("regressions:")[1]
    assert "forces_rmse_mev_per_ang: 120 -> 150" in out
    code, out = run(capsys, base, write(tmp_path / "fewer", *[r for r in records if r is not student]))
    assert code == 1 and "missing in candidate" in out.split("regressions:")[1]
    assert "chgnet surrogate (finetune teacher" in out.split("regressions:")[1]
