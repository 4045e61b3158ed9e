/* auddec.c: see auddec.h. */
#include "auddec.h"

#include "avmem.h"
#include "util.h"

#include <libavcodec/avcodec.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#include <math.h>
#include <sndfile.h>
#include <stdbool.h>
#include <string.h>

struct aud_dec_t {
    aud_dec_opts_t opts;
    float *inter;            /* (frames, channels) interleaved decoder output */
    size_t inter_cap;        /* floats */
    float *mono;             /* (n) */
    size_t mono_cap;
    float *res;              /* (n') resampled */
    size_t res_cap;
};

static void s_grow(float **p, size_t *cap, size_t n) {
    if (n <= *cap)
        return;
    size_t c = *cap ? *cap : 4096;
    while (c < n)
        c *= 2;
    *p = util_realloc(*p, c * sizeof(float));
    *cap = c;
}

aud_dec_t *aud_dec_new(const aud_dec_opts_t *opts) {
    aud_dec_t *self = util_calloc(1, sizeof *self);
    if (opts)
        self->opts = *opts;
    if (self->opts.max_seconds <= 0)
        self->opts.max_seconds = 600;
    return self;
}

void aud_dec_destroy(aud_dec_t **self_p) {
    if (!self_p || !*self_p)
        return;
    aud_dec_t *self = *self_p;
    free(self->inter);
    free(self->mono);
    free(self->res);
    free(self);
    *self_p = NULL;
}

/* Averages (n, ch) interleaved samples into self->mono. A plain average, not FFmpeg's
 * downmix matrix (which weights centre and surround channels): it is what
 * torchaudio/soundfile users do with x.mean(axis=1), so features stay comparable, and
 * it cannot clip. */
static void s_mix(aud_dec_t *self, const float *in, int64_t n, int ch) {
    s_grow(&self->mono, &self->mono_cap, (size_t)n);
    if (ch == 1) {
        memcpy(self->mono, in, (size_t)n * sizeof(float));
        return;
    }
    float inv = 1.0f / (float)ch;
    for (int64_t i = 0; i < n; i++) {
        float s = 0;
        for (int c = 0; c < ch; c++)
            s += in[i * ch + c];
        self->mono[i] = s * inv;
    }
}

/* The limits every path applies before it spends memory: a header may claim anything.
 * frames < 0 means the length is not known yet (it is checked again while decoding). */
static int s_check_format(const aud_dec_t *self, int rate, int ch, int64_t frames,
                          char *err, size_t errlen) {
    if (rate < AUD_MIN_RATE || rate > AUD_MAX_RATE)
        return util_err(err, errlen, "impossible sample rate %d Hz (allowed %d..%d)", rate,
                        AUD_MIN_RATE, AUD_MAX_RATE);
    if (ch < 1 || ch > AUD_MAX_CHANNELS)
        return util_err(err, errlen, "impossible channel count %d (allowed 1..%d)", ch,
                        AUD_MAX_CHANNELS);
    if (frames >= 0 && (double)frames > self->opts.max_seconds * rate)
        return util_err(err, errlen, "too long: %.2f s (limits.audio_seconds %.2f)",
                        (double)frames / rate, self->opts.max_seconds);
    return 0;
}

/* ---- libsndfile: WAV, FLAC, Ogg ------------------------------------------------ */

/* libsndfile's virtual I/O over the column's bytes: read-only, seekable (WAV and FLAC
 * readers seek to their chunks and seek tables). */
typedef struct {
    const uint8_t *p;
    sf_count_t len, pos;
} s_vmem_t;

static sf_count_t s_vlen(void *u) { return ((s_vmem_t *)u)->len; }
static sf_count_t s_vtell(void *u) { return ((s_vmem_t *)u)->pos; }
static sf_count_t s_vseek(sf_count_t off, int whence, void *u) {
    s_vmem_t *m = u;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->len;
    sf_count_t p = base + off;
    if (p < 0 || p > m->len)
        return -1;
    return m->pos = p;
}
static sf_count_t s_vread(void *ptr, sf_count_t n, void *u) {
    s_vmem_t *m = u;
    sf_count_t left = m->len - m->pos;
    if (n > left)
        n = left;
    if (n > 0)
        memcpy(ptr, m->p + m->pos, (size_t)n);
    m->pos += n;
    return n;
}
static sf_count_t s_vwrite(const void *ptr, sf_count_t n, void *u) {
    (void)ptr, (void)n, (void)u;
    return 0;
}

