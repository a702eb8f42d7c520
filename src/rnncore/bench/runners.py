"""The callables that are timed: one forward and one forward+backward per implementation.

Forward+backward is the forward pass, then BPTT of ``loss = Σ y·R`` for a fixed random R,
with every gradient (input, h0 and weights). Every implementation gets the same input,
weights, lengths and R, in the case's dtype: random, never zeros, except in a case whose
``inputs`` is "denormal", where the hidden states underflow into denormals and stay
there (:func:`denormal_inputs`). The case's cell is the Elman RNN (tanh), LSTM or GRU,
with PyTorch's equations, gate order and parameter keys in every implementation.

Each forward callable returns the output y (T, B, D·H), zero at padded steps, and each
forward+backward callable the gradient of the input (T, B, K), as arrays or tensors:
what the tests compare to check that every column computes the same function.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .. import functional
from ..rnn import GRU, LSTM, RNN
from . import plain

__all__ = ["IMPLS", "NUMPY_IMPLS", "make_runners", "denormal_inputs", "xla_flags"]

IMPLS = ("numpy", "numpy-plain", "cython", "torch", "torch+rnncore", "jax")
# The plain-NumPy formulations; "×NumPy" divides by the fastest of them in each row.
NUMPY_IMPLS = ("numpy", "numpy-plain")
# rnncore's cython backend on one thread, timed within a case of several threads in the
# same rounds (its "own 1-thread time", the divisor of the 2-thread targets)
ONE_THREAD = "cython-1t"
# rnncore's cython backend at the same case padded, timed within a case with lengths in
# the same rounds (its "own padded time", the divisor of the lengths target)
PADDED = "cython-padded"
_MODELS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


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
    model = _MODELS[case.cell](case.K, case.H, bidirectional=case.bidirectional, dtype=dt,
                               seed=seed)
    params = {k: np.array(v) for k, v in model.params.items()}
    if case.inputs == "denormal":
        denormal_inputs(params, x)
    return params, x, R


def _rnncore_runners(case, backend):
    params, x, R = _inputs(case)
    lengths = case.lengths_array

    def forward():
        return functional.forward(x, params, lengths=lengths, cell=case.cell,
                                  backend=backend)[0]

    def forward_backward():
        _, _, record = functional.forward(x, params, lengths=lengths, cell=case.cell,
                                          backend=backend)
        return functional.backward(record, R)[0]

    return forward, forward_backward


def _plain_runners(case):
    params, x, R = _inputs(case)

    def forward():
        return plain.forward(x, params)[0]

    def forward_backward():
        _, hs = plain.forward(x, params)
        return plain.backward(x, params, hs, R)[0]

    return forward, forward_backward


def _torch_runners(case, module_class):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    params, x, R = _inputs(case)
    tdt = torch.float64 if case.dtype == "float64" else torch.float32
    module = module_class(case.K, case.H, bidirectional=case.bidirectional).to(tdt)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    Rt = torch.from_numpy(R)
    lengths = None if case.lengths_array is None else torch.from_numpy(case.lengths_array)

    def run():
        if lengths is None:
            return module(xt)[0]
        packed = pack_padded_sequence(xt, lengths, enforce_sorted=False)
        return pad_packed_sequence(module(packed)[0], total_length=case.T)[0]

    def forward():
        with torch.no_grad():
            return run()

    def forward_backward():
        xt.grad = None
        module.zero_grad(set_to_none=True)
        run().backward(Rt)                   # the gradient of Σ y·R
        return xt.grad

    return forward, forward_backward


def xla_flags(threads: int) -> str:
    """XLA_FLAGS that keep JAX's CPU backend on one thread when ``threads`` is 1.

    JAX reads them once, when it starts its CPU client; the command sets them (unless the
    environment already has XLA_FLAGS) before importing jax. With more threads XLA keeps
    its defaults, and the CPUs the process is pinned to bound what it uses.
    """
    return "--xla_cpu_multi_thread_eigen=false" if threads == 1 else ""


def _jax_step(cell: str, H: int):
    """The cell's step for ``lax.scan``: ``(state, a) -> (state, h)``, ``a`` the input
    projection of the step with ``b_ih`` (and, but for GRU, ``b_hh``) added."""
    import jax
    import jax.numpy as jnp

    def rnn(w_hh, b_hh, h, a):
        h = jnp.tanh(a + h @ w_hh.T)
        return h, h

    def lstm(w_hh, b_hh, state, a):
        h, c = state
        i, f, g, o = jnp.split(a + h @ w_hh.T, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru(w_hh, b_hh, h, a):
        a_r, a_z, a_n = jnp.split(a, 3, axis=-1)
        g_r, g_z, g_n = jnp.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r = jax.nn.sigmoid(a_r + g_r)
        z = jax.nn.sigmoid(a_z + g_z)
        n = jnp.tanh(a_n + r * g_n)
        h = (1 - z) * n + z * h
        return h, h
    return {"rnn": rnn, "lstm": lstm, "gru": gru}[cell]


def _jax_runners(case):
    if xla_flags(case.threads) and "jax" not in sys.modules:
        os.environ.setdefault("XLA_FLAGS", xla_flags(case.threads))
    import jax
    import jax.numpy as jnp

    from .isa_env import limit_jax       # (isa_env imports this module through timing)
    limit_jax()                          # under --isa: YNNPACK's products on that ISA
    if case.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    params, x, R = _inputs(case)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    xj, Rj = jnp.asarray(x), jnp.asarray(R)
    T, B, H = case.T, case.B, case.H
    step = _jax_step(case.cell, H)
    lengths = case.lengths_array
    if lengths is not None:
        # Step t of row b is valid while t < lengths[b]; the reverse direction runs row b
        # over its own steps lengths[b]-1, ..., 0, then its padded steps.
        t = np.arange(T)[:, None]
        valid = jnp.asarray(t < lengths)                           # (T, B)
        rev = jnp.asarray(np.where(t < lengths, lengths - 1 - t, t))  # its own inverse
        rows = jnp.arange(B)

    def direction(p, x, sfx):
        w_ih, w_hh = p["weight_ih_l0" + sfx], p["weight_hh_l0" + sfx]
        b_ih, b_hh = p["bias_ih_l0" + sfx], p["bias_hh_l0" + sfx]
        xp = x @ w_ih.T + (b_ih if case.cell == "gru" else b_ih + b_hh)
        h0 = jnp.zeros((B, H), x.dtype)
        state0 = (h0, h0) if case.cell == "lstm" else h0

        def cell(state, a):
            return step(w_hh, b_hh, state, a)
        if lengths is None:
            return jax.lax.scan(cell, state0, xp)[1]

        # A row's padded steps come after its valid ones, in both directions: they
        # change neither its outputs at valid steps nor the gradients of Σ y·R once
        # their outputs are zeroed. (The final states, which the loss does not read,
        # would need the state kept over them.)
        def masked(state, inputs):
            a, m = inputs
            state, h = cell(state, a)
            return state, jnp.where(m[:, None], h, 0)
        return jax.lax.scan(masked, state0, (xp, valid))[1]

    def reverse(a):
        return a[::-1] if lengths is None else a[rev, rows]

    def model(p, x):
        y = direction(p, x, "")
        if case.bidirectional:
            y = jnp.concatenate([y, reverse(direction(p, reverse(x), "_reverse"))],
                                axis=-1)
        return y

    fwd = jax.jit(model)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model(p, x) * Rj), argnums=(0, 1)))

    def forward():
        return fwd(p, xj).block_until_ready()

    def forward_backward():
        return jax.block_until_ready(grad(p, xj))[1]

    return forward, forward_backward


def make_runners(case, impl: str):
    """The (forward, forward+backward) callables of one implementation at one case.

    Parameters
    ----------
    case : rnncore.bench.Case
        Its cell picks the model of every implementation, its ``lengths`` whether the
        sequences are of unequal lengths.
    impl : {"numpy", "numpy-plain", "cython", "torch", "torch+rnncore", "jax"}
        rnncore's backends (``numpy`` is its reference), an RNN written as a NumPy user
        would (:mod:`rnncore.bench.plain`: the Elman RNN on padded sequences only),
        PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (with lengths: through
        ``pack_padded_sequence(enforce_sorted=False)`` and ``pad_packed_sequence``),
        rnncore's drop-in ``rnncore.torch.RNN``/``LSTM``/``GRU`` (timed exactly as
        stock torch; None for a cell it has no drop-in for), and a ``jax.jit`` of a ``lax.scan`` of the same cell (forward;
        with lengths, outputs zero at padded steps) and ``jit(grad(...))`` of it
        (forward+backward).

    Returns
    -------
    tuple of two callables, or None
        None when the implementation is not installed, or does not implement the
        case's cell (an rnncore backend that does not: see
        ``rnncore.functional.backends_for``) or its lengths.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    try:
        if impl == "numpy-plain":
            if case.cell != "rnn" or case.lengths:
                return None
            return _plain_runners(case)
        if impl in ("numpy", "cython"):
            if impl not in functional.backends_for(case.cell):
                return None
            return _rnncore_runners(case, impl)
        if impl == "torch":
            import torch
            module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
            return _torch_runners(case, module[case.cell])
        if impl == "torch+rnncore":
            from .. import torch as rnncore_torch
            module = getattr(rnncore_torch, case.cell.upper(), None)
            return None if module is None else _torch_runners(case, module)
        return _jax_runners(case)
    except ImportError:
        return None
