"""Baseline check: is our ``default`` policy a faithful SimCLR baseline? Pretrain with lightly's own views.

Our ``default`` policy (:class:`saliencyssl.augment.SSLAugmentation`) draws SimCLR's views with
kornia on the training device, batch by batch. This script trains the same run -- same images,
batch, epochs, seed, optimizer, schedule, backbone and loss, the same
:class:`saliencyssl.app.pretrain.Pretrainer` -- with one thing replaced: each view comes from
lightly's ``SimCLRTransform`` applied per image on the CPU (torchvision on PIL images), configured
as lightly's CIFAR-10 benchmark does (``cifar10_benchmark.py`` of the benchmarks in lightly's
documentation, github.com/lightly-ai/lightly: ``SimCLRTransform(input_size=32, cj_strength=0.5,
gaussian_blur=0.0)``, ImageNet normalisation, as ours). The run folder is the one ``saliency-ssl
pretrain`` writes (``backbone.pt``, ``history.json``, ``checkpoint.pt``, ``run.json``, ``tb/``),
so ``saliency-ssl evaluate`` reads it; ``run.json`` records the views among the run's settings
(``views``), so a ``saliency-ssl pretrain --resume`` of the folder is refused, and ``backbone.pt``
names its policy ``lightly-simclr``.

The views are drawn in the training process, image by image, from torch's and numpy's global
generators (which the trainer seeds and checkpoints): a run is reproducible from its seed and
resumes exactly. A 64-image batch of two 32 px views costs a few tens of milliseconds of one CPU
core, small beside a ResNet-18 step, so no DataLoader workers are used; ``--stats`` measures it,
and ``history.json`` splits every epoch's seconds into data, augmentation and compute.

The comparison (1,248 steps of 64 on the 10,000-image CIFAR-10 train folder, two seeds; the same
runs of ``default`` with ``saliency-ssl pretrain``), then the evaluation of each run::

    OMP_NUM_THREADS=1 python experiments/lightly_baseline.py --data ../shared/data/cifar10/train \\
        --epochs 8 --batch-size 64 --seed 0 --out runs/baseline/lightly_s0
    OMP_NUM_THREADS=1 saliency-ssl pretrain --data ../shared/data/cifar10/train --method simclr \\
        --policy default --aug-source none --epochs 8 --batch-size 64 --seed 0 --out runs/baseline/default_s0
    saliency-ssl evaluate --backbone runs/baseline/lightly_s0/backbone.pt --train ../shared/data/cifar10/train \\
        --test ../shared/data/cifar10/test --fractions 0.01,0.05,0.1,0.5,1.0 --seeds 3 --protocol linear,knn \\
        --out runs/baseline/lightly_s0/eval

Found (``--stats`` on 2,048 CIFAR-10 train images; results/baseline_augmentation.json): crop scales, aspect ratios,
flip and grey rates come from the same distributions (Kolmogorov-Smirnov p = 0.68 and 0.06), and kornia's
``ColorJitter`` changes colour as torchvision's does (luminance-deviation ratio 0.969 against 0.960, chroma 0.760
against 0.762). kornia's ``ColorJiggle`` clips 0.108 of the values against torchvision's 0.029, so ``default`` uses
``ColorJitter``.

``--stats`` trains nothing: it draws both augmentations on the same images and reports what each
draws and what it does to the pixels, so a difference in accuracy can be explained without
training (:func:`compare_statistics`):

- **geometry** -- RandomResizedCrop scale (crop area / image area) and aspect ratio (width /
  height) of every view, with a two-sample Kolmogorov-Smirnov test, and a chi-square test of the
  two generators' crop sizes over many draws; horizontal-flip rate;
- **colour parameters** -- the rate colour jitter is applied, its drawn brightness, contrast,
  saturation and hue factors, how many application orders one batch uses, the grayscale rate;
- **one colour operation at one factor** -- kornia's ``ColorJiggle`` (which the policy does not use),
  torchvision's ``ColorJitter`` (lightly's) and kornia's ``ColorJitter`` (ours) with the same fixed factor on the same
  images: change of mean luminance, ratio of luminance deviation (contrast), ratio of chroma
  (max - min of RGB, saturation), hue shift, newly clipped values;
- **colour effect** -- the colour part of each pipeline alone (no crop, no flip) on the same
  images, the same measures over all views;
- **resampling** -- our crops' own boxes cut by torchvision from PIL images, against kornia's
  output: mean absolute difference, and the zoom a corner-aligned grid would add;
- **timing** -- milliseconds per batch of two views, for both.

::

    python experiments/lightly_baseline.py --stats --data ../shared/data/cifar10/train --batch-size 64 \\
        --stats-images 2048 --json runs/baseline/augmentation_stats.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from saliencyssl.app.pretrain import PretrainConfig, Pretrainer
from saliencyssl.app.rundir import RunDir, RunExistsError
from saliencyssl.augment.normalize import IMAGENET_MEAN, IMAGENET_STD, from_model_input

#: The policy name ``backbone.pt`` records for a run with lightly's views.
VIEWS_NAME = "lightly-simclr"

#: ``SimCLRTransform``'s settings in lightly's CIFAR-10 benchmark (the other arguments keep their defaults).
BENCHMARK = {"cj_strength": 0.5, "min_scale": 0.08, "gaussian_blur": 0.0}


# -------------------------------------------------------------------------------------------- lightly's views
def lightly_transform(image_size: int = 32, cj_strength: float = 0.5, min_scale: float = 0.08,
                      gaussian_blur: float = 0.0):
    """lightly's ``SimCLRTransform`` as its CIFAR-10 benchmark configures it, normalised as our views are.

    Args:
        image_size: output side ``S`` in pixels (``input_size``).
        cj_strength: colour-jitter strength (brightness, contrast, saturation 0.8 x strength, hue 0.2 x strength).
        min_scale: smallest RandomResizedCrop area, as a fraction of the image.
        gaussian_blur: probability of Gaussian blur (0 at 32 px, as the benchmark).

    Returns:
        ``lightly.transforms.SimCLRTransform``: a PIL image in, a list of two ``(3, S, S)`` float32 views out,
        normalised with ImageNet's mean and deviation (:data:`~saliencyssl.augment.normalize.IMAGENET_MEAN`).
    """
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(input_size=image_size, cj_strength=cj_strength, min_scale=min_scale,
                           gaussian_blur=gaussian_blur,
                           normalize={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})


def to_pil(images: torch.Tensor) -> list:
    """``(B, 3, S, S)`` uint8 RGB (any device) -> B PIL RGB images."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, S, S) uint8 RGB batch, got {tuple(images.shape)} {images.dtype}")
    arrays = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
    return [Image.fromarray(a) for a in arrays]


