"""MACE adapter contract, against the real mace-torch library and real mlearn-Mo data.

MACE-MP-0 cannot be downloaded where these tests run, so a small real ScaleShiftMACE,
trained here for a few epochs on Mo frames through the harness's own loop and saved as
mace saves models (``torch.save`` of the module), stands in for the foundation.

Runs in the mace environment (``tox -e mace``); skipped elsewhere.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("mace", reason="runs in the mace environment: tox -e mace")

import torch  # noqa: E402

from adapters import mace_adapter  # noqa: E402
from adapters.base import CheckpointUnavailable  # noqa: E402
from adapters.mace_adapter import MACE_FREEZE_TO_K, MP_ELEMENTS, MACEAdapter, cache_path  # noqa: E402
from adapters.training import TrainConfig, refit_reference_energies, train  # noqa: E402
from bench.metrics import error_metrics  # noqa: E402
from bench.registry import get_model, resolve_strategy  # noqa: E402
from datasets import load_dataset  # noqa: E402
from tests.families import mace_standin  # noqa: E402

torch.set_num_threads(1)
pytestmark = [  # library noise: e3nn's TorchScript, and the env var `import mace` sets
    pytest.mark.filterwarnings("ignore:The TorchScript type system:UserWarning"),
    pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"),
    pytest.mark.filterwarnings("ignore:`torch.jit.(load|save|script)` is deprecated:DeprecationWarning"),
]

BLOCK_NAMES = ["embedding", "interaction-0", "product-0", "interaction-1", "product-1",
               "readout", "reference"]


@pytest.fixture(scope="module")
def mo():
    ds = load_dataset("mlearn-Mo")
    small = [a for a in ds.pool if len(a) <= 30]  # cheap frames for training tests
    return ds, small


@pytest.fixture(scope="module")
def foundation_path(tmp_path_factory):
    """A small Mo MACE (32x0e, 2 layers, r_max 5 Å), briefly trained: the stand-in foundation."""
    path, hist = mace_standin.build(tmp_path_factory.mktemp("mace"))
    assert hist.epochs[-1]["val_forces_rmse_mev_per_ang"] < hist.epochs[0]["val_forces_rmse_mev_per_ang"]
    return path


@pytest.fixture(scope="module")
def foundation(foundation_path):
    return MACEAdapter(str(foundation_path)).load()


def _forces_rmse(adapter, frames):
    pred = adapter.predict(frames)
    ref = np.concatenate([a.calc.results["forces"] for a in frames])
    return float(np.sqrt(np.mean((pred.forces - ref) ** 2)))


def _trainable(adapter):
    return {n for n, p in adapter.model_.named_parameters() if p.requires_grad}


def test_blocks_match_the_registry_and_cover_every_parameter(foundation):
    blocks = foundation.blocks()
    assert [b.name for b in blocks] == BLOCK_NAMES
    assert [b.kind for b in blocks[:-1]] == list(get_model("mace").blocks)
    assert blocks[-1].kind == "reference" and blocks[-1].n_params == 0  # E0, scale, shift: buffers
    assert all(b.n_params > 0 for b in blocks[:-1])
    assert sum(b.n_params for b in blocks) == foundation.parameter_counts()["total"]
    assert foundation.supported_numbers() == {42}
    assert next(foundation.model_.parameters()).dtype == torch.float32


def test_predict_agrees_with_mace_calculator(foundation, foundation_path, mo):
    from mace.calculators import MACECalculator

    ds, _ = mo
    frames = [ds.test[0], ds.test[-1], next(a for a in ds.test if a.info["group"] == "Surface")]
    pred = foundation.predict(frames)
    calc = MACECalculator(model_paths=str(foundation_path), device="cpu", default_dtype="float32")
    offset = 0
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = calc
        n = len(atoms)
        assert pred.energy[i] == pytest.approx(atoms.get_potential_energy(), abs=1e-5 * n)
        np.testing.assert_allclose(pred.forces[offset : offset + n], atoms.get_forces(), atol=1e-5)
        np.testing.assert_allclose(pred.stress[i], atoms.get_stress(voigt=True), atol=1e-7)
        offset += n


def test_stress_is_the_strain_derivative_with_ase_sign(foundation, mo):
    """σ = 1/V dE/dε (positive = tensile), by central differences on a sheared Mo cell."""
    ds, _ = mo
    atoms = next(a for a in ds.test if a.info["group"] == "Elastic" and len(a) == 54)
    stress = foundation.predict([atoms]).stress[0]
    h, volume = 2e-3, atoms.get_volume()
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / 2
            strain[j, i] += sign * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
            energies.append(foundation.predict([strained], stress=False).energy[0])
        finite_difference = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[k] == pytest.approx(finite_difference, abs=2e-5), k


def test_freezing_shrinks_trainable_parameters_monotonically(foundation_path):
    adapter = MACEAdapter(str(foundation_path)).load()
    total = adapter.parameter_counts()["total"]
    counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(7)]
    assert counts[0] == total and counts[-1] == 0
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert resolve_strategy("freeze-interactions", get_model("mace")).freeze_k == 5
    with pytest.raises(ValueError, match="buffers"):
        adapter.freeze(0, train_reference=True)


def test_mace_freeze_numbers_map_to_block_freezes(foundation_path):
    """MACE_FREEZE_TO_K reproduces mace's own `--freeze N` (get_params_options) exactly."""
    from mace.tools.scripts_utils import get_params_options

    adapter = MACEAdapter(str(foundation_path)).load()

    def mace_freeze(n):
        adapter.freeze(0)
        args = argparse.Namespace(freeze=n, lr_params_factors=json.dumps({}), lr=1e-3,
                                  weight_decay=0.0, amsgrad=True, beta=0.9)
        get_params_options(args, adapter.model_)
        return _trainable(adapter)

    for n, k in MACE_FREEZE_TO_K.items():
        theirs = mace_freeze(n)
        assert _trainable(adapter.freeze(k)) == theirs, (n, k)
    theirs = mace_freeze(5)  # interactions frozen, products train: no forward-order equivalent
    assert all(_trainable(adapter.freeze(k)) != theirs for k in range(7))


