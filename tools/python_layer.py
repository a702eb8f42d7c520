"""Time the Python layer of ``functional.forward`` and ``functional.backward`` alone.

The kernels ``layer_forward``, ``layer_backward`` and ``input_grad`` are replaced by
functions that return results computed beforehand (the real kernels' results for the
same call), so what is timed is everything ``functional`` does around them: validation,
the plan, the weight snapshot, allocations, the record, the layouts. Every other kernel
function (``check_sizes``, ``blas_threads``, ...) is the real one.

``--against DIR`` loads a second version of the Python layer (the modules
``functional``, ``_params``, ``_cells``, ``_inputs``, ``_parallel`` and ``_chunks`` of
the package directory DIR, e.g. a copy of an older commit's ``src/rnncore``) beside the
installed one, sharing everything else (the kernels, the reference), and times the two
in interleaved rounds, so that both see the same load on a shared machine::

    taskset -c 1 python tools/python_layer.py --against /tmp/old/rnncore

It prints one line per version and sequence length T: the minimum and the median over
rounds of the mean µs per call, forward then backward (tiny's model: B = 1, K = 32,
H = 64, one layer, float32, default options).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types

import numpy as np

import rnncore
import rnncore.functional as F

_LAYER = ("_params", "_cells", "_inputs", "_chunks", "_parallel", "functional")


def _load_other(directory: str):
    """The ``functional`` module of the Python layer in ``directory``, as the package
    ``rnncore_other`` whose other modules are the installed rnncore's."""
    package = types.ModuleType("rnncore_other")
    package.__path__ = [directory]
    sys.modules["rnncore_other"] = package
    for name in ("_kernels", "reference", "cells", "_linalg", "_checkpoint"):
        if importlib.util.find_spec(f"rnncore.{name}") is not None:
            sys.modules[f"rnncore_other.{name}"] = importlib.import_module(
                f"rnncore.{name}")
            setattr(package, name, sys.modules[f"rnncore_other.{name}"])
    for name in _LAYER:
        module = importlib.import_module(f"rnncore_other.{name}")
        setattr(package, name, module)
    return sys.modules["rnncore_other.functional"]


def _stub_kernels(kernels, x, params, dy):
    """Replace the kernels by functions returning their real results for this call;
    returns a function that restores them."""
    real = {name: getattr(kernels, name)
            for name in ("layer_forward", "layer_backward", "input_grad")}
    _, _, record = F.forward(x, params)
    hs = record.states[0][0]
    H = hs.shape[2]
    back = real["layer_backward"](record.inputs[0], *record.weights[0][0][:2], hs,
                                  np.ascontiguousarray(dy),
                                  np.zeros((x.shape[1], H), x.dtype), record.lengths,
                                  False, False)
    kernels.layer_forward = lambda *args, **kwargs: hs
    kernels.layer_backward = lambda *args, **kwargs: back
    kernels.input_grad = lambda *args, **kwargs: None

    def restore():
        for name, fn in real.items():
            setattr(kernels, name, fn)
    return restore


def _mean_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--against", metavar="DIR",
                        help="a package directory whose Python layer to time as well")
    args = parser.parse_args()
    versions = {"this": F}
    if args.against:
        versions["other"] = _load_other(args.against)
    print("; ".join(f"{name}: {module.__file__}" for name, module in versions.items()))

    K, H, B = 32, 64, args.batch
    rng = np.random.default_rng(0)
    params = {key: rng.uniform(-0.2, 0.2, shape).astype(np.float32)
              for key, shape in F.param_shapes(K, H).items()}
    for T in args.steps:
        x = rng.standard_normal((T, B, K)).astype(np.float32)
        dy = rng.standard_normal((T, B, H)).astype(np.float32)
        restore = _stub_kernels(rnncore.functional._kernels, x, params, dy)
        try:
            calls = {}
            for name, module in versions.items():
                _, _, record = module.forward(x, params)
                calls[name, "forward"] = lambda m=module: m.forward(x, params)
                calls[name, "backward"] = lambda m=module, r=record: m.backward(r, dy)
            times = {key: [] for key in calls}
            for _ in range(args.rounds):
                for key, fn in calls.items():
                    times[key].append(_mean_us(fn, args.calls))
        finally:
            restore()
        for name in versions:
            print(f"{name:5s} T={T:4d} B={B}  " + "  ".join(
                f"{way} min {min(v):5.2f} median {statistics.median(v):5.2f} us"
                for (n, way), v in times.items() if n == name))


if __name__ == "__main__":
    main()
