"""The one training loop every family uses, so comparisons differ only in the model.

Loss = w_E·MSE(energy per atom, eV) + w_F·MSE(forces, eV/Å) + w_S·MSE(stress, GPa), AdamW
over the trainable parameters only (``lr_factors`` scales the LR per block kind: a soft
freeze), cosine LR decay to ``lr_min_factor``·lr, early stopping
on the validation loss (best weights restored), max epochs and max wall time, float32,
seeded. Graphs are built once before the first epoch and reused.

Example:
    >>> history = train(adapter, train_frames, val_frames, TrainConfig(epochs=5))
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import units

from bench.core.contract import TrainConfig
from datasets.labels import has_stress, stress_counts

__all__ = ["Diverged", "History", "TrainConfig", "refit_reference_energies", "train"]

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ase import Atoms

    from adapters.base import Adapter


class Diverged(RuntimeError):
    """The loss became NaN/inf or exploded; ``epoch`` says when."""

    def __init__(self, epoch: int, loss: float):
        super().__init__(f"loss diverged at epoch {epoch} (loss={loss})")
        self.epoch = epoch


@dataclass
class History:
    """What training learned and how long it took (all JSON-serialisable). ``epochs``: one
    row per evaluation round (epoch 0: the starting model); ``epoch`` counts epochs done."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "budget"  # budget | early_stopping | max_time
    featurize_s: float = 0.0
    train_s: float = 0.0
    steps: int = 0
    step_times_s: list[float] = field(default_factory=list)
    step_sizes: list[int] = field(default_factory=list)  # structures in each step's batch
    uses_stress: bool = False

    def as_dict(self) -> dict:
        """The recorded timings. The first optimizer step of a run is its warm-up (lazy
        initialisation, the optimizer's state, the allocator's first pages: the epoch that
        held it took 1.96 s in one idle run of CHGNet from scratch on 3 structures and
        7.26 s in the next); it is recorded as ``warmup_step_s`` and left out of the
        steady-state figures, which are what a longer run costs per step."""
        d = asdict(self)
        times, sizes = d.pop("step_times_s"), d.pop("step_sizes")
        d.pop("steps")
        steady = slice(1, None) if len(times) > 1 else slice(None)
        times_steady, n_steady = times[steady], sum(sizes[steady])
        d["warmup_step_s"] = times[0] if times else None
        d["step_time_median_s"] = float(np.median(times_steady)) if times else None
        # forward + backward + optimizer step per training structure: comparable across
        # batch sizes and subset sizes (a last, smaller batch skews the median)
        d["step_s_per_structure"] = float(np.sum(times_steady)) / n_steady if n_steady else None
        warmup_excess = times[0] - d["step_time_median_s"] if len(times) > 1 else 0.0
        epochs = max(1, self.epochs[-1]["epoch"] if self.epochs else 1)
        d["s_per_epoch"] = (self.train_s - max(0.0, warmup_excess)) / epochs
        return d

    def convergence(self) -> dict:
        """Why training stopped and whether it had converged (``bench.core.contract.Convergence``).

        ``plateau``: early stopping fired while the learning rate was still at least
        PLATEAU_LR_FRACTION of its peak, i.e. the validation loss stopped improving at a
        learning rate that could still move it, not in the flat tail of the decay.
        ``val_forces_trend_pct_per_epoch``: the validation force RMSE's change per epoch over
        the last quarter of the rounds (at least 3): negative while it is still falling.
        """
        rows = self.epochs[1:]
        if not rows:
            return {"stopped": self.stopped, "epochs_run": 0, "steps_run": 0, "plateau": False}
        peak = max(r["lr"] for r in rows)
        tail = [r for r in rows[-max(3, math.ceil(len(rows) / 4)):] if r["val_forces_rmse_mev_per_ang"]]
        trend = None
        if len(tail) >= 2 and tail[-1]["epoch"] > tail[0]["epoch"]:
            slope = np.polyfit([r["epoch"] for r in tail],
                               np.log([r["val_forces_rmse_mev_per_ang"] for r in tail]), 1)[0]
            trend = 100 * math.expm1(slope)
        best = next((r for r in self.epochs if r["epoch"] == self.best_epoch), rows[-1])
        fraction = rows[-1]["lr"] / peak if peak else None
        return {"stopped": self.stopped, "epochs_run": rows[-1]["epoch"], "steps_run": self.steps,
                "best_epoch": self.best_epoch, "lr_peak": peak, "lr_at_stop": rows[-1]["lr"],
                "lr_fraction_at_stop": fraction,
                "val_forces_best_mev_per_ang": best["val_forces_rmse_mev_per_ang"],
                "val_forces_trend_pct_per_epoch": trend,
                "plateau": self.stopped == "early_stopping" and (fraction or 0) >= PLATEAU_LR_FRACTION}


