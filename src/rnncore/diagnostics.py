"""Vanishing and exploding gradients, measured from one backward pass.

For one layer, h_t = f(a_t), a_t = W_ih x_t + W_hh h_{t−1} + b, the Jacobian

    ∂h_T/∂h_k = Π_{j=k+1..T} diag(f'(a_j)) W_hh,     ‖∂h_T/∂h_k‖ ≤ (γ ‖W_hh‖)^(T−k)

with γ bounding |f'| (1 for tanh and relu), and the gradient reaching each state

    ∂E/∂h_k = ∂E_k/∂h_k + W_hhᵀ (f'(a_{k+1}) ⊙ ∂E/∂h_{k+1})

(the local term from the output at step k, plus what flows back from later steps).
Small recurrent weights make the product shrink geometrically as k recedes
(vanishing), large ones let it grow (exploding) while the units stay out of saturation.

``plot_gradient_norms(recurrent_regimes(), "gradient_norms.png")`` draws both regimes.

The gated cells have other step Jacobians (SPEC.md's equations; ⊙ elementwise). An
LSTM's state is the pair (h, c), and its cell state has

    ∂c_t/∂c_{t−1} = diag(f_t)

— no W_hh and no f' in that path: the forget gate alone decides how much of the
gradient on c_t reaches c_{t−1}, and it can learn to stay near 1. A GRU's has

    ∂h_t/∂h_{t−1} = diag(z_t) + (terms through W_hh, scaled by (1 − z_t))

so an update gate near 1 carries h_{t−1} to h_t unchanged. :func:`gradient_norms`
takes the exact Jacobians of each cell (written out beside the functions below);
:mod:`rnncore.long_range` compares the three cells on a copy problem.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["gradient_norms", "recurrent_regimes", "plot_gradient_norms"]


def gradient_norms(model, inputs, targets, lengths=None, h0=None, *,
                   sequence: int = 0) -> dict[str, np.ndarray]:
    """Per-step gradient norms of an :class:`rnncore.RNNModel` for one batch.

    One forward and one backward pass through the model's loss; the recurrence analysed
    is the top layer's forward direction, for one sequence of the batch. The gradient
    reaching each state is propagated back through the exact step Jacobians
    ∂s_t/∂s_{t−1} of the model's cell (module docstring), in float64.

    Parameters
    ----------
    model : RNNModel
        Any cell: ``"rnn"``, ``"lstm"`` (with or without ``proj_size``) or ``"gru"``.
    inputs, targets, lengths, h0
        As for :meth:`RNNModel.loss_and_grads`.
    sequence : int
        Which sequence of the batch to analyse, in [0, B).

    Returns
    -------
    dict with, for n the sequence's length (T without ``lengths``):
        ``dE_dh`` : ndarray, shape (n+1,)
            ‖∂E/∂h_k‖ for k = 0..n (k = 0 is the initial state h_0). For an LSTM this
            is the hidden state h_k alone (the output, P wide with a projection), the
            partial derivative with the cell state c_k held fixed, as BPTT carries it.
        ``dE_dc`` : ndarray, shape (n+1,)
            LSTM only: ‖∂E/∂c_k‖, the cell state's, with h_k held fixed. The long path
            back through time runs here: ∂c_t/∂c_{t−1} = diag(f_t).
        ``jacobian`` : ndarray, shape (n+1,)
            ‖∂s_n/∂s_k‖₂ (spectral norm) for k = 0..n; 1 at k = n. The state s is h
            for the Elman RNN and the GRU, the pair (h, c) stacked for an LSTM.
        ``loss`` : float
            The model's loss on this batch.
    """
    if not hasattr(model, "_loss_and_output_grad"):
        raise TypeError(f"model must be an rnncore.RNNModel; got {type(model).__name__}")
    # every state of the record is read below: no checkpointing, whatever the model's
    loss, _, _, dy, _, record, _ = model._loss_and_output_grad(inputs, targets, lengths, h0,
                                                               checkpoint=0)
    T, B = dy.shape[:2]
    if isinstance(sequence, bool) or not isinstance(sequence, (int, np.integer)) \
            or not 0 <= sequence < B:
        raise ValueError(f"sequence must be an integer in [0, {B}) for a batch of {B}; "
                         f"got {sequence!r}")
    if model.rnn.bidirectional and model.rnn.merge_mode != "concat":
        raise ValueError(f"gradient_norms reads the forward direction's share of "
                         f"∂E/∂output, which a merged output does not keep apart; it "
                         f"needs merge_mode='concat' for a bidirectional model, got "
                         f"{model.rnn.merge_mode!r}")
    n = int(record.lengths[sequence])
    steps, S = _STEP_JACOBIANS[model.cell](model, record, sequence, n)
    P = dy.shape[2] // (2 if model.rnn.bidirectional else 1)    # h's width; S the state's
    local = np.zeros((n, S))                              # ∂E_t/∂s_t, t = 1..n
    local[:, :P] = dy[:n, sequence, :P]
    norms = np.empty((n + 1, 2 if S > P else 1))
    jac = np.empty(n + 1)
    g = local[n - 1] if n else np.zeros(S)
    J = np.eye(S)
    norms[n], jac[n] = _split_norms(g, P), 1.0
    for k in range(n - 1, -1, -1):
        step = steps[k]                           # ∂s_{k+1}/∂s_k
        g = step.T @ g + (local[k - 1] if k else 0)   # ∂E/∂s_k
        J = J @ step                              # ∂s_n/∂s_k
        norms[k], jac[k] = _split_norms(g, P), np.linalg.norm(J, 2)
    out = {"dE_dh": norms[:, 0]}
    if S > P:
        out["dE_dc"] = norms[:, 1]
    out.update(jacobian=jac, loss=float(loss))
    return out


def _split_norms(g, P):
    """(‖g[:P]‖,) for h, and ‖g[P:]‖ for c when the state is wider than h."""
    return (np.linalg.norm(g[:P]), np.linalg.norm(g[P:])) if g.size > P \
        else (np.linalg.norm(g),)


def _top_weights(record):
    """The weights forward ran in the top layer's forward direction, in float64: the
    tuple the cell's backend functions take (W_ih, W_hh, ... as :mod:`rnncore._cells`)."""
    return [None if w is None else np.asarray(w, dtype=np.float64)
            for w in record.weights[-1][0]]


