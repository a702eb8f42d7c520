"""The ``short-calls`` row of ``rnncore-bench`` (``--short-calls``): microseconds per call
of ``rnncore.torch.RNN`` against stock ``torch.nn.RNN`` on short calls, the calls of a
generation loop (T = 1) and of a language model's truncated-BPTT chunk (T = 35), at
B = 1, two layers, K = H, tanh, float32.

Each size is timed forward under ``no_grad`` and forward+backward (``zero_grad``, the
call, ``output.backward(dy)`` for a fixed random ``dy``, so that both sides accumulate
the same gradients). The drop-in and the stock module hold the same weights; their calls
take turns in rounds (:func:`rnncore.bench.timing.measure`), pinned to one CPU with the
BLAS pools and torch at one thread, and the median is reported. Issue 16's target is a
ratio drop-in / stock of at most 1 in every row.
"""
from __future__ import annotations

import numpy as np

from .report import cpu_model
from .timing import Limits, measure

__all__ = ["STEPS", "HIDDEN", "MODES", "short_call_rows", "format_short_calls_table",
           "main_short_calls"]

STEPS = (1, 35)
HIDDEN = (64, 256, 512, 1024)
MODES = ("forward", "forward+backward")
LAYERS = 2


def _callables(T: int, H: int, mode: str, dtype: str, seed: int = 0) -> dict:
    """{"stock": ..., "drop-in": ...}: one call of each module, as ``mode`` says."""
    import torch

    import rnncore.torch as rt

    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    stock = torch.nn.RNN(H, H, LAYERS, dtype=dt)
    ours = rt.RNN(H, H, LAYERS, dtype=dt)
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(T, 1, H, dtype=dt)
    dy = torch.randn(T, 1, H, dtype=dt)

    def make(module):
        if mode == "forward":
            def call():
                with torch.no_grad():
                    module(x)
        else:
            def call():
                module.zero_grad()
                module(x)[0].backward(dy)
        return call
    return {"stock": make(stock), "drop-in": make(ours)}


def short_call_rows(steps=STEPS, hidden=HIDDEN, modes=MODES, dtype: str = "float32",
                    budget: float = 0.3, rounds: int = 5, pin: bool = True,
                    progress=None) -> list[dict]:
    """Time the drop-in against stock torch on short calls, one row per size and mode.

    Parameters
    ----------
    steps : sequence of int
        T values.
    hidden : sequence of int
        H values (K = H, B = 1, two layers).
    modes : sequence of {"forward", "forward+backward"}
    dtype : {"float32", "float64"}
    budget : float
        Seconds of timed calls per module and row.
    rounds : int
    pin : bool
        Pin the process to one CPU while timing.
    progress : callable, optional
        Called with a short text as the timing goes.

    Returns
    -------
    list of dict
        Per row: ``T``, ``B``, ``H``, ``layers``, ``mode``, ``dtype``, ``isa`` (the
        kernels'), and the median µs per call of ``stock`` and ``drop-in``. Empty
        without torch.
    """
    try:
        import torch
    except ImportError:
        return []
    from .. import functional
    kernels = functional._kernels
    isa = kernels.isa() if kernels is not None else "numpy"
    rows = []
    threads = torch.get_num_threads()
    with Limits(1, pin):
        torch.set_num_threads(1)
        try:
            for mode in modes:
                for T in steps:
                    for H in hidden:
                        fns = _callables(T, H, mode, dtype)
                        label = f"{mode} T={T} H={H}"
                        times = measure(fns, budget, rounds, progress and (
                            lambda text, label=label: progress(f"{label}: {text}")))
                        rows.append({"T": T, "B": 1, "H": H, "layers": LAYERS,
                                     "mode": mode, "dtype": dtype, "isa": isa,
                                     **{k: float(np.median(v)) * 1e6
                                        for k, v in times.items()}})
        finally:
            torch.set_num_threads(threads)
    return rows


def format_short_calls_table(rows: list[dict]) -> str:
    """The rows as a text table: µs per call, and drop-in / stock against the target."""
    if not rows:
        return "short calls: no rows (torch is not installed)"
    r0 = rows[0]
    lines = [f"short calls: µs per call, B=1, K=H, {r0['layers']} layers, tanh, "
             f"{r0['dtype']}, kernels on {r0['isa']}, {cpu_model()}",
             f"{'mode':<18}{'T':>4}{'H':>6}{'stock':>10}{'drop-in':>10}{'ratio':>8}"
             f"  target ratio <= 1"]
    for r in rows:
        ratio = r["drop-in"] / r["stock"]
        lines.append(f"{r['mode']:<18}{r['T']:>4}{r['H']:>6}{r['stock']:>10.1f}"
                     f"{r['drop-in']:>10.1f}{ratio:>8.2f}  "
                     f"{'met' if ratio <= 1 else 'MISSED'}")
    lines.append("(stock: torch.nn.RNN; drop-in: rnncore.torch.RNN with the same weights; "
                 "forward under no_grad; forward+backward: zero_grad, the call, "
                 "output.backward(dy))")
    return "\n".join(lines)


def main_short_calls(args) -> int:
    """``rnncore-bench --short-calls``: print the rows (and write them as JSON with
    ``--json``); the kernels' instruction set is already forced by ``--isa``."""
    import json
    import sys

    quick = args.quick
    rows = short_call_rows(hidden=(64,) if quick else HIDDEN,
                           dtype=args.dtype or "float32",
                           budget=0.01 if quick else args.budget,
                           rounds=2 if quick else args.rounds, pin=args.pin,
                           progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_short_calls_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu_model(), "rows": rows}, f, indent=2)
    return 0
