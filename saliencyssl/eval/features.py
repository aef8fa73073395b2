"""Frozen-backbone features, computed once per backbone and dataset and kept on disk.

Every classification protocol (linear probe, kNN, k-means) works on the same thing: the 512-d
penultimate-layer features of a frozen ResNet-18, one row per image, with images brought to the
backbone's training size by :func:`saliencyssl.datasets.fit_square` and normalised by
:func:`saliencyssl.ssl.backbone.to_model_input`.

- :func:`open_backbone` opens ``backbone.pt`` (or a plain torchvision ResNet-18 state dict), or
  builds a seeded random ResNet-18 for ``"random"``, and returns it with a :class:`BackboneInfo`
  (config, image size, cache identity); :func:`load_frozen_backbone` also freezes it;
- :func:`extract_features` runs it over a ``(N, 3, S, S)`` uint8 stack, with a progress bar;
- :class:`FeatureCache` stores the result under a key made of the backbone's identity (the
  BLAKE2b hash of the checkpoint's bytes, or ``random`` + seed + stem), the dataset's content
  hashes (in order), the image size and a recipe version, so a second run on the same backbone
  and data loads the array instead of running the network, and a changed checkpoint (or image)
  is never served stale features.

The default cache folder is ``$SALIENCYSSL_FEATURE_CACHE``, else
``$XDG_CACHE_HOME/saliencyssl/features``, else ``~/.cache/saliencyssl/features``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from saliencyssl.files import replace_file, temporary_beside
from saliencyssl.ssl.backbone import (FEATURE_DIM, check_backbone_config, load_backbone, resnet18_backbone,
                                      to_model_input, uses_cifar_stem)

#: Bumped whenever the way features are computed changes, so old cache entries stop matching.
FEATURE_RECIPE = "penultimate-fit_square-imagenet_norm-v1"
#: Image size of ``--backbone random`` when none is given (CIFAR-sized, CIFAR stem).
DEFAULT_RANDOM_IMAGE_SIZE = 32
#: Image size assumed for a checkpoint without one in its config and with the ImageNet stem.
DEFAULT_IMAGENET_IMAGE_SIZE = 224


@dataclass
class BackboneInfo:
    """What a frozen backbone is and how to feed it.

    Attributes:
        source: the checkpoint path as given, or ``"random"``.
        config: the checkpoint's config (``arch``, ``cifar_stem``, ``feature_dim``, ``image_size``...).
        image_size: side length images are brought to before the forward pass.
        identity: cache identity: ``"file:<blake2b of the checkpoint bytes>"`` or
            ``"random:seed=<s>:cifar_stem=<b>"``.
    """

    source: str
    config: dict[str, Any]
    image_size: int
    identity: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "config": _jsonable(self.config), "image_size": self.image_size,
                "identity": self.identity}


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 hex digest of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def random_backbone(seed: int, cifar_stem: bool) -> nn.Module:
    """A randomly initialised ResNet-18 feature extractor, the same for the same seed.

    The global torch RNG state is left untouched (the initialisation runs under a forked RNG).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return resnet18_backbone(cifar_stem)


def open_backbone(backbone: str | Path, image_size: int | None = None, seed: int = 0, stem: str = "auto",
                  default_random_size: int = DEFAULT_RANDOM_IMAGE_SIZE) -> tuple[nn.Module, BackboneInfo]:
    """Open a ResNet-18 backbone on the CPU (trainable, in train mode, as built).

    Args:
        backbone: path of ``backbone.pt`` (or a plain torchvision ResNet-18 state dict), or
            ``"random"`` for a seeded random initialisation.
        image_size: input side length; default: the checkpoint config's ``image_size``
            (``default_random_size`` for ``random``, 224 for a checkpoint with the ImageNet stem
            and no size).
        seed: initialisation seed of ``random`` (ignored for checkpoints).
        stem: for ``random`` only: ``"auto"`` (CIFAR stem up to 64 px, as
            :func:`~saliencyssl.ssl.backbone.uses_cifar_stem`), ``"cifar"`` or ``"imagenet"``.
            A checkpoint's stem is whatever it was trained with.

    Returns:
        ``(model, info)``; ``model`` maps ``(B, 3, S, S)`` normalised float32 to ``(B, 512)``.

    Raises:
        FileNotFoundError: the checkpoint does not exist (the message says how to make one).
        ValueError: a bad ``image_size`` (not 8..1024 px) or ``stem``;
            :class:`~saliencyssl.ssl.backbone.BackboneCheckpointError` (a ``ValueError``, one line
            naming the file): the file is not a ResNet-18 backbone, or its config or weights are damaged.
    """
    from saliencyssl.datasets import check_image_size

    if image_size is not None:
        check_image_size(image_size, "image_size")
    if stem not in ("auto", "cifar", "imagenet"):
        raise ValueError(f"stem {stem!r}: choose auto, cifar or imagenet")
    if str(backbone) == "random":
        size = check_image_size(image_size or default_random_size, "image_size")
        cifar_stem = uses_cifar_stem(size) if stem == "auto" else stem == "cifar"
        model = random_backbone(seed, cifar_stem)
        config = {"arch": "resnet18", "cifar_stem": cifar_stem, "feature_dim": FEATURE_DIM, "image_size": size,
                  "source": "random", "seed": int(seed)}
        identity = f"random:seed={int(seed)}:cifar_stem={cifar_stem}"
        return model, BackboneInfo("random", config, size, identity)
    path = Path(backbone)
    model, config = load_backbone(path, map_location="cpu")
    return model, BackboneInfo(str(path), config, _checkpoint_size(config, image_size, path),
                               f"file:{file_digest(path)}")


