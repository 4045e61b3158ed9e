/* test_modalities.c: audio, video and motion from their tiers to the model.
 *
 * Real fixtures (tests/data/audio, video, motion) go through their stage's transform
 * (audstage, vidstage, motstage), the tokenize tier (tokstage) and the batcher's packing
 * (batcher_make_batch), and the packed batch through the model's adapters (forward,
 * backward, one AdamW step): the number of source positions per slot, the stacking and
 * normalisation of audio frames, the padded batch fields, and that the adapters learn
 * from them. The packing rules (padding, misfits) are also checked on synthetic
 * samples whose every value is recognisable. */
#include <criterion/criterion.h>

#include "audstage.h"
#include "batcher.h"
#include "bpe.h"
#include "model.h"
#include "motstage.h"
#include "planfile.h"
#include "proto.h"
#include "tmodel.h"
#include "tokstage.h"
#include "util.h"
#include "vidstage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(sizeof(real_t) == sizeof(float), "test_modalities links the float model");

/* ---- the batcher's packing on synthetic samples ---- */

static proto_msg_t *s_sample(const char *task, int64_t seq, int s) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, task);
    proto_msg_add_id(m, 100 + (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", 0);
    proto_msg_set_str(m, "split", "train");
    int32_t tok[16], tin[2] = {0, 9}, tout[2] = {9, 2};
    uint8_t mod[16];
    for (int i = 0; i < s; i++)
        tok[i] = 1, mod[i] = MOD_AUDIO;
    int64_t ss[1] = {s}, ts[1] = {2};
    proto_msg_set_tensor(m, "src_tok", PROTO_I32, 1, ss, tok);
    proto_msg_set_tensor(m, "src_mod", PROTO_U8, 1, ss, mod);
    proto_msg_set_tensor(m, "tgt_in", PROTO_I32, 1, ts, tin);
    proto_msg_set_tensor(m, "tgt_out", PROTO_I32, 1, ts, tout);
    proto_msg_set_str(m, "ref", "x");
    return m;
}

/* An f32 (F, C) sequence whose value at (t, c) is seq*1000 + t*10 + c. */
static void s_add_seq(proto_msg_t *m, const char *key, int64_t seq, int F, int C) {
    float *x = util_malloc(sizeof(float) * (size_t)(F * C));
    for (int t = 0; t < F; t++)
        for (int c = 0; c < C; c++)
            x[t * C + c] = (float)(seq * 1000 + t * 10 + c);
    int64_t sh[2] = {F, C};
    proto_msg_take_tensor(m, key, PROTO_F32, 2, sh, x);
}

static void s_add_vid(proto_msg_t *m, int frames, int np, int pd, uint8_t fill) {
    uint8_t *px = util_malloc((size_t)(frames * np * pd));
    for (int i = 0; i < frames * np * pd; i++)
        px[i] = (uint8_t)(fill + i / pd);     /* one value per patch */
    int64_t sh[2] = {frames * np, pd};
    proto_msg_take_tensor(m, "vid", PROTO_U8, 2, sh, px);
    proto_msg_set_int(m, "vid.grid", 2);
    proto_msg_set_int(m, "vid.frames", frames);
}

TestSuite(modalities_batch);

Test(modalities_batch, audio_and_motion_padded_with_lengths) {
    for (int which = 0; which < 2; which++) {
        const char *key = which ? "mot" : "aud", *lkey = which ? "mot_len" : "aud_len";
        proto_msg_t *s[5] = {s_sample("a", 0, 3), s_sample("a", 1, 5), s_sample("a", 2, 2),
                             s_sample("a", 3, 2), s_sample("a", 4, 2)};
        s_add_seq(s[0], key, 0, 3, 4);
        s_add_seq(s[1], key, 1, 5, 4);
        s_add_seq(s[2], key, 2, 2, 4);
        s_add_seq(s[3], key, 3, 2, 6);     /* other width: dropped */
        /* s[4] has none: dropped (a batch has the modality in every row or in none) */
        proto_msg_t *b = batcher_make_batch(s, 5, 7);
        cr_assert_not_null(b);
        cr_assert_eq(proto_msg_n_ids(b), 3);
        const proto_field_t *x = proto_msg_get_tensor(b, key, PROTO_F32);
        const proto_field_t *len = proto_msg_get_tensor(b, lkey, PROTO_I32);
        cr_assert(x && len, "%s / %s missing", key, lkey);
        cr_assert_eq(x->ndim, 3);
        cr_assert_eq(x->shape[0], 3);
        cr_assert_eq(x->shape[1], 5);
        cr_assert_eq(x->shape[2], 4);
        float v[60];
        int32_t l[3];
        memcpy(v, x->data, sizeof v);
        memcpy(l, len->data, sizeof l);
        cr_expect_eq(l[0], 3);
        cr_expect_eq(l[1], 5);
        cr_expect_eq(l[2], 2);
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 5; t++)
                for (int c = 0; c < 4; c++) {
                    float want = t < l[r] ? (float)(r * 1000 + t * 10 + c) : 0.0f;
                    cr_expect_eq(v[(r * 5 + t) * 4 + c], want, "%s[%d][%d][%d] = %g, want %g",
                                 key, r, t, c, v[(r * 5 + t) * 4 + c], want);
                }
        proto_msg_destroy(&b);
    }
}

