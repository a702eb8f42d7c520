"""The callables that are timed: one forward and one forward+backward per implementation.

Forward+backward is the forward pass, then BPTT of ``loss = Σ y·R`` for a fixed random R,
with every gradient (input, h0 and weights). Every implementation gets the same input,
weights and R, in the case's dtype: random, never zeros, except in a case whose
``inputs`` is "denormal", where the hidden states underflow into denormals and stay
there (:func:`denormal_inputs`).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .. import functional
from ..rnn import RNN
from . import plain

__all__ = ["IMPLS", "NUMPY_IMPLS", "make_runners", "denormal_inputs", "xla_flags"]

IMPLS = ("numpy", "numpy-plain", "cython", "torch", "torch+rnncore", "jax")
# The plain-NumPy formulations; "×NumPy" divides by the fastest of them in each row.
NUMPY_IMPLS = ("numpy", "numpy-plain")


def denormal_inputs(params: dict, x, contraction: float = 0.1):
    """Make a layer's states underflow into denormals within the first steps, and stay.

    ``x`` is zeroed after its first step; ``W_hh`` is scaled so that each row's absolute
    sum is ``contraction`` (its ∞-norm: ``|W_hh h|`` ≤ ``contraction·|h|`` elementwise at
    most); the biases are drawn in (-0.2, 0.2)·tiny, tiny being the dtype's smallest
    normal number (``np.finfo(dtype).tiny``, 1.2e-38 in float32). Since ``|tanh(a)| ≤
    |a|``, ``max|h_t| ≤ contraction·max|h_{t-1}| + 0.4·tiny``: from ``|h_1| ≤ 1`` the
    states fall below tiny within ``log(tiny)/log(contraction)`` steps (39 in float32,
    308 in float64) and then stay in (-0.45, 0.45)·tiny, where nonzero values are
    denormal — the fixed point ``(1 - W_hh)⁻¹·b`` is not 0.

    Parameters
    ----------
    params : dict of str to ndarray
        One layer's weights (PyTorch's keys); changed in place.
    x : ndarray, shape (T, B, K)
        Changed in place.
    contraction : float
        The ∞-norm given to every ``W_hh``, in (0, 1).
    """
    rng = np.random.default_rng(1)
    tiny = np.finfo(x.dtype).tiny
    x[1:] = 0
    for key, w in params.items():
        if key.startswith("weight_hh"):
            w *= contraction / np.abs(w).sum(axis=1, keepdims=True)
        elif key.startswith("bias"):
            w[...] = rng.uniform(-0.2, 0.2, size=w.shape) * tiny


def _inputs(case, seed: int = 0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(case.dtype)
    x = rng.standard_normal((case.T, case.B, case.K)).astype(dt)
    R = rng.standard_normal((case.T, case.B, case.directions * case.H)).astype(dt)
    rnn = RNN(case.K, case.H, bidirectional=case.bidirectional, dtype=dt, seed=seed)
    params = {k: np.array(v) for k, v in rnn.params.items()}
    if case.inputs == "denormal":
        denormal_inputs(params, x)
    return params, x, R


def _rnncore_runners(case, backend):
    params, x, R = _inputs(case)

    def forward():
        functional.forward(x, params, backend=backend)

    def forward_backward():
        _, _, record = functional.forward(x, params, backend=backend)
        functional.backward(record, R)

    return forward, forward_backward


def _plain_runners(case):
    params, x, R = _inputs(case)

    def forward():
        plain.forward(x, params)

    def forward_backward():
        _, hs = plain.forward(x, params)
        plain.backward(x, params, hs, R)

    return forward, forward_backward


def _torch_runners(case, module_class):
    import torch

    params, x, R = _inputs(case)
    tdt = torch.float64 if case.dtype == "float64" else torch.float32
    module = module_class(case.K, case.H, bidirectional=case.bidirectional).to(tdt)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    Rt = torch.from_numpy(R)

    def forward():
        with torch.no_grad():
            module(xt)

    def forward_backward():
        xt.grad = None
        module.zero_grad(set_to_none=True)
        y, _ = module(xt)
        y.backward(Rt)                       # the gradient of Σ y·R

    return forward, forward_backward


def xla_flags(threads: int) -> str:
    """XLA_FLAGS that keep JAX's CPU backend on one thread when ``threads`` is 1.

    JAX reads them once, when it starts its CPU client; the command sets them (unless the
    environment already has XLA_FLAGS) before importing jax. With more threads XLA keeps
    its defaults, and the CPUs the process is pinned to bound what it uses.
    """
    return "--xla_cpu_multi_thread_eigen=false" if threads == 1 else ""


def _jax_runners(case):
    if xla_flags(case.threads) and "jax" not in sys.modules:
        os.environ.setdefault("XLA_FLAGS", xla_flags(case.threads))
    import jax
    import jax.numpy as jnp

    if case.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    params, x, R = _inputs(case)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    xj, Rj = jnp.asarray(x), jnp.asarray(R)

    def direction(p, x, sfx):
        w_ih, w_hh = p["weight_ih_l0" + sfx], p["weight_hh_l0" + sfx]
        b = p["bias_ih_l0" + sfx] + p["bias_hh_l0" + sfx]
        xp = x @ w_ih.T + b                          # input projection of every step

        def step(h, a):
            h = jnp.tanh(a + h @ w_hh.T)
            return h, h

        h0 = jnp.zeros((x.shape[1], w_hh.shape[0]), x.dtype)
        return jax.lax.scan(step, h0, xp)[1]

    def rnn(p, x):
        y = direction(p, x, "")
        if case.bidirectional:
            y = jnp.concatenate([y, direction(p, x[::-1], "_reverse")[::-1]], axis=-1)
        return y

    fwd = jax.jit(rnn)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(rnn(p, x) * Rj), argnums=(0, 1)))

    def forward():
        fwd(p, xj).block_until_ready()

    def forward_backward():
        jax.block_until_ready(grad(p, xj))

    return forward, forward_backward


def make_runners(case, impl: str):
    """The (forward, forward+backward) callables of one implementation at one case.

    Parameters
    ----------
    case : rnncore.bench.Case
    impl : {"numpy", "numpy-plain", "cython", "torch", "torch+rnncore", "jax"}
        rnncore's backends (``numpy`` is its reference), an RNN written as a NumPy user
        would (:mod:`rnncore.bench.plain`), PyTorch's ``nn.RNN``, rnncore's drop-in
        ``rnncore.torch.RNN`` (timed exactly as stock torch), and a ``jax.jit`` of a
        ``lax.scan`` RNN (forward) and ``jit(grad(...))`` (forward+backward).

    Returns
    -------
    tuple of two callables, or None
        None when the implementation is not installed (or the backend not built).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    try:
        if impl == "numpy-plain":
            return _plain_runners(case)
        if impl in ("numpy", "cython"):
            if impl not in functional.backends():
                return None
            return _rnncore_runners(case, impl)
        if impl == "torch":
            import torch
            return _torch_runners(case, torch.nn.RNN)
        if impl == "torch+rnncore":
            from .. import torch as rnncore_torch
            return _torch_runners(case, rnncore_torch.RNN)
        return _jax_runners(case)
    except ImportError:
        return None
