"""A frame's periodicity, made exact for a model with a given cutoff, once for every family.

The families disagree on frames that are not periodic along all three cell vectors (slabs
with ``pbc=[T, T, F]``, molecules and clusters with ``pbc=False``): M3GNet treats any
non-periodic axis as a molecule (the slab loses its images in x and y too), MACE divides the
stress by an inflated volume, CHGNet needs an invertible cell, SevenNet divides the stress of
a cell-less molecule by 1e-3 Å³ (measured: README, "Your own data"). So no library
sees such a frame: ``as_periodic`` hands them a fully periodic one that has exactly the
same graph.

That is exact when no edge crosses the cell boundary along a non-periodic axis: the gap
between the atoms and their periodic images along that axis, measured on the axis normal
(cell height minus the atoms' extent), must exceed the model's cutoff (its largest graph
cutoff; every message, three-body term and readout then sees the same neighbours as
without the images). A cell vector that is missing (a molecule with no cell) is added with
``cutoff + VACUUM_MARGIN`` Å of vacuum. A frame whose gap is too small is refused
(:class:`PeriodicityError`, naming file, frame, axis, gap and cutoff), never made periodic
silently: that would add interactions the data never had.

Stress of a frame that was not periodic in all three directions is not a bulk property (the
label's volume includes vacuum; the model's depends on the cell added here), so it is
neither trained on nor scored (``datasets.labels.stress_counts``).

Example:
    >>> slab = ase.build.bcc110("Mo", size=(2, 2, 3), vacuum=6.0)     # pbc [T, T, F]
    >>> gaps(slab)                                                      # {2: 12.0}
    >>> as_periodic(slab, cutoff=5.0).pbc                               # [T, T, T]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from datasets.errors import DatasetError

if TYPE_CHECKING:
    from ase import Atoms

# a run's spec names this rule when its data has frames open along an axis (bench.plan)
RULE = "periodic images beyond the cutoff; stress of fully periodic frames only"
AXES = "abc"
VACUUM_MARGIN = 1.0  # Å beyond the cutoff in an added cell vector
_ZERO = 1e-8  # Å: a shorter cell vector is missing


class PeriodicityError(DatasetError):
    """A frame that no model can see as it is meant: a non-periodic gap within the cutoff,
    or a periodic axis without a cell vector."""


def where(atoms: Atoms) -> str:
    """File and frame of a frame (``info['source']``, set by the converters), or 'frame'."""
    return str(atoms.info.get("source") or "frame")


def _missing(cell: np.ndarray) -> list[int]:
    return [i for i in range(3) if np.linalg.norm(cell[i]) < _ZERO]


def _heights(cell: np.ndarray) -> np.ndarray:
    """Distance between the opposite faces of the cell along each axis (Å)."""
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


def _normals(cell: np.ndarray) -> np.ndarray:
    """Unit normal of the face spanned by the other two vectors, for each axis."""
    normals = np.array([np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]) for i in range(3)])
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def gaps(atoms: Atoms) -> dict[int, float | None]:
    """Non-periodic axis -> the vacuum between the atoms and their images along it (Å);
    None where the cell vector is missing (a cell is added there) and for a singular cell."""
    cell = np.asarray(atoms.cell[:], dtype=float)
    open_axes = [i for i in range(3) if not atoms.pbc[i]]
    if _missing(cell) or abs(np.linalg.det(cell)) < _ZERO:
        return {i: None for i in open_axes}
    heights, normals = _heights(cell), _normals(cell)
    out: dict[int, float | None] = {}
    for i in open_axes:
        along = atoms.positions @ normals[i]
        out[i] = float(heights[i] - (along.max() - along.min()))
    return out


@dataclass(frozen=True)
class Verdict:
    """What ``as_periodic`` does with a frame for one cutoff: ``periodic`` (as given),
    ``made periodic`` (every gap exceeds the cutoff), ``boxed`` (a cell is added) or
    ``refused`` (``reason`` says why); ``gap``: the smallest gap along a non-periodic axis
    whose cell vector was given (Å), where there is one."""

    action: str
    reason: str = ""
    gap: float | None = None


def verdict(atoms: Atoms, cutoff: float) -> Verdict:
    """The verdict for ``atoms`` and ``cutoff``."""
    return _decide(atoms, cutoff)[0]


def as_periodic(atoms: Atoms, cutoff: float) -> Atoms:
    """``atoms`` itself when periodic along all three axes, else a fully periodic copy with
    the same graph for any model whose cutoff is ``cutoff`` (Å); PeriodicityError when no
    such copy exists."""
    decided, out = _decide(atoms, cutoff)
    if decided.action == "refused":
        raise PeriodicityError(f"{where(atoms)}: field 'pbc': {decided.reason}")
    return out


def _decide(atoms: Atoms, cutoff: float) -> tuple[Verdict, Atoms | None]:
    pbc, cell = np.asarray(atoms.pbc, bool), np.asarray(atoms.cell[:], dtype=float)
    missing = _missing(cell)
    if any(pbc[i] for i in missing):
        return Verdict("refused", f"periodic along {_names([i for i in missing if pbc[i]])} but the cell "
                                  "vector is missing"), None
    if pbc.all():
        return Verdict("periodic"), atoms
    out = atoms.copy()
    if missing and not _add_cell(out, cutoff + VACUUM_MARGIN):
        return Verdict("refused", f"the given cell vectors {cell.tolist()} are linearly dependent"), None
    if abs(np.linalg.det(out.cell[:])) < _ZERO:
        return Verdict("refused", f"the cell {cell.tolist()} is singular"), None
    given = {i: g for i, g in gaps(out).items() if i not in missing}
    gap = min(given.values(), default=None)
    small = {i: g for i, g in given.items() if g <= cutoff}
    if small:
        text = ", ".join(f"along {AXES[i]} the gap between periodic images is {g:.2f} Å" for i, g in small.items())
        return Verdict("refused", f"pbc {_flags(pbc)}: {text}, not more than the model's cutoff {cutoff:g} Å, so "
                                  "making it periodic would add interactions the data does not have; add vacuum "
                                  "(more than the cutoff) or label it as periodic", gap), None
    out.pbc = True
    if missing:
        return Verdict("boxed", f"no cell vector along {_names(missing)}: added with {cutoff + VACUUM_MARGIN:g} Å "
                                "of vacuum", gap), out
    return Verdict("made periodic", gap=gap), out


def _add_cell(atoms: Atoms, vacuum: float) -> bool:
    """Fill the missing cell vectors with directions orthogonal to the given ones (and to
    each other), each as long as the atoms' extent along it plus ``vacuum``; the atoms are
    centred along the new directions (a translation: energy and forces do not change).
    False when the given vectors are linearly dependent."""
    cell = np.asarray(atoms.cell[:], dtype=float).copy()
    missing = _missing(cell)
    given = [v for i, v in enumerate(cell) if i not in missing]
    basis: list[np.ndarray] = []
    for v in [*given, *np.eye(3)]:  # Gram-Schmidt: the given vectors first, then x, y, z
        w = v - sum((v @ b) * b for b in basis)
        if np.linalg.norm(w) > 1e-6 * max(1.0, np.linalg.norm(v)) and len(basis) < 3:
            basis.append(w / np.linalg.norm(w))
        elif len(basis) < len(given):
            return False
    shift = np.zeros(3)
    for axis, direction in zip(missing, basis[len(given):], strict=True):
        along = atoms.positions @ direction
        length = along.max() - along.min() + vacuum
        cell[axis] = length * direction
        shift += (length / 2 - (along.max() + along.min()) / 2) * direction
    atoms.set_cell(cell)
    atoms.positions += shift
    return True


def _names(axes: list[int]) -> str:
    return ", ".join(AXES[i] for i in axes)


def _flags(pbc: np.ndarray) -> str:
    return "[" + ", ".join("T" if p else "F" for p in pbc) + "]"