def _elman_steps(model, record, b, n):
    """∂h_t/∂h_{t−1} = diag(f'(a_t)) W_hh for t = 1..n: (n, H, H), and H."""
    hs = record.states[-1][0][:n + 1, b].astype(np.float64)
    w_hh = _top_weights(record)[1]
    fprime = (hs[1:] > 0).astype(np.float64) if model.rnn.nonlinearity == "relu" \
        else 1 - hs[1:] ** 2                                          # f'(a_t)
    return fprime[:, :, None] * w_hh, w_hh.shape[0]


def _lstm_steps(model, record, b, n):
    """∂(h_t, c_t)/∂(h_{t−1}, c_{t−1}) for t = 1..n: (n, P+H, P+H), and P+H.

    With i, f, g, o the gates of step t, W_· their rows of W_hh (H, P) and τ = tanh(c_t):
    ∂c_t/∂h_{t−1} = diag(c_{t−1} f(1−f)) W_f + diag(g i(1−i)) W_i + diag(i(1−g²)) W_g,
    ∂c_t/∂c_{t−1} = diag(f), and m_t = o ⊙ τ, h_t = W_hr m_t (or m_t):
    ∂m_t/∂h_{t−1} = diag(τ o(1−o)) W_o + diag(o(1−τ²)) ∂c_t/∂h_{t−1},
    ∂m_t/∂c_{t−1} = diag(o(1−τ²) f).
    """
    cs, gates = (a[:, b].astype(np.float64) for a in record.saved[-1][0])
    _, w_hh, _, w_hr = _top_weights(record)
    H, P = cs.shape[1], w_hh.shape[1]
    w_i, w_f, w_g, w_o = np.split(w_hh, 4)
    steps = np.empty((n, P + H, P + H))
    for t in range(n):
        i, f, g, o = np.split(gates[t], 4)
        c_prev, tau = cs[t], np.tanh(cs[t + 1])
        dc_dh = ((c_prev * f * (1 - f))[:, None] * w_f + (g * i * (1 - i))[:, None] * w_i
                 + (i * (1 - g * g))[:, None] * w_g)
        dm_dh = (tau * o * (1 - o))[:, None] * w_o + (o * (1 - tau * tau))[:, None] * dc_dh
        dm_dc = np.diag(o * (1 - tau * tau) * f)
        if w_hr is not None:
            dm_dh, dm_dc = w_hr @ dm_dh, w_hr @ dm_dc      # (P, ·) = (P, H)(H, ·)
        steps[t, :P, :P], steps[t, :P, P:] = dm_dh, dm_dc
        steps[t, P:, :P], steps[t, P:, P:] = dc_dh, np.diag(f)
    return steps, P + H


def _gru_steps(model, record, b, n):
    """∂h_t/∂h_{t−1} for t = 1..n: (n, H, H), and H.

    With r, z, n the gates of step t, gh_n = W_n h_{t−1} + b_hn and W_r, W_z, W_n the
    rows of W_hh (H, H): diag(z) + diag((h_{t−1} − n) z(1−z)) W_z
    + diag((1−z)(1−n²)) (diag(r) W_n + diag(gh_n r(1−r)) W_r).
    """
    hs = record.states[-1][0][:n + 1, b].astype(np.float64)
    saved = record.saved[-1][0][0][:n, b].astype(np.float64)
    w_r, w_z, w_n = np.split(_top_weights(record)[1], 3)
    r, z, new, gh_n = np.split(saved, 4, axis=1)          # each (n, H)
    col = (lambda v: v[:, :, None])
    steps = (col((hs[:n] - new) * z * (1 - z)) * w_z
             + col((1 - z) * (1 - new * new)) * (col(r) * w_n + col(gh_n * r * (1 - r)) * w_r))
    H = w_r.shape[0]
    steps[:, np.arange(H), np.arange(H)] += z
    return steps, H


