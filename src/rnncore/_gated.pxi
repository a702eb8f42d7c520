# The gated cells, LSTM and GRU: the time loops of one layer in one direction, for
# float32 and float64. Included by _kernels.pyx, whose imports, policy and checks they
# use; the entry points and their preconditions are in _gated_api.pxi.
#
# The entry points have the arguments, results and names of their twins in
# cells/lstm.py and cells/gru.py (reference.py exposes them as lstm_layer_forward, ...):
# read them side by side. Both cells run on ONE forward loop (gated_forward) and ONE
# backward loop (gated_backward_steps); a cell is a CellKind, and the loops ask it only
# for its fused per-row pass (cell_step, cell_grad in _plan.pxd; the passes, per
# instruction set, in _vmath_impl.h) and what it saves. The shape of the computation is
# the Elman kernel's:
#
# forward   one whole-sequence product x W_ihᵀ (T·B × G·H) into the array the pass
#           saves into (its first G·H columns of 4H); per step one product h_{t-1} W_hhᵀ,
#           G·H wide (W_hhᵀ packed once per call; GRU's n rows included, kept apart from
#           the input side so that the pass forms r ⊙ (W_hn h + b_hn)), then the fused
#           pass over each row; with LSTM's projection a second product m_t W_hrᵀ.
# backward  per step LSTM's projection product ∂h W_hr, the fused pass (the gate
#           gradients), one product (·) W_hh, G·H deep; then ∂W_ih, ∂W_hh, ∂W_hr and
#           the bias sums as whole-sequence products over M = T·B rows
#           (backward_weights, _weight_grads.pxi).
#
# As in the Elman kernels, both loops run a range of batch rows [row0, row1) into arrays
# that hold the whole batch, and the forward may find the input projection already
# made (input_projection, by ranges of steps): threads split a layer-direction that way
# (_parallel.py) with the bits of one call, every choice being made for the whole batch.
#
# The Elman cell fits the same loops: G = 1, its passes tanh_step / tanh_grad, nothing
# saved but hs (where its input projection would go, as in layer_forward).

