"""The ``rnncore-bench`` command (also ``python -m rnncore.bench``)."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from .cases import CELLS, grid, quick, variants
from .isa_env import XLA_ISA_ENV, restart_environment
from .page import legend, markdown_page
from .report import MODES, REMOVED_ENV, environment, format_header, format_table, plot, \
    to_json
from .runners import IMPLS, xla_flags
from .timing import BLAS_OVERRIDES, run

__all__ = ["main"]

# The instruction sets the kernels are compiled for (rnncore._kernels.ISAS).
_ISAS = ("baseline", "avx2", "avx512")


def _progress(total: int):
    """A progress callback on stderr (tqdm when installed) and a function closing it."""
    try:
        from tqdm import tqdm
    except ImportError:
        count = [0]

        def show(text):
            count[0] += 1
            print(f"[{count[0]}/{total}] {text}", file=sys.stderr, flush=True)
        return show, lambda: None
    bar = tqdm(total=total, file=sys.stderr, leave=False, unit="step")

    def show(text):
        bar.set_description(text)
        bar.update(1)
    return show, bar.close


def _parser() -> argparse.ArgumentParser:
    names = [c.name for c in grid("rnn")]
    gated = [c.name for c in grid("lstm") if c.name not in names]
    p = argparse.ArgumentParser(
        prog="rnncore-bench",
        description="Time rnncore's backends against its NumPy reference, a plain NumPy "
                    "RNN, PyTorch's nn.RNN, rnncore's torch drop-in and a JAX lax.scan "
                    "RNN (those installed) over a grid of sizes from one short sequence "
                    "to a BLAS-bound batch, on 1 and 2 threads, forward and "
                    "forward+backward, and check rnncore's performance targets "
                    "(docs/benchmarks.md lists both); with --cell lstm or gru, the same "
                    "for a gated cell against nn.LSTM or nn.GRU and a JAX scan of the "
                    "cell. The header names the CPU and the code paths the kernels ran.")
    p.add_argument("--cell", choices=CELLS, default="rnn",
                   help="the cell to time: rnn (Elman, tanh; the default), lstm or gru, "
                        "with torch's equations and gate order")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated cases (default: all of the cell's): "
                        f"{', '.join(names)}; lstm and gru run the same but "
                        f"long-denormal, and also {', '.join(gated)} (with lengths)")
    p.add_argument("--lengths", action="store_true",
                   help="beside every case, the same case with lengths (\"-len\"): a "
                        "quarter of the sequences ¾ long, rnncore called with lengths=, "
                        "torch with a packed sequence; each reports its time over its "
                        "own padded time")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts to run every case at, e.g. 1,2 "
                        "(default: each case's own: 2 for the -2t cases, else 1)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="run every case in this dtype (default: each case's own)")
    p.add_argument("--isa", choices=_ISAS, default=None,
                   help="run rnncore's kernels on this instruction set's code paths "
                        "(rnncore._kernels.set_isa), e.g. avx2 to time a CPU without "
                        "AVX-512 on one that has it; %%GEMM then divides by the GEMM "
                        "rate of OpenBLAS on that instruction set's kernels (avx2: "
                        "Haswell, baseline: Prescott), what such a CPU reaches (default: "
                        "the best this CPU supports; a usage error if it lacks the one "
                        "asked for)")
    p.add_argument("--isa-scope", choices=["all", "rnncore"], default="all",
                   help="with --isa below this CPU's best: all (the default) runs every "
                        "library on that instruction set too, as on a CPU that has no "
                        "more (NumPy's SIMD dispatch, OpenBLAS's core, torch's ATen, MKL "
                        "and oneDNN, XLA: the command starts again with their switches "
                        "set, rnncore.bench.isa_env; JAX's YNNPACK, which has none, has "
                        "its copy of the CPU's feature bits cut down, "
                        "rnncore.bench.jax_isa); rnncore forces rnncore's kernels "
                        "only, the others running this CPU's best")
    p.add_argument("--forward-only", action="store_true", help="time the forward pass only")
    p.add_argument("--stream", action="store_true",
                   help="instead of the grid, the stream row: µs per inference step of "
                        "rnn.stream() at B=1, K=H=64 (step, run, forward) for rnn, lstm "
                        "and gru against torch's nn.RNNCell/LSTMCell/GRUCell (honours "
                        "--isa, --dtype, --budget, --rounds, --pin, --json)")
    p.add_argument("--checkpoint", action="store_true",
                   help="instead of the grid, the checkpoint row: peak memory and time of "
                        "forward+backward at T=20000, B=4, K=H=128, full BPTT against "
                        "checkpoint='auto', for rnn, lstm and gru")
    p.add_argument("--short-calls", action="store_true",
                   help="instead of the grid, the short-calls rows: µs per call of "
                        "rnncore.torch.RNN against torch.nn.RNN at T=1 and 35, B=1, "
                        "H=64..1024, 2 layers, forward (no grad) and forward+backward "
                        "(honours --isa, --dtype, --budget, --rounds, --pin, --json)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help=f"comma-separated implementations to try (default: all "
                        f"installed): {', '.join(IMPLS)}")
    p.add_argument("--budget", type=float, default=0.4,
                   help="seconds of timed calls per implementation and mode (default 0.4; "
                        "at least one call per round)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds per case (default 5)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="pin the process to as many CPUs as the case has threads "
                        "(default: on)")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke run: every case at toy sizes, few repeats")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the report as a Markdown page (how docs/benchmarks.md is "
                        "made: rnncore-bench --markdown docs/benchmarks.md)")
    p.add_argument("--plot", metavar="PATH",
                   help="write a PNG of the speed-up over the fastest plain NumPy against "
                        "size (needs matplotlib)")
    p.add_argument("--native-blas", action="store_true",
                   help=f"run with {' and '.join(BLAS_OVERRIDES)} removed from the "
                        "environment (for this command only), so that OpenBLAS picks its "
                        "kernels for this CPU")
    return p


def main(argv=None) -> int:
    """Run the ``rnncore-bench`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``); ``--help`` lists them.

    Returns
    -------
    int
        The exit status, 0 on success (usage errors exit with 2).
    """
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    _check_native_blas(parser, args)
    if args.native_blas and any(k in os.environ for k in BLAS_OVERRIDES):
        # OpenBLAS reads them when it loads: start again without them.
        env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
        env[REMOVED_ENV] = ", ".join(f"{k}={os.environ[k]}" for k in BLAS_OVERRIDES
                                     if k in os.environ)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "rnncore.bench", *argv], env)

    names = [c.name for c in grid(args.cell)]
    wanted = (names if args.cases is None
              else [n.strip() for n in args.cases.split(",") if n.strip()])
    unknown = [n for n in wanted if n not in names]
    if unknown:
        parser.error(f"unknown case(s) {unknown} for --cell {args.cell}; choose from "
                     f"{names}")
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        parser.error(f"unknown implementation(s) {bad}; choose from {list(IMPLS)}")
    threads = None
    if args.threads:
        try:
            threads = [int(n) for n in args.threads.split(",") if n.strip()]
        except ValueError:
            threads = [0]
        if not threads or min(threads) < 1:
            parser.error(f"--threads must be positive integers, e.g. 1 or 1,2; "
                         f"got {args.threads!r}")
    if args.rounds < 1 or args.budget <= 0:
        parser.error(f"--rounds must be >= 1 and --budget > 0; got {args.rounds} "
                     f"and {args.budget}")

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install matplotlib")
    _restart_on_isa(parser, args, argv)
    restore = _force_isa(parser, args.isa)
    try:
        if args.stream:
            from .stream import main_stream
            return main_stream(args)
        if args.checkpoint:
            from .checkpoint import main_checkpoint
            return main_checkpoint(args)
        if args.short_calls:
            from .short_calls import main_short_calls
            return main_short_calls(args)
        return _run(args, argv, impls, wanted, threads)
    finally:
        restore()


def _restart_on_isa(parser, args, argv) -> None:
    """Start the command again with every library limited to ``--isa``'s instruction
    set (``--isa-scope all``), unless it already runs so or ``--isa`` is this CPU's
    best; those libraries read their switches only when they load."""
    if not _limits_every_library(args):
        return
    env = restart_environment(args.isa)
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "rnncore.bench", *argv], env)


def _limits_every_library(args) -> bool:
    """Whether ``--isa`` limits every library (``--isa-scope all``) to an instruction
    set below this CPU's best."""
    return args.isa is not None and args.isa_scope == "all" and _below_best(args.isa)


def _below_best(isa) -> bool:
    """Whether the kernels support ``isa`` and it is below this CPU's best (False
    without the kernels: _force_isa says what is missing)."""
    try:
        from .. import _kernels
    except ImportError:
        return False
    supported = tuple(_kernels.supported_isas())
    return isa in supported and isa != supported[-1]


def _check_native_blas(parser, args) -> None:
    """--native-blas with an --isa that limits every library is a usage error: checked
    before either restarts the command."""
    if args.native_blas and _limits_every_library(args):
        parser.error(f"--native-blas runs OpenBLAS on this CPU's own kernels and --isa "
                     f"{args.isa} every library on {args.isa}'s: give one, or add "
                     f"--isa-scope rnncore")


def _force_isa(parser, name):
    """Make the kernels run ``name``'s code paths; return a function that undoes it."""
    if name is None:
        return lambda: None
    try:
        from .. import _kernels
    except ImportError:
        parser.error(f"--isa {name} needs rnncore's compiled kernels, which are not built")
    supported = tuple(_kernels.supported_isas())
    if name not in supported:
        parser.error(f"--isa {name}: this CPU cannot run it; it supports "
                     f"{', '.join(supported)}")
    before = _kernels.isa()
    _kernels.set_isa(name)
    return lambda: _kernels.set_isa(before)


def _run(args, argv, impls, wanted, threads) -> int:
    rows = quick(args.cell) if args.quick else grid(args.cell)
    cases = variants([c for c in rows if c.name in wanted], threads, args.dtype,
                     args.lengths)
    if "jax" in impls and cases:
        # JAX reads its flags once, at start: one Eigen thread if any case has one thread
        # (PERF.md's JAX figures are single-threaded; the header prints the flags).
        flags = xla_flags(min(c.threads for c in cases))
        if flags:
            os.environ.setdefault("XLA_FLAGS", flags)
        isa_flag = os.environ.get(XLA_ISA_ENV)      # --isa: XLA on that instruction set
        if isa_flag and isa_flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {isa_flag}".strip()
    budget, rounds, gemm_n = (0.01, 2, 256) if args.quick else (args.budget, args.rounds, 1024)
    show, close = _progress(len(cases) * (rounds + 1))
    try:
        results = run(cases, impls, args.forward_only, budget, rounds, args.pin, show, gemm_n)
    finally:
        close()

    env = environment(results)
    modes = ("fwd",) if args.forward_only else ("fb", "fwd")
    print(format_header(env))
    for mode in modes:
        print(f"\n{MODES[mode]}:")
        print(format_table(results, mode))
    print("\n" + legend(env["cells"]))
    if args.markdown:
        command = shlex.join(["rnncore-bench", *argv])
        image = (os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))
                 if args.plot else None)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown_page(results, env, command, args.forward_only, image))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(to_json(results, env), f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0
