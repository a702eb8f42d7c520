"""A long layer-direction in chunks of steps, and checkpointed BPTT over them.

A layer-direction whose T·B exceeds ``WHOLE_CALL_ROWS`` rows runs as a sequence of calls
of the backend's cell functions, each over a chunk of ``chunk_steps(B, T)`` steps (about
√T: see there), in the order
the recurrence visits them, each starting from the state the previous one ended in. Its
backward calls the cell's backward on the same chunks in the opposite order, carrying
∂L/∂(the state at the chunk boundary) from one to the next, and sums the chunks' weight
gradients in that order; ∂x is computed chunk by chunk.

That makes checkpointing exact. With ``checkpoint=k`` (a whole number of chunks), the
forward keeps only the state at the start of each segment of k steps; the backward runs
each segment's chunks forward again from it, then back. Every call of the cell's
functions — forward, recomputation and backward — has the same inputs as in the
full BPTT, so the gradients are bitwise those of the full BPTT, whatever the backend,
cell, instruction set or thread count (a call gives the same bits for the same inputs).

Chunk boundaries and lengths. Chunk [t0, t1) runs with the lengths clipped to it,
``clip(len_b - t0, 0, t1 - t0)``; a row whose sequence has ended (or, in the reverse
direction, not yet begun) has length 0 there and its state passes through. The initial
state of a chunk, per row:

* forward direction: the previous chunk's state at t0 (0 for a row that has ended: the
  padded slots of ``hs`` hold zeros);
* reverse direction (chunks visited from the last): the state at t1 from the chunk after
  it if the row's sequence reaches past t1; the row's h0 if its sequence starts in the
  chunk or at t0 (``t0 <= len_b <= t1``: the kernels put h0 at the first padded slot,
  ``hs[len_b]``); 0 if it starts before t0.

So the chunks' state arrays are slices of one array laid out as the whole call's
(``reference.py``, "Layout shared with the kernels"): chunk [t0, t1) reads rows t0..t1.

On several threads, where every chunk splits and nothing is checkpointed,
:mod:`rnncore._chunk_threads` runs the same chunks with each thread's batch rows going
through all of them, in one dispatch for the call.
"""
from __future__ import annotations

import math

import numpy as np

from . import _chunk_threads, _parallel

__all__ = ["WHOLE_CALL_ROWS", "MIN_CHUNK_ROWS", "chunk_steps", "checkpoint_steps",
           "Checkpoints", "forward_direction", "backward_direction"]

# A call of up to this many rows of steps (T·B) runs as one chunk, as one call of the
# cell's functions: every case of the PERF grid (at most 8,000 rows) and anything whose
# states are small enough (65,536 rows of H floats) not to need checkpointing.
WHOLE_CALL_ROWS = 1 << 16
# A chunk has at least this many rows, so that each call's fixed cost (packing W_hh,
# the walker: tens of µs) stays a few % of its work even for a small hidden size.
MIN_CHUNK_ROWS = 512


def _ceil_sqrt(n: int) -> int:
    return math.isqrt(n - 1) + 1 if n > 0 else 0


