"""The gated cells' kernels against their NumPy reference, on inputs drawn by hypothesis.

Each example draws a cell (LSTM with or without a projection, GRU), sizes (T and B from
0, H from 1), layers, directions, bias, dtype, layout (batch_first, unbatched, Fortran,
strided, read-only and broadcast arrays), lengths, and a class of values:

* ``ordinary``: standard normal inputs, weights of scale 1/√H;
* ``saturating``: inputs and weights of scale 4, so that many of the gates' σ and tanh
  sit near 0 and ±1, where an approximation of σ or tanh errs most;
* ``tiny``: inputs of scale 1e-30 (float32's denormals start at 1.2e-38: products of
  those with the weights fall into them, which the kernels flush to zero);
* ``nan``: a NaN in one batch entry of x, which must stay in that entry;
* ``denormal``: about a fifth of the elements of x, the initial states and the weights
  denormal (the kernels flush them: an error of up to the smallest normal number each)
  and ∂L/∂y and ∂L/∂(final states) of scale 1e20, so that a flushed weight's error is
  carried into ∂x and the backward's carries at 1e20 times its size, where the bound
  holds it only through E of the weights (without it, the ci run fails at 1.6e4 times
  the bound).

Both backends run forward and backward; the caller's arrays are checked unmodified, and
every output and gradient is compared element by element: |cython − numpy| ≤ 2.5κ·E(v),
with E(v) the running error bound of tests/gated_error_bound.py (test_fuzz.py's bound
carried through the gated cells' equations: the magnitudes of the terms of every sum,
errors carried from step to step and layer to layer, the f' read off a gate's output
with an absolute allowance of a few ulps of 1, and flushed denormals) and κ = γ_N for the
longest sum of the example. Where a gate's σ or tanh is exactly 0, 1 or ±1 in the
kernels and a few ulps away in NumPy (SPEC.md allows a few ulps), f' = σ(1 − σ) or
1 − tanh² is 0 in one and ~1e-7 in the other: a gradient made of such terms may differ
by most of its norm, yet each element stays within κ·Σ|terms|, which is what E holds.
Non-finite values must sit in the same places; in the ``nan`` class entry 0 is left out
and every other entry must be finite (the weight gradients, which the NaN reaches, are
not compared). Over 58,000 long-profile examples the largest difference seen was 0.043
of the bound (0.02 over the ci examples); E is a worst case, so a 0.1 % change of one
element exceeds the bound in about half of the elements; a wrong formula (two gates'
rows of ∂W_ih swapped) or a 0.1 % change of the middle element of any one output fails
the ci run within its first examples, for each cell and in the saturating class alone.

Each class must reach a value comparison in most of its examples; the counts and the
largest difference / bound ratio per class are printed with ``pytest -s``.
``RNNCORE_FUZZ_PROFILE=long`` runs 20,000 examples (``RNNCORE_FUZZ_EXAMPLES``), each
profile on every code path of the kernels on the CPU (conftest's ``kernel_path``).
"""
import os
from collections import Counter

import numpy as np
import pytest

