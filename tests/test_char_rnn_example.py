"""The char-rnn example trains, samples, saves and resumes."""
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "char_rnn.py"


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--steps", "--hidden", "--chunk", "--checkpoint", "--resume"):
        assert option in out


def test_short_run_lowers_the_loss_and_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "model.npz"
    out = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "60", "--hidden", "64",
                          "--quiet", "--checkpoint", str(ckpt)],
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("loss:"))
    first = float(line.split("steps ")[1].split(",")[0])
    last = float(line.split("steps ")[2].split(" ")[0])
    assert last < first - 0.5
    resumed = subprocess.run([sys.executable, str(EXAMPLE), "--resume", str(ckpt),
                              "--steps", "0", "--sample", "50", "--quiet"],
                             capture_output=True, text=True, check=True).stdout
    assert len(resumed.strip()) >= 40
