"""The ``checkpoint`` row of ``rnncore-bench`` (``--checkpoint``): checkpointed BPTT
(``forward(..., checkpoint="auto")``) against the full BPTT on a long sequence, T =
20,000, B = 4, K = H = 128, one layer, for the three cells: the peak memory of one
forward+backward and its time.

Memory is what ``tracemalloc`` reports as the peak during one forward+backward: NumPy
reports every array it allocates there (the kernels allocate their outputs as NumPy
arrays; their C workspaces of a few panels are not counted). The inputs (x, dy, the
weights) exist before and are not counted; the outputs (y, ∂x, the gradients) are, and
are also shown subtracted: what rnncore holds beyond the arrays it returns (the record
and the temporaries), which is what checkpointing shrinks. Times are medians of
interleaved rounds (:func:`rnncore.bench.timing.measure`), pinned to one CPU with the
BLAS pools at one thread.
"""
from __future__ import annotations

import tracemalloc

import numpy as np

from .report import cpu_model
from .timing import Limits, measure

__all__ = ["SIZES", "checkpoint_rows", "format_checkpoint_table", "main_checkpoint"]

SIZES = {"T": 20000, "B": 4, "K": 128, "H": 128}
MODES = {"full": 0, "auto": "auto"}


def _case(cell: str, T: int, B: int, K: int, H: int, dtype: str):
    from .. import functional as F
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(H)
    params = {k: rng.uniform(-bound, bound, s).astype(dtype)
              for k, s in F.param_shapes(K, H, 1, cell=cell).items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    return params, x, dy


def _forward_backward(cell, params, x, dy, checkpoint):
    from .. import functional as F
    y, h_n, record = F.forward(x, params, cell=cell, checkpoint=checkpoint)
    dx, dh0, grads = F.backward(record, dy)
    return y, dx, grads


def _peak(cell, params, x, dy, checkpoint) -> tuple[int, int]:
    """(peak bytes of one forward+backward, bytes of the outputs it returned)."""
    tracemalloc.start()
    try:
        y, dx, grads = _forward_backward(cell, params, x, dy, checkpoint)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, y.nbytes + dx.nbytes + sum(g.nbytes for g in grads.values())


def checkpoint_rows(cells=("rnn", "lstm", "gru"), dtype: str = "float32",
                    budget: float = 4.0, rounds: int = 5, pin: bool = True,
                    sizes: dict | None = None, progress=None) -> list[dict]:
    """Peak memory and time of forward+backward, full and checkpointed, for each cell.

    Parameters
    ----------
    cells : sequence of {"rnn", "lstm", "gru"}
    dtype : {"float32", "float64"}
    budget : float
        Seconds of timed calls per column, over all rounds (at least one call a round).
    rounds : int
    pin : bool
        Pin to one CPU (the least busy).
    sizes : dict, optional
        T, B, K, H (default :data:`SIZES`).
    progress : callable, optional
        Called with a short text as the measurement goes.

    Returns
    -------
    list of dict
        Per cell: its sizes, and per mode ("full", "auto") ``{mode}_peak`` and
        ``{mode}_held`` (bytes: the peak, and the peak less the outputs) and
        ``{mode}_ms`` (median milliseconds).
    """
    sizes = dict(SIZES if sizes is None else sizes)
    rows = []
    with Limits(1, pin):
        for cell in cells:
            params, x, dy = _case(cell, dtype=dtype, **sizes)
            row = {"cell": cell, "dtype": dtype, **sizes}
            for mode, checkpoint in MODES.items():
                peak, outputs = _peak(cell, params, x, dy, checkpoint)
                row[f"{mode}_peak"], row[f"{mode}_held"] = peak, peak - outputs
            times = measure({mode: (lambda c=checkpoint: _forward_backward(
                cell, params, x, dy, c)) for mode, checkpoint in MODES.items()},
                budget, rounds,
                progress=None if progress is None else
                (lambda text, c=cell: progress(f"{c}: {text}")))
            for mode in MODES:
                row[f"{mode}_ms"] = float(np.median(times[mode]) * 1e3)
            rows.append(row)
    return rows


def format_checkpoint_table(rows: list[dict]) -> str:
    """The rows as a text table: MiB and ms, and checkpointed over full."""
    if not rows:
        return "checkpoint: no rows"
    r0 = rows[0]
    mib = 1 / 2 ** 20
    lines = [f"checkpoint: forward+backward, T={r0['T']}, B={r0['B']}, K={r0['K']}, "
             f"H={r0['H']}, 1 layer, {r0['dtype']}, {cpu_model()}",
             f"{'cell':<6}{'full MiB':>10}{'auto MiB':>10}{'held full':>11}"
             f"{'held auto':>11}{'held ratio':>12}{'full ms':>10}{'auto ms':>10}"
             f"{'time ratio':>12}  target held <= 10%, time <= 1.4x"]
    for r in rows:
        held = r["auto_held"] / r["full_held"]
        slower = r["auto_ms"] / r["full_ms"]
        ok = "met" if held <= 0.10 and slower <= 1.4 else "MISSED"
        lines.append(f"{r['cell']:<6}{r['full_peak'] * mib:>10.1f}"
                     f"{r['auto_peak'] * mib:>10.1f}"
                     f"{r['full_held'] * mib:>11.1f}{r['auto_held'] * mib:>11.1f}"
                     f"{held:>11.1%} {r['full_ms']:>10.1f}{r['auto_ms']:>10.1f}"
                     f"{slower:>11.2f}x  {ok}")
    lines.append("(MiB: tracemalloc's peak during one forward+backward, the outputs y, dx "
                 "and the gradients included; held: the peak less those outputs, what "
                 "the record and temporaries take; full: checkpoint=0, auto: "
                 "checkpoint='auto')")
    return "\n".join(lines)


def main_checkpoint(args) -> int:
    """``rnncore-bench --checkpoint``: print the checkpoint row (and write it as JSON
    with ``--json``)."""
    import json
    import sys

    rows = checkpoint_rows(cells=("rnn",) if args.quick else ("rnn", "lstm", "gru"),
                           dtype=args.dtype or "float32",
                           budget=0.01 if args.quick else 4.0,
                           rounds=1 if args.quick else args.rounds, pin=args.pin,
                           progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_checkpoint_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu_model(), "rows": rows}, f, indent=2)
    return 0
