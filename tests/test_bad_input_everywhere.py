"""Every public entry point rejects bad input with a clear ValueError or TypeError.

One table: (entry point, bad input, expected exception, message pattern). Each pattern
requires the message to name the argument, what was expected and what was given. The
same table, run for real, generates docs/errors.md (``python tools/errors_table.py``).
"""
import re

import numpy as np
import pytest
from conftest import assert_raises_as_stock

import rnncore
from rnncore import functional as F

# A model with L=2, D=2, K=3, H=4 and a batch of T=5, B=2; ``after_forward`` runs a
# good forward first, so that a backward sees a record.
rnn = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, seed=0)
x = np.ones((5, 2, 3), np.float32)
params = rnn.params
f32 = np.float32


def after_forward(fn, model=rnn):
    def call():
        model(x)
        fn()
    return call


def _record():
    return F.forward(x, params)[2]


def _with(key, value):
    return {**params, key: value}


def _without(key):
    return {k: v for k, v in params.items() if k != key}


E, T_ = ValueError, TypeError
CASES = [
    # ---- the constructor
    ("RNN(...)", "input_size 0", lambda: rnncore.RNN(0, 4), E,
     r"input_size must be >= 1; got 0"),
    ("RNN(...)", "hidden_size -1", lambda: rnncore.RNN(3, -1), E,
     r"hidden_size must be >= 1; got -1"),
    ("RNN(...)", "num_layers 0", lambda: rnncore.RNN(3, 4, num_layers=0), E,
     r"num_layers must be >= 1; got 0"),
    ("RNN(...)", "num_layers 2.5", lambda: rnncore.RNN(3, 4, num_layers=2.5), T_,
     r"num_layers must be an integer; got float"),
    ("RNN(...)", "input_size 3.0", lambda: rnncore.RNN(3.0, 4), T_,
     r"input_size must be an integer; got float"),
    ("RNN(...)", "hidden_size True", lambda: rnncore.RNN(3, True), T_,
     r"hidden_size must be an integer; got bool"),
    ("RNN(...)", "input_size '3'", lambda: rnncore.RNN("3", 4), T_,
     r"input_size must be an integer; got str"),
    ("RNN(...)", "nonlinearity 'gelu'", lambda: rnncore.RNN(3, 4, nonlinearity="gelu"), E,
     r"nonlinearity must be 'tanh' or 'relu'; got 'gelu'"),
    ("RNN(...)", "dtype int32", lambda: rnncore.RNN(3, 4, dtype=np.int32), T_,
     r"dtype must be float32 or float64; got int32"),
    ("RNN(...)", "dtype float16", lambda: rnncore.RNN(3, 4, dtype=np.float16), T_,
     r"dtype must be float32 or float64; got float16"),
    ("RNN(...)", "dtype 'bogus'", lambda: rnncore.RNN(3, 4, dtype="bogus"), T_,
     r"dtype must be float32 or float64; got 'bogus'"),
    ("RNN(...)", "backend 'cuda'", lambda: rnncore.RNN(3, 4, backend="cuda"), E,
     r"backend must be one of \(.*'numpy'\) or None; got 'cuda'"),
    ("RNN(...)", "num_layers 10**7 (more parameters than memory)",
     lambda: rnncore.RNN(3, 64, num_layers=10**7), E,
     r"input_size=3, hidden_size=64, num_layers=10000000 need \d+\.\d GiB of float32 "
     r"parameters, more than this machine's \d+\.\d GiB of memory"),
    ("RNN(...)", "seed 'x'", lambda: rnncore.RNN(3, 4, seed="x"), T_,
     r"seed must be a non-negative int, a np.random.Generator or None; got 'x'"),
    ("RNN(...)", "seed -1", lambda: rnncore.RNN(3, 4, seed=-1), E,
     r"seed must be a non-negative int, .*; got -1"),
    # ---- RNN.forward (through functional.forward)
    ("RNN.forward", "x of ndim 1", lambda: rnn(np.ones(5, f32)), E,
     r"x must have shape \(T, B, 3\).*; got \(5,\)"),
    ("RNN.forward", "x of ndim 4", lambda: rnn(np.ones((5, 2, 3, 1), f32)), E,
     r"x must have shape \(T, B, 3\).*; got \(5, 2, 3, 1\)"),
    ("RNN.forward", "x with 4 features, input_size 3", lambda: rnn(np.ones((5, 2, 4), f32)),
     E, r"x must have 3 features .*; got shape \(5, 2, 4\)"),
    ("RNN.forward", "x float64, weights float32", lambda: rnn(np.ones((5, 2, 3))), T_,
     r"x has dtype float64 but the weights are float32"),
    ("RNN.forward", "x int64", lambda: rnn(np.ones((5, 2, 3), np.int64)), T_,
     r"x must be float32 or float64; got dtype int64"),
    ("RNN.forward", "x complex64", lambda: rnn(np.ones((5, 2, 3), np.complex64)), T_,
     r"x must be float32 or float64; got dtype complex64"),
    ("RNN.forward", "x bool", lambda: rnn(np.ones((5, 2, 3), bool)), T_,
     r"x must be float32 or float64; got dtype bool"),
    ("RNN.forward", "x a ragged list", lambda: rnn([[1.0], [1.0, 2.0]]), T_,
     r"x must be an array; got list"),
    ("RNN.forward", "x a masked array", lambda: rnn(np.ma.masked_array(x)), T_,
     r"x must be a plain array; got a numpy.ma.MaskedArray \(rnncore would ignore its "
     r"mask: fill it or pass lengths\)"),
    ("RNN.forward", "x broadcast to T*B = 2**31 + 2**16 rows",
     lambda: rnn(np.broadcast_to(f32(1), (2**16, 2**15 + 1, 3))), E,
     r"T\*B = 2147549184 \(rows of the whole-sequence products\) exceeds the 32-bit "
     r"BLAS limit of 2147483647"),
    ("RNN.forward", "x a string", lambda: rnn("abc"), T_,
     r"x must be float32 or float64; got dtype <U3"),
    ("RNN.forward", "h0 with 2 layer-directions, 4 expected",
     lambda: rnn(x, np.zeros((2, 2, 4), f32)), E,
     r"h0 must have shape \(4, 2, 4\) for num_layers=2, bidirectional=True, batch=2, "
     r"hidden_size=4; got \(2, 2, 4\)"),
    ("RNN.forward", "h0 of the wrong batch", lambda: rnn(x, np.zeros((4, 3, 4), f32)), E,
     r"h0 must have shape \(4, 2, 4\) .*; got \(4, 3, 4\)"),
    ("RNN.forward", "h0 unbatched for batched x", lambda: rnn(x, np.zeros((4, 4), f32)), E,
     r"h0 must have shape \(4, 2, 4\) .*; got \(4, 4\)"),
    ("RNN.forward", "h0 batched for unbatched x",
     lambda: rnn(np.ones((5, 3), f32), np.zeros((4, 1, 4), f32)), E,
     r"h0 must have shape \(4, 4\) .*; got \(4, 1, 4\)"),
    ("RNN.forward", "h0 float64", lambda: rnn(x, np.zeros((4, 2, 4))), T_,
     r"h0 has dtype float64 but the weights are float32"),
    ("RNN.forward", "h0 int64", lambda: rnn(x, np.zeros((4, 2, 4), np.int64)), T_,
     r"h0 must be float32 or float64; got dtype int64"),
    ("RNN.forward", "lengths 0", lambda: rnn(x, lengths=[0, 5]), E,
     r"lengths must lie in \[1, 5\] .*; got values from 0 to 5"),
    ("RNN.forward", "lengths above T", lambda: rnn(x, lengths=[6, 5]), E,
     r"lengths must lie in \[1, 5\] .*; got values from 5 to 6"),
    ("RNN.forward", "lengths negative", lambda: rnn(x, lengths=[-1, 5]), E,
     r"lengths must lie in \[1, 5\] .*; got values from -1 to 5"),
    ("RNN.forward", "lengths with T = 0", lambda: rnn(np.ones((0, 2, 3), f32), lengths=[1, 1]),
     E, r"lengths must lie in \[1, 0\] for a sequence length of 0; got values from 1 to 1"),
    ("RNN.forward", "lengths of shape (1,) for B = 2", lambda: rnn(x, lengths=[5]), E,
     r"lengths must have shape \(2,\) for batch size 2; got \(1,\)"),
    ("RNN.forward", "lengths of shape (2, 1)", lambda: rnn(x, lengths=[[5], [5]]), E,
     r"lengths must have shape \(2,\) for batch size 2; got \(2, 1\)"),
    ("RNN.forward", "lengths with NaN", lambda: rnn(x, lengths=[np.nan, 5]), E,
     r"lengths must hold whole numbers; got .*nan"),
    ("RNN.forward", "lengths with inf", lambda: rnn(x, lengths=[np.inf, 5]), E,
     r"lengths must hold whole numbers; got .*inf"),
    ("RNN.forward", "lengths not whole", lambda: rnn(x, lengths=[2.5, 5]), E,
     r"lengths must hold whole numbers; got .*2\.5"),
    ("RNN.forward", "lengths bool", lambda: rnn(x, lengths=[True, True]), T_,
     r"lengths must be integers; got dtype bool"),
    ("RNN.forward", "lengths strings", lambda: rnn(x, lengths=["5", "5"]), T_,
     r"lengths must be integers; got dtype <U1"),
    ("RNN.forward", "lengths complex", lambda: rnn(x, lengths=[5j, 5j]), T_,
     r"lengths must be integers; got dtype complex128"),
    # ---- RNN.backward (through functional.backward)
    ("RNN.backward", "before any forward", lambda: rnncore.RNN(3, 4).backward(), RuntimeError,
     r"backward called before forward"),
    ("RNN.backward", "dy of wrong shape",
     after_forward(lambda: rnn.backward(np.ones((5, 2, 4), f32))), E,
     r"dy must have the shape of the forward output \(5, 2, 8\); got \(5, 2, 4\)"),
    ("RNN.backward", "dy batch-first for time-major output",
     after_forward(lambda: rnn.backward(np.ones((2, 5, 8), f32))), E,
     r"dy must have the shape of the forward output \(5, 2, 8\); got \(2, 5, 8\)"),
    ("RNN.backward", "dy float64", after_forward(lambda: rnn.backward(np.ones((5, 2, 8)))),
     T_, r"dy has dtype float64 but the weights are float32"),
    ("RNN.backward", "dy int64",
     after_forward(lambda: rnn.backward(np.ones((5, 2, 8), np.int64))), T_,
     r"dy must be float32 or float64; got dtype int64"),
    ("RNN.backward", "dh_n of wrong shape",
     after_forward(lambda: rnn.backward(None, np.ones((4, 1, 4), f32))), E,
     r"dh_n must have shape \(4, 2, 4\) for num_layers=2, bidirectional=True, batch=2, "
     r"hidden_size=4; got \(4, 1, 4\)"),
    ("RNN.backward", "dh_n float64",
     after_forward(lambda: rnn.backward(None, np.ones((4, 2, 4)))), T_,
     r"dh_n has dtype float64 but the weights are float32"),
    # ---- RNN.load_state_dict
    ("RNN.load_state_dict", "missing keys",
     lambda: rnn.load_state_dict({"weight_ih_l0": np.ones((4, 3))}), E,
     r"state_dict keys do not match this RNN: missing \['bias_hh_l0', .*\], unexpected \[\]"),
    ("RNN.load_state_dict", "an extra key",
     lambda: rnn.load_state_dict({**rnn.state_dict(), "weight_ih_l2": np.ones((4, 8))}), E,
     r"state_dict keys do not match this RNN: missing \[\], unexpected \['weight_ih_l2'\]"),
    ("RNN.load_state_dict", "torch's key with a prefix",
     lambda: rnn.load_state_dict({"rnn." + k: v for k, v in rnn.state_dict().items()}), E,
     r"missing \['bias_hh_l0', .*unexpected \['rnn\.bias_hh_l0'"),
    ("RNN.load_state_dict", "wrong shape",
     lambda: rnn.load_state_dict({**rnn.state_dict(), "weight_hh_l0": np.ones((4, 5))}), E,
     r"state_dict\['weight_hh_l0'\] must have shape \(4, 4\); got \(4, 5\)"),
    ("RNN.load_state_dict", "a transposed weight",
     lambda: rnn.load_state_dict({**rnn.state_dict(), "weight_ih_l0": np.ones((3, 4))}), E,
     r"state_dict\['weight_ih_l0'\] must have shape \(4, 3\); got \(3, 4\)"),
    ("RNN.load_state_dict", "complex values",
     lambda: rnn.load_state_dict({**rnn.state_dict(), "bias_ih_l0": np.ones(4, complex)}), T_,
     r"state_dict\['bias_ih_l0'\] must be real numbers; got dtype complex128"),
    ("RNN.load_state_dict", "not a mapping", lambda: rnn.load_state_dict([1, 2]), T_,
     r"state_dict must be a mapping; got list"),
    # ---- functional.forward / functional.backward
    ("functional.forward", "params not a mapping", lambda: F.forward(x, [1]), T_,
     r"params must be a mapping of parameter names to arrays; got list"),
    ("functional.forward", "unknown key", lambda: F.forward(x, _with("bogus", 1)), E,
     r"params has an unexpected key 'bogus'; expected keys like 'weight_ih_l0'"),
    ("functional.forward", "missing weight_hh_l0",
     lambda: F.forward(x, {"weight_ih_l0": params["weight_ih_l0"]}), E,
     r"params must hold at least 'weight_ih_l0' and 'weight_hh_l0'; got keys "
     r"\['weight_ih_l0'\]"),
    ("functional.forward", "a missing reverse bias",
     lambda: F.forward(x, _without("bias_hh_l1_reverse")), E,
     r"params keys do not describe one RNN \(num_layers=2, bidirectional=True, bias=True\): "
     r"missing \['bias_hh_l1_reverse'\], unexpected \[\]"),
    ("functional.forward", "weight_hh_l1 of wrong shape",
     lambda: F.forward(x, _with("weight_hh_l1", np.ones((4, 5), f32))), E,
     r"params\['weight_hh_l1'\] must have shape \(4, 4\) for input_size=3, hidden_size=4; "
     r"got \(4, 5\)"),
    ("functional.forward", "weight_ih_l1 sized for one direction",
     lambda: F.forward(x, _with("weight_ih_l1", np.ones((4, 4), f32))), E,
     r"params\['weight_ih_l1'\] must have shape \(4, 8\) .*; got \(4, 4\)"),
    ("functional.forward", "bias of shape (4, 1)",
     lambda: F.forward(x, _with("bias_ih_l0", np.ones((4, 1), f32))), E,
     r"params\['bias_ih_l0'\] must have shape \(4,\) .*; got \(4, 1\)"),
    ("functional.forward", "weight_ih_l0 1-D",
     lambda: F.forward(x, _with("weight_ih_l0", np.ones(4, f32))), E,
     r"params\['weight_ih_l0'\] must have shape \(hidden_size, input_size\); got \(4,\)"),
    ("functional.forward", "hidden size 0",
     lambda: F.forward(x, {"weight_ih_l0": np.ones((0, 3), f32),
                           "weight_hh_l0": np.ones((0, 0), f32)}), E,
     r"params\['weight_ih_l0'\] must have at least one row .*; got shape \(0, 3\)"),
    ("functional.forward", "mixed dtypes",
     lambda: F.forward(x, _with("weight_hh_l0", params["weight_hh_l0"].astype(np.float64))),
     T_, r"all parameters must share one dtype; params\['weight_hh_l0'\] is float64 but "
         r"params\['weight_ih_l0'\] is float32"),
    ("functional.forward", "integer weights",
     lambda: F.forward(x, _with("weight_hh_l0", np.ones((4, 4), np.int64))), T_,
     r"params\['weight_hh_l0'\] must be float32 or float64; got dtype int64"),
    ("functional.forward", "nonlinearity 'sigmoid'",
     lambda: F.forward(x, params, nonlinearity="sigmoid"), E,
     r"nonlinearity must be 'tanh' or 'relu'; got 'sigmoid'"),
    ("functional.forward", "backend 'torch'", lambda: F.forward(x, params, backend="torch"), E,
     r"backend must be one of \(.*\) or None; got 'torch'"),
    ("functional.forward", "batch_first x with 4 features",
     lambda: F.forward(np.ones((2, 5, 4), f32), params, batch_first=True), E,
     r"x must have 3 features .*; got shape \(2, 5, 4\)"),
    ("functional.backward", "record not from forward", lambda: F.backward({}), T_,
     r"record must be the Record returned by forward; got dict"),
    ("functional.backward", "dy of wrong shape",
     lambda: F.backward(_record(), np.ones((5, 2, 4), f32)), E,
     r"dy must have the shape of the forward output \(5, 2, 8\); got \(5, 2, 4\)"),
    ("functional.backward", "dh_n unbatched for a batched record",
     lambda: F.backward(_record(), None, np.ones((4, 4), f32)), E,
     r"dh_n must have shape \(4, 2, 4\) .*; got \(4, 4\)"),
    # ---- threads
    ("set_num_threads", "0 threads", lambda: rnncore.set_num_threads(0), E,
     r"n must be a positive integer or None; got 0"),
    ("set_num_threads", "2.0 threads", lambda: rnncore.set_num_threads(2.0), E,
     r"n must be a positive integer or None; got 2\.0"),
]


