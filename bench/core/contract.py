"""The run contract: everything that crosses the boundary between the orchestrator and a
worker, and everything a results directory stores, as frozen dataclasses.

    orchestrator                                    worker (the family's environment)
    Spec      what to run (TrainSpec, PerfSpec, SurrogateSpec, MDSpec): the run's identity
    Runtime   where: device kind and the environment's key package versions
    Job       spec + runtime + data files + output paths  ->  job.json  ->  adapters.worker
    Result    status, metrics, curve, timing, ...          <-  result.json  <-
    Record    spec + runtime + result + provenance, stored as ``records/<run_id>.json``

Identity:
* ``spec_id(spec)``: hash of the spec's canonical dict (sorted keys, see ``to_dict``).
* ``run_id(spec, runtime)``: hash of the spec id and the runtime, so a run on another
  device (CPU, or another GPU model) or with other key package versions is another run:
  results made elsewhere are never reused silently.

Additive changes: a spec field added after records existed declares the value its absence
meant (``additive(default, implied=...)``) and is left out of the dict while it has that
value, so earlier specs keep their identity. Readers accept unknown keys (kept in ``extra``
and written back) and records of this schema version without the newer fields; records
written before ``run_id`` covered the runtime keep their stored id, and their runtime is
read from their ``environment``.

Units follow the field names (meV/atom, meV/Å, GPa, s, MB).

Example:
    >>> spec = TrainSpec(model="chgnet", family="chgnet", checkpoint="0.3.0", dataset="mlearn-Mo",
    ...                  dataset_sha256="...", strategy="finetune", freeze_k=0, e0_policy="refit",
    ...                  train_size=10, train_size_requested=1.0, seed=0, train_config=TrainConfig())
    >>> spec_from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.core import strategies
from bench.core.util import atomic_write_json, digest

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped", "diverged")
ROLES = ("curve", "lr-grid", "budget-check")
INITS = ("foundation", "random")
E0_POLICIES = {
    "refit": "least-squares per-element correction of the model's E0 on the training subset, then frozen",
    "foundation": "keep the starting model's E0 unchanged and frozen",
    "train": "E0 trains with the other unfrozen parameters",
}


class ContractError(ValueError):
    """A value that does not fit the contract (a record or job file of another shape)."""


def additive(default=None, *, implied: Any = dataclasses.MISSING):
    """A field added after records existed: omitted from ``to_dict`` while it equals
    ``implied`` (default: ``default``), the value its absence meant. ``implied`` may be a
    function of the rest of the dict (the legacy rule)."""
    meta = {"implied": default if implied is dataclasses.MISSING else implied}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _dump(value):
    if isinstance(value, Serial):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    return value


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(kind, value):
    """``value`` (from JSON) as the annotated type ``kind``: dataclasses, optionals, tuples,
    lists and dicts of them; anything else is taken as it is."""
    if value is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if any(isinstance(a, type) and issubclass(a, SpecBase) for a in options):
            return spec_from_dict(value)
        return _load(options[0], value) if len(options) == 1 else value
    if isinstance(kind, type) and issubclass(kind, Serial):
        if not isinstance(value, dict):
            raise ContractError(f"{kind.__name__}: expected an object, got {type(value).__name__}")
        return kind.from_dict(value)
    if origin is tuple:
        return tuple(_load(args[0], v) for v in value)
    if origin is list:
        return [_load(args[0], v) for v in value]
    if origin is dict and len(args) == 2:
        return {k: _load(args[1], v) for k, v in value.items()}
    return value


class Serial:
    """JSON round trip for the contract's dataclasses. Unknown keys go to ``extra`` (where
    the class has it) and are written back; ``_omit_none`` drops None-valued fields."""

    _omit_none: ClassVar[bool] = True

    def to_dict(self) -> dict:
        out, implied = {}, []
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if "implied" in f.metadata:
                implied.append((f.name, f.metadata["implied"], value))
            elif value is not None or not self._omit_none:
                out[f.name] = _dump(value)
        for name, rule, value in implied:  # after the others: a rule may read them
            meant = rule(out) if callable(rule) else rule
            if _dump(value) != _dump(meant):
                out[name] = _dump(value)
        out.update(getattr(self, "extra", {}) or {})
        return out

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise ContractError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        hints = _hints(cls)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        given = {k: _load(hints[k], v) for k, v in data.items() if k in names}
        for f in dataclasses.fields(cls):  # an absent additive field has the value its absence meant
            if f.name not in data and "implied" in f.metadata:
                rule = f.metadata["implied"]
                given[f.name] = _load(hints[f.name], rule(data) if callable(rule) else rule)
        rest = {k: v for k, v in data.items() if k not in names and k not in cls._computed()}
        if "extra" in {f.name for f in dataclasses.fields(cls)}:
            given["extra"] = rest
        try:
            return cls(**given)
        except TypeError as exc:
            raise ContractError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def _computed(cls) -> frozenset[str]:
        """Keys ``to_dict`` writes that are not fields (e.g. ``kind``)."""
        return frozenset()


# -- training settings -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Serial):
    """The shared training loop's settings (``adapters.training``), the same for every family.

    Loss = w_E·MSE(energy per atom, eV) + w_F·MSE(forces, eV/Å) + w_S·MSE(stress, GPa).
    """

    _omit_none: ClassVar[bool] = False
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    patience: int = 5
    max_time_s: float = 1800.0
    lr_min_factor: float = additive(0.05)
    weight_decay: float = additive(0.0)
    # per-atom energies (eV) weigh 100 against forces (eV/Å): measured on M3GNet fine-tuned on 37
    # mlearn-Mo structures (README, "Shared training loop"); records from before kept 1
    energy_weight: float = additive(100.0, implied=1.0)
    forces_weight: float = additive(1.0)
    stress_weight: float = additive(0.1)
    explode_factor: float = additive(1e4)
    lr_factors: dict | None = additive(None)  # block kind -> LR factor (0 freezes), as mace --lr_params_factors
    min_steps: int | None = additive(None)  # at least this many optimizer steps (more epochs on small subsets)
    eval_interval_steps: int | None = additive(None)  # validate after whole epochs at least this many steps apart

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: training needs at least 1 epoch")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.min_steps is not None and self.min_steps < 1:
            raise ValueError(f"min_steps={self.min_steps}: training needs at least 1 step")

    def budget_steps(self, n_train: int) -> int:
        """Optimizer steps for ``n_train`` structures: ``epochs`` passes, but at least ``min_steps``."""
        return max(self.epochs * math.ceil(n_train / self.batch_size), self.min_steps or 0)

    def doubled(self) -> TrainConfig:
        """The same settings with twice the budget (a convergence check)."""
        return dataclasses.replace(self, epochs=2 * self.epochs,
                                   min_steps=2 * self.min_steps if self.min_steps else None)


@dataclass(frozen=True, kw_only=True)
class LoraSettings(Serial):
    rank: int
    alpha: float


@dataclass(frozen=True, kw_only=True)
class OtherDomain(Serial):
    """Structures of another dataset: ``fraction`` replayed per training structure
    (strategy replay), or ``n_structures`` of its test set to measure forgetting on."""

    dataset: str
    sha256: str
    fraction: float | None = None
    n_structures: int | None = None


# -- specs --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SpecBase(Serial):
    """Fields every run kind has: which model, on which data."""

    _omit_none: ClassVar[bool] = False
    kind: ClassVar[str]
    schema_version: int = SCHEMA_VERSION
    model: str
    family: str
    checkpoint: str
    dataset: str
    dataset_sha256: str
    # a user's own data: choices that change its labels or test set (absent for catalog data)
    labels: dict[str, str] | None = additive(None)  # keys / stress unit other than the defaults (datasets.keys)
    test_sha256: str | None = additive(None)  # the user's own test file (--test-file)
    test_size: int | None = additive(None)  # the test set capped to at most this many frames (--test-size)
    periodicity: str | None = additive(None)  # frames open along an axis: the rule that closed them
    extra: dict = field(default_factory=dict, compare=False)  # fields of a newer ftbench, kept

    def to_dict(self) -> dict:
        return {"kind": self.kind, **super().to_dict()}

    @classmethod
    def _computed(cls) -> frozenset[str]:
        return frozenset({"kind"})

    @functools.cached_property
    def spec_id(self) -> str:
        return digest(self.to_dict())

    @property
    def what(self) -> str:
        """The strategy, or what kind of job this is (for tables and progress lines)."""
        raise NotImplementedError

    @property
    def needs_foundation(self) -> bool:
        """Whether the run cannot happen without the foundation's weights."""
        return True

    @property
    def label(self) -> str:
        """One line naming the run, e.g. ``chgnet freeze-interactions n=2 seed=0``."""
        return f"{self.model} {self.what}"


