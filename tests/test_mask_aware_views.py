"""Mask-aware views on generated images whose object is known: targets that follow the view's
geometry, ContrastiveCrop-style guided crops, DiLo-style composites, and show_views' --out check."""

from __future__ import annotations

import kornia.filters
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saliencyssl.augment import SaliencyView, SSLAugmentation
from saliencyssl.augment.guided import guide_crop_parameters, target_boxes
from saliencyssl.augment.render import composite_backgrounds
from saliencyssl.ssl.backbone import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from saliencyssl.target import TargetBatch

SIZE = 48
OBJECT_RGB = (1.0, 0.2, 0.1)  # red 1 on a background whose red channel stays in 0.1..0.2


def shapes(count: int, size: int = SIZE, seed: int = 0) -> tuple[torch.Tensor, TargetBatch]:
    """Discs, rectangles and triangles on a smooth colour gradient, with their exact targets.

    Returns ``(B, 3, S, S)`` float images in [0, 1] and targets whose mask is the shape, whose
    saliency map is the image's red channel and whose regions are the shape (2) and the left (0)
    and right (1) halves of the background.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    images, masks = [], []
    for i in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.12, 0.25) * size
        if i % 3 == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif i % 3 == 1:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= 0.6 * r)
        else:
            mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= 0.6 * (yy - cy + r))
        u, v = xx / size, yy / size
        background = np.stack([0.1 + 0.1 * u, 0.3 + 0.4 * v, 0.8 - 0.5 * u * v])
        obj = np.asarray(OBJECT_RGB).reshape(3, 1, 1) * np.ones((3, size, size))
        images.append(np.where(mask[None], obj, background))
        masks.append(mask)
    x = torch.from_numpy(np.stack(images)).float()
    mask = torch.from_numpy(np.stack(masks))[:, None]
    regions = torch.where(mask, 2, (torch.arange(size) >= size // 2).long().expand(count, 1, size, size))
    return x, TargetBatch(x[:, :1].clone(), mask, regions)


def unnormalise(views: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return views * std + mean


def border_band(mask: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels whose 3x3 neighbourhood holds both object and background."""
    m = mask.float()[:, None]
    dilated = F.max_pool2d(m, 3, 1, 1) > 0.5
    eroded = -F.max_pool2d(-m, 3, 1, 1) > 0.5
    return (dilated & ~eroded)[:, 0]


GEOMETRY_ONLY = "jitter=0,gray=0,blur=0,vflip=0.5,rotation=0.5"


@pytest.mark.parametrize("policy", [f"default,{GEOMETRY_ONLY}", f"salcrop+default,{GEOMETRY_ONLY}",
                                    f"salcrop+default,alpha=1,crop_box=rc,{GEOMETRY_ONLY}"])
def test_warped_mask_marks_exactly_the_warped_object(policy):
    images, targets = shapes(30)
    augment = SSLAugmentation(policy, SIZE)
    for seed in range(2):
        torch.manual_seed(seed)
        views, warped = augment(images, targets, return_targets=True)
        assert views.shape == images.shape
        assert warped.mask.shape == warped.regions.shape == warped.saliency.shape == targets.mask.shape
        assert (warped.mask.dtype, warped.regions.dtype, warped.saliency.dtype) == (torch.bool, torch.int64,
                                                                                    torch.float32)
        red = unnormalise(views)[:, 0]
        seen = red > 0.6  # the object's pixels in the view (object red 1, background red <= 0.2)
        mask = warped.mask[:, 0]
        wrong = seen != mask
        assert not (wrong & ~border_band(mask)).any(), "disagreement away from the object's border"
        assert wrong.float().mean() < 0.01
        # The saliency map went through the very operations the image did (bilinear), and mask and
        # regions come from one nearest source pixel each.
        assert torch.allclose(warped.saliency[:, 0], red, atol=1e-5)
        assert torch.equal(warped.regions[:, 0] == 2, mask)
        assert (warped.mask != targets.mask).flatten(1).any(1).float().mean() > 0.5, "the views moved the objects"


