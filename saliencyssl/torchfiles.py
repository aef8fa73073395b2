"""Loading a file written by ``torch.save`` from someone else: what is checked before, how, and after.

torch's safe loader rebuilds only tensors and plain containers, so a checkpoint cannot run code; it
still builds whatever containers the file's pickle describes, and reads the zip archive's members as
they are stored. A crafted file of a megabyte can therefore

- crash the process: a dict key made of a million nested tuples overflows the C stack when hashed;
- take hours: integer keys that are all multiples of 2**61 - 1 hash alike, so every insert compares
  against every key before it;
- fill memory: a member compressed with deflate inflates to gigabytes, and millions of one-byte
  "empty list" instructions build millions of lists.

:func:`load_torch_file` is the one way the toolkit opens such a file:

1. :func:`check_torch_file` reads the archive's directory with Python's :mod:`zipfile` and walks
   the pickle's instructions (:mod:`pickletools`, which builds nothing) with a model of the stack.
   It refuses, naming the reason, a member that is not stored uncompressed (as ``torch.save`` writes
   every member), member names that differ only in case, a pickle larger than
   :data:`MAX_PICKLE_BYTES` or of more than :data:`MAX_PICKLE_OPS` instructions, a global other than
   those a checkpoint names (:data:`ALLOWED_GLOBALS`: ``OrderedDict``, torch's tensor rebuilders and
   storage types; torch's own loader also admits ``bytearray`` and ``_codecs.encode``, which a
   crafted pickle can make allocate gigabytes or run for hours), a value nested deeper than
   :data:`MAX_NESTING`, and a dict key that is a container, a float or an integer whose hash
   collides by construction.
2. torch then loads a fresh archive built in memory from exactly the members checked, so that
   torch's own zip reader (which may look a member up without regard to case, or read another
   central directory, or take a file that merely ends in an archive for a legacy pickle) never
   sees anything else.
3. :func:`check_loaded` walks what was built, without recursion: nesting at most
   :data:`MAX_NESTING` deep, no cycle. A value nested deep through the pickle's memo (which the
   instruction walk cannot follow) would otherwise overflow ``repr`` later.

A checkpoint this toolkit or torchvision writes passes: its pickle is a few thousand instructions
nested a few deep, its keys strings and small integers.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

#: The largest pickle (the archive's ``data.pkl``) read: tensors' bytes are separate members, so a
#: checkpoint's pickle is kilobytes (a surrogate's ``last.pt`` with its history, tens of kilobytes).
MAX_PICKLE_BYTES = 8 << 20
#: The most instructions the pickle may hold (a ResNet-18 state dict: about 2,000).
MAX_PICKLE_OPS = 1_000_000
#: How deep a value may be nested (a tensor inside a state dict inside a checkpoint: about 6).
MAX_NESTING = 100
#: The longest tuple a checkpoint may hold more than once (pickle stores a shared object once and refers to it):
#: two optimizers built with one ``betas`` tuple share it in torch releases that keep the caller's tuple, and
#: every empty tuple is the same object. Longer shared values, and shared lists and dicts, are refused: a few
#: bytes of references could make them look gigabytes long to whatever walks the checkpoint.
MAX_SHARED_TUPLE = 16
#: Integers at least this large (in magnitude) are refused as dict keys: Python hashes an integer
#: modulo 2**61 - 1, so multiples of it all collide.
_HASH_MODULUS = 2 ** 61 - 1
#: Instructions that push a value which may serve as a dict key (strings, bytes, small integers, None, bools).
_KEY_ATOMS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINUNICODE", "BINUNICODE8",
              "SHORT_BINUNICODE", "UNICODE", "BINBYTES", "BINBYTES8", "SHORT_BINBYTES", "STRING", "BINSTRING",
              "SHORT_BINSTRING", "NONE", "NEWTRUE", "NEWFALSE"}
#: Instructions whose first stack argument is a container they add to and leave on the stack.
_IN_PLACE = {"SETITEM", "SETITEMS", "APPEND", "APPENDS", "BUILD", "ADDITEMS"}
_MARK = object()
#: The globals a checkpoint's pickle may name: ``(module, name)``, or ``(module, None)`` for any name ending in
#: ``Storage`` (torch's storage types in persistent ids).
ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                   ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
                   ("torch._utils", "_rebuild_parameter_with_state"), ("torch", None)}


class UnsafeTorchFileError(ValueError):
    """A ``torch.save`` file whose archive or pickle could crash, stall or exhaust the loader."""


def check_torch_file(path: str | Path) -> None:
    """Refuse a file that ``torch.load(weights_only=True)`` should not open (see the module docstring).

    Raises:
        UnsafeTorchFileError: the reason, in a clause (the caller names the file).
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UnsafeTorchFileError("it is not the zip archive torch.save writes") from None
    with archive:
        _check_members(archive)
    return None


