"""MACE (mace-torch 0.3.16, e3nn 0.4.4) adapter: MACE-MP foundations by name, or a path.

Blocks in forward order (``ScaleShiftMACE.forward``), one per message-passing half-step:

* ``embedding``: ``node_embedding`` (+ ``radial_embedding``/``pair_repulsion_fn``, which hold
  parameters only in models built with trainable bases/ZBL, e.g. some "0b" variants);
* ``interaction-i``: ``interactions.i`` (radial MLP, linear up, conv TP, linear, skip TP);
* ``product-i``: ``products.i`` (symmetric contraction + linear; kind "interaction");
* ``readout``: every ``readouts.*`` (one per layer; their energies are summed);
* ``reference``: ``atomic_energies_fn`` (E0 per element) and ``scale_shift``: buffers only,
  so ``--e0 train`` is refused and E0 is refit or kept (``reference_is_parameter = False``).

Names ``mace-mp-0-small``/``mace-mp-0-medium`` and every key of mace's ``mace_mp_urls`` load
the file mace's own downloader caches (``get_cache_dir()``); when it is absent and the host
is unreachable, loading fails within seconds with :class:`CheckpointUnavailable` instead of
mace's 120 s socket timeout. MACE's stress is already 1/V dE/dε (ASE sign), in eV/Å³.
Models are kept in float32 (mace-mp files may be stored in float64).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adapters.base import Adapter, CheckpointUnavailable
from adapters.offline import reachable

if TYPE_CHECKING:
    from ase import Atoms

ALIASES = {"mace-mp-0-small": "small", "mace-mp-0-medium": "medium"}

MACE_FREEZE_TO_K = {0: 0, 1: 1, 2: 1, 3: 1, 4: 1, 6: 5, 7: 6}
"""mace-torch ``--freeze N`` -> our block-level freeze ``k``, for a 2-layer model (MACE-MP-0).

