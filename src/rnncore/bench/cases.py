"""The size grid of PERF.md and the targets it sets for each case."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["Case", "CASES", "QUICK", "TARGETS", "COMPARISONS", "variants", "targets",
           "comparisons"]


@dataclass(frozen=True)
class Case:
    """One size of the grid: T steps, B batch, K input, H hidden, one layer.

    Parameters
    ----------
    name : str
        The grid's name for the case ("medium", "medium-bi-2t", ...).
    T, B, K, H : int
        Steps, batch, input size, hidden size.
    bidirectional : bool
    dtype : {"float32", "float64"}
    threads : int
        BLAS, OpenMP, torch and rnncore threads (and CPUs when pinned).
    what : str
        What the size stands for.
    inputs : {"random", "denormal"}
        "random": inputs, weights and R drawn at random (never zeros). "denormal":
        states that underflow into denormals and stay there (see
        ``rnncore.bench.runners``), for the cost of denormal arithmetic.
    """

    name: str
    T: int
    B: int
    K: int
    H: int
    bidirectional: bool = False
    dtype: str = "float32"
    threads: int = 1
    what: str = ""
    inputs: str = "random"

    @property
    def directions(self) -> int:
        """2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1

    @property
    def flops_forward(self) -> float:
        """FLOPs of the forward pass, 2·T·B·(K·H + H·H) for each direction."""
        return 2.0 * self.directions * self.T * self.B * (self.K * self.H + self.H * self.H)

    def flops(self, mode: str) -> float:
        """FLOPs of ``mode`` ("fwd", or "fb" for forward+backward, counted as 3× forward)."""
        return self.flops_forward * (3 if mode == "fb" else 1)

    @property
    def size(self) -> str:
        """The sizes as the string "T, B, K, H"."""
        return f"{self.T}, {self.B}, {self.K}, {self.H}"


CASES = [
    Case("tiny", 100, 1, 32, 64, what="one sequence, small model: per-step overhead"),
    Case("small", 100, 16, 64, 128, what="small model, small batch"),
    Case("medium", 100, 32, 256, 256, what="the common middle"),
    Case("large", 50, 64, 512, 1024, what="BLAS-bound"),
    Case("long", 2000, 4, 16, 32, what="long sequence, tiny state: latency of one step"),
    Case("long-denormal", 2000, 4, 16, 32, inputs="denormal",
         what="long, with states that underflow into denormals after the first steps"),
    Case("medium-bi", 100, 32, 256, 256, bidirectional=True, what="bidirectional, 1 thread"),
    Case("medium-bi-2t", 100, 32, 256, 256, bidirectional=True, threads=2,
         what="bidirectional, 2 threads"),
    Case("medium-2t", 100, 32, 256, 256, threads=2, what="one direction, 2 threads"),
    Case("large-2t", 50, 64, 512, 1024, threads=2, what="one direction, 2 threads"),
    Case("medium-f64", 100, 32, 256, 256, dtype="float64", what="float64"),
]

