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
