"""World models: normaliser, model Jacobians, the five losses, data split, training, checkpoints.

Unit tests build tiny data sets from synthetic arrays; the integration tests
collect a small real CartpoleBalance set once per session.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers import D_A, D_S, A, B, random_normaliser, write_linear
from world_models import (
    LOSS_MODES,
    LOSSES,
    STUDY_LOSS_MODES,
    Batch,
    DynamicsMLP,
    InMemoryBatches,
    JacobianSample,
    LossMode,
    LossWeights,
    Normaliser,
    RunningMoments,
    TrainConfig,
    Trainer,
    TrainerCallback,
    TransitionStream,
    compute_loss,
    fit_normaliser,
    jacobian_columns,
    load_checkpoint,
    open_datasets,
    split_episodes,
    train,
)

torch.set_num_threads(1)


def central_difference(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """``d fn / d x`` of a batched ``fn: (B, n) -> (B, m)``, shape ``(B, m, n)``."""
    cols = []
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        cols.append((fn(x + e) - fn(x - e)) / (2 * h))
    return torch.stack(cols, dim=2)


# -- normaliser ------------------------------------------------------------------


def test_running_moments_match_numpy() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4))
    m = RunningMoments(4)
    for lo in range(0, 1000, 137):
        m.update(x[lo : lo + 137])
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std, x.std(0), rtol=1e-12)


def test_normalised_jacobian_matches_finite_difference_of_normalised_map() -> None:
    rng = np.random.default_rng(1)
    norm = random_normaliser(rng)
    w = rng.normal(size=(D_S, D_S + D_A))

    def f_raw(x):  # a nonlinear (s, a) -> s' map with a known Jacobian
        return np.tanh(x @ w.T)

    w[0, 1] = 0.0  # a structural zero must stay zero
    x = rng.normal(size=(5, D_S + D_A))
    jac = (1 - np.tanh(x @ w.T) ** 2)[:, :, None] * w[None]

    def g(x_n):  # the normalised map x_n -> s'_n
        s = norm.denormalise("state", x_n[:, :D_S])
        a = norm.denormalise("action", x_n[:, D_S:])
        return norm.normalise("next_state", f_raw(np.concatenate([s, a], 1)))

    x_n = np.concatenate(
        [norm.normalise("state", x[:, :D_S]), norm.normalise("action", x[:, D_S:])], 1
    )
    fd = central_difference(lambda t: torch.as_tensor(g(t.numpy())), torch.as_tensor(x_n)).numpy()
    j_n = norm.jacobian_to_normalised(jac)
    np.testing.assert_allclose(j_n, fd, rtol=1e-6, atol=1e-8)
    assert np.all(j_n[:, 0, 1] == 0)
    np.testing.assert_allclose(norm.jacobian_to_raw(j_n), jac, rtol=1e-12)
    with pytest.raises(ValueError, match="must end in shape"):
        norm.jacobian_to_normalised(np.zeros((2, 3, 3)))


def test_normaliser_state_dict_round_trip() -> None:
    norm = random_normaliser(np.random.default_rng(2))
    back = Normaliser.from_state_dict(norm.state_dict())
    for k in ("state", "action", "next_state", "delta"):
        np.testing.assert_array_equal(back.scale(k), norm.scale(k))
        np.testing.assert_array_equal(back.mean[k], norm.mean[k])


# -- model -----------------------------------------------------------------------


@pytest.mark.parametrize("predict_delta", [False, True])
@pytest.mark.parametrize("method", ["jacrev", "jacfwd", "analytic"])
def test_model_jacobian_matches_finite_difference(predict_delta: bool, method: str) -> None:
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=16, depth=2, predict_delta=predict_delta).double()
    model.set_normaliser(random_normaliser(np.random.default_rng(3)))
    model.eval()
    x = torch.randn(4, D_S + D_A, dtype=torch.float64)

    def pred(xx):
        return model.predict(xx[:, :D_S], xx[:, D_S:])

    jac = model.jacobian(x[:, :D_S], x[:, D_S:], method=method)
    torch.testing.assert_close(jac, central_difference(pred, x), rtol=1e-6, atol=1e-8)

    def pred_raw(xx):
        return model.predict_raw(xx[:, :D_S], xx[:, D_S:])

    jac_raw = model.jacobian_raw(x[:, :D_S], x[:, D_S:], method=method)
    torch.testing.assert_close(jac_raw, central_difference(pred_raw, x), rtol=1e-6, atol=1e-7)


def test_delta_model_without_normaliser_adds_identity() -> None:
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=8, predict_delta=True).double().eval()
    s, a = torch.randn(3, D_S, dtype=torch.float64), torch.randn(3, D_A, dtype=torch.float64)
    torch.testing.assert_close(model.predict(s, a), s + model(s, a))
    jac = model.jacobian(s, a)
    net = torch.func.vmap(torch.func.jacrev(lambda ss, aa: model(ss[None], aa[None])[0]))(s, a)
    torch.testing.assert_close(jac[..., :D_S], net + torch.eye(D_S, dtype=torch.float64))


@pytest.mark.parametrize("predict_delta", [False, True])
def test_columns_equal_full_jacobian_with_same_dropout(predict_delta: bool) -> None:
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=32, dropout=0.3, predict_delta=predict_delta).double()
    model.set_normaliser(random_normaliser(np.random.default_rng(4)))
    s, a = torch.randn(6, D_S, dtype=torch.float64), torch.randn(6, D_A, dtype=torch.float64)
    index = torch.stack([torch.randperm(D_S + D_A)[:2] for _ in range(6)])
    torch.manual_seed(7)  # same dropout masks for both calls
    out_full, full = model.forward_with_jacobian(s, a)
    torch.manual_seed(7)
    out_cols, cols = model.forward_with_columns(s, a, index)
    torch.testing.assert_close(out_cols, out_full)
    torch.testing.assert_close(cols, full.gather(2, index[:, None, :].expand(-1, D_S, -1)))
    model.eval()  # forward-mode JVPs (torch.func) give the same columns
    gen = torch.Generator().manual_seed(0)
    _, jvp_cols, idx = jacobian_columns(model, s, a, 3, gen, method="jvp")
    full = model.jacobian(s, a)
    torch.testing.assert_close(jvp_cols, full.gather(2, idx[:, None, :].expand(-1, D_S, -1)))


def test_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="activation must be one of"):
        DynamicsMLP(3, 1, activation="sigmoid")
    with pytest.raises(ValueError, match="dropout must be in"):
        DynamicsMLP(3, 1, dropout=1.0)
    with pytest.raises(ValueError, match="expected state"):
        DynamicsMLP(3, 1)(torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="method must be one of"):
        DynamicsMLP(3, 1).jacobian(torch.zeros(2, 3), torch.zeros(2, 1), method="fd")


# -- losses ----------------------------------------------------------------------


def tiny_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n, d = 4, D_S + D_A
    jac = torch.randn(n, D_S, d, generator=g, dtype=torch.float64)
    mask = torch.rand(n, D_S, d, generator=g) < 0.4
    jac[mask] = 0.0
    return Batch(
        state=torch.randn(n, D_S, generator=g, dtype=torch.float64),
        action=torch.randn(n, D_A, generator=g, dtype=torch.float64),
        next_state=torch.randn(n, D_S, generator=g, dtype=torch.float64),
        delta=torch.randn(n, D_S, generator=g, dtype=torch.float64),
        jacobian=jac,
        zero_mask=mask,
    )


def hand_loss(
    mode: str, pred: np.ndarray, target: np.ndarray, jh, j, mask, w: LossWeights, valid=None
):
    """Element by element, as written in docs/method.md; ``valid`` elements only."""
    state = sum((p - t) ** 2 for p, t in zip(pred.ravel(), target.ravel(), strict=True)) / pred.size
    terms = {"state": state}
    valid = np.ones(j.shape, bool) if valid is None else valid
    if mode == "state-jacobian-l1-regularizer":  # no ground truth: every element
        valid = np.ones(j.shape, bool)
    flat = [
        (a, b, m)
        for a, b, m, v in zip(jh.ravel(), j.ravel(), mask.ravel(), valid.ravel(), strict=True)
        if v
    ]
    if mode == "state-jacobian":
        terms["jacobian"] = sum((a - b) ** 2 for a, b, _ in flat) / len(flat)
    elif mode == "state-jacobian-l1":
        terms["jacobian_l1"] = sum(abs(a - b) for a, b, _ in flat) / len(flat)
    elif mode == "state-jacobian-l1-regularizer":
        terms["regularizer"] = sum(abs(a) for a, _, _ in flat) / len(flat)
    elif mode == "state-jacobian-l1-sparse-only":
        zeros = [abs(a - b) for a, b, m in flat if m]
        terms["sparse"] = sum(zeros) / len(zeros)
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return total, terms


@pytest.mark.parametrize("mode", STUDY_LOSS_MODES)
@pytest.mark.parametrize("predict_delta", [False, True])
def test_loss_modes_match_hand_computation(mode: str, predict_delta: bool) -> None:
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=5, depth=1, dropout=0.0, predict_delta=predict_delta)
    model.double().set_normaliser(random_normaliser(np.random.default_rng(5)))
    batch = tiny_batch()
    weights = LossWeights(state=0.7, jacobian=1.3, jacobian_l1=2.1, regularizer=0.4, sparse=3.0)
    total, terms = compute_loss(model, batch, mode, weights)
    with torch.no_grad():
        pred = model(batch.state, batch.action).numpy()
        jh = model.jacobian(batch.state, batch.action, method="jacrev").numpy()
    target = (batch.delta if predict_delta else batch.next_state).numpy()
    want_total, want_terms = hand_loss(
        mode, pred, target, jh, batch.jacobian.numpy(), batch.zero_mask.numpy(), weights
    )
    assert total.item() == pytest.approx(want_total, rel=1e-10)
    assert set(terms) == {*want_terms, "total"}
    for k, v in want_terms.items():
        assert float(terms[k]) == pytest.approx(v, rel=1e-10)


@pytest.mark.parametrize("mode", STUDY_LOSS_MODES[1:])
def test_loss_modes_leave_non_smooth_columns_out(mode: str) -> None:
    """Columns flagged non-smooth in the data set do not enter the Jacobian terms."""
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=5, depth=1, dropout=0.0).double()
    batch = tiny_batch(3)
    batch.jacobian_valid = torch.ones(len(batch), D_S + D_A, dtype=torch.bool)
    batch.jacobian_valid[0, 4] = batch.jacobian_valid[2, 1] = False
    batch.zero_mask = batch.zero_mask & batch.jacobian_valid[:, None, :]  # as the stream does
    total, terms = compute_loss(model, batch, mode)
    with torch.no_grad():
        pred = model(batch.state, batch.action).numpy()
        jh = model.jacobian(batch.state, batch.action, method="jacrev").numpy()
    valid = np.broadcast_to(batch.jacobian_valid.numpy()[:, None, :], jh.shape)
    want_total, want_terms = hand_loss(
        mode,
        pred,
        batch.next_state.numpy(),
        jh,
        batch.jacobian.numpy(),
        batch.zero_mask.numpy(),
        LossWeights(),
        valid,
    )
    assert total.item() == pytest.approx(want_total, rel=1e-10)
    for k, v in want_terms.items():
        assert float(terms[k]) == pytest.approx(v, rel=1e-10)
    # The flagged elements get no gradient from the ground-truth terms.
    if mode != "state-jacobian-l1-regularizer":
        jac = torch.randn(len(batch), D_S, D_S + D_A, dtype=torch.float64, requires_grad=True)
        sample = JacobianSample(
            jac,
            batch.jacobian,
            batch.zero_mask,
            batch.zero_mask.sum(),
            valid=batch.jacobian_valid.unsqueeze(1),
        )
        out, _ = LOSSES[mode](torch.zeros(len(batch), D_S), batch.next_state, sample, LossWeights())
        (grad,) = torch.autograd.grad(out, jac)
        assert torch.all(grad[0, :, 4] == 0) and torch.all(grad[2, :, 1] == 0)


@pytest.mark.parametrize("mode", STUDY_LOSS_MODES[1:])
def test_column_subset_loss_is_unbiased(mode: str) -> None:
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=8, depth=1, dropout=0.0).double()
    batch = tiny_batch(1)
    with torch.no_grad():
        _, full = compute_loss(model, batch, mode)
        gen = torch.Generator().manual_seed(0)
        draws = [compute_loss(model, batch, mode, columns=2, generator=gen)[1] for _ in range(3000)]
    for key in full:
        if key == "state":
            continue
        mc = np.mean([float(d[key]) for d in draws])
        assert mc == pytest.approx(float(full[key]), rel=0.03), key


def test_sparse_only_loss_touches_only_masked_elements() -> None:
    batch = tiny_batch(2)
    pred = torch.randn(batch.jacobian.shape, dtype=torch.float64, requires_grad=True)
    out = torch.zeros(len(batch), D_S, dtype=torch.float64)
    sample = JacobianSample(pred, batch.jacobian, batch.zero_mask, batch.zero_mask.sum())
    fn = LOSSES["state-jacobian-l1-sparse-only"]
    total, _ = fn(out, batch.next_state, sample, LossWeights())
    (grad,) = torch.autograd.grad(total, pred)
    assert torch.all(grad[~batch.zero_mask] == 0)
    assert torch.all(grad[batch.zero_mask] != 0)
    # Through the model: the gradient with respect to the predicted Jacobian is masked too.
    torch.manual_seed(0)
    model = DynamicsMLP(D_S, D_A, width=8, depth=1, dropout=0.0).double()
    captured = {}
    original = model.forward_with_mask

    def spy(s, a):
        o, j, m = original(s, a)
        j.retain_grad()
        captured["jac"] = j
        return o, j, m

    model.forward_with_mask = spy
    model.eval()
    batch.next_state = model.predict(batch.state, batch.action).detach()  # state term zero
    total, _ = compute_loss(model, batch, "state-jacobian-l1-sparse-only")
    total.backward()
    g = captured["jac"].grad
    assert torch.all(g[~batch.zero_mask] == 0) and torch.any(g[batch.zero_mask] != 0)


def test_loss_mode_carries_what_each_mode_needs() -> None:
    """The resolved mode's properties, against the table of docs/world-models.md."""
    table = {  # mode: (model Jacobian, ground-truth Jacobian, mask supervision)
        "state": (False, False, False),
        "state-jacobian": (True, True, False),
        "state-jacobian-l1": (True, True, False),
        "state-jacobian-l1-regularizer": (True, False, False),
        "state-jacobian-l1-sparse-only": (True, True, False),
        "state-mask": (False, True, True),
    }
    assert set(table) == set(LOSS_MODES)
    for name, needs in table.items():
        mode = LossMode.of(name)
        got = (mode.needs_model_jacobian, mode.needs_ground_truth_jacobian, mode.supervises_mask)
        assert got == needs and LossMode.of(mode) is mode and str(mode) == name


