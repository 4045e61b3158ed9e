/* backend_cpu.c: the CPU reference backend. Plain C with the definitions PyTorch uses,
 * cblas for every matrix product (OpenBLAS threads those), and a small thread pool for
 * the row-wise ops that cost real time (cross-entropy over the vocabulary, GELU's erf,
 * attention over (batch, head)).
 *
 * The file is written against real_t: the library compiles it with float, and the
 * gradient-check test compiles it again with double (tgmath.h picks expf/exp, erff/erf;
 * the GEMM macro picks sgemm/dgemm). Reductions whose rounding matters (LayerNorm
 * statistics, log-sum-exp, norms) are accumulated in double in both builds. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include "backend.h"
#include "pool.h"
#include "util.h"

#ifdef OFA_REAL_DOUBLE
#define GEMM cblas_dgemm
#else
#define GEMM cblas_sgemm
#endif

typedef struct {
    pool_t *pool;
    /* Per-thread attention scratch, kept between calls: a fresh (Tq, Tk) block per call
     * would be a fresh mmap (and page faults) every time for long sequences. */
    real_t **scratch;
    int64_t scratch_n;
} s_cpu_t;

static pool_t *s_pool(backend_t *be) { return ((s_cpu_t *)be->ctx)->pool; }

/* ---- memory ---- */

static void *s_alloc(backend_t *be, size_t bytes) {
    /* 64-byte alignment for the vector loads of BLAS; zeroed as the table promises. */
    size_t n = (bytes + 63) / 64 * 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0)
        return NULL;
    memset(p, 0, n ? n : 64);
    return p;
}
static void s_free(backend_t *be, void *p) { free(p); }
static void s_copy(backend_t *be, void *dst, const void *src, size_t bytes) {
    if (bytes)
        memmove(dst, src, bytes);
}
static void s_zero(backend_t *be, void *p, size_t bytes) {
    if (bytes)
        memset(p, 0, bytes);
}
static void s_sync(backend_t *be) {}

/* ---- matrix products ---- */

static void s_gemm(backend_t *be, int tA, int tB, int M, int N, int K, real_t alpha,
                   const real_t *A, int lda, const real_t *Bm, int ldb, real_t beta,
                   real_t *C, int ldc) {
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {   /* BLAS leaves C alone for K == 0 only when beta == 1 */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(int64_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(int64_t)i * ldc + j];
        return;
    }
    GEMM(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, M, N,
         K, alpha, A, lda, Bm, ldb, beta, C, ldc);
}

static void s_gemm_batched(backend_t *be, int tA, int tB, int M, int N, int K, real_t alpha,
                           const real_t *A, int lda, int64_t sA, const real_t *Bm, int ldb,
                           int64_t sB, real_t beta, real_t *C, int ldc, int64_t sC,
                           int batch) {
    for (int i = 0; i < batch; i++)
        s_gemm(be, tA, tB, M, N, K, alpha, A + i * sA, lda, Bm + i * sB, ldb, beta, C + i * sC,
               ldc);
}

static void s_bias_add(backend_t *be, real_t *y, const real_t *b, int N, int O) {
    for (int64_t i = 0; i < N; i++) {
        real_t *row = y + i * O;
        for (int j = 0; j < O; j++)
            row[j] += b[j];
    }
}

static void s_bias_bwd(backend_t *be, real_t *db, const real_t *dy, int N, int O) {
    for (int64_t i = 0; i < N; i++) {
        const real_t *row = dy + i * O;
        for (int j = 0; j < O; j++)
            db[j] += row[j];
    }
}

/* ---- LayerNorm ---- */

