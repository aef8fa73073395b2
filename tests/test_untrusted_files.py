"""Files from others are bounded before they are read: images, CIFAR batches, documents, and outputs.

Each hostile file here is what a reviewer built to exhaust memory, crash a stage with a traceback or
overwrite an input. Sizes are claimed with sparse files (no disk used), and the memory a read takes
is measured with tracemalloc, which sees numpy's and Python's allocations.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from saliencyssl.datasets import open_image_set
from saliencyssl.imageio import ImageDecodeError, list_images, read_image, read_mask

MB = 1 << 20


def _peak_bytes(call) -> tuple[int, BaseException | None]:
    """The peak of memory ``call()`` allocated (numpy and Python), and what it raised."""
    tracemalloc.start()
    raised = None
    try:
        call()
    except BaseException as error:  # noqa: BLE001 - returned to the test
        raised = error
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def _sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of ``size`` bytes starting with ``head``, the rest a hole (no disk used)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def _png(shape=(1, 1, 3), claim: tuple[int, int] | None = None) -> bytes:
    """A PNG; with ``claim``, its header rewritten to claim ``(width, height)`` pixels (CRC fixed)."""
    ok, png = cv2.imencode(".png", np.zeros(shape, np.uint8))
    data = bytearray(png.tobytes())
    if claim is not None:
        ihdr = data.index(b"IHDR")
        data[ihdr + 4:ihdr + 12] = struct.pack(">II", *claim)
        data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


# -- images ----------------------------------------------------------------------------------------
def test_an_image_file_larger_than_any_image_is_refused_unread(tmp_path):
    """512 MB named .png (the reviewer's was 3 GB and took 6.35 GB): refused from its size, nothing read."""
    big = _sparse(tmp_path / "big.png", _png(), 512 * MB)
    peak, error = _peak_bytes(lambda: read_image(big))
    assert isinstance(error, ImageDecodeError), error
    assert "big.png" in str(error) and "536,870,912 bytes, more than the" in str(error)
    assert peak < 16 * MB, f"{peak / MB:.0f} MB allocated to refuse a file by its size"
    with pytest.raises(ValueError, match="big.png: cannot decode the mask .*bytes, more than"):
        read_mask(big)


def test_the_header_is_checked_before_the_file_is_read(tmp_path):
    """A file within the size bound whose header claims 120 M pixels: refused having read its header only."""
    bomb = _sparse(tmp_path / "bomb.png", _png(claim=(12_000, 10_000)), 64 * MB)
    peak, error = _peak_bytes(lambda: read_image(bomb))
    assert isinstance(error, ImageDecodeError) and "claims 12000 x 10000 pixels" in str(error), error
    assert peak < 16 * MB, f"{peak / MB:.0f} MB read before the header was checked"


def test_an_image_file_is_read_once_not_copied(tmp_path):
    """A 64 MB file whose header passes: read into one array, the header check copying nothing."""
    padded = _sparse(tmp_path / "padded.png", _png((2, 3, 3)), 64 * MB)
    peak, error = _peak_bytes(lambda: read_image(padded))
    assert error is None or isinstance(error, ImageDecodeError), error
    assert peak < 64 * MB * 1.25, f"{peak / MB:.0f} MB to read a 64 MB file"


def test_an_honest_image_still_decodes_through_every_path(tmp_path, photo, monkeypatch):
    """PNG, JPEG with EXIF, WebP, and Pillow's fallback on the bytes read once, after the checks."""
    from PIL import Image

    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_image(tmp_path / "a.png"), photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown turned by 90 degrees
    Image.fromarray(photo).save(tmp_path / "b.jpg", quality=95, exif=exif)
    assert read_image(tmp_path / "b.jpg").shape == (photo.shape[1], photo.shape[0], 3)
    Image.fromarray(photo).save(tmp_path / "c.webp", lossless=True)
    assert np.array_equal(read_image(tmp_path / "c.webp"), photo)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)       # a format OpenCV lacks: Pillow decodes it
    assert np.array_equal(read_image(tmp_path / "c.webp"), photo)


