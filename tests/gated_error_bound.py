"""A running error bound for the gated cells (LSTM with or without projection, GRU).

The bound of tests/test_fuzz.py (read its module docstring first), carried through the
gated cells' equations (src/rnncore/cells/lstm.py, gru.py). Every value v of the
computation gets a scale E(v) such that both backends are within κ·E(v) of its exact
value, κ = γ_N (Higham) with N the longest sum of the example. E is built by one rule
per operation, on the reference's values (|·| of NaN and ±inf counted as 0) and in
float64; ``tiny`` stands for the smallest normal number over κ (a flushed denormal errs
by up to the smallest normal number, per term):

    sum of n products  s = Σ a_k b_k   E(s) = Σ |a_k||b_k|                 (the terms)
                                             + Σ E(a_k)|b_k| + |a_k|E(b_k) + n·tiny
    a ± b                              E = |a| + |b| + E(a) + E(b)
    a · b                              E = |a b| + E(a)|b| + |a|E(b) + tiny
    1 − a                              E = 1 + |a| + E(a)
    y = σ(a)        E = s⁺ E(a) + |y| + tiny,    s⁺ = min(¼, y(1 − y) + κE(a))
    y = tanh(a)     E = s⁺ E(a) + |y| + tiny,    s⁺ = min(1, 1 − y² + κE(a))

The weights and the caller's inputs are exact but for a flush: E = tiny where one is
denormal (the kernels read it as 0), else 0. Each rounding is at most u times
its result, which the terms bound, and κ ≥ (N ≥ 12)·u covers SPEC.md's "few ulps" of a
fast σ or tanh (the |y| term); the mean value theorem bounds how far an error in a moves
σ(a) or tanh(a) (s⁺ adds κE(a) times their second derivatives' bound, ≤ 1). Second-order
terms (κ² E E) are dropped, as in test_fuzz.py.

The rules give the f' read off a gate's output its absolute allowance of a few ulps of 1
without a special case: y(1 − y) for σ is a product with 1 − y, whose E holds the 1 and
|y|; 1 − y² likewise. So where a kernel's σ returns exactly 1 and ``np.exp`` gives
1 − 2⁻²⁴, f' = 0 against 6e-8 sits within κ·E(f') ≈ κ·1, and a gradient made of such
terms is held to κ·Σ|terms|·1, not to its own (tiny) size.

The walk follows the reference's record: forward layer by layer, direction by direction,
step by step (a_t, the gates, c_t, tanh(c_t), m_t, h_t = m_t W_hrᵀ; GRU's gi_t, gh_t, r,
z, n, h_t), carrying E(h_{t−1}), E(c_{t−1}) and the previous layer's E(y) forward; then
backward in time (∂h_t = dy_t + δ_{t+1}W_hh [+ ∂h_n], ∂m, ∂c, δ_t; GRU's ∂n', δ_t,
ε_t and ∂h_{t−1} = ε_t W_hh + ∂h_t ⊙ z), carrying E(∂h), E(∂c) to the previous step and
E(∂x) to the layer below, and summing the weight gradients' terms over T·B. The values
of the backward pass are recomputed here in float64 from the record (their magnitudes,
not their last bits, matter).
"""
from __future__ import annotations

import numpy as np

from conftest import flushed, over_all_steps


def _mag(a):
    """|a| in float64, NaN and ±inf counted as 0 (the finite terms' magnitude)."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    a[~np.isfinite(a)] = 0
    return a


def _f64(a):
    """a in float64, NaN and ±inf as 0 (their rows are never compared)."""
    a = np.array(a, dtype=np.float64)
    a[~np.isfinite(a)] = 0
    return a


def kappa(rec) -> float:
    """γ_N for the longest sum of the example: a pre-activation (K + P + 2 terms), the
    backward's carries (G·H + 2), ∂x (D·G·H), the weight gradients (T·B)."""
    cfg = rec.cfg
    H, P, D, G = cfg.hidden_size, cfg.out_size, cfg.D, cfg.G
    K = max(cfg.input_size, D * P if cfg.num_layers > 1 else 0)
    n = max(K + P + 2, D * G * H + 2, H + 2, rec.T * rec.B + 2) + 8
    u = float(np.finfo(cfg.dtype).eps) / 2
    return n * u / (1 - n * u)


