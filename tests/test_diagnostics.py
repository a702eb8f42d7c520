"""Vanishing and exploding gradients behave as the theory says."""
import numpy as np
import pytest

import rnncore
from rnncore import RNNModel, functional, gradient_norms, recurrent_regimes


def test_small_recurrent_weights_make_gradients_vanish_geometrically():
    jac = recurrent_regimes(hidden_size=16, steps=30, radii=(0.5,))[0.5]["jacobian"][::-1]
    # near-linear tanh units and an orthogonal W_hh: ‖∂h_T/∂h_k‖ = 0.5^(T−k)
    np.testing.assert_allclose(jac[1:21], 0.5 ** np.arange(1, 21), rtol=0.05)


def test_large_recurrent_weights_make_gradients_grow():
    result = recurrent_regimes(hidden_size=16, steps=30, radii=(1.5,))[1.5]
    jac = result["jacobian"][::-1]
    growth_per_step = np.exp(np.polyfit(np.arange(31), np.log(jac), 1)[0])
    assert growth_per_step > 1.1
    assert jac[30] > 100
    assert result["dE_dh"][0] > 100 * result["dE_dh"][-1]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_dE_dh_equals_rnncore_bptt_from_each_step(backend, nonlinearity):
    # oracle: ∂E/∂h_k = (direct term at step k) + dh0 of a BPTT over steps k+1.. from h_k
    rng = np.random.default_rng(0)
    model = RNNModel(3, 6, input_size=2, nonlinearity=nonlinearity, dtype=np.float64,
                     seed=0, backend=backend)
    x = rng.standard_normal((9, 2, 2))
    y = rng.integers(0, 3, (9, 2))
    lengths = np.array([9, 7])
    result = gradient_norms(model, x, y, lengths, sequence=1)
    assert result["dE_dh"].shape == (8,)
    _, _, _, dy, _, _, _ = model._loss_and_output_grad(x, y, lengths, None)
    rnn_params = {k: model.params[k] for k in model.rnn.params}
    seq = x[:7, 1:2]
    out, _, _ = functional.forward(seq, rnn_params, nonlinearity=nonlinearity)
    for k in (0, 3, 6):
        h_k = np.zeros((1, 1, 6)) if k == 0 else out[k - 1][None]
        _, _, rec = functional.forward(seq[k:], rnn_params, h_k, nonlinearity=nonlinearity,
                                       backend=backend)
        _, dh0, _ = functional.backward(rec, dy[k:7, 1:2], need_dx=False)
        direct = dy[k - 1, 1] if k else 0
        assert result["dE_dh"][k] == pytest.approx(np.linalg.norm(dh0[0, 0] + direct),
                                                   rel=1e-10)


