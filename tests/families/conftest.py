"""Fixtures shared by the family contract tests.

A family's test module names ``ADAPTER`` (the adapter class) and ``CHECKPOINT``; the
``foundation`` and ``make`` fixtures below load it. A module overrides ``checkpoint``
(e.g. a stand-in file) or ``foundation`` (e.g. to skip when weights are missing).
"""

import pytest

from datasets import load_dataset


@pytest.fixture(scope="session")
def mo():
    """mlearn-Mo, and its frames of at most 30 atoms (surfaces: cheap to train on)."""
    ds = load_dataset("mlearn-Mo")
    return ds, [a for a in ds.pool if len(a) <= 30]


@pytest.fixture(scope="module")
def checkpoint(request):
    return request.module.CHECKPOINT


@pytest.fixture(scope="module")
def make(request, checkpoint):
    """``make(seed=0, scratch=False)`` -> a freshly loaded adapter of the module's checkpoint."""
    adapter = request.module.ADAPTER
    return lambda seed=0, scratch=False: adapter(checkpoint, seed=seed).load(scratch=scratch)


@pytest.fixture(scope="module")
def foundation(make):
    return make()


@pytest.fixture(scope="module")
def registered(foundation):
    """The model whose checkpoint ``bench/registry.py`` describes (a module overrides it where
    the foundation is a stand-in)."""
    return foundation