@dataclass(frozen=True, kw_only=True)
class TrainSpec(SpecBase):
    """A point of a learning curve: a strategy's flags on a training subset of one seed."""

    kind: ClassVar[str] = "train"
    strategy: str  # display name; the flags below say what it does
    freeze_k: int | None  # first k blocks frozen; None: no gradient steps
    e0_policy: str
    train_size: int
    train_size_requested: float
    seed: int
    train_config: TrainConfig | None
    init: str = additive("foundation", implied=lambda d: strategies.legacy_init(d.get("strategy", "")))
    pool_size: int | None = additive(None)
    train_fraction: float | None = additive(None)
    val_fraction: float | None = additive(None)
    val_size: int | None = additive(None)
    n_val: int | None = additive(None)
    lora: LoraSettings | None = additive(None)
    replay: OtherDomain | None = additive(None)
    forgetting: OtherDomain | None = additive(None)
    role: str = additive("curve")  # curve | lr-grid (a learning-rate candidate) | budget-check
    check_of: str | None = additive(None)  # budget-check: the spec id of the run with half this budget

    def __post_init__(self):
        if self.init not in INITS:
            raise ContractError(f"init {self.init!r} not in {INITS}")
        if self.e0_policy not in E0_POLICIES:
            raise ContractError(f"e0_policy {self.e0_policy!r} not in {sorted(E0_POLICIES)}")
        if self.role not in ROLES:
            raise ContractError(f"role {self.role!r} not in {ROLES}")

    @property
    def trains(self) -> bool:
        """Takes gradient steps (zero-shot does not)."""
        return self.freeze_k is not None

    @property
    def from_foundation(self) -> bool:
        return self.init == "foundation"

    @property
    def needs_foundation(self) -> bool:
        return self.from_foundation

    @property
    def is_reference(self) -> bool:
        """Trained from random weights with nothing frozen: the scratch baseline."""
        return self.init == "random" and self.trains

    @property
    def is_full_finetune(self) -> bool:
        """From the foundation, every block training at one LR, nothing added: what other
        strategies' step times are compared with."""
        return (self.from_foundation and self.freeze_k == 0 and self.lora is None and self.replay is None
                and not (self.train_config and self.train_config.lr_factors))

    @property
    def sized(self) -> bool:
        """Depends on a training subset: it trains, or fits its reference energies on it."""
        return self.trains or self.e0_policy == "refit"

    @property
    def what(self) -> str:
        return self.strategy

    @property
    def label(self) -> str:
        size = f" n={self.train_size} seed={self.seed}" if self.sized else ""
        role = {"lr-grid": f" (lr {self.train_config.lr:g} candidate)" if self.train_config else "",
                "budget-check": " (2x budget check)"}.get(self.role, "")
        return f"{self.model} {self.strategy}{size}{role}"

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        config = data.get("train_config") or {}
        if data.get("lr_factors") is not None and data["lr_factors"] == config.get("lr_factors"):
            del data["lr_factors"]  # written twice before (spec and train_config): once now
        return super().from_dict(data)