static uint32_t s_le32(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* libsndfile quietly shortens a WAV whose data chunk claims more bytes than the file
 * has, and takes the fmt chunk's rate at its word; a cut upload or a damaged header must
 * be refused instead, so the RIFF chunks are walked here first. */
static int s_check_wav(const uint8_t *d, size_t len, char *err, size_t errlen) {
    size_t off = 12;
    while (off + 8 <= len) {
        uint32_t sz = s_le32(d + off + 4);
        if (!memcmp(d + off, "fmt ", 4) && sz >= 16 && off + 8 + 16 <= len) {
            uint32_t rate = s_le32(d + off + 8 + 4);
            if (rate < AUD_MIN_RATE || rate > AUD_MAX_RATE)
                return util_err(err, errlen, "WAV header: impossible sample rate %u Hz "
                                "(allowed %d..%d)", rate, AUD_MIN_RATE, AUD_MAX_RATE);
        }
        if (!memcmp(d + off, "data", 4)) {
            /* 0 and 0xFFFFFFFF are what streaming writers leave when they cannot seek
             * back to fill the size in; libsndfile then reads to the end. */
            if (sz != 0xFFFFFFFFu && sz != 0 && (uint64_t)sz > len - off - 8)
                return util_err(err, errlen, "truncated WAV: data chunk declares %u bytes, "
                                "the file holds %zu", sz, len - off - 8);
            return 0;
        }
        off += 8 + (uint64_t)sz + (sz & 1);
    }
    return util_err(err, errlen, "truncated WAV: no data chunk in %zu bytes", len);
}

static int s_decode_sndfile(aud_dec_t *self, const uint8_t *data, size_t len,
                            aud_view_t *out, char *err, size_t errlen) {
    s_vmem_t m = {data, (sf_count_t)len, 0};
    SF_VIRTUAL_IO io = {s_vlen, s_vseek, s_vread, s_vwrite, s_vtell};
    SF_INFO info = {0};
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &info, &m);
    if (!sf)
        return util_err(err, errlen, "corrupt audio file (libsndfile: %s)", sf_strerror(NULL));
    /* libsndfile reports SF_COUNT_MAX frames when it cannot tell the length (a FLAC cut
     * short, an Ogg stream); the samples are then counted while reading. */
    bool known = info.frames > 0 && info.frames < ((sf_count_t)1 << 40);
    int rc = s_check_format(self, info.samplerate, info.channels, known ? info.frames : -1,
                            err, errlen);
    if (rc == 0 && info.frames <= 0)
        rc = util_err(err, errlen, "no audio samples (zero-length audio)");
    if (rc != 0) {
        sf_close(sf);
        return rc;
    }
    int ch = info.channels;
    int64_t limit = (int64_t)(self->opts.max_seconds * info.samplerate);
    int64_t got = 0;
    const sf_count_t chunk = 65536;
    for (;;) {
        s_grow(&self->inter, &self->inter_cap, (size_t)(got + chunk) * ch);
        sf_count_t r = sf_readf_float(sf, self->inter + got * ch, chunk);
        if (r <= 0)
            break;
        got += r;
        if (got > limit) {
            sf_close(sf);
            return util_err(err, errlen, "too long: over %.2f s (limits.audio_seconds)",
                            self->opts.max_seconds);
        }
    }
    int sferr = sf_error(sf);
    char whybuf[200];
    snprintf(whybuf, sizeof whybuf, "%s", sferr ? sf_strerror(sf) : "");
    sf_close(sf);
    if (sferr)
        return util_err(err, errlen, "truncated or corrupt audio after %lld frames: %s",
                        (long long)got, whybuf);
    if (!known)
        return util_err(err, errlen, "truncated or corrupt audio: the header gives no "
                        "length (read %lld frames)", (long long)got);
    if (got < info.frames)
        return util_err(err, errlen, "truncated audio: read %lld of %lld frames",
                        (long long)got, (long long)info.frames);
    if (got == 0)
        return util_err(err, errlen, "no audio samples (zero-length audio)");
    s_mix(self, self->inter, got, ch);
    *out = (aud_view_t){self->mono, got, info.samplerate, ch,
                        AUD_VIA_SNDFILE};
    return 0;
}

/* ---- FFmpeg: everything else ----------------------------------------------------- */

typedef struct {
    AVCodecContext *dec;
    SwrContext *swr;
    AVPacket *pkt;
    AVFrame *frame;
    int64_t n;               /* frames decoded so far */
    int ch, rate;
} s_av_t;

/* Appends one decoded frame, converted to interleaved float with its own channels.
 * libswresample only converts the sample format here (same rate, same layout): decoders
 * output planar, s16, s32 or double depending on the codec, and one converter is less
 * code than a switch over every format. The rate is changed later, on the mono mix, by
 * aud_resample, so both decoding paths share the same resampler. */
