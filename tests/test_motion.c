/* test_motion.c: the motion tier's library (bvh.h) on a real capture (the first 40
 * frames of CMU subject 1, clip 01, from assimp-testmodels; made by
 * scripts/data/av_fixtures.sh), the 6-D rotation features on hand-made rotations, the
 * windows, broken files (missing channels, frame count mismatch, non-numeric values,
 * truncation), and the worker's transform on a message (motstage.h). */
#include <criterion/criterion.h>

#include "motstage.h"
#include "util.h"

#include <math.h>
#include <string.h>

#define MOT_DIR OFA_SOURCE_DIR "/tests/data/motion"

static char *s_read(const char *name, size_t *len) {
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s", MOT_DIR, name);
    char *buf = util_read_file(path, len, err, sizeof err);
    cr_assert(buf, "%s", err);
    return buf;
}

Test(motion, parses_the_cmu_capture) {
    size_t len;
    char *text = s_read("01_01_40f.bvh", &len);
    char err[512];
    bvh_t *b = bvh_parse(text, len, err, sizeof err);
    cr_assert(b, "%s", err);
    cr_assert_eq(b->njoints, 31);
    cr_assert_eq(b->nchannels, 96);
    cr_assert_eq(b->nframes, 40);
    cr_assert(fabs(b->frame_time - 0.0083333) < 1e-9);
    cr_assert_str_eq(b->joints[0].name, "Hips");
    cr_assert_eq(b->joints[0].parent, -1);
    cr_assert_eq(b->joints[0].nch, 6);
    cr_assert_str_eq(b->joints[1].name, "LHipJoint");
    cr_assert_eq(b->joints[1].parent, 0);
    cr_assert_str_eq(b->joints[2].name, "LeftUpLeg");
    cr_assert_eq(b->joints[2].parent, 1);
    cr_assert(fabs(b->joints[2].offset[0] - 1.36306) < 1e-9);
    /* The first frame line starts "9.3722 17.8693 -17.3198 0 0 0 0 0 0 -17". */
    cr_assert_float_eq(b->motion[0], 9.3722f, 1e-5);
    cr_assert_float_eq(b->motion[1], 17.8693f, 1e-5);
    cr_assert_float_eq(b->motion[2], -17.3198f, 1e-5);
    cr_assert_float_eq(b->motion[9], -17.0f, 1e-6);
    cr_assert_eq(bvh_feature_dim(b), 3 + 6 * 31);
    bvh_destroy(&b);
    cr_assert_null(b);
    free(text);
}

