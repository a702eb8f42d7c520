"""The RNN class: initialisation, parameters, accumulated gradients, state_dict."""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F


@pytest.mark.parametrize("hidden_size", [1, 7, 400])
def test_every_parameter_lies_within_one_over_sqrt_hidden_size(dtype, hidden_size):
    rnn = rnncore.RNN(5, hidden_size, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    bound = 1 / np.sqrt(hidden_size)
    for key, p in rnn.params.items():
        assert p.dtype == dtype, key
        assert np.abs(p).max() <= bound, key


def test_initialisation_is_uniform_and_centred_like_torchs():
    rnn = rnncore.RNN(10, 400, num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    bound = 1 / np.sqrt(400)
    values = np.concatenate([p.ravel() for p in rnn.params.values()]) / bound
    counts, _ = np.histogram(values, bins=10, range=(-1, 1))
    # ~1.3e6 draws: each tenth of the interval holds 10% of them, to well within 0.5%
    np.testing.assert_allclose(counts / values.size, 0.1, atol=0.005)
    for key, p in rnn.params.items():
        assert np.abs(p).max() > 0.95 * bound, key          # each one fills the interval
        assert abs(p.mean()) < 0.2 * bound, key


def test_same_seed_gives_same_parameters_and_other_seeds_differ():
    a, b, c = (rnncore.RNN(3, 8, num_layers=2, seed=s) for s in (5, 5, 6))
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
        assert not np.array_equal(a.params[key], c.params[key])


def test_seed_accepts_a_generator():
    a = rnncore.RNN(3, 8, seed=np.random.default_rng(1))
    b = rnncore.RNN(3, 8, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(a.params["weight_hh_l0"], b.params["weight_hh_l0"])


def test_grads_accumulate_across_backward_calls(backend, dtype, rng):
    rnn = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=0,
                      backend=backend)
    x = rng.standard_normal((5, 2, 3)).astype(dtype)
    dy1 = rng.standard_normal((5, 2, 8)).astype(dtype)
    dy2 = rng.standard_normal((5, 2, 8)).astype(dtype)
    _, _, record = F.forward(x, rnn.params, backend=backend)
    g1 = F.backward(record, dy1)[2]
    g2 = F.backward(record, dy2)[2]
    rnn(x)
    rnn.backward(dy1)
    rnn(x)
    rnn.backward(dy2)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for key in rnn.params:
        np.testing.assert_allclose(rnn.grads[key], g1[key] + g2[key], rtol=rtol, atol=rtol)


def test_backward_twice_after_one_forward_adds_twice(backend, rng):
    rnn = rnncore.RNN(3, 4, dtype=np.float64, seed=0, backend=backend)
    x = rng.standard_normal((5, 2, 3))
    dy = rng.standard_normal((5, 2, 4))
    rnn(x)
    rnn.backward(dy)
    once = {k: g.copy() for k, g in rnn.grads.items()}
    rnn.backward(dy)
    for key, g in once.items():
        np.testing.assert_array_equal(rnn.grads[key], 2 * g)


def test_zero_grad_clears_every_gradient(backend, rng):
    rnn = rnncore.RNN(3, 4, num_layers=2, seed=0, backend=backend)
    rnn(rng.standard_normal((5, 2, 3)).astype(np.float32))
    rnn.backward(np.ones((5, 2, 4), np.float32))
    assert all((g != 0).any() for g in rnn.grads.values())
    rnn.zero_grad()
    assert list(rnn.grads) == list(rnn.params)
    for key, g in rnn.grads.items():
        assert g.shape == rnn.params[key].shape and g.dtype == rnn.params[key].dtype
        assert (g == 0).all(), key


def test_params_are_the_live_arrays(backend, rng):
    rnn = rnncore.RNN(3, 4, seed=0, backend=backend)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y1, _ = rnn(x)
    rnn.params["weight_hh_l0"] *= 0
    rnn.params["weight_ih_l0"] *= 0
    y2, _ = rnn(x)
    b = rnn.params["bias_ih_l0"] + rnn.params["bias_hh_l0"]
    np.testing.assert_allclose(y2, np.broadcast_to(np.tanh(b), y2.shape), rtol=1e-6)
    assert not np.allclose(y1, y2)


def test_state_dict_returns_copies():
    rnn = rnncore.RNN(3, 4, seed=0)
    state = rnn.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(value, rnn.params[key])
        assert not np.shares_memory(value, rnn.params[key])
    state["weight_hh_l0"][...] = 0
    assert (rnn.params["weight_hh_l0"] != 0).all()


def test_load_state_dict_copies_into_the_live_arrays():
    rnn = rnncore.RNN(3, 4, seed=0)
    live = dict(rnn.params)
    state = {k: np.full(v.shape, 0.25, np.float32) for k, v in rnn.params.items()}
    rnn.load_state_dict(state)
    for key, value in rnn.params.items():
        assert value is live[key]
        assert (value == 0.25).all()
        assert not np.shares_memory(value, state[key])


def test_load_state_dict_accepts_lists_and_converts_dtype():
    rnn = rnncore.RNN(2, 2, bias=False, dtype=np.float32, seed=0)
    rnn.load_state_dict({"weight_ih_l0": [[1, 2], [3, 4]], "weight_hh_l0": np.eye(2)})
    assert rnn.params["weight_ih_l0"].dtype == np.float32
    np.testing.assert_array_equal(rnn.params["weight_ih_l0"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(rnn.params["weight_hh_l0"], np.eye(2))


@pytest.mark.parametrize("kwargs", [
    dict(), dict(num_layers=3), dict(bidirectional=True), dict(bias=False),
    dict(num_layers=2, bidirectional=True, bias=False), dict(num_layers=3, bidirectional=True),
])
def test_state_dict_keys_and_shapes_are_torchs(torch, kwargs):
    ours = rnncore.RNN(3, 4, seed=0, **kwargs).state_dict()
    theirs = torch.nn.RNN(3, 4, **kwargs).state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].shape == tuple(theirs[key].shape), key


@pytest.mark.parametrize("dtype_pair", [(np.float32, "float32"), (np.float64, "float64")])
def test_weights_round_trip_through_torch(torch, dtype_pair):
    dtype, torch_dtype = dtype_pair
    rnn = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    module = torch.nn.RNN(3, 4, num_layers=2, bidirectional=True,
                          dtype=getattr(torch, torch_dtype))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    back = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    back.load_state_dict(module.state_dict())           # torch tensors, as they come
    for key in rnn.params:
        np.testing.assert_array_equal(back.params[key], rnn.params[key])


def test_load_state_dict_accepts_tensors_that_require_grad(torch):
    module = torch.nn.RNN(3, 4)
    rnn = rnncore.RNN(3, 4, dtype=np.float32, seed=0)
    rnn.load_state_dict(dict(module.named_parameters()))
    for key, p in module.named_parameters():
        np.testing.assert_array_equal(rnn.params[key], p.detach().numpy())


def test_backends_lists_cython_first_when_built():
    names = rnncore.backends()
    assert "numpy" in names
    assert names[0] == ("cython" if "cython" in names else "numpy")


def test_repr_shows_the_configuration():
    text = repr(rnncore.RNN(3, 4, num_layers=2, nonlinearity="relu", dtype=np.float64))
    assert text == "RNN(3, 4, num_layers=2, nonlinearity='relu', dtype=float64)"