static void s_ln_fwd(backend_t *be, real_t *out, real_t *mean, real_t *rstd, const real_t *x,
                     const real_t *w, const real_t *b, int N, int D, real_t eps) {
    for (int64_t i = 0; i < N; i++) {
        const real_t *xi = x + i * D;
        double s = 0;
        for (int j = 0; j < D; j++)
            s += xi[j];
        double mu = s / D, v = 0;
        for (int j = 0; j < D; j++) {
            double d = xi[j] - mu;
            v += d * d;
        }
        /* Biased variance and eps inside the sqrt, as torch.nn.functional.layer_norm. */
        double r = 1.0 / sqrt(v / D + (double)eps);
        real_t *oi = out + i * D;
        for (int j = 0; j < D; j++)
            oi[j] = (real_t)((xi[j] - mu) * r) * w[j] + b[j];
        mean[i] = (real_t)mu;
        rstd[i] = (real_t)r;
    }
}

static void s_ln_bwd(backend_t *be, real_t *dx, real_t *dw, real_t *db, const real_t *dout,
                     const real_t *x, const real_t *mean, const real_t *rstd, const real_t *w,
                     int N, int D) {
    for (int64_t i = 0; i < N; i++) {
        const real_t *xi = x + i * D, *gi = dout + i * D;
        double mu = mean[i], r = rstd[i];
        /* dx = r * (g*w - mean(g*w) - xhat * mean(g*w*xhat)) */
        double m1 = 0, m2 = 0;
        for (int j = 0; j < D; j++) {
            double xh = (xi[j] - mu) * r, gw = (double)gi[j] * w[j];
            m1 += gw;
            m2 += gw * xh;
            dw[j] += (real_t)(gi[j] * xh);
            db[j] += gi[j];
        }
        m1 /= D;
        m2 /= D;
        real_t *dxi = dx + i * D;
        for (int j = 0; j < D; j++) {
            double xh = (xi[j] - mu) * r, gw = (double)gi[j] * w[j];
            dxi[j] += (real_t)(r * (gw - m1 - xh * m2));
        }
    }
}

/* ---- GELU (exact) ---- */

typedef struct {
    real_t *out;
    const real_t *x, *dout;
} s_gelu_t;

static void s_gelu_fwd_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    s_gelu_t *c = ctx;
    const real_t k = (real_t)0.70710678118654752440;
    for (int64_t i = i0; i < i1; i++) {
        real_t v = c->x[i];
        c->out[i] = (real_t)0.5 * v * ((real_t)1 + erf(v * k));
    }
}

static void s_gelu_bwd_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    s_gelu_t *c = ctx;
    const real_t k = (real_t)0.70710678118654752440;
    const real_t kp = (real_t)0.39894228040143267794;   /* 1/sqrt(2 pi) */
    for (int64_t i = i0; i < i1; i++) {
        real_t v = c->x[i];
        real_t cdf = (real_t)0.5 * ((real_t)1 + erf(v * k));
        real_t pdf = kp * exp((real_t)-0.5 * v * v);
        c->out[i] = c->dout[i] * (cdf + v * pdf);
    }
}

static void s_gelu_fwd(backend_t *be, real_t *out, const real_t *x, int64_t n) {
    s_gelu_t c = {out, x, NULL};
    pool_for(s_pool(be), n, 16384, s_gelu_fwd_rows, &c);
}

static void s_gelu_bwd(backend_t *be, real_t *dx, const real_t *x, const real_t *dout,
                       int64_t n) {
    s_gelu_t c = {dx, x, dout};
    pool_for(s_pool(be), n, 16384, s_gelu_bwd_rows, &c);
}

/* ---- embeddings ---- */

static void s_embed_fwd(backend_t *be, real_t *out, const real_t *table, const int32_t *ids,
                        int N, int D, int accumulate) {
    for (int64_t i = 0; i < N; i++) {
        real_t *o = out + i * D;
        if (ids[i] < 0) {
            if (!accumulate)
                memset(o, 0, sizeof *o * D);
            continue;
        }
        const real_t *t = table + (int64_t)ids[i] * D;
        if (accumulate)
            for (int j = 0; j < D; j++)
                o[j] += t[j];
        else
            memcpy(o, t, sizeof *o * D);
    }
}

