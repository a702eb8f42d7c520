/* The element-wise passes of one time step, written once and compiled once per
 * instruction set by _vmath.h (which defines VM(name) to give each copy its own name).
 *
 * Every loop is branch-free over restrict pointers so the compiler vectorises it;
 * selects (a ? b : c) compile to blends. NaN propagates: every comparison with NaN is
 * false, and each select is written so that the false side keeps the NaN.
 */

/* tanh for float32: odd rational approximation p(x)/q(x) of degrees 13 and 6, the
 * coefficients of Eigen's generic_fast_tanh_float (Eigen/src/Core/MathFunctionsImpl.h,
 * MPL-2.0), also used by XLA and ONNX Runtime's MLAS. Beyond |x| = 7.9053111 tanh
 * rounds to ±1 in float32, and we return exactly ±1 there; below |x| = 4e-4 tanh(x)
 * rounds to x. The approximation is odd (p·x/q with p, q even), so it is computed on
 * |x| and the sign of x put back last: two selects instead of five (a blend is three
 * µops on AVX2), and the same float as on x itself, since negating x negates p·x/q
 * exactly. */
static inline __attribute__((always_inline)) float VM(tanh1_f)(float x)
{
    const float big = 7.90531110763549805f;
    float ax = fabsf(x);
    float xc = big < ax ? big : ax;                      /* NaN stays NaN */
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float r = p / q;
    r = ax > big ? 1.0f : r;
    r = ax < 4e-4f ? ax : r;
    return copysignf(r, x);
}

/* h = tanh(h + r + b): the input projection already stored in h, plus the recurrent
 * product r and the bias b (one row of H values). r NULL: h already holds the sum of
 * the two (the product added onto the projection in place), h = tanh(h + b). */
static void VM(tanh_step_f)(int n, float *restrict h, const float *restrict r,
                            const float *restrict b)
{
    if (!r) {
        for (int i = 0; i < n; i++)
            h[i] = VM(tanh1_f)(h[i] + b[i]);
        return;
    }
    for (int i = 0; i < n; i++)
        h[i] = VM(tanh1_f)(h[i] + r[i] + b[i]);
}

/* tanh for float64, to a few ulps, branch-free so that it vectorises (libm's scalar
 * tanh would cost more than the whole recurrent product at small sizes):
 *   tanh(|x|) = -u / (2 + u),  u = expm1(-2|x|) in [-1, 0],
 * with expm1(y) = 2^n·expm1(r) + (2^n - 1), y = n·ln2 + r, |r| <= ln2/2 (Cody-Waite
 * reduction with fdlibm's split of ln2), and expm1(r) by its Taylor series to r^13/13!
 * (truncation below 1e-17 relative for |r| <= ln2/2). |x| is clamped at 20, where tanh
 * rounds to 1, so 2^n stays a normal number; NaN passes through every select. */
