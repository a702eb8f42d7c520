"""The rnncore-bench command runs and reports, for the Elman RNN and the gated cells,
padded and with lengths (its figures are not checked: speed is shown by the benchmark,
never asserted by a test)."""
import contextlib
import dataclasses
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest

from rnncore import RNN, functional, get_num_threads, set_num_threads
from rnncore.bench import CASES, QUICK, Result, comparisons, grid, main, make_runners, \
    memory_ratio, plain, quick, targets, variants, with_lengths
from rnncore.bench.runners import ONE_THREAD, PADDED, _inputs
from rnncore.bench.timing import GemmChild, _on_one_thread, denormal_share

FAST = ["--quick", "--impls", "numpy,numpy-plain,cython"]
GRID = {c.name: c for c in CASES}


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
    cases = [c for cell in ("rnn", "lstm", "gru") for c in quick(cell)]
    names = {c.name for c in cases} | {with_lengths(c).name for c in cases}
    return [line.split()[0] for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in names]


def test_quick_run_exits_zero_and_prints_a_row_per_case_and_mode(quick_run):
    status, out, _, _ = quick_run
    assert status == 0
    assert _rows(out) == [c.name for c in QUICK] * 2        # forward+backward, forward
    assert "forward+backward:" in out and "forward:" in out
    assert "GEMM 256³ np.matmul" in out and "BLAS/OpenMP libraries loaded" in out
    assert "numpy 2" in out or "numpy 1" in out             # versions in the header


def test_header_names_the_cpu_and_the_kernels_code_paths(quick_run):
    from rnncore import _kernels
    _, out, data, page = quick_run
    env = data["environment"]
    assert env["kernel_isa"] == _kernels.isa() == env["kernel_isa_best"]
    assert env["whole_sequence_gemm"] == _kernels.whole_sequence_gemm()
    assert env["blas_core"] == _kernels.blas_core()
    assert env["cpu_avx512"] == ("avx512" in _kernels.supported_isas())
    for text in (out, page):
        assert f"machine: {env['cpu']}, " in text
        assert f"AVX-512: {'yes' if env['cpu_avx512'] else 'no'}" in text
        assert (f"element-wise passes {env['kernel_isa']} (this CPU's best); "
                f"whole-sequence products: {env['whole_sequence_gemm']}; their OpenBLAS "
                f"runs its {env['blas_core']} kernels") in text
    assert page.count("comes from one CPU and one set of code paths: " + env["cpu"]) == 1


def test_header_gives_the_speeds_the_split_calls_threads_were_last_measured_at():
    from rnncore.bench.report import _dispatched_text
    text = _dispatched_text({"openmp": 3, "workers": 1}, "libgomp.so.1",
                            {"2": [1.2, 0.8], "3": [1.1, 1.0, 0.9]})
    assert text.startswith("rnncore's split calls in this process: 3 ran")
    assert text.endswith("their threads' speeds at the end, relative to their mean: "
                         "1.20 / 0.80, 1.10 / 1.00 / 0.90")
    assert "speeds" not in _dispatched_text({"workers": 1}, None, {})


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_isa_runs_the_kernels_on_that_isa_and_says_so(isa, tmp_path, capsys):
    from rnncore import _kernels
    if isa not in _kernels.supported_isas():
        pytest.skip(f"this CPU cannot run {isa}")
    before = _kernels.isa()
    seen = []
    real = functional.forward

    def spy(*args, **kwargs):                     # the ISA in force while timing
        seen.append(_kernels.isa())
        return real(*args, **kwargs)
    path = tmp_path / "b.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(functional, "forward", spy)
        assert main(["--quick", "--impls", "cython", "--cases", "tiny", "--forward-only",
                     "--isa", isa, "--isa-scope", "rnncore", "--json", str(path)]) == 0
    assert seen and set(seen) == {isa}
    assert json.loads(path.read_text())["environment"]["kernel_isa"] == isa
    forced = "" if isa == _kernels.supported_isas()[-1] else " (forced with --isa"
    assert f"element-wise passes {isa}{forced}" in capsys.readouterr().out
    assert _kernels.isa() == before                 # restored after the run


def test_isa_this_cpu_lacks_is_a_usage_error(monkeypatch, capsys):
    from rnncore import _kernels
    before = _kernels.isa()
    monkeypatch.setattr(_kernels, "supported_isas", lambda: ("baseline", "avx2"))
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--impls", "cython", "--cases", "tiny", "--isa", "avx512"])
    assert exc.value.code == 2
    assert ("--isa avx512: this CPU cannot run it; it supports baseline, avx2"
            in capsys.readouterr().err)
    assert _kernels.isa() == before


def test_json_holds_every_case_with_the_expected_keys(quick_run):
    data = quick_run[2]
    assert set(data) == {"environment", "sgemm_gflops", "cases"}
    assert {"cpu", "versions", "blas", "threads", "env"} <= set(data["environment"])
    assert [c["case"]["name"] for c in data["cases"]] == [c.name for c in QUICK]
    assert data["sgemm_gflops"]["1"] > 0 and data["sgemm_gflops"]["2"] > 0
    for case in data["cases"]:
        assert {"times_s", "iqr_s", "repeats", "gflops", "numpy_baseline",
                "speedup_vs_numpy", "gemm_gflops", "memory_ratio", "denormal_share",
                "targets", "comparisons"} <= set(case)
        assert case["times_s"]["numpy/fwd"] > 0 and case["times_s"]["numpy/fb"] > 0