_STEP_JACOBIANS = {"rnn": _elman_steps, "lstm": _lstm_steps, "gru": _gru_steps}


def recurrent_regimes(hidden_size: int = 32, steps: int = 40, radii=(0.5, 1.5),
                      seed: int = 0, input_scale: float = 1e-3,
                      nonlinearity: str = "tanh",
                      cell: str = "rnn") -> dict[float, dict[str, np.ndarray]]:
    """:func:`gradient_norms` of a sequence classifier whose W_hh has a given radius.

    The model (``task="classification"``, so the loss sits at the last step) gets
    W_hh = radius · Q with Q a random orthogonal matrix, and small inputs, so that the
    tanh units stay near their linear regime: ‖∂h_T/∂h_k‖ ≈ radius^(T−k), decay below 1
    and growth above, as the theory predicts.

    Only the Elman RNN has these regimes. In an LSTM or a GRU the radius of W_hh does
    not decide whether gradients vanish or explode: the gates do. The LSTM's cell state
    goes back through ∂c_t/∂c_{t−1} = diag(f_t), which W_hh does not enter and which
    never exceeds 1, and a GRU's state through diag(z_t) plus W_hh's terms scaled by
    (1 − z_t) and by the gates' slopes (at most 1/4). Near the linear regime the gates
    sit at σ(b) ≈ 1/2 whatever the radius, so a sweep of radii would show the gates'
    decay, not W_hh's; for ``cell="lstm"`` or ``"gru"`` this function raises a
    ValueError. Measure a gated model with :func:`gradient_norms`, or compare the cells
    on a long-range task with :func:`rnncore.long_range.compare_cells`.

    Parameters
    ----------
    hidden_size, steps : int
        H and T.
    radii : sequence of float
        Spectral radii of W_hh to compare.
    seed : int
    input_scale : float
        Standard deviation of the inputs.
    nonlinearity : {"tanh", "relu"}
    cell : {"rnn"}
        The Elman RNN, the one cell whose regimes the radius of W_hh sets.

    Returns
    -------
    dict of float to dict
        For each radius, the result of :func:`gradient_norms`.

    Raises
    ------
    ValueError
        For ``cell="lstm"`` or ``"gru"`` (see above), or a cell rnncore does not have.
    """
    from ._params import check_cell
    from .model import RNNModel

    if check_cell(cell) != "rnn":
        raise ValueError(f"recurrent_regimes sets the spectral radius of W_hh, which "
                         f"decides whether gradients vanish or explode in the Elman RNN "
                         f"only; in the {cell} cell the gates decide it (the LSTM's "
                         f"∂c_t/∂c_{{t-1}} = diag(f_t), the GRU's ∂h_t/∂h_{{t-1}} ⊇ "
                         f"diag(z_t)), so cell must be 'rnn'; got {cell!r}. Use "
                         f"gradient_norms on a gated model, or "
                         f"rnncore.long_range.compare_cells")

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((hidden_size, hidden_size)))
    x = input_scale * rng.standard_normal((steps, 1, 4))
    out = {}
    for r in radii:
        model = RNNModel(2, hidden_size, input_size=4, task="classification",
                         nonlinearity=nonlinearity, bias=False, dtype=np.float64,
                         seed=seed)
        model.params["weight_hh_l0"][...] = r * q
        out[r] = gradient_norms(model, x, np.array([1]))
    return out


def plot_gradient_norms(norms: Mapping, path, *, title: str | None = None):
    """Plot ‖∂E/∂h_k‖ and ‖∂h_T/∂h_k‖₂ against the distance T − k, to a PNG.

    Parameters
    ----------
    norms : mapping of label to the dict :func:`gradient_norms` returns
        One line per entry in each panel, e.g. ``recurrent_regimes()`` (labels are
        the radii) or ``{"epoch 1": ..., "epoch 10": ...}``. A single such dict works
        too.
    path : str or path-like
        Where the PNG is written.
    title : str, optional

    Returns
    -------
    path
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_gradient_norms needs matplotlib: "
                          "pip install matplotlib") from None
    if "jacobian" in norms:
        norms = {"": norms}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, result in norms.items():
        name = f"W_hh radius {label}" if isinstance(label, (int, float)) else str(label)
        for ax, key in zip(axes, ("dE_dh", "jacobian")):
            values = np.asarray(result[key])[::-1]         # index by distance T − k
            ax.semilogy(np.arange(values.size), values, label=name)
    axes[0].set_ylabel("‖∂E/∂h_k‖")
    axes[1].set_ylabel("‖∂h_T/∂h_k‖₂")
    for ax in axes:
        ax.set_xlabel("steps back from the end, T − k")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title or "gradient norms through time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
