"""The kernels check what they are given, and backward differentiates what forward ran.

Nothing that reaches the Cython kernels from Python — the public API, a tampered
forward record, or a private kernel called directly — may read or write out of bounds:
every kernel checks its own memory-safety preconditions (shapes that agree, lengths in
[0, T], sizes that fit the BLAS's 32-bit integers) and raises ValueError otherwise.
"""
import tracemalloc

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

_kernels = pytest.importorskip("rnncore._kernels")
INT_MAX = 2**31 - 1


def layer_args(dtype, T=4, B=3, K=2, H=5, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal((T, B, K)).astype(dtype),
                w_ih=rng.standard_normal((H, K)).astype(dtype) / 3,
                w_hh=rng.standard_normal((H, H)).astype(dtype) / 3,
                b=rng.standard_normal(H).astype(dtype),
                h0=rng.standard_normal((B, H)).astype(dtype),
                lengths=np.full(B, T, dtype=np.int64))


def forward(a, reverse=False):
    return _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                  a["lengths"], reverse, False)


def backward(a, hs, dy, dh_n, reverse=False):
    return _kernels.layer_backward(a["x"], a["w_ih"], a["w_hh"], hs, dy, dh_n,
                                   a["lengths"], reverse, False)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


# -- private kernels called with arguments functional.py never passes ------------------

@pytest.mark.parametrize("bad_length", [5, 1000, -1])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_forward_rejects_lengths_outside_0_to_T(dtype, bad_length, reverse):
    a = layer_args(dtype)
    a["lengths"][1] = bad_length
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        forward(a, reverse)


@pytest.mark.parametrize("name, shape", [("w_ih", (5, 3)), ("w_ih", (4, 2)),
                                         ("w_hh", (5, 4)), ("b", (4,)), ("h0", (2, 5)),
                                         ("lengths", (2,))])
def test_layer_forward_rejects_shapes_that_disagree(dtype, name, shape):
    a = layer_args(dtype)
    a[name] = np.ones(shape, dtype=np.int64 if name == "lengths" else dtype)
    with pytest.raises(ValueError, match=rf"{name} must have shape .* got \({shape[0]}"):
        forward(a)


@pytest.mark.parametrize("name, shape", [("hs", (4, 3, 5)), ("hs", (5, 3, 6)),
                                         ("dy", (4, 3, 4)), ("dy", (3, 3, 5)),
                                         ("dh_n", (3, 4))])
def test_layer_backward_rejects_states_and_gradients_that_disagree(dtype, name, shape):
    a = layer_args(dtype)
    args = dict(hs=forward(a), dy=np.ones((4, 3, 5), dtype), dh_n=np.ones((3, 5), dtype))
    args[name] = np.ones(shape, dtype)
    with pytest.raises(ValueError, match=rf"{name} must have shape"):
        backward(a, args["hs"], args["dy"], args["dh_n"])


def test_layer_backward_rejects_lengths_beyond_T(dtype):
    a = layer_args(dtype)
    hs = forward(a)
    a["lengths"][0] = 5
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        backward(a, hs, np.ones((4, 3, 5), dtype), np.ones((3, 5), dtype))


@pytest.mark.parametrize("name, shape", [("w_ih", (6, 2)), ("w_ih", (4, 2)),
                                         ("dx", (4, 3, 3)), ("dx", (4, 2, 2))])
def test_input_grad_rejects_shapes_that_disagree(dtype, name, shape):
    args = dict(delta=np.ones((4, 3, 5), dtype), w_ih=np.ones((5, 2), dtype),
                dx=np.zeros((4, 3, 2), dtype))
    args[name] = np.ones(shape, dtype)
    with pytest.raises(ValueError, match=rf"{name} must have shape"):
        _kernels.input_grad(args["delta"], args["w_ih"], args["dx"], False)


@pytest.mark.parametrize("reverse", [False, True])
def test_a_sequence_of_length_0_passes_h0_and_dh_n_through(backend_module, dtype,
                                                           reverse):
    a = layer_args(dtype)
    a["lengths"][1] = 0
    module = backend_module
    hs = module.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                              a["lengths"], reverse, False)
    np.testing.assert_array_equal(hs[0, 1], a["h0"][1])   # h_n is hs[0] both ways
    dh_n = np.arange(15, dtype=dtype).reshape(3, 5)
    dh0 = module.layer_backward(a["x"], a["w_ih"], a["w_hh"], hs,
                                np.zeros((4, 3, 5), dtype), dh_n, a["lengths"],
                                reverse, False)[0]
    np.testing.assert_array_equal(dh0[1], dh_n[1])


