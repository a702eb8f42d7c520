"""rnncore.torch.RNN is a drop-in torch.nn.RNN: same results and gradients as stock torch.

Stock ``torch.nn.RNN`` with the same weights is the oracle, together with
``torch.autograd.gradcheck`` (finite differences) in float64. A spy on
``rnncore.functional`` tells whether a call ran on rnncore: it counts the calls entered
and keeps the results that returned, and the tests check that the drop-in gave back
exactly those results.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import assert_close

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402
from rnncore import functional as F  # noqa: E402
from torch.nn.utils.rnn import (PackedSequence, pack_padded_sequence,  # noqa: E402
                                pad_packed_sequence)

TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
T, B, K, H = 7, 3, 4, 5


class Spy:
    """What rnncore.torch asked of rnncore.functional, and what came back.

    ``entered[name]`` counts the calls of ``functional.forward``/``backward`` begun,
    ``returned[name]`` holds the results of those that returned, in order, and
    ``need_dx`` the ``need_dx`` of each backward call.
    """

    def __init__(self):
        self.entered = {"forward": 0, "backward": 0}
        self.returned = {"forward": [], "backward": []}
        self.need_dx = []

    @property
    def forwards(self):
        """The number of forward results rnncore returned."""
        return len(self.returned["forward"])

    @property
    def backwards(self):
        """The number of backward results rnncore returned."""
        return len(self.returned["backward"])

    def assert_gave(self, result):
        """``result`` of :func:`run` is what rnncore's last forward and backward returned.

        h_n, the output (when not packed: the drop-in re-packs it) and every weight's
        gradient, compared exactly.
        """
        y, h_n, _ = self.returned["forward"][-1]
        assert torch.equal(result["h_n"], torch.from_numpy(h_n)), "h_n"
        if result["packed"] is None:
            assert torch.equal(result["output"], torch.from_numpy(y)), "output"
        _, _, grads = self.returned["backward"][-1]
        for name, grad in grads.items():
            assert torch.equal(result[name], torch.from_numpy(grad)), name


@pytest.fixture
def spy(monkeypatch):
    """A :class:`Spy` wrapped around rnncore.functional's forward and backward."""
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


def make_pair(backend, tdtype, *args, seed=0, **kwargs):
    """(drop-in, stock) with the same weights; args and kwargs as torch.nn.RNN's."""
    torch.manual_seed(seed)
    stock = torch.nn.RNN(*args, dtype=tdtype, **kwargs)
    ours = rt.RNN(*args, dtype=tdtype, backend=backend, **kwargs)
    ours.load_state_dict(stock.state_dict())
    return ours, stock


def run(module, x, h0, R, Rh, lengths=None, enforce_sorted=False):
    """Output, h_n (and the packed output) and the gradients of x, h0 and every weight.

    Loss = Σ output·R + Σ h_n·Rh, over the padded output when lengths are given.
    """
    xt = x.clone().requires_grad_(True)
    ht = h0.clone().requires_grad_(True)
    module.zero_grad()
    packed_out = None
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), module.batch_first,
                                      enforce_sorted=enforce_sorted)
        packed_out, hn = module(packed, ht)
        y, _ = pad_packed_sequence(packed_out, module.batch_first,
                                   total_length=x.shape[1 if module.batch_first else 0])
    else:
        y, hn = module(xt, ht)
    ((y * R).sum() + (hn * Rh).sum()).backward()
    grads = {k: p.grad.clone() for k, p in module.named_parameters()}
    return dict(output=y.detach(), h_n=hn.detach(), dx=xt.grad, dh0=ht.grad,
                packed=packed_out, **grads)


def compare(ours, stock, dtype):
    for key, want in stock.items():
        if key == "packed":
            continue
        assert ours[key].dtype == want.dtype, key
        assert_close(ours[key].numpy(), want.numpy(), TOL[dtype], key)
    if stock["packed"] is not None:
        got, want = ours["packed"], stock["packed"]
        assert isinstance(got, PackedSequence)
        assert torch.equal(got.batch_sizes, want.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None and b is None) or torch.equal(a, b), name
        assert_close(got.data.detach().numpy(), want.data.detach().numpy(), TOL[dtype],
                     "packed data")


