"""Why gates help: the three cells' gradients on a long-range task.

The task is the copy problem (Hochreiter and Schmidhuber 1997; Arjovsky et al. 2016):
``n`` random symbols, ``delay`` − 1 blanks, a delimiter, then ``n`` more blanks during
which the network must output the symbols it read at the start. The loss counts only
those last ``n`` steps, so every bit of gradient that reaches the first steps has
crossed at least ``delay`` steps of the recurrence — the distance T − k on the plot.

:func:`compare_cells` trains a tanh RNN, an LSTM and a GRU of the same width briefly on
the same batches and measures ‖∂E/∂h_k‖ on one sequence with
:func:`rnncore.gradient_norms`; :func:`plot_cell_comparison` draws the result::

    from rnncore.long_range import compare_cells, plot_cell_comparison
    plot_cell_comparison({"at initialisation": compare_cells(train_steps=0),
                          "after 300 Adam steps": compare_cells(train_steps=300)},
                         "docs/gates_gradient_norms.png")
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .diagnostics import gradient_norms
from .model import RNNModel
from .optim import Adam, clip_grad_norm
from .rnn import _positive_int, make_rng

__all__ = ["copy_problem", "compare_cells", "plot_cell_comparison", "CELL_LABELS"]

CELL_LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}
_IGNORE = -100                       # RNNModel's default ignore_index


def copy_problem(delay: int = 200, batch: int = 32, *, n: int = 10, symbols: int = 8,
                 seed=None) -> tuple[np.ndarray, np.ndarray]:
    """A batch of the copy problem, time-major, for a labeling :class:`RNNModel`.

    Token 0 is the blank, 1..``symbols`` the symbols, ``symbols`` + 1 the delimiter.

    Parameters
    ----------
    delay : int
        Steps from the last symbol read to the delimiter, >= 1.
    batch : int
        B.
    n : int
        Symbols to copy.
    symbols : int
        Size of the alphabet the symbols are drawn from.
    seed : int, np.random.Generator or None

    Returns
    -------
    inputs : ndarray of int64, shape (T, B), T = n + delay + n
        The symbols at steps 0..n−1, the delimiter at step n + delay − 1, blanks
        elsewhere.
    targets : ndarray of int64, shape (T, B)
        The symbols at the last n steps; -100 (``ignore_index``) everywhere else.
    """
    delay = _positive_int("delay", delay)
    batch = _positive_int("batch", batch)
    n = _positive_int("n", n)
    symbols = _positive_int("symbols", symbols)
    rng = make_rng(seed)
    T = n + delay + n
    inputs = np.zeros((T, batch), dtype=np.int64)
    targets = np.full((T, batch), _IGNORE, dtype=np.int64)
    data = rng.integers(1, symbols + 1, (n, batch))
    inputs[:n] = data
    inputs[n + delay - 1] = symbols + 1
    targets[-n:] = data
    return inputs, targets


def compare_cells(delay: int = 200, *, n: int = 10, hidden_size: int = 64,
                  train_steps: int = 300,
                  batch: int = 32, lr: float = 3e-3, clip: float = 1.0, seed: int = 0,
                  cells=("rnn", "lstm", "gru"),
                  backend: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Train each cell briefly on the copy problem and measure its gradient norms.

    Each cell's :class:`RNNModel` (token input, ``embedding_dim`` = the alphabet,
    float32, torch's initialisation from ``seed``) takes ``train_steps`` Adam steps
    with gradient-norm clipping, every cell on the same batches; then
    :func:`rnncore.gradient_norms` runs in float64 on one fixed sequence. With
    ``train_steps=0`` the norms are those of the initialisation, the same weights the
    trained models started from.

    Parameters
    ----------
    delay : int
        The copy problem's delay.
    n : int
        Symbols to copy; sequences are ``delay`` + 2n steps long.
    hidden_size : int
        H of every cell.
    train_steps : int
        Optimiser steps, >= 0.
    batch : int
        Sequences per training step.
    lr, clip : float
        Adam's learning rate and the gradient-norm clip.
    seed : int
        The initialisation, the training batches and the measured sequence.
    cells : sequence of {"rnn", "lstm", "gru"}
    backend : {"cython", "numpy"} or None

    Returns
    -------
    dict of str to dict
        Keyed by the cell's label in :data:`CELL_LABELS`: the result of
        :func:`rnncore.gradient_norms` (``dE_dh`` (T+1,), for the LSTM ``dE_dc`` too,
        ``jacobian``, ``loss`` on the measured sequence), plus ``train_loss``, the mean
        loss of the last ten training steps (NaN without training). log(8) ≈ 2.08 is
        the loss of guessing the symbols.
    """
    train_steps = _positive_int("train_steps", train_steps, minimum=0)
    out = {}
    for cell in cells:
        model = RNNModel(10, hidden_size, vocab_size=10, embedding_dim=10, cell=cell,
                         seed=seed, dtype=np.float32, backend=backend)
        optimizer = Adam(model.params, lr=lr)
        rng = np.random.default_rng(seed)          # the same batches for every cell
        losses = []
        for _ in range(train_steps):
            loss, grads = model.loss_and_grads(*copy_problem(delay, batch, n=n, seed=rng))
            clip_grad_norm(grads, clip)
            optimizer.step(grads)
            losses.append(loss)
        exact = RNNModel(**{**model.config(), "dtype": np.float64}, backend=backend)
        exact.load_params(model.params)
        result = gradient_norms(exact, *copy_problem(delay, 1, n=n, seed=seed + 1))
        result["train_loss"] = float(np.mean(losses[-10:])) if losses else float("nan")
        out[CELL_LABELS[cell]] = result
    return out


