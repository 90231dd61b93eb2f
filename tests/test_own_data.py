"""A user's own data (issue 15): frames open along an axis, MACE-style and named keys,
stress units, test-set caps and files, their place in a run's identity, the capped-split
caveat in reports, and ``bench check-data``. The families' side of periodicity (the same
numbers for an open slab and a periodic one) is in ``tests/families/contract.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from bench.cli import main
from bench.config import SweepConfig
from bench.core.contract import spec_from_dict
from bench.core.metrics import error_metrics
from bench.plan import make_plan
from bench.registry import MODELS
from datasets import DatasetError, load_dataset
from datasets.converters import read_labelled
from datasets.keys import LabelKeys
from datasets.labels import has_stress, label_arrays
from datasets.periodicity import PeriodicityError, as_periodic, gaps, verdict
from datasets.registry import cap_test, sha256_of
from tests.conftest import emt_frames, minimal_record


def _emt(atoms: Atoms, stress: bool = True) -> dict:
    atoms.calc = EMT()
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        out["stress"] = atoms.get_stress()
    atoms.calc = None
    return out


def _slab(seed: int, vacuum: float = 6.0) -> Atoms:
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=vacuum)  # pbc [T, T, F], as ASE's surface builders make them
    slab.rattle(0.05, seed=seed)
    del slab.info["adsorbate_info"]  # a dict extxyz cannot write
    return slab


def _cluster(seed: int) -> Atoms:
    cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [1.25, 2.1, 0], [1.25, 0.7, 2.0]])
    cluster.rattle(0.05, seed=seed)
    return cluster


def _write(path, frames: list[Atoms], labels: list[dict], keys=("energy", "forces", "stress"), group=None):
    """Frames with their EMT labels under the given keys (info/arrays, as mace_run_train reads them)."""
    out = []
    for i, (atoms, lab) in enumerate(zip(frames, labels, strict=True)):
        atoms = atoms.copy()
        if keys == ("energy", "forces", "stress"):
            atoms.calc = SinglePointCalculator(atoms, **lab)
        else:
            atoms.info[keys[0]] = lab["energy"]
            atoms.arrays[keys[1]] = lab["forces"]
            if "stress" in lab:
                atoms.info[keys[2]] = lab["stress"]
        if group:
            atoms.info[group] = "slab" if not atoms.pbc.all() else "bulk" if i % 2 else "strained"
        out.append(atoms)
    write(path, out, format="extxyz")
    return path


# -- periodicity ----------------------------------------------------------------------------------


def test_a_slab_open_along_c_is_made_periodic_only_when_its_gap_exceeds_the_cutoff():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    assert list(slab.pbc) == [True, True, False] and gaps(slab) == {2: pytest.approx(12.0)}
    closed = as_periodic(slab, cutoff=6.0)
    assert closed.pbc.all() and closed is not slab and not slab.pbc[2]  # a copy; the frame is untouched
    np.testing.assert_array_equal(closed.positions, slab.positions)
    np.testing.assert_array_equal(closed.cell[:], slab.cell[:])
    assert verdict(slab, 11.9).action == "made periodic" and verdict(slab, 12.1).action == "refused"
    slab.info["source"] = "slabs.xyz[7]"
    with pytest.raises(PeriodicityError, match=r"^slabs\.xyz\[7\]: field 'pbc': pbc \[T, T, F\]: along c the gap "
                       r"between periodic images is 12\.00 Å, not more than the model's cutoff 13 Å"):
        as_periodic(slab, cutoff=13.0)
    bulk_cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    assert as_periodic(bulk_cell, cutoff=6.0) is bulk_cell  # periodic frames pass as they are


def test_the_gap_is_measured_on_the_axis_normal_of_a_tilted_cell():
    """A monoclinic slab: c leans by 4 Å, so its length (15.5 Å) is not the distance between
    the planes of images (15 Å); 5 Å of atoms leave a 10 Å gap, not 10.5."""
    atoms = Atoms("Cu2", positions=[[0, 0, 2.0], [1.0, 1.0, 7.0]], cell=[[3, 0, 0], [0, 3, 0], [4, 0, 15]],
                  pbc=[True, True, False])
    assert gaps(atoms) == {2: pytest.approx(10.0)}
    assert verdict(atoms, 9.9).action == "made periodic" and verdict(atoms, 10.1).action == "refused"


def test_a_cluster_without_a_cell_is_boxed_with_vacuum_beyond_the_cutoff():
    cluster = _cluster(0)
    boxed = as_periodic(cluster, cutoff=5.0)
    assert boxed.pbc.all() and verdict(cluster, 5.0).action == "boxed"
    np.testing.assert_allclose(boxed.get_all_distances(), cluster.get_all_distances(), atol=1e-12)  # translated
    open_again = Atoms(boxed.numbers, boxed.positions, cell=boxed.cell, pbc=False)
    assert all(g == pytest.approx(6.0) for g in gaps(open_again).values())  # cutoff + 1 Å each way
    wire = Atoms("Cu2", positions=[[0, 0, 0], [1.3, 0.2, 0.1]], cell=[2.6, 0, 0], pbc=[True, False, False])
    closed = as_periodic(wire, cutoff=5.0)
    assert closed.cell[0] == pytest.approx([2.6, 0, 0]) and abs(np.linalg.det(closed.cell[:])) > 0
    assert np.isclose(closed.cell[1] @ closed.cell[0], 0) and np.isclose(closed.cell[2] @ closed.cell[1], 0)


def test_periodic_axes_without_a_cell_vector_are_refused():
    atoms = Atoms("Cu", positions=[[0, 0, 0]], pbc=True)
    atoms.info["source"] = "bad.xyz[0]"
    with pytest.raises(PeriodicityError, match=r"bad\.xyz\[0\]: field 'pbc': periodic along a, b, c but the cell"):
        as_periodic(atoms, 5.0)


def test_stress_counts_only_on_fully_periodic_frames():
    """Slabs and clusters keep their energies and forces but not their stress (not a bulk
    property): label rows of NaN, skipped by the metrics."""
    periodic = emt_frames(2)
    slab = _slab(0)
    slab.calc = SinglePointCalculator(slab, **_emt(slab))
    frames = [*periodic, slab]
    assert has_stress(frames) and not has_stress([slab])
    ref = label_arrays(frames)
    assert np.isnan(ref["stress"][2]).all() and np.isfinite(ref["stress"][:2]).all()
    pred = {**ref, "stress": np.nan_to_num(ref["stress"]) + 1e-3}
    pred["stress"][2] = 100.0  # a slab's stress, whatever it is, is not scored
    metrics = error_metrics(pred, ref, ["bulk", "bulk", "slab"])
    assert metrics["stress_rmse_gpa"] == pytest.approx(1e-3 / units.GPa)
    assert metrics["per_group"]["slab"]["stress_rmse_gpa"] is None
    assert metrics["energy_rmse_mev_per_atom"] == 0 and metrics["n_structures"] == 3


def test_a_plan_refuses_frames_a_family_cannot_see_periodic_before_any_run(tmp_path):
    thin = _slab(0, vacuum=2.0)  # a ~4 Å gap: below every cutoff
    frames = [*[_slab(i) for i in range(1, 6)], thin]
    path = _write(tmp_path / "thin.xyz", frames, [_emt(f) for f in frames])
    with pytest.raises(PeriodicityError, match=r"m3gnet \(M3GNet-MatPES-PBE-v2025\.1-PES, cutoff 5 Å\): "
                       r"thin\.xyz\[5\]: field 'pbc': .*along c the gap between periodic images is 3\.\d\d Å"):
        make_plan(SweepConfig.from_preset("quick", models="m3gnet", dataset=str(path)))


# -- keys and stress units --------------------------------------------------------------------------


def _mixed(n_bulk: int = 6) -> tuple[list[Atoms], list[dict]]:
    frames = [*(_slab(i) for i in range(4)), *(_cluster(i) for i in range(2))]
    for i in range(n_bulk):
        cell = bulk("Cu", "fcc", a=3.6, cubic=True)
        cell.rattle(0.05, seed=100 + i)
        frames.append(cell)
    return frames, [_emt(f, stress=f.pbc.any()) for f in frames]


def test_mace_style_keys_are_recognised_and_said(tmp_path):
    frames, labels = _mixed()
    path = _write(tmp_path / "mace.xyz", frames, labels, keys=("REF_energy", "REF_forces", "REF_stress"),
                  group="config_type")
    read, keys = read_labelled(path)
    assert keys.given() == {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress",
                            "group": "config_type"}
    assert "energy: info[REF_energy] (MACE convention)" in keys.describe()
    for atoms, lab in zip(read, labels, strict=True):
        assert atoms.calc.results["energy"] == pytest.approx(lab["energy"], abs=1e-12)
        np.testing.assert_allclose(atoms.calc.results["forces"], lab["forces"], atol=1e-8)  # extxyz: 8 decimals
        if "stress" in lab:  # written as a 3x3 tensor by ASE: back in Voigt order
            np.testing.assert_allclose(atoms.calc.results["stress"], lab["stress"], atol=1e-12)
    assert {a.info["group"] for a in read} == {"slab", "bulk", "strained"}
    ds = load_dataset(str(path))
    spec = make_plan(SweepConfig.from_preset("quick", models="m3gnet", dataset=str(path))).runs[0].spec
    assert spec.labels == keys.given() and ds.labels == keys
    assert spec.periodicity and spec_from_dict(spec.to_dict()) == spec


def test_named_keys_and_stress_units_convert_to_ase_units(tmp_path):
    frames, labels = _mixed()
    in_gpa = [{**lab, **({"stress": lab["stress"] / units.GPa} if "stress" in lab else {})} for lab in labels]
    path = _write(tmp_path / "mine.xyz", frames, in_gpa, keys=("dft_E", "dft_F", "dft_S"))
    keys = LabelKeys(energy="dft_E", forces="dft_F", stress="dft_S", stress_unit="GPa")
    read, used = read_labelled(path, keys=keys)
    assert used == keys and used.given() == {"energy": "dft_E", "forces": "dft_F", "stress": "dft_S",
                                             "stress_unit": "GPa"}
    bulk_frame = next(i for i, a in enumerate(read) if a.pbc.all())
    np.testing.assert_allclose(read[bulk_frame].calc.results["stress"], labels[bulk_frame]["stress"], rtol=1e-12)
    vasp, _ = read_labelled(path, keys=LabelKeys(energy="dft_E", forces="dft_F", stress="dft_S",
                                                 stress_unit="vasp-kbar"))  # kbar, positive = compressive
    np.testing.assert_allclose(vasp[bulk_frame].calc.results["stress"],
                               -0.1 * labels[bulk_frame]["stress"], rtol=1e-12)
    ids = {stress_unit: make_plan(SweepConfig.from_preset(
        "quick", models="m3gnet", dataset=str(path), energy_key="dft_E", forces_key="dft_F",
        stress_key="dft_S", stress_unit=stress_unit)).runs[0].spec.spec_id for stress_unit in ("GPa", "kbar")}
    assert len(set(ids.values())) == 2  # another unit is another label set: another run
    variants = {load_dataset(str(path), keys=LabelKeys(energy="dft_E", forces="dft_F", stress="dft_S",
                                                       stress_unit=u)).variant for u in ("GPa", "kbar")}
    assert len(variants) == 2  # ... and other files for the workers (bench/runner.py data/<name>-<variant>)


def test_keys_units_and_test_options_are_preset_settings(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('[sweep]\nenergy_key = "dft_E"\nforces_key = "dft_F"\nstress_unit = "kbar"\n'
                      'group_key = "kind"\ntest_size = 50\n')
    cfg = SweepConfig.from_preset(str(preset))
    assert cfg.label_keys() == LabelKeys(energy="dft_E", forces="dft_F", group="kind", stress_unit="kbar")
    assert cfg.test_size == 50 and SweepConfig.from_preset(str(preset), test_size=7).test_size == 7  # flags win
    with pytest.raises(ValueError, match="stress_unit 'bar'"):
        SweepConfig.from_preset(str(preset), stress_unit="bar")


def test_a_missing_key_names_file_frame_and_the_keys_there(tmp_path):
    frames, labels = _mixed(2)
    path = _write(tmp_path / "keys.xyz", frames, labels, keys=("dft_E", "dft_F", "dft_S"))
    with pytest.raises(DatasetError, match=r"^keys\.xyz\[0\]: field 'energy' is missing \(nor 'REF_energy'\); this "
                       r"frame has info keys \[.*'dft_E'.*\].*--energy-key"):
        read_labelled(path)
    with pytest.raises(DatasetError, match=r"^keys\.xyz\[0\]: field 'E' is missing"):
        read_labelled(path, keys=LabelKeys(energy="E", forces="dft_F"))
    with pytest.raises(DatasetError, match="unknown stress unit 'Pa'"):
        LabelKeys(stress_unit="Pa")


def test_catalog_datasets_refuse_keys_and_test_files():
    with pytest.raises(DatasetError, match=r"'mlearn-Mo' is read by its catalog converter.*\['energy'\]"):
        load_dataset("mlearn-Mo", keys=LabelKeys(energy="REF_energy"))
    with pytest.raises(DatasetError, match=r"\['test_file'\] apply to your own files only"):
        load_dataset("mlearn-Mo", test_file="x.xyz")


# -- test sets ----------------------------------------------------------------------------------------


def test_a_large_file_s_test_set_is_capped_the_same_way_for_every_size_and_seed(tmp_path):
    """400 frames in 100 leak groups of 4 (e.g. snapshots of one trajectory): 80 test frames by
    default; --test-size 30 keeps at most 30, whole groups, the same set whatever else changes."""
    frames = emt_frames(400, seed=3)
    for i, atoms in enumerate(frames):
        atoms.info["leak_group"] = f"traj{i // 4}"
    path = tmp_path / "large.xyz"
    write(path, frames, format="extxyz")
    assert len(load_dataset(str(path)).test) == 80
    ds = load_dataset(str(path), test_size=30)
    assert (len(ds.test), ds.test_cap, ds.n_test_full, len(ds.pool)) == (28, 30, 80, 320)  # 7 whole groups
    groups = {a.info["leak_group"] for a in ds.test}
    assert all(sum(a.info["leak_group"] == g for a in ds.test) == 4 for g in groups)
    plan = make_plan(SweepConfig.from_preset("quick", models="m3gnet", dataset=str(path), test_size=30,
                                             sizes=(2, 8), seeds=(0, 1), strategies=("finetune",)))
    assert {run.spec.test_size for run in plan.runs} == {30} and len(plan.runs) >= 4
    assert [a.info["leak_group"] for a in plan.datasets["large"].test] == [a.info["leak_group"] for a in ds.test]
    assert any("test set capped to 28 of 80 frames" in note for note in plan.notes)


def test_cap_of_a_catalog_test_set_keeps_its_canonical_frames():
    full, capped = load_dataset("mlearn-Mo"), load_dataset("mlearn-Mo", test_size=10)
    assert len(full.test) == 23 and len(capped.test) == 10 and capped.n_test_full == 23
    assert {a.info["leak_group"] for a in capped.test} <= {a.info["leak_group"] for a in full.test}
    assert len(capped.pool) == len(full.pool)
    assert load_dataset("mlearn-Mo", test_size=23).test_cap is None  # nothing capped: the same run
    pairs = emt_frames(8)
    for i, atoms in enumerate(pairs):
        atoms.info["leak_group"] = f"run{i // 4}"
    with pytest.raises(DatasetError, match="smallest leak group of the test set has 4 frames"):
        cap_test(pairs, 3)


def test_a_user_test_file_is_the_test_set_and_named_by_its_sha256(tmp_path):
    train, test = tmp_path / "train.xyz", tmp_path / "heldout.xyz"
    write(train, emt_frames(10, seed=1), format="extxyz")
    write(test, emt_frames(4, seed=2), format="extxyz")
    ds = load_dataset(str(train), test_file=str(test))
    assert (len(ds.pool), len(ds.test), ds.test_sha256) == (10, 4, sha256_of(test))
    spec = make_plan(SweepConfig.from_preset("quick", models="chgnet", dataset=str(train),
                                             test_file=str(test))).runs[0].spec
    assert spec.test_sha256 == sha256_of(test) and spec.test_size is None
    with pytest.raises(ValueError, match="--test-file .* is the test set of one dataset file"):
        SweepConfig.from_preset("quick", dataset=f"{train},mlearn-Mo", test_file=str(test))


def test_catalog_specs_keep_their_identity():
    """Nothing of a user's data enters the specs of catalog data (their ids are as before)."""
    plan = make_plan(SweepConfig.from_preset("quick", models="all"))
    for run in plan.runs:
        assert {"labels", "test_size", "test_sha256", "periodicity"}.isdisjoint(run.spec.to_dict())
    mo = plan.datasets["mlearn-Mo"]
    assert mo.variant == mo.sha256[:12]  # the workers' data files keep their names