Test(modalities_batch, video_frames_stacked_in_four_dims) {
    proto_msg_t *s[4] = {s_sample("v", 0, 2), s_sample("v", 1, 2), s_sample("v", 2, 2),
                         s_sample("v", 3, 2)};
    s_add_vid(s[0], 2, 4, 12, 10);
    s_add_vid(s[1], 2, 4, 12, 50);
    s_add_vid(s[2], 4, 2, 12, 90);      /* 8 rows too, other frames: dropped */
    s_add_vid(s[3], 2, 4, 12, 130);
    proto_msg_t *b = batcher_make_batch(s, 4, 0);
    cr_assert_not_null(b);
    cr_assert_eq(proto_msg_n_ids(b), 3);
    const proto_field_t *v = proto_msg_get_tensor(b, "vid", PROTO_U8);
    cr_assert_not_null(v);
    cr_assert_eq(v->ndim, 4);
    cr_assert_eq(v->shape[0], 3);
    cr_assert_eq(v->shape[1], 2);
    cr_assert_eq(v->shape[2], 4);
    cr_assert_eq(v->shape[3], 12);
    cr_assert_eq(proto_msg_get_int(b, "vid.grid", 0), 2);
    const uint8_t *px = v->data;
    cr_expect_eq(px[0], 10);
    cr_expect_eq(px[(1 * 4 + 3) * 12], 10 + 7, "frame 1 patch 3 of row 0");
    cr_expect_eq(px[96], 50, "row 1");
    cr_expect_eq(px[2 * 96 + 12], 131, "row 2 is the fourth sample");
    proto_msg_destroy(&b);
}

/* ---- tokenize: stacking ---- */

TestSuite(modalities_tokenize);

Test(modalities_tokenize, audio_stack_layout_and_normalisation) {
    /* 7 frames of 3 bins, k = 3: 3 rows of 9, the last holding one frame and zeros */
    float x[21], out[27];
    for (int t = 0; t < 7; t++)
        for (int c = 0; c < 3; c++)
            x[t * 3 + c] = (float)(c * 5 + t * (c + 1) + (t % 2) * 0.5);
    cr_assert_eq(tok_audio_stack(x, 7, 3, 3, out), 3);
    for (int c = 0; c < 3; c++) {
        double mean = 0, var = 0;
        for (int t = 0; t < 7; t++)
            mean += x[t * 3 + c] / 7.0;
        for (int t = 0; t < 7; t++)
            var += (x[t * 3 + c] - mean) * (x[t * 3 + c] - mean) / 7.0;
        double s1 = 0, s2 = 0;
        for (int t = 0; t < 7; t++) {
            float y = out[(t / 3) * 9 + (t % 3) * 3 + c];
            cr_expect(fabs(y - (x[t * 3 + c] - mean) / sqrt(var)) < 1e-5, "frame %d bin %d", t, c);
            s1 += y;
            s2 += y * y;
        }
        cr_expect(fabs(s1) < 1e-4 && fabs(s2 / 7 - 1) < 1e-4, "bin %d: mean %g, var %g", c,
                  s1 / 7, s2 / 7);
    }
    for (int i = 3; i < 9; i++)
        cr_expect_eq(out[18 + i], 0, "frames 7 and 8 do not exist");
}

