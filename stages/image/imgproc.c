/* imgproc.c: see imgproc.h.
 *
 * The resampler follows Pillow's libImaging/Resample.c (precompute_coeffs,
 * normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc) so that the two agree
 * bit for bit; the loop order of the vertical pass differs (whole rows at a time, which
 * vectorises) but integer sums do not depend on the order. */
#include "imgproc.h"

#include "resize_simd.h"
#include "util.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>
#include <turbojpeg.h>

#define PRECISION_BITS RS_PRECISION_BITS
#define WCACHE_SLOTS 8

typedef rs_weights_t s_weights_t;

struct img_ctx_t {
    img_opts_t opts;
    tjhandle tj;
    uint8_t *dec;      size_t dec_cap;     /* decoded image (h, w, 3) */
    uint8_t *tmp;      size_t tmp_cap;     /* horizontal pass output */
    uint8_t *fit;      size_t fit_cap;     /* resized image before crop/pad */
    uint8_t *hwc;      size_t hwc_cap;     /* (S, S, 3) for img_process */
    uint8_t *pad;      size_t pad_cap;     /* last source row, readable past its end */
    const rs_kernels_t *kn;                /* resampler inner loops for this CPU */
    png_bytep *rows;   size_t rows_cap;    /* row pointers for libpng */
    s_weights_t wc[WCACHE_SLOTS];
    uint64_t use_clock;
    int last_w, last_h;                    /* img_last_source */
    img_format_t last_format;
};

/* Scratch buffers only ever grow: after the largest image of a data set has gone
 * through, the context allocates nothing more. The old contents are not kept (every
 * user overwrites the whole buffer), so free + malloc beats realloc's copy. */
static void s_grow(void **buf, size_t *cap, size_t need) {
    if (*cap >= need)
        return;
    free(*buf);
    *buf = util_malloc(need);
    *cap = need;
}

/* The defaults bound what one bad row can cost: 64 Mpx is ~200 MB of RGB, far above any
 * photo in OFA's data, and a side of 32768 stops headers that claim absurd widths. */
img_ctx_t *img_ctx_new(const img_opts_t *opts) {
    img_ctx_t *self = util_calloc(1, sizeof *self);
    if (opts)
        self->opts = *opts;
    if (!self->opts.max_pixels)
        self->opts.max_pixels = 64ull << 20;
    if (!self->opts.max_side)
        self->opts.max_side = 32768;
    self->tj = tjInitDecompress();
    if (!self->tj) {
        free(self);
        return NULL;
    }
    rs_level_t max = RS_AVX512;
    if (self->opts.simd == IMG_SIMD_NONE)
        max = RS_SCALAR;
    else if (self->opts.simd == IMG_SIMD_AVX2)
        max = RS_AVX2;
    self->kn = rs_kernels(max);
    return self;
}

const char *img_simd_name(const img_ctx_t *self) {
    return self->kn->name;
}

void img_ctx_destroy(img_ctx_t **self_p) {
    if (!self_p || !*self_p)
        return;
    img_ctx_t *self = *self_p;
    tjDestroy(self->tj);
    free(self->dec);
    free(self->tmp);
    free(self->fit);
    free(self->hwc);
    free(self->pad);
    free(self->rows);
    for (int i = 0; i < WCACHE_SLOTS; i++) {
        free(self->wc[i].bounds);
        free(self->wc[i].kk);
        free(self->wc[i].kh);
        free(self->wc[i].kl);
    }
    free(self);
    *self_p = NULL;
}

img_format_t img_sniff(const uint8_t *data, size_t len) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (data && len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return IMG_FORMAT_JPEG;
    if (data && len >= 8 && memcmp(data, png_sig, 8) == 0)
        return IMG_FORMAT_PNG;
    return IMG_FORMAT_UNKNOWN;
}

const char *img_format_name(img_format_t f) {
    switch (f) {
    case IMG_FORMAT_JPEG: return "JPEG";
    case IMG_FORMAT_PNG: return "PNG";
    default: return "unknown";
    }
}

