"""``python -m bench gpu-check``: does ftbench run correctly and fast on this GPU?

On a one-GPU machine, in a few minutes, it runs (1) a short sweep of SevenNet and MACE
(CHGNet and M3GNet too where their environments import) with ``--device cuda``: zero-shot,
finetune and freeze-interactions on a few mlearn-Mo structures, every record expected
``ok`` on ``cuda``; (2) each model's timing job on 64 test structures: batched predict at
batch 1, 8 and 32 against the library's own ASE calculator, the shared training loop's step
against a minimal loop with the same loss terms, peak GPU memory; (3) N fine-tuning runs of
the first family once with one worker and once with N workers sharing the GPU; then prints
a table from the stored records only. MACE-MP-0 cannot always be downloaded: without ``--checkpoint
mace=PATH`` the tests' small real MACE is trained (seconds) and used, labelled a stand-in.

Targets (issue "GPU path"): batched predict >= 20x the calculator for SevenNet and MACE;
the shared loop within 1.2x of the minimal loop; N workers >= 2.5x the throughput of one.

Example:
    python -m bench gpu-check --out reports/gpu-check --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bench import PROJECT_ROOT, envs
from bench.api import Results, run_sweep
from bench.config import SweepConfig
from bench.registry import get_model

REQUIRED, OPTIONAL = ("sevennet", "mace"), ("chgnet", "m3gnet")
TARGETS = {"speedup": 20.0, "loop_ratio": 1.2, "pool": 2.5}
SPEEDUP_ROW = "batched predict (inference batch size) / calculator (target >= 20x)"


def _available(python: dict[str, str], wanted: str | None) -> list[str]:
    """The families to check: the required ones (their environments built if needed) and the
    optional ones whose environment is given or already imports here; ``wanted``: only these."""
    found = []
    for key in (*REQUIRED, *OPTIONAL):
        if wanted and key not in wanted.split(","):
            continue
        model = get_model(key)
        given = python.get(model.env) or envs.given_python(model)
        try:
            if given or key in REQUIRED:
                envs.ensure(model, log=log, python=given)
            elif not envs.probe(model):
                continue
        except envs.EnvironmentBuildError as exc:
            log(f"gpu-check: {key} unavailable: {str(exc).splitlines()[0]}")
            continue
        found.append(key)
    return found


def mace_standin(out: Path, python: dict[str, str]) -> str:
    """A small real MACE trained on Mo (tests/families/mace_standin.py), for MACE's foundation runs."""
    model = get_model("mace")
    interpreter = python.get(model.env) or envs.given_python(model) or str(envs.ensure(model).python)
    proc = subprocess.run([interpreter, "tests/families/mace_standin.py", str(out)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))})
    return proc.stdout.strip().splitlines()[-1]


def configs(out: Path, models: list[str], checkpoint: str | None, workers: int, device: str,
            python: dict[str, str], small: bool) -> dict[str, SweepConfig]:
    """The three sweeps: correctness and timing (on ``workers`` slots, so the per-run process
    start-ups overlap), then the same few runs of the first family with 1 and N workers."""
    base = SweepConfig.from_preset(str(PROJECT_ROOT / "tests" / "presets" / "tiny.toml")).override(
        preset="gpu-check", models=",".join(models), pool_size=8 if small else 48, val_size=2 if small else 8,
        sizes=(4,) if small else (40,), seeds=(0,), strategies=("zero-shot", "finetune", "freeze-interactions"),
        epochs=2 if small else 10, batch_size=8, device=device, checkpoint=checkpoint, threads=2 * workers,
        properties="none", perf_structures=4 if small else 64, perf_batch_sizes=(1, 2) if small else (1, 8, 32),
        perf_train_steps=2 if small else 20, run_timeout_s=900.0, executor="pool", workers=workers)
    base = replace(base, python=dict(python))
    pool = base.override(models=models[0], strategies=("finetune",), seeds=tuple(range(workers)), perf_structures=0)
    return {"sweep": base.override(out=str(out / "sweep")),
            "one worker": pool.override(out=str(out / "pool-1"), executor="local", threads=2),
            f"{workers} workers": pool.override(out=str(out / f"pool-{workers}"))}


def _cell(values: list, fmt: str = "{:,.0f}") -> str:
    return " / ".join("–" if v is None else fmt.format(v) for v in values)


