/* test_optim.c: the training-side pieces of the model beyond the golden match: the
 * learning-rate schedule, gradient clipping, the weight-decay flag, batch validation
 * (bad input is refused with a reason naming the field), reuse of the activation arena
 * across batch shapes, and that training on a fixed multi-modal batch drives its loss
 * down. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

static backend_t *be;
static model_t *m;
static model_config_t cfg;

static void setup(void) {
    char err[256];
    be = backend_cpu_new(2);
    cr_assert_eq(model_config_preset(&cfg, "nano", 40, err, sizeof err), 0, "%s", err);
    cfg.d_model = 32, cfg.n_heads = 4, cfg.d_ffn = 64;
    cfg.max_src = 12, cfg.max_tgt = 6, cfg.patch_dim = 12, cfg.img_grid = 2;
    m = model_new(&cfg, be, 5, err, sizeof err);
    cr_assert(m, "%s", err);
}
static void teardown(void) {
    model_destroy(&m);
    backend_destroy(&be);
}
TestSuite(optim, .init = setup, .fini = teardown, .timeout = 30);

/* row 0: 4 patches + text; row 1: text only, shorter */
static int32_t src[24] = {1, 1, 1, 1, 7, 8, 9, 2, 1, 1, 1, 1, 5, 6, 7, 8, 9, 10, 2, 1, 1, 1, 1, 1};
static uint8_t mod[24] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static int32_t slen[2] = {8, 7};
static int32_t tin[12] = {0, 11, 12, 13, 14, 15, 0, 16, 17, 1, 1, 1};
static int32_t tout[12] = {11, 12, 13, 14, 15, 2, 16, 17, 2, 1, 1, 1};
static uint8_t img[2 * 4 * 12];

static model_batch_t batch(void) {
    for (int i = 0; i < 96; i++)
        img[i] = (uint8_t)(i * 37 % 251);
    return (model_batch_t){.B = 2, .S = 12, .T = 6, .src_tok = src, .src_mod = mod,
                           .src_len = slen, .tgt_in = tin, .tgt_out = tout, .img = img,
                           .Np = 4, .grid = 2};
}

Test(optim, lr_schedule) {
    model_sched_t s = {.lr_max = 1e-3, .lr_min = 1e-5, .warmup = 10, .total = 110};
    cr_expect_float_eq(model_lr_at(&s, 0), 1e-4, 1e-12);
    cr_expect_float_eq(model_lr_at(&s, 9), 1e-3, 1e-12);
    cr_expect_float_eq(model_lr_at(&s, 10), 1e-3, 1e-12);
    cr_expect_float_eq(model_lr_at(&s, 60), (1e-3 + 1e-5) / 2, 1e-12);
    cr_expect_float_eq(model_lr_at(&s, 110), 1e-5, 1e-12);
    cr_expect_float_eq(model_lr_at(&s, 500), 1e-5, 1e-12);
    for (int i = 11; i < 110; i++)
        cr_expect_leq(model_lr_at(&s, i), model_lr_at(&s, i - 1));
}

Test(optim, clip_grad_norm) {
    char err[256];
    model_batch_t b = batch();
    model_out_t o;
    cr_assert_eq(model_forward(m, &b, &o, NULL, err, sizeof err), 0, "%s", err);
    cr_expect_eq(o.ntok, 9);
    model_backward(m);
    double n0 = model_clip_grad(m, 0);   /* measure only */
    cr_assert_gt(n0, 0);
    double n1 = model_clip_grad(m, n0 / 4);
    cr_expect_float_eq(n1, n0, 1e-9 * n0);
    double n2 = model_clip_grad(m, 0);
    cr_expect(fabs(n2 - n0 / 4) < 1e-4 * n0, "after clipping %g, want %g", n2, n0 / 4);
    /* a max above the norm leaves the gradients alone */
    double n3 = model_clip_grad(m, 1e9);
    cr_expect(fabs(model_clip_grad(m, 0) - n3) < 1e-9 * n3);
}

Test(optim, weight_decay_flag) {
    char err[256];
    model_batch_t b = batch();
    model_out_t o;
    int ln = model_param_find(m, "enc.0.ln1.w"), emb = model_param_find(m, "tok_emb");
    cr_assert(ln >= 0 && emb >= 0);
    model_param_t pl, pe;
    model_param(m, ln, &pl);
    model_param(m, emb, &pe);
    /* with zero gradients only the decay moves a weight: w *= 1 - lr*wd */
    cr_assert_eq(model_forward(m, &b, &o, NULL, err, sizeof err), 0, "%s", err);
    model_backward(m);
    memset(pl.g, 0, sizeof(float) * pl.numel);
    memset(pe.g + 39 * cfg.d_model, 0, sizeof(float) * cfg.d_model);   /* token 39: unused */
    float l0 = pl.w[0], e0 = pe.w[39 * cfg.d_model];
    model_step(m, 0.5f);   /* decay_all (the default, as the golden) */
    cr_expect_float_eq(pl.w[0], l0 * (1 - 0.5f * 0.01f), 1e-7);
    cr_expect_float_eq(pe.w[39 * cfg.d_model], e0 * (1 - 0.5f * 0.01f), 1e-7);
    /* without decay_all LayerNorm weights are not decayed, matrices still are */
    model_destroy(&m);
    cfg.decay_all = 0;
    m = model_new(&cfg, be, 5, err, sizeof err);
    model_param(m, ln, &pl);
    model_param(m, emb, &pe);
    cr_assert_eq(model_forward(m, &b, &o, NULL, err, sizeof err), 0, "%s", err);
    model_backward(m);
    memset(pl.g, 0, sizeof(float) * pl.numel);
    memset(pe.g + 39 * cfg.d_model, 0, sizeof(float) * cfg.d_model);
    l0 = pl.w[0], e0 = pe.w[39 * cfg.d_model];
    model_step(m, 0.5f);
    cr_expect_eq(pl.w[0], l0);
    cr_expect_float_eq(pe.w[39 * cfg.d_model], e0 * (1 - 0.5f * 0.01f), 1e-7);
    cr_expect_eq(model_adam_t(m), 1);
}

