"""rnncore computes what torch.nn.RNN computes: outputs, final states and every gradient.

torch's autograd is the oracle. Loss = Σ y·R + Σ h_n·R2 for fixed random R, R2.
"""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import assert_close

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
T, B, K, H = 7, 3, 4, 5


def torch_reference(module, x, h0, R, Rh, lengths=None, batch_first=False):
    """torch's output, h_n and gradients of x, h0 and every parameter."""
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        yp, hn = module(packed, ht)
        y, _ = pad_packed_sequence(yp, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    else:
        y, hn = module(xt, ht)
    loss = (y * torch.tensor(R)).sum() + (hn * torch.tensor(Rh)).sum()
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return y.detach().numpy(), hn.detach().numpy(), xt.grad.numpy(), ht.grad.numpy(), grads


def make_case(rng, dtype, num_layers, bidirectional, nonlinearity, bias, batch_first=False,
              unbatched=False):
    torch.manual_seed(0)
    module = torch.nn.RNN(K, H, num_layers, nonlinearity=nonlinearity, bias=bias,
                          batch_first=batch_first, bidirectional=bidirectional)
    module = module.to(torch.float64 if dtype == np.float64 else torch.float32)
    D = 2 if bidirectional else 1
    if unbatched:
        x = rng.standard_normal((T, K)).astype(dtype)
        h0 = rng.standard_normal((num_layers * D, H)).astype(dtype)
        R = rng.standard_normal((T, D * H)).astype(dtype)
        Rh = rng.standard_normal((num_layers * D, H)).astype(dtype)
    else:
        shape = (B, T, K) if batch_first else (T, B, K)
        x = rng.standard_normal(shape).astype(dtype)
        h0 = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
        R = rng.standard_normal(shape[:2] + (D * H,)).astype(dtype)
        Rh = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    return module, x, h0, R, Rh


def compare(ours, theirs, dtype):
    tol = TOL[dtype]
    names = ["output", "h_n", "dx", "dh0"]
    for name, a, b in zip(names, ours[:4], theirs[:4]):
        assert_close(a, b, tol, name)
    assert list(ours[4]) == list(theirs[4])
    for key in theirs[4]:
        assert_close(ours[4][key], theirs[4][key], tol, key)


def run_class(module, backend, dtype, x, h0, R, Rh, lengths=None, batch_first=False):
    rnn = rnncore.RNN(module.input_size, module.hidden_size, module.num_layers,
                      nonlinearity=module.nonlinearity, bias=module.bias,
                      batch_first=batch_first, bidirectional=module.bidirectional,
                      dtype=dtype, backend=backend)
    rnn.load_state_dict(module.state_dict())
    y, h_n = rnn(x, h0, lengths)
    dx, dh0 = rnn.backward(R, Rh)
    return y, h_n, dx, dh0, rnn.grads


def run_functional(module, backend, x, h0, R, Rh, lengths=None, batch_first=False):
    params = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    y, h_n, record = F.forward(x, params, h0, lengths, nonlinearity=module.nonlinearity,
                               batch_first=batch_first, backend=backend)
    dx, dh0, grads = F.backward(record, R, Rh)
    return y, h_n, dx, dh0, grads


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_layers_directions_nonlinearities_match_torch(backend, dtype, rng, num_layers,
                                                      bidirectional, nonlinearity):
    module, x, h0, R, Rh = make_case(rng, dtype, num_layers, bidirectional, nonlinearity, True)
    compare(run_class(module, backend, dtype, x, h0, R, Rh),
            torch_reference(module, x, h0, R, Rh), dtype)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_functional_api_matches_torch(backend, dtype, rng, bidirectional):
    module, x, h0, R, Rh = make_case(rng, dtype, 2, bidirectional, "tanh", True)
    compare(run_functional(module, backend, x, h0, R, Rh),
            torch_reference(module, x, h0, R, Rh), dtype)


def test_batch_first_matches_torch(backend, dtype, rng):
    module, x, h0, R, Rh = make_case(rng, dtype, 2, True, "tanh", True, batch_first=True)
    compare(run_class(module, backend, dtype, x, h0, R, Rh, batch_first=True),
            torch_reference(module, x, h0, R, Rh, batch_first=True), dtype)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_unbatched_input_matches_torch(backend, dtype, rng, bidirectional):
    module, x, h0, R, Rh = make_case(rng, dtype, 2, bidirectional, "relu", True, unbatched=True)
    compare(run_class(module, backend, dtype, x, h0, R, Rh),
            torch_reference(module, x, h0, R, Rh), dtype)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_no_bias_matches_torch(backend, dtype, rng, bidirectional):
    module, x, h0, R, Rh = make_case(rng, dtype, 2, bidirectional, "tanh", False)
    compare(run_class(module, backend, dtype, x, h0, R, Rh),
            torch_reference(module, x, h0, R, Rh), dtype)


@pytest.mark.parametrize("lengths", [[7, 3, 5], [1, 7, 2], [7, 7, 7], [1, 1, 1]])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_lengths_match_pack_padded_sequence(backend, dtype, rng, lengths, bidirectional,
                                            num_layers):
    module, x, h0, R, Rh = make_case(rng, dtype, num_layers, bidirectional, "tanh", True)
    compare(run_class(module, backend, dtype, x, h0, R, Rh, lengths),
            torch_reference(module, x, h0, R, Rh, lengths), dtype)


def test_lengths_with_batch_first_match_torch(backend, dtype, rng):
    module, x, h0, R, Rh = make_case(rng, dtype, 1, True, "relu", True, batch_first=True)
    lengths = [2, 7, 4]
    compare(run_class(module, backend, dtype, x, h0, R, Rh, lengths, batch_first=True),
            torch_reference(module, x, h0, R, Rh, lengths, batch_first=True), dtype)


def test_default_initialisation_matches_torch_distribution():
    # torch: every parameter uniform in (-1/sqrt(H), 1/sqrt(H))
    rnn = rnncore.RNN(10, 400, num_layers=2, bidirectional=True, seed=3)
    torch_keys = torch.nn.RNN(10, 400, num_layers=2, bidirectional=True).state_dict().keys()
    assert list(rnn.state_dict()) == list(torch_keys)
    bound = 1 / np.sqrt(400)
    for key, p in rnn.params.items():
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.95 * bound                 # fills the interval
        assert abs(p.mean()) < 0.2 * bound                    # centred
