"""Labelling worker processes: one OpenCV thread each, the caller's settings untouched."""

from __future__ import annotations

import cv2
import numpy as np

from saliencyssl.cache.executors import PoolExecutor, prepare_worker_process


def _opencv_threads_around_hashing(path: str):
    """OpenCV's threads in a fresh worker before and after the labelling job's own hashing task ran there."""
    import cv2

    from saliencyssl.cache.labelling import hash_files

    before = cv2.getNumThreads()
    [(_, image_hash, error)] = hash_files([path])
    assert error is None and image_hash
    return before, cv2.getNumThreads()


def test_pool_workers_use_one_opencv_thread_and_the_caller_keeps_its_own(tmp_path):
    threads = cv2.getNumThreads()
    prepare_worker_process()  # in the main process (labelling inline): nothing changes
    assert cv2.getNumThreads() == threads

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    executor = PoolExecutor(1)
    try:
        [(before, after)] = list(executor.imap_unordered(_opencv_threads_around_hashing, [str(image)]))
    finally:
        executor.close()
    assert before >= 1 and after == 1, f"worker OpenCV threads {before} -> {after}"
