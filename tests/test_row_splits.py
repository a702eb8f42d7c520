"""Splitting a kernel call into ranges of rows changes no bit of the result.

The batch rows of a recurrence are independent, and so are the rows of the weight
gradients: threads each compute a range of them into one array. That is only
deterministic if every row gets the same bits whatever range it runs in — which the
packed products guarantee (each element is one chain of fused multiply-adds, the same
for a row alone or in a block of six) and which these tests pin, for every instruction
set with packed kernels. (OpenBLAS does not promise it: a product split by rows may
round differently, which is why those instruction sets compute the whole-sequence
products on the packed kernels by default.)
"""
from itertools import pairwise

import numpy as np
import pytest

_kernels = pytest.importorskip("rnncore._kernels")

PATHS = [(isa, "rnncore") for isa in _kernels.supported_isas() if isa != "baseline"]


@pytest.fixture(params=PATHS, ids=[f"{i}-{g}" for i, g in PATHS])
def path(request):
    isa, gemm = request.param
    _kernels.set_isa(isa)
    _kernels.set_whole_sequence_gemm(gemm)
    _kernels.set_short_call_rows(0)       # the packed path even for the few rows here
    yield request.param
    _kernels.set_isa(None)
    _kernels.set_short_call_rows(None)


def test_short_calls_are_not_split_because_they_run_on_the_blas():
    """A call of fewer rows of steps than short_call_rows packs nothing and runs on the
    BLAS, which does not promise the same bits for a part of the rows: never split."""
    rows = 12
    for isa in _kernels.supported_isas():
        _kernels.set_isa(isa)
        _kernels.set_short_call_rows(rows)
        try:
            assert not _kernels.splits_are_exact(1, 64, True, rows - 1)
            assert _kernels.splits_are_exact(1, 64, True, rows) == (isa != "baseline")
        finally:
            _kernels.set_isa(None)
            _kernels.set_short_call_rows(None)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def layer(dtype, T=7, B=13, K=37, H=70, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal((T, B, K)).astype(dtype),
                w_ih=(rng.standard_normal((H, K)) / 6).astype(dtype),
                w_hh=(rng.standard_normal((H, H)) / 8).astype(dtype),
                b=rng.standard_normal(H).astype(dtype),
                h0=rng.standard_normal((B, H)).astype(dtype),
                lengths=rng.integers(1, T + 1, B).astype(np.int64),
                dy=rng.standard_normal((T, B, H)).astype(dtype),
                dh_n=rng.standard_normal((B, H)).astype(dtype))


SPLITS = [[0, 1, 13], [0, 6, 7, 13], [0, 2, 4, 6, 8, 10, 12, 13], [0, 12, 13]]


@pytest.mark.parametrize("cuts", SPLITS, ids=str)
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_rows_run_in_ranges_give_the_whole_batch_bits(path, dtype, cuts, reverse):
    a = layer(dtype)
    args = (a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"], a["lengths"], reverse, False)
    whole = _kernels.layer_forward(*args)
    out = np.full_like(whole, np.nan)
    for row0, row1 in pairwise(cuts):
        _kernels.layer_forward(*args, out=out, rows=(row0, row1))
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize("cuts", SPLITS, ids=str)
@pytest.mark.parametrize("reverse", [False, True])
def test_backward_rows_run_in_ranges_give_the_whole_batch_bits(path, dtype, cuts, reverse):
    a = layer(dtype)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], reverse, True)
    dh0, _, _, _, delta = _kernels.layer_backward(a["x"], a["w_ih"], a["w_hh"], hs,
                                                  a["dy"], a["dh_n"], a["lengths"],
                                                  reverse, True)
    got_delta, got_dh0 = np.full_like(delta, np.nan), np.full_like(dh0, np.nan)
    for row0, row1 in pairwise(cuts):
        _kernels.backward_steps(a["w_hh"], hs, a["dy"], a["dh_n"], a["lengths"], reverse,
                                True, got_delta, got_dh0, rows=(row0, row1))
    np.testing.assert_array_equal(got_delta, delta)
    np.testing.assert_array_equal(got_dh0, dh0)


def _equal(n):
    return [(i, n) for i in range(n)]


