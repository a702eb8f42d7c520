"""rnncore.torch.patch reports what it converted and what it left; unpatch turns drop-ins
back into stock modules; explain says where a call would run, and why.

A spy on ``rnncore.functional.forward`` is the oracle for where a call did run.
"""
import logging
import pickle
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402

T, B, K, H = 5, 3, 4, 6


class MyLSTM(torch.nn.LSTM):
    pass


class MyDropIn(rt.GRU):
    pass


class Zoo(torch.nn.Module):
    """Every kind of recurrent module patch meets."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(K, H)
        self.encoder = torch.nn.Sequential(torch.nn.LSTM(K, H, 2))
        self.gru = torch.nn.GRU(K, H)
        self.mine = MyLSTM(K, H)
        self.cell = torch.nn.LSTMCell(K, H)
        self.done = rt.RNN(K, H, backend="numpy")
        self.custom = MyDropIn(K, H)


# ---- patch's report ----------------------------------------------------------------------

def test_patch_reports_every_recurrent_module_converted_or_left_with_its_reason():
    model = Zoo()
    returned, report = rt.patch(model, return_report=True)
    assert returned is model
    assert [(e.name, e.old, e.new) for e in report] == [
        ("rnn", torch.nn.RNN, rt.RNN),
        ("encoder.0", torch.nn.LSTM, rt.LSTM),
        ("gru", torch.nn.GRU, rt.GRU),
        ("mine", MyLSTM, None),
        ("cell", torch.nn.LSTMCell, None),
        ("done", rt.RNN, None),
        ("custom", MyDropIn, None)]
    reasons = {e.name: e.reason for e in report}
    assert reasons["rnn"] == reasons["gru"] == "converted"
    assert reasons["mine"] == ("a subclass of torch.nn.LSTM: its own forward may differ "
                               "from torch's")
    assert reasons["cell"].startswith("a single-step cell (torch.nn.LSTMCell)")
    assert reasons["done"] == "already an rnncore.torch.RNN (its backend is left as it is)"
    assert reasons["custom"] == "a subclass of rnncore.torch.GRU: left as it is"
    assert model.done.backend == "numpy"


def test_patch_returns_the_model_alone_by_default():
    model = Zoo()
    assert rt.patch(model) is model


def test_patch_logs_one_info_line_with_what_it_converted_and_left(caplog):
    caplog.set_level(logging.INFO, logger="rnncore.torch")
    rt.patch(torch.nn.Sequential(torch.nn.LSTM(K, H), MyLSTM(K, H)))
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert caplog.records[0].getMessage() == (
        "rnncore.torch.patch: converted 1 (0: torch.nn.LSTM -> rnncore.torch.LSTM); "
        "left 1 (1: test_torch_patch.MyLSTM, a subclass of torch.nn.LSTM: its own "
        "forward may differ from torch's)")


def test_patch_logs_when_it_finds_no_recurrent_module(caplog):
    caplog.set_level(logging.INFO, logger="rnncore.torch")
    rt.patch(torch.nn.Linear(2, 2))
    assert caplog.records[0].getMessage() == (
        "rnncore.torch.patch: no recurrent module found")


def test_patch_says_when_a_converted_module_will_run_torch_for_its_parameters():
    _, report = rt.patch(torch.nn.GRU(K, H, dtype=torch.float16), return_report=True)
    assert report[0].new is rt.GRU
    assert report[0].reason.startswith(
        "converted, but its parameters are cpu torch.float16: its calls run torch's")


def test_patch_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module; got dict"):
        rt.patch({})


# ---- unpatch -----------------------------------------------------------------------------

def test_unpatch_restores_stock_modules_with_the_same_parameters(forwards):
    model = Zoo()
    params = {name: p for name, p in model.named_parameters()}
    torch.manual_seed(0)
    x = torch.randn(T, B, K)
    rt.patch(model)
    want = model.encoder[0](x)[0]
    assert forwards[0] == 1
    _, report = rt.unpatch(model, return_report=True)
    assert [(e.name, e.new) for e in report if e.new] == [
        ("rnn", torch.nn.RNN), ("encoder.0", torch.nn.LSTM), ("gru", torch.nn.GRU),
        ("done", torch.nn.RNN)]
    assert {e.name: e.reason for e in report if e.new is None} == {
        "mine": "not a drop-in", "cell": "not a drop-in",
        "custom": "a subclass of rnncore.torch.GRU: left as it is"}
    assert type(model.encoder[0]) is torch.nn.LSTM
    assert "_rnncore_backend" not in model.done.__dict__
    assert all(p is params[name] for name, p in model.named_parameters())
    torch.testing.assert_close(model.encoder[0](x)[0], want)
    assert forwards[0] == 1                    # stock torch ran


def test_unpatched_model_pickles_without_rnncore_and_a_patched_one_names_it():
    model = rt.patch(torch.nn.Sequential(torch.nn.LSTM(K, H), torch.nn.GRU(H, H)))
    assert b"rnncore.torch" in pickle.dumps(model)
    assert b"rnncore" not in pickle.dumps(rt.unpatch(model))


LOAD_WITHOUT_RNNCORE = """
import sys
sys.modules["rnncore"] = None            # as if rnncore were not installed
import torch
model = torch.load(sys.argv[1], weights_only=False)
print(type(model[0]).__module__, type(model[0]).__name__)
"""


@pytest.mark.parametrize("unpatched", [True, False], ids=["unpatched", "patched"])
def test_whole_model_saved_loads_without_rnncore_only_when_unpatched(tmp_path,
                                                                     unpatched):
    model = rt.patch(torch.nn.Sequential(torch.nn.LSTM(K, H)))
    if unpatched:
        rt.unpatch(model)
    torch.save(model, tmp_path / "model.pt")
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_RNNCORE,
                           str(tmp_path / "model.pt")], capture_output=True, text=True)
    if unpatched:
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["torch.nn.modules.rnn", "LSTM"]
    else:
        assert done.returncode != 0
        assert "rnncore" in done.stderr.strip().splitlines()[-1]   # the import it needs


# ---- explain -----------------------------------------------------------------------------

def test_explain_says_rnncore_when_the_rule_holds_and_runs_nothing(forwards):
    rnn = rt.LSTM(K, H)
    explanation = rt.explain(rnn, torch.randn(T, B, K))
    assert explanation == ("rnncore", "every condition of the rule holds")
    assert str(explanation) == "rnncore: every condition of the rule holds"
    assert forwards[0] == 0


def test_explain_names_dropout_in_training_as_run_layer_by_layer():
    rnn = rt.GRU(K, H, 2, dropout=0.25)
    assert rt.explain(rnn, torch.randn(T, B, K)).reason == (
        "every condition of the rule holds; dropout 0.25 between layers in training mode:"
        " one rnncore call per layer, torch's noise between them")
    rnn.eval()
    assert rt.explain(rnn, torch.randn(T, B, K)).reason == (
        "every condition of the rule holds")


@pytest.mark.parametrize("case, reason", [
    ("float16", "the input is not a float32 or float64 CPU tensor with the strided layout"),
    ("backend", 'backend is "torch"'),
    ("hx", "hx of an LSTM is not a tuple or list of two tensors"),
    ("empty", "the input is empty"),
])
def test_explain_gives_the_condition_that_sends_a_call_to_torch(case, reason, forwards):
    rnn = rt.LSTM(K, H, backend="torch" if case == "backend" else None)
    x = torch.randn(0 if case == "empty" else T, B, K,
                    dtype=torch.float16 if case == "float16" else torch.float32)
    hx = torch.zeros(1, B, H) if case == "hx" else None
    assert rt.explain(rnn, x, hx) == ("torch", reason)
    assert forwards[0] == 0


def test_explain_agrees_with_where_calls_run(forwards):
    cases = [(rt.RNN(K, H), torch.randn(T, B, K)),
             (rt.GRU(K, H, 2, dropout=0.5), torch.randn(T, B, K)),
             (rt.LSTM(K, H), torch.randn(T, B, K, dtype=torch.float64)),
             (rt.RNN(K, H), torch.randn(T, B, K + 1)[..., :K].double())]
    for module, x in cases:
        path = rt.explain(module, x).path
        before = forwards[0]
        try:
            module(x)
        except (RuntimeError, ValueError):   # torch's own error for what it rejects
            pass
        assert (forwards[0] > before) == (path == "rnncore"), (module, x.dtype)


def test_explain_says_a_stock_module_runs_torch_and_whether_patch_converts_it():
    assert rt.explain(torch.nn.LSTM(K, H), torch.randn(T, B, K)) == (
        "torch", "a stock torch.nn.LSTM, not a drop-in (rnncore.torch.patch converts it)")
    assert rt.explain(MyLSTM(K, H), torch.randn(T, B, K)) == (
        "torch", "not a drop-in: a subclass of torch.nn.LSTM: its own forward may differ "
                 "from torch's")


def test_explain_rejects_what_is_not_an_rnn_module():
    with pytest.raises(TypeError, match="module must be an rnncore.torch.RNN, LSTM or GRU, "
                                        "or a torch.nn.RNN, LSTM or GRU; got Linear"):
        rt.explain(torch.nn.Linear(K, H), torch.randn(T, B, K))
