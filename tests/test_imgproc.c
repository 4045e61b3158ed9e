/* test_imgproc.c: the image tier's library against PIL on real photos, and its
 * behaviour on broken input (empty, garbage, truncated, bad CRC, oversized, mutated).
 *
 * The PIL references come from tests/data/images/pil_ref.py run by /usr/bin/python3 (the
 * Debian Python with python3-pil); the test fails, rather than skips, when it is
 * missing, because without it nothing here checks the resampler. */
#include <criterion/criterion.h>

#include "imgproc.h"
#include "util.h"

#include <math.h>
#include <string.h>

#define IMG_DIR OFA_SOURCE_DIR "/tests/data/images"

static uint8_t *s_read(const char *name, size_t *len) {
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s", IMG_DIR, name);
    uint8_t *buf = (uint8_t *)util_read_file(path, len, err, sizeof err);
    cr_assert(buf, "%s", err);
    return buf;
}

/* PIL's output for (image, fit, S) as raw RGB; *len = its size. */
static uint8_t *s_pil(const char *name, const char *fit, int S, size_t *len) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/pil_ref.py %s/%s %s %d", IMG_DIR, IMG_DIR,
             name, fit, S);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run %s", cmd);
    size_t cap = 1 << 20, n = 0, got;
    uint8_t *buf = util_malloc(cap);
    while ((got = fread(buf + n, 1, cap - n, p)) > 0) {
        n += got;
        if (n == cap)
            buf = util_realloc(buf, cap *= 2);
    }
    int rc = pclose(p);
    cr_assert(rc == 0 && n > 0, "PIL reference failed (rc %d): %s", rc, cmd);
    *len = n;
    return buf;
}

static double s_psnr(const uint8_t *a, const uint8_t *b, size_t n, int *maxdiff) {
    double se = 0;
    int md = 0;
    for (size_t i = 0; i < n; i++) {
        int d = (int)a[i] - (int)b[i];
        se += (double)d * d;
        if (abs(d) > md)
            md = abs(d);
    }
    if (maxdiff)
        *maxdiff = md;
    double mse = se / n;
    return mse == 0 ? 99.0 : 10 * log10(255.0 * 255.0 / mse);
}

static const char *s_all[] = {"squirrel_640.jpg", "fruits_640.jpg", "messi_640.jpg",
                              "building_868.jpg", "gray_640.jpg",   "logo_rgba.png",
                              "mask_la.png",      "text_palette.png", "shapes_rgb.png"};
#define N_ALL (sizeof s_all / sizeof s_all[0])

TestSuite(imgproc);

Test(imgproc, decode_matches_pil) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    char err[256];
    for (size_t i = 0; i < N_ALL; i++) {
        size_t len, rlen;
        uint8_t *data = s_read(s_all[i], &len);
        img_view_t v;
        cr_assert_eq(img_decode(ctx, data, len, 0, 0, &v, err, sizeof err), 0, "%s: %s",
                     s_all[i], err);
        uint8_t *ref = s_pil(s_all[i], "decode", 0, &rlen);
        cr_assert_eq(rlen, (size_t)v.w * v.h * 3, "%s: size %dx%d vs %zu bytes", s_all[i],
                     v.w, v.h, rlen);
        int md;
        double p = s_psnr(v.px, ref, rlen, &md);
        cr_expect(md == 0, "%s: decoded pixels differ from PIL (max diff %d, %.1f dB)",
                  s_all[i], md, p);
        free(data);
        free(ref);
    }
    img_ctx_destroy(&ctx);
    cr_assert_null(ctx);
}