def chunk_steps(B: int, T: int) -> int:
    """The steps of one chunk of a call of T steps and B rows.

    T when T·B <= ``WHOLE_CALL_ROWS`` (one chunk); else ⌈√T⌉, or ⌈MIN_CHUNK_ROWS / B⌉
    steps if that is more. √T makes checkpointing at k = ⌈√T⌉ keep ~2√T steps of
    states instead of T; a full call pays ~√T calls' fixed cost (T = 20,000: 142
    chunks).
    """
    if B == 0 or T * B <= WHOLE_CALL_ROWS:
        return max(1, T)
    return max(_ceil_sqrt(T), -(-MIN_CHUNK_ROWS // B))


def checkpoint_steps(checkpoint, T: int, B: int) -> int:
    """The segment length, in steps, that ``checkpoint`` asks for (0: no checkpointing):
    k, or ⌈√T⌉ for "auto", rounded up to a whole number of chunks."""
    if isinstance(checkpoint, str):
        if checkpoint != "auto":
            raise ValueError(f"checkpoint must be 0, a positive int or 'auto'; "
                             f"got {checkpoint!r}")
        k = max(1, _ceil_sqrt(T))
    elif isinstance(checkpoint, (int, np.integer)) and not isinstance(checkpoint, bool):
        if checkpoint < 0:
            raise ValueError(f"checkpoint must be 0, a positive int or 'auto'; "
                             f"got {checkpoint}")
        k = int(checkpoint)
        if k == 0:
            return 0
    else:
        raise TypeError(f"checkpoint must be 0, a positive int or 'auto'; "
                        f"got {type(checkpoint).__name__}")
    c = chunk_steps(B, T)
    return -(-k // c) * c


def _bounds(T: int, c: int, reverse: bool) -> list[tuple[int, int]]:
    """The chunks [t0, t1) of [0, T), in the order the recurrence visits them."""
    bounds = [(t0, min(t0 + c, T)) for t0 in range(0, T, c)]
    return bounds[::-1] if reverse else bounds


def _chunk_lengths(lengths, t0: int, t1: int) -> np.ndarray:
    return np.clip(lengths - t0, 0, t1 - t0)


def _chunk_init(carried, s0, lengths, t0: int, t1: int, reverse: bool):
    """The initial states of chunk [t0, t1) (module docstring): ``carried`` holds the
    states the chunk visited before it ended in (None for the first chunk)."""
    if not reverse:
        return list(s0) if carried is None else carried
    inits = []
    for c, h0 in zip(s0 if carried is None else carried, s0):
        init = np.where((lengths > t1)[:, None], c, h0.dtype.type(0))
        starts = (lengths >= t0) & (lengths <= t1)
        init[starts] = h0[starts]
        inits.append(init)
    return inits


def _carried(seqs, t0: int, t1: int, reverse: bool):
    """The states a chunk ended in: at its first step (reverse) or after its last."""
    return [s[0] if reverse else s[t1 - t0] for s in seqs]


def _parts(module, parts: int, x, t0: int, t1: int, w) -> int:
    """The threads for chunk [t0, t1): the layer's ``parts``, unless the chunk is a
    short call that the kernels run on the BLAS, which is not split (the last chunk
    may be a few steps long)."""
    if parts == 1:
        return 1
    B = x.shape[1]
    exact = getattr(module, "splits_are_exact", None)
    single = x.dtype == np.float32
    return parts if exact is not None and exact(B, w[1].shape[0], single,
                                                (t1 - t0) * B) else 1


class Checkpoints:
    """What a checkpointed layer-direction keeps for its backward: its segments (lists
    of chunk bounds, each list and the segments in the order the recurrence visits
    them) and the initial states of each segment's first chunk (``inits[i]``, one
    (B, ·) array per state of the cell)."""

    __slots__ = ("segments", "inits")

    def __init__(self, segments, inits):
        self.segments, self.inits = segments, inits


def forward_direction(cell_type, module, parts, x, w, s0, lengths, reverse, relu, c, k,
                      output=None):
    """One layer-direction (T >= 1, B >= 1) in chunks of ``c`` steps.

    Parameters
    ----------
    cell_type, module, parts, w, relu
        As the walker passes them to ``cell_type.forward``.
    x : ndarray, shape (T, B, K)
    s0 : list of ndarray, shape (B, ·)
        The initial states (h, or LSTM's h and c).
    lengths : ndarray of int64, shape (B,)
    reverse : bool
    c : int
        Steps per chunk.
    k : int
        0: keep everything backward needs; else a multiple of ``c``: keep the states at
        the start of every segment of k steps only.
    output : ndarray, shape (T, B, W), optional
        Receives the states of steps 0..T-1, each chunk's copied by the threads that
        ran it (``cell_type.forward``'s ``output``).

    Returns
    -------
    hs : ndarray, shape (T+1, B, W)
        The hidden states in the whole call's layout.
    saved : list of ndarray or Checkpoints
        The cell's saved arrays of the whole call (k = 0), or the checkpoints.
    finals : list of ndarray, shape (B, ·)
        Each state's final value.
    """
    T, B = x.shape[:2]
    bounds = _bounds(T, c, reverse)
    per_segment = k // c if k else len(bounds)
    hs_all, saved_all, finals, inits = None, None, None, []
    # without checkpoints the kernels write each chunk into its slices of the whole
    # call's arrays (§63 of docs/perf-notes.md); the reference's chunks, and a
    # checkpointed call's (which keeps no saved arrays), are copied there
    whole = (cell_type.forward_arrays(x, w)
             if not k and module is _parallel._kernels_module() else None)
    if whole is not None:
        if _chunk_threads.splits_every_chunk(module, parts, x, w, bounds):
            return _chunk_threads.forward_direction(cell_type, module, parts, x, w, s0,
                                                    lengths, reverse, relu, bounds, whole,
                                                    output)
        hs_all, saved_all = whole[0], list(whole[1:])
    rows = np.arange(B)
    carried = None
    for i, (t0, t1) in enumerate(bounds):
        init = _chunk_init(carried, s0, lengths, t0, t1, reverse)
        if whole is not None and carried is not None and not reverse:
            # views of the slot this chunk's forward clears before it writes them there
            init = [a.copy() for a in init]
        if k and i % per_segment == 0:
            inits.append([a.copy() for a in init])
        hs, saved = cell_type.forward(
            module, _parts(module, parts, x, t0, t1, w), x[t0:t1], w, init,
            _chunk_lengths(lengths, t0, t1), reverse, relu,
            None if output is None else output[t0:t1],
            None if whole is None else tuple(_steps_of(a, T, t0, t1) for a in whole))
        seqs = cell_type.seqs(hs, saved)
        if finals is None:
            finals = [np.zeros(s.shape[1:], s.dtype) for s in seqs]
        if whole is None:
            if hs_all is None:
                hs_all = np.empty((T + 1,) + hs.shape[1:], hs.dtype)
                if not k:
                    saved_all = [np.empty((T + a.shape[0] - (t1 - t0),) + a.shape[1:],
                                          a.dtype) for a in saved]
            hs_all[t0:t1 + 1] = hs
            for kept, part in zip(saved_all or (), saved):
                kept[t0:t0 + part.shape[0]] = part
        for final, seq in zip(finals, seqs):
            if reverse:
                if t0 == 0:
                    final[...] = seq[0]
            else:
                ends = (lengths > t0) & (lengths <= t1)
                final[ends] = seq[lengths[ends] - t0, rows[ends]]
        carried = _carried(seqs, t0, t1, reverse)
    if k:
        segments = [bounds[i:i + per_segment] for i in range(0, len(bounds), per_segment)]
        return hs_all, Checkpoints(segments, inits), finals
    return hs_all, saved_all, finals


def _summed(total, dws):
    """``total`` + a chunk's weight gradients ``dws`` (in place; copies for the first
    chunk, ``total`` None); None entries stay None."""
    if total is None:
        return [None if g is None else g.copy() for g in dws]
    for t, g in zip(total, dws):
        if t is not None:
            t += g
    return total


def _carried_back(d0, lengths, t0: int, t1: int, reverse: bool, d_states0):
    """What BPTT carries to the next chunk it visits: ∂L/∂(the chunk's initial states)
    ``d0`` (of the rows ``lengths`` belongs to); in reverse only for rows whose sequence
    goes on past t1, the others' being their ∂L/∂(initial state), written into
    ``d_states0`` for the rows that start in the chunk."""
    if not reverse:
        return list(d0)
    starts = (lengths > t0) & (lengths <= t1)
    goes_on = (lengths > t1)[:, None]
    for result, d in zip(d_states0, d0):
        result[starts] = d[starts]
    return [np.where(goes_on, d, d.dtype.type(0)) for d in d0]


def _steps_of(a, T: int, t0: int, t1: int):
    """Chunk [t0, t1)'s slice of a whole call's array: rows t0..t1 of one of T + 1
    rows (states), t0..t1-1 of one of T (saved per step)."""
    return a[t0:t1 + 1] if a.shape[0] == T + 1 else a[t0:t1]


def _recomputed(cell_type, module, parts, x, w, s0, lengths, reverse, relu, segment,
                init):
    """The chunks of one segment run forward again from its checkpoint: a list of
    (t0, t1, hs, saved) in visiting order, each call as in the forward pass."""
    chunks, carried = [], None
    for i, (t0, t1) in enumerate(segment):
        chunk_init = init if i == 0 else _chunk_init(carried, s0, lengths, t0, t1, reverse)
        hs, saved = cell_type.forward(module, _parts(module, parts, x, t0, t1, w),
                                      x[t0:t1], w, chunk_init,
                                      _chunk_lengths(lengths, t0, t1), reverse, relu)
        chunks.append((t0, t1, hs, saved))
        carried = _carried(cell_type.seqs(hs, saved), t0, t1, reverse)
    return chunks


def _sliced(hs, saved, T, segment):
    """The chunks of ``segment`` as views of the whole call's arrays (k = 0)."""
    return [(t0, t1, hs[t0:t1 + 1], [_steps_of(a, T, t0, t1) for a in saved])
            for t0, t1 in segment]


def backward_direction(cell_type, module, parts, x, w, hs, saved, s0, dy, ds_n, lengths,
                       reverse, relu, c, dx):
    """BPTT of one layer-direction run by :func:`forward_direction`, chunk by chunk in
    the opposite order, recomputing each segment first when ``saved`` is a
    :class:`Checkpoints`.

    ∂x of the chunks is written into ``dx`` (T, B, K) as each chunk's δ is known,
    unless ``dx`` is None.

    Returns
    -------
    d_states0 : list of ndarray, shape (B, ·)
        ∂L/∂(each initial state).
    dws : list of ndarray or None
        The weight gradients, in the cell's order: the sum over chunks, in the order
        the backward visits them.
    """
    T = x.shape[0]
    s0 = list(s0)
    carry = list(ds_n)
    d_states0 = [np.zeros_like(a) for a in ds_n] if reverse else None
    dws_sum = None
    if isinstance(saved, Checkpoints):
        segments, inits = saved.segments, saved.inits
    else:
        segments, inits = [_bounds(T, c, reverse)], [None]
        if _chunk_threads.splits_every_chunk(module, parts, x, w, segments[0]):
            return _chunk_threads.backward_direction(
                cell_type, module, parts, x, w, hs, saved, dy, ds_n, lengths, reverse, relu,
                _sliced(hs, saved, T, segments[0])[::-1], dx)
    for segment, init in zip(segments[::-1], inits[::-1]):
        chunks = (_sliced(hs, saved, T, segment) if init is None else
                  _recomputed(cell_type, module, parts, x, w, s0, lengths, reverse, relu,
                              segment, init))
        while chunks:
            t0, t1, hs_c, saved_c = chunks.pop()      # each chunk freed once used
            d0, dws, delta = cell_type.backward(
                module, _parts(module, parts, x, t0, t1, w), x[t0:t1], w, hs_c, saved_c,
                dy[t0:t1], carry,
                _chunk_lengths(lengths, t0, t1), reverse, relu)
            dws_sum = _summed(dws_sum, dws)
            if dx is not None:
                module.input_grad(delta, w[0], dx[t0:t1], False)
            carry = _carried_back(d0, lengths, t0, t1, reverse, d_states0)
    return (d_states0 if reverse else carry), dws_sum
