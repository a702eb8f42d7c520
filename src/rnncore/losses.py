"""The output layer of the classic RNN: affine projection and softmax cross-entropy.

    z_t = V h_t + c,   ŷ_t = softmax(z_t),   E = −Σ_t log ŷ_t[y_t],   ∂E/∂z_t = ŷ_t − onehot(y_t)
"""
from __future__ import annotations

import numpy as np

from ._linalg import matmul

__all__ = ["affine", "affine_backward", "log_softmax", "softmax",
           "softmax_cross_entropy"]


def affine(h: np.ndarray, V: np.ndarray, c: np.ndarray) -> np.ndarray:
    """z = h Vᵀ + c over all steps at once.

    Parameters
    ----------
    h : ndarray, shape (..., H)
    V : ndarray, shape (O, H)
    c : ndarray, shape (O,)

    Returns
    -------
    z : ndarray, shape (..., O)
    """
    if V.ndim != 2 or h.shape[-1:] != V.shape[1:] or c.shape != V.shape[:1]:
        raise ValueError(f"affine needs h (..., H), V (O, H) and c (O,); got h {h.shape}, "
                         f"V {V.shape}, c {c.shape}")
    flat = h.reshape(-1, h.shape[-1])
    z = matmul(np.ascontiguousarray(flat), np.ascontiguousarray(V), trans_b=True)
    z += c
    return z.reshape(h.shape[:-1] + (V.shape[0],))


def affine_backward(h: np.ndarray, V: np.ndarray,
                    dz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`affine`.

    Parameters
    ----------
    h : ndarray, shape (..., H)
    V : ndarray, shape (O, H)
    dz : ndarray, shape (..., O)

    Returns
    -------
    dh : ndarray, shape (..., H)
    dV : ndarray, shape (O, H)
    dc : ndarray, shape (O,)
    """
    h2 = h.reshape(-1, h.shape[-1])
    dz2 = dz.reshape(-1, dz.shape[-1])
    dz2 = np.ascontiguousarray(dz2)
    dh = matmul(dz2, np.ascontiguousarray(V)).reshape(h.shape)
    return dh, matmul(dz2, np.ascontiguousarray(h2), trans_a=True), dz2.sum(axis=0)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, by log-sum-exp (no overflow at any finite z).

    Parameters
    ----------
    z : ndarray, shape (..., C)

    Returns
    -------
    ndarray, shape (..., C)
    """
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(invalid="ignore"):          # inf - inf -> nan, as IEEE says
        shifted = z - m
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """softmax over the last axis, stable for any finite z.

    Parameters
    ----------
    z : ndarray, shape (..., C)

    Returns
    -------
    ndarray, shape (..., C)
    """
    return np.exp(log_softmax(z))


def softmax_cross_entropy(z: np.ndarray, targets,
                          ignore_index: int = -100) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(z) against integer classes, and its gradient.

    Parameters
    ----------
    z : ndarray, shape (N, C)
        Logits, float32 or float64; never modified.
    targets : array_like of int, shape (N,)
        Class of each row in [0, C), or ``ignore_index`` for rows that do not count
        (padding). Any integer dtype: ``ignore_index`` is compared with the values,
        not cast to the targets' dtype, so uint8 targets work with -100.
    ignore_index : int

    Returns
    -------
    loss : float
        Mean over the rows that count (0.0 if none does).
    dz : ndarray, shape (N, C)
        ∂loss/∂z = (softmax(z) − onehot(target)) / count, 0 on ignored rows; the
        dtype of ``z``.

    Notes
    -----
    log ŷ = z − max z − log Σ exp(z − max z): every exponent is <= 0, so logits of any
    finite size (±1e4, ±1e30) neither overflow nor turn the gradient into NaN.
    """
    z = np.asarray(z)
    if z.ndim != 2:
        raise ValueError(f"z must have shape (N, C); got {z.shape}")
    if z.dtype not in (np.float32, np.float64):
        raise TypeError(f"z must be float32 or float64; got dtype {z.dtype}")
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be integers; got dtype {t.dtype}")
    if t.shape != (z.shape[0],):
        raise ValueError(f"targets must have shape ({z.shape[0]},); got {t.shape}")
    keep = t != ignore_index
    C = z.shape[1]
    if keep.any() and (t[keep].min() < 0 or t[keep].max() >= C):
        raise ValueError(f"targets must lie in [0, {C}) or equal ignore_index="
                         f"{ignore_index}; got values from {t[keep].min()} to {t[keep].max()}")
    count = int(keep.sum())
    logp = log_softmax(z)
    rows = np.nonzero(keep)[0]
    if count == 0:
        return 0.0, np.zeros_like(z)
    loss = -float(logp[rows, t[rows]].sum()) / count
    dz = np.exp(logp)
    dz[rows, t[rows]] -= 1
    dz[~keep] = 0
    dz /= count
    return loss, dz