mace numbers the children of the original MACE (``mace/tools/scripts_utils.py``,
``get_params_options``): 1 node_embedding, 5 interactions, 6 products, 7 readouts (2-4 and 8
hold no parameters), and ``--freeze N`` freezes every child type up to N *across all layers*.
Our ``k`` freezes blocks in forward order (embedding, interaction-0, product-0, interaction-1,
product-1, readout), so N=1..4 -> k=1; N=6 -> k=1+2L=5 (embedding and all message passing:
"freeze-interactions"); N=7 -> k=2+2L=6 (every parameter). N=5 (all ``interactions.i`` frozen,
all ``products.i`` trainable) has no forward-order equivalent and is absent; N<=0 (or unset)
is a no-op in mace 0.3.16, i.e. k=0. For L layers use 1+2L and 2+2L for N=6 and 7.
"""

# The MACE-MP-0 hyperparameters (arXiv:2401.00096; mace-mp "small" = 128x0e, "medium" =
# 128x0e+128x1o; residual first interaction: 3,847,696 and 4,688,656 parameters, the released
# sizes), used for `scratch` only when the foundation file cannot be had: then E0 is zero
# (refit it), scale/shift are 1/0 and avg_num_neighbors is a typical value for 6 Å.
MP_ELEMENTS = [*range(1, 84), *range(89, 95)]  # the 89 elements of MPtrj
MP_HIDDEN = {"small": "128x0e", "medium": "128x0e + 128x1o"}


def mace_mp_name(checkpoint: str) -> str | None:
    """The ``mace_mp_urls`` key a checkpoint name stands for (None: not a name)."""
    from mace.calculators.foundations_models import mace_mp_urls

    key = ALIASES.get(checkpoint, checkpoint)
    return key if key in mace_mp_urls else None


def cache_path(key: str) -> Path:
    """Where ``download_mace_mp_checkpoint(key)`` keeps (or would keep) the file."""
    from mace.calculators.foundations_models import local_model_path, mace_mp_urls
    from mace.tools.utils import get_cache_dir

    if key == "medium-mpa-0" and os.path.isfile(local_model_path):
        return Path(local_model_path)
    name = "".join(c for c in os.path.basename(mace_mp_urls[key]) if c.isalnum() or c == "_")
    return Path(f"{get_cache_dir()}/{name}")


def default_mp_model(size: str = "small") -> torch.nn.Module:
    """A randomly initialised ScaleShiftMACE shaped like MACE-MP-0 ``small``/``medium``."""
    from mace import modules  # first: importing mace lets e3nn 0.4.4 load its constants on torch >= 2.6

    # isort: split
    from e3nn import o3

    residual = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=6.0, num_bessel=10, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=residual, interaction_cls_first=residual, num_interactions=2,
        num_elements=len(MP_ELEMENTS), hidden_irreps=o3.Irreps(MP_HIDDEN[size]),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(MP_ELEMENTS)),
        avg_num_neighbors=60.0, atomic_numbers=MP_ELEMENTS, correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], use_reduced_cg=False,
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )


class MACEAdapter(Adapter):
    family = "mace"
    default_checkpoint = "mace-mp-0-small"
    export_format = "mace-model"
    library_modules = ("mace.modules", "mace.data", "mace.tools.torch_geometric", "mace.calculators", "e3nn.o3")
    # MACE-MP-0-small-shaped model, 54-atom Mo cells, 1 thread, CPU s/cell: batch 1 0.22-0.26,
    # 2 0.21-0.26, 4 0.27-0.41, 8 0.36-0.41 (bigger batches are slower).
    predict_batch_size = 2
    reference_is_parameter = False

    # -- loading --------------------------------------------------------------------------
    def _checkpoint_file(self) -> Path:
        from mace.calculators.foundations_models import (
            download_mace_mp_checkpoint,
            mace_mp_urls,
        )

        key = mace_mp_name(self.checkpoint)
        if key is None:
            if Path(self.checkpoint).is_file():
                return Path(self.checkpoint)
            names = ", ".join([*ALIASES, *mace_mp_urls])
            raise CheckpointUnavailable(
                f"MACE checkpoint {self.checkpoint!r} is neither a mace-mp name ({names}) "
                "nor an existing file; pass --checkpoint PATH")
        path = cache_path(key)
        if path.is_file():
            return path
        url = mace_mp_urls[key]
        hint = (f"download {url} elsewhere and pass --checkpoint PATH, or place it at {path}")
        if not reachable(url):
            raise CheckpointUnavailable(
                f"MACE checkpoint {self.checkpoint!r} is not cached at {path} and "
                f"{urllib.parse.urlsplit(url).hostname} is unreachable; {hint}")
        try:
            return Path(download_mace_mp_checkpoint(key))
        except Exception as exc:  # any download failure: say how to supply the file
            raise CheckpointUnavailable(
                f"downloading MACE checkpoint {self.checkpoint!r} failed ({exc}); {hint}") from exc

    def _build(self, *, scratch: bool) -> torch.nn.Module:
        from mace.calculators.foundations_models import mace_mp
        from mace.tools.scripts_utils import extract_config_mace_model
        from mace.tools.torch_tools import default_dtype

        try:
            path = self._checkpoint_file()
        except CheckpointUnavailable:
            key = mace_mp_name(self.checkpoint)
            if not (scratch and key in MP_HIDDEN):
                raise
            self.scratch_source_ = "mace-mp-0 default hyperparameters (checkpoint unavailable)"
            with default_dtype("float32"):
                return default_mp_model(key)
        with contextlib.redirect_stdout(io.StringIO()):  # mace_mp prints dtype advice
            model = mace_mp(model=str(path), device="cpu", return_raw_model=True,
                            default_dtype="float32").float()
        self.checkpoint_path_ = str(path)
        if not scratch:
            return model
        config = extract_config_mace_model(model)
        if "error" in config:
            raise CheckpointUnavailable(f"{path}: {config['error']}; scratch cannot copy it")
        config["atomic_numbers"] = [int(z) for z in config["atomic_numbers"]]
        self.scratch_source_ = f"hyperparameters, E0 and scale/shift of {path}"
        torch.manual_seed(self.seed)
        with default_dtype("float32"):
            return type(model)(**config).float()

    def _accelerate(self, model: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
        """cuEquivariance kernels where cuequivariance-torch is installed (mace's own converter,
        weights carried over); otherwise, or if the conversion fails, the e3nn model, and the
        reason is kept for the record."""
        try:
            import cuequivariance_torch  # noqa: F401 - only whether it is installed
            from mace.cli.convert_e3nn_cueq import run as to_cueq
        except ImportError:
            return model, None
        try:
            return to_cueq(model, device=str(self.device), return_model=True).float(), "cuequivariance"
        except Exception as exc:  # keep the plain model: slower, never wrong
            return model, f"none (cuequivariance conversion failed: {type(exc).__name__}: {exc})"

    # -- blocks ---------------------------------------------------------------------------
    def block_layout(self) -> list[tuple[str, str, tuple[str, ...]]]:
        layout = [("embedding", "embedding",
                   ("node_embedding.", "radial_embedding.", "pair_repulsion_fn.",
                    "spherical_harmonics.", "joint_embedding."))]
        for i in range(len(self.model_.interactions)):
            layout.append((f"interaction-{i}", "interaction", (f"interactions.{i}.",)))
            layout.append((f"product-{i}", "interaction", (f"products.{i}.",)))
        layout.append(("readout", "readout", ("readouts.", "embedding_readout.")))
        layout.append(("reference", "reference", ("atomic_energies_fn.", "scale_shift.")))
        return layout

    # -- data -----------------------------------------------------------------------------
    def _head(self) -> tuple[int, str]:
        heads = list(getattr(self.model_, "heads", None) or ["Default"])
        named = [i for i, h in enumerate(heads) if h.lower() == "default"]
        index = named[0] if named else len(heads) - 1
        return index, heads[index]

    def ase_calculator(self):
        from mace.calculators import MACECalculator

        return MACECalculator(models=copy.deepcopy(self.model_), device=self.device, default_dtype="float32")

    @property
    def cutoff(self) -> float:
        return float(self.model_.r_max)

    def _featurize(self, atoms: Atoms) -> Any:
        from mace import data
        from mace.tools import utils
        from mace.tools.torch_tools import default_dtype

        z_table = utils.AtomicNumberTable([int(z) for z in self.model_.atomic_numbers])
        with default_dtype("float32"):
            config = data.config_from_atoms(atoms, key_specification=data.KeySpecification(),
                                            head_name=self._head()[1])
            graph = data.AtomicData.from_config(
                config, z_table=z_table, cutoff=float(self.model_.r_max),
                heads=list(getattr(self.model_, "heads", None) or ["Default"]))
        return graph.to(self.device)

    def collate(self, graphs: list) -> Any:
        from mace.tools import torch_geometric

        return torch_geometric.Batch.from_data_list(graphs).to(self.device)

    def forward_batch(self, batch: Any, *, stress: bool) -> dict[str, torch.Tensor]:
        out = self.model_(batch.to_dict(), training=self.model_.training,
                          compute_force=True, compute_stress=stress)
        result = {"energy": out["energy"], "forces": out["forces"]}
        if stress:
            result["stress"] = out["stress"]  # 1/V dE/dε already (ASE sign), eV/Å³
        return result

    # -- the trained model outside ftbench ------------------------------------------------
    def _export(self, folder: Path) -> Path:
        """mace's own ``.model`` format: the whole ScaleShiftMACE pickled (what mace's training
        writes), float32 on the CPU. E0 (``atomic_energies_fn``) and ``scale_shift`` are
        buffers of the module, so refit references travel inside; ``requires_grad`` is reset
        everywhere, as in mace's files, so ftbench's freezing does not leak into the file.
        ``mace_create_lammps_model`` converts it for LAMMPS."""
        model = copy.deepcopy(self.model_).cpu().float()
        model.train(False)
        for param in model.parameters():
            param.requires_grad_(True)
        path = folder / "mace.model"
        torch.save(model, path)
        return path

    @classmethod
    def exported_calculator(cls, path: Path, device: str = "cpu"):
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=str(path), device=device, default_dtype="float32")

    # -- reference energies ---------------------------------------------------------------
    def _e0(self) -> torch.Tensor:
        e0 = self.model_.atomic_energies_fn.atomic_energies
        return e0 if e0.dim() == 1 else e0[self._head()[0]]  # [n_heads, n_elements]

    def reference_energies(self) -> dict[int, float]:
        e0 = self._e0().detach().cpu()
        return {int(z): float(e0[i]) for i, z in enumerate(self.model_.atomic_numbers)}

    def set_reference_energies(self, e0: dict[int, float]) -> None:
        index = {int(z): i for i, z in enumerate(self.model_.atomic_numbers)}
        buffer = self._e0()  # a view of the buffer
        with torch.no_grad():
            for z, value in e0.items():
                buffer[index[z]] = value

    def supported_numbers(self) -> set[int]:
        return {int(z) for z in self.model_.atomic_numbers}