def case(dtype, num_layers=1, bidirectional=False, batch_first=False, unbatched=False,
         seed=1):
    g = torch.Generator().manual_seed(seed)
    tdtype = TORCH_DTYPE[dtype]
    D = 2 if bidirectional else 1
    if unbatched:
        shape, state = (T, K), (num_layers * D, H)
    else:
        shape, state = ((B, T, K) if batch_first else (T, B, K)), (num_layers * D, B, H)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=tdtype)
    return rand(*shape), rand(*state), rand(*shape[:-1], D * H), rand(*state)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_layers_directions_nonlinearities_match_stock(backend, dtype, spy, num_layers,
                                                      bidirectional, nonlinearity):
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, num_layers,
                            nonlinearity=nonlinearity, bidirectional=bidirectional)
    x, h0, R, Rh = case(dtype, num_layers, bidirectional)
    got = run(ours, x, h0, R, Rh)
    compare(got, run(stock, x, h0, R, Rh), dtype)
    assert spy.forwards == 1 and spy.backwards == 1
    spy.assert_gave(got)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_batch_first_matches_stock(backend, dtype, spy, bidirectional):
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, batch_first=True,
                            bidirectional=bidirectional)
    x, h0, R, Rh = case(dtype, 2, bidirectional, batch_first=True)
    got = run(ours, x, h0, R, Rh)
    compare(got, run(stock, x, h0, R, Rh), dtype)
    assert spy.forwards == 1
    spy.assert_gave(got)


@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_unbatched_input_matches_stock(backend, dtype, spy, bidirectional, batch_first):
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, nonlinearity="relu",
                            bidirectional=bidirectional, batch_first=batch_first)
    x, h0, R, Rh = case(dtype, 2, bidirectional, unbatched=True)
    got = run(ours, x, h0, R, Rh)
    compare(got, run(stock, x, h0, R, Rh), dtype)
    assert spy.forwards == 1
    spy.assert_gave(got)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_no_bias_matches_stock(backend, dtype, spy, bidirectional):
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, bias=False,
                            bidirectional=bidirectional)
    x, h0, R, Rh = case(dtype, 2, bidirectional)
    got = run(ours, x, h0, R, Rh)
    compare(got, run(stock, x, h0, R, Rh), dtype)
    assert spy.forwards == 1
    spy.assert_gave(got)


@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("lengths", [[7, 3, 5], [1, 7, 2], [7, 7, 7], [1, 1, 1]])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_packed_sequence_matches_stock(backend, dtype, spy, lengths, bidirectional,
                                       enforce_sorted):
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2,
                            bidirectional=bidirectional)
    x, h0, R, Rh = case(dtype, 2, bidirectional)
    got = run(ours, x, h0, R, Rh, lengths, enforce_sorted)
    compare(got, run(stock, x, h0, R, Rh, lengths, enforce_sorted), dtype)
    assert spy.forwards == 1
    spy.assert_gave(got)


@pytest.mark.parametrize("length", [T, T - 2])
def test_one_packed_sequence_matches_stock(backend, dtype, spy, length):
    # one sequence: the packed rows are the padded batch itself, read in place
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, bidirectional=True)
    x, h0, R, Rh = case(dtype, 2, True)
    x, h0, R, Rh = x[:, :1], h0[:, :1], R[:, :1], Rh[:, :1]
    got = run(ours, x, h0, R, Rh, [length])
    compare(got, run(stock, x, h0, R, Rh, [length]), dtype)
    assert spy.forwards == 1
    spy.assert_gave(got)


def test_packed_sequence_with_batch_first_and_ties_matches_stock(backend, dtype, spy):
    # equal lengths make the sort order a choice: the output must carry the input's
    lengths = [4, 7, 4]
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 1, nonlinearity="relu",
                            batch_first=True, bidirectional=True)
    x, h0, R, Rh = case(dtype, 1, True, batch_first=True)
    got = run(ours, x, h0, R, Rh, lengths)
    compare(got, run(stock, x, h0, R, Rh, lengths), dtype)
    assert spy.forwards == 1
    spy.assert_gave(got)


def test_packed_sequence_without_h0_matches_stock(backend, spy):
    ours, stock = make_pair(backend, torch.float64, K, H, bidirectional=True)
    seqs = [torch.randn(n, K, dtype=torch.float64) for n in (2, 6, 4)]
    packed = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    (yo, ho), (ys, hs) = ours(packed), stock(packed)
    assert torch.equal(yo.sorted_indices, ys.sorted_indices)
    assert_close(yo.data.detach().numpy(), ys.data.detach().numpy(), 1e-12, "output")
    assert_close(ho.detach().numpy(), hs.detach().numpy(), 1e-12, "h_n")
    assert spy.forwards == 1
    assert torch.equal(ho, torch.from_numpy(spy.returned["forward"][0][1]))


