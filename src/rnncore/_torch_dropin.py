"""What the drop-ins of :mod:`rnncore.torch` share: one autograd Function, one
PackedSequence path and one ``forward``, each parameterised by the cell.

:class:`DropIn` is the mixin of ``rnncore.torch.RNN``, ``LSTM`` and ``GRU``: it comes
before the torch class in their bases, so that ``super().forward`` is torch's own. A
subclass names its cell (``_cell``: "rnn", "lstm", "gru") and the torch class it
replaces (``_stock``). The rule that decides where a call runs is in
:mod:`rnncore._torch_rule`. Imported only by :mod:`rnncore.torch` (this module imports
torch).
"""
from __future__ import annotations

import operator
import warnings

import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from . import functional
from ._torch_rule import PLAN_ATTR, _plan, _torch_reason, packed_layout

BACKENDS = (None, "torch") + functional.backends()
_requires_grad = operator.attrgetter("requires_grad")


def _array(t):
    """A tensor's values as an ndarray sharing its memory, or None for None (detached
    first only if it requires grad: ``numpy()`` refuses it then)."""
    if t is None:
        return None
    return t.detach().numpy() if t.requires_grad else t.numpy()


def _grad_array(t):
    """An incoming gradient as an ndarray (a negative view resolved), or None."""
    return None if t is None else t.detach().resolve_neg().numpy()