static void s_embed_bwd(backend_t *be, real_t *dtable, const real_t *dout, const int32_t *ids,
                        int N, int D) {
    for (int64_t i = 0; i < N; i++) {
        if (ids[i] < 0)
            continue;
        real_t *t = dtable + (int64_t)ids[i] * D;
        const real_t *g = dout + i * D;
        for (int j = 0; j < D; j++)
            t[j] += g[j];
    }
}

/* ---- exponentials ---- */

#ifdef OFA_REAL_DOUBLE
static inline real_t s_exp_neg(real_t x) { return exp(x); }
#else
/* exp(x) for x <= 0 (arguments are logit - row max), Cephes' expf scheme: x = n ln2 + r
 * with |r| <= ln2/2, a degree-5 polynomial for exp(r) (about 1 ulp), 2^n built in the
 * exponent bits. Branch-free so that GCC vectorises the loops that call it: this is the
 * cost of the loss over a large vocabulary. Below -87 the result is ~1e-38 instead of a
 * denormal or 0, which no sum of probabilities can notice. */
static inline float s_exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    int n = (int)(x * 1.44269504088896341f - 0.5f);   /* round(x log2 e) for x <= 0 */
    float fn = (float)n;
    float r = x - fn * 0.693359375f - fn * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float p;
    memcpy(&p, &bits, sizeof p);
    return y * p;
}
#endif

static real_t s_rowmax(const real_t *x, int V) {
    real_t mx = x[0];
    for (int j = 1; j < V; j++)
        mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* sum of x (n) in double with four partial sums (the additions pipeline). */
static double s_sum4(const real_t *x, int n) {
    double a = 0, b = 0, c = 0, d = 0;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        a += x[j];
        b += x[j + 1];
        c += x[j + 2];
        d += x[j + 3];
    }
    for (; j < n; j++)
        a += x[j];
    return (a + b) + (c + d);
}

/* ---- attention ---- */

/* Number of visible keys for query i of batch b: keys [0, n) are visible (the padding
 * mask and the causal mask both cut a suffix of the keys). */
static int s_visible(const be_attn_t *a, int b, int i) {
    int n = a->Tk;
    if (a->kv_map)
        b = a->kv_map[b];
    if (a->key_len && a->key_len[b] < n)
        n = a->key_len[b] < 0 ? 0 : a->key_len[b];
    if (a->causal && a->q_pos0 + i + 1 < n)
        n = a->q_pos0 + i + 1;
    return n;
}

typedef struct {
    backend_t *be;
    const be_attn_t *a;
    const be_attn_bwd_t *g;
    real_t **scratch;   /* per thread: (Tq, Tk) */
} s_attn_job_t;

static void s_attn_fwd_items(void *ctx, int64_t i0, int64_t i1, int tid) {
    s_attn_job_t *j = ctx;
    const be_attn_t *a = j->a;
    int Tq = a->Tq, Tk = a->Tk, hd = a->hd;
    for (int64_t it = i0; it < i1; it++) {
        int b = (int)(it / a->H), h = (int)(it % a->H);
        int kb = a->kv_map ? a->kv_map[b] : b;
        const real_t *q = a->q + b * a->q_bs + h * hd;
        const real_t *k = a->k + kb * a->k_bs + h * hd;
        const real_t *v = a->v + kb * a->v_bs + h * hd;
        real_t *o = a->out + b * a->o_bs + h * hd;
        real_t *p = a->probs ? a->probs + it * (int64_t)Tq * Tk : j->scratch[tid];
        /* scores (Tq, Tk) = scale * q k^T */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hd, a->scale, q, a->q_ld, k,
             a->k_ld, 0, p, Tk);
        for (int i = 0; i < Tq; i++) {
            real_t *row = p + (int64_t)i * Tk;
            int n = s_visible(a, b, i);
            if (n == 0) {
                memset(row, 0, sizeof *row * Tk);
                continue;
            }
            real_t mx = row[0];
            for (int c = 1; c < n; c++)
                if (row[c] > mx)
                    mx = row[c];
            for (int c = 0; c < n; c++)
                row[c] = s_exp_neg(row[c] - mx);
            double sum = s_sum4(row, n);
            real_t inv = (real_t)(1.0 / sum);
            for (int c = 0; c < n; c++)
                row[c] *= inv;
            for (int c = n; c < Tk; c++)
                row[c] = 0;
        }
        /* out (Tq, hd) = probs v */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hd, Tk, 1, p, Tk, v, a->v_ld, 0, o,
             a->o_ld);
    }
}

