"""RNNModel(checkpoint=k | "auto"): checkpointed BPTT in the classic model, with the
gradients of full BPTT bit for bit, kept across save and load."""
import json

import numpy as np
import pytest

import rnncore
from rnncore import RNNModel

T, B, V, H, O = 40, 3, 7, 5, 4
LENGTHS = np.array([40, 17, 29])


def make(cell, checkpoint, backend, bidirectional=False):
    return RNNModel(O, H, vocab_size=V, cell=cell, num_layers=2,
                    bidirectional=bidirectional, checkpoint=checkpoint, dtype=np.float64,
                    seed=0, backend=backend)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 4 steps, so that a 40-step call is checkpointed in segments (a call
    this short otherwise runs whole, and "auto" would recompute it whole)."""
    from rnncore import _chunks
    monkeypatch.setattr(_chunks, "chunk_steps", lambda B, T: 4 if T > 4 else max(1, T))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("checkpoint", [8, "auto"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_checkpointed_model_gradients_equal_full_bptt_bit_for_bit(backend, cell, checkpoint,
                                                                   bidirectional, rng):
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, O, (T, B))
    full = make(cell, 0, backend, bidirectional)
    kept = make(cell, checkpoint, backend, bidirectional)
    record = kept._forward(x, LENGTHS, None)[2][2]
    assert all(s is None for layer in record.states[:-1] for s in layer)   # not kept
    loss_full, grads_full = full.loss_and_grads(x, y, LENGTHS)
    loss_kept, grads_kept = kept.loss_and_grads(x, y, LENGTHS)
    assert loss_kept == loss_full
    assert grads_kept.keys() == grads_full.keys()
    for key in grads_full:
        np.testing.assert_array_equal(grads_kept[key], grads_full[key], err_msg=key)


def test_checkpoint_is_kept_across_save_and_load(tmp_path):
    model = make("lstm", "auto", None)
    model.save(tmp_path / "m.npz")
    loaded = RNNModel.load(tmp_path / "m.npz")
    assert loaded.config()["checkpoint"] == "auto"
    assert loaded.rnn.checkpoint == "auto"


def test_a_file_without_checkpoint_loads_with_every_state_kept(tmp_path):
    path, older = tmp_path / "m.npz", tmp_path / "older.npz"
    make("rnn", 0, None).save(path)
    with np.load(path) as entries:
        arrays = dict(entries)
    config = json.loads(arrays.pop("__config__").item())
    del config["checkpoint"]                         # as files written before it
    np.savez(older, __config__=np.array(json.dumps(config)), **arrays)
    assert RNNModel.load(older).rnn.checkpoint == 0


def test_gradient_norms_work_on_a_checkpointing_model(rng):
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, O, (T, B))
    got = rnncore.gradient_norms(make("gru", "auto", None), x, y)
    want = rnncore.gradient_norms(make("gru", 0, None), x, y)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), ("sqrt", ValueError),
                                      (1.5, TypeError)])
def test_a_bad_checkpoint_is_refused_when_the_model_is_made(bad, exc):
    with pytest.raises(exc, match="checkpoint must be 0, a positive int or 'auto'"):
        make("rnn", bad, None)
