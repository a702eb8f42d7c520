"""Drop-in ``torch.nn.RNN``, ``LSTM`` and ``GRU`` whose CPU forward and backward run on
rnncore's kernels.

``rnncore.torch.RNN``, ``LSTM`` and ``GRU`` are subclasses of their ``torch.nn``
namesakes: the same constructors, parameters, ``state_dict``, inputs (tensor,
``batch_first``, unbatched, ``PackedSequence``) and outputs. On CPU float32/float64
tensors their forward goes through one ``torch.autograd.Function`` that calls
:func:`rnncore.functional.forward` and, on ``loss.backward()``,
:func:`rnncore.functional.backward`; tensors and arrays share memory both ways
(``t.detach().numpy()``, ``torch.from_numpy``). Everything else runs torch's own
implementation (see a class docstring for the rule), and :func:`explain` says which
of the two a call would take, and why. :func:`patch` converts the ``nn.RNN``,
``nn.LSTM`` and ``nn.GRU`` modules of an existing model in place and reports what it
converted and what it left; :func:`unpatch` turns the drop-ins back into stock modules
(before pickling a whole model for a machine without rnncore).

Importing this module registers the three classes with
``torch.serialization.add_safe_globals``, so a whole model saved with ``torch.save``
loads with ``torch.load(f)`` (``weights_only=True``, torch's default) once the model's
own classes are allowed as well.

PyTorch is optional for rnncore: only this module imports it (with what the drop-ins
share, in ``rnncore._torch_dropin``, the rule they decide by, in
``rnncore._torch_rule``, and patch/unpatch/explain, in ``rnncore._torch_patch``).
"""
from __future__ import annotations

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "rnncore.torch needs PyTorch, which is not installed. Install it with "
        "`pip install torch` (a cpu-only build is enough).") from exc

import textwrap

from . import functional  # noqa: F401  (the tests spy on rnncore.torch.functional)
from ._torch_dropin import DropIn
from ._torch_patch import Explanation, PatchEntry, _register, explain, patch, unpatch
from ._torch_rule import RULE

__all__ = ["RNN", "LSTM", "GRU", "patch", "unpatch", "explain", "PatchEntry",
           "Explanation"]

_NOTES = """\
**When torch's implementation runs.** ``forward`` decides before computing
anything: rnncore computes the forward pass (and, through autograd, the backward
pass) when all of these hold; otherwise ``forward`` runs torch's own ``forward``
unchanged:

{rule}
So every input torch rejects goes to torch, which raises its own exception and
message. Once a call runs on rnncore, an error raised there propagates: nothing
is retried on torch.

``torch.compile`` leaves the call out of its graph, as it does stock modules, and
it runs eagerly on rnncore; with ``torch._dynamo.config.allow_rnn`` torch's
implementation is traced into the graph instead. ``torch.jit.script`` compiles
torch's implementation: the module turns itself into the stock torch module holding
the same Parameter objects, and warns, since ``torch.jit.script`` also puts that
stock module in place of the drop-in in the eager parent model.

**Gradients** are exact first derivatives; ∂L/∂input is computed only when the
input requires grad, and tensors that do not require grad get none. Differentiating
the backward pass (``create_graph=True`` followed by a gradient of a gradient, or
``torch.autograd.gradgradcheck``) raises ``RuntimeError: trying to differentiate
twice a function that was marked with @once_differentiable``; use
``backend="torch"`` for higher-order derivatives.
"""


def _with_notes(cls):
    """Put the shared Notes (the rule, scripting, gradients) where ``{notes}`` is."""
    notes = textwrap.indent(_NOTES.format(rule=RULE), "    ").strip()
    cls.__doc__ = cls.__doc__.replace("{notes}", notes)
    return cls


@_with_notes
class RNN(DropIn, torch.nn.RNN):
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
        Dropout on the output of every layer but the last, in training mode, as
        torch's (the same noise from torch's generator), on rnncore.
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
    {notes}

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

    _cell = "rnn"
    _stock = torch.nn.RNN


