"""The on-disk store of exact targets, keyed by image content and labeller fingerprint.

:class:`TargetCache` wraps a :class:`diskcache.Cache` directory. Its guarantees, and where
they come from:

- **Keys.** An entry's key is ``"<fingerprint>/<content hash>"``: the hash of the decoded
  pixels (:func:`saliencyssl.hashing.content_hash`) and the fingerprint of every labeller
  parameter and the labeller version (:meth:`saliencyssl.saliency.LabellerConfig.fingerprint`).
  Changing any parameter changes the fingerprint, so old targets are never reused: they are
  simply misses.
- **Atomic entries.** Each ``put`` is one SQLite transaction (diskcache writes a large value's
  file first and commits its row after), so an entry is there whole or not at all, even when
  the writing process is killed with SIGKILL.
- **Several processes.** Any number of processes may read and write one directory at once
  on a local file system (SQLite in WAL mode with a busy timeout). Do not share one over a
  network file system; for clusters, one process writes (labelling on Dask: :mod:`saliencyssl.cache.labelling`).
- **Integrity.** Values carry a checksum (:mod:`saliencyssl.cache.codec`). A damaged entry is
  reported (a warning naming the key), deleted and treated as a miss, so it is recomputed and
  never returned. :meth:`TargetCache.verify` checks every entry.
- **No eviction.** The cache never drops entries to save space (``eviction_policy="none"``);
  delete the directory, or use :meth:`TargetCache.clear`, to start over.
- **Nothing stored runs code.** diskcache unpickles keys and values it did not store as raw
  strings or bytes, and turns settings read from the database into ``PRAGMA`` statements. A
  cache folder may come from someone else, so :class:`TargetDisk` stores and accepts only str
  keys and bytes (or JSON text) values: a pickled key is kept as its raw bytes
  (:class:`ForeignKey`, never unpickled) and a pickled value is damage
  (:class:`ForeignEntryError`), removed like any damaged entry; file names read from the
  database must be diskcache's own random names of regular files inside the folder (no link out,
  no device, no pipe; at most :data:`MAX_VALUE_BYTES`). Before diskcache opens a folder,
  :func:`audit_database` checks that ``cache.db`` holds diskcache's schema and nothing else (no
  object of its own, no trigger, view or table of other SQL) and that its settings are
  diskcache's, with values of the right kind. A folder that fails is refused with
  :class:`CacheOpenError`, naming the file.
- **The folder's own database.** ``cache.db`` and SQLite's files beside it must be regular
  files of the folder, not links or hard links to another cache's (:func:`check_database_files`):
  otherwise ``verify`` on a crafted folder would delete another cache's entries.
- **Reading writes nothing.** :class:`CacheReader` reads a folder (the source of an import,
  :func:`cache_fingerprints`) through a read-only SQLite connection; ``cache.db`` keeps its bytes.
- **Damage in the database** (a ``cache.db`` damaged past its header) surfaces from any call as
  :class:`CacheOpenError` naming the file and what to do, never as a raw ``sqlite3`` error.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import sqlite3
import stat
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from saliencyssl.cache.codec import CODEC_VERSION, CorruptTargetError, bind_key, decode_target, encode_target, \
    entry_version
from saliencyssl.hashing import HASH_HEX_LENGTH, content_hash
from saliencyssl.target import Target

log = logging.getLogger(__name__)

_META_PREFIX = "meta/"
#: A labeller fingerprint (16 hex characters from :meth:`LabellerConfig.fingerprint`; tests use other names).
_FINGERPRINT = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_ENTRY_KEY = re.compile(rf"([0-9A-Za-z_.-]{{1,64}})/([0-9a-f]{{{HASH_HEX_LENGTH}}})")
_META_KEY = re.compile(r"meta/([0-9A-Za-z_.-]{1,64})")
#: The largest value file a cache entry may have (a target of 100 M pixels encodes to far less).
MAX_VALUE_BYTES = 512 * 2 ** 20
#: diskcache's names for values stored in files: two levels of two hex digits, 28 more, ``.val``.
_VALUE_FILE = re.compile(r"[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val")

@dataclass
class CacheStats:
    """What a cache holds and how this process has used it.

    ``entries`` and ``bytes`` count entries of this cache's fingerprint (``bytes`` is their
    encoded size); ``all_entries`` counts every fingerprint; ``hits``, ``misses`` and
    ``damaged`` count this :class:`TargetCache` object's lookups since it was opened.
    """

    entries: int
    bytes: int
    all_entries: int
    disk_bytes: int
    hits: int
    misses: int
    damaged: int
    fingerprint: str
    directory: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    """Result of :meth:`TargetCache.verify`.

    Attributes:
        checked: entries of this fingerprint decoded.
        damaged: content hashes of entries that failed (and were removed, unless asked not to).
        other_fingerprints: entries of other fingerprints (not checked here).
        foreign: keys the toolkit never writes (pickled keys, other names), found and removed.
        upgraded: older entries (checksum not covering the key) rewritten in the current format.
    """

    checked: int
    damaged: list[str]
    other_fingerprints: int
    foreign: list[str] = field(default_factory=list)
    upgraded: int = 0


class CacheOpenError(OSError):
    """A cache folder that cannot be used: ``cache.db`` damaged, empty, not a database, or
    holding more than a saliency-ssl cache does. ``path`` names the file."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(message)


