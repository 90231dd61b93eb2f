"""Load a model and adapt it to a strategy's flags; the one way every recipe does it.

``load``: the foundation, or its architecture with random weights (``init = random``),
checked against the elements it must cover. ``adapt``: freeze the first ``freeze_k``
blocks, inject LoRA adapters, apply the reference-energy policy. ``finish``: merge the
LoRA adapters back into the plain architecture, measuring what that changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from adapters import lora as lora_ops
from adapters.base import CheckpointUnavailable, UnsupportedElements
from adapters.jobs.common import Skipped, adapter_class
from adapters.training import refit_reference_energies
from datasets.periodicity import PeriodicityError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ase import Atoms

    from adapters.base import Adapter
    from bench.core.contract import Job, LoraSettings


def load(job: Job, *, init: str = "foundation", covers: Sequence[Atoms] = (), also_covers: Sequence[Atoms] = (),
         seed: int = 0) -> Adapter:
    """The job's model loaded on its device; Skipped when its checkpoint cannot be had, it
    lacks elements of ``covers`` (the run's data) or ``also_covers`` (another domain's), or
    a frame of ``covers`` cannot be made periodic for its cutoff (``Adapter.periodic``)."""
    adapter = adapter_class(job.adapter)(job.spec.checkpoint, device=job.device, seed=seed)
    try:
        adapter.load(scratch=init == "random")
        adapter.check_elements(covers)
        for atoms in covers:
            adapter.periodic(atoms)
    except CheckpointUnavailable as exc:
        raise Skipped(str(exc), "checkpoint") from exc
    except UnsupportedElements as exc:
        raise Skipped(str(exc), "model") from exc
    except PeriodicityError as exc:
        raise Skipped(f"{adapter.family} ({adapter.checkpoint}, cutoff {adapter.cutoff:g} Å): {exc}", "model") from exc
    try:
        adapter.check_elements(also_covers)
    except UnsupportedElements as exc:
        raise Skipped(f"replay/forgetting dataset: {exc}") from exc
    return adapter


def accelerator(adapter: Adapter) -> str | None:
    """What the record says of accelerated kernels: on a GPU their name or "none"; on a CPU nothing."""
    return (adapter.accelerator_ or "none") if adapter.on_gpu else None


def adapt(adapter: Adapter, *, freeze_k: int, e0_policy: str, lora: LoraSettings | None,
          train_frames: Sequence[Atoms]) -> dict:
    """Freeze, add LoRA, apply the E0 policy; returns the result fields this records."""
    fields: dict = {}
    adapter.freeze(freeze_k, train_reference=e0_policy == "train")
    if lora is not None:
        adapted = lora_ops.inject(adapter.model_, adapter.block_prefixes("interaction", "readout"),
                                  rank=lora.rank, alpha=lora.alpha)
        if not adapted:
            raise Skipped(f"{adapter.family}: no weight matrix larger than rank {lora.rank} in its "
                          "interaction/readout blocks")
        fields["lora"] = {"rank": lora.rank, "alpha": lora.alpha, "adapted_matrices": len(adapted)}
    if e0_policy == "refit":
        refit = refit_reference_energies(adapter, train_frames)
        fields["reference_energies_ev"] = {str(z): v for z, v in refit.items()}
    return fields


def finish(adapter: Adapter, lora_fields: dict | None, check_frames: Sequence[Atoms]) -> None:
    """Merge LoRA adapters (``lora_fields``: what ``adapt`` recorded of them; None: none)
    into the weights, recording the largest energy change the merge made on ``check_frames``
    (meV), which should be float rounding only."""
    if lora_fields is None:
        return
    before = adapter.predict(check_frames, stress=False).energy
    lora_ops.merge(adapter.model_)
    after = adapter.predict(check_frames, stress=False).energy
    lora_fields["merge_max_abs_de_mev"] = 1000 * float(np.abs(after - before).max())
