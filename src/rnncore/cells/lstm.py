"""The LSTM cell's NumPy reference: SPEC.md's equations for one layer and one direction.

Layout, slots and padding are those of :mod:`rnncore.reference` (read its docstring
first); the cell state ``c`` lives in an array ``cs`` with the same slot rule as ``hs``.

The mathematics (one layer, one direction, a batch of B sequences, PyTorch's gate order
[i f g o] in the rows of W_ih (4H, K) and W_hh (4H, P or H))::

    a_t = x_t W_ihᵀ + h_{t-1} W_hhᵀ + b                  (B×4H), b = b_ih + b_hh
    i, f, o = σ(a_i, a_f, a_o),   g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    m_t = o ⊙ tanh(c_t)
    h_t = m_t,  or with proj_size P > 0:  h_t = m_t W_hrᵀ      W_hr (P, H); h is P wide

Backward, with ∂h_t = ∂L/∂h_t = dy_t + δ_{t+1} W_hh (the output's gradient and the
next step's) and ∂c_t the gradient of c_t from the next step (f_{t+1} ⊙ ∂c_{t+1})::

    ∂m = ∂h_t W_hr   (∂m = ∂h_t when P = 0)
    ∂c = ∂c_t + ∂m ⊙ o ⊙ (1 - tanh²(c_t))
    δ_t = [∂c ⊙ g ⊙ i(1-i),  ∂c ⊙ c_{t-1} ⊙ f(1-f),  ∂c ⊙ i ⊙ (1-g²),
           ∂m ⊙ tanh(c_t) ⊙ o(1-o)]                      = ∂L/∂a_t  (B×4H)
    ∂L/∂c_{t-1} = ∂c ⊙ f       ∂L/∂h_{t-1} = δ_t W_hh
    ∂L/∂W_ih = Σ_t δ_tᵀ x_t    ∂L/∂W_hh = Σ_t δ_tᵀ h_{t-1}    ∂L/∂b = Σ_t δ_t
    ∂L/∂W_hr = Σ_t ∂h_tᵀ m_t   ∂L/∂x_t = δ_t W_ih

The forward pass saves the activated gates i, f, g, o of every step; with ``hs`` and
``cs`` they are all backward needs (m_t = o ⊙ tanh(c_t) is recomputed from them).
"""
from __future__ import annotations

import numpy as np

__all__ = ["layer_forward", "layer_backward"]


def _sigmoid(a):
    with np.errstate(over="ignore"):             # exp(-a) = inf for a << 0 gives σ = 0
        return 1 / (1 + np.exp(-a))


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def layer_forward(x, w_ih, w_hh, b, w_hr, h0, c0, lengths, reverse):
    """Run one LSTM layer in one direction.

    Parameters
    ----------
    x : ndarray, shape (T, B, K)
        Input, zero at padded steps.
    w_ih : ndarray, shape (4H, K)
    w_hh : ndarray, shape (4H, P) or (4H, H)
        P columns with a projection, H without.
    b : ndarray, shape (4H,)
        ``b_ih + b_hh`` (zeros when the layer has no bias).
    w_hr : ndarray, shape (P, H), or None
        The projection; None when ``proj_size`` is 0.
    h0 : ndarray, shape (B, P) or (B, H)
    c0 : ndarray, shape (B, H)
    lengths : ndarray of int64, shape (B,)
        Valid steps of each sequence, ``0 <= lengths[i] <= T``.
    reverse : bool
        Run from each sequence's last valid step back to step 0.

    Returns
    -------
    hs : ndarray, shape (T+1, B, P) or (T+1, B, H)
        Hidden states in the layout of :mod:`rnncore.reference`.
    cs : ndarray, shape (T+1, B, H)
        Cell states, in the same layout.
    gates : ndarray, shape (T, B, 4H)
        The activated gates [i f g o] of every step, zero at padded steps.
    """
    T, B, _ = x.shape
    H = w_hh.shape[0] // 4
    hs = np.zeros((T + 1, B, h0.shape[1]), dtype=x.dtype)
    cs = np.zeros((T + 1, B, H), dtype=x.dtype)
    gates = np.zeros((T, B, 4 * H), dtype=x.dtype)
    prev_slot = 1 if reverse else 0              # hs index of h_{t-1} is t + prev_slot
    out_slot = 0 if reverse else 1               # hs index of h_t is t + out_slot
    if reverse:
        hs[lengths, np.arange(B)] = h0
        cs[lengths, np.arange(B)] = c0
    else:
        hs[0] = h0
        cs[0] = c0
    padded = bool((lengths < T).any())
    proj = x @ w_ih.T                            # (T, B, 4H): every step's x_t W_ihᵀ at once
    for t in _steps(T, reverse):
        a = proj[t] + hs[t + prev_slot] @ w_hh.T + b          # (B, 4H)
        act = np.concatenate([_sigmoid(a[:, :2 * H]), np.tanh(a[:, 2 * H:3 * H]),
                              _sigmoid(a[:, 3 * H:])], axis=1)
        i, f, g, o = np.split(act, 4, axis=1)
        c = f * cs[t + prev_slot] + i * g
        h = o * np.tanh(c)                                    # m_t
        if w_hr is not None:
            h = h @ w_hr.T                                    # (B, P) = (B, H)(P, H)ᵀ
        if padded:
            valid = t < lengths                               # (B,)
            gates[t][valid] = act[valid]
            cs[t + out_slot][valid] = c[valid]
            hs[t + out_slot][valid] = h[valid]
        else:
            gates[t] = act
            cs[t + out_slot] = c
            hs[t + out_slot] = h
    return hs, cs, gates


