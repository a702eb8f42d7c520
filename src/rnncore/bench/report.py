"""What a run reports: the header (machine, versions, BLAS, threads), the tables, the
Markdown page, the JSON and the plot."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from dataclasses import asdict

import numpy as np

from .. import __version__
from .cases import CASES, TARGETS, comparisons, targets
from .runners import IMPLS, NUMPY_IMPLS
from .timing import BLAS_OVERRIDES, ISA_BLAS_CORES

__all__ = ["environment", "cpu_model", "kernel_paths", "format_header", "format_table",
           "format_targets", "markdown_page", "to_json", "plot"]

MODES = {"fb": "forward+backward", "fwd": "forward"}
# Set on some machines to make OpenBLAS use another CPU's kernels; printed when set.
# Set by --native-blas: the variables it removed from the environment for the run.
REMOVED_ENV = "RNNCORE_BENCH_REMOVED_ENV"
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS", "RNNCORE_NUM_THREADS", "RNNCORE_BLAS_THREADS", "XLA_FLAGS")


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
        Keys: date, cpu, cpu_avx512, cores, kernel_isa, kernel_isa_best,
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
        "cpu": cpu_model(), "cores": os.cpu_count(), **kernel_paths(),
        "platform": platform.platform(), "versions": versions,
        "blas": [{**{k: info.get(k) for k in ("internal_api", "version", "architecture",
                                              "filepath")},
                  "threads_used": {
                      str(r.case.threads): p["num_threads"] for r in results
                      for p in r.pools if p["filepath"] == info.get("filepath")}}
                 for info in threadpool_info()],
        "threads": sorted({r.case.threads for r in results}),
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
    }


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
    lines = [
        f"rnncore {env['versions']['rnncore']} benchmark, {env['date']}",
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
    if "OPENBLAS_CORETYPE" in env["env"]:
        lines.append("note: OPENBLAS_CORETYPE makes OpenBLAS run that CPU type's kernels, not "
                     "this CPU's (slower NumPy and GEMM rate); --native-blas runs without it")
    return "\n".join(lines)


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


LEGEND = ("times: median ms per call over interleaved rounds; numpy: rnncore's NumPy "
          "reference backend; numpy-plain: an RNN as a NumPy user writes it "
          "(rnncore.bench.plain); GFLOP/s, ×NumPy and %GEMM are rnncore's cython backend "
          "(FLOPs 2·T·B·(K·H+H·H) per direction, forward+backward 3×; ×NumPy: the time "
          "of the faster of numpy and numpy-plain in the row over cython's; %GEMM: of the "
          "n³ np.matmul rate in the case's dtype measured with the case, n in the header, "
          "with OpenBLAS on the kernels of the instruction set rnncore's kernels ran: "
          "this CPU's own, or the forced one's under --isa; the header says which); "
          "IQR: the largest interquartile range of the row, relative to its median; "
          "targets: PERF.md's, ✓ met, ✗ missed, then ratios shown without a target "
          "(long-denormal: its time over long's, and the share of its states that are "
          "denormal in IEEE arithmetic, computed with the NumPy reference: rnncore's "
          "kernels flush denormals to zero); – : not installed or not measured")


def markdown_page(results, env: dict, command: str, forward_only: bool = False,
                  image: str | None = None) -> str:
    """docs/benchmarks.md: how the figures were obtained, the machine, and the tables.

    Parameters
    ----------
    results : list of Result
    env : dict
        :func:`environment` of the run.
    command : str
        The command line that made the page.
    forward_only : bool
        The run timed the forward pass only.
    image : str, optional
        Path of the ``--plot`` PNG relative to the page, shown under the tables.

    Returns
    -------
    str
    """
    e = env["env"]
    blas_vars = {k: v for k, v in e.items() if k.startswith("OPENBLAS_")}
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {env['date']}; regenerate it with the same command "
        "rather than editing it. `rnncore-bench --help` lists the options.",
        "",
        f"Every figure below comes from one CPU and one set of code paths: {env['cpu']} "
        f"({_avx512_text(env)}); {_paths_text(env)}. `rnncore-bench --isa avx2` (or "
        "`baseline`) times the paths of a CPU without AVX-512 on one that has it.",
        "",
        "## How these figures were obtained",
        "",
        "- The grid and the targets are below: one layer, tanh, float32 unless the case "
        "says otherwise (`-f64`), one thread unless it says otherwise (`-2t`). FLOPs are "
        "counted as 2·T·B·(K·H + H·H) per direction for the forward pass, 3× that for "
        "forward+backward.",
        "- Forward+backward is the forward pass, then BPTT of loss = Σ y·R for a fixed "
        "random R, with every gradient (input, h0, weights). Inputs, weights and R are "
        "random, never zeros (except in long-denormal, below). rnncore is timed "
        "through `rnncore.functional.forward` and "
        "`rnncore.functional.backward`; PyTorch as `nn.RNN` with `y.backward(R)`; "
        "`torch+rnncore` is `rnncore.torch.RNN`, timed exactly as stock torch; JAX as a "
        "`jax.jit` of a `lax.scan` RNN and `jit(grad(...))` of it.",
        "- Two plain-NumPy formulations are timed: `numpy`, rnncore's reference backend "
        "(`backend=\"numpy\"`, which mirrors the kernels: lengths, h0, any layer), and "
        "`numpy-plain` (`rnncore.bench.plain`), an RNN as a NumPy user writes it: the "
        "input projection of every step in one matmul, per step `h @ W_hh.T` and "
        "`np.tanh`, backward with the weight gradients and ∂x as one matmul each over all "
        "steps (tests check that its output and gradients agree with rnncore's). The "
        "`×NumPy` column, and the targets stated against NumPy, divide by the faster of "
        "the two in the same row and mode, so that rnncore is compared with the best "
        "NumPy measured rather than with the slower one.",
        "- Each case runs with `rnncore.set_num_threads` and `torch.set_num_threads` set to "
        "its thread count, every BLAS/OpenMP pool limited to at most that count "
        "(threadpoolctl; a pool already smaller, such as the one-thread OpenBLAS of "
        "rnncore's kernels, is left as it is; the header lists what each used), and "
        "every thread of the process pinned to that many CPUs (the least busy ones when "
        "the case starts).",
        "- Everything is called twice to warm up (JAX compiles there). Then the "
        "implementations take turns in interleaved rounds (5 by default), a block of "
        f"calls each, together with a {env['gemm_n']}³ `np.matmul` (the GEMM rate the "
        "`%GEMM` column divides by, below), "
        "so that load from other processes on a shared machine falls on all of them alike "
        "(on two threads each block starts with 0.15 s of untimed calls, while the "
        "previous library's idle BLAS/OpenMP workers stop spinning). "
        "Figures are medians of every timed call; the `IQR` column shows how noisy the "
        "row was. Quote the ratios rather than the absolute times.",
        "- `%GEMM` and the SGEMM target divide by the GEMM rate of OpenBLAS running the "
        "kernels of the instruction set rnncore's kernels ran: with this CPU's best, its "
        "native-kernel rate (the faster of the in-process product and, where the "
        "environment pins other OpenBLAS kernels, the same product in a child process "
        "without them); with a lower one forced by `--isa`, the rate of a child process "
        "whose `OPENBLAS_CORETYPE` names that instruction set's OpenBLAS core ("
        + ", ".join(f"{isa}: {core}" for isa, core in ISA_BLAS_CORES.items())
        + "), which is what a CPU whose best it is reaches; the header gives both rates.",
        "- long-denormal is long with inputs whose hidden states underflow into "
        "denormals within the first steps and stay there (`x` zero after its first "
        "step, `W_hh` scaled to a row sum of 0.1, biases a fraction of float32's "
        "smallest normal 1.2e-38; `rnncore.bench.runners.denormal_inputs`); its row "
        "gives its time over long's, the cost of denormal states, and the share of the "
        "states that are denormal in IEEE arithmetic, computed with the NumPy reference "
        "on the same inputs (rnncore's kernels flush denormals to zero, FTZ/DAZ, so "
        "their own states hold none).",
        "- The memory target counts as what must be kept the output and h_n, the hidden "
        "states, every gradient, and one copy of the parameters: forward's record "
        "keeps a private snapshot of the weights it used, so that backward "
        "differentiates exactly those whatever the caller does to the arrays in "
        "between.",
        "- Two-thread rows need both CPUs free of other work: with other load on the "
        "machine (the header gives the load average) they show contention, not scaling, "
        "NumPy's 2-thread OpenBLAS most of all.",
    ]
    if blas_vars:
        parts.append(
            "- This machine's environment sets "
            + ", ".join(f"`{k}={v}`" for k, v in blas_vars.items())
            + ". The run kept them, as a user's process would: they make every OpenBLAS "
            "in the process (NumPy's and the one rnncore's kernels link) pick kernels for "
            "that CPU type instead of this one's, which slows plain NumPy, NumPy's "
            "GEMM rate, and PyTorch and JAX where they use it. So that the slower GEMM "
            "does not flatter `%GEMM`, a child process without them (with this CPU's own "
            "OpenBLAS kernels) runs the same product among each case's calls, and this "
            "CPU's native-kernel rate is the faster of the two (both in the header). "
            "`rnncore-bench --native-blas` runs everything without them (it says "
            "so in its header).")
    parts += ["", "## The grid and the targets", "",
              "| case | T, B, K, H | what it stands for |", "|---|---|---|"]
    parts += [f"| {c.name} | {c.size} | {c.what} |" for c in CASES]
    parts += ["", "| case | target |", "|---|---|"]
    parts += [f"| {who} | {what} |" for who, what in TARGETS]
    parts += ["", "## Machine and versions", "", "```", format_header(env), "```", ""]
    for mode in (("fwd",) if forward_only else ("fb", "fwd")):
        parts += [f"## {MODES[mode].capitalize()}", "",
                  format_table(results, mode, markdown=True), ""]
    parts += [LEGEND + ".", ""]
    if image:
        parts += ["![Speed-up over the fastest plain NumPy against size](" + image + ")",
                  ""]
    return "\n".join(parts)


def to_json(results, env: dict) -> dict:
    """Every figure of a run as plain data (what ``--json`` writes).

    Returns
    -------
    dict
        ``environment`` (which CPU and which code paths: see :func:`environment`),
        ``sgemm_gflops`` (float32 GEMM rate by thread count) and ``cases``: per case
        its sizes, ``times_s`` and ``iqr_s`` ("impl/mode" keys), ``repeats``,
        ``gflops``, ``numpy_baseline`` (by mode, the NumPy implementation that
        ``speedup_vs_numpy`` divides by: the fastest measured), ``speedup_vs_numpy``,
        ``gemm_gflops`` (in this process), ``native_gemm_gflops`` and
        ``isa_gemm_gflops`` (the child processes' rates, None where not run),
        ``native_rate_gflops`` (this CPU's native-kernel rate), ``gemm_rate_gflops``
        (what ``%GEMM`` divides by), ``isa_blas_core``, ``memory_ratio``,
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
                     "float32" and not p[2].case.bidirectional]
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
