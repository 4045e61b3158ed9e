/* fuzz_image.c: fuzz target for the image tier's decoder (img_process: JPEG through
 * libjpeg-turbo, PNG through libpng, then the fit, the resampler and the patches) on
 * arbitrary bytes. The input is the file; its length picks the fit (resize, center crop,
 * pad), so every seed reaches each fit as it grows or shrinks. Output: 32 x 32, patch 16.
 *
 * The context caps sources at 1 Mpx (the default 64 Mpx would make a forged header cost
 * a fuzzer second per input; the bound itself is what is checked, not its size).
 *
 * Properties checked beyond "no crash":
 *  - a refusal has a non-empty reason;
 *  - a success gives a 2 x 2 grid and a source of positive size within the cap, which
 *    img_probe reads the same from the header, in the format img_sniff names;
 *  - after any refusal the same context still decodes a known-good JPEG (made here with
 *    TurboJPEG's encoder) to the very patches it gave at start-up: a corrupt file must not
 *    leave the decoder broken (libjpeg-turbo 2.1's handles stay failed after a fatal
 *    error unless they are recreated).
 * Any failure aborts, which the fuzzer reports. */
#include "imgproc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { S = 32, P = 16, NPATCH = (S / P) * (S / P), MAX_PX = 1 << 20 };

static img_ctx_t *s_ctx;
static uint8_t *s_good;        /* a valid 40 x 24 JPEG */
static unsigned long s_good_len;
static uint8_t s_good_patches[NPATCH * P * P * 3];

static void s_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_image: %s: %s\n", what, detail ? detail : "");
    abort();
}

static void s_init(void) {
    img_opts_t o = {.max_pixels = MAX_PX};
    s_ctx = img_ctx_new(&o);
    if (!s_ctx)
        s_fail("img_ctx_new", "TurboJPEG did not start");
    enum { W = 40, H = 24 };
    static uint8_t rgb[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + (y * W + x) * 3;
            p[0] = (uint8_t)(x * 6);
            p[1] = (uint8_t)(y * 10);
            p[2] = (uint8_t)((x ^ y) * 8);
        }
    tjhandle tj = tjInitCompress();
    if (!tj || tjCompress2(tj, rgb, W, 0, H, TJPF_RGB, &s_good, &s_good_len, TJSAMP_420,
                           90, 0) != 0)
        s_fail("tjCompress2", tjGetErrorStr());
    tjDestroy(tj);
    char err[256];
    int grid;
    if (img_process(s_ctx, s_good, s_good_len, IMG_FIT_RESIZE, S, P, s_good_patches, &grid,
                    NULL, err, sizeof err) != 0)
        s_fail("the good JPEG does not decode", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_ctx)
        s_init();
    static uint8_t patches[NPATCH * P * P * 3];
    char err[256] = "";
    int grid = 0;
    img_fit_t fit = (img_fit_t)(size % 3);
    if (img_process(s_ctx, data, size, fit, S, P, patches, &grid, NULL, err, sizeof err)
        != 0) {
        if (!err[0])
            s_fail("refused without a reason", NULL);
        char err2[256];
        if (img_process(s_ctx, s_good, s_good_len, IMG_FIT_RESIZE, S, P, patches, &grid,
                        NULL, err2, sizeof err2) != 0)
            s_fail("after a refusal the good JPEG no longer decodes", err2);
        if (memcmp(patches, s_good_patches, sizeof patches) != 0)
            s_fail("after a refusal the good JPEG decodes to other pixels", err);
        return 0;
    }
    if (grid != S / P)
        s_fail("grid", "not S/P");
    int w, h, pw, ph;
    img_format_t f, pf;
    img_last_source(s_ctx, &w, &h, &f);
    if (w < 1 || h < 1 || (uint64_t)w * (uint64_t)h > MAX_PX)
        s_fail("source size", "outside 1 .. the pixel cap");
    if (f == IMG_FORMAT_UNKNOWN || img_sniff(data, size) != f)
        s_fail("format", "not what the magic bytes say");
    if (img_probe(data, size, &pw, &ph, &pf, err, sizeof err) != 0)
        s_fail("img_probe refuses a file img_process decoded", err);
    if (pw != w || ph != h || pf != f)
        s_fail("img_probe", "reads another size than the decoder");
    return 0;
}
