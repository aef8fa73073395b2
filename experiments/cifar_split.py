"""The CIFAR-10 training images the pretraining set does not hold: ``train50k`` without ``train``.

``train/`` holds the first 1,000 images per class of ``train50k/`` (PROVENANCE.md of the data), the
images the CIFAR-10 pretraining runs use. A surrogate that must never have seen those images (the
downstream-parity runs) trains on the other 40,000, linked into one folder:

    python experiments/cifar_split.py ../shared/data/cifar10/train50k runs/data/cifar40k --skip 1000

links ``train50k/<class>/NNNN.jpg`` for every file after the first ``--skip`` of each class (by name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def link_rest(source: Path, out: Path, skip: int) -> int:
    """Link each class folder's files after the first ``skip`` (sorted by name); returns how many."""
    count = 0
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir())[skip:]:
            target = out / folder.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(path.resolve())
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="train50k: one folder per class")
    parser.add_argument("out", type=Path)
    parser.add_argument("--skip", type=int, default=1000, help="files per class to leave out (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: {args.source} is not a folder", file=sys.stderr)
        return 2
    print(f"linked {link_rest(args.source, args.out, args.skip)} images into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
