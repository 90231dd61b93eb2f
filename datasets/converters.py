"""Converters from the sources' file formats to labelled ``ase.Atoms``.

Each converter returns frames in one vocabulary (see ``datasets/__init__.py``) and checks
every label on the way in, so a bad frame is reported by file, frame index and field
instead of surfacing as a NaN loss deep inside a model library.

Stress conventions are named, and every catalog entry names its own (``stress = ...``), so
a source in an unknown convention is refused instead of silently mis-converted. The two
VASP ones were established from the data, with CHGNet 0.3.0 predictions on the same cells
as the witness (``tests/families/test_chgnet_contract.py`` re-checks them):

* ``vasp-kbar-xy-yz-zx`` (snap JSON ``outputs.stress``): VASP kBar, order xx, yy, zz, xy,
  yz, zx, sign opposite to ASE (positive = compressive).
* ``vasp-kbar-xy-zx-yz`` (mlearn JSON ``outputs.virial_stress``): VASP kBar, order xx, yy,
  zz, xy, zx, yz, sign opposite to ASE.
* ``ase`` (extxyz, traj): eV/Å³, ASE sign, Voigt order xx, yy, zz, yz, xz, xy (or 3×3).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from datasets import keys as label_keys
from datasets.errors import DatasetError
from datasets.keys import LabelKeys

if TYPE_CHECKING:
    from collections.abc import Callable

KBAR_TO_EV_PER_A3 = 0.1 * units.GPa


@dataclass(frozen=True)
class StressConvention:
    """Source stress -> ASE: multiply by ``scale``; source component k goes to ASE Voigt
    index ``order[k]`` (ASE: xx yy zz yz xz xy)."""

    scale: float
    order: tuple[int, ...]


STRESS_CONVENTIONS = {
    "vasp-kbar-xy-yz-zx": StressConvention(-KBAR_TO_EV_PER_A3, (0, 1, 2, 5, 3, 4)),  # snap
    "vasp-kbar-xy-zx-yz": StressConvention(-KBAR_TO_EV_PER_A3, (0, 1, 2, 5, 4, 3)),  # mlearn
    "ase": StressConvention(1.0, (0, 1, 2, 3, 4, 5)),
}


def stress_convention(name: str, where: str = "") -> StressConvention:
    """The named convention, or a DatasetError naming the known ones."""
    if not isinstance(name, str) or name not in STRESS_CONVENTIONS:
        raise DatasetError(
            f"{where}{': ' if where else ''}unknown stress convention {name!r}; "
            f"known: {', '.join(STRESS_CONVENTIONS)}"
        )
    return STRESS_CONVENTIONS[name]


def _numeric(value, field: str, where: str) -> np.ndarray:
    """``value`` as a float array, or a DatasetError naming the field (not numpy's error)."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: field {field!r} is not numeric ({exc})") from exc


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
    if not np.isfinite(atoms.positions).all():
        raise DatasetError(f"{where}: field 'positions' contains NaN or inf")
    if energy is None:
        raise DatasetError(f"{where}: field 'energy' is missing")
    energy = _numeric(energy, "energy", where)
    if energy.shape != ():
        raise DatasetError(f"{where}: field 'energy' has shape {energy.shape}, expected a number")
    if not np.isfinite(energy):
        raise DatasetError(f"{where}: field 'energy' is not finite ({energy})")
    if forces is None:
        raise DatasetError(f"{where}: field 'forces' is missing")
    forces = _numeric(forces, "forces", where)
    if forces.shape != (n, 3):
        raise DatasetError(f"{where}: field 'forces' has shape {forces.shape}, expected ({n}, 3)")
    if not np.isfinite(forces).all():
        raise DatasetError(f"{where}: field 'forces' contains NaN or inf")
    if stress is not None:
        stress = _numeric(stress, "stress", where)
        if stress.shape != (6,):
            raise DatasetError(f"{where}: field 'stress' has shape {stress.shape}, expected (6,)")
        if not np.isfinite(stress).all():
            raise DatasetError(f"{where}: field 'stress' contains NaN or inf")
    results = {"energy": float(energy), "forces": forces}
    if stress is not None:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(group=group, leak_group=leak_group, source=atoms.info.get("source") or where)  # keep the origin
    return atoms


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _first_broken_element(text: str) -> int | None:
    """Index of the first element of a JSON list that does not parse (a truncated or
    corrupt file: the frames before it are intact), or None if that cannot be told."""
    decoder, i = json.JSONDecoder(), _JSON_SPACE.match(text).end()
    if not text.startswith("[", i):
        return None
    i, n = i + 1, 0
    while True:
        try:
            _, i = decoder.raw_decode(text, _JSON_SPACE.match(text, i).end())
        except json.JSONDecodeError:
            return n
        i = _JSON_SPACE.match(text, i).end()
        if not text.startswith(",", i):
            return None if text.startswith("]", i) else n + 1
        i, n = i + 1, n + 1


def _read_json_list(path: Path) -> list:
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON (not UTF-8 text: {exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        bad = _first_broken_element(text)
        at = f", broken at frame {bad} (frames before it parse)" if bad is not None else ""
        raise DatasetError(f"{path}: not valid JSON{at} ({exc}); the file is truncated or corrupt") from exc
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
        return Atoms(symbols, positions=positions, cell=cell, pbc=True)
    except DatasetError:
        raise
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{where}: field 'structure' is malformed ({exc!r})") from exc


def convert_stress(raw, convention: str, where: str) -> np.ndarray | None:
    """Source stress (6 components) in ``convention`` -> ASE Voigt, eV/Å³, ASE sign."""
    conv = stress_convention(convention, where)
    if raw is None:
        return None
    raw = _numeric(raw, "stress", where)
    if raw.shape != (6,):
        raise DatasetError(f"{where}: field 'stress' has shape {raw.shape}, expected (6,)")
    out = np.empty(6)
    out[list(conv.order)] = conv.scale * raw
    return out


def _read_materialsvirtuallab_json(path: Path, stress: str, stress_key: str, record_groups: bool) -> list[Atoms]:
    stress_convention(stress, str(path))  # refuse an unknown convention before reading
    frames = []
    for i, rec in enumerate(_read_json_list(path)):
        where = f"{path.name}[{i}]"
        if not isinstance(rec, dict) or "structure" not in rec or "outputs" not in rec:
            raise DatasetError(f"{where}: expected a dict with 'structure' and 'outputs'")
        out = rec["outputs"]
        if not isinstance(out, dict):
            raise DatasetError(f"{where}: field 'outputs' is {type(out).__name__}, expected a dict")
        atoms = _structure_to_atoms(rec["structure"], where)
        frames.append(
            labelled(
                atoms,
                energy=out.get("energy"),
                forces=out.get("forces"),
                stress=convert_stress(out.get(stress_key), stress, where),
                where=where,
                group=str(rec.get("group") or path.stem) if record_groups else path.stem,
                leak_group=f"{path.stem}/{i}",
            )
        )
    return frames


def read_mlearn_json(path: Path, *, stress: str = "vasp-kbar-xy-zx-yz") -> list[Atoms]:
    """mlearn ``{training,test}.json``; group = the record's ``group`` (AIMD, Elastic, ...)."""
    return _read_materialsvirtuallab_json(path, stress, "virial_stress", record_groups=True)


def read_snap_json(path: Path, *, stress: str = "vasp-kbar-xy-yz-zx") -> list[Atoms]:
    """snap ``<system>_<kind>.json``; group = file stem (e.g. ``NbMo_SS``, ``Mo_Surface``)."""
    return _read_materialsvirtuallab_json(path, stress, "stress", record_groups=False)


def _first_bad_xyz_frame(path: Path) -> str:
    """'frame i (line n): why' for the first (ext)xyz frame that does not parse on its own.

    ASE's error names neither frame nor line, and it indexes the whole file before reading,
    so the frame is found here by walking the atom-count headers.
    """
    from ase.io import read

    lines = path.read_text(errors="replace").splitlines(keepends=True)
    start, frame = 0, 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        try:
            n = int(lines[start])
        except ValueError:
            return f"frame {frame} (line {start + 1}): expected an atom count, got {lines[start].strip()[:60]!r}"
        block = lines[start:start + n + 2]
        if len(block) < n + 2:
            return f"frame {frame} (line {start + 1}): truncated, {max(0, len(block) - 2)} of {n} atom lines"
        try:
            read(io.StringIO("".join(block)), format="extxyz")
        except Exception as exc:
            return f"frame {frame} (line {start + 1}): {type(exc).__name__}: {exc}"
        start, frame = start + n + 2, frame + 1
    return ""


def _first_bad_frame(path: Path) -> str:
    """Locate the first unreadable frame of a file ASE refused (best effort; '' if unknown)."""
    from ase.io import iread

    n = 0
    try:
        if path.suffix in {".xyz", ".extxyz"}:
            return _first_bad_xyz_frame(path)
        for _ in iread(path, index=":"):
            n += 1
    except Exception:
        return f"frame {n}"
    return ""


def read_ase_file(path: Path, *, leak_per_file: bool = False, stress: str = "ase",
                  keys: LabelKeys | None = None) -> list[Atoms]:
    """Any file ASE reads with labels (extxyz, traj); see ``read_labelled``."""
    return read_labelled(path, leak_per_file=leak_per_file, stress=stress, keys=keys)[0]


def read_labelled(path: Path, *, leak_per_file: bool = False, stress: str = "ase",
                  keys: LabelKeys | None = None) -> tuple[list[Atoms], LabelKeys]:
    """Frames of any file ASE reads with labels (extxyz, traj), and the keys they were read with.

    Labels come from where ``keys`` says (``datasets.keys``: by default the calculator's
    results, or MACE's ``REF_*`` names where a file has only those); stress, if present, is
    converted from ``keys.stress_unit`` to ASE units and sign (eV/Å³). ``stress`` is the
    catalog's convention name, and for ASE files only ``ase`` is accepted. The group comes
    from ``keys.group`` (default ``info['group']``, else the file stem); ``info['leak_group']``
    keeps correlated frames on one side of a split (default: one per frame, or one per file
    with ``leak_per_file``, as for relaxation trajectories).
    """
    from ase.io import read

    stress_convention(stress, str(path))
    if stress != "ase":
        raise DatasetError(f"{path}: ASE files hold stress in the 'ase' convention, not {stress!r}")
    if path.is_file() and path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file, no frames")
    try:
        images = read(path, index=":")
    except Exception as exc:  # ASE raises many types for corrupt files
        bad, ase_said = _first_bad_frame(path), f"{type(exc).__name__}: {exc}"
        detail = bad if bad and ase_said in bad else f"{bad} (ASE: {ase_said})" if bad else ase_said
        raise DatasetError(f"{path}: cannot be read by ASE: {detail}; the file is truncated or corrupt") from exc
    if not images:
        raise DatasetError(f"{path}: contains no frames")
    keys = label_keys.resolve(images, keys or LabelKeys())
    frames = []
    for i, atoms in enumerate(images):
        where = f"{path.name}[{i}]"
        raw_stress = label_keys.value(atoms, "stress", keys, where)
        group = label_keys.value(atoms, "group", keys, where)
        clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frames.append(
            labelled(
                clean,
                energy=label_keys.value(atoms, "energy", keys, where),
                forces=label_keys.value(atoms, "forces", keys, where),
                stress=label_keys.stress_in_ase_units(raw_stress, keys, partial(_numeric, field="stress", where=where)),
                where=where,
                group=str(group if group is not None else path.stem),
                leak_group=str(
                    atoms.info.get("leak_group", path.stem if leak_per_file else f"{path.stem}/{i}")
                ),
            )
        )
    return frames, keys


# format -> reader(path, *, stress=convention name)
READERS: dict[str, Callable[..., list[Atoms]]] = {
    "mlearn-json": read_mlearn_json,
    "snap-json": read_snap_json,
    "ase-traj": partial(read_ase_file, leak_per_file=True),
    "extxyz": read_ase_file,
}
