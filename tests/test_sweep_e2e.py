"""End-to-end sweeps through the CLI, real CHGNet workers in their own environment.

The orchestrator runs here without torch; it builds (or reuses) .venvs/chgnet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = ["--preset", str(ROOT / "tests" / "presets" / "tiny.toml")]  # not `quick`: it grows
TINY = [*BASE, "--models", "chgnet", "--sizes", "2", "--seeds", "0", "--epochs", "1", "--batch-size", "2",
        "--threads", "2", "--perf-structures", "0"]


def bench(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, check=check, **kw)


def records(out: Path) -> dict[str, dict]:
    """Records by ``model/strategy`` for training runs, ``model/kind`` for the other jobs (an MD
    job's spec names the strategy of the run whose model it loads)."""
    recs = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    return {f"{r['spec']['model']}/{r['spec']['strategy'] if r['spec']['kind'] == 'train' else r['spec']['kind']}": r
            for r in recs}


def test_sweep_writes_records_and_a_report_from_them(tmp_path):
    out = tmp_path / "res"
    proc = bench("run", *TINY, "--models", "chgnet,mace", "--perf-structures", "3",
                 "--strategies", "zero-shot,scratch,freeze-interactions", "--out", str(out))
    recs = records(out)
    assert {k: r["status"] for k, r in recs.items()} == {
        "chgnet/perf": "ok", "chgnet/zero-shot": "ok", "chgnet/scratch": "ok",
        "chgnet/freeze-interactions": "ok", "mace/perf": "ok", "mace/zero-shot": "skipped",
        "mace/scratch": "ok", "mace/freeze-interactions": "skipped"}
    # the timing job: batched predict and the library's own ASE calculator agree
    for key in ("chgnet/perf", "mace/perf"):
        t = recs[key]["timing"]
        assert t["n_structures"] == 3 and t["speedup_vs_ase_calculator"] > 0
        assert t["max_energy_diff_mev_per_atom"] < 1 and t["max_force_diff_mev_per_ang"] < 5
        assert t["reference_workload_s"] > 0
    assert recs["mace/perf"]["model_source"].startswith("random init")  # no MACE-MP-0 here
    assert recs["chgnet/scratch"]["environment"]["device"] == "cpu"  # --device auto, no GPU
    # MACE-MP-0 cannot be downloaded here: the foundation runs say how to supply it
    reason = recs["mace/zero-shot"]["reason"]
    assert "not cached at" in reason and "--checkpoint PATH" in reason
    assert recs["mace/scratch"]["parameters"]["total"] == 3_847_696  # MACE-MP-0 small shape
    frozen = recs["chgnet/freeze-interactions"]
    assert frozen["parameters"]["trainable"] < recs["chgnet/scratch"]["parameters"]["trainable"]
    assert [row["epoch"] for row in frozen["curve"]] == [0, 1]  # 0: the starting model
    assert frozen["timing"]["step_s_per_structure"] > 0 and frozen["timing"]["warmup_step_s"] > 0
    # what the sweep set out to run: every record's spec (so a report of a partial sweep says so)
    assert set(json.loads((out / "planned.json").read_text())["specs"]) == {r["spec_id"] for r in recs.values()}
    assert frozen["environment"]["packages"]["chgnet"] == "0.4.2"
    assert frozen["resolved_train_config"]["forces_weight"] == 1.0
    assert frozen["resolved_train_config"]["epochs"] == frozen["spec"]["train_config"]["epochs"] == 1
    assert set(frozen["metrics"]["per_group"]) == {"AIMD-NVT", "Elastic", "Surface", "Vacancy"}
    report = (out / "report.md").read_text()
    for rec in recs.values():
        if rec["status"] == "ok" and rec["spec"]["kind"] == "train":
            assert f"{rec['metrics']['forces_rmse_mev_per_ang']:,.1f}" in report
    assert "## Performance targets" in report and "batched predict vs ASE calculator (3 mlearn-Mo" in report
    assert "is unreachable" in report or "not cached at" in report
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "epoch 1/1" in proc.stderr


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    out = tmp_path / "res"
    args = ["run", *TINY, "--strategies", "zero-shot,finetune,freeze-embedding", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(out.glob("records/*.json")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # orchestrator and its worker, mid-sweep
    proc.wait()
    first = {p.name: p.read_text() for p in (out / "records").glob("*.json")}
    assert len(first) < 3
    time.sleep(1)
    assert not list((out / "records").glob(".*tmp"))
    done = bench(*args)
    assert done.stderr.count("ok (stored)") == len(first)
    final = {p.name: p.read_text() for p in (out / "records").glob("*.json")}
    assert len(final) == 3 and all(final[name] == text for name, text in first.items())
    assert all(json.loads(t)["status"] == "ok" for t in final.values())


def test_worker_timeout_becomes_a_failed_record_and_the_sweep_continues(tmp_path):
    out = tmp_path / "res"
    bench("run", *TINY, "--strategies", "finetune,freeze-interactions", "--run-timeout", "2",
          "--out", str(out))
    recs = records(out)
    assert [r["status"] for r in recs.values()] == ["failed", "failed"]
    assert all("timed out after 2 s" in r["reason"] for r in recs.values())
    assert "Failed, skipped and diverged runs" in (out / "report.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "chgnt"], "Did you mean 'chgnet'"),
    (["--strategies", "freeze-embeding"], "Did you mean 'freeze-embedding'"),
    (["--dataset", "snap-NbMoTa"], "Did you mean 'snap-NbMoTaW'"),
    (["--sizes", "500"], "training size 500 is impossible"),
    (["--epochs", "0"], "at least 1 epoch"),
])
def test_bad_arguments_fail_fast_with_a_suggestion(tmp_path, args, message):
    proc = bench("run", *BASE, "--dry-run", "--out", str(tmp_path), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr


def test_missing_checkpoint_is_skipped_with_how_to_supply_it(tmp_path):
    out = tmp_path / "res"
    bench("run", *TINY, "--strategies", "zero-shot", "--checkpoint", str(tmp_path / "nope.pth.tar"),
          "--out", str(out))
    (rec,) = records(out).values()
    assert rec["status"] == "skipped"
    assert "nope.pth.tar" in rec["reason"] and "--checkpoint PATH" in rec["reason"]


def test_mace_foundation_runs_when_a_checkpoint_file_is_supplied(tmp_path):
    from bench import envs
    from bench.registry import get_model

    python = envs.ensure(get_model("mace"), log=lambda _: None).python
    made = subprocess.run([str(python), "tests/families/mace_standin.py", str(tmp_path / "mace")],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    model = made.stdout.strip().splitlines()[-1]
    out = tmp_path / "res"
    bench("run", *TINY, "--models", "mace", "--strategies", "zero-shot,freeze-interactions",
          "--checkpoint", f"mace={model}", "--out", str(out))
    recs = records(out)
    assert {k: r["status"] for k, r in recs.items()} == {"mace/zero-shot": "ok",
                                                         "mace/freeze-interactions": "ok"}
    frozen = recs["mace/freeze-interactions"]
    assert frozen["spec"]["checkpoint"] == model and frozen["spec"]["freeze_k"] == 5
    assert 0 < frozen["parameters"]["trainable"] < frozen["parameters"]["total"]
    assert "mace --freeze 6" in (out / "report.md").read_text()


def test_exploding_training_is_recorded_as_diverged(tmp_path):
    out = tmp_path / "res"
    bench("run", *TINY, "--strategies", "finetune", "--lr", "1e6", "--epochs", "3", "--out", str(out))
    (rec,) = records(out).values()
    assert rec["status"] == "diverged" and rec["diverged_epoch"] >= 1
    assert "loss diverged at epoch" in rec["reason"]


def test_extxyz_dataset_without_stress_runs_end_to_end(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from tests.conftest import emt_frames

    frames = emt_frames(14)
    for atoms in frames:  # energy and forces only, like OC20
        res = atoms.calc.results
        atoms.calc = SinglePointCalculator(atoms, energy=res["energy"], forces=res["forces"])
    path = tmp_path / "cu_emt.xyz"
    write(path, frames, format="extxyz")
    out = tmp_path / "res"
    bench("run", *TINY, "--dataset", str(path), "--strategies", "zero-shot,freeze-interactions",
          "--sizes", "3", "--out", str(out))
    recs = records(out)
    assert [r["status"] for r in recs.values()] == ["ok", "ok"]
    for rec in recs.values():
        assert rec["spec"]["dataset"] == "cu_emt" and rec["metrics"]["stress_rmse_gpa"] is None
        assert set(rec["metrics"]["per_group"]) <= {"even", "odd"}
    assert recs["chgnet/freeze-interactions"]["timing"]["test_predict_s"] > 0


def test_elements_a_foundation_does_not_cover_skip_that_family_with_the_list(tmp_path):
    from ase.io import write

    from tests.conftest import emt_frames

    frames = emt_frames(8)
    for atoms in frames[::2]:  # radon: in no materials foundation model's training set
        atoms.symbols[0] = "Rn"
    path = tmp_path / "with_rn.xyz"
    write(path, frames, format="extxyz")
    out = tmp_path / "res"
    bench("run", *TINY, "--models", "m3gnet", "--dataset", str(path), "--strategies", "zero-shot,finetune",
          "--pool-size", "0", "--val-size", "1", "--out", str(out))
    recs = records(out)
    assert {k: r["status"] for k, r in recs.items()} == {"m3gnet/zero-shot": "skipped", "m3gnet/finetune": "skipped"}
    assert "does not cover: Rn" in recs["m3gnet/zero-shot"]["reason"]
    assert "does not cover: Rn" in (out / "report.md").read_text()


def test_own_slabs_clusters_and_mace_keys_run_end_to_end_with_a_capped_test_set(tmp_path):
    """Issue 15's cases through a real M3GNet worker: Cu(111) slabs (pbc [T, T, F]), Cu4
    clusters without a cell and bulk cells, labelled by EMT under MACE's keys, test set capped:
    every run ok, the keys and the cap in every spec, stress scored on the bulk cells only."""
    from ase import Atoms
    from ase.build import bulk, fcc111
    from ase.calculators.emt import EMT
    from ase.io import write

    frames = []
    for i in range(18):
        if i % 3 == 0:
            atoms = fcc111("Cu", size=(2, 2, 2), vacuum=6.0)
            del atoms.info["adsorbate_info"]
        elif i % 3 == 1:
            atoms = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [1.25, 2.1, 0], [1.25, 0.7, 2.0]])
        else:
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=i)
        atoms.calc = EMT()
        atoms.info.update(REF_energy=atoms.get_potential_energy(), config_type=["slab", "cluster", "bulk"][i % 3])
        atoms.arrays["REF_forces"] = atoms.get_forces()
        if atoms.pbc.all():
            atoms.info["REF_stress"] = atoms.get_stress(voigt=False)
        atoms.calc = None
        frames.append(atoms)
    path = tmp_path / "own.xyz"
    write(path, frames, format="extxyz")
    out = tmp_path / "res"
    run = bench("run", *TINY, "--models", "m3gnet", "--threads", "1", "--dataset", str(path), "--strategies",
                "zero-shot,freeze-interactions", "--sizes", "3", "--test-size", "3", "--pool-size", "0",
                "--out", str(out))
    assert "labels read as energy: info[REF_energy] (MACE convention)" in run.stderr
    assert "test set capped to 3 of 4 frames" in run.stderr
    recs = records(out)
    assert [r["status"] for r in recs.values()] == ["ok", "ok"], [r["reason"] for r in recs.values()]
    for rec in recs.values():
        spec = rec["spec"]
        assert spec["labels"] == {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress",
                                  "group": "config_type"}
        assert spec["test_size"] == 3 and spec["periodicity"] and rec["metrics"]["n_structures"] == 3
        groups = rec["metrics"]["per_group"]
        assert set(groups) == {"slab", "cluster", "bulk"}  # the capped test set (fixed) holds each kind
        assert groups["slab"]["stress_rmse_gpa"] is groups["cluster"]["stress_rmse_gpa"] is None
        assert groups["bulk"]["stress_rmse_gpa"] == rec["metrics"]["stress_rmse_gpa"] > 0
        assert rec["metrics"]["forces_rmse_mev_per_ang"] < 300  # EMT vs M3GNet, not a molecule-sized error


EXTRAS = """
[sweep]
models = "m3gnet"
dataset = "mlearn-Mo"
pool_size = 5
val_size = 2
sizes = ["100%"]
strategies = ["zero-shot", "finetune", "lora", "soft-freeze", "replay"]
seeds = [0]
epochs = 2
threads = 2
replay_dataset = "mlearn-Si"
forgetting_size = 2
lr_factors = { embedding = 0.0 }

[surrogate]
model = "m3gnet"
rattle_copies = 1
md_structures = 1
md_steps = 4
md_every = 2
student_epochs = 2
speed_structures = 2
"""


def test_lora_soft_freeze_replay_surrogate_and_properties_end_to_end(tmp_path):
    """The extra strategies, forgetting, property benchmarks and a distilled student, through
    real M3GNet workers, into records and the report."""
    preset = tmp_path / "extras.toml"
    preset.write_text(EXTRAS)
    out = tmp_path / "res"
    bench("run", "--preset", str(preset), "--out", str(out))
    recs = records(out)
    assert {k: r["status"] for k, r in recs.items()} == {
        f"m3gnet/{s}": "ok" for s in ("zero-shot", "finetune", "lora", "soft-freeze", "replay", "surrogate")}
    surrogate = recs.pop("m3gnet/surrogate")
    lora, soft, replay = recs["m3gnet/lora"], recs["m3gnet/soft-freeze"], recs["m3gnet/replay"]
    # LoRA: only the adapters trained, merged back into the plain model without changing it
    assert lora["lora"]["adapted_matrices"] > 10 and lora["lora"]["merge_max_abs_de_mev"] < 0.01
    assert lora["parameters"]["total"] == recs["m3gnet/finetune"]["parameters"]["total"]
    assert 0 < lora["parameters"]["trainable"] < lora["parameters"]["total"] / 5
    # soft freeze: factor 0 for the embedding freezes it (fewer trainable than finetune)
    assert soft["resolved_train_config"]["lr_factors"]["embedding"] == 0.0
    # replay: ceil(0.5 x n training structures) foundation-labelled Si structures
    assert replay["replay_structures"] == -(-replay["spec"]["train_size"] // 2)
    assert replay["spec"]["replay"]["dataset"] == "mlearn-Si"
    # forgetting: the same foundation before every strategy; training moved it
    befores = [r["forgetting"]["dft_before"] for r in (lora, soft, replay, recs["m3gnet/finetune"])]
    assert all(b == pytest.approx(befores[0], rel=1e-6) for b in befores[1:])  # threads: last digits
    assert recs["m3gnet/finetune"]["forgetting"]["drift_forces_rmse_mev_per_ang"] > 0
    assert "forgetting" not in recs["m3gnet/zero-shot"]
    # properties: Mo elastic constants, DFT from the same strained cells
    for rec in recs.values():
        if rec["spec"]["kind"] == "train":
            mo = rec["properties"]["elastic"]["Mo"]
            assert 420 < mo["dft"]["C11_gpa"] < 500 and np.isfinite(mo["model"]["C44_gpa"])
    # surrogate: labelled pool + rattled + MD, a much smaller student, speeds measured together
    s = surrogate["surrogate"]
    assert s["student"]["n_labelled"] == s["student"]["n_pool"] + s["student"]["n_rattled"] + s["student"]["n_md"]
    n = surrogate["spec"]["train_size"]  # 1 rattled copy each; 4 MD steps, a snapshot every 2
    assert (s["student"]["n_pool"], s["student"]["n_rattled"], s["student"]["n_md"]) == (n, n, 2)
    assert s["student"]["parameters"]["total"] < s["teacher"]["parameters"]["total"] / 5
    assert s["speed"]["speedup_vs_teacher"] == pytest.approx(
        s["speed"]["student_atoms_per_s"] / s["speed"]["teacher_atoms_per_s"])
    assert surrogate["metrics"]["forces_rmse_mev_per_ang"] == s["student"]["metrics"]["forces_rmse_mev_per_ang"]
    report = (out / "report.md").read_text()
    for section in ("## Physical properties", "## Forgetting", "## Surrogate distillation"):
        assert section in report


def test_zero_shot_e0_refits_and_step_budgets_through_real_workers(tmp_path):
    """zero-shot-e0 records come from the zero-shot run's predictions (forces identical, energies
    refit per training subset); --min-steps gives a 1-structure subset as many steps as a larger
    one; every trained record says why it stopped; a rerun reuses all of it."""
    out = tmp_path / "res"
    args = ["run", *BASE, "--models", "m3gnet", "--strategies", "zero-shot,zero-shot-e0,finetune", "--sizes", "1,3",
            "--seeds", "0", "--epochs", "1", "--min-steps", "3", "--batch-size", "2", "--pool-size", "4",
            "--val-size", "2", "--perf-structures", "0", "--threads", "2", "--out", str(out)]
    bench(*args)
    recs = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(recs) == 5 and {r["status"] for r in recs} == {"ok"}
    zero = next(r for r in recs if r["spec"]["strategy"] == "zero-shot")
    refits = [r for r in recs if r["spec"]["strategy"] == "zero-shot-e0"]
    assert sorted(r["spec"]["train_size"] for r in refits) == [1, 3]
    for r in refits:
        assert r["metrics"]["forces_rmse_mev_per_ang"] == zero["metrics"]["forces_rmse_mev_per_ang"]
        assert r["metrics"]["energy_rmse_mev_per_atom"] != zero["metrics"]["energy_rmse_mev_per_atom"]
        assert set(r["reference_energies_ev"]) == {"42"} and r["runtime"] == zero["runtime"]
    for r in (r for r in recs if r["spec"]["strategy"] == "finetune"):
        c = r["convergence"]
        assert c["steps_run"] == 3 and c["stopped"] == "budget" and c["plateau"] is False, c
        assert r["resolved_train_config"]["energy_weight"] == 100.0
    again = bench(*args)
    assert again.stderr.count("ok (stored)") == 3  # the zero-shot run (with its refits) and 2 finetune runs
    assert len(list((out / "records").glob("*.json"))) == 5
    report = (out / "report.md").read_text()
    assert "no data-efficiency claim" in report or "no scratch reference" in report


def test_saved_models_export_reload_and_md_end_to_end(tmp_path):
    """A sweep that saved nothing has no model to export, and says how to get one; rerun with
    --save-models best, it trains its best run again (by validation force RMSE) and keeps only
    that model; `bench export` copies it and chgnet's own loader reads the copy in a fresh
    process (no ftbench) and predicts the test set as the run did; --save-models all trains the
    other run again for its model; --md best runs MD on the best model and the report shows it."""
    preset = tmp_path / "short-md.toml"  # tiny, with MD runs of a few steps
    preset.write_text((ROOT / "tests" / "presets" / "tiny.toml").read_text()
                      + "\n[md]\nlangevin_ps = 0.02\nnve_ps = 0.01\n[md.dimer]\npoints = 5\n")
    out = tmp_path / "res"
    args = ["run", "--preset", str(preset), "--models", "chgnet", "--sizes", "2", "--seeds", "0", "--epochs", "1",
            "--batch-size", "2", "--threads", "2", "--perf-structures", "0",
            "--strategies", "zero-shot,finetune,freeze-interactions", "--out", str(out)]
    bench(*args)
    refused = bench("export", str(out), "best", check=False)
    assert refused.returncode == 1 and "has no saved model: its sweep did not save it" in refused.stderr
    assert "with --save-models best (and the same --out)" in refused.stderr

    proc = bench(*args, "--save-models", "best")
    assert "training again 1 best run(s) whose model is not saved" in proc.stderr
    recs = records(out)
    trained = {k: r for k, r in recs.items() if k in ("chgnet/finetune", "chgnet/freeze-interactions")}
    best = min(trained.values(), key=lambda r: r["convergence"]["val_forces_best_mev_per_ang"])
    other = next(r for r in trained.values() if r is not best)
    art = best["artefacts"]["model"]
    assert art["format"] == "chgnet-file" and art["path"] == f"models/{best['run_id']}/chgnet.pth.tar"
    assert (out / art["path"]).stat().st_size == art["bytes"] > 1e6 and len(art["sha256"]) == 64
    assert "model" not in other["artefacts"] and "model" not in recs["chgnet/zero-shot"].get("artefacts", {})

    exported = bench("export", str(out), "best", "--to", str(tmp_path / "exp"))
    copy = next((tmp_path / "exp").glob("*.pth.tar"))
    assert f"CHGNetCalculator(model=chgnet.model.CHGNet.from_file({copy}))" in exported.stdout
    test_xyz = next((out / "data").glob("mlearn-Mo-*/test.xyz"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(ROOT / ".venvs" / "chgnet" / "bin" / "python"),
                    str(ROOT / "tests" / "families" / "native_reload.py"), "chgnet", str(copy), str(test_xyz),
                    str(tmp_path / "reloaded.npz")], cwd=tmp_path, env=env, check=True, capture_output=True)
    got, run = np.load(tmp_path / "reloaded.npz"), np.load(out / "predictions" / f"{best['run_id']}.npz")
    n = run["pred_n_atoms"]
    np.testing.assert_allclose(got["energy"] / n, run["pred_energy"] / n, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["forces"], run["pred_forces"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got["stress"], run["pred_stress"], rtol=0, atol=1e-5)

    proc = bench(*args, "--save-models", "all", "--md", "best")
    assert "1 stored run(s) lack a saved model: they are trained again (--save-models all)" in proc.stderr
    recs = records(out)
    assert all("model" in recs[k]["artefacts"] for k in trained)
    best = min((recs[k] for k in trained), key=lambda r: r["convergence"]["val_forces_best_mev_per_ang"])
    md = recs["chgnet/md"]
    assert md["status"] == "ok" and md["spec"]["model_run"] == best["run_id"]
    assert set(json.loads((out / "planned.json").read_text())["specs"]) == {r["spec_id"] for r in recs.values()}
    assert md["spec"]["model_sha256"] == best["artefacts"]["model"]["sha256"]
    assert md["spec"]["temperatures_k"] == [300.0, 6000.0]  # the catalog's for mlearn-Mo
    runs = md["md"]["runs"]
    assert set(runs) == {"300", "6000"}
    assert all(r["langevin_steps"] == 10 and r["nve_steps"] == 5 for r in runs.values())
    assert all(r["verdict"] == "stable" or r["verdict"].startswith(("blew up at", "drifts:")) for r in runs.values())
    assert set(md["md"]["dimers"]) == {"Mo"} and md["md"]["d_data_ang"] == pytest.approx(1.883, abs=1e-3)
    report = (out / "report.md").read_text()
    assert "## Saved models and MD stability" in report and f"| {runs['300']['verdict']} |" in report
