/* Packed products for the kernels: C (M×N) (+)= A (M×K) · B (K×N), B packed.
 *
 * One packer and one micro-kernel family serve every product the kernels compute
 * themselves:
 *   - the per-step recurrent product h_{t-1} W_hhᵀ (and δ_t W_hh), with W_hh packed
 *     once per call and reused by all T steps (a BLAS packs both operands every call);
 *   - the whole-sequence products — the input projection X·W_ihᵀ, ∂x = Δ·W_ih and the
 *     weight gradients Δᵀ·X, Δᵀ·H — where they beat the BLAS the kernels link.
 *
 * B is packed into panels of NR = 2L columns ([panel][k][NR], zero past N): whole, for
 * a matrix used many times, or one depth chunk of KB rows at a time into a small
 * workspace. A is read in place with any row and column stride (so Δᵀ needs no copy).
 * A 6×NR register block accumulates over k while a block of MB rows of A and one panel
 * stay in cache. Each element of C is one chain of fused multiply-adds over k (per
 * depth chunk), the same whichever rows or columns a call covers: splitting a product
 * by rows or by panels of columns across threads changes no bit of the result.
 *
 * The kernels are compiled per instruction set under #pragma GCC target — AVX-512
 * (L = 16 floats, 8 doubles) and AVX2+FMA (L = 8, 4) — and called only on a CPU that
 * runs them (_vmath.h's tables), so the default build runs on any x86-64.
 */
#ifndef RNNCORE_GEMM_H
#define RNNCORE_GEMM_H

#include <string.h>

#define RNN_G_MR_AVX2 6     /* rows of the tile on AVX2 (16 vector registers) */
#define RNN_G_MR_AVX512 12  /* on AVX-512 (32 registers): half the loads of B per FMA */
#define RNN_G_MRH 12        /* rows of the half-width tile (products at most L wide) */
#define RNN_G_KB 256
#define RNN_G_MB 96
#define RNN_G_WIDE 4        /* panels a single row runs against at once */
#define RNN_G_PACKJ 8       /* columns packed together when they are strided */
#define RNN_G_PREFETCH 8    /* steps of k ahead the micro-kernel asks for B's panel */
#define RNN_G_APREFETCH 8   /* steps of k ahead a packing of Δᵀ asks for its rows */
#define RNN_G_INPLACE_BYTES 256  /* B of whole panels with rows this short: read in place */

/* Elements of a packed K×N matrix in panels of nr columns. */
static inline long rnn_packed_size(long K, int N, int nr)
{
    return (long)((N + nr - 1) / nr) * nr * K;
}


#include <emmintrin.h>       /* SSE2: every x86-64 */

/* One panel of Wᵀ, element (k, j) at m[k + j·sc], into out[k·nr + j] for k < K and the
 * np <= nr columns present, by 4×4 (float) or 2×2 (double) register transposes: the
 * per-call pack of W_hh for the forward recurrence, whose cost a short sequence feels.
 * Columns from np to nr are zero. A copy: no value changes. */
static void rnn_pack_t_s(long K, int np, int nr, const float *restrict m, long sc,
                         float *restrict out)
{
    int j = 0;
    long k;
    for (; j + 4 <= np; j += 4) {
        const float *r0 = m + (long)j * sc, *r1 = r0 + sc, *r2 = r1 + sc, *r3 = r2 + sc;
        for (k = 0; k + 4 <= K; k += 4) {
            __m128 a = _mm_loadu_ps(r0 + k), b = _mm_loadu_ps(r1 + k);
            __m128 c = _mm_loadu_ps(r2 + k), d = _mm_loadu_ps(r3 + k);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            _mm_storeu_ps(out + k * nr + j, a);
            _mm_storeu_ps(out + (k + 1) * nr + j, b);
            _mm_storeu_ps(out + (k + 2) * nr + j, c);
            _mm_storeu_ps(out + (k + 3) * nr + j, d);
        }
        for (; k < K; k++) {
            out[k * nr + j] = r0[k], out[k * nr + j + 1] = r1[k];
            out[k * nr + j + 2] = r2[k], out[k * nr + j + 3] = r3[k];
        }
    }
    for (; j < nr; j++)
        for (k = 0; k < K; k++)
            out[k * nr + j] = j < np ? m[k + (long)j * sc] : 0.0f;
}

