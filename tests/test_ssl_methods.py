"""The six SSL methods, their registry and the optimizer recipe (CPU, 32 px, tiny batches)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliencyssl.ssl.backbone import resnet18_backbone, to_model_input
from saliencyssl.ssl.method import SSLMethod
from saliencyssl.ssl.optim import build_optimizer
from saliencyssl.ssl.registry import METHODS, build_method

ALL = ["simclr", "simsiam", "byol", "moco", "swav", "barlowtwins"]
#: Methods whose loss reads each view's warped targets (tested in test_detcon.py).
WITH_TARGETS = ["detcon-simclr", "detcon-byol"]
BATCH = 16

#: Small heads for tests that only need the mechanics, not the paper-sized projectors.
SMALL_HEADS = {
    "simclr": {"projection_hidden_dim": 64, "output_dim": 32},
    "simsiam": {"projection_hidden_dim": 64, "output_dim": 64, "prediction_hidden_dim": 32},
    "byol": {"projection_hidden_dim": 64, "output_dim": 32, "prediction_hidden_dim": 64},
    "moco": {"projection_hidden_dim": 64, "output_dim": 32, "memory_bank_size": 256},
    "swav": {"projection_hidden_dim": 64, "output_dim": 32, "n_prototypes": 16},
    "barlowtwins": {"projection_hidden_dim": 64, "output_dim": 64},
}


def _two_views(seed: int = 0, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` smooth 40 px images, and two different random 32 px crops (+ flips) of each."""
    gen = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.rand(n, 3, 6, 6, generator=gen), size=(40, 40), mode="bilinear",
                           align_corners=False)

    def view() -> torch.Tensor:
        out = []
        for image in images:
            y, x = torch.randint(0, 9, (2,), generator=gen).tolist()
            crop = image[:, y:y + 32, x:x + 32]
            if torch.rand((), generator=gen) < 0.5:
                crop = crop.flip(-1)
            out.append(crop)
        return to_model_input(torch.stack(out))

    return view(), view()


@pytest.fixture(scope="module")
def views() -> tuple[torch.Tensor, torch.Tensor]:
    view_a, view_b = _two_views()
    assert not torch.equal(view_a, view_b)
    return view_a, view_b


def _tiny_backbone(dim: int = 16) -> nn.Module:
    """A one-layer CNN standing in for ResNet-18 where only the method's mechanics matter."""
    return nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _small_cnn() -> nn.Module:
    """A 3-layer CNN with 64-d features: learns in a few steps, runs in milliseconds on CPU."""
    return nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _momentum_modules(method: SSLMethod) -> list[nn.Module]:
    return [method.backbone_momentum, method.projection_head_momentum]


# ---------------------------------------------------------------------- registry
def test_registry_holds_the_eight_methods():
    assert sorted(METHODS) == sorted(ALL + WITH_TARGETS)
    for name, cls in METHODS.items():
        assert cls.name == name and issubclass(cls, SSLMethod)
        assert cls.needs_targets == (name in WITH_TARGETS)
        defaults = cls.default_hparams()
        assert defaults["feature_dim"] == 512
        defaults["feature_dim"] = -1  # a fresh copy every call
        assert cls.default_hparams()["feature_dim"] == 512


def test_unknown_method_name_lists_the_six():
    with pytest.raises(ValueError) as info:
        build_method("dino", _tiny_backbone(), feature_dim=16)
    for name in ALL + WITH_TARGETS:
        assert name in str(info.value)
    assert isinstance(build_method("Barlow_Twins", _tiny_backbone(), feature_dim=16), METHODS["barlowtwins"])
    assert isinstance(build_method("MoCo-v2", _tiny_backbone(), feature_dim=16), METHODS["moco"])