@dataclass(frozen=True, kw_only=True)
class PerfSpec(SpecBase):
    """A model's timing job: batched predict vs the library's ASE calculator."""

    kind: ClassVar[str] = "perf"
    n_structures: int
    batch_sizes: tuple[int, ...] = additive(())  # predict throughput at each of these batch sizes too
    train_steps: int = additive(0)  # the shared loop's step time vs a minimal loop, over this many steps

    @property
    def what(self) -> str:
        return "timing job"

    @property
    def needs_foundation(self) -> bool:
        return False  # timings do not depend on the weights: a random init of the architecture will do

    @property
    def label(self) -> str:
        return f"{self.model} timing ({self.n_structures} structures)"


@dataclass(frozen=True, kw_only=True)
class SurrogateSpec(SpecBase):
    """Distillation: a teacher fine-tuned on the whole pool labels structures for a small
    student of its family trained from scratch (``student``: architecture, epochs, lr;
    ``rattle``: copies, stdev_ang, strain; ``md``: structures, steps, every, temperature_k)."""

    kind: ClassVar[str] = "surrogate"
    teacher_strategy: str
    freeze_k: int
    e0_policy: str
    train_size: int
    pool_size: int
    seed: int
    n_val: int
    train_config: TrainConfig
    student: dict
    rattle: dict
    md: dict
    speed_structures: int

    @property
    def what(self) -> str:
        return f"surrogate (teacher: {self.teacher_strategy})"

    @property
    def label(self) -> str:
        return f"{self.model} surrogate ({self.teacher_strategy} teacher n={self.train_size} -> small student)"


