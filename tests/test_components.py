"""Connected-component labelling of predicted boundaries (saliencyssl.target.label_components).

The log-depth torch version (run here on CPU tensors) must give exactly the labels of the CPU
path (OpenCV), and both must follow the written rule, checked against an independent reference
built on scipy.ndimage.label and the round-by-round boundary fill.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saliencyssl.target import (TargetBatch, _component_maxima, _label_components_opencv,
                                _label_components_torch, label_components)


# --- shapes ---------------------------------------------------------------------------------------

def snake(h: int, w: int) -> np.ndarray:
    """A one-pixel-wide serpentine path: every other row, joined alternately at the right and left end."""
    m = np.zeros((h, w), bool)
    m[::2] = True
    for r in range(1, h, 2):
        m[r, w - 1 if (r // 2) % 2 == 0 else 0] = True
    return m


def column_snake(h: int, w: int) -> np.ndarray:
    """The serpentine path along columns: every horizontal run is a single pixel."""
    return snake(w, h).T.copy()


def spiral(h: int, w: int) -> np.ndarray:
    """A one-pixel-wide rectangular spiral path from the top-left corner inwards, one-pixel gaps."""
    m = np.zeros((h, w), bool)
    y = x = 0
    dy, dx = 0, 1
    m[0, 0] = True

    def can_step(dy: int, dx: int) -> bool:
        y1, x1, y2, x2 = y + dy, x + dx, y + 2 * dy, x + 2 * dx
        if not (0 <= y1 < h and 0 <= x1 < w) or m[y1, x1]:
            return False
        return not (0 <= y2 < h and 0 <= x2 < w) or not m[y2, x2]

    while True:
        if not can_step(dy, dx):
            dy, dx = dx, -dy  # turn right
            if not can_step(dy, dx):
                return m
        y, x = y + dy, x + dx
        m[y, x] = True


def comb(h: int, w: int, up: bool = False) -> np.ndarray:
    """A spine row with one-pixel teeth in every other column (teeth hanging down, or standing up)."""
    m = np.zeros((h, w), bool)
    m[-1 if up else 0] = True
    m[:, ::2] = True
    return m


def checkerboard(h: int, w: int) -> np.ndarray:
    """Every inside pixel its own component; every outside pixel has four labelled neighbours."""
    return np.add.outer(np.arange(h), np.arange(w)) % 2 == 0


def maze(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A perfect maze (a random spanning tree of the cells at even coordinates): long branching corridors."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    seen = np.zeros((ch, cw), bool)
    stack = [(0, 0)]
    seen[0, 0] = m[0, 0] = True
    while stack:
        y, x = stack[-1]
        free = [(y + a, x + b) for a, b in ((0, 1), (1, 0), (0, -1), (-1, 0))
                if 0 <= y + a < ch and 0 <= x + b < cw and not seen[y + a, x + b]]
        if not free:
            stack.pop()
            continue
        ny, nx = free[rng.integers(len(free))]
        seen[ny, nx] = m[2 * ny, 2 * nx] = m[y + ny, x + nx] = True
        stack.append((ny, nx))
    return m


def one_pixel(h: int, w: int) -> np.ndarray:
    """A single inside pixel: the boundary fill must reach the far corners."""
    m = np.zeros((h, w), bool)
    m[h // 3, w // 3] = True
    return m


SHAPES = {"snake": snake, "column_snake": column_snake, "spiral": spiral, "comb": comb,
          "comb_up": lambda h, w: comb(h, w, up=True), "checkerboard": checkerboard, "maze": maze,
          "one_pixel": one_pixel, "full": lambda h, w: np.ones((h, w), bool),
          "empty": lambda h, w: np.zeros((h, w), bool)}


def batch(*masks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks))[:, None]


# --- an independent reference of the rule ---------------------------------------------------------

def reference_labels(inside: torch.Tensor) -> torch.Tensor:
    """The labels by their definition: scipy's 4-connected components named 1 + their largest raster
    index, then outside pixels filled round by round from their 4-neighbours' previous labels."""
    from scipy import ndimage

    out = []
    for image in inside[:, 0].numpy():
        h, w = image.shape
        comp, count = ndimage.label(image)  # default structure: 4-connectivity
        top = np.zeros(count + 1, np.int64)
        np.maximum.at(top, comp.ravel(), np.arange(1, h * w + 1))
        top[0] = 0
        labels = top[comp]
        while (labels == 0).any() and count:
            padded = np.pad(labels, 1)
            grown = np.max([padded[1:-1, :-2], padded[1:-1, 2:], padded[:-2, 1:-1], padded[2:, 1:-1]], axis=0)
            labels = np.where(labels == 0, grown, labels)
        out.append(labels)
    return torch.from_numpy(np.stack(out))[:, None]


