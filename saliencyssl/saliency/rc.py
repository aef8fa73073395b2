"""Region-based contrast (RC) saliency, Cheng et al. (CVPR 2011, TPAMI 2015).

Reference code: CmCode (https://github.com/MCG-NKU/CmCode), ``GetRC`` in ``CmLib/Saliency/CmSaliencyRC.cpp``.

The image is segmented (:mod:`.graphseg`); a region is salient when its colour histogram
differs from those of large, nearby regions:

``S(r) = w_c(r) * sum_{s != r} n_s exp(-d(r, s)^2 / 0.4) D_c(r, s)``, with ``n_s`` the pixel
count of region ``s``, ``d`` the distance between centroids (normalised by width and height),
``D_c(r, s) = sum_i sum_j f_r(i) f_s(j) D(c_i, c_j)`` the histogram distance over quantised
colours, and ``w_c(r) = exp(-9 (ax^2 + ay^2))`` a centre prior from the region's mean absolute
offset from the image centre.

Then, as the TPAMI code does: regions that look like border background (and a 2% band around
the image) are zeroed, the map is smoothed in colour space (histogram smoothing) and within
regions, the border is zeroed again and a 3x3 Gaussian applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saliencyssl.saliency.quantize import Quantization, minmax, quantize, smooth_in_color_space
from saliencyssl.saliency.graphseg import segment_regions

_EPS = 1e-200


@dataclass
class RCResult:
    """RC output: the map, the segmentation it was computed on, and the border-background mask.

    Attributes:
        saliency: ``(H, W)`` float32 in [0, 1].
        regions: ``(H, W)`` int32 labels 0..R-1 (raster order).
        border: ``(H, W)`` bool, pixels of border-background regions and the 2% band.
    """

    saliency: np.ndarray
    regions: np.ndarray
    border: np.ndarray


def rc_saliency(image_bgr: np.ndarray, sigma_dist: float = 0.4, seg_k: float = 50.0, seg_min_size: int = 200,
                seg_sigma: float = 0.5, quant: Quantization | None = None) -> RCResult:
    """RC saliency map of an image (Cheng's ``GetRC(img, 0.4, 50, 200, 0.5)``).

    Args:
        image_bgr: ``(H, W, 3)`` float32 BGR in [0, 1].
        sigma_dist: spatial weighting ``exp(-d^2 / sigma_dist)``.
        seg_k, seg_min_size, seg_sigma: graph segmentation parameters.
        quant: the image's quantisation, if already computed.
    """
    import cv2

    h, w = image_bgr.shape[:2]
    lab = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2Lab)
    regions = segment_regions(lab, sigma=seg_sigma, k=seg_k, min_size=seg_min_size)
    quant = quant if quant is not None else quantize(image_bgr)
    if quant.num_colors <= 2:
        # The original's special case: with two colours the map is 1 on the rarer one (no border
        # suppression, no smoothing); with one it is all zero.
        sal = (quant.index == 1).astype(np.float32) if quant.num_colors == 2 else np.zeros((h, w), np.float32)
        return RCResult(sal, regions, np.zeros((h, w), bool))

    dist = quant.distances()
    reg_sal = region_contrast(regions, quant, dist, sigma_dist)
    sal = minmax(reg_sal)[regions]

    border = border_regions(regions)
    sal[border] = 0.0
    sal = smooth_by_histogram(sal, quant, dist, delta=0.1)
    sal = smooth_by_region(sal, regions)
    sal[border] = 0.0
    sal = cv2.GaussianBlur(sal.astype(np.float32), (3, 3), 0)
    return RCResult(sal, regions, border)


def region_contrast(regions: np.ndarray, quant: Quantization, color_dist: np.ndarray, sigma_dist: float) -> np.ndarray:
    """``(R,)`` float64 region saliency before normalisation (see the module docstring)."""
    h, w = regions.shape
    num_regions = int(regions.max()) + 1
    k = quant.num_colors
    labels = regions.ravel()
    ys, xs = np.divmod(np.arange(h * w), w)
    counts = np.bincount(labels, minlength=num_regions).astype(np.float64)
    cx = np.bincount(labels, weights=xs, minlength=num_regions) / (counts * w)
    cy = np.bincount(labels, weights=ys, minlength=num_regions) / (counts * h)
    ax = np.bincount(labels, weights=np.abs(xs - w / 2.0), minlength=num_regions) / (counts * w)
    ay = np.bincount(labels, weights=np.abs(ys - h / 2.0), minlength=num_regions) / (counts * h)

    hist = np.bincount(labels * k + quant.index.ravel(), minlength=num_regions * k).reshape(num_regions, k)
    freq = (hist.astype(np.float32) / counts.astype(np.float32)[:, None]).astype(np.float64)
    color_contrast = freq @ color_dist @ freq.T
    spatial = np.exp(-((cx[:, None] - cx[None, :]) ** 2 + (cy[:, None] - cy[None, :]) ** 2) / sigma_dist)
    pair = color_contrast * spatial
    np.fill_diagonal(pair, 0.0)
    sal = pair @ counts
    return sal * np.exp(-9.0 * (ax ** 2 + ay ** 2))


def border_regions(regions: np.ndarray, ratio: float = 0.02, threshold: float = 0.4) -> np.ndarray:
    """Cheng's ``GetBorderReg``: regions likely to be background because they hug the border.

    Band widths are ``round(ratio * w)`` columns and ``round(ratio * h)`` rows. For each region,
    ``xb`` counts its pixels in the left and right bands, ``yb`` in the top and bottom bands,
    and ``vX``, ``vY`` are the mean absolute deviations of its pixels' coordinates. The
    likelihood ``xb / (4 hb) / vY + yb / (4 wb) / vX`` above ``threshold`` marks the region.

    Returns:
        ``(H, W)`` bool: pixels of such regions and of the bands themselves.
    """
    h, w = regions.shape
    num_regions = int(regions.max()) + 1
    labels = regions.ravel()
    ys, xs = np.divmod(np.arange(h * w), w)
    n = np.bincount(labels, minlength=num_regions).astype(np.float64)
    mx = np.bincount(labels, weights=xs, minlength=num_regions) / n
    my = np.bincount(labels, weights=ys, minlength=num_regions) / n
    vx = np.bincount(labels, weights=np.abs(xs - mx[labels]), minlength=num_regions) / n + _EPS
    vy = np.bincount(labels, weights=np.abs(ys - my[labels]), minlength=num_regions) / n + _EPS

    w_gap, h_gap = int(np.rint(w * ratio)), int(np.rint(h * ratio))
    band = np.zeros((h, w), bool)
    xb = np.zeros(num_regions)
    yb = np.zeros(num_regions)
    if h_gap > 0:
        yb += np.bincount(regions[:h_gap].ravel(), minlength=num_regions)
        yb += np.bincount(regions[h - h_gap:].ravel(), minlength=num_regions)
        band[:h_gap] = band[h - h_gap:] = True
    if w_gap > 0:
        xb += np.bincount(regions[:, :w_gap].ravel(), minlength=num_regions)
        xb += np.bincount(regions[:, w - w_gap:].ravel(), minlength=num_regions)
        band[:, :w_gap] = band[:, w - w_gap:] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        x_term = np.where(xb > 0, xb / (4.0 * h_gap) / vy, 0.0) if h_gap > 0 else np.where(xb > 0, np.inf, 0.0)
        y_term = np.where(yb > 0, yb / (4.0 * w_gap) / vx, 0.0) if w_gap > 0 else np.where(yb > 0, np.inf, 0.0)
    likelihood = x_term + y_term
    return (likelihood / threshold > 1.0)[regions] | band


def smooth_by_histogram(sal: np.ndarray, quant: Quantization, color_dist: np.ndarray, delta: float) -> np.ndarray:
    """Cheng's ``SmoothByHist``: per colour the mean saliency of its pixels, min-max, colour-space
    smoothing weighted by pixel counts, back to pixels. Returns ``(H, W)`` float64."""
    color_sal = np.bincount(quant.index.ravel(), weights=sal.ravel(), minlength=quant.num_colors) / quant.counts
    color_sal = minmax(color_sal.astype(np.float32))
    color_sal = smooth_in_color_space(color_sal, color_dist, delta, weights=quant.counts)
    return color_sal.astype(np.float32)[quant.index].astype(np.float64)


def smooth_by_region(sal: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Cheng's ``SmoothByRegion``: per region the mean saliency, min-max, back to pixels."""
    labels = regions.ravel()
    num_regions = int(regions.max()) + 1
    mean = np.bincount(labels, weights=sal.ravel(), minlength=num_regions) / np.bincount(labels, minlength=num_regions)
    return minmax(mean)[regions]
