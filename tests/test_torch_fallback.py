"""rnncore.torch.RNN decides before computing whether a call runs on rnncore or torch.

Inputs torch rejects go to torch, which raises its own error, without rnncore being
called; inputs outside rnncore's domain that torch accepts get torch's result; once a
call runs on rnncore, an error raised there propagates (nothing falls back to torch);
and the rule is stated once, the same in the class docstring and docs/torch.md.
"""
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_raises_as_stock

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402
from rnncore import functional as F  # noqa: E402
from rnncore._torch_rule import _runs_on_rnncore, _torch_reason  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

T, B, K, H = 7, 3, 4, 5


@pytest.fixture
def entered(monkeypatch):
    """The argument tuples of every call into rnncore.functional.forward begun."""
    calls = []
    forward = F.forward

    def spied(*args, **kwargs):
        calls.append(args)
        return forward(*args, **kwargs)

    monkeypatch.setattr(rt.functional, "forward", spied)
    return calls


def pair():
    """(drop-in, stock): float32, K -> H, two layers, bidirectional, the same weights."""
    stock = torch.nn.RNN(K, H, 2, bidirectional=True)
    ours = rt.RNN(K, H, 2, bidirectional=True)
    ours.load_state_dict(stock.state_dict())
    return ours, stock


def _without_grad(rnn, x):
    with torch.no_grad():
        return rnn(x)


RUNS_ON_RNNCORE = {
    "with autograd": lambda rnn, x: rnn(x),
    "under no_grad": _without_grad,
    "packed": lambda rnn, x: rnn(pack_padded_sequence(x, torch.tensor([7, 5, 3]))),
}


@pytest.mark.parametrize("error", [ValueError, TypeError])
@pytest.mark.parametrize("call", list(RUNS_ON_RNNCORE))
def test_an_error_raised_in_rnncore_propagates(monkeypatch, call, error):
    def broken(*args, **kwargs):
        raise error("boom")

    rnn = rt.RNN(K, H, 2, bidirectional=True)
    x = torch.randn(T, B, K)
    assert _runs_on_rnncore(rnn, x)
    monkeypatch.setattr(rt.functional, "forward", broken)
    with pytest.raises(error, match="^boom$"):
        RUNS_ON_RNNCORE[call](rnn, x)


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(5), dtype=dtype)


# Calls on pair() (float32, two layers, bidirectional) that stock torch rejects
# (L*D = 4). The drop-in must hand them to torch before entering rnncore.
REJECTED_BY_TORCH = {
    "input float64, weights float32": lambda m: m(_x(T, B, K, dtype=torch.float64)),
    "input int64": lambda m: m(torch.ones(T, B, K, dtype=torch.int64)),
    "input not a tensor": lambda m: m(np.zeros((T, B, K), np.float32)),
    "input of ndim 1": lambda m: m(_x(T)),
    "input of ndim 4": lambda m: m(_x(T, B, K, 1)),
    "input with K + 1 features": lambda m: m(_x(T, B, K + 1)),
    "input with T = 0": lambda m: m(_x(0, B, K)),
    "hx float64": lambda m: m(_x(T, B, K), _x(4, B, H, dtype=torch.float64)),
    "hx int64": lambda m: m(_x(T, B, K), torch.zeros(4, B, H, dtype=torch.int64)),
    "hx not a tensor": lambda m: m(_x(T, B, K), np.zeros((4, B, H), np.float32)),
    "hx of the wrong batch": lambda m: m(_x(T, B, K), _x(4, B + 1, H)),
    "hx with 1 layer-direction, 4 expected": lambda m: m(_x(T, B, K), _x(1, B, H)),
    "hx 2-D for batched input": lambda m: m(_x(T, B, K), _x(4, H)),
    "hx 3-D for unbatched input": lambda m: m(_x(T, K), _x(4, 1, H)),
    "hx of the wrong size for unbatched input": lambda m: m(_x(T, K), _x(4, H + 1)),
    "packed data with K - 1 features":
        lambda m: m(PackedSequence(_x(6, K - 1), torch.tensor([3, 2, 1]))),
    "packed data of ndim 3":
        lambda m: m(PackedSequence(_x(6, 1, K), torch.tensor([3, 2, 1]))),
    "packed batch_sizes increasing":
        lambda m: m(PackedSequence(_x(6, K), torch.tensor([1, 2, 3]))),
    "packed, hx of the wrong batch":
        lambda m: m(pack_padded_sequence(_x(T, B, K), torch.tensor([7, 5, 3])),
                    _x(4, B + 1, H)),
    "a weight of the wrong shape (functional_call)":
        lambda m: torch.func.functional_call(m, {"weight_hh_l0": _x(H, H + 1)},
                                             (_x(T, B, K),)),
}


@pytest.mark.parametrize("what", list(REJECTED_BY_TORCH))
def test_inputs_torch_rejects_raise_torchs_error_without_entering_rnncore(entered, what):
    assert_raises_as_stock(REJECTED_BY_TORCH[what], *pair())
    assert entered == []