/* ---- real fixtures through the tiers, the batcher and the model ---- */

static const char *s_plan_text =
    "name = \"mods\";\n"
    "tasks = (\n"
    "  { name = \"asr\"; instruction = \"[AUDIO:wav] what is the text corresponding to the "
    "voice? -> [TEXT:text]\";\n"
    "    train = [\"a.tsv\"]; format = \"tsv\"; columns = [\"id\", \"wav\", \"text\"]; },\n"
    "  { name = \"vcap\"; instruction = \"[VIDEO:clip,image_size=32] what does the video "
    "describe? -> [TEXT:cap]\";\n"
    "    train = [\"b.tsv\"]; format = \"tsv\"; columns = [\"id\", \"clip\", \"cap\"]; },\n"
    "  { name = \"mlab\"; instruction = \"[MOTION:mocap] what is the person doing? -> "
    "[TEXT:label]\";\n"
    "    train = [\"c.tsv\"]; format = \"tsv\"; columns = [\"id\", \"mocap\", \"label\"]; }\n"
    ");\n"
    "model = { size = \"nano\"; max_src_len = %d; audio_stack = 4; video_frames = 3; "
    "motion_channels = 189; };\n";

static plan_t *s_load(int max_src) {
    char text[2048], err[1024];
    snprintf(text, sizeof text, s_plan_text, max_src);
    plan_t *plan = plan_load_string(text, "mods.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    return plan;
}

static tok_bpe_t *s_bpe(void) {
    static const char *corpus[] = {"what is the text corresponding to the voice?",
                                   "what does the video describe?",
                                   "what is the person doing?", "hello world", "walk"};
    tok_bpe_trainer_t *tr = tok_bpe_trainer_new();
    for (int r = 0; r < 3; r++)
        for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++)
            tok_bpe_trainer_add(tr, corpus[i], strlen(corpus[i]));
    tok_bpe_t *bpe = tok_bpe_trainer_learn(tr, 100, 2);
    tok_bpe_trainer_destroy(&tr);
    return bpe;
}

static uint8_t *s_read(const char *rel, size_t *len) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/tests/data/%s", OFA_SOURCE_DIR, rel);
    uint8_t *b = (uint8_t *)util_read_file(path, len, err, sizeof err);
    cr_assert(b, "%s", err);
    return b;
}

