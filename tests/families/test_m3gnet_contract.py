"""M3GNet adapter contract, against the real matgl library and the MatPES-PBE weights.

Runs in the m3gnet environment (a venv with ``ftbench[m3gnet]``); skipped elsewhere. The
weights are looked up as the adapter does ($BENCH_WEIGHTS_DIR, ../shared/weights).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("matgl", reason="runs in the m3gnet environment (ftbench[m3gnet])")

import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402

from adapters.base import CheckpointUnavailable  # noqa: E402
from adapters.m3gnet_adapter import M3GNetAdapter  # noqa: E402
from adapters.training import TrainConfig, refit_reference_energies, train  # noqa: E402
from bench.metrics import error_metrics  # noqa: E402
from bench.registry import get_model, resolve_strategy  # noqa: E402
from datasets import load_dataset  # noqa: E402

torch.set_num_threads(1)  # 2-core CI machines; extra threads only contend
N_PARAMS = 664_221  # M3GNet-MatPES-PBE-v2025.1-PES


@pytest.fixture(scope="module")
def mo():
    ds = load_dataset("mlearn-Mo")
    small = [a for a in ds.pool if len(a) <= 30]  # 9 cheap frames (8 surfaces, 1 bcc cell)
    return ds, small


@pytest.fixture(scope="module")
def foundation():
    try:
        return M3GNetAdapter().load()
    except CheckpointUnavailable as exc:
        pytest.skip(str(exc))


def _forces_rmse(adapter, frames):
    pred = adapter.predict(frames)
    ref = np.concatenate([a.calc.results["forces"] for a in frames])
    return float(np.sqrt(np.mean((pred.forces - ref) ** 2)))


def test_blocks_match_the_registry_and_cover_every_parameter(foundation):
    blocks = foundation.blocks()
    assert [b.kind for b in blocks[:-1]] == list(get_model("m3gnet").blocks)
    assert [b.name for b in blocks] == ["embedding", "interaction-0", "interaction-1",
                                        "interaction-2", "readout", "reference"]
    assert [b.n_params for b in blocks] == [5_952, 200_009, 200_009, 200_009, 58_242, 0]
    assert sum(b.n_params for b in blocks) == foundation.parameter_counts()["total"] == N_PARAMS
    assert not M3GNetAdapter.reference_is_parameter
    assert foundation.supported_numbers() >= {1, 41, 42, 73, 74, 94}


def test_the_mp_2021_checkpoint_has_the_same_layout(foundation):
    try:
        mp = M3GNetAdapter("M3GNet-MP-2021.2.8-PES").load()
    except CheckpointUnavailable as exc:
        pytest.skip(str(exc))
    blocks = mp.blocks()  # units=64 instead of 128: same blocks, fewer parameters
    assert [b.name for b in blocks] == [b.name for b in foundation.blocks()]
    assert sum(b.n_params for b in blocks) == mp.parameter_counts()["total"] == 288_157
    assert mp.reference_energies()[42] != foundation.reference_energies()[42]


def test_predict_agrees_with_matgl_calculator(foundation, mo):
    from matgl.ext.ase import PESCalculator

    ds, _ = mo
    frames = [ds.test[0], ds.test[-1], next(a for a in ds.test if a.info["group"] == "Surface")]
    pred = foundation.predict(frames)
    calc = PESCalculator(foundation.model_, stress_unit="eV/A3")
    offset = 0
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = calc
        n = len(atoms)
        assert pred.energy[i] == pytest.approx(atoms.get_potential_energy(), abs=1e-5 * n)
        np.testing.assert_allclose(pred.forces[offset : offset + n], atoms.get_forces(), atol=1e-5)
        np.testing.assert_allclose(pred.stress[i], atoms.get_stress(voigt=True), atol=1e-7)
        offset += n
    # and the foundation is close to the DFT labels (eV/atom), so the references are right
    labels = np.array([a.calc.results["energy"] for a in frames])
    assert np.all(np.abs(pred.energy - labels) / pred.n_atoms < 0.1)


def test_dataset_stress_convention_matches_m3gnet(foundation, mo):
    """The converter's stress order and sign agree with an independent model (the witness)."""
    ds, _ = mo
    frames = [a for a in ds.pool if a.info["group"] == "Elastic" and len(a) == 54][:12]
    pred = foundation.predict(frames).stress
    ref = np.array([a.calc.results["stress"] for a in frames])
    excited = [k for k in range(6) if np.std(ref[:, k]) > 1e-3 * units.GPa]
    assert {0, 1, 2} <= set(excited)
    for k in excited:  # components the strains excite
        assert np.corrcoef(pred[:, k], ref[:, k])[0, 1] > 0.8, k


