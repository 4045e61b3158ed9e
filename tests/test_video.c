/* test_video.c: the video tier's library (vidproc.h) on a composed clip with known
 * motion (the tuxpaint koala photo moving right over a flat background) and on real
 * footage (opencv-doc's vtest.avi, cut short), and its behaviour on broken input
 * (empty, garbage, truncated, zero frames, no video stream, over the limits).
 * The fixtures are made by scripts/data/av_fixtures.sh. */
#include <criterion/criterion.h>

#include "imgproc.h"
#include "util.h"
#include "vidproc.h"

#include <math.h>
#include <string.h>

#define VID_DIR OFA_SOURCE_DIR "/tests/data/video"

static uint8_t *s_read(const char *dir, const char *name, size_t *len) {
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *buf = (uint8_t *)util_read_file(path, len, err, sizeof err);
    cr_assert(buf, "%s", err);
    return buf;
}

/* Centroid of the pixels far from the koala clip's background colour (32, 80, 192). */
static void s_centroid(const uint8_t *rgb, int S, double *cx, double *cy, int *count) {
    double sx = 0, sy = 0;
    int n = 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const uint8_t *p = rgb + ((size_t)y * S + x) * 3;
            int dr = p[0] - 32, dg = p[1] - 80, db = p[2] - 192;
            if (dr * dr + dg * dg + db * db > 80 * 80) {
                sx += x;
                sy += y;
                n++;
            }
        }
    *cx = n ? sx / n : -1;
    *cy = n ? sy / n : -1;
    *count = n;
}

Test(video, sample_indices_are_segment_middles) {
    int64_t idx[8];
    vid_sample_indices(20, 5, idx);
    int64_t want[5] = {2, 6, 10, 14, 18};
    for (int k = 0; k < 5; k++)
        cr_assert_eq(idx[k], want[k], "k=%d: %lld", k, (long long)idx[k]);
    vid_sample_indices(3, 8, idx);          /* fewer frames than samples: repeats */
    for (int k = 0; k < 8; k++) {
        cr_assert(idx[k] >= 0 && idx[k] < 3);
        cr_assert(k == 0 || idx[k] >= idx[k - 1]);
    }
    cr_assert_eq(idx[0], 0);
    cr_assert_eq(idx[7], 2);
    vid_sample_indices(1, 1, idx);
    cr_assert_eq(idx[0], 0);
}

