"""Make one image folder of several: a sub-folder of symbolic links per source folder.

Pretraining reads one folder; the photo experiments pretrain on two sets of unlabelled photos
(street photos and BSDS500), so this links them side by side without copying:

    python experiments/link_folders.py runs/data/photos_unlabelled \\
        ../shared/data/clothing_parsing/unlabelled ../shared/data/bsds500_test/images

gives ``runs/data/photos_unlabelled/unlabelled/*.jpg`` and ``.../images/*.jpg`` (named after each
source folder; a clash adds the parent's name). The links point at absolute paths; the pixels,
and so the content hashes and cached targets, are the sources'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saliencyssl.imageio import list_images


def link_folders(out: Path, sources: list[Path]) -> int:
    """Link every image of ``sources`` under ``out``; returns how many links were made."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    used: set[str] = set()
    for source in sources:
        name = source.name if source.name not in used else f"{source.parent.name}_{source.name}"
        used.add(name)
        for image in list_images(source):
            target = out / name / image.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(image.resolve())
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the folder to make")
    parser.add_argument("sources", type=Path, nargs="+", help="image folders to link into it")
    args = parser.parse_args(argv)
    missing = [s for s in args.sources if not s.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    print(f"linked {link_folders(args.out, args.sources)} images into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