static void s_attn_bwd_items(void *ctx, int64_t i0, int64_t i1, int tid) {
    s_attn_job_t *j = ctx;
    const be_attn_bwd_t *g = j->g;
    const be_attn_t *a = g->a;
    int Tq = a->Tq, Tk = a->Tk, hd = a->hd;
    for (int64_t it = i0; it < i1; it++) {
        int b = (int)(it / a->H), h = (int)(it % a->H);
        int64_t qo = b * a->q_bs + h * hd, ko = b * a->k_bs + h * hd, vo = b * a->v_bs + h * hd;
        const real_t *p = a->probs + it * (int64_t)Tq * Tk;
        const real_t *dout = g->dout + b * g->d_bs + h * hd;
        real_t *dp = j->scratch[tid];
        /* dv (Tk, hd) += p^T dout */
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hd, Tq, 1, p, Tk, dout, g->d_ld, 1,
             g->dv + vo, a->v_ld);
        /* dp (Tq, Tk) = dout v^T */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hd, 1, dout, g->d_ld, a->v + vo,
             a->v_ld, 0, dp, Tk);
        /* ds = p * (dp - sum_c p dp) * scale; masked entries have p = 0 and stay 0 */
        for (int i = 0; i < Tq; i++) {
            const real_t *pr = p + (int64_t)i * Tk;
            real_t *dr = dp + (int64_t)i * Tk;
            double s = 0;
            for (int c = 0; c < Tk; c++)
                s += (double)pr[c] * dr[c];
            real_t sf = (real_t)s;
            for (int c = 0; c < Tk; c++)
                dr[c] = pr[c] * (dr[c] - sf) * a->scale;
        }
        /* dq (Tq, hd) += ds k ; dk (Tk, hd) += ds^T q */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hd, Tk, 1, dp, Tk, a->k + ko,
             a->k_ld, 1, g->dq + qo, a->q_ld);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, hd, Tq, 1, dp, Tk, a->q + qo,
             a->q_ld, 1, g->dk + ko, a->k_ld);
    }
}

/* The heads run in parallel on our pool; OpenBLAS threading inside each small product
 * would only oversubscribe the cores, so it is switched to one thread meanwhile. */
static void s_blas_serial(backend_t *be, int on) {
    if (be->threads > 1)
        openblas_set_num_threads(on ? 1 : be->threads);
}

static real_t **s_scratch(backend_t *be, int64_t n) {
    s_cpu_t *c = be->ctx;
    int T = pool_threads(c->pool);
    if (!c->scratch)
        c->scratch = util_calloc(T, sizeof *c->scratch);
    if (n > c->scratch_n) {
        for (int t = 0; t < T; t++) {
            free(c->scratch[t]);
            c->scratch[t] = util_malloc(sizeof(real_t) * n);
        }
        c->scratch_n = n;
    }
    return c->scratch;
}

static void s_attn_fwd(backend_t *be, const be_attn_t *a) {
    if (a->Tq <= 0 || a->B <= 0)
        return;
    if (a->Tk <= 0) {
        for (int b = 0; b < a->B; b++)
            for (int i = 0; i < a->Tq; i++)
                memset(a->out + b * a->o_bs + i * a->o_ld, 0, sizeof(real_t) * a->H * a->hd);
        return;
    }
    s_attn_job_t j = {be, a, NULL, a->probs ? NULL : s_scratch(be, (int64_t)a->Tq * a->Tk)};
    s_blas_serial(be, 1);
    pool_for(s_pool(be), (int64_t)a->B * a->H, 1, s_attn_fwd_items, &j);
    s_blas_serial(be, 0);
}

