"""MD stability checks (adapters/md.py) on ASE's EMT and on potentials built to fail: a
stable metal stays stable, and each way of blowing up is named, never raised."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from adapters.md import dataset_min_distance, dimer_curve, smallest_distance, stability
from bench.config import MD_DEFAULTS

SHORT = {"timestep_fs": 2.0, "langevin_ps": 0.1, "nve_ps": 0.06, "friction_per_fs": 0.02,
         "criteria": MD_DEFAULTS["criteria"]}
DIMER = MD_DEFAULTS["dimer"]


@pytest.fixture
def cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    return atoms


class Attraction(Calculator):
    """Every pair within 4 Å attracts as -A/r with no wall: pairs fall into each other."""

    implemented_properties = ("energy", "forces")
    strength = 5.0  # A, eV Å

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, vec, dist = neighbor_list("iDd", self.atoms, 4.0)  # each pair twice, vec = r_j - r_i
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, self.strength * vec / dist[:, None] ** 3)
        self.results = {"energy": -0.5 * self.strength * float((1 / dist).sum()), "forces": forces}


class Faulty(EMT):
    """EMT with a defect: after ``after`` calls it raises, returns NaN, kicks the atoms at random, or
    (``drift``) adds ``per_call`` eV per atom to the energy at every call."""

    def __init__(self, mode: str, after: int = 0, per_call: float = 0.0):
        super().__init__()
        self.mode, self.after, self.per_call, self.calls = mode, after, per_call, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls <= self.after:
            return
        if self.mode == "raise":
            raise RuntimeError("neighbour list overflow")
        if self.mode == "nan":
            self.results["energy"] = float("nan")
        if self.mode == "kick":
            self.results["forces"] = np.random.default_rng(self.calls).normal(0, 20.0, (len(self.atoms), 3))
        if self.mode == "drift":
            self.results["energy"] += self.per_call * self.calls * len(self.atoms)


def test_a_stable_metal_is_stable_at_both_temperatures(cell):
    d_data = smallest_distance(cell, 4.0)
    out = stability(EMT(), cell, temperatures_k=(300, 1200), d_data=d_data, **SHORT)
    assert out["n_atoms"] == 32 and set(out["runs"]) == {"300", "1200"}
    for target, run in zip((300, 1200), out["runs"].values(), strict=True):
        assert run["verdict"] == "stable", run
        assert (run["langevin_steps"], run["nve_steps"], run["steps_run"]) == (50, 30, 80)
        assert run["ps_run"] == pytest.approx(0.16)
        assert abs(run["nve_drift_mev_per_atom_per_ps"]) < 5 and run["nve_max_deviation_mev_per_atom"] < 5
        assert 0.6 * d_data < run["min_distance_ang"] < 2.6
        assert 0.3 * target < run["langevin_mean_temperature_k"] < 2 * target
        assert run["s_per_step"] > 0


def test_every_way_of_blowing_up_is_named_and_the_other_temperatures_still_run(cell):
    d_data = smallest_distance(cell, 4.0)
    heats = {**SHORT, "criteria": {**SHORT["criteria"], "max_temperature_factor": 1000}}  # a collapse heats too
    collapsed = stability(Attraction(), cell, temperatures_k=(300,), d_data=d_data, **heats)["runs"]["300"]
    assert collapsed["verdict"].startswith("blew up at") and "atoms collapsed: a pair" in collapsed["verdict"]
    assert collapsed["steps_run"] < 80 and "nve_drift_mev_per_atom_per_ps" not in collapsed
    raised = stability(Faulty("raise", after=20), cell, temperatures_k=(300, 600), d_data=d_data, **SHORT)["runs"]
    assert all("calculator error: RuntimeError: neighbour list overflow" in r["verdict"] for r in raised.values())
    nan = stability(Faulty("nan", after=10), cell, temperatures_k=(300,), d_data=d_data, **SHORT)["runs"]["300"]
    assert "non-finite energy or forces" in nan["verdict"]
    hot = stability(Faulty("kick"), cell, temperatures_k=(300,), d_data=d_data, **SHORT)["runs"]["300"]
    assert "temperature ran away" in hot["verdict"] and hot["max_temperature_k"] > 900


def test_nve_drift_is_measured_per_atom_per_ps_and_judged(cell):
    # +0.1 meV/atom per call, one call per 2 fs step: +50 meV/atom/ps on top of EMT's own (small) drift
    run = stability(Faulty("drift", per_call=1e-4), cell, temperatures_k=(300,), d_data=smallest_distance(cell, 4.0),
                    **SHORT)["runs"]["300"]
    assert run["nve_drift_mev_per_atom_per_ps"] == pytest.approx(50, abs=5)
    assert run["verdict"].startswith("drifts: +") and "meV/atom/ps in NVE (limit 5)" in run["verdict"]


def test_dimer_curve_is_repulsive_for_emt_and_not_for_attraction():
    emt = dimer_curve(EMT(), "Cu", d_data=2.4, dimer={**DIMER, "points": 17})
    assert emt["repulsive"] and emt["why_not"] is None
    assert len(emt["r_ang"]) == 17 and emt["r_ang"][0] == pytest.approx(0.96)
    assert emt["energy_at_shortest_ev"] > 0 > emt["well_depth_ev"] and 1.8 < emt["r_min_ang"] < 2.6
    attraction = dimer_curve(Attraction(), "Cu", d_data=2.4, dimer={**DIMER, "points": 9})
    assert not attraction["repulsive"] and attraction["why_not"].startswith("no repulsive wall")
    failing = dimer_curve(Faulty("raise"), "Cu", d_data=2.4, dimer=DIMER)
    assert failing == {"symbol": "Cu", "error": "RuntimeError: neighbour list overflow"}


def test_dataset_min_distance_is_the_closest_pair_over_frames(cell):
    squeezed = cell.copy()
    squeezed.positions[1] = squeezed.positions[0] + [1.5, 0, 0]
    assert dataset_min_distance([cell, squeezed]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no distance scale"):
        dataset_min_distance([bulk("Cu", "fcc", a=9.0)])
