"""The recurrent computation without a class: validate, normalise, walk the layers.

Everything public in rnncore reaches the kernels through :func:`forward` and
:func:`backward`. This module is the one place that checks user input (shapes, dtypes,
lengths), normalises it (time-major, C-contiguous, padded steps zeroed, a private copy
whenever something had to change) and walks the layers and directions; the backends only
ever see one layer-direction at a time, with arrays that are already checked. The walker
is the same for the three cells (Elman ``"rnn"``, ``"lstm"``, ``"gru"``): what a cell
contributes is in :mod:`rnncore._cells`.

Parameters are passed as a mapping with PyTorch's keys (``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``weight_hr_l0``, ``..._reverse``,
``..._l1``, ...); the number of layers, the directions, the sizes, LSTM's projection and
whether there is a bias are read from the keys and shapes (:mod:`rnncore._params`).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from . import _chunks, _memory, _parallel, reference
from ._cells import CELL_TYPES
from ._inputs import (as_weights_dtype, check_state, padded_mask, read_dy, read_lengths,
                      read_states, state_widths, zero_padded)
from ._params import (CELLS, Config, check_cell, check_param_memory, param_count,
                      param_shapes, read_params)

__all__ = ["forward", "backward", "backends", "backends_for", "Record", "param_shapes",
           "param_count", "check_param_memory", "CELLS", "MERGE_MODES"]

try:  # the compiled kernels; absent only in a source tree that was never built
    import scipy_openblas32  # noqa: F401  (loads the OpenBLAS the kernels link against)

    from . import _kernels
    from . import _short
except ImportError:  # pragma: no cover - exercised only without a build
    _kernels = _short = None

_BACKENDS = {"cython": _kernels, "numpy": reference} if _kernels else {"numpy": reference}
_FASTEST = next(iter(_BACKENDS.values()))
if _kernels:
    _parallel.configure_kernel_blas(_kernels)
_NONLINEARITIES = ("tanh", "relu")
# forward's defaults, compared by identity first: string constants and small ints are
# shared objects, so a call with the defaults needs no other check; anything else,
# equal values that are other objects included, is checked by _checked_options
_RNN, _TANH, _CONCAT, _NO_CHECKPOINT, _CYTHON = "rnn", "tanh", "concat", 0, "cython"
# A call whose arrays may reach the block cache's size allocates them through it
# (_memory): (T·B + K + H)·H elements bounds the largest of one layer's (outputs,
# states, weights, their gradients) from below within a small factor.
_CACHED_ELEMENTS = _memory.MIN_BYTES // 8


def _large(rows: int, K: int, H: int) -> bool:
    return (rows + K + H) * H >= _CACHED_ELEMENTS
_ELMAN = CELL_TYPES["rnn"]
_NOTHING_SAVED = ((),)                   # what the Elman cell saves besides its states
MERGE_MODES = ("concat", "sum", "mean", "mul")


def backends() -> tuple[str, ...]:
    """The names of the available backends, fastest first.

    Returns
    -------
    tuple of str
        ``("cython", "numpy")`` when the extension is built, else ``("numpy",)``.
    """
    return tuple(_BACKENDS)


def _backend_module(backend):
    if backend is None:
        return _FASTEST
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(
            f"backend must be one of {tuple(_BACKENDS)} or None; got {backend!r}")
    return _BACKENDS[backend]


def backends_for(cell: str) -> tuple[str, ...]:
    """The backends that implement ``cell``, fastest first.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}

    Returns
    -------
    tuple of str
    """
    cell_type = CELL_TYPES[check_cell(cell)]
    return tuple(name for name, module in _BACKENDS.items()
                 if cell_type.implemented_by(module))


def _module_for(cell_type, backend):
    """The backend module that runs ``cell_type``: the fastest that implements it, or
    the one asked for, if it does."""
    if backend is None:
        return next(m for m in _BACKENDS.values() if cell_type.implemented_by(m))
    module = _backend_module(backend)
    if not cell_type.implemented_by(module):
        raise ValueError(f"backend {backend!r} does not implement the {cell_type.name} "
                         f"cell; backends that do: {backends_for(cell_type.name)}")
    return module


class Record:
    """What :func:`backward` needs from a :func:`forward` call. Treat it as opaque.

    It holds private copies of the weights forward used, the hidden states of every
    layer-direction (``states[layer][direction]``, (T+1, B, ·)), what the cell saved
    besides them (``saved``: LSTM's cell states and gates, GRU's gates) and each layer's
    input; it is never modified, so one record can be back-propagated any number of
    times. Changing the parameters in place after forward (an optimiser step) does not
    change what backward differentiates, unless forward was called with
    ``snapshot_weights=False``: the record then shares the caller's C-contiguous weight
    arrays. The input ``x`` is kept by reference when it was already C-contiguous and
    unpadded, or (on the compiled kernels) zero at every padded step, as a batch padded
    with zeros is (a copy would double the memory of the call): changing its values in
    place before backward changes ∂W_ih of the first layer accordingly, as it would in
    any framework that does not copy its inputs. A tampered record cannot make the kernels
    read or write out of bounds: they check that the shapes agree.

    A record of ``forward(..., checkpoint=k)`` holds no state sequence: ``states`` has
    None for each layer-direction (but the last layer's with ``merge_mode="mul"``) and
    ``saved`` each layer-direction's checkpoints (:class:`rnncore._chunks.Checkpoints`);
    ``chunk`` is the steps per chunk of a call run in chunks (0: one call), and
    ``initial`` the initial states of each layer-direction of such a call.

    ``T`` is the steps the kernels ran, ``full_T`` the caller's: with ``lengths`` whose
    longest is shorter than the input, the steps after it (padding in every row) are
    not run, and the output and ∂x are zero there.
    """

    __slots__ = ("plan", "backend", "relu", "weights", "inputs", "states", "saved",
                 "lengths", "padded", "T", "B", "batch_first", "unbatched", "merge_mode",
                 "deterministic", "chunk", "initial", "full_T")

    def __init__(self, plan, backend, relu, weights, inputs, states, saved, lengths,
                 padded, T, B, batch_first, unbatched, merge_mode="concat",
                 deterministic=True, chunk=0, initial=None, full_T=None):
        self.plan, self.backend, self.relu = plan, backend, relu
        self.weights, self.inputs, self.states, self.saved = weights, inputs, states, saved
        self.lengths, self.padded, self.T, self.B = lengths, padded, T, B
        self.batch_first, self.unbatched = batch_first, unbatched
        self.merge_mode, self.deterministic = merge_mode, deterministic
        self.chunk, self.initial = chunk, initial
        self.full_T = T if full_T is None else full_T

    @property
    def cfg(self) -> Config:
        """The configuration (cell, sizes, layers, directions, bias, dtype) of the
        call."""
        return self.plan.cfg


def forward(x, params: Mapping[str, Any], h0=None, lengths=None, *, cell: str = "rnn",
            nonlinearity: str = "tanh", batch_first: bool = False,
            backend: str | None = None, snapshot_weights: bool = True,
            merge_mode: str = "concat", deterministic: bool = True, checkpoint=0):
    """Run a (multi-layer, possibly bidirectional) recurrent network over a batch.

    Parameters
    ----------
    x : array_like, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K)
        Input sequence, float32 or float64 (the dtype of the weights).
    params : mapping of str to array_like
        Weights with PyTorch's keys; see :func:`param_shapes`.
    h0 : array_like, shape (L*D, B, H) or (L*D, H) for unbatched input, optional
        Initial hidden states; zeros when omitted. For ``cell="lstm"`` a pair
        ``(h0, c0)``, h0 (L*D, B, P or H) and c0 (L*D, B, H).
    lengths : array_like of int, shape (B,), optional
        True length of each sequence, ``1 <= lengths[i] <= T``. Outputs at padded steps
        are 0 and the final states hold each sequence's state at its last valid step.
    cell : {"rnn", "lstm", "gru"}
        The Elman RNN, PyTorch's LSTM (gates i, f, g, o; ``weight_hr`` for a projection)
        or GRU (r, z, n). SPEC.md gives their equations.
    nonlinearity : {"tanh", "relu"}
        The Elman RNN's f; the gated cells take only "tanh".
    batch_first : bool
        If True, ``x`` and the output are (B, T, ...).
    backend : {"cython", "numpy"} or None
        None picks the fastest available that implements the cell (see
        :func:`backends_for`).
    snapshot_weights : bool
        True (the default): the record keeps private copies of the weights, so that
        :func:`backward` differentiates what forward ran even if ``params`` change in
        place in between (an optimiser step). False: the record shares the caller's
        weight arrays (those already C-contiguous), saving a copy of each per call; for
        callers that guarantee the weights do not change before backward, or detect it
        (PyTorch's version counters). Changing them in between then changes the
        gradients backward returns.
    merge_mode : {"concat", "sum", "mean", "mul"}
        How the last layer of a bidirectional network combines its two directions'
        states h_f and h_r into the output at each step: side by side ``[h_f, h_r]``
        (PyTorch's, the default), ``h_f + h_r``, ``(h_f + h_r) / 2`` or ``h_f ⊙ h_r``.
        Only the output is merged: the layers below still hand the next layer both
        directions side by side (so the parameters keep PyTorch's shapes) and h_n
        holds every direction's final state. A unidirectional network has one
        direction to merge, so every mode gives its states unchanged.
    deterministic : bool
        True (the default): this forward and the :func:`backward` of its record give
        the same bits whatever the thread count (:func:`rnncore.set_num_threads`, the
        BLAS's threads) and however the work is split; docs/reliability.md says how.
        False lets a BLAS with several threads sum the weight gradients in its own
        order and splits ∂x of a bidirectional layer over two threads on any backend:
        faster where the BLAS runs those products (the NumPy backend), but NOT
        deterministic across thread counts: results then agree to rounding only.
    checkpoint : int or "auto"
        0 (the default): the record keeps every state backward needs. k > 0: it keeps
        the states only at the start of every segment of k steps, and :func:`backward`
        runs each segment forward again before going back through it; "auto" takes
        k = ⌈√T⌉. The gradients are bitwise those of ``checkpoint=0``; the states kept
        shrink from T to about T/k + k steps per layer-direction, for one more forward
        in backward. k is rounded up to a whole number of the chunks a long call runs
        in (about √T steps when T·B > 65,536, else the whole call: a call that short
        is recomputed whole; see :mod:`rnncore._chunks`). Each layer's input is still
        kept (``x`` by reference), and with ``merge_mode="mul"`` the last layer's
        states.

    Returns
    -------
    output : ndarray, shape (T, B, D*H) (or (B, T, D*H), or (T, D*H) unbatched)
        D*P wide for an LSTM with a projection; H (or P) wide for a bidirectional
        network whose ``merge_mode`` is not "concat".
    h_n : ndarray, shape (L*D, B, H) (or (L*D, H) unbatched)
        For ``cell="lstm"`` the pair ``(h_n, c_n)``.
    record : Record
        What :func:`backward` needs.
    """
    if (cell is _RNN and nonlinearity is _TANH and merge_mode is _CONCAT
            and deterministic is True and checkpoint is _NO_CHECKPOINT
            and (backend is None
                 or type(backend) is str and backend == _CYTHON and _short is not None)):
        # the defaults (or the kernels named, which the defaults pick): all valid
        if h0 is None and not batch_first and _short is not None:
            # the short path, compiled (lengths too: §83, §85 of docs/perf-notes.md)
            done = _short.forward(x, params, snapshot_weights, lengths)
            if done is not None:
                return done
        cell_type, module, relu = _ELMAN, _FASTEST if backend is None else _kernels, False
    else:
        cell_type, module, relu = _checked_options(cell, nonlinearity, backend, merge_mode,
                                                   deterministic, checkpoint)
    plan, arrays = read_params(params, cell)
    cfg = plan.cfg
    x = as_weights_dtype("x", x, cfg.dtype)
    unbatched = x.ndim == 2
    if not unbatched and x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, {cfg.input_size}), "
                         f"(B, T, {cfg.input_size}) with batch_first=True, or "
                         f"(T, {cfg.input_size}) unbatched; got {x.shape}")
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = x.transpose(1, 0, 2)
    T, B, K = x.shape
    if K != cfg.input_size:
        raise ValueError(f"x must have {cfg.input_size} features in its last axis "
                         f"(input_size of params['weight_ih_l0']); got shape "
                         f"{x.shape if not batch_first or unbatched else (B, T, K)}")
    if lengths is not None:
        lengths = _lengths_to_run(lengths, B, T)
    if module is _kernels:               # before anything is copied or allocated
        _kernels.check_sizes(T, B, *plan.widths)
    cache = _memory.enter() if _large(T * B, K, cfg.hidden_size) else None
    try:
        with _parallel.exact_blas(module, deterministic):
            # the steps run: up to the longest sequence (see _steps_to_run)
            ran = T if lengths is None or not B else int(lengths.max())
            if (plan.stacked and not checkpoint and ran <= _chunks.chunk_steps(B, ran)
                    and _one_part_each(module, ran, B, cfg)):
                # One Elman direction, each layer in one call (one chunk, as the walker
                # would run it) on one thread: a short call's path, what the walker
                # below does for it without what it does not need.
                return _stacked_forward(module, relu, plan, arrays, x, h0, lengths, B,
                                        unbatched, batch_first, snapshot_weights,
                                        deterministic is True or bool(deterministic))
            return _walk_forward(cell_type, module, relu, plan, arrays, x, h0, lengths,
                                 T, B, unbatched, batch_first, snapshot_weights,
                                 merge_mode, deterministic, checkpoint)
    finally:
        if cache is not None:
            _memory.leave(cache)


def _lengths_to_run(lengths, B: int, T: int):
    """The caller's ``lengths`` checked (:func:`read_lengths`), or None when they pad
    nothing (a PackedSequence of one sequence, a batch bucketed by length): the padded
    call, whose results are the same, runs without the masks and may take the short
    paths (§75, §83 of docs/perf-notes.md)."""
    lengths = read_lengths(lengths, B, T)
    return None if lengths.min(initial=T) == T else lengths


def _checked_options(cell, nonlinearity, backend, merge_mode, deterministic, checkpoint):
    """The cell type, the backend module and whether f is ReLU, of options that are not
    all the defaults; a clear error for a bad one."""
    if cell == "rnn":
        cell_type = _ELMAN
        module = _FASTEST if backend is None else _backend_module(backend)
    else:
        cell_type = CELL_TYPES[check_cell(cell)]
        module = _module_for(cell_type, backend)
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity is an option of the Elman RNN; the {cell} "
                             f"cell takes only 'tanh', got {nonlinearity!r}")
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
    if type(merge_mode) is not str or merge_mode != "concat":
        if not isinstance(merge_mode, str) or merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}; "
                             f"got {merge_mode!r}")
    if type(checkpoint) is not int or checkpoint:
        _chunks.checkpoint_steps(checkpoint, 1, 1)       # a bad value fails before work
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"deterministic must be True or False; got {deterministic!r}")
    return cell_type, module, nonlinearity == "relu"


def _one_part_each(module, T: int, B: int, cfg: Config) -> bool:
    """Whether no layer of a one-direction Elman network is split over threads (what
    :func:`_parts` says of each layer's input: K wide for the first, H for the others)."""
    if _parallel.get_num_threads() < 2:  # (direction_parts' first answer, without a call each)
        return True
    H = cfg.hidden_size
    for K in ((cfg.input_size, H) if cfg.num_layers > 1 else (cfg.input_size,)):
        if _parts_of(module, T, B, K, cfg.dtype, H, 1) != 1:
            return False
    return True


def _stacked_forward(module, relu, plan, arrays, x, h0, lengths, B, unbatched,
                     batch_first, snapshot_weights, deterministic):
    """:func:`forward` of a one-direction Elman network whose layers each run in one
    call on one thread (a short call's path): the layers back to back, each one kernel
    call, without the walker's lists of directions and chunks, and with no zeroed h_n
    to start from, so that the Python layer costs a few µs per layer. The record is
    the walker's for the same call, and so are the bits.

    ``x`` is (T, B, K) time-major; ``h0`` as the caller gave it (or None); ``lengths``
    None or read (:func:`_lengths_to_run`), run as the walker runs them
    (:func:`_steps_to_run`).
    """
    cfg = plan.cfg
    L = cfg.num_layers
    s0 = ((plan.zero_state(B),) * L if h0 is None
          else check_state("h0", h0, cfg, B, unbatched))
    full_T = x.shape[0]
    x, padded = _steps_to_run(x, lengths)
    T = x.shape[0]
    steps = _full_lengths(B, T) if lengths is None else lengths
    if module is _kernels:
        output, h_n, weights, inputs, states = _short.stacked_forward(
            plan, arrays, x, s0, steps, relu, snapshot_weights)
    else:
        h_n = np.empty((L, B, cfg.hidden_size), cfg.dtype)  # the caller's: hs is the record's
        weights, inputs, states = [], [], []
        layer_in = x
        for layer, (positions,) in enumerate(plan.layers):
            w = _ELMAN.direction_weights(plan, arrays, positions, snapshot_weights)
            hs = module.layer_forward(layer_in, *w, s0[layer], steps, False, relu)
            h_n[layer] = hs[T] if padded is None else hs[steps, np.arange(B)]
            weights.append([w])
            inputs.append(layer_in)
            states.append([hs])
            layer_in = hs[1:]
        output = layer_in.copy()
    output = _all_steps(output, full_T)
    record = Record(plan, module, relu, weights, inputs, states, [_NOTHING_SAVED] * L,
                    steps, padded, T, B, batch_first, unbatched, _CONCAT, deterministic,
                    0, None, full_T)
    if unbatched:
        return output[:, 0], h_n[:, 0], record
    return (output.transpose(1, 0, 2) if batch_first else output), h_n, record


def _walk_forward(cell_type, module, relu, plan, arrays, x, h0, lengths, T, B, unbatched,
                  batch_first, snapshot_weights, merge_mode, deterministic, checkpoint):
    """:func:`forward` of any network, layer by layer and direction by direction, once
    its arguments are checked (``x`` time-major, ``lengths`` None or read)."""
    cfg = plan.cfg
    H, P, D = cfg.hidden_size, cfg.out_size, cfg.D
    LD = cfg.num_layers * D
    # the final states double as the zero initial states: slot l·D+d is read by layer
    # l's kernels and written only after they return
    if cell_type is _ELMAN:
        finals = [np.zeros((LD, B, H), cfg.dtype)]
    else:
        finals = [np.zeros((LD, B, w), cfg.dtype) for w in state_widths(cfg)]
    states0 = finals if h0 is None else read_states(("h0", "c0"), h0, cfg, B, unbatched,
                                                     allow_none=False)
    full_T = T
    x, padded = _steps_to_run(x, lengths)
    T = x.shape[0]
    steps = lengths if lengths is not None else _full_lengths(B, T)

    # a long call runs in chunks of steps (_chunks), which checkpointing keeps
    k = _chunks.checkpoint_steps(checkpoint, T, B) if checkpoint else 0
    chunk = _chunks.chunk_steps(B, T) if T and B else 0
    if not k and T <= chunk:
        chunk = 0

    weights, inputs, states, saved = [], [], [], []
    initial = [] if chunk else None
    owned = None                         # the output, when written as its layer ran
    layer_in = x
    for layer in range(cfg.num_layers):
        first = layer * D                # the index in h0 and h_n of the forward one
        ws = cell_type.weights(plan, arrays, layer, snapshot_weights)
        inputs.append(layer_in)
        parts = _parts(module, layer_in, H, D, cfg.G, P)
        last = layer == cfg.num_layers - 1
        # the output, written as the states are computed (by the kernels step by step,
        # else by the threads that ran them: §60, §68 of docs/perf-notes.md), of a
        # bidirectional layer whose directions are concatenated, or of a last
        # one-direction layer whose states the record keeps (all of them, no
        # checkpoints: the caller's output is then a copy of them)
        if D == 2:
            written = not (last and merge_mode != "concat")
        else:
            written = last and T == full_T and not k
        owned = np.empty((T, B, D * P), cfg.dtype) if written else None
        if chunk:
            # private copies: the final states double as the zero initial states
            initial.append([[s[first + d].copy() for s in states0] for d in range(D)])
            outs = _each_direction(
                _chunks.forward_direction,
                [(cell_type, module, parts, layer_in, w, initial[layer][d], steps, d == 1,
                  relu, chunk, k, _columns(owned, d, P)) for d, w in enumerate(ws)],
                parts, _direction_work(layer_in, cfg))
            for d, (_, _, direction_finals) in enumerate(outs):
                for final, value in zip(finals, direction_finals):
                    final[first + d] = value
            hs_dirs = [out[0] for out in outs]
            saved.append([out[1] for out in outs])
            layer_in = (owned if owned is not None else hs_dirs[0][1:] if D == 1
                        else _merged_output(hs_dirs, T, B, P, padded, merge_mode))
            keep_states = not k or (last and D == 2 and merge_mode == "mul")
            states.append(hs_dirs if keep_states else [None] * D)
        elif cell_type is _ELMAN and D == 1 and parts == 1:     # a tiny call's path
            hs, _ = cell_type.run_forward_into(module, layer_in, ws[0],
                                               [states0[0][first]], steps, False, relu,
                                               owned)
            finals[0][first] = hs[T] if padded is None else hs[steps, np.arange(B)]
            states.append([hs])
            saved.append(_NOTHING_SAVED)
            layer_in = hs[1:] if owned is None else owned
        else:
            outs = _forward_layer(cell_type, module, parts, layer_in, ws, states0, first,
                                  steps, relu, cfg, owned)
            for d, (hs, cell_saved) in enumerate(outs):
                for final, seq in zip(finals, cell_type.seqs(hs, cell_saved)):
                    final[first + d] = (seq[0] if d == 1 else seq[T] if padded is None
                                        else seq[steps, np.arange(B)])
            states.append([out[0] for out in outs])
            saved.append([out[1] for out in outs])
            layer_in = (owned if owned is not None else outs[0][0][1:] if D == 1
                        else _merged_output(states[-1], T, B, P, padded, merge_mode))
        if owned is not None and D == 2 and padded is not None:
            owned[padded] = 0            # the reverse states hold h0 at the first padded
                                         # slot
        weights.append(ws)
    output = layer_in                   # owned, or (a shorter T) a view of hs, which
                                        # _all_steps copies, or a checkpointed call's
    record = Record(plan, module, relu, weights, inputs, states, saved, steps, padded, T,
                    B, batch_first, unbatched, "concat" if D == 1 else merge_mode,
                    bool(deterministic), chunk, initial, full_T)
    if unbatched:
        finals = [f[:, 0] for f in finals]
    return _to_user_layout(_all_steps(output, full_T), batch_first, unbatched), \
        (finals[0] if len(finals) == 1 else tuple(finals)), record


def _steps_to_run(x, lengths):
    """The input ``x`` (T, B, K) as the kernels run it with ``lengths`` (None or read),
    and the (T', B) mask of its padded steps (None where none): C-contiguous, without
    the steps after the longest sequence (padding in every row: not run), and where
    the lengths pad something within the rest a private copy zeroed at the padded
    steps (their values may be anything, and δ = 0 there times inf is NaN in ∂W_ih).
    Compiled (:func:`rnncore._short.steps_to_run`, one pass over x, and none where x
    is already +0.0 at every padded step) for a C-contiguous ndarray."""
    if (lengths is not None and _short is not None and type(x) is np.ndarray
            and x.flags.c_contiguous and x.shape[1]):
        return _short.steps_to_run(x, lengths)
    longest = int(lengths.max()) if lengths is not None and x.shape[1] else x.shape[0]
    if longest < x.shape[0]:
        x = x[:longest]                      # the steps up to the longest sequence
    padded = None if lengths is None else padded_mask(lengths, x.shape[0])
    if padded is None:
        return np.ascontiguousarray(x), None
    x = np.array(x, order="C")
    zero_padded(x, lengths, padded)
    return x, padded


def _forward_layer(cell_type, module, parts, layer_in, ws, states0, first, steps, relu,
                   cfg, output=None):
    """[(hs, saved)] of each direction of one layer: one after the other, each split
    over ``parts`` threads, or the two directions at once. With ``output`` (T, B, D·P),
    each direction's states of steps 0..T-1 are copied into its columns of it by the
    threads that ran them (§60 of docs/perf-notes.md)."""
    P = cfg.out_size
    jobs = [(layer_in, w, [s[first + d] for s in states0], steps, d == 1, relu,
             _columns(output, d, P))
            for d, w in enumerate(ws)]
    return _each_direction(functools.partial(cell_type.forward, module, parts), jobs, parts,
                           _direction_work(layer_in, cfg))


def _columns(output, d: int, P: int):
    """Direction ``d``'s columns of a layer's output (T, B, D·P), or None."""
    return None if output is None else output[:, :, d * P:(d + 1) * P]


def _direction_work(layer_in, cfg) -> int:
    """Multiply-adds of one direction of a layer whose input is ``layer_in`` (T, B, K):
    T·B·G·H·(K + P), what :func:`_each_direction` weighs against a thread's cost."""
    T, B, K = layer_in.shape
    return T * B * (K + cfg.out_size) * cfg.G * cfg.hidden_size


def _each_direction(fn, jobs, parts: int, work: int) -> list:
    """``fn(*job)`` of each direction's job, in order: one after the other where
    each direction is split over ``parts`` > 1 threads, else the two directions of a
    bidirectional layer at once (:func:`rnncore._parallel.map_directions`, where
    ``work``, multiply-adds per direction, is worth a thread)."""
    if len(jobs) == 1 or parts > 1:
        return [fn(*job) for job in jobs]
    return _parallel.map_directions(fn, jobs, work)


def _parts(module, layer_in, H: int, D: int, G: int = 1, W: int = 0) -> int:
    """Into how many threads each direction of a layer is split (1: not split), for a
    cell of G gates of H units and a state W wide (0: H)."""
    return _parts_of(module, *layer_in.shape, layer_in.dtype, H, D, G, W)


def _parts_of(module, T: int, B: int, K: int, dtype, H: int, D: int, G: int = 1,
              W: int = 0) -> int:
    """:func:`_parts` of a layer input (T, B, K) of ``dtype``, given by its sizes."""
    if module is not _kernels:
        return 1
    return _parallel.direction_parts(module, T * B * (K + (W or H)) * G * H, B, G * H,
                                     dtype, D, T * B)


@functools.lru_cache(maxsize=64)
def _full_lengths(B: int, T: int) -> np.ndarray:
    """``lengths`` of a batch where nothing is padded: (B,) int64 of T, read-only."""
    steps = np.full(B, T, dtype=np.int64)
    steps.setflags(write=False)
    return steps


def _merged_output(hs, T, B, H, padded, merge_mode):
    """The two directions' states merged into the last layer's output (T, B, H):
    h_f + h_r, (h_f + h_r) / 2 or h_f ⊙ h_r (``merge_mode`` other than "concat")."""
    forward_h, reverse_h = hs[0][1:], hs[1][:T]
    if merge_mode == "mul":
        out = forward_h * reverse_h
    else:
        out = forward_h + reverse_h
        if merge_mode == "mean":
            out *= 0.5
    if padded is not None:
        out[padded] = 0                  # hs[1] holds h0 at the first padded slot
    return out


def _unmerged_dy(dy, record):
    """∂L/∂(the concatenated output) (T, B, 2H) from ∂L/∂(the merged output) (T, B, H):
    the chain rule through ``record.merge_mode``'s merge."""
    T = record.T
    hs = record.states[-1]
    both = np.empty(dy.shape[:2] + (2 * dy.shape[2],), dy.dtype)
    forward_dy, reverse_dy = both[:, :, :dy.shape[2]], both[:, :, dy.shape[2]:]
    if record.merge_mode == "sum":           # ∂(f + r)/∂f = ∂(f + r)/∂r = 1
        forward_dy[...] = dy
        reverse_dy[...] = dy
    elif record.merge_mode == "mean":        # ½ each
        np.multiply(dy, 0.5, out=forward_dy)
        reverse_dy[...] = forward_dy
    else:                                    # "mul": ∂(f ⊙ r)/∂f = r, ∂/∂r = f
        np.multiply(dy, hs[1][:T], out=forward_dy)
        np.multiply(dy, hs[0][1:], out=reverse_dy)
    if record.padded is not None:
        both[record.padded] = 0          # dy is 0 there, but 0 · inf in a state is NaN
    return both


def _all_steps(a, full_T: int):
    """A time-major ``a`` (T, B, W) of the steps run, over the caller's ``full_T`` ≥ T
    steps: zero after step T (steps after the longest sequence are not run)."""
    if a.shape[0] == full_T:
        return a
    out = np.zeros((full_T,) + a.shape[1:], a.dtype)
    out[:a.shape[0]] = a
    return out


def _to_user_layout(a, batch_first, unbatched):
    if unbatched:
        return a[:, 0]
    if batch_first:
        return a.transpose(1, 0, 2)
    return a


def backward(record: Record, dy=None, dh_n=None, *, need_dx: bool = True,
             need_dh0: bool = True):
    """Back-propagate through time through the computation of one :func:`forward`.

    Parameters
    ----------
    record : Record
        The third value returned by :func:`forward`.
    dy : array_like, optional
        ∂L/∂output, the shape of forward's output (merged, if forward had a
        ``merge_mode`` other than "concat"); zeros when omitted. Values at padded
        steps are ignored.
    dh_n : array_like, shape of forward's ``h_n``, optional
        ∂L/∂h_n; zeros when omitted. For an LSTM the pair ``(dh_n, dc_n)``, either of
        which may be None (zeros).
    need_dx : bool
        Compute ∂L/∂x (skipping it saves one GEMM per layer-direction).
    need_dh0 : bool
        Compute ∂L/∂h0 (skipping it saves the first step's recurrent product of each
        Elman layer-direction: half the products of a call at T = 1).

    Returns
    -------
    dx : ndarray, the shape of forward's ``x``, or None if not ``need_dx``
        Zero at padded steps.
    dh0 : ndarray, the shape of forward's ``h_n``, or None if not ``need_dh0``
        For an LSTM the pair ``(dh0, dc0)``.
    grads : dict of str to ndarray
        ∂L/∂(each parameter), with the keys and shapes of forward's ``params``.
    """
    if dh_n is None and _short is not None:
        done = _short.backward(record, dy, need_dx, need_dh0)   # the short path, compiled
        if done is not None:
            return done
    if not isinstance(record, Record):
        raise TypeError(f"record must be the Record returned by forward; "
                        f"got {type(record).__name__}")
    cfg = record.plan.cfg
    with _parallel.exact_blas(record.backend, record.deterministic):
        if not _large(record.T * record.B, cfg.input_size, cfg.hidden_size):
            return _backward(record, dy, dh_n, need_dx, need_dh0)
        cache = _memory.enter()
        try:
            return _backward(record, dy, dh_n, need_dx, need_dh0)
        finally:
            if cache is not None:
                _memory.leave(cache)


def _backward(record, dy, dh_n, need_dx, need_dh0):
    """:func:`backward` once ``record`` is known to be a Record (its BLAS limited by
    :func:`rnncore._parallel.exact_blas`)."""
    plan, T, B, module = record.plan, record.T, record.B, record.backend
    cfg = plan.cfg
    if plan.stacked and not record.chunk and _one_part_each(module, T, B, cfg):
        return _backward_stacked(record, dy, dh_n, need_dx, need_dh0)
    cell_type = CELL_TYPES[cfg.cell]
    P, D, L = cfg.out_size, cfg.D, cfg.num_layers
    merged = record.merge_mode != "concat"
    # the kernels read dy only at each row's own steps: no zeroed copy of it
    # (docs/perf-notes.md §89, §91)
    dy = read_dy(dy, record, (T, B, P if merged else D * P),
                 zeroed=not _reads_only_own_steps(module))
    if merged:
        dy = _unmerged_dy(dy, record)
    if cell_type is _ELMAN:
        H = cfg.hidden_size
        ds_n = [np.zeros((L * D, B, H), cfg.dtype) if dh_n is None
                else check_state("dh_n", dh_n, cfg, B, record.unbatched)]
        ds0 = [np.empty((L * D, B, H), cfg.dtype)]
    else:
        widths = state_widths(cfg)
        ds_n = [None] * len(widths) if dh_n is None else read_states(
            ("dh_n", "dc_n"), dh_n, cfg, B, record.unbatched, allow_none=True)
        ds_n = [np.zeros((L * D, B, w), cfg.dtype) if a is None else a
                for a, w in zip(ds_n, widths)]
        ds0 = [np.empty((L * D, B, w), cfg.dtype) for w in widths]
    grads = [None] * len(plan.grad_keys)
    dx = None
    for layer in reversed(range(L)):
        x, ws = record.inputs[layer], record.weights[layer]
        first = layer * D                # the index in dh_n and dh0 of the forward one
        parts = _parts(module, x, cfg.hidden_size, D, cfg.G, P)
        dx = None
        if record.chunk:
            dx = np.empty(x.shape, cfg.dtype) if layer > 0 or need_dx else None
            # each direction's ∂x into an array of its own, summed once both are done:
            # the two directions run at once, visiting the chunks in opposite orders,
            # and the sum has the same bits on any number of threads
            dxs = [dx] + [None if dx is None else np.empty_like(dx)] * (D - 1)
            results = [(*r, None) for r in _each_direction(
                _chunks.backward_direction,
                [(cell_type, module, parts, x, ws[d], record.states[layer][d],
                  record.saved[layer][d], record.initial[layer][d],
                  dy if D == 1 else dy[:, :, d * P:(d + 1) * P],
                  [s[first + d] for s in ds_n], record.lengths, d == 1, record.relu,
                  record.chunk, dxs[d]) for d in range(D)],
                parts, _direction_work(x, cfg))]
            if D == 2 and dx is not None:
                dx += dxs[1]
        elif cell_type is _ELMAN and D == 1 and parts == 1:     # a tiny call's path
            dh0, dw_ih, dw_hh, db, delta = module.layer_backward(
                x, ws[0][0], ws[0][1], record.states[layer][0], dy, ds_n[0][first],
                record.lengths, False, record.relu, need_dh0=need_dh0)
            if need_dh0:
                ds0[0][first] = dh0
            i_ih, i_hh, i_bih, i_bhh, _ = plan.grad_slots[layer][0]
            grads[i_ih], grads[i_hh] = dw_ih, dw_hh
            if i_bih is not None:
                grads[i_bih], grads[i_bhh] = db, db.copy()
            results = ()                 # nothing left for the loops below
        else:
            # one direction: ∂x comes with its δ (split, in the recurrence's dispatch)
            if D == 1 and (layer > 0 or need_dx):
                dx = np.empty(x.shape, cfg.dtype)
            results = _backward_layer(cell_type, module, parts, record, layer, dy, ds_n,
                                      first, dx)
        dx_done = record.chunk or dx is not None  # (each chunk's ∂x came with its δ)
        if not dx_done:
            dx = np.empty(x.shape, cfg.dtype) if layer > 0 or need_dx else None
        if dx is not None:
            if not dx_done:
                if not results:
                    module.input_grad(delta, ws[0][0], dx, False, T * B)
                else:
                    _input_grad(module, [r[2] for r in results], [w[0] for w in ws], dx,
                                _input_grad_parts(module, parts, D, record))
            if record.padded is not None:
                # δ is 0 there, but 0 · inf in W_ih is NaN
                zero_padded(dx, record.lengths, record.padded)
        for d, (d_states0, dws, _) in enumerate(results):
            for array, value in zip(ds0, d_states0):
                array[first + d] = value
            slots = plan.grad_slots[layer][d]
            for slot, g in zip(slots, dws):
                if slot is not None and g is not None:
                    grads[slot] = g
            if slots[3] is not None and dws[3] is None:     # one bias gradient for both
                grads[slots[3]] = dws[2].copy()
        dy = dx
    dx_user = None if dx is None else _to_user_layout(_all_steps(dx, record.full_T),
                                                      record.batch_first, record.unbatched)
    if record.unbatched:
        ds0 = [a[:, 0] for a in ds0]
    states0 = ds0[0] if len(ds0) == 1 else tuple(ds0)
    return dx_user, (states0 if need_dh0 else None), dict(zip(plan.grad_keys, grads))


def _reads_only_own_steps(module) -> bool:
    """Whether ``module``'s backward (every cell's) reads ∂L/∂output only at each row's
    own steps, so that dy needs no copy zeroed at the padded ones: the kernels, on
    every instruction set (``tests/test_kernel_entries.py`` and
    ``tests/test_overhead_paths.py`` pin it); not the NumPy reference, whose masked
    sums would carry a NaN there."""
    return module is _kernels


def _backward_stacked(record, dy, dh_n, need_dx, need_dh0):
    """:func:`backward` of a one-direction Elman network whose layers each run in one
    call on one thread (a short call's path): the layers back to back from the last,
    without the walker's lists of layers and directions and with no zeroed ∂L/∂h_n
    when none is given; the walker's bits."""
    plan, T, B, module = record.plan, record.T, record.B, record.backend
    cfg = plan.cfg
    L = cfg.num_layers
    # (the kernels ignore dy at padded steps: no zeroed copy of it, §89)
    dy = read_dy(dy, record, (T, B, cfg.hidden_size),
                 zeroed=not _reads_only_own_steps(module))
    ds_n = ((plan.zero_state(B),) * L if dh_n is None
            else check_state("dh_n", dh_n, cfg, B, record.unbatched))
    if module is _kernels:
        dx, ds0, grads = _short.stacked_backward(record, dy, ds_n, need_dx, need_dh0)
    else:
        ds0 = np.empty((L, B, cfg.hidden_size), cfg.dtype) if need_dh0 else None
        grads = [None] * len(plan.grad_keys)
        for layer in reversed(range(L)):
            x = record.inputs[layer]
            w_ih, w_hh, _ = record.weights[layer][0]
            dh0, dw_ih, dw_hh, db, delta = module.layer_backward(
                x, w_ih, w_hh, record.states[layer][0], dy, ds_n[layer], record.lengths,
                False, record.relu, need_dh0=need_dh0)
            dx = np.empty(x.shape, cfg.dtype) if layer or need_dx else None
            if dx is not None:
                module.input_grad(delta, w_ih, dx, False, T * B)
                if record.padded is not None:
                    # δ is 0 there, but 0 · inf in W_ih is NaN
                    zero_padded(dx, record.lengths, record.padded)
            if need_dh0:
                ds0[layer] = dh0
            i_ih, i_hh, i_bih, i_bhh, _ = plan.grad_slots[layer][0]
            grads[i_ih], grads[i_hh] = dw_ih, dw_hh
            if i_bih is not None:
                grads[i_bih], grads[i_bhh] = db, db.copy()
            dy = dx
    if dx is not None:
        dx = _to_user_layout(_all_steps(dx, record.full_T), record.batch_first,
                             record.unbatched)
    if ds0 is not None and record.unbatched:
        ds0 = ds0[:, 0]
    return dx, ds0, dict(zip(plan.grad_keys, grads))


def _backward_layer(cell_type, module, parts, record, layer, dy, ds_n, first, dx=None):
    """[(d_states0, weight gradients, delta)] of each direction of one layer: one after
    the other, each split over ``parts`` threads, or the two directions at once; ∂x
    into ``dx`` too, if given (one direction only)."""
    cfg = record.cfg
    P, D = cfg.out_size, cfg.D
    x = record.inputs[layer]
    jobs = [(x, record.weights[layer][d], record.states[layer][d], record.saved[layer][d],
             dy if D == 1 else dy[:, :, d * P:(d + 1) * P], [s[first + d] for s in ds_n],
             record.lengths, d == 1, record.relu) for d in range(D)]
    if D == 1:
        return [cell_type.backward(module, parts, *jobs[0], dx=dx)]
    return _each_direction(functools.partial(cell_type.backward, module, parts), jobs,
                           parts, _direction_work(x, cfg))


def _input_grad_parts(module, parts: int, D: int, record) -> int:
    """Into how many ranges of steps ∂x is split: as the recurrences were, or one per
    direction of a bidirectional layer, where that keeps the bits of one call (or the
    record is not ``deterministic``)."""
    if parts > 1 or D == 1:
        return parts
    cfg = record.cfg
    if record.deterministic and not _parallel.step_parts_are_exact(
            module, record.B, cfg.G * cfg.hidden_size, cfg.dtype, record.T * record.B):
        return 1
    return D


def _input_grad(module, deltas, w_ihs, dx, parts: int) -> None:
    """dx = Σ_d δ_d W_ih,d: written by the first direction, added by the second; in
    ``parts`` ranges of steps on as many threads.

    ``deltas`` are the directions' gradients of their input-side pre-activations
    (T, B, G·H), ``w_ihs`` their W_ih (G·H, K).
    """
    def steps(start, stop):
        for d, (delta, w_ih) in enumerate(zip(deltas, w_ihs)):
            module.input_grad(delta[start:stop], w_ih, dx[start:stop], d > 0, T * B)

    T, B, K = dx.shape
    _parallel.split_steps(steps, T, T * B * K * deltas[0].shape[2], parts)
