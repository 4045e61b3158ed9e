/* test_gradcheck.c: every backward of the model checked against central finite
 * differences, in double precision.
 *
 * Scheme: this test links ofamodel_f64, the same model and CPU backend sources compiled
 * with real_t = double (model/real.h; BLAS dgemm, tgmath's exp/erf). In double, a central
 * difference (f(x+h) - f(x-h)) / 2h with h = 1e-5 has truncation error ~h^2 f''' ~ 1e-10
 * and rounding error ~1e-16 / h ~ 1e-11, so analytic and numeric gradients must agree to
 * |a - n| <= 1e-7 + 1e-6 |n|: a wrong term (a missing scale, a transposed product, a
 * lost mask) is off by far more. Every op is checked through a scalar probe
 * L = sum(out * R) with a fixed random R (so dL/dout = R), and the whole model through its
 * own loss. The float library runs the identical code, checked against PyTorch by
 * test_golden. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "util.h"

_Static_assert(sizeof(real_t) == 8, "test_gradcheck needs the double build (ofamodel_f64)");

#define H_STEP 1e-5
#define ATOL 1e-7
#define RTOL 1e-6

static backend_t *be;
static util_rng_t rng = {12345};

/* Every buffer a test allocates is kept here and freed by teardown, so that the tests
 * stay short and the sanitizer build's leak check stays clean. */
static void *s_keep[256];
static int s_nkeep;
static void *s_track(void *p) {
    cr_assert_lt(s_nkeep, 256, "more buffers than s_keep holds");
    s_keep[s_nkeep++] = p;
    return p;
}

static void setup(void) { be = backend_cpu_new(2); }
static void teardown(void) {
    backend_destroy(&be);
    while (s_nkeep > 0)
        free(s_keep[--s_nkeep]);
}
TestSuite(gradcheck, .init = setup, .fini = teardown, .timeout = 60);

static double *rnd(int64_t n, double scale) {
    double *x = s_track(malloc(sizeof *x * (n ? n : 1)));
    for (int64_t i = 0; i < n; i++)
        x[i] = (util_rng_uniform(&rng) * 2 - 1) * scale;
    return x;
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void check(const char *what, double analytic, double numeric) {
    cr_expect(fabs(analytic - numeric) <= ATOL + RTOL * fabs(numeric),
              "%s: analytic %.12g vs numeric %.12g", what, analytic, numeric);
}

/* Finite differences of probe() over every element of x (n) against grad (n). */
typedef double (*probe_fn)(void *ctx);
static void fd_all(const char *what, double *x, const double *grad, int64_t n, probe_fn f,
                   void *ctx) {
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + H_STEP;
        double lp = f(ctx);
        x[i] = x0 - H_STEP;
        double lm = f(ctx);
        x[i] = x0;
        char w[96];
        snprintf(w, sizeof w, "%s[%lld]", what, (long long)i);
        check(w, grad[i], (lp - lm) / (2 * H_STEP));
    }
}

/* ---- LayerNorm ---- */
typedef struct { double *x, *w, *b, *out, *m, *r, *R; int N, D; } ln_t;
static double ln_probe(void *c_) {
    ln_t *c = c_;
    be->i->layernorm_fwd(be, c->out, c->m, c->r, c->x, c->w, c->b, c->N, c->D, 1e-5);
    return dot(c->out, c->R, (int64_t)c->N * c->D);
}
Test(gradcheck, layernorm) {
    int N = 3, D = 7;
    ln_t c = {rnd(N * D, 2), rnd(D, 1), rnd(D, 1), rnd(N * D, 0), rnd(N, 0), rnd(N, 0),
              rnd(N * D, 1), N, D};
    for (int j = 0; j < D; j++)
        c.w[j] += 1;
    ln_probe(&c);
    double *dx = s_track(calloc(N * D, 8)), *dw = s_track(calloc(D, 8));
    double *db = s_track(calloc(D, 8));
    be->i->layernorm_bwd(be, dx, dw, db, c.R, c.x, c.m, c.r, c.w, N, D);
    fd_all("ln.dx", c.x, dx, N * D, ln_probe, &c);
    fd_all("ln.dw", c.w, dw, D, ln_probe, &c);
    fd_all("ln.db", c.b, db, D, ln_probe, &c);
}

