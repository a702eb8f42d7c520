"""The drop-ins on PyTorch's own module test inputs for nn.RNN, nn.GRU and nn.LSTM.

The cases are those of ``module_inputs_torch_nn_RNN_GRU`` (with its packed-sequence
samples) and ``module_inputs_torch_nn_LSTM`` in torch 2.13's
``torch/testing/_internal/common_modules.py``, written out here because that module
cannot be imported without torch's own test dependencies (``expecttest``). Each case runs
on the drop-in and on stock torch with the same weights, in training and in eval mode;
outputs and every gradient must agree within float rounding, and the call must have run on
rnncore.
"""
from itertools import product

import pytest

from conftest import assert_close

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402
from rnncore import functional as F  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

TOL = {torch.float32: 5e-5, torch.float64: 1e-11}
DROP_IN = {torch.nn.RNN: rt.RNN, torch.nn.GRU: rt.GRU, torch.nn.LSTM: rt.LSTM}


def _rnn_gru_cases(stock, is_rnn):
    """``module_inputs_torch_nn_RNN_GRU(..., with_packed_sequence=True)``: (constructor
    kwargs, input shape, hx shape or None, packed lengths or None)."""
    cases = []
    for nl, b, b_f, bidir in product(("relu", "tanh") if is_rnn else (None,),
                                     (False, True), (False, True), (False, True)):
        args = {"input_size": 2, "hidden_size": 2, "num_layers": 2, "batch_first": b_f,
                "bias": b, "bidirectional": bidir}
        if is_rnn:
            args["nonlinearity"] = nl
        cases.append((stock, args, (3, 2), None, None))
        cases.append((stock, {**args, "hidden_size": 3}, (3, 2), (4 if bidir else 2, 3),
                      None))
        cases.append((stock, args, (5, 2, 2), None, [5, 3]))
        cases.append((stock, args, (5, 5, 2), None, [5, 3, 3, 2, 2]))
    return cases


def _lstm_cases():
    """``module_inputs_torch_nn_LSTM``: (constructor kwargs, input shape, hx shapes)."""
    cases = []
    for b, b_f, bidir, proj_size in product((False, True), (False, True), (False, True),
                                            (0, 2)):
        args = {"input_size": 2, "hidden_size": 3, "num_layers": 2, "proj_size": proj_size,
                "batch_first": b_f, "bias": b, "bidirectional": bidir}
        LD = 4 if bidir else 2
        cases.append((torch.nn.LSTM, args, (2, 2), None, None))
        cases.append((torch.nn.LSTM, args, (3, 2), ((LD, proj_size or 3), (LD, 3)), None))
    return cases


CASES = (_rnn_gru_cases(torch.nn.RNN, True) + _rnn_gru_cases(torch.nn.GRU, False)
         + _lstm_cases())


def _case_id(case):
    stock, args, shape, hx, lengths = case
    flags = "-".join(f"{k}={v}" for k, v in args.items()
                     if k not in ("input_size", "num_layers"))
    return (f"{stock.__name__}-{flags}-x{list(shape)}" + ("-hx" if hx else "")
            + (f"-packed{lengths}" if lengths else ""))


def _run(module, shape, hx_shapes, lengths, tdtype):
    """Output, states and every gradient for seeded inputs (requires_grad, as torch's
    samples make them); a packed input differentiates its data, as torch's do."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=tdtype)
    hx = None
    if hx_shapes is not None:
        shapes = hx_shapes if isinstance(hx_shapes[0], tuple) else (hx_shapes,)
        hx = [torch.randn(s, generator=g, dtype=tdtype).requires_grad_(True)
              for s in shapes]
    if lengths is not None:
        packed = pack_padded_sequence(x, torch.tensor(lengths))
        leaf = packed.data.requires_grad_(True)
        inp = PackedSequence(leaf, packed.batch_sizes)
    else:
        leaf = inp = x.requires_grad_(True)
    lstm = isinstance(module, torch.nn.LSTM)
    y, h = module(inp, None if hx is None else tuple(hx) if lstm else hx[0])
    outs = [y.data if lengths is not None else y, *(h if lstm else (h,))]
    r = torch.Generator().manual_seed(1)
    sum((torch.randn(v.shape, generator=r, dtype=tdtype) * v).sum() for v in outs
        ).backward()
    result = {f"out{i}": v.detach() for i, v in enumerate(outs)}
    result["dinput"] = leaf.grad
    result.update({f"dhx{i}": s.grad for i, s in enumerate(hx or [])})
    result.update({name: p.grad for name, p in module.named_parameters()})
    return result


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("tdtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_drop_in_matches_stock_on_torchs_module_inputs(case, tdtype, training,
                                                       monkeypatch):
    stock_cls, args, shape, hx_shapes, lengths = case
    calls = [0]
    original = F.forward

    def counting(*a, **kw):
        calls[0] += 1
        return original(*a, **kw)

    monkeypatch.setattr(rt.functional, "forward", counting)
    torch.manual_seed(2)
    stock = stock_cls(**args, dtype=tdtype).train(training)
    ours = DROP_IN[stock_cls](**args, dtype=tdtype).train(training)
    ours.load_state_dict(stock.state_dict())
    want = _run(stock, shape, hx_shapes, lengths, tdtype)
    assert calls[0] == 0
    got = _run(ours, shape, hx_shapes, lengths, tdtype)
    assert calls[0] == 1
    assert got.keys() == want.keys()
    for key, w in want.items():
        assert_close(got[key].numpy(), w.numpy(), TOL[tdtype], key)
