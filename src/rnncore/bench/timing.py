"""How the grid is timed on a shared, noisy machine.

- Threads: ``rnncore.set_num_threads`` and ``torch.set_num_threads`` set to the case's
  count, and every BLAS/OpenMP pool limited to it with threadpoolctl (lowered, never
  raised: the OpenBLAS rnncore's kernels link stays at its one thread by default).
- CPUs: the process pinned to as many CPUs as the case has threads, the least busy ones
  when the case starts, each on a core of its own while there are cores enough (SMT
  siblings share a core's FMA units: two threads on one core are not two cores). Linux
  sets affinity per thread, so every thread of the process is pinned (thread pools
  started earlier would escape a pin of the main thread alone).
  torch is imported before the first pin, as a user imports it: its OpenMP runtime
  counts the CPUs once, when loaded, and throttles its workers past that count.
- Warm-up: two calls of everything (the first compiles JAX's functions), the second timed
  to size the repeats.
- Interleaving: the implementations of a case (and a GEMM probe) take turns, in rounds, a
  block of calls each, so that a neighbour's load falls on all of them alike and the ratios
  between them hold even when the absolute times drift. On several threads each block
  starts with 0.15 s of untimed calls, while the previous library's idle pools stop
  spinning. A case on several threads also times rnncore on one thread in its rounds,
  the divisor of its 2-thread target (not the 1-thread case, timed minutes apart).
- Quiet: each block starts once no other thread of the process has been running for a
  few milliseconds (:func:`wait_until_quiet`): a library may go on working on threads of
  its own after its call has returned (JAX frees a large call's buffers so), and on a
  pinned CPU that time would be taken from whatever is timed next.
- Statistics: the median of every timed call (garbage collection off while timing, as
  timeit does), and the interquartile range as the spread.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from .. import _parallel, functional, set_num_threads
from .runners import NUMPY_IMPLS, ONE_THREAD, PADDED, _inputs, make_runners

__all__ = ["Limits", "Result", "measure", "wait_until_quiet", "gemm_probe", "GemmChild", "forced_isa",
           "memory_ratio", "denormal_share", "run", "BLAS_OVERRIDES", "ISA_BLAS_CORES"]

# Variables that make OpenBLAS use another CPU's kernels (OPENBLAS_CORETYPE pins a CPU
# type, e.g. Haswell's AVX2 kernels on an AVX-512 CPU).
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# The OpenBLAS core type (OPENBLAS_CORETYPE) whose kernels use the instruction set that
# rnncore-bench --isa forces rnncore's kernels onto: what the GEMM of a CPU whose best is
# that instruction set runs. Haswell's kernels are AVX2 and FMA (those of AMD Zen 1-3
# too); Prescott's SSE3, the x86-64 baseline's.
ISA_BLAS_CORES = {"avx2": "Haswell", "baseline": "Prescott"}


def _cpu_busy(cpus, interval: float = 0.05) -> dict:
    """Fraction of ``interval`` each CPU spent busy (from /proc/stat); {} if unreadable."""
    def sample():
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *v = line.split()
                    v = list(map(int, v))
                    out[int(name[3:])] = (sum(v), v[3] + v[4])      # total, idle+iowait
        return out
    try:
        a = sample()
        time.sleep(interval)
        b = sample()
    except (OSError, ValueError, IndexError):
        return {}
    return {c: 1 - (b[c][1] - a[c][1]) / max(1, b[c][0] - a[c][0])
            for c in cpus if c in a and c in b}


def _set_affinity(cpus) -> bool:
    """Pin every thread of this process to ``cpus``; False where the OS cannot."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:                      # a thread that has just exited
            pass
    return True


def pick_cpus(cpus, busy: dict, n: int) -> list[int]:
    """The ``n`` CPUs of ``cpus`` to pin a case of ``n`` threads to: the least busy
    (``busy``: CPU → busy share, :func:`_cpu_busy`), at most one per core while the
    cores last, then their SMT siblings; sorted.

    Two threads on the siblings of one core share its FMA units, so a 2-thread row
    timed there would show one core's speed, not two (Linux often numbers the siblings
    of core i as i and i + n/2, but a VM may number them 0 and 1). A CPU whose core
    cannot be read counts as a core of its own."""
    order = sorted(cpus, key=lambda c: (busy.get(c, 0.0), c))
    picked, cores = [], set()
    for cpu in order:
        if len(picked) == n:
            break
        core = _parallel.core_of(cpu)
        key = ("cpu", cpu) if core is None else core
        if key not in cores:
            picked.append(cpu)
            cores.add(key)
    picked += [cpu for cpu in order if cpu not in picked][:n - len(picked)]
    return sorted(picked)