def _check_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members, checked (see the module docstring); its pickle's shape too."""
    members = archive.infolist()
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise UnsafeTorchFileError(f"its member {packed[0]!r:.80} is compressed, which torch.save never does "
                                   f"(a compressed member can inflate to far more than the file holds)")
    folded = [m.filename.lower() for m in members]
    if len(set(folded)) != len(folded):
        raise UnsafeTorchFileError("two of its members have the same name but for case, which torch.save never "
                                   "writes")
    pickles = [m for m in members if m.filename.lower().endswith("/data.pkl") or m.filename.lower() == "data.pkl"]
    if len(pickles) != 1 or not pickles[0].filename.endswith("data.pkl"):
        raise UnsafeTorchFileError(f"it holds {len(pickles)} data.pkl members, torch.save writes one")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise UnsafeTorchFileError(f"its pickle has {pickles[0].file_size:,} bytes, more than the "
                                   f"{MAX_PICKLE_BYTES:,} a checkpoint's needs")
    check_pickle_shape(archive.read(pickles[0]))
    return members


def load_torch_file(path: str | Path, map_location="cpu"):
    """``torch.load(weights_only=True)`` of ``path`` after :func:`check_torch_file`, from an archive rebuilt of
    the checked members only, and :func:`check_loaded` of the result.

    Raises:
        UnsafeTorchFileError: the reason, in a clause (the caller names the file).
        Exception: what ``torch.load`` raises for a file it cannot read.
    """
    import torch

    try:
        archive = zipfile.ZipFile(Path(path))
    except zipfile.BadZipFile:
        raise UnsafeTorchFileError("it is not the zip archive torch.save writes") from None
    rebuilt = io.BytesIO()
    with archive, zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_STORED) as copy:
        for member in _check_members(archive):
            copy.writestr(member.filename, archive.read(member))
    rebuilt.seek(0)
    obj = torch.load(rebuilt, map_location=map_location, weights_only=True)
    check_loaded(obj)
    return obj


def check_loaded(obj) -> None:
    """Walk a loaded checkpoint's containers without recursion: at most :data:`MAX_NESTING` deep, no cycle.

    Raises:
        UnsafeTorchFileError: naming which.
    """
    todo = [(obj, 0)]
    seen: set[int] = set()
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            children = list(value.keys()) + list(value.values())
        elif isinstance(value, (list, tuple)):
            children = list(value)
        else:
            continue
        if depth >= MAX_NESTING:
            raise UnsafeTorchFileError(f"it nests values more than {MAX_NESTING} deep, which no checkpoint does")
        if id(value) in seen:
            if isinstance(value, tuple) and len(value) <= MAX_SHARED_TUPLE and all(
                    child is None or type(child) in (int, float, bool) for child in value):
                continue  # one small tuple of numbers held twice: Adam's betas given to two optimizers, or ()
            raise UnsafeTorchFileError("it holds a container twice or inside itself, which no checkpoint does")
        seen.add(id(value))
        todo.extend((child, depth + 1) for child in children)