static proto_msg_t *s_raw(const char *task, int64_t seq, const char *col, const char *file,
                          const char *tcol, const char *text) {
    size_t len;
    uint8_t *bytes = s_read(file, &len);
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, task);
    proto_msg_add_id(m, (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", 0);
    proto_msg_set_str(m, "split", "valid");
    proto_msg_set_bin(m, col, bytes, len);
    proto_msg_set_str(m, tcol, text);
    free(bytes);
    return m;
}

static int s_count(const proto_msg_t *m, int mod) {
    const proto_field_t *sm = proto_msg_get_tensor(m, "src_mod", PROTO_U8);
    cr_assert_not_null(sm);
    int n = 0;
    for (int64_t i = 0; i < sm->shape[0]; i++)
        n += ((const uint8_t *)sm->data)[i] == mod;
    return n;
}

/* A copy of a tensor field's bytes (inline bins may be unaligned). */
static void *s_copy(const proto_msg_t *m, const char *key) {
    const proto_field_t *f = proto_msg_get(m, key);
    cr_assert(f && f->type == PV_TENSOR, "%s missing", key);
    void *p = util_malloc(f->len + 1);
    memcpy(p, f->data, f->len);
    return p;
}

/* One step of a nano model on the batch: loss finite, the adapter's weights get a
 * gradient, and ten steps on the same batch lower the loss. */
static void s_train(const proto_msg_t *b, model_config_t *cfg, const char *adapter) {
    char err[512];
    backend_t *be = backend_cpu_new(1);
    model_t *m = model_new(cfg, be, 3, err, sizeof err);
    cr_assert(m, "%s", err);
    const proto_field_t *st = proto_msg_get(b, "src_tok"), *ti = proto_msg_get(b, "tgt_in");
    int32_t *src = s_copy(b, "src_tok"), *len = s_copy(b, "src_len"), *tin = s_copy(b, "tgt_in");
    int32_t *tout = s_copy(b, "tgt_out");
    uint8_t *mod = s_copy(b, "src_mod");
    int B = (int)st->shape[0], S = (int)st->shape[1];
    for (int i = 0; i < B * S; i++)
        mod[i] = mod[i] == 255 ? 0 : mod[i];      /* padding: any modality the model knows */
    model_batch_t mb = {.B = B, .S = S, .T = (int)ti->shape[1], .src_tok = src, .src_mod = mod,
                        .src_len = len, .tgt_in = tin, .tgt_out = tout};
    void *aud = NULL, *vid = NULL, *mot = NULL;
    const proto_field_t *f;
    if ((f = proto_msg_get(b, "aud"))) {
        aud = s_copy(b, "aud");
        mb.aud = aud, mb.Fa = (int)f->shape[1], mb.aud_dim = (int)f->shape[2];
    }
    if ((f = proto_msg_get(b, "vid"))) {
        vid = s_copy(b, "vid");
        mb.vid = vid, mb.Nf = (int)f->shape[1], mb.Npv = (int)f->shape[2];
        mb.vid_dim = (int)f->shape[3];
        mb.vid_grid = (int)proto_msg_get_int(b, "vid.grid", 0);
    }
    if ((f = proto_msg_get(b, "mot"))) {
        mot = s_copy(b, "mot");
        mb.mot = mot, mb.Fm = (int)f->shape[1], mb.mot_dim = (int)f->shape[2];
    }
    model_out_t o0, o;
    cr_assert_eq(model_forward(m, &mb, &o0, NULL, err, sizeof err), 0, "%s", err);
    cr_assert(isfinite(o0.loss) && o0.ntok > 0);
    model_backward(m);
    model_param_t p;
    cr_assert_eq(model_param(m, model_param_find(m, adapter), &p), 0, "%s missing", adapter);
    double g = 0;
    for (int64_t k = 0; k < p.numel; k++)
        g += fabs(p.g[k]);
    cr_expect_gt(g, 1e-6, "%s has no gradient", adapter);
    model_step(m, 1e-3f);
    for (int i = 0; i < 9; i++) {
        cr_assert_eq(model_forward(m, &mb, &o, NULL, err, sizeof err), 0, "%s", err);
        model_backward(m);
        model_step(m, 1e-3f);
    }
    cr_assert_eq(model_forward(m, &mb, &o, NULL, err, sizeof err), 0, "%s", err);
    cr_expect_lt(o.loss, o0.loss * 0.9, "loss %g -> %g after 10 steps", o0.loss, o.loss);
    /* Generation encodes the same sources: the first decode step's logits are the
     * forward's logits at t = 0. */
    int V = cfg->vocab, T = mb.T;
    float *lg = util_malloc(sizeof(float) * (size_t)B * T * V), *step = util_malloc(sizeof(float) * (size_t)B * V);
    model_logits(m, lg);
    model_cache_t *kv = model_cache_new(m, B, S, 4, err, sizeof err);
    cr_assert(kv, "%s", err);
    cr_assert_eq(model_encode(m, &mb, kv, err, sizeof err), 0, "%s", err);
    int32_t first[8];
    for (int i = 0; i < B; i++)
        first[i] = tin[(size_t)i * T];
    cr_assert_eq(model_decode_step(m, kv, B, first, step, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < B; i++)
        for (int v = 0; v < V; v++) {
            float a = lg[((size_t)i * T) * V + v], c = step[(size_t)i * V + v];
            if (fabsf(a - c) > 1e-4f + 1e-4f * fabsf(a)) {
                cr_expect(0, "row %d logit %d: forward %g, decode %g", i, v, a, c);
                i = B;
                break;
            }
        }
    model_cache_destroy(&kv);
    free(lg);
    free(step);
    free(src), free(len), free(tin), free(tout), free(mod), free(aud), free(vid), free(mot);
    model_destroy(&m);
    backend_destroy(&be);
}

static void s_nano(model_config_t *cfg, int vocab) {
    char err[256];
    cr_assert_eq(model_config_preset(cfg, "nano", vocab, err, sizeof err), 0, "%s", err);
}

TestSuite(modalities_e2e, .timeout = 60);

Test(modalities_e2e, audio_positions_stacked_packed_and_trained) {
    char err[1024];
    plan_t *plan = s_load(256);
    tok_bpe_t *bpe = s_bpe();
    audstage_t *as = audstage_new(plan, NULL, err, sizeof err);
    cr_assert(as, "%s", err);
    tokstage_t *ts = tokstage_new(plan, bpe, NULL, NULL);
    proto_msg_t *s[2] = {s_raw("asr", 0, "wav", "audio/tts_16k.wav", "text", "hello world"),
                         s_raw("asr", 1, "wav", "audio/hello_8k.wav", "text", "hello")};
    int64_t frames[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(audstage_process(as, s[i], err, sizeof err), 0, "%s", err);
        frames[i] = proto_msg_get_int(s[i], "wav.frames", -1);
        cr_assert_gt(frames[i], 20);
        cr_assert_eq(tokstage_process(ts, s[i], err, sizeof err), 0, "%s", err);
        int npos = (int)((frames[i] + 3) / 4);
        cr_expect_eq(s_count(s[i], MOD_AUDIO), npos, "sample %d: %lld frames", i,
                     (long long)frames[i]);
        const proto_field_t *a = proto_msg_get_tensor(s[i], "aud", PROTO_F32);
        cr_assert(a, "no aud field");
        cr_expect_eq(a->shape[0], npos);
        cr_expect_eq(a->shape[1], 4 * 80);
        cr_expect_null(proto_msg_get(s[i], "wav"), "the column became aud");
        cr_expect_eq(proto_msg_get_int(s[i], "aud.frames", -1), frames[i]);
    }
    cr_assert_neq(frames[0], frames[1], "two lengths, so the batch pads one");
    proto_msg_t *b = batcher_make_batch(s, 2, 0);
    cr_assert_not_null(b);
    const proto_field_t *a = proto_msg_get_tensor(b, "aud", PROTO_F32);
    const proto_field_t *al = proto_msg_get_tensor(b, "aud_len", PROTO_I32);
    cr_assert(a && al);
    int32_t l[2];
    memcpy(l, al->data, sizeof l);
    cr_expect_eq(l[0], (frames[0] + 3) / 4);
    cr_expect_eq(l[1], (frames[1] + 3) / 4);
    cr_expect_eq(a->shape[1], l[0] > l[1] ? l[0] : l[1]);
    model_config_t cfg;
    s_nano(&cfg, tok_bpe_vocab_size(bpe));
    cfg.aud_dim = 320;
    s_train(b, &cfg, "aud.proj.w");
    proto_msg_destroy(&b);

    /* Too long for the source: rejected with the count of audio positions. */
    plan_t *small = s_load(24);
    tokstage_t *ts2 = tokstage_new(small, bpe, NULL, NULL);
    proto_msg_t *m = s_raw("asr", 2, "wav", "audio/tts_16k.wav", "text", "hello world");
    cr_assert_eq(audstage_process(as, m, err, sizeof err), 0, "%s", err);
    cr_expect_eq(tokstage_process(ts2, m, err, sizeof err), -1);
    cr_expect(strstr(err, "column wav:") && strstr(err, "audio positions") &&
              strstr(err, "max_src_len=24"), "%s", err);
    proto_msg_destroy(&m);
    tokstage_destroy(&ts2);
    plan_destroy(&small);
    tokstage_destroy(&ts);
    audstage_destroy(&as);
    tok_bpe_destroy(&bpe);
    plan_destroy(&plan);
}

Test(modalities_e2e, video_positions_packed_and_trained) {
    char err[1024];
    plan_t *plan = s_load(256);
    tok_bpe_t *bpe = s_bpe();
    vidstage_t *vs = vidstage_new(plan, NULL, err, sizeof err);
    cr_assert(vs, "%s", err);
    tokstage_t *ts = tokstage_new(plan, bpe, NULL, NULL);
    proto_msg_t *s[2] = {s_raw("vcap", 0, "clip", "video/koala_right.mp4", "cap", "walk"),
                         s_raw("vcap", 1, "clip", "video/vtest_short.avi", "cap", "hello")};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(vidstage_process(vs, s[i], err, sizeof err), 0, "%s", err);
        cr_assert_eq(tokstage_process(ts, s[i], err, sizeof err), 0, "%s", err);
        /* model.video_frames = 3 frames of (32/16)^2 = 4 patches */
        cr_expect_eq(s_count(s[i], MOD_VIDEO), 3 * 4);
        cr_expect_eq(proto_msg_get_int(s[i], "vid.frames", -1), 3);
        cr_expect_eq(proto_msg_get_int(s[i], "vid.grid", -1), 2);
        cr_expect_null(proto_msg_get(s[i], "clip"), "the column became vid");
    }
    proto_msg_t *b = batcher_make_batch(s, 2, 0);
    cr_assert_not_null(b);
    const proto_field_t *v = proto_msg_get_tensor(b, "vid", PROTO_U8);
    cr_assert(v && v->ndim == 4);
    cr_expect(v->shape[0] == 2 && v->shape[1] == 3 && v->shape[2] == 4 && v->shape[3] == 768,
              "vid (%lld, %lld, %lld, %lld)", (long long)v->shape[0], (long long)v->shape[1],
              (long long)v->shape[2], (long long)v->shape[3]);
    model_config_t cfg;
    s_nano(&cfg, tok_bpe_vocab_size(bpe));
    cfg.vid_dim = 768, cfg.vid_grid = 6, cfg.vid_frames = 3;
    s_train(b, &cfg, "vid.time");
    proto_msg_destroy(&b);
    tokstage_destroy(&ts);
    vidstage_destroy(&vs);
    tok_bpe_destroy(&bpe);
    plan_destroy(&plan);
}

Test(modalities_e2e, motion_positions_packed_and_trained) {
    char err[1024];
    plan_t *plan = s_load(256);
    tok_bpe_t *bpe = s_bpe();
    motstage_opts_t o = {.window = 16, .stride = 8, .step = 2};
    motstage_t *ms = motstage_new(plan, &o);
    tokstage_t *ts = tokstage_new(plan, bpe, NULL, NULL);
    proto_msg_t *s[2] = {s_raw("mlab", 0, "mocap", "motion/01_01_40f.bvh", "label", "walk"),
                         s_raw("mlab", 1, "mocap", "motion/01_01_40f.bvh", "label", "hello")};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(motstage_process(ms, s[i], err, sizeof err), 0, "%s", err);
        cr_assert_eq(tokstage_process(ts, s[i], err, sizeof err), 0, "%s", err);
        cr_expect_eq(s_count(s[i], MOD_MOTION), 16);
        const proto_field_t *f = proto_msg_get_tensor(s[i], "mot", PROTO_F32);
        cr_assert(f, "no mot field");
        cr_expect_eq(f->shape[1], plan->model.motion_channels);
    }
    proto_msg_t *b = batcher_make_batch(s, 2, 0);
    cr_assert_not_null(b);
    const proto_field_t *mt = proto_msg_get_tensor(b, "mot", PROTO_F32);
    cr_assert(mt && mt->ndim == 3 && mt->shape[1] == 16 && mt->shape[2] == 189);
    model_config_t cfg;
    s_nano(&cfg, tok_bpe_vocab_size(bpe));
    cfg.mot_dim = 189;
    s_train(b, &cfg, "mot.proj.w");
    proto_msg_destroy(&b);
    tokstage_destroy(&ts);
    motstage_destroy(&ms);
    tok_bpe_destroy(&bpe);
    plan_destroy(&plan);
}

