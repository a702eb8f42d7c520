"""rnncore.torch.LSTM and rnncore.torch.GRU are drop-ins for torch.nn.LSTM and torch.nn.GRU.

Stock torch with the same weights is the oracle for every output and gradient, with
``torch.autograd.gradcheck`` in float64; a spy on ``rnncore.functional`` tells whether a
call ran on rnncore (and that the drop-in returned what rnncore computed). The rule that
sends a call to torch is the Elman drop-in's, with the cells' differences: LSTM's
``(h0, c0)`` pair and projection.
"""
import copy

import numpy as np
import pytest

from conftest import assert_close, assert_raises_as_stock

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402
from rnncore import functional as F  # noqa: E402
from rnncore._torch_rule import _runs_on_rnncore, _size_reason  # noqa: E402
from torch.nn.utils.rnn import (PackedSequence, pack_padded_sequence,  # noqa: E402
                                pad_packed_sequence)

TOL = {torch.float32: 2e-5, torch.float64: 1e-12}
T, B, K, H, P = 7, 3, 4, 5, 3
DROP_IN = {"lstm": rt.LSTM, "gru": rt.GRU}
STOCK = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def tdtype(request):
    return request.param


@pytest.fixture(params=["lstm", "gru"])
def cell(request):
    return request.param


class Spy:
    """Calls of rnncore.functional's forward and backward: begun (``entered``) and
    their results (``returned``), in order."""

    def __init__(self):
        self.entered = {"forward": 0, "backward": 0}
        self.returned = {"forward": [], "backward": []}
        self.need_dx = []


@pytest.fixture
def spy(monkeypatch):
    seen = Spy()

    def wrap(name, fn):
        def spied(*args, **kwargs):
            seen.entered[name] += 1
            if name == "backward":
                seen.need_dx.append(kwargs.get("need_dx", True))
            result = fn(*args, **kwargs)
            seen.returned[name].append(result)
            return result
        return spied

    for name in ("forward", "backward"):
        monkeypatch.setattr(rt.functional, name, wrap(name, getattr(F, name)))
    return seen


def make_pair(cell, tdtype, *args, backend=None, seed=0, **kwargs):
    """(drop-in, stock) with the same weights; args and kwargs as torch's class takes."""
    torch.manual_seed(seed)
    stock = STOCK[cell](*args, dtype=tdtype, **kwargs)
    ours = DROP_IN[cell](*args, dtype=tdtype, backend=backend, **kwargs)
    ours.load_state_dict(stock.state_dict())
    return ours, stock


def states_of(module, tdtype, batch=(B,), seed=1):
    """Random initial states for ``module``: h0, or LSTM's (h0, c0)."""
    g = torch.Generator().manual_seed(seed)
    LD = module.num_layers * (2 if module.bidirectional else 1)
    if isinstance(module, torch.nn.LSTM):
        widths = (module.proj_size or module.hidden_size, module.hidden_size)
    else:
        widths = (module.hidden_size,)
    return [torch.randn(LD, *batch, w, generator=g, dtype=tdtype) for w in widths]


def run(module, x, states, uses=("output", "h_n", "c_n"), lengths=None,
        enforce_sorted=False, seed=2):
    """Outputs and the gradients of x, every initial state and every weight.

    ``states`` is [h0] or [h0, c0] (hx omitted if empty). Loss = Σ R·v over the outputs
    named in ``uses`` (the padded output when ``lengths`` are given), R random.
    """
    xt = x.clone().requires_grad_(True)
    st = [s.clone().requires_grad_(True) for s in states]
    lstm = isinstance(module, torch.nn.LSTM)
    hx = None if not st else tuple(st) if lstm else st[0]
    module.zero_grad()
    packed_out = None
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), module.batch_first,
                                      enforce_sorted=enforce_sorted)
        packed_out, h = module(packed, hx)
        y, _ = pad_packed_sequence(packed_out, module.batch_first,
                                   total_length=x.shape[1 if module.batch_first else 0])
    else:
        y, h = module(xt, hx)
    h_n, c_n = h if lstm else (h, None)
    out = {"output": y, "h_n": h_n, "c_n": c_n}
    g = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(v.shape, generator=g, dtype=v.dtype) * v).sum()
               for name, v in out.items() if v is not None and name in uses)
    loss.backward()
    result = {name: v.detach() for name, v in out.items() if v is not None}
    result["dx"] = xt.grad
    result.update({f"d{name}0": s.grad for name, s in zip("hc"[:len(st)], st, strict=True)})
    result.update({name: p.grad for name, p in module.named_parameters()})
    result["packed"] = packed_out
    return result


