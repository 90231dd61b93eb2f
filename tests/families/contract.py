"""The conformance checks every adapter passes, against its real library and weights.

A family's test module subclasses :class:`AdapterContract` (as ``Test<Family>Contract``),
sets the class attributes below, names ``ADAPTER`` and ``CHECKPOINT`` (``conftest.py``
turns them into the ``foundation`` and ``make(seed=0, scratch=False)`` fixtures, and
provides ``mo``, the mlearn-Mo data), and provides a ``calculator`` fixture: the
library's own ASE calculator for the foundation's weights.

Checks: blocks match the registry and cover every parameter; ``predict`` agrees with the
library's calculator (energy, forces, stress); the dataset's stress convention agrees with
the model (witness); trainable parameters shrink strictly with the freeze level; training
keeps frozen blocks bit-identical, changes the readout and improves the forces; the E0
refit solves its normal equation; scratch shares the architecture; seeds reproduce; LoRA
trains only its adapters and merges back exactly; soft-freeze gives each block kind its LR;
``label`` copies frames with the model's predictions; frames open along an axis
(``datasets.periodicity``) give the numbers of the fully periodic frame with the same graph
(a slab open along c, a cluster without a cell), slab stress in the periodic directions is
the strain derivative of its energy, a gap within the cutoff is refused by name; the
registry's static elements and cutoff are the model's (a module overrides the ``registered``
fixture where its foundation is a stand-in); a fine-tuned model exported in the library's native
format reloads with the library's own loader in a fresh process and predicts what the
adapter predicted.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bcc110
from torch.nn.utils import parametrize

from adapters import lora
from adapters.training import TrainConfig, refit_reference_energies, train
from adapters.training import _evaluate as training_evaluate
from adapters.training import _loss as training_loss
from adapters.training import _param_groups as training_param_groups
from adapters.training import _residuals as training_residuals
from adapters.training import _targets as training_targets
from bench.registry import get_model, resolve_strategy
from datasets import load_dataset
from datasets.periodicity import PeriodicityError

SURFACE_AND_ELASTIC = {"Surface", "Elastic"}


def forces_rmse(adapter, frames) -> float:
    pred = adapter.predict(frames)
    ref = np.concatenate([a.calc.results["forces"] for a in frames])
    return float(np.sqrt(np.mean((pred.forces - ref) ** 2)))


# |Δ| allowed between the reloaded export and the adapter: energy per atom (eV), forces (eV/Å),
# stress (eV/Å³, ~1.6 MPa); measured differences are float32 summation order, <= 2.3e-6 eV/atom
EXPORT_ATOL = (1e-4, 1e-3, 1e-5)
RELOAD_SCRIPT = Path(__file__).with_name("native_reload.py")


def fresh_reload(family: str, path: Path, frames, work: Path) -> dict[str, np.ndarray]:
    """Energy, forces and stress of ``frames`` from the library's own calculator on the
    exported ``path``, computed in a new process of this environment's python that cannot
    import ftbench (``native_reload.py``; no PYTHONPATH, cwd outside the project)."""
    from ase.io import write

    bare = [a.copy() for a in frames]  # positions, cell and numbers only
    write(work / "frames.extxyz", bare, format="extxyz")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(RELOAD_SCRIPT), family, str(path), str(work / "frames.extxyz"),
                           str(work / "reloaded.npz")], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(work / "reloaded.npz"))


def console_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """One of the library's command-line tools from this environment, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(Path(sys.executable).parent / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def count_weighted_residual(adapter, frames) -> float:
    """Σ n·(E_dft − E_model) / Σ n² (eV/atom): zero after a one-element least-squares E0 fit."""
    pred = adapter.predict(frames, stress=False)
    residual = np.array([a.calc.results["energy"] for a in frames]) - pred.energy
    n = pred.n_atoms.astype(float)
    return float(n @ residual / (n @ n))