Test(motion, features_are_root_relative_positions_and_6d_rotations) {
    size_t len;
    char *text = s_read("01_01_40f.bvh", &len);
    char err[512];
    bvh_t *b = bvh_parse(text, len, err, sizeof err);
    cr_assert(b, "%s", err);
    const int T = 8, C = bvh_feature_dim(b);
    float *w = util_malloc((size_t)T * C * sizeof(float));
    int real = bvh_window(b, 2, T, 1, 0.01f, w);
    cr_assert_eq(real, T);
    /* Root: X and Z relative to the window's first frame (frame 2), Y kept, scaled. */
    cr_assert_float_eq(w[0], 0.0f, 1e-7);
    cr_assert_float_eq(w[2], 0.0f, 1e-7);
    cr_assert_float_eq(w[1], b->motion[2 * 96 + 1] * 0.01f, 1e-6);
    for (int t = 1; t < T; t++) {
        const float *f = b->motion + (size_t)(2 + t) * 96, *f0 = b->motion + 2 * 96;
        cr_assert_float_eq(w[t * C + 0], (f[0] - f0[0]) * 0.01f, 1e-6);
        cr_assert_float_eq(w[t * C + 2], (f[2] - f0[2]) * 0.01f, 1e-6);
    }
    /* Every 6-D block holds two orthonormal columns. */
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 31; j++) {
            const float *r = w + t * C + 3 + 6 * j;
            double n0 = r[0] * r[0] + r[1] * r[1] + r[2] * r[2];
            double n1 = r[3] * r[3] + r[4] * r[4] + r[5] * r[5];
            double d = r[0] * r[3] + r[1] * r[4] + r[2] * r[5];
            cr_assert(fabs(n0 - 1) < 1e-5 && fabs(n1 - 1) < 1e-5 && fabs(d) < 1e-5,
                      "t %d joint %d: not a rotation", t, j);
        }
    /* Windows: 40 frames, T 16, stride 8 -> 4; with step 4 there are 10 frames -> 1
     * window of 16 whose last 6 frames repeat the 10th. */
    cr_assert_eq(bvh_num_windows(b, 16, 8, 1), 4);
    cr_assert_eq(bvh_num_windows(b, 16, 8, 4), 1);
    float *p = util_malloc((size_t)16 * C * sizeof(float));
    cr_assert_eq(bvh_window(b, 0, 16, 4, 0.01f, p), 10);
    for (int t = 10; t < 16; t++)
        cr_assert(!memcmp(p + t * C, p + 9 * C, (size_t)C * sizeof(float)), "frame %d", t);
    /* Frame 1 of the step-4 window is file frame 4. */
    float *q = util_malloc((size_t)2 * C * sizeof(float));
    bvh_window(b, 0, 2, 1, 0.01f, q);
    bvh_window(b, 4, 1, 1, 0.01f, q + C);
    cr_assert_float_eq(p[C + 1], q[C + 1], 1e-7);
    cr_assert(!memcmp(p + C + 3, q + C + 3, (size_t)(C - 3) * sizeof(float)));
    free(q);
    free(p);
    free(w);
    bvh_destroy(&b);
    free(text);
}

/* One joint with the given channels and one frame of values. */
static bvh_t *s_one(const char *channels, const char *values) {
    char text[512], err[256];
    snprintf(text, sizeof text,
             "HIERARCHY\nROOT A\n{\n OFFSET 0 0 0\n CHANNELS %s\n End Site\n {\n  OFFSET 0 1 0\n }\n}\n"
             "MOTION\nFrames: 1\nFrame Time: 0.1\n%s\n", channels, values);
    bvh_t *b = bvh_parse(text, strlen(text), err, sizeof err);
    cr_assert(b, "%s", err);
    return b;
}

Test(motion, rotation_order_follows_the_channels) {
    float o[9];
    /* Zrotation 90: x -> y, y -> -x. Columns (0,1,0) and (-1,0,0). */
    bvh_t *b = s_one("3 Zrotation Yrotation Xrotation", "90 0 0");
    cr_assert_eq(bvh_feature_dim(b), 6);
    bvh_window(b, 0, 1, 1, 1.0f, o);
    float want[6] = {0, 1, 0, -1, 0, 0};
    for (int i = 0; i < 6; i++)
        cr_assert_float_eq(o[i], want[i], 1e-6, "i=%d: %f", i, o[i]);
    bvh_destroy(&b);
    /* Z then X, both 90 (R = Rz Rx): column 0 = Rz e_x = (0,1,0); column 1 =
     * Rz Rx e_y = Rz (0,0,1) = (0,0,1). In the other order (R = Rx Rz): column 0 =
     * Rx (0,1,0) = (0,0,1). So the order matters and is the file's. */
    b = s_one("3 Zrotation Xrotation Yrotation", "90 90 0");
    bvh_window(b, 0, 1, 1, 1.0f, o);
    float zx[6] = {0, 1, 0, 0, 0, 1};
    for (int i = 0; i < 6; i++)
        cr_assert_float_eq(o[i], zx[i], 1e-6, "ZX i=%d: %f", i, o[i]);
    bvh_destroy(&b);
    b = s_one("3 Xrotation Zrotation Yrotation", "90 90 0");
    bvh_window(b, 0, 1, 1, 1.0f, o);
    cr_assert_float_eq(o[0], 0.0f, 1e-6);
    cr_assert_float_eq(o[1], 0.0f, 1e-6);
    cr_assert_float_eq(o[2], 1.0f, 1e-6);
    bvh_destroy(&b);
    /* Positions only: no rotation block; the root's X/Z are relative (0 in frame 0). */
    b = s_one("3 Xposition Yposition Zposition", "5 6 7");
    cr_assert_eq(bvh_feature_dim(b), 3);
    bvh_window(b, 0, 1, 1, 1.0f, o);
    cr_assert(o[0] == 0 && o[1] == 6 && o[2] == 0);
    bvh_destroy(&b);
}

