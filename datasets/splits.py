"""Seeded, group-aware train/validation splits with nested training subsets.

For one seed the pool is shuffled once by leak group; the first groups form the
validation set and the rest, in that order, is the training order. A training subset of
size n is the first n frames of the order, so every smaller subset is contained in every
larger one, and the test set (fixed by the dataset) never changes across sizes or seeds.

Example:
    >>> split = plan_split(["a", "b", "c", "d"], seed=0, val_fraction=0.25)
    >>> split.train(2)  # indices into the pool, a prefix of split.order
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datasets.errors import DatasetError


@dataclass(frozen=True)
class Split:
    val: tuple[int, ...]
    order: tuple[int, ...]

    def train(self, n: int) -> tuple[int, ...]:
        if not 1 <= n <= len(self.order):
            raise DatasetError(
                f"training size {n} is impossible: the pool has {len(self.order)} frames "
                f"available for training after holding out {len(self.val)} for validation"
            )
        return self.order[:n]


def plan_split(leak_groups: list[str], *, seed: int, val_fraction: float,
               val_size: int | None = None, pool_size: int | None = None) -> Split:
    """Shuffle leak groups with ``seed``; hold out ``val_fraction`` of them for validation.

    ``val_size`` instead holds out whole groups until at least that many frames; ``pool_size``
    keeps at most that many frames of the training order (a smaller pool for quick sweeps;
    a smaller dataset keeps all it has, and each record stores the pool size it used).
    """
    if not 0 < val_fraction < 1:
        raise DatasetError(f"validation fraction {val_fraction} must be in (0, 1)")
    unique = sorted(set(leak_groups))
    if len(unique) < 2:
        raise DatasetError(
            f"the training pool needs at least 2 independent groups to split into training and "
            f"validation; it has {len(leak_groups)} frames in {len(unique)} group(s)"
        )
    rng = np.random.default_rng(seed)
    shuffled = [unique[i] for i in rng.permutation(len(unique))]
    members: dict[str, list[int]] = {}
    for i, g in enumerate(leak_groups):
        members.setdefault(g, []).append(i)
    if val_size is not None:
        if val_size < 1:
            raise DatasetError(f"validation size {val_size} must be >= 1")
        n_val, held = 0, 0
        while held < val_size and n_val < len(unique) - 1:
            held += len(members[shuffled[n_val]])
            n_val += 1
        if held < val_size:  # never hand back a smaller validation set than asked for
            raise DatasetError(
                f"validation size {val_size} is impossible: the pool has {len(leak_groups)} frames in "
                f"{len(unique)} groups, and whole groups with one group left for training hold {held}"
            )
    else:
        n_val = min(max(1, round(val_fraction * len(unique))), len(unique) - 1)
    val_groups = set(shuffled[:n_val])
    val = tuple(i for g in shuffled[:n_val] for i in members[g])
    order = tuple(i for g in shuffled[n_val:] for i in members[g])
    assert not val_groups & {leak_groups[i] for i in order}
    if pool_size is not None:
        if pool_size < 1:
            raise DatasetError(f"training pool size {pool_size} must be >= 1")
        order = order[:pool_size]
    return Split(val=val, order=order)


def resolve_size(size: float, n_available: int) -> int:
    """A count (int >= 1) or a fraction in (0, 1] of the available training frames."""
    if isinstance(size, bool) or not math.isfinite(size) or size <= 0:
        raise DatasetError(f"training size {size!r} must be a positive count or a fraction")
    if isinstance(size, float) and size <= 1:
        return max(1, round(size * n_available))
    if float(size) != int(size):
        raise DatasetError(f"training size {size!r} is neither a fraction <= 1 nor a count")
    return int(size)


def parse_size(text: str) -> float:
    """'50' -> 50 (count), '0.1' or '10%' -> 0.1 (fraction)."""
    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(text) if "." in text or "e" in text.lower() else int(text)
    except ValueError as exc:
        raise DatasetError(f"training size {text!r} is not a number, fraction or percentage") from exc
