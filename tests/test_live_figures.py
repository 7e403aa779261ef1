"""The blitted live figures are pixel-identical to a full draw of the same figure."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.tensorboard._utils import figure_to_image

from callbacks.live_figures import LiveHeatmap, LiveTimeline
from dynamic_sparsity.analysis.figures import sparsity_timeline_figure, zero_frequency_figure


def _full_draw(fig) -> np.ndarray:
    return figure_to_image(fig, close=True).transpose(1, 2, 0)[..., :3]


@pytest.mark.parametrize(("d_s", "d_a"), [(4, 1), (18, 6)])
def test_live_heatmap_equals_full_draw(d_s: int, d_a: int) -> None:
    rng = np.random.default_rng(d_s)
    state, action = [f"qpos{i}" for i in range(d_s)], [f"act{i}" for i in range(d_a)]
    live = LiveHeatmap(state, action)
    for k in range(3):  # each update redraws only data and title on the cached background
        freq = rng.random((d_s, d_s + d_a))
        title = f"zero frequency, {1000 * k} samples"
        expected = _full_draw(zero_frequency_figure(freq, state, action, title=title))
        np.testing.assert_array_equal(live.render(freq, title), expected)
    with pytest.raises(ValueError, match=r"frequency must have shape"):
        live.render(np.zeros((d_s, d_s)), "x")


def test_live_timeline_equals_full_draw_and_follows_the_length() -> None:
    rng = np.random.default_rng(0)
    live = LiveTimeline()
    for length in (50, 50, 80):
        values = rng.random(length)
        fig = sparsity_timeline_figure(values, title="last episode")
        fig.axes[0].set_xlim(-0.5, length - 0.5)
        np.testing.assert_array_equal(live.render(values, "last episode"), _full_draw(fig))


def test_render_tensorboard_draws_the_scalars_and_images_of_an_event_file(tmp_path) -> None:
    """examples/render_tensorboard.py: the docs' pictures, from an event file written here."""
    import subprocess
    import sys
    from pathlib import Path

    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run"))
    for step in range(5):
        writer.add_scalar("sparsity/state", 0.1 * step, step)
        writer.add_scalar("sparsity/samples", 8 * step, step)
        writer.add_scalar("rollout/ep_rew_mean", 1.0, step)  # not a sparsity tag: left out
    image = np.zeros((3, 20, 30), np.float32)
    image[0, :, :15] = 1.0
    writer.add_image("sparsity/zero_frequency", image, 4)
    writer.close()
    script = Path(__file__).resolve().parents[1] / "examples" / "render_tensorboard.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "--out", str(tmp_path / "out")],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "2 scalars and 1 images" in done.stdout
    for name in ("tensorboard_scalars.png", "tensorboard_figures.png"):
        picture = plt.imread(tmp_path / "out" / name)
        assert picture.shape[0] > 100 and picture.std() > 0
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([sys.executable, str(script), str(tmp_path / "nothing")], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
