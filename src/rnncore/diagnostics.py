"""Vanishing and exploding gradients, measured from one backward pass.

For one layer, h_t = f(a_t), a_t = W_ih x_t + W_hh h_{t−1} + b, the Jacobian

    ∂h_T/∂h_k = Π_{j=k+1..T} diag(f'(a_j)) W_hh,     ‖∂h_T/∂h_k‖ ≤ (γ ‖W_hh‖)^(T−k)

with γ bounding |f'| (1 for tanh and relu). Small recurrent weights make the product
shrink geometrically as k recedes (vanishing), large ones let it grow (exploding) while
the units stay out of saturation.
"""
from __future__ import annotations

import numpy as np

from . import functional

__all__ = ["gradient_flow", "recurrent_regimes", "plot_gradient_flow"]


def gradient_flow(params, x, h0=None, dE_dhT=None, *, nonlinearity: str = "tanh",
                  batch: int = 0, backend: str | None = None) -> dict[str, np.ndarray]:
    """Per-step gradient norms of a one-layer RNN for a loss at the last step.

    Parameters
    ----------
    params : mapping of str to ndarray
        ``weight_ih_l0``, ``weight_hh_l0`` (and biases) of a one-layer,
        unidirectional RNN.
    x : ndarray, shape (T, B, K)
    h0 : ndarray, shape (1, B, H), optional
    dE_dhT : ndarray, shape (H,), optional
        ∂E/∂h_T of the loss at the last step (default: all ones / √H).
    nonlinearity : {"tanh", "relu"}
    batch : int
        Which sequence of the batch to analyse.
    backend : str, optional

    Returns
    -------
    dict with
        ``dE_dh`` : ndarray, shape (T+1,)
            ‖∂E/∂h_k‖ for k = 0..T (index k; the last entry is ‖∂E/∂h_T‖).
        ``jacobian`` : ndarray, shape (T+1,)
            ‖∂h_T/∂h_k‖₂ (spectral norm) for k = 0..T (1 at k = T).
    """
    if "weight_hh_l1" in params or "weight_ih_l0_reverse" in params:
        raise ValueError("gradient_flow analyses a one-layer, unidirectional RNN")
    _, _, record = functional.forward(x, params, h0, nonlinearity=nonlinearity,
                                      backend=backend)
    hs = record.states[0][0][:, batch].astype(np.float64)          # (T+1, H): h_0..h_T
    w_hh = np.asarray(params["weight_hh_l0"], dtype=np.float64)
    T, H = hs.shape[0] - 1, hs.shape[1]
    fprime = (hs[1:] > 0).astype(np.float64) if nonlinearity == "relu" else 1 - hs[1:] ** 2
    g = (np.ones(H) / np.sqrt(H) if dE_dhT is None
         else np.asarray(dE_dhT, dtype=np.float64).reshape(H))
    J = np.eye(H)
    dE_dh, jac = np.empty(T + 1), np.empty(T + 1)
    dE_dh[T], jac[T] = np.linalg.norm(g), 1.0
    for k in range(T - 1, -1, -1):
        step = fprime[k][:, None] * w_hh          # ∂h_{k+1}/∂h_k = diag(f'(a_{k+1})) W_hh
        g = step.T @ g                            # ∂E/∂h_k
        J = J @ step                              # ∂h_T/∂h_k
        dE_dh[k], jac[k] = np.linalg.norm(g), np.linalg.norm(J, 2)
    return {"dE_dh": dE_dh, "jacobian": jac}


def recurrent_regimes(hidden_size: int = 32, steps: int = 40, radii=(0.5, 1.5),
                      seed: int = 0, dtype=np.float64) -> dict[float, dict[str, np.ndarray]]:
    """:func:`gradient_flow` for recurrent matrices of given spectral radius.

    W_hh is a random orthogonal matrix times the radius, inputs are small (the tanh
    units stay near their linear regime), so ‖∂h_T/∂h_k‖ ≈ radius^(T−k): decay below 1,
    growth above, as the theory predicts.

    Parameters
    ----------
    hidden_size, steps : int
    radii : sequence of float
    seed : int
    dtype : {np.float32, np.float64}

    Returns
    -------
    dict of float to dict
        For each radius, the result of :func:`gradient_flow`.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((hidden_size, hidden_size)))
    x = 1e-3 * rng.standard_normal((steps, 1, 4))
    out = {}
    for r in radii:
        params = {"weight_ih_l0": rng.standard_normal((hidden_size, 4)).astype(dtype),
                  "weight_hh_l0": (r * q).astype(dtype)}
        out[r] = gradient_flow(params, x.astype(dtype))
    return out


def plot_gradient_flow(flows, path, key: str = "jacobian") -> None:
    """Plot ‖∂h_T/∂h_k‖ (or ‖∂E/∂h_k‖) against T − k, one line per run, to a PNG.

    Parameters
    ----------
    flows : mapping of label to the dict :func:`gradient_flow` returns
    path : str or path-like
    key : {"jacobian", "dE_dh"}
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_gradient_flow needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, flow in flows.items():
        values = flow[key][::-1]                  # index by distance T − k
        ax.semilogy(np.arange(values.size), values, label=str(label))
    ax.set_xlabel("steps back, T − k")
    ax.set_ylabel("‖∂h_T/∂h_k‖₂" if key == "jacobian" else "‖∂E/∂h_k‖")
    ax.set_title("gradient flow through time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="recurrent weights")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
