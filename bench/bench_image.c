/* bench_image.c: images/s of the image tier's library on one core, against OFA's
 * PIL + torchvision preprocessing measured in the same run, and PSNR against PIL.
 *
 *   bench_image [--seconds T] [--size S] [--simd auto|none|avx2|avx512] [IMAGE...]
 *
 * Default images: the 640x480 quality-90 4:2:0 photos of tests/data/images; default
 * S = 384 (OFA's caption transform: direct resize to 384x384). The C side runs
 * decode + resize + patchify (P = 16) into u8 patches; the Python side runs
 * Image.open + convert + Resize((S,S), BICUBIC) + ToTensor + Normalize with one torch
 * thread (bench/bench_image_pil.py, /usr/bin/python3). The model normalises patches
 * itself, so the u8 output is the fair end point for this tier.
 *
 * Rates are per second of CPU time of the measuring thread (and of the Python process),
 * beside the wall-clock ones: the machines are shared, and CPU time keeps the ratio
 * meaningful when other jobs take the cores. The phases (decode, resize, patchify) are
 * timed alone, the resize also with the plain C kernels, and a JPEG decode at
 * libjpeg-turbo's 7/8 DCT scale is timed and checked against PIL, since it is the only
 * scale that keeps a 640x480 photo above 384 on both sides. */
#include "imgproc.h"
#include "util.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#define SRC_DIR OFA_BENCH_SOURCE_DIR

/* CPU seconds of this thread. */
static double s_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

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

/* Runs img_process over the images for `seconds` of CPU time; returns images per CPU
 * second, and per wall second in *wall_rate. */