/* ---- GELU ---- */
typedef struct { double *x, *out, *R; int n; } gelu_t;
static double gelu_probe(void *c_) {
    gelu_t *c = c_;
    be->i->gelu_fwd(be, c->out, c->x, c->n);
    return dot(c->out, c->R, c->n);
}
Test(gradcheck, gelu) {
    int n = 40;
    gelu_t c = {rnd(n, 4), rnd(n, 0), rnd(n, 1), n};
    double *dx = s_track(calloc(n, 8));
    be->i->gelu_bwd(be, dx, c.x, c.R, n);
    fd_all("gelu", c.x, dx, n, gelu_probe, &c);
    /* the exact (erf) GELU, not the tanh approximation: gelu(1) = 0.8413447460685429 */
    double one = 1, y;
    be->i->gelu_fwd(be, &y, &one, 1);
    cr_expect(fabs(y - 0.8413447460685429) < 1e-15, "gelu(1) = %.17g", y);
}

/* ---- embeddings ---- */
typedef struct { double *table, *out, *R; int32_t *ids; int N, D; } emb_t;
static double emb_probe(void *c_) {
    emb_t *c = c_;
    be->i->embed_fwd(be, c->out, c->table, c->ids, c->N, c->D, 0);
    return dot(c->out, c->R, (int64_t)c->N * c->D);
}
Test(gradcheck, embedding) {
    int32_t ids[6] = {2, 0, -1, 2, 4, 1};   /* a repeat and a skipped (-1) row */
    emb_t c = {rnd(5 * 3, 1), rnd(6 * 3, 0), rnd(6 * 3, 1), ids, 6, 3};
    double *dt = s_track(calloc(15, 8));
    be->i->embed_bwd(be, dt, c.R, ids, 6, 3);
    fd_all("embed", c.table, dt, 15, emb_probe, &c);
    cr_expect_eq(dt[3 * 3], 0, "row 3 is never used");
}

/* ---- attention ---- */
typedef struct { be_attn_t a; double *R; int64_t nout; } att_t;
static double att_probe(void *c_) {
    att_t *c = c_;
    be->i->attn_fwd(be, &c->a);
    return dot(c->a.out, c->R, c->nout);
}
/* q/k/v interleaved in one fused (B, T, 3*Dm) buffer for self-attention, separate for
 * cross; key_len and causal masks as given. */
static void attn_case(const char *what, int B, int Tq, int Tk, int causal, const int32_t *klen,
                      int fused) {
    int Hh = 2, hd = 3, Dm = Hh * hd;
    att_t c;
    memset(&c, 0, sizeof c);
    be_attn_t *a = &c.a;
    a->B = B, a->H = Hh, a->Tq = Tq, a->Tk = Tk, a->hd = hd, a->scale = 1 / sqrt(hd);
    double *qkv = NULL, *q, *k, *v;
    if (fused) {
        cr_assert_eq(Tq, Tk);
        qkv = rnd((int64_t)B * Tq * 3 * Dm, 1.5);
        q = qkv, k = qkv + Dm, v = qkv + 2 * Dm;
        a->q_ld = a->k_ld = a->v_ld = 3 * Dm;
    } else {
        q = rnd((int64_t)B * Tq * Dm, 1.5), k = rnd((int64_t)B * Tk * Dm, 1.5);
        v = rnd((int64_t)B * Tk * Dm, 1.5);
        a->q_ld = a->k_ld = a->v_ld = Dm;
    }
    a->q = q, a->k = k, a->v = v;
    a->q_bs = a->q_ld * Tq, a->k_bs = a->k_ld * Tk, a->v_bs = a->v_ld * Tk;
    a->out = rnd((int64_t)B * Tq * Dm, 0), a->o_ld = Dm, a->o_bs = (int64_t)Dm * Tq;
    a->key_len = klen, a->causal = causal;
    a->probs = rnd((int64_t)B * Hh * Tq * Tk, 0);
    c.nout = (int64_t)B * Tq * Dm;
    c.R = rnd(c.nout, 1);
    att_probe(&c);
    int64_t nq = (int64_t)B * Tq * a->q_ld, nk = (int64_t)B * Tk * a->k_ld;
    double *dq, *dk, *dv, *dbuf = NULL;
    if (fused) {
        dbuf = s_track(calloc(nq, 8));
        dq = dbuf, dk = dbuf + Dm, dv = dbuf + 2 * Dm;
    } else {
        dq = s_track(calloc(nq, 8)), dk = s_track(calloc(nk, 8)), dv = s_track(calloc(nk, 8));
    }
    be_attn_bwd_t g = {a, c.R, Dm, (int64_t)Dm * Tq, dq, dk, dv};
    be->i->attn_bwd(be, &g);
    char w[64];
    if (fused) {
        snprintf(w, sizeof w, "%s.dqkv", what);
        fd_all(w, qkv, dbuf, nq, att_probe, &c);
    } else {
        snprintf(w, sizeof w, "%s.dq", what);
        fd_all(w, q, dq, nq, att_probe, &c);
        snprintf(w, sizeof w, "%s.dk", what);
        fd_all(w, k, dk, nk, att_probe, &c);
        snprintf(w, sizeof w, "%s.dv", what);
        fd_all(w, v, dv, nk, att_probe, &c);
    }
}

