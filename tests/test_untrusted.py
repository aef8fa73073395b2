"""Files from others never run code, and damage is named: CIFAR batches, cache folders, packs."""

from __future__ import annotations

import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from saliencyssl.cache import CacheOpenError, TargetCache, decode_target, encode_target
from saliencyssl.cache.codec import CODEC_VERSION, CorruptTargetError
from saliencyssl.cache.store import cache_fingerprints
from saliencyssl.datasets import open_image_set
from saliencyssl.imageio import ImageDecodeError
from saliencyssl.saliency import LabellerConfig
from saliencyssl.target import Target

FP = LabellerConfig().fingerprint()  # the labeller options the CLI uses by default


class RunsCode:
    """Unpickling this calls ``os.system``, which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _target(seed: int) -> Target:
    rng = np.random.default_rng(seed)
    return Target.from_maps(rng.random((8, 8)), rng.random((8, 8)) > 0.5, rng.integers(0, 3, (8, 8)))


# -- CIFAR-10 batches ------------------------------------------------------------------------------
def _cifar_folder(root, n=6, protocol=pickle.DEFAULT_PROTOCOL):
    root.mkdir()
    rng = np.random.default_rng(0)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    (root / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batch


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_real_cifar_batch_folder_opens(tmp_path, protocol):
    batch = _cifar_folder(tmp_path / "cifar", protocol=protocol)
    image_set = open_image_set(tmp_path / "cifar")
    assert len(image_set) == 6 and image_set.classes[3] == "class3"
    assert list(image_set.labels) == batch[b"labels"]
    first = batch[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(image_set.image(0), first)


def test_a_batch_that_runs_code_is_refused_unrun(tmp_path):
    _cifar_folder(tmp_path / "cifar")
    marker = tmp_path / "ran"
    (tmp_path / "cifar" / "data_batch_1").write_bytes(pickle.dumps({b"data": RunsCode(marker)}))
    with pytest.raises(ImageDecodeError, match=r"data_batch_1.*refused.*posix.system|data_batch_1.*refused"):
        open_image_set(tmp_path / "cifar")
    assert not marker.exists()
    # batches.meta is read through the same unpickler
    (tmp_path / "cifar" / "data_batch_1").unlink()
    _cifar_folder(tmp_path / "cifar2")
    (tmp_path / "cifar2" / "batches.meta").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ImageDecodeError, match="batches.meta"):
        open_image_set(tmp_path / "cifar2")
    assert not marker.exists()


class ObjectDtype:
    """numpy's object dtype, pickled as numpy pickles dtypes (an array of it holds raw pointers)."""

    def __reduce__(self):
        return np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0)


class ArrayOfPointers:
    """An array reconstructed empty, then given an object dtype and eight bytes of 'pointer' by BUILD."""

    def __reduce__(self):
        from numpy.core import multiarray

        return multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), ObjectDtype(), False, b"\x41" * 8)


class ArrayFromRawBytes:
    """numpy.ndarray called directly on raw bytes with an object dtype."""

    def __reduce__(self):
        return np.ndarray, ((1,), "O", b"\x41" * 8)


class HugeArray:
    """An array claiming 1.5 GB of pixels, in a pickle of a few hundred bytes."""

    def __reduce__(self):
        from numpy.core import multiarray

        return multiarray._reconstruct, (np.ndarray, (500_000, 3072), b"B")


@pytest.mark.parametrize("payload", [ArrayOfPointers, ArrayFromRawBytes, HugeArray])
def test_a_batch_cannot_build_pointer_arrays_or_claim_memory(tmp_path, payload):
    import warnings

    _cifar_folder(tmp_path / "cifar")
    with warnings.catch_warnings():  # numpy.core's deprecation warning, when pickling the payload
        warnings.simplefilter("ignore")
        data = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": payload()}, protocol=2)
    (tmp_path / "cifar" / "data_batch_1").write_bytes(data)
    with pytest.raises(ImageDecodeError, match="data_batch_1"):
        open_image_set(tmp_path / "cifar")


def test_a_stray_batch_file_does_not_turn_an_image_folder_into_cifar(tmp_path, caplog):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((12, 12, 3), 80, np.uint8))
    marker = tmp_path / "ran"
    (folder / "data_batch_1").write_bytes(pickle.dumps(RunsCode(marker)))
    (folder / "batches.meta").write_bytes(pickle.dumps(RunsCode(marker)))
    image_set = open_image_set(folder)
    assert image_set.names == ["a.png"] and not marker.exists()
    assert "data_batch_1" in caplog.text
    # Batch files without batches.meta are not a CIFAR folder either, and the error says why.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "test_batch").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no batches.meta"):
        open_image_set(lone)


def test_evaluate_on_a_hostile_batch_folder_runs_nothing(tmp_path, capsys):
    import evaluate

    _cifar_folder(tmp_path / "train")
    _cifar_folder(tmp_path / "test")
    marker = tmp_path / "ran"
    (tmp_path / "test" / "data_batch_1").write_bytes(pickle.dumps({b"data": RunsCode(marker)}))
    code = evaluate.main(["--backbone", "random", "--train", str(tmp_path / "train"), "--test",
                          str(tmp_path / "test"), "--out", str(tmp_path / "eval"), "--protocol", "knn"])
    assert code != 0 and not marker.exists()
    assert "refused" in capsys.readouterr().err


