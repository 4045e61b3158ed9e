/* test_trainer_gen.c: the searches of model/gen driven by the real model's KV cache
 * (model_decode_step + model_cache_reorder) agree with full re-forwards of the prefix:
 * greedy picks the same tokens from logits that match, and the scores beam search and
 * closed-set decoding report equal the log-likelihood a full forward gives their output. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gen.h"
#include "model.h"
#include "util.h"

enum { V = 300, B = 3, S = 10, TMAX = 12 };

typedef struct {
    model_t *m;
    model_cache_t *c;
    float *logits_log;   /* logits of every step of row 0 (greedy check) */
    int nlog;
} ctx_t;

static int s_step(void *p, int n, const int32_t *tok, float *logits, char *err, size_t errlen) {
    ctx_t *c = p;
    if (model_decode_step(c->m, c->c, n, tok, logits, err, errlen) != 0)
        return -1;
    if (c->logits_log && c->nlog < TMAX)
        memcpy(c->logits_log + (size_t)c->nlog++ * V * B, logits, sizeof(float) * V * (n < B ? n : B));
    return 0;
}

static int s_reorder(void *p, int n, const int32_t *src, char *err, size_t errlen) {
    ctx_t *c = p;
    return model_cache_reorder(c->m, c->c, n, src, err, errlen);
}

static backend_t *s_be;
static model_t *s_m;
static int32_t s_src[B * S], s_len[B];

static void s_setup(void) {
    char err[512];
    model_config_t cfg;
    cr_assert_eq(model_config_preset(&cfg, "nano", V, err, sizeof err), 0, "%s", err);
    cfg.max_src = 16;
    cfg.max_tgt = TMAX + 2;
    cfg.n_mod = 0;
    cfg.patch_dim = 0;
    cfg.init_std = 0.3f;   /* peaked distributions: no near-ties in greedy */
    s_be = backend_cpu_new(1);
    s_m = model_new(&cfg, s_be, 11, err, sizeof err);
    cr_assert_not_null(s_m, "%s", err);
    util_rng_t r = {5};
    for (int b = 0; b < B; b++) {
        s_len[b] = S - 2 * b;
        for (int s = 0; s < S; s++)
            s_src[b * S + s] = s < s_len[b] ? 5 + (int)(util_rng_next(&r) % (V - 5)) : 1;
    }
}

static void s_teardown(void) {
    model_destroy(&s_m);
    backend_destroy(&s_be);
}

TestSuite(gen_model, .init = s_setup, .fini = s_teardown, .timeout = 120);

static gen_step_i s_begin(ctx_t *c, int rows) {
    char err[512];
    memset(c, 0, sizeof *c);
    c->m = s_m;
    c->c = model_cache_new(s_m, rows, S, TMAX + 1, err, sizeof err);
    cr_assert_not_null(c->c, "%s", err);
    model_batch_t mb = {.B = B, .S = S, .T = 0, .src_tok = s_src, .src_len = s_len};
    cr_assert_eq(model_encode(s_m, &mb, c->c, err, sizeof err), 0, "%s", err);
    return (gen_step_i){.ctx = c, .vocab = V, .step = s_step, .reorder = s_reorder};
}

/* Logits of positions 0..T-1 of rows with prefixes tin (B, T) by a full forward. */
static float *s_full(const int32_t *tin, int T) {
    char err[512];
    model_batch_t mb = {.B = B, .S = S, .T = T, .src_tok = s_src, .src_len = s_len, .tgt_in = tin};
    model_out_t out;
    cr_assert_eq(model_forward(s_m, &mb, &out, NULL, err, sizeof err), 0, "%s", err);
    float *l = util_malloc(sizeof(float) * B * T * V);
    model_logits(s_m, l);
    return l;
}

/* log p(seq </s> | src row b) by a full forward. */
static double s_loglik(int b, const int32_t *seq, int n) {
    int32_t tin[B * (TMAX + 1)];
    int T = n + 1;
    for (int i = 0; i < B * T; i++)
        tin[i] = 1;
    for (int r = 0; r < B; r++)
        tin[r * T] = 0;
    memcpy(tin + b * T + 1, seq, sizeof(int32_t) * n);
    float *l = s_full(tin, T);
    double ll = 0;
    for (int t = 0; t < T; t++) {
        float *row = l + ((size_t)b * T + t) * V;
        gen_log_softmax(row, V);
        ll += row[t < n ? seq[t] : 2];
    }
    free(l);
    return ll;
}

