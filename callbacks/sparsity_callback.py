"""``SparsityCallback``: log the sparsity of the true dynamics' Jacobians while SB3 trains."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, TensorBoardOutputFormat

from callbacks.live_figures import LiveHeatmap, LiveTimeline
from dynamic_sparsity.analysis.stats import (
    GlobalZeros,
    PatternCounter,
    RunLengths,
    SparsityMeans,
    check_threshold_precision,
    combine,
    default_threshold,
    mismatch_rows,
    sample_sparsity,
    valid_mask,
    zero_mask,
)
from jacobian_wrappers.vec_transitions import check_env_has_jacobians

__all__ = ["SparsityCallback", "check_env_has_jacobians"]

_NOT_TB = ("stdout", "log", "json", "csv")
_MAX_BLOCK = 256  # steps buffered before their statistics are computed


class SparsityCallback(BaseCallback):
    """Logs sparsity statistics (docs/method.md#sparsity-statistics) of the Jacobians in ``infos``.

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
      streaks left out), since training start; logged once a streak has
      finished (never as NaN);
    * ``sparsity/distinct_patterns``: distinct zero patterns seen (a left-out
      element counts as not zero); ``sparsity/distinct_left_out``: distinct
      sets of left-out elements seen;
    * ``sparsity/samples``: Jacobians seen so far;
    * ``sparsity/nonsmooth_fraction``: share of the Jacobians since the last
      log with a non-smooth column (``jacobian_nonsmooth``: an action on its
      control bound, as SB3's action clipping produces); those elements are
      left out of every statistic above;
    * ``sparsity/mismatch_fraction``: share of the Jacobians since the last log
      that are not the env's own (``jacobian_mismatch``: the backend's next state
      left the env's; every column flagged), left out whole.

    With a TensorBoard writer, also the histogram ``sparsity/combined_hist`` of
    per-sample sparsity (steps since the last log), and every ``heatmap_freq``
    calls and once at the end of training the figures
    ``sparsity/zero_frequency`` (per-element zero frequency of ``[J_s | J_a]``,
    labelled) and ``sparsity/timeline`` (sparsity over the steps of the last
    finished episode of env 0; at the end, its unfinished episode if none has
    finished).

    Per step the callback only copies the Jacobians into a buffer; the
    statistics are computed once per block of buffered steps (at every log, or
    every 256 steps), vectorised over steps and envs, and the figures are
    redrawn by blitting (:mod:`callbacks.live_figures`), so that the callback
    stays within a few percent of training time even on cheap envs.

    Args:
        threshold: An element is zero when ``|J| < threshold``; ``None``: the
            study's 1e-15 for exact Jacobians, 1e-8 (``FD_ZERO_THRESHOLD``)
            for MuJoCo's C finite differences (``backend="mujoco"``).
        log_freq: Log scalars (and dump the logger) every this many calls.
        heatmap_freq: Log the figures every this many calls.
        verbose: 1 prints a line per log.
        info_keys: Names of the info keys, if renamed in ``JacobianWrapper``.

    Example:
        >>> from stable_baselines3 import PPO
        >>> import jacobian_wrappers as jw
        >>> from callbacks import SparsityCallback
        >>> venv = jw.PlaygroundVecEnv("CartpoleBalance", n_envs=2, episode_length=8)
        >>> callback = SparsityCallback(log_freq=8)
        >>> agent = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, seed=0)
        >>> agent = agent.learn(32, callback=callback)
        >>> callback.global_zeros.samples  # every Jacobian of the 32 steps
        32
    """

    def __init__(
        self,
        threshold: float | None = None,
        log_freq: int = 100,
        heatmap_freq: int = 1000,
        verbose: int = 0,
        info_keys: dict[str, str] | None = None,
    ) -> None:
        super().__init__(verbose)
        if threshold is not None and not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        for name, value in (("log_freq", log_freq), ("heatmap_freq", heatmap_freq)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        #: ``None`` until training starts, then the env's backend's default.
        self.threshold = None if threshold is None else float(threshold)
        self.log_freq = int(log_freq)
        self.heatmap_freq = int(heatmap_freq)
        keys = {
            "jacobian_state": "jacobian_state",
            "jacobian_action": "jacobian_action",
            "nonsmooth": "jacobian_nonsmooth",
        }
        self.keys = {**keys, **(info_keys or {})}
        self.means = SparsityMeans()
        self.global_zeros: GlobalZeros | None = None
        self.patterns = PatternCounter()
        self.runs: RunLengths | None = None
        self.state_labels: tuple[str, ...] = ()
        self.action_labels: tuple[str, ...] = ()
        self._hist_values: list[np.ndarray] = []
        # Jacobians with a non-smooth column, mismatched ones, all; since the log
        self._nonsmooth = [0, 0, 0]
        self._episode0: list[float] = []
        self.last_episode_timeline: list[float] | None = None
        self._tb_writer = None
        # Steps are buffered and their statistics computed once per block (at
        # every log, or when the buffer is full): per step only a copy is paid.
        self._capacity = min(self.log_freq, self.heatmap_freq, _MAX_BLOCK)
        self._buffer: dict[str, np.ndarray] = {}
        self._filled = 0
        self._heatmap: LiveHeatmap | None = None
        self._timeline = LiveTimeline()
        self._figures_step = -1  # num_timesteps of the last figures logged

    # ----------------------------------------------------------------- hooks
    def _on_training_start(self) -> None:
        check_env_has_jacobians(self.training_env)
        env = self.training_env
        if self.threshold is None:
            try:
                backend = env.get_attr("jacobian_source", indices=[0])[0]["backend"]
            except (AttributeError, KeyError, TypeError):
                backend = None  # an env of the user's own: exact Jacobians assumed
            self.threshold = default_threshold(backend)
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
        dones = self.locals.get("dones")
        key_s, key_a = self.keys["jacobian_state"], self.keys["jacobian_action"]
        key_n = self.keys["nonsmooth"]
        try:  # the common case: every env has a Jacobian this step
            jac_s = [info[key_s] for info in infos]
            jac_a = [info[key_a] for info in infos]
            active = None
        except KeyError:
            active = np.array([key_s in info for info in infos])
            jac_s = jac_a = None
        if not self._buffer:
            if active is not None and not active.any():
                return self._after_step()  # nothing to size the buffer by yet
            first = infos[int(np.argmax(active)) if active is not None else 0]
            self._allocate(len(infos), first[key_s], first[key_a])
        t, buf = self._filled, self._buffer
        if active is None:
            np.stack(jac_s, out=buf["state"][t])
            np.stack(jac_a, out=buf["action"][t])
            buf["active"][t] = True
        else:
            for i in np.flatnonzero(active):
                buf["state"][t, i] = infos[i][key_s]
                buf["action"][t, i] = infos[i][key_a]
            buf["active"][t] = active
        for i, info in enumerate(infos):  # absent (other envs, or no Jacobian): smooth
            buf["nonsmooth"][t, i] = info.get(key_n, False)
        buf["done"][t] = False if dones is None else dones
        self._filled += 1
        if self._filled == self._capacity:
            self._flush()
        return self._after_step()

    def _after_step(self) -> bool:
        if self.n_calls % self.log_freq == 0:
            self._log_scalars()
            self.logger.dump(self.num_timesteps)
        if self.n_calls % self.heatmap_freq == 0:
            self._log_figures()
        return True

    def _on_training_end(self) -> None:
        self._flush()
        if self.means.count:
            self._log_scalars()
            self.logger.dump(self.num_timesteps)
        if self._figures_step != self.num_timesteps:  # a run shorter than heatmap_freq too
            self._log_figures(final=True)

    # --------------------------------------------------------------- helpers
    def _allocate(self, n_envs: int, jac_s: np.ndarray, jac_a: np.ndarray) -> None:
        jac_s, jac_a = np.asarray(jac_s), np.asarray(jac_a)
        dtype = np.result_type(jac_s, jac_a)
        cap = self._capacity
        self._buffer = {
            "state": np.zeros((cap, n_envs, *jac_s.shape), dtype),
            "action": np.zeros((cap, n_envs, *jac_a.shape), dtype),
            "nonsmooth": np.zeros((cap, n_envs, jac_s.shape[1] + jac_a.shape[1]), bool),
            "active": np.zeros((cap, n_envs), bool),
            "done": np.zeros((cap, n_envs), bool),
        }
        check_threshold_precision(self.threshold, dtype, "SparsityCallback")
        shape = (jac_s.shape[0], jac_s.shape[1] + jac_a.shape[1])
        self.global_zeros = GlobalZeros(shape)
        self.runs = RunLengths(n_envs, shape)

    def _flush(self) -> None:
        """Statistics of the buffered steps, as one vectorised block."""
        steps, buf = self._filled, self._buffer
        if steps == 0:
            return
        self._filled = 0
        active, done = buf["active"][:steps], buf["done"][:steps]
        zeros = zero_mask(combine(buf["state"][:steps], buf["action"][:steps]), self.threshold)
        d_s = buf["state"].shape[2]
        nonsmooth = buf["nonsmooth"][:steps]
        valid = valid_mask(nonsmooth.reshape(-1, nonsmooth.shape[-1]), d_s)
        if valid is not None:
            valid = valid.reshape(zeros.shape)
            self.runs.update_block(zeros, done, active[:, :, None, None] & valid)
        else:
            self.runs.update_block(zeros, done, active)
        sampled = zeros[active]  # (samples, d_s, d_s + d_a), in step order
        sampled_valid = None if valid is None else valid[active]
        per = sample_sparsity(sampled, d_s, sampled_valid)
        self.means.update(per)
        self.global_zeros.update(sampled, sampled_valid)
        self.patterns.update(sampled, sampled_valid)
        self._hist_values.append(per["combined"][~np.isnan(per["combined"])])
        self._nonsmooth[0] += int(nonsmooth[active].any(axis=-1).sum())
        self._nonsmooth[1] += int(mismatch_rows(nonsmooth[active], d_s).sum())
        self._nonsmooth[2] += len(sampled)
        # Env 0's per-step sparsity, cut into episodes at its episode ends.
        combined0 = sample_sparsity(zeros[:, 0], d_s, None if valid is None else valid[:, 0])[
            "combined"
        ]
        begin = 0
        for end in (*np.flatnonzero(done[:, 0]), steps - 1):
            self._episode0.extend(combined0[begin : end + 1][active[begin : end + 1, 0]].tolist())
            if done[end, 0] and end >= begin:
                if self._episode0:
                    self.last_episode_timeline = self._episode0
                self._episode0 = []
            begin = end + 1

    def _log_scalars(self) -> None:
        self._flush()
        if self.global_zeros is None:
            return
        d_s = self.global_zeros.shape[0]
        means = self.means.means()
        counts = self.global_zeros.counts(d_s)
        flagged, mismatched, seen = self._nonsmooth
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
            "sparsity/distinct_left_out": self.patterns.distinct_left_out,
            "sparsity/samples": self.global_zeros.samples,
            "sparsity/nonsmooth_fraction": flagged / seen if seen else float("nan"),
            "sparsity/mismatch_fraction": mismatched / seen if seen else float("nan"),
        }
        for key, value in values.items():
            if not np.isnan(value):  # a statistic not yet defined is not logged
                self.logger.record(key, value)
        hist = np.concatenate(self._hist_values) if self._hist_values else np.empty(0)
        # Empty when every Jacobian since the last log was left out whole (mismatched).
        if self._tb_writer is not None and hist.size:
            self._tb_writer.add_histogram(
                "sparsity/combined_hist",
                hist,
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
        self._nonsmooth = [0, 0, 0]

    def _log_figures(self, final: bool = False) -> None:
        """Log the heatmap and the timeline.

        At the end of training (``final``) the unfinished episode of env 0
        stands in for a finished one if none has ended yet.
        """
        if self._tb_writer is None or self.global_zeros is None:
            return
        self._flush()
        self._figures_step = self.num_timesteps
        if self._heatmap is None:
            d_s, cols = self.global_zeros.shape
            self._heatmap = LiveHeatmap(
                self.state_labels or tuple(f"s{i}" for i in range(d_s)),
                self.action_labels or tuple(f"a{i}" for i in range(cols - d_s)),
            )
        image = self._heatmap.render(
            self.global_zeros.frequency(),
            title=f"zero frequency (|J| < {self.threshold:g}), {self.global_zeros.samples} samples",
        )
        self.logger.record("sparsity/zero_frequency", Image(image, "HWC"), exclude=_NOT_TB)
        timeline, title = self.last_episode_timeline, "sparsity over the last episode of env 0"
        if not timeline and final and self._episode0:
            timeline = self._episode0
            title = f"sparsity over the first {len(timeline)} steps of env 0 (episode unfinished)"
        if timeline:
            image = self._timeline.render(timeline, title=title)
            self.logger.record("sparsity/timeline", Image(image, "HWC"), exclude=_NOT_TB)
        self.logger.dump(self.num_timesteps)
