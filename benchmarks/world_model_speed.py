"""Training samples/s of the world-model losses, as ratios to the ``state`` loss.

CheetahRun-sized synthetic batches (``d_s = 18``, ``d_a = 6``), the study's
2x512 ELU MLP with dropout 0.1, batch 512, Adam; one full training step
(loss, backward, optimizer step) per call. Variants:

* the five loss modes with the whole Jacobian (chain rule through the MLP,
  :meth:`DynamicsMLP.forward_with_jacobian`, as training uses it);
* ``state-jacobian`` with a plain ``vmap(jacrev)`` Jacobian (the reference
  the targets were set against);
* ``state-jacobian`` supervising ``k`` random Jacobian columns per sample by
  forward mode (analytic and ``torch.func.jvp``).

With ``--models``, the masked models (:mod:`world_models.masked`; per-output
heads of ``--head-width`` units) train ``state``, the sparse-only Jacobian
loss and mask supervision (``state-mask``) in the same rounds
(``local_mask:state-mask``, ...), all as ratios to the MLP's ``state``.
With ``--contact-env``, ``local_mask`` and ``codebook_mask`` also train with
that env's contact features in their mask network (``local_mask+contact``;
the env's ``nq + nv`` must fit ``--d-s``; the synthetic states are read as
raw ``qpos, qvel``).

All variants are timed in alternating rounds after a warm-up, and the median
of the rounds is reported, so the ratios see the same machine load.
Targets: every exact Jacobian mode <= 15x ``state``, column subset <= 4x;
a masked model's training step <= 3x the MLP's ``state``.

With ``--autocast``, the same variants also run under bfloat16 autocast
(``TrainConfig(autocast=True)``; ``+bf16`` in the table), in the same rounds,
and each gets its speed-up over its float32 twin.

    python benchmarks/world_model_speed.py [--rounds 5] [--seconds 1.5] [--threads N]
        [--autocast] [--variants state state-jacobian state-jacobian@k1 ...]
        [--models global_mask local_mask codebook_mask] [--head-width 64] [--mode-dim 0]
        [--contact-env CheetahRun]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from world_models import (
    MASKED_MODELS,
    STATE_MASKED_MODELS,
    STUDY_LOSS_MODES,
    Batch,
    DynamicsMLP,
    DynamicsModel,
    build_model,
    compute_loss,
    contact_spec,
    supervises_mask,
)

#: Loss modes timed for each masked model.
MASKED_VARIANTS = ("state", "state-jacobian-l1-sparse-only", "state-mask")


def make_batch(n: int, d_s: int, d_a: int, seed: int = 0) -> Batch:
    """Random normalised transitions with Jacobians that are 40% zeros."""
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, d_s, d_s + d_a, generator=g)
    mask = torch.rand(n, d_s, d_s + d_a, generator=g) < 0.4
    jac[mask] = 0
    return Batch(
        state=torch.randn(n, d_s, generator=g),
        action=torch.randn(n, d_a, generator=g),
        next_state=torch.randn(n, d_s, generator=g),
        delta=torch.randn(n, d_s, generator=g),
        jacobian=jac,
        zero_mask=mask,
    )


def make_step(variant: str, model: DynamicsModel, batch: Batch) -> Callable[[], None]:
    """One training step of ``variant``: a loss mode, ``...@jacrev`` or ``...@k<n>``.

    A ``+bf16`` suffix runs the loss under bfloat16 autocast; a ``model:``
    prefix names the (masked) model, which ``model`` must be.
    """
    opt = torch.optim.Adam(model.parameter_groups(1e-3, 0.0), lr=2e-3)
    variant = variant.partition(":")[2] or variant
    variant, bf16 = variant.removesuffix("+bf16"), variant.endswith("+bf16")
    mode, _, how = variant.partition("@")

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = _loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.after_step()

    def _loss() -> torch.Tensor:
        if how == "jacrev":
            out = model(batch.state, batch.action)
            jac = model.jacobian(batch.state, batch.action, method="jacrev")
            loss = ((out - batch.next_state) ** 2).mean() + ((jac - batch.jacobian) ** 2).mean()
        elif how.startswith("k"):
            k, _, method = how[1:].partition("-")
            loss, _ = compute_loss(
                model, batch, mode, columns=int(k), column_method=method or "analytic"
            )
        else:
            loss, _ = compute_loss(model, batch, mode)
        return loss

    return step


def interleaved_rates(
    steps: dict[str, Callable[[], None]], batch_size: int, seconds: float, rounds: int
) -> dict[str, list[float]]:
    """Samples/s of every step function, per round, the variants alternating."""
    for fn in steps.values():  # warm-up
        fn()
        fn()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
                fn()
                calls += 1
            rates[name].append(calls * batch_size / elapsed)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-s", type=int, default=18)
    parser.add_argument("--d-a", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per variant and round")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--columns", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--variants", nargs="+", default=None, help="default: all")
    parser.add_argument("--autocast", action="store_true", help="also time bfloat16 autocast")
    parser.add_argument(
        "--models", nargs="+", default=[], choices=MASKED_MODELS, help="also time these models"
    )
    parser.add_argument("--head-width", type=int, default=64, help="units per head (masked)")
    parser.add_argument(
        "--mode-dim", type=int, default=0, help="mode code units of the masked heads"
    )
    parser.add_argument(
        "--contact-env",
        default=None,
        help="also time the masked models with this env's contact features (+contact)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = make_batch(args.batch_size, args.d_s, args.d_a)
    variants = [*STUDY_LOSS_MODES, "state-jacobian@jacrev"]
    variants += [f"state-jacobian@k{k}" for k in args.columns]
    variants += [f"state-jacobian-l1-sparse-only@k{args.columns[-1]}"]
    variants += [f"state-jacobian@k{args.columns[0]}-jvp"]
    if args.variants:
        variants = list(dict.fromkeys(["state", *args.variants]))
    masked = [*args.models]
    if args.contact_env:
        spec = contact_spec(args.contact_env)
        masked += [f"{m}+contact" for m in args.models if m in STATE_MASKED_MODELS]
    variants += [f"{m}:{mode}" for m in masked for mode in MASKED_VARIANTS]
    if args.autocast:
        variants = [x for v in variants for x in (v, f"{v}+bf16")]
    steps = {}
    for v in variants:
        name, _, _ = v.rpartition(":")
        if name:
            model = build_model(
                name.removesuffix("+contact"),
                args.d_s,
                args.d_a,
                width=args.head_width,
                depth=args.depth,
                mode_dim=args.mode_dim,
                contact=spec if name.endswith("+contact") else None,
            ).train()
            mode = v.partition(":")[2].removesuffix("+bf16")
            model.straight_through = not supervises_mask(mode)  # as the Trainer sets it
        else:
            model = DynamicsMLP(args.d_s, args.d_a, width=args.width, depth=args.depth).train()
        steps[v] = make_step(v, model, batch)
    heads = f", masked heads {args.depth}x{args.head_width}" if args.models else ""
    heads += f", mode code {args.mode_dim}" if args.models and args.mode_dim else ""
    print(
        f"d_s={args.d_s} d_a={args.d_a} MLP {args.depth}x{args.width}{heads} "
        f"batch {args.batch_size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"median of {args.rounds} alternating rounds of {args.seconds} s"
    )
    rates = interleaved_rates(steps, args.batch_size, args.seconds, args.rounds)
    base = statistics.median(rates["state"])
    print(f"{'variant':52s} {'samples/s':>10s} {'cost vs state':>14s} {'bf16 speed-up':>14s}")
    for name, r in rates.items():
        med = statistics.median(r)
        gain = ""
        if name.endswith("+bf16"):
            gain = f"{med / statistics.median(rates[name.removesuffix('+bf16')]):13.2f}x"
        print(f"{name:52s} {med:10.0f} {base / med:13.1f}x {gain:>14s}")


if __name__ == "__main__":
    main()
