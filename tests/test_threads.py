"""The kernels are safe to call from many threads at once, and release the GIL."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnncore
from rnncore import functional as F


def _case(dtype, bidirectional, seed=0):
    rng = np.random.default_rng(seed)
    rnn = rnncore.RNN(16, 48, num_layers=2, bidirectional=bidirectional, dtype=dtype, seed=1)
    D = 2 if bidirectional else 1
    xs = [rng.standard_normal((30, 5, 16)).astype(dtype) for _ in range(8)]
    dys = [rng.standard_normal((30, 5, D * 48)).astype(dtype) for _ in range(8)]
    return rnn.params, xs, dys


def _fwd_bwd(params, x, dy, backend):
    y, h_n, record = F.forward(x, params, lengths=np.array([30, 7, 19, 1, 30]),
                               backend=backend)
    dx, dh0, grads = F.backward(record, dy)
    return [y, h_n, dx, dh0, *grads.values()]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_eight_threads_on_shared_weights_equal_serial_calls_bitwise(backend, dtype,
                                                                    bidirectional):
    params, xs, dys = _case(dtype, bidirectional)
    serial = [_fwd_bwd(params, x, dy, backend) for x, dy in zip(xs, dys)]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(lambda a: _fwd_bwd(params, *a, backend), zip(xs, dys)))
        for s, p in zip(serial, parallel):
            for a, b in zip(s, p):
                np.testing.assert_array_equal(a, b)


def test_a_long_kernel_call_lets_other_threads_run():
    if "cython" not in rnncore.backends():
        pytest.skip("needs the compiled kernels")
    rnn = rnncore.RNN(8, 16, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((200_000, 1, 8))
    from rnncore import _kernels
    args = [np.ascontiguousarray(rnn.params["weight_ih_l0"]),
            np.ascontiguousarray(rnn.params["weight_hh_l0"]), np.zeros(16), np.zeros((1, 16)),
            np.array([len(x)])]
    t0 = time.perf_counter()
    _kernels.layer_forward(x, *args[:4], args[4], False, False)
    alone = time.perf_counter() - t0                     # one call, nothing else running

    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1                                    # needs the GIL for every tick
            time.sleep(0)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.01)
    before = ticks
    _kernels.layer_forward(x, *args[:4], args[4], False, False)
    during = ticks - before
    done.set()
    counter.join()
    # With the GIL held for the whole call, the counter would be stuck (a handful of
    # ticks at the switch interval of 5 ms); released, it counts freely meanwhile.
    assert alone > 0.02
    assert during > 100
