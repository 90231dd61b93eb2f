"""CHGNet adapter contract, against the real chgnet library and the 0.3.0 weights.

Runs in the chgnet environment (``tox -e chgnet``); skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("chgnet", reason="runs in the chgnet environment: tox -e chgnet")

import torch  # noqa: E402
from ase import units  # noqa: E402

from adapters.chgnet_adapter import CHGNetAdapter  # noqa: E402
from adapters.training import TrainConfig, refit_reference_energies, train  # noqa: E402
from bench.metrics import error_metrics  # noqa: E402
from bench.registry import get_model, resolve_strategy  # noqa: E402
from datasets import load_dataset  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def mo():
    ds = load_dataset("mlearn-Mo")
    small = [a for a in ds.pool if len(a) <= 30]  # cheap frames for training tests
    return ds, small


@pytest.fixture(scope="module")
def foundation():
    return CHGNetAdapter("0.3.0").load()


def _forces_rmse(adapter, frames):
    pred = adapter.predict(frames)
    ref = np.concatenate([a.calc.results["forces"] for a in frames])
    return float(np.sqrt(np.mean((pred.forces - ref) ** 2)))


def test_blocks_match_the_registry_and_cover_every_parameter(foundation):
    blocks = foundation.blocks()
    assert [b.kind for b in blocks[:-1]] == list(get_model("chgnet").blocks)
    assert blocks[-1].kind == "reference" and blocks[-1].n_params == 94
    assert sum(b.n_params for b in blocks) == foundation.parameter_counts()["total"] == 412_525


def test_predict_agrees_with_chgnet_calculator(foundation, mo):
    from chgnet.model import CHGNetCalculator

    ds, _ = mo
    frames = [ds.test[0], ds.test[-1], next(a for a in ds.test if a.info["group"] == "Surface")]
    pred = foundation.predict(frames)
    calc = CHGNetCalculator(foundation.model_, use_device="cpu")
    offset = 0
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = calc
        n = len(atoms)
        assert pred.energy[i] == pytest.approx(atoms.get_potential_energy(), abs=2e-4 * n)
        np.testing.assert_allclose(pred.forces[offset : offset + n], atoms.get_forces(), atol=2e-4)
        np.testing.assert_allclose(pred.stress[i], atoms.get_stress(voigt=True), atol=2e-6)
        offset += n


def test_dataset_stress_convention_matches_chgnet(foundation):
    """The converters' stress order and sign agree with an independent model (the witness)."""
    for name, group in [("mlearn-Mo", "Elastic"), ("snap-NbMoTaW", "Mo_Elastic")]:
        ds = load_dataset(name)
        frames = [a for a in ds.pool if a.info["group"] == group][:16]
        pred = foundation.predict(frames).stress
        ref = np.array([a.calc.results["stress"] for a in frames])
        for k in range(6):
            if np.std(ref[:, k]) > 1e-3 * units.GPa:  # components the strains excite
                assert np.corrcoef(pred[:, k], ref[:, k])[0, 1] > 0.8, (name, k)


def test_freezing_shrinks_trainable_parameters_monotonically():
    adapter = CHGNetAdapter().load()
    counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(7)]
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert adapter.freeze(0, train_reference=True).parameter_counts()["trainable"] == 412_525
    assert resolve_strategy("freeze-interactions", get_model("chgnet")).freeze_k == 5


def test_training_keeps_frozen_parameters_and_beats_zero_shot(mo):
    ds, small = mo
    adapter = CHGNetAdapter(seed=0).load().freeze(5)
    test = [a for a in ds.test if a.info["group"] in {"Surface", "Elastic"}]
    zero_shot = _forces_rmse(adapter, test)
    refit_reference_energies(adapter, small[:8])
    before = {n: p.detach().clone() for n, p in adapter.model_.named_parameters()}
    hist = train(adapter, small[:8], small[8:11], TrainConfig(epochs=4, lr=2e-3, batch_size=4))
    assert len(hist.epochs) >= 2 and hist.step_times_s
    frozen = ("atom_embedding", "bond_embedding", "atom_conv_layers.0", "atom_conv_layers.3",
              "angle_layers.2", "composition_model")
    changed = []
    for name, param in adapter.model_.named_parameters():
        if name.startswith(frozen):
            assert torch.equal(param, before[name]), f"frozen {name} changed"
        elif name.startswith("mlp.") and not torch.equal(param, before[name]):
            changed.append(name)
    assert changed, "no readout parameter changed"
    assert _forces_rmse(adapter, test) < zero_shot


def test_refit_reference_energies_removes_the_mean_energy_error(mo):
    _, small = mo
    adapter = CHGNetAdapter().load()
    refit_reference_energies(adapter, small[:10])
    pred = adapter.predict(small[:10], stress=False)
    residual = np.array([a.calc.results["energy"] for a in small[:10]]) - pred.energy
    n = pred.n_atoms.astype(float)
    before = np.array([a.calc.results["energy"] for a in small[:10]]) - CHGNetAdapter().load().predict(
        small[:10], stress=False).energy
    # least squares with one element: the count-weighted residual vanishes (normal equation)
    assert abs(n @ residual / (n @ n)) < 1e-4 < abs(n @ before / (n @ n))  # eV/atom


def test_scratch_has_the_same_architecture_and_seeds_reproduce(mo):
    _, small = mo
    fnd = CHGNetAdapter().load()
    a = CHGNetAdapter(seed=3).load(scratch=True)
    b = CHGNetAdapter(seed=3).load(scratch=True)
    shapes = {n: p.shape for n, p in fnd.model_.named_parameters()}
    assert {n: p.shape for n, p in a.model_.named_parameters()} == shapes
    readout = next(n for n in shapes if n.startswith("mlp."))
    fnd_params, a_params = dict(fnd.model_.named_parameters()), dict(a.model_.named_parameters())
    assert not torch.equal(a_params[readout], fnd_params[readout])
    cfg = TrainConfig(epochs=1, batch_size=2)
    ha = train(a, small[:4], small[4:6], cfg)
    hb = train(b, small[:4], small[4:6], cfg)
    assert ha.epochs[1]["train_loss"] == hb.epochs[1]["train_loss"]
    assert ha.epochs[1]["val_loss"] == hb.epochs[1]["val_loss"]


def test_metrics_of_a_prediction_round_trip(foundation, mo):
    ds, _ = mo
    frames = ds.test[:3]
    pred = foundation.predict(frames)
    ref = {"energy": pred.energy, "forces": pred.forces, "stress": pred.stress, "n_atoms": pred.n_atoms}
    m = error_metrics({**ref}, ref)
    assert m["forces_rmse_mev_per_ang"] == 0 and m["n_structures"] == 3
