"""backward(need_dh0=False) returns None for ∂L/∂h0 and every other result bit for bit
as with it; the drop-ins ask for it only when h0 requires a gradient."""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

CASES = {                      # cell, T, B, layers, bidirectional, lengths
    "elman T=1": ("rnn", 1, 1, 1, False, None),
    "elman tiny": ("rnn", 7, 3, 1, False, None),
    "elman 2 layers": ("rnn", 5, 2, 2, False, None),
    "elman lengths": ("rnn", 6, 3, 1, False, [6, 2, 1]),
    "elman bidirectional lengths": ("rnn", 6, 3, 2, True, [1, 6, 3]),
    "lstm": ("lstm", 4, 2, 2, True, None),
    "gru": ("gru", 4, 2, 1, False, [4, 1]),
}


def _network(cell, layers, bidirectional, dtype):
    cls = {"rnn": rnncore.RNN, "lstm": rnncore.LSTM, "gru": rnncore.GRU}[cell]
    return cls(5, 6, layers, bidirectional=bidirectional, dtype=dtype, seed=3)


@pytest.mark.parametrize("case", CASES)
def test_without_dh0_every_other_result_keeps_its_bits(backend, dtype, rng, case):
    cell, T, B, layers, bidirectional, lengths = CASES[case]
    rnn = _network(cell, layers, bidirectional, dtype)
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    y, h_n, record = F.forward(x, rnn.params, lengths=lengths, cell=cell, backend=backend)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dh0, grads = F.backward(record, dy)
    dx_no, dh0_no, grads_no = F.backward(record, dy, need_dh0=False)
    assert dh0 is not None and dh0_no is None
    np.testing.assert_array_equal(dx_no, dx)
    assert list(grads_no) == list(grads)
    for key in grads:
        np.testing.assert_array_equal(grads_no[key], grads[key], err_msg=key)


def test_the_kernel_without_dh0_returns_none_and_the_same_gradients(rng):
    kernels = pytest.importorskip("rnncore._kernels")
    from rnncore import reference
    H, K = 8, 3
    x = rng.standard_normal((1, 2, K)).astype(np.float32)
    w_ih = rng.standard_normal((H, K)).astype(np.float32)
    w_hh = rng.standard_normal((H, H)).astype(np.float32)
    lengths = np.ones(2, np.int64)
    hs = kernels.layer_forward(x, w_ih, w_hh, np.zeros(H, np.float32),
                               np.zeros((2, H), np.float32), lengths, False, False)
    dy, dh_n = np.ones((1, 2, H), np.float32), np.zeros((2, H), np.float32)
    for module in (kernels, reference):
        full = module.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, False, False)
        part = module.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, False, False,
                                     need_dh0=False)
        assert part[0] is None
        for a, b in zip(part[1:], full[1:], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("hx_grad", [False, True], ids=["hx without grad", "hx with grad"])
def test_the_drop_in_asks_for_dh0_only_when_hx_needs_a_gradient(monkeypatch, cell,
                                                                 hx_grad):
    torch = pytest.importorskip("torch")
    import rnncore.torch as rt
    asked = []
    original = rt.functional.backward

    def spied(*args, **kwargs):
        asked.append(kwargs.get("need_dh0", True))
        return original(*args, **kwargs)

    monkeypatch.setattr(rt.functional, "backward", spied)
    torch.manual_seed(0)
    module = getattr(rt, cell)(4, 5, 2, dtype=torch.float64)
    stock = getattr(torch.nn, cell)(4, 5, 2, dtype=torch.float64)
    stock.load_state_dict(module.state_dict())
    h = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=hx_grad)
    hx = (h, torch.zeros(2, 3, 5, dtype=torch.float64)) if cell == "LSTM" else h
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    module(x, hx)[0].sum().backward()
    got = [p.grad for p in module.parameters()], (h.grad.clone() if hx_grad else None)
    if hx_grad:
        h.grad = None
    stock(x, hx)[0].sum().backward()
    assert asked == [hx_grad]
    for a, b in zip(got[0], [p.grad for p in stock.parameters()], strict=True):
        torch.testing.assert_close(a, b)
    if hx_grad:
        torch.testing.assert_close(got[1], h.grad)


class _CountedMatrix(np.ndarray):
    """An array that counts the matrix products it takes part in."""
    products = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            type(self).products += 1
        inputs = [np.asarray(a) if isinstance(a, _CountedMatrix) else a for a in inputs]
        return getattr(ufunc, method)(*inputs, **kwargs)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_reference_without_dh0_skips_the_last_steps_recurrent_product(rng, reverse):
    from rnncore import reference
    T, B, H, K = 5, 2, 4, 3
    x = rng.standard_normal((T, B, K))
    w_ih = rng.standard_normal((H, K))
    w_hh = rng.standard_normal((H, H)).view(_CountedMatrix)
    lengths = np.full(B, T, np.int64)
    hs = reference.layer_forward(x, w_ih, np.asarray(w_hh), np.zeros(H), np.zeros((B, H)),
                                 lengths, reverse, False)
    dy, dh_n = rng.standard_normal((T, B, H)), np.zeros((B, H))
    counted = []
    for need_dh0 in (True, False):
        _CountedMatrix.products = 0
        reference.layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, reverse, False,
                                 need_dh0=need_dh0)
        counted.append(_CountedMatrix.products)
    assert counted == [T, T - 1]