/* ---- the trainer's view: adapters from the plan, batches through tmodel ---- */

Test(modalities_e2e, trainer_builds_the_adapters_the_plan_needs) {
    char err[512];
    plan_t *plan = s_load(256);
    tmodel_cfg_t cfg = {.size = "nano", .vocab = 600, .max_src_len = 256, .max_tgt_len = 64,
                        .image_size = 96, .patch = 16, .seed = 1, .threads = 1,
                        .backend = "cpu"};
    cr_assert_eq(tmodel_cfg_adapters(&cfg, plan, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.aud_dim, 4 * 80);
    cr_expect_eq(cfg.vid_patch, 16);
    cr_expect_eq(cfg.vid_grid, 96 / 16, "the model's grid holds the slot's 32/16");
    cr_expect_eq(cfg.vid_frames, 3);
    cr_expect_eq(cfg.mot_dim, 189);
    tmodel_t *tm = tmodel_new(&cfg, err, sizeof err);
    cr_assert(tm, "%s", err);
    tmodel_destroy(&tm);
    plan_destroy(&plan);

    /* A MOTION slot without model.motion_channels is refused, naming the key. */
    const char *text =
        "tasks = ({ name = \"m\"; instruction = \"[MOTION:bvh] what is it? -> [TEXT:l]\";\n"
        "  train = [\"x.tsv\"]; columns = [\"id\", \"bvh\", \"l\"]; });\n"
        "model = { size = \"nano\"; };\n";
    plan = plan_load_string(text, "m.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    cr_expect_eq(tmodel_cfg_adapters(&cfg, plan, err, sizeof err), -1);
    cr_expect(strstr(err, "model.motion_channels"), "%s", err);
    plan_destroy(&plan);

    /* A text+image plan gets none of them: its checkpoints stay as they were. */
    text = "tasks = ({ name = \"c\"; instruction = \"[IMAGE:img] what? -> [TEXT:cap]\";\n"
           "  train = [\"x.tsv\"]; columns = [\"id\", \"img\", \"cap\"]; });\n"
           "model = { size = \"nano\"; };\n";
    plan = plan_load_string(text, "c.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    cr_assert_eq(tmodel_cfg_adapters(&cfg, plan, err, sizeof err), 0, "%s", err);
    cr_expect(cfg.aud_dim == 0 && cfg.vid_patch == 0 && cfg.mot_dim == 0);
    plan_destroy(&plan);
}

/* The audio adapter's weights are saved and loaded by name, and a model without the
 * adapter refuses nothing it does not have. */
Test(modalities_e2e, adapter_tensors_saved_and_loaded_by_name) {
    char err[512], path[] = "/tmp/ofa_mod_ckpt_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    model_config_t c;
    s_nano(&c, 300);
    c.aud_dim = 320, c.mot_dim = 189;
    backend_t *be = backend_cpu_new(1);
    model_t *a = model_new(&c, be, 1, err, sizeof err), *b = model_new(&c, be, 2, err, sizeof err);
    cr_assert(a && b, "%s", err);
    cr_assert_eq(model_save(a, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_load(b, path, err, sizeof err), 0, "%s", err);
    model_param_t pa, pb;
    model_param(a, model_param_find(a, "aud.proj.w"), &pa);
    model_param(b, model_param_find(b, "aud.proj.w"), &pb);
    cr_expect_eq(memcmp(pa.w, pb.w, sizeof(float) * pa.numel), 0, "aud.proj.w differs");
    /* without the adapters: loads the rest (extra tensors ignored) */
    model_config_t c0 = c;
    c0.aud_dim = c0.mot_dim = 0;
    model_t *plain = model_new(&c0, be, 3, err, sizeof err);
    cr_assert_eq(model_load(plain, path, err, sizeof err), 0, "%s", err);
    /* a checkpoint without them cannot fill a model that has them */
    cr_assert_eq(model_save(plain, path, err, sizeof err), 0, "%s", err);
    cr_expect_eq(model_load(b, path, err, sizeof err), -1);
    cr_expect(strstr(err, "aud.proj.w"), "%s", err);
    unlink(path);
    model_destroy(&plain);
    model_destroy(&a);
    model_destroy(&b);
    backend_destroy(&be);
}
