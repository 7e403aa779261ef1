"""Helpers shared by the test modules (test modules import from here, never from each other).

* the linear toy system ``s' = A s + B a`` with a known zero pattern, as a data set;
* finite differences of a Playground simulator's own compiled step, and states a
  random policy visits.
"""

from __future__ import annotations

import jax
import numpy as np

import jacobian_wrappers as jw
from dynamic_sparsity.analysis.storage import DatasetMeta, TransitionWriter
from world_models import Normaliser, TrainConfig

D_S, D_A = 3, 2
# Linear toy dynamics with structural zeros: s' = A s + B a.
A = np.array([[1.0, 0.1, 0.0], [0.0, 0.9, 0.0], [0.2, 0.0, 1.0]])
B = np.array([[0.0, 0.5], [0.3, 0.0], [0.0, 0.0]])


def write_linear(
    path, n_episodes=20, ep_len=25, jacobians=True, seed=0, episode_offset=0, flag_every=0
):
    """A data set of the linear toy system, one random action sequence per episode.

    With ``flag_every=k`` every k-th step marks the first action column non-smooth.
    """
    rng = np.random.default_rng(seed)
    meta = DatasetMeta(
        env_name="Linear",
        precision="float64",
        dt=0.01,
        state_labels=("x", "y", "z"),
        tangent_labels=("x", "y", "z"),
        action_labels=("u", "v"),
        jacobians=jacobians,
        versions={},
    )
    with TransitionWriter(path, meta, chunk_size=64) as w:
        for ep in range(n_episodes):
            s = rng.normal(size=D_S) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
            rows = {k: [] for k in meta.columns()}
            for t in range(ep_len):
                a = rng.uniform(-1, 1, D_A)
                s2 = A @ s + B @ a
                rows["state"].append(s)
                rows["action"].append(a)
                rows["next_state"].append(s2)
                rows["reward"].append(0.0)
                rows["episode"].append(ep + episode_offset)
                rows["step"].append(t)
                rows["terminated"].append(False)
                rows["truncated"].append(t == ep_len - 1)
                rows["n_contacts"].append(0)
                if jacobians:
                    rows["jacobian_state"].append(A)
                    rows["jacobian_action"].append(B)
                    flags = np.zeros(D_S + D_A, bool)
                    flags[D_S] = flag_every > 0 and t % flag_every == 0
                    rows["jacobian_nonsmooth"].append(flags)
                s = s2
            w.append({k: np.asarray(v) for k, v in rows.items()})
    return path


def random_normaliser(rng, d_s=D_S, d_a=D_A) -> Normaliser:
    dims = {"state": d_s, "action": d_a, "next_state": d_s, "delta": d_s}
    return Normaliser(
        mean={k: rng.normal(size=n) for k, n in dims.items()},
        std={k: rng.uniform(0.2, 3.0, size=n) for k, n in dims.items()},
        eps=1e-3,
    )


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


#: A small world-model config for the RL-loop tests (trains in seconds).
SMALL_CONFIG = TrainConfig(width=32, depth=2, dropout=0.0, lr=3e-3, weight_decay=0.0, batch_size=64)


def fill_buffer(env, buffer, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Step ``env`` with random actions into ``buffer``; return the transitions fed."""
    rng = np.random.default_rng(seed)
    obs = env.reset()
    fed = []
    for _ in range(steps):
        a = rng.uniform(-1, 1, (env.num_envs, 1))
        new_obs, r, d, infos = env.step(a)
        buffer.add(obs, new_obs, a, r, d, infos)
        fed.append({k: np.array(v) for k, v in env.last_transition.items()})
        obs = new_obs
    return fed


def linear_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` rows of the linear toy system with its exact Jacobians (replay-buffer layout)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, D_S))
    a = rng.uniform(-1, 1, (n, D_A))
    s2 = s @ A.T + a @ B.T
    return {
        "state": s, "action": a, "next_state": s2, "reward": s2[:, 0] - 0.5 * a[:, 1],
        "jacobian_state": np.broadcast_to(A, (n, D_S, D_S)).copy(),
        "jacobian_action": np.broadcast_to(B, (n, D_S, D_A)).copy(),
        "jacobian_nonsmooth": np.zeros((n, D_S + D_A), bool),
    }  # fmt: skip
