"""World models in the RL loop: model-based training with SB3.

Docs: docs/world-models.md#world-models-in-the-rl-loop.


* :class:`JacobianReplayBuffer`: SB3's replay buffer, plus the ground-truth
  state, next state and Jacobians of every step; HDF5 export and import; the
  world models read it directly.
* :class:`MBPO`: SAC trained mostly on branched rollouts of an ensemble of
  any world model of :mod:`world_models` (MLP or masked, any loss mode,
  the Jacobian modes fed by the env's Jacobians), with the model's error and
  Jacobian sparsity logged next to the true one.
* :class:`ModelBuffer`, :class:`MixedSampler`: the model's transitions and
  the real/model mix of SAC's batches.
* :class:`SimulatorModel`: the simulator's own step as a model, the
  perfect-model control of the loop (``MBPO(rollout_dynamics="simulator")``).
* :class:`ModelVecEnv`: a world model (or ensemble) as an SB3 ``VecEnv``,
  observation and reward from the task's own functions at the predicted state
  (:class:`jacobian_wrappers.TaskFunctions`).
"""

from dynamic_sparsity.mbrl.mbpo import MBPO, MBPO_MODEL_CONFIG, MBPOCheckpointCallback
from dynamic_sparsity.mbrl.model_buffer import MixedSampler, ModelBuffer, concat_samples
from dynamic_sparsity.mbrl.model_env import ModelVecEnv
from dynamic_sparsity.mbrl.oracle import SimulatorModel
from dynamic_sparsity.mbrl.replay_buffer import STORAGE_DTYPES, JacobianReplayBuffer

__all__ = [
    "MBPO",
    "MBPO_MODEL_CONFIG",
    "STORAGE_DTYPES",
    "JacobianReplayBuffer",
    "MBPOCheckpointCallback",
    "MixedSampler",
    "ModelBuffer",
    "ModelVecEnv",
    "SimulatorModel",
    "concat_samples",
]
