"""The size grid of PERF.md and the targets it sets for each case, for the Elman RNN and
for the gated cells (LSTM, GRU)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .runners import ONE_THREAD, PADDED

__all__ = ["Case", "CASES", "QUICK", "CELLS", "GATES", "TARGETS", "GATED_TARGETS",
           "COMPARISONS", "grid", "quick", "with_lengths", "variants", "targets",
           "comparisons"]

# The cells the benchmark runs, and G, the gate blocks of each (the rows of W_ih and
# W_hh are G·H): a gated cell's products are G times the Elman RNN's.
CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


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
    cell : {"rnn", "lstm", "gru"}
        The Elman RNN (tanh) or one of the gated cells.
    lengths : bool
        Sequences of unequal lengths (:attr:`lengths_array`): rnncore is called with
        ``lengths=``, torch with a packed sequence. False: every sequence is T long
        (padded, as the other rows).
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
    cell: str = "rnn"
    lengths: bool = False

    @property
    def directions(self) -> int:
        """2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        """G, the gate blocks of the cell: 1 for the Elman RNN, 4 for LSTM, 3 for GRU."""
        return GATES[self.cell]

    @property
    def lengths_array(self):
        """The sequence lengths, shape (B,) int64, or None for a padded case.

        A quarter of the sequences (at least one: every fourth, from the first) are
        ``3T // 4`` steps long, the others T, so that a library must handle both and, if
        it sorts by length, must sort.
        """
        if not self.lengths:
            return None
        lengths = np.full(self.B, self.T, dtype=np.int64)
        lengths[::4] = max(1, 3 * self.T // 4)
        return lengths

    @property
    def steps(self) -> int:
        """The sequence steps the batch computes: T·B, or the sum of the lengths."""
        lengths = self.lengths_array
        return self.T * self.B if lengths is None else int(lengths.sum())

    @property
    def flops_forward(self) -> float:
        """FLOPs of the forward pass, 2·T·B·G·H·(K + H) for each direction (G = 1 for
        the Elman RNN, 4 for LSTM, 3 for GRU); with lengths, Σ lengths instead of T·B."""
        return 2.0 * self.directions * self.steps * self.gates * self.H * (self.K + self.H)

    def flops(self, mode: str) -> float:
        """FLOPs of ``mode`` ("fwd", or "fb" for forward+backward, counted as 3× forward)."""
        return self.flops_forward * (3 if mode == "fb" else 1)

    @property
    def size(self) -> str:
        """The sizes as the string "T, B, K, H"."""
        return f"{self.T}, {self.B}, {self.K}, {self.H}"

    @property
    def padded(self) -> str | None:
        """For a case with lengths, the name of the same case padded; else None."""
        return self.name.replace("-len", "", 1) if self.lengths else None


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

def _toy(case: Case) -> Case:
    return dataclasses.replace(case, T=max(4, case.T // 25), B=max(1, case.B // 8),
                               K=max(8, case.K // 8), H=max(16, case.H // 8),
                               what="quick: " + case.what)


# The same rows at toy sizes: a seconds-long smoke run of the whole machinery.
QUICK = [_toy(c) for c in CASES]

# The sizes that a gated cell's grid also runs with lengths (those PERF.md measured
# torch's packed sequences at).
_LENGTHS_ROWS = ("tiny", "small", "medium", "large", "long")


def _base(name: str) -> str:
    """The name without the thread and dtype suffixes: the size (and "-len")."""
    for suffix in ("-2t", "-f64"):
        name = name.removesuffix(suffix)
    return name


def _size(name: str) -> str:
    """The grid size a case has: its name without "-len", "-f64" and "-2t"."""
    return _base(name).removesuffix("-len")


def with_lengths(case: Case) -> Case:
    """The same case with sequences of unequal lengths (:attr:`Case.lengths_array`),
    named with "-len" after the size ("medium-len", "medium-len-f64-2t")."""
    if case.lengths:
        return case
    base = _base(case.name)
    return dataclasses.replace(case, name=base + "-len" + case.name[len(base):],
                               lengths=True,
                               what=case.what + "; a quarter of the sequences ¾ long")


def grid(cell: str = "rnn") -> list[Case]:
    """The grid of one cell.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}

    Returns
    -------
    list of Case
        For "rnn", :data:`CASES`. For a gated cell, the same sizes without
        long-denormal (its inputs make tanh states underflow; a gated cell's sigmoid
        gates keep them away from zero), with tiny, small, medium, large and long also
        run with lengths ("-len", after long).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}; got {cell!r}")
    if cell == "rnn":
        return list(CASES)
    rows = [dataclasses.replace(c, cell=cell) for c in CASES if c.inputs == "random"]
    at = [c.name for c in rows].index("long") + 1
    lengths = [with_lengths(c) for c in rows if c.name in _LENGTHS_ROWS]
    return rows[:at] + lengths + rows[at:]


def quick(cell: str = "rnn") -> list[Case]:
    """:func:`grid` at toy sizes (``--quick``); :data:`QUICK` for "rnn"."""
    return [_toy(c) for c in grid(cell)]


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
    ("medium-bi-2t, medium-2t, large-2t", "≥ 1.8× their own 1-thread time (rnncore on "
                                          "one thread at the same case, timed in the "
                                          "same interleaved rounds), and faster than "
                                          "torch on 2 threads"),
    ("memory", "peak memory of forward+backward ≤ 1.5× the arrays it must keep (output, "
               "hidden states, gradients, and one copy of the parameters: the snapshot "
               "of the weights that forward's record keeps so that backward "
               "differentiates exactly the weights forward used)"),
    ("-len (--lengths)", "≤ 1.1× rnncore's own time at the same case padded"),
]

# The targets of the gated cells (the issue "LSTM and GRU"); :func:`targets` checks them.
GATED_TARGETS = [
    ("LSTM, float32", "≥ 1.5× torch's nn.LSTM (oneDNN) at every grid size, forward and "
                      "forward+backward"),
    ("GRU, float32", "≥ 3× torch's nn.GRU at every grid size"),
    ("float64 (medium-f64; every size under --dtype float64)", "≥ 3× torch"),
    ("every case", "faster than JAX"),
    ("medium, large", "≥ 85% of the single-core SGEMM rate measured in the same run (as "
                      "for the Elman RNN), FLOPs counted G× the Elman RNN's"),
    ("-len", "≤ 1.1× rnncore's own time at the same case padded (torch's packed "
             "sequences take 1.5–40× its padded time: shown beside it)"),
]

# Cases timed to show a cost rather than to meet a target: the case, the case it is
# compared with, and what the ratio of their times shows.
COMPARISONS = {"long-denormal": ("long", "slowdown from denormal states")}


def variants(cases, threads=None, dtype=None, lengths: bool = False) -> list[Case]:
    """The cases run at other thread counts and/or another dtype, and/or with lengths.

    Parameters
    ----------
    cases : list of Case
    threads : list of int, optional
        Run every case at each of these thread counts (default: each case's own).
    dtype : {"float32", "float64"}, optional
        Run every case in this dtype (default: each case's own).
    lengths : bool
        Follow every padded case with the same case with lengths
        (:func:`with_lengths`), so that the two can be compared.

    Returns
    -------
    list of Case
        Named after the size, "-len" for lengths, "-f64" for float64 and "-2t" for 2
        threads, without duplicates (medium-bi-2t at 1 thread is medium-bi), so that a
        case is the grid's case of the same name whenever it has the same sizes.
    """
    out, seen = [], set()
    for case in cases:
        for n in (threads or [case.threads]):
            dt = dtype or case.dtype
            name = (_base(case.name) + ("-f64" if dt == "float64" else "")
                    + (f"-{n}t" if n > 1 else ""))
            new = dataclasses.replace(case, name=name, threads=n, dtype=dt)
            for c in ([new, with_lengths(new)] if lengths else [new]):
                if c.name not in seen:
                    seen.add(c.name)
                    out.append(c)
    return out


def _known(cell: str) -> dict:
    """Every case of ``cell`` whose sizes PERF.md states targets for, by name: the
    grid's, and each of them with lengths; for a gated cell, each of those in float64
    too (its float64 target holds at every size)."""
    cases = grid(cell)
    if cell != "rnn":
        cases = variants(cases) + variants(cases, dtype="float64")
    return {c.name: c for c in cases + [with_lengths(c) for c in cases]}


def _in_grid(case: Case) -> bool:
    known = _known(case.cell).get(case.name)
    return known is not None and known == dataclasses.replace(case, what=known.what)


def _ratio(result, other, impl: str, mode: str) -> float | None:
    """``impl``'s time in ``result`` over its time in ``other`` (None if either is
    missing)."""
    mine = result.times.get((impl, mode)) if result is not None else None
    theirs = other.times.get((impl, mode)) if other is not None else None
    return mine / theirs if mine and theirs else None


def _twin_times(result, twin: str, other, mode: str) -> tuple:
    """rnncore's time in ``result`` and its time at a twin case (the same case on one
    thread, or padded): the twin's calls timed in the case's own rounds where the run
    has them (``twin``: ``ONE_THREAD`` or ``PADDED``), else rnncore's time in
    ``other``, the twin case's own result in the same run. None for a time missing."""
    mine = result.times.get(("cython", mode))
    theirs = result.times.get((twin, mode))
    if not (mine and theirs):
        theirs = other.times.get(("cython", mode)) if other is not None else None
    return mine or None, theirs or None


def _one_thread_ratio(result, by_name: dict, mode: str) -> float | None:
    """rnncore's 1-thread time over its time in ``result``, a case on several threads
    (the 1-thread case: the same name without "-2t"); None if either is missing."""
    mine, one = _twin_times(result, ONE_THREAD,
                            by_name.get(result.case.name.removesuffix("-2t")), mode)
    return one / mine if mine and one else None


def _padded_ratio(result, by_name: dict, mode: str) -> float | None:
    """rnncore's time in ``result``, a case with lengths, over its time at the same
    case padded; None if either is missing."""
    mine, padded = _twin_times(result, PADDED, by_name.get(result.case.padded), mode)
    return mine / padded if mine and padded else None


def targets(result, by_name: dict, mode: str) -> list[tuple[str, float, bool, str]]:
    """PERF.md's targets for one case and mode, as measured in this run.

    Parameters
    ----------
    result : rnncore.bench.timing.Result
        The case's timings.
    by_name : dict of str to Result
        Every result of the run, by case name (the 2-thread and the lengths targets
        compare two cases).
    mode : {"fwd", "fb"}

    Returns
    -------
    list of (label, value, met, format)
        One entry per target that this run measured; ``format`` formats ``value``.
        Empty for cases whose sizes are not the grid's (PERF.md states targets for those
        only). The Elman RNN's are :data:`TARGETS`, the gated cells'
        :data:`GATED_TARGETS`.
    """
    out = []
    case = result.case
    if not _in_grid(case):
        return out
    ours = "cython"

    def add(label, value, met, fmt="{:.1f}×"):
        if value is not None and np.isfinite(value):
            out.append((label, float(value), bool(met), fmt))

    size = _size(case.name)
    padded = not case.lengths
    if padded and size in ("medium", "large") and case.dtype == "float32" \
            and case.threads == 1:
        f = result.gemm_fraction(ours, mode)
        add("≥85% SGEMM", 100 * f, f >= 0.85, "{:.0f}%")
    if case.lengths:
        r = _padded_ratio(result, by_name, mode)
        add("≤1.1× own padded", r, r is not None and r <= 1.1, "{:.2f}×")
    if case.cell != "rnn":
        need = 1.5 if case.cell == "lstm" and case.dtype == "float32" else 3.0
        s = result.speedup(ours, mode, over="torch")
        add(f"≥{need:g}× torch", s, s >= need)
        s = result.speedup(ours, mode, over="jax")
        add("> jax", s, s > 1)
        return out
    if padded and size in ("tiny", "long"):
        s = result.speedup(ours, mode)
        add("≥10× NumPy", s, s >= 10)
    if padded and size == "small":
        s = result.speedup(ours, mode)
        add("≥1.5× NumPy", s, s >= 1.5)
    if case.threads == 2:
        r = _one_thread_ratio(result, by_name, mode)
        add("≥1.8× own 1-thread", r, r is not None and r >= 1.8)
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
        reference's: rnncore's kernels flush denormals to zero). For a case with
        lengths: each other implementation's time over its own time at the case padded
        (rnncore's is a target). For a gated cell's 2-thread case: rnncore's 1-thread
        time over its 2-thread time. For any case on several threads: the same ratio of
        the GEMM probe %GEMM divides by (``Result.gemm_scaling``), what the machine
        gave a GEMM's threads in the same rounds. Empty for other cases, or when the
        case compared with was not run.
    """
    out = []
    case = result.case
    if case.lengths:
        for impl in dict.fromkeys(i for i, m in result.times if m == mode):
            r = _ratio(result, by_name.get(case.padded), impl, mode)
            if impl not in ("cython", ONE_THREAD) and r is not None:
                out.append((f"{impl} ÷ padded", r, "{:.2f}×"))
    if case.cell != "rnn" and case.threads == 2:
        r = _one_thread_ratio(result, by_name, mode)
        if r is not None:
            out.append(("1-thread ÷ 2-thread", r, "{:.2f}×"))
    if case.threads > 1 and np.isfinite(result.gemm_scaling):
        out.append((f"GEMM 1-thread ÷ {case.threads}-thread", result.gemm_scaling,
                    "{:.2f}×"))
    if case.name not in COMPARISONS or case.cell != "rnn":
        return out
    other, _ = COMPARISONS[case.name]
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
