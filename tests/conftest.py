"""Fixtures shared by the test suite: backends, dtypes and their tolerances."""
import numpy as np
import pytest

import rnncore

# SPEC.md: the backends agree within these norm-wise relative differences.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@pytest.fixture(autouse=True)
def _short_path_values_forgotten():
    """The compiled short path keeps values worked out for the last call's shape;
    a test that monkeypatches what they come from must not leave them to later tests."""
    yield
    try:
        from rnncore import _short
    except ImportError:
        return
    _short.forget_kept()


@pytest.fixture(autouse=True)
def _threads_start_equal():
    """Each test starts with no measured thread speeds: the split calls it makes cut
    their sections equally until its own calls have measured otherwise."""
    from rnncore import _parallel
    _parallel._speeds.clear()
    yield
    _parallel._speeds.clear()


def _kernel_paths():
    """(instruction set, whole-sequence products) of every code path the kernels have
    on this CPU: each supported instruction set on OpenBLAS, and those with packed
    kernels on rnncore's own products too; none without the kernels."""
    try:
        from rnncore import _kernels
    except ImportError:
        return []
    isas = _kernels.supported_isas()
    return ([(isa, "blas") for isa in isas]
            + [(isa, "rnncore") for isa in isas if isa != "baseline"])


KERNEL_PATHS = _kernel_paths()


@pytest.fixture(params=KERNEL_PATHS, ids=[f"{isa}-{gemm}" for isa, gemm in KERNEL_PATHS])
def kernel_path(request):
    """Each code path of the kernels on this CPU (:data:`KERNEL_PATHS`), forced for the
    test (otherwise only the best runs: on an AVX-512 machine, never the AVX2 path most
    laptops run); the instruction set's name. The default policy is restored after."""
    from rnncore import _kernels
    isa, gemm = request.param
    _kernels.set_isa(isa)
    _kernels.set_whole_sequence_gemm(gemm)
    yield isa
    _kernels.set_isa(None)


@pytest.fixture
def cpu_topology(tmp_path, monkeypatch):
    """A CPU-topology tree of the test's own, empty until written (the default thread
    count and the benchmark's pinning read it instead of the machine's):
    ``cpu_topology({cpu: "0,4"}, name)`` writes each CPU's list of the CPUs on its
    core into the file ``name`` (``core_cpus_list``, or the older
    ``thread_siblings_list``)."""
    from rnncore import _parallel
    root = tmp_path / "sys_cpu"
    monkeypatch.setattr(_parallel, "_SYS_CPU", str(root))

    def write(siblings, name="core_cpus_list"):
        for cpu, cpus in siblings.items():
            folder = root / f"cpu{cpu}" / "topology"
            folder.mkdir(parents=True)
            (folder / name).write_text(cpus + "\n")
    return write


@pytest.fixture(params=rnncore.backends())
def backend(request):
    """Each available backend ("cython" when built, and "numpy")."""
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def tol(dtype):
    """SPEC.md's norm-wise relative tolerance between backends for ``dtype``."""
    return RTOL[dtype]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def forwards(monkeypatch):
    """The number of calls of rnncore.functional.forward the torch drop-ins make, in a
    one-element list (tests of which path a drop-in call takes)."""
    rt = pytest.importorskip("rnncore.torch")
    count = [0]
    original = rt.functional.forward

    def spied(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(rt.functional, "forward", spied)
    return count


@pytest.fixture(scope="session")
def torch():
    """The torch module; the test is skipped when torch is not installed."""
    return pytest.importorskip("torch")


def assert_close(got, want, rtol, what=""):
    """Norm-wise relative comparison, the measure SPEC.md states tolerances in."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(np.linalg.norm(want), 1e-30)
    err = np.linalg.norm(got - want) / scale
    assert err <= rtol, f"{what}: relative difference {err:.3g} > {rtol:.1g}"


def assert_raises_as_stock(call, ours, stock):
    """``call(stock)`` raises; ``call(ours)`` raises the same type with the same text."""
    with pytest.raises(Exception) as want:
        call(stock)
    with pytest.raises(Exception) as got:
        call(ours)
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value)


def flushed(a, normal, value):
    """``value`` where an element of ``a`` is denormal (nonzero, below the smallest
    ``normal`` number: the kernels read it as 0), 0.0 elsewhere; float64, a's shape.
    With value = tiny/κ, the error scale of an exact input or weight (the fuzzers' E)."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    return np.where((a > 0) & (a < normal), value, 0.0)


def over_all_steps(a, record, state=False):
    """A time-major (T, B, ·) array of the steps a forward ran, over the caller's steps
    (``record.full_T``, which may be more: steps after the longest sequence are not
    run): zero there, or True for a bool array (what is known exactly). States pass."""
    if state or a.shape[0] == record.full_T:
        return a
    full = np.full((record.full_T,) + a.shape[1:], a.dtype == bool, a.dtype)
    full[:a.shape[0]] = a
    return full


@pytest.fixture
def gnu_openmp(monkeypatch):
    """GNU OpenMP loaded as a user's process loads it (through torch if installed,
    else the libgomp GCC's OpenMP programs link), and rnncore's split calls allowed to
    join its pool: the :mod:`rnncore._openmp` module."""
    import ctypes
    import ctypes.util

    from rnncore import _parallel
    _openmp = pytest.importorskip("rnncore._openmp")
    try:
        import torch  # noqa: F401 - loads torch/lib/libgomp.so.1
    except ImportError:
        name = ctypes.util.find_library("gomp")
        if name is None:
            pytest.skip("neither torch nor GNU OpenMP (libgomp) is installed")
        ctypes.CDLL(name)
    monkeypatch.setattr(_parallel, "_join_openmp", True)
    monkeypatch.setattr(_parallel, "_modules_when_looked", -1)   # look again
    assert _parallel._openmp_pool() is _openmp
    return _openmp