def test_loss_errors() -> None:
    model = DynamicsMLP(D_S, D_A, width=4).double()
    batch = tiny_batch()
    with pytest.raises(ValueError, match="unknown loss mode 'mse'"):
        compute_loss(model, batch, "mse")
    with pytest.raises(ValueError, match=r"unknown loss mode 'mse'; accepted: \['state'"):
        LossMode("mse")
    batch.jacobian = batch.zero_mask = None
    with pytest.raises(ValueError, match="needs ground-truth Jacobians"):
        compute_loss(model, batch, "state-jacobian")
    compute_loss(model, batch, "state-jacobian-l1-regularizer")  # needs none
    with pytest.raises(ValueError, match="k must be in"):
        jacobian_columns(model, batch.state, batch.action, 6)


# -- data ------------------------------------------------------------------------


def test_episode_split_has_no_leakage_and_is_deterministic(tmp_path) -> None:
    paths = [
        write_linear(tmp_path / "a.h5", n_episodes=17, seed=0),
        write_linear(tmp_path / "b.h5", n_episodes=13, seed=1),  # same ids in another file
    ]
    readers = open_datasets(paths)
    split = split_episodes(readers, 0.1, seed=3)
    assert sum(len(t) for t in split.test) == 3 and split.n_episodes == 30
    again = split_episodes(readers, 0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(split.test, again.test, strict=True))
    other = split_episodes(readers, 0.1, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(split.test, other.test, strict=True))

    seen = {}
    for part in ("train", "test"):
        stream = TransitionStream(readers, split, part, batch_size=16, buffer_chunks=2, seed=0)
        stream_rows = [b.state.numpy() for b in stream]
        seen[part] = np.concatenate(stream_rows)
    # Every row once, on the side of its episode.
    rows = {}
    for f, r in enumerate(readers):
        ep, s = r.read("episode"), r.read("state")
        test = split.is_test(f, ep)
        rows["test"] = np.concatenate([rows.get("test", np.empty((0, D_S))), s[test]])
        rows["train"] = np.concatenate([rows.get("train", np.empty((0, D_S))), s[~test]])
    for part in ("train", "test"):
        got = np.sort(seen[part].astype(np.float32).view([("", np.float32)] * D_S), axis=0)
        want = np.sort(rows[part].astype(np.float32).view([("", np.float32)] * D_S), axis=0)
        np.testing.assert_array_equal(got, want)


