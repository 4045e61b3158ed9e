/* bench_image.c: images/s of the image tier's library on one core, against OFA's
 * PIL + torchvision preprocessing measured in the same run, and PSNR against PIL.
 *
 *   bench_image [--seconds T] [--size S] [IMAGE...]
 *
 * Default images: the 640x480 quality-90 4:2:0 photos of tests/data/images; default
 * S = 384 (OFA's caption transform: direct resize to 384x384). The C side runs
 * decode + resize + patchify (P = 16) into u8 patches; the Python side runs
 * Image.open + convert + Resize((S,S), BICUBIC) + ToTensor + Normalize with one torch
 * thread (bench/bench_image_pil.py, /usr/bin/python3). The model normalises patches
 * itself, so the u8 output is the fair end point for this tier. */
#include "imgproc.h"
#include "util.h"

#include <math.h>
#include <string.h>

#define SRC_DIR OFA_BENCH_SOURCE_DIR

static double s_psnr(const uint8_t *a, const uint8_t *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        se += d * d;
    }
    return se == 0 ? INFINITY : 10 * log10(255.0 * 255.0 * n / se);
}

/* PIL's resize of path to S x S as raw RGB (caller frees), or NULL. */
static uint8_t *s_pil(const char *path, int S) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/data/images/pil_ref.py '%s' resize %d",
             SRC_DIR, path, S);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t n = (size_t)S * S * 3;
    uint8_t *buf = util_malloc(n);
    size_t got = fread(buf, 1, n, p);
    if (pclose(p) != 0 || got != n) {
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    double seconds = 3.0;
    int S = 384, P = 16;
    const char *paths[64];
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            S = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: bench_image [--seconds T] [--size S] [IMAGE...]\n");
            return 0;
        } else if (argv[i][0] == '-')
            util_fatal("run bench_image --help", "unknown flag %s", argv[i]);
        else if (npaths < 64)
            paths[npaths++] = argv[i];
    }
    if (S <= 0 || S % P)
        util_fatal(NULL, "--size must be a positive multiple of %d", P);
    static char defaults[3][512];
    if (!npaths) {
        const char *names[3] = {"squirrel_640.jpg", "fruits_640.jpg", "messi_640.jpg"};
        for (int i = 0; i < 3; i++) {
            snprintf(defaults[i], sizeof defaults[i], "%s/tests/data/images/%s", SRC_DIR,
                     names[i]);
            paths[npaths++] = defaults[i];
        }
    }
    uint8_t *blobs[64];
    size_t lens[64];
    char err[512];
    for (int i = 0; i < npaths; i++) {
        blobs[i] = (uint8_t *)util_read_file(paths[i], &lens[i], err, sizeof err);
        if (!blobs[i])
            util_fatal("check the image paths", "%s", err);
    }
    img_ctx_t *ctx = img_ctx_new(NULL);
    size_t np = (size_t)(S / P) * (S / P);
    uint8_t *patches = util_malloc(np * P * P * 3), *hwc = util_malloc((size_t)S * S * 3);
    int grid;

    /* PSNR against PIL, image by image (the default path, DCT scaling allowed). */
    printf("image                          size     PSNR vs PIL (resize %d)\n", S);
    for (int i = 0; i < npaths; i++) {
        int w = 0, h = 0;
        img_probe(blobs[i], lens[i], &w, &h, NULL, err, sizeof err);
        if (img_process(ctx, blobs[i], lens[i], IMG_FIT_RESIZE, S, P, patches, &grid, hwc, err,
                        sizeof err) != 0)
            util_fatal(NULL, "%s: %s", paths[i], err);
        uint8_t *ref = s_pil(paths[i], S);
        const char *base = strrchr(paths[i], '/');
        if (ref) {
            double p = s_psnr(hwc, ref, (size_t)S * S * 3);
            printf("%-30s %4dx%-4d %s%.2f dB\n", base ? base + 1 : paths[i], w, h,
                   isinf(p) ? "identical, " : "", isinf(p) ? 99.0 : p);
            free(ref);
        } else {
            printf("%-30s %4dx%-4d (PIL reference unavailable)\n", base ? base + 1 : paths[i], w,
                   h);
        }
    }

    /* Throughput: decode + resize + patchify, and the parts alone. */
    for (int i = 0; i < npaths; i++)
        img_process(ctx, blobs[i], lens[i], IMG_FIT_RESIZE, S, P, patches, &grid, NULL, err,
                    sizeof err);
    long n = 0;
    double t0 = util_now(), t;
    while ((t = util_now() - t0) < seconds) {
        int k = (int)(n % npaths);
        if (img_process(ctx, blobs[k], lens[k], IMG_FIT_RESIZE, S, P, patches, &grid, NULL,
                        err, sizeof err) != 0)
            util_fatal(NULL, "%s", err);
        n++;
    }
    double ours = n / t;
    long nd = 0;
    img_view_t v;
    t0 = util_now();
    while ((t = util_now() - t0) < seconds / 3) {
        int k = (int)(nd % npaths);
        img_decode(ctx, blobs[k], lens[k], S, S, &v, err, sizeof err);
        nd++;
    }
    double dec_ms = t / nd * 1e3;
    img_decode(ctx, blobs[0], lens[0], S, S, &v, err, sizeof err);
    int vw = v.w, vh = v.h;
    uint8_t *src = util_malloc((size_t)vw * vh * 3);
    memcpy(src, v.px, (size_t)vw * vh * 3);
    long nr = 0;
    t0 = util_now();
    while ((t = util_now() - t0) < seconds / 3) {
        img_resize(ctx, src, vw, vh, hwc, S, S);
        nr++;
    }
    double rs_ms = t / nr * 1e3;
    free(src);

    /* The same work in PIL + torchvision, in this run. */
    char cmd[8192];
    int o = snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/bench_image_pil.py %g %d",
                     SRC_DIR, seconds, S);
    for (int i = 0; i < npaths && o < (int)sizeof cmd - 600; i++)
        o += snprintf(cmd + o, sizeof cmd - o, " '%s'", paths[i]);
    double theirs = 0;
    char kind[64] = "?";
    FILE *p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%63s %lf", kind, &theirs) != 2)
            theirs = 0;
        pclose(p);
    }
    int w0 = 0, h0 = 0;
    img_probe(blobs[0], lens[0], &w0, &h0, NULL, err, sizeof err);
    printf("\none core, %d images, %dx%d (first) -> %dx%d, P=%d\n", npaths, w0, h0, S, S, P);
    printf("ofaimg decode+resize+patchify: %8.1f images/s  (decode %.2f ms, resize %.2f ms)\n",
           ours, dec_ms, rs_ms);
    if (theirs > 0)
        printf("%-30s %8.1f images/s\nratio ofaimg / %s: %.2fx\n", kind, theirs, kind,
               ours / theirs);
    else
        printf("PIL side failed to run (%s)\n", cmd);
    img_ctx_destroy(&ctx);
    free(patches);
    free(hwc);
    for (int i = 0; i < npaths; i++)
        free(blobs[i]);
    return 0;
}
