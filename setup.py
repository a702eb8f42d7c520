"""Build the Cython kernels, linked against the OpenBLAS of ``scipy-openblas32``.

Environment variables read at build time:

RNNCORE_CHECKED=1
    Compile the kernels with bounds checking, wraparound and initialisation checks on
    (a slower build the whole test suite also runs against).
RNNCORE_CFLAGS
    Extra compiler flags, appended (e.g. ``-march=native`` for a local build; never the
    default, which runs on any x86-64).
"""
import os
import shlex
from pathlib import Path

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

checked = os.environ.get("RNNCORE_CHECKED", "") not in ("", "0")
# The one place the directives are set: a "# cython:" header line in a .pyx would
# override these (a header holds language_level only), and the checked build would
# compile no checks. tests/test_build.py proves the checked build raises IndexError.
directives = {
    "language_level": 3,
    "boundscheck": checked,
    "wraparound": checked,
    "initializedcheck": checked,
    "cdivision": not checked,
}
# -fno-trapping-math lets GCC vectorise the branch-free selects of _vmath_impl.h.
cflags = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
if checked:
    cflags += ["-UNDEBUG", "-O1", "-g"]
cflags += shlex.split(os.environ.get("RNNCORE_CFLAGS", ""))

extensions = [
    Extension(
        f"rnncore.{path.stem}",
        [str(path)],
        include_dirs=[np.get_include(), scipy_openblas32.get_include_dir(), "src/rnncore"],
        # Link by name only: scipy_openblas32, imported before the extension, has already
        # loaded the library; no path of the build environment is baked in.
        library_dirs=[scipy_openblas32.get_lib_dir()],
        libraries=[scipy_openblas32.get_library()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                       ("RNNCORE_CHECKED", "1" if checked else "0")],
        extra_compile_args=cflags,
        # the C headers the kernels #include (Cython tracks only those it names)
        depends=[str(h) for h in sorted(Path("src/rnncore").glob("*.h"))],
    )
    for path in sorted(Path("src/rnncore").glob("*.pyx"))
]

# The four modules compile at once, one per CPU (the build's own process counts):
# 82 s against 147 s one after the other on two CPUs, in every install and CI build.
setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            build_dir="build/cython-checked" if checked else None),
      options={"build_ext": {"parallel": len(os.sched_getaffinity(0))
                             if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1}})
