"""One kernel call for what a short sequence would otherwise pay three calls for.

``layer_backward`` computes ∂x in the same call when given ``dx`` (functional's
one-direction path passes it): the result is :func:`input_grad`'s, bit for bit, on
every instruction set, on the packed path and on the short-call (BLAS) path.
``layer_forward_owned`` makes the arrays around a forward (the weights a record keeps,
b_ih + b_hh, h_n, the output) as NumPy would, in the same call.
"""
import numpy as np
import pytest

_kernels = pytest.importorskip("rnncore._kernels")


@pytest.fixture(params=_kernels.supported_isas())
def isa(request):
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(None)


def layer(dtype, T, B, K=5, H=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    w_ih = (rng.standard_normal((H, K)) / 3).astype(dtype)
    w_hh = (rng.standard_normal((H, H)) / 8).astype(dtype)
    b = rng.standard_normal(H).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    lengths = np.full(B, T, np.int64)
    hs = _kernels.layer_forward(x, w_ih, w_hh, b, h0, lengths, False, False)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)
    return x, w_ih, w_hh, hs, dy, dh_n, lengths


# T·B = 3 runs on the BLAS (a short call), 60 on the packed kernels
@pytest.mark.parametrize("T, B", [(3, 1), (20, 3)], ids=["short", "packed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_layer_backward_given_dx_writes_input_grads_bits(isa, dtype, T, B):
    x, w_ih, w_hh, hs, dy, dh_n, lengths = layer(dtype, T, B)
    dx = np.full_like(x, np.nan)
    got = _kernels.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, False, False, dx)
    want = _kernels.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, False, False)
    want_dx = np.full_like(x, np.nan)
    _kernels.input_grad(want[4], w_ih, want_dx, False, T * B)
    np.testing.assert_array_equal(dx, want_dx)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_layer_backward_rejects_a_dx_of_the_wrong_shape():
    x, w_ih, w_hh, hs, dy, dh_n, lengths = layer(np.float32, 4, 2)
    with pytest.raises(ValueError, match="dx"):
        _kernels.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, False, False,
                                np.empty((4, 2, 6), np.float32))


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "shared"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_layer_forward_owned_makes_the_arrays_numpy_would(dtype, snapshot):
    x, w_ih, w_hh, _, _, _, lengths = layer(dtype, 20, 3)
    w_ih = np.asfortranarray(w_ih)                   # any layout: C order made here
    rng = np.random.default_rng(1)
    b_ih, b_hh = (rng.standard_normal(32).astype(dtype) for _ in range(2))
    h0 = rng.standard_normal((3, 32)).astype(dtype)
    h_n = np.full((3, 32), np.nan, dtype)
    hs, (wi, wh, b), y = _kernels.layer_forward_owned(x, w_ih, w_hh, b_ih, b_hh, h0,
                                                      lengths, False, snapshot, h_n, True)
    want = _kernels.layer_forward(x, np.ascontiguousarray(w_ih), w_hh, b_ih + b_hh, h0,
                                  lengths, False, False)
    np.testing.assert_array_equal(hs, want)
    np.testing.assert_array_equal(y, want[1:])
    np.testing.assert_array_equal(h_n, want[-1])
    np.testing.assert_array_equal(b, b_ih + b_hh)
    assert wi.flags.c_contiguous and wh.flags.c_contiguous
    np.testing.assert_array_equal(wi, w_ih)
    assert not np.shares_memory(y, hs)
    assert np.shares_memory(wh, w_hh) != snapshot
    _, (_, _, b), y = _kernels.layer_forward_owned(x, w_ih, w_hh, b_ih, None, h0, lengths,
                                                   False, snapshot)
    assert b is b_ih and y is None


def test_layer_forward_owned_rejects_an_h_n_of_the_wrong_shape():
    x, w_ih, w_hh, _, _, _, lengths = layer(np.float32, 4, 3)
    b, h0 = np.zeros(32, np.float32), np.zeros((3, 32), np.float32)
    with pytest.raises(ValueError, match="h_n must be a C-contiguous"):
        _kernels.layer_forward_owned(x, w_ih, w_hh, b, b, h0, lengths, False, True,
                                     np.zeros((3, 31), np.float32))


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_layer_backward_ignores_dy_at_padded_steps(isa, dtype, reverse, relu):
    """δ is zero past each row's length, whatever dy holds there, and the gradients are
    those of a dy zeroed there."""
    T, B, K, H = 20, 5, 4, 16
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    lengths = np.array([20, 3, 11, 20, 1], np.int64)
    for i, n in enumerate(lengths):
        x[n:, i] = 0.0                               # as functional hands it over
    w_ih = (rng.standard_normal((H, K)) / 3).astype(dtype)
    w_hh = (rng.standard_normal((H, H)) / 5).astype(dtype)
    b = rng.standard_normal(H).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    hs = _kernels.layer_forward(x, w_ih, w_hh, b, h0, lengths, reverse, relu)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)
    zeroed = dy.copy()
    for i, n in enumerate(lengths):
        zeroed[n:, i] = 0.0
    got = _kernels.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, reverse, relu)
    want = _kernels.layer_backward(x, w_ih, w_hh, hs, zeroed, dh_n, lengths, reverse,
                                   relu)
    delta = got[4]
    for i, n in enumerate(lengths):
        assert not delta[n:, i].any(), i
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
