"""``rnncore-bench --isa`` below the CPU's best runs every library on that instruction
set, as on a CPU that has no more: the command starts again with each library's switch
set (rnncore.bench.isa_env), unless ``--isa-scope rnncore`` asks for rnncore's kernels
alone."""
import json
import os
import subprocess
import sys

import pytest

from rnncore.bench import cli, main
from rnncore.bench.isa_env import ISA_ENV_MARK, XLA_ISA_ENV, isa_environment, \
    library_isas, numpy_disabled

ISAS = ["avx2", "baseline"]


def _numpy_dispatch():
    try:
        from numpy._core import _multiarray_umath as m
    except ImportError:
        from numpy.core import _multiarray_umath as m
    return list(m.__cpu_dispatch__)


def _forcible(isa):
    kernels = pytest.importorskip("rnncore._kernels")
    supported = kernels.supported_isas()
    if isa not in supported[:-1]:
        pytest.skip(f"--isa {isa} is not below this CPU's best ({', '.join(supported)})")


class Restarted(Exception):
    """Raised by the stand-in for os.execve."""


def _capture_restart(monkeypatch):
    calls = []

    def execve(path, args, env):
        calls.append((path, args, env))
        raise Restarted
    monkeypatch.setattr(cli.os, "execve", execve)
    monkeypatch.delenv(ISA_ENV_MARK, raising=False)
    return calls


@pytest.mark.parametrize("isa", ISAS)
def test_the_environment_of_an_isa_names_every_librarys_switch(isa):
    env = isa_environment(isa)
    expected = {"avx2": ("Haswell", "avx2", "AVX2", "AVX2", "AVX2"),
                "baseline": ("Prescott", "default", "SSE4_2", "SSE41", "SSE4_2")}[isa]
    assert (env["OPENBLAS_CORETYPE"], env["ATEN_CPU_CAPABILITY"],
            env["MKL_ENABLE_INSTRUCTIONS"], env["ONEDNN_MAX_CPU_ISA"]) == expected[:4]
    assert env[XLA_ISA_ENV] == f"--xla_cpu_max_isa={expected[4]}"
    assert env[ISA_ENV_MARK] == isa
    assert env.get("NPY_DISABLE_CPU_FEATURES", "").split() == numpy_disabled(isa)


def test_avx2_disables_numpys_avx512_targets_and_keeps_its_avx2_ones():
    dispatch = _numpy_dispatch()
    disabled = numpy_disabled("avx2")
    assert [d for d in dispatch if d.startswith(("AVX512", "X86_V4"))] == disabled
    assert not [d for d in disabled if d in ("AVX2", "FMA3", "X86_V3")]


def test_an_unknown_isa_is_a_value_error():
    with pytest.raises(ValueError, match="isa must be 'avx2' or 'baseline'; got 'sse'"):
        isa_environment("sse")


@pytest.mark.parametrize("isa", ISAS)
def test_a_forced_isa_restarts_the_command_with_every_library_limited(isa, monkeypatch):
    _forcible(isa)
    calls = _capture_restart(monkeypatch)
    argv = ["--quick", "--impls", "cython", "--cases", "tiny", "--isa", isa]
    with pytest.raises(Restarted):
        main(argv)
    (path, args, env), = calls
    assert path == sys.executable and args == [sys.executable, "-m", "rnncore.bench", *argv]
    for key, value in isa_environment(isa).items():
        assert env[key] == value


def test_isa_scope_rnncore_forces_the_kernels_without_a_restart(monkeypatch, tmp_path):
    _forcible("avx2")
    calls = _capture_restart(monkeypatch)
    path = tmp_path / "b.json"
    assert main(["--quick", "--impls", "cython", "--cases", "tiny", "--forward-only",
                 "--isa", "avx2", "--isa-scope", "rnncore", "--json", str(path)]) == 0
    assert calls == []
    environment = json.loads(path.read_text())["environment"]
    assert environment["kernel_isa"] == "avx2" and environment["libraries_isa"] is None


def test_a_restarted_command_does_not_restart_again(monkeypatch, tmp_path):
    _forcible("avx2")
    calls = _capture_restart(monkeypatch)
    monkeypatch.setenv(ISA_ENV_MARK, "avx2")
    assert main(["--quick", "--impls", "cython", "--cases", "tiny", "--forward-only",
                 "--isa", "avx2", "--json", str(tmp_path / "b.json")]) == 0
    assert calls == []


def test_native_blas_with_a_forced_isa_is_a_usage_error(monkeypatch, capsys):
    _forcible("avx2")
    calls = _capture_restart(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--impls", "cython", "--cases", "tiny", "--isa", "avx2",
              "--native-blas"])
    assert exc.value.code == 2 and calls == []
    assert "--native-blas runs OpenBLAS on this CPU's own kernels and --isa avx2" \
        in capsys.readouterr().err


def test_the_restarted_command_runs_numpy_on_avx2_and_says_so(tmp_path):
    _forcible("avx2")
    path = tmp_path / "b.json"
    env = {k: v for k, v in os.environ.items() if k != ISA_ENV_MARK}
    run = subprocess.run([sys.executable, "-m", "rnncore.bench", "--quick", "--impls",
                          "numpy-plain,cython", "--cases", "tiny", "--forward-only",
                          "--isa", "avx2", "--json", str(path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    environment = json.loads(path.read_text())["environment"]
    assert environment["libraries_isa"] == "avx2"
    assert environment["library_isas"]["numpy"] not in numpy_disabled("avx2")
    assert environment["env"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert "every library limited to avx2" in run.stdout


def test_this_process_reports_what_its_libraries_run():
    found = library_isas()
    dispatch = _numpy_dispatch()
    assert found["numpy"] in dispatch + ["baseline"]
