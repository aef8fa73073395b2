"""Labelling on Dask (LocalCluster and a real scheduler with a killed worker) and portable packs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from saliencyssl.augment import TrainingImages
from saliencyssl.cache import TargetCache
from saliencyssl.cache.executors import DaskExecutor, InlineExecutor
from saliencyssl.cache.labelling import label_folder
from saliencyssl.augment.pack import load_pack
from saliencyssl.cache.packfile import PackError, open_pack, verify_pack, write_pack
from saliencyssl.saliency import LabellerConfig

try:
    import distributed  # noqa: F401
except ImportError:
    distributed = None
needs_dask = pytest.mark.skipif(distributed is None,
                                reason="needs dask.distributed: pip install 'saliency-ssl[cluster]'")

from _paths import REPO
import cache as cache_cli  # noqa: E402  (scripts/cache.py; pytest's pythonpath has scripts/)


def _write_variants(root: Path, photo: np.ndarray, n: int, size=(96, 144)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        crop = photo[i % 5: photo.shape[0] - 5 + i % 5, (i * 3) % 20: photo.shape[1] - 20 + (i * 3) % 20]
        Image.fromarray(cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)).save(root / f"{i:02d}.png")
    return root


@pytest.mark.slow
@needs_dask
def test_local_cluster_gives_the_same_targets_bit_for_bit(tmp_path, photo):
    images = _write_variants(tmp_path / "images", photo, 6)
    config = LabellerConfig()
    local = TargetCache(tmp_path / "local", config.fingerprint())
    label_folder(images, local, config, executor=InlineExecutor(), progress=False)
    dask_cache = TargetCache(tmp_path / "dask", config.fingerprint())
    executor = DaskExecutor("local:2")
    try:
        summary = label_folder(images, dask_cache, config, executor=executor, progress=False)
    finally:
        executor.close()
    assert summary.labelled == 6 and "LocalCluster of 2" in summary.executor
    for h in local.hashes():
        assert local.get_encoded(h) == dask_cache.get_encoded(h)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_dask
def test_a_killed_dask_worker_loses_no_finished_target(tmp_path, photo):
    images = _write_variants(tmp_path / "images", photo, 14, size=(150, 225))
    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)]
    time.sleep(3)
    for _ in range(2):
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                      start_new_session=True))
    try:
        config = LabellerConfig()
        cmd = [sys.executable, str(REPO / "scripts" / "label.py"), str(images), "--cache", str(tmp_path / "cache"),
               "--scheduler", address, "--quiet"]
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 180
        while time.time() < deadline and job.poll() is None:
            time.sleep(0.3)
            try:
                if len(TargetCache(tmp_path / "cache", config.fingerprint())) >= 2:
                    break
            except Exception:
                continue
        assert job.poll() is None, "the job ended before a worker could be killed"
        os.killpg(procs[1].pid, signal.SIGKILL)  # one dask-worker dies mid-job
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
        assert "labelled now" in out
        cache = TargetCache(tmp_path / "cache", config.fingerprint())
        assert len(cache) == 14 and cache.verify().damaged == []
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_pack_round_trip_and_refusal(tmp_path, photo, capsys):
    images = _write_variants(tmp_path / "images", photo, 5, size=(40, 60))
    config = LabellerConfig()
    cache_dir = tmp_path / "cache"
    label_folder(images, TargetCache(cache_dir, config.fingerprint()), config, progress=False)
    pack = tmp_path / "data.pack"
    assert cache_cli.main(["export", str(cache_dir), str(images), "--out", str(pack)]) == 0
    assert cache_cli.main(["verify", str(pack)]) == 0
    empty = tmp_path / "empty"
    assert cache_cli.main(["import", str(pack), "--cache", str(empty)]) == 0
    assert cache_cli.main(["verify", str(empty)]) == 0
    source, copy = TargetCache(cache_dir, config.fingerprint()), TargetCache(empty, config.fingerprint())
    assert sorted(source.hashes()) == sorted(copy.hashes())
    for h in source.hashes():
        assert source.get(h).equals(copy.get(h))
    # Another labeller's pack is refused, by the CLI and by the loader.
    assert cache_cli.main(["import", str(pack), "--cache", str(tmp_path / "other"), "--scale", "2"]) == 1
    with pytest.raises(PackError, match="fingerprint"):
        open_pack(pack, expect_fingerprint=LabellerConfig(scale=2).fingerprint())
    # A damaged pack fails its checksum.
    raw = bytearray(pack.read_bytes())
    raw[-10] ^= 0xFF
    (tmp_path / "bad.pack").write_bytes(bytes(raw))
    assert not verify_pack(open_pack(tmp_path / "bad.pack"))
    assert cache_cli.main(["verify", str(tmp_path / "bad.pack")]) == 1
    # ... and is not imported: its damage would get fresh entry checksums and pass as valid.
    assert cache_cli.main(["import", str(tmp_path / "bad.pack"), "--cache", str(tmp_path / "c2")]) == 1
    assert not (tmp_path / "c2").exists()
    # A file cut inside its header is a PackError, not a struct.error.
    (tmp_path / "short.pack").write_bytes(pack.read_bytes()[:12])
    with pytest.raises(PackError, match="truncated"):
        open_pack(tmp_path / "short.pack")
    # Exporting onto a folder fails cleanly and leaves no temporary file behind.
    assert cache_cli.main(["export", str(cache_dir), str(images), "--out", str(images)]) == 2
    assert not list(tmp_path.glob("images.tmp*"))
    # Read-only commands on a folder that is not a cache say so and create nothing there.
    for command in (["stats", str(images)], ["verify", str(images)], ["import", str(images), "--cache", str(empty)],
                    ["export", str(tmp_path / "typo"), str(images), "--out", str(tmp_path / "x.pack")]):
        assert cache_cli.main(command) == 2
    assert not (images / "cache.db").exists() and not (tmp_path / "typo").exists()
    # A file that cannot be decoded stops an export, unless --allow-missing says to export what there is.
    (images / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert cache_cli.main(["export", str(cache_dir), str(images), "--out", str(tmp_path / "b.pack")]) == 2
    assert "broken.png" in (err := capsys.readouterr().err) and "--allow-missing" in err
    assert cache_cli.main(["export", str(cache_dir), str(images), "--out", str(tmp_path / "b.pack"),
                           "--allow-missing"]) == 0
    assert "cannot be decoded and are skipped, e.g. broken.png" in capsys.readouterr().err
    assert len(open_pack(tmp_path / "b.pack")) == 5


def test_importing_a_cache_skips_its_damaged_entries(tmp_path, photo, capsys):
    images = _write_variants(tmp_path / "images", photo, 4, size=(40, 60))
    config = LabellerConfig()
    source = TargetCache(tmp_path / "source", config.fingerprint())
    label_folder(images, source, config, progress=False)
    hashes = sorted(source.hashes())
    damaged = bytearray(source.get_encoded(hashes[0]))
    damaged[-3] ^= 0xFF
    source._cache.set(f"{config.fingerprint()}/{hashes[0]}", bytes(damaged))
    assert cache_cli.main(["import", str(tmp_path / "source"), "--cache", str(tmp_path / "copy")]) == 1  # not silent
    assert "skipped 1 damaged" in capsys.readouterr().err
    copy = TargetCache(tmp_path / "copy", config.fingerprint())
    assert sorted(copy.hashes()) == hashes[1:] and copy.verify().damaged == []


def test_frozen_pack_maps_a_pack_file_without_copying(tmp_path, photo):
    images = _write_variants(tmp_path / "images", photo, 4, size=(32, 32))
    config = LabellerConfig()
    cache = TargetCache(tmp_path / "cache", config.fingerprint())
    label_folder(images, cache, config, progress=False)
    data = TrainingImages(str(images), 32)
    order = list(reversed(list(cache.hashes())))
    write_pack(tmp_path / "p.pack", [(h, cache.get(h)) for h in order], config.fingerprint())
    frozen = load_pack(tmp_path / "p.pack", data.hashes, 32, expect_fingerprint=config.fingerprint())
    assert frozen.report.hits == 4 and frozen.rows is not None
    batch = frozen.gather(torch.arange(4))
    for i, h in enumerate(data.hashes):
        target = cache.get(h)
        assert torch.equal(batch.mask[i, 0], torch.from_numpy(target.mask))
        assert torch.equal((batch.saliency[i, 0] * 255).round().byte(), torch.from_numpy(target.saliency))
    storage = frozen.saliency.untyped_storage()
    assert storage.nbytes() == frozen.saliency.numel(), "the tensor views the mapped file"
