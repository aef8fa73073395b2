"""Writing an output so that nothing else is written through it and a failed write loses nothing; reading a
small text file (a record, a result) so that a link to a device or a pipe named like it is refused unread.

Every file the toolkit writes goes first to a new file of a fresh random name beside its place
(created exclusively, ``O_EXCL``, as :func:`tempfile.mkstemp` creates, so never an existing file,
link or pipe an earlier run or another user left at a name that could be guessed), then moves over
the place (:func:`os.replace`, which replaces a link at the place rather than writing into its
target). A write that fails removes its temporary file and leaves the place as it was. The file is
created with mode ``0o666``, less the umask as the kernel applies it, the mode ``open`` gives a new
file (``mkstemp``'s owner-only ``0o600`` kept packs, checkpoints and results from other accounts'
jobs).
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def temporary_beside(path: str | Path) -> Iterator[Path]:
    """A new empty file of a fresh random name in ``path``'s folder, for a writer that takes a path
    (``torch.save``, ``np.save``); moved over ``path`` when the block ends, removed if it raises.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with temporary_beside(folder / "out.txt") as temporary:
        ...     _ = temporary.write_text("done")
        >>> (folder / "out.txt").read_text(), sorted(p.name for p in folder.iterdir())
        ('done', ['out.txt'])
    """
    path = Path(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"  # 64 random bits: never guessed
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def nearest_existing(path: str | Path) -> Path:
    """``path``'s folder, or the nearest of its parents that exists (a link counts): where a write to ``path``
    would create the missing folders, and on which disk it would land."""
    folder = Path(path).parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def replace_file(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to :func:`temporary_beside` ``path``, then move it over ``path``."""
    path = Path(path)
    with temporary_beside(path) as temporary:
        temporary.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def save_figure(figure, path: str | Path, **options) -> Path:
    """``figure.savefig`` (matplotlib) to :func:`temporary_beside` ``path``, in the format its suffix names."""
    path = Path(path)
    with temporary_beside(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", **options)
    return path


def read_text_file(path: str | Path, limit: int, what: str) -> str:
    """The UTF-8 text of ``path``, a regular file of at most ``limit`` bytes.

    The name is checked before opening (a pipe would block, a device never end), the opened file
    again, and at most ``limit + 1`` bytes are read (a file that grows is caught too).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file, larger than ``limit``, or not UTF-8, naming ``what`` and the fix.
    """
    path = Path(path)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"not a regular file (a folder, a pipe or a device); a {what} must be a file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError(f"not a regular file (a folder, a pipe or a device); a {what} must be a file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than the {limit:,} bytes a {what} may have; it is not one")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start:,}); save the "
                         f"{what} as UTF-8") from None


__all__ = ["read_text_file", "replace_file", "save_figure", "temporary_beside"]
