"""Headline numbers and the report, on a synthetic store whose test RMSEs are known exactly
(tests/conftest.py: SYNTH_DESIGN; 8 atoms per test structure, 25 test groups)."""

from __future__ import annotations

import json
import math
import re

import pytest

from bench.headline import (ENERGY, FORCES, curves, energy_per_structure_mev, error_at_fraction, headline,
                            strategy_labels)
from bench.report import build_sections, write_report
from bench.store import Store


def rows(h):
    return {(r.key.model, r.key.strategy): r for r in h.rows}


def test_reference_is_scratch_at_the_largest_size_and_flags_a_partial_pool(synthetic_store):
    records = Store(synthetic_store).all()
    ref = headline(records).references[("synth", "chgnet", "0.3.0")]
    assert (ref.point.size, ref.point.fraction, ref.full_pool) == (100, 1.0, True)
    assert ref.point.mean(FORCES) == pytest.approx(100)
    partial = [r for r in records if r["spec"].get("train_size") != 100]
    ref = headline(partial).references[("synth", "chgnet", "0.3.0")]
    assert (ref.point.size, ref.full_pool) == (20, False)
    sec = next(s for s in build_sections(partial) if s.title == "Headline")
    assert "⚠ < 100 % of the training pool" in json.dumps(sec.parts, ensure_ascii=False)


def test_smallest_fraction_within_tolerance_found_and_not_found(synthetic_store):
    r = rows(headline(Store(synthetic_store).all()))
    # chgnet: reference F 100, E 10 -> within 10 %: F <= 110, E <= 11
    assert r["chgnet", "finetune"].within[FORCES].size == 20  # 150, 108, 95
    assert r["chgnet", "finetune"].within[FORCES].fraction == pytest.approx(0.2)
    assert r["chgnet", "finetune"].within[ENERGY].size == 20  # 30, 10.5, 5
    assert r["chgnet", "freeze-interactions"].within[FORCES] is None  # 200, 160, 140
    assert r["chgnet", "freeze-interactions"].within[ENERGY].size == 100
    assert r["m3gnet", "finetune"].within[FORCES] is None  # 200, 150, 100 vs 80
    assert r["m3gnet", "freeze-interactions"].within[FORCES].size == 20  # 85 <= 88
    assert r["chgnet", "zero-shot"].within[FORCES] is None
    loose = rows(headline(Store(synthetic_store).all(), tolerance=0.7))  # F <= 170
    assert loose["chgnet", "finetune"].within[FORCES].size == 5
    assert loose["chgnet", "freeze-interactions"].within[FORCES].size == 20


def test_error_at_pool_fraction_exact_interpolated_and_out_of_range(synthetic_store):
    records = Store(synthetic_store).all()
    h = headline(records)
    ft = rows(h)["chgnet", "finetune"]
    at10, at20 = ft.at_fraction[(FORCES, 0.1)], ft.at_fraction[(FORCES, 0.2)]
    assert at10.interpolated and at10.ratio == pytest.approx(math.sqrt(150 * 108) / 100, rel=1e-9)
    assert not at20.interpolated and at20.ratio == pytest.approx(1.08, rel=1e-9)
    e10 = ft.at_fraction[(ENERGY, 0.1)]
    assert e10.interpolated and e10.value == pytest.approx(math.sqrt(30 * 10.5), rel=1e-9)
    assert rows(h)["chgnet", "zero-shot"].at_fraction[(FORCES, 0.1)].ratio == pytest.approx(3.0)
    ref = h.references[("synth", "chgnet", "0.3.0")].point
    assert error_at_fraction(curves(records)[ft.key], ref, FORCES, 0.02) is None  # below 5 %
    without_5 = [r for r in records if r["spec"].get("train_size") != 5]
    assert rows(headline(without_5))["chgnet", "finetune"].at_fraction[(FORCES, 0.1)] is None


def test_chemical_accuracy_is_per_structure_not_per_atom(synthetic_store):
    r = rows(headline(Store(synthetic_store).all()))
    ft, fi = r["chgnet", "finetune"], r["chgnet", "freeze-interactions"]
    assert ft.largest.atoms_per_structure == 8
    assert energy_per_structure_mev(ft.largest) == pytest.approx(5 * 8)  # 40 <= 43.36 meV
    assert ft.chemical_accuracy.size == 100
    assert energy_per_structure_mev(fi.largest) == pytest.approx(5.5 * 8)  # 44 > 43.36
    assert fi.chemical_accuracy is None
    assert r["chgnet", "scratch"].chemical_accuracy is None
    relaxed = rows(headline(Store(synthetic_store).all(), chemical_accuracy_mev=45))
    assert relaxed["chgnet", "freeze-interactions"].chemical_accuracy.size == 100


