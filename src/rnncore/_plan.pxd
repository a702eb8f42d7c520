"""The plan of one kernel call, and the products and passes that follow it.

The policy (_vmath.h: which instruction set's element-wise table, who computes the
whole-sequence products) is read once, at the start of a call, by :func:`make_plan`;
every choice of the call — the per-step product's form, whether W_hhᵀ is needed, the
workspace size — is made from that one plan, which the loops receive. Nothing here
reads the policy again, so another thread's ``set_isa`` cannot change a running call.
"""
from rnncore._blas cimport floating, gemm, gemv
from rnncore._vmath cimport *

cdef enum StepForm:
    PACKED      # the packed micro-kernel (_gemm.h), m packed once per call
    GEMV        # one row: a matrix-vector product on m, which OpenBLAS runs faster
    GEMM_NN     # the BLAS on m (sgemm is fastest this way)
    GEMM_NT     # the BLAS on mᵀ (dgemm is fastest this way)
    GEMV_T      # one row, on mᵀ: a short call whose caller holds mᵀ, not m


cdef enum HeldMatrix:
    HOLDS_M = 0     # the caller holds the per-step matrix m itself (BPTT: m = W_hh)
    HOLDS_M_T = 1   # the caller holds mᵀ (the forward: m = W_hhᵀ, the caller W_hh)


cdef struct Plan:
    rnn_policy policy   # the element-wise table and who computes the products
    StepForm form       # how the per-step product out = h · m is computed
    int nr              # panel width of the PACKED form
    bint lone           # PACKED for a one-row batch: the lone-row kernel, two chains


cdef inline Plan make_plan(Py_ssize_t B, Py_ssize_t H, bint single,
                           Py_ssize_t rows=-1, HeldMatrix held=HOLDS_M,
                           Py_ssize_t depth=-1) noexcept nogil:
    """Read the policy once and decide every choice of one call from it.

    ``rows`` is T·B of the call (-1: unknown, taken as long). A short call (fewer rows
    than ``rnn_short_rows``) packs nothing: its per-step product runs on the BLAS on
    the matrix the caller ``held`` (no transposed copy either) and its whole-sequence
    products on the BLAS, since packing costs O(H²) per call whatever T is. Every choice
    depends on the whole call's B, H and rows, never on a part's, so that a call split
    over threads decides as one thread does. ``depth`` is the other side of the step
    matrix, H × ``depth`` (-1: H, square); a one-row batch whose step matrix is larger
    than the table's ``row_max_bytes`` runs gemv. The forms were chosen by measurement
    (docs/perf-notes.md).
    """
    cdef Plan plan
    plan.policy = rnn_policy_load()
    plan.lone = False
    if 0 <= rows < rnn_short_rows_load():
        plan.nr = 0
        plan.policy.own_gemm = 0
        if held == HOLDS_M:
            plan.form = GEMV if B == 1 else GEMM_NN
        else:
            plan.form = GEMV_T if B == 1 else GEMM_NT
        return plan
    plan.nr = rnn_vm_step_nr(plan.policy.vm, B, H, H if depth < 0 else depth, single)
    if plan.nr:
        plan.form = PACKED
        # one row sums each element of its per-step product in two chains over the
        # depth (not the tiles' order; a one-row batch is never split over threads)
        plan.lone = rnn_vm_step_lone(plan.policy.vm, B, H, single)
    elif B == 1:
        # on the matrix the caller holds, as a short call: no transposed copy of a
        # matrix that may be larger than the cache (the reason not to pack it)
        plan.form = GEMV if held == HOLDS_M else GEMV_T
    else:
        plan.form = GEMM_NN if single else GEMM_NT
    return plan


cdef inline bint reads_m(const Plan *plan) noexcept nogil:
    """Whether the per-step product reads m itself (else mᵀ, or m packed)."""
    return plan.form == GEMV or plan.form == GEMM_NN


