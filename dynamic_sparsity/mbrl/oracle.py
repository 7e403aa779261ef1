"""``SimulatorModel``: the simulator's own step behind the world-model interface.

A perfect model for the controls of an MBRL loop: MBPO with
``rollout_dynamics="simulator"`` branches its rollouts with the true dynamics
(:meth:`jacobian_wrappers.TaskFunctions.step`) instead of the learned
ensemble, so what remains between it and SAC alone is the loop itself (model
data, updates per real step), not the model's error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from jacobian_wrappers.task_functions import TaskFunctions

__all__ = ["SimulatorModel"]


class SimulatorModel(nn.Module):
    """``s' = step(s, a)`` of a Playground task, for :class:`~dynamic_sparsity.mbrl.ModelVecEnv`.

    Args:
        env_name: Task name, e.g. ``"CartpoleBalance"``.
        precision: ``"float32"`` or ``"float64"``.
        config_overrides: Playground config overrides, as for the envs.

    Attributes:
        d_s: State dimension.
        d_a: Action dimension.
        name: ``"simulator"`` (the model name a ``DynamicsEnsemble`` of it reports).
    """

    name = "simulator"
    predict_delta = False

    def __init__(
        self,
        env_name: str,
        precision: str = "float64",
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()

        self.task = TaskFunctions(env_name, precision, config_overrides)
        self.d_s, self.d_a = self.task.d_s, self.task.d_a

    @torch.no_grad()
    def predict_raw(self, state: Tensor, action: Tensor) -> Tensor:
        """Next states ``(n, d_s)`` from raw states ``(n, d_s)`` and actions ``(n, d_a)``."""
        s = state.detach().cpu().double().numpy()
        a = action.detach().cpu().double().numpy()
        s2 = self.task.step(s, a)
        # A copy: the simulator's array is read-only, and callers may write to the result.
        return torch.tensor(s2, device=state.device)
