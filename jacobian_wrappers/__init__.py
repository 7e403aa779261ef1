"""Exact step Jacobians of MuJoCo Playground (MJX) envs for Gymnasium and SB3.

Importing this package registers ``Playground/<Task>-v0`` with Gymnasium for
every DM Control Suite task, so ``gym.make("Playground/CheetahRun-v0")`` works.
On a machine without a display, ``MUJOCO_GL`` defaults to ``egl`` so that
``render_mode="rgb_array"`` can find an OpenGL context. Before JAX starts, it
adds ``--xla_cpu_use_fusion_emitters=false`` to ``XLA_FLAGS`` (MJX compiles
many times faster code on a CPU with it; see ``jacobian_wrappers._xla_flags``).
"""

import os as _os

if not _os.environ.get("DISPLAY"):
    _os.environ.setdefault("MUJOCO_GL", "egl")

# First: sets XLA_FLAGS before anything below can start a JAX backend.
import jacobian_wrappers._xla_flags  # noqa: F401
from dynamic_sparsity.analysis.storage import DatasetMeta, TransitionReader, TransitionWriter
from jacobian_wrappers._precision import PRECISIONS
from jacobian_wrappers.collection import CollectionResult, TransitionRecorder, collect, make_policy
from jacobian_wrappers.compilation_cache import (
    default_cache_dir,
    enable_compilation_cache,
)
from jacobian_wrappers.expert_agents import available_experts, load_expert
from jacobian_wrappers.jacobian_wrapper import DEFAULT_INFO_KEYS, JacobianWrapper
from jacobian_wrappers.playground_env import PlaygroundEnv, StepJacobians
from jacobian_wrappers.registry import (
    STUDY_ENVS,
    available_envs,
    gym_id,
    register_gymnasium_envs,
)
from jacobian_wrappers.simulator import Simulator, Transition, get_simulator
from jacobian_wrappers.state_space import StateSpace
from jacobian_wrappers.task_functions import TaskFunctions
from jacobian_wrappers.vec_env import PlaygroundVecEnv

register_gymnasium_envs()

__all__ = [
    "DEFAULT_INFO_KEYS",
    "PRECISIONS",
    "STUDY_ENVS",
    "CollectionResult",
    "DatasetMeta",
    "JacobianWrapper",
    "PlaygroundEnv",
    "PlaygroundVecEnv",
    "Simulator",
    "StateSpace",
    "StepJacobians",
    "TaskFunctions",
    "Transition",
    "TransitionReader",
    "TransitionRecorder",
    "TransitionWriter",
    "available_envs",
    "available_experts",
    "collect",
    "default_cache_dir",
    "enable_compilation_cache",
    "get_simulator",
    "gym_id",
    "load_expert",
    "make_policy",
    "register_gymnasium_envs",
]
