"""How the grid is timed on a shared, noisy machine.

- Threads: ``rnncore.set_num_threads`` and ``torch.set_num_threads`` set to the case's
  count, and every BLAS/OpenMP pool limited to it with threadpoolctl (lowered, never
  raised: the OpenBLAS rnncore's kernels link stays at its one thread by default).
- CPUs: the process pinned to as many CPUs as the case has threads, the least busy ones
  when the case starts. Linux sets affinity per thread, so every thread of the process is
  pinned (thread pools started earlier would escape a pin of the main thread alone).
- Warm-up: two calls of everything (the first compiles JAX's functions), the second timed
  to size the repeats.
- Interleaving: the implementations of a case (and a GEMM probe) take turns, in rounds, a
  block of calls each, so that a neighbour's load falls on all of them alike and the ratios
  between them hold even when the absolute times drift. On several threads each block
  starts with 0.15 s of untimed calls, while the previous library's idle pools stop
  spinning.
- Statistics: the median of every timed call (garbage collection off while timing, as
  timeit does), and the interquartile range as the spread.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from .. import functional, set_num_threads
from .runners import NUMPY_IMPLS, _inputs, make_runners

__all__ = ["Limits", "Result", "measure", "gemm_probe", "NativeGemm", "memory_ratio",
           "denormal_share", "run", "BLAS_OVERRIDES"]

# Variables that make OpenBLAS use another CPU's kernels (OPENBLAS_CORETYPE pins a CPU
# type, e.g. Haswell's AVX2 kernels on an AVX-512 CPU).
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


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


class Limits:
    """Threads (and CPUs, when pinning) of one case; restores what it found on exit.

    Parameters
    ----------
    threads : int
        rnncore's and torch's threads; the most threads any BLAS/OpenMP pool may use
        (threadpoolctl lowers pools above it, and leaves smaller ones as they are).
    pin : bool
        Pin the process to ``threads`` CPUs, the least busy ones at entry.

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
            busy = _cpu_busy(self._affinity)
            cpus = sorted(self._affinity, key=lambda c: (busy.get(c, 0.0), c))
            self.cpus = sorted(cpus[:self.threads])
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


class NativeGemm:
    """:func:`gemm_probe`'s product run by a child process whose OpenBLAS picks this
    CPU's own kernels: :data:`BLAS_OVERRIDES` removed from its environment.

    Where the environment pins another CPU's kernels, the in-process probe runs those
    and may be slower than this CPU's GEMM, which would flatter the "%GEMM" ratio. The
    child is started inside the case's :class:`Limits` (it inherits the pinning; its
    OpenBLAS gets the case's threads) and is timed as one more callable of
    :func:`measure`, interleaved with the others: each call asks it for one product
    and waits for the answer (a pipe round trip, microseconds against milliseconds).

    Parameters
    ----------
    dtype : str
    n : int
    threads : int
    """

    _CHILD = ("import sys\n"
              "import numpy as np\n"
              "n, dtype = int(sys.argv[1]), sys.argv[2]\n"
              "a = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)\n"
              "out = np.empty_like(a)\n"
              "for _ in sys.stdin:\n"
              "    np.matmul(a, a, out=out)\n"
              "    sys.stdout.write('.\\n')\n"
              "    sys.stdout.flush()\n")

    def __init__(self, dtype: str, n: int, threads: int):
        self.flops = 2.0 * n ** 3
        self._proc = subprocess.Popen([sys.executable, "-c", self._CHILD, str(n), dtype],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=self.environment(threads), text=True)

    @staticmethod
    def environment(threads: int) -> dict:
        """The child's environment: this one without :data:`BLAS_OVERRIDES`, with
        ``threads`` OpenBLAS/OpenMP threads."""
        env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        return env

    @staticmethod
    def wanted() -> bool:
        """True when the environment pins other kernels (:data:`BLAS_OVERRIDES`)."""
        return any(k in os.environ for k in BLAS_OVERRIDES)

    def __call__(self) -> None:
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        if not self._proc.stdout.readline():
            raise RuntimeError("the native-kernel GEMM probe's process ended")

    def close(self) -> None:
        """End the child process."""
        self._proc.stdin.close()
        self._proc.wait()
        self._proc.stdout.close()


def _call_time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fns: dict, budget: float, rounds: int = 5, progress=None,
            settle: float = 0.0) -> dict:
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
    for r in range(rounds):
        gc.collect()
        gc.disable()                        # as timeit does: no collector pauses inside
        try:
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                fn, n, ts = fns[k], per_block[k], times[k]
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
    allocations, on a fresh call; NaN when ``backend`` is not available.

    Parameters
    ----------
    case : rnncore.bench.Case
    backend : str

    Returns
    -------
    float
    """
    if backend not in functional.backends():
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
        _, _, record = functional.forward(x, params, backend=backend)
        functional.backward(record, R)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / kept


def denormal_share(case, backend: str | None = None) -> float:
    """The fraction of the case's forward outputs (hidden states) that are denormal.

    Nonzero values below ``np.finfo(dtype).tiny`` in magnitude, from one forward call
    on the inputs every implementation is timed on; NaN when ``backend`` is not
    available.

    Parameters
    ----------
    case : rnncore.bench.Case
    backend : str, optional
        rnncore's backend that computes the states (default: the fastest available).

    Returns
    -------
    float
    """
    if backend is not None and backend not in functional.backends():
        return float("nan")
    params, x, _ = _inputs(case)
    y = functional.forward(x, params, backend=backend)[0]
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
        The gemm_n³ ``np.matmul`` rate in the case's dtype, measured among the case's calls.
    native_gemm_gflops : float
        The same with this CPU's own OpenBLAS kernels (:class:`NativeGemm`), measured
        among the case's calls when the environment pins other kernels; NaN otherwise.
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
    def gemm_rate(self) -> float:
        """The GEMM rate "%GEMM" divides by: the faster of the in-process probe and, where
        measured, the native-kernel one, so that kernels pinned by the environment
        never flatter the ratio."""
        return float(np.nanmax([self.gemm_gflops, self.native_gemm_gflops]))

    def gemm_fraction(self, impl: str, mode: str) -> float:
        """GFLOP/s of ``impl`` as a fraction of :attr:`gemm_rate`."""
        return self.gflops(impl, mode) / self.gemm_rate


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
            probe, probe_flops = gemm_probe(case.dtype, gemm_n)
            fns[("gemm", "")] = probe
            native = NativeGemm(case.dtype, gemm_n, case.threads) if NativeGemm.wanted() \
                else None
            if native is not None:
                fns[("gemm-native", "")] = native
            show = (lambda text: progress(f"{case.name}: {text}")) if progress else None
            try:
                samples = measure(fns, budget, rounds, show,
                                  settle=0.15 if case.threads > 1 else 0.0)
            finally:
                if native is not None:
                    native.close()
            gemm = samples.pop(("gemm", ""))
            result = Result(case, samples, probe_flops / float(np.median(gemm)) / 1e9,
                            cpus=limits.cpus, gemm_n=gemm_n, pools=limits.pools)
            if native is not None:
                result.native_gemm_gflops = (probe_flops / 1e9
                                             / float(np.median(samples.pop(("gemm-native",
                                                                           "")))))
            if not forward_only:
                result.memory = memory_ratio(case)
            result.denormals = denormal_share(case)
        results.append(result)
    return results
