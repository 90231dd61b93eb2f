"""The adapter interface every model family implements.

An adapter is thin: it loads a model (foundation checkpoint or same-architecture random
init), names its parameter blocks in forward order, turns ``ase.Atoms`` into the library's
graph once, and runs a batched forward pass. Training lives in ``adapters/training.py``,
shared by all families so comparisons are fair.

Units and shapes at this boundary (the ASE vocabulary):

* ``energy``  [n_structures]           eV (total energy)
* ``forces``  [n_atoms_total, 3]       eV/Å, = -dE/dx
* ``stress``  [n_structures, 3, 3]     eV/Å³, ASE sign (positive = tensile), i.e. 1/V dE/dε

``Predictions.stress`` is Voigt-6 in ASE order (xx, yy, zz, yz, xz, xy), like the labels.

Example:
    >>> adapter = CHGNetAdapter("0.3.0").load()
    >>> [b.name for b in adapter.blocks()]
    >>> adapter.freeze(5)          # embedding + 4 interaction blocks frozen
    >>> adapter.predict(frames).energy
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from datasets.periodicity import as_periodic

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from ase import Atoms


class CheckpointUnavailable(RuntimeError):
    """The foundation checkpoint cannot be had here; the message says how to supply it."""


class UnsupportedElements(ValueError):
    """The model has no parameters for some elements of the dataset."""


@dataclass(frozen=True)
class Block:
    """A group of parameters in forward order; ``kind`` is one of KINDS."""

    name: str
    kind: str
    prefixes: tuple[str, ...]
    n_params: int


KINDS = ("embedding", "interaction", "readout", "reference")


@dataclass
class Predictions:
    """Batched predictions in ASE units (see the module docstring)."""

    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray | None
    n_atoms: np.ndarray


class Adapter(abc.ABC):
    """Base class: constructors store settings only; learned state ends in ``_``."""

    family: ClassVar[str]
    default_checkpoint: ClassVar[str]
    export_format: ClassVar[str]  # what ``export`` writes (``bench.core.contract.ModelArtefact``)
    library_modules: ClassVar[tuple[str, ...]] = ()  # imported once by the worker's fork server
    predict_batch_size: ClassVar[int] = 16  # fastest batch for inference on CPU (measured per family)
    # on a GPU, big batches fill it: SevenNet-0 / MACE predict ran 23k / 41k atoms/s at batch 32 on an
    # H200 against 1.0k / 1.8k at batch 1 (../shared/notes/gpu.md)
    gpu_predict_batch_size: ClassVar[int] = 32
    # False where the library keeps E0 in buffers (MACE, M3GNet): then `--e0 train` is refused.
    reference_is_parameter: ClassVar[bool] = True

    def __init__(self, checkpoint: str | None = None, *, device: str = "cpu", seed: int = 0):
        self.checkpoint = checkpoint or self.default_checkpoint
        self.device = device
        self.seed = seed

    # -- family-specific pieces ---------------------------------------------------------
    @abc.abstractmethod
    def _build(self, *, scratch: bool) -> torch.nn.Module:
        """The foundation model, or the same architecture with random weights."""

    @abc.abstractmethod
    def block_layout(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, kind, parameter-name prefixes) in forward order; reference block last."""

    @property
    @abc.abstractmethod
    def cutoff(self) -> float:
        """The model's largest graph cutoff (Å): no edge, three-body term or message reaches
        farther, so a frame's periodic images beyond it change nothing."""

    @abc.abstractmethod
    def _featurize(self, atoms: Atoms) -> Any:
        """One fully periodic structure as the library's graph (``featurize`` hands it one)."""

    def collate(self, graphs: list) -> Any:
        """Featurized structures as one model input (data preparation, timed apart)."""
        return graphs

    @abc.abstractmethod
    def forward_batch(self, batch: Any, *, stress: bool) -> dict[str, torch.Tensor]:
        """Forward on a collated batch: ``energy`` [B] eV, ``forces`` [N,3] eV/Å, ``stress`` [B,3,3] eV/Å³."""

    @abc.abstractmethod
    def ase_calculator(self) -> Any:
        """The library's own ASE calculator on a copy of ``model_`` (calculators change the
        model they get: eval flags, ``requires_grad``): the per-structure speed baseline."""

    @abc.abstractmethod
    def reference_energies(self) -> dict[int, float]:
        """Per-element reference energy (eV per atom) the model adds to its output."""

    @abc.abstractmethod
    def set_reference_energies(self, e0: dict[int, float]) -> None:
        """Overwrite the per-element references for the given atomic numbers."""

    @abc.abstractmethod
    def supported_numbers(self) -> set[int]:
        """Atomic numbers the model has parameters for."""

    # -- shared behaviour ---------------------------------------------------------------
    def tensor(self, value) -> torch.Tensor:
        """``value`` as a float32 tensor on this adapter's device: every label, target and
        constant the shared code makes goes through here, so nothing lands on another device."""
        import torch

        return torch.as_tensor(np.asarray(value, dtype=np.float32), device=self.device)

    def periodic(self, atoms: Atoms) -> Atoms:
        """The frame as this model sees it: periodic along all three axes, with the same graph
        as the frame's own periodicity (``datasets.periodicity``); refused when no such frame
        exists for this cutoff. The one place every family's input passes, so no library's own
        handling of partial periodicity (M3GNet: any open axis makes a molecule) is ever used."""
        return as_periodic(atoms, self.cutoff)

    def featurize(self, atoms: Atoms) -> Any:
        """One structure as the library's graph; built once per structure and reused."""
        return self._featurize(self.periodic(atoms))

    def forward(self, graphs: list, *, stress: bool) -> dict[str, torch.Tensor]:
        return self.forward_batch(self.collate(graphs), stress=stress)

    def _build_student(self, architecture: dict, numbers: list[int]) -> torch.nn.Module:
        """A small from-scratch model of this family for ``numbers`` (distillation student)."""
        raise NotImplementedError(f"{self.family} has no student architecture; distil into m3gnet")

    def load(self, *, scratch: bool = False, student: dict | None = None,
             numbers: Sequence[int] = ()) -> Self:
        """The foundation, its architecture with random weights (``scratch``), or a small
        ``student`` architecture (hyperparameters of the family) for the elements ``numbers``."""
        import torch

        torch.manual_seed(self.seed)
        self.scratch_ = scratch or student is not None
        model = self._build_student(student, sorted(numbers)) if student is not None else self._build(scratch=scratch)
        self.model_ = model.to(self.device)
        self.accelerator_ = None
        if self.on_gpu:
            self.model_, self.accelerator_ = self._accelerate(self.model_)
        self.model_.train(False)
        self.frozen_k_ = 0
        return self

    def _accelerate(self, model: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
        """On a GPU: the model with the library's accelerated kernels where they are installed,
        and their name (None: plain e3nn/torch). Families without such kernels keep the model."""
        return model, None

    @property
    def on_gpu(self) -> bool:
        return str(self.device).startswith("cuda")

    @property
    def inference_batch_size(self) -> int:
        """Structures per forward pass for predict and validation, by device."""
        return self.gpu_predict_batch_size if self.on_gpu else self.predict_batch_size

    def blocks(self) -> list[Block]:
        params = dict(self.model_.named_parameters())
        blocks, seen = [], set()
        for name, kind, prefixes in self.block_layout():
            names = [p for p in params if p.startswith(prefixes)]
            seen.update(names)
            blocks.append(Block(name, kind, prefixes, sum(params[p].numel() for p in names)))
        missing = sorted(set(params) - seen)
        if missing:
            msg = f"{self.family}: parameters outside every block: {missing[:5]}"
            raise AssertionError(msg)
        return blocks

    def block_prefixes(self, *kinds: str) -> tuple[str, ...]:
        """Parameter-name prefixes of every block of the given kinds."""
        return tuple(p for _, kind, prefixes in self.block_layout() if kind in kinds for p in prefixes)

    def freeze(self, k: int, *, train_reference: bool = False) -> Self:
        """Freeze the first ``k`` non-reference blocks; the reference block trains only if asked."""
        layout = self.block_layout()
        if train_reference and not self.reference_is_parameter:
            raise ValueError(f"{self.family} keeps its reference energies in buffers, which "
                             "cannot train; use --e0 refit or --e0 foundation")
        n_free = len(layout) - 1
        if not 0 <= k <= n_free:
            raise ValueError(f"freeze level {k} out of range 0..{n_free} for {self.family}")
        frozen = tuple(p for _, _, prefixes in layout[:k] for p in prefixes)
        reference = layout[-1][2]
        for name, param in self.model_.named_parameters():
            if name.startswith(reference):
                param.requires_grad_(train_reference)
            else:
                param.requires_grad_(not name.startswith(frozen))
        self.frozen_k_ = k
        return self

    def parameter_counts(self) -> dict[str, int]:
        params = list(self.model_.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return {"trainable": trainable, "total": sum(p.numel() for p in params)}

    def check_elements(self, frames: Sequence[Atoms]) -> None:
        present = {int(z) for a in frames for z in a.numbers}
        missing = sorted(present - self.supported_numbers())
        if missing:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] for z in missing)
            raise UnsupportedElements(f"{self.family} ({self.checkpoint}) does not cover: {names}")

    @contextlib.contextmanager
    def no_parameter_grads(self):
        """Forces need gradients w.r.t. positions only: autograd then skips the weights."""
        flags = [(p, p.requires_grad) for p in self.model_.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    def predict(self, frames: Sequence[Atoms], *, batch_size: int | None = None,
                stress: bool = True, graphs: list | None = None) -> Predictions:
        """Batched prediction; ``graphs`` may pass already-featurized structures."""
        batch_size = batch_size or self.inference_batch_size
        self.check_elements(frames)
        graphs = graphs if graphs is not None else [self.featurize(a) for a in frames]
        energy, forces, stresses = [], [], []
        with self.no_parameter_grads():
            for start in range(0, len(graphs), batch_size):
                out = self.forward(graphs[start : start + batch_size], stress=stress)
                energy.append(out["energy"].detach().cpu().double().numpy())
                forces.append(out["forces"].detach().cpu().double().numpy())
                if stress:
                    stresses.append(out["stress"].detach().cpu().double().numpy())
        voigt = None
        if stress:
            full = np.concatenate(stresses)
            voigt = full.reshape(-1, 9)[:, [0, 4, 8, 5, 2, 1]]
        return Predictions(
            energy=np.concatenate(energy),
            forces=np.concatenate(forces),
            stress=voigt,
            n_atoms=np.array([len(a) for a in frames]),
        )

    def label(self, frames: Sequence[Atoms], *, stress: bool) -> list[Atoms]:
        """Copies of ``frames`` carrying this model's predictions as their labels (a
        foundation's replay labels, a teacher's distillation labels)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        pred = self.predict(frames, stress=stress)
        bounds = np.concatenate([[0], np.cumsum(pred.n_atoms)])
        labelled = []
        for i, atoms in enumerate(frames):
            copy = atoms.copy()
            results = {"energy": float(pred.energy[i]), "forces": pred.forces[bounds[i]:bounds[i + 1]]}
            if stress:
                results["stress"] = pred.stress[i]
            copy.calc = SinglePointCalculator(copy, **results)
            labelled.append(copy)
        return labelled

    # -- the trained model outside ftbench -------------------------------------------------
    def export(self, folder: Path) -> Path:
        """Save the model in its library's own format under ``folder`` (created); returns the
        file (matgl: the directory) that the library's loader reads. The trained weights, the
        refit reference energies and merged LoRA updates all live in the model's state, so
        the file carries them. A model still holding LoRA adapters is refused: the libraries'
        loaders cannot read them (``adapters.lora.merge`` first)."""
        from adapters.lora import parametrized

        left = parametrized(self.model_)
        if left:
            raise ValueError(f"{self.family}: {len(left)} module(s) still carry LoRA adapters (e.g. {left[0]}); "
                             "merge them (adapters.lora.merge) before exporting")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return self._export(folder)

    @abc.abstractmethod
    def _export(self, folder: Path) -> Path:
        """Write the library's native file(s) into ``folder``; return what its loader reads."""

    @classmethod
    @abc.abstractmethod
    def exported_calculator(cls, path: Path, device: str = "cpu") -> Any:
        """The library's own ASE calculator on a file ``export`` wrote, loaded by the library's
        own loader: what a user of the file does (MD jobs run on it)."""


def cpu_state_dict(model: torch.nn.Module) -> dict:
    """Detached CPU copies of a model's state: what the libraries' checkpoints hold."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
