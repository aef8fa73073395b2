"""Image/target pairs for the surrogate: images from a folder, exact targets from a cache.

:func:`load_pairs` opens an image folder (:func:`saliencyssl.datasets.open_image_set`), finds
each image's exact target in a :class:`~saliencyssl.cache.TargetCache` by content hash, and
brings both to one square size with the same :func:`~saliencyssl.datasets.fit_square`
geometry (the image and the saliency map with area/bicubic interpolation, the mask and the
region labels with nearest-neighbour), so a target stays aligned with its image. Everything is
decoded once and kept as tensors (:class:`PairSet`); the training loop only indexes them.

The labeller fingerprint is taken from the cache (:func:`choose_fingerprint`): the one whose
entries cover the most images, or the one of explicit labeller options. Images without a
target are *misses*: the pair set names them (:func:`describe_misses`); when no image can be
paired, :class:`NoPairsError` says why and carries what the caller needs to fill the cache (the
image and cache folders and the labeller parameters to label with).

The exact targets are kept as one :class:`~saliencyssl.target.TargetBatch` in its compact form
(float32 maps, bool masks, int32 region labels).

The held-out split (:func:`held_out_mask`) is chosen by content hash: an image is held out when
a salted hash of its content hash falls below the fraction, so its membership depends on its
pixels alone, not on file names, order, the image limit or seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from saliencyssl.datasets import ImageSet, check_image_size, check_memory, fit_square, open_image_set, target_at_size
from saliencyssl.saliency.labeller import LABELLER_VERSION, LabellerConfig
from saliencyssl.target import TARGET_CHANNELS, Target, TargetBatch

#: Salt of the held-out split (changing it changes which images are held out).
SPLIT_SALT = b"saliency-ssl surrogate held-out v1"


class NoPairsError(LookupError):
    """No image of a folder can be paired with a target of the cache.

    Attributes:
        reason: ``"no_cache"`` (the folder holds no cache), ``"old_versions"`` (the cache holds
            targets of older labeller versions only), or ``"no_targets"`` (no target of the
            wanted or of any current fingerprint for these images).
        images_dir: the image folder.
        cache_dir: the cache folder.
        params: the labeller parameters to label the images with (``None``: the defaults).
        fingerprints: the fingerprints the cache holds, with their parameters.
    """

    def __init__(self, message: str, reason: str, images_dir, cache_dir, params: dict | None = None,
                 fingerprints: dict | None = None):
        super().__init__(message)
        self.reason, self.images_dir, self.cache_dir = reason, images_dir, Path(cache_dir)
        self.params, self.fingerprints = params, dict(fingerprints or {})


@dataclass
class PairSet:
    """Images and their exact targets at one square size.

    Attributes:
        images: ``(N, 3, S, S)`` uint8 RGB.
        targets: the exact targets, a :class:`~saliencyssl.target.TargetBatch` of ``(N, 1, S, S)``
            tensors in its compact form (int32 region labels).
        hashes: content hash of each image (of the decoded file, before resizing).
        names: each image's path relative to the image folder.
        image_size: ``S``.
        fingerprint: the labeller fingerprint the targets come from.
        labeller_params: that labeller's parameters (``None`` when the cache did not record them).
        misses: names of the images below the folder that have no target (not in the set).
        shapes: each image's ``(height, width)`` before resizing (``None`` when not known, e.g. for
            generated pairs or a concatenation with such pairs).
    """

    images: torch.Tensor
    targets: TargetBatch
    hashes: list[str]
    names: list[str]
    image_size: int
    fingerprint: str
    labeller_params: dict | None = None
    misses: list[str] = field(default_factory=list)
    shapes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray) -> "PairSet":
        """The pairs at ``indices`` (misses kept)."""
        idx = torch.as_tensor(np.asarray(indices, np.int64))
        return PairSet(self.images[idx], self.targets.index_select(idx), [self.hashes[int(i)] for i in idx],
                       [self.names[int(i)] for i in idx], self.image_size, self.fingerprint,
                       self.labeller_params, list(self.misses),
                       [self.shapes[int(i)] for i in idx] if self.shapes is not None else None)

    def concat(self, other: "PairSet") -> "PairSet":
        """This set followed by ``other`` (same size and labeller fingerprint); misses are this set's.

        Raises:
            ValueError: the two differ in image size or fingerprint.
        """
        if other.image_size != self.image_size or other.fingerprint != self.fingerprint:
            raise ValueError(f"cannot join pairs at {other.image_size} px of labeller {other.fingerprint} to pairs at "
                             f"{self.image_size} px of labeller {self.fingerprint}")
        shapes = self.shapes + other.shapes if self.shapes is not None and other.shapes is not None else None
        return PairSet(torch.cat([self.images, other.images]), TargetBatch.cat([self.targets, other.targets]),
                       self.hashes + other.hashes, self.names + other.names, self.image_size, self.fingerprint,
                       self.labeller_params, list(self.misses), shapes)

    def split(self, held_out: float) -> tuple["PairSet", "PairSet"]:
        """``(train, held_out)`` by :func:`held_out_mask` of the content hashes."""
        mask = held_out_mask(self.hashes, held_out)
        return self.subset(np.flatnonzero(~mask)), self.subset(np.flatnonzero(mask))

    def digest(self) -> str:
        """:func:`hashes_digest` of this set's content hashes."""
        return hashes_digest(self.hashes)

    def nbytes(self) -> int:
        """Bytes the images and targets take."""
        return self.images.numel() * self.images.element_size() + self.targets.nbytes()


