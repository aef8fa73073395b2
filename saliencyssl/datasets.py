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
  ``test_batch`` and ``batches.meta``, as in ``cifar-10-batches-py``, and no image files): its train
  batches (``test_batch`` alone when only it is there), or the path of one batch file.

CIFAR batches are pickles, and a pickle can run code when it is loaded. They are read by
:class:`CifarUnpickler`, which builds only what the format holds (dicts, lists, strings, bytes,
numbers and numpy arrays) and refuses anything else, so a batch file from someone else cannot
run code. A folder is read as CIFAR batches only when it holds ``batches.meta`` and at least one
batch and no image file, so one stray file named ``data_batch_1`` does not turn an image folder
into a CIFAR folder (it is reported instead).

For training at one size, :func:`fit_square` resizes the shorter side and centre-crops, and
:meth:`ImageSet.stack` returns every image at that size as one ``(N, 3, S, S)`` uint8 tensor.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from saliencyssl.target import Target

from saliencyssl.hashing import content_hash
from saliencyssl.imageio import IMAGE_SUFFIXES, ImageDecodeError, list_images, read_image, to_rgb_uint8, \
    walk_files

#: Square sizes a stage accepts for its training images: the networks need at least 8 px, and no stage
#: is meant for more than 1,024 px (a set of CIFAR size would no longer fit in memory).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024


def check_image_size(size: int, what: str = "image size") -> int:
    """``size`` as an int when it lies in ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``.

    Raises:
        ValueError: naming ``what``, the value and the range.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not \
            MIN_IMAGE_SIZE <= int(size) <= MAX_IMAGE_SIZE:
        raise ValueError(f"{what} must be a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, "
                         f"got {size!r}")
    return int(size)


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux ``MemAvailable``), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(needed: int, what: str) -> None:
    """Refuse to allocate ``needed`` bytes for ``what`` when the machine has less available.

    Raises:
        MemoryError: naming what needs how much, and what is available.
    """
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(f"{what} needs {needed / 1e9:.1f} GB of memory and {available / 1e9:.1f} GB are available; "
                          f"use fewer images or a smaller image size")


CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
#: Largest CIFAR pickle :func:`load_cifar_pickle` reads, checked on the opened file before any byte is
#: read. A CIFAR-10 batch holds 10,000 images of 3,072 bytes (31 MB on disk); 256 MiB leaves room for a
#: batch of 80,000 images (CIFAR-100's single 50,000-image training file is 155 MB) and refuses a file
#: that would only fill memory.
MAX_CIFAR_FILE_BYTES = 256 << 20
#: What a CIFAR pickle may build through numpy's rebuilders and ``_codecs.encode`` (arrays, bytes, scalars, and
#: bytearrays) and its instructions in all, beyond three times its own size: room for the small objects of
#: ``batches.meta``.
CIFAR_BUILD_SLACK_BYTES = 1 << 20
#: What every pickle instruction is charged against the same budget: a bound on the Python object it may create
#: (an empty dict, list or tuple, a number, a reference on the stack), so millions of one-byte instructions
#: cannot build gigabytes of containers. An honest batch runs about three instructions per image.
CIFAR_OPCODE_BYTES = 64
#: The key types a CIFAR pickle's dicts hold (``bytes`` with ``encoding="bytes"``): a tuple key would be hashed
#: as deep as it is nested, which a crafted pickle can make deep enough to overflow the C stack, and integer keys
#: that are multiples of 2**61 - 1 all hash alike (each insert then compares against every key before it).
_CIFAR_KEY_TYPES = (bytes, str)
#: The longest dtype text a CIFAR pickle may name (numpy parses a longer one with ``ast.literal_eval``, which a
#: crafted megabyte of text turns into gigabytes); an honest one is ``"u1"`` or ``"<i8"``.
MAX_DTYPE_TEXT = 32
#: Pickle instructions that build sets, which the format never holds.
_SET_OPCODES = (pickle.EMPTY_SET[0], pickle.ADDITEMS[0], pickle.FROZENSET[0])

def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What a protocol-2 pickle written by Python 3 calls to rebuild ``bytes``: ``_codecs.encode(text, "latin1")``;
    any other codec is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"the pickle calls _codecs.encode with {_brief(encoding)}, which a CIFAR-10 batch "
                                f"never does")
    return text.encode("latin1")


def _brief(value, limit: int = 40) -> str:
    """A short description of a value a crafted pickle built, computed without a full ``repr`` (a tuple of a
    thousand references to one large object, or an integer of a million digits, would take gigabytes or
    minutes to print)."""
    if isinstance(value, (str, bytes, bytearray)):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        if -10 ** 100 < value < 10 ** 100:
            return repr(value)
        return f"an integer of about {value.bit_length() * 0.30103:.0f} digits"
    if isinstance(value, (tuple, list, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a callable, dtype or size outside the CIFAR-10 format (it could run code or
    exhaust memory)."""


