/* vidproc.c: see vidproc.h. */
#include "vidproc.h"

#include "avmem.h"
#include "imgproc.h"
#include "util.h"

#include <libavcodec/avcodec.h>
#include <libswscale/swscale.h>
#include <string.h>

struct vid_ctx_t {
    vid_opts_t opts;
    struct SwsContext *sws;  /* cached by libswscale for (size, format) -> (S, S, RGB) */
    uint8_t *hwc;            /* (S, S, 3) scratch when the caller wants no frames */
    size_t hwc_cap;
};

vid_ctx_t *vid_ctx_new(const vid_opts_t *opts) {
    vid_ctx_t *self = util_calloc(1, sizeof *self);
    if (opts)
        self->opts = *opts;
    if (self->opts.max_frames <= 0)
        self->opts.max_frames = 100000;
    if (self->opts.max_seconds <= 0)
        self->opts.max_seconds = 3600;
    if (self->opts.max_pixels == 0)
        self->opts.max_pixels = 4096ull * 4096ull;
    return self;
}

void vid_ctx_destroy(vid_ctx_t **self_p) {
    if (!self_p || !*self_p)
        return;
    vid_ctx_t *self = *self_p;
    sws_freeContext(self->sws);
    free(self->hwc);
    free(self);
    *self_p = NULL;
}

void vid_sample_indices(int64_t F, int N, int64_t *index) {
    for (int k = 0; k < N; k++) {
        /* Integer form of floor((k + 0.5) * F / N): no rounding surprises at large F. */
        index[k] = ((2 * (int64_t)k + 1) * F) / (2 * (int64_t)N);
        if (index[k] >= F)
            index[k] = F - 1;
    }
}

/* Pass 1: the number of frames is the number of non-empty packets of the stream (AVI
 * stores dropped frames as empty packets; they decode to nothing). Demuxing without
 * decoding costs a few percent of the decode, and unlike the container's duration or
 * nb_frames (absent in AVI, estimated from the bit rate in some MPEG streams) it is
 * exact, so the sampled indices do not move with the muxer. A second demuxer over the
 * same bytes is opened because seeking back to 0 is not reliable in every format. */
static int s_count_frames(const uint8_t *data, size_t len, int idx, int64_t limit,
                          int64_t *F, char *err, size_t errlen) {
    avmem_t *m = avmem_open(data, len, err, errlen);
    if (!m)
        return -1;
    AVPacket *pkt = av_packet_alloc();
    OFA_ASSERT(pkt);
    int64_t n = 0;
    int rc;
    while ((rc = av_read_frame(avmem_fmt(m), pkt)) >= 0) {
        n += pkt->stream_index == idx && pkt->size > 0;
        av_packet_unref(pkt);
        if (n > limit)
            break;
    }
    av_packet_free(&pkt);
    avmem_close(&m);
    *F = n;
    if (n > limit)
        return util_err(err, errlen, "too many frames: more than %lld (limits.video_frames)",
                        (long long)limit);
    if (n == 0)
        return util_err(err, errlen, "no video frames (zero-length video)");
    return 0;
}

/* Pass 2's state: frames arrive in presentation order, and each one is either
 * skipped (the common case: only N of F frames are kept) or scaled and patchified. */
typedef struct {
    vid_ctx_t *ctx;
    int N, S, P;
    const int64_t *index;
    uint8_t *patches, *frames_out;
    int64_t decoded;         /* frames received so far (presentation order) */
    int next;                /* first sample not yet filled */
} s_pass_t;

