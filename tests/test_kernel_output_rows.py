"""The kernels' forwards copy each step's states into an output array as they go.

``layer_forward(..., y=...)``, ``lstm_layer_forward`` and ``gru_layer_forward`` write
the states of steps 0..T-1 (hs[1:], in reverse hs[:T]) into ``y`` step by step, while
they are in cache, instead of the walker copying hs afterwards: ``y`` must then hold
exactly that copy, for whole batches and ranges of rows, for a layer's output and a
bidirectional direction's columns of it.
"""
import numpy as np
import pytest

from rnncore import functional

_kernels = pytest.importorskip("rnncore._kernels")


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


# H: a step's 13 rows shorter than a page (copied after the last step), and filling
# pages (copied at each step; a range of 5 rows too in float64)
@pytest.fixture(params=[20, 160], ids=["after-last-step", "at-each-step"])
def H(request):
    return request.param


def layer(dtype, T=7, B=13, K=9, H=20, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T, B, K)).astype(dtype),
            (rng.standard_normal((H, K)) / 3).astype(dtype),
            (rng.standard_normal((H, H)) / 4).astype(dtype),
            rng.standard_normal(H).astype(dtype),
            rng.standard_normal((B, H)).astype(dtype),
            rng.integers(0, T + 1, B).astype(np.int64))


class Cell:
    """One cell's kernel forward on random arguments: its output rows are W wide."""

    def __init__(self, name, dtype, H, reverse, T=7, B=13, K=9):
        rng = np.random.default_rng(0)
        G = {"rnn": 1, "lstm": 4, "lstm-proj": 4, "gru": 3}[name]
        self.W = H // 2 if name == "lstm-proj" else H

        def r(*shape, scale=1.0):
            return (rng.standard_normal(shape) * scale).astype(dtype)
        x, lengths = r(T, B, K), rng.integers(0, T + 1, B).astype(np.int64)
        w_ih, w_hh, h0 = r(G * H, K, scale=0.3), r(G * H, self.W, scale=0.2), r(B, self.W)
        if name == "rnn":
            self.fn = _kernels.layer_forward
            self.args = (x, w_ih, w_hh, r(H), h0, lengths, reverse, False)
        elif name == "gru":
            self.fn = _kernels.gru_layer_forward
            self.args = (x, w_ih, w_hh, r(G * H), r(G * H), h0, lengths, reverse)
        else:
            self.fn = _kernels.lstm_layer_forward
            w_hr = r(self.W, H, scale=0.2) if name == "lstm-proj" else None
            self.args = (x, w_ih, w_hh, r(G * H), w_hr, h0, r(B, H), lengths, reverse)
        self.shape = (T, B, self.W)
        self.reverse = reverse

    def __call__(self, **kwargs):
        """The call's arrays (hs first), as a tuple for every cell."""
        out = self.fn(*self.args, **kwargs)
        return (out,) if isinstance(out, np.ndarray) else tuple(out)

    def states_of_steps(self, hs):
        return hs[:-1] if self.reverse else hs[1:]


@pytest.fixture(params=["rnn", "lstm", "lstm-proj", "gru"])
def cell(request):
    return request.param


@pytest.mark.parametrize("reverse", [False, True])
def test_y_holds_the_states_of_every_step(cell, dtype, reverse, H):
    c = Cell(cell, dtype, H, reverse)
    y = np.full(c.shape, np.nan, dtype)
    hs = c(y=y)[0]
    np.testing.assert_array_equal(y, c.states_of_steps(hs))


@pytest.mark.parametrize("reverse", [False, True])
def test_y_as_a_directions_columns_gets_them_and_leaves_the_others(cell, dtype, reverse,
                                                                  H):
    c = Cell(cell, dtype, H, reverse)
    W = c.W
    output = np.full((7, 13, 3 * W), np.nan, dtype)
    hs = c(y=output[:, :, W:2 * W])[0]
    np.testing.assert_array_equal(output[:, :, W:2 * W], c.states_of_steps(hs))
    assert np.isnan(output[:, :, :W]).all() and np.isnan(output[:, :, 2 * W:]).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_rows_run_in_ranges_write_only_their_rows_of_y(cell, dtype, reverse, H):
    c = Cell(cell, dtype, H, reverse)
    whole = c()
    out = tuple(np.empty_like(a) for a in whole)
    out = out[0] if cell == "rnn" else out
    y = np.full(c.shape, np.nan, dtype)
    c(out=out, rows=(0, 5), y=y)
    np.testing.assert_array_equal(y[:, :5], c.states_of_steps(whole[0])[:, :5])
    assert np.isnan(y[:, 5:]).all()
    c(out=out, rows=(5, 13), y=y)
    np.testing.assert_array_equal(y, c.states_of_steps(whole[0]))


@pytest.mark.parametrize("T, B", [(1, 1), (1, 4), (5, 1)])
def test_y_of_one_step_or_one_row_may_have_any_stride_numpy_gives_it(dtype, T, B):
    x, w_ih, w_hh, b, h0, _ = layer(dtype, T=T, B=B)
    lengths = np.full(B, T, np.int64)
    output = np.zeros((T, B, 2 * 20), dtype)
    hs = _kernels.layer_forward(x, w_ih, w_hh, b, h0, lengths, False, False,
                                y=output[:, :, :20])
    np.testing.assert_array_equal(output[:, :, :20], hs[1:])


@pytest.mark.parametrize("y, error, words", [
    (np.zeros((7, 13, 21)), ValueError, "shape (7, 13, 20)"),
    (np.zeros((7, 13, 20), np.float32), TypeError, "dtype float64"),
    (np.zeros((7, 13, 40))[:, :, ::2], ValueError, "contiguous"),
    (np.zeros((13, 7, 20)).transpose(1, 0, 2), ValueError, "evenly"),
    ([[0.0]], TypeError, "ndarray"),
])
def test_a_y_the_kernel_cannot_write_is_refused_naming_it(y, error, words):
    args = layer(np.float64) + (False, False)
    with pytest.raises(error, match="y") as info:
        _kernels.layer_forward(*args, y=y)
    assert words in str(info.value)


def test_a_read_only_y_is_refused():
    y = np.zeros((7, 13, 20))
    y.flags.writeable = False
    with pytest.raises(ValueError, match="y must be writeable"):
        _kernels.layer_forward(*layer(np.float64), False, False, y=y)
    assert not y.any()


def test_the_walker_hands_the_output_to_the_kernel(monkeypatch, dtype):
    """functional.forward on the kernels, through the walker (the short paths, which
    take every one-thread call of one Elman direction, turned away), lets the kernel
    write a one-direction output (no copy of hs afterwards)."""
    x, w_ih, w_hh, b, h0, _ = layer(dtype, T=30, B=16, K=24, H=32)
    lengths = np.array([30] * 15 + [17])
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b,
              "bias_hh_l0": np.zeros_like(b)}
    seen = []
    real = _kernels.layer_forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("y"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_kernels, "layer_forward", spy)
    monkeypatch.setattr(functional, "_one_part_each", lambda *args: False)
    y, h_n, record = functional.forward(x, params, h0[None], lengths, backend="cython")
    assert len(seen) == 1 and seen[0] is y
    expected, _, _ = functional.forward(x, params, h0[None], lengths, backend="numpy")
    np.testing.assert_allclose(y, expected, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(h_n[0, :15], y[-1, :15])
    assert not y[17:, 15].any()
