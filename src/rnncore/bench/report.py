"""What a run reports: the header (machine, versions, BLAS, threads), the tables, the
JSON and the plot (the legend and the Markdown page are :mod:`rnncore.bench.page`'s)."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from dataclasses import asdict

import numpy as np

from .. import __version__, _parallel
from .cases import comparisons, targets
from .isa_env import ISA_ENV_MARK, library_isas
from .runners import IMPLS, NUMPY_IMPLS
from .timing import BLAS_OVERRIDES

__all__ = ["environment", "cpu_model", "kernel_paths", "format_header", "format_table",
           "format_targets", "to_json", "plot"]

MODES = {"fb": "forward+backward", "fwd": "forward"}
# Set on some machines to make OpenBLAS use another CPU's kernels; printed when set.
# Set by --native-blas: the variables it removed from the environment for the run.
REMOVED_ENV = "RNNCORE_BENCH_REMOVED_ENV"
# How the header names each cell.
CELL_TEXT = {"rnn": "Elman RNN (tanh)",
             "lstm": "LSTM (torch's equations and gate order i, f, g, o; FLOPs 4× the "
                     "Elman RNN's)",
             "gru": "GRU (torch's equations and gate order r, z, n; FLOPs 3× the Elman "
                    "RNN's)"}
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS", "RNNCORE_NUM_THREADS", "RNNCORE_BLAS_THREADS", "XLA_FLAGS",
            "NPY_DISABLE_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
            "ONEDNN_MAX_CPU_ISA")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_avx512(supported) -> bool | None:
    """Whether the CPU has AVX-512 (avx512f in /proc/cpuinfo's flags, else whether the
    kernels can run their avx512 passes); None when neither can tell."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return None if supported is None else "avx512" in supported


def kernel_paths() -> dict:
    """The code paths rnncore's kernels run now, and what this CPU could run.

    Returns
    -------
    dict
        ``kernel_isa``: the instruction set of the element-wise passes (``"baseline"``,
        ``"avx2"`` or ``"avx512"``; forced with ``rnncore-bench --isa``);
        ``kernel_isa_best``: the best one this CPU supports (what runs by default);
        ``whole_sequence_gemm``: who computes the whole-sequence products;
        ``blas_core``: the kernel set of the OpenBLAS the kernels call; ``cpu_avx512``:
        whether the CPU has AVX-512. Values are None where the Cython backend is not
        built.
    """
    try:
        from .. import _kernels
    except ImportError:
        _kernels = None
    supported = None if _kernels is None else tuple(_kernels.supported_isas())

    def ask(name):
        fn = getattr(_kernels, name, None)
        return None if fn is None else str(fn())
    return {"kernel_isa": ask("isa"),
            "kernel_isa_best": supported[-1] if supported else None,
            "whole_sequence_gemm": ask("whole_sequence_gemm"),
            "blas_core": ask("blas_core"),
            "cpu_avx512": _cpu_avx512(supported)}


