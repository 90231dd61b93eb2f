"""Shared fixtures: small labelled structures (EMT labels) and helpers."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_frames(n: int, seed: int = 0, symbol: str = "Cu") -> list:
    """Rattled fcc cells labelled by ASE's EMT (energy, forces, stress in ASE units)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk(symbol, "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["group"] = "even" if i % 2 == 0 else "odd"
        frames.append(atoms)
    return frames


@pytest.fixture
def emt_xyz(tmp_path):
    from ase.io import write

    path = tmp_path / "emt.xyz"
    write(path, emt_frames(12), format="extxyz")
    return path


# Synthetic results store: test RMSEs are exact by construction (errors scaled to the
# target RMSE), so report and headline tests assert on known numbers.
SYNTH_POOL, SYNTH_SIZES, SYNTH_SEEDS = 100, (5, 20, 100), (0, 1)
SYNTH_SEED_FACTOR = {0: 0.98, 1: 1.02}  # seed spread; the mean over seeds is the design value
SYNTH_TEST = (30, 8, 25)  # test structures, atoms each, groups
# (model, strategy) -> (forces meV/Å, energy meV/atom) per size; zero-shot: one value
SYNTH_DESIGN = {
    ("chgnet", "zero-shot"): ((300,), (50,)),
    ("chgnet", "scratch"): ((1000, 400, 100), (200, 60, 10)),
    ("chgnet", "finetune"): ((150, 108, 95), (30, 10.5, 5)),
    ("chgnet", "freeze-interactions"): ((200, 160, 140), (40, 20, 5.5)),
    ("m3gnet", "zero-shot"): ((250,), (40,)),
    ("m3gnet", "scratch"): ((900, 300, 80), (150, 50, 12)),
    ("m3gnet", "finetune"): ((200, 150, 100), (35, 20, 14)),
    ("m3gnet", "freeze-interactions"): ((120, 85, 70), (25, 15, 13)),
}
SYNTH_STEP_S = {"scratch": 0.02, "finetune": 0.02, "freeze-interactions": 0.008}
SYNTH_CHECKPOINT = {"chgnet": "0.3.0", "m3gnet": "M3GNet-MatPES-PBE-v2025.1-PES"}


def _scaled(rng, shape, rmse_ev):
    x = rng.standard_normal(shape)
    return x * rmse_ev / np.sqrt(np.mean(x**2))


def synth_val_curve(final_f: float, epoch_s: float) -> list[dict]:
    """Validation force RMSE falling geometrically from 3× to ``final_f`` over 4 epochs."""
    return [{"epoch": e, "elapsed_s": e * epoch_s, "epoch_s": epoch_s if e else 0.0,
             "data_s": 0.01 * epoch_s if e else 0.0,
             "val_forces_rmse_mev_per_ang": 3 * final_f * (1 / 3) ** (e / 4),
             "val_energy_rmse_mev_per_atom": None} for e in range(5)]


