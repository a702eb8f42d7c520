"""The Cython kernels compute what the NumPy reference computes, to SPEC.md's tolerance.

Norm-wise relative difference of every output and gradient: 1e-10 in float64, 1e-4 in
float32, on shapes larger than the other tests use.
"""
import pytest

import rnncore
from rnncore import functional as F

from conftest import assert_close

pytestmark = pytest.mark.skipif(len(rnncore.backends()) < 2,
                                reason="needs the compiled backend as well as numpy")


def forward_backward(backend, params, x, h0, lengths, R, Rh, nonlinearity, batch_first):
    y, h_n, record = F.forward(x, params, h0, lengths, nonlinearity=nonlinearity,
                               batch_first=batch_first, backend=backend)
    dx, dh0, grads = F.backward(record, R, Rh)
    return {"output": y, "h_n": h_n, "dx": dx, "dh0": dh0, **grads}


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape, num_layers, bidirectional, padded, batch_first", [
    ((60, 9, 17, 33), 2, True, True, False),
    ((40, 1, 31, 64), 1, False, False, False),
    ((25, 16, 64, 128), 1, True, False, True),
    ((80, 4, 16, 32), 3, False, True, True),
    ((1, 5, 3, 7), 2, True, True, False),
], ids=["T60-bi-2layers-lengths", "B1", "bi-batch_first", "3layers-lengths-batch_first",
        "T1"])
def test_backends_agree_on_larger_shapes(dtype, tol, rng, nonlinearity, shape, num_layers,
                                         bidirectional, padded, batch_first):
    T, B, K, H = shape
    D = 2 if bidirectional else 1
    rnn = rnncore.RNN(K, H, num_layers, nonlinearity=nonlinearity,
                      bidirectional=bidirectional, dtype=dtype, seed=11)
    bt = (B, T) if batch_first else (T, B)
    x = rng.standard_normal(bt + (K,)).astype(dtype)
    h0 = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    R = rng.standard_normal(bt + (D * H,)).astype(dtype)
    Rh = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if padded else None
    if padded:
        lengths[0] = T                        # the longest sequence fills the batch
    args = (rnn.params, x, h0, lengths, R, Rh, nonlinearity, batch_first)
    fast = forward_backward("cython", *args)
    want = forward_backward("numpy", *args)
    assert list(fast) == list(want)
    for name in want:
        assert_close(fast[name], want[name], tol, name)


def test_backends_agree_on_unbatched_input(dtype, tol, rng):
    rnn = rnncore.RNN(6, 20, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    x = rng.standard_normal((30, 6)).astype(dtype)
    h0 = rng.standard_normal((4, 20)).astype(dtype)
    R = rng.standard_normal((30, 40)).astype(dtype)
    Rh = rng.standard_normal((4, 20)).astype(dtype)
    fast = forward_backward("cython", rnn.params, x, h0, None, R, Rh, "tanh", False)
    want = forward_backward("numpy", rnn.params, x, h0, None, R, Rh, "tanh", False)
    for name in want:
        assert_close(fast[name], want[name], tol, name)
