"""Labelling worker processes: one OpenCV thread each, the caller's settings untouched, stopped with the block
that uses them."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from saliencyssl.cache.executors import PoolExecutor, make_executor, prepare_worker_process


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


def _pid(_) -> int:
    return os.getpid()


def test_a_pool_used_as_a_context_manager_stops_its_workers_when_the_block_fails():
    with pytest.raises(RuntimeError, match="the caller failed"):
        with make_executor(1) as executor:
            [worker] = list(executor.imap_unordered(_pid, [0]))
            assert worker != os.getpid()
            raise RuntimeError("the caller failed")
    with pytest.raises(RuntimeError, match="shutdown|not usable"):
        executor._pool.submit(_pid, 0)  # the block's exit shut the pool down
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"worker {worker} still runs after the block")


def _refuse(path: str):
    from saliencyssl.imageio import ImageDecodeError

    raise ImageDecodeError(path, "truncated")


def test_an_error_a_worker_raises_comes_back_as_itself_not_as_a_dead_worker():
    """An exception whose __init__ takes its fields could not be rebuilt from its pickle: the pool reported a worker
    that died instead of the image that failed."""
    from saliencyssl.imageio import ImageDecodeError

    with make_executor(1) as executor:
        with pytest.raises(ImageDecodeError, match="a.png: cannot decode image \\(truncated\\)") as error:
            list(executor.imap_unordered(_refuse, ["a.png"]))
    assert (error.value.path, error.value.reason) == ("a.png", "truncated")


def test_a_failing_block_stops_the_workers_without_waiting_for_their_chunks():
    """An interrupted labelling job waited for every running chunk (two minutes of large photos after a SIGTERM)."""
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with make_executor(2) as executor:
            workers = [executor._pool.submit(_pid, 0).result() for _ in range(4)]  # the workers are up
            running = [executor._pool.submit(time.sleep, 60) for _ in range(2)]
            time.sleep(0.5)
            raise KeyboardInterrupt
    assert time.monotonic() - start < 20, "the sleeping chunks were not waited for"
    assert not any(future.done() and future.exception() is None for future in running)
    for worker in set(workers):
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