class Limits:
    """Threads (and CPUs, when pinning) of one case; restores what it found on exit.

    Parameters
    ----------
    threads : int
        rnncore's and torch's threads; the most threads any BLAS/OpenMP pool may use
        (threadpoolctl lowers pools above it, and leaves smaller ones as they are).
    pin : bool
        Pin the process to ``threads`` CPUs, the least busy ones at entry, on cores of
        their own where there are enough (:func:`pick_cpus`).

    Attributes
    ----------
    cpus : list of int or None
        The CPUs pinned to, None when not pinned.
    pools : list of dict
        Each BLAS/OpenMP pool's internal_api, num_threads and filepath inside the limits.
    """

    def __init__(self, threads: int, pin: bool = True):
        self.threads, self.pin, self.cpus = threads, pin, None

    def __enter__(self):
        from threadpoolctl import ThreadpoolController
        self._affinity = None
        if self.pin and hasattr(os, "sched_getaffinity"):
            self._affinity = os.sched_getaffinity(0)
            self.cpus = pick_cpus(self._affinity, _cpu_busy(self._affinity), self.threads)
            if not _set_affinity(self.cpus):
                self.cpus = self._affinity = None
        set_num_threads(self.threads)
        try:
            import torch
        except ImportError:
            self._torch_threads = None
        else:
            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        # Limit, never raise: a pool already smaller keeps its size. (rnncore's kernels
        # keep their OpenBLAS at one thread by default and parallelise on threads of
        # their own; raising it would time a configuration nobody runs.)
        self._pools = [(lib, lib.num_threads) for lib in
                       ThreadpoolController().lib_controllers]
        for lib, n in self._pools:
            lib.set_num_threads(min(n, self.threads))
        self.pools = [{"internal_api": lib.internal_api, "num_threads": lib.num_threads,
                       "filepath": lib.filepath} for lib, _ in self._pools]
        return self

    def __exit__(self, *exc):
        for lib, n in self._pools:
            lib.set_num_threads(n)
        set_num_threads(None)
        if self._torch_threads is not None:
            import torch
            torch.set_num_threads(self._torch_threads)
        if self._affinity is not None:
            _set_affinity(self._affinity)


def gemm_probe(dtype: str = "float32", n: int = 1024):
    """A callable computing one n³ ``np.matmul`` in ``dtype``, and its FLOPs (2n³)."""
    a = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)
    out = np.empty_like(a)
    return (lambda: np.matmul(a, a, out=out)), 2.0 * n ** 3