# -- cache folders ---------------------------------------------------------------------------------
def _cache_with_entries(directory, n=3):
    cache = TargetCache(directory, FP, params={"version": "test"})
    for i in range(n):
        cache.put(f"{i:032x}", _target(i))
    return cache


def _raw_diskcache(directory):
    """diskcache's own Cache with its default (pickling) Disk: what someone else's tool writes."""
    import diskcache

    return diskcache.Cache(str(directory))


def test_pickled_keys_and_values_in_a_cache_never_run(tmp_path, capsys):
    import cache as cache_cli

    directory = tmp_path / "c"
    _cache_with_entries(directory).close()
    marker = tmp_path / "ran"
    foreign = _raw_diskcache(directory)
    foreign.set(RunsCode(marker), b"value")                               # a pickled key
    foreign.set(f"{FP}/{'e' * 32}", RunsCode(marker))                     # a pickled value under a real key
    foreign.set(f"{FP}/{'d' * 32}", {"big": RunsCode(marker), "pad": "x" * 40000})  # pickled into a file
    foreign.close()

    cache = TargetCache(directory, FP)
    assert sorted(cache.hashes())[:3] == [f"{i:032x}" for i in range(3)]
    assert cache.get("e" * 32) is None and cache.get("d" * 32) is None   # damage, removed
    assert set(cache_fingerprints(directory)) == {FP}
    cache.close()
    assert cache_cli.main(["stats", str(directory)]) == 0
    assert cache_cli.main(["verify", str(directory)]) == 1                 # foreign key found and removed
    out = capsys.readouterr().out
    assert "foreign" in out
    assert cache_cli.main(["verify", str(directory)]) == 0
    copy = tmp_path / "copy"
    assert cache_cli.main(["import", str(directory), "--cache", str(copy)]) == 0
    assert not marker.exists()


def test_a_cache_database_with_its_own_trigger_or_settings_is_refused(tmp_path):
    for name, sql in [
        ("trigger", "CREATE TRIGGER evil AFTER INSERT ON Cache BEGIN DELETE FROM Cache; END"),
        ("pragma", "INSERT OR REPLACE INTO Settings VALUES ('sqlite_journal_mode', 'wal; DROP TABLE Cache')"),
        ("unknown setting", "INSERT OR REPLACE INTO Settings VALUES ('disk_evil', 1)"),
        ("view", "CREATE VIEW v AS SELECT 1"),
    ]:
        directory = tmp_path / name.replace(" ", "_")
        _cache_with_entries(directory).close()
        connection = sqlite3.connect(str(directory / "cache.db"))
        connection.execute(sql)
        connection.commit()
        connection.close()
        with pytest.raises(CacheOpenError, match="not written by saliency-ssl"):
            TargetCache(directory, FP)


def test_a_value_file_outside_the_cache_is_neither_read_nor_deleted(tmp_path):
    directory = tmp_path / "c"
    cache = TargetCache(directory, FP)
    rng = np.random.default_rng(1)
    big = Target.from_maps(rng.random((200, 200)), rng.random((200, 200)) > 0.5, rng.integers(0, 300, (200, 200)))
    cache.put("a" * 32, big)                      # too large (and random) to stay inside cache.db: a value file
    cache.close()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    connection = sqlite3.connect(str(directory / "cache.db"))
    assert connection.execute("SELECT count(*) FROM Cache WHERE filename IS NOT NULL").fetchone() == (1,)
    connection.execute("UPDATE Cache SET filename = ? WHERE filename IS NOT NULL", ("../victim.txt",))
    connection.commit()
    connection.close()
    cache = TargetCache(directory, FP)
    assert cache.get("a" * 32) is None            # refused as damage, entry removed
    assert victim.read_text() == "keep me"


