"""The kernels are safe to call from many threads at once, and release the GIL."""
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

LENGTHS = np.array([30, 7, 19, 1, 30])


def _case(dtype, bidirectional):
    rng = np.random.default_rng(0)
    rnn = rnncore.RNN(16, 48, num_layers=2, bidirectional=bidirectional, dtype=dtype, seed=1)
    D = 2 if bidirectional else 1
    xs = [rng.standard_normal((30, 5, 16)).astype(dtype) for _ in range(8)]
    dys = [rng.standard_normal((30, 5, D * 48)).astype(dtype) for _ in range(8)]
    dh_ns = [rng.standard_normal((2 * D, 5, 48)).astype(dtype) for _ in range(8)]
    return rnn.params, list(zip(xs, dys, dh_ns, strict=True))


def _fwd_bwd(params, x, dy, dh_n, backend):
    y, h_n, record = F.forward(x, params, lengths=LENGTHS, backend=backend)
    dx, dh0, grads = F.backward(record, dy, dh_n)
    return [y, h_n, dx, dh0, *grads.values()]


@pytest.mark.parametrize("num_threads", [1, 2], ids=["rnncore-1-thread", "rnncore-2-threads"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_eight_threads_on_shared_weights_equal_serial_calls_bitwise(backend, dtype,
                                                                    bidirectional,
                                                                    num_threads):
    # with 2 rnncore threads, each bidirectional call also hands its reverse direction to
    # the shared worker thread: 8 callers then contend for it and for the BLAS setting
    params, cases = _case(dtype, bidirectional)
    rnncore.set_num_threads(num_threads)
    try:
        serial = [_fwd_bwd(params, *case, backend) for case in cases]
        for _ in range(3):
            with ThreadPoolExecutor(max_workers=8) as pool:
                parallel = list(pool.map(lambda case: _fwd_bwd(params, *case, backend),
                                         cases))
            for s, p in zip(serial, parallel, strict=True):
                for a, b in zip(s, p, strict=True):
                    np.testing.assert_array_equal(a, b)
    finally:
        rnncore.set_num_threads(None)


def test_threads_with_different_configurations_at_once(backend):
    """Different shapes, dtypes and nonlinearities interleaved: no shared scratch."""
    rng = np.random.default_rng(1)
    jobs = []
    for i in range(16):
        dtype = (np.float32, np.float64)[i % 2]
        rnn = rnncore.RNN(3 + i % 4, 5 + 7 * (i % 5), num_layers=1 + i % 3,
                          nonlinearity=("tanh", "relu")[i // 2 % 2],
                          bidirectional=bool(i // 4 % 2), dtype=dtype, seed=i)
        x = rng.standard_normal((11 + i, 1 + i % 4, rnn.input_size)).astype(dtype)
        jobs.append((rnn, x))

    def run(job):
        rnn, x = job
        y, h_n, record = F.forward(x, rnn.params, nonlinearity=rnn.nonlinearity,
                                   backend=backend)
        dx, dh0, grads = F.backward(record, np.ones_like(y))
        return [y, h_n, dx, dh0, *grads.values()]

    serial = [run(job) for job in jobs]
    shuffled = jobs * 3
    random.Random(0).shuffle(shuffled)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, shuffled))
    for job, got in zip(shuffled, parallel, strict=True):
        for a, b in zip(serial[jobs.index(job)], got, strict=True):
            np.testing.assert_array_equal(a, b)


class _Counter:
    """A Python thread that counts; each tick needs the GIL and then gives it up.

    While counting, the interpreter's switch interval is set to a minute: a thread that
    holds the GIL is then never asked to drop it, so the counter can only tick while
    the other thread has released the GIL of its own accord (as ``nogil`` code does).
    """

    def __init__(self):
        self.ticks = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._done.is_set():
            self.ticks += 1
            time.sleep(0)

    def __enter__(self):
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(60.0)
        self._thread.start()
        while self.ticks == 0:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        sys.setswitchinterval(self._interval)

    def most_ticks_during(self, call, attempts, enough):
        """The most ticks counted while ``call()`` ran, over up to ``attempts`` calls."""
        best = 0
        for _ in range(attempts):
            before = self.ticks
            call()
            best = max(best, self.ticks - before)
            if best >= enough:
                break
        return best


# With the GIL held for a whole call, the counter cannot tick at all (the control test
# below); released, it counts for as long as it gets a CPU. No timing threshold: a
# loaded machine only needs more attempts. A tick sleeps for Linux's timer slack (here
# 80-100 µs a tick), so the call is made long enough (a million steps, 30-60 ms) that
# ENOUGH sits well below what one released call counts (300-700 here; 200k steps
# counted 90-110, and a loaded CI host once stopped at 49 in 20 attempts).
ENOUGH = 50


@pytest.mark.parametrize("step", ["layer_forward", "layer_backward"])
def test_a_long_kernel_call_lets_other_threads_run(dtype, step):
    if "cython" not in rnncore.backends():
        pytest.skip("needs the compiled kernels")
    from rnncore import _kernels
    T, H, K = 1_000_000, 8, 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, 1, K)).astype(dtype)
    w_ih = (rng.standard_normal((H, K)) / 4).astype(dtype)
    w_hh = (rng.standard_normal((H, H)) / 4).astype(dtype)
    b, h0, lengths = np.zeros(H, dtype), np.zeros((1, H), dtype), np.array([T])
    if step == "layer_forward":
        def call():
            _kernels.layer_forward(x, w_ih, w_hh, b, h0, lengths, False, False)
    else:
        hs = _kernels.layer_forward(x, w_ih, w_hh, b, h0, lengths, False, False)
        dy = np.ones((T, 1, H), dtype)

        def call():
            _kernels.layer_backward(x, w_ih, w_hh, hs, dy, h0, lengths, False, False)
    with _Counter() as counter:
        during = counter.most_ticks_during(call, attempts=20, enough=ENOUGH)
    assert during >= ENOUGH, f"only {during} ticks of another thread during the call"


def test_the_counter_stands_still_while_the_gil_is_held():
    """The measure above discriminates: a C call that holds the GIL stops the counter."""
    values = list(range(300_000))
    random.Random(0).shuffle(values)
    with _Counter() as counter:
        during = counter.most_ticks_during(lambda: sorted(values), attempts=5, enough=1)
    assert during == 0


# (batch, hidden) sizes that take the packed per-step kernels (one row, small H) and the
# BLAS per-step and whole-sequence products (larger B and H)
POLICY_SIZES = [(1, 64), (4, 48), (16, 128)]


@pytest.fixture
def restore_policy():
    """Put the kernels' ISA and whole-sequence GEMM choice back as they were."""
    from rnncore import _kernels
    isa, gemm = _kernels.isa(), _kernels.whole_sequence_gemm()
    try:
        yield _kernels
    finally:
        _kernels.set_isa(isa)
        _kernels.set_whole_sequence_gemm(gemm)


def _policy_case(dtype, B, H, bidirectional):
    rng = np.random.default_rng(B * H)
    rnn = rnncore.RNN(12, H, num_layers=2, bidirectional=bidirectional, dtype=dtype, seed=B)
    D = 2 if bidirectional else 1
    x = rng.standard_normal((20, B, 12)).astype(dtype)
    dy = rng.standard_normal((20, B, D * H)).astype(dtype)
    return rnn.params, x, dy, np.array([20 - i % 7 for i in range(B)])


def test_policy_flips_while_other_threads_compute_give_correct_results(restore_policy):
    """set_isa / set_whole_sequence_gemm from other threads never corrupt a running call.

    Each call must agree with its serial result within SPEC.md's tolerance (not bitwise:
    a call may start under any ISA, whose rounding differs).
    """
    if "cython" not in rnncore.backends():
        pytest.skip("needs the compiled kernels")
    from conftest import RTOL, assert_close
    kernels = restore_policy
    isas = kernels.supported_isas()
    gemms = ["blas", None] + (["rnncore"] if set(isas) & {"avx2", "avx512"} else [])
    cases = [(np.dtype(dt), B, H, bi) for dt in (np.float32, np.float64)
             for B, H in POLICY_SIZES for bi in (False, True)]
    inputs = [_policy_case(*case) for case in cases]

    def run(i):
        params, x, dy, lengths = inputs[i]
        y, h_n, record = F.forward(x, params, lengths=lengths, backend="cython")
        dx, dh0, grads = F.backward(record, dy)
        return [y, h_n, dx, dh0, *grads.values()]

    serial = [run(i) for i in range(len(cases))]
    stop = threading.Event()
    flips, errors = [], []

    def flip(seed):
        rng = random.Random(seed)
        n = 0
        try:
            while not stop.is_set():
                kernels.set_isa(rng.choice(isas))
                gemm = rng.choice(gemms)
                try:
                    kernels.set_whole_sequence_gemm(gemm)
                except ValueError:
                    if gemm != "rnncore":
                        raise     # "rnncore" is refused while the baseline ISA is set
                n += 1
        except BaseException as e:      # reported by the main thread
            errors.append(e)
        flips.append(n)

    flippers = [threading.Thread(target=flip, args=(seed,)) for seed in range(2)]
    for t in flippers:
        t.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            order = list(range(len(cases))) * 4
            random.Random(0).shuffle(order)
            results = list(pool.map(run, order))
    finally:
        stop.set()
        for t in flippers:
            t.join()
    assert not errors, errors
    assert sum(flips) > len(order), "the policy hardly changed while the calls ran"
    for i, got in zip(order, results, strict=True):
        dtype, B, H, bi = cases[i]
        for k, (a, b) in enumerate(zip(got, serial[i], strict=True)):
            assert_close(a, b, RTOL[dtype], what=f"{cases[i]} result {k}")