class GemmChild:
    """:func:`gemm_probe`'s product run by a child process whose OpenBLAS runs the
    kernels of ``coretype``, or this CPU's own when ``coretype`` is None: the child's
    environment is this one without :data:`BLAS_OVERRIDES`, and with
    ``OPENBLAS_CORETYPE=coretype`` when given.

    OpenBLAS reads those variables once, when it loads, so another set of kernels needs
    another process. Two uses: where the environment pins another CPU's kernels, the
    in-process probe runs those and may be slower than this CPU's GEMM, which would
    flatter the "%GEMM" ratio (``coretype`` None measures this CPU's own); and under
    ``rnncore-bench --isa``, the GEMM of a CPU whose best is the forced instruction set
    (``coretype`` from :data:`ISA_BLAS_CORES`). The child is started inside the case's
    :class:`Limits` (it inherits the pinning; its OpenBLAS gets the case's threads) and
    is timed as one more callable of :func:`measure`, interleaved with the others: each
    call asks it for one product and waits for the answer (a pipe round trip,
    microseconds against milliseconds).

    Parameters
    ----------
    dtype : str
    n : int
        The product is of two (n, n) matrices.
    threads : int
        The child's OpenBLAS/OpenMP threads.
    coretype : str, optional
        OPENBLAS_CORETYPE for the child, e.g. "Haswell" (default: none, this CPU's own
        kernels).

    Attributes
    ----------
    flops : float
        FLOPs of one product, 2n³.
    coretype : str or None
        As given.
    """

    # The first line the child writes is the core its OpenBLAS reports (threadpoolctl's
    # "architecture"; empty if unknown), then one line per product asked for.
    _CHILD = ("import sys\n"
              "import numpy as np\n"
              "try:\n"
              "    from threadpoolctl import threadpool_info\n"
              "    core = next((i.get('architecture') or '' for i in threadpool_info()\n"
              "                 if i.get('internal_api') == 'openblas'), '')\n"
              "except ImportError:\n"
              "    core = ''\n"
              "sys.stdout.write(core + '\\n')\n"
              "sys.stdout.flush()\n"
              "n, dtype = int(sys.argv[1]), sys.argv[2]\n"
              "a = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)\n"
              "out = np.empty_like(a)\n"
              "for _ in sys.stdin:\n"
              "    np.matmul(a, a, out=out)\n"
              "    sys.stdout.write('.\\n')\n"
              "    sys.stdout.flush()\n")

    def __init__(self, dtype: str, n: int, threads: int, coretype: str | None = None):
        self.flops = 2.0 * n ** 3
        self.coretype = coretype
        self._core = None
        self._proc = subprocess.Popen([sys.executable, "-c", self._CHILD, str(n), dtype],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=self.environment(threads, coretype), text=True)

    @staticmethod
    def environment(threads: int, coretype: str | None = None) -> dict:
        """The child's environment: this one without :data:`BLAS_OVERRIDES`, with
        ``threads`` OpenBLAS/OpenMP threads and, when given, ``OPENBLAS_CORETYPE``."""
        env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        if coretype is not None:
            env["OPENBLAS_CORETYPE"] = coretype
        return env

    @staticmethod
    def wanted() -> bool:
        """True when the environment pins other kernels (:data:`BLAS_OVERRIDES`): the
        in-process probe may then not run this CPU's own."""
        return any(k in os.environ for k in BLAS_OVERRIDES)

    def _line(self) -> str:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the GEMM probe's child process ended")
        return line.rstrip("\n")

    @property
    def core(self) -> str:
        """The core type the child's OpenBLAS reports it runs ("" if it cannot tell).

        DYNAMIC_ARCH builds that leave older cores out report one of its aliases (the
        wheels' OpenBLAS names Prescott "Katmai"); an OpenBLAS built for one CPU ignores
        OPENBLAS_CORETYPE and reports its own.
        """
        if self._core is None:
            self._core = self._line()
        return self._core

    def __call__(self) -> None:
        self.core                               # the first line, if not read yet
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        self._line()

    def close(self) -> None:
        """End the child process."""
        self._proc.stdin.close()
        self._proc.wait()
        self._proc.stdout.close()


def forced_isa() -> str | None:
    """The instruction set rnncore's kernels run, when it is below the best this CPU
    supports (``rnncore-bench --isa``, ``rnncore._kernels.set_isa``); None when they run
    the best one, or are not built."""
    try:
        from .. import _kernels
    except ImportError:
        return None
    supported = tuple(_kernels.supported_isas())
    isa = _kernels.isa()
    return isa if supported and isa != supported[-1] else None


# How long a block waits at most for the other threads of the process to stop running;
# the slice of sleep over which their CPU time is read, and the CPU time they may use in
# one slice and still count as quiet (a tenth of a CPU)
QUIET_LIMIT = 0.5
QUIET_SLICE = 0.005
QUIET_CPU = 0.0005


def wait_until_quiet(limit: float = QUIET_LIMIT) -> float:
    """Sleep until no other thread of this process is running, for at most ``limit``
    seconds; return the seconds waited.

    A library may go on working after its call has returned: after an LSTM forward and
    backward at the large case, JAX's runtime ran 26-28 ms of CPU on threads of its own
    during the next GEMM call and 5-9 ms during the one after (docs/perf-notes.md §74),
    which on a process pinned to one CPU halved that call's rate. The other threads' CPU
    time is the process's (``time.process_time``) less this thread's
    (``time.thread_time``), read over slices of :data:`QUIET_SLICE` seconds of sleep;
    quiet is a slice in which they used at most :data:`QUIET_CPU` seconds.
    """
    start = time.perf_counter()
    while True:
        p0, t0 = time.process_time(), time.thread_time()
        time.sleep(QUIET_SLICE)
        others = (time.process_time() - p0) - (time.thread_time() - t0)
        waited = time.perf_counter() - start
        if others <= QUIET_CPU or waited >= limit:
            return waited


