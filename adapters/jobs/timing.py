"""The perf (timing) job: batched predict vs the library's own ASE calculator.

Timings do not depend on the weights, so where the foundation checkpoint cannot be had
the same architecture with random weights is timed, and the record says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.base import CheckpointUnavailable
from adapters.jobs import prepare
from adapters.jobs.common import adapter_class, read_frames
from adapters.perf import loop_vs_minimal, predict_by_batch, predict_vs_calculator
from bench.core.contract import Result
from bench.core.util import peak_rss_mb
from datasets.labels import has_stress

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.core.contract import Job


def run(job: Job, progress: Callable[[dict], None]) -> Result:
    frames = read_frames(job.data.test)[: job.spec.n_structures]
    adapter = adapter_class(job.adapter)(job.spec.checkpoint, device=job.device, seed=0)
    try:
        adapter.load()
        source = f"foundation {adapter.checkpoint}"
    except CheckpointUnavailable as exc:  # same architecture: timings do not depend on weights
        adapter.load(scratch=True)
        source = f"random init of the {adapter.checkpoint} architecture ({str(exc).splitlines()[0][:200]})"
    adapter.check_elements(frames)
    stress = has_stress(frames)
    timing = predict_vs_calculator(adapter, frames, stress=stress)
    if job.spec.batch_sizes:
        timing["predict_atoms_per_s_by_batch"] = predict_by_batch(adapter, frames, job.spec.batch_sizes, stress=stress)
    if job.spec.train_steps:
        timing |= loop_vs_minimal(adapter, frames, steps=job.spec.train_steps, batch_size=8, stress=stress)
    timing["peak_rss_mb"] = peak_rss_mb()
    if adapter.on_gpu:
        import torch

        timing["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(adapter.device) / 2**20
    return Result.from_dict({"status": "ok", "model_source": source, "timing": timing,
                             "parameters": adapter.parameter_counts(), "accelerator": prepare.accelerator(adapter)})