Test(gen_model, greedy_through_the_cache_equals_greedy_by_reforward) {
    ctx_t c;
    gen_step_i st = s_begin(&c, B);
    c.logits_log = util_malloc(sizeof(float) * TMAX * B * V);
    gen_opts_t o = gen_opts_default();
    o.max_len = 8;
    gen_hyp_t h[B];
    char err[256];
    cr_assert_eq(gen_greedy(&st, B, &o, h, err, sizeof err), 0, "%s", err);
    /* Greedy by re-forward: at each step run the whole prefix again. */
    int32_t pre[B][TMAX];
    int done[B] = {0}, len[B] = {0};
    for (int t = 0; t < o.max_len; t++) {
        int T = t + 1;
        int32_t tin[B * TMAX];
        for (int b = 0; b < B; b++) {
            tin[b * T] = 0;
            for (int i = 0; i < t; i++)
                tin[b * T + 1 + i] = i < len[b] ? pre[b][i] : 2;
        }
        float *l = s_full(tin, T);
        for (int b = 0; b < B; b++) {
            float *row = l + ((size_t)b * T + t) * V;
            if (t < c.nlog) {
                /* Rows of finished sequences are fed </s> by greedy, the same as here. */
                const float *cached = c.logits_log + ((size_t)t * B + b) * V;
                for (int v = 0; v < V; v++)
                    cr_assert(fabsf(cached[v] - row[v]) <= 1e-4f + 1e-4f * fabsf(row[v]),
                              "step %d row %d token %d: cache %g, re-forward %g", t, b, v,
                              cached[v], row[v]);
            }
            if (done[b])
                continue;
            int best = 2;
            for (int v = 5; v < V; v++)
                if (row[v] > row[best])
                    best = v;
            if (t == o.max_len - 1 || best == 2)
                done[b] = 1;
            else
                pre[b][len[b]++] = best;
        }
        free(l);
    }
    for (int b = 0; b < B; b++) {
        cr_assert_eq(h[b].len, len[b], "row %d: cache %d tokens, re-forward %d", b, h[b].len, len[b]);
        for (int i = 0; i < len[b]; i++)
            cr_assert_eq(h[b].tokens[i], pre[b][i], "row %d token %d", b, i);
        cr_assert(fabs(h[b].score - s_loglik(b, h[b].tokens, h[b].len)) < 1e-3,
                  "row %d: greedy score %g, re-forward log-likelihood %g", b, h[b].score,
                  s_loglik(b, h[b].tokens, h[b].len));
    }
    cr_assert_gt(c.nlog, 1);
    gen_hyps_free(h, B);
    free(c.logits_log);
    model_cache_destroy(&c.c);
}

Test(gen_model, beam_scores_match_reforward_loglik) {
    const int K = 4;
    ctx_t c;
    gen_step_i st = s_begin(&c, B * K);
    gen_opts_t o = gen_opts_default();
    o.beam = K;
    o.max_len = 6;
    o.len_penalty = 1.0f;
    gen_hyp_t h[B];
    char err[256];
    cr_assert_eq(gen_beam(&st, B, &o, h, err, sizeof err), 0, "%s", err);
    for (int b = 0; b < B; b++) {
        /* The cache rows were reordered at every step: a wrong reorder gives a score
         * that is not the log-likelihood of the returned tokens. */
        double ll = s_loglik(b, h[b].tokens, h[b].len);
        double want = ll / pow(h[b].len + 1, 1.0);
        cr_assert(fabs(h[b].score - want) < 1e-3, "row %d: beam score %g, re-forward %g",
                  b, h[b].score, want);
    }
    gen_hyps_free(h, B);
    model_cache_destroy(&c.c);
}

Test(gen_model, closed_set_scores_match_reforward_loglik) {
    const int32_t a0[] = {10, 11}, a1[] = {10, 12, 13}, a2[] = {40};
    const int32_t *ans[3] = {a0, a1, a2};
    int alen[3] = {2, 3, 1};
    gen_trie_t *t = gen_trie_new();
    char err[256];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gen_trie_add(t, ans[i], alen[i], i, err, sizeof err), 0);
    ctx_t c;
    gen_step_i st = s_begin(&c, B * gen_trie_width(t));
    gen_opts_t o = gen_opts_default();
    o.len_penalty = 0;
    gen_hyp_t h[B];
    cr_assert_eq(gen_closed_set(&st, B, t, &o, h, err, sizeof err), 0, "%s", err);
    for (int b = 0; b < B; b++) {
        double best = -INFINITY;
        int arg = -1;
        for (int i = 0; i < 3; i++) {
            double ll = s_loglik(b, ans[i], alen[i]);
            if (ll > best)
                best = ll, arg = i;
        }
        cr_assert_eq(h[b].answer, arg, "row %d", b);
        cr_assert(fabs(h[b].score - best) < 1e-3, "row %d: %g vs %g", b, h[b].score, best);
    }
    gen_hyps_free(h, B);
    gen_trie_destroy(&t);
    model_cache_destroy(&c.c);
}
