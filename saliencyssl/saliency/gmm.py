"""Weighted Gaussian mixture of colours, built by Orchard-Bouman splitting (Cheng's ``CmGMM``).

Paper: M. T. Orchard and C. A. Bouman, "Color Quantization of Images", IEEE Transactions on
Signal Processing 39(12), 1991. Reference code: CmCode (https://github.com/MCG-NKU/CmCode),
``CmLib/Cluster/CmGMM.cpp``.

Building (:meth:`ColorGMM.build`): one Gaussian over all pixels (weighted), then repeatedly the
component with the largest covariance eigenvalue is split along its principal eigenvector at
the projection of its mean, until the mixture has ``max_components`` components or the largest
eigenvalue is under ``0.01``. The number reached is kept: a mixture that stopped at 3
components builds at most 3 the next time (as Cheng's object does).

Refining (:meth:`ColorGMM.refine`): every pixel moves to its most probable component and each
component is refitted with the pixel weights; a component left without weight is dropped, the
others keep their order, and the cap falls to the number left (the original's ``_K = newK``),
so later builds make no more. The mixture weights stay relative to the total weight of the
last *build*, as in the original.

Densities are ``0.0635 / sqrt(det S) * exp(-(x - m)^T S^-1 (x - m) / 2)``, with ``1e-7/9``
added to each covariance diagonal. The mixture density is returned in float32, as the
original's ``float P(c)`` does: far from both mixtures it underflows to exactly 0 (below about
1e-45), which GrabCut's t-links treat as a hard decision (see :mod:`.grabcut`).
"""

from __future__ import annotations

import numba
import numpy as np

_COV_EPS = 1e-7 / 9.0
_SPLIT_MIN_EIGENVALUE = 0.01
_NORM = 0.0635  # ~ (2 pi)^(-3/2)


@numba.njit(cache=True)
def _moments(pixels, weights, component, k):
    """Per-component sums of weights, weighted colours and weighted colour products, one pass."""
    count = np.zeros(k)
    sums = np.zeros((k, 3))
    prods = np.zeros((k, 3, 3))
    for n in range(pixels.shape[0]):
        wt = weights[n]
        if wt == 0.0:
            continue
        c = component[n]
        count[c] += wt
        for a in range(3):
            xa = wt * pixels[n, a]
            sums[c, a] += xa
            for b in range(a, 3):
                prods[c, a, b] += xa * pixels[n, b]
    for c in range(k):
        for a in range(3):
            for b in range(a):
                prods[c, a, b] = prods[c, b, a]
    return count, sums, prods


@numba.njit(cache=True)
def _densities(pixels, means, inverses, coefs, usable):
    """``(N, K)`` Gaussian densities; ``coefs[i] = 0.0635 / sqrt(det_i)``; unusable components give 0."""
    n_pix = pixels.shape[0]
    k = means.shape[0]
    out = np.zeros((n_pix, k))
    for n in range(n_pix):
        for i in range(k):
            if not usable[i]:
                continue
            d0 = pixels[n, 0] - means[i, 0]
            d1 = pixels[n, 1] - means[i, 1]
            d2 = pixels[n, 2] - means[i, 2]
            inv = inverses[i]
            mahal = (d0 * (inv[0, 0] * d0 + inv[0, 1] * d1 + inv[0, 2] * d2)
                     + d1 * (inv[1, 0] * d0 + inv[1, 1] * d1 + inv[1, 2] * d2)
                     + d2 * (inv[2, 0] * d0 + inv[2, 1] * d1 + inv[2, 2] * d2))
            out[n, i] = coefs[i] * np.exp(-0.5 * mahal)
    return out


@numba.njit(cache=True)
def _split(pixels, component, source, target, vector, threshold):
    """Move the pixels of component ``source`` beyond ``threshold`` along ``vector`` to ``target``."""
    for n in range(pixels.shape[0]):
        if component[n] == source:
            if pixels[n, 0] * vector[0] + pixels[n, 1] * vector[1] + pixels[n, 2] * vector[2] > threshold:
                component[n] = target


