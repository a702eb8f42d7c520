"""A child made by fork computes what its parent computes, whatever rnncore's worker
thread, lock and OpenBLAS setting were doing in the parent when it forked.

Each child runs under ``multiprocessing.get_context("fork")`` and must answer within
``TIMEOUT`` seconds: a child that does not is killed and the test fails, so a hang is
reported, never waited for.
"""
import contextlib
import multiprocessing
import threading
import time

import numpy as np
import pytest

import rnncore
from rnncore import _parallel
from rnncore import functional as F

pytestmark = [
    pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                       reason="this platform has no fork"),
    # Python 3.12+ warns when a process with threads forks: that is the point here.
    pytest.mark.filterwarnings("ignore:.*fork\\(\\) may lead to deadlocks:DeprecationWarning"),
]

# A child answers in well under a second; one that has not answered by then hangs.
TIMEOUT = 60

# Per direction T*B*(K*H + H*H) multiply-adds: at least _MIN_PARALLEL_WORK, so that a
# bidirectional call with two rnncore threads hands a direction to the worker thread.
T, B, K, H = 64, 8, 64, 64


@pytest.fixture
def two_threads(monkeypatch):
    """Two rnncore threads, the second one of rnncore's own workers (not a loaded GNU
    OpenMP runtime's, which ``test_fork_child_after_a_region_of_gnu_openmp_...``
    covers)."""
    assert T * B * (K * H + H * H) >= _parallel._MIN_PARALLEL_WORK
    monkeypatch.setattr(_parallel, "_join_openmp", False)
    rnncore.set_num_threads(2)
    yield
    rnncore.set_num_threads(None)


def _case():
    rng = np.random.default_rng(0)
    rnn = rnncore.RNN(K, H, bidirectional=True, seed=1)
    x = rng.standard_normal((T, B, K)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    return rnn.params, x, dy


def _fwd_bwd(params, x, dy, backend=None):
    y, h_n, record = F.forward(x, params, backend=backend)
    dx, dh0, grads = F.backward(record, dy)
    return [y, h_n, dx, dh0, *grads.values()]


def _in_fork_child(fn):
    """``fn()`` called in a fork child; its result, or a test failure if it hangs."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)

    def child():
        try:
            sender.send(("result", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            sender.send(("error", repr(e)))

    process = ctx.Process(target=child, daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(TIMEOUT):
            pytest.fail(f"the fork child did not answer within {TIMEOUT} s: it hangs")
        try:
            kind, value = receiver.recv()
        except EOFError:
            process.join(TIMEOUT)
            pytest.fail(f"the fork child died without answering (exit code "
                        f"{process.exitcode})")
    finally:
        process.join(TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()
    assert kind == "result", f"the fork child raised {value}"
    return value


@contextlib.contextmanager
def _another_thread_holding_the_lock():
    """Another thread holds rnncore's module lock for half a second from now."""
    held = threading.Event()

    def hold():
        with _parallel._lock:
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(TIMEOUT)
    try:
        yield
    finally:
        thread.join()


@contextlib.contextmanager
def _another_thread_inside_a_parallel_call():
    """Another thread is inside a two-thread call: OpenBLAS narrowed, worker busy."""
    inside = threading.Barrier(3)     # the caller, the worker thread and this thread
    release = threading.Event()

    def wait():
        inside.wait(TIMEOUT)
        release.wait(TIMEOUT)

    thread = threading.Thread(target=_parallel._run_parts, args=([wait, wait],))
    thread.start()
    inside.wait(TIMEOUT)
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_fork_child_after_a_parallel_call_computes_what_the_parent_does(backend,
                                                                         two_threads):
    params, x, dy = _case()
    want = _fwd_bwd(params, x, dy, backend)
    assert _parallel._pool is not None, "the parent's call did not use the worker thread"
    got = _in_fork_child(lambda: _fwd_bwd(params, x, dy, backend))
    assert len(got) == len(want)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fork_child_after_a_region_of_gnu_openmp_runs_its_split_calls_on_workers(
        gnu_openmp):
    """GNU OpenMP's pool, copied into the child without its threads, would wait for
    them for ever: the child's split calls run on rnncore's own workers."""
    rnncore.set_num_threads(2)
    try:
        params, x, dy = _case()
        before = gnu_openmp.regions()
        want = _fwd_bwd(params, x, dy)
        assert gnu_openmp.regions() > before, \
            "the parent's call did not run a region of the runtime's pool"
        got = _in_fork_child(lambda: _fwd_bwd(params, x, dy))
    finally:
        rnncore.set_num_threads(None)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("another_thread", [_another_thread_holding_the_lock,
                                            _another_thread_inside_a_parallel_call],
                         ids=["holding-the-lock", "inside-a-parallel-call"])
def test_fork_while_another_thread_is_in_rnncore_leaves_a_child_that_computes(
        another_thread, two_threads):
    params, x, dy = _case()
    want = _fwd_bwd(params, x, dy)
    with another_thread():
        got = _in_fork_child(lambda: _fwd_bwd(params, x, dy))
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fork_inside_a_parallel_call_gives_the_child_the_parents_thread_settings(
        two_threads):
    # inside the call OpenBLAS runs one thread; the child is not inside any call and
    # gets back the count the parent had outside it, and the parent's set_num_threads
    kernels = pytest.importorskip("rnncore._kernels")
    saved = kernels.blas_threads()
    kernels.set_blas_threads(2)
    try:
        with _another_thread_inside_a_parallel_call():
            assert kernels.blas_threads() == 1, "the call in flight did not narrow OpenBLAS"
            got = _in_fork_child(lambda: (rnncore.get_num_threads(), kernels.blas_threads()))
        assert kernels.blas_threads() == 2
    finally:
        kernels.set_blas_threads(saved)
    assert got == (2, 2), "(rnncore threads, OpenBLAS threads) in the child"


def test_dataloader_fork_workers_run_the_bidirectional_dropin(two_threads):
    torch = pytest.importorskip("torch")
    import rnncore.torch as rt

    torch.manual_seed(0)
    rnn = rt.RNN(K, H, bidirectional=True)
    xs = torch.randn(4, T, B, K)
    with torch.no_grad():
        want = [rnn(x)[0] for x in xs]     # also starts the parent's worker thread

    class Dataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(xs)

        def __getitem__(self, i):
            with torch.no_grad():
                return rnn(xs[i])[0]

    loader = torch.utils.data.DataLoader(Dataset(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", timeout=TIMEOUT)
    try:
        got = list(loader)
    except RuntimeError as e:
        pytest.fail(f"the DataLoader's fork workers did not answer: {e}")
    assert len(got) == len(want)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
