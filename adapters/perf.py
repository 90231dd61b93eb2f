"""Timing benchmarks run inside a family's worker: one per model and dataset per sweep.

* ``reference_workload_s``: a fixed torch workload (matmuls + a small MLP forward and
  backward) timed on the run's threads, so ``bench compare`` can judge timings as ratios
  to it and a slower or busier machine is not read as a regression.
* ``predict_vs_calculator``: the adapter's batched ``predict`` (featurize included) against
  the library's own ASE calculator called structure by structure on the same structures,
  with the largest disagreement between the two as a correctness check.

Example:
    >>> predict_vs_calculator(adapter, frames, stress=True)["speedup_vs_ase_calculator"]
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import units

from bench.core.metrics import EV_PER_A3_TO_GPA

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ase import Atoms

    from adapters.base import Adapter


def reference_workload_s(repeats: int = 3) -> float:
    """Best seconds of a fixed workload over ``repeats``, after one untimed pass (thread
    pool and allocator warm-up, as for the run's own first step): the machine's speed. The
    median let a moment's load elsewhere in: in two idle runs of the regression suite, on
    two pool workers, it ranged 0.063-0.159 s and once doubled a normalised ratio."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=gen) / 512**0.5
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.SiLU(), torch.nn.Linear(128, 1))
    x = torch.randn(8192, 64, generator=gen, requires_grad=True)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        b = a
        for _ in range(12):
            b = torch.tanh(b @ a)
        out = mlp(x).sum()
        (grad,) = torch.autograd.grad(out, x, create_graph=True)
        grad.square().sum().backward()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def _calculator_loop(calc, frames: Sequence[Atoms], stress: bool) -> dict[str, np.ndarray]:
    energy, forces, stresses = [], [], []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        energy.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        if stress:
            stresses.append(atoms.get_stress())
    return {"energy": np.array(energy), "forces": np.concatenate(forces),
            "stress": np.array(stresses) if stress else None}


