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
  network file system; for clusters, one process writes (see ``scripts/label.py --scheduler``).
- **Integrity.** Values carry a checksum (:mod:`saliencyssl.cache.codec`). A damaged entry is
  reported (a warning naming the key), deleted and treated as a miss, so it is recomputed and
  never returned. :meth:`TargetCache.verify` checks every entry.
- **No eviction.** The cache never drops entries to save space (``eviction_policy="none"``);
  delete the directory, or use :meth:`TargetCache.clear`, to start over.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from saliencyssl.cache.codec import CorruptTargetError, decode_target, encode_target
from saliencyssl.hashing import content_hash
from saliencyssl.target import Target

log = logging.getLogger(__name__)

_META_PREFIX = "meta/"


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
    """Result of :meth:`TargetCache.verify`: entries checked, and keys found damaged (and removed)."""

    checked: int
    damaged: list[str]
    other_fingerprints: int


class CacheOpenError(OSError):
    """A cache folder whose ``cache.db`` cannot be opened as a database (damaged or not one)."""


def _key(fingerprint: str, image_hash: str) -> str:
    return f"{fingerprint}/{image_hash}"


class TargetCache:
    """Exact targets on disk, looked up by image (or its content hash).

    Args:
        directory: cache folder (created if missing).
        fingerprint: the labeller fingerprint whose targets this object reads and writes.
        params: the labeller parameters behind ``fingerprint``, recorded once so that
            ``scripts/cache.py stats`` can say what made the entries.
        timeout: seconds SQLite waits for a lock held by another process.

    Example:
        >>> from saliencyssl.saliency import Labeller  # doctest: +SKIP
        >>> labeller = Labeller()  # doctest: +SKIP
        >>> cache = TargetCache("runs/cache", labeller.fingerprint)  # doctest: +SKIP
        >>> target = cache.get(image) or labeller(image)  # doctest: +SKIP
    """

    def __init__(self, directory: str | Path, fingerprint: str, params: dict | None = None, timeout: float = 120.0):
        import diskcache

        if not fingerprint or "/" in fingerprint:
            raise ValueError(f"invalid labeller fingerprint {fingerprint!r}")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"cache path {self.directory} exists and is not a folder; choose another --cache")
        self.fingerprint = fingerprint
        try:
            self._cache = diskcache.Cache(str(self.directory), timeout=timeout, eviction_policy="none",
                                          size_limit=2 ** 62, statistics=False)
        except sqlite3.DatabaseError as error:
            raise CacheOpenError(f"{self.directory / 'cache.db'} is not a readable cache database ({error}); "
                                 f"delete the folder {self.directory} (its targets are lost) or choose another "
                                 f"--cache") from error
        self.hits = 0
        self.misses = 0
        self.damaged = 0
        if params is not None:
            meta_key = _META_PREFIX + fingerprint
            if meta_key not in self._cache:
                self._cache.set(meta_key, json.dumps(params, sort_keys=True))

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds a cache already (its ``cache.db``); opening one creates it."""
        return (Path(directory) / "cache.db").is_file()

    # -- lookups -----------------------------------------------------------------------------
    @staticmethod
    def hash_of(image_or_hash: np.ndarray | str) -> str:
        """The content hash of an image, or the hash itself when given a string."""
        return image_or_hash if isinstance(image_or_hash, str) else content_hash(image_or_hash)

    def __contains__(self, image_or_hash: np.ndarray | str) -> bool:
        return _key(self.fingerprint, self.hash_of(image_or_hash)) in self._cache

    def contains(self, image_or_hash: np.ndarray | str) -> bool:
        """True when the cache holds a target for this image under this fingerprint.

        Only the key is checked; :meth:`get` also checks the value.
        """
        return image_or_hash in self

    def get(self, image_or_hash: np.ndarray | str) -> Target | None:
        """The stored target, or ``None`` on a miss or a damaged entry (which is deleted)."""
        key = _key(self.fingerprint, self.hash_of(image_or_hash))
        data = self._cache.get(key, default=None)
        if data is None:
            self.misses += 1
            return None
        try:
            target = decode_target(data)
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

    def put(self, image_or_hash: np.ndarray | str, target: Target) -> None:
        """Store a target (one atomic transaction; an existing entry is replaced)."""
        if not isinstance(target, Target):
            raise TypeError(f"TargetCache.put expects a Target, got {type(target).__name__}")
        self._cache.set(_key(self.fingerprint, self.hash_of(image_or_hash)), encode_target(target))

    def transaction(self):
        """A context in which several puts form one transaction (all stored, or none if interrupted)."""
        return self._cache.transact()

    def put_many(self, items: Iterable[tuple[str, Target]]) -> int:
        """Store several targets in one transaction; returns how many."""
        count = 0
        with self.transaction():
            for image_hash, target in items:
                self._cache.set(_key(self.fingerprint, image_hash), encode_target(target))
                count += 1
        return count

    def put_encoded(self, image_hash: str, data: bytes) -> None:
        """Store already-encoded bytes after checking that they decode (used when merging caches)."""
        decode_target(data)
        self._cache.set(_key(self.fingerprint, image_hash), bytes(data))

    def get_encoded(self, image_hash: str) -> bytes | None:
        """The raw stored bytes of an entry (not checked), or ``None``."""
        return self._cache.get(_key(self.fingerprint, image_hash), default=None)

    def delete(self, image_or_hash: np.ndarray | str) -> bool:
        return bool(self._cache.delete(_key(self.fingerprint, self.hash_of(image_or_hash))))

    # -- whole-cache operations ----------------------------------------------------------------
    def hashes(self) -> Iterator[str]:
        """Content hashes of every entry under this fingerprint."""
        prefix = self.fingerprint + "/"
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(prefix):
                yield key[len(prefix):]

    def fingerprints(self) -> dict[str, dict | None]:
        """Every fingerprint with entries or recorded parameters, mapped to its parameters."""
        found: dict[str, dict | None] = {}
        for key in self._cache.iterkeys():
            if not isinstance(key, str):
                continue
            if key.startswith(_META_PREFIX):
                found[key[len(_META_PREFIX):]] = json.loads(self._cache.get(key))
            else:
                found.setdefault(key.split("/", 1)[0], None)
        return found

    def stats(self) -> CacheStats:
        """Entries and bytes of this fingerprint, all entries, and this object's hit counters."""
        prefix = self.fingerprint + "/"
        entries = size = total = 0
        for key in self._cache.iterkeys():
            if not isinstance(key, str) or key.startswith(_META_PREFIX):
                continue
            total += 1
            if key.startswith(prefix):
                entries += 1
                value = self._cache.get(key)
                size += len(value) if value is not None else 0
        return CacheStats(entries=entries, bytes=size, all_entries=total, disk_bytes=int(self._cache.volume()),
                          hits=self.hits, misses=self.misses, damaged=self.damaged,
                          fingerprint=self.fingerprint, directory=str(self.directory))

    def verify(self, remove: bool = True) -> VerifyReport:
        """Decode every entry of this fingerprint; report (and by default delete) damaged ones."""
        damaged: list[str] = []
        checked = others = 0
        prefix = self.fingerprint + "/"
        for key in list(self._cache.iterkeys()):
            if not isinstance(key, str) or key.startswith(_META_PREFIX):
                continue
            if not key.startswith(prefix):
                others += 1
                continue
            checked += 1
            try:
                decode_target(self._cache.get(key))
            except CorruptTargetError as error:
                log.warning("cache %s: damaged entry %s (%s)", self.directory, key, error)
                damaged.append(key[len(prefix):])
                if remove:
                    self._cache.delete(key)
        return VerifyReport(checked=checked, damaged=damaged, other_fingerprints=others)

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