def lightly_views(images: torch.Tensor, transform: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of a batch from a multi-view transform applied to each image on the CPU.

    Args:
        images: ``(B, 3, S, S)`` uint8 RGB, any device.
        transform: a lightly ``MultiViewTransform`` (PIL image -> two tensors), e.g. :func:`lightly_transform`.

    Returns:
        ``(view_a, view_b)``, each ``(B, 3, S', S')`` float32 on the CPU, as the transform leaves them
        (normalised for the backbone by :func:`lightly_transform`). Image ``i``'s two views are drawn one
        after the other, image by image, from torch's (and for the blur numpy's) global generator.
    """
    pairs = [transform(image) for image in to_pil(images)]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"the transform must give two views per image, got {len(pairs[0])}")
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class _ViewsRunDir(RunDir):
    """A pretraining run folder whose settings also name the views (``views``), so they are compared on resume."""

    def __init__(self, base: RunDir, views: dict, free: dict):
        super().__init__(base.path, base.stage)
        self.views = views
        self.extra_free = free

    def state(self, settings: dict):
        return super().state({**settings, "views": self.views})

    def start(self, settings: dict, free: dict | None = None, resume: bool = False,
              restart_unfinished: bool = False):
        return super().start({**settings, "views": self.views}, {**(free or {}), **self.extra_free}, resume,
                             restart_unfinished)


class LightlyBaselinePretrainer(Pretrainer):
    """:class:`~saliencyssl.app.pretrain.Pretrainer` whose views are lightly's ``SimCLRTransform``, per image on the CPU.

    Everything else is the trainer's own: images (the uint8 batch it gathers), batch order, backbone,
    method, optimizer, schedule, checkpoints, history and ``backbone.pt``.

    Args:
        config: the run; ``policy`` must be ``default`` and ``aug_source`` ``none`` (the policy is not applied,
            only recorded), with a method that needs no targets.
        views: ``SimCLRTransform`` settings replacing :data:`BENCHMARK`'s (``cj_strength``, ``min_scale``,
            ``gaussian_blur``).
        dist_info: as for the trainer (torchrun).
    """

    def __init__(self, config: PretrainConfig, views: dict | None = None, dist_info=None):
        import lightly

        if config.policy != "default" or config.sources != ("none",) or config.reads_targets:
            raise ValueError(f"lightly's views replace the policy's: give policy 'default' and aug_source 'none' "
                             f"with a method that reads no targets (got policy {config.policy!r}, aug_source "
                             f"{config.aug_source!r}, method {config.method!r})")
        unknown = set(views or {}) - set(BENCHMARK)
        if unknown:
            raise ValueError(f"unknown SimCLRTransform settings {sorted(unknown)}; choose from {sorted(BENCHMARK)}")
        options = {**BENCHMARK, **(views or {})}
        self.transform = lightly_transform(config.image_size, **options)
        self.views_setting = {"transform": "lightly.transforms.SimCLRTransform", "input_size": config.image_size,
                              **options}
        self._lightly_version = lightly.__version__
        super().__init__(config, dist_info)

    @property
    def run_dir(self) -> RunDir:
        return self.__dict__["_views_run_dir"]

    @run_dir.setter
    def run_dir(self, value: RunDir) -> None:
        # the trainer makes its RunDir; this one also records (and on resume compares) the views
        if not isinstance(value, _ViewsRunDir):
            value = _ViewsRunDir(value, self.views_setting, {"lightly_version": self._lightly_version})
        self.__dict__["_views_run_dir"] = value

    def _setup(self) -> None:
        super()._setup()
        self.policy = replace(self.policy, name=VIEWS_NAME)  # what backbone.pt records as its policy
        settings = ", ".join(f"{k}={v}" for k, v in self.views_setting.items() if k != "transform")
        self._say(f"views: lightly {self._lightly_version} SimCLRTransform({settings}) per image on the CPU, in "
                  f"place of the kornia views of policy 'default'")

    def make_views(self, index: torch.Tensor, images: torch.Tensor) -> tuple:
        """Two views of the ``(B, 3, S, S)`` uint8 batch from lightly's transform, on the training device."""
        view_a, view_b = lightly_views(images, self.transform)
        return view_a.to(self.device, non_blocking=True), view_b.to(self.device, non_blocking=True)


