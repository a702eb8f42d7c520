"""The NumPy reference: SPEC.md's equations for one layer and one direction, plainly.

This module is the readable baseline and the correctness oracle. The Cython kernels in
``_kernels.pyx`` have the same two functions with the same arguments and the same
names for the same quantities, so the two can be read side by side.

The mathematics (one layer, one direction, a batch of B sequences)::

    a_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh        (B×H)
    h_t = f(a_t),   f = tanh or relu
    δ_t = (∂L/∂h_t + δ_{t+1} W_hh) ⊙ f'(a_t)             f'(a_t) = 1 - h_t² for tanh,
                                                          [not h_t <= 0] for relu
    ∂L/∂W_ih = Σ_t δ_tᵀ x_t    ∂L/∂W_hh = Σ_t δ_tᵀ h_{t-1}    ∂L/∂b = Σ_t δ_t
    ∂L/∂x_t  = δ_t W_ih        ∂L/∂h_0  = δ_1 W_hh

(rows are batch entries, so the products read right to left compared with the column
convention ``W_hh h_{t-1}`` of SPEC.md).

Notation used by common texts, mapped onto the package's (PyTorch's) names:

============================  ==============  ==================  ==================
this package (PyTorch)        Goodfellow et    Elman / Karpathy    W_H / W_X / W_O
                              al. (U/W/V)      ``min-char-rnn``    texts
============================  ==============  ==================  ==================
``weight_ih_l0``  (H, K)      U               Wxh                 W_X
``weight_hh_l0``  (H, H)      W               Whh                 W_H
``bias_ih_l0 + bias_hh_l0``   b               bh                  b_H
output ``V`` (model)          V               Why                 W_O
output ``c`` (model)          c               by                  b_O
hidden state h_t              h_t (s_t)       hs[t]               s_t / h_t
============================  ==============  ==================  ==================

Layout shared with the kernels
------------------------------
Each layer-direction keeps its hidden states in one array ``hs`` of shape (T+1, B, H):

* forward direction: ``hs[0] = h_0`` and ``hs[t+1] = h_t``; so the previous state of
  every step, ``hs[:T]``, is one contiguous matrix.
* reverse direction: ``hs[t] = h_t`` and the initial state of sequence ``b`` sits at
  ``hs[len_b, b]`` (the first padded slot, or the extra row ``T``); the previous state
  of step ``t`` is ``hs[t+1]``, so ``hs[1:]`` is one contiguous matrix.

Rows of padded steps hold zeros, so whole-sequence products over them add nothing.
"""
from __future__ import annotations

import numpy as np

__all__ = ["layer_forward", "layer_backward", "input_grad", "lstm_layer_forward",
           "lstm_layer_backward", "gru_layer_forward", "gru_layer_backward"]


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def layer_forward(x, w_ih, w_hh, b, h0, lengths, reverse, relu):
    """Run one layer in one direction.

    Parameters
    ----------
    x : ndarray, shape (T, B, K)
        Input, zero at padded steps.
    w_ih : ndarray, shape (H, K)
    w_hh : ndarray, shape (H, H)
    b : ndarray, shape (H,)
        ``b_ih + b_hh`` (zeros when the layer has no bias).
    h0 : ndarray, shape (B, H)
    lengths : ndarray of int64, shape (B,)
        Valid steps of each sequence, ``1 <= lengths[i] <= T`` (all ``T`` when the
        batch is not padded).
    reverse : bool
        Run from each sequence's last valid step back to step 0.
    relu : bool
        ``f = relu`` instead of ``tanh``.

    Returns
    -------
    hs : ndarray, shape (T+1, B, H)
        Hidden states in the layout described in the module docstring.
    """
    T, B, _ = x.shape
    H = w_hh.shape[0]
    hs = np.zeros((T + 1, B, H), dtype=x.dtype)
    prev_slot = 1 if reverse else 0              # hs index of h_{t-1} is t + prev_slot
    out_slot = 0 if reverse else 1               # hs index of h_t is t + out_slot
    if reverse:
        hs[lengths, np.arange(B)] = h0
    else:
        hs[0] = h0
    padded = bool((lengths < T).any())
    proj = x @ w_ih.T                            # (T, B, H): every step's x_t W_ihᵀ at once
    for t in _steps(T, reverse):
        a = proj[t] + hs[t + prev_slot] @ w_hh.T + b          # (B, H)
        h = np.maximum(a, 0) if relu else np.tanh(a)
        if padded:
            valid = t < lengths                               # (B,)
            hs[t + out_slot][valid] = h[valid]
        else:
            hs[t + out_slot] = h
    return hs


def layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, reverse, relu,
                   need_dh0=True):
    """BPTT through one layer in one direction.

    Parameters
    ----------
    x, w_ih, w_hh, lengths, reverse, relu
        As given to :func:`layer_forward`.
    hs : ndarray, shape (T+1, B, H)
        What :func:`layer_forward` returned.
    dy : ndarray, shape (T, B, H)
        ∂L/∂h_t from above (the output), zero at padded steps.
    dh_n : ndarray, shape (B, H)
        ∂L/∂h_n, the gradient of each sequence's final state.
    need_dh0 : bool
        Without it, the last step's δ W_hh (which only dh0 reads) is not computed.

    Returns
    -------
    dh0 : ndarray, shape (B, H), or None without ``need_dh0``
    dw_ih : ndarray, shape (H, K)
    dw_hh : ndarray, shape (H, H)
    db : ndarray, shape (H,)
        The gradient of ``b_ih`` and equally of ``b_hh``.
    delta : ndarray, shape (T, B, H)
        δ_t = ∂L/∂a_t, zero at padded steps; :func:`input_grad` turns it into ∂L/∂x.
    """
    T, B, _ = x.shape
    H = w_hh.shape[0]
    out_slot = 0 if reverse else 1
    delta = np.zeros((T, B, H), dtype=x.dtype)
    dh0 = dh_n.copy()                   # a sequence of length 0 passes dh_n through
    carry = np.zeros((B, H), dtype=x.dtype)                   # δ_{t+1} W_hh
    zero = np.zeros(B, dtype=np.int64)
    t_final = zero if reverse else lengths - 1     # the step that produced h_n
    t_initial = lengths - 1 if reverse else zero   # the step that consumed h_0
    padded = bool((lengths < T).any())
    t_last = T - 1 if reverse else 0               # the last step BPTT visits
    for t in reversed(_steps(T, reverse)):                    # backward in time
        valid = t < lengths
        ends = t == t_final
        carry[ends] += dh_n[ends]                  # ∂L/∂h_n enters at each final step
        g = dy[t] + carry
        h = hs[t + out_slot]
        # ∂L/∂a_t; relu' is 1 where h is NaN, passing the gradient on as torch does
        g_a = np.where(h <= 0, 0, g) if relu else g * (1 - h * h)
        if padded:
            g_a[~valid] = 0
        delta[t] = g_a
        if t == t_last and not need_dh0:
            break                                  # δ_t W_hh would reach dh0 only
        carry = delta[t] @ w_hh
        at_start = (t == t_initial) & valid
        dh0[at_start] = carry[at_start]
    if reverse:
        h_prev = hs[1:]
    else:
        h_prev = hs[:T]
    d2 = delta.reshape(T * B, H)
    dw_ih = d2.T @ x.reshape(T * B, x.shape[2])
    dw_hh = d2.T @ h_prev.reshape(T * B, H)
    db = d2.sum(axis=0)
    return (dh0 if need_dh0 else None), dw_ih, dw_hh, db, delta


def input_grad(delta, w_ih, dx, accumulate, rows=-1):
    """∂L/∂x_t = δ_t W_ih for every step at once.

    Parameters
    ----------
    delta : ndarray, shape (T, B, H)
        From :func:`layer_backward`.
    w_ih : ndarray, shape (H, K)
    dx : ndarray, shape (T, B, K)
        Written (``accumulate`` False) or added into (True): the two directions of a
        bidirectional layer share one input.
    accumulate : bool
    rows : int
        The T·B of the whole call ``delta`` belongs to; the kernels choose their path
        by it, the reference has one path.
    """
    g = (delta.reshape(-1, w_ih.shape[0]) @ w_ih).reshape(dx.shape)
    if accumulate:
        dx += g
    else:
        dx[...] = g


# The gated cells' references (cells/lstm.py, cells/gru.py), under the names the layer
# walker (rnncore._cells) asks a backend for.
from .cells import gru as _gru, lstm as _lstm  # noqa: E402

lstm_layer_forward, lstm_layer_backward = _lstm.layer_forward, _lstm.layer_backward
gru_layer_forward, gru_layer_backward = _gru.layer_forward, _gru.layer_backward
