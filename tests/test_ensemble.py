"""world_models.ensemble: the ensemble and its trainer.

The ensemble against the linear system it learns, its per-row members against
each member run alone, its disagreement and per-member held-out errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import D_A, D_S, A, B
from tests.helpers import SMALL_CONFIG as CONFIG
from tests.helpers import linear_rows as _linear_rows
from world_models import (
    DynamicsEnsemble,
    EnsembleTrainer,
)


def test_ensemble_learns_the_linear_system_and_routes_rows_to_members() -> None:
    ens = DynamicsEnsemble.build(
        "mlp", D_S, D_A, 3, learn_reward=True, seed=0, **CONFIG.model_kwargs()
    )
    trainer = EnsembleTrainer(ens, "state-jacobian", CONFIG, holdout_fraction=0.2)
    rows = _linear_rows(2000)
    first = trainer.fit(rows, epochs=1)
    for _ in range(4):
        last = trainer.fit(rows, epochs=3)
    assert last["holdout_mse"] < 0.2 * first["holdout_mse"] and last["holdout_mse"] < 0.01
    assert last["reward_mse"] < 0.05
    s = torch.randn(50, D_S)
    a = torch.rand(50, D_A) * 2 - 1
    member = torch.arange(50) % 3
    out = ens.predict_raw(s, a, member)
    for k in range(3):
        with torch.no_grad():
            alone = ens.members[k].predict_raw(s[member == k], a[member == k])
        torch.testing.assert_close(out[member == k], alone)
    # Members start from different weights, so they differ off the data.
    assert not torch.allclose(
        ens.predict_raw(s, a, member * 0), ens.predict_raw(s, a, member * 0 + 1)
    )
    truth = torch.as_tensor(s.numpy() @ A.T + a.numpy() @ B.T, dtype=torch.float32)
    assert torch.mean((out - truth) ** 2) < 0.05


def test_ensemble_bad_input() -> None:
    ens = DynamicsEnsemble.build("mlp", D_S, D_A, 2, **CONFIG.model_kwargs())
    trainer = EnsembleTrainer(ens, "state-jacobian", CONFIG)
    rows = {k: v for k, v in _linear_rows(100).items() if not k.startswith("jacobian")}
    with pytest.raises(ValueError, match="state mode"):
        trainer.fit(rows)
    with pytest.raises(ValueError, match="needs a masked model|mask"):
        EnsembleTrainer(ens, "state-mask", CONFIG)
    with pytest.raises(ValueError, match="unknown model"):
        DynamicsEnsemble.build("transformer", D_S, D_A, 2)
    with pytest.raises(ValueError, match="learned reward"):
        ens.predict_reward(torch.zeros(1, D_S), torch.zeros(1, D_A), torch.zeros(1, D_S))


def test_ensemble_disagreement_and_per_member_holdout_errors() -> None:
    ens = DynamicsEnsemble.build("mlp", D_S, D_A, 3, seed=0, **CONFIG.model_kwargs())
    trainer = EnsembleTrainer(ens, "state", CONFIG, holdout_fraction=0.2)
    out = trainer.fit(_linear_rows(500), epochs=2)
    errors = trainer.holdout_member_mse
    assert errors.shape == (3,)
    assert out["holdout_mse"] == pytest.approx(errors.mean())
    assert out["holdout_mse_min"] == pytest.approx(errors.min())
    s, a = torch.randn(40, D_S), torch.rand(40, D_A) * 2 - 1
    with torch.no_grad():  # each member alone, in the normalised units of the next state
        preds = np.stack([m.predict_raw(s, a).numpy() for m in ens.members])
    scale = ens.normaliser.std["next_state"] + ens.normaliser.eps
    for idx in ([0, 1, 2], [0, 2]):
        want = (preds[idx] / scale).std(0).max(-1)
        got = ens.disagreement(s, a, idx).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert (ens.disagreement(s, a) > 0).all()
    twins = DynamicsEnsemble([ens.members[1], ens.members[1]])  # one model twice: no spread
    twins.set_normaliser(ens.normaliser)
    np.testing.assert_array_equal(twins.disagreement(s, a).numpy(), 0.0)
    with pytest.raises(ValueError, match=r"at least two member indices in \[0, 3\), got \[1\]"):
        ens.disagreement(s, a, [1])
    with pytest.raises(ValueError, match=r"got \[0, 3\]"):
        ens.disagreement(s, a, [0, 3])