GRADCHECK_CASES = {
    "tanh": dict(),
    "relu": dict(nonlinearity="relu"),
    "bidirectional": dict(bidirectional=True),
    "two-layers-bi": dict(num_layers=2, bidirectional=True),
    "batch_first": dict(batch_first=True, num_layers=2),
    "no-bias": dict(bias=False),
    "unbatched": dict(bidirectional=True, unbatched=True),
    "packed": dict(bidirectional=True, lengths=[4, 2, 3]),
    "packed-sorted": dict(num_layers=2, lengths=[4, 3, 1], enforce_sorted=True),
}


@pytest.mark.parametrize("config", list(GRADCHECK_CASES), ids=list(GRADCHECK_CASES))
def test_gradcheck_of_input_state_and_weights(backend, spy, config):
    kw = dict(GRADCHECK_CASES[config])
    unbatched = kw.pop("unbatched", False)
    lengths = kw.pop("lengths", None)
    enforce_sorted = kw.pop("enforce_sorted", False)
    torch.manual_seed(2)
    rnn = rt.RNN(3, 3, dtype=torch.float64, backend=backend, **kw)
    Tg, Bg = 4, 3
    D = 2 if rnn.bidirectional else 1
    if unbatched:
        x = torch.randn(Tg, 3, dtype=torch.float64)
        h0 = torch.randn(rnn.num_layers * D, 3, dtype=torch.float64)
    else:
        shape = (Bg, Tg, 3) if rnn.batch_first else (Tg, Bg, 3)
        x = torch.randn(*shape, dtype=torch.float64)
        h0 = torch.randn(rnn.num_layers * D, Bg, 3, dtype=torch.float64)
    names = [name for name, _ in rnn.named_parameters()]
    weights = [p.detach().clone() for p in rnn.parameters()]

    def fn(x, h0, *ws):
        params = dict(zip(names, ws, strict=True))
        if lengths is None:
            return torch.func.functional_call(rnn, params, (x, h0))
        packed = pack_padded_sequence(x, torch.tensor(lengths), rnn.batch_first,
                                      enforce_sorted=enforce_sorted)
        y, h_n = torch.func.functional_call(rnn, params, (packed, h0))
        return y.data, h_n

    inputs = [t.requires_grad_(True) for t in (x, h0, *weights)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    # every call gradcheck made ran on rnncore: the analytic Jacobian is rnncore's
    assert spy.forwards == spy.entered["forward"] > 0
    assert spy.backwards == spy.entered["backward"] > 0


def test_input_gradient_is_computed_only_when_asked(backend, spy):
    ours, stock = make_pair(backend, torch.float64, K, H, 2, bidirectional=True)
    x, h0, R, Rh = case(np.dtype(np.float64), 2, True)
    ours.weight_hh_l1.requires_grad_(False)
    y, hn = ours(x)                       # neither x nor h0 requires grad
    (y * R).sum().backward()
    assert spy.need_dx == [False] and spy.backwards == 1
    assert ours.weight_hh_l1.grad is None
    ys, _ = stock(x)
    (ys * R).sum().backward()
    assert_close(ours.weight_hh_l0.grad.numpy(), stock.weight_hh_l0.grad.numpy(), 1e-12,
                 "weight_hh_l0")
    h0.requires_grad_(True)
    y, hn = ours(x, h0)
    hn.sum().backward()
    assert spy.need_dx == [False, False] and spy.backwards == 2
    assert torch.equal(h0.grad, torch.from_numpy(spy.returned["backward"][1][1]))


def test_strided_inputs_and_gradients_match_stock(backend, dtype, spy):
    # non-contiguous input, a broadcast (stride 0) h0 and a stride-0 gradient from sum()
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, bidirectional=True)
    big = torch.randn(2 * T, B, K + 3, dtype=TORCH_DTYPE[dtype])
    x = big[::2, :, 1:K + 1]
    h0 = torch.randn(4, 1, H, dtype=TORCH_DTYPE[dtype]).expand(4, B, H)
    results = []
    for m in (ours, stock):
        xt = x.detach().requires_grad_(True)
        y, hn = m(xt, h0)
        (y.sum() + hn.sum()).backward()
        results.append([y.detach(), hn.detach(), xt.grad,
                        *[p.grad for p in m.parameters()]])
    for got, want in zip(*results, strict=True):
        assert_close(got.numpy(), want.numpy(), TOL[dtype])
    assert spy.forwards == 1 and spy.backwards == 1
    assert torch.equal(results[0][0], torch.from_numpy(spy.returned["forward"][0][0]))