@_with_notes
class LSTM(DropIn, torch.nn.LSTM):
    """``torch.nn.LSTM`` with its CPU forward and backward computed by rnncore.

    Constructed, used, saved and loaded exactly as ``torch.nn.LSTM``; its parameters
    (``weight_ih_l0`` (4H, K), ``weight_hh_l0`` (4H, P or H), ``bias_ih_l0``,
    ``bias_hh_l0`` (4H,), ``weight_hr_l0`` (P, H) with a projection, gates i, f, g, o)
    and ``state_dict`` are torch's.

    Parameters
    ----------
    input_size, hidden_size : int
        K and H.
    num_layers : int, default 1
        L.
    bias : bool, default True
    batch_first : bool, default False
        Input and output (B, T, ...) instead of (T, B, ...); ignored for unbatched input.
    dropout : float, default 0.0
        Dropout on the output of every layer but the last, in training mode, as
        torch's (the same noise from torch's generator), on rnncore.
    bidirectional : bool, default False
        D = 2 if True else 1.
    proj_size : int, default 0
        P > 0 (P < H): each h_t is projected to P values by ``weight_hr``; the output
        and h are P wide.
    device, dtype : optional
        As for ``torch.nn.LSTM``.
    backend : {None, "cython", "numpy", "torch"}, keyword only
        None uses rnncore's fastest backend (:func:`rnncore.backends`); "torch" always
        runs torch's own implementation. Also settable later as the attribute
        ``lstm.backend``.

    Attributes
    ----------
    backend : {None, "cython", "numpy", "torch"}
        See above; may be changed at any time.

    Notes
    -----
    {notes}

    **Inputs and outputs** are those of ``torch.nn.LSTM``: ``lstm(input, hx=None)``,
    ``input`` (T, B, K), (B, T, K) if ``batch_first``, (T, K) unbatched, or a
    ``PackedSequence``; ``hx`` the pair ``(h0, c0)``, h0 (L*D, B, P or H), c0
    (L*D, B, H) ((L*D, ·) unbatched); returns ``output`` (T, B, D*(P or H)) (or
    (B, T, ·), (T, ·), or a ``PackedSequence`` with the input's ``batch_sizes``,
    ``sorted_indices`` and ``unsorted_indices``) and the pair ``(h_n, c_n)``, shaped as
    ``(h0, c0)``, in the input's batch order. A loss may use any of output, h_n and c_n.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> lstm = rnncore.torch.LSTM(8, 16, num_layers=2, proj_size=4)
    >>> x = torch.randn(50, 3, 8, requires_grad=True)           # (T, B, K)
    >>> y, (h_n, c_n) = lstm(x)
    >>> y.shape, h_n.shape, c_n.shape
    (torch.Size([50, 3, 4]), torch.Size([2, 3, 4]), torch.Size([2, 3, 16]))
    >>> c_n.sum().backward()
    >>> lstm.weight_hr_l0.grad.shape
    torch.Size([4, 16])
    """

    _cell = "lstm"
    _stock = torch.nn.LSTM


@_with_notes
class GRU(DropIn, torch.nn.GRU):
    """``torch.nn.GRU`` with its CPU forward and backward computed by rnncore.

    Constructed, used, saved and loaded exactly as ``torch.nn.GRU``; its parameters
    (``weight_ih_l0`` (3H, K), ``weight_hh_l0`` (3H, H), ``bias_ih_l0``,
    ``bias_hh_l0`` (3H,), gates r, z, n) and ``state_dict`` are torch's.

    Parameters
    ----------
    input_size, hidden_size : int
        K and H.
    num_layers : int, default 1
        L.
    bias : bool, default True
    batch_first : bool, default False
        Input and output (B, T, ...) instead of (T, B, ...); ignored for unbatched input.
    dropout : float, default 0.0
        Dropout on the output of every layer but the last, in training mode, as
        torch's (the same noise from torch's generator), on rnncore.
    bidirectional : bool, default False
        D = 2 if True else 1.
    device, dtype : optional
        As for ``torch.nn.GRU``.
    backend : {None, "cython", "numpy", "torch"}, keyword only
        None uses rnncore's fastest backend (:func:`rnncore.backends`); "torch" always
        runs torch's own implementation. Also settable later as the attribute
        ``gru.backend``.

    Attributes
    ----------
    backend : {None, "cython", "numpy", "torch"}
        See above; may be changed at any time.

    Notes
    -----
    {notes}

    **Inputs and outputs** are those of ``torch.nn.GRU``: ``gru(input, hx=None)``,
    ``input`` (T, B, K), (B, T, K) if ``batch_first``, (T, K) unbatched, or a
    ``PackedSequence``; ``hx`` (L*D, B, H) or (L*D, H); returns ``output`` (T, B, D*H)
    (or (B, T, D*H), (T, D*H), or a ``PackedSequence`` with the input's
    ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``) and ``h_n``
    (L*D, B, H) or (L*D, H), in the input's batch order.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> gru = rnncore.torch.GRU(8, 16, bidirectional=True, batch_first=True)
    >>> y, h_n = gru(torch.randn(4, 50, 8))                     # (B, T, K)
    >>> y.shape, h_n.shape
    (torch.Size([4, 50, 32]), torch.Size([2, 4, 16]))
    """

    _cell = "gru"
    _stock = torch.nn.GRU


# They hold only torch's parameters and plain attributes: safe for torch.load's
# weights_only unpickler, which refuses classes not registered like this.
torch.serialization.add_safe_globals([RNN, LSTM, GRU])

_register(RNN, LSTM, GRU)
