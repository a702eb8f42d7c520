"""Checkpointed BPTT: ``forward(..., checkpoint=k)`` keeps the states every k steps and
backward recomputes each segment; outputs and gradients are bitwise those of the full
BPTT (``checkpoint=0``), for every cell, backend, dtype, direction and lengths.

The chunks a long call runs in are made 4 steps long here (``chunk_steps`` replaced), so
that small cases have many chunks and segments."""
import numpy as np
import pytest

import rnncore
from rnncore import _chunks
from rnncore import functional as F

from conftest import RTOL, assert_close

CELLS = ["rnn", "lstm", "gru"]


@pytest.fixture
def short_chunks(monkeypatch):
    """Chunks of 4 steps."""
    monkeypatch.setattr(_chunks, "chunk_steps", lambda B, T: 4)


@pytest.fixture
def every_section_splits(monkeypatch):
    """rnncore's thread thresholds lowered, so that small cases split every section."""
    from rnncore import _parallel
    for name in ("_MIN_PARALLEL_WORK", "_MIN_PART_WORK", "_MIN_PART_ROWS"):
        monkeypatch.setattr(_parallel, name, 1)


def _case(cell, dtype, bidirectional, layers, T=23, B=3, K=4, H=5, seed=1):
    rng = np.random.default_rng(seed)
    shapes = F.param_shapes(K, H, layers, bidirectional=bidirectional, cell=cell)
    params = {k: rng.uniform(-0.5, 0.5, s).astype(dtype) for k, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    LD = layers * (2 if bidirectional else 1)
    h0 = rng.standard_normal((LD, B, H)).astype(dtype)
    dh_n = rng.standard_normal((LD, B, H)).astype(dtype)
    if cell == "lstm":
        h0, dh_n = (h0, h0[::-1].copy()), (dh_n, dh_n[::-1].copy())
    dy = rng.standard_normal((T, B, (2 if bidirectional else 1) * H)).astype(dtype)
    return params, x, h0, dh_n, dy


def _run(cell, backend, case, lengths, checkpoint):
    params, x, h0, dh_n, dy = case
    y, h_n, record = F.forward(x, params, h0, lengths, cell=cell, backend=backend,
                               checkpoint=checkpoint)
    dx, dh0, grads = F.backward(record, dy, dh_n)
    states = lambda s: list(s) if isinstance(s, tuple) else [s]          # noqa: E731
    return [y, *states(h_n), dx, *states(dh0), *grads.values()], record


def _skip_unless_implemented(backend, cell):
    if backend not in F.backends_for(cell):
        pytest.skip(f"{backend} does not implement {cell}")


@pytest.mark.parametrize("checkpoint", [1, 4, 8, 12, "auto", 1000])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_are_bitwise_those_of_full_bptt(short_chunks, backend, dtype, cell,
                                                   bidirectional, padded, checkpoint):
    _skip_unless_implemented(backend, cell)
    case = _case(cell, dtype, bidirectional, layers=2)
    lengths = [23, 5, 12] if padded else None     # sequences ending inside, at and
    want, _ = _run(cell, backend, case, lengths, 0)   # before chunk boundaries
    got, record = _run(cell, backend, case, lengths, checkpoint)
    assert isinstance(record.saved[0][0], _chunks.Checkpoints)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w, equal_nan=True)


