"""SevenNet adapter contract, against the real sevenn library and the 7net-0 weights.

Runs in the sevennet environment (``tox -e sevennet``); skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sevenn", reason="runs in the sevennet environment: tox -e sevennet")

import torch  # noqa: E402
from ase import units  # noqa: E402

from adapters.base import CheckpointUnavailable  # noqa: E402
from adapters.sevennet_adapter import SevenNetAdapter  # noqa: E402
from adapters.training import TrainConfig, refit_reference_energies, train  # noqa: E402
from bench.metrics import error_metrics  # noqa: E402
from bench.registry import get_model, resolve_strategy  # noqa: E402
from datasets import load_dataset  # noqa: E402

torch.set_num_threads(1)

N_PARAMS = 842_623  # 7net-0; 5 of them are the fixed convolution denominators


@pytest.fixture(scope="module")
def mo():
    ds = load_dataset("mlearn-Mo")
    small = [a for a in ds.pool if len(a) <= 30]  # cheap frames (surfaces) for training tests
    return ds, small


@pytest.fixture(scope="module")
def foundation():
    return SevenNetAdapter("7net-0").load()


def _forces_rmse(adapter, frames):
    pred = adapter.predict(frames)
    ref = np.concatenate([a.calc.results["forces"] for a in frames])
    return float(np.sqrt(np.mean((pred.forces - ref) ** 2)))


def test_blocks_match_the_registry_and_cover_every_parameter(foundation):
    blocks = foundation.blocks()
    assert [b.kind for b in blocks[:-1]] == list(get_model("sevennet").blocks)
    assert [b.name for b in blocks] == ["embedding", *(f"interaction-{t}" for t in range(5)),
                                        "readout", "reference"]
    assert blocks[-1].kind == "reference" and blocks[-1].n_params == 2 * 89  # shift + scale
    assert sum(b.n_params for b in blocks) == foundation.parameter_counts()["total"] == N_PARAMS


def test_unavailable_checkpoints_say_how_to_supply_one():
    with pytest.raises(CheckpointUnavailable, match="--checkpoint PATH"):
        SevenNetAdapter("no-such-model").load()
    try:  # 7net-omat is not in the wheel: resolving it must refuse, not download
        SevenNetAdapter("7net-omat").load()
    except CheckpointUnavailable as err:
        assert "--checkpoint PATH" in str(err) and "http" in str(err)
    else:
        pytest.skip("7net-omat is already on disk here")


def test_predict_agrees_with_sevennet_calculator(foundation, mo):
    from sevenn.calculator import SevenNetCalculator

    ds, _ = mo
    frames = [ds.test[0], ds.test[-1], next(a for a in ds.test if a.info["group"] == "Surface")]
    pred = foundation.predict(frames)
    calc = SevenNetCalculator("7net-0", device="cpu")  # its own model, unbatched
    offset = 0
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = calc
        n = len(atoms)
        assert pred.energy[i] == pytest.approx(atoms.get_potential_energy(), abs=2e-4 * n)
        np.testing.assert_allclose(pred.forces[offset : offset + n], atoms.get_forces(), atol=2e-4)
        np.testing.assert_allclose(pred.stress[i], atoms.get_stress(voigt=True), atol=2e-6)
        offset += n


def test_dataset_stress_convention_matches_sevennet(foundation):
    """The converters' stress order and sign agree with an independent model (the witness)."""
    for name, group in [("mlearn-Mo", "Elastic"), ("snap-NbMoTaW", "Mo_Elastic")]:
        ds = load_dataset(name)
        frames = [a for a in ds.pool if a.info["group"] == group][:8]
        pred = foundation.predict(frames).stress
        ref = np.array([a.calc.results["stress"] for a in frames])
        for k in range(6):
            if np.std(ref[:, k]) > 1e-3 * units.GPa:  # components the strains excite
                assert np.corrcoef(pred[:, k], ref[:, k])[0, 1] > 0.8, (name, k)


