"""Sweep settings: presets (TOML/YAML files) and how CLI flags override them.

Precedence: dataclass defaults < preset file < command-line flags. The embedded presets
live in ``bench/presets/``: ``quick`` (the default; a 2-core CPU in minutes) and ``paper``
(the reference study's protocol, for a GPU machine or a cluster). A user preset is any
``.toml``/``.yaml`` file with the same keys.

Example:
    >>> cfg = SweepConfig.from_preset("quick", epochs=10)
    >>> cfg.datasets, cfg.sizes
    (('mlearn-Mo',), (0.2, 0.4, 1.0))
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from bench.core import strategies
from bench.core.contract import E0_POLICIES, TrainConfig
from bench.core.strategies import DEFAULT_STRATEGIES, UnknownName
from bench.core.util import did_you_mean
from bench.executors import EXECUTORS
from bench.registry import MODELS
from bench.workers import ISOLATIONS
from datasets.keys import DEFAULT_STRESS_UNIT, STRESS_UNITS, LabelKeys

PRESET_DIR = Path(__file__).parent / "presets"

DEFAULT_LR_FACTORS = {"embedding": 0.01, "interaction": 0.1, "readout": 1.0}
SURROGATE_DEFAULTS = {
    "model": "m3gnet",  # teacher family; the student is a small from-scratch model of it
    "teacher_strategy": "freeze-interactions",
    "rattle_copies": 2, "rattle_stdev_ang": 0.04, "rattle_strain": 0.01,
    "md_structures": 4, "md_steps": 20, "md_every": 5, "md_temperature_k": 600.0,
    "student": {"units": 32, "nblocks": 2, "dim_node_embedding": 32, "dim_edge_embedding": 32,
                "threebody_cutoff": 3.5},
    "student_epochs": 30, "student_lr": 3e-3, "speed_structures": 8,
}

# MD stability of saved models (adapters/md.py; per dataset: `[<dataset>.md]` in the catalog
# gives the high temperature, the starting cell's group and the time step). A preset's [md]
# table overrides these; the criteria say what counts as blowing up or drifting.
MD_DEFAULTS = {
    "langevin_ps": 1.0, "nve_ps": 0.5, "friction_per_fs": 0.01,
    "criteria": {
        "min_distance_fraction": 0.6,  # collapse: a pair closer than this x the closest pair in the DFT data
        "max_temperature_factor": 3.0,  # runaway: the instantaneous temperature above this x the target
        "max_drift_mev_per_atom_per_ps": 5.0,  # NVE total-energy drift beyond this: "drifts"
    },
    # dimer distances from r_min to r_max x that closest pair, in a periodic box of box_ang
    "dimer": {"r_min_fraction": 0.4, "r_max_fraction": 2.0, "points": 33, "box_ang": 20.0},
}
SAVE_MODELS = ("none", "best", "all")  # also the choices of `md` (MD on no, the best or every saved model)


@dataclass(frozen=True)
class SweepConfig:
    preset: str = "quick"
    models: str = "all"
    dataset: str = "mlearn-Mo"  # one name/path, or a comma list
    sizes: tuple[float, ...] = (5, 15)
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    sizes_by_strategy: dict = field(default_factory=dict)  # strategy -> its own sizes (others: `sizes`)
    seeds_by_strategy: dict = field(default_factory=dict)  # strategy -> N: only the first N of `seeds`
    seeds: tuple[int, ...] = (0,)
    epochs: int = 4
    min_steps: int | None = None  # at least this many optimizer steps per run (epochs: at least that many passes)
    eval_interval_steps: int | None = None  # validate after whole epochs at least this many steps apart
    batch_size: int = 4
    lr: float = 1e-3
    lr_by_strategy: dict = field(default_factory=dict)  # strategy -> its learning rate (others: `lr`)
    lr_grid: tuple[float, ...] = ()  # choose each strategy's LR on the validation set from these...
    lr_grid_size: float | None = None  # ...at this training size (first seed), then use it at every size
    energy_weight: float | None = None  # loss weights (None: the protocol's, adapters/training.py)
    forces_weight: float | None = None
    stress_weight: float | None = None
    budget_check: tuple[str, ...] = ()  # these strategies' largest size (first seed) again with twice the budget
    patience: int = 5
    e0_policy: str = "refit"
    val_fraction: float = 0.05
    val_size: int | None = None  # hold out at least this many frames instead of a fraction
    pool_size: int | None = None  # use only this many training frames (fractions refer to it)
    # a user's own file (datasets.keys): where its labels are (None: the default, or MACE's
    # REF_* names where only those exist), the unit and sign of its stress, its test set
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    group_key: str | None = None
    stress_unit: str = DEFAULT_STRESS_UNIT
    test_size: int | None = None  # at most this many test frames (whole leak groups, fixed); catalog data too
    test_file: str = ""  # a user's own held-out file instead of a split of the dataset file
    checkpoint: str | None = None
    device: str = "auto"  # auto: the GPU when the worker sees one, else the CPU
    isolation: str = "auto"  # auto: a fork server per family on the CPU, a fresh process per run on a GPU
    python: dict = field(default_factory=dict)  # family environment -> an existing interpreter (--python)
    threads: int = 0  # 0: all cores of this machine
    run_timeout_s: float = 3600.0
    max_train_time_s: float = 1800.0
    perf_structures: int = 0  # per-model timing job on this many test structures (0: none)
    perf_batch_sizes: tuple[int, ...] = ()  # ...also predict throughput at these batch sizes
    perf_train_steps: int = 0  # ...also the shared loop's step vs a minimal loop over this many steps
    properties: str = "all"  # catalog property benchmarks after: all runs | largest (size per strategy) | none
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lr_factors: dict = field(default_factory=lambda: dict(DEFAULT_LR_FACTORS))  # soft-freeze, by block kind
    replay_dataset: str = ""  # another domain: forgetting is measured on it, `replay` mixes it in
    replay_fraction: float = 0.5  # replay structures per training structure (rounded up)
    forgetting_size: int = 6  # held-out structures of replay_dataset the forgetting is measured on
    surrogate: dict = field(default_factory=dict)  # teacher -> student distillation job (see SURROGATE_DEFAULTS)
    headline: dict = field(default_factory=dict)  # tolerances for bench.headline
    save_models: str = "none"  # native files of trained models: none | best (per model, by validation F) | all
    md: str = "none"  # MD stability of saved models: none | best (per model) | all
    md_settings: dict = field(default_factory=lambda: _md_settings({}, "defaults"))
    executor: str = "local"  # local | pool | slurm | submitit-local (bench/executors.py)
    workers: int = 2  # parallel worker slots of the pool (and of submitit-local)
    slurm: dict = field(default_factory=dict)  # partition, time_min, gpus_per_node, cpus_per_task, ...
    out: str = ""  # default reports/<preset name>

    @classmethod
    def from_preset(cls, preset: str = "quick", **given) -> SweepConfig:
        """The preset's settings with the given (non-None) overrides applied."""
        data = load_preset(preset)
        sweep = data.get("sweep", {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(sweep) - names)
        if unknown:
            raise ValueError(f"preset {preset}: unknown setting(s) {unknown}."
                             f"{did_you_mean(unknown[0], names)}")
        if isinstance(sweep.get("dataset"), list):
            sweep["dataset"] = ",".join(sweep["dataset"])
        from datasets.splits import parse_size

        if "sizes" in sweep:
            sweep["sizes"] = tuple(parse_size(str(x)) for x in sweep["sizes"])
        if "sizes_by_strategy" in sweep:
            sweep["sizes_by_strategy"] = {k: tuple(parse_size(str(x)) for x in v)
                                          for k, v in sweep["sizes_by_strategy"].items()}
        for key in ("strategies", "seeds", "lr_grid", "budget_check", "perf_batch_sizes"):
            if key in sweep:
                sweep[key] = tuple(sweep[key])
        if "lr_grid_size" in sweep:
            sweep["lr_grid_size"] = parse_size(str(sweep["lr_grid_size"]))
        sweep.setdefault("out", f"reports/{Path(preset).stem}")
        slurm = {**sweep.pop("slurm", {}), **(given.pop("slurm", None) or {})}
        if "surrogate" in data or "surrogate" in sweep:
            sweep["surrogate"] = _surrogate_settings(data.get("surrogate") or sweep["surrogate"], preset)
        if "lr_factors" in sweep:
            sweep["lr_factors"] = {**DEFAULT_LR_FACTORS, **sweep["lr_factors"]}
        if "md" in data:
            sweep["md_settings"] = _md_settings(data["md"], preset)
        return cls(preset=preset, headline=data.get("headline", {}), slurm=slurm, **sweep).override(**given)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(x.strip() for x in self.dataset.split(",") if x.strip())

    def __post_init__(self):
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: training needs at least 1 epoch")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"--isolation {self.isolation!r}: use {', '.join(ISOLATIONS)}")
        unknown_env = sorted(set(self.python) - {m.env for m in MODELS.values()})
        if unknown_env:
            raise ValueError(f"--python {unknown_env[0]}=...: no such family environment; known: "
                             f"{', '.join(sorted({m.env for m in MODELS.values()}))}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor {self.executor!r}: use {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers} must be >= 1")
        if self.e0_policy not in E0_POLICIES:
            raise ValueError(f"--e0 {self.e0_policy!r} not in {sorted(E0_POLICIES)}")
        if not self.seeds:
            raise ValueError("--seeds: at least one seed is needed")
        if not self.sizes and any(strategies.is_known(s) and strategies.definition(s).trains for s in self.strategies):
            raise ValueError("--sizes: at least one training size is needed")
        if self.min_steps is not None and self.min_steps < 1:
            raise ValueError(f"--min-steps {self.min_steps}: training needs at least 1 step")
        if self.lr_grid and self.lr_grid_size is None:
            raise ValueError("lr_grid needs lr_grid_size: the training size the learning rates are compared at")
        if any(not 0 < lr < 1 for lr in (*self.lr_grid, *self.lr_by_strategy.values())):
            raise ValueError(f"learning rates {(*self.lr_grid, *self.lr_by_strategy.values())} must be in (0, 1)")
        for name in ("sizes_by_strategy", "seeds_by_strategy", "lr_by_strategy", "budget_check"):
            table = getattr(self, name)
            stray = sorted(k for k in table if not strategies.is_known(k))
            if stray:  # entries for strategies not run (e.g. after --strategies) are simply unused
                raise ValueError(f"{name} names unknown strategies {stray}."
                                 f"{did_you_mean(stray[0], strategies.BY_NAME)}")
        for name, n in self.seeds_by_strategy.items():
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"seeds_by_strategy {name} = {n!r}: the number of seeds (the first N of seeds), >= 1")
        replaying = [n for n in self.strategies if strategies.is_known(n) and strategies.definition(n).replay]
        if replaying and not self.replay_dataset:
            raise ValueError(f"strategy {replaying[0]} needs replay_dataset (structures of another domain)")
        for name in ("save_models", "md"):
            if getattr(self, name) not in SAVE_MODELS:
                raise ValueError(f"{name}={getattr(self, name)!r}: use {', '.join(SAVE_MODELS)}")
        if self.md != "none" and self.save_models == "none":
            raise ValueError(f"md={self.md}: MD runs on saved models; use --save-models best or all with it")
        if self.stress_unit not in STRESS_UNITS:
            raise ValueError(f"stress_unit {self.stress_unit!r}: use {', '.join(STRESS_UNITS)}")
        if self.test_size is not None and (isinstance(self.test_size, bool) or not isinstance(self.test_size, int)
                                           or self.test_size < 1):
            raise ValueError(f"--test-size {self.test_size!r}: a number of test frames, >= 1")
        if self.test_file and len(self.datasets) != 1:
            raise ValueError(f"--test-file {self.test_file} is the test set of one dataset file; "
                             f"--dataset names {len(self.datasets)}")
        if self.properties not in ("all", "largest", "none"):
            raise ValueError(f"properties={self.properties!r}: use all, largest or none")
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ValueError(f"lora_rank={self.lora_rank}, lora_alpha={self.lora_alpha}: need rank >= 1, alpha > 0")
        if not 0 < self.replay_fraction <= 10:
            raise ValueError(f"replay_fraction={self.replay_fraction} must be in (0, 10]")
        unknown = sorted(set(self.lr_factors) - {"embedding", "interaction", "readout"})
        if unknown or any(not 0 <= float(v) <= 10 for v in self.lr_factors.values()):
            raise ValueError(f"lr_factors {self.lr_factors}: keys embedding/interaction/readout, values in [0, 10]")

    def checkpoint_for(self, model: str, n_models: int) -> str | None:
        """``--checkpoint PATH`` (one model) or ``--checkpoint mace=PATH,chgnet=0.2.0``."""
        if not self.checkpoint:
            return None
        pairs = [p.split("=", 1) for p in self.checkpoint.split(",") if "=" in p]
        if not pairs:
            if n_models > 1:
                raise ValueError("--checkpoint PATH needs a single --models entry; with several "
                                 "models use --checkpoint model=PATH[,model=PATH]")
            return self.checkpoint
        return dict(pairs).get(model)

    def label_keys(self) -> LabelKeys:
        """Where a user's file keeps its labels, as given (unset keys: found by ``datasets.keys``)."""
        return LabelKeys(energy=self.energy_key, forces=self.forces_key, stress=self.stress_key,
                         group=self.group_key, stress_unit=self.stress_unit)

    def train_config(self, *, soft: bool = False, lr: float | None = None) -> TrainConfig:
        """The shared training loop's settings; ``soft``: with the per-block LR factors."""
        weights = {k: v for k, v in (("energy_weight", self.energy_weight), ("forces_weight", self.forces_weight),
                                     ("stress_weight", self.stress_weight)) if v is not None}
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=lr or self.lr, patience=self.patience,
                           max_time_s=self.max_train_time_s, lr_factors=dict(self.lr_factors) if soft else None,
                           min_steps=self.min_steps, eval_interval_steps=self.eval_interval_steps, **weights)

    def override(self, **given) -> SweepConfig:
        """Replace only the settings that were actually given (None means not given)."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in given.items() if v is not None and k in names})


def _surrogate_settings(given: dict, preset: str) -> dict:
    """A preset's [surrogate] table over the defaults; unknown keys are refused."""
    unknown = sorted(set(given) - set(SURROGATE_DEFAULTS))
    if unknown:
        raise ValueError(f"preset {preset}: unknown [surrogate] setting(s) {unknown}."
                         f"{did_you_mean(unknown[0], SURROGATE_DEFAULTS)}")
    return {**SURROGATE_DEFAULTS, **given}


