"""Finite-difference checks of a model's gradients."""
from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["gradient_check"]


def gradient_check(model, *args, eps: float | None = None, samples: int = 20, seed=0,
                   keys: Iterable[str] | None = None, **kwargs) -> dict[str, float]:
    """Compare ``model.loss_and_grads`` with central finite differences.

    For each parameter, ``samples`` entries (all of them if fewer) are perturbed by ±eps
    in place, the loss recomputed, and the difference quotient compared with the
    analytic gradient; every entry is restored afterwards. Use a float64 model: in
    float32 the differences keep only a few significant digits.

    Parameters
    ----------
    model : object
        Has ``params`` (dict of str to ndarray, perturbed in place and restored) and
        ``loss_and_grads(*args, **kwargs)`` returning ``(loss, grads, ...)`` with
        ``grads`` a dict of the same keys and shapes. :class:`rnncore.RNNModel` is one.
    *args, **kwargs
        Passed to ``loss_and_grads`` (inputs, targets, lengths, ...).
    eps : float, optional
        The perturbation; default 1e-6 for float64 parameters, 1e-2 for float32.
    samples : int
        Entries checked per parameter, >= 1.
    seed : int
        Which entries are drawn.
    keys : iterable of str, optional
        The parameters to check; all of ``model.params`` by default.

    Returns
    -------
    dict of str to float
        The largest relative error |analytic − numeric| / max(|analytic|, |numeric|, f)
        seen in each parameter, where the floor f is 1e-3 of the parameter's largest
        gradient entry: entries far below it (say an unused embedding row, exactly 0)
        are compared absolutely, where finite differences carry only rounding noise.

    Examples
    --------
    >>> import numpy as np, rnncore
    >>> model = rnncore.RNNModel(3, 4, vocab_size=3, dtype=np.float64, seed=0)
    >>> x = np.array([[0, 1], [2, 0]]); y = np.array([[1, 2], [0, 1]])
    >>> max(rnncore.gradient_check(model, x, y).values()) < 1e-6
    True
    """
    params = getattr(model, "params", None)
    if not isinstance(params, dict) or not callable(getattr(model, "loss_and_grads", None)):
        raise TypeError(f"model must have a params dict and a loss_and_grads method; "
                        f"got {type(model).__name__}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1; got {samples!r}")
    keys = list(params) if keys is None else list(keys)
    unknown = sorted(set(keys) - set(params))
    if unknown:
        raise ValueError(f"keys {unknown} are not in model.params; got keys {sorted(params)}")
    rng = np.random.default_rng(seed)
    result = model.loss_and_grads(*args, **kwargs)
    grads = {k: np.array(g, dtype=np.float64) for k, g in result[1].items()}  # a copy

    def loss() -> float:
        return float(model.loss_and_grads(*args, **kwargs)[0])

    worst = {}
    for key in keys:
        p = params[key]
        step = eps if eps is not None else (1e-2 if p.dtype == np.float32 else 1e-6)
        flat = p.reshape(-1)
        if flat.base is None and p.size and not np.shares_memory(flat, p):
            raise ValueError(f"params[{key!r}] must be contiguous to be perturbed in place")
        idx = (np.arange(flat.size) if flat.size <= samples
               else rng.choice(flat.size, samples, replace=False))
        g = grads[key].reshape(-1)
        floor = max(1e-3 * float(np.abs(g).max(initial=0.0)), 1e-8)
        err = 0.0
        for i in idx:
            old = flat[i]
            try:
                flat[i] = old + step
                up = loss()
                flat[i] = old - step
                down = loss()
            finally:
                flat[i] = old
            numeric = (up - down) / (2 * step)
            err = max(err, abs(g[i] - numeric) / max(abs(g[i]), abs(numeric), floor))
        worst[key] = float(err)
    return worst
