"""Plan a sweep: datasets, splits and the typed spec of every run.

Planning loads the datasets (light: numpy + ASE), fixes the splits, and expands models ×
strategies × sizes × seeds (+ a surrogate job and one timing job per model) into specs
(``bench.core.contract``). A strategy's flags come from ``bench.core.strategies``; the
sweep's settings fill in what they need (LoRA rank, LR factors, the replay set).

Example:
    >>> plan = make_plan(SweepConfig.from_preset("quick", models="chgnet"))
    >>> plan.runs[0].spec.label
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.config import SweepConfig
from bench.core import strategies
from bench.core.contract import (
    SCHEMA_VERSION,
    LoraSettings,
    OtherDomain,
    PerfSpec,
    Spec,
    SurrogateSpec,
    TrainSpec,
)
from bench.core.strategies import Resolved
from bench.registry import ModelInfo, get_model, resolve_models, resolve_strategy
from datasets import Dataset, DatasetError, load_dataset, periodicity
from datasets.splits import Split, plan_split, resolve_size


@dataclass(frozen=True)
class Derived:
    """A run answered by its host run's predictions (see ``bench.core.contract.DerivedRun``)."""

    spec: TrainSpec
    train_idx: tuple[int, ...]


@dataclass(frozen=True)
class PlannedRun:
    spec: Spec
    model: ModelInfo
    train_idx: tuple[int, ...] = ()
    val_idx: tuple[int, ...] = ()
    replay_idx: tuple[int, ...] = ()  # structures of the other domain's pool mixed into training
    derived: tuple[Derived, ...] = ()  # runs this one's predictions answer (zero-shot-e0 on a zero-shot run)
    save_model: bool = False  # export the trained model natively (bench.saved)
    require_model: bool = False  # a stored record without its saved model is not reused: run it again
    model_file: Path | None = None  # an MD run: the saved model it loads

    @property
    def label(self) -> str:
        more = f" (+{len(self.derived)} E0 refits)" if self.derived else ""
        return f"{self.spec.label}{more}"


@dataclass
class Plan:
    config: SweepConfig
    datasets: dict[str, Dataset]
    runs: list[PlannedRun]
    other: Dataset | None = None  # the other domain for replay and forgetting
    waiting: list[str] = field(default_factory=list)  # what is planned once earlier runs have finished
    notes: list[str] = field(default_factory=list)  # strategies merged for a model; how user data was read

    def describe(self) -> str:
        return "; ".join(f"{name}: {len(d.pool)} pool / {len(d.test)} test structures"
                         for name, d in self.datasets.items())


def _base(model: ModelInfo, checkpoint: str, dataset: Dataset) -> dict:
    """Spec fields of every run on this dataset; the ones a user's own data adds (keys,
    test file, test cap, periodicity rule) only where they apply, so other specs keep their id."""
    user = {"labels": (dataset.labels.given() if dataset.labels else None) or None,
            "test_sha256": dataset.test_sha256, "test_size": dataset.test_cap,
            "periodicity": None if dataset.fully_periodic else periodicity.RULE}
    return {"schema_version": SCHEMA_VERSION, "model": model.key, "family": model.family,
            "checkpoint": checkpoint, "dataset": dataset.name, "dataset_sha256": dataset.sha256,
            **{k: v for k, v in user.items() if v is not None}}


def _strategy_fields(cfg: SweepConfig, strategy: Resolved, other: Dataset | None) -> dict:
    """Spec fields a strategy's flags add (absent elsewhere, so other specs keep their id)."""
    fields: dict = {}
    if other is not None and strategy.init == "foundation" and strategy.freeze_k is not None:
        fields["forgetting"] = OtherDomain(dataset=other.name, sha256=other.sha256,
                                           n_structures=min(cfg.forgetting_size, len(other.test)))
    if strategy.lora:
        fields["lora"] = LoraSettings(rank=cfg.lora_rank, alpha=cfg.lora_alpha)
    if strategy.replay:
        fields["replay"] = OtherDomain(dataset=other.name, sha256=other.sha256, fraction=cfg.replay_fraction)
    return fields


