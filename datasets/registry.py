"""Registry of named datasets (``catalog.toml``) and where their files are found.

Lookup order for each file: a user path (``--dataset file.xyz``), ``$BENCH_DATA_MIRROR``,
``../shared/datasets`` beside the project, the download cache, then a download from the
canonical repository at the pinned commit. Every file is checked against its sha256.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from ase import Atoms

from bench import PROJECT_ROOT
from bench.core.util import did_you_mean
from datasets.converters import READERS, read_labelled, stress_convention
from datasets.errors import DatasetError
from datasets.keys import LabelKeys
from datasets.labels import has_stress

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"


@cache
def catalog() -> dict[str, dict]:
    """The parsed catalog, keyed by dataset name."""
    with CATALOG_PATH.open("rb") as fh:
        return tomllib.load(fh)


DATASETS = tuple(catalog())


def mirror_dirs() -> list[Path]:
    """Local mirrors in lookup order."""
    dirs = []
    if os.environ.get("BENCH_DATA_MIRROR"):
        dirs.append(Path(os.environ["BENCH_DATA_MIRROR"]))
    dirs.append(PROJECT_ROOT.parent / "shared" / "datasets")
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ftbench" / "datasets"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as fh:
            fh.write(resp.read())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"cannot download {url} ({exc}); put the file under $BENCH_DATA_MIRROR "
            f"or ../shared/datasets at the catalog's 'mirror' path instead"
        ) from exc
    tmp.replace(dest)


def locate(name: str, entry: dict) -> Path:
    """Find (or download) every file of a catalog entry; verify sha256; return the mirror root."""
    for root in mirror_dirs():
        if all((root / f["mirror"]).is_file() for f in entry["files"]):
            break
    else:
        root = cache_dir()
        for f in entry["files"]:
            if not (root / f["mirror"]).is_file():
                url = RAW_URL.format(repo=entry["repo"], commit=entry["commit"], path=f["upstream"])
                _download(url, root / f["mirror"])
    for f in entry["files"]:
        got = sha256_of(root / f["mirror"])
        if got != f["sha256"]:
            raise DatasetError(
                f"{root / f['mirror']}: sha256 {got} does not match the catalog's {f['sha256']} "
                f"for dataset {name!r}; the file is corrupt or a different version"
            )
    return root


SPLITS = ("files", "random", "groups")


def check_entry(name: str, entry: dict) -> None:
    """Refuse a catalog entry the converters cannot read correctly, before any file is read:
    unknown format, stress convention or split, or test files that are not among its files."""
    where = f"{CATALOG_PATH.name} [{name}]"
    for key, known in (("format", tuple(READERS)), ("split", SPLITS)):
        if entry.get(key) not in known:
            raise DatasetError(f"{where}: unknown {key} {entry.get(key)!r}; known: {', '.join(known)}")
    if "stress" not in entry:
        raise DatasetError(f"{where}: no 'stress' convention; the converters need one of its source's units")
    stress_convention(entry["stress"], where)
    mirrors = {f["mirror"] for f in entry.get("files", [])}
    if not mirrors:
        raise DatasetError(f"{where}: lists no files")
    test_files = set(entry.get("test_files", []))
    if entry["split"] == "files" and not test_files:
        raise DatasetError(f"{where}: split 'files' needs 'test_files'")
    if test_files - mirrors:
        raise DatasetError(f"{where}: test_files {sorted(test_files - mirrors)} are not among its files")


@dataclass
class Dataset:
    """Converted frames, split into a training pool and a fixed test set.

    ``labels``: the keys a user's file was read with (``datasets.keys``; None for a catalog
    dataset, read by its own converter). ``test_sha256``: a user's own test file. ``test_cap``:
    the test set was capped to at most this many frames of ``n_test_full`` (``--test-size``)."""

    name: str
    sha256: str
    pool: list[Atoms]
    test: list[Atoms]
    info: dict = field(default_factory=dict)
    labels: LabelKeys | None = None
    test_sha256: str | None = None
    test_cap: int | None = None
    n_test_full: int = 0

    @property
    def elements(self) -> list[str]:
        return sorted({s for a in self.pool + self.test for s in a.get_chemical_symbols()})

    @property
    def has_stress(self) -> bool:
        return has_stress(self.pool + self.test)

    @property
    def fully_periodic(self) -> bool:
        """Every frame is periodic along all three axes (as every catalog dataset is)."""
        return all(a.pbc.all() for a in self.pool + self.test)

    @property
    def variant(self) -> str:
        """The data's identity as written for workers: the file's sha256 prefix, plus a digest
        of the choices that change the frames (keys, test file, test cap) where there are any."""
        choices = {"labels": self.labels.given() if self.labels else {}, "test_sha256": self.test_sha256,
                   "test_cap": self.test_cap}
        if not any(choices.values()):
            return self.sha256[:12]
        return f"{self.sha256[:12]}-{hashlib.sha256(repr(sorted(choices.items())).encode()).hexdigest()[:8]}"


TEST_SEED = 20250221  # the test set never depends on run seeds


def _split_test(frames: list[Atoms], how: str, fraction: float) -> tuple[list[Atoms], list[Atoms]]:
    """Fixed (seed-independent) test split: by frame or by leak group."""
    keys = [a.info["leak_group"] for a in frames] if how == "groups" else list(range(len(frames)))
    unique = sorted(set(keys), key=str)
    rng = np.random.default_rng(TEST_SEED)
    n_test = max(1, round(fraction * len(unique)))
    if n_test >= len(unique):
        raise DatasetError(f"cannot hold out {n_test} of {len(unique)} groups as a test set")
    test_keys = set(rng.permutation(len(unique))[:n_test].tolist())
    test_keys = {unique[i] for i in test_keys}
    pool = [a for a, k in zip(frames, keys, strict=True) if k not in test_keys]
    test = [a for a, k in zip(frames, keys, strict=True) if k in test_keys]
    return pool, test


def cap_test(test: list[Atoms], size: int) -> list[Atoms]:
    """At most ``size`` frames of a test set, whole leak groups in a fixed order (the same for
    every training size, seed and sweep), in their original order; the set itself if smaller."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DatasetError(f"test size {size!r} must be a count >= 1")
    if len(test) <= size:
        return test
    members: dict[str, list[int]] = {}
    for i, a in enumerate(test):
        members.setdefault(a.info["leak_group"], []).append(i)
    groups = sorted(members, key=str)
    kept: list[int] = []
    for g in (groups[i] for i in np.random.default_rng(TEST_SEED).permutation(len(groups))):
        if len(kept) + len(members[g]) <= size:
            kept += members[g]
        if len(kept) == size:
            break
    if not kept:
        raise DatasetError(f"test size {size} is impossible: the smallest leak group of the test set has "
                           f"{min(len(m) for m in members.values())} frames, and groups are kept whole")
    return [test[i] for i in sorted(kept)]


