/* audstage.c: see audstage.h. */
#include "audstage.h"

#include "decstage.h"
#include "taskplan.h"
#include "util.h"

#include <stdlib.h>

struct audstage_t {
    const plan_t *plan;
    audstage_opts_t opts;
    aud_dec_t *dec;
    decstage_t *cols;        /* each column's data: its fbank_t * */
};

int aud_features(aud_dec_t *dec, fbank_t *fb, const uint8_t *data, size_t len,
                 float dither, uint64_t dither_seed, float **feat, int64_t *T, char *err,
                 size_t errlen) {
    aud_view_t v;
    int rate = fbank_rate(fb);
    if (aud_decode(dec, data, len, &v, err, errlen) != 0)
        return -1;
    if (aud_resample(dec, v.x, v.n, v.rate, rate, &v, err, errlen) != 0)
        return -1;
    int64_t frames = fbank_frames(fb, v.n);
    if (frames <= 0)
        return util_err(err, errlen, "too short: %lld samples at %d Hz, less than one "
                        "%d-sample window", (long long)v.n, rate, fbank_window(fb));
    float *out = util_malloc((size_t)frames * fbank_n_mels(fb) * sizeof(float));
    fbank_compute(fb, v.x, v.n, dither, dither_seed, out);
    *feat = out;
    *T = frames;
    return 0;
}

/* A column's filterbank, at the slot's sample_rate= and n_mels=, else the plan's. */
static int s_col_setup(void *ctx, const taskplan_t *tp, decstage_col_t *col, char *err,
                       size_t errlen) {
    (void)ctx;
    const instr_slot_t *in = col->slot->in;
    int rate = in->sample_rate ? in->sample_rate : tp->opts.sample_rate;
    int mels = in->n_mels ? in->n_mels : tp->opts.n_mels;
    if (!rate)
        rate = 16000;
    if (!mels)
        mels = 80;
    fbank_t *fb = fbank_new(rate, mels);
    if (!fb)
        return util_err(err, errlen, "column %s: no filterbank of %d mels at %d Hz",
                        col->column, mels, rate);
    *(fbank_t **)col->data = fb;
    return 0;
}

static void s_col_free(void *data) {
    fbank_destroy((fbank_t **)data);
}

/* One filterbank per (task, column) is built up front: FFTW's planner is not
 * thread-safe and not free, so no plan is ever made while samples flow. */
audstage_t *audstage_new(const plan_t *plan, const audstage_opts_t *opts, char *err,
                         size_t errlen) {
    audstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    if (opts)
        self->opts = *opts;
    /* The plan's limits.audio_seconds, unless the program was given --max-seconds. */
    if (self->opts.max_seconds <= 0)
        self->opts.max_seconds = plan->limits.audio_seconds;
    aud_dec_opts_t dopts = {.max_seconds = self->opts.max_seconds};
    self->dec = aud_dec_new(&dopts);
    self->cols = decstage_new(plan, MOD_AUDIO, "the audio file's bytes", sizeof(fbank_t *),
                              s_col_setup, s_col_free, NULL, err, errlen);
    if (!self->cols)
        audstage_destroy(&self);
    return self;
}

void audstage_destroy(audstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    audstage_t *self = *self_p;
    decstage_destroy(&self->cols);
    aud_dec_destroy(&self->dec);
    free(self);
    *self_p = NULL;
}

/* The dither and SpecAugment draws are seeded by (plan seed, sample id) so a
 * re-dispatched sample, or a run resumed from a checkpoint, gets the same features. */
static int s_column(void *ctx, const decstage_col_t *col, const proto_field_t *f,
                    const decstage_sample_t *s, proto_msg_t *msg, char *err, size_t errlen) {
    audstage_t *self = ctx;
    fbank_t *fb = *(fbank_t **)col->data;
    float *feat;
    int64_t T;
    char why[400];
    uint64_t seed = (uint64_t)self->plan->seed;
    if (aud_features(self->dec, fb, f->data, f->len, self->opts.dither, seed ^ s->id, &feat,
                     &T, why, sizeof why) != 0)
        return util_err(err, errlen, "column %s: %s", col->column, why);
    int F = fbank_n_mels(fb);
    if (s->train)
        fbank_specaugment(feat, T, F, &self->opts.augment, seed, s->id);
    int64_t shape[2] = {T, F};
    proto_msg_take_tensor(msg, col->column, PROTO_F32, 2, shape, feat);
    decstage_set_int(msg, col->column, "frames", T);
    return 0;
}

int audstage_process(audstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    return decstage_process(self->cols, msg, s_column, self, err, errlen);
}
