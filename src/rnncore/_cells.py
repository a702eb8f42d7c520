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

A layer-direction split over threads (:func:`rnncore._parallel.forward_direction`,
``backward_direction``) runs the kernels' pieces of the same computation, which a cell
names for it: the arrays its kernels write, the input projection by ranges of steps,
the recurrences by ranges of batch rows, the weight gradients in parts. The weights of
one layer-direction ``w`` are in the order the backend's functions take them, W_ih
first and W_hh second for every cell.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

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

    def forward(self, module, parts, x, w, s0, lengths, reverse, relu, output=None,
                out=None):
        """(hs, saved) of one layer-direction, split over ``parts`` threads if > 1;
        the states of steps 0..T-1 (``hs[1:]``, or ``hs[:T]`` in reverse) copied into
        ``output`` (T, B, W) if given, by the threads in parts. ``out``, the arrays of
        :meth:`forward_arrays` (the kernels only), receives hs and saved instead of
        arrays of their own."""
        if parts > 1:
            return _parallel.forward_direction(self, module, parts, x, w, s0, lengths,
                                               reverse, relu, output, out)
        return self.run_forward_into(module, x, w, s0, lengths, reverse, relu, output,
                                     out=out)

    def writes_output(self, module) -> bool:
        """Whether the backend's forward of this cell copies each step's states into
        an output array itself (``run_forward(output=...)``), as soon as they are
        computed, rather than the walker after the whole sequence: the kernels'."""
        return getattr(module, "FORWARD_WRITES_OUTPUT", False)

    def run_forward_into(self, module, x, w, s0, lengths, reverse, relu, output, out=None,
                         rows=None, projected=False):
        """:meth:`run_forward`, the states of steps 0..T-1 of the rows run (``rows``,
        else all) also copied into ``output`` (T, B, W) if given: by the backend as it
        goes where it :meth:`writes_output`, else from hs afterwards."""
        if output is not None and self.writes_output(module):
            return self.run_forward(module, x, w, s0, lengths, reverse, relu, out=out,
                                    rows=rows, projected=projected, output=output)
        hs, saved = self.run_forward(module, x, w, s0, lengths, reverse, relu, out=out,
                                     rows=rows, projected=projected)
        _parallel._copy_rows(hs, rows or (0, hs.shape[1]), reverse, output)
        return hs, saved

    def backward(self, module, parts, x, w, hs, saved, dy, ds_n, lengths, reverse, relu,
                 dx=None):
        """(d_states0, weight gradients, delta) of one layer-direction, split over
        ``parts`` threads if > 1; ∂x = δ W_ih written into ``dx`` (T, B, K) if given
        (on the same threads)."""
        if parts > 1:
            return _parallel.backward_direction(self, module, parts, x, w, hs, saved, dy,
                                                ds_n, lengths, reverse, relu, dx)
        result = self.run_backward(module, x, w, hs, saved, dy, ds_n, lengths, reverse,
                                   relu)
        if dx is not None:
            module.input_grad(result[2], w[0], dx, False, x.shape[0] * x.shape[1])
        return result

    # -- the pieces a split layer-direction runs (the kernels only) -----------------------

    def step_work(self, w) -> int:
        """Multiply-adds of one batch row's step of the recurrence (its products)."""
        return w[1].size

    def project(self, module, x, w, out, reverse, steps, defer=False):
        """The input projection of steps [t0, t1) into the last of ``out``, the arrays
        of :meth:`forward_arrays`; with ``defer``, the kernels' ``Part`` that runs it."""
        return module.input_projection(x, w[0], out[-1], reverse, steps=steps,
                                       defer=defer)

    def forward_rows_part(self, module, x, w, s0, lengths, reverse, relu, out, rows,
                          output):
        """A callable that runs rows [rows[0], rows[1]) of the recurrence, its input
        projection already in ``out``, their states copied into ``output`` if given
        (:func:`rnncore._parallel.forward_direction`)."""
        return functools.partial(self.run_forward_into, module, x, w, s0, lengths,
                                 reverse, relu, output, out=out, rows=rows,
                                 projected=True)

    def backward_rows_part(self, module, w, hs, saved, dy, ds_n, lengths, reverse, relu,
                           g, rows):
        """A callable that runs :meth:`backward_rows`."""
        return functools.partial(self.backward_rows, module, w, hs, saved, dy, ds_n,
                                 lengths, reverse, relu, g, rows)

    def backward_weights(self, module, x, hs, reverse, g, part, defer=False):
        """Part ``(i, n)`` of the weight gradients into ``g`` (:meth:`backward_arrays`);
        with ``defer``, the kernels' ``Part`` that computes it."""
        return module.backward_weights(x, hs, g.delta, reverse, g.dw_ih, g.dw_hh, g.db,
                                       part=part, defer=defer, **self._weight_extras(g))

    def _weight_extras(self, g) -> dict:
        return {}


