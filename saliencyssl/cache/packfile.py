"""Portable packs: a data set's targets in one read-only, memory-mappable file.

A pack travels where a cache directory should not (to every node of a cluster, over a shared
file system, in an object store): one file, written once, read by any number of processes at
once through ``np.memmap`` (the operating system shares its pages between the processes of a
node). Layout::

    b"SSLPACK1"                                   8 bytes
    header length                                 uint64 little-endian
    header                                        UTF-8 JSON (see below)
    zero padding to a 64-byte boundary
    saliency  uint8   (total_pixels,)             RC maps, image after image
    mask      uint8   (total_pixels,)             0/1 SaliencyCut masks
    regions   int16   (total_pixels,)             region labels

The JSON header holds ``fingerprint`` and ``params`` (the labeller's), ``hashes`` (content hash
per row), ``shapes`` (``[h, w]`` per row), ``offsets`` (first pixel of each row), the arrays'
byte offsets, and ``checksum``: BLAKE2b of the three arrays and (format 2) of the fingerprint,
hashes, shapes and offsets, so a damaged hash cannot move a target to another image.
:func:`verify_pack` checks it; training checks it before reading the pack unless told the pack
was just verified. Format 1 packs (checksum over the arrays alone) are still read.

A pack is written as a stream (:func:`write_pack` holds one target at a time, whatever the
number of rows), to a temporary file renamed into place at the end.

Training reads a pack through :func:`saliencyssl.augment.pack.load_pack`, which memory-maps it
as a frozen pack without copying when every row has the training size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from saliencyssl.saliency.params import describe_params
from saliencyssl.target import Target

MAGIC = b"SSLPACK1"
#: The header format written; 1 is still read.
PACK_FORMAT = 2
_ALIGN = 64
_ARRAYS = (("saliency", np.uint8), ("mask", np.uint8), ("regions", np.int16))


class PackError(ValueError):
    """A file that is not a pack, a damaged pack, or a pack of the wrong labeller."""


@dataclass
class PackFile:
    """An opened pack: its header and memory-mapped arrays (read-only, copy-on-write)."""

    path: Path
    fingerprint: str
    params: dict | None
    hashes: list[str]
    shapes: np.ndarray   # (N, 2) int64
    offsets: np.ndarray  # (N,) int64
    arrays: dict[str, np.ndarray]
    checksum: str
    format: int = PACK_FORMAT
    header: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.hashes)

    def target(self, row: int) -> Target:
        h, w = (int(v) for v in self.shapes[row])
        start = int(self.offsets[row])
        sl = slice(start, start + h * w)
        return Target(np.array(self.arrays["saliency"][sl]).reshape(h, w),
                      np.array(self.arrays["mask"][sl]).reshape(h, w).astype(bool),
                      np.array(self.arrays["regions"][sl]).reshape(h, w).astype(np.uint16))

    def row_of(self) -> dict[str, int]:
        return {h: i for i, h in enumerate(self.hashes)}

    @property
    def uniform_size(self) -> tuple[int, int] | None:
        """``(h, w)`` when every row has that size, else ``None``."""
        if len(self.shapes) and (self.shapes == self.shapes[0]).all():
            return int(self.shapes[0, 0]), int(self.shapes[0, 1])
        return None


def _header_digest(header: dict) -> bytes:
    """What format 2's checksum covers beside the arrays: the rows' identity and geometry."""
    fields = {k: header[k] for k in ("fingerprint", "hashes", "shapes", "offsets")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def write_pack(path: str | Path, items: Iterable[tuple[str, Target]], fingerprint: str,
               params: dict | None = None) -> Path:
    """Write ``(content hash, target)`` pairs as a pack, streaming (one target in memory at a time).

    The three arrays go to temporary files beside ``path`` as the items arrive, then the header
    and the arrays are written to ``path`` through a temporary name and a rename, so a reader
    never sees a half-written pack and a failed write leaves nothing behind.

    Returns:
        The path written.

    Raises:
        PackError: no items, or a target with more regions than a pack holds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hashes, shapes = [], []
    digests = {name: hashlib.blake2b(digest_size=16) for name, _ in _ARRAYS}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        parts = {name: open(Path(scratch) / name, "wb") for name, _ in _ARRAYS}
        try:
            for image_hash, target in items:
                if target.num_regions > 32768:
                    raise PackError(f"target of {image_hash} has {target.num_regions} regions; packs hold at most "
                                    f"32768")
                hashes.append(image_hash)
                shapes.append(target.shape)
                for (name, dtype), array in zip(_ARRAYS, (target.saliency, target.mask, target.regions)):
                    data = np.ascontiguousarray(array.ravel().astype(dtype))
                    parts[name].write(memoryview(data).cast("B"))
                    digests[name].update(memoryview(data).cast("B"))
        finally:
            for fh in parts.values():
                fh.close()
        if not hashes:
            raise PackError("nothing to pack: no targets were given")
        sizes = np.array([h * w for h, w in shapes], np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        header = {"format": PACK_FORMAT, "fingerprint": fingerprint, "params": params, "hashes": hashes,
                  "shapes": [list(s) for s in shapes], "offsets": offsets.tolist(), "checksum": "",
                  "total_pixels": int(sizes.sum()), "arrays": {}}
        digest = hashlib.blake2b(digest_size=16)
        for name, _ in _ARRAYS:
            digest.update(digests[name].digest())
        digest.update(_header_digest(header))
        header["checksum"] = digest.hexdigest()
        # Array byte offsets depend on the header length, which depends on them: place them after a
        # generous estimate and pad.
        body = json.dumps(header).encode()
        start = _round_up(len(MAGIC) + 8 + len(body) + 512)
        position = start
        for name, dtype in _ARRAYS:
            length = int(sizes.sum())
            header["arrays"][name] = {"offset": position, "dtype": np.dtype(dtype).str, "length": length}
            position = _round_up(position + length * np.dtype(dtype).itemsize)
        body = json.dumps(header).encode()
        if len(MAGIC) + 8 + len(body) > start:
            raise PackError("pack header larger than its reserved space")  # cannot happen with the margin above
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(MAGIC)
                fh.write(struct.pack("<Q", len(body)))
                fh.write(body)
                for name, _ in _ARRAYS:
                    fh.seek(header["arrays"][name]["offset"])
                    with open(Path(scratch) / name, "rb") as part:
                        shutil.copyfileobj(part, fh, 1 << 22)
                fh.truncate(position)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk or a folder named like the pack leaves nothing behind
            raise
    return path


def _round_up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def open_pack(path: str | Path, expect_fingerprint: str | None = None) -> PackFile:
    """Open a pack for reading (memory-mapped, nothing loaded).

    Raises:
        FileNotFoundError: no such file.
        PackError: not a pack, truncated, or (with ``expect_fingerprint``) another labeller's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pack {path} not found; a pack is exported from a cache for a data set's images")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise PackError(f"{path} is not a saliency-ssl pack (magic {magic!r})")
        size_field = fh.read(8)
        if len(size_field) < 8:
            raise PackError(f"{path} is truncated (no header); copy or export it again")
        (length,) = struct.unpack("<Q", size_field)
        if length > size - len(MAGIC) - 8:
            raise PackError(f"{path}: damaged pack header (it claims {length} bytes, the file has {size}); copy or "
                            f"export it again")
        try:
            header = json.loads(fh.read(length).decode())
            _check_header(header)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError, OverflowError) as error:
            raise PackError(f"{path}: damaged pack header ({type(error).__name__}: {str(error)[:200]}); copy or "
                            f"export it again") from error
    if expect_fingerprint is not None and header["fingerprint"] != expect_fingerprint:
        raise PackError(f"{path} holds targets of labeller fingerprint {header['fingerprint']} "
                        f"({describe_params(header.get('params'))}), but {expect_fingerprint} was asked for; "
                        f"export a pack with the same labeller options")
    arrays = {}
    for name, dtype in _ARRAYS:
        spec = header["arrays"][name]
        end = spec["offset"] + spec["length"] * np.dtype(dtype).itemsize
        if end > size:
            raise PackError(f"{path} is truncated ({size} bytes, {name} needs {end}); copy it again")
        arrays[name] = np.memmap(path, dtype=np.dtype(dtype), mode="c", offset=spec["offset"],
                                 shape=(spec["length"],))
    return PackFile(path, header["fingerprint"], header.get("params"), list(header["hashes"]),
                    np.asarray(header["shapes"], np.int64).reshape(-1, 2), np.asarray(header["offsets"], np.int64),
                    arrays, header["checksum"], int(header.get("format", 1)), header)


def _check_header(header) -> None:
    """Types, sizes and layout of a pack header, so a damaged or crafted one is a :class:`PackError`,
    not a crash or a silent misreading later: rows follow each other without gaps or overlaps (each
    row's offset is the sum of the sizes before it), every side is at most 65,535 px and every row
    at most 100 M pixels, and the parameters are an object."""
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    n = len(header["hashes"])
    if len(header["shapes"]) != n or len(header["offsets"]) != n:
        raise ValueError(f"{n} hashes but {len(header['shapes'])} shapes and {len(header['offsets'])} offsets")
    if not all(isinstance(h, str) for h in header["hashes"]) or not isinstance(header["checksum"], str) \
            or not isinstance(header["fingerprint"], str):
        raise ValueError("hashes, fingerprint and checksum must be strings")
    if header.get("params") is not None and not isinstance(header["params"], dict):
        raise ValueError("params must be an object")
    for value in (v for shape in header["shapes"] for v in (shape if isinstance(shape, list) else [shape])):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65_535:
            raise ValueError(f"a row side of {value!r:.30} (sides are 1 to 65,535 px)")
    shapes = np.asarray(header["shapes"], np.int64).reshape(-1, 2)
    sizes = shapes[:, 0] * shapes[:, 1]
    if n and int(sizes.max()) > 100_000_000:
        raise ValueError("a row of more than 100 M pixels")
    expected = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if n else np.zeros(0, np.int64)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in header["offsets"]) \
            or not np.array_equal(np.asarray(header["offsets"], np.int64), expected):
        raise ValueError("row offsets do not follow the rows' sizes")
    total = int(sizes.sum()) if n else 0
    for name, dtype in _ARRAYS:
        spec = header["arrays"][name]
        if np.dtype(spec["dtype"]) != np.dtype(dtype) or int(spec["length"]) != total or int(spec["offset"]) < 0:
            raise ValueError(f"array {name} does not match the rows ({spec})")


def verify_pack(pack: PackFile) -> bool:
    """Recompute the checksum (reads the whole file): the arrays and, for format 2 packs, the
    fingerprint, hashes, shapes and offsets."""
    if pack.format == 1:
        digest = hashlib.blake2b(digest_size=16)
        for name, _ in _ARRAYS:
            digest.update(memoryview(np.ascontiguousarray(pack.arrays[name])).cast("B"))
        return digest.hexdigest() == pack.checksum
    digest = hashlib.blake2b(digest_size=16)
    for name, _ in _ARRAYS:
        part = hashlib.blake2b(digest_size=16)
        array = pack.arrays[name]
        step = 1 << 24
        for start in range(0, array.size, step):
            part.update(memoryview(np.ascontiguousarray(array[start:start + step])).cast("B"))
        digest.update(part.digest())
    digest.update(_header_digest(pack.header))
    return digest.hexdigest() == pack.checksum
