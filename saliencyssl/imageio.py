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

import io
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

#: File name endings :func:`list_images` picks up (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Largest image :func:`read_image` decodes (width x height, read from the file's header first), so a
#: small file that claims a huge image (a decompression bomb) is refused before any pixel is allocated.
#: 100 M pixels is a 10,000 x 10,000 photo, 300 MB decoded.
MAX_DECODE_PIXELS = 100_000_000
#: The most bytes of samples a TIFF whose header Pillow cannot read may claim (a photo's 100 M pixels of 8-bit RGBA).
MAX_DECODE_BYTES = 4 * MAX_DECODE_PIXELS
# OpenCV's own ceiling, for the formats whose header Pillow cannot read (OpenCV reads this once, at its
# first decode; a caller's own setting is kept).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_DECODE_PIXELS))
#: Largest image file :func:`read_image` and :func:`read_mask` read, checked on the opened file before any
#: byte is read. The largest image they decode (:data:`MAX_DECODE_PIXELS`) stored uncompressed at 4 bytes a
#: pixel (8-bit RGBA, as an uncompressed BMP or TIFF holds it; PNG, JPEG and WebP are smaller) takes 400 MB,
#: plus 1 MiB for headers and metadata (EXIF, ICC profiles). A larger file cannot be an image this toolkit
#: decodes, only one that would take its size in memory before failing (a 16-bit or float TIFF over 50 M
#: pixels, stored uncompressed, is refused too: convert it to 8 bits first).
MAX_IMAGE_FILE_BYTES = 4 * MAX_DECODE_PIXELS + (1 << 20)


class ImageDecodeError(ValueError):
    """A file that could not be decoded as an image; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: cannot decode image ({reason}); check the file or remove it from the folder")

    def __reduce__(self):  # rebuilt from its fields when a worker process sends it back
        return type(self), (self.path, self.reason)


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (recursive), sorted by their path relative to ``root``.

    Links named like images are listed even when they point nowhere (dangling or looping), and so
    are pipes and devices named like images, so a job reports them as files it could not read
    instead of skipping them unseen (or blocking on them). Links to folders are not followed, and the
    walk keeps its own stack (:func:`walk_files`), so a folder nested thousands deep is listed like
    any other.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        OSError: a folder below ``root`` cannot be listed for another reason than its permissions
            (for example a path longer than the system allows), naming it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    files = [p for p in walk_files(root) if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def walk_files(root: str | Path) -> Iterator[Path]:
    """Every entry below ``root`` that is not a folder (files, links of any kind, pipes, devices).

    Iterative (an explicit stack of folders, never recursion), so the depth of a tree is no limit;
    links to folders are listed as entries, not followed (as :meth:`pathlib.Path.rglob` does), so a
    link cannot make the walk loop. A folder without read permission is skipped, as ``rglob`` skips it.

    Raises:
        OSError: a folder cannot be listed for another reason, naming it.
    """
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        yield Path(entry.path)
        except (PermissionError, FileNotFoundError):  # unreadable, or removed while walking
            continue
        except OSError as error:
            raise OSError(error.errno, f"cannot list the folder ({error.strerror}); move its images to a "
                                       f"shallower folder or remove it", str(folder)) from error


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageDecodeError: the file is missing, empty, truncated or not an image.
    """
    import cv2

    path = Path(path)
    data = read_image_file(path)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # what the original's imread(path) returns
    except cv2.error as error:  # OpenCV's own size limit, or a decoder assertion
        raise ImageDecodeError(path, f"OpenCV refused it ({str(error).strip().splitlines()[-1]})") from error
    if image is not None:
        return to_rgb_uint8(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), source=path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # what IMREAD_COLOR refuses, e.g. 32-bit float TIFF
    if image is None:
        image = _read_with_pillow(path, data)
    elif image.ndim == 3 and image.shape[2] >= 3:
        image = image[:, :, 2::-1]  # OpenCV's BGR(A) to RGB; to_rgb_uint8 does the rest (grey + alpha, dtype)
    return to_rgb_uint8(image, source=path)


