"""Make one image folder of several: a sub-folder of symbolic links per source folder.

Pretraining reads one folder; the photo experiments pretrain on two sets of unlabelled photos
(street photos and BSDS500), so this links them side by side without copying:

    python experiments/link_folders.py runs/data/photos_unlabelled \\
        ../shared/data/clothing_parsing/unlabelled ../shared/data/bsds500_test/images

gives ``runs/data/photos_unlabelled/unlabelled/*.jpg`` and ``.../images/*.jpg`` (named after each
source folder; a clash adds the parent's name). The links point at absolute paths; the pixels,
and so the content hashes and cached targets, are the sources'.

``--part i/n`` links every n-th image of each source in sorted order, starting at the i-th
(counting from 0): parts ``0/2`` and ``1/2`` of a folder are two disjoint halves, so one half can
train a surrogate and the other score it:

    python experiments/link_folders.py runs/data/horses_a ../shared/data/weizmann_horses/images --part 0/2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saliencyssl.imageio import list_images


def parse_part(text: str) -> tuple[int, int]:
    """``"i/n"`` to ``(i, n)`` with ``0 <= i < n`` (argparse's ``type`` of ``--part``)."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected i/n, e.g. 0/2 for the first of two halves") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: i must be in 0..n-1 and n at least 1, e.g. 0/2 or 1/2")
    return index, count


def link_folders(out: Path, sources: list[Path], part: tuple[int, int] = (0, 1)) -> int:
    """Link every image of ``sources`` under ``out`` (with ``part=(i, n)``, every n-th of each source in
    sorted order from the i-th); returns how many links were made."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    used: set[str] = set()
    index, every = part
    for source in sources:
        name = source.name if source.name not in used else f"{source.parent.name}_{source.name}"
        used.add(name)
        for image in list_images(source)[index::every]:
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
    parser.add_argument("--part", type=parse_part, default=(0, 1), metavar="I/N",
                        help="link every N-th image of each source in sorted order, from the I-th (from 0); "
                             "default 0/1, all of them")
    args = parser.parse_args(argv)
    missing = [s for s in args.sources if not s.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    print(f"linked {link_folders(args.out, args.sources, args.part)} images into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
