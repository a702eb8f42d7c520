"""rnncore computes what torch.nn.RNN computes: outputs, final states and every gradient.

torch's autograd is the oracle, with torch's weights built in the test's dtype and loaded
into rnncore from torch's state_dict. Loss = Σ y·R + Σ h_n·R2 for fixed random R, R2.
"""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import assert_close

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# Both sides round differently (torch's fused kernels and BLAS, rnncore's); these are
# norm-wise relative bounds on the difference.
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
T, B, K, H = 7, 3, 4, 5


def torch_reference(module, x, h0, R, Rh, lengths=None, batch_first=False):
    """torch's output, h_n and gradients of x, h0 and every parameter."""
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        yp, hn = module(packed, ht)
        y, _ = pad_packed_sequence(yp, batch_first=batch_first,
                                   total_length=x.shape[1 if batch_first else 0])
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
                          batch_first=batch_first, bidirectional=bidirectional,
                          dtype=torch.float64 if dtype == np.float64 else torch.float32)
    D = 2 if bidirectional else 1
    if unbatched:
        bt, state = (T,), (num_layers * D, H)
    else:
        bt, state = ((B, T) if batch_first else (T, B)), (num_layers * D, B, H)
    x = rng.standard_normal(bt + (K,)).astype(dtype)
    h0 = rng.standard_normal(state).astype(dtype)
    R = rng.standard_normal(bt + (D * H,)).astype(dtype)
    Rh = rng.standard_normal(state).astype(dtype)
    return module, x, h0, R, Rh


def compare(ours, theirs, dtype):
    tol = TOL[dtype]
    for name, a, b in zip(["output", "h_n", "dx", "dh0"], ours[:4], theirs[:4],
                          strict=True):
        assert a.dtype == dtype, f"{name} is {a.dtype}"
        assert_close(a, b, tol, name)
    assert list(ours[4]) == list(theirs[4])
    for key in theirs[4]:
        assert_close(ours[4][key], theirs[4][key], tol, key)


def run_class(module, backend, dtype, x, h0, R, Rh, lengths=None):
    rnn = rnncore.RNN(module.input_size, module.hidden_size, module.num_layers,
                      nonlinearity=module.nonlinearity, bias=module.bias,
                      batch_first=module.batch_first, bidirectional=module.bidirectional,
                      dtype=dtype, backend=backend)
    rnn.load_state_dict(module.state_dict())
    y, h_n = rnn(x, h0, lengths)
    dx, dh0 = rnn.backward(R, Rh)
    return y, h_n, dx, dh0, rnn.grads


def run_functional(module, backend, x, h0, R, Rh, lengths=None):
    params = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    y, h_n, record = F.forward(x, params, h0, lengths, nonlinearity=module.nonlinearity,
                               batch_first=module.batch_first, backend=backend)
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


def test_batch_first_matches_torch(backend, dtype, rng):
    module, x, h0, R, Rh = make_case(rng, dtype, 2, True, "tanh", True, batch_first=True)
    compare(run_class(module, backend, dtype, x, h0, R, Rh),
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
    compare(run_class(module, backend, dtype, x, h0, R, Rh, lengths),
            torch_reference(module, x, h0, R, Rh, lengths, batch_first=True), dtype)


@pytest.mark.parametrize("num_layers, bidirectional, nonlinearity, bias, layout, lengths", [
    (2, False, "tanh", True, "time-major", None),
    (2, True, "tanh", True, "time-major", None),
    (1, False, "relu", False, "time-major", None),
    (2, True, "relu", True, "batch_first", [3, 7, 1]),
    (3, True, "tanh", True, "time-major", [5, 2, 7]),
    (2, True, "tanh", False, "unbatched", None),
], ids=["2layers", "2layers-bi", "relu-no-bias", "bi-relu-batch_first-lengths",
        "3layers-bi-lengths", "bi-no-bias-unbatched"])
def test_functional_api_matches_torch(backend, dtype, rng, num_layers, bidirectional,
                                      nonlinearity, bias, layout, lengths):
    module, x, h0, R, Rh = make_case(rng, dtype, num_layers, bidirectional, nonlinearity,
                                     bias, batch_first=layout == "batch_first",
                                     unbatched=layout == "unbatched")
    compare(run_functional(module, backend, x, h0, R, Rh, lengths),
            torch_reference(module, x, h0, R, Rh, lengths,
                            batch_first=layout == "batch_first"), dtype)


def test_default_h0_and_dh_n_are_zeros_as_in_torch(backend, dtype, rng):
    module, x, _, R, _ = make_case(rng, dtype, 2, True, "tanh", True)
    rnn = rnncore.RNN(K, H, 2, bidirectional=True, dtype=dtype, backend=backend)
    rnn.load_state_dict(module.state_dict())
    y, h_n = rnn(x)
    dx, dh0 = rnn.backward(R)
    zeros = np.zeros((4, B, H), dtype)
    want = torch_reference(module, x, zeros, R, zeros)
    compare((y, h_n, dx, dh0, rnn.grads), want, dtype)
