"""More exact pairs from the same photos: crops, rescales and mirrors, each labelled as an image of its own.

A folder of 1,295 photos gives the surrogate 1,295 exact pairs, and a network that sees so few
learns them by heart. The exact labeller is deterministic and cheap on small images (tens of
milliseconds at 96 px against seconds on the original photo), so every photo can give more: K
*variants* per photo, each a random crop of it (the crop's area a share in ``[min_area,
max_area]`` of the photo's, its aspect ratio the photo's times a factor drawn log-uniformly from
``ratio``), brought to the training size and mirrored at random, written as a PNG and labelled by
the cache's own labeller *as an image of its own* (not cut out of the original's target: the
labeller's answer depends on the whole image it sees, its borders above all, so a crop of the
original's target is not an exact target of the crop). The network then learns the labeller on
K + 1 pairs per photo; this is the idea of data distillation (Radosavovic et al., "Data
Distillation: Towards Omni-Supervised Learning", CVPR 2018: a fixed teacher labels transformed
copies of unlabelled images to train a student), here with a handcrafted teacher as in USD (Zhang
et al., CVPR 2018) and DeepUSPS (Nguyen et al., NeurIPS 2019), which distil handcrafted saliency
into a network.

**Sampling** follows torchvision's ``RandomResizedCrop`` (Szegedy et al., "Going Deeper with
Convolutions", 2015; ``torchvision.transforms.RandomResizedCrop.get_params``: up to ten draws of
area and log-uniform ratio, then the whole image), with two departures: the ratio is relative to
the photo's own aspect ratio (a portrait photo gives portrait crops), and the crop is not squashed
to a square. It is resized so that its *shorter side* is the training size ``S`` (area
interpolation when shrinking, bicubic when enlarging, as :func:`~saliencyssl.datasets.fit_square`)
and keeps its aspect ratio, so the labeller sees a whole rectangular photo with its borders, as it
saw the original, and the training pairs take its centre square exactly as they take the
original's (:func:`~saliencyssl.surrogate.pairs.load_pairs`). Half the variants (``flip``) are
mirrored left-right. Together the crops zoom by 1 to ``1 / sqrt(min_area)`` (1.8x at 0.3), shift
the view, and show the labeller each scene at a lower resolution than the original.

**Determinism.** The boxes of a photo are drawn from one generator seeded by ``(seed, the photo's
content hash)``, in order, so a photo's variants depend only on its pixels, the spec and ``S``
(not on its name, the folder, the order or the training seed), and the first K of a larger K are
the same. A variant's file name carries the photo's content hash and its index; written files are
kept, and the labels go into the content-hashed target cache, so a second run with the same
variants writes and labels nothing.

**Where.** The PNGs go to a folder the caller names (the surrogate's stage: ``RUN_DIR/variants/``),
never into the image folder (they would be taken for photos next time), with ``variants.json``
beside them: the spec, ``S``, and each variant's source photo, box and mirror.

**Held-out images.** Variants are made of the training photos only; the held-out photos (chosen
by content hash, :func:`~saliencyssl.surrogate.pairs.held_out_mask`) give none, so no crop of a
held-out photo is trained on and the held-out score that picks the epoch stays honest.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from saliencyssl.datasets import ImageSet
from saliencyssl.files import replace_file
from saliencyssl.saliency.labeller import LabellerConfig

#: Variants per photo of a :class:`VariantSpec` built without a count. The surrogate's stage makes
#: none unless asked (``--variants K``): on 1,295 photos at 96 px and equal wall time (15 minutes,
#: about 1,500 steps either way), 8 variants a photo left the F-measure against human masks where
#: it was, lowered the saliency MAE and lowered the mask IoU (docs/findings.md), for several minutes
#: of labelling.
DEFAULT_VARIANTS = 8

#: The most variants per photo a run may ask for (each is a PNG on disk and a labelling).
MAX_VARIANTS = 256

#: Name of the record written beside the variants.
MANIFEST = "variants.json"

#: Version of the sampling; part of :meth:`VariantSpec.settings` (a change gives other variants).
SAMPLER_VERSION = 1


@dataclass(frozen=True)
class VariantSpec:
    """How the variants of a photo are drawn.

    Attributes:
        count: variants per photo (``K``; 0: none).
        min_area, max_area: the crop's area as a share of the photo's, drawn uniformly in this range.
        ratio: the crop's aspect ratio (width / height) relative to the photo's, drawn log-uniformly
            in this range.
        flip: probability of mirroring a variant left-right.
        seed: seeds the boxes (with each photo's content hash).

    Raises:
        ValueError: a value out of range (it names the field).
    """

    count: int = DEFAULT_VARIANTS
    min_area: float = 0.3
    max_area: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or \
                not 0 <= self.count <= MAX_VARIANTS:
            raise ValueError(f"variant count {self.count!r}: give 0 (none) to {MAX_VARIANTS} variants per image")
        if not 0.0 < self.min_area <= self.max_area <= 1.0:
            raise ValueError(f"variant crop area {self.min_area}-{self.max_area}: need 0 < min <= max <= 1 (a share "
                             f"of the photo's area)")
        low, high = (float(r) for r in self.ratio)
        if not 0.0 < low <= 1.0 <= high:
            raise ValueError(f"variant aspect ratio range {self.ratio}: need 0 < low <= 1 <= high (relative to the "
                             f"photo's)")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"variant mirror probability {self.flip}: give a probability in [0, 1]")
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "ratio", (low, high))

    def settings(self) -> dict:
        """The spec as plain values (for a run record): everything that decides which variants are made."""
        return {"sampler": SAMPLER_VERSION, **asdict(self), "ratio": list(self.ratio)}


@dataclass(frozen=True)
class VariantBox:
    """Where a variant comes from: a ``height x width`` box at ``(top, left)`` of the photo, mirrored or not."""

    top: int
    left: int
    height: int
    width: int
    flip: bool

    def as_dict(self) -> dict:
        return asdict(self)


def photo_generator(image_hash: str, seed: int = 0) -> np.random.Generator:
    """The generator of a photo's boxes: seeded by ``seed`` and the first 64 bits of its content hash."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_hash[:16], 16), SAMPLER_VERSION]))


def variant_boxes(height: int, width: int, image_hash: str, spec: VariantSpec) -> list[VariantBox]:
    """The ``spec.count`` boxes of a ``height x width`` photo with content hash ``image_hash``.

    Each box: up to ten draws of an area share (uniform in ``[min_area, max_area]``) and a ratio
    (the photo's ``width / height`` times a log-uniform factor in ``ratio``) until the box fits the
    photo, at a uniform position; after ten misses the whole photo. Then a mirror with probability
    ``flip``. The boxes of a larger count begin with those of a smaller one.
    """
    if height < 1 or width < 1:
        raise ValueError(f"a photo of {height}x{width} pixels has no crops")
    rng = photo_generator(image_hash, spec.seed)
    area, aspect = float(height * width), width / height
    log_low, log_high = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    boxes = []
    for _ in range(spec.count):
        box = (0, 0, height, width)
        for _attempt in range(10):
            share = rng.uniform(spec.min_area, spec.max_area)
            ratio = aspect * math.exp(rng.uniform(log_low, log_high))
            w = int(round(math.sqrt(area * share * ratio)))
            h = int(round(math.sqrt(area * share / ratio)))
            if 0 < w <= width and 0 < h <= height:
                box = (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)
                break
        boxes.append(VariantBox(*box, flip=bool(rng.random() < spec.flip)))
    return boxes


def materialise(image: np.ndarray, box: VariantBox, size: int) -> np.ndarray:
    """The variant of ``image`` (``(H, W, 3)`` uint8) for ``box``: cropped, its shorter side brought to
    ``size`` (area interpolation when shrinking, bicubic when enlarging; aspect ratio kept), mirrored
    if the box says so. Returns ``(h, w, 3)`` uint8 with ``min(h, w) == size``."""
    import cv2

    crop = image[box.top:box.top + box.height, box.left:box.left + box.width]
    scale = size / min(box.height, box.width)
    h, w = max(size, int(round(box.height * scale))), max(size, int(round(box.width * scale)))
    if (h, w) != crop.shape[:2]:
        crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if box.flip:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def variant_name(image_hash: str, index: int) -> str:
    """File name of variant ``index`` of the photo with ``image_hash``: ``<hash>_v<index>.png``."""
    return f"{image_hash}_v{index:02d}.png"


def write_variants(image_set: ImageSet, indices: Sequence[int], hashes: Sequence[str], out_dir: str | Path,
                   spec: VariantSpec, size: int, progress: bool = True) -> list[Path]:
    """Write the variants of the photos ``image_set[indices]`` (content hashes ``hashes``) into ``out_dir``.

    Files already there are kept (their names carry the photo's hash and the index; the folder
    belongs to one spec and size, which the caller's run record guarantees), so a photo whose
    variants all exist, and whose shape ``variants.json`` recorded, is not even decoded. Each file
    is written under a temporary name and renamed, so a run killed while writing leaves whole
    files only. ``out_dir/variants.json`` records the spec, the size and each variant's source and box.

    Returns:
        The ``len(indices) * spec.count`` variant paths, photo by photo.

    Raises:
        ValueError: ``out_dir`` is inside the image folder (the variants would be read as photos).
        OSError: a variant cannot be written.
    """
    import cv2
    from tqdm import tqdm

    out = Path(out_dir)
    if out.resolve().is_relative_to(Path(image_set.root).resolve()):
        raise ValueError(f"the variants folder {out} is inside the image folder {image_set.root}: they would be "
                         f"taken for photos next time; write them elsewhere (the run folder)")
    out.mkdir(parents=True, exist_ok=True)
    known = _recorded_shapes(out / MANIFEST)
    paths: list[Path] = []
    records = []
    bar = tqdm(list(zip(indices, hashes)), desc=f"variants at {size}px", unit="photo", disable=not progress,
               leave=False)
    for i, image_hash in bar:
        mine = [out / variant_name(image_hash, j) for j in range(spec.count)]
        paths += mine
        missing = [not p.is_file() for p in mine]
        image = None
        if any(missing) or image_hash not in known:
            image = image_set.image(int(i))
            known[image_hash] = image.shape[:2]
        shape = known[image_hash]
        for path, box, needed in zip(mine, variant_boxes(shape[0], shape[1], image_hash, spec), missing):
            if needed:
                ok, data = cv2.imencode(".png", cv2.cvtColor(materialise(image, box, size), cv2.COLOR_RGB2BGR))
                if not ok:
                    raise OSError(f"cannot encode the variant {path.name} as PNG")
                replace_file(path, data.tobytes())
            records.append({"name": path.name, "source": image_set.names[int(i)], "source_hash": image_hash,
                            "source_shape": [int(v) for v in shape], **box.as_dict()})
    manifest = {"spec": spec.settings(), "size": int(size), "variants": records}
    replace_file(out / MANIFEST, json.dumps(manifest, indent=1))
    return paths


def _recorded_shapes(manifest: Path) -> dict[str, tuple[int, int]]:
    """Source shapes by content hash from an earlier ``variants.json`` (empty when there is none or it is damaged)."""
    try:
        records = json.loads(manifest.read_text()).get("variants", [])
        return {r["source_hash"]: (int(r["source_shape"][0]), int(r["source_shape"][1])) for r in records}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {}


def label_variants(paths: Sequence[Path], root: str | Path, cache_dir: str | Path, config: LabellerConfig,
                   workers: int | None = None, progress: bool = True):
    """Label the variant files ``paths`` (below ``root``) into the cache at ``cache_dir`` with ``config``.

    :func:`saliencyssl.cache.labelling.label_folder` in ``workers`` processes (``None``: one per
    CPU, as ``saliency-ssl label``; 0: this process): images the cache holds are skipped, so a
    second call labels nothing.

    Returns:
        The :class:`~saliencyssl.cache.labelling.LabelSummary`.
    """
    from saliencyssl.cache import TargetCache
    from saliencyssl.cache.executors import default_workers, make_executor
    from saliencyssl.cache.labelling import label_folder

    with (TargetCache(cache_dir, config.fingerprint(), params=config.params()) as cache,
          make_executor(default_workers() if workers is None else workers) as executor):
        return label_folder(root, cache, config, executor=executor, progress=progress, paths=list(paths))


def make_variants(image_set: ImageSet, train, cache_dir: str | Path, out_dir: str | Path, spec: VariantSpec,
                  workers: int | None = None, progress: bool = True, log: Callable[[str], None] = print):
    """Variants of the training photos as exact pairs: written, labelled, read back.

    Args:
        image_set: the photos' folder, opened (:func:`~saliencyssl.datasets.open_image_set`).
        train: the training :class:`~saliencyssl.surrogate.pairs.PairSet` of those photos (held-out
            photos excluded); its names index ``image_set``, its fingerprint and labeller parameters
            say which labeller labels the variants.
        cache_dir: the target cache the photos were labelled into (the variants' targets go there).
        out_dir: where the PNGs are written (not inside the image folder).
        spec: :class:`VariantSpec`.
        workers: labelling processes (``None``: one per CPU; 0: this process).
        progress: progress bars.
        log: where the summary line goes.

    Returns:
        ``(pairs, summary)``: the variants' :class:`~saliencyssl.surrogate.pairs.PairSet` at
        ``train.image_size`` (names ``variants/<file>``) and the labelling summary.

    Raises:
        ValueError: the cache records no parameters for the fingerprint (the labeller cannot be
            rebuilt), or every variant failed to label.
    """
    from saliencyssl.surrogate.pairs import PairSet, load_pairs

    params = train.labeller_params
    if not params:
        raise ValueError(f"the cache {cache_dir} records no labeller parameters for fingerprint {train.fingerprint}, "
                         f"so its variants cannot be labelled alike; give the labeller options the photos were "
                         f"labelled with")
    config = LabellerConfig.from_params(params)
    if config.fingerprint() != train.fingerprint:
        raise ValueError(f"the labeller parameters recorded for fingerprint {train.fingerprint} give fingerprint "
                         f"{config.fingerprint()} (another labeller version); label the photos again with this "
                         f"version")
    position = {name: i for i, name in enumerate(image_set.names)}
    indices = [position[name] for name in train.names]
    out = Path(out_dir)
    paths = write_variants(image_set, indices, train.hashes, out, spec, train.image_size, progress=progress)
    summary = label_variants(paths, out, cache_dir, config, workers=workers, progress=progress)
    log(f"variants: {len(paths)} ({spec.count} of each of {len(train)} training photos) in {out}; labelled "
        f"{summary.labelled} now ({summary.seconds_per_image * 1000:.0f} ms each), {summary.cached} already cached, "
        f"{len(summary.failed)} failed")
    if summary.failed:
        log("  " + "; ".join(f"{p}: {why}" for p, why in summary.failed[:3]))
    from saliencyssl.datasets import open_image_set

    variant_set = open_image_set(out)
    pairs = load_pairs(out, cache_dir, train.image_size, fingerprint=train.fingerprint, progress=progress,
                       image_set=variant_set)
    wanted = {p.name for p in paths}
    keep = [k for k, name in enumerate(pairs.names) if Path(name).name in wanted]
    if len(keep) != len(pairs):
        pairs = pairs.subset(keep)
    if not len(pairs):
        raise ValueError(f"none of the {len(paths)} variants in {out} could be labelled; see the failures above")
    return PairSet(pairs.images, pairs.targets, pairs.hashes, [f"variants/{n}" for n in pairs.names],
                   pairs.image_size, pairs.fingerprint, pairs.labeller_params, []), summary


__all__ = ["VariantSpec", "VariantBox", "DEFAULT_VARIANTS", "MANIFEST", "variant_boxes",
           "materialise", "variant_name", "write_variants", "label_variants", "make_variants",
           "photo_generator"]
