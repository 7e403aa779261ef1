"""A task's own observation, reward and step, as functions of the ground-truth state.

A world model predicts the state ``s' = concat(qpos, qvel)``; an agent
trained inside the model needs the observation and the reward the real env
would give there. :class:`TaskFunctions` evaluates the Playground task's own
``_get_obs`` and ``_get_reward`` (every DM Control Suite task has both) on
the MJX data of a state: the positions, contacts and sensors are recomputed
by ``mjx.forward`` at that state, and the batch runs as one jitted, vmapped
call. :meth:`TaskFunctions.step` is the simulator's own step from a state:
the perfect model a learned one is measured against.

How close this is to the real env: MJX's step, like MuJoCo's, computes the
derived quantities of a substep (positions, contacts, sensors) *before* it
integrates, so the real env's observation and reward after a step read them
at the positions before its last physics substep (on CartpoleBalance, one
substep per control step, that is the pole angle of ``s``, not of ``s'``).
:meth:`TaskFunctions.observe_after` and :meth:`TaskFunctions.reward` do the
same: they compute the derived quantities at ``s'``'s positions moved back
by one substep of ``s'``'s velocity (exactly the positions before the last
substep: MuJoCo's Euler and implicitfast integrators update the positions
with the new velocity), then read ``qpos``/``qvel`` of ``s'``. Only
velocity-dependent sensors still differ (they read ``s'``'s velocity, the
real env the one before the last substep). :meth:`TaskFunctions.observe`
is the observation at a state set directly (a reset, ``set_state``).
Tasks whose observation
or reward read per-episode state the ground truth does not hold (a random
target in ``info``) cannot be evaluated from ``s`` alone: there the
episode's first ``info`` is used, which is wrong for other episodes. The
measured agreement per env is in docs/world-models.md#world-models-in-the-rl-loop
(``benchmarks/task_functions.py``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jacobian_wrappers._validation import check_array
from jacobian_wrappers.simulator import Simulator, get_simulator

__all__ = ["TaskFunctions"]


class TaskFunctions:
    """Observation, reward and step of a Playground task at given ground-truth states.

    Args:
        env_name: Task name, e.g. ``"CartpoleBalance"``, or the :class:`Simulator`
            of an env already built (``env.sim``: its task, precision and
            overrides, checked when it was built, are used as they are).
        precision: ``"float32"`` or ``"float64"`` (ignored for a ``Simulator``).
        config_overrides: Playground config overrides, as for the envs
            (ignored for a ``Simulator``).
        seed: Seed of the reset whose ``info`` (and template data) is used.

    Attributes:
        d_s: State dimension.
        observation_size: Observation dimension.
    """

    def __init__(
        self,
        env_name: str | Simulator,
        precision: str = "float32",
        config_overrides: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        from mujoco import mjx

        if isinstance(env_name, Simulator):
            sim = env_name
        else:
            sim = get_simulator(env_name, precision, config_overrides)
        self.sim = sim
        self.env_name = sim.env_name
        self.d_s, self.d_a = sim.space.dim, sim.action_size
        self.observation_size = sim.observation_size
        template = sim.reset(jax.random.PRNGKey(seed))
        env, model = sim.env, sim.env.mjx_model

        def data_at(s: jax.Array, action: jax.Array) -> Any:
            data = sim.space.set(template.data, s).replace(ctrl=action)
            return mjx.forward(model, data)

        def observe(s: jax.Array) -> jax.Array:
            zero = jnp.zeros(self.d_a, dtype=s.dtype)
            return env._get_obs(data_at(s, zero), template.info)

        nq, nv = sim.space.nq, sim.space.nv
        substep = float(env.mj_model.opt.timestep)

        def data_after(s_next: jax.Array, action: jax.Array) -> Any:
            # Positions before the last substep: q = q' (-) dt * v' (the Euler and
            # implicitfast position update), velocities and activations untouched.
            still = jnp.zeros(self.d_s - nq, dtype=s_next.dtype)
            back = jnp.concatenate([-substep * s_next[nq : nq + nv], still])
            data = data_at(sim.space.perturb(s_next, back), action)
            return sim.space.set(data, s_next)

        def observe_after(s_next: jax.Array, action: jax.Array) -> jax.Array:
            return env._get_obs(data_after(s_next, action), template.info)

        def reward(s_next: jax.Array, action: jax.Array) -> jax.Array:
            data = data_after(s_next, action)
            return env._get_reward(data, action, template.info, template.metrics)

        def step(s: jax.Array, action: jax.Array) -> jax.Array:
            state = template.replace(data=sim.space.set(template.data, s))
            return sim.transition(state, action, jacobian=False).s_next

        self._observe = sim.scoped(jax.jit(jax.vmap(observe)))
        self._observe_after = sim.scoped(jax.jit(jax.vmap(observe_after)))
        self._reward = sim.scoped(jax.jit(jax.vmap(reward)))
        self._step = sim.scoped(jax.jit(jax.vmap(step)))

    def _checked(
        self, states: np.ndarray, actions: np.ndarray, name: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, d_s)`` states and ``(n, d_a)`` actions at this precision, or a ``ValueError``."""
        n = len(states)
        s = check_array(states, (n, self.d_s), self.sim.dtype, name=name)
        return s, check_array(actions, (n, self.d_a), self.sim.dtype, name="actions")

    def observe(self, states: np.ndarray) -> np.ndarray:
        """Observations ``(n, observation_size)`` at states ``(n, d_s)`` set directly (a reset).

        Raises:
            ValueError: A shape other than ``(n, d_s)`` or a non-finite state.
        """
        states = check_array(states, (len(states), self.d_s), self.sim.dtype, name="states")
        return np.asarray(self._observe(states))

    def observe_after(self, next_states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Observations ``(n, observation_size)`` as the real env returns them after a step.

        The step applied ``actions`` and reached ``next_states``; derived
        quantities are read as the real env reads them (see the module's notes).

        Raises:
            ValueError: Shapes other than ``(n, d_s)`` and ``(n, d_a)``, or non-finite values.
        """
        return np.asarray(self._observe_after(*self._checked(next_states, actions, "next_states")))

    def reward(self, next_states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Rewards ``(n,)`` of the steps that applied ``actions`` and reached ``next_states``.

        Read as the real env reads them (as :meth:`observe_after`).

        Raises:
            ValueError: Shapes other than ``(n, d_s)`` and ``(n, d_a)``, or non-finite values.
        """
        s, a = self._checked(next_states, actions, "next_states")
        return np.asarray(self._reward(s, a), dtype=np.float32)

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Next states ``(n, d_s)``: the simulator's own control step from each state.

        The exact dynamics a world model learns (a perfect model, e.g. the
        control of an MBRL loop). The solver's warm start is the template
        reset's, not the episode's: on envs with contacts the step can differ
        from the real env's by the solver's tolerance.

        Raises:
            ValueError: Shapes other than ``(n, d_s)`` and ``(n, d_a)``, or non-finite values.
        """
        return np.asarray(self._step(*self._checked(states, actions, "states")))
