"""The char-rnn example trains, samples, saves and resumes (a very short run)."""
import pathlib
import subprocess
import sys

import pytest

from rnncore import RNNModel

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "char_rnn.py"


def run(*args):
    # the same interpreter and environment: the rnncore the tests import
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                          text=True, check=True, timeout=300)


def test_help_explains_the_options():
    out = run("--help").stdout
    for option in ("--steps", "--hidden", "--chunk", "--checkpoint", "--resume", "--text",
                   "--cell"):
        assert option in out


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_short_run_lowers_the_loss_and_resumes_from_its_checkpoint(tmp_path, cell):
    ckpt = tmp_path / "model.npz"
    result = run("--cell", cell, "--steps", "80", "--hidden", "64", "--sample-every", "40",
                 "--sample", "30", "--checkpoint", str(ckpt))
    line = next(l for l in result.stdout.splitlines() if l.startswith("loss:"))
    first = float(line.split("steps ")[1].split(",")[0])
    last = float(line.split("steps ")[2].split(" ")[0])
    assert last < first - 0.5                      # nats per character, fixed seed
    assert "--- step 40" in result.stdout + result.stderr     # a sample was printed
    assert RNNModel.load(ckpt).cell == cell
    resumed = run("--resume", str(ckpt), "--steps", "0", "--sample", "50", "--quiet")
    assert len(resumed.stdout.strip()) >= 40


def test_resuming_with_another_cell_is_refused(tmp_path):
    ckpt = tmp_path / "model.npz"
    run("--cell", "gru", "--steps", "1", "--hidden", "8", "--quiet", "--checkpoint", str(ckpt))
    result = subprocess.run([sys.executable, str(EXAMPLE), "--resume", str(ckpt), "--cell",
                             "lstm", "--steps", "0"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert "holds a model with cell='gru'; got --cell lstm" in result.stderr


def test_a_checkpoint_named_without_npz_resumes(tmp_path):
    ckpt = tmp_path / "model"
    run("--steps", "2", "--hidden", "8", "--quiet", "--checkpoint", str(ckpt))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    resumed = run("--resume", str(ckpt), "--steps", "0", "--sample", "20", "--quiet")
    assert len(resumed.stdout.strip()) >= 10
