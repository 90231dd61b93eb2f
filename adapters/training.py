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
from datasets.labels import has_stress

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
    """What training learned and how long it took (all JSON-serialisable)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "max_epochs"
    featurize_s: float = 0.0
    train_s: float = 0.0
    step_times_s: list[float] = field(default_factory=list)
    step_structures: int = 0
    uses_stress: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        steps, n = d.pop("step_times_s"), d.pop("step_structures")
        d["step_time_median_s"] = float(np.median(steps)) if steps else None
        # forward + backward + optimizer step per training structure: comparable across
        # batch sizes and subset sizes (a last, smaller batch skews the median)
        d["step_s_per_structure"] = float(np.sum(steps)) / n if n else None
        d["s_per_epoch"] = self.train_s / max(1, len(self.epochs) - 1)  # epoch 0 is not trained
        return d


@dataclass
class _Target:
    graph: object
    energy: float
    n_atoms: int
    forces: torch.Tensor
    stress: torch.Tensor | None


def _targets(adapter: Adapter, frames: Sequence[Atoms], with_stress: bool) -> list[_Target]:
    out = []
    for a in frames:
        res = a.calc.results
        stress = None
        if with_stress:
            voigt = np.asarray(res["stress"])
            xx, yy, zz, yz, xz, xy = voigt
            stress = torch.tensor([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=torch.float32)
        out.append(_Target(adapter.featurize(a), float(res["energy"]), len(a),
                           torch.tensor(np.asarray(res["forces"]), dtype=torch.float32), stress))
    return out


def _loss(adapter: Adapter, batch: list[_Target], cfg: TrainConfig, with_stress: bool,
          collated=None) -> tuple[torch.Tensor, dict[str, float]]:
    if collated is None:
        collated = adapter.collate([t.graph for t in batch])
    out = adapter.forward_batch(collated, stress=with_stress)
    n_atoms = torch.tensor([t.n_atoms for t in batch], dtype=out["energy"].dtype)
    e_ref = torch.tensor([t.energy for t in batch], dtype=out["energy"].dtype)
    e_err = (out["energy"] - e_ref) / n_atoms
    f_err = out["forces"] - torch.cat([t.forces for t in batch])
    loss = cfg.energy_weight * (e_err**2).mean() + cfg.forces_weight * (f_err**2).mean()
    parts = {"e_sq_sum": (e_err**2).sum().item(), "f_sq_sum": (f_err**2).sum().item(),
             "n_struct": len(batch), "n_f": f_err.numel()}
    if with_stress:
        s_err = (out["stress"] - torch.stack([t.stress for t in batch])) / units.GPa
        loss = loss + cfg.stress_weight * (s_err**2).mean()
        parts |= {"s_sq_sum": (s_err**2).sum().item(), "n_s": s_err.numel()}
    return loss, parts


def _evaluate(adapter: Adapter, data: list[_Target], cfg: TrainConfig, with_stress: bool) -> dict:
    totals: dict[str, float] = {}
    step = adapter.predict_batch_size
    with adapter.no_parameter_grads():
        for start in range(0, len(data), step):
            _, parts = _loss(adapter, data[start : start + step], cfg, with_stress)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
    e_mse = totals["e_sq_sum"] / totals["n_struct"]
    f_mse = totals["f_sq_sum"] / totals["n_f"]
    metrics = {"val_energy_rmse_mev_per_atom": 1000 * math.sqrt(e_mse),
               "val_forces_rmse_mev_per_ang": 1000 * math.sqrt(f_mse)}
    loss = cfg.energy_weight * e_mse + cfg.forces_weight * f_mse
    if with_stress:
        s_mse = totals["s_sq_sum"] / totals["n_s"]
        metrics["val_stress_rmse_gpa"] = math.sqrt(s_mse)
        loss += cfg.stress_weight * s_mse
    metrics["val_loss"] = loss
    return metrics


def refit_reference_energies(adapter: Adapter, frames: Sequence[Atoms]) -> dict[int, float]:
    """Least-squares per-element shift of the model's residual, folded into its references.

    Works the same for a foundation (corrects its E0 to this DFT setup) and a scratch
    model (fits E0 from the data). Returns the new references for the elements present.
    """
    numbers = sorted({int(z) for a in frames for z in a.numbers})
    counts = np.array([[np.count_nonzero(a.numbers == z) for z in numbers] for a in frames], float)
    pred = adapter.predict(frames, stress=False).energy
    residual = np.array([a.calc.results["energy"] for a in frames]) - pred
    shift, *_ = np.linalg.lstsq(counts, residual, rcond=None)
    old = adapter.reference_energies()
    new = {z: old[z] + float(s) for z, s in zip(numbers, shift, strict=True)}
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


def train(adapter: Adapter, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
          cfg: TrainConfig, *, on_epoch: Callable[[dict], None] | None = None) -> History:
    """Train ``adapter.model_`` in place; returns the history. Raises Diverged."""
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
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    m = cfg.lr_min_factor  # cosine from each group's LR down to m times it
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: m + (1 - m) * (1 + math.cos(math.pi * min(e, cfg.epochs) / cfg.epochs)) / 2)
    best_loss, best_state, since_best = math.inf, None, 0
    initial = _evaluate(adapter, val_data, cfg, with_stress)  # epoch 0: the starting model
    hist.epochs.append({"epoch": 0, "train_loss": None, **initial, "lr": cfg.lr,
                        "elapsed_s": 0.0, "epoch_s": 0.0, "data_s": 0.0})
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        adapter.model_.train(True)
        t_epoch, data_s, losses = time.perf_counter(), 0.0, []
        perm = rng.permutation(len(train_data))
        for start in range(0, len(perm), cfg.batch_size):
            t_data = time.perf_counter()
            batch = [train_data[i] for i in perm[start : start + cfg.batch_size]]
            collated = adapter.collate([t.graph for t in batch])
            data_s += time.perf_counter() - t_data
            t_step = time.perf_counter()
            loss, _ = _loss(adapter, batch, cfg, with_stress, collated)
            if not torch.isfinite(loss):
                raise Diverged(epoch, loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hist.step_times_s.append(time.perf_counter() - t_step)
            hist.step_structures += len(batch)
            losses.append(loss.item())
        sched.step()
        adapter.model_.train(False)
        val = _evaluate(adapter, val_data, cfg, with_stress)
        if not math.isfinite(val["val_loss"]) or val["val_loss"] > cfg.explode_factor * initial["val_loss"]:
            raise Diverged(epoch, val["val_loss"])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), **val,
               "lr": max(g["lr"] for g in opt.param_groups), "elapsed_s": time.perf_counter() - t_start,
               "epoch_s": time.perf_counter() - t_epoch, "data_s": data_s}
        hist.epochs.append(row)
        if on_epoch:
            on_epoch(row)
        if val["val_loss"] < best_loss:
            best_loss, since_best, hist.best_epoch = val["val_loss"], 0, epoch
            best_state = copy.deepcopy(adapter.model_.state_dict())
        else:
            since_best += 1
        if since_best >= cfg.patience:
            hist.stopped = "early_stopping"
            break
        if time.perf_counter() - t_start > cfg.max_time_s:
            hist.stopped = "max_time"
            break
    hist.train_s = time.perf_counter() - t_start
    if best_state is not None:
        adapter.model_.load_state_dict(best_state)
    return hist
