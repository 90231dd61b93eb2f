"""Physical-property benchmarks computed from any model's predictions, next to DFT.

Error metrics say how far a model's energies and forces are from the labels; these say
whether the physics built on them comes out right. Each property is computed twice with
the same frames and the same method, once from the DFT labels and once from the model,
so the two numbers differ only by the model:

* ``elastic``: the elastic constants (GPa), zero-stress volume and lattice constant, from
  a least-squares fit of stress against strain over the dataset's strained cells.
* ``mixing``: the mixing energy of binary cells (meV/atom) against elemental references.
* ``relaxation``: energy drop along relaxation trajectories (meV), e.g. OC20.

Pure numpy + ASE (no torch), so the orchestrator can run it on predictions from any
family. What is computed for a dataset is its catalog ``properties`` table (the ``spec``).

Example:
    >>> spec = catalog()["mlearn-Mo"]["properties"]
    >>> compute_properties(spec, d.pool, d.test, predict)["elastic"]["Mo"]["model"]["C44_gpa"]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from bench.core.metrics import EV_PER_A3_TO_GPA

if TYPE_CHECKING:
    from collections.abc import Callable

    from ase import Atoms

MAX_STRAIN = 0.021  # largest |eps_ij| kept in the elastic fit (linear regime, 2 % cells in)
RANK_RTOL = 1e-3  # singular value (relative) below which a fit direction counts as undetermined
SPEC_KEYS = {"elastic", "mixing", "relaxation", "max_strain", "max_cells"}
ELASTIC_KEYS = {"system", "groups", "symmetry", "atoms_per_cell"}
MIXING_KEYS = {"system", "groups", "references"}
SYMMETRIES = ("cubic", "general")
# Voigt index pairs in ASE order (xx, yy, zz, yz, xz, xy).
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_SOURCE_INDEX = re.compile(r"^(.*)\[(\d+)\]$")


class _Unavailable(Exception):
    """One system cannot be computed; becomes that system's ``{"error": ...}`` entry."""


