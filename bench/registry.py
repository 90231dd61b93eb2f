"""Model families and training strategies, by name, without importing any model library.

Each family names its adapter by an import string that only a worker inside the family's
environment resolves, its environment (a ``pyproject.toml`` extra), its checkpoints and
its block layout (checked against the real model by the family's contract tests), so
listing and planning stay light.

Example:
    >>> get_model("chgnet").env
    'chgnet'
    >>> resolve_strategy("freeze-interactions", get_model("chgnet"))
    Strategy(name='freeze-interactions', freeze_k=5, ...)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


class UnknownName(ValueError):  # noqa: N818
    """An unknown model, strategy or dataset name; the message suggests the closest."""


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


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


MODELS: dict[str, ModelInfo] = {
    "chgnet": ModelInfo(
        key="chgnet", family="chgnet", adapter="adapters.chgnet_adapter:CHGNetAdapter",
        env="chgnet", packages=("chgnet", "pymatgen"), default_checkpoint="0.3.0",
        checkpoints=("0.3.0", "0.2.0", "r2scan"),
        blocks=("embedding", "interaction", "interaction", "interaction", "interaction", "readout"),
        licence="BSD-3-Clause (code and weights)",
        citation="B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023)",
    ),
    "mace": ModelInfo(
        key="mace", family="mace", adapter="adapters.mace_adapter:MACEAdapter", env="mace",
        packages=("mace-torch", "e3nn"), default_checkpoint="mace-mp-0-small",
        checkpoints=("mace-mp-0-small", "mace-mp-0-medium"),
        # embedding, interaction-0, product-0, interaction-1, product-1, readout
        blocks=("embedding", "interaction", "interaction", "interaction", "interaction", "readout"),
        # mace-torch --freeze N (1 embedding, 5 interactions, 6 products, 7 readouts) as our k;
        # adapters/mace_adapter.py MACE_FREEZE_TO_K is the tested source of this table
        native_freeze=((1, "mace --freeze 1"), (5, "mace --freeze 6"), (6, "mace --freeze 7")),
        licence="MIT (code); MACE-MP-0 weights MIT",
        citation="I. Batatia et al., arXiv:2401.00096",
    ),
    "m3gnet": ModelInfo(
        key="m3gnet", family="m3gnet", adapter="adapters.m3gnet_adapter:M3GNetAdapter",
        env="m3gnet", packages=("matgl",),
        default_checkpoint="M3GNet-MatPES-PBE-v2025.1-PES",
        checkpoints=("M3GNet-MatPES-PBE-v2025.1-PES", "M3GNet-MP-2021.2.8-PES"),
        blocks=("embedding", "interaction", "interaction", "interaction", "readout"),
        licence="BSD-3-Clause (code and weights)",
        citation="C. Chen and S. P. Ong, Nat. Comput. Sci. 2, 718 (2022)",
    ),
    "sevennet": ModelInfo(
        key="sevennet", family="sevennet", adapter="adapters.sevennet_adapter:SevenNetAdapter",
        env="sevennet", packages=("sevenn", "e3nn"), default_checkpoint="7net-0",
        checkpoints=("7net-0", "7net-0_22may2024", "7net-l3i5"),
        blocks=("embedding", *("interaction",) * 5, "readout"), licence="GPL-3.0",
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


@dataclass(frozen=True)
class Strategy:
    """How a run starts and what trains: ``freeze_k`` first blocks frozen (None: no training).

    ``lora``: every base weight frozen, low-rank adapters on the later blocks' matrices,
    merged back after training; ``soft``: every block trains with the sweep's per-block LR
    factors; ``replay``: foundation-labelled structures of another domain join training.
    """

    name: str
    freeze_k: int | None
    scratch: bool = False
    lora: bool = False
    soft: bool = False
    replay: bool = False


STRATEGY_HELP = {
    "zero-shot": "the foundation model as is, no training",
    "scratch": "same architecture, random initial weights, everything trains",
    "finetune": "from the foundation, every block trains (freeze 0)",
    "freeze-embedding": "embedding frozen, interactions and readout train",
    "freeze-interactions": ("embedding and all message passing frozen, readout trains "
                            "(the paper's best MACE-MP setting)"),
    "readout-only": "alias of freeze-interactions: only the readout (and E0 if --e0 train) trains",
    "freeze-<k>": "first k blocks frozen, in the forward order shown by `bench list models`",
    "lora": ("base weights frozen; low-rank adapters (--lora-rank, alpha) on the weight matrices of "
             "the interaction and readout blocks train and are merged back for inference"),
    "soft-freeze": ("every block trains, early blocks with a smaller learning rate (sweep lr_factors, "
                    "as mace-torch --lr_params_factors)"),
    "replay": ("finetune with foundation-labelled structures of another domain mixed in "
               "(sweep replay_dataset, replay_fraction), against forgetting"),
}


def resolve_strategy(name: str, model: ModelInfo) -> Strategy:
    kinds = model.blocks
    n_embedding = kinds.count("embedding")
    fixed = {
        "zero-shot": Strategy("zero-shot", None),
        "scratch": Strategy("scratch", 0, scratch=True),
        "finetune": Strategy("finetune", 0),
        "freeze-embedding": Strategy("freeze-embedding", n_embedding),
        "freeze-interactions": Strategy("freeze-interactions", n_embedding + kinds.count("interaction")),
        "readout-only": Strategy("readout-only", len(kinds) - kinds.count("readout")),
        "lora": Strategy("lora", len(kinds), lora=True),
        "soft-freeze": Strategy("soft-freeze", 0, soft=True),
        "replay": Strategy("replay", 0, replay=True),
    }
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"freeze-(\d+)", name)
    if match:
        k = int(match.group(1))
        if not 0 <= k < len(kinds):
            raise UnknownName(f"strategy {name!r}: {model.key} has blocks 0..{len(kinds) - 1} "
                              f"({', '.join(kinds)}); freezing all {len(kinds)} leaves nothing to train")
        return Strategy(name, k)
    raise UnknownName(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_HELP)}."
                      f"{did_you_mean(name, [*fixed, 'freeze-1'])}")