static int s_av_take(aud_dec_t *self, s_av_t *a, char *err, size_t errlen) {
    AVFrame *f = a->frame;
    if (f->sample_rate != a->rate || f->ch_layout.nb_channels != a->ch)
        return util_err(err, errlen, "corrupt audio stream: format changes mid-stream "
                        "(%d Hz x %d -> %d Hz x %d)", a->rate, a->ch, f->sample_rate,
                        f->ch_layout.nb_channels);
    if (!a->swr) {
        if (swr_alloc_set_opts2(&a->swr, &f->ch_layout, AV_SAMPLE_FMT_FLT, f->sample_rate,
                                &f->ch_layout, f->format, f->sample_rate, 0, NULL) < 0 ||
            swr_init(a->swr) < 0)
            return util_err(err, errlen, "unsupported audio sample format %d", f->format);
    }
    if ((double)(a->n + f->nb_samples) > self->opts.max_seconds * a->rate)
        return util_err(err, errlen, "too long: over %.2f s (limits.audio_seconds)",
                            self->opts.max_seconds);
    s_grow(&self->inter, &self->inter_cap, (size_t)(a->n + f->nb_samples) * a->ch);
    uint8_t *o = (uint8_t *)(self->inter + a->n * a->ch);
    int got = swr_convert(a->swr, &o, f->nb_samples, (const uint8_t **)f->extended_data,
                          f->nb_samples);
    if (got < 0)
        return util_err(err, errlen, "audio sample conversion failed");
    a->n += got;
    return 0;
}

static int s_av_drain(aud_dec_t *self, s_av_t *a, char *err, size_t errlen) {
    char why[200];
    for (;;) {
        int rc = avcodec_receive_frame(a->dec, a->frame);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return 0;
        if (rc < 0)
            return util_err(err, errlen, "corrupt audio stream: %s",
                            avmem_strerror(rc, why, sizeof why));
        rc = s_av_take(self, a, err, errlen);
        av_frame_unref(a->frame);
        if (rc != 0)
            return rc;
    }
}

static int s_decode_ffmpeg(aud_dec_t *self, const uint8_t *data, size_t len,
                           aud_view_t *out, char *err, size_t errlen) {
    avmem_t *m = avmem_open(data, len, err, errlen);
    if (!m)
        return -1;
    AVFormatContext *fmt = avmem_fmt(m);
    const AVCodec *codec = NULL;
    int idx = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    s_av_t a = {0};
    int rc = 0;
    char why[200];
    if (idx < 0) {
        rc = util_err(err, errlen, idx == AVERROR_DECODER_NOT_FOUND
                      ? "no decoder for the audio stream" : "no audio stream in the %s container",
                      fmt->iformat->name);
        goto done;
    }
    a.dec = avcodec_alloc_context3(codec);
    a.pkt = av_packet_alloc();
    a.frame = av_frame_alloc();
    OFA_ASSERT(a.dec && a.pkt && a.frame);
    if (avcodec_parameters_to_context(a.dec, fmt->streams[idx]->codecpar) < 0 ||
        avcodec_open2(a.dec, codec, NULL) < 0) {
        rc = util_err(err, errlen, "cannot open the %s decoder", codec->name);
        goto done;
    }
    a.rate = a.dec->sample_rate;
    a.ch = a.dec->ch_layout.nb_channels;
    /* The stream's duration is an estimate (bit rate for MP3), so the limit is checked
     * again on the samples actually decoded. */
    AVStream *st = fmt->streams[idx];
    int64_t est = st->duration > 0 ? av_rescale_q(st->duration, st->time_base,
                                                  (AVRational){1, a.rate > 0 ? a.rate : 1}) : -1;
    if ((rc = s_check_format(self, a.rate, a.ch, est, err, errlen)) != 0)
        goto done;
    int npkt = 0;
    while ((rc = av_read_frame(fmt, a.pkt)) >= 0) {
        if (a.pkt->stream_index == idx) {
            npkt++;
            rc = avcodec_send_packet(a.dec, a.pkt);
            av_packet_unref(a.pkt);
            if (rc < 0) {
                rc = util_err(err, errlen, "corrupt audio stream at packet %d: %s", npkt,
                              avmem_strerror(rc, why, sizeof why));
                goto done;
            }
            if ((rc = s_av_drain(self, &a, err, errlen)) != 0)
                goto done;
        } else {
            av_packet_unref(a.pkt);
        }
    }
    if (rc != AVERROR_EOF) {
        rc = util_err(err, errlen, "corrupt container after %d packets: %s", npkt,
                      avmem_strerror(rc, why, sizeof why));
        goto done;
    }
    avcodec_send_packet(a.dec, NULL);
    if ((rc = s_av_drain(self, &a, err, errlen)) != 0)
        goto done;
    if (a.n <= 0) {
        rc = util_err(err, errlen, "no audio samples (zero-length audio)");
        goto done;
    }
    s_mix(self, self->inter, a.n, a.ch);
    *out = (aud_view_t){self->mono, a.n, a.rate, a.ch, AUD_VIA_FFMPEG};
    rc = 0;
done:
    swr_free(&a.swr);
    av_frame_free(&a.frame);
    av_packet_free(&a.pkt);
    avcodec_free_context(&a.dec);
    avmem_close(&m);
    return rc;
}