def test_json_speedups_divide_by_the_fastest_numpy_of_each_case(quick_run):
    for case in quick_run[2]["cases"]:
        for mode in ("fb", "fwd"):
            times = case["times_s"]
            fastest = min(("numpy", "numpy-plain"), key=lambda i: times[f"{i}/{mode}"])
            assert case["numpy_baseline"][mode] == fastest
            assert case["speedup_vs_numpy"][f"cython/{mode}"] == pytest.approx(
                times[f"{fastest}/{mode}"] / times[f"cython/{mode}"])


@pytest.mark.parametrize("reference, plain_time, baseline", [
    (3.0, 1.0, "numpy-plain"), (1.0, 3.0, "numpy")])
def test_numpy_ratio_and_targets_divide_by_the_faster_numpy(reference, plain_time,
                                                              baseline):
    r = Result(GRID["tiny"], {("numpy", "fb"): np.array([reference]),
                              ("numpy-plain", "fb"): np.array([plain_time]),
                              ("cython", "fb"): np.array([0.1])})
    assert r.baseline("fb") == baseline
    assert r.speedup("cython", "fb") == pytest.approx(10.0)
    assert targets(r, {}, "fb")[0][:2] == ("≥10× NumPy", pytest.approx(10.0))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_plain_numpy_baseline_agrees_with_rnncore(bidirectional, nonlinearity, dtype, tol):
    rng = np.random.default_rng(3)
    T, B, K, H = 9, 3, 5, 6
    params = RNN(K, H, bidirectional=bidirectional, dtype=dtype, seed=4).params
    x = rng.standard_normal((T, B, K)).astype(dtype)
    R = rng.standard_normal((T, B, (2 if bidirectional else 1) * H)).astype(dtype)
    y, _, record = functional.forward(x, params, nonlinearity=nonlinearity,
                                      backend="numpy")
    dx, dh0, grads = functional.backward(record, R)
    relu = nonlinearity == "relu"
    y_plain, hs = plain.forward(x, params, relu)
    dx_plain, dh0_plain, grads_plain = plain.backward(x, params, hs, R, relu)

    def close(a, b):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(b)
    close(y_plain, y)
    close(dx_plain, dx)
    close(dh0_plain, dh0)
    assert list(grads_plain) == list(grads)
    for key in grads:
        close(grads_plain[key], grads[key])


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


@pytest.mark.parametrize("name, one", [("medium-2t", "medium"), ("large-2t", "large"),
                                       ("medium-bi-2t", "medium-bi")])
def test_two_thread_rows_are_one_direction_or_two_and_compared_with_one_thread(name, one):
    assert dataclasses.replace(GRID[name], name=one, threads=1, what="") == \
        dataclasses.replace(GRID[one], what="")
    two = Result(GRID[name], {("cython", "fb"): np.array([1.0]),
                              ("torch", "fb"): np.array([1.5])})
    by_name = {one: Result(GRID[one], {("cython", "fb"): np.array([1.9])})}
    assert [t[:3] for t in targets(two, by_name, "fb")] == [
        ("≥1.8× own 1-thread", pytest.approx(1.9), True), ("> torch", 1.5, True)]


def test_two_thread_target_divides_by_the_one_thread_calls_of_its_own_rounds():
    two = Result(GRID["medium-2t"], {("cython", "fb"): np.array([1.0]),
                                     (ONE_THREAD, "fb"): np.array([1.85])})
    by_name = {"medium": Result(GRID["medium"], {("cython", "fb"): np.array([1.5])})}
    assert [t[:3] for t in targets(two, by_name, "fb")] == [
        ("≥1.8× own 1-thread", pytest.approx(1.85), True)]


def test_a_two_thread_lengths_row_compares_the_implementations_not_the_divisor():
    case = with_lengths(GRID["medium-2t"])
    padded = Result(GRID["medium-2t"], {("cython", "fb"): np.array([1.0]),
                                        (ONE_THREAD, "fb"): np.array([1.9]),
                                        ("torch", "fb"): np.array([2.0])})
    row = Result(case, {("cython", "fb"): np.array([1.05]),
                        (ONE_THREAD, "fb"): np.array([2.0]),
                        ("torch", "fb"): np.array([3.0])})
    labels = [c[0] for c in comparisons(row, {"medium-2t": padded}, "fb")]
    assert labels == ["torch ÷ padded"]


def test_lengths_target_divides_by_the_padded_calls_of_its_own_rounds():
    row = Result(with_lengths(GRID["medium"]), {("cython", "fb"): np.array([1.05]),
                                                (PADDED, "fb"): np.array([1.0])})
    by_name = {"medium": Result(GRID["medium"], {("cython", "fb"): np.array([0.5])})}
    assert [t[:3] for t in targets(row, by_name, "fb")] == [
        ("≤1.1× own padded", pytest.approx(1.05), True)]