# ---- the gated cells: rnncore.LSTM, rnncore.GRU and functional with cell=
lstm = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
lstm_proj = rnncore.LSTM(3, 4, proj_size=2, seed=0)
gru = rnncore.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
lstm_h0 = np.zeros((4, 2, 4), f32)

GATED_CASES = [
    ("LSTM(...)", "proj_size 4 = hidden_size", lambda: rnncore.LSTM(3, 4, proj_size=4), E,
     r"proj_size must be smaller than hidden_size \(4\); got 4"),
    ("LSTM(...)", "proj_size -1", lambda: rnncore.LSTM(3, 4, proj_size=-1), E,
     r"proj_size must be >= 0; got -1"),
    ("LSTM(...)", "proj_size 1.5", lambda: rnncore.LSTM(3, 4, proj_size=1.5), T_,
     r"proj_size must be an integer; got float"),
    ("GRU(...)", "hidden_size 0", lambda: rnncore.GRU(3, 0), E,
     r"hidden_size must be >= 1; got 0"),
    ("LSTM.forward", "h0 alone, not (h0, c0)", lambda: lstm(x, lstm_h0), T_,
     r"h0 of an LSTM must be a pair \(h0, c0\); got ndarray"),
    ("LSTM.forward", "c0 of the wrong shape", lambda: lstm(x, (lstm_h0, np.zeros((4, 2, 3),
                                                                             f32))), E,
     r"c0 must have shape \(4, 2, 4\) for num_layers=2, bidirectional=True, batch=2, "
     r"hidden_size=4; got \(4, 2, 3\)"),
    ("LSTM.forward", "h0 hidden_size wide with proj_size=2",
     lambda: lstm_proj(x, (np.zeros((1, 2, 4), f32), np.zeros((1, 2, 4), f32))), E,
     r"h0 must have shape \(1, 2, 2\) for num_layers=1, bidirectional=False, batch=2, "
     r"proj_size=2; got \(1, 2, 4\)"),
    ("LSTM.backward", "dh_n alone, not (dh_n, dc_n)",
     after_forward(lambda: lstm.backward(None, lstm_h0), lstm), T_,
     r"dh_n of an LSTM must be a pair \(dh_n, dc_n\); got ndarray"),
    ("LSTM.backward", "dc_n of the wrong shape",
     after_forward(lambda: lstm.backward(None, (None, np.zeros((4, 2, 5), f32))), lstm), E,
     r"dc_n must have shape \(4, 2, 4\) .*; got \(4, 2, 5\)"),
    ("GRU.forward", "x with 4 features", lambda: gru(np.ones((5, 2, 4), f32)), E,
     r"x must have 3 features in its last axis .*; got shape \(5, 2, 4\)"),
    ("GRU.forward", "float64 h0", lambda: gru(x, np.zeros((4, 2, 4))), T_,
     r"h0 has dtype float64 but the weights are float32; they must match"),
    ("GRU.load_state_dict", "an LSTM's state_dict", lambda: gru.load_state_dict(
        lstm.state_dict()), E, r"state_dict\['weight_ih_l0'\] must have shape \(12, 3\); "
                               r"got \(16, 3\)"),
    ("functional.forward", "cell 'rnn2'", lambda: F.forward(x, lstm.params, cell="rnn2"), E,
     r"cell must be one of \('rnn', 'lstm', 'gru'\); got 'rnn2'"),
    ("functional.forward", "an LSTM's params as a GRU's",
     lambda: F.forward(x, lstm.params, cell="gru"), E,
     r"params\['weight_ih_l0'\] must have a positive multiple of 3 rows \(3\*hidden_size\)"
     r" \(hidden_size >= 1\); got shape \(16, 3\)"),
    ("functional.forward", "an RNN's params as an LSTM's (H=4: 4 rows = one unit)",
     lambda: F.forward(x, params, cell="lstm"), E,
     r"params\['weight_hh_l0'\] must have shape \(4, 1\) for input_size=3, "
     r"hidden_size=1; got \(4, 4\)"),
    ("functional.forward", "nonlinearity 'relu' for an LSTM",
     lambda: F.forward(x, lstm.params, cell="lstm", nonlinearity="relu"), E,
     r"nonlinearity is an option of the Elman RNN; the lstm cell takes only 'tanh', "
     r"got 'relu'"),
    ("functional.param_shapes", "proj_size for a GRU",
     lambda: F.param_shapes(3, 4, cell="gru", proj_size=2), E,
     r"proj_size is an LSTM option; got proj_size=2 for cell='gru'"),
]


