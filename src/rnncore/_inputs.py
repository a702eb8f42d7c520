"""Validation of a call's inputs besides the parameters (:mod:`rnncore._params`): the
lengths, the initial states and their gradients, ∂L/∂output. Each returns a checked
array in the layout the walker (:mod:`rnncore.functional`) works in, or raises a
ValueError/TypeError naming the argument, the expected and the given.
"""
from __future__ import annotations

import numpy as np

from ._params import Config, as_array, check_float

__all__ = ["read_lengths", "as_weights_dtype", "state_widths", "check_state",
           "read_states", "padded_mask", "zero_padded", "read_dy"]


def read_lengths(lengths, B: int, T: int) -> np.ndarray:
    """Check the lengths a caller gave; a private (B,) int64 copy."""
    a = as_array("lengths", lengths)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"lengths must hold whole numbers; got {a!r}")
    elif a.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers; got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) for batch size {B}; "
                         f"got {a.shape}")
    if B and (a.min() < 1 or a.max() > T):
        raise ValueError(f"lengths must lie in [1, {T}] for a sequence length of {T}; "
                         f"got values from {a.min()} to {a.max()}")
    return a.astype(np.int64)


def as_weights_dtype(name: str, value, dtype: np.dtype) -> np.ndarray:
    """An array of floats in the weights' dtype, or a TypeError naming both dtypes."""
    if type(value) is np.ndarray and value.dtype == dtype:    # dtype is native: so is value
        return value
    a = as_array(name, value)
    check_float(name, a)
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but the weights are {dtype}; "
                        f"they must match")
    return a


def state_widths(cfg: Config) -> tuple[int, ...]:
    """The width of each state: (H,), or LSTM's (P or H, H) for h and c."""
    return (cfg.out_size, cfg.hidden_size) if cfg.cell == "lstm" else (cfg.hidden_size,)


def check_state(name: str, h, cfg: Config, B: int, unbatched: bool,
                 width: int | None = None) -> np.ndarray:
    """Validate one state (h0, c0, dh_n, dc_n); returns shape (L*D, B, width),
    C-contiguous."""
    width = cfg.hidden_size if width is None else width
    a = as_weights_dtype(name, h, cfg.dtype)
    LD = cfg.num_layers * cfg.D
    expected = (LD, width) if unbatched else (LD, B, width)
    if a.shape != expected:
        size = ("proj_size" if width == cfg.proj_size and not name.lstrip("d").startswith("c")
                else "hidden_size")
        raise ValueError(
            f"{name} must have shape {expected} for num_layers={cfg.num_layers}, "
            f"bidirectional={cfg.bidirectional}"
            + ("" if unbatched else f", batch={B}")
            + f", {size}={width}; got {a.shape}")
    return np.ascontiguousarray(a.reshape(LD, B, width))


def read_states(names: tuple[str, ...], value, cfg: Config, B: int, unbatched: bool,
                 allow_none: bool) -> list[np.ndarray | None]:
    """Validate the initial states (or their gradients) of a cell: a single array for
    one state, a pair (h, c) for LSTM's two; with ``allow_none`` a None entry of the
    pair stands for zeros (returned as None)."""
    widths = state_widths(cfg)
    if len(widths) == 1:
        return [check_state(names[0], value, cfg, B, unbatched)]
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{names[0]} of an LSTM must be a pair ({names[0]}, {names[1]}); "
                        f"got {type(value).__name__}")
    return [None if v is None and allow_none else
            check_state(name, v, cfg, B, unbatched, width)
            for name, v, width in zip(names, value, widths)]


_FEW_ROWS = 8                  # padded rows zeroed (or marked) a slice each, at most


def padded_mask(lengths: np.ndarray, T: int) -> np.ndarray | None:
    """(T, B) boolean, True at padded steps; None when nothing is padded. Where few
    rows are padded in a long call, each row's padded steps are marked as one slice
    (~2 µs a row): the comparison of every step with every length loops over B
    elements at a time, T times (T = 2000, B = 4, one row padded: 30 against 8 µs)."""
    rows = np.flatnonzero(lengths < T)
    if not len(rows):
        return None
    if len(rows) > _FEW_ROWS or len(rows) * 128 > T:
        return np.arange(T)[:, None] >= lengths[None, :]
    mask = np.zeros((T, len(lengths)), bool)
    for i in rows:
        mask[lengths[i]:, i] = True
    return mask


def zero_padded(a: np.ndarray, lengths: np.ndarray, padded: np.ndarray) -> None:
    """Zero a time-major (T, B, ·) array at the padded steps, in place: ``a[padded] = 0``
    with ``padded`` the mask of :func:`padded_mask` for ``lengths``. Where few rows are
    padded, each row's padded steps are one slice ``a[lengths[i]:, i]``, zeroed as such:
    cheaper than the mask's scan of every step of every row (T = 2000, B = 4, one row
    padded: 15 against 38 µs)."""
    rows = np.flatnonzero(lengths < a.shape[0])
    if len(rows) > _FEW_ROWS:
        a[padded] = 0
        return
    for i in rows:
        a[lengths[i]:, i] = 0


def read_dy(dy, record, shape_tm, zeroed: bool = True) -> np.ndarray:
    """Validate ∂L/∂output against the forward ``record``; returns it time-major, with
    padded steps zeroed (a private copy), or without ``zeroed`` as they are: for the
    kernels, which read dy only at each row's own steps
    (``tests/test_kernel_entries.py`` and ``tests/test_overhead_paths.py`` pin that)."""
    cfg = record.cfg
    if dy is None:
        return np.zeros(shape_tm, dtype=cfg.dtype)
    a = as_weights_dtype("dy", dy, cfg.dtype)
    _, B, DH = shape_tm
    T = record.full_T                    # the caller's steps; the record ran shape_tm[0]
    if record.unbatched:
        expected = (T, DH)
    elif record.batch_first:
        expected = (B, T, DH)
    else:
        expected = (T, B, DH)
    if a.shape != expected:
        raise ValueError(f"dy must have the shape of the forward output {expected}; "
                         f"got {a.shape}")
    if record.unbatched:
        a = a[:, None, :]
    elif record.batch_first:
        a = a.transpose(1, 0, 2)
    a = a[:shape_tm[0]]                  # the steps after the longest sequence: ignored
    if record.padded is not None and zeroed:
        a = np.array(a, order="C")       # a private copy: padded steps are ignored
        zero_padded(a, record.lengths, record.padded)
    elif a.strides[-1] != a.itemsize:
        a = np.ascontiguousarray(a)      # the kernels read rows of dy contiguously
    return a
