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
 * rounds to x. */
static inline __attribute__((always_inline)) float VM(tanh1_f)(float x)
{
    const float big = 7.90531110763549805f;
    float ax = x < 0.0f ? -x : x;
    float xc = ax > big ? (x < 0.0f ? -big : big) : x;   /* NaN stays NaN */
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
    r = ax > big ? (x < 0.0f ? -1.0f : 1.0f) : r;
    return ax < 4e-4f ? x : r;
}

/* h = tanh(h + r + b): the input projection already stored in h, plus the recurrent
 * product r and the bias b (one row of H values). */
static void VM(tanh_step_f)(int n, float *restrict h, const float *restrict r,
                            const float *restrict b)
{
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
    for (int i = 0; i < n; i++)
        h[i] = VM(tanh1_d)(h[i] + r[i] + b[i]);
}

#define VM_RELU_STEP(NAME, T)                                                     \
static void VM(NAME)(int n, T *restrict h, const T *restrict r, const T *restrict b) \
{                                                                                 \
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

/* acc += Σ_rows x[row]: x is (rows × n), row k at x + k·ld. */
#define VM_SUM_ROWS(NAME, T)                                                      \
static void VM(NAME)(long rows, int n, long ld, T *restrict acc, const T *restrict x) \
{                                                                                 \
    for (long k = 0; k < rows; k++)                                               \
        for (int i = 0; i < n; i++)                                               \
            acc[i] += x[k * ld + i];                                              \
}
VM_SUM_ROWS(sum_rows_f, float)
VM_SUM_ROWS(sum_rows_d, double)
#undef VM_SUM_ROWS
