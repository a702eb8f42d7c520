"""``rnncore-bench``: time rnncore against its NumPy reference and the frameworks people
would otherwise use (PyTorch, JAX), over the size grid of PERF.md.

Each case runs with BLAS/OpenMP threads limited, pinned to as many CPUs, warmed up, with
the implementations timed in interleaved rounds and the medians reported. Every report
carries the NumPy reference and the GEMM rate measured in the same run, so its figures
read as ratios that survive a noisy, shared machine.

Run ``rnncore-bench --help`` for the options; ``python -m rnncore.bench`` is the same.
The pytest-benchmark suites in the repository's ``bench/`` reuse :data:`CASES`,
:func:`make_runners` and :class:`Limits`.
"""
from .cases import CASES, QUICK, Case, targets, variants
from .cli import main
from .report import environment, format_header, format_table, markdown_page, plot, to_json
from .runners import IMPLS, make_runners
from .timing import Limits, Result, gemm_probe, measure, memory_ratio, run

__all__ = ["Case", "CASES", "QUICK", "IMPLS", "Limits", "Result", "make_runners", "run",
           "measure", "gemm_probe", "memory_ratio", "targets", "variants", "environment",
           "format_header", "format_table", "markdown_page", "to_json", "plot", "main"]
