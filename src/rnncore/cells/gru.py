"""The GRU cell's NumPy reference: SPEC.md's equations for one layer and one direction.

Layout, slots and padding are those of :mod:`rnncore.reference` (read its docstring
first).

The mathematics (one layer, one direction, a batch of B sequences, PyTorch's gate order
[r z n] in the rows of W_ih (3H, K), W_hh (3H, H), b_ih and b_hh (3H,))::

    gi_t = x_t W_ihᵀ + b_ih       gh_t = h_{t-1} W_hhᵀ + b_hh      (B×3H) each
    r = σ(gi_r + gh_r),   z = σ(gi_z + gh_z),   n = tanh(gi_n + r ⊙ gh_n)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

b_hn sits inside r ⊙ (·), so the two biases are kept apart. Backward, with
∂h_t = ∂L/∂h_t = dy_t + (the next step's ∂L/∂h_{t-1})::

    ∂n' = ∂h_t ⊙ (1 - z) ⊙ (1 - n²)                      ∂L/∂(gi_n + r ⊙ gh_n)
    δ_t = [∂n' ⊙ gh_n ⊙ r(1-r),  ∂h_t ⊙ (h_{t-1} - n) ⊙ z(1-z),  ∂n']
                                                          = ∂L/∂gi_t  (B×3H)
    ε_t = [δ_r, δ_z, r ⊙ ∂n']                             = ∂L/∂gh_t  (B×3H)
    ∂L/∂h_{t-1} = ε_t W_hh + ∂h_t ⊙ z
    ∂L/∂W_ih = Σ_t δ_tᵀ x_t    ∂L/∂b_ih = Σ_t δ_t    ∂L/∂x_t = δ_t W_ih
    ∂L/∂W_hh = Σ_t ε_tᵀ h_{t-1}    ∂L/∂b_hh = Σ_t ε_t

The forward pass saves [r, z, n, gh_n] of every step: gh_n is what ∂r needs.
"""
from __future__ import annotations

import numpy as np

__all__ = ["layer_forward", "layer_backward"]


def _sigmoid(a):
    with np.errstate(over="ignore"):             # exp(-a) = inf for a << 0 gives σ = 0
        return 1 / (1 + np.exp(-a))


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse):
    """Run one GRU layer in one direction.

    Parameters
    ----------
    x : ndarray, shape (T, B, K)
        Input, zero at padded steps.
    w_ih : ndarray, shape (3H, K)
    w_hh : ndarray, shape (3H, H)
    b_ih, b_hh : ndarray, shape (3H,)
        Zeros when the layer has no bias.
    h0 : ndarray, shape (B, H)
    lengths : ndarray of int64, shape (B,)
        Valid steps of each sequence, ``0 <= lengths[i] <= T``.
    reverse : bool
        Run from each sequence's last valid step back to step 0.

    Returns
    -------
    hs : ndarray, shape (T+1, B, H)
        Hidden states in the layout of :mod:`rnncore.reference`.
    saved : ndarray, shape (T, B, 4H)
        [r, z, n, gh_n] of every step, zero at padded steps.
    """
    T, B, _ = x.shape
    H = w_hh.shape[1]
    hs = np.zeros((T + 1, B, H), dtype=x.dtype)
    saved = np.zeros((T, B, 4 * H), dtype=x.dtype)
    prev_slot = 1 if reverse else 0              # hs index of h_{t-1} is t + prev_slot
    out_slot = 0 if reverse else 1               # hs index of h_t is t + out_slot
    if reverse:
        hs[lengths, np.arange(B)] = h0
    else:
        hs[0] = h0
    padded = bool((lengths < T).any())
    proj = x @ w_ih.T + b_ih                     # (T, B, 3H): every step's gi_t at once
    for t in _steps(T, reverse):
        gi = proj[t]
        h_prev = hs[t + prev_slot]
        gh = h_prev @ w_hh.T + b_hh                           # (B, 3H)
        rz = _sigmoid(gi[:, :2 * H] + gh[:, :2 * H])
        r, z = rz[:, :H], rz[:, H:]
        gh_n = gh[:, 2 * H:]
        n = np.tanh(gi[:, 2 * H:] + r * gh_n)
        h = (1 - z) * n + z * h_prev
        s = np.concatenate([rz, n, gh_n], axis=1)
        if padded:
            valid = t < lengths                               # (B,)
            saved[t][valid] = s[valid]
            hs[t + out_slot][valid] = h[valid]
        else:
            saved[t] = s
            hs[t + out_slot] = h
    return hs, saved


