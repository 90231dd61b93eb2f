"""Training strategies: the one place that knows them by name.

A strategy says how a run starts (the foundation's weights or random ones), whether it
takes gradient steps, which blocks it freezes, and what it adds (LoRA adapters, per-block
learning-rate factors, replayed structures). The planner turns a strategy and a model's
block layout into flags that the run spec carries (``init``, ``freeze_k``, ``lora``,
``lr_factors``, ``replay``, ``e0_policy``); everything downstream (worker, headline,
report) reads those flags, never the name. The name stays in the spec for display and
grouping; the order here is the display order.

Example:
    >>> resolve("freeze-interactions", ("embedding", "interaction", "interaction", "readout")).freeze_k
    3
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.core.util import did_you_mean

FREEZE_LEVEL = re.compile(r"freeze-(\d+)")


class UnknownName(ValueError):
    """An unknown model, strategy or dataset name; the message suggests the closest."""


@dataclass(frozen=True)
class Strategy:
    """A strategy's definition. ``freeze``: which first blocks are frozen, by block kind
    (``none``, ``embedding``, ``interactions`` = embedding and every interaction block,
    ``all-but-readout``, ``all``) or a level ``k``; ``trains`` False: no gradient steps."""

    name: str
    help: str
    init: str = "foundation"  # "foundation" | "random"
    trains: bool = True
    freeze: str | int = "none"
    e0_policy: str | None = None  # fixed reference-energy policy (else the sweep's)
    lora: bool = False
    soft: bool = False
    replay: bool = False
    default: bool = False  # in the default strategy list


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("zero-shot", "the foundation model as is, no training", trains=False,
             e0_policy="foundation", default=True),
    Strategy("zero-shot-e0", "the foundation with only its per-element reference energies refit on the training "
             "subset (least squares), no gradient steps: what a DFT-setup offset alone explains", trains=False,
             e0_policy="refit", default=True),
    Strategy("scratch", "same architecture, random initial weights, everything trains", init="random",
             default=True),
    Strategy("finetune", "from the foundation, every block trains (freeze 0)", default=True),
    Strategy("freeze-embedding", "embedding frozen, interactions and readout train", freeze="embedding",
             default=True),
    Strategy("freeze-interactions", "embedding and all message passing frozen, readout trains "
             "(the paper's best MACE-MP setting)", freeze="interactions", default=True),
    Strategy("readout-only", "alias of freeze-interactions: only the readout (and E0 if --e0 train) trains",
             freeze="all-but-readout"),
    Strategy("lora", "base weights frozen; low-rank adapters (--lora-rank, alpha) on the weight matrices of "
             "the interaction and readout blocks train and are merged back for inference", freeze="all",
             lora=True),
    Strategy("soft-freeze", "every block trains, early blocks with a smaller learning rate (sweep "
             "lr_factors, as mace-torch --lr_params_factors)", soft=True),
    Strategy("replay", "finetune with foundation-labelled structures of another domain mixed in "
             "(sweep replay_dataset, replay_fraction), against forgetting", replay=True),
)
BY_NAME = {s.name: s for s in STRATEGIES}
UNTRAINED = "zero-shot"  # the run that E0-only refits (zero-shot-e0) are computed from
FREEZE_K_HELP = "first k blocks frozen, in the forward order shown by `bench list models`"
DEFAULT_STRATEGIES = tuple(s.name for s in STRATEGIES if s.default)


def help_lines() -> list[tuple[str, str]]:
    """(name, help) of every strategy, in display order, with the freeze-<k> family."""
    return [(s.name, s.help) for s in STRATEGIES] + [("freeze-<k>", FREEZE_K_HELP)]


def is_known(name: str) -> bool:
    return name in BY_NAME or FREEZE_LEVEL.fullmatch(name) is not None


def definition(name: str) -> Strategy:
    """The named strategy (``freeze-<k>`` included); UnknownName with a suggestion otherwise."""
    if name in BY_NAME:
        return BY_NAME[name]
    match = FREEZE_LEVEL.fullmatch(name)
    if match:
        return Strategy(name, FREEZE_K_HELP, freeze=int(match.group(1)))
    raise UnknownName(f"unknown strategy {name!r}; known: {', '.join([*BY_NAME, 'freeze-<k>'])}."
                      f"{did_you_mean(name, [*BY_NAME, 'freeze-1'])}")


def rank(name: str) -> tuple:
    """Display order: the strategies above in their order, then freeze-<k> by k, then others."""
    if name in BY_NAME:
        return (0, list(BY_NAME).index(name), "")
    match = FREEZE_LEVEL.fullmatch(name)
    return (1, int(match.group(1)), "") if match else (2, 0, name)


@dataclass(frozen=True)
class Resolved:
    """A strategy for one model's block layout: the flags a run spec carries."""

    name: str
    init: str
    freeze_k: int | None  # None: no gradient steps
    e0_policy: str | None
    lora: bool
    soft: bool
    replay: bool


def freeze_level(freeze: str | int, kinds: tuple[str, ...]) -> int:
    """How many first blocks a freeze rule covers, for blocks of these kinds (forward order)."""
    if isinstance(freeze, int):
        return freeze
    n_embedding = kinds.count("embedding")
    return {"none": 0, "embedding": n_embedding, "interactions": n_embedding + kinds.count("interaction"),
            "all-but-readout": len(kinds) - kinds.count("readout"), "all": len(kinds)}[freeze]


def resolve(name: str, kinds: tuple[str, ...], model: str = "the model") -> Resolved:
    """The named strategy on a model whose blocks (without the reference block) have ``kinds``."""
    s = definition(name)
    k = freeze_level(s.freeze, kinds)
    if isinstance(s.freeze, int) and not 0 <= k < len(kinds):
        raise UnknownName(f"strategy {name!r}: {model} has blocks 0..{len(kinds) - 1} ({', '.join(kinds)}); "
                          f"freezing all {len(kinds)} leaves nothing to train")
    return Resolved(s.name, s.init, k if s.trains else None, s.e0_policy, s.lora, s.soft, s.replay)


def legacy_init(strategy_name: str) -> str:
    """How a run started, for specs written before they carried ``init``: only the
    scratch strategy started from random weights."""
    return BY_NAME[strategy_name].init if strategy_name in BY_NAME else "foundation"