def _thousandths(*cuts):
    return [(lo, hi, 1000) for lo, hi in pairwise(cuts)]


# H = 70 splits the weight gradients by columns; H = 600 (float32 rows of 2.4 KB) or 300
# (float64) by rows, because the products then pack blocks of Δᵀ. Equal parts (i, n), and
# unequal ones (lo, hi, den) from the fraction lo/den to hi/den: a slower thread's less.
@pytest.mark.parametrize("wide", [False, True], ids=["columns", "rows"])
@pytest.mark.parametrize("parts", [_equal(2), _equal(3), _equal(5),
                                   _thousandths(0, 300, 1000), _thousandths(0, 610, 1000),
                                   _thousandths(0, 150, 500, 1000)], ids=str)
def test_weight_gradients_computed_in_parts_give_the_whole_bits(path, dtype, parts, wide):
    H = (600 if dtype == np.float32 else 300) if wide else 70
    a = layer(dtype, T=3, B=5, K=37, H=H)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    _, dw_ih, dw_hh, db, delta = _kernels.layer_backward(
        a["x"], a["w_ih"], a["w_hh"], hs, a["dy"], a["dh_n"], a["lengths"], False, False)
    got = [np.full_like(g, np.nan) for g in (dw_ih, dw_hh, db)]
    for part in parts:
        _kernels.backward_weights(a["x"], hs, delta, False, *got, part=part)
    for g, want in zip(got, (dw_ih, dw_hh, db), strict=True):
        np.testing.assert_array_equal(g, want)


def test_an_unequal_part_of_the_weight_gradients_is_its_share_of_them(path, dtype):
    """(0, 3, 4) computes the first three quarters of the columns of [∂W_ih | ∂W_hh]
    (on the widest panel's multiples) and leaves the rest unwritten."""
    a = layer(dtype, K=64, H=64)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    got = {k: np.full((64, 64), np.nan, dtype) for k in ("dw_ih", "dw_hh")}
    _kernels.backward_weights(a["x"], hs, np.ones((7, 13, 64), dtype), False,
                              got["dw_ih"], got["dw_hh"], np.empty(64, dtype),
                              part=(0, 3, 4))
    written = np.hstack([got["dw_ih"], got["dw_hh"]])
    assert not np.isnan(written[:, :96]).any() and np.isnan(written[:, 96:]).all()


def test_two_parts_of_weight_gradients_with_k_equal_to_h_are_one_whole_product_each(
        path, dtype):
    """The parts cut the columns of [∂W_ih | ∂W_hh] together: with K = H, part 0 is
    all of ∂W_ih and part 1 all of ∂W_hh, so that each thread reads δ once."""
    a = layer(dtype, K=64, H=64)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    delta = np.ones((7, 13, 64), dtype)
    for i, written in ((0, "dw_ih"), (1, "dw_hh")):
        got = {k: np.full((64, 64), np.nan, dtype) for k in ("dw_ih", "dw_hh")}
        _kernels.backward_weights(a["x"], hs, delta, False, got["dw_ih"], got["dw_hh"],
                                  np.empty(64, dtype), part=(i, 2))
        assert not np.isnan(got[written]).any()
        assert np.isnan(got["dw_hh" if written == "dw_ih" else "dw_ih"]).all()


