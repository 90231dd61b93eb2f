"""CHGNet (chgnet 0.4.2) adapter: pretrained 0.3.0/0.2.0/r2scan from the wheel, or a path.

Blocks in forward order (``CHGNet._compute``):

* ``embedding``: atom/bond/angle embeddings and the learnable RBF/Fourier bases;
* ``interaction-0..2``: atom conv i + bond conv i + angle update i;
* ``interaction-3``: the last atom conv (n_conv = 4);
* ``readout``: ``readout_norm``, ``mlp`` and the magmom head ``site_wise`` (no energy
  gradient reaches ``site_wise``; it is listed so every parameter belongs to a block);
* ``reference``: ``composition_model`` (AtomRef: eV per atom for each element).

CHGNet predicts energy per atom and stress in GPa; this adapter converts to total eV and
eV/Å³ (CHGNet's stress is already 1/V dE/dε, ASE's sign).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from adapters.base import Adapter, CheckpointUnavailable, cpu_state_dict
from bench.core.metrics import EV_PER_A3_TO_GPA

if TYPE_CHECKING:
    from ase import Atoms

PRETRAINED = ("0.3.0", "0.2.0", "r2scan")


class CHGNetAdapter(Adapter):
    family = "chgnet"
    default_checkpoint = "0.3.0"
    export_format = "chgnet-file"
    library_modules = ("chgnet.model", "chgnet.model.dynamics", "pymatgen.core")
    # CHGNet keeps the double-backward graph (~0.5 GB per 54-atom cell): small batches are
    # both faster and lighter for inference (measured: batch 2 1.3 s, batch 4 2.3 s / 8 cells).
    predict_batch_size = 2

    def _build(self, *, scratch: bool) -> torch.nn.Module:
        from chgnet.model import CHGNet

        if self.checkpoint in PRETRAINED:
            model = CHGNet.load(model_name=self.checkpoint, use_device="cpu", verbose=False)
        elif Path(self.checkpoint).is_file():
            model = CHGNet.from_file(self.checkpoint)
        else:
            raise CheckpointUnavailable(
                f"CHGNet checkpoint {self.checkpoint!r} is neither a pretrained name "
                f"({', '.join(PRETRAINED)}) nor an existing file; pass --checkpoint PATH"
            )
        if scratch:
            args = {k: v for k, v in model.model_args.items() if k != "version"}
            model = CHGNet(**args)  # same architecture; AtomRef re-initialised from MPtrj
        return model

    def block_layout(self) -> list[tuple[str, str, tuple[str, ...]]]:
        n_conv = self.model_.n_conv
        layout = [(
            "embedding", "embedding",
            ("atom_embedding.", "bond_basis_expansion.", "bond_embedding.", "bond_weights_ag.",
             "bond_weights_bg.", "angle_basis_expansion.", "angle_embedding."),
        )]
        for i in range(n_conv - 1):
            layout.append((f"interaction-{i}", "interaction",
                           (f"atom_conv_layers.{i}.", f"bond_conv_layers.{i}.", f"angle_layers.{i}.")))
        layout.append((f"interaction-{n_conv - 1}", "interaction", (f"atom_conv_layers.{n_conv - 1}.",)))
        layout.append(("readout", "readout", ("readout_norm.", "mlp.", "site_wise.")))
        layout.append(("reference", "reference", ("composition_model.",)))
        return layout

    def ase_calculator(self):
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(copy.deepcopy(self.model_), use_device=self.device)

    @property
    def cutoff(self) -> float:
        return float(self.model_.graph_converter.atom_graph_cutoff)  # the bond graph's (3 Å) is inside it

    def _featurize(self, atoms: Atoms) -> Any:
        from pymatgen.core import Lattice, Structure

        # pymatgen's Lattice is periodic along all three axes unless told (featurize passes
        # fully periodic frames; the library's own calculator carries atoms.pbc the same way)
        structure = Structure(Lattice(atoms.cell[:], pbc=tuple(bool(p) for p in atoms.pbc)),
                              atoms.get_chemical_symbols(),
                              atoms.positions, coords_are_cartesian=True)
        return self.model_.graph_converter(structure).to(self.device)

    def forward_batch(self, batch: list, *, stress: bool) -> dict[str, torch.Tensor]:
        # CHGNet batches inside its forward (bond bases need gradients w.r.t. positions), so
        # collate is the identity and that work counts as model time, not data preparation.
        out = self.model_(batch, task="efs" if stress else "ef")
        n_atoms = out["atoms_per_graph"].to(out["e"].dtype)
        result = {"energy": out["e"] * n_atoms, "forces": torch.cat(out["f"], dim=0)}
        if stress:
            result["stress"] = torch.stack(out["s"]).reshape(-1, 3, 3) / EV_PER_A3_TO_GPA
        return result

    def _export(self, folder: Path) -> Path:
        """``{"model": CHGNet.as_dict()}``, what ``CHGNet.from_file`` reads (chgnet's trainer
        adds optimizer state). The refit references are ``composition_model.fc.weight``, a
        parameter, so they are in the state dict; ``model_args`` rebuilds the architecture."""
        path = folder / "chgnet.pth.tar"
        torch.save({"model": {"state_dict": cpu_state_dict(self.model_),
                              "model_args": copy.deepcopy(self.model_.model_args)}}, path)
        return path

    @classmethod
    def exported_calculator(cls, path: Path, device: str = "cpu"):
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=CHGNet.from_file(str(path)), use_device=device)

    def reference_energies(self) -> dict[int, float]:
        weight = self.model_.composition_model.fc.weight.detach()[0]
        return {z: float(weight[z - 1]) for z in self.supported_numbers()}

    def set_reference_energies(self, e0: dict[int, float]) -> None:
        weight = self.model_.composition_model.fc.weight
        with torch.no_grad():
            for z, value in e0.items():
                weight[0, z - 1] = value

    def supported_numbers(self) -> set[int]:
        return set(range(1, self.model_.composition_model.max_num_elements + 1))
