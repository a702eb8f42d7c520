"""Property-based fuzzing: the Cython kernels against the NumPy reference.

Random shapes (T, B from 0), layers, directions, nonlinearities, bias, dtypes, layouts
(strided, Fortran, read-only), lengths, and values that include NaN, ±inf, very large and
denormal numbers. Every output and gradient must agree: NaN and ±inf in the same places,
finite values within the dtype's tolerance — except with values near 1e15, where sums
cancel or overflow depending on their order, and only shapes, dtypes, the tanh range and
the absence of crashes are checked.

Profiles: ``ci`` (the default, a few hundred derandomised examples) and ``long``
(RNNCORE_FUZZ_PROFILE=long, 10,000 examples); docs/reliability.md has the figures.
"""
import os

import numpy as np
import pytest

import rnncore
from rnncore import functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.skipif(len(rnncore.backends()) < 2, reason="needs both backends")

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("RNNCORE_FUZZ_PROFILE", "ci"))

RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@st.composite
def configs(draw):
    return dict(
        T=draw(st.integers(0, 9)), B=draw(st.integers(0, 5)), K=draw(st.integers(1, 7)),
        H=draw(st.integers(1, 40)), L=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()), nonlinearity=draw(st.sampled_from(["tanh", "relu"])),
        bias=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])),
        batch_first=draw(st.booleans()), layout=draw(st.sampled_from(
            ["c", "fortran", "strided", "readonly"])),
        padded=draw(st.booleans()), special=draw(st.sampled_from(
            ["none", "none", "nan", "inf", "large", "denormal"])),
        seed=draw(st.integers(0, 2 ** 32 - 1)),
    )


def _values(rng, shape, dtype, special):
    a = rng.standard_normal(shape)
    if special != "none" and a.size:
        mask = rng.random(shape) < 0.15
        fill = {"nan": np.nan, "inf": np.inf, "large": 1e15,
                "denormal": np.finfo(dtype).smallest_subnormal * 3}[special]
        a[mask] = fill * np.where(rng.random(mask.sum()) < 0.5, -1, 1)
    return a.astype(dtype)


def _layout(a, layout):
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape + (2,), dtype=a.dtype)
        big[..., 0] = a
        return big[..., 0]
    if layout == "readonly":
        a = a.copy()
        a.setflags(write=False)
    return a


def assert_same(got, want, dtype, what, exact_nonfinite=True):
    """NaN and ±inf where the reference has them, finite values within tolerance.

    With ``exact_nonfinite`` False only the places of non-finite values must agree, not
    whether each is NaN or inf: where tanh saturates, the kernel's tanh returns exactly
    ±1 (f' = 0) and NumPy's sometimes 1 - 2⁻²⁴ (f' ≈ 1e-7), so an infinite incoming
    gradient becomes NaN (inf·0) in one and inf in the other.
    """
    assert got.shape == want.shape, what
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if exact_nonfinite:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want),
                                      err_msg=f"{what}: NaN pattern")
        np.testing.assert_array_equal(np.where(np.isinf(got), got, 0),
                                      np.where(np.isinf(want), want, 0),
                                      err_msg=f"{what}: inf pattern")
    else:
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want),
                                      err_msg=f"{what}: non-finite pattern")
    finite = np.isfinite(want) & np.isfinite(got)
    if finite.any():
        g, w = got[finite], want[finite]
        scale = max(np.abs(w).max(), 1.0)
        assert np.abs(g - w).max() <= 50 * RTOL[np.dtype(dtype)] * scale, what


@given(configs())
def test_cython_matches_reference(cfg):
    rng = np.random.default_rng(cfg["seed"])
    dt, T, B, K, H, L = cfg["dtype"], cfg["T"], cfg["B"], cfg["K"], cfg["H"], cfg["L"]
    D = 2 if cfg["bidirectional"] else 1
    special = cfg["special"]
    # one array carries the special values; the rest stay ordinary
    where = rng.choice(["x", "h0", "w", "dy", "dh_n"]) if special != "none" else None
    rnn = rnncore.RNN(K, H, L, nonlinearity=cfg["nonlinearity"], bias=cfg["bias"],
                      bidirectional=cfg["bidirectional"], dtype=dt, seed=cfg["seed"] % 1000)
    # weights at the scale of the default initialisation (±1/√H): standard-normal
    # weights saturate every tanh, where float32 gradients carry no significant digits
    params = {k: _layout(_values(rng, v.shape, dt, special if where == "w" else "none")
                         / dt(np.sqrt(H)), cfg["layout"]) for k, v in rnn.params.items()}
    x_shape = (B, T, K) if cfg["batch_first"] else (T, B, K)
    x = _layout(_values(rng, x_shape, dt, special if where == "x" else "none"), cfg["layout"])
    h0 = _layout(_values(rng, (L * D, B, H), dt, special if where == "h0" else "none"),
                 cfg["layout"])
    y_shape = x_shape[:2] + (D * H,)
    dy = _layout(_values(rng, y_shape, dt, special if where == "dy" else "none"), cfg["layout"])
    dh_n = _layout(_values(rng, (L * D, B, H), dt, special if where == "dh_n" else "none"),
                   cfg["layout"])
    lengths = rng.integers(1, T + 1, size=B) if cfg["padded"] and T > 0 else None
    kept = [a.copy() for a in (x, h0, dy, dh_n, *params.values())]

    results = {}
    for backend in ("cython", "numpy"):
        y, h_n, record = F.forward(x, params, h0, lengths, nonlinearity=cfg["nonlinearity"],
                                   batch_first=cfg["batch_first"], backend=backend)
        dx, dh0, grads = F.backward(record, dy, dh_n)
        results[backend] = dict(y=y, h_n=h_n, dx=dx, dh0=dh0, **grads)
    for key, want in results["numpy"].items():
        got = results["cython"][key]
        assert got.shape == want.shape and got.dtype == want.dtype, key
        if special == "large":
            # 1e15 makes sums cancel and overflow depending on their order: any two
            # summation orders may legitimately differ, so only the form is checked.
            continue
        assert_same(got, want, dt, key, exact_nonfinite=key in ("y", "h_n"))
    if cfg["nonlinearity"] == "tanh":
        y = results["cython"]["y"]
        assert (np.abs(y[~np.isnan(y)]) <= 1).all()
    for a, b in zip((x, h0, dy, dh_n, *params.values()), kept):
        np.testing.assert_array_equal(a, b)        # inputs untouched
