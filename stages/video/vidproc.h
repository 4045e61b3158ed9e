/* vidproc.h: video decoding and frame sampling for the video tier (ofa-video).
 *
 * Turns the bytes of one video column (any container and codec FFmpeg reads: MP4/H.264,
 * AVI/MPEG-4, WebM, ...) into the model's input: N frames sampled uniformly over the
 * clip, each scaled to S x S RGB (direct resize, aspect not kept, as the image tier's
 * default fit; bicubic, libswscale) and cut into P x P patches, frame-major:
 * (N * Np, P*P*3) u8 with Np = (S/P)^2, patches row-major inside a frame, RGB
 * interleaved inside a patch (the image tier's layout, img_patchify).
 *
 * Sampling: the clip's F frames (in presentation order) are split into N equal
 * segments and the middle frame of each is kept: index_k = floor((k + 0.5) * F / N).
 * F is counted by a first pass over the demuxed packets (no decoding), so the choice
 * does not depend on a container's duration estimate; a clip with fewer frames than N
 * repeats frames (indices are then non-decreasing, not distinct).
 *
 * Usage: one vid_ctx_t per worker thread, reused for every sample.
 *
 *     vid_ctx_t *ctx = vid_ctx_new(NULL);
 *     vid_info_t info;
 *     if (vid_process(ctx, bytes, len, 8, 96, 16, patches, &info, err, sizeof err) != 0)
 *         reject(err);
 *     vid_ctx_destroy(&ctx);
 *
 * Errors: 0, or -1 with a one-line reason: empty or unrecognised input, no video stream,
 * no frames, more frames or pixels than the limits, a corrupt or truncated stream
 * (a packet the decoder refuses, a sampled frame flagged corrupt, fewer frames decoded
 * than the container holds). Nothing here exits or aborts on bad input. */
#ifndef OFA_VIDPROC_H
#define OFA_VIDPROC_H

#include <stddef.h>
#include <stdint.h>

#define VID_MAX_SAMPLE 256     /* most frames one clip may be sampled to */

typedef struct {
    int64_t max_frames;        /* refuse clips with more frames; 0 = default 100000 */
    uint64_t max_pixels;       /* refuse frames of more pixels; 0 = default 4096*4096 */
    double max_seconds;        /* refuse clips longer (container's duration); 0 = 3600 */
} vid_opts_t;

typedef struct {
    int w, h;                  /* frame size in the file */
    int64_t frames;            /* F: frames in the clip */
    double duration;           /* seconds, from the container (0 when unknown) */
    int n;                     /* N: frames sampled */
    int64_t index[VID_MAX_SAMPLE];   /* (N) which frames were kept */
    int grid;                  /* S/P: patches per row of a frame */
    const char *codec;         /* static string, FFmpeg's codec name */
} vid_info_t;

typedef struct vid_ctx_t vid_ctx_t;

/* opts may be NULL. The caller owns the result; never NULL. */
vid_ctx_t *vid_ctx_new(const vid_opts_t *opts);
/* Frees the context; accepts NULL and sets *self_p to NULL. */
void vid_ctx_destroy(vid_ctx_t **self_p);

/* The frames vid_process keeps out of F for N (index, (N)). */
void vid_sample_indices(int64_t F, int N, int64_t *index);

/* decode + sample + scale + patchify. patches: (N * (S/P)^2, P*P*3) = N*S*S*3 bytes,
 * caller-owned. S must be a multiple of P, 1 <= N <= VID_MAX_SAMPLE (programmer errors
 * otherwise). If frames_out is not NULL it also gets the N scaled frames (N, S, S, 3). */
int vid_process(vid_ctx_t *ctx, const uint8_t *data, size_t len, int N, int S, int P,
                uint8_t *patches, uint8_t *frames_out, vid_info_t *info, char *err,
                size_t errlen);

#endif