@pytest.mark.skipif("cython" not in functional.backends(), reason="no compiled kernels")
def test_lengths_cases_time_rnncore_padded_in_their_rounds(tmp_path):
    path = tmp_path / "b.json"
    assert main(["--cases", "tiny", "--lengths", "--impls", "cython", "--budget",
                 "0.005", "--rounds", "1", "--json", str(path)]) == 0
    twin = {f"{PADDED}/fwd", f"{PADDED}/fb"}
    keys = {c["case"]["name"]: set(c["times_s"])
            for c in json.loads(path.read_text())["cases"]}
    assert twin <= keys["tiny-len"] and not twin & keys["tiny"]


@pytest.mark.skipif("cython" not in functional.backends(), reason="no compiled kernels")
def test_the_divisors_blocks_run_right_after_rnncore_own(monkeypatch):
    import rnncore.bench.timing as timing
    orders, real = [], timing.measure

    def measure(fns, *args, **kwargs):
        orders.append(list(fns))
        return real(fns, *args, **kwargs)
    monkeypatch.setattr(timing, "measure", measure)
    case = with_lengths(next(c for c in QUICK if c.name == "medium-2t"))
    timing.run([case], ["cython", "numpy"], budget=0.001, rounds=1, gemm_n=32)
    keys = orders[0]
    for mode in ("fwd", "fb"):
        i = keys.index(("cython", mode))
        assert keys[i + 1:i + 3] == [(ONE_THREAD, mode), (PADDED, mode)]


@pytest.mark.parametrize("environment", [{}, {"OPENBLAS_CORETYPE": "Haswell"}])
def test_two_thread_cases_time_each_gemm_probe_on_one_thread_right_after_it(
        environment, monkeypatch):
    import rnncore.bench.timing as timing
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    orders, real = [], timing.measure

    def measure(fns, *args, **kwargs):
        orders.append(list(fns))
        return real(fns, *args, **kwargs)
    monkeypatch.setattr(timing, "measure", measure)
    two, one = (next(c for c in QUICK if c.name == n) for n in ("medium-2t", "medium"))
    results = timing.run([two, one], ["numpy"], forward_only=True, budget=0.001,
                         rounds=1, gemm_n=32)
    probes = [k for k, _ in orders[0] if k.startswith("gemm")]
    expected = ["gemm", "gemm-1t"] + (["gemm-native", "gemm-native-1t"]
                                      if environment else [])
    assert probes == expected
    assert [k for k, _ in orders[1] if k.startswith("gemm")] == expected[::2]
    assert set(results[0].one_thread_gemm) == ({"gemm", "native"} if environment
                                               else {"gemm"})
    assert all(v > 0 for v in results[0].one_thread_gemm.values())
    assert results[1].one_thread_gemm == {} and np.isnan(results[1].gemm_scaling)


def test_in_process_gemm_probe_on_one_thread_narrows_numpys_blas_for_the_call():
    from threadpoolctl import threadpool_limits
    from rnncore.bench.timing import _on_one_blas_thread

    def numpy_blas_threads():
        from rnncore import _parallel
        return [c.num_threads for c in _parallel._numpy_blas()]
    if not numpy_blas_threads():
        pytest.skip("threadpoolctl finds no BLAS of NumPy's")
    seen = []
    with threadpool_limits(2, user_api="blas"):
        before = numpy_blas_threads()
        if max(before) < 2:
            pytest.skip("NumPy's BLAS has one thread on this machine")
        _on_one_blas_thread(lambda: seen.append(numpy_blas_threads()))()
        assert seen == [[1] * len(before)] and numpy_blas_threads() == before


def test_no_one_thread_gemm_probe_where_numpys_blas_stays_on_its_threads(monkeypatch):
    from rnncore import _parallel
    from rnncore.bench.timing import _on_one_blas_thread

    def stays():
        raise RuntimeError("NumPy's BLAS stays on 2 threads")
    monkeypatch.setattr(_parallel._NUMPY_BLAS, "_narrow", stays)
    assert _on_one_blas_thread(lambda: None) is None


def test_no_one_thread_gemm_probe_where_no_blas_of_numpys_is_found(monkeypatch):
    from rnncore import _parallel
    from rnncore.bench.timing import _on_one_blas_thread
    monkeypatch.setattr(_parallel, "_numpy_blas", lambda: [])
    assert _on_one_blas_thread(lambda: None) is None


@pytest.mark.parametrize("isa_core, divisor", [(None, 100.0), ("Haswell", 80.0)])
def test_two_thread_row_shows_the_gemm_scaling_of_the_probe_gemm_divides_by(
        isa_core, divisor):
    r = Result(GRID["medium-2t"], {("cython", "fb"): np.array([1.0])},
               gemm_gflops=170.0, isa_gemm_gflops=150.0, isa_blas_core=isa_core,
               one_thread_gemm={"gemm": 100.0, "isa": 80.0})
    assert r.gemm_rate / r.gemm_scaling == pytest.approx(divisor)
    assert [c[:2] for c in comparisons(r, {}, "fb")] == [
        ("GEMM 1-thread ÷ 2-thread", pytest.approx(r.gemm_rate / divisor))]


