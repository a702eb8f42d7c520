"""Streaming inference (SPEC.md, "Streaming"): ``rnn.stream()`` carries the state from
call to call, and any cutting of a sequence into ``step`` and ``run`` calls gives the
outputs and final state of one ``forward`` over the whole sequence."""
import threading

import numpy as np
import pytest

import rnncore
from conftest import RTOL, assert_close

_kernels = pytest.importorskip("rnncore._kernels")

# (class, options): every cell the stream serves, LSTM with and without a projection
MODELS = {
    "rnn-tanh": (rnncore.RNN, {}),
    "rnn-relu": (rnncore.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnncore.LSTM, {}),
    "lstm-proj": (rnncore.LSTM, {"proj_size": 3}),
    "gru": (rnncore.GRU, {}),
}
K, H = 4, 5
F32 = RTOL[np.dtype(np.float32)]


@pytest.fixture(params=list(MODELS))
def model(request):
    """The class and options of each cell's network."""
    return MODELS[request.param]


def make(model, dtype=np.float32, num_layers=2, **options):
    cls, cell_options = model
    return cls(K, H, num_layers=num_layers, dtype=dtype, seed=3, **cell_options, **options)


def inputs(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def states(h):
    """forward's h_n and a stream's state as a tuple of arrays (LSTM's pair, or h)."""
    return h if isinstance(h, tuple) else (h,)


def through_stream(stream, x, cuts):
    """The outputs of ``x`` (T, B, K) fed through ``stream`` in pieces ending at
    ``cuts``: one step where a piece is one step long, else one run."""
    outputs, start = [], 0
    for stop in [*cuts, len(x)]:
        if stop - start == 1:
            outputs.append(stream.step(x[start])[None])
        else:
            outputs.append(stream.run(x[start:stop]))
        start = stop
    return np.concatenate(outputs)


# -- the oracle: one forward over the whole sequence -------------------------------------

@pytest.mark.parametrize("cuts", [[], [1], [3, 4, 5, 9], list(range(1, 13))],
                         ids=["one-run", "step-then-run", "mixed", "all-steps"])
def test_chunked_calls_equal_one_forward(model, backend, dtype, tol, rng, cuts):
    rnn = make(model, dtype, backend=backend)
    x = inputs(rng, (13, 3, K), dtype)
    y, h_n = rnn.forward(x)
    stream = rnn.stream(batch_size=3)
    assert_close(through_stream(stream, x, cuts), y, tol, "outputs")
    for got, want in zip(states(stream.state), states(h_n), strict=True):
        assert_close(got, want, tol, "final state")


@pytest.mark.parametrize("input_size", [4, 300], ids=["K=4", "K=300"])
def test_stream_is_bit_for_bit_the_cython_forward(model, dtype, rng, input_size):
    """With the packed kernels (the default policy on AVX2 and AVX-512) each row of a
    product is one chain of FMAs whatever rows it runs with, so a stream is exactly the
    forward; K = 300 crosses the projection's depth chunk of 256."""
    if _kernels.whole_sequence_gemm() != "rnncore":
        pytest.skip("the policy computes the products on the BLAS")
    cls, options = model
    rnn = cls(input_size, H, num_layers=3, dtype=dtype, seed=3, backend="cython",
              **options)
    x = inputs(rng, (11, 2, input_size), dtype)
    y, h_n = rnn.forward(x)
    stream = rnn.stream(batch_size=2)
    assert np.array_equal(through_stream(stream, x, [2, 3, 7]), y)
    for got, want in zip(states(stream.state), states(h_n), strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("cell, hidden", [("rnn", 768), ("lstm", 384)])
def test_one_row_with_a_step_matrix_beyond_the_cache_streams_bit_for_bit(cell, hidden,
                                                                         rng):
    """A batch of one row whose step matrix is larger than the packed kernels' limit
    (2.25 MiB here) runs its per-step product on gemv, in the stream as in the forward."""
    if _kernels.whole_sequence_gemm() != "rnncore":
        pytest.skip("the policy computes the products on the BLAS")
    cls = {"rnn": rnncore.RNN, "lstm": rnncore.LSTM}[cell]
    rnn = cls(8, hidden, num_layers=1, seed=3, backend="cython")
    x = inputs(rng, (13, 1, 8), np.float32)
    y, h_n = rnn.forward(x)
    stream = rnn.stream(batch_size=1)
    assert np.array_equal(through_stream(stream, x, [1, 5]), y)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_stream_runs_on_the_isa_in_force_when_opened(model, rng, isa):
    if isa not in _kernels.supported_isas():
        pytest.skip(f"this CPU cannot run {isa}")
    rnn = make(model, backend="numpy")
    x = inputs(rng, (9, 2, K), np.float32)
    before = _kernels.isa()
    _kernels.set_isa(isa)
    try:
        stream = rnn.stream(batch_size=2)
    finally:
        _kernels.set_isa(before)
    assert stream.isa == isa
    assert_close(through_stream(stream, x, [1, 4]), rnn.forward(x)[0], F32, "outputs")


def test_initial_state_is_h0(model, dtype, tol, rng):
    rnn = make(model, dtype, backend="numpy")
    x = inputs(rng, (6, 2, K), dtype)
    shapes = [(2, 2, rnn.proj_size or H), (2, 2, H)][:2 if rnn._cell == "lstm" else 1]
    h0 = [inputs(rng, s, dtype) for s in shapes]
    h0 = tuple(h0) if rnn._cell == "lstm" else h0[0]
    y, _ = rnn.forward(x, h0)
    assert_close(rnn.stream(batch_size=2, h0=h0).run(x), y, tol, "outputs")


def test_unbatched_input_gives_unbatched_output(model, dtype, tol, rng):
    rnn = make(model, dtype, backend="numpy")
    x = inputs(rng, (7, K), dtype)                  # (T, K): forward's unbatched form
    y, _ = rnn.forward(x)
    stream = rnn.stream()
    first = stream.step(x[0])
    rest = stream.run(x[1:])
    assert first.shape == y[0].shape and rest.shape == y[1:].shape
    assert_close(np.concatenate([first[None], rest]), y, tol, "outputs")


def test_unbatched_h0_when_batch_size_is_one(dtype, tol, rng):
    rnn = rnncore.GRU(K, H, num_layers=2, dtype=dtype, seed=1, backend="numpy")
    x = inputs(rng, (5, K), dtype)
    h0 = inputs(rng, (2, H), dtype)                 # (L, H)
    assert_close(rnn.stream(h0=h0).run(x), rnn.forward(x, h0)[0], tol, "outputs")


def test_run_takes_batch_first_chunks_of_a_batch_first_model(model, dtype, tol, rng):
    rnn = make(model, dtype, backend="numpy", batch_first=True)
    x = inputs(rng, (3, 8, K), dtype)               # (B, T, K)
    y, _ = rnn.forward(x)
    stream = rnn.stream(batch_size=3)
    got = np.concatenate([stream.run(x[:, :5]), stream.step(x[:, 5])[:, None],
                          stream.run(x[:, 6:])], axis=1)
    assert_close(got, y, tol, "outputs")


def test_empty_chunk_returns_no_steps_and_keeps_the_state(model, rng):
    rnn = make(model, backend="numpy")
    stream = rnn.stream(batch_size=2)
    stream.run(inputs(rng, (3, 2, K), np.float32))
    before = states(stream.state)
    out = stream.run(np.empty((0, 2, K), np.float32))
    assert out.shape == (0, 2, rnn.proj_size or H)
    for got, want in zip(states(stream.state), before, strict=True):
        assert np.array_equal(got, want)


# -- reset -------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [[1, 3], np.array([False, True, False, True]), 3],
                         ids=["list", "mask", "int"])
def test_reset_rows_start_those_sequences_afresh(model, dtype, tol, rng, index):
    rnn = make(model, dtype, backend="numpy")
    first, second = inputs(rng, (4, 4, K), dtype), inputs(rng, (5, 4, K), dtype)
    stream = rnn.stream(batch_size=4)
    stream.run(first)
    stream.reset(index)
    got = stream.run(second)
    fresh = np.zeros(4, bool)
    fresh[index] = True
    carried, _ = rnn.forward(np.concatenate([first, second]))
    restarted, _ = rnn.forward(second)
    assert_close(got[:, fresh], restarted[:, fresh], tol, "reset rows")
    assert_close(got[:, ~fresh], carried[4:, ~fresh], tol, "other rows")


def test_reset_without_index_zeroes_every_row(model, rng):
    rnn = make(model, backend="numpy")
    stream = rnn.stream(batch_size=2)
    stream.run(inputs(rng, (3, 2, K), np.float32))
    stream.reset()
    for s in states(stream.state):
        assert not s.any()
    x = inputs(rng, (4, 2, K), np.float32)
    assert_close(stream.run(x), rnn.forward(x)[0], F32, "after reset")


def test_reset_with_an_empty_list_zeroes_no_row(model, rng):
    rnn = make(model, backend="numpy")
    stream = rnn.stream(batch_size=2)
    stream.run(inputs(rng, (3, 2, K), np.float32))
    before = [s.copy() for s in states(stream.state)]
    stream.reset([])
    for s, kept in zip(states(stream.state), before, strict=True):
        np.testing.assert_array_equal(s, kept)
        assert s.any()


# -- the snapshot and copies ---------------------------------------------------------------

def test_later_changes_to_params_do_not_reach_an_open_stream(model, rng):
    rnn = make(model, backend="numpy")
    x = inputs(rng, (6, 2, K), np.float32)
    want, _ = rnn.forward(x)
    stream = rnn.stream(batch_size=2)
    first = stream.step(x[0])
    for p in rnn.params.values():
        p *= -2.0                                   # in place, as an optimiser step
    rnn.load_state_dict({k: v + 1 for k, v in rnn.state_dict().items()})
    got = np.concatenate([first[None], stream.run(x[1:])])
    assert_close(got, want, F32, "outputs")


def test_state_is_a_copy(model, rng):
    rnn = make(model, backend="numpy")
    stream = rnn.stream(batch_size=2)
    stream.run(inputs(rng, (3, 2, K), np.float32))
    before = [s.copy() for s in states(stream.state)]
    for s in states(stream.state):
        s[...] = 7
    for got, want in zip(states(stream.state), before, strict=True):
        assert np.array_equal(got, want)


def test_inputs_are_never_modified_and_strided_inputs_work(model, dtype, tol, rng):
    rnn = make(model, dtype, backend="numpy")
    wide = inputs(rng, (6, 2, 2 * K), dtype)
    x = wide[:, :, ::2]                             # not contiguous
    kept = wide.copy()
    stream = rnn.stream(batch_size=2)
    got = np.concatenate([stream.step(x[0])[None], stream.run(x[1:])])
    assert np.array_equal(wide, kept)
    assert_close(got, rnn.forward(np.ascontiguousarray(x))[0], tol, "outputs")


def test_list_input_is_read_as_an_array(rng):
    rnn = rnncore.RNN(K, H, seed=0, dtype=np.float64, backend="numpy")
    x = inputs(rng, (1, K), np.float64)
    assert np.array_equal(rnn.stream().step(x.tolist()), rnn.stream().step(x))


def test_streams_in_two_threads_give_their_own_outputs(rng):
    rnn = rnncore.LSTM(K, H, num_layers=2, seed=0, backend="numpy")
    xs = [inputs(rng, (200, 1, K), np.float32) for _ in range(2)]
    outs = [None, None]

    def serve(i):
        stream = rnn.stream()
        outs[i] = np.stack([stream.step(x_t) for x_t in xs[i]])

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, out in zip(xs, outs, strict=True):
        assert_close(out, rnn.forward(x)[0], F32, "outputs")


# -- bad input ----------------------------------------------------------------------------

def test_bidirectional_models_do_not_stream(model):
    rnn = make(model, backend="numpy", bidirectional=True)
    with pytest.raises(ValueError, match="unidirectional.*bidirectional=True"):
        rnn.stream()


@pytest.mark.parametrize("batch_size, error, message", [
    (0, ValueError, r"batch_size must be >= 1; got 0"),
    (1.5, TypeError, r"batch_size must be an integer; got float"),
    (True, TypeError, r"batch_size must be an integer; got bool"),
])
def test_bad_batch_size_is_named(batch_size, error, message):
    with pytest.raises(error, match=message):
        rnncore.RNN(K, H, seed=0).stream(batch_size=batch_size)


@pytest.mark.parametrize("call, error, message", [
    (lambda s: s.step(np.zeros((1, K), np.float32)), ValueError,
     r"x_t must have shape \(2, 4\) for batch_size=2, input_size=4; got \(1, 4\)"),
    (lambda s: s.step(np.zeros((2, K + 1), np.float32)), ValueError,
     r"x_t must have shape \(2, 4\).*got \(2, 5\)"),
    (lambda s: s.step(np.zeros(K, np.float32)), ValueError,
     r"x_t must have shape \(2, 4\).*got \(4,\)"),
    (lambda s: s.step(np.zeros((2, K), np.float64)), TypeError,
     r"x_t has dtype float64 but the stream's weights are float32"),
    (lambda s: s.step(np.zeros((2, K), np.int64)), TypeError,
     r"x_t must hold floats \(float32, the weights' dtype\); got dtype int64"),
    (lambda s: s.run(np.zeros((3, 1, K), np.float32)), ValueError,
     r"x_chunk must have shape \(T', B, K\) = \(T', 2, 4\) for batch_size=2, "
     r"input_size=4; got \(3, 1, 4\)"),
    (lambda s: s.run(np.zeros((3, K), np.float32)), ValueError,
     r"x_chunk must have shape .*got \(3, 4\)"),
    (lambda s: s.run(np.zeros((3, 2, K), np.float64)), TypeError,
     r"x_chunk has dtype float64 but the stream's weights are float32"),
    (lambda s: s.reset(2), ValueError, r"index must lie in \[0, 2\) for batch_size=2; got 2"),
    (lambda s: s.reset([0, -1]), ValueError, r"index must lie in \[0, 2\).*got -1"),
    (lambda s: s.reset(1.0), TypeError, r"index must be None, an int, a sequence of ints"),
    (lambda s: s.reset(True), TypeError, r"index must be None, an int"),
    (lambda s: s.reset(np.array([True, False, True])), ValueError,
     r"a bool index must have shape \(2,\) for batch_size=2; got \(3,\)"),
], ids=["x_t-rows", "x_t-features", "x_t-unbatched-for-B=2", "x_t-dtype", "x_t-ints",
        "x_chunk-rows", "x_chunk-unbatched-for-B=2", "x_chunk-dtype", "index-high",
        "index-negative", "index-float", "index-bool", "index-mask-shape"])
def test_bad_call_is_named(call, error, message):
    stream = rnncore.RNN(K, H, seed=0).stream(batch_size=2)
    before = stream.state
    with pytest.raises(error, match=message):
        call(stream)
    assert np.array_equal(stream.state, before)      # nothing ran


@pytest.mark.parametrize("cls, h0, error, message", [
    (rnncore.RNN, np.zeros((1, 3, H), np.float32), ValueError,
     r"h0 must have shape \(1, 2, 5\) for num_layers=1, bidirectional=False, batch=2, "
     r"hidden_size=5; got \(1, 3, 5\)"),
    (rnncore.RNN, np.zeros((1, 2, H), np.float64), TypeError,
     r"h0 has dtype float64 but the weights are float32"),
    (rnncore.LSTM, np.zeros((1, 2, H), np.float32), TypeError,
     r"h0 of an LSTM must be a pair \(h0, c0\)"),
])
def test_bad_h0_is_named(cls, h0, error, message):
    with pytest.raises(error, match=message):
        cls(K, H, seed=0).stream(batch_size=2, h0=h0)
