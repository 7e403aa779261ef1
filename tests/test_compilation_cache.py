"""The persistent compilation cache: where it lives, the off switch, and that it fills."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jacobian_wrappers import compilation_cache as cc


def test_resolution_order(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(cc.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cc._resolve(None) == tmp_path / "xdg" / "dynamic-sparsity" / "jax"
    monkeypatch.setenv(cc.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cc._resolve(None) == tmp_path / "env"
    assert cc._resolve(tmp_path / "arg") == tmp_path / "arg"  # argument beats variable
    for off in ("off", "0", "false", "none"):
        monkeypatch.setenv(cc.CACHE_ENV_VAR, off)
        assert cc._resolve(None) is None
    assert cc._resolve(False) is None
    assert cc._resolve("off") is None


_SCRIPT = """
import numpy as np, jacobian_wrappers as jw
env = jw.JacobianWrapper(jw.PlaygroundEnv("CartpoleBalance", compilation_cache={arg}))
env.reset(seed=0)
print(env.step(np.zeros(1, dtype=np.float32))[4]["jacobian_state"].shape)
"""


def _run(arg: str, cache_env: str | None) -> str:
    env = {**os.environ}
    env.pop(cc.CACHE_ENV_VAR, None)
    if cache_env is not None:
        env[cc.CACHE_ENV_VAR] = cache_env
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(arg=arg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_cache_fills_and_off_switch(tmp_path: Path) -> None:
    on = tmp_path / "on"
    assert "(4, 4)" in _run(repr(str(on)), None)
    assert len(list(on.iterdir())) >= 2  # reset and step-with-Jacobian programs
    via_env = tmp_path / "via_env"
    _run("None", str(via_env))
    assert len(list(via_env.iterdir())) >= 2
    off = tmp_path / "off"
    _run("False", str(off))
    assert not off.exists()
