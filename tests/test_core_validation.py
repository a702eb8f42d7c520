"""Bad input raises TypeError/ValueError naming the argument, the expected and the given."""
import re

import numpy as np
import pytest

import rnncore
from rnncore import functional as F


@pytest.fixture
def rnn(backend):
    return rnncore.RNN(3, 4, num_layers=2, bidirectional=True, seed=0, backend=backend)


def x_of(shape=(5, 2, 3), dtype=np.float32):
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("shape", [(5,), (1, 5, 2, 3), ()])
def test_wrong_ndim_of_x(rnn, shape):
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3\), .*\(T, 3\) "
                                         r"unbatched; got " + re.escape(str(shape))):
        rnn(x_of(shape))


def test_wrong_feature_count_of_x(rnn):
    with pytest.raises(ValueError, match=r"x must have 3 features .*got shape \(5, 2, 4\)"):
        rnn(x_of((5, 2, 4)))


def test_wrong_h0_shape_names_expected_and_given(rnn):
    with pytest.raises(ValueError, match=r"h0 must have shape \(4, 2, 4\) .*got \(2, 2, 4\)"):
        rnn(x_of(), h0=np.zeros((2, 2, 4), np.float32))


def test_x_dtype_other_than_weights_names_both(rnn):
    with pytest.raises(TypeError, match=r"x has dtype float64 but the weights are float32"):
        rnn(x_of(dtype=np.float64))


def test_unbatched_h0_must_drop_the_batch_axis(rnn):
    with pytest.raises(ValueError, match=r"h0 must have shape \(4, 4\) .*got \(4, 1, 4\)"):
        rnn(x_of((5, 3)), h0=np.zeros((4, 1, 4), np.float32))


def test_h0_dtype_other_than_weights_names_both(rnn):
    with pytest.raises(TypeError, match=r"h0 has dtype float64 but the weights are float32"):
        rnn(x_of(), h0=np.zeros((4, 2, 4)))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.complex64, np.bool_, object])
def test_non_float_x_is_a_type_error(rnn, dtype):
    given = np.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"x must be float32 or float64; got dtype {given}$"):
        rnn(np.ones((5, 2, 3), dtype=dtype))


@pytest.mark.parametrize("lengths, error, message", [
    ([0, 5], ValueError, r"lengths must lie in \[1, 5\] .*got values from 0 to 5"),
    ([6, 5], ValueError, r"lengths must lie in \[1, 5\] .*got values from 5 to 6"),
    ([-1, 2], ValueError, r"lengths must lie in \[1, 5\]"),
    ([5], ValueError, r"lengths must have shape \(2,\) for batch size 2; got \(1,\)"),
    ([[5, 5]], ValueError, r"lengths must have shape \(2,\)"),
    ([np.nan, 5], ValueError, r"lengths must hold whole numbers"),
    ([2.5, 5], ValueError, r"lengths must hold whole numbers"),
    ([np.inf, 5], ValueError, r"lengths must hold whole numbers"),
    ([2 + 0j, 5], TypeError, r"lengths must be integers; got dtype complex128"),
    ([True, True], TypeError, r"lengths must be integers; got dtype bool"),
    (["a", "b"], TypeError, r"lengths must be integers"),
])
def test_bad_lengths(rnn, lengths, error, message):
    with pytest.raises(error, match=message):
        rnn(x_of(), lengths=lengths)


def test_whole_float_lengths_are_accepted(rnn):
    y, _ = rnn(x_of(), lengths=np.array([2.0, 5.0]))
    assert (y[2:, 0] == 0).all()


@pytest.mark.parametrize("value", ["gelu", "Tanh", None])
def test_bad_nonlinearity(value):
    message = r"nonlinearity must be 'tanh' or 'relu'; got " + re.escape(repr(value))
    with pytest.raises(ValueError, match=message):
        rnncore.RNN(3, 4, nonlinearity=value)
    rnn = rnncore.RNN(3, 4, seed=0)
    with pytest.raises(ValueError, match=message):
        F.forward(x_of(), rnn.params, nonlinearity=value)


@pytest.mark.parametrize("value", ["cuda", "", ["numpy"]])
def test_bad_backend_name(value):
    message = re.escape(f"backend must be one of {rnncore.backends()} or None; got {value!r}")
    with pytest.raises(ValueError, match=message):
        rnncore.RNN(3, 4, backend=value)
    rnn = rnncore.RNN(3, 4, seed=0)
    with pytest.raises(ValueError, match=message):
        F.forward(x_of(), rnn.params, backend=value)


@pytest.mark.parametrize("name, value", [
    ("input_size", 0), ("input_size", -3), ("hidden_size", 0), ("hidden_size", -1),
    ("num_layers", 0), ("num_layers", np.int64(-2)),
])
def test_sizes_below_one_in_constructor(name, value):
    kwargs = dict(input_size=3, hidden_size=4, num_layers=1)
    kwargs[name] = value
    with pytest.raises(ValueError, match=rf"{name} must be >= 1; got {value}$"):
        rnncore.RNN(**kwargs)