def test_time_to_accuracy_and_cost(synthetic_store):
    r = rows(headline(Store(synthetic_store).all()))
    # target: 1.1 × scratch's final val F (mean of 98 and 102) = 110; curves fall 3f -> f in 4 epochs
    ft = r["chgnet", "finetune"].time_to_target
    assert ft.target_mev_per_ang == pytest.approx(110)
    assert (ft.reached, ft.runs, ft.seconds.mean) == (2, 2, pytest.approx(40))  # epoch 4 × 10 s
    fi = r["chgnet", "freeze-interactions"].time_to_target
    assert (fi.reached, fi.seconds) == (0, None)
    assert r["m3gnet", "freeze-interactions"].time_to_target.seconds.mean == pytest.approx(20)  # 4 × 5 s
    fixed = rows(headline(Store(synthetic_store).all(), time_target_mev_per_ang=130))
    assert fixed["chgnet", "finetune"].time_to_target.seconds.mean == pytest.approx(30)  # epoch 3
    assert r["chgnet", "freeze-interactions"].step_ratio == pytest.approx(0.4)
    assert r["chgnet", "finetune"].step_ratio == pytest.approx(1.0)
    assert r["chgnet", "freeze-interactions"].inference_atoms_per_s == 1000  # from the zero-shot run
    assert r["m3gnet", "finetune"].inference_atoms_per_s == 500  # the timing job wins over runs (400)
    assert r["chgnet", "finetune"].peak_rss_mb == 1200  # max over seeds at the largest size
    with pytest.raises(TypeError):
        headline([], tolrance=0.2)


def test_report_has_headline_first_lists_bad_runs_and_embeds_pngs(synthetic_store):
    md_path, html_path = write_report(synthetic_store)
    md, page = md_path.read_text(), html_path.read_text()
    assert md.index("## Headline") < md.index("## Learning curves") < md.index("## Results per")
    assert "| F within 10 % from |" in md and "| chem. acc. from |" in md
    line = next(x for x in md.splitlines() if x.startswith("| synth | chgnet (0.3.0) | finetune |"))
    assert "| 20 (20 %) | 20 (20 %) | 1.27×* | 1.08× |" in line and "| 40 s (2/2) |" in line
    assert "energy RMSE per atom × the mean number of atoms per test structure" in md
    assert "1 failed" in md and "1 skipped" in md and "41 stored runs" in md
    assert "worker killed by SIGKILL (out of memory?)" in md and "checkpoint not cached" in md
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == 4  # 2 learning curves, families, parity
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    for name in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (synthetic_store / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.40×" in md  # freeze-interactions step time vs finetune


def test_headline_settings_come_from_a_preset_dict(synthetic_store):
    md = write_report(synthetic_store, headline={"tolerance": 0.7})[0].read_text()
    assert "| F within 70 % from |" in md


def test_per_group_table_is_capped(synthetic_store):
    def group_rows(max_groups):
        sec = next(s for s in build_sections(Store(synthetic_store).all(), max_groups=max_groups)
                   if s.title.startswith("Errors per group"))
        return next(part for kind, part in sec.parts if kind == "table")[1]

    capped = group_rows(20)
    one_run = [r for r in capped if r[:4] == ["synth", "chgnet (0.3.0)", "finetune", "20 (20 %)"]]
    assert len(one_run) == 21 and one_run[-1][4] == "… 5 more groups (in the records)"
    assert [r[4] for r in one_run[:3]] == ["traj-000", "traj-001", "traj-002"]
    full = [r for r in group_rows(100) if r[:4] == one_run[0][:4]]
    assert len(full) == 25 and not any("more groups" in r[4] for r in full)


def test_missing_predictions_are_noted_not_fatal(synthetic_store):
    for npz in (synthetic_store / "predictions").glob("*.npz"):
        npz.unlink()
    md_path, html_path = write_report(synthetic_store)
    md = md_path.read_text()
    assert "predictions file missing for chgnet" in md and "no parity plot" in md
    assert html_path.read_text().count("data:image/png;base64,") == 3


def test_runs_under_different_settings_are_kept_apart_and_labelled(synthetic_store):
    records = Store(synthetic_store).all()
    longer = [json.loads(json.dumps(r)) for r in records
              if r["spec"]["model"] == "chgnet" and r["spec"]["strategy"] == "finetune" and r["status"] == "ok"]
    for r in longer:
        r["spec"]["train_config"] = {"epochs": 8}
        r["metrics"]["forces_rmse_mev_per_ang"] /= 2
    h = headline(records + longer)
    assert len([r for r in h.rows if r.key[2:5] == ("chgnet", "0.3.0", "finetune")]) == 2
    names = sorted(strategy_labels([r.key for r in h.rows if r.key.model == "chgnet"]).values())
    assert names == ["finetune [epochs=4]", "finetune [epochs=8]", "freeze-interactions [epochs=4]",
                     "scratch [epochs=4]", "zero-shot"]
    assert sorted(r.largest.mean(FORCES) for r in h.rows if r.key[2:5] == ("chgnet", "0.3.0", "finetune")) == [
        pytest.approx(47.5), pytest.approx(95)]


def test_performance_targets_are_judged_from_the_timing_job_and_the_sweep_log(synthetic_store):
    (synthetic_store / "sweeps.jsonl").write_text(json.dumps(
        {"preset": "quick", "wall_s": 1500.0, "n_runs": 41, "counts": {"reused": 0}, "env_build_s": 3.0}) + "\n")
    md = write_report(synthetic_store)[0].read_text()
    section = md[md.index("## Performance targets"):]
    speed = next(x for x in section.splitlines() if x.startswith("| m3gnet | batched predict"))
    assert "20.0 vs 50.0 ms/structure = 2.50×" in speed and speed.endswith("| ≥ 3× | NOT met |")
    prep = next(x for x in section.splitlines() if x.startswith("| chgnet | data preparation"))
    assert "max 1.00 %" in prep and prep.endswith("| met |")
    sweep = next(x for x in section.splitlines() if x.startswith("| all |"))
    assert "25.0 min" in sweep and sweep.endswith("| ≤ 20 min | NOT met |")
