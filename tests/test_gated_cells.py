"""rnncore.LSTM and rnncore.GRU compute what torch.nn.LSTM and torch.nn.GRU compute:
outputs, final states and every gradient, over every option of the Elman RNN (layers,
directions, lengths through torch's packed sequences, batch_first, unbatched, bias,
both dtypes, read-only and strided inputs) and LSTM's proj_size, on every backend that
implements the cell.

torch's autograd is the oracle, its weights built in the test's dtype and loaded through
``load_state_dict``. Loss = Σ y·R + Σ_s final_s·R_s for fixed random R.
"""
import numpy as np
import pytest

import rnncore
from rnncore import functional as F

from conftest import assert_close

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# issue's tolerances: float64 1e-9, float32 2e-4, norm-wise relative
TOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}
T, B, K, H = 7, 3, 4, 5
CLASSES = {"lstm": (rnncore.LSTM, torch.nn.LSTM), "gru": (rnncore.GRU, torch.nn.GRU)}
CASES = [(cell, backend) for cell in CLASSES for backend in F.backends_for(cell)]


@pytest.fixture(params=CASES, ids=[f"{c}-{b}" for c, b in CASES])
def cell_backend(request):
    return request.param


def _pair(cell, module, dtype, rng, batch_first=False, unbatched=False, **options):
    """(rnncore module, torch module, x, states0, R, R_states) for one configuration."""
    ours_cls, theirs_cls = CLASSES[cell]
    torch.manual_seed(0)
    theirs = theirs_cls(K, H, batch_first=batch_first,
                        dtype=torch.float64 if dtype == np.float64 else torch.float32,
                        **options)
    ours = ours_cls(K, H, batch_first=batch_first, dtype=dtype, backend=module, **options)
    ours.load_state_dict(theirs.state_dict())
    L, D = options.get("num_layers", 1), 2 if options.get("bidirectional") else 1
    P = options.get("proj_size", 0) or H
    bt = (T,) if unbatched else ((B, T) if batch_first else (T, B))
    lead = (L * D,) if unbatched else (L * D, B)
    widths = (P, H) if cell == "lstm" else (H,)
    x = rng.standard_normal(bt + (K,)).astype(dtype)
    states0 = [rng.standard_normal(lead + (w,)).astype(dtype) for w in widths]
    R = rng.standard_normal(bt + (D * P,)).astype(dtype)
    R_states = [rng.standard_normal(lead + (w,)).astype(dtype) for w in widths]
    return ours, theirs, x, states0, R, R_states


def _torch_run(theirs, cell, x, states0, R, R_states, lengths=None, batch_first=False):
    theirs.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states0]
    hx = tuple(st) if cell == "lstm" else st[0]
    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        yp, finals = theirs(packed, hx)
        y, _ = pad_packed_sequence(yp, batch_first=batch_first,
                                   total_length=x.shape[1 if batch_first else 0])
    else:
        y, finals = theirs(xt, hx)
    finals = finals if cell == "lstm" else (finals,)
    loss = (y * torch.tensor(R)).sum() + sum((f * torch.tensor(r)).sum()
                                             for f, r in zip(finals, R_states, strict=True))
    loss.backward()
    return (y.detach().numpy(), [f.detach().numpy() for f in finals], xt.grad.numpy(),
            [s.grad.numpy() for s in st],
            {k: p.grad.numpy() for k, p in theirs.named_parameters()})


def _ours_run(ours, cell, x, states0, R, R_states, lengths=None):
    ours.zero_grad()
    hx = tuple(states0) if cell == "lstm" else states0[0]
    y, finals = ours(x, hx, lengths=lengths)
    dfinals = tuple(R_states) if cell == "lstm" else R_states[0]
    dx, d0 = ours.backward(R, dfinals)
    listify = (lambda v: list(v)) if cell == "lstm" else (lambda v: [v])
    return y, listify(finals), dx, listify(d0), dict(ours.grads)


