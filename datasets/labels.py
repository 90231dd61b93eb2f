"""Labels of converted frames as arrays (ASE units), used by the workers and the loaders.

A stress label counts (is trained on and scored) only on a frame periodic along all three
axes: the stress of a slab or a molecule is not a bulk property (its volume includes vacuum,
and the model sees it in the cell ``datasets.periodicity`` completes), so such frames are
left out of the stress terms while their energies and forces count as any other's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ase import Atoms


def stress_counts(atoms: Atoms) -> bool:
    """Whether this frame's stress is trained on and scored: it has a stress label and is
    periodic along all three axes."""
    return "stress" in atoms.calc.results and bool(np.all(atoms.pbc))


def has_stress(frames: Sequence[Atoms]) -> bool:
    """Whether stress can be trained and tested on these frames: every fully periodic frame
    carries a stress label, and there is such a frame unless there are no frames at all."""
    periodic = [a for a in frames if np.all(a.pbc)]
    if frames and not periodic:
        return False
    return all("stress" in a.calc.results for a in periodic)


def label_arrays(frames: Sequence[Atoms]) -> dict[str, np.ndarray | None]:
    """``energy`` [n] eV, ``forces`` [n_atoms, 3] eV/Å, ``stress`` [n, 6] eV/Å³ (None unless
    ``has_stress``; NaN rows for frames whose stress does not count), ``n_atoms`` [n]."""
    stress = None
    if has_stress(frames):
        stress = np.array([a.calc.results["stress"] if stress_counts(a) else np.full(6, np.nan) for a in frames])
    return {
        "energy": np.array([a.calc.results["energy"] for a in frames]),
        "forces": np.concatenate([a.calc.results["forces"] for a in frames]) if frames else np.zeros((0, 3)),
        "stress": stress,
        "n_atoms": np.array([len(a) for a in frames]),
    }
