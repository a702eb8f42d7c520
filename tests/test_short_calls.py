"""Short calls: below ``short_call_rows`` rows of steps (T·B) the kernels pack nothing
and run their products on the BLAS, on the weights as the caller holds them.

The short path must compute the same function as the packed one and the reference, for
every cell and option that reaches it (one row: a matrix-vector product, several: a
matrix product; forward on W_hh as held, BPTT on W_hh as held), and the limit is a
setting that tests, benchmarks and the environment can move.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from rnncore import functional as F

from conftest import RTOL, assert_close

_kernels = pytest.importorskip("rnncore._kernels")

CELLS = ["rnn", "lstm", "gru"]


@pytest.fixture(params=["short", "packed"])
def path(request):
    """The short-call path (the default at these sizes) or the packed one, forced
    (the environment may move the default: RNNCORE_SHORT_CALL_ROWS)."""
    _kernels.set_short_call_rows(SHORT if request.param == "short" else 0)
    yield request.param
    _kernels.set_short_call_rows(None)


SHORT = 12          # the built-in limit, which the problems below stay under


def _problem(cell, T, B, dtype, bidirectional=False, seed=0):
    rng = np.random.default_rng(seed)
    K, H = 5, 7
    params = {k: (rng.standard_normal(s) / np.sqrt(H)).astype(dtype)
              for k, s in F.param_shapes(K, H, 2, True, bidirectional, cell=cell).items()}
    D = 2 if bidirectional else 1
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, D * H)).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if B > 1 else None
    return x, params, dy, lengths


def _both(cell, x, params, dy, lengths, backend):
    y, finals, record = F.forward(x, params, lengths=lengths, cell=cell, backend=backend)
    dx, d0, grads = F.backward(record, dy)
    return {"y": y, "dx": dx, **grads}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B", [(1, 1), (3, 1), (1, 4), (2, 5)],
                         ids=["one-step-one-row", "steps-one-row", "one-step-rows",
                              "steps-rows"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_short_and_packed_calls_compute_the_reference(path, cell, T, B, bidirectional,
                                                      dtype):
    x, params, dy, lengths = _problem(cell, T, B, dtype, bidirectional)
    want = _both(cell, x, params, dy, lengths, "numpy")
    got = _both(cell, x, params, dy, lengths, "cython")
    for key in want:
        assert_close(got[key], want[key], RTOL[dtype], f"{path} {key}")


def test_a_short_call_runs_on_the_blas_and_a_long_one_packs(path):
    packs = _kernels.isa() != "baseline"    # AVX2 and AVX-512 have packed kernels
    assert _kernels.splits_are_exact(1, 64, True, SHORT - 1) == (packs and path == "packed")
    assert _kernels.splits_are_exact(1, 64, True, SHORT) == packs


def test_the_short_call_limit_is_a_setting_with_a_default():
    default = _kernels.short_call_rows()
    try:
        _kernels.set_short_call_rows(3)
        assert _kernels.short_call_rows() == 3
        with pytest.raises(ValueError, match="rows must be >= 0"):
            _kernels.set_short_call_rows(-1)
        assert _kernels.short_call_rows() == 3
    finally:
        _kernels.set_short_call_rows(None)
    assert _kernels.short_call_rows() == default


@pytest.mark.parametrize("value, expect", [("0", "0"), ("5", "5"), ("x", "ValueError")])
def test_the_environment_sets_the_short_call_limit(value, expect):
    code = ("from rnncore import _kernels\n"
            "try:\n    print(_kernels.short_call_rows())\n"
            "except ValueError as e:\n    print('ValueError', e)\n")
    env = dict(os.environ, RNNCORE_SHORT_CALL_ROWS=value)
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("importing rnncore hung")
    text = out.stdout + out.stderr
    assert expect in text, text
    if expect == "ValueError":
        assert "RNNCORE_SHORT_CALL_ROWS" in text
