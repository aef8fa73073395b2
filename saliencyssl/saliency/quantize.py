"""Colour quantisation and colour-space smoothing, as Cheng et al.'s HC and RC use them.

Both follow ``CmSaliencyRC::Quantize`` and ``SmoothSaliency`` of the original C++ (see
``shared/reference/saliencycut.md``):

1. each BGR channel in [0, 1] is cut into 12 levels, ``q = int(v * (12 - 0.0001))``, giving
   bin ``qB*144 + qG*12 + qR``;
2. occupied bins are sorted by pixel count (descending; ties: higher bin first) and the rarest
   are dropped while the dropped pixels stay under 5% of the image; at most 256 are kept, and
   at least ``min(10, occupied)``;
3. a dropped bin joins the kept bin nearest in integer ``(qB, qG, qR)`` space;
4. a kept colour is the mean BGR of its pixels; colour distances are Euclidean in Lab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = 12


@dataclass
class Quantization:
    """A quantised image.

    Attributes:
        index: ``(H, W)`` int32 colour index of every pixel, 0..K-1 (most frequent first).
        bgr: ``(K, 3)`` float64 mean BGR colour in [0, 1].
        lab: ``(K, 3)`` float64 Lab colour (OpenCV float conversion, L in 0..100).
        counts: ``(K,)`` int64 pixels per colour.
    """

    index: np.ndarray
    bgr: np.ndarray
    lab: np.ndarray
    counts: np.ndarray

    @property
    def num_colors(self) -> int:
        return int(self.counts.size)

    def distances(self) -> np.ndarray:
        """``(K, K)`` float64 Euclidean Lab distances between the colours."""
        diff = self.lab[:, None, :] - self.lab[None, :, :]
        return np.sqrt((diff * diff).sum(-1))


def quantize(image_bgr: np.ndarray, ratio: float = 0.95, max_colors: int = 256) -> Quantization:
    """Quantise an image as Cheng's ``Quantize`` does.

    Args:
        image_bgr: ``(H, W, 3)`` float32 BGR in [0, 1].
        ratio: share of pixels the kept colours must cover.
        max_colors: most colours kept.
    """
    import cv2

    h, w = image_bgr.shape[:2]
    n = h * w
    q = (image_bgr.reshape(-1, 3) * np.float32(LEVELS - 0.0001)).astype(np.int32)
    bins = q[:, 0] * (LEVELS * LEVELS) + q[:, 1] * LEVELS + q[:, 2]
    bin_counts = np.bincount(bins, minlength=LEVELS ** 3)
    occupied = np.flatnonzero(bin_counts)
    occ_counts = bin_counts[occupied]
    order = np.lexsort((-occupied, -occ_counts))  # count descending, then bin index descending
    sorted_bins = occupied[order]
    sorted_counts = occ_counts[order]

    total = sorted_bins.size
    max_drop = int(np.rint(n * (1.0 - ratio)))
    # Drop bins from the rare end while the running dropped count stays under max_drop.
    dropped_running = np.cumsum(sorted_counts[::-1])
    n_drop = int(np.count_nonzero(dropped_running < max_drop))
    keep = max(total - n_drop, 1)
    keep = min(keep, max_colors)
    if keep <= 10:
        keep = min(10, total)

    bin_to_color = np.zeros(LEVELS ** 3, np.int32)
    bin_to_color[sorted_bins[:keep]] = np.arange(keep, dtype=np.int32)
    if keep < total:
        def coords(b: np.ndarray) -> np.ndarray:
            return np.stack([b // (LEVELS * LEVELS), (b // LEVELS) % LEVELS, b % LEVELS], axis=1)

        kept_xyz = coords(sorted_bins[:keep])
        drop_xyz = coords(sorted_bins[keep:])
        d2 = ((drop_xyz[:, None, :] - kept_xyz[None, :, :]) ** 2).sum(-1)
        bin_to_color[sorted_bins[keep:]] = np.argmin(d2, axis=1).astype(np.int32)  # first minimum

    index = bin_to_color[bins]
    counts = np.bincount(index, minlength=keep).astype(np.int64)
    # Summed in float32, pixel by pixel in raster order, then scaled by the float32 reciprocal of
    # the count: the original's Vec3f accumulators and OpenCV's `Vec3f /= float` (a * (1 / n)).
    # Float64 sums shift the colours of large images by up to 0.3 in Lab.
    sums = np.zeros((keep, 3), np.float32)
    np.add.at(sums, index, image_bgr.reshape(-1, 3).astype(np.float32, copy=False))
    bgr = (sums * (np.float32(1) / np.maximum(counts, 1).astype(np.float32))[:, None]).astype(np.float64)
    lab = cv2.cvtColor(bgr.astype(np.float32).reshape(1, -1, 3), cv2.COLOR_BGR2Lab).reshape(-1, 3)
    return Quantization(index.reshape(h, w), bgr, lab.astype(np.float64), counts)


def minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (OpenCV ``NORM_MINMAX``); a constant array becomes all zeros."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return values
    lo, hi = values.min(), values.max()
    if hi - lo <= np.finfo(np.float64).eps:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def smooth_in_color_space(values: np.ndarray, distances: np.ndarray, delta: float,
                          weights: np.ndarray | None = None) -> np.ndarray:
    """Cheng's ``SmoothSaliency``: average each colour's value over its nearest colours.

    For colour ``i`` take its ``n = max(round(K * delta), 2)`` nearest colours ``j`` (itself
    included; ties by index), ``T = sum d_ij`` over them, and
    ``v'_i = sum_j v_j (T - d_ij) w_j / (T sum_j w_j)``. The result is min-max normalised.

    Args:
        values: ``(K,)`` saliency per colour.
        distances: ``(K, K)`` colour distances.
        delta: share of colours to average over (0.25 in HC, 0.1 in RC's histogram smoothing).
        weights: ``(K,)`` pixel counts, or ``None`` for equal weights.

    Returns:
        ``(K,)`` float64 in [0, 1].
    """
    k = values.size
    if k < 2:
        return np.asarray(values, np.float64)
    n = max(int(np.rint(np.float32(k) * np.float32(delta))), 2)
    n = min(n, k)
    order = np.argsort(distances, axis=1, kind="stable")[:, :n]
    d = np.take_along_axis(distances, order, axis=1)
    v = np.asarray(values, np.float64)[order]
    w = np.ones_like(d) if weights is None else np.asarray(weights, np.float64)[order]
    total = d.sum(1)
    numerator = (v * (total[:, None] - d) * w).sum(1)
    denominator = total * w.sum(1)
    safe = denominator > 0
    smoothed = np.where(safe, numerator / np.where(safe, denominator, 1.0), np.asarray(values, np.float64))
    return minmax(smoothed)
