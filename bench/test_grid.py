"""The PERF.md grid under pytest-benchmark: every cell (the Elman RNN, LSTM, GRU), every
implementation installed, every case of the cell's grid (the gated cells' with lengths
too: "-len"), forward and forward+backward, grouped by cell, case and mode so one run
shows the implementations side by side.

    pytest bench/ --benchmark-columns=median,iqr,rounds --benchmark-sort=name
    pytest bench/ -k "lstm and medium and fb" --benchmark-json=out.json

The cases, the timed callables and the thread limits are rnncore.bench's, the ones the
``rnncore-bench`` command uses (it adds interleaved rounds, ratios and PERF.md's
targets). Each benchmark runs with BLAS, OpenMP, torch and rnncore threads limited to the
case's count and the process pinned to as many CPUs, and records in its extra_info the
CPU and the kernels' code paths (``--isa`` forces them; see conftest.py). These
measure; they assert nothing about speed.
"""
import time

import pytest

from rnncore.bench import CELLS, IMPLS, Limits, grid, make_runners
from rnncore.bench.report import cpu_model, kernel_paths

MODES = {"fwd": 0, "fb": 1}
CASES = [case for cell in CELLS for case in grid(cell)]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.cell}-{c.name}" for c in CASES])
def test_grid(benchmark, case, impl, mode):
    with Limits(case.threads, pin=True):
        runners = make_runners(case, impl)
        if runners is None:
            pytest.skip(f"{impl} is not installed or does not run the {case.cell} cell"
                        + (" with lengths" if case.lengths else ""))
        fn = runners[MODES[mode]]
        flops = case.flops(mode)
        benchmark.group = (f"{case.cell} {case.name} "
                           f"{'fwd+bwd' if mode == 'fb' else 'fwd'}")
        benchmark.extra_info.update(cell=case.cell, case=case.name, impl=impl, mode=mode,
                                    flops=flops, T=case.T, B=case.B, K=case.K, H=case.H,
                                    bidirectional=case.bidirectional,
                                    lengths=(None if case.lengths_array is None
                                             else case.lengths_array.tolist()),
                                    threads=case.threads, dtype=case.dtype,
                                    inputs=case.inputs, cpu=cpu_model(), **kernel_paths())
        fn()                                            # warm-up (JAX compiles here)
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        rounds = int(min(200, max(5, 0.5 / once)))      # about half a second each
        benchmark.pedantic(fn, rounds=rounds, iterations=1)
