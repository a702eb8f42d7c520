/* Whole-sequence products on AVX-512: C (M×N) (+)= A (M×K) · B (K×N), B packed.
 *
 * The input projection (X·W_ihᵀ), ∂x (Δ·W_ih) and the weight gradients (Δᵀ·X, Δᵀ·H)
 * are large GEMMs. Where OpenBLAS is configured for another CPU's kernels (this
 * project's machines set OPENBLAS_CORETYPE=Haswell: AVX2, half the AVX-512 rate), these
 * run here instead: B is packed, one depth chunk of KB rows at a time, into panels of
 * NR columns ([panel][k][NR], zero past N, in a small workspace), A is read in place with any row and column stride (so Δᵀ needs no copy), and
 * a 6×NR register block accumulates over depth chunks of KB while a block of MB rows of
 * A and one panel stay in L2. The same micro-kernel shape as _rowmm.h, for float (NR 32)
 * and double (NR 16).
 *
 * Compiled under #pragma GCC target("avx512f"), called only when the CPU has AVX-512
 * (_vmath.h decides), so the default build runs on any x86-64.
 */
#ifndef RNNCORE_GEMM512_H
#define RNNCORE_GEMM512_H
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define RNN_G_MR 6
#define RNN_G_KB 256
#define RNN_G_MB 96

/* Elements of the workspace rnn_gemm512_* needs for depth K: one chunk of B, packed. */
static inline long rnn_gemm512_work(int N, long K, int nr)
{
    return (long)((N + nr - 1) / nr) * nr * (K < RNN_G_KB ? K : RNN_G_KB);
}

#define RNN_GPACK(NAME, T, NR)                                                      \
/* Pack the K×N matrix whose element (k, j) is m[k·sk + j·sc] into NR-column panels. */ \
static void NAME(long K, int N, const T *restrict m, long sk, long sc, T *restrict out) \
{                                                                                   \
    for (int p = 0; p < N; p += NR)                                                 \
        for (long k = 0; k < K; k++)                                                \
            for (int j = 0; j < NR; j++)                                            \
                *out++ = p + j < N ? m[k * sk + (long)(p + j) * sc] : (T)0;         \
}
RNN_GPACK(rnn_gpack_ps, float, 32)
RNN_GPACK(rnn_gpack_pd, double, 16)
#undef RNN_GPACK

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

/* VEC: the vector type, L: lanes, SET1/LOAD/FMA/MLOAD/MSTORE: its intrinsics, MASK the
 * mask type. One micro-kernel: C[0:mr, 0:ncols] (+)= A[0:mr, 0:kb] · W[0:kb, 0:2L]. */
#define RNN_GEMM512(SFX, T, VEC, L, SET1, ZERO, LOAD, FMA, MLOAD, MSTORE, MASK)    \
static inline __attribute__((always_inline)) void                                   \
rnn_gmk_##SFX(const int mr, long kb, const T *a, long ar, long ak, const T *w,      \
              T *c, long ldc, int ncols, int accumulate)                            \
{                                                                                   \
    VEC acc[RNN_G_MR][2];                                                           \
    for (int r = 0; r < mr; r++)                                                    \
        acc[r][0] = acc[r][1] = ZERO();                                             \
    for (long k = 0; k < kb; k++) {                                                 \
        VEC w0 = LOAD(w + 2 * L * k), w1 = LOAD(w + 2 * L * k + L);                 \
        for (int r = 0; r < mr; r++) {                                              \
            VEC av = SET1(a[r * ar + k * ak]);                                      \
            acc[r][0] = FMA(av, w0, acc[r][0]);                                     \
            acc[r][1] = FMA(av, w1, acc[r][1]);                                     \
        }                                                                           \
    }                                                                               \
    MASK m0 = ncols >= L ? (MASK)~0 : (MASK)((1u << ncols) - 1);                    \
    MASK m1 = ncols >= 2 * L ? (MASK)~0                                             \
              : ncols > L ? (MASK)((1u << (ncols - L)) - 1) : (MASK)0;              \
    for (int r = 0; r < mr; r++) {                                                  \
        T *cr = c + r * ldc;                                                        \
        if (accumulate) {                                                           \
            acc[r][0] = _mm512_add_##SFX(acc[r][0], MLOAD(ZERO(), m0, cr));         \
            acc[r][1] = _mm512_add_##SFX(acc[r][1], MLOAD(ZERO(), m1, cr + L));     \
        }                                                                           \
        MSTORE(cr, m0, acc[r][0]);                                                  \
        MSTORE(cr + L, m1, acc[r][1]);                                              \
    }                                                                               \
}                                                                                   \
                                                                                    \
