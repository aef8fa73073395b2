"""Cache folders and packs from others: linked databases, read-only sources, crafted entries and headers,
what a pack's checksum covers, and where an export may write."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from saliencyssl.cache import CacheOpenError, TargetCache
from saliencyssl.cache import packfile
from saliencyssl.cache.packfile import PACK_FORMAT, PackError, open_pack, verify_pack, write_pack
from saliencyssl.cache.store import CacheReader, cache_fingerprints, check_labeller_params
from saliencyssl.cache.transfer import export_pack, format_bytes, import_cache, import_pack
from saliencyssl.datasets import open_image_set
from saliencyssl.hashing import content_hash
from saliencyssl.saliency import LabellerConfig
from saliencyssl.target import Target

import cache as cache_cli  # noqa: E402  (scripts/cache.py; pytest's pythonpath has scripts/)

FP = LabellerConfig().fingerprint()  # the labeller options the CLI uses by default
PARAMS = LabellerConfig().params()


def _target(seed: int, shape=(8, 8), regions: int = 3) -> Target:
    rng = np.random.default_rng(seed)
    return Target.from_maps(rng.random(shape), rng.random(shape) > 0.5, rng.integers(0, regions, shape))


def _big_target(seed: int) -> Target:
    """Random enough not to compress: stored in a value file beside cache.db, not inline."""
    return _target(seed, (200, 200), 300)


def _cache(directory: Path, n: int = 3, big: int = 0) -> Path:
    cache = TargetCache(directory, FP, params=PARAMS)
    for i in range(n):
        cache.put(f"{i:032x}", _big_target(i) if i < big else _target(i))
    cache.close()
    return directory


def _sql(directory: Path, sql: str, args=()) -> None:
    connection = sqlite3.connect(str(directory / "cache.db"))
    connection.execute(sql, args)
    connection.commit()
    connection.close()


# -- 1. the folder's own database; a source read without writing ----------------------------------
def test_a_cache_db_linked_to_another_cache_is_refused_and_the_other_kept(tmp_path, capsys):
    victim = _cache(tmp_path / "victim", n=3, big=2)
    assert len(list(victim.rglob("*.val"))) == 2
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "cache.db").symlink_to(Path("..") / "victim" / "cache.db")   # the value files are not in evil/
    assert cache_cli.main(["verify", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(evil) in err and "link" in err and "cp -rL" in err
    with pytest.raises(CacheOpenError, match="symbolic link"):
        TargetCache(evil, FP)
    with pytest.raises(CacheOpenError, match="symbolic link"):
        cache_fingerprints(evil)
    assert cache_cli.main(["import", str(evil), "--cache", str(tmp_path / "mine")]) == 2
    assert cache_cli.main(["stats", str(evil)]) == 2
    kept = TargetCache(victim, FP)
    assert sorted(kept.hashes()) == [f"{i:032x}" for i in range(3)]
    assert all(kept.get(f"{i:032x}") is not None for i in range(3))


def test_database_files_that_are_links_hard_links_or_pipes_are_refused(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep me")
    # A write-ahead log linked out: SQLite would write its log into that file.
    wal = _cache(tmp_path / "wal")
    (wal / "cache.db-wal").symlink_to(outside)
    with pytest.raises(CacheOpenError, match="cache.db-wal is a symbolic link"):
        TargetCache(wal, FP)
    assert outside.read_bytes() == b"keep me"
    # A dangling link where cache.db would be created: not followed to create the file.
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "cache.db").symlink_to(tmp_path / "created_elsewhere.db")
    with pytest.raises(CacheOpenError, match="symbolic link"):
        TargetCache(dangling, FP)
    assert not (tmp_path / "created_elsewhere.db").exists()
    # A hard link shares another cache's database as surely as a symbolic one.
    other = _cache(tmp_path / "other")
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(other / "cache.db", hard / "cache.db")
    with pytest.raises(CacheOpenError, match="2 hard links"):
        TargetCache(hard, FP)
    # A pipe named cache.db is refused at once, never opened (opening it would block).
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    os.mkfifo(pipe / "cache.db")
    started = time.perf_counter()
    with pytest.raises(CacheOpenError, match="not a regular file"):
        TargetCache(pipe, FP)
    assert time.perf_counter() - started < 5


def test_import_reads_the_source_cache_without_writing_to_it(tmp_path, capsys):
    source = _cache(tmp_path / "source", n=4, big=1)
    listing = sorted(p.relative_to(source) for p in source.rglob("*"))
    before = (source / "cache.db").read_bytes()
    assert cache_cli.main(["import", str(source), "--cache", str(tmp_path / "mine")]) == 0
    assert (source / "cache.db").read_bytes() == before
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == listing     # nothing created there
    mine = TargetCache(tmp_path / "mine", FP)
    assert sorted(mine.hashes()) == [f"{i:032x}" for i in range(4)]
    assert mine.get(f"{0:032x}").equals(_big_target(0))
    # Listing what a cache holds writes nothing either.
    assert set(cache_fingerprints(source)) == {FP}
    assert (source / "cache.db").read_bytes() == before


def test_cache_stats_counts_each_fingerprint_without_writing_to_the_folder(tmp_path, capsys):
    """`cache stats` opened the folder through diskcache, which rewrote cache.db's header on every call."""
    source = _cache(tmp_path / "source", n=4, big=1)
    cache = TargetCache(source, FP)      # the figures as diskcache gives them (opening it writes: done first)
    expected = cache.stats()
    cache.close()
    before = (source / "cache.db").read_bytes()
    listing = sorted(p.relative_to(source) for p in source.rglob("*"))
    assert cache_cli.main(["stats", str(source)]) == 0
    out = capsys.readouterr().out
    assert (source / "cache.db").read_bytes() == before
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == listing
    assert f"fingerprint {FP}: {expected.entries} targets, {expected.bytes / 1e6:.2f} MB" in out


