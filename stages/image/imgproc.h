/* imgproc.h: image decoding and resizing for the image tier (ofa-image).
 *
 * Turns the bytes of one image column (JPEG or PNG) into the model's input: RGB u8
 * pixels, resized to S x S by one of three fits, cut into P x P patches. The resampler
 * reproduces PIL's Image.resize(BICUBIC) (the filter OFA's torchvision transforms use):
 * same kernel, same support widening on downscale (antialiasing), same 22-bit fixed-point
 * weights, same horizontal-then-vertical order with an 8-bit intermediate, so outputs
 * agree with PIL's to the last bit on the same decoded pixels.
 *
 * Usage: one img_ctx_t per worker thread, reused for every sample. The context owns the
 * TurboJPEG handle, the scratch buffers (grown to the largest image seen, never shrunk)
 * and a small cache of weight tables keyed by (input size, output size), so the steady
 * state allocates nothing per sample.
 *
 *     img_ctx_t *ctx = img_ctx_new(NULL);
 *     int grid;
 *     if (img_process(ctx, bytes, len, IMG_FIT_RESIZE, 384, 16, patches, &grid,
 *                     err, sizeof err) != 0) reject(err);
 *     img_ctx_destroy(&ctx);
 *
 * Colour policy: grayscale becomes R=G=B; PNG palettes are expanded; an alpha channel
 * (RGBA, gray+alpha, palette transparency) is DROPPED, not composited, which is what
 * PIL's convert("RGB") does, so references built with PIL agree. 16-bit PNG samples keep
 * their high byte. CMYK JPEGs are rejected.
 *
 * Errors: every function that reads outside bytes returns 0 on success or -1 with a
 * one-line reason in err (corrupt, truncated, empty, too large, unknown format). Nothing
 * here exits or aborts on bad input. */
#ifndef OFA_IMGPROC_H
#define OFA_IMGPROC_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* How a W x H image becomes S x S. */
typedef enum {
    IMG_FIT_RESIZE = 0,   /* direct resize to S x S, aspect not kept (OFA's caption transform) */
    IMG_FIT_CENTER_CROP,  /* shorter side to S, then the centre S x S (torchvision Resize+CenterCrop) */
    IMG_FIT_PAD,          /* longer side to S, centred on black */
} img_fit_t;

typedef enum { IMG_FORMAT_UNKNOWN = 0, IMG_FORMAT_JPEG, IMG_FORMAT_PNG } img_format_t;

/* Which resampler inner loops a context uses. AUTO (the default) takes the widest the
 * CPU supports; the others cap it (a cap the CPU lacks falls back to the next lower
 * level). All of them give identical bytes: the choice changes only the speed. */
typedef enum {
    IMG_SIMD_AUTO = 0,
    IMG_SIMD_NONE,        /* plain C */
    IMG_SIMD_AVX2,
    IMG_SIMD_AVX512,      /* AVX-512 BW/VL with VNNI */
} img_simd_t;

typedef struct {
    uint64_t max_pixels;  /* reject sources with more pixels than this; 0 = default (64 Mpx) */
    int max_side;         /* reject sources wider or taller than this; 0 = default (32768) */
    bool no_dct_scaling;  /* decode JPEGs at full size even when much larger than needed */
    img_simd_t simd;      /* resampler kernels; IMG_SIMD_AUTO = best available */
} img_opts_t;

typedef struct img_ctx_t img_ctx_t;

/* A decoded image inside the context's buffers: valid until the next call on the ctx. */
typedef struct {
    const uint8_t *px;    /* (h, w, 3) RGB */
    int w, h;
    int src_w, src_h;     /* size in the file (differs from w,h when DCT scaling was used) */
    img_format_t format;
} img_view_t;

/* Returns a new context (opts may be NULL for defaults), or NULL if TurboJPEG cannot
 * start. The caller owns it and frees it with img_ctx_destroy. */
img_ctx_t *img_ctx_new(const img_opts_t *opts);
/* Frees the context; accepts NULL and sets *self_p to NULL. */
void img_ctx_destroy(img_ctx_t **self_p);

/* Name of the resampler kernels ctx runs ("scalar", "avx2", "avx512"); static string. */
const char *img_simd_name(const img_ctx_t *ctx);

/* Format from the magic bytes (JPEG: FF D8 FF; PNG: the 8-byte signature). */
img_format_t img_sniff(const uint8_t *data, size_t len);
const char *img_format_name(img_format_t f);

/* "resize" | "center_crop" (also "crop") | "pad" -> fit; -1 if unknown. */
int img_fit_parse(const char *name, img_fit_t *out);
const char *img_fit_name(img_fit_t fit);

/* Reads only the header: the size stored in the file. 0 or -1 with err. */
int img_probe(const uint8_t *data, size_t len, int *w, int *h, img_format_t *format,
              char *err, size_t errlen);

/* Decodes JPEG or PNG into RGB. min_w/min_h (0 = none) is the smallest size the caller
 * will resample to: when both are at most half the source size, a JPEG is decoded with
 * libjpeg-turbo's DCT scaling at the smallest scale that stays at least twice min_w x
 * min_h (twice, so the bicubic resampler still does the final antialiasing and the
 * result stays within a few dB of PIL's full-size path). out points into ctx. */
int img_decode(img_ctx_t *ctx, const uint8_t *data, size_t len, int min_w, int min_h,
               img_view_t *out, char *err, size_t errlen);

/* PIL-compatible bicubic resize of src (sh, sw, 3) into dst (dh, dw, 3). dst must not
 * overlap src. Sizes must be positive (programmer error otherwise). */
void img_resize(img_ctx_t *ctx, const uint8_t *src, int sw, int sh,
                uint8_t *dst, int dw, int dh);

/* The size the image is resampled to before cropping/padding for a fit (for S x S). */
void img_fit_size(img_fit_t fit, int sw, int sh, int S, int *rw, int *rh);

/* Fits src (sh, sw, 3) into dst (S, S, 3) per fit. */
void img_fit(img_ctx_t *ctx, const uint8_t *src, int sw, int sh, img_fit_t fit, int S,
             uint8_t *dst);

/* Cuts hwc (H, W, 3) into patches out (H/P * W/P, P*P*3): patch-major, patches in
 * row-major order, pixels row-major inside a patch with RGB interleaved. H and W must be
 * multiples of P. */
void img_patchify(const uint8_t *hwc, int H, int W, int P, uint8_t *out);

/* decode + fit + patchify. patches: (S/P * S/P, P*P*3), caller-owned. *grid = S/P
 * (patches per row). S must be a multiple of P. If hwc_out is not NULL it also gets the
 * (S, S, 3) image before patchifying. */
int img_process(img_ctx_t *ctx, const uint8_t *data, size_t len, img_fit_t fit, int S,
                int P, uint8_t *patches, int *grid, uint8_t *hwc_out,
                char *err, size_t errlen);

/* Size in the file (before any scaling) and format of the image the last successful
 * img_decode/img_process on ctx read; zeros before the first. Boxes on a task's
 * target are in these pixels, so the image tier passes them on. */
void img_last_source(const img_ctx_t *ctx, int *w, int *h, img_format_t *format);

#endif
