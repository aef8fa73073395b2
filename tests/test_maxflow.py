"""Tests of the grid max-flow kernel against scipy's max-flow and hand-made cuts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from saliencyssl.saliency.maxflow import GRID_DIRECTIONS, grid_maxflow


def _edges(H, W):
    """(d, y, x) index arrays of the n-links that lie inside an H x W grid."""
    out = []
    for d, (dy, dx) in enumerate(GRID_DIRECTIONS):
        ys, xs = np.mgrid[0 : max(H - dy, 0), max(0, -dx) : W - max(0, dx)]
        out.append((d, ys.ravel(), xs.ravel(), ys.ravel() + dy, xs.ravel() + dx))
    return out


def _reference(tcap, ncap):
    """Max-flow value and source side computed with scipy (integer capacities only).

    The source side is every pixel that can NOT reach the sink in the residual graph of
    scipy's maximum flow (a reverse BFS from the sink over positive residual edges).
    """
    H, W = tcap.shape
    n = H * W
    src, snk = n, n + 1
    idx = np.arange(n).reshape(H, W)
    rows, cols, caps = [], [], []
    pos, neg = tcap > 0, tcap < 0
    rows += [np.full(pos.sum(), src), idx[neg]]
    cols += [idx[pos], np.full(neg.sum(), snk)]
    caps += [tcap[pos], -tcap[neg]]
    for d, y0, x0, y1, x1 in _edges(H, W):
        c = ncap[d, y0, x0]
        rows += [idx[y0, x0], idx[y1, x1]]
        cols += [idx[y1, x1], idx[y0, x0]]
        caps += [c, c]
    rows, cols, caps = (np.concatenate(a) for a in (rows, cols, caps))
    keep = caps > 0
    cap = sp.csr_matrix(
        (caps[keep].astype(np.int32), (rows[keep], cols[keep])), shape=(n + 2, n + 2)
    )
    res = maximum_flow(cap, src, snk)
    residual = (cap - res.flow).tocsr()
    residual.data[residual.data < 0] = 0  # cannot happen for a valid flow; be safe
    residual.eliminate_zeros()
    order = breadth_first_order(
        residual.T.tocsr(), snk, directed=True, return_predecessors=False
    )
    reach = np.zeros(n + 2, bool)
    reach[order] = True
    return float(res.flow_value), ~reach[:n].reshape(H, W)


def _cut_value(tcap, ncap, source_side):
    """Capacity of the s-t cut that puts ``source_side`` with the source."""
    H, W = tcap.shape
    value = tcap[(tcap > 0) & ~source_side].sum() - tcap[(tcap < 0) & source_side].sum()
    for d, y0, x0, y1, x1 in _edges(H, W):
        crossing = source_side[y0, x0] != source_side[y1, x1]
        value += ncap[d, y0, x0][crossing].sum()
    return value


def _random_int_graph(rng, H, W, zero_frac=0.3):
    tcap = rng.integers(-20, 21, (H, W)).astype(np.float64)
    tcap[rng.random((H, W)) < zero_frac] = 0
    ncap = rng.integers(0, 15, (4, H, W)).astype(np.float64)
    ncap[rng.random((4, H, W)) < zero_frac] = 0
    return tcap, ncap


def _grabcut_like_int_graph(rng, H, W, band=False):
    """Smooth image, contrast-sensitive n-links, log-likelihood-like t-links, fixed pixels.

    Fixed pixels (capacity 401 > the at most 8 * 50 of their n-links) are either 20% of the
    pixels at random (``band=False``) or, as in SaliencyCut's trimap, a core inside the object
    and everything outside a dilated object (``band=True``).
    """
    img = rng.standard_normal((H + 8, W + 8)).cumsum(0).cumsum(1)
    img = img[8:, 8:] - img[:-8, 8:] - img[8:, :-8] + img[:-8, :-8]  # box-smoothed noise
    yy, xx = np.mgrid[:H, :W]
    fg = ((yy - H / 2) / (0.35 * H)) ** 2 + ((xx - W / 2) / (0.3 * W)) ** 2 < 1
    img = img / img.std() + 3.0 * fg
    ncap = np.zeros((4, H, W))
    sq = []
    for d, y0, x0, y1, x1 in _edges(H, W):
        sq.append((img[y0, x0] - img[y1, x1]) ** 2)
    beta = 1.0 / (2.0 * np.mean(np.concatenate(sq))) if sum(map(len, sq)) else 0.0
    for (d, y0, x0, y1, x1), s in zip(_edges(H, W), sq):
        dy, dx = GRID_DIRECTIONS[d]
        ncap[d, y0, x0] = np.rint(50.0 / (np.sqrt(2) if dy and dx else 1) * np.exp(-beta * s))
    tcap = np.rint(4.0 * ((img - 0.0) ** 2 - (img - 3.0) ** 2) + rng.normal(0, 3, (H, W)))
    if band:
        e = ((yy - H / 2) / (0.35 * H)) ** 2 + ((xx - W / 2) / (0.3 * W)) ** 2
        tcap[e < 0.3] = 401
        tcap[e > 1.8] = -401
    else:
        fixed = rng.random((H, W)) < 0.2
        tcap[fixed & fg] = 401
        tcap[fixed & ~fg] = -401
    return tcap, ncap


SHAPES = [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 2), (3, 5), (5, 3), (7, 7), (6, 11), (12, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_random_grids_match_scipy(shape):
    rng = np.random.default_rng(100 * shape[0] + shape[1])
    for _ in range(25):
        tcap, ncap = _random_int_graph(rng, *shape, zero_frac=rng.choice([0.0, 0.3, 0.7]))
        flow, source_side = grid_maxflow(tcap, ncap)
        ref_flow, ref_side = _reference(tcap, ncap)
        assert flow == ref_flow
        assert source_side.shape == shape and source_side.dtype == bool
        np.testing.assert_array_equal(source_side, ref_side)


@pytest.mark.parametrize("shape", [(16, 16), (20, 31), (1, 40), (40, 1), (33, 25)])
def test_grabcut_like_grids_match_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    for i in range(6):
        tcap, ncap = _grabcut_like_int_graph(rng, *shape, band=bool(i % 2))
        flow, source_side = grid_maxflow(tcap, ncap)
        ref_flow, ref_side = _reference(tcap, ncap)
        assert flow == ref_flow
        np.testing.assert_array_equal(source_side, ref_side)


def test_many_ties_match_scipy():
    # tiny capacity range: many saturated edges and many equal-valued min cuts
    rng = np.random.default_rng(7)
    for _ in range(60):
        H, W = rng.integers(1, 9, 2)
        tcap = rng.integers(-2, 3, (H, W)).astype(float)
        ncap = rng.integers(0, 3, (4, H, W)).astype(float)
        flow, source_side = grid_maxflow(tcap, ncap)
        ref_flow, ref_side = _reference(tcap, ncap)
        assert flow == ref_flow
        np.testing.assert_array_equal(source_side, ref_side)


def test_decided_pixels_and_their_ties_match_scipy():
    # pixels whose terminal capacity reaches the sum of their n-links are decided up front;
    # equality is a tie that goes to the source side for a source pixel but not a sink pixel
    rng = np.random.default_rng(5)
    for _ in range(80):
        H, W = rng.integers(1, 8, 2)
        ncap = rng.integers(0, 4, (4, H, W)).astype(float)
        total = np.zeros((H, W))
        for d, y0, x0, y1, x1 in _edges(H, W):
            np.add.at(total, (y0, x0), ncap[d, y0, x0])
            np.add.at(total, (y1, x1), ncap[d, y0, x0])
        sign = rng.choice([-1.0, 1.0], (H, W))
        tcap = sign * (total + rng.integers(-2, 3, (H, W)))
        tcap[rng.random((H, W)) < 0.2] = 0
        flow, source_side = grid_maxflow(tcap, ncap)
        ref_flow, ref_side = _reference(tcap, ncap)
        assert flow == ref_flow
        np.testing.assert_array_equal(source_side, ref_side)


def test_all_pixels_decided():
    rng = np.random.default_rng(9)
    ncap = rng.integers(0, 10, (4, 8, 9)).astype(float)
    tcap = rng.choice([-1000.0, 1000.0], (8, 9))
    flow, source_side = grid_maxflow(tcap, ncap)
    ref_flow, ref_side = _reference(tcap, ncap)
    assert flow == ref_flow
    np.testing.assert_array_equal(source_side, tcap > 0)
    np.testing.assert_array_equal(ref_side, tcap > 0)


def test_known_cut_two_halves():
    H, W = 12, 10
    tcap = np.full((H, W), 100.0)
    tcap[:, W // 2 :] = -100.0
    ncap = np.full((4, H, W), 1000.0)
    # every edge that crosses between column W//2 - 1 and W//2 is weak
    for d, (dy, dx) in enumerate(GRID_DIRECTIONS):
        for x in range(W):
            if x + dx in range(W) and (x < W // 2) != (x + dx < W // 2):
                ncap[d, :, x] = 1.0
    flow, source_side = grid_maxflow(tcap, ncap)
    # H horizontal edges, (H - 1) down-right and (H - 1) down-left edges cross
    assert flow == H + 2 * (H - 1)
    expected = np.zeros((H, W), bool)
    expected[:, : W // 2] = True
    np.testing.assert_array_equal(source_side, expected)


def test_ties_go_to_source_side():
    n = np.zeros((4, 1, 2))
    n[0, 0, 0] = 5.0
    # n-link and both terminals saturate together: nothing reaches the sink
    flow, side = grid_maxflow(np.array([[5.0, -5.0]]), n)
    assert flow == 5.0 and side.tolist() == [[True, True]]
    # the pixel on the sink side keeps 5 of residual sink capacity
    flow, side = grid_maxflow(np.array([[5.0, -10.0]]), n * 2)
    assert flow == 5.0 and side.tolist() == [[False, False]]
    # isolated pixels and zero terminals are source side
    flow, side = grid_maxflow(np.zeros((3, 4)), np.zeros((4, 3, 4)))
    assert flow == 0.0 and side.all()
    flow, side = grid_maxflow(np.array([[-3.0]]), np.zeros((4, 1, 1)))
    assert flow == 0.0 and side.tolist() == [[False]]
    flow, side = grid_maxflow(np.array([[3.0]]), np.zeros((4, 1, 1)))
    assert flow == 0.0 and side.tolist() == [[True]]


def test_float_capacities_cut_equals_flow():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 13), (13, 1), (9, 14), (30, 25)]:
        for _ in range(5):
            tcap = rng.normal(0, 3, shape) * (rng.random(shape) < 0.8)
            ncap = rng.exponential(2.0, (4, *shape))
            flow, source_side = grid_maxflow(tcap, ncap)
            assert flow == pytest.approx(_cut_value(tcap, ncap, source_side), rel=1e-9, abs=1e-9)
            # any other cut costs at least as much (single-pixel flips)
            ys, xs = rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5)
            for y, x in zip(ys, xs):
                other = source_side.copy()
                other[y, x] = ~other[y, x]
                assert _cut_value(tcap, ncap, other) >= flow - 1e-9
            # scaling every capacity scales the flow and keeps the segmentation
            flow2, side2 = grid_maxflow(tcap * 4.0, ncap * 4.0)
            assert flow2 == pytest.approx(4.0 * flow, rel=1e-9, abs=1e-9)
            np.testing.assert_array_equal(side2, source_side)


def test_out_of_grid_entries_are_ignored_and_inputs_untouched():
    rng = np.random.default_rng(11)
    tcap, ncap = _random_int_graph(rng, 6, 7)
    flow, side = grid_maxflow(tcap, ncap)
    junk = ncap.copy()
    junk[0, :, -1] = np.nan  # right of the last column
    junk[1, -1, :] = -5.0
    junk[1, :, -1] = np.inf
    junk[2, -1, :] = np.nan
    junk[3, -1, :] = -1.0
    junk[3, :, 0] = np.nan  # down-left of the first column
    before = (tcap.copy(), junk.copy())
    flow2, side2 = grid_maxflow(tcap, junk)
    assert flow2 == flow
    np.testing.assert_array_equal(side2, side)
    np.testing.assert_array_equal(tcap, before[0])
    np.testing.assert_array_equal(junk, before[1])


def test_accepts_other_dtypes_and_empty_grid():
    t = np.array([[3, -2], [0, 1]], dtype=np.int16)
    n = np.ones((4, 2, 2), dtype=np.float32)
    flow, side = grid_maxflow(t, n)
    ref_flow, ref_side = _reference(t.astype(float), n.astype(float))
    assert flow == ref_flow and isinstance(flow, float)
    np.testing.assert_array_equal(side, ref_side)
    flow, side = grid_maxflow(np.zeros((0, 5)), np.zeros((4, 0, 5)))
    assert flow == 0.0 and side.shape == (0, 5)


@pytest.mark.parametrize(
    "tcap, ncap, match",
    [
        (np.zeros(5), np.zeros((4, 5)), "tcap must be a 2-D"),
        (np.zeros((3, 4)), np.zeros((4, 4, 3)), "ncap must have shape"),
        (np.zeros((3, 4)), np.zeros((3, 3, 4)), "ncap must have shape"),
        (np.full((2, 2), np.nan), np.zeros((4, 2, 2)), "tcap must be finite"),
        (np.full((2, 2), np.inf), np.zeros((4, 2, 2)), "tcap must be finite"),
        (np.zeros((2, 2)), np.full((4, 2, 2), -1.0), "must be non-negative"),
        (np.zeros((2, 2)), np.full((4, 2, 2), np.nan), "must be finite"),
        (np.zeros((2, 2), complex), np.zeros((4, 2, 2)), "real numbers"),
        (np.array([["a"]]), np.zeros((4, 1, 1)), "real numbers"),
    ],
)
def test_invalid_inputs_raise(tcap, ncap, match):
    with pytest.raises(ValueError, match=match):
        grid_maxflow(tcap, ncap)
