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
from datasets.converters import READERS, stress_convention
from datasets.errors import DatasetError
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
    """Converted frames, split into a training pool and a fixed test set."""

    name: str
    sha256: str
    pool: list[Atoms]
    test: list[Atoms]
    info: dict = field(default_factory=dict)

    @property
    def elements(self) -> list[str]:
        return sorted({s for a in self.pool + self.test for s in a.get_chemical_symbols()})

    @property
    def has_stress(self) -> bool:
        return has_stress(self.pool + self.test)


def _split_test(frames: list[Atoms], how: str, fraction: float) -> tuple[list[Atoms], list[Atoms]]:
    """Fixed (seed-independent) test split: by frame or by leak group."""
    keys = [a.info["leak_group"] for a in frames] if how == "groups" else list(range(len(frames)))
    unique = sorted(set(keys), key=str)
    rng = np.random.default_rng(20250221)  # fixed: the test set never depends on run seeds
    n_test = max(1, round(fraction * len(unique)))
    if n_test >= len(unique):
        raise DatasetError(f"cannot hold out {n_test} of {len(unique)} groups as a test set")
    test_keys = set(rng.permutation(len(unique))[:n_test].tolist())
    test_keys = {unique[i] for i in test_keys}
    pool = [a for a, k in zip(frames, keys, strict=True) if k not in test_keys]
    test = [a for a, k in zip(frames, keys, strict=True) if k in test_keys]
    return pool, test


def load_dataset(name_or_path: str, *, test_fraction: float = 0.2) -> Dataset:
    """Load a registered dataset by name, or any labelled extxyz/traj file by path."""
    path = Path(name_or_path)
    if name_or_path not in catalog() and path.suffix in {".xyz", ".extxyz", ".traj"}:
        if not path.is_file():
            raise DatasetError(f"{path}: dataset file not found")
        frames = READERS["extxyz"](path)
        how = "groups" if len({a.info["leak_group"] for a in frames}) > 1 else "random"
        pool, test = _split_test(frames, how, test_fraction)
        return Dataset(path.stem, sha256_of(path), pool, test, {"source": str(path.resolve())})
    if name_or_path not in catalog():
        raise DatasetError(
            f"unknown dataset {name_or_path!r}; registered: {', '.join(DATASETS)}, "
            f"or a path to an .xyz/.extxyz/.traj file.{did_you_mean(name_or_path, DATASETS)}"
        )
    entry = catalog()[name_or_path]
    check_entry(name_or_path, entry)
    root = locate(name_or_path, entry)
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
    return Dataset(name_or_path, combined.hexdigest(), pool, test, info | {"mirror": str(root)})