def _call_time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fns: dict, budget: float, rounds: int = 5, progress=None,
            settle: float = 0.0, waits: list | None = None) -> dict:
    """Time several callables in interleaved rounds.

    Parameters
    ----------
    fns : dict of key to callable
    budget : float
        Seconds of timed calls per callable, over all rounds (at least one call a round).
    rounds : int
        Each round runs a block of calls of every callable, in an order rotated by one
        each round.
    progress : callable, optional
        Called with a short text after the warm-up and after each round.
    settle : float
        Seconds of untimed calls before each block (at least one call when the block has
        more than two). On several threads, the pools of the callable that ran before
        (OpenBLAS, OpenMP) keep spinning for a while after its last call and take CPU
        from the next one; a user running one library does not see that.
    waits : list, optional
        Receives the seconds each block waited, before its calls, for the process's
        other threads to stop running (:func:`wait_until_quiet`), in the order run.

    Returns
    -------
    dict of key to ndarray
        The seconds of every timed call.
    """
    keys = list(fns)
    once = {}
    for k in keys:                          # warm-up; the second call sizes the blocks
        fns[k]()
        once[k] = max(_call_time(fns[k]), 1e-7)
    if progress:
        progress("warm-up")
    per_block = {k: int(np.clip(budget / rounds / once[k], 1, 100_000)) for k in keys}
    times = {k: [] for k in keys}
    waits = [] if waits is None else waits
    for r in range(rounds):
        gc.collect()
        gc.disable()                        # as timeit does: no collector pauses inside
        try:
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                fn, n, ts = fns[k], per_block[k], times[k]
                waits.append(wait_until_quiet())
                if n > 2 or settle:         # back in cache after the others' turn
                    t_end = time.perf_counter() + settle
                    fn()
                    while time.perf_counter() < t_end:
                        fn()
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        if progress:
            progress(f"round {r + 1}/{rounds}")
    return {k: np.asarray(v) for k, v in times.items()}


def memory_ratio(case, backend: str = "cython") -> float:
    """Peak memory allocated by one forward+backward over the arrays it must keep.

    What must be kept (PERF.md's memory target, as docs/perf-notes.md counts it): the
    output and h_n, the hidden states of every step and direction (h_0 first), every
    gradient (input, h0, weights), and one copy of the parameters: the record's snapshot
    of the weights forward used. Measured with tracemalloc, which sees NumPy's
    allocations, on a fresh call; NaN when ``backend`` is not available, and for the
    gated cells (what they must keep, their gates, is not counted here).

    Parameters
    ----------
    case : rnncore.bench.Case
    backend : str

    Returns
    -------
    float
    """
    if case.cell != "rnn" or backend not in functional.backends():
        return float("nan")
    params, x, R = _inputs(case)
    T, B, K, H, D = case.T, case.B, case.K, case.H, case.directions
    kept = (T * B * D * H + D * B * H            # output, h_n
            + D * (T + 1) * B * H                # hidden states, h_0 first
            + T * B * K + D * B * H              # ∂x, ∂h0
            + sum(p.size for p in params.values())       # ∂weights
            # forward's record keeps a private copy of the weights it used, so that
            # backward differentiates exactly those whatever the caller does to the
            # arrays in between (an optimiser step in place): a copy the contract
            # requires, not a temporary, so it counts among what must be kept
            + sum(p.size for p in params.values()))
    kept *= np.dtype(case.dtype).itemsize
    tracemalloc.start()
    try:
        _, _, record = functional.forward(x, params, lengths=case.lengths_array,
                                          backend=backend)
        functional.backward(record, R)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / kept


