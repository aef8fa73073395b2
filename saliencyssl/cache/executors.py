"""Where labelling work runs: in this process, a local process pool, or a Dask cluster.

An executor maps a picklable function over chunks of work and yields the results as they
complete (in any order). The caller, one process, is the only one that writes the cache, so
no SQLite database is ever shared between machines.

- :class:`InlineExecutor`: runs in this process (tests, debugging, ``--workers 0``).
- :class:`PoolExecutor`: ``concurrent.futures.ProcessPoolExecutor`` with N worker processes
  (the default of the label stage).
- :class:`DaskExecutor`: a ``dask.distributed`` client, either to a running scheduler
  (``tcp://host:8786``) or to a LocalCluster of N worker processes (``local:N``). Dask
  reschedules the tasks of a lost worker on the others, so a killed worker loses no finished
  result. Needs the optional dependency ``saliency-ssl[cluster]``.

**No orphans.** A job killed with ``SIGKILL`` or ``SIGTERM`` runs no clean-up code, so its pool
workers would live on, each holding a labeller. Every worker process of :class:`PoolExecutor`
therefore watches the process that started it (:func:`watch_parent`) and exits within half a
second of its death; multiprocessing's resource tracker exits once the job and its workers have
closed their ends of its pipe. A worker that dies while the job runs (killed, out of memory)
surfaces as :class:`WorkerDiedError`, one line for the caller to report.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator


_MALLOC_TUNED = False


def restore_malloc_defaults() -> None:
    """Undo Dask's ``MALLOC_TRIM_THRESHOLD_`` in this worker process (glibc only; a no-op elsewhere).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
    mmap threshold at 128 KB: every large numpy temporary is then a fresh ``mmap`` with page
    faults, and the labeller ran about 45% slower in a Dask worker than in a plain process. Raising
    the thresholds again with ``mallopt`` restores the speed. Called once per process by the
    labelling tasks when that variable is set.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 128 * 1024 * 1024)


_WORKER_PREPARED = False


def prepare_worker_process() -> None:
    """Once per labelling worker process: one OpenCV thread, and glibc's malloc defaults back.

    The pool and the LocalCluster start one single-threaded worker per core, but OpenCV's own
    thread pool would still spread each worker's colour conversions, blurs and resizes over every
    core, so N workers would run about 2N busy threads on N cores. Called at the start of every
    labelling task; a no-op after the first call in a process, and in the main process (labelling
    inline, ``--workers 0``, leaves the caller's thread settings alone).
    """
    global _WORKER_PREPARED
    if _WORKER_PREPARED:
        return
    _WORKER_PREPARED = True
    if multiprocessing.current_process().name == "MainProcess":
        return
    restore_malloc_defaults()
    import cv2

    cv2.setNumThreads(1)


class WorkerDiedError(RuntimeError):
    """A worker process of a job died (killed, or out of memory) before it returned its results."""


_WATCHING = False


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this process soon after the process that started it is gone (once per process).

    A daemon thread compares the parent's pid with ``parent`` (passed by the parent itself, since
    the parent may die before this process starts) every ``interval`` seconds: when the parent
    dies (even by ``SIGKILL``) the process is re-parented, the pid changes, and this one exits at
    once (``os._exit``: no clean-up of a job that no longer exists).
    """
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="saliencyssl-watch-parent", daemon=True).start()


def _init_pool_worker(parent: int) -> None:
    watch_parent(parent)


class _Executor:
    """What every executor shares: ``with make_executor(...) as executor:`` closes it (its workers
    shut down) however the block ends: waiting for the work in flight when the block ends normally,
    dropping it (:meth:`abandon`) when it raises: Ctrl-C, and ``SIGTERM`` where the stage turns it
    into an exception (``saliency-ssl label`` does)."""

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        """Stop now, dropping the work in flight (its results would only be thrown away)."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


class InlineExecutor(_Executor):
    """Run every chunk in this process, in order."""

    workers = 1
    description = "this process"

    def imap_unordered(self, fn: Callable[[Any], Any], chunks: Iterable[Any]) -> Iterator[Any]:
        for chunk in chunks:
            yield fn(chunk)


class PoolExecutor(_Executor):
    """A pool of ``workers`` processes (spawned, so nothing of the parent's state is shared).

    At most ``2 * workers`` chunks are in flight, so memory stays bounded however many images
    a job has.
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.description = f"{self.workers} local worker process{'es' if self.workers > 1 else ''}"
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_pool_worker, initargs=(os.getpid(),))

    def imap_unordered(self, fn: Callable[[Any], Any], chunks: Iterable[Any]) -> Iterator[Any]:
        pending = set()
        iterator = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * self.workers:
                try:
                    pending.add(self._pool.submit(fn, next(iterator)))
                except StopIteration:
                    exhausted = True
                except BrokenProcessPool as error:  # a worker died since the last results came back
                    raise WorkerDiedError("a worker process died (killed, or out of memory) before it returned its "
                                          "results") from error
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    result = future.result()
                except BrokenProcessPool as error:
                    raise WorkerDiedError("a worker process died (killed, or out of memory) before it returned its "
                                          "results") from error
                yield result

    def close(self) -> None:
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        except BrokenProcessPool:
            pass

    def abandon(self) -> None:
        """Terminate the workers at once instead of waiting for their chunks: a chunk of 64 large
        photos takes minutes, longer than a batch system waits between ``SIGTERM`` and ``SIGKILL``.
        What the job stored is kept; a rerun labels the rest."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():  # a worker deaf to SIGTERM
                process.kill()
                process.join()
        self.close()  # the pool, broken now, cancels what is queued and its thread ends


