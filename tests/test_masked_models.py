"""The model family: masked models' Jacobians, mask losses, metrics, checkpoints, bad input.

Unit tests check the masked models against ``torch.func`` and hand-computed
losses; training tests use the linear toy system (known zero pattern) and a
small real CartpoleBalance set.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.helpers import D_A, D_S, A, B, random_normaliser, write_linear
from world_models import (
    MASKED_MODELS,
    MODELS,
    Batch,
    CodebookMaskDynamics,
    DynamicsMLP,
    DynamicsModel,
    LossWeights,
    TrainConfig,
    Trainer,
    build_model,
    compute_loss,
    load_checkpoint,
    load_model,
    train,
)
from world_models.evaluate import _sample_scores

torch.set_num_threads(1)

MASKED = [m for m in MODELS if m in MASKED_MODELS]


def make(name: str, predict_delta: bool = False, **kw) -> DynamicsModel:
    torch.manual_seed(0)
    # init_logit 0 and a few steps of noise give masks with zeros and ones.
    model = build_model(name, D_S, D_A, width=8, predict_delta=predict_delta, **kw).double()
    if predict_delta:
        model.set_normaliser(random_normaliser(np.random.default_rng(0)))
    with torch.no_grad():
        for p in model.mask.parameters():
            p.add_(torch.randn_like(p))
    return model


def inputs(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, D_S, generator=g, dtype=torch.float64),
        torch.randn(n, D_A, generator=g, dtype=torch.float64),
    )


def batch_with_jacobians(n: int = 8, valid_first_action: bool = True) -> Batch:
    s, a = inputs(n)
    jac = torch.as_tensor(np.concatenate([A, B], 1)).expand(n, -1, -1).clone()
    valid = torch.ones(n, D_S + D_A, dtype=torch.bool)
    if not valid_first_action:
        valid[::2, D_S] = False
    return Batch(
        state=s,
        action=a,
        next_state=torch.randn(n, D_S, dtype=torch.float64),
        delta=torch.randn(n, D_S, dtype=torch.float64),
        jacobian=jac,
        zero_mask=jac == 0,
        jacobian_valid=valid,
    )


# -- Jacobians -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predict_delta", "shared", "mode_dim"),
    [(False, False, 0), (True, False, 0), (False, True, 0), (False, False, 4), (True, True, 4)],
)
@pytest.mark.parametrize("name", MASKED)
def test_masked_jacobian_matches_torch_func_and_is_zero_off_the_mask(
    name: str, predict_delta: bool, shared: bool, mode_dim: int
) -> None:
    model = make(name, predict_delta, shared_heads=shared, mode_dim=mode_dim).eval()
    assert model.weights[0].shape[0] == (1 if shared else D_S)
    s, a = inputs()
    analytic = model.jacobian(s, a, method="analytic")
    for method in ("jacrev", "jacfwd"):
        torch.testing.assert_close(
            analytic, model.jacobian(s, a, method=method), atol=1e-12, rtol=0
        )
    hard = model.mask_sample(s, a).hard.expand(len(s), -1, -1)
    off = hard == 0
    if predict_delta:  # the skip adds the identity to d s'/d s
        off[:, :, :D_S] &= ~torch.eye(D_S, dtype=torch.bool)
    assert 0.05 < off.double().mean() < 0.95, "the test needs masks with zeros and ones"
    assert torch.all(analytic[off] == 0.0)  # exactly zero, not small
    assert torch.all(model.jacobian(s, a, method="jacrev")[off] == 0.0)
    # "auto" is the chain rule in evaluation too (torch.func's vmap of the heads
    # took 14 GB for 64 CheetahRun-sized rows).
    assert torch.equal(model.jacobian(s, a), analytic)
    assert (analytic[hard == 1] != 0).double().mean() > 0.9
    # Raw coordinates keep the zeros (the normaliser only rescales).
    x_raw = torch.cat([s, a], 1) * model.in_scale + model.in_mean
    raw = model.jacobian_raw(x_raw[:, :D_S], x_raw[:, D_S:])
    assert torch.all(raw[off] == 0.0) and (raw[hard == 1] != 0).double().mean() > 0.9


@pytest.mark.parametrize(("shared", "mode_dim"), [(False, 0), (True, 0), (False, 4)])
@pytest.mark.parametrize("name", MASKED)
def test_training_jacobian_is_that_of_the_sampled_mask(
    name: str, shared: bool, mode_dim: int
) -> None:
    model = make(name, dropout=0.0, shared_heads=shared, mode_dim=mode_dim).train()
    s, a = inputs()
    torch.manual_seed(3)
    out, jac, sample = model.forward_with_mask(s, a)
    hard = sample.hard.detach()
    assert torch.all(jac[hard.expand_as(jac) == 0] == 0.0)

    # The heads with that mask held fixed, differentiated by torch.func.
    def heads(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return model._heads(x.unsqueeze(0), m.unsqueeze(0), False)[0].squeeze(0)

    x = torch.cat([s, a], 1)
    per_row = torch.func.vmap(torch.func.jacrev(heads), in_dims=(0, 0))(x, hard.expand_as(jac))
    torch.testing.assert_close(jac, per_row, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, model._heads(x, hard, False)[0], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="straight-through"):
        model.jacobian(s, a, method="jacrev")


def test_mode_code_lets_a_head_see_the_other_outputs_masks_not_its_cut_inputs() -> None:
    """With ``mode_dim`` a head's output depends on the whole mask, held fixed."""
    s, a = inputs(6)
    x = torch.cat([s, a], 1)
    mask = torch.ones(len(x), D_S, D_S + D_A, dtype=torch.float64)
    mask[:, 0, 1] = 0.0  # head 0 does not see input 1
    other = mask.clone()
    other[:, 1, :] = 0.0  # only head 1's row differs
    moved = x.clone()
    moved[:, 1] += 1.0  # only the input head 0 does not see
    for mode_dim in (0, 4):
        model = make("local_mask", dropout=0.0, mode_dim=mode_dim).eval()
        out = model._heads(x, mask, False)[0]
        # A cut input never reaches its head, with or without the mode code.
        torch.testing.assert_close(model._heads(moved, mask, False)[0][:, 0], out[:, 0])
        changed = model._heads(x, other, False)[0][:, 0]
        if mode_dim:  # head 0 reads the mode: another output's mask changes it
            assert (changed - out[:, 0]).abs().min() > 1e-6
        else:  # without it head 0 sees its own row of the mask only
            torch.testing.assert_close(changed, out[:, 0], atol=0, rtol=0)
    with pytest.raises(ValueError, match="mode_dim must be >= 0, got -1"):
        build_model("local_mask", D_S, D_A, mode_dim=-1)
    with pytest.raises(ValueError, match="mode_dim must be >= 0, got -2"):
        TrainConfig(model="local_mask", mode_dim=-2)


