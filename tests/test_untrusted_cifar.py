"""CIFAR-10 batches from others: no memory amplification in the unpickler, no temporary folder left
behind by a terminated label job, no output written into the folder of a batch file."""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from saliencyssl.app.fidelity import FidelityConfig
from saliencyssl.app.label import CIFAR_TEMP_PREFIX, LabelConfig, remove_stale_cifar_folders
from saliencyssl.app.label import main as label_main
from saliencyssl.app.views import ViewsConfig
from saliencyssl.datasets import CifarUnpickler, UnsafePickleError, open_image_set
from saliencyssl.imageio import ImageDecodeError


def _cifar_folder(root: Path, n: int = 6, protocol: int = 2) -> dict:
    from test_untrusted import _cifar_folder as write_cifar_folder

    return write_cifar_folder(root, n, protocol)


def _amplifying_batch(kind: str, size: int = 64 << 10, calls: int = 100) -> bytes:
    """A protocol-2 pickle ``{"labels": [], "junk": [...]}`` that memoises one ``size``-byte object and passes
    it ``calls`` times to numpy's ``_frombuffer`` (which copies) or to ``_codecs.encode``, keeping every result."""
    p = bytearray(b"\x80\x02}")
    p += b"X" + struct.pack("<I", 6) + b"labels" + b"]s"
    p += b"X" + struct.pack("<I", 4) + b"junk" + b"]"
    if kind == "frombuffer":
        p += b"B" + struct.pack("<I", size) + b"\x07" * size + b"q\x000"  # BINBYTES, BINPUT 0, POP
        p += b"cnumpy.core.numeric\n_frombuffer\nq\x010"
        call = b"h\x01(h\x00X\x02\x00\x00\x00u1J" + struct.pack("<i", size) + b"\x85X\x01\x00\x00\x00CtRa"
    else:
        p += b"X" + struct.pack("<I", size) + b"a" * size + b"q\x000"
        p += b"c_codecs\nencode\nq\x010"
        call = b"h\x01(h\x00X\x06\x00\x00\x00latin1tRa"
    return bytes(p + call * calls + b"s.")


# -- N2: the unpickler's running byte budget -------------------------------------------------------
@pytest.mark.parametrize("kind", ["frombuffer", "codecs"])
def test_a_batch_that_rebuilds_one_memoised_object_again_and_again_is_refused(tmp_path, kind):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(_amplifying_batch(kind))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    with pytest.raises(ImageDecodeError, match="data_batch_1.*rebuilds the same data"):
        open_image_set(folder)


