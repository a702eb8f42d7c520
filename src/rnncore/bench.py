"""``rnncore-bench``: time rnncore against its NumPy reference and the frameworks people
would otherwise use, over the size grid of PERF.md.

Every case is timed with BLAS/OpenMP threads limited (threadpoolctl), rnncore's own
threads set to the same count, the process pinned to that many cores where the OS allows,
after a warm-up, repeated, the median reported. Each report carries the NumPy reference
and the single-core (or n-core) SGEMM rate measured in the same run, so the figures read
as ratios that survive a noisy, shared machine.

Run ``rnncore-bench --help`` for the options; ``python -m rnncore.bench`` is the same.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__, functional, set_num_threads
from .rnn import RNN

__all__ = ["Case", "CASES", "make_runners", "run", "main"]


@dataclass(frozen=True)
class Case:
    """One size of the grid: T steps, B batch, K input, H hidden."""

    name: str
    T: int
    B: int
    K: int
    H: int
    bidirectional: bool = False
    dtype: str = "float32"
    threads: int = 1
    what: str = ""

    @property
    def flops_forward(self) -> float:
        """FLOPs of the forward pass, counted for every direction."""
        D = 2 if self.bidirectional else 1
        return 2.0 * D * self.T * self.B * (self.K * self.H + self.H * self.H)


CASES = [
    Case("tiny", 100, 1, 32, 64, what="one sequence: per-step overhead is everything"),
    Case("small", 100, 16, 64, 128, what="small model, small batch"),
    Case("medium", 100, 32, 256, 256, what="the common middle"),
    Case("large", 50, 64, 512, 1024, what="BLAS-bound"),
    Case("long", 2000, 4, 16, 32, what="long sequence, tiny state: latency of one step"),
    Case("medium-bi", 100, 32, 256, 256, bidirectional=True, what="bidirectional, 1 thread"),
    Case("medium-bi-2t", 100, 32, 256, 256, bidirectional=True, threads=2,
         what="bidirectional, 2 threads"),
    Case("medium-f64", 100, 32, 256, 256, dtype="float64", what="float64"),
]
QUICK = [Case("tiny", 10, 1, 8, 16), Case("small", 10, 4, 16, 32),
         Case("medium-bi", 10, 4, 16, 32, bidirectional=True),
         Case("medium-f64", 10, 4, 16, 32, dtype="float64")]

IMPLS = ("numpy", "cython", "torch", "torch+rnncore", "jax")
# Variables that make OpenBLAS use another CPU's kernels (set on some machines to work
# around old OpenBLAS builds); --native-blas runs without them.
_BLAS_OVERRIDES = {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}


# --------------------------------------------------------------------------- runners

def _inputs(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(case.dtype)
    D = 2 if case.bidirectional else 1
    x = rng.standard_normal((case.T, case.B, case.K)).astype(dt)
    R = rng.standard_normal((case.T, case.B, D * case.H)).astype(dt)
    rnn = RNN(case.K, case.H, bidirectional=case.bidirectional, dtype=dt, seed=seed)
    return rnn.params, x, R


def _rnncore_runners(case, backend):
    params, x, R = _inputs(case)

    def forward():
        functional.forward(x, params, backend=backend)

    def forward_backward():
        _, _, record = functional.forward(x, params, backend=backend)
        functional.backward(record, R)

    return forward, forward_backward


def _torch_runners(case, module_class):
    import torch

    params, x, R = _inputs(case)
    tdt = torch.float64 if case.dtype == "float64" else torch.float32
    module = module_class(case.K, case.H, bidirectional=case.bidirectional).to(tdt)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    Rt = torch.from_numpy(R)

    def forward():
        with torch.no_grad():
            module(xt)

    def forward_backward():
        xt.grad = None
        module.zero_grad(set_to_none=True)
        y, _ = module(xt)
        y.backward(Rt)

    return forward, forward_backward


def _jax_runners(case):
    import jax
    import jax.numpy as jnp

    if case.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    params, x, R = _inputs(case)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    xj, Rj = jnp.asarray(x), jnp.asarray(R)

    def direction(p, x, sfx):
        w_ih, w_hh = p["weight_ih_l0" + sfx], p["weight_hh_l0" + sfx]
        b = p["bias_ih_l0" + sfx] + p["bias_hh_l0" + sfx]
        xp = x @ w_ih.T + b                          # input projection, all steps

        def step(h, a):
            h = jnp.tanh(a + h @ w_hh.T)
            return h, h

        h0 = jnp.zeros((x.shape[1], w_hh.shape[0]), x.dtype)
        return jax.lax.scan(step, h0, xp)[1]

    def rnn(p, x):
        y = direction(p, x, "")
        if case.bidirectional:
            y = jnp.concatenate([y, direction(p, x[::-1], "_reverse")[::-1]], axis=-1)
        return y

    fwd = jax.jit(rnn)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(rnn(p, x) * Rj), argnums=(0, 1)))

    def forward():
        fwd(p, xj).block_until_ready()

    def forward_backward():
        jax.block_until_ready(grad(p, xj))

    return forward, forward_backward


def make_runners(case: Case, impl: str):
    """The (forward, forward+backward) callables of one implementation at one case.

    Parameters
    ----------
    case : Case
    impl : {"numpy", "cython", "torch", "torch+rnncore", "jax"}

    Returns
    -------
    tuple of two callables, or None when the implementation is not installed.
    """
    try:
        if impl in ("numpy", "cython"):
            if impl not in functional.backends():
                return None
            return _rnncore_runners(case, impl)
        if impl == "torch":
            import torch
            return _torch_runners(case, torch.nn.RNN)
        if impl == "torch+rnncore":
            from . import torch as rnncore_torch
            return _torch_runners(case, rnncore_torch.RNN)
        if impl == "jax":
            return _jax_runners(case)
    except ImportError:
        return None
    raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")


# --------------------------------------------------------------------------- timing

def _time(fn, budget: float, min_repeats: int = 3, max_repeats: int = 10_000):
    """Median and interquartile range (seconds) of fn() over ~budget seconds."""
    fn()                                    # warm-up (and JIT compile)
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    n = int(min(max_repeats, max(min_repeats, budget / max(once, 1e-9))))
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1), n


def sgemm_rate(repeats: int = 5) -> float:
    """GFLOP/s of a 1024³ float32 ``np.matmul``, best of ``repeats`` (threads as limited)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = min(_timed(lambda: np.matmul(a, a, out=out)) for _ in range(repeats))
    return 2 * 1024 ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def memory_ratio(case: Case) -> float:
    """Peak memory traced during one cython forward+backward over what it must keep.

    What must be kept: the output, the hidden states of the record and every gradient
    (input, h0 and parameters) — the arrays a caller of forward+backward ends up holding.
    """
    if "cython" not in functional.backends():
        return float("nan")
    params, x, R = _inputs(case)
    tracemalloc.start()
    try:
        y, h_n, record = functional.forward(x, params, backend="cython")
        dx, dh0, grads = functional.backward(record, R)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    kept = (y.nbytes + h_n.nbytes + dx.nbytes + dh0.nbytes
            + sum(g.nbytes for g in grads.values())
            + sum(hs.nbytes for layer in record.states for hs in layer))
    return peak / kept