Test(gradcheck, attention_padding) {
    int32_t klen[2] = {5, 3};
    attn_case("enc", 2, 5, 5, 0, klen, 1);
}
Test(gradcheck, attention_causal) { attn_case("self", 2, 4, 4, 1, NULL, 1); }
Test(gradcheck, attention_cross_padding) {
    int32_t klen[2] = {2, 6};
    attn_case("cross", 2, 3, 6, 0, klen, 0);
}
/* Masked keys get exactly zero probability and zero gradient. */
Test(gradcheck, attention_mask_is_exact) {
    int32_t klen[1] = {2};
    double q[3] = {1, 2, 3}, k[9] = {1, 0, 0, 0, 1, 0, 9, 9, 9}, v[9] = {1, 1, 1, 2, 2, 2, 50, 50, 50};
    double out[3], p[3];
    be_attn_t a = {.B = 1, .H = 1, .Tq = 1, .Tk = 3, .hd = 3, .scale = 1, .q = q, .q_ld = 3,
                   .q_bs = 3, .k = k, .k_ld = 3, .k_bs = 9, .v = v, .v_ld = 3, .v_bs = 9,
                   .out = out, .o_ld = 3, .o_bs = 3, .key_len = klen, .probs = p};
    be->i->attn_fwd(be, &a);
    cr_expect_eq(p[2], 0);
    double e = exp(2.0) / (exp(1.0) + exp(2.0));
    cr_expect(fabs(out[0] - (1 - e) * 1 - e * 2) < 1e-14, "out %.17g", out[0]);
}

/* ---- cross-entropy with label smoothing ---- */
typedef struct { double *x, *loss; int32_t *t; int N, V; double s; } xe_t;
static double xe_probe(void *c_) {
    xe_t *c = c_;
    be->i->xent_fwd(be, c->loss, c->x, c->t, c->N, c->V, c->s, 1);
    double s = 0;
    for (int i = 0; i < c->N; i++)
        s += c->loss[i];
    return s / 2;   /* mean over the 2 non-ignored rows */
}
Test(gradcheck, cross_entropy_smoothing) {
    int32_t t[3] = {4, 1, 0};   /* row 1 is pad: no loss, no gradient */
    xe_t c = {rnd(3 * 6, 3), rnd(3, 0), t, 3, 6, 0.1};
    double *d = s_track(calloc(18, 8));
    be->i->xent_bwd(be, d, c.x, t, 3, 6, 0.1, 1, 0.5);
    fd_all("xent", c.x, d, 18, xe_probe, &c);
    /* PyTorch's definition on one row: (1-s) nll + s mean_j(-log p_j) */
    double lse = 0;
    for (int j = 0; j < 6; j++)
        lse += exp(c.x[j]);
    lse = log(lse);
    double ref = 0.9 * (lse - c.x[4]);
    for (int j = 0; j < 6; j++)
        ref += 0.1 / 6 * (lse - c.x[j]);
    xe_probe(&c);
    cr_expect(fabs(c.loss[0] - ref) < 1e-13, "loss %.17g vs %.17g", c.loss[0], ref);
    cr_expect_eq(c.loss[1], 0);
}

/* ---- the whole model, image adapter and type embedding included ---- */
typedef struct { model_t *m; model_batch_t *b; } whole_t;
static double whole_loss(whole_t *c) {
    model_out_t o;
    char err[256];
    cr_assert_eq(model_forward(c->m, c->b, &o, NULL, err, sizeof err), 0, "%s", err);
    return o.loss;
}

