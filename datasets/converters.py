"""Converters from the sources' file formats to labelled ``ase.Atoms``.

Each converter returns frames in one vocabulary (see ``datasets/__init__.py``) and checks
every label on the way in, so a bad frame is reported by file, frame index and field
instead of surfacing as a NaN loss deep inside a model library.

Stress conventions were established from the data, with CHGNet 0.3.0 predictions on the
same cells as the witness (``tests/families/test_chgnet_contract.py`` re-checks them):

* snap JSON ``outputs.stress``: VASP kBar, order xx, yy, zz, xy, yz, zx, sign opposite to
  ASE (positive = compressive).
* mlearn JSON ``outputs.virial_stress``: VASP kBar, order xx, yy, zz, xy, zx, yz, sign
  opposite to ASE.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from datasets.errors import DatasetError

if TYPE_CHECKING:
    from collections.abc import Callable

KBAR_TO_EV_PER_A3 = 0.1 * units.GPa
# Source stress component k goes to ASE Voigt index ORDER[k] (ASE: xx yy zz yz xz xy).
STRESS_ORDER = {
    "snap": (0, 1, 2, 5, 3, 4),
    "mlearn": (0, 1, 2, 5, 4, 3),
}


def labelled(
    atoms: Atoms,
    *,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray | None,
    where: str,
    group: str,
    leak_group: str,
) -> Atoms:
    """Attach checked labels and metadata to ``atoms``; ``where`` names file and frame."""
    n = len(atoms)
    if n == 0:
        raise DatasetError(f"{where}: structure has no atoms")
    if energy is None or not math.isfinite(float(energy)):
        raise DatasetError(f"{where}: field 'energy' is missing or not finite ({energy!r})")
    forces = np.asarray(forces, dtype=float) if forces is not None else None
    if forces is None:
        raise DatasetError(f"{where}: field 'forces' is missing")
    if forces.shape != (n, 3):
        raise DatasetError(f"{where}: field 'forces' has shape {forces.shape}, expected ({n}, 3)")
    if not np.isfinite(forces).all():
        raise DatasetError(f"{where}: field 'forces' contains NaN or inf")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape != (6,):
            raise DatasetError(f"{where}: field 'stress' has shape {stress.shape}, expected (6,)")
        if not np.isfinite(stress).all():
            raise DatasetError(f"{where}: field 'stress' contains NaN or inf")
    results = {"energy": float(energy), "forces": forces}
    if stress is not None:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(group=group, leak_group=leak_group, source=where)
    return atoms


def _read_json_list(path: Path) -> list:
    try:
        with path.open() as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of frames, got {type(data).__name__}")
    return data


def _structure_to_atoms(struct: dict, where: str) -> Atoms:
    """pymatgen ``Structure.as_dict()`` to Atoms without importing pymatgen."""
    try:
        cell = np.asarray(struct["lattice"]["matrix"], dtype=float)
        symbols, positions = [], []
        for site in struct["sites"]:
            species = site["species"]
            if len(species) != 1 or abs(float(species[0].get("occu", 1)) - 1) > 1e-6:
                raise DatasetError(f"{where}: partially occupied site {species}; not supported")
            symbol = species[0]["element"]
            if symbol not in chemical_symbols[1:]:
                raise DatasetError(f"{where}: unknown element {symbol!r}")
            symbols.append(symbol)
            positions.append(site["xyz"])
    except (KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"{where}: field 'structure' is malformed ({exc!r})") from exc
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def _vasp_stress(raw: list | None, convention: str, where: str) -> np.ndarray | None:
    if raw is None:
        return None
    raw = np.asarray(raw, dtype=float)
    if raw.shape != (6,):
        raise DatasetError(f"{where}: field 'stress' has shape {raw.shape}, expected (6,)")
    out = np.empty(6)
    out[list(STRESS_ORDER[convention])] = -KBAR_TO_EV_PER_A3 * raw
    return out


def _read_materialsvirtuallab_json(path: Path, convention: str, stress_key: str) -> list[Atoms]:
    frames = []
    for i, rec in enumerate(_read_json_list(path)):
        where = f"{path.name}[{i}]"
        if not isinstance(rec, dict) or "structure" not in rec or "outputs" not in rec:
            raise DatasetError(f"{where}: expected a dict with 'structure' and 'outputs'")
        out = rec["outputs"]
        atoms = _structure_to_atoms(rec["structure"], where)
        frames.append(
            labelled(
                atoms,
                energy=out.get("energy"),
                forces=out.get("forces"),
                stress=_vasp_stress(out.get(stress_key), convention, where),
                where=where,
                group=str(rec.get("group") or path.stem) if convention == "mlearn" else path.stem,
                leak_group=f"{path.stem}/{i}",
            )
        )
    return frames


def read_mlearn_json(path: Path) -> list[Atoms]:
    """mlearn ``{training,test}.json``; group = the record's ``group`` (AIMD, Elastic, ...)."""
    return _read_materialsvirtuallab_json(path, "mlearn", "virial_stress")


def read_snap_json(path: Path) -> list[Atoms]:
    """snap ``<system>_<kind>.json``; group = file stem (e.g. ``NbMo_SS``, ``Mo_Surface``)."""
    return _read_materialsvirtuallab_json(path, "snap", "stress")


def read_ase_file(path: Path, *, leak_per_file: bool = False) -> list[Atoms]:
    """Any file ASE reads with labels (extxyz, traj).

    Stress, if present, must already be in ASE units and sign (eV/Å³); extxyz written by
    ASE is. ``info['group']`` names groups (default: the file stem); ``info['leak_group']``
    keeps correlated frames on one side of a split (default: one per frame, or one per file
    with ``leak_per_file``, as for relaxation trajectories).
    """
    from ase.io import read  # noqa: PLC0415 - keep `import datasets` light

    try:
        images = read(path, index=":")
    except Exception as exc:  # ASE raises many types for corrupt files
        raise DatasetError(f"{path}: cannot be read by ASE ({type(exc).__name__}: {exc})") from exc
    if not images:
        raise DatasetError(f"{path}: contains no frames")
    frames = []
    for i, atoms in enumerate(images):
        where = f"{path.name}[{i}]"
        calc = atoms.calc
        results = dict(calc.results) if calc is not None else {}
        energy = results.get("energy", results.get("free_energy", atoms.info.get("energy")))
        forces = results.get("forces", atoms.arrays.get("forces"))
        stress = results.get("stress", atoms.info.get("stress"))
        if stress is not None:
            stress = np.asarray(stress, dtype=float)
            if stress.shape == (3, 3):
                stress = stress.ravel()[[0, 4, 8, 5, 2, 1]]
        clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frames.append(
            labelled(
                clean,
                energy=energy,
                forces=forces,
                stress=stress,
                where=where,
                group=str(atoms.info.get("group", path.stem)),
                leak_group=str(
                    atoms.info.get("leak_group", path.stem if leak_per_file else f"{path.stem}/{i}")
                ),
            )
        )
    return frames


READERS: dict[str, Callable[[Path], list[Atoms]]] = {
    "mlearn-json": read_mlearn_json,
    "snap-json": read_snap_json,
    "ase-traj": lambda path: read_ase_file(path, leak_per_file=True),
    "extxyz": read_ase_file,
}
