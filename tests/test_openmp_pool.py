"""Split calls on the OpenMP runtime another library of the process has loaded
(torch's CPU wheels load GNU's): the parts run as one parallel region of that runtime's
pool, whose worker is already running, with the bits of one thread. Where the runtime
gives the region fewer threads than parts, they run on rnncore's own workers; with no
runtime loaded, or ``RNNCORE_OPENMP_POOL=0``, always there.
"""
import ctypes.util
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import rnncore
from rnncore import _parallel
from rnncore import functional as F

_openmp = pytest.importorskip("rnncore._openmp")
_kernels = pytest.importorskip("rnncore._kernels")


@pytest.fixture
def openmp_pool(gnu_openmp):
    rnncore.set_num_threads(2)
    yield
    rnncore.set_num_threads(None)


def _split_case(cell, dtype):
    rng = np.random.default_rng(3)
    T, B, K, H = 20, 12, 24, 40
    shapes = F.param_shapes(K, H, 1, cell=cell)
    params = {k: (rng.standard_normal(s) / np.sqrt(H)).astype(dtype)
              for k, s in shapes.items()}
    x = rng.standard_normal((T, B, K)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    return params, x, dy


def _forward_backward(cell, params, x, dy, threads):
    rnncore.set_num_threads(threads)
    y, h_n, record = F.forward(x, params, cell=cell, backend="cython")
    dx, dh0, grads = F.backward(record, dy)
    states = list(h_n) if isinstance(h_n, tuple) else [h_n]
    return [y, *states, dx, *grads.values()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_split_call_runs_as_regions_of_the_loaded_runtime_with_the_bits_of_one_thread(
        openmp_pool, monkeypatch, cell, dtype):
    if not _kernels.splits_are_exact(12, 40, dtype == np.float32, 20 * 12):
        pytest.skip("this ISA's products are not split (no packed kernels)")
    monkeypatch.setattr(_parallel, "_MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr(_parallel, "_MIN_PART_WORK", 1)
    monkeypatch.setattr(_parallel, "_MIN_PART_ROWS", 1)
    params, x, dy = _split_case(cell, dtype)
    want = _forward_backward(cell, params, x, dy, threads=1)
    before = _openmp.regions()
    got = _forward_backward(cell, params, x, dy, threads=2)
    assert _openmp.regions() - before == 2          # the forward's and the backward's
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_the_parts_run_on_the_runtimes_threads_not_on_rnncores_workers(openmp_pool):
    seen = []

    def where():
        seen.append((threading.get_ident(), threading.current_thread().name))

    before = _openmp.regions()
    _parallel._run_parts([where, where])
    assert _openmp.regions() == before + 1
    assert len({ident for ident, _ in seen}) == 2
    assert threading.get_ident() in {ident for ident, _ in seen}   # part 0: the caller
    assert "rnncore" not in {name for _, name in seen}


def test_a_region_the_runtime_gives_fewer_threads_than_parts_calls_none_of_them(
        openmp_pool):
    # inside a region, GNU OpenMP runs a nested one on one thread
    called = []
    outer = _openmp.run([lambda: _openmp.run([lambda: called.append(0),
                                              lambda: called.append(1)]),
                         lambda: None])
    assert outer is not None
    assert outer[0] == (None, None)
    assert called == []


def test_a_split_call_inside_a_region_runs_its_parts_on_rnncores_workers(openmp_pool):
    inner = []

    def split():
        return _parallel._run_parts([lambda: inner.append(threading.current_thread().name)
                                     or 1, lambda: 2])

    outer = _openmp.run([split, lambda: None])
    assert outer[0] == ([1, 2], None)
    assert len(inner) == 1


@pytest.mark.parametrize("failing", [0, 1], ids=["the-caller's-part", "the-pool's-part"])
def test_an_error_in_a_part_on_the_pool_is_raised_after_the_others_finished(
        openmp_pool, failing):
    finished = []

    def fails():
        raise ValueError(f"part {failing}")

    def slow():
        threading.Event().wait(0.05)
        finished.append(True)

    calls = [slow, slow]
    calls[failing] = fails
    with pytest.raises(ValueError, match=f"part {failing}"):
        _parallel._run_parts(calls)
    assert finished == [True]
    assert _parallel._run_parts([lambda: 1, lambda: 2]) == [1, 2]


def test_run_sections_runs_parts_as_c_and_other_callables_with_the_gil(openmp_pool):
    """Thread i runs first[i], then past the barrier second[i]; a kernels' Part runs
    as C, anything else is called, even an object with an ``address`` of its own."""
    T, B, K, H = 4, 3, 5, 6
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, K)).astype(np.float32)
    w_ih = rng.standard_normal((H, K)).astype(np.float32)
    want, got = np.zeros((T + 1, B, H), np.float32), np.zeros((T + 1, B, H), np.float32)
    _kernels.input_projection(x, w_ih, want, False)
    order = []

    class Call:
        address = 12345                 # not a task: must not be taken for one

        def __call__(self):
            order.append(threading.current_thread() is threading.main_thread())

    part = _kernels.input_projection(x, w_ih, got, False, defer=True)
    times, error = _openmp.run_sections([part, Call()], [None, Call()])
    assert error is None
    np.testing.assert_array_equal(got, want)
    assert order == [False, False]      # both calls on the pool's thread, after the part
    assert len(times) == 2 and times[0][0] > 0 and times[1][1] > 0


def test_run_sections_refuses_two_empty_sections():
    with pytest.raises(ValueError, match="at least one"):
        _openmp.run_sections([], [])


def test_run_refuses_an_empty_list_of_calls():
    with pytest.raises(ValueError, match="at least one"):
        _openmp.run([])


def _python(code, **env):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


_FOUND = ("import rnncore; from rnncore import _parallel; "
          "print(_parallel._openmp_pool() is not None); ")


def test_without_a_loaded_runtime_the_parts_run_on_rnncores_workers():
    assert _python(_FOUND + "from rnncore import _openmp; print(_openmp.find())") == \
        ["False", "False"]


def test_a_runtime_loaded_after_rnncore_is_found_at_the_next_split_call():
    pytest.importorskip("torch")
    assert _python(_FOUND + "import torch; print(_parallel._openmp_pool() is not None)") \
        == ["False", "True"]


def test_RNNCORE_OPENMP_POOL_0_keeps_the_parts_on_rnncores_workers():
    pytest.importorskip("torch")
    assert _python("import torch; " + _FOUND, RNNCORE_OPENMP_POOL="0") == ["False"]


_SPLIT_IN_A_PROCESS_WITH = """
import ctypes, sys
ctypes.CDLL(sys.argv[1])
import numpy as np, rnncore
from rnncore import _openmp, _parallel, functional as F
for name in ("_MIN_PARALLEL_WORK", "_MIN_PART_WORK", "_MIN_PART_ROWS"):
    setattr(_parallel, name, 1)
rng = np.random.default_rng(3)
params = {k: (rng.standard_normal(s) / 6).astype(np.float32)
          for k, s in F.param_shapes(24, 40).items()}
x = rng.standard_normal((20, 12, 24)).astype(np.float32)
dy = rng.standard_normal((20, 12, 40)).astype(np.float32)
def run(n):
    rnncore.set_num_threads(n)
    y, h, record = F.forward(x, params)
    return [y, h, *F.backward(record, dy)[:2]]
want, got = run(1), run(2)
print(_openmp.runtime(), _openmp.regions(),
      all(np.array_equal(a, b) for a, b in zip(want, got)))
"""


def _runtime_file(name):
    """The file of the OpenMP runtime ``name`` ("omp": LLVM's, "iomp5": Intel's) the
    loader finds, or the one the intel-openmp wheel puts in this environment's lib/;
    None if neither is there."""
    found = ctypes.util.find_library(name)
    if found is not None:
        return found
    wheel = os.path.join(sys.prefix, "lib", f"lib{name}.so")
    return wheel if os.path.exists(wheel) else None


@pytest.mark.parametrize("name, soname", [("omp", "libomp.so.5"), ("iomp5", "libiomp5.so")],
                         ids=["LLVM's", "Intel's"])
def test_llvms_and_intels_openmp_runtimes_are_joined_as_gnus_is(name, soname):
    """LLVM's runtime (conda-forge's torch) and Intel's (built from it; some conda
    channels' torch) serve GCC's entry point with the same meaning: a process that has
    loaded only one of them runs its split calls as regions of its pool, with the
    bits of one thread."""
    path = _runtime_file(name)
    if path is None:
        pytest.skip(f"the OpenMP runtime lib{name} is not installed")
    if not _kernels.splits_are_exact(12, 40, True, 20 * 12):
        pytest.skip("this ISA's products are not split (no packed kernels)")
    code = _SPLIT_IN_A_PROCESS_WITH.replace("sys.argv[1]", repr(path))
    runtime, regions, same = _python(code)
    assert runtime in (soname, "libomp.so")         # the soname the lookup matched
    assert int(regions) == 2                        # the forward's and the backward's
    assert same == "True"