class ColorGMM:
    """A mixture of up to ``max_components`` 3-D Gaussians over pixel colours.

    Args:
        max_components: initial cap on the number of components (5 in GrabCut).

    Attributes after :meth:`build`:
        num_components: the current cap (may shrink on later builds).
        means ``(K, 3)``, inverses ``(K, 3, 3)``, dets ``(K,)``, weights ``(K,)`` (summed pixel
        weights), active ``(K,)`` bool, total_weight (sum of weights at the last build).
    """

    def __init__(self, max_components: int = 5):
        if max_components < 1:
            raise ValueError(f"max_components must be >= 1, got {max_components}")
        self.num_components = int(max_components)
        self.total_weight = 0.0
        self._reset(self.num_components)

    def _reset(self, k: int) -> None:
        self.means = np.zeros((k, 3))
        self.inverses = np.zeros((k, 3, 3))
        self.dets = np.zeros(k)
        self.weights = np.zeros(k)
        self.active = np.zeros(k, bool)
        self.eigenvalues = np.zeros(k)
        self.eigenvectors = np.zeros((k, 3))

    # -- fitting -------------------------------------------------------------------------------
    def _fit(self, pixels: np.ndarray, weights: np.ndarray, component: np.ndarray, indices, eigen: bool) -> np.ndarray:
        """Refit the listed components from the pixels assigned to them; returns each one's summed weight."""
        count, sums, prods = _moments(pixels, weights, component, self.num_components)
        for i in indices:
            if count[i] < _COV_EPS:
                self.active[i] = False
                continue
            mean = sums[i] / count[i]
            cov = prods[i] / count[i] - np.outer(mean, mean)
            cov[np.diag_indices(3)] += _COV_EPS
            self.means[i] = mean
            self.dets[i] = np.linalg.det(cov)
            self.inverses[i] = np.linalg.inv(cov) if self.dets[i] > 0 else 0.0
            self.weights[i] = count[i]
            self.active[i] = True
            if eigen:
                values, vectors = np.linalg.eigh(cov)
                self.eigenvalues[i] = values[-1]
                self.eigenvectors[i] = vectors[:, -1]
        return count

    def build(self, pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Fit the mixture from scratch by Orchard-Bouman splitting.

        Args:
            pixels: ``(N, 3)`` float64 colours.
            weights: ``(N,)`` float64 non-negative pixel weights.

        Returns:
            ``(N,)`` int64 component of each pixel.
        """
        self._reset(self.num_components)
        component = np.zeros(len(pixels), np.int64)
        self.total_weight = float(weights.sum())
        self._fit(pixels, weights, component, [0], eigen=True)
        split = 0
        for i in range(1, self.num_components):
            if self.eigenvalues[split] < _SPLIT_MIN_EIGENVALUE:
                self.num_components = i
                break
            vector = self.eigenvectors[split]
            threshold = vector @ self.means[split]
            _split(pixels, component, split, i, vector, threshold)
            self._fit(pixels, weights, component, [split, i], eigen=True)
            candidates = self.eigenvalues[: i + 1]
            split = int(np.argmax(candidates))
        self._truncate()
        return component

    def refine(self, pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Reassign pixels to their most probable component and refit (total weight unchanged).

        Returns:
            ``(N,)`` int64 new component of each pixel (numbered after dropping; -1 for the
            pixels of a dropped component, which all have zero weight).
        """
        component = np.argmax(self.component_densities(pixels), axis=1)
        count = self._fit(pixels, weights, component, range(self.num_components), eigen=False)
        # The original keeps a component with any weight in its count (one under 1e-7/9 gets no
        # mixture weight). When none has weight (rare: the cut first checks the weight the mixture
        # had at its last build) the cap stays, where the original's next build would be undefined.
        kept = np.flatnonzero(count > 0)
        if 0 < kept.size < self.num_components:
            renumber = np.full(self.num_components, -1, np.int64)
            renumber[kept] = np.arange(kept.size)
            component = renumber[component]  # -1: pixels (of zero weight) of a dropped component
            self.num_components = int(kept.size)
            for name in ("means", "inverses", "dets", "weights", "active", "eigenvalues", "eigenvectors"):
                setattr(self, name, getattr(self, name)[kept])
        return component

    def _truncate(self) -> None:
        k = self.num_components
        for name in ("means", "inverses", "dets", "weights", "active", "eigenvalues", "eigenvectors"):
            setattr(self, name, getattr(self, name)[:k])

    # -- evaluation ----------------------------------------------------------------------------
    def component_densities(self, pixels: np.ndarray) -> np.ndarray:
        """``(N, K)`` Gaussian density of each pixel under each component (0 for dropped ones)."""
        usable = self.active & (self.dets > 0)
        coefs = np.where(usable, _NORM / np.sqrt(np.where(usable, self.dets, 1.0)), 0.0)
        return _densities(pixels, self.means, self.inverses, coefs, usable)

    def density(self, pixels: np.ndarray) -> np.ndarray:
        """``(N,)`` float32 mixture density: ``sum_i w_i p_i(x) / total_weight``, computed in float64."""
        if self.total_weight <= 0:
            return np.zeros(len(pixels), np.float32)
        w = np.where(self.active, self.weights, 0.0)
        return (self.component_densities(pixels) @ w / self.total_weight).astype(np.float32)
