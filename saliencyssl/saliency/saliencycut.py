"""SaliencyCut: a salient-object mask from the RC map by iterated GrabCut (Cheng's ``CutObjs``).

Paper: M.-M. Cheng, N. J. Mitra, X. Huang, P. H. S. Torr and S.-M. Hu, "Global Contrast based
Salient Region Detection", TPAMI 37(3), 2015 (SaliencyCut, its section 5). Reference code:
CmCode (https://github.com/MCG-NKU/CmCode), ``CmLib/Saliency/CmSalCut.cpp``.

:func:`saliency_cut` blurs the RC map (9x9 Gaussian), min-max normalises it and tries
``t2 = 0.9, 0.7, 0.5, 0.3`` (``t1 = 0.1``) until :func:`cut_objects` returns a mask. One attempt:

1. zero a 2% band on every side and every value not above ``t1``;
2. working mask: the 8-bit map with values not above 70 zeroed, reduced to its 4-connected
   component of largest sum, which must exceed 0.5% of ``area * 255`` (else the attempt fails);
3. crop to that component's bounding box plus 20 pixels;
4. trimap ``sal < t1`` background, ``sal > t2`` foreground; segmentation = ``sal``;
5. up to 4 rounds: fit the GMMs, refine up to 8 times while more than 50 pixels change, take
   the largest 4-connected component of the mask (it must exceed 2% of the crop, else fail);
   stop after round 4 or when fewer than 10 pixels differ from the previous working mask;
   otherwise dilate and erode the mask 5 times (3x3) into the next trimap
   (``< 70`` background, ``> 200`` foreground).

Two engines run the GrabCut steps: ``"faithful"`` (:class:`~.grabcut.SalGrabCut`, Cheng's
own engine, the default) and ``"opencv"`` (``cv2.grabCut`` in the same trimap loop: agrees less
with the C++ masks, and is slower than the compiled faithful engine on the benchmark photos).
"""

from __future__ import annotations

import numpy as np

from saliencyssl.saliency.grabcut import BACKGROUND, FOREGROUND, UNKNOWN, SalGrabCut
from saliencyssl.saliency.params import CUT_ENGINES, T2_VALUES
from saliencyssl.saliency.quantize import minmax


def saliency_cut(image_bgr: np.ndarray, rc_map: np.ndarray, engine: str = "faithful", t1: float = 0.1,
                 t2_values: tuple[float, ...] = T2_VALUES) -> np.ndarray:
    """The SaliencyCut mask of an image.

    Args:
        image_bgr: ``(H, W, 3)`` float32 BGR in [0, 1].
        rc_map: ``(H, W)`` float32 RC saliency in [0, 1].
        engine: ``"faithful"`` or ``"opencv"``.

    Returns:
        ``(H, W)`` bool mask; all False when no attempt found an object.
    """
    import cv2

    if engine not in CUT_ENGINES:
        raise ValueError(f"unknown cut engine {engine!r}; choose one of {', '.join(CUT_ENGINES)}")
    sal = minmax(cv2.GaussianBlur(rc_map.astype(np.float32), (9, 9), 0)).astype(np.float32)
    for t2 in t2_values:
        mask = cut_objects(image_bgr, sal, t1, t2, engine=engine)
        if mask is not None:
            return mask > 0
    return np.zeros(rc_map.shape, bool)


def largest_component(mask: np.ndarray, min_ratio: float) -> np.ndarray | None:
    """Cheng's ``GetNZRegionsLS``: the 4-connected non-zero component with the largest sum of values.

    Args:
        mask: ``(H, W)`` uint8.
        min_ratio: the component's sum must exceed ``min_ratio * H * W * 255``.

    Returns:
        ``(H, W)`` uint8 0/255 mask of that component, or ``None``.
    """
    import cv2

    count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    if count <= 1:
        return None
    sums = np.bincount(labels.ravel(), weights=mask.ravel().astype(np.float64), minlength=count)[1:]
    best = int(np.flatnonzero(sums == sums.max())[-1])  # ties: the later region, as the C++ sort does
    if sums[best] <= min_ratio * mask.shape[0] * mask.shape[1] * 255:
        return None
    return np.where(labels == best + 1, 255, 0).astype(np.uint8)


