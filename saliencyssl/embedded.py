"""The embedded default data: real photos that pip installs, and generated images for volume.

Nothing is downloaded. :func:`write_embedded_dataset` writes, under one folder:

- ``photos/``: the colour photos bundled with scikit-image (astronaut, Chelsea the cat, coffee,
  rocket, the motorcycle stereo pair, ...), shrunk to at most 256 px;
- ``train/<class>/`` and ``test/<class>/``: generated ``size x size`` images of one salient
  shape (``ellipse``, ``rectangle``, ``triangle``, ``cross``) in a random colour, position,
  size and rotation, over a cluttered background (colour gradient, noise, distractor blobs),
  so that the quickstart has labelled images to evaluate on;
- ``masks/train/<class>/``, ``masks/test/<class>/``: the shapes' binary masks (0/255), named
  like their images, for the downstream segmentation check.

Everything is a pure function of the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

SHAPE_CLASSES = ("ellipse", "rectangle", "triangle", "cross")
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel", "logo")


def bundled_photos(max_side: int = 256) -> dict[str, np.ndarray]:
    """scikit-image's bundled colour photos as ``(H, W, 3)`` uint8 RGB, longer side <= ``max_side``."""
    import cv2
    import skimage.data

    from saliencyssl.imageio import to_rgb_uint8

    photos: dict[str, np.ndarray] = {}
    for name in _PHOTOS:
        try:
            photos[name] = to_rgb_uint8(getattr(skimage.data, name)())
        except Exception:  # an image this scikit-image version does not bundle
            continue
    try:
        left, right, _ = skimage.data.stereo_motorcycle()
        photos["motorcycle_left"], photos["motorcycle_right"] = left, right
    except Exception:
        pass
    out = {}
    for name, img in photos.items():
        scale = max_side / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        out[name] = np.ascontiguousarray(img)
    return out


def generate_shape(rng: np.random.Generator, shape_class: str, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One generated image and its object mask.

    Returns:
        ``(size, size, 3)`` uint8 RGB image and ``(size, size)`` bool mask.
    """
    import cv2

    if shape_class not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape class {shape_class!r}; choose from {SHAPE_CLASSES}")
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    background = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (s, s, 3))
    for _ in range(rng.integers(2, 6)):  # distractor blobs, blurred so they are less salient
        centre = rng.uniform(0, s, 2)
        radius = rng.uniform(0.05, 0.15) * s
        blob = ((xx * s - centre[0]) ** 2 + (yy * s - centre[1]) ** 2) < radius ** 2
        background[blob] = background[blob] * 0.6 + rng.uniform(30, 225, 3) * 0.4
    background = cv2.GaussianBlur(background.astype(np.float32), (0, 0), 0.8)

    mask = np.zeros((s, s), np.uint8)
    cx, cy = rng.uniform(0.42, 0.58, 2) * s
    r = rng.uniform(0.26, 0.36) * s
    rot = rng.uniform(0, 180)
    if shape_class == "ellipse":
        cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.55, 1.0))), rot, 0, 360, 1, -1)
    else:
        if shape_class == "rectangle":
            pts = np.array([[-1, -0.7], [1, -0.7], [1, 0.7], [-1, 0.7]])
        elif shape_class == "triangle":
            pts = np.array([[0, -1.1], [1, 0.7], [-1, 0.7]])
        else:  # cross
            a, b = 0.33, 1.0
            pts = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
                            [-b, a], [-b, -a], [-a, -a]])
        theta = np.deg2rad(rot)
        rotm = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        poly = (pts @ rotm.T) * r + [cx, cy]
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - (c0 + c1) / 2).sum() < 150:  # keep the object distinct from its surroundings
        colour = rng.uniform(0, 255, 3)
    shading = 1.0 + 0.15 * (yy - 0.5)[..., None]
    obj = colour * shading + rng.normal(0, 4, (s, s, 3))
    image = np.where(mask[..., None] > 0, obj, background)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask > 0


def generate_shapes(per_class_train: int = 60, per_class_test: int = 30, size: int = 64, seed: int = 0,
                    classes: tuple[str, ...] = SHAPE_CLASSES) -> Iterator[tuple[str, str, int, np.ndarray, np.ndarray]]:
    """The generated shape images of :func:`write_embedded_dataset`, in memory and in the same order.

    Draws from one ``numpy.random.default_rng(seed)``: the training images class by class, then the
    test images, so with the default arguments it yields exactly the images (and masks) that
    :func:`write_embedded_dataset` writes for the same seed and size.

    Yields:
        ``(split, shape_class, index, image, mask)``: ``"train"`` or ``"test"``, the class name, the
        image's number within its class and split (its file is ``f"{shape_class}_{index:04d}.png"``),
        the ``(size, size, 3)`` uint8 RGB image and its ``(size, size)`` bool mask.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for cls in classes:
            for i in range(count):
                image, mask = generate_shape(rng, cls, size)
                yield split, cls, i, image, mask


def write_embedded_dataset(root: str | Path, per_class_train: int = 60, per_class_test: int = 30, size: int = 64,
                           seed: int = 0, photos: bool = True) -> dict[str, Path]:
    """Write the embedded default data set (see the module docstring).

    Returns:
        Paths of ``train``, ``test``, ``photos``, ``masks_train``, ``masks_test``.
    """
    from PIL import Image

    root = Path(root)
    paths = {"train": root / "train", "test": root / "test", "photos": root / "photos",
             "masks_train": root / "masks" / "train", "masks_test": root / "masks" / "test"}
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for cls in SHAPE_CLASSES:
            (paths[split] / cls).mkdir(parents=True, exist_ok=True)
            (paths[f"masks_{split}"] / cls).mkdir(parents=True, exist_ok=True)
    for split, cls, i, image, mask in generate_shapes(per_class_train, per_class_test, size, seed):
        Image.fromarray(image).save(paths[split] / cls / f"{cls}_{i:04d}.png")
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(
            paths[f"masks_{split}"] / cls / f"{cls}_{i:04d}.png")
    if photos:
        paths["photos"].mkdir(parents=True, exist_ok=True)
        for name, img in bundled_photos().items():
            Image.fromarray(img).save(paths["photos"] / f"{name}.png")
    return paths
