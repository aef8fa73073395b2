"""Variants of the training photos for the surrogate: drawn the same every time, labelled once, kept out of the
held-out split, written inside the run folder, and trained on end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from saliencyssl.app import train_surrogate
from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.embedded import bundled_photos
from saliencyssl.hashing import content_hash
from saliencyssl.imageio import read_image
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.surrogate.model import Surrogate
from saliencyssl.surrogate.pairs import held_out_mask, load_pairs
from saliencyssl.surrogate.variants import (MANIFEST, VariantSpec, make_variants, materialise,
                                            variant_boxes, write_variants)

HASH = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of scikit-image's bundled photos (at most 96 px) and a cache holding their exact targets."""
    root = tmp_path_factory.mktemp("variants")
    images, cache_dir = root / "photos", root / "cache"
    images.mkdir()
    config = LabellerConfig()
    labeller = Labeller(config)
    cache = TargetCache(cache_dir, config.fingerprint(), params=config.params())
    for name, image in bundled_photos(96).items():
        cv2.imwrite(str(images / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cache.put(image, labeller(image))
    cache.close()
    return images, cache_dir


def test_boxes_are_a_function_of_the_pixels_and_lie_inside_the_photo():
    spec = VariantSpec(count=12)
    boxes = variant_boxes(300, 400, HASH, spec)
    assert boxes == variant_boxes(300, 400, HASH, spec)  # the same every time
    assert variant_boxes(300, 400, HASH, VariantSpec(count=5)) == boxes[:5]  # a larger K extends a smaller one
    assert boxes != variant_boxes(300, 400, "f" + HASH[1:], spec)  # another photo, other boxes
    for box in boxes:
        assert 0 <= box.top and box.top + box.height <= 300 and 0 <= box.left and box.left + box.width <= 400
        share = box.height * box.width / (300 * 400)
        assert spec.min_area * 0.97 <= share <= 1.0
        assert 0.74 <= (box.width / box.height) / (400 / 300) <= 1.35  # near the photo's aspect ratio
    assert 0 < sum(box.flip for box in boxes) < len(boxes)
    portrait = variant_boxes(400, 300, HASH, spec)
    assert all(b.height > b.width * 0.95 for b in portrait)  # a portrait photo gives portrait crops


def test_a_variant_keeps_its_aspect_ratio_with_the_shorter_side_at_the_training_size():
    image = np.random.default_rng(0).integers(0, 255, (120, 200, 3), np.uint8)
    box = variant_boxes(120, 200, HASH, VariantSpec(count=1, flip=0.0))[0]
    out = materialise(image, box, 48)
    assert out.dtype == np.uint8 and min(out.shape[:2]) == 48
    assert math.isclose(out.shape[1] / out.shape[0], box.width / box.height, rel_tol=0.05)
    mirrored = materialise(image, type(box)(box.top, box.left, box.height, box.width, True), 48)
    assert np.array_equal(mirrored, out[:, ::-1])


def test_variants_are_deterministic_written_where_asked_and_labelled_once(photos, tmp_path):
    images, cache_dir = photos
    image_set = open_image_set(images)
    pairs = load_pairs(images, cache_dir, 32, progress=False, image_set=image_set)
    spec = VariantSpec(count=2)
    first, summary = make_variants(image_set, pairs, cache_dir, tmp_path / "a" / "variants", spec, workers=0,
                                   progress=False, log=lambda line: None)
    assert summary.labelled == 2 * len(pairs) and not summary.failed
    assert len(first) == 2 * len(pairs) and all(name.startswith("variants/") for name in first.names)
    # The targets are the labeller's of each variant as an image of its own.
    labeller = Labeller(LabellerConfig())
    path = tmp_path / "a" / first.names[0]
    assert TargetCache(cache_dir, pairs.fingerprint).get(content_hash(read_image(path))).equals(
        labeller(read_image(path)))
    # A second run elsewhere writes the same pixels and labels nothing.
    again, summary = make_variants(image_set, pairs, cache_dir, tmp_path / "b" / "variants", spec, workers=0,
                                   progress=False, log=lambda line: None)
    assert summary.labelled == 0 and summary.cached == 2 * len(pairs)
    assert again.hashes == first.hashes
    for name in first.names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = json.loads((tmp_path / "a" / "variants" / MANIFEST).read_text())
    assert manifest["size"] == 32 and manifest["spec"]["count"] == 2 and len(manifest["variants"]) == len(first)
    assert {r["source"] for r in manifest["variants"]} == set(pairs.names)
    # Never inside the image folder, where they would be read as photos next time.
    with pytest.raises(ValueError, match="inside the image folder"):
        write_variants(image_set, [0], pairs.hashes[:1], images / "variants", spec, 32, progress=False)


def _train(photos, out: Path, *extra: str) -> int:
    images, cache_dir = photos
    return train_surrogate.main([str(images), "--cache", str(cache_dir), "--out", str(out), "--size", "32",
                                 "--batch-size", "8", "--ngf", "4", "--ndf", "4", "--held-out", "0.25",
                                 "--workers", "0", "--quiet", *extra])


def test_a_run_trains_on_the_photos_and_their_variants_and_holds_out_photos_only(photos, tmp_path, capsys):
    images, cache_dir = photos
    out = tmp_path / "run"
    assert _train(photos, out, "--variants", "3", "--epochs", "1") == 0
    text = capsys.readouterr().out
    pairs = load_pairs(images, cache_dir, 32, progress=False)
    held = held_out_mask(pairs.hashes, 0.25)
    n_train, n_held = int((~held).sum()), int(held.sum())
    assert n_held >= 1 and f"{3 * n_train} variants" in text
    # The variants are in the run folder, of the training photos only: no crop of a held-out photo is trained on.
    manifest = json.loads((out / "variants" / MANIFEST).read_text())
    sources = {r["source_hash"] for r in manifest["variants"]}
    assert sources == {h for h, m in zip(pairs.hashes, held) if not m}
    assert not list(images.rglob("*_v0*.png"))
    meta = Surrogate.load(out / "surrogate.pt").meta
    assert meta["n_train"] == 4 * n_train and meta["n_held_out"] == n_held and meta["n_variant_pairs"] == 3 * n_train
    assert meta["held_out_hashes_digest"] is not None
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["variants"]["count"] == 3 and record["finished"]
    # Resuming goes on with the same variants (nothing labelled); other variants are another run.
    assert _train(photos, out, "--variants", "3", "--epochs", "2", "--resume") == 0
    assert "labelled 0 now" in capsys.readouterr().out
    assert _train(photos, out, "--variants", "4", "--epochs", "3", "--resume") == 2
    assert "variants" in capsys.readouterr().err
    # Without variants the record has no variants key (as runs made before them).
    assert _train(photos, tmp_path / "plain", "--epochs", "1") == 0  # 32 px: the default is none
    assert "variants" not in json.loads((tmp_path / "plain" / "run.json").read_text())["settings"]
    assert not (tmp_path / "plain" / "variants").exists()
    assert _train(photos, tmp_path / "bad", "--variants", "-1") == 2
    assert "--variants -1" in capsys.readouterr().err
