"""Dataset registry, converters and bad-input errors, on the real mirrored data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ase import units

from datasets import DatasetError, load_dataset
from datasets.converters import read_mlearn_json, read_snap_json
from datasets.registry import PROJECT_ROOT, catalog, sha256_of

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"


def _record(forces=((0, 0, 0), (0, 0, 0)), energy=-10.0, stress=(1, 2, 3, 4, 5, 6), element="Mo"):
    return {
        "structure": {"lattice": {"matrix": [[3, 0, 0], [0, 3, 0], [0, 0, 3]]},
                      "sites": [{"species": [{"element": element, "occu": 1}], "xyz": [0, 0, 0]},
                                {"species": [{"element": element, "occu": 1}], "xyz": [1.5, 1.5, 1.5]}]},
        "outputs": {"energy": energy, "forces": [list(f) for f in forces], "stress": list(stress),
                    "virial_stress": list(stress)},
        "group": "Elastic",
    }


def test_mlearn_mo_loads_with_groups_and_stress():
    ds = load_dataset("mlearn-Mo")
    assert (len(ds.pool), len(ds.test)) == (194, 23)
    assert ds.elements == ["Mo"] and ds.has_stress
    assert {a.info["group"] for a in ds.test} == {"AIMD-NVT", "Elastic", "Surface", "Vacancy"}
    first = ds.pool[0]
    assert first.calc.results["forces"].shape == (len(first), 3)
    assert np.isfinite(first.calc.results["energy"])


def test_every_catalog_entry_matches_the_mirror_checksums():
    root = SHARED
    for name, entry in catalog().items():
        assert entry["repo"] and len(entry["commit"]) == 40, name
        for f in entry["files"]:
            path = root / f["mirror"]
            if path.exists():
                assert sha256_of(path) == f["sha256"], path


def test_oc20_split_keeps_each_trajectory_on_one_side():
    ds = load_dataset("oc20-traj")
    pool = {a.info["leak_group"] for a in ds.pool}
    test = {a.info["leak_group"] for a in ds.test}
    assert pool and test and not pool & test
    assert not ds.has_stress


def test_snap_groups_name_the_source_files():
    ds = load_dataset("snap-NbMoTaW")
    groups = {a.info["group"] for a in ds.pool}
    assert {"NbMo_SS", "Mo_Elastic", "W_Surface", "Ta_AIMD"} <= groups
    assert all(g.endswith("_Test") for g in {a.info["group"] for a in ds.test})


def test_stress_order_and_sign_conversion(tmp_path):
    # snap: VASP kBar (xx, yy, zz, xy, yz, zx), compressive positive -> ASE (xx yy zz yz xz xy)
    path = tmp_path / "X_Elastic.json"
    path.write_text(json.dumps([_record()]))
    snap = read_snap_json(path)[0].calc.results["stress"]
    np.testing.assert_allclose(snap / (-0.1 * units.GPa), [1, 2, 3, 5, 6, 4])
    # mlearn: VASP kBar (xx, yy, zz, xy, zx, yz)
    mlearn = read_mlearn_json(path)[0].calc.results["stress"]
    np.testing.assert_allclose(mlearn / (-0.1 * units.GPa), [1, 2, 3, 6, 5, 4])


@pytest.mark.parametrize(("record", "message"), [
    (_record(forces=((0, 0, 0),)), r"X\.json\[0\]: field 'forces' has shape \(1, 3\), expected \(2, 3\)"),
    (_record(energy=float("nan")), r"X\.json\[0\]: field 'energy' is not finite \(nan\)"),
    (_record(forces=((0, 0, float("inf")), (0, 0, 0))), r"field 'forces' contains NaN or inf"),
    (_record(element="Xx"), r"unknown element 'Xx'"),
    ({"structure": {}}, r"X\.json\[0\]: expected a dict with 'structure' and 'outputs'"),
])
def test_bad_frames_are_named_by_file_frame_and_field(tmp_path, record, message):
    path = tmp_path / "X.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DatasetError, match=message):
        read_snap_json(path)


def test_missing_forces_and_corrupt_json(tmp_path):
    rec = _record()
    del rec["outputs"]["forces"]
    path = tmp_path / "X.json"
    path.write_text(json.dumps([rec]))
    with pytest.raises(DatasetError, match=r"X\.json\[0\]: field 'forces' is missing"):
        read_snap_json(path)
    path.write_text(json.dumps([_record()])[:-40])
    with pytest.raises(DatasetError, match=r"X\.json: not valid JSON"):
        read_snap_json(path)


def test_truncated_extxyz_is_a_clear_error(tmp_path, emt_xyz):
    broken = tmp_path / "broken.xyz"
    broken.write_text(emt_xyz.read_text()[:-300])
    with pytest.raises(DatasetError, match=r"broken\.xyz"):
        load_dataset(str(broken))


def test_extxyz_path_dataset_round_trips_labels(emt_xyz):
    ds = load_dataset(str(emt_xyz))
    assert len(ds.pool) + len(ds.test) == 12 and ds.has_stress
    assert {a.info["group"] for a in ds.pool + ds.test} == {"even", "odd"}


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    src = SHARED
    for f in catalog()["mlearn-Mo"]["files"]:
        (tmp_path / f["mirror"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f["mirror"], tmp_path / f["mirror"])
    with (tmp_path / "mlearn/Mo/test.json").open("a") as fh:
        fh.write(" ")
    monkeypatch.setenv("BENCH_DATA_MIRROR", str(tmp_path))
    with pytest.raises(DatasetError, match="sha256 .* does not match"):
        load_dataset("mlearn-Mo")


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(DatasetError, match="Did you mean 'mlearn-Mo'"):
        load_dataset("mlearn-M0")