def denormal_share(case, backend: str = "numpy") -> float:
    """The fraction of the case's hidden states that are denormal in IEEE arithmetic.

    Nonzero values below ``np.finfo(dtype).tiny`` in magnitude among the forward outputs,
    from one forward call on the inputs every implementation is timed on. The default,
    rnncore's NumPy reference, computes in IEEE arithmetic, so the share says how many
    states are denormal for any library that does not flush them; rnncore's compiled
    kernels flush denormals to zero (FTZ/DAZ), so their own states hold none. NaN when
    ``backend`` is not available.

    Parameters
    ----------
    case : rnncore.bench.Case
    backend : str
        rnncore's backend that computes the states (default: "numpy", the reference).

    Returns
    -------
    float
    """
    if backend not in functional.backends_for(case.cell):
        return float("nan")
    params, x, _ = _inputs(case)
    y = functional.forward(x, params, lengths=case.lengths_array, cell=case.cell,
                           backend=backend)[0]
    tiny = np.finfo(y.dtype).tiny
    return float(np.mean((y != 0) & (np.abs(y) < tiny))) if y.size else 0.0


@dataclass
class Result:
    """The timings of one case.

    Attributes
    ----------
    case : Case
    samples : dict of (impl, mode) to ndarray
        Seconds of every timed call; mode is "fwd" or "fb" (forward+backward).
    gemm_gflops : float
        The gemm_n³ ``np.matmul`` rate in the case's dtype, measured among the case's calls
        in this process (its OpenBLAS runs the kernels the environment picks).
    native_gemm_gflops : float
        The same with this CPU's own OpenBLAS kernels (:class:`GemmChild` without a core
        type), measured among the case's calls when the environment pins other kernels;
        NaN otherwise.
    isa_gemm_gflops : float
        The same with the OpenBLAS kernels of the instruction set rnncore's kernels were
        forced onto (:class:`GemmChild` with ``isa_blas_core``), measured among the
        case's calls when that is below this CPU's best; NaN otherwise.
    isa_blas_core : str or None
        The OPENBLAS_CORETYPE of that child (:data:`ISA_BLAS_CORES`), None when the
        kernels ran this CPU's best instruction set.
    gemm_cores : dict of str to str
        The core each child's OpenBLAS reported, by probe ("native", "isa").
    one_thread_gemm : dict of str to float
        In a case on several threads, each probe's rate on one thread, timed in the
        same rounds, its block right after the probe's own: by probe, "gemm" (in this
        process), "native", "isa". Empty on one thread.
    memory : float
        :func:`memory_ratio` of the case (NaN if not measured).
    denormals : float
        :func:`denormal_share` of the case (NaN if not measured).
    cpus : list of int or None
        The CPUs the case was pinned to.
    gemm_n : int
        Size of the GEMM probe.
    pools : list of dict
        The BLAS/OpenMP pools and their thread counts while the case ran.
    """

    case: object
    samples: dict = field(default_factory=dict)
    gemm_gflops: float = float("nan")
    native_gemm_gflops: float = float("nan")
    memory: float = float("nan")
    denormals: float = float("nan")
    cpus: list | None = None
    gemm_n: int = 1024
    pools: list = field(default_factory=list)
    isa_gemm_gflops: float = float("nan")
    isa_blas_core: str | None = None
    gemm_cores: dict = field(default_factory=dict)
    one_thread_gemm: dict = field(default_factory=dict)

    @property
    def times(self) -> dict:
        """Median seconds per call, by (impl, mode)."""
        return {k: float(np.median(v)) for k, v in self.samples.items()}

    @property
    def spread(self) -> dict:
        """Interquartile range over median, by (impl, mode)."""
        return {k: float(np.subtract(*np.percentile(v, [75, 25])) / np.median(v))
                for k, v in self.samples.items()}

    def baseline(self, mode: str) -> str | None:
        """The fastest plain-NumPy implementation measured in ``mode`` (None if none was).

        The "×NumPy" column and the targets stated against NumPy divide by it: the
        faster of rnncore's reference backend ("numpy") and "numpy-plain".
        """
        times = self.times
        measured = [i for i in NUMPY_IMPLS if (i, mode) in times]
        return min(measured, key=lambda i: times[(i, mode)], default=None)

    def speedup(self, impl: str, mode: str, over: str | None = None) -> float:
        """Median time of ``over`` divided by that of ``impl`` (NaN if either is missing).

        ``over`` defaults to :meth:`baseline`, the fastest plain NumPy of the case.
        """
        over = self.baseline(mode) if over is None else over
        a, b = self.times.get((over, mode)), self.times.get((impl, mode))
        return a / b if a and b else float("nan")

    def gflops(self, impl: str, mode: str) -> float:
        """GFLOP/s of ``impl`` in ``mode`` (PERF.md's FLOP count)."""
        t = self.times.get((impl, mode))
        return self.case.flops(mode) / t / 1e9 if t else float("nan")

    @property
    def native_gemm_rate(self) -> float:
        """This CPU's native-kernel GEMM rate: the faster of the in-process probe and,
        where measured, the child with this CPU's own kernels (so that kernels pinned by
        the environment never pass for this CPU's)."""
        return float(np.nanmax([self.gemm_gflops, self.native_gemm_gflops]))

    @property
    def gemm_rate(self) -> float:
        """The GEMM rate "%GEMM" divides by: that of OpenBLAS running the kernels of the
        instruction set rnncore's kernels ran. :attr:`native_gemm_rate` when they ran
        this CPU's best; :attr:`isa_gemm_gflops` when they were forced onto a lower one,
        so that a run timing an AVX2 CPU's code paths is compared with an AVX2 CPU's
        GEMM."""
        if self.isa_blas_core is not None:
            return float(self.isa_gemm_gflops)
        return self.native_gemm_rate

    @property
    def gemm_scaling(self) -> float:
        """The GEMM rate :attr:`gemm_rate` is taken from over the same probe's rate on
        one thread (:attr:`one_thread_gemm`): how much faster the case's threads ran a
        GEMM than one thread did, in the same rounds. NaN on one thread."""
        if self.isa_blas_core is not None:
            probe, rate = "isa", self.isa_gemm_gflops
        elif self.native_gemm_gflops > self.gemm_gflops:     # False when NaN
            probe, rate = "native", self.native_gemm_gflops
        else:
            probe, rate = "gemm", self.gemm_gflops
        return float(rate / self.one_thread_gemm.get(probe, float("nan")))

    def gemm_fraction(self, impl: str, mode: str) -> float:
        """GFLOP/s of ``impl`` as a fraction of :attr:`gemm_rate`."""
        return self.gflops(impl, mode) / self.gemm_rate


