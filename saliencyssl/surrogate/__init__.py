"""The Pix2Pix surrogate of the exact labeller: image in, target channels out, on any device.

:class:`Surrogate` (load, save, batched ``predict`` meeting the router's
:class:`~saliencyssl.augment.TargetPredictor`), the networks (:class:`UNetGenerator`,
:class:`PatchDiscriminator` on :class:`Architecture`), the losses, the image/target pairs from a
cache (:func:`load_pairs`) and the training loop (:class:`SurrogateTrainer`).
"""

from saliencyssl.surrogate.losses import GANLoss, LossWeights, TargetLoss
from saliencyssl.surrogate.model import CHECKPOINT_FORMAT, Surrogate, SurrogateCheckpointError
from saliencyssl.surrogate.networks import Architecture, PatchDiscriminator, UNetGenerator, unet_depth
from saliencyssl.surrogate.pairs import NoPairsError, PairSet, held_out_mask, load_pairs
from saliencyssl.surrogate.training import SurrogateTrainer, TrainConfig, TrainConfigError, TrainResult

__all__ = ["Surrogate", "SurrogateCheckpointError", "CHECKPOINT_FORMAT", "Architecture", "UNetGenerator",
           "PatchDiscriminator", "unet_depth", "GANLoss", "TargetLoss", "LossWeights", "PairSet", "load_pairs",
           "NoPairsError", "held_out_mask", "SurrogateTrainer", "TrainConfig", "TrainConfigError", "TrainResult"]