F32_EPS = float(np.finfo(np.float32).eps)  # 2^-23: one ulp of 1.0
# the same graph evaluated twice in float32 (another summation order, or every position
# translated by float32 rounding) differs by a few ulps of each result; 64 ulps of the
# largest magnitude bounds it for these 4-12-atom structures without being loose enough to
# hide a real difference (an open axis treated as a molecule moves E by eV, F by 0.1-5 eV/Å)
ULPS = 64


def mo_slab(vacuum: float = 6.0, pbc=(True, True, False)) -> Atoms:
    """A rattled Mo bcc(110) slab, 2x2x3 (12 atoms); every family covers Mo."""
    slab = bcc110("Mo", size=(2, 2, 3), vacuum=vacuum)
    slab.rattle(0.05, seed=42)
    slab.pbc = pbc
    slab.info["source"] = f"mo-slab-vacuum-{vacuum:g}[0]"
    return slab


def mo_cluster(cell=None) -> Atoms:
    """A Mo4 tetrahedron (2.7 Å edges), without a cell unless given one."""
    cluster = Atoms("Mo4", positions=[[0, 0, 0], [2.7, 0, 0], [1.35, 2.338, 0], [1.35, 0.779, 2.205]])
    cluster.rattle(0.02, seed=1)
    if cell is not None:
        cluster.set_cell(cell)
        cluster.pbc = True
        cluster.center()
    return cluster


def in_plane_strain_derivative(adapter, slab: Atoms, i: int, j: int, h: float) -> tuple[float, float]:
    """(1/V) dE/dε_ij of ``slab`` for an in-plane strain, from the adapter's float32 energies,
    and its error bound. Central differences at h and 2h, Richardson-extrapolated (the h² error
    cancels; what is left, O(h⁴), is below 1e-7 eV/Å³ for |ε| ≤ 1 %); each energy's float32
    rounding is at most ULPS/4 ulps of |E|, and the extrapolation multiplies the differences'
    rounding δE/h by (4 + 1/2)/3, so the bound is 1.5 · (ULPS/4 · eps · |E|) / h / V."""
    def energy(e: float) -> float:
        strain = np.eye(3)
        strain[i, j] += e / 2
        strain[j, i] += e / 2
        strained = slab.copy()
        strained.set_cell(slab.cell[:] @ strain, scale_atoms=True)
        return float(adapter.predict([strained], stress=False).energy[0])

    volume = abs(np.linalg.det(slab.cell[:]))
    d1, d2 = ((energy(k * h) - energy(-k * h)) / (2 * k * h) / volume for k in (1, 2))
    rounding = ULPS / 4 * F32_EPS * abs(energy(0.0))
    return (4 * d1 - d2) / 3, 1.5 * rounding / h / volume