def compare(got, want, tdtype):
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        if key == "packed":
            if w is not None:
                assert isinstance(g, PackedSequence)
                assert torch.equal(g.batch_sizes, w.batch_sizes)
                for name in ("sorted_indices", "unsorted_indices"):
                    a, b = getattr(g, name), getattr(w, name)
                    assert (a is None and b is None) or torch.equal(a, b), name
            continue
        if w is None:
            assert g is None, key
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, key
        assert_close(g.numpy(), w.numpy(), TOL[tdtype], key)


def rand(*shape, tdtype=torch.float64, seed=3):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=tdtype)


def ran_on_rnncore(spy, result, backwards=1):
    """The drop-in's h_n is what rnncore's one forward returned, and its backward ran."""
    assert spy.entered == {"forward": 1, "backward": backwards}
    _, h_n, _ = spy.returned["forward"][0]
    h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    assert torch.equal(result["h_n"], torch.from_numpy(h_n))


# ---- the same results and gradients as stock torch ----------------------------------

@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_layers_and_directions_match_stock(cell, backend, tdtype, spy, num_layers,
                                           bidirectional):
    ours, stock = make_pair(cell, tdtype, K, H, num_layers, bidirectional=bidirectional,
                            backend=backend)
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    got = run(ours, x, states)
    compare(got, run(stock, x, states), tdtype)
    ran_on_rnncore(spy, got)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_batch_first_matches_stock(cell, backend, tdtype, spy, bidirectional):
    ours, stock = make_pair(cell, tdtype, K, H, 2, batch_first=True,
                            bidirectional=bidirectional, backend=backend)
    x, states = rand(B, T, K, tdtype=tdtype), states_of(stock, tdtype)
    got = run(ours, x, states)
    compare(got, run(stock, x, states), tdtype)
    ran_on_rnncore(spy, got)


@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_unbatched_input_matches_stock(cell, backend, tdtype, spy, bidirectional,
                                       batch_first):
    ours, stock = make_pair(cell, tdtype, K, H, 2, batch_first=batch_first,
                            bidirectional=bidirectional, backend=backend)
    x, states = rand(T, K, tdtype=tdtype), states_of(stock, tdtype, batch=())
    got = run(ours, x, states)
    compare(got, run(stock, x, states), tdtype)
    ran_on_rnncore(spy, got)


def test_no_bias_matches_stock(cell, backend, tdtype, spy):
    ours, stock = make_pair(cell, tdtype, K, H, 2, bias=False, bidirectional=True,
                            backend=backend)
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    got = run(ours, x, states)
    compare(got, run(stock, x, states), tdtype)
    ran_on_rnncore(spy, got)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_omitted_hx_matches_stock(cell, backend, tdtype, spy, bidirectional):
    ours, stock = make_pair(cell, tdtype, K, H, 2, bidirectional=bidirectional,
                            backend=backend)
    x = rand(T, B, K, tdtype=tdtype)
    got = run(ours, x, [])
    compare(got, run(stock, x, []), tdtype)
    ran_on_rnncore(spy, got)


@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("lengths", [[7, 3, 5], [1, 7, 2], [7, 7, 7], [1, 1, 1]])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_packed_sequence_matches_stock(cell, backend, tdtype, spy, lengths, bidirectional,
                                       enforce_sorted):
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    ours, stock = make_pair(cell, tdtype, K, H, 2, bidirectional=bidirectional,
                            backend=backend)
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    got = run(ours, x, states, lengths=lengths, enforce_sorted=enforce_sorted)
    compare(got, run(stock, x, states, lengths=lengths, enforce_sorted=enforce_sorted),
            tdtype)
    ran_on_rnncore(spy, got)