def _surrogate_run(cfg: SweepConfig, model: ModelInfo, base: dict, splits: dict[int, Split]) -> PlannedRun:
    """The distillation job: teacher fine-tuned on the whole pool (first seed), a small
    student of the same family trained on the teacher's labels."""
    s = cfg.surrogate
    teacher = resolve_strategy(s["teacher_strategy"], model)
    seed = cfg.seeds[0]
    split = splits[seed]
    n = len(split.order)
    spec = SurrogateSpec(
        **base, teacher_strategy=teacher.name, freeze_k=teacher.freeze_k, e0_policy=cfg.e0_policy,
        train_size=n, pool_size=n, seed=seed, n_val=len(split.val), train_config=cfg.train_config(),
        student={"architecture": dict(s["student"]), "epochs": s["student_epochs"], "lr": s["student_lr"]},
        rattle={"copies": s["rattle_copies"], "stdev_ang": s["rattle_stdev_ang"], "strain": s["rattle_strain"]},
        md={"structures": s["md_structures"], "steps": s["md_steps"], "every": s["md_every"],
            "temperature_k": s["md_temperature_k"]},
        speed_structures=s["speed_structures"])
    return PlannedRun(spec, model, split.train(n), split.val)


def _untrained(strategy: Resolved, base: dict) -> TrainSpec:
    return TrainSpec(**base, strategy=strategy.name, freeze_k=None, e0_policy=strategy.e0_policy or "foundation",
                     train_size=0, train_size_requested=0, seed=0, train_config=None, init=strategy.init)


def _sized_spec(cfg: SweepConfig, strategy: Resolved, base: dict, split: Split, seed: int, requested: float,
                train_config, extra: dict, **fields) -> TrainSpec:
    n = resolve_size(requested, len(split.order))
    return TrainSpec(**base, strategy=strategy.name, init=strategy.init, freeze_k=strategy.freeze_k,
                     e0_policy=strategy.e0_policy or cfg.e0_policy, train_size=n, train_size_requested=requested,
                     pool_size=len(split.order), train_fraction=n / len(split.order), seed=seed,
                     val_fraction=cfg.val_fraction, val_size=cfg.val_size, n_val=len(split.val),
                     train_config=train_config, **extra, **fields)


class _Context:
    """What every run of one model on one dataset shares while it is planned."""

    def __init__(self, cfg: SweepConfig, model: ModelInfo, base: dict, splits: dict[int, Split],
                 other: Dataset | None, replay_order: dict, chosen_lr: dict[str, float]):
        self.cfg, self.model, self.base, self.splits = cfg, model, base, splits
        self.other, self.replay_order, self.chosen_lr = other, replay_order, chosen_lr

    def seeds(self, strategy: Resolved) -> list[int]:
        return list(self.cfg.seeds[: self.cfg.seeds_by_strategy.get(strategy.name, len(self.cfg.seeds))])

    def sizes(self, strategy: Resolved) -> tuple[float, ...]:
        return self.cfg.sizes_by_strategy.get(strategy.name, self.cfg.sizes)

    def run(self, strategy: Resolved, seed: int, requested: float, train_config, **fields) -> PlannedRun:
        split = self.splits[seed]
        spec = _sized_spec(self.cfg, strategy, self.base, split, seed, requested, train_config,
                           _strategy_fields(self.cfg, strategy, self.other), **fields)
        n_replay = math.ceil(self.cfg.replay_fraction * spec.train_size) if strategy.replay else 0
        return PlannedRun(spec, self.model, split.train(spec.train_size), split.val,
                          self.replay_order.get(seed, ())[:n_replay])


def _trained_runs(ctx: _Context, strategy: Resolved, waiting: list[str]) -> list[PlannedRun]:
    """A trained strategy's curve (and its budget check); with an LR grid, first the grid."""
    cfg = ctx.cfg
    if cfg.lr_grid and strategy.name not in cfg.lr_by_strategy and strategy.name not in ctx.chosen_lr:
        waiting.append(f"{ctx.model.key} {strategy.name}: the curve, once its learning-rate grid has run")
        return [ctx.run(strategy, ctx.seeds(strategy)[0], cfg.lr_grid_size,
                        cfg.train_config(soft=strategy.soft, lr=lr), role="lr-grid") for lr in cfg.lr_grid]
    lr = cfg.lr_by_strategy.get(strategy.name) or ctx.chosen_lr.get(strategy.name)
    train_config = cfg.train_config(soft=strategy.soft, lr=lr)
    runs = [ctx.run(strategy, seed, requested, train_config)
            for seed in ctx.seeds(strategy) for requested in ctx.sizes(strategy)]
    if strategy.name in cfg.budget_check:
        largest = max(runs[: len(ctx.sizes(strategy))], key=lambda r: r.spec.train_size)
        runs.append(ctx.run(strategy, largest.spec.seed, largest.spec.train_size_requested, train_config.doubled(),
                            role="budget-check", check_of=largest.spec.spec_id))
    return runs


