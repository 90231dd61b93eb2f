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

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import SweepConfig
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
from datasets import Dataset, DatasetError, load_dataset
from datasets.splits import Split, plan_split, resolve_size


@dataclass(frozen=True)
class PlannedRun:
    spec: Spec
    model: ModelInfo
    train_idx: tuple[int, ...] = ()
    val_idx: tuple[int, ...] = ()
    replay_idx: tuple[int, ...] = ()  # structures of the other domain's pool mixed into training

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass
class Plan:
    config: SweepConfig
    datasets: dict[str, Dataset]
    runs: list[PlannedRun]
    other: Dataset | None = None  # the other domain for replay and forgetting

    def describe(self) -> str:
        return "; ".join(f"{name}: {len(d.pool)} pool / {len(d.test)} test structures"
                         for name, d in self.datasets.items())


def _base(model: ModelInfo, checkpoint: str, dataset: Dataset) -> dict:
    return {"schema_version": SCHEMA_VERSION, "model": model.key, "family": model.family,
            "checkpoint": checkpoint, "dataset": dataset.name, "dataset_sha256": dataset.sha256}


def _strategy_fields(cfg: SweepConfig, strategy: Resolved, other: Dataset | None) -> dict:
    """Spec fields a strategy's flags add (absent elsewhere, so other specs keep their id)."""
    fields: dict = {}
    if other is not None and strategy.init == "foundation":
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


def _strategy_runs(cfg: SweepConfig, model: ModelInfo, strategy: Resolved, base: dict,
                   splits: dict[int, Split], other: Dataset | None, replay_order: dict) -> list[PlannedRun]:
    if strategy.freeze_k is None:  # no training: one run, the model as it is
        spec = TrainSpec(**base, strategy=strategy.name, freeze_k=None, e0_policy=strategy.e0_policy or "foundation",
                         train_size=0, train_size_requested=0, seed=0, train_config=None, init=strategy.init)
        return [PlannedRun(spec, model)]
    extra = _strategy_fields(cfg, strategy, other)
    e0_policy = strategy.e0_policy or cfg.e0_policy
    seeds = cfg.seeds[: cfg.seeds_by_strategy.get(strategy.name, len(cfg.seeds))]
    runs = []
    for seed, split in splits.items():
        if seed not in seeds:
            continue
        for requested in cfg.sizes_by_strategy.get(strategy.name, cfg.sizes):
            n = resolve_size(requested, len(split.order))
            spec = TrainSpec(**base, strategy=strategy.name, init=strategy.init, freeze_k=strategy.freeze_k,
                             e0_policy=e0_policy, train_size=n, train_size_requested=requested,
                             pool_size=len(split.order), train_fraction=n / len(split.order), seed=seed,
                             val_fraction=cfg.val_fraction, val_size=cfg.val_size, n_val=len(split.val),
                             train_config=cfg.train_config(soft=strategy.soft), **extra)
            n_replay = math.ceil(cfg.replay_fraction * n) if strategy.replay else 0
            runs.append(PlannedRun(spec, model, split.train(n), split.val, replay_order.get(seed, ())[:n_replay]))
    return runs


def _dataset_runs(cfg: SweepConfig, models: list[ModelInfo], dataset: Dataset,
                  other: Dataset | None) -> list[PlannedRun]:
    leak = [a.info["leak_group"] for a in dataset.pool]
    splits = {seed: plan_split(leak, seed=seed, val_fraction=cfg.val_fraction, val_size=cfg.val_size or None,
                               pool_size=cfg.pool_size or None) for seed in cfg.seeds}
    replay_order = {seed: tuple(int(i) for i in np.random.default_rng(seed).permutation(len(other.pool)))
                    for seed in cfg.seeds} if other is not None else {}
    runs: list[PlannedRun] = []
    for model in models:
        checkpoint = cfg.checkpoint_for(model.key, len(models)) or model.default_checkpoint
        base = _base(model, checkpoint, dataset)
        mine = [run for name in cfg.strategies
                for run in _strategy_runs(cfg, model, resolve_strategy(name, model), base, splits, other,
                                          replay_order)]
        if cfg.surrogate and cfg.surrogate["model"] == model.key:
            mine.append(_surrogate_run(cfg, model, base, splits))
        if cfg.perf_structures:  # last: by then the background environment builds are done
            mine.append(PlannedRun(PerfSpec(**base, n_structures=min(cfg.perf_structures, len(dataset.test))),
                                   model))
        runs += sorted(mine, key=_longest_first)
    return runs


def _longest_first(run: PlannedRun) -> tuple:
    """A model's runs, longest first (the surrogate job, then by training size) so parallel
    slots finish together; its timing job last, when background environment builds are done."""
    spec = run.spec
    rank = 0 if isinstance(spec, SurrogateSpec) else 2 if isinstance(spec, PerfSpec) else 1
    return rank, -getattr(spec, "train_size", 0)


def load_datasets(names: tuple[str, ...]) -> dict[str, Dataset]:
    """Each dataset once, by name; two different files with one name are refused."""
    datasets: dict[str, Dataset] = {}
    sources: dict[str, str] = {}
    for given in names:
        dataset = load_dataset(given)
        seen = datasets.get(dataset.name)
        if seen is not None and seen.sha256 != dataset.sha256:
            raise DatasetError(f"two datasets are named {dataset.name!r}: {sources[dataset.name]} and {given} "
                               "(a dataset file is named by its stem); rename one of them")
        datasets.setdefault(dataset.name, dataset)
        sources.setdefault(dataset.name, str(Path(given)))
    return datasets


def make_plan(cfg: SweepConfig) -> Plan:
    models = resolve_models(cfg.models)
    datasets = load_datasets(cfg.datasets)
    other = load_dataset(cfg.replay_dataset) if cfg.replay_dataset else None
    if cfg.surrogate:  # a misspelt teacher fails here; one outside --models just has no job
        get_model(cfg.surrogate["model"])
    runs = [run for d in datasets.values() for run in _dataset_runs(cfg, models, d, other)]
    return Plan(cfg, datasets, runs, other)
