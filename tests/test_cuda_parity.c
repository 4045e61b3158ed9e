/* test_cuda_parity.c: the CUDA backend against the CPU reference, op by op and for
 * whole training steps, in both math modes. Exits 77 (CTest: skipped) with a message
 * when no GPU is usable, so it carries the `gpu` label and CI only compiles it.
 *
 * Every op runs on both backends with the same random (never zero) inputs and the
 * outputs are compared element by element with |got - ref| <= atol + rtol * |ref|:
 *   fp32 mode  atol 1e-5, rtol 1e-4 for every op (sums in another order only);
 *   bf16 mode  the matrix products only differ (bf16 inputs, fp32 accumulation):
 *              atol 2e-2, rtol 2e-2 for products of O(1) inputs over K <= 96.
 * The model: a `nano` model with the image adapter, built with the same seed on both
 * backends, on a batch with padding, images and ignored targets; the loss (rtol 1e-5
 * fp32, 2e-2 bf16) at each of 3 AdamW steps with clipping, every gradient of the first
 * step (atol 1e-6 + rtol 1e-3, fp32) and the weights' change after the 3 steps (relative
 * L2 1e-3 and max 1e-4 fp32, relative L2 5e-2 bf16) are compared. Failures print the op,
 * the worst element and its values. The golden file of ../shared/reference (PyTorch)
 * on the CUDA backend, fp32: see t_golden. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "model.h"
#include "safetensors.h"

static int s_fail, s_checks;
static backend_t *s_cpu, *s_gpu;
static double s_atol = 1e-5, s_rtol = 1e-4;
static const char *s_mode = "fp32";

static unsigned long long s_rng = 0x9e3779b97f4a7c15ULL;
static double s_uniform(void) {
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (double)(s_rng >> 11) / 9007199254740992.0;
}
/* Uniform in [-a, -a/10] U [a/10, a]: never zero. */
static float *s_rand(int64_t n, float a) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        float v = (float)(a * (0.1 + 0.9 * s_uniform()));
        x[i] = s_uniform() < 0.5 ? -v : v;
    }
    return x;
}

/* A host array on a backend (alloc + upload). */
static void *s_put(backend_t *be, const void *h, size_t bytes) {
    void *d = be->i->alloc(be, bytes);
    if (!d) {
        fprintf(stderr, "%s: alloc of %zu bytes failed\n", be->i->name, bytes);
        exit(1);
    }
    be->i->upload(be, d, h, bytes);
    return d;
}
static float *s_get(backend_t *be, const void *d, int64_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    be->i->download(be, h, d, sizeof(float) * n);
    return h;
}

/* Compare n floats of the two backends' buffers. */
static void s_cmp_tol(const char *what, const void *dref, const void *dgot, int64_t n,
                      double atol, double rtol) {
    float *r = s_get(s_cpu, dref, n), *g = s_get(s_gpu, dgot, n);
    int64_t bad = 0, worst = -1;
    double wexcess = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)g[i] - r[i]), lim = atol + rtol * fabs(r[i]);
        if (!(e <= lim)) {
            bad++;
            if (worst < 0 || e - lim > wexcess || isnan(e))
                worst = i, wexcess = e - lim;
        }
    }
    s_checks++;
    if (bad) {
        s_fail++;
        printf("FAIL %-28s %s: %lld of %lld outside %.0e + %.0e|ref|; worst [%lld] ref %.9g got %.9g\n",
               what, s_mode, (long long)bad, (long long)n, atol, rtol, (long long)worst, r[worst],
               g[worst]);
    } else {
        printf("ok   %-28s %s (%lld values)\n", what, s_mode, (long long)n);
    }
    free(r);
    free(g);
}
static void s_cmp(const char *what, const void *dref, const void *dgot, int64_t n) {
    s_cmp_tol(what, dref, dgot, n, s_atol, s_rtol);
}

/* The same host input on both backends: *c on the CPU, *g on the GPU. */
#define PUT2(c, g, host, bytes)                 \
    do {                                        \
        c = s_put(s_cpu, host, bytes);          \
        g = s_put(s_gpu, host, bytes);          \
    } while (0)
#define FREE2(c, g)                             \
    do {                                        \
        s_cpu->i->free(s_cpu, c);               \
        s_gpu->i->free(s_gpu, g);               \
    } while (0)

