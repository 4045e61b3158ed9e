/* audstage.c: see audstage.h. */
#include "audstage.h"

#include "taskplan.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define MAX_COLS 8

typedef struct {
    const char *column;      /* borrowed from the task plan */
    fbank_t *fb;             /* at the column's rate and n_mels */
} s_col_t;

typedef struct {
    s_col_t cols[MAX_COLS];
    int ncols;
} s_task_t;

struct audstage_t {
    const plan_t *plan;
    audstage_opts_t opts;
    aud_dec_t *dec;
    s_task_t *tasks;         /* (plan->ntasks) */
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

/* Every template is scanned (||| alternatives may read different columns); a column
 * used twice keeps its first slot's settings, as the image tier does. */
static int s_task_columns(const taskplan_t *tp, s_task_t *st, char *err, size_t errlen) {
    for (int t = 0; t < tp->ntmpls; t++) {
        const taskplan_template_t *tm = &tp->tmpls[t];
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            if (sl->target || sl->mod != MOD_AUDIO || !sl->column)
                continue;
            bool seen = false;
            for (int k = 0; k < st->ncols; k++)
                seen |= strcmp(st->cols[k].column, sl->column) == 0;
            if (seen || st->ncols >= MAX_COLS)
                continue;
            int rate = sl->in->sample_rate ? sl->in->sample_rate : tp->opts.sample_rate;
            int mels = sl->in->n_mels ? sl->in->n_mels : tp->opts.n_mels;
            if (!rate)
                rate = 16000;
            if (!mels)
                mels = 80;
            fbank_t *fb = fbank_new(rate, mels);
            if (!fb)
                return util_err(err, errlen, "column %s: no filterbank of %d mels at %d Hz",
                                sl->column, mels, rate);
            st->cols[st->ncols++] = (s_col_t){sl->column, fb};
        }
    }
    return 0;
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
    self->tasks = util_calloc((size_t)(plan->ntasks ? plan->ntasks : 1), sizeof(s_task_t));
    for (int t = 0; t < plan->ntasks; t++) {
        if (s_task_columns(plan->tasks[t].plan, &self->tasks[t], err, errlen) != 0) {
            audstage_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void audstage_destroy(audstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    audstage_t *self = *self_p;
    for (int t = 0; t < self->plan->ntasks; t++)
        for (int c = 0; c < self->tasks[t].ncols; c++)
            fbank_destroy(&self->tasks[t].cols[c].fb);
    free(self->tasks);
    aud_dec_destroy(&self->dec);
    free(self);
    *self_p = NULL;
}

/* The columns come from the task plan, not from the message: a field the plan does not
 * name as an AUDIO slot passes through untouched, and a missing one is a reject. The
 * dither and SpecAugment draws are seeded by (plan seed, sample id) so a re-dispatched
 * sample, or a run resumed from a checkpoint, gets the same features. */
int audstage_process(audstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    const char *task = proto_msg_task(msg);
    int t = plan_task_index(self->plan, task);
    if (t < 0)
        return util_err(err, errlen, "unknown task '%s' (not in the plan)", task);
    uint64_t id = proto_msg_n_ids(msg) > 0 ? proto_msg_ids(msg)[0] : 0;
    const proto_field_t *split = proto_msg_get(msg, "split");
    bool train = split && split->type == PV_STR && !strcmp(split->data, "train");
    const s_task_t *st = &self->tasks[t];
    for (int c = 0; c < st->ncols; c++) {
        const s_col_t *col = &st->cols[c];
        const proto_field_t *f = proto_msg_get(msg, col->column);
        if (!f)
            return util_err(err, errlen, "column %s: missing from the sample", col->column);
        if (f->type != PV_BIN && f->type != PV_STR)
            return util_err(err, errlen, "column %s: expected the audio file's bytes, got a %s",
                            col->column, f->type == PV_TENSOR ? "tensor" : "number");
        float *feat;
        int64_t T;
        char why[400];
        uint64_t seed = (uint64_t)self->plan->seed;
        if (aud_features(self->dec, col->fb, f->data, f->len, self->opts.dither,
                         seed ^ id, &feat, &T, why, sizeof why) != 0)
            return util_err(err, errlen, "column %s: %s", col->column, why);
        int F = fbank_n_mels(col->fb);
        if (train)
            fbank_specaugment(feat, T, F, &self->opts.augment, seed, id);
        int64_t shape[2] = {T, F};
        proto_msg_take_tensor(msg, col->column, PROTO_F32, 2, shape, feat);
        char key[PROTO_MAX_KEY];
        snprintf(key, sizeof key, "%s.frames", col->column);
        proto_msg_set_int(msg, key, T);
    }
    return 0;
}