Test(gradcheck, whole_model_with_image_adapter, .timeout = 100) {
    char err[256];
    model_config_t cfg;
    cr_assert_eq(model_config_preset(&cfg, "nano", 24, err, sizeof err), 0);
    cfg.d_model = 16, cfg.n_heads = 2, cfg.d_ffn = 32, cfg.n_enc = 2, cfg.n_dec = 2;
    cfg.max_src = 8, cfg.max_tgt = 5, cfg.patch_dim = 12, cfg.img_grid = 2;
    cfg.init_std = 0.3;   /* large enough weights that every path matters */
    model_t *m = model_new(&cfg, be, 99, err, sizeof err);
    cr_assert(m, "%s", err);
    /* LayerNorm weights and biases away from 1/0 so their gradients are generic */
    for (int i = 0; i < model_n_params(m); i++) {
        model_param_t p;
        model_param(m, i, &p);
        if (p.ndim == 1)
            for (int64_t k = 0; k < p.numel; k++)
                p.w[k] += (util_rng_uniform(&rng) - 0.5) * 0.4;
    }
    /* row 0: 4 image patches (2x2 grid) then 3 text tokens, 1 pad; row 1: text, padded */
    int32_t src[16] = {1, 1, 1, 1, 7, 8, 9, 1, 5, 6, 7, 8, 9, 10, 1, 1};
    uint8_t mod[16] = {1, 1, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2, 0, 0};
    int32_t slen[2] = {7, 6};
    int32_t tin[10] = {0, 11, 12, 13, 14, 0, 15, 16, 1, 1};
    int32_t tout[10] = {11, 12, 13, 14, 2, 15, 16, 2, 1, 1};
    uint8_t img[2 * 4 * 12];
    for (int i = 0; i < 96; i++)
        img[i] = (uint8_t)(util_rng_next(&rng) % 256);
    model_batch_t b = {.B = 2, .S = 8, .T = 5, .src_tok = src, .src_mod = mod, .src_len = slen,
                       .tgt_in = tin, .tgt_out = tout, .img = img, .Np = 4, .grid = 2};
    whole_t c = {m, &b};
    whole_loss(&c);
    model_backward(m);
    int checked = 0;
    for (int i = 0; i < model_n_params(m); i++) {
        model_param_t p;
        model_param(m, i, &p);
        double *g = malloc(sizeof *g * p.numel);
        memcpy(g, p.g, sizeof *g * p.numel);
        /* up to 8 elements per tensor, spread over it */
        int64_t step = p.numel / 8 > 1 ? p.numel / 8 : 1;
        for (int64_t k = (int64_t)(util_rng_next(&rng) % step); k < p.numel; k += step) {
            double w0 = p.w[k];
            p.w[k] = w0 + H_STEP;
            double lp = whole_loss(&c);
            p.w[k] = w0 - H_STEP;
            double lm = whole_loss(&c);
            p.w[k] = w0;
            char w[96];
            snprintf(w, sizeof w, "%s[%lld]", p.name, (long long)k);
            check(w, g[k], (lp - lm) / (2 * H_STEP));
            checked++;
        }
        free(g);
    }
    cr_expect_gt(checked, 300);
    /* the adapters are really in the graph: their gradients are not zero */
    const char *live[] = {"img.proj.w", "img.proj.b", "img.row", "img.col", "type_emb"};
    for (size_t i = 0; i < 5; i++) {
        model_param_t p;
        model_param(m, model_param_find(m, live[i]), &p);
        double s = 0;
        for (int64_t k = 0; k < p.numel; k++)
            s += fabs(p.g[k]);
        cr_expect_gt(s, 1e-6, "%s has no gradient", live[i]);
    }
    model_destroy(&m);
}

