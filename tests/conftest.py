"""Session-scoped Playground envs (compiled once) and an independent finite difference."""

from __future__ import annotations

import os

# The suite runs with JAX's persistent cache off (CI starts cold anyway, and
# one SIGABRT inside JAX's cache write was seen here); tests of the cache turn
# it on in subprocesses. Set DYNAMIC_SPARSITY_CACHE_DIR to a path to use one.
os.environ.setdefault("DYNAMIC_SPARSITY_CACHE_DIR", "off")

import pytest

import jacobian_wrappers as jw
from tests.helpers import write_linear


@pytest.fixture(scope="session")
def cartpole64() -> jw.PlaygroundEnv:
    return jw.PlaygroundEnv("CartpoleBalance", seed=0, precision="float64")


@pytest.fixture(scope="session")
def cartpole32() -> jw.PlaygroundEnv:
    return jw.PlaygroundEnv("CartpoleBalance", seed=0, precision="float32")


@pytest.fixture()
def linear_h5(tmp_path):
    """The linear toy system of ``tests/helpers.py`` (known zero pattern)."""
    return write_linear(tmp_path / "linear.h5")


@pytest.fixture(scope="session")
def cartpole_h5(tmp_path_factory):
    """A small real float64 CartpoleBalance data set with Jacobians (world-model tests)."""
    path = tmp_path_factory.mktemp("wm") / "cartpole.h5"
    env = jw.PlaygroundVecEnv("CartpoleBalance", 8, precision="float64", episode_length=100)
    jw.collect(env, 3200, path)
    return path


@pytest.fixture(scope="session")
def cartpole_env():
    """A float64 CartpoleBalance VecEnv with Jacobians and short episodes (dones happen)."""
    return jw.PlaygroundVecEnv("CartpoleBalance", 2, seed=0, precision="float64", episode_length=15)
