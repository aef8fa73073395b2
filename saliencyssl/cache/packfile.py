"""Portable packs: a data set's targets in one read-only, memory-mappable file.

A pack travels where a cache directory should not (to every node of a cluster, over a shared
file system, in an object store): one file, written once, read by any number of processes at
once through ``np.memmap`` (the operating system shares its pages between the processes of a
node). Layout::

    b"SSLPACK1"                                   8 bytes
    header length                                 uint64 little-endian (at most MAX_HEADER_BYTES)
    header                                        UTF-8 JSON (see below)
    zero padding to a 64-byte boundary
    saliency  uint8   (total_pixels,)             RC maps, image after image
    mask      uint8   (total_pixels,)             0/1 SaliencyCut masks
    regions   int16   (total_pixels,)             region labels

The JSON header holds ``format``, ``fingerprint`` and ``params`` (the labeller's), ``hashes``
(content hash per row), ``shapes`` (``[h, w]`` per row), ``offsets`` (first pixel of each row),
``total_pixels``, ``arrays`` (each array's byte offset, dtype and length) and ``checksum``:
BLAKE2b over the three arrays and the header.

- **Format 3** (written now): the checksum covers the arrays and every other header field, as
  canonical JSON (sorted keys, no spaces): the format number, the fingerprint, the labeller
  parameters, the rows' hashes, shapes and offsets and the arrays' layout. A damaged hash cannot
  move a target to another image, and altered parameters cannot pass for the labeller's.
- **Format 2** (still read): the checksum covers the arrays and the fingerprint, hashes, shapes
  and offsets, not the format number nor the parameters. Its parameters are therefore not
  trusted: :attr:`PackFile.params` is ``None`` for it, and nothing records them.
- **Format 1** (refused): its checksum covers the arrays alone, so a damaged hash would file a
  target under another image; export such a pack again.

:func:`open_pack` type-checks every header field (integers are JSON integers, not booleans,
fractions or text) and bounds the header before reading it, so a damaged or crafted header is one
:class:`PackError` naming the file. :func:`verify_pack` checks the checksum; training checks it
before reading the pack unless told the pack was just verified.

A pack is written as a stream (:func:`write_pack` holds one target at a time, whatever the
number of rows), to a temporary file renamed into place at the end.

Training reads a pack through :func:`saliencyssl.augment.pack.load_pack`, which memory-maps it
as a frozen pack without copying when every row has the training size.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from saliencyssl.files import temporary_beside
from saliencyssl.hashing import HASH_HEX_LENGTH
from saliencyssl.saliency.params import describe_params
from saliencyssl.target import Target

MAGIC = b"SSLPACK1"
#: The header format written.
PACK_FORMAT = 3
#: The header formats read (2: parameters and format number outside the checksum; 1 is refused).
READABLE_FORMATS = (2, 3)
#: The largest header a pack may have. A row takes about 56 header bytes at 32 px (a pack of 50,000
#: CIFAR rows has a 2.79 MB header) and 61 at 224 px (ImageNet-1k's 1.28 M rows: 78 MB), so this
#: admits about 2.2 M rows while a damaged or crafted length cannot make a reader allocate more.
MAX_HEADER_BYTES = 128 * 2 ** 20
_ALIGN = 64
_ARRAYS = (("saliency", np.uint8), ("mask", np.uint8), ("regions", np.int16))
_FIELDS = ("format", "fingerprint", "params", "hashes", "shapes", "offsets", "checksum", "total_pixels", "arrays")
_HASH = re.compile(f"[0-9a-f]{{{HASH_HEX_LENGTH}}}")
_QUOTED_HASH = re.compile(f'"[0-9a-f]{{{HASH_HEX_LENGTH}}}"')
#: JSON strings, to count the containers outside them. Written so that a match, once begun, cannot fail (an
#: unclosed string runs to the end): the plain ``"(?:[^"\\]|\\.)*"`` backtracks over an unclosed one from every
#: quote: 41 KB of ``\"`` took 5 s, and the time grows with the square of the length.
_STRINGS = re.compile(r'"(?:[^"\\]|\\[\s\S]?)*"?')
_CHECKSUM = re.compile("[0-9a-f]{32}")
_FINGERPRINT = re.compile(r"[0-9A-Za-z_.-]{1,64}")
#: Largest recorded labeller parameters a header may hold: entries, characters of a text value, list length.
_MAX_PARAMS, _MAX_TEXT, _MAX_LIST = 64, 256, 16


class PackError(ValueError):
    """A file that is not a pack, a damaged pack, or a pack of the wrong labeller."""


class _Refused(ValueError):
    """A well-formed header this version does not read (its own message, not "damaged")."""


@dataclass
class PackFile:
    """An opened pack: its header and memory-mapped arrays (read-only, copy-on-write).

    ``params`` are the labeller parameters the checksum covers: ``None`` for a format 2 pack,
    whose checksum does not cover them (they stay in ``header``, untrusted).
    """

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


def _canonical(value) -> bytes:
    """Canonical JSON (sorted keys, no spaces, ASCII, no NaN): the same bytes for the same header."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _header_digest(header: dict) -> bytes:
    """What format 2's checksum covers beside the arrays: the rows' identity and geometry."""
    fields = {k: header[k] for k in ("fingerprint", "hashes", "shapes", "offsets")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _covered_header(header: dict, fmt: int) -> bytes:
    """The header bytes a format's checksum covers: format 3 every field but the checksum."""
    if fmt == 2:
        return _header_digest(header)
    return _canonical({k: v for k, v in header.items() if k != "checksum"})


def _checksum(array_digests: Iterable[bytes], header: dict, fmt: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in array_digests:
        digest.update(part)
    digest.update(_covered_header(header, fmt))
    return digest.hexdigest()


def _no_constant(name: str):
    raise ValueError(f"{name} in the header (not JSON)")


def write_pack(path: str | Path, items: Iterable[tuple[str, Target]], fingerprint: str,
               params: dict | None = None) -> Path:
    """Write ``(content hash, target)`` pairs as a pack, streaming (one target in memory at a time).

    The three arrays go to temporary files beside ``path`` as the items arrive, then the header
    and the arrays are written to ``path`` through a temporary name and a rename, so a reader
    never sees a half-written pack and a failed write (a full disk) leaves nothing behind.

    Args:
        path: the pack to write (replaced if it exists).
        items: ``(content hash, target)``; each hash 32 lowercase hex characters, once.
        fingerprint: the labeller fingerprint (1 to 64 letters, digits, ``_``, ``.``, ``-``).
        params: the labeller parameters (JSON: numbers, text, lists), recorded and checksummed.

    Returns:
        The path written.

    Raises:
        PackError: no items, a hash that is not a content hash or comes twice, a target with
            more regions than a pack holds, parameters that are not JSON, or a header over
            :data:`MAX_HEADER_BYTES`.
        OSError: the pack could not be written (one line naming it; nothing is left behind).
    """
    path = Path(path)
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise PackError(f"invalid labeller fingerprint {fingerprint!r:.80} (1-64 letters, digits, '_', '.', '-')")
    if params is not None:
        try:
            params = json.loads(_canonical(params))
            _check_params(params)
        except (TypeError, ValueError) as error:
            raise PackError(f"labeller parameters a pack cannot hold ({error})") from error
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _write_pack(path, items, fingerprint, params)
    except OSError as error:
        reason = error.strerror or str(error)
        space = f"; free space in {path.parent}" if error.errno == 28 else ""
        failure = OSError(f"cannot write the pack {path}: {reason}{space}; nothing was written, choose another "
                          f"destination or retry")
        failure.errno = error.errno
        raise failure from error


def _write_pack(path: Path, items, fingerprint: str, params: dict | None) -> Path:
    hashes, shapes, seen = [], [], set()
    digests = {name: hashlib.blake2b(digest_size=16) for name, _ in _ARRAYS}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        parts = {name: open(Path(scratch) / name, "wb") for name, _ in _ARRAYS}
        try:
            for image_hash, target in items:
                if not isinstance(image_hash, str) or not _HASH.fullmatch(image_hash):
                    raise PackError(f"{image_hash!r:.50} is not a content hash ({HASH_HEX_LENGTH} lowercase hex "
                                    f"characters)")
                if image_hash in seen:
                    raise PackError(f"the target of {image_hash} was given twice; a pack holds one row per image")
                if target.num_regions > 32768:
                    raise PackError(f"target of {image_hash} has {target.num_regions} regions; packs hold at most "
                                    f"32768")
                seen.add(image_hash)
                hashes.append(image_hash)
                shapes.append([int(v) for v in target.shape])
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
        total = int(sizes.sum())
        header = {"format": PACK_FORMAT, "fingerprint": fingerprint, "params": params, "hashes": hashes,
                  "shapes": shapes, "offsets": offsets.tolist(), "checksum": "0" * 32, "total_pixels": total,
                  "arrays": {}}
        # Array byte offsets depend on the header length, which depends on them: place them after a
        # generous estimate and pad. The checksum has a fixed length, so filling it in changes nothing.
        body = json.dumps(header).encode()
        start = _round_up(len(MAGIC) + 8 + len(body) + 512)
        position = start
        for name, dtype in _ARRAYS:
            header["arrays"][name] = {"offset": position, "dtype": np.dtype(dtype).str, "length": total}
            position = _round_up(position + total * np.dtype(dtype).itemsize)
        header["checksum"] = _checksum((digests[name].digest() for name, _ in _ARRAYS), header, PACK_FORMAT)
        body = json.dumps(header).encode()
        if len(body) > MAX_HEADER_BYTES:
            raise PackError(f"a pack of {len(hashes):,} rows needs a header of {len(body):,} bytes, over the "
                            f"{MAX_HEADER_BYTES:,} a reader accepts; split the images into several packs")
        if len(MAGIC) + 8 + len(body) > start:
            raise PackError("pack header larger than its reserved space")  # cannot happen with the margin above
        # a fresh file of a random name, moved over the pack's name: a full disk leaves nothing behind, and
        # nothing planted at a guessable name is written through
        with temporary_beside(path) as tmp, open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(struct.pack("<Q", len(body)))
            fh.write(body)
            for name, _ in _ARRAYS:
                fh.seek(header["arrays"][name]["offset"])
                with open(Path(scratch) / name, "rb") as part:
                    shutil.copyfileobj(part, fh, 1 << 22)
            fh.truncate(position)
    return path


def _round_up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


#: The most objects and lists a pack header's JSON may hold besides its rows' ``[h, w]`` shapes (one writes a
#: handful: the header, its arrays, its parameters); a 128 MiB header of "{}," would otherwise build 3 GB of empty
#: dicts before any field is checked.
MAX_HEADER_CONTAINERS = 1_000


def _check_header_text(text: str) -> None:
    """Refuse header JSON with more objects and lists than a pack's header can hold, counted outside its strings
    (a name may hold braces) before it is parsed: :data:`MAX_HEADER_CONTAINERS`, and one shape list a row, as
    many as the header holds content hashes. Each list allowed beyond the handful thus comes with a 34-byte
    string, which bounds what parsing can allocate to a few times the header's size, as for a real header."""
    if text.count("{") + text.count("[") <= MAX_HEADER_CONTAINERS:
        return
    structure = _STRINGS.sub("", text)
    containers = structure.count("{") + structure.count("[")
    if containers > MAX_HEADER_CONTAINERS + sum(1 for _ in _QUOTED_HASH.finditer(text)):
        raise _Refused(f"has a damaged header: {containers:,} JSON objects and lists, where a pack's header holds "
                       f"a handful and one a row; export it again")


def open_pack(path: str | Path, expect_fingerprint: str | None = None) -> PackFile:
    """Open a pack for reading (memory-mapped, nothing loaded).

    The header is bounded (:data:`MAX_HEADER_BYTES`, and the file's size) before it is read,
    and every field is type-checked (:func:`_check_header`).

    Raises:
        FileNotFoundError: no such file.
        PackError: not a pack, truncated, a damaged or crafted header, a format this version does
            not read (1, or newer than :data:`PACK_FORMAT`), no rows, or (with
            ``expect_fingerprint``) another labeller's; the message names the file.
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
        if length > MAX_HEADER_BYTES:
            raise PackError(f"{path}: damaged pack header (it claims {length:,} bytes, more than the "
                            f"{MAX_HEADER_BYTES:,} a pack header has); copy or export it again")
        if length > size - len(MAGIC) - 8:
            raise PackError(f"{path}: damaged pack header (it claims {length} bytes, the file has {size}); copy or "
                            f"export it again")
        try:
            text = fh.read(length).decode()
            _check_header_text(text)
            header = json.loads(text, parse_constant=_no_constant)
            _check_header(header, size, len(MAGIC) + 8 + length)
        except _Refused as error:
            raise PackError(f"{path} {error}") from error
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError, OverflowError) as error:
            raise PackError(f"{path}: damaged pack header ({type(error).__name__}: {str(error)[:200]}); copy or "
                            f"export it again") from error
    fmt = header["format"]
    if expect_fingerprint is not None and header["fingerprint"] != expect_fingerprint:
        params = describe_params(header["params"]) if fmt >= 3 else "parameters not covered by its checksum"
        raise PackError(f"{path} holds targets of labeller fingerprint {header['fingerprint']} ({params}), but "
                        f"{expect_fingerprint} was asked for; export a pack with the same labeller options")
    arrays = {}
    for name, dtype in _ARRAYS:
        spec = header["arrays"][name]
        arrays[name] = np.memmap(path, dtype=np.dtype(dtype), mode="c", offset=spec["offset"],
                                 shape=(spec["length"],))
    return PackFile(path, header["fingerprint"], header["params"] if fmt >= 3 else None, list(header["hashes"]),
                    np.asarray(header["shapes"], np.int64).reshape(-1, 2), np.asarray(header["offsets"], np.int64),
                    arrays, header["checksum"], fmt, header)


def _is_int(value) -> bool:
    """A JSON integer: ``int`` but not ``bool`` (a float, even ``2.0``, or text is not one)."""
    return type(value) is int


def _check_params(params) -> None:
    """Labeller parameters as a header may hold them: ``None`` or an object of at most 64 names with
    ``None``, finite numbers, short text, or short lists of finite numbers (JSON reads ``1e400`` as
    infinity, which no labeller parameter is and canonical JSON cannot write back). Which names the labeller knows is
    checked where parameters are recorded (:func:`saliencyssl.cache.store.check_labeller_params`)."""
    if params is None:
        return
    if not isinstance(params, dict) or len(params) > _MAX_PARAMS:
        raise ValueError(f"params must be an object of at most {_MAX_PARAMS} entries")
    def finite(v) -> bool:
        return type(v) in (int, bool) or (type(v) is float and math.isfinite(v))

    for name, value in params.items():
        scalar = value is None or finite(value) or (isinstance(value, str) and len(value) <= _MAX_TEXT)
        listed = type(value) is list and len(value) <= _MAX_LIST and all(type(v) is not bool and finite(v)
                                                                          for v in value)
        if len(name) > _MAX_TEXT or not (scalar or listed):
            raise ValueError(f"params.{name[:40]} = {value!r:.40} is not a finite number, a short text or a list of "
                             f"finite numbers")


def _check_header(header, size: int, data_start: int) -> None:
    """Every field of a pack header, so a damaged or crafted one is a :class:`PackError` (naming
    the file), never a crash or a silent misreading later.

    - the fields are exactly those a pack has; ``format`` is an integer this version reads
      (:data:`READABLE_FORMATS`; 1 is refused with its own message, as is a pack of no rows);
    - ``fingerprint`` is a labeller fingerprint, ``checksum`` 32 hex characters, each of
      ``hashes`` a content hash, each once;
    - ``shapes`` are ``[h, w]`` integer pairs, 1 to 65,535 px a side, at most 100 M pixels a row;
      ``offsets`` are integers and follow the rows without gaps or overlaps (each row's offset is
      the sum of the sizes before it); ``total_pixels`` is their sum;
    - ``arrays`` gives each of the three arrays an integer offset after the header, its dtype, an
      integer length equal to ``total_pixels``, and an end inside the file of ``size`` bytes;
    - ``params`` is ``None`` or labeller parameters (:func:`_check_params`).

    Raises:
        ValueError: what is wrong (:class:`_Refused` for a format or a pack this version does not read).
    """
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    fmt = header.get("format", 1)
    if not _is_int(fmt):
        raise ValueError(f"format {fmt!r:.30} is not an integer")
    if fmt == 1:
        raise _Refused("is a format 1 pack, whose checksum does not cover the rows' image hashes (a damaged hash "
                       "would file a target under another image); export it again with this saliency-ssl")
    if fmt not in READABLE_FORMATS:
        raise _Refused(f"is a format {fmt} pack; this saliency-ssl reads formats "
                       f"{', '.join(map(str, READABLE_FORMATS))}: export it again with this version, or update "
                       f"saliency-ssl")
    missing = [k for k in _FIELDS if k not in header]
    extra = [str(k)[:40] for k in header if k not in _FIELDS]
    if missing or extra:
        raise ValueError(f"fields missing: {', '.join(missing) or 'none'}; unknown fields: "
                         f"{', '.join(extra) or 'none'}")
    fingerprint, checksum, hashes = header["fingerprint"], header["checksum"], header["hashes"]
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"fingerprint {fingerprint!r:.40} is not a labeller fingerprint")
    if not isinstance(checksum, str) or not _CHECKSUM.fullmatch(checksum):
        raise ValueError(f"checksum {checksum!r:.40} is not 32 hex characters")
    _check_params(header["params"])
    if type(hashes) is not list or type(header["shapes"]) is not list or type(header["offsets"]) is not list:
        raise ValueError("hashes, shapes and offsets must be lists")
    n = len(hashes)
    if len(header["shapes"]) != n or len(header["offsets"]) != n:
        raise ValueError(f"{n} hashes but {len(header['shapes'])} shapes and {len(header['offsets'])} offsets")
    if n == 0:
        raise _Refused("holds no targets (saliency-ssl never writes an empty pack); export it again")
    if not all(isinstance(h, str) and _HASH.fullmatch(h) for h in hashes):
        raise ValueError(f"a row hash that is not {HASH_HEX_LENGTH} lowercase hex characters")
    if len(set(hashes)) != n:
        raise ValueError("an image hash listed twice")
    for shape in header["shapes"]:
        if type(shape) is not list or len(shape) != 2 or not all(_is_int(v) and 1 <= v <= 65_535 for v in shape):
            raise ValueError(f"a row shape of {shape!r:.30} (two integer sides of 1 to 65,535 px)")
    shapes = np.asarray(header["shapes"], np.int64)
    sizes = shapes[:, 0] * shapes[:, 1]
    if int(sizes.max()) > 100_000_000:
        raise ValueError("a row of more than 100 M pixels")
    expected = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if not all(_is_int(v) for v in header["offsets"]) \
            or not np.array_equal(np.asarray(header["offsets"], np.int64), expected):
        raise ValueError("row offsets do not follow the rows' sizes")
    total = int(sizes.sum())
    if not _is_int(header["total_pixels"]) or header["total_pixels"] != total:
        raise ValueError(f"total_pixels {header['total_pixels']!r:.30} is not the rows' {total} pixels")
    arrays = header["arrays"]
    if not isinstance(arrays, dict) or sorted(arrays) != sorted(name for name, _ in _ARRAYS):
        raise ValueError(f"arrays must name {', '.join(name for name, _ in _ARRAYS)}")
    for name, dtype in _ARRAYS:
        spec = arrays[name]
        if not isinstance(spec, dict) or sorted(spec) != ["dtype", "length", "offset"]:
            raise ValueError(f"array {name} must have an offset, a dtype and a length")
        offset, length = spec["offset"], spec["length"]
        if not _is_int(offset) or not _is_int(length) or spec["dtype"] != np.dtype(dtype).str:
            raise ValueError(f"array {name}: offset and length must be integers and dtype {np.dtype(dtype).str!r} "
                             f"({str(spec)[:120]})")
        if length != total or not data_start <= offset:
            raise ValueError(f"array {name} does not match the rows, or overlaps the header ({str(spec)[:120]})")
        end = offset + length * np.dtype(dtype).itemsize
        if end > size:
            raise _Refused(f"is truncated ({size} bytes, {name} needs {end}); copy it again")


def verify_pack(pack: PackFile) -> bool:
    """Recompute the checksum (reads the whole file): the arrays, and the header fields the
    pack's format covers (format 3: all of them; format 2: fingerprint, hashes, shapes, offsets)."""
    parts = []
    for name, _ in _ARRAYS:
        part = hashlib.blake2b(digest_size=16)
        array = pack.arrays[name]
        step = 1 << 24
        for start in range(0, array.size, step):
            part.update(memoryview(np.ascontiguousarray(array[start:start + step])).cast("B"))
        parts.append(part.digest())
    return _checksum(parts, pack.header, pack.format) == pack.checksum