/* Full decode + fit at full decode size: the resampler itself against PIL's. */
static void s_check_fit(img_ctx_t *ctx, const char *name, img_fit_t fit, int S,
                        double min_psnr, int max_diff) {
    size_t len, rlen;
    char err[256];
    uint8_t *data = s_read(name, &len);
    uint8_t *ref = s_pil(name, img_fit_name(fit), S, &rlen);
    cr_assert_eq(rlen, (size_t)S * S * 3);
    uint8_t *hwc = util_malloc((size_t)S * S * 3);
    uint8_t *patches = util_malloc((size_t)S * S * 3);
    int grid = 0;
    cr_assert_eq(img_process(ctx, data, len, fit, S, 16, patches, &grid, hwc, err,
                             sizeof err), 0, "%s: %s", name, err);
    cr_assert_eq(grid, S / 16);
    int md;
    double p = s_psnr(hwc, ref, rlen, &md);
    cr_log_info("%s %s %d: PSNR %.2f dB, max diff %d", name, img_fit_name(fit), S, p, md);
    cr_expect(p >= min_psnr, "%s %s %d: PSNR %.2f dB < %.1f", name, img_fit_name(fit), S, p,
              min_psnr);
    cr_expect(md <= max_diff, "%s %s %d: max diff %d > %d", name, img_fit_name(fit), S, md,
              max_diff);
    free(data);
    free(ref);
    free(hwc);
    free(patches);
}

Test(imgproc, resize_matches_pil_exactly_without_dct_scaling) {
    img_opts_t o = {.no_dct_scaling = true};
    img_ctx_t *ctx = img_ctx_new(&o);
    for (size_t i = 0; i < N_ALL; i++) {
        s_check_fit(ctx, s_all[i], IMG_FIT_RESIZE, 384, 35.0, 0);
        s_check_fit(ctx, s_all[i], IMG_FIT_RESIZE, 96, 35.0, 0);
        s_check_fit(ctx, s_all[i], IMG_FIT_CENTER_CROP, 224, 35.0, 0);
        s_check_fit(ctx, s_all[i], IMG_FIT_PAD, 128, 35.0, 0);
    }
    img_ctx_destroy(&ctx);
}

/* The default path: DCT-scaled JPEG decode where the target is small; within 35 dB. */
Test(imgproc, dct_scaled_decode_close_to_pil) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    const char *jpegs[] = {"squirrel_640.jpg", "fruits_640.jpg", "messi_640.jpg",
                           "building_868.jpg", "gray_640.jpg"};
    for (size_t i = 0; i < 5; i++) {
        s_check_fit(ctx, jpegs[i], IMG_FIT_RESIZE, 384, 35.0, 255);
        s_check_fit(ctx, jpegs[i], IMG_FIT_RESIZE, 96, 35.0, 255);
        s_check_fit(ctx, jpegs[i], IMG_FIT_RESIZE, 64, 35.0, 255);
        s_check_fit(ctx, jpegs[i], IMG_FIT_CENTER_CROP, 112, 35.0, 255);
    }
    /* It did scale: 868x600 for a 96x96 target decodes at 1/2 (434x300 >= 2*96). */
    size_t len;
    char err[256];
    uint8_t *data = s_read("building_868.jpg", &len);
    img_view_t v;
    cr_assert_eq(img_decode(ctx, data, len, 96, 96, &v, err, sizeof err), 0, "%s", err);
    cr_expect(v.w < 868 && v.w >= 192 && v.h >= 192, "decoded at %dx%d", v.w, v.h);
    cr_expect_eq(v.src_w, 868);
    free(data);
    img_ctx_destroy(&ctx);
}

Test(imgproc, patchify_layout) {
    /* 4x4 image, P=2: pixel (y,x) has value (y*4+x) in R, +100 in G, +200 in B... capped. */
    uint8_t hwc[4 * 4 * 3], out[4 * 2 * 2 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++)
                hwc[(y * 4 + x) * 3 + c] = (uint8_t)(y * 4 + x + 50 * c);
    img_patchify(hwc, 4, 4, 2, out);
    /* Patch 1 is the top-right one: pixels (0,2) (0,3) (1,2) (1,3). */
    const uint8_t *p1 = out + 1 * 12;
    int want[4] = {2, 3, 6, 7};
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 3; c++)
            cr_assert_eq(p1[i * 3 + c], want[i] + 50 * c);
    /* Patch 2 is bottom-left: first pixel (2,0) = 8. */
    cr_assert_eq(out[2 * 12], 8);
}

