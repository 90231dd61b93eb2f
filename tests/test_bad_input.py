"""Bad input (issue #5): every case is refused with an error naming the file, the frame and
the field, never a raw traceback from ase, json or numpy, and never a silent fix-up."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from bench.core.contract import SCHEMA_VERSION
from bench.store import Store, StoreError
from datasets import DatasetError, load_dataset
from datasets import registry as registry_module
from datasets.converters import STRESS_CONVENTIONS, read_ase_file, read_mlearn_json, read_snap_json
from datasets.registry import catalog, check_entry
from datasets.splits import parse_size, plan_split, resolve_size
from tests.conftest import emt_frames, minimal_record

SHARED = registry_module.PROJECT_ROOT.parent / "shared" / "datasets"


def _record(energy=-10.0, forces=((0, 0, 0), (0, 0, 0)), stress=(1, 2, 3, 4, 5, 6)):
    """One snap/mlearn JSON frame of a 2-atom Mo cell."""
    site = {"species": [{"element": "Mo", "occu": 1}]}
    return {"structure": {"lattice": {"matrix": [[3, 0, 0], [0, 3, 0], [0, 0, 3]]},
                          "sites": [{**site, "xyz": [0, 0, 0]}, {**site, "xyz": [1.5, 1.5, 1.5]}]},
            "outputs": {"energy": energy, "forces": [list(f) for f in forces], "stress": list(stress),
                        "virial_stress": list(stress)},
            "group": "Elastic"}


def _json_file(tmp_path, bad_frame: dict, index: int = 1, name: str = "Mo_Elastic.json") -> Path:
    """A 3-frame JSON file whose frame ``index`` is ``bad_frame``: errors must name that index."""
    frames = [_record(), _record(), _record()]
    frames[index] = bad_frame
    path = tmp_path / name
    path.write_text(json.dumps(frames))
    return path


def _xyz_lines(tmp_path) -> list[str]:
    """12 EMT frames of 8 atoms as extxyz lines: frame i is lines 10 i .. 10 i + 9."""
    path = tmp_path / "emt.xyz"
    write(path, emt_frames(12), format="extxyz")
    return path.read_text().splitlines(keepends=True)


def _xyz_with(tmp_path, frame: int, **results) -> Path:
    """EMT frames where frame ``frame`` has its labels replaced by ``results`` (None = dropped)."""
    frames = emt_frames(4)
    atoms = frames[frame]
    labels = {k: v for k, v in {**atoms.calc.results, **results}.items() if v is not None}
    atoms.calc = SinglePointCalculator(atoms, **labels)
    path = tmp_path / "labels.xyz"
    write(path, frames, format="extxyz")
    return path


# --- 1. corrupt or truncated files -------------------------------------------------------

@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[:55], r"frame 5 \(line 51\): truncated, 3 of 8 atom lines"),  # cut mid-frame
    (lambda lines: lines[:23] + ["garbage here\n"] + lines[23:], r"frame 2 \(line 21\): .*'here'"),
    (lambda lines: lines[:22] + ["Cu 1.0 abc 0 0 0 0\n"] + lines[23:], r"frame 2 \(line 21\): .*'abc'"),
    (lambda lines: ["eight\n"] + lines[1:], r"frame 0 \(line 1\): expected an atom count, got 'eight'"),
    (lambda lines: [], r"^.*broken\.xyz: empty file, no frames$"),
])
def test_corrupt_extxyz_names_file_and_frame(tmp_path, edit, message):
    broken = tmp_path / "broken.xyz"
    broken.write_text("".join(edit(_xyz_lines(tmp_path))))
    prefix = "" if message.startswith("^") else r"broken\.xyz: cannot be read by ASE: "
    with pytest.raises(DatasetError, match=prefix + message):
        load_dataset(str(broken))


def test_truncated_traj_names_the_first_unreadable_frame(tmp_path):
    data = (SHARED / "oc20-traj" / "random1000100.traj").read_bytes()  # 126 frames
    broken = tmp_path / "broken.traj"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"broken\.traj: cannot be read by ASE: frame \d+ \(ASE: JSONDecodeError"):
        load_dataset(str(broken))


def test_truncated_json_names_the_first_broken_frame(tmp_path):
    text = json.dumps([_record(energy=-float(i)) for i in range(5)])
    path = tmp_path / "Mo_AIMD.json"
    path.write_text(text[: text.index('"energy": -3.0')])  # frames 0-2 intact, cut inside frame 3
    with pytest.raises(DatasetError, match=r"Mo_AIMD\.json: not valid JSON, broken at frame 3 .*truncated or corrupt"):
        read_snap_json(path)
    path.write_text(text.replace('"Elastic"}, {', '"Elastic"} garbage {', 1))  # frame 0 intact, then junk
    with pytest.raises(DatasetError, match=r"Mo_AIMD\.json: not valid JSON, broken at frame 1 "):
        read_snap_json(path)


def test_truncated_real_mlearn_json_is_named(tmp_path):
    data = (SHARED / "mlearn" / "Mo" / "test.json").read_bytes()
    path = tmp_path / "test.json"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"test\.json: not valid JSON, broken at frame \d+ "):
        read_mlearn_json(path)


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe\x00garbage", r"not valid JSON \(not UTF-8 text"),
    (b"", r"not valid JSON \(Expecting value"),
    (b'{"structure": {}}', r"expected a JSON list of frames, got dict"),
])
def test_json_that_is_not_a_frame_list(tmp_path, content, message):
    path = tmp_path / "X.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"X\.json: " + message):
        read_snap_json(path)


# --- 2. missing, non-finite or misshapen labels --------------------------------------------

def _without(key):
    rec = _record()
    del rec["outputs"][key]
    return rec


def _with_outputs(**outputs):
    rec = _record()
    rec["outputs"] = outputs["outputs"] if "outputs" in outputs else {**rec["outputs"], **outputs}
    return rec


@pytest.mark.parametrize(("frame", "message"), [
    (_without("energy"), r"field 'energy' is missing"),
    (_without("forces"), r"field 'forces' is missing"),
    (_record(energy=float("nan")), r"field 'energy' is not finite \(nan\)"),
    (_record(energy=float("inf")), r"field 'energy' is not finite \(inf\)"),
    (_with_outputs(energy="-10 eV"), r"field 'energy' is not numeric"),
    (_with_outputs(energy=[-10.0, -11.0]), r"field 'energy' has shape \(2,\), expected a number"),
    (_record(forces=((0, 0, 0), (0, float("nan"), 0))), r"field 'forces' contains NaN or inf"),
    (_record(forces=((0, 0, 0),)), r"field 'forces' has shape \(1, 3\), expected \(2, 3\)"),  # n_atoms - 1 rows
    (_record(forces=((0, 0), (0, 0))), r"field 'forces' has shape \(2, 2\), expected \(2, 3\)"),  # 2 columns
    (_record(forces=((0, 0, 0), (0, 0))), r"field 'forces' is not numeric"),  # ragged
    (_record(stress=(1, 2, float("nan"), 4, 5, 6)), r"field 'stress' contains NaN or inf"),
    (_record(stress=(1, 2, 3, 4, 5, float("-inf"))), r"field 'stress' contains NaN or inf"),
    (_record(stress=(1, 2, 3, 4, 5)), r"field 'stress' has shape \(5,\), expected \(6,\)"),
    (_with_outputs(outputs=None), r"field 'outputs' is NoneType, expected a dict"),
])
@pytest.mark.parametrize("reader", [read_snap_json, read_mlearn_json])
def test_bad_json_labels_name_file_frame_and_field(tmp_path, reader, frame, message):
    path = _json_file(tmp_path, frame)
    with pytest.raises(DatasetError, match=r"^Mo_Elastic\.json\[1\]: " + message):
        reader(path)


def test_bad_json_structure_names_frame(tmp_path):
    frame = _record()
    frame["structure"]["sites"][1]["xyz"] = [1.5, 1.5]
    with pytest.raises(DatasetError, match=r"Mo_Elastic\.json\[1\]: field 'structure' is malformed"):
        read_snap_json(_json_file(tmp_path, frame))
    frame["structure"]["sites"][1]["xyz"] = [1.5, float("nan"), 1.5]
    with pytest.raises(DatasetError, match=r"Mo_Elastic\.json\[1\]: field 'positions' contains NaN or inf"):
        read_snap_json(_json_file(tmp_path, frame))


@pytest.mark.parametrize(("results", "message"), [
    ({"energy": None}, r"field 'energy' is missing"),
    ({"forces": None}, r"field 'forces' is missing"),
    ({"energy": float("nan")}, r"field 'energy' is not finite \(nan\)"),
    ({"forces": np.full((8, 3), np.inf)}, r"field 'forces' contains NaN or inf"),
    ({"stress": np.array([0, 0, np.nan, 0, 0, 0])}, r"field 'stress' contains NaN or inf"),
])
def test_bad_extxyz_labels_name_file_frame_and_field(tmp_path, results, message):
    path = _xyz_with(tmp_path, 2, **results)
    with pytest.raises(DatasetError, match=r"^labels\.xyz\[2\]: " + message):
        read_ase_file(path)


def test_extxyz_forces_with_two_columns_are_refused(tmp_path):
    lines = _xyz_lines(tmp_path)
    lines[21] = lines[21].replace("forces:R:3", "forces:R:2")
    lines[22:30] = [line.rsplit(None, 1)[0] + "\n" for line in lines[22:30]]
    path = tmp_path / "two.xyz"
    path.write_text("".join(lines))
    with pytest.raises(DatasetError, match=r"^two\.xyz\[2\]: field 'forces' has shape \(8, 2\), expected \(8, 3\)"):
        read_ase_file(path)


# --- 3. stress conventions ----------------------------------------------------------------

KNOWN = r"known: vasp-kbar-xy-yz-zx, vasp-kbar-xy-zx-yz, ase"


def test_unknown_stress_convention_is_refused_by_the_converters(tmp_path):
    path = _json_file(tmp_path, _record())
    with pytest.raises(DatasetError, match=r"Mo_Elastic\.json: unknown stress convention 'vasp-gpa'; " + KNOWN):
        read_snap_json(path, stress="vasp-gpa")
    xyz = _xyz_with(tmp_path, 0)
    with pytest.raises(DatasetError, match=r"ASE files hold stress in the 'ase' convention, not 'vasp-kbar-xy-yz-zx'"):
        read_ase_file(xyz, stress="vasp-kbar-xy-yz-zx")


@pytest.mark.parametrize(("change", "message"), [
    ({"stress": "vasp-gpa"}, r"unknown stress convention 'vasp-gpa'; " + KNOWN),
    ({"stress": None}, r"no 'stress' convention"),
    ({"format": "cif"}, r"unknown format 'cif'; known: mlearn-json, snap-json, ase-traj, extxyz"),
    ({"split": "by-date"}, r"unknown split 'by-date'; known: files, random, groups"),
    ({"test_files": ["mlearn/Mo/other.json"]}, r"test_files \['mlearn/Mo/other.json'\] are not among its files"),
])
def test_catalog_entry_with_bad_settings_is_refused_before_reading(monkeypatch, change, message):
    entry = {k: v for k, v in {**catalog()["mlearn-Mo"], **change}.items() if v is not None}
    monkeypatch.setattr(registry_module, "catalog", lambda: {"mlearn-Mo": entry})
    monkeypatch.setattr(registry_module, "locate", lambda *a: pytest.fail("files read before the check"))
    with pytest.raises(DatasetError, match=r"catalog\.toml \[mlearn-Mo\]: " + message):
        load_dataset("mlearn-Mo")


def test_every_catalog_entry_names_a_known_stress_convention():
    for name, entry in catalog().items():
        check_entry(name, entry)
        assert entry["stress"] in STRESS_CONVENTIONS, name


# --- 4. impossible sizes and splits ----------------------------------------------------------

def test_impossible_training_sizes():
    split = plan_split([str(i) for i in range(10)], seed=0, val_fraction=0.2)  # 8 for training
    with pytest.raises(DatasetError, match="training size 50 is impossible: the pool has 8 frames"):
        split.train(resolve_size(50, len(split.order)))
    for size in (0, -3, -0.5, float("nan"), float("inf")):
        with pytest.raises(DatasetError, match=r"must be a positive count or a fraction"):
            resolve_size(size, 8)
    for n in (0, -1):
        with pytest.raises(DatasetError, match=f"training size {n} is impossible"):
            split.train(n)
    with pytest.raises(DatasetError, match=r"training size 1.5 is neither a fraction <= 1 nor a count"):
        resolve_size(parse_size("150%"), 8)
    assert resolve_size(parse_size("100%"), 8) == 8 and resolve_size(2.0, 8) == 2


@pytest.mark.parametrize(("groups", "kwargs", "message"), [
    ([], {}, r"at least 2 independent groups .* it has 0 frames in 0 group\(s\)"),
    (["a"] * 5, {}, r"at least 2 independent groups .* it has 5 frames in 1 group\(s\)"),
    ([f"g{i // 2}" for i in range(20)], {"val_size": 30},
     r"validation size 30 is impossible: the pool has 20 frames in 10 groups"),
    ([f"g{i // 2}" for i in range(20)], {"val_size": 20}, r"validation size 20 is impossible"),
    ([str(i) for i in range(10)], {"val_fraction": 1.0}, r"validation fraction 1.0 must be in \(0, 1\)"),
    ([str(i) for i in range(10)], {"val_fraction": 0}, r"validation fraction 0 must be in \(0, 1\)"),
    ([str(i) for i in range(10)], {"pool_size": 0}, r"training pool size 0 must be >= 1"),
])
def test_impossible_splits(groups, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        plan_split(groups, seed=0, **{"val_fraction": 0.2, **kwargs})


def _identity(atoms) -> str:
    """A structure's identity: species, positions and cell (rounded to 1e-6 Å)."""
    return hashlib.sha256(atoms.numbers.tobytes() + np.round(atoms.positions, 6).tobytes()
                          + np.round(atoms.cell.array, 6).tobytes()).hexdigest()


