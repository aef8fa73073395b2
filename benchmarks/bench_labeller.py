#!/usr/bin/env python
"""Speed and fidelity of the exact labeller, per stage, against Cheng's C++ and ground truth.

For every image below IMAGES_DIR: seconds for HC, RC and the SaliencyCut of each engine; with
--reference, agreement with the C++ maps and masks (same file stems); with --gt, accuracy
against ground-truth masks by Cheng's conventions (maps min-max to 0..255, precision and
recall averaged over images at 256 thresholds, F with beta^2 = 0.3, MAE; masks: precision and
recall averaged, then F), for ours and for the C++ outputs alike. With --scaling, labelling
throughput with 1 and 2 worker processes (scripts/label.py's pool) on the same images.

Example (its salbench figures: results/labeller_cpp.json, shown in docs/label.md):
  python benchmarks/bench_labeller.py ../shared/data/salbench/images \\
      --reference ../shared/data/salbench/cheng_cpp --gt ../shared/data/salbench/masks \\
      --engines faithful,opencv --scaling --json runs/bench_labeller.json
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bench_common import cpu_name, emit, labelling_rate
from saliencyssl.cache.executors import PoolExecutor
from saliencyssl.imageio import list_images, read_image
from saliencyssl.saliency import CUT_ENGINES, hc_saliency, rc_saliency, saliency_cut

BETA2 = 0.3


def map_curves(maps: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """Cheng's CmEvaluation for saliency maps: mean P/R over images at 256 thresholds, max/mean F, MAE."""
    precision = np.zeros(256)
    recall = np.zeros(256)
    mae = []
    for sal, gt in zip(maps, gts):
        sal = sal.astype(np.float64)
        lo, hi = sal.min(), sal.max()
        sal = np.zeros_like(sal) if hi <= lo else (sal - lo) / (hi - lo) * 255.0
        sal8 = np.rint(sal).astype(np.int64)
        fg = gt > 128
        hist_fg = np.bincount(sal8[fg], minlength=256)[::-1].cumsum()[::-1]   # pixels >= t in fg
        hist_all = np.bincount(sal8.ravel(), minlength=256)[::-1].cumsum()[::-1]
        precision += np.where(hist_all > 0, hist_fg / np.maximum(hist_all, 1), 0.0)
        recall += hist_fg / max(int(fg.sum()), 1)
        mae.append(np.abs(sal / 255.0 - fg).mean())
    precision /= len(maps)
    recall /= len(maps)
    f = (1 + BETA2) * precision * recall / np.maximum(BETA2 * precision + recall, 1e-12)
    return {"max_f": float(f.max()), "mean_f": float(f.mean()), "mae": float(np.mean(mae))}


