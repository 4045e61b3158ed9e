/* fbank.c: see fbank.h. The arithmetic follows torchaudio.compliance.kaldi.fbank line by
 * line (which follows Kaldi's feature-fbank.cc), so that the test can hold it to the
 * reference at float precision. */
#include "fbank.h"

#include "util.h"

#include <fftw3.h>
#include <float.h>
#include <math.h>
#include <string.h>

#define FBANK_MAX_MELS 256

/* One triangular filter, stored sparsely: weights of FFT bins [lo, lo + n). */
typedef struct {
    int lo, n;
    float *w;
} s_filter_t;

struct fbank_t {
    int rate, n_mels;
    int win, shift, nfft;     /* window and shift in samples; FFT size (power of two) */
    double *window;           /* (win) povey */
    double *frame;            /* (win) scratch */
    float *fft_in;            /* (nfft) */
    fftwf_complex *fft_out;   /* (nfft/2 + 1) */
    fftwf_plan plan;
    float *power;             /* (nfft/2 + 1) */
    s_filter_t *filters;      /* (n_mels) */
};

static double s_mel(double f) { return 1127.0 * log(1.0 + f / 700.0); }

/* Kaldi's mel banks (torchaudio get_mel_banks with vtln_warp = 1): filter b rises from
 * mel_low + b*delta to its centre (b+1)*delta and falls to (b+2)*delta; bins are the
 * nfft/2 frequencies k * rate / nfft (the Nyquist bin gets weight 0, as torchaudio pads
 * it). low = 20 Hz, high = Nyquist. */
static void s_make_filters(fbank_t *self) {
    int nbins = self->nfft / 2;
    double mlo = s_mel(20.0), mhi = s_mel(0.5 * self->rate);
    double delta = (mhi - mlo) / (self->n_mels + 1);
    double bw = (double)self->rate / self->nfft;
    float *row = util_malloc((size_t)nbins * sizeof(float));
    self->filters = util_calloc((size_t)self->n_mels, sizeof(s_filter_t));
    for (int b = 0; b < self->n_mels; b++) {
        double left = mlo + b * delta, center = mlo + (b + 1) * delta, right = mlo + (b + 2) * delta;
        int lo = -1, hi = -1;
        for (int k = 0; k < nbins; k++) {
            /* torchaudio evaluates the bin mels in float32; doing the same keeps the
             * filter edges identical. */
            double m = (float)s_mel((float)(bw * k));
            double up = (m - left) / (center - left), down = (right - m) / (right - center);
            double w = up < down ? up : down;
            row[k] = w > 0 ? (float)w : 0.0f;
            if (row[k] > 0) {
                if (lo < 0)
                    lo = k;
                hi = k;
            }
        }
        s_filter_t *f = &self->filters[b];
        f->lo = lo < 0 ? 0 : lo;
        f->n = lo < 0 ? 0 : hi - lo + 1;
        f->w = util_malloc((size_t)(f->n ? f->n : 1) * sizeof(float));
        if (f->n)
            memcpy(f->w, row + lo, (size_t)f->n * sizeof(float));
    }
    free(row);
}

fbank_t *fbank_new(int rate, int n_mels) {
    if (rate < 1000 || n_mels < 1 || n_mels > FBANK_MAX_MELS)
        return NULL;
    fbank_t *self = util_calloc(1, sizeof *self);
    self->rate = rate;
    self->n_mels = n_mels;
    /* Python's int(rate * 25 * 0.001): the same truncation torchaudio does. */
    self->win = (int)(rate * 25.0 * 0.001);
    self->shift = (int)(rate * 10.0 * 0.001);
    self->nfft = 1;
    while (self->nfft < self->win)
        self->nfft *= 2;
    if (n_mels > self->nfft / 2) {
        free(self);
        return NULL;
    }
    self->window = util_malloc((size_t)self->win * sizeof(double));
    for (int i = 0; i < self->win; i++) {
        double hann = 0.5 - 0.5 * cos(2.0 * M_PI * i / (self->win - 1));
        self->window[i] = pow(hann, 0.85);
    }
    self->frame = util_malloc((size_t)self->win * sizeof(double));
    self->fft_in = fftwf_malloc((size_t)self->nfft * sizeof(float));
    self->fft_out = fftwf_malloc((size_t)(self->nfft / 2 + 1) * sizeof(fftwf_complex));
    OFA_ASSERT(self->fft_in && self->fft_out);
    /* FFTW_ESTIMATE: planning must not time the machine (fast start, same plan on every
     * run); at 512 points the difference from a measured plan is small. */
    self->plan = fftwf_plan_dft_r2c_1d(self->nfft, self->fft_in, self->fft_out, FFTW_ESTIMATE);
    OFA_ASSERT(self->plan);
    self->power = util_malloc((size_t)(self->nfft / 2 + 1) * sizeof(float));
    s_make_filters(self);
    return self;
}