cdef int gated_forward(CellKind kind, const floating[:, :, ::1] x,
                       const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                       const floating[::1] b1, const floating[::1] b2,
                       const floating[:, ::1] w_hr, const floating[:, ::1] h0,
                       const floating[:, ::1] c0, const int64_t[::1] lengths,
                       bint reverse, Py_ssize_t H, Py_ssize_t P,
                       floating[:, :, ::1] hs, floating[:, :, ::1] cs,
                       floating[:, :, ::1] saved, Py_ssize_t row0, Py_ssize_t row1,
                       bint projected, floating *y, Py_ssize_t ldy) except -1:
    """The forward loop of both cells over batch rows [row0, row1), into hs, cs (LSTM)
    and saved; with ``projected`` saved holds x W_ihᵀ already; each step's h_t copied
    into the output ``y`` (NULL: none; rows ``ldy`` apart) as :func:`forward_steps`
    does. Arguments checked by the caller; w_hr, c0, b2 and cs are placeholders where
    the cell has none."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], R = row1 - row0
    cdef bint lstm = kind == LSTM_CELL
    cdef Py_ssize_t GH = (4 if lstm else 3) * H, S = 4 * H, W = P if P else H
    dtype = np.float32 if floating is float else np.float64
    # every choice is made for the whole batch, so that each row's bits do not depend
    # on the rows it runs with
    cdef Plan plan = make_plan(B, GH, floating is float, T * B, HOLDS_M, W)
    cdef bint packed = plan.form == PACKED
    # LSTM on the packed kernels adds h_{t-1} W_hhᵀ onto saved (4H = G·H wide); GRU keeps
    # its n gate's h_{t-1} W_hnᵀ apart, and the BLAS is not promised to sum as they do
    cdef bint onto = lstm and packed
    cdef floating[:, ::1] rec = np.empty((0 if onto else R, GH), dtype)  # h_{t-1} W_hhᵀ
    cdef floating[:, ::1] m = np.empty(dims(P, (R, H)), dtype)   # m_t
    cdef floating[:, ::1] mp = np.empty(dims(P, (R, P)), dtype)  # m_t W_hrᵀ
    # W_hhᵀ and W_hrᵀ in panels if PACKED, the projection's workspace: C buffers
    cdef floating *packed_hh = NULL
    cdef floating *packed_hr = NULL
    cdef floating *work = NULL
    cdef Py_ssize_t s, t, i, row = W * sizeof(floating), crow = H * sizeof(floating)
    cdef int prev = 1 if reverse else 0            # hs index of h_{t-1} is t + prev
    cdef int out = 0 if reverse else 1             # hs index of h_t is t + out
    cdef Py_ssize_t extra = T if reverse else 0    # the slot no step writes
    cdef bint per_step = copies_each_step(y, R, W, sizeof(floating))
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
            if R and T and not projected:
                # (T·R × G·H) = (T·R × K)(G·H × K)ᵀ: the input projection of every
                # step, into the first G·H of the 4H columns of each row of saved; one
                # product over all rows of all steps when the call runs the whole batch
                if R == B:
                    seq_product(&plan, T * B, <int>GH, K, &x[0, 0, 0] if K else NULL, K,
                                1, &w_ih[0, 0] if K else NULL, 1, K, &saved[0, 0, 0], S,
                                False, work)
                else:
                    for t in range(T):
                        seq_product(&plan, R, <int>GH, K, &x[t, row0, 0] if K else NULL,
                                    K, 1, &w_ih[0, 0] if K else NULL, 1, K,
                                    &saved[t, row0, 0], S, False, work)
            if R:
                memset(&hs[extra, row0, 0], 0, R * row)
                if lstm:
                    memset(&cs[extra, row0, 0], 0, R * crow)
            for i in range(row0, row1):
                memcpy(&hs[lengths[i] if reverse else 0, i, 0], &h0[i, 0], row)
                if lstm:
                    memcpy(&cs[lengths[i] if reverse else 0, i, 0], &c0[i, 0], crow)
            if R and T and packed:            # W_hhᵀ (W × G·H), W_hrᵀ (H × P)
                pack_rect(&plan, <int>W, <int>GH, &w_hh[0, 0], True, packed_hh)
                if P:
                    pack_rect(&plan, <int>H, <int>P, &w_hr[0, 0], True, packed_hr)
            for s in range(T if R else 0):
                t = T - 1 - s if reverse else s
                if onto:
                    # (R × 4H) += (R × W)(4H × W)ᵀ: LSTM's recurrent product added onto
                    # the input projection where it lies, its tile of it fetched while
                    # the tile is computed (the pass reading it from memory waited on
                    # it: docs/perf-notes.md §101); acc + x_t W_ihᵀ, the same bits
                    rect_product(&plan, <int>R, <int>GH, <int>W, &hs[t + prev, row0, 0],
                                 W, &w_hh[0, 0], True, packed_hh, &saved[t, row0, 0], S,
                                 True)
                else:
                    # (R × G·H) = (R × W)(G·H × W)ᵀ: the recurrent product of every gate
                    rect_product(&plan, <int>R, <int>GH, <int>W, &hs[t + prev, row0, 0],
                                 W, &w_hh[0, 0], True, packed_hh, &rec[0, 0], GH, False)
                for i in range(row0, row1):
                    if t < lengths[i]:
                        cell_step(&plan, kind, <int>H, &saved[t, i, 0],
                                  NULL if onto else &rec[i - row0, 0],
                                  &b1[0], &b2[0], &hs[t + prev, i, 0],
                                  &m[i - row0, 0] if P else &hs[t + out, i, 0],
                                  &cs[t + prev, i, 0] if lstm else NULL,
                                  &cs[t + out, i, 0] if lstm else NULL)
                    else:
                        memset(&saved[t, i, 0], 0, S * sizeof(floating))
                        if not (reverse and t == lengths[i]):   # that slot holds h0
                            memset(&hs[t + out, i, 0], 0, row)
                            if lstm:
                                memset(&cs[t + out, i, 0], 0, crow)
                if P:
                    # (R × P) = (R × H)(P × H)ᵀ: h_t = m_t W_hrᵀ, kept for valid rows
                    rect_product(&plan, <int>R, <int>P, <int>H, &m[0, 0], H,
                                 &w_hr[0, 0], True, packed_hr, &mp[0, 0], P, False)
                    for i in range(row0, row1):
                        if t < lengths[i]:
                            memcpy(&hs[t + out, i, 0], &mp[i - row0, 0], row)
                if per_step:
                    copy_states(&hs[0, 0, 0], y, t, t + 1, T, B, row0, R, W, ldy, out)
            if y != NULL and not per_step and R:
                copy_states(&hs[0, 0, 0], y, 0, T, T, B, row0, R, W, ldy, out)
            rnn_restore_mxcsr(csr)
    finally:
        release(packed_hh)
        release(packed_hr)
        release(work)
    return 0


cdef int gated_backward_steps(CellKind kind, const floating[:, ::1] w_hh,
                              const floating[:, ::1] w_hr, const floating[:, :, ::1] hs,
                              const floating[:, :, ::1] cs,
                              const floating[:, :, ::1] saved,
                              const floating[:, :, :] dy, const floating[:, ::1] dh_n,
                              const floating[:, ::1] dc_n, const int64_t[::1] lengths,
                              bint reverse, Py_ssize_t H, Py_ssize_t P,
                              floating[:, :, ::1] delta, floating[:, :, ::1] eps,
                              floating[:, ::1] dh0, floating[:, ::1] dc0,
                              floating[:, :, ::1] dhs, floating[:, :, ::1] ms,
                              Py_ssize_t row0, Py_ssize_t row1) except -1:
    """The recurrence of BPTT of both cells over batch rows [row0, row1): δ (and GRU's
    ε; LSTM's is δ itself), dh0, dc0 (LSTM) and, with a projection, ∂L/∂h_t and m_t of
    every step (dhs, ms) for ∂W_hr. Arguments checked by the caller; w_hr, cs, dc_n,
    dc0, dhs and ms are placeholders where the cell has none."""
    cdef Py_ssize_t T = hs.shape[0] - 1, B = hs.shape[1], R = row1 - row0
    cdef bint lstm = kind == LSTM_CELL
    cdef Py_ssize_t GH = (4 if lstm else 3) * H, W = P if P else H
    dtype = np.float32 if floating is float else np.float64
    cdef Plan plan = make_plan(B, GH, floating is float, T * B, HOLDS_M, W)
    cdef bint packed = plan.form == PACKED
    cdef floating[:, ::1] carry = np.zeros((R, W), dtype)        # (·)_{t+1} W_hh
    cdef floating[:, ::1] carry_c = np.zeros(dims(lstm, (R, H)), dtype)
    cdef floating[:, ::1] dm = np.empty(dims(P, (R, H)), dtype)   # ∂h W_hr
    cdef floating[::1] zero = np.zeros(H if P else 1, dtype)
    cdef floating[::1] m_row = np.empty(H if lstm and not P else 1, dtype)
    # W_hh and W_hr in panels if PACKED: C buffers
    cdef floating *packed_hh = NULL
    cdef floating *packed_hr = NULL
    cdef Py_ssize_t s, t, i, j, row = W * sizeof(floating), crow = H * sizeof(floating)
    cdef int prev = 1 if reverse else 0
    cdef int out = 0 if reverse else 1
    cdef int64_t t_final, t_initial      # the steps that produced h_n and consumed h_0
    cdef unsigned int csr
    try:
        packed_hh = <floating *>workspace(rnn_packed_size(GH, <int>W, plan.nr)
                                          if packed else 1, sizeof(floating))
        packed_hr = <floating *>workspace(rnn_packed_size(P, <int>H, plan.nr)
                                          if packed and P else 1, sizeof(floating))
        with nogil:
            csr = rnn_flush_denormals()       # given back below; nothing raises
            for i in range(row0, row1):       # rows of length 0 pass dh_n (dc_n) through
                memcpy(&dh0[i, 0], &dh_n[i, 0], row)
                if lstm:
                    memcpy(&dc0[i, 0], &dc_n[i, 0], crow)
            if R and T and packed:            # W_hh (G·H × W), W_hr (P × H)
                pack_rect(&plan, <int>GH, <int>W, &w_hh[0, 0], False, packed_hh)
                if P:
                    pack_rect(&plan, <int>P, <int>H, &w_hr[0, 0], False, packed_hr)
            for s in range(T if R else 0):    # backward in time
                t = s if reverse else T - 1 - s
                for i in range(row0, row1):
                    t_final = 0 if reverse else lengths[i] - 1
                    if t == t_final:
                        for j in range(W):
                            carry[i - row0, j] += dh_n[i, j]
                        for j in range(H if lstm else 0):
                            carry_c[i - row0, j] += dc_n[i, j]
                if P:
                    for i in range(row0, row1):
                        if t < lengths[i]:
                            add_rows(&plan, <int>P, &dhs[t, i, 0], &dy[t, i, 0],
                                     &carry[i - row0, 0])
                        else:
                            memset(&dhs[t, i, 0], 0, row)
                    # (R × H) = (R × P)(P × H): ∂m = ∂h_t W_hr
                    rect_product(&plan, <int>R, <int>H, <int>P, &dhs[t, row0, 0], P,
                                 &w_hr[0, 0], False, packed_hr, &dm[0, 0], H, False)
                for i in range(row0, row1):
                    if t < lengths[i]:
                        cell_grad(&plan, kind, <int>H, &delta[t, i, 0], &eps[t, i, 0],
                                  <const floating *>&dm[i - row0, 0] if P
                                  else &dy[t, i, 0],
                                  &zero[0] if P else &carry[i - row0, 0], &saved[t, i, 0],
                                  &hs[t + prev, i, 0],
                                  &cs[t + out, i, 0] if lstm else NULL,
                                  &cs[t + prev, i, 0] if lstm else NULL,
                                  &carry_c[i - row0, 0] if lstm else NULL,
                                  &ms[t, i, 0] if P else &m_row[0])
                    else:                     # nothing crosses a padded step
                        memset(&delta[t, i, 0], 0, GH * sizeof(floating))
                        if lstm:
                            memset(&carry_c[i - row0, 0], 0, crow)
                        else:
                            memset(&eps[t, i, 0], 0, GH * sizeof(floating))
                            memset(&carry[i - row0, 0], 0, row)
                        if P:
                            memset(&ms[t, i, 0], 0, crow)
                # (R × W) (+)= (R × G·H)(G·H × W): the part of ∂L/∂h_{t-1} through
                # W_hh, added to GRU's ∂h ⊙ z
                rect_product(&plan, <int>R, <int>W, <int>GH, &eps[t, row0, 0], GH,
                             &w_hh[0, 0], False, packed_hh, &carry[0, 0], W, not lstm)
                for i in range(row0, row1):
                    t_initial = lengths[i] - 1 if reverse else 0
                    if t == t_initial and t < lengths[i]:
                        memcpy(&dh0[i, 0], &carry[i - row0, 0], row)
                        if lstm:
                            memcpy(&dc0[i, 0], &carry_c[i - row0, 0], crow)
            rnn_restore_mxcsr(csr)
    finally:
        release(packed_hh)
        release(packed_hr)
    return 0
