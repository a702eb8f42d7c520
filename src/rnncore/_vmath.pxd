"""Declarations of _vmath.h: the element-wise passes per instruction set, the packed
per-step and whole-sequence kernels, and the policy that says which of them run."""

cdef extern from "_vmath.h" nogil:
    ctypedef struct rnn_vm_table:
        const char *name
        void (*tanh_step_f)(int, float *, const float *, const float *) noexcept nogil
        void (*relu_step_f)(int, float *, const float *, const float *) noexcept nogil
        void (*tanh_step_d)(int, double *, const double *, const double *) noexcept nogil
        void (*relu_step_d)(int, double *, const double *, const double *) noexcept nogil
        void (*tanh_grad_f)(int, float *, const float *, const float *,
                            const float *) noexcept nogil
        void (*relu_grad_f)(int, float *, const float *, const float *,
                            const float *) noexcept nogil
        void (*tanh_grad_d)(int, double *, const double *, const double *,
                            const double *) noexcept nogil
        void (*relu_grad_d)(int, double *, const double *, const double *,
                            const double *) noexcept nogil
        void (*sum_rows_f)(long, int, float *, const float *) noexcept nogil
        void (*sum_rows_d)(long, int, double *, const double *) noexcept nogil
        void (*rowmm_f)(int, int, const float *, const float *, float *) noexcept nogil
    ctypedef struct rnn_policy:
        const rnn_vm_table *vm
        int isa
        int avx512
        int gemm512
    int rnn_vm_supported()
    int rnn_vm_resolve(int index)
    const char *rnn_vm_name(int index)
    int rnn_vm_rowmm_nr(const rnn_vm_table *t, long B, long H)
    void rnn_policy_init()
    void rnn_policy_store(int isa, int gemm512)
    rnn_policy rnn_policy_load()
    long rnn_packed_size(int H, int nr)
    void rnn_pack_f(int H, int nr, const float *m, long sk, long sc, float *packed)
    int RNN_HAVE_GEMM512
    long rnn_gemm512_work(int N, long K, int nr)
    void rnn_gemm512_ps(long M, int N, long K, const float *a, long ar, long ak,
                        const float *b, long bk, long bj, float *c, long ldc,
                        int accumulate, float *work)
    void rnn_gemm512_pd(long M, int N, long K, const double *a, long ar, long ak,
                        const double *b, long bk, long bj, double *c, long ldc,
                        int accumulate, double *work)
    void rnn_gpack_pd(long K, int N, const double *m, long sk, long sc, double *out)
    void rnn_gemm512_packed_pd(long M, int N, long K, const double *a, long ar, long ak,
                               const double *packed, double *c, long ldc, int accumulate)
