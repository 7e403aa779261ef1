"""Draw what TensorBoard shows of a sparsity run, from its event file, into two PNGs.

    python examples/ppo_sparsity_monitor.py --env CheetahRun --timesteps 16384 --n-envs 8 \
        --logdir runs/monitor
    python examples/render_tensorboard.py runs/monitor --out docs/

``tensorboard_scalars.png``: every ``sparsity/*`` scalar against the step, as
TensorBoard's scalar dashboard plots it (raw values, no smoothing);
``tensorboard_figures.png``: the last zero-frequency heatmap and episode
timeline the callback logged, the images exactly as stored in the event file.
The docs' pictures are made this way (a machine without a browser cannot take
screenshots of TensorBoard; these are drawn from the same data it reads).
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path


def _event_file(run: Path) -> Path:
    """The newest event file under ``run`` (a run folder, or a file)."""
    if run.is_file():
        return run
    found = sorted(run.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no TensorBoard event file under {run}")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (or its event file)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder of the two PNGs")
    parser.add_argument("--prefix", default="sparsity/", help="scalar tags to draw")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = _event_file(args.run)
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = sorted(t for t in events.Tags()["scalars"] if t.startswith(args.prefix))
    if not tags:
        raise SystemExit(f"no scalar starting with {args.prefix!r} in {path}")
    args.out.mkdir(parents=True, exist_ok=True)

    cols = 4
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        points = events.Scalars(tag)
        ax.plot([p.step for p in points], [p.value for p in points], color="#e8710a", lw=1.2)
        ax.set_title(tag, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags) :]:
        ax.axis("off")
    fig.suptitle(f"{path.parent.name}: {args.prefix}* scalars (x: env steps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out / "tensorboard_scalars.png", dpi=90)
    plt.close(fig)

    image_tags = sorted(events.Tags()["images"])
    if image_tags:
        fig, axes = plt.subplots(
            len(image_tags), 1, figsize=(10, 6.5 * len(image_tags)), squeeze=False
        )
        for ax, tag in zip(axes.flat, image_tags, strict=True):
            last = events.Images(tag)[-1]
            ax.imshow(plt.imread(io.BytesIO(last.encoded_image_string), format="png"))
            ax.set_title(f"{tag} (step {last.step})", fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.out / "tensorboard_figures.png", dpi=90)
        plt.close(fig)
    print(f"{len(tags)} scalars and {len(image_tags)} images of {path} drawn into {args.out}")


if __name__ == "__main__":
    main()