def mask_scores(masks: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """Masks: precision and recall averaged over images, then F (Cheng's convention)."""
    p, r = [], []
    for m, gt in zip(masks, gts):
        fg = gt > 128
        tp = float((m & fg).sum())
        p.append(tp / m.sum() if m.sum() else 0.0)
        r.append(tp / fg.sum() if fg.sum() else 0.0)
    mp, mr = float(np.mean(p)), float(np.mean(r))
    f = (1 + BETA2) * mp * mr / (BETA2 * mp + mr) if (mp + mr) > 0 else 0.0
    return {"precision": mp, "recall": mr, "f": f}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="folder of images")
    parser.add_argument("--reference", type=Path, help="Cheng's C++ outputs: <stem>_hc.png, _rc.png, _cut.png, timings.csv")
    parser.add_argument("--gt", type=Path, help="ground-truth masks <stem>.png")
    parser.add_argument("--engines", default="faithful,opencv", help="cut engines to run (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--scaling", action="store_true", help="also measure 1- vs 2-worker labelling throughput")
    parser.add_argument("--json", type=Path, help="write all figures as JSON")
    args = parser.parse_args(argv)

    engines = [e for e in args.engines.split(",") if e]
    for engine in engines:
        if engine not in CUT_ENGINES:
            parser.error(f"unknown engine {engine}; choose from {CUT_ENGINES}")
    files = list_images(args.images)[: args.limit]
    if not files:
        parser.error(f"no images in {args.images}")

    # Warm up numba kernels and caches on the first image (not timed).
    warm = cv2.cvtColor(read_image(files[0]), cv2.COLOR_RGB2BGR).astype(np.float32) / 255
    for engine in engines:
        saliency_cut(warm, rc_saliency(warm).saliency, engine)

    times = {"hc": [], "rc": [], **{f"cut_{e}": [] for e in engines}}
    ours = {"hc": [], "rc": [], **{f"cut_{e}": [] for e in engines}}
    stems = []
    for path in files:
        bgr = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR).astype(np.float32) / 255
        t = time.perf_counter(); hc = hc_saliency(bgr); times["hc"].append(time.perf_counter() - t)
        t = time.perf_counter(); rc = rc_saliency(bgr).saliency; times["rc"].append(time.perf_counter() - t)
        ours["hc"].append(np.rint(hc * 255).astype(np.uint8))
        ours["rc"].append(np.rint(rc * 255).astype(np.uint8))
        for engine in engines:
            t = time.perf_counter(); mask = saliency_cut(bgr, rc, engine)
            times[f"cut_{engine}"].append(time.perf_counter() - t)
            ours[f"cut_{engine}"].append(mask)
        stems.append(path.stem)
        print(f"{path.name}: " + " ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)

    result = {"images": len(files), "date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
              "cores": os.cpu_count(),
              "seconds": {k: {"median": pct(v, 50), "p90": pct(v, 90)} for k, v in times.items()}}

    if args.reference:
        ref = {kind: [cv2.imread(str(args.reference / f"{s}_{kind}.png"), cv2.IMREAD_GRAYSCALE) for s in stems]
               for kind in ("hc", "rc", "cut")}
        agreement = {
            "hc_mean_abs_diff": float(np.mean([np.abs(a.astype(float) - b).mean() / 255 for a, b in zip(ours["hc"], ref["hc"])])),
            "rc_mean_abs_diff": float(np.mean([np.abs(a.astype(float) - b).mean() / 255 for a, b in zip(ours["rc"], ref["rc"])])),
        }
        for engine in engines:
            ious = [iou(m, r > 128) for m, r in zip(ours[f"cut_{engine}"], ref["cut"])]
            agreement[f"cut_{engine}_iou_mean"] = float(np.mean(ious))
            agreement[f"cut_{engine}_iou_min"] = float(np.min(ious))
        result["agreement_with_cpp"] = agreement
        timing_file = args.reference / "timings.csv"
        if timing_file.is_file():
            rows = {r["image"].rsplit(".", 1)[0]: r for r in csv.DictReader(timing_file.open())}
            cpp = {k: [float(rows[s][f"{k}_seconds"]) for s in stems if s in rows]
                   for k in ("hc", "rc", "saliencycut")}
            result["cpp_seconds_median"] = {k: float(np.median(v)) for k, v in cpp.items()}
            result["ratio_to_cpp_median"] = {
                "hc": result["seconds"]["hc"]["median"] / np.median(cpp["hc"]),
                "rc": result["seconds"]["rc"]["median"] / np.median(cpp["rc"]),
                **{f"cut_{e}": result["seconds"][f"cut_{e}"]["median"] / np.median(cpp["saliencycut"]) for e in engines}}
        if args.gt:
            gts = [cv2.imread(str(args.gt / f"{s}.png"), cv2.IMREAD_GRAYSCALE) for s in stems]
            result["accuracy_vs_gt"] = {
                "ours": {"hc": map_curves(ours["hc"], gts), "rc": map_curves(ours["rc"], gts),
                         **{f"cut_{e}": mask_scores(ours[f"cut_{e}"], gts) for e in engines}},
                "cpp": {"hc": map_curves(ref["hc"], gts), "rc": map_curves(ref["rc"], gts),
                        "cut": mask_scores([r > 128 for r in ref["cut"]], gts)},
            }
    elif args.gt:
        gts = [cv2.imread(str(args.gt / f"{s}.png"), cv2.IMREAD_GRAYSCALE) for s in stems]
        result["accuracy_vs_gt"] = {"ours": {"hc": map_curves(ours["hc"], gts), "rc": map_curves(ours["rc"], gts),
                                             **{f"cut_{e}": mask_scores(ours[f"cut_{e}"], gts) for e in engines}}}

    if args.scaling:
        one = labelling_rate(args.images, files, PoolExecutor(1))
        two = labelling_rate(args.images, files, PoolExecutor(2))
        result["labelling_images_per_second"] = {"1": one, "2": two, "ratio": two / one}

    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
