"""Property-based fuzzing: the Cython kernels against the NumPy reference.

Hypothesis draws a configuration — T and B from 0, K and H from 1, 1-3 layers, one or
two directions, tanh or relu, with or without bias, float32 or float64, time-major,
batch-first or unbatched, ``lengths`` (none, random, all T, all 1, as a list, int32 or
whole floats) — gives every array its own memory layout (C, Fortran, a slice with a
step, a negative stride, a permuted copy, read-only, a zero-stride ``broadcast_to``
view) and sprinkles values of one class into any of x, h0, the weights, dy and dh_n:
NaN, ±inf, "huge" (±1e30-2e30), "max" (± the dtype's largest finite value / 4),
denormals, ±0, or all of these "mixed"; the "ordinary" class has none. Both backends run
forward and backward; no input may be modified or aliased by an output, and the output,
h_n, dx, dh0 and every parameter gradient are compared by the rules below.

What "agree" means follows IEEE arithmetic, nothing looser. The rules rest on one
running error bound (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3): a
sum of n products computed in any order, fused or not, is within γ_n·Σ|terms| of its
exact value, γ_n = n·u/(1 − n·u) (u the unit roundoff), plus n·tiny for underflow
(the kernels flush denormals to zero, so a value below the smallest normal number
``tiny`` may become 0: an error of up to tiny per term, not the u·tiny of gradual
underflow; ``tiny`` in E below stands for tiny/κ). ``_error_scales`` walks the reference's record layer by layer, direction by
direction and step by step, and gives every value v of the computation a scale E(v) such
that both backends are within κ·E(v) of the exact result, κ = γ_N with N the longest
sum of the example (K + H + 2 per step, D·H + H + 2 in the backward step, T·B in the
weight gradients; tanh's "few ulps" of SPEC.md are within κ·|h| too):

    E(a_t)  = |W_ih||x_t| + |b| + |W_hh||h_{t-1}| + tiny       (the terms of the sum)
              + |W_ih| E(x_t) + |W_hh| E(h_{t-1})                (errors carried in)
              + E(W_ih)|x_t| + E(W_hh)|h_{t-1}| + E(b)           (flushed weights)
    E(h_t)  = f'⁺(a_t) E(a_t) + |h_t|                            (f and its ulps)
    E(δ_t)  = (1 − h_t²) E(g_t) + |g_t| (2|h_t| E(h_t) + 1)       tanh: δ = g (1 − h²)
    E(δ_t)  = E(g_t) + |g_t| / κ                                  relu, |a_t| ≤ 2κE(a_t)
    E(g_t)  = |dy_t| + |δ_{t+1}||W_hh| + [|dh_n|] + tiny
              + E(dy_t) + E(δ_{t+1})|W_hh| + |δ_{t+1}| E(W_hh)
    E(∂W_ih) = Σ_t (|δ_t| + E(δ_t))ᵀ|x_t| + |δ_t|ᵀ E(x_t), likewise ∂W_hh, ∂b, ∂h0
    E(∂x_t)  = (|δ_t| + E(δ_t))|W_ih| + |δ_t| E(W_ih) + tiny

(E of an input or a weight: tiny where it is denormal, which the kernels flush, else 0)

with |·| of the reference's values (NaN and ±inf counted as 0: see below) and
f'⁺ = min(1, f'(a) + κE(a)) for tanh, 1 for relu. A relu whose input lies within
2κE(a) of 0 may be on in one backend and off in the other, so its δ may be g or 0. The
tanh term |g|·1 covers 1 − h² computed near h = ±1: the kernel's tanh may return exactly
±1 where ``np.tanh`` returns 1 − 2⁻²⁴ (SPEC.md allows a few ulps), so f' is 0 in one and
~1e-7 in the other, an absolute difference of a few u, which a 1e30 gradient turns into
a large one. The rules:

* **Values**: where a value is finite in both backends and has not overflowed (next
  rule), |cython − numpy| ≤ 2κ·E(v) element by element: each backend is within κE of
  the exact value (to first order; 2.5κE is used for the second-order terms the bound
  drops, the magnitudes being the reference's rather than the exact ones). With the
  fuzzer's sizes 2.5κ ≤ 1.9e-5 in float32 and 3.6e-14 in float64, tighter than SPEC.md's
  1e-4 and 1e-10, but relative to E rather than to the result: that is the only scale
  that holds whatever the values. A huge term that cancels, or that a saturated tanh
  multiplies by f' ≈ 0, leaves its rounding error at the scale of the term; and small
  shapes cancel often even with ordinary values: with T=4, B=1, K=H=1, float32, tanh,
  no bias and seed 3, dh0 is 1.3e-5 and the backends differ by 6.7e-8, a norm-wise
  relative difference of 5e-3, well inside 2.5κE (the gradient is the difference of
  terms of size ~1). Over the ci examples the largest difference seen is 0.06 of
  the bound; E itself is a worst case, so on ordinary values the bound is typically
  10²–10⁴ times looser than the actual difference: test_core_backends_agree.py checks
  SPEC.md's norm-wise figure on realistic sizes.
* **Overflow**: the same walk adds up the magnitudes of the finite terms of every sum
  (in float64). Every partial sum, in any order, and every product is at most that, so
  where it stays below the dtype's largest value / 16 nothing could overflow; there
  NaN and inf arise only from NaN and inf inputs, and NaN + x, inf − inf, inf·0 and
  inf + finite give the same result in any order, fused or not. Where it does not
  (a product of two 1e30 in float32, say), a backend may overflow to inf or not, and
  inf − inf is NaN unfused while ``fma(1e30, −1e30, inf)`` is inf (the AVX2/AVX-512
  float32 step kernel uses FMA, NumPy does not): such a value is left out, and so is
  every value that depends on it (the rest of its batch row, forward and backward,
  and every weight gradient, which sums over the batch). So is a sum in which ±inf
  multiplies a denormal: NumPy's product is ±inf, the kernels' (the denormal flushed
  to 0) NaN.
* **NaN and inf**: outside overflow, the output and h_n have NaN and ±inf in exactly
  the reference's places. Gradients are non-finite in exactly the same places, but
  NaN and inf may swap: an infinite gradient times f' is NaN where f' is 0 and inf
  where it is 1e-7 (the tanh difference above).

Each example counts, per value class, as drawn and — if at least one output or gradient
had an element finite in both backends that the value rule compared — as compared
(``COUNTS``); after the Hypothesis run, the test asserts that every class drawn at least
``MIN_DRAWN`` times was compared in at least ``MIN_COMPARED_SHARE`` of its examples, and
that at least ``MIN_TOTAL_SHARE`` of all examples were compared. So the fuzzer cannot
quietly stop comparing. One example in four is drawn as a call the compiled short path
(``rnncore._short``) takes: one Elman direction, tanh, time-major, x and dy
C-contiguous, no h0 or ∂L/∂h_n, lengths of any form. The test counts the calls that path
took and asserts at least ``MIN_COMPILED_SHARE`` of the examples, forward and backward. ``--hypothesis-show-statistics`` also reports the classes.

Profiles: ``ci`` (the default: 400 derandomised examples) and ``long``
(``RNNCORE_FUZZ_PROFILE=long``: 20,000 random examples, or ``RNNCORE_FUZZ_EXAMPLES``),
each on every code path of the kernels on the CPU (conftest's ``kernel_path``);
docs/reliability.md has the commands and the figures.
"""
import contextlib
import os
from collections import Counter

