"""Session-scoped Playground envs (compiled once) and an independent finite difference."""

from __future__ import annotations

import os

# The suite runs with JAX's persistent cache off (CI starts cold anyway, and
# one SIGABRT inside JAX's cache write was seen here); tests of the cache turn
# it on in subprocesses. Set DYNAMIC_SPARSITY_CACHE_DIR to a path to use one.
os.environ.setdefault("DYNAMIC_SPARSITY_CACHE_DIR", "off")

import jax
import numpy as np
import pytest

import jacobian_wrappers as jw


def finite_difference_jacobian(
    sim: jw.Simulator, state, action: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """Central differences of the same compiled step, ``[J_s | J_a]``.

    States are moved along tangent directions (``mj_integratePos``) and outputs
    compared by ``mj_differentiatePos``; for models without free or ball joints
    (``nq == nv``) both are plain addition and subtraction.
    """
    space = sim.space
    s0 = np.asarray(space.get(state.data), dtype=np.float64)
    a0 = np.asarray(action, dtype=np.float64)

    def step(delta: np.ndarray, a: np.ndarray) -> np.ndarray:
        with sim.scope():
            s = space.perturb(jax.numpy.asarray(s0), jax.numpy.asarray(delta))
            st = state.replace(data=space.set(state.data, s))
            return sim.step(st, a).s_next

    def diff(lo, hi) -> np.ndarray:
        with sim.scope():
            return np.asarray(space.difference(lo, hi)) / (2 * h)

    zero = np.zeros(space.tangent_dim)
    cols = []
    for j in range(space.tangent_dim):
        e = np.zeros_like(zero)
        e[j] = h
        cols.append(diff(step(-e, a0), step(e, a0)))
    for j in range(a0.size):
        e = np.zeros_like(a0)
        e[j] = h
        cols.append(diff(step(zero, a0 - e), step(zero, a0 + e)))
    return np.stack(cols, axis=1)


def rollout_states(sim: jw.Simulator, n_steps: int, every: int, seed: int = 0):
    """Playground states visited by a random policy, one every ``every`` steps."""
    rng = np.random.default_rng(seed)
    state = sim.reset(jax.random.PRNGKey(seed))
    out = []
    for t in range(1, n_steps + 1):
        state = sim.step(state, rng.uniform(-1, 1, sim.action_size)).state
        if t % every == 0:
            out.append((state, rng.uniform(-1, 1, sim.action_size)))
    return out


@pytest.fixture(scope="session")
def cartpole64() -> jw.PlaygroundEnv:
    return jw.PlaygroundEnv("CartpoleBalance", seed=0, precision="float64")


@pytest.fixture(scope="session")
def cartpole32() -> jw.PlaygroundEnv:
    return jw.PlaygroundEnv("CartpoleBalance", seed=0, precision="float32")


@pytest.fixture()
def linear_h5(tmp_path):
    """The linear toy system of ``tests/test_world_models.py`` (known zero pattern)."""
    from tests.test_world_models import write_linear

    return write_linear(tmp_path / "linear.h5")


@pytest.fixture(scope="session")
def cartpole_h5(tmp_path_factory):
    """A small real float64 CartpoleBalance data set with Jacobians (world-model tests)."""
    path = tmp_path_factory.mktemp("wm") / "cartpole.h5"
    env = jw.PlaygroundVecEnv("CartpoleBalance", 8, precision="float64", episode_length=100)
    jw.collect(env, 3200, path)
    return path
