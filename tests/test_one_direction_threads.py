"""One direction on several threads: ``set_num_threads(n)`` splits a layer-direction's
work (batch rows of the recurrences, steps of the input projection and of ∂x, parts of
the weight gradients) and the results keep the bits of one thread.

The split runs only where the kernels compute every row of every product alone (the
packed kernels of AVX2 and AVX-512); the tests check that it did run, so that a bitwise
match cannot come from a call that never split. Every cell splits the same way: the
Elman RNN, LSTM (with and without a projection) and GRU.
"""
import numpy as np
import pytest

import rnncore
from rnncore import _parallel
from rnncore import functional as F

_kernels = pytest.importorskip("rnncore._kernels")
_short = pytest.importorskip("rnncore._short")

ISAS = [isa for isa in _kernels.supported_isas() if isa != "baseline"]


@pytest.fixture(params=ISAS)
def isa(request):
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(None)
    rnncore.set_num_threads(None)


@pytest.fixture(params=["workers", "openmp"], ids=["rnncore's workers", "OpenMP pool"])
def split_calls(request, monkeypatch):
    """Counts the thread-split sections that ran, by how many parts they had; with
    the per-section thresholds lowered, so that small cases split every section. The
    parts run on rnncore's own workers, or on the pool of a loaded OpenMP runtime
    (torch's, as a process that imported torch runs them)."""
    if request.param == "openmp":
        request.getfixturevalue("gnu_openmp")
    else:
        monkeypatch.setattr(_parallel, "_join_openmp", False)
    monkeypatch.setattr(_parallel, "_MIN_PART_WORK", 1)
    monkeypatch.setattr(_parallel, "_MIN_PART_ROWS", 1)
    counts = {}
    run_parts = _parallel._run_parts

    def counting(calls):
        counts[len(calls)] = counts.get(len(calls), 0) + 1
        return run_parts(calls)

    monkeypatch.setattr(_parallel, "_run_parts", counting)
    before = dict(_parallel.dispatched)
    yield counts
    if any(parts > 1 for parts in counts):          # they ran where the param says
        assert _parallel.dispatched[request.param] > before[request.param]


# (cell, proj_size)
CELLS = {"rnn": ("rnn", 0), "lstm": ("lstm", 0), "lstm-proj": ("lstm", 16),
         "gru": ("gru", 0)}


@pytest.fixture(params=list(CELLS))
def cell(request):
    return CELLS[request.param]


def _states(s):
    return list(s) if isinstance(s, tuple) else [s]


def _run(cell, params, x, dy, lengths, threads):
    rnncore.set_num_threads(threads)
    y, h_n, record = F.forward(x, params, lengths=lengths, cell=cell, backend="cython")
    dx, dh0, grads = F.backward(record, dy)
    return [y, *_states(h_n), dx, *_states(dh0), *grads.values()]


