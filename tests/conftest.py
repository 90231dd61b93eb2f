"""Shared fixtures: small labelled structures (EMT labels) and helpers."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_frames(n: int, seed: int = 0, symbol: str = "Cu") -> list:
    """Rattled fcc cells labelled by ASE's EMT (energy, forces, stress in ASE units)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk(symbol, "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["group"] = "even" if i % 2 == 0 else "odd"
        frames.append(atoms)
    return frames


@pytest.fixture
def emt_xyz(tmp_path):
    from ase.io import write

    path = tmp_path / "emt.xyz"
    write(path, emt_frames(12), format="extxyz")
    return path