@dataclass
class Result:
    """Timings of one case: seconds per call, by implementation and mode."""

    case: Case
    times: dict = field(default_factory=dict)      # (impl, mode) -> median seconds
    spread: dict = field(default_factory=dict)     # (impl, mode) -> IQR seconds
    memory: float = float("nan")

    def speedup(self, impl, mode, over="numpy"):
        a, b = self.times.get((over, mode)), self.times.get((impl, mode))
        return a / b if a and b else float("nan")

    def gflops(self, impl, mode):
        t = self.times.get((impl, mode))
        flops = self.case.flops_forward * (3 if mode == "fb" else 1)
        return flops / t / 1e9 if t else float("nan")


class _Limits:
    """Threads and CPU affinity for one case; restores what it found."""

    def __init__(self, threads: int, pin: bool):
        self.threads, self.pin = threads, pin

    def __enter__(self):
        from threadpoolctl import threadpool_limits
        self._limits = threadpool_limits(limits=self.threads)
        set_num_threads(self.threads)
        self._affinity = None
        if self.pin and hasattr(os, "sched_setaffinity"):
            self._affinity = os.sched_getaffinity(0)
            cpus = sorted(self._affinity)[:self.threads]
            os.sched_setaffinity(0, cpus)
        try:
            import torch
            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        except ImportError:
            self._torch_threads = None
        return self

    def __exit__(self, *exc):
        self._limits.restore_original_limits()
        set_num_threads(None)
        if self._affinity is not None:
            os.sched_setaffinity(0, self._affinity)
        if self._torch_threads is not None:
            import torch
            torch.set_num_threads(self._torch_threads)


