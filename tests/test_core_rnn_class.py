"""The RNN class: parameters, accumulated gradients, state_dict, seeding."""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F


def test_grads_accumulate_across_backward_calls(backend, dtype, rng):
    rnn = rnncore.RNN(3, 4, dtype=dtype, seed=0, backend=backend)
    x = rng.standard_normal((5, 2, 3)).astype(dtype)
    dy = rng.standard_normal((5, 2, 4)).astype(dtype)
    y, _, record = F.forward(x, rnn.params, backend=backend)
    _, _, once = F.backward(record, dy)
    rnn(x)
    rnn.backward(dy)
    rnn(x)
    rnn.backward(dy)
    for key, g in once.items():
        np.testing.assert_allclose(rnn.grads[key], 2 * g, rtol=1e-5)


def test_zero_grad_clears_every_gradient(backend, rng):
    rnn = rnncore.RNN(3, 4, num_layers=2, seed=0, backend=backend)
    rnn(rng.standard_normal((5, 2, 3)).astype(np.float32))
    rnn.backward(np.ones((5, 2, 4), np.float32))
    assert any((g != 0).any() for g in rnn.grads.values())
    rnn.zero_grad()
    assert all((g == 0).all() for g in rnn.grads.values())
    assert set(rnn.grads) == set(rnn.params)


def test_params_are_the_live_arrays(backend, rng):
    rnn = rnncore.RNN(3, 4, seed=0, backend=backend)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y1, _ = rnn(x)
    rnn.params["weight_hh_l0"] *= 0
    rnn.params["weight_ih_l0"] *= 0
    y2, _ = rnn(x)
    b = rnn.params["bias_ih_l0"] + rnn.params["bias_hh_l0"]
    np.testing.assert_allclose(y2, np.broadcast_to(np.tanh(b), y2.shape), rtol=1e-5)
    assert not np.allclose(y1, y2)


def test_state_dict_returns_copies():
    rnn = rnncore.RNN(3, 4, seed=0)
    state = rnn.state_dict()
    state["weight_hh_l0"][...] = 0
    assert (rnn.params["weight_hh_l0"] != 0).any()


def test_load_state_dict_accepts_lists_and_converts_dtype():
    rnn = rnncore.RNN(2, 2, bias=False, dtype=np.float32, seed=0)
    rnn.load_state_dict({"weight_ih_l0": [[1, 2], [3, 4]], "weight_hh_l0": np.eye(2)})
    assert rnn.params["weight_ih_l0"].dtype == np.float32
    np.testing.assert_array_equal(rnn.params["weight_ih_l0"], [[1, 2], [3, 4]])


def test_same_seed_gives_same_parameters_and_other_seeds_differ():
    a, b, c = (rnncore.RNN(3, 8, num_layers=2, seed=s) for s in (5, 5, 6))
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
        assert not np.array_equal(a.params[key], c.params[key])


def test_seed_accepts_a_generator():
    a = rnncore.RNN(3, 8, seed=np.random.default_rng(1))
    b = rnncore.RNN(3, 8, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(a.params["weight_hh_l0"], b.params["weight_hh_l0"])


@pytest.mark.parametrize("kwargs", [
    dict(), dict(num_layers=3), dict(bidirectional=True), dict(bias=False),
    dict(num_layers=2, bidirectional=True, bias=False),
])
def test_state_dict_keys_are_torchs(kwargs):
    torch = pytest.importorskip("torch")
    ours = rnncore.RNN(3, 4, seed=0, **kwargs).state_dict()
    theirs = torch.nn.RNN(3, 4, **kwargs).state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].shape == tuple(theirs[key].shape)


def test_weights_round_trip_through_torch():
    torch = pytest.importorskip("torch")
    rnn = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, seed=0)
    module = torch.nn.RNN(3, 4, num_layers=2, bidirectional=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    back = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, seed=1)
    back.load_state_dict(module.state_dict())           # tensors go through np.asarray
    for key in rnn.params:
        np.testing.assert_array_equal(back.params[key], rnn.params[key])


def test_backends_lists_cython_first_when_built():
    names = rnncore.backends()
    assert "numpy" in names
    assert names[0] == ("cython" if "cython" in names else "numpy")


def test_repr_shows_the_configuration():
    text = repr(rnncore.RNN(3, 4, num_layers=2, nonlinearity="relu", dtype=np.float64))
    assert text == "RNN(3, 4, num_layers=2, nonlinearity='relu', dtype=float64)"
