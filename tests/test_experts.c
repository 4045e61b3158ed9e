/* test_experts.c: the modality-expert FFN of the encoder (model_config_t.mod_experts,
 * plan key model.modality_experts). Float build, CPU backend. The gradients of the expert
 * path are checked in double precision by test_gradcheck; this suite checks what the
 * experts compute against the plain model, how positions are routed, generation,
 * checkpoints by name, and the plan key through the trainer's model. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "planfile.h"
#include "safetensors.h"
#include "tmodel.h"
#include "util.h"

static backend_t *be;
static util_rng_t rng = {777};

static void setup(void) { be = backend_cpu_new(1); }
static void teardown(void) { backend_destroy(&be); }
TestSuite(experts, .init = setup, .fini = teardown, .timeout = 60);

/* A small model with the image and audio adapters; experts on or off. */
static model_t *s_model(int experts, uint64_t seed) {
    char err[256];
    model_config_t c;
    cr_assert_eq(model_config_preset(&c, "nano", 40, err, sizeof err), 0, "%s", err);
    c.d_model = 32, c.n_heads = 2, c.d_ffn = 48, c.n_enc = 2, c.n_dec = 2;
    c.max_src = 12, c.max_tgt = 6, c.patch_dim = 12, c.img_grid = 2, c.aud_dim = 6;
    c.mod_experts = experts;
    c.init_std = 0.2;
    model_t *m = model_new(&c, be, seed, err, sizeof err);
    cr_assert(m, "%s", err);
    return m;
}

/* Copy every weight of `from` into `to` by name; the plain FFN enc.{l}.ffn.X goes into
 * the expert FFN enc.{l}.ffn.{group}.X of each group in `groups` (NULL-terminated). */
static void s_copy_weights(model_t *to, model_t *from, const char *const *groups) {
    for (int i = 0; i < model_n_params(from); i++) {
        model_param_t p, q;
        model_param(from, i, &p);
        int l;
        char part[16];
        if (groups && sscanf(p.name, "enc.%d.ffn.%15s", &l, part) == 2) {
            for (int g = 0; groups[g]; g++) {
                char name[64];
                snprintf(name, sizeof name, "enc.%d.ffn.%s.%s", l, groups[g], part);
                int j = model_param_find(to, name);
                cr_assert_geq(j, 0, "%s missing", name);
                model_param(to, j, &q);
                cr_assert_eq(q.numel, p.numel);
                memcpy(q.w, p.w, sizeof(real_t) * p.numel);
            }
            continue;
        }
        int j = model_param_find(to, p.name);
        if (j < 0)
            continue;
        model_param(to, j, &q);
        cr_assert_eq(q.numel, p.numel, "%s", p.name);
        memcpy(q.w, p.w, sizeof(real_t) * p.numel);
    }
}

/* The batch: row 0 text, image patches and a BOX token; row 1 audio then text. */
static uint8_t g_mod[24];
static int32_t g_src[24], g_slen[2] = {10, 8};
static int32_t g_tin[12] = {0, 11, 12, 13, 14, 15, 0, 16, 17, 1, 1, 1};
static int32_t g_tout[12] = {11, 12, 13, 14, 15, 2, 16, 17, 2, 1, 1, 1};
static uint8_t g_img[2 * 4 * 12];
static float g_aud[2 * 3 * 6];

static model_batch_t s_batch(int mixed) {
    static const uint8_t mixed_mod[24] = {0, 1, 1, 1, 1, 0, 2, 0, 0, 0, 0, 0,
                                          3, 3, 3, 0, 0, 0, 5, 0, 0, 0, 0, 0};
    for (int k = 0; k < 24; k++) {
        g_mod[k] = mixed ? mixed_mod[k] : 0;
        g_src[k] = g_mod[k] == 1 || g_mod[k] == 3 ? 1 : 4 + (k * 7) % 30;
    }
    for (size_t i = 0; i < sizeof g_img; i++)
        g_img[i] = (uint8_t)(util_rng_next(&rng) % 256);
    for (size_t i = 0; i < sizeof g_aud / sizeof *g_aud; i++)
        g_aud[i] = (float)(util_rng_uniform(&rng) * 2 - 1);
    model_batch_t b = {.B = 2, .S = 12, .T = 6, .src_tok = g_src, .src_mod = g_mod,
                       .src_len = g_slen, .tgt_in = g_tin, .tgt_out = g_tout};
    if (mixed) {
        b.img = g_img, b.Np = 4, b.grid = 2;
        b.aud = g_aud, b.Fa = 3, b.aud_dim = 6;
    }
    return b;
}

