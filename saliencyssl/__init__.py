"""saliency-ssl: Cheng et al.'s SaliencyCut as a cheap augmentation for contrastive self-supervised learning."""

__version__ = "0.1.0"