def test_a_packed_sequence_changed_in_place_after_a_call_is_checked_again(entered):
    ours, stock = pair()
    packed = PackedSequence(_x(6, K), torch.tensor([3, 2, 1]))
    ours(packed)                                      # well formed: on rnncore
    assert len(entered) == 1
    packed.batch_sizes[:] = torch.tensor([1, 2, 3])   # no longer what packing makes
    assert_raises_as_stock(lambda m: m(packed), ours, stock)
    assert len(entered) == 1


# Calls outside rnncore's domain that stock torch accepts (a PackedSequence not made by
# pack_padded_sequence, an hx torch's sorted_indices select from): torch's result.
ACCEPTED_BY_TORCH_ONLY = {
    "input with B = 0": lambda m: m(_x(T, 0, K)),
    "packed batch_sizes summing to fewer rows than data":
        lambda m: m(PackedSequence(_x(7, K), torch.tensor([3, 2, 1]))),
    "packed batch_sizes ending in 0":
        lambda m: m(PackedSequence(_x(3, K), torch.tensor([3, 0]))),
    "packed, hx with one more sequence than the batch":
        lambda m: m(pack_padded_sequence(_x(T, B, K), torch.tensor([3, 7, 5]),
                                         enforce_sorted=False), _x(4, B + 1, H)),
}


@pytest.mark.parametrize("what", list(ACCEPTED_BY_TORCH_ONLY))
def test_inputs_only_torch_accepts_get_torchs_result_without_entering_rnncore(entered, what):
    ours, stock = pair()
    (yo, ho), (ys, hs) = (ACCEPTED_BY_TORCH_ONLY[what](m) for m in (ours, stock))
    if isinstance(ys, PackedSequence):
        yo, ys = yo.data, ys.data
    assert torch.equal(yo, ys) and torch.equal(ho, hs)
    assert entered == []


def test_more_than_2_31_rows_run_on_torch():
    # T*B rows reach rnncore's 32-bit BLAS arguments; 2**31 - 1 is the most it takes
    rnn = rt.RNN(K, H)
    x = torch.zeros(1, 1, K).expand(1, 2**31, K)        # no memory behind it
    assert _runs_on_rnncore(rnn, x[:, :-1]) and not _runs_on_rnncore(rnn, x)


def test_more_than_2_31_rows_give_the_kernels_own_reason():
    rnn = rt.RNN(K, H)
    x = torch.zeros(1, 1, K).expand(1, 2**31, K)
    assert _torch_reason(rnn, x, None, rnn._weights()) == (
        "T*B = 2147483648 (rows of the whole-sequence products) exceeds the 32-bit BLAS "
        "limit of 2147483647")


def test_a_numpy_only_install_runs_more_than_2_31_rows_on_rnncore(monkeypatch):
    # only the compiled kernels pass sizes to BLAS as 32-bit integers
    monkeypatch.setattr(F, "_kernels", None)
    rnn = rt.RNN(K, H)
    assert _runs_on_rnncore(rnn, torch.zeros(1, 1, K).expand(1, 2**31, K))


# ---- the documented rule --------------------------------------------------------------

def _bullets(text, heading):
    """The first bullet list after ``heading``, as one line, ``code`` read as `code`."""
    lines = text[text.index(heading):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("- "))
    items = []
    for line in lines[first:]:
        if not line.strip():
            break
        items.append(line.strip())
    return " ".join(" ".join(items).replace("``", "`").split())


@pytest.mark.parametrize("cls", [rt.RNN, rt.LSTM, rt.GRU], ids=lambda c: c.__name__)
def test_docs_state_the_rule_of_the_class_docstring(cls):
    docs = (Path(__file__).resolve().parents[1] / "docs" / "torch.md").read_text("utf-8")
    assert _bullets(docs, "## What runs where") == \
        _bullets(cls.__doc__, "**When torch's implementation runs.**")


def test_a_tensor_kept_from_a_finished_torch_func_transform_runs_on_rnncore(entered):
    """A tensor kept from inside ``torch.func.grad`` (a dead wrapper once the transform
    has returned) is an input like any other: it runs on rnncore, with stock's outputs
    and weight gradients."""
    ours, stock = pair()
    kept = []
    torch.func.grad(lambda x: kept.append(x) or x.sum())(_x(T, B, K))
    x = kept[0]
    assert torch._C._functorch.is_functorch_wrapped_tensor(x)
    outputs = [module(x) for module in (ours, stock)]
    assert len(entered) == 1
    for y, h_n in outputs:
        (y.sum() + h_n.sum()).backward()
    torch.testing.assert_close(outputs[0][0], outputs[1][0])
    for name, w in stock.named_parameters():
        torch.testing.assert_close(getattr(ours, name).grad, w.grad)