def layer_backward(x, w_ih, w_hh, hs, saved, dy, dh_n, lengths, reverse):
    """BPTT through one GRU layer in one direction.

    Parameters
    ----------
    x, w_ih, w_hh, lengths, reverse
        As given to :func:`layer_forward`.
    hs, saved : ndarray
        What :func:`layer_forward` returned.
    dy : ndarray, shape (T, B, H)
        ∂L/∂h_t from above (the output), zero at padded steps.
    dh_n : ndarray, shape (B, H)
        ∂L/∂h_n, the gradient of each sequence's final state.

    Returns
    -------
    dh0 : ndarray, shape (B, H)
    dw_ih : ndarray, shape (3H, K)
    dw_hh : ndarray, shape (3H, H)
    db_ih : ndarray, shape (3H,)
    db_hh : ndarray, shape (3H,)
    delta : ndarray, shape (T, B, 3H)
        δ_t = ∂L/∂gi_t, zero at padded steps, so that ∂L/∂x = δ W_ih
        (:func:`rnncore.reference.input_grad`).
    """
    T, B, _ = x.shape
    H = hs.shape[2]
    prev_slot = 1 if reverse else 0
    delta = np.zeros((T, B, 3 * H), dtype=x.dtype)
    eps = np.zeros((T, B, 3 * H), dtype=x.dtype)              # ∂L/∂gh_t
    dh0 = dh_n.copy()                   # a sequence of length 0 passes dh_n through
    carry = np.zeros((B, H), dtype=x.dtype)                   # ∂L/∂h_t from step t+1
    zero = np.zeros(B, dtype=np.int64)
    t_final = zero if reverse else lengths - 1     # the step that produced h_n
    t_initial = lengths - 1 if reverse else zero   # the step that consumed h_0
    padded = bool((lengths < T).any())
    for t in reversed(_steps(T, reverse)):                    # backward in time
        valid = t < lengths
        ends = t == t_final
        carry[ends] += dh_n[ends]                  # ∂L/∂h_n enters at each final step
        dh = dy[t] + carry                                    # ∂L/∂h_t
        r, z, n, gh_n = np.split(saved[t], 4, axis=1)
        h_prev = hs[t + prev_slot]
        dn = dh * (1 - z) * (1 - n * n)
        d = np.concatenate([dn * gh_n * r * (1 - r), dh * (h_prev - n) * z * (1 - z), dn],
                           axis=1)
        if padded:                 # saved is zero there: δ_r = δ_z = 0 but δ_n = ∂h_t
            d[~valid] = 0
        e = np.concatenate([d[:, :2 * H], r * d[:, 2 * H:]], axis=1)
        delta[t] = d
        eps[t] = e
        carry = e @ w_hh + dh * z      # (B, H) = (B, 3H)(3H, H); z = 0 at padded steps
        at_start = (t == t_initial) & valid
        dh0[at_start] = carry[at_start]
    h_prev = hs[1:] if reverse else hs[:T]
    d2 = delta.reshape(T * B, 3 * H)
    e2 = eps.reshape(T * B, 3 * H)
    dw_ih = d2.T @ x.reshape(T * B, x.shape[2])
    dw_hh = e2.T @ h_prev.reshape(T * B, H)
    db_ih = d2.sum(axis=0)
    db_hh = e2.sum(axis=0)
    return dh0, dw_ih, dw_hh, db_ih, db_hh, delta