def test_stream_shuffles_by_epoch_and_normalises(linear_h5) -> None:
    readers = open_datasets(linear_h5)
    split = split_episodes(readers, 0.2, seed=0)
    norm = fit_normaliser(readers, split)
    stream = TransitionStream(readers, split, "train", norm, batch_size=32, buffer_chunks=2)
    first = next(iter(stream)).state
    assert torch.equal(first, next(iter(stream)).state)  # same epoch, same order
    stream.set_epoch(1)
    assert not torch.equal(first, next(iter(stream)).state)
    all_train = torch.cat([b.next_state for b in stream])
    torch.testing.assert_close(all_train.mean(0), torch.zeros(D_S), atol=1e-5, rtol=0)
    batch = next(iter(stream))
    j_n = norm.jacobian_to_normalised(np.concatenate([A, B], 1))
    torch.testing.assert_close(batch.jacobian[0].double(), torch.as_tensor(j_n), rtol=1e-6, atol=0)
    want_mask = torch.as_tensor(np.abs(np.concatenate([A, B], 1)) < 1e-15)
    assert torch.equal(batch.zero_mask[0], want_mask)


def test_stream_marks_non_smooth_columns(tmp_path) -> None:
    path = write_linear(tmp_path / "flagged.h5", n_episodes=4, ep_len=10, flag_every=3)
    readers = open_datasets(path)
    masked = next(iter(TransitionStream(readers, None, "all", batch_size=40, shuffle=False)))
    kept = next(
        iter(TransitionStream(readers, None, "all", batch_size=40, shuffle=False, nonsmooth="keep"))
    )
    flagged = torch.arange(40) % 10 % 3 == 0  # step t of each 10-step episode
    assert torch.equal(masked.jacobian_valid[:, D_S], ~flagged)
    assert masked.jacobian_valid[:, [0, 1, 2, 4]].all()
    # B[2, 0] == 0: a zero of the first action column, left out where flagged.
    assert torch.equal(masked.zero_mask[:, 2, D_S], ~flagged)
    assert kept.jacobian_valid is None and kept.zero_mask[:, 2, D_S].all()
    assert torch.equal(masked.jacobian, kept.jacobian)
    with pytest.raises(ValueError, match="nonsmooth must be one of"):
        TransitionStream(readers, None, "all", nonsmooth="drop")