@pytest.mark.parametrize("kind", ["frombuffer", "codecs"])
def test_the_budget_counts_every_call_and_a_few_calls_fit(kind):
    import io

    few = _amplifying_batch(kind, size=4096, calls=2)  # 8 KB built by a 4 KB pickle: within twice its size
    assert len(CifarUnpickler(io.BytesIO(few), encoding="bytes").load()["junk"]) == 2
    many = _amplifying_batch(kind, size=4096, calls=3)
    with pytest.raises(UnsafePickleError, match="more than the"):
        CifarUnpickler(io.BytesIO(many), encoding="bytes", max_total_bytes=3 * 4096 - 1).load()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_an_honest_batch_still_loads_under_the_budget(tmp_path, protocol):
    batch = _cifar_folder(tmp_path / "c", n=64, protocol=protocol)
    image_set = open_image_set(tmp_path / "c")
    assert len(image_set) == 64 and list(image_set.labels) == batch[b"labels"]
    assert np.array_equal(image_set.image(5), batch[b"data"][5].reshape(3, 32, 32).transpose(1, 2, 0))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_full_sized_batches_with_their_file_names_load_in_every_protocol(tmp_path, protocol):
    """The budget was twice the file: a protocol-5 pickle builds its data twice (the bytearray, then the array) and
    its ten thousand labels and names filled the rest, so a CIFAR-100-style file of 10,000 images was refused."""
    rng = np.random.default_rng(0)
    n = 10_000
    batch = {b"batch_label": b"testing batch 1 of 1", b"coarse_labels": [int(v) for v in rng.integers(0, 10, n)],
             b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"filenames": [f"image_{i:05d}_of_the_test_set_{i * 7919 % 10 ** 6:06d}.png".encode() for i in range(n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    (tmp_path / "c" / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"] * 10}, protocol=protocol))
    image_set = open_image_set(tmp_path / "c")
    assert len(image_set) == n and list(image_set.labels) == batch[b"labels"]
    assert np.array_equal(image_set.image(n - 1), batch[b"data"][-1].reshape(3, 32, 32).transpose(1, 2, 0))


def _meta(root: Path, meta: bytes) -> Path:
    """A CIFAR folder whose data_batch_1 is honest and whose batches.meta is ``meta``."""
    _cifar_folder(root, n=4)
    (root / "batches.meta").write_bytes(meta)
    return root


def test_a_deeply_nested_tuple_key_is_refused_before_it_is_hashed(tmp_path):
    """A dict key of a million nested tuples would overflow the C stack when hashed (a crash, no message)."""
    def meta(depth: int) -> bytes:
        return b"\x80\x04})" + b"\x85" * depth + b"K\x01s."  # {((((...),),),): 1}

    with pytest.raises(ImageDecodeError, match="batches.meta.*crafted to fill memory"):  # charged before built
        open_image_set(_meta(tmp_path / "a", meta(1_000_000)))
    with pytest.raises(ImageDecodeError, match="batches.meta.*uses a dict key of type tuple"):  # within the budget
        open_image_set(_meta(tmp_path / "b", meta(10_000)))


def test_sets_are_refused_and_millions_of_small_objects_are_charged(tmp_path):
    with pytest.raises(ImageDecodeError, match="builds a set"):
        open_image_set(_meta(tmp_path / "a", b"\x80\x04" + b"\x8f" * 1000 + b"."))
    for name, code in (("b", b"]"), ("d", b"}")):  # 1 MB of "empty list" / "empty dict": 1 MB of objects each
        with pytest.raises(ImageDecodeError, match="crafted to fill memory with small objects"):
            open_image_set(_meta(tmp_path / name, b"\x80\x04" + code * (1 << 20) + b"."))


@pytest.mark.parametrize("where", ["label_names", "labels"])
def test_nested_lists_where_the_format_has_flat_ones_are_refused(tmp_path, where):
    """A list nested thousands deep (within the object budget) would overflow a repr or a check later."""
    depth = 5_000
    nested = b"]" * depth + b"a" * (depth - 1)
    if where == "label_names":
        root = _meta(tmp_path / "c", b"\x80\x04}C\x0blabel_names" + nested + b"s.")
        bad = "batches.meta"
    else:
        root = tmp_path / "c"
        _cifar_folder(root, n=4)
        (root / "data_batch_1").write_bytes(b"\x80\x04}C\x06labels" + nested + b"s.")
        bad = "data_batch_1"
    with pytest.raises(ImageDecodeError, match=f"{bad}.*list holding a list"):
        open_image_set(root)


# -- N3: label's temporary folder under SIGTERM and after SIGKILL ---------------------------------------
def test_label_removes_its_temporary_cifar_folder_on_sigterm(tmp_path):
    _cifar_folder(tmp_path / "c", n=300)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    code = ("import sys; from saliencyssl.app.label import main; "
            f"sys.exit(main([{str(tmp_path / 'c')!r}, '--cache', {str(tmp_path / 'cache')!r}, '--quiet', "
            f"'--workers', '0']))")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(temp.glob(CIFAR_TEMP_PREFIX + "*/data_batch_1/00299.png")):  # every image written
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job never wrote its temporary folder"
            time.sleep(0.05)
        (folder,) = temp.glob(CIFAR_TEMP_PREFIX + "*")
        assert folder.name.startswith(f"{CIFAR_TEMP_PREFIX}{proc.pid}-")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated by SIGTERM" in err and "rerun the same command" in err
    assert not folder.exists() and not list(temp.iterdir())


def test_stale_cifar_folders_of_dead_jobs_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{CIFAR_TEMP_PREFIX}{dead.pid}-abc123"
    (stale / "data_batch_1").mkdir(parents=True)
    (stale / "data_batch_1" / "00000.png").write_bytes(b"x")
    live = tmp_path / f"{CIFAR_TEMP_PREFIX}{os.getpid()}-def456"
    live.mkdir()
    unnumbered = tmp_path / f"{CIFAR_TEMP_PREFIX}q7x9"
    unnumbered.mkdir()
    link = tmp_path / f"{CIFAR_TEMP_PREFIX}{dead.pid}-link"
    link.symlink_to(live)
    assert remove_stale_cifar_folders(tmp_path) == [stale]
    assert not stale.exists() and live.is_dir() and unnumbered.is_dir() and link.is_symlink()


def test_sigterm_handler_is_restored_after_the_job(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert label_main([str(tmp_path / "missing"), "--cache", str(tmp_path / "cache")]) == 2
    _cifar_folder(tmp_path / "c", n=2)
    assert label_main([str(tmp_path / "c"), "--cache", str(tmp_path / "cache"), "--quiet", "--workers", "0"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# -- N4: outputs beside a CIFAR batch given as a file ---------------------------------------------
def test_views_refuses_an_output_beside_a_batch_file(tmp_path):
    _cifar_folder(tmp_path / "c")
    batch = tmp_path / "c" / "data_batch_1"
    with pytest.raises(ValueError, match=r"--out .*views.png lies inside the folder of DATA .*data_batch_1"):
        ViewsConfig(data=batch, out=tmp_path / "c" / "views.png", policy="default")
    with pytest.raises(ValueError, match="must end in"):  # the suggested name lies outside too
        ViewsConfig(data=batch, out=tmp_path / "c" / "views.txt", policy="default")
    ViewsConfig(data=batch, out=tmp_path / "views.png", policy="default")  # beside the folder: fine


@pytest.mark.parametrize("option", ["json", "grid"])
def test_fidelity_refuses_outputs_beside_a_batch_file(tmp_path, option):
    _cifar_folder(tmp_path / "c")
    batch = tmp_path / "c" / "data_batch_1"
    out = tmp_path / "c" / ("fidelity.json" if option == "json" else "grid.png")
    with pytest.raises(ValueError, match=rf"--{option} .* lies inside the folder of IMAGES_DIR"):
        FidelityConfig(images=batch, cache=tmp_path / "cache", surrogate=tmp_path / "s.pt", **{option: out})


def test_label_json_beside_a_batch_file_is_refused(tmp_path, capsys):
    _cifar_folder(tmp_path / "c")
    batch = tmp_path / "c" / "data_batch_1"
    with pytest.raises(ValueError, match=r"--json .*summary.json lies inside the folder of IMAGES_DIR"):
        LabelConfig(images=batch, cache=tmp_path / "cache", json=tmp_path / "c" / "summary.json")
    assert label_main([str(batch), "--cache", str(tmp_path / "cache"), "--json",
                       str(tmp_path / "c" / "summary.json")]) == 2
    assert "lies inside" in capsys.readouterr().err
    assert not (tmp_path / "c" / "summary.json").exists() and not (tmp_path / "cache").exists()


def test_integer_keys_and_long_dtype_texts_are_refused_before_they_cost_time_or_memory(tmp_path):
    """Integer keys that are multiples of 2**61 - 1 all hash alike (60,000 of them took 33 s); numpy parses a
    dtype given as a megabyte of text into gigabytes. Neither is in the format."""
    keys = b"".join(b"\x8a\x09" + (k * (2 ** 61 - 1)).to_bytes(9, "little", signed=True) + b"K\x00"
                    for k in range(1, 50))
    with pytest.raises(ImageDecodeError, match="batches.meta.*uses a dict key of type int"):
        open_image_set(_meta(tmp_path / "a", b"\x80\x04}(" + keys + b"u."))
    text = ("(" + "1," * 100_000 + ")u1").encode()
    dtype = b"\x80\x04\x8c\x05numpy\x8c\x05dtype\x93\x8d" + len(text).to_bytes(8, "little") + text + b"\x85R."
    with pytest.raises(ImageDecodeError, match="batches.meta.*names a dtype by 200,004 characters of text"):
        open_image_set(_meta(tmp_path / "b", dtype))


def test_a_refusal_describes_a_crafted_value_without_printing_it(tmp_path):
    """A dtype's state given as a tuple of 12,000 references to one 16 KB bytes object: the refusal's message once
    printed it whole (200 MB for a 40 KB file, growing with the square of the file)."""
    from saliencyssl.datasets import load_cifar_pickle

    size, count = 16_384, 12_000
    data = (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00u1\x85R" + b"B" + struct.pack("<I", size) + b"\x07" * size
            + b"q\x00" + b"0" + b"(" + b"h\x00" * count + b"tb.")
    (tmp_path / "batches.meta").write_bytes(data)
    with pytest.raises(ImageDecodeError, match=f"sets a dtype's state to a tuple of {count} items"):
        load_cifar_pickle(tmp_path / "batches.meta")