def layer_backward(x, w_ih, w_hh, w_hr, hs, cs, gates, dy, dh_n, dc_n, lengths, reverse):
    """BPTT through one LSTM layer in one direction.

    Parameters
    ----------
    x, w_ih, w_hh, w_hr, lengths, reverse
        As given to :func:`layer_forward`.
    hs, cs, gates : ndarray
        What :func:`layer_forward` returned.
    dy : ndarray, shape (T, B, P) or (T, B, H)
        ∂L/∂h_t from above (the output), zero at padded steps.
    dh_n : ndarray, shape (B, P) or (B, H)
        ∂L/∂h_n, the gradient of each sequence's final hidden state.
    dc_n : ndarray, shape (B, H)
        ∂L/∂c_n, the gradient of each sequence's final cell state.

    Returns
    -------
    dh0 : ndarray, shape (B, P) or (B, H)
    dc0 : ndarray, shape (B, H)
    dw_ih : ndarray, shape (4H, K)
    dw_hh : ndarray, shape (4H, P) or (4H, H)
    db : ndarray, shape (4H,)
        The gradient of ``b_ih`` and equally of ``b_hh``.
    dw_hr : ndarray, shape (P, H), or None
        None when ``w_hr`` is None.
    delta : ndarray, shape (T, B, 4H)
        δ_t = ∂L/∂a_t, zero at padded steps, so that ∂L/∂x = δ W_ih
        (:func:`rnncore.reference.input_grad`).
    """
    T, B, _ = x.shape
    H = cs.shape[2]
    prev_slot = 1 if reverse else 0
    out_slot = 0 if reverse else 1
    delta = np.zeros((T, B, 4 * H), dtype=x.dtype)
    dhs = np.zeros((T, B, hs.shape[2]), dtype=x.dtype) if w_hr is not None else None
    dh0 = dh_n.copy()                   # a sequence of length 0 passes dh_n and dc_n through
    dc0 = dc_n.copy()
    carry = np.zeros((B, hs.shape[2]), dtype=x.dtype)         # δ_{t+1} W_hh
    carry_c = np.zeros((B, H), dtype=x.dtype)                 # ∂c_{t+1} ⊙ f_{t+1}
    zero = np.zeros(B, dtype=np.int64)
    t_final = zero if reverse else lengths - 1     # the step that produced h_n, c_n
    t_initial = lengths - 1 if reverse else zero   # the step that consumed h_0, c_0
    # Padded steps saved zero gates, so δ and ∂L/∂c_{t-1} are zero there without a mask,
    # and nothing crosses them; ∂h_t there meets m_t = 0 in ∂W_hr.
    for t in reversed(_steps(T, reverse)):                    # backward in time
        valid = t < lengths
        ends = t == t_final
        carry[ends] += dh_n[ends]                  # ∂L/∂h_n, ∂L/∂c_n enter at final steps
        carry_c[ends] += dc_n[ends]
        dh = dy[t] + carry                                    # ∂L/∂h_t
        if w_hr is not None:
            dhs[t] = dh
            dh = dh @ w_hr                                    # ∂m: (B, H) = (B, P)(P, H)
        i, f, g, o = np.split(gates[t], 4, axis=1)
        tanh_c = np.tanh(cs[t + out_slot])
        dc = carry_c + dh * o * (1 - tanh_c * tanh_c)
        d = np.concatenate([dc * g * i * (1 - i), dc * cs[t + prev_slot] * f * (1 - f),
                            dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)], axis=1)
        carry_c = dc * f
        delta[t] = d
        carry = d @ w_hh                                      # (B, P|H) = (B, 4H)(4H, P|H)
        at_start = (t == t_initial) & valid
        dh0[at_start] = carry[at_start]
        dc0[at_start] = carry_c[at_start]
    h_prev = hs[1:] if reverse else hs[:T]
    d2 = delta.reshape(T * B, 4 * H)
    dw_ih = d2.T @ x.reshape(T * B, x.shape[2])
    dw_hh = d2.T @ h_prev.reshape(T * B, hs.shape[2])
    db = d2.sum(axis=0)
    dw_hr = None
    if w_hr is not None:                 # m_t = o ⊙ tanh(c_t), zero at padded steps
        c_out = cs[:T] if reverse else cs[1:]
        m = gates[:, :, 3 * H:] * np.tanh(c_out)
        dw_hr = dhs.reshape(T * B, w_hr.shape[0]).T @ m.reshape(T * B, H)
    return dh0, dc0, dw_ih, dw_hh, db, dw_hr, delta