def environment(results) -> dict:
    """Machine, versions, BLAS libraries and threads of a run.

    Parameters
    ----------
    results : list of Result

    Returns
    -------
    dict
        Keys: date, cells (the cells the run timed: "rnn", "lstm", "gru"), cpu,
        cpu_avx512, cores, kernel_isa, kernel_isa_best,
        whole_sequence_gemm, blas_core (see :func:`kernel_paths`: call it while the
        paths of the run are in force), platform, versions, blas, threads, cpus,
        gemm_n, env, load_average (1, 5, 15 min, at the end of the run), removed_env,
        and the GEMM rates by "dtype/threads" (medians over the cases): gemm_gflops (in
        this process), native_gemm_gflops (a child with this CPU's own OpenBLAS kernels,
        where the environment pins others), isa_gemm_gflops (a child with the OpenBLAS
        kernels of the instruction set the kernels were forced onto), native_rate_gflops
        (this CPU's native-kernel rate: the faster of the first two) and
        gemm_rate_gflops (the rate %GEMM divides by: :attr:`Result.gemm_rate`);
        isa_blas_core, the forced core type (None when the kernels ran this CPU's best
        instruction set), and gemm_cores, the core each child's OpenBLAS reported.
    """
    from threadpoolctl import threadpool_info
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "rnncore": __version__}
    for mod in ("torch", "jax"):
        if mod in sys.modules:
            versions[mod] = sys.modules[mod].__version__
    rates = {name: {} for name in ("gemm_gflops", "native_gemm_gflops", "isa_gemm_gflops",
                                   "native_rate_gflops", "gemm_rate_gflops")}
    for r in results:
        key = f"{r.case.dtype}/{r.case.threads}"
        for name, value in (("gemm_gflops", r.gemm_gflops),
                            ("native_gemm_gflops", r.native_gemm_gflops),
                            ("isa_gemm_gflops", r.isa_gemm_gflops),
                            ("native_rate_gflops", r.native_gemm_rate),
                            ("gemm_rate_gflops", r.gemm_rate)):
            if np.isfinite(value):
                rates[name].setdefault(key, []).append(value)
    gemm_n = {r.gemm_n for r in results}
    cores = {}
    for r in results:
        cores.update(r.gemm_cores)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cells": list(dict.fromkeys(r.case.cell for r in results)),
        "cpu": cpu_model(), "cores": os.cpu_count(), **kernel_paths(),
        "platform": platform.platform(), "versions": versions,
        "blas": [{**{k: info.get(k) for k in ("internal_api", "version", "architecture",
                                              "filepath")},
                  "threads_used": {
                      str(r.case.threads): p["num_threads"] for r in results
                      for p in r.pools if p["filepath"] == info.get("filepath")}}
                 for info in threadpool_info()],
        "threads": sorted({r.case.threads for r in results}),
        "dispatched": dict(_parallel.dispatched),
        "thread_speeds": {str(n): list(v) for n, v in sorted(_parallel._speeds.items())},
        "openmp_runtime": _openmp_runtime(),
        "cpus": {r.case.name: r.cpus for r in results},
        **{name: {k: float(np.median(v)) for k, v in by_key.items()}
           for name, by_key in rates.items()},
        "isa_blas_core": next((r.isa_blas_core for r in results if r.isa_blas_core),
                              None),
        "gemm_cores": cores,
        "gemm_n": max(gemm_n, default=1024),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "removed_env": os.environ.get(REMOVED_ENV, ""),
        "libraries_isa": os.environ.get(ISA_ENV_MARK),
        "library_isas": library_isas(),
    }


def _openmp_runtime():
    """The soname of the OpenMP runtime rnncore's split calls join, or None."""
    pool = _parallel._openmp_pool()
    return None if pool is None else pool.runtime()


def _dispatched_text(dispatched: dict, runtime, speeds=None) -> str:
    """Where rnncore's split calls ran their parts during the run, and the speeds
    their threads were last measured at (each relative to their mean; the parts are
    cut in proportion to them, equally while the fastest is within
    ``_parallel._SPEED_SPREAD`` times the slowest)."""
    text = (f"rnncore's split calls in this process: {dispatched.get('openmp', 0)} ran "
            f"their parts as a region of the pool of the OpenMP runtime another library "
            f"loaded ({runtime or 'none loaded'}), {dispatched.get('workers', 0)} on "
            f"rnncore's own worker threads")
    if speeds:
        text += ("; their threads' speeds at the end, relative to their mean: "
                 + ", ".join(" / ".join(f"{v:.2f}" for v in values)
                             for _, values in sorted(speeds.items())))
    return text