from rnncore import functional as F
from gated_error_bound import error_scales

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CELLS = [c for c in ("lstm", "gru") if "cython" in F.backends_for(c)]
_kernels = pytest.importorskip("rnncore._kernels") if CELLS else None
pytestmark = [pytest.mark.skipif(not CELLS, reason="no compiled kernels for gated cells"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

settings.register_profile("gated-ci", max_examples=300, deadline=None, derandomize=True,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gated-long", deadline=None, database=None, print_blob=True,
                          max_examples=int(os.environ.get("RNNCORE_FUZZ_EXAMPLES", 20_000)),
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = "gated-long" if os.environ.get("RNNCORE_FUZZ_PROFILE") == "long" else "gated-ci"

TOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}   # test_gated_cells.py
CLASSES = ["ordinary", "ordinary", "saturating", "tiny", "nan", "denormal"]
LAYOUTS = ["c", "c", "fortran", "step", "readonly", "broadcast"]
COUNTS: dict[str, Counter] = {}
WORST: dict[str, float] = {}     # per class, the largest |cython − numpy| / 2.5κE seen


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(CELLS))
    H = draw(st.integers(1, 24))
    values = draw(st.sampled_from(CLASSES))
    nan = values == "nan"                 # needs a second entry for the NaN to spare
    unbatched = not nan and draw(st.booleans()) and draw(st.booleans())
    return dict(
        cell=cell, T=draw(st.integers(1 if nan else 0, 8)),
        B=1 if unbatched else draw(st.integers(2 if nan else 0, 6)),
        K=draw(st.integers(1, 6)), H=H, L=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
        proj=draw(st.integers(0, H - 1)) if cell == "lstm" and draw(st.booleans()) else 0,
        dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
        batch_first=draw(st.booleans()), unbatched=unbatched,
        lengths=draw(st.sampled_from(["none", "random", "ones", "all_T"])),
        layout=draw(st.sampled_from(LAYOUTS)), values=values,
        seed=draw(st.integers(0, 2 ** 32 - 1)),
        # the short-call path (BLAS, nothing packed) or the packed kernels at any size
        packed_always=draw(st.booleans()))


def _layout(a, layout):
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "step":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if layout == "broadcast" and a.ndim and a.size:
        return np.broadcast_to(a[..., :1, :], a.shape) if a.ndim > 1 else a
    return a


def _inputs(cfg):
    rng = np.random.default_rng(cfg["seed"])
    dt, T, B, K, H, P = (cfg["dtype"], cfg["T"], cfg["B"], cfg["K"], cfg["H"],
                         cfg["proj"] or cfg["H"])
    D, L = 2 if cfg["bidirectional"] else 1, cfg["L"]
    scale = {"saturating": 4.0, "tiny": 1e-30}.get(cfg["values"], 1.0)
    w_scale = 4.0 if cfg["values"] == "saturating" else 1 / np.sqrt(H)
    params = {k: (rng.standard_normal(s) * w_scale).astype(dt) for k, s in
              F.param_shapes(K, H, L, cfg["bias"], cfg["bidirectional"], cell=cfg["cell"],
                             proj_size=cfg["proj"]).items()}
    lead = (T,) if cfg["unbatched"] else ((B, T) if cfg["batch_first"] else (T, B))
    x = (rng.standard_normal(lead + (K,)) * scale).astype(dt)
    if cfg["values"] == "nan" and x.size:
        x[(0,) * (x.ndim - 1) + (0,)] = np.nan         # batch entry 0 (or the sequence)
    state_lead = (L * D,) if cfg["unbatched"] else (L * D, B)
    widths = (P, H) if cfg["cell"] == "lstm" else (H,)
    states = [rng.standard_normal(state_lead + (w,)).astype(dt) for w in widths]
    dy = rng.standard_normal(lead + (D * P,)).astype(dt)
    d_states = [rng.standard_normal(state_lead + (w,)).astype(dt) for w in widths]
    if cfg["values"] == "denormal":
        # denormals in the inputs and weights, which the kernels flush, and gradients
        # of 1e20 to multiply what a flush loses
        for a in (x, *states, *params.values()):
            _denormals(rng, a)
        dy *= dt.type(1e20)
        for a in d_states:
            a *= dt.type(1e20)
    lengths = None
    if cfg["lengths"] != "none" and not cfg["unbatched"] and T > 0:
        lengths = {"random": rng.integers(1, T + 1, B), "ones": np.ones(B, np.int64),
                   "all_T": np.full(B, T)}[cfg["lengths"]]
    # a NaN broadcast along the batch would be in every entry
    x = _layout(x, "c" if cfg["values"] == "nan" and cfg["layout"] == "broadcast"
                else cfg["layout"])
    pair = (lambda v: tuple(v)) if cfg["cell"] == "lstm" else (lambda v: v[0])
    return x, pair(states), params, dy, pair(d_states), lengths


def _denormals(rng, a):
    """Make about a fifth of ``a``'s elements denormal (either sign), in place; the
    kernels read them as 0."""
    where = rng.random(a.shape) < 0.2
    small = np.finfo(a.dtype).smallest_subnormal
    a[where] = (rng.choice([-1.0, 1.0], a.shape) * rng.integers(1, 1 << 20, a.shape)
                * small)[where]


def _run(backend, cfg, x, h0, params, dy, dh_n, lengths):
    packed = backend == "cython" and cfg["packed_always"]
    if packed:
        _kernels.set_short_call_rows(0)   # the packed kernels even where the call is short
    try:
        y, finals, record = F.forward(x, params, h0, lengths, cell=cfg["cell"],
                                      batch_first=cfg["batch_first"], backend=backend)
        dx, d0, grads = F.backward(record, dy, dh_n)
    finally:
        if packed:
            _kernels.set_short_call_rows(None)
    if cfg["cell"] == "gru":
        finals, d0 = (finals,), (d0,)
    return {"y": y, **dict(zip(("h_n", "c_n")[:len(finals)], finals, strict=True)),
            "dx": dx, **dict(zip(("dh0", "dc0")[:len(d0)], d0, strict=True)), **grads}, record


def _batch_axis(key, cfg):
    """The batch axis of an output (None for the weights' gradients, shared by all)."""
    if cfg["unbatched"]:
        return None
    if key in ("y", "dx"):
        return 0 if cfg["batch_first"] else 1
    return 1 if key in ("h_n", "c_n", "dh0", "dc0") else None


def _agree(got, want, scale, key, cfg, kappa):
    """Element-wise agreement of one array within 2.5κE; False if nothing was compared.

    ``scale`` is E of the array (tests/gated_error_bound.py): each backend is within κE
    of the exact value to first order, 2.5κE leaves room for the second-order terms.
    In the ``nan`` class batch entry 0 is left out (and the weight gradients, which the
    NaN reaches): the other entries must be finite.
    """
    assert got.shape == want.shape == scale.shape and got.dtype == want.dtype, key
    if cfg["values"] == "nan":
        axis = _batch_axis(key, cfg)
        if axis is None or got.shape[axis] < 2:
            return False                  # the NaN reaches every weight gradient
        got, want = np.delete(got, 0, axis), np.delete(want, 0, axis)
        scale = np.delete(scale, 0, axis)
        assert np.isfinite(got).all(), f"{key}: the NaN of entry 0 reached another entry"
    if not got.size:
        return False
    got, want = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want),
                                  err_msg=f"{key}: non-finite places")
    both = np.isfinite(got) & np.isfinite(want)
    if not both.any():
        return False
    g, w, bound = got[both], want[both], 2.5 * kappa * scale[both]
    ratio = np.abs(g - w) / np.maximum(bound, np.finfo(np.float64).tiny)
    worst = int(np.argmax(ratio))
    WORST[cfg["values"]] = max(WORST.get(cfg["values"], 0.0), float(ratio[worst]))
    assert ratio[worst] <= 1, (f"{key}: cython {g[worst]!r}, numpy {w[worst]!r}, "
                               f"bound {bound[worst]:.3g} (2.5κE, κ={kappa:.3g})")
    return True