def test_stats_sizes_come_from_the_columns_as_reading_every_value_gave_them(tmp_path):
    """`cache stats` read every value to measure it (a cache of 50,000 photos: gigabytes); the columns give the same
    figures, a value saliency-ssl never stores counting 0 bytes either way."""
    import pickle

    from saliencyssl.cache.store import _entry_sizes

    source = _cache(tmp_path / "source", n=7, big=3)
    with CacheReader(source) as reader:
        whole = reader.sizes()
        assert whole == _entry_sizes(reader) and whole[FP][0] == 7 and whole[FP][1] > 3 * 100_000
    _sql(source, "UPDATE Cache SET mode = 4, value = ? WHERE key = ?", (pickle.dumps([1] * 50), f"{FP}/{6:032x}"))
    _sql(source, "UPDATE Cache SET expire_time = 1 WHERE key = ?", (f"{FP}/{5:032x}",))
    connection = sqlite3.connect(str(source / "cache.db"))
    files = [source / name for (name,) in connection.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL "
                                                              "ORDER BY key")]
    connection.close()
    files[0].unlink()                                          # a value file gone
    files[1].write_bytes(files[1].read_bytes()[:1000])         # one cut short
    with CacheReader(source) as reader:
        damaged = reader.sizes()
        assert damaged == _entry_sizes(reader) and damaged[FP][0] == 7 and damaged[FP][1] < whole[FP][1] - 100_000


def test_a_source_open_for_writing_elsewhere_is_read_with_its_log(tmp_path):
    source = tmp_path / "source"
    writer = TargetCache(source, FP, params=PARAMS)       # another process labelling into it, in WAL mode
    writer.put("a" * 32, _target(1))
    assert (source / "cache.db-wal").exists()
    with CacheReader(source) as reader:
        assert list(reader.hashes(FP)) == ["a" * 32]
        assert reader.fingerprints() == {FP: PARAMS}
    writer.close()


# -- 3. crafted entries: a file mode without a file, a text file that is not UTF-8 ----------------
KEY = f"{FP}/{1:032x}"


def _file_without_name(directory: Path) -> None:
    _sql(directory, "UPDATE Cache SET mode = 2, filename = NULL WHERE key = ?", (KEY,))


def _text_not_utf8(directory: Path) -> None:
    name = "ab/cd/" + "0" * 28 + ".val"
    (directory / "ab" / "cd").mkdir(parents=True)
    (directory / name).write_bytes(b"\xff\xfe\x00bad")
    _sql(directory, "UPDATE Cache SET mode = 3, filename = ?, value = NULL WHERE key = ?", (name, KEY))