def best_of(ways: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Each way's best wall time over ``repeats`` interleaved rounds, and its last output:
    interleaving spreads warm-up and machine-load drifts over all ways alike."""
    best, out = dict.fromkeys(ways, float("inf")), {}
    for _ in range(repeats):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, out


def atoms_per_second(models: dict[str, Adapter], frames: Sequence[Atoms], *, stress: bool,
                     repeats: int = 3) -> dict[str, float]:
    """Inference throughput (graph building included) of each model on the same frames
    (a surrogate's student, teacher and foundation), interleaved, best of ``repeats``."""
    n_atoms = sum(len(a) for a in frames)
    ways = {name: (lambda m=m: m.predict(frames, stress=stress)) for name, m in models.items()}
    best, _ = best_of(ways, repeats)
    return {name: n_atoms / seconds for name, seconds in best.items()}


def predict_vs_calculator(adapter: Adapter, frames: Sequence[Atoms], *, stress: bool,
                          repeats: int = 3) -> dict:
    """Seconds per structure both ways, their ratio and their agreement. The three ways are
    interleaved after a warm-up and each keeps its best time, so warm-up and drifts in
    machine load do not favour whichever is timed last. The calculator gets the frames as
    the model sees them (``Adapter.periodic``), so a slab file compares like with like."""
    frames = [adapter.periodic(a) for a in frames]
    n_atoms = sum(len(a) for a in frames)
    calc = adapter.ase_calculator()
    adapter.predict(frames[:2], stress=stress)  # warm-up (lazy inits, allocator)
    _calculator_loop(calc, frames[:2], stress)
    t0 = time.perf_counter()
    graphs = [adapter.featurize(a) for a in frames]
    featurize_s = time.perf_counter() - t0
    ways = {"batched": lambda: adapter.predict(frames, stress=stress),
            "featurized": lambda: adapter.predict(frames, stress=stress, graphs=graphs),
            "calculator": lambda: _calculator_loop(calc, frames, stress)}
    best, out = best_of(ways, repeats)
    pred, ref = out["batched"], out["calculator"]
    per_atom = np.array([len(a) for a in frames])
    result = {
        "n_structures": len(frames), "n_atoms": n_atoms, "predict_batch_size": adapter.inference_batch_size,
        "featurize_s_per_structure": featurize_s / len(frames),
        "predict_s_per_structure": best["batched"] / len(frames),
        "predict_featurized_s_per_structure": best["featurized"] / len(frames),
        "ase_calculator_s_per_structure": best["calculator"] / len(frames),
        "speedup_vs_ase_calculator": best["calculator"] / best["batched"],
        "inference_atoms_per_s": n_atoms / best["featurized"],
        "predict_atoms_per_s": n_atoms / best["batched"],
        "ase_calculator_atoms_per_s": n_atoms / best["calculator"],
        "max_energy_diff_mev_per_atom": 1000 * float(np.max(np.abs(pred.energy - ref["energy"]) / per_atom)),
        "max_force_diff_mev_per_ang": 1000 * float(np.max(np.abs(pred.forces - ref["forces"]))),
        "repeats": repeats,
    }
    if stress:
        result["max_stress_diff_gpa"] = EV_PER_A3_TO_GPA * float(np.max(np.abs(pred.stress - ref["stress"])))
    return result


def _synchronize(adapter: Adapter) -> None:
    if adapter.on_gpu:
        torch.cuda.synchronize(adapter.device)


def predict_by_batch(adapter: Adapter, frames: Sequence[Atoms], sizes: Sequence[int], *, stress: bool,
                     repeats: int = 3) -> dict[str, float]:
    """Atoms/s of predict on prebuilt graphs at each batch size, interleaved, best of ``repeats``."""
    graphs = [adapter.featurize(a) for a in frames]
    n_atoms = sum(len(a) for a in frames)
    ways = {str(b): (lambda b=b: adapter.predict(frames, batch_size=b, stress=stress, graphs=graphs)) for b in sizes}
    adapter.predict(frames[:2], stress=stress, graphs=graphs[:2])  # warm-up
    best, _ = best_of(ways, repeats)
    return {b: n_atoms / seconds for b, seconds in best.items()}


def loop_vs_minimal(adapter: Adapter, frames: Sequence[Atoms], *, steps: int, batch_size: int,
                    stress: bool) -> dict[str, float]:
    """Seconds per training structure of the shared loop's step (targets on the device, its
    loss, one logged scalar) and of a minimal loop written out by hand with the same loss
    terms, on the same batches, after a warm-up; the model is restored afterwards."""
    from adapters.training import TrainConfig, _loss, _targets

    state = {k: v.clone() for k, v in adapter.model_.state_dict().items()}
    cfg = TrainConfig(batch_size=batch_size, stress_weight=0.1 if stress else 0.0)
    data = _targets(adapter, frames, stress)
    batches = [data[i:i + batch_size] for i in range(0, len(data), batch_size)]
    collated = [adapter.collate([t.graph for t in b]) for b in batches]
    weights = {"e": cfg.energy_weight, "f": cfg.forces_weight, "s": cfg.stress_weight}

    def minimal_loss(batch, inputs):
        out = adapter.forward_batch(inputs, stress=stress)
        energy = torch.stack([t.energy for t in batch]) / torch.stack([t.n_atoms for t in batch])
        loss = weights["e"] * ((out["energy"] / torch.stack([t.n_atoms for t in batch]) - energy) ** 2).mean()
        loss = loss + weights["f"] * ((out["forces"] - torch.cat([t.forces for t in batch])) ** 2).mean()
        if stress:
            s_ref = torch.stack([t.stress for t in batch])
            loss = loss + weights["s"] * (((out["stress"] - s_ref) / units.GPa) ** 2).mean()
        return loss

    ways = {"loop": lambda batch, inputs: _loss(adapter, batch, cfg, stress, inputs), "minimal": minimal_loss}
    opts = {name: torch.optim.AdamW([p for p in adapter.model_.parameters() if p.requires_grad], lr=1e-6)
            for name in ways}
    spent, structures = dict.fromkeys(ways, 0.0), 0
    adapter.model_.train(True)
    for step in range(steps + 1):  # step 0: warm-up, not timed; the two ways alternate, step by step
        batch, inputs = batches[step % len(batches)], collated[step % len(batches)]
        for name, loss_fn in ways.items():
            _synchronize(adapter)
            t0 = time.perf_counter()
            loss = loss_fn(batch, inputs)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            loss.item()  # one logged scalar per step, as the shared loop does
            _synchronize(adapter)
            spent[name] += (time.perf_counter() - t0) if step else 0.0
        structures += len(batch) if step else 0
    adapter.model_.train(False)
    adapter.model_.load_state_dict(state)
    return {"loop_step_s_per_structure": spent["loop"] / max(1, structures),
            "minimal_step_s_per_structure": spent["minimal"] / max(1, structures)}
