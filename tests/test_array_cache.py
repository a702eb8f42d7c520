"""The block cache: large arrays of rnncore's calls reuse the blocks of freed ones,
handed out whole and correct, within the limit, and never for the caller's own arrays."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import rnncore
from rnncore import _memory
from rnncore import functional as F

BIG = _memory.MIN_BYTES // 4 + 1000          # float32 elements of a cached block


try:
    from numpy._core.multiarray import get_handler_name as _handler
except ImportError:                           # NumPy 1.x
    from numpy.core.multiarray import get_handler_name as _handler


@pytest.fixture
def limit():
    """Restores the cache's limit after a test that changes it."""
    previous = rnncore.set_array_cache(256 << 20)
    yield
    rnncore.set_array_cache(previous)


def _params(H, K, dtype=np.float32):
    rng = np.random.default_rng(0)
    return {"weight_ih_l0": (0.1 * rng.standard_normal((H, K))).astype(dtype),
            "weight_hh_l0": (0.1 * rng.standard_normal((H, H))).astype(dtype),
            "bias_ih_l0": np.zeros(H, dtype), "bias_hh_l0": np.zeros(H, dtype)}


def test_outputs_of_a_large_call_come_from_the_cache(backend):
    y, h_n, record = F.forward(np.ones((50, 8, 32), np.float32), _params(128, 32),
                               backend=backend)
    assert _handler(y) == "rnncore_block_cache"


def test_a_tiny_call_leaves_numpy_allocator_alone(backend):
    y, h_n, record = F.forward(np.ones((10, 1, 8), np.float32), _params(16, 8),
                               backend=backend)
    assert _handler(y) == "default_allocator"


def test_arrays_made_outside_rnncore_calls_do_not_use_the_cache():
    F.forward(np.ones((50, 8, 32), np.float32), _params(128, 32))
    assert _handler(np.empty(BIG, np.float32)) == "default_allocator"


def test_the_next_call_reuses_the_blocks_of_freed_outputs(backend, limit):
    x, params = np.ones((50, 8, 32), np.float32), _params(128, 32)
    y, h_n, record = F.forward(x, params, backend=backend)
    F.backward(record, np.ones_like(y))
    del y, h_n, record
    before = rnncore.array_cache_info()["hits"]
    y, h_n, record = F.forward(x, params, backend=backend)
    F.backward(record, np.ones_like(y))
    assert rnncore.array_cache_info()["hits"] >= before + 3


def test_kernel_workspaces_come_from_the_cache(limit):
    kernels = pytest.importorskip("rnncore._kernels")
    H = 512                                  # the packed W_hh: 1 MiB
    x, w = np.ones((4, 8, H), np.float32), _params(H, H)
    args = (x, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"],
            np.zeros((8, H), np.float32), np.full(8, 4, np.int64), False, False)
    kernels.layer_forward(*args)
    before = rnncore.array_cache_info()["hits"]
    kernels.layer_forward(*args)
    assert rnncore.array_cache_info()["hits"] > before


def test_zeros_from_a_reused_block_are_zero():
    token = _memory.enter()
    try:
        dirty = np.empty(BIG, np.float32)
        dirty.fill(np.nan)
        address = dirty.ctypes.data
        del dirty
        zeros = np.zeros(BIG, np.float32)
    finally:
        _memory.leave(token)
    assert zeros.ctypes.data == address      # the dirty block itself came back
    assert not zeros.any()


@pytest.mark.parametrize("new_size", [BIG // 2, BIG + 5000, 100], ids=["shrink", "grow",
                                                                         "small"])
def test_resizing_a_cached_array_keeps_its_values(new_size):
    token = _memory.enter()
    try:
        a = np.arange(BIG, dtype=np.float32)
        a.resize(new_size, refcheck=False)
    finally:
        _memory.leave(token)
    kept = min(BIG, new_size)
    np.testing.assert_array_equal(a[:kept], np.arange(kept, dtype=np.float32))
    assert not a[kept:].any()


def test_the_cache_holds_no_more_than_its_limit(limit):
    rnncore.set_array_cache(3 * _memory.MIN_BYTES)
    token = _memory.enter()
    try:
        arrays = [np.empty(BIG, np.float32) for _ in range(6)]
    finally:
        _memory.leave(token)
    del arrays
    info = rnncore.array_cache_info()
    assert 0 < info["bytes"] <= 3 * _memory.MIN_BYTES
    assert info["blocks"] == 2               # each block is a little over MIN_BYTES


def test_a_limit_of_zero_empties_the_cache_and_turns_it_off(limit):
    F.forward(np.ones((50, 8, 32), np.float32), _params(128, 32))
    assert rnncore.array_cache_info()["blocks"] > 0
    assert rnncore.set_array_cache(0) == 256 << 20
    assert rnncore.array_cache_info()["blocks"] == 0
    y, h_n, record = F.forward(np.ones((50, 8, 32), np.float32), _params(128, 32))
    assert _handler(y) == "default_allocator"


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError),
                                        ("64", TypeError), (True, TypeError)])
def test_set_array_cache_rejects_a_bad_limit(bad, error):
    with pytest.raises(error, match="max_bytes must be an int >= 0"):
        rnncore.set_array_cache(bad)


@pytest.mark.parametrize("value, limit_or_error", [("2", str(2 << 20)), ("0", "0"),
                                                   ("lots", "ValueError"),
                                                   ("-1", "ValueError")])
def test_the_environment_sets_the_limit_at_import(value, limit_or_error):
    code = ("try:\n    import rnncore\n    print(rnncore.array_cache_info()['limit'])\n"
            "except ValueError as e:\n    print('ValueError', e)")
    env = dict(os.environ, RNNCORE_ARRAY_CACHE_MB=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True)
    assert out.stdout.split()[0] == limit_or_error, out.stdout + out.stderr
    if limit_or_error == "ValueError":
        assert f"RNNCORE_ARRAY_CACHE_MB must be a number of MiB >= 0; got '{value}'" \
            in out.stdout


def test_calls_on_many_threads_while_the_limit_changes_agree_with_one_thread(limit):
    x, params = np.ones((50, 8, 32), np.float32), _params(128, 32)
    want = F.forward(x, params)[0]
    failures = []

    def work():
        for _ in range(20):
            y, h_n, record = F.forward(x, params)
            F.backward(record, np.ones_like(y))
            if not np.array_equal(y, want):
                failures.append(y)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for size in [0, 1 << 20, 0, 64 << 20] * 5:
        rnncore.set_array_cache(size)
    for t in threads:
        t.join()
    assert not failures