static void refused(model_batch_t *b, const char *needle) {
    char err[256] = "";
    model_out_t o;
    cr_expect_neq(model_forward(m, b, &o, NULL, err, sizeof err), 0, "accepted (%s)", needle);
    cr_expect(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
}

Test(optim, bad_batches_refused) {
    model_batch_t b = batch();
    int32_t s2[24];
    memcpy(s2, src, sizeof s2);
    s2[5] = 40;
    b.src_tok = s2;
    refused(&b, "src_tok[0][5]");
    b = batch();
    uint8_t m2[24];
    memcpy(m2, mod, sizeof m2);
    m2[14] = 9;
    b.src_mod = m2;
    refused(&b, "src_mod[1][2]");
    b = batch();
    b.img = NULL;
    refused(&b, "no img");
    b = batch();
    b.S = 13;
    refused(&b, "max_src");
    b = batch();
    int32_t t2[12];
    memcpy(t2, tout, sizeof t2);
    t2[3] = -4;
    b.tgt_out = t2;
    refused(&b, "tgt_out[0][3]");
    b = batch();
    int32_t l2[2] = {8, 14};
    b.src_len = l2;
    refused(&b, "src_len[1]");
    b = batch();
    b.grid = 1;   /* 4 patches on a 1-wide grid need 4 rows, the model has 2 */
    refused(&b, "grid");
}

/* The arena grows once and is reused: a small batch after a big one computes what a
 * fresh model computes. */
Test(optim, arena_reuse_across_shapes) {
    char err[256];
    model_batch_t b = batch(), small = batch();
    small.B = 1;
    small.S = 8;
    small.T = 6;
    small.src_tok = src;
    model_out_t o1, o2;
    cr_assert_eq(model_forward(m, &b, &o1, NULL, err, sizeof err), 0, "%s", err);
    /* row 0 of the batch, cut to 8 positions (its src_len is 8) */
    int32_t s8[8];
    uint8_t m8[8];
    memcpy(s8, src, sizeof s8);
    memcpy(m8, mod, sizeof m8);
    small.src_tok = s8, small.src_mod = m8;
    cr_assert_eq(model_forward(m, &small, &o1, NULL, err, sizeof err), 0, "%s", err);
    model_t *fresh = model_new(&cfg, be, 5, err, sizeof err);
    cr_assert_eq(model_forward(fresh, &small, &o2, NULL, err, sizeof err), 0, "%s", err);
    cr_expect_float_eq(o1.loss, o2.loss, 1e-6);
    model_destroy(&fresh);
}

Test(optim, loss_falls_on_a_fixed_batch) {
    char err[256];
    model_batch_t b = batch();
    model_out_t o;
    float per[2];
    cr_assert_eq(model_forward(m, &b, &o, per, err, sizeof err), 0, "%s", err);
    double first = o.loss;
    cr_expect_float_eq(per[0] + per[1], o.loss_sum, 1e-4);
    for (int i = 0; i < 60; i++) {
        cr_assert_eq(model_forward(m, &b, &o, NULL, err, sizeof err), 0, "%s", err);
        model_backward(m);
        model_clip_grad(m, 1.0);
        model_step(m, 3e-3f);
    }
    cr_assert_eq(model_forward(m, &b, &o, NULL, err, sizeof err), 0, "%s", err);
    cr_expect_lt(o.loss, first * 0.5, "loss %g -> %g", first, o.loss);
}

/* The float backend's loss (a vectorised exponential) against a double computation with
 * libm's exp, over logits spread wide enough that some probabilities underflow. */
Test(optim, cross_entropy_float_accuracy) {
    int N = 4, V = 3000;
    float *x = malloc(sizeof *x * N * V), loss[4];
    int32_t t[4] = {5, 2999, 1, 17};   /* row 2 is pad */
    util_rng_t r = {3};
    for (int i = 0; i < N * V; i++)
        x[i] = (float)((util_rng_uniform(&r) * 2 - 1) * (i < V ? 3 : 60));
    be->i->xent_fwd(be, loss, x, t, N, V, 0.1f, 1);
    for (int i = 0; i < N; i++) {
        if (t[i] == 1) {
            cr_expect_eq(loss[i], 0);
            continue;
        }
        const float *xi = x + (int64_t)i * V;
        double mx = xi[0], s = 0, sx = 0;
        for (int j = 0; j < V; j++)
            mx = xi[j] > mx ? xi[j] : mx;
        for (int j = 0; j < V; j++)
            s += exp((double)xi[j] - mx), sx += xi[j];
        double lse = mx + log(s), ref = 0.9 * (lse - xi[t[i]]) + 0.1 * (lse - sx / V);
        cr_expect(fabs(loss[i] - ref) <= 1e-6 + 1e-6 * fabs(ref), "row %d: %.9g vs %.9g", i,
                  loss[i], ref);
    }
    /* gradient rows sum to zero (probabilities sum to one) */
    float *d = malloc(sizeof *d * N * V);
    be->i->xent_bwd(be, d, x, t, N, V, 0.1f, 1, 1.0f);
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < V; j++)
            s += d[(int64_t)i * V + j];
        cr_expect(fabs(s) < 1e-5, "row %d gradient sums to %g", i, s);
    }
    free(x), free(d);
}