@pytest.mark.parametrize("hx", [False, True], ids=["no-hx", "hx"])
def test_packed_sequence_with_batch_first_matches_stock(cell, backend, spy, hx):
    ours, stock = make_pair(cell, torch.float64, K, H, batch_first=True,
                            bidirectional=True, backend=backend)
    x = rand(B, T, K)
    states = states_of(stock, torch.float64) if hx else []
    got = run(ours, x, states, lengths=[4, 7, 4])
    compare(got, run(stock, x, states, lengths=[4, 7, 4]), torch.float64)
    ran_on_rnncore(spy, got)


# ---- LSTM: the projection and the (h, c) pair -----------------------------------------

@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_lstm_projection_matches_stock(backend, tdtype, spy, num_layers, bidirectional,
                                       bias):
    ours, stock = make_pair("lstm", tdtype, K, H, num_layers, bias=bias,
                            bidirectional=bidirectional, proj_size=P, backend=backend)
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    got = run(ours, x, states)
    assert got["h_n"].shape[-1] == P and got["c_n"].shape[-1] == H
    compare(got, run(stock, x, states), tdtype)
    ran_on_rnncore(spy, got)


@pytest.mark.parametrize("kind", ["unbatched", "packed", "packed-sorted"])
def test_lstm_projection_with_packed_or_unbatched_input_matches_stock(backend, spy, kind):
    ours, stock = make_pair("lstm", torch.float64, K, H, 2, bidirectional=True,
                            proj_size=P, backend=backend)
    if kind == "unbatched":
        x, states = rand(T, K), states_of(stock, torch.float64, batch=())
        kw = {}
    else:
        x, states = rand(T, B, K), states_of(stock, torch.float64)
        enforce_sorted = kind == "packed-sorted"
        kw = dict(lengths=[7, 5, 2] if enforce_sorted else [2, 7, 5],
                  enforce_sorted=enforce_sorted)
    got = run(ours, x, states, **kw)
    compare(got, run(stock, x, states, **kw), torch.float64)
    ran_on_rnncore(spy, got)


LOSSES = {"c_n only": ("c_n",), "h_n only": ("h_n",), "output only": ("output",),
          "h_n and c_n": ("h_n", "c_n")}


@pytest.mark.parametrize("uses", list(LOSSES))
@pytest.mark.parametrize("proj_size", [0, P], ids=["no-proj", "proj"])
def test_lstm_loss_on_part_of_the_outputs_matches_stock(backend, tdtype, spy, uses,
                                                        proj_size):
    ours, stock = make_pair("lstm", tdtype, K, H, 2, bidirectional=True,
                            proj_size=proj_size, backend=backend)
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    got = run(ours, x, states, uses=LOSSES[uses])
    compare(got, run(stock, x, states, uses=LOSSES[uses]), tdtype)
    ran_on_rnncore(spy, got)


def test_lstm_hx_as_a_list_runs_on_rnncore_like_stocks_tuple(backend, spy):
    ours, stock = make_pair("lstm", torch.float64, K, H, 2, backend=backend)
    x, states = rand(T, B, K), states_of(stock, torch.float64)
    (yo, (ho, co)), (ys, (hs, cs)) = ours(x, list(states)), stock(x, list(states))
    for got, want in ((yo, ys), (ho, hs), (co, cs)):
        assert_close(got.detach().numpy(), want.detach().numpy(), 1e-12)
    assert spy.entered["forward"] == 1


# ---- gradcheck ------------------------------------------------------------------------

