"""The exact labeller: Cheng et al.'s HC and RC saliency, SaliencyCut and the RC regions.

Functional core (one algorithm per module, numpy/OpenCV/numba, BGR float32 images in [0, 1]):
:func:`hc_saliency`, :func:`rc_saliency`, :func:`saliency_cut`; and the object most callers
want, :class:`Labeller`, which takes an RGB uint8 image and returns a
:class:`~saliencyssl.target.Target` at the image's size, with the working-size policy and the
parameter fingerprint that keys the cache.
"""

from saliencyssl.saliency.hc import hc_saliency
from saliencyssl.saliency.labeller import LABELLER_VERSION, Labeller, LabellerConfig, Labelling
from saliencyssl.saliency.rc import RCResult, rc_saliency
from saliencyssl.saliency.saliencycut import CUT_ENGINES, saliency_cut

__all__ = ["hc_saliency", "rc_saliency", "RCResult", "saliency_cut", "CUT_ENGINES", "Labeller", "LabellerConfig",
           "Labelling", "LABELLER_VERSION"]