@pytest.mark.parametrize("name, value, given", [
    ("hidden_size", 2.5, "float"), ("hidden_size", True, "bool"),
    ("input_size", False, "bool"), ("num_layers", "2", "str"), ("num_layers", None, "NoneType"),
])
def test_non_integer_sizes_in_constructor(name, value, given):
    kwargs = dict(input_size=3, hidden_size=4, num_layers=1)
    kwargs[name] = value
    with pytest.raises(TypeError, match=rf"{name} must be an integer; got {given}$"):
        rnncore.RNN(**kwargs)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "complex64"])
def test_bad_dtype_in_constructor(dtype):
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64"):
        rnncore.RNN(3, 4, dtype=dtype)


def test_dy_of_wrong_shape(rnn):
    rnn(x_of())
    with pytest.raises(ValueError, match=r"dy must have the shape of the forward output "
                                         r"\(5, 2, 8\); got \(5, 2, 4\)"):
        rnn.backward(np.ones((5, 2, 4), np.float32))


def test_dh_n_of_wrong_shape(rnn):
    rnn(x_of())
    with pytest.raises(ValueError, match=r"dh_n must have shape \(4, 2, 4\)"):
        rnn.backward(None, np.ones((4, 1, 4), np.float32))


def test_dy_of_wrong_shape_with_batch_first():
    rnn = rnncore.RNN(3, 4, batch_first=True, seed=0)
    rnn(x_of((2, 5, 3)))
    with pytest.raises(ValueError, match=r"dy must have the shape of the forward output "
                                         r"\(2, 5, 4\); got \(5, 2, 4\)"):
        rnn.backward(np.ones((5, 2, 4), np.float32))


def test_dh_n_of_wrong_dtype(rnn):
    rnn(x_of())
    with pytest.raises(TypeError, match=r"dh_n has dtype float64 but the weights are float32"):
        rnn.backward(None, np.ones((4, 2, 4)))


def test_dy_of_wrong_dtype(rnn):
    rnn(x_of())
    with pytest.raises(TypeError, match=r"dy has dtype float64 but the weights are float32"):
        rnn.backward(np.ones((5, 2, 8)))


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        rnncore.RNN(3, 4).backward()


def test_load_state_dict_with_missing_and_extra_keys(rnn):
    state = rnn.state_dict()
    state.pop("weight_hh_l1")
    state["weight_hh_l2"] = np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"missing \['weight_hh_l1'\], unexpected \['weight_hh_l2'\]"):
        rnn.load_state_dict(state)


def test_load_state_dict_of_a_non_mapping(rnn):
    with pytest.raises(TypeError, match=r"state_dict must be a mapping; got list"):
        rnn.load_state_dict([rnn.params["weight_ih_l0"]])


@pytest.mark.parametrize("dtype", [np.complex128, np.bool_, object])
def test_load_state_dict_of_non_real_values(rnn, dtype):
    state = {k: np.ones(v.shape, dtype) for k, v in rnn.params.items()}
    with pytest.raises(TypeError, match=r"state_dict\['weight_ih_l0'\] must be real numbers; "
                                        r"got dtype"):
        rnn.load_state_dict(state)


def test_load_state_dict_with_wrong_shape(rnn):
    state = rnn.state_dict()
    state["weight_ih_l0"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l0'\] must have shape \(4, 3\); got \(4, 5\)"):
        rnn.load_state_dict(state)


def test_failed_load_state_dict_changes_nothing(rnn):
    before = rnn.state_dict()
    state = {k: np.full(v.shape, 7.0) for k, v in before.items()}
    state["bias_hh_l1_reverse"] = np.zeros(5)
    with pytest.raises(ValueError):
        rnn.load_state_dict(state)
    for key, value in rnn.params.items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("params, error, message", [
    ({"weight_ih_l0": np.ones((4, 3))}, ValueError, r"at least 'weight_ih_l0' and 'weight_hh_l0'"),
    ({"weight_ih_l0": np.ones((4, 3)), "weight_hh_l0": np.ones((4, 5))}, ValueError,
     r"params\['weight_hh_l0'\] must have shape \(4, 4\) .*got \(4, 5\)"),
    ({"weight_ih_l0": np.ones((4, 3)), "weight_hh_l0": np.ones((4, 4), np.float32)}, TypeError,
     r"params\['weight_hh_l0'\] is float32 but params\['weight_ih_l0'\] is float64"),
    ({"weight_ih_l0": np.ones((4, 3)), "weight_hh_l0": np.ones((4, 4)), "bogus": 1}, ValueError,
     r"unexpected key 'bogus'"),
    ({"weight_ih_l0": np.ones((4, 3)), "weight_hh_l0": np.ones((4, 4)),
      "bias_ih_l0": np.ones(4)}, ValueError, r"missing \['bias_hh_l0'\]"),
    ({"weight_ih_l0": np.ones((4, 3), int), "weight_hh_l0": np.ones((4, 4))}, TypeError,
     r"params\['weight_ih_l0'\] must be float32 or float64"),
    ([1, 2], TypeError, r"params must be a mapping"),
])
def test_functional_rejects_bad_params(backend, params, error, message):
    with pytest.raises(error, match=message):
        F.forward(np.ones((2, 1, 3)), params, backend=backend)


def test_functional_backward_rejects_a_non_record():
    with pytest.raises(TypeError, match="record must be the Record returned by forward"):
        F.backward({"not": "a record"})