def _checkpoint_size(config: dict, image_size: int | None, path: str | Path = "the backbone checkpoint") -> int:
    """The side length a checkpoint is fed at: the one asked for, else its config's, else its stem's default.

    Raises:
        saliencyssl.ssl.backbone.BackboneCheckpointError: the config's ``image_size`` is not a whole
            number of pixels from ``MIN_IMAGE_SIZE`` to ``MAX_IMAGE_SIZE`` (the message names ``path``).
        ValueError: the size asked for is not.
    """
    from saliencyssl.datasets import check_image_size

    if image_size is not None:
        return check_image_size(image_size, "image_size")
    size = check_backbone_config(path, config).get("image_size")
    if size is None:
        size = DEFAULT_RANDOM_IMAGE_SIZE if config.get("cifar_stem") else DEFAULT_IMAGENET_IMAGE_SIZE
    return int(size)


def backbone_identity(backbone: str | Path, image_size: int | None = None, seed: int = 0,
                      stem: str = "auto") -> tuple[str, int]:
    """``(identity, image size)`` of a backbone as :func:`open_backbone` would open it, without
    building the model: what a run record compares to tell two evaluations' backbones apart."""
    if str(backbone) == "random":
        size = _checkpoint_size({}, image_size or DEFAULT_RANDOM_IMAGE_SIZE)
        cifar_stem = uses_cifar_stem(size) if stem == "auto" else stem == "cifar"
        return f"random:seed={int(seed)}:cifar_stem={cifar_stem}", size
    path = Path(backbone)
    image_size = _checkpoint_size(load_backbone(path, map_location="cpu")[1] if image_size is None else {},
                                  image_size, path)
    return f"file:{file_digest(path)}", image_size


def load_frozen_backbone(backbone: str | Path, image_size: int | None = None, seed: int = 0,
                         device: str | torch.device = "cpu", stem: str = "auto") -> tuple[nn.Module, BackboneInfo]:
    """Open a backbone for feature extraction: :func:`open_backbone`, moved to ``device``, in
    eval mode, with gradients off. For ``random`` the default image size is 32 (CIFAR stem)."""
    model, info = open_backbone(backbone, image_size, seed, stem)
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, info


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                     device: str | torch.device = "cpu", progress: str | None = "extracting features") -> np.ndarray:
    """Penultimate-layer features of every image.

    Args:
        model: maps ``(B, 3, S, S)`` normalised float32 to ``(B, D)``; put in eval mode here.
        images: ``(N, 3, S, S)`` uint8 in 0..255 (as :meth:`ImageSet.stack` returns).
        batch_size: images per forward pass.
        device: where the forward passes run.
        progress: tqdm description, or ``None`` for no bar.

    Returns:
        ``(N, D)`` float32 numpy array (``D`` = 512 for ResNet-18).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"extract_features expects (N, 3, S, S) uint8 images, got {tuple(images.shape)} {images.dtype}")
    if int(batch_size) <= 0:
        raise ValueError(f"batch size {batch_size}: give a positive number of images per forward pass")
    model.eval()
    starts = range(0, len(images), int(batch_size))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", total=len(starts))
    chunks = []
    for start in starts:
        batch = to_model_input(images[start:start + int(batch_size)].to(device))
        chunks.append(model(batch).float().flatten(1).cpu())
    if not chunks:
        return np.zeros((0, FEATURE_DIM), np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def default_cache_dir() -> Path:
    """``$SALIENCYSSL_FEATURE_CACHE``, else ``$XDG_CACHE_HOME/saliencyssl/features``, else
    ``~/.cache/saliencyssl/features``."""
    if os.environ.get("SALIENCYSSL_FEATURE_CACHE"):
        return Path(os.environ["SALIENCYSSL_FEATURE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "saliencyssl" / "features"


def feature_key(identity: str, image_hashes: list[str], image_size: int) -> str:
    """Cache key of one (backbone, dataset, size): a 32-hex BLAKE2b digest."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{FEATURE_RECIPE}|{identity}|{int(image_size)}|{len(image_hashes)}|".encode())
    for h in image_hashes:
        digest.update(h.encode())
        digest.update(b",")
    return digest.hexdigest()