def run(cases, impls=IMPLS, forward_only=False, budget=0.3, pin=True, progress=None):
    """Time every implementation at every case.

    Parameters
    ----------
    cases : list of Case
    impls : sequence of str
        Implementations to try; those not installed are skipped.
    forward_only : bool
        Time only the forward pass.
    budget : float
        Seconds of repeats per measurement (at least 3 repeats).
    pin : bool
        Pin the process to as many CPUs as the case has threads.
    progress : callable, optional
        Called with a short description before each measurement.

    Returns
    -------
    results : list of Result
    sgemm : dict of int to float
        The SGEMM rate (GFLOP/s) measured at each thread count used.
    """
    results, sgemm = [], {}
    modes = ("fwd",) if forward_only else ("fwd", "fb")
    for case in cases:
        result = Result(case)
        with _Limits(case.threads, pin):
            if case.threads not in sgemm:
                sgemm[case.threads] = sgemm_rate()
            for impl in impls:
                runners = make_runners(case, impl)
                if runners is None:
                    continue
                for mode, fn in zip(("fwd", "fb"), runners):
                    if mode not in modes:
                        continue
                    if progress:
                        progress(f"{case.name} {impl} {mode}")
                    med, iqr, _ = _time(fn, budget)
                    result.times[(impl, mode)] = med
                    result.spread[(impl, mode)] = iqr
            if not forward_only:
                result.memory = memory_ratio(case)
        results.append(result)
    return results, sgemm


# --------------------------------------------------------------------------- report

def _targets(result: Result, sgemm: dict, results_by_name: dict, mode: str) -> list[str]:
    """PERF.md's targets for this case, each as 'what: measured ✓/✗'."""
    name, out = result.case.name, []
    if result.case not in CASES:
        return out          # PERF.md's targets are stated for the grid's sizes only

    def check(label, value, ok, fmt="{:.1f}×"):
        if np.isfinite(value):
            out.append(f"{label} {fmt.format(value)} {'✓' if ok else '✗'}")

    base = name.replace("-2t", "")
    if base in ("tiny", "long"):
        s = result.speedup("cython", mode)
        check("≥10× NumPy:", s, s >= 10)
    if base == "small":
        s = result.speedup("cython", mode)
        check("≥1.5× NumPy:", s, s >= 1.5)
    if base in ("medium", "large"):
        frac = result.gflops("cython", mode) / sgemm[result.case.threads]
        check("≥85% SGEMM:", 100 * frac, frac >= 0.85, "{:.0f}%")
    if name == "medium-bi-2t" and "medium-bi" in results_by_name:
        one = results_by_name["medium-bi"].times.get(("cython", mode))
        two = result.times.get(("cython", mode))
        if one and two:
            check("≥1.8× 1 thread:", one / two, one / two >= 1.8)
    for peer in ("torch", "jax"):
        s = result.speedup("cython", mode, over=peer)
        check(f"> {peer}:", s, s > 1)
    s = result.speedup("torch+rnncore", mode, over="torch")
    check("torch+rnncore > torch:", s, s > 1)
    if mode == "fb" and np.isfinite(result.memory):
        check("mem ≤1.5×:", result.memory, result.memory <= 1.5, "{:.2f}×")
    return out


