"""Clustering frozen features: k-means scored by NMI / ARI, and a t-SNE map for pictures.

The clustering protocol uses no labels at all for the fit: features are L2-normalised (so
Euclidean k-means follows cosine similarity, as the kNN protocol does) and k-means with
``n_clusters`` centres (default: the number of classes) partitions them. When labels exist the
partition is compared with them by

- **NMI** (normalised mutual information, in [0, 1]; 1 = the clusters are the classes up to
  renaming, 0 = independent), and
- **ARI** (adjusted Rand index, in [-0.5, 1]; 1 = identical partitions, about 0 = chance level).

:func:`tsne_map` embeds a subsample of the features in 2-D (PCA to 50 dimensions first, then
t-SNE) for the pictures :func:`saliencyssl.eval.results.plot_tsne` draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: k-means restarts (the best inertia is kept).
DEFAULT_N_INIT = 10
#: t-SNE is run on at most this many points (chosen at random, seeded).
DEFAULT_TSNE_POINTS = 2000


@dataclass
class ClusterResult:
    """A k-means partition and, when labels were given, its agreement with them.

    Attributes:
        assignments: ``(N,)`` int64 cluster index per image, in ``0..n_clusters-1``.
        n_clusters: number of clusters.
        nmi, ari: agreement with the labels, or ``None`` without labels.
    """

    assignments: np.ndarray
    n_clusters: int
    nmi: float | None = None
    ari: float | None = None


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero); float64 ``(N, D)``."""
    features = np.asarray(features, np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def kmeans_clusters(features: np.ndarray, n_clusters: int, labels: np.ndarray | None = None, seed: int = 0,
                    n_init: int = DEFAULT_N_INIT) -> ClusterResult:
    """k-means on L2-normalised features, scored against ``labels`` when given.

    Args:
        features: ``(N, D)`` float features.
        n_clusters: number of clusters, ``2 <= n_clusters <= N``.
        labels: ``(N,)`` integer labels, or ``None`` (also ``None`` when any label is ``-1``).
        seed: k-means initialisation seed (the result is deterministic for a seed).
        n_init: restarts.

    Raises:
        ValueError: ``n_clusters`` outside ``2..N``.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    features = np.asarray(features)
    if not 2 <= int(n_clusters) <= len(features):
        raise ValueError(f"k-means needs 2 <= n_clusters <= number of images ({len(features)}), got {n_clusters}; "
                         f"give another number of clusters")
    from threadpoolctl import threadpool_limits

    model = KMeans(n_clusters=int(n_clusters), n_init=int(n_init), random_state=int(seed))
    with threadpool_limits(limits=1):  # small problems: threads only spin against each other on a busy machine
        assignments = model.fit_predict(l2_normalise(features)).astype(np.int64)
    result = ClusterResult(assignments, int(n_clusters))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape == assignments.shape and (labels >= 0).all():
            result.nmi = float(normalized_mutual_info_score(labels, assignments))
            result.ari = float(adjusted_rand_score(labels, assignments))
    return result


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items (all of them when ``n <= max_points``)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_points), replace=False))


def tsne_map(features: np.ndarray, max_points: int = DEFAULT_TSNE_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE embedding of (a subsample of) the features.

    Args:
        features: ``(N, D)`` float features (L2-normalised here, as for k-means).
        max_points: subsample size limit (t-SNE is quadratic-ish; 2,000 points take seconds).
        seed: subsample and t-SNE seed.

    Returns:
        ``(indices, embedding)``: ``(M,)`` indices into ``features`` and ``(M, 2)`` float32 coordinates.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    indices = subsample(len(features), max_points, seed)
    points = l2_normalise(np.asarray(features)[indices])
    if len(points) < 3 or len(np.unique(np.round(points, 6), axis=0)) < 3:
        # too few distinct points to map; scikit-learn's Barnes-Hut t-SNE also crashes the process (a segmentation
        # fault) on a set whose points all coincide, e.g. a folder of identical images
        return indices, np.zeros((len(points), 2), np.float32)
    n_components = min(50, points.shape[1], len(points))
    perplexity = float(min(30.0, max(1.0, (len(points) - 1) / 3.0)))
    with threadpool_limits(limits=1):  # see kmeans_clusters
        if n_components < points.shape[1]:
            points = PCA(n_components=n_components, random_state=seed).fit_transform(points)
        embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                         random_state=seed).fit_transform(points)
    return indices, embedding.astype(np.float32)


__all__ = ["ClusterResult", "l2_normalise", "kmeans_clusters", "subsample", "tsne_map"]