@pytest.mark.parametrize("name, overrides, words", [
    ("simclr", {"temprature": 0.5}, ["temprature", "temperature"]),
    ("simclr", {"temperature": 0.0}, ["temperature", "0.5"]),
    ("byol", {"momentum_end": 1.5}, ["momentum_end", "[0.0, 1.0]"]),
    ("moco", {"memory_bank_size": 0}, ["memory_bank_size", ">= 1"]),
    ("swav", {"n_prototypes": 1.5}, ["n_prototypes", "int"]),
    ("swav", {"sinkhorn_epsilon": 0.001}, ["sinkhorn_epsilon", "overflows"]),
    ("moco", {"symmetric": "yes"}, ["symmetric", "True or False"]),
    ("barlowtwins", {"loss_scale": 0.0}, ["loss_scale", "1/output_dim"]),
])
def test_invalid_hyperparameters_say_how_to_fix(name, overrides, words):
    with pytest.raises(ValueError) as info:
        build_method(name, _tiny_backbone(), feature_dim=16, **overrides)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("name", ALL)
def test_methods_without_targets_ignore_them(name):
    from saliencyssl.target import TargetBatch

    view_a, view_b = _two_views(n=4)
    targets = TargetBatch(torch.zeros(4, 1, 32, 32), torch.zeros(4, 1, 32, 32, dtype=torch.bool),
                          torch.zeros(4, 1, 32, 32, dtype=torch.long))
    losses = []
    for args in ((), (targets, targets)):
        torch.manual_seed(0)
        method = build_method(name, _tiny_backbone(), feature_dim=16, **SMALL_HEADS[name]).eval()
        with torch.no_grad():
            losses.append(method(view_a, view_b, *args).item())  # forward, as DDP calls it
    assert losses[0] == losses[1]


def test_backbone_feature_dim_mismatch_is_explained(views):
    method = build_method("simclr", _tiny_backbone(16), **SMALL_HEADS["simclr"])  # default feature_dim=512
    with pytest.raises(ValueError, match="feature_dim=16"):
        method.training_loss(*views)


