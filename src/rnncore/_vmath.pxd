"""Declarations of _vmath.h: the element-wise passes and the packed products (_gemm.h)
per instruction set, and the policy that says which of them run."""

cdef extern from "_vmath.h" nogil:
    ctypedef struct rnn_gemm_info:
        int nr
        long row_max_bytes
        int lone_max_n
        int mr
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
        void (*sum_rows_f)(long, int, long, float *, const float *) noexcept nogil
        void (*sum_rows_d)(long, int, long, double *, const double *) noexcept nogil
        void (*add_f)(int, float *, const float *, const float *) noexcept nogil
        void (*add_d)(int, double *, const double *, const double *) noexcept nogil
        void (*small_depth_f)(long, int, long, const float *, long, long, const float *,
                              long, float *, long, int) noexcept nogil
        void (*small_depth_d)(long, int, long, const double *, long, long,
                              const double *, long, double *, long, int) noexcept nogil
        void (*lstm_step_f)(int, float *, const float *, const float *, const float *,
                            float *, float *) noexcept nogil
        void (*lstm_step_d)(int, double *, const double *, const double *,
                            const double *, double *, double *) noexcept nogil
        void (*gru_step_f)(int, float *, const float *, const float *, const float *,
                           const float *, float *) noexcept nogil
        void (*gru_step_d)(int, double *, const double *, const double *,
                           const double *, const double *, double *) noexcept nogil
        void (*lstm_grad_f)(int, float *, const float *, const float *, const float *,
                            const float *, const float *, float *, float *) noexcept nogil
        void (*lstm_grad_d)(int, double *, const double *, const double *,
                            const double *, const double *, const double *, double *,
                            double *) noexcept nogil
        void (*gru_grad_f)(int, float *, float *, const float *, float *, const float *,
                           const float *) noexcept nogil
        void (*gru_grad_d)(int, double *, double *, const double *, double *,
                           const double *, const double *) noexcept nogil
        rnn_gemm_info gemm_info_f, gemm_info_d
        void (*gemm_f)(long, int, long, const float *, long, long, const float *, long,
                       long, float *, long, int, float *) noexcept nogil
        void (*gemm_d)(long, int, long, const double *, long, long, const double *, long,
                       long, double *, long, int, double *) noexcept nogil
        void (*gemm_packed_f)(long, int, long, const float *, long, long, const float *,
                              float *, long, int) noexcept nogil
        void (*gemm_packed_d)(long, int, long, const double *, long, long,
                              const double *, double *, long, int) noexcept nogil
        void (*gemm_lone_f)(int, long, const float *, const float *, float *,
                            int) noexcept nogil
        void (*gemm_lone_d)(int, long, const double *, const double *, double *,
                            int) noexcept nogil
    ctypedef struct rnn_policy:
        const rnn_vm_table *vm
        int isa
        int own_gemm
    int rnn_vm_supported()
    int rnn_vm_resolve(int index)
    const char *rnn_vm_name(int index)
    int rnn_vm_step_nr(const rnn_vm_table *t, long B, long N, long K, int single)
    int rnn_vm_step_lone(const rnn_vm_table *t, long B, long N, int single)
    int rnn_vm_tables_have_gemm(int isa)
    unsigned int rnn_flush_denormals()
    void rnn_restore_mxcsr(unsigned int caller)
    void rnn_policy_init()
    void rnn_policy_store(int isa, int own_gemm)
    rnn_policy rnn_policy_load()
    long rnn_short_rows_load()
    void rnn_short_rows_store(long rows)
    long rnn_packed_size(long K, int N, int nr)
    long rnn_gemm_work(int N, long K, int nr, long ak, int elsize)
    void rnn_pack_s(long K, int N, int nr, const float *m, long sk, long sc, float *out)
    void rnn_pack_d(long K, int N, int nr, const double *m, long sk, long sc, double *out)
