"""The parts of dynamic-sparsity beyond the three packages the layout fixes.

* :mod:`dynamic_sparsity.analysis`: data sets, the sparsity statistics and the
  report (numpy, h5py and matplotlib only; no simulator);
* :mod:`dynamic_sparsity.mbrl`: world models in the RL loop (MBPO over SB3's
  SAC, the Jacobian replay buffer, a world model as an SB3 ``VecEnv``);
* :mod:`dynamic_sparsity.sweeps`: world-model grids on Ray Tune and sharded
  collection.

One top-level name that no other package on PyPI installs. Importing it
imports none of the three: each is imported on its own.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
