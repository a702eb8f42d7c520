"""pytest-benchmark suites over PERF.md's grid; see bench/test_grid.py.

Run from the repository root, with rnncore importable (installed, or ``PYTHONPATH=src``)::

    pytest bench/ --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
    pytest bench/ --isa avx2        # the kernels' AVX2 code paths, on any CPU that has AVX2
"""
import pytest

ISAS = ("baseline", "avx2", "avx512")


def pytest_addoption(parser):
    parser.addoption("--isa", choices=ISAS, default=None,
                     help="run rnncore's kernels on this instruction set's code paths "
                          "(rnncore._kernels.set_isa; default: the best this CPU supports)")


@pytest.fixture(scope="session", autouse=True)
def kernel_isa(request):
    """The instruction set of the kernels' element-wise passes for the whole session
    (--isa), or None when the compiled kernels are not built."""
    name = request.config.getoption("--isa")
    try:
        from rnncore import _kernels
    except ImportError:
        if name:
            pytest.exit(f"--isa {name} needs rnncore's compiled kernels, which are not "
                        "built", returncode=4)
        yield None
        return
    if name and name not in _kernels.supported_isas():
        pytest.exit(f"--isa {name}: this CPU cannot run it; it supports "
                    f"{', '.join(_kernels.supported_isas())}", returncode=4)
    before = _kernels.isa()
    if name:
        _kernels.set_isa(name)
    yield _kernels.isa()
    _kernels.set_isa(before)
