"""Running the two directions of a bidirectional layer at once.

The Cython kernels release the GIL, so the forward and reverse recurrences of a layer,
which are independent, can run on two threads. The thread count follows the usual
conventions: :func:`set_num_threads`, else ``RNNCORE_NUM_THREADS``, else
``OMP_NUM_THREADS``, else the number of CPUs this process may use. A child made by
``fork`` starts with no worker thread and a fresh lock (see ``_after_fork_in_child``).
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["set_num_threads", "get_num_threads", "map_directions"]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_num_threads: int | None = None

# Below this many multiply-adds per direction, handing work to a thread costs more
# than it saves.
_MIN_PARALLEL_WORK = 1 << 18


def _default_threads() -> int:
    for var in ("RNNCORE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.strip().isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure_kernel_blas(kernels) -> None:
    """Give the kernels' OpenBLAS one thread unless the environment says otherwise.

    rnncore parallelises by itself (the directions of a layer, the steps of ∂x), on
    threads that sleep when idle. OpenBLAS's own workers spin for a while after each
    call instead, and a process holds two OpenBLAS pools (NumPy's and the kernels'):
    alternating between them, each pool's spinning workers starve the other's. Measured
    on 2 cores, RNNModel.loss_and_grads (T = B = 32, H = 128): 354 ms with both pools at
    2 threads, 7 ms with one thread. ``RNNCORE_BLAS_THREADS``, ``OPENBLAS_NUM_THREADS``,
    ``GOTO_NUM_THREADS`` or ``OMP_NUM_THREADS``, when set, take precedence, and so does
    threadpoolctl at any time.
    """
    value = os.environ.get("RNNCORE_BLAS_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        kernels.set_blas_threads(int(value))
    elif not any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
                                             "OMP_NUM_THREADS")):
        kernels.set_blas_threads(1)


def set_num_threads(n: int | None) -> None:
    """Set how many threads rnncore may use (None restores the default).

    Parameters
    ----------
    n : int or None
        1 runs everything on the calling thread; 2 or more lets the directions of a
        bidirectional layer run at once.
    """
    global _num_threads
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool)
                          or n < 1):
        raise ValueError(f"n must be a positive integer or None; got {n!r}")
    _num_threads = None if n is None else int(n)


def get_num_threads() -> int:
    """The number of threads rnncore uses.

    Returns
    -------
    int
    """
    return _num_threads if _num_threads is not None else _default_threads()


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnncore")
        return _pool


def map_directions(fn, jobs):
    """Call ``fn(*job)`` for each job (one per direction) and return the results.

    With two jobs, more than one thread allowed and enough work, the second job runs on
    a worker thread while the first runs here. The jobs must not write to shared arrays.
    """
    if len(jobs) == 1:
        return [fn(*jobs[0])]
    if not _worth_it(_work(jobs[0])):
        return [fn(*job) for job in jobs]
    return _run_pair(lambda: fn(*jobs[0]), lambda: fn(*jobs[1]))


def split_steps(fn, T: int, work: int, directions: int) -> None:
    """Call ``fn(start, stop)`` over the steps [0, T), in two halves on two threads.

    Used for the whole-sequence products after a bidirectional layer's recurrences, so
    that they too run on rnncore's two threads with a one-thread BLAS: alternating with
    a 2-thread BLAS leaves OpenBLAS's idle worker spinning on the core the next
    parallel section needs (medium-bi backward 19.9 ms against 15.0 ms).
    """
    if directions < 2 or T < 2 or not _worth_it(work):
        fn(0, T)
        return
    half = T // 2
    _run_pair(lambda: fn(0, half), lambda: fn(half, T))


def _worth_it(work: int) -> bool:
    return work >= _MIN_PARALLEL_WORK and get_num_threads() >= 2


def _run_pair(first, second):
    """Run two callables at once, the second on the worker thread; their results."""
    with _single_threaded_blas():
        future = _get_pool().submit(second)
        result = first()
        other = future.result()
    return [result, other]


_blas_users = 0
_blas_saved = 1


@contextlib.contextmanager
def _single_threaded_blas():
    """One BLAS thread while the directions run on two threads of their own.

    Two directions each calling a 2-thread OpenBLAS oversubscribe the cores (medium-bi
    measured 24.1 ms against 18.7 ms with one BLAS thread). OpenBLAS has only a
    process-wide setting, so concurrent users share one count and the last one out
    restores the size it found.
    """
    global _blas_users, _blas_saved
    kernels = _kernels()
    if kernels is None:
        yield
        return
    with _lock:
        if _blas_users == 0:
            _blas_saved = kernels.blas_threads()
            kernels.set_blas_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:
                kernels.set_blas_threads(_blas_saved)


def _before_fork() -> None:
    # No other thread is then between the lock's acquire and release: the counters,
    # the pool and OpenBLAS's setting are consistent at the fork.
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    """Start the child without the parent's threads and the state they held.

    The child has only the forking thread: the pool's worker is gone (a job submitted
    to the inherited pool would wait forever), and so are the calls in flight, whose
    count of BLAS users and one-thread OpenBLAS setting the child must not inherit.
    The thread count of :func:`set_num_threads` is kept.
    """
    global _lock, _pool, _blas_users
    _lock = threading.Lock()
    _pool = None
    if _blas_users:
        _blas_users = 0
        kernels = _kernels()
        if kernels is not None:
            kernels.set_blas_threads(_blas_saved)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _kernels():
    try:
        from . import _kernels
    except ImportError:  # pragma: no cover - a source tree that was never built
        return None
    return _kernels


def _work(job) -> int:
    x, w_ih, w_hh = job[0], job[1], job[2]
    T, B = x.shape[0], x.shape[1]
    return T * B * (w_ih.size + w_hh.size)
