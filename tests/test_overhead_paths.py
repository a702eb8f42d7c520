"""functional's per-configuration plan and the ``snapshot_weights`` option.

functional computes once, per configuration (the parameters' keys, shapes and dtypes),
where each layer-direction's parameters sit in the mapping and the order of the
gradients. These tests pin that nothing derived from the values or the identity of the
arrays is reused from one call to the next, and what ``snapshot_weights`` shares.
The oracle is the reference backend on fresh copies of the parameters, in PyTorch's order.
"""
import numpy as np
import pytest
from conftest import assert_close

import rnncore.functional as F

K, H, L, T, B = 3, 4, 2, 5, 2


def random_params(rng, dtype, order=None):
    shapes = F.param_shapes(K, H, L, bias=True, bidirectional=True)
    return {key: rng.uniform(-0.5, 0.5, shapes[key]).astype(dtype)
            for key in (order or shapes)}


def run(x, params, dy, **kwargs):
    """output, h_n, then dx, dh0 and every gradient (PyTorch's key order) of one call."""
    y, h_n, record = F.forward(x, params, **kwargs)
    dx, dh0, grads = F.backward(record, dy)
    return [y, h_n, dx, dh0, *grads.values()], list(grads)


def oracle(x, params, dy):
    fresh = {key: np.array(params[key]) for key in F.param_shapes(K, H, L, True, True)}
    return run(x, fresh, dy, backend="numpy")


def assert_same_call(got, want, dtype):
    (got, got_keys), (want, want_keys) = got, want
    assert got_keys == want_keys
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *want_keys], got, want):
        assert_close(g, w, 1e-4 if dtype == np.float32 else 1e-10, name)


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "shared"])
@pytest.mark.parametrize("change", ["in place", "replaced"])
def test_parameter_values_changed_between_calls_are_seen(backend, dtype, rng, change,
                                                         snapshot):
    params = random_params(rng, dtype)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    run(x, params, dy, backend=backend, snapshot_weights=snapshot)
    for key, value in random_params(rng, dtype).items():
        if change == "in place":
            params[key][...] = value
        else:
            params[key] = value
    got = run(x, params, dy, backend=backend, snapshot_weights=snapshot)
    assert_same_call(got, oracle(x, params, dy), dtype)


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_parameters_in_any_key_order_give_the_same_results(backend, dtype, rng, order):
    keys = list(F.param_shapes(K, H, L, True, True))
    keys = keys[::-1] if order == "reversed" else list(rng.permutation(keys))
    params = random_params(rng, dtype, keys)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    assert_same_call(run(x, params, dy, backend=backend), oracle(x, params, dy), dtype)


@pytest.mark.parametrize("snapshot", [True, False])
def test_snapshot_weights_decides_whether_the_record_keeps_the_callers_arrays(
        backend, rng, snapshot):
    params = random_params(rng, np.float32)
    x = rng.standard_normal((T, B, K)).astype(np.float32)
    _, _, record = F.forward(x, params, backend=backend, snapshot_weights=snapshot)
    for layer in range(L):
        for d, sfx in enumerate(["", "_reverse"]):
            w_ih, w_hh, _ = record.weights[layer][d]
            for kept, key in [(w_ih, f"weight_ih_l{layer}{sfx}"),
                              (w_hh, f"weight_hh_l{layer}{sfx}")]:
                assert (kept is params[key]) is not snapshot, key
                assert np.shares_memory(kept, params[key]) is not snapshot, key


def test_without_snapshot_non_contiguous_weights_are_copied_and_give_the_same_results(
        backend, dtype, rng):
    params = {key: np.asfortranarray(value) if value.ndim == 2 else value[::-1][::-1]
              for key, value in random_params(rng, dtype).items()}
    params["bias_hh_l0"] = np.repeat(params["bias_hh_l0"], 2)[::2]     # strided
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    got = run(x, params, dy, backend=backend, snapshot_weights=False)
    assert_same_call(got, oracle(x, params, dy), dtype)


@pytest.mark.parametrize("lengths", [None, [T, 2]], ids=["full", "padded"])
def test_omitted_h0_gives_what_explicit_zeros_give_in_every_layer_and_direction(
        backend, dtype, rng, lengths):
    """forward without h0 starts every layer-direction from 0 (h_n is where it starts)."""
    params = random_params(rng, dtype)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    zeros = np.zeros((2 * L, B, H), dtype)
    got = run(x, params, dy, lengths=lengths, backend=backend)
    want = run(x, params, dy, h0=zeros, lengths=lengths, backend=backend)
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *got[1]], got[0], want[0]):
        np.testing.assert_array_equal(g, w, err_msg=name)