def _check_dtype_text(spec) -> None:
    """Refuse a dtype named by more than :data:`MAX_DTYPE_TEXT` characters, before numpy parses the text."""
    if isinstance(spec, (str, bytes)) and len(spec) > MAX_DTYPE_TEXT:
        raise UnsafePickleError(f"the pickle names a dtype by {len(spec):,} characters of text; a CIFAR-10 batch's "
                                f"are a few")


def _safe_dtype(spec) -> np.dtype:
    """A plain numeric dtype (booleans, integers, floats; no fields, no objects, at most 16 bytes), or
    :class:`UnsafePickleError`."""
    _check_dtype_text(spec)
    if not isinstance(spec, (np.dtype, str, bytes, type)):
        raise UnsafePickleError(f"the pickle describes a dtype with a {type(spec).__name__}; a CIFAR-10 batch names "
                                f"one by a short text")
    try:
        dtype = spec if isinstance(spec, np.dtype) else np.dtype(spec)
    except (TypeError, ValueError) as error:
        raise UnsafePickleError(f"the pickle asks for a dtype numpy cannot build ({error})") from None
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject \
            or dtype.itemsize > 16:
        raise UnsafePickleError(f"the pickle asks for dtype {dtype!r}, which a CIFAR-10 batch never holds (only plain "
                                f"numbers)")
    return dtype


class _NDArrayClass:
    """What the pickle's ``numpy.ndarray`` resolves to: a token for :func:`_reconstruct`, not a callable,
    so the pickle cannot build an array from raw bytes with a dtype of its choosing."""

    def __reduce__(self):  # pragma: no cover - never pickled
        raise TypeError("not picklable")