def test_in_memory_batches_hold_the_stream_rows_and_reshuffle(linear_h5) -> None:
    readers = open_datasets(linear_h5)
    split = split_episodes(readers, 0.2, seed=0)
    norm = fit_normaliser(readers, split)
    stream = TransitionStream(readers, split, "train", norm, batch_size=32, buffer_chunks=2)
    held = InMemoryBatches(stream)
    streamed = {f: torch.cat([getattr(b, f) for b in stream]) for f in ("state", "jacobian")}
    first = [b.state for b in held]
    assert len(held) == len(streamed["state"]) and all(len(b) <= 32 for b in first)
    # The same rows (as a set) as one pass of the stream, with their Jacobians.
    for f in ("state", "jacobian"):
        ours = torch.cat([getattr(b, f) for b in held]).flatten(1)
        want = streamed[f].flatten(1)
        assert torch.equal(ours[torch.argsort(ours[:, 0])], want[torch.argsort(want[:, 0])])
    assert all(torch.equal(a, b.state) for a, b in zip(first, held, strict=True))  # same epoch
    held.set_epoch(1)
    assert not torch.equal(first[0], next(iter(held)).state)
    assert InMemoryBatches.nbytes(stream) == len(held) * (
        (3 * D_S + D_A) * 4 + 5 * D_S * (D_S + D_A) + (D_S + D_A)  # + the validity mask
    )
    assert sum(t.nbytes for t in vars(held.data).values() if t is not None) == (
        InMemoryBatches.nbytes(stream)
    )


