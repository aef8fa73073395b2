"""Image sets: an image folder (class sub-folders optional) or CIFAR-10's python batches.

An :class:`ImageSet` knows, for each image, where it came from, its class label (``-1`` when
the set has none), its decoded ``(H, W, 3)`` uint8 RGB pixels and its content hash. Hashes are
computed once per image, the first time :meth:`ImageSet.hashes` is asked, and kept; training
never hashes per iteration.

Layouts understood by :func:`open_image_set`:

- a folder whose sub-folders hold every image (``train/cat/*.png``), two or more of them: one
  class per sub-folder, named by the sub-folder, labels numbered in sorted name order;
- any other folder of images (searched recursively; one sub-folder holding everything, or images
  beside the class folders): unlabelled;
- a folder holding CIFAR-10's python batches (``data_batch_1`` ... ``data_batch_5``,
  ``test_batch``, as in ``cifar-10-batches-py``): its train batches (``test_batch`` alone when only
  it is there), or the path of one batch file.

For training at one size, :func:`fit_square` resizes the shorter side and centre-crops, and
:meth:`ImageSet.stack` returns every image at that size as one ``(N, 3, S, S)`` uint8 tensor.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from saliencyssl.target import Target

from saliencyssl.hashing import content_hash
from saliencyssl.imageio import IMAGE_SUFFIXES, ImageDecodeError, list_images, read_image, to_rgb_uint8

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


@dataclass
class ImageSet:
    """A sized collection of images with optional labels.

    Attributes:
        names: one display name per image (relative path, or ``batch:index`` for CIFAR).
        labels: ``(N,)`` int64, ``-1`` where unlabelled.
        classes: class names, indexed by label.
        root: where the set was opened from.
        paths: the image files, one per image (``None`` for CIFAR batches, which have none).
    """

    names: list[str]
    labels: np.ndarray
    classes: list[str]
    root: Path
    _load: Callable[[int], np.ndarray] = field(repr=False)
    paths: list[Path] | None = field(default=None, repr=False)
    _hashes: list[str] | None = field(default=None, repr=False)
    _cached: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def image(self, index: int) -> np.ndarray:
        """Decoded ``(H, W, 3)`` uint8 RGB image (raises :class:`ImageDecodeError` naming the file)."""
        cached = self._cached.get(index)
        return cached if cached is not None else self._load(index)

    def hashes(self, progress: bool = False) -> list[str]:
        """Content hash of every image, computed once and kept."""
        if self._hashes is None:
            indices: Sequence[int] = range(len(self))
            if progress and len(self) > 2000:
                from tqdm import tqdm

                indices = tqdm(indices, desc="hashing images", unit="img")
            self._hashes = [content_hash(self.image(i)) for i in indices]
        return self._hashes

    def keep_decoded(self) -> "ImageSet":
        """Decode every image once and keep the pixels in memory (for small sets such as CIFAR)."""
        for i in range(len(self)):
            if i not in self._cached:
                self._cached[i] = self._load(i)
        return self

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        """A new set holding the images at ``indices`` (sharing decoded pixels and hashes)."""
        indices = [int(i) for i in indices]
        hashes = self._hashes
        parent = self
        return ImageSet(
            names=[self.names[i] for i in indices], labels=self.labels[indices].copy(), classes=list(self.classes),
            root=self.root, _load=lambda j: parent.image(indices[j]),
            paths=[self.paths[i] for i in indices] if self.paths is not None else None,
            _hashes=[hashes[i] for i in indices] if hashes is not None else None,
            _cached={j: self._cached[i] for j, i in enumerate(indices) if i in self._cached})

    def spread(self, count: int) -> "ImageSet":
        """``count`` images evenly spaced through the set (all of it when ``count >= len``).

        Folders are sorted by class, so an evenly spaced subset keeps the classes' proportions,
        where the first ``count`` images would hold only the first classes.
        """
        if count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"need at least one image, got a limit of {count}")
        return self.subset(np.linspace(0, len(self) - 1, int(count)).round().astype(int).tolist())

    def stack(self, size: int, progress: bool = False) -> "torch.Tensor":  # noqa: F821
        """All images resized by :func:`fit_square` to ``size``, as ``(N, 3, size, size)`` uint8."""
        import torch

        indices: Sequence[int] = range(len(self))
        if progress and len(self) > 2000:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"decoding images at {size}px", unit="img")
        out = np.empty((len(self), size, size, 3), np.uint8)
        for i in indices:
            out[i] = fit_square(self.image(i), size)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def open_image_set(path: str | Path, keep_decoded: bool | None = None) -> ImageSet:
    """Open an image folder or CIFAR-10 python batches (see the module docstring).

    Args:
        path: folder or batch file.
        keep_decoded: keep decoded pixels in memory; default: for sets of images up to 64 px
            (decided from the first image) and CIFAR batches.

    Raises:
        FileNotFoundError: the path does not exist, or holds no images.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give an image folder or CIFAR-10 python batches")
    if _is_cifar(path):
        return _open_cifar(path)
    files = list_images(path)
    if not files:
        raise FileNotFoundError(f"{path} holds no images (looked recursively for "
                                f"{', '.join(IMAGE_SUFFIXES)}); check the path")
    rel = [f.relative_to(path) for f in files]
    top_dirs = {r.parts[0] for r in rel if len(r.parts) > 1}
    # Labelled: every image in a class sub-folder, and at least two classes (one sub-folder holding
    # everything, as in many photo collections, is a layout, not a label).
    labelled = all(len(r.parts) > 1 for r in rel) and len(top_dirs) >= 2
    if labelled:
        classes = sorted(top_dirs)
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[r.parts[0]] for r in rel], np.int64)
    else:
        classes = []
        labels = np.full(len(files), -1, np.int64)
    image_set = ImageSet(names=[r.as_posix() for r in rel], labels=labels, classes=classes, root=path,
                         _load=lambda i: read_image(files[i]), paths=files)
    if keep_decoded is None:
        try:
            first = image_set.image(0)
            keep_decoded = max(first.shape[:2]) <= 64
        except ImageDecodeError:
            keep_decoded = False
    if keep_decoded:
        image_set.keep_decoded()
    return image_set


