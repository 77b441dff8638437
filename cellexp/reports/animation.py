"""The UMAP over training as an animated GIF: a frame per epoch, the same axes throughout, the epoch in each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cellexp.reports.xai import plt

FRAME_MS = 600


def umap_gif(path: Path, frames: list[np.ndarray], labels: np.ndarray, class_names: list[str], title: str) -> Path:
    """frames[k]: (N, 2) coordinates after epoch k + 1 of the same N cells, coloured by their class."""
    everything = np.concatenate(frames)
    low, high = everything.min(axis=0), everything.max(axis=0)
    pad = 0.05 * np.maximum(high - low, 1e-6)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    images = []
    for epoch, coords in enumerate(frames, start=1):
        fig, ax = plt.subplots(figsize=(5, 4.4))
        for c, name in enumerate(class_names):
            chosen = labels == c
            if chosen.any():
                ax.scatter(*coords[chosen].T, s=6, color=colours(c % colours.N), label=name, linewidths=0)
        ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
        ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\nepoch {epoch}", fontsize=9)
        if len(class_names) <= 20:
            ax.legend(fontsize=6, loc="upper right", markerscale=2)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        images.append(Image.open(buffer).convert("P", palette=Image.Palette.ADAPTIVE))
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0)
    return path
