"""The MD job: MD stability of a saved model (``adapters.md``).

The model is loaded from its saved file by its library's own loader and run through the
library's own ASE calculator, as a user of the file would run it (so the job also proves
the file works outside ftbench). It starts from the test frame of the spec's group with the
lowest energy per atom, and judges distances against the closest pair in the dataset's DFT
frames. A blow-up is a finding in the result, never a failed job; a file whose sha256 is
not the spec's is refused (the model changed since the spec was planned).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.jobs.common import Skipped, adapter_class, read_frames
from adapters.md import dataset_min_distance, dimer_curve, stability
from bench.core.contract import Result
from bench.core.util import file_sha256, peak_rss_mb

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.core.contract import Job


def run(job: Job, progress: Callable[[dict], None]) -> Result:
    spec = job.spec
    test = read_frames(job.data.test)
    group = [a for a in test if a.info["group"] == spec.cell_group]
    if not group:
        raise Skipped(f"{spec.dataset}: no test frame of group {spec.cell_group!r} to start MD from")
    start = min(group, key=lambda a: a.calc.results["energy"] / len(a))
    cell = start.copy()  # positions, numbers and cell only
    d_data = dataset_min_distance([*read_frames(job.data.pool), *test])
    path = Path(job.model_file)
    sha256, _ = file_sha256(path)
    if sha256 != spec.model_sha256:
        raise ValueError(f"{path}: sha256 {sha256[:12]} is not the saved model's {spec.model_sha256[:12]}; "
                         "the file changed after the run was planned")
    t0 = time.perf_counter()
    calc = adapter_class(job.adapter).exported_calculator(path, device=job.device)
    load_s = time.perf_counter() - t0
    md = stability(calc, cell, temperatures_k=spec.temperatures_k, timestep_fs=spec.timestep_fs,
                   langevin_ps=spec.langevin_ps, nve_ps=spec.nve_ps, friction_per_fs=spec.friction_per_fs,
                   d_data=d_data, criteria=spec.criteria)
    md["cell"] = {"group": spec.cell_group, "energy_per_atom_ev": start.calc.results["energy"] / len(start)}
    t0 = time.perf_counter()
    md["dimers"] = {symbol: dimer_curve(calc, symbol, d_data=d_data, dimer=spec.dimer)
                    for symbol in sorted(set(cell.get_chemical_symbols()))}
    md["dimer_wall_s"] = time.perf_counter() - t0
    return Result.from_dict({"status": "ok", "md": md, "timing": {"load_s": load_s, "peak_rss_mb": peak_rss_mb()}})