def _part(out, rows, projected, output=None) -> dict:
    """The kernels' arguments of a forward that runs some rows into ``out`` and copies
    its states into ``output``; none for a whole call without them (which the
    reference runs too)."""
    part = {} if out is None else {"out": out, "rows": rows, "projected": projected}
    if output is not None:
        part["y"] = output
    return part


def _empty(dtype, *shapes):
    return tuple(np.empty(s, dtype) for s in shapes)


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

    def run_forward(self, module, x, w, s0, lengths, reverse, relu, out=None, rows=None,
                    projected=False, output=None):
        return module.layer_forward(x, *w, s0[0], lengths, reverse, relu,
                                    **_part(None if out is None else out[0], rows,
                                            projected, output)), ()

    def run_backward(self, module, x, w, hs, saved, dy, ds_n, lengths, reverse, relu):
        dh0, dw_ih, dw_hh, db, delta = module.layer_backward(
            x, w[0], w[1], hs, dy, ds_n[0], lengths, reverse, relu)
        return (dh0,), (dw_ih, dw_hh, db, None, None), delta

    def forward_arrays(self, x, w):
        T, B, _ = x.shape
        return _empty(x.dtype, (T + 1, B, w[1].shape[0]))

    def backward_arrays(self, x, w, hs):
        (T, B, K), H = x.shape, w[1].shape[0]
        delta, dh0, dw_ih, dw_hh, db = _empty(x.dtype, (T, B, H), (B, H), (H, K), (H, H), H)
        return SimpleNamespace(delta=delta, dh0=dh0, dw_ih=dw_ih, dw_hh=dw_hh, db=db)

    def backward_rows(self, module, w, hs, saved, dy, ds_n, lengths, reverse, relu, g,
                      rows, defer=False):
        return module.backward_steps(w[1], hs, dy, ds_n[0], lengths, reverse, relu,
                                     g.delta, g.dh0, rows=rows, defer=defer)

    def forward_rows_part(self, module, x, w, s0, lengths, reverse, relu, out, rows,
                          output):
        # the kernels' deferred call, run without the GIL (_parallel._in_one_dispatch)
        return module.layer_forward(x, *w, s0[0], lengths, reverse, relu, out=out[0],
                                    rows=rows, projected=True, y=output, defer=True)

    def backward_rows_part(self, module, w, hs, saved, dy, ds_n, lengths, reverse, relu,
                           g, rows):
        return self.backward_rows(module, w, hs, saved, dy, ds_n, lengths, reverse, relu,
                                  g, rows, defer=True)

    def backward_result(self, g):
        return (g.dh0,), (g.dw_ih, g.dw_hh, g.db, None, None), g.delta