void fbank_destroy(fbank_t **self_p) {
    if (!self_p || !*self_p)
        return;
    fbank_t *self = *self_p;
    for (int b = 0; b < self->n_mels; b++)
        free(self->filters[b].w);
    free(self->filters);
    fftwf_destroy_plan(self->plan);
    fftwf_free(self->fft_in);
    fftwf_free(self->fft_out);
    free(self->window);
    free(self->frame);
    free(self->power);
    free(self);
    *self_p = NULL;
}

int64_t fbank_frames(const fbank_t *self, int64_t n) {
    return n < self->win ? 0 : 1 + (n - self->win) / self->shift;
}
int fbank_window(const fbank_t *self) { return self->win; }
int fbank_shift(const fbank_t *self) { return self->shift; }
int fbank_rate(const fbank_t *self) { return self->rate; }
int fbank_n_mels(const fbank_t *self) { return self->n_mels; }

/* A standard normal draw (Box-Muller) for dither. */
static double s_gauss(util_rng_t *r) {
    double u1 = util_rng_uniform(r), u2 = util_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void fbank_compute(fbank_t *self, const float *x, int64_t n, float dither,
                   uint64_t dither_seed, float *out) {
    int64_t T = fbank_frames(self, n);
    int W = self->win, nb = self->nfft / 2 + 1;
    util_rng_t rng = {dither_seed};
    memset(self->fft_in, 0, (size_t)self->nfft * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        const float *src = x + t * self->shift;
        double *fr = self->frame, mean = 0;
        for (int i = 0; i < W; i++) {
            fr[i] = (double)src[i] * 32768.0;
            if (dither != 0.0f)
                fr[i] += dither * s_gauss(&rng);
            mean += fr[i];
        }
        mean /= W;
        for (int i = 0; i < W; i++)
            fr[i] -= mean;
        /* Pre-emphasis runs backwards so each step still sees the unmodified x[i-1]. */
        for (int i = W - 1; i > 0; i--)
            fr[i] -= 0.97 * fr[i - 1];
        fr[0] -= 0.97 * fr[0];
        for (int i = 0; i < W; i++)
            self->fft_in[i] = (float)(fr[i] * self->window[i]);
        fftwf_execute(self->plan);
        for (int k = 0; k < nb; k++) {
            float re = self->fft_out[k][0], im = self->fft_out[k][1];
            self->power[k] = re * re + im * im;
        }
        float *o = out + t * self->n_mels;
        for (int b = 0; b < self->n_mels; b++) {
            const s_filter_t *f = &self->filters[b];
            double e = 0;
            for (int k = 0; k < f->n; k++)
                e += (double)f->w[k] * self->power[f->lo + k];
            o[b] = (float)log(e > FLT_EPSILON ? e : FLT_EPSILON);
        }
    }
}

void fbank_specaugment(float *fb, int64_t T, int F, const fbank_augment_t *aug,
                       uint64_t seed, uint64_t sample_id) {
    if (!aug || T <= 0 || F <= 0 || (aug->freq_masks <= 0 && aug->time_masks <= 0))
        return;
    util_rng_t rng = {seed ^ (sample_id * 0x9E3779B97F4A7C15ull)};
    util_rng_next(&rng);
    double mean = 0;
    for (int64_t i = 0; i < T * F; i++)
        mean += fb[i];
    float fill = (float)(mean / (double)(T * F));
    for (int m = 0; m < aug->freq_masks; m++) {
        int w = (int)(util_rng_next(&rng) % (uint64_t)(aug->freq_width + 1));
        if (w > F)
            w = F;
        int f0 = (int)(util_rng_next(&rng) % (uint64_t)(F - w + 1));
        for (int64_t t = 0; t < T; t++)
            for (int f = f0; f < f0 + w; f++)
                fb[t * F + f] = fill;
    }
    for (int m = 0; m < aug->time_masks; m++) {
        int64_t w = (int64_t)(util_rng_next(&rng) % (uint64_t)(aug->time_width + 1));
        if (w > T)
            w = T;
        int64_t t0 = (int64_t)(util_rng_next(&rng) % (uint64_t)(T - w + 1));
        for (int64_t t = t0; t < t0 + w; t++)
            for (int f = 0; f < F; f++)
                fb[t * F + f] = fill;
    }
}