/* ---- the audio, video and motion adapters, beside the image one ---- */
Test(gradcheck, whole_model_with_audio_video_motion_adapters, .timeout = 100) {
    char err[256];
    model_config_t cfg;
    cr_assert_eq(model_config_preset(&cfg, "nano", 24, err, sizeof err), 0);
    cfg.d_model = 16, cfg.n_heads = 2, cfg.d_ffn = 32, cfg.n_enc = 1, cfg.n_dec = 1;
    cfg.max_src = 12, cfg.max_tgt = 4, cfg.patch_dim = 12, cfg.img_grid = 2;
    cfg.aud_dim = 6, cfg.vid_dim = 12, cfg.vid_grid = 2, cfg.vid_frames = 3, cfg.mot_dim = 5;
    cfg.init_std = 0.3;
    model_t *m = model_new(&cfg, be, 7, err, sizeof err);
    cr_assert(m, "%s", err);
    for (int i = 0; i < model_n_params(m); i++) {
        model_param_t p;
        model_param(m, i, &p);
        if (p.ndim == 1)
            for (int64_t k = 0; k < p.numel; k++)
                p.w[k] += (util_rng_uniform(&rng) - 0.5) * 0.4;
    }
    /* row 0: 2 audio positions, 5 video positions (frame 0 whole, frame 1's first patch),
     * 2 text tokens; row 1: 3 motion positions, 2 image positions, text, a BOX-typed
     * token, padding. Each row holds fewer positions than its tensors have rows, so the
     * unused rows must get no gradient and change nothing. */
    const int A = MODEL_MOD_AUDIO, Vd = MODEL_MOD_VIDEO, Mo = MODEL_MOD_MOTION, I = MODEL_MOD_IMAGE;
    uint8_t mod[24] = {A, A, Vd, Vd, Vd, Vd, Vd, 0, 0, 0, 0, 0,
                       Mo, Mo, Mo, I, I, 0, 0, 2, 0, 0, 0, 0};
    int32_t src[24] = {1, 1, 1, 1, 1, 1, 1, 7, 8, 1, 1, 1,
                       1, 1, 1, 1, 1, 5, 6, 9, 1, 1, 1, 1};
    int32_t slen[2] = {9, 10};
    int32_t tin[8] = {0, 11, 12, 13, 0, 15, 1, 1};
    int32_t tout[8] = {11, 12, 13, 2, 15, 2, 1, 1};
    float *aud = malloc(sizeof(float) * 2 * 3 * 6), *mot = malloc(sizeof(float) * 2 * 4 * 5);
    for (int i = 0; i < 36; i++)
        aud[i] = (float)(util_rng_uniform(&rng) * 2 - 1);
    for (int i = 0; i < 40; i++)
        mot[i] = (float)(util_rng_uniform(&rng) * 2 - 1);
    uint8_t vid[2 * 2 * 4 * 12], img[2 * 4 * 12];
    for (size_t i = 0; i < sizeof vid; i++)
        vid[i] = (uint8_t)(util_rng_next(&rng) % 256);
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)(util_rng_next(&rng) % 256);
    model_batch_t b = {.B = 2, .S = 12, .T = 4, .src_tok = src, .src_mod = mod, .src_len = slen,
                       .tgt_in = tin, .tgt_out = tout, .img = img, .Np = 4, .grid = 2,
                       .aud = aud, .Fa = 3, .aud_dim = 6,
                       .vid = vid, .Nf = 2, .Npv = 4, .vid_grid = 2, .vid_dim = 12,
                       .mot = mot, .Fm = 4, .mot_dim = 5};
    whole_t c = {m, &b};
    double l0 = whole_loss(&c);
    model_backward(m);
    int checked = 0;
    for (int i = 0; i < model_n_params(m); i++) {
        model_param_t p;
        model_param(m, i, &p);
        double *g = malloc(sizeof *g * p.numel);
        memcpy(g, p.g, sizeof *g * p.numel);
        int64_t step = p.numel / 8 > 1 ? p.numel / 8 : 1;
        for (int64_t k = (int64_t)(util_rng_next(&rng) % step); k < p.numel; k += step) {
            double w0 = p.w[k];
            p.w[k] = w0 + H_STEP;
            double lp = whole_loss(&c);
            p.w[k] = w0 - H_STEP;
            double lm = whole_loss(&c);
            p.w[k] = w0;
            char w[96];
            snprintf(w, sizeof w, "%s[%lld]", p.name, (long long)k);
            check(w, g[k], (lp - lm) / (2 * H_STEP));
            checked++;
        }
        free(g);
    }
    cr_expect_gt(checked, 200);
    /* every new tensor is in the graph; vid.time row 2 (no third frame) is not */
    const char *live[] = {"aud.proj.w", "aud.proj.b", "vid.proj.w", "vid.proj.b", "vid.time",
                          "vid.row", "vid.col", "mot.proj.w", "mot.proj.b", "img.proj.w"};
    for (size_t i = 0; i < sizeof live / sizeof *live; i++) {
        int pi = model_param_find(m, live[i]);
        cr_assert_geq(pi, 0, "%s missing", live[i]);
        model_param_t p;
        model_param(m, pi, &p);
        double s = 0;
        for (int64_t k = 0; k < p.numel; k++)
            s += fabs(p.g[k]);
        cr_expect_gt(s, 1e-6, "%s has no gradient", live[i]);
    }
    model_param_t vt;
    model_param(m, model_param_find(m, "vid.time"), &vt);
    for (int k = 2 * 16; k < 3 * 16; k++)
        cr_expect_eq(vt.g[k], 0, "vid.time row 2 is used by no position");
    /* the unused tail of the audio tensor (row 0's frame 2, row 1's frames) changes nothing */
    aud[2 * 6] += 5, aud[3 * 6 + 1] -= 3;
    cr_expect(fabs(whole_loss(&c) - l0) < 1e-12, "unused audio frames changed the loss");
    aud[0] += 0.5;
    cr_expect(fabs(whole_loss(&c) - l0) > 1e-9, "audio frame 0 of row 0 does not matter");
    free(aud);
    free(mot);
    model_destroy(&m);
}