cdef inline void step_product(const Plan *plan, int B, int H, const floating *h,
                              const floating *m, const floating *m_t,
                              const floating *packed, floating *out) noexcept nogil:
    """out (B×H) = h (B×H) · m (H×H), all row-major; m_t holds mᵀ, packed holds m
    packed; only what the plan's form reads need be valid."""
    if plan.lone:
        if floating is float:
            plan.policy.vm.gemm_lone_f(H, H, h, packed, out, False)
        else:
            plan.policy.vm.gemm_lone_d(H, H, h, packed, out, False)
    elif plan.form == PACKED:
        if floating is float:
            plan.policy.vm.gemm_packed_f(B, H, H, h, H, 1, packed, out, H, False)
        else:
            plan.policy.vm.gemm_packed_d(B, H, H, h, H, 1, packed, out, H, False)
    elif plan.form == GEMV:
        gemv(True, H, H, <floating>1, m, H, h, <floating>0, out)
    elif plan.form == GEMV_T:
        gemv(False, H, H, <floating>1, m_t, H, h, <floating>0, out)
    elif plan.form == GEMM_NN:
        gemm(False, False, B, H, H, <floating>1, h, H, m, H, <floating>0, out, H)
    else:
        gemm(False, True, B, H, H, <floating>1, h, H, m_t, H, <floating>0, out, H)


cdef inline void step_product_onto(const Plan *plan, int B, int H, const floating *h,
                                   const floating *packed, floating *out) noexcept nogil:
    """out (B×H) += h (B×H) · m (H×H), m packed, for the PACKED form only: the product
    added onto what out holds (the forward's input projection), each element as
    acc + out, the sum the pass would otherwise form as out + acc: the same bits (on
    the lone-row kernel for a ``lone`` plan, as :func:`step_product`)."""
    if plan.lone:
        if floating is float:
            plan.policy.vm.gemm_lone_f(H, H, h, packed, out, True)
        else:
            plan.policy.vm.gemm_lone_d(H, H, h, packed, out, True)
    elif floating is float:
        plan.policy.vm.gemm_packed_f(B, H, H, h, H, 1, packed, out, H, True)
    else:
        plan.policy.vm.gemm_packed_d(B, H, H, h, H, 1, packed, out, H, True)


cdef inline void pack_step_matrix(const Plan *plan, int H, const floating *m, long sk,
                                  long sc, floating *packed) noexcept nogil:
    """Pack the step matrix (element (k, c) at m[k·sk + c·sc]) for the PACKED form."""
    if floating is float:
        rnn_pack_s(H, H, plan.nr, m, sk, sc, packed)
    else:
        rnn_pack_d(H, H, plan.nr, m, sk, sc, packed)


cdef inline void step_pass(const Plan *plan, bint relu, int n, floating *h,
                           const floating *r, const floating *b) noexcept nogil:
    """h = f(h + r + b) over one row of n values."""
    if floating is float:
        (plan.policy.vm.relu_step_f if relu else plan.policy.vm.tanh_step_f)(n, h, r, b)
    else:
        (plan.policy.vm.relu_step_d if relu else plan.policy.vm.tanh_step_d)(n, h, r, b)


cdef inline void grad_pass(const Plan *plan, bint relu, int n, floating *delta,
                           const floating *dy, const floating *carry,
                           const floating *h) noexcept nogil:
    """delta = (dy + carry) ⊙ f'(a) over one row, f' read off h = f(a)."""
    if floating is float:
        (plan.policy.vm.relu_grad_f if relu else plan.policy.vm.tanh_grad_f)(
            n, delta, dy, carry, h)
    else:
        (plan.policy.vm.relu_grad_d if relu else plan.policy.vm.tanh_grad_d)(
            n, delta, dy, carry, h)


cdef inline void sum_rows(const Plan *plan, Py_ssize_t rows, int n, Py_ssize_t ld,
                          floating *acc, const floating *x) noexcept nogil:
    """acc (n) += Σ_k x[k·ld : k·ld + n] over ``rows`` rows, in row order."""
    if floating is float:
        plan.policy.vm.sum_rows_f(rows, n, ld, acc, x)
    else:
        plan.policy.vm.sum_rows_d(rows, n, ld, acc, x)


# Below this depth a weight-gradient product on the BLAS runs as rows of scaled rows of
# B (the table's small_depth, _vmath_impl.h): the depth of a short call's weight
# gradients is its T·B.
cdef enum:
    SMALL_DEPTH = 12


