"""Fidelity of surrogate targets: how close predicted targets come to the exact ones, image by image.

Both sides are :class:`~saliencyssl.target.TargetBatch` objects at the same size. Per image:

- **mask** (the SaliencyCut mask): IoU, Dice, precision, recall and the F-measure with
  ``beta^2 = 0.3`` (:data:`F_BETA2`, the salient-object convention). A prediction that agrees
  that there is nothing (both masks empty) scores 1 on everything; the other empty cases are
  spelled out in :func:`mask_scores`;
- **presence**: whether the mask is empty or not (the cut finding an object or not);
- **saliency**: mean absolute error of the RC map in [0, 1];
- **regions**: the F-score (beta = 1) of the region *boundaries* (a pixel whose right or lower
  neighbour lies in another region) with a tolerance of 1 pixel (:func:`boundary_scores`).

Exact masks are often empty (the cut finds no object), which flattens plain averages: on
CIFAR-10 at 32 px, predicting nothing scores mean IoU 0.94. So :func:`fidelity_report` always
reports, beside each figure, the same figure for the *predict-nothing baseline* (zero map,
empty mask, one region), and adds figures that the baseline cannot win by saying nothing:
the presence accuracy, the IoU over images whose exact mask is not empty
(``mask_iou_present``) and the MAE over images whose exact map is not all zero
(``saliency_mae_present``). Aggregates are the mean and the mean of the worst decile.

**Against human masks** (:func:`vs_masks_report`): agreement with the exact labeller says how well
the surrogate imitates it, not how good a salient-object segmenter either is. Given human
ground-truth masks (paired by file stem, :func:`match_masks`), the surrogate's mask and map *and
the exact labeller's* are scored against them side by side with Cheng et al.'s conventions
(:mod:`saliencyssl.metrics`): mask F-measure with ``beta^2 = 0.3``, mask IoU, and the MAE of the
map, min-max normalised to [0, 1] as Cheng's evaluation does, against the mask as 0/1 (and of the
map as predicted); beside them, predicting nothing and a centred box of half the side.

*Resolution.* Everything is scored at the surrogate's image size ``S`` on the centre crop that
:func:`~saliencyssl.datasets.fit_square` keeps (shorter side resized to ``S``, centred ``S x S``):
the surrogate's prediction as it comes, the exact target brought there by
:func:`~saliencyssl.datasets.target_at_size` (the very targets the surrogate is trained on and
compared with above), and the human mask resized nearest-neighbour with the image's geometry.
Both predictors are judged on the same pixels at the same resolution. The alternative, scoring at
the image's own resolution with the surrogate's output upsampled into the crop, would still
cover only the crop (the surrogate sees nothing outside it) and would hand the exact labeller
its full-resolution edges against the surrogate's upsampled ones, measuring the upsampling as
much as the segmentation; the targets are used at ``S`` anyway. What this leaves out: the strips
outside the crop (a quarter of a 4:3 photo) and detail finer than a pixel at ``S``, so the figures
are not those of full-image benchmarks (Cheng et al. score the whole image at its own
resolution); the exact labeller's row is the reference to read the surrogate's against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from saliencyssl.datasets import ImageSet, fit_square
from saliencyssl.metrics import F_BETA2, as_masks, f_measure, map_mae, mask_scores
from saliencyssl.target import TargetBatch, region_boundary

#: Pixels of tolerance when matching region boundaries.
BOUNDARY_TOLERANCE = 1
#: Keys of a summary, in the order they are printed; the direction says which way is better.
SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("presence_accuracy", "higher"), ("mask_iou", "higher"), ("mask_iou_present", "higher"),
    ("mask_dice", "higher"), ("mask_f", "higher"), ("mask_precision", "higher"), ("mask_recall", "higher"),
    ("saliency_mae", "lower"), ("saliency_mae_present", "lower"), ("boundary_f", "higher"),
    ("boundary_precision", "higher"), ("boundary_recall", "higher"))
#: Per-image scores aggregated by their worst decile, and the subset each is taken over.
WORST_DECILE_KEYS: tuple[tuple[str, str, str], ...] = (
    ("mask_iou", "iou", "all"), ("mask_iou_present", "iou", "present"), ("mask_f", "f", "all"),
    ("saliency_mae", "mae", "all"), ("saliency_mae_present", "mae", "saliency_present"),
    ("boundary_f", "boundary_f", "all"))


# ------------------------------------------------------------------------------ per image
def region_edges(regions: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool boundary of ``(N, H, W)`` or ``(N, 1, H, W)`` labels (right or lower neighbour differs)."""
    reg = torch.as_tensor(regions)
    return region_boundary(reg[:, 0] if reg.ndim == 4 else reg)