def test_damage_inside_the_database_is_one_error_naming_the_file(tmp_path, capsys):
    import cache as cache_cli

    directory = tmp_path / "c"
    cache = TargetCache(directory, FP)
    cache.put_many((f"{i:032x}", _target(i)) for i in range(400))
    cache.close()
    db = directory / "cache.db"
    data = bytearray(db.read_bytes())
    assert len(data) > 5 * 4096
    data[2 * 4096:4 * 4096] = np.random.default_rng(0).bytes(2 * 4096)   # past the header, inside the pages
    db.write_bytes(bytes(data))
    for wal in directory.glob("cache.db-*"):
        wal.unlink()
    with pytest.raises(CacheOpenError, match=r"cache.db"):
        opened = TargetCache(directory, FP)
        list(opened.hashes())
        opened.verify()
    assert cache_cli.main(["verify", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "cache.db" in err and "Traceback" not in err


def test_an_empty_database_file_is_reported_not_silently_accepted(tmp_path, capsys):
    import cache as cache_cli

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cache.db").write_bytes(b"")
    assert cache_cli.main(["verify", str(tmp_path / "c")]) == 2
    assert "empty (0 bytes)" in capsys.readouterr().err
    assert cache_cli.main(["stats", str(tmp_path / "c")]) == 2


def test_verify_names_a_cache_without_entries_of_the_labeller(tmp_path, capsys):
    import cache as cache_cli

    TargetCache(tmp_path / "c", FP).close()
    assert cache_cli.main(["verify", str(tmp_path / "c")]) == 1
    assert "no targets" in capsys.readouterr().out


def test_a_damaged_key_is_caught_by_its_checksum(tmp_path):
    directory = tmp_path / "c"
    _cache_with_entries(directory).close()
    connection = sqlite3.connect(str(directory / "cache.db"))
    good = f"{FP}/{1:032x}"
    damaged = f"{FP}/{'1':0>31}7"
    connection.execute("UPDATE Cache SET key = ? WHERE key = ?", (damaged, good))
    connection.commit()
    connection.close()
    cache = TargetCache(directory, FP)
    report = cache.verify()
    assert report.damaged == [damaged.split("/")[1]] and report.checked == 3


def test_older_entries_are_read_and_upgraded_by_verify(tmp_path):
    import hashlib
    import struct

    cache = TargetCache(tmp_path / "c", FP)
    target = _target(5)
    current = encode_target(target, cache.key_of("a" * 32))
    body = current[22:]
    old = struct.pack("<4sBBII8s", b"SSLT", 1, current[5], 8, 8, hashlib.blake2b(body, digest_size=8).digest()) + body
    cache._cache.set(cache.key_of("a" * 32), old)
    assert cache.get("a" * 32).equals(target)
    report = cache.verify()
    assert report.upgraded == 1 and report.damaged == []
    assert cache.get_encoded("a" * 32)[4] == CODEC_VERSION
    with pytest.raises(CorruptTargetError, match="key"):
        decode_target(cache.get_encoded("a" * 32), cache.key_of("b" * 32))


def test_an_import_skips_entries_whose_checksum_does_not_cover_their_key(tmp_path, capsys):
    """An entry of the first codec format, moved under another image's key, passed the import's check and was then
    re-signed under that key. It is skipped and reported; verify on a trusted source rewrites it for a later import."""
    import hashlib
    import struct

    import cache as cache_cli
    from saliencyssl.cache.transfer import import_cache

    source = TargetCache(tmp_path / "source", FP)
    moved = encode_target(_target(5), source.key_of("a" * 32))[22:]
    old = struct.pack("<4sBBII8s", b"SSLT", 1, 1, 8, 8, hashlib.blake2b(moved, digest_size=8).digest()) + moved
    source._cache.set(source.key_of("b" * 32), old)     # image a's target under image b's key
    source._cache.set(source.key_of("d" * 32), old[:-1] + bytes([old[-1] ^ 1]))  # and a damaged one
    source.put("c" * 32, _target(6))
    source.close()
    report = import_cache(tmp_path / "source", tmp_path / "api", FP)
    assert (report.count, report.unkeyed, report.damaged) == (1, ["b" * 32], ["d" * 32])
    with TargetCache(tmp_path / "api", FP) as copy:
        assert "b" * 32 not in copy and copy.get("c" * 32).equals(_target(6))
    assert cache_cli.main(["import", str(tmp_path / "source"), "--cache", str(tmp_path / "cli")]) == 1
    assert "first target format" in capsys.readouterr().err
    assert cache_cli.main(["verify", str(tmp_path / "source")]) == 1   # the damaged one removed, the rest rewritten
    again = import_cache(tmp_path / "source", tmp_path / "cli", FP)
    assert (again.unkeyed, again.damaged) == ([], [])


# -- bounded work, and no process outliving its job ------------------------------------------------
def _photos(folder, photo, count):
    import cv2

    folder.mkdir()
    for i in range(count):
        variant = np.roll(photo, 7 * i, axis=1)
        cv2.imwrite(str(folder / f"p{i:02d}.png"), cv2.cvtColor(variant, cv2.COLOR_RGB2BGR))
    return folder


def test_a_slow_image_fails_by_its_time_limit_and_the_job_goes_on(tmp_path, photo):
    import cv2

    from saliencyssl.cache.labelling import LabelLimits, label_folder

    from saliencyssl.saliency import Labeller

    folder = _photos(tmp_path / "images", photo, 1)
    tiny = np.full((6, 6, 3), 9, np.uint8)
    cv2.imwrite(str(folder / "tiny.png"), tiny)  # labelled at once (under 8 px)
    Labeller()(tiny)  # the first labelling of a process imports the compiled cut: not inside the limit
    cache = TargetCache(tmp_path / "c", FP)
    summary = label_folder(folder, cache, LabellerConfig(), progress=False,
                           limits=LabelLimits(image_timeout=0.02))
    assert summary.labelled == 1 and [Path(p).name for p, _ in summary.failed] == ["p00.png"]
    assert "longer than the per-image limit of 0.02 s" in summary.failed[0][1]


def test_an_interrupt_wrapped_by_compiled_code_stops_the_job_instead_of_failing_one_image(tmp_path, photo, monkeypatch):
    """A signal handler's exception raised inside numba comes back as a SystemError caused by it: an interrupt
    (Ctrl-C, SIGTERM) behind it stops the job, a time-out behind it is the image's time-out, anything else is
    one failed image."""
    import cv2

    from saliencyssl.cache.labelling import ImageTimeoutError, label_files
    from saliencyssl.saliency import Labeller

    path = str(tmp_path / "p.png")
    cv2.imwrite(path, photo[:, :, ::-1])
    job = (LabellerConfig().options(), [(path, True, False)])

    def wrapped(cause):
        def label(self, image, with_hc=False):
            try:
                raise cause
            except BaseException as error:
                raise SystemError("CPUDispatcher(<function _bk_grid>) returned a result with an exception set") \
                    from error
        return label

    class Terminated(KeyboardInterrupt):
        pass

    monkeypatch.setattr(Labeller, "label", wrapped(Terminated(15)))
    with pytest.raises(Terminated):
        label_files(job)
    monkeypatch.setattr(Labeller, "label", wrapped(ImageTimeoutError("took longer than the per-image limit of 1 s")))
    assert label_files(job)[0]["error"] == "took longer than the per-image limit of 1 s"
    monkeypatch.setattr(Labeller, "label", wrapped(ZeroDivisionError("x")))
    assert label_files(job)[0]["error"].startswith("SystemError: CPUDispatcher")


def test_the_pixel_budget_itself_is_bounded():
    from saliencyssl.cache.labelling import LabelLimits
    from saliencyssl.saliency import Labeller

    with pytest.raises(ValueError, match="max_pixels must be a whole number from 64 to 67,108,864"):
        Labeller(max_pixels=10 ** 21)
    with pytest.raises(ValueError, match="pixel budget must be a whole number from 64 to 67,108,864"):
        LabelLimits(max_pixels=100_000_000)
    assert LabelLimits(max_pixels=8192 * 8192).max_pixels == 67_108_864


def test_an_image_over_the_pixel_budget_is_refused_before_any_work(tmp_path, photo):
    from saliencyssl.cache.labelling import LabelLimits, label_folder
    from saliencyssl.saliency import ImageTooLargeError, Labeller

    with pytest.raises(ImageTooLargeError, match=r"225x150 image is labelled at 225x150 = 33,750 pixels"):
        Labeller(max_pixels=10_000)(photo)
    strip = np.tile(photo[:10], (1, 45, 1))                    # 10 x 10125: upscaled to 64 x 64800
    with pytest.raises(ImageTooLargeError, match="max_side"):
        Labeller()(strip)
    folder = _photos(tmp_path / "images", photo, 2)
    summary = label_folder(folder, TargetCache(tmp_path / "c", FP), LabellerConfig(), progress=False,
                           limits=LabelLimits(max_pixels=30_000))
    assert summary.labelled == 0 and len(summary.failed) == 2 and "budget of 30,000" in summary.failed[0][1]


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    import struct
    import zlib

    import cv2

    from saliencyssl.imageio import read_image

    ok, png = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    data = bytearray(png.tobytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", 60_000, 60_000)           # claims 3.6 G pixels
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="bomb.png.*claims.*more.*than the 100,000,000"):
        read_image(tmp_path / "bomb.png")


def test_dangling_and_looping_links_are_reported_as_failures(tmp_path, photo):
    from saliencyssl.cache.labelling import label_folder

    folder = _photos(tmp_path / "images", photo, 1)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    summary = label_folder(folder, TargetCache(tmp_path / "c", FP), LabellerConfig(), progress=False)
    assert summary.total == 3 and summary.labelled == 1
    assert sorted(Path(p).name for p, _ in summary.failed) == ["gone.png", "loop.png"]


def test_label_json_that_is_a_folder_is_refused_before_labelling(tmp_path, photo, capsys):
    import label

    folder = _photos(tmp_path / "images", photo, 1)
    (tmp_path / "out").mkdir()
    assert label.main([str(folder), "--cache", str(tmp_path / "c"), "--json", str(tmp_path / "out"),
                       "--workers", "0", "--quiet"]) == 2
    assert "--json" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_paths_the_file_system_refuses_are_one_line_naming_the_path(tmp_path, photo, capsys):
    """A name longer than the file system allows, an output under a regular file: one line, exit 2, before any
    labelling (no traceback, no lost work)."""
    import evaluate
    import label

    folder = _photos(tmp_path / "images", photo, 1)
    long = tmp_path / ("x" * 300)
    assert label.main([str(long), "--cache", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(long) in err and "longer than the file system allows" in err
    assert label.main([str(folder), "--cache", str(tmp_path / "c"), "--json", f"{long}.json", "--quiet"]) == 2
    assert "longer than the file system allows" in capsys.readouterr().err
    (tmp_path / "afile").write_text("mine")
    assert label.main([str(folder), "--cache", str(tmp_path / "c"), "--json", str(tmp_path / "afile" / "out.json"),
                       "--workers", "0", "--quiet"]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert evaluate.main(["--backbone", "random", "--test", str(long), "--protocol", "kmeans",
                          "--out", str(tmp_path / "o")]) == 2
    assert "longer than the file system allows" in capsys.readouterr().err


def test_a_worker_that_died_is_one_line_in_every_stage(tmp_path, monkeypatch, capsys):
    """label caught a dead labelling worker; grid and quickstart, whose labelling jobs run the same pool, ended in a
    traceback. The stages' net turns it into one line with exit status 3; another RuntimeError is not hidden."""
    from saliencyssl.app import quickstart
    from saliencyssl.cache.executors import WorkerDiedError

    def die(config):
        raise WorkerDiedError("a worker process died while labelling (killed, or out of memory)")

    monkeypatch.setattr(quickstart, "run", die)
    assert quickstart.main(["--out", str(tmp_path / "q")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "died while labelling" in err and "rerun the same command" in err

    def fail(config):
        raise RuntimeError("a bug")

    monkeypatch.setattr(quickstart, "run", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        quickstart.main(["--out", str(tmp_path / "q")])


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    """A process's command line ("" once it has exited). A child just forked still shows its parent's
    command line until it executes its own, so processes are told apart by what they run, positively."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _start_label_job(tmp_path, photo, workers: int):
    import subprocess
    import sys
    import time

    from _paths import REPO

    folder = _photos(tmp_path / "images", photo, 16)
    job = subprocess.Popen([sys.executable, str(REPO / "scripts" / "label.py"), str(folder), "--cache",
                            str(tmp_path / "c"), "--workers", str(workers), "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        kids = _children(job.pid)
        workers_up = [k for k in kids if "spawn_main" in _cmdline(k)]
        if len(workers_up) >= workers and TargetCache.exists(tmp_path / "c"):
            return job, kids
        time.sleep(0.2)
    job.kill()
    pytest.fail("the labelling job did not start its workers")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_killing_a_labelling_job_leaves_no_process_behind(tmp_path, photo, signal_name):
    import signal
    import time

    job, kids = _start_label_job(tmp_path, photo, workers=2)
    assert len(kids) >= 3, "two workers and the resource tracker"
    job.send_signal(getattr(signal, signal_name))
    job.wait(30)
    # A worker exits within half a second of seeing its parent gone; one still importing (seconds on a
    # loaded machine) sees it as soon as it starts.
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "worker or tracker processes outlived the job"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_a_worker_killed_mid_job_is_one_line_and_the_job_resumes(tmp_path, photo):
    import signal
    import subprocess
    import sys

    from _paths import REPO

    job, kids = _start_label_job(tmp_path, photo, workers=1)
    worker = next(k for k in kids if "spawn_main" in _cmdline(k))
    os.kill(worker, signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 3, err
    assert "worker process died" in err and "rerun the same command" in err and "Traceback" not in err
    rerun = subprocess.run([sys.executable, str(REPO / "scripts" / "label.py"), str(tmp_path / "images"), "--cache",
                            str(tmp_path / "c"), "--workers", "1", "--quiet"], capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert len(TargetCache(tmp_path / "c", FP)) == 16


def test_training_from_a_damaged_pack_is_refused(tmp_path):
    from saliencyssl.augment.pack import load_pack
    from saliencyssl.cache.packfile import PackError, write_pack

    targets = [(f"{i:032x}", _target(i)) for i in range(4)]
    pack = write_pack(tmp_path / "p.pack", targets, FP)
    hashes = [h for h, _ in targets]
    assert load_pack(pack, hashes, 8).report.hits == 4
    data = bytearray(pack.read_bytes())
    data[-5] ^= 0x01                                          # one flipped bit in the region labels
    pack.write_bytes(bytes(data))
    with pytest.raises(PackError, match="fails its checksum"):
        load_pack(pack, hashes, 8)
    # A damaged hash in the header (a target moved to another image) fails the checksum too.
    good = write_pack(tmp_path / "q.pack", targets, FP).read_bytes()
    moved = good.replace(hashes[1].encode(), hashes[1][:-1].encode() + b"9", 1)
    (tmp_path / "q.pack").write_bytes(moved)
    with pytest.raises(PackError, match="fails its checksum"):
        load_pack(tmp_path / "q.pack", hashes, 8)


def _alter_cache_db(directory: Path, sql: str) -> None:
    """A cache with entries whose cache.db then runs ``sql`` (as someone handing the folder over could)."""
    _cache_with_entries(directory).close()
    connection = sqlite3.connect(str(directory / "cache.db"))
    connection.execute(sql)
    connection.commit()
    connection.close()


def test_a_cache_folder_named_like_a_uri_is_audited_itself(tmp_path):
    directory = tmp_path / "evil#cache%2Fx?y"
    _alter_cache_db(directory, "CREATE TRIGGER evil AFTER INSERT ON Cache BEGIN DELETE FROM Cache; END")
    with pytest.raises(CacheOpenError, match="trigger 'evil'"):
        TargetCache(directory, FP)
    assert not (tmp_path / "evil").exists()


def test_a_cache_table_with_other_sql_is_refused(tmp_path):
    directory = tmp_path / "c"
    _alter_cache_db(directory, "ALTER TABLE Cache ADD COLUMN evil BLOB GENERATED ALWAYS AS (zeroblob(1000)) VIRTUAL")
    with pytest.raises(CacheOpenError, match="table 'Cache'"):
        TargetCache(directory, FP)


def _value_file(directory) -> Path:
    rng = np.random.default_rng(1)
    big = Target.from_maps(rng.random((200, 200)), rng.random((200, 200)) > 0.5, rng.integers(0, 300, (200, 200)))
    cache = TargetCache(directory, FP)
    cache.put("a" * 32, big)
    cache.close()
    (value,) = [p for p in directory.rglob("*.val")]
    return value


def test_linked_value_files_are_neither_read_nor_deleted(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"SSLT keep me")
    value = _value_file(tmp_path / "c")
    value.unlink()
    value.symlink_to(victim)                                        # the value file is a link out
    cache = TargetCache(tmp_path / "c", FP)
    assert cache.get("a" * 32) is None
    assert victim.read_bytes() == b"SSLT keep me"
    outside = tmp_path / "outside"
    outside.mkdir()
    value = _value_file(tmp_path / "d")
    (outside / value.name).write_bytes(b"mine")
    folder = value.parent
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.symlink_to(outside)                                      # a value folder linked out
    cache = TargetCache(tmp_path / "d", FP)
    assert cache.get("a" * 32) is None
    assert (outside / value.name).read_bytes() == b"mine"


def test_a_pipe_named_like_an_image_fails_without_blocking_the_job(tmp_path, photo):
    from saliencyssl.cache.labelling import label_folder

    folder = _photos(tmp_path / "images", photo, 1)
    os.mkfifo(folder / "pipe.png")
    (folder / "link.png").symlink_to(folder / "pipe.png")
    summary = label_folder(folder, TargetCache(tmp_path / "c", FP), LabellerConfig(), progress=False)
    assert summary.labelled == 1 and sorted(Path(p).name for p, _ in summary.failed) == ["link.png", "pipe.png"]
    assert all("not a regular file" in reason for _, reason in summary.failed)


def test_decoding_counts_against_the_per_image_time_limit(tmp_path, monkeypatch, photo):
    import time

    from saliencyssl.cache import labelling
    from saliencyssl.cache.labelling import LabelLimits, label_files

    folder = _photos(tmp_path / "images", photo, 1)
    slow = labelling.read_image

    def slow_decode(path):
        time.sleep(0.5)
        return slow(path)

    monkeypatch.setattr(labelling, "read_image", slow_decode)
    [record] = label_files(({}, [(str(folder / "p00.png"), True, False)], LabelLimits(image_timeout=0.1)))
    assert record["target"] is None and "longer than the per-image limit" in record["error"]
    [(_, image_hash, error)] = labelling.hash_files(([str(folder / "p00.png")], LabelLimits(image_timeout=0.1)))
    assert image_hash is None and "decoding it took longer" in error


def test_a_mask_is_checked_for_size_before_it_is_decoded(tmp_path):
    import struct
    import zlib

    import cv2

    from saliencyssl.imageio import read_mask

    ok, png = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    data = bytearray(png.tobytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", 60_000, 60_000)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    (tmp_path / "m.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="m.png: cannot decode the mask .*claims"):
        read_mask(tmp_path / "m.png")


@pytest.mark.parametrize("flags, message", [
    (["--size", "100000"], "--size 100000"),
    (["--ngf", "100000"], "ngf"),
    (["--head", "100000"], "head"),
    (["--threads", "100000"], "--threads"),
    (["--variants", "100000"], "--variants"),
])
def test_train_surrogate_refuses_sizes_that_would_exhaust_the_machine(tmp_path, flags, message, capsys):
    """A digit too many in a size is refused in one line before anything is read or allocated."""
    from saliencyssl.app import train_surrogate

    images = tmp_path / "images"
    images.mkdir()
    code = train_surrogate.main([str(images), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                                 *flags, "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_pairs_at_a_size_beyond_the_memory_are_refused_before_reading(tmp_path, monkeypatch):
    """load_pairs checks the memory the pairs need against what the machine has before decoding any image."""
    import cv2

    import saliencyssl.datasets as datasets
    from saliencyssl.surrogate.pairs import load_pairs

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    monkeypatch.setattr(datasets, "available_memory", lambda: 1_000_000)  # 1 MB left
    with pytest.raises(MemoryError, match="3 image-target pairs at 1024 px"):
        load_pairs(images, tmp_path / "cache", 1024, progress=False)


def _torch_file_with(tmp_path: Path, name: str, pickle_bytes: bytes | None = None,
                     compress: bool = False) -> Path:
    """A torch.save archive of a one-tensor dict, its data.pkl replaced by ``pickle_bytes`` and its members
    stored (as torch.save writes them) or deflated."""
    import zipfile

    import torch

    base = tmp_path / f"{name}_base.pt"
    torch.save({"weight": torch.zeros(4)}, base)
    out = tmp_path / f"{name}.pt"
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(out, "w") as target:
        for member in source.infolist():
            data = source.read(member)
            if member.filename.endswith("/data.pkl") and pickle_bytes is not None:
                data = pickle_bytes
            target.writestr(member.filename, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return out


def test_checkpoints_that_would_crash_stall_or_inflate_the_safe_loader_are_refused_first(tmp_path, capsys):
    """torch.load(weights_only=True) runs no code but builds what the pickle says: a million-deep tuple key
    crashed every stage that loads a checkpoint (exit 139), colliding integer keys took minutes, a deflated
    member inflated to gigabytes. Each is refused, in one line, before torch opens the file."""
    import torch

    import evaluate
    from saliencyssl.ssl.backbone import BackboneCheckpointError, load_backbone
    from saliencyssl.surrogate.model import Surrogate, SurrogateCheckpointError
    from saliencyssl.torchfiles import UnsafeTorchFileError, check_torch_file

    deep = _torch_file_with(tmp_path, "deep", b"\x80\x02})" + b"\x85" * 1_000_000 + b"K\x00s.")
    keys = b"".join(b"\x8a\x09" + (k * (2 ** 61 - 1)).to_bytes(9, "little", signed=True) + b"K\x00"
                    for k in range(1, 60))
    colliding = _torch_file_with(tmp_path, "collide", b"\x80\x02}(" + keys + b"u.")
    inflating = _torch_file_with(tmp_path, "deflated", compress=True)
    honest = _torch_file_with(tmp_path, "honest")
    check_torch_file(honest)
    assert torch.load(honest, weights_only=True)["weight"].shape == (4,)
    for path, reason in ((deep, "nests values more than 100 deep"), (colliding, "as a dict key"),
                         (inflating, "is compressed")):
        with pytest.raises(UnsafeTorchFileError, match=reason):
            check_torch_file(path)
        with pytest.raises(BackboneCheckpointError, match=reason):
            load_backbone(path)
        with pytest.raises(SurrogateCheckpointError, match=reason):
            Surrogate.load(path)
    images = _photos(tmp_path / "images", np.full((40, 40, 3), 7, np.uint8), 2)
    assert evaluate.main(["--backbone", str(deep), "--test", str(images), "--protocol", "kmeans", "--clusters", "2",
                          "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nests values more than 100 deep" in err


def test_a_small_tuple_held_twice_loads_and_a_shared_list_does_not(tmp_path):
    """Pickle stores a shared object once: two Adam optimizers built with one betas tuple (torch releases that keep
    the caller's tuple) and any two empty tuples came back as one object held twice, and every such checkpoint was
    refused. A list held twice still is: references to it could make a small file look gigabytes long."""
    import torch

    from saliencyssl.torchfiles import UnsafeTorchFileError, load_torch_file

    betas = (0.5, 0.999)
    shared = tmp_path / "shared.pt"
    torch.save({"opt_g": {"betas": betas}, "opt_d": {"betas": betas}, "a": (), "b": ()}, shared)
    loaded = load_torch_file(shared)
    assert loaded["opt_g"]["betas"] == loaded["opt_d"]["betas"] == betas and loaded["a"] == ()
    values = [1.0] * 4
    torch.save({"x": values, "y": values}, tmp_path / "list.pt")
    with pytest.raises(UnsafeTorchFileError, match="a container twice"):
        load_torch_file(tmp_path / "list.pt")
    for name, value in (("nested", ((1, 2),)), ("text", ("a", "b")), ("long", tuple(range(17)))):
        torch.save({"x": value, "y": value}, tmp_path / f"{name}.pt")
        with pytest.raises(UnsafeTorchFileError, match="a container twice"):
            load_torch_file(tmp_path / f"{name}.pt")


def test_what_torch_would_read_differently_or_build_without_bound_is_refused(tmp_path):
    """The checks see what torch sees: a pickle with an archive appended (torch's legacy reader took the pickle),
    a second data.pkl differing in case (torch's reader ignores case), deep nesting through the pickle's memo, and
    globals torch admits but no checkpoint names (bytearray allocates what it is told, _codecs.encode can run for
    hours) are each refused; an honest checkpoint loads as torch.load gives it."""
    import struct
    import zipfile

    import torch

    from saliencyssl.torchfiles import UnsafeTorchFileError, load_torch_file

    evil = b"\x80\x02})" + b"\x85" * 1_000_000 + b"K\x01s."
    honest = _torch_file_with(tmp_path, "honest")
    appended = tmp_path / "appended.pt"
    appended.write_bytes(evil + honest.read_bytes())
    loaded = load_torch_file(appended)  # what zipfile sees is the honest archive, and only that is given to torch
    assert torch.equal(loaded["weight"], torch.load(honest, weights_only=True)["weight"])

    cased = tmp_path / "cased.pt"
    with zipfile.ZipFile(honest) as source, zipfile.ZipFile(cased, "w") as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member))
        target.writestr("archive/DECOY/DATA.PKL", evil)
    with pytest.raises(UnsafeTorchFileError, match="2 data.pkl members"):
        load_torch_file(cased)

    depth = 5_000  # lists nested through the memo: each new list appends the one stored before it, and a flat
    ops = bytearray(b"\x80\x02]]r" + struct.pack("<I", 0) + b"a")  # outer list holds them all
    for i in range(1, depth):
        ops += b"]r" + struct.pack("<I", i) + b"j" + struct.pack("<I", i - 1) + b"aa"
    ops += b"."
    with pytest.raises(UnsafeTorchFileError, match="nests values more than 100 deep"):
        load_torch_file(_torch_file_with(tmp_path, "memo", bytes(ops)))

    for name, call in (("bytearray", b"cbuiltins\nbytearray\nJ\x00\xca\x9a;\x85R"),
                       ("encode", b"c_codecs\nencode\nX\x01\x00\x00\x00aX\x08\x00\x00\x00punycode\x86R")):
        with pytest.raises(UnsafeTorchFileError, match=f"names .*{name}, which no checkpoint holds"):
            load_torch_file(_torch_file_with(tmp_path, name, b"\x80\x02}(X\x01\x00\x00\x00a" + call + b"u."))


def test_outputs_are_readable_by_the_group_and_others_as_the_umask_allows(tmp_path):
    """mkstemp makes owner-only files; a pack or checkpoint written through it could not be read by another account's
    job. Outputs get the mode open() gives a new file under the umask in force when they are written."""
    import stat

    from saliencyssl.files import replace_file

    previous = os.umask(0o022)
    try:
        for umask in (0o022, 0o027):
            os.umask(umask)
            path = replace_file(tmp_path / f"results{umask}.json", "{}")
            plain = tmp_path / f"plain{umask}.json"
            plain.write_text("{}")
            assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(previous)


def test_outputs_replace_links_and_hard_links_instead_of_writing_through_them(tmp_path, capsys, photo):
    """A link planted where an output goes (results.md, results.csv, a plot) redirected the write into another file;
    a hard link to an input was overwritten with the output. Outputs are fresh files moved over their names."""
    import evaluate
    from saliencyssl.files import replace_file

    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / "link.md").symlink_to(victim)
    os.link(victim, tmp_path / "hard.md")
    replace_file(tmp_path / "link.md", "out")
    replace_file(tmp_path / "hard.md", "out")
    assert victim.read_text() == "mine" and not (tmp_path / "link.md").is_symlink()
    assert (tmp_path / "link.md").read_text() == (tmp_path / "hard.md").read_text() == "out"

    images = _photos(tmp_path / "images", photo[:48, :48], 4)
    out = tmp_path / "eval"
    command = ["--backbone", "random", "--test", str(images), "--protocol", "kmeans", "--clusters", "2", "--out",
               str(out), "--quiet"]
    assert evaluate.main(command) == 0
    for name in ("results.md", "results.csv"):
        (out / name).unlink()
        (out / name).symlink_to(victim)
    assert evaluate.main(command + ["--force"]) == 0
    assert victim.read_text() == "mine" and "k-means" in (out / "results.md").read_text().lower()
    import label

    json_victim = tmp_path / "victim.json"
    json_victim.write_text('{"important": "mine"}')
    (tmp_path / "summary.json").symlink_to(json_victim)  # a JSON file an earlier run could have written
    assert label.main([str(images), "--cache", str(tmp_path / "c"), "--json", str(tmp_path / "summary.json"),
                       "--workers", "0", "--quiet"]) == 0
    assert json_victim.read_text() == '{"important": "mine"}'
    assert '"fingerprint"' in (tmp_path / "summary.json").read_text()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_compressed_tiff_claiming_gigabytes_of_float_samples_is_refused_before_decoding(tmp_path):
    """Pillow cannot read the header of a 4-channel float TIFF, so its size went unchecked: 1.8 MB of deflated
    zeros decoded into gigabytes. The TIFF's own directory is read instead; a small float TIFF still decodes."""
    import cv2

    from saliencyssl.imageio import read_image

    cv2.imwrite(str(tmp_path / "bomb.tif"), np.zeros((10_000, 10_000, 4), np.float32),
                [cv2.IMWRITE_TIFF_COMPRESSION, 8])
    assert (tmp_path / "bomb.tif").stat().st_size < 4_000_000
    with pytest.raises(ImageDecodeError, match="10000 x 10000 pixels of 4 x 32-bit samples, more than the"):
        read_image(tmp_path / "bomb.tif")
    cv2.imwrite(str(tmp_path / "small.tif"), np.full((12, 10, 3), 0.5, np.float32))
    assert read_image(tmp_path / "small.tif").shape == (12, 10, 3)


def test_a_tiff_repeating_its_size_tags_is_refused(tmp_path):
    """libtiff keeps the first copy of a repeated tag: a directory saying 4 float channels, then 1 byte channel,
    passed a check that kept the last copy and decoded into gigabytes."""
    import struct

    from saliencyssl.imageio import tiff_header

    entries = [(256, 3, 1, 100), (257, 3, 1, 250), (258, 3, 1, 32), (277, 3, 1, 4), (258, 3, 1, 8), (277, 3, 1, 1)]
    data = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *entry) for entry in entries) + b"\x00" * 4
    with pytest.raises(ValueError, match="gives tag 258 twice"):
        tiff_header(np.frombuffer(data, np.uint8))
    honest = data[:10] + b"".join(struct.pack("<HHII", *entry) for entry in entries[:4]) + b"\x00" * 4
    honest = honest[:8] + struct.pack("<H", 4) + honest[10:]
    assert tiff_header(np.frombuffer(honest, np.uint8)) == (100, 250, 4, 32)


def test_content_of_another_format_than_its_name_is_refused_before_decoding(tmp_path):
    """A Radiance HDR file named .png (6 MB claiming 100 M pixels) passed the header check Pillow cannot make for it
    and decoded into 1.5 GB of floats; only the formats whose size is checked are decoded."""
    from saliencyssl.imageio import read_image

    (tmp_path / "bomb.png").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 9999 +X 10000\n" + b"\x02" * 64)
    with pytest.raises(ImageDecodeError, match="its content is not PNG, JPEG, BMP, TIFF, WebP or GIF"):
        read_image(tmp_path / "bomb.png")
