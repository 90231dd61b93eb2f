"""Headline numbers of a sweep, computed from stored records only (pure functions, no plots).

Per dataset × model (family + checkpoint) × strategy, aggregated over seeds, against a
reference: scratch training of the same model at its largest stored training size.

    >>> h = headline(Store(path).all(), tolerance=0.05)   # typed records; or **preset["headline"]
    >>> h.rows[0].within["forces_rmse_mev_per_ang"]         # smallest Point within 5 %

Claims against the reference are made only when it is valid (``bench.validity``: whole
pool, converged, better than zero-shot-e0); otherwise each row carries the reason instead.
Definitions (every threshold is an argument of ``headline``):

* *within tolerance*: mean + std (over seeds) of the test RMSE <= (1 + tolerance) × the
  reference's mean test RMSE; the smallest training size that first satisfies it is reported.
* *error at a pool fraction*: mean test RMSE at that fraction of the training pool divided
  by the reference's; the run at exactly that size if stored, else log-log interpolation
  between the neighbouring sizes (marked), None outside the measured range.
* *chemical accuracy*: energy error per structure <= 1 kcal/mol = 43.36 meV, taking the
  error per structure as test energy RMSE per atom × mean atoms per test structure.
* *time to accuracy*: training wall time (curve ``elapsed_s``) until the validation force
  RMSE first reaches the target: ``time_target_mev_per_ang`` if given, else (1 + tolerance)
  × the reference's final validation force RMSE (the epoch whose weights were kept), at the
  curve's largest size; epoch 0 is the starting model, so a foundation already there takes 0 s.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from bench import validity
from bench.core.contract import Record, TrainSpec
from bench.core.strategies import rank as strategy_rank

CHEMICAL_ACCURACY_MEV = 43.36  # 1 kcal/mol in meV
FORCES, ENERGY = "forces_rmse_mev_per_ang", "energy_rmse_mev_per_atom"


class CurveKey(NamedTuple):
    dataset: str
    family: str
    model: str
    checkpoint: str
    strategy: str
    setting: str  # e0 policy + training settings (+ LoRA / replay settings where set); "" untrained
    device: str = "cpu"  # the runtime's device kind: runs on another device are another curve

    @property
    def model_key(self) -> tuple[str, str, str]:
        """(dataset, model, checkpoint); a run on a GPU names its device after the checkpoint."""
        return self.dataset, self.model, _on(self.checkpoint, self.device)


def _on(checkpoint: str, device: str) -> str:
    return checkpoint if device == "cpu" else f"{checkpoint} on {device}"


def model_key(record: Record) -> tuple[str, str, str]:
    spec = record.spec
    return spec.dataset, spec.model, _on(spec.checkpoint, record.runtime.device)


def curve_key(record: Record) -> CurveKey:
    spec = record.spec
    extra = {k: v.to_dict() for k, v in (("lora", spec.lora), ("replay", spec.replay)) if v is not None}
    if spec.train_config and spec.train_config.lr_factors:
        extra["lr_factors"] = spec.train_config.lr_factors
    setting = "" if not spec.trains else json.dumps(
        [spec.e0_policy, spec.train_config.to_dict(), *([extra] if extra else [])], sort_keys=True)
    return CurveKey(spec.dataset, spec.family, spec.model, spec.checkpoint, spec.strategy, setting,
                    record.runtime.device)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values) -> Stat | None:
        vals = [float(v) for v in values if v is not None and not math.isnan(v)]
        return cls(float(np.mean(vals)), float(np.std(vals)), len(vals)) if vals else None


@dataclass
class Point:
    """One training size of one curve: its seeds' records."""

    size: int
    records: list[Record]

    def stat(self, metric: str) -> Stat | None:
        return Stat.of(r.metrics.value(metric) for r in self.records)

    def mean(self, metric: str) -> float | None:
        s = self.stat(metric)
        return s.mean if s else None

    def timing(self, name: str) -> Stat | None:
        return Stat.of(r.timing.value(name) if r.timing else None for r in self.records)

    @property
    def fraction(self) -> float | None:
        """Fraction of the training pool (None for zero-shot)."""
        s = Stat.of(r.spec.train_fraction for r in self.records)
        return s.mean if s and self.size else None

    @property
    def atoms_per_structure(self) -> float:
        m = self.records[0].metrics
        return m.n_atoms / m.n_structures


