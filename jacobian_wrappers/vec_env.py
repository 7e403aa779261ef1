"""``PlaygroundVecEnv``: many Playground envs, their steps and Jacobians in one jitted call."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from jacobian_wrappers._validation import (
    check_array,
    check_backend,
    check_int,
    check_optional_int,
    resolve_jacobian_method,
)
from jacobian_wrappers.agreement import MISMATCH_TOLERANCE, mark_mismatch, next_state_error
from jacobian_wrappers.batched_vec_env import BatchedVecEnv
from jacobian_wrappers.compilation_cache import compile_notice
from jacobian_wrappers.jacobian_wrapper import resolve_info_keys
from jacobian_wrappers.simulator import Simulator, TaskAttributes, get_simulator

__all__ = ["PlaygroundVecEnv"]


def _resolve_devices(devices: int | Sequence[Any] | None, n_envs: int) -> list[Any]:
    """The devices of ``PlaygroundVecEnv(devices=...)``; see its docstring."""
    local = jax.local_devices()
    if devices is None:
        return local if n_envs % len(local) == 0 else local[:1]
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices must be in [1, {len(local)}] (local devices), got {devices}")
        chosen = local[: int(devices)]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices is an empty list")
    if n_envs % len(chosen):
        raise ValueError(
            f"n_envs={n_envs} cannot be split over {len(chosen)} devices: give a multiple of "
            f"{len(chosen)} or fewer devices"
        )
    return chosen


def _select(mask: jax.Array, a: Any, b: Any) -> Any:
    """Per env (axis 0), leaves of ``a`` where ``mask`` else leaves of ``b``."""

    def pick(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y)

    return jax.tree.map(pick, a, b)


#: Row counts the unrolled recomputation of unverified transitions is compiled for.
_RECOMPUTE_BUCKETS = (8, 64, 512)

#: The Jacobian fields of each env's info, in the order ``step_wait`` fills them.
_INFO_FIELDS = ("state", "action", "next_state", "jacobian_state", "jacobian_action", "nonsmooth")


class PlaygroundVecEnv(TaskAttributes, BatchedVecEnv):
    """``n_envs`` copies of a Playground task as one Stable-Baselines3 ``VecEnv``.

    Every ``step`` is one jitted, vmapped call that computes the next states,
    rewards, dones and, on steps chosen by ``jacobian_every``, the exact
    Jacobians of all envs, *before* auto-reset, so a done step reports its real
    last transition. Auto-reset happens inside the same call (a ``lax.cond``
    that costs nothing on steps without a done) and follows SB3's contract:
    ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]``.

    On steps with Jacobians, ``infos[i]`` carries the keys of
    :class:`~jacobian_wrappers.JacobianWrapper` (``"state"``, ``"action"``,
    ``"next_state"``, ``"jacobian_state"``, ``"jacobian_action"``,
    ``"jacobian_nonsmooth"``); on other steps they are absent. With
    ``backend="mujoco"`` a step whose C next state leaves the env's own (MJX)
    one beyond round-off gets ``infos[i]["jacobian_mismatch"] = True`` and every
    column of its ``jacobian_nonsmooth`` set (:mod:`jacobian_wrappers.agreement`).
    A step whose state turns non-finite sets ``infos[i]["nonfinite"] = True``,
    ends the episode as truncated and resets that env; its
    ``terminal_observation`` is the last finite observation. Every step's
    ``infos[i]["n_contacts"]`` counts the active contacts of the step's last substep.

    After each step, :attr:`last_transition` holds the whole batch as arrays
    (``state``, ``action``, ``next_state``, ``reward``, ``terminated``,
    ``truncated``, ``n_contacts`` and, on Jacobian steps, ``jacobian_state``,
    ``jacobian_action`` and ``jacobian_nonsmooth``), for consumers that want no
    per-env dicts.

    Env ``i`` is seeded like ``PlaygroundEnv(seed=seed + i)``; later episodes
    split that key, as the single env does.

    Args:
        env_name: Task name, e.g. ``"CheetahRun"``.
        n_envs: Number of environments (>= 1).
        seed: Seed of env 0; env ``i`` gets ``seed + i``.
        jacobians: Whether to compute Jacobians at all.
        precision: ``"float32"`` or ``"float64"``; ``None`` (default): ``"float64"``
            with Jacobians (zero tests such as ``|J| < 1e-15`` need it, and the
            exact float64 path is as fast as float32 on the contact envs,
            docs/performance.md), ``"float32"`` without.
        jacobian_every: Compute Jacobians on every ``jacobian_every``-th step
            (counting from the first step after construction).
        config_overrides: Playground config overrides (``impl`` stays ``jax``).
        episode_length: Steps until truncation; Playground's default when ``None``.
        compilation_cache: See ``enable_compilation_cache``.
        info_keys: Renames of the info keys, as in ``JacobianWrapper``.
        backend: ``"mjx"`` (default: exact Jacobians inside the jitted step) or
            ``"mujoco"`` (the jitted step without Jacobians, then MuJoCo's C
            finite differences of the same steps, threaded over all cores; not
            exact, see docs/env.md#backends).
        jacobian_method: How the exact (``"mjx"``) Jacobians pass the constraint
            solver: ``"implicit"`` (differentiated at its solution, and where
            that is not verified exact for a transition, that transition is
            recomputed ``"unrolled"`` in a second, smaller call; counts in
            :attr:`jacobian_counts`) or ``"unrolled"`` (through every solver
            iteration). Both give the same Jacobians (docs/env.md#exact-and-fast).
            ``None`` (default): ``"implicit"`` in float64, ``"unrolled"`` in
            float32, the faster of the two there.
        devices: JAX devices the env batch is split over (the env axis
            sharded, ``n_envs / len(devices)`` envs each; the same transitions
            as on one device). ``None`` (default): every local device when
            their number divides ``n_envs``, else the first; an int: the first
            that many local devices; or a list of devices.

    Raises:
        TypeError: ``n_envs``, ``seed``, ``jacobian_every`` or ``episode_length``
            not an int, or ``config_overrides`` not a dict.
        ValueError: ``n_envs < 1``, ``jacobian_every < 1``, ``episode_length < 1``,
            unknown ``precision``, ``backend``, ``jacobian_method``, ``env_name``
            or config key, or ``devices`` that do not divide ``n_envs``.
            All checked before anything compiles.

    Example:
        >>> import numpy as np
        >>> import jacobian_wrappers as jw
        >>> venv = jw.PlaygroundVecEnv("CartpoleBalance", n_envs=2, episode_length=8)
        >>> venv.precision  # with Jacobians, float64 unless asked otherwise
        'float64'
        >>> obs = venv.reset()
        >>> obs, rewards, dones, infos = venv.step(np.zeros((2, 1)))
        >>> infos[0]["jacobian_state"].shape, venv.last_transition["jacobian_action"].shape
        ((4, 4), (2, 4, 1))
    """

    def __init__(
        self,
        env_name: str,
        n_envs: int,
        *,
        seed: int = 0,
        jacobians: bool = True,
        precision: str | None = None,
        jacobian_every: int = 1,
        config_overrides: dict[str, Any] | None = None,
        episode_length: int | None = None,
        compilation_cache: Any = None,
        info_keys: dict[str, str] | None = None,
        backend: str = "mjx",
        jacobian_method: str | None = None,
        devices: int | Sequence[Any] | None = None,
    ) -> None:
        n_envs = check_int(n_envs, "n_envs", minimum=1)
        self.backend = check_backend(backend)
        if not isinstance(jacobians, bool | np.bool_):
            raise TypeError(f"jacobians must be a bool, got {jacobians!r}")
        if precision is None:
            precision = "float64" if jacobians else "float32"
        self.jacobian_method = resolve_jacobian_method(jacobian_method, precision)
        self.info_keys = resolve_info_keys(info_keys)
        seed = check_int(seed, "seed")
        jacobian_every = check_int(jacobian_every, "jacobian_every", minimum=1)
        episode_length = check_optional_int(episode_length, "episode_length", minimum=1)
        self.sim: Simulator = get_simulator(
            env_name, precision, config_overrides, compilation_cache
        )
        self.env_name = env_name
        self.precision = precision
        self.jacobians = bool(jacobians)
        self.jacobian_every = jacobian_every
        self.episode_length = episode_length or self.sim.episode_length
        self.render_mode = None
        super().__init__(n_envs, *self.sim.spaces())
        self._base_seed = seed
        self._step_count = 0
        self._actions: np.ndarray | None = None
        self._state: Any = None
        self._keys: jax.Array | None = None
        self._elapsed: jax.Array | None = None
        self._obs: np.ndarray | None = None
        self.last_transition: dict[str, np.ndarray] = {}
        #: Whether ``infos`` carry the Jacobian keys; ``collect`` turns it off while it
        #: reads :attr:`last_transition` (the batch arrays) and needs no per-env dicts.
        self.jacobians_in_infos = True
        #: Transitions whose exact Jacobians came out of the one jitted step
        #: (``"step"``) and those recomputed ``"unrolled"`` because the implicit
        #: solver tangent could not be verified (``"recomputed"``).
        self.jacobian_counts = {"step": 0, "recomputed": 0}
        self.devices = _resolve_devices(devices, n_envs)
        self._sharding = _env_sharding(tuple(self.devices))
        # Shared by every VecEnv of this simulator, episode length, method and sharding:
        # a second env of the same kind (an evaluation env, a resumed run) compiles nothing.
        self._step_fns = {
            flag: _step_program(
                self.sim, self.episode_length, self.jacobian_method, flag, self._sharding
            )
            for flag in (False, True)
        }

    # ------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        """Reset every env; seeds given to ``seed()`` apply to this reset only."""
        seeds = [
            s if s is not None else (self._base_seed + i if self._keys is None else None)
            for i, s in enumerate(self._seeds)
        ]
        with self.sim.scope():
            if self._keys is None or all(s is not None for s in seeds):
                keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
                reset_keys = keys
            else:
                split = jax.vmap(jax.random.split)(self._keys)
                keys, reset_keys = split[:, 0], split[:, 1]
                for i, s in enumerate(seeds):
                    if s is not None:
                        keys = keys.at[i].set(jax.random.PRNGKey(s))
                        reset_keys = reset_keys.at[i].set(keys[i])
            self._state = self._shard(self.sim.batch_reset(reset_keys))
            self._keys = self._shard(keys)
            self._elapsed = self._shard(jnp.zeros(self.num_envs, dtype=jnp.int32))
        self._reset_seeds()
        self._reset_options()
        self._obs = np.asarray(self._state.obs)
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for ``step_wait``.

        Raises:
            ValueError: If ``actions`` is not ``(n_envs, d_a)`` or holds NaN/inf.
        """
        shape = (self.num_envs, *self.action_space.shape)
        self._actions = check_array(actions, shape, self.sim.dtype, name="actions")

    def _shard(self, tree: Any) -> Any:
        """``tree`` with its env axis split over :attr:`devices` (as is on one device)."""
        return tree if self._sharding is None else jax.device_put(tree, self._sharding)

    def step_wait(self) -> VecEnvStepReturn:
        """Run the jitted step of all envs; see the class docstring for ``infos``."""
        if self._state is None:
            raise gym.error.ResetNeeded("Call reset() before step().")
        with_jac = self.jacobians and self._step_count % self.jacobian_every == 0
        self._step_count += 1
        in_step = with_jac and self.backend == "mjx"
        warm = self.warmstarts if with_jac and not in_step else None
        before = self._state
        with compile_notice(self._program_name(in_step)):
            self._state, self._keys, self._elapsed, host = self._step_fns[in_step](
                self._state, self._keys, self._elapsed, self._actions
            )
        host = np.asarray(host)
        o, d_s = self.sim.observation_size, self.sim.space.dim
        obs, rest = host[:, :o], host[:, o:]
        rewards = rest[:, 0].astype(np.float32)
        terminated, truncated, finite = rest[:, 1] > 0, rest[:, 2] > 0, rest[:, 3] > 0
        n_contacts = rest[:, 4].astype(np.int32)
        terminal_obs, rest = rest[:, 5 : 5 + o], rest[:, 5 + o :]
        s, s_next, rest = rest[:, :d_s], rest[:, d_s : 2 * d_s], rest[:, 2 * d_s :]
        dones = terminated | truncated
        self.last_transition = {
            "state": s,
            "action": self._actions,
            "next_state": s_next,
            "reward": rewards,
            "terminated": terminated,
            "truncated": truncated,
            "n_contacts": n_contacts,
        }
        if with_jac:
            d_t = self.sim.space.tangent_dim
            cols = d_t + self.sim.action_size
            mismatch = np.zeros(self.num_envs, dtype=bool)  # MJX's own step: never
            if in_step:
                flat, nonsmooth = rest[:, : d_t * cols], rest[:, d_t * cols : -1] > 0
                redo = np.flatnonzero(rest[:, -1] == 0)
                self.jacobian_counts["step"] += self.num_envs - len(redo)
                if len(redo):
                    flat, nonsmooth = flat.copy(), nonsmooth.copy()
                    flat[redo], nonsmooth[redo] = self._recompute(before, redo)
            else:
                c_next, jac, nonsmooth = self.sim.fd_jacobian(s, self._actions, warm)
                flat = jac.astype(s.dtype).reshape(self.num_envs, -1)
                # The C step differentiated here is not the MJX step the envs took.
                mismatch = next_state_error(c_next, s_next) > MISMATCH_TOLERANCE[self.precision]
                nonsmooth = mark_mismatch(nonsmooth, mismatch)
            jac = flat.reshape(self.num_envs, d_t, cols)
            self.last_transition["jacobian_state"] = jac[:, :, :d_t]
            self.last_transition["jacobian_action"] = jac[:, :, d_t:]
            self.last_transition["jacobian_nonsmooth"] = nonsmooth
        if with_jac and self.jacobians_in_infos:
            # One dict per env is what SB3's VecEnv API asks for; its entries are
            # views into the batch arrays (rows of s, s', J), built in one pass.
            keys = self.info_keys
            names = ("n_contacts", *(keys[k] for k in _INFO_FIELDS))
            columns = (s, self._actions, s_next, jac[:, :, :d_t], jac[:, :, d_t:], nonsmooth)
            rows = zip(n_contacts.tolist(), *columns, strict=True)
            infos = [dict(zip(names, row, strict=True)) for row in rows]
            for i in np.flatnonzero(~np.isfinite(flat).all(axis=1)):
                infos[i]["jacobian_nonfinite"] = True
            for i in np.flatnonzero(mismatch):
                infos[i]["jacobian_mismatch"] = True
        else:
            infos = [{"n_contacts": c} for c in n_contacts.tolist()]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = terminal_obs[i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if not finite[i]:
                infos[i]["nonfinite"] = True
        self._obs = obs
        return obs.copy(), rewards, dones, infos

    def _program_name(self, with_jacobian: bool) -> str:
        what = "step + Jacobian" if with_jacobian else "step"
        return f"{self.env_name} {self.precision} {what} ({self.num_envs} envs)"

    def _recompute_buckets(self) -> tuple[int, ...]:
        """The row counts the recomputation is compiled for: 8, 64, 512, capped at ``n_envs``."""
        return tuple(sorted({min(b, self.num_envs) for b in _RECOMPUTE_BUCKETS}))

    def _recompute(self, state: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact Jacobians of envs ``rows`` of the step just taken from ``state``, unrolled.

        Called where the implicit solver tangent of a transition could not be
        verified. The rows go to the device in as few calls as the bucket sizes
        allow (the smallest bucket that holds them all, else chunks of the
        largest; one compiled program per bucket), padded by repeating a row;
        they are picked inside the jitted call (picking each leaf of MJX's
        state eagerly costs ~100 dispatches). A step of 1024 envs with 17
        unverified rows makes one call, not three.
        """
        buckets = self._recompute_buckets()
        chunk = next((b for b in buckets if b >= len(rows)), buckets[-1])
        fn = _recompute_program(self.sim)  # compiled per bucket size when first needed
        flats, flags = [], []
        actions = np.asarray(self._actions, dtype=self.sim.dtype)
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            idx = np.concatenate([part, np.full(chunk - len(part), part[-1])]).astype(np.int32)
            with compile_notice(f"{self._program_name(True)}: recomputation of {chunk} rows"):
                flat, nonsmooth = fn(state, idx, actions)
            flats.append(np.asarray(flat)[: len(part)])
            flags.append(np.asarray(nonsmooth)[: len(part)])
        self.jacobian_counts["recomputed"] += len(rows)
        return np.concatenate(flats), np.concatenate(flags)

    def warm_up(self) -> None:
        """Compile every program a step may run, so that no later step pauses to compile.

        The step with and without Jacobians (only those this configuration
        runs) compile at the first step that needs them; the unrolled
        recomputation of unverified transitions (``jacobian_method="implicit"``,
        one program per bucket size up to ``n_envs``) compiles when the first one occurs,
        which can be thousands of steps in. Call this before timing steps.
        Resets the envs if they were not reset yet; their states do not change.
        """
        if self._state is None:
            self.reset()
        zeros = np.zeros((self.num_envs, *self.action_space.shape), self.sim.dtype)
        with_jac = self.jacobians and self.backend == "mjx"
        # Only the programs this configuration runs: every step has Jacobians
        # when jacobian_every is 1, so the step without them never runs.
        flags = {with_jac} if self.jacobians and self.jacobian_every == 1 else {False, with_jac}
        for flag in flags:  # pure: runs a step whose result is dropped
            with compile_notice(self._program_name(flag)):
                jax.block_until_ready(
                    self._step_fns[flag](self._state, self._keys, self._elapsed, zeros)
                )
        if with_jac and self.jacobian_method == "implicit":
            saved, self._actions = self._actions, zeros
            try:
                for size in self._recompute_buckets():  # one call per bucket compiles it
                    self._recompute(self._state, np.zeros(size, np.int64))
                    self.jacobian_counts["recomputed"] -= size  # a warm-up, not transitions
            finally:
                self._actions = saved

    def close(self) -> None:
        """Drop the simulator state."""
        self._state = None

    # ------------------------------------------------------------ states
    @property
    def states(self) -> np.ndarray:
        """Ground-truth states of all envs, ``(n_envs, d_s)``."""
        if self._state is None:
            raise gym.error.ResetNeeded("Call reset() before reading states.")
        with self.sim.scope():
            return np.array(jax.vmap(self.sim.space.get)(self._state.data))

    @property
    def warmstarts(self) -> np.ndarray:
        """The constraint solver's warm start of each env, ``(n_envs, nv)``.

        MJX's ``qacc_warmstart``: where the solver's iterations are capped (as
        Playground does), the next step depends on it, so ``backend="mujoco"``
        hands it to the C step.
        """
        if self._state is None:
            raise gym.error.ResetNeeded("Call reset() before reading warm starts.")
        return np.asarray(self._state.data.qacc_warmstart, dtype=np.float64)

    def set_states(self, states: np.ndarray, indices: VecEnvIndices = None) -> np.ndarray:
        """Put envs ``indices`` at ground-truth states ``states`` ``(len(indices), d_s)``.

        Derived quantities and observations are recomputed (as
        ``PlaygroundEnv.set_state``); returns the new observations of all envs.

        Raises:
            ValueError: If ``states`` has the wrong shape, is not finite, or gives
                a non-finite observation (then no env changes).
        """
        if self._state is None:
            raise gym.error.ResetNeeded("Call reset() before setting states.")
        idx = np.asarray(list(self._get_indices(indices)), dtype=int)
        arr = check_array(states, (len(idx), self.sim.space.dim), self.sim.dtype, name="states")
        with self.sim.scope():
            full = jax.vmap(self.sim.space.get)(self._state.data).at[idx].set(arr)
            data = jax.vmap(self.sim.space.set)(self._state.data, full)
            refreshed = self.sim.batch_refresh(self._state.replace(data=data))
            bad = idx[~np.isfinite(np.asarray(refreshed.obs)[idx]).all(axis=1)]
            if bad.size:
                raise ValueError(
                    f"states of envs {bad.tolist()} give non-finite observations; "
                    "no env was changed"
                )
            chosen = jnp.zeros(self.num_envs, dtype=bool).at[idx].set(True)
            self._state = self._shard(_select(chosen, refreshed, self._state))  # others untouched
        self._obs = np.asarray(self._state.obs)
        return self._obs.copy()


def _env_sharding(devices: tuple) -> jax.sharding.NamedSharding | None:
    """The env axis split over ``devices``; ``None`` on one device."""
    if len(devices) == 1:
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("env",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("env"))


@functools.lru_cache(maxsize=64)
def _step_program(
    sim: Simulator,
    limit: int,
    method: str,
    with_jacobian: bool,
    sharding: jax.sharding.NamedSharding | None,
) -> Any:
    """The jitted step of all envs (one call per step), one per kind of VecEnv.

    Cached so that envs of one kind share one ``jax.jit`` and so its compiled
    programs (one per batch size); the simulators themselves are cached per
    process by :func:`get_simulator`.
    """
    # Every input and output leaf has the env axis first: split it over the devices.
    kwargs = {} if sharding is None else {"in_shardings": sharding, "out_shardings": sharding}
    return sim.scoped(jax.jit(_make_step(sim, limit, method, with_jacobian), **kwargs))


@functools.lru_cache(maxsize=64)
def _recompute_program(sim: Simulator) -> Any:
    """The jitted unrolled Jacobians of picked rows, one per simulator.

    Cached like the step: envs of one task share its compiled programs (one per
    bucket size and batch size).
    """

    def jacobians(state: Any, idx: jax.Array, actions: jax.Array):
        picked = jax.tree.map(lambda x: x[idx], state)
        out = jax.vmap(lambda st, a: sim.transition(st, a, True, "unrolled"))(picked, actions[idx])
        return out.jacobian.reshape(len(idx), -1), out.nonsmooth

    return sim.scoped(jax.jit(jacobians))


def _make_step(sim: Simulator, limit: int, method: str, with_jacobian: bool):
    """The pure step of all envs: transition, auto-reset and one packed host array."""

    def step(state: Any, keys: jax.Array, elapsed: jax.Array, actions: jax.Array):
        out = jax.vmap(lambda st, a: sim.transition(st, a, with_jacobian, method))(state, actions)
        elapsed = elapsed + 1
        terminated = (out.state.done > 0) & out.finite
        truncated = (elapsed >= limit) | ~out.finite
        done = terminated | truncated
        # A non-finite step keeps the last finite observation as its terminal one.
        terminal_obs = jnp.where(out.finite[:, None], out.state.obs, state.obs)

        def reset_done(args):
            new_state, keys = args
            split = jax.vmap(jax.random.split)(keys)
            fresh = jax.vmap(sim.pure_reset)(split[:, 1])
            return _select(done, fresh, new_state), jnp.where(done[:, None], split[:, 0], keys)

        new_state, keys = jax.lax.cond(done.any(), reset_done, lambda args: args, (out.state, keys))
        elapsed = jnp.where(done, 0, elapsed)
        # One packed array per step: a single device-to-host transfer.
        dtype = out.s.dtype
        parts = [
            new_state.obs,
            out.state.reward[:, None],
            terminated[:, None],
            truncated[:, None],
            out.finite[:, None],
            out.n_contacts[:, None],
            terminal_obs,
            out.s,
            out.s_next,
        ]
        if with_jacobian:
            parts.append(out.jacobian.reshape(out.jacobian.shape[0], -1))
            parts.append(out.nonsmooth)
            parts.append(out.verified[:, None])
        host = jnp.concatenate([p.astype(dtype) for p in parts], axis=1)
        return new_state, keys, elapsed, host

    return step
