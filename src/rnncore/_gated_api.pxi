# The entry points of the gated cells (LSTM, GRU) and their preconditions. Included by
# _kernels.pyx after _gated.pxi, whose loops they run once their arguments are checked.

cdef int check_gated(Sizes sz, Py_ssize_t G, Py_ssize_t W, const Py_ssize_t *w_ih,
                     const Py_ssize_t *w_hh, const int64_t[::1] lengths) except -1:
    """The preconditions both cells' kernels share; sz read off x and w_hh, h W wide."""
    expect_shape("w_ih", 2, w_ih, G * sz.H, sz.K, 0, sz, "x and w_hh")
    expect_shape("w_hh", 2, w_hh, G * sz.H, W, 0, sz, "x and w_hh")
    expect_shape("lengths", 1, &lengths.shape[0], sz.B, 0, 0, sz, "x and w_hh")
    cdef Py_ssize_t i
    for i in range(sz.B):
        if lengths[i] < 0 or lengths[i] > sz.T:
            raise ValueError(f"lengths must lie in [0, {sz.T}]; got {lengths[i]} at "
                             f"index {i}")
    check_sizes_c(Sizes(sz.T, sz.B, sz.K, G * sz.H))
    return 0


cdef Py_ssize_t hidden_size(int G, const Py_ssize_t *w_hh, w_hr, Py_ssize_t *P) except -1:
    """H read off w_hh (G·H, P or H); P the projection's width (0: none)."""
    if w_hh[0] < G or w_hh[0] % G or w_hh[1] < 1:
        raise ValueError(f"w_hh must have shape ({G}H, {'P or ' if G == 4 else ''}H) with "
                         f"H >= 1; got ({w_hh[0]}, {w_hh[1]})")
    P[0] = 0 if w_hr is None else w_hh[1]
    return w_hh[0] // G


cdef int check_saved(Sizes sz, Py_ssize_t W, const floating[:, :, ::1] hs,
                     const floating[:, :, :] dy, const floating[:, ::1] dh_n,
                     str name, const Py_ssize_t *saved, Py_ssize_t S) except -1:
    """The preconditions on what both backward kernels read of the forward's results."""
    expect_shape("hs", 3, hs.shape, sz.T + 1, sz.B, W, sz, "x and w_hh")
    expect_shape(name, 3, saved, sz.T, sz.B, S, sz, "x and w_hh")
    expect_shape("dy", 3, dy.shape, sz.T, sz.B, W, sz, "x and w_hh")
    expect_shape("dh_n", 2, dh_n.shape, sz.B, W, 0, sz, "x and w_hh")
    if W > 1 and dy.strides[2] != sizeof(floating):
        raise ValueError("dy must have contiguous rows (unit stride in its last axis)")
    return 0


cdef tuple dims(bint used, tuple shape):
    """``shape``, or a placeholder of one element where the cell has no such array."""
    return shape if used else (1,) * len(shape)


cdef const floating[:, ::1] projection(w_hr, const floating[:, ::1] w_hh, Sizes sz):
    """LSTM's W_hr (P, H) as a view, P = w_hh.shape[1]; w_hh itself (a placeholder the
    kernels do not read) when ``w_hr`` is None."""
    if w_hr is None:
        return w_hh
    cdef const floating[:, ::1] v
    try:
        v = w_hr
    except (ValueError, TypeError) as e:
        raise type(e)(f"w_hr must be a C-contiguous array of the dtype of x: {e}") from None
    expect_shape("w_hr", 2, v.shape, w_hh.shape[1], sz.H, 0, sz, "x and w_hh")
    return v



cdef tuple given_or_new(str what, out, tuple shapes, dtype):
    """The arrays a kernel writes: ``out`` (a tuple of as many arrays) if given, else
    new ones of ``shapes``; the caller checks their shapes."""
    if out is None:
        return tuple([np.empty(s, dtype) for s in shapes])
    if not isinstance(out, tuple) or len(out) != len(shapes):
        raise TypeError(f"{what} must be a tuple of {len(shapes)} arrays; got {out!r:.60}")
    return out


cdef int check_part(rows, Py_ssize_t B, Py_ssize_t *row0, Py_ssize_t *row1) except -1:
    """[row0, row1) read off ``rows`` (all of the batch when None), and checked."""
    row0[0] = 0 if rows is None else rows[0]
    row1[0] = B if rows is None else rows[1]
    return check_rows("rows", row0[0], row1[0], B)


