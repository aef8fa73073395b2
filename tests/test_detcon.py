"""DetCon's mask-pooled contrastive loss: positives and negatives, missing masks, reduction to SimCLR / BYOL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliencyssl.ssl.backbone import resnet18_backbone
from saliencyssl.ssl.detcon import (DetConBYOL, DetConLoss, DetConSimCLR, backbone_feature_map, cell_labels,
                                    joint_labels, pool_masks, sample_masks)
from saliencyssl.ssl.optim import build_optimizer
from saliencyssl.ssl.registry import build_method
from saliencyssl.target import TargetBatch

SMALL = {
    "detcon-simclr": {"projection_hidden_dim": 64, "output_dim": 32},
    "detcon-byol": {"projection_hidden_dim": 64, "output_dim": 32, "prediction_hidden_dim": 64},
}


def _targets(regions: torch.Tensor, mask: torch.Tensor | None = None) -> TargetBatch:
    """A TargetBatch around hand-made ``(B, 1, H, W)`` region labels (and optionally a mask)."""
    regions = regions.long()
    return TargetBatch(torch.zeros(regions.shape), regions > 0 if mask is None else mask.bool(), regions)


def _quadrants(b: int, size: int = 16) -> torch.Tensor:
    """``(B, 1, S, S)`` labels: four quadrant regions per image, numbered differently per image."""
    half = size // 2
    grid = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(half, 0).repeat_interleave(half, 1)
    return torch.stack([(grid * 7 + 3 * i)[None] for i in range(b)])


def _views(b: int = 4, seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random ``(B, 3, S, S)`` views (16 px keeps ResNet-18 quick on the CPU: layer4 2x2, grid 4x4)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=gen), torch.randn(b, 3, size, size, generator=gen)


def _tiny_backbone(dim: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ---------------------------------------------------------------------- the loss, by hand
def _basis(rows: list[int], dim: int = 4) -> torch.Tensor:
    return torch.eye(dim)[rows]


def test_loss_on_a_hand_made_batch_two_images_two_masks():
    # Image 0's masks embed to e0, e1, image 1's to e2, e3, identically in both views. The query of a mask
    # scores 1/T with its positive (the same mask in the other view) and 0 with the 3 other masks of the other
    # view and the 3 other masks of its own view (its own copy there is left out): 6 negatives.
    t = 0.5
    z = _basis([0, 1, 2, 3]).view(2, 2, 4)
    ids = torch.tensor([[0, 1], [0, 1]])
    loss = DetConLoss(temperature=t)(z, z, z, z, ids, ids)
    expected = math.log(math.exp(1 / t) + 6) - 1 / t
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Other images' masks are negatives too: pulling image 1's masks onto image 0's raises the loss.
    near = _basis([0, 1, 0, 1]).view(2, 2, 4)
    assert DetConLoss(temperature=t)(near, near, near, near, ids, ids).item() > expected + 0.5


def test_a_mask_missing_from_a_view_has_no_positive_and_copies_share_one_weight():
    # View b drew image 0's mask 0 twice and never mask 1 (absent there); image 1 as in view a.
    t = 0.5
    s = 1 / t
    z_a = _basis([0, 1, 2, 3]).view(2, 2, 4)
    z_b = _basis([0, 0, 2, 3]).view(2, 2, 4)
    ids_a = torch.tensor([[0, 1], [0, 1]])
    ids_b = torch.tensor([[0, 0], [0, 1]])
    loss = DetConLoss(temperature=t)(z_a, z_b, z_a, z_b, ids_a, ids_b)
    # a -> b: image 0 mask 0 has two positive copies (mass 1/2 each; 2 e^s + 2 zeros of view b + 3 of view a);
    # image 0 mask 1 has none (weight 0); image 1's masks as in the plain case. Mean over the 3 masks with positives.
    a_to_b = (math.log(2 * math.exp(s) + 5) - s + 2 * (math.log(math.exp(s) + 6) - s)) / 3
    # b -> a: image 0's two copies of mask 0 leave each other out of the negatives (e^s + 3 + 2) and share one
    # unit of weight; image 1's masks as before.
    b_to_a = (math.log(math.exp(s) + 5) - s + 2 * (math.log(math.exp(s) + 6) - s)) / 3
    assert loss.item() == pytest.approx(0.5 * (a_to_b + b_to_a), rel=1e-6)


def test_no_mask_with_a_positive_gives_a_zero_loss_that_backpropagates():
    z = torch.randn(2, 3, 8, requires_grad=True)
    loss = DetConLoss()(z, z, z, z, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def _loop_direction(q, k_other, k_same, ids, ids_other, t):
    """DetCon's loss in one direction, mask by mask, as Eq. 3 of the paper with the reference code's rules."""
    b, n, _ = q.shape
    q, k_other, k_same = (F.normalize(x, dim=-1) for x in (q, k_other, k_same))
    ids, ids_other = ids.tolist(), ids_other.tolist()
    total = weights = 0.0
    for i in range(b):
        for m in range(n):
            logits, positive = [], []
            for j in range(b):
                for k in range(n):
                    logits.append(float(q[i, m] @ k_other[j, k]) / t)
                    positive.append(j == i and ids_other[j][k] == ids[i][m])
            for j in range(b):
                for k in range(n):
                    if not (j == i and ids[j][k] == ids[i][m]):
                        logits.append(float(q[i, m] @ k_same[j, k]) / t)
                        positive.append(False)
            if not any(positive):
                continue
            log_z = math.log(sum(math.exp(x) for x in logits))
            ce = -sum(x - log_z for x, p in zip(logits, positive) if p) / sum(positive)
            w = 1.0 / ids[i].count(ids[i][m])
            total += w * ce
            weights += w
    return total / max(weights, 1.0)


@pytest.mark.parametrize("shared_keys", [True, False], ids=["detcon-s", "detcon-b"])
def test_loss_matches_a_mask_by_mask_implementation(shared_keys):
    gen = torch.Generator().manual_seed(4)
    b, n, d, t = 3, 5, 6, 0.3
    q_a, q_b = torch.randn(b, n, d, generator=gen), torch.randn(b, n, d, generator=gen)
    k_a, k_b = (q_a, q_b) if shared_keys else (torch.randn(b, n, d, generator=gen), torch.randn(b, n, d, generator=gen))
    ids_a = torch.randint(0, 4, (b, n), generator=gen)  # duplicates, and ids missing from the other view
    ids_b = torch.randint(0, 4, (b, n), generator=gen)
    loss = DetConLoss(temperature=t)(q_a, q_b, k_a, k_b, ids_a, ids_b)
    expected = 0.5 * (_loop_direction(q_a, k_b, k_a, ids_a, ids_b, t) + _loop_direction(q_b, k_a, k_b, ids_b, ids_a, t))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------- masks on the feature grid
def test_cells_take_the_majority_label_and_only_masks_owning_a_cell_are_drawn():
    labels = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    labels[..., 4:8, 8:12] = 1   # exactly cell (1, 2) of the 8x8 grid
    labels[..., 17:19, 17:19] = 2  # 4 pixels of cell (4, 4): a minority everywhere
    labels[..., 24:28, 0:2] = 5  # cell (6, 0): half 5, half 0 -> the lower label, 0
    labels[..., 24:28, 6:8] = 4  # cell (6, 1): half 4, half 0 -> 0
    labels[..., 28:32, 28:31] = 3  # cell (7, 7): 12 of 16 pixels
    cells = cell_labels(labels, (8, 8), 6).view(8, 8)
    expected = torch.zeros(8, 8, dtype=torch.long)
    expected[1, 2], expected[7, 7] = 1, 3
    assert torch.equal(cells, expected)
    torch.manual_seed(0)
    drawn = sample_masks(cells.view(1, 64), 6, 400)
    assert set(drawn.unique().tolist()) == {0, 1, 3}, "regions owning no cell are never drawn"


def test_labels_are_renumbered_jointly_so_a_region_keeps_its_id_in_both_views():
    a = torch.tensor([[[[40, 40], [7, 900]]], [[[5, 5], [5, 5]]]])
    b = torch.tensor([[[[900, 3], [3, 3]]], [[[8, 5], [8, 8]]]])
    ids_a, ids_b, n = joint_labels(a, b)
    assert n == 4  # image 0 uses 3, 7, 40, 900
    assert torch.equal(ids_a[0, 0], torch.tensor([[2, 2], [1, 3]])) and torch.equal(ids_b[0, 0], torch.tensor([[3, 0], [0, 0]]))
    assert torch.equal(ids_a[1, 0], torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(ids_b[1, 0], torch.tensor([[1, 0], [1, 1]]))


def test_pooling_averages_the_features_of_a_masks_cells():
    features = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    cells = torch.tensor([[0, 0, 1, 1, 0, 2, 2, 1, 0, 0, 0, 0]])
    pooled = pool_masks(features, cells, torch.tensor([[1, 2, 1]]))
    flat = features.view(2, 12)
    assert torch.allclose(pooled[0, 0], flat[:, [2, 3, 7]].mean(1))
    assert torch.allclose(pooled[0, 1], flat[:, [5, 6]].mean(1))
    assert torch.equal(pooled[0, 2], pooled[0, 0])


def test_the_feature_grid_is_layer4_upsampled_to_8x8_at_32px():
    backbone = resnet18_backbone(cifar_stem=True).eval()
    method = DetConSimCLR(backbone)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        layer4 = backbone_feature_map(backbone, images)
        grid = method._grid_features(backbone, images)
        assert layer4.shape == (2, 512, 4, 4) and grid.shape == (2, 512, 8, 8)
        # the whole grid's mean is the backbone's output, which the evaluation reads
        assert torch.allclose(grid.mean(dim=(2, 3)), backbone(images), atol=1e-5)
    assert DetConSimCLR(backbone, feature_upsample=1)._grid_features(backbone, images).shape[-1] == 4
    with pytest.raises(TypeError, match="spatial features"):
        backbone_feature_map(nn.Linear(3, 3), images)


# ---------------------------------------------------------------------- reduction to SimCLR and BYOL
def _one_mask_per_image(b: int, size: int = 16) -> tuple[TargetBatch, TargetBatch]:
    constant = torch.arange(b).view(b, 1, 1, 1) * 5 + 2  # one label per image, a different one in each
    regions = constant.expand(b, 1, size, size).clone()
    empty = torch.zeros(b, 1, size, size, dtype=torch.bool)  # foreground masks: all background
    return _targets(regions, empty), _targets(regions, empty)


@pytest.mark.parametrize("num_masks, masks", [(1, "regions"), (16, "regions"), (16, "foreground")])
def test_detcon_s_with_one_whole_image_mask_is_simclr(num_masks, masks):
    torch.manual_seed(0)
    simclr = build_method("simclr", resnet18_backbone(cifar_stem=True), temperature=0.1).train()
    detcon = build_method("detcon-simclr", resnet18_backbone(cifar_stem=True), num_masks=num_masks, masks=masks).train()
    detcon.load_state_dict(simclr.state_dict())
    view_a, view_b = _views()
    expected = simclr.training_loss(view_a, view_b)
    loss = detcon.training_loss(view_a, view_b, *_one_mask_per_image(4))
    # the num_masks copies of the one mask each enter the softmax: log(num_masks) more, the same gradient
    assert loss.item() == pytest.approx(expected.item() + math.log(num_masks), abs=1e-5)
    expected.backward()
    loss.backward()
    for name in ("conv1.weight", "layer4.1.conv2.weight"):
        g_s = simclr.backbone.get_parameter(name).grad
        g_d = detcon.backbone.get_parameter(name).grad
        assert (g_d - g_s).abs().max() <= 1e-4 * g_s.abs().max(), name


def test_detcon_b_regression_with_one_whole_image_mask_is_byol():
    torch.manual_seed(0)
    byol = build_method("byol", resnet18_backbone(cifar_stem=True)).train()
    detcon = build_method("detcon-byol", resnet18_backbone(cifar_stem=True), objective="regression").train()
    detcon.load_state_dict(byol.state_dict())
    view_a, view_b = _views()
    for method in (byol, detcon):
        method.before_step(0.3, 0)
    expected = byol.training_loss(view_a, view_b)
    loss = detcon.training_loss(view_a, view_b, *_one_mask_per_image(4))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_detcon_b_with_one_whole_image_mask_is_byol_with_an_nce_loss():
    """The reference DetCon-B loss with one mask: BYOL's predictions against BYOL's targets, with negatives."""
    torch.manual_seed(0)
    byol = build_method("byol", resnet18_backbone(cifar_stem=True)).train()
    detcon = build_method("detcon-byol", resnet18_backbone(cifar_stem=True), num_masks=3).train()
    detcon.load_state_dict(byol.state_dict())
    view_a, view_b = _views()
    with torch.no_grad():
        loss = detcon.training_loss(view_a, view_b, *_one_mask_per_image(4)).item()
        p_a, p_b = F.normalize(byol._online(view_a), dim=1), F.normalize(byol._online(view_b), dim=1)
        z_a, z_b = F.normalize(byol._target(view_a), dim=1), F.normalize(byol._target(view_b), dim=1)

    def direction(p, z_other, z_same):
        t = 0.1
        other = p @ z_other.T / t
        same = (p @ z_same.T / t).masked_fill(torch.eye(4, dtype=torch.bool), float("-inf"))
        return (torch.logsumexp(torch.cat([other, same], 1), 1) - other.diag()).mean().item()

    expected = 0.5 * (direction(p_a, z_b, z_a) + direction(p_b, z_a, z_b)) + math.log(3)
    assert loss == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------------- the methods
@pytest.mark.parametrize("name", ["detcon-simclr", "detcon-byol"])
def test_the_loss_trains_the_whole_resnet18(name):
    torch.manual_seed(0)
    method = build_method(name, resnet18_backbone(cifar_stem=True)).train()
    assert method.needs_targets and type(method).optimizer_recipe.kind == "sgd"
    method.before_step(0.0, 0)
    view_a, view_b = _views()
    regions = _quadrants(4)
    loss = method(view_a, view_b, _targets(regions), _targets(regions.flip(-1)))  # forward, as DDP calls it
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for pname, param in method.backbone.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
    assert method.backbone.layer4[1].conv2.weight.grad.abs().sum() > 0
    if name == "detcon-byol":
        assert all(p.grad is None for p in method.backbone_momentum.parameters())


@pytest.mark.parametrize("name", ["detcon-simclr", "detcon-byol"])
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    method = build_method(name, backbone, feature_dim=64, feature_upsample=1, **SMALL[name]).train()
    optimizer, _ = build_optimizer(method, batch_size=128, epochs=10, steps_per_epoch=8)
    view_a, view_b = _views(8)
    regions = _quadrants(8)
    targets_a, targets_b = _targets(regions), _targets(regions.transpose(-1, -2))

    def probe() -> float:
        torch.manual_seed(1)  # the same masks drawn each time
        with torch.no_grad():
            return method.training_loss(view_a, view_b, targets_a, targets_b).item()

    before = probe()
    for step in range(8):
        method.before_step(step / 79, 0)
        loss = method.training_loss(view_a, view_b, targets_a, targets_b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after = probe()
    assert after < before - 1e-3 * max(1.0, abs(before)), f"{name}: {before:.4f} -> {after:.4f}"


def test_float16_autocast_keeps_the_loss_in_float32():
    torch.manual_seed(0)
    method = build_method("detcon-simclr", _tiny_backbone(), feature_dim=16, feature_upsample=1,
                          **SMALL["detcon-simclr"]).train()
    view_a, view_b = _views()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = method.training_loss(view_a, view_b, _targets(_quadrants(4)), _targets(_quadrants(4)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_missing_or_misshapen_targets_and_bad_options_are_explained():
    method = build_method("detcon-simclr", _tiny_backbone(), feature_dim=16)
    view_a, view_b = _views()
    with pytest.raises(ValueError, match="needs targets_a.*return_targets=True"):
        method.training_loss(view_a, view_b)
    with pytest.raises(ValueError, match=r"\(4, 1, 16, 16\)"):
        method.training_loss(view_a, view_b, _targets(_quadrants(4, 32)), _targets(_quadrants(4)))
    with pytest.raises(ValueError, match="TargetBatch"):
        method.training_loss(view_a, view_b, _quadrants(4), _quadrants(4))
    with pytest.raises(ValueError, match="masks must be one of"):
        build_method("detcon-simclr", _tiny_backbone(), feature_dim=16, masks="saliency")
    with pytest.raises(ValueError, match="objective must be one of"):
        build_method("detcon-byol", _tiny_backbone(), feature_dim=16, objective="mse")
    with pytest.raises(ValueError, match="num_masks"):
        build_method("detcon-byol", _tiny_backbone(), feature_dim=16, num_masks=0)
    with pytest.raises(ValueError, match="feature_dim=16"):
        build_method("detcon-simclr", _tiny_backbone()).training_loss(view_a, view_b, _targets(_quadrants(4)),
                                                                      _targets(_quadrants(4)))


def test_foreground_masks_pool_the_object_and_the_background():
    torch.manual_seed(0)
    method = build_method("detcon-simclr", _tiny_backbone(), feature_dim=16, masks="foreground", num_masks=64,
                          feature_upsample=1, **SMALL["detcon-simclr"]).train()
    regions = _quadrants(4)  # ignored with masks="foreground"
    mask = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 4:12] = True
    labels = method._labels(_targets(regions, mask), _views()[0], "a")
    assert torch.equal(labels, mask.long())
    features = method._grid_features(method.backbone, _views()[0])
    _, _, ids_a, ids_b = method._draw(features, features, labels, labels)
    assert set(ids_a.unique().tolist()) == {0, 1} == set(ids_b.unique().tolist())


def test_registry_names_and_method_options():
    assert isinstance(build_method("detcon_simclr", _tiny_backbone(), feature_dim=16), DetConSimCLR)
    assert isinstance(build_method("DetCon-BYOL", _tiny_backbone(), feature_dim=16), DetConBYOL)
    defaults = DetConSimCLR.default_hparams()
    assert defaults["temperature"] == 0.1 and defaults["num_masks"] == 16 and defaults["masks"] == "regions"
    assert DetConBYOL.default_hparams()["objective"] == "contrastive"


# ---------------------------------------------------------------------- distributed
def _gloo_worker(rank: int, world: int, store: str, results: dict) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rows = slice(rank * 4, rank * 4 + 4)
        q_a, q_b, k_a, k_b, ids = _gathered_inputs()
        out = {"loss": DetConLoss(0.3, gather_distributed=True)(q_a[rows], q_b[rows], k_a[rows], k_b[rows],
                                                               ids[rows], ids[rows]).item()}
        torch.manual_seed(0)
        method = build_method("detcon-simclr", _tiny_backbone(), distributed=True, feature_dim=16, num_masks=2,
                              feature_upsample=1, **SMALL["detcon-simclr"]).eval()
        view_a, view_b = _views(8)
        targets = _one_mask_per_image(8)[0]
        part = TargetBatch(targets.saliency[rows], targets.mask[rows], targets.regions[rows])
        ddp = DistributedDataParallel(method)
        ddp(view_a[rows], view_b[rows], part, part).backward()  # the targets pass through DDP's forward
        out["grad"] = method.backbone[0].weight.grad.clone()
        results[rank] = out
    finally:
        dist.destroy_process_group()


def _gathered_inputs():
    gen = torch.Generator().manual_seed(2)
    q_a, q_b, k_a, k_b = (torch.randn(8, 3, 5, generator=gen) for _ in range(4))
    ids = torch.arange(3).repeat(8, 1)  # every mask in both views: each process weighs 12 masks
    return q_a, q_b, k_a, k_b, ids


@pytest.mark.slow
def test_distributed_gather_adds_the_other_processes_masks_as_negatives(tmp_path):
    """Two gloo processes with 4 images each give the loss and the gradient of one process with all 8."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    q_a, q_b, k_a, k_b, ids = _gathered_inputs()
    full = DetConLoss(0.3)(q_a, q_b, k_a, k_b, ids, ids).item()
    assert (results[0]["loss"] + results[1]["loss"]) / 2 == pytest.approx(full, rel=1e-5)
    torch.manual_seed(0)
    single = build_method("detcon-simclr", _tiny_backbone(), feature_dim=16, num_masks=2, feature_upsample=1,
                          **SMALL["detcon-simclr"]).eval()
    view_a, view_b = _views(8)
    single.training_loss(view_a, view_b, *_one_mask_per_image(8)).backward()
    assert torch.allclose(results[0]["grad"], single.backbone[0].weight.grad, rtol=1e-4, atol=1e-7)
