"""The NumPy reference of the gated cells computes what torch.nn.LSTM / nn.GRU compute.

One layer, one direction: outputs, final states and every gradient (weights, biases,
x, h0, c0) against torch's autograd for the loss L = Σ y·dy + Σ h_n·dh_n (+ Σ c_n·dc_n)
with fixed random cotangents, and against central differences without torch. The
reverse direction is compared with the second direction of a bidirectional torch module.
"""
import numpy as np
import pytest

from rnncore.cells import gru, lstm
from rnncore.reference import input_grad

from conftest import assert_close

T, B, K, H = 6, 3, 4, 5
SPECS = {"lstm": ("lstm", False), "lstm-proj": ("lstm", True), "gru": ("gru", False)}
STATES = {"lstm": ("h0", "c0"), "gru": ("h0",)}
FINAL = {"h0": "h_n", "c0": "c_n"}
ROW_AXIS = {"x": 1, "y": 1, "h0": 0, "c0": 0, "h_n": 0, "c_n": 0}    # the batch axis
PARAMS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0")


def make_case(spec, rng, dtype, lengths=None, T=T, B=B, K=K, H=H):
    """Inputs by torch's names (and x, h0, c0), lengths, and the cotangents of the outputs."""
    cell, proj = SPECS[spec]
    G = 4 if cell == "lstm" else 3
    P = H - 2 if proj else 0
    hw = P or H                                    # the width of h
    shapes = {"weight_ih_l0": (G * H, K), "weight_hh_l0": (G * H, hw),
              "bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,), "x": (T, B, K), "h0": (B, hw)}
    if proj:
        shapes["weight_hr_l0"] = (P, H)
    if cell == "lstm":
        shapes["c0"] = (B, H)
    v = {k: 0.5 * rng.standard_normal(s) for k, s in shapes.items()}
    lengths = np.full(B, T, dtype=np.int64) if lengths is None else np.array(lengths, np.int64)
    pad = np.arange(T)[:, None] >= lengths         # (T, B): padded steps
    v["x"][pad] = 0
    ct = {"y": rng.standard_normal((T, B, hw)), "h_n": rng.standard_normal((B, hw))}
    ct["y"][pad] = 0
    if cell == "lstm":
        ct["c_n"] = rng.standard_normal((B, H))
    cast = {k: a.astype(dtype) for k, a in v.items()}
    return cast, lengths, {k: a.astype(dtype) for k, a in ct.items()}


def forward(spec, v, lengths, reverse):
    """The state sequences (hs, or hs and cs) and what backward needs besides them."""
    if SPECS[spec][0] == "lstm":
        hs, cs, gates = lstm.layer_forward(
            v["x"], v["weight_ih_l0"], v["weight_hh_l0"], v["bias_ih_l0"] + v["bias_hh_l0"],
            v.get("weight_hr_l0"), v["h0"], v["c0"], lengths, reverse)
        return (hs, cs), gates
    hs, saved = gru.layer_forward(v["x"], v["weight_ih_l0"], v["weight_hh_l0"],
                                  v["bias_ih_l0"], v["bias_hh_l0"], v["h0"], lengths, reverse)
    return (hs,), saved


def backward(spec, v, lengths, reverse, seqs, saved, ct):
    """The gradients of the inputs except x, and delta."""
    if SPECS[spec][0] == "lstm":
        dh0, dc0, dw_ih, dw_hh, db, dw_hr, delta = lstm.layer_backward(
            v["x"], v["weight_ih_l0"], v["weight_hh_l0"], v.get("weight_hr_l0"), *seqs,
            saved, ct["y"], ct["h_n"], ct["c_n"], lengths, reverse)
        grads = dict(zip(PARAMS, (dw_ih, dw_hh, db, db, dw_hr), strict=True), h0=dh0,
                     c0=dc0)
    else:
        dh0, dw_ih, dw_hh, db_ih, db_hh, delta = gru.layer_backward(
            v["x"], v["weight_ih_l0"], v["weight_hh_l0"], *seqs, saved, ct["y"], ct["h_n"],
            lengths, reverse)
        grads = dict(zip(PARAMS[:4], (dw_ih, dw_hh, db_ih, db_hh), strict=True), h0=dh0)
    return {k: g for k, g in grads.items() if g is not None}, delta


def outputs(spec, v, lengths, reverse):
    """y (T, B, ·) and the final states, read from the state sequences as a walker would."""
    seqs, saved = forward(spec, v, lengths, reverse)
    rows = np.arange(len(lengths))
    y = (seqs[0][:-1] if reverse else seqs[0][1:]).copy()
    y[np.arange(len(y))[:, None] >= lengths] = 0   # reverse: the slot of h_0 is no output
    outs = {"y": y}
    for name, s in zip(STATES[SPECS[spec][0]], seqs, strict=True):
        outs[FINAL[name]] = s[0] if reverse else s[lengths, rows]
    return outs, seqs, saved


def run_ours(spec, v, lengths, reverse, ct):
    """The reference's outputs and gradients, keyed as :func:`run_torch` keys them."""
    outs, seqs, saved = outputs(spec, v, lengths, reverse)
    grads, delta = backward(spec, v, lengths, reverse, seqs, saved, ct)
    grads["x"] = np.empty_like(v["x"])
    input_grad(delta, v["weight_ih_l0"], grads["x"], False)
    return outs, grads


def run_torch(spec, v, lengths, reverse, ct):
    """torch's outputs and gradients, in float64, of the last direction of a module that
    is bidirectional when ``reverse``."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    cell, proj = SPECS[spec]
    v = {k: a.astype(np.float64) for k, a in v.items()}
    ct = {k: torch.from_numpy(a.astype(np.float64)) for k, a in ct.items()}
    T_, _, K_ = v["x"].shape
    H_ = v["weight_hh_l0"].shape[0] // (4 if cell == "lstm" else 3)
    if cell == "lstm":
        P = v["weight_hr_l0"].shape[0] if proj else 0
        module = torch.nn.LSTM(K_, H_, proj_size=P, bidirectional=reverse, dtype=torch.float64)
    else:
        module = torch.nn.GRU(K_, H_, bidirectional=reverse, dtype=torch.float64)
    suffix = "_reverse" if reverse else ""
    params = {k: getattr(module, k + suffix) for k in PARAMS if k in v}
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.from_numpy(v[k]))
    # (D, B, ·): the forward direction of a bidirectional module starts from zeros, unused
    states = [torch.tensor(np.stack([np.zeros_like(v[s])] * reverse + [v[s]]),
                           requires_grad=True) for s in STATES[cell]]
    x = torch.tensor(v["x"], requires_grad=True)
    padded = bool((lengths < T_).any())
    inp = pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False) \
        if padded else x
    y, s_n = module(inp, tuple(states) if cell == "lstm" else states[0])
    if padded:
        y, _ = pad_packed_sequence(y, total_length=T_)
    s_n = s_n if cell == "lstm" else (s_n,)
    outs = {"y": y[..., -ct["y"].shape[2]:]}
    for name, s in zip(STATES[cell], s_n, strict=True):
        outs[FINAL[name]] = s[-1]
    sum(o.mul(ct[k]).sum() for k, o in outs.items()).backward()
    grads = {k: p.grad.numpy() for k, p in params.items()}
    grads.update({s: t.grad[-1].numpy() for s, t in zip(STATES[cell], states,
                                                        strict=True)}, x=x.grad.numpy())
    return {k: o.detach().numpy() for k, o in outs.items()}, grads


def compare(ours, theirs, rtol, dtype=np.float64):
    """The same outputs and gradients, ours in ``dtype``, within ``rtol`` norm-wise."""
    for got, want in zip(ours, theirs, strict=True):
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].dtype == dtype, f"{k} is {got[k].dtype}"
            assert_close(got[k], want[k], rtol, k)


SHAPES = {"full": (B, None), "lengths": (B, [T, 1, 4]), "B=1": (1, None)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("spec", SPECS)
def test_outputs_states_and_gradients_match_torch(rng, spec, reverse, shape):
    batch, lengths = SHAPES[shape]
    v, lengths, ct = make_case(spec, rng, np.float64, lengths, B=batch)
    compare(run_ours(spec, v, lengths, reverse, ct), run_torch(spec, v, lengths, reverse, ct),
            1e-9)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("spec", SPECS)
def test_float32_matches_torch(rng, spec, reverse):
    v, lengths, ct = make_case(spec, rng, np.float32, [T, 1, 4])
    compare(run_ours(spec, v, lengths, reverse, ct), run_torch(spec, v, lengths, reverse, ct),
            2e-4, np.float32)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("spec", SPECS)
def test_length_zero_row_passes_states_and_gradients_through(rng, spec, reverse):
    v, lengths, ct = make_case(spec, rng, np.float64, [T, 0, 2])
    outs, grads = run_ours(spec, v, lengths, reverse, ct)
    # torch refuses a length of 0: the other rows against torch, without that row
    keep = [0, 2]
    rows = {k: a.take(keep, ROW_AXIS[k]) if k in ROW_AXIS else a for k, a in v.items()}
    want = run_torch(spec, rows, lengths[keep], reverse,
                     {k: a.take(keep, ROW_AXIS[k]) for k, a in ct.items()})
    for got, wanted in zip((outs, grads), want, strict=True):
        for k in wanted:
            g = got[k].take(keep, ROW_AXIS[k]) if k in ROW_AXIS else got[k]
            assert_close(g, wanted[k], 1e-9, k)
    # the row of length 0 by hand: no output, h_n = h0, dh0 = dh_n, no ∂x
    assert not outs["y"][:, 1].any() and not grads["x"][:, 1].any()
    for s in STATES[SPECS[spec][0]]:
        np.testing.assert_array_equal(outs[FINAL[s]][1], v[s][1])
        np.testing.assert_array_equal(grads[s][1], ct[FINAL[s]][1])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("spec", SPECS)
def test_padded_slots_and_steps_hold_zeros(rng, spec, reverse):
    v, lengths, ct = make_case(spec, rng, np.float64, [T, 2, 0])
    seqs, saved = forward(spec, v, lengths, reverse)
    _, delta = backward(spec, v, lengths, reverse, seqs, saved, ct)
    for b, n in enumerate(lengths):
        for s in seqs:                   # slots 0..n hold h_0 and the n states, both ways
            assert s[:n + 1, b].all() and not s[n + 1:, b].any()
        for a in (saved, delta):
            assert a[:n, b].any(axis=1).all() and not a[n:, b].any()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("spec", SPECS)
def test_inputs_are_left_unchanged(rng, spec, reverse):
    v, lengths, ct = make_case(spec, rng, np.float64, [T, 2, 0])
    given = {**v, **{"d" + k: a for k, a in ct.items()}, "lengths": lengths}
    before = {k: a.copy() for k, a in given.items()}
    run_ours(spec, v, lengths, reverse, ct)
    for k, a in given.items():
        np.testing.assert_array_equal(a, before[k], err_msg=k)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("spec", SPECS)
def test_gradients_match_central_differences(rng, spec, reverse):
    v, lengths, ct = make_case(spec, rng, np.float64, [3, 2, 0], T=3, K=2, H=3)

    def loss(v):
        outs = outputs(spec, v, lengths, reverse)[0]
        return sum((outs[k] * ct[k]).sum() for k in outs)

    _, grads = run_ours(spec, v, lengths, reverse, ct)
    assert sorted(grads) == sorted(v)
    eps = 1e-6
    for k, a in v.items():
        numeric = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            w = a.copy()
            w[i] += eps
            up = loss({**v, k: w})
            w[i] -= 2 * eps
            numeric[i] = (up - loss({**v, k: w})) / (2 * eps)
        assert_close(grads[k], numeric, 1e-7, k)
