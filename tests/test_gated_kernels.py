"""The Cython kernels of the gated cells compute what their NumPy references compute.

``_kernels.lstm_layer_forward`` / ``lstm_layer_backward`` / ``gru_layer_forward`` /
``gru_layer_backward`` against ``cells/lstm.py`` and ``cells/gru.py`` (run in float64 on
the same inputs): LSTM with and without a projection and with a zero bias, GRU, both
directions, full and ragged lengths (a row of length 0 among them), B = 1, 8 and 13, gate
widths G·H that are not a multiple of any panel width, both dtypes, on every instruction
set this CPU runs with both ways of computing the whole-sequence products. Then σ's
error, the preconditions, read-only inputs, and the layer walker on the kernels.
"""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import reference

from conftest import RTOL, assert_close

_kernels = pytest.importorskip("rnncore._kernels")

T, K = 6, 7
# (B, H): one row (the single-row kernels); 8 = 6 + 2 and 13 = 2·6 + 1 rows (the tiles of
# a remainder); G·H = 20/15, 84/63, 148/111: never a multiple of a panel (8 to 32 wide)
SIZES = [(1, 37), (8, 5), (13, 21)]
# cell, projection width (0: none), bias
SPECS = {"lstm": ("lstm", 0, True), "lstm-zero-bias": ("lstm", 0, False),
         "lstm-proj": ("lstm", 3, True), "gru": ("gru", 0, True),
         "gru-zero-bias": ("gru", 0, False)}


@pytest.fixture
def path(kernel_path):
    """Each instruction set, and where it has packed kernels both ways of the
    whole-sequence products (conftest's ``kernel_path``)."""
    return kernel_path


def make_lengths(B, ragged):
    """All rows full, or rows of lengths 0, T, 3, 1, T-1, 0, ... (B = 1: one empty row)."""
    pattern = (0, T, 3, 1, T - 1)
    return np.array([pattern[i % 5] if ragged else T for i in range(B)], np.int64)


def make_case(spec, B, H, lengths, rng):
    """The arguments of the cell's forward and backward, float64, by the kernels' names."""
    cell, P, bias = SPECS[spec]
    G = 4 if cell == "lstm" else 3
    W = P or H
    pad = np.arange(T)[:, None] >= lengths                   # (T, B)
    v = {"x": rng.standard_normal((T, B, K)), "w_ih": 0.4 * rng.standard_normal((G * H, K)),
         "w_hh": 0.4 * rng.standard_normal((G * H, W)), "h0": rng.standard_normal((B, W)),
         "dy": rng.standard_normal((T, B, W)), "dh_n": rng.standard_normal((B, W))}
    v["x"][pad] = 0
    v["dy"][pad] = 0
    if cell == "lstm":
        v["b"] = rng.standard_normal(G * H) if bias else np.zeros(G * H)
        v["w_hr"] = 0.4 * rng.standard_normal((P, H)) if P else None
        v["c0"] = rng.standard_normal((B, H))
        v["dc_n"] = rng.standard_normal((B, H))
    else:
        v["b_ih"] = rng.standard_normal(G * H) if bias else np.zeros(G * H)
        v["b_hh"] = rng.standard_normal(G * H) if bias else np.zeros(G * H)
    return cell, v


def cast(v, dtype):
    return {k: None if a is None else a.astype(dtype) for k, a in v.items()}


def run_forward(module, cell, v, lengths, reverse):
    if cell == "lstm":
        return module.lstm_layer_forward(v["x"], v["w_ih"], v["w_hh"], v["b"], v["w_hr"],
                                         v["h0"], v["c0"], lengths, reverse)
    return module.gru_layer_forward(v["x"], v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"],
                                    v["h0"], lengths, reverse)


def run_backward(module, cell, v, fwd, lengths, reverse):
    if cell == "lstm":
        return module.lstm_layer_backward(v["x"], v["w_ih"], v["w_hh"], v["w_hr"], *fwd,
                                          v["dy"], v["dh_n"], v["dc_n"], lengths, reverse)
    return module.gru_layer_backward(v["x"], v["w_ih"], v["w_hh"], *fwd, v["dy"],
                                     v["dh_n"], lengths, reverse)


FWD_NAMES = {"lstm": ("hs", "cs", "gates"), "gru": ("hs", "saved")}
BWD_NAMES = {"lstm": ("dh0", "dc0", "dw_ih", "dw_hh", "db", "dw_hr", "delta"),
             "gru": ("dh0", "dw_ih", "dw_hh", "db_ih", "db_hh", "delta")}
