"""Environment building: a family whose environment cannot work fails with a clear message."""

from __future__ import annotations

import dataclasses

import pytest

from bench import envs
from bench.registry import get_model


def test_unbuildable_environment_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_ENV_DIR", str(tmp_path))
    bogus = dataclasses.replace(get_model("chgnet"), env="bogus", adapter="adapters.no_such_adapter:X")
    with pytest.raises(envs.EnvironmentBuildError, match="cannot import adapters.no_such_adapter:X"):
        envs.ensure(bogus, log=lambda _: None)
    assert not envs.probe(bogus)


def test_environment_paths_follow_bench_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_ENV_DIR", str(tmp_path))
    assert envs.env_python(get_model("mace")) == tmp_path / "mace" / "bin" / "python"
