"""DetCon: a contrastive loss over mask-pooled features, with each view's masks warped by its geometry.

Contrastive detection (DetCon, Hénaff et al., "Efficient Visual Pretraining with Contrastive
Detection", ICCV 2021[0]; reference code github.com/google-deepmind/detcon[1], which releases
DetCon-B) replaces the one global feature per view of SimCLR / BYOL by one feature per *mask*:

1. Every image comes with an unsupervised segmentation (DetCon: Felzenszwalb segments; here the
   RC regions of the exact labeller, which are graph-based segments of the same family, or, with
   ``masks="foreground"``, the SaliencyCut mask and its complement). The segmentation goes
   through the same crop, flip and rotation as the image, so each view carries its own label map
   (``TargetBatch.regions`` after :class:`~saliencyssl.augment.SSLAugmentation` with
   ``return_targets=True``); a label is the same region in both views.
2. The label map is brought down to the backbone's feature grid: every grid cell takes the label
   that covers most of its pixels (the reference average-pools the one-hot masks to the grid and
   takes the arg-max per cell, so each cell belongs to exactly one mask; ties go to the lowest
   label, as ``argmax`` does there). A mask *exists* in a view when it owns at least one cell.
3. ``num_masks`` (16) mask ids are drawn per image and view, uniformly with replacement among
   the masks that exist in that view (the reference's ``sample_masks``); each drawn mask's feature
   is the average of the backbone's spatial features over its cells.
4. The pooled features go through the method's heads and the contrastive detection loss
   (:class:`DetConLoss`, Eq. 3 of [0], ``byol_nce_detcon`` in [1]) with temperature 0.1: the
   positive of a drawn mask is the same mask id drawn in the other view of the same image (if
   drawn several times there, the copies share the target mass equally); the negatives are every
   other drawn mask of the other view, of this image and of every other image, and every drawn
   mask of the same view except copies of itself. A mask drawn in one view but not in the other
   has no positive and contributes nothing (it still serves as a negative), as in [1]; copies of
   one mask in a view share one unit of weight, so every mask counts once.

With one whole-image mask per image, the pooled feature is the global average pool the backbone
ends with, the only positive is the other view of the same image and the negatives are the other
images of both views: DetCon-S's loss is then SimCLR's NT-Xent (plus the constant ``log
num_masks``, because the ``num_masks`` copies of that one mask each enter the softmax, as in
[1]), and DetCon-B's regression variant is BYOL's loss (tests check both against
:class:`~saliencyssl.ssl.simclr.SimCLR` and :class:`~saliencyssl.ssl.byol.BYOL` with the same
weights).

**Which features are pooled.** DetCon pools the encoder's last feature map (ResNet-50's 7x7 at
224 px, stride 32). Our CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool) gives layer3 at 8x8
and layer4 at 4x4 for 32 px images. Masks are pooled on **layer4, upsampled bilinearly by
``feature_upsample`` = 2** to an 8x8 grid (4x4-pixel cells), because:

- the backbone that is saved and evaluated is the whole ResNet-18, whose 512-d output is layer4
  average-pooled; pooling layer3 would leave layer4 untrained by the loss (no gradient reaches
  it) and the evaluated features random at their last stage;
- the pooled features are then those the evaluation reads, and with one whole-image mask they
  are exactly the backbone's output (bilinear upsampling by an integer factor keeps the mean),
  which is what makes the reduction to SimCLR / BYOL exact;
- the issue's 8x8 grid (4x4-pixel cells) follows the masks' outlines twice as finely as
  layer4's own 4x4 grid (8x8-pixel cells), and keeps more of them: on 256 CIFAR-10 training
  images with their cached RC regions (4.8 per image) and two ``default`` views each, 4.0
  regions own a cell of a view on the 8x8 grid (3.6 on 4x4), 3.5 own one in both views (2.9),
  and 85% of the 16 drawn masks find their positive (80%). The upsampled features vary smoothly
  between layer4's positions; they add no information, only a finer pooling of it.

At other sizes the grid is ``feature_upsample`` times layer4's (16x16 at 64 px with the CIFAR
stem, 6x6 at 96 px with the ImageNet stem). ``feature_upsample=1`` pools layer4's own grid, as
DetCon does at stride 32.

**Departures from DetCon** (each for the CIFAR scale this toolkit trains at):

- Heads, momentum schedule and optimizer are our SimCLR's / BYOL's (lightly's CIFAR-10 recipe:
  projection 512-512-128 for DetCon-S, 512-1024-256 with a 256-1024-256 predictor for DetCon-B,
  EMA 0.99 -> 1, SGD lr 0.06 x batch/128 with cosine decay), not DetCon's 4096-wide MLPs, EMA
  0.996 and LARS (lr 0.2 x batch/256, weight decay 1.5e-6, warm-up) at batch 4096; the comparison
  with SimCLR / BYOL is then between equal heads and recipes.
- Loss normalisation: [1] sums, over the masks with a positive, their weighted cross-entropies
  and divides by ``batch x num_masks``, then adds the two directions; here each direction's sum is
  divided by its own number of masks with a positive and the two directions are averaged, so the
  loss is a mean over masks as NT-Xent is a mean over images. Within a direction every term keeps
  [1]'s relative weight. Two things differ: the two directions weigh the same even when one has
  more masks with a positive (in [1] the one with more weighs more), and the overall scale follows
  the number of such masks in the batch instead of the fixed ``batch x num_masks``. The scale
  matters to SGD (it sets the step size), not to LARS, whose layer-wise normalised update ignores
  it: a mean keeps the learning rate tuned for SimCLR / BYOL appropriate.
- DetCon-B's loss is DetCon's contrastive loss between the online predictions and the target
  projections (``objective="contrastive"``, the default, as in [1]); ``objective="regression"``
  is BYOL's negative cosine between each drawn mask's prediction and the same mask's target
  projection in the other view (no negatives), which reduces to BYOL with one mask, for
  ablations.
- Label maps are any integer labels (RC regions or the 0/1 foreground), not DetCon's fixed 256
  ids; they are renumbered per image jointly over both views, so the number of masks is
  unbounded.

lightly provides the heads (:class:`~lightly.models.modules.SimCLRProjectionHead`,
:class:`~lightly.models.modules.BYOLProjectionHead`, :class:`~lightly.models.modules.BYOLPredictionHead`)
and BYOL's :class:`~lightly.loss.NegativeCosineSimilarity`. Its ``NTXentLoss`` cannot carry
the DetCon loss: it pairs row ``i`` of one view with row ``i`` of the other as the only
positive and treats every other row as a negative, whereas DetCon's masks are drawn
independently in each view (a mask may be drawn several times, or only in one view), so
positives are many-to-many, copies of the same mask in a view must be left out of the
negatives, and masks without a positive must carry no weight. :class:`DetConLoss` implements
Eq. 3 with those rules; with ``gather_distributed`` the other processes' masks join the
negatives, as the reference's cross-replica loss.

- [0] Hénaff et al., ICCV 2021, https://arxiv.org/abs/2103.10957
- [1] https://github.com/google-deepmind/detcon (``utils/losses.py``, ``detcon_b.py``)
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliencyssl.ssl.byol import BYOL
from saliencyssl.ssl.method import SGD_RECIPE, OptimizerRecipe, _check_float, _check_int
from saliencyssl.ssl.simclr import SimCLR
from saliencyssl.target import TargetBatch, compact_labels
from saliencyssl.text import short_repr

#: Where the masks come from: the RC regions, or the SaliencyCut foreground and its background.
MASK_SOURCES = ("regions", "foreground")
#: DetCon-B's objectives: DetCon's contrastive loss (the reference), or BYOL's regression.
OBJECTIVES = ("contrastive", "regression")
#: The most masks drawn per image and view (DetCon: 16); the loss compares ``batch x num_masks`` embeddings
#: with each other, so its matrix grows with the square.
MAX_NUM_MASKS = 256
#: The largest ``feature_upsample``: 32 takes layer4 of the ImageNet stem (1/32 of the view) to the view's own
#: pixels, beyond which the grid would be finer than the targets.
MAX_FEATURE_UPSAMPLE = 32


# ---------------------------------------------------------------------- features and masks
def backbone_feature_map(backbone: nn.Module, images: Tensor) -> Tensor:
    """The backbone's last spatial feature map, before its global average pool.

    Args:
        backbone: a torchvision ResNet (as :func:`~saliencyssl.ssl.backbone.resnet18_backbone`
            builds), or an ``nn.Sequential`` whose global pooling is an ``nn.AdaptiveAvgPool2d``
            (the layers before it are run).
        images: ``(B, 3, H, W)`` float, normalised.

    Returns:
        ``(B, C, h, w)``: layer4's output for a ResNet (``C`` = 512, ``h`` = ``H / 8`` with the
        CIFAR stem, ``H / 32`` with the ImageNet stem).

    Raises:
        TypeError: a backbone of neither kind.
    """
    if all(hasattr(backbone, name) for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer4")):
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images))))
        return backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(x))))
    if isinstance(backbone, nn.Sequential) and any(isinstance(m, nn.AdaptiveAvgPool2d) for m in backbone):
        x = images
        for module in backbone:
            if isinstance(module, nn.AdaptiveAvgPool2d):
                return x
            x = module(x)
    raise TypeError(f"mask pooling needs the backbone's spatial features: pass a torchvision ResNet (for example "
                    f"saliencyssl.ssl.backbone.resnet18_backbone) or an nn.Sequential with an "
                    f"nn.AdaptiveAvgPool2d, got {type(backbone).__name__}")


def joint_labels(labels_a: Tensor, labels_b: Tensor) -> tuple[Tensor, Tensor, int]:
    """Renumber the label maps of two views 0..L-1 per image, the same label getting the same id in both.

    Args:
        labels_a, labels_b: ``(B, 1, H, W)`` integer label maps of the two views.

    Returns:
        ``(ids_a, ids_b, L)``: int64 maps of the same shapes, and ``L``, one more than the largest id.
    """
    width = labels_a.shape[-1]
    both = compact_labels(torch.cat([labels_a, labels_b], dim=-1).long())
    return both[..., :width], both[..., width:], int(both.max()) + 1


def cell_labels(labels: Tensor, grid: tuple[int, int], num_labels: int) -> Tensor:
    """The label covering most pixels of each grid cell (the mask downsampled to the feature grid).

    Pixel ``(y, x)`` of an ``H x W`` map falls in cell ``(y * gh // H, x * gw // W)``; when ``gh``
    divides ``H`` and ``gw`` divides ``W`` this is exactly DetCon's average pool of the one-hot
    masks followed by an arg-max. Ties go to the lowest label.

    Args:
        labels: ``(B, 1, H, W)`` int64 ids in ``0..num_labels-1``.
        grid: ``(gh, gw)``, at most ``(H, W)``.
        num_labels: ``L``.

    Returns:
        ``(B, gh * gw)`` int64 ids, cells in raster order.
    """
    b, _, h, w = labels.shape
    gh, gw = grid
    if gh > h or gw > w:
        raise ValueError(f"the {gh}x{gw} feature grid is finer than the {h}x{w} label map: the targets must be "
                         f"at the view's size, and feature_upsample must not take the backbone's feature map "
                         f"beyond it (lower feature_upsample)")
    device = labels.device
    rows = torch.arange(h, device=device) * gh // h
    cols = torch.arange(w, device=device) * gw // w
    cell = (rows[:, None] * gw + cols[None, :]).reshape(1, h * w)
    index = cell * num_labels + labels.reshape(b, h * w)
    counts = torch.zeros(b, gh * gw * num_labels, device=device)
    counts.scatter_add_(1, index, torch.ones(b, h * w, device=device))
    return counts.view(b, gh * gw, num_labels).argmax(dim=-1)


def sample_masks(cells: Tensor, num_labels: int, num_masks: int) -> Tensor:
    """Draw ``num_masks`` mask ids per image, uniformly with replacement among those owning a cell.

    Args:
        cells: ``(B, G)`` int64 cell labels (:func:`cell_labels`).
        num_labels: ``L``.
        num_masks: ``N``.

    Returns:
        ``(B, N)`` int64 ids (from the default generator of ``cells``' device).
    """
    present = torch.zeros(cells.shape[0], num_labels, device=cells.device)
    present.scatter_(1, cells, 1.0)
    return torch.multinomial(present, num_masks, replacement=True)


def pool_masks(features: Tensor, cells: Tensor, ids: Tensor) -> Tensor:
    """Average the features over the cells of each drawn mask.

    Args:
        features: ``(B, C, gh, gw)`` float.
        cells: ``(B, gh * gw)`` int64 cell labels.
        ids: ``(B, N)`` int64 drawn mask ids, each owning at least one cell.

    Returns:
        ``(B, N, C)`` float, the mean feature of each drawn mask's cells.
    """
    weights = (cells[:, None, :] == ids[:, :, None]).to(features.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)
    return torch.bmm(weights, features.flatten(start_dim=2).transpose(1, 2))


# ---------------------------------------------------------------------- the loss
class DetConLoss(nn.Module):
    """DetCon's contrastive detection loss on mask embeddings (Eq. 3 of [0], ``byol_nce_detcon`` of [1]).

    For each drawn mask ``i`` of view a (query ``q_a[b, i]``) the logits are the cosine
    similarities divided by ``temperature`` to every key of view b (``k_b``) and to every key of
    view a (``k_a``) except the copies of the same mask of the same image; the target puts equal
    mass on the keys of view b with the same id in the same image. Masks without such a key have
    weight 0; ``c`` copies of a mask in a view have weight ``1/c`` each. The direction's loss is
    the weighted sum of cross-entropies over the number of masks with a positive; the two
    directions are averaged. See the module docstring for the departures from [1].

    Args:
        temperature: divides the cosine similarities (DetCon: 0.1).
        gather_distributed: add the keys of every process to the negatives (positives stay
            within each process's own images).

    Shapes: ``forward(q_a, q_b, k_a, k_b, ids_a, ids_b)`` with queries and keys ``(B, N, D)``
    float (for DetCon-S the projections are both queries and keys; for DetCon-B the queries are
    the online predictions and the keys the target projections) and ``ids`` ``(B, N)`` int64
    mask ids per image (equal ids = the same mask in both views); returns a 0-d tensor.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"DetConLoss: temperature must be > 0, got {temperature!r} (DetCon uses 0.1)")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, q_a: Tensor, q_b: Tensor, k_a: Tensor, k_b: Tensor, ids_a: Tensor, ids_b: Tensor) -> Tensor:
        b, n, _ = q_a.shape
        for label, t in (("q_b", q_b), ("k_a", k_a), ("k_b", k_b)):
            if t.shape != q_a.shape:
                raise ValueError(f"DetConLoss: {label} has shape {tuple(t.shape)}, q_a {tuple(q_a.shape)}")
        if ids_a.shape != (b, n) or ids_b.shape != (b, n):
            raise ValueError(f"DetConLoss: ids must be ({b}, {n}), got {tuple(ids_a.shape)} and {tuple(ids_b.shape)}")
        k_a, k_b = F.normalize(k_a, dim=-1), F.normalize(k_b, dim=-1)
        offset = 0
        keys_a, keys_b, all_ids_a, all_ids_b = k_a, k_b, ids_a, ids_b
        if self.gather_distributed and torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            from lightly.utils import dist as lightly_dist

            keys_a = torch.cat(lightly_dist.gather(k_a.contiguous()), 0)
            keys_b = torch.cat(lightly_dist.gather(k_b.contiguous()), 0)
            all_ids_a, all_ids_b = _all_gather(ids_a), _all_gather(ids_b)
            offset = torch.distributed.get_rank() * b
        loss_a = self._direction(q_a, keys_b, keys_a, ids_a, all_ids_b, all_ids_a, offset)
        loss_b = self._direction(q_b, keys_a, keys_b, ids_b, all_ids_a, all_ids_b, offset)
        return 0.5 * (loss_a + loss_b)

    def _direction(self, q: Tensor, k_other: Tensor, k_same: Tensor, ids: Tensor, ids_other: Tensor,
                   ids_same: Tensor, offset: int) -> Tensor:
        """Queries of one view against the keys of the other (positives) and of its own (negatives only)."""
        b, n, d = q.shape
        q = F.normalize(q, dim=-1).reshape(b * n, d)
        k_other, k_same = k_other.reshape(-1, d), k_same.reshape(-1, d)
        device = q.device
        image_q = (torch.arange(b, device=device) + offset).repeat_interleave(n)
        image_k = torch.arange(k_other.shape[0] // n, device=device).repeat_interleave(n)
        same_image = image_q[:, None] == image_k[None, :]
        flat = ids.reshape(-1)
        positive = same_image & (flat[:, None] == ids_other.reshape(-1)[None, :])
        itself = same_image & (flat[:, None] == ids_same.reshape(-1)[None, :])
        logits_other = q @ k_other.T / self.temperature
        logits_same = (q @ k_same.T / self.temperature).masked_fill(itself, float("-inf"))
        log_prob = torch.log_softmax(torch.cat([logits_other, logits_same], dim=1), dim=1)[:, :k_other.shape[0]]
        n_positive = positive.sum(dim=1)
        cross_entropy = -torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1) \
            / n_positive.clamp(min=1)
        copies = (ids[:, :, None] == ids[:, None, :]).sum(dim=-1).reshape(-1)
        weight = (n_positive > 0).to(q.dtype) / copies
        # weight sums to the number of masks with a positive (each mask's copies share one unit).
        return (weight * cross_entropy).sum() / weight.sum().clamp(min=1.0)


def _all_gather(t: Tensor) -> Tensor:
    parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


# ---------------------------------------------------------------------- shared machinery
class _MaskPooling:
    """What DetCon-S and DetCon-B share: targets to masks, masks to pooled features."""

    needs_targets: ClassVar[bool] = True
    name: ClassVar[str]
    hparams: dict[str, Any]

    @classmethod
    def _validate_mask_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "num_masks", minimum=1, maximum=MAX_NUM_MASKS)
        _check_int(cls, hparams, "feature_upsample", minimum=1, maximum=MAX_FEATURE_UPSAMPLE)
        _check_float(cls, hparams, "temperature", low=1e-3, high=10.0, hint="DetCon uses 0.1")
        if hparams["masks"] not in MASK_SOURCES:
            raise ValueError(f"{cls.name}: masks must be one of {list(MASK_SOURCES)} (the RC regions, or the "
                             f"SaliencyCut foreground and its background), got {short_repr(hparams['masks'])} (default "
                             f"{cls.default_hparams()['masks']!r})")

    def _labels(self, targets: TargetBatch | None, view: Tensor, which: str) -> Tensor:
        """The ``(B, 1, H, W)`` int64 label map of one view's warped targets."""
        masks = self.hparams["masks"]
        if targets is None:
            raise ValueError(f"{self.name} pools its loss over each view's masks ({masks}) and needs targets_{which}: "
                             f"the TargetBatch warped with that view's crop/flip/rotation, as "
                             f"SSLAugmentation(policy, size)(images, targets, return_targets=True) returns it "
                             f"(pretraining passes them when the method needs targets, from a cache, surrogate or "
                             f"cache,surrogate)")
        if not isinstance(targets, TargetBatch):
            raise ValueError(f"{self.name}: targets_{which} must be a saliencyssl.target.TargetBatch, got "
                             f"{type(targets).__name__}")
        labels = targets.regions if masks == "regions" else targets.mask
        b, _, h, w = view.shape
        if tuple(labels.shape) != (b, 1, h, w):
            raise ValueError(f"{self.name}: targets_{which}.{'regions' if masks == 'regions' else 'mask'} has shape "
                             f"{tuple(labels.shape)} but the view is {tuple(view.shape)}; the targets must be "
                             f"warped to the view, (B, 1, H, W) = ({b}, 1, {h}, {w})")
        return labels.to(device=view.device, dtype=torch.long)

    def _grid_features(self, backbone: nn.Module, view: Tensor) -> Tensor:
        """``(B, C, gh, gw)`` float32: layer4, bilinearly upsampled by ``feature_upsample``."""
        features = backbone_feature_map(backbone, view)
        if features.shape[1] != self.hparams["feature_dim"]:
            raise ValueError(f"{self.name}: the backbone's feature map has {features.shape[1]} channels but "
                             f"feature_dim={self.hparams['feature_dim']}; pass feature_dim={features.shape[1]} "
                             f"to build_method")
        with torch.autocast(device_type=view.device.type, enabled=False):
            features = features.float()
            factor = self.hparams["feature_upsample"]
            if factor > 1:
                h, w = features.shape[-2:]
                features = F.interpolate(features, size=(h * factor, w * factor), mode="bilinear",
                                         align_corners=False)
        return features

    def _draw(self, features_a: Tensor, features_b: Tensor, labels_a: Tensor, labels_b: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Cell labels and drawn ids of both views: ``(cells_a, cells_b, ids_a, ids_b)``."""
        labels_a, labels_b, num_labels = joint_labels(labels_a, labels_b)
        grid = tuple(features_a.shape[-2:])
        cells_a = cell_labels(labels_a, grid, num_labels)
        cells_b = cell_labels(labels_b, grid, num_labels)
        n = self.hparams["num_masks"]
        return cells_a, cells_b, sample_masks(cells_a, num_labels, n), sample_masks(cells_b, num_labels, n)

    def _checked_labels(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None,
                        targets_b: TargetBatch | None) -> tuple[Tensor, Tensor]:
        """Both views checked, and their label maps."""
        self._check_views(view_a, view_b)  # type: ignore[attr-defined]
        return self._labels(targets_a, view_a, "a"), self._labels(targets_b, view_b, "b")

    @staticmethod
    def _mask_loss(criterion: Any, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor, ids_a: Tensor,
                   ids_b: Tensor) -> Tensor:
        """``criterion`` on float32 embeddings with autocast off (the ids stay int64); a 0-d tensor."""
        with torch.autocast(device_type=p_a.device.type, enabled=False):
            loss = criterion(p_a.float(), p_b.float(), z_a.float(), z_b.float(), ids_a, ids_b)
        return loss.reshape(())


def _pooled(features: Tensor, cells: Tensor, ids: Tensor) -> Tensor:
    """``(B * N, C)`` pooled features, float32 with autocast off."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        pooled = pool_masks(features.float(), cells, ids)
    return pooled.reshape(-1, pooled.shape[-1])


# ---------------------------------------------------------------------- DetCon-S
class DetConSimCLR(_MaskPooling, SimCLR):
    """DetCon-S[0]: SimCLR's projection head and the contrastive detection loss on mask embeddings.

    Both views go through the backbone; each view's drawn masks (``num_masks`` per image, from
    its warped RC regions, or the foreground and background with ``masks="foreground"``) are
    average-pooled on layer4 upsampled to the 8x8 grid at 32 px, projected by SimCLR's head
    (lightly's :class:`~lightly.models.modules.SimCLRProjectionHead`, the same sizes as
    :class:`~saliencyssl.ssl.simclr.SimCLR`) and scored by :class:`DetConLoss` at temperature 0.1.
    See the module docstring for the masks, the pooled layer and the departures from DetCon.

    With one whole-image mask per image (all region labels equal) the loss equals SimCLR's
    NT-Xent at the same temperature plus ``log(num_masks)``.

    - [0] Hénaff et al., ICCV 2021, https://arxiv.org/abs/2103.10957; code https://github.com/google-deepmind/detcon

    Examples:
        >>> method = DetConSimCLR(resnet18_backbone(cifar_stem=True))
        >>> view_a, warped_a = augment(images, targets, return_targets=True)
        >>> view_b, warped_b = augment(images, targets, return_targets=True)
        >>> loss = method.training_loss(view_a, view_b, warped_a, warped_b)
    """

    name: ClassVar[str] = "detcon-simclr"
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        **SimCLR._DEFAULTS,
        "temperature": 0.1,
        "num_masks": 16,
        "masks": "regions",
        "feature_upsample": 2,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        self.criterion = DetConLoss(self.hparams["temperature"], gather_distributed=self.distributed)

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        super()._validate_hparams(hparams)
        cls._validate_mask_hparams(hparams)

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        labels_a, labels_b = self._checked_labels(view_a, view_b, targets_a, targets_b)
        features_a = self._grid_features(self.backbone, view_a)
        features_b = self._grid_features(self.backbone, view_b)
        cells_a, cells_b, ids_a, ids_b = self._draw(features_a, features_b, labels_a, labels_b)
        b, n = ids_a.shape
        z_a = self._fp32(self.projection_head, _pooled(features_a, cells_a, ids_a)).view(b, n, -1)
        z_b = self._fp32(self.projection_head, _pooled(features_b, cells_b, ids_b)).view(b, n, -1)
        return self._mask_loss(self.criterion, z_a, z_b, z_a, z_b, ids_a, ids_b)


# ---------------------------------------------------------------------- DetCon-B
class DetConBYOL(_MaskPooling, BYOL):
    """DetCon-B[0]: BYOL's online predictor and momentum target on mask embeddings.

    The online network (backbone, projection, prediction) and the target network (momentum
    copies of backbone and projection, updated in :meth:`before_step` as in
    :class:`~saliencyssl.ssl.byol.BYOL`) pool the same drawn masks of each view (``num_masks`` per
    image, as DetCon-S). With ``objective="contrastive"`` (default, DetCon's reference code) the
    loss is :class:`DetConLoss` at temperature 0.1 with the online predictions as queries and the
    target projections as keys: the positive of a mask is the target of the same mask in the
    other view, the negatives the targets of other masks and images. With
    ``objective="regression"`` it is BYOL's symmetrised negative cosine between each drawn mask's
    prediction and the target of the same mask in the other view (masks without one are left
    out), which equals :class:`~saliencyssl.ssl.byol.BYOL`'s loss with one whole-image mask.

    Heads and momentum follow our BYOL (lightly's CIFAR-10 recipe); see the module docstring
    for the departures from DetCon.

    - [0] Hénaff et al., ICCV 2021, https://arxiv.org/abs/2103.10957; code https://github.com/google-deepmind/detcon

    Examples:
        >>> method = DetConBYOL(resnet18_backbone(cifar_stem=True))
        >>> method.before_step(progress=step / (total_steps - 1), epoch=epoch)  # target update
        >>> loss = method.training_loss(view_a, view_b, warped_a, warped_b)
    """

    name: ClassVar[str] = "detcon-byol"
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        **BYOL._DEFAULTS,
        "temperature": 0.1,
        "num_masks": 16,
        "masks": "regions",
        "feature_upsample": 2,
        "objective": "contrastive",
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        self.detcon_criterion = DetConLoss(self.hparams["temperature"], gather_distributed=self.distributed)

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        super()._validate_hparams(hparams)
        cls._validate_mask_hparams(hparams)
        if hparams["objective"] not in OBJECTIVES:
            raise ValueError(f"{cls.name}: objective must be one of {list(OBJECTIVES)} (contrastive: DetCon-B's "
                             f"loss with negatives; regression: BYOL's), got {short_repr(hparams['objective'])}")

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        labels_a, labels_b = self._checked_labels(view_a, view_b, targets_a, targets_b)
        features_a = self._grid_features(self.backbone, view_a)
        features_b = self._grid_features(self.backbone, view_b)
        cells_a, cells_b, ids_a, ids_b = self._draw(features_a, features_b, labels_a, labels_b)
        b, n = ids_a.shape

        def online(features: Tensor, cells: Tensor, ids: Tensor) -> Tensor:
            head = lambda f: self.prediction_head(self.projection_head(f))  # noqa: E731
            return self._fp32(head, _pooled(features, cells, ids)).view(b, n, -1)

        @torch.no_grad()
        def target(view: Tensor, cells: Tensor, ids: Tensor) -> Tensor:
            features = self._grid_features(self.backbone_momentum, view)
            return self._fp32(self.projection_head_momentum, _pooled(features, cells, ids)).view(b, n, -1)

        p_a, p_b = online(features_a, cells_a, ids_a), online(features_b, cells_b, ids_b)
        z_a, z_b = target(view_a, cells_a, ids_a), target(view_b, cells_b, ids_b)
        if self.hparams["objective"] == "contrastive":
            return self._mask_loss(self.detcon_criterion, p_a, p_b, z_a, z_b, ids_a, ids_b)
        return self._mask_loss(self._regression, p_a, p_b, z_a, z_b, ids_a, ids_b)

    def _regression(self, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor, ids_a: Tensor, ids_b: Tensor) -> Tensor:
        eps = self.criterion.eps  # lightly's NegativeCosineSimilarity, which BYOL uses
        return 0.5 * (_matched_cosine(p_a, z_b, ids_a, ids_b, eps) + _matched_cosine(p_b, z_a, ids_b, ids_a, eps))


def _matched_cosine(p: Tensor, z_other: Tensor, ids: Tensor, ids_other: Tensor, eps: float) -> Tensor:
    """BYOL's negative cosine between each drawn mask's prediction and the other view's target of the same mask.

    The per-mask form of lightly's :class:`~lightly.loss.NegativeCosineSimilarity` (which returns
    only the mean, and masks need weights). The target of a mask drawn several times in the other
    view is the mean of its (identical) normalised copies; masks without a copy there are left
    out, and copies in this view share one unit of weight, as in :class:`DetConLoss`.

    Args:
        p: ``(B, N, D)`` online predictions of one view.
        z_other: ``(B, N, D)`` target projections of the other view.
        ids, ids_other: ``(B, N)`` int64 drawn mask ids of the two views.
    """
    b, n, d = p.shape
    match = (ids[:, :, None] == ids_other[:, None, :]).to(p.dtype)  # (B, N, N), within each image
    found = match.sum(dim=-1)
    target = torch.bmm(match, F.normalize(z_other, dim=-1)) / found.clamp(min=1.0)[..., None]
    copies = (ids[:, :, None] == ids[:, None, :]).sum(dim=-1)
    weight = ((found > 0).to(p.dtype) / copies).reshape(-1)
    per_mask = -F.cosine_similarity(p.reshape(-1, d), target.reshape(-1, d), dim=1, eps=eps)
    return (weight * per_mask).sum() / weight.sum().clamp(min=1.0)