class CifarUnpickler(pickle._Unpickler):
    """Unpickle CIFAR-10 python batches without running code or trusting any size or dtype.

    A pickle may name any importable callable, and loading it calls it (``os.system`` included);
    numpy's own reconstructors, given a crafted dtype, build arrays that point at memory the pickle
    chose. This unpickler (Python's own, so that every opcode passes through it):

    - resolves only numpy's array, dtype and scalar reconstructors, each wrapped so that the dtype
      is a plain number type (booleans, integers, floats: no objects, no fields) and the array is no
      larger than the pickle itself (a short file cannot claim gigabytes); ``numpy.ndarray`` is a
      token for the array reconstructor, never a callable;
    - checks the state every BUILD gives a numpy object (an array's dtype and its raw bytes; a
      dtype's state must leave it a plain number type);
    - admits ``_codecs.encode(text, "latin1")``, with which protocol-2 pickles written by Python 3
      rebuild ``bytes``, for that codec only;
    - charges every array, scalar, ``bytes`` and ``bytearray`` those rebuilders (and BUILD, BYTEARRAY8)
      make to one running total, refused past ``max_total_bytes``: each call is bounded by the file,
      but a pickle may memoise one large object and pass it to a rebuilder again and again (a 1 MB
      file could build gigabytes). An honest batch builds its data at most twice (the latin-1
      ``bytes`` of a protocol-2 pickle, or the bytearray of a protocol-5 one, then the array), and its
      instructions (below) a few percent more, so three times the file's size bounds it;
    - charges every instruction :data:`CIFAR_OPCODE_BYTES` to the same total, for the object it may
      create (5 MB of "empty list" instructions would otherwise build a gigabyte of lists);
    - refuses sets (the format has none) and dict keys other than bytes and strings (a deeply nested
      tuple key would be hashed as deep as it goes, past the C stack; colliding integers would make
      each insert compare against every key before it), and dtype texts longer than
      :data:`MAX_DTYPE_TEXT`.

    Anything else raises :class:`UnsafePickleError` before it is called. Dicts, lists, tuples,
    strings, bytes and numbers need no callable at all. :func:`load_cifar_pickle` then checks the
    shape of what was built (:func:`check_cifar_structure`).

    Args:
        file: the pickle, as a binary file.
        max_bytes: the largest array it may build (default: its size, which bounds any honest array).
        max_total_bytes: the most it may build in all (default: ``3 * max_bytes`` plus
            :data:`CIFAR_BUILD_SLACK_BYTES`).

    Example:
        >>> import io, pickle
        >>> CifarUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]})), encoding="bytes").load()
        {b'labels': [1, 2]}
        >>> CifarUnpickler(io.BytesIO(pickle.dumps(print)), encoding="bytes").load()
        Traceback (most recent call last):
        ...
        saliencyssl.datasets.UnsafePickleError: the pickle names builtins.print, which a CIFAR-10 batch never holds
    """

    def __init__(self, file, *, max_bytes: int | None = None, max_total_bytes: int | None = None, **kwargs):
        if max_bytes is None:
            try:
                max_bytes = len(file.getbuffer())
            except AttributeError:
                try:
                    max_bytes = os.fstat(file.fileno()).st_size
                except (AttributeError, OSError, io.UnsupportedOperation):
                    max_bytes = MAX_CIFAR_FILE_BYTES
        self.max_bytes = int(max_bytes)
        self.max_total_bytes = (3 * self.max_bytes + CIFAR_BUILD_SLACK_BYTES if max_total_bytes is None
                                else int(max_total_bytes))
        self.built_bytes = 0
        super().__init__(_BoundedReader(file, self.max_bytes), **kwargs)
        dispatch = dict(self.dispatch)
        dispatch[pickle.BUILD[0]] = CifarUnpickler._load_build
        dispatch[pickle.BYTEARRAY8[0]] = CifarUnpickler._load_bytearray8
        dispatch[pickle.SETITEM[0]] = CifarUnpickler._load_setitem
        dispatch[pickle.SETITEMS[0]] = CifarUnpickler._load_setitems
        dispatch[pickle.DICT[0]] = CifarUnpickler._load_dict
        for code in _SET_OPCODES:
            dispatch[code] = CifarUnpickler._refuse_set
        self.dispatch = {code: _charged(step) for code, step in dispatch.items()}

    def _refuse_set(self):
        raise UnsafePickleError("the pickle builds a set, which a CIFAR-10 batch never holds")

    @staticmethod
    def _check_keys(keys) -> None:
        for key in keys:
            if not isinstance(key, _CIFAR_KEY_TYPES) or isinstance(key, bool):
                raise UnsafePickleError(f"the pickle uses a dict key of type {type(key).__name__}; a CIFAR-10 "
                                        f"batch's keys are bytes or strings")

    def _load_setitem(self):
        self._check_keys([self.stack[-2]])
        pickle._Unpickler.load_setitem(self)

    def _load_setitems(self):
        items = self.pop_mark()
        self._check_keys(items[0::2])
        target = self.stack[-1]
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_dict(self):
        items = self.pop_mark()
        self._check_keys(items[0::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def _load_bytearray8(self):
        # Python's own unpickler allocates the claimed length before reading it (bytearray(n), zero-filled):
        # a 20-byte pickle could ask for gigabytes. The claim is checked against the file first.
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self.max_bytes:
            raise UnsafePickleError(f"the pickle claims a bytearray of {size:,} bytes, more than the file holds "
                                    f"({self.max_bytes:,})")
        self._charge(size, "a bytearray")
        buffer = bytearray(size)
        self.readinto(buffer)
        self.append(buffer)

    def _check_size(self, shape, dtype: np.dtype) -> tuple[int, ...]:
        try:
            shape = tuple(int(v) for v in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        except (TypeError, ValueError):
            raise UnsafePickleError(f"the pickle gives an array shape {_brief(shape)}") from None
        count = 1
        for v in shape:
            if v < 0:
                raise UnsafePickleError(f"the pickle gives a negative array shape {shape}")
            count *= v
        if count * dtype.itemsize > self.max_bytes:
            raise UnsafePickleError(f"the pickle claims an array of {count * dtype.itemsize:,} bytes, more than the "
                                    f"file holds ({self.max_bytes:,})")
        return shape

    def _charge(self, nbytes: int, what: str) -> None:
        """Add ``nbytes`` (about to be allocated for ``what``) to what this load has built, or refuse it."""
        self.built_bytes += int(nbytes)
        if self.built_bytes > self.max_total_bytes and what == "an object":
            raise UnsafePickleError(f"the pickle runs more instructions than a pickle of {self.max_bytes:,} bytes "
                                    f"needs (each may create an object, {CIFAR_OPCODE_BYTES} bytes counted for it, "
                                    f"{self.max_total_bytes:,} in all): it is crafted to fill memory with small "
                                    f"objects, not a CIFAR-10 batch")
        if self.built_bytes > self.max_total_bytes:
            raise UnsafePickleError(f"the pickle builds {what} that brings what it has built to "
                                    f"{self.built_bytes:,} bytes, more than the {self.max_total_bytes:,} a pickle of "
                                    f"{self.max_bytes:,} bytes needs (an honest batch builds its data once or "
                                    f"twice; this one rebuilds the same data again and again to fill memory)")

    def _encode(self, text, encoding: str) -> bytes:
        if isinstance(text, str):
            self._charge(len(text), "a bytes object")  # latin-1: one byte per character
        return _latin1_bytes(text, encoding)

    def _reconstruct(self, cls, shape, dtype_spec):
        if not isinstance(cls, _NDArrayClass):
            raise UnsafePickleError("the pickle reconstructs something other than a numpy array")
        dtype = _safe_dtype(dtype_spec)
        shape = self._check_size(shape, dtype)
        self._charge(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, "an array")
        return np.ndarray.__new__(np.ndarray, shape, dtype)

    @staticmethod
    def _dtype(spec, align=False, copy=True):
        _check_dtype_text(spec)
        return _safe_dtype(np.dtype(spec, bool(align), bool(copy)) if isinstance(spec, str) else spec)

    def _scalar(self, dtype_spec, data=None):
        dtype = _safe_dtype(dtype_spec)
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise UnsafePickleError(f"the pickle gives a {dtype} scalar {len(data) if isinstance(data, bytes) else 'no'} "
                                    f"bytes")
        self._charge(dtype.itemsize, "a scalar")
        return np.frombuffer(data, dtype)[0]

    def _frombuffer(self, buffer, dtype_spec, shape, order="C"):
        # numpy pickles an array with protocol 5 as _frombuffer(its bytes, dtype, shape, order): the buffer is
        # the bytes (or bytearray) the pickle holds, never a number (bytes(n) would allocate n zero bytes).
        if not isinstance(buffer, (bytes, bytearray)):
            raise UnsafePickleError(f"the pickle rebuilds an array from a {type(buffer).__name__}, not from the bytes "
                                    f"it holds")
        dtype = _safe_dtype(dtype_spec)
        shape = self._check_size(shape, dtype)
        if order not in ("C", "F"):
            raise UnsafePickleError(f"the pickle gives an array order {_brief(order)}")
        if len(buffer) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise UnsafePickleError("the pickle's array data does not fit its shape")
        self._charge(len(buffer), "an array")  # the copy below
        return np.frombuffer(buffer, dtype).reshape(shape, order=order).copy()

    def find_class(self, module: str, name: str):
        wrappers = {
            ("_codecs", "encode"): self._encode,
            ("numpy", "ndarray"): _NDArrayClass(),
            ("numpy", "dtype"): self._dtype,
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.multiarray", "scalar"): self._scalar,
            ("numpy._core.multiarray", "scalar"): self._scalar,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
        }
        if (module, name) not in wrappers:
            raise UnsafePickleError(f"the pickle names {module}.{name}, which a CIFAR-10 batch never holds")
        return wrappers[(module, name)]

    def _load_build(self):
        state = self.stack[-1]
        inst = self.stack[-2]
        if isinstance(inst, np.ndarray):
            if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], bytes)):
                raise UnsafePickleError("the pickle sets an array's state from something other than raw bytes")
            dtype = _safe_dtype(state[2])
            shape = self._check_size(state[1], dtype)
            if len(state[4]) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise UnsafePickleError("the pickle's array data does not fit its shape")
            self._charge(len(state[4]), "an array")
        elif isinstance(inst, np.dtype):
            # numpy's own state of a plain number type: (3, byte order, None, None, None, -1, -1, 0)
            if not (isinstance(state, tuple) and len(state) == 8 and state[2:] == (None, None, None, -1, -1, 0)):
                raise UnsafePickleError(f"the pickle sets a dtype's state to {_brief(state)}")
        else:
            raise UnsafePickleError(f"the pickle sets the state of a {type(inst).__name__}, which a CIFAR-10 batch "
                                    f"never does")
        pickle._Unpickler.load_build(self)
        if isinstance(inst, np.dtype):
            _safe_dtype(inst)