@pytest.mark.parametrize("lengths", [[4, 8, 9], [1, 4, 5], [8, 8, 8]])
def test_lengths_on_chunk_boundaries_keep_the_bits(short_chunks, backend, lengths):
    """The reverse direction's initial state sits at each sequence's own end: at, one
    before and one after a chunk boundary (chunks of 4 steps, T = 9)."""
    case = _case("gru" if backend == "numpy" else "lstm", np.float64, True, layers=1, T=9)
    cell = "gru" if backend == "numpy" else "lstm"
    want, _ = _run(cell, backend, case, lengths, 0)
    got, _ = _run(cell, backend, case, lengths, 4)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_a_call_in_chunks_agrees_with_one_call(short_chunks, monkeypatch, backend, dtype,
                                               cell, bidirectional):
    """Chunking changes only the order of the weight gradients' sums: the full BPTT of
    a call in chunks agrees with one call to SPEC's tolerance."""
    _skip_unless_implemented(backend, cell)
    case = _case(cell, dtype, bidirectional, layers=2)
    got, record = _run(cell, backend, case, [23, 5, 12], 0)
    assert record.chunk == 4
    monkeypatch.setattr(_chunks, "chunk_steps", lambda B, T: max(1, T))
    want, record = _run(cell, backend, case, [23, 5, 12], 0)
    assert record.chunk == 0
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, RTOL[dtype])


def test_default_chunks_keep_the_bits(backend):
    """With the chunks of a real call: T = 20,000, B = 4 runs in chunks of 142 steps."""
    T = 20000
    case = _case("rnn", np.float32, True, layers=1, T=T, B=4, K=3, H=8)
    lengths = [T, 15000, 142 * 50, 7]
    want, record = _run("rnn", backend, case, lengths, 0)
    assert record.chunk == _chunks.chunk_steps(4, T) == 142
    got, record = _run("rnn", backend, case, lengths, "auto")
    assert len(record.saved[0][0].segments) == 141
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("mode", ["sum", "mean", "mul"])
def test_merge_modes_checkpoint_bitwise(short_chunks, backend, mode):
    params, x, h0, dh_n, _ = _case("rnn", np.float64, True, layers=2)
    dy = np.random.default_rng(2).standard_normal((23, 3, 5))
    runs = []
    for checkpoint in (0, 4):
        y, h_n, record = F.forward(x, params, h0, [23, 5, 12], backend=backend,
                                   merge_mode=mode, checkpoint=checkpoint)
        runs.append([y, h_n, *F.backward(record, dy, dh_n)[:2],
                     *F.backward(record, dy, dh_n)[2].values()])
    for g, w in zip(*runs, strict=True):
        np.testing.assert_array_equal(g, w)


def test_checkpointed_record_keeps_no_state_sequence(short_chunks):
    """What makes the memory: the record holds the segments' initial states, not the
    states of every step (nor LSTM's cell states and gates)."""
    case = _case("lstm", np.float32, False, layers=1, T=40)
    _, full = _run("lstm", None, case, None, 0)
    _, kept = _run("lstm", None, case, None, 8)
    assert full.states[0][0].shape == (41, 3, 5)
    assert kept.states[0][0] is None
    checkpoints = kept.saved[0][0]
    assert len(checkpoints.inits) == 5 and [a.shape for a in checkpoints.inits[0]] == \
        [(3, 5), (3, 5)]


def test_a_record_can_be_back_propagated_twice(short_chunks, backend):
    case = _case("gru" if backend == "numpy" else "rnn", np.float64, True, layers=1)
    cell = "gru" if backend == "numpy" else "rnn"
    params, x, h0, dh_n, dy = case
    _, _, record = F.forward(x, params, h0, [23, 5, 12], cell=cell, backend=backend,
                             checkpoint=8)
    first = F.backward(record, dy, dh_n)
    second = F.backward(record, dy, dh_n)
    np.testing.assert_array_equal(first[0], second[0])
    for key in first[2]:
        np.testing.assert_array_equal(first[2][key], second[2][key])


@pytest.mark.parametrize("T, B, want", [(100, 32, 100), (16384, 4, 16384), (16385, 4, 129),
                                        (20000, 4, 142), (20000, 1, 20000),
                                        (100000, 1, 512), (10 ** 6, 64, 1000)])
def test_chunks_are_the_whole_call_or_about_sqrt_t_steps(T, B, want):
    assert _chunks.chunk_steps(B, T) == want


@pytest.mark.parametrize("T, B, k, want", [(20000, 4, "auto", 142), (20000, 4, 1, 142),
                                           (20000, 4, 300, 426), (100, 32, "auto", 100),
                                           (100, 32, 0, 0)])