# ---- streaming, merge modes and checkpointing
# Streams are opened on unidirectional networks with L=2, K=3, H=4, float32, B=2.
uni_rnn = rnncore.RNN(3, 4, num_layers=2, seed=0)
uni_lstm = rnncore.LSTM(3, 4, num_layers=2, seed=0)
uni_gru = rnncore.GRU(3, 4, num_layers=2, seed=0)
uni_bf = rnncore.RNN(3, 4, batch_first=True, seed=0)
h0_u = np.zeros((2, 2, 4), f32)
MERGE_MODES = r"\('concat', 'sum', 'mean', 'mul'\)"
CHECKPOINT = r"checkpoint must be 0, a positive int or 'auto'; got "
INDEX = r"index must be None, an int, a sequence of ints or a bool array of shape \(2,\)"

STREAM_CASES = [
    # ---- functional.forward's merge_mode, checkpoint and deterministic
    ("functional.forward", "merge_mode 'avg'",
     lambda: F.forward(x, params, merge_mode="avg"), E,
     rf"merge_mode must be one of {MERGE_MODES}; got 'avg'"),
    ("functional.forward", "merge_mode 'SUM' (case matters)",
     lambda: F.forward(x, params, merge_mode="SUM"), E,
     rf"merge_mode must be one of {MERGE_MODES}; got 'SUM'"),
    ("functional.forward", "merge_mode None", lambda: F.forward(x, params, merge_mode=None),
     E, rf"merge_mode must be one of {MERGE_MODES}; got None"),
    ("functional.forward", "checkpoint -1", lambda: F.forward(x, params, checkpoint=-1), E,
     CHECKPOINT + r"-1$"),
    ("functional.forward", "checkpoint 'sqrt'",
     lambda: F.forward(x, params, checkpoint="sqrt"), E, CHECKPOINT + r"'sqrt'$"),
    ("functional.forward", "checkpoint 2.5", lambda: F.forward(x, params, checkpoint=2.5),
     T_, CHECKPOINT + r"float$"),
    ("functional.forward", "checkpoint True", lambda: F.forward(x, params, checkpoint=True),
     T_, CHECKPOINT + r"bool$"),
    ("functional.forward", "checkpoint None", lambda: F.forward(x, params, checkpoint=None),
     T_, CHECKPOINT + r"NoneType$"),
    ("functional.forward", "deterministic 'yes'",
     lambda: F.forward(x, params, deterministic="yes"), T_,
     r"deterministic must be True or False; got 'yes'"),
    ("functional.forward", "deterministic 1", lambda: F.forward(x, params, deterministic=1),
     T_, r"deterministic must be True or False; got 1"),
    # ---- the constructors' merge_mode and checkpoint
    ("RNN(...)", "merge_mode 'avg'",
     lambda: rnncore.RNN(3, 4, bidirectional=True, merge_mode="avg"), E,
     rf"merge_mode must be one of {MERGE_MODES}; got 'avg'"),
    ("LSTM(...)", "merge_mode None", lambda: rnncore.LSTM(3, 4, merge_mode=None), E,
     rf"merge_mode must be one of {MERGE_MODES}; got None"),
    ("GRU(...)", "merge_mode 'max'", lambda: rnncore.GRU(3, 4, merge_mode="max"), E,
     rf"merge_mode must be one of {MERGE_MODES}; got 'max'"),
    ("RNN(...)", "checkpoint -1", lambda: rnncore.RNN(3, 4, checkpoint=-1), E,
     CHECKPOINT + r"-1$"),
    ("LSTM(...)", "checkpoint 1.5", lambda: rnncore.LSTM(3, 4, checkpoint=1.5), T_,
     CHECKPOINT + r"float$"),
    ("GRU(...)", "checkpoint 'Auto' (case matters)",
     lambda: rnncore.GRU(3, 4, checkpoint="Auto"), E, CHECKPOINT + r"'Auto'$"),
    # ---- opening a stream
    ("RNN.stream", "a bidirectional RNN", lambda: rnn.stream(), E,
     r"stream\(\) needs a unidirectional model: .*; got RNN with bidirectional=True"),
    ("LSTM.stream", "a bidirectional LSTM", lambda: lstm.stream(), E,
     r"stream\(\) needs a unidirectional model: .*; got LSTM with bidirectional=True"),
    ("GRU.stream", "a bidirectional GRU", lambda: gru.stream(), E,
     r"stream\(\) needs a unidirectional model: .*; got GRU with bidirectional=True"),
    ("RNN.stream", "batch_size 0", lambda: uni_rnn.stream(0), E,
     r"batch_size must be >= 1; got 0"),
    ("LSTM.stream", "batch_size -1", lambda: uni_lstm.stream(-1), E,
     r"batch_size must be >= 1; got -1"),
    ("GRU.stream", "batch_size 2.0", lambda: uni_gru.stream(2.0), T_,
     r"batch_size must be an integer; got float"),
    ("RNN.stream", "batch_size True", lambda: uni_rnn.stream(True), T_,
     r"batch_size must be an integer; got bool"),
    ("RNN.stream", "batch_size None", lambda: uni_rnn.stream(None), T_,
     r"batch_size must be an integer; got NoneType"),
    ("RNN.stream", "h0 with 1 layer, 2 expected",
     lambda: uni_rnn.stream(2, np.zeros((1, 2, 4), f32)), E,
     r"h0 must have shape \(2, 2, 4\) for num_layers=2, bidirectional=False, batch=2, "
     r"hidden_size=4; got \(1, 2, 4\)"),
    ("RNN.stream", "h0 of batch 3 for batch_size 2",
     lambda: uni_rnn.stream(2, np.zeros((2, 3, 4), f32)), E,
     r"h0 must have shape \(2, 2, 4\) .*batch=2.*; got \(2, 3, 4\)"),
    ("RNN.stream", "h0 unbatched for batch_size 2",
     lambda: uni_rnn.stream(2, np.zeros((2, 4), f32)), E,
     r"h0 must have shape \(2, 2, 4\) .*; got \(2, 4\)"),
    ("RNN.stream", "h0 float64", lambda: uni_rnn.stream(2, np.zeros((2, 2, 4))), T_,
     r"h0 has dtype float64 but the weights are float32; they must match"),
    ("GRU.stream", "h0 int64", lambda: uni_gru.stream(2, np.zeros((2, 2, 4), np.int64)), T_,
     r"h0 must be float32 or float64; got dtype int64"),
    ("LSTM.stream", "h0 alone, not (h0, c0)", lambda: uni_lstm.stream(2, h0_u), T_,
     r"h0 of an LSTM must be a pair \(h0, c0\); got ndarray"),
    ("LSTM.stream", "a triple (h0, c0, c0)", lambda: uni_lstm.stream(2, (h0_u,) * 3), T_,
     r"h0 of an LSTM must be a pair \(h0, c0\); got tuple"),
    ("LSTM.stream", "c0 of the wrong shape",
     lambda: uni_lstm.stream(2, (h0_u, np.zeros((2, 2, 3), f32))), E,
     r"c0 must have shape \(2, 2, 4\) for num_layers=2, bidirectional=False, batch=2, "
     r"hidden_size=4; got \(2, 2, 3\)"),
    ("LSTM.stream", "h0 hidden_size wide with proj_size=2",
     lambda: lstm_proj.stream(2, (np.zeros((1, 2, 4), f32), np.zeros((1, 2, 4), f32))), E,
     r"h0 must have shape \(1, 2, 2\) for num_layers=1, bidirectional=False, batch=2, "
     r"proj_size=2; got \(1, 2, 4\)"),
    # ---- a stream's calls
    ("Stream.step", "x_t with 4 features, input_size 3",
     lambda: uni_rnn.stream(2).step(np.zeros((2, 4), f32)), E,
     r"x_t must have shape \(2, 3\) for batch_size=2, input_size=3; got \(2, 4\)"),
    ("Stream.step", "x_t of batch 3 for batch_size 2",
     lambda: uni_lstm.stream(2).step(np.zeros((3, 3), f32)), E,
     r"x_t must have shape \(2, 3\) for batch_size=2, input_size=3; got \(3, 3\)"),
    ("Stream.step", "x_t unbatched for batch_size 2",
     lambda: uni_gru.stream(2).step(np.zeros(3, f32)), E,
     r"x_t must have shape \(2, 3\) for batch_size=2, input_size=3; got \(3,\)"),
    ("Stream.step", "x_t of a whole chunk (T, B, K)",
     lambda: uni_rnn.stream(2).step(np.zeros((1, 2, 3), f32)), E,
     r"x_t must have shape \(2, 3\) .*; got \(1, 2, 3\)"),
    ("Stream.step", "x_t of 4 features for batch_size 1",
     lambda: uni_rnn.stream(1).step(np.zeros(4, f32)), E,
     r"x_t must have shape \(1, 3\) or \(3,\) for batch_size=1, input_size=3; got \(4,\)"),
    ("Stream.step", "x_t float64", lambda: uni_rnn.stream(2).step(np.zeros((2, 3))), T_,
     r"x_t has dtype float64 but the stream's weights are float32; they must match"),
    ("Stream.step", "x_t int64",
     lambda: uni_rnn.stream(2).step(np.zeros((2, 3), np.int64)), T_,
     r"x_t must hold floats \(float32, the weights' dtype\); got dtype int64"),
    ("Stream.step", "x_t complex128",
     lambda: uni_rnn.stream(2).step(np.zeros((2, 3), complex)), T_,
     r"x_t must hold floats \(float32, .*\); got dtype complex128"),
    ("Stream.step", "x_t None", lambda: uni_rnn.stream(2).step(None), T_,
     r"x_t must hold floats \(float32, .*\); got dtype object"),
    ("Stream.run", "x_chunk with 4 features",
     lambda: uni_rnn.stream(2).run(np.zeros((5, 2, 4), f32)), E,
     r"x_chunk must have shape \(T', B, K\) = \(T', 2, 3\) for batch_size=2, "
     r"input_size=3; got \(5, 2, 4\)"),
    ("Stream.run", "x_chunk of batch 3 for batch_size 2",
     lambda: uni_lstm.stream(2).run(np.zeros((5, 3, 3), f32)), E,
     r"x_chunk must have shape \(T', B, K\) = \(T', 2, 3\) .*; got \(5, 3, 3\)"),
    ("Stream.run", "x_chunk (T', K) for batch_size 2",
     lambda: uni_gru.stream(2).run(np.zeros((5, 3), f32)), E,
     r"x_chunk must have shape \(T', B, K\) = \(T', 2, 3\) .*; got \(5, 3\)"),
    ("Stream.run", "x_chunk time-major, batch_first=True",
     lambda: uni_bf.stream(2).run(np.zeros((5, 2, 3), f32)), E,
     r"x_chunk must have shape \(B, T', K\) = \(2, T', 3\) for batch_size=2, "
     r"input_size=3, batch_first=True; got \(5, 2, 3\)"),
    ("Stream.run", "x_chunk of ndim 4 for batch_size 1",
     lambda: uni_rnn.stream(1).run(np.zeros((5, 1, 3, 1), f32)), E,
     r"x_chunk must have shape \(T', B, K\) = \(T', 1, 3\) or \(T', K\) = \(T', 3\) for "
     r"batch_size=1, input_size=3; got \(5, 1, 3, 1\)"),
    ("Stream.run", "x_chunk float64", lambda: uni_rnn.stream(2).run(np.zeros((5, 2, 3))), T_,
     r"x_chunk has dtype float64 but the stream's weights are float32; they must match"),
    ("Stream.run", "x_chunk int64",
     lambda: uni_rnn.stream(2).run(np.zeros((5, 2, 3), np.int64)), T_,
     r"x_chunk must hold floats \(float32, the weights' dtype\); got dtype int64"),
    ("Stream.reset", "index 2 for batch_size 2", lambda: uni_rnn.stream(2).reset(2), E,
     r"index must lie in \[0, 2\) for batch_size=2; got 2"),
    ("Stream.reset", "index -1", lambda: uni_lstm.stream(2).reset(-1), E,
     r"index must lie in \[0, 2\) for batch_size=2; got -1"),
    ("Stream.reset", "index [0, 5]", lambda: uni_gru.stream(2).reset([0, 5]), E,
     r"index must lie in \[0, 2\) for batch_size=2; got 5"),
    ("Stream.reset", "index np.int64(2)", lambda: uni_rnn.stream(2).reset(np.int64(2)), E,
     r"index must lie in \[0, 2\) for batch_size=2; got 2"),
    ("Stream.reset", "a bool mask of shape (3,)",
     lambda: uni_rnn.stream(2).reset(np.array([True, False, True])), E,
     INDEX + r": a bool index must have shape \(2,\) for batch_size=2; got \(3,\)"),
    ("Stream.reset", "index 1.0", lambda: uni_rnn.stream(2).reset(1.0), T_,
     INDEX + r"; got 1\.0"),
    ("Stream.reset", "index '0'", lambda: uni_rnn.stream(2).reset("0"), T_,
     INDEX + r"; got '0'"),
    ("Stream.reset", "index True", lambda: uni_rnn.stream(2).reset(True), T_,
     INDEX + r"; got True"),
    ("Stream.reset", "index 2**70", lambda: uni_rnn.stream(2).reset(2 ** 70), E,
     r"index must lie in \[0, 2\) for batch_size=2; got 1180591620717411303424"),
    ("Stream.reset", "bools and ints mixed [True, 0]",
     lambda: uni_rnn.stream(2).reset([True, 0]), T_,
     r"index must be None, an int, .*not bools and ints mixed; got \[True, 0\]"),
    ("Stream.step", "a ragged list", lambda: uni_rnn.stream(2).step([[1.0], [1.0, 2.0]]),
     E, r"x_t must be an array of shape \(2, 3\); got a list NumPy cannot read as one"),
    ("Stream.run", "a ragged list",
     lambda: uni_rnn.stream(2).run([[[1.0, 2.0, 3.0]], [[1.0]]]), E,
     r"x_chunk must be an array of \(T', B, K\) or \(B, T', K\) values; got a list "
     r"NumPy cannot read as one"),
    ("functional.forward", "merge_mode an array",
     lambda: F.forward(x, params, merge_mode=np.array(["sum", "mul"])), E,
     rf"merge_mode must be one of {MERGE_MODES}; got array"),
    ("rnncore.RNN", "merge_mode an array",
     lambda: rnncore.RNN(3, 4, merge_mode=np.array(["sum", "mul"])), E,
     rf"merge_mode must be one of {MERGE_MODES}; got array"),
    ("Stream.reset", "index a slice", lambda: uni_rnn.stream(2).reset(slice(0, 1)), T_,
     INDEX + r"; got slice\(0, 1, None\)"),
    ("Stream.reset", "index nested [[0], [1]]", lambda: uni_rnn.stream(2).reset([[0], [1]]),
     T_, INDEX + r"; got \[\[0\], \[1\]\]"),
]