def _user_file(path: Path, keys: LabelKeys | None, test_fraction: float,
               test_file: str | None) -> tuple[list[Atoms], list[Atoms], LabelKeys, str | None]:
    """Pool, test set, the keys used, and the test file's sha256 of a user's own file."""
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    frames, used = read_labelled(path, keys=keys)
    if test_file is None:
        how = "groups" if len({a.info["leak_group"] for a in frames}) > 1 else "random"
        return *_split_test(frames, how, test_fraction), used, None
    test_path = Path(test_file)
    if not test_path.is_file():
        raise DatasetError(f"{test_path}: test file not found")
    test, test_used = read_labelled(test_path, keys=used)
    if test_used != used:
        raise DatasetError(f"{test_path}: its labels are under other keys ({test_used.describe()}) than "
                           f"{path.name}'s ({used.describe()}); name them with --energy-key and the like")
    return frames, test, used, sha256_of(test_path)


def load_dataset(name_or_path: str, *, test_fraction: float = 0.2, keys: LabelKeys | None = None,
                 test_size: int | None = None, test_file: str | None = None) -> Dataset:
    """Load a registered dataset by name, or any labelled extxyz/traj file by path.

    A user's file is read with ``keys`` (default: auto, ``datasets.keys``) and split into a
    pool and a test set (``test_fraction`` of its leak groups), or is all pool when
    ``test_file`` holds the test set. A catalog dataset keeps its canonical split. Either
    test set is capped to ``test_size`` frames where given (``cap_test``)."""
    path = Path(name_or_path)
    if name_or_path not in catalog() and path.suffix in {".xyz", ".extxyz", ".traj"}:
        pool, test, used, test_sha = _user_file(path, keys, test_fraction, test_file)
        dataset = Dataset(path.stem, sha256_of(path), pool, test, {"source": str(path.resolve())},
                          labels=used, test_sha256=test_sha)
    elif name_or_path not in catalog():
        raise DatasetError(
            f"unknown dataset {name_or_path!r}; registered: {', '.join(DATASETS)}, "
            f"or a path to an .xyz/.extxyz/.traj file.{did_you_mean(name_or_path, DATASETS)}"
        )
    else:
        given = {**(keys.given() if keys else {}), **({"test_file": test_file} if test_file else {})}
        if given:
            raise DatasetError(f"dataset {name_or_path!r} is read by its catalog converter with its canonical "
                               f"test set; {sorted(given)} apply to your own files only (--test-size caps it)")
        dataset = _catalog_dataset(name_or_path, test_fraction)
    dataset.n_test_full = len(dataset.test)
    if test_size is not None:
        capped = cap_test(dataset.test, test_size)
        if len(capped) < len(dataset.test):
            dataset.test, dataset.test_cap = capped, test_size
    return dataset


def _catalog_dataset(name: str, test_fraction: float) -> Dataset:
    entry = catalog()[name]
    check_entry(name, entry)
    root = locate(name, entry)
    reader = READERS[entry["format"]]
    test_files = set(entry.get("test_files", []))
    pool, test = [], []
    for f in entry["files"]:
        frames = reader(root / f["mirror"], stress=entry["stress"])
        (test if f["mirror"] in test_files else pool).extend(frames)
    if entry["split"] in {"random", "groups"}:
        pool, test = _split_test(pool, entry["split"], entry.get("test_fraction", test_fraction))
    combined = hashlib.sha256("".join(sorted(f["sha256"] for f in entry["files"])).encode())
    info = {k: entry[k] for k in ("description", "repo", "commit", "licence", "citation")}
    return Dataset(name, combined.hexdigest(), pool, test, info | {"mirror": str(root)})