@pytest.mark.parametrize("craft", [_file_without_name, _text_not_utf8])
def test_crafted_file_entries_are_damage_in_every_command(tmp_path, craft, capsys):
    directory = _cache(tmp_path / "c")
    craft(directory)
    cache = TargetCache(directory, FP)
    assert cache.stats().entries == 3                                   # stats reads it without raising
    report = cache.verify(remove=False)
    assert report.damaged == [f"{1:032x}"] and report.checked == 3
    assert cache.get(f"{1:032x}") is None and cache.damaged == 1         # a miss, and removed
    assert f"{1:032x}" not in cache and cache.get(f"{0:032x}") is not None
    cache.close()
    # The same through the command line: import skips it, verify removes it once.
    craft(_cache(tmp_path / "d"))
    assert cache_cli.main(["import", str(tmp_path / "d"), "--cache", str(tmp_path / "mine")]) == 1
    assert "skipped 1 damaged" in capsys.readouterr().err
    assert sorted(TargetCache(tmp_path / "mine", FP).hashes()) == [f"{0:032x}", f"{2:032x}"]
    assert cache_cli.main(["verify", str(tmp_path / "d")]) == 1
    assert "1 damaged" in capsys.readouterr().out
    assert cache_cli.main(["verify", str(tmp_path / "d")]) == 0