@settings(settings.get_profile(PROFILE))
@given(configs())
def _kernels_match_reference(cfg):
    note(repr(cfg))
    counts = COUNTS.setdefault(cfg["values"], Counter())
    counts["drawn"] += 1
    x, h0, params, dy, dh_n, lengths = _inputs(cfg)
    before = {k: np.array(v, copy=True) for k, v in params.items()}
    x_before = np.array(x, copy=True)
    want, record = _run("numpy", cfg, x, h0, params, dy, dh_n, lengths)
    got, _ = _run("cython", cfg, x, h0, params, dy, dh_n, lengths)
    np.testing.assert_array_equal(x, x_before)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[k])
    assert set(got) == set(want)
    kappa, scales = error_scales(record, dy, dh_n if isinstance(dh_n, tuple) else (dh_n,))
    assert 2.5 * kappa <= TOL[cfg["dtype"]] / 4     # tighter than the norm-wise figure
    compared = [k for k in want
                if _agree(got[k], want[k], scales[k], k, cfg, kappa)]
    if compared:
        counts["compared"] += 1
    event(f"{cfg['values']}: {'compared' if compared else 'nothing to compare'}")


def test_gated_kernels_match_reference_and_compare_values(kernel_path):
    COUNTS.clear()
    WORST.clear()
    _kernels_match_reference()
    summary = {k: (c["compared"], c["drawn"]) for k, c in sorted(COUNTS.items())}
    worst = {k: float(f"{v:.3g}") for k, v in sorted(WORST.items())}
    print(f"\ngated fuzz (compared, drawn) per class: {summary}; largest difference / "
          f"bound: {worst}")                        # shown with pytest -s
    for value_class, c in COUNTS.items():
        if c["drawn"] >= 20:
            # T = 0 or B = 0 leave only the weight gradients, which are all zero
            assert c["compared"] >= 0.7 * c["drawn"], (value_class, summary)
    assert sum(c["compared"] for c in COUNTS.values()) >= \
        0.7 * settings.get_profile(PROFILE).max_examples, summary
