"""Softmax cross-entropy: stable at extreme logits, gradient ŷ − y, ignore_index."""
import numpy as np
import pytest

from rnncore.losses import affine, affine_backward, log_softmax, softmax_cross_entropy


def test_extreme_logits_do_not_overflow(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    loss, dz = softmax_cross_entropy(z, np.array([1, 0, 0]))
    assert np.isfinite(loss) and np.isfinite(dz).all()
    # row 0: log p(1) = -2e4; row 1: uniform, log 3; row 2: two tied, log 2
    np.testing.assert_allclose(loss, (2e4 + np.log(3) + np.log(2)) / 3, rtol=1e-6)
    np.testing.assert_allclose(dz.sum(axis=1), 0, atol=1e-6)
    assert dz.dtype == dtype
    # ŷ − y exactly where the softmax saturates: row 0 puts all mass on class 0
    np.testing.assert_allclose(dz[0], np.array([1, -1, 0]) / 3, atol=1e-7)


def test_huge_logits_keep_a_finite_gradient(dtype):
    big = np.finfo(dtype).max / 4
    z = np.array([[big, -big], [-big, big]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise"):      # no overflow, no NaN
        loss, dz = softmax_cross_entropy(z, np.array([0, 0]))
    assert np.isfinite(dz).all()
    assert loss == pytest.approx(float(big), rel=1e-6)   # (0 + 2·big) / 2


def test_affine_is_one_product_over_all_steps_and_its_adjoint(rng):
    h = rng.standard_normal((4, 3, 5))
    V, c = rng.standard_normal((2, 5)), rng.standard_normal(2)
    z = affine(h, V, c)
    np.testing.assert_allclose(z[2, 1], V @ h[2, 1] + c, rtol=1e-12)
    dz = rng.standard_normal(z.shape)
    dh, dV, dc = affine_backward(h, V, dz)
    np.testing.assert_allclose(dh, np.einsum("tbo,oh->tbh", dz, V), rtol=1e-12)
    np.testing.assert_allclose(dV, np.einsum("tbo,tbh->oh", dz, h), rtol=1e-12)
    np.testing.assert_allclose(dc, dz.sum(axis=(0, 1)), rtol=1e-12)


def test_gradient_is_softmax_minus_onehot_over_count(rng):
    z = rng.standard_normal((5, 4))
    t = np.array([0, 3, 2, 1, 1])
    _, dz = softmax_cross_entropy(z, t)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p[np.arange(5), t] -= 1
    np.testing.assert_allclose(dz, p / 5, rtol=1e-12)


def test_ignored_rows_have_no_loss_and_no_gradient(rng):
    z = rng.standard_normal((4, 3))
    t = np.array([0, -100, 2, -100])
    loss, dz = softmax_cross_entropy(z, t)
    want, _ = softmax_cross_entropy(z[[0, 2]], t[[0, 2]])
    assert loss == pytest.approx(want)
    assert (dz[[1, 3]] == 0).all()


@pytest.mark.parametrize("target_dtype", [np.uint8, np.uint16, np.uint32, np.uint64,
                                          np.int8, np.int16, np.int32],
                         ids=lambda d: np.dtype(d).name)
def test_targets_of_any_integer_dtype_give_the_int64_result(rng, target_dtype):
    z = rng.standard_normal((4, 3))
    t = np.array([0, 2, 1, 2])
    want_loss, want = softmax_cross_entropy(z, t, ignore_index=1)
    loss, dz = softmax_cross_entropy(z, t.astype(target_dtype), ignore_index=1)
    assert loss == want_loss
    np.testing.assert_array_equal(dz, want)
    assert softmax_cross_entropy(z, t.astype(target_dtype))[0] == softmax_cross_entropy(z, t)[0]


def test_all_rows_ignored_gives_zero():
    loss, dz = softmax_cross_entropy(np.ones((2, 3)), np.array([-100, -100]))
    assert loss == 0.0 and (dz == 0).all()


def test_matches_torch_cross_entropy(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((6, 5)) * 30
    t = np.array([4, 0, -100, 2, 2, 1])
    zt = torch.tensor(z, requires_grad=True)
    want = torch.nn.functional.cross_entropy(zt, torch.tensor(t), ignore_index=-100)
    want.backward()
    loss, dz = softmax_cross_entropy(z, t)
    assert loss == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_log_softmax_of_an_inf_logit_follows_ieee():
    out = log_softmax(np.array([[np.inf, 0.0], [1.0, 2.0]]))
    assert np.isnan(out[0, 0]) and out[0, 1] == -np.inf
    np.testing.assert_allclose(np.exp(out[1]).sum(), 1)


def test_logits_are_not_modified(rng):
    z = rng.standard_normal((3, 4))
    z0 = z.copy()
    softmax_cross_entropy(z, np.array([0, 1, 2]))
    np.testing.assert_array_equal(z, z0)


@pytest.mark.parametrize("targets, error, message", [
    (np.array([0, 3]), ValueError, r"targets must lie in \[0, 3\)"),
    (np.array([0.0, 1.0]), TypeError, r"targets must be integers"),
    (np.array([0]), ValueError, r"targets must have shape \(2,\)"),
    (np.array([-1, 0]), ValueError, r"targets must lie in \[0, 3\) or equal ignore_index"),
])
def test_bad_targets(targets, error, message):
    with pytest.raises(error, match=message):
        softmax_cross_entropy(np.zeros((2, 3)), targets)