# ------------------------------------------------------------------------------------------- the statistics
def _luminance(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, H, W)`` Rec. 601 luma (the weights of both grayscale ops)."""
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _chroma(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, H, W)`` max - min of the RGB channels (0 for gray)."""
    return x.amax(1) - x.amin(1)


def _hue(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, H, W)`` HSV hue in radians [0, 2 pi)."""
    import kornia

    return kornia.color.rgb_to_hsv(x)[:, 0]


def colour_measures(source: torch.Tensor, view: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image colour change of ``view`` against ``source``, pixel for pixel (no geometry between them).

    Args:
        source, view: ``(B, 3, H, W)`` float RGB in [0, 1], pixel-aligned.

    Returns:
        ``(B,)`` float64 arrays: ``d_luminance`` (mean luma of the view minus the source's), ``luminance_std_ratio``
        (luma deviation ratio, NaN where the source's is under 0.02), ``chroma_ratio`` (mean chroma ratio, NaN where
        the source's is under 0.02), ``hue_shift`` (chroma-weighted circular mean of the hue change, in turns
        [-0.5, 0.5]; NaN without chroma), ``clipped`` (share of RGB values at 0 or 1 in the view minus in the
        source), ``gray`` (1.0 where the view's chroma is nowhere above 1.5/255 and the source's is somewhere: a
        colour image made gray, by the grayscale operation or by clipping every channel to the same value).
    """
    lum_s, lum_v = _luminance(source).flatten(1), _luminance(view).flatten(1)
    ch_s, ch_v = _chroma(source).flatten(1), _chroma(view).flatten(1)
    std_s = lum_s.std(1)
    mean_ch_s = ch_s.mean(1)
    delta = (_hue(view) - _hue(source)).flatten(1)
    weight = torch.minimum(ch_s, ch_v)
    shift = torch.atan2((weight * delta.sin()).sum(1), (weight * delta.cos()).sum(1)) / (2 * math.pi)
    shift = torch.where(weight.sum(1) > 1e-3, shift, torch.full_like(shift, float("nan")))

    def clipped(x: torch.Tensor) -> torch.Tensor:
        return ((x <= 0.5 / 255) | (x >= 254.5 / 255)).float().flatten(1).mean(1)

    out = {
        "d_luminance": lum_v.mean(1) - lum_s.mean(1),
        "luminance_std_ratio": torch.where(std_s > 0.02, lum_v.std(1) / std_s.clamp_min(1e-6),
                                           torch.full_like(std_s, float("nan"))),
        "chroma_ratio": torch.where(mean_ch_s > 0.02, ch_v.mean(1) / mean_ch_s.clamp_min(1e-6),
                                    torch.full_like(mean_ch_s, float("nan"))),
        "hue_shift": shift,
        "clipped": clipped(view) - clipped(source),
        "gray": ((ch_v.amax(1) <= 1.5 / 255) & (ch_s.amax(1) > 1.5 / 255)).float(),
    }
    return {k: v.double().numpy() for k, v in out.items()}


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean, deviation, min, 5/25/50/75/95 % quantiles and max of the finite values (``n`` of them)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "q05": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]),
            "max": float(v.max())}


