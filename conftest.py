"""Doctests of the package: the names its examples use, and the one module not to import.

``pytest`` collects the examples in the package's docstrings (``--doctest-modules``, pyproject.toml).
The examples of the SSL methods read like a training loop's body; this gives them real objects: a
batch of four 32 px images, two views of it, their targets and where a loop would be.
"""

from __future__ import annotations

import pytest

collect_ignore = ["saliencyssl/__main__.py"]  # importing it runs the command line


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import numpy as np
    import torch

    from saliencyssl.augment import SSLAugmentation
    from saliencyssl.ssl.backbone import resnet18_backbone
    from saliencyssl.target import TargetBatch

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator)
    regions = torch.randint(0, 3, (4, 1, 32, 32), generator=generator)
    targets = TargetBatch(torch.rand(4, 1, 32, 32, generator=generator), regions == 0, regions)
    augment = SSLAugmentation("default", 32)
    view_a, warped_a = augment(images, targets, return_targets=True)
    view_b, warped_b = augment(images, targets, return_targets=True)
    doctest_namespace.update(
        np=np, torch=torch, resnet18_backbone=resnet18_backbone, images=images, targets=targets, augment=augment,
        transform=augment, view_a=view_a, view_b=view_b, warped_a=warped_a, warped_b=warped_b, step=0,
        total_steps=10, epoch=0)