import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import reference
from conftest import RTOL, flushed, over_all_steps

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, example, given, note, settings  # noqa: E402
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

LAYOUTS = ["c", "c", "fortran", "step", "negative", "permuted", "readonly", "broadcast"]
SPECIALS = ["nan", "inf", "huge", "max", "denormal", "zero", "mixed"]
ARRAYS = ["x", "h0", "w", "dy", "dh_n"]

# per value class ("ordinary" or one of SPECIALS): examples drawn, and examples in which
# at least one value array was compared (see the module docstring)
COUNTS: dict[str, Counter] = {}
MIN_DRAWN = 20               # classes drawn fewer times are too few to judge a share
# the share of each class's examples that must reach a value comparison: 0.8, less
# where IEEE arithmetic leaves whole examples with nothing to compare. A NaN in a weight
# reaches every row (NaN·0 is NaN); and in float32 a 1e30 (or max/4) weight times a 1e30
# state or gradient overflows, in every row, as would their products in any backend
MIN_COMPARED_SHARE = {"nan": 0.6, "huge": 0.5, "max": 0.5, "mixed": 0.5}
MIN_TOTAL_SHARE = 0.75       # of all examples: 300 of the ci profile's 400
MIN_COMPILED_SHARE = 0.08    # of all examples taken by rnncore._short (1 in 4 is drawn
                             # for it; T = 0, B = 0 and lengths given as floats, which
                             # functional reads, are declined)


