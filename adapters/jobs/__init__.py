"""Job recipes, one module per run kind, run by ``adapters.worker`` inside a family's
environment: ``train`` (a learning-curve point), ``perf`` (the timing job), ``surrogate``
(distillation) and ``md`` (MD stability of a saved model). Each takes the typed ``Job`` and
a progress callback and returns a ``Result``; they share ``prepare`` (load a model and
adapt it to a strategy's flags) and ``common`` (frames, labels, predictions).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.core.contract import Job, Result

RECIPES = {"train": "adapters.jobs.train", "perf": "adapters.jobs.timing", "surrogate": "adapters.jobs.surrogate",
           "md": "adapters.jobs.md"}


def recipe(kind: str) -> Callable[[Job, Callable[[dict], None]], Result]:
    """The ``run(job, progress)`` function for a spec kind."""
    if kind not in RECIPES:
        raise ValueError(f"no job recipe for spec kind {kind!r}; known: {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[kind]).run
