"""Labels of converted frames as arrays (ASE units), used by the workers and the loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ase import Atoms


def has_stress(frames: Sequence[Atoms]) -> bool:
    """Whether every frame carries a stress label (and so stress can be trained and tested)."""
    return all("stress" in a.calc.results for a in frames)


def label_arrays(frames: Sequence[Atoms]) -> dict[str, np.ndarray | None]:
    """``energy`` [n] eV, ``forces`` [n_atoms, 3] eV/Å, ``stress`` [n, 6] eV/Å³ (None unless
    every frame has it), ``n_atoms`` [n]."""
    return {
        "energy": np.array([a.calc.results["energy"] for a in frames]),
        "forces": np.concatenate([a.calc.results["forces"] for a in frames]) if frames else np.zeros((0, 3)),
        "stress": np.array([a.calc.results["stress"] for a in frames]) if has_stress(frames) else None,
        "n_atoms": np.array([len(a) for a in frames]),
    }
