#!/usr/bin/env python
"""Inspect, check, export and merge target caches; portable packs for multi-node training.

Subcommands:
  stats  CACHE_DIR                     what the cache holds, per labeller fingerprint
  verify CACHE_DIR|PACK                decode every entry (damaged ones are reported and removed) or
                                       check a pack's checksum; non-zero exit if anything is damaged
  export CACHE_DIR IMAGES_DIR --out PACK [--image-size S]
                                       the targets of a data set as one read-only, memory-mappable file
                                       (with --image-size, stored at the training size, so
                                       scripts/pretrain.py --pack maps it without copying)
  import SOURCE --cache CACHE_DIR      merge a pack or another cache directory into a cache; a source of
                                       another labeller fingerprint than the options given is refused

Labeller options (--scale, --max-side, --min-side, --cut-engine) select the fingerprint, as in
scripts/label.py.

Examples:
  python scripts/cache.py stats runs/cache
  python scripts/cache.py export runs/cache ../shared/data/cifar10/train --out runs/cifar_train.pack --image-size 32
  python scripts/cache.py import runs/cifar_train.pack --cache /scratch/cache
  torchrun --nnodes 2 --nproc_per_node 4 ... scripts/pretrain.py --pack runs/cifar_train.pack --aug-source cache ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saliencyssl.cache import CorruptTargetError, TargetCache
from saliencyssl.cache.packfile import MAGIC, PackError, open_pack, verify_pack, write_pack
from saliencyssl.imageio import ImageDecodeError
from saliencyssl.saliency.options import LABELLER_OPTIONS, add_labeller_options, labeller_config_from_args


def is_pack(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def cmd_stats(args) -> int:
    if not TargetCache.exists(args.cache):
        print(f"error: {args.cache} is not a cache folder (no cache.db); fill one with: python scripts/label.py "
              f"IMAGES --cache {args.cache}", file=sys.stderr)
        return 2
    probe = TargetCache(args.cache, "stats")
    fingerprints = probe.fingerprints()
    if not fingerprints:
        print(f"{args.cache}: empty cache")
        return 0
    print(f"{args.cache}: {probe.stats().disk_bytes / 1e6:.1f} MB on disk")
    for fp, params in sorted(fingerprints.items()):
        stats = TargetCache(args.cache, fp).stats()
        desc = ", ".join(f"{k}={v}" for k, v in (params or {}).items() if k in ("version", *LABELLER_OPTIONS))
        print(f"  fingerprint {fp}: {stats.entries} targets, {stats.bytes / 1e6:.2f} MB"
              f" ({stats.bytes / max(stats.entries, 1):.0f} B each)  [{desc or 'parameters not recorded'}]")
    return 0


def cmd_verify(args) -> int:
    if is_pack(args.path):
        pack = open_pack(args.path)
        ok = verify_pack(pack)
        print(f"{args.path}: pack of {len(pack)} targets, fingerprint {pack.fingerprint}: "
              f"{'checksum OK' if ok else 'CHECKSUM MISMATCH (damaged; export it again)'}")
        return 0 if ok else 1
    if not TargetCache.exists(args.path):
        print(f"error: {args.path} is neither a cache folder (no cache.db) nor a pack", file=sys.stderr)
        return 2
    damaged = 0
    fingerprints = TargetCache(args.path, "verify").fingerprints()
    for fp in sorted(fingerprints):
        report = TargetCache(args.path, fp).verify(remove=True)
        damaged += len(report.damaged)
        print(f"fingerprint {fp}: {report.checked} entries checked, {len(report.damaged)} damaged"
              + (" (removed; rerun scripts/label.py to recompute them)" if report.damaged else ""))
        for h in report.damaged[:20]:
            print(f"  damaged: {h}")
    return 1 if damaged else 0


def cmd_export(args) -> int:
    from saliencyssl.datasets import target_at_size
    from saliencyssl.datasets import open_image_set

    config = labeller_config_from_args(args)
    if not TargetCache.exists(args.cache):
        print(f"error: {args.cache} is not a cache folder (no cache.db); fill one with: python scripts/label.py "
              f"{args.images} --cache {args.cache}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from saliencyssl.hashing import content_hash

    cache = TargetCache(args.cache, config.fingerprint())
    image_set = open_image_set(args.images, keep_decoded=False)
    hashes = []
    for i in tqdm(range(len(image_set)), desc="hashing", unit="img", disable=len(image_set) < 2000):
        try:
            hashes.append(content_hash(image_set.image(i)))
        except ImageDecodeError as error:
            if not args.allow_missing:
                print(f"error: {error}; --allow-missing exports the other images' targets", file=sys.stderr)
                return 2
            hashes.append(None)
    undecodable = [name for name, h in zip(image_set.names, hashes) if h is None]
    if undecodable:
        print(f"{len(undecodable)} files cannot be decoded and are skipped, e.g. {undecodable[0]}", file=sys.stderr)
    items, missing = [], []
    seen = set()
    for name, h in zip(image_set.names, hashes):
        if h is None:
            continue
        if h in seen:
            continue
        seen.add(h)
        target = cache.get(h)
        if target is None:
            missing.append(name)
            continue
        items.append((h, target_at_size(target, args.image_size) if args.image_size else target))
    if missing:
        print(f"{len(missing)} of {len(image_set)} images have no target in {args.cache} (fingerprint "
              f"{config.fingerprint()}), e.g. {missing[0]}; label them first: python scripts/label.py {args.images} "
              f"--cache {args.cache}", file=sys.stderr)
        if not args.allow_missing:
            return 1
    if not items:
        print("error: nothing to export", file=sys.stderr)
        return 1
    path = write_pack(args.out, items, config.fingerprint(), config.params())
    size = path.stat().st_size
    print(f"wrote {path}: {len(items)} targets, {size / 1e6:.2f} MB, fingerprint {config.fingerprint()}"
          + (f", stored at {args.image_size}px" if args.image_size else ""))
    return 0


def cmd_import(args) -> int:
    config = labeller_config_from_args(args)
    fingerprint = config.fingerprint()
    if is_pack(args.source):
        try:
            pack = open_pack(args.source, expect_fingerprint=fingerprint)
        except PackError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if not verify_pack(pack):
            print(f"error: {args.source} fails its checksum (damaged); nothing imported. Export it again: "
                  f"python scripts/cache.py export CACHE_DIR IMAGES_DIR --out {args.source}", file=sys.stderr)
            return 1
        cache = TargetCache(args.cache, fingerprint, params=pack.params or config.params())
        count = cache.put_many((pack.hashes[i], pack.target(i)) for i in range(len(pack)))
    elif args.source.is_dir():
        if not TargetCache.exists(args.source):
            print(f"error: {args.source} is not a cache folder (no cache.db) nor a pack file", file=sys.stderr)
            return 2
        source = TargetCache(args.source, fingerprint)
        available = source.fingerprints()
        if fingerprint not in available:
            others = ", ".join(sorted(available)) or "none"
            print(f"error: {args.source} holds no targets of fingerprint {fingerprint} (it holds: {others}); "
                  f"pass the labeller options the source was labelled with", file=sys.stderr)
            return 1
        cache = TargetCache(args.cache, fingerprint, params=available.get(fingerprint) or config.params())
        count, damaged = 0, []
        for h in source.hashes():
            data = source.get_encoded(h)
            if data is None:
                continue
            try:
                cache.put_encoded(h, data)
            except CorruptTargetError:
                damaged.append(h)
                continue
            count += 1
        if damaged:
            print(f"warning: skipped {len(damaged)} damaged entries of {args.source} (e.g. {damaged[0]}); "
                  f"`python scripts/cache.py verify {args.source}` removes them, then rerun scripts/label.py",
                  file=sys.stderr)
    else:
        print(f"error: {args.source} is neither a pack file nor a cache folder", file=sys.stderr)
        return 2
    print(f"imported {count} targets of fingerprint {fingerprint} into {args.cache}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="what a cache holds", description="What a cache holds: its size on disk, and "
                       "per labeller fingerprint the number of targets and the labeller options behind them.")
    p.add_argument("cache", type=Path, metavar="CACHE_DIR", help="a folder filled by scripts/label.py")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("verify", help="check every entry of a cache, or a pack's checksum",
                       description="Decode every entry of a cache (damaged ones are reported and removed; rerun "
                       "scripts/label.py to recompute them), or check a pack file's checksum. Exit status 1 if "
                       "anything is damaged.")
    p.add_argument("path", type=Path, metavar="CACHE_DIR|PACK")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("export", help="a data set's targets as one memory-mappable pack file")
    p.add_argument("cache", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--image-size", type=int, default=None, help="store targets at this square training size")
    p.add_argument("--allow-missing", action="store_true",
                   help="export what the cache holds even if images miss (or cannot be decoded)")
    add_labeller_options(p)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="merge a pack or a cache directory into a cache")
    p.add_argument("source", type=Path)
    p.add_argument("--cache", type=Path, required=True)
    add_labeller_options(p)
    p.set_defaults(func=cmd_import)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (PackError, ImageDecodeError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
