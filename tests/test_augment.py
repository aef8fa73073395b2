"""The router, the frozen pack, the view renderer and the policies, on real labelled images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from saliencyssl.app.options import missing_piece_advice
from saliencyssl.augment import (PRESETS, CachedTargets, FrozenPack, MissingPieceError, SaliencyView,
                                 SSLAugmentation, TargetPredictor, TargetRouter, TrainingImages, parse_policy,
                                 parse_sources, target_at_size)
from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.embedded import write_embedded_dataset
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.target import Target, TargetBatch

SIZE = 48


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Generated shape images (12) plus two real photo crops, all labelled except the last three."""
    import skimage.data

    root = tmp_path_factory.mktemp("aug")
    paths = write_embedded_dataset(root / "data", per_class_train=3, per_class_test=0, size=SIZE, photos=False)
    photo_dir = paths["train"] / "photo"
    photo_dir.mkdir()
    Image.fromarray(skimage.data.chelsea()[::3, ::3]).save(photo_dir / "chelsea.png")
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(photo_dir / "coffee.png")
    image_set = open_image_set(paths["train"])
    labeller = Labeller()
    cache = TargetCache(root / "cache", labeller.fingerprint)
    for i in range(len(image_set) - 3):
        cache.put(image_set.image(i), labeller(image_set.image(i)))
    return {"set": image_set, "cache": cache, "labeller": labeller, "root": root, "data": paths["train"]}


class StandIn:
    """A stand-in surrogate: every prediction is a full mask with one region, saliency 0.5."""

    def __init__(self, image_size: int, fingerprint: str):
        self.image_size, self.fingerprint, self.calls = image_size, fingerprint, []

    def predict(self, images: torch.Tensor) -> TargetBatch:
        self.calls.append(images.shape[0])
        b, _, h, w = images.shape
        return TargetBatch(torch.full((b, 1, h, w), 0.5), torch.ones(b, 1, h, w, dtype=torch.bool),
                           torch.zeros(b, 1, h, w, dtype=torch.long))


def test_policy_presets_and_free_probabilities():
    for name in PRESETS:
        config = parse_policy(name)
        assert config.uses_saliency == config.uses_targets == name.startswith(("sal", "comp"))
    sal = parse_policy("sal")
    assert sal.saliency == 1.0 and sal.crop == sal.jitter == sal.hflip == 0.0
    assert parse_policy("sal0.5+default").saliency == 0.5 and parse_policy("sal0.5+default").crop == 1.0
    j = parse_policy("sal0.8+jitter0.8")
    assert (j.saliency, j.jitter, j.crop) == (0.8, 0.8, 0.0)
    free = parse_policy("sal0.3+default,vflip=0.5,rotation=0.25,view=cut")
    assert (free.saliency, free.vflip, free.rotation, free.view) == (0.3, 0.5, 0.25, "cut")
    guided = parse_policy("salcrop+default,alpha=0.5,crop_box=rc")
    assert (guided.guided_crop, guided.alpha, guided.crop_box, guided.crop, guided.saliency) == (1.0, 0.5, "rc", 1.0, 0)
    assert parse_policy("salcrop").crop == 1.0 and parse_policy("salcrop0.5+default").guided_crop == 0.5
    comp = parse_policy("comp0.3+default,bg=swap,feather=0")
    assert (comp.saliency, comp.view, comp.bg, comp.feather, comp.crop) == (0.3, "composite", "swap", 0.0, 1.0)
    assert parse_policy("comp0.3+default").bg == "grey" and parse_policy("comp0.3+default").feather_p == 0.5
    for bad, message in (("salt", "unknown policy part"), ("sal1.5", "probability"), ("default,zoom=1", "unknown policy key"),
                         ("default,view=blobs", "view"), ("sal,blur=high", "'sal,blur=high': blur='high' is not a number"),
                         ("sal+comp0.3", "use one"), ("salcrop+default,crop=0", "crop=0"),
                         ("salcrop+default,alpha=0", "alpha must be > 0"), ("comp0.3,bg=noise", "bg must be one of"),
                         ("salcrop,crop_box=hc", "crop_box must be one of")):
        with pytest.raises(ValueError, match=message):
            parse_policy(bad)


def test_source_orders():
    assert parse_sources("cache, surrogate") == ("cache", "surrogate")
    with pytest.raises(ValueError, match="choose one of"):
        parse_sources("surrogate,cache")