static void rnn_pack_t_d(long K, int np, int nr, const double *restrict m, long sc,
                         double *restrict out)
{
    int j = 0;
    long k;
    for (; j + 2 <= np; j += 2) {
        const double *r0 = m + (long)j * sc, *r1 = r0 + sc;
        for (k = 0; k + 2 <= K; k += 2) {
            __m128d a = _mm_loadu_pd(r0 + k), b = _mm_loadu_pd(r1 + k);
            _mm_storeu_pd(out + k * nr + j, _mm_unpacklo_pd(a, b));
            _mm_storeu_pd(out + (k + 1) * nr + j, _mm_unpackhi_pd(a, b));
        }
        for (; k < K; k++)
            out[k * nr + j] = r0[k], out[k * nr + j + 1] = r1[k];
    }
    for (; j < nr; j++)
        for (k = 0; k < K; k++)
            out[k * nr + j] = j < np ? m[k + (long)j * sc] : 0.0;
}

#define RNN_GPACK(NAME, T, PACK_T)                                                  \
/* Pack the K×N matrix whose element (k, j) is m[k·sk + j·sc] into nr-column panels. \
 * Where the columns are contiguous (sc = 1) rows of m are copied in pieces; else    \
 * (Wᵀ read off a row-major W) in groups of RNN_G_PACKJ columns, each a run of m     \
 * in memory: a whole panel's nr runs at a stride of 4 KB or more would map onto    \
 * the same few L1 sets and evict each other between consecutive k. */              \
static void NAME(long K, int N, int nr, const T *restrict m, long sk, long sc,      \
                 T *restrict out)                                                   \
{                                                                                   \
    if (sc == 1) {                                                                  \
        /* rows of m are runs: each read once, front to back, its nr-column pieces   \
         * copied into their panels (row k of panel q at out + q·nr·K + k·nr); a     \
         * panel at a time would read m down its columns, one line per row */       \
        int whole = N / nr, rest = N - whole * nr;                                  \
        long pstride = (long)nr * K;                                                \
        for (long k = 0; k < K; k++) {                                              \
            const T *row = m + k * sk;                                              \
            T *o = out + k * nr;                                                    \
            if (nr * sizeof(T) == 64)      /* sizes fixed: copies of a few moves */ \
                for (int q = 0; q < whole; q++)                                     \
                    memcpy(o + q * pstride, row + q * nr, 64);                      \
            else if (nr * sizeof(T) == 128)                                         \
                for (int q = 0; q < whole; q++)                                     \
                    memcpy(o + q * pstride, row + q * nr, 128);                     \
            else                                                                    \
                for (int q = 0; q < whole; q++)                                     \
                    memcpy(o + q * pstride, row + q * nr, (size_t)nr * sizeof(T));  \
            if (rest) {                                                             \
                T *ol = o + whole * pstride;                                        \
                memcpy(ol, row + whole * nr, (size_t)rest * sizeof(T));             \
                for (int j = rest; j < nr; j++)                                     \
                    ol[j] = (T)0;                                                   \
            }                                                                       \
        }                                                                           \
        return;                                                                     \
    }                                                                               \
    for (int p = 0; p < N; p += nr, out += (long)nr * K) {                          \
        int np = N - p < nr ? N - p : nr;                                           \
        if (sk == 1) {          /* Wᵀ off a row-major W: register transposes */     \
            PACK_T(K, np, nr, m + (long)p * sc, sc, out);                           \
            continue;                                                               \
        }                                                                           \
        for (int j0 = 0; j0 < nr; j0 += RNN_G_PACKJ)                                \
            for (long k = 0; k < K; k++)                                            \
                for (int j = j0; j < j0 + RNN_G_PACKJ && j < nr; j++)               \
                    out[k * nr + j] = j < np ? m[k * sk + (long)(p + j) * sc] : (T)0; \
    }                                                                               \
}
RNN_GPACK(rnn_pack_s, float, rnn_pack_t_s)
RNN_GPACK(rnn_pack_d, double, rnn_pack_t_d)
#undef RNN_GPACK

/* Whether the unpacked products pack blocks of A too: A read down its columns with a
 * large stride (Δᵀ, in the weight gradients Δᵀ·X and Δᵀ·H) puts the rows of one block
 * of A k·stride apart, and at strides of 1 KB and more every k of the block maps onto
 * the same few cache sets (at 1 KB, 4 of L1's 64; docs/perf-notes.md §52). Packing
 * changes no value the micro-kernel computes. */
static inline int rnn_gemm_packs_a(long ak, int elsize)
{
    return ak * elsize >= 1024;
}