@dataclass(frozen=True, kw_only=True)
class MDSpec(SpecBase):
    """MD stability of a saved model (``adapters.md``): from a test cell, Langevin dynamics at
    each temperature followed by an NVE segment, and a homonuclear dimer curve per element.

    The model is the saved file of run ``model_run`` and its sha256 is part of the identity:
    the same run trained again (another file) is another MD run. ``strategy``, ``train_size``
    and ``seed`` repeat that run's, for tables. ``criteria``: what counts as blowing up or
    drifting; ``dimer``: the dimer grid (both: ``bench.config.MD_DEFAULTS``)."""

    kind: ClassVar[str] = "md"
    model_run: str
    model_sha256: str
    strategy: str
    train_size: int
    seed: int
    cell_group: str  # start from the test frame of this group with the lowest energy per atom
    temperatures_k: tuple[float, ...]
    timestep_fs: float
    langevin_ps: float
    nve_ps: float
    friction_per_fs: float
    criteria: dict
    dimer: dict

    @property
    def what(self) -> str:
        return "MD stability"

    @property
    def needs_foundation(self) -> bool:
        return False  # the saved model is all it needs

    @property
    def label(self) -> str:
        return f"{self.model} MD stability of {self.strategy} n={self.train_size} seed={self.seed}"


Spec = TrainSpec | PerfSpec | SurrogateSpec | MDSpec
SPEC_KINDS: dict[str, type[SpecBase]] = {c.kind: c for c in (TrainSpec, PerfSpec, SurrogateSpec, MDSpec)}


def spec_from_dict(data: dict) -> Spec:
    if not isinstance(data, dict):
        raise ContractError(f"spec: expected an object, got {type(data).__name__}")
    kind = data.get("kind", "train")
    if kind not in SPEC_KINDS:
        raise ContractError(f"spec kind {kind!r} unknown; known: {', '.join(SPEC_KINDS)}")
    return SPEC_KINDS[kind].from_dict(data)


# -- where a run runs -------------------------------------------------------------------------

UNKNOWN_DEVICE = "unknown"
COMMON_PACKAGES = ("numpy", "ase")  # recorded in every environment, not part of a runtime


@dataclass(frozen=True, kw_only=True)
class Runtime(Serial):
    """What changes a run's results or timings beyond its spec: the device kind (``cpu``,
    ``cuda:<GPU model>``, or ``unknown`` when the environment could not be probed) and the
    environment's key package versions (torch, e3nn, the family's libraries)."""

    _omit_none: ClassVar[bool] = False
    device: str
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @classmethod
    def of_environment(cls, env: Environment | None) -> Runtime:
        """The runtime a worker's recorded environment implies (records written before
        runtimes were stored)."""
        if env is None:
            return cls(device=UNKNOWN_DEVICE)
        device = env.device or UNKNOWN_DEVICE
        if device.startswith("cuda"):
            device = f"cuda:{env.gpu}" if env.gpu else "cuda"
        packages = {k: v for k, v in env.packages.items() if k not in COMMON_PACKAGES}
        return cls(device=device, packages=packages)


