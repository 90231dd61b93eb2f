"""M3GNet adapter contract, against the real matgl library and the MatPES-PBE weights.

Runs in the m3gnet environment (``tox -e m3gnet``); skipped elsewhere. The weights are
looked up as the adapter does ($BENCH_WEIGHTS_DIR, ../shared/weights).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("matgl", reason="runs in the m3gnet environment: tox -e m3gnet")

import torch
from ase.build import bulk

from adapters.base import CheckpointUnavailable
from adapters.m3gnet_adapter import M3GNetAdapter
from adapters.training import History, TrainConfig, refit_reference_energies
from bench.registry import get_model
from tests.families.contract import AdapterContract, HotPathBenchmarks

torch.set_num_threads(1)  # 2-core CI machines; extra threads only contend
N_PARAMS = 664_221  # M3GNet-MatPES-PBE-v2025.1-PES
ADAPTER, CHECKPOINT = M3GNetAdapter, M3GNetAdapter.default_checkpoint


@pytest.fixture(scope="module")
def foundation(make):
    try:
        return make()
    except CheckpointUnavailable as exc:  # the weights mirror is missing: say so, skip
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def calculator(foundation):
    from matgl.ext.ase import PESCalculator

    return PESCalculator(foundation.model_, stress_unit="eV/A3")


class TestM3GNetContract(AdapterContract, HotPathBenchmarks):
    family = "m3gnet"
    calculator_atol = (1e-5, 1e-5, 1e-7)
    # measured 0.076-0.079 eV/Å after training vs 0.091 zero-shot over seeds 0-2
    train_slice, val_slice = slice(0, 7), slice(7, None)
    train_config = TrainConfig(epochs=8, lr=2e-3, batch_size=4, energy_weight=1.0)
    improvement = 0.95

    def test_export_keeps_the_references_of_a_foundation_saved_without_them(self, foundation, mo, tmp_path):
        """matgl rebuilds a saved Potential from its constructor arguments, then loads the
        state non-strictly: a foundation saved with element_refs=None (the adapter attaches
        references to it) must export them in those arguments, or matgl.load_model drops the
        refit E0 with only a log line (measured: 4.6 eV/atom)."""
        import matgl
        from matgl.apps.pes import Potential
        from matgl.ext.ase import PESCalculator

        pot = foundation.model_
        Potential(model=pot.model, data_mean=pot.data_mean, data_std=pot.data_std, element_refs=None,
                  calc_stresses=True).save(tmp_path / "bare")
        adapter = M3GNetAdapter(str(tmp_path / "bare")).load()
        assert adapter.reference_energies()[42] == 0.0  # attached by the adapter, not saved
        e0 = refit_reference_energies(adapter, mo[1][:5])[42]
        reloaded = matgl.load_model(adapter.export(tmp_path / "export"))
        index = list(reloaded.model.element_types).index("Mo")
        assert float(reloaded.element_refs.property_offset[index]) == pytest.approx(e0, abs=1e-6)
        frame = mo[0].test[0].copy()
        frame.calc = PESCalculator(reloaded, stress_unit="eV/A3")
        assert frame.get_potential_energy() == pytest.approx(adapter.predict([frame]).energy[0], abs=1e-4 * len(frame))

    def test_m3gnet_blocks_and_buffer_references(self, foundation):
        blocks = foundation.blocks()
        assert [b.name for b in blocks] == ["embedding", "interaction-0", "interaction-1",
                                            "interaction-2", "readout", "reference"]
        assert [b.n_params for b in blocks] == [5_952, 200_009, 200_009, 200_009, 58_242, 0]
        assert foundation.parameter_counts()["total"] == N_PARAMS
        assert foundation.supported_numbers() >= {1, 41, 42, 73, 74, 94}
        with pytest.raises(ValueError, match="buffers"):
            M3GNetAdapter().load().freeze(0, train_reference=True)

    def test_foundation_energies_are_close_to_the_dft_labels(self, foundation, mo):
        ds, _ = mo
        frames = [ds.test[0], ds.test[-1], next(a for a in ds.test if a.info["group"] == "Surface")]
        pred = foundation.predict(frames, stress=False)
        labels = np.array([a.calc.results["energy"] for a in frames])
        assert np.all(np.abs(pred.energy - labels) / pred.n_atoms < 0.1)  # eV/atom: refs are right

    def test_refit_keeps_element_types_order(self, foundation, make, mo):
        _, small = mo
        adapter = make()
        refit_reference_energies(adapter, small)
        # references are indexed by element_types (H..Pu without Po-Ra), not by Z - 1
        assert adapter.reference_energies()[94] == pytest.approx(
            float(adapter.model_.element_refs.property_offset[-1]))
        assert adapter.reference_energies()[94] == foundation.reference_energies()[94]

    def test_scratch_keeps_the_potential_normalisation(self, foundation, make):
        a = make(seed=3, scratch=True)
        assert torch.equal(a.model_.data_std, foundation.model_.data_std)
        assert a.reference_energies() == foundation.reference_energies()

    def test_student_is_a_small_m3gnet_for_the_given_elements(self, foundation, mo):
        student = M3GNetAdapter(seed=0).load(student={"units": 16, "nblocks": 1, "dim_node_embedding": 16,
                                                      "dim_edge_embedding": 16}, numbers=[42])
        assert student.supported_numbers() == {42} and student.reference_energies() == {42: 0.0}
        assert [b.kind for b in student.blocks()] == ["embedding", "interaction", "readout", "reference"]
        assert student.parameter_counts()["total"] < foundation.parameter_counts()["total"] / 10
        assert torch.equal(student.model_.data_std, foundation.model_.data_std)
        assert np.isfinite(student.predict(mo[1][:2]).forces).all()
        with pytest.raises(ValueError, match="unknown M3GNet setting"):
            M3GNetAdapter().load(student={"unitz": 16}, numbers=[42])

    def test_the_mp_2021_checkpoint_has_the_same_layout(self, foundation):
        try:
            mp = M3GNetAdapter("M3GNet-MP-2021.2.8-PES").load()
        except CheckpointUnavailable as exc:
            pytest.skip(str(exc))
        blocks = mp.blocks()  # units=64 instead of 128: same blocks, fewer parameters
        assert [b.name for b in blocks] == [b.name for b in foundation.blocks()]
        assert sum(b.n_params for b in blocks) == mp.parameter_counts()["total"] == 288_157
        assert mp.reference_energies()[42] != foundation.reference_energies()[42]
        info = get_model("m3gnet").checkpoint_info("M3GNet-MP-2021.2.8-PES")
        assert info.numbers == mp.supported_numbers() and info.cutoff == mp.cutoff

    def test_forces_are_minus_the_energy_gradient(self, foundation):
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


    def test_bcc_mo_lattice_constant_and_stress_are_physical(self, foundation):
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

    def test_checkpoints_resolve_from_the_weights_dir_or_fail_fast(self, foundation, tmp_path, monkeypatch):
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


def test_a_slab_file_gives_the_same_numbers_whatever_its_pbc_along_the_vacuum(foundation, tmp_path):
    """Issue 15's case: three rattled Cu(111) slabs with 12 Å of vacuum, labelled by EMT, written
    with pbc [T, T, F] (as ASE's surface builders make them) and with pbc True, read as a job
    reads its files: the same test errors (M3GNet's own Atoms2Graph made the open slab a
    molecule: force RMS vs EMT 0.68 eV/Å, against 0.021 periodic)."""
    from ase.build import fcc111
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from adapters.jobs.common import read_frames, test_metrics

    slabs = []
    for seed in range(3):
        slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
        slab.rattle(0.05, seed=seed)
        del slab.info["adsorbate_info"]
        slab.calc = EMT()
        slab.calc = SinglePointCalculator(slab, energy=slab.get_potential_energy(), forces=slab.get_forces(),
                                          stress=slab.get_stress())
        slabs.append(slab)
    metrics = {}
    for flag in (False, True):
        frames = [a.copy() for a in slabs]
        for atoms, original in zip(frames, slabs, strict=True):
            atoms.pbc = [True, True, flag]
            atoms.calc = SinglePointCalculator(atoms, **original.calc.results)
        write(tmp_path / f"slabs-{flag}.xyz", frames, format="extxyz")
        metrics[flag] = test_metrics(foundation, read_frames(str(tmp_path / f"slabs-{flag}.xyz")))
    for name in ("energy_rmse_mev_per_atom", "forces_rmse_mev_per_ang"):
        assert metrics[False][name] == pytest.approx(metrics[True][name], rel=1e-5, abs=1e-3), name
    assert metrics[True]["forces_rmse_mev_per_ang"] < 100  # 21 meV/Å measured; the molecule path: 680
    assert metrics[False]["stress_rmse_gpa"] is None  # an open slab's stress is not scored
    assert metrics[True]["stress_rmse_gpa"] is not None


def test_the_warm_up_step_is_recorded_apart_from_the_steady_state_timings():
    """The loop's timing summary (family-independent; run here, the lightest environment)."""
    hist = History(epochs=[{"epoch": 0}, {"epoch": 1}, {"epoch": 2}], train_s=20.0,
                   step_times_s=[7.0, 1.0, 2.0, 1.5], step_sizes=[2, 2, 2, 1])
    t = hist.as_dict()
    assert t["warmup_step_s"] == 7.0
    assert t["step_time_median_s"] == 1.5
    assert t["step_s_per_structure"] == 4.5 / 5
    assert t["s_per_epoch"] == (20.0 - (7.0 - 1.5)) / 2  # the warm-up's excess is paid once
    alone = History(epochs=[{"epoch": 0}, {"epoch": 1}], train_s=3.0, step_times_s=[2.0], step_sizes=[4]).as_dict()
    assert (alone["warmup_step_s"], alone["step_s_per_structure"], alone["s_per_epoch"]) == (2.0, 0.5, 3.0)