static void t_gemm(int bf16) {
    double at = bf16 ? 2e-2 : s_atol, rt = bf16 ? 2e-2 : s_rtol;
    int M = 37, N = 45, K = 96, ld = 100;
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++) {
            float *A = s_rand((int64_t)ld * ld, 1), *B = s_rand((int64_t)ld * ld, 1),
                  *C = s_rand((int64_t)ld * ld, 1);
            float *ca, *ga, *cb, *gb, *cc, *gc;
            PUT2(ca, ga, A, sizeof(float) * ld * ld);
            PUT2(cb, gb, B, sizeof(float) * ld * ld);
            PUT2(cc, gc, C, sizeof(float) * ld * ld);
            /* leading dimensions larger than the rows, beta = 1: accumulate */
            s_cpu->i->gemm(s_cpu, tA, tB, M, N, K, 0.5f, ca, ld, cb, ld, 1, cc, ld);
            s_gpu->i->gemm(s_gpu, tA, tB, M, N, K, 0.5f, ga, ld, gb, ld, 1, gc, ld);
            char name[64];
            snprintf(name, sizeof name, "gemm tA=%d tB=%d", tA, tB);
            s_cmp_tol(name, cc, gc, (int64_t)ld * ld, at, rt);
            FREE2(ca, ga);
            FREE2(cb, gb);
            FREE2(cc, gc);
            free(A), free(B), free(C);
        }
    /* batched, strided; and K = 0 with beta = 0 (C zeroed) */
    int bt = 3;
    int64_t sA = (int64_t)M * K + 7, sB = (int64_t)K * N + 5, sC = (int64_t)M * N + 3;
    float *A = s_rand(sA * bt, 1), *B = s_rand(sB * bt, 1), *C = s_rand(sC * bt, 1);
    float *ca, *ga, *cb, *gb, *cc, *gc;
    PUT2(ca, ga, A, sizeof(float) * sA * bt);
    PUT2(cb, gb, B, sizeof(float) * sB * bt);
    PUT2(cc, gc, C, sizeof(float) * sC * bt);
    s_cpu->i->gemm_batched(s_cpu, 0, 1, M, K, N, 1, ca, N, sA, cb, N, sB, 0, cc, K, sC, 1);
    s_gpu->i->gemm_batched(s_gpu, 0, 1, M, K, N, 1, ga, N, sA, gb, N, sB, 0, gc, K, sC, 1);
    s_cpu->i->gemm_batched(s_cpu, 0, 0, M, N, K, 1, ca, K, sA, cb, N, sB, 0.25f, cc, N, sC, bt);
    s_gpu->i->gemm_batched(s_gpu, 0, 0, M, N, K, 1, ga, K, sA, gb, N, sB, 0.25f, gc, N, sC, bt);
    s_cmp_tol("gemm_batched", cc, gc, sC * bt, at, rt);
    s_cpu->i->gemm(s_cpu, 0, 0, M, N, 0, 1, ca, K, cb, N, 0, cc, N);
    s_gpu->i->gemm(s_gpu, 0, 0, M, N, 0, 1, ga, K, gb, N, 0, gc, N);
    s_cmp("gemm K=0 beta=0", cc, gc, sC);
    FREE2(ca, ga);
    FREE2(cb, gb);
    FREE2(cc, gc);
    free(A), free(B), free(C);
}

