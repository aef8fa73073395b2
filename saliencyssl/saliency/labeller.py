"""The exact labeller: image in, :class:`~saliencyssl.target.Target` out.

:class:`Labeller` runs RC saliency, SaliencyCut and keeps RC's region segmentation, at a
*working size*, and resizes the results back to the input's size:

- default: an image whose shorter side is under ``min_side`` (64) is upscaled (bicubic) so
  that side becomes 64. Cheng's 200-pixel minimum segment makes the RC map all zero on 93% of
  32x32 CIFAR images (every segment touches the border and is suppressed); at 64 px two
  thirds get a mask;
- ``scale=F``: the image is resized by the factor F (the paper's 100% and 200%) and
  ``min_side`` is not applied;
- ``max_side=N``: photos whose longer side exceeds N are shrunk (the paper's "10% of the
  original" trick), after the ``min_side`` rule.

Every parameter, the working-size policy, the cut engine and :data:`LABELLER_VERSION` go into
:meth:`LabellerConfig.fingerprint`, the second half of every cache key.

Odd input never raises: an image under 8 px on its shorter side (as given, or at the working
size when ``scale`` shrinks it), or of one colour, gets an empty mask, a zero (finite) map and a single region.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from saliencyssl.imageio import to_rgb_uint8
from saliencyssl.saliency.params import CUT_ENGINES, T2_VALUES
from saliencyssl.target import Target, relabel_raster

#: Bump when a change to the algorithms changes their output, so old cache entries become misses.
#: "2": float32 colour sums and GMM densities, emptied GMM components dropped for good, the
#: two-colour RC map (all as the original C++; 5% of CIFAR-10 masks change, presence none).
LABELLER_VERSION = "2"
#: Images smaller than this (shorter side, in pixels) get an empty target.
TINY_SIDE = 8
#: Largest working size (pixels) a :class:`Labeller` labels by default. Labelling time grows faster
#: than the pixel count (about 1 s for a 481x321 photo on one core, 16 s at three times its side, minutes
#: for a 12-megapixel photo or a 64 x 64,000 strip), so a larger image is refused, not labelled for
#: minutes: shrink it with ``max_side`` (the paper's trick) or raise the budget. 2,097,152 = 2048 x 1024,
#: a 1,448 px square.
DEFAULT_MAX_PIXELS = 2048 * 1024
#: The largest budget that may be asked for: an 8,192 px square (67 M pixels), whose working arrays alone
#: take gigabytes; labelling it takes hours.
MAX_PIXELS_LIMIT = 8192 * 8192


class ImageTooLargeError(ValueError):
    """An image whose working size exceeds the labeller's pixel budget.

    Attributes:
        size: ``(height, width)`` of the image as given.
        working_size: ``(height, width)`` the labeller would run at.
        max_pixels: the budget.
    """

    def __init__(self, size: tuple[int, int], working_size: tuple[int, int], max_pixels: int):
        self.size, self.working_size, self.max_pixels = size, working_size, max_pixels
        super().__init__(f"a {size[1]}x{size[0]} image is labelled at {working_size[1]}x{working_size[0]} = "
                         f"{working_size[0] * working_size[1]:,} pixels, over the labeller's budget of "
                         f"{max_pixels:,}; shrink large images first (max_side) or raise the budget (max_pixels)")

    def __reduce__(self):  # rebuilt from its fields when a labelling worker sends it back
        return type(self), (self.size, self.working_size, self.max_pixels)


@dataclass(frozen=True)
class LabellerConfig:
    """Every parameter that determines a target (Cheng's defaults).

    Attributes:
        min_side: upscale images whose shorter side is below this (ignored when ``scale`` is set).
        scale: resize factor for the working size, or ``None``.
        max_side: shrink images whose longer side exceeds this, or ``None``.
        cut_engine: ``"faithful"`` (Cheng's GrabCut) or ``"opencv"`` (``cv2.grabCut``).
        sigma_dist, seg_k, seg_min_size, seg_sigma: RC parameters (``GetRC(img, 0.4, 50, 200, 0.5)``).
        t1, t2_values: SaliencyCut trimap thresholds.
    """

    min_side: int = 64
    scale: float | None = None
    max_side: int | None = None
    cut_engine: str = "faithful"
    sigma_dist: float = 0.4
    seg_k: float = 50.0
    seg_min_size: int = 200
    seg_sigma: float = 0.5
    t1: float = 0.1
    t2_values: tuple[float, ...] = field(default=T2_VALUES)

    def __post_init__(self) -> None:
        # Equal settings must give one fingerprint: ``scale=2`` (the API) and ``--scale 2.0`` (the
        # command line) are the same labeller, so every number is stored as its declared type.
        for name in ("min_side", "max_side", "seg_min_size"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (bool, str)) or not isinstance(value, numbers.Real) \
                        or not math.isfinite(value) or value != int(value):
                    raise ValueError(f"{name} must be a whole number of pixels, got {value!r}")
                object.__setattr__(self, name, int(value))
        for name in ("scale", "sigma_dist", "seg_k", "seg_sigma", "t1"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (bool, str)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                    raise ValueError(f"{name} must be a finite number, got {value!r}")
                object.__setattr__(self, name, float(value))
        if self.cut_engine not in CUT_ENGINES:
            raise ValueError(f"cut_engine must be one of {', '.join(CUT_ENGINES)}, got {self.cut_engine!r}")
        if self.scale is not None and not (0 < self.scale <= 16):
            raise ValueError(f"scale must be in (0, 16], got {self.scale}")
        if self.max_side is not None and self.max_side < TINY_SIDE:
            raise ValueError(f"max_side must be at least {TINY_SIDE}, got {self.max_side}")
        if self.min_side < 1:
            raise ValueError(f"min_side must be positive, got {self.min_side}")
        object.__setattr__(self, "t2_values", tuple(float(t) for t in self.t2_values))

    @classmethod
    def from_params(cls, params: dict) -> "LabellerConfig":
        """Inverse of :meth:`params` (the ``version`` key, and keys this version lacks, are ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k in names})

    def params(self) -> dict:
        """The parameters as a JSON-friendly dict, with the labeller version."""
        return {"version": LABELLER_VERSION, **asdict(self), "t2_values": list(self.t2_values)}

    def options(self) -> dict:
        """The parameters as :class:`LabellerConfig` keyword arguments (:meth:`params` without the
        version): what worker processes rebuild the labeller from."""
        options = self.params()
        options.pop("version")
        return options

    def fingerprint(self) -> str:
        """16 hex characters identifying these parameters and the labeller version."""
        blob = json.dumps(self.params(), sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=8).hexdigest()

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` the algorithms run at for an input of this size."""
        if self.scale is not None:
            factor = float(self.scale)
        else:
            factor = max(1.0, self.min_side / min(height, width))
        if self.max_side is not None and max(height, width) * factor > self.max_side:
            factor = self.max_side / max(height, width)
        return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


@dataclass
class Labelling:
    """Everything one labelling produced.

    Attributes:
        target: the exact target at the input's size.
        hc: ``(H, W)`` float32 HC map in [0, 1] at the input's size, when asked for.
        seconds: wall time per stage (``hc``, ``rc``, ``cut``, ``total``).
        working_size: ``(h, w)`` the algorithms ran at.
    """

    target: Target
    hc: np.ndarray | None
    seconds: dict[str, float]
    working_size: tuple[int, int]


class Labeller:
    """Cheng et al.'s HC, RC and SaliencyCut, faithful to the original C++ (CmCode, TPAMI).

    Args:
        config: a :class:`LabellerConfig`; keyword arguments override its fields.
        max_pixels: the largest working size (height x width) it labels; a larger one raises
            :class:`ImageTooLargeError` before any work. Not part of the fingerprint: it never
            changes a target, it only refuses.

    Example:
        >>> import skimage.data
        >>> labeller = Labeller()
        >>> target = labeller(skimage.data.coffee())  # (H, W, 3) uint8 RGB
        >>> target.shape
        (400, 600)
    """

    def __init__(self, config: LabellerConfig | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, **overrides):
        config = config or LabellerConfig()
        self.config = replace(config, **overrides) if overrides else config
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or \
                not TINY_SIDE ** 2 <= max_pixels <= MAX_PIXELS_LIMIT:
            raise ValueError(f"max_pixels must be a whole number from {TINY_SIDE ** 2} to {MAX_PIXELS_LIMIT:,}, got "
                             f"{max_pixels!r}")
        self.max_pixels = max_pixels

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def __call__(self, image: np.ndarray) -> Target:
        return self.label(image).target

    def label(self, image: np.ndarray, with_hc: bool = False) -> Labelling:
        """Label one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (other layouts are converted by
                :func:`saliencyssl.imageio.to_rgb_uint8`).
            with_hc: also compute the HC map.

        Raises:
            ImageTooLargeError: the working size exceeds :attr:`max_pixels`.
        """
        from saliencyssl.saliency.hc import hc_saliency
        from saliencyssl.saliency.rc import rc_saliency
        from saliencyssl.saliency.saliencycut import saliency_cut  # numba kernels: imported on first use

        start = time.perf_counter()
        image = to_rgb_uint8(image)
        h, w = image.shape[:2]
        seconds = {"hc": 0.0, "rc": 0.0, "cut": 0.0}
        if self._too_small(h, w):
            seconds["total"] = time.perf_counter() - start
            return Labelling(Target.empty(h, w), np.zeros((h, w), np.float32) if with_hc else None, seconds, (h, w))

        bgr, (wh, ww) = self.working_image(image)

        hc = None
        if with_hc:
            t = time.perf_counter()
            hc = hc_saliency(bgr)
            seconds["hc"] = time.perf_counter() - t
        t = time.perf_counter()
        rc = rc_saliency(bgr, sigma_dist=self.config.sigma_dist, seg_k=self.config.seg_k,
                         seg_min_size=self.config.seg_min_size, seg_sigma=self.config.seg_sigma)
        seconds["rc"] = time.perf_counter() - t
        t = time.perf_counter()
        mask = saliency_cut(bgr, rc.saliency, engine=self.config.cut_engine, t1=self.config.t1,
                            t2_values=self.config.t2_values)
        seconds["cut"] = time.perf_counter() - t

        saliency, regions = rc.saliency, rc.regions
        if (wh, ww) != (h, w):
            saliency, mask, regions, hc = _resize_back(saliency, mask, regions, hc, (h, w))
        target = Target.from_maps(saliency, mask, regions)
        seconds["total"] = time.perf_counter() - start
        return Labelling(target, hc, seconds, (wh, ww))

    def hc(self, image: np.ndarray) -> np.ndarray:
        """The HC map alone, computed at the working size like :meth:`label` does.

        Returns:
            ``(H, W)`` float32 in [0, 1] at the input's size.
        """
        import cv2

        from saliencyssl.saliency.hc import hc_saliency

        image = to_rgb_uint8(image)
        h, w = image.shape[:2]
        if self._too_small(h, w):
            return np.zeros((h, w), np.float32)
        bgr, size = self.working_image(image)
        hc = hc_saliency(bgr)
        if size != (h, w):
            shrink = size[0] * size[1] > h * w
            hc = np.clip(cv2.resize(hc, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR), 0, 1)
        return hc

    def _too_small(self, height: int, width: int) -> bool:
        """Under :data:`TINY_SIDE` on the shorter side as given or at the working size (``scale``
        can shrink an image below it): such images get an empty target."""
        return min(height, width) < TINY_SIDE or min(self.config.working_size(height, width)) < TINY_SIDE

    def working_image(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The RGB uint8 image at the working size as BGR float32 in [0, 1], and that size: what the
        algorithms of :meth:`label` and :meth:`hc` run on."""
        import cv2

        h, w = image.shape[:2]
        wh, ww = self.config.working_size(h, w)
        if wh * ww > self.max_pixels:
            raise ImageTooLargeError((h, w), (wh, ww), self.max_pixels)
        work = image
        if (wh, ww) != (h, w):
            interpolation = cv2.INTER_CUBIC if wh * ww > h * w else cv2.INTER_AREA
            work = cv2.resize(image, (ww, wh), interpolation=interpolation)
        return cv2.cvtColor(work, cv2.COLOR_RGB2BGR).astype(np.float32) / np.float32(255.0), (wh, ww)


def _resize_back(saliency, mask, regions, hc, size):
    """Results at the working size back to the input size (area / linear for maps, nearest for labels)."""
    import cv2

    h, w = size
    shrink = saliency.shape[0] * saliency.shape[1] > h * w
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    saliency = np.clip(cv2.resize(saliency.astype(np.float32), (w, h), interpolation=interpolation), 0, 1)
    mask = cv2.resize(mask.astype(np.float32), (w, h), interpolation=interpolation) >= 0.5
    regions = relabel_raster(cv2.resize(regions.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST))
    if hc is not None:
        hc = np.clip(cv2.resize(hc, (w, h), interpolation=interpolation), 0, 1)
    return saliency, mask, regions, hc
