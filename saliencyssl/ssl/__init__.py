"""Contrastive self-supervised learning on a ResNet-18: eight methods on lightly's losses and heads.

:func:`build_method` (one registry, :data:`METHODS`) builds SimCLR, SimSiam, BYOL, MoCo v2,
SwAV, Barlow Twins, or DetCon-S / DetCon-B (:mod:`~saliencyssl.ssl.detcon`: a contrastive loss
over mask-pooled features, which needs each view's warped targets) around
:func:`~saliencyssl.ssl.backbone.resnet18_backbone`;
:func:`build_optimizer` gives lightly's CIFAR-10 recipe; :mod:`saliencyssl.app.pretrain` is the
one training loop they all share.
"""

from saliencyssl.ssl.backbone import load_backbone, resnet18_backbone, save_backbone, to_model_input, uses_cifar_stem
from saliencyssl.ssl.barlowtwins import BarlowTwins
from saliencyssl.ssl.byol import BYOL
from saliencyssl.ssl.detcon import DetConBYOL, DetConLoss, DetConSimCLR
from saliencyssl.ssl.method import OptimizerRecipe, SSLMethod
from saliencyssl.ssl.moco import MoCo
from saliencyssl.ssl.optim import build_optimizer
from saliencyssl.ssl.registry import METHODS, build_method
from saliencyssl.ssl.simclr import SimCLR
from saliencyssl.ssl.simsiam import SimSiam
from saliencyssl.ssl.swav import SwAV

__all__ = ["SSLMethod", "OptimizerRecipe", "SimCLR", "SimSiam", "BYOL", "MoCo", "SwAV", "BarlowTwins", "DetConSimCLR",
           "DetConBYOL", "DetConLoss", "METHODS",
           "build_method", "build_optimizer", "resnet18_backbone", "load_backbone", "save_backbone",
           "to_model_input", "uses_cifar_stem"]
