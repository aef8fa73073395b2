#!/usr/bin/env python
"""Can the surrogate learn what is learnable? Train it on the quickstart's generated shapes, score it per shape.

The quickstart's embedded data (saliencyssl.embedded: one flat-coloured ellipse, rectangle, triangle
or cross on a smooth background) is segmented by the exact labeller as drawn, so a surrogate that
draws anything but the shapes is held back by itself, not by its labels. This script makes the
same pairs in memory (saliencyssl.surrogate.pairs.shape_pairs: the images of
write_embedded_dataset for --data-seed, labelled at 64 px, brought to --size), trains on the
two thirds of the training images the quickstart labels (--all-train: all of them), with the
product's SurrogateTrainer and the options given here (defaults: TrainConfig's), for --steps steps,
and scores the final generator on the test images:

- mask IoU per shape class and overall, and the region boundary F (saliencyssl.surrogate.evaluation); the
  same two on the training images (unmoved), to tell learning by heart from learning the shapes;
- the *blob bound* per class: the best IoU a round blob at the right place reaches, the better of
  a disc and an ellipse with the mask's second moments, centred on the mask's centroid and scaled
  to the best size (best_blob_iou); a surrogate that draws blobs cannot beat it;
- the *resolution ceiling*: the IoU of the drawn 64 px shape, area-averaged to --size and cut at
  0.5, against the exact --size mask (nearest-neighbour from 64 px): what a perfect outline scores
  when pixels that the shape half covers go one way or the other;
- time: wall and CPU seconds per training step (medians over the run, the step alone), the run's
  wall time (SurrogateTrainer.fit: steps, evaluations and checkpoints), the load average before
  and after (the machine may be shared: compare CPU seconds per step, and steps).

--eval-every N also scores the test images every N steps (not timed), for the learning curve.

Examples:
  nice -n 10 python benchmarks/surrogate_shapes.py --steps 600 --threads 1 --json runs/shapes/default.json
  # one lever at a time, e.g. Pix2Pix's former recipe
  nice -n 10 python benchmarks/surrogate_shapes.py --steps 600 --threads 1 --lambda-gan 1 --head 0 \\
      --dropout-blocks 3 --boundary-pos-weight 2 --no-rotate --lr 2e-4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_common import device_name, emit  # noqa: E402


def best_blob_iou(mask: np.ndarray) -> float:
    """The best IoU a round blob at the mask's place reaches against ``mask``.

    Candidates are centred on the mask's centroid: discs of radius 0.5 to the mask's half diagonal
    in quarter pixels, and ellipses with the mask's second moments (covariance ``C``: the pixels
    with ``d^T C^-1 d <= s^2``) for ``s`` from 0.5 to 4 in steps of 0.05; the best IoU of them all.

    Args:
        mask: ``(H, W)`` bool, not empty.

    Returns:
        IoU in [0, 1].
    """
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("best_blob_iou needs a mask with at least one pixel")
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    dy, dx = yy - cy, xx - cx

    def iou(pred: np.ndarray) -> float:
        return float((pred & mask).sum() / max(1, (pred | mask).sum()))

    best = 0.0
    r2 = dy ** 2 + dx ** 2
    for radius in np.arange(0.5, np.hypot(*mask.shape) / 2, 0.25):
        best = max(best, iou(r2 <= radius ** 2))
    if len(ys) >= 3:
        inverse = np.linalg.inv(np.cov(np.stack([xs, ys])) + 1e-6 * np.eye(2))
        q = inverse[0, 0] * dx ** 2 + 2 * inverse[0, 1] * dx * dy + inverse[1, 1] * dy ** 2
        for scale in np.arange(0.5, 4.0, 0.05):
            best = max(best, iou(q <= scale ** 2))
    return best


def resolution_ceiling(drawn: np.ndarray, exact: np.ndarray) -> float:
    """IoU of the drawn mask area-averaged to ``exact``'s size and cut at 0.5, against ``exact``."""
    import cv2

    size = exact.shape[::-1]
    coverage = cv2.resize(drawn.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    pred = coverage >= 0.5
    return float((pred & exact).sum() / max(1, (pred | exact).sum()))


def quickstart_share(names: list[str]) -> list[int]:
    """Indices of the training images the quickstart labels: two of every three, in file order."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    return sorted(i for k, i in enumerate(order) if k % 3 != 2)


def score(surrogate, test, classes: np.ndarray) -> dict:
    """Mask IoU per class and overall, and the boundary F, of ``surrogate`` on the ``test`` pairs."""
    from saliencyssl.surrogate.evaluation import evaluate_surrogate

    result = evaluate_surrogate(surrogate, test.images, test.targets)
    iou, boundary = result.scores["iou"], result.scores["boundary_f"]
    return {"mask_iou": round(float(iou.mean()), 4), "boundary_f": round(float(boundary.mean()), 4),
            "mask_iou_per_class": {c: round(float(iou[classes == c].mean()), 4) for c in sorted(set(classes))}}


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.surrogate.losses import LossWeights
    from saliencyssl.surrogate.training import TrainConfig

    d, w = TrainConfig(), LossWeights()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="training steps (default %(default)s)")
    p.add_argument("--size", type=int, default=32, help="side of the pairs (default %(default)s)")
    p.add_argument("--per-class-train", type=int, default=60, help="generated training images per class (60)")
    p.add_argument("--per-class-test", type=int, default=30, help="generated test images per class (30)")
    p.add_argument("--all-train", action="store_true", help="train on every training image, not the quickstart's 2/3")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated images (the quickstart's: 0)")
    p.add_argument("--seed", type=int, default=d.seed, help="training seed (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N", help="also score the test images every N steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--ngf", type=int, default=d.ngf)
    p.add_argument("--head", type=int, default=d.head)
    p.add_argument("--dropout-blocks", type=int, default=d.dropout_blocks)
    p.add_argument("--no-rotate", action="store_true")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--lambda-gan", type=float, default=w.gan)
    p.add_argument("--lambda-l1", type=float, default=w.l1)
    p.add_argument("--lambda-mask", type=float, default=w.mask)
    p.add_argument("--lambda-boundary", type=float, default=w.boundary)
    p.add_argument("--boundary-pos-weight", default="balanced", help="a number or 'balanced' (default)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from saliencyssl.surrogate.losses import LossWeights
    from saliencyssl.surrogate.pairs import shape_pairs
    from saliencyssl.surrogate.training import SurrogateTrainer, TrainConfig
    from saliencyssl.embedded import generate_shapes

    started = time.perf_counter()
    train, test = shape_pairs(args.per_class_train, args.per_class_test, args.size, seed=args.data_seed)
    if not args.all_train:
        train = train.subset(quickstart_share(train.names))
    classes = np.array([n.split("/")[0] for n in test.names])
    drawn = [mask for split, _, _, _, mask in generate_shapes(args.per_class_train, args.per_class_test,
                                                               seed=args.data_seed) if split == "test"]
    exact_masks = test.targets.mask[:, 0].numpy()
    bounds = np.array([best_blob_iou(m) for m in exact_masks])
    ceiling = np.array([resolution_ceiling(d, e) for d, e in zip(drawn, exact_masks)])
    data_seconds = time.perf_counter() - started

    pos_weight = None if str(args.boundary_pos_weight).lower() == "balanced" else float(args.boundary_pos_weight)
    steps_per_epoch = -(-len(train) // args.batch_size)
    config = TrainConfig(image_size=args.size, epochs=-(-args.steps // steps_per_epoch), batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, flip=not args.no_flip, rotate=not args.no_rotate, ngf=args.ngf,
                         head=args.head, dropout_blocks=args.dropout_blocks,
                         weights=LossWeights(gan=args.lambda_gan, l1=args.lambda_l1, mask=args.lambda_mask,
                                             boundary=args.lambda_boundary, boundary_pos_weight=pos_weight))
    wall, cpu, curve = [], [], []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = SurrogateTrainer(config, train, None, run_dir, progress=False, tensorboard=False,
                                   log=lambda line: None)
        step = trainer.train_step

        def timed_step(images, exact):
            t, c = time.perf_counter(), time.process_time()
            out = step(images, exact)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            if args.eval_every and trainer.step % args.eval_every == 0:
                curve.append({"step": trainer.step, **score(trainer.surrogate(), test, classes)})
                trainer.generator.train()
            return out

        trainer.train_step = timed_step
        load_before = os.getloadavg()
        t = time.perf_counter()
        result = trainer.fit()
        fit_seconds = time.perf_counter() - t
        load_after = os.getloadavg()
        final = score(trainer.surrogate(), test, classes)
        on_train = score(trainer.surrogate(), train, np.array([n.split("/")[0] for n in train.names]))

    def per_class(values: np.ndarray) -> dict[str, float]:
        return {c: round(float(values[classes == c].mean()), 4) for c in sorted(set(classes))}

    out = {
        "date": time.strftime("%Y-%m-%d"), "device": device_name("cpu"), "threads": torch.get_num_threads(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "n_train": len(train), "n_test": len(test), "size": args.size, "steps": result.steps,
        "config": {k: v for k, v in config.as_dict().items() if k not in ("max_minutes", "max_steps", "grid_images",
                                                                           "held_out", "select", "amp")},
        **final,
        "train_mask_iou": on_train["mask_iou"], "train_boundary_f": on_train["boundary_f"],
        "blob_bound": round(float(bounds.mean()), 4), "blob_bound_per_class": per_class(bounds),
        "resolution_ceiling": round(float(ceiling.mean()), 4), "resolution_ceiling_per_class": per_class(ceiling),
        "seconds_per_step_wall_median": round(statistics.median(wall), 4),
        "seconds_per_step_cpu_median": round(statistics.median(cpu), 4),
        "fit_seconds": round(fit_seconds, 1), "data_seconds": round(data_seconds, 1),
        "curve": curve,
        "command": "python benchmarks/surrogate_shapes.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
