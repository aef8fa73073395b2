"""Masks for the downstream protocol: paired data, a fixed split, labelled batches, scores and floors.

What the segmentation (:mod:`~saliencyssl.eval.segmentation`) and instance segmentation
(:mod:`~saliencyssl.eval.detection`) models share, so neither imports the other:

- :func:`load_mask_pairs` pairs each image with its binary mask (same relative path and stem,
  ``.png``; :func:`~saliencyssl.imageio.read_mask` reads 0/255, 0/1, 16-bit, index and colour masks) and
  :func:`to_arrays` brings both to ``S x S`` with the same
  :func:`~saliencyssl.datasets.fit_square` geometry (masks with nearest-neighbour);
- :func:`split_by_hash` fixes the test split by the images' content hashes, so it does not
  depend on file names, order or seed;
- :class:`SegmentTrainConfig` and :func:`labelled_batches`: steps, batches and flips over the
  labelled subset, the same for every model with the same seed;
- :func:`probability_scores` gives per-image foreground IoU and F-measure (beta^2 = 0.3, the
  salient-object-detection convention) of thresholded predictions; :func:`prior_baselines` the
  scores of two image-blind predictions, the floor a trained model should clear.

Scores are computed at the model's ``S x S`` resolution on the centre crop that ``fit_square``
keeps, not at each image's full resolution.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from saliencyssl.datasets import ImageSet, fit_square, open_image_set
from saliencyssl.imageio import read_mask
from saliencyssl.metrics import F_BETA2, prior_masks
from saliencyssl.metrics import mask_scores as _binary_scores

#: Probability above which a pixel counts as foreground.
THRESHOLD = 0.5

#: How :func:`to_arrays` samples a mask when shrinking it: a run record names it, so scores made
#: under an earlier rule (each block's corner pixel) are not taken for current ones.
MASK_SAMPLING = "nearest, block centre"


@dataclass
class MaskPairs:
    """Images and their binary masks.

    Attributes:
        images: the image set (names are paths relative to the image folder).
        masks: one ``(H, W)`` bool array per image, the same size as the image; True = foreground.
        mask_paths: where each mask came from.
    """

    images: ImageSet
    masks: list[np.ndarray]
    mask_paths: list[Path]

    def __len__(self) -> int:
        return len(self.images)

    def digest(self) -> str:
        """A digest of what the pairs hold: each image's name and content hash and its mask's pixels, so a run
        record tells a mask (or image) changed in place from the one it was scored with."""
        h = hashlib.blake2b(digest_size=16)
        for name, image_hash, mask in zip(self.images.names, self.images.hashes(), self.masks):
            h.update(f"{name}\0{image_hash}\0{mask.shape[0]}x{mask.shape[1]}\0".encode())
            h.update(np.packbits(np.asarray(mask, bool)).tobytes())
        return h.hexdigest()


def load_mask_pairs(images_dir: str | Path, masks_dir: str | Path) -> MaskPairs:
    """Pair every image below ``images_dir`` with ``masks_dir/<same relative path>.png``.

    Raises:
        FileNotFoundError: a folder is missing, or some images have no mask (the message names them).
        ValueError: a mask's size differs from its image's.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"mask folder {masks_dir} does not exist or is not a folder; give the folder of binary "
                                f"mask PNGs named like the images")
    images = open_image_set(images_dir, keep_decoded=False)
    mask_paths = [masks_dir / Path(name).with_suffix(".png") for name in images.names]
    missing = [name for name, path in zip(images.names, mask_paths) if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(images)} images in {images_dir} have no mask in {masks_dir} "
                                f"(expected <same name>.png): {shown}; add their masks or move the images out")
    masks = []
    for i, path in enumerate(mask_paths):
        mask = read_mask(path)
        shape = images.image(i).shape[:2]
        if mask.shape != shape:
            raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but image {images_dir / images.names[i]} "
                             f"is {shape[1]}x{shape[0]}; masks must have their image's size, in the orientation the "
                             f"image is shown in (its EXIF orientation applied, as the toolkit reads images)")
        masks.append(mask)
    return MaskPairs(images, masks, mask_paths)


def to_arrays(pairs: MaskPairs, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks at ``size x size`` (shorter side resized, centre crop; masks nearest).

    Returns:
        ``images``: ``(N, 3, S, S)`` uint8 in 0..255; ``masks``: ``(N, 1, S, S)`` float32 in {0, 1}.
    """
    images = pairs.images.stack(int(size))
    masks = np.stack([fit_square(m.astype(np.uint8), int(size), nearest=True) for m in pairs.masks])
    return images, torch.from_numpy(masks.astype(np.float32)).unsqueeze(1)


def split_by_hash(hashes: list[str], test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed train/test split: images sorted by content hash, the first ``round(test_fraction * N)``
    (at least 1, and leaving at least 1 for training) are the test split, with every other copy of
    an image among them (copies never fall on both sides).

    Args:
        hashes: one content hash per image.
        test_fraction: in (0, 1).

    Returns:
        ``(train_indices, test_indices)``, each sorted ascending int64.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1), fewer than 2 images, or no two different ones.
    """
    n = len(hashes)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test split {test_fraction}: give the share of images held out for testing, in (0, 1), "
                         f"e.g. 0.3")
    if n < 2:
        raise ValueError(f"segmentation needs at least 2 images (one to train, one to test), got {n}")
    n_test = min(n - 1, max(1, int(math.floor(test_fraction * n + 0.5))))
    order = sorted(range(n), key=lambda i: (hashes[i], i))
    held_out = {hashes[i] for i in order[:n_test]}
    test = np.array([i for i in range(n) if hashes[i] in held_out], np.int64)
    train = np.array([i for i in range(n) if hashes[i] not in held_out], np.int64)
    if len(train) == 0:
        raise ValueError(f"all {n} images are copies of one image: nothing is left to train on")
    return train, test