CASE = pytest.mark.parametrize("spec", list(SPECS))
SIZE = pytest.mark.parametrize("B, H", SIZES, ids=[f"B{b}-H{h}" for b, h in SIZES])
DIRECTION = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
LENGTHS = pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])


def assert_all_close(got, want, names, dtype):
    assert len(got) == len(want) == len(names)
    for g, w, name in zip(got, want, names, strict=True):
        if w is None:
            assert g is None, name
            continue
        assert g.dtype == dtype, name
        assert_close(g, w, RTOL[np.dtype(dtype)], name)


@CASE
@SIZE
@DIRECTION
@LENGTHS
def test_forward_matches_the_reference(path, spec, B, H, reverse, ragged, dtype, rng):
    lengths = make_lengths(B, ragged)
    cell, v = make_case(spec, B, H, lengths, rng)
    v = cast(v, dtype)
    want = run_forward(reference, cell, cast(v, np.float64), lengths, reverse)
    got = run_forward(_kernels, cell, v, lengths, reverse)
    assert_all_close(got, want, FWD_NAMES[cell], dtype)


@CASE
@SIZE
@DIRECTION
@LENGTHS
def test_backward_matches_the_reference(path, spec, B, H, reverse, ragged, dtype, rng):
    lengths = make_lengths(B, ragged)
    cell, v = make_case(spec, B, H, lengths, rng)
    v = cast(v, dtype)
    v64 = cast(v, np.float64)
    fwd = run_forward(reference, cell, v64, lengths, reverse)
    want = run_backward(reference, cell, v64, fwd, lengths, reverse)
    got = run_backward(_kernels, cell, v, [a.astype(dtype) for a in fwd], lengths, reverse)
    assert_all_close(got, want, BWD_NAMES[cell], dtype)


EMPTY = [(0, 3, 4, 5), (4, 0, 4, 5), (4, 3, 0, 5), (0, 0, 0, 2), (3, 2, 2, 1)]


@pytest.mark.parametrize("spec", ["lstm", "lstm-proj", "gru"])
@pytest.mark.parametrize("T_, B, K_, H", EMPTY, ids=["T0", "B0", "K0", "all0", "H1"])
def test_empty_dimensions_match_the_reference(path, spec, T_, B, K_, H):
    """No steps, no rows, no input features, or one hidden unit (float64)."""
    cell, P, _ = SPECS[spec]
    G, W = (4 if cell == "lstm" else 3), min(P, H) or H
    rng = np.random.default_rng(3)
    lengths = np.minimum(np.arange(B), T_).astype(np.int64)
    v = {"x": rng.standard_normal((T_, B, K_)), "w_ih": rng.standard_normal((G * H, K_)),
         "w_hh": rng.standard_normal((G * H, W)), "h0": rng.standard_normal((B, W)),
         "dy": rng.standard_normal((T_, B, W)), "dh_n": rng.standard_normal((B, W)),
         "b": rng.standard_normal(G * H), "w_hr": rng.standard_normal((W, H)) if P else None,
         "c0": rng.standard_normal((B, H)), "dc_n": rng.standard_normal((B, H)),
         "b_ih": rng.standard_normal(G * H), "b_hh": rng.standard_normal(G * H)}
    pad = np.arange(T_)[:, None] >= lengths
    v["x"][pad] = 0
    v["dy"][pad] = 0
    for reverse in (False, True):
        want = run_forward(reference, cell, v, lengths, reverse)
        assert_all_close(run_forward(_kernels, cell, v, lengths, reverse), want,
                         FWD_NAMES[cell], np.float64)
        assert_all_close(run_backward(_kernels, cell, v, want, lengths, reverse),
                         run_backward(reference, cell, v, want, lengths, reverse),
                         BWD_NAMES[cell], np.float64)