static double s_loss(model_t *m, const model_batch_t *b, real_t *rows, real_t *logits) {
    char err[256];
    model_out_t o;
    cr_assert_eq(model_forward(m, b, &o, rows, err, sizeof err), 0, "%s", err);
    if (logits)
        model_logits(m, logits);
    return o.loss;
}

static double s_maxdiff(const real_t *a, const real_t *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

/* With every position TEXT and the text expert holding the plain FFN's weights, the
 * expert model is the plain model: same loss, logits and gradients. */
Test(experts, all_text_equals_the_plain_model) {
    model_t *plain = s_model(0, 5), *ex = s_model(1, 6);
    cr_expect_geq(model_param_find(ex, "enc.1.ffn.text.fc2.b"), 0);
    cr_expect_geq(model_param_find(ex, "enc.1.ffn.image.fc1.w"), 0);
    cr_expect_geq(model_param_find(ex, "enc.1.ffn.audio.fc1.w"), 0);
    cr_expect_lt(model_param_find(ex, "enc.1.ffn.video.fc1.w"), 0, "no video adapter");
    cr_expect_gt(model_numel(ex), model_numel(plain));
    const char *text[] = {"text", NULL};
    s_copy_weights(ex, plain, text);
    model_batch_t b = s_batch(0);
    int64_t nl = 2 * 6 * 40;
    real_t *l0 = malloc(sizeof *l0 * nl), *l1 = malloc(sizeof *l1 * nl);
    double a = s_loss(plain, &b, NULL, l0), x = s_loss(ex, &b, NULL, l1);
    cr_expect(fabs(a - x) <= 1e-6 * fabs(a), "loss %.9g vs %.9g", a, x);
    cr_expect_leq(s_maxdiff(l0, l1, nl), 1e-5, "logits differ by %g", s_maxdiff(l0, l1, nl));
    model_backward(plain);
    model_backward(ex);
    model_param_t p, q;
    model_param(plain, model_param_find(plain, "enc.0.ffn.fc1.w"), &p);
    model_param(ex, model_param_find(ex, "enc.0.ffn.text.fc1.w"), &q);
    cr_expect_leq(s_maxdiff(p.g, q.g, p.numel), 1e-6, "text expert gradient differs");
    model_param(ex, model_param_find(ex, "enc.0.ffn.image.fc1.w"), &q);
    double s = 0;
    for (int64_t k = 0; k < q.numel; k++)
        s += fabs(q.g[k]);
    cr_expect_eq(s, 0, "the image expert has a gradient without image positions");
    free(l0);
    free(l1);
    model_destroy(&plain);
    model_destroy(&ex);
}

/* A mixed batch (text, image, audio, BOX and PHONE positions) goes through the gather /
 * per-expert / scatter path; with every expert holding the plain FFN's weights it must
 * still compute the plain model. */
Test(experts, mixed_batch_with_equal_experts_equals_the_plain_model) {
    model_t *plain = s_model(0, 5), *ex = s_model(1, 6);
    const char *all[] = {"text", "image", "audio", NULL};
    s_copy_weights(ex, plain, all);
    model_batch_t b = s_batch(1);
    int64_t nl = 2 * 6 * 40;
    real_t *l0 = malloc(sizeof *l0 * nl), *l1 = malloc(sizeof *l1 * nl);
    double a = s_loss(plain, &b, NULL, l0), x = s_loss(ex, &b, NULL, l1);
    cr_expect(fabs(a - x) <= 1e-5 * fabs(a), "loss %.9g vs %.9g", a, x);
    cr_expect_leq(s_maxdiff(l0, l1, nl), 1e-4, "logits differ by %g", s_maxdiff(l0, l1, nl));
    /* the plain FFN's gradient is the sum of the experts' */
    model_backward(plain);
    model_backward(ex);
    model_param_t p, q;
    model_param(plain, model_param_find(plain, "enc.0.ffn.fc2.w"), &p);
    real_t *sum = calloc(p.numel, sizeof *sum);
    for (int g = 0; all[g]; g++) {
        char name[64];
        snprintf(name, sizeof name, "enc.0.ffn.%s.fc2.w", all[g]);
        model_param(ex, model_param_find(ex, name), &q);
        double s = 0;
        for (int64_t k = 0; k < q.numel; k++)
            sum[k] += q.g[k], s += fabs(q.g[k]);
        cr_expect_gt(s, 0, "%s has no gradient", name);
    }
    double scale = 0;
    for (int64_t k = 0; k < p.numel; k++)
        scale = fmax(scale, fabs(p.g[k]));
    cr_expect_leq(s_maxdiff(p.g, sum, p.numel), 1e-4 * scale, "expert gradients do not sum");
    free(sum);
    free(l0);
    free(l1);
    model_destroy(&plain);
    model_destroy(&ex);
}

static void s_bump(model_t *m, const char *name, real_t by) {
    model_param_t p;
    int i = model_param_find(m, name);
    cr_assert_geq(i, 0, "%s missing", name);
    model_param(m, i, &p);
    /* not the same value everywhere: LayerNorm would remove a uniform shift of fc2.b */
    for (int64_t k = 0; k < p.numel; k++)
        p.w[k] += by * (real_t)(k % 5 - 2);
}

/* Positions go to their modality's expert: row 1 has no image position, so changing the
 * image expert leaves its loss exactly as it was and changes row 0's; the audio expert
 * moves row 1 only; the text expert (text, BOX and PHONE positions) moves both. */
Test(experts, positions_are_routed_by_modality) {
    model_t *m = s_model(1, 9);
    model_batch_t b = s_batch(1);
    real_t r0[2], r1[2];
    s_loss(m, &b, r0, NULL);
    s_bump(m, "enc.0.ffn.image.fc2.b", 0.5f);
    s_loss(m, &b, r1, NULL);
    cr_expect(r1[0] != r0[0], "the image expert does not reach row 0");
    cr_expect_eq(r1[1], r0[1], "the image expert reaches row 1 (no image there)");
    s_loss(m, &b, r0, NULL);
    s_bump(m, "enc.1.ffn.audio.fc1.b", 0.5f);
    s_loss(m, &b, r1, NULL);
    cr_expect_eq(r1[0], r0[0], "the audio expert reaches row 0 (no audio there)");
    cr_expect(r1[1] != r0[1], "the audio expert does not reach row 1");
    s_loss(m, &b, r0, NULL);
    s_bump(m, "enc.1.ffn.text.fc2.b", 0.5f);
    s_loss(m, &b, r1, NULL);
    cr_expect(r1[0] != r0[0] && r1[1] != r0[1], "the text expert misses a row");
    model_destroy(&m);
}

/* Generation encodes through the experts as training does: the first decoder step from
 * model_encode gives the forward pass's logits at t = 0. */
Test(experts, generation_encodes_through_the_experts) {
    char err[256];
    model_t *m = s_model(1, 11);
    model_batch_t b = s_batch(1);
    int V = 40, T = 6;
    real_t *lf = malloc(sizeof *lf * 2 * T * V), *ls = malloc(sizeof *ls * 2 * V);
    s_loss(m, &b, NULL, lf);
    model_cache_t *kv = model_cache_new(m, 2, 12, 6, err, sizeof err);
    cr_assert(kv, "%s", err);
    cr_assert_eq(model_encode(m, &b, kv, err, sizeof err), 0, "%s", err);
    int32_t first[2] = {b.tgt_in[0], b.tgt_in[T]};
    cr_assert_eq(model_decode_step(m, kv, 2, first, ls, err, sizeof err), 0, "%s", err);
    double d = fmax(s_maxdiff(lf, ls, V), s_maxdiff(lf + T * V, ls + V, V));
    cr_expect_leq(d, 1e-4, "decode step differs from the forward by %g", d);
    model_cache_destroy(&kv);
    free(lf);
    free(ls);
    model_destroy(&m);
}

/* Checkpoints hold the expert tensors by name, load back into an expert model, and are
 * refused by a plain model (and a plain checkpoint by an expert model) naming the tensor. */
Test(experts, checkpoints_save_and_load_the_experts_by_name) {
    char err[512], dir[] = "/tmp/test_experts_XXXXXX", path[256], ppath[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ex.safetensors", dir);
    snprintf(ppath, sizeof ppath, "%s/plain.safetensors", dir);
    model_t *a = s_model(1, 13), *b = s_model(1, 14), *plain = s_model(0, 15);
    cr_assert_eq(model_save(a, path, err, sizeof err), 0, "%s", err);
    st_file_t *f = st_open(path, err, sizeof err);
    cr_assert(f, "%s", err);
    const char *names[] = {"enc.0.ffn.text.fc1.w", "enc.1.ffn.image.fc2.w", "enc.1.ffn.audio.fc2.b",
                           "dec.1.ffn.fc1.w"};
    for (size_t i = 0; i < 4; i++) {
        const st_tensor_t *t = st_find(f, names[i]);
        cr_expect(t, "%s not in the checkpoint", names[i]);
        model_param_t p;
        model_param(a, model_param_find(a, names[i]), &p);
        if (t) {
            float *v = malloc(sizeof *v * p.numel);
            cr_assert_eq(st_to_f32(t, v, p.numel, err, sizeof err), 0, "%s", err);
            for (int64_t k = 0; k < p.numel; k++)
                cr_assert_eq(v[k], p.w[k], "%s[%lld]", names[i], (long long)k);
            free(v);
        }
    }
    cr_expect_null(st_find(f, "enc.0.ffn.fc1.w"));
    st_close(&f);
    model_batch_t bt = s_batch(1);
    double la = s_loss(a, &bt, NULL, NULL), lb = s_loss(b, &bt, NULL, NULL);
    cr_expect(la != lb);
    cr_assert_eq(model_load(b, path, err, sizeof err), 0, "%s", err);
    cr_expect_eq(s_loss(b, &bt, NULL, NULL), la, "loaded weights compute another loss");
    cr_expect_eq(model_load(plain, path, err, sizeof err), -1);
    cr_expect(strstr(err, "tensor 'enc.0.ffn.fc1.w' missing"), "%s", err);
    cr_assert_eq(model_save(plain, ppath, err, sizeof err), 0, "%s", err);
    cr_expect_eq(model_load(b, ppath, err, sizeof err), -1);
    cr_expect(strstr(err, "tensor 'enc.0.ffn.text.fc1.w' missing"), "%s", err);
    unlink(path);
    unlink(ppath);
    rmdir(dir);
    model_destroy(&a);
    model_destroy(&b);
    model_destroy(&plain);
}

/* model.modality_experts: a bool (false by default), written back by the resolved plan,
 * and the trainer's model has the experts of the plan's modalities. */
Test(experts, plan_key_builds_the_experts) {
    char err[1024];
    const char *fmt =
        "tasks = ({ name = \"c\"; instruction = \"[IMAGE:img] what? -> [TEXT:cap]\";\n"
        "  train = [\"x.tsv\"]; columns = [\"id\", \"img\", \"cap\"]; });\n"
        "model = { size = \"nano\"; %s };\n";
    char text[1024];
    snprintf(text, sizeof text, fmt, "");
    plan_t *plan = plan_load_string(text, "c.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    cr_expect_eq(plan->model.modality_experts, 0);
    plan_destroy(&plan);
    snprintf(text, sizeof text, fmt, "modality_experts = 1;");
    plan = plan_load_string(text, "c.conf", "/tmp", err, sizeof err);
    cr_expect_null(plan);
    cr_expect(strstr(err, "'model.modality_experts' wants a boolean"), "%s", err);
    plan_destroy(&plan);
    snprintf(text, sizeof text, fmt, "modality_experts = true;");
    plan = plan_load_string(text, "c.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    cr_expect_eq(plan->model.modality_experts, 1);
    char *res = plan_resolved_text(plan);
    cr_expect(strstr(res, "modality_experts = true;"), "%s", res);
    plan_t *again = plan_load_string(res, "r.conf", "/tmp", err, sizeof err);
    cr_assert(again, "%s", err);
    cr_expect_eq(again->model.modality_experts, 1);
    plan_destroy(&again);
    free(res);

    tmodel_cfg_t cfg = {.size = "nano", .vocab = 300, .max_src_len = 64, .max_tgt_len = 16,
                        .image_size = 96, .patch = 16, .seed = 1, .threads = 1,
                        .backend = "cpu"};
    cr_assert_eq(tmodel_cfg_adapters(&cfg, plan, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.mod_experts, 1);
    tmodel_t *tm = tmodel_new(&cfg, err, sizeof err);
    cr_assert(tm, "%s", err);
    tmodel_sync_host(tm);
    int text_ex = 0, image_ex = 0, plain_ffn = 0;
    for (int i = 0; i < tmodel_n_params(tm); i++) {
        tmodel_param_t p;
        tmodel_param(tm, i, &p);
        text_ex += strncmp(p.name, "enc.", 4) == 0 && strstr(p.name, ".ffn.text.") != NULL;
        image_ex += strncmp(p.name, "enc.", 4) == 0 && strstr(p.name, ".ffn.image.") != NULL;
        plain_ffn += strncmp(p.name, "enc.", 4) == 0 && strstr(p.name, ".ffn.fc") != NULL;
    }
    cr_expect_eq(text_ex, 2 * 4, "nano: 2 layers x 4 tensors");
    cr_expect_eq(image_ex, 2 * 4);
    cr_expect_eq(plain_ffn, 0);
    tmodel_destroy(&tm);
    plan_destroy(&plan);
}