class AdapterContract:
    family: str
    # |Δ| allowed against the library's calculator: energy per atom (eV), forces, stress
    calculator_atol: tuple[float, float, float] = (2e-4, 2e-4, 2e-6)
    # (dataset, group) pairs whose strained cells test the converters' stress convention
    stress_witness: tuple[tuple[str, str], ...] = (("mlearn-Mo", "Elastic"),)
    # short freeze-interactions training on the small Mo frames: train/val slices, config,
    # and the factor by which test force RMSE must beat the starting model
    train_slice: slice = slice(0, 8)
    val_slice: slice = slice(8, 11)
    # forces-only emphasis (energy weight 1): the check is that training moves the forces
    train_config: TrainConfig = TrainConfig(epochs=4, lr=2e-3, batch_size=4, energy_weight=1.0)
    improvement: float = 1.0
    # the export test's LoRA update: each adapted matrix moved by this fraction of its own scale
    export_lora_scale: float = 0.05

    def test_blocks_match_the_registry_and_cover_every_parameter(self, foundation):
        blocks = foundation.blocks()  # raises if a parameter belongs to no block
        assert [b.kind for b in blocks[:-1]] == list(get_model(self.family).blocks)
        assert blocks[-1].kind == "reference"
        assert all(b.n_params > 0 for b in blocks[:-1])
        assert len({b.name for b in blocks}) == len(blocks)
        assert sum(b.n_params for b in blocks) == foundation.parameter_counts()["total"]
        assert next(foundation.model_.parameters()).dtype == torch.float32

    def test_predict_agrees_with_the_library_calculator(self, foundation, calculator, mo):
        ds, _ = mo
        frames = [ds.test[0], ds.test[-1], next(a for a in ds.test if a.info["group"] == "Surface")]
        pred = foundation.predict(frames)
        e_tol, f_tol, s_tol = self.calculator_atol
        offset = 0
        for i, atoms in enumerate(frames):
            atoms = atoms.copy()
            atoms.calc = calculator
            n = len(atoms)
            assert pred.energy[i] == pytest.approx(atoms.get_potential_energy(), abs=e_tol * n)
            np.testing.assert_allclose(pred.forces[offset : offset + n], atoms.get_forces(), atol=f_tol)
            np.testing.assert_allclose(pred.stress[i], atoms.get_stress(voigt=True), atol=s_tol)
            offset += n

    def test_adapter_calculator_is_the_library_s_and_leaves_the_model_alone(self, foundation, calculator, mo):
        """``ase_calculator()`` (the timing job's baseline) gives the library's numbers on a copy."""
        atoms, flags = mo[0].test[0].copy(), [p.requires_grad for p in foundation.model_.parameters()]
        atoms.calc = foundation.ase_calculator()
        energy = atoms.get_potential_energy()
        atoms.calc = calculator
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=self.calculator_atol[0] * len(atoms))
        assert [p.requires_grad for p in foundation.model_.parameters()] == flags
        assert foundation.predict(mo[0].test[:2]).energy.shape == (2,)  # still batched

    def test_dataset_stress_convention_matches_the_model(self, foundation):
        """The converters' stress order and sign agree with an independent model (the witness)."""
        if not self.stress_witness:
            pytest.skip(f"{self.family}: no trustworthy pretrained witness here")
        for name, group in self.stress_witness:
            ds = load_dataset(name)
            frames = [a for a in ds.pool if a.info["group"] == group][:12]
            pred = foundation.predict(frames).stress
            ref = np.array([a.calc.results["stress"] for a in frames])
            excited = [k for k in range(6) if np.std(ref[:, k]) > 1e-3 * units.GPa]
            assert {0, 1, 2} <= set(excited), name
            for k in excited:
                assert np.corrcoef(pred[:, k], ref[:, k])[0, 1] > 0.8, (name, k)

    def test_freezing_shrinks_trainable_parameters_strictly(self, make):
        adapter = make()
        n_free = len(adapter.blocks()) - 1
        counts = [adapter.freeze(k).parameter_counts()["trainable"] for k in range(n_free + 1)]
        assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
        assert counts[-1] == 0
        k = resolve_strategy("freeze-interactions", get_model(self.family)).freeze_k
        assert counts[k] == adapter.blocks()[k].n_params  # only the readout trains
        with pytest.raises(ValueError, match="out of range"):
            adapter.freeze(n_free + 1)

    def test_training_keeps_frozen_blocks_and_improves_forces(self, make, mo):
        ds, small = mo
        k = resolve_strategy("freeze-interactions", get_model(self.family)).freeze_k
        adapter = make(seed=0).freeze(k)
        test = [a for a in ds.test if a.info["group"] in SURFACE_AND_ELASTIC]
        before_training = forces_rmse(adapter, test)
        refit_reference_energies(adapter, small[self.train_slice])
        before = {n: p.detach().clone() for n, p in adapter.model_.named_parameters()}
        buffers = {n: b.clone() for n, b in adapter.model_.named_buffers()}
        hist = train(adapter, small[self.train_slice], small[self.val_slice], self.train_config)
        assert len(hist.epochs) >= 2 and hist.step_times_s
        *frozen_blocks, readout, reference = adapter.blocks()
        frozen = tuple(p for b in [*frozen_blocks, reference] for p in b.prefixes)
        changed = []
        for name, param in adapter.model_.named_parameters():
            if name.startswith(frozen):
                assert torch.equal(param, before[name]), f"frozen {name} changed"
            elif name.startswith(readout.prefixes) and not torch.equal(param, before[name]):
                changed.append(name)
        assert changed, "no readout parameter changed"
        for name, buf in adapter.model_.named_buffers():  # E0 and scale buffers stay fixed too
            if buf.is_floating_point() and name in buffers:
                assert torch.equal(buf, buffers[name]), f"buffer {name} changed"
        assert forces_rmse(adapter, test) < self.improvement * before_training

    def test_refit_solves_the_least_squares_normal_equation(self, make, mo):
        _, small = mo
        adapter = make()
        before = count_weighted_residual(adapter, small)
        old = adapter.reference_energies()
        new = refit_reference_energies(adapter, small)
        assert set(new) == {42}  # Mo only; other elements untouched
        assert adapter.reference_energies()[42] == pytest.approx(new[42], abs=1e-6)
        assert new[42] - old[42] == pytest.approx(before, abs=1e-4)
        assert abs(count_weighted_residual(adapter, small)) < 1e-4 < abs(before)
        unchanged = {z: v for z, v in adapter.reference_energies().items() if z != 42}
        assert unchanged == {z: v for z, v in old.items() if z != 42}

    def test_scratch_shares_the_architecture_and_seeds_reproduce(self, foundation, make, mo):
        _, small = mo
        a, b = make(seed=3, scratch=True), make(seed=3, scratch=True)
        shapes = {n: p.shape for n, p in foundation.model_.named_parameters()}
        assert {n: p.shape for n, p in a.model_.named_parameters()} == shapes
        readout = foundation.blocks()[-2].prefixes
        fnd, new = dict(foundation.model_.named_parameters()), dict(a.model_.named_parameters())
        assert any(not torch.equal(new[n], fnd[n]) for n in fnd if n.startswith(readout))
        cfg = TrainConfig(epochs=1, batch_size=2)
        ha, hb = train(a, small[:4], small[4:6], cfg), train(b, small[:4], small[4:6], cfg)
        assert np.isfinite(ha.epochs[1]["train_loss"])
        assert ha.epochs[1]["train_loss"] == hb.epochs[1]["train_loss"]
        assert ha.epochs[1]["val_loss"] == hb.epochs[1]["val_loss"]

    def test_lora_trains_only_its_adapters_and_merges_back_exactly(self, make, mo):
        _, small = mo
        adapter = make(seed=0)
        plain = {n: p.shape for n, p in adapter.model_.named_parameters()}
        start = adapter.predict(small[:2], stress=False).energy
        adapter.freeze(len(get_model(self.family).blocks))
        adapted = lora.inject(adapter.model_, adapter.block_prefixes("interaction", "readout"), rank=4, alpha=8)
        assert adapted and adapter.blocks()  # adapters sit inside their blocks
        trainable = {n for n, p in adapter.model_.named_parameters() if p.requires_grad}
        assert trainable and all(".lora_" in n for n in trainable)
        np.testing.assert_allclose(adapter.predict(small[:2], stress=False).energy, start, atol=1e-5)  # B = 0
        base = {n: p.detach().clone() for n, p in adapter.model_.named_parameters() if n not in trainable}
        train(adapter, small[:4], small[4:6], TrainConfig(epochs=2, batch_size=2, lr=1e-2))
        assert all(torch.equal(p, base[n]) for n, p in adapter.model_.named_parameters() if n in base)
        unmerged = adapter.predict(small[:2])
        assert np.abs(unmerged.energy - start).max() > 1e-6, "training the adapters changed nothing"
        assert lora.merge(adapter.model_) == len(adapted)
        merged = adapter.predict(small[:2])
        assert {n: p.shape for n, p in adapter.model_.named_parameters()} == plain  # plain model again
        np.testing.assert_allclose(merged.energy, unmerged.energy, rtol=0, atol=1e-4)
        np.testing.assert_allclose(merged.forces, unmerged.forces, rtol=0, atol=1e-4)

    def test_soft_freeze_gives_each_block_kind_its_learning_rate(self, make):
        adapter = make().freeze(0)
        factors = {"embedding": 0.0, "interaction": 0.1, "readout": 1.0}
        groups = training_param_groups(adapter, TrainConfig(lr=2e-3, lr_factors=factors))
        assert sorted(g["lr"] for g in groups) == pytest.approx([2e-4, 2e-3])
        kind_of = {p: b.kind for b in adapter.blocks() for n, p in adapter.model_.named_parameters()
                   if n.startswith(b.prefixes)}
        for group in groups:
            kinds = {kind_of[p] for p in group["params"]}
            assert kinds == ({"interaction"} if group["lr"] < 1e-3 else {"readout"}), kinds
        embedding = adapter.blocks()[0].prefixes
        assert not any(p.requires_grad for n, p in adapter.model_.named_parameters() if n.startswith(embedding))

    def test_training_tensors_live_on_the_adapter_s_device(self, make, mo):
        """Every tensor the shared loop creates is on the adapter's device. With torch's
        default device moved elsewhere (meta), a tensor made without an explicit device lands
        there and the loss fails, as a CPU tensor next to a model on a GPU would. (The
        libraries' own collation and forward pass stay outside: some build on the default
        device and copy, which works on a GPU but not from meta.)"""
        adapter = make().freeze(0)
        batch = training_targets(adapter, mo[1][:2], with_stress=True)
        device = torch.device(adapter.device).type
        assert {t.forces.device.type for t in batch} | {t.energy.device.type for t in batch} == {device}
        adapter.model_.train(True)
        out = adapter.forward_batch(adapter.collate([t.graph for t in batch]), stress=True)
        with torch.device("meta"):
            residuals = training_residuals(out, batch, True)
            loss = sum((r**2).mean() for r in residuals.values())
        assert loss.device.type == device and math.isfinite(loss.item())
        loss.backward()
        adapter.model_.train(False)
        assert all(math.isfinite(v) for v in training_evaluate(adapter, batch, TrainConfig(), True).values())

    @pytest.fixture(scope="class")
    @classmethod
    def exported(cls, make, mo, tmp_path_factory):
        """A short fine-tune that changes everything an export must carry: the E0 refit,
        trained weights (embedding frozen) and a LoRA update merged back; then the native
        export. Returns the path, the adapter's predictions on an AIMD, a vacancy and a surface
        test cell, and how far the refit, the training and the LoRA update moved them. (The
        LoRA factors B are drawn, not trained: training restores its best epoch, which may be
        the start, B = 0, and this test is about the merged weights reaching the file.)"""
        ds, small = mo
        frames = [next(a for a in ds.test if a.info["group"] == g) for g in ("AIMD-NVT", "Vacancy", "Surface")]
        adapter = make(seed=0).freeze(1)
        foundation = adapter.predict(frames)
        e0 = adapter.reference_energies()[42]
        refit_reference_energies(adapter, small[:5])
        e0_shift = adapter.reference_energies()[42] - e0
        train(adapter, small[:5], small[5:7], TrainConfig(epochs=1, batch_size=2, lr=2e-3))
        trained = adapter.predict(frames)
        lora.inject(adapter.model_, adapter.block_prefixes("interaction", "readout"), rank=4, alpha=8)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for module in adapter.model_.modules():
                if parametrize.is_parametrized(module, "weight"):
                    delta, weight = module.parametrizations["weight"][0], module.parametrizations["weight"].original
                    b = torch.randn(delta.lora_b.shape, generator=gen)
                    step = (delta.scale * b @ delta.lora_a).std()
                    delta.lora_b.copy_(b * cls.export_lora_scale * weight.std() / step)
        lora.merge(adapter.model_)
        pred = adapter.predict(frames)
        path = adapter.export(tmp_path_factory.mktemp(f"{cls.family}-export"))
        return {"path": path, "frames": frames, "pred": pred, "e0_shift": e0_shift,
                "weights_df": np.abs(trained.forces - foundation.forces).max(),
                "lora_df": np.abs(pred.forces - trained.forces).max()}

    def test_export_reloads_natively_in_a_fresh_process_and_agrees(self, exported, tmp_path):
        """The library's own loader and calculator, in a process without ftbench, predict what
        the adapter predicted (energy <= 1e-4 eV/atom, forces <= 1e-3 eV/Å, stress <= 1e-5
        eV/Å³). The refit E0 moved every energy, and the training and the merged LoRA update
        each moved the forces, by at least 10x those limits: an export that dropped any of
        them would fail."""
        got, pred = fresh_reload(self.family, exported["path"], exported["frames"], tmp_path), exported["pred"]
        e_tol, f_tol, s_tol = EXPORT_ATOL
        np.testing.assert_allclose(got["energy"] / pred.n_atoms, pred.energy / pred.n_atoms, rtol=0, atol=e_tol)
        np.testing.assert_allclose(got["forces"], pred.forces, rtol=0, atol=f_tol)
        np.testing.assert_allclose(got["stress"], pred.stress, rtol=0, atol=s_tol)
        assert abs(exported["e0_shift"]) > 10 * e_tol  # per atom: the whole test set is Mo
        assert exported["weights_df"] > 10 * f_tol and exported["lora_df"] > 10 * f_tol, \
            (exported["weights_df"], exported["lora_df"])

    def test_export_refuses_a_model_with_unmerged_lora(self, make, tmp_path):
        adapter = make()
        lora.inject(adapter.model_, adapter.block_prefixes("interaction", "readout"), rank=2, alpha=4)
        with pytest.raises(ValueError, match="still carry LoRA adapters"):
            adapter.export(tmp_path)
        assert not list(tmp_path.iterdir())

    def test_label_copies_frames_with_the_model_predictions(self, foundation, mo):
        frames = mo[1][:3]
        labelled = foundation.label(frames, stress=True)
        pred = foundation.predict(frames)
        assert [a.calc.results["energy"] for a in labelled] == pytest.approx(pred.energy.tolist())
        np.testing.assert_allclose(np.concatenate([a.calc.results["forces"] for a in labelled]), pred.forces)
        assert labelled[0].info["group"] == frames[0].info["group"]
        assert frames[0].calc.results["energy"] != labelled[0].calc.results["energy"]  # DFT kept


    def test_a_slab_open_along_c_gives_the_fully_periodic_numbers(self, foundation):
        """pbc [T, T, F] vs pbc True, 12 Å of vacuum (over every cutoff): the same graph, so
        the same energy and forces to float32 rounding (M3GNet on its own: 2.9 eV/atom apart)."""
        open_c, closed = mo_slab(), mo_slab(pbc=True)
        pred = foundation.predict([open_c, closed])
        n = len(open_c)
        assert pred.energy[0] == pytest.approx(pred.energy[1], abs=ULPS * F32_EPS * abs(pred.energy[1]))
        np.testing.assert_allclose(pred.forces[:n], pred.forces[n:], rtol=0,
                                   atol=ULPS * F32_EPS * np.abs(pred.forces).max())
        assert np.abs(pred.forces).max() > 0.05  # the rattle makes the comparison non-trivial

    def test_slab_stress_in_the_periodic_directions_is_the_strain_derivative(self, foundation):
        """σ_xx, σ_yy, σ_xy of the open slab = (1/V) dE/dε of its energy (V: the cell with its
        vacuum), the bound derived from float32 rounding (``in_plane_strain_derivative``). An
        inflated volume (MACE's own handling of an open axis: V × 17 here) fails it."""
        slab = mo_slab()
        stress = foundation.predict([slab]).stress[0]
        checked = 0.0
        for k, (i, j) in ((0, (0, 0)), (1, (1, 1)), (5, (0, 1))):
            reference, bound = in_plane_strain_derivative(foundation, slab, i, j, h=5e-3)
            assert stress[k] == pytest.approx(reference, abs=bound), (k, stress[k], reference, bound)
            checked = max(checked, abs(reference) / bound)
        assert checked > 10  # the surface stress is far above the bound: a sign error or V × 17 would fail

    def test_a_cluster_without_a_cell_gives_the_numbers_of_a_big_box(self, foundation):
        """A Mo4 cluster with pbc False and no cell is given one with cutoff + 1 Å of vacuum: the
        same energy and forces as in a 20 Å periodic box (CHGNet on its own: LinAlgError)."""
        bare, boxed = mo_cluster(), mo_cluster(cell=[20.0, 20.0, 20.0])
        pred = foundation.predict([bare, boxed])
        assert foundation.periodic(bare).pbc.all()
        assert pred.energy[0] == pytest.approx(pred.energy[1], abs=ULPS * F32_EPS * abs(pred.energy[1]))
        np.testing.assert_allclose(pred.forces[:4], pred.forces[4:], rtol=0,
                                   atol=ULPS * F32_EPS * np.abs(pred.forces).max())

    def test_a_slab_whose_gap_is_within_the_cutoff_is_refused_by_name(self, foundation):
        thin = mo_slab(vacuum=1.5)  # a 3 Å gap (2.98 after the rattle): below every family's cutoff
        with pytest.raises(PeriodicityError, match=r"mo-slab-vacuum-1\.5\[0\]: field 'pbc': .*along c the gap "
                           r"between periodic images is 2\.9\d Å, not more than the model's cutoff"):
            foundation.predict([thin])

    def test_registry_knows_the_checkpoint_s_elements_and_cutoff(self, registered):
        """``bench/registry.py``'s static facts (check-data and planning use them without torch)
        are the real model's."""
        info = get_model(self.family).checkpoint_info(registered.checkpoint)
        assert info is not None, registered.checkpoint
        assert info.numbers == registered.supported_numbers()
        assert info.cutoff == registered.cutoff


