"""rnncore's threads: the directions of a layer at once, and one direction split.

The Cython kernels release the GIL, so independent pieces of a layer's work run on
threads: the forward and reverse recurrences of a bidirectional layer, and, within one
direction, ranges of batch rows of the recurrence, ranges of steps of the input
projection and of ∂x, and ranges of rows of the weight gradients. A direction is split
only where every row of every product is computed alone (``splits_are_exact``: the
packed kernels of AVX2 and AVX-512), so that the result has the bits of one thread.
The parts are cut in proportion to the threads' speeds on the previous calls
(:func:`_by_speed`): a slower core gets less of the work, with the same bits.

The other threads are those of the OpenMP runtime another library of the process has
loaded (torch's CPU wheels load GNU's), whose spinning worker takes a split call's parts
as one parallel region (:func:`_openmp_pool`); without one, rnncore's own workers.

The thread count follows the usual conventions: :func:`set_num_threads`, else
``RNNCORE_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the number of cores this process
may use (the cores of its affinity's CPUs, one per core where SMT gives a core two or more
CPUs, as torch counts; capped by a control group's CPU quota: a container's ``--cpus``),
read at the first call that needs it and again after ``set_num_threads(None)``
(not per call: that costs microseconds a tiny call cannot spare). A child made by ``fork`` starts with no worker thread and a fresh lock (see
``_after_fork_in_child``).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time

import numpy as np

try:
    # links nothing but the C library: imported with rnncore, it loads no OpenMP
    from . import _openmp
except ImportError:  # pragma: no cover - a source tree that was never built
    _openmp = None

__all__ = ["set_num_threads", "get_num_threads", "map_directions", "direction_parts",
           "forward_direction", "backward_direction", "split_steps", "exact_blas",
           "step_parts_are_exact"]

_lock = threading.Lock()
_pool: list | None = None      # the idle workers (_Worker), None before the first
_num_threads: int | None = None

# Below this many multiply-adds per direction, handing work to a thread costs more
# than it saves.
_MIN_PARALLEL_WORK = 1 << 18
# A split section of one direction (a product, or a recurrence) gives each thread at
# least this many multiply-adds (waking a thread costs 20-50 µs, which is 1-3 M
# multiply-adds), and each part of a recurrence at least one micro-kernel tile of rows:
# fewer rows per step take as long as a tile, the step being bound by its latency.
_MIN_PART_WORK = 1 << 21
_MIN_PART_ROWS = 6

# The threads' speeds, by which every section of a split call is cut (§94 of
# docs/perf-notes.md), read from its sections of steps and, where every row runs as
# many steps, of rows: for a split into n parts, part i's speed (it runs on thread i,
# on rnncore's workers and on an OpenMP pool alike) relative to the mean of the n, from
# the previous split calls. Each call's reading of a speed is clamped to
# [1 / _SPEED_LIMIT, _SPEED_LIMIT] and moves the speed by _SPEED_STEP of the way to
# it; a section of parts shorter than _SPEED_LEAST_SECONDS is not read. The cut stays
# equal while the fastest is less than _SPEED_SPREAD times the slowest: on equal CPUs
# the readings wander by a few percent, and following them would cost the row or two
# they move more than it would gain.
_speeds: dict[int, tuple[float, ...]] = {}
_SPEED_STEP = 0.1
_SPEED_LIMIT = 2.0
_SPEED_LEAST_SECONDS = 1e-4
_SPEED_SPREAD = 1.15
_SHARE_DEN = 1 << 16           # the weight gradients' parts are cut in these units


_default: int | None = None    # _default_threads() as first read; set_num_threads(None)
                               # reads it again


def _default_threads() -> int:
    global _default
    if _default is None:
        _default = _read_default_threads()
    return _default


def _read_default_threads() -> int:
    for var in ("RNNCORE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.strip().isdigit() and int(value) > 0:
            return int(value)
    try:
        affinity = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        affinity = range(os.cpu_count() or 1)
    cores = _cores(affinity) or len(affinity)
    quota = _cpu_quota()
    return cores if quota is None else max(1, min(cores, quota))


# Where the CPUs' topology is read (Linux); tests point it at a tree of their own.
_SYS_CPU = "/sys/devices/system/cpu"


def _cores(cpus) -> int | None:
    """The number of cores the logical CPUs ``cpus`` belong to, or None where the
    topology cannot be read for one of them.

    With SMT (Intel's Hyper-Threading, AMD's SMT) a core runs two or more logical CPUs,
    which share its FMA units: rnncore's kernels are FMA-bound, so a second thread on a
    core adds little but another part to wait for at each barrier. Torch's default
    intra-op thread count is the physical cores too (c10's ``defaultNumThreads``).
    Two CPUs are on one core when they list the same ``core_cpus_list`` (older kernels:
    ``thread_siblings_list``).
    """
    cores = {core_of(cpu) for cpu in cpus}
    return None if None in cores else len(cores) or None


def core_of(cpu: int) -> str | None:
    """The core of the logical CPU ``cpu``: the list of the CPUs on it as Linux writes
    it ("0,4", the same for each of them), or None where it cannot be read."""
    topology = os.path.join(_SYS_CPU, f"cpu{cpu}", "topology")
    for name in ("core_cpus_list", "thread_siblings_list"):
        siblings = _read_fields(os.path.join(topology, name))
        if siblings:
            return siblings[0]
    return None


# Where the CPU quota of this process's control group is read (Linux); tests point them
# at a tree of their own.
_PROC_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"


def _cpu_quota() -> int | None:
    """The CPUs a control group's CPU quota lets this process use, rounded up (a
    container run with ``--cpus=1.5``: 2), or None without a quota.

    A container or a systemd slice may cap a process's CPU time below the CPUs its
    affinity lists (a 2-CPU container on a 64-CPU host sees 64): threads beyond the
    quota only take turns, and split calls then wait on each other (4 threads on 2
    CPUs: medium's forward 2.6 ms against 1.9 ms with 2, docs/perf-notes.md §61).
    The quota is the least of the group's and its ancestors' (cgroup v2 ``cpu.max``,
    v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``).
    """
    try:
        with open(_PROC_CGROUP) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":                                   # cgroup v2
            quotas += _quotas_up(os.path.join(_CGROUP_ROOT, path.lstrip("/")),
                                 _CGROUP_ROOT, _v2_quota)
        elif "cpu" in controllers.split(","):                   # cgroup v1
            root = os.path.join(_CGROUP_ROOT, controllers)
            if not os.path.isdir(root):
                root = os.path.join(_CGROUP_ROOT, "cpu")
            quotas += _quotas_up(os.path.join(root, path.lstrip("/")), root, _v1_quota)
    return min(quotas) if quotas else None


def _quotas_up(directory: str, root: str, read) -> list[int]:
    """``read(d)`` of ``directory`` and each of its ancestors up to ``root`` that
    exist (inside a container its own group is the root), those that are not None."""
    found = []
    directory, root = os.path.normpath(directory), os.path.normpath(root)
    while True:
        if os.path.isdir(directory):
            quota = read(directory)
            if quota is not None:
                found.append(quota)
        if directory == root or not directory.startswith(root):
            return found
        directory = os.path.dirname(directory)


def _v2_quota(directory: str) -> int | None:
    """cgroup v2's ``cpu.max``: "max 100000" (none) or "150000 100000" (2 CPUs)."""
    fields = _read_fields(os.path.join(directory, "cpu.max"))
    return None if fields is None or len(fields) != 2 else _cpus(*fields)


def _v1_quota(directory: str) -> int | None:
    """cgroup v1's ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``."""
    quota = _read_fields(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read_fields(os.path.join(directory, "cpu.cfs_period_us"))
    if quota is None or period is None or len(quota) != 1 or len(period) != 1:
        return None
    return _cpus(quota[0], period[0])


def _read_fields(filename: str) -> list[str] | None:
    try:
        with open(filename) as f:
            return f.read().split()
    except OSError:
        return None


def _cpus(quota: str, period: str) -> int | None:
    """CPUs of a quota of ``quota`` µs per ``period`` µs, rounded up; None for none
    ("max", -1) or a value that is not a number."""
    if not (quota.isdigit() and period.isdigit()) or int(quota) == 0 or int(period) == 0:
        return None
    return -(-int(quota) // int(period))


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
        1 runs everything on the calling thread; 2 or more run the directions of a
        bidirectional layer at once, or split one direction's work over ``n`` threads
        (batch rows, steps, rows of the weight gradients) with the bits of one thread,
        each thread's part in proportion to its speed on the previous calls.
        The other threads are the pool of an OpenMP runtime the process has loaded
        (torch loads GNU's), else rnncore's own; ``RNNCORE_OPENMP_POOL=0`` keeps
        rnncore's.
        None: ``RNNCORE_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the cores this
        process may use (the cores of the CPUs in its affinity: one thread per core,
        not per SMT sibling; capped by a control group's CPU quota such as a
        container's ``--cpus``), read now (after a change of the environment or of the
        process's CPU affinity, call it again).
    """
    global _num_threads, _default
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool)
                          or n < 1):
        raise ValueError(f"n must be a positive integer or None; got {n!r}")
    _num_threads = None if n is None else int(n)
    if n is None:
        _default = None                 # the environment and affinity read afresh


def get_num_threads() -> int:
    """The number of threads rnncore uses.

    Returns
    -------
    int
    """
    return _num_threads if _num_threads is not None else _default_threads()


class _Worker:
    """A thread that runs one call at a time, handed to it and back through two locks.

    A section of a split direction waits for its parts, and the next section starts
    them again: a ThreadPoolExecutor's future, queue and ``wait`` cost 15-20 µs more
    per section than a lock released and acquired (measured on the Xeon, 2 cores).
    """

    def __init__(self):
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._call = None
        self._result = None
        threading.Thread(target=self._loop, name="rnncore", daemon=True).start()

    def _loop(self):
        while True:
            self._go.acquire()
            call, self._call = self._call, None
            try:
                self._result = (call(), None)
            except BaseException as error:      # handed to the caller by finish()
                self._result = (None, error)
            # an idle worker holds nothing of its last call: its arguments (a record's
            # states, say) are freed when the caller lets go of them
            call = None
            self._done.release()

    def start(self, call):
        """Run ``call()`` on this worker; :meth:`finish` waits for it."""
        self._call = call
        self._go.release()

    def finish(self):
        """Wait for the call: (its result, None), or (None, the exception it raised)."""
        self._done.acquire()
        outcome, self._result = self._result, None
        return outcome


def _take_workers(n: int) -> list:
    """``n`` idle workers, new ones where too few are idle; :func:`_give_back` them."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = []
        taken = [_pool.pop() for _ in range(min(n, len(_pool)))]
    return taken + [_Worker() for _ in range(n - len(taken))]


def _give_back(workers: list) -> None:
    with _lock:
        if _pool is not None:            # None: a fork reset it; these threads stay
            # in the order _take_workers found them: the next split call's part i
            # runs on the same thread as this one's (its speed is that thread's, §94)
            _pool.extend(reversed(workers))


def map_directions(fn, jobs, work: int):
    """Call ``fn(*job)`` for each job (one per direction) and return the results.

    With two jobs, more than one thread allowed and enough ``work`` (multiply-adds per
    job), the second job runs on a worker thread while the first runs here. The jobs
    must not write to shared arrays.
    """
    if len(jobs) == 1:
        return [fn(*jobs[0])]
    if not _worth_it(work):
        return [fn(*job) for job in jobs]
    return _run_parts([functools.partial(fn, *job) for job in jobs])


def direction_parts(module, work: int, B: int, N: int, dtype, D: int, rows: int = -1) -> int:
    """Into how many parts to split each direction of a layer (1: not split).

    A direction is split over all threads when at least two are allowed, the layer has
    ``work`` ≥ ``_MIN_PARALLEL_WORK`` multiply-adds per direction and enough that at
    least one of its sections,
    each at most the whole, would be split (:func:`_section_parts`; else the call
    would pay for the split's path and still run on one thread), the kernels' policy
    makes splits exact for a call of ``rows`` = T·B rows of steps and products N = G·H
    wide, and there is no better use for the threads: a bidirectional layer on fewer
    than four threads runs its two directions at once instead.
    """
    n = get_num_threads()
    if (n < 2 or work < _MIN_PARALLEL_WORK or _section_parts(n, work) < 2
            or (D == 2 and n < 4)):
        return 1
    exact = getattr(module, "splits_are_exact", None)
    if exact is None or not exact(B, N, np.dtype(dtype) == np.float32, rows):
        return 1
    return n


def forward_direction(cell, module, parts, x, w, s0, lengths, reverse, relu,
                      output=None, out=None):
    """``cell.forward`` of one layer-direction split over ``parts`` threads: the input
    projection by ranges of steps, then the recurrence by ranges of batch rows, into
    the arrays the cell's kernels write (:mod:`rnncore._cells`), in one dispatch
    (:func:`_in_one_dispatch`). Same bits as one call (:func:`direction_parts`
    checked that).

    ``output`` (T, B, W), when given, receives a copy of the states of steps 0..T-1
    (``hs[1:]``, or ``hs[:T]`` in reverse), each range of rows copied by the thread
    that ran it, while those rows are still in its cache (instead of the caller's one
    copy of the whole on one thread). ``out``, the cell's ``forward_arrays``, is
    written instead of new ones if given.

    Returns
    -------
    hs : ndarray, shape (T+1, B, W)
    saved : tuple of ndarray
        What the cell saves besides hs.
    """
    T, B, K = x.shape
    if out is None:
        out = cell.forward_arrays(x, w)
    steps = _by_speed(T, _section_parts(parts, T * B * w[0].size))
    rows = _by_speed(B, _recurrence_parts(parts, T, B, cell.step_work(w)), _MIN_PART_ROWS)
    _in_one_dispatch(
        module,
        [cell.project(module, x, w, out, reverse, s, defer=True) for s in steps],
        [cell.forward_rows_part(module, x, w, s0, lengths, reverse, relu, out, r,
                                output) for r in rows],
        (steps, _if_alike(rows, lengths)))
    return out[0], tuple(out[1:])


def _copy_rows(hs, rows, reverse, output):
    """The states of steps 0..T-1 of ``rows`` out of hs into ``output`` (if given)."""
    if output is not None:
        r0, r1 = rows
        output[:, r0:r1] = hs[:-1, r0:r1] if reverse else hs[1:, r0:r1]


def backward_direction(cell, module, parts, x, w, hs, saved, dy, ds_n, lengths, reverse,
                       relu, dx=None):
    """``cell.backward`` of one layer-direction split over ``parts`` threads: the
    recurrence of BPTT by ranges of batch rows, then the weight gradients in parts
    (ranges of their rows or columns, the kernel's choice) and, if ``dx`` (T, B, K) is
    given, ∂x = δ W_ih into it by ranges of steps (as :func:`split_steps` cuts them),
    in one dispatch (:func:`_in_one_dispatch`). Same bits and same results as one call.

    Returns
    -------
    d_states0, weight gradients, delta
        As ``cell.backward``.
    """
    T, B, K = x.shape
    g = cell.backward_arrays(x, w, hs)
    row_work = cell.step_work(w)
    weight_parts = _weight_parts(_section_parts(parts, T * B * (w[0].size + row_work)))
    second = [cell.backward_weights(module, x, hs, reverse, g, part, defer=True)
              for part in weight_parts]
    if dx is not None:
        steps = _step_ranges(T, T * B * w[0].size, parts)
        for i, s in enumerate(steps):      # thread i: its weight part, then its ∂x
            grad = _input_grad_steps(module, g.delta, w[0], dx, s)
            if i < len(second):
                second[i].then(grad)
            else:
                second.append(grad)
    rows = _by_speed(B, _recurrence_parts(parts, T, B, row_work), _MIN_PART_ROWS)
    _in_one_dispatch(
        module,
        [cell.backward_rows_part(module, w, hs, saved, dy, ds_n, lengths, reverse, relu,
                                 g, r) for r in rows],
        second, (_if_alike(rows, lengths), None))
    return cell.backward_result(g)


def _input_grad_steps(module, delta, w_ih, dx, steps):
    """The kernels' deferred call (``Part``) of dx[t0:t1] = δ[t0:t1] W_ih over the
    steps ``(t0, t1)``; every choice of the kernel made for the whole call (T·B rows),
    as :func:`split_steps`' parts do."""
    t0, t1 = steps
    T, B, _ = dx.shape
    return module.input_grad(delta[t0:t1], w_ih, dx[t0:t1], False, T * B, defer=True)


def _in_one_dispatch(module, first, second, ranges=(None, None)) -> None:
    """Call every one of ``first``, then every one of ``second``, on as many threads as
    the longer list: thread i calls ``first[i]``, waits at a barrier (the kernels'
    ``Barrier``, which spins without the GIL) until every thread has called its part
    of ``first``, then calls ``second[i]``. One handing out of work instead of two:
    each wakes a sleeping thread, and the GIL after it (20-50 µs each in a VM).

    The parts are the kernels' deferred calls (``Part``, checked here beforehand) or
    any callables. On a loaded OpenMP runtime both sections run as one region in C
    (``rnncore._openmp.run_sections``), where a thread whose parts are all ``Part``
    never takes the GIL: each return to Python between two parts would hand the GIL
    over, 30-100 µs of a VM's wake-up each time (docs/perf-notes.md §99). On
    rnncore's own workers each thread calls its parts from Python.

    ``ranges``, for ``first`` and for ``second``: the (start, stop) ranges of steps or
    rows their parts ran, if each part's work is in proportion to its range's length,
    else None. The parts' times over those lengths are the threads' speeds that
    :func:`_by_speed` cuts the next calls by.

    A part of ``first`` that raises lets the others go past the barrier, where they
    skip ``second``; the call then raises its error.
    """
    times = _run_sections(first, second)
    if times is None:
        times = _on_threads_with_barrier(module, first, second,
                                         max(len(first), len(second)))
    for section, these in enumerate(ranges):
        if these is not None:
            _learn_speeds(these, [t[section] for t in times[:len(these)]])


def _run_sections(first, second):
    """Both sections of :func:`_in_one_dispatch` as one region of the loaded OpenMP
    runtime: each thread's [first, second] seconds; None, with nothing run, where
    there is no runtime to join or it gave fewer threads."""
    with _single_threaded_blas():
        pool = _openmp_pool()
        ran = None if pool is None else pool.run_sections(list(first), list(second))
    if ran is None:
        return None
    dispatched["openmp"] += 1
    times, error = ran
    if error is not None:
        raise error
    return times


def _on_threads_with_barrier(module, first, second, parts: int) -> list:
    """:func:`_in_one_dispatch` from Python, on rnncore's workers (or a region whose
    parts call back into Python): each thread's [first, second] seconds."""
    barrier = module.Barrier(parts)
    times = [[0.0, 0.0] for _ in range(parts)]

    def part(i):
        try:
            if i < len(first):
                start = time.perf_counter()
                first[i]()
                times[i][0] = time.perf_counter() - start
        except BaseException:
            barrier.abort()
            raise
        if barrier.wait() and i < len(second):
            start = time.perf_counter()
            second[i]()
            times[i][1] = time.perf_counter() - start

    _run_parts([functools.partial(part, i) for i in range(parts)])
    return times


def _if_alike(rows, lengths):
    """``rows``, the ranges of a recurrence's rows, if every row runs as many steps
    (its work then in proportion to its rows), else None: rows of unequal lengths,
    sorted longest first by a PackedSequence, would read as a slower thread, and the
    cut learnt from them would be wrong for the next call's rows."""
    return rows if len(lengths) and lengths.min() == lengths.max() else None


def _by_speed(n: int, parts: int, least: int = 1) -> list[tuple[int, int]]:
    """[0, n) in at most ``parts`` contiguous, non-empty ranges, range i in proportion
    to the measured speed of the thread that runs part i (:data:`_speeds`), each at
    least ``least`` long where ``n`` allows it; :func:`_ranges`' equal cut until the
    threads were seen to differ by _SPEED_SPREAD. Any cut of rows or steps gives the
    same bits: each row of a recurrence and each step of a product is computed alone."""
    parts = max(1, min(parts, n))
    speeds = _unequal_speeds(parts)
    if speeds is None or parts * least > n:
        return _ranges(n, parts)
    total, reached, cuts = sum(speeds), 0.0, [0]
    for i in range(parts - 1):
        reached += speeds[i]
        cut = max(int(n * reached / total), cuts[-1] + least)
        cuts.append(min(cut, n - (parts - 1 - i) * least))
    cuts.append(n)
    return list(zip(cuts, cuts[1:]))


def _weight_parts(parts: int) -> list[tuple[int, ...]]:
    """The ``part`` arguments of the kernels' ``backward_weights`` for ``parts``
    threads: (i, parts), equal parts, until the threads were seen to differ; then
    (lo, hi, den), part i from lo / den of the work to hi / den, in proportion to
    the speed of thread i (as :func:`_by_speed` cuts rows and steps)."""
    if _unequal_speeds(parts) is None:
        return [(i, parts) for i in range(parts)]
    return [(lo, hi, _SHARE_DEN) for lo, hi in _by_speed(_SHARE_DEN, parts)]


def _unequal_speeds(parts: int) -> tuple[float, ...] | None:
    """The speeds of a split into ``parts``, if the fastest thread was seen to be at
    least _SPEED_SPREAD times the slowest; else None (cut equally)."""
    speeds = _speeds.get(parts)
    if speeds is None or max(speeds) < _SPEED_SPREAD * min(speeds):
        return None
    return speeds


def _learn_speeds(ranges, seconds) -> None:
    """Move the speeds of a split into ``len(ranges)`` parts towards this call's: part
    i ran ``ranges[i]`` (start, stop) in ``seconds[i]``. Nothing is learnt from a
    section whose parts all took under _SPEED_LEAST_SECONDS (timer and wake-up noise)
    or one that did not run whole (a part that raised: its time is 0)."""
    n = len(ranges)
    if n < 2 or min(seconds) <= 0 or max(seconds) < _SPEED_LEAST_SECONDS:
        return
    rates = [(stop - start) / t for (start, stop), t in zip(ranges, seconds)]
    mean = sum(rates) / n
    old = _speeds.get(n, (1.0,) * n)
    new = [(1 - _SPEED_STEP) * s
           + _SPEED_STEP * min(max(r / mean, 1 / _SPEED_LIMIT), _SPEED_LIMIT)
           for s, r in zip(old, rates)]
    mean = sum(new) / n
    _speeds[n] = tuple(s / mean for s in new)


def split_steps(fn, T: int, work: int, parts: int) -> None:
    """Call ``fn(start, stop)`` over the steps [0, T), in ``parts`` ranges on as many
    threads (when the work is worth it).

    Used for ∂x after a layer's recurrences, so that it too runs on rnncore's threads
    with a one-thread BLAS: alternating with a 2-thread BLAS leaves OpenBLAS's idle
    worker spinning on the core the next parallel section needs (medium-bi backward
    19.9 ms against 15.0 ms).
    """
    ranges = _step_ranges(T, work, parts)
    if len(ranges) == 1:
        fn(0, T)
        return
    _run_parts([functools.partial(fn, *r) for r in ranges])


def _step_ranges(T: int, work: int, parts: int) -> list[tuple[int, int]]:
    """The ranges of steps :func:`split_steps` calls for a section of ``work``
    multiply-adds: one, [0, T), where splitting is not worth it."""
    if parts < 2 or T < 2 or not _worth_it(work):
        return [(0, T)]
    return _by_speed(T, _section_parts(parts, work))


def _section_parts(parts: int, work: int) -> int:
    """Parts for a section of ``work`` multiply-adds: each at least _MIN_PART_WORK."""
    return max(1, min(parts, work // _MIN_PART_WORK))


def _recurrence_parts(parts: int, T: int, B: int, row_work: int) -> int:
    """Parts of batch rows for a recurrence of ``row_work`` multiply-adds per row and
    step: each at least _MIN_PART_ROWS rows."""
    return max(1, min(_section_parts(parts, T * B * row_work), B // _MIN_PART_ROWS))


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) in at most ``parts`` contiguous, non-empty ranges of near-equal size."""
    parts = max(1, min(parts, n))
    cuts = [n * i // parts for i in range(parts + 1)]
    return list(zip(cuts, cuts[1:]))


def _worth_it(work: int) -> bool:
    return work >= _MIN_PARALLEL_WORK and get_num_threads() >= 2


def _run_parts(calls):
    """Run the callables at once, the first here and the others on other threads;
    their results in order. Every call has finished when this returns or raises (the
    first exception, this thread's call's first).

    The other threads are those of an OpenMP runtime the process has loaded, if any
    (:func:`_openmp_pool`), else rnncore's own workers.
    """
    if len(calls) == 1:
        return [calls[0]()]
    with _single_threaded_blas():
        pool = _openmp_pool()
        outcomes = None if pool is None else pool.run(calls)
        if outcomes is None:
            outcomes = _on_workers(calls)
            dispatched["workers"] += 1
        else:
            dispatched["openmp"] += 1
    for _, error in outcomes:
        if error is not None:
            raise error
    return [result for result, _ in outcomes]


# How many calls of _run_parts ran their parts on rnncore's own workers and how many as
# a region of a loaded OpenMP runtime (the benchmark's header reports them).
dispatched = {"workers": 0, "openmp": 0}


def _on_workers(calls):
    """The first callable here, the others on rnncore's worker threads: each one's
    (result, None) or (None, the exception it raised), in order."""
    workers = _take_workers(len(calls) - 1)
    for worker, call in zip(workers, calls[1:]):
        worker.start(call)
    try:
        outcomes = [(calls[0](), None)]
    except BaseException as error:
        outcomes = [(None, error)]
    # an interrupt while waiting leaves the workers out of the pool, still running
    outcomes += [worker.finish() for worker in workers]
    _give_back(workers)
    return outcomes


# Whether the parts may run on a loaded OpenMP runtime (RNNCORE_OPENMP_POOL=0: never;
# False in a child of fork, whose copy of the runtime's pool has no threads).
_join_openmp = os.environ.get("RNNCORE_OPENMP_POOL", "").strip() != "0"
_modules_when_looked = -1      # len(sys.modules) at the last lookup that found none


def _openmp_pool():
    """The module that runs parts as a region of the OpenMP runtime the process has
    loaded (:mod:`rnncore._openmp`), or None: none loaded, no build, or not allowed.

    torch's CPU wheels load GNU's, and its worker, spinning for milliseconds
    after each of torch's parallel ops, would share a CPU with rnncore's own worker.
    Called from the same thread, a region is taken by that worker itself: a training
    step on two threads went from level with stock torch to 1.7× faster
    (docs/perf-notes.md §86, §90). Nothing is linked or loaded for this. A lookup
    that finds none costs ~50 µs per soname (the loader searches its paths), so it is
    repeated only after a module was imported since the last (torch imported after
    rnncore).
    """
    global _modules_when_looked
    if not _join_openmp or _openmp is None:
        return None
    if _openmp.runtime() is None:        # none found yet (once found, it stays loaded)
        if len(sys.modules) == _modules_when_looked:
            return None
        _modules_when_looked = len(sys.modules)
        if not _openmp.find():
            return None
    return _openmp


class _OneThread:
    """A BLAS narrowed to one thread for as long as any of its users runs.

    OpenBLAS has only a process-wide setting, so concurrent users share one count: the
    first narrows it, the last one out restores what the first found. ``read()`` gives
    the setting, ``narrow()`` sets one thread (raising, if it cannot, after the
    setting is restored), ``restore(saved)`` puts ``read()``'s value back. ``users``
    is counted before the BLAS is narrowed: :func:`exact_blas`, reading it without
    the lock, never sees one thread and no user (which it would take for the
    caller's own setting, and leave to be restored under it).
    """

    def __init__(self, read, narrow, restore):
        self.users = 0
        self.saved = None
        self._read, self._narrow, self._restore = read, narrow, restore

    @contextlib.contextmanager
    def held(self):
        with _lock:
            self.users += 1
            if self.users == 1:
                self.saved = self._read()
                try:
                    self._narrow()
                except BaseException:
                    self.users -= 1
                    self._restore(self.saved)
                    raise
        try:
            yield
        finally:
            with _lock:
                self.users -= 1
                if self.users == 0:
                    self._restore(self.saved)

    def after_fork_in_child(self) -> None:
        """A child of ``fork`` has none of the parent's calls in flight: no user, and
        the setting they found."""
        if self.users:
            self.users = 0
            self._restore(self.saved)


def _kernel_blas_threads() -> int:
    kernels = _kernels_module()
    return 1 if kernels is None else kernels.blas_threads()


def _set_kernel_blas_threads(n: int) -> None:
    kernels = _kernels_module()
    if kernels is not None:
        kernels.set_blas_threads(n)


# the kernels' OpenBLAS (nothing to narrow without a build)
_KERNEL_BLAS = _OneThread(_kernel_blas_threads, lambda: _set_kernel_blas_threads(1),
                          _set_kernel_blas_threads)


def _single_threaded_blas():
    """One BLAS thread (the kernels') while the directions run on two threads of their
    own: two directions each calling a 2-thread OpenBLAS oversubscribe the cores
    (medium-bi measured 24.1 ms against 18.7 ms with one BLAS thread). Where it has one
    already (the kernels' default) and no other call holds it there, nothing to do:
    a check, where entering and leaving the context cost 10-15 µs of a split call
    (docs/perf-notes.md §100)."""
    return (_KERNEL_BLAS.held() if _KERNEL_BLAS.users or _kernel_blas_threads() > 1
            else _NO_CHANGE)


def step_parts_are_exact(module, B: int, H: int, dtype, rows: int = -1) -> bool:
    """Whether ``module`` computes each row of a whole-sequence product alone in a call
    of ``rows`` = T·B rows of steps, so that splitting it by ranges of steps changes no
    bit (the kernels' packed products; not a BLAS, whose blocking depends on the number
    of rows, nor the kernels' short calls, which run on the BLAS)."""
    exact = getattr(module, "splits_are_exact", None)
    return exact is not None and exact(B, H, np.dtype(dtype) == np.float32, rows)


def exact_blas(module, deterministic: bool = True):
    """A context for a forward or a backward: one BLAS thread if that BLAS has several
    and the call is ``deterministic``.

    OpenBLAS on several threads does not promise the bits of one thread: it sums the
    weight gradients (over all T·B rows) in another order (float64 gradients differed
    in the last bits on the Xeon), and on an AMD EPYC (Zen 5) with its Haswell kernels
    even a product whose rows could be split, X W_ihᵀ or δ W_ih, differs in float32's
    last bits between one thread and two. So a deterministic call runs every BLAS
    product on one thread: the kernels' OpenBLAS when ``module`` is the kernels,
    NumPy's when it is the reference, for as long as any such call runs (calls on
    several threads at once share the setting: the last one out restores it). When
    that BLAS has one thread of the caller's choosing (the kernels' default), or
    ``deterministic`` is False, the context changes nothing and costs a check (about a
    microsecond with the kernels).
    """
    if not deterministic:
        return _NO_CHANGE
    # another call holding the BLAS at one thread counts as several: it restores them
    # when it ends, perhaps before this call does
    if module is _kernels_module():
        return (_KERNEL_BLAS.held() if _KERNEL_BLAS.users or module.blas_threads() > 1
                else _NO_CHANGE)
    if _NUMPY_BLAS.users or any(c.num_threads > 1 for c in _numpy_blas()):
        return _NUMPY_BLAS.held()
    return _NO_CHANGE


_NO_CHANGE = contextlib.nullcontext()
_kernels_found = []


def _kernels_module():
    """The kernels module (None without a build), looked up once."""
    if not _kernels_found:
        _kernels_found.append(_kernels())
    return _kernels_found[0]


_numpy_blas_controllers = None


def _numpy_blas():
    """threadpoolctl's controllers of the BLAS NumPy calls (not the kernels' own)."""
    global _numpy_blas_controllers
    if _numpy_blas_controllers is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a declared dependency
            found = []
        else:
            try:
                import scipy_openblas32
                kernels_lib = os.path.realpath(scipy_openblas32.get_lib_dir())
            except ImportError:  # pragma: no cover - a declared dependency
                kernels_lib = None
            blas = ThreadpoolController().select(user_api="blas")
            found = [c for c in blas.lib_controllers
                     if kernels_lib is None
                     or not os.path.realpath(c.filepath).startswith(kernels_lib)]
        _numpy_blas_controllers = found
    return _numpy_blas_controllers


def _narrow_numpy_blas() -> None:
    for c in _numpy_blas():
        _set_threads(c, 1)
        _check_threads(c, 1)


def _restore_numpy_blas(saved) -> None:
    for c, n in zip(_numpy_blas(), saved):
        _set_threads(c, n)


# NumPy's BLAS, while a deterministic NumPy-backend call runs; RuntimeError (the sizes
# restored) where a BLAS stays on several threads
_NUMPY_BLAS = _OneThread(lambda: [c.num_threads for c in _numpy_blas()],
                         _narrow_numpy_blas, _restore_numpy_blas)


# The names OpenBLAS builds give their symbols: openblas_set_num_threads, NumPy's
# wheels scipy_openblas_set_num_threads64_ (the affixes threadpoolctl looks for too).
_OPENBLAS_AFFIXES = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]


def _set_threads(controller, n: int) -> None:
    """Set the thread count of a BLAS NumPy calls (a threadpoolctl controller), from
    any thread.

    OpenBLAS on its own threads (pthreads) has one count for the whole process, and
    threadpoolctl (3.8 here) leaves it to one "controlling" thread, the first that set
    it: from any other its ``set_num_threads`` does nothing. A deterministic call
    narrows the BLAS from whichever thread it runs on, so it calls OpenBLAS's own
    setter in the library threadpoolctl found. Any other BLAS, and OpenBLAS on OpenMP
    (whose count is each thread's own), through threadpoolctl's method.
    """
    setter = _openblas_setter(controller)
    (setter if setter is not None else controller.set_num_threads)(n)


def _openblas_setter(controller):
    """``openblas_set_num_threads`` (under the build's affixes) of the library a
    controller of OpenBLAS on pthreads holds, else None."""
    if (getattr(controller, "internal_api", None) != "openblas"
            or getattr(controller, "threading_layer", None) == "openmp"):
        return None
    lib = getattr(controller, "dynlib", None)
    for prefix, suffix in _OPENBLAS_AFFIXES:
        setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if setter is not None:
            return setter
    return None


def _check_threads(controller, n: int) -> None:
    """Raise RuntimeError unless the BLAS of ``controller`` now runs ``n`` threads (a
    library neither its own setter nor threadpoolctl could narrow: a deterministic
    call would not have the bits it promises)."""
    got = controller.num_threads
    if got != n:
        raise RuntimeError(
            f"deterministic=True needs NumPy's BLAS ({controller.filepath}) on {n} "
            f"thread(s), but it stays on {got}: set OPENBLAS_NUM_THREADS={n} (or "
            f"OMP_NUM_THREADS) before starting Python, or pass deterministic=False")


def _before_fork() -> None:
    # No other thread is then between the lock's acquire and release: the counters,
    # the pool and OpenBLAS's setting are consistent at the fork.
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    """Start the child without the parent's threads and the state they held.

    The child has only the forking thread: the pool's worker is gone (a job submitted
    to the inherited pool would wait forever, and so would a region of an OpenMP
    runtime's pool, which the child no longer joins), and so are the calls in flight,
    whose count of BLAS users and one-thread OpenBLAS setting the child must not
    inherit.
    The thread count of :func:`set_num_threads` is kept.
    """
    global _lock, _pool, _join_openmp
    _lock = threading.Lock()
    _pool = None
    # an OpenMP runtime's pool, copied without its threads, would wait for them forever
    _join_openmp = False
    _NUMPY_BLAS.after_fork_in_child()
    _KERNEL_BLAS.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _kernels():
    try:
        from . import _kernels
    except ImportError:  # pragma: no cover - a source tree that was never built
        return None
    return _kernels
