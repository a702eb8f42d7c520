"""The PERF.md grid under pytest-benchmark: every implementation installed, every case,
forward and forward+backward, grouped by case so one run shows them side by side.

    pytest bench/ --benchmark-columns=median,iqr,rounds --benchmark-sort=name
    pytest bench/ -k "medium and fb" --benchmark-json=out.json

BLAS threads are limited to each case's thread count (threadpoolctl). These measure;
they assert nothing about speed. The ``rnncore-bench`` command reports the same grid
with ratios and PERF.md's targets.
"""
import pytest

from rnncore.bench import CASES, IMPLS, _Limits, make_runners


@pytest.mark.parametrize("mode", ["fwd", "fb"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grid(benchmark, case, impl, mode):
    runners = make_runners(case, impl)
    if runners is None:
        pytest.skip(f"{impl} is not installed")
    fn = runners[0] if mode == "fwd" else runners[1]
    benchmark.group = f"{case.name} {mode}"
    benchmark.extra_info.update(flops=case.flops_forward * (3 if mode == "fb" else 1),
                                threads=case.threads, dtype=case.dtype)
    flops = case.flops_forward * (3 if mode == "fb" else 1)
    rounds = max(3, min(50, int(2e9 / flops)))         # ~ a second or less per benchmark
    with _Limits(case.threads, pin=False):
        benchmark.pedantic(fn, warmup_rounds=1, rounds=rounds, iterations=1)