def test_freezing_shrinks_trainable_parameters_monotonically():
    adapter = SevenNetAdapter().load()
    counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(7)]
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert counts[6] == adapter.blocks()[6].n_params  # only the readout
    # the reference trains only when asked; sevenn's fixed denominators never
    assert adapter.freeze(0, train_reference=True).parameter_counts()["trainable"] == N_PARAMS - 5
    assert adapter.freeze(0).parameter_counts()["trainable"] == N_PARAMS - 5 - 178
    assert resolve_strategy("freeze-interactions", get_model("sevennet")).freeze_k == 6


def test_training_keeps_frozen_parameters_and_beats_zero_shot(mo):
    ds, small = mo
    adapter = SevenNetAdapter(seed=0).load().freeze(6)
    test = [a for a in ds.test if a.info["group"] in {"Surface", "Elastic"}]
    zero_shot = _forces_rmse(adapter, test)
    refit_reference_energies(adapter, small[:7])
    before = {n: p.detach().clone() for n, p in adapter.model_.named_parameters()}
    cfg = TrainConfig(epochs=5, lr=5e-3, batch_size=2, stress_weight=0.0)
    hist = train(adapter, small[:7], small[7:9], cfg)
    assert len(hist.epochs) >= 2 and hist.step_times_s
    changed = []
    for name, param in adapter.model_.named_parameters():
        if name.startswith("reduce_"):
            changed += [name] if not torch.equal(param, before[name]) else []
        else:  # embedding, the 5 interactions and the reference are frozen
            assert torch.equal(param, before[name]), f"frozen {name} changed"
    assert changed, "no readout parameter changed"
    assert _forces_rmse(adapter, test) < 0.95 * zero_shot  # measured: 0.159 -> 0.119 eV/Å


def test_refit_reference_energies_removes_the_mean_energy_error(foundation, mo):
    _, small = mo
    adapter = SevenNetAdapter().load()
    old = adapter.reference_energies()[42]
    new = refit_reference_energies(adapter, small)
    pred = adapter.predict(small, stress=False)
    labels = np.array([a.calc.results["energy"] for a in small])
    residual = labels - pred.energy
    before = foundation.predict(small, stress=False).energy
    n = pred.n_atoms.astype(float)
    # least squares with one element: the count-weighted residual vanishes (normal equation)
    assert abs(n @ residual / (n @ n)) < 1e-4 < abs(n @ (labels - before) / (n @ n))  # eV/atom
    # the shift is eV per atom for Mo, whatever sevenn's species index and scale
    assert adapter.reference_energies()[42] == pytest.approx(new[42], abs=1e-6)
    np.testing.assert_allclose(pred.energy - before, n * (new[42] - old), atol=2e-4 * n.max())


def test_scratch_has_the_same_architecture_and_seeds_reproduce(foundation, mo):
    _, small = mo
    a = SevenNetAdapter(seed=3).load(scratch=True)
    b = SevenNetAdapter(seed=3).load(scratch=True)
    shapes = {n: p.shape for n, p in foundation.model_.named_parameters()}
    assert {n: p.shape for n, p in a.model_.named_parameters()} == shapes
    fnd_params, a_params = dict(foundation.model_.named_parameters()), dict(a.model_.named_parameters())
    for name in ("reduce_hidden_to_energy.linear.weight", "2_self_interaction_1.linear.weight"):
        assert not torch.equal(a_params[name], fnd_params[name])
    cfg = TrainConfig(epochs=1, batch_size=2)
    ha = train(a, small[:4], small[4:6], cfg)
    hb = train(b, small[:4], small[4:6], cfg)
    assert np.isfinite(ha.epochs[1]["train_loss"])
    assert ha.epochs[1]["train_loss"] == hb.epochs[1]["train_loss"]
    assert ha.epochs[1]["val_loss"] == hb.epochs[1]["val_loss"]


def test_metrics_of_a_prediction_round_trip(foundation, mo):
    ds, _ = mo
    frames = ds.test[:3]
    pred = foundation.predict(frames)
    ref = {"energy": pred.energy, "forces": pred.forces, "stress": pred.stress, "n_atoms": pred.n_atoms}
    m = error_metrics({**ref}, ref)
    assert m["forces_rmse_mev_per_ang"] == 0 and m["n_structures"] == 3