def _load_before_pinning(impls) -> None:
    """Import torch (when timed) before any case pins the process.

    torch's OpenMP runtime (libgomp) counts the CPUs the process may use once, when it
    is loaded; with more threads than that count its idle workers stop spinning at
    once and every parallel region waits for one to wake. Loaded during a 1-thread
    case (pinned to one CPU), torch then ran the 2-thread medium forward in 20.3 ms
    instead of 5.9 (Intel Xeon, 2 CPUs): a slowdown no user who imports torch
    unpinned sees.
    """
    if any(impl.startswith("torch") for impl in impls):
        try:
            import torch  # noqa: F401
        except ImportError:
            pass


# The suffix of a GEMM probe's one-thread twin in a case on several threads
GEMM_ONE_THREAD = "-1t"


def _on_one_blas_thread(fn):
    """``fn`` with NumPy's BLAS on one thread for each call, then the case's again; None
    where that BLAS cannot be narrowed (threadpoolctl finds none, or it stays on its
    threads), whose one-thread rate could not be told from its own."""
    try:
        with _parallel._NUMPY_BLAS.held():
            pass
    except RuntimeError:
        return None
    if not _parallel._numpy_blas():
        return None

    def call():
        with _parallel._NUMPY_BLAS.held():
            return fn()
    return call


def _on_one_thread(fn, threads: int):
    """``fn`` with rnncore on one thread for each call, then ``threads`` again (the
    case's pins and pool limits stay; a call that uses one thread touches neither)."""
    def call():
        set_num_threads(1)
        try:
            return fn()
        finally:
            set_num_threads(threads)
    return call