GRADCHECK_CASES = {
    "one-layer": dict(),
    "two-layers-bi": dict(num_layers=2, bidirectional=True),
    "batch_first": dict(batch_first=True, num_layers=2),
    "no-bias": dict(bias=False),
    "unbatched": dict(bidirectional=True, unbatched=True),
    "packed": dict(bidirectional=True, lengths=[4, 2, 3]),
    "packed-sorted": dict(num_layers=2, lengths=[4, 3, 1], enforce_sorted=True),
}
LSTM_GRADCHECK_CASES = {
    "proj": dict(proj_size=2, num_layers=2, bidirectional=True),
    "proj-packed": dict(proj_size=2, bidirectional=True, lengths=[2, 4, 1]),
}
GRADCHECK = [(cell, config) for cell in ("lstm", "gru") for config in GRADCHECK_CASES] \
    + [("lstm", config) for config in LSTM_GRADCHECK_CASES]


@pytest.mark.parametrize("cell, config", GRADCHECK, ids=[f"{c}-{k}" for c, k in GRADCHECK])
def test_gradcheck_of_input_states_and_weights(backend, spy, cell, config):
    kw = dict({**GRADCHECK_CASES, **LSTM_GRADCHECK_CASES}[config])
    unbatched = kw.pop("unbatched", False)
    lengths = kw.pop("lengths", None)
    enforce_sorted = kw.pop("enforce_sorted", False)
    torch.manual_seed(2)
    rnn = DROP_IN[cell](2, 3, dtype=torch.float64, backend=backend, **kw)
    Tg, Bg = 4, 3
    if unbatched:
        x = torch.randn(Tg, 2, dtype=torch.float64)
    else:
        x = torch.randn(*((Bg, Tg, 2) if rnn.batch_first else (Tg, Bg, 2)),
                        dtype=torch.float64)
    states = states_of(rnn, torch.float64, batch=() if unbatched else (Bg,))
    names = [name for name, _ in rnn.named_parameters()]
    weights = [p.detach().clone() for p in rnn.parameters()]
    n = len(states)

    def fn(x, *rest):
        hx = tuple(rest[:n]) if cell == "lstm" else rest[0]
        params = dict(zip(names, rest[n:], strict=True))
        if lengths is not None:
            x = pack_padded_sequence(x, torch.tensor(lengths), rnn.batch_first,
                                     enforce_sorted=enforce_sorted)
        y, h = torch.func.functional_call(rnn, params, (x, hx))
        y = y.data if lengths is not None else y
        return (y, *h) if cell == "lstm" else (y, h)

    inputs = [t.requires_grad_(True) for t in (x, *states, *weights)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    # every call gradcheck made ran on rnncore: the analytic Jacobian is rnncore's
    assert spy.entered["forward"] == len(spy.returned["forward"]) > 0
    assert spy.entered["backward"] == len(spy.returned["backward"]) > 0


# ---- what autograd asks for ------------------------------------------------------------

def test_only_hx_requiring_grad_gets_its_gradient_from_rnncore(cell, backend, spy):
    ours, stock = make_pair(cell, torch.float64, K, H, 2, bidirectional=True,
                            backend=backend)
    for m in (ours, stock):
        m.requires_grad_(False)
    x, states = rand(T, B, K), states_of(stock, torch.float64)
    grads = []
    for m in (ours, stock):
        st = [s.clone().requires_grad_(True) for s in states]
        y, h = m(x, tuple(st) if cell == "lstm" else st[0])
        assert y.requires_grad
        y.square().sum().backward()
        grads.append([s.grad for s in st])
    for got, want in zip(*grads, strict=True):
        assert_close(got.numpy(), want.numpy(), 1e-12)
    assert spy.need_dx == [False]
    assert all(p.grad is None for p in ours.parameters())
    dh0 = spy.returned["backward"][0][1]
    assert torch.equal(grads[0][0], torch.from_numpy(dh0[0] if cell == "lstm" else dh0))


def test_lstm_c0_alone_requiring_grad_gets_its_gradient(backend, spy):
    ours, stock = make_pair("lstm", torch.float64, K, H, backend=backend)
    x, (h0, c0) = rand(T, B, K), states_of(stock, torch.float64)
    got = []
    for m in (ours, stock):
        m.requires_grad_(False)
        c = c0.clone().requires_grad_(True)
        _, (h_n, _) = m(x, (h0, c))
        h_n.sum().backward()
        got.append(c.grad)
    assert_close(got[0].numpy(), got[1].numpy(), 1e-12, "dc0")
    assert spy.entered["backward"] == 1


def test_non_contiguous_weights_run_on_rnncore_and_match_stock(cell, backend, tdtype, spy):
    ours, stock = make_pair(cell, tdtype, K, H, 2, bidirectional=True, backend=backend)
    # the same values, strided: a weight column-major, a bias every other element
    swapped = {name: (p.detach().t().contiguous().t() if p.dim() == 2
                      else p.detach().repeat_interleave(2)[::2]).requires_grad_(True)
               for name, p in ours.named_parameters()}
    assert not swapped["bias_hh_l0"].is_contiguous()
    assert not swapped["weight_hh_l0"].is_contiguous()
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    hx = tuple(states) if cell == "lstm" else states[0]
    yo, _ = torch.func.functional_call(ours, swapped, (x, hx))
    ys, _ = stock(x, hx)
    yo.sum().backward()
    ys.sum().backward()
    assert_close(yo.detach().numpy(), ys.detach().numpy(), TOL[tdtype], "output")
    for name, p in stock.named_parameters():
        assert_close(swapped[name].grad.numpy(), p.grad.numpy(), TOL[tdtype], name)
    assert spy.entered == {"forward": 1, "backward": 1}


def test_inference_without_autograd_matches_stock(cell, backend, tdtype, spy):
    ours, stock = make_pair(cell, tdtype, K, H, 2, bidirectional=True, backend=backend)
    x, states = rand(T, B, K, tdtype=tdtype), states_of(stock, tdtype)
    hx = tuple(states) if cell == "lstm" else states[0]
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            (yo, ho), (ys, hs) = ours(x, hx), stock(x, hx)
        assert not yo.requires_grad
        assert_close(yo.numpy(), ys.numpy(), TOL[tdtype], "output")
        for a, b in zip(*((h if cell == "lstm" else (h,)) for h in (ho, hs)), strict=True):
            assert_close(a.numpy(), b.numpy(), TOL[tdtype], "state")
    assert spy.entered == {"forward": 2, "backward": 0}


def test_weights_changed_in_place_before_backward_raise_like_stock(cell):
    rnn = DROP_IN[cell](K, H)
    y, _ = rnn(torch.randn(T, B, K))
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(2)          # e.g. an optimizer step before backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_double_backward_raises_a_clear_error(cell):
    rnn = DROP_IN[cell](K, H, dtype=torch.float64)
    x = torch.randn(T, B, K, dtype=torch.float64, requires_grad=True)
    y, _ = rnn(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


# ---- the constructor, parameters and state_dict are torch's ----------------------------

@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bias=False),
                                    dict(bidirectional=True, batch_first=True),
                                    dict(proj_size=P, num_layers=2)],
                         ids=["default", "no-bias", "bi-bf", "proj"])