/* A batch whose positions do not fit its tensors or the adapters is refused by name. */
Test(gradcheck, adapter_batch_errors) {
    char err[256];
    model_config_t cfg;
    cr_assert_eq(model_config_preset(&cfg, "nano", 24, err, sizeof err), 0);
    cfg.d_model = 16, cfg.n_heads = 2, cfg.d_ffn = 32, cfg.max_src = 8, cfg.max_tgt = 4;
    cfg.aud_dim = 6;
    model_t *m = model_new(&cfg, be, 7, err, sizeof err);
    cr_assert(m, "%s", err);
    cr_expect_lt(model_param_find(m, "vid.proj.w"), 0, "no video adapter unless asked");
    cr_expect_lt(model_param_find(m, "mot.proj.w"), 0, "no motion adapter unless asked");
    uint8_t mod[4] = {MODEL_MOD_AUDIO, MODEL_MOD_AUDIO, MODEL_MOD_AUDIO, 0};
    int32_t src[4] = {1, 1, 1, 5}, slen[1] = {4}, tin[2] = {0, 7}, tout[2] = {7, 2};
    float aud[2 * 6] = {0};
    model_batch_t b = {.B = 1, .S = 4, .T = 2, .src_tok = src, .src_mod = mod, .src_len = slen,
                       .tgt_in = tin, .tgt_out = tout, .aud = aud, .Fa = 2, .aud_dim = 6};
    cr_expect_eq(model_batch_check(m, &b, err, sizeof err), -1);
    cr_expect(strstr(err, "3 audio positions for 2 aud rows"), "%s", err);
    b.Fa = 3;
    b.aud_dim = 5;
    cr_expect_eq(model_batch_check(m, &b, err, sizeof err), -1);
    cr_expect(strstr(err, "audio adapter takes 6"), "%s", err);
    b.aud_dim = 6;
    b.aud = NULL;
    cr_expect_eq(model_batch_check(m, &b, err, sizeof err), -1);
    cr_expect(strstr(err, "no aud tensor"), "%s", err);
    b.aud = aud;
    mod[0] = MODEL_MOD_MOTION;
    cr_expect_eq(model_batch_check(m, &b, err, sizeof err), -1);
    cr_expect(strstr(err, "no motion adapter"), "%s", err);
    model_destroy(&m);
}

