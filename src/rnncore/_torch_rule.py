"""The rule by which :class:`rnncore.torch.RNN` decides, before computing anything,
whether a call runs on rnncore or on torch's own implementation.

The rule is stated in the class docstring of :class:`rnncore.torch.RNN` ("When torch's
implementation runs") and in docs/torch.md; :func:`_torch_reason` checks it condition
by condition. Imported only by :mod:`rnncore.torch` (this module imports torch).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence

from . import functional

if TYPE_CHECKING:
    from .torch import RNN

_FLOATS = (torch.float32, torch.float64)
_NONLINEARITY = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}


@functools.lru_cache(maxsize=64)
def _param_shapes(input_size, hidden_size, num_layers, bias, bidirectional):
    """The ``torch.Size`` of every parameter of an RNN, by name."""
    return {name: torch.Size(shape) for name, shape in functional.param_shapes(
        input_size, hidden_size, num_layers, bias, bidirectional).items()}


def _plain(t, dtype) -> bool:
    """Whether ``t`` is a CPU tensor of ``dtype``, strided, not nested, no negative bit."""
    return (isinstance(t, torch.Tensor) and t.dtype == dtype and t.is_cpu
            and t.layout == torch.strided and not t.is_nested and not t.is_neg())


def _index(t, n) -> np.ndarray | None:
    """``t`` as an int64 array of shape (n,), or None if it is not one."""
    if (not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or not t.is_cpu
            or t.layout != torch.strided or t.shape != (n,)):
        return None
    return t.numpy()


def _well_formed(packed: PackedSequence) -> bool:
    """Whether a PackedSequence is what ``pack_padded_sequence`` makes.

    ``batch_sizes`` is non-empty, positive and non-increasing and sums to the rows of
    ``data``; ``sorted_indices`` and ``unsorted_indices`` are both None, or a
    permutation of range(B) and its inverse.
    """
    sizes = packed.batch_sizes
    if (not isinstance(sizes, torch.Tensor) or sizes.dtype != torch.int64
            or not sizes.is_cpu or sizes.layout != torch.strided or sizes.dim() != 1
            or len(sizes) == 0):
        return False
    sizes = sizes.numpy()
    if sizes[-1] < 1 or (sizes[1:] > sizes[:-1]).any() \
            or sizes.sum() != packed.data.shape[0]:
        return False
    order, inverse = packed.sorted_indices, packed.unsorted_indices
    if order is None and inverse is None:
        return True
    B = int(sizes[0])
    order, inverse = _index(order, B), _index(inverse, B)
    if order is None or inverse is None:
        return False
    every = np.arange(B)
    return (np.array_equal(np.sort(order), every)
            and np.array_equal(inverse[order], every))


def _torch_reason(rnn: "RNN", input, hx, weights) -> str | None:
    """Why a call runs torch's implementation, or None if it runs on rnncore.

    Implements the rule of :class:`RNN`'s docstring, "When torch's implementation
    runs", condition by condition, before anything is computed. Inputs torch rejects
    (wrong ndim, feature size, ``hx`` shape or dtype, a malformed ``PackedSequence``)
    all fail some condition, so torch raises its own error for them.
    """
    if rnn._rnncore_backend == "torch":
        return 'backend is "torch"'
    packed = isinstance(input, PackedSequence)
    x = input.data if packed else input
    dtype = x.dtype if isinstance(x, torch.Tensor) else None
    if dtype not in _FLOATS or not _plain(x, dtype):
        return "the input is not a float32 or float64 CPU tensor with the strided layout"
    if hx is not None and not _plain(hx, dtype):
        return "hx is not a CPU tensor with the strided layout of the input's dtype"
    shapes = _param_shapes(rnn.input_size, rnn.hidden_size, rnn.num_layers,
                           bool(rnn.bias), bool(rnn.bidirectional))
    for name, w in zip(rnn._flat_weights_names, weights):   # _plain(w), inlined
        if not (isinstance(w, torch.Tensor) and w.dtype == dtype and w.is_cpu
                and w.layout == torch.strided and not w.is_nested and not w.is_neg()
                and w.shape == shapes.get(name)):
            return ("a weight is not a CPU tensor with the strided layout of the input's "
                    "dtype and its parameter's shape")
    if rnn.training and rnn.dropout > 0 and rnn.num_layers > 1:
        return "dropout between layers in training mode"
    if (torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.overrides.has_torch_function((x, hx, *weights))
            or torch._C._functorch.peek_interpreter_stack() is not None
            or forward_ad._current_level >= 0
            or torch.is_autocast_enabled("cpu")):
        return ("a __torch_function__ tensor, a torch.func transform, forward-mode AD, "
                "CPU autocast, tracing or compiling")
    if rnn.mode not in _NONLINEARITY or rnn.proj_size:
        return "mode is not RNN_TANH or RNN_RELU, or proj_size is set"
    D = 2 if rnn.bidirectional else 1
    K, H, LD = rnn.input_size, rnn.hidden_size, rnn.num_layers * D
    if packed:
        if x.dim() != 2 or not _well_formed(input):
            return "a PackedSequence not made by pack_padded_sequence or pack_sequence"
        T, B = len(input.batch_sizes), int(input.batch_sizes[0])
        state = (LD, B, H)
    elif x.dim() == 3:
        B, T = x.shape[:2] if rnn.batch_first else x.shape[1::-1]
        state = (LD, B, H)
    elif x.dim() == 2:
        T, B = x.shape[0], 1
        state = (LD, H)
    else:
        return "the input is not 2-D or 3-D"
    if x.shape[-1] != K:
        return "the input's last axis is not input_size"
    if x.numel() == 0:
        return "the input is empty"
    if hx is not None and hx.shape != state:
        return "hx does not have shape (L*D, B, H), or (L*D, H) for unbatched input"
    return _size_reason(T, B, K, D, H)


def _size_reason(T, B, K, D, H) -> str | None:
    """The kernels' own message if a size exceeds their 32-bit BLAS arguments, else None.

    The kernels pass T*B, K and D*H (the next layer's K) to BLAS as 32-bit integers,
    and check them with ``_kernels.check_sizes``, as ``functional.forward`` does. A
    NumPy-only install has no kernels, and no limit.
    """
    kernels = functional._kernels
    if kernels is None:
        return None
    try:
        kernels.check_sizes(T, B, max(K, D * H), H)
    except ValueError as exc:
        return str(exc)
    return None


def _runs_on_rnncore(rnn: "RNN", input, hx=None) -> bool:
    """Whether ``rnn(input, hx)`` runs on rnncore (see :func:`_torch_reason`)."""
    return _torch_reason(rnn, input, hx, rnn._weights()) is None
