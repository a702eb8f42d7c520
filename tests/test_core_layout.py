"""Any memory layout and any size SPEC.md allows gives the contiguous result, untouched inputs."""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import RTOL, assert_close


def run(params, x, h0=None, lengths=None, dy=None, dh_n=None, backend=None, **kw):
    y, h_n, record = F.forward(x, params, h0, lengths, backend=backend, **kw)
    dx, dh0, grads = F.backward(record, dy, dh_n)
    return [y, h_n, dx, dh0, *grads.values()]


@pytest.fixture
def setup(dtype, rng):
    rnn = rnncore.RNN(5, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=2)
    x = rng.standard_normal((8, 3, 5)).astype(dtype)
    h0 = rng.standard_normal((4, 3, 6)).astype(dtype)
    dy = rng.standard_normal((8, 3, 12)).astype(dtype)
    dh_n = rng.standard_normal((4, 3, 6)).astype(dtype)
    return rnn, x, h0, dy, dh_n


def _strided(a):
    """The same values as a, in a non-contiguous view."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _negative(a):
    """The same values as a, in a view with negative strides on every axis."""
    flip = (slice(None, None, -1),) * a.ndim
    return a[flip].copy()[flip]


@pytest.mark.parametrize("lengths", [None, [8, 2, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("layout", ["strided", "negative", "fortran", "readonly",
                                    "broadcast"])
def test_any_layout_gives_the_contiguous_result(backend, dtype, setup, layout, lengths):
    rnn, x, h0, dy, dh_n = setup
    want = run(rnn.params, x, h0, lengths, dy, dh_n, backend)
    if layout in ("strided", "negative"):
        view = _strided if layout == "strided" else _negative
        args = [view(a) for a in (x, h0, dy, dh_n)]
        params = {k: view(v) for k, v in rnn.params.items()}
    elif layout == "fortran":
        args = [np.asfortranarray(a) for a in (x, h0, dy, dh_n)]
        params = {k: np.asfortranarray(v) for k, v in rnn.params.items()}
    elif layout == "readonly":
        args = [a.copy() for a in (x, h0, dy, dh_n)]
        params = {k: v.copy() for k, v in rnn.params.items()}
        for a in [*args, *params.values()]:
            a.setflags(write=False)
    else:   # read-only broadcast views of one step / one state
        x = np.broadcast_to(x[:1], x.shape)
        h0 = np.broadcast_to(h0[:, :1], h0.shape)
        want = run(rnn.params, x.copy(), h0.copy(), lengths, dy, dh_n, backend)
        args, params = [x, h0, dy, dh_n], rnn.params
    if layout != "readonly":
        assert not args[0].flags.c_contiguous    # the case really is another layout
    got = run(params, args[0], args[1], lengths, args[2], args[3], backend)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, RTOL[dtype] / 100)


CALLS = {   # name: (batch_first, unbatched, lengths)
    "time-major": (False, False, None),
    "lengths": (False, False, [8, 2, 5]),
    "batch_first-lengths": (True, False, [3, 8, 1]),
    "unbatched": (False, True, None),
}


def call_arrays(x, h0, dy, dh_n, batch_first, unbatched):
    """The setup's arrays in the layout of one kind of call."""
    if unbatched:
        return x[:, 0], h0[:, 0], dy[:, 0], dh_n[:, 0]
    if batch_first:
        return (np.ascontiguousarray(x.transpose(1, 0, 2)), h0,
                np.ascontiguousarray(dy.transpose(1, 0, 2)), dh_n)
    return x, h0, dy, dh_n