def test_training_images_hash_only_when_asked(labelled):
    """Every pretraining run hashed its whole set, one decode of every image more, even a run without targets."""
    fresh = open_image_set(labelled["data"], keep_decoded=False)
    images = TrainingImages(fresh, SIZE)
    assert images.stack().shape == (len(fresh), 3, SIZE, SIZE) and fresh._hashes is None
    assert images.hashes == labelled["set"].hashes() and fresh._hashes is not None


@pytest.mark.slow
def test_pack_reports_hits_and_misses_and_gathers_cache_targets(labelled):
    images = TrainingImages(labelled["set"], SIZE)
    pack = FrozenPack.build(images.hashes, labelled["cache"], SIZE)
    n = len(images)
    assert (pack.report.hits, pack.report.misses) == (n - 3, 3)
    assert pack.report.missing_indices == [n - 3, n - 2, n - 1]
    batch = pack.gather(torch.tensor([0, n - 4]))
    for row, index in enumerate((0, n - 4)):
        expected = target_at_size(labelled["cache"].get(images.hashes[index]), SIZE)
        assert torch.equal(batch.mask[row, 0], torch.from_numpy(expected.mask))
        assert torch.allclose(batch.saliency[row, 0] * 255, torch.from_numpy(expected.saliency).float())
    # A labeller-parameter change makes every old entry a miss.
    other = TargetCache(labelled["root"] / "cache", LabellerConfig(scale=2.0).fingerprint())
    assert FrozenPack.build(images.hashes, other, SIZE).report.hits == 0


def test_router_sources(labelled):
    images = TrainingImages(labelled["set"], SIZE)
    x = images.stack()
    n = len(images)
    pack = FrozenPack.build(images.hashes, labelled["cache"], SIZE)
    indices = torch.tensor([n - 1, 0, n - 2, 1])

    only_cache = TargetRouter("cache", SIZE, pack=pack)
    with pytest.raises(MissingPieceError, match=r"3 of \d+ images miss") as error:
        only_cache.check_ready()
    assert error.value.piece == "misses" and error.value.data["count"] == 3
    advice = missing_piece_advice(error.value, "my/images", "my/cache", LabellerConfig(), SIZE)
    assert "saliency-ssl label my/images --cache my/cache" in advice
    with pytest.raises(MissingPieceError, match="2 of 4 images of this batch miss"):
        only_cache.targets(indices, x[indices])

    with pytest.raises(MissingPieceError, match="need a surrogate"):
        TargetRouter("cache,surrogate", SIZE, pack=pack).check_ready()
    with pytest.raises(MissingPieceError, match="need a cache"):
        TargetRouter("cache", SIZE).check_ready()
    with pytest.raises(MissingPieceError, match="fingerprint"):
        TargetRouter("cache,surrogate", SIZE, pack=pack, surrogate=StandIn(SIZE, "0" * 16)).check_ready()
    with pytest.raises(MissingPieceError, match=rf"trained on {2 * SIZE}px") as error:
        TargetRouter("cache,surrogate", SIZE, pack=pack, surrogate=StandIn(2 * SIZE, pack.fingerprint)).check_ready()
    assert f"--size {SIZE}" in missing_piece_advice(error.value, "d", "c", None, SIZE)

    stand_in = StandIn(SIZE, pack.fingerprint)
    assert isinstance(stand_in, TargetPredictor)
    router = TargetRouter("cache,surrogate", SIZE, pack=pack, surrogate=stand_in)
    router.check_ready()
    out = router.targets(indices, x[indices])
    assert stand_in.calls == [2], "the misses of a batch go to the surrogate in one call"
    assert out.mask[0].all() and out.mask[2].all(), "misses come from the surrogate, in batch order"
    cached0 = pack.gather(torch.tensor([0]))
    assert torch.equal(out.mask[1], cached0.mask[0]) and torch.equal(out.regions[1], cached0.regions[0])
    counters = router.reset_counters()
    assert (counters.images, counters.cache_hits, counters.surrogate_calls, counters.surrogate_images) == (4, 2, 1, 2)
    assert router.counters.images == 0

    assert TargetRouter("none", SIZE).targets(indices, x[indices]) is None
    surrogate_only = TargetRouter("surrogate", SIZE, surrogate=StandIn(SIZE, pack.fingerprint))
    assert surrogate_only.targets(indices, x[indices]).mask.all()


