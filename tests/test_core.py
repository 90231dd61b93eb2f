"""Registry, store, metrics and the no-torch rule of the orchestrator."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.core.contract import Record
from bench.core.metrics import error_metrics
from bench.core.util import digest
from bench.registry import UnknownName, get_model, resolve_models, resolve_strategy
from bench.store import Store, StoreError
from tests.conftest import minimal_record

HEAVY = ("torch", "chgnet", "mace", "matgl", "sevenn", "e3nn", "pymatgen")


def test_orchestrator_imports_no_model_library_or_torch():
    code = (
        "import sys, bench.cli, bench.runner, bench.report, bench.envs, bench.compare, bench.api, bench.gpu_check\n"
        "import bench.check_data, bench.summary, bench.validity, bench.lr_grid, bench.saved, bench.saved_report\n"
        "from bench.plan import make_plan\nfrom bench.config import SweepConfig\n"
        "plan = make_plan(SweepConfig.from_preset('quick'))\n"
        "bench.cli.main(['list', 'models'])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\nprint(len(plan.runs))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) == 77  # the quick plan, surrogate job included


def test_strategies_resolve_per_family_block_layout():
    chgnet = get_model("chgnet")
    assert resolve_strategy("freeze-embedding", chgnet).freeze_k == 1
    assert resolve_strategy("freeze-interactions", chgnet).freeze_k == 5
    assert resolve_strategy("freeze-3", chgnet).freeze_k == 3
    assert resolve_strategy("zero-shot", chgnet).freeze_k is None
    assert resolve_strategy("scratch", chgnet).init == "random"
    with pytest.raises(UnknownName, match="freezing all 6 leaves nothing to train"):
        resolve_strategy("freeze-6", chgnet)
    with pytest.raises(UnknownName, match="Did you mean 'finetune'"):
        resolve_strategy("fintune", chgnet)
    with pytest.raises(UnknownName, match="Did you mean 'sevennet'"):
        resolve_models("sevenet")
    assert [m.key for m in resolve_models("all")] == ["chgnet", "mace", "m3gnet", "sevennet"]


def test_hash_is_stable_and_sensitive():
    spec = {"model": "chgnet", "seed": 0, "train_config": {"lr": 1e-3, "epochs": 5}}
    same = {"train_config": {"epochs": 5, "lr": 1e-3}, "seed": 0, "model": "chgnet"}
    assert digest(spec) == digest(same)
    assert digest(spec) != digest({**spec, "seed": 1})


def test_store_round_trip_and_refuses_other_schema_versions(tmp_path):
    store = Store(tmp_path).prepare()
    rec = Record.from_dict(minimal_record())
    store.put(rec)
    assert store.get("abc") == rec and not list(tmp_path.glob("records/.*tmp"))
    with pytest.raises(ValueError, match="status 'done'"):
        Record.from_dict({**minimal_record(), "status": "done"})
    (tmp_path / "records" / "old.json").write_text(json.dumps(minimal_record(version=0)))
    with pytest.raises(StoreError, match="schema version 0"):
        store.all()
    (tmp_path / "store.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path).prepare()


def test_metrics_units_and_groups():
    rng = np.random.default_rng(0)
    n_atoms = np.array([2, 3])
    ref = {"energy": np.array([-10.0, -15.0]), "forces": rng.normal(size=(5, 3)),
           "stress": np.zeros((2, 6)), "n_atoms": n_atoms}
    pred = {**ref, "energy": ref["energy"] + np.array([0.02, -0.03]),  # 10 meV/atom each
            "forces": ref["forces"] + 0.1, "stress": np.full((2, 6), 0.01)}
    m = error_metrics(pred, ref, ["a", "b"])
    assert m["energy_rmse_mev_per_atom"] == pytest.approx(10.0)
    assert m["forces_mae_mev_per_ang"] == pytest.approx(100.0)
    assert m["stress_rmse_gpa"] == pytest.approx(1.6021766208)
    assert m["per_group"]["b"]["n_atoms"] == 3
    with pytest.raises(ValueError, match="forces"):
        error_metrics({**pred, "forces": pred["forces"][:4]}, ref)
