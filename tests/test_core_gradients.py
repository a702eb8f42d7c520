"""Gradients equal central finite differences (float64), and the backends agree."""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import RTOL, assert_close


def loss_and_grads(params, x, h0, lengths, R, Rh, nonlinearity, backend):
    y, h_n, record = F.forward(x, params, h0, lengths, nonlinearity=nonlinearity,
                               backend=backend)
    dx, dh0, grads = F.backward(record, R, Rh)
    return float((y * R).sum() + (h_n * Rh).sum()), dx, dh0, grads


def finite_difference(f, a, eps=1e-6):
    """Central differences of the scalar f() in every entry of the array a (in place)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("num_layers, bidirectional, nonlinearity, lengths", [
    (1, False, "tanh", None),
    (2, False, "tanh", None),
    (1, True, "tanh", [4, 2, 1]),
    (2, True, "relu", [3, 4, 2]),
])
def test_every_gradient_equals_finite_differences(backend, rng, num_layers, bidirectional,
                                                  nonlinearity, lengths):
    T, B, K, H = 4, 3, 3, 4
    D = 2 if bidirectional else 1
    rnn = rnncore.RNN(K, H, num_layers, nonlinearity=nonlinearity,
                      bidirectional=bidirectional, dtype=np.float64, seed=7)
    params = rnn.params
    if nonlinearity == "relu":   # keep pre-activations away from the kink at 0
        for key in params:
            if key.startswith("bias"):
                params[key] += 0.3
    x = rng.standard_normal((T, B, K))
    h0 = rng.standard_normal((num_layers * D, B, H))
    R = rng.standard_normal((T, B, D * H))
    Rh = rng.standard_normal((num_layers * D, B, H))

    def f():
        return loss_and_grads(params, x, h0, lengths, R, Rh, nonlinearity, backend)[0]

    _, dx, dh0, grads = loss_and_grads(params, x, h0, lengths, R, Rh, nonlinearity, backend)
    for key, p in params.items():
        assert_close(grads[key], finite_difference(f, p), 1e-7, key)
    assert_close(dx, finite_difference(f, x), 1e-7, "dx")
    assert_close(dh0, finite_difference(f, h0), 1e-7, "dh0")


@pytest.mark.skipif(len(rnncore.backends()) < 2, reason="needs both backends")
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape, num_layers, bidirectional, padded", [
    ((60, 9, 17, 33), 2, True, True),
    ((40, 1, 31, 64), 1, False, False),
    ((25, 16, 64, 128), 1, True, False),
    ((80, 4, 16, 32), 3, False, True),
])
def test_backends_agree_on_larger_shapes(dtype, rng, nonlinearity, shape, num_layers,
                                         bidirectional, padded):
    T, B, K, H = shape
    D = 2 if bidirectional else 1
    rnn = rnncore.RNN(K, H, num_layers, nonlinearity=nonlinearity,
                      bidirectional=bidirectional, dtype=dtype, seed=11)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    h0 = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    R = rng.standard_normal((T, B, D * H)).astype(dtype)
    Rh = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if padded else None
    results = [loss_and_grads(rnn.params, x, h0, lengths, R, Rh, nonlinearity, b)
               for b in ("cython", "numpy")]
    (_, dx_c, dh0_c, g_c), (_, dx_n, dh0_n, g_n) = results
    y_c, hn_c, _ = F.forward(x, rnn.params, h0, lengths, nonlinearity=nonlinearity,
                             backend="cython")
    y_n, hn_n, _ = F.forward(x, rnn.params, h0, lengths, nonlinearity=nonlinearity,
                             backend="numpy")
    tol = RTOL[dtype]
    assert_close(y_c, y_n, tol, "output")
    assert_close(hn_c, hn_n, tol, "h_n")
    assert_close(dx_c, dx_n, tol, "dx")
    assert_close(dh0_c, dh0_n, tol, "dh0")
    for key in g_n:
        assert_close(g_c[key], g_n[key], tol, key)