def test_negative_view_input_runs_stock(spy):
    ours, stock = make_pair(None, torch.float64, K, H)
    x = torch.randn(T, B, K, dtype=torch.float64)._neg_view()
    assert all(torch.equal(a, b) for a, b in zip(ours(x), stock(x), strict=True))
    assert spy.entered["forward"] == 0


def test_inference_without_autograd_matches_stock(backend, dtype, spy):
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, bidirectional=True)
    x, h0, _, _ = case(dtype, 2, True)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            (yo, ho), (ys, hs) = ours(x, h0), stock(x, h0)
        assert not yo.requires_grad and not ho.requires_grad
        assert_close(yo.numpy(), ys.numpy(), TOL[dtype], "output")
        assert_close(ho.numpy(), hs.numpy(), TOL[dtype], "h_n")
        y, h_n, _ = spy.returned["forward"][-1]
        assert torch.equal(yo, torch.from_numpy(y)) and torch.equal(ho, torch.from_numpy(h_n))
    assert spy.forwards == 2 and spy.entered["backward"] == 0


def test_packed_inference_matches_stock(backend, dtype, spy):
    # a PackedSequence made under inference_mode: tensors that count no versions
    ours, stock = make_pair(backend, TORCH_DTYPE[dtype], K, H, 2, bidirectional=True)
    x, h0, _, _ = case(dtype, 2, True)
    with torch.inference_mode():
        packed = pack_padded_sequence(x, torch.tensor([T, 3, T - 1]), enforce_sorted=False)
        (yo, ho), (ys, hs) = ours(packed, h0), stock(packed, h0)
    assert_close(yo.data.numpy(), ys.data.numpy(), TOL[dtype], "output")
    assert_close(ho.numpy(), hs.numpy(), TOL[dtype], "h_n")
    assert spy.forwards == 1


def test_double_backward_raises_a_clear_error():
    rnn = rt.RNN(K, H, dtype=torch.float64)
    x = torch.randn(T, B, K, dtype=torch.float64, requires_grad=True)
    y, _ = rnn(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


def test_backward_twice_with_retain_graph_accumulates_like_stock(backend, spy):
    ours, stock = make_pair(backend, torch.float64, K, H, 2, bidirectional=True)
    x, h0, R, Rh = case(np.dtype(np.float64), 2, True)
    for m in (ours, stock):
        y, hn = m(x, h0)
        loss = (y * R).sum() + (hn * Rh).sum()
        loss.backward(retain_graph=True)
        loss.backward()
    for (key, a), b in zip(ours.named_parameters(), stock.parameters(), strict=True):
        assert_close(a.grad.numpy(), b.grad.numpy(), 1e-12, key)
    assert spy.backwards == 2


def test_weights_changed_in_place_before_backward_raise_like_stock():
    rnn = rt.RNN(K, H)
    y, _ = rnn(torch.randn(T, B, K))
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(2)          # e.g. an optimizer step before backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_constructor_parameters_and_state_dict_are_torchs():
    args = (K, H, 2, "relu", False, True, 0.0, True)
    ours, stock = rt.RNN(*args), torch.nn.RNN(*args)
    assert isinstance(ours, torch.nn.RNN)
    assert repr(ours) == repr(stock)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in stock.state_dict().items()]
    ours.load_state_dict(stock.state_dict())
    assert ours.backend is None
    with pytest.raises(ValueError, match="backend must be one of"):
        rt.RNN(K, H, backend="fortran")
    with pytest.raises(ValueError, match="backend must be one of"):
        ours.backend = "fortran"


# ---- cases torch's own implementation runs, with torch's results ------------------------

def test_backend_torch_runs_stock(spy):
    ours, stock = make_pair("torch", torch.float32, K, H, 2)
    x = torch.randn(T, B, K)
    assert torch.equal(ours(x)[0], stock(x)[0])
    assert spy.entered["forward"] == 0
    ours.backend = None
    assert_close(ours(x)[0].detach().numpy(), stock(x)[0].detach().numpy(), 2e-5, "output")
    assert spy.forwards == 1