# ---- the model: rnncore.RNNModel
def _model(**kw):
    return rnncore.RNNModel(5, 4, **{"vocab_size": 7, "seed": 0, **kw})


tokens = np.zeros((6, 2), np.int64)
dense_model = rnncore.RNNModel(5, 4, input_size=3, seed=0)


def _checkpoint(model=None, **config):
    """A checkpoint of ``model`` (``_model()`` if None) in memory, its __config__ changed
    by ``config``."""
    import io, json
    model = _model() if model is None else model
    buffer = io.BytesIO()
    np.savez(buffer, __config__=np.array(json.dumps({**model.config(), **config})),
             **model.params)
    buffer.seek(0)
    return buffer


MODEL_CASES = [
    ("RNNModel(...)", "output_size 0", lambda: rnncore.RNNModel(0, 4, vocab_size=7), E,
     r"output_size must be >= 1; got 0"),
    ("RNNModel(...)", "hidden_size -2", lambda: rnncore.RNNModel(5, -2, vocab_size=7), E,
     r"hidden_size must be >= 1; got -2"),
    ("RNNModel(...)", "vocab_size 0", lambda: rnncore.RNNModel(5, 4, vocab_size=0), E,
     r"vocab_size must be >= 1; got 0"),
    ("RNNModel(...)", "input_size 2.5", lambda: rnncore.RNNModel(5, 4, input_size=2.5), T_,
     r"input_size must be an integer; got float"),
    ("RNNModel(...)", "both vocab_size and input_size",
     lambda: rnncore.RNNModel(5, 4, vocab_size=7, input_size=3), E,
     r"give exactly one of vocab_size .* and input_size .*; got vocab_size=7, input_size=3"),
    ("RNNModel(...)", "task 'regression'", lambda: _model(task="regression"), E,
     r"task must be one of .*; got 'regression'"),
    ("RNNModel(...)", "num_layers 0", lambda: _model(num_layers=0), E,
     r"num_layers must be >= 1; got 0"),
    ("RNNModel(...)", "dtype int32", lambda: _model(dtype=np.int32), T_,
     r"dtype must be float32 or float64; got int32"),
    ("RNNModel(...)", "seed 'x'", lambda: _model(seed="x"), T_,
     r"seed must be a non-negative int, a np.random.Generator or None; got 'x'"),
    ("RNNModel.forward", "float tokens", lambda: _model().forward(np.zeros((6, 2))), T_,
     r"inputs must be integer token ids .*; got dtype float64"),
    ("RNNModel.forward", "token out of range", lambda: _model().forward(np.full((6, 2), 7)), E,
     r"inputs must lie in \[0, 7\); got values from 7 to 7"),
    ("RNNModel.forward", "negative token", lambda: _model().forward(np.full((6, 2), -1)), E,
     r"inputs must lie in \[0, 7\); got values from -1 to -1"),
    ("RNNModel.forward", "a ragged list of tokens", lambda: _model().forward([[1], [1, 2]]),
     T_, r"inputs must be an array; got list"),
    ("RNNModel.forward", "tokens of ndim 3", lambda: _model().forward(np.zeros((6, 2, 1), int)), E,
     r"inputs must have shape \(T, B\); got \(6, 2, 1\)"),
    ("RNNModel.forward", "dense input of ndim 2", lambda: dense_model.forward(np.ones((6, 3), f32)), E,
     r"inputs must have shape \(T, B, 3\); got \(6, 3\)"),
    ("RNNModel.forward", "dense input float64", lambda: dense_model.forward(np.ones((6, 2, 3))), T_,
     r"x has dtype float64 but the weights are float32"),
    ("RNNModel.forward", "lengths 0", lambda: _model().forward(tokens, lengths=[0, 6]), E,
     r"lengths must lie in \[1, 6\] .*; got values from 0 to 6"),
    ("RNNModel.forward", "lengths with NaN", lambda: _model().forward(tokens, lengths=[np.nan, 6]), E,
     r"lengths must hold whole numbers"),
    ("RNNModel.forward", "h0 of wrong shape",
     lambda: _model().forward(tokens, h0=np.zeros((2, 2, 4), f32)), E,
     r"h0 must have shape \(1, 2, 4\) .*; got \(2, 2, 4\)"),
    ("RNNModel.loss", "targets float", lambda: _model().loss(tokens, np.zeros((6, 2))), T_,
     r"targets must be integer classes; got dtype float64"),
    ("RNNModel.loss", "targets of wrong shape",
     lambda: _model().loss(tokens, np.zeros((6, 3), int)), E,
     r"targets must have shape \(6, 2\) for task='labeling'; got \(6, 3\)"),
    ("RNNModel.loss", "classification targets of shape (T, B)",
     lambda: _model(task="classification").loss(tokens, np.zeros((6, 2), int)), E,
     r"targets must have shape \(2,\) for task='classification'; got \(6, 2\)"),
    ("RNNModel.loss", "target class out of range",
     lambda: _model().loss(tokens, np.full((6, 2), 5)), E,
     r"targets must lie in \[0, 5\).*"),
    ("RNNModel.loss", "uint8 target class out of range",
     lambda: _model().loss(tokens, np.full((6, 2), 255, np.uint8)), E,
     r"targets must lie in \[0, 5\) or equal ignore_index=-100; got values from 255 to 255"),
    ("RNNModel.save", "path an int", lambda: _model().save(3), T_,
     r"path must be a str, a path-like or a writable binary file; got int"),
    ("RNNModel.load", "a __config__ key unknown",
     lambda: rnncore.RNNModel.load(_checkpoint(dropout=0.5)), E,
     r"__config__ keys do not match RNNModel's arguments: missing \[\], unknown \['dropout'\]"),
    ("RNNModel.load", "__config__ hidden_size 3000 with arrays of 4",
     lambda: rnncore.RNNModel.load(_checkpoint(hidden_size=3000)), E,
     r"weight_ih_l0 must have shape \(3000, 4\) by its __config__; got \(4, 4\)"),
    # ---- the cell, proj_size and merge_mode arguments
    ("RNNModel(...)", "cell 'transformer'", lambda: _model(cell="transformer"), E,
     r"cell must be one of \('rnn', 'lstm', 'gru'\); got 'transformer'"),
    ("RNNModel(...)", "cell 'LSTM' (case matters)", lambda: _model(cell="LSTM"), E,
     r"cell must be one of \('rnn', 'lstm', 'gru'\); got 'LSTM'"),
    ("RNNModel(...)", "cell None", lambda: _model(cell=None), E,
     r"cell must be one of \('rnn', 'lstm', 'gru'\); got None"),
    ("RNNModel(...)", "nonlinearity 'relu' for an LSTM",
     lambda: _model(cell="lstm", nonlinearity="relu"), E,
     r"nonlinearity is an option of the Elman RNN; cell='lstm' takes only 'tanh', "
     r"got 'relu'"),
    ("RNNModel(...)", "proj_size 2 for the Elman RNN", lambda: _model(proj_size=2), E,
     r"proj_size is an LSTM option; got proj_size=2 for cell='rnn'"),
    ("RNNModel(...)", "proj_size 2 for a GRU", lambda: _model(cell="gru", proj_size=2), E,
     r"proj_size is an LSTM option; got proj_size=2 for cell='gru'"),
    ("RNNModel(...)", "proj_size 4 = hidden_size for an LSTM",
     lambda: _model(cell="lstm", proj_size=4), E,
     r"proj_size must be smaller than hidden_size \(4\); got 4"),
    ("RNNModel(...)", "proj_size -1 for an LSTM", lambda: _model(cell="lstm", proj_size=-1),
     E, r"proj_size must be >= 0; got -1"),
    ("RNNModel(...)", "proj_size 1.5 for an LSTM",
     lambda: _model(cell="lstm", proj_size=1.5), T_,
     r"proj_size must be an integer; got float"),
    ("RNNModel(...)", "merge_mode 'avg'",
     lambda: _model(bidirectional=True, merge_mode="avg"), E,
     r"merge_mode must be one of \('concat', 'sum', 'mean', 'mul'\); got 'avg'"),
    ("RNNModel(...)", "merge_mode 'sum' for task='classification'",
     lambda: _model(task="classification", bidirectional=True, merge_mode="sum"), E,
     r"task='classification' with bidirectional=True .* needs merge_mode='concat'; got "
     r"merge_mode='sum'"),
    ("RNNModel.load", "__config__ cell 'transformer'",
     lambda: rnncore.RNNModel.load(_checkpoint(cell="transformer")), E,
     r"__config__\['cell'\] must be one of \('rnn', 'lstm', 'gru'\); got 'transformer'"),
    ("RNNModel.load", "__config__ cell 'lstm' with an Elman RNN's arrays",
     lambda: rnncore.RNNModel.load(_checkpoint(cell="lstm")), E,
     r"weight_ih_l0 must have shape \(16, 4\) by its __config__; got \(4, 4\)"),
    ("RNNModel.load", "__config__ nonlinearity 'relu' for an LSTM",
     lambda: rnncore.RNNModel.load(_checkpoint(cell="lstm", nonlinearity="relu")), E,
     r"__config__ gives nonlinearity='relu' for cell='lstm', which takes only 'tanh'"),
    ("RNNModel.load", "__config__ proj_size -1",
     lambda: rnncore.RNNModel.load(_checkpoint(proj_size=-1)), E,
     r"__config__\['proj_size'\] must be a non-negative integer; got -1"),
    ("RNNModel.load", "__config__ proj_size 2.5",
     lambda: rnncore.RNNModel.load(_checkpoint(proj_size=2.5)), E,
     r"__config__\['proj_size'\] must be a non-negative integer; got 2\.5"),
    ("RNNModel.load", "__config__ proj_size 2 for the Elman RNN",
     lambda: rnncore.RNNModel.load(_checkpoint(proj_size=2)), E,
     r"__config__ gives proj_size=2; it must be 0, or smaller than hidden_size=4 for "
     r"cell='lstm'; got cell='rnn'"),
    ("RNNModel.load", "__config__ proj_size 4 = hidden_size for an LSTM",
     lambda: rnncore.RNNModel.load(_checkpoint(_model(cell="lstm"), proj_size=4)), E,
     r"__config__ gives proj_size=4; it must be 0, or smaller than hidden_size=4 for "
     r"cell='lstm'; got cell='lstm'"),
    ("RNNModel.load", "__config__ merge_mode 'avg'",
     lambda: rnncore.RNNModel.load(_checkpoint(merge_mode="avg")), E,
     r"__config__\['merge_mode'\] must be one of \('concat', 'sum', 'mean', 'mul'\); "
     r"got 'avg'"),
    ("RNNModel.load", "__config__ merge_mode null",
     lambda: rnncore.RNNModel.load(_checkpoint(merge_mode=None)), E,
     r"__config__\['merge_mode'\] must be one of \(.*\); got None"),
    ("RNNModel.load", "__config__ merge_mode 'sum' with a concatenating V",
     lambda: rnncore.RNNModel.load(_checkpoint(_model(bidirectional=True),
                                               merge_mode="sum")), E,
     r"V must have shape \(5, 4\) by its __config__; got \(5, 8\)"),
    ("RNNModel.load", "__config__ checkpoint -1",
     lambda: rnncore.RNNModel.load(_checkpoint(checkpoint=-1)), E,
     r"__config__\['checkpoint'\] must be 0, a positive integer or 'auto'; got -1"),
    ("RNNModel", "checkpoint 'sqrt'",
     lambda: rnncore.RNNModel(4, 5, vocab_size=7, checkpoint="sqrt"), E,
     r"checkpoint must be 0, a positive int or 'auto'; got 'sqrt'"),
    # ---- diagnostics on a model
    ("recurrent_regimes", "cell 'lstm'", lambda: rnncore.recurrent_regimes(cell="lstm"), E,
     r"recurrent_regimes sets the spectral radius of W_hh, .* so cell must be 'rnn'; "
     r"got 'lstm'"),
    ("recurrent_regimes", "cell 'gru'", lambda: rnncore.recurrent_regimes(cell="gru"), E,
     r"so cell must be 'rnn'; got 'gru'"),
    ("recurrent_regimes", "cell 'elman'", lambda: rnncore.recurrent_regimes(cell="elman"),
     E, r"cell must be one of \('rnn', 'lstm', 'gru'\); got 'elman'"),
    ("gradient_norms", "a bidirectional model with merge_mode 'sum'",
     lambda: rnncore.gradient_norms(_model(bidirectional=True, merge_mode="sum"), tokens,
                                    tokens % 5), E,
     r"gradient_norms .* needs merge_mode='concat' for a bidirectional model, got 'sum'"),
    ("gradient_norms", "an RNN, not an RNNModel",
     lambda: rnncore.gradient_norms(rnn, tokens, tokens), T_,
     r"model must be an rnncore.RNNModel; got RNN"),
    ("gradient_norms", "sequence 2 for a batch of 2",
     lambda: rnncore.gradient_norms(_model(), tokens, tokens % 5, sequence=2), E,
     r"sequence must be an integer in \[0, 2\) for a batch of 2; got 2"),
    ("RNNModel.load_params", "missing keys", lambda: _model().load_params({"V": 1}), E,
     r"params keys do not match this model: missing \[.*\], unexpected \[\]"),
    ("RNNModel.load_params", "V of wrong shape",
     lambda: _model().load_params({**_model().params, "V": np.ones((4, 5))}), E,
     r"params\['V'\] must have shape \(5, 4\); got \(4, 5\)"),
]

