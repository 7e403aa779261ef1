"""Figures redrawn cheaply during training, by blitting onto a cached background.

A full matplotlib draw of the labelled heatmap costs 60-120 ms, mostly text;
during training only the data and the title change. These classes draw the
static parts once, then per update restore that background and draw only the
changing artists (a few ms), and return RGB arrays for SB3's ``Image``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from dynamic_sparsity.analysis.figures import sparsity_timeline_figure, zero_frequency_figure

__all__ = ["LiveHeatmap", "LiveTimeline"]


class _Blitter:
    """Draws ``fig`` once without ``dynamic`` artists, then redraws only those."""

    def __init__(self, fig: Figure, dynamic: Sequence[Artist]) -> None:
        FigureCanvasAgg(fig)  # our own headless canvas, whatever the backend
        self.fig, self.dynamic = fig, list(dynamic)
        # Texts stay visible but empty: an invisible title is laid out off the figure.
        texts = {a: a.get_text() for a in self.dynamic if isinstance(a, Text)}
        for artist in self.dynamic:
            artist.set_text("") if artist in texts else artist.set_visible(False)
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)
        for artist in self.dynamic:
            artist.set_text(texts[artist]) if artist in texts else artist.set_visible(True)

    def render(self) -> np.ndarray:
        """The figure as an ``(H, W, 3)`` uint8 array, with the dynamic artists redrawn."""
        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self.dynamic:
            artist.axes.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class LiveHeatmap:
    """The labelled zero-frequency heatmap of ``analysis.figures.zero_frequency_figure``.

    Args:
        state_labels: ``d_s`` labels.
        action_labels: ``d_a`` labels.
    """

    def __init__(self, state_labels: Sequence[str], action_labels: Sequence[str]) -> None:
        d_s, d_a = len(state_labels), len(action_labels)
        fig = zero_frequency_figure(
            np.zeros((d_s, d_s + d_a)), state_labels, action_labels, title=" "
        )
        ax = fig.axes[0]
        self._image = ax.images[0]
        self._title = ax.title
        # The separator line and the frame lie on top of the image: redraw them too.
        dynamic = [self._image, *ax.lines, *ax.spines.values(), self._title]
        self._blit = _Blitter(fig, dynamic)
        self.shape = (d_s, d_s + d_a)

    def render(self, frequency: np.ndarray, title: str) -> np.ndarray:
        """RGB image of ``frequency`` (fractions in ``[0, 1]``, shape ``(d_s, d_s + d_a)``)."""
        if frequency.shape != self.shape:
            raise ValueError(f"frequency must have shape {self.shape}, got {frequency.shape}")
        self._image.set_data(100.0 * frequency)
        self._title.set_text(title)
        return self._blit.render()


class LiveTimeline:
    """The per-step sparsity plot of ``analysis.figures.sparsity_timeline_figure``.

    The axes are laid out for one episode length; a different length rebuilds
    them (Playground episodes have a fixed length, so that is rare).
    """

    def __init__(self) -> None:
        self._blit: _Blitter | None = None
        self._length = -1

    def render(self, sparsity: Sequence[float], title: str) -> np.ndarray:
        """RGB image of ``sparsity`` over the steps of one episode."""
        values = np.asarray(sparsity, dtype=float)
        if len(values) != self._length:
            fig = sparsity_timeline_figure(values, title=" ")
            ax = fig.axes[0]
            ax.set_xlim(-0.5, max(len(values) - 0.5, 0.5))
            self._line, self._title = ax.lines[0], ax.title
            self._blit = _Blitter(fig, [self._line, *ax.spines.values(), self._title])
            self._length = len(values)
        self._line.set_data(np.arange(len(values)), values)
        self._title.set_text(title)
        return self._blit.render()