def test_dropout_in_training_runs_on_rnncore_as_stock_and_eval_turns_it_off(spy):
    ours, stock = make_pair(None, torch.float64, K, H, 3, dropout=0.5)
    x = torch.randn(T, B, K, dtype=torch.float64)
    torch.manual_seed(7)
    yo, ho = ours(x)
    torch.manual_seed(7)
    ys, hs = stock(x)
    assert spy.forwards == 3                   # one call per layer, masks between
    assert_close(yo.detach().numpy(), ys.detach().numpy(), 1e-12, "output")
    assert_close(ho.detach().numpy(), hs.detach().numpy(), 1e-12, "h_n")
    ours.eval()
    stock.eval()
    assert_close(ours(x)[0].detach().numpy(), stock(x)[0].detach().numpy(), 1e-12, "eval")
    assert spy.forwards == 4                   # eval: the layers in one call


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16])
def test_other_dtypes_run_stock(spy, tdtype):
    ours, stock = make_pair(None, tdtype, K, H, bidirectional=True)
    x = torch.randn(T, B, K, dtype=tdtype)
    assert all(torch.equal(a, b) for a, b in zip(ours(x), stock(x), strict=True))
    assert spy.entered["forward"] == 0


def test_meta_device_runs_stock(spy):
    ours = rt.RNN(K, H, 2, device="meta")
    y, h_n = ours(torch.empty(T, B, K, device="meta"))
    assert y.device.type == "meta" and y.shape == (T, B, H) and h_n.shape == (2, B, H)
    assert spy.entered["forward"] == 0


def test_nonlinearity_follows_the_mode_set_at_construction_like_stock(spy):
    ours, stock = make_pair(None, torch.float64, K, H)
    # torch computes with self.mode, fixed by the constructor, whatever this says later
    ours.nonlinearity = stock.nonlinearity = "relu"
    x = torch.randn(T, B, K, dtype=torch.float64)
    assert_close(ours(x)[0].detach().numpy(), stock(x)[0].detach().numpy(), 1e-12, "output")
    assert spy.forwards == 1


def test_torch_func_transforms_run_stock(spy):
    ours, stock = make_pair(None, torch.float64, K, H)
    x = torch.randn(T, B, K, dtype=torch.float64)
    go = torch.func.grad(lambda x: ours(x)[0].square().sum())(x)
    gs = torch.func.grad(lambda x: stock(x)[0].square().sum())(x)
    assert torch.equal(go, gs)
    h0 = torch.zeros(1, B, H, dtype=torch.float64)
    jo = torch.func.jacrev(lambda h: ours(x, h)[1])(h0)
    js = torch.func.jacrev(lambda h: stock(x, h)[1])(h0)
    assert torch.equal(jo, js)
    assert spy.entered["forward"] == 0


def test_forward_mode_ad_runs_stock(spy):
    import torch.autograd.forward_ad as fwAD
    ours, stock = make_pair(None, torch.float64, K, H)
    x, v = (torch.randn(T, B, K, dtype=torch.float64) for _ in range(2))
    tangents = []
    for m in (ours, stock):
        with fwAD.dual_level():
            y, _ = m(fwAD.make_dual(x, v))
            tangents.append(fwAD.unpack_dual(y).tangent)
    assert torch.equal(*tangents)
    assert spy.entered["forward"] == 0


