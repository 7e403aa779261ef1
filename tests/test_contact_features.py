"""Contact features: floor distances in torch against MuJoCo's own, and masked models that use them.

The distances and the one-step-on positions are checked against MuJoCo's C
functions (``mj_kinematics`` + ``mj_geomDistance``, ``mj_integratePos``) on
the study's envs and on a hand-built model with every joint type and every
supported shape on a tilted floor. The masked models are checked against
``torch.func`` (the Jacobian stays exactly zero off the mask with the
features in the mask network) and trained on real CartpoleBalance data.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from dynamic_sparsity.sweeps import SweepJob, run_sweep
from tests.helpers import random_normaliser
from world_models import (
    LocalMaskDynamics,
    TrainConfig,
    Trainer,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from world_models.contact_features import FloorDistances, contact_spec, floor_contact_spec

torch.set_num_threads(1)

# Every joint type (free, ball, slide, hinge off its body's origin) and every
# shape with a plane distance, on a tilted floor away from the origin.
SHAPES_XML = """
<mujoco><worldbody>
  <geom name="tilted" type="plane" size="5 5 .1" pos="0 0 -0.2" euler="10 -5 0"/>
  <body name="base" pos="0 0 1"><freejoint/>
    <geom name="box" type="box" size=".1 .2 .3"/>
    <body pos=".3 0 0"><joint type="ball" pos="-.1 0 0"/>
      <geom name="ellipsoid" type="ellipsoid" size=".1 .05 .2" pos=".1 0 0"/>
      <body pos=".2 .1 0" euler="0 30 0">
        <joint type="slide" axis="0 .6 .8"/><joint type="hinge" axis="1 0 0" pos="0 .05 0"/>
        <geom name="cylinder" type="cylinder" size=".05 .1" euler="20 0 0"/>
        <geom name="sphere" type="sphere" size=".07" pos="0 0 .2"/>
        <geom name="capsule" type="capsule" size=".03 .1" pos=".1 0 0"/>
        <geom name="ghost" type="sphere" size=".05" contype="0" conaffinity="0"/>
      </body>
    </body>
  </body>
</worldbody></mujoco>
"""


def mujoco_distances(model, spec: dict, qpos: np.ndarray) -> np.ndarray:
    """MuJoCo's own signed distances, ``(n, floors * geoms)`` in the spec's order."""
    data = mujoco.MjData(model)
    ids = {model.geom(g).name: g for g in range(model.ngeom)}
    fromto, out = np.zeros(6), []
    for q in qpos:
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        out.append([
            mujoco.mj_geomDistance(model, data, ids[f], ids[g], 100.0, fromto)
            for f in spec["floor_names"] for g in spec["geom_names"]
        ])  # fmt: skip
    return np.array(out)


def random_states(model, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    qpos = np.tile(model.qpos0, (n, 1)) + 0.7 * rng.normal(size=(n, model.nq))
    return np.concatenate([qpos, 3.0 * rng.normal(size=(n, model.nv))], 1)


def study_model(env_name: str):
    """The env's own model and control step (Gymnasium ids have a "-v")."""
    if "-v" in env_name:
        import gymnasium as gym

        env = gym.make(env_name).unwrapped
        return env.model, float(env.dt)
    from mujoco_playground import registry

    env = registry.load(env_name, config_overrides={"impl": "jax"})
    return env.mj_model, float(env.dt)


@pytest.fixture(scope="module")
def shapes():
    model = mujoco.MjModel.from_xml_string(SHAPES_XML)
    return model, floor_contact_spec(model, dt=0.05)


# -- the geometry against MuJoCo ----------------------------------------------------


@pytest.mark.parametrize("env_name", ["WalkerRun", "CheetahRun", "FingerSpin", "Walker2d-v5"])
def test_distances_match_mujoco_on_the_study_envs(env_name: str) -> None:
    model, dt = study_model(env_name)
    spec = contact_spec(env_name)
    assert spec["dt"] == dt and set(spec["geom_names"]) < {
        model.geom(g).name for g in range(model.ngeom)
    }
    states = random_states(model, 40, seed=1)
    ours = FloorDistances(spec).double().distances(torch.as_tensor(states[:, : model.nq]))
    np.testing.assert_allclose(
        ours.numpy(), mujoco_distances(model, spec, states[:, : model.nq]), atol=1e-12
    )