/* ---- modality experts: one encoder FFN per modality group, mixed positions ---- */
Test(gradcheck, whole_model_with_modality_experts, .timeout = 100) {
    char err[256];
    model_config_t cfg;
    cr_assert_eq(model_config_preset(&cfg, "nano", 24, err, sizeof err), 0);
    cfg.d_model = 16, cfg.n_heads = 2, cfg.d_ffn = 32, cfg.n_enc = 2, cfg.n_dec = 1;
    cfg.max_src = 10, cfg.max_tgt = 4, cfg.patch_dim = 12, cfg.img_grid = 2;
    cfg.aud_dim = 6, cfg.vid_dim = 12, cfg.vid_grid = 2, cfg.vid_frames = 2;
    cfg.mod_experts = 1;
    cfg.init_std = 0.3;
    model_t *m = model_new(&cfg, be, 21, err, sizeof err);
    cr_assert(m, "%s", err);
    cr_expect_lt(model_param_find(m, "enc.0.ffn.fc1.w"), 0, "experts replace the plain FFN");
    cr_expect_lt(model_param_find(m, "enc.0.ffn.motion.fc1.w"), 0, "no motion adapter, no expert");
    cr_expect_geq(model_param_find(m, "dec.0.ffn.fc1.w"), 0, "the decoder keeps its one FFN");
    for (int i = 0; i < model_n_params(m); i++) {
        model_param_t p;
        model_param(m, i, &p);
        if (p.ndim == 1)
            for (int64_t k = 0; k < p.numel; k++)
                p.w[k] += (util_rng_uniform(&rng) - 0.5) * 0.4;
    }
    /* row 0: text, 4 image patches between text, a BOX token (text group), padding;
     * row 1: 3 audio positions, text, a PHONE token (text group), padding. No video
     * position: the video expert must get no gradient. */
    const int A = MODEL_MOD_AUDIO, I = MODEL_MOD_IMAGE;
    uint8_t mod[20] = {0, I, I, 0, I, I, 2, 0, 0, 0,
                       A, A, A, 0, 5, 0, 0, 0, 0, 0};
    int32_t src[20] = {5, 1, 1, 6, 1, 1, 9, 7, 1, 1,
                       1, 1, 1, 8, 10, 7, 1, 1, 1, 1};
    int32_t slen[2] = {8, 7};
    int32_t tin[8] = {0, 11, 12, 13, 0, 15, 1, 1};
    int32_t tout[8] = {11, 12, 13, 2, 15, 2, 1, 1};
    float aud[2 * 3 * 6];
    for (int i = 0; i < 36; i++)
        aud[i] = (float)(util_rng_uniform(&rng) * 2 - 1);
    uint8_t img[2 * 4 * 12];
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)(util_rng_next(&rng) % 256);
    model_batch_t b = {.B = 2, .S = 10, .T = 4, .src_tok = src, .src_mod = mod, .src_len = slen,
                       .tgt_in = tin, .tgt_out = tout, .img = img, .Np = 4, .grid = 2,
                       .aud = aud, .Fa = 3, .aud_dim = 6};
    whole_t c = {m, &b};
    whole_loss(&c);
    model_backward(m);
    int checked = 0;
    for (int i = 0; i < model_n_params(m); i++) {
        model_param_t p;
        model_param(m, i, &p);
        double *g = malloc(sizeof *g * p.numel);
        memcpy(g, p.g, sizeof *g * p.numel);
        int64_t step = p.numel / 8 > 1 ? p.numel / 8 : 1;
        for (int64_t k = (int64_t)(util_rng_next(&rng) % step); k < p.numel; k += step) {
            double w0 = p.w[k];
            p.w[k] = w0 + H_STEP;
            double lp = whole_loss(&c);
            p.w[k] = w0 - H_STEP;
            double lm = whole_loss(&c);
            p.w[k] = w0;
            char w[96];
            snprintf(w, sizeof w, "%s[%lld]", p.name, (long long)k);
            check(w, g[k], (lp - lm) / (2 * H_STEP));
            checked++;
        }
        free(g);
    }
    cr_expect_gt(checked, 300);
    /* every expert with positions learns, in both layers; the video expert does not */
    const char *groups[] = {"text", "image", "audio", "video"};
    for (int l = 0; l < 2; l++)
        for (int gi = 0; gi < 4; gi++) {
            const char *parts[] = {"fc1.w", "fc1.b", "fc2.w", "fc2.b"};
            for (int q = 0; q < 4; q++) {
                char name[64];
                snprintf(name, sizeof name, "enc.%d.ffn.%s.%s", l, groups[gi], parts[q]);
                int pi = model_param_find(m, name);
                cr_assert_geq(pi, 0, "%s missing", name);
                model_param_t p;
                model_param(m, pi, &p);
                double s = 0;
                for (int64_t k = 0; k < p.numel; k++)
                    s += fabs(p.g[k]);
                if (gi == 3)
                    cr_expect_eq(s, 0, "%s has a gradient without video positions", name);
                else
                    cr_expect_gt(s, 1e-6, "%s has no gradient", name);
            }
        }
    model_destroy(&m);
}