def _case(dtype, bidirectional, padded, T=30, B=13, K=40, H=72, layers=2,
          cell=("rnn", 0)):
    rng = np.random.default_rng(5)
    name, proj = cell[0], min(cell[1], H // 2)
    shapes = F.param_shapes(K, H, layers, bias=True, bidirectional=bidirectional,
                            cell=name, proj_size=proj)
    params = {k: (rng.standard_normal(s) / np.sqrt(H)).astype(dtype)
              for k, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    D = 2 if bidirectional else 1
    dy = rng.standard_normal((T, B, D * (proj or H))).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if padded else None
    return name, params, x, dy, lengths


@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_direction_split_over_threads_keeps_the_bits_of_one_thread(
        isa, split_calls, cell, dtype, threads, padded):
    case = _case(dtype, bidirectional=False, padded=padded, cell=cell)
    want = _run(*case, threads=1)
    assert not split_calls
    got = _run(*case, threads=threads)
    # per layer: the forward in one dispatch, the backward with its ∂x in one
    assert sum(n for parts, n in split_calls.items() if parts > 1) == 2 * 2
    assert threads in split_calls                    # some section ran on every thread
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_the_output_of_a_split_forward_is_the_callers_own(isa, split_calls, cell):
    """The threads copy the output out of the states they wrote; writing into it
    afterwards leaves what backward computes from those states unchanged."""
    name, params, x, dy, _ = _case(np.float32, bidirectional=False, padded=False,
                                   cell=cell)
    rnncore.set_num_threads(2)

    def gradients(overwrite):
        y, _, record = F.forward(x, params, cell=name, backend="cython")
        if overwrite:
            y[...] = 7.0
        dx, dh0, grads = F.backward(record, dy)
        return [dx, *_states(dh0), *grads.values()]

    want = gradients(overwrite=False)
    got = gradients(overwrite=True)
    assert split_calls.get(2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bidirectional_layers_split_over_four_threads_keep_the_bits_of_one_thread(
        isa, split_calls, cell, dtype):
    case = _case(dtype, bidirectional=True, padded=True, cell=cell)
    want = _run(*case, threads=1)
    got = _run(*case, threads=4)
    # per layer: each direction's forward and backward in one dispatch each, then ∂x
    assert sum(n for parts, n in split_calls.items() if parts > 1) >= 2 * (2 * 2 + 1)
    assert 4 in split_calls
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_two_threads_run_the_directions_of_a_bidirectional_layer_at_once(isa, split_calls,
                                                                         cell):
    case = _case(np.float32, bidirectional=True, padded=False, cell=cell)
    want = _run(*case, threads=1)
    got = _run(*case, threads=2)
    assert split_calls.get(2, 0) >= 2 * 2            # both layers' forward and backward
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_calls_below_the_work_threshold_are_not_split(isa, split_calls, cell):
    case = _case(np.float32, bidirectional=False, padded=False, T=3, B=2, K=4, H=8,
                 layers=1, cell=cell)
    _run(*case, threads=2)
    assert not split_calls


def test_a_layer_none_of_whose_sections_would_split_keeps_the_one_thread_short_path(
        isa, monkeypatch):
    # the grid's tiny case: 6·10⁵ multiply-adds per layer, each section under
    # _MIN_PART_WORK; on two threads it must cost what it costs on one
    rnncore.set_num_threads(2)
    T, B, K, H = 100, 1, 32, 64
    assert T * B * (K + H) * H < 2 * _parallel._MIN_PART_WORK
    short = []                           # the calls the compiled short path took
    compiled = _short.forward

    def counting(*args):
        done = compiled(*args)
        if done is not None:
            short.append(1)
        return done
    monkeypatch.setattr(_short, "forward", counting)
    rng = np.random.default_rng(0)
    params = {key: rng.uniform(-0.5, 0.5, shape).astype(np.float32)
              for key, shape in F.param_shapes(K, H).items()}
    F.forward(rng.standard_normal((T, B, K)).astype(np.float32), params)
    assert short == [1]


def test_a_recurrence_is_split_into_parts_of_at_least_a_tile_of_rows(monkeypatch):
    monkeypatch.setattr(_parallel, "_MIN_PART_WORK", 1)
    assert _parallel._recurrence_parts(4, T=100, B=4, row_work=32 * 32) == 1
    assert _parallel._recurrence_parts(4, T=100, B=13, row_work=32 * 32) == 2
    assert _parallel._recurrence_parts(4, T=100, B=64, row_work=32 * 32) == 4


def test_a_section_is_split_only_into_parts_of_enough_work():
    assert _parallel._section_parts(2, _parallel._MIN_PART_WORK - 1) == 1
    assert _parallel._section_parts(2, 2 * _parallel._MIN_PART_WORK) == 2
    assert _parallel._section_parts(8, 3 * _parallel._MIN_PART_WORK) == 3


def test_the_blas_for_the_whole_sequence_products_leaves_one_direction_unsplit(
        isa, split_calls, cell):
    case = _case(np.float32, bidirectional=False, padded=False, cell=cell)
    _kernels.set_whole_sequence_gemm("blas")       # splits would change sums' order
    try:
        _run(*case, threads=2)
    finally:
        _kernels.set_whole_sequence_gemm(None)
    assert not split_calls


@pytest.mark.parametrize("failing", [0, 1], ids=["this-thread's-part", "a-worker's-part"])
def test_an_error_in_one_part_waits_for_the_others_then_raises(failing):
    finished = []

    def fails():
        raise ValueError(f"part {failing}")

    def slow():
        import time
        time.sleep(0.05)
        finished.append(True)

    calls = [slow, slow]
    calls[failing] = fails
    rnncore.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match=f"part {failing}"):
            _parallel._run_parts(calls)
        # the worker is handed back ready: the next section runs and returns in order
        assert _parallel._run_parts([lambda: 1, lambda: 2]) == [1, 2]
    finally:
        rnncore.set_num_threads(None)
    assert finished == [True]


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_split_call_whose_first_phase_part_raises_raises_and_returns(
        split_calls, monkeypatch, direction):
    """A worker's part that fails before the barrier (its steps of the projection, its
    rows of BPTT) lets the other parts go, which would otherwise wait for it for ever:
    the call raises its error."""
    import threading

    from rnncore import _cells
    name = "project" if direction == "forward" else "backward_rows"
    original = getattr(_cells._Elman, name)

    def worker_part_fails(self, *args):
        if args[-1][0] > 0:              # a range not starting at 0: a worker's part
            raise ValueError("the worker's part failed")
        return original(self, *args)

    monkeypatch.setattr(_cells._Elman, name, worker_part_fails)
    _, params, x, dy, _ = _case(np.float32, bidirectional=False, padded=False)
    raised = []

    def call():
        rnncore.set_num_threads(2)
        try:
            _, _, record = F.forward(x, params, backend="cython")
            F.backward(record, dy)
        except ValueError as error:
            raised.append(str(error))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(30)
    rnncore.set_num_threads(None)
    assert not thread.is_alive(), "the call still waits for the part that failed"
    assert raised == ["the worker's part failed"]


def test_a_worker_keeps_nothing_of_the_parts_it_ran():
    """Once a section has returned, what its parts were given (a record's states, say)
    lives only as long as the caller keeps it."""
    import functools
    import weakref

    class Arrays:
        pass

    held = Arrays()
    gone = weakref.ref(held)
    _parallel._run_parts([functools.partial(id, held), functools.partial(id, held)])
    del held
    assert gone() is None