def plot_cell_comparison(panels: Mapping[str, Mapping], path, *,
                         title: str | None = None, shade: tuple | None = None):
    """Plot ‖∂E/∂h_k‖ against T − k for each cell, one panel per comparison, to a PNG.

    Parameters
    ----------
    panels : mapping of str to the dict :func:`compare_cells` returns
        Panel title -> {cell label -> gradient norms}; e.g. the same models at
        initialisation and after training. A single :func:`compare_cells` result
        works too (one panel).
    path : str or path-like
        Where the PNG is written.
    title : str, optional
    shade : (float, float), optional
        A range of T − k to shade, e.g. the steps where the copy problem's symbols are
        read: (T − n, T) for sequences of T steps.

    Returns
    -------
    path

    Notes
    -----
    Solid lines are ‖∂E/∂h_k‖, the hidden state each cell outputs; for the LSTM a
    dashed line adds ‖∂E/∂c_k‖, its cell state (zero, so not drawn, at k = T, where the
    loss reads h alone). The y axis is logarithmic and shared,
    so the slope of a line is the rate at which its gradient vanishes per step.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_cell_comparison needs matplotlib: "
                          "pip install matplotlib") from None
    if any("dE_dh" in v for v in panels.values()):
        panels = {"": panels}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2),
                             sharey=True, squeeze=False)
    colors = {"tanh RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}
    for ax, (panel, norms) in zip(axes[0], panels.items()):
        if shade is not None:
            ax.axvspan(*shade, color="0.85", label="symbols read")
        for label, result in norms.items():
            color = colors.get(label)
            dE_dh = np.asarray(result["dE_dh"])[::-1]         # index by distance T − k
            ax.semilogy(np.arange(dE_dh.size), dE_dh, color=color,
                        label=f"{label}, ‖∂E/∂h_k‖")
            if "dE_dc" in result:
                dE_dc = np.asarray(result["dE_dc"], dtype=np.float64)[::-1]
                dE_dc = np.where(dE_dc > 0, dE_dc, np.nan)      # a log axis has no 0
                ax.semilogy(np.arange(dE_dc.size), dE_dc, color=color, linestyle="--",
                            label=f"{label}, ‖∂E/∂c_k‖")
        ax.set_title(panel)
        ax.set_xlabel("steps back from the end, T − k")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("gradient norm")
    fig.suptitle(title or "gradients on the copy problem")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