@st.composite
def configs(draw):
    # 1 in 4: a call the compiled short path takes (rnncore._short: one Elman direction,
    # tanh, time-major, x C-contiguous, no h0 or ∂L/∂h_n), lengths of any form included
    short = draw(st.booleans()) and draw(st.booleans())
    unbatched = not short and draw(st.booleans()) and draw(st.booleans())   # 1 in 4
    T = draw(st.integers(0, 9))
    B = 1 if unbatched else draw(st.integers(0, 5))
    lengths = draw(st.sampled_from(["none", "none", "random", "all_T", "ones",
                                    "list", "int32", "float"])) if T else "none"
    special = draw(st.sampled_from(["none"] * 4 + SPECIALS + ["nan", "inf", "huge"]))
    layouts = {name: draw(st.sampled_from(LAYOUTS)) for name in ARRAYS}
    if short:
        layouts["x"] = layouts["dy"] = "c"
    return dict(
        T=T, B=B, K=draw(st.integers(1, 7)), H=draw(st.integers(1, 40)),
        L=draw(st.integers(1, 3)), bidirectional=not short and draw(st.booleans()),
        nonlinearity="tanh" if short else draw(st.sampled_from(["tanh", "relu"])),
        bias=draw(st.booleans()),
        dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
        batch_first=not short and draw(st.booleans()), unbatched=unbatched,
        lengths=lengths, layouts=layouts, default_states=short,
        special=special,
        special_in=(draw(st.permutations(ARRAYS))[:draw(st.integers(1, 3))]
                    if special != "none" else []),
        density=draw(st.sampled_from([0.02, 0.15, 0.5])),
        seed=draw(st.integers(0, 2 ** 32 - 1)),
        # the short-call path (BLAS, nothing packed) or the packed kernels at any size
        packed_always=draw(st.booleans()),
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
    if cfg["default_states"]:
        h0 = dh_n = None                 # zeros, as the compiled short path takes them
    return x, h0, params, dy, dh_n, _lengths(rng, cfg["lengths"], T, B)


# -- the error scales of the module docstring ---------------------------------------------

def _mag(a):
    """|a| in float64, NaN and ±inf counted as 0 (the finite terms' magnitude)."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    a[~np.isfinite(a)] = 0
    return a


def _meets_denormal(a, w, normal):
    """Rows of a @ w.T where a non-finite element of one factor meets a denormal of the
    other: NumPy's ±inf·denormal is ±inf, the kernels' (the denormal flushed) NaN."""
    a, w = np.asarray(a, np.float64), np.asarray(w, np.float64)
    bad_a, bad_w = (~np.isfinite(a)).astype(float), (~np.isfinite(w)).astype(float)
    tiny_a, tiny_w = flushed(a, normal, 1.0), flushed(w, normal, 1.0)
    return ((bad_a @ tiny_w.T + tiny_a @ bad_w.T) > 0).any(axis=1)


def _kappa(rec):
    """γ_N for the longest sum of the example (see the module docstring)."""
    cfg = rec.cfg
    H, D = cfg.hidden_size, cfg.D
    K = max(cfg.input_size, D * H if cfg.num_layers > 1 else 0)
    n = max(K + H + 2, D * H + H + 2, rec.T * rec.B + 2) + 8
    u = float(np.finfo(cfg.dtype).eps) / 2
    return n * u / (1 - n * u)


def _time_major(a, rec, width):
    """A user-layout (…, width) array as (T, B, width), padded steps zeroed."""
    a = np.asarray(a)
    a = a[:, None] if rec.unbatched else a.transpose(1, 0, 2) if rec.batch_first else a
    a = a[:rec.T]                        # the steps the forward ran
    a = np.array(a, order="C")
    if rec.padded is not None:
        a[rec.padded] = 0
    return a.reshape(rec.T, rec.B, width)


def _user(a, rec, state=False):
    """A time-major (T, B, ·) or state (L·D, B, ·) array in the user's layout."""
    a = over_all_steps(a, rec, state)
    if rec.unbatched:
        return a[:, 0]
    return a.transpose(1, 0, 2) if rec.batch_first and not state else a


def _error_scales(rec, dy, dh_n):
    """E(v) of every output and gradient, and where overflow was impossible.

    Parameters
    ----------
    rec : Record
        The reference backend's record of the example.
    dy, dh_n : ndarray
        As given to backward, in the user's layout.

    Returns
    -------
    kappa : float
    scales : dict of str to ndarray
        E of "y", "h_n", "dx", "dh0" and every parameter gradient, user layout.
    safe : dict of str to ndarray of bool
        True where no value that the element depends on could have overflowed.
    """
    cfg, T, B, relu, lengths = rec.cfg, rec.T, rec.B, rec.relu, rec.lengths
    H, D, L = cfg.hidden_size, cfg.D, cfg.num_layers
    kappa = _kappa(rec)
    # a flushed denormal errs by up to the smallest normal number, not κ times it
    tiny = float(np.finfo(cfg.dtype).tiny) / kappa
    limit = float(np.finfo(cfg.dtype).max) / 2
    fwd_over = np.zeros(B, bool)         # batch rows where a forward sum could overflow
    bwd_over = np.zeros(B, bool)         # ... a backward one
    rows = np.arange(B)
    normal = float(np.finfo(cfg.dtype).tiny)
    E_in = flushed(rec.inputs[0], normal, tiny)
    E_h, ambiguous, E_inputs = [], [], []
    E_hn = np.zeros((L * D, B, H))
    for layer in range(L):
        x = rec.inputs[layer]
        xm = _mag(x)
        E_inputs.append(E_in)
        E_h.append([])
        ambiguous.append([])
        for d in range(D):
            w_ih, w_hh, b = rec.weights[layer][d]
            hs = rec.states[layer][d]
            Wi, Wh, hm = _mag(w_ih), _mag(w_hh), _mag(hs)
            # the weights are exact but for a flush, as the inputs are
            E_wi, E_wh, E_b = (flushed(w, normal, tiny) for w in (w_ih, w_hh, b))
            prev, out = (1, 0) if d else (0, 1)
            Eh = flushed(hs, normal, tiny)   # h0's slot: exact but for a flush
            amb = np.zeros((T, B, H), bool)
            for t in (range(T - 1, -1, -1) if d else range(T)):
                valid = t < lengths
                terms = xm[t] @ Wi.T + _mag(b) + hm[t + prev] @ Wh.T + tiny
                Ea = (terms + E_in[t] @ Wi.T + Eh[t + prev] @ Wh.T
                      + xm[t] @ E_wi.T + hm[t + prev] @ E_wh.T + E_b)
                fwd_over |= (terms + kappa * Ea > limit).any(axis=1)
                # inf times a flushed denormal: NaN in the kernels, inf in NumPy
                fwd_over |= (_meets_denormal(x[t], w_ih, normal)
                             | _meets_denormal(hs[t + prev], w_hh, normal))
                if relu:
                    a = (x[t].astype(np.float64) @ w_ih.T.astype(np.float64) + b
                         + hs[t + prev].astype(np.float64) @ w_hh.T.astype(np.float64))
                    amb[t] = ~(np.abs(a) > 2 * kappa * Ea)       # NaN too
                    slope = 1.0
                else:
                    slope = np.minimum(1.0, 1 - hm[t + out] ** 2 + kappa * Ea)
                Eh[t + out][valid] = (slope * Ea + hm[t + out])[valid]
            E_h[layer].append(Eh)
            ambiguous[layer].append(amb)
            E_hn[layer * D + d] = Eh[0] if d else Eh[lengths, rows]
        E_in = np.concatenate([E_h[layer][0][1:]] + ([E_h[layer][1][:T]] if D == 2 else []),
                              axis=2)
        if rec.padded is not None:
            E_in[rec.padded] = 0
    E_y = E_in

    scales, safe = {}, {}
    E_dh0 = np.zeros((L * D, B, H))
    dy_l = _time_major(dy, rec, D * H)
    dh_n = np.asarray(dh_n)[:, None] if rec.unbatched else np.asarray(dh_n)
    E_dy = np.zeros(dy_l.shape)
    for layer in reversed(range(L)):
        x = rec.inputs[layer]
        xm, Ex = _mag(x), E_inputs[layer]
        dx = np.zeros(x.shape, dtype=x.dtype)
        dx_terms, E_dx = np.zeros(x.shape), np.zeros(x.shape)
        for d in range(D):
            w_ih, w_hh, _ = rec.weights[layer][d]
            hs, Eh, amb = rec.states[layer][d], E_h[layer][d], ambiguous[layer][d]
            Wi, Wh, hm = _mag(w_ih), _mag(w_hh), _mag(hs)
            E_wi, E_wh = flushed(w_ih, normal, tiny), flushed(w_hh, normal, tiny)
            prev, out = (1, 0) if d else (0, 1)
            dy_d = np.ascontiguousarray(dy_l[:, :, d * H:(d + 1) * H])
            E_dy_d = E_dy[:, :, d * H:(d + 1) * H]
            dhn = dh_n[layer * D + d]
            _, _, _, _, delta = reference.layer_backward(x, w_ih, w_hh, hs, dy_d, dhn,
                                                         lengths, bool(d), relu)
            reference.input_grad(delta, w_ih, dx, d > 0)
            dm = _mag(delta)
            E_delta = np.zeros((T, B, H))
            carry, E_carry = np.zeros((B, H)), np.zeros((B, H))
            t_final = np.zeros(B, int) if d else lengths - 1
            t_initial = lengths - 1 if d else np.zeros(B, int)
            for t in (range(T) if d else range(T - 1, -1, -1)):    # backward in time
                valid = (t < lengths)[:, None]
                g = (_mag(dy_d[t]) + carry + np.where((t == t_final)[:, None], _mag(dhn), 0)
                     + tiny)
                E_g = g + E_dy_d[t] + E_carry
                bwd_over |= (g + kappa * E_g > limit).any(axis=1)
                if relu:
                    E_delta[t] = np.where(valid, E_g + np.where(amb[t], g / kappa, 0), 0)
                else:
                    h = hm[t + out]
                    E_delta[t] = np.where(valid, (1 - h * h) * E_g
                                          + g * (2 * h * Eh[t + out] + 1), 0)
                carry, E_carry = dm[t] @ Wh + tiny, E_delta[t] @ Wh + dm[t] @ E_wh
                bwd_over |= (carry + kappa * E_carry > limit).any(axis=1)
                start = t == t_initial
                E_dh0[layer * D + d][start] = (carry + E_carry)[start]
            # the whole-sequence sums: ∂W_ih, ∂W_hh, ∂b, ∂x
            h_prev, E_prev = (hm[1:], Eh[1:]) if d else (hm[:T], Eh[:T])
            d2, Ed2 = dm.reshape(-1, H), E_delta.reshape(-1, H)
            terms_ih = d2.T @ xm.reshape(-1, xm.shape[2]) + tiny
            terms_hh = d2.T @ h_prev.reshape(-1, H) + tiny
            terms_b = d2.sum(axis=0) + tiny
            grads = {
                "weight_ih": (terms_ih, terms_ih + Ed2.T @ xm.reshape(-1, xm.shape[2])
                              + d2.T @ Ex.reshape(-1, Ex.shape[2])),
                "weight_hh": (terms_hh, terms_hh + Ed2.T @ h_prev.reshape(-1, H)
                              + d2.T @ E_prev.reshape(-1, H)),
                "bias_ih": (terms_b, terms_b + Ed2.sum(axis=0)),
            }
            grads["bias_hh"] = grads["bias_ih"]
            sfx = "_reverse" if d else ""
            for name, (terms, E) in grads.items():
                key = f"{name}_l{layer}{sfx}"
                scales[key], safe[key] = E, terms + kappa * E <= limit
            dx_terms += dm @ Wi + tiny
            E_dx += (dm + E_delta) @ Wi + dm @ E_wi + tiny
        bwd_over |= (dx_terms + kappa * E_dx > limit).any(axis=(0, 2))
        dy_l, E_dy = dx, E_dx
    bwd_over |= fwd_over

    for key, E, over, state in (("y", E_y, fwd_over, False), ("h_n", E_hn, fwd_over, True),
                                ("dx", E_dy, bwd_over, False), ("dh0", E_dh0, bwd_over, True)):
        scales[key] = _user(E, rec, state)
        safe[key] = _user(np.broadcast_to(~over[None, :, None], E.shape), rec, state)
    for key in scales:
        if key.startswith(("weight", "bias")):
            safe[key] = safe[key] & ~bwd_over.any()
        safe[key] = safe[key] & np.isfinite(scales[key])
    return kappa, scales, safe


def assert_agree(got, want, what, *, scale, safe, kappa, forward):
    """The rules of the module docstring for one array; True if a value was compared."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if forward:
        np.testing.assert_array_equal(np.isnan(got[safe]), np.isnan(want[safe]),
                                      err_msg=f"{what}: NaN")
        np.testing.assert_array_equal(np.where(np.isinf(got), got, 0)[safe],
                                      np.where(np.isinf(want), want, 0)[safe],
                                      err_msg=f"{what}: ±inf")
    else:
        np.testing.assert_array_equal(np.isfinite(got[safe]), np.isfinite(want[safe]),
                                      err_msg=f"{what}: non-finite places")
    both = safe & np.isfinite(got) & np.isfinite(want)
    if not both.any():
        return False
    g, w, bound = got[both], want[both], 2.5 * kappa * scale[both]
    excess = np.abs(g - w) - bound
    worst = int(np.argmax(excess))
    assert excess[worst] <= 0, (f"{what}: cython {g[worst]!r}, numpy {w[worst]!r}, "
                                f"bound {bound[worst]:.3g} (2.5κE, κ={kappa:.3g})")
    return True


def _run(backend, cfg, x, h0, params, dy, dh_n, lengths):
    with _calls_packed(backend, cfg), _compiled_calls_counted(backend):
        y, h_n, record = F.forward(x, params, h0, lengths,
                                   nonlinearity=cfg["nonlinearity"],
                                   batch_first=cfg["batch_first"], backend=backend)
        dx, dh0, grads = F.backward(record, dy, dh_n)
    return {"y": y, "h_n": h_n, "dx": dx, "dh0": dh0, **grads}, record


# calls the compiled short path took (returned a result), by kind, over a fuzz run
COMPILED = Counter()


@contextlib.contextmanager
def _compiled_calls_counted(backend):
    """Count, in COMPILED, the cython calls rnncore._short took."""
    short = F._short
    if backend != "cython" or short is None:
        yield
        return
    real = {kind: getattr(short, kind) for kind in ("forward", "backward")}

    def counted(kind):
        def call(*args):
            result = real[kind](*args)
            COMPILED[kind] += result is not None
            return result
        return call

    try:
        for kind in real:
            setattr(short, kind, counted(kind))
        yield
    finally:
        for kind, fn in real.items():
            setattr(short, kind, fn)


@contextlib.contextmanager
def _calls_packed(backend, cfg):
    """Run the kernels' packed path even where the call is short, if cfg says so."""
    if backend != "cython" or not cfg["packed_always"]:
        yield
        return
    from rnncore import _kernels
    _kernels.set_short_call_rows(0)
    try:
        yield
    finally:
        _kernels.set_short_call_rows(None)


def _found(**changes):
    """A configuration the long profile failed on: float32, T = 1, K = 1, H = 2, one
    tanh layer without bias, C layouts, "mixed" values at density 0.02, seed
    292131120, with ``changes``."""
    return dict({"T": 1, "B": 3, "K": 1, "H": 2, "L": 1, "bidirectional": False,
                 "nonlinearity": "tanh", "bias": False, "dtype": np.dtype(np.float32),
                 "batch_first": False, "unbatched": False, "lengths": "none",
                 "layouts": dict.fromkeys(("x", "h0", "w", "dy", "dh_n"), "c"),
                 "default_states": False, "special": "mixed", "density": 0.02,
                 "seed": 292131120, "packed_always": False}, **changes)


# Examples the long profile found, run by every profile. An inf in x times a denormal
# weight: NumPy's inf·w = inf, the kernels' inf·0 = NaN (they flush the weight), so the
# row is left out as an overflow is. A denormal weight times a gradient of 1e31: the
# kernels' ∂x 0 against NumPy's 2e-7, an error of up to the smallest normal number per
# flushed weight, which E carries (E(W) below).
@example(cfg=_found(special_in=["x", "h0", "w"]))
@example(cfg=_found(B=2, special_in=["x", "w", "dy"],
                    layouts={**dict.fromkeys(("x", "h0", "dy", "dh_n"), "c"),
                             "w": "broadcast"}))
@given(configs())
def _cython_matches_reference(cfg):
    note(repr(cfg))
    value_class = "ordinary" if cfg["special"] == "none" else cfg["special"]
    counts = COUNTS.setdefault(value_class, Counter())
    counts["drawn"] += 1
    x, h0, params, dy, dh_n, lengths = _inputs(cfg)
    inputs = {"x": x, "h0": h0, "dy": dy, "dh_n": dh_n, "lengths": lengths, **params}
    kept = {k: (np.array(v, copy=True), getattr(v, "flags", None) and v.flags.writeable)
            for k, v in inputs.items() if v is not None}
    dt = cfg["dtype"]

    want, record = _run("numpy", cfg, x, h0, params, dy, dh_n, lengths)
    got, _ = _run("cython", cfg, x, h0, params, dy, dh_n, lengths)

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

    kappa, scales, safe = _error_scales(
        record, dy, np.zeros(got["h_n"].shape, dt) if dh_n is None else dh_n)
    assert 2.5 * kappa <= RTOL[dt] / 4       # the bound is tighter than SPEC's figure
    compared = [key for key in want
                if assert_agree(got[key], want[key], key, scale=scales[key],
                                safe=safe[key], kappa=kappa, forward=key in ("y", "h_n"))]
    if compared:
        counts["compared"] += 1
    event(f"{value_class}: {'compared' if compared else 'no finite value to compare'}")


def test_cython_matches_reference_and_compares_values(kernel_path):
    """Every class of values reaches a value comparison in most of its examples, on
    every code path of the kernels."""
    COUNTS.clear()
    COMPILED.clear()
    _cython_matches_reference()
    drawn = sum(c["drawn"] for c in COUNTS.values())
    compared = sum(c["compared"] for c in COUNTS.values())
    summary = {k: (c["compared"], c["drawn"]) for k, c in sorted(COUNTS.items())}
    print(f"\nfuzz: {compared} of {drawn} examples compared values; per class "
          f"(compared, drawn): {summary}")           # shown with pytest -s
    for value_class, c in COUNTS.items():
        if c["drawn"] >= MIN_DRAWN:
            share = MIN_COMPARED_SHARE.get(value_class, 0.8)
            assert c["compared"] >= share * c["drawn"], (value_class, summary)
    assert compared >= MIN_TOTAL_SHARE * settings.default.max_examples, summary
    # the compiled short path, with and without lengths, took its share of the calls
    print(f"fuzz: the compiled short path took {COMPILED['forward']} forwards and "
          f"{COMPILED['backward']} backwards of {drawn} examples")
    for kind in ("forward", "backward"):
        assert COMPILED[kind] >= MIN_COMPILED_SHARE * drawn, (kind, COMPILED, drawn)


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
