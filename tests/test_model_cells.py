"""RNNModel over the three cells: gradients against finite differences and torch,
save and load, truncated BPTT with the state (an LSTM's (h, c) pair) carried across
chunks."""
import json
import zipfile

import numpy as np
import pytest

import rnncore
from rnncore import RNNModel, gradient_check
from rnncore.optim import SGD, truncated_bptt

from conftest import RTOL, assert_close

T, B, V, E, K, H, O = 6, 3, 7, 3, 3, 5, 4
LENGTHS = np.array([6, 2, 4])
CELLS = ["rnn", "lstm", "gru"]
# (cell, proj_size): every cell, and the LSTM with a projection
CELL_CASES = [("rnn", 0), ("lstm", 0), ("lstm", 2), ("gru", 0)]
CELL_IDS = ["rnn", "lstm", "lstm-proj", "gru"]
# Central differences with eps = 1e-4: truncation error ~1e-8 relative, while the
# default 1e-6 leaves the gated cells' smaller gradient entries with ~1e-5 of rounding.
# Some parameters have tiny gradients here (the first layer's reverse W_hh of a projected
# LSTM: ~1e-5 at most), where rounding alone reaches ~1e-4 of gradient_check's floor; a
# wrong gradient shows errors of 1e-3 and more (test_model.py: 1 % off gives 5e-3).
EPS, FD_TOL = 1e-4, 2e-4


def make(cell, task="labeling", proj_size=0, tokens=True, backend=None, dtype=np.float64,
         **kwargs):
    kw = dict(vocab_size=V, embedding_dim=E) if tokens else dict(input_size=K)
    return RNNModel(O, H, cell=cell, proj_size=proj_size, task=task, dtype=dtype, seed=0,
                    backend=backend, **kw, **kwargs)


def data(rng, task="labeling", tokens=True, steps=T):
    x = (rng.integers(0, V, (steps, B)) if tokens
         else rng.standard_normal((steps, B, K)))
    y = rng.integers(0, O, (steps, B) if task == "labeling" else (B,))
    return x, y


def random_state(model, rng):
    """A nonzero initial state of the model's kind: an array, or an LSTM's pair."""
    LD = model.rnn.num_layers * (2 if model.rnn.bidirectional else 1)
    h = rng.standard_normal((LD, B, model.proj_size or H))
    if model.cell == "lstm":
        return h, rng.standard_normal((LD, B, H))
    return h