static void s_attn_bwd(backend_t *be, const be_attn_bwd_t *g) {
    const be_attn_t *a = g->a;
    OFA_ASSERT(a->probs != NULL && a->kv_map == NULL);
    if (a->Tq <= 0 || a->Tk <= 0 || a->B <= 0)
        return;
    s_attn_job_t j = {be, a, g, s_scratch(be, (int64_t)a->Tq * a->Tk)};
    s_blas_serial(be, 1);
    pool_for(s_pool(be), (int64_t)a->B * a->H, 1, s_attn_bwd_items, &j);
    s_blas_serial(be, 0);
}

/* ---- cross-entropy with label smoothing ---- */

typedef struct {
    real_t *out;        /* loss (N) or dlogits (N, V) */
    const real_t *logits;
    const int32_t *targets;
    int V;
    real_t smooth, scale;
    int32_t ignore;
} s_xent_t;

/* log-sum-exp of one row: exponentials in real_t, in chunks through a small buffer so
 * the exponential loop vectorises, and their sum in double. */
static double s_lse(const real_t *x, int V) {
    real_t mx = s_rowmax(x, V), e[512];
    double s = 0;
    for (int j0 = 0; j0 < V; j0 += 512) {
        int n = V - j0 < 512 ? V - j0 : 512;
        for (int j = 0; j < n; j++)
            e[j] = s_exp_neg(x[j0 + j] - mx);
        s += s_sum4(e, n);
    }
    return mx + log(s);
}

static void s_xent_fwd_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    s_xent_t *c = ctx;
    int V = c->V;
    for (int64_t i = i0; i < i1; i++) {
        int32_t y = c->targets[i];
        if (y == c->ignore || y < 0 || y >= V) {
            c->out[i] = 0;
            continue;
        }
        const real_t *x = c->logits + i * V;
        double lse = s_lse(x, V), sx = s_sum4(x, V);
        /* (1-s)(lse - x_y) + s * mean_j(lse - x_j) */
        c->out[i] = (real_t)((1.0 - c->smooth) * (lse - x[y]) + c->smooth * (lse - sx / V));
    }
}

static void s_xent_bwd_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    s_xent_t *c = ctx;
    int V = c->V;
    for (int64_t i = i0; i < i1; i++) {
        int32_t y = c->targets[i];
        real_t *d = c->out + i * V;
        if (y == c->ignore || y < 0 || y >= V) {
            memset(d, 0, sizeof *d * V);
            continue;
        }
        const real_t *x = c->logits + i * V;
        /* one pass of exponentials: d holds exp(x - max) first (d may alias x, and
         * x[j] is read before d[j] is written), then the normalised gradient */
        real_t mx = s_rowmax(x, V);
        for (int j = 0; j < V; j++)
            d[j] = s_exp_neg(x[j] - mx);
        double sum = s_sum4(d, V);
        real_t inv = (real_t)(1.0 / sum), u = c->smooth / V;
        for (int j = 0; j < V; j++)
            d[j] = c->scale * (d[j] * inv - u);
        d[y] -= c->scale * (1 - c->smooth);
    }
}

static void s_xent_fwd(backend_t *be, real_t *loss, const real_t *logits,
                       const int32_t *targets, int N, int V, real_t smooth, int32_t ignore) {
    s_xent_t c = {loss, logits, targets, V, smooth, 1, ignore};
    pool_for(s_pool(be), N, 4, s_xent_fwd_rows, &c);
}

static void s_xent_bwd(backend_t *be, real_t *dlogits, const real_t *logits,
                       const int32_t *targets, int N, int V, real_t smooth, int32_t ignore,
                       real_t scale) {
    s_xent_t c = {dlogits, logits, targets, V, smooth, scale, ignore};
    pool_for(s_pool(be), N, 4, s_xent_bwd_rows, &c);
}

