"""What every job recipe needs: the job's frames, the adapter class, predictions and metrics."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from bench.core.metrics import error_metrics
from datasets.converters import read_ase_file
from datasets.labels import has_stress, label_arrays

if TYPE_CHECKING:
    from ase import Atoms

    from adapters.base import Adapter
    from bench.core.contract import DataFiles


class Skipped(Exception):
    """The run cannot be done with this model (``scope``: which other runs the same reason
    applies to, ``checkpoint`` or ``model``; None: this run only)."""

    def __init__(self, reason: str, scope: str | None = None):
        super().__init__(reason)
        self.reason, self.scope = reason, scope


def read_frames(path: str) -> list[Atoms]:
    return read_ase_file(Path(path))


def adapter_class(adapter: str) -> type[Adapter]:
    module, cls_name = adapter.split(":")
    return getattr(importlib.import_module(module), cls_name)


class JobFrames:
    """The pool, test set and training/validation subsets a job's data files name."""

    def __init__(self, data: DataFiles):
        self.pool, self.test = read_frames(data.pool), read_frames(data.test)
        self.train = [self.pool[i] for i in data.train]
        self.val = [self.pool[i] for i in data.val]


def predictions(adapter: Adapter, frames, *, stress: bool, graphs: list | None = None) -> dict:
    p = adapter.predict(frames, stress=stress, graphs=graphs)
    return {"energy": p.energy, "forces": p.forces, "stress": p.stress, "n_atoms": p.n_atoms}


def test_metrics(adapter: Adapter, test) -> dict:
    """Test-set errors of the adapter's model (stress where every test frame has it)."""
    return error_metrics(predictions(adapter, test, stress=has_stress(test)), label_arrays(test),
                         [a.info["group"] for a in test])


def energy_and_forces(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("energy_rmse_mev_per_atom", "forces_rmse_mev_per_ang")}