int img_fit_parse(const char *name, img_fit_t *out) {
    if (!strcmp(name, "resize"))
        *out = IMG_FIT_RESIZE;
    else if (!strcmp(name, "center_crop") || !strcmp(name, "crop"))
        *out = IMG_FIT_CENTER_CROP;
    else if (!strcmp(name, "pad"))
        *out = IMG_FIT_PAD;
    else
        return -1;
    return 0;
}

const char *img_fit_name(img_fit_t fit) {
    switch (fit) {
    case IMG_FIT_RESIZE: return "resize";
    case IMG_FIT_CENTER_CROP: return "center_crop";
    case IMG_FIT_PAD: return "pad";
    }
    return "?";
}

/* ---------------------------------------------------------------------------------
 * Header probing */

static uint32_t s_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads the size straight from IHDR so that an oversized PNG is refused before libpng
 * allocates anything for it. */
static int s_png_probe(const uint8_t *data, size_t len, int *w, int *h, char *err,
                       size_t errlen) {
    /* Signature, then the IHDR chunk must come first: length 13, type, w, h. */
    if (len < 8 + 8 + 13 + 4)
        return util_err(err, errlen, "truncated PNG: %zu bytes, no complete IHDR", len);
    if (s_be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
        return util_err(err, errlen, "corrupt PNG: first chunk is not IHDR");
    uint32_t pw = s_be32(data + 16), ph = s_be32(data + 20);
    if (pw == 0 || ph == 0)
        return util_err(err, errlen, "corrupt PNG: zero size %ux%u", pw, ph);
    if (pw > 0x7fffffff || ph > 0x7fffffff)
        return util_err(err, errlen, "corrupt PNG: size %ux%u out of range", pw, ph);
    *w = (int)pw;
    *h = (int)ph;
    return 0;
}

static int s_jpeg_probe(tjhandle tj, const uint8_t *data, size_t len, int *w, int *h,
                        int *subsamp, int *cs, char *err, size_t errlen) {
    if (len > 0xffffffffUL)
        return util_err(err, errlen, "JPEG of %zu bytes is too large", len);
    if (tjDecompressHeader3(tj, data, (unsigned long)len, w, h, subsamp, cs) != 0)
        return util_err(err, errlen, "corrupt JPEG header: %s", tjGetErrorStr2(tj));
    if (*w <= 0 || *h <= 0)
        return util_err(err, errlen, "corrupt JPEG: zero size %dx%d", *w, *h);
    return 0;
}

static int s_probe(tjhandle tj, const uint8_t *data, size_t len, int *w, int *h,
                   img_format_t *format, char *err, size_t errlen) {
    if (!data || len == 0)
        return util_err(err, errlen, "empty image (0 bytes)");
    img_format_t f = img_sniff(data, len);
    if (format)
        *format = f;
    if (f == IMG_FORMAT_PNG)
        return s_png_probe(data, len, w, h, err, errlen);
    if (f == IMG_FORMAT_JPEG) {
        int ss, cs;
        return s_jpeg_probe(tj, data, len, w, h, &ss, &cs, err, errlen);
    }
    return util_err(err, errlen,
                    "not a JPEG or PNG image (%zu bytes, first bytes %02x %02x %02x %02x)",
                    len, data[0], len > 1 ? data[1] : 0, len > 2 ? data[2] : 0,
                    len > 3 ? data[3] : 0);
}

int img_probe(const uint8_t *data, size_t len, int *w, int *h, img_format_t *format,
              char *err, size_t errlen) {
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return util_err(err, errlen, "cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
    int rc = s_probe(tj, data, len, w, h, format, err, errlen);
    tjDestroy(tj);
    return rc;
}

/* The pixel limit is checked on the size in the file, before decoding: a decompression
 * bomb (a tiny file declaring a huge image) costs a header read, not the memory. */
static int s_check_size(const img_ctx_t *self, int w, int h, const char *fmt, char *err,
                        size_t errlen) {
    if (w > self->opts.max_side || h > self->opts.max_side ||
        (uint64_t)w * (uint64_t)h > self->opts.max_pixels)
        return util_err(err, errlen,
                        "%s of %dx%d exceeds the limit (limits.image_pixels %llu, %d per side)",
                        fmt, w,
                        h, (unsigned long long)self->opts.max_pixels, self->opts.max_side);
    return 0;
}

/* ---------------------------------------------------------------------------------
 * JPEG */

/* Picks the DCT scaling factor: the smallest one (<= 1/2) whose output is still at least
 * twice (min_w, min_h). Twice rather than once because DCT scaling is a crude box-like
 * filter: leaving a 2x margin lets the bicubic pass do the final antialiasing, which
 * keeps the result within ~1 dB of PIL's full-size decode while still cutting most of
 * the IDCT work for big photos. */
static tjscalingfactor s_pick_scale(int w, int h, int min_w, int min_h) {
    tjscalingfactor one = {1, 1};
    if (min_w <= 0 || min_h <= 0 || min_w * 2 > w || min_h * 2 > h)
        return one;
    int n = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&n);
    tjscalingfactor best = one;
    double best_v = 1.0;
    for (int i = 0; sf && i < n; i++) {
        double v = (double)sf[i].num / sf[i].denom;
        if (v > 0.5 || v >= best_v)
            continue;
        if (TJSCALED(w, sf[i]) >= 2 * min_w && TJSCALED(h, sf[i]) >= 2 * min_h) {
            best = sf[i];
            best_v = v;
        }
    }
    return best;
}

/* After a fatal error (a bad Huffman table, say) libjpeg-turbo's handle can stay in a
 * state where every later image fails the same way: start a fresh one, so that one bad
 * file costs only itself. */
static void s_tj_reset(img_ctx_t *self) {
    tjhandle fresh = tjInitDecompress();
    if (fresh) {
        tjDestroy(self->tj);
        self->tj = fresh;
    }
}

static int s_decode_jpeg(img_ctx_t *self, const uint8_t *data, size_t len, int min_w,
                         int min_h, img_view_t *out, char *err, size_t errlen) {
    int w, h, ss, cs;
    if (s_jpeg_probe(self->tj, data, len, &w, &h, &ss, &cs, err, errlen) != 0) {
        s_tj_reset(self);
        return -1;
    }
    if (s_check_size(self, w, h, "JPEG", err, errlen) != 0)
        return -1;
    if (cs == TJCS_CMYK || cs == TJCS_YCCK)
        return util_err(err, errlen, "unsupported JPEG: CMYK/YCCK colour space");
    tjscalingfactor sf = {1, 1};
    if (!self->opts.no_dct_scaling)
        sf = s_pick_scale(w, h, min_w, min_h);
    int dw = TJSCALED(w, sf), dh = TJSCALED(h, sf);
    s_grow((void **)&self->dec, &self->dec_cap, (size_t)dw * dh * 3);
    if (tjDecompress2(self->tj, data, (unsigned long)len, self->dec, dw, 0, dh, TJPF_RGB,
                      0) != 0) {
        /* Warnings come back as -1 too. A truncated file ("Premature end of JPEG file")
         * decodes to grey below the cut: reject it, as PIL does. Other warnings
         * (extraneous bytes before a marker, common in scraped data) leave a complete
         * image and are accepted. */
        const char *msg = tjGetErrorStr2(self->tj);
        if (tjGetErrorCode(self->tj) != TJERR_WARNING || strstr(msg, "Premature end")) {
            util_err(err, errlen, "corrupt or truncated JPEG: %s", msg);
            s_tj_reset(self);
            return -1;
        }
    }
    out->px = self->dec;
    out->w = dw;
    out->h = dh;
    out->src_w = w;
    out->src_h = h;
    out->format = IMG_FORMAT_JPEG;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * PNG (libpng's classic API: its simplified API converts 16-bit data as linear light,
 * which PIL does not) */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
    char msg[200];
} s_png_src_t;

/* libpng reads through this callback; running past the end of the buffer is a
 * truncated file, reported as such rather than as libpng's generic read error. */
static void s_png_read(png_structp png, png_bytep out, png_size_t n) {
    s_png_src_t *src = png_get_io_ptr(png);
    if (n > src->len - src->pos) {
        snprintf(src->msg, sizeof src->msg, "truncated PNG (%zu bytes)", src->len);
        png_longjmp(png, 1);
    }
    memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

/* libpng must not return from its error handler: keep the message and jump back to the
 * setjmp in s_decode_png, which frees the read structs and reports it. */
static void s_png_error(png_structp png, png_const_charp msg) {
    s_png_src_t *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "corrupt PNG: %s", msg);
    png_longjmp(png, 1);
}

static void s_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;  /* ancillary-chunk problems: the pixels are still good */
}

