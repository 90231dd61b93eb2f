"""Command line: ``python -m bench {run,check-data,list,report,compare,export,gpu-check}``.

Examples:
    python -m bench run --models all                      # embedded default (preset quick, CPU)
    python -m bench run --preset paper --executor pool --workers 4
    python -m bench run --models chgnet --sizes 10,50,100 --seeds 0,1 --epochs 20
    python -m bench run --models chgnet --strategies zero-shot,freeze-3 --dataset data.xyz
    python -m bench run --models m3gnet --save-models best --md best
    python -m bench check-data data.xyz --test-size 200                # what a run would read
    python -m bench list models
    python -m bench report reports/quick
    python -m bench compare reports/baselines/regression reports/regression
    python -m bench export reports/quick best --to models/
    python -m bench gpu-check --workers 4         # on a GPU machine: correctness and speed, a table
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import PRESET_DIR, SAVE_MODELS, SweepConfig, load_preset, preset_names
from bench.core import strategies
from bench.core.contract import E0_POLICIES
from bench.core.strategies import DEFAULT_STRATEGIES
from bench.executors import EXECUTORS
from bench.registry import MODELS, UnknownName
from bench.store import StoreError
from datasets.errors import DatasetError
from datasets.keys import DEFAULT_STRESS_UNIT, MACE, STRESS_UNITS, LabelKeys
from datasets.splits import parse_size


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected FAMILY=PATH, e.g. mace=/opt/mace-env/bin/python")
    return name.strip(), value.strip()


def _data_options(parser: argparse.ArgumentParser) -> None:
    """How a user's own file is read (``datasets.keys``) and tested: ``run`` and ``check-data`` alike."""
    for label, default in (("energy", "the calculator's energy"), ("forces", "the calculator's forces"),
                           ("stress", "the calculator's stress"), ("group", "info['group']")):
        parser.add_argument(f"--{label}-key", dest=f"{label}_key",
                            help=f"key of the {label} in a user's file (default: {default}; "
                            f"else MACE's {MACE[label]} where only that exists)")
    parser.add_argument("--stress-unit", dest="stress_unit", choices=tuple(STRESS_UNITS),
                        help="unit and sign of the stress in a user's file: "
                        + "; ".join(f"{k}: {text}" for k, (_, text) in STRESS_UNITS.items()) + " (default eV/A3)")
    parser.add_argument("--test-size", type=int, dest="test_size",
                        help="at most this many test frames (whole leak groups, fixed seed: the same for every size "
                        "and seed); catalog datasets keep their canonical test set otherwise")
    parser.add_argument("--test-file", dest="test_file",
                        help="a user's own held-out extxyz file as the test set (the dataset file is all pool)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="plan and run a sweep, then write its report")
    run.add_argument("--preset", default="quick",
                     help="embedded preset (quick, paper) or a .toml/.yaml file; flags override it")
    run.add_argument("--models", help="'all' or a comma list of " + ", ".join(MODELS))
    run.add_argument("--dataset", help="registered name (see `list datasets`) or an .xyz/.traj path; "
                     "a comma list runs each")
    run.add_argument("--sizes", type=lambda s: tuple(parse_size(x) for x in _csv(s)),
                     help="training sizes: counts (50), fractions (0.1) or percentages (10%%)")
    run.add_argument("--strategies", type=_csv, help=f"comma list; default {','.join(DEFAULT_STRATEGIES)}")
    run.add_argument("--seeds", type=lambda s: tuple(int(x) for x in _csv(s)))
    run.add_argument("--epochs", type=int, help="passes over each training subset")
    run.add_argument("--min-steps", type=int, dest="min_steps",
                     help="at least this many optimizer steps per run (small subsets get more epochs)")
    run.add_argument("--energy-weight", type=float, dest="energy_weight",
                     help="loss weight of the energy per atom (eV; default: the protocol's, see README)")
    run.add_argument("--forces-weight", type=float, dest="forces_weight", help="loss weight of the forces (eV/Å)")
    run.add_argument("--stress-weight", type=float, dest="stress_weight", help="loss weight of the stress (GPa)")
    run.add_argument("--batch-size", type=int, dest="batch_size")
    run.add_argument("--lr", type=float)
    run.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    run.add_argument("--e0", dest="e0_policy", choices=sorted(E0_POLICIES),
                     help="reference-energy policy (default refit)")
    run.add_argument("--checkpoint", help="foundation checkpoint name or path (one model), or model=PATH,... pairs")
    run.add_argument("--device", help="auto (the GPU when a worker sees one), cpu, cuda or cuda:N")
    run.add_argument("--python", action="append", metavar="FAMILY=PATH", type=_pair,
                     help="run a family's workers with an existing interpreter (cluster module, conda env, an "
                     "offline GPU machine's python) instead of building .venvs/FAMILY; it must import the "
                     "family's library; also $BENCH_PYTHON_<FAMILY>")
    run.add_argument("--isolation", choices=("auto", "fork", "process"),
                     help="auto: fork per run from a server per family on the CPU, a fresh process per run on a "
                     "GPU (forking after CUDA libraries are imported is unsafe); fork or process force one")
    run.add_argument("--threads", type=int, help="torch threads per worker (default: all cores)")
    run.add_argument("--run-timeout", type=float, dest="run_timeout_s", help="seconds per run")
    run.add_argument("--pool-size", type=int, dest="pool_size",
                     help="use at most this many training-pool frames (fractions refer to them; 0: the whole pool)")
    run.add_argument("--val-size", type=int, dest="val_size",
                     help="hold out whole groups until at least this many validation frames (0: --val-fraction)")
    run.add_argument("--perf-structures", type=int, dest="perf_structures",
                     help="structures for each model's timing job (batched predict vs ASE calculator); 0: none")
    run.add_argument("--properties", choices=("all", "largest", "none"),
                     help="catalog property benchmarks after all runs, zero-shot + each strategy's largest size, "
                     "or none")
    run.add_argument("--lora-rank", type=int, dest="lora_rank", help="LoRA rank (strategy lora; default 8)")
    run.add_argument("--lora-alpha", type=float, dest="lora_alpha", help="LoRA alpha (default 16)")
    run.add_argument("--replay-dataset", dest="replay_dataset",
                     help="another domain: forgetting is measured on its test set, strategy replay mixes in its pool")
    run.add_argument("--replay-fraction", type=float, dest="replay_fraction",
                     help="replay structures per training structure (default 0.5)")
    run.add_argument("--save-models", dest="save_models", choices=SAVE_MODELS,
                     help="save trained models in their library's own format under OUT/models: none, best (per "
                     "model, by validation force RMSE; the others are removed when the sweep ends) or all")
    run.add_argument("--md", choices=SAVE_MODELS,
                     help="MD stability (Langevin at 300 K and the dataset's high temperature, then NVE; dimer "
                     "curves) of no, the best or every saved model")
    run.add_argument("--executor", choices=EXECUTORS,
                     help="local (sequential), pool (--workers N on this machine; quick's default), slurm "
                     "(submitit job array) or submitit-local (the same jobs as local processes)")
    run.add_argument("--workers", type=int, help="parallel workers of pool / submitit-local (default 2)")
    run.add_argument("--slurm-partition", dest="slurm_partition")
    run.add_argument("--slurm-time-min", type=int, dest="slurm_time_min", help="time limit per run (minutes)")
    run.add_argument("--slurm-gpus", type=int, dest="slurm_gpus_per_node", help="GPUs per job")
    run.add_argument("--slurm-cpus", type=int, dest="slurm_cpus_per_task", help="CPUs per job (torch threads)")
    _data_options(run)
    run.add_argument("--out", help="results directory (default reports/<preset>)")
    run.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")

    check = sub.add_parser("check-data", help="what ftbench will read from a file or catalog dataset, before any run")
    check.add_argument("dataset", help="an .xyz/.extxyz/.traj file or a registered name")
    _data_options(check)
    check.add_argument("--results", type=Path, action="append",
                       help="results directory whose training records give the time per epoch (repeatable; "
                       "default: the committed regression baseline)")

    lst = sub.add_parser("list", help="list models, datasets or strategies")
    lst.add_argument("what", nargs="?", default="models", choices=["models", "datasets", "strategies", "presets"])

    rep = sub.add_parser("report", help="write report.md and report.html from stored records")
    rep.add_argument("results", type=Path)

    cmp = sub.add_parser("compare", help="compare a candidate results directory with a baseline (CI gate: "
                         "exit 0 pass, 1 regression, 2 bad input)")
    cmp.add_argument("baseline", type=Path, help="results directory with records/")
    cmp.add_argument("candidate", type=Path, help="results directory with records/")
    cmp.add_argument("--tolerance", action="append", metavar="METRIC=REL,...",
                     help="relative accuracy tolerances, e.g. forces_rmse_mev_per_ang=0.1 (or 10%%)")
    cmp.add_argument("--timing-ratio", type=float, dest="timing_ratio",
                     help="slowdown that fails, after normalising by the reference workload (default 1.5)")
    cmp.add_argument("--memory-ratio", type=float, dest="memory_ratio", help="peak-RSS growth that fails (default 1.3)")
    cmp.add_argument("--no-timing", action="store_true", dest="no_timing", help="compare accuracy and status only")
    cmp.add_argument("--allow-missing", action="store_true", dest="allow_missing",
                     help="runs missing in the candidate only warn")
    cmp.add_argument("--config", type=Path, help="TOML file of compare settings ([compare] table)")
    cmp.add_argument("--json", type=Path, help="also write the full comparison as JSON here")
    exp = sub.add_parser("export", help="copy saved models (native format) out of a results directory")
    exp.add_argument("results", type=Path, help="results directory with records/ and models/")
    exp.add_argument("which", help="a run id (or a unique prefix of one), or 'best': the best run of each model "
                     "by validation force RMSE")
    exp.add_argument("--to", type=Path, help="destination folder (default RESULTS/export)")
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    """Copy the models; exit 1 when a chosen run has no usable model (it says why and how)."""
    from bench.saved import LOADERS, export

    copies, problems = export(args.results, args.which, args.to)
    for path, about in copies:
        print(f"{path}  ({about['run']}; {about['format']}, {about['bytes']:,} bytes, sha256 {about['sha256'][:12]})")
        print(f"    load: {LOADERS.get(about['format'], '?').replace('PATH', str(path))}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_list(what: str) -> int:
    if what == "models":
        from bench import envs

        print(f"{'model':10} {'env':9} {'default checkpoint':32} {'blocks (forward order)':60} status")
        for m in MODELS.values():
            status = "environment ready" if envs.env_python(m).exists() else "environment built on first run"
            print(f"{m.key:10} {m.env:9} {m.default_checkpoint:32} {', '.join(m.blocks):60} {status}")
    elif what == "datasets":
        from datasets.registry import catalog

        for name, entry in catalog().items():
            print(f"{name:14} {entry['licence']:24} {entry['description']}")
            print(f"{'':14} source: {entry['repo']}@{entry['commit'][:10]}; {entry['citation']}")
    elif what == "presets":
        for name in preset_names():
            print(f"{name:10} {load_preset(name).get('description', '')}")
        print("\nor --preset FILE.toml / FILE.yaml with the same [sweep] and [headline] keys "
              f"(see {PRESET_DIR})")
    else:
        for name, text in strategies.help_lines():
            print(f"{name:22} {text}")
        print("\nreference energies (--e0):")
        for name, text in E0_POLICIES.items():
            print(f"{name:22} {text}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.api import run_sweep
    from bench.plan import make_plan

    given = {k: v for k, v in vars(args).items() if k not in {"command", "dry_run", "preset"}
             and not k.startswith("slurm_")}
    given["python"] = dict(args.python) if args.python else None
    given["slurm"] = {k.removeprefix("slurm_"): v for k, v in vars(args).items()
                      if k.startswith("slurm_") and v is not None}
    cfg = SweepConfig.from_preset(args.preset, **given)
    plan = make_plan(cfg)
    print(f"preset {cfg.preset}: {len(plan.runs)} runs on {plan.describe()} -> {cfg.out}", file=sys.stderr)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:  # spec ids: a run's id adds the runtime its worker resolves
        for run in plan.runs:
            print(f"{run.spec.spec_id}  {run.label}")
        for what in plan.waiting:
            print(f"(later) {what}")
        return 0
    results = run_sweep(cfg, log=lambda text: print(text, file=sys.stderr))
    print(f"done: {results.counts}; report: {results.root / 'report.md'} and {results.root / 'report.html'}",
          file=sys.stderr)
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from bench.check_data import check_data

    keys = LabelKeys(energy=args.energy_key, forces=args.forces_key, stress=args.stress_key, group=args.group_key,
                     stress_unit=args.stress_unit or DEFAULT_STRESS_UNIT)
    print("\n".join(check_data(args.dataset, keys=keys, test_size=args.test_size, test_file=args.test_file,
                               results=args.results)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu-check"]:  # its own options: python -m bench gpu-check --help
        from bench.gpu_check import main as gpu_check

        return gpu_check(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args.what)
        if args.command == "compare":
            from bench.compare import cmd_compare

            return cmd_compare(args)
        if args.command == "check-data":
            return cmd_check_data(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "report":
            from bench.report import write_report

            md, html = write_report(args.results)
            print(f"wrote {md} and {html}")
            return 0
        return cmd_run(args)
    except (UnknownName, DatasetError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
