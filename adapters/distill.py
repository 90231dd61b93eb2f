"""Surrogate distillation pieces: more structures for a teacher to label.

The reference study's third result: a fine-tuned foundation labels structures for a much
cheaper model. The teacher's labelling pool here is the training pool plus rattled copies
(random displacements and a small random strain) and snapshots of short Langevin MD run
with the teacher itself, so the student sees the teacher's view of nearby configurations.

Example:
    >>> extra = rattled(train, copies=2, stdev_ang=0.04, strain=0.01, rng=rng)
    >>> extra += md_snapshots(teacher.ase_calculator(), train[:4], steps=20, every=5,
    ...                       temperature_k=600, rng=rng)
    >>> labelled = teacher.label(train + extra, stress=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ase import Atoms


def _unlabelled(atoms: Atoms) -> Atoms:
    copy = atoms.copy()
    copy.calc = None
    return copy


def rattled(frames: Sequence[Atoms], *, copies: int, stdev_ang: float, strain: float,
            rng: np.random.Generator) -> list[Atoms]:
    """``copies`` of every frame with Gaussian displacements and a random symmetric strain
    (components uniform in ±``strain``), so stress labels vary too."""
    out = []
    for atoms in frames:
        for _ in range(copies):
            copy = _unlabelled(atoms)
            eps = rng.uniform(-strain, strain, (3, 3))
            copy.set_cell(copy.cell.array @ (np.eye(3) + (eps + eps.T) / 2), scale_atoms=True)
            copy.positions += rng.normal(0.0, stdev_ang, copy.positions.shape)
            copy.info["group"] = f"{atoms.info.get('group', '')}+rattle"
            out.append(copy)
    return out


def md_snapshots(calculator, frames: Sequence[Atoms], *, steps: int, every: int, temperature_k: float,
                 rng: np.random.Generator, timestep_fs: float = 2.0) -> list[Atoms]:
    """Snapshots every ``every`` steps of Langevin MD at ``temperature_k`` driven by ``calculator``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    out = []
    for atoms in frames:
        moving = _unlabelled(atoms)
        moving.calc = calculator
        MaxwellBoltzmannDistribution(moving, temperature_K=temperature_k, rng=rng)
        dyn = Langevin(moving, timestep_fs * units.fs, temperature_K=temperature_k, friction=0.02, rng=rng)
        for _ in range(steps // every):
            dyn.run(every)
            snap = _unlabelled(moving)
            snap.info["group"] = f"{atoms.info.get('group', '')}+md"
            out.append(snap)
    return out