def _md_settings(given: dict, preset: str) -> dict:
    """A preset's [md] table over MD_DEFAULTS (criteria and dimer merged key by key);
    unknown keys are refused."""
    unknown = sorted(set(given) - set(MD_DEFAULTS)) + sorted(
        f"{table}.{k}" for table in ("criteria", "dimer") for k in set(given.get(table, {})) - set(MD_DEFAULTS[table]))
    if unknown:
        raise ValueError(f"preset {preset}: unknown [md] setting(s) {unknown}."
                         f"{did_you_mean(unknown[0], [*MD_DEFAULTS, *MD_DEFAULTS['criteria'], *MD_DEFAULTS['dimer']])}")
    return {**MD_DEFAULTS, **given, **{table: {**MD_DEFAULTS[table], **given.get(table, {})}
                                       for table in ("criteria", "dimer")}}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(preset: str) -> dict:
    """An embedded preset by name, or a user preset file (``.toml``, ``.yaml``/``.yml``)."""
    path = Path(preset)
    if path.suffix in (".toml", ".yaml", ".yml"):
        if not path.is_file():
            raise ValueError(f"preset file {path} does not exist")
    else:
        path = PRESET_DIR / f"{preset}.toml"
        if not path.is_file():
            raise UnknownName(f"unknown preset {preset!r}; embedded: {', '.join(preset_names())}, "
                              f"or pass a .toml/.yaml file.{did_you_mean(preset, preset_names())}")
    import yaml

    try:
        data = (tomllib.loads(path.read_text()) if path.suffix == ".toml"
                else yaml.safe_load(path.read_text()))
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"preset {path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"preset {path}: expected a mapping with a [sweep] table")
    return data
