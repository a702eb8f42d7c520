"""Property-based fuzzing: the Cython kernels against the NumPy reference.

Hypothesis draws a configuration — T and B from 0, K and H from 1, 1-3 layers, one or
two directions, tanh or relu, with or without bias, float32 or float64, time-major,
batch-first or unbatched, ``lengths`` (none, random, all T, all 1, as a list, int32 or
whole floats) — gives every array its own memory layout (C, Fortran, a slice with a
step, a negative stride, a permuted copy, read-only, a zero-stride ``broadcast_to``
view) and sprinkles special values (NaN, ±inf, 1e30–2e30, the dtype's largest finite value / 4,
denormals, ±0) into any of x, h0, the weights, dy and dh_n. Both backends run forward
and backward; the output, h_n, dx, dh0 and every parameter gradient must agree, and no
input may be modified or aliased by an output.

What "agree" means follows IEEE arithmetic, nothing looser:

* NaN propagates and inf − inf is NaN in any summation order, so without huge values
  the forward results have NaN and ±inf in exactly the same places.
* Where tanh saturates, the kernel's vectorised tanh may return exactly ±1 where
  ``np.tanh`` returns 1 − 2⁻²⁴ (SPEC.md allows a few ulps), so f'(a) is 0 in one and
  ~1e-7 in the other: an infinite gradient times f' is NaN in one and inf in the
  other. Gradients therefore agree on *where* they are non-finite, not on NaN vs inf.
* Huge values make the result depend on how it is evaluated. A 1e30 gradient times
  that ~1e-7 difference in f' is a large absolute difference; and once a product of two
  values can overflow, partial sums overflow in one order and not in another, and a
  fused multiply-add differs from a multiply then an add: in float32,
  1e30·1e30 − 1e30·1e30 is inf − inf = NaN unfused, but ``fma(1e30, -1e30, inf)`` is
  inf, since the exact product −1e60 is never rounded to −inf (the AVX2/AVX-512 float32
  step kernel uses FMA; NumPy's matmul and the baseline path give NaN). So examples
  with huge values are compared with a tolerance scaled by the largest magnitude that
  flows through the computation, and not at all when the largest finite value squared
  comes within a factor 1e3 of overflow (only shapes, dtypes, the tanh range, inputs
  and aliasing are checked then). ``--hypothesis-show-statistics`` reports how many
  examples fell in each class.

Profiles: ``ci`` (the default: 400 derandomised examples) and ``long``
(``RNNCORE_FUZZ_PROFILE=long``: 20,000 random examples, or ``RNNCORE_FUZZ_EXAMPLES``);
docs/reliability.md has the commands and the figures.
"""
import os

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = [pytest.mark.skipif(len(rnncore.backends()) < 2, reason="needs both backends"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]   # overflow, inf - inf

settings.register_profile("ci", max_examples=400, deadline=None, derandomize=True,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, database=None, print_blob=True,
                          max_examples=int(os.environ.get("RNNCORE_FUZZ_EXAMPLES", 20_000)),
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("RNNCORE_FUZZ_PROFILE", "ci"))

RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
LAYOUTS = ["c", "c", "fortran", "step", "negative", "permuted", "readonly", "broadcast"]
SPECIALS = ["nan", "inf", "huge", "max", "denormal", "zero", "mixed"]
ARRAYS = ["x", "h0", "w", "dy", "dh_n"]


@st.composite
def configs(draw):
    unbatched = draw(st.booleans()) and draw(st.booleans())          # 1 in 4
    T = draw(st.integers(0, 9))
    B = 1 if unbatched else draw(st.integers(0, 5))
    lengths = draw(st.sampled_from(["none", "none", "random", "all_T", "ones",
                                    "list", "int32", "float"])) if T else "none"
    special = draw(st.sampled_from(["none"] * 4 + SPECIALS + ["nan", "inf", "huge"]))
    return dict(
        T=T, B=B, K=draw(st.integers(1, 7)), H=draw(st.integers(1, 40)),
        L=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()),
        nonlinearity=draw(st.sampled_from(["tanh", "relu"])), bias=draw(st.booleans()),
        dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
        batch_first=draw(st.booleans()), unbatched=unbatched, lengths=lengths,
        layouts={name: draw(st.sampled_from(LAYOUTS)) for name in ARRAYS},
        special=special,
        special_in=(draw(st.permutations(ARRAYS))[:draw(st.integers(1, 3))]
                    if special != "none" else []),
        density=draw(st.sampled_from([0.02, 0.15, 0.5])),
        seed=draw(st.integers(0, 2 ** 32 - 1)),
    )


