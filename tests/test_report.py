"""Headline numbers and the report, on a synthetic store whose test RMSEs are known exactly
(tests/conftest.py: SYNTH_DESIGN; 8 atoms per test structure, 25 test groups)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest

from bench.headline import (
    ENERGY,
    FORCES,
    curves,
    energy_per_structure_mev,
    error_at_fraction,
    headline,
    strategy_labels,
)
from bench.report import build_sections, write_report
from bench.store import Store
from tests.conftest import edited


def rows(h):
    return {(r.key.model, r.key.strategy): r for r in h.rows}


def test_reference_is_scratch_at_the_largest_size_and_flags_a_partial_pool(synthetic_store):
    records = Store(synthetic_store).all()
    ref = headline(records).references[("synth", "chgnet", "0.3.0")]
    assert (ref.point.size, ref.point.fraction, ref.full_pool) == (100, 1.0, True)
    assert ref.point.mean(FORCES) == pytest.approx(100)
    assert ref.verdict.valid and ref.zero_e0.mean(ENERGY) == pytest.approx(18)
    partial = [r for r in records if getattr(r.spec, "train_size", None) != 100]
    ref = headline(partial).references[("synth", "chgnet", "0.3.0")]
    assert (ref.point.size, ref.full_pool, ref.verdict.valid) == (20, False, False)
    sec = next(s for s in build_sections(partial) if s.title == "Headline")
    assert "⚠ reference trained on 20 structures, 20 % of the pool" in json.dumps(sec.parts, ensure_ascii=False)


def _scratch_edit(change):
    """Records with every scratch run's dict changed by ``change``."""
    def edit(records):
        return [edited(r, change) if getattr(r.spec, "is_reference", False) else r for r in records]
    return edit


def test_an_unconverged_reference_makes_no_claim_and_says_why(synthetic_store):
    records = Store(synthetic_store).all()

    def unconverged(d):  # ran out of epochs while the validation error was still falling 4 %/epoch
        d["convergence"] |= {"stopped": "budget", "plateau": False, "lr_fraction_at_stop": 0.05,
                             "val_forces_trend_pct_per_epoch": -4.2, "epochs_run": 3}

    h = headline(_scratch_edit(unconverged)(records))
    row = rows(h)["chgnet", "finetune"]
    assert row.blocked == "reference not converged: validation F still falling 4.2 %/epoch at epoch 3 " \
                          "(stopped: budget) (seed 0)"
    assert row.within == {} and row.at_fraction == {} and row.time_to_target is None
    paragraphs = " ".join(p for kind, p in section(build_sections(_scratch_edit(unconverged)(records)),
                                                   "Summary").parts if kind == "text")
    assert "synth: this sweep cannot say whether fine-tuning on a fraction of the data matches" in paragraphs
    assert "no data-efficiency claim: reference not converged: validation F still falling 4.2 %/epoch" in paragraphs
    # a run with twice the budget that changed the best validation F by < 5 % establishes convergence
    checked = _scratch_edit(unconverged)(records)
    ref = next(r for r in checked if r.spec.model == "chgnet" and getattr(r.spec, "is_reference", False)
               and r.spec.train_size == 100
               and r.spec.seed == 0)
    twice = []
    for r in checked:
        if r.spec.model == "chgnet" and getattr(r.spec, "is_reference", False) and r.spec.train_size == 100:
            best = r.convergence.val_forces_best_mev_per_ang
            twice.append(edited(r, lambda d, r=r, best=best: (
                d["spec"].update(role="budget-check", check_of=r.spec_id, train_config={"epochs": 8}),
                d["convergence"].update(val_forces_best_mev_per_ang=best * 0.97))))
    assert ref.spec_id in {t.spec.check_of for t in twice}
    h = headline(checked + twice)
    assert rows(h)["chgnet", "finetune"].blocked is None and rows(h)["m3gnet", "finetune"].blocked
    assert rows(h)["chgnet", "finetune"].within[FORCES].size == 100
    assert len([r for r in h.rows if r.key.model == "chgnet" and r.key.strategy == "scratch"]) == 1  # not a curve


