"""Checks a file written by ``torch.save`` passes before ``torch.load(weights_only=True)`` opens it.

torch's safe loader rebuilds only tensors and plain containers, so a checkpoint cannot run code; it
still builds whatever containers the file's pickle describes, and reads the zip archive's members as
they are stored. A crafted file of a megabyte can therefore

- crash the process: a dict key made of a million nested tuples overflows the C stack when hashed;
- take hours: integer keys that are all multiples of 2**61 - 1 hash alike, so every insert compares
  against every key before it;
- fill memory: a member compressed with deflate inflates to gigabytes, and millions of one-byte
  "empty list" instructions build millions of lists.

:func:`check_torch_file` reads the archive's directory and walks the pickle's instructions
(:mod:`pickletools`, which builds nothing) with a model of the stack that tracks how deep each
value is nested; it refuses, naming the reason, a member that is not stored uncompressed (as
``torch.save`` writes every member), a pickle larger than :data:`MAX_PICKLE_BYTES` or of more than
:data:`MAX_PICKLE_OPS` instructions, a value nested deeper than :data:`MAX_NESTING`, and a dict key that
is a container, a float or an integer whose hash collides by construction. A checkpoint this
toolkit or torchvision writes passes: its pickle is a few thousand instructions nested a few deep,
its keys strings and small integers.
"""

from __future__ import annotations

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
        members = archive.infolist()
        packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise UnsafeTorchFileError(f"its member {packed[0]!r:.80} is compressed, which torch.save never does "
                                       f"(a compressed member can inflate to far more than the file holds)")
        pickles = [m for m in members if m.filename.endswith("/data.pkl") or m.filename == "data.pkl"]
        if len(pickles) != 1:
            raise UnsafeTorchFileError(f"it holds {len(pickles)} data.pkl members, torch.save writes one")
        if pickles[0].file_size > MAX_PICKLE_BYTES:
            raise UnsafeTorchFileError(f"its pickle has {pickles[0].file_size:,} bytes, more than the "
                                       f"{MAX_PICKLE_BYTES:,} a checkpoint's needs")
        data = archive.read(pickles[0])
    check_pickle_shape(data)


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
    stack: list = []  # per value: (nesting depth, whether it may be a dict key); _MARK for a mark
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


def _key_ok(opcode, arg) -> bool:
    if opcode.name not in _KEY_ATOMS:
        return False
    return not (isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) >= _HASH_MODULUS)


def _check_keys(keys: list) -> None:
    if not all(ok for _, ok in keys):
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
        depth = max([container[0]] + [1 + d for d, _ in items])
    elif popped:
        depth = 1 + max(d for d, _ in popped)
    else:
        depth = 0 if name in _KEY_ATOMS else 1
    if depth > MAX_NESTING:
        raise UnsafeTorchFileError(f"its pickle nests values more than {MAX_NESTING} deep, which no checkpoint does "
                                   f"(a value nested deep enough overflows the stack when hashed or freed)")
    value = (depth, not popped and _key_ok(opcode, arg))
    stack.extend([value] * len(opcode.stack_after))


__all__ = ["MAX_NESTING", "MAX_PICKLE_BYTES", "MAX_PICKLE_OPS", "UnsafeTorchFileError", "check_pickle_shape",
           "check_torch_file"]
