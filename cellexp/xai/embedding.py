"""How well an embedding separates the classes: a 2-D UMAP to look at, silhouette and kNN accuracy to compare.

Sphering (cellexp.profiles.sphering: DeepProfiler's regularised ZCA, fit on the negative controls where the
cells have them) decorrelates the dimensions and gives each unit variance, so that a few high-variance directions
(often nuisance such as brightness) do not dominate distances. Without controls, the whole split is the reference.
UMAP runs on at most PCA_DIMS principal components: same picture, a fraction of the time on
wide embeddings.
"""

from __future__ import annotations

import functools
import logging
import sys

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

from cellexp.profiles.sphering import ALL, CONTROLS, fit_sphering

log = logging.getLogger(__name__)

PCA_DIMS = 50


def sphere(x: np.ndarray, regularization: float, controls: np.ndarray | None = None) -> np.ndarray:
    """x (N, D) sphered on its `controls` rows (a boolean mask) where some are given, else on all of x."""
    some = controls is not None and bool(np.any(controls))
    reference = x[np.asarray(controls, bool)] if some else x
    return fit_sphering(reference, regularization, CONTROLS if some else ALL).apply(x)


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour majority vote (ties go to the lower class index)."""
    k = min(k, len(x) - 1)
    if k < 1:
        return float("nan")
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    # Drop each cell itself (usually, but with duplicates not always, the first neighbour).
    others = np.array([row[row != i][:k] for i, row in enumerate(neighbours)])
    votes = np.zeros((len(x), labels.max() + 1), dtype=np.int64)
    np.add.at(votes, (np.arange(len(x))[:, None], labels[others]), 1)
    return float((votes.argmax(axis=1) == labels).mean())


def silhouette(x: np.ndarray, labels: np.ndarray, max_cells: int, seed: int) -> float:
    """Mean silhouette (Euclidean) by class, on a seeded sample of at most max_cells (it is quadratic)."""
    if not 2 <= len(np.unique(labels)) < len(x):
        return float("nan")
    sample = min(len(x), max_cells)
    return float(silhouette_score(x, labels, sample_size=sample if sample < len(x) else None, random_state=seed))


@functools.cache
def umap_learn():
    """umap-learn, imported only when an embedding is drawn, with numba's on-disk cache turned on for its compiled
    functions. umap-learn compiles them afresh in every process (about 9 s of a fresh process's first UMAP on 2
    cores, 0.4 s once cached; the numba cache keys on the source files, so a new umap-learn recompiles). Where no
    cache folder is writable, numba refuses the cache and they compile per process as before."""
    import umap
    from numba.core.dispatcher import Dispatcher

    functions = [
        function
        for name, module in list(sys.modules.items())
        if name.startswith("umap.")
        for function in vars(module).values()
        if isinstance(function, Dispatcher)
    ]
    try:
        for function in functions:
            function.enable_caching()
    except RuntimeError as refused:  # numba: "cannot cache function ...: no locator available"
        log.debug("UMAP's numba functions compile per process: %s", refused)
    return umap


def umap_2d(x: np.ndarray, neighbours: int, seed: int) -> np.ndarray:
    """2-D UMAP coordinates (N, 2); a seeded fit (single-threaded in umap-learn, so reproducible).

    The fit starts numba's OpenMP threads, which can set the OpenMP thread count that torch shares to every core:
    torch's own count is put back after it, or training later in the same process (a sweep's next job, the test
    suite's next test) would run on more threads than it was given."""
    import torch

    umap = umap_learn()
    if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
        x = PCA(n_components=PCA_DIMS, random_state=seed).fit_transform(x)
    reducer = umap.UMAP(n_neighbors=max(2, min(neighbours, len(x) - 1)), random_state=seed, n_jobs=1)
    threads = torch.get_num_threads()
    try:
        return reducer.fit_transform(x).astype(np.float32)
    finally:
        torch.set_num_threads(threads)


def embedding_report(
    x: np.ndarray,
    labels: np.ndarray,
    knn_k: int,
    neighbours: int,
    max_silhouette: int,
    seed: int,
    sphering: float | None,
    controls: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (silhouette, knn_accuracy) and UMAP coordinates of x (N, D) labelled by class; sphered first with
    regularization `sphering` (on the `controls` rows where given) unless it is None."""
    x = np.asarray(x, dtype=np.float32)
    if sphering is not None:
        x = sphere(x, sphering, controls)
    metrics = {
        "silhouette": silhouette(x, labels, max_silhouette, seed),
        "knn_accuracy": knn_accuracy(x, labels, knn_k),
    }
    return metrics, umap_2d(x, neighbours, seed)