def test_forces_are_minus_the_energy_gradient(foundation):
    atoms = bulk("Mo", "bcc", a=3.16, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    forces = foundation.predict([atoms], stress=False).forces
    h = 1e-2  # Å; float32 energies of a 16-atom cell resolve ~1e-5 eV
    for i, k in [(0, 0), (3, 1), (7, 2), (12, 0)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, k] += sign * h
            energies.append(foundation.predict([moved], stress=False).energy[0])
        assert forces[i, k] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=5e-3)
    assert np.abs(forces).max() > 0.3  # the rattle makes the check non-trivial


def test_bcc_mo_lattice_constant_and_stress_are_physical(foundation):
    a_scan = np.linspace(3.04, 3.28, 9)
    energy = foundation.predict([bulk("Mo", "bcc", a=a, cubic=True) for a in a_scan],
                                stress=False).energy / 2
    assert 0 < np.argmin(energy) < len(a_scan) - 1
    roots = np.roots(np.polyder(np.polyfit(a_scan, energy, 3)))
    a0 = min(roots.real, key=lambda r: abs(r - a_scan[np.argmin(energy)]))
    assert a0 == pytest.approx(3.16, rel=0.03)
    # stress = 1/V dE/dε (ASE sign): isotropic, its diagonal equals dE/dV of the cell
    for a in (3.08, 3.24):
        d = 0.005
        cells = [bulk("Mo", "bcc", a=x, cubic=True) for x in (a, a + d, a - d)]
        pred = foundation.predict(cells)
        de_dv = (pred.energy[1] - pred.energy[2]) / ((a + d) ** 3 - (a - d) ** 3)
        np.testing.assert_allclose(pred.stress[0, :3], de_dv, rtol=0.02, atol=2e-4)
        np.testing.assert_allclose(pred.stress[0, 3:], 0, atol=1e-6)
        assert np.sign(pred.stress[0, 0]) == np.sign(a - a0)  # compressed: negative


def test_freezing_shrinks_trainable_parameters_monotonically(foundation):
    adapter = M3GNetAdapter().load()
    counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(5)]
    assert counts[0] == N_PARAMS and counts[-1] == 58_242
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    with pytest.raises(ValueError, match="buffers"):
        adapter.freeze(0, train_reference=True)
    with pytest.raises(ValueError, match="out of range"):
        adapter.freeze(6)
    assert resolve_strategy("freeze-interactions", get_model("m3gnet")).freeze_k == 4


def test_training_keeps_frozen_parameters_and_beats_zero_shot(foundation, mo):
    ds, small = mo
    adapter = M3GNetAdapter(seed=0).load().freeze(4)
    test = [a for a in ds.test if a.info["group"] in {"Surface", "Elastic"}]
    zero_shot = _forces_rmse(adapter, test)
    refit_reference_energies(adapter, small[:7])
    before = {n: p.detach().clone() for n, p in adapter.model_.named_parameters()}
    refs = adapter.model_.element_refs.property_offset.clone()
    hist = train(adapter, small[:7], small[7:], TrainConfig(epochs=8, lr=2e-3, batch_size=4))
    assert len(hist.epochs) >= 2 and hist.step_times_s
    changed = []
    for name, param in adapter.model_.named_parameters():
        if not name.startswith("model.final_layer."):
            assert torch.equal(param, before[name]), f"frozen {name} changed"
        elif not torch.equal(param, before[name]):
            changed.append(name)
    assert changed, "no readout parameter changed"
    assert torch.equal(adapter.model_.element_refs.property_offset, refs)
    # measured 0.076-0.079 eV/Å after training vs 0.091 zero-shot over seeds 0-2
    assert _forces_rmse(adapter, test) < 0.95 * zero_shot