cdef inline void seq_product(const Plan *plan, Py_ssize_t M, int N, Py_ssize_t K,
                             const floating *a, Py_ssize_t ar, Py_ssize_t ak,
                             const floating *b, Py_ssize_t bk, Py_ssize_t bj,
                             floating *c, Py_ssize_t ldc, bint accumulate,
                             floating *work) noexcept nogil:
    """C (M×N) (+)= A (M×K) · B (K×N), element (i, k) of A at a[i·ar + k·ak] and
    (k, j) of B at b[k·bk + j·bj], each with one unit stride: a whole-sequence product.

    On the table's packed kernels (_gemm.h) when the plan says so (``work`` then holds workspace_size's elements),
    else on the BLAS, the strides mapped onto its transposition flags. M, N and K fit
    in an int (check_sizes).
    """
    if plan.policy.own_gemm:
        if floating is float:
            plan.policy.vm.gemm_f(M, N, K, a, ar, ak, b, bk, bj, c, ldc, accumulate, work)
        else:
            plan.policy.vm.gemm_d(M, N, K, a, ar, ak, b, bk, bj, c, ldc, accumulate, work)
        return
    cdef floating beta = 1 if accumulate else 0
    if K < SMALL_DEPTH and K >= 1 and ak != 1 and bj == 1 and M > 1:
        # a short call's weight gradients, Δᵀ·X (A a transpose, depth T·B): OpenBLAS's
        # sgemm takes twice as long as one pass over C for a 1024×1024 outer product
        # (perf-notes §25). ∂x and the projections keep the BLAS, whose bits the
        # packed kernels share at small depths (the checkpointed route computes ∂x so).
        if floating is float:
            plan.policy.vm.small_depth_f(M, N, K, a, ar, ak, b, bk, c, ldc, accumulate)
        else:
            plan.policy.vm.small_depth_d(M, N, K, a, ar, ak, b, bk, c, ldc, accumulate)
        return
    if M == 1 and K >= 1 and N >= 1 and ak == 1:
        # one row (a short call's one step): a matrix-vector product, which packs nothing
        if bj == 1 and bk >= N:          # B row-major (K×N): c = Bᵀ a
            gemv(True, <int>K, N, <floating>1, b, <int>bk, a, beta, c)
            return
        if bk == 1 and bj >= K:          # B = Wᵀ of a row-major (N×K) W: c = W a
            gemv(False, N, <int>K, <floating>1, b, <int>bj, a, beta, c)
            return
    # A is (M×K) row-major (unit column stride) or the transpose of a (K×M) one; the
    # leading dimension of a single row or column is free, so give the BLAS a legal one
    cdef bint ta = ak != 1, tb = bj != 1
    cdef Py_ssize_t lda = (ak if K > 1 else M) if ta else (ar if M > 1 else K)
    cdef Py_ssize_t ldb = (bj if N > 1 else K) if tb else (bk if K > 1 else N)
    gemm(ta, tb, <int>M, N, <int>K, <floating>1, a, <int>lda, b, <int>ldb, beta, c,
         <int>ldc)


cdef inline Py_ssize_t workspace_size(const Plan *plan, Py_ssize_t N, Py_ssize_t K,
                                      Py_ssize_t ak, bint single) noexcept nogil:
    """Elements of the workspace seq_product needs, under this plan, for products N
    wide and K deep whose A has column stride ``ak`` (at least 1, so that its first
    element can be addressed)."""
    cdef int nr = (plan.policy.vm.gemm_info_f if single else plan.policy.vm.gemm_info_d).nr
    cdef Py_ssize_t n = rnn_gemm_work(<int>N, K, nr, ak, 4 if single else 8) \
        if plan.policy.own_gemm else 0
    return n if n > 1 else 1


cdef inline void transpose(Py_ssize_t n, const floating *a, floating *a_t) noexcept nogil:
    """a_t = aᵀ for an (n×n) row-major a, in cache-sized tiles."""
    cdef Py_ssize_t i0, j0, i, j
    for i0 in range(0, n, 32):
        for j0 in range(0, n, 32):
            for i in range(i0, i0 + 32 if i0 + 32 < n else n):
                for j in range(j0, j0 + 32 if j0 + 32 < n else n):
                    a_t[j * n + i] = a[i * n + j]


cdef inline void pack_rect(const Plan *plan, int K, int N, const floating *w, bint trans,
                           floating *packed) noexcept nogil:
    """Pack op(w) (K×N) for the PACKED form of :func:`rect_product`, into
    ``rnn_packed_size(K, N, plan.nr)`` elements: op(w) = wᵀ of a row-major (N×K) w
    if ``trans``, else a row-major (K×N) w itself."""
    cdef long sk = 1 if trans else N
    cdef long sc = K if trans else 1
    if floating is float:
        rnn_pack_s(K, N, plan.nr, w, sk, sc, packed)
    else:
        rnn_pack_d(K, N, plan.nr, w, sk, sc, packed)


