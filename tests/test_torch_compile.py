"""What torch.compile and torch.jit.script do with a model holding a drop-in.

torch 2.13's Dynamo refuses to put ``nn.RNN``/``LSTM``/``GRU`` modules (and their
subclasses, the drop-ins) into a graph unless ``torch._dynamo.config.allow_rnn`` is set:
a compiled model then calls the module eagerly, and the drop-in runs on rnncore there.
With ``allow_rnn`` Dynamo traces torch's implementation into the graph, as for stock.
``torch.jit.script`` compiles torch's implementation and warns that it replaces the
drop-in in the eager model. Stock torch with the same weights is the oracle; a spy on
``rnncore.functional.forward`` tells whether rnncore ran.
"""
import warnings

import pytest

from conftest import assert_close

torch = pytest.importorskip("torch")
import torch._dynamo  # noqa: E402
import rnncore.torch as rt  # noqa: E402

T, B, K, H = 6, 3, 4, 5
DROP_IN = {"rnn": rt.RNN, "lstm": rt.LSTM, "gru": rt.GRU}
STOCK = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


@pytest.fixture(params=list(DROP_IN))
def cell(request):
    return request.param


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Head(torch.nn.Module):
    """An RNN module and a linear head over its output."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.head = torch.nn.Linear(rnn.hidden_size, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def pair(cell):
    """(model with the drop-in, model with stock torch's module), same weights."""
    torch.manual_seed(0)
    stock = Head(STOCK[cell](K, H, 2))
    ours = Head(DROP_IN[cell](K, H, 2))
    ours.load_state_dict(stock.state_dict())
    return ours, stock


def loss_and_grads(model, x):
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return [y.detach()] + [p.grad for p in model.parameters()]


def test_compiled_model_runs_the_drop_in_eagerly_on_rnncore(cell, forwards):
    ours, stock = pair(cell)
    x = torch.randn(T, B, K)
    want = loss_and_grads(stock, x)
    compiled = torch.compile(ours)
    for call in range(1, 3):
        got = loss_and_grads(compiled, x)
        assert forwards[0] == call
        for g, w in zip(got, want, strict=True):
            assert_close(g.numpy(), w.numpy(), 5e-5)


def test_allow_rnn_compiles_torchs_implementation_into_the_graph(cell, forwards):
    ours, stock = pair(cell)
    x = torch.randn(T, B, K)
    # Dynamo's graph run as captured: torch 2.13's AOTAutograd (aot_eager, inductor)
    # fails on the LSTM's graph, stock nn.LSTM's too
    with torch._dynamo.config.patch(allow_rnn=True):
        got = loss_and_grads(torch.compile(ours, backend="eager"), x)
    assert forwards[0] == 0
    for g, w in zip(got, loss_and_grads(stock, x), strict=True):
        assert_close(g.numpy(), w.numpy(), 1e-6)
    ours(x)                                   # eager calls still run on rnncore
    assert forwards[0] == 1


def test_eager_calls_with_dynamo_loaded_run_on_rnncore(cell, forwards):
    ours, stock = pair(cell)
    x = torch.randn(T, B, K)
    assert_close(ours(x).detach().numpy(), stock(x).detach().numpy(), 5e-5)
    assert forwards[0] == 1


def test_jit_script_warns_that_it_puts_a_stock_module_in_the_eager_model(cell, forwards):
    ours, stock = pair(cell)
    drop_in = ours.rnn
    x = torch.randn(T, B, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch.jit.script's own
        with pytest.warns(UserWarning, match=f"torch.jit.script compiles torch's "
                          f"implementation of rnncore.torch.{type(drop_in).__name__}"):
            scripted = torch.jit.script(ours)
    assert type(ours.rnn) is STOCK[cell]                     # what the warning says
    assert all(a is b for a, b in zip(ours.rnn.parameters(), drop_in.parameters(),
                                      strict=True))
    assert torch.equal(scripted(x), stock(x))
    assert forwards[0] == 0