def test_jacobian_norm_is_one_at_the_last_step_and_matches_finite_differences():
    rng = np.random.default_rng(1)
    model = RNNModel(2, 4, input_size=3, task="classification", dtype=np.float64, seed=2)
    x = rng.standard_normal((5, 1, 3))
    result = gradient_norms(model, x, np.array([0]))
    assert result["jacobian"][-1] == 1.0
    params = {k: model.params[k] for k in model.rnn.params}
    h0 = np.zeros((1, 1, 4))
    eps, J = 1e-6, np.empty((4, 4))
    for i in range(4):
        up, down = h0.copy(), h0.copy()
        up[0, 0, i] += eps
        down[0, 0, i] -= eps
        J[:, i] = (functional.forward(x, params, up)[1] -
                   functional.forward(x, params, down)[1])[0, 0] / (2 * eps)
    assert result["jacobian"][0] == pytest.approx(np.linalg.norm(J, 2), rel=1e-6)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "norms.png"
    rnncore.plot_gradient_norms(recurrent_regimes(steps=10), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sequence_out_of_range_is_refused():
    model = RNNModel(2, 4, input_size=3, dtype=np.float64)
    with pytest.raises(ValueError, match=r"sequence must be an integer in \[0, 2\)"):
        gradient_norms(model, np.zeros((3, 2, 3)), np.zeros((3, 2), int), sequence=2)


# ---------------------------------------------------------------- the gated cells
GATED = [("lstm", 0), ("lstm", 3), ("gru", 0)]
GATED_IDS = ["lstm", "lstm-proj", "gru"]


def gated_model(cell, proj_size, backend=None, **kwargs):
    return RNNModel(3, 6, input_size=2, cell=cell, proj_size=proj_size, dtype=np.float64,
                    seed=0, backend=backend, **kwargs)


def split_state(cell, state):
    """(h, c) of an LSTM's pair; (h, None) otherwise."""
    return state if cell == "lstm" else (state, None)


@pytest.mark.parametrize("cell, proj_size", GATED, ids=GATED_IDS)
def test_gated_dE_dh_and_dE_dc_equal_rnncore_bptt_from_each_step(backend, cell, proj_size):
    # oracle: ∂E/∂s_k = (direct term at step k) + ds0 of a BPTT over steps k+1.. from s_k
    rng = np.random.default_rng(0)
    model = gated_model(cell, proj_size, backend, num_layers=2)
    x = rng.standard_normal((9, 2, 2))
    y = rng.integers(0, 3, (9, 2))
    lengths = np.array([9, 7])
    result = gradient_norms(model, x, y, lengths, sequence=1)
    assert result["dE_dh"].shape == (8,)
    assert ("dE_dc" in result) == (cell == "lstm")
    _, _, _, dy, _, _, _ = model._loss_and_output_grad(x, y, lengths, None)
    top = {k[:-3] + "_l0": v for k, v in model.params.items() if k.endswith("_l1")}
    below = {k: v for k, v in model.params.items() if k.endswith("_l0")}
    seq = functional.forward(x[:7, 1:2], below, cell=cell)[0]     # the top layer's input
    for k in (0, 3, 6):
        s_k = None if k == 0 else functional.forward(seq[:k], top, cell=cell)[1]
        _, _, rec = functional.forward(seq[k:], top, s_k, cell=cell, backend=backend)
        _, ds0, _ = functional.backward(rec, dy[k:7, 1:2], need_dx=False)
        dh0, dc0 = split_state(cell, ds0)
        direct = dy[k - 1, 1] if k else 0
        assert result["dE_dh"][k] == pytest.approx(np.linalg.norm(dh0[0, 0] + direct),
                                                   rel=1e-10)
        if cell == "lstm":
            assert result["dE_dc"][k] == pytest.approx(np.linalg.norm(dc0[0, 0]), rel=1e-10)


@pytest.mark.parametrize("cell, proj_size", GATED, ids=GATED_IDS)
def test_gated_jacobian_of_the_whole_state_matches_finite_differences(cell, proj_size):
    # the state s is h, or (h, c) stacked for an LSTM
    rng = np.random.default_rng(1)
    model = gated_model(cell, proj_size, task="classification")
    x = rng.standard_normal((5, 1, 2))
    result = gradient_norms(model, x, np.array([0]))
    assert result["jacobian"][-1] == 1.0
    params = {k: model.params[k] for k in model.rnn.params}
    P = proj_size or 6
    widths = (P, 6) if cell == "lstm" else (6,)

    def final_state(s0):
        parts = np.split(s0, [P])
        state = tuple(p[None, None] for p in parts) if cell == "lstm" else parts[0][None, None]
        h_n = functional.forward(x, params, state, cell=cell)[1]
        return np.concatenate([a[0, 0] for a in (h_n if cell == "lstm" else (h_n,))])

    S, eps = sum(widths), 1e-6
    s0, J = rng.standard_normal(S) * 0.5, np.empty((S, S))
    result = gradient_norms(model, x, np.array([0]),
                            h0=tuple(p[None, None] for p in np.split(s0, [P]))
                            if cell == "lstm" else s0[None, None])
    for i in range(S):
        up, down = s0.copy(), s0.copy()
        up[i] += eps
        down[i] -= eps
        J[:, i] = (final_state(up) - final_state(down)) / (2 * eps)
    assert result["jacobian"][0] == pytest.approx(np.linalg.norm(J, 2), rel=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_regimes_refuses_the_gated_cells_whose_gates_set_the_regime(cell):
    with pytest.raises(ValueError, match=rf"in the {cell} cell the gates decide it .* "
                                         rf"cell must be 'rnn'; got '{cell}'"):
        recurrent_regimes(cell=cell)


def test_recurrent_regimes_names_an_unknown_cell():
    with pytest.raises(ValueError, match=r"cell must be one of \('rnn', 'lstm', 'gru'\)"):
        recurrent_regimes(cell="transformer")