cdef inline void rect_product(const Plan *plan, int M, int N, int K, const floating *a,
                              Py_ssize_t lda, const floating *w, bint trans,
                              const floating *packed, floating *out, Py_ssize_t ldo,
                              bint accumulate) noexcept nogil:
    """out (M×N) (+)= a (M×K) · op(w), op(w) as in :func:`pack_rect`: a per-step
    product whose matrix need not be square (the G·H gate columns of the gated cells,
    LSTM's projection). Rows of a at a stride of ``lda``, of out at ``ldo``.

    On the packed micro-kernel when the plan's form is PACKED (``packed`` then holds
    pack_rect's op(w), ``w`` need not be valid) — the lone-row kernel for the one row of
    a ``lone`` plan —, else on the BLAS with w as it is (no transposed copy). K >= 1.
    """
    cdef floating beta = 1 if accumulate else 0
    if plan.lone and M == 1:
        if floating is float:
            plan.policy.vm.gemm_lone_f(N, K, a, packed, out, accumulate)
        else:
            plan.policy.vm.gemm_lone_d(N, K, a, packed, out, accumulate)
    elif plan.form == PACKED:
        if floating is float:
            plan.policy.vm.gemm_packed_f(M, N, K, a, lda, 1, packed, out, ldo, accumulate)
        else:
            plan.policy.vm.gemm_packed_d(M, N, K, a, lda, 1, packed, out, ldo, accumulate)
    elif M == 1:
        if trans:
            gemv(False, N, K, <floating>1, w, K, a, beta, out)
        else:
            gemv(True, K, N, <floating>1, w, N, a, beta, out)
    else:
        gemm(False, trans, M, N, K, <floating>1, a, <int>lda, w, K if trans else N, beta,
             out, <int>ldo)


# -- the gated cells' fused passes (_gated.pxi's loops, _vmath_impl.h's passes) ----------

cdef enum CellKind:
    LSTM_CELL      # gates [i f g o]; states h and c; saves the activated gates (4H)
    GRU_CELL       # gates [r z n]; state h; saves [r z n gh_n] (4H)


cdef inline void cell_step(const Plan *plan, CellKind kind, int H, floating *s,
                           const floating *rec, const floating *b1, const floating *b2,
                           const floating *h_prev, floating *h, const floating *c_prev,
                           floating *c) noexcept nogil:
    """The fused forward pass of one row of one step: ``s`` holds x_t W_ihᵀ on entry and
    what backward needs on return; ``rec`` is h_{t-1} W_hhᵀ (LSTM: NULL where ``s``
    holds it added already); b1, b2 the biases (LSTM: b_ih + b_hh and unused; GRU:
    b_ih, b_hh); ``h`` receives h_t (LSTM: m_t)."""
    if kind == LSTM_CELL:
        if floating is float:
            plan.policy.vm.lstm_step_f(H, s, rec, b1, c_prev, c, h)
        else:
            plan.policy.vm.lstm_step_d(H, s, rec, b1, c_prev, c, h)
    else:
        if floating is float:
            plan.policy.vm.gru_step_f(H, s, rec, b1, b2, h_prev, h)
        else:
            plan.policy.vm.gru_step_d(H, s, rec, b1, b2, h_prev, h)


cdef inline void cell_grad(const Plan *plan, CellKind kind, int H, floating *delta,
                           floating *eps, const floating *dh_a, floating *dh_b,
                           const floating *s, const floating *h_prev, const floating *c,
                           const floating *c_prev, floating *carry_c,
                           floating *m) noexcept nogil:
    """The fused backward pass of one row of one step: δ (and GRU's ε = ∂L/∂gh) from
    ∂L/∂h_t = dh_a + dh_b (LSTM with a projection: ∂m and a zero row); LSTM carries
    ∂L/∂c in ``carry_c`` and writes m_t; GRU leaves ∂h_t ⊙ z in ``dh_b``."""
    if kind == LSTM_CELL:
        if floating is float:
            plan.policy.vm.lstm_grad_f(H, delta, dh_a, dh_b, s, c, c_prev, carry_c, m)
        else:
            plan.policy.vm.lstm_grad_d(H, delta, dh_a, dh_b, s, c, c_prev, carry_c, m)
    else:
        if floating is float:
            plan.policy.vm.gru_grad_f(H, delta, eps, dh_a, dh_b, s, h_prev)
        else:
            plan.policy.vm.gru_grad_d(H, delta, eps, dh_a, dh_b, s, h_prev)


cdef inline void add_rows(const Plan *plan, int n, floating *out, const floating *a,
                          const floating *b) noexcept nogil:
    """out = a + b over one row of n values."""
    if floating is float:
        plan.policy.vm.add_f(n, out, a, b)
    else:
        plan.policy.vm.add_d(n, out, a, b)
