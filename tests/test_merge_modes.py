"""Bidirectional merge modes: the last layer's two directions summed, averaged or
multiplied instead of concatenated; the layers below and h_n as with "concat"."""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import RTOL, assert_close

MODES = ["sum", "mean", "mul"]
CELLS = ["rnn", "lstm", "gru"]


def _merge_by_hand(y, mode):
    """The concat output (T, B, 2W) merged in NumPy: (T, B, W)."""
    W = y.shape[-1] // 2
    f, r = y[..., :W], y[..., W:]
    return {"sum": f + r, "mean": (f + r) / 2, "mul": f * r}[mode]


def _unmerge_by_hand(dy, y, mode):
    """∂L/∂(concat output) from ∂L/∂(merged output), the chain rule written out."""
    W = y.shape[-1] // 2
    f, r = y[..., :W], y[..., W:]
    if mode == "sum":
        return np.concatenate([dy, dy], axis=-1)
    if mode == "mean":
        return np.concatenate([dy / 2, dy / 2], axis=-1)
    return np.concatenate([dy * r, dy * f], axis=-1)


def _case(cell, dtype, layers=2, T=9, B=4, K=5, H=6, proj_size=0, seed=0):
    rng = np.random.default_rng(seed)
    shapes = F.param_shapes(K, H, layers, bias=True, bidirectional=True, cell=cell,
                            proj_size=proj_size)
    params = {k: rng.uniform(-0.6, 0.6, s).astype(dtype) for k, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    return params, x, rng


def _skip_unless_implemented(backend, cell):
    if backend not in F.backends_for(cell):
        pytest.skip(f"{backend} does not implement {cell}")


@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_output_is_the_concat_output_merged(backend, dtype, cell, mode, padded):
    _skip_unless_implemented(backend, cell)
    params, x, _ = _case(cell, dtype)
    lengths = [9, 3, 1, 7] if padded else None
    y_cat, h_cat, _ = F.forward(x, params, lengths=lengths, cell=cell, backend=backend)
    y, h_n, _ = F.forward(x, params, lengths=lengths, cell=cell, backend=backend,
                          merge_mode=mode)
    assert y.shape == x.shape[:2] + (6,)
    np.testing.assert_array_equal(y, _merge_by_hand(y_cat, mode))
    for a, b in zip(h_n if cell == "lstm" else [h_n], h_cat if cell == "lstm" else [h_cat],
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", MODES)
def test_padded_steps_of_the_merged_output_are_zero(backend, dtype, mode):
    params, x, _ = _case("rnn", dtype)
    h0 = np.full((4, 4, 6), 0.5, dtype)         # the reverse slot at len_b holds h0
    y, _, _ = F.forward(x, params, h0, lengths=[9, 3, 1, 7], backend=backend,
                        merge_mode=mode)
    assert not y[3:, 1].any() and not y[1:, 2].any() and not y[7:, 3].any()
    assert np.abs(y[:3, 1]).min() > 0


@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_is_the_concat_backward_through_the_chain_rule(backend, dtype, cell, mode,
                                                                padded):
    _skip_unless_implemented(backend, cell)
    params, x, rng = _case(cell, dtype)
    lengths = [9, 3, 1, 7] if padded else None
    y_cat, _, rec_cat = F.forward(x, params, lengths=lengths, cell=cell, backend=backend)
    y, _, rec = F.forward(x, params, lengths=lengths, cell=cell, backend=backend,
                          merge_mode=mode)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy_cat = _unmerge_by_hand(dy, y_cat, mode)
    want_dx, want_dh0, want = F.backward(rec_cat, dy_cat)
    dx, dh0, grads = F.backward(rec, dy)
    assert_close(dx, want_dx, RTOL[dtype], "dx")
    for a, b in zip(dh0 if cell == "lstm" else [dh0],
                    want_dh0 if cell == "lstm" else [want_dh0], strict=True):
        assert_close(a, b, RTOL[dtype], "dh0")
    for key in want:
        assert_close(grads[key], want[key], RTOL[dtype], key)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_finite_differences(backend, cell, mode):
    _skip_unless_implemented(backend, cell)
    dtype = np.float64
    params, x, rng = _case(cell, dtype, layers=2, T=5, B=3, K=3, H=4)
    lengths = [5, 2, 4]
    y, _, rec = F.forward(x, params, lengths=lengths, cell=cell, backend=backend,
                          merge_mode=mode)
    dy = rng.standard_normal(y.shape)
    dx, _, grads = F.backward(rec, dy)

    def loss(p, xx):
        out, _, _ = F.forward(xx, p, lengths=lengths, cell=cell, backend=backend,
                              merge_mode=mode)
        return float((out * dy).sum())

    eps = 1e-6
    for key in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_hh_l1"):
        for index in [(0, 0), (1, 2)] if params[key].ndim == 2 else [(0,), (3,)]:
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[key][index] += eps
            minus[key][index] -= eps
            numeric = (loss(plus, x) - loss(minus, x)) / (2 * eps)
            assert abs(grads[key][index] - numeric) <= 1e-6 * max(1, abs(numeric)), key
    for index in [(0, 0, 1), (3, 1, 2), (1, 2, 0)]:
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (loss(params, plus) - loss(params, minus)) / (2 * eps)
        assert abs(dx[index] - numeric) <= 1e-6 * max(1, abs(numeric))


def test_lstm_projection_merges_the_projected_states(backend, dtype):
    _skip_unless_implemented(backend, "lstm")
    params, x, _ = _case("lstm", dtype, H=6, proj_size=2)
    y_cat, _, _ = F.forward(x, params, cell="lstm", backend=backend)
    y, _, _ = F.forward(x, params, cell="lstm", backend=backend, merge_mode="mean")
    assert y.shape == x.shape[:2] + (2,)
    np.testing.assert_array_equal(y, _merge_by_hand(y_cat, "mean"))


@pytest.mark.parametrize("mode", ["concat"] + MODES)
def test_unidirectional_output_is_unchanged_by_every_mode(backend, dtype, mode):
    rng = np.random.default_rng(1)
    params = {k: rng.uniform(-0.5, 0.5, s).astype(dtype)
              for k, s in F.param_shapes(3, 4, 2).items()}
    x = rng.standard_normal((6, 2, 3)).astype(dtype)
    want, _, rec_want = F.forward(x, params, backend=backend)
    y, _, rec = F.forward(x, params, backend=backend, merge_mode=mode)
    np.testing.assert_array_equal(y, want)
    dy = rng.standard_normal(y.shape).astype(dtype)
    for a, b in zip(F.backward(rec, dy)[:2], F.backward(rec_want, dy)[:2], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["max", "Sum", None, 1, ("sum",)])
def test_bad_merge_mode_is_a_value_error_naming_it_and_the_choices(bad):
    params = F.param_shapes(3, 4, 1, bidirectional=True)
    params = {k: np.zeros(s, np.float32) for k, s in params.items()}
    with pytest.raises(ValueError, match=r"merge_mode must be one of \('concat', 'sum', "
                                         r"'mean', 'mul'\); got"):
        F.forward(np.zeros((2, 1, 3), np.float32), params, merge_mode=bad)
    with pytest.raises(ValueError, match="merge_mode must be one of"):
        rnncore.GRU(3, 4, bidirectional=True, merge_mode=bad)


def test_dy_must_have_the_merged_shape():
    shapes = F.param_shapes(3, 4, 1, bidirectional=True)
    params = {k: np.zeros(s) for k, s in shapes.items()}
    _, _, rec = F.forward(np.zeros((2, 1, 3)), params, merge_mode="sum")
    with pytest.raises(ValueError, match=r"dy must have the shape of the forward output "
                                         r"\(2, 1, 4\); got \(2, 1, 8\)"):
        F.backward(rec, np.zeros((2, 1, 8)))


@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
@pytest.mark.parametrize("mode", MODES)
def test_classes_merge_and_accumulate_the_merged_gradients(backend, cls, mode):
    cell = cls._cell
    _skip_unless_implemented(backend, cell)
    net = cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, seed=2,
              dtype=np.float64, backend=backend, merge_mode=mode)
    assert f"merge_mode={mode!r}" in repr(net)
    x = np.random.default_rng(3).standard_normal((2, 7, 3))
    y, _ = net(x)
    want_y, _, rec = F.forward(x, net.params, cell=cell, batch_first=True,
                               backend=backend, merge_mode=mode)
    np.testing.assert_array_equal(y, want_y)
    assert y.shape == (2, 7, 5)
    dy = np.ones_like(y)
    net.backward(dy)
    _, _, want = F.backward(rec, dy)
    for key in want:
        np.testing.assert_array_equal(net.grads[key], want[key])