/* ---- optimizer and vector ops ---- */

static void s_adamw(backend_t *be, real_t *w, const real_t *g, real_t *m, real_t *v, int64_t n,
                    real_t lr, real_t b1, real_t b2, real_t eps, real_t wd, int64_t t) {
    /* Scalars as torch computes them (Python doubles), then applied in real_t in the
     * order of torch.optim.adamw's single-tensor path. */
    double bc1 = 1.0 - pow((double)b1, (double)t), bc2 = 1.0 - pow((double)b2, (double)t);
    real_t decay = (real_t)(1.0 - (double)lr * (double)wd);
    real_t step = (real_t)((double)lr / bc1);
    real_t bc2s = (real_t)sqrt(bc2);
    real_t a1 = (real_t)(1.0 - (double)b1), a2 = (real_t)(1.0 - (double)b2);
    for (int64_t i = 0; i < n; i++) {
        real_t wi = w[i] * decay;
        real_t mi = m[i] * b1 + a1 * g[i];
        real_t vi = v[i] * b2 + a2 * g[i] * g[i];
        real_t den = sqrt(vi) / bc2s + eps;
        w[i] = wi - step * (mi / den);
        m[i] = mi;
        v[i] = vi;
    }
}

static double s_sqnorm(backend_t *be, const real_t *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

static void s_scale(backend_t *be, real_t *x, int64_t n, real_t s) {
    for (int64_t i = 0; i < n; i++)
        x[i] *= s;
}

static void s_axpy(backend_t *be, real_t *y, const real_t *x, int64_t n, real_t alpha) {
    for (int64_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

static void s_gather_rows(backend_t *be, real_t *dst, const real_t *src, const int32_t *idx,
                          int n, int64_t cols) {
    for (int i = 0; i < n; i++)
        memcpy(dst + i * cols, src + (int64_t)idx[i] * cols, sizeof(real_t) * cols);
}

static void s_destroy(backend_t *be) {
    s_cpu_t *c = be->ctx;
    if (c->scratch)
        for (int t = 0; t < pool_threads(c->pool); t++)
            free(c->scratch[t]);
    free(c->scratch);
    pool_destroy(&c->pool);
    free(c);
    free(be);
}

static const backend_i s_cpu_i = {
    .name = "cpu",
    .alloc = s_alloc,
    .free = s_free,
    .upload = s_copy,
    .download = s_copy,
    .copy = s_copy,
    .zero = s_zero,
    .synchronize = s_sync,
    .gemm = s_gemm,
    .gemm_batched = s_gemm_batched,
    .bias_add = s_bias_add,
    .bias_bwd = s_bias_bwd,
    .layernorm_fwd = s_ln_fwd,
    .layernorm_bwd = s_ln_bwd,
    .gelu_fwd = s_gelu_fwd,
    .gelu_bwd = s_gelu_bwd,
    .embed_fwd = s_embed_fwd,
    .embed_bwd = s_embed_bwd,
    .attn_fwd = s_attn_fwd,
    .attn_bwd = s_attn_bwd,
    .xent_fwd = s_xent_fwd,
    .xent_bwd = s_xent_bwd,
    .adamw = s_adamw,
    .sqnorm = s_sqnorm,
    .scale = s_scale,
    .axpy = s_axpy,
    .gather_rows = s_gather_rows,
    .destroy = s_destroy,
};

backend_t *backend_cpu_new(int threads) {
    if (threads < 1)
        threads = 1;
    backend_t *be = util_calloc(1, sizeof *be);
    s_cpu_t *c = util_calloc(1, sizeof *c);
    c->pool = pool_new(threads);
    if (!c->pool) {
        free(c);
        free(be);
        return NULL;
    }
    be->i = &s_cpu_i;
    be->ctx = c;
    be->threads = threads;
    openblas_set_num_threads(threads);
    return be;
}