def check_pickle_shape(data: bytes) -> None:
    """Walk a pickle's instructions without building anything; refuse what :func:`check_torch_file` refuses.

    Example:
        >>> import pickle
        >>> check_pickle_shape(pickle.dumps({"weight": [1, 2], 3: (4, 5)}))
        >>> check_pickle_shape(pickle.dumps({(1, 2): 3}))
        Traceback (most recent call last):
        ...
        saliencyssl.torchfiles.UnsafeTorchFileError: its pickle uses a container or an object as a dict key
    """
    stack: list = []  # per value: (nesting depth, whether it may be a dict key, its text); _MARK for a mark
    memo: dict = {}
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(data), 1):
            if count > MAX_PICKLE_OPS:
                raise UnsafeTorchFileError(f"its pickle runs more than {MAX_PICKLE_OPS:,} instructions, far more "
                                           f"than a checkpoint's")
            _step(stack, memo, opcode, arg)
    except UnsafeTorchFileError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as error:  # a malformed pickle: torch would refuse it too
        raise UnsafeTorchFileError(f"its pickle is malformed ({type(error).__name__}: {str(error)[:120]})") from None


def _pop_to_mark(stack: list) -> list:
    items = []
    while True:
        item = stack.pop()
        if item is _MARK:
            return items[::-1]
        items.append(item)


def _check_global(module, name) -> None:
    allowed = (module, name) in ALLOWED_GLOBALS or (
        (module, None) in ALLOWED_GLOBALS and isinstance(name, str) and name.endswith("Storage"))
    if not allowed:
        raise UnsafeTorchFileError(f"its pickle names {str(module)[:60]}.{str(name)[:60]}, which no checkpoint "
                                   f"holds")


def _key_ok(opcode, arg) -> bool:
    if opcode.name not in _KEY_ATOMS:
        return False
    return not (isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) >= _HASH_MODULUS)


def _check_keys(keys: list) -> None:
    if not all(ok for _, ok, _ in keys):
        raise UnsafeTorchFileError("its pickle uses a container or an object as a dict key")


def _step(stack: list, memo: dict, opcode, arg) -> None:
    name = opcode.name
    if name == "MARK":
        stack.append(_MARK)
        return
    if name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
        return
    if name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
        return
    if name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[arg])
        return
    if name in ("GLOBAL", "INST"):
        module, _, attribute = str(arg).partition(" ")
        _check_global(module, attribute)
    if name == "STACK_GLOBAL":
        _check_global(stack[-2][2], stack[-1][2])
    if name == "DUP":
        stack.append(stack[-1])
        return
    popped: list = []
    for item in reversed(opcode.stack_before):
        if item.name == "stackslice":
            popped.extend(_pop_to_mark(stack))
        elif item.name != "mark":
            popped.append(stack.pop())
    if any(value is _MARK for value in popped):
        raise UnsafeTorchFileError("its pickle is malformed (a mark where a value belongs)")
    if name == "SETITEM":
        _check_keys([popped[1]])  # popped: value, key, dict
    elif name in ("SETITEMS", "DICT"):
        items = popped[:-1] if name == "SETITEMS" else popped
        _check_keys(items[0::2])
    if not opcode.stack_after:
        return
    if name in _IN_PLACE:
        container, items = popped[-1], popped[:-1]
        depth = max([container[0]] + [1 + d for d, _, _ in items])
    elif popped:
        depth = 1 + max(d for d, _, _ in popped)
    else:
        depth = 0 if name in _KEY_ATOMS else 1
    if depth > MAX_NESTING:
        raise UnsafeTorchFileError(f"its pickle nests values more than {MAX_NESTING} deep, which no checkpoint does "
                                   f"(a value nested deep enough overflows the stack when hashed or freed)")
    text = arg if not popped and isinstance(arg, str) else None
    value = (depth, not popped and _key_ok(opcode, arg), text)
    stack.extend([value] * len(opcode.stack_after))


__all__ = ["ALLOWED_GLOBALS", "MAX_NESTING", "MAX_PICKLE_BYTES", "MAX_PICKLE_OPS", "UnsafeTorchFileError",
           "check_loaded", "check_pickle_shape", "check_torch_file", "load_torch_file"]