static void t_rowops(void) {
    int N = 53, D = 96;
    int64_t ND = (int64_t)N * D;
    float *x = s_rand(ND, 2), *w = s_rand(D, 1), *b = s_rand(D, 1), *dy = s_rand(ND, 1);
    float *cx, *gx, *cw, *gw, *cb, *gb, *cdy, *gdy, *co, *go, *cm, *gm, *cr, *gr;
    PUT2(cx, gx, x, sizeof(float) * ND);
    PUT2(cw, gw, w, sizeof(float) * D);
    PUT2(cb, gb, b, sizeof(float) * D);
    PUT2(cdy, gdy, dy, sizeof(float) * ND);
    PUT2(co, go, dy, sizeof(float) * ND);   /* outputs start non-zero (accumulation) */
    PUT2(cm, gm, x, sizeof(float) * N);
    PUT2(cr, gr, x, sizeof(float) * N);
    s_cpu->i->bias_add(s_cpu, co, cb, N, D);
    s_gpu->i->bias_add(s_gpu, go, gb, N, D);
    s_cmp("bias_add", co, go, ND);
    s_cpu->i->bias_bwd(s_cpu, cw, cdy, N, D);
    s_gpu->i->bias_bwd(s_gpu, gw, gdy, N, D);
    s_cmp("bias_bwd", cw, gw, D);
    s_cpu->i->upload(s_cpu, cw, w, sizeof(float) * D);
    s_gpu->i->upload(s_gpu, gw, w, sizeof(float) * D);
    s_cpu->i->layernorm_fwd(s_cpu, co, cm, cr, cx, cw, cb, N, D, 1e-5f);
    s_gpu->i->layernorm_fwd(s_gpu, go, gm, gr, gx, gw, gb, N, D, 1e-5f);
    s_cmp("layernorm_fwd out", co, go, ND);
    s_cmp("layernorm_fwd mean", cm, gm, N);
    s_cmp("layernorm_fwd rstd", cr, gr, N);
    float *dw0 = s_rand(D, 1), *db0 = s_rand(D, 1), *dx0 = s_rand(ND, 1);
    float *cdw, *gdw, *cdb, *gdb, *cdx, *gdx;
    PUT2(cdw, gdw, dw0, sizeof(float) * D);
    PUT2(cdb, gdb, db0, sizeof(float) * D);
    PUT2(cdx, gdx, dx0, sizeof(float) * ND);
    s_cpu->i->layernorm_bwd(s_cpu, cdx, cdw, cdb, cdy, cx, cm, cr, cw, N, D);
    s_gpu->i->layernorm_bwd(s_gpu, gdx, gdw, gdb, gdy, gx, gm, gr, gw, N, D);
    s_cmp("layernorm_bwd dx", cdx, gdx, ND);
    s_cmp("layernorm_bwd dw", cdw, gdw, D);
    s_cmp("layernorm_bwd db", cdb, gdb, D);
    s_cpu->i->gelu_fwd(s_cpu, co, cx, ND);
    s_gpu->i->gelu_fwd(s_gpu, go, gx, ND);
    s_cmp("gelu_fwd", co, go, ND);
    s_cpu->i->gelu_bwd(s_cpu, cdx, cx, cdy, ND);
    s_gpu->i->gelu_bwd(s_gpu, gdx, gx, gdy, ND);
    s_cmp("gelu_bwd", cdx, gdx, ND);
    /* vector ops */
    s_cpu->i->scale(s_cpu, co, ND, 0.3f);
    s_gpu->i->scale(s_gpu, go, ND, 0.3f);
    s_cmp("scale", co, go, ND);
    s_cpu->i->axpy(s_cpu, co, cdy, ND, -1.7f);
    s_gpu->i->axpy(s_gpu, go, gdy, ND, -1.7f);
    s_cmp("axpy", co, go, ND);
    double nc = s_cpu->i->sqnorm(s_cpu, cx, ND), ng = s_gpu->i->sqnorm(s_gpu, gx, ND);
    s_checks++;
    if (fabs(nc - ng) > 1e-9 * nc) {
        s_fail++;
        printf("FAIL sqnorm %s: cpu %.15g cuda %.15g\n", s_mode, nc, ng);
    } else {
        printf("ok   %-28s %s\n", "sqnorm", s_mode);
    }
    int32_t idx[7] = {3, 0, 52, 3, 17, 1, 40};
    int32_t *ci, *gi;
    PUT2(ci, gi, idx, sizeof idx);
    s_cpu->i->gather_rows(s_cpu, co, cx, ci, 7, D);
    s_gpu->i->gather_rows(s_gpu, go, gx, gi, 7, D);
    s_cmp("gather_rows", co, go, 7 * D);
    /* AdamW: two steps from non-zero moments */
    float *m0 = s_rand(ND, 0.1f), *v0 = s_rand(ND, 0.01f);
    for (int64_t i = 0; i < ND; i++)
        v0[i] = fabsf(v0[i]);
    float *cmm, *gmm, *cvv, *gvv;
    PUT2(cmm, gmm, m0, sizeof(float) * ND);
    PUT2(cvv, gvv, v0, sizeof(float) * ND);
    for (int t = 1; t <= 2; t++) {
        s_cpu->i->adamw(s_cpu, cx, cdy, cmm, cvv, ND, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        s_gpu->i->adamw(s_gpu, gx, gdy, gmm, gvv, ND, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
    }
    s_cmp("adamw w", cx, gx, ND);
    s_cmp("adamw m", cmm, gmm, ND);
    s_cmp("adamw v", cvv, gvv, ND);
    FREE2(cx, gx); FREE2(cw, gw); FREE2(cb, gb); FREE2(cdy, gdy); FREE2(co, go);
    FREE2(cm, gm); FREE2(cr, gr); FREE2(cdw, gdw); FREE2(cdb, gdb); FREE2(cdx, gdx);
    FREE2(ci, gi); FREE2(cmm, gmm); FREE2(cvv, gvv);
    free(x), free(w), free(b), free(dy), free(dw0), free(db0), free(dx0), free(m0), free(v0);
}

static void t_embed_xent(void) {
    int N = 41, D = 64, V = 333;
    int32_t ids[41];
    for (int i = 0; i < N; i++)
        ids[i] = i % 9 == 4 ? -1 : (int32_t)((i * 7) % 13);   /* repeats and skips */
    float *tab = s_rand((int64_t)V * D, 1), *o0 = s_rand((int64_t)N * D, 1);
    float *ct, *gt, *co, *go;
    int32_t *ci, *gi;
    PUT2(ct, gt, tab, sizeof(float) * V * D);
    PUT2(co, go, o0, sizeof(float) * N * D);
    PUT2(ci, gi, ids, sizeof ids);
    s_cpu->i->embed_fwd(s_cpu, co, ct, ci, N, D, 1);
    s_gpu->i->embed_fwd(s_gpu, go, gt, gi, N, D, 1);
    s_cmp("embed_fwd accumulate", co, go, (int64_t)N * D);
    s_cpu->i->embed_fwd(s_cpu, co, ct, ci, N, D, 0);
    s_gpu->i->embed_fwd(s_gpu, go, gt, gi, N, D, 0);
    s_cmp("embed_fwd", co, go, (int64_t)N * D);
    s_cpu->i->embed_bwd(s_cpu, ct, co, ci, N, D);
    s_gpu->i->embed_bwd(s_gpu, gt, go, gi, N, D);
    s_cmp("embed_bwd", ct, gt, (int64_t)V * D);
    /* cross-entropy: logits of spread 8, smoothing 0.1, ignored (pad = 1) rows */
    float *lg = s_rand((int64_t)N * V, 4);
    int32_t tg[41];
    for (int i = 0; i < N; i++)
        tg[i] = i % 5 == 2 ? 1 : (int32_t)((i * 31) % V);
    float *cl, *gl, *cls, *gls;
    int32_t *ctg, *gtg;
    PUT2(cl, gl, lg, sizeof(float) * N * V);
    PUT2(ctg, gtg, tg, sizeof tg);
    PUT2(cls, gls, lg, sizeof(float) * N);
    s_cpu->i->xent_fwd(s_cpu, cls, cl, ctg, N, V, 0.1f, 1);
    s_gpu->i->xent_fwd(s_gpu, gls, gl, gtg, N, V, 0.1f, 1);
    s_cmp("xent_fwd", cls, gls, N);
    s_cpu->i->xent_bwd(s_cpu, cl, cl, ctg, N, V, 0.1f, 1, 1.0f / 33);   /* in place */
    s_gpu->i->xent_bwd(s_gpu, gl, gl, gtg, N, V, 0.1f, 1, 1.0f / 33);
    s_cmp_tol("xent_bwd (in place)", cl, gl, (int64_t)N * V, 1e-7, s_rtol);
    FREE2(ct, gt); FREE2(co, go); FREE2(ci, gi); FREE2(cl, gl); FREE2(cls, gls); FREE2(ctg, gtg);
    free(tab), free(o0), free(lg);
}

/* One attention case on both backends: forward (out, probs) and backward (dq, dk, dv),
 * q/k/v as column blocks of fused rows as the model lays them out. */
static void t_attn_case(const char *name, int B, int H, int Tq, int Tk, int hd, int causal,
                        int padded, int q_pos0, int kv_map) {
    int D = H * hd;
    int64_t qld = 3 * D, kld = 2 * D;
    float *q = s_rand((int64_t)B * Tq * qld, 1), *kv = s_rand((int64_t)B * Tk * kld, 1);
    float *dout = s_rand((int64_t)B * Tq * D, 1);
    int32_t klen[8], map[8];
    for (int b = 0; b < B; b++) {
        klen[b] = padded ? (b == 1 ? 0 : Tk - (b * 3) % Tk) : Tk;   /* one row all masked */
        map[b] = (B - 1 - b);
    }
    float *cq, *gq, *ckv, *gkv, *cdo, *gdo;
    int32_t *ckl, *gkl, *cmp_, *gmp;
    PUT2(cq, gq, q, sizeof(float) * B * Tq * qld);
    PUT2(ckv, gkv, kv, sizeof(float) * B * Tk * kld);
    PUT2(cdo, gdo, dout, sizeof(float) * B * Tq * D);
    PUT2(ckl, gkl, klen, sizeof klen);
    PUT2(cmp_, gmp, map, sizeof map);
    float *zero = calloc((size_t)B * H * Tq * Tk + (size_t)B * Tq * qld + (size_t)B * Tk * kld, sizeof(float));
    float *co, *go, *cp, *gp, *cdq, *gdq, *cdkv, *gdkv;
    PUT2(co, go, zero, sizeof(float) * B * Tq * D);
    PUT2(cp, gp, zero, sizeof(float) * B * H * Tq * Tk);
    PUT2(cdq, gdq, q, sizeof(float) * B * Tq * qld);   /* dq (q's layout) starts non-zero */
    PUT2(cdkv, gdkv, zero, sizeof(float) * B * Tk * kld);
    be_attn_t a = {.B = B, .H = H, .Tq = Tq, .Tk = Tk, .hd = hd, .scale = 1.0f / sqrtf((float)hd),
                   .q_ld = qld, .q_bs = qld * Tq, .k_ld = kld, .k_bs = kld * Tk, .v_ld = kld,
                   .v_bs = kld * Tk, .o_ld = D, .o_bs = (int64_t)D * Tq, .causal = causal,
                   .q_pos0 = q_pos0};
    be_attn_t ac = a, ag = a;
    ac.q = cq, ac.k = ckv, ac.v = ckv + D, ac.out = co, ac.key_len = padded ? ckl : NULL;
    ag.q = gq, ag.k = gkv, ag.v = gkv + D, ag.out = go, ag.key_len = padded ? gkl : NULL;
    if (kv_map) {
        ac.kv_map = cmp_, ag.kv_map = gmp;
    } else {
        ac.probs = cp, ag.probs = gp;
    }
    s_cpu->i->attn_fwd(s_cpu, &ac);
    s_gpu->i->attn_fwd(s_gpu, &ag);
    char n1[96];
    snprintf(n1, sizeof n1, "attn_fwd %s", name);
    s_cmp(n1, co, go, (int64_t)B * Tq * D);
    if (!kv_map) {
        snprintf(n1, sizeof n1, "attn_fwd probs %s", name);
        s_cmp(n1, cp, gp, (int64_t)B * H * Tq * Tk);
        be_attn_bwd_t bc = {&ac, cdo, D, (int64_t)D * Tq, cdq, cdkv, cdkv + D};
        be_attn_bwd_t bg = {&ag, gdo, D, (int64_t)D * Tq, gdq, gdkv, gdkv + D};
        s_cpu->i->attn_bwd(s_cpu, &bc);
        s_gpu->i->attn_bwd(s_gpu, &bg);
        snprintf(n1, sizeof n1, "attn_bwd dq %s", name);
        s_cmp(n1, cdq, gdq, (int64_t)B * Tq * qld);
        snprintf(n1, sizeof n1, "attn_bwd dk,dv %s", name);
        s_cmp(n1, cdkv, gdkv, (int64_t)B * Tk * kld);
    }
    FREE2(cq, gq); FREE2(ckv, gkv); FREE2(cdo, gdo); FREE2(ckl, gkl); FREE2(cmp_, gmp);
    FREE2(co, go); FREE2(cp, gp); FREE2(cdq, gdq); FREE2(cdkv, gdkv);
    free(q), free(kv), free(dout), free(zero);
}

static void t_attn(void) {
    t_attn_case("encoder (padding)", 3, 4, 19, 19, 16, 0, 1, 0, 0);
    t_attn_case("decoder (causal)", 3, 4, 11, 11, 16, 1, 0, 0, 0);
    t_attn_case("cross (padding)", 3, 4, 7, 23, 16, 0, 1, 0, 0);
    t_attn_case("decode step (kv_map, q_pos0)", 3, 4, 1, 9, 16, 1, 0, 5, 1);
}

/* A `nano` model with the image adapter on each backend, same seed, same batch. */
static void t_model(int bf16) {
    char err[512];
    model_config_t c;
    if (model_config_preset(&c, "nano", 300, err, sizeof err) != 0) {
        printf("FAIL preset: %s\n", err);
        s_fail++;
        return;
    }
    c.max_src = 48;
    c.max_tgt = 12;
    model_t *mc = model_new(&c, s_cpu, 11, err, sizeof err);
    model_t *mg = model_new(&c, s_gpu, 11, err, sizeof err);
    if (!mc || !mg) {
        printf("FAIL model_new: %s\n", err);
        s_fail++;
        return;
    }
    enum { B = 4, S = 44, T = 10 };
    int Np = 36, Pd = c.patch_dim;
    int32_t src_tok[B * S], src_len[B] = {44, 40, 38, 41}, tgt_in[B * T], tgt_out[B * T];
    uint8_t src_mod[B * S], *img = malloc((size_t)B * Np * Pd);
    for (int64_t i = 0; i < (int64_t)B * Np * Pd; i++)
        img[i] = (uint8_t)(s_uniform() * 256);
    for (int b = 0; b < B; b++) {
        for (int s = 0; s < S; s++) {
            int im = s >= 2 && s < 2 + Np;   /* 2 text tokens, 36 patches, text */
            src_mod[b * S + s] = im ? MODEL_MOD_IMAGE : MODEL_MOD_TEXT;
            src_tok[b * S + s] = im || s >= src_len[b] ? 1 : 5 + (int)(s_uniform() * 290);
        }
        for (int t = 0; t < T; t++) {
            int len = 4 + 2 * b;
            tgt_out[b * T + t] = t < len - 1 ? 5 + (int)(s_uniform() * 290) : t == len - 1 ? 2 : 1;
            tgt_in[b * T + t] = t == 0 ? 0 : tgt_out[b * T + t - 1];
        }
    }
    model_batch_t mb = {.B = B, .S = S, .T = T, .src_tok = src_tok, .src_mod = src_mod,
                        .src_len = src_len, .tgt_in = tgt_in, .tgt_out = tgt_out, .img = img,
                        .Np = Np, .grid = 6};
    int64_t n = model_numel(mc);
    float *w0 = malloc(sizeof(float) * n), *hc = malloc(sizeof(float) * n),
          *hg = malloc(sizeof(float) * n);
    model_buf_download(mc, MODEL_W, w0);
    model_buf_download(mg, MODEL_W, hg);
    s_checks++;
    if (memcmp(w0, hg, sizeof(float) * n) != 0) {
        s_fail++;
        printf("FAIL model initial weights differ between the backends\n");
    }
    for (int step = 0; step < 3; step++) {
        model_out_t oc, og;
        if (model_forward(mc, &mb, &oc, NULL, err, sizeof err) != 0 ||
            model_forward(mg, &mb, &og, NULL, err, sizeof err) != 0) {
            printf("FAIL model_forward: %s\n", err);
            s_fail++;
            break;
        }
        double lt = bf16 ? 2e-2 : 1e-5;
        s_checks++;
        if (!(fabs(oc.loss - og.loss) <= lt * fabs(oc.loss)) || oc.ntok != og.ntok) {
            s_fail++;
            printf("FAIL model step %d loss %s: cpu %.9g cuda %.9g (rtol %.0e)\n", step, s_mode,
                   oc.loss, og.loss, lt);
        } else {
            printf("ok   model step %d loss %s: cpu %.9g cuda %.9g\n", step, s_mode, oc.loss,
                   og.loss);
        }
        model_backward(mc);
        model_backward(mg);
        if (!bf16 && step == 0) {
            model_param_t pc, pg;
            model_param(mc, 0, &pc);
            model_param(mg, 0, &pg);
            s_cmp_tol("model gradients", pc.g, pg.g, n, 1e-6, 1e-3);
        }
        double nc = model_clip_grad(mc, 1.0), ng = model_clip_grad(mg, 1.0);
        s_checks++;
        if (!(fabs(nc - ng) <= (bf16 ? 2e-2 : 1e-4) * nc)) {
            s_fail++;
            printf("FAIL model step %d grad norm %s: cpu %.9g cuda %.9g\n", step, s_mode, nc, ng);
        }
        model_step(mc, 1e-3f);
        model_step(mg, 1e-3f);
    }
    /* The updates (weights after 3 steps minus the start) agree in relative L2 norm
     * (fp32 1e-3, bf16 5e-2), and element-wise within a tenth of one step (fp32; an
     * element whose gradient is rounding noise may take its Adam step with the other
     * sign, which a tighter element bound would flag). */
    model_buf_download(mc, MODEL_W, hc);
    model_buf_download(mg, MODEL_W, hg);
    double num = 0, den = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)hg[i] - hc[i], u = (double)hc[i] - w0[i];
        num += d * d;
        den += u * u;
        mx = fabs(d) > mx ? fabs(d) : mx;
    }
    double rel = den > 0 ? sqrt(num / den) : 0, rtol = bf16 ? 5e-2 : 1e-3;
    s_checks++;
    if (!(rel <= rtol) || (!bf16 && !(mx <= 1e-4))) {
        s_fail++;
        printf("FAIL model weights after 3 steps %s: update rel L2 %.3g (tol %.0e), max |dw| %.3g\n",
               s_mode, rel, rtol, mx);
    } else {
        printf("ok   model weights after 3 steps %s: update rel L2 %.3g, max |dw| %.3g\n", s_mode,
               rel, mx);
    }
    free(w0);
    free(hc);
    free(hg);
    free(img);
    model_destroy(&mc);
    model_destroy(&mg);
}

