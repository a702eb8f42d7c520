"""Converting a model's torch RNN modules to the drop-ins and back, and saying where a
call runs: :func:`patch`, :func:`unpatch` and :func:`explain`, re-exported by
:mod:`rnncore.torch` (which registers its drop-in classes here with :func:`_register`).
Imported only by :mod:`rnncore.torch` (this module imports torch).
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from ._torch_dropin import BACKENDS, DropIn
from ._torch_rule import _torch_reason

logger = logging.getLogger("rnncore.torch")

_DROP_INS: dict[type, type] = {}       # torch.nn.RNN -> rnncore.torch.RNN, ...


def _register(*drop_ins: type) -> None:
    """Record the drop-in classes, each by the torch class it replaces (``_stock``)."""
    _DROP_INS.update({cls._stock: cls for cls in drop_ins})


class PatchEntry(NamedTuple):
    """One RNN module of a model, as :func:`patch` or :func:`unpatch` found it.

    Attributes
    ----------
    name : str
        Its qualified name in the model (``"encoder.0"``); ``""`` for the model itself.
    old : type
        Its class before the call.
    new : type or None
        Its class after the call, or None if it was left as it was.
    reason : str
        What was done, or why it was left.
    """

    name: str
    old: type
    new: type | None
    reason: str


class Explanation(NamedTuple):
    """Where a call of a drop-in (or a torch RNN module) runs, and why.

    Attributes
    ----------
    path : {"rnncore", "torch"}
        "rnncore": rnncore computes the call (and its backward); "torch": torch's own
        implementation does.
    reason : str
        The condition of the rule that decided it, in words.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _qualified(cls: type) -> str:
    """``torch.nn.LSTM``, ``rnncore.torch.GRU``: a class as users import it."""
    if cls.__module__.startswith("torch.nn.modules."):
        return f"torch.nn.{cls.__name__}"
    if cls in _DROP_INS.values():
        return f"rnncore.torch.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _drop_in_base(cls: type) -> type:
    """The drop-in class that ``cls`` (a subclass of one) derives from."""
    return next(c for c in cls.__mro__ if c in _DROP_INS.values())


def _rnn_modules(module: torch.nn.Module):
    """(name, module) for every recurrent module of ``module``, the model included."""
    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, (torch.nn.RNNBase, torch.nn.RNNCellBase))]


def _why_left(m: torch.nn.Module) -> str:
    """Why :func:`patch` leaves a recurrent module that is not exactly a torch class."""
    cls = type(m)
    if cls in _DROP_INS.values():
        return f"already an {_qualified(cls)} (its backend is left as it is)"
    if isinstance(m, DropIn):
        return f"a subclass of {_qualified(_drop_in_base(cls))}: left as it is"
    if isinstance(m, torch.nn.RNNCellBase):
        return (f"a single-step cell ({_qualified(cls)}): rnncore.torch has drop-ins for "
                "whole sequences only (torch.nn.RNN, LSTM, GRU)")
    for stock in _DROP_INS:
        if isinstance(m, stock):
            return (f"a subclass of {_qualified(stock)}: its own forward may differ "
                    "from torch's")
    return "not a torch.nn.RNN, LSTM or GRU"


def _note_on_parameters(m: torch.nn.Module) -> str:
    """What a converted module's parameters say about where its calls will run."""
    params = list(m.parameters())
    odd = [p for p in params
           if p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64)]
    if not odd:
        return "converted"
    return (f"converted, but its parameters are {odd[0].device.type} {odd[0].dtype}: its "
            "calls run torch's implementation (rnncore.torch.explain says why)")


def _log(what: str, entries: list[PatchEntry]) -> None:
    """One INFO line: what ``what`` (patch/unpatch) converted and what it left."""
    done = [e for e in entries if e.new is not None]
    left = [e for e in entries if e.new is None]
    if not entries:
        logger.info("rnncore.torch.%s: no recurrent module found", what)
        return
    logger.info(
        "rnncore.torch.%s: converted %d (%s); left %d (%s)", what, len(done),
        ", ".join(f"{e.name or '<model>'}: {_qualified(e.old)} -> {_qualified(e.new)}"
                  for e in done) or "none",
        len(left),
        "; ".join(f"{e.name or '<model>'}: {_qualified(e.old)}, {e.reason}"
                  for e in left) or "none")