def test_cache_exact_writes_back_so_the_next_epoch_hits(labelled, tmp_path):
    images = TrainingImages(labelled["set"], SIZE)
    x = images.stack()
    n = len(images)
    cache = TargetCache(tmp_path / "c", labelled["labeller"].fingerprint)
    for i in range(n - 3):
        cache.put_encoded(images.hashes[i], labelled["cache"].get_encoded(images.hashes[i]))
    pack = FrozenPack.build(images.hashes, cache, SIZE)
    assert pack.report.misses == 3
    router = TargetRouter("cache,exact", SIZE, pack=pack, labeller=labelled["labeller"], image_set=labelled["set"],
                          cache=cache)
    router.check_ready()
    indices = torch.tensor([n - 1, 3, n - 2])
    first = router.targets(indices, x[indices])
    assert router.counters.exact_images == 2 and router.counters.cache_hits == 1
    assert cache.get(images.hashes[n - 1]) is not None, "written back to the cache"
    assert pack.report.misses == 1
    router.reset_counters()
    second = router.targets(indices, x[indices])
    assert router.counters.cache_hits == 3 and router.counters.exact_images == 0
    assert torch.equal(first.mask, second.mask) and torch.equal(first.saliency, second.saliency)
    exact = TargetRouter("exact", SIZE, labeller=labelled["labeller"], image_set=labelled["set"])
    assert torch.equal(exact.targets(indices, x[indices]).mask, first.mask)


def _batch(labelled, count=6):
    images = TrainingImages(labelled["set"], SIZE)
    pack = FrozenPack.build(images.hashes, labelled["cache"], SIZE)
    index = torch.arange(len(images) - 3 - count, len(images) - 3)  # includes the two photos
    return images.stack()[index].float() / 255, pack.gather(index)


def test_segments_view_paints_regions_with_permuted_palette(labelled):
    images, targets = _batch(labelled)
    view = SaliencyView("segments", p=1.0)
    g = torch.Generator().manual_seed(0)
    params = view.generate_parameters(len(images), generator=g)
    a = view(images, targets, params)
    b = view(images, targets, view.generate_parameters(len(images), generator=g))
    assert a.shape == images.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a, b), "palette permuted and jittered per view"
    for i in range(len(images)):
        regions, mask = targets.regions[i, 0], targets.mask[i, 0]
        colours = a[i].permute(1, 2, 0)
        for r in regions.unique()[:5]:
            for part in (mask, ~mask):  # within a region, one colour on each side of the mask
                sel = (regions == r) & part
                if sel.sum() > 1:
                    assert torch.allclose(colours[sel], colours[sel][0].expand_as(colours[sel]), atol=1e-6)
    # The background is the same painting dimmed by the view's factor; the object keeps its colours.
    everything = TargetBatch(targets.saliency, torch.ones_like(targets.mask), targets.regions)
    undimmed = view(images, everything, params)
    dim = params["dim"].view(-1, 1, 1, 1)
    assert (params["dim"] < 1).all() and targets.mask.any() and (~targets.mask).any()
    assert torch.allclose(a, torch.where(targets.mask, undimmed, undimmed * dim), atol=1e-6)
    # Regions in different palette slots get different colours.
    for i in range(len(images)):
        colours = undimmed[i].permute(1, 2, 0)
        first = {int(r): colours[targets.regions[i, 0] == r][0] for r in targets.regions[i, 0].unique()[:6]}
        slots = {r % view.palette.shape[0] for r in first}
        assert len({tuple(c.tolist()) for c in first.values()}) == len(slots)


def test_cut_and_saliency_views(labelled):
    images, targets = _batch(labelled)
    cut = SaliencyView("cut", p=1.0)(images, targets)
    for i in range(len(images)):
        m = targets.mask[i, 0]
        if m.any():
            assert torch.equal(cut[i][:, m], images[i][:, m])
            outside = cut[i][:, ~m]
            assert torch.allclose(outside, outside[:, :1].expand_as(outside))
    empty = TargetBatch(targets.saliency, torch.zeros_like(targets.mask), targets.regions)
    assert torch.equal(SaliencyView("cut")(images, empty), images), "no object: the image stays"
    grey = SaliencyView("saliency")(images, targets)
    assert torch.equal(grey[:, 0:1], targets.saliency) and torch.equal(grey[:, 0], grey[:, 2])


def test_one_renderer_for_cache_and_surrogate_layouts(labelled):
    """A target from the cache and the same target through the surrogate's channel layout
    render the same partition into segments."""
    images, targets = _batch(labelled)
    via_channels = TargetBatch.from_channels(targets.channels())
    palette = torch.rand(64, 3, generator=torch.Generator().manual_seed(3))
    view = SaliencyView("segments", p=1.0, gain_jitter=0.0, palette=palette)
    params = view.generate_parameters(len(images), generator=torch.Generator().manual_seed(1))
    a, b = view(images, targets, params), view(images, via_channels, params)
    for i in range(len(images)):
        edge = targets.channels()[i, 2] > 0.5
        ca = a[i].permute(1, 2, 0)[~edge]
        cb = b[i].permute(1, 2, 0)[~edge]
        # Off the boundary, pixels that share a colour through the channel layout share it from
        # the cache too (regions split into 4-connected parts may get two colours; both layouts
        # number regions 0..R-1, and R stays within the palette here, so no two regions collide).
        assert via_channels.regions[i].unique().numel() <= 64
        same_a = (ca[:, None] == ca[None]).all(-1)
        same_b = (cb[:, None] == cb[None]).all(-1)
        assert not (same_b & ~same_a).any()
        assert same_b.sum() >= 0.8 * same_a.sum()


