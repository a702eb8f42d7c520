"""Every gradient backward returns equals central finite differences of the loss (float64).

Loss = Σ y·R + Σ h_n·R2 for fixed random R, R2; each entry of each parameter, of x and
of h0 is perturbed by ±eps in turn.
"""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import assert_close

EPS = 1e-6
T, B, K, H = 4, 3, 3, 4


def finite_difference(f, a, eps=EPS):
    """Central differences of the scalar f() in every entry of the array a (in place).

    Also checks that f is smooth at the point: a relu kink crossed by ±eps would show as
    a second difference of order eps instead of eps².
    """
    f0 = f()
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        down = f()
        a[i] = old
        assert abs(up - 2 * f0 + down) < 1e-8 * max(1.0, abs(f0)), \
            f"the loss has a kink within eps of entry {i}: choose another seed"
        g[i] = (up - down) / (2 * eps)
    return g


def case(rng, num_layers, bidirectional, nonlinearity, bias):
    D = 2 if bidirectional else 1
    rnn = rnncore.RNN(K, H, num_layers, nonlinearity=nonlinearity, bias=bias,
                      bidirectional=bidirectional, dtype=np.float64, seed=7)
    x = rng.standard_normal((T, B, K))
    h0 = rng.standard_normal((num_layers * D, B, H))
    R = rng.standard_normal((T, B, D * H))
    Rh = rng.standard_normal((num_layers * D, B, H))
    return rnn.params, x, h0, R, Rh


@pytest.mark.parametrize("num_layers, bidirectional, nonlinearity, bias, lengths", [
    (1, False, "tanh", True, None),
    (1, False, "relu", True, None),
    (2, False, "tanh", True, None),
    (1, True, "tanh", True, [4, 2, 1]),
    (2, True, "relu", True, [3, 4, 2]),
    (2, True, "tanh", False, [1, 4, 3]),
], ids=["tanh", "relu", "2-layers", "bi-lengths", "2-layers-bi-relu-lengths",
        "2-layers-bi-no-bias-lengths"])
def test_every_gradient_equals_finite_differences(backend, rng, num_layers, bidirectional,
                                                  nonlinearity, bias, lengths):
    params, x, h0, R, Rh = case(rng, num_layers, bidirectional, nonlinearity, bias)

    def loss():
        y, h_n, _ = F.forward(x, params, h0, lengths, nonlinearity=nonlinearity,
                              backend=backend)
        return float((y * R).sum() + (h_n * Rh).sum())

    _, _, record = F.forward(x, params, h0, lengths, nonlinearity=nonlinearity,
                             backend=backend)
    dx, dh0, grads = F.backward(record, R, Rh)
    assert list(grads) == list(params)
    for key, p in params.items():
        assert_close(grads[key], finite_difference(loss, p), 1e-7, key)
    assert_close(dx, finite_difference(loss, x), 1e-7, "dx")
    assert_close(dh0, finite_difference(loss, h0), 1e-7, "dh0")


def test_gradients_of_padded_inputs_are_zero_and_equal_finite_differences(backend, rng):
    params, x, h0, R, Rh = case(rng, 1, True, "tanh", True)
    lengths = [4, 1, 2]

    def loss():
        y, h_n, _ = F.forward(x, params, h0, lengths, backend=backend)
        return float((y * R).sum() + (h_n * Rh).sum())

    _, _, record = F.forward(x, params, h0, lengths, backend=backend)
    dx, _, _ = F.backward(record, R, Rh)
    want = finite_difference(loss, x)
    for b, n in enumerate(lengths):
        assert (want[n:, b] == 0).all()        # the loss does not depend on padded x
        assert (dx[n:, b] == 0).all()
    assert_close(dx, want, 1e-7, "dx")