def test_heads_draw_one_dropout_mask_per_sample_shared_by_the_heads() -> None:
    """Dropout in training: a unit is dropped in every head of a sample or in none."""
    model = make("local_mask", dropout=0.5, mode_dim=2).train()
    s, a = inputs(64)
    x = torch.cat([s, a], 1)
    torch.manual_seed(5)
    _, gates = model._heads(x, torch.ones(len(x), D_S, D_S + D_A, dtype=x.dtype), True)
    dropped = gates[0] == 0  # (d_s, B, width); ELU's derivative is never 0
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))
    assert 0.3 < dropped[0].double().mean() < 0.7


def test_codebook_has_at_most_k_masks_and_revives_unused_codes() -> None:
    model = make("codebook_mask", codebook_size=3)
    s, a = inputs(256)
    model.eval()
    masks = model.mask_sample(s, a).hard
    assert len({m.flatten().tolist().__str__() for m in masks}) <= 3
    assert model.mask.assign(torch.cat([s, a], 1)).max() < 3
    model.train()
    model.mask_sample(s, a)  # the first training batch places the codes on encoder outputs
    z = model.mask.encoder(torch.cat([s, a], 1)).detach()
    d = torch.cdist(model.mask.codes.detach(), z).min(dim=1).values
    assert torch.all(d < 1e-2 * z.std())
    # A code nobody chose is moved onto an encoder output after the step.
    with torch.no_grad():
        model.mask.codes[1] = 1e6
        model.mask.usage[1] = 0.0
    model.mask_sample(s, a)
    model.after_step()
    assert torch.cdist(model.mask.codes[1:2].detach(), z).min() < 1e-2 * z.std()