def test_views_are_validated(views):
    method = build_method("simclr", _tiny_backbone(), feature_dim=16, **SMALL_HEADS["simclr"])
    with pytest.raises(ValueError, match="same images"):
        method.training_loss(views[0], views[1][:-1])
    with pytest.raises(ValueError, match="at least 2"):
        method.training_loss(views[0][:1], views[1][:1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        method.training_loss(views[0][:, :1], views[1][:, :1])
    with pytest.raises(ValueError, match="progress"):
        method.before_step(1.5, 0)


# ---------------------------------------------------------------------- every method, ResNet-18
@pytest.mark.parametrize("name", ALL)
def test_builds_on_cifar_resnet18_and_backpropagates(name, views):
    views = (views[0][:8], views[1][:8])
    torch.manual_seed(0)
    method = build_method(name, resnet18_backbone(cifar_stem=True))
    assert method.hparams == {**type(method).default_hparams()}
    method.train()
    method.before_step(0.0, 1)
    loss = method.training_loss(*views)
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    method.after_backward(1)
    for pname, param in method.backbone.named_parameters():
        assert param.grad is not None, f"{name}: no gradient reached backbone.{pname}"
        assert torch.isfinite(param.grad).all()
    assert method.backbone.conv1.weight.grad.abs().sum() > 0
    assert method.backbone.layer4[1].conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_a_few_steps_lower_the_loss(name, views):
    torch.manual_seed(0)
    overrides = dict(SMALL_HEADS[name])
    if name == "moco":
        # The queue holds exactly the previous step's keys of this fixed batch, so the probe
        # below scores each query against the keys of all 16 images, before and after.
        overrides["memory_bank_size"] = 2 * BATCH
    method = build_method(name, _small_cnn(), feature_dim=64, **overrides).train()
    steps = 8
    # The recipe's peak lr (quoted at batch 128), decaying only slightly over these few steps.
    optimizer, scheduler = build_optimizer(method, batch_size=128, epochs=10, steps_per_epoch=steps)
    if name == "moco":
        method.training_loss(*views)  # fill the queue

    def probe() -> float:
        with torch.no_grad():  # no gradient, so MoCo does not enqueue
            return method.training_loss(*views).item()

    before = probe()
    for step in range(steps):
        method.before_step(step / (10 * steps - 1), epoch=1)
        loss = method.training_loss(*views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.after_backward(epoch=1)
        optimizer.step()
        scheduler.step()
    after = probe()
    assert math.isfinite(after)
    assert after < before - 1e-3 * max(1.0, abs(before)), f"{name}: loss {before:.4f} -> {after:.4f}"


# ---------------------------------------------------------------------- momentum encoders
@pytest.mark.parametrize("name", ["byol", "moco"])
def test_momentum_encoder_is_an_ema_copy_without_gradients(name, views):
    torch.manual_seed(0)
    method = build_method(name, _small_cnn(), feature_dim=64, **SMALL_HEADS[name]).train()
    online = [method.backbone, method.projection_head]
    target = _momentum_modules(method)
    for o, t in zip(online, target):
        assert o is not t
        for po, pt in zip(o.parameters(), t.parameters()):
            assert not pt.requires_grad and po.requires_grad
            assert torch.equal(po, pt) and po.data_ptr() != pt.data_ptr()
    optimizer, _ = build_optimizer(method, batch_size=128, epochs=1, steps_per_epoch=10)
    assert {id(p) for p in optimizer.param_groups[0]["params"]}.isdisjoint(
        id(p) for m in target for p in m.parameters())
    method.before_step(0.0, 0)  # online == target, so this leaves the target (up to rounding)
    snapshot = [p.detach().clone() for m in target for p in m.parameters()]
    loss = method.training_loss(*views)
    loss.backward()
    assert all(p.grad is None for m in target for p in m.parameters())
    optimizer.step()
    # online weights moved; the target only follows at the next before_step
    assert all(torch.equal(a, p) for a, p in zip(snapshot, (p for m in target for p in m.parameters())))
    method.before_step(0.5, 0)
    expected = 0.995 if name == "byol" else 0.99  # cosine 0.99 -> 1 halfway; MoCo constant 0.99
    assert method.current_momentum == pytest.approx(expected)
    moved = [not torch.equal(a, p) for a, p in zip(snapshot, (p for m in target for p in m.parameters()))]
    assert sum(moved) > len(moved) // 2
    # EMA: target = m * old_target + (1 - m) * online, checked on one tensor
    new_online = method.backbone[0].weight.detach()
    old_target = snapshot[0]
    assert torch.allclose(method.backbone_momentum[0].weight, expected * old_target + (1 - expected) * new_online,
                          atol=1e-6)
    method.before_step(1.0, 0)
    if name == "byol":
        assert method.current_momentum == 1.0


def test_moco_memory_bank_fills_with_normalised_keys(views):
    torch.manual_seed(0)
    method = build_method("moco", _small_cnn(), feature_dim=64,
                          **{**SMALL_HEADS["moco"], "memory_bank_size": 40}).train()
    bank = method.memory_bank
    assert tuple(bank.bank.shape) == (40, 32) and int(bank.bank_ptr) == 0
    view_a, view_b = views

    def expected_keys() -> torch.Tensor:
        torch.manual_seed(1)  # the key encoder shuffles; the result must not depend on it
        keys = torch.cat([method._key(view_b), method._key(view_a)])
        return F.normalize(keys, dim=1)

    keys = expected_keys()
    method.training_loss(view_a, view_b)
    assert int(bank.bank_ptr) == 2 * BATCH
    assert torch.allclose(bank.bank[:2 * BATCH], keys, atol=1e-5)
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(40), atol=1e-5)

    with torch.no_grad():  # evaluation does not enqueue
        method.training_loss(view_a, view_b)
    assert int(bank.bank_ptr) == 2 * BATCH

    keys = expected_keys()
    method.training_loss(view_a, view_b)  # wraps around: the last 8 slots, then back to 0
    assert int(bank.bank_ptr) == 0
    assert torch.allclose(bank.bank[2 * BATCH:], keys[:40 - 2 * BATCH], atol=1e-5)

    one_way = build_method("moco", _tiny_backbone(), feature_dim=16, symmetric=False,
                           **{**SMALL_HEADS["moco"], "memory_bank_size": 100}).train()
    one_way.training_loss(view_a, view_b)
    assert int(one_way.memory_bank.bank_ptr) == BATCH


# ---------------------------------------------------------------------- SwAV prototypes
def test_swav_prototypes_normalised_and_frozen_in_epoch_zero(views):
    torch.manual_seed(0)
    method = build_method("swav", _small_cnn(), feature_dim=64, **SMALL_HEADS["swav"]).train()
    weight = method.prototypes.heads[0].weight
    assert torch.allclose(weight.norm(dim=1), torch.ones(16), atol=1e-5)
    optimizer, _ = build_optimizer(method, batch_size=128, epochs=2, steps_per_epoch=4)
    assert any(p is weight for group in optimizer.param_groups for p in group["params"])
    assert method.prototypes_frozen(0) and not method.prototypes_frozen(1)

    def step(epoch: int) -> bool:
        """One training step; whether it changed the prototypes."""
        method.before_step(0.1, epoch)
        assert torch.allclose(weight.norm(dim=1), torch.ones(16), atol=1e-5)
        start = [p.detach().clone() for p in method.prototypes.parameters()]
        optimizer.zero_grad(set_to_none=True)
        method.training_loss(*views).backward()
        assert weight.grad is not None and weight.requires_grad
        method.after_backward(epoch)
        assert (weight.grad is None) == (epoch == 0)
        optimizer.step()
        return not all(torch.equal(a, p) for a, p in zip(start, method.prototypes.parameters()))

    conv = method.backbone[0].weight.detach().clone()
    assert not step(epoch=0) and not step(epoch=0)  # Adam (with weight decay) leaves them exactly
    assert not torch.equal(conv, method.backbone[0].weight)  # while the rest trains
    assert step(epoch=1)
    method.before_step(0.2, 1)
    assert torch.allclose(weight.norm(dim=1), torch.ones(16), atol=1e-5)


def test_barlow_twins_loss_is_lightlys_sum_over_output_dim(views):
    from lightly.loss import BarlowTwinsLoss

    torch.manual_seed(0)
    method = build_method("barlowtwins", _tiny_backbone(), feature_dim=16, **SMALL_HEADS["barlowtwins"]).eval()
    with torch.no_grad():
        z_a = method.projection_head(method.backbone(views[0]))
        z_b = method.projection_head(method.backbone(views[1]))
        summed = BarlowTwinsLoss(lambda_param=5e-3)(z_a, z_b)
        assert method.training_loss(*views).item() == pytest.approx(summed.item() / 64, rel=1e-5)
        method.loss_scale = 1.0  # what loss_scale=1.0 sets
        assert method.training_loss(*views).item() == pytest.approx(summed.item(), rel=1e-5)
    assert build_method("barlowtwins", _tiny_backbone(), feature_dim=16, loss_scale=1.0).loss_scale == 1.0


# ---------------------------------------------------------------------- optimizer recipe
@pytest.mark.parametrize("name, kind, peak", [
    ("simclr", torch.optim.SGD, 0.06 * 512 / 128),
    ("moco", torch.optim.SGD, 0.06 * 512 / 128),
    ("byol", torch.optim.SGD, 0.06 * 512 / 128),
    ("barlowtwins", torch.optim.SGD, 0.06 * 512 / 128),
    ("simsiam", torch.optim.SGD, 0.06),             # lightly: no batch scaling for SimSiam
    ("swav", torch.optim.Adam, 1e-3 * 512 / 128),
])
def test_build_optimizer_gives_the_recipe_and_a_per_step_cosine(name, kind, peak):
    method = build_method(name, _tiny_backbone(), feature_dim=16, **SMALL_HEADS[name])
    epochs, steps_per_epoch = 3, 5
    optimizer, scheduler = build_optimizer(method, batch_size=512, epochs=epochs, steps_per_epoch=steps_per_epoch)
    assert isinstance(optimizer, kind) and isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    group = optimizer.param_groups[0]
    if kind is torch.optim.SGD:
        assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    else:
        assert group["weight_decay"] == 1e-6
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert {id(p) for p in group["params"]} == trainable
    total = epochs * steps_per_epoch
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(peak)
    for t, lr in enumerate(lrs):
        assert lr == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * t / total)))
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    at_128, _ = build_optimizer(method, batch_size=128, epochs=1, steps_per_epoch=1)
    assert at_128.param_groups[0]["lr"] == pytest.approx(1e-3 if name == "swav" else 0.06)
    custom, _ = build_optimizer(method, batch_size=512, epochs=1, steps_per_epoch=1, lr=0.01)
    assert custom.param_groups[0]["lr"] == 0.01


