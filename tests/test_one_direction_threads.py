"""One direction on several threads: ``set_num_threads(n)`` splits a layer-direction's
work (batch rows of the recurrences, steps of the input projection and of ∂x, parts of
the weight gradients) and the results keep the bits of one thread.

The split runs only where the kernels compute every row of every product alone (the
packed kernels of AVX2 and AVX-512); the tests check that it did run, so that a bitwise
match cannot come from a call that never split. Every cell splits the same way: the
Elman RNN, LSTM (with and without a projection) and GRU.
"""
import functools

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
    run_parts, run_sections = _parallel._run_parts, _parallel._run_sections

    def count(parts):
        counts[parts] = counts.get(parts, 0) + 1

    def counting(calls):
        count(len(calls))
        return run_parts(calls)

    def counting_sections(first, second):
        times = run_sections(first, second)
        if times is not None:
            count(len(times))
        return times

    monkeypatch.setattr(_parallel, "_run_parts", counting)
    monkeypatch.setattr(_parallel, "_run_sections", counting_sections)
    before = dict(_parallel.dispatched)
    yield counts
    if any(parts > 1 for parts in counts):          # they ran where the param says
        assert _parallel.dispatched[request.param] > before[request.param]


@pytest.fixture(params=["equal", "unequal"], ids=["equal threads", "unequal threads"])
def speeds(request, monkeypatch):
    """The threads' speeds the sections are cut by: none measured (equal parts), or a
    split's threads measured at unequal speeds; held there (nothing is learnt), so
    that the rows, steps and weight gradients are cut into unequal parts. Yields
    the param and the sizes of the parts of every cut made (rows or steps, by
    ``_by_speed``; the weight gradients' shares, by ``_weight_parts``)."""
    sizes = []
    monkeypatch.setattr(_parallel, "_SPEED_STEP", 0.0)
    if request.param == "unequal":
        _parallel._speeds.update({2: (1.5, 0.5), 3: (1.6, 0.9, 0.5),
                                  4: (2.0, 1.0, 0.6, 0.4)})
    by_speed, weight_parts = _parallel._by_speed, _parallel._weight_parts

    def cut(*args):
        ranges = by_speed(*args)
        sizes.append([stop - start for start, stop in ranges])
        return ranges

    def parts(n):
        got = weight_parts(n)
        sizes.append([p[1] - p[0] if len(p) == 3 else 1 for p in got])
        return got

    monkeypatch.setattr(_parallel, "_by_speed", cut)
    monkeypatch.setattr(_parallel, "_weight_parts", parts)
    yield request.param, sizes


def _unequal_cuts(sizes) -> int:
    """How many cuts had parts of unequal sizes (beyond the one unit an equal cut's
    rounding leaves)."""
    return sum(max(s) - min(s) > 1 for s in sizes)


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
        isa, split_calls, speeds, cell, dtype, threads, padded):
    """Whatever the cut: equal parts, or parts in proportion to unequal thread speeds
    (every section: rows of the recurrences, steps of the projection and of ∂x,
    shares of the weight gradients)."""
    case = _case(dtype, bidirectional=False, padded=padded, cell=cell)
    want = _run(*case, threads=1)
    assert not split_calls
    got = _run(*case, threads=threads)
    # per layer: the forward in one dispatch, the backward with its ∂x in one
    assert sum(n for parts, n in split_calls.items() if parts > 1) == 2 * 2
    assert threads in split_calls                    # some section ran on every thread
    kind, sizes = speeds
    assert sizes and _unequal_cuts(sizes) == (len(sizes) if kind == "unequal" else 0)
    for g, w in zip(got, want, strict=True):
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
    for g, w in zip(got, want, strict=True):
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
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_two_threads_run_the_directions_of_a_bidirectional_layer_at_once(isa, split_calls,
                                                                         cell):
    case = _case(np.float32, bidirectional=True, padded=False, cell=cell)
    want = _run(*case, threads=1)
    got = _run(*case, threads=2)
    assert split_calls.get(2, 0) >= 2 * 2            # both layers' forward and backward
    for g, w in zip(got, want, strict=True):
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
    name = "project" if direction == "forward" else "backward_rows_part"
    original = getattr(_cells._Elman, name)

    def worker_part_fails(self, *args, **kwargs):
        part = original(self, *args, **kwargs)
        if args[-1][0] > 0:              # a range not starting at 0: a worker's part

            def fails():
                raise ValueError("the worker's part failed")
            return fails
        return part

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


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_split_call_whose_part_cannot_allocate_raises_memory_error_and_returns(
        split_calls, direction):
    """A part run without the GIL that cannot allocate its buffers (the first buffer
    any part asks for fails) releases the other threads from the barrier; the call
    raises MemoryError, and the next call runs as usual."""
    import threading
    _, params, x, dy, _ = _case(np.float32, bidirectional=False, padded=False)
    raised = []

    def call():
        rnncore.set_num_threads(2)
        try:
            if direction == "forward":
                _kernels._fail_next_blocks(1)
            _, _, record = F.forward(x, params, backend="cython")
            _kernels._fail_next_blocks(1)
            F.backward(record, dy)
        except MemoryError as error:
            raised.append(str(error))
        finally:
            _kernels._fail_next_blocks(0)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the call still waits for the part that failed"
    assert raised == ["cannot allocate a kernel's buffers"]
    want = _run(*_case(np.float32, False, False), threads=1)
    got = _run(*_case(np.float32, False, False), threads=2)
    rnncore.set_num_threads(None)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


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