def test_every_joint_type_and_shape_matches_mujoco(shapes) -> None:
    model, spec = shapes
    assert spec["geom_names"] == ["box", "ellipsoid", "cylinder", "sphere", "capsule"]  # no ghost
    states = random_states(model, 40, seed=2)
    features = FloorDistances(spec).double()
    qpos, qvel = torch.as_tensor(states[:, : model.nq]), torch.as_tensor(states[:, model.nq :])
    d = features.distances(qpos).numpy()
    np.testing.assert_allclose(d, mujoco_distances(model, spec, states[:, : model.nq]), atol=1e-12)
    assert (d < 0).any() and (d > 0).any(), "the test needs geoms in and above the floor"
    # One control step on: MuJoCo's mj_integratePos (quaternions in the local frame).
    ahead = np.array(states[:, : model.nq])
    for q, v in zip(ahead, states[:, model.nq :], strict=True):
        mujoco.mj_integratePos(model, q, v, 0.05)
    ours = features.integrate(qpos, qvel).numpy()
    quat = [3, 4, 5, 6, 7, 8, 9, 10]  # the free and ball joints' quaternions
    other = [i for i in range(model.nq) if i not in quat]
    np.testing.assert_allclose(ours[:, other], ahead[:, other], atol=1e-12)
    # MuJoCo leaves the stored quaternion unnormalised; compare the rotations.
    for lo in (3, 7):
        dot = np.abs(
            np.sum(
                ours[:, lo : lo + 4]
                / np.linalg.norm(ours[:, lo : lo + 4], axis=1, keepdims=True)
                * ahead[:, lo : lo + 4]
                / np.linalg.norm(ahead[:, lo : lo + 4], axis=1, keepdims=True),
                1,
            )
        )
        np.testing.assert_allclose(dot, 1.0, atol=1e-12)
    # forward: tanh(d / scale) at s, then one step on.
    out = features(torch.as_tensor(states)).numpy()
    assert out.shape == (40, features.n_features) == (40, 10) and len(features.labels) == 10
    expect = np.tanh(np.concatenate([d, mujoco_distances(model, spec, ahead)], 1) / spec["scale"])
    np.testing.assert_allclose(out, expect, atol=1e-10)
    assert features.labels[0] == "box@tilted" and features.labels[5] == "box@tilted+dt"


def test_bad_geometry_fails_clearly(shapes) -> None:
    model, spec = shapes
    no_floor = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body><freejoint/><geom size='.1'/></body></worldbody></mujoco>"
    )
    with pytest.raises(ValueError, match="no plane geom on the world body"):
        floor_contact_spec(no_floor, 0.01)
    mesh = mujoco.MjModel.from_xml_string(
        "<mujoco><asset><mesh name='m' vertex='0 0 0 1 0 0 0 1 0 0 0 1'/></asset><worldbody>"
        "<geom type='plane' size='1 1 .1'/><body><freejoint/>"
        "<geom name='rock' type='mesh' mesh='m'/></body></worldbody></mujoco>"
    )
    with pytest.raises(ValueError, match="'rock' of type 7.*implemented for"):
        floor_contact_spec(mesh, 0.01)
    with pytest.raises(ValueError, match="dt and scale must be > 0, got 0"):
        floor_contact_spec(model, 0)
    with pytest.raises(ValueError, match="Unknown env 'Nope': neither a Playground .*WalkerRun"):
        contact_spec("Nope")
    with pytest.raises(ValueError, match="CartPole-v1 is a Gymnasium env but not a MuJoCo one"):
        contact_spec("CartPole-v1")
    with pytest.raises(
        ValueError, match=r"need states starting with qpos \(13\) and qvel \(11\), got 20"
    ):
        FloorDistances(spec)(torch.zeros(3, 20))


# -- masked models with contact features ------------------------------------------


def contact_model(spec: dict, name: str = "local_mask", **kw) -> LocalMaskDynamics:
    torch.manual_seed(0)
    d_s = spec["nq"] + spec["nv"]
    model = build_model(name, d_s, 2, width=8, mode_dim=3, contact=spec, init_logit=0.0, **kw)
    model = model.double()
    model.set_normaliser(random_normaliser(np.random.default_rng(0), d_s=d_s, d_a=2))
    with torch.no_grad():
        for p in model.mask.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", ["local_mask", "codebook_mask"])
