"""The rnncore-bench command runs and reports (its figures are not checked: speed is
shown by the benchmark, never asserted by a test)."""
import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from rnncore.bench import CASES, QUICK, Result, main, targets, variants

FAST = ["--quick", "--impls", "numpy,cython"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of the command: its exit status, stdout, JSON and Markdown."""
    d = tmp_path_factory.mktemp("bench")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(FAST + ["--json", str(d / "b.json"), "--markdown", str(d / "b.md")])
    return status, out.getvalue(), json.loads((d / "b.json").read_text()), \
        (d / "b.md").read_text()


def _rows(out):
    names = {c.name for c in QUICK}
    return [line.split()[0] for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in names]


def test_quick_run_exits_zero_and_prints_a_row_per_case_and_mode(quick_run):
    status, out, _, _ = quick_run
    assert status == 0
    assert _rows(out) == [c.name for c in QUICK] * 2        # forward+backward, forward
    assert "forward+backward:" in out and "forward:" in out
    assert "GEMM 256³ np.matmul" in out and "BLAS/OpenMP libraries loaded" in out
    assert "numpy 2" in out or "numpy 1" in out             # versions in the header


def test_json_holds_every_case_with_the_expected_keys(quick_run):
    data = quick_run[2]
    assert set(data) == {"environment", "sgemm_gflops", "cases"}
    assert {"cpu", "versions", "blas", "threads", "env"} <= set(data["environment"])
    assert [c["case"]["name"] for c in data["cases"]] == [c.name for c in QUICK]
    assert data["sgemm_gflops"]["1"] > 0 and data["sgemm_gflops"]["2"] > 0
    for case in data["cases"]:
        assert {"times_s", "iqr_s", "repeats", "gflops", "speedup_vs_numpy",
                "gemm_gflops", "memory_ratio", "targets"} <= set(case)
        assert case["times_s"]["numpy/fwd"] > 0 and case["times_s"]["numpy/fb"] > 0
        assert case["speedup_vs_numpy"]["numpy/fb"] == pytest.approx(1.0)


def test_forward_only_reports_no_backward(capsys, tmp_path):
    path = tmp_path / "bench.json"
    assert main(["--quick", "--impls", "numpy", "--cases", "tiny,long", "--forward-only",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "forward+backward:" not in out and _rows(out) == ["tiny", "long"]
    assert list(json.loads(path.read_text())["cases"][0]["times_s"]) == ["numpy/fwd"]


def test_markdown_page_says_how_it_was_made(quick_run):
    text = quick_run[3]
    assert text.startswith("# Benchmarks")
    assert "rnncore-bench --quick" in text and "## How these figures were obtained" in text
    assert "| case | T, B, K, H |" in text


def test_threads_and_dtype_rename_the_cases():
    names = [c.name for c in variants(CASES, threads=[1, 2], dtype="float64")]
    assert names[:2] == ["tiny-f64", "tiny-f64-2t"] and "medium-bi-f64-2t" in names
    assert len(names) == len(set(names))
    assert "medium-bi-2t" not in [c.name for c in variants(CASES, threads=[1])]


def test_targets_are_printed_for_the_grid_sizes_only():
    grid = Result(CASES[0], {("numpy", "fb"): np.array([1.0]), ("cython", "fb"):
                             np.array([0.05])})
    assert targets(grid, {}, "fb")[0][:3] == ("≥10× NumPy", 20.0, True)
    toy = Result(QUICK[0], grid.samples)
    assert targets(toy, {}, "fb") == []


@pytest.mark.parametrize("args, message", [
    (["--cases", "huge"], "unknown case(s) ['huge']"),
    (["--impls", "mxnet"], "unknown implementation(s) ['mxnet']"),
    (["--threads", "0"], "--threads must be positive integers"),
])
def test_usage_errors_exit_2_naming_the_value(args, message):
    proc = subprocess.run([sys.executable, "-m", "rnncore.bench", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
