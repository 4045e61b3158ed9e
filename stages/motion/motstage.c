/* motstage.c: see motstage.h. */
#include "motstage.h"

#include "taskplan.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_COLS 8

typedef struct {
    const char *cols[MAX_COLS];   /* borrowed from the task plan */
    int ncols;
} s_task_t;

struct motstage_t {
    const plan_t *plan;
    motstage_opts_t opts;
    s_task_t *tasks;              /* (plan->ntasks) */
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
    self->tasks = util_calloc((size_t)(plan->ntasks ? plan->ntasks : 1), sizeof(s_task_t));
    for (int t = 0; t < plan->ntasks; t++) {
        const taskplan_t *tp = plan->tasks[t].plan;
        s_task_t *st = &self->tasks[t];
        for (int k = 0; k < tp->ntmpls; k++)
            for (int i = 0; i < tp->tmpls[k].nslots; i++) {
                const taskplan_slot_t *sl = &tp->tmpls[k].slots[i];
                if (sl->target || sl->mod != MOD_MOTION || !sl->column)
                    continue;
                bool seen = false;
                for (int c = 0; c < st->ncols; c++)
                    seen |= strcmp(st->cols[c], sl->column) == 0;
                if (!seen && st->ncols < MAX_COLS)
                    st->cols[st->ncols++] = sl->column;
            }
    }
    return self;
}

void motstage_destroy(motstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    motstage_t *self = *self_p;
    free(self->tasks);
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

/* The whole file is parsed for each sample although only one window is kept: BVH
 * frames are text lines whose positions are unknown until the lines before them are
 * read; parsing a whole CMU clip (2 MB, 2752 frames) takes about 20 ms on one core here. */
int motstage_process(motstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    const char *task = proto_msg_task(msg);
    int t = plan_task_index(self->plan, task);
    if (t < 0)
        return util_err(err, errlen, "unknown task '%s' (not in the plan)", task);
    uint64_t id = proto_msg_n_ids(msg) > 0 ? proto_msg_ids(msg)[0] : 0;
    const proto_field_t *split = proto_msg_get(msg, "split");
    int train = split && split->type == PV_STR && !strcmp(split->data, "train");
    const motstage_opts_t *o = &self->opts;
    const s_task_t *st = &self->tasks[t];
    for (int c = 0; c < st->ncols; c++) {
        const char *col = st->cols[c];
        const proto_field_t *f = proto_msg_get(msg, col);
        if (!f)
            return util_err(err, errlen, "column %s: missing from the sample", col);
        if (f->type != PV_BIN && f->type != PV_STR)
            return util_err(err, errlen, "column %s: expected a BVH file's text, got a %s", col,
                            f->type == PV_TENSOR ? "tensor" : "number");
        int64_t declared = s_declared_frames(f->data, f->len);
        if (declared > self->plan->limits.bvh_frames && self->plan->limits.bvh_frames > 0)
            return util_err(err, errlen, "column %s: 'Frames: %lld' exceeds limits.bvh_frames "
                            "%lld", col, (long long)declared,
                            (long long)self->plan->limits.bvh_frames);
        char why[400];
        bvh_t *b = bvh_parse(f->data, f->len, why, sizeof why);
        if (!b)
            return util_err(err, errlen, "column %s: %s", col, why);
        int64_t nwin = bvh_num_windows(b, o->window, o->stride, o->step);
        int64_t w = motstage_pick_window(nwin, train, (uint64_t)self->plan->seed, id);
        int C = bvh_feature_dim(b);
        float *feat = util_malloc((size_t)o->window * C * sizeof(float));
        int real = bvh_window(b, w * o->stride, o->window, o->step, o->pos_scale, feat);
        bvh_destroy(&b);
        int64_t shape[2] = {o->window, C};
        proto_msg_take_tensor(msg, col, PROTO_F32, 2, shape, feat);
        char key[PROTO_MAX_KEY];
        snprintf(key, sizeof key, "%s.frames", col);
        proto_msg_set_int(msg, key, real);
    }
    return 0;
}