Test(imgproc, upscale_and_odd_sizes_do_not_crash) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    uint8_t src[3 * 2 * 3] = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140,
                              150, 160, 170};
    uint8_t dst[17 * 5 * 3];
    img_resize(ctx, src, 3, 2, dst, 17, 5);
    img_resize(ctx, src, 3, 2, dst, 1, 1);
    img_resize(ctx, src, 3, 2, dst, 3, 5);
    img_resize(ctx, src, 3, 2, dst, 2, 2);
    /* Constant images stay constant whatever the sizes. */
    uint8_t flat[7 * 9 * 3], out[20 * 3 * 3];
    memset(flat, 77, sizeof flat);
    img_resize(ctx, flat, 7, 9, out, 20, 3);
    for (size_t i = 0; i < sizeof out; i++)
        cr_assert_eq(out[i], 77);
    img_ctx_destroy(&ctx);
}

/* The vector resampler kernels give the same bytes as the plain C ones (which the tests
 * above hold to PIL), on random images and sizes that hit every edge: widths not a
 * multiple of the 4-pixel block, one-pixel rows and columns, up- and downscales in each
 * direction, odd tap counts, and sources whose last row ends the allocation. */
Test(imgproc, simd_kernels_match_scalar) {
    img_opts_t o0 = {.simd = IMG_SIMD_NONE};
    img_ctx_t *ref = img_ctx_new(&o0);
    cr_assert_str_eq(img_simd_name(ref), "scalar");
    img_simd_t levels[] = {IMG_SIMD_AVX2, IMG_SIMD_AVX512, IMG_SIMD_AUTO};
    util_rng_t rng = {1234};
    int sizes[][4] = {{640, 480, 384, 384}, {868, 600, 384, 384}, {5, 7, 3, 2},
                      {1, 1, 9, 4},         {17, 3, 1, 1},        {9, 11, 9, 5},
                      {33, 21, 12, 40},     {301, 2, 77, 2},      {2, 301, 2, 77},
                      {1000, 50, 31, 7},    {64, 64, 64, 63},     {7, 64, 6, 64}};
    for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
        img_opts_t o = {.simd = levels[l]};
        img_ctx_t *ctx = img_ctx_new(&o);
        cr_log_info("kernels for level %d: %s", (int)levels[l], img_simd_name(ctx));
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            int sw = sizes[i][0], sh = sizes[i][1], dw = sizes[i][2], dh = sizes[i][3];
            /* Exactly sized allocations: reading past the end shows up under ASan. */
            uint8_t *src = util_malloc((size_t)sw * sh * 3);
            for (size_t k = 0; k < (size_t)sw * sh * 3; k++)
                src[k] = (uint8_t)(util_rng_next(&rng) >> 24);
            /* Some saturated areas, where ringing overshoots past 0 and 255. */
            for (size_t k = 0; k < (size_t)sw * sh * 3; k += 7)
                src[k] = (k / 7) % 2 ? 255 : 0;
            uint8_t *a = util_malloc((size_t)dw * dh * 3), *b = util_malloc((size_t)dw * dh * 3);
            img_resize(ref, src, sw, sh, a, dw, dh);
            img_resize(ctx, src, sw, sh, b, dw, dh);
            size_t bad = 0;
            for (size_t k = 0; k < (size_t)dw * dh * 3; k++)
                bad += a[k] != b[k];
            cr_expect_eq(bad, 0, "%s %dx%d -> %dx%d: %zu bytes differ from scalar",
                         img_simd_name(ctx), sw, sh, dw, dh, bad);
            free(src);
            free(a);
            free(b);
        }
        img_ctx_destroy(&ctx);
    }
    img_ctx_destroy(&ref);
}

/* ---- broken input ---- */

