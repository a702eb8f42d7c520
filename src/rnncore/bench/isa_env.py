"""Every library of a benchmark run on one instruction set, as on a CPU that has no more.

``rnncore-bench --isa avx2`` times the code paths of a CPU without AVX-512 on one that
has it. rnncore's kernels are forced with ``set_isa``; the libraries it is compared with
choose their code paths by the CPU they find when they load, so on an AVX-512 machine
they would run AVX-512 while rnncore runs AVX2, which is not what an AVX2 CPU sees. Each
library has its own switch, read once when it loads; the command therefore starts again
(``os.execve``) with the switches below set, unless ``--isa-scope rnncore`` asks for
rnncore's kernels alone to be forced:

========== ============================== ============================================
library    switch                         avx2 / baseline
========== ============================== ============================================
NumPy      ``NPY_DISABLE_CPU_FEATURES``   its dispatch targets beyond the ISA
OpenBLAS   ``OPENBLAS_CORETYPE``          Haswell / Prescott (NumPy's, the kernels')
torch      ``ATEN_CPU_CAPABILITY``        avx2 / default
MKL        ``MKL_ENABLE_INSTRUCTIONS``    AVX2 / SSE4_2
oneDNN     ``ONEDNN_MAX_CPU_ISA``         AVX2 / SSE41
XLA (JAX)  ``--xla_cpu_max_isa`` flag     AVX2 / SSE4_2
YNNPACK    none: its CPU flags, masked    sse2..fma3 / sse2..sse41
           (:mod:`.jax_isa`)
========== ============================== ============================================

XLA's flag does not reach the library that runs JAX's matrix products, YNNPACK, which
reads the CPU's feature bits and has no switch; :func:`limit_jax` clears the bits beyond
the instruction set in YNNPACK's own copy of them, once JAX is loaded.
"""
from __future__ import annotations

import os

from .timing import ISA_BLAS_CORES

__all__ = ["ISA_ENV_MARK", "XLA_ISA_ENV", "isa_environment", "library_isas", "limit_jax",
           "numpy_disabled", "restart_environment"]

# Set in the environment of the restarted command: the ISA it limits the libraries to.
ISA_ENV_MARK = "RNNCORE_BENCH_ISA_ENV"
# The XLA flag of the restarted command, added to XLA_FLAGS when the run sets them.
XLA_ISA_ENV = "RNNCORE_BENCH_XLA_ISA"

# NumPy's dispatch targets each ISA leaves on, by the prefix of their names (the names
# changed between NumPy 1.x, "AVX512_SKX", and 2.x, "X86_V4").
_NUMPY_ABOVE = {"avx2": ("AVX512", "X86_V4"),
                "baseline": ("AVX512", "X86_V4", "X86_V3", "AVX", "FMA", "F16C")}
_TORCH = {"avx2": "avx2", "baseline": "default"}
_MKL = {"avx2": "AVX2", "baseline": "SSE4_2"}
_ONEDNN = {"avx2": "AVX2", "baseline": "SSE41"}
_XLA = {"avx2": "AVX2", "baseline": "SSE4_2"}
# What limit_jax did in this process, for the header; None until it ran.
_jax_limited: str | None = None


def _numpy_cpu():
    """NumPy's runtime-dispatch targets and the CPU features it found on."""
    try:
        from numpy._core import _multiarray_umath as m
    except ImportError:                                   # NumPy 1.x
        from numpy.core import _multiarray_umath as m
    return m.__cpu_dispatch__, m.__cpu_features__


def numpy_disabled(isa: str) -> list[str]:
    """NumPy's runtime-dispatch targets beyond ``isa`` ("avx2" or "baseline"): those
    ``NPY_DISABLE_CPU_FEATURES`` must name so that NumPy runs no more than ``isa``."""
    return [name for name in _numpy_cpu()[0] if name.startswith(_NUMPY_ABOVE[isa])]


def isa_environment(isa: str) -> dict[str, str]:
    """The environment variables that limit NumPy, OpenBLAS, torch, MKL and oneDNN to
    ``isa`` ("avx2" or "baseline"), and XLA's flag under :data:`XLA_ISA_ENV`.

    Returns
    -------
    dict of str to str
        Variable name to value, :data:`ISA_ENV_MARK` included.
    """
    if isa not in _TORCH:
        raise ValueError(f"isa must be 'avx2' or 'baseline'; got {isa!r}")
    env = {"OPENBLAS_CORETYPE": ISA_BLAS_CORES[isa],
           "ATEN_CPU_CAPABILITY": _TORCH[isa],
           "MKL_ENABLE_INSTRUCTIONS": _MKL[isa],
           "ONEDNN_MAX_CPU_ISA": _ONEDNN[isa],
           XLA_ISA_ENV: f"--xla_cpu_max_isa={_XLA[isa]}",
           ISA_ENV_MARK: isa}
    disabled = numpy_disabled(isa)
    if disabled:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disabled)
    return env


def library_isas() -> dict[str, str]:
    """What the libraries loaded in this process say they run: NumPy's highest
    dispatch target left on, torch's ATen CPU capability (if torch is loaded), and
    what :func:`limit_jax` did to JAX's YNNPACK (if it ran).

    Returns
    -------
    dict of str to str
        "numpy" and, with torch loaded, "torch", in the libraries' own names; "jax"
        after :func:`limit_jax`.
    """
    import sys

    dispatch, features = _numpy_cpu()
    on = [name for name in dispatch if features.get(name)]
    found = {"numpy": on[-1] if on else "baseline"}
    torch = sys.modules.get("torch")
    if torch is not None:
        found["torch"] = torch.backends.cpu.get_cpu_capability()
    if _jax_limited is not None:
        found["jax"] = _jax_limited
    return found


def limit_jax() -> None:
    """In a command restarted for an instruction set (:data:`ISA_ENV_MARK`), make JAX's
    matrix products run no more than it (:func:`.jax_isa.limit_ynnpack`), once; call it
    after ``import jax`` and before compiling anything timed. Elsewhere it does nothing."""
    global _jax_limited
    isa = os.environ.get(ISA_ENV_MARK)
    if isa and _jax_limited is None:
        from .jax_isa import limit_ynnpack
        _jax_limited = limit_ynnpack(isa)


def restart_environment(isa: str) -> dict[str, str] | None:
    """The environment to start the command again with, to run every library on
    ``isa``; None when this process already runs with it."""
    if os.environ.get(ISA_ENV_MARK) == isa:
        return None
    return {**os.environ, **isa_environment(isa)}
