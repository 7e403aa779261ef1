"""Collection in shards: one HDF5 file per process, on any launcher or as Ray tasks.

Shard ``k`` of ``n`` steps ``n_envs`` envs seeded ``seed + k * n_envs + i``
(as env ``k * n_envs + i`` of one big batch) and writes
:func:`~dynamic_sparsity.analysis.shard_path` with its index in the metadata. The shards need
no communication, so :func:`collect_shards` runs them as independent Ray
tasks (scheduled on any node, a failed shard resumable on its own) rather
than as one ``jax.distributed`` program, where every process must start
together and a lost host stops all. :class:`~dynamic_sparsity.analysis.ShardedReader`
reads the set as one data set with global episode ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dynamic_sparsity.analysis.shards import shard_path

__all__ = ["collect_shard", "collect_shards"]


def collect_shard(
    env_name: str,
    n_steps: int,
    path: str | os.PathLike,
    index: int,
    count: int,
    *,
    n_envs: int = 64,
    seed: int = 0,
    policy: Any = "random",
    resume: bool = False,
    overwrite: bool = False,
    threshold: float | None = None,
    chunk_size: int = 4096,
    compression: str | None = None,
    **env_kwargs: Any,
) -> str:
    """Collect shard ``index`` of ``count`` (``n_steps`` rows) of the data set ``path``.

    Args:
        env_name: Playground task.
        n_steps: Rows of this shard.
        path: The data set's name; the shard goes to ``shard_path(path, index, count)``.
        index: This shard, ``0 <= index < count`` (e.g. ``jax.process_index()``,
            ``$SLURM_ARRAY_TASK_ID``).
        count: Shards in all.
        n_envs: Envs of this shard's ``PlaygroundVecEnv``.
        seed: Seed of the whole collection.
        policy: As :func:`jacobian_wrappers.collect`.
        resume: Continue this shard's file.
        overwrite: Replace this shard's file.
        threshold: Zero threshold stored as the analysis default (``collect``'s by default).
        chunk_size: Rows per HDF5 chunk.
        compression: As :func:`jacobian_wrappers.collect`.
        **env_kwargs: Further ``PlaygroundVecEnv`` arguments (``precision``, ...).

    Returns:
        The shard's file.
    """
    import jacobian_wrappers as jw

    out = shard_path(path, index, count)
    out.parent.mkdir(parents=True, exist_ok=True)
    first = seed + index * n_envs
    env = jw.PlaygroundVecEnv(env_name, n_envs, seed=first, **env_kwargs)
    jw.collect(
        env,
        n_steps,
        out,
        policy=policy,
        seed=first,
        resume=resume,
        overwrite=overwrite,
        chunk_size=chunk_size,
        compression=compression,
        extra={"shard": [int(index), int(count)]},
        **({} if threshold is None else {"threshold": threshold}),
    )
    return str(out)


def collect_shards(
    env_name: str,
    n_steps: int,
    path: str | os.PathLike,
    count: int,
    *,
    ray: bool | str = True,
    cpus_per_shard: float = 1,
    gpus_per_shard: float = 0,
    num_cpus: int | None = None,
    **kwargs: Any,
) -> list[str]:
    """Collect ``count`` shards of ``n_steps // count`` rows (the first ones one more) as Ray tasks.

    Args:
        env_name: Playground task.
        n_steps: Rows over all shards.
        path: The data set's name (shards next to it).
        count: Shards (Ray tasks).
        ray: ``True``: a local Ray instance; a string: a cluster's address.
        cpus_per_shard: Ray CPUs per task.
        gpus_per_shard: Ray GPUs per task.
        num_cpus: CPUs of a local instance (default: all).
        **kwargs: As :func:`collect_shard` (``n_envs``, ``seed``, ``precision``, ...).

    Returns:
        The shard files, in shard order (read them as one with ``sparsity.open_reader``).

    Raises:
        ValueError: ``count < 1`` or fewer rows than shards.
        ImportError: Ray is not installed (says how to install it).
        ConnectionError: The Ray address does not answer.
    """
    from dynamic_sparsity.sweeps.tune import import_ray, init_ray

    if count < 1 or n_steps < count:
        raise ValueError(f"need 1 <= count <= n_steps, got count={count}, n_steps={n_steps}")
    ray_mod, _ = import_ray()
    init_ray(ray_mod, None if ray is True else str(ray), num_cpus)
    task = ray_mod.remote(num_cpus=cpus_per_shard, num_gpus=gpus_per_shard)(collect_shard)
    rows = [n_steps // count + (k < n_steps % count) for k in range(count)]
    path = str(Path(path).resolve())
    refs = [task.remote(env_name, rows[k], path, k, count, **kwargs) for k in range(count)]
    return list(ray_mod.get(refs))
