"""Weighted k-nearest-neighbour classification on frozen features (lightly's benchmark kNN).

The kNN protocol asks whether images of one class lie *near each other* in feature space, with
no training at all: features are L2-normalised, each test image finds its ``k`` most
cosine-similar labelled training images, and each neighbour votes for its class with weight
``exp(similarity / temperature)`` (Wu et al. 2018, as in lightly's and MoCo's monitors). It
uses :func:`lightly.utils.benchmarking.knn_predict` with lightly's benchmark settings ``k = 200``
and ``temperature = 0.1``. When fewer than ``k`` labelled images exist (small label fractions),
all of them vote: ``k`` is lowered to the bank size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: lightly's benchmark settings.
DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1
#: The most similarities one block of test images holds (float32): 1,024 test images against a bank of 65,536,
#: or 52 against ImageNet's 1.28 M (1,024 against it would take 5 GB at once).
MAX_BLOCK_VALUES = 1 << 26


def knn_predictions(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                    num_classes: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                    batch_size: int = 1024) -> np.ndarray:
    """Top-1 kNN predictions.

    Args:
        train_features: ``(M, D)`` float features of the labelled bank.
        train_labels: ``(M,)`` integer labels in ``0..num_classes-1``.
        test_features: ``(T, D)`` float features to classify.
        num_classes: number of classes.
        k: neighbours (capped at ``M``).
        temperature: similarity temperature (> 0).
        batch_size: test images per similarity block at most; fewer for a large bank, so that a block holds at
            most :data:`MAX_BLOCK_VALUES` similarities (about 256 MB).

    Returns:
        ``(T,)`` int64 predicted labels.
    """
    from lightly.utils.benchmarking import knn_predict

    if len(train_features) == 0:
        raise ValueError("kNN needs at least one labelled training image")
    if temperature <= 0:
        raise ValueError(f"kNN temperature must be positive, got {temperature}")
    bank = F.normalize(torch.as_tensor(np.asarray(train_features), dtype=torch.float32), dim=1).t().contiguous()
    bank_labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    test = F.normalize(torch.as_tensor(np.asarray(test_features), dtype=torch.float32), dim=1)
    k = int(min(int(k), bank.shape[1]))
    block = max(1, min(int(batch_size), MAX_BLOCK_VALUES // bank.shape[1]))
    out = []
    with torch.no_grad():
        for start in range(0, len(test), block):
            ranked = knn_predict(test[start:start + block], bank, bank_labels, num_classes=int(num_classes),
                                 knn_k=k, knn_t=float(temperature))
            out.append(ranked[:, 0])
    if not out:
        return np.zeros(0, np.int64)
    return torch.cat(out).numpy().astype(np.int64)


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, num_classes: int, k: int = DEFAULT_K,
                 temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Top-1 test accuracy in [0, 1] of :func:`knn_predictions`."""
    predictions = knn_predictions(train_features, train_labels, test_features, num_classes, k, temperature)
    return float(np.mean(predictions == np.asarray(test_labels)))


__all__ = ["DEFAULT_K", "DEFAULT_TEMPERATURE", "knn_predictions", "knn_accuracy"]
