"""Optimisers against torch.optim; clipping against torch.nn.utils; truncated BPTT."""
import numpy as np
import pytest

import rnncore
from rnncore import SGD, Adagrad, Adam, clip_grad_norm, clip_grad_value
from rnncore.losses import softmax_cross_entropy

OPTIMISERS = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.5, dampening=0.3)),
    (Adagrad, "Adagrad", dict(lr=0.1)),
    (Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1,
                              weight_decay=0.05)),
    (Adam, "Adam", dict(lr=0.01)),
    (Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, eps=1e-6)),
]
STEP_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.mark.parametrize("ours, theirs, kwargs", OPTIMISERS,
                         ids=[f"{name}-{i}" for i, (_, name, _) in enumerate(OPTIMISERS)])
def test_steps_match_torch_optim(dtype, ours, theirs, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)).astype(dtype),
              "b": rng.standard_normal(5).astype(dtype)}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = ours(params, **kwargs)
    topt = getattr(torch.optim, theirs)(list(tparams.values()), **kwargs)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        opt.step(grads)
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k])
        topt.step()
    for k in params:
        assert params[k].dtype == dtype
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(),
                                   rtol=STEP_RTOL[dtype], atol=STEP_RTOL[dtype])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((3, 4)) * 10, "b": rng.standard_normal(5)}
    tp = [torch.zeros(3, 4, dtype=torch.float64, requires_grad=True),
          torch.zeros(5, dtype=torch.float64, requires_grad=True)]
    for p, g in zip(tp, grads.values(), strict=True):
        p.grad = torch.tensor(g.copy())
    want = torch.nn.utils.clip_grad_norm_(tp, 2.0, norm_type=norm_type)
    total = clip_grad_norm(grads, 2.0, norm_type=norm_type)
    assert total == pytest.approx(want.item(), rel=1e-12)
    for p, g in zip(tp, grads.values(), strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_keeps_the_direction_and_reaches_max_norm():
    rng = np.random.default_rng(3)
    grads = {"a": rng.standard_normal(10) * 5, "b": rng.standard_normal((2, 3)) * 5}
    before = np.concatenate([g.ravel() for g in grads.values()])
    total = clip_grad_norm(grads, 1.0)
    after = np.concatenate([g.ravel() for g in grads.values()])
    assert total == pytest.approx(np.linalg.norm(before))
    assert np.linalg.norm(after) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(after / np.linalg.norm(after), before / total, rtol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"], [0.3, 0.4])


def test_clip_grad_norm_with_infinite_max_norm_returns_the_norm_and_clips_nothing():
    torch = pytest.importorskip("torch")
    grads = {"a": np.array([[30.0, -40.0]]), "b": np.array([120.0])}
    tp = [torch.zeros(1, 2, dtype=torch.float64, requires_grad=True),
          torch.zeros(1, dtype=torch.float64, requires_grad=True)]
    for p, g in zip(tp, grads.values(), strict=True):
        p.grad = torch.tensor(g.copy())
    want = torch.nn.utils.clip_grad_norm_(tp, float("inf"))
    assert clip_grad_norm(grads, float("inf")) == want.item() == 130.0
    for p, g in zip(tp, grads.values(), strict=True):
        np.testing.assert_array_equal(g, p.grad.numpy())


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    g = np.array([-3.0, -0.5, 0.2, 7.0])
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_([p], 1.0)
    grads = {"a": g}
    clip_grad_value(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], p.grad.numpy())


def test_clipping_rejects_read_only_gradients():
    g = np.ones(3)
    g.setflags(write=False)
    with pytest.raises(ValueError, match=r"grads\['a'\] is read-only"):
        clip_grad_norm({"a": g}, 1.0)


def test_truncated_bptt_losses_are_the_full_sequence_split_in_chunks(backend):
    rng = np.random.default_rng(2)
    model = rnncore.RNNModel(4, 6, vocab_size=5, dtype=np.float64, seed=0, backend=backend)
    x = rng.integers(0, 5, (12, 2))
    y = rng.integers(0, 4, (12, 2))
    losses = [loss for loss, _ in rnncore.truncated_bptt(model, x, y, chunk=5)]
    assert len(losses) == 3                               # 5 + 5 + 2 steps
    logits, _ = model.forward(x)
    for i, loss in enumerate(losses):
        want, _ = softmax_cross_entropy(logits[5 * i:5 * i + 5].reshape(-1, 4),
                                        y[5 * i:5 * i + 5].reshape(-1))
        assert loss == pytest.approx(want, rel=1e-10)


def test_truncated_bptt_stops_gradients_at_the_chunk_boundary():
    rng = np.random.default_rng(4)
    model = rnncore.RNNModel(4, 6, vocab_size=5, dtype=np.float64, seed=0)
    x = rng.integers(0, 5, (8, 2))
    y = rng.integers(0, 4, (8, 2))
    norms = [norm for _, norm in rnncore.truncated_bptt(model, x, y, chunk=4)]
    # the second chunk's gradient is that of a fresh run from a constant state
    _, h = model.forward(x[:4])
    _, grads = model.loss_and_grads(x[4:], y[4:], h0=h)
    want = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
    assert norms[1] == pytest.approx(want, rel=1e-12)


def test_truncated_bptt_with_an_optimiser_lowers_the_loss():
    text = np.array([0, 1, 2, 3, 4] * 40)
    x, y = text[:-1].reshape(-1, 1), text[1:].reshape(-1, 1)
    model = rnncore.RNNModel(5, 12, vocab_size=5, seed=0)
    opt = Adam(model.params, lr=0.05)
    losses = [loss for _ in range(3)
              for loss, _ in rnncore.truncated_bptt(model, x, y, 20, opt, clip_norm=5.0)]
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(chunk=0), ValueError, r"chunk must be a positive integer; got 0"),
    (dict(chunk=2.5), ValueError, r"chunk must be a positive integer; got 2\.5"),
    (dict(clip_norm=-1.0), ValueError, r"clip_norm must be >= 0 \(inf for no clipping\); "
                                       r"got -1\.0"),
    (dict(clip_norm="5"), TypeError, r"clip_norm must be a number; got str"),
    (dict(targets=np.zeros((3, 2), int)), ValueError,
     r"targets must have 6 steps like inputs; got shape \(3, 2\)"),
])
def test_truncated_bptt_checks_its_arguments_at_the_call(kwargs, error, message):
    model = rnncore.RNNModel(4, 6, vocab_size=5, seed=0)
    args = {"inputs": np.zeros((6, 2), int), "targets": np.zeros((6, 2), int), "chunk": 2,
            **kwargs}
    with pytest.raises(error, match=message):
        rnncore.truncated_bptt(model, **args)                # no next() needed