class ForeignEntryError(CorruptTargetError):
    """A stored value the toolkit never writes (a pickle, or a file name outside the cache); never loaded."""


class ForeignKey:
    """A key the toolkit never writes (pickled, or not a string), kept as stored and never unpickled.

    :meth:`TargetDisk.put` turns it back into its stored form, so such an entry can be deleted
    without reading it.
    """

    __slots__ = ("stored", "raw")

    def __init__(self, stored, raw: bool):
        self.stored, self.raw = stored, raw

    def __repr__(self) -> str:
        text = bytes(self.stored) if isinstance(self.stored, (bytes, bytearray, memoryview)) else self.stored
        return f"<foreign key {text!r:.60}>"


def _diskcache_disk():
    import diskcache

    return diskcache.Disk


class TargetDisk(_diskcache_disk()):
    """diskcache's serialisation restricted to what a target cache stores: str keys, bytes and str values.

    - ``put``/``store`` refuse every other type (``TypeError``): nothing is ever pickled;
    - ``get`` returns a stored key that is not a raw string as a :class:`ForeignKey` (never
      unpickled);
    - ``fetch`` refuses a pickled value, a file name that is not diskcache's own random name
      inside the folder, and a row diskcache itself would choke on (a file mode without a file
      name, a text file that is not UTF-8, a stored number, an unknown mode) with
      :class:`ForeignEntryError`, so the caller treats it as damage (removed by ``verify``, a
      miss for ``get``);
    - ``remove`` deletes only files with diskcache's own names.
    """

    def __init__(self, directory, min_file_size: int = 32768, pickle_protocol: int = 5):
        for name, value in (("disk_min_file_size", min_file_size), ("disk_pickle_protocol", pickle_protocol)):
            if type(value) is not int or value < 0:
                raise ValueError(f"setting {name} must be a non-negative integer, got {value!r}")
        super().__init__(directory, min_file_size=min_file_size, pickle_protocol=pickle_protocol)

    def put(self, key):
        if isinstance(key, ForeignKey):
            return key.stored, key.raw
        if type(key) is not str:
            raise TypeError(f"a target cache stores str keys only, got {type(key).__name__}")
        return key, True

    def get(self, key, raw):
        if raw and type(key) is str:
            return key
        return ForeignKey(key, bool(raw))

    def store(self, value, read, key=None):
        import diskcache.core

        if type(value) not in (bytes, str) or read:
            raise TypeError(f"a target cache stores bytes and text only, got {type(value).__name__}")
        return super().store(value, read, key=diskcache.core.UNKNOWN if key is None else key)

    def _own_file(self, filename) -> str | None:
        """The path of a value file when it is one of the cache's own: diskcache's name, a regular file
        (no link, no device, no pipe) whose real path lies inside the folder; else ``None``."""
        if not _VALUE_FILE.fullmatch(str(filename)):
            return None
        path = os.path.join(self._directory, str(filename))
        root = os.path.realpath(self._directory)
        try:
            info = os.lstat(path)
        except OSError:
            return path  # missing: diskcache reports it
        if not stat.S_ISREG(info.st_mode) or os.path.commonpath([root, os.path.realpath(path)]) != root:
            return None
        return path

    def fetch(self, mode, filename, value, read):
        import diskcache.core

        if mode == diskcache.core.MODE_PICKLE:
            raise ForeignEntryError("a pickled value, which saliency-ssl never stores (refused unread)")
        if read:
            raise ForeignEntryError("values are read whole")
        if mode == diskcache.core.MODE_RAW:
            if isinstance(value, (bytes, str)):
                return value
            raise ForeignEntryError(f"a stored {type(value).__name__} value, which saliency-ssl never stores")
        if mode not in (diskcache.core.MODE_BINARY, diskcache.core.MODE_TEXT):
            raise ForeignEntryError(f"a value of storage mode {mode!r:.20}, which diskcache never writes")
        if filename is None:
            raise ForeignEntryError("a value stored in a file without a file name (the row was altered)")
        path = self._own_file(filename)
        if path is None:
            raise ForeignEntryError(f"a value file {str(filename)!r:.80} that is not one of the cache's own regular "
                                    f"files inside its folder (a link, a device or another name; refused unread)")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as reader:
            info = os.fstat(reader.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_VALUE_BYTES:
                raise ForeignEntryError(f"a value file of {info.st_size:,} bytes (at most {MAX_VALUE_BYTES:,}; "
                                        f"refused unread)")
            data = reader.read(MAX_VALUE_BYTES + 1)
        if mode == diskcache.core.MODE_BINARY:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ForeignEntryError(f"a text value file {str(filename)!r:.80} that is not UTF-8 ({error.reason} at "
                                    f"byte {error.start})") from error

    def remove(self, file_path):
        if self._own_file(file_path) is None:
            log.warning("cache %s: not deleting %r, which is not one of the cache's own regular files",
                        self._directory, file_path)
            return None
        return super().remove(file_path)


#: ``cache.db`` settings diskcache reads and what they may hold (type, or the allowed words).
def _allowed_settings() -> dict:
    from diskcache.core import DEFAULT_SETTINGS, EVICTION_POLICY, METADATA

    allowed = {key: int for key in (*DEFAULT_SETTINGS, *METADATA)}
    allowed["eviction_policy"] = frozenset(EVICTION_POLICY)
    allowed["sqlite_journal_mode"] = frozenset({"wal", "delete", "truncate", "persist", "memory", "off"})
    return allowed


@functools.lru_cache(maxsize=1)
def _reference_schema() -> frozenset:
    """``(type, name, sql)`` of every object in a fresh diskcache database made by the installed diskcache."""
    import diskcache

    with tempfile.TemporaryDirectory() as tmp:
        diskcache.Cache(tmp, disk=TargetDisk, eviction_policy="none", size_limit=2 ** 62, statistics=False).close()
        connection = sqlite3.connect(str(Path(tmp) / "cache.db"))
        try:
            return frozenset(connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        finally:
            connection.close()


def _normal_sql(sql: str | None) -> str | None:
    """Schema SQL with its whitespace made uniform (SQLite keeps the text as written)."""
    return " ".join(sql.split()) if sql else sql


#: The files SQLite keeps for ``cache.db``: the database, its write-ahead log and shared memory, a rollback journal.
DATABASE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm", "cache.db-journal")


def check_database_files(directory: str | Path) -> Path:
    """Refuse a cache folder whose database files are not its own, before SQLite opens them.

    Each of :data:`DATABASE_FILES` that is there must be a regular file (not a symbolic link,
    folder, pipe or device), with one name only (a hard link would let writes through this folder
    change another cache), whose real path lies inside the folder. A folder handed over as
    ``evil/cache.db -> ../victim/cache.db`` would otherwise let ``cache verify evil`` delete the
    victim's entries (their value files are not in ``evil``), and a linked ``cache.db-wal`` would
    let SQLite write its log into any file. The check reads only the folder's listing
    (``lstat``); a link swapped in between the check and the open is not caught.

    Returns:
        The path of ``cache.db`` (which may not exist yet).

    Raises:
        CacheOpenError: naming the folder, the file, what it is, and the fix.
    """
    folder = Path(directory)
    root = os.path.realpath(folder)
    for name in DATABASE_FILES:
        path = folder / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise CacheOpenError(folder, f"cannot inspect {path} ({error.strerror}); check the folder {folder}") \
                from error
        real = os.path.realpath(path)
        if stat.S_ISLNK(info.st_mode):
            what = f"a symbolic link to {real}"
        elif not stat.S_ISREG(info.st_mode):
            what = "not a regular file"
        elif info.st_nlink > 1:
            what = f"a file with {info.st_nlink} hard links (another folder may share it)"
        elif os.path.commonpath([root, real]) != root:
            what = f"a file outside the folder ({real})"
        else:
            continue
        raise CacheOpenError(folder, f"{folder} is refused as a cache folder: its {name} is {what}, so working on "
                                     f"it could change another cache or file; use a copy made with "
                                     f"`cp -rL {folder} NEW_FOLDER`, or choose another folder")
    return folder / "cache.db"


def _read_only_uri(db: Path) -> str:
    """An SQLite URI that opens ``db`` without writing to its folder.

    ``immutable=1`` when no other connection has the database open (no write-ahead log, shared
    memory or rollback journal beside it; SQLite then neither locks nor creates anything), else
    ``mode=ro``, which reads the log of the process that writes and creates nothing in
    ``cache.db`` itself. The path is quoted, so no folder name can add URI parameters.
    """
    base = "file:" + urllib.request.pathname2url(str(db.resolve()))
    busy = any(os.path.lexists(db.parent / name) for name in DATABASE_FILES[1:])
    return base + ("?mode=ro" if busy else "?mode=ro&immutable=1")


def audit_database(db_path: str | Path, allow_empty: bool = False) -> None:
    """Check that ``cache.db`` is a diskcache database and nothing more, before diskcache opens it.

    Reads the schema and the settings with plain SQL (no trigger runs on a read), through a
    read-only connection that writes nothing to the folder. Refuses database files that are links
    or not the folder's own (:func:`check_database_files`), a file
    that is empty or not SQLite, a schema object diskcache does not make (a trigger or view of
    its own would run SQL on every write), any object whose SQL differs from diskcache's (a table
    with a generated column of its own, a trigger or index rewritten), and a setting diskcache
    does not know or whose value is not of its kind (diskcache pastes
    ``sqlite_*`` settings into ``PRAGMA`` statements and passes ``disk_*`` ones to the Disk).

    An empty file is refused too, unless ``allow_empty``: a process creating a new cache leaves
    ``cache.db`` empty for a moment, and another process opening the same folder to write must
    not take that for damage.

    Raises:
        CacheOpenError: naming the file, what is wrong and what to do.
    """
    path = Path(db_path)
    folder = path.parent
    check_database_files(folder)
    if path.stat().st_size == 0:
        if allow_empty:
            return
        raise CacheOpenError(path, f"{path} is empty (0 bytes), so {folder} holds no cache; delete the file to start a "
                                   f"new cache there, or choose another folder")
    connection = None
    try:
        connection = sqlite3.connect(_read_only_uri(path), uri=True, timeout=60)
        objects = connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        names = {name for _, name, _ in objects}
        settings = connection.execute("SELECT key, value FROM Settings").fetchall() if "Settings" in names else []
    except sqlite3.DatabaseError as error:
        raise CacheOpenError(path, f"{path} is not a readable cache database ({error}); delete the folder {folder} "
                                   f"(its targets are lost) or choose another folder") from error
    finally:
        if connection is not None:
            connection.close()
    reference = _reference_schema()
    known = {(kind, name): _normal_sql(sql) for kind, name, sql in reference}
    for kind, name, sql in objects:
        if (kind, name) not in known or _normal_sql(sql) != known[(kind, name)]:
            raise CacheOpenError(path, f"{path} holds a {kind} {name!r} that a saliency-ssl cache does not have; it "
                                       f"was not written by saliency-ssl (or was altered), so it is refused unread. "
                                       f"Import what it holds from a pack instead (exported on the machine that "
                                       f"made it), or delete the folder")
    allowed = _allowed_settings()
    for key, value in settings:
        kind = allowed.get(key)
        ok = (type(value) is int) if kind is int else (isinstance(value, str) and value.lower() in (kind or ()))
        if not ok:
            raise CacheOpenError(path, f"{path} has a setting {key!s:.40} = {value!r:.40} that a saliency-ssl cache "
                                       f"does not have; it was not written by saliency-ssl (or was altered), so it is "
                                       f"refused unread. Import its targets from a pack instead, or delete the folder")


def _database_errors(method):
    """Turn ``sqlite3.DatabaseError`` raised inside a :class:`TargetCache` method into :class:`CacheOpenError`."""

    def convert(self, error):
        db = self.directory / "cache.db"
        return CacheOpenError(db, f"{db} is damaged ({error}); the folder {self.directory} cannot be read. Delete it "
                                  f"and label again (or import a pack of its targets), or choose another folder")

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.DatabaseError as error:
                raise convert(self, error) from error
        return generator

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            raise convert(self, error) from error
    return wrapper


def entry_key(fingerprint: str, image_hash: str) -> str:
    """The key a target is stored under: ``"<fingerprint>/<content hash>"``."""
    return f"{fingerprint}/{image_hash}"


_key = entry_key


def cache_fingerprints(directory: str | Path) -> dict[str, dict | None]:
    """Every labeller fingerprint with entries or recorded parameters in a cache folder, mapped to
    its parameters (``None`` when not recorded). Read through :class:`CacheReader`: nothing is
    written to the folder.

    Raises:
        FileNotFoundError: the folder holds no cache.
        CacheOpenError: its database is damaged or not a saliency-ssl cache.
    """
    with CacheReader(directory) as cache:
        return _fingerprints(cache)


def _entry_sizes(cache, only: str | None = None) -> dict[str, tuple[int, int]]:
    """``{fingerprint: (entries, encoded bytes)}`` of a :class:`diskcache.Cache` or :class:`CacheReader`; the
    values are read only for fingerprint ``only`` when given (the others' bytes count 0). A foreign value, or
    one whose value file is gone, counts with 0 bytes."""
    counts: dict[str, list[int]] = {}
    for key in cache.iterkeys():
        entry = _ENTRY_KEY.fullmatch(key) if isinstance(key, str) else None
        if entry is None:
            continue
        count = counts.setdefault(entry.group(1), [0, 0])
        count[0] += 1
        if only is None or entry.group(1) == only:
            try:
                value = cache.get(key)
            except ForeignEntryError:
                value = None
            count[1] += len(value) if isinstance(value, bytes) else 0
    return {fingerprint: (n, size) for fingerprint, (n, size) in counts.items()}


def _fingerprints(cache) -> dict[str, dict | None]:
    found: dict[str, dict | None] = {}
    for key in cache.iterkeys():
        if not isinstance(key, str):
            continue
        meta = _META_KEY.fullmatch(key)
        if meta:
            try:
                params = json.loads(cache.get(key))
            except (ValueError, TypeError, RecursionError, ForeignEntryError):
                params = None
            found[meta.group(1)] = params if isinstance(params, dict) else None
        else:
            entry = _ENTRY_KEY.fullmatch(key)
            if entry:
                found.setdefault(entry.group(1), None)
    return found


def _open_diskcache(directory: Path, timeout: float = 120.0, create: bool = True):
    import diskcache

    db = check_database_files(directory)
    if db.exists():
        audit_database(db, allow_empty=create)
    elif not create:
        raise FileNotFoundError(f"{directory} is not a cache folder (no cache.db)")
    try:
        return diskcache.Cache(str(directory), timeout=timeout, disk=TargetDisk, eviction_policy="none",
                               size_limit=2 ** 62, statistics=False)
    except sqlite3.DatabaseError as error:
        raise CacheOpenError(db, f"{db} is not a readable cache database ({error}); delete the folder {directory} "
                                 f"(its targets are lost) or choose another folder") from error


class CacheReader:
    """A cache folder read without writing to it: someone else's cache, the source of an import.

    Opening a :class:`diskcache.Cache` writes to its folder (settings, the journal mode in the
    database header, the write-ahead log and shared-memory files), so a folder that is only read
    is opened here with plain SQLite instead: audited first (:func:`audit_database`), then read
    through a read-only connection (``immutable`` when no process has it open, else
    ``mode=ro``; see :func:`_read_only_uri`). ``cache.db`` keeps its bytes and, when no other
    process has the database open, no file is created in the folder. Values are fetched through
    :class:`TargetDisk`, with its restrictions (no pickle, only the folder's own value files).

    Args:
        directory: the cache folder.

    Raises:
        FileNotFoundError: the folder holds no ``cache.db``.
        CacheOpenError: its database files are links or not the folder's own, or the database is
            damaged or not a saliency-ssl cache.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        db = check_database_files(self.directory)
        if not db.is_file():
            raise FileNotFoundError(f"{self.directory} is not a cache folder (no cache.db)")
        audit_database(db)
        try:
            self._connection = sqlite3.connect(_read_only_uri(db), uri=True, timeout=60, isolation_level=None)
        except sqlite3.DatabaseError as error:
            raise CacheOpenError(db, f"{db} is not a readable cache database ({error}); delete the folder "
                                     f"{self.directory} (its targets are lost) or choose another folder") from error
        self._disk = TargetDisk(str(self.directory))

    @_database_errors
    def iterkeys(self) -> Iterator:
        """Every stored key, in the database's order: a str, or a :class:`ForeignKey` (never unpickled)."""
        cursor = self._connection.execute("SELECT key, raw FROM Cache ORDER BY key, raw")
        while rows := cursor.fetchmany(1000):
            for key, raw in rows:
                yield self._disk.get(key, raw)

    @_database_errors
    def get(self, key, default=None):
        """The stored value of ``key`` (bytes or str), or ``default`` when absent, expired or its file is gone.

        Raises:
            ForeignEntryError: a value saliency-ssl never stores (refused unread).
        """
        import time

        db_key, raw = self._disk.put(key)
        rows = self._connection.execute("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ? AND "
                                        "(expire_time IS NULL OR expire_time > ?)",
                                        (db_key, raw, time.time())).fetchall()
        if not rows:
            return default
        mode, filename, value = rows[0]
        try:
            return self._disk.fetch(mode, filename, value, False)
        except ForeignEntryError:
            raise
        except OSError:
            return default  # a value file that is missing: as diskcache, no value

    def fingerprints(self) -> dict[str, dict | None]:
        """Every fingerprint with entries or recorded parameters, mapped to its parameters (as
        recorded, unchecked; ``None`` when not recorded or not a JSON object)."""
        return _fingerprints(self)

    def hashes(self, fingerprint: str) -> Iterator[str]:
        """Content hashes of every entry under ``fingerprint``."""
        for key in self.iterkeys():
            entry = _ENTRY_KEY.fullmatch(key) if isinstance(key, str) else None
            if entry and entry.group(1) == fingerprint:
                yield entry.group(2)

    @_database_errors
    def sizes(self) -> dict[str, tuple[int, int]]:
        """Entries and encoded bytes per fingerprint, ``{fingerprint: (entries, bytes)}``, as :func:`_entry_sizes`
        counts them, without reading a value (reading them all took minutes for a cache of photos): an inline
        value's length from the database, a value file's from the file system (0 when it is missing, not one of the
        cache's own regular files, or over :data:`MAX_VALUE_BYTES`); a value saliency-ssl never stores, or an
        expired one, counts with 0 bytes."""
        import time

        import diskcache.core

        counts: dict[str, list[int]] = {}
        cursor = self._connection.execute(
            "SELECT key, raw, mode, filename, CASE WHEN mode = ? AND typeof(value) = 'blob' THEN length(value) "
            "ELSE 0 END, expire_time IS NULL OR expire_time > ? FROM Cache",
            (diskcache.core.MODE_RAW, time.time()))
        while rows := cursor.fetchmany(1000):
            for key, raw, mode, filename, inline, live in rows:
                key = self._disk.get(key, raw)
                entry = _ENTRY_KEY.fullmatch(key) if isinstance(key, str) else None
                if entry is None:
                    continue
                count = counts.setdefault(entry.group(1), [0, 0])
                count[0] += 1
                if not live:
                    continue
                if mode == diskcache.core.MODE_BINARY and filename is not None:
                    count[1] += self._value_file_bytes(filename)
                else:
                    count[1] += max(0, int(inline or 0))
        return {fingerprint: (n, size) for fingerprint, (n, size) in counts.items()}

    def _value_file_bytes(self, filename) -> int:
        """The size of one of the cache's own value files, as reading it would give it; 0 for anything else."""
        path = self._disk._own_file(filename)
        try:
            info = os.lstat(path) if path is not None else None
        except OSError:
            return 0
        if info is None or not stat.S_ISREG(info.st_mode) or info.st_size > MAX_VALUE_BYTES:
            return 0
        return info.st_size

    def disk_bytes(self) -> int:
        """Bytes of the folder's regular files (database and value files), links not followed."""
        total = 0
        for root, _, files in os.walk(self.directory):
            for name in files:
                info = os.lstat(os.path.join(root, name))
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
        return total

    def get_encoded(self, fingerprint: str, image_hash: str) -> bytes | None:
        """The raw stored bytes of an entry (not checked), or ``None`` when absent.

        Raises:
            CorruptTargetError: the value is foreign (a pickle, a link, not bytes).
        """
        try:
            data = self.get(entry_key(fingerprint, image_hash))
        except ForeignEntryError as error:
            raise CorruptTargetError(str(error)) from error
        if data is not None and not isinstance(data, bytes):
            raise CorruptTargetError(f"a stored {type(data).__name__} where a target's bytes belong")
        return data

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Largest recorded labeller parameters accepted from a pack or another cache: entries, and characters of a text value.
_MAX_PARAMS, _MAX_PARAM_TEXT = 64, 256


def check_labeller_params(params, fingerprint: str | None = None) -> dict:
    """Check labeller parameters from a pack or another cache before they are recorded in a cache.

    They must be a dict of the labeller's own names (``version`` and the fields of
    :class:`~saliencyssl.saliency.LabellerConfig`) with values that are ``None``, finite numbers,
    short text, or (``t2_values``) a short list of finite numbers. With ``fingerprint``, and
    parameters of this labeller version, they must also rebuild a labeller of that fingerprint:
    parameters that describe another labeller than the targets they come with are not recorded.

    Returns:
        ``params`` itself.

    Raises:
        ValueError: naming the first value that does not fit.
    """
    import math

    from saliencyssl.saliency.labeller import LABELLER_VERSION, LabellerConfig

    if not isinstance(params, dict):
        raise ValueError(f"labeller parameters must be an object, got {type(params).__name__}")
    if len(params) > _MAX_PARAMS:
        raise ValueError(f"{len(params)} labeller parameters; a labeller has "
                         f"{len(LabellerConfig.__dataclass_fields__)}")
    known = {"version", *LabellerConfig.__dataclass_fields__}

    def number(value) -> bool:
        return type(value) in (int, float) and math.isfinite(value)

    for name, value in params.items():
        if name not in known:
            raise ValueError(f"unknown labeller parameter {str(name)!r:.40} (known: {', '.join(sorted(known))})")
        if name == "version":
            ok = isinstance(value, str) and len(value) <= 32
        elif isinstance(value, list):
            ok = len(value) <= 16 and all(number(v) for v in value)
        else:
            ok = value is None or number(value) or (isinstance(value, str) and len(value) <= _MAX_PARAM_TEXT)
        if not ok:
            raise ValueError(f"labeller parameter {name} = {value!r:.60} is not a number, a short text or a list of "
                             f"numbers")
    if fingerprint is not None and params.get("version") == LABELLER_VERSION:
        try:
            rebuilt = LabellerConfig.from_params(params).fingerprint()
        except (ValueError, TypeError) as error:
            raise ValueError(f"labeller parameters that no labeller accepts ({error})") from error
        if rebuilt != fingerprint:
            raise ValueError(f"labeller parameters of fingerprint {rebuilt}, not {fingerprint}")
    return params


class TargetCache:
    """Exact targets on disk, looked up by image (or its content hash).

    Args:
        directory: cache folder (created if missing, unless ``create=False``).
        fingerprint: the labeller fingerprint whose targets this object reads and writes.
        params: the labeller parameters behind ``fingerprint``, recorded once so that
            ``cache stats`` can say what made the entries.
        timeout: seconds SQLite waits for a lock held by another process.
        create: make a new cache when the folder holds none (``False``: raise ``FileNotFoundError``).

    Raises:
        CacheOpenError: ``cache.db`` is damaged, empty, or not a saliency-ssl cache
            (:func:`audit_database`).

    Example:
        >>> import tempfile
        >>> from saliencyssl.saliency import Labeller
        >>> labeller = Labeller()
        >>> cache = TargetCache(tempfile.mkdtemp(), labeller.fingerprint)
        >>> image = np.zeros((16, 16, 3), np.uint8)
        >>> image[4:12, 4:12] = (220, 40, 40)
        >>> target = cache.get(image) or labeller(image)   # a miss: labelled
        >>> cache.put(image, target)
        >>> cache.get(image).equals(target)                # a hit: the same target
        True
    """

    def __init__(self, directory: str | Path, fingerprint: str, params: dict | None = None, timeout: float = 120.0,
                 create: bool = True):
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            raise ValueError(f"invalid labeller fingerprint {fingerprint!r} (1-64 letters, digits, '_', '.', '-')")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"cache path {self.directory} exists and is not a folder; choose another cache "
                                     f"folder")
        self.fingerprint = fingerprint
        self._cache = _open_diskcache(self.directory, timeout, create)
        self.hits = 0
        self.misses = 0
        self.damaged = 0
        if params is not None:
            self._record_params(params)

    @_database_errors
    def _record_params(self, params: dict) -> None:
        meta_key = _META_PREFIX + self.fingerprint
        if meta_key not in self._cache:
            self._cache.set(meta_key, json.dumps(params, sort_keys=True))

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds a cache already (its ``cache.db``); opening one creates it."""
        return (Path(directory) / "cache.db").is_file()

    # -- lookups -----------------------------------------------------------------------------
    @staticmethod
    def hash_of(image_or_hash: np.ndarray | str) -> str:
        """The content hash of an image, or the hash itself when given one (32 lowercase hex characters)."""
        if isinstance(image_or_hash, str):
            if len(image_or_hash) != HASH_HEX_LENGTH or image_or_hash.strip("0123456789abcdef"):
                raise ValueError(f"{image_or_hash!r:.50} is not a content hash ({HASH_HEX_LENGTH} hex characters)")
            return image_or_hash
        return content_hash(image_or_hash)

    def key_of(self, image_or_hash: np.ndarray | str) -> str:
        """The key of this image's target under this cache's fingerprint."""
        return entry_key(self.fingerprint, self.hash_of(image_or_hash))

    @_database_errors
    def __contains__(self, image_or_hash: np.ndarray | str) -> bool:
        return self.key_of(image_or_hash) in self._cache

    def contains(self, image_or_hash: np.ndarray | str) -> bool:
        """True when the cache holds a target for this image under this fingerprint.

        Only the key is checked; :meth:`get` also checks the value.
        """
        return image_or_hash in self

    @_database_errors
    def get(self, image_or_hash: np.ndarray | str) -> Target | None:
        """The stored target, or ``None`` on a miss or a damaged entry (which is deleted)."""
        key = self.key_of(image_or_hash)
        try:
            data = self._cache.get(key, default=None)
            if data is None:
                self.misses += 1
                return None
            target = decode_target(data, key)
        except CorruptTargetError as error:
            self.damaged += 1
            self.misses += 1
            log.warning("cache %s: damaged entry %s (%s); removed, it will be recomputed", self.directory, key, error)
            self._cache.delete(key)
            return None
        self.hits += 1
        return target

    def get_many(self, hashes: Iterable[str]) -> list[Target | None]:
        """:meth:`get` for each hash, in order."""
        return [self.get(h) for h in hashes]

    def missing(self, hashes: Iterable[str]) -> list[int]:
        """Positions in ``hashes`` whose key the cache does not hold."""
        return [i for i, h in enumerate(hashes) if h not in self]

    @_database_errors
    def put(self, image_or_hash: np.ndarray | str, target: Target) -> None:
        """Store a target (one atomic transaction; an existing entry is replaced)."""
        if not isinstance(target, Target):
            raise TypeError(f"TargetCache.put expects a Target, got {type(target).__name__}")
        key = self.key_of(image_or_hash)
        self._cache.set(key, encode_target(target, key))

    def transaction(self):
        """A context in which several puts form one transaction (all stored, or none if interrupted)."""
        return self._cache.transact()

    @_database_errors
    def put_many(self, items: Iterable[tuple[str, Target]], chunk: int = 1000) -> int:
        """Store several targets, ``chunk`` a transaction; returns how many.

        A transaction holds the database's write lock: one for a whole import of a million rows would make every
        other writer wait past its timeout, and an import stopped half way would keep nothing. Chunk by chunk, it
        keeps what it committed (importing again stores the rest).
        """
        if chunk < 1:
            raise ValueError(f"put_many needs a chunk of at least 1 target, got {chunk}")
        count = 0
        items = iter(items)
        while True:
            with self.transaction():
                stored = 0
                for image_hash, target in items:
                    key = self.key_of(image_hash)
                    self._cache.set(key, encode_target(target, key))
                    stored += 1
                    if stored == chunk:
                        break
            count += stored
            if stored < chunk:
                return count

    @_database_errors
    def put_encoded(self, image_hash: str, data: bytes, from_key: str | None = None) -> None:
        """Store already-encoded bytes after checking that they decode (workers' results, merged caches).

        Args:
            image_hash: the image's content hash.
            data: :func:`~saliencyssl.cache.codec.encode_target` bytes.
            from_key: the key ``data`` was encoded with; ``None`` accepts the two a caller holds:
                ``""`` (fresh from a worker) or this cache's key for ``image_hash`` (bytes copied
                from a cache of the same labeller). The stored entry is bound to this cache's key.

        Raises:
            CorruptTargetError: the bytes fail their check.
        """
        key = self.key_of(image_hash)
        candidates = [from_key] if from_key is not None else ["", key]
        for i, candidate in enumerate(candidates):
            try:
                decode_target(data, candidate)
            except CorruptTargetError:
                if i == len(candidates) - 1:
                    raise
                continue
            self._cache.set(key, bind_key(data, candidate, key))
            return

    @_database_errors
    def get_encoded(self, image_hash: str) -> bytes | None:
        """The raw stored bytes of an entry (not checked), or ``None``; a foreign value is damage."""
        try:
            data = self._cache.get(self.key_of(image_hash), default=None)
        except ForeignEntryError as error:
            raise CorruptTargetError(str(error)) from error
        return data if isinstance(data, bytes) or data is None else b""

    @_database_errors
    def delete(self, image_or_hash: np.ndarray | str) -> bool:
        return bool(self._cache.delete(self.key_of(image_or_hash)))

    # -- whole-cache operations ----------------------------------------------------------------
    @_database_errors
    def hashes(self) -> Iterator[str]:
        """Content hashes of every entry under this fingerprint."""
        for key in self._cache.iterkeys():
            entry = _ENTRY_KEY.fullmatch(key) if isinstance(key, str) else None
            if entry and entry.group(1) == self.fingerprint:
                yield entry.group(2)

    @_database_errors
    def fingerprints(self) -> dict[str, dict | None]:
        """Every fingerprint with entries or recorded parameters, mapped to its parameters."""
        return _fingerprints(self._cache)

    @_database_errors
    def stats(self) -> CacheStats:
        """Entries and bytes of this fingerprint, all entries, and this object's hit counters."""
        sizes = _entry_sizes(self._cache, only=self.fingerprint)
        entries, size = sizes.get(self.fingerprint, (0, 0))
        total = sum(n for n, _ in sizes.values())
        return CacheStats(entries=entries, bytes=size, all_entries=total, disk_bytes=int(self._cache.volume()),
                          hits=self.hits, misses=self.misses, damaged=self.damaged,
                          fingerprint=self.fingerprint, directory=str(self.directory))

    @_database_errors
    def verify(self, remove: bool = True) -> VerifyReport:
        """Check every entry of this fingerprint and every key's form.

        Entries of this fingerprint are decoded against their key (damaged ones reported and, by
        default, deleted); entries written before the checksum covered the key are rewritten in
        the current format; keys the toolkit never writes (pickled keys, other names) are
        reported as foreign and deleted unread.
        """
        report = VerifyReport(checked=0, damaged=[], other_fingerprints=0)
        for key in list(self._cache.iterkeys()):
            meta = _META_KEY.fullmatch(key) if isinstance(key, str) else None
            if meta:
                if meta.group(1) == self.fingerprint and not self._params_fit(key):
                    log.warning("cache %s: damaged labeller parameters %s", self.directory, key)
                    report.damaged.append(f"{key} (the labeller parameters recorded for it)")
                    if remove:
                        self._cache.delete(key)
                continue
            entry = _ENTRY_KEY.fullmatch(key) if isinstance(key, str) else None
            if entry is None:
                report.foreign.append(repr(key) if not isinstance(key, str) else key)
                if remove:
                    self._cache.delete(key)
                continue
            if entry.group(1) != self.fingerprint:
                report.other_fingerprints += 1
                continue
            report.checked += 1
            try:
                data = self._cache.get(key)
                decode_target(data, key)
            except CorruptTargetError as error:
                log.warning("cache %s: damaged entry %s (%s)", self.directory, key, error)
                report.damaged.append(entry.group(2))
                if remove:
                    self._cache.delete(key)
                continue
            if entry_version(data) < CODEC_VERSION and remove:
                self._cache.set(key, bind_key(data, key, key))
                report.upgraded += 1
        return report

    def _params_fit(self, key: str) -> bool:
        """The recorded labeller parameters at ``key`` rebuild a labeller of this fingerprint."""
        from saliencyssl.saliency import LabellerConfig

        try:
            params = json.loads(self._cache.get(key))
            return isinstance(params, dict) and LabellerConfig.from_params(params).fingerprint() == self.fingerprint
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError, ForeignEntryError):
            return False

    @_database_errors
    def clear(self) -> int:
        """Delete every entry (all fingerprints); returns how many."""
        return int(self._cache.clear())

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> "TargetCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return sum(1 for _ in self.hashes())

    def __repr__(self) -> str:
        return f"TargetCache({str(self.directory)!r}, fingerprint={self.fingerprint!r})"

    # diskcache handles are per process; reopen after pickling (DataLoader workers, Dask).
    def __getstate__(self) -> dict:
        return {"directory": str(self.directory), "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], state["fingerprint"])