# ----------------------------------------------------------------------------------- training
@dataclass
class SegmentTrainConfig:
    """How a downstream model trains (:func:`~saliencyssl.eval.segmentation.train_segmenter`,
    :func:`~saliencyssl.eval.detection.train_maskrcnn`).

    Attributes:
        steps: optimisation steps (the scripts use ``epochs x ceil(n_train_split / batch_size)``,
            the same for every label fraction).
        batch_size: images per step (drawn from the labelled subset, reshuffled on each pass).
        lr: Adam learning rate of the decoder (FPN and head).
        encoder_lr: Adam learning rate of the encoder when fine-tuned.
        weight_decay: Adam L2 weight decay.
        freeze_encoder: keep the encoder fixed (eval-mode BatchNorm, no gradients).
        flip: random horizontal flips.
    """

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-4
    freeze_encoder: bool = False
    flip: bool = True


def labelled_batches(indices: np.ndarray, config: SegmentTrainConfig, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``config.steps`` steps over the labelled images ``indices``.

    The labelled images are shuffled, taken ``config.batch_size`` at a time (all of them when there
    are fewer) and reshuffled after each pass; with ``config.flip`` each image of a batch is
    mirrored with probability 1/2. Everything is drawn from one generator seeded with ``seed``.

    Yields:
        ``(batch, flip)``: ``(B,)`` int64 indices into the image arrays and ``(B,)`` bool, True
        where the image (and its target) is to be mirrored left-right.
    """
    if len(indices) == 0:
        raise ValueError("training needs at least one labelled image")
    generator = torch.Generator().manual_seed(int(seed))
    pool = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    order = pool[torch.randperm(len(pool), generator=generator)]
    cursor = 0
    for _ in range(int(config.steps)):
        take = []
        while len(take) < min(config.batch_size, len(pool)):
            if cursor == len(order):
                order, cursor = pool[torch.randperm(len(pool), generator=generator)], 0
            take.append(order[cursor])
            cursor += 1
        batch = torch.stack(take)
        flip = (torch.rand(len(batch), generator=generator) < 0.5 if config.flip
                else torch.zeros(len(batch), dtype=torch.bool))
        yield batch, flip


# ------------------------------------------------------------------------------------- scores
def probability_scores(probabilities: torch.Tensor, masks: torch.Tensor, threshold: float = THRESHOLD,
                       beta2: float = F_BETA2) -> dict[str, np.ndarray]:
    """Per-image foreground IoU and F-measure of thresholded predictions.

    Args:
        probabilities: ``(N, 1, H, W)`` in [0, 1]; masks: ``(N, 1, H, W)`` in {0, 1}.
        threshold: a pixel is predicted foreground when its probability exceeds it.
        beta2: F-measure weight, ``F = (1 + b2) P R / (b2 P + R)``.

    Returns:
        ``{"iou": (N,), "f": (N,), "precision": (N,), "recall": (N,)}`` float64 in [0, 1]. An
        image whose mask and prediction are both empty scores 1 everywhere; an empty prediction
        against a non-empty mask has precision 0 (and F 0).
    """
    scores = _binary_scores(probabilities > threshold, masks > 0.5, beta2=beta2)
    return {key: scores[key] for key in ("iou", "f", "precision", "recall")}


def prior_baselines(masks: torch.Tensor) -> dict[str, dict[str, float]]:
    """Scores of the two image-blind predictions of :func:`prior_masks`, the floor a trained
    segmenter should clear.

    Args:
        masks: ``(N, 1, S, S)`` in {0, 1} (the test split).

    Returns:
        ``{"all_foreground": {"iou", "f"}, "centre_box": {"iou", "f"}}``: mean scores of predicting
        every pixel, or the centred square of half the side, as foreground. Salient objects are
        usually large and central, so the centre box is a strong floor.
    """
    out = {}
    for name, prior in prior_masks(masks.shape[-1]).items():
        prediction = torch.from_numpy(prior).to(masks.dtype).expand_as(masks)
        scores = probability_scores(prediction, masks)
        out[name] = {"iou": float(scores["iou"].mean()), "f": float(scores["f"].mean())}
    return out


__all__ = ["F_BETA2", "THRESHOLD", "MaskPairs", "read_mask", "load_mask_pairs", "to_arrays", "split_by_hash",
           "SegmentTrainConfig", "labelled_batches", "probability_scores", "prior_masks", "prior_baselines"]
