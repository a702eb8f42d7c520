"""The rule by which the drop-ins of :mod:`rnncore.torch` (``RNN``, ``LSTM``, ``GRU``)
decide, before computing anything, whether a call runs on rnncore or on torch's own
implementation.

:data:`RULE` states it; the class docstrings of the drop-ins and docs/torch.md carry the
same text, and :func:`_torch_reason` checks it condition by condition. One rule for the
three cells: where they differ (LSTM's ``(h0, c0)`` pair and projection, the gates per
hidden unit) the rule says so. Imported only by :mod:`rnncore.torch` (this module
imports torch).
"""
from __future__ import annotations

import functools
import operator
import re
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence

from . import functional
from ._params import CheckedParams

if TYPE_CHECKING:
    from ._torch_dropin import DropIn

_FLOATS = (torch.float32, torch.float64)
_NONLINEARITY = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}

RULE = """\
- ``backend`` is not ``"torch"``;
- the input, ``hx`` (both tensors of an LSTM's pair) and every weight are CPU tensors
  with the strided layout (not nested, no negative-view bit), and the input is float32
  or float64 with ``hx`` and the weights of the same dtype (float16, bfloat16, CUDA,
  meta, sparse: torch);
- no tensor is a ``__torch_function__`` subclass, no ``torch.func`` transform
  (``grad``, ``vmap``, ``jacrev``, …) and no forward-mode AD level
  (``torch.autograd.forward_ad.dual_level``) is active, CPU autocast is off, and the
  call is not being traced by ``torch.jit.trace`` (under ``torch.compile`` Dynamo
  leaves the call out of its graph and it runs here, as stock modules are left out,
  unless ``torch._dynamo.config.allow_rnn`` puts torch's implementation in the graph);
- the shapes are valid: the input is 3-D (2-D unbatched) with ``input_size`` features;
  ``hx`` is (L·D, B, H) ((L·D, H) unbatched), for an LSTM a tuple or list ``(h0, c0)``
  with ``h0`` (L·D, B, P) when ``proj_size`` P > 0 and ``c0`` (L·D, B, H) (without B
  unbatched); every weight has its parameter's shape (also under
  ``torch.func.functional_call``); and a ``PackedSequence`` is well formed, as
  ``pack_padded_sequence``/``pack_sequence`` make it;
- the input is not empty (T = 0 or B = 0 get torch's own error or result);
- T·B, K, D·H (D·P with a projection) and G·H are at most 2³¹ − 1, with G the gates per
  hidden unit (1 for the RNN, 3 for the GRU, 4 for the LSTM): the sizes rnncore's
  kernels pass to BLAS as 32-bit integers.
"""


@functools.lru_cache(maxsize=64)
def _param_shapes(cell, input_size, hidden_size, num_layers, bias, bidirectional,
                  proj_size):
    """The ``torch.Size`` of every parameter of a cell's network, by name."""
    return {name: torch.Size(shape) for name, shape in functional.param_shapes(
        input_size, hidden_size, num_layers, bias, bidirectional, cell=cell,
        proj_size=proj_size).items()}


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


class PackedLayout:
    """Where each row of a PackedSequence's data sits in the padded (T, B) batch.

    Attributes
    ----------
    T, B : int
    index : ndarray of int64, shape (N,), or None
        ``padded.reshape(T * B, -1)[index]`` is the packed data (N = sum of lengths);
        None when the packed data is the padded batch itself, row for row (nothing
        padded, the batch in its own order: one sequence, or equal lengths unsorted).
    lengths : ndarray of int64, shape (B,), or None
        Each sequence's length, in the original (unsorted) batch order; None when every
        sequence is T long.
    """

    __slots__ = ("T", "B", "index", "lengths")

    def __init__(self, T, B, index, lengths):
        self.T, self.B, self.index, self.lengths = T, B, index, lengths

    def pad(self, data):
        """(N, W) packed rows → (T, B, W), zero at the padding."""
        if self.index is None:
            return data.reshape(self.T, self.B, -1)
        padded = np.zeros((self.T * self.B, data.shape[1]), data.dtype)
        padded[self.index] = data
        return padded.reshape(self.T, self.B, -1)

    def unpad(self, padded):
        """(T, B, W) → the (N, W) packed rows, in the packed order."""
        if self.index is None:
            return padded.reshape(self.T * self.B, -1)
        return np.take(padded.reshape(self.T * self.B, -1), self.index, axis=0)


# The last PackedSequence laid out, by its three index tensors (held, so that their ids
# stay theirs) and their version counters: the rule lays out a call's input, and the
# drop-in then runs the call with that layout.
_last_layout: tuple = ((), None)


