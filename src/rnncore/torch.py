"""A drop-in ``torch.nn.RNN`` whose CPU forward and backward run on rnncore's kernels.

``rnncore.torch.RNN`` is a subclass of ``torch.nn.RNN``: the same constructor, parameters,
``state_dict``, inputs (tensor, ``batch_first``, unbatched, ``PackedSequence``) and
outputs. On CPU float32/float64 tensors its forward goes through one
``torch.autograd.Function`` that calls :func:`rnncore.functional.forward` and, on
``loss.backward()``, :func:`rnncore.functional.backward`; tensors and arrays share memory
both ways (``t.detach().numpy()``, ``torch.from_numpy``). Everything else runs torch's own
implementation (see the class docstring for the rule). :func:`patch` converts the
``nn.RNN`` modules of an existing model in place.

Importing this module registers :class:`RNN` with
``torch.serialization.add_safe_globals``, so a whole model saved with ``torch.save``
loads with ``torch.load(f)`` (``weights_only=True``, torch's default) once the model's
own classes are allowed as well.

PyTorch is optional for rnncore: only this module imports it (with the rule it decides
by, in ``rnncore._torch_rule``).
"""
from __future__ import annotations

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "rnncore.torch needs PyTorch, which is not installed. Install it with "
        "`pip install torch` (a cpu-only build is enough).") from exc

import numpy as np
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from . import functional
from ._torch_rule import _NONLINEARITY, _torch_reason

__all__ = ["RNN", "patch"]

_BACKENDS = (None, "torch") + functional.backends()


class _RNNFunction(torch.autograd.Function):
    """output, h_n = RNN(x, hx; weights), with rnncore's forward and BPTT.

    ``forward(ctx, x, hx, call, *weights)``: ``call`` is ``(names, nonlinearity,
    batch_first, lengths, backend)``; ``names`` are the parameter keys of ``weights``.
    """

    @staticmethod
    def forward(ctx, x, hx, call, *weights):
        names, nonlinearity, batch_first, lengths, backend = call
        y, h_n, record = functional.forward(
            x.detach().numpy(), dict(zip(names, [w.detach().numpy() for w in weights])),
            None if hx is None else hx.detach().numpy(), lengths,
            nonlinearity=nonlinearity, batch_first=batch_first, backend=backend,
            snapshot_weights=False)
        ctx.record = record
        ctx.names = names
        # Saved only so that autograd detects in-place changes to x or the weights
        # between forward and backward (the record shares their memory: no snapshot
        # of the weights is needed, their version counters guard them).
        ctx.save_for_backward(x, *weights)
        ctx.set_materialize_grads(False)
        return torch.from_numpy(y), torch.from_numpy(h_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n):
        ctx.saved_tensors  # raises if x or a weight was modified in place since forward
        need = ctx.needs_input_grad
        dx, dh0, grads = functional.backward(
            ctx.record, None if dy is None else dy.detach().resolve_neg().numpy(),
            None if dh_n is None else dh_n.detach().resolve_neg().numpy(),
            need_dx=need[0])
        return (None if dx is None else torch.from_numpy(dx),
                torch.from_numpy(dh0) if need[1] else None,
                None,
                *[torch.from_numpy(grads[name]) if need[i] else None
                  for i, name in enumerate(ctx.names, 3)])


def _packed_layout(batch_sizes, sorted_indices, unsorted_indices):
    """Where each row of a PackedSequence's data sits in the padded (T, B) batch.

    Returns
    -------
    index : LongTensor, shape (N,)
        ``padded.reshape(T * B, -1)[index]`` is the packed data (N = sum of lengths).
    lengths : ndarray of int64, shape (B,)
        Each sequence's length, in the original (unsorted) batch order.
    T, B : int
    """
    bs = batch_sizes.numpy()
    T, B = len(bs), int(bs[0])
    present = np.arange(B)[None, :] < bs[:, None]      # (T, B) over the sorted batch
    t, j = np.nonzero(present)                         # row-major: the packed order
    lengths = present.sum(axis=0)
    if sorted_indices is not None:
        j = sorted_indices.numpy()[j]
        lengths = lengths[unsorted_indices.numpy()]
    return torch.from_numpy(t * B + j), lengths, T, B