def _compare(ours, theirs, dtype):
    tol = TOL[dtype]
    for name, a, b in zip(("output", "final states", "dx", "d states0"), ours[:4],
                          theirs[:4], strict=True):
        if isinstance(a, list):
            for i, (u, v) in enumerate(zip(a, b, strict=True)):
                assert_close(u, v, tol, f"{name}[{i}]")
        else:
            assert_close(a, b, tol, name)
    assert set(ours[4]) == set(theirs[4])
    for key in theirs[4]:
        assert_close(ours[4][key], theirs[4][key], tol, key)


OPTIONS = [dict(), dict(num_layers=2), dict(bidirectional=True),
           dict(num_layers=2, bidirectional=True), dict(bias=False),
           dict(num_layers=2, bidirectional=True, bias=False)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_gated_cells_match_torch(cell_backend, dtype, rng, options):
    cell, backend = cell_backend
    ours, theirs, *data = _pair(cell, backend, dtype, rng, **options)
    _compare(_ours_run(ours, cell, *data), _torch_run(theirs, cell, *data), dtype)


@pytest.mark.parametrize("options", OPTIONS[:4], ids=lambda o: ",".join(o) or "default")
def test_gated_cells_match_torch_packed_sequences(cell_backend, dtype, rng, options):
    cell, backend = cell_backend
    ours, theirs, *data = _pair(cell, backend, dtype, rng, **options)
    lengths = np.array([7, 1, 4])
    _compare(_ours_run(ours, cell, *data, lengths=lengths),
             _torch_run(theirs, cell, *data, lengths=lengths), dtype)


@pytest.mark.parametrize("layout", ["batch_first", "unbatched"])
def test_gated_cells_match_torch_in_every_layout(cell_backend, dtype, rng, layout):
    cell, backend = cell_backend
    flags = {layout: True}
    ours, theirs, *data = _pair(cell, backend, dtype, rng, num_layers=2,
                                bidirectional=True, **flags)
    if layout == "unbatched":
        _compare(_ours_run(ours, cell, *data), _torch_run(theirs, cell, *data), dtype)
    else:
        lengths = np.array([3, 7, 5])
        _compare(_ours_run(ours, cell, *data, lengths=lengths),
                 _torch_run(theirs, cell, *data, lengths=lengths, batch_first=True),
                 dtype)


@pytest.mark.parametrize("options", [dict(proj_size=3), dict(proj_size=2, num_layers=2,
                                                             bidirectional=True)],
                         ids=["proj", "proj-2-layers-bi"])
def test_lstm_projection_matches_torch(dtype, rng, options):
    for backend in F.backends_for("lstm"):
        ours, theirs, *data = _pair("lstm", backend, dtype, rng, **options)
        lengths = np.array([2, 7, 6])
        _compare(_ours_run(ours, "lstm", *data, lengths=lengths),
                 _torch_run(theirs, "lstm", *data, lengths=lengths), dtype)


def test_read_only_and_strided_inputs_give_the_contiguous_results(cell_backend, rng):
    cell, backend = cell_backend
    ours, _, x, states0, R, R_states = _pair(cell, backend, np.dtype(np.float64), rng,
                                             num_layers=2, bidirectional=True)
    want = _ours_run(ours, cell, x, states0, R, R_states)
    wide = np.zeros(x.shape[:-1] + (2 * K,))
    wide[..., ::2] = x
    strided = wide[..., ::2]
    strided.setflags(write=False)
    frozen = [s.copy() for s in states0]
    for s in frozen:
        s.setflags(write=False)
    got = _ours_run(ours, cell, strided, frozen, R, R_states)
    for a, b in zip(got[:4], want[:4], strict=True):
        for u, v in zip(a if isinstance(a, list) else [a],
                        b if isinstance(b, list) else [b], strict=True):
            np.testing.assert_array_equal(u, v)


def test_functional_takes_the_cell_and_returns_lstm_states_as_pairs(rng):
    params = {k: rng.standard_normal(s) for k, s in
              F.param_shapes(K, H, 1, cell="lstm").items()}
    x = rng.standard_normal((T, B, K))
    y, (h_n, c_n), record = F.forward(x, params, cell="lstm")
    assert y.shape == (T, B, H) and h_n.shape == c_n.shape == (1, B, H)
    dx, (dh0, dc0), grads = F.backward(record, np.ones_like(y), (None, np.ones_like(c_n)))
    assert dx.shape == x.shape and dh0.shape == dc0.shape == (1, B, H)
    assert list(grads) == list(params)


@pytest.mark.parametrize("cell, shape", [("lstm", (20, 4)), ("gru", (15, 4))])
def test_param_shapes_stack_the_gates_in_the_rows(cell, shape):
    shapes = F.param_shapes(4, 5, cell=cell)
    assert shapes["weight_ih_l0"] == shape and shapes["bias_hh_l0"] == (shape[0],)
    assert F.param_count(4, 5, cell=cell) == sum(int(np.prod(s)) for s in shapes.values())


def test_param_count_counts_lstm_projections():
    shapes = F.param_shapes(4, 5, 2, bidirectional=True, cell="lstm", proj_size=3)
    assert shapes["weight_hr_l1_reverse"] == (3, 5)
    assert shapes["weight_ih_l1"] == (20, 6)
    assert F.param_count(4, 5, 2, bidirectional=True, cell="lstm", proj_size=3) == \
        sum(int(np.prod(s)) for s in shapes.values())


def test_lstm_initial_state_must_be_a_pair(rng):
    params = {k: rng.standard_normal(s) for k, s in
              F.param_shapes(K, H, cell="lstm").items()}
    with pytest.raises(TypeError, match=r"h0 of an LSTM must be a pair \(h0, c0\)"):
        F.forward(rng.standard_normal((T, B, K)), params, np.zeros((1, B, H)), cell="lstm")


def test_lstm_cell_state_of_the_wrong_width_names_c0(rng):
    params = {k: rng.standard_normal(s) for k, s in
              F.param_shapes(K, H, cell="lstm", proj_size=2).items()}
    h0, c0 = np.zeros((1, B, 2)), np.zeros((1, B, 2))
    with pytest.raises(ValueError, match=r"c0 must have shape \(1, 3, 5\) .*"
                                         r"hidden_size=5; got \(1, 3, 2\)"):
        F.forward(rng.standard_normal((T, B, K)), params, (h0, c0), cell="lstm")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(cell="lstm", nonlinearity="relu"), ValueError, "takes only 'tanh'"),
    (dict(cell="rnn2"), ValueError, r"cell must be one of \('rnn', 'lstm', 'gru'\)"),
])
def test_bad_cell_options_are_rejected(rng, kwargs, error, message):
    params = {k: rng.standard_normal(s) for k, s in
              F.param_shapes(K, H, cell="lstm").items()}
    with pytest.raises(error, match=message):
        F.forward(rng.standard_normal((T, B, K)), params, **kwargs)


def test_gate_rows_not_a_multiple_of_the_gates_are_rejected(rng):
    params = {k: rng.standard_normal(s) for k, s in F.param_shapes(K, 6).items()}
    with pytest.raises(ValueError, match=r"weight_ih_l0'\] must have a positive multiple "
                                         r"of 4 rows"):
        F.forward(rng.standard_normal((T, B, K)), params, cell="lstm")


@pytest.mark.parametrize("proj_size, error", [(5, ValueError), (-1, ValueError),
                                              (1.5, TypeError)])
def test_lstm_proj_size_must_be_an_int_below_hidden_size(proj_size, error):
    with pytest.raises(error, match="proj_size"):
        rnncore.LSTM(K, H, proj_size=proj_size)


def test_proj_size_is_an_lstm_option():
    with pytest.raises(ValueError, match="proj_size is an LSTM option"):
        F.param_shapes(K, H, cell="gru", proj_size=2)


@pytest.mark.parametrize("cls", [rnncore.LSTM, rnncore.GRU])
def test_initialisation_is_torchs_uniform_bound(cls):
    params = cls(K, 16, num_layers=2, seed=0).params
    for key, p in params.items():
        assert np.abs(p).max() <= 1 / 4 and np.abs(p).max() > 0.2, key