def test_training_keeps_frozen_parameters_and_beats_the_checkpoint(foundation_path, mo):
    ds, small = mo
    adapter = MACEAdapter(str(foundation_path), seed=0).load().freeze(5)  # freeze-interactions
    test = [a for a in ds.test if a.info["group"] in {"Surface", "Elastic"}]
    loaded = _forces_rmse(adapter, test)
    refit_reference_energies(adapter, small[:8])
    before = {n: p.detach().clone() for n, p in adapter.model_.named_parameters()}
    hist = train(adapter, small[:8], small[8:11], TrainConfig(epochs=6, lr=1e-2, batch_size=4))
    assert len(hist.epochs) >= 2 and hist.step_times_s
    changed = []
    for name, param in adapter.model_.named_parameters():
        if name.startswith(("node_embedding.", "interactions.", "products.")):
            assert torch.equal(param, before[name]), f"frozen {name} changed"
        elif name.startswith("readouts.") and not torch.equal(param, before[name]):
            changed.append(name)
    assert changed, "no readout parameter changed"
    assert _forces_rmse(adapter, test) < loaded


def test_refit_reference_energies_removes_the_mean_energy_error(foundation_path, mo):
    _, small = mo
    energies = np.array([a.calc.results["energy"] for a in small[:10]])
    adapter = MACEAdapter(str(foundation_path)).load()
    old = adapter.reference_energies()[42]
    before = energies - adapter.predict(small[:10], stress=False).energy
    new = refit_reference_energies(adapter, small[:10])
    pred = adapter.predict(small[:10], stress=False)
    residual = energies - pred.energy
    n = pred.n_atoms.astype(float)
    # least squares with one element: the count-weighted residual vanishes (normal equation)
    assert abs(n @ residual / (n @ n)) < 1e-4 < abs(n @ before / (n @ n))  # eV/atom
    assert adapter.reference_energies() == pytest.approx(new)
    assert new[42] - old == pytest.approx(n @ before / (n @ n), abs=1e-4)