def test_policy_applies_saliency_before_geometry(labelled):
    from saliencyssl.ssl.backbone import to_model_input

    images, targets = _batch(labelled)
    # The view is rendered from the target of the image as it is, then flipped with it: the flipped
    # cut, not a cut of the flipped image with the unflipped mask.
    flip_after = SSLAugmentation("sal,hflip=1,view=cut", SIZE)
    torch.manual_seed(0)
    out = flip_after(images, targets)
    torch.manual_seed(0)
    expected = to_model_input(flip_after.saliency(images, targets).flip(-1))
    assert torch.allclose(out, expected, atol=1e-5)
    torch.manual_seed(0)
    assert not torch.allclose(out, to_model_input(flip_after.saliency(images.flip(-1), targets)),
                              atol=1e-3)
    sal_only = SSLAugmentation("sal", SIZE)
    assert sal_only(images, targets).shape == images.shape
    default = SSLAugmentation("sal+default", SIZE)
    v1, v2 = default(images, targets), default(images, targets)
    assert not torch.allclose(v1, v2)
    with pytest.raises(ValueError, match="no targets"):
        SSLAugmentation("sal", SIZE)(images, None)
    SSLAugmentation("default", SIZE)(images, None)  # no saliency: no targets needed


def test_dataloader_workers_read_one_cache_and_never_render_a_damaged_entry(labelled, tmp_path):
    images = TrainingImages(labelled["set"], SIZE)
    cache = TargetCache(tmp_path / "c", labelled["labeller"].fingerprint)
    for h in images.hashes[:6]:
        cache.put_encoded(h, labelled["cache"].get_encoded(h))
    raw = bytearray(cache.get_encoded(images.hashes[2]))
    raw[-1] ^= 0xFF
    cache._cache.set(f"{cache.fingerprint}/{images.hashes[2]}", bytes(raw))
    dataset = CachedTargets(images, cache)
    loader = DataLoader(torch.utils.data.Subset(dataset, range(8)), batch_size=4, num_workers=2)
    present = torch.cat([batch["present"] for batch in loader]).tolist()
    assert present == [True, True, False, True, True, True, False, False]


def test_small_images_are_kept_decoded_only_when_they_fit_in_memory(labelled, monkeypatch):
    """Any folder of images up to 64 px was decoded whole into memory: ImageNet at 64 px is 16 GB."""
    import saliencyssl.datasets as datasets

    assert len(open_image_set(labelled["data"])._cached) == len(labelled["set"])  # 14 small images: kept
    monkeypatch.setattr(datasets, "available_memory", lambda: 4 * 1024)
    streamed = open_image_set(labelled["data"])
    assert len(streamed._cached) <= 1 and streamed.image(3).shape == labelled["set"].image(3).shape
    needed = sum(labelled["set"].image(0).nbytes for _ in range(len(labelled["set"])))
    monkeypatch.setattr(datasets, "available_memory", lambda: 4 * needed)
    assert len(open_image_set(labelled["data"])._cached) == len(labelled["set"])  # a quarter: kept
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share it: each may use an eighth
    assert len(open_image_set(labelled["data"])._cached) <= 1


def test_empty_and_unreadable_data_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        open_image_set(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG broken")
    image_set = open_image_set(bad)
    with pytest.raises(ValueError, match="broken.png"):
        TrainingImages(image_set, 32).stack()


def test_show_views_draws_images_and_two_views_and_names_the_labeller_it_looked_for(labelled, tmp_path, capsys):
    from saliencyssl.app import views as show_views

    out = tmp_path / "views.png"
    args = [str(labelled["data"]), "--cache", str(labelled["root"] / "cache"), "--image-size", str(SIZE),
            "--count", "4", "--out", str(out)]
    assert show_views.main(args) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] >= 3 * 64 and grid.std() > 0  # three rows: images, view 1, view 2
    capsys.readouterr()
    # Targets of the default labeller only: asking for another one says which it holds and how to label.
    assert show_views.main(args + ["--min-side", "48"]) == 2
    err = capsys.readouterr().err
    assert "--min-side 48" in err and f"it holds: {labelled['labeller'].fingerprint}" in err
    assert show_views.main(args + ["--policy", "salt"]) == 2
    assert "--policy: unknown policy part" in capsys.readouterr().err