def test_flips_and_rotations_move_targets_exactly_with_the_image():
    images, targets = shapes(24)
    augment = SSLAugmentation("none,hflip=0.5,vflip=0.5,rotation=0.5", SIZE)
    torch.manual_seed(3)
    views, warped = augment(images, targets, return_targets=True)
    views = unnormalise(views)
    moves = [lambda t, k=k, f=f: torch.rot90(t.flip(-1) if f else t, k, dims=(-2, -1))
             for k in range(4) for f in (0, 1)]
    used = set()
    for i in range(len(images)):
        match = [j for j, move in enumerate(moves) if torch.allclose(move(images[i]), views[i], atol=1e-4)]
        assert match, f"image {i}: the view is no flip or rotation of the image"
        move = moves[match[0]]
        used.add(match[0])
        assert torch.equal(move(targets.mask[i]), warped.mask[i])
        assert torch.equal(move(targets.regions[i]), warped.regions[i])
        assert torch.allclose(move(targets.saliency[i]), warped.saliency[i], atol=1e-5)
    assert len(used) >= 4, "several of the eight flips and rotations occur"


def test_colour_operations_leave_the_targets_alone_and_random_streams_stay():
    images, targets = shapes(12)
    colour = SSLAugmentation("sal+default,vflip=0.5,rotation=0.5", SIZE)  # blur is on at 48 px
    plain = SSLAugmentation("sal+default,vflip=0.5,rotation=0.5,jitter=0,gray=0,blur=0", SIZE)
    torch.manual_seed(5)
    v1, w1 = colour(images, targets, return_targets=True)
    torch.manual_seed(5)
    v2, w2 = plain(images, targets, return_targets=True)
    assert not torch.allclose(v1, v2)
    assert torch.equal(w1.mask, w2.mask) and torch.equal(w1.regions, w2.regions)
    assert torch.equal(w1.saliency, w2.saliency)
    # The default policy draws what an nn.Sequential of its kornia modules draws, with or without
    # return_targets, and leaves the generator in the same state.
    default = SSLAugmentation("default,vflip=0.5,rotation=0.5", SIZE)
    torch.manual_seed(7)
    reference = to_model_input(default.augment(images.clone()))
    after_reference = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(default(images), reference)
    assert torch.equal(torch.rand(4), after_reference)
    torch.manual_seed(7)
    views, _ = default(images, targets, return_targets=True)
    assert torch.equal(views, reference) and torch.equal(torch.rand(4), after_reference)


def test_targets_are_required_and_must_fit_the_images():
    images, targets = shapes(4)
    with pytest.raises(ValueError, match="return_targets=True but no targets"):
        SSLAugmentation("default", SIZE)(images, None, return_targets=True)
    for policy in ("salcrop+default", "comp0.3+default"):
        assert SSLAugmentation(policy, SIZE).uses_targets
        with pytest.raises(ValueError, match="no targets were given"):
            SSLAugmentation(policy, SIZE)(images)
    assert not SSLAugmentation("default", SIZE).uses_targets
    small = TargetBatch(targets.saliency[..., :32, :32], targets.mask[..., :32, :32], targets.regions[..., :32, :32])
    with pytest.raises(ValueError, match=r"do not match images.*serve targets at the images' size"):
        SSLAugmentation("default", SIZE)(images, small, return_targets=True)


def boxed_targets(count: int, size: int, boxes: torch.Tensor) -> TargetBatch:
    """Targets whose masks are the given ``(row0, col0, row1, col1)`` rectangles (a row of -1: empty)."""
    mask = torch.zeros(count, 1, size, size, dtype=torch.bool)
    for i, (r0, c0, r1, c1) in enumerate(boxes.tolist()):
        if r0 >= 0:
            mask[i, 0, r0:r1 + 1, c0:c1 + 1] = True
    return TargetBatch(mask.float(), mask, mask.long())


def crop_geometry(params: dict) -> tuple[torch.Tensor, ...]:
    src = params["src"].round().long()
    left, top = src[:, 0, 0], src[:, 0, 1]
    return top, left, src[:, 2, 1] - top + 1, src[:, 1, 0] - left + 1