# ---- the optimisers: rnncore.optim
w = {"w": np.ones((2, 3), f32)}
OPTIM_CASES = [
    ("SGD(...)", "params not a mapping", lambda: rnncore.SGD([np.ones(3)]), T_,
     r"params must be a mapping of names to arrays; got list"),
    ("SGD(...)", "lr -1", lambda: rnncore.SGD(w, lr=-1), E, r"lr must be >= 0 and finite; got -1"),
    ("SGD(...)", "lr NaN", lambda: rnncore.SGD(w, lr=np.nan), E, r"lr must be .*; got nan"),
    ("SGD(...)", "lr '0.1'", lambda: rnncore.SGD(w, lr="0.1"), T_,
     r"lr must be a number; got str"),
    ("SGD(...)", "momentum -0.5", lambda: rnncore.SGD(w, momentum=-0.5), E,
     r"momentum must be >= 0 and finite; got -0.5"),
    ("Adam(...)", "beta 1.0", lambda: rnncore.Adam(w, betas=(1.0, 0.999)), E,
     r"must lie in \[0, 1\); got 1\.0"),
    ("Adam(...)", "betas of length 1", lambda: rnncore.Adam(w, betas=(0.9,)), E,
     r"betas must be a pair of floats in \[0, 1\); got \(0\.9,\)"),
    ("Adam(...)", "betas a string", lambda: rnncore.Adam(w, betas="ab"), T_,
     r"betas must be a pair of floats in \[0, 1\); got 'ab'"),
    ("Adam(...)", "eps -1e-8", lambda: rnncore.Adam(w, eps=-1e-8), E,
     r"eps must be .*; got -1e-08"),
    ("Adagrad(...)", "lr_decay -1", lambda: rnncore.Adagrad(w, lr_decay=-1), E,
     r"lr_decay must be >= 0 and finite; got -1"),
    ("SGD.step", "a missing gradient", lambda: rnncore.SGD(w).step({}), E,
     r"grads is missing \['w'\]"),
    ("SGD.step", "a gradient of wrong shape",
     lambda: rnncore.SGD(w).step({"w": np.ones((3, 2))}), E,
     r"grads\['w'\] must have shape \(2, 3\); got \(3, 2\)"),
    ("clip_grad_norm", "max_norm -1", lambda: rnncore.clip_grad_norm(dict(w), -1.0), E,
     r"max_norm must be .*; got -1"),
    ("clip_grad_norm", "max_norm NaN", lambda: rnncore.clip_grad_norm(dict(w), np.nan), E,
     r"max_norm must be >= 0 \(inf for no clipping\); got nan"),
    ("truncated_bptt", "clip_norm -1, at the call",
     lambda: rnncore.truncated_bptt(_model(), tokens, tokens, 2, clip_norm=-1.0), E,
     r"clip_norm must be >= 0 \(inf for no clipping\); got -1\.0"),
    ("truncated_bptt", "chunk 0, at the call",
     lambda: rnncore.truncated_bptt(_model(), tokens, tokens, 0), E,
     r"chunk must be a positive integer; got 0"),
    ("clip_grad_value", "clip_value -1", lambda: rnncore.clip_grad_value(dict(w), -1.0), E,
     r"clip_value must be .*; got -1"),
    ("truncated_bptt", "chunk 0",
     lambda: next(rnncore.truncated_bptt(_model(), tokens, tokens, 0)), E,
     r"chunk must be a positive integer; got 0"),
    ("truncated_bptt", "targets with fewer steps",
     lambda: next(rnncore.truncated_bptt(_model(), tokens, tokens[:3], 2)), E,
     r"targets must have 6 steps like inputs; got shape \(3, 2\)"),
]