static int s_decode_png(img_ctx_t *self, const uint8_t *data, size_t len, img_view_t *out,
                        char *err, size_t errlen) {
    int w0, h0;
    if (s_png_probe(data, len, &w0, &h0, err, errlen) != 0)
        return -1;
    if (s_check_size(self, w0, h0, "PNG", err, errlen) != 0)
        return -1;
    s_png_src_t src = {.data = data, .len = len, .pos = 0, .msg = ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, s_png_error,
                                             s_png_warning);
    if (!png)
        return util_err(err, errlen, "cannot start libpng");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return util_err(err, errlen, "cannot start libpng");
    }
    /* Everything the longjmp may skip over lives in self or src, not in locals. */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return util_err(err, errlen, "%s", src.msg[0] ? src.msg : "corrupt PNG");
    }
    png_set_user_limits(png, (png_uint_32)self->opts.max_side,
                        (png_uint_32)self->opts.max_side);
    png_set_read_fn(png, &src, s_png_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ct = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (depth == 16)
        png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    /* Alpha is dropped, never composited. Palette expansion also turns a tRNS chunk
     * into an alpha channel, which is dropped the same way. */
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected row size after conversion to RGB");
    s_grow((void **)&self->dec, &self->dec_cap, (size_t)w * h * 3);
    s_grow((void **)&self->rows, &self->rows_cap, (size_t)h * sizeof(png_bytep));
    for (png_uint_32 y = 0; y < h; y++)
        self->rows[y] = self->dec + (size_t)y * w * 3;
    png_read_image(png, self->rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->px = self->dec;
    out->w = out->src_w = (int)w;
    out->h = out->src_h = (int)h;
    out->format = IMG_FORMAT_PNG;
    return 0;
}

void img_last_source(const img_ctx_t *self, int *w, int *h, img_format_t *format) {
    if (w)
        *w = self->last_w;
    if (h)
        *h = self->last_h;
    if (format)
        *format = self->last_format;
}

int img_decode(img_ctx_t *self, const uint8_t *data, size_t len, int min_w, int min_h,
               img_view_t *out, char *err, size_t errlen) {
    if (!data || len == 0)
        return util_err(err, errlen, "empty image (0 bytes)");
    img_format_t f = img_sniff(data, len);
    int rc = -1;
    if (f == IMG_FORMAT_JPEG)
        rc = s_decode_jpeg(self, data, len, min_w, min_h, out, err, errlen);
    else if (f == IMG_FORMAT_PNG)
        rc = s_decode_png(self, data, len, out, err, errlen);
    if (rc == 0) {
        self->last_w = out->src_w;
        self->last_h = out->src_h;
        self->last_format = f;
    }
    switch (f) {
    case IMG_FORMAT_JPEG:
    case IMG_FORMAT_PNG:
        return rc;
    default:
        return util_err(err, errlen,
                        "not a JPEG or PNG image (%zu bytes, first bytes %02x %02x %02x %02x)",
                        len, data[0], len > 1 ? data[1] : 0, len > 2 ? data[2] : 0,
                        len > 3 ? data[3] : 0);
    }
}

/* ---------------------------------------------------------------------------------
 * Resampling (Pillow's bicubic, a = -0.5, support 2) */

static double s_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* The vector kernels' copy of the weights: each 22-bit k as kh * 256 + kl with
 * 0 <= kl < 256 (so kh is k >> 8 rounded down), both as int16, two taps per int32 in the
 * order pmaddwd pairs them. Bicubic weights are at most about 1.0, so kh stays near
 * 2^14; a table whose kh would not fit is marked and resampled by the plain C loops. */
static void s_weights_split(s_weights_t *wt) {
    /* Rounded up to whole groups of four pairs (zero weights), which the AVX-512 kernel
     * loads 128 bits at a time. */
    int np = ((wt->ksize + 1) / 2 + 3) & ~3;
    wt->npairs = np;
    wt->kh = util_malloc((size_t)wt->out_size * np * sizeof(int32_t));
    wt->kl = util_malloc((size_t)wt->out_size * np * sizeof(int32_t));
    wt->split_ok = 1;
    for (int xx = 0; xx < wt->out_size; xx++) {
        const int32_t *k = wt->kk + (size_t)xx * wt->ksize;
        for (int j = 0; j < np; j++) {
            uint32_t h[2] = {0, 0}, l[2] = {0, 0};
            for (int t = 0; t < 2 && 2 * j + t < wt->ksize; t++) {
                int32_t kv = k[2 * j + t], lo = kv & 255, hi = (kv - lo) / 256;
                if (hi < INT16_MIN || hi > INT16_MAX)
                    wt->split_ok = 0;
                h[t] = (uint16_t)hi;
                l[t] = (uint16_t)lo;
            }
            wt->kh[(size_t)xx * np + j] = (int32_t)(h[0] | h[1] << 16);
            wt->kl[(size_t)xx * np + j] = (int32_t)(l[0] | l[1] << 16);
        }
    }
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc, line for line. On a downscale the
 * kernel is stretched by the scale (support 2*scale) so that every input pixel
 * contributes: this is the antialiasing that distinguishes PIL (and OFA's inputs) from
 * a plain bicubic sampler. Weights are normalised to sum to 1 in double, then rounded
 * half away from zero to 22-bit fixed point; the rounding is part of what makes the
 * results bit-identical. */
static void s_weights_build(s_weights_t *wt, int in_size, int out_size) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    free(wt->bounds);
    free(wt->kk);
    free(wt->kh);
    free(wt->kl);
    wt->bounds = util_malloc((size_t)out_size * 2 * sizeof(int));
    wt->kk = util_calloc((size_t)out_size * ksize, sizeof(int32_t));
    double *pre = util_malloc((size_t)ksize * sizeof(double));
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            pre[x] = s_bicubic((x + xmin - center + 0.5) * ss);
            ww += pre[x];
        }
        int32_t *k = wt->kk + (size_t)xx * ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? pre[x] / ww : pre[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        wt->bounds[xx * 2] = xmin;
        wt->bounds[xx * 2 + 1] = xmax;
    }
    free(pre);
    wt->in_size = in_size;
    wt->out_size = out_size;
    wt->ksize = ksize;
    s_weights_split(wt);
}

/* Weight table for one axis, from the cache or built into its least recently used slot. */
static const s_weights_t *s_weights(img_ctx_t *self, int in_size, int out_size) {
    s_weights_t *victim = &self->wc[0];
    for (int i = 0; i < WCACHE_SLOTS; i++) {
        s_weights_t *wt = &self->wc[i];
        if (wt->in_size == in_size && wt->out_size == out_size) {
            wt->last_use = ++self->use_clock;
            return wt;
        }
        if (wt->last_use < victim->last_use)
            victim = wt;
    }
    s_weights_build(victim, in_size, out_size);
    victim->last_use = ++self->use_clock;
    return victim;
}

/* Rows [y0, y0+rows) of src (., sw, 3) resampled horizontally into dst (rows, dw, 3).
 * The kernels read a few bytes past the end of a row, which is the next row's start
 * except for the last row: that one goes through a padded copy, since src may be the
 * caller's buffer with nothing after it. Rows shorter than that overrun (under 11
 * pixels) go through the plain C kernels, which read nothing past a row. */
static void s_horizontal(img_ctx_t *self, const uint8_t *src, int sw, int y0, int rows,
                         uint8_t *dst, int dw, const s_weights_t *wt) {
    size_t sl = (size_t)sw * 3, dl = (size_t)dw * 3;
    const rs_kernels_t *kn = wt->split_ok && sl >= 32 ? self->kn : &rs_scalar;
    const uint8_t *in = src + (size_t)y0 * sl;
    int y = 0;
    for (; y + 2 < rows; y += 2)
        kn->horiz(in + y * sl, in + (y + 1) * sl, dst + y * dl, dst + (y + 1) * dl, dw, wt);
    s_grow((void **)&self->pad, &self->pad_cap, sl + 64);
    memcpy(self->pad, in + (size_t)(rows - 1) * sl, sl);
    memset(self->pad + sl, 0, 64);
    if (rows - y == 2)
        kn->horiz(in + y * sl, self->pad, dst + y * dl, dst + (y + 1) * dl, dw, wt);
    else
        kn->horiz(self->pad, self->pad, dst + y * dl, dst + y * dl, dw, wt);
}

/* src (., w, 3) -> dst (dh, w, 3) vertically; wt's bounds are shifted by -y0. */
static void s_vertical(img_ctx_t *self, const uint8_t *src, int w, int y0, uint8_t *dst,
                       int dh, const s_weights_t *wt) {
    size_t rowlen = (size_t)w * 3;
    for (int yy = 0; yy < dh; yy++) {
        int ymin = wt->bounds[yy * 2] - y0, n = wt->bounds[yy * 2 + 1];
        self->kn->vert(src + (size_t)ymin * rowlen, rowlen, n, wt->kk + (size_t)yy * wt->ksize,
                       rowlen, dst + (size_t)yy * rowlen);
    }
}

/* As Pillow: a pass is skipped when its size does not change, and the horizontal pass
 * comes first, into an 8-bit intermediate holding only the rows the vertical pass reads.
 * Keeping that 8-bit rounding between the passes is needed to match PIL exactly. */
void img_resize(img_ctx_t *self, const uint8_t *src, int sw, int sh, uint8_t *dst, int dw,
                int dh) {
    OFA_ASSERT(sw > 0 && sh > 0 && dw > 0 && dh > 0);
    bool need_h = dw != sw, need_v = dh != sh;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)sw * sh * 3);
        return;
    }
    if (!need_v) {
        s_horizontal(self, src, sw, 0, sh, dst, dw, s_weights(self, sw, dw));
        return;
    }
    const s_weights_t *wv = s_weights(self, sh, dh);
    if (!need_h) {
        s_vertical(self, src, sw, 0, dst, dh, wv);
        return;
    }
    const s_weights_t *wh = s_weights(self, sw, dw);
    /* wv stays valid: building wh replaces the least recently used slot, and wv was
     * used last. */
    int y_first = wv->bounds[0];
    int y_last = wv->bounds[dh * 2 - 2] + wv->bounds[dh * 2 - 1];
    s_grow((void **)&self->tmp, &self->tmp_cap, (size_t)dw * (y_last - y_first) * 3);
    s_horizontal(self, src, sw, y_first, y_last - y_first, self->tmp, dw, wh);
    s_vertical(self, self->tmp, dw, y_first, dst, dh, wv);
}

