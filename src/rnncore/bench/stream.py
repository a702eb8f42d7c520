"""The ``stream`` row of ``rnncore-bench`` (``--stream``): microseconds per inference
step of a stream (``rnn.stream()``, SPEC.md "Streaming") at B = 1, K = H = 64, for the
three cells, against torch's nn.RNNCell / nn.LSTMCell / nn.GRUCell under ``no_grad``.

Beside ``step`` (one call per step, Python included) the row times ``run`` over a chunk
and ``forward`` over the same steps, per step: a stream's chunk should cost what
``forward`` costs. A timed call is a block of :data:`STEPS` steps (a single sub-
microsecond call is below what ``time.perf_counter`` resolves); blocks of every column
take turns in rounds (:func:`rnncore.bench.timing.measure`), pinned to one CPU with the
BLAS pools at one thread, and the median is reported.
"""
from __future__ import annotations

import numpy as np

from .report import cpu_model
from .timing import Limits, measure

__all__ = ["STEPS", "COLUMNS", "stream_rows", "format_stream_table", "main_stream"]

STEPS = 100              # steps per timed block, and the length of run's chunk
COLUMNS = ("step", "run", "forward", "torch")
_TORCH_CELLS = {"rnn": "RNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}


def _models():
    from .. import GRU, LSTM, RNN
    return {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def _torch_block(cell: str, K: int, H: int, xs: np.ndarray, dtype: str):
    """A callable stepping torch's cell over ``xs`` (STEPS, B, K) without gradients, or
    None without torch."""
    try:
        import torch
    except ImportError:
        return None
    module = getattr(torch.nn, _TORCH_CELLS[cell])(K, H).to(getattr(torch, dtype))
    steps = list(torch.from_numpy(xs))
    B = xs.shape[1]
    zeros = torch.zeros(B, H, dtype=getattr(torch, dtype))
    state = [(zeros, zeros) if cell == "lstm" else zeros]

    def block():
        with torch.no_grad():
            s = state[0]
            for x_t in steps:
                s = module(x_t, s)
            state[0] = s
    return block


def stream_rows(cells=("rnn", "lstm", "gru"), batch: int = 1, input_size: int = 64,
                hidden_size: int = 64, dtype: str = "float32", budget: float = 0.4,
                rounds: int = 5, pin: bool = True, progress=None) -> list[dict]:
    """Time a stream's step and run, forward, and torch's cell, per step, for each cell.

    Parameters
    ----------
    cells : sequence of {"rnn", "lstm", "gru"}
    batch, input_size, hidden_size : int
        B, K and H.
    dtype : {"float32", "float64"}
    budget : float
        Seconds of timed blocks per column.
    rounds : int
    pin : bool
        Pin the process to one CPU while timing.
    progress : callable, optional
        Called with a short text as the timing goes.

    Returns
    -------
    list of dict
        Per cell: ``cell``, ``isa`` (the stream's), and the median µs per step of each
        of :data:`COLUMNS` (``torch`` None without torch).
    """
    models = _models()
    rng = np.random.default_rng(0)
    rows = []
    with Limits(1, pin):
        for cell in cells:
            rnn = models[cell](input_size, hidden_size, dtype=dtype, seed=0)
            stream = rnn.stream(batch_size=batch)
            xs = rng.standard_normal((STEPS, batch, input_size)).astype(dtype)
            steps = list(xs)                    # (B, K) rows, each C-contiguous

            def step_block(stream=stream, steps=steps):
                for x_t in steps:
                    stream.step(x_t)

            fns = {"step": step_block, "run": lambda s=stream, x=xs: s.run(x),
                   "forward": lambda r=rnn, x=xs: r.forward(x)}
            torch_block = _torch_block(cell, input_size, hidden_size, xs, dtype)
            if torch_block is not None:
                fns["torch"] = torch_block
            times = measure(fns, budget, rounds,
                            progress and (lambda text, c=cell: progress(f"{c}: {text}")))
            row = {"cell": cell, "isa": stream.isa, "B": batch, "K": input_size,
                   "H": hidden_size, "dtype": dtype}
            for column in COLUMNS:
                row[column] = (float(np.median(times[column])) / STEPS * 1e6
                               if column in times else None)
            rows.append(row)
    return rows


def format_stream_table(rows: list[dict]) -> str:
    """The rows as a text table: µs per step, and torch's over the stream's step."""
    head = (f"stream: µs per inference step, B={rows[0]['B']}, K={rows[0]['K']}, "
            f"H={rows[0]['H']}, {rows[0]['dtype']}, kernels on {rows[0]['isa']}, "
            f"{cpu_model()}") if rows else "stream: no rows"
    lines = [head, f"{'cell':<6}{'step':>9}{'run':>9}{'forward':>9}{'torch cell':>12}"
                   f"{'torch/step':>12}  target step <= 3 µs"]
    for r in rows:
        torch = "-" if r["torch"] is None else f"{r['torch']:.2f}"
        ratio = "-" if r["torch"] is None else f"{r['torch'] / r['step']:.1f}x"
        ok = "met" if r["step"] <= 3.0 else "MISSED"
        lines.append(f"{r['cell']:<6}{r['step']:>9.2f}{r['run']:>9.2f}{r['forward']:>9.2f}"
                     f"{torch:>12}{ratio:>12}  {ok}")
    lines.append(f"(step: one stream.step call per step, Python included; run: a "
                 f"{STEPS}-step chunk; forward: rnn.forward over the same {STEPS} steps; "
                 f"torch cell: nn.{{RNN,LSTM,GRU}}Cell under no_grad, one call per step)")
    return "\n".join(lines)


def main_stream(args) -> int:
    """``rnncore-bench --stream``: print the stream row (and write it as JSON with
    ``--json``); the kernels' instruction set is already forced by ``--isa``."""
    import json
    import sys

    rows = stream_rows(dtype=args.dtype or "float32",
                       budget=0.01 if args.quick else args.budget,
                       rounds=2 if args.quick else args.rounds, pin=args.pin,
                       progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_stream_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu_model(), "steps_per_block": STEPS, "rows": rows}, f,
                      indent=2)
    return 0