def format_header(env: dict) -> str:
    """The lines above the tables: machine, versions, BLAS, threads, GEMM rates, method."""
    def used(b):
        t = b.get("threads_used") or {}
        return ("; threads used: " + ", ".join(f"{v} in {k}-thread cases"
                                              for k, v in sorted(t.items()))) if t else ""
    blas = "\n".join(f"  {b['internal_api']} {b['version']}"
                     + (f" ({b['architecture']})" if b.get("architecture") else "")
                     + f": {b['filepath']}{used(b)}" for b in env["blas"])
    pinned = sorted({str(c) for c in env["cpus"].values() if c})
    def rates(by_key):
        return ", ".join(f"{v:.1f} GFLOP/s {k.split('/')[0]} on {k.split('/')[1]} thread"
                         + ("s" if k.split("/")[1] != "1" else "")
                         for k, v in by_key.items())
    gemm = rates(env["gemm_gflops"])
    cells = env.get("cells") or ["rnn"]
    lines = [
        f"rnncore {env['versions']['rnncore']} benchmark, {env['date']}",
        "cell: " + ", ".join(CELL_TEXT[c] for c in cells),
        f"machine: {env['cpu']}, {env['cores']} CPUs, " + _avx512_text(env),
        _paths_text(env),
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "BLAS/OpenMP libraries loaded (limited to at most the case's threads with "
        "threadpoolctl):",
        blas,
        "threads per case: " + ", ".join(map(str, env["threads"]))
        + " (BLAS, OpenMP, torch and rnncore); "
        + (f"pinned to CPU(s) {', '.join(pinned)}" if pinned else "not pinned"),
        f"GEMM {env['gemm_n']}³ np.matmul, median during the cases: {gemm}",
    ]
    if env.get("dispatched"):
        lines.append(_dispatched_text(env["dispatched"], env.get("openmp_runtime"),
                                      env.get("thread_speeds")))
    cores = env.get("gemm_cores", {})

    def reported(name):
        core = cores.get(name)
        return f"; its OpenBLAS reports the core {core}" if core else ""
    if env.get("native_gemm_gflops"):
        lines.append(f"GEMM with this CPU's own OpenBLAS kernels (a process without "
                     f"{', '.join(BLAS_OVERRIDES)}, timed among the cases"
                     f"{reported('native')}): {rates(env['native_gemm_gflops'])}")
    core = env.get("isa_blas_core")
    if core:
        others = ", ".join(k for k in BLAS_OVERRIDES if k != "OPENBLAS_CORETYPE")
        lines.append(f"GEMM with OpenBLAS's kernels for {env.get('kernel_isa')}, its "
                     f"{core} core (a process with OPENBLAS_CORETYPE={core} and without "
                     f"{others}, timed among the cases{reported('isa')}): "
                     f"{rates(env.get('isa_gemm_gflops', {}))}")
        lines.append(f"%GEMM divides by the {core}-kernel rate, OpenBLAS on the "
                     f"instruction set the kernels were forced onto "
                     f"({env.get('kernel_isa')}), not by this CPU's native-kernel rate: "
                     f"{rates(env.get('native_rate_gflops', {}))}")
    else:
        which = ("the faster of the two above" if env.get("native_gemm_gflops")
                 else "the np.matmul rate above")
        lines.append(f"%GEMM divides by this CPU's native-kernel rate, {which}: "
                     f"{rates(env.get('native_rate_gflops', {}))}")
    if env["env"]:
        lines.append("environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    if env.get("load_average"):
        lines.append("load average at the end of the run (1, 5, 15 min): "
                     + ", ".join(f"{v:.2f}" for v in env["load_average"])
                     + f" on {env['cores']} CPUs")
    if env.get("removed_env"):
        lines.append(f"environment: {env['removed_env']} removed for this run "
                     "(--native-blas)")
    lines.append(_libraries_text(env))
    if "OPENBLAS_CORETYPE" in env["env"] and not env.get("libraries_isa"):
        lines.append("note: OPENBLAS_CORETYPE makes OpenBLAS run that CPU type's kernels, not "
                     "this CPU's (slower NumPy and GEMM rate); --native-blas runs without it")
    return "\n".join(lines)


def _libraries_text(env: dict) -> str:
    """One line: the instruction set the other libraries ran (--isa, --isa-scope)."""
    found = ", ".join(f"{k} {v}" for k, v in env.get("library_isas", {}).items())
    isa = env.get("libraries_isa")
    if isa:
        return (f"every library limited to {isa}, as on a CPU without more (--isa-scope "
                f"all: the switches under 'environment'); they report: {found}")
    if env.get("kernel_isa") != env.get("kernel_isa_best"):
        return (f"only rnncore's kernels forced (--isa-scope rnncore): the other "
                f"libraries ran this CPU's best; they report: {found}")
    return f"the libraries' own code paths: {found}"


def _avx512_text(env: dict) -> str:
    has = env.get("cpu_avx512")
    return "AVX-512: " + ("unknown" if has is None else "yes" if has else "no")


def _paths_text(env: dict) -> str:
    """One line: the ISA of the element-wise passes, the products, the OpenBLAS core."""
    if env.get("kernel_isa") is None:
        return "rnncore kernels: (cython backend not built)"
    isa, best = env["kernel_isa"], env.get("kernel_isa_best")
    forced = (f" (forced with --isa; this CPU's best: {best})" if best and isa != best
              else " (this CPU's best)")
    return (f"rnncore kernels: element-wise passes {isa}{forced}; whole-sequence "
            f"products: {env.get('whole_sequence_gemm')}; their OpenBLAS runs its "
            f"{env.get('blas_core')} kernels")


def _ms(t) -> str:
    if t is None:
        return "–"
    ms = t * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _fmt(value: float, fmt: str) -> str:
    return fmt.format(value) if value is not None and np.isfinite(value) else "–"


def format_targets(result, by_name: dict, mode: str) -> str:
    """PERF.md's targets for one case and mode as "label: value ✓/✗", then the case's
    comparisons (:func:`rnncore.bench.comparisons`) as "label: value", "; "-separated."""
    return "; ".join([f"{label}: {fmt.format(v)} {'✓' if ok else '✗'}"
                      for label, v, ok, fmt in targets(result, by_name, mode)]
                     + [f"{label}: {fmt.format(v)}"
                        for label, v, fmt in comparisons(result, by_name, mode)])


def format_table(results, mode: str = "fb", markdown: bool = False) -> str:
    """One row per case: median ms of each implementation, rnncore's ratios, targets.

    Parameters
    ----------
    results : list of Result
    mode : {"fb", "fwd"}
        Forward+backward or forward.
    markdown : bool
        A Markdown table instead of aligned text.

    Returns
    -------
    str
    """
    impls = [i for i in IMPLS if any((i, mode) in r.samples for r in results)]
    by_name = {r.case.name: r for r in results}
    head = (["case", "T, B, K, H" if markdown else ""]
            + [f"{i} ms" for i in impls]
            + ["GFLOP/s", "×NumPy", "%GEMM", "IQR", "targets"])
    rows = []
    for r in results:
        times, spread = r.times, r.spread
        worst = max((spread[(i, mode)] for i in impls if (i, mode) in spread), default=None)
        rows.append([r.case.name, r.case.size if markdown else ""]
                    + [_ms(times.get((i, mode))) for i in impls]
                    + [_fmt(r.gflops("cython", mode), "{:.1f}"),
                       _fmt(r.speedup("cython", mode), "{:.1f}×"),
                       _fmt(100 * r.gemm_fraction("cython", mode), "{:.0f}%"),
                       _fmt(None if worst is None else 100 * worst, "{:.0f}%"),
                       format_targets(r, by_name, mode)])
    if not markdown:
        head, rows = head[:1] + head[2:], [row[:1] + row[2:] for row in rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

        def line(row):
            return "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
        return "\n".join([line(head), line(["-" * w for w in widths])]
                         + [line(row) for row in rows])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(row) + " |" for row in rows])