def test_show_views_draws_guided_crops_with_their_boxes_and_composites(labelled, tmp_path, capsys):
    from saliencyssl.app import views as show_views

    base = [str(labelled["data"]), "--cache", str(labelled["root"] / "cache"), "--image-size", str(SIZE),
            "--count", "4"]
    out = tmp_path / "salcrop.png"
    assert show_views.main(base + ["--policy", "salcrop+default", "--out", str(out)]) == 0
    assert "guiding boxes yellow" in capsys.readouterr().out
    grid = np.asarray(Image.open(out).convert("RGB"))
    first_row = grid[:64]
    for colour in (show_views.BOX_COLOUR, *show_views.CROP_COLOURS):
        assert (first_row == np.array(colour, np.uint8)).all(-1).sum() > 20, f"outline {colour} drawn on the images"
    out = tmp_path / "comp.png"
    assert show_views.main(base + ["--policy", "comp1,bg=grey,feather=0", "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out).convert("RGB")).astype(int)
    images_row, view_row = grid[:64], grid[68:132]
    assert not np.array_equal(images_row, view_row), "composites differ from the images"
    # Nothing crops in this policy: the views are the images pasted on flat greys, pixel for pixel
    # the images wherever they are not grey.
    same = (np.abs(images_row - view_row).max(-1) <= 1)
    grey = (np.ptp(view_row, axis=-1) == 0)
    assert (same | grey).mean() > 0.99


@pytest.mark.parametrize("workers", [0, 1])
def test_exact_labelling_keeps_the_labellers_pixel_budget_in_worker_processes_too(labelled, workers):
    from saliencyssl.saliency import ImageTooLargeError

    images = TrainingImages(labelled["set"], SIZE)
    x = images.stack()
    small = Labeller(max_pixels=100)  # every image here has more pixels than that
    router = TargetRouter("exact", SIZE, labeller=small, image_set=labelled["set"], exact_workers=workers)
    try:
        with pytest.raises(ImageTooLargeError, match="100"):
            router.targets(torch.tensor([0]), x[:1])
    finally:
        router.close()


def test_default_is_read_first_wherever_it_stands_in_a_policy():
    for text in ("jitter0.3+default", "default+jitter0.3"):
        config = parse_policy(text)
        assert config.jitter == 0.3 and config.crop == 1.0 and config.hflip == 0.5, text


def test_a_crop_probability_is_drawn_per_image_not_per_batch():
    """kornia's RandomResizedCrop(p=P) crops all of a batch or none of it; crop=P crops each image with probability P,
    and an image not cropped keeps its whole frame, its targets untouched."""
    torch.manual_seed(0)
    aug = SSLAugmentation("none,crop=0.5", 16)
    images = torch.randint(0, 256, (200, 3, 16, 16), dtype=torch.uint8)
    targets = TargetBatch(torch.rand(200, 1, 16, 16), torch.rand(200, 1, 16, 16) > 0.5,
                          torch.randint(0, 5, (200, 1, 16, 16)))
    _, warped = aug(images, targets, return_targets=True)
    src = aug.last_crop["src"]
    whole = torch.tensor([[0.0, 0.0], [15.0, 0.0], [15.0, 15.0], [0.0, 15.0]])
    kept = (src == whole).flatten(1).all(dim=1)
    assert 60 <= int(kept.sum()) <= 140, f"{int(kept.sum())} of 200 images kept their frame"
    assert torch.equal(warped.regions[kept], targets.regions[kept].long())
    assert torch.equal(warped.mask[kept], targets.mask[kept])
    assert not torch.equal(warped.regions[~kept], targets.regions[~kept].long())


def test_a_frozen_pack_refuses_region_labels_past_int16_instead_of_merging_them(tmp_path):
    """Labels were folded modulo 32768, so regions 5 and 32773 became one; the labeller numbers its regions 0..R-1,
    so only a target of more than 32,768 regions reaches the int16 limit, and it is refused."""
    side = 200
    regions = np.arange(side * side, dtype=np.uint16).reshape(side, side)  # 40,000 one-pixel regions
    target = Target.from_maps(np.zeros((side, side)), np.zeros((side, side), bool), regions)
    cache = TargetCache(tmp_path / "c", "fp")
    cache.put("a" * 32, target)
    with pytest.raises(ValueError, match="region label 39,999"):
        FrozenPack.build(["a" * 32], cache, side)