# -- packs: header bound, types, checksum coverage ------------------------------------------------
def _pack(tmp_path: Path, name: str = "p.pack", params=PARAMS, n: int = 4) -> Path:
    return write_pack(tmp_path / name, [(f"{i:032x}", _target(i)) for i in range(n)], FP, params)


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of a pack whose JSON header ``change(header)`` edited (in place; arrays untouched)."""
    data = bytearray(src.read_bytes())
    (length,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + length])
    first = min(spec["offset"] for spec in header["arrays"].values())
    change(header)
    body = json.dumps(header).encode()
    assert 16 + len(body) <= first
    data[8:16] = struct.pack("<Q", len(body))
    data[16:first] = body + bytes(first - 16 - len(body))
    dst.write_bytes(bytes(data))
    return dst


def _format2_checksum(data: bytes, header: dict) -> str:
    """Format 2's checksum: BLAKE2b of each array's BLAKE2b, then of the rows' identity and geometry."""
    digest = hashlib.blake2b(digest_size=16)
    for name, itemsize in (("saliency", 1), ("mask", 1), ("regions", 2)):
        spec = header["arrays"][name]
        digest.update(hashlib.blake2b(data[spec["offset"]:spec["offset"] + spec["length"] * itemsize],
                                      digest_size=16).digest())
    rows = {k: header[k] for k in ("fingerprint", "hashes", "shapes", "offsets")}
    digest.update(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def test_a_header_length_over_the_bound_is_refused_before_reading(tmp_path):
    claimed = packfile.MAX_HEADER_BYTES + 1
    path = tmp_path / "big.pack"
    with open(path, "wb") as fh:                       # sparse: the file is as long as the header it claims
        fh.write(packfile.MAGIC + struct.pack("<Q", claimed))
        fh.truncate(16 + claimed + 64)
    with pytest.raises(PackError, match=rf"big.pack.*claims {claimed:,} bytes, more than the"):
        open_pack(path)
    # The bound holds a real header with margin, and a writer never makes a pack it cannot read.
    assert packfile.MAX_HEADER_BYTES >= 16 * 2 ** 20
    data = _pack(tmp_path).read_bytes()
    (length,) = struct.unpack("<Q", data[8:16])
    assert length < 4096


def test_the_header_bound_applies_to_writers_and_readers(tmp_path, monkeypatch):
    good = _pack(tmp_path)
    (length,) = struct.unpack("<Q", good.read_bytes()[8:16])
    monkeypatch.setattr(packfile, "MAX_HEADER_BYTES", length - 1)
    with pytest.raises(PackError, match="more than the"):
        open_pack(good)
    with pytest.raises(PackError, match="split the images into several packs"):
        _pack(tmp_path, "q.pack")
    assert not (tmp_path / "q.pack").exists()


def _set_array(name, key, value):
    def change(header):
        header["arrays"][name][key] = value
    return change


def _set(key, value):
    def change(header):
        header[key] = value
    return change


@pytest.mark.parametrize("change", [
    _set_array("mask", "length", "256"),         # text where an integer belongs (4 rows of 64 px)
    _set_array("saliency", "offset", 1280.5),    # a fraction
    _set_array("regions", "offset", True),       # a boolean
    _set_array("regions", "dtype", "O"),         # an object dtype
    _set("format", "x"),
    _set("format", 3.0),
    _set("total_pixels", "256"),
    _set("shapes", [[8.0, 8], [8, 8], [8, 8], [8, 8]]),
    _set("offsets", [0, 64, 128, 192.0]),
    _set("hashes", "abc"),
    _set("params", ["scale", 2]),
    _set("params", {"scale": {"nested": 1}}),
    _set("fingerprint", 5),
    _set("checksum", None),
    _set("extra", 1),
    lambda header: header.pop("total_pixels"),
    lambda header: header["arrays"].pop("mask"),
], ids=lambda change: getattr(change, "__name__", "change"))
def test_pack_header_fields_of_the_wrong_type_are_one_error_naming_the_file(tmp_path, change, capsys):
    from saliencyssl.augment.pack import load_pack

    pack = _rewrite(_pack(tmp_path), tmp_path / "crafted.pack", change)
    with pytest.raises(PackError, match="crafted.pack"):
        open_pack(pack)
    with pytest.raises(PackError, match="crafted.pack"):
        load_pack(pack, [f"{i:032x}" for i in range(4)], 8)
    assert cache_cli.main(["verify", str(pack)]) == 2
    assert cache_cli.main(["import", str(pack), "--cache", str(tmp_path / "mine")]) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and all("crafted.pack" in line for line in err.splitlines())
    assert not (tmp_path / "mine").exists()


def test_a_nan_in_a_header_is_refused(tmp_path):
    pack = _pack(tmp_path)
    data = bytearray(pack.read_bytes())
    at = data.index(b'"seg_k": 50.0')
    data[at:at + 13] = b'"seg_k": NaN '
    pack.write_bytes(bytes(data))
    with pytest.raises(PackError, match="p.pack: damaged pack header.*NaN"):
        open_pack(pack)


def test_the_checksum_covers_the_format_and_the_parameters(tmp_path, capsys):
    good = _pack(tmp_path)
    opened = open_pack(good)
    assert opened.format == PACK_FORMAT == 3 and opened.params == PARAMS and verify_pack(opened)
    # Parameters altered after writing fail the checksum: not verified, not imported.
    altered = _rewrite(good, tmp_path / "params.pack", lambda h: h["params"].update(scale=1e9))
    assert not verify_pack(open_pack(altered))
    assert cache_cli.main(["verify", str(altered)]) == 1
    with pytest.raises(PackError, match="fails its checksum"):
        import_pack(altered, tmp_path / "mine", FP, PARAMS)
    assert not (tmp_path / "mine").exists()
    # So does a changed format number: read as format 2, the checksum no longer matches.
    as_two = _rewrite(good, tmp_path / "two.pack", _set("format", 2))
    assert not verify_pack(open_pack(as_two))
    # Formats this version does not read are refused by name, not read as another.
    with pytest.raises(PackError, match="four.pack is a format 4 pack; this saliency-ssl reads formats 2, 3"):
        open_pack(_rewrite(good, tmp_path / "four.pack", _set("format", 4)))
    old = _rewrite(good, tmp_path / "one.pack", lambda h: h.update(format=1, hashes=h["hashes"][::-1]))
    with pytest.raises(PackError, match="one.pack is a format 1 pack.*export it again"):
        open_pack(old)
    assert cache_cli.main(["verify", str(old)]) == 2
    assert "format 1" in capsys.readouterr().err


@pytest.mark.parametrize("array,value", [("mask", 2), ("regions", -1)])
def test_a_pack_whose_checksum_holds_but_whose_values_saliency_ssl_never_writes_is_refused(tmp_path, array, value):
    """Anyone can recompute the (unkeyed) checksum of a crafted pack: a mask byte of 2 became an invalid torch.bool,
    a negative region an invalid label. Training from it is refused, naming the file."""
    from saliencyssl.augment.pack import load_pack

    honest = _pack(tmp_path)
    pack = open_pack(honest)
    arrays = {name: np.array(pack.arrays[name]) for name, _ in packfile._ARRAYS}
    arrays[array][5] = value
    digests = [hashlib.blake2b(memoryview(np.ascontiguousarray(arrays[name])).cast("B"), digest_size=16).digest()
               for name, _ in packfile._ARRAYS]
    crafted = tmp_path / "crafted.pack"

    def resign(header):
        header["checksum"] = packfile._checksum(digests, header, PACK_FORMAT)

    _rewrite(honest, crafted, resign)
    data = bytearray(crafted.read_bytes())
    offset = json.loads(data[16:16 + struct.unpack("<Q", data[8:16])[0]])["arrays"][array]["offset"]
    raw = arrays[array].tobytes()
    data[offset:offset + len(raw)] = raw
    crafted.write_bytes(bytes(data))
    assert verify_pack(open_pack(crafted)), "the checksum holds"
    hashes = [f"{i:032x}" for i in range(4)]
    assert len(load_pack(honest, hashes, 8)) == 4
    with pytest.raises(PackError, match=f"{crafted}.*never writes"):
        load_pack(crafted, hashes, 8)


def test_an_empty_pack_says_it_holds_no_targets(tmp_path, capsys):
    def empty(header):
        header.update(hashes=[], shapes=[], offsets=[], total_pixels=0)
        for spec in header["arrays"].values():
            spec["length"] = 0
    pack = _rewrite(_pack(tmp_path), tmp_path / "empty.pack", empty)
    assert cache_cli.main(["verify", str(pack)]) == 2
    captured = capsys.readouterr()
    assert "checksum OK" not in captured.out and "empty.pack holds no targets" in captured.err


def test_a_format_2_pack_is_read_but_its_parameters_are_not_trusted(tmp_path, capsys):
    good = _pack(tmp_path)

    def downgrade(header):
        header.update(format=2, params={"scale": 1e9, "x": "y"})
        header["checksum"] = _format2_checksum(good.read_bytes(), header)
    two = _rewrite(good, tmp_path / "two.pack", downgrade)
    opened = open_pack(two)
    assert opened.format == 2 and verify_pack(opened) and opened.params is None
    assert cache_cli.main(["verify", str(two)]) == 0
    assert "format 2" in capsys.readouterr().out
    import_pack(two, tmp_path / "api", FP)                       # no parameters given: none recorded
    assert cache_fingerprints(tmp_path / "api") == {FP: None}
    assert cache_cli.main(["import", str(two), "--cache", str(tmp_path / "cli")]) == 0
    assert cache_fingerprints(tmp_path / "cli") == {FP: PARAMS}


def test_a_packs_parameters_never_replace_what_the_labeller_or_the_destination_says(tmp_path):
    crafted = {"scale": 1e9, "x": "y"}
    pack = _pack(tmp_path, params=crafted)                       # its checksum covers them: it verifies
    assert verify_pack(open_pack(pack))
    assert cache_cli.main(["import", str(pack), "--cache", str(tmp_path / "cli")]) == 0
    assert cache_fingerprints(tmp_path / "cli") == {FP: PARAMS}  # the labeller's own, not the pack's
    import_pack(pack, tmp_path / "api", FP)
    assert cache_fingerprints(tmp_path / "api") == {FP: None}    # unknown names: not recorded
    # Parameters of another labeller (they rebuild another fingerprint) are not recorded either.
    other = _pack(tmp_path, "other.pack", params=LabellerConfig(scale=2).params())
    import_pack(other, tmp_path / "api2", FP)
    assert cache_fingerprints(tmp_path / "api2") == {FP: None}
    # What the destination recorded stays, whatever the import brings.
    honest = _pack(tmp_path, "honest.pack")
    recorded = {"version": "1", "min_side": 32}
    TargetCache(tmp_path / "dest", FP, params=recorded).close()
    import_pack(honest, tmp_path / "dest", FP)
    assert cache_fingerprints(tmp_path / "dest") == {FP: recorded}
    # A cache folder's recorded parameters go through the same check.
    source = TargetCache(tmp_path / "source", FP, params=crafted)
    source.put("a" * 32, _target(1))
    source.close()
    import_cache(tmp_path / "source", tmp_path / "from_cache", FP)
    assert cache_fingerprints(tmp_path / "from_cache") == {FP: None}


def test_labeller_parameters_are_checked_before_they_are_recorded():
    assert check_labeller_params(PARAMS, FP) is PARAMS
    assert check_labeller_params({"version": "1", "min_side": 32}, FP)      # an older version: names and values
    for params, message in [
        ({"scale": 1e9, "x": "y"}, "unknown labeller parameter 'x'"),
        ({"scale": [1, "a"]}, "scale"),
        ({"scale": True}, "scale"),
        ({"cut_engine": "x" * 1000}, "cut_engine"),
        (["scale"], "must be an object"),
        (LabellerConfig(scale=2).params(), f"not {FP}"),
        (dict(PARAMS, scale=1e9), "no labeller accepts"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_labeller_params(params, FP)


# -- 6, 7. where an export writes, and what it says when it cannot ---------------------------------
def _images_and_cache(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    image_set = open_image_set(images)
    cache = TargetCache(tmp_path / "cache", FP, params=PARAMS)
    for i in range(len(image_set)):
        cache.put(content_hash(image_set.image(i)), _target(i, (16, 24)))
    cache.close()
    return images, tmp_path / "cache"


def test_export_overwrites_only_a_pack_and_never_writes_inside_the_cache(tmp_path, capsys):
    images, cache = _images_and_cache(tmp_path)
    database = (cache / "cache.db").read_bytes()
    export = ["export", str(cache), str(images), "--out"]
    assert cache_cli.main(export + [str(cache / "cache.db"), "--overwrite"]) == 2
    assert "not a pack file" in capsys.readouterr().err
    assert (cache / "cache.db").read_bytes() == database
    assert cache_cli.main(export + [str(cache / "data.pack")]) == 2
    assert "inside the cache folder" in capsys.readouterr().err
    assert not (cache / "data.pack").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cache_cli.main(export + [str(notes), "--overwrite"]) == 2
    assert notes.read_text() == "mine"
    pack = tmp_path / "data.pack"
    assert cache_cli.main(export + [str(pack)]) == 0
    assert cache_cli.main(export + [str(pack)]) == 2                          # exists: --overwrite needed
    assert cache_cli.main(export + [str(pack), "--overwrite"]) == 0           # a pack is replaced
    assert len(open_pack(pack)) == 3
    with pytest.raises(ValueError, match="inside the cache folder"):
        export_pack(TargetCache(cache, FP), open_image_set(images), cache / "x.pack", PARAMS)


def test_export_refuses_sizes_pretraining_cannot_use_and_a_pack_inside_the_images(tmp_path, capsys):
    """Finding 3 (--image-size 100000 grew to 22 GB) and finding 8 (--image-size 7, a pack among the images):
    each is one line, before anything is read or written."""
    images, cache = _images_and_cache(tmp_path)
    export = ["export", str(cache), str(images), "--out"]
    for size in ("100000", "7", "0", "-1"):
        assert cache_cli.main(export + [str(tmp_path / "p.pack"), "--image-size", size]) == 2
        err = capsys.readouterr().err
        assert f"--image-size must be a whole number of pixels from 8 to 1024, got {size}" in err
        assert err.count("\n") == 1
    assert cache_cli.main(export + [str(images / "data.pack")]) == 2
    assert "inside the image folder" in capsys.readouterr().err
    assert not (images / "data.pack").exists() and not (tmp_path / "p.pack").exists()


def test_export_checks_disk_space_without_an_image_size(tmp_path, monkeypatch, capsys):
    images, cache = _images_and_cache(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2_000))
    pack = tmp_path / "data.pack"
    assert cache_cli.main(["export", str(cache), str(images), "--out", str(pack)]) == 2
    err = capsys.readouterr().err
    # 3 targets of 16x24 px, 4 bytes a pixel, twice while writing: 9,216 bytes.
    assert "data.pack" in err and "9.2 KB" in err and "2.0 KB free" in err and "GB" not in err
    assert not pack.exists()
    assert [format_bytes(n) for n in (512, 2_500, 3.2e6, 4e9)] == ["512 B", "2.5 KB", "3.2 MB", "4.0 GB"]


def test_a_write_error_names_the_pack_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    images, cache = _images_and_cache(tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(packfile.shutil, "copyfileobj", full_disk)
    assert cache_cli.main(["export", str(cache), str(images), "--out", str(out / "data.pack")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out / "data.pack") in err and os.strerror(errno.ENOSPC) in err
    assert "free space in" in err
    assert list(out.iterdir()) == []                                          # no partial pack, no scratch


def test_the_room_for_a_pack_in_folders_not_made_yet_is_looked_up_on_their_disk(tmp_path, monkeypatch, capsys):
    """With --out in a folder that does not exist yet, the free space of the working folder's disk was checked."""
    from saliencyssl.cache import transfer

    images, cache = _images_and_cache(tmp_path)
    asked = []

    def no_room(folder):
        asked.append(Path(folder))
        return shutil._ntuple_diskusage(1, 1, 0)

    monkeypatch.setattr(transfer.shutil, "disk_usage", no_room)
    monkeypatch.chdir(images)
    out = tmp_path / "new" / "deeper" / "data.pack"
    assert cache_cli.main(["export", str(cache), str(images), "--out", str(out)]) == 2
    assert asked == [tmp_path] and f"{tmp_path} has 0 B free" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("params", ["[" * 100_000 + "]" * 100_000, '{"version": 1' + "0" * 5000 + "}",
                                    json.dumps({**PARAMS, "scale": float("inf"), "max_side": -1}), '"text"'])
def test_verify_reports_damaged_labeller_parameters_instead_of_passing_them(tmp_path, capsys, params):
    """The parameters recorded for a fingerprint are what rebuilds its labeller (the surrogate's variants):
    unreadable, impossible or another labeller's values are damage, not 'parameters not recorded' and exit 0."""
    _, cache_dir = _images_and_cache(tmp_path)
    cache = TargetCache(cache_dir, FP)
    cache._cache.set("meta/" + FP, params)
    cache.close()
    assert cache_cli.main(["verify", str(cache_dir)]) == 1
    out = capsys.readouterr().out
    assert f"meta/{FP} (the labeller parameters recorded for it)" in out and "3 entries checked, 1 damaged" in out
    assert cache_cli.main(["verify", str(cache_dir)]) == 0  # removed: what is left is whole


def test_a_pack_header_of_millions_of_empty_objects_is_refused_before_it_is_parsed(tmp_path, capsys):
    """A header of "{}," repeated (585 KB gzipped) parsed into 3 GB of dicts before any field was checked."""
    import struct as struct_

    from saliencyssl.cache.packfile import MAGIC

    body = b"[" + b"{}," * 200_000 + b"{}]"
    pack = tmp_path / "bomb.pack"
    pack.write_bytes(MAGIC + struct_.pack("<Q", len(body)) + body + b"\0" * 64)
    assert cache_cli.main(["verify", str(pack)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bomb.pack has a damaged header: 200,002 JSON objects and lists" in err


def test_a_pack_header_with_an_unclosed_string_is_refused_at_once(tmp_path, capsys):
    """The pattern that stripped strings before counting backtracked over an unclosed one from every quote: 41 KB
    of escaped quotes took 5 s, and the time grows with the square: this 400 KB header about 8 minutes."""
    import struct as struct_

    from saliencyssl.cache.packfile import MAGIC

    body = b"[" * 1001 + b'"' + b'\\"' * 200_000
    pack = tmp_path / "unclosed.pack"
    pack.write_bytes(MAGIC + struct_.pack("<Q", len(body)) + body + b"\0" * 64)
    assert cache_cli.main(["verify", str(pack)]) == 2
    assert "unclosed.pack has a damaged header: 1,001 JSON objects and lists" in capsys.readouterr().err


def test_a_pack_of_thousands_of_rows_is_read_and_shapes_without_their_rows_are_not(tmp_path, capsys):
    """The header's container bound counted each row's [h, w] shape: every pack of over 995 rows was refused."""
    import struct as struct_

    from saliencyssl.cache.packfile import MAGIC, open_pack, verify_pack

    pack = write_pack(tmp_path / "big.pack", [(f"{i:032x}", _target(i, (4, 4))) for i in range(2500)], FP, PARAMS)
    opened = open_pack(pack, FP)
    assert len(opened) == 2500 and verify_pack(opened)
    assert cache_cli.main(["verify", str(pack)]) == 0
    # shape lists beyond the handful need a content hash each
    body = json.dumps({"format": 3, "hashes": [], "shapes": [[1, 1]] * 5000}).encode()
    crafted = tmp_path / "shapes.pack"
    crafted.write_bytes(MAGIC + struct_.pack("<Q", len(body)) + body + b"\0" * 64)
    assert cache_cli.main(["verify", str(crafted)]) == 2
    assert "shapes.pack has a damaged header: 5,003 JSON objects and lists" in capsys.readouterr().err