class LastState(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[1]


def test_jit_script_and_trace_compile_torchs_implementation(spy):
    ours, stock = make_pair(None, torch.float32, K, H, 2)
    x = torch.randn(T, B, K)
    want = stock(x)
    traced = torch.jit.trace(ours, (x,))     # (its check_trace reruns ours eagerly)
    entered = spy.entered["forward"]
    assert all(torch.equal(a, b) for a, b in zip(traced(x), want, strict=True))
    assert spy.entered["forward"] == entered
    ours(x)                                  # the eager module still runs on rnncore
    assert spy.entered["forward"] == entered + 1 == spy.forwards
    params = list(ours.parameters())
    with pytest.warns(UserWarning, match="torch.jit.script compiles"):
        scripted = torch.jit.script(LastState(ours))
    assert torch.equal(scripted(x), want[1])
    assert spy.entered["forward"] == entered + 1
    assert all(a is b for a, b in zip(scripted.rnn.parameters(), params, strict=True))


# ---- patch -------------------------------------------------------------------------------

class Tagger(torch.nn.Module):
    """Two nn.RNNs (one nested) and a linear head."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.RNN(K, H, 2, bidirectional=True))
        self.decoder = torch.nn.RNN(2 * H, H, nonlinearity="relu", batch_first=False)
        self.head = torch.nn.Linear(H, 2)

    def forward(self, x):
        y, _ = self.encoder(x)
        y, _ = self.decoder(y)
        return self.head(y)


def test_patch_converts_every_rnn_keeping_parameters_and_outputs(spy):
    torch.manual_seed(3)
    model = Tagger()
    x = torch.randn(T, B, K)
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model(x).detach()
    assert rt.patch(model) is model
    assert isinstance(model.encoder[0], rt.RNN) and isinstance(model.decoder, rt.RNN)
    assert list(model.parameters()) == params and all(
        a is b for a, b in zip(model.parameters(), params, strict=True))
    assert_close(model(x).detach().numpy(), before.numpy(), 2e-5, "patched output")
    assert spy.forwards == 2

    # the optimizer built before patch still trains the model: one step, against stock
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


def test_patch_converts_a_bare_rnn_and_leaves_subclasses(spy):
    class MyRNN(torch.nn.RNN):
        pass

    bare, sub = torch.nn.RNN(K, H), MyRNN(K, H)
    assert rt.patch(bare, backend="numpy") is bare
    assert type(bare) is rt.RNN and bare.backend == "numpy"
    assert type(rt.patch(sub)) is MyRNN
    y, h_n = bare(torch.randn(T, B, K))
    assert spy.forwards == 1
    assert torch.equal(h_n, torch.from_numpy(spy.returned["forward"][0][1]))


# ---- torch.save / torch.load ----------------------------------------------------------

def test_a_whole_model_saved_after_patch_loads_with_weights_only(tmp_path):
    # as PyTorch's word_language_model example: torch.save(model), then torch.load(f)
    torch.manual_seed(4)
    model = rt.patch(LastState(torch.nn.RNN(K, H, 2, bidirectional=True)), backend="numpy")
    torch.save(model, tmp_path / "model.pt")
    with torch.serialization.safe_globals([LastState]):     # the model's own class
        loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert type(loaded.rnn) is rt.RNN and loaded.rnn.backend == "numpy"
    x = torch.randn(T, B, K)
    assert torch.equal(loaded(x), model(x))


def test_loading_a_module_with_an_unknown_backend_raises(tmp_path):
    rnn = rt.RNN(K, H)
    rnn.__dict__["_rnncore_backend"] = "fortran"        # as a crafted file could hold
    torch.save(rnn, tmp_path / "rnn.pt")
    with pytest.raises(ValueError, match=r"backend must be one of .*; got 'fortran'"):
        torch.load(tmp_path / "rnn.pt", weights_only=True)


# ---- torch stays optional ------------------------------------------------------------

def _python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)


def test_import_rnncore_does_not_import_torch():
    result = _python("""
        import sys, rnncore
        assert "torch" not in sys.modules, "rnncore imported torch"
    """)
    assert result.returncode == 0, result.stderr


def test_rnncore_torch_without_torch_says_what_to_install():
    result = _python("""
        import sys
        sys.modules["torch"] = None          # as if torch were not installed
        try:
            import rnncore.torch
        except ImportError as e:
            print(e)
        else:
            raise SystemExit("no ImportError")
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install torch" in result.stdout and "cpu" in result.stdout


@pytest.mark.parametrize("lengths", [[5, 3, 3, 1], [1, 5, 2, 5, 4], [7], [4, 4, 2],
                                     [2, 2, 2]])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_a_packed_layout_places_each_packed_row_where_the_padded_batch_has_it(
        lengths, enforce_sorted):
    from rnncore._torch_rule import packed_layout
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    T, B = max(lengths), len(lengths)
    rows = torch.arange(T * B, dtype=torch.float64).reshape(T, B, 1)   # row t·B + b
    packed = pack_padded_sequence(rows, torch.tensor(lengths),
                                  enforce_sorted=enforce_sorted)
    layout = packed_layout(packed)
    index = (np.arange(T * B) if layout.index is None else layout.index)
    np.testing.assert_array_equal(index, packed.data[:, 0].numpy().astype(np.int64))
    if layout.lengths is None:
        assert lengths == [T] * B
    else:
        np.testing.assert_array_equal(layout.lengths, lengths)