def _ids(cases):
    return [f"{where}: {what}" for where, what, *_ in cases]


def _check(call, exc_type, pattern):
    with pytest.raises(exc_type) as info:
        call()
    assert type(info.value) is exc_type, f"raised {type(info.value).__name__}: {info.value}"
    assert re.search(pattern, str(info.value)), \
        f"message {str(info.value)!r} does not match {pattern!r}"


@pytest.mark.parametrize("where, what, call, exc_type, pattern", CASES, ids=_ids(CASES))
def test_core_entry_points_reject_bad_input(where, what, call, exc_type, pattern):
    _check(call, exc_type, pattern)


@pytest.mark.parametrize("where, what, call, exc_type, pattern", GATED_CASES,
                         ids=_ids(GATED_CASES))
def test_gated_cells_reject_bad_input(where, what, call, exc_type, pattern):
    _check(call, exc_type, pattern)


@pytest.mark.parametrize("where, what, call, exc_type, pattern", STREAM_CASES,
                         ids=_ids(STREAM_CASES))
def test_streaming_merge_modes_and_checkpointing_reject_bad_input(where, what, call,
                                                                  exc_type, pattern):
    if "stream" in where.lower():
        pytest.importorskip("rnncore._streaming")
    _check(call, exc_type, pattern)


