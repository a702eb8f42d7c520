"""RNNModel: loss and every gradient against torch and finite differences; training."""
import numpy as np
import pytest

import rnncore
from rnncore import RNNModel, gradient_check

from conftest import RTOL, assert_close

T, B, V, E, K, H, O = 6, 3, 7, 3, 3, 5, 4
LENGTHS = np.array([6, 2, 4])


def make(task, bidirectional=False, tokens=True, backend=None, num_layers=1,
         dtype=np.float64, seed=0, **kwargs):
    kw = dict(vocab_size=V, embedding_dim=E) if tokens else dict(input_size=K)
    return RNNModel(O, H, num_layers=num_layers, bidirectional=bidirectional, task=task,
                    dtype=dtype, seed=seed, backend=backend, **kw, **kwargs)


def data(rng, task, tokens=True, dtype=np.float64):
    x = rng.integers(0, V, (T, B)) if tokens else rng.standard_normal((T, B, K)).astype(dtype)
    y = rng.integers(0, O, (T, B) if task == "labeling" else (B,))
    return x, y


def torch_loss_and_grads(model, x, y, lengths):
    """The same model in torch: nn.Embedding, nn.RNN over a packed batch, nn.Linear,
    F.cross_entropy; targets at padded steps are ignored."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    tdtype = torch.float64 if model.dtype == np.float64 else torch.float32
    D = 2 if model.rnn.bidirectional else 1
    rnn = torch.nn.RNN(model.rnn.input_size, H, model.rnn.num_layers,
                       nonlinearity=model.rnn.nonlinearity, bias=model.rnn.bias,
                       bidirectional=model.rnn.bidirectional).to(tdtype)
    rnn.load_state_dict({k: torch.tensor(model.params[k]) for k in model.rnn.params})
    lin = torch.nn.Linear(D * H, O).to(tdtype)
    lin.load_state_dict({"weight": torch.tensor(model.params["V"]),
                         "bias": torch.tensor(model.params["c"])})
    emb = None
    if model.vocab_size:
        emb = torch.nn.Embedding(V, E).to(tdtype)
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
        # the top layer's last forward state and first reverse state, as torch users do
        feat = torch.cat([h_n[-2], h_n[-1]], dim=1) if D == 2 else h_n[-1]
        loss = torch.nn.functional.cross_entropy(lin(feat), yt)
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in rnn.named_parameters()}
    grads["V"], grads["c"] = lin.weight.grad.numpy(), lin.bias.grad.numpy()
    if emb is not None:
        grads["embedding"] = emb.weight.grad.numpy()
    return loss.item(), grads


def assert_matches_torch(model, x, y, lengths):
    loss, grads = model.loss_and_grads(x, y, lengths)
    want_loss, want = torch_loss_and_grads(model, x, y, lengths)
    rtol = RTOL[model.dtype]                     # SPEC.md's, norm-wise
    assert loss == pytest.approx(want_loss, rel=rtol)
    assert set(grads) == set(want) == set(model.params)
    for key in want:
        assert_close(grads[key], want[key], rtol, key)


@pytest.mark.parametrize("task", ["labeling", "classification"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "dense"])
def test_loss_and_every_gradient_match_torch(backend, dtype, rng, task, bidirectional,
                                             tokens):
    model = make(task, bidirectional, tokens, backend, num_layers=2, dtype=dtype)
    x, y = data(rng, task, tokens, dtype)
    assert_matches_torch(model, x, y, LENGTHS)


@pytest.mark.parametrize("task", ["labeling", "classification"])
def test_relu_without_bias_matches_torch(backend, rng, task):
    model = make(task, tokens=False, backend=backend, nonlinearity="relu", bias=False)
    x, y = data(rng, task, tokens=False)
    assert_matches_torch(model, x, y, LENGTHS)


@pytest.mark.parametrize("task", ["labeling", "classification"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_equal_finite_differences(backend, rng, task, bidirectional):
    model = make(task, bidirectional, backend=backend)
    x, y = data(rng, task)
    errors = gradient_check(model, x, y, np.array([6, 3, 5]), samples=8)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < 1e-5, errors


def test_gradient_check_flags_a_wrong_gradient(rng):
    class Broken:
        def __init__(self, model):
            self.model, self.params = model, model.params

        def loss_and_grads(self, *args):
            loss, grads = self.model.loss_and_grads(*args)
            grads["V"] = grads["V"] * 1.01            # 1 % off
            return loss, grads

    model = make("labeling")
    x, y = data(rng, "labeling")
    errors = gradient_check(Broken(model), x, y)
    assert errors["V"] > 5e-3 and errors["weight_hh_l0"] < 1e-5


def test_short_training_run_lowers_the_loss_by_half(backend):
    pattern = np.array([0, 1, 2, 3, 4, 5, 6] * 6)          # next token is determined
    x = np.stack([np.roll(pattern, k)[:-1] for k in range(4)], axis=1)
    y = np.stack([np.roll(pattern, k)[1:] for k in range(4)], axis=1)
    model = RNNModel(V, 16, vocab_size=V, seed=1, dtype=np.float32, backend=backend)
    opt = rnncore.Adam(model.params, lr=0.02)
    first = model.loss(x, y)                                # ≈ log 7 = 1.95
    for _ in range(60):
        loss, grads = model.loss_and_grads(x, y)
        opt.step(grads)
    assert model.loss(x, y) < 0.5 * first
    assert (model.predict(x) == y).mean() > 0.9


def test_batch_first_is_the_transposed_time_major_model(rng):
    x, y = data(rng, "labeling")
    tm = make("labeling", bidirectional=True)
    bf = make("labeling", bidirectional=True, batch_first=True)
    loss, grads = tm.loss_and_grads(x, y, LENGTHS)
    loss_bf, grads_bf = bf.loss_and_grads(x.T, y.T, LENGTHS)
    assert loss_bf == pytest.approx(loss, rel=1e-12)
    for key in grads:
        np.testing.assert_allclose(grads_bf[key], grads[key], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(bf.predict(x.T, LENGTHS), tm.predict(x, LENGTHS).T)


def test_padded_targets_never_count(rng):
    model = make("labeling")
    x, y = data(rng, "labeling")
    garbage = y.copy()
    garbage[2:, 1] = 99                                     # past lengths[1] = 2
    assert model.loss(x, garbage, LENGTHS) == model.loss(x, y, LENGTHS)


INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("target_dtype", INTEGER_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("task", ["labeling", "classification"])
def test_targets_of_any_integer_dtype_give_the_int64_loss_and_gradients(rng, task,
                                                                        target_dtype):
    # byte-level models hold their targets as uint8; ignore_index stays -100
    model = make(task)
    x, y = data(rng, task)
    want_loss, want = model.loss_and_grads(x, y, LENGTHS)
    loss, grads = model.loss_and_grads(x, y.astype(target_dtype), LENGTHS)
    assert loss == want_loss
    for key in want:
        np.testing.assert_array_equal(grads[key], want[key])


@pytest.mark.parametrize("target_dtype", INTEGER_DTYPES, ids=lambda d: np.dtype(d).name)
def test_out_of_range_targets_of_any_integer_dtype_are_rejected(rng, target_dtype):
    model = make("labeling")
    x, y = data(rng, "labeling")
    y = y.astype(target_dtype)
    big = np.iinfo(target_dtype).max
    y[0, 0] = big
    with pytest.raises(ValueError, match=rf"targets must lie in \[0, 4\) or equal "
                                         rf"ignore_index=-100; got values from 0 to {big}$"):
        model.loss_and_grads(x, y, LENGTHS)


def test_ignore_index_marks_targets_of_an_unsigned_dtype(rng):
    model = make("labeling", ignore_index=255)
    x, y = data(rng, "labeling")
    ignored = y.astype(np.uint8)
    ignored[0] = 255
    reference = y.copy()
    reference[0] = -100
    assert model.loss(x, ignored, LENGTHS) == make("labeling").loss(x, reference, LENGTHS)


def test_h0_changes_the_loss_and_h_n_is_returned(rng):
    model = make("labeling", num_layers=2)
    x, y = data(rng, "labeling")
    h0 = rng.standard_normal((2, B, H))
    loss0, _ = model.loss_and_grads(x, y)
    loss1, _, h_n = model.loss_and_grads(x, y, h0=h0, return_h_n=True)
    assert loss1 != loss0
    np.testing.assert_array_equal(h_n, model.forward(x, h0=h0)[1])


def test_callers_arrays_are_not_modified(rng):
    model = make("labeling")
    x, y = data(rng, "labeling")
    x.setflags(write=False)
    y.setflags(write=False)
    x0, y0 = x.copy(), y.copy()
    model.loss_and_grads(x, y, LENGTHS)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_grads_attribute_holds_the_last_gradients(rng):
    model = make("classification")
    x, y = data(rng, "classification")
    _, grads = model.loss_and_grads(x, y)
    assert model.grads is grads


def test_predict_marks_padded_steps(rng):
    model = make("labeling")
    x, _ = data(rng, "labeling")
    pred = model.predict(x, lengths=LENGTHS)
    assert (pred[2:, 1] == -1).all() and (pred[:2, 1] >= 0).all()


def test_predict_proba_rows_sum_to_one(rng):
    model = make("classification", bidirectional=True)
    x, _ = data(rng, "classification")
    p = model.predict_proba(x, LENGTHS)
    assert p.shape == (B, O)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)


def test_save_and_load_round_trip(tmp_path, rng):
    model = make("classification", bidirectional=True)
    x, y = data(rng, "classification")
    path = tmp_path / "m.npz"
    model.save(path)
    back = RNNModel.load(path)
    assert back.config() == model.config()
    np.testing.assert_array_equal(back.forward(x)[0], model.forward(x)[0])


def test_load_rejects_a_foreign_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not written by RNNModel.save"):
        RNNModel.load(path)


def test_embedding_is_a_gather_not_a_matmul(rng):
    model = make("labeling")
    x, y = data(rng, "labeling")
    _, grads = model.loss_and_grads(x, y)
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
    (dict(output_size=2, hidden_size=4, vocab_size=-3), ValueError, "vocab_size must be >= 1"),
    (dict(output_size=2, hidden_size=4, input_size=2, embedding_dim=3), ValueError,
     "embedding_dim goes with vocab_size"),
    (dict(output_size=2.5, hidden_size=4, vocab_size=3), TypeError, "output_size must be an integer"),
    (dict(output_size=2, hidden_size=4, vocab_size=3, dtype=np.int32), TypeError,
     "dtype must be float32 or float64"),
])
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        RNNModel(**kwargs)


@pytest.mark.parametrize("change, error, message", [
    (lambda x, y: (x + 10, y), ValueError, r"inputs must lie in \[0, 7\)"),
    (lambda x, y: (x.astype(float), y), TypeError, "inputs must be integer token ids"),
    (lambda x, y: (x[:, :, None], y), ValueError, r"inputs must have shape \(T, B\)"),
    (lambda x, y: (x, y[:, :2]), ValueError, r"targets must have shape \(6, 3\)"),
    (lambda x, y: (x, y + 10), ValueError, r"targets must lie in \[0, 4\)"),
    (lambda x, y: (x, y.astype(float)), TypeError, "targets must be integer classes"),
])
def test_bad_inputs_and_targets(rng, change, error, message):
    model = make("labeling")
    x, y = change(*data(rng, "labeling"))
    with pytest.raises(error, match=message):
        model.loss_and_grads(x, y)


def test_dense_inputs_of_the_wrong_dtype_or_width(rng):
    model = make("labeling", tokens=False, dtype=np.float32)
    x, y = data(rng, "labeling", tokens=False, dtype=np.float64)
    with pytest.raises(TypeError, match="dtype float64 but the weights are float32"):
        model.loss_and_grads(x, y)
    with pytest.raises(ValueError, match=r"inputs must have shape \(T, B, 3\)"):
        model.loss_and_grads(x[:, :, :2].astype(np.float32), y)


def test_bad_lengths_and_h0_name_the_argument(rng):
    model = make("labeling")
    x, y = data(rng, "labeling")
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
        model.loss_and_grads(x, y, lengths=[7, 1, 1])
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 3, 5\)"):
        model.loss_and_grads(x, y, h0=np.zeros((1, 2, H)))