class _Walk:
    """The rules of the module docstring on (value, E) pairs of float64 arrays."""

    def __init__(self, kappa_, tiny, normal):
        self.kappa, self.tiny, self.normal = kappa_, tiny, normal

    def flushed(self, a):
        """E of an exact input or weight: tiny where it is denormal, else 0."""
        return flushed(a, self.normal, self.tiny)

    def add(self, a, b):
        return a[0] + b[0], np.abs(a[0]) + np.abs(b[0]) + a[1] + b[1]

    def sub(self, a, b):
        return a[0] - b[0], np.abs(a[0]) + np.abs(b[0]) + a[1] + b[1]

    def mul(self, a, b):
        v = a[0] * b[0]
        return v, np.abs(v) + a[1] * np.abs(b[0]) + np.abs(a[0]) * b[1] + self.tiny

    def one_minus(self, a):
        return 1 - a[0], 1 + np.abs(a[0]) + a[1]

    def matmul(self, a, w):
        """a (·, n) times a weight matrix w (n, m), exact but for a flush."""
        wm = _mag(w)
        return (a[0] @ _f64(w), np.abs(a[0]) @ wm + a[1] @ wm
                + np.abs(a[0]) @ self.flushed(w) + a[0].shape[-1] * self.tiny)

    def sigmoid(self, y, e_a):
        y = _f64(y)
        slope = np.minimum(0.25, y * (1 - y) + self.kappa * e_a)
        return y, slope * e_a + np.abs(y) + self.tiny

    def tanh(self, y, e_a):
        y = _f64(y)
        slope = np.minimum(1.0, 1 - y * y + self.kappa * e_a)
        return y, slope * e_a + np.abs(y) + self.tiny

    def sum_products(self, a, b):
        """Σ over T·B rows of aᵀ b: a (T, B, m), b (T, B, n) pairs; (m, n)."""
        m, n = a[0].shape[-1], b[0].shape[-1]
        av, ae = np.abs(a[0]).reshape(-1, m), a[1].reshape(-1, m)
        bv, be = np.abs(b[0]).reshape(-1, n), b[1].reshape(-1, n)
        return av.T @ bv + ae.T @ bv + av.T @ be + av.shape[0] * self.tiny

    def sum_rows(self, a):
        m = a[0].shape[-1]
        return (np.abs(a[0]).reshape(-1, m).sum(axis=0) + a[1].reshape(-1, m).sum(axis=0)
                + a[0].reshape(-1, m).shape[0] * self.tiny)


def _time_major(a, rec, width):
    """A user-layout (…, width) array as (T, B, width) in float64, padded steps zeroed."""
    a = np.asarray(a)
    a = a[:, None] if rec.unbatched else a.transpose(1, 0, 2) if rec.batch_first else a
    a = a[:rec.T]                        # the steps the forward ran
    a = _f64(a)
    if rec.padded is not None:
        a[rec.padded] = 0
    return a.reshape(rec.T, rec.B, width)


def _user(a, rec, state=False):
    """A time-major (T, B, ·) or state (L·D, B, ·) array in the user's layout."""
    a = over_all_steps(a, rec, state)
    if rec.unbatched:
        return a[:, 0]
    return a.transpose(1, 0, 2) if rec.batch_first and not state else a


def _lstm_forward(w, rec, layer, d, x, e_x):
    """E of h_t, c_t, the gates and m_t of one LSTM layer-direction."""
    cfg, T, B, lengths = rec.cfg, rec.T, rec.B, rec.lengths
    H = cfg.hidden_size
    w_ih, w_hh, b, w_hr = rec.weights[layer][d]
    hs, (cs, gates) = rec.states[layer][d], rec.saved[layer][d]
    hv, cv, gv = _f64(hs), _f64(cs), _f64(gates)
    e_h, e_c = w.flushed(hv), w.flushed(cv)       # h0, c0: exact but for a flush
    e_g, e_m = np.zeros(gv.shape), np.zeros((T, B, H))
    prev, out = (1, 0) if d else (0, 1)
    for t in (range(T - 1, -1, -1) if d else range(T)):
        valid = t < lengths
        _, e_a = w.add(w.add(w.matmul((x[t], e_x[t]), w_ih.T),
                             w.matmul((hv[t + prev], e_h[t + prev]), w_hh.T)),
                       (_f64(b), w.flushed(b)))
        i, f, g, o = (gv[t][:, k * H:(k + 1) * H] for k in range(4))
        ea = [e_a[:, k * H:(k + 1) * H] for k in range(4)]
        gi, gf = w.sigmoid(i, ea[0]), w.sigmoid(f, ea[1])
        gg, go = w.tanh(g, ea[2]), w.sigmoid(o, ea[3])
        c = w.add(w.mul(gf, (cv[t + prev], e_c[t + prev])), w.mul(gi, gg))
        tc = w.tanh(np.tanh(cv[t + out]), c[1])
        m = w.mul(go, tc)
        h = w.matmul(m, w_hr.T) if w_hr is not None else m
        e_g[t][valid] = np.concatenate([gi[1], gf[1], gg[1], go[1]], axis=1)[valid]
        e_c[t + out][valid] = c[1][valid]
        e_m[t][valid] = m[1][valid]
        e_h[t + out][valid] = h[1][valid]
    return e_h, e_c, e_g, e_m


