"""Fixtures shared by the family contract tests."""

import pytest

from datasets import load_dataset


@pytest.fixture(scope="session")
def mo():
    """mlearn-Mo, and its frames of at most 30 atoms (surfaces: cheap to train on)."""
    ds = load_dataset("mlearn-Mo")
    return ds, [a for a in ds.pool if len(a) <= 30]
