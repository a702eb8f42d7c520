"""Opening a stream: ``rnn.stream()`` for :class:`rnncore.RNN`, :class:`rnncore.LSTM`
and :class:`rnncore.GRU`.

This module checks what the user gave (the model, ``batch_size``, ``h0``) in the user's
terms, takes a private copy of each layer's weights in the order the stream's kernel
packs them, and hands them to :class:`rnncore._streaming.Stream`, which packs them and
runs every later call. SPEC.md, "Streaming", is the contract.
"""
from __future__ import annotations

import numpy as np

from ._cells import CELL_TYPES
from ._inputs import read_states
from ._params import read_params

__all__ = ["open_stream"]


def _kernels():
    """The compiled kernels (_kernels, _streaming), or a RuntimeError saying what to
    build."""
    try:
        import scipy_openblas32  # noqa: F401  (loads the OpenBLAS the kernels link against)

        from . import _kernels, _streaming
    except ImportError as exc:
        raise RuntimeError("streaming needs rnncore's compiled kernels, which are not "
                           "built: python setup.py build_ext --inplace") from exc
    return _kernels, _streaming


def _layer_weights(cell: str, ws: tuple) -> tuple:
    """One layer's weights as the stream takes them: (w_ih, w_hh, b1, b2, w_hr)."""
    if cell == "rnn":
        w_ih, w_hh, b = ws
        return w_ih, w_hh, b, b, None
    if cell == "lstm":
        w_ih, w_hh, b, w_hr = ws
        return w_ih, w_hh, b, b, w_hr
    w_ih, w_hh, b_ih, b_hh = ws
    return w_ih, w_hh, b_ih, b_hh, None


def open_stream(rnn, batch_size: int = 1, h0=None):
    """A stream over ``rnn``'s current weights; see :meth:`rnncore.RNN.stream`.

    Parameters
    ----------
    rnn : rnncore.RNN, rnncore.LSTM or rnncore.GRU
        Unidirectional.
    batch_size : int
        B >= 1, the rows stepped together.
    h0 : array_like, shape (L, B, W) (or (L, W) when B = 1), optional
        The initial state, zeros when omitted; for an LSTM a pair (h0, c0), c0
        (L, B, H).

    Returns
    -------
    rnncore._streaming.Stream
    """
    if rnn.bidirectional:
        raise ValueError(
            f"stream() needs a unidirectional model: the reverse direction of a "
            f"bidirectional layer starts from the end of the sequence, which a stream has "
            f"not seen yet; got {type(rnn).__name__} with bidirectional=True")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an integer; got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    B = int(batch_size)
    kernels, streaming = _kernels()
    cell = rnn._cell
    plan, arrays = read_params(rnn.params, cell)
    cfg = plan.cfg
    cell_type = CELL_TYPES[cell]
    # private copies (snapshot=True): the stream never sees later changes to params
    layers = [_layer_weights(cell, cell_type.weights(plan, arrays, layer, True)[0])
              for layer in range(cfg.num_layers)]
    if h0 is None:
        states = [np.zeros((cfg.num_layers, B, w), cfg.dtype)
                  for w in ((cfg.out_size, cfg.hidden_size) if cell == "lstm"
                            else (cfg.hidden_size,))]
    else:
        first = h0[0] if cell == "lstm" and isinstance(h0, (tuple, list)) else h0
        unbatched = B == 1 and np.ndim(first) == 2
        states = [np.array(s, order="C") for s in
                  read_states(("h0", "c0"), h0, cfg, B, unbatched, allow_none=False)]
    return streaming.Stream(cell, layers, B, rnn.nonlinearity == "relu", rnn.batch_first,
                            states[0], states[1] if cell == "lstm" else None,
                            kernels.ISAS.index(kernels.isa()),
                            kernels.whole_sequence_gemm() == "rnncore")
