"""The router: per image, the cache if it holds the target, else the surrogate, else the exact labeller.

A *source order* is a comma list (:func:`parse_sources`):

=================  ==========================================================================
``none``           no saliency view (targets are never asked for)
``cache``          every target from the frozen pack; a miss is an error that says how many
                   images miss
``cache,surrogate`` hits from the pack; the misses of a batch go to the surrogate in one
                   batched call on the training device
``cache,exact``    misses are labelled exactly (in worker processes), written back to the
                   cache and to the pack, so the next epoch hits
``surrogate``      every target from the surrogate
``exact``          every target labelled exactly, every time (the paper's slow baseline)
=================  ==========================================================================

:class:`SourceCounters` count hits, surrogate and exact calls and the seconds spent in each,
readable after every epoch. Missing pieces (no cache, no surrogate checkpoint, misses under
``cache`` alone) are caught by :meth:`TargetRouter.check_ready`, before the first step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from saliencyssl.augment.pack import FrozenPack
from saliencyssl.augment.predictor import TargetPredictor
from saliencyssl.target import TargetBatch

SOURCE_ORDERS = ("none", "cache", "cache,surrogate", "cache,exact", "surrogate", "exact")


class MissingPieceError(RuntimeError):
    """Something the chosen sources need is absent.

    Attributes:
        piece: what is missing: ``"cache"`` (no cache or pack), ``"misses"`` (images the cache
            lacks under ``cache`` alone; ``count`` and ``total``), ``"pack_size"``,
            ``"surrogate"``, ``"surrogate_size"``, ``"surrogate_fingerprint"``, ``"labeller"`` or
            ``"write_back"`` (``cache,exact`` without a cache to write to).
        data: the values the message names (sizes, fingerprints, counts), for the stage that
            turns the error into the command that fixes it.
    """

    def __init__(self, message: str, piece: str = "", **data):
        super().__init__(message)
        self.piece = piece
        self.data = data


def parse_sources(text: str) -> tuple[str, ...]:
    """``"cache,surrogate"`` -> ``("cache", "surrogate")``; raises ValueError for other orders."""
    normal = ",".join(part.strip() for part in text.split(",") if part.strip())
    if normal not in SOURCE_ORDERS:
        raise ValueError(f"unknown target source {text!r}; choose one of: {' | '.join(SOURCE_ORDERS)}")
    return tuple(normal.split(","))


@dataclass
class SourceCounters:
    """What the router did since the last reset.

    Attributes:
        images: targets asked for.
        cache_hits: served from the frozen pack.
        surrogate_calls, surrogate_images: batched surrogate calls and the images they covered.
        exact_calls, exact_images: exact labelling calls (one per batch) and images labelled.
        seconds: wall time spent per source (``cache``, ``surrogate``, ``exact``).
    """

    images: int = 0
    cache_hits: int = 0
    surrogate_calls: int = 0
    surrogate_images: int = 0
    exact_calls: int = 0
    exact_images: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"cache": 0.0, "surrogate": 0.0, "exact": 0.0})

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.images} targets: {self.cache_hits} cache hits ({self.seconds['cache']:.2f}s), "
                f"{self.surrogate_images} from the surrogate in {self.surrogate_calls} calls "
                f"({self.seconds['surrogate']:.2f}s), {self.exact_images} labelled exactly "
                f"({self.seconds['exact']:.2f}s)")


def _label_chunk(job: tuple[dict, int, list[tuple[int, np.ndarray]]]) -> list[tuple[int, bytes]]:
    """Worker: label ``(position, image)`` pairs with a labeller built from config fields and the router's labeller's
    pixel budget (so a worker refuses what the router's own labeller refuses, and no more)."""
    from saliencyssl.cache.codec import encode_target
    from saliencyssl.cache.executors import prepare_worker_process
    from saliencyssl.cache.labelling import _labeller

    prepare_worker_process()
    fields_, max_pixels, items = job
    labeller = _labeller(fields_, max_pixels)
    return [(pos, encode_target(_label_one(labeller, image, pos))) for pos, image in items]


def _label_one(labeller, image: np.ndarray, position: int):
    """One exact labelling within the labelling jobs' per-image time limit (``ImageTimeoutError`` past it)."""
    from saliencyssl.cache.labelling import DEFAULT_IMAGE_TIMEOUT, ImageTimeoutError, time_limit

    try:
        with time_limit(DEFAULT_IMAGE_TIMEOUT):
            return labeller(image)
    except ImageTimeoutError as error:
        raise ImageTimeoutError(f"labelling image {position} of the data set {error}") from None


class TargetRouter:
    """Serve the targets of training batches from the configured sources.

    Args:
        sources: a source order (string or tuple), see :data:`SOURCE_ORDERS`.
        image_size: the training side length ``S``; targets come out at ``S x S``.
        pack: the frozen pack of the data set (needed by ``cache``).
        surrogate: a :class:`TargetPredictor` (needed by ``surrogate``).
        labeller: a :class:`~saliencyssl.saliency.Labeller` (needed by ``exact``).
        image_set: the :class:`~saliencyssl.datasets.ImageSet` (``exact`` labels its originals).
        cache: the :class:`~saliencyssl.cache.TargetCache` that ``cache,exact`` writes back to; :meth:`close`
            closes its connection.
        exact_workers: processes for exact labelling (0 = in this process).
    """

    def __init__(self, sources: str | Sequence[str], image_size: int, *, pack: FrozenPack | None = None,
                 surrogate: TargetPredictor | None = None, labeller=None, image_set=None, cache=None,
                 exact_workers: int = 0):
        self.sources = parse_sources(sources) if isinstance(sources, str) else tuple(sources)
        self.image_size = int(image_size)
        self.pack, self.surrogate, self.labeller = pack, surrogate, labeller
        self.image_set, self.cache = image_set, cache
        self.exact_workers = int(exact_workers)
        self.counters = SourceCounters()
        self._pool = None

    # -- readiness ---------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.sources != ("none",)

    def check_ready(self) -> None:
        """Raise :class:`MissingPieceError` if a needed piece is absent (call before training)."""
        order = ",".join(self.sources)
        if "cache" in self.sources:
            if self.pack is None:
                raise MissingPieceError(f"targets from {order} need a cache (or a pack)", "cache")
            if self.pack.image_size != self.image_size:
                raise MissingPieceError(f"the frozen pack holds {self.pack.image_size}px targets but training runs "
                                        f"at {self.image_size}px", "pack_size", pack_size=self.pack.image_size)
            if self.sources == ("cache",) and self.pack.report.misses:
                raise MissingPieceError(f"{self.pack.report.misses} of {len(self.pack)} images miss in the cache "
                                        f"(labeller fingerprint {self.pack.fingerprint})", "misses",
                                        count=self.pack.report.misses, total=len(self.pack),
                                        fingerprint=self.pack.fingerprint)
        if "surrogate" in self.sources:
            if self.surrogate is None:
                raise MissingPieceError(f"targets from {order} need a surrogate", "surrogate")
            if self.surrogate.image_size != self.image_size:
                raise MissingPieceError(f"the surrogate was trained on {self.surrogate.image_size}px images but "
                                        f"training runs at {self.image_size}px", "surrogate_size",
                                        surrogate_size=self.surrogate.image_size)
            if self.pack is not None and self.surrogate.fingerprint != self.pack.fingerprint:
                raise MissingPieceError(f"the surrogate learned targets of labeller fingerprint "
                                        f"{self.surrogate.fingerprint} but the cache holds {self.pack.fingerprint}",
                                        "surrogate_fingerprint", surrogate=self.surrogate.fingerprint,
                                        cache=self.pack.fingerprint)
        if "exact" in self.sources:
            if self.labeller is None or self.image_set is None:
                raise MissingPieceError("targets from the exact labeller need the labeller and the data set's "
                                        "original images", "labeller")
            if "cache" in self.sources and self.cache is None:
                raise MissingPieceError("targets from cache,exact are written back to a cache", "write_back")

    # -- serving -----------------------------------------------------------------------------
    def targets(self, indices: torch.Tensor, images: torch.Tensor) -> TargetBatch | None:
        """Targets of a batch, on the images' device.

        Args:
            indices: ``(B,)`` long data-set positions of the batch.
            images: ``(B, 3, S, S)`` uint8 images at the training size (the surrogate's input).

        Returns:
            A :class:`TargetBatch` of ``(B, 1, S, S)`` parts, or ``None`` for ``none``.
        """
        if not self.enabled:
            return None
        device = images.device
        b = images.shape[0]
        self.counters.images += b
        if self.sources[0] != "cache":
            if self.sources[0] == "surrogate":
                return self._surrogate(images)
            return self._exact(indices, write=False).to(device)

        start = time.perf_counter()
        present = self.pack.present_at(indices).to(device)
        n_hit = int(present.sum())
        if n_hit == b:
            out = self.pack.gather(indices, device=device)
            self.counters.cache_hits += b
            self.counters.seconds["cache"] += time.perf_counter() - start
            return out
        if len(self.sources) == 1:
            raise MissingPieceError(f"{b - n_hit} of {b} images of this batch miss in the cache", "misses",
                                    count=b - n_hit, total=b, fingerprint=self.pack.fingerprint)
        hit_pos = torch.nonzero(present).flatten()
        miss_pos = torch.nonzero(~present).flatten()
        parts, order = [], []
        if n_hit:
            parts.append(self.pack.gather(indices[hit_pos.to(indices.device)], device=device))
            order.append(hit_pos)
        self.counters.cache_hits += n_hit
        self.counters.seconds["cache"] += time.perf_counter() - start
        if self.sources[1] == "surrogate":
            parts.append(self._surrogate(images.index_select(0, miss_pos)))
        else:
            parts.append(self._exact(indices[miss_pos.to(indices.device)], write=True).to(device))
        order.append(miss_pos)
        merged = TargetBatch.cat(parts)
        inverse = torch.empty(b, dtype=torch.long, device=device)
        inverse[torch.cat(order)] = torch.arange(b, device=device)
        return merged.index_select(inverse)

    def _surrogate(self, images: torch.Tensor) -> TargetBatch:
        start = time.perf_counter()
        out = self.surrogate.predict(images)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        self.counters.surrogate_calls += 1
        self.counters.surrogate_images += images.shape[0]
        self.counters.seconds["surrogate"] += time.perf_counter() - start
        return out

    def _exact(self, indices: torch.Tensor, write: bool) -> TargetBatch:
        """Label the original images at ``indices`` exactly; with ``write``, store them in cache and pack."""
        from saliencyssl.datasets import target_at_size
        from saliencyssl.cache.codec import decode_target, storable

        start = time.perf_counter()
        positions = indices.cpu().tolist()
        items = [(pos, self.image_set.image(pos)) for pos in positions]
        if self.exact_workers > 0:
            if self._pool is None:
                from saliencyssl.cache.executors import PoolExecutor

                self._pool = PoolExecutor(self.exact_workers)
            params = self.labeller.config.options()
            chunk = max(1, len(items) // (2 * self.exact_workers) + 1)
            jobs = [(params, self.labeller.max_pixels, items[i:i + chunk]) for i in range(0, len(items), chunk)]
            encoded = dict(pair for result in self._pool.imap_unordered(_label_chunk, jobs) for pair in result)
            full = {pos: decode_target(encoded[pos]) for pos in positions}
        else:
            full = {pos: _label_one(self.labeller, image, pos) for pos, image in items}
        if write:
            hashes = self.image_set.hashes()
            with self.cache.transaction():
                for pos, target in full.items():
                    if storable(*target.shape):  # a panorama over 65,535 px trains on its target unstored
                        self.cache.put(hashes[pos], target)
        sized = [target_at_size(full[pos], self.image_size) for pos in positions]
        if write and self.pack is not None:
            self.pack.update(positions, sized)
        self.counters.exact_calls += 1
        self.counters.exact_images += len(positions)
        self.counters.seconds["exact"] += time.perf_counter() - start
        return TargetBatch.from_targets(sized)

    # -- bookkeeping -------------------------------------------------------------------------
    def reset_counters(self) -> SourceCounters:
        """Return the counters so far and start new ones (call at the end of each epoch)."""
        counters, self.counters = self.counters, SourceCounters()
        return counters

    def close(self) -> None:
        """Stop the exact labeller's worker pool and close the cache's database connection."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.cache is not None:
            self.cache.close()

    def __repr__(self) -> str:
        return f"TargetRouter(sources={','.join(self.sources)}, image_size={self.image_size})"