def _fill(rng, dtype, special, n):
    """n special values of one kind (or of every kind, for "mixed"), random signs."""
    table = {"nan": np.nan, "inf": np.inf, "huge": 1e30,
             "max": float(np.finfo(dtype).max) / 4,
             "denormal": float(np.finfo(dtype).smallest_subnormal) * 3, "zero": 0.0}
    kinds = list(table) if special == "mixed" else [special]
    values = np.array([table[k] for k in rng.choice(kinds, size=n)])
    # huge values of one magnitude cancel exactly (c·w − c·w), and whether a small
    # term survives then depends on the summation order: vary the magnitudes
    values = np.where(values == 1e30, values * (1 + rng.random(n)), values)
    return values * np.where(rng.random(n) < 0.5, -1, 1)


def _values(rng, shape, dtype, special, density, scale=1.0):
    a = rng.standard_normal(shape) * scale
    if special != "none" and a.size:
        mask = rng.random(shape) < density
        if not mask.any():
            mask.flat[rng.integers(a.size)] = True
        a[mask] = _fill(rng, dtype, special, int(mask.sum()))
    return a.astype(dtype)


def _layout(a, layout):
    """The same values (or, for "broadcast", the first index repeated) in another layout."""
    if a.ndim == 0 or layout == "c":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "step":                       # every other element of a wider array
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "negative":                   # a negative stride on the first axis
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "permuted":                   # neither C nor Fortran order
        order = list(range(a.ndim))[::-1] if a.ndim < 3 else [1, 0, 2]
        return np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))
    if layout == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if layout == "broadcast":                  # read-only, stride 0 on the first axis
        return np.broadcast_to(a[:1], a.shape)
    raise AssertionError(layout)


def _lengths(rng, mode, T, B):
    if mode == "none":
        return None
    n = {"all_T": np.full(B, T), "ones": np.ones(B, int)}.get(mode, rng.integers(1, T + 1, B))
    return {"list": n.tolist(), "int32": n.astype(np.int32),
            "float": n.astype(np.float64)}.get(mode, n)


def _inputs(cfg):
    """x, h0, params, dy, dh_n and lengths of one example, in their drawn layouts."""
    rng = np.random.default_rng(cfg["seed"])
    dt, T, B, K, H, L = (cfg[k] for k in ("dtype", "T", "B", "K", "H", "L"))
    D = 2 if cfg["bidirectional"] else 1

    def make(name, shape, scale=1.0):
        special = cfg["special"] if name in cfg["special_in"] else "none"
        return _layout(_values(rng, shape, dt, special, cfg["density"], scale),
                       cfg["layouts"][name])

    shapes = F.param_shapes(K, H, L, cfg["bias"], cfg["bidirectional"])
    # weights at the scale of the default initialisation (±1/√H): standard-normal
    # weights saturate every tanh, where float32 gradients carry no significant digits
    params = {k: make("w", s, 1 / np.sqrt(H)) for k, s in shapes.items()}
    if cfg["unbatched"]:
        x_shape, state = (T, K), (L * D, H)
    else:
        x_shape = (B, T, K) if cfg["batch_first"] else (T, B, K)
        state = (L * D, B, H)
    x, h0 = make("x", x_shape), make("h0", state)
    dy, dh_n = make("dy", x_shape[:-1] + (D * H,)), make("dh_n", state)
    return x, h0, params, dy, dh_n, _lengths(rng, cfg["lengths"], T, B)


def _finite_max(arrays):
    m = 0.0
    for a in arrays:
        a = np.asarray(a, np.float64)
        finite = a[np.isfinite(a)]
        if finite.size:
            m = max(m, float(np.abs(finite).max()))
    return m