def _part(pair, k, H):
    """Gate k's H columns of a (value, E) pair."""
    return pair[0][:, k * H:(k + 1) * H], pair[1][:, k * H:(k + 1) * H]


def _gru_forward(w, rec, layer, d, x, e_x):
    """E of h_t and of the saved [r z n gh_n] of one GRU layer-direction."""
    T, lengths, H = rec.T, rec.lengths, rec.cfg.hidden_size
    w_ih, w_hh, b_ih, b_hh = rec.weights[layer][d]
    hv, sv = _f64(rec.states[layer][d]), _f64(rec.saved[layer][d][0])
    e_h, e_s = w.flushed(hv), np.zeros(sv.shape)       # h0: exact but for a flush
    prev, out = (1, 0) if d else (0, 1)
    for t in (range(T - 1, -1, -1) if d else range(T)):
        valid = t < lengths
        gi = w.add(w.matmul((x[t], e_x[t]), w_ih.T), (_f64(b_ih), w.flushed(b_ih)))
        gh = w.add(w.matmul((hv[t + prev], e_h[t + prev]), w_hh.T),
                   (_f64(b_hh), w.flushed(b_hh)))
        r = w.sigmoid(sv[t][:, :H], w.add(_part(gi, 0, H), _part(gh, 0, H))[1])
        z = w.sigmoid(sv[t][:, H:2 * H], w.add(_part(gi, 1, H), _part(gh, 1, H))[1])
        gh_n = _part(gh, 2, H)
        n = w.tanh(sv[t][:, 2 * H:3 * H], w.add(_part(gi, 2, H), w.mul(r, gh_n))[1])
        h = w.add(w.mul(w.one_minus(z), n), w.mul(z, (hv[t + prev], e_h[t + prev])))
        e_s[t][valid] = np.concatenate([r[1], z[1], n[1], gh_n[1]], axis=1)[valid]
        e_h[t + out][valid] = h[1][valid]
    return e_h, e_s