def test_guided_crop_centres_lie_in_the_mask_box():
    size, count = 64, 600
    g = torch.Generator().manual_seed(0)
    r0, c0 = torch.randint(0, size - 4, (count,), generator=g), torch.randint(0, size - 4, (count,), generator=g)
    r1 = torch.minimum(r0 + torch.randint(3, 40, (count,), generator=g), torch.tensor(size - 1))
    c1 = torch.minimum(c0 + torch.randint(3, 40, (count,), generator=g), torch.tensor(size - 1))
    boxes = torch.stack([r0, c0, r1, c1], 1)
    targets = boxed_targets(count, size, boxes)
    found, has_box = target_boxes(targets)
    assert has_box.all() and torch.equal(found, boxes)
    torch.manual_seed(0)
    params = SSLAugmentation("salcrop+default", size).crop_parameters((count, 3, size, size), targets)
    assert params["guided"].all() and torch.equal(params["box"], boxes)
    top, left, h, w = crop_geometry(params)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= size).all() and (left + w <= size).all()
    cy, cx = top + h // 2, left + w // 2
    # The centre lies in the box, unless the crop would leave the image: then it is pushed inside,
    # onto the centre nearest to the box that keeps it in the image.
    for centre, first, last, extent in ((cy, r0, r1, h), (cx, c0, c1, w)):
        lo, hi = extent // 2, size - extent + extent // 2
        assert ((first.clamp(lo, hi) <= centre) & (centre <= last.clamp(lo, hi))).all()
        inside = (first >= lo) & (last <= hi)
        assert inside.sum() > 50 and ((first <= centre) & (centre <= last))[inside].all()


def test_images_without_a_mask_get_the_plain_crop():
    size, count = 64, 40
    boxes = torch.tensor([[10, 12, 30, 40]] * count)
    boxes[::2] = -1  # every other image has an empty mask
    targets = boxed_targets(count, size, boxes)
    torch.manual_seed(1)
    plain = SSLAugmentation("default", size).crop_parameters((count, 3, size, size))
    torch.manual_seed(1)
    guided = SSLAugmentation("salcrop+default", size).crop_parameters((count, 3, size, size), targets)
    assert torch.equal(guided["guided"], boxes[:, 0] >= 0)
    assert torch.equal(guided["src"][::2], plain["src"][::2]), "empty masks: the plain crop, unchanged"
    assert not torch.equal(guided["src"][1::2], plain["src"][1::2])
    top, left, h, w = crop_geometry(guided)
    ptop, pleft, ph, pw = crop_geometry(plain)
    assert torch.equal(h, ph) and torch.equal(w, pw), "scale and ratio as the plain crop"


