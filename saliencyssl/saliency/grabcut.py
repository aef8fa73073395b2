"""Cheng's GrabCut engine (``CmSalCut``), which differs from OpenCV's ``cv2.grabCut``.

Paper: C. Rother, V. Kolmogorov and A. Blake, "GrabCut: Interactive Foreground Extraction using
Iterated Graph Cuts", SIGGRAPH 2004; Cheng et al.'s variant (TPAMI 2015). Reference code: CmCode
(https://github.com/MCG-NKU/CmCode), ``CmLib/Saliency/CmSalCut.cpp``.

The state is a trimap (background / unknown / foreground) and a soft segmentation in [0, 1].
:meth:`SalGrabCut.fit_gmms` builds a foreground colour GMM weighted by the segmentation and a
background GMM weighted by ``1 - segmentation`` (on the first round the segmentation *is* the
saliency map, so the first fit is weighted by saliency). :meth:`SalGrabCut.refine_once`:

(a) refines the foreground GMM (reassign pixels, refit with the segmentation as weights);
(b) rebuilds the background GMM from scratch with weights ``1 - segmentation``;
(c) t-links: an unknown pixel gets source capacity ``-log P_bg(x)`` and sink capacity
    ``-log P_fg(x)``; known pixels are tied to their side with ``L = 8 lambda + 1``;
(d) n-links to the right, down-right, down and down-left neighbours,
    ``lambda c exp(-beta |dLab|^2)`` with ``lambda = 50``, ``c = 1`` (or ``1/sqrt 2`` on
    diagonals) and ``beta = 0.5 * edges / sum |dLab|^2``;
(e) max-flow (:func:`saliencyssl.saliency.maxflow.grid_maxflow`); an unknown pixel is
    foreground when it cannot reach the sink in the residual graph.

A refinement does nothing when either GMM's total weight is under 50 pixels.
"""

from __future__ import annotations

import numpy as np

from saliencyssl.saliency.gmm import ColorGMM
from saliencyssl.saliency.maxflow import GRID_DIRECTIONS, grid_maxflow

BACKGROUND, UNKNOWN, FOREGROUND = 0, 1, 2
LAMBDA = 50.0
HARD_LINK = 8 * LAMBDA + 1
_MAX_LOG_RATIO = 1e4
_MIN_GMM_WEIGHT = 50.0


def neighbour_capacities(image_lab: np.ndarray, lam: float = LAMBDA) -> np.ndarray:
    """``(4, H, W)`` n-link capacities for :data:`GRID_DIRECTIONS` (right, down-right, down, down-left).

    Args:
        image_lab: ``(H, W, 3)`` float Lab image.
    """
    h, w = image_lab.shape[:2]
    lab = image_lab.astype(np.float64)
    sq = np.zeros((4, h, w))
    valid = np.zeros((4, h, w), bool)
    for d, (dy, dx) in enumerate(GRID_DIRECTIONS):
        ys = slice(0, h - dy)
        xs = slice(max(0, -dx), w - max(0, dx))
        yt = slice(dy, h)
        xt = slice(max(0, dx), w + min(0, dx))
        diff = lab[ys, xs] - lab[yt, xt]
        sq[d, ys, xs] = (diff * diff).sum(-1)
        valid[d, ys, xs] = True
    edges = int(valid.sum())
    total = float(sq[valid].sum())
    beta = 0.5 * edges / total if total > 0 else 0.0
    scale = np.array([1.0, 1.0 / np.sqrt(2.0), 1.0, 1.0 / np.sqrt(2.0)])[:, None, None]
    caps = lam * scale * np.exp(-beta * sq)
    caps[~valid] = 0.0
    return caps


class SalGrabCut:
    """One GrabCut problem on an image crop.

    Args:
        image_bgr: ``(H, W, 3)`` float32 BGR in [0, 1] (the crop).
    """

    def __init__(self, image_bgr: np.ndarray):
        import cv2

        self.shape = image_bgr.shape[:2]
        self.pixels = image_bgr.reshape(-1, 3).astype(np.float64)
        lab = cv2.cvtColor(np.ascontiguousarray(image_bgr, np.float32), cv2.COLOR_BGR2Lab)
        self.ncap = neighbour_capacities(lab)
        self.fg_gmm = ColorGMM(5)
        self.bg_gmm = ColorGMM(5)
        self.trimap = np.full(self.shape, UNKNOWN, np.uint8)
        self.segmentation = np.zeros(self.shape, np.float64)

    def initialize_from_saliency(self, saliency: np.ndarray, t1: float, t2: float) -> None:
        """Trimap from a saliency map: ``< t1`` background, ``> t2`` foreground; segmentation = saliency."""
        self.segmentation = saliency.astype(np.float64).copy()
        self.trimap = np.full(self.shape, UNKNOWN, np.uint8)
        self.trimap[saliency < t1] = BACKGROUND
        self.trimap[saliency > t2] = FOREGROUND

    def initialize_from_mask(self, mask: np.ndarray) -> None:
        """Trimap from an 8-bit mask: ``< 70`` background, ``> 200`` foreground; segmentation 1 where ``>= 70``."""
        self.trimap = np.full(self.shape, UNKNOWN, np.uint8)
        self.trimap[mask < 70] = BACKGROUND
        self.trimap[mask > 200] = FOREGROUND
        self.segmentation = (mask >= 70).astype(np.float64)

    def fit_gmms(self) -> None:
        seg = self.segmentation.ravel()
        self.fg_gmm.build(self.pixels, seg)
        self.bg_gmm.build(self.pixels, 1.0 - seg)

    def refine_once(self) -> int:
        """One refinement; returns how many pixels changed side (0 when the GMMs are too light)."""
        if self.fg_gmm.total_weight < _MIN_GMM_WEIGHT or self.bg_gmm.total_weight < _MIN_GMM_WEIGHT:
            return 0
        seg = self.segmentation.ravel()
        self.fg_gmm.refine(self.pixels, seg)
        self.bg_gmm.build(self.pixels, 1.0 - seg)

        trimap = self.trimap.ravel()
        unknown = trimap == UNKNOWN
        tcap = np.zeros(trimap.size)
        if unknown.any():
            px = self.pixels[unknown]
            p_fg = self.fg_gmm.density(px)
            p_bg = self.bg_gmm.density(px)
            with np.errstate(divide="ignore", invalid="ignore"):
                log_ratio = np.log(p_fg) - np.log(p_bg)  # = (-log P_bg) - (-log P_fg)
            log_ratio[(p_fg == 0) & (p_bg == 0)] = 0.0
            tcap[unknown] = np.clip(np.nan_to_num(log_ratio, nan=0.0, posinf=_MAX_LOG_RATIO, neginf=-_MAX_LOG_RATIO),
                                    -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        tcap[trimap == BACKGROUND] = -HARD_LINK
        tcap[trimap == FOREGROUND] = HARD_LINK
        _, source_side = grid_maxflow(tcap.reshape(self.shape), self.ncap)

        new = np.where(self.trimap == BACKGROUND, 0.0,
                       np.where(self.trimap == FOREGROUND, 1.0, source_side.astype(np.float64)))
        changed = int(np.count_nonzero(np.abs(new - self.segmentation) > 0.1))
        self.segmentation = new
        return changed

    def mask(self) -> np.ndarray:
        """``(H, W)`` uint8 0/255: segmentation > 0.5."""
        return np.where(self.segmentation > 0.5, 255, 0).astype(np.uint8)
