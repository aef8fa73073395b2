"""The exact labeller: Cheng et al.'s HC and RC saliency, SaliencyCut and the RC regions.

Functional core (one algorithm per module, numpy/OpenCV/numba, BGR float32 images in [0, 1]):
:func:`hc_saliency`, :func:`rc_saliency`, :func:`saliency_cut`; and the object most callers
want, :class:`Labeller`, which takes an RGB uint8 image and returns a
:class:`~saliencyssl.target.Target` at the image's size, with the working-size policy and the
parameter fingerprint that keys the cache.
"""

from saliencyssl.saliency.hc import hc_saliency
from saliencyssl.saliency.labeller import (DEFAULT_MAX_PIXELS, LABELLER_VERSION, ImageTooLargeError, Labeller,
                                           LabellerConfig, Labelling)
from saliencyssl.saliency.params import CUT_ENGINES
from saliencyssl.saliency.rc import RCResult, rc_saliency


def __getattr__(name: str):
    # SaliencyCut needs numba; import it on first use so that the rest (configs, fingerprints,
    # HC, RC) works where numba is absent (e.g. a GPU machine that only trains).
    if name == "saliency_cut":
        from saliencyssl.saliency.saliencycut import saliency_cut

        return saliency_cut
    raise AttributeError(f"module 'saliencyssl.saliency' has no attribute {name!r}")

__all__ = ["hc_saliency", "rc_saliency", "RCResult", "saliency_cut", "CUT_ENGINES", "Labeller", "LabellerConfig",
           "ImageTooLargeError", "DEFAULT_MAX_PIXELS",
           "Labelling", "LABELLER_VERSION"]
