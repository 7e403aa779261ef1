"""How well can a mask network learn a data set's zero pattern from ``(s, a)``?

Trains the mask network of ``local_mask`` (:class:`world_models.masks.LocalMask`)
alone on the zero pattern of ``[J_s | J_a]`` at the data set's threshold,
by the binary cross-entropy that ``state-mask`` supervises it with
(non-smooth columns left out of the loss and the scores, as there), on the
train split of whole episodes (:func:`world_models.split_episodes`, 10 %
test). Every few epochs it prints the pooled zero-pattern F1 (zeros are the
positives), precision and recall on train rows and on test rows: a test F1
far below 1 with train F1 no higher says the pattern is not a function the
network resolves from its inputs, not that it overfits or lacks capacity.
At the end: the elements whose true zeros it misses most.

With ``--contact-distances`` the network also gets the contact features a
masked model gets with ``contact_features=True``
(:class:`world_models.contact_features.FloorDistances`): per geom that can
touch the floor, its signed distance to the floor at ``s`` and after one
control step of ``s``'s velocity, squashed by ``tanh(d / 0.1 m)``. They are
functions of the state alone, so the masked model's Jacobian stays exactly
zero off its mask.

    python benchmarks/mask_learnability.py --data data/WalkerRun_random.h5
        [--epochs 20] [--width 128] [--contact-distances] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from dynamic_sparsity.analysis.storage import TransitionReader
from world_models import split_episodes
from world_models.contact_features import FloorDistances, contact_spec
from world_models.evaluate import _f1, _ratio
from world_models.masks import LocalMask


def scores(logits: torch.Tensor, zero: np.ndarray, valid: np.ndarray) -> tuple[float, float, float]:
    """Pooled F1, precision and recall of the predicted zeros (``logit < 0``), as ``evaluate``.

    Only the ``valid`` elements count (columns taken at a non-smooth point are left out).
    """
    predicted = (logits < 0).numpy() & valid
    zero = zero & valid
    n_pred, n_true, hit = predicted.sum(), zero.sum(), (predicted & zero).sum()
    return _f1(n_pred, n_true, hit), _ratio(hit, n_pred), _ratio(hit, n_true)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an HDF5 data set with Jacobians")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=128, help="mask network width")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--report-every", type=int, default=5, help="epochs between scores")
    parser.add_argument("--contact-distances", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    with TransitionReader(args.data) as reader:
        if not reader.meta.jacobians:
            raise SystemExit(f"{args.data} holds no Jacobians")
        cols = ["state", "action", "jacobian_state", "jacobian_action", "episode"]
        cols += ["jacobian_nonsmooth"] if "jacobian_nonsmooth" in reader.columns else []
        rows = {k: reader.read(k) for k in cols}
        threshold, env_name = reader.meta.threshold, reader.meta.env_name
        test = split_episodes([reader], 0.1, seed=args.seed).is_test(0, rows["episode"])
    jac = np.concatenate([rows["jacobian_state"], rows["jacobian_action"]], axis=2)
    zero = np.abs(jac) < threshold
    # As state-mask: columns taken at a non-smooth point (an action on its bound) are left out.
    smooth = ~rows.get("jacobian_nonsmooth", np.zeros((len(jac), jac.shape[2]), bool))
    valid = np.repeat(smooth[:, None, :], jac.shape[1], axis=1)
    x = np.concatenate([rows["state"], rows["action"]], axis=1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)  # as the model's normaliser
    d_s, n = zero.shape[1:]
    n_features = 0
    if args.contact_distances:
        with torch.no_grad():
            features = FloorDistances(contact_spec(env_name))(torch.as_tensor(rows["state"]))
        x, n_features = np.concatenate([x, features.numpy()], axis=1), features.shape[1]
    net = LocalMask(d_s, n, args.width, n_features=n_features).net
    inputs = torch.as_tensor(x, dtype=torch.float32)
    target = torch.as_tensor(~zero, dtype=torch.float32)
    weight = torch.as_tensor(valid, dtype=torch.float32)
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    probe = rng.choice(train_rows, min(len(test_rows), len(train_rows)), replace=False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)

    def logits(index: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return net(inputs[index]).view(-1, d_s, n)

    inputs_note = f"{x.shape[1]} inputs" + (" (contact features)" if n_features else "")
    print(f"{env_name}: {len(train_rows)} train / {len(test_rows)} test rows, {inputs_note}")
    print(f"{'epoch':>5s} {'train F1':>9s} {'test F1':>8s} {'test P':>7s} {'test R':>7s}")
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(train_rows)
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            out = net(inputs[batch]).view(-1, d_s, n)
            loss = F.binary_cross_entropy_with_logits(out, target[batch], weight[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % args.report_every == 0 or epoch == args.epochs:
            f1_train = scores(logits(probe), zero[probe], valid[probe])[0]
            f1, p, r = scores(logits(test_rows), zero[test_rows], valid[test_rows])
            print(f"{epoch:5d} {f1_train:9.3f} {f1:8.3f} {p:7.3f} {r:7.3f}")
    true = zero[test_rows] & valid[test_rows]
    missed = ((logits(test_rows) >= 0).numpy() & true).mean(0)
    share = true.mean(0)
    print("most missed true zeros on test rows (output, input: share of rows zero, missed):")
    for k in np.argsort(-missed.ravel())[:8]:
        j, i = divmod(int(k), n)
        print(f"  out {j:2d} in {i:2d}: {share[j, i]:.3f} {missed[j, i]:.3f}")


if __name__ == "__main__":
    main()