PLATEAU_LR_FRACTION = 0.2


@dataclass
class _Target:
    """A training structure: its graph and labels, all on the adapter's device."""

    graph: object
    energy: torch.Tensor  # 0-d, eV
    n_atoms: torch.Tensor  # 0-d
    forces: torch.Tensor  # [n, 3] eV/Å
    stress: torch.Tensor | None  # [3, 3] eV/Å³, ASE sign; None: no stress that counts (datasets.labels)


def _targets(adapter: Adapter, frames: Sequence[Atoms], with_stress: bool) -> list[_Target]:
    out = []
    for a in frames:
        res = a.calc.results
        stress = None
        if with_stress and stress_counts(a):
            xx, yy, zz, yz, xz, xy = np.asarray(res["stress"])
            stress = adapter.tensor([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        out.append(_Target(adapter.featurize(a), adapter.tensor(res["energy"]), adapter.tensor(len(a)),
                           adapter.tensor(res["forces"]), stress))
    return out


def _residuals(out: dict[str, torch.Tensor], batch: list[_Target], with_stress: bool) -> dict[str, torch.Tensor]:
    """Energy-per-atom (eV), force (eV/Å) and stress (GPa) errors of a batch's model output,
    on the output's device (where the targets already are); stress only of the structures
    whose stress counts (none: no stress term)."""
    errors = {"e": (out["energy"] - torch.stack([t.energy for t in batch])) / torch.stack([t.n_atoms for t in batch]),
              "f": out["forces"] - torch.cat([t.forces for t in batch])}
    keep = [i for i, t in enumerate(batch) if t.stress is not None] if with_stress else []
    if keep:
        predicted = out["stress"] if len(keep) == len(batch) else out["stress"][keep]
        errors["s"] = (predicted - torch.stack([batch[i].stress for i in keep])) / units.GPa
    return errors


def _errors(adapter: Adapter, batch: list[_Target], with_stress: bool, collated=None) -> dict[str, torch.Tensor]:
    if collated is None:
        collated = adapter.collate([t.graph for t in batch])
    return _residuals(adapter.forward_batch(collated, stress=with_stress), batch, with_stress)


def _weights(cfg: TrainConfig) -> dict[str, float]:
    return {"e": cfg.energy_weight, "f": cfg.forces_weight, "s": cfg.stress_weight}


def _loss(adapter: Adapter, batch: list[_Target], cfg: TrainConfig, with_stress: bool,
          collated=None) -> torch.Tensor:
    weights = _weights(cfg)
    return sum(weights[k] * (err**2).mean() for k, err in _errors(adapter, batch, with_stress, collated).items())


def _evaluate(adapter: Adapter, data: list[_Target], cfg: TrainConfig, with_stress: bool) -> dict:
    """Validation RMSEs and loss; sums stay on the device until the one transfer at the end."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    step = adapter.inference_batch_size
    with adapter.no_parameter_grads():
        for start in range(0, len(data), step):
            for k, err in _errors(adapter, data[start : start + step], with_stress).items():
                err = err.detach()
                sums[k] = sums[k] + (err**2).sum() if k in sums else (err**2).sum()
                counts[k] = counts.get(k, 0) + err.numel()
    mse = {k: v / counts[k] for k, v in zip(sums, torch.stack(list(sums.values())).cpu().tolist(), strict=True)}
    metrics = {"val_energy_rmse_mev_per_atom": 1000 * math.sqrt(mse["e"]),
               "val_forces_rmse_mev_per_ang": 1000 * math.sqrt(mse["f"])}
    if with_stress and "s" in mse:
        metrics["val_stress_rmse_gpa"] = math.sqrt(mse["s"])
    weights = _weights(cfg)
    metrics["val_loss"] = sum(weights[k] * v for k, v in mse.items())
    return metrics


def e0_shift(frames: Sequence[Atoms], predicted_energy: np.ndarray) -> dict[int, float]:
    """The per-element energy shift (eV per atom of each element) that best corrects the
    predicted total energies of ``frames`` to their labels, by least squares."""
    numbers = sorted({int(z) for a in frames for z in a.numbers})
    counts = np.array([[np.count_nonzero(a.numbers == z) for z in numbers] for a in frames], float)
    residual = np.array([a.calc.results["energy"] for a in frames]) - np.asarray(predicted_energy)
    shift, *_ = np.linalg.lstsq(counts, residual, rcond=None)
    return {z: float(s) for z, s in zip(numbers, shift, strict=True)}


def refit_reference_energies(adapter: Adapter, frames: Sequence[Atoms]) -> dict[int, float]:
    """Least-squares per-element shift of the model's residual, folded into its references.

    Works the same for a foundation (corrects its E0 to this DFT setup) and a scratch
    model (fits E0 from the data). Returns the new references for the elements present.
    """
    shift = e0_shift(frames, adapter.predict(frames, stress=False).energy)
    old = adapter.reference_energies()
    new = {z: old[z] + s for z, s in shift.items()}
    adapter.set_reference_energies(new)
    return new


def _param_groups(adapter: Adapter, cfg: TrainConfig) -> list[dict]:
    """Trainable parameters as optimizer groups: one group, or one per LR factor of the
    parameters' block kinds; a factor 0 freezes (as mace-torch does)."""
    params = [(name, p) for name, p in adapter.model_.named_parameters() if p.requires_grad]
    if not cfg.lr_factors:
        return [{"params": [p for _, p in params]}] if params else []
    kinds = [(prefixes, kind) for _, kind, prefixes in adapter.block_layout()]
    by_factor: dict[float, list] = {}
    for name, p in params:
        kind = next((k for prefixes, k in kinds if name.startswith(prefixes)), "readout")
        factor = float(cfg.lr_factors.get(kind, 1.0))
        if factor == 0:
            p.requires_grad_(False)
        else:
            by_factor.setdefault(factor, []).append(p)
    return [{"params": ps, "lr": cfg.lr * f} for f, ps in sorted(by_factor.items())]


@dataclass(frozen=True)
class _Budget:
    """The step budget as evaluation rounds: each round is ``epochs_per_round`` whole epochs
    (validation after each round; at least ``eval_interval_steps`` steps apart), the LR
    decays per round and early stopping counts rounds."""

    steps_per_epoch: int
    epochs_per_round: int
    total_steps: int

    @classmethod
    def of(cls, cfg: TrainConfig, n_train: int) -> _Budget:
        per_epoch = math.ceil(n_train / cfg.batch_size)
        per_round = max(1, math.ceil((cfg.eval_interval_steps or 0) / per_epoch))
        return cls(per_epoch, per_round, cfg.budget_steps(n_train))

    @property
    def rounds(self) -> int:
        return math.ceil(self.total_steps / (self.steps_per_epoch * self.epochs_per_round))


def train(adapter: Adapter, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
          cfg: TrainConfig, *, on_epoch: Callable[[dict], None] | None = None) -> History:
    """Train ``adapter.model_`` in place for the configured budget (``epochs``, at least
    ``min_steps`` optimizer steps); returns the history. Raises Diverged."""
    torch.manual_seed(adapter.seed)
    rng = np.random.default_rng(adapter.seed)
    with_stress = cfg.stress_weight > 0 and has_stress([*train_frames, *val_frames])
    hist = History(uses_stress=with_stress)
    t0 = time.perf_counter()
    train_data = _targets(adapter, train_frames, with_stress)
    val_data = _targets(adapter, val_frames, with_stress)
    hist.featurize_s = time.perf_counter() - t0

    groups = _param_groups(adapter, cfg)
    if not groups:
        raise ValueError("no trainable parameters: every block is frozen")
    budget = _Budget.of(cfg, len(train_data))
    rounds = budget.rounds
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    m = cfg.lr_min_factor  # cosine from each group's LR down to m times it
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda r: m + (1 - m) * (1 + math.cos(math.pi * min(r, rounds) / rounds)) / 2)
    best_loss, best_state, since_best = math.inf, None, 0
    initial = _evaluate(adapter, val_data, cfg, with_stress)  # epoch 0: the starting model
    hist.epochs.append({"epoch": 0, "step": 0, "train_loss": None, **initial, "lr": cfg.lr,
                        "elapsed_s": 0.0, "epoch_s": 0.0, "data_s": 0.0})
    t_start, epochs_done = time.perf_counter(), 0
    for _ in range(rounds):
        adapter.model_.train(True)
        t_round, data_s, losses = time.perf_counter(), 0.0, []
        lr = max(g["lr"] for g in opt.param_groups)
        for _ in range(budget.epochs_per_round):
            if hist.steps >= budget.total_steps:
                break
            epochs_done += 1
            perm = rng.permutation(len(train_data))
            for start in range(0, len(perm), cfg.batch_size):
                if hist.steps >= budget.total_steps:
                    break
                t_data = time.perf_counter()
                batch = [train_data[i] for i in perm[start : start + cfg.batch_size]]
                collated = adapter.collate([t.graph for t in batch])
                data_s += time.perf_counter() - t_data
                t_step = time.perf_counter()
                loss = _loss(adapter, batch, cfg, with_stress, collated)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = loss.item()  # the one host synchronisation per step
                hist.step_times_s.append(time.perf_counter() - t_step)
                hist.step_sizes.append(len(batch))
                hist.steps += 1
                if not math.isfinite(value):
                    raise Diverged(epochs_done, value)
                losses.append(value)
        sched.step()
        adapter.model_.train(False)
        val = _evaluate(adapter, val_data, cfg, with_stress)
        if not math.isfinite(val["val_loss"]) or val["val_loss"] > cfg.explode_factor * initial["val_loss"]:
            raise Diverged(epochs_done, val["val_loss"])
        row = {"epoch": epochs_done, "step": hist.steps, "train_loss": float(np.mean(losses)), **val, "lr": lr,
               "elapsed_s": time.perf_counter() - t_start, "epoch_s": time.perf_counter() - t_round, "data_s": data_s}
        hist.epochs.append(row)
        if on_epoch:
            on_epoch(row)
        if val["val_loss"] < best_loss:
            best_loss, since_best, hist.best_epoch = val["val_loss"], 0, epochs_done
            best_state = copy.deepcopy(adapter.model_.state_dict())
        else:
            since_best += 1
        if since_best >= cfg.patience:
            hist.stopped = "early_stopping"
            break
        if time.perf_counter() - t_start > cfg.max_time_s:
            hist.stopped = "max_time"
            break
    else:
        hist.stopped = "budget"
    hist.train_s = time.perf_counter() - t_start
    if best_state is not None:
        adapter.model_.load_state_dict(best_state)
    return hist
