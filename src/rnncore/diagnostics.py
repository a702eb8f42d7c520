"""Vanishing and exploding gradients, measured from one backward pass.

For one layer, h_t = f(a_t), a_t = W_ih x_t + W_hh h_{t−1} + b, the Jacobian

    ∂h_T/∂h_k = Π_{j=k+1..T} diag(f'(a_j)) W_hh,     ‖∂h_T/∂h_k‖ ≤ (γ ‖W_hh‖)^(T−k)

with γ bounding |f'| (1 for tanh and relu), and the gradient reaching each state

    ∂E/∂h_k = ∂E_k/∂h_k + W_hhᵀ (f'(a_{k+1}) ⊙ ∂E/∂h_{k+1})

(the local term from the output at step k, plus what flows back from later steps).
Small recurrent weights make the product shrink geometrically as k recedes
(vanishing), large ones let it grow (exploding) while the units stay out of saturation.

``plot_gradient_norms(recurrent_regimes(), "gradient_norms.png")`` draws both regimes.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["gradient_norms", "recurrent_regimes", "plot_gradient_norms"]


def gradient_norms(model, inputs, targets, lengths=None, h0=None, *,
                   sequence: int = 0) -> dict[str, np.ndarray]:
    """Per-step gradient norms of an :class:`rnncore.RNNModel` for one batch.

    One forward and one backward pass through the model's loss; the recurrence analysed
    is the top layer's forward direction, for one sequence of the batch.

    Parameters
    ----------
    model : RNNModel
    inputs, targets, lengths, h0
        As for :meth:`RNNModel.loss_and_grads`.
    sequence : int
        Which sequence of the batch to analyse, in [0, B).

    Returns
    -------
    dict with, for n the sequence's length (T without ``lengths``):
        ``dE_dh`` : ndarray, shape (n+1,)
            ‖∂E/∂h_k‖ for k = 0..n (k = 0 is the initial state h_0).
        ``jacobian`` : ndarray, shape (n+1,)
            ‖∂h_n/∂h_k‖₂ (spectral norm) for k = 0..n; 1 at k = n.
        ``loss`` : float
            The model's loss on this batch.
    """
    if not hasattr(model, "_loss_and_output_grad"):
        raise TypeError(f"model must be an rnncore.RNNModel; got {type(model).__name__}")
    loss, _, _, dy, _, record, _ = model._loss_and_output_grad(inputs, targets, lengths, h0)
    T, B = dy.shape[:2]
    if isinstance(sequence, bool) or not isinstance(sequence, (int, np.integer)) \
            or not 0 <= sequence < B:
        raise ValueError(f"sequence must be an integer in [0, {B}) for a batch of {B}; "
                         f"got {sequence!r}")
    L, H = model.rnn.num_layers, model.hidden_size
    n = int(record.lengths[sequence])
    hs = record.states[L - 1][0][:n + 1, sequence].astype(np.float64)  # h_0..h_n (n+1, H)
    g_out = dy[:n, sequence, :H].astype(np.float64)                     # ∂E_t/∂h_t, t=1..n
    w_hh = model.params[f"weight_hh_l{L - 1}"].astype(np.float64)
    if model.rnn.nonlinearity == "relu":
        fprime = (hs[1:] > 0).astype(np.float64)                        # f'(a_t), t=1..n
    else:
        fprime = 1 - hs[1:] ** 2
    dE_dh, jac = np.empty(n + 1), np.empty(n + 1)
    g = g_out[n - 1] if n else np.zeros(H)
    J = np.eye(H)
    dE_dh[n], jac[n] = np.linalg.norm(g), 1.0
    for k in range(n - 1, -1, -1):
        step = fprime[k][:, None] * w_hh          # ∂h_{k+1}/∂h_k = diag(f'(a_{k+1})) W_hh
        g = step.T @ g + (g_out[k - 1] if k else 0)   # ∂E/∂h_k
        J = J @ step                              # ∂h_n/∂h_k
        dE_dh[k], jac[k] = np.linalg.norm(g), np.linalg.norm(J, 2)
    return {"dE_dh": dE_dh, "jacobian": jac, "loss": float(loss)}


def recurrent_regimes(hidden_size: int = 32, steps: int = 40, radii=(0.5, 1.5),
                      seed: int = 0, input_scale: float = 1e-3,
                      nonlinearity: str = "tanh") -> dict[float, dict[str, np.ndarray]]:
    """:func:`gradient_norms` of a sequence classifier whose W_hh has a given radius.

    The model (``task="classification"``, so the loss sits at the last step) gets
    W_hh = radius · Q with Q a random orthogonal matrix, and small inputs, so that the
    tanh units stay near their linear regime: ‖∂h_T/∂h_k‖ ≈ radius^(T−k), decay below 1
    and growth above, as the theory predicts.

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

    Returns
    -------
    dict of float to dict
        For each radius, the result of :func:`gradient_norms`.
    """
    from .model import RNNModel

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