def _charged(step):
    """``step`` (one pickle instruction of the pure-Python unpickler), charged :data:`CIFAR_OPCODE_BYTES` first."""

    def charged(unpickler):
        unpickler._charge(CIFAR_OPCODE_BYTES, "an object")
        step(unpickler)

    return charged


def check_cifar_structure(obj, path) -> None:
    """Refuse a loaded CIFAR pickle that is not the format's shape: a dict of bytes or string keys whose
    values are arrays, bytes, strings, numbers, or flat lists of numbers, bytes or strings.

    The check walks one level of lists (never recursing), so a crafted list nested a million deep is
    refused here rather than overflowing a ``repr`` or a hash later.

    Raises:
        ImageDecodeError: naming ``path`` and what does not fit.
    """
    scalars = (bytes, str, int, float, np.integer, np.floating)
    if not isinstance(obj, dict):
        raise ImageDecodeError(path, f"not a CIFAR-10 python batch (it holds a {type(obj).__name__}, not a dict)")
    for key, value in obj.items():
        name = key[:40].decode("latin1", "replace") if isinstance(key, bytes) else str(key)[:40]
        if isinstance(value, (np.ndarray, *scalars)) or value is None:
            continue
        if not isinstance(value, list):
            raise ImageDecodeError(path, f"not a CIFAR-10 python batch ({_brief(name)} holds a {type(value).__name__})")
        wrong = next((item for item in value if not isinstance(item, scalars)), None)
        if wrong is not None:
            raise ImageDecodeError(path, f"not a CIFAR-10 python batch ({_brief(name)} is a list holding a "
                                         f"{type(wrong).__name__}; the format's lists hold numbers, bytes or text)")