def test_one_thread_runner_runs_rnncore_on_one_thread_and_restores_the_cases():
    seen = []
    call = _on_one_thread(lambda: seen.append(get_num_threads()), 2)
    set_num_threads(2)
    try:
        call()
        assert seen == [1] and get_num_threads() == 2
    finally:
        set_num_threads(None)


@pytest.mark.skipif("cython" not in functional.backends(), reason="no compiled kernels")
def test_two_thread_cases_time_rnncore_on_one_thread_in_their_rounds(quick_run):
    data = quick_run[2]
    for case in data["cases"]:
        keys = set(case["times_s"])
        one = {f"{ONE_THREAD}/fwd", f"{ONE_THREAD}/fb"}
        if case["case"]["threads"] > 1:
            assert one <= keys, case["case"]["name"]
        else:
            assert not one & keys, case["case"]["name"]


def test_two_thread_row_run_without_its_one_thread_row_leaves_out_that_target():
    two = Result(GRID["medium-2t"], {("cython", "fb"): np.array([1.0]),
                                     ("torch", "fb"): np.array([1.5])})
    assert [t[:3] for t in targets(two, {}, "fb")] == [("> torch", 1.5, True)]


def test_long_denormal_states_are_denormal_after_the_first_steps():
    case = GRID["long-denormal"]
    assert (case.T, case.B, case.K, case.H) == (GRID["long"].T, GRID["long"].B,
                                                GRID["long"].K, GRID["long"].H)
    params, x, _ = _inputs(case)
    y, _ = plain.forward(x, params)
    tiny = np.finfo(np.float32).tiny
    denormal = (y != 0) & (np.abs(y) < tiny)
    assert denormal[40:].all()                   # within 39 steps, and for good
    assert denormal_share(case, "numpy") == pytest.approx(denormal.mean())
    assert denormal_share(GRID["long"], "numpy") == 0


def test_denormal_share_is_the_ieee_one_of_the_reference_not_the_flushing_kernels():
    case = next(c for c in QUICK if c.name == "long-denormal")
    assert denormal_share(case) == denormal_share(case, "numpy") > 0.5
    if "cython" in functional.backends():
        assert denormal_share(case, "cython") == 0       # FTZ/DAZ: the reason why


def test_long_denormal_row_reports_the_ieee_denormal_share(quick_run):
    _, out, data, page = quick_run
    case = next(c for c in data["cases"] if c["case"]["name"] == "long-denormal")
    assert case["denormal_share"] > 0.5
    assert f"denormal states in IEEE arithmetic: {100 * case['denormal_share']:.0f}%" \
        in out
    assert "computed with the NumPy reference on the same inputs" in page


def test_long_denormal_reports_its_time_over_long():
    slow = Result(GRID["long-denormal"], {("numpy-plain", "fb"): np.array([6.0]),
                                          ("cython", "fb"): np.array([0.3])}, denormals=0.98)
    by_name = {"long": Result(GRID["long"], {("numpy-plain", "fb"): np.array([5.0]),
                                             ("cython", "fb"): np.array([0.2])})}
    assert [c[:2] for c in comparisons(slow, by_name, "fb")] == [
        ("rnncore ÷ long", pytest.approx(1.5)), ("NumPy ÷ long", pytest.approx(1.2)),
        ("denormal states in IEEE arithmetic", pytest.approx(98.0))]
    assert comparisons(by_name["long"], by_name, "fb") == []


def test_memory_ratio_counts_one_copy_of_the_parameters_as_kept(monkeypatch):
    """A forward+backward that allocates exactly the output and h_n, the hidden
    states, the gradients and one snapshot of the weights keeps nothing extra."""
    case = dataclasses.replace(GRID["tiny"], T=4, B=1, K=64, H=64)
    T, B, K, H = case.T, case.B, case.K, case.H
    n_params = H * K + H * H + 2 * H

    def forward(x, params, lengths=None, backend=None):
        return np.empty((T, B, H), np.float32), np.empty((1, B, H), np.float32), \
            [np.empty((T + 1, B, H), np.float32), np.empty(n_params, np.float32)]

    def backward(record, dy):
        return np.empty((T, B, K), np.float32), np.empty((1, B, H), np.float32), \
            np.empty(n_params, np.float32)
    fake = types.SimpleNamespace(backends=lambda: ("cython",), forward=forward,
                                 backward=backward)
    monkeypatch.setattr("rnncore.bench.timing.functional", fake)
    assert memory_ratio(case) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("in_process, native, rate", [
    (70.0, 140.0, 140.0), (140.0, 70.0, 140.0), (70.0, float("nan"), 70.0)])