def environment(threads_used) -> dict:
    """Machine, versions, BLAS and threads this run used."""
    from threadpoolctl import threadpool_info
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "rnncore": __version__}
    for mod in ("torch", "jax"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    try:
        from . import _kernels
        isa = _kernels.isa()
    except ImportError:
        isa = "(not built)"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "versions": versions,
        "kernel_isa": isa,
        "blas": [{k: info.get(k) for k in ("internal_api", "version", "architecture",
                                           "num_threads", "filepath")}
                 for info in threadpool_info()],
        "threads": sorted(threads_used),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OMP_NUM_THREADS") if k in os.environ},
    }


def format_table(results, sgemm, forward_only=False, markdown=False) -> str:
    """The report: one row per case and mode, times in ms, ratios, targets."""
    impls = [i for i in IMPLS if any((i, "fwd") in r.times for r in results)]
    by_name = {r.case.name: r for r in results}
    head = (["case", "mode"] + [f"{i} ms" for i in impls]
            + ["GFLOP/s", "×NumPy", "%SGEMM", "targets"])
    rows = []
    for r in results:
        for mode in (("fwd",) if forward_only else ("fwd", "fb")):
            times = [r.times.get((i, mode)) for i in impls]
            rows.append([r.case.name, "fwd+bwd" if mode == "fb" else "fwd"]
                        + [f"{t * 1e3:.3f}" if t else "–" for t in times]
                        + [_fmt(r.gflops("cython", mode), "{:.1f}"),
                           _fmt(r.speedup("cython", mode), "{:.1f}×"),
                           _fmt(100 * r.gflops("cython", mode) / sgemm[r.case.threads],
                                "{:.0f}%"),
                           "; ".join(_targets(r, sgemm, by_name, mode))])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _fmt(value: float, fmt: str) -> str:
    return fmt.format(value) if np.isfinite(value) else "–"


def format_header(env: dict, sgemm: dict) -> str:
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}) "
                     f"{os.path.basename(b['filepath'] or '')}" for b in env["blas"])
    lines = [
        f"rnncore {env['versions']['rnncore']} benchmark — {env['cpu']}, "
        f"{env['cores']} cores; kernels: {env['kernel_isa']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"BLAS: {blas}",
        "threads per case: " + ", ".join(map(str, env["threads"]))
        + " (BLAS limited with threadpoolctl, process pinned to as many CPUs)",
        "SGEMM 1024³ float32 in this run: "
        + ", ".join(f"{v:.1f} GFLOP/s on {k} thread{'s' if k > 1 else ''}"
                    for k, v in sorted(sgemm.items())),
    ]
    if env["env"]:
        lines.append("environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    lines.append("times: median ms per call; GFLOP/s, ×NumPy and %SGEMM are rnncore's "
                 "cython backend; forward FLOPs 2·T·B·(K·H+H·H) per direction, "
                 "forward+backward 3×")
    return "\n".join(lines)


