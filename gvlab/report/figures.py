"""Figure helpers shared by experiments: training curves and image grids (matplotlib; the CLI selects Agg)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np


def curves(history, names: Sequence[str], title: str = "", logy: bool = False):
    """One panel per metric: mean over seeds with a min-max band."""
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        history.plot(name, ax=ax)
        ax.set_title(name)
        if logy:
            ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, rows: int | None = None, title: str = "", row_labels: Sequence[str] = (),
               cmap: str = "gray_r"):
    """Images `[N, H, W]` (or `[R, C, H, W]`) tiled into one figure, values clipped to [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        rows = rows or int(np.ceil(np.sqrt(len(images))))
        cols = int(np.ceil(len(images) / rows))
        padded = np.zeros((rows * cols,) + images.shape[1:])
        padded[: len(images)] = images
        images = padded.reshape(rows, cols, *images.shape[1:])
    rows, cols, height, width = images.shape
    canvas = np.zeros((rows * (height + 1) - 1, cols * (width + 1) - 1))  # white gaps under gray_r
    for r in range(rows):
        for c in range(cols):
            canvas[r * (height + 1): r * (height + 1) + height, c * (width + 1): c * (width + 1) + width] = images[r, c]
    fig, ax = plt.subplots(figsize=(0.45 * cols + 1.2, 0.45 * rows + 0.4))
    ax.imshow(np.clip(canvas, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(height + 1) * r + height / 2 for r in range(len(row_labels))])
    ax.set_yticklabels(row_labels)
    if title:
        ax.set_title(title)
    return fig
