"""scripts/label.py end to end: odd files, failures, export, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from saliencyssl.cache import TargetCache
from saliencyssl.imageio import read_image
from saliencyssl.saliency import LabellerConfig
from _paths import REPO
import label  # scripts/label.py (pyproject.toml puts scripts/ on pytest's pythonpath)


def _variants(photo: np.ndarray, n: int, size=(96, 144)) -> list[np.ndarray]:
    """Distinct real images: shifted crops of the photo."""
    out = []
    for i in range(n):
        crop = photo[i % 5: photo.shape[0] - 5 + i % 5, (i * 3) % 20: photo.shape[1] - 20 + (i * 3) % 20]
        out.append(cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture
def odd_folder(tmp_path, photo) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    small = _variants(photo, 2)
    Image.fromarray(small[0]).save(root / "photo.jpg", quality=95)
    Image.fromarray(small[1]).convert("L").save(root / "sub" / "gray.png")
    Image.fromarray(small[1]).convert("RGBA").save(root / "rgba.png")
    Image.fromarray(small[0]).convert("P", palette=Image.ADAPTIVE).save(root / "palette.png")
    cv2.imwrite(str(root / "sixteen.png"), (cv2.cvtColor(small[1], cv2.COLOR_RGB2BGR).astype(np.uint16) * 257))
    Image.fromarray(np.full((1, 1, 3), 7, np.uint8)).save(root / "one.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(root / "uniform.bmp")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 3)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def test_odd_files_are_converted_and_failures_named(odd_folder, tmp_path, capsys):
    cache_dir, export = tmp_path / "cache", tmp_path / "export"
    status = label.main([str(odd_folder), "--cache", str(cache_dir), "--workers", "0", "--export", str(export),
                         "--quiet", "--json", str(tmp_path / "summary.json")])
    out, err = capsys.readouterr()
    assert status == 1, "a failed file makes the exit status non-zero"
    assert "corrupt.jpg" in out and "empty.png" in out
    assert "images found        9" in out and "labelled now        6" in out and "failed              2" in out
    # rgba.png and sixteen.png decode to the same pixels (alpha dropped, high byte kept): one entry, labelled once
    assert "duplicates          1" in out
    # Every decodable image has an entry; conversions happened.
    cache = TargetCache(cache_dir, LabellerConfig().fingerprint())
    for name in ("photo.jpg", "sub/gray.png", "rgba.png", "palette.png", "sixteen.png", "one.png", "uniform.bmp"):
        image = read_image(odd_folder / name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        target = cache.get(image)
        assert target is not None and target.shape == image.shape[:2], name
    assert not cache.get(read_image(odd_folder / "uniform.bmp")).mask.any()
    # Export keeps sub-folders and writes the three maps.
    for stem in ("photo", "sub/gray", "rgba", "sixteen"):  # the duplicate's maps too
        for kind in ("hc", "rc", "cut"):
            assert (export / f"{stem}_{kind}.png").is_file()
    cut = cv2.imread(str(export / "photo_cut.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(cut)) <= {0, 255}
    # A rerun labels nothing and says so.
    status = label.main([str(odd_folder), "--cache", str(cache_dir), "--workers", "0", "--quiet"])
    out, _ = capsys.readouterr()
    assert status == 1 and "labelled now        0" in out and "already cached      7" in out


@pytest.mark.slow
def test_pool_labels_the_same_targets_as_in_process(tmp_path, photo, capsys):
    root = tmp_path / "images"
    root.mkdir()
    for i, img in enumerate(_variants(photo, 4)):
        Image.fromarray(img).save(root / f"{i}.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 3)
    for cache, workers in (("a", "0"), ("b", "2")):  # a file that fails in a worker process is named too
        assert label.main([str(root), "--cache", str(tmp_path / cache), "--workers", workers, "--quiet"]) == 1
        out = capsys.readouterr().out
        assert "corrupt.jpg" in out and "labelled now        4" in out, workers
    assert label.main([str(root), "--cache", str(tmp_path / "c"), "--workers", "-1", "--quiet"]) == 2
    assert "--workers -1" in capsys.readouterr().err
    fp = LabellerConfig().fingerprint()
    a, b = TargetCache(tmp_path / "a", fp), TargetCache(tmp_path / "b", fp)
    assert sorted(a.hashes()) == sorted(b.hashes()) and len(a) == 4
    for h in a.hashes():
        assert a.get(h).equals(b.get(h))


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert label.main([str(tmp_path / "nope"), "--cache", str(tmp_path / "c"), "--quiet"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_bad_labeller_option_is_a_clear_error(tmp_path, photo, capsys):
    Image.fromarray(_variants(photo, 1)[0]).save(tmp_path / "a.png")
    assert label.main([str(tmp_path), "--cache", str(tmp_path / "c"), "--scale", "0", "--quiet"]) == 2
    assert "scale" in capsys.readouterr().err


def test_export_inside_the_image_folder_is_refused(tmp_path, photo, capsys):
    (tmp_path / "images").mkdir()
    Image.fromarray(_variants(photo, 1)[0]).save(tmp_path / "images" / "a.png")
    assert label.main([str(tmp_path / "images"), "--cache", str(tmp_path / "c"), "--export",
                       str(tmp_path / "images" / "maps"), "--quiet"]) == 2
    assert "inside the image folder" in capsys.readouterr().err and not (tmp_path / "images" / "maps").exists()


def test_export_keeps_images_that_share_a_stem_apart(tmp_path, photo):
    """a.png and a.bmp in one folder: both sets of maps are written, named after the whole file name."""
    root = tmp_path / "images"
    root.mkdir()
    first, second = _variants(photo, 2)
    Image.fromarray(first).save(root / "a.png")
    Image.fromarray(np.ascontiguousarray(second[::-1])).save(root / "a.bmp")
    Image.fromarray(second).save(root / "b.png")
    export = tmp_path / "export"
    assert label.main([str(root), "--cache", str(tmp_path / "cache"), "--workers", "0", "--export", str(export),
                       "--quiet"]) == 0
    names = sorted(p.name for p in export.iterdir())
    assert names == sorted(f"{stem}_{kind}.png" for stem in ("a.png", "a.bmp", "b") for kind in ("hc", "rc", "cut"))
    # each image's exported map is its own
    config = LabellerConfig()
    cache = TargetCache(tmp_path / "cache", config.fingerprint())
    for name in ("a.png", "a.bmp"):
        target = cache.get(read_image(root / name))
        assert np.array_equal(cv2.imread(str(export / f"{name}_rc.png"), cv2.IMREAD_GRAYSCALE), target.saliency)


@pytest.mark.slow
def test_killed_job_resumes_with_every_entry_valid(tmp_path, photo):
    root = tmp_path / "images"
    root.mkdir()
    images = _variants(photo, 16, size=(150, 225))
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / f"{i:02d}.png")
    cache_dir = tmp_path / "cache"
    cmd = [sys.executable, str(REPO / "scripts" / "label.py"), str(root), "--cache", str(cache_dir),
           "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    fp = LabellerConfig().fingerprint()
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            stored = len(TargetCache(cache_dir, fp))
        except Exception:
            continue
        if stored >= 2:
            break
    assert proc.poll() is None, "the job finished before it could be killed; use more or larger images"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = TargetCache(cache_dir, fp)
    assert 2 <= len(cache) < 16
    assert cache.verify().damaged == []
    done = subprocess.run(cmd + ["--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["cached"] >= 2 and summary["cached"] + summary["labelled"] == 16
    cache = TargetCache(cache_dir, fp)
    assert len(cache) == 16 and cache.verify().damaged == []
    for img in images:
        assert cache.get(img) is not None


def test_files_are_decoded_as_the_originals_imread(tmp_path):
    # Cheng's C++ read files with cv2.imread(path): EXIF orientation applied, 16-bit PNG reduced to its
    # high byte. A camera JPEG shot sideways must come out upright, or its target would not match.
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    decoded = read_image(tmp_path / "sideways.jpg")
    assert decoded.shape == (60, 40, 3)
    np.testing.assert_array_equal(decoded, cv2.cvtColor(cv2.imread(str(tmp_path / "sideways.jpg")), cv2.COLOR_BGR2RGB))

    sixteen = (np.arange(256, dtype=np.uint16) * 256 + 200).reshape(16, 16)  # v / 257 would round up
    cv2.imwrite(str(tmp_path / "sixteen.png"), sixteen)
    np.testing.assert_array_equal(read_image(tmp_path / "sixteen.png")[:, :, 0], sixteen >> 8)

    # IMREAD_COLOR refuses 32-bit float TIFF; it is still read, scaled from [0, 1].
    floats = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "floats.tif"), floats)
    np.testing.assert_array_equal(read_image(tmp_path / "floats.tif"),
                                  np.rint(floats[:, :, ::-1] * 255).astype(np.uint8))


def test_workers_get_absolute_paths(tmp_path, photo, monkeypatch):
    # A Dask worker on another machine does not share this process's working folder.
    from saliencyssl.cache.executors import InlineExecutor
    from saliencyssl.cache.labelling import label_folder

    (tmp_path / "images").mkdir()
    Image.fromarray(_variants(photo, 1)[0]).save(tmp_path / "images" / "a.png")
    sent = []

    class Recording(InlineExecutor):
        def imap_unordered(self, fn, chunks):
            for chunk in chunks:
                sent.extend(chunk[0] if fn.__name__ == "hash_files" else [path for path, *_ in chunk[1]])
                yield fn(chunk)

    monkeypatch.chdir(tmp_path)
    config = LabellerConfig()
    summary = label_folder("images", TargetCache("cache", config.fingerprint()), config, executor=Recording(),
                           progress=False)
    assert summary.labelled == 1 and sent and all(Path(p).is_absolute() for p in sent)


def test_a_failing_map_export_keeps_the_targets_already_labelled(tmp_path, photo, monkeypatch):
    """The maps were written inside the chunk's transaction: an export error other than OSError rolled back every
    target of the chunk. Targets are committed first, then their maps are written."""
    from saliencyssl.cache import labelling

    root = tmp_path / "images"
    root.mkdir()
    for i, image in enumerate(_variants(photo, 3, size=(48, 72))):
        Image.fromarray(image).save(root / f"{i}.png")

    def broken_encoder(*args, **kwargs):
        raise RuntimeError("the PNG encoder failed")

    monkeypatch.setattr(labelling, "export_maps", broken_encoder)
    config = LabellerConfig()
    with TargetCache(tmp_path / "cache", config.fingerprint()) as cache:
        with pytest.raises(RuntimeError, match="PNG encoder"):
            labelling.label_folder(root, cache, config, export_dir=tmp_path / "maps", progress=False, chunk_size=3)
        assert len(cache) == 3, "the chunk's targets are stored"


def test_an_image_wider_than_a_target_can_be_fails_before_it_is_labelled(tmp_path, monkeypatch):
    """Its target was stored, then read back as damage and labelled again on every run; then it was labelled in
    full only to be refused when stored."""
    from saliencyssl.app import label
    from saliencyssl.saliency import labeller as labeller_module

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "strip.png"), np.full((2, 70_000, 3), 90, np.uint8))
    cv2.imwrite(str(images / "small.png"), np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8))
    labelled = []
    real = labeller_module.Labeller.label
    monkeypatch.setattr(labeller_module.Labeller, "label",
                        lambda self, image, **kw: labelled.append(image.shape) or real(self, image, **kw))
    summary = label.run(label.LabelConfig(images=images, cache=tmp_path / "cache", workers=0, progress=False))
    assert summary.labelled == 1 and [name for name, _ in summary.failed] == [str(images / "strip.png")]
    assert "a 70000x2 image: a cached target has sides of at most 65,535 px" in summary.failed[0][1]
    assert labelled == [(40, 40, 3)]
