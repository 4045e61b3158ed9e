/* auddec.h: audio decoding and resampling for the audio tier (ofa-audio).
 *
 * Turns the bytes of one audio column into mono float samples at the model's rate:
 *   - WAV, FLAC and Ogg (Vorbis/Opus) are read by libsndfile from the memory buffer
 *     (sf_open_virtual); anything else (MP3, AAC in MP4, ...) by FFmpeg's libavformat /
 *     libavcodec through a memory AVIOContext;
 *   - channels are averaged into one (mono mix);
 *   - the rate is converted by FFmpeg's libswresample (its default windowed-sinc
 *     filter), never by a hand-written interpolator.
 * Samples are floats in [-1, 1] as the decoders give them (16-bit PCM becomes s/32768).
 *
 * Usage: one aud_dec_t per worker thread, reused for every sample; its buffers grow to
 * the longest clip seen and are never shrunk.
 *
 *     aud_dec_t *d = aud_dec_new(NULL);
 *     aud_view_t v;
 *     if (aud_decode(d, bytes, len, &v, err, sizeof err) != 0) reject(err);
 *     if (aud_resample(d, v.x, v.n, v.rate, 16000, &v, err, sizeof err) != 0) reject(err);
 *     aud_dec_destroy(&d);
 *
 * Errors: every function that reads outside bytes returns 0 or -1 with a one-line reason
 * in err: empty input, unknown or corrupt container, truncated data, no audio stream,
 * zero samples, a sample rate outside [AUD_MIN_RATE, AUD_MAX_RATE], more than max_seconds,
 * a sample that is not finite or beyond +-AUD_MAX_ABS (float files).
 * Nothing here exits or aborts on bad input. */
#ifndef OFA_AUDDEC_H
#define OFA_AUDDEC_H

#include <stddef.h>
#include <stdint.h>

/* Rates a real recording can have; a header outside them is refused as corrupt. */
#define AUD_MIN_RATE 1000
#define AUD_MAX_RATE 768000
#define AUD_MAX_CHANNELS 64
/* Largest decoded sample magnitude (full scale is 1; float files may go over a little).
 * NaN, infinities and samples beyond it are refused as corrupt. */
#define AUD_MAX_ABS 64.0

typedef struct {
    double max_seconds;   /* refuse longer clips (before decoding where the header says);
                             0 = default 600 s */
} aud_dec_opts_t;

typedef enum { AUD_VIA_SNDFILE = 1, AUD_VIA_FFMPEG } aud_via_t;

/* Mono samples inside a decoder's buffers: valid until the next call on it. */
typedef struct {
    const float *x;       /* (n) */
    int64_t n;
    int rate;             /* samples per second */
    int channels;         /* in the file, before the mono mix */
    aud_via_t via;
} aud_view_t;

typedef struct aud_dec_t aud_dec_t;

/* opts may be NULL (defaults). The caller owns the result; never NULL. */
aud_dec_t *aud_dec_new(const aud_dec_opts_t *opts);
/* Frees the decoder; accepts NULL and sets *self_p to NULL. */
void aud_dec_destroy(aud_dec_t **self_p);

/* Decodes data (any container libsndfile or FFmpeg reads) into mono samples at the
 * file's rate. out points into self. */
int aud_decode(aud_dec_t *self, const uint8_t *data, size_t len, aud_view_t *out,
               char *err, size_t errlen);

/* Converts x (n) at rate_in to rate_out with libswresample. x may point into self (a
 * view of aud_decode). On success *out is a view of the result (rate = rate_out), of
 * about n * rate_out / rate_in samples; when the rates are equal the samples are copied
 * unchanged. */
int aud_resample(aud_dec_t *self, const float *x, int64_t n, int rate_in, int rate_out,
                 aud_view_t *out, char *err, size_t errlen);

#endif