def test_constructor_parameters_and_state_dict_are_torchs(cell, kwargs):
    if "proj_size" in kwargs and cell != "lstm":
        with pytest.raises(ValueError) as want:
            STOCK[cell](K, H, **kwargs)
        with pytest.raises(ValueError) as got:
            DROP_IN[cell](K, H, **kwargs)
        assert str(got.value) == str(want.value)
        return
    ours, stock = DROP_IN[cell](K, H, **kwargs), STOCK[cell](K, H, **kwargs)
    assert isinstance(ours, STOCK[cell]) and repr(ours) == repr(stock)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in stock.state_dict().items()]
    ours.load_state_dict(stock.state_dict())
    assert ours.backend is None
    with pytest.raises(ValueError, match="backend must be one of"):
        DROP_IN[cell](K, H, backend="fortran")


# ---- the rule: what runs on torch ------------------------------------------------------

def test_backend_torch_runs_stock(cell, spy):
    ours, stock = make_pair(cell, torch.float32, K, H, 2, backend="torch")
    x = torch.randn(T, B, K)
    assert torch.equal(ours(x)[0], stock(x)[0])
    assert spy.entered["forward"] == 0
    ours.backend = None
    ours(x)
    assert spy.entered["forward"] == 1


def test_dropout_in_training_runs_on_rnncore_as_stock_and_eval_turns_it_off(cell, spy):
    ours, stock = make_pair(cell, torch.float64, K, H, 3, dropout=0.5)
    x = torch.randn(T, B, K, dtype=torch.float64)
    torch.manual_seed(7)
    yo, _ = ours(x)
    torch.manual_seed(7)
    ys, _ = stock(x)
    assert spy.entered["forward"] == 3         # one call per layer, masks between
    assert_close(yo.detach().numpy(), ys.detach().numpy(), 1e-12, "output")
    ours.eval()
    stock.eval()
    assert_close(ours(x)[0].detach().numpy(), stock(x)[0].detach().numpy(), 1e-12, "eval")
    assert spy.entered["forward"] == 4         # eval: the layers in one call


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16])
def test_other_dtypes_run_stock(cell, spy, tdtype):
    ours, stock = make_pair(cell, tdtype, K, H, bidirectional=True)
    x = torch.randn(T, B, K, dtype=tdtype)
    yo, ys = ours(x)[0], stock(x)[0]
    assert torch.equal(yo, ys)
    assert spy.entered["forward"] == 0


