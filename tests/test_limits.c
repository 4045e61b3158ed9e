/* test_limits.c: the plan's `limits` group (plans/planfile.h, plan_limits_t), checked by
 * each decoder on real files.
 *
 * For every limit: the same real input passes under the default limits and is rejected,
 * with a reason naming the column and the plan key, under a limit just below it. Big
 * inputs are made at test time, never committed: a 9000 x 8000 PNG drawn by PIL (72 Mpx,
 * over the default 64 Mpx), a PNG header declaring 60000 x 60000 (a
 * decompression bomb of a few bytes), a 2 MiB media file and a 2000-byte caption. */
#include "audstage.h"
#include "imgstage.h"
#include "motstage.h"
#include "planfile.h"
#include "source.h"
#include "util.h"
#include "vidstage.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define DATA OFA_SOURCE_DIR "/tests/data/"

static char err[2048];

static const char *s_tasks =
    "name = \"limits\";\n"
    "tasks = (\n"
    "  { name = \"cap\"; instruction = \"[IMAGE:img] what does the image describe? -> "
    "[TEXT:cap]\";\n"
    "    train = [\"cap.tsv\"]; columns = [\"id\", \"img\", \"cap\"]; },\n"
    "  { name = \"asr\"; instruction = \"[AUDIO:wav] what is the text corresponding to the "
    "voice? -> [TEXT:text]\";\n"
    "    train = [\"a.tsv\"]; columns = [\"id\", \"wav\", \"text\"]; },\n"
    "  { name = \"vcap\"; instruction = \"[VIDEO:clip,image_size=32] what does the video "
    "describe? -> [TEXT:cap]\";\n"
    "    train = [\"b.tsv\"]; columns = [\"id\", \"clip\", \"cap\"]; },\n"
    "  { name = \"mlab\"; instruction = \"[MOTION:mocap] what is the person doing? -> "
    "[TEXT:label]\";\n"
    "    train = [\"c.tsv\"]; columns = [\"id\", \"mocap\", \"label\"]; }\n"
    ");\n"
    "model = { size = \"nano\"; video_frames = 3; motion_channels = 189; };\n";

/* The plan with `limits = { LIMITS };` (empty: the defaults), paths under dir. */
static plan_t *s_plan_of(const char *tasks, const char *limits, const char *dir) {
    char text[4096];
    snprintf(text, sizeof text, "%slimits = { %s };\n", tasks, limits);
    plan_t *p = plan_load_string(text, "limits.conf", dir, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    return p;
}

static plan_t *s_plan(const char *limits, const char *dir) {
    return s_plan_of(s_tasks, limits, dir);
}

static proto_msg_t *s_sample(const char *task, const char *col, const void *bytes,
                             size_t len) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, task);
    proto_msg_add_id(m, 1);
    proto_msg_set_int(m, "seq", 1);
    proto_msg_set_int(m, "row", 1);
    proto_msg_set_str(m, "split", "valid");
    proto_msg_set_bin(m, col, bytes, len);
    return m;
}

static proto_msg_t *s_file_sample(const char *task, const char *col, const char *path) {
    size_t len = 0;
    char *bytes = util_read_file(path, &len, err, sizeof err);
    cr_assert_not_null(bytes, "%s", err);
    proto_msg_t *m = s_sample(task, col, bytes, len);
    free(bytes);
    return m;
}

/* ---------------------------------------------------------------- images */

static int s_image(const char *limits, const uint8_t *bytes, size_t len) {
    plan_t *p = s_plan(limits, "/tmp");
    imgstage_t *st = imgstage_new(p, IMG_FIT_RESIZE, NULL);
    cr_assert_not_null(st);
    proto_msg_t *m = s_sample("cap", "img", bytes, len);
    err[0] = 0;
    int rc = imgstage_process(st, m, err, sizeof err);
    proto_msg_destroy(&m);
    imgstage_destroy(&st);
    plan_destroy(&p);
    return rc;
}

Test(limits, image_pixels_jpeg) {
    size_t len;
    uint8_t *jpg = (uint8_t *)util_read_file(DATA "fruits_161x97.jpg", &len, err, sizeof err);
    cr_assert_not_null(jpg, "%s", err);
    cr_assert_eq(s_image("", jpg, len), 0, "%s", err);
    cr_assert_eq(s_image("image_pixels = 15617;", jpg, len), 0, "161 x 97 = 15617: %s", err);
    cr_assert_eq(s_image("image_pixels = 15616;", jpg, len), -1);
    cr_assert(strstr(err, "column img") && strstr(err, "161x97") &&
              strstr(err, "limits.image_pixels"), "%s", err);
    free(jpg);
}