@pytest.mark.parametrize("cuts", [[0, 1, 7], [0, 3, 7], [0, 2, 4, 6, 7]], ids=str)
@pytest.mark.parametrize("reverse", [False, True])
def test_input_projection_in_ranges_of_steps_then_the_recurrence_gives_the_whole_bits(
        path, dtype, cuts, reverse):
    a = layer(dtype)
    args = (a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"], a["lengths"], reverse, False)
    whole = _kernels.layer_forward(*args)
    out = np.full_like(whole, np.nan)
    for t0, t1 in pairwise(cuts):
        _kernels.input_projection(a["x"], a["w_ih"], out, reverse, steps=(t0, t1))
    _kernels.layer_forward(*args, out=out, projected=True)
    np.testing.assert_array_equal(out, whole)


def test_a_barrier_lets_its_parts_go_when_the_last_one_arrives():
    import threading
    import time
    barrier = _kernels.Barrier(3)
    passed = []
    waiting = [threading.Thread(target=lambda: passed.append(barrier.wait()), daemon=True)
               for _ in range(2)]
    for thread in waiting:
        thread.start()
    for _ in range(3000):                # until both have arrived (at most 30 s)
        if barrier.arrived == 2:
            break
        time.sleep(0.01)
    time.sleep(0.1)
    assert barrier.arrived == 2 and not passed        # waiting for the third
    assert barrier.wait() is True
    for thread in waiting:
        thread.join(30)
    assert passed == [True, True]


def test_a_barrier_one_of_whose_parts_gave_up_lets_the_others_go_with_false():
    import threading
    barrier = _kernels.Barrier(2)
    passed = []
    waiting = threading.Thread(target=lambda: passed.append(barrier.wait()), daemon=True)
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()
    barrier.abort()
    waiting.join(30)
    assert passed == [False]


def test_a_barrier_of_no_parts_is_rejected():
    with pytest.raises(ValueError, match="parts must be >= 1; got 0"):
        _kernels.Barrier(0)


def weight_gradients_part(part):
    """The kernels' weight gradients of a small layer, their part ``part``."""
    a = layer(np.float32)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    grads = [np.empty((70, 37), np.float32), np.empty((70, 70), np.float32),
             np.empty(70, np.float32)]
    _kernels.backward_weights(a["x"], hs, np.zeros((7, 13, 70), np.float32), False,
                              *grads, part=part)


_OUT_OF_RANGE = (r"part must be \(i, n\) with 0 <= i < n, or \(lo, hi, den\) with "
                 r"0 <= lo < hi <= den")


@pytest.mark.parametrize("part, message", [
    *[(p, _OUT_OF_RANGE) for p in [(2, 2), (-1, 2), (0, 0), (3, 3, 4), (2, 1, 4), (0, 5, 4),
                                   (-1, 1, 4)]],
    ((0, 1, 2, 3), r"part must be \(i, n\) or \(lo, hi, den\); got \(0, 1, 2, 3\)")],
    ids=str)
def test_a_part_that_is_not_a_part_of_the_whole_is_rejected(part, message):
    with pytest.raises(ValueError, match=message):
        weight_gradients_part(part)


@pytest.mark.parametrize("part", [3, "02", (0.5, 2), (0, None), (0, 1, 2.0)], ids=str)
def test_a_part_that_is_not_integers_is_a_type_error_naming_part(part):
    with pytest.raises(TypeError, match=r"part must be None, \(i, n\) or \(lo, hi, den\) "
                                        r"of integers; got "):
        weight_gradients_part(part)


def test_projected_without_out_is_rejected():
    a = layer(np.float32)
    with pytest.raises(ValueError, match="projected=True needs out"):
        _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                               a["lengths"], False, False, projected=True)


@pytest.mark.parametrize("isa", [i for i in _kernels.supported_isas() if i != "baseline"])
def test_isas_with_packed_kernels_use_them_for_the_whole_sequence_products(isa):
    try:
        _kernels.set_isa(isa)
        assert _kernels.whole_sequence_gemm() == "rnncore"
    finally:
        _kernels.set_isa(None)


