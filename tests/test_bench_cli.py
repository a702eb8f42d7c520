"""The rnncore-bench command runs and reports (its figures are not checked: speed is
shown by the benchmark, never asserted by a test)."""
import json
import subprocess
import sys

from rnncore.bench import QUICK, main


def test_quick_run_exits_zero_and_prints_a_row_per_case(capsys):
    assert main(["--quick", "--impls", "numpy,cython"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.split()[:1] and
            line.split()[0] in {c.name for c in QUICK}]
    assert sorted(set(rows)) == sorted(c.name for c in QUICK)
    assert "SGEMM 1024³ float32 in this run" in out
    assert "BLAS:" in out


def test_json_holds_every_case_and_the_sgemm_rate(tmp_path):
    path = tmp_path / "bench.json"
    assert main(["--quick", "--impls", "numpy,cython", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert [c["case"]["name"] for c in data["cases"]] == [c.name for c in QUICK]
    assert data["sgemm_gflops"]["1"] > 0
    first = data["cases"][0]["times_s"]
    assert first["numpy/fwd"] > 0 and first["numpy/fb"] > 0


def test_forward_only_reports_no_backward(capsys):
    assert main(["--quick", "--impls", "numpy", "--forward-only"]) == 0
    out = capsys.readouterr().out
    assert "fwd+bwd" not in out and " fwd " in out


def test_markdown_report(tmp_path):
    path = tmp_path / "bench.md"
    assert main(["--quick", "--impls", "numpy,cython", "--markdown", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# Benchmarks") and "| case | mode |" in text


def test_unknown_case_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "rnncore.bench", "--cases", "huge"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown case(s) ['huge']" in proc.stderr