def test_gemm_fraction_divides_by_the_faster_of_the_two_gemm_rates(in_process, native,
                                                                   rate):
    case = GRID["medium"]
    r = Result(case, {("cython", "fb"): np.array([case.flops("fb") / 119e9])},
               gemm_gflops=in_process, native_gemm_gflops=native)
    assert r.gemm_rate == r.native_gemm_rate == rate
    assert r.gemm_fraction("cython", "fb") == pytest.approx(119.0 / rate)
    assert targets(r, {}, "fb")[0][:2] == ("≥85% SGEMM", pytest.approx(11900 / rate))


@pytest.mark.parametrize("in_process, native", [(204.0, float("nan")), (112.0, 204.0),
                                                (204.0, 150.0)])
def test_gemm_fraction_under_a_forced_isa_divides_by_that_isas_openblas_rate(in_process,
                                                                             native):
    """Kernels forced onto AVX2 at 95.2 GFLOP/s against OpenBLAS's Haswell kernels at
    112: 85%, met, whatever this CPU's own GEMM reaches (204 GFLOP/s)."""
    case = GRID["medium"]
    r = Result(case, {("cython", "fb"): np.array([case.flops("fb") / 95.2e9])},
               gemm_gflops=in_process, native_gemm_gflops=native,
               isa_gemm_gflops=112.0, isa_blas_core="Haswell")
    assert r.native_gemm_rate == 204.0
    assert r.gemm_rate == 112.0
    assert r.gemm_fraction("cython", "fb") == pytest.approx(0.85)
    assert targets(r, {}, "fb")[0][:3] == ("≥85% SGEMM", pytest.approx(85.0), True)


