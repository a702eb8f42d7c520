"""``rnncore-bench --stream``: the stream row's columns and its JSON (no speed asserted)."""
import json

import pytest

from rnncore.bench import main
from rnncore.bench.stream import COLUMNS, format_stream_table

pytest.importorskip("rnncore._streaming")


def test_stream_row_times_every_cell_and_column(tmp_path, capsys):
    path = tmp_path / "stream.json"
    assert main(["--stream", "--quick", "--no-pin", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [r["cell"] for r in rows] == ["rnn", "lstm", "gru"]
    for r in rows:
        for column in COLUMNS:
            if column == "torch" and r["torch"] is None:
                continue
            assert r[column] > 0, (r["cell"], column)
    assert capsys.readouterr().out.startswith("stream: µs per inference step, B=1")


def test_stream_row_without_torch_shows_a_dash():
    row = {"cell": "rnn", "isa": "avx2", "B": 1, "K": 64, "H": 64, "dtype": "float32",
           "step": 0.5, "run": 0.3, "forward": 0.4, "torch": None}
    line = format_stream_table([row]).splitlines()[2]
    assert line.split()[4:6] == ["-", "-"]
