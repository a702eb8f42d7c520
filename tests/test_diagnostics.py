"""Vanishing and exploding gradients behave as the theory says."""
import numpy as np
import pytest

import rnncore
from rnncore import gradient_flow, recurrent_regimes


def test_small_recurrent_weights_make_gradients_vanish_geometrically():
    flows = recurrent_regimes(hidden_size=16, steps=30, radii=(0.5,))
    jac = flows[0.5]["jacobian"][::-1]                  # by distance T − k
    np.testing.assert_allclose(jac[1:21], 0.5 ** np.arange(1, 21), rtol=0.05)


def test_large_recurrent_weights_make_gradients_grow():
    jac = recurrent_regimes(hidden_size=16, steps=30, radii=(1.5,))[1.5]["jacobian"][::-1]
    growth_per_step = np.exp(np.polyfit(np.arange(31), np.log(jac), 1)[0])
    assert growth_per_step > 1.1
    assert jac[30] > 100


def test_dE_dh_follows_the_backward_recurrence(backend):
    # against rnncore's own BPTT: ∂E/∂h_0 is the dh0 of a backward with dh_n = ∂E/∂h_T
    rng = np.random.default_rng(0)
    rnn = rnncore.RNN(3, 6, dtype=np.float64, seed=0, backend=backend)
    x = rng.standard_normal((12, 1, 3))
    u = rng.standard_normal(6)
    flow = gradient_flow(rnn.params, x, dE_dhT=u, backend=backend)
    rnn(x)
    _, dh0 = rnn.backward(None, u.reshape(1, 1, 6))
    assert flow["dE_dh"][0] == pytest.approx(np.linalg.norm(dh0), rel=1e-12)
    assert flow["dE_dh"][-1] == pytest.approx(np.linalg.norm(u))


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "flow.png"
    rnncore.plot_gradient_flow({f"radius {k}": v for k, v in recurrent_regimes(steps=10).items()},
                               path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_flow_rejects_deep_networks():
    rnn = rnncore.RNN(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="one-layer, unidirectional"):
        gradient_flow(rnn.params, np.zeros((2, 1, 3), np.float32))