def read_image_file(path: str | Path) -> np.ndarray:
    """The encoded bytes of an image file, as ``(n,)`` uint8, after every check that needs no decoding.

    In order, each before anything larger is read: the path must name a regular file (a link is
    followed; a pipe, device or folder is refused unopened, since opening a pipe blocks); the opened
    file's size (``fstat``) must lie in ``1..MAX_IMAGE_FILE_BYTES``; the size its header claims
    (read by Pillow from the start of the file, a few KB) must be at most :data:`MAX_DECODE_PIXELS`.
    Only then is the file read, once, into one array.

    Raises:
        ImageDecodeError: naming the file and the check it failed.
    """
    path = Path(path)
    try:
        with _open_regular_file(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise ImageDecodeError(path, "the file is empty")
            if size > MAX_IMAGE_FILE_BYTES:
                raise ImageDecodeError(path, f"the file has {size:,} bytes, more than the {MAX_IMAGE_FILE_BYTES:,} "
                                             f"an image of {MAX_DECODE_PIXELS:,} pixels can take; it is not an image "
                                             f"this toolkit decodes")
            _check_claimed_pixels(path, fh)
            fh.seek(0)
            data = np.empty(size, np.uint8)
            view, filled = memoryview(data), 0
            while filled < size:  # the file may have shrunk since fstat: keep what is there
                count = fh.readinto(view[filled:])
                if not count:
                    break
                filled += count
    except OSError as error:
        raise ImageDecodeError(path, str(error)) from error
    if filled == 0:
        raise ImageDecodeError(path, "the file is empty")
    _check_format(path, data[:filled])
    _check_tiff(path, data[:filled])  # a TIFF Pillow cannot read the header of: its own directory, read here
    return data[:filled]


def _open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (a link is followed), else ImageDecodeError.

    The name is checked before opening (opening a pipe blocks until someone writes to it), and the
    opened file again (the name may have been swapped in between; ``O_NONBLOCK`` keeps that open from
    blocking)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ImageDecodeError(path, "not a regular file (a pipe, a device or a folder)")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageDecodeError(path, "not a regular file (a pipe, a device or a folder)")
    return os.fdopen(fd, "rb")


class _BufferFile(io.RawIOBase):
    """A read-only, seekable file over a buffer that is never copied whole (reads copy what they return)."""

    def __init__(self, data):
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._view[self._pos:self._pos + len(buffer)]
        memoryview(buffer).cast("B")[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def image_header_size(data) -> tuple[int, int] | None:
    """``(width, height)`` an encoded image claims in its header, or ``None``.

    Args:
        data: the encoded image as a binary file opened at its start (Pillow reads only the header
            from it, a few KB), or as a buffer (``(n,)`` uint8 array, bytes), read in place, not copied.

    Raises:
        ImageDecodeError: the header claims more than Pillow's own limit (``<bytes>`` stands for the file).
    """
    from PIL import Image

    source = data if hasattr(data, "read") else io.BufferedReader(_BufferFile(data))
    try:
        with warnings.catch_warnings():  # Pillow's warning above 89 M pixels: the caller compares the size itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                return opened.size
    except Image.DecompressionBombError as error:  # Pillow's own limit, read from the header too
        raise ImageDecodeError("<bytes>", str(error)) from error
    except Exception:  # not a format Pillow knows, or a damaged header: the decoder will say
        return None


def tiff_header(data) -> tuple[int, int, int, int] | None:
    """``(width, height, samples per pixel, bits per sample)`` from a classic TIFF's first directory, read in place
    from the first bytes of ``data`` (a buffer); ``None`` for a buffer that is not a classic TIFF.

    Pillow cannot read the header of some TIFFs that OpenCV decodes (several channels of 32-bit floats, say), so
    their size is read here: a compressed one of a few megabytes can claim gigabytes of pixels.

    Raises:
        ValueError: a TIFF whose first directory cannot be read (or a BigTIFF).
    """
    head = bytes(memoryview(data).cast("B")[:8])
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head[:4])
    if order is None:
        if head[:4] in (b"II+\x00", b"MM\x00+"):
            raise ValueError("a BigTIFF, whose size cannot be checked before decoding")
        return None
    view = memoryview(data).cast("B")
    (offset,) = struct.unpack(order + "I", head[4:8])
    if offset + 2 > len(view):
        raise ValueError("its first directory lies outside the file")
    (count,) = struct.unpack(order + "H", view[offset:offset + 2])
    if offset + 2 + 12 * count > len(view):
        raise ValueError("its first directory runs past the end of the file")
    tags = {}
    for i in range(count):
        tag, kind, n, value = struct.unpack(order + "HHII", view[offset + 2 + 12 * i:offset + 14 + 12 * i])
        if kind == 3 and n <= 2:  # SHORT: the value sits in the first two bytes of the field
            value = struct.unpack(order + "H", struct.pack(order + "I", value)[:2])[0]
        if tag in tags:  # libtiff keeps the first copy, a dict the last: a size read from either could be the lie
            raise ValueError(f"its first directory gives tag {tag} twice")
        tags[tag] = (kind, n, value)
    if 256 not in tags or 257 not in tags:
        raise ValueError("its first directory gives no width or height")
    samples = tags.get(277, (3, 1, 1))[2]
    bits_kind, bits_count, bits = tags.get(258, (3, 1, 1))
    if bits_count > 2:  # one value per sample, stored at the field's offset: the first is every sample's here
        bits = struct.unpack(order + "H", view[bits:bits + 2])[0] if bits_kind == 3 and bits + 2 <= len(view) else 64
    return tags[256][2], tags[257][2], samples, bits


#: The signatures of the formats decoded (PNG, JPEG, BMP, TIFF, WebP, GIF), whatever a file's name says: OpenCV
#: also decodes formats whose header Pillow cannot check (Radiance HDR, OpenEXR, PFM), into 12 or more bytes a pixel.
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a")


def _check_format(path: Path, data) -> None:
    """Refuse content that is not one of the formats decoded (see :data:`IMAGE_SIGNATURES`; WebP: RIFF....WEBP)."""
    head = bytes(memoryview(data).cast("B")[:12])
    if head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return
    raise ImageDecodeError(path, "its content is not PNG, JPEG, BMP, TIFF, WebP or GIF, the formats this toolkit "
                                 "decodes (its size could not be checked before decoding)")


def _check_tiff(path: Path, data) -> None:
    """Refuse a TIFF (read whole, as ``data``) that claims more than :data:`MAX_DECODE_BYTES` bytes of samples or
    :data:`MAX_DECODE_PIXELS` pixels, or whose size cannot be read; other formats pass."""
    try:
        tiff = tiff_header(data)
    except (ValueError, struct.error) as error:
        raise ImageDecodeError(path, f"a TIFF whose size cannot be read before decoding ({error}); convert it "
                                     f"to PNG") from None
    if tiff is not None:
        width, height, samples, bits = tiff
        if width * height * samples * bits // 8 > MAX_DECODE_BYTES or width * height > MAX_DECODE_PIXELS:
            raise ImageDecodeError(path, f"it claims {width} x {height} pixels of {samples} x {bits}-bit samples, "
                                         f"more than the {MAX_DECODE_BYTES:,} bytes this toolkit decodes (a "
                                         f"decompression bomb, or an image to shrink first)")


def _check_claimed_pixels(path: Path, data) -> None:
    """Refuse a file (or buffer) whose header claims more than :data:`MAX_DECODE_PIXELS` pixels."""
    try:
        size = image_header_size(data)
    except ImageDecodeError as error:
        raise ImageDecodeError(path, f"its header claims more pixels than the {MAX_DECODE_PIXELS:,} this toolkit "
                                     f"decodes ({error.reason})") from error
    if size is not None and size[0] * size[1] > MAX_DECODE_PIXELS:
        raise ImageDecodeError(path, f"it claims {size[0]} x {size[1]} pixels, more than the "
                                     f"{MAX_DECODE_PIXELS:,} this toolkit decodes (a decompression bomb, or a "
                                     f"photo to shrink first)")


def _read_with_pillow(path: Path, data: np.ndarray) -> np.ndarray:
    """Fallback decoder for formats OpenCV lacks (for example some palette or WebP variants), on the
    bytes :func:`read_image_file` read (``path`` only names them)."""
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - pillow comes with torchvision
        raise ImageDecodeError(path, "OpenCV could not decode it and Pillow is not installed") from error
    try:
        from PIL import ImageOps

        Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS  # Pillow refuses larger images itself
        with Image.open(io.BufferedReader(_BufferFile(data))) as opened:
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
    soft (anti-aliased) mask has the values above half its type's range. A palette PNG (VOC's
    class maps) is read as the index map it stores: every index but 0 and VOC's void 255 is
    foreground, whatever colour the palette gives it. In a colour mask a pixel counts by its
    largest colour channel (so a red, green or white object on black all work); an alpha channel is
    ignored.

    Raises:
        ValueError: the file cannot be decoded (naming it).
    """
    import cv2

    path = Path(path)
    try:
        data = read_image_file(path)
    except ImageDecodeError as error:
        raise ValueError(f"{path}: cannot decode the mask ({error.reason})") from error
    from PIL import Image, UnidentifiedImageError

    try:  # OpenCV would turn a palette's indices into its colours
        with Image.open(io.BytesIO(data)) as image:
            if image.mode == "P":
                index = np.asarray(image)
                return (index > 0) & (index != 255)
    except (UnidentifiedImageError, OSError, ValueError):
        pass  # OpenCV decodes it, or says it cannot
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