@pytest.mark.parametrize("where, what, call, exc_type, pattern", MODEL_CASES,
                         ids=_ids(MODEL_CASES))
def test_model_rejects_bad_input(where, what, call, exc_type, pattern):
    _check(call, exc_type, pattern)


@pytest.mark.parametrize("where, what, call, exc_type, pattern", OPTIM_CASES,
                         ids=_ids(OPTIM_CASES))
def test_optimisers_reject_bad_input(where, what, call, exc_type, pattern):
    _check(call, exc_type, pattern)


@pytest.mark.parametrize("backend", rnncore.backends())
def test_a_rejected_call_leaves_the_rnn_usable(backend):
    """An error raised by validation leaves no half-updated state behind."""
    rnn = rnncore.RNN(3, 4, num_layers=2, bidirectional=True, seed=0, backend=backend)
    x = np.ones((5, 2, 3), np.float32)
    before = rnn.state_dict()
    y, h_n = rnn(x)
    with pytest.raises(ValueError):
        rnn.load_state_dict({**rnn.state_dict(), "weight_hh_l1": np.ones((4, 5))})
    for key, value in before.items():                    # not one array was written
        np.testing.assert_array_equal(rnn.params[key], value)
    with pytest.raises(ValueError):
        rnn(x, lengths=[0, 5])
    dx, dh0 = rnn.backward(np.ones_like(y))             # still the record of the good call
    np.testing.assert_array_equal(rnn(x)[0], y)
    assert dx.shape == x.shape and dh0.shape == h_n.shape


