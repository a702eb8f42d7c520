"""The same inputs give bitwise the same results call after call, process after process,
and whatever the thread count: rnncore's threads (``set_num_threads``), the BLAS's threads
(the kernels' OpenBLAS and NumPy's) and however a layer's work is split over them. Each
backend in its own terms: the two backends round differently, each always the same way.

``deterministic=False`` lets the BLAS sum the weight gradients in its own threaded order:
results then agree to rounding only."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import _parallel
from rnncore import functional as F

threadpool_limits = pytest.importorskip("threadpoolctl").threadpool_limits

from conftest import RTOL, assert_close

SCRIPT = """
import hashlib, sys, numpy as np, rnncore
from rnncore import functional as F
backend, dtype, threads = sys.argv[1], np.dtype(sys.argv[2]), int(sys.argv[3])
rnncore.set_num_threads(threads)
if backend == "cython":
    from rnncore import _kernels
    _kernels.set_blas_threads(threads)
rnn = rnncore.RNN(24, 96, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
rng = np.random.default_rng(4)
x = rng.standard_normal((40, 12, 24)).astype(dtype)
dy = rng.standard_normal((40, 12, 192)).astype(dtype)
lengths = [40, 3, 9, 40, 1, 14, 40, 40, 2, 33, 40, 17]
y, h_n, rec = F.forward(x, rnn.params, lengths=lengths, backend=backend)
dx, dh0, g = F.backward(rec, dy)
h = hashlib.sha256()
for a in [y, h_n, dx, dh0, *g.values()]:
    h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""

# the cells, LSTM with and without a projection: (cell, proj_size)
CELLS = {"rnn": ("rnn", 0), "lstm": ("lstm", 0), "lstm-proj": ("lstm", 16),
         "gru": ("gru", 0)}
# (rnncore threads, BLAS threads, thresholds lowered so that every section splits)
THREADINGS = [(2, 1, False), (1, 2, False), (2, 2, False), (2, 1, True), (3, 1, True),
              (4, 2, True)]


def _digest(backend, dtype, threads, extra_env=None):
    env = {**os.environ, "RNNCORE_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), **(extra_env or {})}
    out = subprocess.run([sys.executable, "-c", SCRIPT, backend, dtype.name, str(threads)],
                         capture_output=True, text=True, check=True, env=env)
    return out.stdout.strip()


def _in_process_digest(backend, dtype, threads):
    namespace = {}
    argv = sys.argv
    sys.argv = ["-c", backend, dtype.name, str(threads)]
    try:
        from contextlib import redirect_stdout
        from io import StringIO
        buffer = StringIO()
        # the subprocesses' OPENBLAS_NUM_THREADS also sizes NumPy's own BLAS
        with threadpool_limits(limits=threads), redirect_stdout(buffer):
            exec(SCRIPT, namespace)
    finally:
        sys.argv = argv
        rnncore.set_num_threads(None)
    return buffer.getvalue().strip()


def _blas_threads():
    if "cython" not in rnncore.backends():
        return None
    from rnncore import _kernels
    return _kernels.blas_threads()


def _set_blas_threads(n):
    if n is not None:
        from rnncore import _kernels
        _kernels.set_blas_threads(n)


@contextlib.contextmanager
def _threading(threads, blas, split):
    """rnncore on ``threads`` threads, both BLAS libraries on ``blas``; with ``split``
    the thresholds below which work is not handed to threads are lowered to nothing."""
    saved = (_parallel._MIN_PARALLEL_WORK, _parallel._MIN_PART_WORK,
             _parallel._MIN_PART_ROWS)
    blas_before = _blas_threads()
    rnncore.set_num_threads(threads)
    _set_blas_threads(blas if blas_before is not None else None)
    if split:
        _parallel._MIN_PARALLEL_WORK = _parallel._MIN_PART_WORK = 1
        _parallel._MIN_PART_ROWS = 1
    try:
        with threadpool_limits(limits=blas):
            yield
    finally:
        (_parallel._MIN_PARALLEL_WORK, _parallel._MIN_PART_WORK,
         _parallel._MIN_PART_ROWS) = saved
        rnncore.set_num_threads(None)
        _set_blas_threads(blas_before)


def _case(cell, dtype, bidirectional, T=30, B=13, K=40, H=72, proj=0):
    rng = np.random.default_rng(5)
    shapes = F.param_shapes(K, H, 2, bias=True, bidirectional=bidirectional, cell=cell,
                            proj_size=proj)
    params = {k: (rng.standard_normal(s) / np.sqrt(H)).astype(dtype)
              for k, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    D = 2 if bidirectional else 1
    dy = rng.standard_normal((T, B, D * (proj or H))).astype(dtype)
    return params, x, dy, rng.integers(1, T + 1, B)


def _forward_backward(cell, backend, case, deterministic=True):
    params, x, dy, lengths = case
    y, h_n, record = F.forward(x, params, lengths=lengths, cell=cell, backend=backend,
                               deterministic=deterministic)
    dx, dh0, grads = F.backward(record, dy)
    states = lambda s: list(s) if isinstance(s, tuple) else [s]          # noqa: E731
    return [y, *states(h_n), dx, *states(dh0), *grads.values()]


def _isas(backend):
    if backend != "cython":
        return [None]
    from rnncore import _kernels
    return list(_kernels.supported_isas())


@contextlib.contextmanager
def _isa(name):
    if name is None:
        yield
        return
    from rnncore import _kernels
    _kernels.set_isa(name)
    try:
        yield
    finally:
        _kernels.set_isa(None)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("variant", list(CELLS))
def test_every_thread_count_and_split_gives_the_bits_of_one_thread(backend, dtype, variant,
                                                                   bidirectional):
    cell, proj = CELLS[variant]
    if backend not in F.backends_for(cell):
        pytest.skip(f"{backend} does not implement {cell}")
    case = _case(cell, dtype, bidirectional, proj=proj)
    for isa in _isas(backend):
        with _isa(isa):
            with _threading(1, 1, False):
                want = _forward_backward(cell, backend, case)
            for threads, blas, split in THREADINGS:
                with _threading(threads, blas, split):
                    got = _forward_backward(cell, backend, case)
                for g, w in zip(got, want, strict=True):
                    assert np.array_equal(g, w, equal_nan=True), (isa, threads, blas, split)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_results_across_processes_and_thread_counts(backend, dtype, threads):
    blas_before = _blas_threads()
    try:
        here = _in_process_digest(backend, dtype, threads)
    finally:
        _set_blas_threads(blas_before)
    assert _digest(backend, dtype, threads) == _digest(backend, dtype, 3 - threads) == here


def test_same_results_across_calls(backend, dtype):
    rnn = rnncore.RNN(12, 40, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((25, 6, 12)).astype(dtype)
    dy = rng.standard_normal((25, 6, 80)).astype(dtype)
    first = None
    for _ in range(5):
        y, h_n, rec = F.forward(x, rnn.params, lengths=[25, 3, 9, 25, 1, 14],
                                backend=backend)
        dx, dh0, g = F.backward(rec, dy)
        got = [y, h_n, dx, dh0, *g.values()]
        if first is None:
            first = got
        for a, b in zip(first, got, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_deterministic_backward_leaves_the_blas_thread_counts_as_it_found_them(backend):
    case = _case("rnn", np.float64, True)
    with _threading(2, 2, True):
        before = (_blas_threads(), _numpy_blas_threads())
        _forward_backward("rnn", backend, case)
        assert (_blas_threads(), _numpy_blas_threads()) == before


def _numpy_blas_threads():
    return [c.num_threads for c in _parallel._numpy_blas()]


def test_not_deterministic_still_agrees_to_rounding(backend, dtype):
    case = _case("rnn", dtype, True)
    with _threading(1, 1, False):
        want = _forward_backward("rnn", backend, case)
    with _threading(2, 2, True):
        got = _forward_backward("rnn", backend, case, deterministic=False)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, RTOL[dtype])


def test_not_deterministic_lets_numpy_sum_weight_gradients_on_its_blas_threads():
    """The option does what its name says: on the NumPy backend with a two-thread BLAS
    the float64 weight gradients come out of OpenBLAS's threaded order, which differs
    from one thread's in the last bits for this shape (the deterministic call's do
    not: see the first test)."""
    if not any(c.num_threads for c in _parallel._numpy_blas()):
        pytest.skip("NumPy's BLAS is not one threadpoolctl controls")
    params, x, dy, lengths = _case("rnn", np.float64, False)
    lengths[0] = len(x)                  # every step runs: the shape the docstring means
    case = params, x, dy, lengths
    with _threading(1, 1, False):
        want = _forward_backward("rnn", "numpy", case, deterministic=False)
    with _threading(1, 2, False):
        got = _forward_backward("rnn", "numpy", case, deterministic=False)
    assert any(not np.array_equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("bad", [None, "yes", 1.5])
def test_deterministic_takes_a_bool(bad):
    params = {k: np.zeros(s) for k, s in F.param_shapes(2, 3, 1).items()}
    with pytest.raises(TypeError, match=r"deterministic must be True or False; got"):
        F.forward(np.zeros((2, 1, 2)), params, deterministic=bad)


def _blas_of(which):
    """(the module exact_blas is given, its BLAS's thread count, a setter), or a skip."""
    if which == "numpy":
        from rnncore import reference
        controllers = _parallel._numpy_blas()
        if not controllers:
            pytest.skip("threadpoolctl finds no BLAS under NumPy")
        return (reference, lambda: max(c.num_threads for c in controllers),
                lambda n: [_parallel._set_threads(c, n) for c in controllers])
    if "cython" not in rnncore.backends():
        pytest.skip("the kernels are not built")
    from rnncore import _kernels
    return _kernels, _kernels.blas_threads, _kernels.set_blas_threads


@pytest.mark.parametrize("which", ["numpy", "kernels"])
def test_a_call_beside_one_holding_the_blas_at_one_thread_holds_it_too(which):
    # a second deterministic call that started while a first held the BLAS at one
    # thread must not take that one thread for the caller's own setting: when the first
    # ends, the BLAS has to stay at one thread until the second ends too
    module, threads, set_threads = _blas_of(which)
    before = threads()
    set_threads(2)
    try:
        if threads() < 2:
            pytest.skip("this BLAS runs one thread")
        first = _parallel.exact_blas(module, True)
        first.__enter__()
        second = _parallel.exact_blas(module, True)
        second.__enter__()
        first.__exit__(None, None, None)
        during = threads()
        second.__exit__(None, None, None)
        assert (during, threads()) == (1, 2)
    finally:
        set_threads(before)


def test_numpys_openblas_is_narrowed_from_a_thread_threadpoolctl_does_not_let_set_it():
    # threadpoolctl lets only its "controlling" thread (the first to set OpenBLAS's
    # count) change it; a deterministic call narrows it from whichever thread it runs on
    import threading
    controllers = [c for c in _parallel._numpy_blas()
                   if _parallel._openblas_setter(c) is not None]
    if not controllers:
        pytest.skip("NumPy's BLAS is not OpenBLAS on its own threads")
    c = controllers[0]
    before = c.num_threads
    c.set_num_threads(max(before, 2))          # this thread now controls it
    seen = []
    try:
        if c.num_threads < 2:
            pytest.skip("this OpenBLAS runs one thread")
        worker = threading.Thread(
            target=lambda: (_parallel._set_threads(c, 1), seen.append(c.num_threads)))
        worker.start()
        worker.join()
        assert seen == [1]
    finally:
        c.set_num_threads(before)


class _StuckBlas:
    """A threadpoolctl controller of a BLAS that stays on two threads whatever it is
    told."""
    internal_api = "blis"
    filepath = "/lib/libstuck.so"
    num_threads = 2

    def set_num_threads(self, n):
        pass


def test_a_deterministic_call_raises_where_numpys_blas_cannot_be_narrowed(monkeypatch):
    monkeypatch.setattr(_parallel, "_numpy_blas", lambda: [_StuckBlas()])
    params, x, dy, lengths = _case("rnn", np.float64, False)
    with pytest.raises(RuntimeError, match=r"deterministic=True needs NumPy's BLAS "
                                           r"\(/lib/libstuck.so\) on 1 thread.*stays on 2"):
        F.forward(x, params, lengths=lengths, backend="numpy")
    assert _parallel._NUMPY_BLAS.users == 0
    F.forward(x, params, lengths=lengths, backend="numpy", deterministic=False)