@pytest.mark.parametrize("call", CALLS)
def test_inputs_are_never_modified(backend, dtype, setup, call):
    rnn, *arrays = setup
    batch_first, unbatched, lengths = CALLS[call]
    x, h0, dy, dh_n = call_arrays(*arrays, batch_first, unbatched)
    lengths = None if lengths is None else np.array(lengths)
    given = [x, h0, dy, dh_n, *rnn.params.values()] + ([] if lengths is None else [lengths])
    before = [a.copy() for a in given]
    run(rnn.params, x, h0, lengths, dy, dh_n, backend, batch_first=batch_first)
    for a, b in zip(given, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call", CALLS)
def test_outputs_do_not_alias_inputs_or_each_other(backend, dtype, setup, call):
    rnn, *arrays = setup
    batch_first, unbatched, lengths = CALLS[call]
    x, h0, dy, dh_n = call_arrays(*arrays, batch_first, unbatched)
    outputs = run(rnn.params, x, h0, lengths, dy, dh_n, backend, batch_first=batch_first)
    for i, out in enumerate(outputs):
        for a in [x, h0, dy, dh_n, *rnn.params.values(), *outputs[i + 1:]]:
            assert not np.shares_memory(out, a)


def test_class_inputs_are_never_modified(backend, dtype, setup):
    rnn, x, h0, dy, dh_n = setup
    rnn.backend = backend
    params_before = rnn.state_dict()
    given = [x, h0, dy, dh_n]
    before = [a.copy() for a in given]
    rnn(x, h0, [8, 2, 5])
    rnn.backward(dy, dh_n)
    for a, b in zip(given, before, strict=True):
        np.testing.assert_array_equal(a, b)
    for key, value in rnn.params.items():
        np.testing.assert_array_equal(value, params_before[key])


def test_unidirectional_output_is_independent_of_the_record(backend, dtype, rng):
    rnn = rnncore.RNN(3, 4, dtype=dtype, seed=0, backend=backend)
    x = rng.standard_normal((5, 2, 3)).astype(dtype)
    dy = rng.standard_normal((5, 2, 4)).astype(dtype)
    y, _ = rnn(x)
    dx_before, _ = rnn.backward(dy)
    y[...] = 1e6                                 # the caller owns y
    dx_after, _ = rnn.backward(dy)
    np.testing.assert_array_equal(dx_before, dx_after)


def test_zero_steps_gives_empty_output_and_h_n_equal_h0(backend, dtype, setup):
    rnn, _, h0, _, dh_n = setup
    x = np.zeros((0, 3, 5), dtype)
    y, h_n, record = F.forward(x, rnn.params, h0, backend=backend)
    assert y.shape == (0, 3, 12) and y.dtype == dtype
    np.testing.assert_array_equal(h_n, h0)
    assert not np.shares_memory(h_n, h0)
    dx, dh0, grads = F.backward(record, np.zeros((0, 3, 12), dtype), dh_n)
    assert dx.shape == (0, 3, 5) and dx.dtype == dtype
    np.testing.assert_array_equal(dh0, dh_n)
    assert not np.shares_memory(dh0, dh_n)
    assert list(grads) == list(rnn.params)
    assert all((g == 0).all() for g in grads.values())


def test_zero_steps_with_batch_first_and_unbatched(backend, dtype, setup):
    rnn, _, h0, _, dh_n = setup
    y, h_n, record = F.forward(np.zeros((3, 0, 5), dtype), rnn.params, h0,
                               batch_first=True, backend=backend)
    assert y.shape == (3, 0, 12)
    np.testing.assert_array_equal(h_n, h0)
    dx, dh0, _ = F.backward(record, np.zeros((3, 0, 12), dtype), dh_n)
    assert dx.shape == (3, 0, 5)
    np.testing.assert_array_equal(dh0, dh_n)
    y, h_n, record = F.forward(np.zeros((0, 5), dtype), rnn.params, h0[:, 0],
                               backend=backend)
    assert y.shape == (0, 12)
    np.testing.assert_array_equal(h_n, h0[:, 0])
    dx, dh0, _ = F.backward(record, np.zeros((0, 12), dtype), dh_n[:, 0])
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dh0, dh_n[:, 0])


def test_empty_batch(backend, dtype, setup):
    rnn = setup[0]
    x = np.zeros((4, 0, 5), dtype)
    y, h_n, record = F.forward(x, rnn.params, backend=backend)
    assert y.shape == (4, 0, 12) and h_n.shape == (4, 0, 6)
    dx, dh0, grads = F.backward(record, np.zeros_like(y))
    assert dx.shape == (4, 0, 5) and dh0.shape == (4, 0, 6)
    assert all((g == 0).all() for g in grads.values())


