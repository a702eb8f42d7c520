"""An Elman RNN written the way a NumPy user would write it: the ``numpy-plain`` baseline.

rnncore's reference backend (``backend="numpy"``) mirrors the kernels: it handles
padding, ``h0``, several layers and directions in the kernels' layout. A NumPy user
timing an RNN of their own would write less, and this module is that: one layer,
sequences of equal length, the input projection of every step in one matmul, per step
one ``h @ W_hhᵀ`` and ``np.tanh``; backward keeps per step only ``δ_t W_hh`` and computes
∂W_ih, ∂W_hh, ∂b and ∂x each as one product over all steps. The benchmark divides by
the faster of the two ("×NumPy").

Same arguments and results as the other implementations timed: PyTorch's parameter
names, time-major ``x`` (T, B, K), ``h_0 = 0``, and the gradients of ``loss = Σ y·R``
(``dy = R``) with respect to ``x``, ``h_0`` and every parameter.
"""
from __future__ import annotations

import numpy as np

__all__ = ["forward", "backward"]


def _direction_forward(x, w_ih, w_hh, b_ih, b_hh, relu):
    """hs (T+1, B, H) of one direction over ``x`` (T, B, K), ``hs[0] = h_0 = 0``."""
    T, B, _ = x.shape
    H = w_hh.shape[0]
    hs = np.zeros((T + 1, B, H), dtype=x.dtype)
    xw = x @ w_ih.T + (b_ih + b_hh)                     # (T, B, H), every step at once
    for t in range(T):
        a = xw[t] + hs[t] @ w_hh.T                      # (B, H)
        if relu:
            np.maximum(a, 0, out=hs[t + 1])
        else:
            np.tanh(a, out=hs[t + 1])
    return hs


def _direction_backward(x, w_ih, w_hh, hs, dy, relu):
    """∂x, ∂h_0, ∂W_ih, ∂W_hh, ∂b of one direction, given ∂L/∂h_t = ``dy[t]``."""
    T, B, K = x.shape
    H = w_hh.shape[0]
    delta = np.empty((T, B, H), dtype=x.dtype)          # ∂L/∂a_t
    dh = np.zeros((B, H), dtype=x.dtype)                # ∂L/∂h_t from step t+1
    for t in reversed(range(T)):
        dh += dy[t]
        if relu:
            delta[t] = dh * (hs[t + 1] > 0)
        else:
            delta[t] = dh * (1 - hs[t + 1] ** 2)
        dh = delta[t] @ w_hh                            # (B, H)
    d = delta.reshape(T * B, H)
    dw_ih = d.T @ x.reshape(T * B, K)                   # Σ_t δ_tᵀ x_t
    dw_hh = d.T @ hs[:-1].reshape(T * B, H)             # Σ_t δ_tᵀ h_{t-1}
    db = d.sum(axis=0)
    dx = delta @ w_ih                                   # (T, B, K)
    return dx, dh, dw_ih, dw_hh, db


def _suffixes(params):
    return ("", "_reverse") if "weight_ih_l0_reverse" in params else ("",)


def forward(x, params, relu: bool = False):
    """Run one layer (one direction, or two if ``params`` has the ``_reverse`` keys).

    Parameters
    ----------
    x : ndarray, shape (T, B, K)
    params : dict of str to ndarray
        ``weight_ih_l0`` (H, K), ``weight_hh_l0`` (H, H), ``bias_ih_l0`` (H,),
        ``bias_hh_l0`` (H,), and the same with ``_reverse`` for a bidirectional layer.
    relu : bool
        ``relu`` instead of ``tanh``.

    Returns
    -------
    y : ndarray, shape (T, B, D*H)
        The hidden states of every step, the reverse direction's in the second half.
    hs : list of ndarray, shape (T+1, B, H)
        Per direction, ``h_0`` then the states in the order that direction ran
        (the reverse direction's over ``x[::-1]``): what :func:`backward` needs.
    """
    hs = []
    for sfx in _suffixes(params):
        xd = x if not sfx else np.ascontiguousarray(x[::-1])
        hs.append(_direction_forward(xd, params["weight_ih_l0" + sfx],
                                     params["weight_hh_l0" + sfx],
                                     params["bias_ih_l0" + sfx],
                                     params["bias_hh_l0" + sfx], relu))
    y = hs[0][1:] if len(hs) == 1 else np.concatenate([hs[0][1:], hs[1][:0:-1]], axis=-1)
    return y, hs


def backward(x, params, hs, dy, relu: bool = False):
    """The gradients of a loss with ∂L/∂y = ``dy`` through :func:`forward`.

    Parameters
    ----------
    x : ndarray, shape (T, B, K)
    params : dict of str to ndarray
        As given to :func:`forward`.
    hs : list of ndarray
        The second result of :func:`forward`.
    dy : ndarray, shape (T, B, D*H)
        ∂L/∂y (``R`` for ``loss = Σ y·R``).
    relu : bool
        As given to :func:`forward`.

    Returns
    -------
    dx : ndarray, shape (T, B, K)
    dh0 : ndarray, shape (D, B, H)
    grads : dict of str to ndarray
        ∂L/∂(each parameter), with the keys of ``params``.
    """
    H = hs[0].shape[2]
    dx, dh0, grads = None, [], {}
    for d, sfx in enumerate(_suffixes(params)):
        xd, dyd = (x, dy[:, :, :H]) if not d else (np.ascontiguousarray(x[::-1]),
                                                   np.ascontiguousarray(dy[::-1, :, H:]))
        dx_d, dh0_d, dw_ih, dw_hh, db = _direction_backward(
            xd, params["weight_ih_l0" + sfx], params["weight_hh_l0" + sfx], hs[d], dyd,
            relu)
        dx = dx_d if dx is None else dx + dx_d[::-1]
        dh0.append(dh0_d)
        grads.update({"weight_ih_l0" + sfx: dw_ih, "weight_hh_l0" + sfx: dw_hh,
                      "bias_ih_l0" + sfx: db, "bias_hh_l0" + sfx: db.copy()})
    return dx, np.stack(dh0), grads
