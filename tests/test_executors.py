"""Executors (local, pool, submitit's local executor) and faults, through real M3GNet workers.

M3GNet is the fastest family on a CPU; the runs are tiny (1-2 structures, 1 epoch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.executors import Pool
from tests.test_sweep_e2e import BASE, ROOT, bench, records

TINY_M3GNET = [*BASE, "--models", "m3gnet", "--strategies", "finetune,freeze-interactions", "--sizes", "1,2",
               "--seeds", "0", "--epochs", "1", "--batch-size", "2", "--pool-size", "4", "--val-size", "2",
               "--perf-structures", "0"]


def all_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def last_sweep(out: Path) -> dict:
    return json.loads((out / "sweeps.jsonl").read_text().splitlines()[-1])


def test_pool_slots_share_the_cores_and_take_one_gpu_each(tmp_path):
    slots = Pool(tmp_path, threads=8, workers=3, gpus=0).slots
    assert [s.threads for s in slots] == [2, 2, 2] and all(not s.env for s in slots)
    gpus = Pool(tmp_path, threads=2, workers=3, gpus=2).slots
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "1", "0"] and gpus[0].threads == 1


def test_pool_runs_the_same_specs_as_local_with_a_core_each(tmp_path):
    out = tmp_path / "pool"
    bench("run", *TINY_M3GNET, "--executor", "pool", "--workers", "2", "--threads", "2", "--out", str(out))
    recs = all_records(out)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    assert {r["environment"]["threads"] for r in recs} == {1}  # 2 cores / 2 workers
    sweep = last_sweep(out)
    assert sweep["executor"] == "pool" and sweep["workers"] == 2 and sweep["counts"]["ok"] == 4
    plan = [line.split()[0] for line in bench("run", *TINY_M3GNET, "--dry-run", "--out", str(out)).stdout.splitlines()]
    assert sorted(r["spec_id"] for r in recs) == sorted(plan)  # dry-run lists spec ids
    again = bench("run", *TINY_M3GNET, "--executor", "pool", "--out", str(out))  # idempotent
    assert again.stderr.count("ok (stored)") == 4 and len(all_records(out)) == 4


def test_submitit_local_executor_runs_each_run_as_a_job_with_its_own_logs(tmp_path):
    out = tmp_path / "submitit"
    bench("run", *TINY_M3GNET, "--sizes", "1", "--executor", "submitit-local", "--workers", "2",
          "--out", str(out))
    recs = all_records(out)
    assert len(recs) == 2 and {r["status"] for r in recs} == {"ok"}, [r.get("reason") for r in recs]
    assert len(list((out / "submitit").glob("*_log.out"))) == 2  # one log per job
    assert last_sweep(out)["executor"] == "submitit-local"
    assert "## Headline" in (out / "report.md").read_text()


def test_slurm_without_a_cluster_is_a_clear_error(tmp_path):
    proc = bench("run", *TINY_M3GNET, "--executor", "slurm", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "submitit-local" in proc.stderr and "srun" in proc.stderr


def test_two_sweeps_on_one_results_directory_run_each_spec_once(tmp_path):
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "bench", "run", *TINY_M3GNET, "--threads", "1", "--out", str(out)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    recs = all_records(out)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    logs = [json.loads(line) for line in (out / "sweeps.jsonl").read_text().splitlines()]
    ran = sum(entry["counts"].get("ok", 0) for entry in logs)
    assert ran == 4, errs  # every spec trained exactly once across both sweeps
    assert not list(out.glob("records/.*tmp"))


def _forked_children(server_pid: int) -> list[int]:
    path = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_worker_killed_mid_run_is_a_failed_record_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "kill"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *TINY_M3GNET, "--epochs", "20",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline, victim = time.monotonic() + 600, None
    while victim is None:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
        if list((out / "jobs").glob("*.progress.jsonl")):  # the first run is training
            servers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "adapters.worker --serve"],
                                     capture_output=True, text=True).stdout.split()
            children = [c for s in servers for c in _forked_children(int(s))]
            victim = children[0] if children else None
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    proc.communicate(timeout=900)
    assert proc.returncode == 0
    recs = sorted(all_records(out), key=lambda r: r["provenance"]["started_at"])
    assert len(recs) == 4
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(failed) == 1 and "worker killed by SIGKILL (out of memory?)" in failed[0]["reason"]
    assert sum(r["status"] == "ok" for r in recs) == 3  # the others ran after it, same server
    redo = bench("run", *TINY_M3GNET, "--epochs", "20", "--out", str(out))
    assert redo.stderr.count("ok (stored)") == 3
    assert {r["status"] for r in all_records(out)} == {"ok"}


@pytest.mark.parametrize("executor", ["local", "pool"])
def test_an_environment_that_cannot_be_built_fails_its_runs_and_others_continue(tmp_path, executor):
    env_dir = tmp_path / "envs"
    env_dir.mkdir()
    (env_dir / "m3gnet").write_text("not a directory: the venv cannot be created here\n")
    real = ROOT / ".venvs" / "chgnet"
    (env_dir / "chgnet").symlink_to(real)
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", *BASE, "--models", "m3gnet,chgnet", "--strategies",
                           "zero-shot", "--perf-structures", "0", "--executor", executor, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "BENCH_ENV_DIR": str(env_dir)})
    assert proc.returncode == 0, proc.stderr
    recs = records(out)
    assert recs["chgnet/zero-shot"]["status"] == "ok"
    assert recs["m3gnet/zero-shot"]["status"] == "failed"
    assert "environment unavailable: building the m3gnet environment failed" in recs["m3gnet/zero-shot"]["reason"]