class _BoundedReader:
    """A pickle's file, read so that no single read can ask for more than the file holds.

    Python's unpickler reads a length from the pickle and then ``read(length)`` from the file; a
    buffered file allocates that length before reading, so a few bytes could claim gigabytes. Here a
    read of more than the bytes left (of ``limit``) fails as a truncated pickle, unallocated."""

    def __init__(self, file, limit: int):
        self._file = file
        self._left = int(limit)

    def _take(self, count: int) -> None:
        if count > self._left:
            raise pickle.UnpicklingError(f"the pickle reads {count:,} bytes where the file has {self._left:,} left "
                                         f"(truncated or damaged)")

    def read(self, count: int = -1) -> bytes:
        count = self._left if count is None or count < 0 else count
        self._take(count)
        data = self._file.read(count)
        self._left -= len(data)
        return data

    def readinto(self, buffer) -> int:
        self._take(len(buffer))
        count = self._file.readinto(buffer)
        self._left -= count
        return count

    def readline(self) -> bytes:
        line = self._file.readline(self._left + 1)
        self._left -= len(line)
        return line

    def peek(self, *args):  # pragma: no cover - the pure-Python unpickler does not peek
        return self._file.peek(*args)


def load_cifar_pickle(path: str | Path) -> object:
    """Read one CIFAR-10 pickle (a batch or ``batches.meta``) with :class:`CifarUnpickler`.

    The file must be a regular file (a pipe or device is refused unopened) of at most
    :data:`MAX_CIFAR_FILE_BYTES`, checked on the opened file; it is then unpickled as it is read
    (no copy of the whole file), every array and bytes object bounded by the file's size, and all of them
    together by three times its size (plus :data:`CIFAR_BUILD_SLACK_BYTES`).

    Raises:
        ImageDecodeError: the file is unreadable, too large, not a pickle, or names a callable outside the format.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageDecodeError(path, "not a regular file (a pipe, a device or a folder)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageDecodeError(path, "not a regular file (a pipe, a device or a folder)")
            if info.st_size > MAX_CIFAR_FILE_BYTES:
                raise ImageDecodeError(path, f"the file has {info.st_size:,} bytes, more than the "
                                             f"{MAX_CIFAR_FILE_BYTES:,} a CIFAR-10 python batch can take (one holds "
                                             f"31 MB); it is not a CIFAR-10 batch")
            loaded = CifarUnpickler(fh, max_bytes=info.st_size, encoding="bytes").load()
        check_cifar_structure(loaded, path)
        return loaded
    except ImageDecodeError:
        raise
    except UnsafePickleError as error:
        raise ImageDecodeError(path, f"refused: {error}; it may be crafted to run code, do not load it with "
                                     f"pickle") from error
    except Exception as error:  # pickle raises many types for damaged files (RecursionError included)
        raise ImageDecodeError(path, f"not a CIFAR-10 python batch ({type(error).__name__}: {str(error)[:200]})") \
            from error


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

        check_memory(len(self) * 3 * size * size, f"{len(self)} images at {size}x{size}")
        indices: Sequence[int] = range(len(self))
        if progress and len(self) > 2000:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"decoding images at {size}px", unit="img")
        out = torch.empty((len(self), 3, size, size), dtype=torch.uint8)  # filled in place: no second copy
        for i in indices:
            out[i] = torch.from_numpy(fit_square(self.image(i), size)).permute(2, 0, 1)
        return out


def open_image_set(path: str | Path, keep_decoded: bool | None = None) -> ImageSet:
    """Open an image folder or CIFAR-10 python batches (see the module docstring).

    Args:
        path: folder or batch file.
        keep_decoded: keep decoded pixels in memory; default: for sets of images up to 64 px
            (decided from the first image) that take at most a quarter of the memory available, shared
            among the processes torchrun starts on the machine (CIFAR-10's 50,000 images: 154 MB;
            ImageNet at 64 px, 16 GB, is read as needed unless 64 GB a process are free), and CIFAR
            batches.

    Raises:
        FileNotFoundError: the path does not exist, or holds no images.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give an image folder or CIFAR-10 python batches")
    if is_cifar(path):
        return _open_cifar(path)
    files = list_images(path)
    batches = [n for n in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,) if (path / n).is_file()]
    if not files:
        if batches:
            raise FileNotFoundError(f"{path} holds CIFAR-10 batch files ({', '.join(batches)}) but no {CIFAR_META}, "
                                    f"so it is not read as a CIFAR-10 batch folder; copy {CIFAR_META} from the same "
                                    f"download beside them, or give one batch file: {path / batches[0]}")
        raise FileNotFoundError(f"{path} holds no images (looked recursively for "
                                f"{', '.join(IMAGE_SUFFIXES)}); check the path")
    if batches:
        log.warning("%s: read as an image folder; its files %s are not read (a CIFAR-10 batch folder holds %s and "
                    "no image files)", path, ", ".join(batches), CIFAR_META)
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
            available = available_memory()  # shared by the processes torchrun starts on this machine
            local = os.environ.get("LOCAL_WORLD_SIZE", "1")
            share = 4 * (int(local) if local.isdigit() and int(local) > 0 else 1)
            keep_decoded = max(first.shape[:2]) <= 64 and (available is None or
                                                           len(files) * first.nbytes <= available // share)
        except ImageDecodeError:
            keep_decoded = False
    if keep_decoded:
        image_set.keep_decoded()
    return image_set


def is_cifar(path: str | Path) -> bool:
    """Whether :func:`open_image_set` reads ``path`` as CIFAR-10 python batches: a batch file given by
    path (``data_batch_N`` or ``test_batch``), or a folder with ``batches.meta``, a batch and no image file."""
    path = Path(path)
    names = CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)
    if path.is_file():
        return path.name in names
    if not (path / CIFAR_META).is_file() or not any((path / name).is_file() for name in names):
        return False
    return not any(p.suffix.lower() in IMAGE_SUFFIXES for p in walk_files(path))


