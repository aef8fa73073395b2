"""Labelling worker processes: one OpenCV thread each, the caller's settings untouched."""

from __future__ import annotations

import cv2

from saliencyssl.cache.executors import PoolExecutor, prepare_worker_process


def _opencv_threads_in_worker(_):
    import cv2

    from saliencyssl.cache.executors import prepare_worker_process

    before = cv2.getNumThreads()
    prepare_worker_process()
    return before, cv2.getNumThreads()


def test_pool_workers_use_one_opencv_thread_and_the_caller_keeps_its_own():
    threads = cv2.getNumThreads()
    prepare_worker_process()  # in the main process (labelling inline): nothing changes
    assert cv2.getNumThreads() == threads

    executor = PoolExecutor(1)
    try:
        [(before, after)] = list(executor.imap_unordered(_opencv_threads_in_worker, [0]))
    finally:
        executor.close()
    assert before >= 1 and after == 1, f"worker OpenCV threads {before} -> {after}"
