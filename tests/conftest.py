"""Shared fixtures: where the real data lives, and small real images that always exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _paths import MISSING_REASON, SHARED


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(MISSING_REASON.format(path=path))
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One CPU thread for the module: on a 2-core machine shared with other jobs, more threads only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
