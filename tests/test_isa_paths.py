"""Every instruction-set path of the Cython kernels computes the same function.

The element-wise passes (tanh, relu and their derivatives) and the float32 per-step
product are compiled for the x86-64 baseline, AVX2+FMA and AVX-512 and chosen at import;
each path this CPU can run is checked here against NumPy.
"""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

_kernels = pytest.importorskip("rnncore._kernels")


@pytest.fixture
def isa(kernel_path):
    """Each instruction set, and where it has packed kernels both ways of the
    whole-sequence products (conftest's ``kernel_path``)."""
    return kernel_path


def kernel_tanh(values, dtype):
    """tanh through the kernel's forward pass: one step, H = 1, x·1 + 0."""
    v = np.asarray(values, dtype=dtype)
    B = v.size
    hs = _kernels.layer_forward(
        v.reshape(1, B, 1), np.ones((1, 1), dtype), np.zeros((1, 1), dtype),
        np.zeros(1, dtype), np.zeros((B, 1), dtype), np.ones(B, np.int64), False, False)
    return hs[1, :, 0]


def sweep(dtype):
    tiny = np.finfo(dtype).tiny
    grid = np.linspace(-30, 30, 600_001)
    mags = np.logspace(np.log10(tiny) - 5, 3, 100_000)
    return np.concatenate([grid, mags, -mags]).astype(dtype)


@pytest.mark.parametrize("dtype, max_ulp", [(np.float32, 8), (np.float64, 4)])
def test_tanh_within_a_few_ulps_of_numpy(isa, dtype, max_ulp):
    v = sweep(dtype)
    v = v[np.abs(v) >= np.finfo(dtype).tiny]      # denormals: the next test
    got = kernel_tanh(v, dtype).astype(np.float64)
    want = np.tanh(v.astype(np.float64))
    ulps = np.abs(got - want) / np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    assert ulps.max() <= max_ulp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_denormals_are_flushed_to_zero_in_the_kernels(isa, dtype):
    """The kernels run with FTZ and DAZ: denormal inputs and results are 0."""
    tiny = np.finfo(dtype).tiny
    got = kernel_tanh([tiny / 2, -tiny / 3, tiny / 2**20, tiny, -tiny], dtype)
    assert list(got[:3]) == [0, 0, 0]
    assert list(got[3:]) == [tiny, -tiny]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_callers_floating_point_mode_is_given_back(isa, dtype):
    """After a kernel call NumPy still computes with denormals (MXCSR restored)."""
    kernel_tanh([0.5], dtype)
    tiny = np.finfo(dtype).tiny
    assert np.array(tiny, dtype) / 4 > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_is_exactly_one_at_large_arguments(isa, dtype):
    # beyond 9 (float32) and 19.1 (float64) tanh rounds to ±1
    big = 9.0 if dtype == np.float32 else 19.5
    got = kernel_tanh([big, 30.0, 1e30, np.inf, -big, -30.0, -1e30, -np.inf], dtype)
    assert list(got) == [1, 1, 1, 1, -1, -1, -1, -1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_keeps_nan(isa, dtype):
    assert np.isnan(kernel_tanh([np.nan], dtype)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_is_exactly_odd(isa, dtype):
    """tanh(-x) is -tanh(x) to the bit."""
    v = sweep(dtype)
    v = v[v >= np.finfo(dtype).tiny]
    assert np.array_equal(kernel_tanh(-v, dtype).view(np.uint8),
                          (-kernel_tanh(v, dtype)).view(np.uint8))


def _agrees_with_the_reference(B, H, nonlinearity, dtype, T):
    rng = np.random.default_rng(B * 1000 + H)
    rnn = rnncore.RNN(5, H, bidirectional=True, nonlinearity=nonlinearity, seed=1,
                      dtype=dtype)
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B)
    results = {}
    for backend in ("cython", "numpy"):
        y, h_n, record = F.forward(x, rnn.params, lengths=lengths,
                                   nonlinearity=nonlinearity, backend=backend)
        dx, dh0, grads = F.backward(record, dy)
        results[backend] = [y, h_n, dx, dh0, *grads.values()]
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert np.linalg.norm(got - want) <= tol * max(np.linalg.norm(want), 1)


# B = 8 and 20 (6k + 2) end the packed products on two row tiles of 4; B = 1 at an odd
# H ends the lone-row kernel's two chains over the depth on a single step
@pytest.mark.parametrize("B, H", [(1, 64), (1, 33), (1, 97), (3, 7), (4, 32), (7, 40),
                                  (16, 128), (13, 33), (2, 1), (40, 300), (8, 64),
                                  (20, 70)])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_path_matches_the_reference(isa, B, H, nonlinearity, dtype):
    # a call of fewer than 12 rows runs on the BLAS
    _agrees_with_the_reference(B, H, nonlinearity, dtype, T=20 if B == 1 else 9)


# The packed products' row tiles (6 rows on AVX2, 12 on AVX-512): B rows of the
# per-step product in every remainder of both, 13 and 25 (12k + 1) ending on the
# single-row kernel, 14 and 26 (12k + 2, 6k + 2) on two tiles of MR/2 + 1; H = 520
# packs blocks of δᵀ in the weight gradients (520 rows: 43 tiles of 12 and 4 more)
@pytest.mark.parametrize("B", range(12, 27))
@pytest.mark.parametrize("H", [24, 520])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_row_remainder_of_the_tiles_matches_the_reference(isa, B, H, dtype):
    _agrees_with_the_reference(B, H, "tanh", dtype, T=3)