def _untrained_runs(ctx: _Context, resolved: list[Resolved]) -> list[PlannedRun]:
    """The untrained model once, and the E0 refits on each training subset it answers."""
    untrained = [s for s in resolved if s.freeze_k is None]
    if not untrained:
        return []
    host = next((s for s in untrained if s.e0_policy != "refit"), None)
    derived = tuple(Derived(r.spec, r.train_idx) for s in untrained if s.e0_policy == "refit"
                    for seed in ctx.seeds(s) for requested in ctx.sizes(s) for r in [ctx.run(s, seed, requested, None)])
    spec = _untrained(host or resolve_strategy(strategies.UNTRAINED, ctx.model), ctx.base)
    return [PlannedRun(spec, ctx.model, derived=derived)]


def _distinct(resolved: list[Resolved], model: ModelInfo, notes: list[str]) -> list[Resolved]:
    """The strategies that differ for this model: two names with the same flags (readout-only
    and freeze-interactions where the readout follows the last interaction) run once."""
    seen: dict[tuple, str] = {}
    out = []
    for s in resolved:
        flags = (s.init, s.freeze_k, s.e0_policy, s.lora, s.soft, s.replay)
        if flags in seen:
            notes.append(f"{model.key}: {s.name} is {seen[flags]} for this model; run once, as {seen[flags]}")
            continue
        seen[flags] = s.name
        out.append(s)
    return out


def _dataset_runs(cfg: SweepConfig, models: list[ModelInfo], dataset: Dataset, other: Dataset | None,
                  chosen: dict, waiting: list[str], notes: list[str]) -> list[PlannedRun]:
    leak = [a.info["leak_group"] for a in dataset.pool]
    splits = {seed: plan_split(leak, seed=seed, val_fraction=cfg.val_fraction, val_size=cfg.val_size or None,
                               pool_size=cfg.pool_size or None) for seed in cfg.seeds}
    replay_order = {seed: tuple(int(i) for i in np.random.default_rng(seed).permutation(len(other.pool)))
                    for seed in cfg.seeds} if other is not None else {}
    runs: list[PlannedRun] = []
    for model in models:
        checkpoint = cfg.checkpoint_for(model.key, len(models)) or model.default_checkpoint
        _refuse_open_frames(model, checkpoint, dataset)
        base = _base(model, checkpoint, dataset)
        ctx = _Context(cfg, model, base, splits, other, replay_order, chosen.get((dataset.name, model.key), {}))
        resolved = _distinct([resolve_strategy(name, model) for name in cfg.strategies], model, notes)
        mine = _untrained_runs(ctx, resolved)
        mine += [run for strategy in resolved if strategy.freeze_k is not None
                 for run in _trained_runs(ctx, strategy, waiting)]
        if cfg.surrogate and cfg.surrogate["model"] == model.key:
            mine.append(_surrogate_run(cfg, model, base, splits))
        if cfg.perf_structures:  # last: by then the background environment builds are done
            mine.append(PlannedRun(PerfSpec(**base, n_structures=min(cfg.perf_structures, len(dataset.test)),
                                            batch_sizes=tuple(cfg.perf_batch_sizes),
                                            train_steps=cfg.perf_train_steps), model))
        runs += sorted(mine, key=_longest_first)
    return runs