class RNN(torch.nn.RNN):
    """``torch.nn.RNN`` with its CPU forward and backward computed by rnncore.

    Constructed, used, saved and loaded exactly as ``torch.nn.RNN``; its parameters and
    ``state_dict`` are torch's.

    Parameters
    ----------
    input_size, hidden_size : int
        K and H.
    num_layers : int, default 1
        L.
    nonlinearity : {"tanh", "relu"}, default "tanh"
    bias : bool, default True
    batch_first : bool, default False
        Input and output (B, T, ...) instead of (T, B, ...); ignored for unbatched input.
    dropout : float, default 0.0
        Dropout between layers in training mode (torch's implementation runs then).
    bidirectional : bool, default False
        D = 2 if True else 1.
    device, dtype : optional
        As for ``torch.nn.RNN``.
    backend : {None, "cython", "numpy", "torch"}, keyword only
        None uses rnncore's fastest backend (:func:`rnncore.backends`); "torch" always
        runs torch's own implementation. Also settable later as the attribute
        ``rnn.backend``.

    Attributes
    ----------
    backend : {None, "cython", "numpy", "torch"}
        See above; may be changed at any time.

    Notes
    -----
    **When torch's implementation runs.** ``forward`` decides before computing
    anything: rnncore computes the forward pass (and, through autograd, the backward
    pass) when all of these hold; otherwise ``forward`` runs ``torch.nn.RNN.forward``
    unchanged:

    - ``backend`` is not ``"torch"``;
    - the input, ``hx`` and every weight are CPU tensors with the strided layout (not
      nested, no negative-view bit), and the input is float32 or float64 with ``hx``
      and the weights of the same dtype (float16, bfloat16, CUDA, meta, sparse: torch);
    - not in training mode with ``dropout > 0`` and ``num_layers > 1`` (in ``eval()``
      mode dropout is off and rnncore runs);
    - no tensor is a ``__torch_function__`` subclass, no ``torch.func`` transform
      (``grad``, ``vmap``, ``jacrev``, …) and no forward-mode AD level
      (``torch.autograd.forward_ad.dual_level``) is active, CPU autocast is off, and
      the call is not being traced (``torch.jit.trace``) or compiled
      (``torch.compile``);
    - the shapes are valid: the input is 3-D (2-D unbatched) with ``input_size``
      features, ``hx`` is (L·D, B, H) ((L·D, H) unbatched), every weight has its
      parameter's shape (also under ``torch.func.functional_call``), and a
      ``PackedSequence`` is well formed, as ``pack_padded_sequence``/``pack_sequence``
      make it;
    - the input is not empty (T = 0 or B = 0 get torch's own error or result);
    - T·B, K and D·H are at most 2³¹ − 1 (the sizes rnncore's kernels pass to BLAS
      as 32-bit integers).

    So every input torch rejects goes to torch, which raises its own exception and
    message. Once a call runs on rnncore, an error raised there propagates: nothing
    is retried on torch.

    ``torch.jit.script`` compiles torch's implementation: the module turns itself into a
    ``torch.nn.RNN`` holding the same Parameter objects (and, as ``torch.jit.script``
    does for every submodule that defines ``__prepare_scriptable__``, the parent model's
    entry is replaced by it).

    **Gradients** are exact first derivatives; ∂L/∂input is computed only when the
    input requires grad, and tensors that do not require grad get none. Differentiating
    the backward pass (``create_graph=True`` followed by a gradient of a gradient, or
    ``torch.autograd.gradgradcheck``) raises ``RuntimeError: trying to differentiate
    twice a function that was marked with @once_differentiable``; use
    ``backend="torch"`` for higher-order derivatives.

    **Inputs and outputs** are those of ``torch.nn.RNN``: ``rnn(input, hx=None)``,
    ``input`` (T, B, K), (B, T, K) if ``batch_first``, (T, K) unbatched, or a
    ``PackedSequence``; ``hx`` (L*D, B, H) or (L*D, H); returns ``output`` (T, B, D*H)
    (or (B, T, D*H), (T, D*H), or a ``PackedSequence`` with the input's
    ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``) and ``h_n``
    (L*D, B, H) or (L*D, H), in the input's batch order.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> rnn = rnncore.torch.RNN(8, 16, num_layers=2, batch_first=True)
    >>> x = torch.randn(4, 50, 8, requires_grad=True)           # (B, T, K)
    >>> y, h_n = rnn(x)
    >>> y.shape, h_n.shape
    (torch.Size([4, 50, 16]), torch.Size([2, 4, 16]))
    >>> y.sum().backward()
    >>> rnn.weight_hh_l0.grad.shape
    torch.Size([16, 16])
    """

    _rnncore_backend = None      # class default, so that patch() can convert in place

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    @property
    def backend(self) -> str | None:
        """The backend: None (rnncore's fastest), "cython", "numpy" or "torch"."""
        return self._rnncore_backend

    @backend.setter
    def backend(self, value: str | None) -> None:
        if value not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}; got {value!r}")
        self.__dict__["_rnncore_backend"] = value

    def _weights(self):
        """The weight tensors in ``_flat_weights_names`` order (functional_call aware)."""
        params = self._parameters
        try:
            return [params[name] for name in self._flat_weights_names]
        except KeyError:  # e.g. reparametrised by torch.nn.utils.parametrize
            return [getattr(self, name, None) for name in self._flat_weights_names]

    def forward(self, input, hx=None):
        """Run the RNN; see the class docstring for inputs, outputs and the rule.

        Parameters
        ----------
        input : Tensor, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K); or a
            ``PackedSequence``
        hx : Tensor, shape (L*D, B, H) or (L*D, H), optional

        Returns
        -------
        output : Tensor, shape (T, B, D*H), (B, T, D*H) or (T, D*H); or PackedSequence
        h_n : Tensor, shape (L*D, B, H) or (L*D, H)
        """
        weights = self._weights()
        if _torch_reason(self, input, hx, weights) is not None:
            return super().forward(input, hx)
        # From here on the call runs on rnncore, and any error it raises propagates.
        packed = isinstance(input, PackedSequence)
        x = input.data if packed else input
        batch_first = self.batch_first
        lengths = None
        if packed:
            index, lengths, T, B = _packed_layout(input.batch_sizes, input.sorted_indices,
                                                  input.unsorted_indices)
            K = x.shape[-1]
            x = x.new_zeros((T * B, K)).index_copy_(0, index, x).view(T, B, K)
            batch_first = False
        call = (self._flat_weights_names, _NONLINEARITY[self.mode], batch_first, lengths,
                self._rnncore_backend)
        if torch.is_grad_enabled() and (
                x.requires_grad or (hx is not None and hx.requires_grad)
                or any(w.requires_grad for w in weights)):
            y, h_n = _RNNFunction.apply(x, hx, call, *weights)
        else:
            params = dict(zip(call[0], [w.detach().numpy() for w in weights]))
            y, h_n, _ = functional.forward(
                x.detach().numpy(), params, None if hx is None else hx.detach().numpy(),
                lengths, nonlinearity=call[1], batch_first=batch_first, backend=call[4],
                snapshot_weights=False)
            y, h_n = torch.from_numpy(y), torch.from_numpy(h_n)
        if packed:
            y = y.reshape(T * B, -1).index_select(0, index)
            return PackedSequence(y, input.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), h_n
        return y, h_n

    def __setstate__(self, state):
        """Restore a pickled module (``torch.load``), checking its backend.

        Parameters
        ----------
        state : dict
            The module's ``__dict__`` as pickled.
        """
        super().__setstate__(state)
        self.backend = self.__dict__.pop("_rnncore_backend", None)

    def __prepare_scriptable__(self):
        """A ``torch.nn.RNN`` holding the same Parameter objects, for ``torch.jit.script``.

        Returns
        -------
        torch.nn.RNN
        """
        stock = torch.nn.RNN.__new__(torch.nn.RNN)
        for key, value in self.__dict__.items():
            if key != "_rnncore_backend":
                stock.__dict__[key] = value.copy() if isinstance(value, (dict, list)) \
                    else value
        return stock


