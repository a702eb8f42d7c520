"""Repeated calls do not leak: resident memory settles after warm-up."""
import os

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

CALLS = int(os.environ.get("RNNCORE_SOAK_CALLS", "1000"))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_forward_backward_calls_do_not_grow_rss(backend, bidirectional):
    rnn = rnncore.RNN(8, 32, num_layers=2, bidirectional=bidirectional, seed=0,
                      backend=backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3, 8)).astype(np.float32)
    dy = rng.standard_normal((20, 3, 64 if bidirectional else 32)).astype(np.float32)
    lengths = np.array([20, 5, 11])
    for _ in range(200):                       # warm-up: allocator pools, caches
        rnn(x, lengths=lengths)
        rnn.backward(dy)
    before = rss_bytes()
    for _ in range(CALLS):
        rnn(x, lengths=lengths)
        rnn.backward(dy)
    growth = rss_bytes() - before
    assert growth < 1_000_000, f"RSS grew by {growth} bytes over {CALLS} calls"
