"""MD stability of a potential: whether it can run dynamics at all, the check that follows a
low test error in practice (fine-tuned on a few structures, a model can still drive atoms
into each other or heat a cell without bound).

* ``stability``: from a DFT test cell, for each temperature, Langevin dynamics for
  ``langevin_ps``, then NVE (velocity Verlet) for ``nve_ps`` from where it ended: the
  total-energy drift per atom per ps (slope of a line fit), the smallest interatomic distance
  and the highest temperature reached. A run that blows up stops there and says how, by
  name (atoms collapsed, temperature ran away, non-finite energy or forces, an error of the
  calculator), never by raising: the record keeps the run.
* ``dimer_curve``: two atoms of one element in a large periodic box, the energy against their
  distance relative to the atoms far apart; repulsive at short range means the energy falls
  monotonically from the shortest distance down to the curve's minimum and starts above the
  separated atoms.

Distances are judged against ``d_data``, the smallest interatomic distance in the dataset's
DFT frames: collapse is a pair closer than ``min_distance_fraction`` of it, a distance DFT
never went near. The criteria and the dimer grid come with each MD spec (defaults and
meanings: ``bench.config.MD_DEFAULTS``). Pure numpy + ASE, on any ASE calculator (the MD
job gives it the library's own, on the saved model).

Example:
    >>> out = stability(calc, cell, temperatures_k=(300, 3000), timestep_fs=2, langevin_ps=1,
    ...                 nve_ps=0.5, friction_per_fs=0.01, d_data=dataset_min_distance(frames))
    >>> out["runs"]["3000"]["verdict"]
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list

if TYPE_CHECKING:
    from collections.abc import Sequence

CHECK_EVERY = 5  # steps between the collapse / runaway checks
SEARCH_ANG = 4.0  # neighbour search radius for d_data (any condensed frame has a pair closer)


class BlewUp(Exception):
    """The dynamics left physical ground; the message says how (it ends one run, not the job)."""


def smallest_distance(atoms: Atoms, cutoff: float) -> float:
    """The smallest interatomic distance, periodic images included (inf if none within cutoff)."""
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else math.inf


def dataset_min_distance(frames: Sequence[Atoms]) -> float:
    """The smallest interatomic distance over DFT frames: the scale collapse is judged on."""
    d = min((smallest_distance(a, SEARCH_ANG) for a in frames if len(a) > 1), default=math.inf)
    if not math.isfinite(d):
        raise ValueError(f"no two atoms closer than {SEARCH_ANG} Å in any frame: no distance scale for MD checks")
    return d


class _Watch:
    """Observer of one run: checks every CHECK_EVERY steps, records the NVE energies."""

    def __init__(self, atoms: Atoms, target_k: float, d_data: float, criteria: dict):
        self.atoms, self.target_k, self.d_data, self.criteria = atoms, target_k, d_data, criteria
        self.steps, self.min_distance, self.max_temperature = 0, math.inf, 0.0
        self.temperatures: list[float] = []
        self.total_energy: list[float] = []  # per atom, eV: NVE only

    def step(self, nve: bool) -> None:
        self.steps += 1
        atoms = self.atoms
        energy = atoms.get_potential_energy()  # cached: computed by the step
        if not math.isfinite(energy) or not np.isfinite(atoms.get_forces()).all():
            raise BlewUp("non-finite energy or forces")
        temperature = atoms.get_temperature()
        self.temperatures.append(temperature)
        self.max_temperature = max(self.max_temperature, temperature)
        if nve:
            self.total_energy.append((energy + atoms.get_kinetic_energy()) / len(atoms))
        if self.steps % CHECK_EVERY:
            return
        d = smallest_distance(atoms, 2 * self.d_data)  # first: a collapse also heats the cell
        self.min_distance = min(self.min_distance, d)
        fraction = self.criteria["min_distance_fraction"]
        if d < fraction * self.d_data:
            raise BlewUp(f"atoms collapsed: a pair {d:.2f} Å apart, below {fraction * self.d_data:.2f} Å "
                         f"({fraction:g} x the {self.d_data:.2f} Å closest in the DFT data)")
        limit = self.criteria["max_temperature_factor"] * self.target_k
        if temperature > limit:
            raise BlewUp(f"temperature ran away: {temperature:.0f} K > {limit:.0f} K "
                         f"({self.criteria['max_temperature_factor']:g} x the target)")


def _run(calc, cell: Atoms, target_k: float, *, timestep_fs: float, langevin_ps: float, nve_ps: float,
         friction_per_fs: float, d_data: float, criteria: dict, seed: int) -> dict:
    atoms = cell.copy()
    atoms.calc = calc
    atoms.set_constraint(FixCom())  # the cell does not drift as a whole (Langevin's noise would move it)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, target_k, rng=rng)
    Stationary(atoms)
    watch = _Watch(atoms, target_k, d_data, criteria)
    n_langevin, n_nve = round(1000 * langevin_ps / timestep_fs), round(1000 * nve_ps / timestep_fs)
    out = {"temperature_k": target_k, "langevin_steps": n_langevin, "nve_steps": n_nve}
    started, dynamics = time.perf_counter(), []
    try:  # observers also see each run's starting state, so NVE energies start at t = 0
        dynamics.append(Langevin(atoms, timestep_fs * units.fs, temperature_K=target_k,
                                 friction=friction_per_fs / units.fs, fixcm=False, rng=rng))
        dynamics[-1].attach(lambda: watch.step(nve=False), interval=1)
        dynamics[-1].run(n_langevin)
        tail = watch.temperatures[len(watch.temperatures) // 2:]
        out["langevin_mean_temperature_k"] = float(np.mean(tail))
        start_nve = len(watch.temperatures)
        dynamics.append(VelocityVerlet(atoms, timestep_fs * units.fs))
        dynamics[-1].attach(lambda: watch.step(nve=True), interval=1)
        dynamics[-1].run(n_nve)
        out["nve_mean_temperature_k"] = float(np.mean(watch.temperatures[start_nve:]))
    except BlewUp as exc:
        out["blew_up"] = str(exc)
    except Exception as exc:  # the calculator failing mid-run is a finding about the model, not a crash
        out["blew_up"] = f"calculator error: {type(exc).__name__}: {str(exc)[:300]}"
    wall, steps = time.perf_counter() - started, sum(d.nsteps for d in dynamics)
    out |= {"steps_run": steps, "ps_run": steps * timestep_fs / 1000,
            "min_distance_ang": None if math.isinf(watch.min_distance) else watch.min_distance,
            "max_temperature_k": watch.max_temperature, "wall_s": wall, "s_per_step": wall / steps if steps else None}
    if len(watch.total_energy) > 2 and "blew_up" not in out:  # a partial NVE run's drift means nothing
        t_ps = np.arange(len(watch.total_energy)) * timestep_fs / 1000
        e = np.array(watch.total_energy)
        out["nve_drift_mev_per_atom_per_ps"] = 1000 * float(np.polyfit(t_ps, e, 1)[0])
        out["nve_max_deviation_mev_per_atom"] = 1000 * float(np.abs(e - e[0]).max())
    out["verdict"] = _verdict(out, criteria)
    return out


def _verdict(run: dict, criteria: dict) -> str:
    if "blew_up" in run:
        return f"blew up at {run['ps_run']:.2f} ps: {run['blew_up']}"
    drift = run.get("nve_drift_mev_per_atom_per_ps")
    if drift is not None and abs(drift) > criteria["max_drift_mev_per_atom_per_ps"]:
        return f"drifts: {drift:+.1f} meV/atom/ps in NVE (limit {criteria['max_drift_mev_per_atom_per_ps']:g})"
    return "stable"


def stability(calc, cell: Atoms, *, temperatures_k: Sequence[float], timestep_fs: float, langevin_ps: float,
              nve_ps: float, friction_per_fs: float, d_data: float, criteria: dict, seed: int = 0) -> dict:
    """One Langevin + NVE run per temperature from ``cell`` (see the module docstring);
    ``criteria``: min_distance_fraction, max_temperature_factor, max_drift_mev_per_atom_per_ps."""
    runs = {f"{t:g}": _run(calc, cell, float(t), timestep_fs=timestep_fs, langevin_ps=langevin_ps, nve_ps=nve_ps,
                           friction_per_fs=friction_per_fs, d_data=d_data, criteria=criteria, seed=seed)
            for t in temperatures_k}
    return {"n_atoms": len(cell), "formula": cell.get_chemical_formula(), "d_data_ang": d_data,
            "criteria": criteria, "runs": runs}


def dimer_curve(calc, symbol: str, *, d_data: float, dimer: dict) -> dict:
    """Energy of a homonuclear dimer against distance, relative to the two atoms half a box
    apart (separated beyond any cutoff), and whether it is repulsive at short range;
    ``dimer``: r_min_fraction and r_max_fraction (of d_data), points, box_ang."""
    box = dimer["box_ang"]
    r = np.linspace(dimer["r_min_fraction"] * d_data, dimer["r_max_fraction"] * d_data, int(dimer["points"]))

    def energy(distance: float) -> float:
        pair = Atoms([symbol, symbol], positions=[[1.0, box / 2, box / 2], [1.0 + distance, box / 2, box / 2]],
                     cell=[box, box, box], pbc=True)
        pair.calc = calc
        return float(pair.get_potential_energy())

    try:
        far = energy(box / 2)
        e = np.array([energy(x) for x in r]) - far
    except Exception as exc:  # a model that cannot evaluate a dimer: say so, keep the rest
        return {"symbol": symbol, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    i = int(np.argmin(e))
    rising = [float(r[k]) for k in range(i) if e[k + 1] >= e[k]]
    if i == 0:
        why = f"no repulsive wall: the energy is lowest at the shortest distance, {r[0]:.2f} Å"
    elif rising:
        why = f"the energy falls again towards short range below {rising[-1]:.2f} Å"
    elif e[0] <= 0:
        why = f"at {r[0]:.2f} Å the pair is still {-e[0]:.2f} eV below two separate atoms"
    else:
        why = None
    return {"symbol": symbol, "r_ang": r.tolist(), "energy_ev": e.tolist(), "r_min_ang": float(r[i]),
            "well_depth_ev": float(e[i]), "energy_at_shortest_ev": float(e[0]), "repulsive": why is None,
            "why_not": why}