@pytest.fixture(params=["cython", "numpy"])
def backend_module(request):
    return F._backend_module(request.param)


# -- sizes past the BLAS's 32-bit integers -------------------------------------------

@pytest.mark.parametrize("sizes, named", [((2**16, 2**15 + 1, 1, 1), "T*B"),
                                          ((1, 1, 2**31, 1), "K"),
                                          ((1, 1, 1, 2**31), "H"),
                                          ((2**40, 2**40, 1, 1), "T*B")])
def test_check_sizes_names_the_size_that_is_too_big(sizes, named):
    with pytest.raises(ValueError, match=rf"^{named.replace('*', '[*]')} = \d+ .* "
                                         rf"exceeds the 32-bit BLAS limit"):
        _kernels.check_sizes(*sizes)


def test_check_sizes_accepts_the_largest_sizes_that_fit():
    _kernels.check_sizes(INT_MAX, 1, INT_MAX, INT_MAX)
    _kernels.check_sizes(0, 2**40, 1, 1)


def test_kernel_rejects_T_times_B_past_the_blas_limit_before_allocating():
    T, B = 2**16, 2**15 + 1                       # T*B = 2**31 + 2**16; K = 0: no data
    x = np.zeros((T, B, 0), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"T\*B = 2147549184 \(rows"):
            _kernels.layer_forward(x, np.zeros((1, 0), np.float32),
                                   np.zeros((1, 1), np.float32), np.zeros(1, np.float32),
                                   np.zeros((B, 1), np.float32),
                                   np.full(B, T, np.int64), False, False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_forward_rejects_a_broadcast_input_past_the_blas_limit_before_copying_it():
    x = np.broadcast_to(np.float32(0.5), (2**16, 2**15 + 1, 1))   # 2**31 + 2**16 values
    params = rnncore.RNN(1, 2, seed=0).params
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"T\*B = 2147549184"):
            F.forward(x, params, backend="cython")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_rnn_with_more_parameters_than_memory_is_refused_at_once():
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"num_layers=10000000 need .* GiB"):
            rnncore.RNN(4, 64, num_layers=10**7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


# -- backward differentiates what forward computed ---------------------------------------

@pytest.fixture(params=["cython", "numpy"])
def backend(request):
    return request.param


def grads_of(rnn, x, dy):
    rnn.zero_grad()
    rnn(x)
    dx, dh0 = rnn.backward(dy)
    return dx, dh0, {k: g.copy() for k, g in rnn.grads.items()}


@pytest.fixture
def rnn_and_data(backend, dtype):
    rnn = rnncore.RNN(2, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=1,
                      backend=backend)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 2)).astype(dtype)
    dy = rng.standard_normal((5, 3, 12)).astype(dtype)
    return rnn, x, dy


def assert_same_grads(got, want):
    for g, w in zip(got[:2], want[:2], strict=True):
        np.testing.assert_array_equal(g, w)
    for key in want[2]:
        np.testing.assert_array_equal(got[2][key], want[2][key], err_msg=key)


def test_weights_changed_in_place_after_forward_do_not_change_the_gradients(rnn_and_data):
    rnn, x, dy = rnn_and_data
    want = grads_of(rnn, x, dy)
    rnn.zero_grad()
    rnn(x)
    for p in rnn.params.values():          # an optimiser step between forward and backward
        p -= 0.5
    dx, dh0 = rnn.backward(dy)
    assert_same_grads((dx, dh0, rnn.grads), want)


def test_weights_reshaped_in_place_after_forward_do_not_change_the_gradients(rnn_and_data):
    rnn, x, dy = rnn_and_data
    want = grads_of(rnn, x, dy)
    rnn.zero_grad()
    rnn(x)
    rnn.params["weight_ih_l0"].shape = (2, 6)          # same size, reshaped in place
    rnn.params["weight_hh_l1_reverse"].shape = (36,)
    dx, dh0 = rnn.backward(dy)
    assert_same_grads((dx, dh0, rnn.grads), want)


@pytest.mark.parametrize("tamper", ["wider w_ih", "fewer states", "w_hh not square",
                                    "longer lengths"])