def test_simsiam_fixed_predictor_rate_stays_at_the_peak_and_resumes(tmp_path):
    method = build_method("simsiam", _tiny_backbone(), feature_dim=16, fix_predictor_lr=True, **SMALL_HEADS["simsiam"])
    optimizer, scheduler = build_optimizer(method, batch_size=128, epochs=2, steps_per_epoch=3)
    scheduled, fixed = optimizer.param_groups
    predictor = {id(p) for p in method.prediction_head.parameters()}
    assert {id(p) for p in fixed["params"]} == predictor
    assert {id(p) for p in scheduled["params"]} == {id(p) for p in method.parameters() if p.requires_grad} - predictor
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert fixed["lr"] == pytest.approx(0.06) and scheduled["lr"] < 0.06 / 2
    # The schedule's state (both groups' factors) survives a checkpoint, as pretrain.py saves it.
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
    again, again_scheduler = build_optimizer(method, batch_size=128, epochs=2, steps_per_epoch=3)
    again_scheduler.load_state_dict(torch.load(tmp_path / "scheduler.pt", weights_only=True))
    assert again_scheduler.last_epoch == 4
    # Off (the default, lightly's recipe): one group on the schedule.
    plain = build_method("simsiam", _tiny_backbone(), feature_dim=16, **SMALL_HEADS["simsiam"])
    assert len(build_optimizer(plain, batch_size=128, epochs=2, steps_per_epoch=3)[0].param_groups) == 1
    with pytest.raises(ValueError, match="fix_predictor_lr"):
        build_method("simsiam", _tiny_backbone(), feature_dim=16, fix_predictor_lr=1, **SMALL_HEADS["simsiam"])


