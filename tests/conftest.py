"""Shared fixtures: where the real data lives, and small real images that always exist."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SALIENCYSSL_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs real data at {path} (the ../shared folder beside the checkout, or set SALIENCYSSL_SHARED)")
    return path


@pytest.fixture
def salbench() -> Path:
    return shared_path("data", "salbench")


@pytest.fixture
def cifar10() -> Path:
    return shared_path("data", "cifar10")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo that pip installs (scikit-image's Chelsea the cat), shrunk to 150x225 for speed."""
    import cv2
    import skimage.data

    img = skimage.data.chelsea()
    return cv2.resize(img, (225, 150), interpolation=cv2.INTER_AREA)