def test_a_tampered_record_is_rejected_not_followed(rnn_and_data, tamper):
    rnn, x, dy = rnn_and_data
    _, _, record = F.forward(x, rnn.params, backend=rnn.backend)
    w_ih, w_hh, b = record.weights[0][0]
    if tamper == "wider w_ih":
        record.weights[0][0] = (np.ones((6, 9), w_ih.dtype), w_hh, b)
    elif tamper == "fewer states":
        record.states[0][0] = record.states[0][0][:3].copy()
    elif tamper == "w_hh not square":
        record.weights[1][1] = (record.weights[1][1][0], np.ones((6, 3), w_hh.dtype), b)
    else:
        if rnn.backend == "numpy":
            pytest.skip("NumPy indexing cannot go out of bounds; the reference trusts lengths")
        record.lengths = np.full(3, 50, dtype=np.int64)
    with pytest.raises((ValueError, IndexError)):
        F.backward(record, dy)


# -- values: relu at NaN, inf in W_ih at padded steps ------------------------------------

def test_relu_passes_the_gradient_through_a_nan_state(backend, dtype):
    """relu'(NaN) = 1, as torch's threshold_backward (the state is NaN, not <= 0)."""
    params = {"weight_ih_l0": np.ones((1, 1), dtype), "weight_hh_l0": np.zeros((1, 1), dtype),
              "bias_ih_l0": np.zeros(1, dtype), "bias_hh_l0": np.zeros(1, dtype)}
    x = np.array([[[np.nan]]], dtype)
    y, _, record = F.forward(x, params, nonlinearity="relu", backend=backend)
    assert np.isnan(y).all()
    _, _, grads = F.backward(record, np.ones_like(y))
    assert grads["bias_ih_l0"][0] == 1


def test_relu_gradient_at_nan_matches_torch(backend, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3)).astype(dtype)
    x[2, 1, 0] = np.nan
    stock = torch.nn.RNN(3, 4, nonlinearity="relu", dtype=getattr(torch, np.dtype(dtype).name))
    params = {k: v.detach().numpy().copy() for k, v in stock.state_dict().items()}
    xt = torch.from_numpy(x).requires_grad_()
    yt, _ = stock(xt)
    yt.sum().backward()
    y, _, record = F.forward(x, params, nonlinearity="relu", backend=backend)
    dx, _, grads = F.backward(record, np.ones_like(y))
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(grads["bias_hh_l0"], stock.bias_hh_l0.grad.numpy(),
                               rtol=rtol)


def test_inf_in_w_ih_leaves_the_padded_rows_of_dx_zero(backend, dtype):
    rnn = rnncore.RNN(3, 4, dtype=dtype, seed=0, backend=backend)
    rnn.params["weight_ih_l0"][0, 1] = np.inf
    x = np.zeros((5, 2, 3), dtype)
    rnn(x, lengths=[5, 2])
    dx, _ = rnn.backward(np.ones((5, 2, 4), dtype))
    np.testing.assert_array_equal(dx[2:, 1], 0)


# -- what forward accepts ------------------------------------------------------------

@pytest.mark.parametrize("argument", ["x", "h0", "params", "dy", "dh_n"])
def test_masked_arrays_are_rejected_by_name(argument, dtype):
    rnn = rnncore.RNN(3, 4, dtype=dtype, seed=0)
    arrays = dict(x=np.ones((5, 2, 3), dtype), h0=np.zeros((1, 2, 4), dtype),
                  dy=np.ones((5, 2, 4), dtype), dh_n=np.ones((1, 2, 4), dtype))
    params = dict(rnn.params)
    if argument == "params":
        params["weight_hh_l0"] = np.ma.masked_array(params["weight_hh_l0"])
        name = r"params\['weight_hh_l0'\]"
    else:
        arrays[argument] = np.ma.masked_array(arrays[argument])
        name = argument
    with pytest.raises(TypeError, match=rf"{name} must be a plain array; got a "
                                        rf"numpy.ma.MaskedArray"):
        _, _, record = F.forward(arrays["x"], params, arrays["h0"])
        F.backward(record, arrays["dy"], arrays["dh_n"])


def test_arrays_in_the_other_byte_order_are_accepted_as_their_values(backend, dtype):
    rnn = rnncore.RNN(3, 4, dtype=dtype, seed=0, backend=backend)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype)
    swapped = np.dtype(dtype).newbyteorder("S")
    params = {k: v.astype(swapped) for k, v in rnn.params.items()}
    y, h_n, record = F.forward(x.astype(swapped), params, backend=backend)
    want_y, want_h_n, want_record = F.forward(x, rnn.params, backend=backend)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(h_n, want_h_n)
    assert y.dtype == dtype and y.dtype.isnative
    dx = F.backward(record, np.ones_like(y).astype(swapped))[0]
    np.testing.assert_array_equal(dx, F.backward(want_record, np.ones_like(y))[0])
