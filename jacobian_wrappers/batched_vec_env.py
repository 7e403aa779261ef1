"""``BatchedVecEnv``: the SB3 plumbing of a VecEnv whose envs are one batched object.

``PlaygroundVecEnv`` (one jitted call for all envs) and
``dynamic_sparsity.mbrl.ModelVecEnv`` (one world-model call for all envs)
hold no per-env objects: an attribute or method of "env ``i``" is the
VecEnv's own. This base answers SB3's attribute API that way, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

__all__ = ["BatchedVecEnv"]


class BatchedVecEnv(VecEnv):
    """A ``VecEnv`` whose ``num_envs`` envs are one object: attributes are shared."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of this VecEnv, repeated for each env in ``indices``."""
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of this VecEnv (shared by all envs)."""
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call a method of this VecEnv once per env in ``indices``."""
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No env inside is wrapped by a Gymnasium wrapper."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Rendering is not supported by a batched env."""
        return [None for _ in range(self.num_envs)]
