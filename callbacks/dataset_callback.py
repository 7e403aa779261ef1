"""``DatasetCallback``: record the transitions an SB3 agent sees into a data set."""

from __future__ import annotations

import os

from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["DatasetCallback"]


class DatasetCallback(BaseCallback):
    """Writes every transition of training, with its Jacobians, to an HDF5 data set.

    The same rows as :func:`jacobian_wrappers.collect` (ground-truth
    ``s, a, s'``, ``J_s, J_a``, episode id, step, reward, done flags,
    contacts), from a :class:`~jacobian_wrappers.PlaygroundVecEnv` (its
    ``last_transition``) or a VecEnv of :class:`~jacobian_wrappers.JacobianWrapper`
    envs (their ``infos``; Gymnasium's MuJoCo envs too), possibly under
    ``VecNormalize`` (raw rewards are stored). The action stored is the one the
    simulator received. The file is complete and closed at training end; an
    interrupted run leaves every complete chunk.

    Args:
        path: HDF5 file to write.
        max_steps: Stop recording once the file holds at least this many rows
            (``None``: record all of training).
        chunk_size: Rows per chunk.
        resume: Append to an existing file.
        overwrite: Replace an existing file.
        verbose: 1 prints the file and row count at the end.

    Raises:
        TypeError: (at training start) the env is not an SB3 VecEnv.
        ValueError: (at training start) the env gives no Jacobians, or only every
            few steps.
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
        from dynamic_sparsity.analysis.storage import TransitionWriter
        from jacobian_wrappers.collection import TransitionRecorder, check_recordable
        from jacobian_wrappers.vec_transitions import dataset_meta

        check_recordable(self.training_env, "DatasetCallback")
        meta = dataset_meta(
            self.training_env,
            policy=f"{type(self.model).__name__} during training (stochastic rollouts)",
        )
        self.writer = TransitionWriter(
            self.path,
            meta,
            chunk_size=self.chunk_size,
            resume=self.resume,
            overwrite=self.overwrite,
        )
        self.recorder = TransitionRecorder(self.writer, self.training_env.num_envs)

    def _on_step(self) -> bool:
        if self.writer is None:
            return True
        if self.max_steps is not None and self.writer.total_rows >= self.max_steps:
            self._close()
            return True
        from jacobian_wrappers.vec_transitions import vec_transition

        loc = self.locals
        self.recorder.record(
            vec_transition(self.training_env, loc["infos"], loc["rewards"], loc["dones"])
        )
        return True

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            if self.verbose:
                print(f"[dataset] {self.writer.n_rows} transitions in {self.path}")
            self.writer = None

    def _on_training_end(self) -> None:
        self._close()