def test_gemm_child_without_a_core_type_runs_without_the_kernel_overrides(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    assert GemmChild.wanted()
    env = GemmChild.environment(2)
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["OPENBLAS_NUM_THREADS"] == "2"
    probe = GemmChild("float32", 32, 1)
    try:
        for _ in range(3):
            probe()                             # one product per call, answered
    finally:
        probe.close()
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.delenv("OPENBLAS_L2_SIZE")
    assert not GemmChild.wanted()


@pytest.mark.parametrize("pinned", [None, "SkylakeX"])
def test_gemm_child_with_a_core_type_runs_that_cores_kernels(pinned, monkeypatch):
    if pinned is None:
        monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_CORETYPE", pinned)
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    env = GemmChild.environment(1, "Haswell")
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and "OPENBLAS_L2_SIZE" not in env
    probe = GemmChild("float32", 32, 1, "Haswell")
    try:
        probe()
        core = probe.core
    finally:
        probe.close()
    if not core:
        pytest.skip("the child's OpenBLAS does not report its core")
    assert core == "Haswell"


def _forcible(isa):
    from rnncore import _kernels
    supported = _kernels.supported_isas()
    if isa not in supported[:-1]:
        pytest.skip(f"--isa {isa} does not force a lower instruction set on this CPU "
                    f"(it supports {', '.join(supported)})")


@pytest.mark.parametrize("environment", [{}, {"OPENBLAS_CORETYPE": "Haswell",
                                              "OPENBLAS_L2_SIZE": "512"}])
def test_forced_avx2_times_a_haswell_gemm_child_and_divides_by_its_rate(
        environment, tmp_path, capsys, monkeypatch):
    _forcible("avx2")
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    started = []
    real = GemmChild.__init__

    def spy(self, dtype, n, threads, coretype=None):
        started.append(coretype)
        real(self, dtype, n, threads, coretype)
    monkeypatch.setattr(GemmChild, "__init__", spy)
    path = tmp_path / "b.json"
    assert main(["--quick", "--impls", "cython", "--cases", "medium", "--forward-only",
                 "--isa", "avx2", "--isa-scope", "rnncore", "--json", str(path)]) == 0
    # the Haswell child always; this CPU's own where the environment pins other kernels
    assert started == ["Haswell"] + ([None] if environment else [])
    data = json.loads(path.read_text())
    env, case = data["environment"], data["cases"][0]
    assert env["isa_blas_core"] == case["isa_blas_core"] == "Haswell"
    assert case["gemm_rate_gflops"] == case["isa_gemm_gflops"] > 0
    assert case["native_rate_gflops"] == max(case["gemm_gflops"],
                                             case["native_gemm_gflops"] or 0)
    out = capsys.readouterr().out
    assert "GEMM with OpenBLAS's kernels for avx2, its Haswell core (a process with " \
           "OPENBLAS_CORETYPE=Haswell" in out
    assert ("%GEMM divides by the Haswell-kernel rate, OpenBLAS on the instruction set "
            "the kernels were forced onto (avx2), not by this CPU's native-kernel rate: "
            f"{env['native_rate_gflops']['float32/1']:.1f} GFLOP/s") in out


def test_the_cpus_best_isa_divides_by_its_native_kernel_rate(quick_run):
    _, out, data, _ = quick_run
    assert data["environment"]["isa_blas_core"] is None
    for case in data["cases"]:
        assert case["isa_gemm_gflops"] is None
        assert case["gemm_rate_gflops"] == case["native_rate_gflops"] == max(
            case["gemm_gflops"], case["native_gemm_gflops"] or 0)
    assert "%GEMM divides by this CPU's native-kernel rate" in out


def test_markdown_page_states_the_gemm_rate_rule(quick_run):
    assert ("`%GEMM` and the SGEMM target divide by the GEMM rate of OpenBLAS running "
            "the kernels of the instruction set rnncore's kernels ran" in quick_run[3])
    assert "avx2: Haswell, baseline: Prescott" in quick_run[3]


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
    (["--isa", "sse"], "argument --isa: invalid choice: 'sse'"),
    (["--cell", "foo"], "argument --cell: invalid choice: 'foo'"),
    (["--cell", "lstm", "--cases", "long-denormal"],
     "unknown case(s) ['long-denormal'] for --cell lstm"),
])
def test_usage_errors_exit_2_naming_the_value(args, message):
    proc = subprocess.run([sys.executable, "-m", "rnncore.bench", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr


# --- the gated cells (--cell lstm|gru) and lengths -------------------------------------

GATED = ["tiny", "tiny-len", "medium-f64"]


def _installed(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module", params=["lstm", "gru"])
def gated_run(request, tmp_path_factory):
    """One quick run of ``--cell lstm`` / ``--cell gru`` over a padded row, its -len row
    and the float64 row: the cell, exit status, stdout, JSON and Markdown."""
    cell = request.param
    d = tmp_path_factory.mktemp(f"bench-{cell}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["--cell", cell, "--quick", "--cases", ",".join(GATED),
                       "--json", str(d / "b.json"), "--markdown", str(d / "b.md")])
    return cell, status, out.getvalue(), json.loads((d / "b.json").read_text()), \
        (d / "b.md").read_text()


def _table_head(out, title):
    """The column names of the table under ``title`` ("forward+backward:", ...)."""
    lines = out.splitlines()
    return lines[lines.index(title) + 1].split()


def test_gated_quick_run_prints_a_row_per_case_and_mode(gated_run):
    cell, status, out, data, _ = gated_run
    assert status == 0
    assert _rows(out) == ["tiny", "tiny-len", "medium-f64"] * 2
    assert {c["case"]["cell"] for c in data["cases"]} == {cell}
    assert data["environment"]["cells"] == [cell]
    assert f"cell: {cell.upper()} (torch's equations and gate order" in out


@pytest.mark.parametrize("column, module", [("torch", "torch"), ("jax", "jax")])
def test_gated_quick_run_has_torch_and_jax_columns_where_installed(gated_run, column,
                                                                    module):
    _, _, out, data, _ = gated_run
    for title in ("forward+backward:", "forward:"):
        assert (f"{column} ms" in " ".join(_table_head(out, title))) == \
            _installed(module)
    if _installed(module):
        assert all(c["times_s"][f"{column}/fb"] > 0 for c in data["cases"])


def _dropin(cell):
    """Whether rnncore.torch has a drop-in for ``cell`` (and torch is installed)."""
    if not _installed("torch"):
        return False
    import rnncore.torch
    return hasattr(rnncore.torch, cell.upper())


def test_gated_rows_leave_out_what_has_no_gated_version(gated_run):
    cell, _, out, data, _ = gated_run
    head = " ".join(_table_head(out, "forward+backward:"))
    assert "numpy-plain ms" not in head
    assert ("torch+rnncore ms" in head) == _dropin(cell)
    assert "numpy ms" in head and "cython ms" in head
    for case in data["cases"]:                  # ×NumPy divides by the reference
        assert case["numpy_baseline"] == {"fb": "numpy", "fwd": "numpy"}


def test_gated_rows_count_g_times_the_elman_flops(gated_run):
    cell, _, out, data, page = gated_run
    G = {"lstm": 4, "gru": 3}[cell]
    for case in data["cases"]:
        c = case["case"]
        steps = sum(case["lengths"]) if case["lengths"] else c["T"] * c["B"]
        assert case["flops_forward"] == 2 * steps * G * c["H"] * (c["K"] + c["H"])
    for text in (out, page):
        assert "FLOPs 2·T·B·G·H·(K+H) per direction, G the gate blocks: 1 for the " \
               "Elman RNN, 4 for LSTM, 3 for GRU" in text


def test_gated_lengths_row_reports_each_time_over_its_own_padded_time(gated_run):
    _, _, out, data, _ = gated_run
    by_name = {c["case"]["name"]: c for c in data["cases"]}
    row = by_name["tiny-len"]
    assert row["case"]["lengths"] is True and row["lengths"] is not None
    for mode in ("fb", "fwd"):
        shown = {c["ratio"]: c["value"] for c in row["comparisons"][mode]}
        for impl in ("numpy", "torch", "jax"):
            if f"{impl}/{mode}" in row["times_s"]:
                assert shown[f"{impl} ÷ padded"] == pytest.approx(
                    row["times_s"][f"{impl}/{mode}"]
                    / by_name["tiny"]["times_s"][f"{impl}/{mode}"])
    line = next(line for line in out.splitlines() if line.startswith("tiny-len "))
    assert "numpy ÷ padded: " in line
    assert ("torch ÷ padded: " in line) == _installed("torch")


def test_gated_markdown_page_explains_the_gated_rows(gated_run):
    cell, _, _, _, page = gated_run
    assert "`rnncore-bench --cell lstm` and `--cell gru` time the gated cells" in page
    assert "there being no plain-NumPy gated RNN" in page
    assert "Rows with lengths (`-len`)" in page
    assert f"{cell.upper()}: the grid" in page
    assert "| LSTM, float32 | ≥ 1.5× torch's nn.LSTM (oneDNN)" in page


def test_gated_targets_are_printed_per_row_at_grid_sizes(tmp_path, capsys):
    """At the grid's sizes (tiny is cheap enough to run here) the rows carry the gated
    cells' targets as ✓/✗, in the table and the JSON."""
    path = tmp_path / "b.json"
    assert main(["--cell", "lstm", "--cases", "tiny,tiny-len", "--budget", "0.005",
                 "--rounds", "1", "--impls", "numpy,cython,torch,jax",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    labels = {c["case"]["name"]: [t["target"] for t in c["targets"]["fb"]]
              for c in data["cases"]}
    peers = [label for label, module in (("≥1.5× torch", "torch"), ("> jax", "jax"))
             if _installed(module)]
    assert labels == {"tiny": peers, "tiny-len": ["≤1.1× own padded"] + peers}
    line = next(line for line in out.splitlines() if line.startswith("tiny-len "))
    assert "≤1.1× own padded: " in line and ("✓" in line or "✗" in line)


def _fake(case, **ms):
    """A Result with one forward+backward time per implementation, in ms."""
    return Result(case, {(impl.replace("_", "+"), "fb"): np.array([t / 1e3])
                         for impl, t in ms.items()}, gemm_gflops=100.0)


@pytest.mark.parametrize("cell, name, need", [
    ("lstm", "medium", 1.5), ("gru", "medium", 3.0), ("lstm", "medium-f64", 3.0),
    ("gru", "medium-f64", 3.0), ("lstm", "large-2t", 1.5), ("gru", "tiny", 3.0),
    ("lstm", "tiny-f64", 3.0), ("lstm", "long-len-f64", 3.0)])
def test_gated_targets_against_torch(cell, name, need):
    rows = grid(cell)
    case = next(c for c in variants(rows, lengths=True)
                + variants(rows, dtype="float64", lengths=True) if c.name == name)
    met = _fake(case, cython=10.0, torch=10.0 * need, jax=11.0)
    missed = _fake(case, cython=10.0, torch=9.9 * need, jax=9.0)
    assert (f"≥{need:g}× torch", pytest.approx(need), True) in \
        [t[:3] for t in targets(met, {}, "fb")]
    assert [t[:3] for t in targets(missed, {}, "fb") if "torch" in t[0] or "jax" in t[0]] \
        == [(f"≥{need:g}× torch", pytest.approx(0.99 * need), False),
            ("> jax", pytest.approx(0.9), False)]


@pytest.mark.parametrize("cell, G", [("lstm", 4), ("gru", 3)])
def test_gated_sgemm_target_counts_g_times_the_elman_flops(cell, G):
    case = next(c for c in grid(cell) if c.name == "medium")
    elman = GRID["medium"]
    assert case.flops("fb") == G * elman.flops("fb")
    r = Result(case, {("cython", "fb"): np.array([case.flops("fb") / 90e9])},
               gemm_gflops=100.0)
    assert targets(r, {}, "fb")[0][:3] == ("≥85% SGEMM", pytest.approx(90.0), True)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("ratio, met", [(1.08, True), (1.12, False)])
def test_lengths_target_is_rnncore_time_over_its_own_padded_time(cell, ratio, met):
    padded = next(c for c in grid(cell) if c.name == "medium")
    case = with_lengths(padded)
    assert case.name == "medium-len" and case.padded == "medium"
    r = _fake(case, cython=10.0 * ratio, torch=50.0)
    by_name = {"medium": _fake(padded, cython=10.0, torch=20.0)}
    assert ("≤1.1× own padded", pytest.approx(ratio), met) in \
        [t[:3] for t in targets(r, by_name, "fb")]
    assert ("torch ÷ padded", pytest.approx(2.5)) in \
        [c[:2] for c in comparisons(r, by_name, "fb")]
    assert "≤1.1× own padded" not in [t[0] for t in targets(r, {}, "fb")]


@pytest.mark.parametrize("B, short", [(1, [0]), (4, [0]), (32, list(range(0, 32, 4)))])
def test_lengths_rows_make_a_quarter_of_the_sequences_three_quarters_long(B, short):
    case = with_lengths(dataclasses.replace(GRID["medium"], B=B))
    lengths = case.lengths_array
    assert lengths.shape == (B,) and lengths.dtype == np.int64
    assert list(np.flatnonzero(lengths < case.T)) == short
    assert set(lengths[short]) == {3 * case.T // 4}
    assert case.steps == lengths.sum()
    assert GRID["medium"].lengths_array is None


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_grid_is_the_elman_sizes_without_long_denormal_plus_lengths_rows(cell):
    names = [c.name for c in grid(cell)]
    assert names == ["tiny", "small", "medium", "large", "long", "tiny-len", "small-len",
                     "medium-len", "large-len", "long-len", "medium-bi", "medium-bi-2t",
                     "medium-2t", "large-2t", "medium-f64"]
    for case in grid(cell):
        elman = GRID[case.padded or case.name]
        assert (case.T, case.B, case.K, case.H, case.threads, case.dtype,
                case.bidirectional) == (elman.T, elman.B, elman.K, elman.H,
                                        elman.threads, elman.dtype, elman.bidirectional)
    assert grid("rnn") == CASES and quick("rnn") == QUICK


def test_lengths_flag_adds_a_len_row_beside_every_case():
    cases = [GRID["tiny"], GRID["medium-bi-2t"]]
    assert [c.name for c in variants(cases, lengths=True)] == \
        ["tiny", "tiny-len", "medium-bi-2t", "medium-bi-len-2t"]
    assert [c.name for c in variants(cases, dtype="float64", lengths=True)] == \
        ["tiny-f64", "tiny-len-f64", "medium-bi-f64-2t", "medium-bi-len-f64-2t"]
    assert all(c.padded in {"tiny", "medium-bi-2t", "tiny-f64", "medium-bi-f64-2t"}
               for c in variants(cases, dtype="float64", lengths=True) if c.lengths)


def test_lengths_flag_runs_the_elman_rows_with_lengths(capsys):
    assert main(["--quick", "--cases", "tiny", "--lengths", "--forward-only",
                 "--impls", "numpy,numpy-plain,cython"]) == 0
    out = capsys.readouterr().out
    assert _rows(out) == ["tiny", "tiny-len"]
    line = next(line for line in out.splitlines() if line.startswith("tiny-len "))
    assert "numpy ÷ padded: " in line and line.split()[2] == "–"   # no numpy-plain


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnncore_columns_are_the_backends_that_implement_the_cell(cell, monkeypatch):
    case = next(c for c in quick(cell) if c.name == "tiny")
    assert make_runners(case, "numpy-plain") is None
    monkeypatch.setattr(functional, "backends_for", lambda c: ("numpy",))
    assert make_runners(case, "cython") is None
    assert make_runners(case, "numpy") is not None
    monkeypatch.setattr(functional, "backends_for", lambda c: ("cython", "numpy"))
    if "cython" in functional.backends():
        assert make_runners(case, "cython") is not None


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_dropin_column_is_the_cells_dropin_where_rnncore_torch_has_one(
        cell, monkeypatch):
    pytest.importorskip("torch")
    import rnncore.torch
    case = next(c for c in quick(cell) if c.name == "tiny")
    if hasattr(rnncore.torch, cell.upper()):
        y = make_runners(case, "torch+rnncore")[0]()
        np.testing.assert_allclose(y.numpy(), make_runners(case, "torch")[0]().numpy(),
                                   rtol=1e-4, atol=1e-5)
    monkeypatch.delattr(rnncore.torch, cell.upper(), raising=False)
    assert make_runners(case, "torch+rnncore") is None


def test_memory_ratio_is_not_measured_for_the_gated_cells():
    case = next(c for c in quick("lstm") if c.name == "tiny")
    assert np.isnan(memory_ratio(case))


@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_jax_scan_computes_the_cell_torch_computes(cell, bidirectional, lengths):
    """The JAX column (and rnncore's) times the same function as torch's: outputs and
    ∂x agree."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    case = dataclasses.replace(next(c for c in quick(cell) if c.name == "small"), B=5,
                               bidirectional=bidirectional, lengths=lengths)
    torch_y, torch_dx = (np.asarray(f().detach()) for f in make_runners(case, "torch"))
    for impl in ("jax", "numpy", "cython"):
        runners = make_runners(case, impl)
        if runners is None:                         # a backend without the cell
            continue
        y, dx = (np.asarray(f()) for f in runners)
        assert y.shape == torch_y.shape and dx.shape == torch_dx.shape
        np.testing.assert_allclose(y, torch_y, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dx, torch_dx, rtol=1e-4, atol=1e-5)
    if lengths:
        short = case.lengths_array[0]
        assert short < case.T and not y[short:, 0].any()      # padded steps are zero


def test_torch_is_loaded_before_the_first_case_pins_the_process():
    """torch's OpenMP runtime counts the CPUs it may use when it is loaded: loaded
    inside a 1-thread case's pin it would run every later 2-thread case throttled."""
    pytest.importorskip("torch")
    script = (
        "import sys\n"
        "from rnncore.bench import QUICK\n"
        "from rnncore.bench import timing\n"
        "seen = []\n"
        "enter = timing.Limits.__enter__\n"
        "def entering(self):\n"
        "    seen.append('torch' in sys.modules)\n"
        "    return enter(self)\n"
        "timing.Limits.__enter__ = entering\n"
        "assert 'torch' not in sys.modules\n"
        "timing.run(QUICK[:1], ['torch'], forward_only=True, budget=0.01, rounds=1,\n"
        "           gemm_n=32)\n"
        "print(seen[0])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.split()[-1] == "True"