def test_build_optimizer_rejects_bad_arguments():
    method = build_method("simclr", _tiny_backbone(), feature_dim=16, **SMALL_HEADS["simclr"])
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_optimizer(method, batch_size=128, epochs=1, steps_per_epoch=0)
    with pytest.raises(ValueError, match="lr"):
        build_optimizer(method, batch_size=128, epochs=1, steps_per_epoch=1, lr=-1.0)
    with pytest.raises(TypeError, match="SSLMethod"):
        build_optimizer(nn.Linear(2, 2), batch_size=128, epochs=1, steps_per_epoch=1)


# ---------------------------------------------------------------------- precision, distribution
@pytest.mark.parametrize("name", ALL)
def test_losses_are_float32_under_fp16_autocast(name):
    torch.manual_seed(0)
    method = build_method(name, _tiny_backbone(), feature_dim=16, **SMALL_HEADS[name]).train()
    view_a, view_b = _two_views(n=8)
    method.before_step(0.0, 1)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = method.training_loss(view_a, view_b)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(method.backbone[0].weight.grad).all()


def test_distributed_flag_turns_on_lightly_gathers():
    common = {"feature_dim": 16}
    assert build_method("simclr", _tiny_backbone(), distributed=True, **common).criterion.gather_distributed
    assert build_method("barlowtwins", _tiny_backbone(), distributed=True, **common).criterion.gather_distributed
    assert build_method("swav", _tiny_backbone(), distributed=True, **common).criterion.sinkhorn_gather_distributed
    moco = build_method("moco", _tiny_backbone(), distributed=True, **common)
    assert moco.criterion.gather_distributed and moco.memory_bank.gather_distributed
    assert not build_method("simclr", _tiny_backbone(), **common).criterion.gather_distributed
    # single process: the gathers are no-ops, the loss still works
    loss = build_method("simclr", _tiny_backbone(), distributed=True, **common).training_loss(*_two_views(n=4))
    assert torch.isfinite(loss)


