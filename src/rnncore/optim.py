"""Optimisers, gradient clipping and truncated BPTT over parameter dicts.

The update rules are torch.optim's (SGD with momentum/dampening/Nesterov, Adagrad, Adam),
applied in place to the arrays of a ``params`` dict from the matching ``grads`` dict.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

__all__ = ["SGD", "Adagrad", "Adam", "clip_grad_value", "clip_grad_norm",
           "truncated_bptt"]


def _check_positive(name, value, allow_zero=True):
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or not np.isfinite(value):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite; "
                         f"got {value}")
    return float(value)


class _Optimizer:
    def __init__(self, params: Mapping[str, np.ndarray], lr: float):
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of names to arrays; "
                            f"got {type(params).__name__}")
        self.params = params
        self.lr = _check_positive("lr", lr)
        self.state: dict[str, dict] = {k: {} for k in params}
        self.steps = 0

    def _grads(self, grads: Mapping[str, np.ndarray]):
        missing = sorted(set(self.params) - set(grads))
        if missing:
            raise ValueError(f"grads is missing {missing}")
        for key, p in self.params.items():
            g = np.asarray(grads[key])
            if g.shape != p.shape:
                raise ValueError(f"grads[{key!r}] must have shape {p.shape}; got {g.shape}")
            yield key, p, g.astype(p.dtype, copy=False)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : mapping of str to ndarray
            The keys and shapes of ``params``.
        """
        self.steps += 1
        for key, p, g in self._grads(grads):
            self._update(self.state[key], p, g)


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

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


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """Clamp every gradient entry to [−clip_value, clip_value], in place.

    Parameters
    ----------
    grads : mapping of str to ndarray
    clip_value : float
    """
    c = _check_positive("clip_value", clip_value)
    for g in grads.values():
        np.clip(g, -c, c, out=g)


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the scale is max_norm / (norm + 1e-6),
    applied only when below 1.

    Parameters
    ----------
    grads : mapping of str to ndarray
        Scaled in place.
    max_norm : float

    Returns
    -------
    float
        The global norm before clipping.
    """
    m = _check_positive("max_norm", max_norm)
    total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64)))
                              for g in grads.values())))
    scale = m / (total + 1e-6)
    if scale < 1:
        for g in grads.values():
            g *= g.dtype.type(scale)
    return total


def truncated_bptt(model, inputs, targets, chunk: int, optimizer=None,
                   clip_norm: float | None = None, h0=None) -> Iterator[tuple[float, float]]:
    """Train on one long sequence in chunks of ``chunk`` steps, carrying the state.

    Each chunk runs forward from the previous chunk's final state (taken as a constant:
    gradients stop at the chunk boundary), back-propagates within the chunk, optionally
    clips, and steps the optimiser: stateful training of a labeling model.

    Parameters
    ----------
    model : RNNModel
        With ``task="labeling"``.
    inputs : ndarray, shape (T, B) of int, or (T, B, K)
    targets : ndarray of int, shape (T, B)
    chunk : int
        Steps per truncation window.
    optimizer : optimiser over ``model.params``, optional
        None computes losses and gradients without updating.
    clip_norm : float, optional
        Clip the global gradient norm of each chunk to this.
    h0 : ndarray, shape (L·D, B, H), optional

    Yields
    ------
    loss : float
        The chunk's mean loss.
    grad_norm : float
        The chunk's global gradient norm before clipping.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    T = np.shape(inputs)[0]
    if np.shape(targets)[:1] != (T,):
        raise ValueError(f"targets must have {T} steps like inputs; got shape "
                         f"{np.shape(targets)}")
    h = h0
    for start in range(0, T, chunk):
        loss, grads, h = model.loss_and_grads(inputs[start:start + chunk],
                                              targets[start:start + chunk], h0=h)
        norm = (clip_grad_norm(grads, clip_norm) if clip_norm is not None else
                float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64)))
                                  for g in grads.values()))))
        if optimizer is not None:
            optimizer.step(grads)
        yield loss, norm