def to_json(results, env: dict) -> dict:
    """Every figure of a run as plain data (what ``--json`` writes).

    Returns
    -------
    dict
        ``environment`` (which CPU and which code paths: see :func:`environment`),
        ``sgemm_gflops`` (float32 GEMM rate by thread count) and ``cases``: per case
        ``case`` (its sizes, cell, dtype, threads, whether it has lengths), ``lengths``
        (the sequence lengths of a case with lengths, else None), ``times_s`` and
        ``iqr_s`` ("impl/mode" keys), ``repeats``, ``gflops``, ``numpy_baseline`` (by mode, the NumPy implementation that
        ``speedup_vs_numpy`` divides by: the fastest measured), ``speedup_vs_numpy``,
        ``gemm_gflops`` (in this process), ``native_gemm_gflops`` and
        ``isa_gemm_gflops`` (the child processes' rates, None where not run),
        ``native_rate_gflops`` (this CPU's native-kernel rate), ``gemm_rate_gflops``
        (what ``%GEMM`` divides by), ``isa_blas_core``, ``one_thread_gemm_gflops``
        (in a case on several threads, each probe's rate on one thread, in the same
        rounds: "gemm", "native", "isa"), ``gemm_scaling`` (the rate %GEMM divides by
        over its probe's one-thread rate; None on one thread), ``memory_ratio``,
        ``denormal_share`` (in IEEE arithmetic, from the NumPy reference), ``targets``
        and ``comparisons`` (ratios shown without a target, e.g. long-denormal over
        long).
    """
    by_name = {r.case.name: r for r in results}
    sgemm = {k.split("/")[1]: v for k, v in env["gemm_gflops"].items()
             if k.startswith("float32/")}
    cases = []
    for r in results:
        times, keys = r.times, list(r.samples)
        modes = sorted({m for _, m in keys})

        def finite(v):
            return v if np.isfinite(v) else None
        cases.append({
            "case": asdict(r.case),
            "lengths": (None if r.case.lengths_array is None
                        else r.case.lengths_array.tolist()),
            "flops_forward": r.case.flops_forward,
            "cpus": r.cpus,
            "times_s": {f"{i}/{m}": times[(i, m)] for i, m in keys},
            "iqr_s": {f"{i}/{m}": float(np.subtract(*np.percentile(v, [75, 25])))
                      for (i, m), v in r.samples.items()},
            "repeats": {f"{i}/{m}": int(v.size) for (i, m), v in r.samples.items()},
            "gflops": {f"{i}/{m}": finite(r.gflops(i, m)) for i, m in keys},
            "numpy_baseline": {m: r.baseline(m) for m in modes},
            "speedup_vs_numpy": {f"{i}/{m}": finite(r.speedup(i, m)) for i, m in keys},
            "gemm_gflops": r.gemm_gflops,
            "native_gemm_gflops": finite(r.native_gemm_gflops),
            "isa_gemm_gflops": finite(r.isa_gemm_gflops),
            "native_rate_gflops": finite(r.native_gemm_rate),
            "gemm_rate_gflops": finite(r.gemm_rate),
            "isa_blas_core": r.isa_blas_core,
            "one_thread_gemm_gflops": r.one_thread_gemm,
            "gemm_scaling": finite(r.gemm_scaling),
            "memory_ratio": finite(r.memory),
            "denormal_share": finite(r.denormals),
            "targets": {m: [{"target": label, "value": v, "met": ok}
                            for label, v, ok, _ in targets(r, by_name, m)] for m in modes},
            "comparisons": {m: [{"ratio": label, "value": v}
                                for label, v, _ in comparisons(r, by_name, m)]
                            for m in modes},
        })
    return {"environment": env, "sgemm_gflops": sgemm, "cases": cases}