/* bvh_parse must fail with a reason containing `want`. */
static void s_expect_reject(const char *text, size_t len, const char *want) {
    char err[512] = "";
    bvh_t *b = bvh_parse(text, len, err, sizeof err);
    cr_assert_null(b, "accepted a file that should fail with '%s'", want);
    cr_assert(strstr(err, want), "reason '%s' does not mention '%s'", err, want);
    cr_log_info("rejected: %s", err);
}

/* text with the first occurrence of `from` replaced by `to` (malloc'd). */
static char *s_edit(const char *text, const char *from, const char *to) {
    const char *at = strstr(text, from);
    cr_assert(at, "'%s' not in the fixture", from);
    size_t n = strlen(text) - strlen(from) + strlen(to);
    char *out = util_malloc(n + 1);
    size_t pre = (size_t)(at - text);
    memcpy(out, text, pre);
    strcpy(out + pre, to);
    strcat(out, at + strlen(from));
    return out;
}

Test(motion, rejects_bad_files) {
    size_t len;
    char *text = s_read("01_01_40f.bvh", &len);
    char *e;
    s_expect_reject(text, 0, "empty");
    s_expect_reject("RIFF....WAVE", 12, "expected 'HIERARCHY'");
    /* Missing channels: a joint without its CHANNELS line; a rotation missing an axis. */
    e = s_edit(text, "CHANNELS 3 Zrotation Yrotation Xrotation\n\t\tJOINT LeftUpLeg",
               "\n\t\tJOINT LeftUpLeg");
    s_expect_reject(e, strlen(e), "joint LHipJoint has no CHANNELS line");
    free(e);
    e = s_edit(text, "CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 2 Zrotation Yrotation");
    s_expect_reject(e, strlen(e), "missing rotation channels");
    free(e);
    e = s_edit(text, "CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 3 Zrotation Yrotation");
    s_expect_reject(e, strlen(e), "unknown or missing channel");
    free(e);
    /* Frame count mismatch, both ways. */
    e = s_edit(text, "Frames: 40", "Frames: 39");
    s_expect_reject(e, strlen(e), "frame count mismatch");
    free(e);
    e = s_edit(text, "Frames: 40", "Frames: 41");
    s_expect_reject(e, strlen(e), "but 40 frame lines");
    free(e);
    /* Non-numeric values. */
    e = s_edit(text, "9.3722 17.8693", "9.3722 abc");
    s_expect_reject(e, strlen(e), "value 2 is not a number: 'abc'");
    free(e);
    e = s_edit(text, "9.3722 17.8693", "9.3722 1.5.3");
    s_expect_reject(e, strlen(e), "is not a number");
    free(e);
    e = s_edit(text, "9.3722 17.8693", "9.3722 nan");
    s_expect_reject(e, strlen(e), "is not a number");
    free(e);
    /* Found by fuzz_bvh: 1e39 is a finite double but an infinite float (the motion is
     * stored as floats), so its features were inf. */
    e = s_edit(text, "9.3722 17.8693", "9.3722 1e39");
    s_expect_reject(e, strlen(e), "value 2 is not a number: '1e39'");
    free(e);
    e = s_edit(text, "OFFSET 1.36306", "OFFSET x1.36306");
    s_expect_reject(e, strlen(e), "OFFSET value is not a number");
    free(e);
    /* A frame line with a value too many. */
    e = s_edit(text, "9.3722 17.8693", "9.3722 1 17.8693");
    s_expect_reject(e, strlen(e), "has 97 values, expected 96");
    free(e);
    /* Truncated: inside the hierarchy, in the middle of a frame line, between lines. */
    s_expect_reject(text, 1500, "truncated file");
    const char *motion = strstr(text, "Frame Time:");
    size_t mid = (size_t)(motion - text) + 3000;
    s_expect_reject(text, mid, "truncated");
    s_expect_reject(text, len - 60, "frame 39 has");
    const char *tenth = motion;
    for (int i = 0; i < 11; i++)
        tenth = strchr(tenth, '\n') + 1;
    s_expect_reject(text, (size_t)(tenth - text), "'Frames: 40' but 10 frame lines");
    /* A NUL byte: not text. */
    char *nul = util_malloc(len);
    memcpy(nul, text, len);
    nul[100] = 0;
    s_expect_reject(nul, len, "NUL byte");
    free(nul);
    free(text);
}

