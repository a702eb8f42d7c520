# The gated cells, LSTM and GRU: one layer in one direction, for float32 and float64.
# Included at the end of _kernels.pyx, whose imports, policy and checks it uses.
#
# The functions have the arguments, results and names of their twins in cells/lstm.py and
# cells/gru.py (reference.py exposes them as lstm_layer_forward, ...): read them side by
# side. Both cells run on ONE forward loop (gated_forward) and ONE backward loop
# (gated_backward); a cell is a CellKind, and the loops ask it only for its fused
# per-row pass (cell_step, cell_grad in _plan.pxd; the passes, per instruction set, in
# _vmath_impl.h) and what it saves. The shape of the computation is the Elman kernel's:
#
# forward   one whole-sequence product x W_ihᵀ (T·B × G·H) into the array the pass
#           saves into (its first G·H columns of 4H); per step one product h_{t-1} W_hhᵀ,
#           G·H wide (W_hhᵀ packed once per call; GRU's n rows included, kept apart from
#           the input side so that the pass forms r ⊙ (W_hn h + b_hn)), then the fused
#           pass over each row; with LSTM's projection a second product m_t W_hrᵀ.
# backward  per step LSTM's projection product ∂h W_hr, the fused pass (the gate
#           gradients), one product (·) W_hh, G·H deep; then ∂W_ih, ∂W_hh, ∂W_hr and
#           the bias sums as whole-sequence products over M = T·B rows.
#
# The Elman cell fits the same loops: G = 1, its passes tanh_step / tanh_grad, nothing
# saved but hs (where its input projection would go, as in layer_forward).

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


