"""Sweep settings: the embedded default and how CLI flags override it.

The default (``quick``) is sized for a 2-core CPU and all four families: the small
``mlearn-Mo`` dataset, 5 and 15 training structures, one seed, 4 epochs, 10 validation
structures. It shows the pipeline and the trends; bigger studies pass their own flags.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

DEFAULT_STRATEGIES = ("zero-shot", "scratch", "finetune", "freeze-embedding", "freeze-interactions")
E0_POLICIES = {
    "refit": "least-squares per-element correction of the model's E0 on the training subset, then frozen",
    "foundation": "keep the starting model's E0 unchanged and frozen",
    "train": "E0 trains with the other unfrozen parameters",
}


@dataclass(frozen=True)
class SweepConfig:
    models: str = "all"
    dataset: str = "mlearn-Mo"
    sizes: tuple[float, ...] = (5, 15)
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    seeds: tuple[int, ...] = (0,)
    epochs: int = 4
    batch_size: int = 4
    lr: float = 1e-3
    patience: int = 5
    e0_policy: str = "refit"
    val_fraction: float = 0.05
    checkpoint: str | None = None
    device: str = "cpu"
    threads: int = 0  # 0: all cores of this machine
    run_timeout_s: float = 3600.0
    max_train_time_s: float = 1800.0
    out: str = "reports/default"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: training needs at least 1 epoch")
        if self.e0_policy not in E0_POLICIES:
            raise ValueError(f"--e0 {self.e0_policy!r} not in {sorted(E0_POLICIES)}")
        if not self.seeds:
            raise ValueError("--seeds: at least one seed is needed")
        if not self.sizes and any(s != "zero-shot" for s in self.strategies):
            raise ValueError("--sizes: at least one training size is needed")

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

    def train_config(self) -> dict:
        """The shared training loop's settings (adapters.training.TrainConfig fields)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "patience": self.patience, "max_time_s": self.max_train_time_s}

    def override(self, **given) -> SweepConfig:
        """Replace only the settings that were actually given (None means not given)."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in given.items() if v is not None and k in names})
