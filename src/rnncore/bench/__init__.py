"""``rnncore-bench``: time rnncore against plain NumPy (its reference backend and an RNN
as a NumPy user writes it, :mod:`rnncore.bench.plain`) and the frameworks people would
otherwise use (PyTorch, JAX), over the size grid of PERF.md, for the Elman RNN and the
gated cells (``--cell lstm``, ``--cell gru``), padded and with lengths.

Each case runs with BLAS/OpenMP threads limited, pinned to as many CPUs, warmed up, with
the implementations timed in interleaved rounds and the medians reported. Every report
carries plain NumPy and the GEMM rate measured in the same run, so its figures read as
ratios that survive a noisy, shared machine, and names the CPU and the kernels' code
paths (``--isa`` forces those of another CPU) the figures came from.

Run ``rnncore-bench --help`` for the options; ``python -m rnncore.bench`` is the same.
The pytest-benchmark suites in the repository's ``bench/`` reuse :func:`grid`,
:func:`make_runners` and :class:`Limits`.
"""
from . import plain
from .cases import CASES, CELLS, QUICK, Case, comparisons, grid, quick, targets, variants, \
    with_lengths
from .cli import main
from .page import legend, markdown_page
from .report import environment, format_header, format_table, kernel_paths, plot, to_json
from .runners import IMPLS, NUMPY_IMPLS, make_runners
from .timing import Limits, Result, denormal_share, gemm_probe, measure, memory_ratio, run

__all__ = ["Case", "CASES", "QUICK", "CELLS", "grid", "quick", "with_lengths", "IMPLS",
           "NUMPY_IMPLS", "Limits", "Result", "make_runners", "run", "measure",
           "gemm_probe", "memory_ratio", "denormal_share", "targets", "comparisons",
           "variants", "environment", "kernel_paths", "format_header", "format_table",
           "legend", "markdown_page", "to_json", "plot", "main", "plain"]