/* ---- motstage: the worker's transform on a message ---- */

static const char *s_plan_text =
    "name = \"m\";\n"
    "tasks = (\n"
    "  { name = \"motion_caption\"; instruction = \"[MOTION:mocap] what is the person doing? -> "
    "[TEXT:cap]\";\n"
    "    train = [\"x.tsv\"]; format = \"tsv\"; columns = [\"id\", \"mocap\", \"cap\"]; }\n"
    ");\n"
    "model = { size = \"nano\"; };\n";

Test(motion, stage_replaces_the_column_by_a_window) {
    char err[1024];
    plan_t *plan = plan_load_string(s_plan_text, "m.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    motstage_opts_t o = {.window = 8, .stride = 4, .step = 1, .pos_scale = 0.01f};
    motstage_t *st = motstage_new(plan, &o);
    size_t len;
    char *text = s_read("01_01_40f.bvh", &len);
    uint64_t seen = 0;
    for (uint64_t id = 0; id < 40; id++) {
        proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "motion_caption");
        proto_msg_add_id(m, id);
        proto_msg_set_str(m, "split", "train");
        proto_msg_set_bin(m, "mocap", text, len);
        proto_msg_set_str(m, "cap", "walk");
        cr_assert_eq(motstage_process(st, m, err, sizeof err), 0, "%s", err);
        const proto_field_t *f = proto_msg_get_tensor(m, "mocap", PROTO_F32);
        cr_assert(f, "mocap is not an f32 tensor");
        cr_assert_eq(f->ndim, 2);
        cr_assert_eq(f->shape[0], 8);
        cr_assert_eq(f->shape[1], 189);
        cr_assert_eq(proto_msg_get_int(m, "mocap.frames", -1), 8);
        /* The window is the one motstage_pick_window names, and the same every time. */
        int64_t w = motstage_pick_window(9, 1, (uint64_t)plan->seed, id);
        seen |= 1ull << w;
        bvh_t *b = bvh_parse(text, len, err, sizeof err);
        float want[8 * 189];
        bvh_window(b, w * 4, 8, 1, 0.01f, want);
        cr_assert(!memcmp(f->data, want, sizeof want), "id %llu: window %lld differs",
                  (unsigned long long)id, (long long)w);
        bvh_destroy(&b);
        proto_msg_destroy(&m);
    }
    /* 40 frames, T 8, stride 4: 9 windows, and 40 ids reach most of them. */
    cr_assert(__builtin_popcountll(seen) >= 6, "windows used: %llx", (unsigned long long)seen);
    cr_assert_eq(motstage_pick_window(9, 0, 1, 5), 4, "validation takes the middle window");

    /* Rejects name the column. */
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "motion_caption");
    proto_msg_add_id(m, 1);
    proto_msg_set_bin(m, "mocap", text, 1500);
    cr_assert_eq(motstage_process(st, m, err, sizeof err), -1);
    cr_assert(strstr(err, "column mocap: ") == err && strstr(err, "truncated"), "%s", err);
    proto_msg_remove(m, "mocap");
    cr_assert_eq(motstage_process(st, m, err, sizeof err), -1);
    cr_assert_str_eq(err, "column mocap: missing from the sample");
    proto_msg_destroy(&m);
    m = proto_msg_new(PROTO_SAMPLE, "nope");
    cr_assert_eq(motstage_process(st, m, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown task"), "%s", err);
    proto_msg_destroy(&m);
    free(text);
    motstage_destroy(&st);
    plan_destroy(&plan);
}

/* ---- ofa-motion: the worker program over ZeroMQ ---- */
#include "av_worker.h"

Test(motion, ofa_motion_program, .timeout = 60) {
    avw_check_flags("ofa-motion", "--window", "0");
    size_t len;
    char *text = s_read("01_01_40f.bvh", &len);
    avw_t w;
    const char *extra[] = {"--window", "6", "--step", "4", NULL};
    avw_start(&w, "ofa-motion", "motion", s_plan_text, extra);
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "motion_caption");
    proto_msg_add_id(m, 2);
    proto_msg_set_str(m, "@route", "motion,tokenize");
    proto_msg_set_int(m, "@hop", 0);
    proto_msg_set_str(m, "split", "valid");
    proto_msg_set_str(m, "mocap", text);
    proto_msg_t *a = avw_call(&w, m);
    cr_assert_eq(proto_msg_kind(a), PROTO_SAMPLE, "%s", proto_msg_get_str(a, "reason"));
    const proto_field_t *f = proto_msg_get_tensor(a, "mocap", PROTO_F32);
    cr_assert(f && f->ndim == 2 && f->shape[0] == 6 && f->shape[1] == 189);
    cr_assert_eq(proto_msg_get_int(a, "mocap.frames", -1), 6);
    /* 40 frames at step 4 = 10; windows of 6 every 3: 2; validation takes the middle
     * one (index 1, frames 3..8). */
    char err[256];
    bvh_t *b = bvh_parse(text, len, err, sizeof err);
    float want[6 * 189];
    bvh_window(b, 3, 6, 4, 0.01f, want);
    cr_assert(!memcmp(f->data, want, sizeof want));
    bvh_destroy(&b);
    proto_msg_destroy(&a);
    m = proto_msg_new(PROTO_SAMPLE, "motion_caption");
    proto_msg_add_id(m, 3);
    proto_msg_set_bin(m, "mocap", "HIERARCHY\nROOT", 14);
    a = avw_call(&w, m);
    cr_assert_eq(proto_msg_kind(a), PROTO_REJECT);
    const char *reason = proto_msg_get_str(a, "reason");
    cr_assert(reason && strstr(reason, "column mocap: ") && strstr(reason, "truncated"), "%s",
              reason ? reason : "-");
    proto_msg_destroy(&a);
    avw_stop(&w);
    free(text);
}

