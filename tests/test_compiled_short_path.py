"""The compiled short call (``rnncore._short``).

``functional.forward`` (every option at its default, or ``backend="cython"``, which the
default picks) and ``backward`` hand a call whose arguments are exactly what the short
path takes (a dict of native ndarrays, ``x`` a C-contiguous (T, B, K) ndarray of their
dtype, no h0 or ∂L/∂h_n, lengths none or in a usual form) to compiled code. These
tests pin that it takes those calls (counted, so that a bitwise match cannot come from
a call it declined), that it gives functional's bits and record, and that it declines
everything else, so that functional checks it and raises as it always did.
"""
import numpy as np
import pytest

import rnncore
import rnncore.functional as F
from rnncore import _parallel
from rnncore._params import CheckedParams

_short = pytest.importorskip("rnncore._short")


@pytest.fixture
def taken(monkeypatch):
    """How many calls the compiled path took (returned a result), by kind."""
    counts = {"forward": 0, "backward": 0}
    for kind in counts:
        def counted(*args, _run=getattr(_short, kind), _kind=kind):
            result = _run(*args)
            counts[_kind] += result is not None
            return result
        monkeypatch.setattr(_short, kind, counted)
    return counts


def make_call(rng, dtype, T=20, B=3, K=5, H=7, layers=1, bias=True, **shape_options):
    params = {key: rng.uniform(-0.5, 0.5, shape).astype(dtype)
              for key, shape in F.param_shapes(K, H, layers, bias=bias,
                                               **shape_options).items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    return x, params


def python_forward(x, params):
    """The same forward through functional's Python path: it takes an explicit h0 (of
    zeros: the same bits as none), the compiled path does not."""
    layers = sum(key.startswith("weight_hh") for key in params)
    h0 = np.zeros((layers, x.shape[1], params["weight_hh_l0"].shape[1]), x.dtype)
    return F.forward(x, params, h0=h0)


def python_path(x, params, dy):
    """forward and backward through functional's Python path (an explicit ∂L/∂h_n of
    zeros, likewise)."""
    y, h_n, record = python_forward(x, params)
    dh_n = np.zeros(h_n.shape, h_n.dtype)
    return (y, h_n, record), F.backward(record, dy, dh_n)


def same_outcome(x, params, oracle):
    """``F.forward(x, params)`` and ``oracle()``: (got, want), or (None, None) once
    both have raised the same error (type and message)."""
    try:
        want = oracle()
    except (TypeError, ValueError) as error:
        with pytest.raises(type(error)) as raised:
            F.forward(x, params)
        assert str(raised.value) == str(error)
        return None, None
    return F.forward(x, params), want


# "cython" made at run time is another object than the literal (a command line's)
@pytest.mark.parametrize("backend", [None, "cython", "".join(["cy", "thon"])],
                         ids=["default", "cython", "cython built"])
@pytest.mark.parametrize("B", [1, 3], ids=["lone row", "batch"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_a_default_call_takes_the_compiled_path_with_the_python_paths_bits(
        dtype, rng, taken, backend, B, layers, bias):
    x, params = make_call(rng, dtype, B=B, layers=layers, bias=bias)
    dy = rng.standard_normal((x.shape[0], B, 7)).astype(dtype)
    y, h_n, record = F.forward(x, params, backend=backend)
    dx, dh0, grads = F.backward(record, dy)
    assert taken == {"forward": 1, "backward": 1}
    (want_y, want_h_n, want_record), (want_dx, want_dh0, want_grads) = python_path(
        x, params, dy)
    assert taken == {"forward": 1, "backward": 1}
    for got, want in [(y, want_y), (h_n, want_h_n), (dx, want_dx), (dh0, want_dh0)]:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert list(grads) == list(want_grads) == list(F.param_shapes(5, 7, layers, bias))
    for key in grads:
        np.testing.assert_array_equal(grads[key], want_grads[key], err_msg=key)
    for name in type(record).__slots__:
        if name not in ("weights", "inputs", "states", "saved", "lengths", "plan"):
            assert getattr(record, name) == getattr(want_record, name), name
    assert record.plan is want_record.plan
    np.testing.assert_array_equal(record.lengths, want_record.lengths)


@pytest.mark.parametrize("snapshot", [True, False])
def test_snapshot_weights_decides_whether_the_compiled_record_keeps_the_callers_arrays(
        rng, taken, snapshot):
    x, params = make_call(rng, np.float32, layers=2)
    _, _, record = F.forward(x, params, snapshot_weights=snapshot)
    assert taken["forward"] == 1
    for layer in range(2):
        w_ih, w_hh, _ = record.weights[layer][0]
        for kept, key in [(w_ih, f"weight_ih_l{layer}"), (w_hh, f"weight_hh_l{layer}")]:
            assert (kept is params[key]) is not snapshot, key
            assert np.shares_memory(kept, params[key]) is not snapshot, key


def test_checked_params_take_the_compiled_path(dtype, rng, taken):
    x, params = make_call(rng, dtype)
    y, h_n, _ = F.forward(x, CheckedParams(params, "rnn"))
    assert taken["forward"] == 1
    want_y, want_h_n, _ = python_forward(x, params)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(h_n, want_h_n)


def test_the_compiled_paths_results_are_the_callers_own_and_its_inputs_unchanged(
        rng, taken):
    x, params = make_call(rng, np.float32, layers=2)
    before = [x.copy()] + [p.copy() for p in params.values()]
    y, h_n, record = F.forward(x, params)
    dy = np.ones_like(y)
    dy_before = dy.copy()
    dx, dh0, grads = F.backward(record, dy)
    assert taken == {"forward": 1, "backward": 1}
    for got, want in zip([x, *params.values()], before, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(dy, dy_before)
    kept = [a for layer in record.states for a in layer]
    kept += [w for layer in record.weights for w in layer[0]]
    for result in [y, h_n, dx, dh0, *grads.values()]:
        assert result.flags.writeable and result.flags.c_contiguous
        assert not np.shares_memory(result, x)
        for array in kept + list(params.values()):
            assert not np.shares_memory(result, array)
    for w in record.weights[0][0][:2]:      # snapshots, not the caller's weights
        assert not any(np.shares_memory(w, p) for p in params.values())


def _swapped(params):
    key = next(iter(params))
    return {**params, key: params[key].astype(params[key].dtype.newbyteorder())}


class _Mapping:
    """A read-only mapping that is not a dict."""

    def __init__(self, d):
        self._d = d

    def __getitem__(self, key):
        return self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def keys(self):
        return self._d.keys()

    def items(self):
        return self._d.items()

    def values(self):
        return self._d.values()


def _bidirectional():
    rng = np.random.default_rng(0)
    return {key: rng.uniform(-0.5, 0.5, shape).astype(np.float32)
            for key, shape in F.param_shapes(5, 7, 1, bidirectional=True).items()}


# (name, how the call differs from one the compiled path takes)
DECLINED = {
    "params a Mapping": lambda x, p: (x, _Mapping(p)),
    "a parameter a list": lambda x, p: (x, {**p, "bias_hh_l0": p["bias_hh_l0"].tolist()}),
    "a parameter byte-swapped": lambda x, p: (x, _swapped(p)),
    "x a list": lambda x, p: (x.tolist(), p),
    "x not contiguous": lambda x, p: (np.asfortranarray(x), p),
    "x of another dtype": lambda x, p: (x.astype(np.float64), p),
    "x unbatched": lambda x, p: (x[:, 0], p),
    "x with another K": lambda x, p: (x[:, :, :4].copy(), p),
    "x with no steps": lambda x, p: (x[:0].copy(), p),
    "bidirectional": lambda x, p: (x, _bidirectional()),
}


@pytest.mark.parametrize("case", list(DECLINED))
def test_the_compiled_forward_declines_a_call_it_does_not_take(rng, case):
    x, params = DECLINED[case](*make_call(rng, np.float32))
    assert _short.forward(x, params) is None


@pytest.mark.parametrize("case", list(DECLINED))
def test_a_declined_call_is_functionals_result_or_error(rng, case, taken):
    x, params = DECLINED[case](*make_call(rng, np.float32))
    got, want = same_outcome(x, params, lambda: F.forward(x, params, backend="cython"))
    if want is not None:
        np.testing.assert_array_equal(got[0], want[0])
    assert taken["forward"] == 0


def test_a_call_split_over_threads_is_declined(rng, monkeypatch):
    x, params = make_call(rng, np.float32, B=24)
    monkeypatch.setattr(_parallel, "_MIN_PART_WORK", 1)
    monkeypatch.setattr(_parallel, "_MIN_PART_ROWS", 1)
    rnncore.set_num_threads(2)
    try:
        if F._one_part_each(F._kernels, *x.shape[:2], F.read_params(params, "rnn")[0].cfg):
            pytest.skip("the kernels' policy here does not split this call")
        assert _short.forward(x, params) is None
    finally:
        rnncore.set_num_threads(None)


def test_a_call_whose_arrays_go_through_the_block_cache_is_declined(rng, monkeypatch):
    x, params = make_call(rng, np.float32)
    monkeypatch.setattr(F, "_CACHED_ELEMENTS", 1)
    assert _short.forward(x, params) is None


# (name, a change of the default call's backward that the compiled path does not take)
BACKWARD_DECLINED = {
    "dy None": lambda record, dy: (record, None),
    "dy a list": lambda record, dy: (record, dy.tolist()),
    "dy not contiguous": lambda record, dy: (record, np.asfortranarray(dy)),
    "dy of another shape": lambda record, dy: (record, dy[:-1].copy()),
    "dy of another dtype": lambda record, dy: (record, dy.astype(np.float64)),
    "a record of the walker with lengths whose lengths were replaced": lambda record, dy: (
        _with_lengths(F.forward(*record, np.zeros((1, 3, 7), np.float32),
                                lengths=[20, 19, 20])[2], [20, 19, 20]), dy),
    "not a record": lambda record, dy: ("record", dy),
}


def _with_lengths(record, lengths):
    """The record with its lengths replaced by a list (not the int64 array it reads)."""
    record.lengths = lengths
    return record


@pytest.mark.parametrize("case", list(BACKWARD_DECLINED))
def test_the_compiled_backward_declines_a_call_it_does_not_take(rng, case, taken):
    x, params = make_call(rng, np.float32)
    record = F.forward(x, params)[2] if "lengths" not in case else (x, params)
    dy = rng.standard_normal((20, 3, 7)).astype(np.float32)
    record, dy = BACKWARD_DECLINED[case](record, dy)
    assert _short.backward(record, dy, True, True) is None


def test_a_declined_backward_is_functionals_error(rng):
    x, params = make_call(rng, np.float32)
    record = F.forward(x, params)[2]
    with pytest.raises(ValueError, match="dy must have the shape of the forward output"):
        F.backward(record, np.zeros((19, 3, 7), np.float32))


def test_a_backward_whose_blas_has_several_threads_is_declined(rng):
    kernels = F._kernels
    x, params = make_call(rng, np.float32)
    y, _, record = F.forward(x, params)
    saved = kernels.blas_threads()
    kernels.set_blas_threads(2)
    try:
        if kernels.blas_threads() < 2:
            pytest.skip("this OpenBLAS runs one thread")
        assert _short.backward(record, np.ones_like(y), True, True) is None
    finally:
        kernels.set_blas_threads(saved)


def test_a_forward_whose_blas_has_several_threads_is_declined(rng):
    # functional's path then holds the BLAS at one thread for the call (determinism);
    # T of its own: the values kept for the last (plan, T, B) may come from a test
    # that changed what they depend on
    kernels = F._kernels
    x, params = make_call(rng, np.float32, T=13)
    assert _short.forward(x, params) is not None
    saved = kernels.blas_threads()
    kernels.set_blas_threads(2)
    try:
        if kernels.blas_threads() < 2:
            pytest.skip("this OpenBLAS runs one thread")
        assert _short.forward(x, params) is None
    finally:
        kernels.set_blas_threads(saved)


def _resized(params, H):
    rng = np.random.default_rng(1)
    shapes = F.param_shapes(5, H)
    return {key: rng.uniform(-0.5, 0.5, shapes[key]).astype(value.dtype)
            for key, value in params.items()}


# (name, a change made in place to the dict of the previous call)
CHANGES = {
    "every shape": lambda p: p.update(_resized(p, 6)),
    "every dtype": lambda p: p.update({k: v.astype(np.float64) for k, v in p.items()}),
    "one shape": lambda p: p.update(weight_hh_l0=p["weight_hh_l0"][:6, :6].copy()),
    "one dtype": lambda p: p.update(bias_ih_l0=p["bias_ih_l0"].astype(np.float64)),
    "the key order": lambda p: p.update(dict(reversed([p.popitem() for _ in range(4)]))),
    "a key": lambda p: p.update(bias_hh_l1=p.pop("bias_hh_l0")),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_dict_changed_between_calls_is_read_again(rng, change):
    x, params = make_call(rng, np.float32)
    F.forward(x, params)                 # the plan of these keys and shapes, kept
    CHANGES[change](params)
    if change == "every dtype":
        x = x.astype(np.float64)
    got, want = same_outcome(x, params, lambda: python_forward(x, params))
    if want is not None:
        for g, w in zip(got[:2], want[:2], strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
        assert got[2].plan is want[2].plan


def test_a_shape_declined_under_a_changed_threshold_is_taken_once_it_is_forgotten(
        rng, monkeypatch, taken):
    # the values kept for a shape come from functional's thresholds; forget_kept lets a
    # caller that changed one (as tests do) have them worked out again
    x, params = make_call(rng, np.float32, T=17)
    with monkeypatch.context() as patch:
        patch.setattr(F, "_CACHED_ELEMENTS", 1)
        F.forward(x, params)
    F.forward(x, params)
    assert taken["forward"] == 0            # still the values kept under the patch
    _short.forget_kept()
    F.forward(x, params)
    assert taken["forward"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lengths_that_pad_nothing_take_the_compiled_path_with_the_padded_calls_bits(
        taken, dtype):
    x, params = make_call(np.random.default_rng(3), dtype)
    want = F.forward(x, params)
    got = F.forward(x, params, lengths=[x.shape[0]] * x.shape[1])
    assert taken["forward"] == 2
    for g, w in zip(got[:2], want[:2], strict=True):
        np.testing.assert_array_equal(g, w)


# lengths that pad something (T = 20, B = 3), each a case of the walker's steps
PADDED = {
    "one row shorter": [20, 17, 20],
    "rows of every length": [1, 20, 9],
    "every row shorter": [18, 11, 15],      # the steps after the longest not run
    "every row as short": [13, 13, 13],     # not run, and nothing padded before it
}

# the forms of lengths the compiled path reads itself
LENGTHS_FORMS = {
    "list": list,
    "tuple": tuple,
    "int64 array": lambda v: np.array(v, np.int64),
    "int32 array": lambda v: np.array(v, np.int32),
    "strided array": lambda v: np.repeat(np.array(v, np.int64), 2)[::2],
}


def walker_with_lengths(monkeypatch, x, params, dy, lengths):
    """forward and backward with lengths through functional's layer walker, in Python
    and NumPy alone: no compiled short path, and the Python one (which takes every
    one-thread call of one Elman direction) turned away."""
    with monkeypatch.context() as patch:
        patch.setattr(F, "_short", None)
        patch.setattr(F, "_one_part_each", lambda *args: False)
        y, h_n, record = F.forward(x, params, lengths=lengths)
        return (y, h_n, record), F.backward(record, dy)


@pytest.mark.parametrize("case", list(PADDED))
@pytest.mark.parametrize("form", list(LENGTHS_FORMS))
@pytest.mark.parametrize("layers", [1, 3])
def test_lengths_that_pad_something_take_the_compiled_path_with_the_walkers_bits(
        dtype, rng, taken, monkeypatch, case, form, layers):
    x, params = make_call(rng, dtype, layers=layers)
    dy = rng.standard_normal((20, 3, 7)).astype(dtype)
    lengths = LENGTHS_FORMS[form](PADDED[case])
    y, h_n, record = F.forward(x, params, lengths=lengths)
    dx, dh0, grads = F.backward(record, dy)
    assert taken == {"forward": 1, "backward": 1}
    (want_y, want_h_n, want_record), (want_dx, want_dh0, want_grads) = \
        walker_with_lengths(monkeypatch, x, params, dy, lengths)
    assert taken == {"forward": 1, "backward": 1}
    for name, got, want in [("y", y, want_y), ("h_n", h_n, want_h_n), ("dx", dx, want_dx),
                            ("dh0", dh0, want_dh0)]:
        assert got.shape == want.shape and got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    for key in want_grads:
        np.testing.assert_array_equal(grads[key], want_grads[key], err_msg=key)
    for name in type(record).__slots__:
        got, want = getattr(record, name), getattr(want_record, name)
        if name in ("lengths", "padded"):
            assert (got is None) == (want is None), name
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif name == "inputs":
            for got_x, want_x in zip(got, want, strict=True):
                np.testing.assert_array_equal(got_x, want_x)
        elif name not in ("weights", "states", "saved", "plan"):
            assert got == want, name


def test_padded_steps_of_x_and_dy_are_ignored_by_the_compiled_path(rng, taken):
    x, params = make_call(rng, np.float32)
    dy = rng.standard_normal((20, 3, 7)).astype(np.float32)
    lengths = [20, 12, 17]
    want_y, want_h_n, record = F.forward(x, params, lengths=lengths)
    want = F.backward(record, dy)
    for i, n in enumerate(lengths):
        x[n:, i], dy[n:, i] = np.inf, np.nan
    y, h_n, record = F.forward(x, params, lengths=lengths)
    dx, dh0, grads = F.backward(record, dy)
    assert taken == {"forward": 2, "backward": 2}
    for got, expected in [(y, want_y), (h_n, want_h_n), (dx, want[0]), (dh0, want[1]),
                          *[(grads[k], want[2][k]) for k in grads]]:
        np.testing.assert_array_equal(got, expected)


def test_the_compiled_padded_path_leaves_the_callers_arrays_alone(rng, taken):
    x, params = make_call(rng, np.float32, layers=2)
    lengths = np.array([20, 12, 17])
    before = [x.copy(), lengths.copy()] + [p.copy() for p in params.values()]
    y, h_n, record = F.forward(x, params, lengths=lengths)
    dy = np.ones_like(y)
    dx, dh0, grads = F.backward(record, dy)
    assert taken == {"forward": 1, "backward": 1}
    for got, want in zip([x, lengths, *params.values()], before, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(dy, np.ones_like(y))
    assert not np.shares_memory(record.lengths, lengths)
    for result in [y, h_n, dx, dh0, *grads.values()]:
        assert result.flags.writeable and result.flags.c_contiguous
        assert not np.shares_memory(result, x)


def test_a_padded_record_gives_the_same_gradients_after_the_callers_lengths_change(
        rng):
    x, params = make_call(rng, np.float32)
    lengths = np.array([20, 12, 17])
    _, _, record = F.forward(x, params, lengths=lengths)
    dy = rng.standard_normal((20, 3, 7)).astype(np.float32)
    want = F.backward(record, dy)
    lengths[:] = 5
    got = F.backward(record, dy)
    np.testing.assert_array_equal(got[0], want[0])
    for key in want[2]:
        np.testing.assert_array_equal(got[2][key], want[2][key])


# (name, lengths the compiled path leaves to functional, which reads or rejects them)
LENGTHS_DECLINED = {
    "floats": [20.0, 12.0, 17.0],
    "bools": [True, True, True],
    "numpy ints in a list": [np.int64(20), np.int64(12), np.int64(17)],
    "int16 array": np.array([20, 12, 17], np.int16),
    "uint64 array": np.array([20, 12, 17], np.uint64),
    "2-D array": np.array([[20, 12, 17]]),
    "too few": [20, 12],
    "too many": [20, 12, 17, 3],
    "zero": [20, 0, 17],
    "past T": [20, 21, 17],
    "negative": np.array([20, -1, 17]),
    "huge": [20, 2 ** 70, 17],
    "a string": "20",
}


@pytest.mark.parametrize("case", list(LENGTHS_DECLINED))
def test_lengths_in_another_form_are_left_to_functional(rng, case, taken):
    x, params = make_call(rng, np.float32)
    lengths = LENGTHS_DECLINED[case]
    assert _short.forward(x, params, True, lengths) is None
    try:
        want = F.forward(x, params, h0=np.zeros((1, 3, 7), np.float32), lengths=lengths)
    except (TypeError, ValueError) as error:
        with pytest.raises(type(error)) as raised:
            F.forward(x, params, lengths=lengths)
        assert str(raised.value) == str(error)
        return
    got = F.forward(x, params, lengths=lengths)
    for g, w in zip(got[:2], want[:2], strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("lengths", [[20, 17, 20], [1, 20, 9], [18, 11, 15], [13, 13, 13],
                                     [20, 20, 20]])
def test_the_compiled_steps_to_run_are_numpys(rng, monkeypatch, lengths):
    x = rng.standard_normal((20, 3, 5)).astype(np.float32)
    for i, n in enumerate(lengths):
        x[n:, i] = np.inf
    lengths = np.array(lengths, np.int64)
    got_x, got_mask = _short.steps_to_run(x, lengths)
    monkeypatch.setattr(F, "_short", None)
    want_x, want_mask = F._steps_to_run(x, lengths)
    assert got_x.flags.c_contiguous and got_x.dtype == want_x.dtype
    np.testing.assert_array_equal(got_x, want_x)
    assert (got_x is x) == (want_x is x)
    assert (got_mask is None) == (want_mask is None)
    if want_mask is not None:
        assert got_mask.dtype == want_mask.dtype
        np.testing.assert_array_equal(got_mask, want_mask)


@pytest.mark.parametrize("lengths, words", [
    (np.array([20, 12, 17], np.int32), "int64 array"),
    (np.array([20, 12], np.int64), "(3,) int64"),
    (np.array([20, 0, 17], np.int64), "from 0 to 20"),
    (np.array([21, 12, 17], np.int64), "from 12 to 21"),
])
def test_the_compiled_steps_to_run_refuse_lengths_they_cannot_read(rng, lengths, words):
    x = rng.standard_normal((20, 3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="lengths") as raised:
        _short.steps_to_run(x, lengths)
    assert words in str(raised.value)


def _zero_padded_x(rng, lengths, dtype=np.float32):
    x = rng.standard_normal((20, len(lengths), 5)).astype(dtype)
    for i, n in enumerate(lengths):
        x[n:, i] = 0.0
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_x_already_zero_at_its_padded_steps_is_run_in_place(rng, dtype):
    lengths = np.array([20, 12, 17], np.int64)
    x = _zero_padded_x(rng, lengths, dtype)
    got_x, got_mask = _short.steps_to_run(x, lengths)
    assert got_x is x and got_mask is not None
    shorter = np.array([15, 12, 9], np.int64)          # and its steps after the longest
    got_x, _ = _short.steps_to_run(_zero_padded_x(rng, shorter, dtype), shorter)
    assert got_x.base is not None and got_x.shape[0] == 15 and got_x.flags.c_contiguous


@pytest.mark.parametrize("value", [-0.0, 1e-45, np.nan], ids=["-0", "denormal", "nan"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_an_x_with_anything_but_plus_zero_at_a_padded_step_is_copied_and_zeroed(
        rng, value, where):
    lengths = np.array([20, 12, 17], np.int64)
    x = _zero_padded_x(rng, lengths)
    x[(12, 1, 0) if where == "first" else (19, 2, 4)] = value
    got_x, _ = _short.steps_to_run(x, lengths)
    assert not np.shares_memory(got_x, x)
    assert not np.signbit(got_x[12:, 1]).any() and not got_x[12:, 1].any()
    assert not np.signbit(got_x[17:, 2]).any() and not got_x[17:, 2].any()


def test_a_zero_padded_call_keeps_x_by_reference_with_the_walkers_bits(rng, taken,
                                                                       monkeypatch):
    x, params = make_call(rng, np.float32, layers=2)
    lengths = [20, 12, 17]
    for i, n in enumerate(lengths):
        x[n:, i] = 0.0
    dy = rng.standard_normal((20, 3, 7)).astype(np.float32)
    y, h_n, record = F.forward(x, params, lengths=lengths)
    dx, dh0, grads = F.backward(record, dy)
    assert taken == {"forward": 1, "backward": 1}
    assert record.inputs[0] is x
    (want_y, want_h_n, _), (want_dx, want_dh0, want_grads) = walker_with_lengths(
        monkeypatch, x, params, dy, lengths)
    for got, want in [(y, want_y), (h_n, want_h_n), (dx, want_dx), (dh0, want_dh0),
                      *[(grads[k], want_grads[k]) for k in want_grads]]:
        np.testing.assert_array_equal(got, want)
