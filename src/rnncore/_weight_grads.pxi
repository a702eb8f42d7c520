# The whole-sequence weight gradients of every cell, whole or in parts for threads.
# Included by _kernels.pyx, whose imports, policy and checks it uses.


# The weight-gradient parts cut rows of their products where Δ's rows are this long
# or longer (the products then pack blocks of Δᵀ, the larger share of their packing),
# else columns: at medium's 1 KB, where Δᵀ is packed too, the columns of [∂W_ih | ∂W_hh]
# cut together give each of two threads one whole product (docs/perf-notes.md §45, §52).
DEF ROWS_CUT_BYTES = 2048


cdef inline Py_ssize_t cut(Py_ssize_t n, Py_ssize_t i, Py_ssize_t parts,
                           Py_ssize_t align) noexcept nogil:
    """Where [0, n) is cut at the fraction i / parts (the start of part i of ``parts``
    equal ones), on a multiple of ``align``; n for i ≥ parts."""
    if i >= parts:
        return n
    cdef Py_ssize_t c = (n * i // parts + align // 2) // align * align
    return c if c < n else n


cdef inline Py_ssize_t column_cut(Py_ssize_t i, Py_ssize_t n, Py_ssize_t offset,
                                   Py_ssize_t width, Py_ssize_t total,
                                   Py_ssize_t itemsize) noexcept nogil:
    """Where the cut at i / n of ``total`` columns falls in a product occupying columns
    [offset, offset + width) of them, on a multiple of the widest panel (AVX-512's,
    128 bytes) from the product's first column; 0 before it, ``width`` after it."""
    if i >= n:
        return width
    cdef Py_ssize_t align = 128 // itemsize
    cdef Py_ssize_t c = total * i // n - offset
    if c <= 0:
        return 0
    c = (c + align // 2) // align * align
    return c if c < width else width


cdef inline void product_part(const Plan *plan, Py_ssize_t lo, Py_ssize_t hi,
                              Py_ssize_t den, Py_ssize_t N, Py_ssize_t Nb, Py_ssize_t M,
                              const floating *a, Py_ssize_t lda, const floating *b,
                              Py_ssize_t ldb, floating *c, floating *work,
                              Py_ssize_t offset, Py_ssize_t total) noexcept nogil:
    """The part [lo / den, hi / den) of C (N × Nb, rows contiguous) = Aᵀ B = Σ over M
    rows, A (M × N) and B (M × Nb) with rows at strides lda and ldb (part i of n equal
    ones: lo = i, hi = i + 1, den = n); nothing if C is empty.

    A range of C's rows (on multiples of the micro-kernel's rows) where A's rows are
    ROWS_CUT_BYTES or more apart (the product packs blocks of Aᵀ), so that no part
    packs what another packs; else a range of its columns, each part packing only its
    columns of B. The columns are cut as columns [offset, offset + Nb) of ``total`` that the products
    of one call share (:func:`column_cut`): two products of equal width on two
    threads are then one whole product each, each reading A once. Every element is
    the same sum whatever its part, so the parts have the bits of the whole.
    """
    cdef Py_ssize_t r0 = 0, r1 = N, c0 = 0, c1 = Nb
    cdef Py_ssize_t rows = max(1, (plan.policy.vm.gemm_info_f if floating is float
                                   else plan.policy.vm.gemm_info_d).mr)
    if lda * sizeof(floating) >= ROWS_CUT_BYTES:
        r0, r1 = cut(N, lo, den, rows), cut(N, hi, den, rows)
    else:
        c0 = column_cut(lo, den, offset, Nb, total, sizeof(floating))
        c1 = column_cut(hi, den, offset, Nb, total, sizeof(floating))
    if r1 > r0 and c1 > c0:
        # (R × C') = (M × R)ᵀ(M × C'): rows r0..r1, columns c0..c1
        seq_product(plan, r1 - r0, <int>(c1 - c0), M, a + r0 if a else NULL, 1, lda,
                    b + c0 if b else NULL, ldb, 1, c + r0 * Nb + c0, Nb, False, work)


cdef inline void sum_part(const Plan *plan, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t den,
                          Py_ssize_t N, Py_ssize_t M, floating *db,
                          const floating *a) noexcept nogil:
    """The part [lo / den, hi / den) (a range of columns) of db (N) = Σ over M rows of
    A (M × N)."""
    cdef Py_ssize_t b0 = cut(N, lo, den, 1), b1 = cut(N, hi, den, 1), j
    for j in range(b0, b1):
        db[j] = 0
    if b1 > b0 and M:
        sum_rows(plan, M, <int>(b1 - b0), N, db + b0, a + b0)


cdef tuple part_fractions(part):
    """(lo, hi, den) of ``backward_weights``' ``part``: None (the whole, (0, 1, 1)),
    (i, n) (i, i + 1, n) or (lo, hi, den), of integers; TypeError for what is not a
    sequence of integers, ValueError for another length (the range is checked later)."""
    if part is None:
        return 0, 1, 1
    try:
        values = tuple(operator.index(v) for v in part)
    except TypeError:
        raise TypeError(f"part must be None, (i, n) or (lo, hi, den) of integers; "
                        f"got {part!r}") from None
    if len(values) == 2:
        return values[0], values[0] + 1, values[1]
    if len(values) == 3:
        return values
    raise ValueError(f"part must be (i, n) or (lo, hi, den); got {part!r}")


def backward_weights(const floating[:, :, ::1] x,   # IN  (T, B, K)
                     const floating[:, :, ::1] hs,  # IN  (T+1, B, W) the forward's
                     const floating[:, :, ::1] delta,  # IN  (T, B, N) δ, N = G·H
                     bint reverse,
                     floating[:, ::1] dw_ih,        # OUT (N, K)
                     floating[:, ::1] dw_hh,        # OUT (N, W)
                     floating[::1] db,              # OUT (N,)
                     part=None,                     # (i, n) or (lo, hi, den), optional
                     eps=None,                      # IN  (T, B, N) GRU's ε, or None: δ
                     db_hh=None,                    # OUT (N,) GRU's Σ ε, or None
                     dhs=None,                      # IN  (T, B, W) LSTM's ∂L/∂h_t ...
                     ms=None,                       # IN  (T, B, H) ... and m_t, with
                     dw_hr=None,                    # OUT (W, H) ... ∂W_hr (projection)
                     bint defer=False):
    """The whole-sequence products of BPTT, for every cell: ∂W_ih = Σ_t δ_tᵀ x_t,
    ∂W_hh = Σ_t ε_tᵀ h_{t-1} (ε = δ but for GRU), ∂b = Σ_t δ_t (GRU's ∂b_hh = Σ_t ε_t)
    and, for LSTM's projection, ∂W_hr = Σ_t ∂h_tᵀ m_t; or with ``part = (i, n)`` the
    i-th of n disjoint parts of them, so that n threads together compute all of it, or
    with ``part = (lo, hi, den)`` the part from the fraction lo / den of the work to
    hi / den (parts of unequal sizes, for threads of unequal speeds).
    Each element is one sum over all T·B rows, in the same order whatever part it is
    computed in. See :func:`layer_backward`, :func:`lstm_layer_backward`,
    :func:`gru_layer_backward`.

    Each product is split by ranges of columns, where each thread then packs only
    its columns of X, H_prev or M (the columns of [∂W_ih | ∂W_hh] cut together, so
    that with K = W two parts are one whole product each, and each thread reads Δ
    once); or by ranges of rows where the product packs blocks of Δᵀ as well (rows of
    2 KB or more), so that no thread packs what another packs. The bias sums are
    split by ranges of their elements. With ``defer``, nothing is computed: the call,
    checked, is returned as a :class:`Part`.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], N = delta.shape[2]
    cdef Py_ssize_t W = hs.shape[2]
    cdef Sizes sz = Sizes(T, B, K, N)
    cdef const floating[:, :, ::1] e = delta if eps is None else eps
    cdef floating[::1] db2 = db if db_hh is None else db_hh
    expect_shape("eps", 3, e.shape, T, B, N, sz, "x and delta")
    expect_shape("db_hh", 1, db2.shape, N, 0, 0, sz, "x and delta")
    cdef bint proj = dw_hr is not None
    if proj != (dhs is not None) or proj != (ms is not None):
        raise ValueError("dhs, ms and dw_hr go together: all three or none")
    cdef const floating[:, :, ::1] dh_s = dhs if proj else delta
    cdef const floating[:, :, ::1] m_s = ms if proj else delta
    cdef floating[:, ::1] dw_r = dw_hr if proj else dw_hh
    cdef Py_ssize_t Hm = m_s.shape[2] if proj else 0
    if proj:
        expect_shape("dhs", 3, dh_s.shape, T, B, W, sz, "x and hs")
        expect_shape("ms", 3, m_s.shape, T, B, Hm, sz, "x and hs")
        expect_shape("dw_hr", 2, dw_r.shape, W, Hm, 0, sz, "hs and ms")
    cdef Py_ssize_t lo, hi, den
    lo, hi, den = part_fractions(part)
    return done(weight_products_part(x, hs, delta, reverse, dw_ih, dw_hh, db, lo, hi, den,
                                     e, db2, db_hh is not None, proj, dh_s, m_s, dw_r,
                                     (x, hs, delta, dw_ih, dw_hh, db, eps, db_hh, dhs, ms,
                                      dw_hr) if defer else None), defer)


cdef Part weight_products_part(const floating[:, :, ::1] x, const floating[:, :, ::1] hs,
                               const floating[:, :, ::1] delta, bint reverse,
                               floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                               floating[::1] db, Py_ssize_t lo, Py_ssize_t hi,
                               Py_ssize_t den, const floating[:, :, ::1] e,
                               floating[::1] db2, bint two_biases, bint proj,
                               const floating[:, :, ::1] dh_s,
                               const floating[:, :, ::1] m_s,
                               floating[:, ::1] dw_r, arrays):
    """The products of :func:`backward_weights`, their part [lo / den, hi / den)
    (0 ≤ lo < hi ≤ den, else ValueError), as a Part holding ``arrays``: ``e`` is ε (δ
    but for GRU), ``db2`` GRU's Σ ε when ``two_biases``, and with ``proj`` LSTM's
    ∂W_hr = Σ_t ∂h_tᵀ m_t (``dh_s``, ``m_s``, ``dw_r``); the unused ones are
    placeholders."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], N = delta.shape[2]
    cdef Py_ssize_t W = hs.shape[2], Hm = m_s.shape[2] if proj else 0
    cdef Sizes sz = Sizes(T, B, K, N)
    check_sizes_c(sz)
    expect_shape("hs", 3, hs.shape, T + 1, B, W, sz, "x and delta")
    expect_shape("delta", 3, delta.shape, T, B, N, sz, "x and delta")
    expect_shape("dw_ih", 2, dw_ih.shape, N, K, 0, sz, "x and delta")
    expect_shape("dw_hh", 2, dw_hh.shape, N, W, 0, sz, "x, hs and delta")
    expect_shape("db", 1, db.shape, N, 0, 0, sz, "x and delta")
    if not 0 <= lo < hi <= den:
        raise ValueError(f"part must be (i, n) with 0 <= i < n, or (lo, hi, den) with "
                         f"0 <= lo < hi <= den; got (lo, hi, den) = {(lo, hi, den)!r}")
    cdef Py_ssize_t M = T * B
    cdef Part part = new_part(part_weights, arrays)
    cdef weights_args *a = &part.args.weights
    a.single, a.two_biases, a.proj = floating is float, two_biases, proj
    a.x = &x[0, 0, 0] if M * K else NULL
    a.h = &hs[1 if reverse else 0, 0, 0] if M else NULL        # H_prev
    a.delta = &delta[0, 0, 0] if M else NULL
    a.eps = &e[0, 0, 0] if M else NULL
    a.dh = &dh_s[0, 0, 0] if proj and M else NULL
    a.m = &m_s[0, 0, 0] if proj and M else NULL
    a.dw_ih = &dw_ih[0, 0] if K else NULL
    a.dw_hh, a.db, a.db2 = &dw_hh[0, 0], &db[0], &db2[0]
    a.dw_r = &dw_r[0, 0] if proj else NULL
    a.T, a.B, a.K, a.N, a.W, a.Hm = T, B, K, N, W, Hm
    a.lo, a.hi, a.den = lo, hi, den
    return part


cdef int weight_products_c(const floating *x_p, const floating *h_p,
                           const floating *delta_p, const floating *eps_p,
                           floating *dw_ih, floating *dw_hh, floating *db, floating *db2,
                           bint two_biases, bint proj, const floating *dh_p,
                           const floating *m_p, floating *dw_r, Py_ssize_t T,
                           Py_ssize_t B, Py_ssize_t K, Py_ssize_t N, Py_ssize_t W,
                           Py_ssize_t Hm, Py_ssize_t lo, Py_ssize_t hi,
                           Py_ssize_t den) noexcept nogil:
    """The call of :func:`weight_products_part` on C arrays given by their first
    elements, checked by the caller: x (T·B, K), H_prev (T·B, W) (rows 0..T-1 of the
    forward's hs, or 1..T in reverse), δ and ε (T·B, N), the gradients (N, K), (N, W),
    (N,), (N,) and with ``proj`` ∂h (T·B, W), m (T·B, Hm), ∂W_hr (W, Hm); NULL where
    empty. 0, or -1 (nothing computed) where its workspace cannot be allocated."""
    cdef Py_ssize_t M = T * B
    cdef Plan plan = make_plan(B, N, floating is float, M)
    cdef floating *work = <floating *>block(
        workspace_size(&plan, max(K, W, Hm), M, N, floating is float), sizeof(floating))
    if work == NULL:
        return -1
    cdef unsigned int csr = rnn_flush_denormals()       # given back below
    # (N × K) = (T·B × N)ᵀ(T·B × K): ∂W_ih = Σ_t δ_tᵀ x_t
    # (the parts cut the columns of [∂W_ih | ∂W_hh] together)
    product_part(&plan, lo, hi, den, N, K, M, delta_p, N, x_p, K, dw_ih, work, 0,
                 K + W)
    # (N × W) = (T·B × N)ᵀ(T·B × W): ∂W_hh = Σ_t ε_tᵀ h_{t-1}
    product_part(&plan, lo, hi, den, N, W, M, eps_p, N, h_p, W, dw_hh, work, K,
                 K + W)
    if proj:
        # (W × H) = (T·B × W)ᵀ(T·B × H): ∂W_hr = Σ_t ∂h_tᵀ m_t
        product_part(&plan, lo, hi, den, W, Hm, M, dh_p, W, m_p, Hm, dw_r, work,
                     0, Hm)
    # ∂b = Σ_t Σ_b δ_t (and GRU's Σ ε_t)
    sum_part(&plan, lo, hi, den, N, M, db, delta_p)
    if two_biases:
        sum_part(&plan, lo, hi, den, N, M, db2, eps_p)
    rnn_restore_mxcsr(csr)
    release(work)
    return 0
