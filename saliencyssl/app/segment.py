"""Foreground segmentation with few masks on a pretrained ResNet-18 encoder (FPN decoder or Mask R-CNN).

Pairs images with masks, fixes a test split by content hash, trains a segmenter (or a Mask R-CNN)
for each label fraction x seed on the rest, scores foreground IoU and F-measure (and COCO mask
AP) on the test split and writes results.json / results.csv / results.md and a plot. The models
are :class:`~saliencyssl.eval.segmentation.FPNProtocol` and
:class:`~saliencyssl.eval.detection.MaskRCNNProtocol`; data, split and scores
:mod:`saliencyssl.eval.masks`.

The out folder is a run folder (:class:`~saliencyssl.app.rundir.RunDir`): a finished evaluation
with the same settings is not redone (``--force`` redoes it), one with other settings is refused
with the settings that differ. Each finished (fraction, seed) model's scores are kept in
``partial/`` under a digest of the settings as soon as it is scored, so a sweep stopped half way
(an error, Ctrl-C) goes on from the next model when run again with the same settings.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from saliencyssl.app.options import (add_backbone_options, check_count, check_outside, cpu_limit, fail,
                                     one_line_errors)
from saliencyssl.app.rundir import RunDir, RunDirError, RunExistsError
from saliencyssl.files import read_text_file, replace_file
from saliencyssl.eval.masks import F_BETA2, MASK_SAMPLING, THRESHOLD, SegmentTrainConfig

SUMMARY = "a segmenter fine-tuned on a backbone at label fractions (IoU, F, mask AP)"


def _protocols() -> dict:
    from saliencyssl.eval.detection import MaskRCNNProtocol
    from saliencyssl.eval.segmentation import FPNProtocol

    return {"fpn": FPNProtocol, "maskrcnn": MaskRCNNProtocol}


#: ``--model`` choices (the protocols are imported when a stage runs).
MODELS = ("fpn", "maskrcnn")


@dataclass
class SegmentConfig:
    """One segmentation evaluation (``saliency-ssl segment``'s options).

    Attributes:
        backbone: ``backbone.pt``, a ResNet-18 state dict, or ``"random"``.
        images, masks: the image folder and the folder of masks named like the images.
        out: the run folder (default: ``BACKBONE_DIR/seg``, or ``runs/seg-random-seed<S>``).
        fractions: label fractions of the training split, ``"0.1,0.25,..."``.
        seeds: seeds 0..N-1 (labelled subset, decoder initialisation, batch order, flips).
        epochs: passes over the whole training split (the same steps for every fraction).
        image_size: side length (default: the backbone's).
        test_split: share of images held out, chosen by content hash.
        model: ``fpn`` or ``maskrcnn``.
        lr, encoder_lr: rates (default: the model's).
        device, threads: where to train (not part of the result).
        force: evaluate again even when ``out`` holds this evaluation.
    """

    backbone: str
    images: str
    masks: str
    out: Path | None = None
    fractions: str = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"
    seeds: int = 3
    epochs: int = 20
    image_size: int | None = None
    test_split: float = 0.3
    freeze_encoder: bool = False
    batch_size: int = SegmentTrainConfig.batch_size
    lr: float | None = None
    encoder_lr: float | None = None
    fpn_channels: int = 64
    model: str = "fpn"
    backbone_seed: int = 0
    random_stem: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    force: bool = False
    progress: bool = True
    command: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        from saliencyssl.datasets import check_image_size
        from saliencyssl.eval import fractions as frac
        from saliencyssl.eval.classification import MAX_SEEDS
        from saliencyssl.ssl.method import MAX_EPOCHS, MAX_LR

        frac.parse_fractions(self.fractions)
        for flag, value in (("--seeds", self.seeds), ("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--fpn-channels", self.fpn_channels)):
            if value < 1:
                raise ValueError(f"{flag} {value}: give a positive number")
        for flag, value in (("--lr", self.lr), ("--encoder-lr", self.encoder_lr)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or not 0 < value <= MAX_LR):
                raise ValueError(f"{flag} {value}: give a positive learning rate, finite and at most {MAX_LR:g}")
        check_count("--epochs", self.epochs, 1, MAX_EPOCHS)
        check_count("--backbone-seed", self.backbone_seed, 0, 2 ** 32 - 1)
        if not 0.0 < self.test_split < 1.0:
            raise ValueError(f"--test-split {self.test_split}: give the share of images held out for testing, in "
                             f"(0, 1), e.g. 0.3")
        if self.model not in MODELS:
            raise ValueError(f"--model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.image_size is not None:
            check_image_size(self.image_size, "--image-size")
        check_count("--threads", self.threads, 1, cpu_limit())
        check_count("--fpn-channels", self.fpn_channels, 1, 1024)
        check_count("--batch-size", self.batch_size, 1, 4096)
        check_count("--seeds", self.seeds, 1, MAX_SEEDS)
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda: no CUDA device is visible to torch here; use --device cpu")
        if self.backbone != "random" and not Path(self.backbone).is_file():
            raise FileNotFoundError(f"--backbone {self.backbone}: no such file; pass RUN_DIR/backbone.pt written by "
                                    f"saliency-ssl pretrain, a ResNet-18 state dict, or 'random' for the random "
                                    f"baseline")
        if self.out is None:
            self.out = (Path("runs") / f"seg-random-seed{self.backbone_seed}" if self.backbone == "random"
                        else Path(self.backbone).resolve().parent / "seg")
        self.out = Path(self.out)
        check_outside(self.out, {"--images": self.images, "--masks": self.masks})


def run(s: SegmentConfig, verbose: bool = True) -> dict:
    """Train a model per label fraction and seed, score it on the fixed test split and write the
    report (results.json, results.csv, results.md, scores_vs_fraction.png) to ``s.out``.

    Returns:
        The results, as written to ``results.json`` (read back when the run folder already holds
        this evaluation and ``s.force`` is off).

    Raises:
        RunDirError: ``s.out`` holds another evaluation (the differences named) or other files.
    """
    import json

    import numpy as np
    import torch
    from tqdm import tqdm

    from saliencyssl.eval import fractions as frac, results as report
    from saliencyssl.eval.features import open_backbone
    from saliencyssl.eval.masks import load_mask_pairs, split_by_hash, to_arrays

    if s.threads is not None:
        torch.set_num_threads(s.threads)
    started = time.time()
    fractions = frac.parse_fractions(s.fractions)
    seeds = list(range(s.seeds))
    protocol_class = _protocols()[s.model]
    lr = protocol_class.lr if s.lr is None else s.lr
    encoder_lr = protocol_class.encoder_lr if s.encoder_lr is None else s.encoder_lr
    encoder, info = open_backbone(s.backbone, s.image_size, s.backbone_seed, s.random_stem)
    pairs = load_mask_pairs(s.images, s.masks)  # missing masks stop the run before its record is written
    settings = {"backbone": info.identity, "image_size": info.image_size, "images": str(Path(s.images).resolve()),
                "masks": str(Path(s.masks).resolve()), "data": pairs.digest(), "mask_sampling": MASK_SAMPLING,
                "fractions": [t for t, _ in fractions], "seeds": seeds, "epochs": s.epochs,
                "test_split": s.test_split, "freeze_encoder": s.freeze_encoder, "batch_size": s.batch_size,
                "lr": lr, "encoder_lr": None if s.freeze_encoder else encoder_lr, "fpn_channels": s.fpn_channels,
                "model": s.model}
    run_dir = RunDir(s.out, "segment")
    state = run_dir.state(settings)
    if state.finished and not s.force and (run_dir / "results.json").is_file():
        if verbose:
            print(f"{s.out} already holds this evaluation (--force redoes it)")
        return json.loads((run_dir / "results.json").read_text())
    run_dir.start(settings, free={"device": s.device, "threads": torch.get_num_threads()}, resume=True,
                  restart_unfinished=True)
    images, masks = to_arrays(pairs, info.image_size)
    train_idx, test_idx = split_by_hash(pairs.images.hashes(), s.test_split)
    steps = s.epochs * math.ceil(len(train_idx) / s.batch_size)
    config = SegmentTrainConfig(steps=steps, batch_size=s.batch_size, lr=lr, encoder_lr=encoder_lr,
                                freeze_encoder=s.freeze_encoder)
    test_images, test_masks = images[test_idx], masks[test_idx]
    protocol = protocol_class(masks, test_idx, info.image_size, s.fpn_channels)
    bar = tqdm(total=steps * len(fractions) * len(seeds), desc=f"training {s.model} models", unit="step",
               disable=not s.progress)

    partial = run_dir / "partial"
    if s.force:
        shutil.rmtree(partial, ignore_errors=True)
    run_key = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()

    def score(subset, seed):
        labelled = train_idx[subset]
        subset_key = hashlib.blake2b(np.asarray(labelled, np.int64).tobytes(), digest_size=8).hexdigest()
        kept = partial / f"{run_key}_seed{seed}_{subset_key}.json"
        try:  # scored by an earlier, interrupted run of these settings
            scores = json.loads(read_text_file(kept, 1 << 16, "kept score"))
            if isinstance(scores, dict) and scores and all(isinstance(v, float) for v in scores.values()):
                bar.update(steps)
                return scores
        except (FileNotFoundError, ValueError):
            pass  # none, or damaged: score it again

        def on_step(step, loss):
            bar.update(1)
            bar.set_postfix(n=len(labelled), seed=seed, loss=f"{loss:.3f}")

        try:
            scores = protocol.score(encoder, images, masks, labelled, config, seed, s.device, on_step, test_images,
                                    test_masks)
        except ValueError as error:
            if "more than 1 value per channel" not in str(error):
                raise
            one, more = ((f"--batch-size {s.batch_size}: batches of one image", "a larger --batch-size")
                         if s.batch_size == 1 else
                         (f"{len(labelled)} labelled image (of {len(train_idx)} in the training split)",
                          "fractions that label at least 2 images"))
            raise ValueError(f"{one}: the encoder's last feature map is one pixel at {info.image_size} px and "
                             f"BatchNorm cannot train on a single value a channel; use {more}, --freeze-encoder, a "
                             f"larger --image-size, or a backbone with the CIFAR stem") from None
        partial.mkdir(exist_ok=True)
        replace_file(kept, json.dumps({k: float(v) for k, v in scores.items()}))
        return scores

    # One "class" for the whole training split: subsets are plain random draws of round(fraction * n).
    results_by_fraction = frac.sweep(np.zeros(len(train_idx), np.int64), fractions, seeds, score)
    bar.close()

    baselines = protocol.baselines(test_masks)
    lines = {"foreground IoU": "iou", "F-measure (beta^2=0.3)": "f", **protocol.extra_lines}
    plot = report.plot_fraction_curves({name: results_by_fraction for name in lines}, lines, "score on the test split",
                                       s.out / "scores_vs_fraction.png",
                                       title=f"foreground segmentation at {info.image_size}px ({s.model})",
                                       references={"centre-box IoU": baselines["centre_box"]["iou"],
                                                   "centre-box F": baselines["centre_box"]["f"]})
    elapsed = time.time() - started
    meta = {
        "backbone": info.to_json(),
        "datasets": {"images": {"path": str(s.images), "n_images": len(pairs)},
                     "masks": {"path": str(s.masks), "n_images": len(pairs)}},
        "split": {"test_split": s.test_split, "by": "content hash (sorted, first round(T*n))",
                  "n_train": int(len(train_idx)), "n_test": int(len(test_idx)),
                  "test_images": [pairs.images.names[i] for i in test_idx]},
        "fractions": [t for t, _ in fractions], "seeds": seeds,
        "training": {"model": s.model, "description": protocol.description, "epochs": s.epochs, "steps": steps,
                     "batch_size": s.batch_size, "optimiser": protocol.optimiser, "lr": lr,
                     "encoder_lr": encoder_lr if not s.freeze_encoder else None,
                     "freeze_encoder": s.freeze_encoder, "fpn_channels": s.fpn_channels,
                     "loss": protocol.loss, "augmentation": "horizontal flip"},
        "scores": {"threshold": THRESHOLD, "f_beta2": F_BETA2, "resolution": info.image_size,
                   "averaged": "over test images, then mean/std over seeds", **protocol.scores_meta()},
        "baselines": baselines,
        "device": s.device, "threads": torch.get_num_threads(), "plots": {"scores": str(plot)},
        "timings": {"total_s": elapsed}, "command": s.command,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    results = report.segmentation_results(results_by_fraction, meta)
    rows = report.segmentation_rows(results_by_fraction)
    paths = report.write_report(s.out, results, rows, report.segmentation_markdown(results, rows))
    run_dir.finish(results="results.json", seconds=round(elapsed, 1))
    shutil.rmtree(partial, ignore_errors=True)  # results.json holds them all now
    if not verbose:
        return results
    print("IoU: " + ", ".join(f"{e.fraction}: {e.mean('iou'):.3f}±{e.std('iou'):.3f}" for e in results_by_fraction))
    print("F:   " + ", ".join(f"{e.fraction}: {e.mean('f'):.3f}±{e.std('f'):.3f}" for e in results_by_fraction))
    if s.model == "maskrcnn":
        print("mask AP: " + ", ".join(f"{e.fraction}: {e.mean('mask_ap'):.3f}±{e.std('mask_ap'):.3f}"
                                      for e in results_by_fraction))
    print(f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name} and {Path(plot).name} to {s.out} "
          f"in {elapsed:.1f}s")
    return results


EPILOG = """\
examples:
  # fine-tune a pretrained backbone on salient-object masks, 10 fractions x 3 seeds
  saliency-ssl segment --backbone runs/simclr/backbone.pt \\
      --images data/salbench/images --masks data/salbench/masks --out runs/simclr/seg

  # the random-initialisation baseline at 64 px with the CIFAR stem, decoder only, quick
  saliency-ssl segment --backbone random --image-size 64 --random-stem cifar \\
      --images data/salbench/images --masks data/salbench/masks \\
      --fractions 0.2,0.5,1.0 --epochs 10 --freeze-encoder --out runs/random/seg

  # instance segmentation: Mask R-CNN on the backbone, COCO mask AP beside IoU and F
  saliency-ssl segment --backbone runs/simclr/backbone.pt --model maskrcnn --image-size 64 \\
      --images data/salbench/images --masks data/salbench/masks --fractions 0.2,0.5,1.0 --epochs 40 \\
      --out runs/simclr/seg_maskrcnn

data: --masks holds one PNG per image (foreground non-zero), with the image's relative path
and stem and the suffix .png (images/0001.jpg -> masks/0001.png). An image without a mask is an
error that names it. Images and masks are resized so the shorter side is --image-size, then
centre-cropped to a square; scores are computed at that size.

protocol: the test split (--test-split of the images, picked by content hash, so the same for every
seed, fraction and backbone) is never trained on. For each fraction and seed a random subset of the
remaining images (round(fraction x n), at least 1) is labelled and a fresh segmenter is trained
for --epochs passes' worth of steps over the *whole* training split (epochs x ceil(n_train /
batch)), so every fraction gets the same number of steps. Scores: mean over test images of the
foreground IoU and the F-measure (beta^2 = 0.3) at threshold 0.5; then mean and std over seeds.

models: --model fpn (default) is a feature pyramid over layers 1-4 with one foreground logit per
pixel (Adam). --model maskrcnn is torchvision's Mask R-CNN on its own pyramid over the same layers
(SGD, warm-up): each connected component of a mask (at least 0.2% of the image) is an instance; it
reports COCO AP of the instance masks (0.50:0.95, 0.50, 0.75) and boxes (pycocotools), and IoU / F
of the union of its detections scoring >= 0.5. A step costs 1.7 times the FPN's with the CIFAR stem and 3-5 times
with the ImageNet stem, and it needs more steps (40 epochs rather than 10-20): on 25 photos at
64 px, 160 steps take about 4 minutes of one CPU core per fraction and seed.

outputs (in --out): results.json (fraction as written -> {iou_mean, iou_std, f_mean, f_std,
n_labelled}, with --model maskrcnn also mask_ap, mask_ap50, mask_ap75, box_ap (_mean, _std); plus
meta), results.csv, results.md, scores_vs_fraction.png.
"""


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.eval.detection import MaskRCNNProtocol
    from saliencyssl.eval.segmentation import FPNProtocol
    from saliencyssl.eval.fractions import DEFAULT_FRACTIONS

    defaults = SegmentTrainConfig()
    p = argparse.ArgumentParser(
        prog="saliency-ssl segment", description=__doc__.splitlines()[0] + "\nTrains a segmenter per label "
        "fraction and seed and scores foreground IoU and F-measure on a fixed test split.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_options(p)
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--masks", required=True, metavar="DIR",
                   help="folder of binary mask PNGs with the images' relative paths and stems")
    p.add_argument("--fractions", default=DEFAULT_FRACTIONS, metavar="F,F,...",
                   help="label fractions in (0, 1] of the training split that get masks (default %(default)s); the "
                        "text as written becomes the key in results.json")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="number of seeds (0..N-1); each draws its own labelled subset, decoder initialisation, batch "
                        "order and flips (default %(default)s)")
    p.add_argument("--epochs", type=int, default=20, metavar="N",
                   help="training length in passes over the whole training split, the same number of steps for "
                        "every fraction (default %(default)s)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="side length images and masks are brought to; default: the backbone config's image_size "
                        "(32 for random). Give the same S to every backbone you compare")
    p.add_argument("--test-split", type=float, default=0.3, metavar="T",
                   help="share of the images held out for testing, chosen by content hash (default %(default)s)")
    p.add_argument("--out", metavar="OUT_DIR",
                   help="output folder (default: BACKBONE_DIR/seg, or runs/seg-random-seedS for --backbone random)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the pyramid and head(s) only, keeping the encoder fixed (default: fine-tune it too)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="B",
                   help="images per training step (default %(default)s)")
    p.add_argument("--model", default="fpn", choices=MODELS,
                   help="fpn: FPN segmenter (foreground IoU, F); maskrcnn: torchvision Mask R-CNN (also COCO mask "
                        "and box AP) (default %(default)s)")
    p.add_argument("--lr", type=float, metavar="LR",
                   help=f"learning rate of the decoder / heads (default: {FPNProtocol.lr} with Adam for fpn, "
                        f"{MaskRCNNProtocol.lr} with SGD for maskrcnn)")
    p.add_argument("--encoder-lr", type=float, metavar="LR",
                   help=f"learning rate of the encoder when fine-tuned (default: {FPNProtocol.encoder_lr} for fpn, "
                        f"{MaskRCNNProtocol.encoder_lr} for maskrcnn)")
    p.add_argument("--fpn-channels", type=int, default=64, metavar="C",
                   help="channels of the feature pyramid (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="evaluate again even when --out holds a finished evaluation with the same settings")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    return p




@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(["saliency-ssl segment", *(sys.argv[1:] if argv is None else argv)])
    try:
        config = SegmentConfig(
            backbone=args.backbone, images=args.images, masks=args.masks, out=args.out, fractions=args.fractions,
            seeds=args.seeds, epochs=args.epochs, image_size=args.image_size, test_split=args.test_split,
            freeze_encoder=args.freeze_encoder, batch_size=args.batch_size, lr=args.lr, encoder_lr=args.encoder_lr,
            fpn_channels=args.fpn_channels, model=args.model, backbone_seed=args.backbone_seed,
            random_stem=args.random_stem, device=args.device, threads=args.threads, force=args.force,
            command=command)
        run(config)
    except RunDirError as error:
        return fail(f"{error} (or pass --force to evaluate again into it)" if isinstance(error, RunExistsError)
                    else error)
    except (FileNotFoundError, ValueError, FloatingPointError) as error:  # ImageDecodeError, BackboneCheckpointError
        return fail(error)
    except MemoryError as error:
        return fail(f"out of memory{': ' + str(error) if str(error) else ''}; segment fewer or smaller images "
                    f"(a smaller --image-size) or lower --batch-size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
