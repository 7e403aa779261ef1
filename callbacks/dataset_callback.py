"""``DatasetCallback``: record the transitions an SB3 agent sees into a data set."""

from __future__ import annotations

import os

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from callbacks.sparsity_callback import base_venv

__all__ = ["DatasetCallback"]


def _playground_venv(env: VecEnv):
    from jacobian_wrappers import PlaygroundVecEnv

    env = base_venv(env)
    if not isinstance(env, PlaygroundVecEnv):
        raise ValueError(
            f"DatasetCallback records from a jacobian_wrappers.PlaygroundVecEnv (possibly "
            f"wrapped, e.g. by VecNormalize), got {type(env).__name__}"
        )
    return env


class DatasetCallback(BaseCallback):
    """Writes every transition of training, with its Jacobians, to an HDF5 data set.

    The same rows as :func:`jacobian_wrappers.collect` (ground-truth
    ``s, a, s'``, ``J_s, J_a``, episode id, step, reward, done flags,
    contacts), taken from the env's :attr:`PlaygroundVecEnv.last_transition`
    (the action the simulator actually received). The file is complete and
    closed at training end; an interrupted run leaves every complete chunk.

    Args:
        path: HDF5 file to write.
        max_steps: Stop recording once the file holds at least this many rows
            (``None``: record all of training).
        chunk_size: Rows per chunk.
        resume: Append to an existing file.
        overwrite: Replace an existing file.
        verbose: 1 prints the file and row count at the end.

    Raises:
        ValueError: (at training start) the env is not a ``PlaygroundVecEnv``, or it
            computes Jacobians only every few steps.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_steps: int | None = None,
        chunk_size: int = 4096,
        resume: bool = False,
        overwrite: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        self.path = path
        self.max_steps = max_steps
        self.chunk_size = chunk_size
        self.resume = resume
        self.overwrite = overwrite
        self.writer = None
        self.recorder = None

    def _on_training_start(self) -> None:
        from jacobian_wrappers.collection import TransitionRecorder
        from sparsity.storage import DatasetMeta, TransitionWriter

        self._venv = _playground_venv(self.training_env)
        if self._venv.jacobians and self._venv.jacobian_every != 1:
            raise ValueError(
                f"DatasetCallback stores a Jacobian with every transition; the env has "
                f"jacobian_every={self._venv.jacobian_every}, need 1 (or jacobians=False)"
            )
        meta = DatasetMeta.from_simulator(
            self._venv.sim,
            jacobians=self._venv.jacobians,
            policy=f"{type(self.model).__name__} during training (stochastic rollouts)",
            extra={"jacobian_backend": self._venv.backend},
        )
        self.writer = TransitionWriter(
            self.path,
            meta,
            chunk_size=self.chunk_size,
            resume=self.resume,
            overwrite=self.overwrite,
        )
        self.recorder = TransitionRecorder(self.writer, self._venv.num_envs)

    def _on_step(self) -> bool:
        if self.writer is None:
            return True
        if self.max_steps is not None and self.writer.total_rows >= self.max_steps:
            self._close()
            return True
        self.recorder.record(self._venv.last_transition)
        return True

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            if self.verbose:
                print(f"[dataset] {self.writer.n_rows} transitions in {self.path}")
            self.writer = None

    def _on_training_end(self) -> None:
        self._close()
