"""LIME (Ribeiro et al. 2016) through the `lime` package, turned into maps comparable with CAMs.

Superpixels come from SLIC on the image's intensity; a hidden superpixel is painted black, the value
the crops already have outside the cell, so hiding one asks "what if this part were background".
Each cell's map holds, per pixel, the positive weight of its superpixel for the target class, scaled
to a maximum of 1 (negative evidence is dropped, as CAMs drop it): Grad-CAMO reads it like a CAM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from lime import lime_image
from skimage.segmentation import slic

from cellexp.progress import progress
from cellexp.xai.quiet import library_bars_off

# SLIC on one channel in [0, 1]: a low compactness lets superpixels follow the cell's edge.
COMPACTNESS = 0.1


def superpixels(image: np.ndarray, segments: int) -> np.ndarray:
    """(H, W, C) -> (H, W) labels 0..n-1 (lime indexes its features by label)."""
    gray = image.mean(axis=-1)
    span = gray.max() - gray.min()
    scaled = (gray - gray.min()) / span if span > 0 else np.zeros_like(gray)
    labels = slic(scaled, n_segments=segments, compactness=COMPACTNESS, channel_axis=None, start_label=0)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def lime_maps(
    inputs: Callable[[slice], torch.Tensor],
    targets: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    background: float,
    num_samples: int,
    segments: int,
    batch_size: int,
    seed: int,
) -> Iterator[np.ndarray]:
    """Yields one map (1, H, W) per cell whose model input `inputs(slice)` returns (1, C, H, W).

    `predict` maps a stack of inputs in lime's layout (n, H, W, C) to class probabilities (n, classes).
    """
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    with library_bars_off(lime_image):
        for i in progress(range(len(targets)), desc="xai lime", unit="cell"):
            target = int(targets[i])
            explanation = explainer.explain_instance(
                inputs(slice(i, i + 1))[0].permute(1, 2, 0).double().cpu().numpy(),
                predict,
                labels=(target,),
                top_labels=None,
                hide_color=background,
                num_samples=num_samples,
                batch_size=batch_size,
                segmentation_fn=lambda image: superpixels(image, segments),
                random_seed=seed,
            )
            weights = np.zeros(explanation.segments.max() + 1, dtype=np.float32)
            for segment, weight in explanation.local_exp[target]:
                weights[segment] = weight
            positive = np.maximum(weights[explanation.segments], 0)
            yield (positive / positive.max() if positive.max() > 0 else positive)[None]