def run_id(spec: SpecBase, runtime: Runtime) -> str:
    return digest({"spec_id": spec.spec_id, "runtime": runtime.to_dict()})


# -- jobs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DataFiles(Serial):
    """extxyz files written by the orchestrator, and indices into the pool."""

    pool: str
    test: str
    train: tuple[int, ...] = ()
    val: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class JobPaths(Serial):
    result: str
    progress: str
    log: str
    predictions: str


@dataclass(frozen=True, kw_only=True)
class DerivedRun(Serial):
    """A run answered by another run's predictions: the foundation with only its reference
    energies refit on ``train`` (indices into the pool) is the zero-shot model's test
    predictions plus a per-element energy shift, so no job of its own is needed."""

    spec: Spec
    run_id: str
    train: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class Job(Serial):
    """One run as its worker sees it. ``device`` is resolved (cpu, cuda, cuda:N);
    ``other``: the other domain's files (``train``: its replayed pool indices)."""

    spec: Spec
    run_id: str
    runtime: Runtime
    adapter: str  # "module:Class", imported by the worker
    packages: tuple[str, ...]  # versions recorded in the environment
    data: DataFiles
    other: DataFiles | None = None
    properties: dict | None = None  # the catalog's property definitions, where wanted
    device: str = "cpu"
    threads: int = 1
    paths: JobPaths
    derived: tuple[DerivedRun, ...] = ()  # runs an untrained model's predictions answer too
    save_model_to: str | None = None  # a trained model: export it natively into this folder
    model_file: str | None = None  # an MD job: the saved model it loads with its library's loader

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> Job:
        return cls.from_dict(json.loads(Path(path).read_text()))


# -- results and records ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Metrics(Serial):
    """Test-set errors: energy per atom, force components, Voigt stress components (null
    where the labels have none)."""

    _omit_none: ClassVar[bool] = False
    energy_rmse_mev_per_atom: float | None = None
    energy_mae_mev_per_atom: float | None = None
    forces_rmse_mev_per_ang: float | None = None
    forces_mae_mev_per_ang: float | None = None
    stress_rmse_gpa: float | None = None
    n_structures: int = 0
    n_atoms: int = 0
    per_group: dict[str, Metrics] | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def value(self, name: str) -> float | None:
        """A metric by its field name (``bench.core.metrics.METRICS``)."""
        return getattr(self, name, None)