def patch(module: torch.nn.Module, backend: str | None = None, *,
          return_report: bool = False):
    """Make every ``torch.nn.RNN``, ``LSTM`` and ``GRU`` in a model a drop-in, in place.

    Each module whose type is exactly ``torch.nn.RNN``, ``torch.nn.LSTM`` or
    ``torch.nn.GRU`` (the model itself included) becomes an ``rnncore.torch.RNN``,
    ``LSTM`` or ``GRU`` in place: it keeps its identity, its Parameter objects, hooks,
    device, dtype and training mode, so optimizers, schedulers and references created
    before the call keep working. Other recurrent modules are left, each with its reason:
    subclasses of the torch classes (their own ``forward`` may differ), modules already
    converted (their backend unchanged), single-step cells (``nn.LSTMCell`` …). One line
    at INFO on the ``"rnncore.torch"`` logger says what was converted and what was left.

    Parameters
    ----------
    module : torch.nn.Module
        A model, or an ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` itself.
    backend : {None, "cython", "numpy", "torch"}
        The ``backend`` given to each converted module.
    return_report : bool, default False
        Also return the report.

    Returns
    -------
    module : torch.nn.Module
        ``module`` itself.
    report : list of PatchEntry
        Only if ``return_report``: one ``(name, old, new, reason)`` per recurrent
        module of the model, in ``named_modules`` order; ``new`` is None for a module
        left as it was.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> model = torch.nn.Sequential(torch.nn.RNN(4, 8), torch.nn.LSTMCell(8, 8))
    >>> model, report = rnncore.torch.patch(model, return_report=True)
    >>> [(e.name, e.new.__name__ if e.new else None) for e in report]
    [('0', 'RNN'), ('1', None)]
    >>> isinstance(model[0], rnncore.torch.RNN)
    True
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    report = []
    for name, m in _rnn_modules(module):
        old = type(m)
        drop_in = _DROP_INS.get(old)
        if drop_in is None:
            report.append(PatchEntry(name, old, None, _why_left(m)))
            continue
        m.__class__ = drop_in
        m.backend = backend
        report.append(PatchEntry(name, old, drop_in, _note_on_parameters(m)))
    _log("patch", report)
    return (module, report) if return_report else module


def unpatch(module: torch.nn.Module, *, return_report: bool = False):
    """Make every drop-in in a model its stock torch module again, in place.

    Each module whose type is exactly ``rnncore.torch.RNN``, ``LSTM`` or ``GRU`` (the
    model itself included) becomes a ``torch.nn.RNN``, ``LSTM`` or ``GRU`` holding the
    same Parameter objects, hooks and settings; its ``backend`` is dropped. A model
    unpatched before ``torch.save(model)`` pickles no rnncore class, so it loads where
    rnncore is not installed (``state_dict`` is the portable format either way). Other
    recurrent modules are left, each with its reason; one INFO line on the
    ``"rnncore.torch"`` logger says what was done.

    Parameters
    ----------
    module : torch.nn.Module
        A model, or a drop-in itself.
    return_report : bool, default False
        Also return the report.

    Returns
    -------
    module : torch.nn.Module
        ``module`` itself.
    report : list of PatchEntry
        Only if ``return_report``: as :func:`patch` returns it.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> model = rnncore.torch.patch(torch.nn.Sequential(torch.nn.GRU(4, 8)))
    >>> type(rnncore.torch.unpatch(model)[0]) is torch.nn.GRU
    True
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    stocks = {drop_in: stock for stock, drop_in in _DROP_INS.items()}
    report = []
    for name, m in _rnn_modules(module):
        old = type(m)
        stock = stocks.get(old)
        if stock is None:
            reason = (f"a subclass of {_qualified(_drop_in_base(old))}: left as it is"
                      if isinstance(m, DropIn) else "not a drop-in")
            report.append(PatchEntry(name, old, None, reason))
            continue
        m.__class__ = stock
        m.__dict__.pop("_rnncore_backend", None)
        report.append(PatchEntry(name, old, stock, "converted"))
    _log("unpatch", report)
    return (module, report) if return_report else module


def explain(module: torch.nn.Module, input, hx=None) -> Explanation:
    """Where ``module(input, hx)`` would run, rnncore or torch, and why; runs nothing.

    Applies the rule of the drop-ins (the class docstrings, docs/torch.md) to the call
    as it would be made now: the module's backend, training mode and weights, the input
    and ``hx``. For a stock torch module it says that torch runs it and whether
    :func:`patch` would convert it. The answer is for an eager call: under
    ``torch.compile`` a drop-in runs eagerly on rnncore all the same, unless
    ``torch._dynamo.config.allow_rnn`` puts torch's implementation in the graph.

    Parameters
    ----------
    module : torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
        A drop-in, or a stock module (or a subclass).
    input : Tensor, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K); or a
        ``PackedSequence``
        As the call would receive it.
    hx : Tensor or tuple of Tensor, optional
        As the call would receive it.

    Returns
    -------
    Explanation
        ``(path, reason)``: path "rnncore" or "torch"; ``str()`` gives
        ``"path: reason"``.

    Examples
    --------
    >>> import torch, rnncore.torch
    >>> lstm = rnncore.torch.LSTM(4, 8, num_layers=2, dropout=0.2)
    >>> print(rnncore.torch.explain(lstm, torch.randn(5, 3, 4)))
    rnncore: every condition of the rule holds; dropout 0.2 between layers in training mode: one rnncore call per layer, torch's noise between them
    >>> print(rnncore.torch.explain(lstm, torch.randn(5, 3, 4, dtype=torch.float16)))
    torch: the input is not a float32 or float64 CPU tensor with the strided layout
    """
    if not isinstance(module, torch.nn.RNNBase):
        raise TypeError("module must be an rnncore.torch.RNN, LSTM or GRU, or a "
                        f"torch.nn.RNN, LSTM or GRU; got {type(module).__name__}")
    if not isinstance(module, DropIn):
        if type(module) in _DROP_INS:
            return Explanation("torch", f"a stock {_qualified(type(module))}, not a "
                                        "drop-in (rnncore.torch.patch converts it)")
        return Explanation("torch", f"not a drop-in: {_why_left(module)}")
    reason = _torch_reason(module, input, hx, module._weights())
    if reason is not None:
        return Explanation("torch", reason)
    reason = "every condition of the rule holds"
    if module.training and module.dropout > 0 and module.num_layers > 1:
        reason += (f"; dropout {module.dropout:g} between layers in training mode: one "
                   "rnncore call per layer, torch's noise between them")
    return Explanation("rnncore", reason)
