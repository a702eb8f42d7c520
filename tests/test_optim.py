"""Optimisers against torch.optim; clipping against torch.nn.utils; truncated BPTT."""
import numpy as np
import pytest

import rnncore
from rnncore import SGD, Adagrad, Adam, clip_grad_norm, clip_grad_value

torch = pytest.importorskip("torch")

OPTIMISERS = [
    (SGD, torch.optim.SGD, dict(lr=0.1)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.5, dampening=0.3)),
    (Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    (Adam, torch.optim.Adam, dict(lr=0.01)),
    (Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, eps=1e-6)),
]


@pytest.mark.parametrize("ours, theirs, kwargs", OPTIMISERS)
def test_steps_match_torch_optim(ours, theirs, kwargs):
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = ours(params, **kwargs)
    topt = theirs(list(tparams.values()), **kwargs)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(grads)
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k])
        topt.step()
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((3, 4)) * 10, "b": rng.standard_normal(5)}
    tp = [torch.zeros(3, 4, dtype=torch.float64, requires_grad=True),
          torch.zeros(5, dtype=torch.float64, requires_grad=True)]
    for p, g in zip(tp, grads.values()):
        p.grad = torch.tensor(g.copy())
    want = torch.nn.utils.clip_grad_norm_(tp, 2.0)
    total = clip_grad_norm(grads, 2.0)
    assert total == pytest.approx(want.item(), rel=1e-12)
    for p, g in zip(tp, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"], [0.3, 0.4])


def test_clip_grad_value_matches_torch():
    g = np.array([-3.0, -0.5, 0.2, 7.0])
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_([p], 1.0)
    grads = {"a": g}
    clip_grad_value(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], p.grad.numpy())


def test_truncated_bptt_carries_the_state_between_chunks():
    rng = np.random.default_rng(2)
    model = rnncore.RNNModel(4, 6, vocab_size=5, dtype=np.float64, seed=0)
    x = rng.integers(0, 5, (12, 2))
    y = rng.integers(0, 4, (12, 2))
    losses = [loss for loss, _ in rnncore.truncated_bptt(model, x, y, chunk=4)]
    assert len(losses) == 3
    # the chunks' losses are those of the full forward pass, split in three
    logits, _ = model.forward(x)
    from rnncore.losses import softmax_cross_entropy
    for i, loss in enumerate(losses):
        want, _ = softmax_cross_entropy(logits[4 * i:4 * i + 4].reshape(-1, 4),
                                        y[4 * i:4 * i + 4].reshape(-1))
        assert loss == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("make, message", [
    (lambda p: SGD(p, lr=-1), "lr must be >= 0"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov needs momentum"),
    (lambda p: Adam(p, betas=(1.0, 0.9)), r"betas\[0\] must lie in \[0, 1\)"),
    (lambda p: Adam([1, 2]), "params must be a mapping"),
])
def test_bad_optimiser_arguments(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make({"a": np.zeros(2)})


def test_step_with_wrong_gradient_shape():
    opt = SGD({"a": np.zeros(2)}, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['a'\] must have shape \(2,\); got \(3,\)"):
        opt.step({"a": np.zeros(3)})
