"""The same inputs give bitwise the same results, call after call and process after process,
at a fixed thread count; other thread counts change the results by rounding only."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

threadpool_limits = pytest.importorskip("threadpoolctl").threadpool_limits

from conftest import RTOL, assert_close

SCRIPT = """
import hashlib, sys, numpy as np, rnncore
from rnncore import functional as F
backend, dtype, threads = sys.argv[1], np.dtype(sys.argv[2]), int(sys.argv[3])
rnncore.set_num_threads(threads)
if backend == "cython":
    from rnncore import _kernels
    _kernels.set_blas_threads(threads)
rnn = rnncore.RNN(24, 96, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
rng = np.random.default_rng(4)
x = rng.standard_normal((40, 12, 24)).astype(dtype)
dy = rng.standard_normal((40, 12, 192)).astype(dtype)
lengths = [40, 3, 9, 40, 1, 14, 40, 40, 2, 33, 40, 17]
y, h_n, rec = F.forward(x, rnn.params, lengths=lengths, backend=backend)
dx, dh0, g = F.backward(rec, dy)
h = hashlib.sha256()
for a in [y, h_n, dx, dh0, *g.values()]:
    h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""


def _digest(backend, dtype, threads, extra_env=None):
    env = {**os.environ, "RNNCORE_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), **(extra_env or {})}
    out = subprocess.run([sys.executable, "-c", SCRIPT, backend, dtype.name, str(threads)],
                         capture_output=True, text=True, check=True, env=env)
    return out.stdout.strip()


def _in_process_digest(backend, dtype, threads):
    namespace = {}
    argv = sys.argv
    sys.argv = ["-c", backend, dtype.name, str(threads)]
    try:
        from contextlib import redirect_stdout
        from io import StringIO
        buffer = StringIO()
        # the subprocesses' OPENBLAS_NUM_THREADS also sizes NumPy's own BLAS
        with threadpool_limits(limits=threads), redirect_stdout(buffer):
            exec(SCRIPT, namespace)
    finally:
        sys.argv = argv
        rnncore.set_num_threads(None)
    return buffer.getvalue().strip()


@pytest.mark.parametrize("threads", [1, 2])
def test_same_results_across_processes(backend, dtype, threads):
    blas_before = _blas_threads()
    try:
        here = _in_process_digest(backend, dtype, threads)
    finally:
        _set_blas_threads(blas_before)
    assert _digest(backend, dtype, threads) == _digest(backend, dtype, threads) == here


def test_same_results_across_calls(backend, dtype):
    rnn = rnncore.RNN(12, 40, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((25, 6, 12)).astype(dtype)
    dy = rng.standard_normal((25, 6, 80)).astype(dtype)
    first = None
    for _ in range(5):
        y, h_n, rec = F.forward(x, rnn.params, lengths=[25, 3, 9, 25, 1, 14], backend=backend)
        dx, dh0, g = F.backward(rec, dy)
        got = [y, h_n, dx, dh0, *g.values()]
        if first is None:
            first = got
        for a, b in zip(first, got):
            np.testing.assert_array_equal(a, b)


def _blas_threads():
    if "cython" not in rnncore.backends():
        return None
    from rnncore import _kernels
    return _kernels.blas_threads()


def _set_blas_threads(n):
    if n is not None:
        from rnncore import _kernels
        _kernels.set_blas_threads(n)


def test_thread_counts_change_results_only_by_rounding(backend, dtype):
    """rnncore's threads (the two directions, and halves of the ∂x product) and the BLAS's
    threads (how OpenBLAS splits a GEMM) may change the rounding, nothing more."""
    rnn = rnncore.RNN(32, 128, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 8, 32)).astype(dtype)      # large enough to go parallel
    dy = rng.standard_normal((20, 8, 256)).astype(dtype)
    runs = []
    blas_before = _blas_threads()
    try:
        for threads, blas in itertools.product((1, 2), (1, 2)):
            rnncore.set_num_threads(threads)
            _set_blas_threads(blas if blas_before is not None else None)
            y, h_n, rec = F.forward(x, rnn.params, backend=backend)
            dx, dh0, grads = F.backward(rec, dy)
            runs.append([y, h_n, dx, dh0, *grads.values()])
    finally:
        rnncore.set_num_threads(None)
        _set_blas_threads(blas_before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert_close(b, a, RTOL[dtype])