def _lstm_backward(w, rec, layer, d, x, e_x, fwd, dy, ds_n, scales):
    """E of δ (for ∂x), ∂h0, ∂c0 and the weight gradients of one LSTM layer-direction."""
    cfg, T, B, lengths = rec.cfg, rec.T, rec.B, rec.lengths
    H = cfg.hidden_size
    e_h, e_c, e_g, e_m = fwd
    w_ih, w_hh, _, w_hr = rec.weights[layer][d]
    hv, cv = _f64(rec.states[layer][d]), _f64(rec.saved[layer][d][0])
    gv = _f64(rec.saved[layer][d][1])
    (dy_v, dy_e), (dhn, dcn) = dy, ds_n
    P = hv.shape[2]
    prev, out = (1, 0) if d else (0, 1)
    delta, dhs = np.zeros((2, T, B, 4 * H)), np.zeros((2, T, B, P))
    carry, carry_c = (np.zeros((B, P)), np.zeros((B, P))), (np.zeros((B, H)),) * 2
    d0 = [np.zeros((B, P)), np.zeros((B, H))]
    t_final = np.zeros(B, int) if d else lengths - 1
    t_initial = lengths - 1 if d else np.zeros(B, int)
    for t in (range(T) if d else range(T - 1, -1, -1)):       # backward in time
        valid = (t < lengths)[:, None]
        ends = (t == t_final)[:, None]
        dh = w.add((dy_v[t], dy_e[t]), w.add(carry, (np.where(ends, dhn, 0), 0.0)))
        carry_c = w.add(carry_c, (np.where(ends, dcn, 0), 0.0))
        dm = w.matmul(dh, w_hr) if w_hr is not None else dh
        i, f, g, o = ((gv[t][:, k * H:(k + 1) * H], e_g[t][:, k * H:(k + 1) * H])
                      for k in range(4))
        tc = w.tanh(np.tanh(cv[t + out]), e_c[t + out])
        dc = w.add(carry_c, w.mul(w.mul(dm, o), w.one_minus(w.mul(tc, tc))))
        d_gates = [w.mul(w.mul(dc, g), w.mul(i, w.one_minus(i))),
                   w.mul(w.mul(dc, (cv[t + prev], e_c[t + prev])), w.mul(f, w.one_minus(f))),
                   w.mul(w.mul(dc, i), w.one_minus(w.mul(g, g))),
                   w.mul(w.mul(dm, tc), w.mul(o, w.one_minus(o)))]
        dlt = tuple(np.where(valid, np.concatenate([p[k] for p in d_gates], axis=1), 0)
                    for k in range(2))
        delta[:, t], dhs[:, t] = dlt, (np.where(valid, dh[0], 0), np.where(valid, dh[1], 0))
        carry_c = tuple(np.where(valid, a, 0) for a in w.mul(dc, f))
        carry = w.matmul(dlt, w_hh)
        start = (t == t_initial) & (t < lengths)
        d0[0][start], d0[1][start] = carry[1][start], carry_c[1][start]
    h_prev = (hv[1:], e_h[1:]) if d else (hv[:T], e_h[:T])
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    delta_p = (delta[0], delta[1])
    scales["weight_ih" + sfx] = w.sum_products(delta_p, (x, e_x))
    scales["weight_hh" + sfx] = w.sum_products(delta_p, h_prev)
    if cfg.bias:
        scales["bias_ih" + sfx] = scales["bias_hh" + sfx] = w.sum_rows(delta_p)
    if w_hr is not None:
        m = gv[:, :, 3 * H:] * np.tanh(cv[:T] if d else cv[1:])
        scales["weight_hr" + sfx] = w.sum_products((dhs[0], dhs[1]), (m, e_m))
    return delta_p, d0


def _gru_backward(w, rec, layer, d, x, e_x, fwd, dy, ds_n, scales):
    """E of δ (for ∂x), ∂h0 and the weight gradients of one GRU layer-direction."""
    T, B, lengths, H = rec.T, rec.B, rec.lengths, rec.cfg.hidden_size
    e_h, e_s = fwd
    w_hh = rec.weights[layer][d][1]
    hv, sv = _f64(rec.states[layer][d]), _f64(rec.saved[layer][d][0])
    (dy_v, dy_e), (dhn,) = dy, ds_n
    prev = 1 if d else 0
    delta, eps = np.zeros((2, T, B, 3 * H)), np.zeros((2, T, B, 3 * H))
    carry = (np.zeros((B, H)), np.zeros((B, H)))
    d0 = [np.zeros((B, H))]
    t_final = np.zeros(B, int) if d else lengths - 1
    t_initial = lengths - 1 if d else np.zeros(B, int)
    for t in (range(T) if d else range(T - 1, -1, -1)):       # backward in time
        valid = (t < lengths)[:, None]
        ends = (t == t_final)[:, None]
        dh = w.add((dy_v[t], dy_e[t]), w.add(carry, (np.where(ends, dhn, 0), 0.0)))
        r, z, n, gh_n = ((sv[t][:, k * H:(k + 1) * H], e_s[t][:, k * H:(k + 1) * H])
                         for k in range(4))
        h_prev = (hv[t + prev], e_h[t + prev])
        dn = w.mul(w.mul(dh, w.one_minus(z)), w.one_minus(w.mul(n, n)))
        d_r = w.mul(w.mul(dn, gh_n), w.mul(r, w.one_minus(r)))
        d_z = w.mul(w.mul(dh, w.sub(h_prev, n)), w.mul(z, w.one_minus(z)))
        dlt = tuple(np.where(valid, np.concatenate([d_r[k], d_z[k], dn[k]], axis=1), 0)
                    for k in range(2))
        e_n = w.mul(r, (dlt[0][:, 2 * H:], dlt[1][:, 2 * H:]))
        ept = tuple(np.concatenate([dlt[k][:, :2 * H], e_n[k]], axis=1) for k in range(2))
        delta[:, t], eps[:, t] = dlt, ept
        carry = w.add(w.matmul(ept, w_hh), w.mul(dh, z))
        carry = tuple(np.where(valid, a, 0) for a in carry)
        start = (t == t_initial) & (t < lengths)
        d0[0][start] = carry[1][start]
    h_prev = (hv[1:], e_h[1:]) if d else (hv[:T], e_h[:T])
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    delta_p, eps_p = (delta[0], delta[1]), (eps[0], eps[1])
    scales["weight_ih" + sfx] = w.sum_products(delta_p, (x, e_x))
    scales["weight_hh" + sfx] = w.sum_products(eps_p, h_prev)
    if rec.cfg.bias:
        scales["bias_ih" + sfx] = w.sum_rows(delta_p)
        scales["bias_hh" + sfx] = w.sum_rows(eps_p)
    return delta_p, d0