def lstm_layer_forward(const floating[:, :, ::1] x,     # IN  (T, B, K), 0 at padded steps
                       const floating[:, ::1] w_ih,     # IN  (4H, K)
                       const floating[:, ::1] w_hh,     # IN  (4H, P or H)
                       const floating[::1] b,           # IN  (4H,)  b_ih + b_hh
                       w_hr,                            # IN  (P, H), or None
                       const floating[:, ::1] h0,       # IN  (B, P or H)
                       const floating[:, ::1] c0,       # IN  (B, H)
                       const int64_t[::1] lengths,      # IN  (B,)  in [0, T]
                       bint reverse,
                       out=None,                        # OUT (hs, cs, gates), optional
                       rows=None,                       # (row0, row1), optional
                       bint projected=False,
                       y=None):                         # OUT (T, B, P or H), optional
    """Run one LSTM layer in one direction; see ``cells.lstm.layer_forward``.

    With ``out`` and ``rows`` the call runs rows [row0, row1) of the batch into the
    arrays of ``out`` (the other rows are left as they are), each row with the same
    bits whatever range it runs in; with ``projected``, ``out``'s gates hold the input
    projection already (:func:`input_projection`) and the call runs the recurrence.
    ``y`` receives the states of steps 0..T-1 of the rows run, as in
    :func:`layer_forward`.

    Returns
    -------
    hs : ndarray, shape (T+1, B, P) or (T+1, B, H)
    cs : ndarray, shape (T+1, B, H)
    gates : ndarray, shape (T, B, 4H)
        The activated [i f g o] of every step, zero at padded steps.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(4, w_hh.shape, w_hr, &P), W = P if P else H
    cdef Sizes sz = Sizes(x.shape[0], x.shape[1], x.shape[2], H)
    check_gated(sz, 4, W, w_ih.shape, w_hh.shape, lengths)
    expect_shape("b", 1, b.shape, 4 * H, 0, 0, sz, "x and w_hh")
    expect_shape("h0", 2, h0.shape, sz.B, W, 0, sz, "x and w_hh")
    expect_shape("c0", 2, c0.shape, sz.B, H, 0, sz, "x and w_hh")
    cdef const floating[:, ::1] w_hr_v = projection(w_hr, w_hh, sz)
    cdef Py_ssize_t row0, row1
    check_part(rows, sz.B, &row0, &row1)
    if projected and out is None:
        raise ValueError("projected=True needs out, holding the input projection")
    dtype = np.float32 if floating is float else np.float64
    arrays = given_or_new("out", out, ((sz.T + 1, sz.B, W), (sz.T + 1, sz.B, H),
                                       (sz.T, sz.B, 4 * H)), dtype)
    cdef floating[:, :, ::1] hs = arrays[0], cs = arrays[1], gates = arrays[2]
    expect_shape("hs", 3, hs.shape, sz.T + 1, sz.B, W, sz, "x and w_hh")
    expect_shape("cs", 3, cs.shape, sz.T + 1, sz.B, H, sz, "x and w_hh")
    expect_shape("gates", 3, gates.shape, sz.T, sz.B, 4 * H, sz, "x and w_hh")
    cdef Py_ssize_t ldy = (0 if y is None
                           else output_row_stride(y, arrays[0], sz.T, sz.B, W))
    gated_forward(LSTM_CELL, x, w_ih, w_hh, b, b, w_hr_v, h0, c0, lengths, reverse, H, P,
                  hs, cs, gates, row0, row1, projected,
                  <floating *>cnp.PyArray_DATA(<cnp.ndarray>y) if ldy else NULL, ldy)
    return arrays


def gru_layer_forward(const floating[:, :, ::1] x,      # IN  (T, B, K), 0 at padded steps
                      const floating[:, ::1] w_ih,      # IN  (3H, K)
                      const floating[:, ::1] w_hh,      # IN  (3H, H)
                      const floating[::1] b_ih,         # IN  (3H,)
                      const floating[::1] b_hh,         # IN  (3H,)
                      const floating[:, ::1] h0,        # IN  (B, H)
                      const int64_t[::1] lengths,       # IN  (B,)  in [0, T]
                      bint reverse,
                      out=None,                         # OUT (hs, saved), optional
                      rows=None,                        # (row0, row1), optional
                      bint projected=False,
                      y=None):                          # OUT (T, B, H), optional
    """Run one GRU layer in one direction; see ``cells.gru.layer_forward``.

    ``out``, ``rows``, ``projected`` and ``y`` as for :func:`lstm_layer_forward`
    (``saved`` then holds the input projection).

    Returns
    -------
    hs : ndarray, shape (T+1, B, H)
    saved : ndarray, shape (T, B, 4H)
        [r z n gh_n] of every step, zero at padded steps.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(3, w_hh.shape, None, &P)
    cdef Sizes sz = Sizes(x.shape[0], x.shape[1], x.shape[2], H)
    check_gated(sz, 3, H, w_ih.shape, w_hh.shape, lengths)
    expect_shape("b_ih", 1, b_ih.shape, 3 * H, 0, 0, sz, "x and w_hh")
    expect_shape("b_hh", 1, b_hh.shape, 3 * H, 0, 0, sz, "x and w_hh")
    expect_shape("h0", 2, h0.shape, sz.B, H, 0, sz, "x and w_hh")
    cdef Py_ssize_t row0, row1
    check_part(rows, sz.B, &row0, &row1)
    if projected and out is None:
        raise ValueError("projected=True needs out, holding the input projection")
    dtype = np.float32 if floating is float else np.float64
    arrays = given_or_new("out", out, ((sz.T + 1, sz.B, H), (sz.T, sz.B, 4 * H)), dtype)
    cdef floating[:, :, ::1] hs = arrays[0], saved = arrays[1]
    expect_shape("hs", 3, hs.shape, sz.T + 1, sz.B, H, sz, "x and w_hh")
    expect_shape("saved", 3, saved.shape, sz.T, sz.B, 4 * H, sz, "x and w_hh")
    cdef Py_ssize_t ldy = (0 if y is None
                           else output_row_stride(y, arrays[0], sz.T, sz.B, H))
    gated_forward(GRU_CELL, x, w_ih, w_hh, b_ih, b_hh, w_hh, h0, h0, lengths, reverse, H,
                  0, hs, hs, saved, row0, row1, projected,
                  <floating *>cnp.PyArray_DATA(<cnp.ndarray>y) if ldy else NULL, ldy)
    return arrays


