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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from saliencyssl.target import TargetBatch, region_boundary

#: beta^2 of the mask F-measure.
F_BETA2 = 0.3
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
def _as_bool(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim == 4:
        t = t[:, 0]
    if t.ndim == 2:
        t = t[None]
    return t.bool()


def _ratio(num: torch.Tensor, den: torch.Tensor, when_empty: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), when_empty)


def mask_scores(pred: torch.Tensor | np.ndarray, exact: torch.Tensor | np.ndarray,
                beta2: float = F_BETA2) -> dict[str, np.ndarray]:
    """Per-image mask agreement (also the downstream segmentation's scores).

    Args:
        pred, exact: ``(N, H, W)`` or ``(N, 1, H, W)`` bool masks (numpy or torch).
        beta2: F-measure weight, ``F = (1 + b2) P R / (b2 P + R)``.

    Returns:
        ``(N,)`` float64 arrays ``iou``, ``dice``, ``precision``, ``recall``, ``f`` and bool
        arrays ``present`` (exact mask not empty) and ``pred_present``.

        Empty cases: both empty -> every score 1. Prediction empty, exact not -> precision 0,
        recall 0, all 0. Exact empty, prediction not -> precision 0, recall 1 (nothing was
        missed), IoU, Dice and F 0.
    """
    p, e = _as_bool(pred), _as_bool(exact)
    if p.shape != e.shape:
        raise ValueError(f"predicted masks {tuple(p.shape)} and exact masks {tuple(e.shape)} differ in shape")
    p, e = p.flatten(1).double(), e.flatten(1).double()
    tp = (p * e).sum(1)
    n_p, n_e = p.sum(1), e.sum(1)
    union = n_p + n_e - tp
    both_empty = (n_p == 0) & (n_e == 0)
    one = torch.ones_like(tp)
    iou = _ratio(tp, union, one)
    dice = _ratio(2 * tp, n_p + n_e, one)
    precision = torch.where(n_p > 0, tp / n_p.clamp(min=1), both_empty.double())
    recall = torch.where(n_e > 0, tp / n_e.clamp(min=1), one)
    denom = beta2 * precision + recall
    f = torch.where(denom > 0, (1 + beta2) * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    f = torch.where(both_empty, one, torch.where((n_e == 0) & (n_p > 0), torch.zeros_like(tp), f))
    return {"iou": iou.cpu().numpy(), "dice": dice.cpu().numpy(), "precision": precision.cpu().numpy(),
            "recall": recall.cpu().numpy(), "f": f.cpu().numpy(), "present": (n_e > 0).cpu().numpy(),
            "pred_present": (n_p > 0).cpu().numpy()}


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
    p, e = _as_bool(pred_edges), _as_bool(exact_edges)
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
    mae = (pred.saliency.float() - exact.saliency.float()).abs().flatten(1).mean(1)
    scores["mae"] = mae.double().cpu().numpy()
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


__all__ = ["F_BETA2", "BOUNDARY_TOLERANCE", "mask_scores", "boundary_scores", "region_edges", "per_image_scores",
           "nothing_like", "summarize", "worst_decile", "better_than", "fidelity_report", "format_report",
           "rank_images", "comparison_rows", "fidelity_grid", "FidelityResult", "predict_all", "evaluate_surrogate"]
