"""RNNModel: loss and every gradient against torch and finite differences; training."""
import numpy as np
import pytest

import rnncore
from rnncore import RNNModel, gradient_check

from conftest import assert_close

T, B, V, H, O = 6, 3, 7, 5, 4


def make(task, bidirectional=False, tokens=True, backend=None, num_layers=1,
         dtype=np.float64, seed=0):
    kw = dict(vocab_size=V, embedding_dim=3) if tokens else dict(input_size=3)
    return RNNModel(O, H, num_layers=num_layers, bidirectional=bidirectional, task=task,
                    dtype=dtype, seed=seed, backend=backend, **kw)


def data(rng, task, tokens=True):
    x = rng.integers(0, V, (T, B)) if tokens else rng.standard_normal((T, B, 3))
    y = rng.integers(0, O, (T, B) if task == "labeling" else (B,))
    return x, y


def torch_loss_and_grads(model, x, y, lengths):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    D = 2 if model.rnn.bidirectional else 1
    rnn = torch.nn.RNN(model.rnn.input_size, H, model.rnn.num_layers,
                       bidirectional=model.rnn.bidirectional).double()
    rnn.load_state_dict({k: torch.tensor(model.params[k]) for k in model.rnn.params})
    lin = torch.nn.Linear(D * H, O).double()
    lin.weight.data = torch.tensor(model.params["V"])
    lin.bias.data = torch.tensor(model.params["c"])
    emb = None
    if model.vocab_size:
        emb = torch.nn.Embedding(V, 3).double()
        emb.weight.data = torch.tensor(model.params["embedding"])
        inp = emb(torch.tensor(x))
    else:
        inp = torch.tensor(x)
    packed = pack_padded_sequence(inp, torch.tensor(lengths), enforce_sorted=False)
    out, h_n = rnn(packed)
    out, _ = pad_packed_sequence(out, total_length=T)
    yt = torch.tensor(y)
    if model.task == "labeling":
        mask = torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]
        yt = torch.where(mask, yt, torch.full_like(yt, -100))
        loss = torch.nn.functional.cross_entropy(lin(out).reshape(-1, O), yt.reshape(-1),
                                                 ignore_index=-100)
    else:
        feat = out[torch.tensor(lengths) - 1, torch.arange(B)]
        if D == 2:
            feat = torch.cat([feat[:, :H], out[0, :, H:]], dim=1)
        loss = torch.nn.functional.cross_entropy(lin(feat), yt)
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in rnn.named_parameters()}
    grads["V"], grads["c"] = lin.weight.grad.numpy(), lin.bias.grad.numpy()
    if emb is not None:
        grads["embedding"] = emb.weight.grad.numpy()
    return loss.item(), grads


@pytest.mark.parametrize("task", ["labeling", "classification"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "dense"])
def test_loss_and_every_gradient_match_torch(backend, rng, task, bidirectional, tokens):
    model = make(task, bidirectional, tokens, backend, num_layers=2)
    x, y = data(rng, task, tokens)
    lengths = np.array([6, 2, 4])
    loss, grads, _ = model.loss_and_grads(x, y, lengths)
    want_loss, want = torch_loss_and_grads(model, x, y, lengths)
    assert loss == pytest.approx(want_loss, rel=1e-10)
    assert set(grads) == set(want) == set(model.params)
    for key in want:
        assert_close(grads[key], want[key], 1e-9, key)


@pytest.mark.parametrize("task", ["labeling", "classification"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_equal_finite_differences(backend, rng, task, bidirectional):
    model = make(task, bidirectional, backend=backend)
    x, y = data(rng, task)
    errors = gradient_check(model, x, y, np.array([6, 3, 5]), samples=8)
    assert max(errors.values()) < 1e-5, errors


def test_short_training_run_lowers_the_loss_by_half():
    rng = np.random.default_rng(0)
    pattern = np.array([0, 1, 2, 3, 4, 5, 6] * 6)          # next token is determined
    x = np.stack([np.roll(pattern, k)[:-1] for k in range(4)], axis=1)
    y = np.stack([np.roll(pattern, k)[1:] for k in range(4)], axis=1)
    model = RNNModel(V, 16, vocab_size=V, seed=1, dtype=np.float32)
    opt = rnncore.Adam(model.params, lr=0.02)
    first = model.loss(x, y)
    for _ in range(60):
        loss, grads, _ = model.loss_and_grads(x, y)
        opt.step(grads)
    assert model.loss(x, y) < 0.5 * first
    assert (model.predict(x) == y).mean() > 0.9


def test_predict_marks_padded_steps(rng):
    model = make("labeling")
    x, _ = data(rng, "labeling")
    pred = model.predict(x, lengths=[6, 2, 4])
    assert (pred[2:, 1] == -1).all() and (pred[:2, 1] >= 0).all()


def test_save_and_load_round_trip(tmp_path, rng):
    model = make("classification", bidirectional=True)
    x, y = data(rng, "classification")
    path = tmp_path / "m.npz"
    model.save(path)
    back = RNNModel.load(path)
    assert back.config() == model.config()
    np.testing.assert_array_equal(back.forward(x)[0], model.forward(x)[0])


def test_embedding_is_a_gather_not_a_matmul(rng):
    model = make("labeling")
    x, y = data(rng, "labeling")
    _, grads, _ = model.loss_and_grads(x, y)
    unused = sorted(set(range(V)) - set(np.unique(x)))
    for token in unused:
        assert (grads["embedding"][token] == 0).all()


def test_params_share_memory_with_the_recurrence():
    model = make("labeling")
    assert model.params["weight_hh_l0"] is model.rnn.params["weight_hh_l0"]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(output_size=0, hidden_size=4, vocab_size=3), ValueError, "output_size must be >= 1"),
    (dict(output_size=2, hidden_size=4), ValueError, "give exactly one of vocab_size"),
    (dict(output_size=2, hidden_size=4, vocab_size=3, input_size=2), ValueError, "exactly one"),
    (dict(output_size=2, hidden_size=4, vocab_size=3, task="tagging"), ValueError, "task must be"),
    (dict(output_size=2, hidden_size=-1, vocab_size=3), ValueError, "hidden_size must be >= 1"),
])
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        RNNModel(**kwargs)


def test_bad_inputs_and_targets(rng):
    model = make("labeling")
    x, y = data(rng, "labeling")
    with pytest.raises(ValueError, match=r"inputs must lie in \[0, 7\)"):
        model.loss_and_grads(x + 10, y)
    with pytest.raises(TypeError, match="inputs must be integer token ids"):
        model.loss_and_grads(x.astype(float), y)
    with pytest.raises(ValueError, match=r"targets must have shape \(6, 3\)"):
        model.loss_and_grads(x, y[:, :2])
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        model.loss_and_grads(x, y + 10)