static inline __attribute__((always_inline)) double VM(tanh1_d)(double x)
{
    const double shifter = 0x1.8p52, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10, inv_ln2 = 1.44269504088896338700e+00;
    double a = x < 0 ? -x : x;
    a = a > 20.0 ? 20.0 : a;
    double y = -2.0 * a;
    double kd = y * inv_ln2 + shifter;          /* round(y / ln2) in the low bits */
    double n = kd - shifter;
    double r = (y - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;               /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    double em = r + (r * r) * p;                 /* expm1(r) */
    long long kbits, sh;
    memcpy(&kbits, &kd, sizeof kbits);
    memcpy(&sh, &shifter, sizeof sh);
    long long ebits = (kbits - sh + 1023) << 52;  /* the bits of 2^n */
    double two_n;
    memcpy(&two_n, &ebits, sizeof two_n);
    double u = two_n * em + (two_n - 1.0);
    double t = -u / (2.0 + u);
    return x < 0 ? -t : t;
}

static void VM(tanh_step_d)(int n, double *restrict h, const double *restrict r,
                            const double *restrict b)
{
    if (!r) {                              /* h holds the projection plus the product */
        for (int i = 0; i < n; i++)
            h[i] = VM(tanh1_d)(h[i] + b[i]);
        return;
    }
    for (int i = 0; i < n; i++)
        h[i] = VM(tanh1_d)(h[i] + r[i] + b[i]);
}

#define VM_RELU_STEP(NAME, T)                                                     \
static void VM(NAME)(int n, T *restrict h, const T *restrict r, const T *restrict b) \
{                                                                                 \
    if (!r) {                    /* h holds the projection plus the product */    \
        for (int i = 0; i < n; i++) {                                             \
            T a = h[i] + b[i];                                                    \
            h[i] = a < 0 ? 0 : a;                                                 \
        }                                                                         \
        return;                                                                   \
    }                                                                             \
    for (int i = 0; i < n; i++) {                                                 \
        T a = h[i] + r[i] + b[i];                                                 \
        h[i] = a < 0 ? 0 : a;                                                     \
    }                                                                             \
}
VM_RELU_STEP(relu_step_f, float)
VM_RELU_STEP(relu_step_d, double)
#undef VM_RELU_STEP

/* delta = (dy + carry) ⊙ f'(a), with f'(a) = 1 - h² for tanh and [not h <= 0] for
 * relu: a NaN state passes the gradient through, as torch's threshold_backward does. */
#define VM_GRAD(NAME, T, EXPR)                                                    \
static void VM(NAME)(int n, T *restrict delta, const T *restrict dy,              \
                     const T *restrict carry, const T *restrict h)                \
{                                                                                 \
    for (int i = 0; i < n; i++) {                                                 \
        T g = dy[i] + carry[i];                                                   \
        delta[i] = EXPR;                                                          \
    }                                                                             \
}
VM_GRAD(tanh_grad_f, float, g * (1 - h[i] * h[i]))
VM_GRAD(tanh_grad_d, double, g * (1 - h[i] * h[i]))
VM_GRAD(relu_grad_f, float, h[i] <= 0 ? 0 : g)
VM_GRAD(relu_grad_d, double, h[i] <= 0 ? 0 : g)
#undef VM_GRAD

/* acc += Σ_rows x[row]: x is (rows × n), row k at x + k·ld. Each element is summed in
 * row order; blocks of VM_SUM_COLS columns keep their sums in a local array (registers)
 * over all rows, instead of storing and reloading acc at every row. */
#define VM_SUM_COLS 32
#define VM_SUM_ROWS(NAME, T)                                                      \
static void VM(NAME)(long rows, int n, long ld, T *restrict acc, const T *restrict x) \
{                                                                                 \
    int i0 = 0;                                                                   \
    for (; i0 + VM_SUM_COLS <= n; i0 += VM_SUM_COLS) {                            \
        T s[VM_SUM_COLS], *a = acc + i0;                                          \
        const T *xc = x + i0;                                                     \
        for (int i = 0; i < VM_SUM_COLS; i++)                                     \
            s[i] = a[i];                                                          \
        for (long k = 0; k < rows; k++, xc += ld)                                 \
            for (int i = 0; i < VM_SUM_COLS; i++)                                 \
                s[i] += xc[i];                                                    \
        for (int i = 0; i < VM_SUM_COLS; i++)                                     \
            a[i] = s[i];                                                          \
    }                                                                             \
    for (long k = 0; k < rows; k++)                                               \
        for (int i = i0; i < n; i++)                                              \
            acc[i] += x[k * ld + i];                                              \
}
VM_SUM_ROWS(sum_rows_f, float)
VM_SUM_ROWS(sum_rows_d, double)
#undef VM_SUM_ROWS
#undef VM_SUM_COLS

/* out = a + b over one row of n values. */
#define VM_ADD(NAME, T)                                                           \
static void VM(NAME)(int n, T *restrict out, const T *restrict a, const T *restrict b) \
{                                                                                 \
    for (int i = 0; i < n; i++)                                                   \
        out[i] = a[i] + b[i];                                                     \
}
VM_ADD(add_f, float)
VM_ADD(add_d, double)
#undef VM_ADD

/* C (m×n) (+)= A (m×K) · B (K×n) for a small depth K (a short call's weight
 * gradients, depth T·B): row i of C is Σ_k a[i·ar + k·ak] · (row k of B, at b + k·bk),
 * summed in k order. */
#define VM_SMALL_DEPTH(NAME, T)                                                   \
static void VM(NAME)(long m, int n, long K, const T *a, long ar, long ak,        \
                     const T *b, long bk, T *c, long ldc, int accumulate)         \
{                                                                                 \
    for (long i = 0; i < m; i++) {                                                \
        T *restrict ci = c + i * ldc;                                             \
        const T *restrict b0 = b;                                                 \
        T a0 = a[i * ar];                                                         \
        if (accumulate)                                                           \
            for (int j = 0; j < n; j++)                                           \
                ci[j] += a0 * b0[j];                                              \
        else                                                                      \
            for (int j = 0; j < n; j++)                                           \
                ci[j] = a0 * b0[j];                                               \
        for (long k = 1; k < K; k++) {                                            \
            const T *restrict bk_row = b + k * bk;                                \
            T a_ik = a[i * ar + k * ak];                                          \
            for (int j = 0; j < n; j++)                                           \
                ci[j] += a_ik * bk_row[j];                                        \
        }                                                                         \
    }                                                                             \
}
VM_SMALL_DEPTH(small_depth_f, float)
VM_SMALL_DEPTH(small_depth_d, double)
#undef VM_SMALL_DEPTH

/* e^y for σ, branch-free so that it vectorises, y clamped to [-87, 88] (float32) or
 * [-708, 709] (float64), where e^y and 1 + e^y are normal numbers: y = n·ln2 + r with
 * |r| <= ln2/2 (Cody-Waite, ln2 split in two), e^r by its Taylor series (to r^7/7! in
 * float32, r^13/13! in float64: truncation below 1e-8 and 1e-17 relative), 2^n put in
 * the exponent bits, as tanh1_d does. NaN passes through every select. */
static inline __attribute__((always_inline)) float VM(exp1_f)(float y)
{
    const float shifter = 0x1.8p23f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f,
                inv_ln2 = 1.44269504088896341f;
    y = y > 88.0f ? 88.0f : y;
    y = y < -87.0f ? -87.0f : y;
    float kd = y * inv_ln2 + shifter;           /* round(y / ln2) in the low bits */
    float n = kd - shifter;
    float r = (y - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;                            /* e^r */
    int kbits, sh;
    memcpy(&kbits, &kd, sizeof kbits);
    memcpy(&sh, &shifter, sizeof sh);
    unsigned ebits = (unsigned)(kbits - sh + 127) << 23;   /* the bits of 2^n */
    float two_n;
    memcpy(&two_n, &ebits, sizeof two_n);
    return p * two_n;
}

static inline __attribute__((always_inline)) double VM(exp1_d)(double y)
{
    const double shifter = 0x1.8p52, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10, inv_ln2 = 1.44269504088896338700e+00;
    y = y > 709.0 ? 709.0 : y;
    y = y < -708.0 ? -708.0 : y;
    double kd = y * inv_ln2 + shifter;
    double n = kd - shifter;
    double r = (y - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;               /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    double em = r + (r * r) * p;                 /* expm1(r) */
    long long kbits, sh;
    memcpy(&kbits, &kd, sizeof kbits);
    memcpy(&sh, &shifter, sizeof sh);
    unsigned long long ebits = (unsigned long long)(kbits - sh + 1023) << 52;
    double two_n;
    memcpy(&two_n, &ebits, sizeof two_n);
    return two_n + two_n * em;
}

/* The fused per-row passes of the gated cells (cells/lstm.py, cells/gru.py): one row of
 * one step, its H columns of every gate together, while the step's block is in cache.
 * The gates of a row are G blocks of n = H values ([i f g o] or [r z n]), so column j
 * of gate q is at q·n + j (each loop reads it through a pointer per gate: with
 * -fwrapv, which Cython's builds pass, GCC does not vectorise an index q·n + j).
 * σ(x) = 1 / (1 + e^-x) on the vector exp below, to a few ulps relative: also where σ
 * is small (x << 0), which tanh(x/2)/2 + 1/2 would compute from a difference of nearly
 * equal terms (tests/test_gated_kernels.py measures it). It is 1 for large x and tends
 * to 0 (within the flushed denormals) for x below -87 (float32) or -708 (float64).
 *
 * LSTM forward: gates holds x_t W_ihᵀ on entry and the activated [i f g o] on return;
 * r is h_{t-1} W_hhᵀ (NULL: gates holds it added already), b is b_ih + b_hh;
 * c = f ⊙ c_prev + i ⊙ g, m = o ⊙ tanh(c).
 * GRU forward: s holds gi = x_t W_ihᵀ in its first 3n values on entry and [r z n gh_n]
 * (4n) on return; gh is h_{t-1} W_hhᵀ without b_hh; h = (1 - z) ⊙ n + z ⊙ h_prev.
 * LSTM backward: ∂m = dm_a + dm_b; delta = ∂L/∂a (4n); carry_c holds ∂L/∂c_t from the
 * next step on entry and ∂L/∂c_{t-1} = ∂c ⊙ f on return; m = o ⊙ tanh(c) for ∂W_hr.
 * GRU backward: ∂h = dy + carry; delta = ∂L/∂gi, eps = ∂L/∂gh (3n each); carry
 * becomes ∂h ⊙ z, the part of ∂L/∂h_{t-1} that does not pass through W_hh. */
#define VM_GATED(SFX, T, TANH, EXP)                                               \
static inline __attribute__((always_inline)) T VM(sigmoid1_##SFX)(T x)           \
{                                                                                 \
    return (T)1 / ((T)1 + EXP(-x));                                               \
}                                                                                 \
                                                                                  \
static inline __attribute__((always_inline)) void                                   \
VM(lstm_cells_##SFX)(int n, T *restrict gates, const T *restrict r,               \
                     const T *restrict b, const T *restrict c_prev, T *restrict c,  \
                     T *restrict m, const int with_r)                             \
{                                                                                 \
    T *restrict gi = gates, *restrict gf = gates + n, *restrict gg = gates + 2 * n, \
      *restrict go = gates + 3 * n;                                               \
    const T *restrict ri = with_r ? r : gates, *restrict rf = ri + n,             \
            *restrict rg = ri + 2 * n, *restrict ro = ri + 3 * n;                 \
    const T *restrict bi = b, *restrict bf = b + n, *restrict bg = b + 2 * n,      \
            *restrict bo = b + 3 * n;                                             \
    for (int j = 0; j < n; j++) {                                                 \
        T i = VM(sigmoid1_##SFX)(with_r ? gi[j] + ri[j] + bi[j] : gi[j] + bi[j]); \
        T f = VM(sigmoid1_##SFX)(with_r ? gf[j] + rf[j] + bf[j] : gf[j] + bf[j]); \
        T g = TANH(with_r ? gg[j] + rg[j] + bg[j] : gg[j] + bg[j]);               \
        T o = VM(sigmoid1_##SFX)(with_r ? go[j] + ro[j] + bo[j] : go[j] + bo[j]); \
        T cj = f * c_prev[j] + i * g;                                             \
        gi[j] = i, gf[j] = f, gg[j] = g, go[j] = o;                               \
        c[j] = cj;                                                                \
        m[j] = o * TANH(cj);                                                      \
    }                                                                             \
}                                                                                 \
                                                                                  \
/* r NULL: gates holds x_t W_ihᵀ + h_{t-1} W_hhᵀ already (the packed product added    \
 * onto it, acc + g, the sum g + r the pass would form: the same bits). */        \
static void VM(lstm_step_##SFX)(int n, T *restrict gates, const T *restrict r,     \
                                const T *restrict b, const T *restrict c_prev,    \
                                T *restrict c, T *restrict m)                     \
{                                                                                 \
    if (r != NULL)                                                                \
        VM(lstm_cells_##SFX)(n, gates, r, b, c_prev, c, m, 1);                    \
    else                                                                          \
        VM(lstm_cells_##SFX)(n, gates, r, b, c_prev, c, m, 0);                    \
}                                                                                 \
                                                                                  \
static void VM(gru_step_##SFX)(int n, T *restrict s, const T *restrict gh,         \
                               const T *restrict b_ih, const T *restrict b_hh,    \
                               const T *restrict h_prev, T *restrict h)           \
{                                                                                 \
    T *restrict sr = s, *restrict sz = s + n, *restrict sn = s + 2 * n,           \
      *restrict sh = s + 3 * n;                                                   \
    const T *restrict hr = gh, *restrict hz = gh + n, *restrict hn = gh + 2 * n;  \
    const T *restrict ir = b_ih, *restrict iz = b_ih + n, *restrict in = b_ih + 2 * n; \
    const T *restrict br = b_hh, *restrict bz = b_hh + n, *restrict bn = b_hh + 2 * n; \
    for (int j = 0; j < n; j++) {                                                 \
        T r = VM(sigmoid1_##SFX)(sr[j] + ir[j] + hr[j] + br[j]);                  \
        T z = VM(sigmoid1_##SFX)(sz[j] + iz[j] + hz[j] + bz[j]);                  \
        T ghn = hn[j] + bn[j];                                                    \
        T nj = TANH(sn[j] + in[j] + r * ghn);                                     \
        sr[j] = r, sz[j] = z, sn[j] = nj, sh[j] = ghn;                            \
        h[j] = (1 - z) * nj + z * h_prev[j];                                      \
    }                                                                             \
}                                                                                 \
                                                                                  \
static void VM(lstm_grad_##SFX)(int n, T *restrict delta, const T *restrict dm_a,  \
                                const T *restrict dm_b, const T *restrict gates,  \
                                const T *restrict c, const T *restrict c_prev,    \
                                T *restrict carry_c, T *restrict m)               \
{                                                                                 \
    T *restrict di = delta, *restrict df = delta + n, *restrict dg = delta + 2 * n, \
      *restrict d_o = delta + 3 * n;                                              \
    const T *restrict gi = gates, *restrict gf = gates + n,                       \
            *restrict gg = gates + 2 * n, *restrict go = gates + 3 * n;           \
    for (int j = 0; j < n; j++) {                                                 \
        T dm = dm_a[j] + dm_b[j];                                                 \
        T i = gi[j], f = gf[j], g = gg[j], o = go[j];                             \
        T tc = TANH(c[j]);                                                        \
        T dc = carry_c[j] + dm * o * (1 - tc * tc);                               \
        di[j] = dc * g * i * (1 - i);                                             \
        df[j] = dc * c_prev[j] * f * (1 - f);                                     \
        dg[j] = dc * i * (1 - g * g);                                             \
        d_o[j] = dm * tc * o * (1 - o);                                           \
        carry_c[j] = dc * f;                                                      \
        m[j] = o * tc;                                                            \
    }                                                                             \
}                                                                                 \
                                                                                  \
static void VM(gru_grad_##SFX)(int n, T *restrict delta, T *restrict eps,          \
                               const T *restrict dy, T *restrict carry,           \
                               const T *restrict s, const T *restrict h_prev)     \
{                                                                                 \
    T *restrict dr_ = delta, *restrict dz_ = delta + n, *restrict dn_ = delta + 2 * n; \
    T *restrict er = eps, *restrict ez = eps + n, *restrict en = eps + 2 * n;     \
    const T *restrict sr = s, *restrict sz = s + n, *restrict sn = s + 2 * n,     \
            *restrict sh = s + 3 * n;                                             \
    for (int j = 0; j < n; j++) {                                                 \
        T dh = dy[j] + carry[j];                                                  \
        T r = sr[j], z = sz[j], nj = sn[j], ghn = sh[j];                          \
        T dn = dh * (1 - z) * (1 - nj * nj);                                      \
        T dr = dn * ghn * r * (1 - r);                                            \
        T dz = dh * (h_prev[j] - nj) * z * (1 - z);                               \
        dr_[j] = dr, dz_[j] = dz, dn_[j] = dn;                                    \
        er[j] = dr, ez[j] = dz, en[j] = r * dn;                                   \
        carry[j] = dh * z;                                                        \
    }                                                                             \
}
VM_GATED(f, float, VM(tanh1_f), VM(exp1_f))
VM_GATED(d, double, VM(tanh1_d), VM(exp1_d))
#undef VM_GATED
