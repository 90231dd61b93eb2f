"""Model families by name (strategies: ``bench.core.strategies``), without importing any
model library.

Each family names its adapter by an import string that only a worker inside the family's
environment resolves, its environment (a ``pyproject.toml`` extra), its checkpoints and
its block layout (checked against the real model by the family's contract tests), so
listing and planning stay light.

Example:
    >>> get_model("chgnet").env
    'chgnet'
    >>> resolve_strategy("freeze-interactions", get_model("chgnet")).freeze_k
    5
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core import strategies
from bench.core.strategies import UnknownName
from bench.core.util import did_you_mean

__all__ = ["MODELS", "Checkpoint", "ModelInfo", "UnknownName", "get_model", "resolve_models", "resolve_strategy"]


@dataclass(frozen=True)
class Checkpoint:
    """What the orchestrator knows of a checkpoint without loading it (``check-data`` and
    planning need it without torch); each family's contract tests check it against the real
    model. ``elements``: atomic numbers with parameters, as ranges (``"1-83,89-94"``);
    ``cutoff``: the adapter's ``cutoff`` (Å)."""

    elements: str
    cutoff: float

    @property
    def numbers(self) -> set[int]:
        out: set[int] = set()
        for part in self.elements.split(","):
            first, _, last = part.partition("-")
            out.update(range(int(first), int(last or first) + 1))
        return out


MP_ELEMENTS = "1-83,89-94"  # the 89 elements of MPtrj (Po to Ac absent)


@dataclass(frozen=True)
class ModelInfo:
    key: str
    family: str
    adapter: str  # "module:Class", resolved only inside the family's environment
    env: str
    packages: tuple[str, ...]
    default_checkpoint: str
    checkpoints: tuple[str, ...]
    blocks: tuple[str, ...]  # kinds in forward order, without the reference block
    licence: str
    citation: str
    # the library's own name for a freeze level k, shown next to ours in reports
    native_freeze: tuple[tuple[int, str], ...] = ()
    # optional accelerated kernels the adapter uses on a GPU where installed (their versions are
    # part of a run's runtime, so accelerated and plain runs are never mixed up)
    accelerators: tuple[str, ...] = ()
    known: tuple[tuple[str, Checkpoint], ...] = ()  # checkpoints whose elements and cutoff are checked

    def checkpoint_info(self, checkpoint: str | None = None) -> Checkpoint | None:
        """The static facts of a checkpoint (default: the default one); None for any other."""
        return dict(self.known).get(checkpoint or self.default_checkpoint)


MODELS: dict[str, ModelInfo] = {
    "chgnet": ModelInfo(
        key="chgnet", family="chgnet", adapter="adapters.chgnet_adapter:CHGNetAdapter",
        env="chgnet", packages=("chgnet", "pymatgen"), default_checkpoint="0.3.0",
        checkpoints=("0.3.0", "0.2.0", "r2scan"),
        known=(("0.3.0", Checkpoint(elements="1-94", cutoff=6.0)), ("0.2.0", Checkpoint(elements="1-94", cutoff=5.0)),
               ("r2scan", Checkpoint(elements="1-94", cutoff=6.0))),
        blocks=("embedding", "interaction", "interaction", "interaction", "interaction", "readout"),
        licence="BSD-3-Clause (code and weights)",
        citation="B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023)",
    ),
    "mace": ModelInfo(
        key="mace", family="mace", adapter="adapters.mace_adapter:MACEAdapter", env="mace",
        packages=("mace-torch", "e3nn"), default_checkpoint="mace-mp-0-small",
        checkpoints=("mace-mp-0-small", "mace-mp-0-medium"),
        # r_max 6 Å; checked against the MACE-MP-0 architecture the adapter builds where the file is absent
        known=tuple((name, Checkpoint(elements=MP_ELEMENTS, cutoff=6.0)) for name in ("mace-mp-0-small",
                                                                                     "mace-mp-0-medium")),
        # embedding, interaction-0, product-0, interaction-1, product-1, readout
        blocks=("embedding", "interaction", "interaction", "interaction", "interaction", "readout"),
        # mace-torch --freeze N (1 embedding, 5 interactions, 6 products, 7 readouts) as our k;
        # adapters/mace_adapter.py MACE_FREEZE_TO_K is the tested source of this table
        native_freeze=((1, "mace --freeze 1"), (5, "mace --freeze 6"), (6, "mace --freeze 7")),
        accelerators=("cuequivariance", "cuequivariance-torch"),
        licence="MIT (code); MACE-MP-0 weights MIT",
        citation="I. Batatia et al., arXiv:2401.00096",
    ),
    "m3gnet": ModelInfo(
        key="m3gnet", family="m3gnet", adapter="adapters.m3gnet_adapter:M3GNetAdapter",
        env="m3gnet", packages=("matgl",),
        default_checkpoint="M3GNet-MatPES-PBE-v2025.1-PES",
        checkpoints=("M3GNet-MatPES-PBE-v2025.1-PES", "M3GNet-MP-2021.2.8-PES"),
        known=tuple((name, Checkpoint(elements=MP_ELEMENTS, cutoff=5.0)) for name in (
            "M3GNet-MatPES-PBE-v2025.1-PES", "M3GNet-MP-2021.2.8-PES")),
        blocks=("embedding", "interaction", "interaction", "interaction", "readout"),
        licence="BSD-3-Clause (code and weights)",
        citation="C. Chen and S. P. Ong, Nat. Comput. Sci. 2, 718 (2022)",
    ),
    "sevennet": ModelInfo(
        key="sevennet", family="sevennet", adapter="adapters.sevennet_adapter:SevenNetAdapter",
        env="sevennet", packages=("sevenn", "e3nn"), default_checkpoint="7net-0",
        checkpoints=("7net-0", "7net-0_22may2024", "7net-l3i5"),
        known=tuple((name, Checkpoint(elements=MP_ELEMENTS, cutoff=5.0)) for name in (
            "7net-0", "7net-0_22may2024", "7net-l3i5")),
        blocks=("embedding", *("interaction",) * 5, "readout"), licence="GPL-3.0",
        accelerators=("cuequivariance", "cuequivariance-torch"),
        citation="Y. Park et al., J. Chem. Theory Comput. 20, 4857 (2024)",
    ),
}


def get_model(key: str) -> ModelInfo:
    if key not in MODELS:
        raise UnknownName(f"unknown model {key!r}; known: {', '.join(MODELS)}.{did_you_mean(key, MODELS)}")
    return MODELS[key]


def resolve_models(spec: str) -> list[ModelInfo]:
    """'all' or a comma-separated list of model keys."""
    keys = list(MODELS) if spec.strip() == "all" else [k.strip() for k in spec.split(",") if k.strip()]
    if not keys:
        raise UnknownName("no model given; use --models all or e.g. --models chgnet")
    return [get_model(k) for k in keys]


def resolve_strategy(name: str, model: ModelInfo) -> strategies.Resolved:
    """The named strategy's flags for this model's block layout."""
    return strategies.resolve(name, model.blocks, model.key)