def lstm_backward_steps(const floating[:, ::1] w_hh,    # IN  (4H, P or H)
                        w_hr,                           # IN  (P, H), or None
                        const floating[:, :, ::1] hs,   # IN  (T+1, B, P or H)
                        const floating[:, :, ::1] cs,   # IN  (T+1, B, H)
                        const floating[:, :, ::1] gates,  # IN  (T, B, 4H)
                        const floating[:, :, :] dy,     # IN  (T, B, P or H); rows contiguous
                        const floating[:, ::1] dh_n,    # IN  (B, P or H)
                        const floating[:, ::1] dc_n,    # IN  (B, H)
                        const int64_t[::1] lengths,     # IN  (B,)  in [0, T]
                        bint reverse,
                        floating[:, :, ::1] delta,      # OUT (T, B, 4H)
                        floating[:, ::1] dh0,           # OUT (B, P or H)
                        floating[:, ::1] dc0,           # OUT (B, H)
                        dhs=None,                       # OUT (T, B, P) ∂L/∂h_t, with w_hr
                        ms=None,                        # OUT (T, B, H) m_t, with w_hr
                        rows=None):                     # (row0, row1), optional
    """The recurrence of BPTT through one LSTM layer-direction, rows [row0, row1) of
    the batch (all when ``rows`` is None; the other rows are left as they are, and a
    row gets the same bits whatever range it runs in): δ_t, dh0, dc0 and, with a
    projection, what ∂W_hr needs (dhs, ms). :func:`backward_weights` then computes
    the weight gradients. See :func:`lstm_layer_backward`.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(4, w_hh.shape, w_hr, &P), W = P if P else H
    cdef Sizes sz = Sizes(hs.shape[0] - 1, hs.shape[1], 0, H)
    cdef Py_ssize_t no_w_ih[2]          # this phase reads no W_ih: a shape that agrees
    no_w_ih[0], no_w_ih[1] = 4 * H, 0
    check_gated(sz, 4, W, no_w_ih, w_hh.shape, lengths)
    cdef const floating[:, ::1] w_hr_v = projection(w_hr, w_hh, sz)
    check_saved(sz, W, hs, dy, dh_n, "gates", gates.shape, 4 * H)
    expect_shape("cs", 3, cs.shape, sz.T + 1, sz.B, H, sz, "hs and w_hh")
    expect_shape("dc_n", 2, dc_n.shape, sz.B, H, 0, sz, "hs and w_hh")
    expect_shape("delta", 3, delta.shape, sz.T, sz.B, 4 * H, sz, "hs and w_hh")
    expect_shape("dh0", 2, dh0.shape, sz.B, W, 0, sz, "hs and w_hh")
    expect_shape("dc0", 2, dc0.shape, sz.B, H, 0, sz, "hs and w_hh")
    if (dhs is None) != (w_hr is None) or (ms is None) != (w_hr is None):
        raise ValueError("dhs and ms are given exactly when w_hr is")
    cdef floating[:, :, ::1] dhs_v = delta if dhs is None else dhs
    cdef floating[:, :, ::1] ms_v = delta if ms is None else ms
    if P:
        expect_shape("dhs", 3, dhs_v.shape, sz.T, sz.B, P, sz, "hs and w_hh")
        expect_shape("ms", 3, ms_v.shape, sz.T, sz.B, H, sz, "hs and w_hh")
    cdef Py_ssize_t row0, row1
    check_part(rows, sz.B, &row0, &row1)
    gated_backward_steps(LSTM_CELL, w_hh, w_hr_v, hs, cs, gates, dy, dh_n, dc_n, lengths,
                         reverse, H, P, delta, delta, dh0, dc0, dhs_v, ms_v, row0, row1)


def gru_backward_steps(const floating[:, ::1] w_hh,     # IN  (3H, H)
                       const floating[:, :, ::1] hs,    # IN  (T+1, B, H)
                       const floating[:, :, ::1] saved,  # IN  (T, B, 4H)
                       const floating[:, :, :] dy,      # IN  (T, B, H); rows contiguous
                       const floating[:, ::1] dh_n,     # IN  (B, H)
                       const int64_t[::1] lengths,      # IN  (B,)  in [0, T]
                       bint reverse,
                       floating[:, :, ::1] delta,       # OUT (T, B, 3H) ∂L/∂gi_t
                       floating[:, :, ::1] eps,         # OUT (T, B, 3H) ∂L/∂gh_t
                       floating[:, ::1] dh0,            # OUT (B, H)
                       rows=None):                      # (row0, row1), optional
    """The recurrence of BPTT through one GRU layer-direction, rows [row0, row1) of
    the batch, as :func:`lstm_backward_steps`: δ_t, ε_t and dh0. See
    :func:`gru_layer_backward`.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(3, w_hh.shape, None, &P)
    cdef Sizes sz = Sizes(hs.shape[0] - 1, hs.shape[1], 0, H)
    cdef Py_ssize_t no_w_ih[2]
    no_w_ih[0], no_w_ih[1] = 3 * H, 0
    check_gated(sz, 3, H, no_w_ih, w_hh.shape, lengths)
    check_saved(sz, H, hs, dy, dh_n, "saved", saved.shape, 4 * H)
    expect_shape("delta", 3, delta.shape, sz.T, sz.B, 3 * H, sz, "hs and w_hh")
    expect_shape("eps", 3, eps.shape, sz.T, sz.B, 3 * H, sz, "hs and w_hh")
    expect_shape("dh0", 2, dh0.shape, sz.B, H, 0, sz, "hs and w_hh")
    cdef Py_ssize_t row0, row1
    check_part(rows, sz.B, &row0, &row1)
    gated_backward_steps(GRU_CELL, w_hh, w_hh, hs, hs, saved, dy, dh_n, dh_n, lengths,
                         reverse, H, 0, delta, eps, dh0, dh0, delta, delta, row0, row1)