def test_truncated_bptt_with_an_infinite_clip_norm_clips_nothing():
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 5, (8, 2)), rng.integers(0, 4, (8, 2))
    model = rnncore.RNNModel(4, 6, vocab_size=5, dtype=np.float64, seed=0)
    plain = list(rnncore.truncated_bptt(model, x, y, chunk=4))
    unclipped = list(rnncore.truncated_bptt(model, x, y, chunk=4, clip_norm=float("inf")))
    assert unclipped == plain


def test_bad_grads_leave_the_parameters_untouched():
    params = {"a": np.zeros(2), "b": np.zeros(3)}
    opt = SGD(params, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['b'\] must have shape \(3,\); got \(2,\)"):
        opt.step({"a": np.ones(2), "b": np.ones(2)})
    assert (params["a"] == 0).all()


@pytest.mark.parametrize("make, error, message", [
    (lambda p: SGD(p, lr=-1), ValueError, "lr must be >= 0"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), ValueError, "nesterov needs momentum"),
    (lambda p: Adam(p, betas=(1.0, 0.9)), ValueError, r"betas\[0\] must lie in \[0, 1\)"),
    (lambda p: Adam([1, 2]), TypeError, "params must be a mapping"),
    (lambda p: Adam({"a": np.zeros(2, int)}), TypeError, r"params\['a'\] must be a float"),
    (lambda p: Adagrad(p, eps="x"), TypeError, "eps must be a number"),
    (lambda p: clip_grad_norm(p, -1.0), ValueError, "max_norm must be >= 0"),
    (lambda p: clip_grad_value(p, float("nan")), ValueError, "clip_value must be >= 0"),
    (lambda p: list(rnncore.truncated_bptt(None, np.zeros((4, 1), int),
                                           np.zeros((4, 1), int), chunk=0)),
     ValueError, "chunk must be a positive integer; got 0"),
])
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make({"a": np.zeros(2)})