_is_cifar = is_cifar


def _open_cifar(path: Path) -> ImageSet:
    """CIFAR-10 python batches: a folder opens the train batches, or ``test_batch`` alone when
    only it is present; a file opens that batch. Every label must be a whole number naming one of
    the classes of ``batches.meta`` (the ten CIFAR-10 classes when there is none)."""
    if path.is_file():
        batch_files = [path]
    else:
        batch_files = [path / n for n in CIFAR_TRAIN_BATCHES if (path / n).is_file()] or [path / CIFAR_TEST_BATCH]
    folder = path if path.is_dir() else path.parent
    classes = _cifar_classes(folder)
    where = f"named in {folder / CIFAR_META}" if (folder / CIFAR_META).is_file() else \
        f"CIFAR-10's, as no {CIFAR_META} lies beside it"
    images, labels, names = [], [], []
    for batch_file in batch_files:
        batch = load_cifar_pickle(batch_file)
        try:
            raw = batch[b"data"]
            batch_labels = batch.get(b"labels", batch.get(b"fine_labels"))
            if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != 3072:
                raise ValueError(f"'data' must be an (N, 3072) uint8 array, got "
                                 f"{getattr(raw, 'dtype', type(raw).__name__)} {getattr(raw, 'shape', '')}")
            batch_labels = _check_cifar_labels(batch_labels, len(classes), where)
            if len(batch_labels) != len(raw):
                raise ValueError(f"{len(batch_labels)} labels for {len(raw)} images")
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ImageDecodeError(batch_file, f"not a CIFAR-10 python batch ({type(error).__name__}: {error})") \
                from error
        images.append(raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch_labels)
        names.extend(f"{batch_file.name}:{i}" for i in range(len(raw)))
    check_memory(sum(part.nbytes for part in images), f"the CIFAR-10 batches of {path}")
    pixels = np.ascontiguousarray(np.concatenate(images))
    image_set = ImageSet(names=names, labels=np.array(labels, np.int64), classes=classes, root=path,
                         _load=lambda i: pixels[i])
    image_set._cached = {i: pixels[i] for i in range(len(pixels))}
    return image_set


