/* fbank.h: Kaldi-compatible log-mel filterbank (what torchaudio.compliance.kaldi.fbank
 * computes) and SpecAugment-style masking, for the audio tier.
 *
 * Per frame, as Kaldi's compute-fbank-feats with use_energy=false does:
 *   25 ms windows every 10 ms, only whole windows (snip_edges): 1 + (n - W) / S frames;
 *   dither (Gaussian, amplitude `dither`; 0 = none, as tests use);
 *   remove the frame's mean (DC offset);
 *   pre-emphasis x[i] -= 0.97 x[i-1] (x[-1] taken as x[0]);
 *   the povey window (a Hann window of N-1 to the power 0.85);
 *   zero-padding to the next power of two; real FFT (FFTW, single precision);
 *   power spectrum |X|^2; n_mels triangular filters on Kaldi's mel scale
 *   1127 ln(1 + f/700) between 20 Hz and Nyquist;
 *   log(max(energy, FLT_EPSILON)).
 * The samples are taken in 16-bit integer units (x * 32768), Kaldi's convention, which
 * OFASys/fairseq follow when they pass waveform * 2^15 to torchaudio: the log energies
 * then have the same offsets as models trained on Kaldi features.
 *
 * Usage: one fbank_t per (sample rate, n_mels) and thread; it owns the FFTW plan (plans
 * are made once: FFTW's planner is not thread-safe), the window and the filters.
 *
 *     fbank_t *fb = fbank_new(16000, 80);
 *     int T = fbank_frames(fb, n);
 *     float *out = malloc(T * 80 * sizeof(float));   // (T, 80)
 *     fbank_compute(fb, x, n, 0.0f, seed, out);
 *     fbank_destroy(&fb);
 */
#ifndef OFA_FBANK_H
#define OFA_FBANK_H

#include <stdint.h>

typedef struct fbank_t fbank_t;

/* NULL when rate or n_mels is unusable (rate < 1000, n_mels outside 1..256 or more
 * filters than FFT bins). The caller owns the result. */
fbank_t *fbank_new(int rate, int n_mels);
/* Frees it; accepts NULL and sets *self_p to NULL. */
void fbank_destroy(fbank_t **self_p);

/* Number of frames for n samples (0 when n is shorter than one window). */
int64_t fbank_frames(const fbank_t *self, int64_t n);
int fbank_window(const fbank_t *self);   /* samples per window (400 at 16 kHz) */
int fbank_shift(const fbank_t *self);    /* samples per shift (160 at 16 kHz) */
int fbank_rate(const fbank_t *self);
int fbank_n_mels(const fbank_t *self);

/* x (n) in [-1, 1] -> out (fbank_frames(n), n_mels), row-major. dither 0 = none; else
 * the noise is drawn from a generator seeded by dither_seed (deterministic). */
void fbank_compute(fbank_t *self, const float *x, int64_t n, float dither,
                   uint64_t dither_seed, float *out);

/* SpecAugment-style masks on a log-mel (T, F) in place: freq_masks bands of width
 * uniform in [0, freq_width] channels and time_masks spans of width uniform in
 * [0, time_width] frames, filled with the spectrogram's mean (as fairseq's
 * SpecAugmentTransform does). The masks are a pure function of (seed, sample_id). */
typedef struct {
    int freq_masks, freq_width;
    int time_masks, time_width;
} fbank_augment_t;

void fbank_specaugment(float *fb, int64_t T, int F, const fbank_augment_t *aug,
                       uint64_t seed, uint64_t sample_id);

#endif