/* Compare n host floats against a reference with atol + rtol |ref|. */
static void s_cmp_host(const char *what, const float *got, const float *ref, int64_t n,
                       double atol, double rtol) {
    int64_t bad = 0, worst = -1;
    double wr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), tol = atol + rtol * fabs(ref[i]);
        if (!(d <= tol)) {
            bad++;
            if (worst < 0 || d / tol > wr || isnan(d))
                wr = d / tol, worst = i;
        }
    }
    s_checks++;
    if (bad) {
        s_fail++;
        printf("FAIL %-28s %s: %lld of %lld outside %.0e + %.0e|ref|; worst [%lld] ref %.9g got %.9g\n",
               what, s_mode, (long long)bad, (long long)n, atol, rtol, (long long)worst,
               ref[worst], got[worst]);
    } else {
        printf("ok   %-28s %s (%lld values)\n", what, s_mode, (long long)n);
    }
}

static float *s_golden_f32(st_file_t *f, const char *name, int64_t *n) {
    const st_tensor_t *t = st_find(f, name);
    if (!t)
        return NULL;
    *n = st_numel(t);
    float *o = malloc(sizeof *o * (*n ? *n : 1));
    char err[256];
    if (st_to_f32(t, o, *n, err, sizeof err) != 0) {
        free(o);
        return NULL;
    }
    return o;
}