Test(video, koala_moves_right) {
    size_t len;
    uint8_t *mp4 = s_read(VID_DIR, "koala_right.mp4", &len);
    const int N = 5, S = 64, P = 16, Np = 16;
    uint8_t *patches = util_malloc((size_t)N * S * S * 3), *frames = util_malloc((size_t)N * S * S * 3);
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    vid_info_t info;
    char err[512];
    cr_assert_eq(vid_process(ctx, mp4, len, N, S, P, patches, frames, &info, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(info.w, 128);
    cr_assert_eq(info.h, 96);
    cr_assert_eq(info.frames, 20, "frames %lld", (long long)info.frames);
    cr_assert_eq(info.grid, 4);
    cr_assert_eq(info.n, N);
    cr_assert_str_eq(info.codec, "h264");
    cr_assert(fabs(info.duration - 2.0) < 0.15, "duration %.3f", info.duration);
    int64_t want[5] = {2, 6, 10, 14, 18};
    for (int k = 0; k < N; k++)
        cr_assert_eq(info.index[k], want[k]);
    /* The koala is at x = 4 + 40 t px (t = index / 10 s) in the 128-px frame, i.e.
     * 16 px further right per sample, 8 px at S = 64; it stays at the same height. */
    double cx0 = 0, cy0 = 0;
    for (int k = 0; k < N; k++) {
        double cx, cy;
        int n;
        s_centroid(frames + (size_t)k * S * S * 3, S, &cx, &cy, &n);
        cr_assert(n > 50 && n < S * S / 3, "frame %d: %d koala pixels", k, n);
        if (k > 0) {
            cr_assert(fabs(cx - cx0 - 8.0) < 2.0, "frame %d: centroid x %.2f after %.2f", k,
                      cx, cx0);
            cr_assert(fabs(cy - cy0) < 1.5, "frame %d: centroid y %.2f after %.2f", k, cy, cy0);
        }
        cr_log_info("sample %d (frame %lld): centroid (%.1f, %.1f) of %d px", k,
                    (long long)info.index[k], cx, cy, n);
        cx0 = cx;
        cy0 = cy;
    }
    /* The patches are the image tier's layout of the same frames, frame-major. */
    uint8_t *one = util_malloc((size_t)Np * P * P * 3);
    for (int k = 0; k < N; k++) {
        img_patchify(frames + (size_t)k * S * S * 3, S, S, P, one);
        cr_assert(!memcmp(one, patches + (size_t)k * Np * P * P * 3, (size_t)Np * P * P * 3),
                  "frame %d's patches differ from img_patchify of the frame", k);
    }
    /* The same call without frames_out gives the same patches. */
    uint8_t *again = util_malloc((size_t)N * S * S * 3);
    cr_assert_eq(vid_process(ctx, mp4, len, N, S, P, again, NULL, &info, err, sizeof err), 0);
    cr_assert(!memcmp(again, patches, (size_t)N * S * S * 3));
    free(again);
    free(one);
    free(patches);
    free(frames);
    free(mp4);
    vid_ctx_destroy(&ctx);
}

Test(video, more_samples_than_frames_repeat) {
    size_t len;
    uint8_t *mp4 = s_read(VID_DIR, "koala_right.mp4", &len);
    const int N = 30, S = 32, P = 16;
    uint8_t *frames = util_malloc((size_t)N * S * S * 3), *patches = util_malloc((size_t)N * S * S * 3);
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    vid_info_t info;
    char err[512];
    cr_assert_eq(vid_process(ctx, mp4, len, N, S, P, patches, frames, &info, err, sizeof err),
                 0, "%s", err);
    for (int k = 1; k < N; k++)
        if (info.index[k] == info.index[k - 1])
            cr_assert(!memcmp(frames + (size_t)k * S * S * 3, frames + (size_t)(k - 1) * S * S * 3,
                              (size_t)S * S * 3), "repeated frame %d differs", k);
    free(frames);
    free(patches);
    free(mp4);
    vid_ctx_destroy(&ctx);
}

Test(video, real_footage_vtest) {
    size_t len;
    uint8_t *avi = s_read(VID_DIR, "vtest_short.avi", &len);
    const int N = 8, S = 96, P = 16;
    uint8_t *frames = util_malloc((size_t)N * S * S * 3), *patches = util_malloc((size_t)N * S * S * 3);
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    vid_info_t info;
    char err[512];
    cr_assert_eq(vid_process(ctx, avi, len, N, S, P, patches, frames, &info, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(info.w, 192);
    cr_assert_eq(info.h, 144);
    cr_assert_eq(info.frames, 15);
    cr_assert_str_eq(info.codec, "mpeg4");
    for (int k = 0; k < N; k++)
        cr_assert_eq(info.index[k], 2 * k, "index[%d] = %lld", k, (long long)info.index[k]);
    /* A street scene: textured frames; people walk while the camera stands still, so
     * successive samples differ a little, not wholly. */
    for (int k = 0; k < N; k++) {
        const uint8_t *f = frames + (size_t)k * S * S * 3;
        double m = 0, v = 0;
        for (int i = 0; i < S * S * 3; i++)
            m += f[i];
        m /= S * S * 3;
        for (int i = 0; i < S * S * 3; i++)
            v += (f[i] - m) * (f[i] - m);
        cr_assert(sqrt(v / (S * S * 3)) > 20, "frame %d is flat", k);
        if (k > 0) {
            const uint8_t *g = f - (size_t)S * S * 3;
            double d = 0;
            for (int i = 0; i < S * S * 3; i++)
                d += abs(f[i] - g[i]);
            d /= S * S * 3;
            cr_assert(d > 0.3 && d < 25, "samples %d and %d: mean |diff| %.2f", k - 1, k, d);
        }
    }
    free(frames);
    free(patches);
    free(avi);
    vid_ctx_destroy(&ctx);
}

/* vid_process must fail with a reason containing `want`. */
static void s_expect_reject(vid_ctx_t *ctx, const uint8_t *buf, size_t len, const char *want) {
    uint8_t *patches = util_malloc(4 * 32 * 32 * 3);
    vid_info_t info;
    char err[512] = "";
    cr_assert_eq(vid_process(ctx, buf, len, 4, 32, 16, patches, NULL, &info, err, sizeof err),
                 -1, "accepted input that should fail with '%s'", want);
    cr_log_info("rejected: %s", err);
    cr_assert(strstr(err, want), "reason '%s' does not mention '%s'", err, want);
    free(patches);
}

Test(video, rejects_bad_input) {
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    size_t len, alen, elen, mlen;
    uint8_t *mp4 = s_read(VID_DIR, "koala_right.mp4", &len);
    uint8_t *avi = s_read(VID_DIR, "vtest_short.avi", &alen);
    uint8_t *empty = s_read(VID_DIR, "empty.avi", &elen);
    uint8_t *mp3 = s_read(OFA_SOURCE_DIR "/tests/data/audio", "hello_8k.mp3", &mlen);

    s_expect_reject(ctx, mp4, 0, "empty");
    uint8_t junk[4096];
    util_rng_t r = {11};
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)util_rng_next(&r);
    s_expect_reject(ctx, junk, sizeof junk, "unrecognised or corrupt");
    s_expect_reject(ctx, empty, elen, "zero-length video");
    s_expect_reject(ctx, mp3, mlen, "no video stream");
    /* Cut short: the MP4's index (moov, first: faststart) promises frames whose bytes are
     * gone; the AVI loses its last frames and index. */
    s_expect_reject(ctx, mp4, len * 6 / 10, "corrupt");
    s_expect_reject(ctx, avi, alen / 2, "corrupt");
    /* Damage inside the AVI's frame data: every byte of a stretch in the middle set to
     * 0xFF, which no MPEG-4 frame survives. */
    uint8_t *bad = util_malloc(alen);
    memcpy(bad, avi, alen);
    memset(bad + alen / 3, 0xFF, alen / 3);
    s_expect_reject(ctx, bad, alen, "corrupt");
    free(bad);

    vid_ctx_t *few = vid_ctx_new(&(vid_opts_t){.max_frames = 10});
    s_expect_reject(few, mp4, len, "too many frames");
    vid_ctx_destroy(&few);
    vid_ctx_t *small = vid_ctx_new(&(vid_opts_t){.max_pixels = 128 * 95});
    s_expect_reject(small, mp4, len, "too large");
    vid_ctx_destroy(&small);

    free(mp3);
    free(empty);
    free(avi);
    free(mp4);
    vid_ctx_destroy(&ctx);
}

/* ---- ofa-video: the worker program over ZeroMQ ---- */
#include "av_worker.h"

static const char *s_plan_text =
    "name = \"v\";\n"
    "tasks = (\n"
    "  { name = \"vcap\"; instruction = \"[VIDEO:clip,frames=4,image_size=32,patch=16] what "
    "does the video describe? -> [TEXT:cap]\";\n"
    "    train = [\"x.tsv\"]; format = \"tsv\"; columns = [\"id\", \"clip\", \"cap\"]; },\n"
    "  { name = \"vdefault\"; instruction = \"[VIDEO:video] what does the video describe? -> "
    "[TEXT:cap]\";\n"
    "    train = [\"y.tsv\"]; format = \"tsv\"; columns = [\"id\", \"video\", \"cap\"]; }\n"
    ");\n"
    "model = { size = \"nano\"; };\n";

static proto_msg_t *s_sample(const char *task, const char *col, uint64_t id,
                             const uint8_t *data, size_t len) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, task);
    proto_msg_add_id(m, id);
    proto_msg_set_int(m, "seq", (int64_t)id);
    proto_msg_set_str(m, "@route", "video,tokenize");
    proto_msg_set_int(m, "@hop", 0);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_bin(m, col, data, len);
    proto_msg_set_str(m, "cap", "a koala moves right");
    return m;
}

Test(video, ofa_video_program, .timeout = 60) {
    avw_check_flags("ofa-video", "--max-frames", "-3");
    size_t len;
    uint8_t *mp4 = s_read(VID_DIR, "koala_right.mp4", &len);
    avw_t w;
    avw_start(&w, "ofa-video", "video", s_plan_text, NULL);
    /* The slot's own frames=4, image_size=32, patch=16: (4*4, 768). */
    proto_msg_t *a = avw_call(&w, s_sample("vcap", "clip", 3, mp4, len));
    cr_assert_eq(proto_msg_kind(a), PROTO_SAMPLE, "%s", proto_msg_get_str(a, "reason"));
    cr_assert_eq(proto_msg_get_int(a, "@hop", -1), 1);
    const proto_field_t *f = proto_msg_get_tensor(a, "clip", PROTO_U8);
    cr_assert(f, "clip is not a u8 tensor");
    cr_assert_eq(f->ndim, 2);
    cr_assert_eq(f->shape[0], 4 * 4);
    cr_assert_eq(f->shape[1], 16 * 16 * 3);
    cr_assert_eq(proto_msg_get_int(a, "clip.grid", -1), 2);
    cr_assert_eq(proto_msg_get_int(a, "clip.frames", -1), 4);
    /* Same bytes as the library. */
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    uint8_t *want = util_malloc(4 * 32 * 32 * 3);
    vid_info_t info;
    char err[256];
    cr_assert_eq(vid_process(ctx, mp4, len, 4, 32, 16, want, NULL, &info, err, sizeof err), 0);
    cr_assert(!memcmp(f->data, want, 4 * 32 * 32 * 3));
    proto_msg_destroy(&a);
    /* The plan's defaults (nano: 96 px, patch 16; 8 frames): (8*36, 768). */
    a = avw_call(&w, s_sample("vdefault", "video", 4, mp4, len));
    f = proto_msg_get_tensor(a, "video", PROTO_U8);
    cr_assert(f && f->shape[0] == 8 * 36 && f->shape[1] == 768);
    cr_assert_eq(proto_msg_get_int(a, "video.grid", -1), 6);
    proto_msg_destroy(&a);
    /* An audio file in a video column: a REJECT naming the column. */
    size_t mlen;
    uint8_t *mp3 = s_read(OFA_SOURCE_DIR "/tests/data/audio", "hello_8k.mp3", &mlen);
    a = avw_call(&w, s_sample("vcap", "clip", 5, mp3, mlen));
    cr_assert_eq(proto_msg_kind(a), PROTO_REJECT);
    const char *reason = proto_msg_get_str(a, "reason");
    cr_assert(reason && strstr(reason, "column clip: no video stream"), "%s", reason ? reason : "-");
    proto_msg_destroy(&a);
    avw_stop(&w);
    free(mp3);
    free(want);
    vid_ctx_destroy(&ctx);
    free(mp4);
}

/* Damaged clips: random bytes overwritten (in the header or anywhere) or the file cut at
 * a random point. Each must decode or be refused with a reason; none may crash (run
 * under ASan in the sanitizer build). */
Test(video, mutated_files_never_crash, .timeout = 120) {
    const char *names[] = {"koala_right.mp4", "vtest_short.avi"};
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    uint8_t *patches = util_malloc(4 * 32 * 32 * 3);
    util_rng_t r = {99};
    int refused = 0, total = 0;
    for (int k = 0; k < 2; k++) {
        size_t len;
        uint8_t *orig = s_read(VID_DIR, names[k], &len);
        uint8_t *buf = util_malloc(len);
        for (int it = 0; it < 60; it++) {
            memcpy(buf, orig, len);
            size_t n = len;
            if (it % 3 == 2) {
                n = 1 + util_rng_next(&r) % len;
            } else {
                int flips = 1 + (int)(util_rng_next(&r) % 16);
                for (int i = 0; i < flips; i++)
                    buf[util_rng_next(&r) % (it % 3 ? len : 256)] = (uint8_t)util_rng_next(&r);
            }
            vid_info_t info;
            char err[512] = "";
            int rc = vid_process(ctx, buf, n, 4, 32, 16, patches, NULL, &info, err, sizeof err);
            cr_assert(rc == 0 || (rc == -1 && err[0]), "%s: rc %d without a reason", names[k], rc);
            refused += rc != 0;
            total++;
        }
        free(buf);
        free(orig);
    }
    cr_log_info("mutated video: %d of %d refused", refused, total);
    cr_assert(refused > 0);
    free(patches);
    vid_ctx_destroy(&ctx);
}
