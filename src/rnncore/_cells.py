"""The cells as plug-ins of the layer walker (:mod:`rnncore.functional`).

The walker owns everything a cell does not change: validation, layers, directions,
lengths, the output of a bidirectional layer, h_n, the record, threads and ∂x. A cell
contributes only

* its parameter layout (``_params.param_shapes``) and the weights of one layer-direction
  built from the mapping (:meth:`weights`),
* one layer-direction forward and backward, which call the backend's functions for the
  cell (the reference: ``reference.py``, ``cells/lstm.py``, ``cells/gru.py``; the kernels:
  ``_kernels``), and
* what those save for backward besides the hidden states, and which of it are states
  with a final value (LSTM's cell state c).

Every backward returns ``delta`` (T, B, G·H), the gradient of the input-side
pre-activations, so that ∂x = delta · W_ih is one product for every cell.
"""
from __future__ import annotations

import numpy as np

from . import _parallel

__all__ = ["CELL_TYPES"]


class _Cell:
    """The walker's view of a cell; see the module docstring."""

    name = ""
    n_states = 1                       # h, or h and c
    functions = ("", "")               # the backend's forward and backward

    def implemented_by(self, module) -> bool:
        return all(hasattr(module, f) for f in self.functions)

    def weights(self, plan, arrays, layer: int, snapshot: bool) -> list[tuple]:
        """The weights of each direction of one layer, C-contiguous (private copies
        with ``snapshot``), in the order the backend's functions take them."""
        ws = []
        for positions in plan.layers[layer]:
            ws.append(self._direction_weights(plan, [
                None if i is None else
                arrays[i].copy() if snapshot else np.ascontiguousarray(arrays[i])
                for i in positions]))
        return ws

    def seqs(self, hs, saved) -> tuple:
        """The state sequences (T+1, B, ·) whose final values are returned: (hs,)."""
        return (hs,)


class _Elman(_Cell):
    name = "rnn"
    functions = ("layer_forward", "layer_backward")

    def weights(self, plan, arrays, layer, snapshot):
        # the hot path of a tiny call: no generic lists
        return [self.direction_weights(plan, arrays, positions, snapshot)
                for positions in plan.layers[layer]]

    @staticmethod
    def direction_weights(plan, arrays, positions, snapshot):
        """(w_ih, w_hh, b) of one layer-direction whose parameters sit at ``positions``
        of ``arrays``: C-ordered (private copies if ``snapshot``), b = b_ih + b_hh."""
        i_ih, i_hh, i_bih, i_bhh, _ = positions
        if snapshot:
            w_ih, w_hh = arrays[i_ih].copy(), arrays[i_hh].copy()      # C order
        else:
            w_ih = np.ascontiguousarray(arrays[i_ih])
            w_hh = np.ascontiguousarray(arrays[i_hh])
        b = plan.zero_bias if i_bih is None else arrays[i_bih] + arrays[i_bhh]
        return w_ih, w_hh, b

    def forward(self, module, parts, x, w, s0, lengths, reverse, relu):
        if parts > 1:
            return _parallel.forward_direction(module, parts, x, *w, s0[0], lengths,
                                               reverse, relu), ()
        return module.layer_forward(x, *w, s0[0], lengths, reverse, relu), ()

    def backward(self, module, parts, x, w, hs, saved, dy, ds_n, lengths, reverse, relu):
        if parts > 1:
            dh0, dw_ih, dw_hh, db, delta = _parallel.backward_direction(
                module, parts, x, w[0], w[1], hs, dy, ds_n[0], lengths, reverse, relu)
        else:
            dh0, dw_ih, dw_hh, db, delta = module.layer_backward(
                x, w[0], w[1], hs, dy, ds_n[0], lengths, reverse, relu)
        return (dh0,), (dw_ih, dw_hh, db, None, None), delta


class _LSTM(_Cell):
    name = "lstm"
    n_states = 2
    functions = ("lstm_layer_forward", "lstm_layer_backward")

    def _direction_weights(self, plan, w):
        w_ih, w_hh, b_ih, b_hh, w_hr = w
        return w_ih, w_hh, plan.zero_bias if b_ih is None else b_ih + b_hh, w_hr

    def forward(self, module, parts, x, w, s0, lengths, reverse, relu):
        hs, cs, gates = module.lstm_layer_forward(x, *w, s0[0], s0[1], lengths, reverse)
        return hs, (cs, gates)

    def seqs(self, hs, saved):
        return hs, saved[0]

    def backward(self, module, parts, x, w, hs, saved, dy, ds_n, lengths, reverse, relu):
        w_ih, w_hh, _, w_hr = w
        dh0, dc0, dw_ih, dw_hh, db, dw_hr, delta = module.lstm_layer_backward(
            x, w_ih, w_hh, w_hr, hs, saved[0], saved[1], dy, ds_n[0], ds_n[1], lengths,
            reverse)
        return (dh0, dc0), (dw_ih, dw_hh, db, None, dw_hr), delta


class _GRU(_Cell):
    name = "gru"
    functions = ("gru_layer_forward", "gru_layer_backward")

    def _direction_weights(self, plan, w):
        w_ih, w_hh, b_ih, b_hh, _ = w
        if b_ih is None:
            b_ih = b_hh = plan.zero_bias
        return w_ih, w_hh, b_ih, b_hh

    def forward(self, module, parts, x, w, s0, lengths, reverse, relu):
        hs, saved = module.gru_layer_forward(x, *w, s0[0], lengths, reverse)
        return hs, (saved,)

    def backward(self, module, parts, x, w, hs, saved, dy, ds_n, lengths, reverse, relu):
        dh0, dw_ih, dw_hh, db_ih, db_hh, delta = module.gru_layer_backward(
            x, w[0], w[1], hs, saved[0], dy, ds_n[0], lengths, reverse)
        return (dh0,), (dw_ih, dw_hh, db_ih, db_hh, None), delta


CELL_TYPES = {"rnn": _Elman(), "lstm": _LSTM(), "gru": _GRU()}