@dataclass(frozen=True, kw_only=True)
class EpochRow(Serial):
    """One epoch of the training curve; epoch 0 is the starting model."""

    _omit_none: ClassVar[bool] = False
    epoch: int
    train_loss: float | None = None
    val_energy_rmse_mev_per_atom: float | None = None
    val_forces_rmse_mev_per_ang: float | None = None
    val_stress_rmse_gpa: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    elapsed_s: float | None = None
    epoch_s: float | None = None
    data_s: float | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Timing(Serial):
    """Wall times (s), throughputs and memory of a run; each kind fills its own part.

    Training (``adapters.training.History``): ``featurize_s``, ``train_s``, ``s_per_epoch``,
    ``step_s_per_structure`` (forward + backward + step per training structure),
    ``step_time_median_s`` (these three at steady state: without the run's first step,
    recorded as ``warmup_step_s``), ``best_epoch``, ``stopped``, ``uses_stress``,
    ``data_fraction_after_epoch1``. Timing jobs (``adapters.perf``): ``*_s_per_structure``,
    ``speedup_vs_ase_calculator``, ``*_atoms_per_s`` and the agreement ``max_*_diff_*``.
    ``reference_workload_s``: a fixed torch workload timed by the same worker, so timings
    compare as ratios across machines.
    """

    load_s: float | None = None
    featurize_s: float | None = None
    train_s: float | None = None
    s_per_epoch: float | None = None
    step_time_median_s: float | None = None
    step_s_per_structure: float | None = None
    warmup_step_s: float | None = None
    best_epoch: int | None = None
    stopped: str | None = None
    uses_stress: bool | None = None
    data_fraction_after_epoch1: float | None = None
    test_predict_s: float | None = None
    properties_s: float | None = None
    peak_rss_mb: float | None = None
    reference_workload_s: float | None = None
    inference_atoms_per_s: float | None = None
    student_s_per_epoch: float | None = None
    n_structures: int | None = None
    n_atoms: int | None = None
    predict_batch_size: int | None = None
    repeats: int | None = None
    featurize_s_per_structure: float | None = None
    predict_s_per_structure: float | None = None
    predict_featurized_s_per_structure: float | None = None
    ase_calculator_s_per_structure: float | None = None
    speedup_vs_ase_calculator: float | None = None
    predict_atoms_per_s: float | None = None
    ase_calculator_atoms_per_s: float | None = None
    max_energy_diff_mev_per_atom: float | None = None
    max_force_diff_mev_per_ang: float | None = None
    max_stress_diff_gpa: float | None = None
    predict_atoms_per_s_by_batch: dict[str, float] | None = None  # batch size -> atoms/s (featurized)
    loop_step_s_per_structure: float | None = None  # the shared loop's training step...
    minimal_step_s_per_structure: float | None = None  # ...and a minimal loop's, same loss terms and batches
    peak_gpu_memory_mb: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def value(self, name: str) -> float | None:
        return getattr(self, name, None)


@dataclass(frozen=True, kw_only=True)
class Environment(Serial):
    """Where the worker ran, as it saw it."""

    packages: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    executable: str | None = None  # the interpreter (a --python one shows here)
    threads: int | None = None
    device: str | None = None
    cpu: str | None = None
    dtype: str | None = None
    cuda: str | None = None
    gpu: str | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Parameters(Serial):
    trainable: int
    total: int


@dataclass(frozen=True, kw_only=True)
class BlockSize(Serial):
    name: str
    kind: str
    n_params: int


@dataclass(frozen=True, kw_only=True)
class Forgetting(Serial):
    """After training, on held-out structures of another domain: drift from the
    foundation's own predictions, and the DFT error before (foundation) and after."""

    dataset: str | None = None
    n_structures: int | None = None
    drift_energy_rmse_mev_per_atom: float | None = None
    drift_forces_rmse_mev_per_ang: float | None = None
    dft_before: dict | None = None  # energy_rmse_mev_per_atom, forces_rmse_mev_per_ang
    dft_after: dict | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Convergence(Serial):
    """Why training stopped and whether it had converged (``adapters.training.History``).

    ``plateau``: early stopping fired while the learning rate was still at least a fifth of
    its peak (not in the flat tail of its decay); ``val_forces_trend_pct_per_epoch``: the
    validation force RMSE's change per epoch over the last quarter of the evaluations
    (negative: still falling)."""

    stopped: str
    epochs_run: int = 0
    steps_run: int = 0
    best_epoch: int | None = None
    lr_peak: float | None = None
    lr_at_stop: float | None = None
    lr_fraction_at_stop: float | None = None
    val_forces_best_mev_per_ang: float | None = None
    val_forces_trend_pct_per_epoch: float | None = None
    plateau: bool = False
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class DerivedResult(Serial):
    metrics: Metrics
    reference_energies_ev: dict[str, float] | None = None