def assert_agree(got, want, what, rtol, atol_floor=1.0, exact_nonfinite=True):
    """NaN/±inf where the reference has them (or only non-finite where it is), finite
    values within ``50·rtol·max(|want|, atol_floor)``."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if exact_nonfinite:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN")
        np.testing.assert_array_equal(np.where(np.isinf(got), got, 0),
                                      np.where(np.isinf(want), want, 0),
                                      err_msg=f"{what}: ±inf")
    else:
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want),
                                      err_msg=f"{what}: non-finite places")
    finite = np.isfinite(want) & np.isfinite(got)
    if finite.any():
        scale = max(float(np.abs(want[finite]).max()), atol_floor)
        np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=50 * rtol * scale,
                                   err_msg=what)


def _run(backend, cfg, x, h0, params, dy, dh_n, lengths):
    y, h_n, record = F.forward(x, params, h0, lengths, nonlinearity=cfg["nonlinearity"],
                               batch_first=cfg["batch_first"], backend=backend)
    dx, dh0, grads = F.backward(record, dy, dh_n)
    return {"y": y, "h_n": h_n, "dx": dx, "dh0": dh0, **grads}


@given(configs())
def test_cython_matches_reference(cfg):
    note(repr(cfg))
    x, h0, params, dy, dh_n, lengths = _inputs(cfg)
    inputs = {"x": x, "h0": h0, "dy": dy, "dh_n": dh_n, "lengths": lengths, **params}
    kept = {k: (np.array(v, copy=True), getattr(v, "flags", None) and v.flags.writeable)
            for k, v in inputs.items() if v is not None}
    dt, rtol = cfg["dtype"], RTOL[cfg["dtype"]]

    want = _run("numpy", cfg, x, h0, params, dy, dh_n, lengths)
    got = _run("cython", cfg, x, h0, params, dy, dh_n, lengths)

    # the caller's arrays: unmodified, still read-only if they were, never aliased
    for key, (copy, writeable) in kept.items():
        np.testing.assert_array_equal(inputs[key], copy, err_msg=f"{key} was modified")
        if isinstance(inputs[key], np.ndarray):
            assert inputs[key].flags.writeable == writeable, key
    for key, out in got.items():
        assert isinstance(out, np.ndarray) and out.dtype == dt, key
        for name, a in inputs.items():
            if isinstance(a, np.ndarray):
                assert not np.shares_memory(out, a), f"{key} aliases {name}"
    if cfg["nonlinearity"] == "tanh":
        y = got["y"]
        assert (np.abs(y[~np.isnan(y)]) <= 1).all()

    special = cfg["special"]
    huge = special in ("huge", "max", "mixed")
    forward_keys = ("y", "h_n")
    if huge:
        finite_max = _finite_max([*inputs.values(), *got.values(), *want.values()])
        if finite_max > np.sqrt(float(np.finfo(dt).max) * 1e-3):
            # a product of two such values can overflow, and then the result depends on
            # the order of the sums and on fused multiply-add (see the module docstring)
            event("huge values, products can overflow: shapes, dtypes and no crash checked")
            return
        event("huge values: compared at the scale of the largest magnitude")
        # every gradient is linear in (dy, dh_n), and its rounding scales with the
        # largest values that flow through the backward pass
        g_max = max(1.0, _finite_max([dy, dh_n]))
        v_max = max(1.0, _finite_max([x, h0, *params.values()]))
        grad_floor = min(g_max * v_max ** 2 * (cfg["H"] + cfg["K"]), 1e300)
    else:
        event("compared" if special == "none" else f"compared, with {special} values")
        grad_floor = 1.0
    for key in want:
        is_forward = key in forward_keys
        assert_agree(got[key], want[key], key, rtol,
                     atol_floor=1.0 if is_forward else grad_floor,
                     exact_nonfinite=is_forward)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_one_sequence_stays_in_that_sequence(dtype):
    """A NaN in one batch entry reaches no other entry, forward or backward."""
    rnn = rnncore.RNN(3, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((7, 4, 3)).astype(dtype)
    x[3, 2, 1] = np.nan
    for backend in rnncore.backends():
        rnn.backend = backend
        y, h_n = rnn(x)
        dx, dh0 = rnn.backward(np.ones_like(y))
        for a in (y[:, 2], h_n[:, 2]):
            assert np.isnan(a).any()
        for a in (y[:, [0, 1, 3]], h_n[:, [0, 1, 3]], dx[:, [0, 1, 3]], dh0[:, [0, 1, 3]]):
            assert np.isfinite(a).all(), backend