def _ks(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from scipy.stats import ks_2samp

    test = ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return {"ks_statistic": float(test.statistic), "ks_pvalue": float(test.pvalue)}


def _kornia_modules(augment) -> dict[str, torch.nn.Module]:
    """The kornia modules of an :class:`~saliencyssl.augment.SSLAugmentation`, by class name."""
    return {type(m).__name__: m for m in augment.augment}


def _torchvision():
    """The torchvision transforms module lightly uses (v2 when present), and whether it is v2."""
    from lightly.transforms.torchvision_v2_compatibility import _TRANSFORMS_V2
    from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T

    return T, _TRANSFORMS_V2


def draw_ours(images: torch.Tensor, batch_size: int, image_size: int) -> dict[str, np.ndarray]:
    """Draw our ``default`` views of ``images`` batch by batch; per view, the parameters kornia drew.

    Returns:
        ``(N,)`` arrays: ``scale``, ``ratio`` (crop width / height), ``flip``, ``jitter`` (applied), the four
        factors (drawn for every view; meaningful where ``jitter``), ``order`` (the batch's order as a string
        such as ``"2103"``, 0 brightness, 1 contrast, 2 saturation, 3 hue), ``batch`` (batch number), ``gray``.
    """
    from saliencyssl.augment import SSLAugmentation

    augment = SSLAugmentation("default", image_size)
    mods = _kornia_modules(augment)
    rows: dict[str, list] = {k: [] for k in ("scale", "ratio", "flip", "jitter", "brightness", "contrast",
                                              "saturation", "hue", "order", "batch", "gray")}
    for number, chunk in enumerate(images.split(batch_size)):
        augment(chunk)
        src = augment.last_crop["src"].double()  # float64, as torchvision's sizes: equal ratios compare equal
        w = src[:, 1, 0] - src[:, 0, 0] + 1
        h = src[:, 2, 1] - src[:, 1, 1] + 1
        rows["scale"] += (w * h / image_size ** 2).tolist()
        rows["ratio"] += (w / h).tolist()
        rows["flip"] += (mods["RandomHorizontalFlip"]._params["batch_prob"] > 0.5).float().tolist()
        jiggle = mods["ColorJitter"]._params
        rows["jitter"] += (jiggle["batch_prob"] > 0.5).float().tolist()
        for key in ("brightness", "contrast", "saturation", "hue"):
            rows[key] += jiggle[f"{key}_factor"].tolist()
        rows["order"] += ["".join(str(int(i)) for i in jiggle["order"])] * len(chunk)
        rows["batch"] += [number] * len(chunk)
        rows["gray"] += (mods["RandomGrayscale"]._params["batch_prob"] > 0.5).float().tolist()
    return {k: np.asarray(v) for k, v in rows.items()}


def draw_lightly(images: torch.Tensor, batch_size: int, image_size: int, options: dict) -> dict[str, np.ndarray]:
    """Draw lightly's views of ``images`` one by one; per view, the parameters torchvision drew.

    The transforms' ``make_params`` are wrapped to record what each draws (torchvision calls it only when
    a random-apply transform fires). Returns the arrays of :func:`draw_ours`; ``order`` is each view's own
    (torchvision draws one per image) and the factors are NaN where jitter was not applied.
    """
    T, v2 = _torchvision()
    if not v2:
        raise RuntimeError("recording lightly's parameters needs torchvision's transforms v2 (torchvision >= 0.16)")
    transform = lightly_transform(image_size, **options)
    view = transform.transforms[0]
    current: dict[str, Any] = {}

    def record(name: str, t) -> None:
        original = t.make_params

        def make_params(flat_inputs):
            params = original(flat_inputs)
            current[name] = params
            return params

        t.make_params = make_params

    for t in view.transform.transforms:
        if isinstance(t, T.RandomResizedCrop):
            record("crop", t)
        elif isinstance(t, T.RandomHorizontalFlip):
            record("flip", t)
        elif isinstance(t, T.RandomGrayscale):
            record("gray", t)
        elif isinstance(t, T.RandomApply):
            for inner in t.transforms:
                if isinstance(inner, T.ColorJitter):
                    record("jitter", inner)
    names = ("scale", "ratio", "flip", "jitter", "brightness", "contrast", "saturation", "hue", "order", "batch",
             "gray")
    rows: dict[str, list] = {k: [] for k in names}
    for number, chunk in enumerate(images.split(batch_size)):
        for image in to_pil(chunk):
            current.clear()
            view(image)
            crop = current["crop"]
            rows["scale"].append(crop["height"] * crop["width"] / image_size ** 2)
            rows["ratio"].append(crop["width"] / crop["height"])
            rows["flip"].append(float("flip" in current))
            rows["gray"].append(float("gray" in current))
            jitter = current.get("jitter")
            rows["jitter"].append(float(jitter is not None))
            for key in ("brightness", "contrast", "saturation", "hue"):
                rows[key].append(float(jitter[f"{key}_factor"]) if jitter is not None else float("nan"))
            rows["order"].append("".join(str(int(i)) for i in jitter["fn_idx"]) if jitter is not None else "")
            rows["batch"].append(number)
    return {k: np.asarray(v) for k, v in rows.items()}


def crop_size_test(image_size: int, draws: int = 100_000, seed: int = 0, min_scale: float = 0.08) -> dict[str, Any]:
    """Do the two RandomResizedCrops draw the same crop sizes? Many draws of each generator, compared cell by cell.

    Our policy's kornia ``RandomResizedCrop`` draws ``draws`` parameter sets in one call; lightly's torchvision
    ``RandomResizedCrop`` (the instance in its view transform) draws them one by one. The ``(width, height)``
    pairs of the two samples are compared with a chi-square test of homogeneity (cells with fewer than 10 draws
    in the two samples together pooled into one).

    Returns:
        ``draws``, ``chi2``, ``dof``, ``pvalue``, ``max_cell_difference`` (largest difference of a cell's share,
        e.g. 0.001 = 0.1 % of the draws), and each side's mean scale and mean ratio.
    """
    from scipy.stats import chi2_contingency

    from saliencyssl.augment import SSLAugmentation

    T, _ = _torchvision()
    torch.manual_seed(seed)
    augment = SSLAugmentation(f"default,min_scale={min_scale}", image_size)
    src = augment.crop_parameters((draws, 3, image_size, image_size))["src"].double()
    ours = np.stack([(src[:, 1, 0] - src[:, 0, 0] + 1).numpy(), (src[:, 2, 1] - src[:, 1, 1] + 1).numpy()], 1)
    crop = next(t for t in lightly_transform(image_size, min_scale=min_scale).transforms[0].transform.transforms
                if isinstance(t, T.RandomResizedCrop))
    probe = [torch.zeros(3, image_size, image_size)]
    theirs = np.array([(p["width"], p["height"]) for p in (crop.make_params(probe) for _ in range(draws))],
                      dtype=np.float64)
    cells = sorted({tuple(c) for c in ours} | {tuple(c) for c in theirs})
    index = {c: i for i, c in enumerate(cells)}
    table = np.zeros((2, len(cells)))
    for row, sample in enumerate((ours, theirs)):
        np.add.at(table[row], [index[tuple(c)] for c in sample], 1)
    common = table.sum(0) >= 10
    pooled = np.concatenate([table[:, common], table[:, ~common].sum(1, keepdims=True)], 1)
    pooled = pooled[:, pooled.sum(0) > 0]
    chi2, pvalue, dof, _ = chi2_contingency(pooled)
    return {"draws": draws, "chi2": float(chi2), "dof": int(dof), "pvalue": float(pvalue),
            "max_cell_difference": float(np.abs(table[0] - table[1]).max() / draws),
            "ours_mean_scale": float((ours[:, 0] * ours[:, 1]).mean() / image_size ** 2),
            "lightly_mean_scale": float((theirs[:, 0] * theirs[:, 1]).mean() / image_size ** 2),
            "ours_mean_ratio": float((ours[:, 0] / ours[:, 1]).mean()),
            "lightly_mean_ratio": float((theirs[:, 0] / theirs[:, 1]).mean())}


def _parameter_report(drawn: dict[str, np.ndarray]) -> dict[str, Any]:
    applied = drawn["jitter"] > 0.5
    orders = [len({o for o, b, a in zip(drawn["order"], drawn["batch"], applied) if b == number and a})
              for number in np.unique(drawn["batch"])]
    return {
        "views": int(len(drawn["scale"])),
        "crop_scale": summarise(drawn["scale"]),
        "crop_ratio": summarise(drawn["ratio"]),
        "crop_log_ratio": summarise(np.log(drawn["ratio"])),
        "crop_whole_image_rate": float(np.mean(drawn["scale"] >= 1.0)),
        "flip_rate": float(drawn["flip"].mean()),
        "jitter_rate": float(applied.mean()),
        **{f"{k}_factor": summarise(drawn[k][applied]) for k in ("brightness", "contrast", "saturation", "hue")},
        "orders_per_batch": summarise(np.asarray(orders, dtype=np.float64)),
        "gray_rate": float(drawn["gray"].mean()),
    }


def _ours_colour_only(image_size: int, jitter: str = "ColorJitter"):
    """Our ``default`` policy without crop and flip; ``jitter="ColorJiggle"`` swaps in kornia's ColorJiggle.

    ColorJiggle is what the policy drew before it followed torchvision; the comparison keeps it to show the
    difference that was fixed.
    """
    import kornia.augmentation as K

    from saliencyssl.augment import SSLAugmentation

    augment = SSLAugmentation("default,crop=0,hflip=0", image_size)
    if jitter == "ColorJiggle":
        for i, m in enumerate(augment.augment):
            if isinstance(m, K.ColorJitter):
                augment.augment[i] = K.ColorJiggle(m.brightness, m.contrast, m.saturation, m.hue, p=m.p)
    return augment


def _lightly_colour_only(image_size: int, options: dict) -> Callable:
    """lightly's view transform without its crop and flips (its own transform objects, in its order)."""
    T, _ = _torchvision()
    view = lightly_transform(image_size, **options).transforms[0]
    kept = [t for t in view.transform.transforms
            if not isinstance(t, (T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomVerticalFlip))]
    return T.Compose(kept)


def _pil_batch(images: torch.Tensor, transform: Callable) -> torch.Tensor:
    """Apply a PIL -> normalised tensor transform per image; ``(B, 3, S, S)`` float in [0, 1]."""
    return from_model_input(torch.stack([transform(image) for image in to_pil(images)]))


def _to_tensor_pil(images: list) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
                        for image in images])