def test_padded_steps_give_zero_output_and_zero_input_gradient(backend, dtype, setup):
    rnn, x, h0, dy, dh_n = setup
    lengths = np.array([8, 2, 5])
    y, h_n, dx, *_ = run(rnn.params, x, h0, lengths, dy, dh_n, backend)
    for b, n in enumerate(lengths):
        assert (y[n:, b] == 0).all()
        assert (dx[n:, b] == 0).all()
        assert (y[:n, b] != 0).all()


def test_padded_values_do_not_matter(backend, dtype, setup):
    rnn, x, h0, dy, dh_n = setup
    lengths = np.array([8, 2, 5])
    want = run(rnn.params, x, h0, lengths, dy, dh_n, backend)
    x2, dy2 = x.copy(), dy.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = np.nan
        dy2[n:, b] = 1e30
    got = run(rnn.params, x2, h0, lengths, dy2, dh_n, backend)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_steps_after_the_longest_sequence_are_not_run(backend, dtype, rng, cell,
                                                      batch_first):
    """They are padding in every row: the kernels run the longest sequence's steps, the
    output and ∂x have the caller's steps, zero after it, and dy there is ignored;
    the same results as the call on the steps up to the longest."""
    T, B, K, H, longest = 8, 3, 5, 6, 5
    shapes = F.param_shapes(K, H, 2, bidirectional=True, cell=cell)
    params = {k: (rng.standard_normal(s) / 3).astype(dtype) for k, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    lengths = np.array([longest, 2, 4])
    time = 1 if batch_first else 0

    def call(x, dy):
        if batch_first:
            x, dy = x.transpose(1, 0, 2), dy.transpose(1, 0, 2)
        y, h_n, record = F.forward(x, params, lengths=lengths, cell=cell,
                                   batch_first=batch_first, backend=backend)
        dx, dh0, grads = F.backward(record, dy)
        return record, [y, dx], [h_n, dh0, *grads.values()]

    record, (y, dx), rest = call(x, dy)
    assert (record.T, record.full_T) == (longest, T)
    assert y.shape[time] == dx.shape[time] == T
    assert (y.take(range(longest, T), time) == 0).all()
    assert (dx.take(range(longest, T), time) == 0).all()
    _, (y_short, dx_short), rest_short = call(x[:longest], dy[:longest])
    np.testing.assert_array_equal(y.take(range(longest), time), y_short)
    np.testing.assert_array_equal(dx.take(range(longest), time), dx_short)
    for got, want in zip(rest, rest_short, strict=True):
        for g, w in zip(*(a if isinstance(a, tuple) else (a,) for a in (got, want)),
                        strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("B", [3, 20], ids=["rows-sliced", "through-the-mask"])
def test_padded_steps_are_zeroed_whichever_way(rng, B):
    """Few padded rows are zeroed a slice each, many through the (T, B) mask: the same
    array either way, NaN in the padded steps included."""
    from rnncore._inputs import padded_mask, zero_padded
    T = 9
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    a = rng.standard_normal((T, B, 4))
    a[np.arange(T)[:, None] >= lengths] = np.nan
    want = a.copy()
    padded = padded_mask(lengths, T)
    want[padded] = 0
    zero_padded(a, lengths, padded)
    np.testing.assert_array_equal(a, want)


def test_reverse_direction_starts_at_each_length(backend, dtype, setup):
    rnn, x, h0, _, _ = setup
    lengths = np.array([8, 2, 5])
    y, _, _ = F.forward(x, rnn.params, h0, lengths, backend=backend)
    for b, n in enumerate(lengths):   # sequence b alone, unpadded, gives the same
        yb, _, _ = F.forward(x[:n, b:b + 1], rnn.params, h0[:, b:b + 1], backend=backend)
        assert_close(y[:n, b:b + 1], yb, RTOL[dtype] / 100)