@pytest.mark.parametrize("lengths", [[5, 5], np.array([5, 5], np.int32),
                                     np.array([5, 5], np.uint8), np.array([5.0, 5.0]),
                                     (5, 5)], ids=["list", "int32", "uint8", "whole floats",
                                                   "tuple"])
def test_lengths_accept_any_whole_numbers(lengths):
    rnn = rnncore.RNN(3, 4, seed=0)
    x = np.ones((5, 2, 3), np.float32)
    np.testing.assert_array_equal(rnn(x, lengths=lengths)[0], rnn(x)[0])


def test_zero_batch_accepts_empty_lengths():
    rnn = rnncore.RNN(3, 4, seed=0)
    y, h_n = rnn(np.ones((5, 0, 3), np.float32), lengths=[])
    assert y.shape == (5, 0, 4) and h_n.shape == (1, 0, 4)




# ---- the torch adapter: a drop-in raises exactly what torch.nn.RNN raises
TORCH_CASES = {
    "input of ndim 1": lambda t, m: m(t.ones(5)),
    "input with 4 features, input_size 3": lambda t, m: m(t.ones(5, 2, 4)),
    "input float64, weights float32": lambda t, m: m(t.ones(5, 2, 3, dtype=t.float64)),
    "input int64": lambda t, m: m(t.ones(5, 2, 3, dtype=t.int64)),
    "hx with 1 layer-direction, 4 expected": lambda t, m: m(t.ones(5, 2, 3), t.zeros(1, 2, 4)),
    "hx of the wrong batch": lambda t, m: m(t.ones(5, 2, 3), t.zeros(4, 3, 4)),
    "unbatched input, batched hx": lambda t, m: m(t.ones(5, 3), t.zeros(4, 2, 4)),
    "hx float64": lambda t, m: m(t.ones(5, 2, 3), t.zeros(4, 2, 4, dtype=t.float64)),
    "hx not a tensor": lambda t, m: m(t.ones(5, 2, 3), np.zeros((4, 2, 4), f32)),
}


@pytest.mark.parametrize("what", list(TORCH_CASES))
def test_torch_dropin_raises_what_torch_raises(what, monkeypatch):
    torch = pytest.importorskip("torch")
    rnncore_torch = pytest.importorskip("rnncore.torch")
    entered = []                       # torch rejects these before rnncore is called
    forward = F.forward
    monkeypatch.setattr(F, "forward", lambda *a, **kw: entered.append(a) or forward(*a, **kw))
    stock = torch.nn.RNN(3, 4, num_layers=2, bidirectional=True)
    ours = rnncore_torch.RNN(3, 4, num_layers=2, bidirectional=True)
    ours.load_state_dict(stock.state_dict())
    assert_raises_as_stock(lambda m: TORCH_CASES[what](torch, m), ours, stock)
    assert not entered, "rnncore.functional.forward was called"


@pytest.mark.parametrize("kwargs", [dict(hidden_size=0), dict(num_layers=0),
                                    dict(nonlinearity="gelu"), dict(hidden_size=-1),
                                    dict(num_layers=1.5)],
                         ids=lambda kw: ", ".join(f"{k}={v!r}" for k, v in kw.items()))
def test_torch_dropin_constructor_raises_what_torch_raises(kwargs):
    torch = pytest.importorskip("torch")
    rnncore_torch = pytest.importorskip("rnncore.torch")
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    assert_raises_as_stock(lambda cls: cls(**args), rnncore_torch.RNN, torch.nn.RNN)


def test_torch_dropin_rejects_an_unknown_backend():
    pytest.importorskip("torch")
    rnncore_torch = pytest.importorskip("rnncore.torch")
    with pytest.raises(ValueError, match=r"backend must be one of .*; got 'cuda'"):
        rnncore_torch.RNN(3, 4, backend="cuda")
