"""Collect transitions with Jacobians from a VecEnv into a data set.

:class:`TransitionRecorder` turns vector steps (the batch arrays of
:func:`~jacobian_wrappers.vec_transitions.vec_transition`: a
``PlaygroundVecEnv``'s ``last_transition``, or the infos of a VecEnv of
``JacobianWrapper`` envs) into rows with episode ids and step indices;
:func:`collect` drives it with any policy, and ``callbacks.DatasetCallback``
drives it during SB3 training.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from dynamic_sparsity.analysis.stats import check_threshold_precision
from dynamic_sparsity.analysis.storage import TransitionWriter
from jacobian_wrappers._validation import check_int
from jacobian_wrappers.expert_agents import load_expert
from jacobian_wrappers.vec_env import PlaygroundVecEnv
from jacobian_wrappers.vec_transitions import (
    check_env_has_jacobians,
    dataset_meta,
    vec_transition,
)

__all__ = [
    "CollectionResult",
    "EpisodeIds",
    "TransitionRecorder",
    "check_recordable",
    "collect",
    "make_policy",
]

Policy = Callable[[np.ndarray], np.ndarray]


class EpisodeIds:
    """Global episode ids and in-episode steps of the envs of a VecEnv.

    Every env starts its own episode; after each vector step
    :meth:`advance` gives the envs that finished an episode new ids (after
    every id given so far) and resets their step count.

    Args:
        n_envs: Envs of the VecEnv.
        first: Id of env 0's first episode.

    Attributes:
        episode: ``(n_envs,)`` current episode id per env.
        step: ``(n_envs,)`` steps taken in the current episode.
        next: The next unused id.
    """

    def __init__(self, n_envs: int, first: int = 0) -> None:
        self.episode = np.arange(first, first + n_envs, dtype=np.int64)
        self.step = np.zeros(n_envs, dtype=np.int32)
        self.next = int(first) + int(n_envs)

    def advance(self, dones: np.ndarray) -> None:
        """Count one step; the envs in ``dones`` start new episodes."""
        dones = np.asarray(dones, dtype=bool)
        self.step += 1
        n_done = int(dones.sum())
        if n_done:
            self.episode[dones] = np.arange(self.next, self.next + n_done)
            self.next += n_done
            self.step[dones] = 0


class TransitionRecorder:
    """Writes each vector step of a VecEnv as rows of a data set.

    Episode ids are global in the file (continuing after a resumed file's last
    one); step indices count from 0 within an episode. Transitions whose state,
    next state or Jacobians are not finite are not written: they are counted
    in :attr:`skipped_nonfinite` and a warning names them.

    Args:
        writer: Open data set.
        n_envs: Envs of the VecEnv.
    """

    def __init__(self, writer: TransitionWriter, n_envs: int) -> None:
        self.writer = writer
        self.n_envs = int(n_envs)
        self.ids = EpisodeIds(self.n_envs, writer.next_episode)
        self.skipped_nonfinite = 0

    def record(self, transition: dict[str, np.ndarray], max_rows: int | None = None) -> int:
        """Append one vector step.

        Args:
            transition: Batch of ``n_envs`` transitions (``vec_transition``).
            max_rows: Write at most this many (the first envs'), e.g. to stop at
                an exact row count.

        Returns:
            Rows written.
        """
        if self.writer.meta.jacobians and "jacobian_state" not in transition:
            raise ValueError(
                "this step has no Jacobians but the data set stores them: use "
                "PlaygroundVecEnv(jacobians=True, jacobian_every=1) or JacobianWrapper envs"
            )
        dones = transition["terminated"] | transition["truncated"]
        rows = {k: transition[k] for k in self.writer.meta.columns() if k in transition}
        rows["episode"] = self.ids.episode.copy()
        rows["step"] = self.ids.step.copy()
        finite = np.ones(self.n_envs, dtype=bool)
        for k in ("state", "next_state", "jacobian_state", "jacobian_action"):
            if k in rows:
                finite &= np.isfinite(rows[k].reshape(self.n_envs, -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            self.skipped_nonfinite += len(bad)
            warnings.warn(
                f"skipping {len(bad)} non-finite transition(s) of envs {bad.tolist()} "
                f"(episodes {self.ids.episode[bad].tolist()}); the episode ends there",
                RuntimeWarning,
                stacklevel=2,
            )
        keep = finite
        if max_rows is not None:
            keep = finite & (np.cumsum(finite) <= max_rows)
        if not keep.all():
            rows = {k: v[keep] for k, v in rows.items()}
        self.writer.append(rows)
        self.ids.advance(dones)  # after the done step was recorded
        return int(keep.sum())


def make_policy(policy: Any, env: VecEnv, seed: int = 0) -> tuple[Policy, str]:
    """A batch policy ``obs -> actions`` and its description.

    Args:
        policy: ``"random"`` (uniform in the action box), ``"expert:<Task>"``
            (the shipped agent of that task, :func:`~jacobian_wrappers.load_expert`),
            a path to an SB3 ``.zip`` (PPO, SAC, ... loaded with its class from
            the zip), an SB3 model (its stochastic ``predict``), or a callable
            ``obs -> actions``.
        env: The env the policy will act in.
        seed: Seed of the random policy.

    Raises:
        ValueError: An unknown policy string, an unknown expert or one whose
            spaces are not the env's, or a file that is not an SB3 model.
    """
    if isinstance(policy, str | os.PathLike) and str(policy) == "random":
        rng = np.random.default_rng(seed)
        low, high = env.action_space.low, env.action_space.high
        dtype = env.action_space.dtype

        def random_policy(obs: np.ndarray) -> np.ndarray:
            return rng.uniform(low, high, size=(len(obs), *low.shape)).astype(dtype)

        return random_policy, f"random uniform in the action box (seed {seed})"
    source = None
    if isinstance(policy, str) and policy.startswith("expert:"):
        name = policy.removeprefix("expert:")
        policy, source = load_expert(name, env), f"shipped expert {name}"
    elif isinstance(policy, str | os.PathLike):
        policy, source = _load_sb3(str(policy))
    if hasattr(policy, "predict"):
        model = policy

        def model_policy(obs: np.ndarray) -> np.ndarray:
            return model.predict(obs, deterministic=False)[0]

        desc = f"{type(model).__name__} stochastic predict"
        return model_policy, desc if source is None else f"{desc} ({source})"
    if callable(policy):
        return policy, getattr(policy, "__name__", type(policy).__name__)
    raise ValueError(
        "policy must be 'random', 'expert:<Task>', a path to an SB3 .zip, an SB3 model or a "
        f"callable, got {policy!r}"
    )


# Module of a saved policy class -> the algorithms that use it, most likely first.
_ALGOS_BY_POLICY = (
    ("sac.policies", ("SAC",)),
    ("td3.policies", ("TD3", "DDPG")),
    ("tqc.policies", ("TQC",)),
    ("recurrent", ("RecurrentPPO",)),
    ("common.policies", ("PPO", "A2C", "TRPO")),
)


def _load_sb3(path: str) -> tuple[Any, str]:
    """Load an SB3 / sb3-contrib model zip with the algorithm its policy class names.

    Returns:
        ``(model, "<Algorithm> from <file>")``.
    """
    import json
    import zipfile

    import sb3_contrib
    import stable_baselines3

    if not os.path.exists(path):
        raise ValueError(f"policy {path!r} is neither 'random' nor an existing SB3 .zip file")
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
        policy_module = json.dumps(data["policy_class"])
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not an SB3 model zip: {err}") from err
    names = next((algos for key, algos in _ALGOS_BY_POLICY if key in policy_module), ())
    errors = []
    for name in names:
        cls = getattr(stable_baselines3, name, None) or getattr(sb3_contrib, name, None)
        try:
            model = cls.load(path, device="cpu")
        except Exception as err:  # another algorithm with the same policy class
            errors.append(f"{name}: {err}")
            continue
        return model, f"{name} from {os.path.basename(path)}"
    raise ValueError(
        f"could not load {path} as an SB3 model ({'; '.join(errors) or 'unknown policy class'})"
    )


def check_recordable(env: Any, user: str) -> None:
    """Raise unless every step of ``env`` can be recorded as rows of a data set.

    Raises:
        TypeError: ``env`` is not an SB3 ``VecEnv``.
        ValueError: A ``PlaygroundVecEnv`` with Jacobians only every few steps, or
            another VecEnv whose envs are not ``JacobianWrapper`` envs.
    """
    if not isinstance(env, VecEnv):
        raise TypeError(
            f"{user} needs an SB3 VecEnv (a PlaygroundVecEnv, or a DummyVecEnv/SubprocVecEnv "
            f"of JacobianWrapper envs), got {type(env).__name__}"
        )
    base = env.unwrapped
    if isinstance(base, PlaygroundVecEnv):
        if base.jacobians and base.jacobian_every != 1:
            raise ValueError(
                f"{user} stores a Jacobian with every transition; the env has "
                f"jacobian_every={base.jacobian_every}, need 1 (or jacobians=False)"
            )
        return
    check_env_has_jacobians(env, user)


@dataclass
class CollectionResult:
    """What :func:`collect` did.

    Attributes:
        path: The data set.
        rows: Rows in the file at the end.
        new_rows: Rows written by this call.
        seconds: Wall time of the stepping loop, first (compiling) step included.
        steady_rows: Rows written after the first step.
        steady_seconds: Wall time after the first step.
        skipped_nonfinite: Non-finite transitions not written.
    """

    path: str
    rows: int
    new_rows: int
    seconds: float
    steady_rows: int
    steady_seconds: float
    skipped_nonfinite: int

    @property
    def steps_per_second(self) -> float:
        """Rows per second after the first step (which compiles the step function)."""
        if self.steady_seconds <= 0:
            return float("nan")
        return self.steady_rows / self.steady_seconds


def collect(
    env: VecEnv,
    n_steps: int,
    path: str | os.PathLike,
    *,
    policy: Any = "random",
    seed: int = 0,
    threshold: float | None = None,
    chunk_size: int = 4096,
    compression: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> CollectionResult:
    """Collect ``n_steps`` transitions (over all envs) into the data set at ``path``.

    Every step's ``(s, a, s', J_s, J_a)`` is stored with episode id, step index,
    reward, done flags and active contacts. With ``resume=True`` an existing
    file (e.g. of an interrupted run) is continued until it holds ``n_steps``
    rows. Stopping early (``KeyboardInterrupt``) keeps every row collected.

    Args:
        env: A ``PlaygroundVecEnv`` (with ``jacobians=True`` it must have
            ``jacobian_every=1``) or any VecEnv of ``JacobianWrapper`` envs
            (``DummyVecEnv``/``SubprocVecEnv`` of Playground or Gymnasium MuJoCo
            envs), possibly wrapped.
        n_steps: Rows the file should hold at the end.
        path: HDF5 file.
        policy: See :func:`make_policy`.
        seed: Seed of a random policy.
        threshold: Zero threshold stored as the analysis default; ``None``: the
            study's 1e-15 for exact Jacobians, ``FD_ZERO_THRESHOLD`` (1e-8) for
            MuJoCo's C finite differences (``backend="mujoco"``), whose
            structural zeros come out as round-off.
        chunk_size: Rows per chunk.
        compression: See :class:`TransitionWriter`.
        resume: Continue an existing file.
        overwrite: Replace an existing file.
        progress: Show a tqdm progress bar with the steps/s.
        extra: Further notes in the file's metadata (``DatasetMeta.extra``;
            e.g. ``{"shard": [index, count]}``, see ``dynamic_sparsity.sweeps.collect_shard``).

    Raises:
        TypeError: ``n_steps`` not an int, or ``env`` not an SB3 ``VecEnv``.
        ValueError: ``n_steps < 1``, ``jacobian_every != 1``, a VecEnv without
            Jacobians, or a bad policy.

    Example:
        >>> import jacobian_wrappers as jw
        >>> venv = jw.PlaygroundVecEnv("CartpoleBalance", n_envs=2, episode_length=8)
        >>> jw.collect(venv, 160, "cartpole.h5").rows
        160
        >>> with jw.TransitionReader("cartpole.h5") as data:
        ...     data.meta.precision, data.read("jacobian_state").shape
        ('float64', (160, 4, 4))
    """
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    check_recordable(env, "collect")
    act, desc = make_policy(policy, env, seed)
    meta = dataset_meta(env, threshold=threshold, policy=desc, extra=dict(extra or {}))
    if meta.jacobians:
        check_threshold_precision(meta.threshold, meta.precision, "collect")
    with TransitionWriter(
        path,
        meta,
        chunk_size=chunk_size,
        compression=compression,
        resume=resume,
        overwrite=overwrite,
    ) as writer:
        start_rows = writer.total_rows
        recorder = TransitionRecorder(writer, env.num_envs)
        bar: list[Any] = []  # made after the first step: its rate leaves the compile out
        make_bar = None
        if progress:
            from tqdm.auto import tqdm

            def make_bar(initial: int) -> Any:
                bar.append(tqdm(total=n_steps, initial=initial, unit="step", desc=meta.env_name))
                return bar[0]

        # The rows come from the batch arrays: a PlaygroundVecEnv need not build per-env
        # info dicts of its Jacobians meanwhile (the host work that grows with n_envs).
        base = env.unwrapped if isinstance(env.unwrapped, PlaygroundVecEnv) else None
        in_infos = base is not None and base.jacobians_in_infos
        try:
            if base is not None:
                base.jacobians_in_infos = False
            timing = _step_until(env, act, recorder, n_steps, make_bar)
        finally:
            if base is not None:
                base.jacobians_in_infos = in_infos
            if bar:
                bar[0].close()
        rows = writer.total_rows
    return CollectionResult(
        path=str(path),
        rows=rows,
        new_rows=rows - start_rows,
        skipped_nonfinite=recorder.skipped_nonfinite,
        **timing.summary(rows),
    )


@dataclass
class _Timing:
    """Wall-clock marks of a collection: start, first step done (it compiles), end."""

    start: float
    first: float | None = None
    first_rows: int = 0
    end: float = 0.0

    def summary(self, rows: int) -> dict[str, float]:
        steady = self.first is not None
        return {
            "seconds": self.end - self.start,
            "steady_rows": rows - self.first_rows if steady else 0,
            "steady_seconds": self.end - self.first if steady else 0.0,
        }


def _step_until(
    env: VecEnv, act: Policy, recorder, n_steps: int, make_bar: Callable[[int], Any] | None
) -> _Timing:
    """Step ``env`` with ``act`` and record until the file holds ``n_steps`` rows.

    ``make_bar(rows)`` makes a progress bar after the first step, so that its
    rate and time estimate leave the first step's compile out.
    An exception (``KeyboardInterrupt`` too) stops it; the caller's writer keeps
    every row recorded so far.
    """
    writer = recorder.writer
    obs = env.reset()
    timing = _Timing(time.perf_counter())
    bar = None
    try:
        while writer.total_rows < n_steps:
            obs, rewards, dones, infos = env.step(act(obs))
            rows = vec_transition(env, infos, rewards, dones)
            written = recorder.record(rows, max_rows=n_steps - writer.total_rows)
            if timing.first is None:
                timing.first, timing.first_rows = time.perf_counter(), writer.total_rows
                if make_bar is not None:
                    bar = make_bar(writer.total_rows)
            elif bar is not None:
                bar.update(written)
    finally:
        timing.end = time.perf_counter()
    return timing
