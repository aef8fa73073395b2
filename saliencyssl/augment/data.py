"""Training data: images at one size, their content hashes, and cache reads in DataLoader workers.

Two ways to feed the router, for two sizes of data set:

- **preloaded** (the default, and what pretraining uses): :meth:`TrainingImages.stack`
  holds every image as one ``(N, 3, S, S)`` uint8 tensor (pinned, or on the GPU) and batches are
  gathered by index; targets come from a :class:`~saliencyssl.augment.pack.FrozenPack`.
- **streaming**: :class:`TrainingImages` is a map-style ``Dataset``; wrapped in
  :class:`CachedTargets`, each item also carries its target read from the cache, so several
  DataLoader workers read one cache directory (each opens its own handle). A damaged or
  missing entry comes out as ``present = False`` and is never rendered.

Both hash each image once, when the underlying :class:`~saliencyssl.datasets.ImageSet` is
indexed, never per iteration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from saliencyssl.datasets import ImageSet, check_image_size, fit_square, open_image_set, target_at_size


class TrainingImages(Dataset):
    """An :class:`ImageSet` at one square size, as a torch dataset.

    Args:
        images: an :class:`ImageSet`, or a path for :func:`open_image_set`.
        image_size: side length ``S`` every image is brought to (:func:`fit_square`).

    Items are dicts: ``image`` ``(3, S, S)`` uint8 RGB, ``index`` int, ``label`` int (``-1``
    when unlabelled), ``hash`` str (content hash of the decoded original).
    """

    def __init__(self, images: ImageSet | str, image_size: int):
        self.images = images if isinstance(images, ImageSet) else open_image_set(images)
        if len(self.images) == 0:
            raise ValueError(f"{self.images.root} holds no images")
        self.image_size = check_image_size(image_size, "image_size")
        self._stack: torch.Tensor | None = None

    @property
    def hashes(self) -> list[str]:
        """Content hash of every image, computed when first asked for (a run without targets never asks, and
        hashing decodes every image once more than the stack does)."""
        return self.images.hashes(progress=True)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        return self.images.labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = fit_square(self.images.image(index), self.image_size)
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "index": int(index),
                "label": int(self.images.labels[index]), "hash": self.hashes[index]}

    def stack(self, device: str | torch.device = "cpu", pin: bool = False) -> torch.Tensor:
        """Every image as one ``(N, 3, S, S)`` uint8 tensor on ``device`` (decoded once; a copy in this process's
        memory is kept only when ``device`` is the CPU, so a run on a GPU does not hold the data set twice)."""
        stack = self._stack if self._stack is not None else self.images.stack(self.image_size, progress=True)
        out = stack.to(device)
        self._stack = stack if out.device.type == "cpu" else None
        if pin and out.device.type == "cpu" and torch.cuda.is_available():
            out = out.pin_memory()
        return out


class CachedTargets(Dataset):
    """:class:`TrainingImages` items plus their targets from a cache (for DataLoader workers).

    Each item gains ``present`` (bool) and ``channels`` (``(3, S, S)`` float32, zeros when
    absent) and ``regions`` (``(S, S)`` int64). The cache handle is reopened in each worker
    process (``TargetCache`` pickles as its path and fingerprint).
    """

    def __init__(self, images: TrainingImages, cache):
        self.images = images
        self.cache = cache

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        size = self.images.image_size
        target = self.cache.get(item["hash"])
        if target is None:
            item["present"] = False
            item["channels"] = torch.zeros(3, size, size)
            item["regions"] = torch.zeros(size, size, dtype=torch.int64)
        else:
            target = target_at_size(target, size)
            item["present"] = True
            item["channels"] = torch.from_numpy(target.channels())
            item["regions"] = torch.from_numpy(target.regions.astype(np.int64))
        return item
