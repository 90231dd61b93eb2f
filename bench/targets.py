"""The performance targets, checked from stored records (and the sweep log) only.

* Batched ``predict`` through the adapter ≥ 3× faster per structure than the library's
  own ASE calculator called structure by structure (each model's timing job).
* After the first epoch graphs are reused: data preparation (collating prebuilt graphs)
  < 10 % of epoch time (the largest share over a model's training runs; a surrogate job's
  student is another model and is left out).
* The whole sweep's wall time against its budget (the default ``quick`` sweep: 20 min on a
  2-core CPU), from ``sweeps.jsonl``, one line per ``bench run``.

Example:
    >>> header, rows = target_rows(records, read_sweeps(results_dir))
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bench.core.contract import PerfSpec, Record, TrainSpec

SPEEDUP_TARGET = 3.0
DATA_PREP_TARGET = 0.10
SWEEP_BUDGET_S = {"quick": 20 * 60}
SWEEP_LOG = "sweeps.jsonl"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def read_sweeps(results_dir: Path) -> list[dict]:
    path = Path(results_dir) / SWEEP_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def target_rows(records: list[Record], sweeps: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for r in sorted((r for r in records if isinstance(r.spec, PerfSpec) and r.ok),
                    key=lambda r: (r.spec.dataset, r.spec.model)):
        t = r.timing
        speedup = t.speedup_vs_ase_calculator
        rows.append([r.spec.model, f"batched predict vs ASE calculator ({t.n_structures} "
                     f"{r.spec.dataset} structures; {r.model_source or ''}; {r.runtime.device})",
                     f"{1000 * t.predict_s_per_structure:.1f} vs {1000 * t.ase_calculator_s_per_structure:.1f}"
                     f" ms/structure = {speedup:.2f}× (agree to {t.max_energy_diff_mev_per_atom:.3f} meV/atom, "
                     f"{t.max_force_diff_mev_per_ang:.3f} meV/Å)",
                     f"≥ {SPEEDUP_TARGET:.0f}×", _verdict(speedup >= SPEEDUP_TARGET)])
    prep: dict[str, list[float]] = defaultdict(list)
    for r in records:
        frac = r.timing.data_fraction_after_epoch1 if r.timing else None
        if r.ok and frac is not None and isinstance(r.spec, TrainSpec):
            prep[r.spec.model].append(frac)
    for model, fracs in sorted(prep.items()):
        rows.append([model, f"data preparation share of epoch time after epoch 1 ({len(fracs)} runs)",
                     f"max {100 * max(fracs):.2f} %", f"< {100 * DATA_PREP_TARGET:.0f} %",
                     _verdict(max(fracs) < DATA_PREP_TARGET)])
    if sweeps:
        last = sweeps[-1]
        budget = SWEEP_BUDGET_S.get(last.get("preset"))
        rows.append(["all", f"last `bench run` (preset {last.get('preset')}, {last.get('n_runs')} runs, "
                     f"{last['counts'].get('reused', 0)} reused; environment checks/builds "
                     f"{last.get('env_build_s', 0):.0f} s)",
                     f"{last['wall_s'] / 60:.1f} min", f"≤ {budget / 60:.0f} min" if budget else "–",
                     _verdict(last["wall_s"] <= budget) if budget else "–"])
    return ["model", "target", "measured", "target value", "verdict"], rows