def lstm_layer_backward(const floating[:, :, ::1] x,    # IN  (T, B, K)
                        const floating[:, ::1] w_ih,    # IN  (4H, K)
                        const floating[:, ::1] w_hh,    # IN  (4H, P or H)
                        w_hr,                           # IN  (P, H), or None
                        const floating[:, :, ::1] hs,   # IN  (T+1, B, P or H)
                        const floating[:, :, ::1] cs,   # IN  (T+1, B, H)
                        const floating[:, :, ::1] gates,  # IN  (T, B, 4H)
                        const floating[:, :, :] dy,     # IN  (T, B, P or H); rows contiguous
                        const floating[:, ::1] dh_n,    # IN  (B, P or H)
                        const floating[:, ::1] dc_n,    # IN  (B, H)
                        const int64_t[::1] lengths,     # IN  (B,)  in [0, T]
                        bint reverse):
    """BPTT through one LSTM layer in one direction; see ``cells.lstm.layer_backward``.

    :func:`lstm_backward_steps` then :func:`backward_weights`, over everything.

    Returns
    -------
    dh0 : ndarray, shape (B, P) or (B, H)
    dc0 : ndarray, shape (B, H)
    dw_ih : ndarray, shape (4H, K)
    dw_hh : ndarray, shape (4H, P) or (4H, H)
    db : ndarray, shape (4H,)
    dw_hr : ndarray, shape (P, H), or None
    delta : ndarray, shape (T, B, 4H)
        δ_t = ∂L/∂a_t, for :func:`input_grad`.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(4, w_hh.shape, w_hr, &P), W = P if P else H
    cdef Sizes sz = Sizes(x.shape[0], x.shape[1], x.shape[2], H)
    check_gated(sz, 4, W, w_ih.shape, w_hh.shape, lengths)
    expect_shape("hs", 3, hs.shape, sz.T + 1, sz.B, W, sz, "x and w_hh")
    dtype = np.float32 if floating is float else np.float64
    T, B, K = sz.T, sz.B, sz.K
    delta = np.empty((T, B, 4 * H), dtype)
    dh0, dc0 = np.empty((B, W), dtype), np.empty((B, H), dtype)
    dhs, ms = (np.empty((T, B, P), dtype), np.empty((T, B, H), dtype)) if P else (None, None)
    dw_ih, dw_hh, db = (np.empty((4 * H, K), dtype), np.empty((4 * H, W), dtype),
                        np.empty(4 * H, dtype))
    dw_hr = np.empty((P, H), dtype) if P else None
    lstm_backward_steps(w_hh, w_hr, hs, cs, gates, dy, dh_n, dc_n, lengths, reverse,
                        delta, dh0, dc0, dhs, ms)
    backward_weights(x, hs, delta, reverse, dw_ih, dw_hh, db, dhs=dhs, ms=ms, dw_hr=dw_hr)
    return dh0, dc0, dw_ih, dw_hh, db, dw_hr, delta


def gru_layer_backward(const floating[:, :, ::1] x,     # IN  (T, B, K)
                       const floating[:, ::1] w_ih,     # IN  (3H, K)
                       const floating[:, ::1] w_hh,     # IN  (3H, H)
                       const floating[:, :, ::1] hs,    # IN  (T+1, B, H)
                       const floating[:, :, ::1] saved,  # IN  (T, B, 4H)
                       const floating[:, :, :] dy,      # IN  (T, B, H); rows contiguous
                       const floating[:, ::1] dh_n,     # IN  (B, H)
                       const int64_t[::1] lengths,      # IN  (B,)  in [0, T]
                       bint reverse):
    """BPTT through one GRU layer in one direction; see ``cells.gru.layer_backward``.

    :func:`gru_backward_steps` then :func:`backward_weights`, over everything.

    Returns
    -------
    dh0 : ndarray, shape (B, H)
    dw_ih : ndarray, shape (3H, K)
    dw_hh : ndarray, shape (3H, H)
    db_ih : ndarray, shape (3H,)
    db_hh : ndarray, shape (3H,)
    delta : ndarray, shape (T, B, 3H)
        δ_t = ∂L/∂gi_t, for :func:`input_grad`.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(3, w_hh.shape, None, &P)
    cdef Sizes sz = Sizes(x.shape[0], x.shape[1], x.shape[2], H)
    check_gated(sz, 3, H, w_ih.shape, w_hh.shape, lengths)
    expect_shape("hs", 3, hs.shape, sz.T + 1, sz.B, H, sz, "x and w_hh")
    dtype = np.float32 if floating is float else np.float64
    T, B, K = sz.T, sz.B, sz.K
    delta, eps = np.empty((T, B, 3 * H), dtype), np.empty((T, B, 3 * H), dtype)
    dh0 = np.empty((B, H), dtype)
    dw_ih, dw_hh = np.empty((3 * H, K), dtype), np.empty((3 * H, H), dtype)
    db_ih, db_hh = np.empty(3 * H, dtype), np.empty(3 * H, dtype)
    gru_backward_steps(w_hh, hs, saved, dy, dh_n, lengths, reverse, delta, eps, dh0)
    backward_weights(x, hs, delta, reverse, dw_ih, dw_hh, db_ih, eps=eps, db_hh=db_hh)
    return dh0, dw_ih, dw_hh, db_ih, db_hh, delta