def test_checkpoint_steps_round_up_to_whole_chunks(T, B, k, want):
    assert _chunks.checkpoint_steps(k, T, B) == want


@pytest.mark.parametrize("bad, error", [(-1, ValueError), ("sqrt", ValueError),
                                        (1.5, TypeError), (True, TypeError),
                                        (None, TypeError)])
def test_bad_checkpoint_names_it_and_the_choices(bad, error):
    params = {k: np.zeros(s) for k, s in F.param_shapes(2, 3, 1).items()}
    with pytest.raises(error, match=r"checkpoint must be 0, a positive int or 'auto'; "
                                    r"got"):
        F.forward(np.zeros((2, 1, 2)), params, checkpoint=bad)


@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
def test_classes_take_checkpoint(short_chunks, cls):
    kwargs = dict(num_layers=1, bidirectional=True, seed=2, dtype=np.float64)
    full = cls(3, 4, **kwargs)
    kept = cls(3, 4, checkpoint="auto", **kwargs)
    x = np.random.default_rng(3).standard_normal((30, 3, 3))
    y_full, _ = full(x)
    y_kept, _ = kept(x)
    np.testing.assert_array_equal(y_kept, y_full)
    np.testing.assert_array_equal(kept.backward(np.ones_like(y_kept))[0],
                                  full.backward(np.ones_like(y_full))[0])
    for key in full.grads:
        np.testing.assert_array_equal(kept.grads[key], full.grads[key])
    assert "checkpoint='auto'" in repr(kept)


def test_bench_row_reports_memory_and_time_of_both():
    from rnncore.bench.checkpoint import checkpoint_rows, format_checkpoint_table
    sizes = {"T": 300, "B": 256, "K": 4, "H": 8}          # 76,800 rows: in chunks
    rows = checkpoint_rows(cells=("gru",), budget=0.01, rounds=1, pin=False, sizes=sizes)
    (row,) = rows
    assert 0 < row["auto_held"] < row["full_held"] < row["full_peak"]
    assert row["full_ms"] > 0 and row["auto_ms"] > 0
    table = format_checkpoint_table(rows)
    assert "T=300, B=256" in table and table.splitlines()[2].startswith("gru")