def kernel_sigmoid(values, dtype):
    """σ through the kernel's forward pass: the input gate of a one-step LSTM with
    H = 1, a_i = x·1 + 0."""
    v = np.asarray(values, dtype=dtype)
    B = v.size
    _, _, gates = _kernels.lstm_layer_forward(
        v.reshape(1, B, 1), np.ones((4, 1), dtype), np.zeros((4, 1), dtype),
        np.zeros(4, dtype), None, np.zeros((B, 1), dtype), np.zeros((B, 1), dtype),
        np.ones(B, np.int64), False)
    return gates[0, :, 0].astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_sigmoid_within_a_few_ulps_of_the_exact_value(path, dtype):
    """σ(x) = 1 / (1 + e^-x) to 4 ulps relative for x <= 0 (where σ is small, down to
    σ(-80) ≈ 2e-35) and to 2 ulps of 1 in absolute terms everywhere."""
    eps = np.finfo(dtype).eps
    x = np.concatenate([np.linspace(-80, 60, 140_001), np.logspace(-8, 1.9, 5000),
                        -np.logspace(-8, 1.9, 5000)]).astype(dtype)
    sigma = kernel_sigmoid(x, dtype)
    x = x.astype(np.float64)
    exact = 1 / (1 + np.exp(-x))
    assert np.abs(sigma - exact).max() <= 2 * eps
    small = x <= 0
    assert (np.abs(sigma - exact)[small] / exact[small]).max() <= 4 * eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_sigmoid_saturates_within_zero_and_one_and_keeps_nan(path, dtype):
    sigma = kernel_sigmoid([-1e4, -200, -90, 90, 200, 1e4, np.inf, -np.inf, np.nan], dtype)
    assert ((sigma[:3] >= 0) & (sigma[:3] < 1e-37)).all()
    assert (sigma[3:6] == 1).all()
    assert sigma[6] == 1 and sigma[7] < 1e-37
    assert np.isnan(sigma[8])


def lstm_args(dtype=np.float64, P=0, B=3, H=4):
    rng = np.random.default_rng(0)
    lengths = make_lengths(B, True)
    _, v = make_case("lstm-proj" if P else "lstm", B, H, lengths, rng)
    v = cast(v, dtype)
    hs, cs, gates = run_forward(_kernels, "lstm", v, lengths, False)
    return dict(x=v["x"], w_ih=v["w_ih"], w_hh=v["w_hh"], b=v["b"], w_hr=v["w_hr"],
                h0=v["h0"], c0=v["c0"], lengths=lengths, reverse=False, hs=hs, cs=cs,
                gates=gates, dy=v["dy"], dh_n=v["dh_n"], dc_n=v["dc_n"])


def gru_args(dtype=np.float64, B=3, H=4):
    rng = np.random.default_rng(0)
    lengths = make_lengths(B, True)
    _, v = make_case("gru", B, H, lengths, rng)
    v = cast(v, dtype)
    hs, saved = run_forward(_kernels, "gru", v, lengths, False)
    return dict(x=v["x"], w_ih=v["w_ih"], w_hh=v["w_hh"], b_ih=v["b_ih"], b_hh=v["b_hh"],
                h0=v["h0"], lengths=lengths, reverse=False, hs=hs, saved=saved,
                dy=v["dy"], dh_n=v["dh_n"])


ARGS = {
    "lstm_layer_forward": (lstm_args, ("x", "w_ih", "w_hh", "b", "w_hr", "h0", "c0",
                                       "lengths", "reverse")),
    "lstm_layer_backward": (lstm_args, ("x", "w_ih", "w_hh", "w_hr", "hs", "cs", "gates",
                                        "dy", "dh_n", "dc_n", "lengths", "reverse")),
    "gru_layer_forward": (gru_args, ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "lengths",
                                     "reverse")),
    "gru_layer_backward": (gru_args, ("x", "w_ih", "w_hh", "hs", "saved", "dy", "dh_n",
                                      "lengths", "reverse")),
}


def call(function, change=None, **kwargs):
    """Call a kernel on consistent arguments, with ``change(args)`` applied first."""
    make, names = ARGS[function]
    args = make(**kwargs)
    if change is not None:
        change(args)
    return getattr(_kernels, function)(*[args[n] for n in names])


def drop_row(name):
    def change(args):
        args[name] = np.ascontiguousarray(args[name][:-1])
    return change


def set_(name, value):
    def change(args):
        args[name] = value(args) if callable(value) else value
    return change