def assert_paths_agree(inside: torch.Tensor) -> None:
    torch_labels = _label_components_torch(inside)
    assert torch_labels.dtype == torch.int64 and torch_labels.shape == inside.shape
    assert torch.equal(torch_labels, _label_components_opencv(inside))


# --- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1), (2, 3), (7, 5), (32, 32), (23, 61)])
def test_random_masks_match_opencv_at_every_density(size):
    g = torch.Generator().manual_seed(size[0] * 100 + size[1])
    for density in (0.0, 0.05, 0.3, 0.5, 0.6, 0.7, 0.9, 1.0):
        assert_paths_agree(torch.rand(5, 1, *size, generator=g) < density)


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("size", [(31, 31), (40, 17), (17, 40), (1, 25), (25, 1), (2, 2)])
def test_adversarial_shapes_match_opencv(name, size):
    assert_paths_agree(batch(SHAPES[name](*size)))


def test_batches_mixing_shapes_match_opencv_and_the_reference():
    g = torch.Generator().manual_seed(3)
    h, w = 29, 37
    masks = [f(h, w) for f in SHAPES.values()] + [(torch.rand(h, w, generator=g) < d).numpy()
                                                   for d in (0.2, 0.6, 0.95)]
    inside = batch(*masks)
    labels = _label_components_torch(inside)
    assert torch.equal(labels, _label_components_opencv(inside))
    assert torch.equal(labels, reference_labels(inside))
    # Components of different images do not interfere: each image alone gives the same labels.
    for i in range(len(masks)):
        assert torch.equal(_label_components_torch(inside[i:i + 1]), labels[i:i + 1])


def test_labels_follow_the_rule_on_hand_made_cases():
    # Components are named 1 + their largest raster index; an outside pixel takes the nearest
    # label, the larger one on a tie, whatever the labels' order.
    inside = batch(np.array([[1, 0, 1],
                             [1, 0, 0]], bool))
    assert _label_components_torch(inside)[0, 0].tolist() == [[4, 4, 3], [4, 4, 3]]
    row = batch(np.array([[1, 0, 0, 0, 1]], bool))
    assert _label_components_torch(row)[0, 0].tolist() == [[1, 1, 5, 5, 5]]
    for case in (inside, row):
        assert torch.equal(_label_components_torch(case), reference_labels(case))
        assert torch.equal(_label_components_opencv(case), reference_labels(case))
    empty = torch.zeros(2, 1, 4, 6, dtype=torch.bool)
    assert not _label_components_torch(empty).any()
    full = torch.ones(2, 1, 4, 6, dtype=torch.bool)
    assert bool((_label_components_torch(full) == 24).all())
    assert _label_components_torch(torch.zeros(0, 1, 5, 5, dtype=torch.bool)).shape == (0, 1, 5, 5)