/* Damaged files: random bytes overwritten or the file cut at a random point. Each must
 * parse or be refused with a reason; none may crash. */
Test(motion, mutated_files_never_crash) {
    size_t len;
    char *orig = s_read("01_01_40f.bvh", &len);
    char *buf = util_malloc(len);
    util_rng_t r = {5};
    int refused = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(buf, orig, len);
        size_t n = len;
        if (it % 2) {
            n = 1 + util_rng_next(&r) % len;
        } else {
            int flips = 1 + (int)(util_rng_next(&r) % 8);
            for (int i = 0; i < flips; i++)
                buf[util_rng_next(&r) % len] = (char)(util_rng_next(&r) % 255 + 1);
        }
        char err[512] = "";
        bvh_t *b = bvh_parse(buf, n, err, sizeof err);
        cr_assert(b || err[0], "refused without a reason");
        if (b) {
            int C = bvh_feature_dim(b);
            float *w = util_malloc((size_t)4 * C * sizeof(float));
            bvh_window(b, 0, 4, 1, 0.01f, w);
            free(w);
        }
        refused += !b;
        bvh_destroy(&b);
    }
    cr_log_info("mutated BVH: %d of 300 refused", refused);
    cr_assert(refused > 150);
    free(buf);
    free(orig);
}
