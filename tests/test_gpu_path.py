"""What of the GPU path a CPU machine can check: device placement and its refusals, a fresh
process per run (what GPU runs use), worker failures that always end in a record with their
reason, and families run by an interpreter the user already has (--python). Real M3GNet workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.core.contract import DataFiles, Job, JobPaths, Result, Runtime, TrainConfig, TrainSpec
from tests.test_sweep_e2e import BASE, ROOT, bench

M3GNET = ROOT / ".venvs" / "m3gnet"
TINY = [*BASE, "--models", "m3gnet", "--strategies", "zero-shot,finetune", "--sizes", "2", "--seeds", "0",
        "--epochs", "1", "--batch-size", "2", "--pool-size", "4", "--val-size", "2", "--perf-structures", "0",
        "--threads", "1"]


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def test_device_cuda_without_a_gpu_is_a_record_naming_the_missing_device(tmp_path):
    out = tmp_path / "res"
    bench("run", *TINY, "--device", "cuda", "--out", str(out))
    recs = records(out)
    assert len(recs) == 2 and {r["status"] for r in recs} == {"failed"}
    for r in recs:
        assert r["reason"].startswith("--device cuda: no CUDA device is visible to the m3gnet workers: ")
        assert r["runtime"]["device"] == "cuda (not visible)"


def test_a_fresh_process_per_run_gives_the_fork_server_s_results(tmp_path):
    fork, fresh = tmp_path / "fork", tmp_path / "fresh"
    bench("run", *TINY, "--out", str(fork))
    bench("run", *TINY, "--isolation", "process", "--out", str(fresh))
    a, b = ({r["spec_id"]: r for r in records(d)} for d in (fork, fresh))
    assert set(a) == set(b) and {r["status"] for r in b.values()} == {"ok"}
    for sid, rec in a.items():  # same code, same seeds, one thread: the same numbers
        assert b[sid]["metrics"]["forces_rmse_mev_per_ang"] == rec["metrics"]["forces_rmse_mev_per_ang"]
    assert list((fork / "logs").glob("server-*.log")) and not list((fresh / "logs").glob("server-*.log"))


def _job(tmp_path: Path, device: str) -> Path:
    from datasets import load_dataset

    ds = load_dataset("mlearn-Mo")
    from ase.io import write

    pool, test = tmp_path / "pool.xyz", tmp_path / "test.xyz"
    write(pool, ds.pool[:4], format="extxyz")
    write(test, ds.test[:2], format="extxyz")
    spec = TrainSpec(model="m3gnet", family="m3gnet", checkpoint="M3GNet-MatPES-PBE-v2025.1-PES", dataset="d",
                     dataset_sha256="0" * 64, strategy="finetune", freeze_k=0, e0_policy="refit", train_size=2,
                     train_size_requested=2, seed=0, train_config=TrainConfig(epochs=1, batch_size=2))
    job = Job(spec=spec, run_id="r", runtime=Runtime(device=device), adapter="adapters.m3gnet_adapter:M3GNetAdapter",
              packages=("torch", "matgl"), data=DataFiles(pool=str(pool), test=str(test), train=(0, 1), val=(2, 3)),
              device=device, paths=JobPaths(result=str(tmp_path / "result.json"), progress=str(tmp_path / "p.jsonl"),
                                            log=str(tmp_path / "log"), predictions=str(tmp_path / "p.npz")))
    job.write(tmp_path / "job.json")
    return tmp_path / "job.json"


def test_a_worker_that_cannot_use_its_device_writes_a_result_saying_so(tmp_path):
    """The worker's own check, past the orchestrator's: a result with the reason, the traceback
    and the environment, never an empty log and a bare exit code."""
    job = _job(tmp_path, "cuda")
    proc = subprocess.run([str(M3GNET / "bin" / "python"), "-m", "adapters.worker", str(job)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    result = Result.read(tmp_path / "result.json")
    assert result.status == "failed" and "--device cuda: no CUDA device is visible to this worker" in result.reason
    assert "RuntimeError" in result.traceback and result.environment.packages["matgl"]


def test_an_unreadable_job_ends_in_a_failed_record_with_the_traceback(tmp_path, monkeypatch):
    """Whatever the worker cannot even start on ends in a record whose log tail says why."""
    from bench import runner
    from bench.config import SweepConfig
    from bench.plan import make_plan
    from bench.store import Store
    from bench.workers import WorkerSlot

    cfg = SweepConfig.from_preset(BASE[1], models="m3gnet", strategies=("zero-shot",), perf_structures=0,
                                  out=str(tmp_path))
    plan = make_plan(cfg)
    store = Store(tmp_path).prepare()
    data = {name: runner._data_files(ds, store) for name, ds in plan.datasets.items()}
    monkeypatch.setattr(Job, "write", lambda self, path: Path(path).write_text('{"spec": {"kind": "trai'))
    slot = WorkerSlot(tmp_path, 1)
    try:
        outcome = runner.run_planned(plan.runs[0], slot, data=data, store=store, cfg=cfg, known_skips={})
    finally:
        slot.close()
    record = outcome.record
    assert record.status == "failed" and record.reason == "worker exited with code 1"
    assert "JSONDecodeError" in record.log_tail and "Traceback" in record.log_tail


def _foreign_python(root: Path, with_library: bool) -> Path:
    """A fresh virtual environment without ftbench: the m3gnet environment's packages on its
    path (a .pth line: its own .pth files, ftbench's editable install among them, stay inactive)."""
    subprocess.run([str(M3GNET / "bin" / "python"), "-m", "venv", "--without-pip", str(root)], check=True)
    if with_library:
        site = next((M3GNET / "lib").glob("python3*/site-packages"))
        (next((root / "lib").glob("python3*/site-packages")) / "m3gnet-packages.pth").write_text(f"{site}\n")
    return root / "bin" / "python"


def test_a_family_runs_from_an_interpreter_the_user_already_has(tmp_path):
    python = _foreign_python(tmp_path / "foreign", with_library=True)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([str(python), "-c", "import matgl; import bench"], capture_output=True, text=True,
                           cwd=tmp_path, env=clean)
    assert "No module named 'bench'" in probe.stderr  # ftbench is not installed there
    out = tmp_path / "res"
    bench("run", *TINY, "--python", f"m3gnet={python}", "--out", str(out))
    recs = records(out)
    assert {r["status"] for r in recs} == {"ok"}
    assert {r["environment"]["executable"] for r in recs} == {str(python)}
    assert recs[0]["runtime"]["packages"]["matgl"] == "4.1.2"
    broken = _foreign_python(tmp_path / "broken", with_library=False)
    out = tmp_path / "res-broken"
    proc = bench("run", *TINY, "--strategies", "zero-shot", "--out", str(out), check=False,
                 env={**os.environ, "BENCH_PYTHON_M3GNET": str(broken)})
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(out)
    assert rec["status"] == "failed"
    assert rec["reason"].startswith(f"environment unavailable: --python m3gnet={broken} cannot import "
                                    "adapters.m3gnet_adapter:M3GNetAdapter and matgl: ModuleNotFoundError")
    assert sys.executable  # the orchestrator itself never needed torch