cdef object gated_forward(CellKind kind, const floating[:, :, ::1] x,
                          const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                          const floating[::1] b1, const floating[::1] b2,
                          const floating[:, ::1] w_hr, const floating[:, ::1] h0,
                          const floating[:, ::1] c0, const int64_t[::1] lengths,
                          bint reverse, Py_ssize_t H, Py_ssize_t P):
    """The forward loop of both cells: (hs, cs, saved), cs None for GRU. Arguments
    checked by the caller; w_hr, c0 and b2 are placeholders where the cell has none."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2]
    cdef bint lstm = kind == LSTM_CELL
    cdef Py_ssize_t GH = (4 if lstm else 3) * H, S = 4 * H, W = P if P else H
    dtype = np.float32 if floating is float else np.float64
    cdef Plan plan = make_plan(B, GH, floating is float, T * B)
    cdef bint packed = plan.form == PACKED
    hs_arr = np.empty((T + 1, B, W), dtype)
    cs_arr = np.empty(dims(lstm, (T + 1, B, H)), dtype)
    saved_arr = np.empty((T, B, S), dtype)
    cdef floating[:, :, ::1] hs = hs_arr, cs = cs_arr, saved = saved_arr
    cdef floating[:, ::1] rec = np.empty((B, GH), dtype)         # h_{t-1} W_hhᵀ
    cdef floating[:, ::1] m = np.empty(dims(P, (B, H)), dtype)   # m_t
    cdef floating[:, ::1] mp = np.empty(dims(P, (B, P)), dtype)  # m_t W_hrᵀ
    # W_hhᵀ and W_hrᵀ in panels if PACKED, the projection's workspace: C buffers
    cdef floating *packed_hh = NULL
    cdef floating *packed_hr = NULL
    cdef floating *work = NULL
    cdef Py_ssize_t s, t, i, row = W * sizeof(floating), crow = H * sizeof(floating)
    cdef int prev = 1 if reverse else 0            # hs index of h_{t-1} is t + prev
    cdef int out = 0 if reverse else 1             # hs index of h_t is t + out
    cdef Py_ssize_t extra = T if reverse else 0    # the slot no step writes
    cdef unsigned int csr
    try:
        packed_hh = <floating *>workspace(rnn_packed_size(W, <int>GH, plan.nr)
                                          if packed else 1, sizeof(floating))
        packed_hr = <floating *>workspace(rnn_packed_size(H, <int>P, plan.nr)
                                          if packed and P else 1, sizeof(floating))
        work = <floating *>workspace(workspace_size(&plan, GH, K, 1, floating is float),
                                     sizeof(floating))
        with nogil:
            csr = rnn_flush_denormals()       # given back below; nothing raises
            if B and T:
                # (T·B × G·H) = (T·B × K)(G·H × K)ᵀ: the input projection of every
                # step, into the first G·H of the 4H columns of each row of saved
                seq_product(&plan, T * B, <int>GH, K, &x[0, 0, 0] if K else NULL, K, 1,
                            &w_ih[0, 0] if K else NULL, 1, K, &saved[0, 0, 0], S, False,
                            work)
            if B:
                memset(&hs[extra, 0, 0], 0, B * row)
                if lstm:
                    memset(&cs[extra, 0, 0], 0, B * crow)
            for i in range(B):
                memcpy(&hs[lengths[i] if reverse else 0, i, 0], &h0[i, 0], row)
                if lstm:
                    memcpy(&cs[lengths[i] if reverse else 0, i, 0], &c0[i, 0], crow)
            if B and T and packed:            # W_hhᵀ (W × G·H), W_hrᵀ (H × P)
                pack_rect(&plan, <int>W, <int>GH, &w_hh[0, 0], True, packed_hh)
                if P:
                    pack_rect(&plan, <int>H, <int>P, &w_hr[0, 0], True, packed_hr)
            for s in range(T if B else 0):
                t = T - 1 - s if reverse else s
                # (B × G·H) = (B × W)(G·H × W)ᵀ: the recurrent product of every gate
                rect_product(&plan, <int>B, <int>GH, <int>W, &hs[t + prev, 0, 0], W,
                             &w_hh[0, 0], True, packed_hh, &rec[0, 0], GH, False)
                for i in range(B):
                    if t < lengths[i]:
                        cell_step(&plan, kind, <int>H, &saved[t, i, 0], &rec[i, 0],
                                  &b1[0], &b2[0], &hs[t + prev, i, 0],
                                  &m[i, 0] if P else &hs[t + out, i, 0],
                                  &cs[t + prev, i, 0] if lstm else NULL,
                                  &cs[t + out, i, 0] if lstm else NULL)
                    else:
                        memset(&saved[t, i, 0], 0, S * sizeof(floating))
                        if not (reverse and t == lengths[i]):   # that slot holds h0
                            memset(&hs[t + out, i, 0], 0, row)
                            if lstm:
                                memset(&cs[t + out, i, 0], 0, crow)
                if P:
                    # (B × P) = (B × H)(P × H)ᵀ: h_t = m_t W_hrᵀ, kept for valid rows
                    rect_product(&plan, <int>B, <int>P, <int>H, &m[0, 0], H,
                                 &w_hr[0, 0], True, packed_hr, &mp[0, 0], P, False)
                    for i in range(B):
                        if t < lengths[i]:
                            memcpy(&hs[t + out, i, 0], &mp[i, 0], row)
            rnn_restore_mxcsr(csr)
    finally:
        release(packed_hh)
        release(packed_hr)
        release(work)
    return hs_arr, cs_arr if lstm else None, saved_arr


cdef object gated_backward(CellKind kind, const floating[:, :, ::1] x,
                           const floating[:, ::1] w_hh, const floating[:, ::1] w_hr,
                           const floating[:, :, ::1] hs, const floating[:, :, ::1] cs,
                           const floating[:, :, ::1] saved, const floating[:, :, :] dy,
                           const floating[:, ::1] dh_n, const floating[:, ::1] dc_n,
                           const int64_t[::1] lengths, bint reverse, Py_ssize_t H,
                           Py_ssize_t P):
    """The backward loop of both cells: (dh0, dc0, dw_ih, dw_hh, dw_hr, db_ih, db_hh,
    delta), the entries a cell lacks None. Arguments checked by the caller; w_hr, cs
    and dc_n are placeholders where the cell has none."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], M = T * B
    cdef bint lstm = kind == LSTM_CELL
    cdef Py_ssize_t GH = (4 if lstm else 3) * H, W = P if P else H
    dtype = np.float32 if floating is float else np.float64
    cdef Plan plan = make_plan(B, GH, floating is float, T * B)
    cdef bint packed = plan.form == PACKED
    delta_arr = np.empty((T, B, GH), dtype)
    eps_arr = delta_arr if lstm else np.empty((T, B, GH), dtype)    # ∂L/∂(h W_hhᵀ)
    dh0_arr, dw_ih_arr = np.empty((B, W), dtype), np.empty((GH, K), dtype)
    dc0_arr = np.empty(dims(lstm, (B, H)), dtype)
    dw_hh_arr, db_ih_arr = np.empty((GH, W), dtype), np.zeros(GH, dtype)
    db_hh_arr = None if lstm else np.zeros(GH, dtype)
    dw_hr_arr = np.empty(dims(P, (P, H)), dtype)
    cdef floating[:, :, ::1] delta = delta_arr, eps = eps_arr
    cdef floating[:, ::1] dh0 = dh0_arr, dc0 = dc0_arr, dw_ih = dw_ih_arr
    cdef floating[:, ::1] dw_hh = dw_hh_arr, dw_hr = dw_hr_arr
    cdef floating[::1] db_ih = db_ih_arr, db_hh = db_ih_arr if lstm else db_hh_arr
    cdef floating[:, ::1] carry = np.zeros((B, W), dtype)        # (·)_{t+1} W_hh
    cdef floating[:, ::1] carry_c = np.zeros(dims(lstm, (B, H)), dtype)
    cdef floating[:, ::1] dm = np.empty(dims(P, (B, H)), dtype)   # ∂h W_hr
    cdef floating[::1] zero = np.zeros(H if P else 1, dtype)
    cdef floating[::1] m_row = np.empty(H if lstm and not P else 1, dtype)
    # with a projection: ∂L/∂h_t and m_t of every step, for ∂W_hr
    cdef floating[:, :, ::1] dhs = np.empty(dims(P, (T, B, P)), dtype)
    cdef floating[:, :, ::1] ms = np.empty(dims(P, (T, B, H)), dtype)
    # W_hh and W_hr in panels if PACKED, the weight gradients' workspace: C buffers
    cdef floating *packed_hh = NULL
    cdef floating *packed_hr = NULL
    cdef floating *work = NULL
    cdef Py_ssize_t s, t, i, j, row = W * sizeof(floating), crow = H * sizeof(floating)
    cdef int prev = 1 if reverse else 0
    cdef int out = 0 if reverse else 1
    cdef int64_t t_final, t_initial      # the steps that produced h_n and consumed h_0
    cdef const floating *x_p = &x[0, 0, 0] if M * K else NULL
    cdef const floating *h_p = &hs[prev, 0, 0] if M else NULL         # H_prev
    cdef unsigned int csr
    try:
        packed_hh = <floating *>workspace(rnn_packed_size(GH, <int>W, plan.nr)
                                          if packed else 1, sizeof(floating))
        packed_hr = <floating *>workspace(rnn_packed_size(P, <int>H, plan.nr)
                                          if packed and P else 1, sizeof(floating))
        work = <floating *>workspace(workspace_size(&plan, max(K, W, H), M, GH,
                                                    floating is float), sizeof(floating))
        with nogil:
            csr = rnn_flush_denormals()       # given back below; nothing raises
            for i in range(B):                # rows of length 0 pass dh_n (dc_n) through
                memcpy(&dh0[i, 0], &dh_n[i, 0], row)
                if lstm:
                    memcpy(&dc0[i, 0], &dc_n[i, 0], crow)
            if M and packed:                  # W_hh (G·H × W), W_hr (P × H)
                pack_rect(&plan, <int>GH, <int>W, &w_hh[0, 0], False, packed_hh)
                if P:
                    pack_rect(&plan, <int>P, <int>H, &w_hr[0, 0], False, packed_hr)
            for s in range(T if B else 0):    # backward in time
                t = s if reverse else T - 1 - s
                for i in range(B):
                    t_final = 0 if reverse else lengths[i] - 1
                    if t == t_final:
                        for j in range(W):
                            carry[i, j] += dh_n[i, j]
                        for j in range(H if lstm else 0):
                            carry_c[i, j] += dc_n[i, j]
                if P:
                    for i in range(B):
                        if t < lengths[i]:
                            add_rows(&plan, <int>P, &dhs[t, i, 0], &dy[t, i, 0],
                                     &carry[i, 0])
                        else:
                            memset(&dhs[t, i, 0], 0, row)
                    # (B × H) = (B × P)(P × H): ∂m = ∂h_t W_hr
                    rect_product(&plan, <int>B, <int>H, <int>P, &dhs[t, 0, 0], P,
                                 &w_hr[0, 0], False, packed_hr, &dm[0, 0], H, False)
                for i in range(B):
                    if t < lengths[i]:
                        cell_grad(&plan, kind, <int>H, &delta[t, i, 0], &eps[t, i, 0],
                                  <const floating *>&dm[i, 0] if P else &dy[t, i, 0],
                                  &zero[0] if P else &carry[i, 0], &saved[t, i, 0],
                                  &hs[t + prev, i, 0],
                                  &cs[t + out, i, 0] if lstm else NULL,
                                  &cs[t + prev, i, 0] if lstm else NULL,
                                  &carry_c[i, 0] if lstm else NULL,
                                  &ms[t, i, 0] if P else &m_row[0])
                    else:                     # nothing crosses a padded step
                        memset(&delta[t, i, 0], 0, GH * sizeof(floating))
                        if lstm:
                            memset(&carry_c[i, 0], 0, crow)
                        else:
                            memset(&eps[t, i, 0], 0, GH * sizeof(floating))
                            memset(&carry[i, 0], 0, row)
                        if P:
                            memset(&ms[t, i, 0], 0, crow)
                # (B × W) (+)= (B × G·H)(G·H × W): the part of ∂L/∂h_{t-1} through
                # W_hh, added to GRU's ∂h ⊙ z
                rect_product(&plan, <int>B, <int>W, <int>GH, &eps[t, 0, 0], GH,
                             &w_hh[0, 0], False, packed_hh, &carry[0, 0], W, not lstm)
                for i in range(B):
                    t_initial = lengths[i] - 1 if reverse else 0
                    if t == t_initial and t < lengths[i]:
                        memcpy(&dh0[i, 0], &carry[i, 0], row)
                        if lstm:
                            memcpy(&dc0[i, 0], &carry_c[i, 0], crow)
            # (G·H × K) = (T·B × G·H)ᵀ(T·B × K): ∂W_ih = Σ_t δ_tᵀ x_t
            seq_product(&plan, GH, <int>K, M, &delta[0, 0, 0] if M else NULL, 1, GH, x_p,
                        K, 1, &dw_ih[0, 0] if K else NULL, K, False, work)
            # (G·H × W) = (T·B × G·H)ᵀ(T·B × W): ∂W_hh = Σ_t ε_tᵀ h_{t-1}; ε = δ (LSTM)
            seq_product(&plan, GH, <int>W, M, &eps[0, 0, 0] if M else NULL, 1, GH, h_p,
                        W, 1, &dw_hh[0, 0], W, False, work)
            if P:
                # (P × H) = (T·B × P)ᵀ(T·B × H): ∂W_hr = Σ_t ∂h_tᵀ m_t
                seq_product(&plan, P, <int>H, M, &dhs[0, 0, 0] if M else NULL, 1, P,
                            &ms[0, 0, 0] if M else NULL, H, 1, &dw_hr[0, 0], H, False,
                            work)
            if M:
                sum_rows(&plan, M, <int>GH, GH, &db_ih[0], &delta[0, 0, 0])
                if not lstm:
                    sum_rows(&plan, M, <int>GH, GH, &db_hh[0], &eps[0, 0, 0])
            rnn_restore_mxcsr(csr)
    finally:
        release(packed_hh)
        release(packed_hr)
        release(work)
    return (dh0_arr, dc0_arr if lstm else None, dw_ih_arr, dw_hh_arr,
            dw_hr_arr if P else None, db_ih_arr, db_hh_arr, delta_arr)


