"""A small real MACE for Mo, briefly trained on mlearn-Mo: the stand-in foundation where
MACE-MP-0 cannot be downloaded. Used by the MACE contract tests and, run with the mace
environment's python, by the end-to-end test of ``--checkpoint mace=PATH``.

    .venvs/mace/bin/python tests/families/mace_standin.py OUT_DIR    # prints the model path
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from adapters.mace_adapter import MACEAdapter
from adapters.training import History, TrainConfig, train
from datasets import load_dataset


def build(folder: Path) -> tuple[Path, History]:
    """Save a 32x0e, 2-layer, r_max 5 Å Mo MACE trained for 12 epochs; return path and history."""
    from mace import modules  # first: importing mace lets e3nn 0.4.4 load its constants on torch >= 2.6
    from mace.tools.torch_tools import default_dtype

    # isort: split
    from e3nn import o3

    ds = load_dataset("mlearn-Mo")
    aimd = [a for a in ds.pool if a.info["group"] == "AIMD-NVT"]
    elastic = [a for a in ds.pool if a.info["group"] == "Elastic" and len(a) == 54]
    train_frames, val_frames = aimd[:12] + elastic[:4], aimd[12:14] + elastic[4:5]
    e0 = np.mean([a.calc.results["energy"] / len(a) for a in train_frames])
    residual = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    torch.manual_seed(0)
    with default_dtype("float32"):
        model = modules.ScaleShiftMACE(
            r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=2,
            interaction_cls=residual, interaction_cls_first=residual, num_interactions=2,
            num_elements=1, hidden_irreps=o3.Irreps("32x0e"), MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.array([e0]), avg_num_neighbors=40.0, atomic_numbers=[42],
            correlation=2, gate=torch.nn.functional.silu, radial_MLP=[16, 16],
            atomic_inter_scale=1.0, atomic_inter_shift=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model, folder / "init.model")
    adapter = MACEAdapter(str(folder / "init.model")).load()
    # forces-first, as it was made before the protocol weighed energies 100: a fixed stand-in, not the protocol
    hist = train(adapter, train_frames, val_frames, TrainConfig(epochs=12, lr=2e-2, patience=12, energy_weight=1.0))
    torch.save(adapter.model_, folder / "mo-foundation.model")
    return folder / "mo-foundation.model", hist


if __name__ == "__main__":
    torch.set_num_threads(2)
    path, _ = build(Path(sys.argv[1]))
    print(path)
