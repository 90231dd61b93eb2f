"""SevenNet (sevenn 0.13.0) adapter: 7net-0 (SevenNet-0 11Jul2024) from the wheel, any other
name ``sevenn.util.pretrained_name_to_path`` knows (downloaded by sevenn where its host
answers, refused at once offline), or a path.

Blocks in forward order (``AtomGraphSequential``, built by ``sevenn.model_build``):

* ``embedding``: ``edge_embedding`` (trainable Bessel coefficients) and
  ``onehot_to_feature_x`` (the species embedding; ``onehot_idx_to_onehot`` has no weights);
* ``interaction-t`` (t = 0..4 for 7net-0): every ``{t}_*`` module (self-connection intro,
  self-interaction 1, convolution, self-interaction 2; outro and gate have no weights);
* ``readout``: ``reduce_input_to_hidden`` and ``reduce_hidden_to_energy``;
* ``reference``: ``rescale_atomic_energy`` (SpeciesWiseRescale: per-species ``scale`` and
  ``shift``, parameters; the shift is the reference energy in eV per atom).

The convolutions' ``denominator`` (sqrt of the average neighbour count) is a parameter that
sevenn keeps fixed unless ``train_denominator``; ``freeze`` keeps it so. SevenNet's stress
is ``-(1/V) dE/dε`` in eV/Å³, order (xx, yy, zz, xy, yz, zx); this adapter flips the sign
and returns the 3x3 tensor (what ``SevenNetCalculator.output_to_results`` does for Voigt).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from unittest import mock

import torch

from adapters.base import Adapter, CheckpointUnavailable, cpu_state_dict
from adapters.offline import reachable

if TYPE_CHECKING:
    from ase import Atoms

REFERENCE_MODULE = "rescale_atomic_energy"


def _download_if_online(download):
    """sevenn's own download where its host answers; offline, a fast actionable refusal."""

    def guarded(path: str, url: str) -> str:
        how = f"fetch {url} where there is network access and pass --checkpoint PATH"
        if not reachable(url):
            raise CheckpointUnavailable(
                f"SevenNet checkpoint not found at {path} (nor in ~/.cache/sevennet) and its "
                f"download host is unreachable; {how}")
        try:
            return download(path, url)
        except Exception as exc:  # any download failure: say how to supply the file
            raise CheckpointUnavailable(f"downloading {url} failed ({exc}); {how}") from exc

    return guarded


