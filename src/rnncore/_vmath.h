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
typedef void (*rnn_sum_f_t)(long, int, float *, const float *);
typedef void (*rnn_sum_d_t)(long, int, double *, const double *);
typedef void (*rnn_rowmm_f_t)(int, int, const float *, const float *, float *);

typedef struct {
    const char *name;
    rnn_step_f_t tanh_step_f, relu_step_f;
    rnn_step_d_t tanh_step_d, relu_step_d;
    rnn_grad_f_t tanh_grad_f, relu_grad_f;
    rnn_grad_d_t tanh_grad_d, relu_grad_d;
    rnn_sum_f_t sum_rows_f;
    rnn_sum_d_t sum_rows_d;
    /* float32 per-step product on a packed matrix (_rowmm.h): panel width, kernel, and
     * the largest B and H where it beats the BLAS (0: always, measured in perf-notes). */
    int rowmm_nr;
    rnn_rowmm_f_t rowmm_f;
    int rowmm_max_b, rowmm_max_h;
} rnn_vm_table;

#define VM(name) name##_base
#include "_vmath_impl.h"
#undef VM

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
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

#define RNN_VM_NO_ROWMM 0, NULL, 0, 0
#define RNN_VM_ROWMM(nr, fn, max_b, max_h) nr, fn, max_b, max_h
#ifdef RNN_VM_X86
#include "_rowmm.h"
#include "_gemm512.h"
#define RNN_HAVE_GEMM512 1
#else
#define RNN_HAVE_GEMM512 0
static inline long rnn_gemm512_work(int N, long K, int nr) { return 0; }
static void rnn_gemm512_ps(long M, int N, long K, const float *a, long ar, long ak,
                           const float *b, long bk, long bj, float *c, long ldc,
                           int accumulate, float *work) {}
static void rnn_gemm512_pd(long M, int N, long K, const double *a, long ar, long ak,
                           const double *b, long bk, long bj, double *c, long ldc,
                           int accumulate, double *work) {}
static void rnn_gpack_pd(long K, int N, const double *m, long sk, long sc, double *out) {}
static void rnn_gemm512_packed_pd(long M, int N, long K, const double *a, long ar,
                                  long ak, const double *packed, double *c, long ldc,
                                  int accumulate) {}
#endif

#define RNN_VM_TABLE(sfx, label, rowmm) { label,                                \
    tanh_step_f_##sfx, relu_step_f_##sfx, tanh_step_d_##sfx, relu_step_d_##sfx,   \
    tanh_grad_f_##sfx, relu_grad_f_##sfx, tanh_grad_d_##sfx, relu_grad_d_##sfx,   \
    sum_rows_f_##sfx, sum_rows_d_##sfx, rowmm }

static const rnn_vm_table rnn_vm_tables[] = {
    RNN_VM_TABLE(base, "baseline", RNN_VM_NO_ROWMM),
#ifdef RNN_VM_X86
    RNN_VM_TABLE(avx2, "avx2", RNN_VM_ROWMM(16, rnn_rowmm_f_avx2, 4, 64)),
    RNN_VM_TABLE(avx512, "avx512", RNN_VM_ROWMM(32, rnn_rowmm_f_avx512, 0, 0)),
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

/* Whether the float32 per-step product of B rows and width H runs on table t's packed
 * kernel; returns its panel width, or 0 for the BLAS. */
static int rnn_vm_rowmm_nr(const rnn_vm_table *t, long B, long H)
{
    if (!t->rowmm_nr || (t->rowmm_max_b && B > t->rowmm_max_b) ||
        (t->rowmm_max_h && H > t->rowmm_max_h))
        return 0;
    return t->rowmm_nr;
}

/* The policy of the kernels: which element-wise table and which products run. It is
 * one value, swapped whole: set_isa / set_whole_sequence_gemm store the index of an
 * immutable entry of rnn_policies with one atomic store, and every kernel call loads it
 * once, at its start, into the plan its loops receive. A call never sees half of one
 * policy and half of another, whatever other threads set meanwhile. */
typedef struct {
    const rnn_vm_table *vm;
    int isa;          /* index of vm in rnn_vm_tables */
    int avx512;       /* the AVX-512 kernels run: float64 per-step product packed */
    int gemm512;      /* whole-sequence products on _gemm512.h, not the BLAS */
} rnn_policy;

static rnn_policy rnn_policies[RNN_VM_NTABLES * 2];     /* [isa * 2 + gemm512] */
static int rnn_policy_index;

static void rnn_policy_init(void)
{
    for (int i = 0; i < RNN_VM_NTABLES * 2; i++) {
        rnn_policy *p = &rnn_policies[i];
        p->isa = i / 2;
        p->vm = &rnn_vm_tables[p->isa];
        p->avx512 = RNN_HAVE_GEMM512 && strcmp(p->vm->name, "avx512") == 0;
        p->gemm512 = p->avx512 && (i & 1);
    }
}

/* Make table `isa` (a supported index) and, where it runs AVX-512, _gemm512.h for the
 * whole-sequence products (if gemm512) the policy of every later call. */
static void rnn_policy_store(int isa, int gemm512)
{
    int i = isa * 2 + (gemm512 && rnn_policies[isa * 2 + 1].gemm512);
    __atomic_store_n(&rnn_policy_index, i, __ATOMIC_RELEASE);
}

static inline rnn_policy rnn_policy_load(void)
{
    return rnn_policies[__atomic_load_n(&rnn_policy_index, __ATOMIC_ACQUIRE)];
}

static const char *rnn_vm_name(int index)
{
    return index >= 0 && index < RNN_VM_NTABLES ? rnn_vm_tables[index].name : "";
}

#endif