void img_fit_size(img_fit_t fit, int sw, int sh, int S, int *rw, int *rh) {
    if (fit == IMG_FIT_RESIZE) {
        *rw = *rh = S;
        return;
    }
    bool wide = sw >= sh;
    int s_short = wide ? sh : sw, s_long = wide ? sw : sh, r_short, r_long;
    if (fit == IMG_FIT_CENTER_CROP) {
        /* torchvision's Resize(S): the shorter side becomes S, the longer one is
         * truncated, as int(S * long / short) does. */
        r_short = S;
        r_long = (int)((double)S * s_long / s_short);
        if (r_long < S)
            r_long = S;
    } else {
        r_long = S;
        r_short = (int)((double)S * s_short / s_long);
        if (r_short < 1)
            r_short = 1;
    }
    *rw = wide ? r_long : r_short;
    *rh = wide ? r_short : r_long;
}

/* img_fit with the resample size given: img_process computes it from the size in the
 * file, which may differ from a DCT-scaled decode's size by rounding. */
static void s_fit_sized(img_ctx_t *self, const uint8_t *src, int sw, int sh, img_fit_t fit,
                        int S, int rw, int rh, uint8_t *dst) {
    if (fit == IMG_FIT_RESIZE) {
        img_resize(self, src, sw, sh, dst, S, S);
        return;
    }
    s_grow((void **)&self->fit, &self->fit_cap, (size_t)rw * rh * 3);
    img_resize(self, src, sw, sh, self->fit, rw, rh);
    if (fit == IMG_FIT_CENTER_CROP) {
        /* torchvision's CenterCrop: int(round((h - S) / 2)), Python's round-half-even. */
        int top = (int)nearbyint((rh - S) / 2.0), left = (int)nearbyint((rw - S) / 2.0);
        for (int y = 0; y < S; y++)
            memcpy(dst + (size_t)y * S * 3, self->fit + ((size_t)(top + y) * rw + left) * 3,
                   (size_t)S * 3);
    } else {
        int top = (S - rh) / 2, left = (S - rw) / 2;
        memset(dst, 0, (size_t)S * S * 3);
        for (int y = 0; y < rh; y++)
            memcpy(dst + ((size_t)(top + y) * S + left) * 3, self->fit + (size_t)y * rw * 3,
                   (size_t)rw * 3);
    }
}