def test_a_report_on_a_capped_split_says_published_baselines_used_the_full_one(synthetic_store):
    from bench.report import write_report

    for path in (synthetic_store / "records").glob("*.json"):  # the same records, on mlearn-Mo capped to 10
        record = json.loads(path.read_text())
        record["spec"].update(dataset="mlearn-Mo", test_size=10)
        path.write_text(json.dumps(record))
    md = write_report(synthetic_store)[0].read_text()
    summary = md[: md.index("## Families compared")]
    assert "Published potentials trained on the whole training set" in summary
    assert ("The published potentials were measured on the full test set; this sweep's was capped to at most 10 "
            "frames (--test-size)") in summary


# -- check-data ---------------------------------------------------------------------------------------


def test_check_data_says_what_a_run_will_read(tmp_path, capsys):
    frames, labels = _mixed()
    frames.append(frames[-1].copy())  # a duplicate of the last bulk cell
    labels.append(dict(labels[-1]))
    drift = bulk("Cu", "fcc", a=3.6, cubic=True)
    drift.rattle(0.05, seed=99)
    frames.append(drift)
    labels.append({**_emt(drift), "forces": _emt(drift)["forces"] + 0.5})  # forces that do not sum to 0
    path = _write(tmp_path / "mine.xyz", frames, labels, keys=("REF_energy", "REF_forces", "REF_stress"),
                  group="config_type")
    record = minimal_record("t1")
    record["spec"].update(strategy="finetune", freeze_k=0, e0_policy="refit", train_size=3,
                          train_size_requested=3, train_config={"epochs": 1})
    record.update(timing={"step_s_per_structure": 0.5}, metrics={"n_structures": 10, "n_atoms": 500})
    (tmp_path / "results" / "records").mkdir(parents=True)
    (tmp_path / "results" / "records" / "t1.json").write_text(json.dumps(record))

    assert main(["check-data", str(path), "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    ds = load_dataset(str(path))
    assert f"{path}: 14 frames" in out and "elements (frames containing): Cu 14" in out
    assert all(f"  {m} (" in out and "covers every element" in out for m in MODELS)
    assert "keys used: energy: info[REF_energy] (MACE convention); forces: arrays[REF_forces]" in out
    assert "stress convention: eV/Å³, ASE's sign (positive = tensile) (--stress-unit eV/A3)" in out
    assert "groups (3; per-group errors in reports): slab 6, " in out
    assert f"split: {len(ds.pool)} pool / {len(ds.test)} test frames" in out
    assert "periodicity (pbc a b c): TTT 8, TTF 4, FFF 2" in out
    assert "  m3gnet (cutoff 5 Å): boxed 2, made periodic 4" in out
    forces = np.concatenate([a.calc.results["forces"] for a in ds.pool + ds.test])
    assert f"force RMS {1000 * np.sqrt(np.mean(forces**2)):,.0f} meV/Å (the error of predicting zero forces)" in out
    assert "stress (GPa, ASE sign) of 8 counted frames" in out
    assert "problems: 2" in out and "1 duplicate frames" in out and "mine.xyz[12]" in out
    assert "1 periodic frames whose forces do not sum to ~0" in out and "mine.xyz[13]" in out
    pool_atoms = sum(len(a) for a in ds.pool)
    assert 0.01 * pool_atoms < 10  # 10 ms per atom-step (0.5 s per 50-atom structure) × the pool's atoms
    assert f"chgnet: ~{0.01 * pool_atoms:.2g} s per epoch (10.0 ms per atom per step, median of 1 full " \
           "fine-tuning records on cpu)" in out
    assert "m3gnet: no timing record" in out
    assert main(["check-data", str(path), "--test-size", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 14 frames, sha256 {sha256_of(path)[:16]}…; the {len(ds.test) - 1} test frames beyond " \
           "--test-size 1 are not used, and what follows describes the" in out
    assert "published baselines, where the catalog has them, were measured on the full test set" in out


def test_check_data_names_what_it_cannot_read(tmp_path, capsys):
    frames, labels = _mixed(2)
    labels[1]["forces"][0, 0] = np.nan
    path = _write(tmp_path / "nan.xyz", frames, labels)
    assert main(["check-data", str(path)]) == 2
    assert "error: nan.xyz[1]: field 'forces' contains NaN or inf" in capsys.readouterr().err
    thin = [_slab(0, vacuum=2.0), *emt_frames(4)]
    path = _write(tmp_path / "thin.xyz", thin, [_emt(f) for f in thin])
    assert main(["check-data", str(path), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  sevennet (cutoff 5 Å): refused 1; refused: thin.xyz[0] (pbc [T, T, F]: along c the gap" in out
    assert "timing records:" in out  # no records there: said, not fatal
