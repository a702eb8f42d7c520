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
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *want_keys], got, want, strict=True):
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
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *got[1]], got[0], want[0], strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lengths_that_pad_nothing_give_the_padded_calls_bits(backend, dtype, rng, cell,
                                                              bidirectional):
    shapes = F.param_shapes(K, H, L, bidirectional=bidirectional, cell=cell)
    params = {key: rng.uniform(-0.5, 0.5, s).astype(dtype) for key, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, (1 + bidirectional) * H)).astype(dtype)
    got = run(x, params, dy, lengths=np.full(B, T), cell=cell, backend=backend)
    want = run(x, params, dy, cell=cell, backend=backend)
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *got[1]], got[0], want[0], strict=True):
        pair = isinstance(g, tuple)               # an LSTM's h_n and dh0: (h, c)
        for g_part, w_part in zip(g if pair else [g], w if pair else [w], strict=True):
            np.testing.assert_array_equal(g_part, w_part, err_msg=name)


# A one-direction Elman network whose layers each run in one call takes functional's
# short path (the layers back to back); every option below routes the same computation
# around it (through the layer walker), which must give the same bits.
ROUTES_AROUND = {
    "checkpointed": dict(checkpoint=1),
    "checkpoint auto": dict(checkpoint="auto"),
}


def one_direction_call(x, params, dy, dh_n, **kwargs):
    """output, h_n, dx, dh0 and every gradient (PyTorch's order) of one call."""
    y, h_n, record = F.forward(x, params, **kwargs)
    dx, dh0, grads = F.backward(record, dy, dh_n)
    return [y, h_n, dx, dh0, *grads.values()], list(grads)


def one_direction_params(rng, dtype, bias, layers=1):
    shapes = F.param_shapes(K, H, layers, bias=bias)
    return {key: rng.uniform(-0.5, 0.5, shape).astype(dtype)
            for key, shape in shapes.items()}


@pytest.fixture
def short_paths(monkeypatch):
    """How many calls took the short path, through functional's Python or its
    compiled form (which takes a call or returns None): {"forward": n, "backward": n}."""
    counts = {"forward": 0, "backward": 0}
    routes = [(F, "_stacked_forward", "forward"), (F, "_backward_stacked", "backward")]
    if F._short is not None:
        routes += [(F._short, "forward", "forward"), (F._short, "backward", "backward")]
    for module, name, kind in routes:
        def counted(*args, _run=getattr(module, name), _kind=kind, **kwargs):
            result = _run(*args, **kwargs)
            counts[_kind] += result is not None
            return result
        monkeypatch.setattr(module, name, counted)
    return counts


@pytest.mark.parametrize("route", ROUTES_AROUND)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero h0", "h0"])
@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("layers", [1, 3])
def test_the_one_direction_short_path_gives_the_bits_of_the_layer_walker(
        backend, dtype, rng, route, bias, h0, relu, layers, short_paths):
    params = one_direction_params(rng, dtype, bias, layers)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((layers, B, H)).astype(dtype)
    common = dict(backend=backend, nonlinearity="relu" if relu else "tanh",
                  h0=rng.standard_normal((layers, B, H)).astype(dtype) if h0 else None)
    got, got_keys = one_direction_call(x, params, dy, dh_n, **common)
    assert short_paths == {"forward": 1, "backward": 1}
    want, want_keys = one_direction_call(x, params, dy, dh_n, **common,
                                         **ROUTES_AROUND[route])
    assert short_paths["forward"] == 1            # the walker ran the second call
    assert got_keys == want_keys == list(params)
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *want_keys], got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)


def test_lengths_that_pad_nothing_take_the_short_path(backend, rng, short_paths):
    """Every sequence T long: the padded call's path (one layer-direction: the short
    path), not the walker's with masks."""
    params = one_direction_params(rng, np.float32, True)
    x = rng.standard_normal((T, B, K)).astype(np.float32)
    F.forward(x, params, lengths=[T] * B, backend=backend)
    assert short_paths["forward"] == 1