def test_torch_func_transforms_run_stock(cell, spy):
    ours, stock = make_pair(cell, torch.float64, K, H)
    x = torch.randn(T, B, K, dtype=torch.float64)
    go = torch.func.grad(lambda x: ours(x)[0].square().sum())(x)
    gs = torch.func.grad(lambda x: stock(x)[0].square().sum())(x)
    assert torch.equal(go, gs)
    assert spy.entered["forward"] == 0


def _lstm_states(batch=B, h=H, c=H, layers=2, dtype=torch.float32):
    return (rand(layers, batch, h, tdtype=dtype), rand(layers, batch, c, tdtype=dtype))


# Calls on make_pair(cell, float32, K, H, 2) that stock torch rejects: the drop-in hands
# them to torch before entering rnncore. For the LSTM the hx pair is what can go wrong.
REJECTED_BY_TORCH = {
    "lstm": {
        "hx a single tensor": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                          _lstm_states()[0]),
        "hx a 1-tuple": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                    _lstm_states()[:1]),
        "hx a 3-tuple": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                    _lstm_states() + _lstm_states()[:1]),
        "c0 H + 1 wide": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                     _lstm_states(c=H + 1)),
        "h0 of the wrong batch": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                             _lstm_states(batch=B + 1)),
        "c0 float64": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                  (_lstm_states()[0], rand(2, B, H))),
        "c0 not a tensor": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                       (_lstm_states()[0], np.zeros((2, B, H), "f4"))),
        "hx 3-D for unbatched input": lambda m: m(rand(T, K, tdtype=torch.float32),
                                                  _lstm_states()),
    },
    "gru": {
        "hx a tuple": lambda m: m(rand(T, B, K, tdtype=torch.float32), _lstm_states()),
        "hx H + 1 wide": lambda m: m(rand(T, B, K, tdtype=torch.float32),
                                     rand(2, B, H + 1, tdtype=torch.float32)),
        "hx float64": lambda m: m(rand(T, B, K, tdtype=torch.float32), rand(2, B, H)),
    },
    "both": {
        "input float64": lambda m: m(rand(T, B, K)),
        "input of ndim 4": lambda m: m(rand(T, B, K, 1, tdtype=torch.float32)),
        "input with K + 1 features": lambda m: m(rand(T, B, K + 1, tdtype=torch.float32)),
        "input with T = 0": lambda m: m(rand(0, B, K, tdtype=torch.float32)),
        "packed batch_sizes increasing": lambda m: m(PackedSequence(
            rand(6, K, tdtype=torch.float32), torch.tensor([1, 2, 3]))),
    },
}
REJECTED_CASES = [(cell, what) for cell in ("lstm", "gru")
                  for group in (cell, "both") for what in REJECTED_BY_TORCH[group]]