#: One colour operation at fixed factors: (keyword of both libraries, the factors at the ends of our CIFAR range).
SINGLE_OPS = (("brightness", (0.6, 1.4)), ("contrast", (0.6, 1.4)), ("saturation", (0.6, 1.4)), ("hue", (-0.1, 0.1)))


def single_op_effects(images: torch.Tensor, ops=SINGLE_OPS) -> dict[str, dict[str, dict[str, float]]]:
    """One colour operation at one fixed factor, applied by each library to the same images.

    kornia's ``ColorJiggle`` (which the policy does not use), torchvision's ``ColorJitter`` on PIL images (lightly's) and kornia's
    ``ColorJitter`` (torchvision's formulas on tensors) are built with a one-point range (e.g.
    ``brightness=(1.4, 1.4)``) and probability 1.

    Args:
        images: ``(B, 3, S, S)`` uint8 RGB.
        ops: ``(name, factors)`` pairs; names are ``brightness``, ``contrast``, ``saturation``, ``hue``.

    Returns:
        ``{"brightness=1.4": {"kornia ColorJiggle": {measure: mean over images}, "torchvision ColorJitter": ...,
        "kornia ColorJitter": ...}, ...}`` with the measures of :func:`colour_measures` (``gray`` left out).
    """
    import kornia.augmentation as K

    T, _ = _torchvision()
    source = images.float() / 255.0
    pils = to_pil(images)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, factors in ops:
        for f in factors:
            kwargs = {name: (f, f)}
            views = {"kornia ColorJiggle": K.ColorJiggle(**kwargs, p=1.0)(source),
                     "torchvision ColorJitter": _to_tensor_pil([T.ColorJitter(**kwargs)(p) for p in pils]),
                     "kornia ColorJitter": K.ColorJitter(**kwargs, p=1.0)(source)}
            out[f"{name}={f:g}"] = {
                library: {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                          for k, v in colour_measures(source, view).items() if k != "gray"}
                for library, view in views.items()}
    return out


