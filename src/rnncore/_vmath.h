/* Vectorised element-wise passes for the kernels, with the instruction set chosen at
 * run time.
 *
 * _vmath_impl.h is compiled three times: for the x86-64 baseline (SSE2), for AVX2+FMA
 * and for AVX-512, each copy under its own names, gathered in one table of function
 * pointers per instruction set. The policy (rnn_policy, below) names the table in use;
 * each kernel call reads it once and hands it to its loops. No -march flag is needed,
 * so the extension runs on any x86-64.
 */
#ifndef RNNCORE_VMATH_H
#define RNNCORE_VMATH_H
#include <math.h>
#include <string.h>

typedef void (*rnn_step_f_t)(int, float *, const float *, const float *);
typedef void (*rnn_step_d_t)(int, double *, const double *, const double *);
typedef void (*rnn_grad_f_t)(int, float *, const float *, const float *, const float *);
typedef void (*rnn_grad_d_t)(int, double *, const double *, const double *, const double *);
typedef void (*rnn_sum_f_t)(long, int, long, float *, const float *);
typedef void (*rnn_sum_d_t)(long, int, long, double *, const double *);
typedef void (*rnn_add_f_t)(int, float *, const float *, const float *);
typedef void (*rnn_add_d_t)(int, double *, const double *, const double *);
typedef void (*rnn_small_depth_f_t)(long, int, long, const float *, long, long,
                                    const float *, long, float *, long, int);
typedef void (*rnn_small_depth_d_t)(long, int, long, const double *, long, long,
                                    const double *, long, double *, long, int);
/* The gated cells' fused passes (_vmath_impl.h says what each computes). */
typedef void (*rnn_lstm_step_f_t)(int, float *, const float *, const float *,
                                  const float *, float *, float *);
typedef void (*rnn_lstm_step_d_t)(int, double *, const double *, const double *,
                                  const double *, double *, double *);
typedef void (*rnn_gru_step_f_t)(int, float *, const float *, const float *,
                                 const float *, const float *, float *);
typedef void (*rnn_gru_step_d_t)(int, double *, const double *, const double *,
                                 const double *, const double *, double *);
typedef void (*rnn_lstm_grad_f_t)(int, float *, const float *, const float *,
                                  const float *, const float *, const float *, float *,
                                  float *);
typedef void (*rnn_lstm_grad_d_t)(int, double *, const double *, const double *,
                                  const double *, const double *, const double *,
                                  double *, double *);
typedef void (*rnn_gru_grad_f_t)(int, float *, float *, const float *, float *,
                                 const float *, const float *);
typedef void (*rnn_gru_grad_d_t)(int, double *, double *, const double *, double *,
                                 const double *, const double *);
typedef void (*rnn_gemm_f_t)(long, int, long, const float *, long, long, const float *,
                             long, long, float *, long, int, float *);
typedef void (*rnn_gemm_d_t)(long, int, long, const double *, long, long, const double *,
                             long, long, double *, long, int, double *);
typedef void (*rnn_gemm_packed_f_t)(long, int, long, const float *, long, long,
                                    const float *, float *, long, int);
typedef void (*rnn_gemm_packed_d_t)(long, int, long, const double *, long, long,
                                    const double *, double *, long, int);
typedef void (*rnn_gemm_lone_f_t)(int, long, const float *, const float *, float *, int);
typedef void (*rnn_gemm_lone_d_t)(int, long, const double *, const double *, double *,
                                  int);

/* The packed products of one instruction set (_gemm.h), per dtype: panel width (0: none),
 * the largest step matrix (bytes) a one-row batch still packs — beyond it the BLAS's
 * gemv, which streams the matrix once a step without packing it, is faster (0: no
 * limit) —, and the widest per-step product of a one-row batch run on the lone-row
 * kernel, two chains over the depth (0: none); measured, docs/perf-notes.md; and the
 * rows of the micro-kernel's tile. */
typedef struct {
    int nr;
    long row_max_bytes;
    int lone_max_n;
    int mr;             /* rows of the micro-kernel's tile (0: none) */
} rnn_gemm_info;