def run(cases, impls, forward_only: bool = False, budget: float = 0.4, rounds: int = 5,
        pin: bool = True, progress=None, gemm_n: int = 1024) -> list[Result]:
    """Time every implementation at every case.

    Parameters
    ----------
    cases : list of Case
    impls : sequence of str
        Implementations to try (see :func:`make_runners`); those not installed are
        skipped.
    forward_only : bool
        Time the forward pass only.
    budget : float
        Seconds of timed calls per implementation and mode (at least ``rounds`` calls).
    rounds : int
        Interleaved rounds per case (see :func:`measure`).
    pin : bool
        Pin the process to as many CPUs as the case has threads.
    progress : callable, optional
        Called with a short text (rounds + 1) times per case.
    gemm_n : int
        Size of the GEMM probe (PERF.md's is 1024; a smoke run may use less).

    Returns
    -------
    list of Result
    """
    _load_before_pinning(impls)
    results = []
    for case in cases:
        with Limits(case.threads, pin) as limits:
            fns = {}
            for impl in impls:
                runners = make_runners(case, impl)
                if runners is None:
                    continue
                fns[(impl, "fwd")] = runners[0]
                if not forward_only:
                    fns[(impl, "fb")] = runners[1]
            # rnncore's own 1-thread time in a case on several threads, and its own
            # padded time in a case with lengths, in the same rounds as its time at the
            # case, each block right after rnncore's own (a case timed minutes earlier,
            # or seconds, ran on a machine whose speed may have moved since:
            # docs/perf-notes.md §67, §72)
            twins = {}
            if "cython" in impls and case.threads > 1:
                twins[ONE_THREAD] = (case, functools.partial(_on_one_thread,
                                                             threads=case.threads))
            if "cython" in impls and case.lengths:
                twins[PADDED] = (dataclasses.replace(case, lengths=False), None)
            after = {}
            for twin, (twin_case, wrap) in twins.items():
                runners = make_runners(twin_case, "cython")
                if runners is None:
                    continue
                for runner, mode in zip(runners, ("fwd", "fb")[:1 if forward_only else 2]):
                    after.setdefault(("cython", mode), {})[(twin, mode)] = \
                        wrap(runner) if wrap else runner
            fns = {k: f for key, fn in fns.items()
                   for k, f in [(key, fn), *after.get(key, {}).items()]}
            probe, probe_flops = gemm_probe(case.dtype, gemm_n)
            # The GEMM of the instruction set the kernels run when it is not this CPU's
            # best, whatever the environment pins; this CPU's own where the environment
            # pins other kernels (the in-process probe runs those).
            core = ISA_BLAS_CORES.get(forced_isa())
            children = {}
            if core is not None:
                children["isa"] = GemmChild(case.dtype, gemm_n, case.threads, core)
            if GemmChild.wanted():
                children["native"] = GemmChild(case.dtype, gemm_n, case.threads)
            probes = {"gemm": probe, **{f"gemm-{n}": c for n, c in children.items()}}
            # On several threads, each probe on one thread too, its block right after
            # the probe's own: what the machine gives a GEMM's second thread in the
            # same seconds (docs/perf-notes.md §78)
            one_thread = {}
            if case.threads > 1:
                one_thread = {f"gemm-{n}": GemmChild(case.dtype, gemm_n, 1, c.coretype)
                              for n, c in children.items()}
                in_process = _on_one_blas_thread(probe)
                if in_process is not None:
                    one_thread["gemm"] = in_process
            for name, fn in probes.items():
                fns[(name, "")] = fn
                if name in one_thread:
                    fns[(name + GEMM_ONE_THREAD, "")] = one_thread[name]
            show = (lambda text: progress(f"{case.name}: {text}")) if progress else None
            try:
                samples = measure(fns, budget, rounds, show,
                                  settle=0.15 if case.threads > 1 else 0.0)
            finally:
                for child in [*children.values(), *one_thread.values()]:
                    if isinstance(child, GemmChild):
                        child.close()

            def rate(key):
                return probe_flops / float(np.median(samples.pop((key, "")))) / 1e9
            result = Result(case, samples, rate("gemm"), cpus=limits.cpus, gemm_n=gemm_n,
                            pools=limits.pools, isa_blas_core=core,
                            gemm_cores={k: c.core for k, c in children.items()})
            if "native" in children:
                result.native_gemm_gflops = rate("gemm-native")
            if "isa" in children:
                result.isa_gemm_gflops = rate("gemm-isa")
            result.one_thread_gemm = {name.removeprefix("gemm-"):
                                      rate(name + GEMM_ONE_THREAD) for name in one_thread}
            if not forward_only:
                result.memory = memory_ratio(case)
            result.denormals = denormal_share(case)
        results.append(result)
    return results
