"""Memory: repeated calls do not leak, outputs never alias inputs, inputs stay unmodified."""
import itertools
import os

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

# RNNCORE_SOAK_CALLS=10000 for the full soak of docs/reliability.md
CALLS = int(os.environ.get("RNNCORE_SOAK_CALLS", "1000"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_forward_backward_calls_do_not_grow_rss(backend, bidirectional):
    # Each call allocates ~40 KB of outputs, states and gradients (and the record):
    # a leak of any one of them per call would be >= 1 MB over 1,000 calls.
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
    print(f"RSS growth over {CALLS} calls: {growth / 1024:.0f} KiB")
    assert growth < 1_000_000, f"RSS grew by {growth} bytes over {CALLS} calls"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_rejected_calls_do_not_leak(backend):
    """Errors raised after arrays were converted or copied leave nothing behind."""
    rnn = rnncore.RNN(8, 32, seed=0, backend=backend)
    x = np.ones((20, 3, 8), np.float32)

    def bad_calls():
        for call in (lambda: rnn(x, lengths=[0, 1, 2]),
                     lambda: rnn(x, np.zeros((2, 3, 32), np.float32)),
                     lambda: rnn.backward(np.ones((20, 3, 31), np.float32))):
            with pytest.raises(ValueError):
                call()

    rnn(x)
    for _ in range(200):
        bad_calls()
    before = rss_bytes()
    for _ in range(CALLS):
        bad_calls()
    growth = rss_bytes() - before
    assert growth < 1_000_000, f"RSS grew by {growth} bytes over {CALLS} rejected calls"


def _layouts(a):
    """The same values as C-ordered, Fortran-ordered, strided and read-only arrays."""
    yield "c", np.array(a)
    yield "fortran", np.asfortranarray(a)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    yield "strided", big[..., ::2]
    ro = np.array(a)
    ro.setflags(write=False)
    yield "readonly", ro


CONFIGS = list(itertools.product([False, True], ["time", "batch_first", "unbatched"],
                                 [False, True]))


@pytest.mark.parametrize("bidirectional, layout_kind, padded", CONFIGS,
                         ids=[f"{'bi' if b else 'uni'}-{k}-{'lengths' if p else 'full'}"
                              for b, k, p in CONFIGS])
def test_outputs_never_alias_inputs_and_inputs_are_unmodified(backend, dtype, bidirectional,
                                                              layout_kind, padded):
    L, D, T, B, K, H = 2, 2 if bidirectional else 1, 6, 3, 4, 5
    rnn = rnncore.RNN(K, H, num_layers=L, bidirectional=bidirectional, dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    unbatched = layout_kind == "unbatched"
    if unbatched:
        B = 1
        x_shape, state_shape = (T, K), (L * D, H)
    else:
        x_shape = (B, T, K) if layout_kind == "batch_first" else (T, B, K)
        state_shape = (L * D, B, H)
    lengths = np.array([6, 2, 4][:B]) if padded else None
    base = {"x": rng.standard_normal(x_shape), "h0": rng.standard_normal(state_shape),
            "dy": rng.standard_normal(x_shape[:-1] + (D * H,)),
            "dh_n": rng.standard_normal(state_shape)}
    for layout in ("c", "fortran", "strided", "readonly"):
        arrays = {k: dict(_layouts(v.astype(dtype)))[layout] for k, v in base.items()}
        params = {k: dict(_layouts(p))[layout] for k, p in rnn.params.items()}
        lengths_in = None if lengths is None else lengths.copy()
        kept = {k: v.copy() for k, v in {**arrays, **params}.items()}
        y, h_n, record = F.forward(arrays["x"], params, arrays["h0"], lengths_in,
                                   batch_first=layout_kind == "batch_first", backend=backend)
        dx, dh0, grads = F.backward(record, arrays["dy"], arrays["dh_n"])
        outputs = {"y": y, "h_n": h_n, "dx": dx, "dh0": dh0, **grads}
        inputs = {**arrays, **params}
        if lengths_in is not None:
            inputs["lengths"] = lengths_in
            np.testing.assert_array_equal(lengths_in, lengths)
        for (out_name, out), (in_name, a) in itertools.product(outputs.items(),
                                                               inputs.items()):
            assert not np.shares_memory(out, a), f"{out_name} aliases {in_name} ({layout})"
        for (name1, a1), (name2, a2) in itertools.combinations(outputs.items(), 2):
            assert not np.shares_memory(a1, a2), f"{name1} aliases {name2} ({layout})"
        for name, a in kept.items():
            np.testing.assert_array_equal(inputs[name], a, err_msg=f"{name} ({layout})")
            assert inputs[name].flags.writeable == (layout != "readonly"), name
        for out in outputs.values():
            assert out.flags.writeable          # the caller owns every output


def test_rnn_class_outputs_are_its_own(backend):
    """The class's outputs alias neither its parameters, its gradients nor the input,
    and a later call does not overwrite what an earlier call returned."""
    rnn = rnncore.RNN(4, 6, num_layers=2, bidirectional=True, seed=0, backend=backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    y, h_n = rnn(x)
    dx, dh0 = rnn.backward(np.ones_like(y))
    kept = [a.copy() for a in (y, h_n, dx, dh0)]
    for a in (y, h_n, dx, dh0):
        for other in (x, *rnn.params.values(), *rnn.grads.values()):
            assert not np.shares_memory(a, other)
    rnn(2 * x)
    rnn.backward(np.full_like(y, 3))
    for a, b in zip((y, h_n, dx, dh0), kept, strict=True):
        np.testing.assert_array_equal(a, b)
    state = rnn.state_dict()
    for key, value in state.items():
        assert not np.shares_memory(value, rnn.params[key])