static void rnn_gemm512_run_##SFX(long M, int N, long K, const T *a, long ar,      \
                                  long ak, const T *b, long bk, long bj, T *c,      \
                                  long ldc, int accumulate, T *work, int prepacked) \
{                                                                                   \
    if (K == 0) {                                                                   \
        if (!accumulate)                                                            \
            for (long i = 0; i < M; i++)                                            \
                for (int j = 0; j < N; j++)                                         \
                    c[i * ldc + j] = 0;                                             \
        return;                                                                     \
    }                                                                               \
    for (long k0 = 0; k0 < K; k0 += RNN_G_KB) {                                     \
        long kb = K - k0 < RNN_G_KB ? K - k0 : RNN_G_KB;                            \
        int acc = accumulate || k0 > 0;                                             \
        if (!prepacked)                                                             \
            rnn_gpack_##SFX(kb, N, b + k0 * bk, bk, bj, work);                      \
        for (long m0 = 0; m0 < M; m0 += RNN_G_MB) {                                 \
            long m1 = M - m0 < RNN_G_MB ? M : m0 + RNN_G_MB;                        \
            for (int p = 0; p < N; p += 2 * L) {                                    \
                const T *w = prepacked ? b + (long)p * K + k0 * 2 * L               \
                                       : work + (long)p * kb;                       \
                int ncols = N - p < 2 * L ? N - p : 2 * L;                          \
                const T *ak0 = a + k0 * ak;                                         \
                long r = m0;                                                        \
                for (; r + RNN_G_MR <= m1; r += RNN_G_MR)                           \
                    rnn_gmk_##SFX(RNN_G_MR, kb, ak0 + r * ar, ar, ak, w,            \
                                  c + r * ldc + p, ldc, ncols, acc);                \
                switch (m1 - r) {                                                   \
                case 5: rnn_gmk_##SFX(5, kb, ak0 + r * ar, ar, ak, w, c + r * ldc + p, ldc, ncols, acc); break; \
                case 4: rnn_gmk_##SFX(4, kb, ak0 + r * ar, ar, ak, w, c + r * ldc + p, ldc, ncols, acc); break; \
                case 3: rnn_gmk_##SFX(3, kb, ak0 + r * ar, ar, ak, w, c + r * ldc + p, ldc, ncols, acc); break; \
                case 2: rnn_gmk_##SFX(2, kb, ak0 + r * ar, ar, ak, w, c + r * ldc + p, ldc, ncols, acc); break; \
                case 1: rnn_gmk_##SFX(1, kb, ak0 + r * ar, ar, ak, w, c + r * ldc + p, ldc, ncols, acc); break; \
                }                                                                   \
            }                                                                       \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
static void rnn_gemm512_##SFX(long M, int N, long K, const T *a, long ar, long ak,  \
                              const T *b, long bk, long bj, T *c, long ldc,         \
                              int accumulate, T *work)                              \
{                                                                                   \
    rnn_gemm512_run_##SFX(M, N, K, a, ar, ak, b, bk, bj, c, ldc, accumulate, work, 0); \
}                                                                                   \
                                                                                    \
/* The same product with B packed beforehand, whole (rnn_gpack_* over all K rows):  \
 * for a B used many times, as W_hh by every step of the recurrence. */             \
static void rnn_gemm512_packed_##SFX(long M, int N, long K, const T *a, long ar,    \
                                     long ak, const T *packed, T *c, long ldc,      \
                                     int accumulate)                                \
{                                                                                   \
    rnn_gemm512_run_##SFX(M, N, K, a, ar, ak, packed, 0, 0, c, ldc, accumulate, NULL, 1); \
}

RNN_GEMM512(ps, float, __m512, 16, _mm512_set1_ps, _mm512_setzero_ps, _mm512_loadu_ps,
            _mm512_fmadd_ps, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, __mmask16)
RNN_GEMM512(pd, double, __m512d, 8, _mm512_set1_pd, _mm512_setzero_pd, _mm512_loadu_pd,
            _mm512_fmadd_pd, _mm512_mask_loadu_pd, _mm512_mask_storeu_pd, __mmask8)
#undef RNN_GEMM512

/* The float32 per-step product out (B×H) = a (B×H) · m (H×H), m packed whole by
 * rnn_pack_f with 32-column panels: the micro-kernel above without depth chunks, the
 * leanest loop for the small products of one time step (_rowmm.h's contract). */
static void rnn_rowmm_f_avx512(int B, int H, const float *a, const float *packed, float *c)
{
    for (int p = 0; p < H; p += 32) {
        const float *w = packed + (long)p * H;
        int ncols = H - p < 32 ? H - p : 32;
        int r = 0;
        for (; r + RNN_G_MR <= B; r += RNN_G_MR)
            rnn_gmk_ps(RNN_G_MR, H, a + (long)r * H, H, 1, w, c + (long)r * H + p, H, ncols, 0);
        switch (B - r) {
        case 5: rnn_gmk_ps(5, H, a + (long)r * H, H, 1, w, c + (long)r * H + p, H, ncols, 0); break;
        case 4: rnn_gmk_ps(4, H, a + (long)r * H, H, 1, w, c + (long)r * H + p, H, ncols, 0); break;
        case 3: rnn_gmk_ps(3, H, a + (long)r * H, H, 1, w, c + (long)r * H + p, H, ncols, 0); break;
        case 2: rnn_gmk_ps(2, H, a + (long)r * H, H, 1, w, c + (long)r * H + p, H, ncols, 0); break;
        case 1: rnn_gmk_ps(1, H, a + (long)r * H, H, 1, w, c + (long)r * H + p, H, ncols, 0); break;
        }
    }
}

#pragma GCC pop_options
#endif
#endif