static void s_expect_reject(img_ctx_t *ctx, const uint8_t *data, size_t len, const char *what,
                            const char *needle) {
    char err[256] = "";
    uint8_t patches[96 * 96 * 3];
    int grid;
    int rc = img_process(ctx, data, len, IMG_FIT_RESIZE, 96, 16, patches, &grid, NULL, err,
                         sizeof err);
    cr_expect_eq(rc, -1, "%s: accepted", what);
    cr_expect(err[0] != 0, "%s: no reason given", what);
    if (needle)
        cr_expect(strstr(err, needle) != NULL, "%s: reason '%s' lacks '%s'", what, err,
                  needle);
}

Test(imgproc, rejects_empty_garbage_truncated) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    s_expect_reject(ctx, NULL, 0, "NULL", "empty");
    s_expect_reject(ctx, (const uint8_t *)"", 0, "empty", "empty");
    const char *garbage = "this is not an image at all, just some text";
    s_expect_reject(ctx, (const uint8_t *)garbage, strlen(garbage), "garbage", "not a JPEG");
    size_t len;
    uint8_t *jpg = s_read("squirrel_640.jpg", &len);
    s_expect_reject(ctx, jpg, 3, "3-byte JPEG", NULL);
    s_expect_reject(ctx, jpg, 100, "JPEG cut in the header", NULL);
    s_expect_reject(ctx, jpg, len / 2, "JPEG cut in half", "truncated");
    s_expect_reject(ctx, jpg, len - 10, "JPEG missing its tail", "truncated");
    /* Garbage after a valid SOI marker. */
    uint8_t fake[64] = {0xff, 0xd8, 0xff};
    for (int i = 3; i < 64; i++)
        fake[i] = (uint8_t)(i * 37);
    s_expect_reject(ctx, fake, sizeof fake, "JPEG magic then garbage", "JPEG");
    free(jpg);

    uint8_t *png = s_read("shapes_rgb.png", &len);
    s_expect_reject(ctx, png, 8, "PNG signature only", "truncated");
    s_expect_reject(ctx, png, 40, "PNG cut after IHDR", NULL);
    s_expect_reject(ctx, png, len / 2, "PNG cut in half", NULL);
    free(png);
    img_ctx_destroy(&ctx);
}

/* One bad JPEG must cost only itself: after a fatal libjpeg-turbo error (a bad Huffman
 * table) the same context decodes good images again. */
Test(imgproc, good_image_after_a_bad_huffman_table) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    size_t blen, glen;
    uint8_t *bad = (uint8_t *)util_read_file(OFA_SOURCE_DIR "/tests/data/fruits_bad_huffman.jpg",
                                             &blen, NULL, 0);
    uint8_t *good = s_read("squirrel_640.jpg", &glen);
    cr_assert(bad && good);
    uint8_t patches[96 * 96 * 3];
    int grid;
    char err[256];
    for (int round = 0; round < 3; round++) {
        s_expect_reject(ctx, bad, blen, "bad Huffman table", "JPEG");
        int rc = img_process(ctx, good, glen, IMG_FIT_RESIZE, 96, 16, patches, &grid, NULL, err,
                             sizeof err);
        cr_assert_eq(rc, 0, "round %d: a good JPEG after a bad one: %s", round, err);
    }
    free(bad);
    free(good);
    img_ctx_destroy(&ctx);
}

static uint32_t s_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

Test(imgproc, rejects_bad_png_crc_and_zero_size) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    size_t len;
    uint8_t *png = s_read("shapes_rgb.png", &len);
    /* Find the first IDAT chunk and flip a byte of its CRC. */
    size_t pos = 8, idat = 0;
    while (pos + 12 <= len) {
        uint32_t n = s_be32(png + pos);
        if (!memcmp(png + pos + 4, "IDAT", 4)) {
            idat = pos;
            break;
        }
        pos += 12 + n;
    }
    cr_assert(idat > 0, "fixture has no IDAT");
    uint8_t *bad = util_malloc(len);
    memcpy(bad, png, len);
    bad[idat + 8 + s_be32(png + idat)] ^= 0x55;
    s_expect_reject(ctx, bad, len, "PNG with bad IDAT CRC", "CRC");
    /* Bad CRC on IHDR (a critical chunk) too. */
    memcpy(bad, png, len);
    bad[8 + 8 + 13] ^= 0x01;
    s_expect_reject(ctx, bad, len, "PNG with bad IHDR CRC", "CRC");
    /* Zero width. */
    memcpy(bad, png, len);
    memset(bad + 16, 0, 4);
    s_expect_reject(ctx, bad, len, "PNG of width 0", "zero size");
    free(bad);
    free(png);
    img_ctx_destroy(&ctx);
}