# -- spec -------------------------------------------------------------------------------
def _check_keys(table: dict, known: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"properties: {where} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"properties: unknown key {unknown[0]!r} in {where}; known: {', '.join(sorted(known))}")


def _check_groups(entry: dict, where: str) -> None:
    groups = entry["groups"]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError(f"properties: {where} groups must be a list of group names, got {groups!r}")


def _check_spec(spec: dict) -> None:
    """Refuse a malformed spec before any prediction (a typo must not silently drop a property)."""
    _check_keys(spec, SPEC_KEYS, "the properties table")
    for i, entry in enumerate(spec.get("elastic", [])):
        where = f"elastic[{i}]"
        _check_keys(entry, ELASTIC_KEYS, where)
        for key in ("system", "groups"):
            if key not in entry:
                raise ValueError(f"properties: {where} has no {key!r}")
        _check_groups(entry, where)
        if entry.get("symmetry", "cubic") not in SYMMETRIES:
            raise ValueError(f"properties: {where} symmetry {entry['symmetry']!r}; known: {', '.join(SYMMETRIES)}")
    for i, entry in enumerate(spec.get("mixing", [])):
        where = f"mixing[{i}]"
        _check_keys(entry, MIXING_KEYS, where)
        for key in ("system", "groups", "references"):
            if key not in entry:
                raise ValueError(f"properties: {where} has no {key!r}")
        _check_groups(entry, where)
        if not isinstance(entry["references"], dict):
            raise ValueError(f"properties: {where} references must be a table {{Element = group}}")
    if "relaxation" in spec:
        _check_keys(spec["relaxation"], set(), "relaxation")


# -- predictions --------------------------------------------------------------------------
def _predict(predict: Callable, frames: list[Atoms], *, stress: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One call of the model on ``frames``; shapes checked, stress as [n, 6] Voigt (ASE)."""
    energy, sigma = predict(frames, stress=stress)
    energy = np.asarray(energy, dtype=float).reshape(-1)
    if energy.shape != (len(frames),):
        raise ValueError(f"predict returned {energy.shape[0]} energies for {len(frames)} frames")
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=float)
        if sigma.shape == (len(frames), 3, 3):
            sigma = np.stack([sigma[:, i, j] for i, j in VOIGT], axis=1)
        if sigma.shape != (len(frames), 6):
            raise ValueError(f"predict returned stress of shape {sigma.shape}, expected ({len(frames)}, 6)")
    return energy, sigma


def _dft(atoms: Atoms, key: str) -> np.ndarray | float | None:
    results = atoms.calc.results if atoms.calc is not None else {}
    return results.get(key)


def _source_key(atoms: Atoms) -> tuple:
    """Natural order of ``info["source"]`` ("file[12]" after "file[2]")."""
    source = str(atoms.info.get("source", ""))
    m = _SOURCE_INDEX.match(source)
    return (m.group(1), int(m.group(2)), source) if m else (source, -1, source)


def _reference_frame(frames: list[Atoms]) -> Atoms:
    """The frame closest to zero DFT stress: the nearest a group has to the relaxed cell."""
    return min(frames, key=lambda a: float(np.linalg.norm(_dft(a, "stress"))))


# -- elastic ------------------------------------------------------------------------------
def _voigt(t: np.ndarray, *, strain: bool) -> np.ndarray:
    """3x3 tensor -> Voigt-6 (ASE order); engineering shears (2 eps_ij) for strain."""
    f = 2.0 if strain else 1.0
    return np.array([t[i, j] * (f if i != j else 1.0) for i, j in VOIGT])


def _tensor(v: np.ndarray, *, strain: bool) -> np.ndarray:
    f = 0.5 if strain else 1.0
    t = np.empty((3, 3))
    for k, (i, j) in enumerate(VOIGT):
        t[i, j] = t[j, i] = v[k] * (f if i != j else 1.0)
    return t


def _polar(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F = R U (R rotation, U symmetric stretch) from the SVD F = W S V^T."""
    w, s, vt = np.linalg.svd(F)
    return w @ vt, vt.T @ np.diag(s) @ vt


def strain_and_stress(ref: Atoms, atoms: Atoms, stress_voigt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voigt strain of ``atoms`` relative to ``ref`` and its stress in ``ref``'s frame.

    ASE cells are row vectors, so cell = ref_cell @ F.T. The polar decomposition F = R U
    separates a rigid rotation R (which carries the stress along but strains nothing) from
    the stretch U: strain = U - I, and the stress is rotated back, sigma_ref = R^T sigma R.
    That way a cell that was strained *and* rotated (or stored in another orientation) is
    compared with the others in one frame.
    """
    F = np.linalg.solve(ref.cell[:], atoms.cell[:]).T
    R, U = _polar(F)
    eps = _voigt(U - np.eye(3), strain=True)
    sigma = R.T @ _tensor(np.asarray(stress_voigt, dtype=float), strain=False) @ R
    return eps, _voigt(sigma, strain=False)


def _design(eps: np.ndarray, symmetry: str) -> np.ndarray:
    """Rows: the 6 stress components of each cell; columns: constants then sigma0 (6).

    cubic: C11, C12, C44 (sigma_1 = C11 e1 + C12 (e2 + e3), sigma_4 = C44 e4, ...);
    general: the 21 independent entries C_ij (i <= j) of a symmetric 6x6 C.
    """
    n = eps.shape[0]
    if symmetry == "cubic":
        cols = np.zeros((n, 6, 3))
        for i in range(3):
            cols[:, i, 0] = eps[:, i]
            cols[:, i, 1] = eps[:, [j for j in range(3) if j != i]].sum(axis=1)
            cols[:, 3 + i, 2] = eps[:, 3 + i]
    else:
        pairs = [(i, j) for i in range(6) for j in range(i, 6)]
        cols = np.zeros((n, 6, len(pairs)))
        for p, (i, j) in enumerate(pairs):
            cols[:, i, p] += eps[:, j]
            if i != j:
                cols[:, j, p] += eps[:, i]
    offset = np.broadcast_to(np.eye(6), (n, 6, 6))
    return np.concatenate([cols, offset], axis=2).reshape(n * 6, -1)


def _c_matrix(params: np.ndarray, symmetry: str) -> np.ndarray:
    C = np.zeros((6, 6))
    if symmetry == "cubic":
        c11, c12, c44 = params
        C[:3, :3] = c12
        C[range(3), range(3)] = c11
        C[range(3, 6), range(3, 6)] = c44
    else:
        pairs = [(i, j) for i in range(6) for j in range(i, 6)]
        for p, (i, j) in enumerate(pairs):
            C[i, j] = C[j, i] = params[p]
    return C


def fit_elastic(eps: np.ndarray, sigma_gpa: np.ndarray, symmetry: str, *, v_ref: float, n_atoms: int,
                atoms_per_cell: int | None, system: str) -> dict:
    """Least-squares sigma = C eps + sigma0 over the cells; constants in GPa.

    sigma0 (6 free numbers) absorbs the residual stress of the reference cell, so the
    reference need not be exactly relaxed, and gives the zero-stress strain
    eps0 = -C^-1 sigma0, hence V0 = V_ref det(I + eps0) and the lattice constant.
    """
    A = _design(eps, symmetry)
    b = sigma_gpa.reshape(-1)
    n_c = A.shape[1] - 6
    scaled = A.copy()
    scaled[:, :n_c] /= MAX_STRAIN  # one common scale: a column of rounding noise stays small
    sv = np.linalg.svd(scaled, compute_uv=False)
    rank = int((sv > RANK_RTOL * sv[0]).sum())
    if rank < A.shape[1]:
        raise _Unavailable(
            f"elastic {system}: the strains of its {eps.shape[0]} cells do not determine the {n_c} {symmetry} "
            f"constants + 6 residual stresses (rank {rank} < {A.shape[1]}); "
            f"{'use symmetry cubic or ' if symmetry == 'general' else ''}add cells strained along other directions"
        )
    params, *_ = np.linalg.lstsq(A, b, rcond=None)
    if not np.isfinite(params).all():
        raise _Unavailable(f"elastic {system}: the fit is not finite (non-finite stresses?)")
    C = _c_matrix(params[:n_c], symmetry)
    sigma0 = params[n_c:]
    try:
        eps0 = -np.linalg.solve(C, sigma0)
    except np.linalg.LinAlgError:
        raise _Unavailable(f"elastic {system}: the fitted C is singular; no zero-stress volume") from None
    v0 = float(v_ref * np.linalg.det(np.eye(3) + _tensor(eps0, strain=True)))
    if symmetry == "cubic":
        bulk = (C[0, 0] + 2 * C[0, 1]) / 3
    else:  # Voigt average
        bulk = (C[0, 0] + C[1, 1] + C[2, 2] + 2 * (C[0, 1] + C[0, 2] + C[1, 2])) / 9
    return {
        "a0_ang": float((atoms_per_cell * v0 / n_atoms) ** (1 / 3)) if atoms_per_cell else None,
        "volume_per_atom_a3": v0 / n_atoms,
        "C11_gpa": float(C[0, 0]),
        "C12_gpa": float(C[0, 1]),
        "C44_gpa": float(C[3, 3]),
        "bulk_modulus_gpa": float(bulk),
        "C_gpa": [[float(x) for x in row] for row in C],
    }


def _elastic_cells(entry: dict, frames: list[Atoms], max_strain: float) -> tuple[Atoms, list[Atoms]]:
    """The cells one elastic system is fitted on: the reference and the cells within max_strain.

    Only cells with the group's most common atom count and symbol order are compared: a
    strain is defined between two cells of the same structure only."""
    system, groups = entry["system"], set(entry["groups"])
    cells = [a for a in frames if a.info.get("group") in groups]
    if not cells:
        raise _Unavailable(f"elastic {system}: no frames in groups {sorted(groups)}")
    cells = [a for a in cells if _dft(a, "stress") is not None]
    if not cells:
        raise _Unavailable(f"elastic {system}: no frame of groups {sorted(groups)} has a DFT stress")
    n_common = Counter(len(a) for a in cells).most_common(1)[0][0]
    cells = [a for a in cells if len(a) == n_common]
    symbols = Counter(tuple(a.get_chemical_symbols()) for a in cells).most_common(1)[0][0]
    cells = [a for a in cells if tuple(a.get_chemical_symbols()) == symbols]
    ref = _reference_frame(cells)
    if abs(ref.get_volume()) < 1e-9 or not ref.pbc.all():
        raise _Unavailable(f"elastic {system}: reference {ref.info.get('source')} is not a periodic 3D cell")
    kept = []
    for a in cells:
        _, U = _polar(np.linalg.solve(ref.cell[:], a.cell[:]).T)
        if np.abs(U - np.eye(3)).max() <= max_strain:
            kept.append(a)
    return ref, kept


def _per_system(selection: list, compute: Callable) -> dict:
    """``compute(entry, cells)`` for every system; an _Unavailable becomes its error entry."""
    out = {}
    for entry, cells in selection:
        try:
            if isinstance(cells, _Unavailable):
                raise cells
            out[entry["system"]] = compute(entry, cells)
        except _Unavailable as exc:
            out[entry["system"]] = {"error": str(exc)}
    return out


def _elastic(spec: dict, selection: list, model: dict[int, tuple[float, np.ndarray | None]]) -> dict:
    max_strain = float(spec.get("max_strain", MAX_STRAIN))

    def one(entry: dict, cells: tuple) -> dict:
        system = entry["system"]
        ref, kept = cells
        symmetry = entry.get("symmetry", "cubic")
        kw = {"v_ref": float(ref.get_volume()), "n_atoms": len(ref),
              "atoms_per_cell": entry.get("atoms_per_cell"), "system": system}
        result = {"n_cells": len(kept), "max_strain": max_strain, "symmetry": symmetry,
                  "reference": str(ref.info.get("source", ""))}
        for who in ("dft", "model"):
            eps, sig = [], []
            for a in kept:
                s = _dft(a, "stress") if who == "dft" else model[id(a)][1]
                if s is None:
                    raise _Unavailable(f"elastic {system}: the model returned no stress")
                if not np.isfinite(s).all():
                    raise _Unavailable(f"elastic {system}: {who} stress of {a.info.get('source')} is not finite")
                e, s_ref = strain_and_stress(ref, a, s)
                eps.append(e)
                sig.append(s_ref * EV_PER_A3_TO_GPA)
            result[who] = fit_elastic(np.array(eps), np.array(sig), symmetry, **kw)
        return result

    return _per_system(selection, one)


def _elastic_selection(spec: dict, frames: list[Atoms]) -> list[tuple[dict, tuple | _Unavailable]]:
    max_strain = float(spec.get("max_strain", MAX_STRAIN))
    chosen = []
    for entry in spec.get("elastic", []):
        try:
            chosen.append((entry, _elastic_cells(entry, frames, max_strain)))
        except _Unavailable as exc:
            chosen.append((entry, exc))
    return chosen


# -- mixing -------------------------------------------------------------------------------
def _mixing_selection(spec: dict, frames: list[Atoms]) -> list[tuple[dict, tuple | _Unavailable]]:
    """Per system: ({element: reference frame}, cells), or the error that stops it."""
    max_cells = spec.get("max_cells")
    chosen = []
    for entry in spec.get("mixing", []):
        system = entry["system"]
        try:
            refs = {}
            for el, group in entry["references"].items():
                members = [a for a in frames if a.info.get("group") == group and _dft(a, "stress") is not None]
                if not members:
                    raise _Unavailable(f"mixing {system}: reference group {group!r} for {el} has no frames "
                                       "with DFT stress")
                ref = _reference_frame(members)
                if set(ref.get_chemical_symbols()) != {el}:
                    raise _Unavailable(f"mixing {system}: reference {ref.info.get('source')} of group {group!r} "
                                       f"is {ref.get_chemical_formula()}, not pure {el}")
                refs[el] = ref
            groups = set(entry["groups"])
            cells = sorted((a for a in frames if a.info.get("group") in groups), key=_source_key)
            if max_cells is not None:
                cells = cells[: int(max_cells)]
            if not cells:
                raise _Unavailable(f"mixing {system}: no frames in groups {sorted(groups)}")
            missing = sorted({s for a in cells for s in a.get_chemical_symbols()} - set(refs))
            if missing:
                raise _Unavailable(f"mixing {system}: no reference for element(s) {', '.join(missing)} "
                                   f"(references given: {', '.join(sorted(refs)) or 'none'})")
            chosen.append((entry, (refs, cells)))
        except _Unavailable as exc:
            chosen.append((entry, exc))
    return chosen


def _mixing_energy(a: Atoms, energy: float, mu: dict[str, float]) -> float:
    """E_mix = E/N - sum_el x_el mu_el, meV/atom (x_el: atomic fraction, mu_el: eV/atom)."""
    counts = Counter(a.get_chemical_symbols())
    n = len(a)
    return 1000 * (energy / n - sum(c / n * mu[el] for el, c in counts.items()))


def _mixing(selection: list, model: dict[int, tuple[float, np.ndarray | None]]) -> dict:
    def one(entry: dict, chosen: tuple) -> dict:
        refs, cells = chosen
        values = {}
        for who in ("dft", "model"):
            energy = (lambda a: float(_dft(a, "energy"))) if who == "dft" else (lambda a: model[id(a)][0])
            mu = {el: energy(r) / len(r) for el, r in refs.items()}
            values[who] = np.array([_mixing_energy(a, energy(a), mu) for a in cells])
            if not np.isfinite(values[who]).all():
                raise _Unavailable(f"mixing {entry['system']}: {who} energies are not finite")
        return {
            "n_cells": len(cells),
            "dft_mean_mev_per_atom": float(values["dft"].mean()),
            "model_mean_mev_per_atom": float(values["model"].mean()),
            "mae_mev_per_atom": float(np.abs(values["model"] - values["dft"]).mean()),
        }

    return _per_system(selection, one)


# -- relaxation ---------------------------------------------------------------------------
def _relaxation(test: list[Atoms], predict: Callable, test_energy) -> dict:
    """Energy drop along relaxation trajectories (OC20: adsorbate on slab).

    A trajectory is the test frames sharing ``info["leak_group"]``, in the order of the
    frame index in ``info["source"]`` (``name.traj[i]``). dE_relax = E(last) - E(first) is
    the adsorption-relevant quantity a relaxation with the model would have to get right;
    the path RMSE of E_i - E_first (over every frame, first ones included) says whether the
    model follows the DFT energy landscape along the way, independent of its energy offset.
    """
    trajs: dict[str, list[int]] = {}
    for i, a in enumerate(test):
        trajs.setdefault(str(a.info.get("leak_group")), []).append(i)
    for name, idx in trajs.items():
        for i in idx:
            if not _SOURCE_INDEX.match(str(test[i].info.get("source", ""))):
                return {"error": f"relaxation: frame source {test[i].info.get('source')!r} of trajectory "
                                 f"{name!r} has no [index] to order it by"}
        idx.sort(key=lambda i: _source_key(test[i])[1])
    used = {k: v for k, v in trajs.items() if len(v) >= 2}
    if not used:
        return {"error": f"relaxation: no trajectory with at least 2 frames among {len(test)} test frames"}
    needed = sorted(i for v in used.values() for i in v)
    if test_energy is not None:
        model_e = np.asarray(test_energy, dtype=float).reshape(-1)
        if model_e.shape != (len(test),):
            raise ValueError(f"test_energy has {model_e.shape[0]} values for {len(test)} test frames")
    else:
        e, _ = _predict(predict, [test[i] for i in needed], stress=False)
        model_e = np.full(len(test), np.nan)
        model_e[needed] = e
    dft_e = np.array([float(_dft(a, "energy")) if _dft(a, "energy") is not None else np.nan for a in test])
    d_dft, d_model, path_err = [], [], []
    for idx in used.values():
        rel_dft = 1000 * (dft_e[idx] - dft_e[idx[0]])
        rel_model = 1000 * (model_e[idx] - model_e[idx[0]])
        d_dft.append(rel_dft[-1])
        d_model.append(rel_model[-1])
        path_err.extend(rel_model - rel_dft)
    d_dft, d_model, path_err = np.array(d_dft), np.array(d_model), np.array(path_err)
    if not (np.isfinite(d_dft).all() and np.isfinite(path_err).all()):
        return {"error": "relaxation: DFT or model energies are not finite"}
    return {
        "n_trajectories": len(used),
        "relax_energy_mae_mev": float(np.abs(d_model - d_dft).mean()),
        "relax_energy_dft_mean_mev": float(d_dft.mean()),
        "relax_energy_model_mean_mev": float(d_model.mean()),
        "path_energy_rmse_mev": float(math.sqrt(np.mean(path_err**2))),
    }


# -- entry point ----------------------------------------------------------------------------
def compute_properties(spec: dict, pool: list[Atoms], test: list[Atoms], predict: Callable, *,
                       test_energy=None) -> dict:
    """The properties named in ``spec`` (a catalog ``properties`` table), DFT and model.

    ``predict(frames, stress=bool) -> (energy [n] eV, stress [n, 6] eV/Å³ or None)`` is the
    model; it is called at most twice: once for every frame the elastic and mixing
    properties need (with stress when an elastic system has cells), once for the relaxation
    trajectories unless ``test_energy`` (model energies of ``test``, in order) is given.
    A system that cannot be computed becomes ``{"error": ...}``; a malformed spec raises
    ValueError before anything is predicted.
    """
    _check_spec(spec)
    frames = list(pool) + list(test)
    elastic_sel = _elastic_selection(spec, frames) if "elastic" in spec else []
    mixing_sel = _mixing_selection(spec, frames) if "mixing" in spec else []
    needed: dict[int, Atoms] = {}
    for _, chosen in elastic_sel:
        if not isinstance(chosen, _Unavailable):
            needed.update((id(a), a) for a in chosen[1])
    for _, chosen in mixing_sel:
        if not isinstance(chosen, _Unavailable):
            needed.update((id(a), a) for a in [*chosen[0].values(), *chosen[1]])
    model: dict[int, tuple[float, np.ndarray | None]] = {}
    if needed:
        batch = list(needed.values())
        with_stress = any(not isinstance(chosen, _Unavailable) for _, chosen in elastic_sel)
        energy, sigma = _predict(predict, batch, stress=with_stress)
        for k, a in enumerate(batch):
            model[id(a)] = (float(energy[k]), sigma[k] if sigma is not None else None)
    out: dict = {}
    if "elastic" in spec:
        out["elastic"] = _elastic(spec, elastic_sel, model)
    if "mixing" in spec:
        out["mixing"] = _mixing(mixing_sel, model)
    if "relaxation" in spec:
        out["relaxation"] = _relaxation(list(test), predict, test_energy)
    return out