void img_fit(img_ctx_t *self, const uint8_t *src, int sw, int sh, img_fit_t fit, int S,
             uint8_t *dst) {
    int rw, rh;
    img_fit_size(fit, sw, sh, S, &rw, &rh);
    s_fit_sized(self, src, sw, sh, fit, S, rw, rh, dst);
}

/* Each patch row is P*3 contiguous bytes in both layouts, so a patch is P memcpy's. */
void img_patchify(const uint8_t *hwc, int H, int W, int P, uint8_t *out) {
    OFA_ASSERT(P > 0 && H % P == 0 && W % P == 0);
    int gw = W / P, gh = H / P;
    size_t rowlen = (size_t)P * 3;
    for (int py = 0; py < gh; py++)
        for (int px = 0; px < gw; px++) {
            uint8_t *o = out + ((size_t)py * gw + px) * P * rowlen;
            for (int y = 0; y < P; y++)
                memcpy(o + y * rowlen, hwc + ((size_t)(py * P + y) * W + px * P) * 3, rowlen);
        }
}

/* The header is read first so that the DCT scale can be chosen from the size the fit
 * will resample to (for center_crop and pad that is not S x S). */
int img_process(img_ctx_t *self, const uint8_t *data, size_t len, img_fit_t fit, int S,
                int P, uint8_t *patches, int *grid, uint8_t *hwc_out, char *err,
                size_t errlen) {
    OFA_ASSERT(S > 0 && P > 0 && S % P == 0);
    int w, h;
    img_format_t f = IMG_FORMAT_UNKNOWN;
    if (s_probe(self->tj, data, len, &w, &h, &f, err, errlen) != 0) {
        s_tj_reset(self);
        return -1;
    }
    /* The limits before the fit's arithmetic: a forged header's side (PNG allows 2^31-1)
     * would overflow the resample size, which img_decode would only refuse afterwards. */
    if (s_check_size(self, w, h, img_format_name(f), err, errlen) != 0)
        return -1;
    int rw, rh;
    img_fit_size(fit, w, h, S, &rw, &rh);
    img_view_t v;
    if (img_decode(self, data, len, rw, rh, &v, err, errlen) != 0)
        return -1;
    uint8_t *hwc = hwc_out;
    if (!hwc) {
        s_grow((void **)&self->hwc, &self->hwc_cap, (size_t)S * S * 3);
        hwc = self->hwc;
    }
    s_fit_sized(self, v.px, v.w, v.h, fit, S, rw, rh, hwc);
    img_patchify(hwc, S, S, P, patches);
    if (grid)
        *grid = S / P;
    return 0;
}
