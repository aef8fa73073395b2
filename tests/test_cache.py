"""The target cache: round trip, invalidation, damage, several writers."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest

from saliencyssl.cache import CacheOpenError, CorruptTargetError, TargetCache, decode_target, encode_target
from saliencyssl.hashing import content_hash
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.target import Target


def _random_target(seed: int, h: int = 32, w: int = 32, regions: int = 6) -> Target:
    rng = np.random.default_rng(seed)
    return Target.from_maps(rng.random((h, w)), rng.random((h, w)) > 0.5, rng.integers(0, regions, (h, w)))


def test_codec_round_trip_and_size():
    for regions in (3, 300):
        target = _random_target(0, regions=regions)
        assert decode_target(encode_target(target)).equals(target)
    small = Target.empty(32, 32)
    assert len(encode_target(small)) < 200


def test_a_target_the_decoder_would_refuse_is_not_encoded():
    """A 70,000 x 2 px strip labelled and stored read back as damage and was labelled again on every run."""
    strip = Target.from_maps(np.zeros((2, 70_000)), np.zeros((2, 70_000), bool), np.zeros((2, 70_000), int))
    with pytest.raises(ValueError, match="a 70000x2 target cannot be stored: .* at most 65,535 px"):
        encode_target(strip)
    edge = Target.from_maps(np.zeros((1, 65_535)), np.ones((1, 65_535), bool), np.zeros((1, 65_535), int))
    assert decode_target(encode_target(edge)).equals(edge)


def test_codec_detects_damage():
    data = bytearray(encode_target(_random_target(1)))
    data[-5] ^= 0xFF
    with pytest.raises(CorruptTargetError, match="checksum"):
        decode_target(bytes(data))
    with pytest.raises(CorruptTargetError):
        decode_target(bytes(data[:10]))
    with pytest.raises(CorruptTargetError, match="magic"):
        decode_target(b"XXXX" + bytes(data[4:]))


def test_real_target_round_trip_and_invalidation(tmp_path, photo):
    labeller = Labeller(max_side=120)
    target = labeller(photo)
    cache = TargetCache(tmp_path / "c", labeller.fingerprint, params=labeller.config.params())
    assert cache.get(photo) is None and photo not in cache
    cache.put(photo, target)
    assert photo in cache and cache.contains(content_hash(photo))
    assert cache.get(photo).equals(target)
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.misses) == (1, 1, 1)
    assert stats.bytes < target.saliency.nbytes * 3
    # Another parameter, another fingerprint: the old entry is a miss.
    other = TargetCache(tmp_path / "c", LabellerConfig(max_side=121).fingerprint())
    assert other.get(photo) is None and photo not in other
    # One changed pixel is another image.
    changed = photo.copy()
    changed[0, 0, 0] ^= 1
    assert cache.get(changed) is None
    assert cache.fingerprints()[labeller.fingerprint]["max_side"] == 120


def test_damaged_entry_is_reported_removed_and_never_returned(tmp_path, caplog):
    cache = TargetCache(tmp_path / "c", "f" * 16)
    good, bad = _random_target(2), _random_target(3)
    cache.put("a" * 32, good)
    cache.put("b" * 32, bad)
    raw = bytearray(cache.get_encoded("b" * 32))
    raw[-1] ^= 0x55
    cache._cache.set(f"{'f' * 16}/{'b' * 32}", bytes(raw))  # damage it behind the cache's back
    report = cache.verify(remove=False)
    assert report.checked == 2 and report.damaged == ["b" * 32]
    with caplog.at_level(logging.WARNING):
        assert cache.get("b" * 32) is None
    assert "damaged entry" in caplog.text and "b" * 32 in caplog.text
    assert "b" * 32 not in cache and cache.damaged == 1
    assert cache.get("a" * 32).equals(good)


def _writer(directory: str, worker: int, count: int) -> None:
    cache = TargetCache(directory, "f" * 16, timeout=60)
    for i in range(count):
        key = f"{(i + worker * 7) % (count * 2):032x}"  # overlapping keys across writers
        cache.put(key, _random_target(i + worker * 7))
    cache.close()


def test_several_processes_write_one_cache(tmp_path):
    directory = str(tmp_path / "shared-cache")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(directory, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = TargetCache(directory, "f" * 16)
    expected = {f"{(i + w * 7) % 80:032x}": i + w * 7 for w in range(3) for i in range(40)}
    assert set(cache.hashes()) == set(expected)
    for key, seed in expected.items():
        # Overlapping keys (written by several processes, each with the target of that seed) hold it whole.
        got = cache.get(key)
        assert got is not None and got.equals(_random_target(seed))
    assert cache.verify().damaged == []


def test_invalid_inputs(tmp_path):
    with pytest.raises(ValueError, match="fingerprint"):
        TargetCache(tmp_path / "c", "")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="choose another cache folder"):
        TargetCache(tmp_path / "file", "f" * 16)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "cache.db").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CacheOpenError, match=r"junk/cache.db.*delete the folder"):
        TargetCache(tmp_path / "junk", "f" * 16)
    with pytest.raises(TypeError, match="Target"):
        TargetCache(tmp_path / "c", "f" * 16).put("a" * 32, np.zeros((2, 2)))


def test_cache_stage_configs_run_without_a_command_line(tmp_path, photo, capsys):
    """saliency-ssl cache as code: each command is a config checked when built, carried out by run(config)."""
    from saliencyssl.app import cache as stage

    with pytest.raises(ValueError, match="--image-size must be a whole number of pixels from 8"):
        stage.ExportConfig(tmp_path / "c", tmp_path, tmp_path / "p.pack", image_size=7)
    assert stage.run(stage.StatsConfig(tmp_path / "none")) == 2  # not a cache folder: refused, naming the fix
    assert "is not a cache folder" in capsys.readouterr().err

    labeller = Labeller(max_side=120)
    cache = TargetCache(tmp_path / "cache", labeller.fingerprint, params=labeller.config.params())
    cache.put(photo, labeller(photo))
    assert stage.run(stage.StatsConfig(tmp_path / "cache")) == 0
    assert f"fingerprint {labeller.fingerprint}: 1 targets" in capsys.readouterr().out
    assert stage.run(stage.VerifyConfig(tmp_path / "cache", labeller.config)) == 0
    assert "1 entries checked, 0 damaged" in capsys.readouterr().out
    assert stage.run(stage.VerifyConfig(tmp_path / "cache")) == 0  # other options than the targets': said, not damage
    assert "(the labeller options given): no targets in" in capsys.readouterr().out


def test_put_many_commits_chunk_by_chunk_and_keeps_what_it_committed(tmp_path):
    """One transaction for a whole pack import held the write lock for as long as it ran, and an import stopped
    half way kept nothing."""
    rng = np.random.default_rng(0)
    targets = [Target.from_maps(rng.random((6, 6)), rng.random((6, 6)) > 0.5, rng.integers(0, 3, (6, 6)))
               for _ in range(7)]

    def items(stop_at=None):
        for i, target in enumerate(targets):
            if i == stop_at:
                raise KeyboardInterrupt
            yield f"{i:032x}", target

    with TargetCache(tmp_path / "all", "fp") as cache:
        assert cache.put_many(items(), chunk=3) == 7 and len(list(cache.hashes())) == 7
        assert np.array_equal(cache.get(f"{6:032x}").mask, targets[6].mask)
    with TargetCache(tmp_path / "stopped", "fp") as cache:
        with pytest.raises(KeyboardInterrupt):
            cache.put_many(items(stop_at=5), chunk=3)
        assert sorted(cache.hashes()) == [f"{i:032x}" for i in range(3)]  # the first chunk; the second rolled back
        with pytest.raises(ValueError, match="a chunk of at least 1"):
            cache.put_many(items(), chunk=0)  # looped for ever