def curves(records: list[Record]) -> dict[CurveKey, list[Point]]:
    """``ok`` training records (train specs of role ``curve``: not timing or surrogate jobs,
    learning-rate candidates or budget checks) grouped into curves of seed-aggregated points,
    sorted by size."""
    by: dict[CurveKey, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.ok and r.metrics and isinstance(r.spec, TrainSpec) and r.spec.role == "curve":
            by[curve_key(r)][r.spec.train_size].append(r)
    return {k: [Point(n, recs) for n, recs in sorted(v.items())] for k, v in by.items()}


def energy_per_structure_mev(point: Point) -> float | None:
    """Test energy RMSE per atom × mean atoms per test structure (meV per structure)."""
    e = point.mean(ENERGY)
    return None if e is None else e * point.atoms_per_structure


def smallest_within(points: list[Point], reference: Point, metric: str, tolerance: float = 0.10) -> Point | None:
    """Smallest size whose mean + std error is <= (1 + tolerance) × the reference's, or None."""
    target = (1 + tolerance) * reference.mean(metric)
    return next((p for p in points if (u := validity.upper(p, metric)) is not None and u <= target), None)


def smallest_chemically_accurate(points: list[Point], threshold_mev: float = CHEMICAL_ACCURACY_MEV) -> Point | None:
    return next((p for p in points if (e := energy_per_structure_mev(p)) is not None and e <= threshold_mev),
                None)


@dataclass(frozen=True)
class AtFraction:
    fraction: float
    value: float  # mean test RMSE at that fraction
    ratio: float  # value / reference value
    interpolated: bool


def error_at_fraction(points: list[Point], reference: Point, metric: str, fraction: float) -> AtFraction | None:
    """Error at ``fraction`` of the pool relative to the reference (zero-shot: its one value)."""
    ref = reference.mean(metric)
    if len(points) == 1 and points[0].size == 0:
        v = points[0].mean(metric)
        return AtFraction(fraction, v, v / ref, False)
    pts = [p for p in points if p.fraction and p.mean(metric)]
    if not pts:
        return None
    pool = pts[-1].size / pts[-1].fraction
    n = max(1, round(fraction * pool))  # the count `--sizes` resolves this fraction to
    for p in pts:
        if p.size == n:
            return AtFraction(fraction, p.mean(metric), p.mean(metric) / ref, False)
    for lo, hi in itertools.pairwise(pts):
        if lo.fraction < fraction < hi.fraction:
            t = math.log(fraction / lo.fraction) / math.log(hi.fraction / lo.fraction)
            v = math.exp((1 - t) * math.log(lo.mean(metric)) + t * math.log(hi.mean(metric)))
            return AtFraction(fraction, v, v / ref, True)
    return None


def final_val_forces(record: Record) -> float | None:
    """Validation force RMSE of the epoch whose weights were kept (best epoch, else last)."""
    curve = record.curve or ()
    best = record.timing.best_epoch if record.timing else None
    row = next((r for r in curve if r.epoch == best), curve[-1] if curve else None)
    return row.val_forces_rmse_mev_per_ang if row else None


def time_to_val_forces(record: Record, target: float) -> float | None:
    """Training wall time until the validation force RMSE first reaches ``target``."""
    return next((r.elapsed_s for r in record.curve or ()
                 if r.val_forces_rmse_mev_per_ang is not None and r.val_forces_rmse_mev_per_ang <= target), None)


@dataclass(frozen=True)
class TimeToTarget:
    target_mev_per_ang: float
    seconds: Stat | None  # over the seeds that reached it
    reached: int
    runs: int


@dataclass
class Reference:
    point: Point
    verdict: validity.Verdict = validity.Verdict(True)
    zero_e0: Point | None = None  # zero-shot-e0 at the reference's size

    @property
    def full_pool(self) -> bool:
        return (self.point.fraction or 0) >= 0.999

    @property
    def val_forces(self) -> float | None:
        s = Stat.of(final_val_forces(r) for r in self.point.records)
        return s.mean if s else None

    def val_forces_target(self, tolerance: float) -> float | None:
        """Default time-to-accuracy target: (1 + tolerance) × final validation force RMSE."""
        return (1 + tolerance) * self.val_forces if self.val_forces else None


@dataclass
class HeadlineRow:
    key: CurveKey
    largest: Point
    reference: Reference | None
    blocked: str | None = None  # why no claim is made against the reference (None: claims valid)
    within: dict[str, Point | None] = field(default_factory=dict)  # metric -> smallest point
    at_fraction: dict[tuple[str, float], AtFraction | None] = field(default_factory=dict)
    chemical_accuracy: Point | None = None
    time_to_target: TimeToTarget | None = None
    step_ratio: float | None = None  # step time / finetune's, same model and size
    inference_atoms_per_s: float | None = None
    peak_rss_mb: float | None = None


@dataclass
class Headline:
    rows: list[HeadlineRow]
    references: dict[tuple[str, str, str], Reference]
    settings: dict


def is_e0_refit(points: list[Point]) -> bool:
    """The curve of the untrained model with its reference energies refit (zero-shot-e0)."""
    spec = points[0].records[0].spec
    return not spec.trains and spec.sized


def references(all_curves: dict[CurveKey, list[Point]], checks: dict | None = None) -> dict[tuple, Reference]:
    """Per (dataset, model, checkpoint): training from random weights (scratch) at its
    largest stored size (the largest budget there), with its verdict (``bench.validity``)."""
    refs: dict[tuple, Reference] = {}
    for key, points in all_curves.items():
        if points[-1].records[0].spec.is_reference:
            best = refs.get(key.model_key)
            if best is None or points[-1].size > best.point.size:
                refs[key.model_key] = Reference(points[-1])
    for mk, ref in refs.items():
        ref.zero_e0 = next((p for k, pts in all_curves.items() if k.model_key == mk and is_e0_refit(pts)
                            for p in pts if p.size == ref.point.size), None)
        ref.verdict = validity.reference_verdict(ref.point, ref.zero_e0, checks or {})
    return refs


def headline(records: list[Record], *, tolerance: float = 0.10, fractions: tuple[float, ...] = (0.10, 0.20),
             chemical_accuracy_mev: float = CHEMICAL_ACCURACY_MEV,
             time_target_mev_per_ang: float | None = None) -> Headline:
    """Headline rows per dataset × model × strategy; keyword settings as a preset's ``headline``."""
    settings = {"tolerance": tolerance, "fractions": tuple(fractions),
                "chemical_accuracy_mev": chemical_accuracy_mev,
                "time_target_mev_per_ang": time_target_mev_per_ang}
    all_curves = curves(records)
    refs = references(all_curves, validity.budget_checks(records))
    inference: dict[tuple, dict[bool, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:  # a model's timing job (kind "perf") wins over speeds measured in runs
        if r.ok and r.spec.kind in ("train", "perf") and r.timing:  # not a surrogate's student
            inference[model_key(r)][r.spec.kind == "perf"].append(r.timing.inference_atoms_per_s)
    rows = []
    for key, points in all_curves.items():
        ref = refs.get(key.model_key)
        row = HeadlineRow(key, points[-1], ref, chemical_accuracy=smallest_chemically_accurate(
            points, chemical_accuracy_mev))
        row.blocked = "no scratch reference" if ref is None else None if ref.verdict.valid else ref.verdict.text
        if row.blocked is None:
            for metric in (FORCES, ENERGY):
                row.within[metric] = smallest_within(points, ref.point, metric, tolerance)
                for f in fractions:
                    row.at_fraction[(metric, f)] = error_at_fraction(points, ref.point, metric, f)
        target = time_target_mev_per_ang or (ref.val_forces_target(tolerance) if row.blocked is None else None)
        if target and row.largest.records[0].spec.trains:
            times = [time_to_val_forces(r, target) for r in row.largest.records]
            row.time_to_target = TimeToTarget(target, Stat.of(times), sum(t is not None for t in times),
                                              len(times))
        finetune = next((p for k, pts in all_curves.items() if k.model_key == key.model_key
                         and k.setting == plain_setting(key.setting)
                         and pts[0].records[0].spec.is_full_finetune
                         for p in pts if p.size == row.largest.size), None)
        step = row.largest.timing("step_s_per_structure")
        ft_step = finetune.timing("step_s_per_structure") if finetune else None
        if step and ft_step:
            row.step_ratio = step.mean / ft_step.mean
        speeds = inference[key.model_key]
        speed = Stat.of(speeds[True]) or Stat.of(speeds[False])
        row.inference_atoms_per_s = speed.mean if speed else None
        rss = [r.timing.peak_rss_mb for r in row.largest.records if r.timing and r.timing.peak_rss_mb]
        row.peak_rss_mb = max(rss) if rss else None
        rows.append(row)
    rows.sort(key=lambda r: (r.key.dataset, r.key.family, r.key.model, r.key.checkpoint,
                             strategy_rank(r.key.strategy), r.key.setting))
    return Headline(rows, refs, settings)


def strategy_labels(keys) -> dict[CurveKey, str]:
    """Strategy names, plus the settings that differ where one model ran under several.

    A setting only some strategies have (a soft freeze's LR factors, LoRA's rank) is shown
    only where it takes more than one value; every label of a model is unique.
    """
    keys = list(keys)
    flats: dict[tuple, list[dict]] = defaultdict(list)
    for k in keys:
        if k.setting:
            flats[k.model_key].append(_flat(k.setting))

    def label(k: CurveKey, strict: bool) -> str:
        if not k.setting or len(flats[k.model_key]) < 2:
            return k.strategy
        mine, others = _flat(k.setting), flats[k.model_key]
        names = sorted(set(mine) | ({n for f in others for n in f} if strict else set()))
        diff = [f"{n}={mine.get(n)}" for n in names
                if len({json.dumps(f.get(n)) for f in others if strict or n in f}) > 1]
        return f"{k.strategy} [{', '.join(diff)}]" if diff else k.strategy

    labels = {k: label(k, strict=False) for k in keys}
    seen: dict[tuple, list[CurveKey]] = defaultdict(list)
    for k in keys:
        seen[(k.model_key, labels[k])].append(k)
    for same in seen.values():
        if len(same) > 1:  # told apart only by a setting some lack: every difference, absent ones too
            for k in same:
                labels[k] = label(k, strict=True)
    return labels


def _flat(setting: str) -> dict:
    """A curve's setting as one flat dict (nested dicts as ``outer.inner``; hashes left out)."""
    e0, cfg, *extra = json.loads(setting)
    out = {"e0": e0}
    for name, value in [*(cfg or {}).items(), *(extra[0].items() if extra else ())]:
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items() if k != "sha256"})
        else:
            out[name] = value
    return out


def plain_setting(setting: str) -> str:
    """The setting without its strategy fields (finetune's setting for a LoRA run's step ratio)."""
    if not setting:
        return setting
    e0, cfg, *_ = json.loads(setting)
    cfg = {k: v for k, v in (cfg or {}).items() if k != "lr_factors"} if cfg is not None else None
    return json.dumps([e0, cfg], sort_keys=True)
