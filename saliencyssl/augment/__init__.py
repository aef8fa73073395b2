"""From targets to training views: the router, the frozen pack, the renderer and the policies.

Per batch: :class:`TargetRouter` serves targets from the :class:`FrozenPack` (cache), the
surrogate or the exact labeller; :class:`SSLAugmentation` renders the view drawn from the target
(:class:`SaliencyView`: painted segments, cut-outs, the saliency map, or DiLo-style composites),
applies the Kornia SSL augmentations of a policy (:func:`parse_policy`, :data:`PRESETS`) --
with ContrastiveCrop-style crops guided by the target's box (:mod:`saliencyssl.augment.guided`)
where the policy says so -- and can return the targets carried through each view's geometry,
all on the training device.
"""

from saliencyssl.augment.data import CachedTargets, TrainingImages
from saliencyssl.datasets import target_at_size
from saliencyssl.augment.guided import BOX_SOURCES, guide_crop_parameters, target_boxes
from saliencyssl.augment.pack import FrozenPack, PackReport
from saliencyssl.augment.policy import PRESETS, PolicyConfig, SSLAugmentation, parse_policy, policy_summary
from saliencyssl.augment.predictor import TargetPredictor
from saliencyssl.augment.render import BACKGROUNDS, DEFAULT_PALETTE, VIEW_KINDS, SaliencyView, render_views
from saliencyssl.augment.router import (SOURCE_ORDERS, MissingPieceError, SourceCounters, TargetRouter,
                                        parse_sources)

__all__ = ["TrainingImages", "CachedTargets", "target_at_size", "FrozenPack", "PackReport", "PRESETS", "PolicyConfig",
           "SSLAugmentation", "parse_policy", "policy_summary", "TargetPredictor", "SaliencyView", "render_views",
           "VIEW_KINDS", "DEFAULT_PALETTE", "TargetRouter", "SourceCounters", "MissingPieceError", "parse_sources",
           "SOURCE_ORDERS", "BACKGROUNDS", "BOX_SOURCES", "target_boxes", "guide_crop_parameters"]