# -- losses ----------------------------------------------------------------------


@pytest.mark.parametrize("name", MASKED)
def test_mask_loss_matches_hand_computation(name: str) -> None:
    model = make(name).eval()  # evaluation: no sampling noise in the mask
    batch = batch_with_jacobians(valid_first_action=False)
    total, terms = compute_loss(model, batch, "state-mask")
    logits = model.mask_sample(batch.state, batch.action).logits.expand(len(batch), -1, -1)
    target = (~batch.zero_mask).double()
    bce = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    valid = batch.jacobian_valid[:, None, :].expand_as(bce)
    expect_mask = bce[valid].mean()
    expect_state = ((model(batch.state, batch.action) - batch.next_state) ** 2).mean()
    assert float(terms["mask"]) == pytest.approx(float(expect_mask), rel=1e-10)
    assert float(terms["state"]) == pytest.approx(float(expect_state), rel=1e-10)
    vq = float(terms.get("vq", 0.0))
    assert (name == "codebook_mask") == ("vq" in terms)
    assert float(total) == pytest.approx(float(expect_state + expect_mask) + vq, rel=1e-10)
    assert "mask_sparsity" not in terms
    # Weights scale their terms.
    w = LossWeights(mask=3.0, vq=0.0)
    total3, _ = compute_loss(model, batch, "state-mask", w)
    assert float(total3) == pytest.approx(float(expect_state + 3 * expect_mask), rel=1e-10)
    # The true zeros' weight inside the cross-entropy.
    _, terms2 = compute_loss(model, batch, "state-mask", LossWeights(mask_zeros=2.0))
    weighted = torch.where(batch.zero_mask.expand_as(bce), 2 * bce, bce)
    assert float(terms2["mask"]) == pytest.approx(float(weighted[valid].mean()), rel=1e-10)


@pytest.mark.parametrize("mode", ["state", "state-jacobian-l1-sparse-only"])
def test_unsupervised_modes_add_the_sparsity_penalty(mode: str) -> None:
    model = make("local_mask").eval()
    batch = batch_with_jacobians()
    total, terms = compute_loss(model, batch, mode)
    prob = torch.sigmoid(model.mask_sample(batch.state, batch.action).logits)
    assert float(terms["mask_sparsity"]) == pytest.approx(float(prob.mean()), rel=1e-10)
    rest = sum(float(v) for k, v in terms.items() if k not in ("total", "mask_sparsity"))
    assert float(total) == pytest.approx(rest + 1e-3 * float(prob.mean()), rel=1e-10)
    # The penalty reaches the mask parameters.
    total.backward()
    assert model.mask.net[-1].bias.grad.abs().sum() > 0


def test_column_subset_on_a_masked_model_uses_the_same_columns() -> None:
    model = make("global_mask").eval()
    batch = batch_with_jacobians()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sub, _ = compute_loss(model, batch, "state-jacobian", columns=D_S + D_A, generator=g1)
    full, _ = compute_loss(model, batch, "state-jacobian", generator=g2)
    assert float(sub) == pytest.approx(float(full), rel=1e-10)  # all columns: the same loss


