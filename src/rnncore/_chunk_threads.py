"""A long layer-direction's chunks on several threads: each thread's rows through every
chunk.

:mod:`rnncore._chunks` runs a long call chunk by chunk, each chunk a call of the cell's
functions split over the threads: one dispatch per chunk, whose hand-offs (a woken
thread, the GIL) cost as much as a small chunk's products. Batch rows are independent
recurrences, so where every chunk splits (each row of every product computed alone) and
the call keeps every step (no checkpoints), the whole call runs in one dispatch: the
forward projects every step, then each thread takes its range of rows through every
chunk in turn; the backward takes each range of rows back through every chunk, then each
thread computes its part of every chunk's weight gradients. Each row meets the same
kernel calls on the same inputs as chunk by chunk, and the chunks' weight gradients are
summed in the same order: the same bits (§65–66 of docs/perf-notes.md).
"""
from __future__ import annotations

import functools

import numpy as np

from . import _chunks, _parallel

__all__ = ["splits_every_chunk", "forward_direction", "backward_direction"]


def _in_batch(arrays, B: int, r0: int) -> list:
    """Each (R, ·) array as rows r0..r0+R of a (B, ·) array of zeros: the kernels
    take a batch's states and read the rows they run."""
    batch = []
    for a in arrays:
        full = np.zeros((B,) + a.shape[1:], a.dtype)
        full[r0:r0 + a.shape[0]] = a
        batch.append(full)
    return batch


def splits_every_chunk(module, parts: int, x, w, bounds) -> bool:
    """Whether a call on ``parts`` > 1 threads splits the whole call and every one of
    its chunks (each row of every product computed alone: one product of every step, or
    the chunks' own, give each row the same bits)."""
    T = x.shape[0]
    return (parts > 1 and _chunks._parts(module, parts, x, 0, T, w) > 1
            and all(_chunks._parts(module, parts, x, t0, t1, w) > 1 for t0, t1 in bounds))


def forward_direction(cell_type, module, parts, x, w, s0, lengths, reverse, relu, bounds,
                      whole, output):
    """:func:`rnncore._chunks.forward_direction` where every chunk splits over
    ``parts`` threads, into the whole call's arrays ``whole``, in one dispatch for the
    call instead of one per chunk (§65 of docs/perf-notes.md): the input projection of
    every step, by ranges of steps, then each thread runs a range of batch rows
    (independent recurrences) through every chunk in turn. The same calls of the
    kernels per row as chunk by chunk: the same bits."""
    T, B = x.shape[:2]
    step_ranges = _parallel._by_speed(T, _parallel._section_parts(parts,
                                                                  T * B * w[0].size))
    row_ranges = _parallel._by_speed(B, _parallel._recurrence_parts(
        parts, T, B, cell_type.step_work(w)), _parallel._MIN_PART_ROWS)
    _parallel._in_one_dispatch(
        module,
        [functools.partial(cell_type.project, module, x, w, whole, reverse, s)
         for s in step_ranges],
        [functools.partial(_chunk_rows, cell_type, module, x, w, s0, lengths, reverse,
                           relu, bounds, whole, output, r) for r in row_ranges],
        (step_ranges, _parallel._if_alike(row_ranges, lengths)))
    hs_all, saved_all = whole[0], list(whole[1:])
    rows = np.arange(B)
    finals = []
    for seq in cell_type.seqs(hs_all, saved_all):
        # as the chunks leave them: the reverse state at step 0; the forward one at each
        # row's last step (0 for a row of no steps)
        if reverse:
            final = seq[0].copy()
        else:
            final = np.zeros(seq.shape[1:], seq.dtype)
            ends = lengths > 0
            final[ends] = seq[lengths[ends], rows[ends]]
        finals.append(final)
    return hs_all, saved_all, finals


def _chunk_rows(cell_type, module, x, w, s0, lengths, reverse, relu, bounds, whole,
                output, rows) -> None:
    """Rows [r0, r1) of a projected call (:func:`forward_direction`) through every
    chunk, each chunk's recurrence starting from the states these rows ended the
    previous one in (:func:`_chunk_init` on these rows alone)."""
    T, B = x.shape[:2]
    r0, r1 = rows
    s0_rows, lengths_rows = [s[r0:r1] for s in s0], lengths[r0:r1]
    carried = None
    for t0, t1 in bounds:
        init = _chunks._chunk_init(carried, s0_rows, lengths_rows, t0, t1, reverse)
        out = tuple(_chunks._steps_of(a, T, t0, t1) for a in whole)
        cell_type.forward_rows_part(module, x[t0:t1], w, _in_batch(init, B, r0),
                                    _chunks._chunk_lengths(lengths, t0, t1), reverse,
                                    relu, out, rows,
                                    None if output is None else output[t0:t1])()
        carried = [s[r0:r1] for s in
                   _chunks._carried(cell_type.seqs(out[0], out[1:]), t0, t1, reverse)]


