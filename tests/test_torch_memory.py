"""Peak memory of training steps through rnncore.torch.RNN against stock torch.nn.RNN
(issue 16 part 4: within 10% of stock's peak), each in a fresh process.

The figure is the growth of the process's peak resident set (``ru_maxrss``) over its
resident set before the first call: NumPy's allocations and torch's alike, and the
BLAS's and torch's own buffers set up by the first call.
"""
import subprocess
import sys

import pytest

pytest.importorskip("torch")

SCRIPT = """
import resource, sys
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
T, B, H, L = 100, 32, 256, 2
cls = torch.nn.RNN
if sys.argv[1] == "drop-in":
    import rnncore.torch
    cls = rnncore.torch.RNN
rnn = cls(H, H, L)
x, dy = torch.randn(T, B, H), torch.randn(T, B, H)
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
for _ in range(3):
    rnn.zero_grad()
    y, h = rnn(x)           # the last step's outputs live until here, as in a loop
    y.backward(dy)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
"""


def peak_growth(variant: str) -> int:
    """Bytes the peak resident set grew by over three training steps of ``variant``."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, variant], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_training_steps_through_the_drop_in_peak_within_10_percent_of_stock():
    stock, ours = peak_growth("stock"), peak_growth("drop-in")
    assert ours <= 1.10 * stock, (ours / 2**20, stock / 2**20)