def test_a_reference_no_better_than_zero_shot_e0_makes_no_claim(synthetic_store):
    records = Store(synthetic_store).all()

    def worse(d):  # the mean-force baseline: worse than the foundation with only its E0 refit
        d["metrics"]["forces_rmse_mev_per_ang"] = 1500.0

    h = headline(_scratch_edit(worse)(records))
    assert rows(h)["m3gnet", "freeze-interactions"].blocked.startswith(
        "reference no better than zero-shot-e0 (F 1,500 vs 250 meV/Å")
    assert rows(h)["m3gnet", "freeze-interactions"].within == {}
    converged = rows(headline(records))["m3gnet", "freeze-interactions"]
    assert converged.blocked is None and converged.within[FORCES].size == 20  # the claim, with a valid reference


def test_smallest_fraction_within_tolerance_found_and_not_found(synthetic_store):
    r = rows(headline(Store(synthetic_store).all()))
    # chgnet: reference F 100, E 10 -> within 10 %: F <= 110, E <= 11, counting mean + std over the
    # seeds (the seed factors 0.98/1.02 give std = 2 % of the design value)
    assert r["chgnet", "finetune"].within[FORCES].size == 100  # 150, 108 (+2.2 = 110.2 > 110), 95
    assert r["chgnet", "finetune"].within[FORCES].fraction == pytest.approx(1.0)
    assert r["chgnet", "finetune"].within[ENERGY].size == 20  # 30, 10.5 (+0.2), 5
    assert r["chgnet", "finetune"].blocked is None
    assert r["chgnet", "freeze-interactions"].within[FORCES] is None  # 200, 160, 140
    assert r["chgnet", "freeze-interactions"].within[ENERGY].size == 100
    assert r["m3gnet", "finetune"].within[FORCES] is None  # 200, 150, 100 vs 80
    assert r["m3gnet", "freeze-interactions"].within[FORCES].size == 20  # 85 <= 88
    assert r["chgnet", "zero-shot"].within[FORCES] is None
    loose = rows(headline(Store(synthetic_store).all(), tolerance=0.7))  # F <= 170
    assert loose["chgnet", "finetune"].within[FORCES].size == 5  # 150 + 3
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
    without_5 = [r for r in records if getattr(r.spec, "train_size", None) != 5]
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


def test_report_leads_with_the_answer_lists_bad_runs_and_embeds_pngs(synthetic_store):
    md_path, html_path = write_report(synthetic_store)
    md, page = md_path.read_text(), html_path.read_text()
    assert md.index("## Summary") < md.index("## Families compared") < md.index("## Learning curves") \
        < md.index("## Headline") < md.index("## Results per")
    summary = md[: md.index("## Families compared")]
    assert "chgnet (0.3.0): valid reference, scratch on 100 structures (100 %): F 100 ± 2 meV/Å" in summary
    assert "finetune within 10 % of the reference: forces from 100 structures (100 %) (95 ± 2 vs 100 ± 2); " \
           "energy from 20 structures (20 %) (10.5 ± 0.2 vs 10.0 ± 0.2)." in summary
    assert "freeze-interactions within 10 % of the reference: forces at no size up to 100 structures" in summary
    assert "Claims are made only against a valid reference" in summary
    assert "| synth | chgnet (0.3.0) | 5 structures (5 %) | finetune | 150 ± 3 |" in summary
    assert "| F within 10 % from |" in md and "| chem. acc. from |" in md
    line = next(x for x in md.splitlines() if x.startswith("| synth | chgnet (0.3.0) | finetune |"))
    assert "| valid | 100 (100 %) | 20 (20 %) | 1.27×* | 1.08× |" in line and "| 40 s (2/2) |" in line
    assert "| 95.0 ± 1.9 / 7" in line  # RMSE ± std / MAE
    assert page.count("<details>") == 5 and "<details><summary><h2>Headline</h2></summary>" in page
    assert "energy RMSE per atom × the mean number of atoms per test structure" in md
    assert "2 failed" in md and "1 skipped" in md and "79 stored runs" in md  # a failed surrogate job too
    assert "(1 timing job, 2 surrogate jobs)" in md
    assert "worker killed by SIGKILL (out of memory?)" in md and "checkpoint not cached" in md
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == 5  # 2 learning curves, families, parity, elastic constants
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
    assert html_path.read_text().count("data:image/png;base64,") == 4  # no parity plot