typedef struct {
    const char *name;
    rnn_step_f_t tanh_step_f, relu_step_f;
    rnn_step_d_t tanh_step_d, relu_step_d;
    rnn_grad_f_t tanh_grad_f, relu_grad_f;
    rnn_grad_d_t tanh_grad_d, relu_grad_d;
    rnn_sum_f_t sum_rows_f;
    rnn_sum_d_t sum_rows_d;
    rnn_add_f_t add_f;
    rnn_add_d_t add_d;
    rnn_small_depth_f_t small_depth_f;
    rnn_small_depth_d_t small_depth_d;
    rnn_lstm_step_f_t lstm_step_f;
    rnn_lstm_step_d_t lstm_step_d;
    rnn_gru_step_f_t gru_step_f;
    rnn_gru_step_d_t gru_step_d;
    rnn_lstm_grad_f_t lstm_grad_f;
    rnn_lstm_grad_d_t lstm_grad_d;
    rnn_gru_grad_f_t gru_grad_f;
    rnn_gru_grad_d_t gru_grad_d;
    rnn_gemm_info gemm_info_f, gemm_info_d;
    rnn_gemm_f_t gemm_f;
    rnn_gemm_d_t gemm_d;
    rnn_gemm_packed_f_t gemm_packed_f;
    rnn_gemm_packed_d_t gemm_packed_d;
    rnn_gemm_lone_f_t gemm_lone_f;
    rnn_gemm_lone_d_t gemm_lone_d;
} rnn_vm_table;

#define VM(name) name##_base
#include "_vmath_impl.h"
#undef VM

#if defined(__GNUC__) && defined(__x86_64__)
#define RNN_VM_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VM(name) name##_avx2
#include "_vmath_impl.h"
#undef VM
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define VM(name) name##_avx512
#include "_vmath_impl.h"
#undef VM
#pragma GCC pop_options
#endif

#include "_gemm.h"

#define RNN_VM_TABLE(sfx, label, packed) { label,                               \
    tanh_step_f_##sfx, relu_step_f_##sfx, tanh_step_d_##sfx, relu_step_d_##sfx,   \
    tanh_grad_f_##sfx, relu_grad_f_##sfx, tanh_grad_d_##sfx, relu_grad_d_##sfx,   \
    sum_rows_f_##sfx, sum_rows_d_##sfx, add_f_##sfx, add_d_##sfx,                 \
    small_depth_f_##sfx, small_depth_d_##sfx,                                     \
    lstm_step_f_##sfx, lstm_step_d_##sfx, gru_step_f_##sfx, gru_step_d_##sfx,     \
    lstm_grad_f_##sfx, lstm_grad_d_##sfx, gru_grad_f_##sfx, gru_grad_d_##sfx, packed }
#define RNN_VM_NO_PACKED {0, 0, 0, 0}, {0, 0, 0, 0}, NULL, NULL, NULL, NULL, NULL, NULL
#define RNN_VM_PACKED(isa, mr, nr_f, row_f, lone_f, nr_d, row_d, lone_d)            \
    {nr_f, row_f, lone_f, mr}, {nr_d, row_d, lone_d, mr},                          \
    rnn_gemm_s_##isa, rnn_gemm_d_##isa, rnn_gemm_packed_s_##isa,                   \
    rnn_gemm_packed_d_##isa, rnn_gemm_lone_s_##isa, rnn_gemm_lone_d_##isa

static const rnn_vm_table rnn_vm_tables[] = {
    RNN_VM_TABLE(base, "baseline", RNN_VM_NO_PACKED),
#ifdef RNN_VM_X86
    RNN_VM_TABLE(avx2, "avx2", RNN_VM_PACKED(avx2, RNN_G_MR_AVX2, 16, 768L << 10, 128, 8,
                                             768L << 10, 128)),
    RNN_VM_TABLE(avx512, "avx512", RNN_VM_PACKED(avx512, RNN_G_MR_AVX512, 32, 2L << 20, 64,
                                                 16, 2L << 20, 128)),
#endif
};
#define RNN_VM_NTABLES ((int)(sizeof(rnn_vm_tables) / sizeof(rnn_vm_tables[0])))