@dataclass(frozen=True, kw_only=True)
class Payload(Serial):
    """What a run produced; shared by the worker's Result and the stored Record.

    ``properties``: per property (elastic, mixing, relaxation) the model's and DFT's values
    (``adapters.properties``); ``surrogate``: teacher, student, foundation and speed of a
    distillation job; ``lora``: rank, alpha, adapted matrices and the merge's largest energy
    change; ``md``: an MD job's stability runs and dimer curves. Unknown keys are kept in ``extra``.
    """

    _omit_none: ClassVar[bool] = True
    status: str
    reason: str | None = None
    traceback: str | None = None
    metrics: Metrics | None = None
    curve: tuple[EpochRow, ...] | None = None
    timing: Timing | None = None
    parameters: Parameters | None = None
    blocks: tuple[BlockSize, ...] | None = None
    environment: Environment | None = None
    lora: dict | None = None
    forgetting: Forgetting | None = None
    properties: dict | None = None
    properties_error: str | None = None
    reference_energies_ev: dict[str, float] | None = None
    resolved_train_config: dict | None = None
    replay_structures: int | None = None
    model_source: str | None = None
    surrogate: dict | None = None
    md: dict | None = None  # MD jobs: per temperature and the dimer curves (adapters.md)
    diverged_epoch: int | None = None
    convergence: Convergence | None = None
    accelerator: str | None = None  # on a GPU: the accelerated kernels used ("cuequivariance"), or "none"
    wall_s: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ContractError(f"status {self.status!r} not in {STATUSES}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"reason": self.reason, **super().to_dict()}  # reason: null, never absent


@dataclass(frozen=True, kw_only=True)
class Result(Payload):
    """What a worker writes. ``skip_scope`` (``model`` or ``checkpoint``) tells the
    orchestrator which other runs the same skip applies to; it is not stored. ``model``: the
    saved model, which the orchestrator stores as the record's ``artefacts.model``."""

    skip_scope: str | None = None
    derived: dict[str, DerivedResult] | None = None  # by run id, for the job's derived runs
    model: ModelArtefact | None = None  # the export the job asked for (path absolute); the record's artefact

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> Result:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True, kw_only=True)
class ModelArtefact(Serial):
    """A trained model saved in its library's native format (``adapters.base.Adapter.export``):
    ``format`` names it (``mace-model``, ``sevenn-checkpoint``, ``chgnet-file``,
    ``matgl-directory``); ``path`` is relative to the results directory (a file, or a
    directory for matgl), ``sha256`` covers its bytes (a directory: every file, by name).
    ``error``: the export failed and the run was kept; ``pruned``: removed after the sweep,
    and why (``--save-models best`` keeps the best run per model only)."""

    format: str
    path: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    export_s: float | None = None
    error: str | None = None
    pruned: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def available(self) -> bool:
        return self.path is not None and self.error is None and self.pruned is None


@dataclass(frozen=True, kw_only=True)
class Artefacts(Serial):
    """Files of a run, relative to the results directory."""

    log: str | None = None
    predictions: str | None = None
    model: ModelArtefact | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Provenance(Serial):
    ftbench_version: str | None = None
    commit: str | None = None
    dirty: bool | None = None
    hostname: str | None = None
    machine: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Record(Payload):
    """One stored run (``records/<run_id>.json``)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    spec: Spec
    runtime: Runtime
    artefacts: Artefacts | None = None
    provenance: Provenance | None = None
    log_tail: str | None = None

    @property
    def spec_id(self) -> str:
        return self.spec.spec_id

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        if not isinstance(data, dict):
            raise ContractError(f"record: expected an object, got {type(data).__name__}")
        missing = sorted({"run_id", "spec", "status"} - set(data))
        if missing:
            raise ContractError(f"record lacks {missing}")
        if "runtime" not in data:  # written before records stored their runtime
            env = data.get("environment")
            data = {**data, "runtime": Runtime.of_environment(
                Environment.from_dict(env) if isinstance(env, dict) else None).to_dict()}
        return super().from_dict(data)

    @classmethod
    def _computed(cls) -> frozenset[str]:
        return frozenset({"spec_id"})

    def to_dict(self) -> dict:
        return {**super().to_dict(), "spec_id": self.spec_id}

    @classmethod
    def of(cls, result: Result, *, spec: Spec, runtime: Runtime, rid: str, **fields) -> Record:
        """The record of a worker's result (``skip_scope`` is the orchestrator's business)."""
        payload = {f.name: getattr(result, f.name) for f in dataclasses.fields(Payload)}
        return cls(**{**payload, **fields}, spec=spec, runtime=runtime, run_id=rid)