# -- CIFAR batches ---------------------------------------------------------------------------------
def _cifar(root: Path, labels: list, names: int = 10, batch: bytes | None = None) -> Path:
    """A CIFAR-10 batch folder: one batch of ``len(labels)`` random images and ``names`` class names."""
    root.mkdir()
    data = np.random.default_rng(0).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    if batch is None:
        batch = pickle.dumps({b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data}, protocol=2)
    (root / "data_batch_1").write_bytes(batch)
    meta = {b"label_names": [f"class{i}".encode() for i in range(names)], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def test_a_batch_file_larger_than_any_cifar_batch_is_refused_unread(tmp_path):
    folder = _cifar(tmp_path / "c", [0])
    _sparse(folder / "data_batch_1", b"\x80\x02}", 300 * MB)  # the reviewer's was 3 GB and took 3.19 GB
    peak, error = _peak_bytes(lambda: open_image_set(folder))
    assert isinstance(error, ImageDecodeError), error
    assert "data_batch_1" in str(error) and "314,572,800 bytes, more than the" in str(error)
    assert peak < 16 * MB, f"{peak / MB:.0f} MB allocated to refuse a batch by its size"


def _frombuffer_of_a_number(count: int) -> bytes:
    """``{b"data": numpy's _frombuffer(count, "u1", (0,), "C")}``: a number where numpy puts the array's bytes."""
    return (b"\x80\x04}C\x04data" + b"cnumpy.core.numeric\n_frombuffer\n"
            + b"(\x8a\x08" + count.to_bytes(8, "little", signed=True)
            + b"X\x02\x00\x00\x00u1(K\x00tX\x01\x00\x00\x00Ct" + b"Rs.")


def _bytearray_claim(count: int) -> bytes:
    """A protocol-5 pickle whose BYTEARRAY8 claims ``count`` bytes it does not hold."""
    return b"\x80\x05\x96" + struct.pack("<Q", count) + b"."


@pytest.mark.parametrize("payload, message", [
    (_frombuffer_of_a_number(256 * MB), "refused: the pickle rebuilds an array from a int"),
    (_bytearray_claim(256 * MB), "refused: the pickle claims a bytearray of 268,435,456 bytes"),
    (b"\x80\x04\x8e" + struct.pack("<Q", 256 * MB) + b".", "reads 268,435,456 bytes where the file has"),
])
def test_a_small_pickle_cannot_make_the_reader_allocate_what_it_claims(tmp_path, payload, message):
    """A pickle of a few dozen bytes asking for 256 MB (zero-filled, or a read of that size) is refused first."""
    folder = _cifar(tmp_path / "c", [0], batch=payload)
    peak, error = _peak_bytes(lambda: open_image_set(folder))
    assert isinstance(error, ImageDecodeError) and "data_batch_1" in str(error) and message in str(error), error
    assert peak < 16 * MB, f"{peak / MB:.0f} MB allocated for a {len(payload)}-byte pickle"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_honest_batches_of_every_protocol_still_open(tmp_path, protocol):
    data = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = pickle.dumps({b"labels": [0, 9, 4], b"data": data}, protocol=protocol)
    image_set = open_image_set(_cifar(tmp_path / "c", [], batch=batch))
    assert list(image_set.labels) == [0, 9, 4] and image_set.classes[9] == "class9"
    assert np.array_equal(image_set.image(2), data[2].reshape(3, 32, 32).transpose(1, 2, 0))


@pytest.mark.parametrize("labels, names, message", [
    ([10 ** 30], 10, r"label 1000000000000000000000000000000 of image 0 is outside 0\.\.9"),
    ([0, 57], 2, r"label 57 of image 1 is outside 0\.\.1: there are 2 classes \(named in .*batches.meta\)"),
    ([-3], 10, r"label -3 of image 0 is outside 0\.\.9"),
    ([1.5], 10, r"label of image 0 is 1.5, not a whole number"),
])
def test_cifar_labels_outside_the_classes_are_one_error_naming_the_file(tmp_path, labels, names, message):
    folder = _cifar(tmp_path / "c", labels, names=names)
    with pytest.raises(ImageDecodeError, match=r"data_batch_1: .*" + message) as caught:
        open_image_set(folder)
    assert "\n" not in str(caught.value)


def test_a_label_outside_the_classes_is_one_line_from_the_command_line(tmp_path, capsys):
    import evaluate

    _cifar(tmp_path / "train", [0, 57], names=2)
    _cifar(tmp_path / "test", [0, 1], names=2)
    code = evaluate.main(["--backbone", "random", "--train", str(tmp_path / "train"), "--test",
                          str(tmp_path / "test"), "--out", str(tmp_path / "eval"), "--protocol", "knn"])
    err = capsys.readouterr().err
    assert code != 0 and "label 57 of image 1 is outside 0..1" in err and "Traceback" not in err


# -- deep folders ----------------------------------------------------------------------------------
def _remove_deep(top: Path) -> None:
    """Remove a tree too deep for a recursive rmtree, bottom up."""
    for folder, dirs, files in reversed(list(_walk(top))):
        for name in files:
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def _walk(top: Path):
    stack = [str(top)]
    while stack:
        folder = stack.pop()
        entries = list(os.scandir(folder))
        dirs = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        yield folder, dirs, [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
        stack.extend(os.path.join(folder, d) for d in dirs)


@pytest.mark.slow
def test_a_folder_nested_1100_deep_is_listed_not_a_recursion_error(tmp_path):
    top = bottom = tmp_path / "deep"
    top.mkdir()
    try:
        for _ in range(1100):  # one at a time: Path.mkdir(parents=True) and os.makedirs recurse
            bottom = bottom / "d"
            bottom.mkdir()
        cv2.imwrite(str(top / "top.png"), np.full((8, 8, 3), 10, np.uint8))
        cv2.imwrite(str(bottom / "bottom.png"), np.full((8, 8, 3), 20, np.uint8))
        files = list_images(top)
        assert [f.name for f in files] == ["bottom.png", "top.png"]  # sorted by path: d/d/.../bottom.png first
        image_set = open_image_set(top)
        assert len(image_set) == 2 and image_set.image(0)[0, 0, 0] == 20
        (top / "batches.meta").write_bytes(b"")   # a CIFAR look-alike: the images below still count
        (top / "data_batch_1").write_bytes(b"")
        assert len(open_image_set(top)) == 2
    finally:
        _remove_deep(top)


# -- outputs ---------------------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path) -> Path:
    """An image folder of two small images (labelled at once: under 8 px)."""
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((6, 6, 3), 40 * i + 9, np.uint8))
    return tmp_path / "imgs"


def test_label_json_never_overwrites_an_input_or_a_foreign_file(tmp_path, images, capsys):
    import label

    victim = images / "a" / "0.png"
    before = victim.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    foreign = tmp_path / "mine.json"
    foreign.write_text("not json at all")
    for out, message in [(victim, "must end in .json"), (images / "summary.json", "lies inside IMAGES_DIR"),
                         (notes, "must end in .json"), (foreign, "exists and is not a JSON file")]:
        code = label.main([str(images), "--cache", str(tmp_path / "c"), "--json", str(out), "--workers", "0",
                           "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and f"--json {out}" in err and message in err, err
    assert victim.read_bytes() == before and notes.read_text() == "keep me"
    assert foreign.read_text() == "not json at all" and not (tmp_path / "c").exists()
    earlier = tmp_path / "summary.json"
    earlier.write_text('{"total": 0}')                           # an earlier run's summary: replaced
    assert label.main([str(images), "--cache", str(tmp_path / "c"), "--json", str(earlier), "--workers", "0",
                       "--quiet"]) == 0
    assert json.loads(earlier.read_text())["total"] == 2


def test_fidelity_outputs_never_overwrite_an_input(tmp_path, images, capsys):
    from saliencyssl.app import fidelity

    victim = images / "a" / "1.png"
    before = victim.read_bytes()
    for flags, message in [(["--json", str(victim)], "--json .* must end in .json"),
                           (["--grid", str(victim)], "--grid .* lies inside IMAGES_DIR"),
                           (["--json", str(images / "f.json")], "--json .* lies inside IMAGES_DIR")]:
        code = fidelity.main([str(images), "--cache", str(tmp_path / "c"), "--surrogate", str(tmp_path / "s.pt"),
                              *flags, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and re.search(message, err), err
    assert victim.read_bytes() == before


def test_views_out_overwrites_only_a_picture(tmp_path, images, capsys):
    from saliencyssl.app import views

    report = tmp_path / "report.png"
    report.write_text("my notes, named like a picture")
    code = views.main([str(images), "--policy", "default", "--out", str(report), "--count", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "exists and is not a PNG file" in err, err
    assert report.read_text() == "my notes, named like a picture"


def test_the_output_check_itself(tmp_path):
    from saliencyssl.app.options import check_output_file

    (tmp_path / "in").mkdir()
    png = tmp_path / "old.png"
    png.write_bytes(_png())
    check_output_file(png, "--out", (".png",))                          # a picture this stage wrote
    check_output_file(tmp_path / "new.json", "--json", (".json",))      # nothing there yet
    (tmp_path / "empty.json").write_bytes(b"")
    check_output_file(tmp_path / "empty.json", "--json", (".json",))    # nothing to lose
    (tmp_path / "link.json").symlink_to(tmp_path / "in" / "x.json")
    with pytest.raises(ValueError, match="lies inside IN"):
        check_output_file(tmp_path / "link.json", "--json", (".json",), {"IN": tmp_path / "in"})
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(ValueError, match="exists and is not a JSON file"):
        check_output_file(tmp_path / "dangling.json", "--json", (".json",))
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(ValueError, match="a pipe, a device"):
        check_output_file(tmp_path / "pipe.json", "--json", (".json",))
    with pytest.raises(ValueError, match="is a folder"):
        check_output_file(tmp_path / "in", "--json", (".json",))


# -- report documents and result files -------------------------------------------------------------
RESULT = {"title": "t", "date": "2026-12-06", "machine": "a CPU", "command": ["c"], "columns": ["a"], "rows": [[1]]}


@pytest.mark.parametrize("name, message", [
    ("/dev/zero", "/dev/zero: lies outside --root"),
    ("../outside.json", "outside.json: lies outside --root"),
    ("results/link.json", "link.json: lies outside --root"),
    ("results/pipe.json", "pipe.json: not a regular file"),
    ("results/big.json", "big.json: larger than the 1,048,576 bytes a result file may have"),
    ("results/latin1.json", "latin1.json: not UTF-8 text (byte 0xe9 at offset 11)"),
    ("results/list.json", "list.json: must hold a JSON object, not a list"),
])
def test_report_reads_only_bounded_result_files_below_the_root(tmp_path, capsys, name, message):
    from saliencyssl.app import report

    root = tmp_path / "root"
    (root / "results").mkdir(parents=True)
    (tmp_path / "outside.json").write_text(json.dumps(RESULT))
    (root / "results" / "link.json").symlink_to(tmp_path / "outside.json")
    os.mkfifo(root / "results" / "pipe.json")
    (root / "results" / "big.json").write_text(json.dumps(RESULT) + " " * MB)
    (root / "results" / "latin1.json").write_bytes(b'{"title": "\xe9"}')
    (root / "results" / "list.json").write_text("[]")
    doc = root / "doc.md"
    doc.write_text(f"<!-- result: {name} -->\nold\n<!-- /result -->\n")
    assert report.main([str(doc), "--root", str(root), "--check"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("kind, message", [
    ("latin1", "doc.md: not UTF-8 text (byte 0xe9 at offset 5)"),
    ("huge", "doc.md: larger than the 10,485,760 bytes a document may have"),
    ("folder", "doc.md: not a regular file"),
    ("pipe", "doc.md: not a regular file"),
    ("missing", "doc.md: no such document"),
])
def test_report_reads_only_bounded_utf8_documents(tmp_path, capsys, kind, message):
    from saliencyssl.app import report

    doc = tmp_path / "doc.md"
    if kind == "latin1":
        doc.write_bytes(b"caf\xc3\xa9\xe9\n")
    elif kind == "huge":
        _sparse(doc, b"# notes\n", 11 * MB)
    elif kind == "folder":
        doc.mkdir()
    elif kind == "pipe":
        os.mkfifo(doc)
    assert report.main([str(doc), "--root", str(tmp_path), "--check"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


# -- labelling CIFAR batches -----------------------------------------------------------------------
def test_label_fills_the_cache_cache_export_asks_for_on_a_cifar_folder(tmp_path, capsys):
    """cache export advises a label command for a CIFAR folder; that command labels the batches' images."""
    import cache as cache_cli
    import label

    from saliencyssl.cache import TargetCache
    from saliencyssl.saliency import LabellerConfig

    folder = _cifar(tmp_path / "cifar", [0, 3, 9])
    cache_dir = tmp_path / "cache"
    TargetCache(cache_dir, LabellerConfig().fingerprint(), params=LabellerConfig().params()).close()
    pack = tmp_path / "c.pack"
    assert cache_cli.main(["export", str(cache_dir), str(folder), "--out", str(pack), "--image-size", "32"]) == 1
    advice = capsys.readouterr().err
    command = shlex.split(re.search(r"(saliency-ssl label [^,\n]*)", advice).group(1))
    assert command[:2] == ["saliency-ssl", "label"]
    assert label.main(command[2:] + ["--workers", "0", "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["total"] == 3 and summary["labelled"] == 3 and summary["failed"] == []
    stored = TargetCache(cache_dir, LabellerConfig().fingerprint())
    assert all(stored.get(h) is not None for h in open_image_set(folder).hashes())  # the hashes other stages use
    stored.close()
    assert cache_cli.main(["export", str(cache_dir), str(folder), "--out", str(pack), "--image-size", "32"]) == 0
    capsys.readouterr()
    hostile = _cifar(tmp_path / "hostile", [0, 57], names=2)                # refused before any cache is made
    assert label.main([str(hostile), "--cache", str(tmp_path / "c2"), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "label 57 of image 1 is outside 0..1" in err and err.count("\n") == 1 and not (tmp_path / "c2").exists()