class HotPathBenchmarks:
    """pytest-benchmark timings of the hot paths on four small Mo cells (recorded, not asserted:
    speed targets are judged by the sweep's timing jobs, as ratios within one run)."""

    @pytest.fixture(scope="class")
    def cells(self, mo):
        return mo[1][:4]

    def test_benchmark_graph_building(self, benchmark, foundation, cells):
        graphs = benchmark.pedantic(lambda: [foundation.featurize(a) for a in cells], rounds=3, warmup_rounds=1)
        assert len(graphs) == len(cells)

    def test_benchmark_batched_predict(self, benchmark, foundation, cells):
        graphs = [foundation.featurize(a) for a in cells]
        pred = benchmark.pedantic(lambda: foundation.predict(cells, graphs=graphs), rounds=3, warmup_rounds=1)
        assert np.isfinite(pred.forces).all()

    def test_benchmark_training_step(self, benchmark, make, cells):
        adapter = make().freeze(0)
        cfg = TrainConfig(batch_size=len(cells))
        batch = training_targets(adapter, cells, with_stress=True)
        opt = torch.optim.AdamW([p for p in adapter.model_.parameters() if p.requires_grad], lr=1e-5)
        adapter.model_.train(True)

        def step() -> float:
            loss = training_loss(adapter, batch, cfg, True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()

        assert math.isfinite(benchmark.pedantic(step, rounds=3, warmup_rounds=1))