def _dilate(edge: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return edge
    k = 2 * radius + 1
    return F.max_pool2d(edge[:, None].float(), k, stride=1, padding=radius)[:, 0] > 0


def boundary_scores(pred_edges: torch.Tensor, exact_edges: torch.Tensor,
                    tolerance: int = BOUNDARY_TOLERANCE) -> dict[str, np.ndarray]:
    """Per-image boundary precision, recall and F (beta = 1) with a pixel tolerance.

    A predicted boundary pixel is correct when an exact boundary pixel lies within
    ``tolerance`` pixels (Chebyshev distance), and vice versa for recall.

    Args:
        pred_edges, exact_edges: ``(N, H, W)`` bool boundary maps (:func:`region_edges`).
        tolerance: pixels.

    Returns:
        ``(N,)`` float64 arrays ``boundary_precision``, ``boundary_recall``, ``boundary_f``.
        Both without boundary (one region each) -> 1; only one without -> 0.
    """
    p, e = as_masks(pred_edges), as_masks(exact_edges)
    n_p = p.flatten(1).sum(1).double()
    n_e = e.flatten(1).sum(1).double()
    hit_p = (p & _dilate(e, tolerance)).flatten(1).sum(1).double()
    hit_e = (e & _dilate(p, tolerance)).flatten(1).sum(1).double()
    both_empty = (n_p == 0) & (n_e == 0)
    precision = torch.where(n_p > 0, hit_p / n_p.clamp(min=1), both_empty.double())
    recall = torch.where(n_e > 0, hit_e / n_e.clamp(min=1), both_empty.double())
    denom = precision + recall
    f = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
    return {"boundary_precision": precision.cpu().numpy(), "boundary_recall": recall.cpu().numpy(),
            "boundary_f": f.cpu().numpy()}


def per_image_scores(pred: TargetBatch, exact: TargetBatch) -> dict[str, np.ndarray]:
    """Every per-image score of ``pred`` against ``exact`` (same length and size).

    Returns:
        ``(N,)`` arrays: the :func:`mask_scores` and :func:`boundary_scores` keys, plus ``mae``
        (saliency mean absolute error in [0, 1]) and ``saliency_present`` (exact map not all zero).
    """
    if len(pred) != len(exact) or pred.saliency.shape[-2:] != exact.saliency.shape[-2:]:
        raise ValueError(f"prediction ({len(pred)} x {tuple(pred.saliency.shape[-2:])}) and exact targets "
                         f"({len(exact)} x {tuple(exact.saliency.shape[-2:])}) differ in number or size")
    device = exact.device
    pred = pred.to(device)
    scores = mask_scores(pred.mask, exact.mask)
    scores.update(boundary_scores(region_edges(pred.regions), region_edges(exact.regions)))
    scores["mae"] = map_mae(pred.saliency, exact.saliency)
    scores["saliency_present"] = (exact.saliency.flatten(1).amax(1) > 0).cpu().numpy()
    return scores


def nothing_like(exact: TargetBatch) -> TargetBatch:
    """The predict-nothing baseline for ``exact``: zero saliency, empty masks, one region per image."""
    return TargetBatch(torch.zeros_like(exact.saliency, dtype=torch.float32), torch.zeros_like(exact.mask),
                       torch.zeros_like(exact.regions))


# ------------------------------------------------------------------------------ aggregates
def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def worst_decile(values: np.ndarray, higher_is_better: bool = True) -> float | None:
    """Mean of the worst ``ceil(10%)`` of the values (lowest when higher is better)."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return None
    k = max(1, math.ceil(0.1 * len(values)))
    ordered = np.sort(values)
    return float(ordered[:k].mean() if higher_is_better else ordered[-k:].mean())


def summarize(scores: dict[str, np.ndarray]) -> dict:
    """Aggregate :func:`per_image_scores` into the summary keys (means) and ``worst_decile``.

    Returns:
        ``n``, ``n_present``, ``n_saliency_present``, every key of :data:`SUMMARY_KEYS`
        (``None`` where its subset is empty) and ``worst_decile`` (a dict over
        :data:`WORST_DECILE_KEYS`).
    """
    present = scores["present"].astype(bool)
    sal_present = scores["saliency_present"].astype(bool)
    subsets = {"all": np.ones_like(present), "present": present, "saliency_present": sal_present}
    out: dict = {
        "n": int(len(present)),
        "n_present": int(present.sum()),
        "n_saliency_present": int(sal_present.sum()),
        "presence_accuracy": _mean((scores["pred_present"] == present).astype(np.float64)),
        "mask_iou": _mean(scores["iou"]),
        "mask_iou_present": _mean(scores["iou"][present]),
        "mask_dice": _mean(scores["dice"]),
        "mask_f": _mean(scores["f"]),
        "mask_precision": _mean(scores["precision"]),
        "mask_recall": _mean(scores["recall"]),
        "saliency_mae": _mean(scores["mae"]),
        "saliency_mae_present": _mean(scores["mae"][sal_present]),
        "boundary_f": _mean(scores["boundary_f"]),
        "boundary_precision": _mean(scores["boundary_precision"]),
        "boundary_recall": _mean(scores["boundary_recall"]),
    }
    out["worst_decile"] = {key: worst_decile(scores[score][subsets[subset]], higher_is_better=score != "mae")
                           for key, score, subset in WORST_DECILE_KEYS}
    return out


def better_than(summary: dict, baseline: dict) -> dict[str, bool | None]:
    """For each summary key, whether ``summary`` beats ``baseline`` (strictly; ``None`` when undefined)."""
    out: dict[str, bool | None] = {}
    for key, direction in SUMMARY_KEYS:
        a, b = summary.get(key), baseline.get(key)
        out[key] = None if a is None or b is None else (a > b if direction == "higher" else a < b)
    return out


def fidelity_report(pred: TargetBatch, exact: TargetBatch, scores: dict | None = None) -> dict:
    """The summary of ``pred`` against ``exact``, with the predict-nothing baseline beside it.

    Args:
        scores: :func:`per_image_scores` of ``pred`` against ``exact`` when already computed.

    Returns:
        :func:`summarize`'s dict plus ``baseline`` (the same keys for :func:`nothing_like`)
        and ``better_than_baseline`` (:func:`better_than`).
    """
    summary = summarize(scores if scores is not None else per_image_scores(pred, exact))
    baseline = summarize(per_image_scores(nothing_like(exact), exact))
    summary["baseline"] = baseline
    summary["better_than_baseline"] = better_than(summary, baseline)
    return summary


def format_report(report: dict) -> list[str]:
    """Human-readable table: each figure, the baseline's, and whether it is better."""
    def fmt(v):
        return "   n/a" if v is None else f"{v:6.3f}"

    base = report["baseline"]
    lines = [f"images {report['n']}, with an exact mask {report['n_present']}, "
             f"with a non-zero exact map {report['n_saliency_present']}",
             f"{'figure':24s} {'mean':>6s} {'worst10%':>8s} {'baseline':>8s} {'b.worst':>8s}  better"]
    worst = report.get("worst_decile", {})
    for key, _ in SUMMARY_KEYS:
        better = report.get("better_than_baseline", {}).get(key)
        mark = "" if better is None else ("yes" if better else "NO")
        lines.append(f"{key:24s} {fmt(report.get(key))} {fmt(worst.get(key)) if key in worst else '     ':>8s} "
                     f"{fmt(base.get(key)):>8s} "
                     f"{fmt(base.get('worst_decile', {}).get(key)) if key in worst else '     ':>8s}  {mark}")
    return lines


# ------------------------------------------------------------------------------ pictures
def rank_images(scores: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(best, worst)`` image indices, ``k`` each.

    Worst: lowest mask IoU, then highest saliency MAE. Best: highest IoU among images whose
    exact mask is not empty (an agreed empty mask is not much to look at), then lowest MAE;
    filled up with other images when fewer are present.
    """
    n = len(scores["iou"])
    k = min(k, n)
    order = np.lexsort((-scores["mae"], scores["iou"]))  # ascending IoU, then descending MAE
    worst = order[:k]
    present = scores["present"].astype(bool)
    best_order = np.lexsort((scores["mae"], -scores["iou"], ~present))
    best = np.array([i for i in best_order if i not in set(worst.tolist())][:k] or best_order[:k], np.int64)
    return best, worst


GRID_HEADER = ("image", "exact RC", "exact cut", "exact regions", "surrogate RC", "surrogate cut",
               "surrogate regions")


def comparison_rows(images: torch.Tensor, exact: TargetBatch, pred: TargetBatch, indices: Sequence[int],
                    scores: dict[str, np.ndarray] | None = None, tile: int = 96) -> list[list[np.ndarray]]:
    """Grid rows (image | exact RC, cut, regions | surrogate RC, cut, regions) for ``indices``.

    Args:
        images: ``(N, 3, S, S)`` uint8.
        exact, pred: targets of the same images.
        indices: which images, in order.
        scores: when given, each row's IoU and MAE are written on its surrogate cut tile.
        tile: tile height in pixels.
    """
    import cv2

    from saliencyssl.visualize import fit_tile, gray, paint_regions

    rows = []
    for i in indices:
        i = int(i)
        image = images[i].permute(1, 2, 0).cpu().numpy()
        tiles = [image]
        for t in (exact, pred):
            tiles += [gray(t.saliency[i, 0].float().cpu().numpy()), gray(t.mask[i, 0].cpu().numpy()),
                      paint_regions(_consecutive(t.regions[i, 0].cpu().numpy()))]
        tiles = [fit_tile(np.ascontiguousarray(x), tile) for x in tiles]
        if scores is not None:
            cut = tiles[5].copy()
            text = f"IoU {scores['iou'][i]:.2f}"
            cv2.putText(cut, text, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 60, 60), 1, cv2.LINE_AA)
            cv2.putText(cut, f"MAE {scores['mae'][i]:.3f}", (3, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 60, 60), 1, cv2.LINE_AA)
            tiles[5] = cut
        rows.append(tiles)
    return rows


def _consecutive(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def fidelity_grid(images: torch.Tensor, exact: TargetBatch, pred: TargetBatch, scores: dict[str, np.ndarray],
                  k: int = 8, tile: int = 96) -> np.ndarray:
    """An RGB uint8 picture: the ``k`` best rows, a gap, then the ``k`` worst rows (:func:`rank_images`)."""
    from saliencyssl.visualize import image_grid

    best, worst = rank_images(scores, k)
    rows = comparison_rows(images, exact, pred, best, scores, tile)
    rows += comparison_rows(images, exact, pred, worst, scores, tile)
    grid = image_grid(rows, tile_height=tile, header=GRID_HEADER)
    return grid


# ------------------------------------------------------------------------------ surrogate against a pair set
@dataclass
class FidelityResult:
    """What :func:`evaluate_surrogate` measured.

    Attributes:
        report: :func:`fidelity_report`'s dict.
        scores: :func:`per_image_scores` arrays.
        prediction: the surrogate's targets, on the CPU.
    """

    report: dict
    scores: dict[str, np.ndarray]
    prediction: TargetBatch


def predict_all(predictor, images: torch.Tensor, batch_size: int = 256, progress: bool = False) -> TargetBatch:
    """Targets of ``(N, 3, S, S)`` uint8 images from any :class:`TargetPredictor`, batch by batch, on the CPU."""
    from tqdm import tqdm

    out = []
    starts = range(0, int(images.shape[0]), batch_size)
    for start in tqdm(starts, desc="surrogate", unit="batch", disable=not progress, leave=False):
        out.append(predictor.predict(images[start:start + batch_size]).to("cpu"))
    return TargetBatch.cat(out)


def evaluate_surrogate(predictor, images: torch.Tensor, exact: TargetBatch, batch_size: int = 256,
                       progress: bool = False) -> FidelityResult:
    """Predict the targets of ``images`` and compare them with ``exact``.

    Args:
        predictor: a :class:`~saliencyssl.augment.predictor.TargetPredictor` (the surrogate).
        images: ``(N, 3, S, S)`` uint8 with ``S == predictor.image_size``.
        exact: their exact targets (``TargetBatch`` of ``(N, 1, S, S)``).
    """
    prediction = predict_all(predictor, images, batch_size, progress)
    exact = exact.to("cpu")
    scores = per_image_scores(prediction, exact)
    report = fidelity_report(prediction, exact, scores)
    return FidelityResult(report=report, scores=scores, prediction=prediction)


# ------------------------------------------------------------------------------ against human masks
#: File endings a human mask may have (read by :func:`saliencyssl.eval.masks.read_mask`).
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

#: How :func:`vs_masks_report` brings everything to one geometry; written into its report.
VS_MASKS_GEOMETRY = ("fit_square centre crop at the surrogate's image size: surrogate as predicted, exact target "
                     "by target_at_size (map area/bicubic, mask nearest), human mask nearest")


def _shown(items: Sequence[str], k: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def match_masks(images_dir: str | Path, names: Sequence[str], masks_dir: str | Path) -> list[Path | None]:
    """Each image's human mask below ``masks_dir``, paired by file stem.

    For an image ``sub/0001.jpg`` (a name relative to ``images_dir``) the mask is
    ``masks_dir/sub/0001.<suffix>`` with a suffix of :data:`MASK_SUFFIXES` (any case); failing
    that, the one file named ``0001.<suffix>`` anywhere below ``masks_dir``. Masks that match no
    image are ignored; the image file itself never counts as its own mask (``masks_dir`` may be
    the image folder).

    Args:
        images_dir: the image folder the names are relative to (for messages and the self-check).
        names: image names, e.g. :attr:`~saliencyssl.datasets.ImageSet.names`.
        masks_dir: the folder of the masks (0/255 or 0/1, see ``read_mask``).

    Returns:
        One entry per name: the mask's path, or ``None`` when the image has none.

    Raises:
        FileNotFoundError: ``masks_dir`` is not a folder, or no image has a mask there (naming
            both folders).
        ValueError: a pairing is ambiguous (two masks of one stem, or two images of one stem
            both falling back to the same flat mask); the message names the files.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"the mask folder {masks_dir} does not exist or is not a folder; it must hold the "
                                f"human masks of the images in {images_dir}, named like them (<stem>.png)")
    root, masks_root = images_dir.resolve(), masks_dir.resolve()
    overlap = root == masks_root or root in masks_root.parents or masks_root in root.parents
    image_files = {(images_dir / name).resolve() for name in names} if overlap else set()
    by_relative: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(masks_dir.rglob("*")):
        if path.suffix.lower() not in MASK_SUFFIXES or not path.is_file() or path.resolve() in image_files:
            continue
        by_relative.setdefault(path.relative_to(masks_dir).with_suffix("").as_posix(), []).append(path)
        by_stem.setdefault(path.stem, []).append(path)
    stems: dict[str, list[str]] = {}
    for name in names:
        stems.setdefault(Path(name).stem, []).append(name)
    out: list[Path | None] = []
    for name in names:
        candidates = by_relative.get(Path(name).with_suffix("").as_posix())
        if candidates is None:
            candidates = by_stem.get(Path(name).stem)
            if candidates and len(stems[Path(name).stem]) > 1:
                raise ValueError(f"images {_shown(stems[Path(name).stem])} of {images_dir} share the stem of mask "
                                 f"{candidates[0]}; put each image's mask at its relative path below {masks_dir}")
        if candidates and len(candidates) > 1:
            raise ValueError(f"image {images_dir / name} matches {len(candidates)} masks "
                             f"({_shown([str(c) for c in candidates])}); keep one mask per image stem in {masks_dir}")
        out.append(candidates[0] if candidates else None)
    if not any(path is not None for path in out):
        example = Path(names[0]).with_suffix(".png").as_posix() if len(names) else "<stem>.png"
        raise FileNotFoundError(f"no mask in {masks_dir} matches any of the {len(names)} images of {images_dir} by "
                                f"file stem (e.g. {example}; endings {', '.join(MASK_SUFFIXES)}); the mask folder must hold "
                                f"these images' masks")
    return out


@dataclass
class HumanMasks:
    """Human ground-truth masks of some of a pair set's images, at the pair set's square size.

    Attributes:
        indices: ``(M,)`` int64 positions in the names given to :func:`load_human_masks`, ascending.
        masks: ``(M, 1, S, S)`` bool, True = object, brought to ``S`` with the images' :func:`fit_square`
            geometry (nearest neighbour).
        paths: the mask file of each.
        without: the names that have no mask (left out of the comparison).
    """

    indices: np.ndarray
    masks: torch.Tensor
    paths: list[Path]
    without: list[str]

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def load_human_masks(image_set: ImageSet, names: Sequence[str], masks_dir: str | Path, size: int) -> HumanMasks:
    """Read the human masks of ``names`` (:func:`match_masks`) and bring them to ``size x size``.

    Args:
        image_set: the opened image folder the names belong to (its images give the sizes the
            masks must have).
        names: the images to pair, e.g. :attr:`~saliencyssl.surrogate.pairs.PairSet.names`.
        masks_dir: the folder of the masks.
        size: the side ``S`` (the surrogate's image size).

    Raises:
        FileNotFoundError, ValueError: as :func:`match_masks`; ValueError also when a mask cannot be
            decoded or its size differs from its image's (naming both files).
    """
    from saliencyssl.imageio import read_mask

    position = {name: i for i, name in enumerate(image_set.names)}
    paths = match_masks(image_set.root, names, masks_dir)
    indices, masks, found = [], [], []
    for i, (name, path) in enumerate(zip(names, paths)):
        if path is None:
            continue
        mask = read_mask(path)
        shape = image_set.image(position[name]).shape[:2]
        if mask.shape != shape:
            raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but image {image_set.root / name} is "
                             f"{shape[1]}x{shape[0]}; a mask must have its image's size (in the orientation the image "
                             f"is shown in, its EXIF orientation applied)")
        indices.append(i)
        masks.append(fit_square(mask.astype(np.uint8), int(size), nearest=True) > 0)
        found.append(path)
    return HumanMasks(indices=np.asarray(indices, np.int64), masks=torch.from_numpy(np.stack(masks))[:, None],
                      paths=found, without=[name for name, path in zip(names, paths) if path is None])