# The same rows at toy sizes: a seconds-long smoke run of the whole machinery.
QUICK = [dataclasses.replace(c, T=max(4, c.T // 25), B=max(1, c.B // 8), K=max(8, c.K // 8),
                             H=max(16, c.H // 8), what="quick: " + c.what) for c in CASES]


# PERF.md's targets in words; :func:`targets` checks them.
TARGETS = [
    ("tiny, long", "≥ 10× the fastest plain NumPy (×NumPy), and faster than JAX where "
                   "installed"),
    ("small", "≥ 1.5× the fastest plain NumPy (×NumPy)"),
    ("medium, large", "≥ 85% of the single-core SGEMM rate measured in the same run, "
                      "OpenBLAS on the kernels of the instruction set rnncore's kernels "
                      "ran: this CPU's own (where the environment pins others, measured "
                      "without them too: the faster rate counts), or under --isa those "
                      "of the forced instruction set (avx2: Haswell)"),
    ("every case", "faster than PyTorch CPU and JAX where they are installed, forward and "
                   "forward+backward (and the torch drop-in faster than stock torch)"),
    ("medium-bi-2t, medium-2t, large-2t", "≥ 1.8× their own 1-thread time (medium-bi, "
                                          "medium, large), and faster than torch on 2 "
                                          "threads"),
    ("memory", "peak memory of forward+backward ≤ 1.5× the arrays it must keep (output, "
               "hidden states, gradients, and one copy of the parameters: the snapshot "
               "of the weights that forward's record keeps so that backward "
               "differentiates exactly the weights forward used)"),
]

# Cases timed to show a cost rather than to meet a target: the case, the case it is
# compared with, and what the ratio of their times shows.
COMPARISONS = {"long-denormal": ("long", "slowdown from denormal states")}


def _base(name: str) -> str:
    for suffix in ("-2t", "-f64"):
        name = name.removesuffix(suffix)
    return name


def variants(cases, threads=None, dtype=None) -> list[Case]:
    """The cases run at other thread counts and/or another dtype.

    Parameters
    ----------
    cases : list of Case
    threads : list of int, optional
        Run every case at each of these thread counts (default: each case's own).
    dtype : {"float32", "float64"}, optional
        Run every case in this dtype (default: each case's own).

    Returns
    -------
    list of Case
        Named after the size, "-f64" for float64 and "-2t" for 2 threads, without
        duplicates (medium-bi-2t at 1 thread is medium-bi), so that a case is the grid's
        case of the same name whenever it has the same sizes.
    """
    out, seen = [], set()
    for case in cases:
        for n in (threads or [case.threads]):
            dt = dtype or case.dtype
            name = (_base(case.name) + ("-f64" if dt == "float64" else "")
                    + (f"-{n}t" if n > 1 else ""))
            new = dataclasses.replace(case, name=name, threads=n, dtype=dt)
            if name not in seen:
                seen.add(name)
                out.append(new)
    return out


def targets(result, by_name: dict, mode: str) -> list[tuple[str, float, bool, str]]:
    """PERF.md's targets for one case and mode, as measured in this run.

    Parameters
    ----------
    result : rnncore.bench.timing.Result
        The case's timings.
    by_name : dict of str to Result
        Every result of the run, by case name (the 2-thread target compares two cases).
    mode : {"fwd", "fb"}

    Returns
    -------
    list of (label, value, met, format)
        One entry per target that this run measured; ``format`` formats ``value``.
        Empty for cases whose sizes are not the grid's (PERF.md states targets for those
        only).
    """
    out = []
    case = result.case
    grid = {c.name: c for c in CASES}
    if grid.get(case.name) != dataclasses.replace(case, what=grid.get(case.name, case).what):
        return out
    ours = "cython"

    def add(label, value, met, fmt="{:.1f}×"):
        if value is not None and np.isfinite(value):
            out.append((label, float(value), bool(met), fmt))

    base = _base(case.name)
    if base in ("tiny", "long"):
        s = result.speedup(ours, mode)
        add("≥10× NumPy", s, s >= 10)
    if base == "small":
        s = result.speedup(ours, mode)
        add("≥1.5× NumPy", s, s >= 1.5)
    if base in ("medium", "large") and case.dtype == "float32" and case.threads == 1:
        f = result.gemm_fraction(ours, mode)
        add("≥85% SGEMM", 100 * f, f >= 0.85, "{:.0f}%")
    if case.threads == 2 and _base(case.name) in by_name:
        one = by_name[_base(case.name)].times.get((ours, mode))
        two = result.times.get((ours, mode))
        if one and two:
            add("≥1.8× own 1-thread", one / two, one / two >= 1.8)
    for peer in ("torch", "jax"):
        s = result.speedup(ours, mode, over=peer)
        add(f"> {peer}", s, s > 1)
    s = result.speedup("torch+rnncore", mode, over="torch")
    add("torch+rnncore > torch", s, s > 1)
    if mode == "fb":
        add("memory ≤1.5×", result.memory, result.memory <= 1.5, "{:.2f}×")
    return out


def comparisons(result, by_name: dict, mode: str) -> list[tuple[str, float, str]]:
    """Ratios that show a cost (:data:`COMPARISONS`), as measured in this run.

    Parameters
    ----------
    result : rnncore.bench.timing.Result
        The case's timings.
    by_name : dict of str to Result
        Every result of the run, by case name.
    mode : {"fwd", "fb"}

    Returns
    -------
    list of (label, value, format)
        For long-denormal: rnncore's time over its time at ``long`` (above 1: denormals
        cost that much), the same for the fastest plain NumPy, and the share of
        denormal values among the hidden states in IEEE arithmetic (the NumPy
        reference's: rnncore's kernels flush denormals to zero). Empty for other cases, or when the
        case compared with was not run.
    """
    out = []
    if result.case.name not in COMPARISONS:
        return out
    other, _ = COMPARISONS[result.case.name]
    if other in by_name:
        for impl, label in (("cython", "rnncore"), (result.baseline(mode), "NumPy")):
            mine = result.times.get((impl, mode))
            theirs = by_name[other].times.get((impl, mode))
            if mine and theirs:
                out.append((f"{label} ÷ {other}", mine / theirs, "{:.2f}×"))
    if np.isfinite(result.denormals):
        out.append(("denormal states in IEEE arithmetic", 100 * result.denormals,
                    "{:.0f}%"))
    return out