def test_sample_f1_on_hand_built_patterns() -> None:
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    true = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    precision, recall, f1 = _sample_scores(pred, true)
    # 2*1/(2+1); both empty -> 1; no overlap -> 0; nothing predicted -> 0.
    torch.testing.assert_close(f1, torch.tensor([2 / 3, 1.0, 0.0, 0.0], dtype=torch.float64))
    # 1 of 2 predicted is true; none predicted -> 1; 0 of 1; none predicted -> 1.
    torch.testing.assert_close(precision, torch.tensor([0.5, 1.0, 0.0, 1.0], dtype=torch.float64))
    # 1 of 1 true found; no true zero -> 1; 0 of 1; 0 of 2.
    torch.testing.assert_close(recall, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))


# -- training and evaluation -----------------------------------------------------


@pytest.mark.parametrize("name", MASKED)
def test_mask_supervision_recovers_the_linear_systems_zero_pattern(tmp_path, name: str) -> None:
    path = write_linear(tmp_path / "linear.h5", n_episodes=40)
    cfg = TrainConfig(
        model=name, epochs=6, batch_size=64, progress=False, horizon=2, head_width=16,
        mask_width=32, codebook_size=4, weight_decay=0.0,
    )  # fmt: skip
    result = train(path, "state-mask", cfg)
    m = result.metrics
    truth = np.concatenate([A, B], 1) == 0
    assert m.mask_zero_f1 == 1.0 and m.mask_sample_f1 == 1.0
    assert m.zero_f1[1e-15] == 1.0 and m.sample_zero_f1[1e-15] == 1.0
    assert m.sample_zero_precision[1e-15] == 1.0 and m.sample_zero_recall[1e-15] == 1.0
    assert m.induced_sparsity[1e-15] == pytest.approx(truth.mean())
    assert m.distinct_masks == 1 and m.distinct_true_patterns == 1
    assert m.mse_normalised < 0.2 * m.mean_predictor_mse_normalised
    # F1 is the harmonic mean of the precision and recall reported next to it.
    p, r = m.zero_precision[1e-15], m.zero_recall[1e-15]
    assert m.zero_f1[1e-15] == pytest.approx(2 * p * r / (p + r))


def test_mlp_metrics_have_no_mask_and_f1_from_the_jacobian(linear_h5) -> None:
    cfg = TrainConfig(epochs=1, width=8, batch_size=64, progress=False, horizon=0)
    m = train(linear_h5, "state", cfg).metrics
    assert math.isnan(m.mask_zero_f1) and math.isnan(m.distinct_masks)
    assert m.zero_f1[1e-15] == 0.0  # an MLP has no exact zero in its Jacobian
    assert m.sample_zero_f1[1e-15] == 0.0


def test_local_mask_on_real_cartpole_learns_the_pattern_and_evaluates_under_shift(
    cartpole_h5, tmp_path
) -> None:
    import jacobian_wrappers as jw

    # Other data of the same env (another seed and longer episodes) for the shift metrics.
    other = tmp_path / "other.h5"
    env = jw.PlaygroundVecEnv("CartpoleBalance", 8, precision="float64", episode_length=200, seed=7)
    jw.collect(env, 800, other)
    env.close()
    cfg = TrainConfig(
        model="local_mask", epochs=4, batch_size=128, progress=False, horizon=3, weight_decay=0.0
    )
    trainer = Trainer(cartpole_h5, "state-mask", cfg)
    assert trainer.model.straight_through is False  # the mask learns from its cross-entropy
    result = trainer.fit()
    m = result.metrics
    assert m.mask_zero_f1 > 0.9 and m.sample_zero_f1[1e-15] > 0.9
    assert (
        abs(m.induced_sparsity[1e-15] - m.target_sparsity[1e-15]) < 0.1 * m.target_sparsity[1e-15]
    )
    shifted = trainer.evaluate_on(other)
    assert shifted.n_rows == 800 and len(shifted.horizon_mse_normalised) == 3
    assert shifted.mask_zero_f1 > 0.8 and math.isfinite(shifted.mse_normalised)
    # Unsupervised, the mask is trained through the prediction (straight-through).
    unsup = Trainer(cartpole_h5, "state", TrainConfig(model="local_mask", epochs=1, progress=False))
    assert unsup.model.straight_through is True


