"""The interface a target predictor (the surrogate) meets, so the router can use it.

A predictor takes a batch of images at its own side length and returns their targets in the
same layout the cache's frozen pack produces (:class:`~saliencyssl.target.TargetBatch`), on the
images' device. :class:`saliencyssl.surrogate.Surrogate` is the real one; tests use stand-ins.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from saliencyssl.target import TargetBatch


@runtime_checkable
class TargetPredictor(Protocol):
    """Anything with ``image_size``, ``fingerprint`` and a batched ``predict``.

    Attributes:
        image_size: side length of the square images it takes (and of the targets it returns).
        fingerprint: the labeller fingerprint whose targets it learned (or imitates).
    """

    image_size: int
    fingerprint: str

    def predict(self, images: torch.Tensor) -> TargetBatch:
        """Targets of a batch.

        Args:
            images: ``(B, 3, S, S)`` uint8 RGB on any device, ``S == image_size``.

        Returns:
            A :class:`TargetBatch` of ``(B, 1, S, S)`` tensors on ``images.device``.
        """
        ...
