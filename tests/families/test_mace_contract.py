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

import torch

from adapters import mace_adapter
from adapters.base import CheckpointUnavailable
from adapters.mace_adapter import MACE_FREEZE_TO_K, MP_ELEMENTS, MACEAdapter, cache_path
from adapters.training import TrainConfig
from bench.registry import get_model
from tests.families import mace_standin
from tests.families.contract import AdapterContract, HotPathBenchmarks, console_script

torch.set_num_threads(1)
pytestmark = [  # library noise: e3nn's TorchScript, and the env var `import mace` sets
    pytest.mark.filterwarnings("ignore:The TorchScript type system:UserWarning"),
    pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"),
    pytest.mark.filterwarnings("ignore:`torch.jit.(load|save|script)` is deprecated:DeprecationWarning"),
]

BLOCK_NAMES = ["embedding", "interaction-0", "product-0", "interaction-1", "product-1",
               "readout", "reference"]


@pytest.fixture(scope="module")
def foundation_path(tmp_path_factory):
    """A small Mo MACE (32x0e, 2 layers, r_max 5 Å), briefly trained: the stand-in foundation."""
    path, hist = mace_standin.build(tmp_path_factory.mktemp("mace"))
    assert hist.epochs[-1]["val_forces_rmse_mev_per_ang"] < hist.epochs[0]["val_forces_rmse_mev_per_ang"]
    return path


ADAPTER = MACEAdapter


@pytest.fixture(scope="module")
def checkpoint(foundation_path):
    return str(foundation_path)


@pytest.fixture(scope="module")
def calculator(foundation_path):
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=str(foundation_path), device="cpu", default_dtype="float32")


@pytest.fixture(scope="module")
def registered():
    """The registry describes MACE-MP-0-small: from its file where cached, else (here) the
    same architecture the adapter builds without it (its elements and r_max are the model's)."""
    return MACEAdapter("mace-mp-0-small").load(scratch=True)


class TestMACEContract(AdapterContract, HotPathBenchmarks):
    family = "mace"
    calculator_atol = (1e-5, 1e-5, 1e-7)
    stress_witness = ()  # the small stand-in is no witness; see the strain-derivative test
    train_config = TrainConfig(epochs=6, lr=1e-2, batch_size=4, energy_weight=1.0)
    export_lora_scale = 0.3  # the stand-in's forces are small (~0.1 eV/Å): 5 % moves them by only ~3 meV/Å

    def test_exported_model_converts_for_lammps(self, exported, tmp_path):
        """mace's own LAMMPS conversion accepts the export on the CPU and writes a TorchScript
        model of the same element and cutoff."""
        model = tmp_path / "mace.model"
        shutil.copy(exported["path"], model)
        proc = console_script("mace_create_lammps_model", str(model), "--dtype", "float32", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lammps = torch.jit.load(str(tmp_path / "mace.model-lammps.pt"))
        assert [int(z) for z in lammps.atomic_numbers] == [42] and float(lammps.r_max) == 5.0

    def test_mace_blocks_and_buffer_references(self, foundation, make):
        assert [b.name for b in foundation.blocks()] == BLOCK_NAMES
        assert foundation.blocks()[-1].n_params == 0  # E0, scale, shift: buffers
        assert foundation.supported_numbers() == {42}
        with pytest.raises(ValueError, match="buffers"):
            make().freeze(0, train_reference=True)
        assert make(scratch=True).reference_energies() == foundation.reference_energies()


def _trainable(adapter):
    return {n for n, p in adapter.model_.named_parameters() if p.requires_grad}


def test_stress_is_the_strain_derivative_with_ase_sign(foundation, foundation_path, mo):
    """σ = 1/V dE/dε (positive = tensile): the adapter's float32 stress against central
    differences of the same model's energy in float64 (mace's own calculator, h = 1e-4).

    Tolerance, derived rather than tuned: the reference's error is its truncation,
    h²/6 · |d³E/dε³| / V ≈ 2e-8 eV/Å³ here (it was 9e-6 at h = 2e-3, and scales as h²), plus
    float64 rounding of the energy difference, |E| · 1e-16 / (2 h V) ≈ 4e-13; the float32
    stress's rounding is ~ sqrt(n_edges) · 2^-24 · |r_ij · f_ij| / V ≈ sqrt(3100) · 6e-8 · 6 eV
    / 860 Å³ ≈ 2e-8 for this 54-atom cell (r_max 5 Å). 5e-7 eV/Å³ is ten times their sum,
    so the CPU's float32 rounding cannot fail it, while a sign error on the smallest
    component checked (yz, -1.6e-6 eV/Å³) still would, by 6x."""
    from mace.calculators import MACECalculator

    ds, _ = mo
    atoms = next(a for a in ds.test if a.info["group"] == "Elastic" and len(a) == 54)
    stress = foundation.predict([atoms]).stress[0]
    exact = MACECalculator(model_paths=str(foundation_path), device="cpu", default_dtype="float64")
    h, volume = 1e-4, atoms.get_volume()
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / 2
            strain[j, i] += sign * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
            strained.calc = exact
            energies.append(strained.get_potential_energy())
        finite_difference = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[k] == pytest.approx(finite_difference, abs=5e-7), k


def test_mace_freeze_numbers_map_to_block_freezes(make):
    """MACE_FREEZE_TO_K reproduces mace's own `--freeze N` (get_params_options) exactly."""
    from mace.tools.scripts_utils import get_params_options

    adapter = make()

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


def test_registry_shows_the_same_native_freeze_names():
    for k, label in get_model("mace").native_freeze:
        n = int(label.rsplit(" ", 1)[1])
        assert MACE_FREEZE_TO_K[n] == k, label
