"""Sweeps of world-model trainings: the grid, one trial, and Ray Tune (docs/scale.md).

A sweep is a list of :class:`SweepJob` (env x model x loss x seed), each
trained by :func:`run_job`. :func:`run_sweep` runs them one after the other
in this process, or, with ``ray=True`` or a Ray address, as Ray Tune trials
(resources per trial, checkpoints after every epoch, ``resume=True`` restarts
only the unfinished trials). Ray is an extra: ``pip install -e ".[ray]"`` in the clone.
"""

from dynamic_sparsity.sweeps.collect import collect_shard, collect_shards
from dynamic_sparsity.sweeps.grid import MODEL_VARIANTS, SweepJob, run_job
from dynamic_sparsity.sweeps.runner import run_sweep
from dynamic_sparsity.sweeps.tune import check_ray_address, import_ray

__all__ = [
    "MODEL_VARIANTS",
    "SweepJob",
    "check_ray_address",
    "collect_shard",
    "collect_shards",
    "import_ray",
    "run_job",
    "run_sweep",
]