def test_runs_under_different_settings_are_kept_apart_and_labelled(synthetic_store):
    records = Store(synthetic_store).all()
    def longer_and_better(d):
        d["spec"]["train_config"] = {"epochs": 8}
        d["metrics"]["forces_rmse_mev_per_ang"] /= 2

    longer = [edited(r, longer_and_better) for r in records
              if r.spec.model == "chgnet" and r.spec.what == "finetune" and r.ok]
    h = headline(records + longer)
    assert len([r for r in h.rows if r.key[2:5] == ("chgnet", "0.3.0", "finetune")]) == 2
    names = sorted(strategy_labels([r.key for r in h.rows if r.key.model == "chgnet"]).values())
    assert names == ["finetune [epochs=4]", "finetune [epochs=8]", "freeze-interactions [epochs=4]",
                     "lora [epochs=4]", "replay [epochs=4]", "scratch [epochs=4]", "soft-freeze [epochs=4]",
                     "zero-shot", "zero-shot-e0"]  # soft-freeze's lr_factors: one value, only it has them
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


def section(sections, title):
    return next(s for s in sections if s.title == title)


def tables(sec):
    return [part for kind, part in sec.parts if kind == "table"]


def texts(sec):
    return [part for kind, part in sec.parts if kind == "text"]


def row(table, *lead):
    return next(r for r in table[1] if r[:len(lead)] == list(lead))


def test_new_strategies_show_in_headline_results_timing_and_curves(synthetic_store):
    records = Store(synthetic_store).all()
    r = rows(headline(records))
    for model in ("chgnet", "m3gnet"):
        for strategy in ("lora", "soft-freeze", "replay"):
            assert r[model, strategy].largest.size == 100 and len(r[model, strategy].largest.records) == 2
    assert r["chgnet", "soft-freeze"].largest.mean(FORCES) == pytest.approx(97)
    assert r["chgnet", "soft-freeze"].step_ratio == pytest.approx(1.0)  # vs finetune, lr_factors aside
    assert r["chgnet", "lora"].step_ratio == pytest.approx(0.6)
    assert [r.key.strategy for r in headline(records).rows if r.key.model == "chgnet"] == [
        "zero-shot", "zero-shot-e0", "scratch", "finetune", "freeze-interactions", "lora", "soft-freeze", "replay"]
    sections = build_sections(records)
    results = tables(section(sections, "Results per dataset, model, strategy and size"))[0]
    lora = row(results, "synth", "chgnet (0.3.0)", "lora")
    assert lora[3] == "all 6; LoRA adapters rank 8, alpha 16" and lora[-2:] == ["40 / 1,000", "budget @ 4"]
    assert row(results, "synth", "chgnet (0.3.0)", "scratch")[-1] == "early_stopping @ 4 (plateau)"
    soft = row(results, "synth", "m3gnet (M3GNet-MatPES-PBE-v2025.1-PES)", "soft-freeze")
    assert soft[3] == "none; LR × 0.01 embedding, 0.1 interaction, 1 readout"
    assert "replay of mlearn-Si" in row(results, "synth", "chgnet (0.3.0)", "replay")[3]
    timing = tables(section(sections, "Timing and cost"))[0]
    assert row(timing, "synth", "chgnet (0.3.0)", "lora", "100 (100 %)")[6] == "0.60×"
    assert row(timing, "synth", "chgnet (0.3.0)", "soft-freeze", "100 (100 %)")[6] == "1.00×"


def test_settings_of_new_strategies_split_curves_only_where_they_differ(synthetic_store):
    records = Store(synthetic_store).all()
    wider = [edited(r, lambda d: d["spec"].update(lora={"rank": 16, "alpha": 32.0})) for r in records
             if r.spec.model == "chgnet" and r.spec.what == "lora" and r.ok]
    labels = strategy_labels(curves(records + wider))
    chgnet = sorted(v for k, v in labels.items() if k.model == "chgnet")
    assert chgnet == ["finetune", "freeze-interactions", "lora [lora.alpha=16.0, lora.rank=8]",
                      "lora [lora.alpha=32.0, lora.rank=16]", "replay", "scratch", "soft-freeze", "zero-shot",
                      "zero-shot-e0"]
    assert len([k for k in labels if k.model == "chgnet" and k.strategy == "lora"]) == 2