def _gloo_worker(rank: int, world: int, store: str, results: dict) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        view_a, view_b = _two_views(n=8)
        rows = slice(rank * 4, rank * 4 + 4)
        out = {}
        for name in ("simclr", "swav", "barlowtwins"):
            torch.manual_seed(0)
            local = build_method(name, _tiny_backbone(), distributed=True, feature_dim=16, **SMALL_HEADS[name]).eval()
            with torch.no_grad():
                out[name] = local.training_loss(view_a[rows], view_b[rows]).item()
        torch.manual_seed(0)
        moco = build_method("moco", _tiny_backbone(), distributed=True, feature_dim=16, **SMALL_HEADS["moco"]).train()
        moco.training_loss(view_a[rows], view_b[rows])
        out["moco_ptr"] = int(moco.memory_bank.bank_ptr)
        out["moco_bank"] = moco.memory_bank.bank[:16].clone()
        torch.manual_seed(0)
        simclr = build_method("simclr", _tiny_backbone(), distributed=True, feature_dim=16,
                              **SMALL_HEADS["simclr"]).eval()
        ddp = DistributedDataParallel(simclr)
        ddp(view_a[rows], view_b[rows]).backward()
        out["grad"] = simclr.backbone[0].weight.grad.clone()
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_gather_matches_the_global_batch(tmp_path):
    """Two gloo processes with 4 images each give the loss of one process with all 8."""
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    r0, r1 = results[0], results[1]
    view_a, view_b = _two_views(n=8)
    for name in ("simclr", "swav"):
        torch.manual_seed(0)
        single = build_method(name, _tiny_backbone(), feature_dim=16, **SMALL_HEADS[name]).eval()
        with torch.no_grad():
            full = single.training_loss(view_a, view_b).item()
        assert (r0[name] + r1[name]) / 2 == pytest.approx(full, rel=1e-4), name
    assert r0["barlowtwins"] == pytest.approx(r1["barlowtwins"], rel=1e-5)  # one all-reduced C
    assert r0["moco_ptr"] == r1["moco_ptr"] == 16  # keys of both processes, both views
    assert torch.allclose(r0["moco_bank"], r1["moco_bank"])
    # The gradient DDP leaves on each process (the mean of the two processes' gradients, which flow back
    # through the gathered embeddings) is the gradient of one process with all 8 images.
    torch.manual_seed(0)
    single = build_method("simclr", _tiny_backbone(), feature_dim=16, **SMALL_HEADS["simclr"]).eval()
    single.training_loss(view_a, view_b).backward()
    assert torch.allclose(r0["grad"], single.backbone[0].weight.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_fp16_autocast_step(name):
    torch.manual_seed(0)
    method = build_method(name, resnet18_backbone(cifar_stem=True)).cuda().train()
    optimizer, _ = build_optimizer(method, batch_size=128, epochs=2, steps_per_epoch=2)
    scaler = torch.amp.GradScaler("cuda")
    view_a, view_b = (v.cuda() for v in _two_views())
    for epoch in range(2):
        method.before_step(epoch / 3, epoch)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = method.training_loss(view_a, view_b)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        method.after_backward(epoch)
        scaler.step(optimizer)
        scaler.update()
    assert all(torch.isfinite(p).all() for p in method.parameters())