# The cut by the threads' measured speeds (docs/perf-notes.md §94).

def test_until_the_threads_differ_a_section_is_cut_equally():
    assert _parallel._by_speed(100, 2) == [(0, 50), (50, 100)]
    _parallel._speeds[2] = (1.06, 0.94)            # within _SPEED_SPREAD of each other
    assert _parallel._by_speed(100, 2) == [(0, 50), (50, 100)]
    assert _parallel._weight_parts(2) == [(0, 2), (1, 2)]


def test_a_section_is_cut_in_proportion_to_its_threads_speeds():
    _parallel._speeds[3] = (1.5, 1.0, 0.5)
    assert _parallel._by_speed(120, 3) == [(0, 60), (60, 100), (100, 120)]
    den = _parallel._SHARE_DEN
    assert _parallel._weight_parts(3) == [(0, den // 2, den), (den // 2, den * 5 // 6, den),
                                          (den * 5 // 6, den, den)]


def test_a_slow_threads_part_keeps_the_least_rows_a_part_may_have():
    _parallel._speeds[2] = (1.9, 0.1)
    assert _parallel._by_speed(32, 2, 6) == [(0, 26), (26, 32)]
    assert _parallel._by_speed(32, 2) == [(0, 30), (30, 32)]
    assert _parallel._by_speed(10, 2, 6) == [(0, 5), (5, 10)]  # too few rows: equal


def test_a_reading_moves_a_threads_speed_a_tenth_of_the_way():
    _parallel._learn_speeds([(0, 50), (50, 100)], [0.010, 0.030])   # 3× slower
    # readings 1.5 and 0.5 (their mean 1), each speed 0.9·1 + 0.1·reading
    np.testing.assert_allclose(_parallel._speeds[2], (1.05, 0.95))


def test_a_reading_beyond_the_limit_counts_as_the_limit():
    _parallel._learn_speeds([(0, 50), (50, 100)], [0.001, 1.0])     # 1000× slower
    # readings 2·1000/1001 and 2/1001 of their mean, the second clamped to 1/2
    speeds = np.array([0.9 + 0.1 * 2000 / 1001, 0.9 + 0.1 * 0.5])
    np.testing.assert_allclose(_parallel._speeds[2], speeds / speeds.mean())


@pytest.mark.parametrize("seconds", [[5e-5, 9e-5], [0.0, 0.01]],
                         ids=["too short to read", "a part that did not run"])
def test_a_section_that_says_nothing_of_its_threads_speeds_is_not_read(seconds):
    _parallel._learn_speeds([(0, 50), (50, 100)], seconds)
    assert 2 not in _parallel._speeds


def test_the_thread_that_ran_slower_gets_the_smaller_part_of_the_next_calls(split_calls):
    """A real dispatch whose part 1 takes twice as long per unit as part 0 (each
    sleeps, releasing the GIL, for its range's length): after a few calls the ranges
    follow, on rnncore's workers and on the OpenMP pool alike."""
    import time

    def sleeper(per_unit, ranges, i):
        start, stop = ranges[i]
        time.sleep((stop - start) * per_unit)

    for _ in range(12):
        ranges = _parallel._by_speed(100, 2)
        _parallel._in_one_dispatch(
            _kernels, [functools.partial(sleeper, u, ranges, i)
                       for i, u in enumerate((1e-4, 2e-4))], [], (ranges, None))
    (_, cut), _ = _parallel._by_speed(100, 2)
    assert 58 <= cut <= 72                           # 2/3 of the steps to thread 0


def test_each_part_of_a_split_runs_on_the_same_thread_call_after_call(monkeypatch):
    """Part i's speed is measured on one thread and used for the same thread's next
    part: rnncore's workers are taken in the same order every call."""
    import threading
    monkeypatch.setattr(_parallel, "_join_openmp", False)
    seen = []
    for _ in range(4):
        seen.append(_parallel._run_parts([threading.get_ident] * 4))
    assert all(idents == seen[0] for idents in seen)
    assert len(set(seen[0])) == 4


def test_any_cut_by_any_speeds_keeps_the_bits_of_one_thread():
    """Drawn shapes, cells, thread counts and thread speeds (held through the call):
    forward+backward split by those speeds equals one thread's, bit for bit. Counts
    the examples whose call did split, so that the check cannot pass on calls that
    all ran whole."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    saved = {name: getattr(_parallel, name) for name in
             ("_MIN_PARALLEL_WORK", "_MIN_PART_WORK", "_MIN_PART_ROWS", "_SPEED_STEP",
              "_join_openmp")}
    split, compared = [], []
    dispatch = _parallel._in_one_dispatch

    def counting(*args):
        split.append(1)
        return dispatch(*args)

    @hypothesis.settings(max_examples=80, deadline=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(data=st.data())
    def check(data):
        name = data.draw(st.sampled_from(sorted(CELLS)), label="cell")
        threads = data.draw(st.integers(2, 4), label="threads")
        speeds = data.draw(st.lists(st.floats(0.3, 3.0), min_size=threads,
                                    max_size=threads), label="speeds")
        T = data.draw(st.integers(2, 24), label="T")
        B = data.draw(st.integers(2, 20), label="B")
        K = data.draw(st.integers(1, 40), label="K")
        H = data.draw(st.integers(2, 70), label="H")
        dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
        padded = data.draw(st.booleans(), label="padded")
        case = _case(dtype, bidirectional=False, padded=padded, T=T, B=B, K=K, H=H,
                     cell=CELLS[name])
        _parallel._speeds.clear()
        want = _run(*case, threads=1)
        _parallel._speeds.update({threads: tuple(speeds)})
        before = len(split)
        got = _run(*case, threads=threads)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        if len(split) > before:
            compared.append(1)

    try:
        _parallel._MIN_PARALLEL_WORK = _parallel._MIN_PART_WORK = 1
        _parallel._MIN_PART_ROWS = 1
        _parallel._SPEED_STEP = 0.0
        _parallel._join_openmp = False
        _parallel._in_one_dispatch = counting
        check()
    finally:
        for name, value in saved.items():
            setattr(_parallel, name, value)
        _parallel._in_one_dispatch = dispatch
        rnncore.set_num_threads(None)
    assert len(compared) >= 40, f"only {len(compared)} of 80 examples split"


@pytest.mark.parametrize("padded", [False, True], ids=["rows alike", "rows of unequal lengths"])
def test_a_recurrences_rows_are_read_for_speed_only_where_they_run_alike(
        isa, split_calls, padded, monkeypatch):
    """The projection's ranges of steps are read in every split call; the recurrences'
    ranges of rows only where every row runs as many steps. Rows sorted longest first
    (a PackedSequence's) would read as a slower first thread, and the cut learnt from
    them would be wrong for the next call's rows."""
    read = []
    learn = _parallel._learn_speeds
    monkeypatch.setattr(_parallel, "_SPEED_LEAST_SECONDS", 0.0)     # small parts read too
    monkeypatch.setattr(_parallel, "_learn_speeds",
                        lambda ranges, seconds: (read.append(ranges), learn(ranges, seconds)))
    case = _case(np.float32, bidirectional=False, padded=padded)
    if padded:                                  # sorted longest first, the longest T
        lengths = np.sort(case[4])[::-1].copy()
        lengths[0] = case[2].shape[0]
        case = (*case[:4], lengths)
    _run(*case, threads=2)
    steps = [r for r in read if r[-1][1] == case[2].shape[0]]     # ranges of the T steps
    assert len(steps) == 2                      # each layer's projection
    assert len(read) == (2 if padded else 2 * 3)  # and its two recurrences, if alike