# It holds only torch's parameters and plain attributes: safe for torch.load's
# weights_only unpickler, which refuses classes not registered like this.
torch.serialization.add_safe_globals([RNN])


def patch(module: torch.nn.Module, backend: str | None = None) -> torch.nn.Module:
    """Make every ``torch.nn.RNN`` in a model an :class:`RNN`, in place.

    Each module whose type is exactly ``torch.nn.RNN`` (the model itself included) is
    converted in place: it keeps its identity, its Parameter objects, hooks, device,
    dtype and training mode, so optimizers, schedulers and references created before
    the call keep working. Subclasses of ``torch.nn.RNN`` are left alone (their own
    ``forward`` may differ).

    Parameters
    ----------
    module : torch.nn.Module
        A model, or an ``nn.RNN`` itself.
    backend : {None, "cython", "numpy", "torch"}
        The :attr:`RNN.backend` given to each converted module.

    Returns
    -------
    torch.nn.Module
        ``module`` itself.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> model = torch.nn.Sequential(torch.nn.RNN(4, 8))
    >>> rnncore.torch.patch(model)[0].__class__.__name__
    'RNN'
    >>> isinstance(model[0], rnncore.torch.RNN)
    True
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}; got {backend!r}")
    for m in module.modules():
        if type(m) is torch.nn.RNN:
            m.__class__ = RNN
            m.backend = backend
    return module
