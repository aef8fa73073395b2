"""The colour GMM of the cut: Orchard-Bouman building, refinement, and the original's float32 density."""

from __future__ import annotations

import numpy as np

from saliencyssl.saliency.gmm import ColorGMM


def _two_clusters(n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    dark = rng.normal(0.2, 0.01, (n, 3))
    light = rng.normal(0.8, 0.01, (n, 3))
    return np.concatenate([dark, light])


def test_build_splits_until_the_components_are_tight():
    pixels = _two_clusters()
    gmm = ColorGMM(5)
    component = gmm.build(pixels, np.ones(len(pixels)))
    assert gmm.num_components == 2, "two tight clusters: one split, then every eigenvalue is under 0.01"
    assert len(set(component[:400])) == 1 and len(set(component[400:])) == 1
    assert component[0] != component[-1]
    np.testing.assert_allclose(sorted(gmm.means[:, 0]), [0.2, 0.8], atol=0.005)


def test_a_component_emptied_by_refinement_is_dropped_for_good():
    pixels = _two_clusters()
    gmm = ColorGMM(5)
    gmm.build(pixels, np.ones(len(pixels)))
    weights = np.r_[np.ones(400), np.zeros(400)]  # the light cluster loses all its weight
    component = gmm.refine(pixels, weights)
    assert gmm.num_components == 1 and gmm.means.shape == (1, 3)
    np.testing.assert_allclose(gmm.means[0], 0.2, atol=0.005)
    assert (component[:400] == 0).all() and (component[400:] == -1).all()
    # The cap stays lowered: a later build on both clusters makes one component, as the original does.
    gmm.build(pixels, np.ones(len(pixels)))
    assert gmm.num_components == 1


def test_mixture_density_is_float32_and_underflows_to_zero_far_away():
    pixels = _two_clusters()
    gmm = ColorGMM(5)
    gmm.build(pixels, np.ones(len(pixels)))
    near_far = np.array([[0.2, 0.2, 0.2], [0.3, 0.3, 0.3]])
    density = gmm.density(near_far)
    assert density.dtype == np.float32
    assert density[0] > 1.0
    # Ten standard deviations from the dark cluster in each channel the value is about 1e-61:
    # nonzero in float64, exactly 0 in float32, which the cut treats as a hard decision.
    exact = gmm.component_densities(near_far[1:]) @ gmm.weights / gmm.total_weight
    assert 0 < exact[0] < 1e-45 and density[1] == 0
