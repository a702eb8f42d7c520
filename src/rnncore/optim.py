"""Optimisers, gradient clipping and truncated BPTT over parameter dicts.

The update rules are torch.optim's (SGD with momentum/dampening/Nesterov, Adagrad, Adam),
applied in place to the arrays of a ``params`` dict from the matching ``grads`` dict.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

__all__ = ["SGD", "Adagrad", "Adam", "clip_grad_value", "clip_grad_norm", "global_norm",
           "truncated_bptt"]


def _check_positive(name, value, allow_zero=True):
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or not np.isfinite(value):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite; "
                         f"got {value}")
    return float(value)


class _Optimizer:
    """Shared by the optimisers: a params dict updated in place, per-key state."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float):
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of names to arrays; "
                            f"got {type(params).__name__}")
        for key, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{key!r}] must be a float ndarray (updated in "
                                f"place); got {type(p).__name__}"
                                + (f" of dtype {p.dtype}" if isinstance(p, np.ndarray)
                                   else ""))
            if not p.flags.writeable:
                raise ValueError(f"params[{key!r}] is read-only; the optimiser updates "
                                 f"parameters in place")
        self.params = params
        self.lr = _check_positive("lr", lr)
        self.state: dict[str, dict] = {k: {} for k in params}
        self.steps = 0

    def _grads(self, grads: Mapping[str, np.ndarray]):
        """Every (key, param, grad) after checking them all: a bad grads dict
        leaves the parameters untouched."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a mapping of names to arrays; "
                            f"got {type(grads).__name__}")
        missing = sorted(set(self.params) - set(grads))
        if missing:
            raise ValueError(f"grads is missing {missing}")
        checked = []
        for key, p in self.params.items():
            g = np.asarray(grads[key])
            if g.shape != p.shape:
                raise ValueError(f"grads[{key!r}] must have shape {p.shape}; got {g.shape}")
            if g.dtype.kind not in "fiu":
                raise TypeError(f"grads[{key!r}] must hold real numbers; got dtype {g.dtype}")
            checked.append((key, p, g.astype(p.dtype, copy=False)))
        return checked

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : mapping of str to ndarray
            The keys and shapes of ``params`` (extra keys are ignored); never modified.
        """
        checked = self._grads(grads)
        self.steps += 1
        for key, p, g in checked:
            self._update(self.state[key], p, g)


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    With g = grad + weight_decay·p: ``buf = g`` on the first step, then
    ``buf = momentum·buf + (1 − dampening)·g``; the step is ``p −= lr·buf``, or
    ``p −= lr·(g + momentum·buf)`` with Nesterov momentum.

    Parameters
    ----------
    params : mapping of str to ndarray
        Updated in place.
    lr : float
    momentum, dampening, weight_decay : float
    nesterov : bool
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _check_positive("momentum", momentum)
        self.dampening = _check_positive("dampening", dampening)
        self.weight_decay = _check_positive("weight_decay", weight_decay)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def _update(self, state, p, g):
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            if "buf" not in state:
                state["buf"] = d.copy()
            else:
                state["buf"] *= self.momentum
                state["buf"] += (1 - self.dampening) * d
            d = d + self.momentum * state["buf"] if self.nesterov else state["buf"]
        p -= self.lr * d


class Adagrad(_Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    ``sum += g²``; ``p −= lr / (1 + (step − 1)·lr_decay) · g / (√sum + eps)``.

    Parameters
    ----------
    params : mapping of str to ndarray
    lr, lr_decay, weight_decay, initial_accumulator_value, eps : float
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10):
        super().__init__(params, lr)
        self.lr_decay = _check_positive("lr_decay", lr_decay)
        self.weight_decay = _check_positive("weight_decay", weight_decay)
        self.initial = _check_positive("initial_accumulator_value", initial_accumulator_value)
        self.eps = _check_positive("eps", eps)

    def _update(self, state, p, g):
        if "sum" not in state:
            state["sum"] = np.full_like(p, self.initial)
            state["step"] = 0
        state["step"] += 1
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1 + (state["step"] - 1) * self.lr_decay)
        state["sum"] += g * g
        p -= clr * g / (np.sqrt(state["sum"]) + self.eps)


class Adam(_Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad=False``).

    ``m = β₁m + (1 − β₁)g``, ``v = β₂v + (1 − β₂)g²``,
    ``p −= lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + eps)``.

    Parameters
    ----------
    params : mapping of str to ndarray
    lr : float
    betas : (float, float)
    eps, weight_decay : float
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__"):
            raise TypeError(f"betas must be a pair of floats in [0, 1); got {betas!r}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair of floats in [0, 1); got {betas!r}")
        b1, b2 = betas
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name} must lie in [0, 1); got {b}")
        self.betas = (float(b1), float(b2))
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay)

    def _update(self, state, p, g):
        if "m" not in state:
            state["m"], state["v"], state["step"] = np.zeros_like(p), np.zeros_like(p), 0
        state["step"] += 1
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p
        m, v = state["m"], state["v"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        c1 = 1 - b1 ** state["step"]
        c2 = 1 - b2 ** state["step"]
        p -= (self.lr / c1) * m / (np.sqrt(v) / np.sqrt(c2) + self.eps)


def _check_max_norm(name, value) -> float:
    """A clipping threshold: >= 0, or +inf for no clipping (as torch allows)."""
    if isinstance(value, (float, np.floating)) and value == np.inf:
        return np.inf
    try:
        return _check_positive(name, value)
    except ValueError:
        raise ValueError(f"{name} must be >= 0 (inf for no clipping); got {value}") from None


def _grad_arrays(grads: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The gradient arrays of a mapping, checked to be writable float arrays."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads must be a mapping of names to arrays; "
                        f"got {type(grads).__name__}")
    arrays = []
    for key, g in grads.items():
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"grads[{key!r}] must be a float ndarray (clipped in place); "
                            f"got {type(g).__name__}"
                            + (f" of dtype {g.dtype}" if isinstance(g, np.ndarray) else ""))
        if not g.flags.writeable:
            raise ValueError(f"grads[{key!r}] is read-only; clipping works in place")
        arrays.append(g)
    return arrays


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """Clamp every gradient entry to [−clip_value, clip_value], in place.

    As ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    grads : mapping of str to ndarray
        Modified in place.
    clip_value : float
        >= 0.
    """
    c = _check_positive("clip_value", clip_value)
    for g in _grad_arrays(grads):
        np.clip(g, -c, c, out=g)