/* The golden file of ../shared/reference (PyTorch's logits, loss and gradients for a
 * padded batch) on the CUDA backend in fp32: logits and loss within 1e-5 + 1e-4|ref|,
 * every gradient within 1e-6 + 1e-3|ref| (the CPU reference meets 1e-5 and 1e-4
 * relative; the GPU sums in other orders, with atomics), and the KV-cache decoder's
 * logits step by step against its own teacher-forced ones (1e-5 + 1e-4|ref|). Found at
 * $OFA_GOLDEN, else OFA_SHARED_DIR/reference (gpu_check.sh --fetch copies it into .gpu/
 * because ../shared does not travel to the GPU machine); skipped with a line if absent. */
static void t_golden(void) {
    const char *path = getenv("OFA_GOLDEN");
    char def[1024];
    snprintf(def, sizeof def, "%s/reference/encdec_golden.safetensors", OFA_SHARED_DIR);
    if (!path || !*path)
        path = def;
    char err[512];
    st_file_t *f = st_open(path, err, sizeof err);
    if (!f) {
        printf("skip golden file: %s\n", err);
        return;
    }
    const st_tensor_t *ct = st_find(f, "meta.config"), *ts = st_find(f, "in.src");
    if (!ct || !ts) {
        printf("FAIL golden file %s: no meta.config or in.src\n", path);
        s_fail++;
        st_close(&f);
        return;
    }
    const int32_t *cfg = ct->data;
    model_config_t c;
    model_config_preset(&c, "nano", cfg[0], err, sizeof err);
    c.vocab = cfg[0], c.d_model = cfg[1], c.n_heads = cfg[2], c.d_ffn = cfg[3];
    c.n_enc = cfg[4], c.n_dec = cfg[5], c.max_src = c.max_tgt = cfg[6], c.pad_id = cfg[7];
    c.n_mod = 0, c.patch_dim = 0;
    c.decay_all = 1;
    model_t *m = model_new(&c, s_gpu, 1, err, sizeof err);
    if (!m || model_load(m, path, err, sizeof err) != 0) {
        printf("FAIL golden model on cuda: %s\n", err);
        s_fail++;
        model_destroy(&m);
        st_close(&f);
        return;
    }
    int B = (int)ts->shape[0], S = (int)ts->shape[1];
    int T = (int)st_find(f, "in.tgt_in")->shape[1], V = c.vocab;
    const int32_t *tin = st_find(f, "in.tgt_in")->data;
    model_batch_t b = {.B = B, .S = S, .T = T, .src_tok = ts->data,
                       .src_len = st_find(f, "in.src_len")->data, .tgt_in = tin,
                       .tgt_out = st_find(f, "in.tgt_out")->data};
    model_out_t o;
    if (model_forward(m, &b, &o, NULL, err, sizeof err) != 0) {
        printf("FAIL golden forward: %s\n", err);
        s_fail++;
    } else {
        int64_t n;
        float *ref = s_golden_f32(f, "out.logits", &n), *rl = s_golden_f32(f, "out.loss", &n);
        float *lg = malloc(sizeof(float) * B * T * V), l = (float)o.loss;
        model_logits(m, lg);
        s_cmp_host("golden logits", lg, ref, (int64_t)B * T * V, 1e-5, 1e-4);
        s_cmp_host("golden loss", &l, rl, 1, 1e-5, 1e-4);
        /* the decoder, one step at a time, against the teacher-forced logits */
        model_cache_t *kv = model_cache_new(m, B, S, T, err, sizeof err);
        float *step = malloc(sizeof(float) * B * V), *want = malloc(sizeof(float) * B * V);
        int32_t tok[64];
        int ok = kv && B <= 64 && model_encode(m, &b, kv, err, sizeof err) == 0;
        for (int t = 0; ok && t < T; t++) {
            for (int r = 0; r < B; r++) {
                tok[r] = tin[r * T + t];
                memcpy(want + (int64_t)r * V, lg + ((int64_t)r * T + t) * V, sizeof(float) * V);
            }
            ok = model_decode_step(m, kv, B, tok, step, err, sizeof err) == 0;
            if (ok) {
                char what[48];
                snprintf(what, sizeof what, "golden decode step %d", t);
                s_cmp_host(what, step, want, (int64_t)B * V, 1e-5, 1e-4);
            }
        }
        if (!ok) {
            printf("FAIL golden decode: %s\n", err);
            s_fail++;
        }
        model_cache_destroy(&kv);
        /* gradients (the forward again: the decoder used the activations' memory) */
        if (model_forward(m, &b, &o, NULL, err, sizeof err) == 0) {
            model_backward(m);
            float *g = malloc(sizeof(float) * model_numel(m));
            model_buf_download(m, MODEL_G, g);
            int64_t bad = 0, total = 0;
            for (int i = 0; i < model_n_params(m); i++) {
                model_param_t p;
                model_param(m, i, &p);
                char name[128];
                snprintf(name, sizeof name, "grad.%s", p.name);
                float *gr = s_golden_f32(f, name, &n);
                if (!gr || n != p.numel) {
                    printf("FAIL golden %s missing\n", name);
                    bad++;
                    free(gr);
                    continue;
                }
                int before = s_fail;
                s_cmp_host(name, g + p.offset, gr, n, 1e-6, 1e-3);
                bad += s_fail != before;
                total++;
                free(gr);
            }
            printf("golden gradients: %lld of %lld tensors out of tolerance\n", (long long)bad,
                   (long long)total);
            free(g);
        }
        free(ref), free(rl), free(lg), free(step), free(want);
    }
    model_destroy(&m);
    st_close(&f);
}