BAD = [
    ("lstm_layer_forward", drop_row("w_ih"), "w_ih"),
    ("lstm_layer_forward", set_("w_hh", lambda a: np.zeros((15, 4))), "w_hh"),
    ("lstm_layer_forward", set_("w_hh", lambda a: np.zeros((16, 5))), "w_hh"),
    ("lstm_layer_forward", drop_row("b"), "b"),
    ("lstm_layer_forward", drop_row("h0"), "h0"),
    ("lstm_layer_forward", set_("c0", lambda a: np.zeros((3, 5))), "c0"),
    ("lstm_layer_forward", set_("lengths", np.array([7, 1, 1], np.int64)), "lengths"),
    ("lstm_layer_forward", set_("lengths", np.array([-1, 1, 1], np.int64)), "lengths"),
    ("lstm_layer_forward", drop_row("lengths"), "lengths"),
    ("lstm_layer_backward", drop_row("hs"), "hs"),
    ("lstm_layer_backward", drop_row("cs"), "cs"),
    ("lstm_layer_backward", drop_row("gates"), "gates"),
    ("lstm_layer_backward", drop_row("dy"), "dy"),
    ("lstm_layer_backward", set_("dy", lambda a: np.asfortranarray(a["dy"])), "dy"),
    ("lstm_layer_backward", drop_row("dh_n"), "dh_n"),
    ("lstm_layer_backward", drop_row("dc_n"), "dc_n"),
    ("gru_layer_forward", set_("w_hh", lambda a: np.zeros((12, 5))), "w_hh"),
    ("gru_layer_forward", set_("w_hh", lambda a: np.zeros((0, 0))), "w_hh"),
    ("gru_layer_forward", drop_row("b_ih"), "b_ih"),
    ("gru_layer_forward", drop_row("b_hh"), "b_hh"),
    ("gru_layer_forward", drop_row("h0"), "h0"),
    ("gru_layer_backward", drop_row("saved"), "saved"),
    ("gru_layer_backward", drop_row("hs"), "hs"),
    ("gru_layer_backward", drop_row("dh_n"), "dh_n"),
]


@pytest.mark.parametrize("function, change, name", BAD,
                         ids=[f"{f}-{n}-{i}" for i, (f, _, n) in enumerate(BAD)])
def test_inconsistent_arguments_are_rejected_naming_the_argument(function, change, name):
    with pytest.raises(ValueError, match=name):
        call(function, change)


def test_a_projection_of_the_wrong_shape_is_rejected_naming_it():
    with pytest.raises(ValueError, match="w_hr must have shape"):
        call("lstm_layer_forward", set_("w_hr", lambda a: np.zeros((3, 5))), P=3)


def test_a_projection_of_another_dtype_is_rejected_naming_it():
    with pytest.raises(ValueError, match="w_hr"):
        call("lstm_layer_forward", set_("w_hr", lambda a: a["w_hr"].astype(np.float32)),
             P=3)


@pytest.mark.parametrize("function", list(ARGS))
def test_inputs_are_read_only_and_unmodified(function):
    make, names = ARGS[function]
    args = make(P=3) if make is lstm_args else make()
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    for k in before:
        args[k].setflags(write=False)
    getattr(_kernels, function)(*[args[n] for n in names])
    for k, v in before.items():
        np.testing.assert_array_equal(args[k], v, err_msg=k)


def as_list(a):
    """An array, or the arrays of LSTM's pair (h, c), as a list."""
    return [a] if isinstance(a, np.ndarray) else list(a)


@pytest.mark.parametrize("cell, options", [
    ("lstm", {}), ("lstm", {"proj_size": 3}), ("lstm", {"bias": False}), ("gru", {}),
    ("gru", {"bias": False})], ids=["lstm", "lstm-proj", "lstm-no-bias", "gru",
                                   "gru-no-bias"])
def test_functional_runs_the_kernels_as_the_reference_does(cell, options, dtype, rng):
    """Two bidirectional layers, ragged lengths: forward and backward through the layer
    walker, backend "cython" against "numpy"."""
    assert "cython" in F.backends_for(cell)
    cls = rnncore.LSTM if cell == "lstm" else rnncore.GRU
    model = cls(K, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=1, **options)
    B = 5
    lengths = np.array([T, 3, 1, T - 1, 2], np.int64)      # the walker takes [1, T]
    x = rng.standard_normal((T, B, K)).astype(dtype)
    results = {}
    for backend in ("cython", "numpy"):
        y, finals, record = F.forward(x, model.params, lengths=lengths, cell=cell,
                                      backend=backend)
        dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        dx, d0, grads = F.backward(record, dy, finals)
        results[backend] = (y, finals, dx, d0, grads)
    tol = RTOL[np.dtype(dtype)]
    got, want = results["cython"], results["numpy"]
    for name, g, w in zip(("y", "finals", "dx", "d0"), got[:4], want[:4], strict=True):
        for i, (a, b) in enumerate(zip(as_list(g), as_list(w), strict=True)):
            assert_close(a, b, tol, f"{name}[{i}]")
    assert got[4].keys() == want[4].keys()
    for key in want[4]:
        assert_close(got[4][key], want[4][key], tol, key)