def human_mask_scores(mask: torch.Tensor, saliency: torch.Tensor, truth: torch.Tensor,
                      beta2: float = F_BETA2) -> dict[str, np.ndarray]:
    """Per-image scores of a predicted mask and map against human masks (Cheng's conventions).

    Args:
        mask: ``(M, 1, S, S)`` bool predicted masks.
        saliency: ``(M, 1, S, S)`` float predicted maps in [0, 1].
        truth: ``(M, 1, S, S)`` bool human masks.

    Returns:
        ``(M,)`` float64 arrays: :func:`~saliencyssl.metrics.mask_scores`' ``f`` (beta^2 = 0.3), ``iou``,
        ``precision``, ``recall`` of the mask; ``mae``, the MAE of the map min-max normalised per
        image (as Cheng et al.'s CmEvaluation reads maps) against the mask as 0/1, and ``mae_raw``,
        of the map as given (:func:`~saliencyssl.metrics.map_mae`).
    """
    scores = mask_scores(mask, truth, beta2)
    out = {key: scores[key] for key in ("f", "iou", "precision", "recall")}
    out["mae"] = map_mae(saliency, truth, normalise=True)
    out["mae_raw"] = map_mae(saliency, truth)
    return out


def _vs_masks_summary(scores: dict[str, np.ndarray], beta2: float) -> dict[str, float]:
    means = {key: float(np.mean(scores[key])) for key in ("f", "iou", "mae", "mae_raw", "precision", "recall")}
    means["f_of_means"] = float(f_measure(means["precision"], means["recall"], beta2))
    return means


