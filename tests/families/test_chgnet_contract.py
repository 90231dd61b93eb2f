"""CHGNet adapter contract, against the real chgnet library and the 0.3.0 weights.

Runs in the chgnet environment (``tox -e chgnet``); skipped elsewhere.
"""

from __future__ import annotations

import pytest

pytest.importorskip("chgnet", reason="runs in the chgnet environment: tox -e chgnet")

import torch

from adapters.chgnet_adapter import CHGNetAdapter
from bench.registry import get_model
from tests.families.contract import AdapterContract, HotPathBenchmarks, mo_slab

torch.set_num_threads(2)
ADAPTER, CHECKPOINT = CHGNetAdapter, "0.3.0"


@pytest.fixture(scope="module")
def calculator(foundation):
    from chgnet.model import CHGNetCalculator

    return CHGNetCalculator(foundation.model_, use_device="cpu")


class TestCHGNetContract(AdapterContract, HotPathBenchmarks):
    family = "chgnet"
    stress_witness = (("mlearn-Mo", "Elastic"), ("snap-NbMoTaW", "Mo_Elastic"))

    def test_chgnet_block_sizes_and_trainable_atomref(self, make):
        adapter = make()
        blocks = adapter.blocks()
        assert [b.n_params for b in blocks] == [14_029, 116_096, 116_096, 116_096, 37_376, 12_738, 94]
        counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(7)]
        assert counts == [412_431, 398_402, 282_306, 166_210, 50_114, 12_738, 0]
        assert adapter.freeze(0, train_reference=True).parameter_counts()["trainable"] == 412_525


@pytest.mark.parametrize("name", ["0.2.0", "r2scan"])
def test_the_registry_knows_the_other_pretrained_checkpoints(name):
    """The registry's static elements and cutoff of CHGNet's other pretrained weights (in the
    wheel; the default one: the contract's registry test). 0.2.0's graph cutoff is 5 Å."""
    adapter = CHGNetAdapter(name).load()
    info = get_model("chgnet").checkpoint_info(name)
    assert info.numbers == adapter.supported_numbers() and info.cutoff == adapter.cutoff


def test_graphs_follow_atoms_pbc_as_chgnet_s_own_calculator_does(foundation, calculator):
    """The graph builder honours ``atoms.pbc`` (pymatgen's Lattice defaults to periodic along
    every axis): a slab open along c with a 3 Å gap, below the 6 Å cutoff, fed to the graph
    builder directly (``featurize`` refuses it), gives CHGNet's own calculator's energy, and
    differs from the same slab closed along c (measured before the fix: identical, 0.28
    eV/atom off the calculator)."""
    thin = mo_slab(vacuum=1.5)
    closed = mo_slab(vacuum=1.5, pbc=True)
    open_c = foundation.forward([foundation._featurize(thin)], stress=False)["energy"].item()
    periodic = foundation.forward([foundation._featurize(closed)], stress=False)["energy"].item()
    atoms = thin.copy()
    atoms.calc = calculator
    assert open_c == pytest.approx(atoms.get_potential_energy(), abs=1e-4 * len(thin))
    assert abs(open_c - periodic) > 0.1 * len(thin)
