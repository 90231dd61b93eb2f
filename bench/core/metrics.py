"""Error metrics as pure numpy functions, units in every field name.

Energies are compared per atom (meV/atom), forces per component (meV/Å), stress per
Voigt component (GPa). Each metric is also computed per ``group`` of the test set.

Example:
    >>> error_metrics(pred, ref)["forces_rmse_mev_per_ang"]
"""

from __future__ import annotations

import numpy as np

EV_PER_A3_TO_GPA = 160.21766208

# name -> (label, lower is better); the one table reports and comparisons read.
METRICS = {
    "energy_rmse_mev_per_atom": "Energy RMSE (meV/atom)",
    "energy_mae_mev_per_atom": "Energy MAE (meV/atom)",
    "forces_rmse_mev_per_ang": "Forces RMSE (meV/Å)",
    "forces_mae_mev_per_ang": "Forces MAE (meV/Å)",
    "stress_rmse_gpa": "Stress RMSE (GPa)",
}


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else float("nan")


def _mae(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if x.size else float("nan")


def _block(e_err: np.ndarray, f_err: np.ndarray, s_err: np.ndarray | None) -> dict:
    out = {
        "energy_rmse_mev_per_atom": 1000 * _rmse(e_err),
        "energy_mae_mev_per_atom": 1000 * _mae(e_err),
        "forces_rmse_mev_per_ang": 1000 * _rmse(f_err),
        "forces_mae_mev_per_ang": 1000 * _mae(f_err),
        "stress_rmse_gpa": EV_PER_A3_TO_GPA * _rmse(s_err) if s_err is not None and s_err.size else None,
        "n_structures": int(e_err.size),
        "n_atoms": int(f_err.shape[0]) if f_err.ndim == 2 else 0,
    }
    return out


def error_metrics(pred: dict[str, np.ndarray | None], ref: dict[str, np.ndarray | None],
                  groups: list[str] | None = None) -> dict:
    """Metrics of predictions against labels, overall and per group.

    Args:
        pred, ref: ``energy`` [n] eV, ``forces`` [n_atoms, 3] eV/Å, ``n_atoms`` [n],
            ``stress`` [n, 6] eV/Å³ or None (ref may lack stress; then it is skipped; ref rows
            of NaN are frames whose stress does not count: ``datasets.labels``).
        groups: one label per structure.
    """
    n_atoms = np.asarray(ref["n_atoms"])
    if np.asarray(pred["energy"]).shape != n_atoms.shape:
        raise ValueError(f"{np.shape(pred['energy'])=} != {n_atoms.shape=}")
    if np.shape(pred["forces"]) != np.shape(ref["forces"]):
        raise ValueError(f"{np.shape(pred['forces'])=} != {np.shape(ref['forces'])=}")
    e_err = (np.asarray(pred["energy"]) - np.asarray(ref["energy"])) / n_atoms
    f_err = np.asarray(pred["forces"]) - np.asarray(ref["forces"])
    has_stress = pred.get("stress") is not None and ref.get("stress") is not None
    s_err = np.asarray(pred["stress"]) - np.asarray(ref["stress"]) if has_stress else None
    counted = np.isfinite(s_err).all(axis=1) if s_err is not None else None
    out = _block(e_err, f_err, s_err[counted] if s_err is not None else None)
    if groups is not None:
        atom_group = np.repeat(np.asarray(groups), n_atoms)
        per = {}
        for g in sorted(set(groups)):
            mask = np.asarray(groups) == g
            per[g] = _block(e_err[mask], f_err[atom_group == g],
                            s_err[mask & counted] if s_err is not None else None)
        out["per_group"] = per
    return out