def test_scratch_has_the_same_architecture_and_seeds_reproduce(foundation_path, mo):
    _, small = mo
    fnd = MACEAdapter(str(foundation_path)).load()
    a = MACEAdapter(str(foundation_path), seed=3).load(scratch=True)
    b = MACEAdapter(str(foundation_path), seed=3).load(scratch=True)
    shapes = {n: p.shape for n, p in fnd.model_.named_parameters()}
    assert {n: p.shape for n, p in a.model_.named_parameters()} == shapes
    assert [blk.n_params for blk in a.blocks()] == [blk.n_params for blk in fnd.blocks()]
    fnd_params, a_params = dict(fnd.model_.named_parameters()), dict(a.model_.named_parameters())
    assert not torch.equal(a_params["readouts.0.linear.weight"], fnd_params["readouts.0.linear.weight"])
    assert a.reference_energies() == fnd.reference_energies()  # E0 buffer kept
    cfg = TrainConfig(epochs=1, batch_size=2)
    ha = train(a, small[:4], small[4:6], cfg)
    hb = train(b, small[:4], small[4:6], cfg)
    assert ha.epochs[1]["train_loss"] == hb.epochs[1]["train_loss"]
    assert ha.epochs[1]["val_loss"] == hb.epochs[1]["val_loss"]


def test_cache_path_is_where_mace_downloads_and_is_loaded_from(foundation_path, tmp_path, monkeypatch):
    import mace.calculators.foundations_models as fm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    targets = []

    def no_network(url, filename, timeout=None):
        targets.append(filename)
        raise OSError("no network in this test")

    monkeypatch.setattr(fm, "_urlretrieve_with_timeout", no_network)
    keys = ["small", "medium", "small-0b", "mace-matpes-pbe-0"]
    for key in keys:
        with pytest.raises(OSError, match="no network"):
            fm.download_mace_mp_checkpoint(key)
    assert targets == [str(cache_path(k)) for k in keys]
    assert str(cache_path("small")).startswith(str(tmp_path / "mace"))

    cache_path("small").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(foundation_path, cache_path("small"))  # as if downloaded
    adapter = MACEAdapter("mace-mp-0-small").load()
    assert adapter.checkpoint_path_ == str(cache_path("small"))
    assert adapter.supported_numbers() == {42}


def test_missing_foundation_fails_fast_and_says_how_to_supply_it(tmp_path, monkeypatch):
    from mace.calculators.foundations_models import mace_mp_urls

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if mace_adapter.reachable(mace_mp_urls["small"]):
        pytest.skip("online: MACE-MP-0 would be downloaded")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointUnavailable) as err:
        MACEAdapter("mace-mp-0-small").load()
    assert time.perf_counter() - t0 < 10
    assert str(cache_path("small")) in str(err.value) and "--checkpoint PATH" in str(err.value)
    with pytest.raises(CheckpointUnavailable, match="--checkpoint PATH"):
        MACEAdapter("mace-mp-7-tiny").load()


def test_offline_scratch_has_the_mace_mp_0_small_shape(tmp_path, monkeypatch, mo):
    ds, small = mo
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(mace_adapter, "reachable", lambda url, timeout=0: False)
    with pytest.raises(CheckpointUnavailable):
        MACEAdapter("mace-mp-0-small").load()  # no foundation: only scratch can run
    adapter = MACEAdapter("mace-mp-0-small").load(scratch=True)
    blocks = adapter.blocks()
    assert [b.name for b in blocks] == BLOCK_NAMES
    assert adapter.parameter_counts()["total"] == 3_847_696  # MACE-MP-0 small: 3.85 M
    assert adapter.supported_numbers() == set(MP_ELEMENTS) and len(MP_ELEMENTS) == 89
    assert float(adapter.model_.r_max) == 6.0
    pred = adapter.predict(small[:1])
    assert np.isfinite(pred.energy).all() and np.isfinite(pred.forces).all()


def test_metrics_of_a_prediction_round_trip(foundation, mo):
    ds, _ = mo
    frames = ds.test[:3]
    pred = foundation.predict(frames)
    ref = {"energy": pred.energy, "forces": pred.forces, "stress": pred.stress, "n_atoms": pred.n_atoms}
    m = error_metrics({**ref}, ref)
    assert m["forces_rmse_mev_per_ang"] == 0 and m["n_structures"] == 3


def test_registry_shows_the_same_native_freeze_names():
    for k, label in get_model("mace").native_freeze:
        n = int(label.rsplit(" ", 1)[1])
        assert MACE_FREEZE_TO_K[n] == k, label
