"""``SparsityCallback``: log the sparsity of the true dynamics' Jacobians while SB3 trains."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Figure, TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from callbacks.figures import sparsity_timeline_figure, zero_frequency_figure
from callbacks.sparsity_stats import (
    DEFAULT_THRESHOLD,
    GlobalZeros,
    PatternCounter,
    RunLengths,
    SparsityMeans,
    combine,
    sample_sparsity,
    zero_mask,
)

__all__ = ["SparsityCallback", "base_venv", "check_env_has_jacobians"]

_NOT_TB = ("stdout", "log", "json", "csv")


def base_venv(env: VecEnv) -> VecEnv:
    """The innermost VecEnv under any ``VecEnvWrapper`` (``VecMonitor``, ``VecNormalize``...)."""
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env


def check_env_has_jacobians(env: VecEnv) -> None:
    """Raise unless ``env`` puts Jacobians in its ``infos``.

    Raises:
        ValueError: With what to use instead.
    """
    from jacobian_wrappers import JacobianWrapper, PlaygroundVecEnv

    base = base_venv(env)
    if isinstance(base, PlaygroundVecEnv):
        ok = base.jacobians
    else:
        try:
            ok = all(env.env_is_wrapped(JacobianWrapper))
        except Exception:  # a VecEnv that cannot answer
            ok = False
    if not ok:
        raise ValueError(
            f"SparsityCallback needs Jacobians in the infos, but the training env "
            f"({type(base).__name__}) provides none. Use jacobian_wrappers.PlaygroundVecEnv("
            "..., jacobians=True), or wrap each env in jacobian_wrappers.JacobianWrapper "
            "(e.g. DummyVecEnv([lambda: JacobianWrapper(PlaygroundEnv('CheetahRun'))]))."
        )


class SparsityCallback(BaseCallback):
    """Logs sparsity statistics (SPEC section 3) of the Jacobians in ``infos``.

    Works with every SB3 algorithm (on- and off-policy, sb3-contrib too) whose
    env is a :class:`~jacobian_wrappers.PlaygroundVecEnv` with ``jacobians=True``
    or a VecEnv of :class:`~jacobian_wrappers.JacobianWrapper` envs. Everything
    goes through SB3's logger, so it works with any output format and with
    ``tensorboard_log=``. Scalars, every ``log_freq`` calls (each call is one
    vector step, i.e. ``n_envs`` transitions):

    * ``sparsity/state``, ``sparsity/action``, ``sparsity/combined``: mean
      per-sample sparsity of ``J_s``, ``J_a`` and ``[J_s | J_a]`` over the
      steps since the last log;
    * ``sparsity/global_zeros_state`` (count), ``sparsity/global_zeros_state_pct``,
      ``sparsity/global_zeros_action`` (count): elements zero in every sample
      since training start;
    * ``sparsity/zero_run_mean``, ``sparsity/nonzero_run_mean``: mean length
      of finished per-element zero / non-zero streaks (steps; whole-episode
      streaks left out), since training start;
    * ``sparsity/distinct_patterns``: distinct zero patterns seen;
    * ``sparsity/samples``: Jacobians seen so far.

    With a TensorBoard writer, also the histogram ``sparsity/combined_hist`` of
    per-sample sparsity (steps since the last log), and every ``heatmap_freq``
    calls the figures ``sparsity/zero_frequency`` (per-element zero frequency
    of ``[J_s | J_a]``, labelled) and ``sparsity/timeline`` (sparsity over the
    steps of the last finished episode of env 0).

    Args:
        threshold: An element is zero when ``|J| < threshold``.
        log_freq: Log scalars (and dump the logger) every this many calls.
        heatmap_freq: Log the figures every this many calls.
        verbose: 1 prints a line per log.
        info_keys: Names of the info keys, if renamed in ``JacobianWrapper``.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        log_freq: int = 100,
        heatmap_freq: int = 1000,
        verbose: int = 0,
        info_keys: dict[str, str] | None = None,
    ) -> None:
        super().__init__(verbose)
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        for name, value in (("log_freq", log_freq), ("heatmap_freq", heatmap_freq)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.threshold = float(threshold)
        self.log_freq = int(log_freq)
        self.heatmap_freq = int(heatmap_freq)
        keys = {"jacobian_state": "jacobian_state", "jacobian_action": "jacobian_action"}
        self.keys = {**keys, **(info_keys or {})}
        self.means = SparsityMeans()
        self.global_zeros: GlobalZeros | None = None
        self.patterns = PatternCounter()
        self.runs: RunLengths | None = None
        self.state_labels: tuple[str, ...] = ()
        self.action_labels: tuple[str, ...] = ()
        self._hist_values: list[np.ndarray] = []
        self._episode0: list[float] = []
        self.last_episode_timeline: list[float] | None = None
        self._tb_writer = None

    # ----------------------------------------------------------------- hooks
    def _on_training_start(self) -> None:
        check_env_has_jacobians(self.training_env)
        env = self.training_env
        for attr, name in (("state_labels", "tangent_labels"), ("action_labels", "action_labels")):
            try:
                setattr(self, attr, tuple(env.get_attr(name, indices=[0])[0]))
            except AttributeError:
                pass
        self._tb_writer = next(
            (
                f.writer
                for f in self.logger.output_formats
                if isinstance(f, TensorBoardOutputFormat)
            ),
            None,
        )

    def _on_step(self) -> bool:
        infos: list[dict[str, Any]] = self.locals["infos"]
        dones = np.asarray(self.locals.get("dones", np.zeros(len(infos), dtype=bool)), bool)
        active = np.array([self.keys["jacobian_state"] in info for info in infos])
        if active.any():
            self._update(infos, active, dones)
        elif self.runs is not None:
            self.runs.update(np.zeros((len(infos), *self.global_zeros.shape), bool), dones, active)
        if dones[0]:
            if self._episode0:
                self.last_episode_timeline = self._episode0
            self._episode0 = []
        if self.n_calls % self.log_freq == 0:
            self._log_scalars()
            self.logger.dump(self.num_timesteps)
        if self.n_calls % self.heatmap_freq == 0:
            self._log_figures()
        return True

    def _on_training_end(self) -> None:
        if self.means.count:
            self._log_scalars()
            self.logger.dump(self.num_timesteps)

    # --------------------------------------------------------------- helpers
    def _update(self, infos: list[dict[str, Any]], active: np.ndarray, dones: np.ndarray) -> None:
        idx = np.flatnonzero(active)
        jac = combine(
            np.stack([infos[i][self.keys["jacobian_state"]] for i in idx]),
            np.stack([infos[i][self.keys["jacobian_action"]] for i in idx]),
        )
        d_s = jac.shape[1]
        zeros = zero_mask(jac, self.threshold)
        if self.global_zeros is None:
            self.global_zeros = GlobalZeros(zeros.shape[1:])
            self.runs = RunLengths(len(infos), zeros.shape[1:])
        per = sample_sparsity(zeros, d_s)
        self.means.update(per)
        self.global_zeros.update(zeros)
        self.patterns.update(zeros)
        full = np.zeros((len(infos), *zeros.shape[1:]), dtype=bool)
        full[idx] = zeros
        self.runs.update(full, dones, active)
        self._hist_values.append(per["combined"])
        if active[0]:
            self._episode0.append(float(per["combined"][0]))

    def _log_scalars(self) -> None:
        if self.global_zeros is None:
            return
        d_s = self.global_zeros.shape[0]
        means = self.means.means()
        counts = self.global_zeros.counts(d_s)
        values = {
            "sparsity/state": means["state"],
            "sparsity/action": means["action"],
            "sparsity/combined": means["combined"],
            "sparsity/global_zeros_state": counts["state"],
            "sparsity/global_zeros_state_pct": counts["state_pct"],
            "sparsity/global_zeros_action": counts["action"],
            "sparsity/zero_run_mean": self.runs.mean_zero_run(),
            "sparsity/nonzero_run_mean": self.runs.mean_nonzero_run(),
            "sparsity/distinct_patterns": self.patterns.distinct,
            "sparsity/samples": self.global_zeros.samples,
        }
        for key, value in values.items():
            self.logger.record(key, value)
        if self._tb_writer is not None and self._hist_values:
            self._tb_writer.add_histogram(
                "sparsity/combined_hist",
                np.concatenate(self._hist_values),
                self.num_timesteps,
                bins=np.linspace(0.0, 1.0, 51),
            )
        if self.verbose:
            print(
                f"[sparsity] t={self.num_timesteps} combined={means['combined']:.3f} "
                f"global zeros J_s={counts['state']} J_a={counts['action']}"
            )
        self.means.reset()
        self._hist_values = []

    def _log_figures(self) -> None:
        if self._tb_writer is None or self.global_zeros is None:
            return
        d_s, cols = self.global_zeros.shape
        state_labels = self.state_labels or tuple(f"s{i}" for i in range(d_s))
        action_labels = self.action_labels or tuple(f"a{i}" for i in range(cols - d_s))
        fig = zero_frequency_figure(
            self.global_zeros.frequency(),
            state_labels,
            action_labels,
            title=f"zero frequency (|J| < {self.threshold:g}), {self.global_zeros.samples} samples",
        )
        self.logger.record("sparsity/zero_frequency", Figure(fig, close=True), exclude=_NOT_TB)
        if self.last_episode_timeline:
            fig = sparsity_timeline_figure(
                self.last_episode_timeline, title="sparsity over the last episode of env 0"
            )
            self.logger.record("sparsity/timeline", Figure(fig, close=True), exclude=_NOT_TB)
        self.logger.dump(self.num_timesteps)
