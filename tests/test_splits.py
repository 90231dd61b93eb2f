"""Splits: seeded, group-aware, nested training subsets, clear errors for impossible sizes."""

import pytest

from datasets import DatasetError
from datasets.splits import parse_size, plan_split, resolve_size


def test_subsets_are_nested_and_disjoint_from_validation():
    groups = [f"g{i // 3}" for i in range(60)]  # 20 groups of 3 correlated frames
    split = plan_split(groups, seed=1, val_fraction=0.2)
    small, large = set(split.train(5)), set(split.train(30))
    assert small <= large
    assert not large & set(split.val)
    assert {groups[i] for i in split.val}.isdisjoint({groups[i] for i in split.order})
    assert len(split.val) + len(split.order) == 60


def test_seeds_change_the_order_but_are_reproducible():
    groups = [str(i) for i in range(50)]
    a, b = plan_split(groups, seed=0, val_fraction=0.1), plan_split(groups, seed=0, val_fraction=0.1)
    c = plan_split(groups, seed=1, val_fraction=0.1)
    assert a == b and a.order != c.order


def test_impossible_sizes_are_refused():
    split = plan_split([str(i) for i in range(10)], seed=0, val_fraction=0.2)
    with pytest.raises(DatasetError, match="training size 9 is impossible: the pool has 8"):
        split.train(9)
    with pytest.raises(DatasetError, match="positive count or a fraction"):
        resolve_size(0, 10)
    with pytest.raises(DatasetError, match="at least 2 independent groups"):
        plan_split(["a", "a"], seed=0, val_fraction=0.5)


def test_sizes_parse_as_counts_fractions_or_percentages():
    assert parse_size("50") == 50 and parse_size("0.1") == 0.1 and parse_size("25%") == 0.25
    assert resolve_size(0.25, 40) == 10 and resolve_size(7, 40) == 7
    with pytest.raises(DatasetError, match="not a number"):
        parse_size("ten")


def test_val_size_holds_out_whole_groups_and_pool_size_caps_the_order():
    groups = [f"g{i // 2}" for i in range(20)]  # 10 groups of 2 frames
    split = plan_split(groups, seed=3, val_fraction=0.5, val_size=3, pool_size=5)
    assert len(split.val) == 4 and len(split.order) == 5  # 2 whole groups; first 5 of the order
    assert not {groups[i] for i in split.val} & {groups[i] for i in split.order}
    full = plan_split(groups, seed=3, val_fraction=0.5, val_size=3)
    assert full.order[:5] == split.order and len(full.order) == 16
    assert len(plan_split(groups, seed=3, val_fraction=0.5, val_size=3, pool_size=99).order) == 16
    with pytest.raises(DatasetError, match="validation size 0"):
        plan_split(groups, seed=0, val_fraction=0.5, val_size=0)