class _CellFunction(torch.autograd.Function):
    """output, h_n (and LSTM's c_n) = cell network(x, h0, c0; weights), on rnncore.

    ``forward(ctx, x, h0, c0, call, *weights)``: ``c0`` is None except for an LSTM;
    ``call`` is ``(names, cell, nonlinearity, batch_first, lengths, backend, arrays,
    packed)``, ``names`` the parameter keys of ``weights``, ``arrays`` the weights as
    NumPy views by those keys (kept by the module's plan between calls) and ``packed``
    None, or a PackedSequence's :class:`~rnncore._torch_rule.PackedLayout`: then ``x``
    is its data (N, K) and the output is (N, ·) in the same order, the padding done
    here, in NumPy, around the computation. Returns ``(output, h_n)``, or ``(output,
    h_n, c_n)`` for an LSTM; backward receives one gradient per output, None for an
    output that did not contribute to the loss.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, call, *weights):
        names, cell, nonlinearity, batch_first, lengths, backend, arrays, packed = call
        lstm = cell == "lstm"
        if lstm:
            hx = None if h0 is None else (_array(h0), _array(c0))
        else:
            hx = _array(h0)
        x_array = _array(x)
        y, h_n, record = functional.forward(
            x_array if packed is None else packed.pad(x_array), arrays, hx, lengths,
            cell=cell, nonlinearity=nonlinearity, batch_first=batch_first,
            backend=backend, snapshot_weights=False)
        if packed is not None:
            y = packed.unpad(y)
        ctx.names = names
        ctx.lstm = lstm
        ctx.packed = packed
        # x and the weights are saved only so that autograd detects in-place changes
        # to them between forward and backward (the record shares their memory: no
        # snapshot of the weights is needed, their version counters guard them). The
        # record rides on an empty tensor saved with them, so that autograd frees it
        # with the saved tensors once backward has run (unless retain_graph), as it
        # frees stock torch's; held by ctx, it would live as long as the outputs.
        anchor = x.new_empty(0)
        anchor.rnncore_record = record
        ctx.save_for_backward(x, *weights, anchor)
        ctx.set_materialize_grads(False)
        states = h_n if lstm else (h_n,)
        return (torch.from_numpy(y), *[torch.from_numpy(s) for s in states])

    @staticmethod
    def backward(ctx, dy, *d_states):
        if torch.is_grad_enabled():
            # create_graph=True: the gradients get a grad_fn that raises if they are
            # differentiated (once_differentiable's). Otherwise (autograd runs backward
            # with grad mode off) once_differentiable would only wrap the call in
            # no_grad and return its result: the call is made directly.
            return _backward_once(ctx, dy, *d_states)
        return _backward(ctx, dy, *d_states)


def _backward(ctx, dy, *d_states):
    """:meth:`_CellFunction.backward` (one gradient per input of ``forward``)."""
    # raises if x or a weight was modified in place since forward
    record = ctx.saved_tensors[-1].rnncore_record
    need = ctx.needs_input_grad
    if ctx.lstm:
        dh_n = None if d_states == (None, None) else tuple(map(_grad_array, d_states))
    else:
        dh_n = _grad_array(d_states[0])
    dy = _grad_array(dy)
    if ctx.packed is not None:
        dy = None if dy is None else ctx.packed.pad(dy)
    dx, dh0, grads = functional.backward(record, dy, dh_n, need_dx=need[0],
                                         need_dh0=need[1] or need[2])
    if ctx.packed is not None and dx is not None:
        dx = ctx.packed.unpad(dx)
    dh0, dc0 = dh0 if ctx.lstm and dh0 is not None else (dh0, None)
    return (None if dx is None else torch.from_numpy(dx),
            torch.from_numpy(dh0) if need[1] else None,
            torch.from_numpy(dc0) if need[2] else None,
            None,
            *[torch.from_numpy(grads[name]) if need[i] else None
              for i, name in enumerate(ctx.names, 4)])


_backward_once = once_differentiable(_backward)


# _CellFunction.apply without the Python layer of torch.autograd.Function.apply: that
# layer binds default arguments (for a setup_context, which _CellFunction has not),
# dispatches to torch.func's custom_function_call under a transform (the rule sends
# such calls to torch) and unwraps every tensor argument that is a dead wrapper (a
# tensor kept from inside a finished torch.func transform), which _call does for the
# tensors a caller passes (input and hx). What remains is the C++ apply it ends in.
_apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, _CellFunction)
# (a torch without it has no such wrappers to unwrap, and its apply unwraps none)
_unwrap_if_dead = getattr(torch._C._functorch, "unwrap_if_dead", None) or (lambda t: t)


def _dropout_noise(y, p, batch_first):
    """Torch's dropout noise for a layer's output ``y``, shaped as ``y``.

    ``at::dropout`` on CPU (ATen's native/Dropout.cpp, the non-fused path):
    ``empty_like(out).bernoulli_(1 - p).div_(1 - p)``, or a zero for p = 1 with nothing
    drawn. The noise is drawn over what torch's layers hand on: the (T, B, ·) output
    (``y`` is (B, T, ·) if ``batch_first``; unbatched (T, ·)), or a PackedSequence's
    data (N, ·), which ``y`` then is.

    Parameters
    ----------
    y : Tensor, shape (T, B, W), (B, T, W) or (T, W); (N, W) packed data
    p : float
        The dropout probability, 0 < p <= 1.
    batch_first : bool
        Whether a 3-D ``y`` is (B, T, W).

    Returns
    -------
    Tensor, the shape of ``y``
    """
    if p == 1:
        return y.new_zeros(())
    if batch_first and y.dim() == 3:
        return y.new_empty(y.shape[1::-1] + y.shape[2:]).bernoulli_(1 - p).div_(
            1 - p).transpose(0, 1)
    return y.new_empty(y.shape).bernoulli_(1 - p).div_(1 - p)


class DropIn:
    """The behaviour ``rnncore.torch.RNN``, ``LSTM`` and ``GRU`` share.

    A subclass sets ``_cell`` ("rnn", "lstm" or "gru") and ``_stock`` (the
    ``torch.nn`` class it derives from, listed after this mixin in its bases).
    """

    _cell = "rnn"
    _stock = torch.nn.RNN
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
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {value!r}")
        self.__dict__["_rnncore_backend"] = value

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cpu() and the like replace the parameters: the kept plan
        # would hold the old ones (and their memory) until the next call
        self.__dict__.pop(PLAN_ATTR, None)
        return super()._apply(fn, recurse)

    def __getstate__(self):
        """The module's state for pickling and ``copy.deepcopy``, without the kept plan
        (a copy makes its own at its first call).

        Returns
        -------
        dict
        """
        state = super().__getstate__()
        if PLAN_ATTR in state:
            state = {k: v for k, v in state.items() if k != PLAN_ATTR}
        return state

    def _weights(self):
        """The weight tensors in ``_flat_weights_names`` order (functional_call aware)."""
        params = self._parameters
        try:
            return [params[name] for name in self._flat_weights_names]
        except KeyError:  # e.g. reparametrised by torch.nn.utils.parametrize
            return [getattr(self, name, None) for name in self._flat_weights_names]

    def forward(self, input, hx=None):
        """Run the network; see the class docstring for inputs, outputs and the rule.

        Parameters
        ----------
        input : Tensor, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K); or a
            ``PackedSequence``
        hx : Tensor, shape (L*D, B, H) or (L*D, H), optional
            For an LSTM the pair ``(h0, c0)``, h0 P wide with a projection.

        Returns
        -------
        output : Tensor, shape (T, B, D*H), (B, T, D*H) or (T, D*H); or PackedSequence
            D*P wide for an LSTM with a projection.
        h_n : Tensor, shape (L*D, B, H) or (L*D, H)
            For an LSTM the pair ``(h_n, c_n)``.
        """
        if torch.compiler.is_compiling():
            # Dynamo traces this call (torch.compile). As for stock modules, only with
            # torch._dynamo.config.allow_rnn does torch's implementation go into the
            # graph; otherwise the call runs eagerly, outside the graph, on rnncore
            # (disable: Dynamo would otherwise trace rnncore's NumPy code, and fail).
            if torch._dynamo.config.allow_rnn:
                return super().forward(input, hx)
            return torch.compiler.disable(DropIn._forward)(self, input, hx)
        return self._forward(input, hx)

    def _forward(self, input, hx):
        """``forward`` outside Dynamo: the rule, then rnncore or torch's own."""
        weights = self._weights()
        plan = _plan(self, weights)
        if _torch_reason(self, input, hx, weights, plan) is not None:
            return super().forward(input, hx)
        # From here on the call runs on rnncore, and any error it raises propagates.
        return self._run(input, hx, weights, plan)

    def _run(self, input, hx, weights, plan):
        """``forward`` on rnncore, for a call the rule let through (``plan``: the
        module's :class:`~rnncore._torch_rule._Plan`, for the weights' NumPy views)."""
        lstm = self._cell == "lstm"
        if hx is None:
            h0 = c0 = None
        elif lstm:
            h0, c0 = hx
        else:
            h0, c0 = hx, None
        packed = isinstance(input, PackedSequence)
        x = input.data if packed else input
        batch_first = self.batch_first
        lengths = layout = None
        if packed:
            layout = packed_layout(input)      # the rule's (well formed)
            lengths, batch_first = layout.lengths, False
        if self.training and self.dropout > 0 and self.num_layers > 1:
            y, states = self._layer_by_layer(x, h0, c0, weights, plan, lengths,
                                             batch_first, layout)
        else:
            y, states = self._call(x, h0, c0, plan.names, weights, plan.arrays(), plan,
                                   lengths, batch_first, layout)
        if packed:
            y = PackedSequence(y, input.batch_sizes, input.sorted_indices,
                               input.unsorted_indices)
        return y, (tuple(states) if lstm else states[0])

    def _call(self, x, h0, c0, names, weights, arrays, plan, lengths, batch_first,
              packed):
        """One call of rnncore over the layers whose parameters ``names`` lists
        (``weights`` the tensors, ``arrays`` their NumPy views by name, ``plan`` the
        module's); ``packed`` a :class:`~rnncore._torch_rule.PackedLayout` when ``x`` is
        a PackedSequence's data (the output is then packed data too).

        Through :class:`_CellFunction` when autograd records the call, else straight
        to :func:`rnncore.functional.forward`. Returns ``(output, [h_n])``, or
        ``(output, [h_n, c_n])`` for an LSTM.
        """
        cell = self._cell
        call = (names, cell, plan.nonlinearity, batch_first, lengths,
                self._rnncore_backend, arrays, packed)
        if torch.is_grad_enabled() and (
                x.requires_grad or any(map(_requires_grad, weights))
                or (h0 is not None and (h0.requires_grad
                                        or (c0 is not None and c0.requires_grad)))):
            y, *states = _apply(_unwrap_if_dead(x),
                                None if h0 is None else _unwrap_if_dead(h0),
                                None if c0 is None else _unwrap_if_dead(c0),
                                call, *weights)
            return y, states
        lstm = cell == "lstm"
        states0 = (_array(h0), _array(c0)) if lstm and h0 is not None else _array(h0)
        x_array = _array(x)
        y, h_n, _ = functional.forward(
            x_array if packed is None else packed.pad(x_array), arrays, states0, lengths,
            cell=cell, nonlinearity=call[2], batch_first=batch_first, backend=call[5],
            snapshot_weights=False)
        if packed is not None:
            y = packed.unpad(y)
        return torch.from_numpy(y), [torch.from_numpy(s) for s in
                                     (h_n if lstm else (h_n,))]

    def _layer_by_layer(self, x, h0, c0, weights, plan, lengths, batch_first, packed):
        """The layers one call each, with torch's dropout between them (training mode).

        As stock torch on CPU (its native path and oneDNN's alike): the output of every
        layer but the last is multiplied by ``noise = empty_like(out).bernoulli_(1 - p)
        .div_(1 - p)``, drawn from torch's default generator, layer by layer, over the
        output in (T, B, ·) order, or over the packed data (N, ·) for a PackedSequence
        (``packed`` its :class:`~rnncore._torch_rule.PackedLayout`: each layer takes and
        gives packed data); p = 1 draws nothing and multiplies by 0. Autograd
        differentiates the product with the same noise.
        """
        L, D = self.num_layers, 2 if self.bidirectional else 1
        per = len(weights) // L
        finals = []
        for layer in range(L):
            rows = slice(layer * D, (layer + 1) * D)
            arrays = plan.layer_arrays(layer, per)
            y, states = self._call(
                x, None if h0 is None else h0[rows], None if c0 is None else c0[rows],
                list(arrays), weights[layer * per:(layer + 1) * per], arrays, plan,
                lengths, batch_first, packed)
            finals.append(states)
            if layer < L - 1:
                x = y * _dropout_noise(y, self.dropout, batch_first)
        return y, [torch.cat(parts, dim=0) for parts in zip(*finals)]

    def __setstate__(self, state):
        """Restore a pickled module (``torch.load``, ``copy.deepcopy``), checking its
        backend.

        Parameters
        ----------
        state : dict
            The module's ``__dict__`` as pickled.
        """
        super().__setstate__(state)
        self.backend = self.__dict__.pop("_rnncore_backend", None)

    def __prepare_scriptable__(self):
        """The stock torch module holding the same Parameter objects, for
        ``torch.jit.script``.

        Returns
        -------
        torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU

        Warns
        -----
        UserWarning
            Always: the scripted model runs torch's implementation, and
            ``torch.jit.script`` puts the stock module in place of this one in the eager
            model that holds it as well.
        """
        name = type(self).__name__
        warnings.warn(
            f"torch.jit.script compiles torch's implementation of rnncore.torch.{name}: "
            f"the scripted model runs a stock torch.nn.{name} holding the same "
            f"Parameters, and torch.jit.script also puts that stock module in place of "
            f"the drop-in in the eager model holding it, which then no longer runs on "
            f"rnncore (rnncore.torch.patch(model) converts it back)",
            UserWarning, stacklevel=2)
        stock = self._stock.__new__(self._stock)
        for key, value in self.__dict__.items():
            if key not in ("_rnncore_backend", PLAN_ATTR):
                stock.__dict__[key] = value.copy() if isinstance(value, (dict, list)) \
                    else value
        return stock