@pytest.fixture(scope="module", params=["mlearn-Mo", "snap-NbMoTaW"])
def real_dataset(request):
    return load_dataset(request.param)


@pytest.mark.parametrize("split_kwargs", [{"val_fraction": 0.1}, {"val_fraction": 0.1, "val_size": 3}])
def test_real_splits_never_overlap(real_dataset, split_kwargs):
    pool, test = real_dataset.pool, real_dataset.test
    test_ids = {_identity(a) for a in test}
    assert not test_ids & {_identity(a) for a in pool}  # the fixed test set is outside the pool
    leak = [a.info["leak_group"] for a in pool]
    for seed in range(5):
        split = plan_split(leak, seed=seed, **split_kwargs)
        val, train = set(split.val), set(split.order)
        assert not val & train and len(val | train) == len(pool)
        assert not {leak[i] for i in val} & {leak[i] for i in train}
        assert not {_identity(pool[i]) for i in val} & {_identity(pool[i]) for i in train}
        assert set(split.train(len(split.order) // 2)) <= train


# --- 5. results directories of another schema version ----------------------------------------

def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories)."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _old_store(root: Path, marker_version: int | None = 0, record_version: int = 0) -> Path:
    (root / "records").mkdir(parents=True)
    if marker_version is not None:
        (root / "store.json").write_text(json.dumps({"schema_version": marker_version}))
    (root / "records" / "abc.json").write_text(json.dumps(minimal_record(version=record_version)))
    return root


def test_store_of_an_older_schema_is_refused_and_left_untouched(tmp_path):
    root = _old_store(tmp_path / "old")
    before = _snapshot(root)
    for use in (Store(root).prepare, Store(root).all):  # bench run, and bench report / compare
        with pytest.raises(StoreError, match=rf"old/store\.json: results of schema version 0, .* version "
                                             rf"{SCHEMA_VERSION}; nothing was changed; write to a new --out directory"):
            use()
    assert _snapshot(root) == before  # no predictions/, logs/ or jobs/ created, nothing rewritten


def test_store_without_marker_but_old_records_is_refused(tmp_path):
    root = _old_store(tmp_path / "old", marker_version=None)
    before = _snapshot(root)
    with pytest.raises(StoreError, match=r"records/abc\.json: record of schema version 0, .*new --out directory"):
        Store(root).prepare()
    assert _snapshot(root) == before  # store.json was not written over the old records


def test_old_record_in_a_current_store_is_refused_and_kept(tmp_path):
    root = _old_store(tmp_path / "mixed", marker_version=SCHEMA_VERSION)
    (root / "records" / "abc.json").write_text(json.dumps({"schema_version": 0, "run_id": "abc", "status": "ok"}))
    before = _snapshot(root)
    store = Store(root)
    for read in (lambda: store.get("abc"), store.all):  # the runner calls get() before put()
        with pytest.raises(StoreError, match=r"records/abc\.json: record of schema version 0"):
            read()
    assert _snapshot(root) == before


@pytest.mark.parametrize(("name", "content", "message"), [
    ("records/abc.json", '{"schema_version": 1, "run_id": "ab', r"records/abc\.json: unreadable record \("),
    ("records/abc.json", "[1, 2]", r"records/abc\.json: unreadable record \(a JSON list"),
    ("store.json", '{"schema_ver', r"store\.json: unreadable store marker \("),
])
def test_truncated_store_files_are_named(tmp_path, name, content, message):
    root = _old_store(tmp_path / "cut", marker_version=SCHEMA_VERSION, record_version=SCHEMA_VERSION)
    Store(root).prepare()
    (root / name).write_text(content)
    before = _snapshot(root)
    store = Store(root)
    with pytest.raises(StoreError, match=message):
        store.prepare() if name == "store.json" else store.get("abc")
    if name != "store.json":
        with pytest.raises(StoreError, match=message):
            store.all()
    assert _snapshot(root) == before


def test_current_store_reopens_and_keeps_its_records(tmp_path):
    root = _old_store(tmp_path / "ok", marker_version=None, record_version=SCHEMA_VERSION)
    store = Store(root).prepare()  # records of this version and no marker: the marker is added
    assert json.loads((root / "store.json").read_text()) == {"schema_version": SCHEMA_VERSION}
    assert store.get("abc").status == "ok" and len(Store(root).prepare().all()) == 1
    shutil.rmtree(root / "logs")
    assert (Store(root).prepare().root / "logs").is_dir()


def test_cli_refuses_an_old_results_directory_without_a_traceback(tmp_path, capsys):
    from bench.cli import main

    (tmp_path / "store.json").write_text('{"schema_version": 0}')
    (tmp_path / "records").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "schema version 0" in err and "Traceback" not in err
