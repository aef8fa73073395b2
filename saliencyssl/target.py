"""The exact target of one image, the structure every part of saliency-ssl shares.

The exact labeller (:mod:`saliencyssl.saliency`) produces a :class:`Target`, the cache
(:mod:`saliencyssl.cache`) stores it, the surrogate (:mod:`saliencyssl.surrogate`) predicts its
dense channels, and the view renderer (:mod:`saliencyssl.augment`) paints it.

A target has three parts, all at the image's own height and width:

==========  ===========  ==========================================================
field       dtype        meaning
==========  ===========  ==========================================================
saliency    uint8        Cheng's RC saliency map, ``round(map * 255)``, 0..255
mask        bool         the SaliencyCut mask (True = salient object); may be empty
regions     uint16       the RC region segmentation, labels 0..R-1 numbered in raster
                         order of first appearance
==========  ===========  ==========================================================

For learning and rendering, a target is also written as dense channels
(:data:`TARGET_CHANNELS`): the saliency map in [0, 1], the mask as 0/1, and the region
*boundary* (a pixel whose right or lower neighbour lies in another region). The boundary is
what a network can predict; :func:`regions_from_boundary` turns it back into segments by
4-connected components, which never merge two regions because a region pixel that is not on
the boundary has its right and lower neighbours in the same region.

:class:`TargetBatch` is the batched, torch form used on the training device: the same three
parts as tensors of shape ``(B, 1, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a batch is built, so numpy-only users need not load it
    import torch

#: The dense channels of a target, in the order the surrogate predicts them.
TARGET_CHANNELS: tuple[str, ...] = ("saliency", "mask", "boundary")


@dataclass(frozen=True, eq=False)
class Target:
    """Exact labeller output for one image.

    Args:
        saliency: ``(H, W)`` uint8 RC saliency map, 0..255.
        mask: ``(H, W)`` bool SaliencyCut mask.
        regions: ``(H, W)`` uint16 region labels, 0..R-1.

    Example:
        >>> t = Target.empty(4, 5)
        >>> t.shape, t.num_regions, bool(t.mask.any())
        ((4, 5), 1, False)
    """

    saliency: np.ndarray
    mask: np.ndarray
    regions: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in (("saliency", np.uint8), ("mask", np.bool_), ("regions", np.uint16)):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.ndim != 2:
                raise ValueError(f"Target.{name} must be a 2-D numpy array, got {type(value).__name__} "
                                 f"with shape {getattr(value, 'shape', None)}")
            if value.dtype != dtype:
                raise ValueError(f"Target.{name} must have dtype {np.dtype(dtype).name}, got {value.dtype}; "
                                 f"build targets with Target.from_maps() to convert")
        if not (self.saliency.shape == self.mask.shape == self.regions.shape):
            raise ValueError(f"Target parts differ in shape: saliency {self.saliency.shape}, "
                             f"mask {self.mask.shape}, regions {self.regions.shape}")

    @classmethod
    def from_maps(cls, saliency: np.ndarray, mask: np.ndarray, regions: np.ndarray) -> "Target":
        """Build a target from a float saliency map in [0, 1], any mask and integer labels.

        Args:
            saliency: ``(H, W)`` float map in [0, 1] (values outside are clipped), or uint8.
            mask: ``(H, W)`` array, non-zero = object.
            regions: ``(H, W)`` non-negative integer labels (fewer than 65,536 regions).
        """
        saliency = np.asarray(saliency)
        if saliency.dtype != np.uint8:
            saliency = np.clip(np.rint(np.asarray(saliency, np.float64) * 255.0), 0, 255).astype(np.uint8)
        regions = np.asarray(regions)
        if regions.size and (regions.min() < 0 or regions.max() > np.iinfo(np.uint16).max):
            raise ValueError(f"region labels must lie in 0..65535, got {regions.min()}..{regions.max()}")
        return cls(np.ascontiguousarray(saliency), np.ascontiguousarray(np.asarray(mask) != 0),
                   np.ascontiguousarray(regions.astype(np.uint16)))

    @classmethod
    def empty(cls, height: int, width: int) -> "Target":
        """The target of an image with no salient object: zero map, empty mask, one region."""
        return cls(np.zeros((height, width), np.uint8), np.zeros((height, width), bool),
                   np.zeros((height, width), np.uint16))

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.saliency.shape  # type: ignore[return-value]

    @property
    def num_regions(self) -> int:
        """Number of region labels in use (max label + 1)."""
        return int(self.regions.max()) + 1 if self.regions.size else 0

    def saliency_float(self) -> np.ndarray:
        """The saliency map as float32 in [0, 1]."""
        return self.saliency.astype(np.float32) / 255.0

    def boundary(self) -> np.ndarray:
        """``(H, W)`` bool: pixels whose right or lower neighbour is in another region."""
        return region_boundary(self.regions)

    def channels(self) -> np.ndarray:
        """``(3, H, W)`` float32 dense channels in the order of :data:`TARGET_CHANNELS`, all in [0, 1]."""
        return np.stack([self.saliency_float(), self.mask.astype(np.float32),
                         self.boundary().astype(np.float32)])

    def equals(self, other: "Target") -> bool:
        """True when every part is identical."""
        return (self.shape == other.shape and np.array_equal(self.saliency, other.saliency)
                and np.array_equal(self.mask, other.mask) and np.array_equal(self.regions, other.regions))

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"Target({h}x{w}, regions={self.num_regions}, mask_pixels={int(self.mask.sum())}, "
                f"saliency_max={int(self.saliency.max()) if self.saliency.size else 0})")


def region_boundary(regions):
    """Bool boundary of label maps: the label differs from the right or lower neighbour.

    ``regions`` is a numpy array or a torch tensor of ``(..., H, W)`` labels (one map or a
    batch); the boundary has its type, shape and device. :meth:`Target.boundary`, the
    surrogate's boundary channel and the fidelity's boundary F all use this one rule.
    """
    if not hasattr(regions, "shape"):
        regions = np.asarray(regions)
    edge = regions != regions  # all False, of the input's kind
    edge[..., :, :-1] |= regions[..., :, :-1] != regions[..., :, 1:]
    edge[..., :-1, :] |= regions[..., :-1, :] != regions[..., 1:, :]
    return edge


def regions_from_boundary(boundary: np.ndarray) -> np.ndarray:
    """Split an image into segments along a boundary map (numpy, one image).

    Non-boundary pixels are grouped into 4-connected components; each boundary pixel then
    joins the segment of its left or upper neighbour (the side :func:`region_boundary` puts it
    on), falling back to any labelled neighbour.

    Args:
        boundary: ``(H, W)`` bool or float (> 0.5 = boundary).

    Returns:
        ``(H, W)`` uint16 labels numbered in raster order of first appearance.
    """
    import cv2

    inside = (np.asarray(boundary) <= 0.5 if np.asarray(boundary).dtype != bool else ~np.asarray(boundary))
    h, w = inside.shape
    if h == 0 or w == 0:
        return np.zeros((h, w), np.uint16)
    count, labels = cv2.connectedComponents(inside.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    labels = labels.astype(np.int64)
    labels[~inside] = -1
    # Boundary pixels take the label of a labelled neighbour; repeat for thick boundaries.
    for _ in range(h + w):
        todo = labels < 0
        if not todo.any():
            break
        for dy, dx in ((0, -1), (-1, 0), (0, 1), (1, 0)):
            shifted = np.full_like(labels, -1)
            ys = slice(max(dy, 0), h + min(dy, 0))
            xs = slice(max(dx, 0), w + min(dx, 0))
            yd = slice(max(-dy, 0), h + min(-dy, 0))
            xd = slice(max(-dx, 0), w + min(-dx, 0))
            shifted[yd, xd] = labels[ys, xs]
            take = (labels < 0) & (shifted >= 0)
            labels[take] = shifted[take]
    labels[labels < 0] = 0
    return relabel_raster(labels)


def relabel_raster(labels: np.ndarray) -> np.ndarray:
    """Renumber a label map 0..R-1 in raster order of first appearance, as uint16."""
    flat = np.asarray(labels).ravel()
    _, first = np.unique(flat, return_index=True)
    order = np.argsort(first, kind="stable")
    mapping = np.empty(order.size, np.int64)
    mapping[order] = np.arange(order.size)
    _, inverse = np.unique(flat, return_inverse=True)
    return mapping[inverse].reshape(labels.shape).astype(np.uint16)


@dataclass
class TargetBatch:
    """A batch of targets as tensors on one device, the layout the router hands to the renderer.

    Attributes:
        saliency: ``(B, 1, H, W)`` float32 in [0, 1].
        mask: ``(B, 1, H, W)`` bool.
        regions: ``(B, 1, H, W)`` int64 region labels, distinct within each image (not
            necessarily consecutive).
    """

    saliency: "torch.Tensor"  # noqa: F821
    mask: "torch.Tensor"  # noqa: F821
    regions: "torch.Tensor"  # noqa: F821

    def __post_init__(self) -> None:
        shapes = {tuple(self.saliency.shape), tuple(self.mask.shape), tuple(self.regions.shape)}
        if len(shapes) != 1 or self.saliency.ndim != 4 or self.saliency.shape[1] != 1:
            raise ValueError(f"TargetBatch parts must all be (B, 1, H, W), got saliency "
                             f"{tuple(self.saliency.shape)}, mask {tuple(self.mask.shape)}, "
                             f"regions {tuple(self.regions.shape)}")

    def __len__(self) -> int:
        return int(self.saliency.shape[0])

    @property
    def device(self):
        return self.saliency.device

    @classmethod
    def from_targets(cls, targets: "list[Target]", device=None) -> "TargetBatch":
        """Stack same-sized :class:`Target` objects into a batch."""
        import torch

        if not targets:
            raise ValueError("TargetBatch.from_targets needs at least one target")
        shapes = {t.shape for t in targets}
        if len(shapes) != 1:
            raise ValueError(f"targets differ in size {sorted(shapes)}; resize them to one size first "
                             f"(saliencyssl.augment resizes to --image-size)")
        sal = torch.from_numpy(np.stack([t.saliency for t in targets]))[:, None]
        mask = torch.from_numpy(np.stack([t.mask for t in targets]))[:, None]
        reg = torch.from_numpy(np.stack([t.regions.astype(np.int64) for t in targets]))[:, None]
        return cls(sal.to(device=device, dtype=torch.float32) / 255.0, mask.to(device), reg.to(device))

    def to(self, device) -> "TargetBatch":
        return TargetBatch(self.saliency.to(device), self.mask.to(device), self.regions.to(device))

    def index_select(self, index: "torch.Tensor") -> "TargetBatch":
        """The targets at ``index`` (a 1-D long tensor), in that order."""
        return TargetBatch(self.saliency[index], self.mask[index], self.regions[index])

    @classmethod
    def cat(cls, batches: "list[TargetBatch]") -> "TargetBatch":
        import torch

        return cls(torch.cat([b.saliency for b in batches]), torch.cat([b.mask for b in batches]),
                   torch.cat([b.regions for b in batches]))

    @classmethod
    def from_channels(cls, channels: "torch.Tensor", threshold: float = 0.5) -> "TargetBatch":
        """Targets from dense channels, e.g. a surrogate's prediction.

        Args:
            channels: ``(B, 3, H, W)`` float probabilities in [0, 1] in the order of
                :data:`TARGET_CHANNELS` (saliency, mask, boundary).
            threshold: mask and boundary cut-off.

        Returns:
            A batch on the same device; regions are the 4-connected components of the
            non-boundary pixels (:func:`label_components`), boundary pixels joining a neighbour,
            numbered 0..R-1 within each image like the cache's labels (:func:`compact_labels`).
        """
        if channels.ndim != 4 or channels.shape[1] != len(TARGET_CHANNELS):
            raise ValueError(f"expected (B, {len(TARGET_CHANNELS)}, H, W) channels {TARGET_CHANNELS}, "
                             f"got {tuple(channels.shape)}")
        saliency = channels[:, 0:1].float().clamp(0, 1)
        mask = channels[:, 1:2] > threshold
        regions = compact_labels(label_components(channels[:, 2:3] <= threshold))
        return cls(saliency, mask, regions)

    def channels(self) -> "torch.Tensor":
        """``(B, 3, H, W)`` float32 dense channels (:data:`TARGET_CHANNELS`)."""
        import torch

        reg = self.regions
        edge = torch.zeros_like(self.mask)
        edge[..., :, :-1] |= reg[..., :, :-1] != reg[..., :, 1:]
        edge[..., :-1, :] |= reg[..., :-1, :] != reg[..., 1:, :]
        return torch.cat([self.saliency, self.mask.float(), edge.float()], dim=1)


def label_components(inside: "torch.Tensor", max_iterations: int | None = None) -> "torch.Tensor":
    """Batched 4-connected component labelling on any device (torch, no Python loop over pixels).

    Every pixel of ``inside`` starts with its own index as label; labels spread to 4-neighbours
    inside by repeated maximum until nothing changes. Pixels outside (boundaries) then take the
    largest label among their 4-neighbours, repeatedly, so every pixel ends in some segment.

    On the CPU the same labels come from one OpenCV call (:func:`_label_components_opencv`);
    on other devices from the iterative torch version below.

    Args:
        inside: ``(B, 1, H, W)`` bool.
        max_iterations: cap on spreading steps (default ``H * W``, enough for any shape).

    Returns:
        ``(B, 1, H, W)`` int64 labels, equal within a component and distinct between
        components of one image (not consecutive).
    """
    import torch
    import torch.nn.functional as F

    if inside.device.type == "cpu" and max_iterations is None:
        return _label_components_opencv(inside)

    b, _, h, w = inside.shape
    index = torch.arange(1, h * w + 1, device=inside.device, dtype=torch.int64).view(1, 1, h, w)
    labels = torch.where(inside, index.expand(b, 1, h, w), torch.zeros((), dtype=torch.int64, device=inside.device))

    def neighbour_max(x: "torch.Tensor") -> "torch.Tensor":
        padded = F.pad(x, (1, 1, 1, 1))
        return torch.stack([padded[..., 1:-1, :-2], padded[..., 1:-1, 2:], padded[..., :-2, 1:-1],
                            padded[..., 2:, 1:-1], x]).amax(0)

    limit = max_iterations or h * w
    for step in range(limit):
        spread = torch.where(inside, neighbour_max(labels), labels)
        if step % 8 == 7 and torch.equal(spread, labels):
            break
        labels = spread
    for _ in range(h + w):
        todo = labels == 0
        if not bool(todo.any()):
            break
        labels = torch.where(todo, neighbour_max(labels), labels)
    return labels


def _label_components_opencv(inside: "torch.Tensor", compact: bool = False) -> "torch.Tensor":
    """:func:`label_components` for CPU tensors, with OpenCV: the same labels, about 100x faster.

    The batch is laid out as one tall image with a separating row of non-inside pixels after
    every image and labelled by one ``cv2.connectedComponents`` call (4-connectivity); each
    component is renamed to ``1 + the largest raster index of its pixels`` (the label the
    iterative torch version converges to); pixels outside then take the largest label among
    their 4-neighbours, repeatedly (visiting only the pixels still unfilled), exactly as there. The
    result equals ``label_components(inside)``, and with ``compact=True``
    ``compact_labels(label_components(inside))``.

    Args:
        inside: ``(B, 1, H, W)`` bool on the CPU.
        compact: renumber 0..R-1 within each image, in increasing label order.

    Returns:
        ``(B, 1, H, W)`` int64 labels.
    """
    import cv2
    import torch

    b, _, h, w = inside.shape
    if b == 0 or h == 0 or w == 0:
        return torch.zeros(inside.shape, dtype=torch.int64)
    canvas = np.zeros((b, h + 1, w), np.uint8)
    canvas[:, :h] = inside[:, 0].numpy()
    count, comp = cv2.connectedComponents(canvas.reshape(b * (h + 1), w), connectivity=4, ltype=cv2.CV_32S)
    comp = torch.from_numpy(comp.reshape(b, h + 1, w))
    index = torch.zeros((1, h + 1, w), dtype=torch.int32)
    index[0, :h] = torch.arange(1, h * w + 1, dtype=torch.int32).view(h, w)
    top = torch.zeros(count, dtype=torch.int32)
    top.scatter_reduce_(0, comp.reshape(-1).long(), index.expand(b, h + 1, w).reshape(-1), reduce="amax")
    top[0] = 0
    # Fill the pixels outside from their 4-neighbours, every pixel of a round reading the labels
    # of the previous round (as the torch version does), visiting only the pixels still unfilled.
    # Layout: a zero row on top, a zero column left and right, a zero row after every image.
    width = w + 2
    grid = np.zeros((b * (h + 1) + 1, width), np.int32)
    grid[1:, 1:-1] = top[comp.long()].numpy().reshape(b * (h + 1), w)
    flat = grid.reshape(-1)
    pixel = np.zeros((b, h + 1, w), bool)
    pixel[:, :h] = True
    todo = np.flatnonzero((grid[1:, 1:-1] == 0) & pixel.reshape(b * (h + 1), w))
    todo = (todo // w + 1) * width + todo % w + 1
    while todo.size:
        grown = np.maximum(np.maximum(flat[todo - 1], flat[todo + 1]),
                           np.maximum(flat[todo - width], flat[todo + width]))
        done = grown > 0
        if not done.any():
            break  # images without any inside pixel stay one segment (label 0)
        flat[todo[done]] = grown[done]
        todo = todo[~done]
    out = grid[1:, 1:-1].reshape(b, h + 1, w)[:, :h].reshape(b, h * w)
    if compact:
        # Rank of each label among the labels used in its image (labels are 0..H*W).
        used = np.zeros((b, h * w + 1), bool)
        used[np.arange(b)[:, None], out] = True
        rank = np.cumsum(used, axis=1, dtype=np.int32) - 1
        out = np.take_along_axis(rank, out, axis=1)
    return torch.from_numpy(out.astype(np.int64)).view(b, 1, h, w)


def compact_labels(labels: "torch.Tensor") -> "torch.Tensor":
    """Renumber ``(B, 1, H, W)`` labels to 0..R-1 within each image (in increasing label order)."""
    import torch

    b = labels.shape[0]
    flat = labels.reshape(b, -1).long()
    if flat.numel() == 0:
        return labels.long()
    flat = flat - flat.min()
    span = int(flat.max()) + 1
    keyed = flat + torch.arange(b, device=labels.device).view(b, 1) * span
    uniq, inverse = torch.unique(keyed, return_inverse=True)
    counts = torch.bincount(torch.div(uniq, span, rounding_mode="floor"), minlength=b)
    starts = torch.cumsum(counts, 0) - counts
    return (inverse - starts.view(b, 1)).view_as(labels)
