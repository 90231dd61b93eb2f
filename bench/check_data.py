"""``python -m bench check-data FILE|NAME``: what ftbench will read, before any run.

A user's file is read exactly as a sweep reads it (``datasets.load_dataset`` with the same
keys, stress unit and test options), then described: frames and atoms, elements and which
families' checkpoints cover them (``bench.registry``: static element lists, no torch), the
keys found and used, groups and the split they imply, each frame's periodicity and what
every family's cutoff makes of it (``datasets.periodicity``), the stress convention, label
statistics (the force RMS is the error of predicting zero forces: the baseline a trained
model must beat), obvious problems, and a time per epoch per family scaled from timing
records of earlier sweeps. A file that cannot be read is reported with the reader's named
error (file, frame, field) and exit status 2.

Example:
    >>> print("\\n".join(check_data("my_slabs.xyz", keys=LabelKeys())))
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.data import chemical_symbols

from bench import PROJECT_ROOT
from bench.core.metrics import EV_PER_A3_TO_GPA
from bench.registry import MODELS
from bench.store import Store, StoreError
from datasets import load_dataset, periodicity
from datasets.keys import STRESS_UNITS
from datasets.labels import has_stress, stress_counts
from datasets.registry import catalog

if TYPE_CHECKING:
    from ase import Atoms

    from bench.core.contract import Record
    from datasets.keys import LabelKeys
    from datasets.registry import Dataset

DEFAULT_RESULTS = PROJECT_ROOT / "reports" / "baselines" / "regression"
NET_FORCE_TOL = 0.1  # eV/Å: |Σ F| of a periodic cell above this is flagged (mlearn, snap, OC20: exactly 0)
SHOWN = 5  # frames named per problem


def _frames(ds: Dataset) -> list[Atoms]:
    return ds.pool + ds.test


def _range(x: np.ndarray, digits: int = 3) -> str:
    return f"{x.min():.{digits}f} to {x.max():.{digits}f} (mean {x.mean():.{digits}f})"


def _names(frames: list[Atoms]) -> str:
    shown = ", ".join(periodicity.where(a) for a in frames[:SHOWN])
    return shown + (f" and {len(frames) - SHOWN} more" if len(frames) > SHOWN else "")


def _overview(ds: Dataset, source: str) -> list[str]:
    frames = _frames(ds)
    sizes = np.array([len(a) for a in frames])
    symbols = Counter(s for a in frames for s in set(a.get_chemical_symbols()))
    dropped = ds.n_test_full - len(ds.test)
    unused = (f"; the {dropped} test frames beyond --test-size {ds.test_cap} are not used, and what follows "
              f"describes the {len(frames)} used") if dropped else ""
    lines = [f"{source}: {len(ds.pool) + ds.n_test_full} frames{' with the test file' if ds.test_sha256 else ''}, "
             f"sha256 {ds.sha256[:16]}…{unused}",
             f"atoms per frame: {sizes.min()} to {sizes.max()} (median {np.median(sizes):g}); {sizes.sum()} atoms",
             "elements (frames containing): " + ", ".join(f"{s} {n}" for s, n in sorted(symbols.items()))]
    numbers = {int(z) for a in frames for z in a.numbers}
    for model in MODELS.values():
        info = model.checkpoint_info()
        missing = sorted(numbers - info.numbers)
        verdict = "covers every element" if not missing else "lacks " + ", ".join(chemical_symbols[z] for z in missing)
        lines.append(f"  {model.key} ({model.default_checkpoint}): {verdict}")
    return lines


def _keys(ds: Dataset, raw_keys: dict[str, set[str]]) -> list[str]:
    if ds.labels is None:
        entry = catalog()[ds.name]
        return [f"labels: the catalog's {entry['format']} converter; stress convention {entry['stress']!r} "
                "(datasets/converters.py), converted to eV/Å³ with ASE's sign"]
    found = "; ".join(f"{where}: {', '.join(sorted(keys)) or '-'}" for where, keys in raw_keys.items())
    return [f"keys found: {found}", f"keys used: {ds.labels.describe()}",
            f"stress convention: {STRESS_UNITS[ds.labels.stress_unit][1]} (--stress-unit {ds.labels.stress_unit}); "
            "stored and compared as eV/Å³ with ASE's sign"]


def _split(ds: Dataset) -> list[str]:
    groups = Counter(a.info["group"] for a in _frames(ds))
    leak = {a.info["leak_group"] for a in _frames(ds)}
    shown = ", ".join(f"{g} {n}" for g, n in groups.most_common(20))
    test_groups = Counter(a.info["group"] for a in ds.test)
    how = ("the user's test file" if ds.test_sha256 else "the catalog's canonical split" if ds.labels is None
           else "20 % of the leak groups, fixed seed")
    lines = [f"groups ({len(groups)}; per-group errors in reports): {shown}",
             f"leak groups (kept on one side of every split): {len(leak)}",
             f"split: {len(ds.pool)} pool / {len(ds.test)} test frames ({how}); test groups: "
             + ", ".join(f"{g} {n}" for g, n in test_groups.most_common(20))]
    if ds.test_cap:
        lines.append(f"test set capped to {len(ds.test)} of {ds.n_test_full} frames (--test-size {ds.test_cap}); "
                     "published baselines, where the catalog has them, were measured on the full test set")
    return lines


def _periodicity(ds: Dataset) -> list[str]:
    frames = _frames(ds)
    patterns = Counter("".join("T" if p else "F" for p in a.pbc) for a in frames)
    lines = ["periodicity (pbc a b c): " + ", ".join(f"{p} {n}" for p, n in sorted(patterns.items(), reverse=True))]
    open_frames = [a for a in frames if not a.pbc.all()]
    if not open_frames:
        return lines
    gaps = [g for a in open_frames for g in periodicity.gaps(a).values() if g is not None]
    if gaps:
        lines.append(f"  smallest gap between periodic images along an open axis: {min(gaps):.2f} Å")
    lines.append("  per family: 'made periodic' (every gap exceeds its cutoff: pbc=True has the same graph), 'boxed' "
                 f"(no cell: one with cutoff + {periodicity.VACUUM_MARGIN:g} Å of vacuum is added) or 'refused' "
                 "(a gap within the cutoff); their stress is neither trained on nor scored (not a bulk property)")
    for model in MODELS.values():
        cutoff = model.checkpoint_info().cutoff
        verdicts = [periodicity.verdict(a, cutoff) for a in open_frames]
        actions = Counter(v.action for v in verdicts)
        text = ", ".join(f"{action} {n}" for action, n in sorted(actions.items()))
        refused = [a for a, v in zip(open_frames, verdicts, strict=True) if v.action == "refused"]
        if refused:
            first = verdicts[open_frames.index(refused[0])]
            text += f"; refused: {_names(refused)} ({first.reason})"
        lines.append(f"  {model.key} (cutoff {cutoff:g} Å): {text}")
    return lines


def _statistics(ds: Dataset) -> list[str]:
    lines = []
    for name, frames in (("all", _frames(ds)), ("test", ds.test)):
        e = np.array([a.calc.results["energy"] / len(a) for a in frames])
        f = np.concatenate([a.calc.results["forces"] for a in frames])
        rms = float(np.sqrt(np.mean(f**2)))
        lines.append(f"{name} frames: energy per atom {_range(e)} eV; force RMS {1000 * rms:,.0f} meV/Å "
                     f"(the error of predicting zero forces), max |F| {np.abs(f).max():.2f} eV/Å")
    counted = [a for a in _frames(ds) if stress_counts(a)]
    if counted and has_stress(_frames(ds)):
        s = EV_PER_A3_TO_GPA * np.array([a.calc.results["stress"] for a in counted])
        lines.append(f"stress (GPa, ASE sign) of {len(counted)} counted frames: xx/yy/zz "
                     f"{_range(s[:, :3].ravel(), 2)}, shear {_range(s[:, 3:].ravel(), 2)}")
    else:
        with_label = sum("stress" in a.calc.results for a in _frames(ds))
        lines.append(f"stress: not trained or scored ({with_label} of {len(_frames(ds))} frames have a label; it "
                     "counts only when every fully periodic frame has one)")
    return lines


def _problems(ds: Dataset) -> list[str]:
    frames = _frames(ds)
    seen: dict[bytes, Atoms] = {}
    duplicates = []
    for a in frames:
        key = b"".join(np.round(x, 6).tobytes() for x in (a.numbers.astype(float), a.positions, a.cell[:]))
        if key in seen:
            duplicates.append(a)
        seen.setdefault(key, a)
    drifting = [a for a in frames if a.pbc.all() and np.linalg.norm(a.calc.results["forces"].sum(0)) > NET_FORCE_TOL]
    out = []
    if duplicates:
        out.append(f"{len(duplicates)} duplicate frames (same atoms, positions and cell as an earlier one): "
                   f"{_names(duplicates)}")
    if drifting:
        out.append(f"{len(drifting)} periodic frames whose forces do not sum to ~0 (|Σ F| > {NET_FORCE_TOL} eV/Å): "
                   f"{_names(drifting)}")
    return out


def _records(results: list[Path]) -> tuple[list[Record], list[str]]:
    records, notes = [], []
    for root in results:
        try:
            records += Store(root).all()
        except StoreError as exc:
            notes.append(f"timing records: {exc}")
    return records, notes


def _epoch_estimates(ds: Dataset, results: list[Path]) -> list[str]:
    """Seconds per epoch over the whole pool per family, from training records' step time per
    structure scaled by atoms (their test set's atoms per structure stand for their training
    structures'); full fine-tuning where recorded (frozen blocks only make steps cheaper)."""
    records, notes = _records(results)
    pool_atoms = sum(len(a) for a in ds.pool)
    lines = [f"time per epoch over the whole pool ({len(ds.pool)} frames, {pool_atoms} atoms; a training subset "
             f"of n frames takes n/{len(ds.pool)} of it), from {', '.join(str(r) for r in results) or 'no records'}:"]
    for model in MODELS:
        trained = [r for r in records if r.ok and r.spec.model == model and r.spec.kind == "train" and r.spec.trains
                   and r.timing and r.timing.step_s_per_structure and r.metrics and r.metrics.n_structures]
        full = [r for r in trained if r.spec.is_full_finetune] or trained
        if not full:
            lines.append(f"  {model}: no timing record")
            continue
        per_atom = np.median([r.timing.step_s_per_structure * r.metrics.n_structures / r.metrics.n_atoms
                              for r in full])
        devices = ", ".join(sorted({r.runtime.device for r in full}))
        epoch_s = per_atom * pool_atoms
        shown = f"{epoch_s:,.0f}" if epoch_s >= 10 else f"{epoch_s:.2g}"
        lines.append(f"  {model}: ~{shown} s per epoch ({1000 * per_atom:.1f} ms per atom per "
                     f"step, median of {len(full)} {'full fine-tuning' if full is not trained else 'training'} "
                     f"records on {devices})")
    return lines + notes


def check_data(source: str, *, keys: LabelKeys, test_size: int | None = None, test_file: str | None = None,
               results: list[Path] | None = None) -> list[str]:
    """The report's lines; raises ``DatasetError`` (named file, frame, field) where the
    data cannot be read as a sweep would read it."""
    ds = load_dataset(source, keys=keys, test_size=test_size, test_file=test_file)
    raw = _raw_keys(source) if ds.labels is not None else {}
    results = results if results is not None else [DEFAULT_RESULTS] if DEFAULT_RESULTS.is_dir() else []
    problems = _problems(ds)
    sections = [_overview(ds, source), _keys(ds, raw), _split(ds), _periodicity(ds), _statistics(ds),
                ["problems: " + ("none found" if not problems else f"{len(problems)}")] + [f"  {p}" for p in problems],
                _epoch_estimates(ds, results)]
    return [line for section in sections for line in [*section, ""]][:-1]


def _raw_keys(path: str) -> dict[str, set[str]]:
    """The label keys a user's file holds, as ASE reads it (to show what could be used)."""
    from ase.io import iread

    found: dict[str, set[str]] = {"info": set(), "arrays": set(), "calculator": set()}
    for atoms in iread(path, index=":"):
        found["info"] |= set(atoms.info)
        found["arrays"] |= set(atoms.arrays) - {"numbers", "positions"}
        found["calculator"] |= set(atoms.calc.results) if atoms.calc is not None else set()
    return found