def write_synthetic_store(root):
    import json

    from bench.metrics import error_metrics
    from bench.store import SCHEMA_VERSION, Store, run_id

    store = Store(root).prepare()
    n_test, n_at, n_groups = SYNTH_TEST
    rng = np.random.default_rng(0)
    ref = {"energy": rng.normal(-8 * n_at, 1, n_test), "forces": rng.normal(0, 1, (n_test * n_at, 3)),
           "stress": rng.normal(0, 0.01, (n_test, 6)), "n_atoms": np.full(n_test, n_at)}
    groups = [f"traj-{i % n_groups:03d}" for i in range(n_test)]

    def put(spec, status="ok", reason=None, forces=None, energy=None, timing=None, curve=None):
        spec = {"schema_version": SCHEMA_VERSION, "kind": "train", "dataset": "synth",
                "family": spec["model"], "checkpoint": SYNTH_CHECKPOINT[spec["model"]], **spec}
        rid = run_id(spec)
        rec = {"schema_version": SCHEMA_VERSION, "run_id": rid, "spec": spec, "status": status,
               "reason": reason, "provenance": {"commit": "abc1234def", "dirty": False, "hostname": "synth"}}
        if status == "ok":
            e_err = _scaled(rng, n_test, energy / 1000)
            pred = {"energy": ref["energy"] + e_err * n_at, "forces": ref["forces"] + _scaled(
                rng, ref["forces"].shape, forces / 1000), "stress": ref["stress"] + _scaled(
                rng, (n_test, 6), 0.5 / 160.21766208), "n_atoms": ref["n_atoms"]}
            np.savez_compressed(root / "predictions" / f"{rid}.npz", groups=np.array(groups),
                                **{f"pred_{k}": v for k, v in pred.items()}, **{f"ref_{k}": v for k, v in ref.items()})
            rec.update(metrics=error_metrics(pred, ref, groups), timing=timing, curve=curve,
                       artefacts={"predictions": f"predictions/{rid}.npz"},
                       parameters={"trainable": 1000 if spec["freeze_k"] != 5 else 100, "total": 1000},
                       blocks=[{"name": f"block-{i}", "kind": "interaction", "n_params": 100} for i in range(6)],
                       environment={"packages": {spec["model"]: "1.0"}, "device": "cpu", "threads": 2,
                                    "cpu": "synthetic"})
        (store.records / f"{rid}.json").write_text(json.dumps(rec))

    for (model, strategy), (fs, es) in SYNTH_DESIGN.items():
        if strategy == "zero-shot":
            put({"model": model, "strategy": strategy, "freeze_k": None, "e0_policy": "foundation",
                 "train_size": 0, "seed": 0, "train_config": None}, forces=fs[0], energy=es[0],
                timing={"load_s": 1.0, "inference_atoms_per_s": 1000.0 if model == "chgnet" else 400.0,
                        "peak_rss_mb": 900.0})
            continue
        for size, f, e in zip(SYNTH_SIZES, fs, es, strict=True):
            for seed in SYNTH_SEEDS:
                k = SYNTH_SEED_FACTOR[seed]
                epoch_s = size / 10 * (0.5 if strategy == "freeze-interactions" else 1)
                put({"model": model, "strategy": strategy, "freeze_k": {"scratch": 0, "finetune": 0}.get(strategy, 5),
                     "e0_policy": "refit", "train_size": size, "pool_size": SYNTH_POOL,
                     "train_fraction": size / SYNTH_POOL, "seed": seed, "train_config": {"epochs": 4}},
                    forces=f * k, energy=e * k, curve=synth_val_curve(f * k, epoch_s),
                    timing={"train_s": 4 * epoch_s, "step_s_per_structure": SYNTH_STEP_S[strategy],
                            "peak_rss_mb": 1000.0 + size + 100 * seed, "best_epoch": 4,
                            "data_fraction_after_epoch1": 0.01})
    perf = {"schema_version": SCHEMA_VERSION, "kind": "perf", "dataset": "synth", "model": "m3gnet",
            "family": "m3gnet", "checkpoint": SYNTH_CHECKPOINT["m3gnet"], "n_structures": 20}
    (store.records / f"{run_id(perf)}.json").write_text(json.dumps(
        {"schema_version": SCHEMA_VERSION, "run_id": run_id(perf), "spec": perf, "status": "ok", "reason": None,
         "timing": {"inference_atoms_per_s": 500.0, "peak_rss_mb": 800.0, "reference_workload_s": 0.25,
                    "n_structures": 20, "predict_s_per_structure": 0.02, "ase_calculator_s_per_structure": 0.05,
                    "speedup_vs_ase_calculator": 2.5, "max_energy_diff_mev_per_atom": 0.001,
                    "max_force_diff_mev_per_ang": 0.002},
         "model_source": "foundation synthetic",
         "parameters": {"trainable": 1000, "total": 1000}, "provenance": {"commit": "abc1234def"},
         "environment": {"packages": {"m3gnet": "1.0"}, "device": "cpu", "threads": 2, "cpu": "synthetic"}}))
    put({"model": "chgnet", "strategy": "finetune", "freeze_k": 0, "e0_policy": "refit", "train_size": 20,
         "train_fraction": 0.2, "seed": 2, "train_config": {"epochs": 4}}, status="failed",
        reason="worker killed by SIGKILL (out of memory?)")
    put({"model": "m3gnet", "strategy": "finetune", "freeze_k": 0, "e0_policy": "refit", "train_size": 5,
         "train_fraction": 0.05, "seed": 2, "train_config": {"epochs": 4}}, status="skipped",
        reason="checkpoint not cached at /nowhere; pass --checkpoint PATH")
    return root


@pytest.fixture
def synthetic_store(tmp_path):
    """2 models × zero-shot/scratch/finetune/freeze-interactions × 3 sizes × 2 seeds, one timing job
    (m3gnet), one failed and one skipped run."""
    return write_synthetic_store(tmp_path / "results")
