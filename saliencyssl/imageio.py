"""Reading images from disk into the one pixel convention the package uses.

Every image inside saliency-ssl is a C-contiguous ``(H, W, 3)`` uint8 array in **RGB** order.
:func:`read_image` decodes a file into that form and :func:`to_rgb_uint8` converts an
in-memory array; both accept grayscale, RGBA, 16-bit and palette images.

Files are decoded exactly as Cheng's C++ read them (OpenCV's ``imread`` with its default
``IMREAD_COLOR``), so a labelled file gets the original's target: the EXIF orientation is
applied (a camera JPEG comes out upright, as image viewers show it), an alpha channel is dropped,
grayscale is repeated into three channels, palettes are expanded, and 16-bit samples are reduced
by the decoder (for PNG: the high byte). Files ``IMREAD_COLOR`` refuses are read unchanged (32-bit
float TIFF: scaled as an in-memory float array), and files OpenCV cannot decode at all go through
Pillow, with the same rules. In-memory arrays (:func:`to_rgb_uint8`): grayscale repeated, alpha dropped, 16-bit
values divided by 257 and rounded, floats in [0, 1] scaled by 255.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

#: File name endings :func:`list_images` picks up (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Largest image :func:`read_image` decodes (width x height, read from the file's header first), so a
#: small file that claims a huge image (a decompression bomb) is refused before any pixel is allocated.
#: 100 M pixels is a 10,000 x 10,000 photo, 300 MB decoded.
MAX_DECODE_PIXELS = 100_000_000
# OpenCV's own ceiling, for the formats whose header Pillow cannot read (OpenCV reads this once, at its
# first decode; a caller's own setting is kept).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_DECODE_PIXELS))


class ImageDecodeError(ValueError):
    """A file that could not be decoded as an image; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: cannot decode image ({reason}); check the file or remove it from the folder")


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (recursive), sorted by their path relative to ``root``.

    Links named like images are listed even when they point nowhere (dangling or looping), and so
    are pipes and devices named like images, so a job reports them as files it could not read
    instead of skipping them unseen (or blocking on them).

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_symlink() or p.exists())
             and not p.is_dir()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageDecodeError: the file is missing, empty, truncated or not an image.
    """
    import cv2

    path = Path(path)
    data = _read_regular_file(path)
    _check_decoded_size(path, data)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # what the original's imread(path) returns
    except cv2.error as error:  # OpenCV's own size limit, or a decoder assertion
        raise ImageDecodeError(path, f"OpenCV refused it ({str(error).strip().splitlines()[-1]})") from error
    if image is not None:
        return to_rgb_uint8(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), source=path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # what IMREAD_COLOR refuses, e.g. 32-bit float TIFF
    if image is None:
        image = _read_with_pillow(path)
    elif image.ndim == 3 and image.shape[2] >= 3:
        image = image[:, :, 2::-1]  # OpenCV's BGR(A) to RGB; to_rgb_uint8 does the rest (grey + alpha, dtype)
    return to_rgb_uint8(image, source=path)


def _read_regular_file(path: Path) -> np.ndarray:
    """The bytes of a regular file (a link is followed; a pipe, device or folder is refused unread)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(path, "not a regular file (a pipe, a device or a folder)")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageDecodeError(path, str(error)) from error
    if data.size == 0:
        raise ImageDecodeError(path, "the file is empty")
    return data


def image_header_size(data: np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` an encoded image claims in its header (Pillow reads only the header), or ``None``."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as opened:
            return opened.size
    except Image.DecompressionBombError as error:  # Pillow's own limit, read from the header too
        raise ImageDecodeError("<bytes>", str(error)) from error
    except Exception:  # not a format Pillow knows, or a damaged header: the decoder will say
        return None


def _check_decoded_size(path: Path, data: np.ndarray) -> None:
    try:
        size = image_header_size(data)
    except ImageDecodeError as error:
        raise ImageDecodeError(path, f"its header claims more pixels than the {MAX_DECODE_PIXELS:,} this toolkit "
                                     f"decodes ({error.reason})") from error
    if size is not None and size[0] * size[1] > MAX_DECODE_PIXELS:
        raise ImageDecodeError(path, f"it claims {size[0]} x {size[1]} pixels, more than the "
                                     f"{MAX_DECODE_PIXELS:,} this toolkit decodes (a decompression bomb, or a "
                                     f"photo to shrink first)")


def _read_with_pillow(path: Path) -> np.ndarray:
    """Fallback decoder for formats OpenCV lacks (for example some palette or WebP variants)."""
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - pillow comes with torchvision
        raise ImageDecodeError(path, "OpenCV could not decode it and Pillow is not installed") from error
    try:
        from PIL import ImageOps

        Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS  # Pillow refuses larger images itself
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGB")
            elif img.mode.startswith("I;16"):
                return (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)  # the high byte, as OpenCV
            elif img.mode == "I":
                return np.asarray(img).astype(np.int64)
            elif img.mode == "LA":
                img = img.convert("L")
            elif img.mode == "RGBA":
                img = img.convert("RGB")
            return np.asarray(img)
    except Exception as error:  # Pillow raises many types for bad files
        raise ImageDecodeError(path, f"{type(error).__name__}: {error}") from error


def to_rgb_uint8(image: np.ndarray, source: str | Path | None = None) -> np.ndarray:
    """Convert an in-memory image to an ``(H, W, 3)`` uint8 RGB array.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array of uint8, uint16,
            bool, other integers (clipped to 0..255) or floats in [0, 1]. Channel order is taken to
            be RGB(A) already.
        source: named in error messages.

    Raises:
        ImageDecodeError: the array has no pixels or an unsupported shape.
    """
    where = source if source is not None else "<array>"
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 2:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageDecodeError(where, f"unsupported array shape {image.shape}; expected (H, W) or (H, W, 3|4)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageDecodeError(where, f"the image has no pixels (shape {image.shape})")
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:
        image = np.rint(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageDecodeError(where, "the image has NaN or infinite values")
        image = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer):
        image = np.clip(image, 0, 255).astype(np.uint8)
    else:
        raise ImageDecodeError(where, f"unsupported dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as ``(H, W)`` bool. A mask of two values (0/255, 0/1, 0/255 stored in 16 bits)
    or of small integers (an index map such as 0/1/3, where 255 is VOC's "void" border and not an
    object) has every non-zero pixel as foreground; a
    soft (anti-aliased) mask has the values above half its type's range. In a colour mask a pixel
    counts by its largest colour channel (so a red, green or white object on black all work); an
    alpha channel is ignored.

    Raises:
        ValueError: the file cannot be decoded (naming it).
    """
    import cv2

    path = Path(path)
    try:
        data = _read_regular_file(path)
        _check_decoded_size(path, data)
    except ImageDecodeError as error:
        raise ValueError(f"{path}: cannot decode the mask ({error.reason})") from error
    try:
        mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        mask = None
    if mask is None:
        raise ValueError(f"{path}: cannot decode the mask; masks must be PNGs, foreground non-zero")
    if mask.ndim == 3:
        mask = mask[:, :, :3].max(axis=2)
    values = np.unique(mask)
    if len(values) <= 2 or values[-1] < 16:
        return mask > 0
    if values[-1] == 255 and values[-2] < 16:  # an index map with VOC's "void" label 255: not an object
        return (mask > 0) & (mask != 255)
    return mask > (65535 if mask.dtype == np.uint16 else 255) / 2
