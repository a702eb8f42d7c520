"""Matrix products for the layers around the recurrence, on the kernels' BLAS.

A process using rnncore holds two OpenBLAS builds: NumPy's and the one the kernels
link. Their worker threads spin after each call; a training step that alternates
between them lets each pool's spinning workers starve the other (docs/perf-notes.md).
Products here go to the kernels' BLAS whenever the operands allow, and to NumPy
otherwise.
"""
from __future__ import annotations

import numpy as np

try:
    from . import functional  # noqa: F401  (loads the kernels, configures their BLAS)
    from ._kernels import matmul as _kernel_matmul
except ImportError:  # pragma: no cover - a source tree that was never built
    _kernel_matmul = None

__all__ = ["matmul"]


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False,
           trans_b: bool = False) -> np.ndarray:
    """op(a) @ op(b) for 2-D float arrays, op = transpose when asked.

    Parameters
    ----------
    a : ndarray, shape (m, k), or (k, m) with ``trans_a``
    b : ndarray, shape (k, n), or (n, k) with ``trans_b``

    Returns
    -------
    ndarray, shape (m, n)
    """
    if (_kernel_matmul is not None and a.dtype == b.dtype
            and a.dtype in (np.float32, np.float64)
            and a.flags.c_contiguous and b.flags.c_contiguous):
        m = a.shape[1] if trans_a else a.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        out = np.empty((m, n), dtype=a.dtype)
        _kernel_matmul(a, b, out, trans_a, trans_b)
        return out
    return (a.T if trans_a else a) @ (b.T if trans_b else b)