@pytest.mark.parametrize("checkpoint", [0, "auto"])
@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_split_over_threads_keep_the_bits_of_one_thread(
        short_chunks, every_section_splits, dtype, threads, checkpoint):
    """A long call's last chunk may be a short call, which the kernels run on the BLAS
    and which must not be split: T = 9 in chunks of 4 leaves a 1-step chunk."""
    pytest.importorskip("rnncore._kernels")
    case = _case("rnn", dtype, False, layers=2, T=9, B=6, K=300, H=300)
    runs = []
    for n in (1, threads):
        rnncore.set_num_threads(n)
        try:
            runs.append(_run("rnn", "cython", case, [9, 4, 5, 1, 9, 8], checkpoint)[0])
        finally:
            rnncore.set_num_threads(None)
    for g, w in zip(*runs, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("unequal", [False, True], ids=["equal threads", "unequal threads"])
@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("cell", CELLS)
def test_a_long_call_on_threads_runs_each_range_of_rows_through_every_chunk_in_one_dispatch(
        short_chunks, every_section_splits, monkeypatch, cell, threads, unequal):
    """Where every chunk splits, the forward projects every step first, then each
    thread takes a range of rows through every chunk; the backward takes each range of
    rows back through every chunk, then every chunk's weight gradients in parts: the
    outputs and gradients are bitwise those of one thread and of the checkpointed call
    (chunk by chunk). So too where the threads were measured at unequal speeds, and
    the rows, steps and weight gradients are cut in proportion to them."""
    pytest.importorskip("rnncore._kernels")
    from rnncore import _parallel
    monkeypatch.setattr(_parallel, "_SPEED_STEP", 0.0)          # nothing learnt
    if unequal:
        _parallel._speeds.update({2: (1.5, 0.5), 4: (2.0, 1.0, 0.6, 0.4)})
    weight_parts = _parallel._weight_parts
    cut = []
    monkeypatch.setattr(_parallel, "_weight_parts",
                        lambda n: cut.append(weight_parts(n)) or cut[-1])
    ahead = []
    from rnncore import _chunk_threads
    for name in ("forward_direction", "backward_direction"):
        monkeypatch.setattr(_chunk_threads, name,
                            lambda *args, _fn=getattr(_chunk_threads, name), _name=name:
                            (ahead.append(_name), _fn(*args))[1])
    case = _case(cell, np.float32, False, layers=2, T=12, B=6, K=300, H=300)
    runs = []
    for n, checkpoint in ((1, 0), (threads, 0), (threads, "auto")):
        ahead.clear()
        rnncore.set_num_threads(n)
        try:
            runs.append(_run(cell, "cython", case, [12, 4, 5, 1, 12, 8], checkpoint)[0])
        finally:
            rnncore.set_num_threads(None)
        assert sorted(set(ahead)) == (["backward_direction", "forward_direction"]
                                      if n > 1 and checkpoint == 0 else [])
    # the weight gradients' parts: (lo, hi, den) only where cut unequally
    assert cut and all((len(part) == 3) == unequal for parts in cut for part in parts)
    for run in runs[1:]:
        for g, w in zip(run, runs[0], strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("checkpoint", [0, "auto"])
@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("cell", CELLS)
def test_the_directions_of_a_long_bidirectional_call_run_at_once_with_the_bits_of_one_thread(
        short_chunks, every_section_splits, monkeypatch, backend, cell, threads,
        checkpoint):
    """With two threads the two directions of a layer run their chunks at once (the
    reverse one visiting them in the opposite order), forward and backward; with four,
    each direction is split (where the kernels split exactly). ∂x of the depth above
    one block of the kernels' products (H = 300 > 256) sums the directions' parts
    in one order whatever the threads."""
    _skip_unless_implemented(backend, cell)
    import threading
    ran_on = []
    for name in ("forward_direction", "backward_direction"):
        def spy(*args, _fn=getattr(_chunks, name), _name=name, **kwargs):
            ran_on.append((_name, threading.get_ident()))
            return _fn(*args, **kwargs)
        monkeypatch.setattr(_chunks, name, spy)
    case = _case(cell, np.float32, True, layers=2, T=11, B=6, K=7, H=300)
    runs = []
    for n in (1, threads):
        ran_on.clear()
        rnncore.set_num_threads(n)
        try:
            runs.append(_run(cell, backend, case, [11, 4, 5, 1, 11, 8], checkpoint)[0])
        finally:
            rnncore.set_num_threads(None)
    for g, w in zip(*runs, strict=True):
        np.testing.assert_array_equal(g, w)
    if threads == 2:
        for name in ("forward_direction", "backward_direction"):
            assert len({t for f, t in ran_on if f == name}) == 2


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_output_of_a_long_call_is_the_callers_own(short_chunks, backend, cell,
                                                      bidirectional, threads):
    """The chunks' states are copied into the output as they are made; writing into
    the output afterwards leaves what backward computes from the states unchanged."""
    _skip_unless_implemented(backend, cell)
    params, x, h0, dh_n, dy = _case(cell, np.float64, bidirectional, layers=2)

    def gradients(overwrite):
        y, _, record = F.forward(x, params, h0, cell=cell, backend=backend)
        if overwrite:
            y[...] = 7.0
        dx, dh0, grads = F.backward(record, dy, dh_n)
        return [dx, *(dh0 if isinstance(dh0, tuple) else [dh0]), *grads.values()]

    rnncore.set_num_threads(threads)
    try:
        want, got = gradients(False), gradients(True)
    finally:
        rnncore.set_num_threads(None)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