class DaskExecutor(_Executor):
    """Chunks run as tasks on a Dask cluster.

    Args:
        address: ``"local:N"`` to start a LocalCluster of N single-threaded worker processes
            on this machine, or the address of a running scheduler (``tcp://host:8786``).
        retries: how many times a task is retried after its worker died (Dask also reschedules
            the tasks of a lost worker by itself).
    """

    def __init__(self, address: str, retries: int = 3):
        workers = local_cluster_workers(address)  # a bad local:N is refused before Dask is imported
        try:
            from distributed import Client, LocalCluster
        except ImportError as error:
            raise ImportError("labelling on a Dask cluster needs dask.distributed: "
                              "pip install 'saliency-ssl[cluster]'") from error
        self._cluster = None
        self.retries = retries
        if workers is not None:
            import dask

            # Workers without Dask's malloc trimming (see restore_malloc_defaults) and without its
            # statistical profiler and GIL monitor, which sample every 10 ms and 1 ms and cost the
            # labeller CPU time on a machine with as many workers as cores.
            with dask.config.set({"distributed.nanny.pre-spawn-environ": {},
                                  "distributed.worker.profile.enabled": False,
                                  "distributed.admin.system-monitor.gil.enabled": False}):
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=40)
            try:
                self._client = Client(self._cluster)
            except Exception:
                self._cluster.close()
                raise
            self.description = f"a Dask LocalCluster of {workers} worker process{'es' if workers > 1 else ''}"
        else:
            try:
                self._client = Client(address, timeout="30s")
            except OSError as error:
                raise OSError(f"cannot reach the Dask scheduler at {address} ({error}); start one with "
                              f"'dask scheduler' or use a local:N scheduler") from error
            self.description = f"the Dask scheduler at {address}"
        self.workers = max(1, len(self._client.scheduler_info().get("workers", {})))

    @property
    def client(self):
        return self._client

    def imap_unordered(self, fn: Callable[[Any], Any], chunks: Iterable[Any]) -> Iterator[Any]:
        from distributed import as_completed

        iterator = iter(chunks)
        window = max(4, 4 * self._n_workers())
        futures = as_completed()
        submitted = 0
        for chunk in iterator:
            futures.add(self._client.submit(fn, chunk, pure=False, retries=self.retries))
            submitted += 1
            if submitted >= window:
                break
        for future in futures:
            result = future.result()
            future.release()
            yield result
            for chunk in iterator:
                futures.add(self._client.submit(fn, chunk, pure=False, retries=self.retries))
                break

    def _n_workers(self) -> int:
        try:
            return max(1, len(self._client.scheduler_info().get("workers", {})))
        except Exception:  # the scheduler may be restarting
            return self.workers

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


#: The most worker processes per core a LocalCluster may start (the stages' rule for threads and workers).
WORKERS_PER_CORE = 4


def local_worker_limit() -> int:
    """The most worker processes ``local:N`` may ask for here: :data:`WORKERS_PER_CORE` per core."""
    return WORKERS_PER_CORE * (os.cpu_count() or 1)


def local_cluster_workers(address: str) -> int | None:
    """N of a ``"local:N"`` scheduler address, checked; ``None`` for the address of a running scheduler.

    Raises:
        ValueError: N is not a whole number from 1 to :func:`local_worker_limit` (more processes
            than that only contend for the cores, and each holds a labeller's memory).
    """
    if not isinstance(address, str) or not address.startswith("local:"):
        return None
    text = address.split(":", 1)[1].strip()
    limit = local_worker_limit()
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not 1 <= int(text) <= limit:
        raise ValueError(f"scheduler {address}: local:N needs N, the number of worker processes, a whole number "
                         f"from 1 to {limit} ({WORKERS_PER_CORE} per core of this machine's {os.cpu_count() or 1})")
    return int(text)


def default_workers() -> int:
    """Worker processes used when ``--workers`` is not given: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_executor(workers: int | None = None, scheduler: str | None = None):
    """The executor of a labelling job: ``scheduler`` (Dask), else ``workers`` processes (default:
    :func:`default_workers` processes); a context manager that closes it."""
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is None:
        workers = default_workers()
    return InlineExecutor() if workers == 0 else PoolExecutor(workers)