def _refuse_open_frames(model: ModelInfo, checkpoint: str, dataset: Dataset) -> None:
    """Refuse, before any run, a frame open along an axis that this model cannot see as
    periodic (``datasets.periodicity``), where the checkpoint's cutoff is known without
    loading it; other checkpoints' workers refuse the same frames when they load."""
    info = model.checkpoint_info(checkpoint)
    if info is None or dataset.fully_periodic:
        return
    for atoms in dataset.pool + dataset.test:
        decided = periodicity.verdict(atoms, info.cutoff)
        if decided.action == "refused":
            raise periodicity.PeriodicityError(f"{model.key} ({checkpoint}, cutoff {info.cutoff:g} Å): "
                                               f"{periodicity.where(atoms)}: field 'pbc': {decided.reason}")


def _data_notes(dataset: Dataset) -> list[str]:
    """What a user's own data was read as, and what became of its test set and open frames."""
    notes = []
    if dataset.labels is not None:
        notes.append(f"{dataset.name}: labels read as {dataset.labels.describe()}")
    if dataset.test_cap:
        notes.append(f"{dataset.name}: test set capped to {len(dataset.test)} of {dataset.n_test_full} frames "
                     f"(--test-size {dataset.test_cap}; whole leak groups, the same for every size and seed)")
    frames = dataset.pool + dataset.test
    open_frames = sum(not a.pbc.all() for a in frames)
    if open_frames:
        notes.append(f"{dataset.name}: {open_frames} of {len(frames)} frames are not periodic along every axis: "
                     "each model sees them periodic (their gap exceeds its cutoff) or in an added cell (no cell), "
                     "and their stress is neither trained on nor scored")
    return notes


def _longest_first(run: PlannedRun) -> tuple:
    """A model's runs, longest first (the surrogate job, then by training size) so parallel
    slots finish together; its timing job last, when background environment builds are done."""
    spec = run.spec
    rank = 0 if isinstance(spec, SurrogateSpec) else 2 if isinstance(spec, PerfSpec) else 1
    return rank, -getattr(spec, "train_size", 0)


def load_datasets(names: tuple[str, ...], **options) -> dict[str, Dataset]:
    """Each dataset once, by name (``options``: keys, test_size, test_file of ``load_dataset``);
    two different files with one name are refused."""
    datasets: dict[str, Dataset] = {}
    sources: dict[str, str] = {}
    for given in names:
        dataset = load_dataset(given, **options)
        seen = datasets.get(dataset.name)
        if seen is not None and seen.sha256 != dataset.sha256:
            raise DatasetError(f"two datasets are named {dataset.name!r}: {sources[dataset.name]} and {given} "
                               "(a dataset file is named by its stem); rename one of them")
        datasets.setdefault(dataset.name, dataset)
        sources.setdefault(dataset.name, str(Path(given)))
    return datasets


def make_plan(cfg: SweepConfig, chosen_lr: dict | None = None) -> Plan:
    """Every run of the sweep. ``chosen_lr``: (dataset, model) -> strategy -> the learning
    rate its grid chose (``bench.lr_grid``); strategies still without one get their grid
    runs now and their curves later (``Plan.waiting``)."""
    models = resolve_models(cfg.models)
    datasets = load_datasets(cfg.datasets, keys=cfg.label_keys(), test_size=cfg.test_size,
                             test_file=cfg.test_file or None)
    other = load_dataset(cfg.replay_dataset) if cfg.replay_dataset else None
    if cfg.surrogate:  # a misspelt teacher fails here; one outside --models just has no job
        get_model(cfg.surrogate["model"])
    waiting: list[str] = []
    notes: list[str] = []
    runs = [_saving(cfg, run) for d in datasets.values()
            for run in _dataset_runs(cfg, models, d, other, chosen_lr or {}, waiting, notes)]
    notes += [note for d in datasets.values() for note in _data_notes(d)]
    return Plan(cfg, datasets, runs, other, waiting, list(dict.fromkeys(notes)))


def _saving(cfg: SweepConfig, run: PlannedRun) -> PlannedRun:
    """Trained runs save their model unless ``save_models`` is none; ``all`` also needs it of
    stored runs (``best`` asks for the best runs' models once the sweep has chosen them)."""
    if cfg.save_models == "none" or not (isinstance(run.spec, TrainSpec) and run.spec.trains):
        return run
    return dataclasses.replace(run, save_model=True, require_model=cfg.save_models == "all")