Test(imgproc, rejects_huge_images_before_decoding) {
    img_opts_t o = {.max_pixels = 100000};
    img_ctx_t *ctx = img_ctx_new(&o);
    size_t len;
    uint8_t *jpg = s_read("squirrel_640.jpg", &len);
    s_expect_reject(ctx, jpg, len, "640x480 JPEG over a 100k-pixel limit", "exceeds");
    free(jpg);
    uint8_t *png = s_read("shapes_rgb.png", &len);
    s_expect_reject(ctx, png, len, "400x300 PNG over a 100k-pixel limit", "exceeds");
    /* A PNG header claiming 1,000,000 x 1,000,000 with the default limits. */
    img_ctx_destroy(&ctx);
    ctx = img_ctx_new(NULL);
    png[16] = 0x00, png[17] = 0x0f, png[18] = 0x42, png[19] = 0x40;
    png[20] = 0x00, png[21] = 0x0f, png[22] = 0x42, png[23] = 0x40;
    s_expect_reject(ctx, png, len, "PNG claiming 10^6 x 10^6", "exceeds");
    free(png);
    img_ctx_destroy(&ctx);
}

/* Found by fuzz_image: a PNG header 1.3 billion pixels wide and 14 high went through the
 * crop and pad fits' size arithmetic (an int overflow, undefined behaviour) before the
 * size limit refused it. The limit now comes first, for every fit. */
Test(imgproc, huge_side_refused_before_the_fit_arithmetic) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    size_t len;
    uint8_t *png = s_read("shapes_rgb.png", &len);
    png[16] = 0x4e, png[17] = 0x00, png[18] = 0x00, png[19] = 0x14;   /* width 1308622868 */
    png[20] = 0x00, png[21] = 0x00, png[22] = 0x00, png[23] = 0x0e;   /* height 14 */
    for (int fit = IMG_FIT_RESIZE; fit <= IMG_FIT_PAD; fit++) {
        char err[256] = "";
        uint8_t patches[32 * 32 * 3];
        int grid;
        cr_expect_eq(img_process(ctx, png, len, (img_fit_t)fit, 32, 16, patches, &grid, NULL,
                                 err, sizeof err), -1, "fit %d: accepted", fit);
        cr_expect(strstr(err, "exceeds") != NULL, "fit %d: reason '%s'", fit, err);
    }
    free(png);
    img_ctx_destroy(&ctx);
}

/* Random byte mutations of real files: any outcome but a crash or a hang is fine, and a
 * reject always carries a reason. */
Test(imgproc, mutated_files_never_crash, .timeout = 60) {
    img_ctx_t *ctx = img_ctx_new(NULL);
    util_rng_t rng = {.s = 42};
    const char *names[] = {"fruits_640.jpg", "text_palette.png", "mask_la.png"};
    uint8_t *patches = util_malloc(96 * 96 * 3);
    for (int f = 0; f < 3; f++) {
        size_t len;
        uint8_t *orig = s_read(names[f], &len);
        uint8_t *buf = util_malloc(len);
        int rejected = 0;
        for (int it = 0; it < 150; it++) {
            memcpy(buf, orig, len);
            int flips = 1 + (int)(util_rng_next(&rng) % 8);
            for (int k = 0; k < flips; k++)
                buf[util_rng_next(&rng) % len] = (uint8_t)util_rng_next(&rng);
            size_t cut = (it % 3 == 0) ? util_rng_next(&rng) % len : len;
            char err[256] = "";
            int grid;
            if (img_process(ctx, buf, cut, IMG_FIT_RESIZE, 96, 16, patches, &grid, NULL, err,
                            sizeof err) != 0) {
                cr_assert(err[0], "reject without a reason");
                rejected++;
            }
        }
        cr_log_info("%s: %d of 150 mutations rejected", names[f], rejected);
        cr_expect(rejected > 0, "%s: no mutation was rejected", names[f]);
        free(buf);
        free(orig);
    }
    free(patches);
    img_ctx_destroy(&ctx);
}

