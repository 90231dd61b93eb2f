"""The run contract (bench/core): typed specs, jobs and records, identities, migration of
stored records, and the boundaries it draws (adapters import only the core; nothing but the
strategy registry knows strategies by name)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from bench import PROJECT_ROOT
from bench.config import SweepConfig
from bench.core import strategies
from bench.core.contract import (
    ContractError,
    DataFiles,
    Job,
    JobPaths,
    Record,
    Result,
    Runtime,
    TrainConfig,
    TrainSpec,
    run_id,
    spec_from_dict,
)
from bench.plan import load_datasets, make_plan
from bench.store import Store
from datasets import DatasetError
from tests.conftest import emt_frames, minimal_record

# the regression baseline as committed before records stored their runtime and spec id, and
# before the protocol's energy weight became 100 (kept here to test the migration)
LEGACY = PROJECT_ROOT / "tests" / "data" / "legacy-regression"


def _spec(**changes) -> TrainSpec:
    base = dict(model="chgnet", family="chgnet", checkpoint="0.3.0", dataset="d", dataset_sha256="0" * 64,
                strategy="finetune", freeze_k=0, e0_policy="refit", train_size=3, train_size_requested=3, seed=0,
                train_config=TrainConfig(epochs=2))
    return TrainSpec(**{**base, **changes})


def test_spec_job_and_result_round_trip_through_json():
    spec = _spec(pool_size=10, train_fraction=0.3)
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    job = Job(spec=spec, run_id="r", runtime=Runtime(device="cpu", packages={"torch": "2.13.0"}), adapter="a:B",
              packages=("torch",), data=DataFiles(pool="p.xyz", test="t.xyz", train=(1, 2), val=(3,)),
              paths=JobPaths(result="r.json", progress="p.jsonl", log="l.log", predictions="p.npz"))
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    result = Result.from_dict({"status": "ok", "metrics": {"forces_rmse_mev_per_ang": 1.5, "per_group": {
        "a": {"forces_rmse_mev_per_ang": 2.0}}}, "curve": [{"epoch": 0}], "newer_field": [1]})
    assert result.metrics.per_group["a"].value("forces_rmse_mev_per_ang") == 2.0
    again = Result.from_dict(result.to_dict())
    assert again == result and again.extra == {"newer_field": [1]}  # kept, written back
    with pytest.raises(ContractError, match="status 'done'"):
        Result(status="done")


def test_additive_fields_keep_the_identity_of_specs_written_without_them():
    spec = _spec()
    assert {"init", "lora", "replay", "pool_size"}.isdisjoint(spec.to_dict())
    assert "stress_weight" not in spec.to_dict()["train_config"]  # at the value its absence meant
    assert spec.to_dict()["train_config"]["energy_weight"] == 100.0  # the protocol's, not the one absence meant
    legacy = _spec(train_config=TrainConfig(epochs=2, energy_weight=1.0))
    assert "energy_weight" not in legacy.to_dict()["train_config"] and legacy.spec_id != spec.spec_id
    # scratch specs said "random weights" by their name alone before they carried `init`
    scratch = spec_from_dict({**_spec().to_dict(), "strategy": "scratch"})
    assert scratch.init == "random" and scratch.is_reference and "init" not in scratch.to_dict()
    assert spec_from_dict({**scratch.to_dict(), "init": "foundation"}).to_dict()["init"] == "foundation"


def test_run_ids_cover_the_runtime():
    spec = _spec()
    cpu = Runtime(device="cpu", packages={"torch": "2.13.0", "chgnet": "0.4.2"})
    assert run_id(spec, cpu) == run_id(spec, Runtime(device="cpu", packages=dict(cpu.packages)))
    assert run_id(spec, cpu) != run_id(spec, dataclasses.replace(cpu, device="cuda:NVIDIA H200"))
    assert run_id(spec, cpu) != run_id(spec, dataclasses.replace(cpu, packages={**cpu.packages, "torch": "2.14.0"}))


def test_records_of_the_earlier_baseline_migrate_and_match_a_plan_of_their_settings():
    """That baseline was stored before records carried their runtime and spec id: each loads,
    its runtime comes from its environment, and its spec id equals today's plan of the same
    settings (its strategies, energy weight 1, batch size 3): the fields added since leave the specs as they were."""
    records = Store(LEGACY).all()
    then = SweepConfig.from_preset("regression", strategies=("zero-shot", "scratch", "finetune",
                                                              "freeze-interactions"), energy_weight=1.0, batch_size=3)
    planned = {run.spec.spec_id for run in make_plan(then).runs}
    assert len(records) == 16 and {r.spec_id for r in records} == planned
    today = {run.spec.spec_id for run in make_plan(SweepConfig.from_preset("regression")).runs}
    assert not today & {r.spec_id for r in records if r.spec.trains}  # the energy weight changed them
    ok = [r for r in records if r.ok]
    assert all(r.runtime.device == "cpu" and "torch" in r.runtime.packages for r in ok)
    assert all("numpy" not in r.runtime.packages for r in ok)  # common packages are not the runtime
    for r in records:
        raw = json.loads((LEGACY / "records" / f"{r.run_id}.json").read_text())
        assert r.spec.to_dict() == raw["spec"] and r.spec_id == raw["run_id"]  # canonical = stored
        assert Record.from_dict(r.to_dict()) == r


def test_store_finds_a_run_by_spec_and_runtime_and_keeps_runs_made_elsewhere(tmp_path):
    store = Store(tmp_path).prepare()
    cpu, gpu = Runtime(device="cpu", packages={"torch": "1"}), Runtime(device="cuda:NVIDIA H200", packages={})
    spec = spec_from_dict(minimal_record()["spec"])
    failed = Record(status="failed", reason="boom", spec=spec, runtime=cpu, run_id=run_id(spec, cpu))
    store.put(failed)
    assert store.find(spec, cpu) == failed and store.find(spec, gpu) is None
    on_gpu = Record(status="ok", spec=spec, runtime=gpu, run_id=run_id(spec, gpu))
    store.put(on_gpu)  # a new record of the spec replaces its earlier failure...
    assert [r.run_id for r in store.all()] == [on_gpu.run_id]
    ok_cpu = dataclasses.replace(failed, status="ok", reason=None)
    store.put(ok_cpu)  # ...but never an ok record made elsewhere
    assert {r.runtime.device for r in Store(tmp_path).all()} == {"cpu", "cuda:NVIDIA H200"}
    legacy = {**minimal_record(run_id="legacy"), "environment": {"device": "cpu", "packages": {"torch": "1",
                                                                                              "numpy": "2"}}}
    del legacy["runtime"]
    (tmp_path / "records" / "legacy.json").write_text(json.dumps(legacy))
    assert Store(tmp_path).prepare().find(spec, cpu).run_id in {ok_cpu.run_id, "legacy"}


def test_two_dataset_files_with_one_stem_are_refused(tmp_path):
    from ase.io import write

    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder / "cu.xyz", emt_frames(6, seed=seed), format="extxyz")
    with pytest.raises(DatasetError, match="two datasets are named 'cu'.*rename one"):
        load_datasets((str(tmp_path / "a" / "cu.xyz"), str(tmp_path / "b" / "cu.xyz")))
    assert list(load_datasets((str(tmp_path / "a" / "cu.xyz"),) * 2)) == ["cu"]  # the same file twice: once


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((PROJECT_ROOT / folder).rglob("*.py"))]


def test_adapters_import_nothing_of_the_orchestrator_but_the_core():
    for path in _python_files("adapters", "datasets"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name == "bench" or name.startswith("bench."):
                    imported = [a.name for a in node.names] if name == "bench" else []
                    assert name.startswith("bench.core") or imported == ["PROJECT_ROOT"], (path, name)


def test_nothing_outside_the_strategy_registry_compares_strategy_names():
    names = {s.name for s in strategies.STRATEGIES}
    registry = PROJECT_ROOT / "bench" / "core" / "strategies.py"
    for path in _python_files("bench", "adapters", "datasets"):
        if path == registry:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                hits = [c.value for c in consts if c.value in names or c.value.startswith("freeze-")]
                assert not hits, f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} compares with {hits}"
            if isinstance(node, ast.Dict):  # a name-keyed table
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                assert not (set(keys) & names), f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} keys {keys}"