def _check_cifar_labels(labels, class_count: int, where: str = "") -> list[int]:
    """A batch's labels as ints, each a whole number in ``0..class_count - 1`` (``where`` says whose classes).

    Raises:
        TypeError: not a list of whole numbers.
        ValueError: a label outside the classes, naming the first such image and what ``batches.meta`` holds.
    """
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise TypeError(f"'labels' must be a list of whole numbers, got {type(labels).__name__}")
    out = []
    for index, value in enumerate(labels):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"label of image {index} is {_brief(value)}, not a whole number")
        if not 0 <= value < class_count:
            raise ValueError(f"label {_brief(value)} of image {index} is outside 0..{class_count - 1}: there are "
                             f"{class_count} classes ({where})")
        out.append(int(value))
    return out


def _cifar_classes(folder: Path) -> list[str]:
    meta = folder / CIFAR_META
    if meta.is_file():
        names = load_cifar_pickle(meta)
        try:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names[b"label_names"]]
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ImageDecodeError(meta, f"not CIFAR-10 batch metadata (no list 'label_names' of names: "
                                         f"{type(error).__name__}: {error})") from error
        if not classes:
            raise ImageDecodeError(meta, "not CIFAR-10 batch metadata ('label_names' names no class)")
        return classes
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fit_square(array: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize so the shorter side is ``size``, then centre-crop to ``size`` x ``size``.

    The same geometry is applied to images and to their targets (with ``nearest=True`` for
    masks and labels), so a target stays aligned with its image.

    Args:
        array: ``(H, W)`` or ``(H, W, C)``.
        size: output side length.
        nearest: nearest-neighbour interpolation (labels, masks); otherwise area for shrinking
            and bicubic for enlarging. The nearest source pixel is the one under each output
            pixel's centre (``cv2.INTER_NEAREST_EXACT``), the grid area and bicubic resampling
            use; ``cv2.INTER_NEAREST`` takes the corner of each block, which put masks up to half
            an output pixel off their images when shrinking.
    """
    import cv2

    h, w = array.shape[:2]
    if (h, w) == (size, size):
        return array
    scale = size / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    if nearest:
        interpolation = cv2.INTER_NEAREST_EXACT
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


__all__ = ["ImageSet", "open_image_set", "fit_square", "target_at_size", "to_rgb_uint8", "check_image_size",
           "check_memory", "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE", "CifarUnpickler", "load_cifar_pickle", "is_cifar",
           "MAX_CIFAR_FILE_BYTES"]
