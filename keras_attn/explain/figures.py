"""What every explain figure shares: the per-input result, heat overlays, PNG output.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot): nothing global, such
as the backend, changes, and no window ever opens.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_attn.files import atomic_write_bytes

HEAT_ALPHA = 0.5
DPI = 100


@dataclasses.dataclass
class Explained:
    """One input's outcome: `probabilities` (K,), the figure, the true class if known."""

    path: str
    probabilities: np.ndarray
    figure: Figure
    true_class: str | None = None


@dataclasses.dataclass
class Failed:
    """An input that could not be explained, and why (one line)."""

    path: str
    reason: str


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches on an Agg canvas."""
    # Constrained layout keeps the suptitle clear of the panels' titles.
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def normalised(map_: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """(h,w) -> ((size,size) in [0, 1], min, max): upsampled bilinearly, min-max scaled.

    A flat map carries no location: it comes back as zeros (its min and max say so).
    """
    map_ = np.asarray(map_, np.float32)
    low, high = float(map_.min()), float(map_.max())
    up = cv2.resize(map_, (size, size), interpolation=cv2.INTER_LINEAR)
    scaled = (up - low) / (high - low) if high > low else np.zeros_like(up)
    return np.clip(scaled, 0.0, 1.0), low, high


def overlay(ax, image: np.ndarray, map_: np.ndarray | None, title: str) -> None:
    """Draws uint8 `image` (S,S,3) on `ax`, with `map_` (h,w) as a heat layer when given."""
    ax.imshow(image, interpolation="nearest")
    if map_ is not None:
        heat, low, high = normalised(map_, image.shape[0])
        if high > low:  # a flat map would only tint the image: its title says it is flat
            ax.imshow(heat, cmap="jet", alpha=HEAT_ALPHA, vmin=0, vmax=1, interpolation="nearest")
        # The range says whether a map is sharp or nearly flat, which min-max scaling hides.
        title = f"{title}\n[{low:.3g}, {high:.3g}]" if high > low else f"{title}\n(flat {low:.3g})"
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def save_png(figure: Figure, path: Path) -> None:
    """Writes `figure` as a PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
