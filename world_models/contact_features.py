"""Floor distances of a MuJoCo model's bodies as torch functions of the state: contact features.

Which inputs an output of a contact-rich step depends on changes with the
contact mode: a foot that touches the floor during the step couples the
torso's height to everything, one that stays clear does not. The mode is
decided by geometry the raw state hides in a nonlinear forward kinematics
(a foot's height is a function of every joint angle above it), and a mask
network that sees only ``(s, a)`` resolves it poorly (WalkerRun: zero-pattern
F1 0.82; ``benchmarks/mask_learnability.py``). :class:`FloorDistances` gives it
the geometry directly: the signed distance of every geom that can collide
with the floor, at ``s`` and after one control step of ``s``'s velocity.

They are functions of the state alone, computed in torch (batched, on any
device, under ``torch.func``), so a masked model that feeds them to its mask
network keeps its Jacobian exactly zero off its mask: the hard mask is
piecewise constant whatever its inputs.

The kinematics are MuJoCo's ``mj_kinematics`` for hinge, slide, ball and free
joints; the distance of a convex primitive to a plane is that of MuJoCo's
collision functions (centre height minus the support of the shape along the
normal), checked against ``mujoco.mj_geomDistance`` in the tests. A model's
geometry is captured once as a plain-typed *spec* (:func:`floor_contact_spec`),
which a checkpoint stores, so a loaded model needs neither MuJoCo nor the env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["FloorDistances", "contact_spec", "floor_contact_spec"]

# mjtJoint and mjtGeom values (kept here so that importing needs no MuJoCo).
_FREE, _BALL, _SLIDE, _HINGE = 0, 1, 2, 3
_PLANE, _SPHERE, _CAPSULE, _ELLIPSOID, _CYLINDER, _BOX = 0, 2, 3, 4, 5, 6
_SHAPES = {_SPHERE: "sphere", _CAPSULE: "capsule", _ELLIPSOID: "ellipsoid",
           _CYLINDER: "cylinder", _BOX: "box"}  # fmt: skip

#: Distances are passed through ``tanh(d / scale)``: resolved near contact, bounded far away.
DEFAULT_SCALE = 0.1


def floor_contact_spec(model: Any, dt: float, scale: float = DEFAULT_SCALE) -> dict[str, Any]:
    """The plain-typed geometry :class:`FloorDistances` needs, from a ``mujoco.MjModel``.

    Floors are the plane geoms of the world body; the features are every
    other geom that can collide with one (``contype``/``conaffinity``).
    Mocap bodies stay where the model puts them (the state does not hold
    their pose).

    Args:
        model: The MuJoCo model.
        dt: Control time step (the "one step on" of the second distance).
        scale: Metres per unit of the ``tanh`` feature.

    Raises:
        ValueError: No floor plane, no geom that can touch it, a colliding
            geom of a shape without a plane distance here (mesh, height
            field, SDF), or a non-positive ``dt``/``scale``.
    """
    if float(dt) <= 0 or float(scale) <= 0:
        raise ValueError(f"dt and scale must be > 0, got {dt} and {scale}")

    def name(g: int) -> str:
        return model.geom(g).name or f"geom{g}"

    floors = [g for g in range(model.ngeom)
              if model.geom_type[g] == _PLANE and model.geom_bodyid[g] == 0]  # fmt: skip
    if not floors:
        raise ValueError("the model has no plane geom on the world body (a floor) to measure to")
    touching = [
        g for g in range(model.ngeom)
        if model.geom_bodyid[g] != 0
        and any(model.geom_contype[g] & model.geom_conaffinity[f]
                or model.geom_contype[f] & model.geom_conaffinity[g] for f in floors)
    ]  # fmt: skip
    if not touching:
        raise ValueError(f"no geom can collide with the floor ({[name(f) for f in floors]})")
    for g in touching:
        if int(model.geom_type[g]) not in _SHAPES:
            raise ValueError(
                f"geom {name(g)!r} of type {int(model.geom_type[g])} collides with the floor; "
                f"plane distances are implemented for {sorted(_SHAPES.values())}"
            )
    return {
        "nq": int(model.nq),
        "nv": int(model.nv),
        "dt": float(dt),
        "scale": float(scale),
        "body_parent": model.body_parentid.tolist(),
        "body_pos": model.body_pos.tolist(),
        "body_quat": model.body_quat.tolist(),
        "jnt_body": model.jnt_bodyid.tolist(),
        "jnt_type": model.jnt_type.tolist(),
        "jnt_qposadr": model.jnt_qposadr.tolist(),
        "jnt_dofadr": model.jnt_dofadr.tolist(),
        "jnt_pos": model.jnt_pos.tolist(),
        "jnt_axis": model.jnt_axis.tolist(),
        "qpos0": model.qpos0.tolist(),
        "floor_normal": [_rotations(model.geom_quat[f])[:, 2].tolist() for f in floors],
        "floor_point": [model.geom_pos[f].tolist() for f in floors],
        "floor_names": [name(f) for f in floors],
        "geom_names": [name(g) for g in touching],
        "geom_body": [int(model.geom_bodyid[g]) for g in touching],
        "geom_type": [int(model.geom_type[g]) for g in touching],
        "geom_size": [model.geom_size[g].tolist() for g in touching],
        "geom_pos": [model.geom_pos[g].tolist() for g in touching],
        "geom_quat": [model.geom_quat[g].tolist() for g in touching],
    }


def contact_spec(env_name: str, scale: float = DEFAULT_SCALE) -> dict[str, Any]:
    """:func:`floor_contact_spec` of an env by name, the name a data set records.

    A Playground DM Control Suite env (``"WalkerRun"``, read with Playground)
    or a Gymnasium MuJoCo env id (``"HalfCheetah-v5"``, whose data sets the
    project collects through ``JacobianWrapper``; read with Gymnasium).

    Raises:
        ValueError: A name that is neither (the message lists the Playground
            envs), a Gymnasium env that is not a MuJoCo one, or a model
            without floor contacts (see :func:`floor_contact_spec`).
    """
    model, dt = _env_model(env_name)
    try:
        return floor_contact_spec(model, dt, scale)
    except ValueError as err:
        raise ValueError(f"{env_name}: {err}") from err


def _env_model(env_name: str) -> tuple[Any, float]:
    """The ``mujoco.MjModel`` and control time step of a Playground or Gymnasium env."""
    from jacobian_wrappers.registry import available_envs

    if env_name in available_envs():
        from mujoco_playground import registry

        env = registry.load(env_name, config_overrides={"impl": "jax"})
        return env.mj_model, float(env.dt)
    import gymnasium as gym

    from jacobian_wrappers.gym_mujoco import is_gym_mujoco_env

    try:
        env = gym.make(env_name)
    except gym.error.Error as err:
        raise ValueError(
            f"Unknown env {env_name!r}: neither a Playground DM Control Suite env "
            f"({', '.join(available_envs())}) nor a Gymnasium env ({err})"
        ) from err
    try:
        if not is_gym_mujoco_env(env.unwrapped):
            raise ValueError(f"{env_name} is a Gymnasium env but not a MuJoCo one")
        return env.unwrapped.model, float(env.unwrapped.dt)
    finally:
        env.close()


def _skew(v: Tensor) -> Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).view(*v.shape[:-1], 3, 3)


def _quat_matrix(q: Tensor) -> Tensor:
    """``(B, 4)`` quaternions (normalised here) to ``(B, 3, 3)`` rotation matrices."""
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(*q.shape[:-1], 3, 3)  # fmt: skip


def _rotations(quats: Any) -> Tensor:
    """Float64 rotation matrices of quaternions given as numbers (a model's, a spec's)."""
    return _quat_matrix(torch.as_tensor(np.asarray(quats, dtype=float)))


def _rotate(angle: Tensor, skew: Tensor) -> Tensor:
    """Rodrigues: ``(B, 3, 3)`` rotations by ``angle (B,)`` about the unit axis of ``skew``."""
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3, dtype=angle.dtype, device=angle.device) + s * skew + (1 - c) * skew @ skew


def _quat_step(q: Tensor, omega: Tensor) -> Tensor:
    """``q * exp(omega)`` for a local-frame rotation vector ``omega`` (``mju_quatIntegrate``)."""
    angle = omega.norm(dim=-1, keepdim=True)
    axis = omega / angle.clamp(min=1e-12)
    r = torch.cat([torch.cos(angle / 2), axis * torch.sin(angle / 2)], -1)
    w1, v1, w2, v2 = q[..., :1], q[..., 1:], r[..., :1], r[..., 1:]
    return torch.cat([w1 * w2 - (v1 * v2).sum(-1, keepdim=True),
                      w1 * v2 + w2 * v1 + torch.cross(v1, v2, dim=-1)], -1)  # fmt: skip


class FloorDistances(nn.Module):
    """Signed floor distance of every floor-colliding geom, at ``s`` and one control step on.

    ``forward(state)`` takes raw states ``(B, d_s)`` whose first ``nq + nv``
    entries are ``qpos, qvel`` (the project's state) and returns
    ``tanh(d / scale)`` of shape ``(B, 2 * floors * geoms)``: the distances at
    ``qpos``, then at ``qpos`` integrated by ``qvel`` over one control step
    (``mj_integratePos``), each floor's geoms in :attr:`labels` order. The
    geometry is held in float64 (whatever the default dtype) and the
    features are computed in it, then returned in the state's dtype.

    Args:
        spec: From :func:`floor_contact_spec` or :func:`contact_spec`.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.nq, self.nv = int(spec["nq"]), int(spec["nv"])
        self.dt, self.scale = float(spec["dt"]), float(spec["scale"])
        self.parent = [int(p) for p in spec["body_parent"]]
        self.joints: list[list[int]] = [[] for _ in self.parent]
        for j, body in enumerate(spec["jnt_body"]):
            self.joints[int(body)].append(j)
        self.jnt_type = [int(t) for t in spec["jnt_type"]]
        self.qposadr = [int(a) for a in spec["jnt_qposadr"]]
        self.dofadr = [int(a) for a in spec["jnt_dofadr"]]
        self.geom_body = [int(b) for b in spec["geom_body"]]
        self.geom_type = [int(t) for t in spec["geom_type"]]

        def buffer(label: str, value: Any) -> None:
            self.register_buffer(label, torch.as_tensor(np.asarray(value, float)), persistent=False)

        buffer("body_pos", spec["body_pos"])
        buffer("body_rot", _rotations(spec["body_quat"]))
        buffer("jnt_pos", np.reshape(spec["jnt_pos"], (-1, 3)))
        axis = np.reshape(spec["jnt_axis"], (-1, 3))
        buffer("jnt_axis", axis)
        buffer("jnt_skew", _skew(torch.as_tensor(axis)).numpy())
        buffer("qpos0", spec["qpos0"])
        buffer("floor_normal", spec["floor_normal"])
        buffer("floor_point", spec["floor_point"])
        buffer("geom_pos", spec["geom_pos"])
        buffer("geom_rot", _rotations(spec["geom_quat"]))
        buffer("geom_size", spec["geom_size"])

    @property
    def labels(self) -> tuple[str, ...]:
        """One name per feature: ``"<geom>@<floor>"`` at ``s``, then ``"...+dt"`` one step on."""
        pairs = [f"{g}@{f}" for f in self.spec["floor_names"] for g in self.spec["geom_names"]]
        return tuple(pairs) + tuple(p + "+dt" for p in pairs)

    @property
    def n_features(self) -> int:
        """Width of :meth:`forward`'s output."""
        return 2 * len(self.spec["floor_names"]) * len(self.geom_type)

    def integrate(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        """``qpos`` moved by ``qvel`` for one control step (MuJoCo's ``mj_integratePos``)."""
        parts, done = [], 0
        for j, kind in enumerate(self.jnt_type):
            a, v = self.qposadr[j], self.dofadr[j]
            if a > done:  # positions of no joint (none in MuJoCo models): unchanged
                parts.append(qpos[:, done:a])
            if kind in (_SLIDE, _HINGE):
                parts.append(qpos[:, a : a + 1] + self.dt * qvel[:, v : v + 1])
                done = a + 1
                continue
            if kind == _FREE:
                parts.append(qpos[:, a : a + 3] + self.dt * qvel[:, v : v + 3])
                a, v = a + 3, v + 3
            quat = qpos[:, a : a + 4]
            parts.append(
                _quat_step(quat / quat.norm(dim=-1, keepdim=True), self.dt * qvel[:, v : v + 3])
            )
            done = a + 4
        parts.append(qpos[:, done:])
        return torch.cat(parts, -1)

    def kinematics(self, qpos: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """World position ``(B, 3)`` and rotation ``(B, 3, 3)`` of each body (``mj_kinematics``)."""
        batch = qpos.shape[0]
        xpos = [qpos.new_zeros(batch, 3)]
        xmat = [torch.eye(3, dtype=qpos.dtype, device=qpos.device).expand(batch, 3, 3)]
        for b in range(1, len(self.parent)):
            p = self.parent[b]
            pos = xpos[p] + xmat[p] @ self.body_pos[b]
            mat = xmat[p] @ self.body_rot[b]
            for j in self.joints[b]:
                kind, a = self.jnt_type[j], self.qposadr[j]
                if kind == _FREE:
                    pos, mat = qpos[:, a : a + 3], _quat_matrix(qpos[:, a + 3 : a + 7])
                    continue
                anchor = pos + mat @ self.jnt_pos[j]
                if kind == _SLIDE:
                    pos = pos + (mat @ self.jnt_axis[j]) * (qpos[:, a] - self.qpos0[a])[:, None]
                    continue
                if kind == _HINGE:
                    mat = mat @ _rotate(qpos[:, a] - self.qpos0[a], self.jnt_skew[j])
                else:  # ball
                    mat = mat @ _quat_matrix(qpos[:, a : a + 4])
                pos = anchor - mat @ self.jnt_pos[j]  # the rotation is about the anchor
            xpos.append(pos)
            xmat.append(mat)
        return xpos, xmat

    def distances(self, qpos: Tensor) -> Tensor:
        """Signed distances ``(B, floors * geoms)`` of the geoms to the floors (not squashed)."""
        xpos, xmat = self.kinematics(qpos)
        out = []
        for normal, point in zip(self.floor_normal, self.floor_point, strict=True):
            for g, (body, kind) in enumerate(zip(self.geom_body, self.geom_type, strict=True)):
                centre = xpos[body] + xmat[body] @ self.geom_pos[g]
                u = (xmat[body] @ self.geom_rot[g]).transpose(-1, -2) @ normal  # normal, geom frame
                size = self.geom_size[g]
                if kind == _SPHERE:
                    support = size[0].expand(len(u))
                elif kind == _CAPSULE:
                    support = size[0] + size[1] * u[:, 2].abs()
                elif kind == _CYLINDER:
                    radial = (1 - u[:, 2] ** 2).clamp(min=0).sqrt()
                    support = size[0] * radial + size[1] * u[:, 2].abs()
                elif kind == _BOX:
                    support = (size * u.abs()).sum(-1)
                else:  # ellipsoid
                    support = (size * u).norm(dim=-1)
                out.append((centre - point) @ normal - support)
        return torch.stack(out, -1)

    def forward(self, state: Tensor) -> Tensor:
        """``tanh(d / scale)`` at ``s`` and one step on, ``(B, n_features)``."""
        if state.shape[-1] < self.nq + self.nv:
            raise ValueError(
                f"contact features need states starting with qpos ({self.nq}) and qvel "
                f"({self.nv}), got {state.shape[-1]} entries"
            )
        x = state.to(self.body_pos.dtype)
        qpos, qvel = x[:, : self.nq], x[:, self.nq : self.nq + self.nv]
        d = torch.cat([self.distances(qpos), self.distances(self.integrate(qpos, qvel))], -1)
        return torch.tanh(d / self.scale).to(state.dtype)