/* Scales one decoded frame into every sample slot that wants it. */
static int s_take(s_pass_t *p, AVFrame *f, char *err, size_t errlen) {
    int64_t d = p->decoded++;
    if (p->next >= p->N || p->index[p->next] != d)
        return 0;
    if (f->flags & AV_FRAME_FLAG_CORRUPT || f->decode_error_flags)
        return util_err(err, errlen, "corrupt video stream: frame %lld decodes with errors",
                        (long long)d);
    vid_ctx_t *ctx = p->ctx;
    int S = p->S, P = p->P, Np = (S / P) * (S / P);
    /* Cached: the scaler is rebuilt only when the source size or format changes, which
     * within one worker is rare (one dataset, one camera). */
    ctx->sws = sws_getCachedContext(ctx->sws, f->width, f->height, f->format, S, S,
                                    AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
    if (!ctx->sws)
        return util_err(err, errlen, "cannot convert %dx%d frames of pixel format %d to RGB",
                        f->width, f->height, f->format);
    uint8_t *hwc = p->frames_out ? p->frames_out + (size_t)p->next * S * S * 3 : ctx->hwc;
    uint8_t *dst[4] = {hwc, NULL, NULL, NULL};
    int stride[4] = {S * 3, 0, 0, 0};
    sws_scale(ctx->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride);
    /* A clip shorter than N frames repeats a frame: fill every slot that names it. */
    int first = p->next;
    while (p->next < p->N && p->index[p->next] == d) {
        if (p->frames_out && p->next != first)
            memcpy(p->frames_out + (size_t)p->next * S * S * 3, hwc, (size_t)S * S * 3);
        img_patchify(hwc, S, S, P, p->patches + (size_t)p->next * Np * P * P * 3);
        p->next++;
    }
    return 0;
}

static int s_drain(s_pass_t *p, AVCodecContext *dec, AVFrame *frame, char *err, size_t errlen) {
    char why[200];
    for (;;) {
        int rc = avcodec_receive_frame(dec, frame);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return 0;
        if (rc < 0)
            return util_err(err, errlen, "corrupt video stream: %s",
                            avmem_strerror(rc, why, sizeof why));
        rc = s_take(p, frame, err, errlen);
        av_frame_unref(frame);
        if (rc != 0)
            return rc;
    }
}

int vid_process(vid_ctx_t *ctx, const uint8_t *data, size_t len, int N, int S, int P,
                uint8_t *patches, uint8_t *frames_out, vid_info_t *info, char *err,
                size_t errlen) {
    OFA_ASSERT(N >= 1 && N <= VID_MAX_SAMPLE && P > 0 && S >= P && S % P == 0);
    memset(info, 0, sizeof *info);
    if (!data || len == 0)
        return util_err(err, errlen, "empty video (0 bytes)");
    avmem_t *m = avmem_open(data, len, err, errlen);
    if (!m)
        return -1;
    AVFormatContext *fmt = avmem_fmt(m);
    const AVCodec *codec = NULL;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = NULL;
    AVFrame *frame = NULL;
    char why[200];
    int rc = 0;
    int idx = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (idx < 0) {
        rc = util_err(err, errlen, idx == AVERROR_DECODER_NOT_FOUND
                      ? "no decoder for the video stream" : "no video stream in the %s container",
                      fmt->iformat->name);
        goto done;
    }
    const AVCodecParameters *par = fmt->streams[idx]->codecpar;
    info->w = par->width;
    info->h = par->height;
    info->codec = codec->name;
    info->duration = fmt->duration > 0 ? fmt->duration / (double)AV_TIME_BASE : 0;
    if (par->width <= 0 || par->height <= 0) {
        rc = util_err(err, errlen, "corrupt video stream: frame size %dx%d", par->width,
                      par->height);
        goto done;
    }
    if (info->duration > ctx->opts.max_seconds) {
        rc = util_err(err, errlen, "too long: %.2f s (limits.video_seconds %.2f)",
                      info->duration, ctx->opts.max_seconds);
        goto done;
    }
    if ((uint64_t)par->width * (uint64_t)par->height > ctx->opts.max_pixels) {
        rc = util_err(err, errlen, "frames too large: %dx%d (limit %llu pixels)", par->width,
                      par->height, (unsigned long long)ctx->opts.max_pixels);
        goto done;
    }
    if ((rc = s_count_frames(data, len, idx, ctx->opts.max_frames, &info->frames, err,
                             errlen)) != 0)
        goto done;
    info->n = N;
    info->grid = S / P;
    vid_sample_indices(info->frames, N, info->index);
    if (!frames_out && ctx->hwc_cap < (size_t)S * S * 3) {
        ctx->hwc = util_realloc(ctx->hwc, (size_t)S * S * 3);
        ctx->hwc_cap = (size_t)S * S * 3;
    }

    dec = avcodec_alloc_context3(codec);
    pkt = av_packet_alloc();
    frame = av_frame_alloc();
    OFA_ASSERT(dec && pkt && frame);
    /* One thread: a worker process is one core's worth of work; parallelism comes from
     * running more workers, as for every tier. */
    dec->thread_count = 1;
    if (avcodec_parameters_to_context(dec, par) < 0 || avcodec_open2(dec, codec, NULL) < 0) {
        rc = util_err(err, errlen, "cannot open the %s decoder", codec->name);
        goto done;
    }
    s_pass_t p = {ctx, N, S, P, info->index, patches, frames_out, 0, 0};
    int npkt = 0;
    while ((rc = av_read_frame(fmt, pkt)) >= 0) {
        if (pkt->stream_index != idx || pkt->size == 0) {
            av_packet_unref(pkt);
            continue;
        }
        npkt++;
        rc = avcodec_send_packet(dec, pkt);
        av_packet_unref(pkt);
        if (rc < 0) {
            rc = util_err(err, errlen, "corrupt video stream at packet %d: %s", npkt,
                          avmem_strerror(rc, why, sizeof why));
            goto done;
        }
        if ((rc = s_drain(&p, dec, frame, err, errlen)) != 0)
            goto done;
    }
    if (rc != AVERROR_EOF) {
        rc = util_err(err, errlen, "corrupt container after %d packets: %s", npkt,
                      avmem_strerror(rc, why, sizeof why));
        goto done;
    }
    avcodec_send_packet(dec, NULL);
    if ((rc = s_drain(&p, dec, frame, err, errlen)) != 0)
        goto done;
    /* The first pass counted what the container holds; a stream cut short or damaged
     * decodes to fewer frames. */
    if (p.decoded < info->frames || p.next < N) {
        rc = util_err(err, errlen, "truncated or corrupt video stream: decoded %lld of %lld "
                      "frames", (long long)p.decoded, (long long)info->frames);
        goto done;
    }
    rc = 0;
done:
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avmem_close(&m);
    return rc;
}