/* A real 72 Mpx PNG (drawn by PIL at test time; ImageMagick's default policy refuses
 * to draw one): over the default 64 Mpx, refused from its header. */
Test(limits, image_pixels_big_png, .timeout = 60) {
    char dir[] = "/tmp/ofa-limits-XXXXXX", cmd[300], path[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/big.png", dir);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"from PIL import Image; "
             "Image.new('L', (9000, 8000), 150).save('%s')\"", path);
    cr_assert_eq(system(cmd), 0, "PIL could not draw %s", path);
    size_t len;
    uint8_t *png = (uint8_t *)util_read_file(path, &len, err, sizeof err);
    cr_assert_not_null(png, "%s", err);
    cr_assert_eq(s_image("", png, len), -1, "a 72 Mpx PNG passed the default limit");
    cr_assert(strstr(err, "9000x8000") && strstr(err, "limits.image_pixels"), "%s", err);
    free(png);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static void s_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A decompression bomb: a valid PNG signature and IHDR declaring 60000 x 60000 (3.6
 * Gpx, 10 GiB of pixels) in 33 bytes. Refused from the header. */
Test(limits, image_pixels_png_bomb_refused_from_header) {
    uint8_t png[33] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    s_put32(png + 8, 13);
    memcpy(png + 12, "IHDR", 4);
    s_put32(png + 16, 60000);
    s_put32(png + 20, 60000);
    png[24] = 8, png[25] = 2, png[26] = 0, png[27] = 0, png[28] = 0;   /* 8-bit RGB */
    s_put32(png + 29, (uint32_t)crc32(0, png + 12, 17));
    cr_assert_eq(s_image("", png, sizeof png), -1);
    cr_assert(strstr(err, "60000x60000") && strstr(err, "limits.image_pixels"), "%s", err);
}

/* ---------------------------------------------------------------- audio */

static int s_audio(const char *limits, const char *file) {
    plan_t *p = s_plan(limits, "/tmp");
    audstage_t *st = audstage_new(p, NULL, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    proto_msg_t *m = s_file_sample("asr", "wav", file);
    err[0] = 0;
    int rc = audstage_process(st, m, err, sizeof err);
    proto_msg_destroy(&m);
    audstage_destroy(&st);
    plan_destroy(&p);
    return rc;
}

Test(limits, audio_seconds) {
    /* hello_8k: about 1.2 s of speech, in three containers (header-checked for WAV and
     * FLAC-like files, counted while decoding for MP3). */
    const char *files[] = {DATA "audio/hello_8k.wav", DATA "audio/hello_8k.ogg",
                           DATA "audio/hello_8k.mp3"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(s_audio("", files[i]), 0, "%s: %s", files[i], err);
        cr_assert_eq(s_audio("audio_seconds = 0.5;", files[i]), -1, "%s passed 0.5 s",
                     files[i]);
        cr_assert(strstr(err, "column wav") && strstr(err, "limits.audio_seconds"), "%s: %s",
                  files[i], err);
    }
}

/* ---------------------------------------------------------------- video */

static int s_video(const char *limits, const char *file) {
    plan_t *p = s_plan(limits, "/tmp");
    vidstage_t *st = vidstage_new(p, NULL, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    proto_msg_t *m = s_file_sample("vcap", "clip", file);
    err[0] = 0;
    int rc = vidstage_process(st, m, err, sizeof err);
    proto_msg_destroy(&m);
    vidstage_destroy(&st);
    plan_destroy(&p);
    return rc;
}

Test(limits, video_frames_and_seconds) {
    const char *clip = DATA "video/koala_right.mp4";
    cr_assert_eq(s_video("", clip), 0, "%s", err);
    cr_assert_eq(s_video("video_frames = 3;", clip), -1, "a clip of more than 3 frames passed");
    cr_assert(strstr(err, "column clip") && strstr(err, "limits.video_frames"), "%s", err);
    cr_assert_eq(s_video("video_seconds = 0.1;", clip), -1, "a clip over 0.1 s passed");
    cr_assert(strstr(err, "column clip") && strstr(err, "limits.video_seconds"), "%s", err);
}

/* ---------------------------------------------------------------- motion */

static int s_motion(const char *limits) {
    plan_t *p = s_plan(limits, "/tmp");
    motstage_opts_t o = {.window = 16, .stride = 8, .step = 2};
    motstage_t *st = motstage_new(p, &o);
    proto_msg_t *m = s_file_sample("mlab", "mocap", DATA "motion/01_01_40f.bvh");
    err[0] = 0;
    int rc = motstage_process(st, m, err, sizeof err);
    proto_msg_destroy(&m);
    motstage_destroy(&st);
    plan_destroy(&p);
    return rc;
}

Test(limits, bvh_frames) {
    cr_assert_eq(s_motion(""), 0, "%s", err);
    cr_assert_eq(s_motion("bvh_frames = 40;"), 0, "%s", err);
    cr_assert_eq(s_motion("bvh_frames = 39;"), -1, "a BVH of 40 frames passed 39");
    cr_assert(strstr(err, "column mocap") && strstr(err, "'Frames: 40'") &&
              strstr(err, "limits.bvh_frames 39"), "%s", err);
}

/* ---------------------------------------------------------------- rows (the source) */

/* Rows: 0 good, 1 a 2000-byte caption, 2 an image column naming a 2 MiB file. Under
 * text_bytes = 1000 and message_bytes = 1 MiB rows 1 and 2 are rejected with file:line
 * and column; under the defaults every row passes. */
Test(limits, text_bytes_and_message_bytes_in_the_source) {
    char dir[] = "/tmp/ofa-limits-XXXXXX", path[128];
    cr_assert_not_null(mkdtemp(dir));
    size_t jl;
    char *jpg = util_read_file(DATA "fruits_161x97.jpg", &jl, err, sizeof err);
    cr_assert_not_null(jpg);
    snprintf(path, sizeof path, "%s/small.jpg", dir);
    FILE *f = fopen(path, "wb");
    fwrite(jpg, 1, jl, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/big.bin", dir);
    f = fopen(path, "wb");
    for (int i = 0; i < 2 << 20; i++)
        fputc(i * 7 & 0xff, f);
    fclose(f);
    free(jpg);
    snprintf(path, sizeof path, "%s/cap.tsv", dir);
    f = fopen(path, "w");
    fprintf(f, "0\tsmall.jpg\ta bowl of fruit\n1\tsmall.jpg\t");
    for (int i = 0; i < 2000; i++)
        fputc('a' + i % 26, f);
    fprintf(f, "\n2\tbig.bin\ta huge value\n");
    fclose(f);
    for (int pass = 0; pass < 2; pass++) {
        plan_t *p = s_plan_of("tasks = ( { name = \"cap\"; instruction = \"[IMAGE:img] what "
                              "does the image describe? -> [TEXT:cap]\"; train = [\"cap.tsv\"]; "
                              "columns = [\"id\", \"img\", \"cap\"]; } );\n",
                              pass ? "text_bytes = 1000; message_bytes = 1048576;" : "", dir);
        source_t *src = source_new(p, err, sizeof err);
        cr_assert_not_null(src, "%s", err);
        int samples = 0, rejects = 0;
        for (proto_msg_t *m; (m = source_next(src)); proto_msg_destroy(&m)) {
            if (proto_msg_kind(m) == PROTO_SAMPLE) {
                samples++;
                continue;
            }
            if (proto_msg_kind(m) != PROTO_REJECT)
                continue;
            rejects++;
            const char *why = proto_msg_get_str(m, "reason");
            int64_t row = proto_msg_get_int(m, "row", -1);
            cr_assert(pass == 1, "rejected under the defaults: %s", why);
            cr_assert(strstr(why, "cap.tsv:"), "no file:line in %s", why);
            if (row == 1)
                cr_assert(strstr(why, "column cap: text of 2000 bytes exceeds "
                                      "limits.text_bytes 1000"), "%s", why);
            else
                cr_assert(row == 2 && strstr(why, "column img: 2097152 bytes exceeds "
                                                  "limits.message_bytes 1048576"),
                          "row %lld: %s", (long long)row, why);
        }
        cr_assert_eq(samples, pass ? 1 : 3);
        cr_assert_eq(rejects, pass ? 2 : 0);
        source_destroy(&src);
        plan_destroy(&p);
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The defaults are what docs/plan.md says, and a limit out of range is a plan error. */
Test(limits, defaults_and_range) {
    plan_t *p = s_plan("", "/tmp");
    cr_assert_eq(p->limits.image_pixels, 64ll << 20);
    cr_assert_eq(p->limits.message_bytes, 256ll << 20);
    cr_assert_float_eq(p->limits.audio_seconds, 600, 1e-9);
    cr_assert_eq(p->limits.bvh_frames, 1000000);
    plan_destroy(&p);
    char text[4096];
    snprintf(text, sizeof text, "%slimits = { image_pixels = 0; message_bytes = 10; "
             "bogus = 1; };\n", s_tasks);
    cr_assert_null(plan_load_string(text, "limits.conf", "/tmp", err, sizeof err));
    cr_assert(strstr(err, "image_pixels") && strstr(err, "message_bytes") &&
              strstr(err, "bogus"), "%s", err);
}
