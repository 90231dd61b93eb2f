"""The protocol's planning rules: zero-shot-e0 as refits of one zero-shot run, learning rates
chosen on the validation set, budget checks of the reference, strategies that are the same for
a model, budgets in steps; and the published reference errors in the reports."""

from __future__ import annotations

import pytest

from bench import lr_grid
from bench.config import SweepConfig
from bench.core.contract import TrainConfig
from bench.headline import curves
from bench.plan import make_plan
from bench.report import build_sections
from bench.store import Store
from bench.summary import published
from tests.conftest import edited

BASE = {"models": "m3gnet", "sizes": (1, 3), "seeds": (0, 1), "pool_size": 6, "val_size": 2, "perf_structures": 0}


def _plan(**settings):
    return make_plan(SweepConfig.from_preset("tests/presets/tiny.toml", **{**BASE, **settings}))


def test_zero_shot_e0_is_answered_by_the_zero_shot_run():
    plan = _plan(strategies=("zero-shot", "zero-shot-e0", "finetune"))
    (host,) = [r for r in plan.runs if not r.spec.sized]
    assert host.spec.strategy == "zero-shot" and host.spec.train_size == 0
    assert sorted((d.spec.train_size, d.spec.seed) for d in host.derived) == [(1, 0), (1, 1), (3, 0), (3, 1)]
    assert all(d.spec.e0_policy == "refit" and not d.spec.trains and d.spec.forgetting is None for d in host.derived)
    finetune = {(r.spec.train_size, r.spec.seed): r.train_idx for r in plan.runs if r.spec.trains}
    assert all(d.train_idx == finetune[(d.spec.train_size, d.spec.seed)] for d in host.derived)  # same subsets
    alone = _plan(strategies=("zero-shot-e0",))  # the host runs anyway
    assert [r.spec.strategy for r in alone.runs] == ["zero-shot"] and len(alone.runs[0].derived) == 4


def test_learning_rates_come_from_a_grid_on_the_validation_set_before_the_curves():
    plan = _plan(strategies=("finetune", "freeze-interactions"), lr_grid=(3e-4, 3e-3), lr_grid_size=3)
    grid = [r.spec for r in plan.runs]
    assert {(s.strategy, s.train_config.lr, s.train_size, s.seed, s.role) for s in grid} == {
        (name, lr, 3, 0, "lr-grid") for name in ("finetune", "freeze-interactions") for lr in (3e-4, 3e-3)}
    assert len(plan.waiting) == 2  # the curves wait for the choice
    chosen = {("mlearn-Mo", "m3gnet"): {"finetune": 3e-3, "freeze-interactions": 3e-4}}
    curves = make_plan(SweepConfig.from_preset("tests/presets/tiny.toml", **BASE, strategies=(
        "finetune", "freeze-interactions"), lr_grid=(3e-4, 3e-3), lr_grid_size=3), chosen)
    assert not curves.waiting
    assert {(r.spec.strategy, r.spec.train_config.lr) for r in curves.runs} == {
        ("finetune", 3e-3), ("freeze-interactions", 3e-4)}
    with pytest.raises(ValueError, match="lr_grid needs lr_grid_size"):
        SweepConfig.from_preset("tests/presets/tiny.toml", lr_grid=(1e-3,))


def test_the_grid_chooses_the_lowest_best_validation_loss(synthetic_store):
    records = Store(synthetic_store).all()
    ft = [r for r in records if r.spec.model == "chgnet" and r.spec.what == "finetune" and r.ok
          and r.spec.train_size == 20]
    grid = []
    for r, lr, loss in zip(ft, (3e-4, 3e-3), (0.5, 0.2), strict=True):
        grid.append(edited(r, lambda d, lr=lr, loss=loss: (
            d["spec"].update(role="lr-grid", train_config={"epochs": 4, "lr": lr}),
            d["curve"][-1].update(val_loss=loss))))
    assert lr_grid.choose(records + grid, (3e-4, 3e-3)) == {("synth", "chgnet"): {"finetune": 3e-3}}
    assert lr_grid.choose(records + grid[:1], (3e-4, 3e-3)) == {}  # a candidate missing: no choice yet
    sec = next(s for s in build_sections(records + grid) if s.title.startswith("Learning rates chosen"))
    table = next(p for k, p in sec.parts if k == "table")
    assert table[1] == [["synth", "chgnet", "finetune", "20", "0.0003: 0.5, 0.003: 0.2", "0.003"]]
    assert not any(r.spec.role != "curve" for pts in curves(records + grid).values() for p in pts for r in p.records)


def test_budget_checks_double_the_reference_at_its_largest_size():
    plan = _plan(strategies=("scratch", "finetune"), budget_check=("scratch",), min_steps=7)
    (check,) = [r.spec for r in plan.runs if r.spec.role == "budget-check"]
    largest = next(r.spec for r in plan.runs if r.spec.strategy == "scratch" and r.spec.train_size == 3
                   and r.spec.seed == 0 and r.spec.role == "curve")
    assert check.check_of == largest.spec_id and check.train_size == 3 and check.seed == 0
    assert (check.train_config.epochs, check.train_config.min_steps) == (
        2 * largest.train_config.epochs, 2 * largest.train_config.min_steps)


def test_strategies_with_the_same_flags_run_once_per_model():
    plan = _plan(strategies=("freeze-interactions", "readout-only"), models="m3gnet,sevennet")
    names = {(r.spec.model, r.spec.strategy) for r in plan.runs}
    assert ("m3gnet", "readout-only") not in names and ("m3gnet", "freeze-interactions") in names
    assert ("sevennet", "readout-only") not in names  # its readout follows the last interaction too
    assert any("readout-only is freeze-interactions" in note for note in plan.notes)


def test_a_budget_in_steps_keeps_small_subsets_from_starving():
    cfg = TrainConfig(epochs=50, min_steps=300, batch_size=8)
    assert cfg.budget_steps(9) == 300 and cfg.budget_steps(37) == 300 and cfg.budget_steps(184) == 50 * 23
    assert TrainConfig(epochs=3, batch_size=4).budget_steps(10) == 9  # epochs alone: as before


def test_published_errors_sit_next_to_the_models_in_mlearn_reports(synthetic_store):
    source, refs = published("mlearn-Mo")
    assert refs["GAP"] == {"energy_mae_mev_per_atom": 2.24, "forces_mae_mev_per_ang": 90}
    assert "Zuo et al., J. Phys. Chem. A 124, 731 (2020)" in source and refs["MTP"]["energy_mae_mev_per_atom"] == 2.83
    records = [edited(r, lambda d: d["spec"].update(dataset="mlearn-Mo")) for r in Store(synthetic_store).all()]
    summary = " ".join(p for k, p in build_sections(records)[0].parts if k == "text")
    assert "Published potentials trained on the whole training set, test MAE (Zuo et al." in summary
    assert "GAP E 2.24 meV/atom, F 90 meV/Å; MTP E 2.83 meV/atom, F 90 meV/Å" in summary
    assert "Best here at the largest size, test MAE: chgnet finetune on 100 structures (100 %)" in summary