class _LSTM(_Cell):
    name = "lstm"
    n_states = 2
    functions = ("lstm_layer_forward", "lstm_layer_backward")

    def _direction_weights(self, plan, w):
        w_ih, w_hh, b_ih, b_hh, w_hr = w
        return w_ih, w_hh, plan.zero_bias if b_ih is None else b_ih + b_hh, w_hr

    def run_forward(self, module, x, w, s0, lengths, reverse, relu, out=None, rows=None,
                    projected=False, output=None):
        hs, cs, gates = module.lstm_layer_forward(x, *w, s0[0], s0[1], lengths, reverse,
                                                  **_part(out, rows, projected, output))
        return hs, (cs, gates)

    def seqs(self, hs, saved):
        return hs, saved[0]

    def run_backward(self, module, x, w, hs, saved, dy, ds_n, lengths, reverse, relu):
        w_ih, w_hh, _, w_hr = w
        dh0, dc0, dw_ih, dw_hh, db, dw_hr, delta = module.lstm_layer_backward(
            x, w_ih, w_hh, w_hr, hs, saved[0], saved[1], dy, ds_n[0], ds_n[1], lengths,
            reverse)
        return (dh0, dc0), (dw_ih, dw_hh, db, None, dw_hr), delta

    def step_work(self, w):
        return w[1].size + (0 if w[3] is None else w[3].size)

    def forward_arrays(self, x, w):
        T, B, _ = x.shape
        G4, W = w[1].shape
        return _empty(x.dtype, (T + 1, B, W), (T + 1, B, G4 // 4), (T, B, G4))

    def backward_arrays(self, x, w, hs):
        (T, B, K), (G4, W), H = x.shape, w[1].shape, w[1].shape[0] // 4
        g = SimpleNamespace(dhs=None, ms=None, dw_hr=None)
        g.delta, g.dh0, g.dc0, g.dw_ih, g.dw_hh, g.db = _empty(
            x.dtype, (T, B, G4), (B, W), (B, H), (G4, K), (G4, W), G4)
        if w[3] is not None:
            g.dhs, g.ms, g.dw_hr = _empty(x.dtype, (T, B, W), (T, B, H), (W, H))
        return g

    def backward_rows(self, module, w, hs, saved, dy, ds_n, lengths, reverse, relu, g,
                      rows):
        module.lstm_backward_steps(w[1], w[3], hs, saved[0], saved[1], dy, ds_n[0],
                                   ds_n[1], lengths, reverse, g.delta, g.dh0, g.dc0,
                                   g.dhs, g.ms, rows=rows)

    def _weight_extras(self, g):
        return {"dhs": g.dhs, "ms": g.ms, "dw_hr": g.dw_hr}

    def backward_result(self, g):
        return (g.dh0, g.dc0), (g.dw_ih, g.dw_hh, g.db, None, g.dw_hr), g.delta


class _GRU(_Cell):
    name = "gru"
    functions = ("gru_layer_forward", "gru_layer_backward")

    def _direction_weights(self, plan, w):
        w_ih, w_hh, b_ih, b_hh, _ = w
        if b_ih is None:
            b_ih = b_hh = plan.zero_bias
        return w_ih, w_hh, b_ih, b_hh

    def run_forward(self, module, x, w, s0, lengths, reverse, relu, out=None, rows=None,
                    projected=False, output=None):
        hs, saved = module.gru_layer_forward(x, *w, s0[0], lengths, reverse,
                                             **_part(out, rows, projected, output))
        return hs, (saved,)

    def run_backward(self, module, x, w, hs, saved, dy, ds_n, lengths, reverse, relu):
        dh0, dw_ih, dw_hh, db_ih, db_hh, delta = module.gru_layer_backward(
            x, w[0], w[1], hs, saved[0], dy, ds_n[0], lengths, reverse)
        return (dh0,), (dw_ih, dw_hh, db_ih, db_hh, None), delta

    def forward_arrays(self, x, w):
        T, B, _ = x.shape
        H = w[1].shape[1]
        return _empty(x.dtype, (T + 1, B, H), (T, B, 4 * H))

    def backward_arrays(self, x, w, hs):
        (T, B, K), (G3, H) = x.shape, w[1].shape
        g = SimpleNamespace()
        g.delta, g.eps, g.dh0, g.dw_ih, g.dw_hh, g.db, g.db_hh = _empty(
            x.dtype, (T, B, G3), (T, B, G3), (B, H), (G3, K), (G3, H), G3, G3)
        return g

    def backward_rows(self, module, w, hs, saved, dy, ds_n, lengths, reverse, relu, g,
                      rows):
        module.gru_backward_steps(w[1], hs, saved[0], dy, ds_n[0], lengths, reverse,
                                  g.delta, g.eps, g.dh0, rows=rows)

    def _weight_extras(self, g):
        return {"eps": g.eps, "db_hh": g.db_hh}

    def backward_result(self, g):
        return (g.dh0,), (g.dw_ih, g.dw_hh, g.db, g.db_hh, None), g.delta


CELL_TYPES = {"rnn": _Elman(), "lstm": _LSTM(), "gru": _GRU()}
