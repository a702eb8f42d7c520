# cython: language_level=3
"""The one place that knows which BLAS rnncore calls and how.

The kernels link the OpenBLAS build that NumPy and SciPy themselves build against
(the ``scipy-openblas32`` wheel: CBLAS symbols prefixed ``scipy_``, 32-bit integers).
Through its CBLAS interface row-major products are passed as they are; kernels speak
row-major only and call :func:`gemm`, whose fused ``floating`` argument picks sgemm or
dgemm at compile time.
"""

cdef extern from "cblas.h" nogil:
    ctypedef enum CBLAS_ORDER:
        CblasRowMajor
    ctypedef enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
    void scipy_cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, double alpha, const double *a, int lda,
                           const double *b, int ldb, double beta, double *c, int ldc)
    void scipy_cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int m, int n,
                           float alpha, const float *a, int lda, const float *x, int incx,
                           float beta, float *y, int incy)
    void scipy_cblas_dgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int m, int n,
                           double alpha, const double *a, int lda, const double *x,
                           int incx, double beta, double *y, int incy)
    void scipy_openblas_set_num_threads(int n)
    const char *scipy_openblas_get_corename()
    int scipy_openblas_get_num_threads()

ctypedef fused floating:
    float
    double


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C (m×n) = alpha·op(A)·op(B) + beta·C, every matrix row-major.

    op(A) is (m×k): A itself, or Aᵀ of a (k×m) A when ``trans_a``; likewise op(B) (k×n).
    Empty products are handled here (a BLAS rejects a leading dimension of 0): with
    m or n zero nothing happens; with k zero C becomes beta·C.
    """
    cdef int i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if floating is float:
        scipy_cblas_sgemm(CblasRowMajor, CblasTrans if trans_a else CblasNoTrans,
                          CblasTrans if trans_b else CblasNoTrans, m, n, k, alpha,
                          a, lda if lda > 1 else 1, b, ldb if ldb > 1 else 1,
                          beta, c, ldc if ldc > 1 else 1)
    else:
        scipy_cblas_dgemm(CblasRowMajor, CblasTrans if trans_a else CblasNoTrans,
                          CblasTrans if trans_b else CblasNoTrans, m, n, k, alpha,
                          a, lda if lda > 1 else 1, b, ldb if ldb > 1 else 1,
                          beta, c, ldc if ldc > 1 else 1)


cdef inline void gemv(bint trans_a, int m, int n, floating alpha, const floating *a,
                      int lda, const floating *x, floating beta,
                      floating *y) noexcept nogil:
    """y = alpha·op(A)·x + beta·y, A (m×n) row-major, x and y contiguous.

    op(A) is A (y has m entries) or Aᵀ (y has n entries) when ``trans_a``.
    """
    if m <= 0 or n <= 0:
        return
    if floating is float:
        scipy_cblas_sgemv(CblasRowMajor, CblasTrans if trans_a else CblasNoTrans, m, n,
                          alpha, a, lda, x, 1, beta, y, 1)
    else:
        scipy_cblas_dgemv(CblasRowMajor, CblasTrans if trans_a else CblasNoTrans, m, n,
                          alpha, a, lda, x, 1, beta, y, 1)
