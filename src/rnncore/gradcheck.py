"""Finite-difference checks of a model's gradients."""
from __future__ import annotations

import numpy as np

__all__ = ["gradient_check"]


def gradient_check(model, *args, eps: float = 1e-6, samples: int = 20, seed=0,
                   **kwargs) -> dict[str, float]:
    """Compare ``model.loss_and_grads`` with central finite differences.

    For each parameter, ``samples`` entries (all of them if fewer) are perturbed by ±eps
    and the loss difference compared with the analytic gradient. Use a float64 model:
    in float32 the differences carry only a few significant digits.

    Parameters
    ----------
    model : object
        Has ``params`` (dict of str to ndarray, updated in place and restored) and
        ``loss_and_grads(*args, **kwargs)`` returning (loss, grads, ...).
    *args, **kwargs
        Passed to ``loss_and_grads`` (inputs, targets, lengths, ...).
    eps : float
    samples : int
    seed : int

    Returns
    -------
    dict of str to float
        The largest relative error |analytic − numeric| / max(|analytic|, |numeric|, f)
        seen in each parameter, where the floor f is 1e-3 of the parameter's largest
        gradient entry: entries far below it (say an unused embedding row, exactly 0)
        are compared absolutely, where finite differences carry only rounding noise.
    """
    rng = np.random.default_rng(seed)
    _, grads, *_ = model.loss_and_grads(*args, **kwargs)
    worst = {}
    for key, p in model.params.items():
        flat = p.reshape(-1)
        idx = (np.arange(flat.size) if flat.size <= samples
               else rng.choice(flat.size, samples, replace=False))
        g = np.asarray(grads[key]).reshape(-1)
        floor = max(1e-3 * float(np.abs(g).max(initial=0.0)), 1e-8)
        err = 0.0
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            up = model.loss_and_grads(*args, **kwargs)[0]
            flat[i] = old - eps
            down = model.loss_and_grads(*args, **kwargs)[0]
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            err = max(err, abs(g[i] - numeric) / max(abs(g[i]), abs(numeric), floor))
        worst[key] = err
    return worst