def plot(results, path):
    """Write a PNG of the speed-up over the NumPy reference at each case."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = [r.case.name for r in results]
    xs = np.arange(len(results))
    impls = [i for i in IMPLS if i != "numpy" and any((i, "fb") in r.times for r in results)]
    mode = "fb" if any((i, "fb") in r.times for r in results for i in impls) else "fwd"
    for k, impl in enumerate(impls):
        ax.bar(xs + (k - (len(impls) - 1) / 2) * 0.8 / len(impls),
               [r.speedup(impl, mode) for r in results], 0.8 / len(impls), label=impl)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(xs, names, rotation=20)
    ax.set_ylabel("speed-up over the NumPy reference")
    ax.set_title(f"rnncore, {'forward+backward' if mode == 'fb' else 'forward'} "
                 "(higher is faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _progress_printer(total):
    try:
        from tqdm import tqdm
    except ImportError:
        count = [0]

        def show(text):
            count[0] += 1
            print(f"[{count[0]}/{total}] {text}", file=sys.stderr, flush=True)
        return show, lambda: None
    bar = tqdm(total=total, file=sys.stderr, leave=False)

    def show(text):
        bar.set_description(text)
        bar.update(1)
    return show, bar.close


def main(argv=None) -> int:
    """The ``rnncore-bench`` command."""
    parser = argparse.ArgumentParser(
        prog="rnncore-bench",
        description="Time rnncore's backends against the NumPy reference, PyTorch and "
                    "JAX (when installed) over the grid of PERF.md.")
    names = [c.name for c in CASES]
    parser.add_argument("--cases", default=",".join(names),
                        help=f"comma-separated cases (default: all): {', '.join(names)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="run every case on this many threads (default: each case's "
                             "own, 1 except medium-bi-2t)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="run every case in this dtype (default: each case's own)")
    parser.add_argument("--forward-only", action="store_true", help="time the forward pass only")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"comma-separated implementations to try: {', '.join(IMPLS)}")
    parser.add_argument("--budget", type=float, default=0.3,
                        help="seconds of repeats per measurement (default 0.3)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to CPUs")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long smoke run on small sizes")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write the report as Markdown (how docs/benchmarks.md is made)")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the speed-ups")
    parser.add_argument("--native-blas", action="store_true",
                        help="run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so that "
                             "NumPy's and rnncore's OpenBLAS pick their kernels for this CPU "
                             "(both variables are removed for this command only)")
    args = parser.parse_args(argv)
    if args.native_blas and _BLAS_OVERRIDES & set(os.environ):
        env = {k: v for k, v in os.environ.items() if k not in _BLAS_OVERRIDES}
        argv = sys.argv[1:] if argv is None else list(argv)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "rnncore.bench", *argv], env)

    if args.quick:
        cases, budget = QUICK, 0.01
    else:
        wanted = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown case(s) {unknown}; choose from {names}")
        cases, budget = [c for c in CASES if c.name in wanted], args.budget
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1; got {args.threads}")
        cases = [Case(**{**asdict(c), "threads": args.threads}) for c in cases]
    if args.dtype:
        cases = [Case(**{**asdict(c), "dtype": args.dtype}) for c in cases]
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    bad = sorted(set(impls) - set(IMPLS))
    if bad:
        parser.error(f"unknown implementation(s) {bad}; choose from {list(IMPLS)}")
    if "jax" in impls:          # JAX reads its thread settings once, at import
        threads = max(c.threads for c in cases)
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                              f"intra_op_parallelism_threads={threads}")

    modes = 1 if args.forward_only else 2
    show, close = _progress_printer(len(cases) * len(impls) * modes)
    try:
        results, sgemm = run(cases, impls, args.forward_only, budget,
                             pin=not args.no_pin, progress=show)
    finally:
        close()
    env = environment({c.threads for c in cases})
    header = format_header(env, sgemm)
    print(header)
    print()
    print(format_table(results, sgemm, args.forward_only))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# Benchmarks\n\nGenerated by `rnncore-bench --markdown "
                    f"{args.markdown}`; do not edit by hand.\n\n```\n{header}\n```\n\n")
            f.write(format_table(results, sgemm, args.forward_only, markdown=True) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "sgemm_gflops": sgemm,
                       "cases": [{"case": asdict(r.case),
                                  "times_s": {f"{i}/{m}": t for (i, m), t in r.times.items()},
                                  "iqr_s": {f"{i}/{m}": t for (i, m), t in r.spread.items()},
                                  "memory_ratio": r.memory}
                                 for r in results]}, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
