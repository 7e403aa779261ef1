"""Measuring sparsity without a simulator: data sets, statistics, analysis, report.

Everything here is numpy, h5py and matplotlib: reading a data set of
transitions with their Jacobians, computing the study's sparsity statistics,
analysing a data set and writing its report import neither JAX, Playground,
Stable-Baselines3 nor torch, and no module sets a matplotlib backend.

* :mod:`dynamic_sparsity.analysis.stats`: the statistics, incremental and vectorised (also used
  live by ``callbacks.SparsityCallback``);
* :mod:`dynamic_sparsity.analysis.storage`: chunked, checksummed HDF5 data sets
  (:class:`TransitionWriter`, :class:`TransitionReader`);
* :mod:`dynamic_sparsity.analysis.analysis`: the study's Q1-Q3 and contact analyses of a data set;
* :mod:`dynamic_sparsity.analysis.report`: tables, figures and ``report.md``;
* :mod:`dynamic_sparsity.analysis.figures`: the matplotlib figures (``Figure`` objects, no pyplot);
* :mod:`dynamic_sparsity.analysis.dataset_card`: rows, episodes, the policy's return and a
  content digest of a data set (:func:`dataset_card`);
* :mod:`dynamic_sparsity.analysis.rl_evaluation`: RL returns as the field reports them
  (rliable's IQM, stratified bootstrap CIs, probability of improvement).
"""

from dynamic_sparsity.analysis.analysis import (
    NONSMOOTH_POLICIES,
    SWEEP_THRESHOLDS,
    ContactStats,
    DatasetAnalysis,
    analyse_dataset,
    contact_stats,
)
from dynamic_sparsity.analysis.dataset_card import content_digest, dataset_card, episode_returns
from dynamic_sparsity.analysis.report import markdown_table, write_report
from dynamic_sparsity.analysis.shards import ShardedReader, open_reader, shard_path, shard_paths
from dynamic_sparsity.analysis.stats import (
    DEFAULT_THRESHOLD,
    GlobalZeros,
    PatternCounter,
    RunLengths,
    SparsityMeans,
    combine,
    sample_sparsity,
    valid_mask,
    zero_mask,
)
from dynamic_sparsity.analysis.storage import (
    FORMAT_VERSION,
    DatasetMeta,
    TransitionReader,
    TransitionWriter,
    package_versions,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "FORMAT_VERSION",
    "NONSMOOTH_POLICIES",
    "SWEEP_THRESHOLDS",
    "ContactStats",
    "DatasetAnalysis",
    "DatasetMeta",
    "GlobalZeros",
    "PatternCounter",
    "RunLengths",
    "ShardedReader",
    "SparsityMeans",
    "TransitionReader",
    "TransitionWriter",
    "analyse_dataset",
    "combine",
    "contact_stats",
    "content_digest",
    "dataset_card",
    "episode_returns",
    "markdown_table",
    "open_reader",
    "package_versions",
    "sample_sparsity",
    "shard_path",
    "shard_paths",
    "valid_mask",
    "write_report",
    "zero_mask",
]