def test_reference_agrees_with_opencv_on_random_thick_boundaries():
    g = torch.Generator().manual_seed(11)
    inside = torch.rand(6, 1, 24, 19, generator=g) < 0.15  # few, small components; wide fills
    assert torch.equal(_label_components_opencv(inside), reference_labels(inside))
    assert torch.equal(_label_components_torch(inside), reference_labels(inside))


@pytest.mark.parametrize("shape", ["column_snake", "spiral", "maze"])
def test_long_paths_need_logarithmically_few_rounds(shape):
    rounds = {}
    for side in (64, 128):
        mask = SHAPES[shape](side - 1, side - 1)
        length = int(mask.sum())
        labels, rounds[side] = _component_maxima(batch(mask))
        assert int(labels.max()) > 0 and len(torch.unique(labels[labels > 0])) == 1  # one component
        assert rounds[side] <= math.log2(length), (shape, side, length, rounds[side])
    # Doubling the side quadruples the path's length but adds at most a couple of rounds.
    assert rounds[128] <= rounds[64] + 2


def test_a_round_cap_is_honoured_and_leaves_a_long_snake_split():
    inside = batch(column_snake(32, 32))
    capped = label_components(inside, max_iterations=1)
    assert len(torch.unique(capped)) > 1
    assert torch.equal(label_components(inside, max_iterations=100), _label_components_opencv(inside))
    _, rounds = _component_maxima(inside, max_rounds=2)
    assert rounds == 2


def test_from_channels_gives_the_same_targets_with_either_path(monkeypatch):
    import saliencyssl.target as target

    g = torch.Generator().manual_seed(5)
    channels = torch.rand(8, 3, 24, 24, generator=g)
    channels[:4, 2] = (channels[:4, 2] > 0.8).float()  # thin boundaries in half the batch
    cpu = TargetBatch.from_channels(channels)
    monkeypatch.setattr(target, "label_components", lambda inside: _label_components_torch(inside))
    other = TargetBatch.from_channels(channels)
    assert torch.equal(cpu.regions, other.regions) and torch.equal(cpu.mask, other.mask)


def test_from_channels_cuts_the_boundary_at_its_own_threshold():
    """A faint boundary line (0.4) across the image: cut at the shared 0.5 it draws nothing (one region); at a
    boundary threshold of 0.3 it splits the image in two, and the mask (0.4 everywhere, cut at 0.5) stays empty."""
    channels = torch.full((1, 3, 8, 8), 0.4)
    channels[:, 2] = 0.0
    channels[:, 2, 4, :] = 0.4
    assert len(torch.unique(TargetBatch.from_channels(channels).regions)) == 1
    cut = TargetBatch.from_channels(channels, boundary_threshold=0.3)
    assert len(torch.unique(cut.regions)) == 2
    assert torch.equal(cut.regions[0, 0, :4], torch.zeros(4, 8, dtype=cut.regions.dtype))
    assert not cut.mask.any()
    assert TargetBatch.from_channels(channels, threshold=0.3).mask.all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_labels_equal_the_cpu_labels():
    g = torch.Generator().manual_seed(7)
    inside = torch.cat([torch.rand(16, 1, 48, 48, generator=g) < 0.6,
                        batch(*(f(48, 48) for f in SHAPES.values()))])
    on_gpu = label_components(inside.cuda())
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), label_components(inside))


def test_relabel_raster_refuses_more_regions_than_its_type_numbers():
    """Past 65,536 regions the uint16 cast folded labels onto each other unseen (two regions, one label)."""
    from saliencyssl.target import relabel_raster

    many = np.arange(70_000).reshape(280, 250) * 7
    with pytest.raises(ValueError, match="70,000 regions, more than the 65,536 a target can number"):
        relabel_raster(many)
    numbered = relabel_raster(many, np.int32)
    assert numbered.dtype == np.int32 and numbered.max() == 69_999 and numbered[0, 1] == 1
    assert relabel_raster(np.array([[5, 5, 2], [9, 2, 5]])).tolist() == [[0, 0, 1], [2, 1, 0]]