# lengths that pad something (B = 2 rows of T steps), each a case of the walker's steps
PADDED = {
    "one row shorter": [T, T - 3],
    "every row shorter": [T - 2, T - 1],       # the last step not run
    "every row as short": [T - 2] * B,         # ... and no mask
}


@pytest.mark.parametrize("case", list(PADDED))
@pytest.mark.parametrize("h0", [False, True], ids=["zero h0", "h0"])
@pytest.mark.parametrize("layers", [1, 3])
def test_lengths_that_pad_something_take_the_short_path_with_the_walkers_bits(
        backend, dtype, rng, case, h0, layers, short_paths):
    params = one_direction_params(rng, dtype, True, layers)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((layers, B, H)).astype(dtype)
    common = dict(backend=backend, lengths=PADDED[case],
                  h0=rng.standard_normal((layers, B, H)).astype(dtype) if h0 else None)
    got, _ = one_direction_call(x, params, dy, dh_n, **common)
    assert short_paths == {"forward": 1, "backward": 1}
    want, keys = one_direction_call(x, params, dy, dh_n, **common, checkpoint=1)
    assert short_paths["forward"] == 1            # the walker ran the second call
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *keys], got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.parametrize("layout", ["batch_first", "unbatched"])
def test_the_short_path_gives_the_walkers_bits_in_every_layout(backend, dtype, rng,
                                                               layout):
    params = one_direction_params(rng, dtype, True)
    batch = 1 if layout == "unbatched" else B
    x = rng.standard_normal((T, batch, K)).astype(dtype)
    dy = rng.standard_normal((T, batch, H)).astype(dtype)
    dh_n = rng.standard_normal((1, batch, H)).astype(dtype)
    if layout == "unbatched":
        x, dy, dh_n, kwargs = x[:, 0], dy[:, 0], dh_n[:, 0], {}
    else:
        x, dy = x.transpose(1, 0, 2), dy.transpose(1, 0, 2)
        kwargs = dict(batch_first=True)
    got, grad_names = one_direction_call(x, params, dy, dh_n, backend=backend, **kwargs)
    want, _ = one_direction_call(x, params, dy, dh_n, backend=backend, checkpoint=1,
                                 **kwargs)
    for name, g, w in zip(["y", "h_n", "dx", "dh0", *grad_names], got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.parametrize("option, value", [
    ("cell", "".join(["r", "nn"])),                 # equal to "rnn", another object
    ("nonlinearity", "".join(["ta", "nh"])),
    ("merge_mode", "".join(["con", "cat"])),
    ("deterministic", np.bool_(True)),
    ("checkpoint", np.int64(0)),
])
def test_default_options_given_as_other_objects_give_the_same_results(rng, option,
                                                                      value):
    params = one_direction_params(rng, np.float32, True)
    x = rng.standard_normal((T, B, K)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    got, _ = one_direction_call(x, params, dy, None, **{option: value})
    want, _ = one_direction_call(x, params, dy, None)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_the_short_paths_results_are_the_callers_own(backend, dtype, rng):
    """Nothing returned shares memory with the record or with another result, and
    writing into what a call returned changes neither its backward nor the next call
    (the zero state the short path starts from when h0 is omitted is shared)."""
    params = one_direction_params(rng, dtype, True)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    first, _ = one_direction_call(x, params, dy, None, backend=backend)
    y, h_n, record = F.forward(x, params, backend=backend)
    dx, dh0, grads = F.backward(record, dy)
    results = [y, h_n, dx, dh0, *grads.values()]
    for i, a in enumerate(results):
        assert a.flags.writeable, i
        assert not any(np.shares_memory(a, s) for s in record.states[0]), i
        assert not any(np.shares_memory(a, b) for b in results[i + 1:]), i
    for a in results:
        a[...] = np.nan
    again = F.backward(record, dy)
    for name, g, w in zip(["dx", "dh0", *grads], [again[0], again[1],
                                                 *again[2].values()], first[2:],
   strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)
    second, _ = one_direction_call(x, params, dy, None, backend=backend)
    for g, w in zip(second, first, strict=True):
        np.testing.assert_array_equal(g, w)


def layer_params(params, layer):
    """Layer ``layer``'s parameters of a one-direction network, named as layer 0's."""
    return {key.replace(f"_l{layer}", "_l0"): value for key, value in params.items()
            if key.endswith(f"_l{layer}")}


@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no dx"])
@pytest.mark.parametrize("need_dh0", [True, False], ids=["dh0", "no dh0"])
def test_the_stacked_short_path_gives_the_bits_of_one_call_per_layer(
        backend, dtype, rng, need_dx, need_dh0, short_paths):
    """Three layers in one call give what three one-layer calls chained by hand give:
    each layer's output the next one's input, each layer's ∂x the ∂y of the one below."""
    L = 3
    params = one_direction_params(rng, dtype, True, L)
    x = rng.standard_normal((T, B, K)).astype(dtype)
    h0 = rng.standard_normal((L, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((L, B, H)).astype(dtype)
    y, h_n, record = F.forward(x, params, h0, backend=backend)
    dx, dh0, grads = F.backward(record, dy, dh_n, need_dx=need_dx, need_dh0=need_dh0)
    assert short_paths == {"forward": 1, "backward": 1}

    layer_in, records, finals = x, [], []
    for layer in range(L):
        layer_in, final, rec = F.forward(layer_in, layer_params(params, layer),
                                         h0[layer:layer + 1], backend=backend)
        records.append(rec)
        finals.append(final)
    np.testing.assert_array_equal(y, layer_in)
    np.testing.assert_array_equal(h_n, np.concatenate(finals))
    d_below = dy
    for layer in reversed(range(L)):
        d_below, d0, layer_grads = F.backward(records[layer], d_below,
                                              dh_n[layer:layer + 1],
                                              need_dx=layer > 0 or need_dx,
                                              need_dh0=need_dh0)
        if need_dh0:
            np.testing.assert_array_equal(dh0[layer:layer + 1], d0)
        for key, g in layer_grads.items():
            np.testing.assert_array_equal(grads[key.replace("_l0", f"_l{layer}")], g,
                                          err_msg=f"layer {layer} {key}")
    assert dh0 is None if not need_dh0 else dh0.shape == (L, B, H)
    if need_dx:
        np.testing.assert_array_equal(dx, d_below)
    else:
        assert dx is None


def test_checked_params_give_the_bits_of_the_plain_mapping_and_see_in_place_changes(
        backend, dtype, rng):
    """A mapping checked once (what the torch drop-ins keep) is read as the dict it was
    made from, and values changed in place since are the values computed with."""
    from rnncore._params import CheckedParams

    params = one_direction_params(rng, dtype, True, layers=2)
    checked = CheckedParams(params, "rnn")
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    for key, value in one_direction_params(rng, dtype, True, layers=2).items():
        params[key][...] = value
    got, got_keys = one_direction_call(x, checked, dy, None, backend=backend)
    want, want_keys = one_direction_call(x, params, dy, None, backend=backend)
    assert got_keys == want_keys
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_checked_params_are_read_only_and_checked_when_made():
    from rnncore._params import CheckedParams

    params = one_direction_params(np.random.default_rng(0), np.float32, True)
    checked = CheckedParams(params, "rnn")
    assert dict(checked) == params and len(checked) == len(params)
    with pytest.raises(TypeError):
        checked["weight_ih_l0"] = params["weight_ih_l0"]
    del params["bias_hh_l0"]
    with pytest.raises(ValueError, match="missing"):
        CheckedParams(params, "rnn")


@pytest.mark.parametrize("cached", [False, True], ids=["compiled", "block cache"])
def test_the_short_paths_ignore_dy_at_padded_steps(backend, rng, monkeypatch, cached,
                                                   short_paths):
    """dy's values at padded steps (NaN here) are not read, on either short path (the
    compiled one, and functional's Python one that calls through the block cache
    take): the results of a dy zeroed there, and the caller's dy unchanged."""
    if cached:
        monkeypatch.setattr(F, "_CACHED_ELEMENTS", 1)
    if F._short is not None:
        F._short.forget_kept()
    params = one_direction_params(rng, np.float32, True, 2)
    x = rng.standard_normal((T, B, K)).astype(np.float32)
    lengths = [T, T - 3]
    y, _, record = F.forward(x, params, lengths=lengths, backend=backend)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy[T - 3:, 1] = np.nan
    zeroed = np.nan_to_num(dy, nan=0.0)
    before = dy.copy()
    got = F.backward(record, dy)
    want = F.backward(record, zeroed)
    assert short_paths == {"forward": 1, "backward": 2}
    np.testing.assert_array_equal(dy, before)
    for g, w in zip([got[0], got[1], *got[2].values()],
                    [want[0], want[1], *want[2].values()], strict=True):
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, w)


# The walker's configurations: what takes a call off the short paths.
WALKER = {
    "one direction": dict(),
    "bidirectional": dict(bidirectional=True),
    "bidirectional, merged by sum": dict(bidirectional=True, merge_mode="sum"),
    "split over two threads": dict(threads=2),
    "chunked": dict(chunked=True),
    "checkpointed": dict(checkpoint=2),
}


def _backends_and_isas():
    """("numpy", None), then ("cython", isa) for each instruction set the kernels run
    here."""
    try:
        from rnncore import _kernels
    except ImportError:
        return [("numpy", None)]
    return [("numpy", None)] + [("cython", isa) for isa in _kernels.supported_isas()]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("config", list(WALKER))
@pytest.mark.parametrize("backend, isa", _backends_and_isas())
def test_every_path_ignores_dy_at_padded_steps(backend, isa, rng, monkeypatch, config,
                                               cell):
    """dy's values at padded steps (NaN here) are not read, by any configuration, cell
    or instruction set (the kernels pass the caller's dy as it is): the results of a
    dy zeroed there, and the caller's dy unchanged."""
    import rnncore
    from rnncore import _chunks, _parallel
    if isa is not None:
        from rnncore import _kernels
        _kernels.set_isa(isa)
    options = dict(WALKER[config])
    D = 2 if options.pop("bidirectional", False) else 1
    if options.pop("threads", 1) > 1:
        for name in ("_MIN_PARALLEL_WORK", "_MIN_PART_WORK", "_MIN_PART_ROWS"):
            monkeypatch.setattr(_parallel, name, 1)
        rnncore.set_num_threads(2)
    if options.pop("chunked", False):
        monkeypatch.setattr(_chunks, "WHOLE_CALL_ROWS", 1)
        monkeypatch.setattr(_chunks, "MIN_CHUNK_ROWS", 1)
    try:
        Tw, Bw = 9, 6
        shapes = F.param_shapes(K, H, 2, bias=True, bidirectional=D == 2, cell=cell)
        params = {key: rng.uniform(-0.5, 0.5, s).astype(np.float32)
                  for key, s in shapes.items()}
        x = rng.standard_normal((Tw, Bw, K)).astype(np.float32)
        lengths = [Tw, 2, 7, Tw, 1, 5]
        y, _, record = F.forward(x, params, lengths=lengths, cell=cell, backend=backend,
                                 **options)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        for i, n in enumerate(lengths):
            dy[n:, i] = np.nan
        zeroed = np.nan_to_num(dy, nan=0.0)
        before = dy.copy()
        got = F.backward(record, dy)
        want = F.backward(record, zeroed)
    finally:
        rnncore.set_num_threads(None)
        if isa is not None:
            _kernels.set_isa(None)
    np.testing.assert_array_equal(dy, before)
    for g, w in zip([got[0], *np.atleast_1d(got[1]), *got[2].values()],
                    [want[0], *np.atleast_1d(want[1]), *want[2].values()], strict=True):
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, w)