def global_norm(grads: Mapping[str, np.ndarray], norm_type: float = 2.0) -> float:
    """The norm of all gradients taken together, as one vector.

    Parameters
    ----------
    grads : mapping of str to ndarray
    norm_type : float
        p of the p-norm; ``float("inf")`` for the largest absolute entry.

    Returns
    -------
    float
    """
    p = _check_positive("norm_type", norm_type, allow_zero=False) \
        if norm_type != np.inf else np.inf
    arrays = [np.asarray(g) for g in grads.values()]
    if not arrays:
        return 0.0
    if p == np.inf:
        return float(max(float(np.abs(g).max(initial=0.0)) for g in arrays))
    # each array's own p-norm in float64, then the p-norm of those: torch's order
    norms = np.array([np.linalg.norm(g.astype(np.float64, copy=False).ravel(), p)
                      for g in arrays])
    return float(np.linalg.norm(norms, p))


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float,
                   norm_type: float = 2.0) -> float:
    """Scale all gradients so that their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the scale is ``max_norm / (norm + 1e-6)``,
    applied only when below 1, to every gradient alike (the direction is kept).

    Parameters
    ----------
    grads : mapping of str to ndarray
        Scaled in place.
    max_norm : float
        >= 0; ``float("inf")`` never scales (the norm is still returned), as torch.
    norm_type : float
        p of the p-norm; ``float("inf")`` for the largest absolute entry.

    Returns
    -------
    float
        The global norm before clipping (NaN or inf if a gradient holds one).
    """
    m = _check_max_norm("max_norm", max_norm)
    arrays = _grad_arrays(grads)
    total = global_norm(grads, norm_type)
    scale = m / (total + 1e-6)
    if scale < 1:
        for g in arrays:
            g *= g.dtype.type(scale)
    return total


def truncated_bptt(model, inputs, targets, chunk: int, optimizer=None,
                   clip_norm: float | None = None,
                   h0=None) -> Iterator[tuple[float, float]]:
    """Train on one long sequence in chunks of ``chunk`` steps, carrying the state.

    Stateful training of a labeling model: each chunk runs forward from the previous
    chunk's final state, taken as a constant (detached: gradients stop at the chunk
    boundary), back-propagates within the chunk, optionally clips the global gradient
    norm, and steps the optimiser.

    Parameters
    ----------
    model : RNNModel
        A time-major model with ``task="labeling"``; anything whose
        ``loss_and_grads(inputs, targets, h0=..., return_h_n=True)`` returns
        ``(loss, grads, h_n)`` works.
    inputs : ndarray, shape (T, B) of int, or (T, B, K)
    targets : ndarray of int, shape (T, B)
    chunk : int
        Steps per truncation window (the last window may be shorter).
    optimizer : optimiser over ``model.params``, optional
        None computes losses and gradients without updating.
    clip_norm : float, optional
        Clip each chunk's global gradient norm to this (>= 0, or inf).
    h0 : ndarray, shape (L·D, B, H), optional
        The state before the first chunk; zeros when omitted.

    Yields
    ------
    loss : float
        The chunk's mean loss.
    grad_norm : float
        The chunk's global gradient L2 norm before clipping.

    Raises
    ------
    ValueError, TypeError
        At the call, before any chunk runs, for a bad ``chunk``, ``clip_norm``, model
        or number of target steps.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    if getattr(model, "task", "labeling") != "labeling" or getattr(model, "batch_first",
                                                                    False):
        raise ValueError("truncated_bptt needs a time-major model with task='labeling'")
    if clip_norm is not None:
        _check_max_norm("clip_norm", clip_norm)
    T = np.shape(inputs)[0]
    if np.shape(targets)[:1] != (T,):
        raise ValueError(f"targets must have {T} steps like inputs; got shape "
                         f"{np.shape(targets)}")
    # the arguments are checked at the call; the chunks run as the caller iterates
    return _chunks(model, inputs, targets, int(chunk), optimizer, clip_norm, h0)


def _chunks(model, inputs, targets, chunk, optimizer, clip_norm, h0):
    """The loop of :func:`truncated_bptt`, one chunk per ``next``."""
    h = h0
    for start in range(0, np.shape(inputs)[0], chunk):
        loss, grads, h = model.loss_and_grads(inputs[start:start + chunk],
                                              targets[start:start + chunk], h0=h,
                                              return_h_n=True)
        norm = (clip_grad_norm(grads, clip_norm) if clip_norm is not None
                else global_norm(grads))
        if optimizer is not None:
            optimizer.step(grads)
        yield loss, norm
