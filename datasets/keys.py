"""Where a user's file keeps its labels: key names, and the unit and sign of its stress.

Users' extxyz files come from their own tools. The default is what ASE's readers make of a
file (the calculator's results ``energy``/``free_energy``, ``forces``, ``stress``; else
``info['energy']``, ``arrays['forces']``, ``info['stress']``; the group in ``info['group']``).
Where a file has none of that for a label but has MACE's names for it (``REF_energy``,
``REF_forces``, ``REF_stress``, ``config_type``: what ``mace_run_train`` reads), those are
used. Any key can be named instead (``--energy-key`` ...), and every reader says which keys
it used (``LabelKeys.describe``): they change the labels, so the non-default ones enter the
run's identity (``TrainSpec.labels``).

Stress in a user's file is eV/Å³ with ASE's sign (positive = tensile, 1/V dE/dε) unless
``stress_unit`` says otherwise (``STRESS_UNITS``); components in ASE's Voigt order (xx, yy,
zz, yz, xz, xy), or a 3×3 (or 9-number) tensor.

Example:
    >>> keys = resolve(images, LabelKeys(stress_unit="GPa"))
    >>> keys.describe()     # 'energy: info[REF_energy] (MACE convention), ...'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ase import units

from datasets.errors import DatasetError

if TYPE_CHECKING:
    from ase import Atoms

# name -> (factor to eV/Å³ with ASE's sign, what it means)
STRESS_UNITS = {
    "eV/A3": (1.0, "eV/Å³, ASE's sign (positive = tensile)"),
    "GPa": (units.GPa, "GPa, ASE's sign (positive = tensile)"),
    "kbar": (0.1 * units.GPa, "kbar, ASE's sign (positive = tensile)"),
    "vasp-kbar": (-0.1 * units.GPa, "kbar, VASP's sign (positive = compressive, as OUTCAR's 'in kB' line)"),
}
DEFAULT_STRESS_UNIT = "eV/A3"
FIELDS = ("energy", "forces", "stress", "group")
MACE = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress", "group": "config_type"}


@dataclass(frozen=True)
class LabelKeys:
    """A key per label (None: the default source) and the stress unit of the file."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    group: str | None = None
    stress_unit: str = DEFAULT_STRESS_UNIT

    def __post_init__(self):
        if self.stress_unit not in STRESS_UNITS:
            raise DatasetError(f"unknown stress unit {self.stress_unit!r}; known: {', '.join(STRESS_UNITS)}")

    def given(self) -> dict[str, str]:
        """The choices that differ from the defaults (what enters a run's identity)."""
        return {f.name: v for f in dataclasses.fields(self)
                if (v := getattr(self, f.name)) is not None and v != f.default}

    def describe(self) -> str:
        """Which key each label comes from, and the stress convention, in words."""
        default = {"energy": "the calculator's energy (or info[energy])",
                   "forces": "the calculator's forces (or arrays[forces])",
                   "stress": "the calculator's stress (or info[stress])", "group": "info[group] (else the file name)"}
        parts = []
        for name in FIELDS:
            key = getattr(self, name)
            mace = " (MACE convention)" if key is not None and key == MACE[name] else ""
            where = "arrays" if name == "forces" else "info"
            parts.append(f"{name}: {f'{where}[{key}]{mace}' if key is not None else default[name]}")
        parts.append(f"stress unit: {STRESS_UNITS[self.stress_unit][1]}")
        return "; ".join(parts)


def _has_default(atoms: Atoms, name: str) -> bool:
    results = atoms.calc.results if atoms.calc is not None else {}
    if name == "energy":
        return "energy" in results or "free_energy" in results or "energy" in atoms.info
    if name == "forces":
        return "forces" in results or "forces" in atoms.arrays
    return name in results or name in atoms.info


def _has(atoms: Atoms, name: str, key: str) -> bool:
    return key in (atoms.arrays if name == "forces" else atoms.info) or (
        atoms.calc is not None and key in atoms.calc.results)


def resolve(images: list[Atoms], given: LabelKeys) -> LabelKeys:
    """The keys to read ``images`` with: each given key as given; otherwise the default where
    any frame has it, else MACE's name where any frame has that, else the default."""
    chosen = {}
    for name in FIELDS:
        key = getattr(given, name)
        if key is None and not any(_has_default(a, name) for a in images) and any(
                _has(a, name, MACE[name]) for a in images):
            key = MACE[name]
        chosen[name] = key
    return dataclasses.replace(given, **chosen)


def value(atoms: Atoms, name: str, keys: LabelKeys, where: str):
    """The raw label ``name`` of a frame under ``keys`` (None when absent); a missing energy
    or forces is an error naming the frame, the key and the keys the frame does have (stress
    and group are optional)."""
    key = getattr(keys, name)
    results = atoms.calc.results if atoms.calc is not None else {}
    store, store_name = (atoms.arrays, "arrays") if name == "forces" else (atoms.info, "info")
    if key is None and name == "energy":
        found = results.get("energy", results.get("free_energy", atoms.info.get("energy")))
    elif key is None:
        found = results.get(name, store.get(name))
    else:
        found = store.get(key, results.get(key))
    if found is None and name in ("energy", "forces"):
        have = sorted(set(store) - {"numbers", "positions"})
        field = f"{key!r} is missing" if key is not None else f"{name!r} is missing (nor {MACE[name]!r})"
        raise DatasetError(f"{where}: field {field}; this frame has {store_name} keys {have}"
                           f"{f' and calculator results {sorted(results)}' if results else ''}; "
                           f"name the key with --{name}-key")
    return found


def stress_in_ase_units(raw, keys: LabelKeys, numeric) -> object:
    """A raw stress (6 Voigt, 9 or 3×3 numbers in ``keys.stress_unit``) as ASE Voigt eV/Å³;
    ``numeric`` turns it into an array or raises the caller's named error."""
    if raw is None:
        return None
    stress = numeric(raw)
    if stress.shape == (9,):
        stress = stress.reshape(3, 3)
    if stress.shape == (3, 3):
        stress = stress.ravel()[[0, 4, 8, 5, 2, 1]]
    return stress * STRESS_UNITS[keys.stress_unit][0]
