"""Presets: embedded quick/paper, user TOML/YAML files, precedence and clear errors."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.config import SweepConfig, load_preset, preset_names
from bench.plan import make_plan
from bench.registry import UnknownName


def _what(run) -> tuple[str, str]:
    return run.spec.model, run.spec.what if run.spec.kind == "train" else run.spec.kind


def test_quick_is_the_default_and_makes_curves_of_three_sizes_and_two_seeds():
    cfg = SweepConfig.from_preset()
    assert cfg.preset == "quick" and cfg.out == "reports/quick" and cfg.device == "auto"
    plan = make_plan(cfg.override(models="chgnet"))
    finetune = [r for r in plan.runs if _what(r) == ("chgnet", "finetune")]
    assert sorted({(r.spec.train_size, r.spec.seed) for r in finetune}) == [
        (1, 0), (1, 1), (2, 0), (2, 1), (10, 0), (10, 1)]
    assert all(r.spec.pool_size == 10 and r.spec.n_val >= 3 for r in finetune)
    assert [r.spec.kind for r in plan.runs].count("perf") == 1
    # nested subsets of one seed's pool; validation never overlaps training
    by_size = {r.spec.train_size: set(r.train_idx) for r in finetune if r.spec.seed == 0}
    assert by_size[1] < by_size[2] < by_size[10]
    assert not set(finetune[0].val_idx) & by_size[10]


def test_quick_adds_lora_soft_freeze_replay_forgetting_and_a_surrogate():
    plan = make_plan(SweepConfig.from_preset().override(models="m3gnet,chgnet"))
    by = {}
    for run in plan.runs:
        by.setdefault(_what(run), []).append(run)
    for model in ("m3gnet", "chgnet"):  # scratch: whole pool, both seeds; the extra strategies: seed 0
        assert sorted((r.spec.train_size, r.spec.seed) for r in by[(model, "scratch")]) == [(10, 0), (10, 1)]
        for strategy in ("lora", "soft-freeze", "replay"):
            assert [(r.spec.train_size, r.spec.seed) for r in by[(model, strategy)]] == [(10, 0)]
    lora = by[("m3gnet", "lora")][0].spec.to_dict()
    assert lora["lora"] == {"rank": 8, "alpha": 16.0} and lora["freeze_k"] == 5  # all base weights
    soft = by[("m3gnet", "soft-freeze")][0].spec.to_dict()
    assert soft["train_config"]["lr_factors"] == {"embedding": 0.01, "interaction": 0.1, "readout": 1.0}
    assert "lr_factors" not in soft  # once, in the training settings
    replay = by[("m3gnet", "replay")][0]
    assert replay.spec.replay.dataset == "mlearn-Si" and len(replay.replay_idx) == 3  # ceil(0.3 * 10)
    seed1 = make_plan(SweepConfig.from_preset().override(models="m3gnet", seeds=(1,), seeds_by_strategy={}))
    assert next(r for r in seed1.runs if _what(r) == ("m3gnet", "replay")).replay_idx != replay.replay_idx
    assert max(replay.replay_idx) < len(plan.other.pool)
    # forgetting on every foundation start that trains, never from random weights or untrained
    train = [r.spec for r in plan.runs if r.spec.kind == "train"]
    assert all(s.forgetting.n_structures == 2 for s in train if s.trains and s.from_foundation)
    assert not any(s.forgetting for s in train if not (s.trains and s.from_foundation))
    # the other strategies keep their spec fields (and so their ids) unchanged
    finetune = by[("m3gnet", "finetune")][0].spec.to_dict()
    assert not {"lora", "lr_factors", "replay", "init"} & set(finetune)
    assert "lr_factors" not in finetune["train_config"]
    (surrogate,) = by[("m3gnet", "surrogate")]
    assert surrogate.spec.teacher_strategy == "freeze-interactions" and surrogate.spec.train_size == 10
    assert surrogate.spec.student["architecture"]["units"] == 32 and ("chgnet", "surrogate") not in by
    whole = next(r for r in by[("m3gnet", "finetune")] if r.spec.seed == 0 and r.spec.train_size == 10)
    assert set(surrogate.train_idx) == set(whole.train_idx)  # seed 0, whole pool
    kinds = [r.spec.kind for r in plan.runs if r.spec.model == "m3gnet"]
    assert kinds[0] == "surrogate" and kinds[-1] == "perf"  # longest first, timing job last


def test_paper_preset_covers_both_datasets_sizes_seeds_and_frozen_levels():
    cfg = SweepConfig.from_preset("paper")
    assert cfg.datasets == ("snap-NbMoTaW", "oc20-traj") and cfg.seeds == (0, 1, 2)
    assert cfg.sizes == (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0)
    assert {"freeze-embedding", "freeze-interactions", "scratch", "zero-shot"} <= set(cfg.strategies)
    assert set(preset_names()) >= {"quick", "paper", "regression"}


def test_flags_override_the_preset(tmp_path):
    cfg = SweepConfig.from_preset("quick", epochs=9, seeds=(3,), models=None)
    assert (cfg.epochs, cfg.seeds, cfg.models) == (9, (3,), "all")


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_user_preset_files(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    if suffix == ".toml":
        path.write_text('[sweep]\nmodels = "m3gnet"\nsizes = ["25%", 8]\nseeds = [4]\n[headline]\ntolerance = 0.2\n')
    else:
        path.write_text("sweep:\n  models: m3gnet\n  sizes: ['25%', 8]\n  seeds: [4]\nheadline:\n  tolerance: 0.2\n")
    cfg = SweepConfig.from_preset(str(path))
    assert (cfg.models, cfg.sizes, cfg.seeds, cfg.headline) == ("m3gnet", (0.25, 8), (4,), {"tolerance": 0.2})
    assert cfg.out == "reports/mine" and cfg.epochs == SweepConfig().epochs


@pytest.mark.parametrize(("text", "message"), [
    ('[sweep]\nepoch = 3\n', "unknown setting(s) ['epoch']. Did you mean 'epochs'"),
    ('[sweep\nepochs = 3\n', "not valid TOML"),
    ('[sweep]\nepochs = 0\n', "at least 1 epoch"),
    ('[sweep]\ndevice = "gpu"\n', "--device 'gpu'"),
    ('[sweep]\nstrategies = ["replay"]\n', "replay needs replay_dataset"),
    ('[sweep]\nstrategies = ["lora"]\n[sweep.sizes_by_strategy]\nlorra = [1]\n',
     "unknown strategies ['lorra']. Did you mean 'lora'"),
    ('[sweep]\nlora_rank = 0\n', "need rank >= 1"),
    ('[sweep]\n[sweep.seeds_by_strategy]\nfinetune = 0\n', "the number of seeds (the first N of seeds), >= 1"),
    ('[sweep]\nlr_factors = { embeding = 0.1 }\n', "keys embedding/interaction/readout"),
    ('[surrogate]\nstudent_epoch = 3\n', "Did you mean 'student_epochs'"),
])
def test_bad_preset_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        SweepConfig.from_preset(str(path))
    assert message in str(exc.value)


def test_unknown_or_missing_presets(tmp_path, capsys):
    with pytest.raises(UnknownName, match="Did you mean 'quick'"):
        load_preset("quik")
    assert main(["run", "--preset", str(tmp_path / "none.toml"), "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_quick_computes_properties_for_zero_shot_and_each_strategy_s_largest_size():
    from bench.runner import _wants_properties

    cfg = SweepConfig.from_preset().override(models="m3gnet")
    wanted = {(r.spec.strategy, r.spec.train_size): _wants_properties(r.spec, cfg)
              for r in make_plan(cfg).runs if r.spec.kind == "train"}
    assert wanted[("zero-shot", 0)] and wanted[("finetune", 10)] and wanted[("lora", 10)]
    assert not wanted[("finetune", 1)] and not wanted[("freeze-interactions", 2)]
    assert all(_wants_properties(r.spec, cfg.override(properties="all")) for r in make_plan(cfg).runs
               if r.spec.kind == "train")