def test_checkpoints_of_every_model_round_trip_and_refuse_another_model(linear_h5, tmp_path):
    s, a = inputs(32)
    for name in MODELS:
        path = tmp_path / f"{name}.pt"
        cfg = TrainConfig(
            model=name, epochs=1, width=8, head_width=8, mask_width=8, mode_dim=3,
            batch_size=64, progress=False, horizon=0, checkpoint=str(path),
        )  # fmt: skip
        result = train(linear_h5, "state", cfg)
        loaded = load_checkpoint(path).model
        assert type(loaded) is type(result.model) and loaded.name == name
        assert getattr(loaded, "mode_dim", 3) == 3
        with torch.no_grad():
            x = s.float(), a.float()
            assert torch.equal(loaded.predict_raw(*x), result.model.predict_raw(*x))
            assert torch.equal(loaded.jacobian(*x), result.model.jacobian(*x))
        assert type(load_model(path)) is type(result.model)
    with pytest.raises(ValueError, match="holds a 'mlp' model, not a 'local_mask' model"):
        load_model(tmp_path / "mlp.pt", model="local_mask")
    with pytest.raises(ValueError, match="holds a 'codebook_mask' model, not a 'mlp' model"):
        load_model(tmp_path / "codebook_mask.pt", model="mlp")
    loaded = load_model(tmp_path / "codebook_mask.pt", model="codebook_mask")
    assert isinstance(loaded, CodebookMaskDynamics)
    # Resuming a checkpoint of one model as another names both.
    cfg = TrainConfig(
        model="local_mask", epochs=2, progress=False, horizon=0,
        checkpoint=str(tmp_path / "mlp.pt"), resume=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="model 'mlp' != 'local_mask'"):
        Trainer(linear_h5, "state", cfg)


# -- bad input -------------------------------------------------------------------


def test_bad_model_and_mode_combinations_fail_clearly(tmp_path, linear_h5) -> None:
    listed = r"models: \['mlp', 'global_mask', 'local_mask', 'codebook_mask'\]"
    with pytest.raises(ValueError, match="unknown model 'transformer'; " + listed):
        TrainConfig(model="transformer")
    with pytest.raises(ValueError, match="unknown model 'gnn'"):
        build_model("gnn", 3, 1)
    with pytest.raises(ValueError, match="model 'local_mask'.*unexpected keyword"):
        build_model("local_mask", 3, 1, layers=2)
    # Mask supervision needs a masked model ...
    with pytest.raises(ValueError, match="model 'mlp' has none; use one of"):
        train(linear_h5, "state-mask", TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="model 'mlp' has none"):
        compute_loss(DynamicsMLP(D_S, D_A, width=4).double(), batch_with_jacobians(), "state-mask")
    # ... and data with Jacobians; the error names the modes that work without them.
    nojac = write_linear(tmp_path / "nojac.h5", jacobians=False)
    cfg = TrainConfig(model="local_mask", epochs=1, progress=False, horizon=0)
    working = r"\['state', 'state-jacobian-l1-regularizer'\]"
    with pytest.raises(ValueError, match=f"needs ground-truth Jacobians.*{working}"):
        train(nojac, "state-mask", cfg)
    # Without Jacobians the masked models still train (mask from data alone).
    m = train(nojac, "state", cfg).metrics
    assert math.isfinite(m.mse_normalised) and math.isnan(m.mask_zero_f1)
    with pytest.raises(ValueError, match="mask_temperature must be > 0"):
        TrainConfig(mask_temperature=0.0)
    with pytest.raises(ValueError, match="head_width must be >= 1"):
        TrainConfig(head_width=0)
    # Shift data of another env.
    trainer = Trainer(linear_h5, "state", TrainConfig(epochs=1, progress=False, horizon=0))
    other = tmp_path / "other.h5"
    write_linear(other)
    import h5py

    with h5py.File(other, "r+") as f:
        f.attrs["env_name"] = "Other"
    with pytest.raises(ValueError, match="holds Other .*the model is for Linear"):
        trainer.evaluate_on(other)