def vs_masks_report(truth: torch.Tensor, exact: TargetBatch, pred: TargetBatch, names: Sequence[str] | None = None,
                    beta2: float = F_BETA2) -> dict:
    """The surrogate and the exact labeller side by side against human masks, with two baselines.

    Everything is at one square size ``S`` (the module docstring says why): the predictions as
    given, the human masks from :func:`load_human_masks`.

    Args:
        truth: ``(M, 1, S, S)`` bool human masks.
        exact: the exact targets of the same images, ``(M, 1, S, S)``.
        pred: the surrogate's targets of the same images, ``(M, 1, S, S)``.
        names: the images' names, for the per-image lists.
        beta2: F-measure weight.

    Returns:
        ``n``, ``n_empty_masks``; for ``surrogate``, ``exact``, ``nothing`` (zero map, empty mask)
        and ``centre_box`` (the centred square of half the side, as mask and as 0/1 map): the means
        over images of ``f``, ``iou``, ``mae``, ``mae_raw``, ``precision``, ``recall`` and ``f_of_means``
        (F of the mean precision and mean recall, the figure Achanta et al. and Cheng et al.
        publish); ``surrogate_minus_exact`` (``f``, ``iou``, ``mae``); ``per_image`` (``names``
        and the surrogate's and exact labeller's ``f``, ``iou``, ``mae``).

    Raises:
        ValueError: the three disagree in number or size.
    """
    from saliencyssl.metrics import prior_masks

    truth = as_masks(truth)[:, None]
    n, size = int(truth.shape[0]), int(truth.shape[-1])
    for what, batch in (("exact targets", exact), ("surrogate targets", pred)):
        if len(batch) != n or tuple(batch.mask.shape[-2:]) != tuple(truth.shape[-2:]):
            raise ValueError(f"{what} ({len(batch)} x {tuple(batch.mask.shape[-2:])}) and human masks "
                             f"({n} x {tuple(truth.shape[-2:])}) differ in number or size")
    box = torch.from_numpy(prior_masks(size)["centre_box"]).expand(n, 1, size, size)
    per_image = {
        "surrogate": human_mask_scores(pred.mask.cpu(), pred.saliency.cpu(), truth, beta2),
        "exact": human_mask_scores(exact.mask.cpu(), exact.saliency.cpu(), truth, beta2),
        "nothing": human_mask_scores(torch.zeros_like(truth), torch.zeros(truth.shape), truth, beta2),
        "centre_box": human_mask_scores(box, box.float(), truth, beta2),
    }
    report: dict = {"n": n, "n_empty_masks": int((~truth.flatten(1).any(1)).sum()), "image_size": size,
                    "f_beta2": beta2, "geometry": VS_MASKS_GEOMETRY}
    for key, scores in per_image.items():
        report[key] = _vs_masks_summary(scores, beta2)
    report["surrogate_minus_exact"] = {key: report["surrogate"][key] - report["exact"][key]
                                       for key in ("f", "iou", "mae")}
    report["per_image"] = {"names": list(names) if names is not None else None,
                           **{who: {key: [round(float(v), 6) for v in per_image[who][key]]
                                    for key in ("f", "iou", "mae")} for who in ("surrogate", "exact")}}
    return report