static double s_rate(img_ctx_t *ctx, uint8_t **blobs, size_t *lens, int npaths, int S, int P,
                     uint8_t *patches, double seconds, double *wall_rate) {
    char err[512];
    int grid;
    long n = 0;
    double c0 = s_cpu(), w0 = util_now(), c;
    while ((c = s_cpu() - c0) < seconds) {
        int k = (int)(n % npaths);
        if (img_process(ctx, blobs[k], lens[k], IMG_FIT_RESIZE, S, P, patches, &grid, NULL, err,
                        sizeof err) != 0)
            util_fatal(NULL, "%s", err);
        n++;
    }
    *wall_rate = n / (util_now() - w0);
    return n / c;
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    double seconds = 3.0;
    int S = 384, P = 16;
    img_opts_t opts = {0};
    const char *paths[64];
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            S = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--simd") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "auto"))
                opts.simd = IMG_SIMD_AUTO;
            else if (!strcmp(v, "none"))
                opts.simd = IMG_SIMD_NONE;
            else if (!strcmp(v, "avx2"))
                opts.simd = IMG_SIMD_AVX2;
            else if (!strcmp(v, "avx512"))
                opts.simd = IMG_SIMD_AVX512;
            else
                util_fatal("--simd takes auto, none, avx2 or avx512", "bad --simd '%s'", v);
        } else if (!strcmp(argv[i], "--help")) {
            printf("usage: bench_image [--seconds T] [--size S] [--simd auto|none|avx2|avx512] "
                   "[IMAGE...]\n");
            return 0;
        } else if (argv[i][0] == '-')
            util_fatal("run bench_image --help", "unknown flag %s", argv[i]);
        else if (npaths < 64)
            paths[npaths++] = argv[i];
    }
    if (S <= 0 || S % P || seconds <= 0)
        util_fatal(NULL, "--size must be a positive multiple of %d, --seconds positive", P);
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
    img_ctx_t *ctx = img_ctx_new(&opts);
    img_opts_t copts = {.simd = IMG_SIMD_NONE};
    img_ctx_t *cref = img_ctx_new(&copts);
    if (!ctx || !cref)
        util_fatal(NULL, "cannot start TurboJPEG");
    size_t np = (size_t)(S / P) * (S / P);
    uint8_t *patches = util_malloc(np * P * P * 3), *hwc = util_malloc((size_t)S * S * 3);
    int grid;

    /* PSNR against PIL, image by image (the default path, DCT scaling allowed), and of a
     * 7/8-scaled decode resized from there. */
    tjhandle tj = tjInitDecompress();
    uint8_t *dec78 = NULL;
    size_t dec78_cap = 0;
    double t78 = 0, t11 = 0;
    int n78 = 0;
    printf("image                          size     PSNR vs PIL (resize %d)   7/8 DCT decode + resize\n", S);
    for (int i = 0; i < npaths; i++) {
        int w = 0, h = 0;
        img_probe(blobs[i], lens[i], &w, &h, NULL, err, sizeof err);
        if (img_process(ctx, blobs[i], lens[i], IMG_FIT_RESIZE, S, P, patches, &grid, hwc, err,
                        sizeof err) != 0)
            util_fatal(NULL, "%s: %s", paths[i], err);
        uint8_t *ref = s_pil(paths[i], S);
        const char *base = strrchr(paths[i], '/');
        base = base ? base + 1 : paths[i];
        if (!ref) {
            printf("%-30s %4dx%-4d (PIL reference unavailable)\n", base, w, h);
            continue;
        }
        double p = s_psnr(hwc, ref, (size_t)S * S * 3);
        printf("%-30s %4dx%-4d %s%.2f dB", base, w, h, isinf(p) ? "identical, " : "",
               isinf(p) ? 99.0 : p);
        tjscalingfactor sf = {7, 8};
        int dw = TJSCALED(w, sf), dh = TJSCALED(h, sf);
        if (img_sniff(blobs[i], lens[i]) == IMG_FORMAT_JPEG && dw >= S && dh >= S) {
            if (dec78_cap < (size_t)dw * dh * 3) {
                free(dec78);
                dec78 = util_malloc(dec78_cap = (size_t)dw * dh * 3);
            }
            tjDecompress2(tj, blobs[i], (unsigned long)lens[i], dec78, dw, 0, dh, TJPF_RGB, 0);
            img_resize(ctx, dec78, dw, dh, hwc, S, S);
            double p78 = s_psnr(hwc, ref, (size_t)S * S * 3);
            /* Decode time at 7/8 and at full size, alternated so both see the same load. */
            for (int r = 0; r < 20; r++) {
                double c0 = s_cpu();
                tjDecompress2(tj, blobs[i], (unsigned long)lens[i], dec78, dw, 0, dh, TJPF_RGB,
                              0);
                double c1 = s_cpu();
                img_view_t v;
                img_decode(ctx, blobs[i], lens[i], 0, 0, &v, err, sizeof err);
                t78 += c1 - c0;
                t11 += s_cpu() - c1;
                n78++;
            }
            printf("   %dx%d: %.2f dB", dw, dh, p78);
        }
        printf("\n");
        free(ref);
    }
    tjDestroy(tj);
    free(dec78);

    /* Throughput: decode + resize + patchify, and the parts alone (CPU time). */
    for (int i = 0; i < npaths; i++)
        img_process(ctx, blobs[i], lens[i], IMG_FIT_RESIZE, S, P, patches, &grid, NULL, err,
                    sizeof err);
    double ours_wall, ours = s_rate(ctx, blobs, lens, npaths, S, P, patches, seconds, &ours_wall);
    long nd = 0;
    img_view_t v;
    double c0 = s_cpu(), c;
    while ((c = s_cpu() - c0) < seconds / 4) {
        int k = (int)(nd % npaths);
        img_decode(ctx, blobs[k], lens[k], S, S, &v, err, sizeof err);
        nd++;
    }
    double dec_ms = c / nd * 1e3;
    img_decode(ctx, blobs[0], lens[0], S, S, &v, err, sizeof err);
    int vw = v.w, vh = v.h;
    uint8_t *src = util_malloc((size_t)vw * vh * 3);
    memcpy(src, v.px, (size_t)vw * vh * 3);
    double rs_ms[2];
    img_ctx_t *rctx[2] = {ctx, cref};
    for (int r = 0; r < 2; r++) {
        long nr = 0;
        c0 = s_cpu();
        while ((c = s_cpu() - c0) < seconds / 4) {
            img_resize(rctx[r], src, vw, vh, hwc, S, S);
            nr++;
        }
        rs_ms[r] = c / nr * 1e3;
    }
    long npf = 0;
    c0 = s_cpu();
    while ((c = s_cpu() - c0) < seconds / 8) {
        img_patchify(hwc, S, S, P, patches);
        npf++;
    }
    double pf_ms = c / npf * 1e3;
    free(src);

    /* The same work in PIL + torchvision, in this run. */
    char cmd[8192];
    int o = snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/bench_image_pil.py %g %d",
                     SRC_DIR, seconds, S);
    for (int i = 0; i < npaths && o < (int)sizeof cmd - 600; i++)
        o += snprintf(cmd + o, sizeof cmd - o, " '%s'", paths[i]);
    double theirs_wall = 0, theirs = 0;
    char kind[64] = "?";
    FILE *p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%63s %lf %lf", kind, &theirs_wall, &theirs) != 3)
            theirs = 0;
        pclose(p);
    }
    int w0 = 0, h0 = 0;
    img_probe(blobs[0], lens[0], &w0, &h0, NULL, err, sizeof err);
    printf("\none core, %d images, %dx%d (first) -> %dx%d, P=%d, kernels %s\n", npaths, w0, h0,
           S, S, P, img_simd_name(ctx));
    printf("phases (ms of CPU per image): decode %.3f, resize %.3f (plain C %.3f), patchify "
           "%.3f\n", dec_ms, rs_ms[0], rs_ms[1], pf_ms);
    if (n78)
        printf("JPEG decode at 7/8 DCT scale: %.3f ms vs %.3f ms at full size\n",
               t78 / n78 * 1e3, t11 / n78 * 1e3);
    printf("%-30s %8.1f images/CPU-s %8.1f images/s wall\n", "ofaimg decode+resize+patchify",
           ours, ours_wall);
    if (theirs > 0)
        printf("%-30s %8.1f images/CPU-s %8.1f images/s wall\nratio ofaimg / %s: %.2fx "
               "(CPU time), %.2fx (wall)\n", kind, theirs, theirs_wall, kind, ours / theirs,
               ours_wall / theirs_wall);
    else
        printf("PIL side failed to run (%s)\n", cmd);
    img_ctx_destroy(&ctx);
    img_ctx_destroy(&cref);
    free(patches);
    free(hwc);
    for (int i = 0; i < npaths; i++)
        free(blobs[i]);
    return 0;
}