def table(results: dict[str, Results], models: list[str], workers: int) -> str:
    """The check's table, from the stored records."""
    sweep = results["sweep"]
    by_model = {m: [r for r in sweep.records if r.spec.model == m] for m in models}
    rows = {"records ok / all (device)": [], "accelerated kernels": [],
            "predict atoms/s on built graphs at batch " + "/".join(next(
                (list(r.timing.predict_atoms_per_s_by_batch) for r in sweep.records if r.spec.kind == "perf"
                 and r.timing and r.timing.predict_atoms_per_s_by_batch), ["?"])): [],
            "library ASE calculator, atoms/s": [],
            SPEEDUP_ROW: [],
            "training step per structure, finetune / freeze-interactions (ms)": [],
            "shared loop / minimal loop (target <= 1.2x)": [], "peak GPU memory (MB)": []}
    for m in models:
        recs = by_model[m]
        ok = [r for r in recs if r.ok]
        rows["records ok / all (device)"].append(
            f"{len(ok)} / {len(recs)} ({', '.join(sorted({r.runtime.device for r in recs})) or '–'})")
        rows["accelerated kernels"].append(", ".join(sorted({r.accelerator or "–" for r in ok})) or "–")
        perf = next((r for r in ok if r.spec.kind == "perf"), None)
        t = perf.timing if perf else None
        by_batch = (t.predict_atoms_per_s_by_batch or {}) if t else {}
        rows[next(k for k in rows if k.startswith("predict"))].append(_cell(list(by_batch.values())))
        rows["library ASE calculator, atoms/s"].append(_cell([t.ase_calculator_atoms_per_s if t else None]))
        speedup = t.speedup_vs_ase_calculator if t else None  # graphs built inside, as the calculator does
        rows[SPEEDUP_ROW].append(_cell([speedup], "{:.1f}x"))
        steps = [next((1000 * r.timing.step_s_per_structure for r in ok if r.spec.kind == "train"
                       and r.spec.what == name and r.timing and r.timing.step_s_per_structure), None)
                 for name in ("finetune", "freeze-interactions")]
        rows["training step per structure, finetune / freeze-interactions (ms)"].append(_cell(steps, "{:.1f}"))
        loop = (t.loop_step_s_per_structure / t.minimal_step_s_per_structure
                if t and t.loop_step_s_per_structure and t.minimal_step_s_per_structure else None)
        rows["shared loop / minimal loop (target <= 1.2x)"].append(_cell([loop], "{:.2f}x"))
        gpu = [r.timing.peak_gpu_memory_mb for r in ok if r.timing and r.timing.peak_gpu_memory_mb]
        rows["peak GPU memory (MB)"].append(_cell([max(gpu) if gpu else None]))
    lines = ["| | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    walls = {name: _last_wall(res.root) for name, res in results.items() if name != "sweep"}
    one, many = walls.get("one worker"), walls.get(f"{workers} workers")
    if one and many:
        lines.append(f"\n{models[0]}, {workers} finetune runs: {workers} workers sharing the GPU took {many:.0f} s, "
                     f"one worker {one:.0f} s: {one / many:.2f}x the throughput (target >= {TARGETS['pool']:g}x; "
                     "each run starts its own process, so this includes the imports)")
    return "\n".join(lines)


def _last_wall(root: Path) -> float | None:
    path = Path(root) / "sweeps.jsonl"
    if not path.is_file():
        return None
    return json.loads(path.read_text().splitlines()[-1])["wall_s"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/gpu-check"))
    parser.add_argument("--workers", type=int, default=4, help="workers sharing the GPU in the pool sweep")
    parser.add_argument("--checkpoint", help="foundation checkpoints, e.g. mace=/path/mace-mp-0-small.model")
    parser.add_argument("--python", action="append", default=[], metavar="FAMILY=PATH",
                        help="existing interpreters per family (as for bench run)")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to try the check itself")
    parser.add_argument("--small", action="store_true", help="a few structures and steps (a dry run of the check)")
    parser.add_argument("--models", help="only these families (default: SevenNet, MACE, CHGNet/M3GNet where present)")
    args = parser.parse_args(argv)
    python = dict(p.split("=", 1) for p in args.python)
    models = _available(python, args.models)
    checkpoint = args.checkpoint
    if "mace" in models and not (checkpoint and "mace=" in checkpoint):
        standin = mace_standin(args.out / "mace-standin", python)
        log(f"gpu-check: MACE runs use the tests' small MACE stand-in ({standin}), not MACE-MP-0")
        checkpoint = ",".join(filter(None, [checkpoint, f"mace={standin}"]))
    results = {name: run_sweep(cfg, report=name == "sweep", log=log)
               for name, cfg in configs(args.out, models, checkpoint, args.workers, args.device, python,
                                        args.small).items()}
    text = table(results, models, args.workers)
    (args.out / "gpu-check.md").write_text(text + "\n")
    print(text)
    return 0