def format_vs_masks(report: dict) -> list[str]:
    """Human-readable table of :func:`vs_masks_report`: one row per predictor."""
    size = report["image_size"]
    lines = [f"against {report['n']} human masks ({report['n_empty_masks']} empty), at {size}x{size} on the centre "
             f"crop:",
             f"{'':16s} {'F(b2=0.3)':>9s} {'IoU':>6s} {'MAE':>6s} {'MAEraw':>6s} {'P':>6s} {'R':>6s} "
             f"{'F(mean P,R)':>11s}"]
    rows = (("surrogate", "surrogate"), ("exact labeller", "exact"), ("predict nothing", "nothing"),
            ("centre box", "centre_box"))
    for label, key in rows:
        r = report[key]
        lines.append(f"{label:16s} {r['f']:9.3f} {r['iou']:6.3f} {r['mae']:6.3f} {r['mae_raw']:6.3f} "
                     f"{r['precision']:6.3f} {r['recall']:6.3f} {r['f_of_means']:11.3f}")
    d = report["surrogate_minus_exact"]
    lines.append(f"surrogate - exact: F {d['f']:+.3f}, IoU {d['iou']:+.3f}, MAE {d['mae']:+.3f}")
    return lines

__all__ = ["F_BETA2", "BOUNDARY_TOLERANCE", "mask_scores", "boundary_scores", "region_edges", "per_image_scores",
           "nothing_like", "summarize", "worst_decile", "better_than", "fidelity_report", "format_report",
           "rank_images", "comparison_rows", "fidelity_grid", "FidelityResult", "predict_all", "evaluate_surrogate",
           "MASK_SUFFIXES", "match_masks", "HumanMasks", "load_human_masks", "human_mask_scores", "vs_masks_report",
           "format_vs_masks"]