#define RNN_APACK(NAME, T, MR)                                                      \
/* Pack rows [0, m) × columns [0, kb) of A (element (r, k) at a[r·ar + k·ak]) into    \
 * panels of MR rows, [panel][k][MR], for the micro-kernel. Rows that are           \
 * contiguous (ar == 1: A = Δᵀ, whose column k is row k of Δ) are read one k at a    \
 * time across every panel: each row of Δ once, front to back, rather than once per  \
 * panel at a stride of ak (which, a multiple of 4 KB for wide Δ, maps every line to \
 * one set of L1). Whole panels take a fixed-length copy (a variable-length one      \
 * becomes a memmove call per MR elements). */                                      \
static void NAME(long m, long kb, const T *restrict a, long ar, long ak, T *restrict out) \
{                                                                                   \
    if (ar == 1) {                                                                  \
        long whole = m / MR * MR;                                                   \
        for (long k = 0; k < kb; k++) {                                             \
            const T *ak0 = a + k * ak;                                              \
            T *o = out + k * MR;                                                    \
            /* row k + APREFETCH's part, a stride away that the hardware does not   \
             * fetch ahead (perf-notes §70): asked for now, one hint per line */     \
            if (k + RNN_G_APREFETCH < kb)                                           \
                for (long q = 0; q < m; q += 64 / (long)sizeof(T))                  \
                    _mm_prefetch((const char *)(ak0 + RNN_G_APREFETCH * ak + q),    \
                                 _MM_HINT_T0);                                      \
            long r0 = 0;                                                            \
            for (; r0 < whole; r0 += MR, o += MR * kb)                              \
                for (int r = 0; r < MR; r++)                                        \
                    o[r] = ak0[r0 + r];                                             \
            for (long r = 0; r0 + r < m; r++)                                       \
                o[r] = ak0[r0 + r];                                                 \
        }                                                                           \
        return;                                                                     \
    }                                                                               \
    for (long r0 = 0; r0 < m; r0 += MR) {                                           \
        long mr = m - r0 < MR ? m - r0 : MR;                                        \
        const T *ap = a + r0 * ar;                                                  \
        for (long k = 0; k < kb; k++)                                               \
            for (long r = 0; r < mr; r++)                                           \
                out[k * MR + r] = ap[r * ar + k * ak];                              \
        out += MR * kb;                                                             \
    }                                                                               \
}
/* one per instruction set: its tile's rows */
RNN_APACK(rnn_pack_rows_s_avx2, float, RNN_G_MR_AVX2)
RNN_APACK(rnn_pack_rows_d_avx2, double, RNN_G_MR_AVX2)
RNN_APACK(rnn_pack_rows_s_avx512, float, RNN_G_MR_AVX512)
RNN_APACK(rnn_pack_rows_d_avx512, double, RNN_G_MR_AVX512)
#undef RNN_APACK

/* Elements of the workspace the unpacked products need for depth K: one chunk of B,
 * and one block of A where A is packed too (A's column stride ak, elements of elsize). */
static inline long rnn_gemm_work(int N, long K, int nr, long ak, int elsize)
{
    long kb = K < RNN_G_KB ? K : RNN_G_KB;
    return rnn_packed_size(kb, N, nr) + (rnn_gemm_packs_a(ak, elsize) ? RNN_G_MB * kb : 0);
}


#if defined(__GNUC__) && defined(__x86_64__)
#define RNN_GEMM_X86 1
#include <immintrin.h>

/* Ask for the cache lines of `bytes` bytes at p (at most 128: three lines) before
 * they are needed. A hint only: no value changes, and no address is dereferenced. */
static inline __attribute__((always_inline)) void rnn_prefetch_row(const void *p,
                                                                     long bytes)
{
    const char *q = (const char *)p;
    _mm_prefetch(q, _MM_HINT_T0);
    _mm_prefetch(q + bytes / 2, _MM_HINT_T0);
    _mm_prefetch(q + bytes - 1, _MM_HINT_T0);
}

/* A case of the tile's row count n, for n < MR (larger ones never occur; their code
 * is left out). Expanded in rnn_gemm_run's switch, whose locals kb, ar0, abr, abk, w,
 * ws, cr0, ldc, ncols and acc it reads. */
#define RNN_GMK_CASE(SFX, MR, n)                                                    \
    case n:                                                                         \
        if (n < MR)                                                                 \
            rnn_gmk_##SFX(n, kb, ar0, abr, abk, w, ws, cr0, ldc, ncols, acc);       \
        break;

/* One instruction set's kernels for one dtype. VEC: the vector type of L lanes;
 * SET1/ZERO/LOAD/STORE/FMA/ADD its intrinsics; LOADN/STOREN load and store the first n
 * lanes only (0 < n < L). The micro-kernel: C[0:mr, 0:ncols] (+)= A[0:mr, 0:kb] ·
 * W[0:kb, 0:2L]. */