def resampling_difference(images: torch.Tensor, image_size: int) -> dict[str, float]:
    """Our crops' boxes cut by kornia (ours) and by torchvision from PIL (lightly's), compared pixel for pixel.

    Our ``default`` policy without flip and colour draws the crops; each box (corners ``x0..x1``, ``y0..y1``
    inclusive) is cut again by torchvision's ``resized_crop`` on the PIL image (``left = x0``, ``width = x1 - x0
    + 1``, bilinear) and by ``torch.nn.functional.interpolate`` with ``align_corners=False`` (the pixel-centre grid
    PIL uses) on the float slice.

    Returns:
        ``ours_vs_pil`` and ``half_pixel_vs_pil``: mean absolute difference in 0..255 levels over the views
        whose crop is smaller than the image (identical boxes, so only the resampling differs);
        ``corner_zoom``: mean of ``w / (w - 1)`` over those crops, how much narrower a corner-aligned grid
        (kornia's ``align_corners=True``, which the policy does not use) sees than the box, which torchvision samples
        whole; ``cropped_views``: how many were compared.
    """
    import torch.nn.functional as F

    from saliencyssl.augment import SSLAugmentation

    from torchvision.transforms.v2 import functional as TF

    augment = SSLAugmentation("default,hflip=0,jitter=0,gray=0", image_size)
    ours = from_model_input(augment(images))
    src = augment.last_crop["src"].round().long()
    diffs, half, zoom = [], [], []
    for i, image in enumerate(to_pil(images)):
        x0, y0, x1, y1 = (int(v) for v in (src[i, 0, 0], src[i, 0, 1], src[i, 2, 0], src[i, 2, 1]))
        w, h = x1 - x0 + 1, y1 - y0 + 1
        if w == image_size and h == image_size:
            continue
        pil = TF.resized_crop(image, top=y0, left=x0, height=h, width=w, size=[image_size, image_size],
                              interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        theirs = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        box = images[i:i + 1, :, y0:y1 + 1, x0:x1 + 1].float() / 255.0
        centred = F.interpolate(box, size=(image_size, image_size), mode="bilinear", align_corners=False)[0]
        diffs.append(float((ours[i] - theirs).abs().mean()) * 255)
        half.append(float((centred - theirs).abs().mean()) * 255)
        zoom.append(0.5 * (w / max(w - 1, 1) + h / max(h - 1, 1)))
    return {"cropped_views": len(diffs), "ours_vs_pil": float(np.mean(diffs)) if diffs else float("nan"),
            "half_pixel_vs_pil": float(np.mean(half)) if half else float("nan"),
            "corner_zoom": float(np.mean(zoom)) if zoom else float("nan")}


def time_views(images: torch.Tensor, batch_size: int, image_size: int, options: dict,
               repeats: int = 5) -> dict[str, float]:
    """Milliseconds per batch of two views (best of ``repeats``): ours (kornia, CPU) and lightly's (PIL, per image)."""
    from saliencyssl.augment import SSLAugmentation

    batch = images[:batch_size]
    augment = SSLAugmentation("default", image_size)
    transform = lightly_transform(image_size, **options)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * min(times)

    return {"batch_size": len(batch), "torch_threads": torch.get_num_threads(),
            "ours_ms": best(lambda: (augment(batch), augment(batch))),
            "lightly_ms": best(lambda: lightly_views(batch, transform))}


def compare_statistics(images: torch.Tensor, batch_size: int = 64, seed: int = 0, options: dict | None = None,
                       timing: bool = True, crop_draws: int = 100_000) -> dict[str, Any]:
    """Draw both augmentations on ``images`` and report what differs (see the module docstring).

    Args:
        images: ``(N, 3, S, S)`` uint8 RGB.
        batch_size: the training batch (our policy draws some choices once per batch, e.g. the jitter order).
        seed: seeds torch and numpy before each part.
        options: ``SimCLRTransform`` settings replacing :data:`BENCHMARK`'s.
        timing: also time a batch of each.
        crop_draws: draws of each crop generator for :func:`crop_size_test` (0: leave it out).

    Returns:
        A JSON-able dict: ``geometry_and_parameters`` (``ours``, ``lightly``, ``ks`` tests of crop scale and ratio
        over the views, ``crop_sizes``: :func:`crop_size_test`),
        ``single_op`` (:func:`single_op_effects`), ``colour_effect`` (per pipeline, :func:`colour_measures`
        summarised; with ``ours with kornia ColorJitter``), ``resampling`` (:func:`resampling_difference`),
        ``timing`` (:func:`time_views`), and the settings.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected (N, 3, S, S) uint8 RGB images, got {tuple(images.shape)} {images.dtype}")
    options = {**BENCHMARK, **(options or {})}
    size = int(images.shape[-1])

    def seeded() -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)

    seeded()
    ours = draw_ours(images, batch_size, size)
    seeded()
    theirs = draw_lightly(images, batch_size, size, options)
    report: dict[str, Any] = {
        "settings": {"images": int(images.shape[0]), "image_size": size, "batch_size": batch_size, "seed": seed,
                     "lightly": {"transform": "SimCLRTransform", "input_size": size, **options},
                     "ours": "default"},
        "geometry_and_parameters": {
            "ours": _parameter_report(ours), "lightly": _parameter_report(theirs),
            "ks": {"crop_scale": _ks(ours["scale"], theirs["scale"]),
                   "crop_ratio": _ks(ours["ratio"], theirs["ratio"])}},
    }
    if crop_draws > 0:
        report["geometry_and_parameters"]["crop_sizes"] = crop_size_test(size, crop_draws, seed, options["min_scale"])
    seeded()
    report["single_op"] = single_op_effects(images[: min(len(images), 512)])
    source = images.float() / 255.0
    colour: dict[str, dict] = {}
    pipelines = {"ours (kornia ColorJitter)": lambda x: from_model_input(_ours_colour_only(size)(x)),
                 "lightly (torchvision ColorJitter)": lambda x: _pil_batch(x, _lightly_colour_only(size, options)),
                 "kornia ColorJiggle (not used)": lambda x: from_model_input(_ours_colour_only(size, "ColorJiggle")(x))}
    for name, pipeline in pipelines.items():
        seeded()
        views = torch.cat([pipeline(chunk) for chunk in images.split(batch_size)])
        measures = colour_measures(source, views)
        colour[name] = {k: (float(v.mean()) if k == "gray" else summarise(v)) for k, v in measures.items()}
    report["colour_effect"] = colour
    seeded()
    report["resampling"] = resampling_difference(images[: min(len(images), 512)], size)
    if timing:
        seeded()
        report["timing"] = time_views(images, batch_size, size, options)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per measure, ours beside lightly's."""
    lines = []
    s = report["settings"]
    lines.append(f"{s['images']} images of {s['image_size']} px, batches of {s['batch_size']}, seed {s['seed']}; "
                 f"lightly {s['lightly']}")
    g = report["geometry_and_parameters"]
    ours, theirs = g["ours"], g["lightly"]

    def dist(d: dict) -> str:
        return (f"mean {d['mean']:.4f} sd {d['std']:.4f} [q05 {d['q05']:.4f}, median {d['median']:.4f}, "
                f"q95 {d['q95']:.4f}]" if d.get("n") else "-")

    lines.append("parameters drawn                 ours (kornia)                                          "
                 "lightly (torchvision)")
    for key in ("crop_scale", "crop_ratio", "brightness_factor", "contrast_factor", "saturation_factor",
                "hue_factor", "orders_per_batch"):
        lines.append(f"  {key:30} {dist(ours[key]):56} {dist(theirs[key])}")
    for key in ("crop_whole_image_rate", "flip_rate", "jitter_rate", "gray_rate"):
        lines.append(f"  {key:30} {ours[key]:<56.4f} {theirs[key]:.4f}")
    ks = g["ks"]
    lines.append(f"  KS crop scale D={ks['crop_scale']['ks_statistic']:.4f} p={ks['crop_scale']['ks_pvalue']:.3g}; "
                 f"crop ratio D={ks['crop_ratio']['ks_statistic']:.4f} p={ks['crop_ratio']['ks_pvalue']:.3g}")
    if "crop_sizes" in g:
        c = g["crop_sizes"]
        lines.append(f"  crop sizes over {c['draws']} draws each: chi2 {c['chi2']:.1f} on {c['dof']} dof, p={c['pvalue']:.3g}; "
                     f"largest cell difference {100 * c['max_cell_difference']:.3f} % of draws; mean scale "
                     f"{c['ours_mean_scale']:.4f} / {c['lightly_mean_scale']:.4f}, mean ratio {c['ours_mean_ratio']:.4f} / "
                     f"{c['lightly_mean_ratio']:.4f}")
    lines.append("one operation at one factor (mean over images): d_luminance / luminance_std_ratio / chroma_ratio / "
                 "hue_shift (turns) / clipped")
    for op, libraries in report["single_op"].items():
        for library, m in libraries.items():
            lines.append(f"  {op:16} {library:24} {m['d_luminance']:+.4f} / {m['luminance_std_ratio']:.4f} / "
                         f"{m['chroma_ratio']:.4f} / {m['hue_shift']:+.4f} / {m['clipped']:+.4f}")
    lines.append("colour part alone, all views: mean [q05, q95]")
    for name, m in report["colour_effect"].items():
        parts = [f"{k} {m[k]['mean']:+.4f} [{m[k]['q05']:+.4f}, {m[k]['q95']:+.4f}]"
                 for k in ("d_luminance", "luminance_std_ratio", "chroma_ratio", "hue_shift", "clipped")]
        lines.append(f"  {name}: " + "; ".join(parts) + f"; gray {m['gray']:.4f}")
    r = report["resampling"]
    lines.append(f"resampling, same boxes ({r['cropped_views']} crops): ours vs PIL {r['ours_vs_pil']:.2f} "
                 f"levels, half-pixel interpolate vs PIL {r['half_pixel_vs_pil']:.2f} levels; a corner-aligned "
                 f"grid would zoom x{r['corner_zoom']:.4f}")
    if "timing" in report:
        t = report["timing"]
        lines.append(f"timing, two views of {t['batch_size']} images, {t['torch_threads']} torch thread(s): ours "
                     f"{t['ours_ms']:.1f} ms, lightly {t['lightly_ms']:.1f} ms")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.ssl.registry import METHODS, method_class

    methods = sorted(m for m in METHODS if not method_class(m).needs_targets)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image folder (class sub-folders optional) or CIFAR-10 python batches")
    p.add_argument("--out", help="run folder: checkpoint.pt, history.json, tb/, backbone.pt (needed unless --stats)")
    p.add_argument("--epochs", type=int, help="passes over the data (needed unless --stats)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="global batch size (default %(default)s, as saliency-ssl pretrain); with --stats, the batch "
                        "our policy draws per-batch choices over")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, batch order and views (default %(default)s)")
    p.add_argument("--method", default="simclr", choices=methods, help="SSL method (default %(default)s)")
    p.add_argument("--image-size", type=int, default=32, help="training side length (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default %(default)s)")
    p.add_argument("--amp", action="store_true", help="reduced precision, as saliency-ssl pretrain --amp")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the method's recipe)")
    p.add_argument("--limit", type=int, default=None, help="use N images evenly spaced through the set")
    p.add_argument("--knn-train", help="labelled folder: kNN bank for monitoring")
    p.add_argument("--knn-test", help="labelled folder: kNN queries for monitoring")
    p.add_argument("--knn-every", type=int, default=1, help="epochs between kNN evaluations (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--cj-strength", type=float, default=BENCHMARK["cj_strength"],
                   help="SimCLRTransform cj_strength (default %(default)s, lightly's CIFAR-10 benchmark)")
    p.add_argument("--min-scale", type=float, default=BENCHMARK["min_scale"],
                   help="SimCLRTransform min_scale (default %(default)s)")
    p.add_argument("--gaussian-blur", type=float, default=BENCHMARK["gaussian_blur"],
                   help="SimCLRTransform gaussian_blur probability (default %(default)s, off at 32 px)")
    p.add_argument("--stats", action="store_true", help="train nothing: compare the two augmentations' statistics")
    p.add_argument("--stats-images", type=int, default=1024,
                   help="with --stats: images evenly spaced through --data (default %(default)s)")
    p.add_argument("--crop-draws", type=int, default=100_000,
                   help="with --stats: draws of each crop generator compared by a chi-square test (default "
                        "%(default)s; 0 leaves the test out)")
    p.add_argument("--json", help="with --stats: also write the report to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {"cj_strength": args.cj_strength, "min_scale": args.min_scale, "gaussian_blur": args.gaussian_blur}
    if args.stats:
        from saliencyssl.augment import TrainingImages
        from saliencyssl.datasets import open_image_set

        if args.stats_images < 1 or args.batch_size < 1:
            parser.error(f"--stats-images {args.stats_images} and --batch-size {args.batch_size} must be positive")
        try:
            image_set = open_image_set(args.data)
            image_set = image_set.spread(min(args.stats_images, len(image_set)))
            images = TrainingImages(image_set, args.image_size).stack()
        except (OSError, ValueError) as error:
            parser.exit(2, f"error: {error}\n")
        report = compare_statistics(images, args.batch_size, args.seed, options, crop_draws=args.crop_draws)
        report["settings"]["data"] = args.data
        report["settings"]["date"] = time.strftime("%Y-%m-%d")
        report["settings"]["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} " \
                                        f"torch thread(s)"
        print(format_report(report))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2))
            print(f"wrote {args.json}")
        return 0
    missing = [flag for flag, value in (("--out", args.out), ("--epochs", args.epochs)) if value is None]
    if missing:
        parser.error(f"pretraining needs {' and '.join(missing)} (or pass --stats to compare the augmentations only)")
    try:
        config = PretrainConfig(data=args.data, out=args.out, method=args.method, aug_source="none", policy="default",
                                epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                                device=args.device, amp=args.amp, knn_train=args.knn_train, knn_test=args.knn_test,
                                knn_every=args.knn_every, resume=args.resume, seed=args.seed, lr=args.lr,
                                limit=args.limit, progress=not args.quiet)
        trainer = LightlyBaselinePretrainer(config, options)
    except RunExistsError as error:
        advice = ": pass --resume to continue it, choose another --out, or delete the folder" \
            if "already holds" in str(error) else ""
        parser.exit(2, f"error: {error}{advice}\n")
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    from saliencyssl.ssl.distributed import cleanup

    try:
        trainer.run()
    finally:
        cleanup(trainer.dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