Test(imgproc, fit_names_and_sizes) {
    img_fit_t f;
    cr_assert_eq(img_fit_parse("resize", &f), 0);
    cr_assert_eq(f, IMG_FIT_RESIZE);
    cr_assert_eq(img_fit_parse("center_crop", &f), 0);
    cr_assert_eq(f, IMG_FIT_CENTER_CROP);
    cr_assert_eq(img_fit_parse("pad", &f), 0);
    cr_assert_eq(img_fit_parse("stretch", &f), -1);
    int rw, rh;
    img_fit_size(IMG_FIT_CENTER_CROP, 640, 480, 384, &rw, &rh);
    cr_assert(rw == 512 && rh == 384, "%dx%d", rw, rh);
    img_fit_size(IMG_FIT_PAD, 480, 640, 96, &rw, &rh);
    cr_assert(rw == 72 && rh == 96, "%dx%d", rw, rh);
}

/* The task-level glue: image columns of a real compiled plan and one run on a photo. */
#include "imgtask.h"

Test(imgproc, task_columns_and_run) {
    char err[512];
    taskplan_t *tp = taskplan_compile("[IMAGE:img,image_size=64,patch=8] what does the image "
                                      "describe? -> [TEXT:cap] ||| [IMAGE:img] caption: -> "
                                      "[TEXT:cap]", NULL, err, sizeof err);
    cr_assert(tp, "%s", err);
    img_task_col_t cols[4];
    cr_assert_eq(img_task_columns(tp, IMG_FIT_RESIZE, cols, 4), 1, "img counted once");
    cr_assert_str_eq(cols[0].column, "img");
    cr_assert_eq(cols[0].size, 64);
    cr_assert_eq(cols[0].patch, 8);
    taskplan_destroy(&tp);
    tp = taskplan_compile("[IMAGE:img] which region does the text \" [TEXT:cap] \" describe? -> "
                          "[BOX:region]", NULL, err, sizeof err);
    cr_assert(tp, "%s", err);
    cr_assert_eq(img_task_columns(tp, IMG_FIT_PAD, cols, 4), 1);
    cr_assert_eq(cols[0].size, tp->opts.image_size);
    cr_assert_eq(cols[0].fit, IMG_FIT_PAD);
    img_ctx_t *ctx = img_ctx_new(NULL);
    size_t len;
    uint8_t *data = s_read("building_868.jpg", &len);
    int S = cols[0].size, grid, w, h;
    uint8_t *patches = util_malloc((size_t)S * S * 3);
    cr_assert_eq(img_task_run(ctx, &cols[0], data, len, patches, &grid, &w, &h, err,
                              sizeof err), 0, "%s", err);
    cr_assert_eq(grid, S / cols[0].patch);
    cr_assert(w == 868 && h == 600, "source size %dx%d", w, h);
    cr_assert_eq(img_task_run(ctx, &cols[0], data, 1000, patches, &grid, &w, &h, err,
                              sizeof err), -1);
    cr_assert(strncmp(err, "column img: ", 12) == 0, "%s", err);
    free(patches);
    free(data);
    img_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
}

/* ---- imgstage: the worker's transform on a real message ---- */
#include "imgstage.h"

static const char *s_plan_text =
    "name = \"t\";\n"
    "tasks = (\n"
    "  { name = \"caption\"; instruction = \"[IMAGE:img] what does the image describe? -> "
    "[TEXT:cap]\";\n"
    "    train = [\"x.tsv\"]; format = \"tsv\"; columns = [\"id\", \"img\", \"cap\"]; },\n"
    "  { name = \"qa\"; instruction = \"[IMAGE:photo,image_size=32,patch=8] [TEXT:q] -> "
    "[TEXT:a]\";\n"
    "    train = [\"y.tsv\"]; format = \"tsv\"; columns = [\"id\", \"photo\", \"q\", \"a\"]; }\n"
    ");\n"
    "model = { size = \"nano\"; };\n";

