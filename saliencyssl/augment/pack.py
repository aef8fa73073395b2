"""The frozen pack: a data set's exact targets, loaded once into contiguous tensors.

:meth:`FrozenPack.build` reads every image's target from a :class:`~saliencyssl.cache.TargetCache`
(by the content hashes the data set computed once), brings it to the training size, and stacks
the parts into three tensors indexed by data-set position:

==========  =====================  ======  ======================================
tensor      shape                  dtype   meaning
==========  =====================  ======  ======================================
saliency    ``(N, S, S)``          uint8   RC map, 0..255
mask        ``(N, S, S)``          bool    SaliencyCut mask
regions     ``(N, S, S)``          int16   region labels (renumbered per image)
present     ``(N,)``               bool    the cache held this image's target
==========  =====================  ======  ======================================

Per batch, :meth:`FrozenPack.gather` is three ``index_select`` calls on the training device
(pinned memory or the GPU itself), so a cached target costs no decoding, no file access and
no Python loop. A pack is frozen: it does not see entries added to the cache after it was
built, except through :meth:`FrozenPack.update`, which the router calls after labelling misses
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from saliencyssl.target import Target, TargetBatch

_REGION_MAX = int(torch.iinfo(torch.int16).max)


@dataclass
class PackReport:
    """How building a pack went: ``hits`` targets found, ``misses`` images without one."""

    total: int
    hits: int
    misses: int
    missing_indices: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (f"frozen pack: {self.hits} of {self.total} images have a cached target "
                f"({self.misses} miss{'es' if self.misses != 1 else ''})")


class FrozenPack:
    """Targets of a data set as contiguous tensors (see the module docstring).

    Args:
        saliency, mask, regions: the stored tensors, one row per stored target.
        present: ``(N,)`` bool per data-set position.
        hashes: content hash per data-set position.
        fingerprint: the labeller fingerprint of the targets.
        rows: ``(N,)`` long, the stored row of each data-set position, when rows and positions
            differ (a memory-mapped pack file); ``None`` when row ``i`` is position ``i``.
    """

    def __init__(self, saliency: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor, present: torch.Tensor,
                 hashes: Sequence[str], fingerprint: str, rows: torch.Tensor | None = None):
        n = len(hashes)
        if present.shape[0] != n or (rows is not None and rows.shape[0] != n):
            raise ValueError("pack index and hashes differ in length")
        if rows is None and not (saliency.shape[0] == mask.shape[0] == regions.shape[0] == n):
            raise ValueError("pack tensors and hashes differ in length")
        self.saliency, self.mask, self.regions, self.present = saliency, mask, regions, present
        self.rows = rows
        self.hashes = list(hashes)
        self.fingerprint = fingerprint
        self.report = PackReport(n, int(present.sum()), n - int(present.sum()),
                                 torch.nonzero(~present).flatten().tolist())

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def image_size(self) -> int:
        return int(self.saliency.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.saliency.device

    @classmethod
    def empty(cls, hashes: Sequence[str], image_size: int, fingerprint: str) -> "FrozenPack":
        from saliencyssl.datasets import check_memory

        n, s = len(hashes), image_size
        check_memory(n * s * s * 4, f"the targets of {n:,} images at {s}x{s}")  # saliency, mask, two region bytes
        return cls(torch.zeros(n, s, s, dtype=torch.uint8), torch.zeros(n, s, s, dtype=torch.bool),
                   torch.zeros(n, s, s, dtype=torch.int16), torch.zeros(n, dtype=torch.bool), hashes, fingerprint)

    @classmethod
    def build(cls, hashes: Sequence[str], cache, image_size: int, progress: bool = False) -> "FrozenPack":
        """Read every hash's target from ``cache`` (a :class:`TargetCache`) at ``image_size``.

        Damaged entries are treated as misses (the cache reports and removes them).
        """
        from saliencyssl.datasets import target_at_size

        pack = cls.empty(hashes, image_size, cache.fingerprint)
        iterator = range(len(pack.hashes))
        if progress and len(pack.hashes) > 2000:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="building frozen pack", unit="img")
        for i in iterator:
            target = cache.get(pack.hashes[i])
            if target is not None:
                pack._set(i, target_at_size(target, image_size))
        pack._refresh_report()
        return pack

    def _set(self, index: int, target: Target) -> None:
        regions = target.regions.astype(np.int64)
        if regions.max(initial=0) > _REGION_MAX:  # targets number their regions 0..R-1 (relabel_raster)
            raise ValueError(f"a target with region label {int(regions.max()):,}; a frozen pack holds labels up to "
                             f"{_REGION_MAX:,} (int16)")
        self.saliency[index] = torch.from_numpy(target.saliency)
        self.mask[index] = torch.from_numpy(target.mask)
        self.regions[index] = torch.from_numpy(regions.astype(np.int16))
        self.present[index] = True

    def _refresh_report(self) -> None:
        present = self.present.cpu()
        self.report = PackReport(len(self), int(present.sum()), len(self) - int(present.sum()),
                                 torch.nonzero(~present).flatten().tolist())

    def update(self, indices: Sequence[int], targets: Sequence[Target]) -> None:
        """Add targets (already at the pack's size) labelled after the pack was built."""
        if self.rows is not None:
            raise ValueError("a pack loaded from a pack file is read-only; label misses into a cache folder instead")
        for index, target in zip(indices, targets):
            if target.shape != (self.image_size, self.image_size):
                raise ValueError(f"target of size {target.shape} does not fit a {self.image_size}px pack")
            self._set(int(index), target)
        self._refresh_report()

    def to(self, device: str | torch.device, pin: bool = False) -> "FrozenPack":
        """The pack on ``device`` (``pin=True`` pins CPU memory for fast copies to a GPU)."""
        tensors = [t.to(device) for t in (self.saliency, self.mask, self.regions, self.present)]
        if pin and torch.device(device).type == "cpu" and torch.cuda.is_available():
            tensors = [t.pin_memory() for t in tensors]
        rows = self.rows.to(device) if self.rows is not None else None
        return FrozenPack(*tensors, hashes=self.hashes, fingerprint=self.fingerprint, rows=rows)

    def present_at(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: which of these data-set positions have a target."""
        return self.present.index_select(0, indices.to(self.present.device))

    def gather_raw(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored tensors at ``indices``: ``(B, S, S)`` uint8, bool and int16."""
        indices = indices.to(self.saliency.device)
        if self.rows is not None:
            indices = self.rows.index_select(0, indices)
        return (self.saliency.index_select(0, indices), self.mask.index_select(0, indices),
                self.regions.index_select(0, indices))

    def gather(self, indices: torch.Tensor, device: str | torch.device | None = None) -> TargetBatch:
        """Targets at ``indices`` as a :class:`TargetBatch` (on ``device``, default the pack's)."""
        saliency, mask, regions = self.gather_raw(indices)
        if device is not None:
            non_blocking = saliency.is_pinned() if saliency.device.type == "cpu" else False
            saliency = saliency.to(device, non_blocking=non_blocking)
            mask = mask.to(device, non_blocking=non_blocking)
            regions = regions.to(device, non_blocking=non_blocking)
        return TargetBatch(saliency.unsqueeze(1).float().div_(255.0), mask.unsqueeze(1),
                           regions.unsqueeze(1).long())

    def target(self, index: int) -> Target:
        """The target of data-set position ``index`` as a numpy :class:`Target` (for inspection and tests)."""
        if self.rows is not None:
            index = int(self.rows[index])
        return Target(self.saliency[index].cpu().numpy(), self.mask[index].cpu().numpy(),
                      self.regions[index].cpu().numpy().astype(np.uint16))


def load_pack(path: str | Path, hashes: Sequence[str], image_size: int, expect_fingerprint: str | None = None,
              verify: bool = True):
    """A :class:`~saliencyssl.augment.pack.FrozenPack` for a data set, straight from a pack file.

    Args:
        path: the pack.
        hashes: content hash per data-set position (:attr:`TrainingImages.hashes`).
        image_size: the training side length.
        expect_fingerprint: refuse another labeller's pack.
        verify: check the pack's checksum first (one read of the file; a flipped byte anywhere
            is refused). ``False`` only for a pack verified just before.

    Raises:
        PackError: another labeller's pack, a damaged header, (with ``verify``) a checksum mismatch, or
            mask or region values saliency-ssl never writes (read once more when the pack is used as it
            is, whatever ``verify`` says).

    When every row of the pack is ``image_size`` square, the pack's tensors are the memory map
    itself (shared between processes; nothing copied) and a data-set position maps to its row
    through an index; otherwise the targets are resized into memory.
    """
    from saliencyssl.cache.packfile import PackError, open_pack, verify_pack
    from saliencyssl.datasets import target_at_size

    pack = open_pack(path, expect_fingerprint)
    if verify and not verify_pack(pack):
        raise PackError(f"{path} fails its checksum: it was damaged after it was written; export it again, or "
                        f"copy it again from where it was made")
    rows = pack.row_of()
    position_rows = torch.tensor([rows.get(h, -1) for h in hashes], dtype=torch.long)
    present = position_rows >= 0
    if pack.uniform_size == (image_size, image_size):
        # The memory map becomes the tensors as it is. Its checksum says the file is as written, not that its writer
        # was honest: a mask byte other than 0 or 1 would be an invalid torch.bool, a negative region an invalid label.
        mask, regions = pack.arrays["mask"], pack.arrays["regions"]
        if (mask.size and int(mask.max()) > 1) or (regions.size and int(regions.min()) < 0):
            raise PackError(f"{path} holds mask values other than 0 and 1 or negative region labels, which "
                            f"saliency-ssl never writes; export it again from the cache it came from")
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