# ------------------------------------------------------------------------------ splits and digests
def _salted(image_hash: str) -> float:
    digest = hashlib.blake2b(image_hash.encode(), digest_size=8, key=SPLIT_SALT[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def held_out_mask(hashes: Sequence[str], fraction: float) -> np.ndarray:
    """``(N,)`` bool: True for images held out from training.

    An image is held out when a salted hash of its content hash, read as a number in [0, 1),
    is below ``fraction``, so membership depends only on the image. When that picks none of
    two or more images, the one with the smallest salted value is held out; when it picks all,
    the largest is kept for training.

    Raises:
        ValueError: ``fraction`` outside [0, 1).
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    values = np.array([_salted(h) for h in hashes], np.float64)
    mask = values < fraction
    if fraction > 0 and len(hashes) >= 2:
        if not mask.any():
            mask[int(np.argmin(values))] = True
        if mask.all():
            mask[int(np.argmax(values))] = False
    return mask


def hashes_digest(hashes: Sequence[str]) -> str:
    """A 32-hex digest of a set of content hashes (order-independent)."""
    digest = hashlib.blake2b(digest_size=16)
    for h in sorted(hashes):
        digest.update(h.encode())
    return digest.hexdigest()


def hash_prefixes(hashes: Sequence[str]) -> torch.Tensor:
    """``(N,)`` int64 tensor of the first 64 bits of each content hash (compact membership record)."""
    return torch.tensor([int(h[:16], 16) - (1 << 63) for h in hashes], dtype=torch.int64)


def contains_hashes(prefixes: torch.Tensor, hashes: Sequence[str]) -> np.ndarray:
    """``(N,)`` bool: which ``hashes`` have their 64-bit prefix in ``prefixes``."""
    known = set(prefixes.tolist())
    return np.array([int(h[:16], 16) - (1 << 63) in known for h in hashes], bool)


# ------------------------------------------------------------------------------ cache and fingerprint
def _open_cache(cache_dir: Path, fingerprint: str):
    from saliencyssl.cache import TargetCache

    return TargetCache(cache_dir, fingerprint)


def _cache_fingerprints(cache_dir: Path, images_dir: str | Path, params: dict | None) -> dict[str, dict | None]:
    """The fingerprints ``cache_dir`` holds; :class:`NoPairsError` when it is no target cache."""
    from saliencyssl.cache import TargetCache
    from saliencyssl.cache.store import cache_fingerprints

    if not TargetCache.exists(cache_dir):
        raise NoPairsError(f"{cache_dir} is not a target cache (no cache.db); label {images_dir} into it first",
                           "no_cache", images_dir, cache_dir, params)
    return cache_fingerprints(cache_dir)


def choose_fingerprint(cache_dir: str | Path, hashes: Sequence[str], config: LabellerConfig | None = None,
                       images_dir: str | Path = "IMAGES_DIR") -> tuple[str, dict | None, int]:
    """The labeller fingerprint to learn: explicit (``config``) or the one covering most images.

    Without ``config`` only fingerprints of the current labeller version are candidates (targets of
    an older version are not the exact labeller's any more); among equal coverage the default
    labeller's fingerprint wins.

    Args:
        cache_dir: an existing cache folder.
        hashes: content hashes of the images.
        config: explicit labeller options (those the cache was labelled with), or ``None`` to
            choose from the fingerprints the cache holds.
        images_dir: the image folder, for the error.

    Returns:
        ``(fingerprint, params or None, number of images covered)``.

    Raises:
        NoPairsError: the folder is not a cache, no fingerprint covers any image, or the cache
            holds targets of older labeller versions only.
    """
    cache_dir = Path(cache_dir)
    found = _cache_fingerprints(cache_dir, images_dir, config.params() if config else None)
    if config is not None:
        fingerprint = config.fingerprint()
        candidates = {fingerprint: found.get(fingerprint) or config.params()}
    else:
        candidates = {f: p for f, p in found.items() if (p or {}).get("version") == LABELLER_VERSION}
        if found and not candidates:
            older = next(iter(found.values()))
            raise NoPairsError(
                f"cache {cache_dir} holds targets of older labeller versions only (fingerprints "
                f"{', '.join(sorted(found))}; this is version {LABELLER_VERSION}); label the images again",
                "old_versions", images_dir, cache_dir,
                {k: v for k, v in (older or {}).items() if k != "version"} or None, found)
    default = LabellerConfig().fingerprint()
    best = ("", None, -1)
    for fingerprint, params in sorted(candidates.items(), key=lambda item: (item[0] != default, item[0])):
        cache = _open_cache(cache_dir, fingerprint)
        try:
            covered = sum(1 for h in hashes if h in cache)
        finally:
            cache.close()
        if covered > best[2]:
            best = (fingerprint, params, covered)
    if best[2] <= 0:
        wanted = config.params() if config is not None else None
        listing = ", ".join(sorted(found)) or "none"
        raise NoPairsError(
            f"cache {cache_dir} holds no target for any of the {len(hashes)} images in {images_dir} "
            f"(fingerprints in the cache: {listing}"
            f"{'; wanted ' + config.fingerprint() if config is not None else ''})",
            "no_targets", images_dir, cache_dir, wanted, found)
    return best


# ------------------------------------------------------------------------------ loading
def select_limit(hashes: Sequence[str], limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` images, chosen by content hash (a spread over classes), ascending."""
    n = len(hashes)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"the image limit must be at least 1, got {limit}")
    order = sorted(range(n), key=lambda i: (hashes[i], i))
    return np.sort(np.array(order[:limit], np.int64))


def load_pairs(images_dir: str | Path, cache_dir: str | Path, image_size: int, fingerprint: str | None = None,
               config: LabellerConfig | None = None, limit: int | None = None, progress: bool = True,
               image_set: ImageSet | None = None) -> PairSet:
    """Pair every image below ``images_dir`` with its exact target from ``cache_dir``.

    Args:
        images_dir: image folder (class sub-folders allowed) or CIFAR-10 python batches.
        cache_dir: the target cache the images were labelled into.
        image_size: side ``S`` both images and targets are brought to (:func:`fit_square`).
        fingerprint: use exactly this labeller fingerprint (e.g. a checkpoint's); default:
            ``config``'s, or the one covering most images (:func:`choose_fingerprint`).
        config: explicit labeller options selecting the fingerprint (with ``fingerprint``
            given: the parameters recorded for the misses when the cache has none).
        limit: use at most this many images, chosen by content hash (:func:`select_limit`).
        progress: show progress bars.
        image_set: an already opened set for ``images_dir`` (skips opening it again).

    Returns:
        A :class:`PairSet` of the images that have targets; ``misses`` names the others.

    Raises:
        FileNotFoundError: the image folder does not exist or holds no images.
        NoPairsError: no image has a target (it carries the folders and the labeller parameters
            to label them with).
    """
    from tqdm import tqdm

    image_size = check_image_size(image_size, "image_size")
    images = image_set if image_set is not None else open_image_set(images_dir)
    all_hashes = images.hashes(progress=progress)
    chosen = select_limit(all_hashes, limit)
    # the images (3 bytes a pixel) and the targets (mask, map, regions, boundaries), each held twice while stacked
    check_memory(2 * len(chosen) * image_size * image_size * (3 + 4 * len(TARGET_CHANNELS)),
                 f"{len(chosen)} image-target pairs at {image_size} px")
    hashes = [all_hashes[i] for i in chosen]
    cache_dir = Path(cache_dir)
    if fingerprint is None:
        fingerprint, params, _ = choose_fingerprint(cache_dir, hashes, config, images_dir)
    else:
        fallback = config.params() if config is not None else None
        params = _cache_fingerprints(cache_dir, images_dir, fallback).get(fingerprint) or fallback
    cache = _open_cache(cache_dir, fingerprint)
    keep: list[int] = []
    targets: list[Target] = []
    misses: list[str] = []
    indices = tqdm(chosen, desc=f"reading targets at {image_size}px", unit="img", disable=not progress,
                   leave=False)
    pixels = []
    shapes: list[tuple[int, int]] = []
    try:
        for i in indices:
            target = cache.get(all_hashes[i])
            if target is None:
                misses.append(images.names[i])
                continue
            image = images.image(int(i))
            if target.shape != image.shape[:2]:
                misses.append(images.names[i])
                continue
            keep.append(int(i))
            shapes.append((int(image.shape[0]), int(image.shape[1])))
            targets.append(target_at_size(target, image_size))
            pixels.append(fit_square(image, image_size))
    finally:
        cache.close()
    if not keep:
        raise NoPairsError(
            f"none of the {len(chosen)} images in {images_dir} has a target under labeller fingerprint "
            f"{fingerprint} in cache {cache_dir}", "no_targets", images_dir, cache_dir, params)
    image_tensor = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return PairSet(images=image_tensor, targets=TargetBatch.from_targets(targets, compact=True),
                   hashes=[all_hashes[i] for i in keep], names=[images.names[i] for i in keep],
                   image_size=int(image_size), fingerprint=fingerprint, labeller_params=params, misses=misses,
                   shapes=shapes)


def shape_pairs(per_class_train: int, per_class_test: int, image_size: int = 32, source_size: int = 64,
                seed: int = 0, classes: Sequence[str] | None = None,
                config: LabellerConfig | None = None) -> tuple[PairSet, PairSet]:
    """Pairs of generated shape images and their exact targets, made in memory (no files, no cache).

    The images are :func:`saliencyssl.embedded.generate_shapes`'s (one salient shape, flat-coloured
    and shaded a little, on a smooth background with blurred distractor blobs), drawn at
    ``source_size`` and labelled there by the exact labeller, then brought to ``image_size`` as
    :func:`load_pairs` brings a cached pair (:func:`fit_square`, :func:`target_at_size`). With the
    defaults and ``per_class_train=60, per_class_test=30`` they are the quickstart's embedded shapes.
    The labeller segments these shapes as drawn, so the set says whether the surrogate can learn
    what is learnable; the labelling costs about 10 ms per image.

    Args:
        per_class_train, per_class_test: images per class in each split.
        image_size: side ``S`` of the pairs.
        source_size: side the shapes are drawn and labelled at.
        seed: the generator's seed.
        classes: shape classes (default: all of :data:`saliencyssl.embedded.SHAPE_CLASSES`).
        config: labeller options (default: the default labeller).

    Returns:
        ``(train, test)`` :class:`PairSet` objects; names are ``"<class>/<class>_<index>.png"``, as the
        files :func:`~saliencyssl.embedded.write_embedded_dataset` writes.
    """
    from saliencyssl.embedded import SHAPE_CLASSES, generate_shapes
    from saliencyssl.hashing import content_hash
    from saliencyssl.saliency.labeller import Labeller

    config = config or LabellerConfig()
    labeller = Labeller(config)
    made: dict[str, tuple[list, list, list, list]] = {"train": ([], [], [], []), "test": ([], [], [], [])}
    for split, cls, i, image, _ in generate_shapes(per_class_train, per_class_test, source_size, seed,
                                                   tuple(classes or SHAPE_CLASSES)):
        pixels, targets, hashes, names = made[split]
        pixels.append(fit_square(image, image_size))
        targets.append(target_at_size(labeller(image), image_size))
        hashes.append(content_hash(image))
        names.append(f"{cls}/{cls}_{i:04d}.png")

    def pair_set(pixels, targets, hashes, names) -> PairSet:
        s = int(image_size)
        images = (torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous() if pixels
                  else torch.zeros(0, 3, s, s, dtype=torch.uint8))
        tensors = (TargetBatch.from_targets(targets, compact=True) if targets else
                   TargetBatch(torch.zeros(0, 1, s, s), torch.zeros(0, 1, s, s, dtype=torch.bool),
                               torch.zeros(0, 1, s, s, dtype=torch.int32)))
        return PairSet(images, tensors, hashes, names, s, config.fingerprint(), config.params())

    return pair_set(*made["train"]), pair_set(*made["test"])


def describe_misses(pairs: PairSet, show: int = 10) -> list[str]:
    """Lines naming the images without a target (empty when none); ``pairs.labeller_params`` are
    the parameters to label them with."""
    if not pairs.misses:
        return []
    lines = [f"{len(pairs.misses)} image(s) have no target under fingerprint {pairs.fingerprint} and are left out:"]
    lines += [f"  {name}" for name in pairs.misses[:show]]
    if len(pairs.misses) > show:
        lines.append(f"  ... and {len(pairs.misses) - show} more")
    return lines


__all__ = ["PairSet", "NoPairsError", "load_pairs", "choose_fingerprint", "held_out_mask", "hashes_digest",
           "hash_prefixes", "contains_hashes", "select_limit", "describe_misses", "shape_pairs", "TARGET_CHANNELS"]