def plot(results, path) -> None:
    """Write a PNG of each implementation's speed-up over the fastest plain NumPy
    (the ×NumPy column) against size.

    Parameters
    ----------
    results : list of Result
    path : str
        Where to write the PNG.
    """
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    modes = [m for m in ("fwd", "fb") if any((i, m) in r.samples for r in results
                                              for i in IMPLS)]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for k, impl in enumerate(IMPLS):
            pts = sorted(((r.case.flops(mode), r.speedup(impl, mode), r) for r in results
                          if np.isfinite(r.speedup(impl, mode))), key=lambda p: p[0])
            if impl in NUMPY_IMPLS or not pts:
                continue
            color = f"C{k}"
            # a line through the 1-thread float32 sizes, the variants as open markers
            plain = [p for p in pts if p[2].case.threads == 1 and p[2].case.dtype ==
                     "float32" and not p[2].case.bidirectional and not p[2].case.lengths]
            other = [p for p in pts if p not in plain]
            ax.plot([p[0] for p in plain], [p[1] for p in plain], "o-", color=color,
                    label=impl)
            ax.plot([p[0] for p in other], [p[1] for p in other], "o", color=color,
                    mfc="none")
            if impl == "cython":
                for x, y, r in pts:
                    ax.annotate(r.case.name, (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=8)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"FLOPs of one {MODES[mode]} call")
        ax.set_ylabel("speed-up over the fastest plain NumPy")
        ax.set_title(f"{MODES[mode]} (higher is faster)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