int main(void) {
    char err[256] = "";
    int ndev = backend_cuda_devices(err, sizeof err);
    if (ndev <= 0) {
        printf("SKIP test_cuda_parity: %s (the gpu tests need a GPU; see docs/cuda.md)\n", err);
        return 77;
    }
    s_cpu = backend_cpu_new(2);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        s_mode = bf16 ? "bf16" : "fp32";
        s_gpu = backend_cuda_new(0, bf16 ? BACKEND_CUDA_BF16 : BACKEND_CUDA_FP32, err, sizeof err);
        if (!s_gpu) {
            printf("FAIL backend_cuda_new: %s\n", err);
            return 1;
        }
        t_gemm(bf16);
        if (!bf16) {   /* the other ops do not depend on the math mode */
            t_rowops();
            t_embed_xent();
            t_attn();
        }
        t_model(bf16);
        if (!bf16)
            t_golden();
        printf("peak device memory (%s): %.1f MiB\n", s_mode,
               backend_cuda_peak_bytes(s_gpu) / 1048576.0);
        backend_destroy(&s_gpu);
    }
    backend_destroy(&s_cpu);
    printf("%s: %d of %d checks failed\n", s_fail ? "FAIL" : "PASS", s_fail, s_checks);
    return s_fail ? 1 : 0;
}
