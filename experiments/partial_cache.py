"""A cache holding the exact targets of only part of an image set: the rest must come from the surrogate.

The downstream-parity runs pretrain with ``--aug-source cache,surrogate`` on a set whose images are
half labelled. This copies the entries of a share of the images (chosen by content hash, so the
same images whatever the order or seed) from a full cache into a new one:

    python experiments/partial_cache.py runs/caches/cifar ../shared/data/cifar10/train \\
        runs/caches/cifar_half --share 0.5
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.saliency import LabellerConfig


def in_share(image_hash: str, share: float) -> bool:
    """Whether an image (by content hash) is in the labelled share (a salted hash, uniform in [0, 1))."""
    value = int.from_bytes(hashlib.blake2b(f"partial:{image_hash}".encode(), digest_size=8).digest(), "big")
    return value / 2 ** 64 < share


def copy_share(source: Path, images: Path, out: Path, share: float, config: LabellerConfig) -> tuple[int, int]:
    """Copy the targets of the images in ``share``; returns ``(copied, images)``."""
    fingerprint = config.fingerprint()
    src = TargetCache(source, fingerprint, create=False)
    dst = TargetCache(out, fingerprint, params=config.params())
    hashes = open_image_set(images).hashes()
    copied = 0
    for h in dict.fromkeys(hashes):
        if in_share(h, share):
            data = src.get_encoded(h)
            if data is not None:
                dst.put_encoded(h, data)
                copied += 1
    return copied, len(hashes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a cache holding every image's target")
    parser.add_argument("images", type=Path, help="the image set")
    parser.add_argument("out", type=Path, help="the new cache")
    parser.add_argument("--share", type=float, default=0.5, help="share of the images kept (default %(default)s)")
    args = parser.parse_args(argv)
    copied, total = copy_share(args.source, args.images, args.out, args.share, LabellerConfig())
    print(f"copied the targets of {copied} of {total} images into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