TestSuite(imgstage);

Test(imgstage, replaces_bytes_by_patches_and_rejects_with_column) {
    char err[1024];
    plan_t *plan = plan_load_string(s_plan_text, "test.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    imgstage_t *st = imgstage_new(plan, IMG_FIT_RESIZE, NULL);
    cr_assert(st);
    size_t len;
    uint8_t *jpg = s_read("messi_640.jpg", &len);
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "caption");
    proto_msg_add_id(m, 42);
    proto_msg_set_bin(m, "img", jpg, len);
    proto_msg_set_str(m, "cap", "a man");
    cr_assert_eq(imgstage_process(st, m, err, sizeof err), 0, "%s", err);
    int S = plan->tasks[0].image_size, P = plan->tasks[0].patch;
    const proto_field_t *f = proto_msg_get_tensor(m, "img", PROTO_U8);
    cr_assert(f, "img is not a u8 tensor");
    cr_assert_eq(f->ndim, 2);
    cr_assert_eq(f->shape[0], (S / P) * (S / P));
    cr_assert_eq(f->shape[1], P * P * 3);
    cr_assert_eq(proto_msg_get_int(m, "img.grid", -1), S / P);
    cr_assert_eq(proto_msg_get_int(m, "img.width", -1), 640);
    cr_assert_eq(proto_msg_get_int(m, "img.height", -1), 480);
    cr_assert_str_eq(proto_msg_get_str(m, "cap"), "a man");
    /* Same pixels as the library gives directly. */
    img_ctx_t *ctx = img_ctx_new(NULL);
    uint8_t *want = util_malloc((size_t)S * S * 3);
    int grid;
    cr_assert_eq(img_process(ctx, jpg, len, IMG_FIT_RESIZE, S, P, want, &grid, NULL, err,
                             sizeof err), 0);
    cr_assert(memcmp(f->data, want, (size_t)S * S * 3) == 0);
    proto_msg_destroy(&m);

    /* The second task: its own column name and slot size. */
    m = proto_msg_new(PROTO_SAMPLE, "qa");
    proto_msg_set_bin(m, "photo", jpg, len);
    cr_assert_eq(imgstage_process(st, m, err, sizeof err), 0, "%s", err);
    f = proto_msg_get_tensor(m, "photo", PROTO_U8);
    cr_assert(f && f->shape[0] == 16 && f->shape[1] == 8 * 8 * 3);
    cr_assert_eq(proto_msg_get_int(m, "photo.grid", -1), 4);
    proto_msg_destroy(&m);

    /* Rejects name the column (or the task) and the reason. */
    m = proto_msg_new(PROTO_SAMPLE, "caption");
    proto_msg_set_bin(m, "img", jpg, len / 3);
    cr_assert_eq(imgstage_process(st, m, err, sizeof err), -1);
    cr_assert(strstr(err, "column img: ") == err && strstr(err, "truncated"), "%s", err);
    proto_msg_remove(m, "img");
    cr_assert_eq(imgstage_process(st, m, err, sizeof err), -1);
    cr_assert_str_eq(err, "column img: missing from the sample");
    proto_msg_set_int(m, "img", 3);
    cr_assert_eq(imgstage_process(st, m, err, sizeof err), -1);
    cr_assert(strstr(err, "column img"), "%s", err);
    proto_msg_set_task(m, "nope");
    cr_assert_eq(imgstage_process(st, m, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown task 'nope'"), "%s", err);
    proto_msg_destroy(&m);
    uint64_t ns, ni;
    imgstage_counts(st, &ns, &ni);
    cr_assert(ns == 2 && ni == 2, "%lu %lu", (unsigned long)ns, (unsigned long)ni);
    free(want);
    free(jpg);
    img_ctx_destroy(&ctx);
    imgstage_destroy(&st);
    plan_destroy(&plan);
}