def test_physical_properties_tables_from_the_records(synthetic_store):
    records = Store(synthetic_store).all()
    sec = section(build_sections(records), "Physical properties")
    assert "same strained cells as DFT" in texts(sec)[0] and "elemental bcc references" in texts(sec)[0]
    assert "synth, Mo: elastic constants (cubic fit over 13 strained cells up to ±1 % strain); " \
           "DFT: synthetic PBE." in texts(sec)
    elastic, mixing, relax = tables(sec)
    assert elastic[0][4:9] == ["a0 (Å)", "C11 (GPa)", "C12 (GPa)", "C44 (GPa)", "B (GPa)"]
    assert elastic[1][0] == ["DFT", "", "", "", "3.160", "472", "158", "106", "263", ""]
    # % error of the seed mean vs DFT, computed here from the records
    ft = [r.properties["elastic"]["Mo"]["model"]["C11_gpa"] for r in records
          if r.spec.what == "finetune" and r.spec.model == "chgnet" and r.spec.train_size == 100 and r.ok]
    assert len(ft) == 2
    mean = sum(ft) / 2
    cell = f"{mean:.0f} ± {abs(ft[0] - ft[1]) / 2:.0f} ({100 * (mean - 472) / 472:+.1f} %)"
    ft_row = row(elastic, "chgnet (0.3.0)", "finetune", "100 (100 %)")
    assert ft_row[5] == cell == "465 ± 1 (-1.5 %)" and ft_row[3] == "2"
    assert row(elastic, "chgnet (0.3.0)", "zero-shot", "zero-shot")[5] == "453 (-4.0 %)"
    assert row(elastic, "m3gnet (M3GNet-MatPES-PBE-v2025.1-PES)", "lora", "100 (100 %)")[5] == "484 ± 1 (+2.5 %)"
    scratch = row(elastic, "chgnet (0.3.0)", "scratch")
    assert scratch[3:9] == ["0", "–", "–", "–", "–", "–"]
    assert scratch[9] == "error: elastic fit failed: stress not converged after 200 steps"  # first line only
    partial = row(elastic, "chgnet (0.3.0)", "freeze-interactions", "100 (100 %)")
    assert partial[3] == "1" and partial[9].startswith("1 of 2 seeds failed: elastic fit failed")
    assert len(elastic[1]) == 1 + 2 * 7  # DFT + 2 models × 7 strategies at their largest size
    assert mixing[1][0][:6] == ["DFT", "", "", "", "-45.0", "–"]
    assert row(mixing, "chgnet (0.3.0)", "finetune", "100 (100 %)")[4:6] == ["-46.5 ± 1.0", "3.5 ± 0.5"]
    assert relax[1][0][:5] == ["DFT", "", "", "", "-350.0"]
    assert row(relax, "chgnet (0.3.0)", "soft-freeze", "100 (100 %)")[4:7] == ["-346.5 ± 1.0", "25.0 ± 1.0",
                                                                             "18.0 ± 0.0"]
    md = write_report(synthetic_store)[0].read_text()
    assert md.index("## Physical properties") < md.index("## Forgetting") < md.index("## Surrogate distillation") \
        < md.index("## Timing and cost") < md.index("## Performance targets")  # wide tables after the findings
    assert "![elastic-synth-Mo.png](elastic-synth-Mo.png)" in md
    assert "| chgnet (0.3.0) | finetune | 100 (100 %) | 2 | 3.144 ± 0.010 (-0.5 %) | 465 ± 1 (-1.5 %) |" in md


def test_forgetting_table_from_the_records(synthetic_store):
    sec = section(build_sections(Store(synthetic_store).all()), "Forgetting")
    assert "0 = nothing forgotten" in texts(sec)[0] and "Held-out set: mlearn-Si, 6 structures." in texts(sec)
    (table,) = tables(sec)
    ft = row(table, "synth", "chgnet (0.3.0)", "finetune", "100 (100 %)")
    assert ft[4:9] == ["2", "6.0 ± 0.1", "60.0 ± 1.2", "20.0 → 23.0 ± 0.1", "180.0 → 210.0 ± 0.6"]
    assert row(table, "synth", "m3gnet (M3GNet-MatPES-PBE-v2025.1-PES)", "replay", "20 (20 %)")[6] == "4.5 ± 0.1"
    assert {r[2] for r in table[1]} == {"finetune", "freeze-interactions", "lora", "soft-freeze", "replay"}
    assert len(table[1]) == 2 * (2 * 3 + 3 * 2)  # no zero-shot, no scratch