def lstm_layer_forward(const floating[:, :, ::1] x,     # IN  (T, B, K), 0 at padded steps
                       const floating[:, ::1] w_ih,     # IN  (4H, K)
                       const floating[:, ::1] w_hh,     # IN  (4H, P or H)
                       const floating[::1] b,           # IN  (4H,)  b_ih + b_hh
                       w_hr,                            # IN  (P, H), or None
                       const floating[:, ::1] h0,       # IN  (B, P or H)
                       const floating[:, ::1] c0,       # IN  (B, H)
                       const int64_t[::1] lengths,      # IN  (B,)  in [0, T]
                       bint reverse):
    """Run one LSTM layer in one direction; see ``cells.lstm.layer_forward``.

    Returns
    -------
    hs : ndarray, shape (T+1, B, P) or (T+1, B, H)
    cs : ndarray, shape (T+1, B, H)
    gates : ndarray, shape (T, B, 4H)
        The activated [i f g o] of every step, zero at padded steps.
    """
    cdef Py_ssize_t P = 0
    cdef Py_ssize_t H = hidden_size(4, w_hh.shape, w_hr, &P)
    cdef Sizes sz = Sizes(x.shape[0], x.shape[1], x.shape[2], H)
    check_gated(sz, 4, P if P else H, w_ih.shape, w_hh.shape, lengths)
    expect_shape("b", 1, b.shape, 4 * H, 0, 0, sz, "x and w_hh")
    expect_shape("h0", 2, h0.shape, sz.B, P if P else H, 0, sz, "x and w_hh")
    expect_shape("c0", 2, c0.shape, sz.B, H, 0, sz, "x and w_hh")
    cdef const floating[:, ::1] w_hr_v = projection(w_hr, w_hh, sz)
    return gated_forward(LSTM_CELL, x, w_ih, w_hh, b, b, w_hr_v, h0, c0, lengths, reverse,
                         H, P)


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
    cdef const floating[:, ::1] w_hr_v = projection(w_hr, w_hh, sz)
    check_saved(sz, W, hs, dy, dh_n, "gates", gates.shape, 4 * H)
    expect_shape("cs", 3, cs.shape, sz.T + 1, sz.B, H, sz, "x and w_hh")
    expect_shape("dc_n", 2, dc_n.shape, sz.B, H, 0, sz, "x and w_hh")
    dh0, dc0, dw_ih, dw_hh, dw_hr, db, _, delta = gated_backward(
        LSTM_CELL, x, w_hh, w_hr_v, hs, cs, gates, dy, dh_n, dc_n, lengths, reverse, H, P)
    return dh0, dc0, dw_ih, dw_hh, db, dw_hr, delta


def gru_layer_forward(const floating[:, :, ::1] x,      # IN  (T, B, K), 0 at padded steps
                      const floating[:, ::1] w_ih,      # IN  (3H, K)
                      const floating[:, ::1] w_hh,      # IN  (3H, H)
                      const floating[::1] b_ih,         # IN  (3H,)
                      const floating[::1] b_hh,         # IN  (3H,)
                      const floating[:, ::1] h0,        # IN  (B, H)
                      const int64_t[::1] lengths,       # IN  (B,)  in [0, T]
                      bint reverse):
    """Run one GRU layer in one direction; see ``cells.gru.layer_forward``.

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
    hs, _, saved = gated_forward(GRU_CELL, x, w_ih, w_hh, b_ih, b_hh, w_hh, h0, h0,
                                 lengths, reverse, H, 0)
    return hs, saved


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
    check_saved(sz, H, hs, dy, dh_n, "saved", saved.shape, 4 * H)
    dh0, _, dw_ih, dw_hh, _, db_ih, db_hh, delta = gated_backward(
        GRU_CELL, x, w_hh, w_hh, hs, hs, saved, dy, dh_n, dh_n, lengths, reverse, H, 0)
    return dh0, dw_ih, dw_hh, db_ih, db_hh, delta
