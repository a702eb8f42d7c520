"""Dropout between layers in training mode runs on rnncore, with torch's semantics and RNG.

Stock ``torch.nn.RNN``/``LSTM``/``GRU`` with the same weights, run after the same
``torch.manual_seed``, is the oracle: the drop-in draws the same Bernoulli noise from
torch's generator, in the same order and shape, so outputs and every gradient agree
within float rounding (stock float32 padded LSTM runs oneDNN, packed and float64 its
native path: both draw the same noise). A spy on ``rnncore.functional`` tells that the
call ran on rnncore.
"""
import pytest

from conftest import assert_close

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402
from rnncore._torch_rule import _torch_reason  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TOL = {torch.float32: 5e-5, torch.float64: 1e-11}
T, B, K, H = 7, 4, 5, 6
LENGTHS = [7, 3, 5, 2]
CELLS = {"rnn_tanh": (rt.RNN, torch.nn.RNN, {}),
         "rnn_relu": (rt.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
         "lstm": (rt.LSTM, torch.nn.LSTM, {}),
         "lstm_proj": (rt.LSTM, torch.nn.LSTM, {"proj_size": 3}),
         "gru": (rt.GRU, torch.nn.GRU, {})}
LAYOUTS = ["padded", "batch_first", "unbatched", "packed_sorted", "packed_unsorted"]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def tdtype(request):
    return request.param


def make_pair(cell, tdtype, num_layers=3, dropout=0.4, **kwargs):
    """(drop-in, stock) with the same weights, both in training mode."""
    ours_cls, stock_cls, extra = CELLS[cell]
    torch.manual_seed(0)
    stock = stock_cls(K, H, num_layers, dropout=dropout, dtype=tdtype, **extra, **kwargs)
    ours = ours_cls(K, H, num_layers, dropout=dropout, dtype=tdtype, **extra, **kwargs)
    ours.load_state_dict(stock.state_dict())
    return ours, stock


def initial_states(module, tdtype, batch):
    """Random h0 (and an LSTM's c0) for ``module``, requiring grad."""
    g = torch.Generator().manual_seed(1)
    LD = module.num_layers * (2 if module.bidirectional else 1)
    widths = ((module.proj_size or H, H) if isinstance(module, torch.nn.LSTM) else (H,))
    return [torch.randn(LD, *batch, w, generator=g, dtype=tdtype).requires_grad_(True)
            for w in widths]


def train_step(module, x, layout, seed, with_hx=True):
    """Output, final states and every gradient of one forward+backward after
    ``torch.manual_seed(seed)``; the loss is Σ R·v over output and final states."""
    x = x.clone().requires_grad_(True)
    batch = () if layout == "unbatched" else (B,)
    states = initial_states(module, x.dtype, batch) if with_hx else []
    lstm = isinstance(module, torch.nn.LSTM)
    hx = (tuple(states) if lstm else states[0]) if states else None
    module.zero_grad()
    torch.manual_seed(seed)
    if layout.startswith("packed"):
        lengths = sorted(LENGTHS, reverse=True) if layout == "packed_sorted" else LENGTHS
        inp = pack_padded_sequence(x, torch.tensor(lengths),
                                   enforce_sorted=layout == "packed_sorted")
        y, h = module(inp, hx)
        y = pad_packed_sequence(y, total_length=T)[0]
    else:
        y, h = module(x, hx)
    after = torch.rand(3)          # where the generator was left
    outs = [y, *(h if lstm else (h,))]
    g = torch.Generator().manual_seed(2)
    sum((torch.randn(v.shape, generator=g, dtype=v.dtype) * v).sum() for v in outs
        ).backward()
    result = {f"out{i}": v.detach() for i, v in enumerate(outs)}
    result["dx"] = x.grad
    result.update({f"d{i}0": s.grad for i, s in enumerate(states)})
    result.update({name: p.grad for name, p in module.named_parameters()})
    result["generator after"] = after
    return result


def input_for(layout, tdtype):
    g = torch.Generator().manual_seed(3)
    shape = {"batch_first": (B, T, K), "unbatched": (T, K)}.get(layout, (T, B, K))
    return torch.randn(shape, generator=g, dtype=tdtype)


def assert_same(got, want, tdtype):
    assert got.keys() == want.keys()
    for key, w in want.items():
        if key == "generator after":
            assert torch.equal(got[key], w), "the generator was left elsewhere than stock's"
        else:
            assert_close(got[key].numpy(), w.numpy(), TOL[tdtype], key)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_training_with_dropout_matches_stock_under_the_same_seed(
        cell, layout, bidirectional, tdtype, forwards):
    batch_first = layout == "batch_first"
    ours, stock = make_pair(cell, tdtype, bidirectional=bidirectional,
                            batch_first=batch_first)
    x = input_for(layout, tdtype)
    want = train_step(stock, x, layout, seed=11)
    assert forwards[0] == 0
    got = train_step(ours, x, layout, seed=11)
    assert forwards[0] == ours.num_layers      # one rnncore call per layer
    assert_same(got, want, tdtype)


@pytest.mark.parametrize("cell", list(CELLS))
def test_training_with_dropout_without_hx_matches_stock(cell, tdtype):
    ours, stock = make_pair(cell, tdtype, num_layers=2, dropout=0.5)
    x = input_for("padded", tdtype)
    assert_same(train_step(ours, x, "padded", seed=5, with_hx=False),
                train_step(stock, x, "padded", seed=5, with_hx=False), tdtype)


@pytest.mark.parametrize("cell", list(CELLS))
def test_dropout_under_no_grad_in_training_mode_still_drops_as_stock(cell, forwards):
    ours, stock = make_pair(cell, torch.float64, dropout=0.3)
    x = input_for("padded", torch.float64)
    with torch.no_grad():
        torch.manual_seed(9)
        ys = stock(x)[0]
        torch.manual_seed(9)
        yo = ours(x)[0]
        torch.manual_seed(10)
        other = ours(x)[0]
    assert forwards[0] == 2 * ours.num_layers
    assert_close(yo.numpy(), ys.numpy(), TOL[torch.float64], "output")
    assert not torch.allclose(yo, other)       # the noise comes from the generator


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_dropout_one_zeroes_every_layer_input_and_draws_nothing_as_stock(cell):
    ours, stock = make_pair(cell, torch.float64, num_layers=2, dropout=1.0)
    x = input_for("padded", torch.float64)
    assert_same(train_step(ours, x, "padded", seed=4),
                train_step(stock, x, "padded", seed=4), torch.float64)


@pytest.mark.parametrize("cell", list(CELLS))
def test_rule_lets_dropout_in_training_run_on_rnncore(cell):
    ours, _ = make_pair(cell, torch.float32, dropout=0.5)
    assert ours.training
    assert _torch_reason(ours, input_for("padded", torch.float32), None,
                         ours._weights()) is None


@pytest.mark.parametrize("cell", list(CELLS))
def test_eval_switches_dropout_off_in_one_call_without_drawing(cell, forwards):
    ours, stock = make_pair(cell, torch.float64, dropout=0.5)
    ours.eval()
    stock.eval()
    x = input_for("padded", torch.float64)
    torch.manual_seed(3)
    yo = ours(x)[0]
    drawn = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(3))   # the generator was not touched
    assert forwards[0] == 1                    # the layers in one call, no mask
    assert_close(yo.detach().numpy(), stock(x)[0].detach().numpy(), 1e-12, "output")