#define RNN_GEMM_KERNELS(SFX, T, VEC, L, MR, SET1, ZERO, LOAD, STORE, FMA, ADD, LOADN,   \
                         STOREN)                                                    \
static inline __attribute__((always_inline)) void                                   \
rnn_gmk_##SFX(const int mr, long kb, const T *a, long ar, long ak, const T *w,      \
              long ws, T *c, long ldc, int ncols, int accumulate)                   \
{                                                                                   \
    VEC acc[MR][2];                                                                 \
    for (int r = 0; r < mr; r++) {                                                  \
        acc[r][0] = acc[r][1] = ZERO();                                             \
        /* the tile of C, read or written after the loop over k: fetched meanwhile  \
         * (first, middle and last byte of its row: every cache line it touches) */ \
        rnn_prefetch_row(c + r * ldc, 2 * L * (long)sizeof(T));                     \
    }                                                                               \
    for (long k = 0; k < kb; k++) {                                                 \
        VEC w0 = LOAD(w + ws * k), w1 = LOAD(w + ws * k + L);                       \
        _mm_prefetch((const char *)(w + ws * (k + RNN_G_PREFETCH)), _MM_HINT_T0);   \
        for (int r = 0; r < mr; r++) {                                              \
            VEC av = SET1(a[r * ar + k * ak]);                                      \
            acc[r][0] = FMA(av, w0, acc[r][0]);                                     \
            acc[r][1] = FMA(av, w1, acc[r][1]);                                     \
        }                                                                           \
    }                                                                               \
    for (int r = 0; r < mr; r++) {                                                  \
        T *cr = c + r * ldc;                                                        \
        if (ncols == 2 * L) {                                                       \
            if (accumulate) {                                                       \
                acc[r][0] = ADD(acc[r][0], LOAD(cr));                               \
                acc[r][1] = ADD(acc[r][1], LOAD(cr + L));                           \
            }                                                                       \
            STORE(cr, acc[r][0]);                                                   \
            STORE(cr + L, acc[r][1]);                                               \
        } else if (ncols > L) {                                                     \
            if (accumulate) {                                                       \
                acc[r][0] = ADD(acc[r][0], LOAD(cr));                               \
                acc[r][1] = ADD(acc[r][1], LOADN(cr + L, ncols - L));               \
            }                                                                       \
            STORE(cr, acc[r][0]);                                                   \
            STOREN(cr + L, acc[r][1], ncols - L);                                   \
        } else if (ncols == L) {                                                    \
            if (accumulate)                                                         \
                acc[r][0] = ADD(acc[r][0], LOAD(cr));                               \
            STORE(cr, acc[r][0]);                                                   \
        } else {                                                                    \
            if (accumulate)                                                         \
                acc[r][0] = ADD(acc[r][0], LOADN(cr, ncols));                       \
            STOREN(cr, acc[r][0], ncols);                                           \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* A tile of mr <= RNN_G_MRH rows against one vector of columns, for a product at    \
 * most L wide (ncols <= L): the 6 × 2L tile would run its second vector on padding. \
 * Row k of B at w + k·ws (2L in a packed panel; B's own row stride where B is read  \
 * in place, exactly L wide). Every element is the same chain over k as in rnn_gmk,  \
 * so a product gets the same bits in either kernel. */                              \
static inline __attribute__((always_inline)) void                                   \
rnn_gmh_##SFX(const int mr, long kb, const T *a, long ar, long ak, const T *w,      \
              long ws, T *c, long ldc, int ncols, int accumulate)                   \
{                                                                                   \
    VEC acc[RNN_G_MRH];                                                             \
    for (int r = 0; r < mr; r++) {                                                  \
        acc[r] = ZERO();                                                            \
        /* the tile of C, fetched while the loop over k runs (as in rnn_gmk) */     \
        rnn_prefetch_row(c + r * ldc, L * (long)sizeof(T));                         \
    }                                                                               \
    for (long k = 0; k < kb; k++) {                                                 \
        VEC w0 = LOAD(w + ws * k);                                                  \
        for (int r = 0; r < mr; r++)                                                \
            acc[r] = FMA(SET1(a[r * ar + k * ak]), w0, acc[r]);                     \
    }                                                                               \
    for (int r = 0; r < mr; r++) {                                                  \
        T *cr = c + r * ldc;                                                        \
        if (ncols == L) {                                                           \
            if (accumulate)                                                         \
                acc[r] = ADD(acc[r], LOAD(cr));                                     \
            STORE(cr, acc[r]);                                                      \
        } else {                                                                    \
            if (accumulate)                                                         \
                acc[r] = ADD(acc[r], LOADN(cr, ncols));                             \
            STOREN(cr, acc[r], ncols);                                              \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* Store (or add to) n > 0 columns of one row of C from two vectors: lo holds columns \
 * [0, L), hi [L, 2L); only the first n are written. */                              \
static inline __attribute__((always_inline)) void                                   \
rnn_store_pair_##SFX(T *cq, VEC lo, VEC hi, int n, int accumulate)                  \
{                                                                                   \
    if (n >= 2 * L) {                                                               \
        if (accumulate) {                                                           \
            lo = ADD(lo, LOAD(cq));                                                 \
            hi = ADD(hi, LOAD(cq + L));                                             \
        }                                                                           \
        STORE(cq, lo);                                                              \
        STORE(cq + L, hi);                                                          \
    } else if (n > L) {                                                             \
        if (accumulate) {                                                           \
            lo = ADD(lo, LOAD(cq));                                                 \
            hi = ADD(hi, LOADN(cq + L, n - L));                                     \
        }                                                                           \
        STORE(cq, lo);                                                              \
        STOREN(cq + L, hi, n - L);                                                  \
    } else if (n == L) {                                                            \
        if (accumulate)                                                             \
            lo = ADD(lo, LOAD(cq));                                                 \
        STORE(cq, lo);                                                              \
    } else {                                                                        \
        if (accumulate)                                                             \
            lo = ADD(lo, LOADN(cq, n));                                             \
        STOREN(cq, lo, n);                                                          \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* One row against up to RNN_G_WIDE panels at once (panel p at w + p·pstride): the  \
 * row alone has too few independent FMA chains in one panel to hide their latency  \
 * (B = 1, the per-step product of a single sequence). Every element is the same     \
 * chain over k as in rnn_gmk, so a row gets the same bits in either kernel. */      \
static inline __attribute__((always_inline)) void                                   \
rnn_gmk_row_##SFX(const int np, long kb, const T *a, long ak, const T *w,           \
                  long pstride, long ws, T *c, int ncols, int accumulate)           \
{                                                                                   \
    VEC acc[RNN_G_WIDE][2];                                                         \
    for (int q = 0; q < np; q++)                                                    \
        acc[q][0] = acc[q][1] = ZERO();                                             \
    for (long k = 0; k < kb; k++) {                                                 \
        VEC av = SET1(a[k * ak]);                                                   \
        for (int q = 0; q < np; q++) {                                              \
            const T *wq = w + q * pstride + ws * k;                                 \
            acc[q][0] = FMA(av, LOAD(wq), acc[q][0]);                               \
            acc[q][1] = FMA(av, LOAD(wq + L), acc[q][1]);                           \
        }                                                                           \
    }                                                                               \
    for (int q = 0; q < np; q++)                                                    \
        rnn_store_pair_##SFX(c + 2 * L * q, acc[q][0], acc[q][1], ncols - 2 * L * q, \
                             accumulate);                                           \
}                                                                                   \
                                                                                    \
/* One row against np <= 2 panels of B packed whole (panel q at w + q·2L·K), the     \
 * depth in two chains per element, even and odd k, added at the end: half the       \
 * latency of rnn_gmk_row's one chain. Not rnn_gmk's bits: only for a call whose     \
 * whole batch is one row (rnn_gemm_lone). */                                        \
static inline __attribute__((always_inline)) void                                   \
rnn_gml_##SFX(const int np, long K, const T *a, const T *w, T *c, int ncols,        \
              int accumulate)                                                       \
{                                                                                   \
    VEC even[2][2], odd[2][2];                                                      \
    for (int q = 0; q < np; q++)                                                    \
        even[q][0] = even[q][1] = odd[q][0] = odd[q][1] = ZERO();                   \
    long k = 0;                                                                     \
    for (; k + 2 <= K; k += 2) {                                                    \
        VEC a0 = SET1(a[k]), a1 = SET1(a[k + 1]);                                   \
        for (int q = 0; q < np; q++) {                                              \
            const T *wq = w + 2 * L * (q * K + k);                                  \
            even[q][0] = FMA(a0, LOAD(wq), even[q][0]);                             \
            even[q][1] = FMA(a0, LOAD(wq + L), even[q][1]);                         \
            odd[q][0] = FMA(a1, LOAD(wq + 2 * L), odd[q][0]);                       \
            odd[q][1] = FMA(a1, LOAD(wq + 3 * L), odd[q][1]);                       \
        }                                                                           \
    }                                                                               \
    if (k < K) {                                                                    \
        VEC a0 = SET1(a[k]);                                                        \
        for (int q = 0; q < np; q++) {                                              \
            const T *wq = w + 2 * L * (q * K + k);                                  \
            even[q][0] = FMA(a0, LOAD(wq), even[q][0]);                             \
            even[q][1] = FMA(a0, LOAD(wq + L), even[q][1]);                         \
        }                                                                           \
    }                                                                               \
    for (int q = 0; q < np; q++)                                                    \
        rnn_store_pair_##SFX(c + 2 * L * q, ADD(even[q][0], odd[q][0]),             \
                             ADD(even[q][1], odd[q][1]), ncols - 2 * L * q,         \
                             accumulate);                                           \
}                                                                                   \
                                                                                    \
/* C (M×N) (+)= A · B over rows [0, M) and columns [0, N); B is `b` with strides    \
 * (bk, bj), packed here chunk by chunk into `work`, or, if `prepacked`, already     \
 * packed whole (rnn_pack_*, K rows) — then the depth is not chunked. Inlined into   \
 * each of the two callers, so that the per-step product's B stride is a constant. */\
static inline __attribute__((always_inline)) void rnn_gemm_run_##SFX(long M, int N, long K, const T *a, long ar, long ak, \
                               const T *b, long bk, long bj, T *c, long ldc,        \
                               int accumulate, T *work, int prepacked)              \
{                                                                                   \
    if (K == 0) {                                                                   \
        if (!accumulate)                                                            \
            for (long i = 0; i < M; i++)                                            \
                for (int j = 0; j < N; j++)                                         \
                    c[i * ldc + j] = 0;                                             \
        return;                                                                     \
    }                                                                               \
    long KB = prepacked ? K : RNN_G_KB;                                             \
    /* a block of A read down its columns with a large stride is packed too */      \
    T *abuf = !prepacked && rnn_gemm_packs_a(ak, sizeof(T))                         \
              ? work + rnn_packed_size(K < KB ? K : KB, N, 2 * L) : NULL;           \
    /* B of whole panels stored row by row with a short row stride is read in place: \
     * panel p's row k at b + k·bk + p, the same values in the same order as packed */\
    int in_place = !prepacked && bj == 1 && N % (2 * L) == 0                        \
                   && bk * (long)sizeof(T) <= RNN_G_INPLACE_BYTES;                  \
    long ws = in_place ? bk : 2 * L;               /* B's row stride in a panel */  \
    /* a product at most L wide runs on the half-width tile, A unpacked; B exactly L \
     * wide and stored row by row is read in place at its own row stride */          \
    int half = N >= 1 && N <= L && !abuf;                                           \
    int half_in_place = half && !prepacked && bj == 1 && N == L;                    \
    for (long k0 = 0; k0 < K; k0 += KB) {                                           \
        long kb = K - k0 < KB ? K - k0 : KB;                                        \
        int acc = accumulate || k0 > 0;                                             \
        if (!prepacked && !in_place && !half_in_place)                              \
            rnn_pack_##SFX(kb, N, 2 * L, b + k0 * bk, bk, bj, work);                \
        const T *wb = prepacked ? b : in_place ? b + k0 * bk : work;                \
        if (half) {                                                                 \
            const T *wh = half_in_place ? b + k0 * bk : wb;                         \
            long wsh = half_in_place ? bk : 2 * L;                                  \
            const T *ah = a + k0 * ak;                                              \
            long r = 0;                                                             \
            for (; r + RNN_G_MRH <= M; r += RNN_G_MRH)                              \
                rnn_gmh_##SFX(RNN_G_MRH, kb, ah + r * ar, ar, ak, wh, wsh, c + r * ldc, \
                              ldc, N, acc);                                         \
            const T *ar0 = ah + r * ar;                                             \
            T *cr0 = c + r * ldc;                                                   \
            /* the row count a constant in each case: its loops unrolled */          \
            switch (M - r) {                                                        \
            case 11: rnn_gmh_##SFX(11, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 10: rnn_gmh_##SFX(10, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 9: rnn_gmh_##SFX(9, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 8: rnn_gmh_##SFX(8, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 7: rnn_gmh_##SFX(7, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 6: rnn_gmh_##SFX(6, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 5: rnn_gmh_##SFX(5, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 4: rnn_gmh_##SFX(4, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 3: rnn_gmh_##SFX(3, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 2: rnn_gmh_##SFX(2, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            case 1: rnn_gmh_##SFX(1, kb, ar0, ar, ak, wh, wsh, cr0, ldc, N, acc); break;\
            }                                                                       \
            continue;                                                               \
        }                                                                           \
        for (long m0 = 0; m0 < M; m0 += RNN_G_MB) {                                 \
            long m1 = M - m0 < RNN_G_MB ? M : m0 + RNN_G_MB;                        \
            /* rows m0 + i·MR + [0, MR) of A start at ab + i·apanel, strides (abr, abk) */\
            const T *ab = a + k0 * ak + m0 * ar;                                    \
            long abr = ar, abk = ak, apanel = MR * ar;                              \
            if (abuf) {                                                             \
                rnn_pack_rows_##SFX(m1 - m0, kb, ab, ar, ak, abuf);                 \
                ab = abuf, abr = 1, abk = MR, apanel = MR * kb;                     \
            }                                                                       \
            /* a last single row of the block runs on rnn_gmk_row, panels together */\
            long single = (m1 - m0) % MR == 1 ? m1 - 1 : -1;                        \
            if (single >= 0) {                                                      \
                m1 = single;                                                        \
                const T *as = ab + (single - m0) / MR * apanel;                     \
                long ps = in_place ? 2 * L : 2 * L * kb;    /* panel to panel */    \
                for (int p = 0; p < N; p += 2 * L * RNN_G_WIDE) {                   \
                    int np = (N - p + 2 * L - 1) / (2 * L);                         \
                    const T *wp = wb + (in_place ? (long)p : (long)p * kb);         \
                    T *cp = c + single * ldc + p;                                   \
                    /* the panel count a constant in each case: its loop unrolled */ \
                    switch (np < RNN_G_WIDE ? np : RNN_G_WIDE) {                    \
                    case 1: rnn_gmk_row_##SFX(1, kb, as, abk, wp, ps, ws, cp, N - p, acc); break;\
                    case 2: rnn_gmk_row_##SFX(2, kb, as, abk, wp, ps, ws, cp, N - p, acc); break;\
                    case 3: rnn_gmk_row_##SFX(3, kb, as, abk, wp, ps, ws, cp, N - p, acc); break;\
                    default: rnn_gmk_row_##SFX(4, kb, as, abk, wp, ps, ws, cp, N - p, acc);\
                    }                                                               \
                }                                                                   \
            }                                                                       \
            for (int p = 0; p < N; p += 2 * L) {                                    \
                const T *w = wb + (in_place ? (long)p : (long)p * kb);              \
                int ncols = N - p < 2 * L ? N - p : 2 * L;                          \
                long r = m0;                                                        \
                /* rows left MR·k + 2 end on two tiles of MR/2 + 1, not on one of 2: a\
                 * tile of 2 rows has too few accumulators to hide the FMA latency (A\
                 * unpacked only: a packed A's panels are MR rows, which the second \
                 * tile, starting inside one, would cross) */                       \
                long full_end = !abuf && (m1 - m0) % MR == 2                        \
                                && m1 - m0 > MR ? m1 - MR - 2 : m1;                 \
                for (; r + MR <= full_end; r += MR)                                 \
                    rnn_gmk_##SFX(MR, kb, ab + (r - m0) / MR * apanel, abr, abk, w, ws,\
                                  c + r * ldc + p, ldc, ncols, acc);                \
                const T *ar0 = ab + (r - m0) / MR * apanel;                         \
                T *cr0 = c + r * ldc + p;                                           \
                if (full_end < m1) {                                                \
                    const int half = MR / 2 + 1;                                    \
                    rnn_gmk_##SFX(half, kb, ar0, abr, abk, w, ws, cr0, ldc, ncols, acc);\
                    rnn_gmk_##SFX(half, kb, ar0 + half * abr, abr, abk, w, ws,      \
                                  cr0 + half * ldc, ldc, ncols, acc);               \
                    continue;                                                       \
                }                                                                   \
                /* the row count a constant in each case (those below MR only) */   \
                switch (m1 - r) {                                                   \
                RNN_GMK_CASE(SFX, MR, 11) RNN_GMK_CASE(SFX, MR, 10)                 \
                RNN_GMK_CASE(SFX, MR, 9) RNN_GMK_CASE(SFX, MR, 8) RNN_GMK_CASE(SFX, MR, 7)\
                RNN_GMK_CASE(SFX, MR, 6) RNN_GMK_CASE(SFX, MR, 5) RNN_GMK_CASE(SFX, MR, 4)\
                RNN_GMK_CASE(SFX, MR, 3) RNN_GMK_CASE(SFX, MR, 2) RNN_GMK_CASE(SFX, MR, 1)\
                }                                                                   \
            }                                                                       \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* The whole-sequence product: B read with any strides, packed chunk by chunk. */   \
static void rnn_gemm_##SFX(long M, int N, long K, const T *a, long ar, long ak,     \
                           const T *b, long bk, long bj, T *c, long ldc,            \
                           int accumulate, T *work)                                 \
{                                                                                   \
    rnn_gemm_run_##SFX(M, N, K, a, ar, ak, b, bk, bj, c, ldc, accumulate, work, 0); \
}                                                                                   \
                                                                                    \
/* The per-step product: B packed whole beforehand (rnn_pack_* with nr = 2L), for a \
 * matrix used by every step of the recurrence. */                                  \
static void rnn_gemm_packed_##SFX(long M, int N, long K, const T *a, long ar,       \
                                  long ak, const T *packed, T *c, long ldc,         \
                                  int accumulate)                                   \
{                                                                                   \
    rnn_gemm_run_##SFX(M, N, K, a, ar, ak, packed, 0, 0, c, ldc, accumulate, NULL, 1); \
} \
                                                                                    \
/* The per-step product of a call whose whole batch is one row: c (1×N) (+)= a (1×K) \
 * · B, B packed whole (rnn_pack_* with nr = 2L), two panels at a time, each element  \
 * summed in two chains over the depth (rnn_gml). The same bits at every step of the \
 * call and in every call of this shape; not those of rnn_gemm_packed. K >= 1. */    \
static void rnn_gemm_lone_##SFX(int N, long K, const T *a, const T *packed, T *c,   \
                                int accumulate)                                     \
{                                                                                   \
    for (int p = 0; p < N; p += 4 * L) {                                            \
        const T *w = packed + (long)p * K;                                          \
        if (N - p > 2 * L)                                                          \
            rnn_gml_##SFX(2, K, a, w, c + p, N - p, accumulate);                    \
        else                                                                        \
            rnn_gml_##SFX(1, K, a, w, c + p, N - p, accumulate);                    \
    }                                                                               \
}