def test_mask_sees_the_raw_states_floor_distances_and_jacobian_stays_zero_off_it(
    shapes, name
) -> None:
    model_mj, spec = shapes
    model = contact_model(spec, name)
    assert model.n_features == 10
    raw = torch.as_tensor(random_states(model_mj, 24, seed=3))
    s = (raw - model.in_mean[: model.d_s]) / model.in_scale[: model.d_s]
    a = torch.randn(24, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    # The mask network's input: (s_n, a_n) and the features of the raw state.
    expected = FloorDistances(spec).double()(raw)
    seen = {}
    first = model.mask.net[0] if name == "local_mask" else model.mask.encoder[0]
    handle = first.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0]))
    hard = model.mask_sample(s, a).hard
    handle.remove()
    torch.testing.assert_close(seen["x"][:, model.n_inputs :], expected, atol=1e-12, rtol=0)
    # Exactly zero off the mask, and torch.func agrees with the chain rule
    # (the features are differentiable in s, the hard mask is not).
    analytic = model.jacobian(s, a, method="analytic")
    for method in ("jacrev", "jacfwd"):
        torch.testing.assert_close(
            analytic, model.jacobian(s, a, method=method), atol=1e-12, rtol=0
        )
    off = hard.expand(24, -1, -1) == 0
    assert 0.05 < off.double().mean() < 0.95, "the test needs masks with zeros and ones"
    assert torch.all(analytic[off] == 0.0)


def test_contact_checkpoints_round_trip_and_bad_input(shapes, tmp_path) -> None:
    _, spec = shapes
    model = contact_model(spec).float()
    x = torch.randn(5, model.d_s), torch.randn(5, 2)
    path = save_checkpoint(
        tmp_path / "c.pt", model, random_normaliser(np.random.default_rng(0), d_s=model.d_s, d_a=2),
        TrainConfig(model="local_mask", contact_features=True), "state-mask", 1,
    )  # fmt: skip
    loaded = load_checkpoint(path).model
    assert loaded.contact == spec and loaded.n_features == 10
    torch.testing.assert_close(loaded.predict(*x), model.predict(*x))
    with pytest.raises(ValueError, match="global_mask has one mask for all states"):
        build_model("global_mask", 24, 2, contact=spec)
    with pytest.raises(ValueError, match="nq=13, nv=11: the state needs at least 24 .* d_s=20"):
        build_model("local_mask", 20, 2, contact=spec)
    with pytest.raises(ValueError, match="contact_features=True needs the env name"):
        TrainConfig(model="local_mask", contact_features=True).model_kwargs()
    # The models without a mask per state ignore it, as the other mask options.
    assert "contact" not in TrainConfig(contact_features=True).model_kwargs()
    assert (
        TrainConfig(model="global_mask", contact_features=True).model_kwargs("X")["contact"] is None
    )


def test_trainer_with_contact_features_on_real_cartpole(cartpole_h5, tmp_path) -> None:
    cfg = TrainConfig(
        model="local_mask", contact_features=True, epochs=2, progress=False, horizon=2,
        checkpoint=str(tmp_path / "ckpt.pt"), weight_decay=0.0,
    )  # fmt: skip
    trainer = Trainer(cartpole_h5, "state-mask", cfg)
    assert trainer.model.contact == contact_spec("CartpoleBalance")
    assert trainer.model.contact_features.labels[:2] == ("cart@floor", "pole_1@floor")
    result = trainer.fit()
    assert np.isfinite(result.metrics.mse_normalised) and result.metrics.mask_zero_f1 > 0.5
    # The checkpoint rebuilds the model from its stored geometry (no env needed).
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded.config.contact_features and loaded.model.contact == trainer.model.contact


def test_sweep_variant_trains_with_contact_features_under_its_own_name(cartpole_h5, tmp_path):
    config = TrainConfig(epochs=1, progress=False, horizon=0, head_width=8, weight_decay=0.0)
    jobs = [
        SweepJob("CartpoleBalance", (str(cartpole_h5),), "local_mask", "state-mask", 1, variant=v)
        for v in ("", "contact")
    ]
    rows = run_sweep(jobs, config, tmp_path / "sweep")
    assert [r["model"] for r in rows] == ["local_mask", "local_mask+contact"]
    assert jobs[1].tag == "CartpoleBalance_local_mask_contact_state-mask_s1" != jobs[0].tag
    # The variant sets the config (the sweep's own config has no contact features).
    ckpt = {j.variant: load_checkpoint(tmp_path / "sweep" / "ckpt" / f"{j.tag}.pt") for j in jobs}
    assert ckpt["contact"].model.contact == contact_spec("CartpoleBalance")
    assert ckpt[""].model.contact is None and not ckpt[""].config.contact_features
    with pytest.raises(ValueError, match=r"unknown model variant 'walls'; variants: \['contact'\]"):
        SweepJob("CartpoleBalance", (str(cartpole_h5),), "local_mask", "state", 1, variant="walls")