def test_alpha_pushes_centres_towards_the_box_edges():
    size, count = 64, 4000
    box = torch.tensor([16, 16, 47, 47])
    targets = boxed_targets(count, size, box.expand(count, 4))
    plain = SSLAugmentation("salcrop+default", size)
    near_edge = {}
    for alpha in (0.1, 1.0):
        torch.manual_seed(2)
        params = guide_crop_parameters(plain.augment[0].forward_parameters((count, 3, size, size)),
                                       *target_boxes(targets), alpha=alpha)
        top, left, h, w = crop_geometry(params)
        unclipped = (h <= 34) & (w <= 34)  # crops that fit around every centre of the box
        cy = (top + h // 2)[unclipped].float()
        margin = 0.1 * (47 - 16)
        near_edge[alpha] = ((cy < 16 + margin) | (cy > 47 - margin)).float().mean().item()
        assert unclipped.sum() > 500
    assert near_edge[0.1] > 0.6 and near_edge[1.0] < 0.35, near_edge


def test_rc_box_thresholds_the_normalised_saliency_map():
    size = 32
    saliency = torch.full((3, 1, size, size), 0.2)
    saliency[0, 0, 5:9, 20:30] = 0.9   # a bright blob on a dim, flat ground: box = the blob
    saliency[1, 0, 10, 3] = 0.25       # a faint spot: above 10% of the normalised map too
    # image 2 is flat: nothing stands out, no box
    targets = TargetBatch(saliency, torch.zeros(3, 1, size, size, dtype=torch.bool),
                          torch.zeros(3, 1, size, size, dtype=torch.long))
    boxes, has_box = target_boxes(targets, "rc", 0.1)
    assert has_box.tolist() == [True, True, False]
    assert boxes[0].tolist() == [5, 20, 8, 29] and boxes[1].tolist() == [10, 3, 10, 3]
    assert not target_boxes(targets, "mask")[1].any()


def test_composite_pastes_the_object_over_grey_swapped_or_blurred_backgrounds():
    images, targets = shapes(8)
    empty = targets.mask.clone()
    empty[3] = False
    targets = TargetBatch(targets.saliency, empty, targets.regions)
    inside, outside = targets.mask[:, 0], ~targets.mask[:, 0]
    for background in ("grey", "swap", "blur"):
        view = SaliencyView("composite", p=1.0, background=background, feather=0.0)
        params = view.generate_parameters(len(images), generator=torch.Generator().manual_seed(4))
        out = view(images, targets, params)
        assert torch.equal(out[3], images[3]), "an empty mask leaves the image as it is"
        if background == "grey":
            expected = params["grey"].view(-1, 1, 1, 1).expand_as(images)
            assert (params["grey"] * 255 <= 254).all()
        elif background == "swap":
            assert (params["partner"] != torch.arange(len(images))).all()
            expected = images[params["partner"]]
        else:
            expected = kornia.filters.gaussian_blur2d(images, (13, 13), (2.0, 2.0), border_type="reflect")
        for i in range(len(images)):
            if i == 3:
                continue
            assert torch.equal(out[i][:, inside[i]], images[i][:, inside[i]])
            assert torch.allclose(out[i][:, outside[i]], expected[i][:, outside[i]], atol=1e-6)
    # A batch of one has no other image to swap with: a grey background.
    one = SaliencyView("composite", p=1.0, background="swap", feather=0.0)(images[:1],
                                                                          targets.index_select(torch.tensor([0])))
    assert torch.allclose(one[0][:, outside[0]], one[0][:, outside[0]][:, :1].expand(3, int(outside[0].sum())))


def test_composite_feathers_the_matte_with_probability_and_applies_with_p():
    images, targets = shapes(8)
    feathered = SaliencyView("composite", p=1.0, feather=2.0, feather_p=1.0)
    params = feathered.generate_parameters(len(images), generator=torch.Generator().manual_seed(0))
    soft = feathered(images, targets, params)
    hard = SaliencyView("composite", p=1.0, feather=0.0)(images, targets, params)
    band = border_band(targets.mask[:, 0])
    assert not torch.allclose(soft, hard)
    difference = (soft - hard).abs().amax(1)
    assert difference[band].mean() > 10 * difference[~band].mean(), "feathering acts at the object's border"
    assert feathered.generate_parameters(4000)["feather"].float().mean().item() == 1.0
    half = SaliencyView("composite", p=1.0).generate_parameters(4000)["feather"].float().mean().item()
    assert 0.45 < half < 0.55, "DiLo feathers half of the mattes"
    big, big_targets = shapes(600)
    torch.manual_seed(0)
    out = SSLAugmentation("comp0.3", SIZE)(big, big_targets)
    changed = (unnormalise(out) - big).abs().flatten(1).amax(1) > 1e-4
    assert 0.22 < changed.float().mean().item() < 0.38, "comp0.3 composites about 30% of the images"


def test_swap_partners_come_from_the_whole_batch_when_only_some_images_are_composited():
    images, targets = shapes(10)
    view = SaliencyView("composite", p=0.5, background="swap", feather=0.0)
    params = view.generate_parameters(len(images), generator=torch.Generator().manual_seed(1))
    assert 0 < int(params["apply"].sum()) < len(images)
    out = view(images, targets, params)
    for i in range(len(images)):
        outside = ~targets.mask[i, 0]
        expected = images[params["partner"][i]] if params["apply"][i] else images[i]
        assert torch.equal(out[i][:, outside], expected[:, outside])


def test_composite_views_warp_their_targets_too():
    images, targets = shapes(12)
    augment = SSLAugmentation(f"comp1+default,feather=0,{GEOMETRY_ONLY}", SIZE)
    torch.manual_seed(0)
    views, warped = augment(images, targets, return_targets=True)
    # The object keeps its own pixels (red 1) wherever the warped mask says it is, away from its border.
    red = unnormalise(views)[:, 0]
    core = warped.mask[:, 0] & ~border_band(warped.mask[:, 0])
    assert core.any() and (red[core] > 0.9).all()


def test_show_views_refuses_a_folder_as_out(tmp_path, capsys):
    from saliencyssl.app import views as show_views

    assert show_views.main([str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and str(tmp_path / "views.png") in err
    assert show_views.main([str(tmp_path), "--out", str(tmp_path / "views.txt")]) == 2
    assert "views.png" in capsys.readouterr().err
