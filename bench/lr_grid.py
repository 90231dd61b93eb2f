"""Learning rates chosen on the validation set: a protocol preset's ``lr_grid``.

One learning rate for every strategy is itself a confound (full fine-tuning tolerates less
than a readout alone), so a preset may give a small grid: each trained strategy of each
model first runs once per candidate at one training size (``lr_grid_size``, the first
seed; spec ``role = "lr-grid"``), and the candidate with the lowest validation loss
(best epoch) becomes that strategy's learning rate at every size. The test set is never
looked at. The grid's records stay in the store, so the choice can be read back (report).

Example:
    >>> choose(Store(path).all(), grid=(3e-4, 1e-3, 3e-3))
    {('mlearn-Mo', 'm3gnet'): {'finetune': 0.0003, 'scratch': 0.003, ...}}
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from bench.core.contract import Record, TrainSpec


@dataclass(frozen=True)
class Candidate:
    lr: float
    val_loss: float | None  # best validation loss; None: the run did not finish ok
    record: Record


def best_val_loss(record: Record) -> float | None:
    losses = [r.val_loss for r in record.curve or () if r.val_loss is not None and math.isfinite(r.val_loss)]
    return min(losses) if record.ok and losses else None


def candidates(records: list[Record]) -> dict[tuple[str, str, str], list[Candidate]]:
    """(dataset, model, strategy) -> the grid's runs, by learning rate."""
    out: dict[tuple[str, str, str], list[Candidate]] = defaultdict(list)
    for r in records:
        if isinstance(r.spec, TrainSpec) and r.spec.role == "lr-grid":
            out[(r.spec.dataset, r.spec.model, r.spec.strategy)].append(
                Candidate(r.spec.train_config.lr, best_val_loss(r), r))
    return {k: sorted(v, key=lambda c: c.lr) for k, v in out.items()}


def choose(records: list[Record], grid: tuple[float, ...]) -> dict[tuple[str, str], dict[str, float]]:
    """(dataset, model) -> strategy -> the chosen learning rate, where every candidate of
    the grid has a record and at least one finished ok."""
    chosen: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (dataset, model, strategy), found in candidates(records).items():
        if {c.lr for c in found} >= set(grid) and any(c.val_loss is not None for c in found):
            best = min((c for c in found if c.val_loss is not None), key=lambda c: c.val_loss)
            chosen[(dataset, model)][strategy] = best.lr
    return dict(chosen)