@pytest.mark.parametrize("cell, what", REJECTED_CASES,
                         ids=[f"{c}: {w}" for c, w in REJECTED_CASES])
def test_inputs_torch_rejects_raise_torchs_error_without_entering_rnncore(spy, cell, what):
    call = {**REJECTED_BY_TORCH[cell], **REJECTED_BY_TORCH["both"]}[what]
    assert_raises_as_stock(call, *make_pair(cell, torch.float32, K, H, 2))
    assert spy.entered["forward"] == 0


def test_lstm_h0_as_wide_as_h_with_a_projection_raises_torchs_error(spy):
    ours, stock = make_pair("lstm", torch.float32, K, H, 2, proj_size=P)
    x, hx = rand(T, B, K, tdtype=torch.float32), _lstm_states(h=H)   # P expected
    with pytest.raises(RuntimeError) as want:
        stock(x, hx)
    with pytest.raises(RuntimeError, match=r"^Expected hidden\[0\] size") as got:
        ours(x, hx)
    assert str(got.value) == str(want.value)
    assert spy.entered["forward"] == 0


def test_an_input_with_no_sequences_gets_torchs_result(cell, spy):
    ours, stock = make_pair(cell, torch.float32, K, H, 2)
    x = rand(T, 0, K, tdtype=torch.float32)
    (yo, ho), (ys, hs) = ours(x), stock(x)
    assert torch.equal(yo, ys)
    for a, b in zip(*((h if cell == "lstm" else (h,)) for h in (ho, hs)), strict=True):
        assert torch.equal(a, b)
    assert spy.entered["forward"] == 0


@pytest.mark.parametrize("error", [ValueError, TypeError])
def test_an_error_raised_in_rnncore_propagates(monkeypatch, cell, error):
    def broken(*args, **kwargs):
        raise error("boom")

    rnn = DROP_IN[cell](K, H, 2, bidirectional=True)
    x = torch.randn(T, B, K)
    assert _runs_on_rnncore(rnn, x)
    monkeypatch.setattr(rt.functional, "forward", broken)
    with pytest.raises(error, match="^boom$"):
        rnn(x)


def test_more_than_2_31_rows_run_on_torch(cell):
    rnn = DROP_IN[cell](K, H)
    x = torch.zeros(1, 1, K).expand(1, 2**31, K)        # no memory behind it
    assert _runs_on_rnncore(rnn, x[:, :-1]) and not _runs_on_rnncore(rnn, x)


@pytest.mark.parametrize("cell, proj_size, sizes", [
    ("lstm", 0, (T, B, 2 * H, 4 * H)), ("lstm", P, (T, B, max(K, 2 * P), 4 * H)),
    ("gru", 0, (T, B, 2 * H, 3 * H))], ids=["lstm", "lstm-proj", "gru"])
def test_the_size_limit_is_checked_on_the_widest_input_and_every_gate_row(
        monkeypatch, cell, proj_size, sizes):
    # the sizes the kernels pass to BLAS: T*B rows, max(K, D*(P or H)) and G*H
    checked = []

    class Kernels:
        @staticmethod
        def check_sizes(*args):
            checked.append(args)

    monkeypatch.setattr(F, "_kernels", Kernels)
    kw = dict(proj_size=proj_size) if proj_size else {}
    rnn = DROP_IN[cell](K, H, 2, bidirectional=True, **kw)
    assert _runs_on_rnncore(rnn, torch.randn(T, B, K))
    assert checked == [sizes]


def test_more_than_2_31_gate_rows_give_the_kernels_own_reason():
    if F._kernels is None:
        pytest.skip("a NumPy-only install has no 32-bit limit")
    assert _size_reason(1, 1, K, 2**31 - 1) is None
    with pytest.raises(ValueError) as kernels:
        F._kernels.check_sizes(1, 1, K, 4 * 2**29)
    assert _size_reason(1, 1, K, 4 * 2**29) == str(kernels.value)


# ---- patch, torch.save / torch.load, deepcopy, eval ------------------------------------