def _is_cifar(path: Path) -> bool:
    if path.is_file():
        return path.name in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)
    return any((path / name).is_file() for name in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,))


def _open_cifar(path: Path) -> ImageSet:
    """CIFAR-10 python batches: a folder opens the train batches, or ``test_batch`` alone when
    only it is present; a file opens that batch."""
    if path.is_file():
        batch_files = [path]
    else:
        batch_files = [path / n for n in CIFAR_TRAIN_BATCHES if (path / n).is_file()] or [path / CIFAR_TEST_BATCH]
    images, labels, names = [], [], []
    for batch_file in batch_files:
        try:
            with open(batch_file, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            batch_labels = batch.get(b"labels", batch.get(b"fine_labels"))
        except Exception as error:
            raise ImageDecodeError(batch_file, f"not a CIFAR-10 python batch ({type(error).__name__}: {error})") from error
        images.append(data)
        labels.extend(int(v) for v in batch_labels)
        names.extend(f"{batch_file.name}:{i}" for i in range(len(data)))
    pixels = np.ascontiguousarray(np.concatenate(images))
    classes = _cifar_classes(path if path.is_dir() else path.parent)
    image_set = ImageSet(names=names, labels=np.array(labels, np.int64), classes=classes, root=path,
                         _load=lambda i: pixels[i])
    image_set._cached = {i: pixels[i] for i in range(len(pixels))}
    return image_set


def _cifar_classes(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as fh:
            return [n.decode() for n in pickle.load(fh, encoding="bytes")[b"label_names"]]
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fit_square(array: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize so the shorter side is ``size``, then centre-crop to ``size`` x ``size``.

    The same geometry is applied to images and to their targets (with ``nearest=True`` for
    masks and labels), so a target stays aligned with its image.

    Args:
        array: ``(H, W)`` or ``(H, W, C)``.
        size: output side length.
        nearest: nearest-neighbour interpolation (labels, masks); otherwise area for shrinking
            and bicubic for enlarging.
    """
    import cv2

    h, w = array.shape[:2]
    if (h, w) == (size, size):
        return array
    scale = size / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    if nearest:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    src = array
    if src.dtype == np.bool_:
        src = src.astype(np.uint8)
    if src.dtype not in (np.uint8, np.uint16, np.float32, np.int16):
        src = src.astype(np.int32 if nearest else np.float32)
    resized = cv2.resize(src, (nw, nh), interpolation=interpolation)
    if resized.ndim == 2 and array.ndim == 3:
        resized = resized[:, :, None]
    top, left = (nh - size) // 2, (nw - size) // 2
    out = resized[top:top + size, left:left + size]
    return np.ascontiguousarray(out.astype(array.dtype) if out.dtype != array.dtype else out)


def target_at_size(target: "Target", size: int) -> "Target":
    """A target brought to ``size`` x ``size`` with the geometry :func:`fit_square` gives its image.

    The saliency map is resized like the image (area when shrinking, bicubic when enlarging),
    the mask and the region labels with nearest neighbour (labels renumbered in raster order).
    """
    from saliencyssl.target import Target, relabel_raster

    if target.shape == (size, size):
        return target
    saliency = fit_square(target.saliency, size)
    mask = fit_square(target.mask.astype(np.uint8), size, nearest=True) > 0
    regions = relabel_raster(fit_square(target.regions.astype(np.int32), size, nearest=True))
    return Target(saliency, mask, regions)


__all__ = ["ImageSet", "open_image_set", "fit_square", "target_at_size", "to_rgb_uint8"]