class FeatureCache:
    """Features on disk, one ``<key>.npy`` (float32 ``(N, D)``) plus ``<key>.json`` per entry.

    Writes are atomic (temporary file, then rename), so an interrupted run leaves no half entry.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def load(self, key: str, n_images: int, dim: int = FEATURE_DIM) -> np.ndarray | None:
        """The stored array, or ``None`` (computed again) when absent, unreadable, or not ``(n_images, dim)``
        finite float32 values.

        The file's header is read first (memory-mapped, nothing allocated): a header claiming a huge shape, or a
        file shorter than its header says, is a miss, not an allocation. A damaged entry never reaches a probe.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            mapped = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if mapped.ndim != 2 or mapped.shape != (n_images, dim) or mapped.dtype != np.float32:
            return None
        array = np.array(mapped)
        del mapped
        if not np.isfinite(array).all():
            return None
        return array

    def save(self, key: str, features: np.ndarray, meta: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        with temporary_beside(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(features, np.float32), allow_pickle=False)
        replace_file(path.with_suffix(".json"), json.dumps(_jsonable(meta), indent=2))
        return path


@dataclass
class CachedFeatures:
    """Features of one image set.

    Attributes:
        features: ``(N, 512)`` float32, row ``i`` for image ``i`` of the set.
        path: the cache file (``None`` when caching was off).
        hit: whether they came from the cache.
    """

    features: np.ndarray
    path: Path | None
    hit: bool


def dataset_features(image_set, model: nn.Module, info: BackboneInfo, cache: FeatureCache | None = None,
                     batch_size: int = 256, device: str | torch.device = "cpu", name: str = "images",
                     progress: bool = True) -> CachedFeatures:
    """Features of every image of an :class:`~saliencyssl.datasets.ImageSet`, from the cache when possible.

    Args:
        image_set: the images (their content hashes are part of the cache key).
        model, info: from :func:`load_frozen_backbone`.
        cache: where to look and store; ``None`` computes without caching.
        batch_size, device: forwarded to :func:`extract_features`.
        name: shown on the progress bar (e.g. ``"train"``).
        progress: show progress bars (hashing, decoding, features).
    """
    key = None
    if cache is not None:
        key = feature_key(info.identity, image_set.hashes(progress=progress), info.image_size)
        stored = cache.load(key, len(image_set))
        if stored is not None:
            return CachedFeatures(stored, cache.path(key), True)
    images = image_set.stack(info.image_size, progress=progress)
    features = extract_features(model, images, batch_size=batch_size, device=device,
                                progress=f"features of {name} ({len(image_set)} images, {info.image_size}px)"
                                if progress else None)
    path = None
    if cache is not None and key is not None:
        path = cache.save(key, features, {"backbone": info.to_json(), "dataset": str(image_set.root),
                                          "n_images": len(image_set), "recipe": FEATURE_RECIPE})
    return CachedFeatures(features, path, False)


def _jsonable(value: Any) -> Any:
    """Config values as JSON-friendly types (tuples to lists, paths and others to strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


__all__ = ["FEATURE_RECIPE", "BackboneInfo", "file_digest", "random_backbone", "open_backbone", "backbone_identity",
           "load_frozen_backbone",
           "extract_features", "default_cache_dir", "feature_key", "FeatureCache", "CachedFeatures",
           "dataset_features"]