def test_surrogate_table_and_surrogates_stay_out_of_everything_else(synthetic_store):
    records = Store(synthetic_store).all()
    surrogate_ids = {r.run_id for r in records if r.spec.kind == "surrogate"}
    assert len(surrogate_ids) == 2
    assert not any(r.run_id in surrogate_ids for pts in curves(records).values() for p in pts for r in p.records)
    h = headline(records)
    assert {r.key.strategy for r in h.rows} == {"zero-shot", "zero-shot-e0", "scratch", "finetune",
                                               "freeze-interactions", "lora", "soft-freeze", "replay"}
    assert rows(h)["chgnet", "finetune"].inference_atoms_per_s == 1000  # not the student's 24,000 atoms/s
    sections = build_sections(records)
    sec = section(sections, "Surrogate distillation")
    (table,) = tables(sec)
    assert len(table[1]) == 1  # the ok one; the failed one is listed with the failures
    (ok,) = table[1]
    assert ok[:5] == ["synth", "chgnet (0.3.0) finetune, n=100, 1,000 params", "0",
                      "M3GNet units=32 nblocks=2, 5,000 params", "180 (100 + 60 + 20)"]
    assert ok[5:] == ["120.0 / 95.0 / 300.0", "8.0 / 5.0 / 50.0", "24,000 / 1,200 / 1,000", "20.0×", "24.0×",
                      "8 (64 atoms)"]
    assert any("md: structures 4, steps 20" in t for t in texts(sec))
    for title in ("Headline", "Learning curves", "Families compared", "Parity: DFT vs predicted",
                  "Results per dataset, model, strategy and size", "Errors per group of the test set",
                  "Timing and cost", "Physical properties", "Forgetting", "Performance targets"):
        text = json.dumps([p for kind, p in section(sections, title).parts if kind != "figure"], ensure_ascii=False)
        assert "surrogate" not in text.lower() and "24,000" not in text, title
    perf = tables(section(sections, "Performance targets"))[0]
    assert row(perf, "chgnet")[2] == "max 1.00 %"  # the student's 50 % data share is not the adapter's
    bad = tables(section(sections, "Failed, skipped and diverged runs"))[0][1]
    assert ["synth", "m3gnet", "surrogate (teacher: freeze-interactions)", "100", "0", "failed",
            "student training diverged at epoch 3 (validation loss nan)"] in bad
    assert len(bad) == 3


def test_new_sections_only_with_data(synthetic_store):
    records = Store(synthetic_store).all()
    plain = [dataclasses.replace(r, properties=None, forgetting=None) for r in records
             if r.spec.kind != "surrogate" or not r.ok]
    titles = [s.title for s in build_sections(plain)]
    assert not {"Physical properties", "Forgetting", "Surrogate distillation"} & set(titles)
    assert titles[:4] == ["Summary", "Families compared", "Learning curves", "Headline"]
    assert "Failed, skipped and diverged runs" in titles
    only_mixing = [dataclasses.replace(r, properties={"mixing": {"Mo-Nb": {"error": "no DFT reference"}}})
                   if r.properties else r for r in records]
    sec = section(build_sections(only_mixing), "Physical properties")
    (mixing,) = tables(sec)
    assert mixing[1][0][4] == "–" and row(mixing, "chgnet (0.3.0)", "finetune")[6] == "error: no DFT reference"


def test_a_report_built_while_planned_runs_lack_records_says_it_is_incomplete(synthetic_store):
    records = Store(synthetic_store).all()
    specs = {r.spec_id: r.spec.label for r in records}
    planned = synthetic_store / "planned.json"
    planned.write_text(json.dumps({"preset": "study", "started_at": "2026-12-04T22:19:00+00:00", "specs": specs}))
    assert "Incomplete" not in build_sections(records, synthetic_store)[0].parts[1][1]
    lost = [r for r in records if r.spec.kind == "train"][:9]
    missing = [r for r in records if r not in lost]
    intro = build_sections(missing, synthetic_store)[0]
    note = intro.parts[1][1]
    assert note.startswith(f"Incomplete: 9 of {len(specs)} runs planned by the last `bench run` (preset study")
    assert all(r.spec.label in note for r in lost[:8]) and note.endswith("; and 1 more.")