@pytest.mark.parametrize("rows", [(-1, 3), (4, 2), (0, 14)])
def test_a_row_range_outside_the_batch_is_rejected(rows):
    a = layer(np.float32)
    args = (a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"], a["lengths"], False, False)
    out = _kernels.layer_forward(*args)
    with pytest.raises(ValueError, match=r"rows must satisfy 0 <= rows\[0\] <= rows\[1\] <= 13"):
        _kernels.layer_forward(*args, out=out, rows=rows)


def test_forward_into_an_array_of_the_wrong_shape_is_rejected():
    a = layer(np.float32)
    args = (a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"], a["lengths"], False, False)
    with pytest.raises(ValueError, match=r"out must have shape \(8, 13, 70\)"):
        _kernels.layer_forward(*args, out=np.zeros((7, 13, 70), np.float32), rows=(0, 2))


# One panel's width of columns (2 vectors: 32 float32 / 16 float64 on AVX-512, 16 / 8
# on AVX2) stored row by row is read in place, not packed; over several depth chunks
# (T·B = 520 rows > 256) it must give the reference's gradients, and its parts the bits
@pytest.mark.parametrize("H", [8, 16, 32])
def test_weight_gradients_read_one_panel_in_place_and_match_the_reference(path, dtype, H):
    a = layer(dtype, T=40, B=13, K=H, H=H)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    _, dw_ih, dw_hh, db, delta = _kernels.layer_backward(
        a["x"], a["w_ih"], a["w_hh"], hs, a["dy"], a["dh_n"], a["lengths"], False, False)
    d = delta.reshape(-1, H).astype(np.float64)      # Σ_t δ_tᵀ x_t, δ_tᵀ h_{t-1}, δ_t
    want = [d.T @ a["x"].reshape(-1, H), d.T @ hs[:-1].reshape(-1, H), d.sum(axis=0)]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for g, w in zip((dw_ih, dw_hh, db), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())
    got = [np.full_like(g, np.nan) for g in (dw_ih, dw_hh, db)]
    for i in range(2):
        _kernels.backward_weights(a["x"], hs, delta, False, *got, part=(i, 2))
    for g, want_bits in zip(got, (dw_ih, dw_hh, db), strict=True):
        np.testing.assert_array_equal(g, want_bits)


# A product at most one vector wide (N ≤ 16 float32 / 8 float64 on AVX-512, 8 / 4 on
# AVX2) runs on a tile of 12 rows against one vector; a wider one on the 6-row tile of
# two vectors. A B of whole panels whose rows are at most 256 bytes long (K = 32, 64) is
# read in place; B 72 wide (no whole panels) is packed. Each element is the same chain
# over k in every case: the columns of a narrow product have the bits of the same
# columns of a wide one. T·B = 520: several depth chunks of the weight gradients, and
# rows left over a tile of 12 (520 = 43·12 + 4).
@pytest.mark.parametrize("K", [3, 4, 8, 16, 32, 64])
def test_a_narrow_product_gives_the_bits_of_the_same_columns_of_a_wide_one(path, dtype, K):
    a = layer(dtype, T=40, B=13, K=K, H=24)
    wide = 72
    rng = np.random.default_rng(1)
    x_wide = np.concatenate(
        [a["x"], rng.standard_normal((40, 13, wide - K)).astype(dtype)], axis=2)
    w_ih_wide = np.concatenate(
        [a["w_ih"], rng.standard_normal((24, wide - K)).astype(dtype)], axis=1)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    _, dw_ih, _, _, delta = _kernels.layer_backward(
        a["x"], a["w_ih"], a["w_hh"], hs, a["dy"], a["dh_n"], a["lengths"], False, False)
    dw_ih_wide = np.empty((24, wide), dtype)
    _kernels.backward_weights(x_wide, hs, delta, False, dw_ih_wide,
                              np.empty((24, 24), dtype), np.empty(24, dtype))
    np.testing.assert_array_equal(dw_ih, dw_ih_wide[:, :K])
    dx, dx_wide = np.empty_like(a["x"]), np.empty_like(x_wide)
    _kernels.input_grad(delta, a["w_ih"], dx, False)
    _kernels.input_grad(delta, w_ih_wide, dx_wide, False)
    np.testing.assert_array_equal(dx, dx_wide[:, :, :K])


# ∂b sums the rows of δ in row order, whichever columns keep their sums in registers
# (blocks of 32) and whichever are left over: the bits of a running sum row by row
@pytest.mark.parametrize("H", [24, 64, 70])
def test_the_bias_gradient_is_the_running_sum_of_the_rows_of_delta(path, dtype, H):
    a = layer(dtype, T=9, B=5, K=3, H=H)
    hs = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                a["lengths"], False, False)
    _, _, _, db, delta = _kernels.layer_backward(
        a["x"], a["w_ih"], a["w_hh"], hs, a["dy"], a["dh_n"], a["lengths"], False, False)
    want = np.zeros(H, dtype)
    for row in delta.reshape(-1, H):
        want += row
    np.testing.assert_array_equal(db, want)


# -- the gated cells: the same splits, through their own entry points ----------------------

GATED = {"lstm": ("lstm", 0), "lstm-proj": ("lstm", 10), "gru": ("gru", 0)}


def gated(cell, dtype, T=7, B=13, K=37, H=24, seed=0):
    """A gated layer-direction's arguments: ``forward(reverse, **kw)`` runs its forward
    kernel, ``steps(reverse, hs, saved, arrays, rows)`` its BPTT recurrence and
    ``backward(reverse, hs, saved)`` its whole BPTT (the kernels' results)."""
    name, P = GATED[cell]
    G, W = (4 if name == "lstm" else 3), P or H
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(dtype)          # noqa: E731
    x, w_ih, w_hh, h0 = r(T, B, K), r(G * H, K) / 6, r(G * H, W) / 8, r(B, W)
    b1, b2, c0, dc_n = r(G * H), r(G * H), r(B, H), r(B, H)
    w_hr = r(P, H) / 4 if P else None
    lengths = rng.integers(1, T + 1, B).astype(np.int64)
    dy, dh_n = r(T, B, W), r(B, W)
    k = _kernels
    if name == "lstm":
        def forward(reverse, **kw):
            return k.lstm_layer_forward(x, w_ih, w_hh, b1, w_hr, h0, c0, lengths, reverse,
                                        **kw)

        def steps(reverse, hs, saved, a, rows=None):
            k.lstm_backward_steps(w_hh, w_hr, hs, *saved, dy, dh_n, dc_n, lengths,
                                  reverse, a["delta"], a["dh0"], a["dc0"], a.get("dhs"),
                                  a.get("ms"), rows=rows)

        def backward(reverse, hs, saved):
            return k.lstm_layer_backward(x, w_ih, w_hh, w_hr, hs, *saved, dy, dh_n, dc_n,
                                         lengths, reverse)
        arrays = dict(delta=(T, B, G * H), dh0=(B, W), dc0=(B, H))
        if P:
            arrays.update(dhs=(T, B, P), ms=(T, B, H))
    else:
        def forward(reverse, **kw):
            return k.gru_layer_forward(x, w_ih, w_hh, b1, b2, h0, lengths, reverse, **kw)

        def steps(reverse, hs, saved, a, rows=None):
            k.gru_backward_steps(w_hh, hs, *saved, dy, dh_n, lengths, reverse, a["delta"],
                                 a["eps"], a["dh0"], rows=rows)

        def backward(reverse, hs, saved):
            return k.gru_layer_backward(x, w_ih, w_hh, hs, *saved, dy, dh_n, lengths,
                                        reverse)
        arrays = dict(delta=(T, B, G * H), eps=(T, B, G * H), dh0=(B, W))
    return dict(forward=forward, steps=steps, backward=backward, x=x, w_ih=w_ih,
                arrays=arrays, dtype=dtype, P=P, H=H, lstm=name == "lstm")


def _filled(shapes, dtype, value=np.nan):
    return {name: np.full(s, value, dtype) for name, s in shapes.items()}


@pytest.mark.parametrize("cell", list(GATED))
@pytest.mark.parametrize("reverse", [False, True])
def test_gated_forward_projected_by_steps_and_run_by_rows_gives_the_whole_bits(
        path, dtype, cell, reverse):
    g = gated(cell, dtype)
    whole = g["forward"](reverse)
    out = tuple(np.full_like(a, np.nan) for a in whole)
    for t0, t1 in zip([0, 2, 3], [2, 3, 7], strict=True):
        _kernels.input_projection(g["x"], g["w_ih"], out[-1], reverse, steps=(t0, t1))
    for row0, row1 in zip([0, 1, 7], [1, 7, 13], strict=True):
        g["forward"](reverse, out=out, rows=(row0, row1), projected=True)
    for got, want in zip(out, whole, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cuts", SPLITS, ids=str)
@pytest.mark.parametrize("cell", list(GATED))
@pytest.mark.parametrize("reverse", [False, True])
def test_gated_forward_rows_run_in_ranges_give_the_whole_batch_bits(path, dtype, cell,
                                                                    reverse, cuts):
    g = gated(cell, dtype)
    whole = g["forward"](reverse)
    out = tuple(np.full_like(a, np.nan) for a in whole)
    for row0, row1 in pairwise(cuts):
        g["forward"](reverse, out=out, rows=(row0, row1))
    for got, want in zip(out, whole, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cuts", SPLITS, ids=str)
@pytest.mark.parametrize("cell", list(GATED))
@pytest.mark.parametrize("reverse", [False, True])
def test_gated_backward_rows_run_in_ranges_give_the_whole_batch_bits(path, dtype, cell,
                                                                     reverse, cuts):
    g = gated(cell, dtype)
    hs, *saved = g["forward"](reverse)
    whole = g["backward"](reverse, hs, saved)
    want = _filled(g["arrays"], dtype)
    g["steps"](reverse, hs, saved, want)
    got = _filled(g["arrays"], dtype)
    for row0, row1 in pairwise(cuts):
        g["steps"](reverse, hs, saved, got, rows=(row0, row1))
    np.testing.assert_array_equal(want["delta"], whole[-1])       # the whole call's δ
    np.testing.assert_array_equal(want["dh0"], whole[0])
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# float32 rows of G·H·4 bytes: H = 24 gives products split by columns, H = 150 by rows
# (≥ 2 KB: the products pack blocks of Δᵀ); float64 likewise with H = 90
@pytest.mark.parametrize("wide", [False, True], ids=["columns", "rows"])
@pytest.mark.parametrize("parts", [2, 3, 5])
@pytest.mark.parametrize("cell", list(GATED))
def test_gated_weight_gradients_computed_in_parts_give_the_whole_bits(path, dtype, cell,
                                                                      parts, wide):
    H = (150 if dtype == np.float32 else 90) if wide else 24
    g = gated(cell, dtype, T=3, B=5, H=H)
    hs, *saved = g["forward"](False)
    whole = g["backward"](False, hs, saved)
    a = _filled(g["arrays"], dtype)
    g["steps"](False, hs, saved, a)
    if g["lstm"]:
        _, _, dw_ih, dw_hh, db, dw_hr, _ = whole
        wants = dict(dw_ih=dw_ih, dw_hh=dw_hh, db=db)
        if g["P"]:
            wants["dw_hr"] = dw_hr
        inputs = {k: a[k] for k in ("dhs", "ms") if k in a}
    else:
        _, dw_ih, dw_hh, db_ih, db_hh, _ = whole
        wants = dict(dw_ih=dw_ih, dw_hh=dw_hh, db=db_ih, db_hh=db_hh)
        inputs = {"eps": a["eps"]}
    got = {k: np.full_like(v, np.nan) for k, v in wants.items()}
    extras = {k: got[k] for k in ("db_hh", "dw_hr") if k in got}
    for i in range(parts):
        _kernels.backward_weights(g["x"], hs, a["delta"], False, got["dw_ih"],
                                  got["dw_hh"], got["db"], part=(i, parts), **inputs,
                                  **extras)
    for name, want in wants.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_gated_rows_outside_the_batch_are_rejected():
    g = gated("gru", np.float32)
    out = g["forward"](False)
    with pytest.raises(ValueError, match=r"rows must satisfy 0 <= rows\[0\] <= rows\[1\]"):
        g["forward"](False, out=out, rows=(3, 14))


def test_gated_forward_projected_without_out_is_rejected():
    g = gated("lstm", np.float32)
    with pytest.raises(ValueError, match="projected=True needs out"):
        g["forward"](False, projected=True)


@pytest.mark.parametrize("given", [None, "dhs"])
def test_the_projection_arrays_of_the_weight_gradients_go_together(given):
    g = gated("lstm-proj", np.float32)
    hs, *saved = g["forward"](False)
    a = _filled(g["arrays"], np.float32, 0)
    P, GH = g["P"], g["arrays"]["delta"][2]
    grads = [np.empty((GH, 37), np.float32), np.empty((GH, P), np.float32),
             np.empty(GH, np.float32)]
    extras = {} if given is None else {"dhs": a["dhs"]}
    with pytest.raises(ValueError, match="dhs, ms and dw_hr go together"):
        _kernels.backward_weights(g["x"], hs, a["delta"], False, *grads, ms=a["ms"],
                                  **extras)