def test_refit_reference_energies_removes_the_mean_energy_error(foundation, mo):
    _, small = mo
    adapter = M3GNetAdapter().load()
    labels = np.array([a.calc.results["energy"] for a in small])
    before = labels - foundation.predict(small, stress=False).energy
    new = refit_reference_energies(adapter, small)
    assert set(new) == {42} and new[42] != foundation.reference_energies()[42]
    assert adapter.reference_energies()[42] == pytest.approx(new[42])
    pred = adapter.predict(small, stress=False)
    residual = labels - pred.energy
    n = pred.n_atoms.astype(float)
    # least squares with one element: the count-weighted residual vanishes (normal equation)
    assert abs(n @ residual / (n @ n)) < 1e-4 < abs(n @ before / (n @ n))  # eV/atom
    # the other elements' references are untouched, in element_types order (not Z - 1)
    old, now = foundation.reference_energies(), adapter.reference_energies()
    assert {z: v for z, v in now.items() if z != 42} == {z: v for z, v in old.items() if z != 42}
    assert now[94] == pytest.approx(float(adapter.model_.element_refs.property_offset[-1]))


def test_scratch_has_the_same_architecture_and_seeds_reproduce(foundation, mo):
    _, small = mo
    a = M3GNetAdapter(seed=3).load(scratch=True)
    b = M3GNetAdapter(seed=3).load(scratch=True)
    shapes = {n: p.shape for n, p in foundation.model_.named_parameters()}
    assert {n: p.shape for n, p in a.model_.named_parameters()} == shapes
    fnd_params, a_params = dict(foundation.model_.named_parameters()), dict(a.model_.named_parameters())
    for name in ("model.embedding.layer_node_embedding.weight", "model.final_layer.gated.layers.0.weight"):
        assert not torch.equal(a_params[name], fnd_params[name])
    assert torch.equal(a.model_.data_std, foundation.model_.data_std)
    assert a.reference_energies() == foundation.reference_energies()
    cfg = TrainConfig(epochs=1, batch_size=2)
    ha = train(a, small[:4], small[4:6], cfg)
    hb = train(b, small[:4], small[4:6], cfg)
    assert ha.epochs[1]["train_loss"] == hb.epochs[1]["train_loss"]
    assert ha.epochs[1]["val_loss"] == hb.epochs[1]["val_loss"]


def test_checkpoints_resolve_from_the_weights_dir_or_fail_fast(foundation, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    foundation.model_.save(tmp_path / "matgl" / "my-m3gnet")
    mine = M3GNetAdapter("my-m3gnet").load()
    assert mine.parameter_counts() == foundation.parameter_counts()
    assert M3GNetAdapter(str(tmp_path / "matgl" / "my-m3gnet")).load().blocks() == foundation.blocks()
    t0 = time.perf_counter()
    with pytest.raises(CheckpointUnavailable, match="--checkpoint DIR") as info:
        M3GNetAdapter("M3GNet-No-Such-Model-PES").load()
    assert time.perf_counter() - t0 < 30
    assert str(tmp_path / "matgl" / "M3GNet-No-Such-Model-PES") in str(info.value)
    with pytest.raises(CheckpointUnavailable, match="not an existing directory"):
        M3GNetAdapter(str(tmp_path / "missing")).load()


def test_metrics_of_a_prediction_round_trip(foundation, mo):
    ds, _ = mo
    frames = ds.test[:3]
    pred = foundation.predict(frames)
    ref = {"energy": pred.energy, "forces": pred.forces, "stress": pred.stress,
           "n_atoms": pred.n_atoms}
    m = error_metrics({**ref}, ref)
    assert m["forces_rmse_mev_per_ang"] == 0 and m["n_structures"] == 3