def error_scales(rec, dy, d_states_n):
    """E(v) of every output and gradient of a gated cell's forward and backward.

    Parameters
    ----------
    rec : Record
        The reference backend's record of the example (``cell="lstm"`` or ``"gru"``,
        not run in chunks).
    dy : ndarray
        As given to backward, in the user's layout: (T, B, D·P), (B, T, D·P) or (T, D·P).
    d_states_n : tuple of ndarray
        (∂h_n, ∂c_n) for LSTM, (∂h_n,) for GRU, each (L·D, B, ·) or unbatched (L·D, ·).

    Returns
    -------
    kappa : float
        γ_N of the example; both backends are within κ·E of the exact values.
    scales : dict of str to ndarray
        E of "y", "h_n", "dx", "dh0", for LSTM also "c_n" and "dc0", and of every
        parameter gradient by its key, each in the shape of that output.
    """
    cfg, T, B, lengths = rec.cfg, rec.T, rec.B, rec.lengths
    if rec.chunk or cfg.cell not in ("lstm", "gru"):
        raise ValueError(f"error_scales takes a gated cell's record of one call; got "
                         f"cell {cfg.cell!r}, chunk {rec.chunk}")
    lstm = cfg.cell == "lstm"
    H, P, D, L = cfg.hidden_size, cfg.out_size, cfg.D, cfg.num_layers
    k = kappa(rec)
    normal = float(np.finfo(cfg.dtype).tiny)
    w = _Walk(k, normal / k, normal)
    rows = np.arange(B)
    widths = (P, H) if lstm else (H,)
    finals = [np.zeros((L * D, B, width)) for width in widths]
    e_x = w.flushed(rec.inputs[0])
    fwds, e_inputs = [], []
    for layer in range(L):
        x = _f64(rec.inputs[layer])
        e_inputs.append(e_x)
        fwds.append([])
        for d in range(D):
            fwd = (_lstm_forward if lstm else _gru_forward)(w, rec, layer, d, x, e_x)
            fwds[layer].append(fwd)
            seqs = fwd[:2] if lstm else fwd[:1]
            for final, e_seq in zip(finals, seqs, strict=True):
                final[layer * D + d] = e_seq[0] if d else e_seq[lengths, rows]
        e_x = np.concatenate([fwds[layer][0][0][1:]]
                             + ([fwds[layer][1][0][:T]] if D == 2 else []), axis=2)
        if rec.padded is not None:
            e_x[rec.padded] = 0

    scales = {"y": _user(e_x, rec)}
    for name, final in zip(("h_n", "c_n")[:len(finals)], finals, strict=True):
        scales[name] = _user(final, rec, state=True)
    dy_l = (_time_major(dy, rec, D * P), np.zeros((T, B, D * P)))
    ds_n = [_f64(a)[:, None] if rec.unbatched else _f64(a) for a in d_states_n]
    d0 = [np.zeros((L * D, B, width)) for width in widths]
    for layer in reversed(range(L)):
        x, e_in = _f64(rec.inputs[layer]), e_inputs[layer]
        dx = (np.zeros(x.shape), np.zeros(x.shape))
        for d in range(D):
            dy_d = tuple(a[:, :, d * P:(d + 1) * P] for a in dy_l)
            step = _lstm_backward if lstm else _gru_backward
            delta, d0_d = step(w, rec, layer, d, x, e_in, fwds[layer][d], dy_d,
                               [s[layer * D + d] for s in ds_n], scales)
            for array, value in zip(d0, d0_d, strict=True):
                array[layer * D + d] = value
            dx = w.add(dx, w.matmul(delta, rec.weights[layer][d][0]))
        if rec.padded is not None:
            for a in dx:
                a[rec.padded] = 0
        dy_l = dx
    scales["dx"] = _user(dy_l[1], rec)
    for name, array in zip(("dh0", "dc0")[:len(d0)], d0, strict=True):
        scales[name] = _user(array, rec, state=True)
    return k, scales