class SevenNetAdapter(Adapter):
    family = "sevennet"
    default_checkpoint = "7net-0"
    export_format = "sevenn-checkpoint"
    library_modules = ("sevenn.util", "sevenn.model_build", "sevenn.atom_graph_data", "sevenn.calculator",
                       "sevenn.train.dataload")
    # e3nn work grows with the edges and bigger batches only add memory traffic on CPU.
    # Measured (1 thread, 8 Mo cells of 54 atoms, best of 3 interleaved runs, idle machine):
    # inference 0.34 / 0.35 / 0.39 / 0.47 s per cell at batch 1 / 2 / 4 / 8; training
    # forward+backward with stress 1.07 / 1.29 / 1.46 s per cell at batch 1 / 2 / 4.
    predict_batch_size = 1

    def _checkpoint_path(self) -> str:
        from sevenn import util

        if Path(self.checkpoint).is_file():
            return str(self.checkpoint)
        try:  # resolve the name; sevenn downloads the newer checkpoints on first use
            guard = _download_if_online(util.download_checkpoint)
            with mock.patch.object(util, "download_checkpoint", guard):
                return util.pretrained_name_to_path(str(self.checkpoint))
        except (ValueError, FileNotFoundError) as err:
            raise CheckpointUnavailable(
                f"SevenNet checkpoint {self.checkpoint!r} is neither a pretrained name on disk "
                f"(e.g. 7net-0, 7net-l3i5) nor an existing file ({err}); pass --checkpoint PATH"
            ) from err

    def _build(self, *, scratch: bool) -> torch.nn.Module:
        from sevenn import util
        from sevenn.model_build import build_E3_equivariant_model

        checkpoint = util.load_checkpoint(self._checkpoint_path())
        config = copy.deepcopy(checkpoint.config)  # build_model writes into cp.config
        model = checkpoint.build_model()
        if model.modal_map:
            raise ValueError(f"{self.checkpoint!r} is a multi-fidelity SevenNet model; this "
                             "adapter supports single-fidelity checkpoints (e.g. 7net-0)")
        if scratch:
            # Same config, fresh weights. The normalisation constants (conv denominators) are
            # data statistics, not weights: old checkpoints store them only in the state dict.
            n_layers = config["num_convolution_layer"]
            config["conv_denominator"] = [
                float(model.get_submodule(f"{t}_convolution").denominator) for t in range(n_layers)
            ]
            model = build_E3_equivariant_model(config)
        model.set_is_batch_data(True)
        self.cutoff_ = float(config["cutoff"])
        reference = f"{REFERENCE_MODULE}."
        self.fixed_ = tuple(n for n, p in model.named_parameters()
                            if not p.requires_grad and not n.startswith(reference))
        return model

    def _accelerate(self, model: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
        """cuEquivariance tensor products where cuequivariance-torch is installed (sevenn's own
        checkpoint conversion, weights carried over); otherwise the e3nn model."""
        import sevenn.nn.cue_helper as cue_helper

        if not cue_helper.is_cue_available():
            return model, None
        from sevenn import util

        try:
            checkpoint = util.load_checkpoint(self._checkpoint_path())
            fast = checkpoint.build_model(enable_cueq=True)
            from sevenn.checkpoint import _convert_e3nn_and_cueq  # what build_model itself converts with

            state = _convert_e3nn_and_cueq(model.state_dict(), fast.state_dict(), checkpoint.config, from_cueq=False)
            fast.load_state_dict(state, strict=False)  # this model's weights (scratch, or the foundation's)
        except Exception as exc:  # keep the plain model: slower, never wrong
            return model, f"none (cuequivariance conversion failed: {type(exc).__name__}: {exc})"
        fast.set_is_batch_data(True)
        return fast.to(self.device), "cuequivariance"

    def block_layout(self) -> list[tuple[str, str, tuple[str, ...]]]:
        n_layers = sum(1 for name in self.model_._modules if name.endswith("_convolution"))
        layout = [("embedding", "embedding", ("edge_embedding.", "onehot_to_feature_x."))]
        layout += [(f"interaction-{t}", "interaction", (f"{t}_",)) for t in range(n_layers)]
        layout.append(("readout", "readout", ("reduce_input_to_hidden.", "reduce_hidden_to_energy.")))
        layout.append(("reference", "reference", (f"{REFERENCE_MODULE}.",)))
        return layout

    def freeze(self, k: int, *, train_reference: bool = False) -> Self:
        super().freeze(k, train_reference=train_reference)
        for name, param in self.model_.named_parameters():
            if name in self.fixed_:  # sevenn's fixed conv denominators stay fixed
                param.requires_grad_(False)
        return self

    def ase_calculator(self):
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(copy.deepcopy(self.model_), device=self.device)

    @property
    def cutoff(self) -> float:
        return self.cutoff_

    def _featurize(self, atoms: Atoms) -> Any:
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        graph = unlabeled_atoms_to_graph(atoms, self.cutoff_, with_shift=False)
        return AtomGraphData.from_numpy_dict(graph).to(self.device)

    def collate(self, graphs: list) -> Any:
        from torch_geometric.data import Batch

        return Batch.from_data_list(graphs)  # a copy: the graphs stay untouched

    def forward_batch(self, batch: Any, *, stress: bool) -> dict[str, torch.Tensor]:
        import sevenn._keys as KEY

        out = self.model_(batch)
        result = {"energy": out[KEY.PRED_TOTAL_ENERGY], "forces": out[KEY.PRED_FORCE]}
        if stress:
            xx, yy, zz, xy, yz, zx = (-out[KEY.PRED_STRESS]).unbind(-1)
            result["stress"] = torch.stack(
                [xx, xy, zx, xy, yy, yz, zx, yz, zz], dim=-1).reshape(-1, 3, 3)
        return result

    def _export(self, folder: Path) -> Path:
        """A sevenn checkpoint (what sevenn's trainer writes, without optimizer state): the
        starting checkpoint's config, rewritten where the model changed, and the live state
        dict. The config's ``version`` must be the running sevenn's: the foundation 7net-0
        says 0.9.1, and sevenn would then rename and re-sort an already current state dict
        while loading (silently wrong: 0.15 eV/atom, measured). ``shift``/``scale`` are
        rewritten from the model's per-species rescale (lists by atomic number), so the
        config tells the truth (the state dict would win anyway). ``sevenn_get_model``
        deploys it for LAMMPS."""
        import datetime
        import uuid

        import sevenn
        from sevenn import util
        from sevenn.nn.scale import get_resolved_shift_scale

        config = util.load_checkpoint(self._checkpoint_path()).config  # a copy, patched to today's layout
        config["version"] = sevenn.__version__
        shift, scale = get_resolved_shift_scale(self.model_.get_submodule(REFERENCE_MODULE), self.model_.type_map)
        config["shift"], config["scale"] = [float(x) for x in shift], [float(x) for x in scale]
        path = folder / "sevennet.pth"
        torch.save({"config": config, "model_state_dict": cpu_state_dict(self.model_),
                    "optimizer_state_dict": None, "scheduler_state_dict": None, "epoch": 0,
                    "time": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "hash": uuid.uuid4().hex}, path)
        return path

    @classmethod
    def exported_calculator(cls, path: Path, device: str = "cpu"):
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(str(path), device=device)

    def reference_energies(self) -> dict[int, float]:
        shift = self.model_.get_submodule(REFERENCE_MODULE).shift.detach()
        return {z: float(shift[i]) for z, i in self.model_.type_map.items()}

    def set_reference_energies(self, e0: dict[int, float]) -> None:
        shift = self.model_.get_submodule(REFERENCE_MODULE).shift
        with torch.no_grad():
            for z, value in e0.items():
                shift[self.model_.type_map[z]] = value

    def supported_numbers(self) -> set[int]:
        return set(self.model_.type_map)
