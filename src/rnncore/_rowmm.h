/* out (B×H) = a (B×H) · m (H×H) for the recurrent product of one time step, with m
 * packed once per call into column panels, so that nothing is packed per step.
 *
 * The per-step products of an RNN are small (B rows) and repeat T times with the same
 * m; a BLAS packs both operands on every call. Here m is packed once (rnn_pack_*) into
 * panels of NR columns, each panel H rows of NR contiguous floats, zero-padded past H;
 * a register-blocked micro-kernel then computes MR rows × NR columns at a time,
 * broadcasting a[r, k] against row k of the panel. The panel stays in L1/L2 while every
 * block of rows passes over it.
 *
 * Compiled for AVX2+FMA (NR = 16) under #pragma GCC target, so the default build still
 * runs on any x86-64; the AVX-512 variant (NR = 32) is rnn_rowmm_f_avx512 in _gemm512.h,
 * on that file's micro-kernel. _vmath.h picks the variant at import.
 */
#ifndef RNNCORE_ROWMM_H
#define RNNCORE_ROWMM_H
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define RNN_MR 6

/* The packed size, in floats, of an H×H matrix for panels of nr columns. */
static inline long rnn_packed_size(int H, int nr) { return (long)((H + nr - 1) / nr) * nr * H; }

/* Pack the H×H matrix whose element (k, c) is m[k·sk + c·sc] (sk = H, sc = 1 for m
 * itself, sk = 1, sc = H for its transpose) into panels of nr columns. */
static void rnn_pack_f(int H, int nr, const float *restrict m, long sk, long sc,
                       float *restrict packed)
{
    for (int p = 0; p < H; p += nr)
        for (int k = 0; k < H; k++)
            for (int j = 0; j < nr; j++)
                *packed++ = p + j < H ? m[k * sk + (p + j) * sc] : 0.0f;
}

#pragma GCC push_options
#pragma GCC target("avx2,fma")
static inline __attribute__((always_inline)) void
rnn_mk_avx2(const int mr, int H, const float *a, const float *w, float *c, int ncols)
{
    __m256 acc[RNN_MR][2];
    for (int r = 0; r < mr; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < H; k++) {
        __m256 w0 = _mm256_loadu_ps(w + 16 * k), w1 = _mm256_loadu_ps(w + 16 * k + 8);
        for (int r = 0; r < mr; r++) {
            __m256 av = _mm256_broadcast_ss(a + (long)r * H + k);
            acc[r][0] = _mm256_fmadd_ps(av, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, w1, acc[r][1]);
        }
    }
    if (ncols == 16) {
        for (int r = 0; r < mr; r++) {
            _mm256_storeu_ps(c + (long)r * H, acc[r][0]);
            _mm256_storeu_ps(c + (long)r * H + 8, acc[r][1]);
        }
    } else {
        float tmp[16];
        for (int r = 0; r < mr; r++) {
            _mm256_storeu_ps(tmp, acc[r][0]);
            _mm256_storeu_ps(tmp + 8, acc[r][1]);
            for (int j = 0; j < ncols; j++)
                c[(long)r * H + j] = tmp[j];
        }
    }
}

static void rnn_rowmm_f_avx2(int B, int H, const float *a, const float *packed, float *c)
{
    for (int p = 0; p < H; p += 16) {
        const float *w = packed + (long)p * H;
        int ncols = H - p < 16 ? H - p : 16;
        int r = 0;
        for (; r + RNN_MR <= B; r += RNN_MR)
            rnn_mk_avx2(RNN_MR, H, a + (long)r * H, w, c + (long)r * H + p, ncols);
        switch (B - r) {
        case 5: rnn_mk_avx2(5, H, a + (long)r * H, w, c + (long)r * H + p, ncols); break;
        case 4: rnn_mk_avx2(4, H, a + (long)r * H, w, c + (long)r * H + p, ncols); break;
        case 3: rnn_mk_avx2(3, H, a + (long)r * H, w, c + (long)r * H + p, ncols); break;
        case 2: rnn_mk_avx2(2, H, a + (long)r * H, w, c + (long)r * H + p, ncols); break;
        case 1: rnn_mk_avx2(1, H, a + (long)r * H, w, c + (long)r * H + p, ncols); break;
        }
    }
}
#pragma GCC pop_options

#endif
#endif
