/* motstage.c: see motstage.h. */
#include "motstage.h"

#include "decstage.h"
#include "taskplan.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct motstage_t {
    const plan_t *plan;
    motstage_opts_t opts;
    decstage_t *cols;             /* the MOTION columns (no data of their own) */
};

/* The frame count a BVH text declares ("Frames: N" after MOTION), or -1 when there is
 * none to read: the limit is checked on it before the parser allocates for N frames. */
static int64_t s_declared_frames(const char *text, size_t len) {
    static const char key[] = "Frames:";
    const size_t kl = sizeof key - 1;
    for (size_t i = 0; i + kl < len; i++) {
        if (text[i] != 'F' || memcmp(text + i, key, kl) != 0)
            continue;
        int64_t n = 0;
        size_t j = i + kl;
        while (j < len && (text[j] == ' ' || text[j] == '\t'))
            j++;
        if (j >= len || text[j] < '0' || text[j] > '9')
            return -1;
        for (; j < len && text[j] >= '0' && text[j] <= '9' && n < INT64_MAX / 10; j++)
            n = n * 10 + (text[j] - '0');
        return n;
    }
    return -1;
}

motstage_t *motstage_new(const plan_t *plan, const motstage_opts_t *opts) {
    motstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    if (opts)
        self->opts = *opts;
    motstage_opts_t *o = &self->opts;
    if (o->window <= 0)
        o->window = 64;
    if (o->stride <= 0)
        o->stride = o->window / 2 > 0 ? o->window / 2 : 1;
    if (o->step <= 0)
        o->step = 4;
    if (o->pos_scale == 0)
        o->pos_scale = 0.01f;
    self->cols = decstage_new(plan, MOD_MOTION, "a BVH file's text", 0, NULL, NULL, NULL,
                              NULL, 0);
    return self;
}

void motstage_destroy(motstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    motstage_t *self = *self_p;
    decstage_destroy(&self->cols);
    free(self);
    *self_p = NULL;
}

int64_t motstage_pick_window(int64_t nwin, int train, uint64_t seed, uint64_t sample_id) {
    if (nwin <= 1)
        return 0;
    if (!train)
        return nwin / 2;
    util_rng_t r = {seed ^ (sample_id * 0xD1B54A32D192ED03ull)};
    return (int64_t)(util_rng_next(&r) % (uint64_t)nwin);
}

const motstage_opts_t *motstage_get_opts(const motstage_t *self) { return &self->opts; }

int motstage_flag(motstage_opts_t *o, const char *flag, const char *value, char *err,
                  size_t errlen) {
    static const struct {
        const char *flag;
        long hi;
    } ints[] = {{"--window", 100000}, {"--stride", 100000}, {"--step", 1000}};
    int *dst[] = {&o->window, &o->stride, &o->step};
    for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
        if (strcmp(flag, ints[k].flag))
            continue;
        char *end;
        errno = 0;
        long v = value ? strtol(value, &end, 10) : 0;
        if (!value || !*value || *end || errno || v < 1 || v > ints[k].hi)
            return util_err(err, errlen, "%s takes an integer in [1, %ld], got '%s'", flag,
                            ints[k].hi, value ? value : "");
        *dst[k] = (int)v;
        return 1;
    }
    if (strcmp(flag, "--pos-scale"))
        return 0;
    char *end;
    errno = 0;
    double v = value ? strtod(value, &end) : 0;
    if (!value || !*value || *end || errno || !(v > 0 && v < 1e6))
        return util_err(err, errlen, "--pos-scale takes a positive number, got '%s'",
                        value ? value : "");
    o->pos_scale = (float)v;
    return 1;
}

int motstage_opts_from_argv(motstage_opts_t *o, int argc, char *const *argv, char *err,
                            size_t errlen) {
    for (int i = 1; i < argc; i++) {
        int r = motstage_flag(o, argv[i], i + 1 < argc ? argv[i + 1] : NULL, err, errlen);
        if (r < 0)
            return -1;
        i += r;
    }
    return 0;
}

/* The whole file is parsed for each sample although only one window is kept: BVH
 * frames are text lines whose positions are unknown until the lines before them are
 * read; parsing a whole CMU clip (2 MB, 2752 frames) takes about 20 ms on one core here. */
int motstage_features(const motstage_t *self, const char *text, size_t len, int train,
                      uint64_t sample_id, float **out, int *C, int *real, char *err,
                      size_t errlen) {
    const motstage_opts_t *o = &self->opts;
    int64_t declared = s_declared_frames(text, len);
    if (declared > self->plan->limits.bvh_frames && self->plan->limits.bvh_frames > 0)
        return util_err(err, errlen, "'Frames: %lld' exceeds limits.bvh_frames %lld",
                        (long long)declared, (long long)self->plan->limits.bvh_frames);
    bvh_t *b = bvh_parse(text, len, err, errlen);
    if (!b)
        return -1;
    int64_t nwin = bvh_num_windows(b, o->window, o->stride, o->step);
    int64_t w = motstage_pick_window(nwin, train, (uint64_t)self->plan->seed, sample_id);
    *C = bvh_feature_dim(b);
    *out = util_malloc((size_t)o->window * *C * sizeof(float));
    *real = bvh_window(b, w * o->stride, o->window, o->step, o->pos_scale, *out);
    bvh_destroy(&b);
    return 0;
}

static int s_column(void *ctx, const decstage_col_t *dcol, const proto_field_t *f,
                    const decstage_sample_t *s, proto_msg_t *msg, char *err, size_t errlen) {
    motstage_t *self = ctx;
    char why[400];
    float *feat;
    int C, real;
    if (motstage_features(self, f->data, f->len, s->train, s->id, &feat, &C, &real, why,
                          sizeof why) != 0)
        return util_err(err, errlen, "column %s: %s", dcol->column, why);
    int64_t shape[2] = {self->opts.window, C};
    proto_msg_take_tensor(msg, dcol->column, PROTO_F32, 2, shape, feat);
    decstage_set_int(msg, dcol->column, "frames", real);
    return 0;
}

int motstage_process(motstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    return decstage_process(self->cols, msg, s_column, self, err, errlen);
}
