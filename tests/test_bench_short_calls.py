"""``rnncore-bench --short-calls``: the rows, their table and JSON (no speed asserted)."""
import json

import pytest

from rnncore.bench import main
from rnncore.bench.short_calls import format_short_calls_table

pytest.importorskip("torch")


def test_short_call_rows_time_stock_and_drop_in_for_every_mode_and_length(tmp_path,
                                                                           capsys):
    path = tmp_path / "short.json"
    assert main(["--short-calls", "--quick", "--no-pin", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [(r["mode"], r["T"], r["H"]) for r in rows] == [
        ("forward", 1, 64), ("forward", 35, 64),
        ("forward+backward", 1, 64), ("forward+backward", 35, 64)]
    for r in rows:
        assert r["B"] == 1 and r["layers"] == 2
        assert r["stock"] > 0 and r["drop-in"] > 0, r
    assert capsys.readouterr().out.startswith("short calls: µs per call, B=1")


@pytest.mark.parametrize("drop_in, verdict", [(90.0, "met"), (100.0, "met"),
                                              (110.0, "MISSED")])
def test_short_calls_table_says_whether_the_drop_in_is_at_most_stocks_time(drop_in,
                                                                          verdict):
    row = {"T": 1, "B": 1, "H": 64, "layers": 2, "mode": "forward", "dtype": "float32",
           "isa": "avx512", "stock": 100.0, "drop-in": drop_in}
    line = format_short_calls_table([row]).splitlines()[2]
    assert line.split()[-1] == verdict
    assert line.split()[-2] == f"{drop_in / 100:.2f}"