def test_q4_script_trains_the_model_family_with_shift_data(tmp_path) -> None:
    """``--model`` grid: state-mask only for masked models, shift metrics, the MSE/F1 figure."""
    data = write_linear(tmp_path / "random.h5", n_episodes=12)
    shift = write_linear(tmp_path / "expert.h5", n_episodes=6, seed=9)
    script = Path(__file__).resolve().parents[1] / "examples" / "train_world_models.py"
    out = tmp_path / "cmp"
    cmd = [
        sys.executable, str(script), "--data", str(data), "--shift-data", str(shift),
        "--model", "mlp", "local_mask", "--losses", "state,state-mask", "--seeds", "1",
        "--epochs", "1", "--width", "16", "--head-width", "8", "--mask-width", "16",
        "--mode-dim", "3", "--batch-size", "64", "--horizon", "2", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["model"], r["loss"]) for r in runs] == [
        ("mlp", "state"), ("local_mask", "state"), ("local_mask", "state-mask"),
    ]  # fmt: skip
    assert all(float(r["shift_n_rows"]) == 6 * 25 for r in runs)
    # --mode-dim reaches the masked models (their checkpoints rebuild with it).
    masked = load_checkpoint(out / "ckpt" / "Linear_local_mask_state-mask_s1.pt").model
    assert masked.mode_dim == 3 and masked.mode_weight.shape == (D_S, 8, 3)
    assert (out / "mse_vs_f1.png").stat().st_size > 0
    assert "| local_mask | state-mask |" in (out / "results.md").read_text()
    # --merge: the tables of several earlier folders, without training.
    merged = tmp_path / "merged"
    done = subprocess.run(
        [sys.executable, str(script), "--merge", str(out), str(out), "--out", str(merged)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with open(merged / "results.csv") as f:
        agg = {(r["model"], r["loss"]): r for r in csv.DictReader(f)}
    assert set(agg) == {(r["model"], r["loss"]) for r in runs}
    for r in runs:  # every run twice: the same mean, seeds counted twice
        a = agg[(r["model"], r["loss"])]
        assert a["seeds"] == "2"
        assert float(a["mse_normalised_mean"]) == pytest.approx(float(r["mse_normalised"]))
    # A model the losses cannot train is named in an error, not dropped.
    bad = [*cmd[: cmd.index("--losses")], "--losses", "state-mask", *cmd[cmd.index("--seeds") :]]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "--model mlp has no run" in done.stderr


def test_masked_training_resumes_exactly(linear_h5, tmp_path) -> None:
    """Mask samples, codebook buffers and both optimiser groups survive a checkpoint."""
    base = {
        "model": "codebook_mask", "head_width": 8, "mask_width": 16, "codebook_size": 4,
        "batch_size": 64, "progress": False, "horizon": 0, "seed": 3,
    }  # fmt: skip
    straight = train(linear_h5, "state-mask", TrainConfig(epochs=2, **base))
    ckpt = tmp_path / "run.pt"
    train(linear_h5, "state-mask", TrainConfig(epochs=1, checkpoint=str(ckpt), **base))
    resumed = train(
        linear_h5, "state-mask", TrainConfig(epochs=2, checkpoint=str(ckpt), resume=True, **base)
    )
    assert len(resumed.model.parameter_groups(0.0, 0.0)) == 2
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