def backward_direction(cell_type, module, parts, x, w, hs, saved, dy, ds_n, lengths,
                       reverse, relu, chunks, dx):
    """:func:`rnncore._chunks.backward_direction` without checkpoints where every
    chunk splits over ``parts`` threads, in one dispatch for the call instead of one per
    chunk (§66 of docs/perf-notes.md): each thread takes a range of batch rows back
    through every chunk (``chunks``, (t0, t1, hs, saved) in the backward's order),
    then, past a barrier, computes its part of every chunk's weight gradients and ∂x of
    some chunks; the chunks' weight gradients are summed here in the backward's order.
    Every chunk's gradient arrays are alive at once (δ of the whole call, as one call
    has it). The same kernel calls per row and per element as chunk by chunk: the same
    bits."""
    T, B = x.shape[:2]
    gs = [cell_type.backward_arrays(x[t0:t1], w, hs_c) for t0, t1, hs_c, _ in chunks]
    d_states0 = [np.zeros_like(a) for a in ds_n]
    row_work = cell_type.step_work(w)
    n = _parallel._section_parts(parts, T * B * (w[0].size + row_work))
    rows = _parallel._by_speed(B, _parallel._recurrence_parts(parts, T, B, row_work),
                               _parallel._MIN_PART_ROWS)
    _parallel._in_one_dispatch(
        module,
        [functools.partial(_chunk_rows_back, cell_type, module, x, w, dy, ds_n, lengths,
                           reverse, relu, chunks, gs, d_states0, r) for r in rows],
        [functools.partial(_chunk_weights, cell_type, module, x, w, reverse, chunks, gs,
                           dx, i, n, part)
         for i, part in enumerate(_parallel._weight_parts(n))],
        (_parallel._if_alike(rows, lengths), None))
    dws_sum = None
    for g in gs:
        dws_sum = _chunks._summed(dws_sum, cell_type.backward_result(g)[1])
    return d_states0, dws_sum


def _chunk_rows_back(cell_type, module, x, w, dy, ds_n, lengths, reverse, relu, chunks,
                     gs, d_states0, rows) -> None:
    """Rows [r0, r1) of BPTT's recurrence back through every chunk (see
    :func:`backward_direction`), each chunk's ∂L/∂(final states) of these rows
    carried from the chunk before it in the backward's order, as
    :func:`rnncore._chunks.backward_direction` carries them for all rows; their
    ∂L/∂(initial states) into ``d_states0``."""
    B = x.shape[1]
    r0, r1 = rows
    lengths_rows = lengths[r0:r1]
    carry = [a[r0:r1] for a in ds_n]
    for (t0, t1, hs_c, saved_c), g in zip(chunks, gs):
        cell_type.backward_rows(module, w, hs_c, saved_c, dy[t0:t1],
                                _in_batch(carry, B, r0),
                                _chunks._chunk_lengths(lengths, t0, t1), reverse, relu, g,
                                rows)
        carry = _chunks._carried_back(
            [a[r0:r1] for a in cell_type.backward_result(g)[0]], lengths_rows, t0, t1,
            reverse, [a[r0:r1] for a in d_states0])
    if not reverse:
        for result, d in zip(d_states0, carry):
            result[r0:r1] = d


def _chunk_weights(cell_type, module, x, w, reverse, chunks, gs, dx, i, n, part) -> None:
    """Part ``part`` (the kernels' ``backward_weights``' argument), the i-th of n, of
    every chunk's weight gradients, and ∂x = δ W_ih of every n-th chunk from the i-th
    (see :func:`backward_direction`)."""
    for j, ((t0, t1, hs_c, _), g) in enumerate(zip(chunks, gs)):
        cell_type.backward_weights(module, x[t0:t1], hs_c, reverse, g, part)
        if dx is not None and j % n == i:
            module.input_grad(g.delta, w[0], dx[t0:t1], False)
