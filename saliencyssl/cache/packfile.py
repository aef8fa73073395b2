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
byte offsets, and ``checksum`` (BLAKE2b of the three arrays), which :func:`verify_pack` checks.

When every row has the training size, :func:`load_pack` returns a
:class:`~saliencyssl.augment.pack.FrozenPack` whose tensors *are* the memory map (no copy); with
other sizes it resizes into memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from saliencyssl.saliency.options import describe_params
from saliencyssl.target import Target

MAGIC = b"SSLPACK1"
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


def write_pack(path: str | Path, items: Iterable[tuple[str, Target]], fingerprint: str,
               params: dict | None = None) -> Path:
    """Write ``(content hash, target)`` pairs as a pack (atomically: temp file, then rename).

    Returns:
        The path written.
    """
    path = Path(path)
    hashes, shapes, parts = [], [], {name: [] for name, _ in _ARRAYS}
    for image_hash, target in items:
        if target.num_regions > 32768:
            raise PackError(f"target of {image_hash} has {target.num_regions} regions; packs hold at most 32768")
        hashes.append(image_hash)
        shapes.append(target.shape)
        parts["saliency"].append(target.saliency.ravel())
        parts["mask"].append(target.mask.ravel().astype(np.uint8))
        parts["regions"].append(target.regions.ravel().astype(np.int16))
    if not hashes:
        raise PackError("nothing to pack: no targets were given")
    arrays = {name: np.ascontiguousarray(np.concatenate(parts[name]).astype(dtype)) for name, dtype in _ARRAYS}
    sizes = np.array([h * w for h, w in shapes], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    digest = hashlib.blake2b(digest_size=16)
    for name, _ in _ARRAYS:
        digest.update(memoryview(arrays[name]).cast("B"))
    header = {"format": 1, "fingerprint": fingerprint, "params": params, "hashes": hashes,
              "shapes": [list(s) for s in shapes], "offsets": offsets.tolist(), "checksum": digest.hexdigest(),
              "total_pixels": int(sizes.sum()), "arrays": {}}
    # Array byte offsets depend on the header length, which depends on them: place them after a
    # generous estimate and pad.
    body = json.dumps(header).encode()
    start = _round_up(len(MAGIC) + 8 + len(body) + 512)
    position = start
    for name, _ in _ARRAYS:
        header["arrays"][name] = {"offset": position, "dtype": arrays[name].dtype.str, "length": int(arrays[name].size)}
        position = _round_up(position + arrays[name].nbytes)
    body = json.dumps(header).encode()
    if len(MAGIC) + 8 + len(body) > start:
        raise PackError("pack header larger than its reserved space")  # cannot happen with the margin above
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(struct.pack("<Q", len(body)))
            fh.write(body)
            for name, _ in _ARRAYS:
                fh.seek(header["arrays"][name]["offset"])
                fh.write(memoryview(arrays[name]).cast("B"))
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
        raise FileNotFoundError(f"pack {path} not found; write one with: python scripts/cache.py export CACHE_DIR "
                                f"IMAGES_DIR --out {path}")
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise PackError(f"{path} is not a saliency-ssl pack (magic {magic!r})")
        size_field = fh.read(8)
        if len(size_field) < 8:
            raise PackError(f"{path} is truncated (no header); copy or export it again")
        (length,) = struct.unpack("<Q", size_field)
        try:
            header = json.loads(fh.read(length).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PackError(f"{path}: damaged pack header ({error})") from error
    if expect_fingerprint is not None and header["fingerprint"] != expect_fingerprint:
        raise PackError(f"{path} holds targets of labeller fingerprint {header['fingerprint']} "
                        f"({describe_params(header.get('params'))}), but {expect_fingerprint} was asked for; "
                        f"export a pack with the same labeller options")
    size = path.stat().st_size
    arrays = {}
    for name, dtype in _ARRAYS:
        spec = header["arrays"][name]
        end = spec["offset"] + spec["length"] * np.dtype(spec["dtype"]).itemsize
        if end > size:
            raise PackError(f"{path} is truncated ({size} bytes, {name} needs {end}); copy it again")
        arrays[name] = np.memmap(path, dtype=np.dtype(spec["dtype"]), mode="c", offset=spec["offset"],
                                 shape=(spec["length"],))
    return PackFile(path, header["fingerprint"], header.get("params"), list(header["hashes"]),
                    np.asarray(header["shapes"], np.int64).reshape(-1, 2), np.asarray(header["offsets"], np.int64),
                    arrays, header["checksum"])


def verify_pack(pack: PackFile) -> bool:
    """Recompute the checksum of the arrays (reads the whole file)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, _ in _ARRAYS:
        digest.update(memoryview(np.ascontiguousarray(pack.arrays[name])).cast("B"))
    return digest.hexdigest() == pack.checksum


def load_pack(path: str | Path, hashes: Sequence[str], image_size: int, expect_fingerprint: str | None = None):
    """A :class:`~saliencyssl.augment.pack.FrozenPack` for a data set, straight from a pack file.

    Args:
        path: the pack.
        hashes: content hash per data-set position (:attr:`TrainingImages.hashes`).
        image_size: the training side length.
        expect_fingerprint: refuse another labeller's pack.

    When every row of the pack is ``image_size`` square, the pack's tensors are the memory map
    itself (shared between processes; nothing copied) and a data-set position maps to its row
    through an index; otherwise the targets are resized into memory.
    """
    import torch

    from saliencyssl.datasets import target_at_size
    from saliencyssl.augment.pack import FrozenPack

    pack = open_pack(path, expect_fingerprint)
    rows = pack.row_of()
    position_rows = torch.tensor([rows.get(h, -1) for h in hashes], dtype=torch.long)
    present = position_rows >= 0
    if pack.uniform_size == (image_size, image_size):
        n = len(pack)
        view = {name: torch.from_numpy(arr).view(n, image_size, image_size) for name, arr in pack.arrays.items()}
        frozen = FrozenPack(view["saliency"], view["mask"].view(torch.bool), view["regions"], present, hashes,
                            pack.fingerprint, rows=position_rows.clamp(min=0))
        return frozen
    frozen = FrozenPack.empty(hashes, image_size, pack.fingerprint)
    for position, row in enumerate(position_rows.tolist()):
        if row >= 0:
            frozen._set(position, target_at_size(pack.target(row), image_size))
    frozen._refresh_report()
    return frozen
