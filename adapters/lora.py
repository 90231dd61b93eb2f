"""Low-rank adaptation (LoRA) of any family's weight matrices, merged back for inference.

Every 2-D ``weight`` parameter under the given module prefixes (``nn.Linear``, the radial
MLPs of e3nn's ``FullyConnectedNet`` in MACE and SevenNet, ...) gets a torch
parametrization ``W + (alpha / rank) · B A`` with ``B`` zero at the start, so training
starts from the foundation exactly. Base weights stay frozen; only ``A`` and ``B`` train.
``merge`` folds ``B A`` into ``W`` and removes the parametrizations: the model is then the
library's plain architecture again (same forward cost, its own ASE calculator works).
Flattened e3nn ``o3.Linear`` weights (1-D) are not matrices and are left frozen.

Example:
    >>> names = inject(model, ("model.graph_layers.",), rank=8, alpha=16)
    >>> ...train...
    >>> merge(model)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class LowRankDelta(nn.Module):
    """The parametrization: the frozen weight plus a trainable rank-``rank`` update."""

    def __init__(self, shape: tuple[int, int], rank: int, alpha: float):
        super().__init__()
        rows, cols = shape
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, cols))
        self.lora_b = nn.Parameter(torch.zeros(rows, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_b @ self.lora_a)


def inject(model: nn.Module, prefixes: tuple[str, ...], *, rank: int, alpha: float) -> list[str]:
    """Parametrize every 2-D ``weight`` under ``prefixes`` whose smaller side exceeds ``rank``;
    freezes the base weights and returns the adapted parameter names."""
    targets = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):  # compiled: cannot be parametrized
            continue
        weight = dict(module.named_parameters(recurse=False)).get("weight")
        if (weight is not None and weight.ndim == 2 and min(weight.shape) > rank
                and f"{name}.".startswith(prefixes)):
            targets.append((name, module, weight))
    for _, module, weight in targets:
        weight.requires_grad_(False)
        delta = LowRankDelta(tuple(weight.shape), rank, alpha).to(weight.device, weight.dtype)
        parametrize.register_parametrization(module, "weight", delta)
    return [f"{name}.weight" for name, _, _ in targets]


def merge(model: nn.Module) -> int:
    """Fold every low-rank update into its weight (frozen); returns how many were merged."""
    merged = 0
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, LowRankDelta) for p in module.parametrizations["weight"]):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.weight.requires_grad_(False)
            merged += 1
    return merged


def parametrized(model: nn.Module) -> list[str]:
    """Names of the modules still carrying a parametrization (LoRA adapters not merged):
    a model in that state is ftbench's, not its library's, and cannot be saved natively."""
    return [name for name, module in model.named_modules() if parametrize.is_parametrized(module)]