/* Which tables this CPU can run: a bit mask over rnn_vm_tables. */
static int rnn_vm_supported(void)
{
    int mask = 1;
#ifdef RNN_VM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        mask |= 2;
    if ((mask & 2) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        mask |= 4;
#endif
    return mask;
}

/* The table `index` asks for (0 baseline, 1 avx2, 2 avx512), or the best supported if
 * index < 0; -1 if the CPU cannot run the one asked for. Pure: selects nothing. */
static int rnn_vm_resolve(int index)
{
    int mask = rnn_vm_supported();
    if (index < 0) {
        for (index = RNN_VM_NTABLES - 1; !(mask >> index & 1); index--)
            ;
    } else if (index >= RNN_VM_NTABLES || !(mask >> index & 1)) {
        return -1;
    }
    return index;
}

/* The panel width of table t's packed per-step product for B rows of a product N wide
 * and K deep in one dtype, or 0 where the BLAS is faster. */
static int rnn_vm_step_nr(const rnn_vm_table *t, long B, long N, long K, int single)
{
    const rnn_gemm_info *g = single ? &t->gemm_info_f : &t->gemm_info_d;
    long bytes = N * K * (single ? (long)sizeof(float) : (long)sizeof(double));
    if (!g->nr || (B == 1 && g->row_max_bytes && bytes > g->row_max_bytes))
        return 0;
    return g->nr;
}

/* Whether a call of B rows, whose per-step product is N wide, runs that product on
 * table t's lone-row kernel (rnn_gemm_lone): B = 1 and N within the table's limit. */
static int rnn_vm_step_lone(const rnn_vm_table *t, long B, long N, int single)
{
    const rnn_gemm_info *g = single ? &t->gemm_info_f : &t->gemm_info_d;
    return B == 1 && g->nr && N <= g->lone_max_n;
}

/* The policy of the kernels: which element-wise table and which products run. It is
 * one value, swapped whole: set_isa / set_whole_sequence_gemm store the index of an
 * immutable entry of rnn_policies with one atomic store, and every kernel call loads it
 * once, at its start, into the plan its loops receive. A call never sees half of one
 * policy and half of another, whatever other threads set meanwhile. */
typedef struct {
    const rnn_vm_table *vm;
    int isa;          /* index of vm in rnn_vm_tables */
    int own_gemm;     /* whole-sequence products on vm's packed kernels, not the BLAS */
} rnn_policy;

static rnn_policy rnn_policies[RNN_VM_NTABLES * 2];     /* [isa * 2 + own_gemm] */
static int rnn_policy_index;

static void rnn_policy_init(void)
{
    for (int i = 0; i < RNN_VM_NTABLES * 2; i++) {
        rnn_policy *p = &rnn_policies[i];
        p->isa = i / 2;
        p->vm = &rnn_vm_tables[p->isa];
        p->own_gemm = p->vm->gemm_f != NULL && (i & 1);
    }
}

/* Make table `isa` (a supported index) and, where it has packed kernels, those for the
 * whole-sequence products (if own_gemm) the policy of every later call. */
static void rnn_policy_store(int isa, int own_gemm)
{
    int i = isa * 2 + (own_gemm && rnn_policies[isa * 2 + 1].own_gemm);
    __atomic_store_n(&rnn_policy_index, i, __ATOMIC_RELEASE);
}

/* Whether table `isa` has packed kernels for the whole-sequence products. */
static inline int rnn_vm_tables_have_gemm(int isa)
{
    return isa >= 0 && isa < RNN_VM_NTABLES && rnn_vm_tables[isa].gemm_f != NULL;
}

static inline rnn_policy rnn_policy_load(void)
{
    return rnn_policies[__atomic_load_n(&rnn_policy_index, __ATOMIC_ACQUIRE)];
}

/* Short calls: a call with fewer rows of steps (T·B) than this runs its per-step
 * product and its whole-sequence products on the BLAS, on the weights as they are:
 * packing W_hh (and W_ih, for the rnncore GEMM) costs O(H²) per call, more than the few
 * products it would speed up (docs/perf-notes.md §18). Read once per call, like the
 * policy; changed only by tests and benchmarks (_kernels.set_short_call_rows). */
static long rnn_short_rows = 12;

static inline long rnn_short_rows_load(void)
{
    return __atomic_load_n(&rnn_short_rows, __ATOMIC_RELAXED);
}

static inline void rnn_short_rows_store(long rows)
{
    __atomic_store_n(&rnn_short_rows, rows, __ATOMIC_RELAXED);
}

static const char *rnn_vm_name(int index)
{
    return index >= 0 && index < RNN_VM_NTABLES ? rnn_vm_tables[index].name : "";
}

/* Denormals. A recurrence whose states decay (small weights, inputs that stop) spends
 * most of a long sequence in denormal numbers, where this CPU's arithmetic is slower
 * (long-denormal against long: 1.34× forward+backward, 1.78× forward, measured in
 * docs/perf-notes.md). The kernels therefore run with denormal results flushed to zero
 * and denormal operands read as zero (MXCSR's FTZ and DAZ bits) and give the caller's
 * MXCSR back when they return: values below the smallest normal number (1.2e-38 in
 * float32, 2.2e-308 in float64) become 0, 2⁻¹²⁶ absolute at most. */
#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>
static inline unsigned int rnn_flush_denormals(void)
{
    unsigned int caller = _mm_getcsr();
    _mm_setcsr(caller | 0x8040);          /* FTZ (bit 15) and DAZ (bit 6) */
    return caller;
}
static inline void rnn_restore_mxcsr(unsigned int caller) { _mm_setcsr(caller); }
#else
static inline unsigned int rnn_flush_denormals(void) { return 0; }
static inline void rnn_restore_mxcsr(unsigned int caller) { (void)caller; }
#endif

#endif
