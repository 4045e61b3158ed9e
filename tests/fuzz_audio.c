/* fuzz_audio.c: fuzz target for the audio tier's chain (aud_features: libsndfile or
 * FFmpeg decode, mono mix, libswresample to 16 kHz, Kaldi log-mel filterbank, 80 mels) on
 * arbitrary bytes. The input is the file (WAV, FLAC, Ogg, MP3, ... or garbage).
 *
 * Clips are capped at 30 s (the default 600 s would let one forged header cost the fuzzer
 * seconds; the bound is what is checked, not its size).
 *
 * Properties checked beyond "no crash":
 *  - a refusal has a non-empty reason;
 *  - a success gives at least one frame, at most what 30 s make, and only finite values
 *    (a NaN or an infinity would reach the model's loss);
 *  - after any refusal the same decoder still turns a known-good WAV (made here: 0.1 s of
 *    a 440 Hz tone, 16-bit, 16 kHz) into the very features it gave at start-up.
 * Any failure aborts, which the fuzzer reports. */
#include "audstage.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { RATE = 16000, MELS = 80, GOOD_N = 1600 };
#define MAX_SECONDS 30.0

/* libsndfile's Ogg reader leaves libvorbis's codec setup behind when an Ogg Vorbis file
 * is cut inside its headers (sf_open_virtual fails; there is nothing to close): a leak in
 * Debian's libraries, about 6 KB per such file, not in this project's code. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:vorbis_info_init\n";
}

static aud_dec_t *s_dec;
static fbank_t *s_fb;
static uint8_t s_good[44 + 2 * GOOD_N];
static float *s_good_feat;
static int64_t s_good_T;

static void s_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_audio: %s: %s\n", what, detail ? detail : "");
    abort();
}

static void s_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void s_put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* A canonical 44-byte-header PCM WAV. */
static void s_make_wav(void) {
    uint8_t *h = s_good;
    memcpy(h, "RIFF", 4);
    s_put32(h + 4, 36 + 2 * GOOD_N);
    memcpy(h + 8, "WAVEfmt ", 8);
    s_put32(h + 16, 16);
    s_put16(h + 20, 1);            /* PCM */
    s_put16(h + 22, 1);            /* mono */
    s_put32(h + 24, RATE);
    s_put32(h + 28, RATE * 2);
    s_put16(h + 32, 2);
    s_put16(h + 34, 16);
    memcpy(h + 36, "data", 4);
    s_put32(h + 40, 2 * GOOD_N);
    for (int i = 0; i < GOOD_N; i++)
        s_put16(h + 44 + 2 * i,
                (uint16_t)(int16_t)lrint(8000 * sin(2 * M_PI * 440 * i / (double)RATE)));
}

static void s_init(void) {
    aud_dec_opts_t o = {.max_seconds = MAX_SECONDS};
    s_dec = aud_dec_new(&o);
    s_fb = fbank_new(RATE, MELS);
    if (!s_fb)
        s_fail("fbank_new", "no filterbank");
    s_make_wav();
    char err[256];
    if (aud_features(s_dec, s_fb, s_good, sizeof s_good, 0.0f, 0, &s_good_feat, &s_good_T, err,
                     sizeof err) != 0)
        s_fail("the good WAV does not decode", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_dec)
        s_init();
    char err[256] = "";
    float *feat = NULL;
    int64_t T = 0;
    if (aud_features(s_dec, s_fb, data, size, 0.0f, 0, &feat, &T, err, sizeof err) != 0) {
        if (!err[0])
            s_fail("refused without a reason", NULL);
        char err2[256];
        if (aud_features(s_dec, s_fb, s_good, sizeof s_good, 0.0f, 0, &feat, &T, err2,
                         sizeof err2) != 0)
            s_fail("after a refusal the good WAV no longer decodes", err2);
        if (T != s_good_T || memcmp(feat, s_good_feat, (size_t)T * MELS * sizeof *feat) != 0)
            s_fail("after a refusal the good WAV gives other features", err);
        free(feat);
        return 0;
    }
    if (T < 1 || T > fbank_frames(s_fb, (int64_t)(MAX_SECONDS * RATE) + RATE))
        s_fail("frame count", "outside 1 .. the 30 s cap");
    for (int64_t i = 0; i < T * MELS; i++)
        if (!isfinite(feat[i])) {
            char d[96];
            snprintf(d, sizeof d, "frame %lld, mel %lld is %g", (long long)(i / MELS),
                     (long long)(i % MELS), (double)feat[i]);
            s_fail("a feature is not finite", d);
        }
    free(feat);
    return 0;
}