@pytest.mark.parametrize("in_memory", [True, False])
def test_training_streamed_in_memory_and_mixed_precision(linear_h5, in_memory: bool) -> None:
    cfg = TrainConfig(
        epochs=4,
        width=32,
        batch_size=64,
        progress=False,
        horizon=2,
        in_memory=in_memory,
        autocast=in_memory,  # bfloat16 autocast on one of the two
    )
    result = train(linear_h5, "state-jacobian", cfg)
    m = result.metrics
    assert m.mse_normalised < 0.5 * m.mean_predictor_mse_normalised
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_training_without_jacobians_fails_clearly(tmp_path) -> None:
    path = write_linear(tmp_path / "nojac.h5", jacobians=False)
    cfg = TrainConfig(epochs=1, width=8, batch_size=64, progress=False, horizon=2)
    with pytest.raises(ValueError, match="needs ground-truth Jacobians.*jacobians=False"):
        train(path, "state-jacobian-l1-sparse-only", cfg)
    result = train(path, "state-jacobian-l1-regularizer", cfg)
    assert math.isnan(result.metrics.jacobian_mse_normalised)
    assert math.isfinite(result.metrics.mse_normalised)
    with pytest.raises(ValueError, match="unknown loss mode"):
        train(path, "jacobian", cfg)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="test_fraction must be in"):
        TrainConfig(test_fraction=0.0)
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"widht": 3})
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_resume_continues_exactly(linear_h5, tmp_path) -> None:
    base = {"width": 16, "batch_size": 64, "progress": False, "horizon": 3, "seed": 2}
    straight = train(linear_h5, "state-jacobian", TrainConfig(epochs=2, **base))
    ckpt = tmp_path / "run.pt"
    train(linear_h5, "state-jacobian", TrainConfig(epochs=1, checkpoint=str(ckpt), **base))
    resumed = train(
        linear_h5,
        "state-jacobian",
        TrainConfig(epochs=2, checkpoint=str(ckpt), resume=True, **base),
    )
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    with pytest.raises(ValueError, match="cannot resume.*loss mode"):
        train(linear_h5, "state", TrainConfig(epochs=3, checkpoint=str(ckpt), resume=True, **base))