/* The container is chosen by its magic bytes, not by trying decoders in turn: a damaged
 * WAV must be refused with libsndfile's (or the RIFF walk's) reason, not half-decoded by
 * FFmpeg's more forgiving demuxers. */
int aud_decode(aud_dec_t *self, const uint8_t *data, size_t len, aud_view_t *out,
               char *err, size_t errlen) {
    if (!data || len == 0)
        return util_err(err, errlen, "empty audio (0 bytes)");
    bool riff = len >= 12 && !memcmp(data, "RIFF", 4) && !memcmp(data + 8, "WAVE", 4);
    bool flac = len >= 4 && !memcmp(data, "fLaC", 4);
    bool ogg = len >= 4 && !memcmp(data, "OggS", 4);
    if (riff && s_check_wav(data, len, err, errlen) != 0)
        return -1;
    int rc = riff || flac || ogg ? s_decode_sndfile(self, data, len, out, err, errlen)
                                 : s_decode_ffmpeg(self, data, len, out, err, errlen);
    if (rc != 0)
        return rc;
    /* Float WAVs store any value, NaN and infinities included; one of them, or a sample
     * far past full scale, turns the filterbank's log energies into inf/NaN that would
     * reach the model's loss. Overs of a float mix (a few dB) are kept. */
    for (int64_t i = 0; i < out->n; i++)
        if (!(fabsf(out->x[i]) <= AUD_MAX_ABS))
            return util_err(err, errlen, "corrupt audio: sample %lld is %g (allowed: finite, "
                            "within +-%g)", (long long)i, (double)out->x[i], AUD_MAX_ABS);
    return 0;
}

int aud_resample(aud_dec_t *self, const float *x, int64_t n, int rate_in, int rate_out,
                 aud_view_t *out, char *err, size_t errlen) {
    OFA_ASSERT(x != self->res || rate_in == rate_out);
    if (rate_in < AUD_MIN_RATE || rate_in > AUD_MAX_RATE || rate_out < AUD_MIN_RATE ||
        rate_out > AUD_MAX_RATE)
        return util_err(err, errlen, "cannot resample %d Hz -> %d Hz", rate_in, rate_out);
    if (rate_in == rate_out) {
        s_grow(&self->res, &self->res_cap, (size_t)n);
        if (x != self->res)
            memmove(self->res, x, (size_t)n * sizeof(float));
        *out = (aud_view_t){self->res, n, rate_out, 1, 0};
        return 0;
    }
    /* A fresh context per clip: a converter that kept the filter's history from the
     * previous clip would leak its tail into the next one, and setting one up costs
     * little beside decoding. */
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    SwrContext *swr = NULL;
    if (swr_alloc_set_opts2(&swr, &mono, AV_SAMPLE_FMT_FLT, rate_out, &mono,
                            AV_SAMPLE_FMT_FLT, rate_in, 0, NULL) < 0 || swr_init(swr) < 0) {
        swr_free(&swr);
        return util_err(err, errlen, "libswresample cannot convert %d Hz -> %d Hz", rate_in,
                        rate_out);
    }
    int64_t cap = av_rescale_rnd(n, rate_out, rate_in, AV_ROUND_UP) + 256;
    s_grow(&self->res, &self->res_cap, (size_t)cap);
    int64_t got = 0;
    /* swr_convert counts in int: feed long clips in pieces. */
    const int64_t chunk = 1 << 20;
    for (int64_t i = 0; i < n; i += chunk) {
        int64_t k = n - i < chunk ? n - i : chunk;
        const uint8_t *in = (const uint8_t *)(x + i);
        uint8_t *o = (uint8_t *)(self->res + got);
        int r = swr_convert(swr, &o, (int)(cap - got > INT32_MAX ? INT32_MAX : cap - got),
                            &in, (int)k);
        if (r < 0)
            break;
        got += r;
    }
    /* The filter's delay: flushing returns the last samples still inside it. */
    uint8_t *o = (uint8_t *)(self->res + got);
    int r = swr_convert(swr, &o, (int)(cap - got), NULL, 0);
    swr_free(&swr);
    if (r < 0)
        return util_err(err, errlen, "libswresample failed");
    got += r;
    *out = (aud_view_t){self->res, got, rate_out, 1, 0};
    return 0;
}
