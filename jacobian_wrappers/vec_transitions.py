"""The transitions of any SB3 VecEnv with Jacobians, as rows for a data set.

Two kinds of VecEnv carry Jacobians: a :class:`~jacobian_wrappers.PlaygroundVecEnv`
(its batch arrays, :attr:`~jacobian_wrappers.PlaygroundVecEnv.last_transition`)
and a ``DummyVecEnv``/``SubprocVecEnv`` of :class:`~jacobian_wrappers.JacobianWrapper`
envs (Playground or Gymnasium MuJoCo envs: the keys in each step's ``infos``).
:func:`vec_transition` gives both as the same dict of arrays, which
:class:`~jacobian_wrappers.TransitionRecorder` writes; :func:`dataset_meta`
gives both as the same data-set metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from dynamic_sparsity.analysis.stats import default_threshold
from dynamic_sparsity.analysis.storage import DatasetMeta
from jacobian_wrappers.jacobian_wrapper import JacobianWrapper, resolve_info_keys
from jacobian_wrappers.vec_env import PlaygroundVecEnv

__all__ = [
    "check_env_has_jacobians",
    "dataset_meta",
    "original_rewards",
    "transition_from_infos",
    "vec_transition",
]


def check_env_has_jacobians(env: VecEnv, user: str = "SparsityCallback") -> None:
    """Raise unless ``env`` puts Jacobians in its ``infos``.

    Args:
        env: The VecEnv (possibly wrapped).
        user: Who asks, for the message.

    Raises:
        ValueError: With what to use instead.
    """
    base = env.unwrapped
    if isinstance(base, PlaygroundVecEnv):
        ok = base.jacobians
    else:
        try:
            ok = all(env.env_is_wrapped(JacobianWrapper))
        except Exception:  # a VecEnv that cannot answer
            ok = False
    if not ok:
        raise ValueError(
            f"{user} needs Jacobians in the infos, but the env ({type(base).__name__}) "
            "provides none. Use jacobian_wrappers.PlaygroundVecEnv(..., jacobians=True), or "
            "wrap each env in jacobian_wrappers.JacobianWrapper (e.g. DummyVecEnv([lambda: "
            "JacobianWrapper(gym.make('HalfCheetah-v5'))]))."
        )


def original_rewards(env: VecEnv, rewards: np.ndarray) -> np.ndarray:
    """``rewards`` of the last step before any ``VecNormalize`` under ``env`` scaled them."""
    normalize = unwrap_vec_normalize(env)
    return np.asarray(rewards) if normalize is None else normalize.get_original_reward()


def transition_from_infos(
    infos: Sequence[Mapping[str, Any]],
    rewards: np.ndarray,
    dones: np.ndarray,
    info_keys: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """One vector step of JacobianWrapper envs as batch arrays (``last_transition``'s layout).

    Args:
        infos: The step's ``infos``, one per env, with the keys of ``JacobianWrapper``.
        rewards: The step's rewards (un-normalised, see :func:`original_rewards`).
        dones: The step's dones; ``TimeLimit.truncated`` in ``infos`` splits them
            into terminated and truncated, as SB3 does.
        info_keys: Renames of the info keys, as given to ``JacobianWrapper``.

    Raises:
        KeyError: An info without the Jacobian keys (names the env and the key).
    """
    keys = resolve_info_keys(info_keys)
    fields = ("state", "action", "next_state", "jacobian_state", "jacobian_action", "nonsmooth")
    out: dict[str, np.ndarray] = {}
    for field in fields:
        try:
            rows = [info[keys[field]] for info in infos]
        except KeyError as err:
            bad = next(i for i, info in enumerate(infos) if keys[field] not in info)
            raise KeyError(
                f"infos[{bad}] has no {keys[field]!r}: is every env wrapped in JacobianWrapper?"
            ) from err
        out["jacobian_nonsmooth" if field == "nonsmooth" else field] = np.stack(rows)
    dones = np.asarray(dones, dtype=bool)
    truncated = dones & np.array([bool(i.get("TimeLimit.truncated", False)) for i in infos])
    out["reward"] = np.asarray(rewards, dtype=out["state"].dtype)
    out["terminated"] = dones & ~truncated
    out["truncated"] = truncated
    out["n_contacts"] = np.array([int(i.get("n_contacts", 0)) for i in infos], dtype=np.int32)
    return out


def vec_transition(
    env: VecEnv,
    infos: Sequence[Mapping[str, Any]],
    rewards: np.ndarray,
    dones: np.ndarray,
    info_keys: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """The vector step ``env`` just took, as batch arrays, whichever kind of VecEnv it is.

    A ``PlaygroundVecEnv`` (under any wrappers) gives its ``last_transition``;
    any other VecEnv its infos (:func:`transition_from_infos`), with the rewards
    before a ``VecNormalize``.
    """
    base = env.unwrapped
    if isinstance(base, PlaygroundVecEnv):
        return base.last_transition
    return transition_from_infos(infos, original_rewards(env, rewards), dones, info_keys)


def dataset_meta(env: VecEnv, **kwargs: Any) -> DatasetMeta:
    """Data-set metadata of the envs of ``env`` (env name, precision, ``dt``, labels, backend).

    Args:
        env: A ``PlaygroundVecEnv`` or a VecEnv of ``JacobianWrapper`` envs.
        **kwargs: Further :class:`~dynamic_sparsity.analysis.DatasetMeta` fields (``policy``, ...);
            ``extra`` is merged with the backend and method; ``threshold``
            defaults to the backend's (``dynamic_sparsity.analysis.stats.default_threshold``).
    """
    base = env.unwrapped
    source = dict(env.get_attr("jacobian_source")[0])
    extra = dict(kwargs.pop("extra", {}))
    extra.setdefault("jacobian_backend", source.pop("backend"))
    extra.setdefault("jacobian_method", source.pop("jacobian_method"))
    # Finite differences turn structural zeros into round-off: their own threshold.
    if kwargs.get("threshold") is None:
        kwargs["threshold"] = default_threshold(extra["jacobian_backend"])
    jacobians = base.jacobians if isinstance(base, PlaygroundVecEnv) else True
    return DatasetMeta(**source, jacobians=jacobians, extra=extra, **kwargs)