def packed_layout(packed: PackedSequence) -> PackedLayout | None:
    """The layout of a PackedSequence, or None if it is not what ``pack_padded_sequence``
    makes.

    Well formed: ``batch_sizes`` is non-empty, positive and non-increasing and sums to
    the rows of ``data``; ``sorted_indices`` and ``unsorted_indices`` are both None, or
    a permutation of range(B) and its inverse. The layout of the last PackedSequence
    is kept while its index tensors are the same objects, unchanged.
    """
    global _last_layout
    tensors = (packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    try:
        key = tuple((t, None if t is None else t._version) for t in tensors)
    except RuntimeError:                 # inference tensors count no versions
        return _new_layout(packed)
    last, layout = _last_layout
    if len(last) == 3 and all(t is k and v == w for (t, v), (k, w) in zip(key, last)):
        return layout
    layout = _new_layout(packed)
    _last_layout = (key, layout)
    return layout


def _new_layout(packed: PackedSequence) -> PackedLayout | None:
    """:func:`packed_layout`, computed."""
    sizes = packed.batch_sizes
    if (not isinstance(sizes, torch.Tensor) or sizes.dtype != torch.int64
            or not sizes.is_cpu or sizes.layout != torch.strided or sizes.dim() != 1
            or len(sizes) == 0):
        return None
    sizes = sizes.numpy()
    T, B = len(sizes), int(sizes[0])
    if sizes[-1] < 1 or (sizes[1:] > sizes[:-1]).any() \
            or sizes.sum() != packed.data.shape[0]:
        return None
    order, inverse = packed.sorted_indices, packed.unsorted_indices
    in_order = order is None and inverse is None
    if not in_order:
        order, inverse = _index(order, B), _index(inverse, B)
        if order is None or inverse is None:
            return None
        every = np.arange(B)
        if not (np.array_equal(np.sort(order), every)
                and np.array_equal(inverse[order], every)):
            return None
        in_order = np.array_equal(order, every)
    full = sizes[-1] == B                              # nothing padded
    if full and in_order:
        return PackedLayout(T, B, None, None)
    # packed row r is sequence j of the sorted batch at step t: the rows of each step
    # lie together, j = 0, 1, ... sizes[t] - 1 (as np.nonzero of the (T, B) mask
    # j < sizes[t] gives them, without the mask: T·B of it at T = 2000 cost 0.2 ms)
    t = np.repeat(np.arange(T), sizes)
    j = np.arange(len(t)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    # sequence j is as long as the number of steps whose size exceeds j
    lengths = T - np.searchsorted(sizes[::-1], np.arange(B), side="right")
    if not in_order:
        j = order[j]
        lengths = lengths[inverse]
    return PackedLayout(T, B, t * B + j, None if full else lengths)


def _states(rnn: "DropIn", hx) -> tuple | None:
    """The initial states in ``hx``: (h0,), LSTM's (h0, c0), or None if ``hx`` is not
    of that form (an LSTM's ``hx`` must be a tuple or list of two)."""
    if rnn._cell != "lstm":
        return (hx,)
    if isinstance(hx, (tuple, list)) and len(hx) == 2:
        return tuple(hx)
    return None


_WEIGHTS_REASON = ("a weight is not a CPU tensor with the strided layout of the input's "
                   "dtype and its parameter's shape")


class _Plan:
    """What the rule decides from a drop-in and its parameters alone, kept between calls.

    Built by :func:`_plan` and kept in the module's ``__dict__`` (under
    :data:`PLAN_ATTR`), reused while the module's configuration and its weights are
    unchanged: the same tensor objects with the same ``_version`` counters (an optimiser
    step, ``load_state_dict``), data pointers, dtypes, shapes and strides (``param.data =
    …`` and ``module.to(…)`` rebind a Parameter's data without counting a version; ``p.data
    = p.data.t()`` on a square weight changes its strides alone). A call then checks only
    its input and ``hx`` against it. The NumPy views of the weights are made once, at the
    first call that runs on rnncore.

    Attributes
    ----------
    key : tuple or None
        The module's configuration, then ``[(_version, data_ptr, dtype, shape,
        stride)]`` of each weight (the weights themselves are ``_weights``); None for a
        plan made for one call and not kept.
    dtype : torch.dtype or None
        The one floating dtype whose input the weights accept (every weight a CPU,
        strided tensor of that dtype and of its parameter's shape), or None if none.
    torch_function : bool
        Whether a weight is a ``__torch_function__`` tensor.
    module_reason : str or None
        The rule's reason that depends on the module alone (mode, ``proj_size``).
    LD, P, D : int
        L·D, the width of h (P with a projection, else H), and D.
    widest : int
        max(K, D·P): the widest layer input, which :func:`_size_reason` checks.
    names : list of str
        The weights' parameter names, in ``_flat_weights_names`` order.
    nonlinearity : str
        The Elman cell's f ("tanh" or "relu"; "tanh" for the gated cells).
    cell : {"rnn", "lstm", "gru"}
    """

    __slots__ = ("key", "dtype", "torch_function", "module_reason", "LD", "P", "D",
                 "widest", "names", "nonlinearity", "cell", "_weights", "_arrays",
                 "_layer_arrays")

    def __init__(self, rnn: "DropIn", weights, key):
        cell = rnn._cell
        proj_size = rnn.proj_size if cell == "lstm" else 0
        shapes = _param_shapes(cell, rnn.input_size, rnn.hidden_size, rnn.num_layers,
                               bool(rnn.bias), bool(rnn.bidirectional), proj_size)
        names = rnn._flat_weights_names
        dtype = weights[0].dtype if weights and isinstance(weights[0], torch.Tensor) \
            else None
        if dtype not in _FLOATS or not all(
                _plain(w, dtype) and w.shape == shapes.get(name)
                for name, w in zip(names, weights)):
            dtype = None
        self.key = key
        self.dtype = dtype
        self.torch_function = torch.overrides.has_torch_function(tuple(weights))
        if cell == "rnn" and (rnn.mode not in _NONLINEARITY or rnn.proj_size):
            self.module_reason = "mode is not RNN_TANH or RNN_RELU, or proj_size is set"
        elif cell == "gru" and rnn.proj_size:
            self.module_reason = "proj_size is set"
        else:
            self.module_reason = None
        self.D = 2 if rnn.bidirectional else 1
        self.LD = rnn.num_layers * self.D
        self.P = proj_size or rnn.hidden_size
        self.widest = max(rnn.input_size, self.D * self.P)
        self.names = list(names)
        self.nonlinearity = _NONLINEARITY.get(rnn.mode, "tanh")
        self.cell = cell
        self._weights = weights
        self._arrays = self._layer_arrays = None

    def arrays(self) -> CheckedParams:
        """The weights as NumPy views sharing their memory, by parameter name, checked
        once by functional (a :class:`~rnncore._params.CheckedParams`: the plan lives
        only as long as the weights' shapes, dtypes and memory stay as they are)."""
        if self._arrays is None:
            self._arrays = CheckedParams(
                {name: w.detach().numpy() for name, w in zip(self.names, self._weights)},
                self.cell)
        return self._arrays

    def layer_arrays(self, layer: int, per: int) -> CheckedParams:
        """Layer ``layer``'s ``per`` weights as NumPy views, named as layer 0's."""
        if self._layer_arrays is None:
            arrays = list(self.arrays().values())
            names = [re.sub(r"_l\d+", "_l0", name) for name in self.names[:per]]
            self._layer_arrays = [CheckedParams(dict(zip(names, arrays[i:i + per])),
                                                self.cell)
                                  for i in range(0, len(arrays), per)]
        return self._layer_arrays[layer]


# The tensor types whose version counter and data pointer a plan's key reads: plain
# tensors only (a subclass may answer through __torch_function__).
_KEYABLE = (torch.Tensor, torch.nn.Parameter)

PLAN_ATTR = "_rnncore_plan"
"""The key of a drop-in's kept :class:`_Plan` in its ``__dict__``: one dictionary look-up
per call, the module's own; a pickled, deep-copied or scripted module leaves it out
(``DropIn.__getstate__``), and ``.to()`` and the like drop it (``DropIn._apply``)."""


def _weights_state(weights) -> list:
    """What a plan's key holds of each weight besides the object (which the plan holds
    and :func:`_plan` compares first): version, data pointer, dtype, shape and strides,
    one list compared with the kept one in one comparison."""
    return [(w._version, w.data_ptr(), w.dtype, w.shape, w.stride()) for w in weights]


def _plan(rnn: "DropIn", weights) -> _Plan:
    """The module's :class:`_Plan` for ``weights``: the kept one if still valid, else a
    new one (kept for the next call)."""
    config = (rnn.mode, rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias,
              rnn.bidirectional, rnn.proj_size, len(weights))
    plan = rnn.__dict__.get(PLAN_ATTR)
    # the same objects first: another object (a __torch_function__ tensor among them)
    # is not asked for its version or data pointer
    if (plan is not None and plan.key[0] == config
            and all(map(operator.is_, weights, plan._weights))
            and _weights_state(weights) == plan.key[1]):
        return plan
    plan = _Plan(rnn, weights, None)
    if plan.torch_function or not all(type(w) in _KEYABLE for w in weights):
        rnn.__dict__.pop(PLAN_ATTR, None)
        return plan          # decided for this call only: not asked for data pointers
    try:
        plan.key = (config, _weights_state(weights))
    except RuntimeError:     # no version counter (inference tensors), or no storage
        rnn.__dict__.pop(PLAN_ATTR, None)
        return plan
    rnn.__dict__[PLAN_ATTR] = plan
    return plan


def _kept_plan(rnn: "DropIn") -> _Plan | None:
    """The plan ``rnn`` keeps for its next call, or None."""
    return rnn.__dict__.get(PLAN_ATTR)


def _torch_reason(rnn: "DropIn", input, hx, weights, plan: _Plan | None = None
                  ) -> str | None:
    """Why a call runs torch's implementation, or None if it runs on rnncore.

    Implements :data:`RULE` condition by condition, before anything is computed. Inputs
    torch rejects (wrong ndim, feature size, ``hx`` shape, form or dtype, a malformed
    ``PackedSequence``) all fail some condition, so torch raises its own error for them.
    What depends on the module and its weights alone comes from ``plan`` (by default
    :func:`_plan`'s), so that a call checks only its input and ``hx``.
    """
    if rnn._rnncore_backend == "torch":
        return 'backend is "torch"'
    cell = rnn._cell
    packed = isinstance(input, PackedSequence)
    x = input.data if packed else input
    dtype = x.dtype if isinstance(x, torch.Tensor) else None
    if dtype not in _FLOATS or not _plain(x, dtype):
        return "the input is not a float32 or float64 CPU tensor with the strided layout"
    states = () if hx is None else _states(rnn, hx)
    if states is None:
        return "hx of an LSTM is not a tuple or list of two tensors"
    for s in states:
        if not _plain(s, dtype):
            return "hx is not a CPU tensor with the strided layout of the input's dtype"
    if plan is None:
        plan = _plan(rnn, weights)
    if dtype is not plan.dtype:
        return _WEIGHTS_REASON
    if (torch._C._is_tracing() or plan.torch_function
            or torch.overrides.has_torch_function((x, *states))
            or torch._C._functorch.peek_interpreter_stack() is not None
            or forward_ad._current_level >= 0
            or torch.is_autocast_enabled("cpu")):
        return ("a __torch_function__ tensor, a torch.func transform, forward-mode AD, "
                "CPU autocast or torch.jit.trace")
    if plan.module_reason is not None:
        return plan.module_reason
    K, H, LD, P = rnn.input_size, rnn.hidden_size, plan.LD, plan.P
    if packed:
        layout = packed_layout(input) if x.dim() == 2 else None
        if layout is None:
            return "a PackedSequence not made by pack_padded_sequence or pack_sequence"
        T, B = layout.T, layout.B
        batch = (B,)
    elif x.dim() == 3:
        B, T = x.shape[:2] if rnn.batch_first else x.shape[1::-1]
        batch = (B,)
    elif x.dim() == 2:
        T, B = x.shape[0], 1
        batch = ()
    else:
        return "the input is not 2-D or 3-D"
    if x.shape[-1] != K:
        return "the input's last axis is not input_size"
    if x.numel() == 0:
        return "the input is empty"
    if states and tuple(s.shape for s in states) != tuple(
            (LD, *batch, width) for width in ((P, H) if cell == "lstm" else (H,))):
        return ("hx does not have shape (L*D, B, H), or (L*D, H) for unbatched input "
                "(an LSTM's h0: P wide with a projection)")
    return _size_reason(T, B, plan.widest, _GATES[cell] * H)


def _size_reason(T, B, K, GH) -> str | None:
    """The kernels' own message if a size exceeds their 32-bit BLAS arguments, else None.

    The kernels pass T*B, the widest layer input max(K, D*(P or H)) and G*H to BLAS as
    32-bit integers, and check them with ``_kernels.check_sizes``, as
    ``functional.forward`` does. A NumPy-only install has no kernels, and no limit.
    """
    kernels = functional._kernels
    if kernels is None:
        return None
    try:
        kernels.check_sizes(T, B, K, GH)
    except ValueError as exc:
        return str(exc)
    return None


def _runs_on_rnncore(rnn: "DropIn", input, hx=None) -> bool:
    """Whether ``rnn(input, hx)`` runs on rnncore (see :func:`_torch_reason`)."""
    return _torch_reason(rnn, input, hx, rnn._weights()) is None