def assert_states_equal(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cell, proj_size", CELL_CASES, ids=CELL_IDS)
@pytest.mark.parametrize("task", ["labeling", "classification"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_equal_finite_differences(backend, rng, cell, proj_size, task,
                                            bidirectional):
    model = make(cell, task, proj_size, backend=backend, num_layers=2,
                 bidirectional=bidirectional)
    x, y = data(rng, task)
    errors = gradient_check(model, x, y, np.array([6, 3, 5]), samples=6, eps=EPS)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < FD_TOL, errors


@pytest.mark.parametrize("cell, proj_size", CELL_CASES, ids=CELL_IDS)
def test_gradients_from_a_given_state_equal_finite_differences(backend, rng, cell,
                                                               proj_size):
    model = make(cell, proj_size=proj_size, tokens=False, backend=backend)
    x, y = data(rng, tokens=False)
    h0 = random_state(model, rng)
    errors = gradient_check(model, x, y, h0=h0, samples=6, eps=EPS)
    assert max(errors.values()) < FD_TOL, errors


def torch_loss_and_grads(model, x, y, lengths):
    """The same model in torch: nn.Embedding, nn.LSTM or nn.GRU over a packed batch,
    nn.Linear and F.cross_entropy."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    tdtype = torch.float64 if model.dtype == np.float64 else torch.float32
    D = 2 if model.rnn.bidirectional else 1
    kw = dict(proj_size=model.proj_size) if model.cell == "lstm" else {}
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[model.cell]
    rnn = module(E, H, model.rnn.num_layers, bidirectional=model.rnn.bidirectional,
                 **kw).to(tdtype)
    rnn.load_state_dict({k: torch.tensor(model.params[k]) for k in model.rnn.params})
    lin = torch.nn.Linear(model.params["V"].shape[1], O).to(tdtype)
    lin.load_state_dict({"weight": torch.tensor(model.params["V"]),
                         "bias": torch.tensor(model.params["c"])})
    emb = torch.nn.Embedding(V, E).to(tdtype)
    emb.weight.data = torch.tensor(model.params["embedding"])
    packed = pack_padded_sequence(emb(torch.tensor(x)), torch.tensor(lengths),
                                  enforce_sorted=False)
    out, state = rnn(packed)
    h_n = state[0] if model.cell == "lstm" else state
    out, _ = pad_packed_sequence(out, total_length=T)
    yt = torch.tensor(y)
    if model.task == "labeling":
        mask = torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]
        yt = torch.where(mask, yt, torch.full_like(yt, -100))
        logits = lin(out).reshape(-1, O)
        loss = torch.nn.functional.cross_entropy(logits, yt.reshape(-1), ignore_index=-100)
    else:
        feat = torch.cat([h_n[-2], h_n[-1]], dim=1) if D == 2 else h_n[-1]
        loss = torch.nn.functional.cross_entropy(lin(feat), yt)
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in rnn.named_parameters()}
    grads["V"], grads["c"] = lin.weight.grad.numpy(), lin.bias.grad.numpy()
    grads["embedding"] = emb.weight.grad.numpy()
    return loss.item(), grads


@pytest.mark.parametrize("cell, proj_size", CELL_CASES[1:], ids=CELL_IDS[1:])
@pytest.mark.parametrize("task", ["labeling", "classification"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_loss_and_every_gradient_match_torch(backend, dtype, rng, cell, proj_size, task,
                                             bidirectional):
    model = make(cell, task, proj_size, backend=backend, dtype=dtype, num_layers=2,
                 bidirectional=bidirectional)
    x, y = data(rng, task)
    loss, grads = model.loss_and_grads(x, y, LENGTHS)
    want_loss, want = torch_loss_and_grads(model, x, y, LENGTHS)
    assert loss == pytest.approx(want_loss, rel=RTOL[dtype])
    assert set(grads) == set(want) == set(model.params)
    for key in want:
        assert_close(grads[key], want[key], RTOL[dtype], key)


@pytest.mark.parametrize("cell, proj_size", CELL_CASES, ids=CELL_IDS)
def test_save_and_load_round_trip(tmp_path, rng, backend, cell, proj_size):
    model = make(cell, "classification", proj_size, backend=backend, num_layers=2,
                 bidirectional=True)
    x, y = data(rng, "classification")
    model.save(tmp_path / "m.npz")
    back = RNNModel.load(tmp_path / "m.npz", backend=backend)
    assert back.config() == model.config()
    assert back.config()["cell"] == cell and back.config()["proj_size"] == proj_size
    for key in model.params:
        np.testing.assert_array_equal(back.params[key], model.params[key])
    np.testing.assert_array_equal(back.forward(x, LENGTHS)[0], model.forward(x, LENGTHS)[0])
    assert back.loss(x, y, LENGTHS) == model.loss(x, y, LENGTHS)


def test_a_checkpoint_without_cell_and_proj_size_loads_as_an_elman_rnn(tmp_path, rng):
    # the configuration written before the gated cells had neither key
    model = make("rnn", nonlinearity="relu")
    config = model.config()
    del config["cell"], config["proj_size"]
    path = tmp_path / "old.npz"
    np.savez(path, __config__=np.array(json.dumps(config)), **model.params)
    back = RNNModel.load(path)
    assert back.cell == "rnn" and back.proj_size == 0
    assert back.config() == model.config()
    x, _ = data(rng)
    np.testing.assert_array_equal(back.forward(x)[0], model.forward(x)[0])


def test_the_checkpoint_records_the_cell(tmp_path):
    make("gru").save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        config = json.loads(str(np.load(archive.open("__config__.npy"))))
    assert config["cell"] == "gru"


def write_with_config(path, model, **changes):
    np.savez(path, __config__=np.array(json.dumps({**model.config(), **changes})),
             **model.params)
    return path


@pytest.mark.parametrize("cell, changes, message", [
    ("rnn", dict(cell="transformer"),
     r"__config__\['cell'\] must be one of \('rnn', 'lstm', 'gru'\); got 'transformer'"),
    ("lstm", dict(cell="gru"),
     r"weight_ih_l0 must have shape \(15, 3\) by its __config__; got \(20, 3\)"),
    ("gru", dict(nonlinearity="relu"),
     r"nonlinearity='relu' for cell='gru', which takes only 'tanh'"),
    ("gru", dict(proj_size=2),
     r"proj_size=2; it must be 0, or smaller than hidden_size=5 for cell='lstm'; "
     r"got cell='gru'"),
    ("lstm", dict(proj_size=-1), r"__config__\['proj_size'\] must be a non-negative integer"),
    ("lstm", dict(proj_size=2), r"missing \['weight_hr_l0'\], unexpected \[\]"),
])
def test_load_rejects_a_config_that_does_not_fit_its_cell(tmp_path, cell, changes, message):
    path = write_with_config(tmp_path / "bad.npz", make(cell), **changes)
    with pytest.raises(ValueError, match=message):
        RNNModel.load(path)


@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_equals_the_chunks_called_by_hand_with_the_carried_state(
        backend, rng, cell):
    x, y = data(rng, steps=10)
    model = make(cell, backend=backend, num_layers=2)
    by_hand = make(cell, backend=backend, num_layers=2)
    h0 = random_state(model, rng)
    got = list(truncated_bptt(model, x, y, 4, SGD(model.params, lr=0.1), h0=h0))
    assert len(got) == 3                                      # chunks of 4, 4 and 2 steps
    opt, state = SGD(by_hand.params, lr=0.1), h0
    for start, (loss, norm) in zip((0, 4, 8), got, strict=True):
        want_loss, grads, state = by_hand.loss_and_grads(
            x[start:start + 4], y[start:start + 4], h0=state, return_h_n=True)
        assert loss == want_loss
        assert norm == pytest.approx(np.sqrt(sum((g ** 2).sum() for g in grads.values())),
                                     rel=1e-12)
        opt.step(grads)
    for key in model.params:
        np.testing.assert_array_equal(model.params[key], by_hand.params[key])


@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_without_updates_has_the_loss_of_the_whole_sequence(backend, rng,
                                                                          cell):
    # the carried state makes each chunk's logits those of one forward over the whole
    model = make(cell, backend=backend, num_layers=2)
    x, y = data(rng, steps=10)
    h0 = random_state(model, rng)
    losses = [loss for loss, _ in truncated_bptt(model, x, y, 4, h0=h0)]
    chunk_mean = np.dot(losses, [4, 4, 2]) / 10
    assert chunk_mean == pytest.approx(model.loss(x, y, h0=h0), rel=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_chunks_with_the_carried_state_equal_one_forward_over_the_whole(backend, rng,
                                                                        cell):
    model = make(cell, backend=backend, num_layers=2)
    x, _ = data(rng, steps=10)
    whole, h_whole = model.forward(x)
    first, h_mid = model.forward(x[:4])
    second, h_end = model.forward(x[4:], h0=h_mid)
    if cell == "lstm":
        assert isinstance(h_mid, tuple) and len(h_mid) == 2
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-12)
    for got, want in zip(np.atleast_1d(h_end) if cell != "lstm" else h_end,
                         np.atleast_1d(h_whole) if cell != "lstm" else h_whole,
   strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_loss_and_grads_returns_the_final_state_forward_returns(rng, cell):
    model = make(cell, num_layers=2, bidirectional=True)
    x, y = data(rng)
    h0 = random_state(model, rng)
    _, _, h_n = model.loss_and_grads(x, y, LENGTHS, h0=h0, return_h_n=True)
    assert_states_equal(h_n, model.forward(x, LENGTHS, h0=h0)[1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_short_training_run_with_clipping_lowers_the_loss_by_half(backend, cell):
    pattern = np.array([0, 1, 2, 3, 4, 5, 6] * 6)          # the next token is determined
    x = np.stack([np.roll(pattern, k)[:-1] for k in range(4)], axis=1)
    y = np.stack([np.roll(pattern, k)[1:] for k in range(4)], axis=1)
    model = RNNModel(V, 16, vocab_size=V, cell=cell, seed=1, dtype=np.float32,
                     backend=backend)
    opt = rnncore.Adam(model.params, lr=0.02)
    first = model.loss(x, y)                                # ≈ log 7 = 1.95
    for _ in range(60):
        loss, grads = model.loss_and_grads(x, y)
        rnncore.clip_grad_norm(grads, 1.0)
        opt.step(grads)
    assert model.loss(x, y) < 0.5 * first
    assert (model.predict(x) == y).mean() > 0.9


@pytest.mark.parametrize("cell, proj_size", CELL_CASES, ids=CELL_IDS)
def test_parameters_are_the_cells_under_torchs_keys(cell, proj_size):
    model = make(cell, proj_size=proj_size, bidirectional=True)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert model.params["weight_ih_l0"].shape == (G * H, E)
    assert model.params["weight_hh_l0"].shape == (G * H, proj_size or H)
    assert model.params["V"].shape == (O, 2 * (proj_size or H))
    assert ("weight_hr_l0" in model.params) == (proj_size > 0)
    assert model.params["weight_hh_l0"] is model.rnn.params["weight_hh_l0"]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(cell="transformer"), ValueError,
     r"cell must be one of \('rnn', 'lstm', 'gru'\); got 'transformer'"),
    (dict(cell="gru", nonlinearity="relu"), ValueError,
     r"nonlinearity is an option of the Elman RNN; cell='gru' takes only 'tanh', "
     r"got 'relu'"),
    (dict(cell="rnn", proj_size=2), ValueError,
     r"proj_size is an LSTM option; got proj_size=2 for cell='rnn'"),
    (dict(cell="lstm", proj_size=5), ValueError,
     r"proj_size must be smaller than hidden_size \(5\); got 5"),
    (dict(cell="lstm", proj_size=1.5), TypeError, r"proj_size must be an integer"),
])
def test_bad_cell_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        RNNModel(O, H, vocab_size=V, **kwargs)


def test_an_lstm_state_that_is_not_a_pair_is_refused(rng):
    model = make("lstm")
    x, y = data(rng)
    with pytest.raises((TypeError, ValueError), match="h0"):
        model.loss_and_grads(x, y, h0=np.zeros((1, B, H)))


# ---------------------------------------------------------------- merge_mode
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("merge_mode, share", [("sum", 1.0), ("mean", 0.5)])
def test_a_summed_or_averaged_output_is_the_concatenated_model_with_v_repeated(
        backend, rng, cell, merge_mode, share):
    # V (h_f + h_r)·share = [share·V, share·V] [h_f; h_r]: the concat model is the oracle
    merged = make(cell, backend=backend, bidirectional=True, merge_mode=merge_mode)
    concat = make(cell, backend=backend, bidirectional=True)
    concat.load_params({**merged.params, "V": share * np.hstack([merged.params["V"]] * 2)})
    x, y = data(rng)
    loss, grads = merged.loss_and_grads(x, y, LENGTHS)
    want_loss, want = concat.loss_and_grads(x, y, LENGTHS)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for key in merged.rnn.params:
        np.testing.assert_allclose(grads[key], want[key], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_a_multiplied_output_has_gradients_equal_to_finite_differences(backend, rng, cell):
    model = make(cell, backend=backend, num_layers=2, bidirectional=True, merge_mode="mul")
    assert model.params["V"].shape == (O, H)
    x, y = data(rng)
    errors = gradient_check(model, x, y, np.array([6, 3, 5]), samples=6, eps=EPS)
    assert max(errors.values()) < FD_TOL, errors


@pytest.mark.parametrize("cell", CELLS)
def test_merge_mode_survives_save_and_load(tmp_path, rng, cell):
    model = make(cell, bidirectional=True, merge_mode="mean")
    model.save(tmp_path / "m.npz")
    back = RNNModel.load(tmp_path / "m.npz")
    assert back.config()["merge_mode"] == "mean"
    x, _ = data(rng)
    np.testing.assert_array_equal(back.forward(x, LENGTHS)[0], model.forward(x, LENGTHS)[0])


def test_a_checkpoint_without_merge_mode_loads_concatenated(tmp_path):
    model = make("gru", bidirectional=True)
    config = model.config()
    del config["merge_mode"]
    np.savez(tmp_path / "old.npz", __config__=np.array(json.dumps(config)), **model.params)
    assert RNNModel.load(tmp_path / "old.npz").config()["merge_mode"] == "concat"


def test_a_merged_bidirectional_classifier_is_refused():
    with pytest.raises(ValueError, match=r"needs merge_mode='concat'; got merge_mode='sum'"):
        make("lstm", "classification", bidirectional=True, merge_mode="sum")


def test_an_unknown_merge_mode_is_refused():
    with pytest.raises(ValueError, match=r"merge_mode must be one of"):
        make("rnn", bidirectional=True, merge_mode="max")