def mask_range(mask: np.ndarray, extend: int, threshold: int = 10) -> tuple[slice, slice]:
    """Cheng's ``GetMaskRange``: bounding box of pixels above ``threshold`` plus ``extend`` pixels."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > threshold)
    y0, y1 = max(int(ys.min()) - extend, 0), min(int(ys.max()) + extend + 1, h)
    x0, x1 = max(int(xs.min()) - extend, 0), min(int(xs.max()) + extend + 1, w)
    return slice(y0, y1), slice(x0, x1)


def _band(h: int, w: int, ratio: float = 0.02) -> np.ndarray:
    bw, bh = int(np.rint(ratio * w)), int(np.rint(ratio * h))
    band = np.ones((h, w), bool)
    band[bh:h - bh, bw:w - bw] = False
    return band


def _expand(mask: np.ndarray, band: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Next trimap image: half the dilated plus half the eroded mask (8-bit), band zeroed."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    big = cv2.dilate(mask, kernel, iterations=iterations)
    small = cv2.erode(mask, kernel, iterations=iterations)
    if int(small.sum()) < 255 * 50:
        small = mask
    trimap = np.rint(big.astype(np.float64) * 0.5 + small.astype(np.float64) * 0.5).astype(np.uint8)
    trimap[band] = 0
    return trimap


def cut_objects(image_bgr: np.ndarray, sal: np.ndarray, t1: float, t2: float, engine: str = "faithful",
                extend: int = 20, rounds: int = 4) -> np.ndarray | None:
    """One SaliencyCut attempt (Cheng's ``CutObjs``); ``None`` when it finds no object.

    Args:
        image_bgr: ``(H, W, 3)`` float32 BGR in [0, 1].
        sal: ``(H, W)`` float32 normalised saliency in [0, 1].

    Returns:
        ``(H, W)`` uint8 0/255 mask, or ``None``.
    """
    h, w = sal.shape
    band = _band(h, w)
    sal = sal.copy()
    sal[band] = 0
    sal[sal <= t1] = 0
    work = np.clip(np.rint(sal.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    work[work <= 70] = 0
    work = largest_component(work, 0.005)
    if work is None:
        return None
    ys, xs = mask_range(work, extend)
    sal, band, work = sal[ys, xs], band[ys, xs], work[ys, xs]
    crop = np.ascontiguousarray(image_bgr[ys, xs])

    cutter = SalGrabCut(crop) if engine == "faithful" else _OpenCVGrabCut(crop)
    cutter.initialize_from_saliency(sal, t1, t2)
    result = None
    for round_index in range(rounds):
        cutter.fit_gmms()
        changed, times = 1000, 8
        while changed > 50 and times > 0:
            times -= 1
            changed = cutter.refine_once()
        result = largest_component(cutter.mask(), 0.02)
        if result is None:
            return None
        if round_index == rounds - 1:
            break
        differs = int(np.count_nonzero(result != work))
        trimap = _expand(result, band)
        if differs < 10:
            break
        cutter.initialize_from_mask(trimap)
        work = result
    full = np.zeros((h, w), np.uint8)
    full[ys, xs] = result
    return full


class _OpenCVGrabCut:
    """The same interface as :class:`SalGrabCut`, driving ``cv2.grabCut`` (OpenCV's engine).

    Each :meth:`refine_once` runs one OpenCV GrabCut iteration from the current trimap and
    segmentation (unknown pixels are probably-foreground where the segmentation is above 0.5).
    After :meth:`fit_gmms` the next iteration initialises OpenCV's GMMs from that mask
    (``GC_INIT_WITH_MASK``); later ones resume with them (``GC_EVAL``).
    """

    def __init__(self, image_bgr: np.ndarray):
        self.image = np.clip(np.rint(image_bgr * 255), 0, 255).astype(np.uint8)
        self.shape = image_bgr.shape[:2]
        self.trimap = np.full(self.shape, UNKNOWN, np.uint8)
        self.segmentation = np.zeros(self.shape)
        self._bgd = np.zeros((1, 65), np.float64)
        self._fgd = np.zeros((1, 65), np.float64)
        self._init = True

    initialize_from_saliency = SalGrabCut.initialize_from_saliency
    initialize_from_mask = SalGrabCut.initialize_from_mask
    mask = SalGrabCut.mask

    def fit_gmms(self) -> None:
        self._init = True

    def refine_once(self) -> int:
        import cv2

        gc = np.where(self.segmentation > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        gc[self.trimap == BACKGROUND] = cv2.GC_BGD
        gc[self.trimap == FOREGROUND] = cv2.GC_FGD
        kinds = set(np.unique(gc).tolist())
        if not ({cv2.GC_BGD, cv2.GC_PR_BGD} & kinds) or not ({cv2.GC_FGD, cv2.GC_PR_FGD} & kinds):
            return 0  # OpenCV needs samples of both sides
        try:
            cv2.grabCut(self.image, gc, None, self._bgd, self._fgd, 1,
                        cv2.GC_INIT_WITH_MASK if self._init else cv2.GC_EVAL)
        except cv2.error:
            return 0
        self._init = False
        new = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float64)
        changed = int(np.count_nonzero(np.abs(new - self.segmentation) > 0.1))
        self.segmentation = new
        return changed
