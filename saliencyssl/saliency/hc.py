"""Histogram-based contrast (HC) saliency, Cheng et al. (CVPR 2011, TPAMI 2015).

Reference code: CmCode (https://github.com/MCG-NKU/CmCode), ``GetHC`` in ``CmLib/Saliency/CmSaliencyRC.cpp``.

A colour is salient when it differs from the colours the rest of the image is made of:
``S(c_i) = sum_j f_j D(c_i, c_j)`` over the quantised colours (:mod:`.quantize`), with ``f_j``
the share of pixels of colour ``j`` and ``D`` the Lab distance; then colour-space smoothing over
the quarter of colours nearest to each, mapped back to pixels, a 3x3 Gaussian and min-max.
"""

from __future__ import annotations

import numpy as np

from saliencyssl.saliency.quantize import minmax, quantize, smooth_in_color_space


def hc_saliency(image_bgr: np.ndarray) -> np.ndarray:
    """HC saliency map.

    Args:
        image_bgr: ``(H, W, 3)`` float32 BGR in [0, 1].

    Returns:
        ``(H, W)`` float32 in [0, 1] (all zeros for a uniform image).
    """
    import cv2

    quant = quantize(image_bgr)
    dist = quant.distances()
    weights = quant.counts / quant.counts.sum()
    color_sal = dist @ weights
    color_sal = smooth_in_color_space(color_sal, dist, delta=0.25)
    sal = color_sal[quant.index].astype(np.float32)
    sal = cv2.GaussianBlur(sal, (3, 3), 0)
    return minmax(sal).astype(np.float32)