/* Each instantiation packs with its own panel width: rnn_pack_<SFX> names the packer. */
#define rnn_pack_s_avx512 rnn_pack_s
#define rnn_pack_d_avx512 rnn_pack_d
#define rnn_pack_s_avx2 rnn_pack_s
#define rnn_pack_d_avx2 rnn_pack_d

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define RNN_LOADN_PS16(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), p)
#define RNN_STOREN_PS16(p, v, n) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (n)) - 1), v)
#define RNN_LOADN_PD8(p, n) _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1), p)
#define RNN_STOREN_PD8(p, v, n) _mm512_mask_storeu_pd(p, (__mmask8)((1u << (n)) - 1), v)
RNN_GEMM_KERNELS(s_avx512, float, __m512, 16, RNN_G_MR_AVX512,
                 _mm512_set1_ps, _mm512_setzero_ps,
                 _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_add_ps,
                 RNN_LOADN_PS16, RNN_STOREN_PS16)
RNN_GEMM_KERNELS(d_avx512, double, __m512d, 8, RNN_G_MR_AVX512,
                 _mm512_set1_pd, _mm512_setzero_pd,
                 _mm512_loadu_pd, _mm512_storeu_pd, _mm512_fmadd_pd, _mm512_add_pd,
                 RNN_LOADN_PD8, RNN_STOREN_PD8)
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
/* AVX2 masks: lane i is on when i < n. */
#define RNN_MASK8(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), \
                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define RNN_MASK4(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))
#define RNN_LOADN_PS8(p, n) _mm256_maskload_ps(p, RNN_MASK8(n))
#define RNN_STOREN_PS8(p, v, n) _mm256_maskstore_ps(p, RNN_MASK8(n), v)
#define RNN_LOADN_PD4(p, n) _mm256_maskload_pd(p, RNN_MASK4(n))
#define RNN_STOREN_PD4(p, v, n) _mm256_maskstore_pd(p, RNN_MASK4(n), v)
RNN_GEMM_KERNELS(s_avx2, float, __m256, 8, RNN_G_MR_AVX2,
                 _mm256_set1_ps, _mm256_setzero_ps,
                 _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps, _mm256_add_ps,
                 RNN_LOADN_PS8, RNN_STOREN_PS8)
RNN_GEMM_KERNELS(d_avx2, double, __m256d, 4, RNN_G_MR_AVX2,
                 _mm256_set1_pd, _mm256_setzero_pd,
                 _mm256_loadu_pd, _mm256_storeu_pd, _mm256_fmadd_pd, _mm256_add_pd,
                 RNN_LOADN_PD4, RNN_STOREN_PD4)
#pragma GCC pop_options

#endif
#endif