def test_trainer_fits_incrementally_with_hooks(linear_h5, tmp_path) -> None:
    """fit(1) then fit(3) gives the weights of one fit(3); hooks see every batch and epoch."""
    base = {"width": 16, "batch_size": 64, "progress": False, "horizon": 0, "seed": 3}
    straight = Trainer(linear_h5, "state-jacobian", TrainConfig(epochs=3, **base)).fit()

    class Count(TrainerCallback):
        def __init__(self) -> None:
            self.rows, self.epochs, self.starts, self.ends = 0, [], 0, 0

        def on_fit_start(self, trainer) -> None:
            self.starts += 1

        def on_batch_end(self, trainer, terms, rows) -> None:
            assert set(terms) == {"state", "jacobian", "total"}
            self.rows += rows

        def on_epoch_end(self, trainer, entry) -> None:
            self.epochs.append(trainer.epoch)

        def on_fit_end(self, trainer, result) -> None:
            self.ends += 1

    count = Count()
    trainer = Trainer(linear_h5, "state-jacobian", TrainConfig(epochs=3, **base), [count])
    trainer.fit(1)
    assert trainer.epoch == 1 and len(trainer.history) == 1
    result = trainer.fit(3)
    for (k, a), b in zip(
        straight.model.state_dict().items(), result.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    train_rows = sum(len(b) for b in trainer.batches)
    assert count.rows == 3 * train_rows and count.epochs == [1, 2, 3]
    assert (count.starts, count.ends) == (2, 2)
    # A hook that returns False stops the fit after that epoch; save/load round-trips.
    stopper = type("Stop", (TrainerCallback,), {"on_epoch_end": lambda self, t, e: False})()
    early = Trainer(linear_h5, "state", TrainConfig(epochs=5, **base), [stopper])
    assert early.fit().history[-1]["epoch"] == 1
    path = early.save(tmp_path / "early.pt")
    again = Trainer(linear_h5, "state", TrainConfig(epochs=5, **base))
    again.load(path)
    assert again.epoch == 1
    assert torch.equal(again.model.head.weight, early.model.head.weight)
    with pytest.raises(ValueError, match="cannot resume.*loss mode"):
        Trainer(linear_h5, "state-jacobian", TrainConfig(epochs=5, **base)).load(path)


def test_rollout_errors_on_linear_system(linear_h5) -> None:
    result = train(
        linear_h5,
        "state",
        TrainConfig(epochs=2, width=16, batch_size=64, progress=False, horizon=5),
    )
    m = result.metrics
    assert len(m.horizon_mse_normalised) == 5 and m.n_rollouts > 0
    assert all(math.isfinite(v) for v in m.horizon_mse_raw)
    assert m.target_sparsity[1e-15] == pytest.approx(np.mean(np.concatenate([A, B], 1) == 0))


# -- real data -------------------------------------------------------------------


@pytest.fixture(scope="session")
def cartpole_run(cartpole_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        epochs=3,
        width=128,
        batch_size=256,
        progress=False,
        horizon=5,
        log_dir=str(out / "tb"),
        checkpoint=str(out / "model.pt"),
    )
    return train(cartpole_h5, "state-jacobian-l1-sparse-only", cfg), out


def test_training_on_real_data_beats_mean_predictor(cartpole_run) -> None:
    result, out = cartpole_run
    m = result.metrics
    assert m.n_rows > 0 and m.mse_normalised < 0.5 * m.mean_predictor_mse_normalised
    assert m.target_sparsity[1e-15] > 0  # CartpoleBalance has structural zeros
    assert set(m.induced_sparsity) == set(m.target_sparsity)
    assert len(result.history) == 3 and "test/mse_normalised" in result.history[0]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/state", "train/sparse", "train/total", "test/mse_normalised"):
        assert tag in tags
    assert "test/induced_sparsity@1e-15" in tags
    assert len(acc.Scalars("train/sparse")) == 3


def test_checkpoint_round_trip_gives_identical_predictions(cartpole_run) -> None:
    result, out = cartpole_run
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.loss_mode == "state-jacobian-l1-sparse-only" and ckpt.epoch == 3
    assert ckpt.config == result.config
    x = torch.randn(64, 4), torch.randn(64, 1)
    with torch.no_grad():
        assert torch.equal(ckpt.model.predict_raw(*x), result.model.predict_raw(*x))
        assert torch.equal(ckpt.model.jacobian(*x), result.model.jacobian(*x))
    for k in ("state", "action", "next_state", "delta"):
        np.testing.assert_array_equal(ckpt.normaliser.scale(k), result.normaliser.scale(k))


def test_q4_script_on_local_ray_and_rerun_skips_finished_runs(linear_h5, tmp_path) -> None:
    """The Q4 example end to end: Ray Tune trials on 2 CPUs, tables that match the per-run rows."""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "train_world_models.py"
    out = tmp_path / "q4"
    cmd = [
        sys.executable, str(script), "--data", str(linear_h5), "--losses", "state,state-jacobian",
        "--seeds", "1-2", "--epochs", "2", "--width", "16", "--batch-size", "64",
        "--horizon", "2", "--out", str(out), "--ray", "--ray-cpus", "2", "--jacobian-columns", "1",
        "--eval-every", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["loss"], r["seed"]) for r in runs] == [
        ("state", "1"), ("state", "2"),
        ("state-jacobian [k=1 cols]", "1"), ("state-jacobian [k=1 cols]", "2"),
    ]  # fmt: skip
    with open(out / "results.csv") as f:
        results = {r["loss"]: r for r in csv.DictReader(f)}
    for loss, agg in results.items():
        mses = [float(r["mse_normalised"]) for r in runs if r["loss"] == loss]
        assert float(agg["mse_normalised_mean"]) == pytest.approx(np.mean(mses))
        assert float(agg["mse_normalised_std"]) == pytest.approx(np.std(mses))
    for name in ("results.md", "fig8_test_mse.png", "fig8_induced_sparsity.png"):
        assert (out / name).stat().st_size > 0
    timing = json.loads((out / "timing.json").read_text())
    assert timing["engine"] == "ray" and timing["finished"] == 4
    # A rerun reads the finished runs back (same rows, same seconds) instead of training.
    before = (out / "runs.csv").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "runs.csv").read_text() == before