class Tagger(torch.nn.Module):
    """An nn.RNN, an nn.LSTM with a projection (nested) and an nn.GRU, and a head."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(K, H, batch_first=True)
        self.encoder = torch.nn.Sequential(
            torch.nn.LSTM(H, H, 2, batch_first=True, bidirectional=True, proj_size=P))
        self.gru = torch.nn.GRU(2 * P, H, batch_first=True)
        self.head = torch.nn.Linear(H, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        y, (h, c) = self.encoder(y)
        y, _ = self.gru(y)
        return self.head(y) + c.sum()


def test_patch_converts_rnn_lstm_and_gru_keeping_parameters_and_training(spy):
    torch.manual_seed(3)
    model = Tagger()
    x = torch.randn(B, T, K)
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model(x).detach()
    assert rt.patch(model) is model
    assert [type(m) for m in (model.rnn, model.encoder[0], model.gru)] == \
        [rt.RNN, rt.LSTM, rt.GRU]
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert_close(model(x).detach().numpy(), before.numpy(), 2e-5, "patched output")
    assert spy.entered["forward"] == 3

    torch.manual_seed(3)
    reference = Tagger()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for m, o in ((model, opt), (reference, ref_opt)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(),
                              strict=True):
        assert_close(a.numpy(), b.numpy(), 2e-5, k)


def test_patch_leaves_subclasses_and_sets_the_backend(cell):
    class Mine(STOCK[cell]):
        pass

    bare, sub = STOCK[cell](K, H), Mine(K, H)
    assert type(rt.patch(bare, backend="numpy")) is DROP_IN[cell]
    assert bare.backend == "numpy"
    assert type(rt.patch(sub)) is Mine


def test_a_whole_patched_model_saved_loads_with_weights_only(tmp_path):
    torch.manual_seed(4)
    model = rt.patch(Tagger(), backend="numpy")
    torch.save(model, tmp_path / "model.pt")
    # the model's own class, and torch's modules it holds besides the drop-ins
    with torch.serialization.safe_globals([Tagger, torch.nn.Sequential, torch.nn.Linear]):
        loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert [type(m) for m in (loaded.rnn, loaded.encoder[0], loaded.gru)] == \
        [rt.RNN, rt.LSTM, rt.GRU]
    assert loaded.encoder[0].backend == loaded.gru.backend == "numpy"
    x = torch.randn(B, T, K)
    assert torch.equal(loaded(x), model(x))


def test_deepcopy_keeps_class_backend_and_values_with_its_own_parameters(cell, spy):
    ours = DROP_IN[cell](K, H, 2, bidirectional=True, backend="numpy")
    twin = copy.deepcopy(ours)
    assert type(twin) is DROP_IN[cell] and twin.backend == "numpy"
    x = torch.randn(T, B, K)
    assert torch.equal(twin(x)[0], ours(x)[0])
    assert spy.entered["forward"] == 2
    with torch.no_grad():
        twin.weight_ih_l0.zero_()
    assert not torch.equal(twin(x)[0], ours(x)[0])


def test_eval_mode_runs_on_rnncore_and_keeps_the_module(cell, spy):
    ours = DROP_IN[cell](K, H, 2)
    assert ours.eval() is ours and not ours.training
    with torch.no_grad():
        ours(torch.randn(T, B, K))
    assert spy.entered["forward"] == 1


class Output(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


def test_jit_script_compiles_torchs_implementation(cell, spy):
    # (torch.jit.script compiles a stock nn.LSTM or nn.GRU inside a model, not bare)
    ours, stock = make_pair(cell, torch.float32, K, H, 2)
    params = list(ours.parameters())
    with pytest.warns(UserWarning, match="torch.jit.script compiles"):
        scripted = torch.jit.script(Output(ours))
    x = torch.randn(T, B, K)
    assert torch.equal(scripted(x), stock(x)[0])
    assert spy.entered["forward"] == 0
    assert all(a is b for a, b in zip(scripted.rnn.parameters(), params, strict=True))
    ours(x)                                  # the eager module still runs on rnncore
    assert spy.entered["forward"] == 1
