/* vidstage.c: see vidstage.h. */
#include "vidstage.h"

#include "taskplan.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define MAX_COLS 8

typedef struct {
    const char *column;      /* borrowed from the task plan */
    int frames, size, patch; /* N, S, P */
} s_col_t;

typedef struct {
    s_col_t cols[MAX_COLS];
    int ncols;
} s_task_t;

struct vidstage_t {
    const plan_t *plan;
    vid_ctx_t *ctx;
    s_task_t *tasks;         /* (plan->ntasks) */
};

/* Every template is scanned (||| alternatives may read different columns); a column
 * used twice keeps its first slot's settings, as the image tier does. */
static int s_task_columns(const taskplan_t *tp, s_task_t *st, char *err, size_t errlen) {
    for (int t = 0; t < tp->ntmpls; t++) {
        const taskplan_template_t *tm = &tp->tmpls[t];
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            if (sl->target || sl->mod != MOD_VIDEO || !sl->column)
                continue;
            bool seen = false;
            for (int k = 0; k < st->ncols; k++)
                seen |= strcmp(st->cols[k].column, sl->column) == 0;
            if (seen || st->ncols >= MAX_COLS)
                continue;
            s_col_t c = {sl->column, sl->in->frames ? sl->in->frames : tp->opts.frames,
                         sl->in->image_size ? sl->in->image_size : tp->opts.image_size,
                         sl->in->patch ? sl->in->patch : tp->opts.patch};
            if (c.frames <= 0)
                c.frames = 8;
            if (c.frames > VID_MAX_SAMPLE)
                return util_err(err, errlen, "column %s: frames=%d, at most %d", c.column,
                                c.frames, VID_MAX_SAMPLE);
            if (c.patch <= 0 || c.size < c.patch || c.size % c.patch)
                return util_err(err, errlen, "column %s: size %d is not a multiple of patch %d",
                                c.column, c.size, c.patch);
            st->cols[st->ncols++] = c;
        }
    }
    return 0;
}

vidstage_t *vidstage_new(const plan_t *plan, const vid_opts_t *opts, char *err,
                         size_t errlen) {
    vidstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    /* The plan's limits, unless the program was given --max-frames. */
    vid_opts_t o = opts ? *opts : (vid_opts_t){0};
    if (o.max_frames <= 0)
        o.max_frames = plan->limits.video_frames;
    if (o.max_seconds <= 0)
        o.max_seconds = plan->limits.video_seconds;
    self->ctx = vid_ctx_new(&o);
    self->tasks = util_calloc((size_t)(plan->ntasks ? plan->ntasks : 1), sizeof(s_task_t));
    for (int t = 0; t < plan->ntasks; t++) {
        if (s_task_columns(plan->tasks[t].plan, &self->tasks[t], err, errlen) != 0) {
            vidstage_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void vidstage_destroy(vidstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    vidstage_t *self = *self_p;
    vid_ctx_destroy(&self->ctx);
    free(self->tasks);
    free(self);
    *self_p = NULL;
}

/* The columns come from the task plan, not from the message: a field the plan does not
 * name as a VIDEO slot passes through untouched, and a missing one is a reject. */
int vidstage_process(vidstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    const char *task = proto_msg_task(msg);
    int t = plan_task_index(self->plan, task);
    if (t < 0)
        return util_err(err, errlen, "unknown task '%s' (not in the plan)", task);
    const s_task_t *st = &self->tasks[t];
    for (int c = 0; c < st->ncols; c++) {
        const s_col_t *col = &st->cols[c];
        const proto_field_t *f = proto_msg_get(msg, col->column);
        if (!f)
            return util_err(err, errlen, "column %s: missing from the sample", col->column);
        if (f->type != PV_BIN && f->type != PV_STR)
            return util_err(err, errlen, "column %s: expected the video file's bytes, got a %s",
                            col->column, f->type == PV_TENSOR ? "tensor" : "number");
        int N = col->frames, S = col->size, P = col->patch, g = S / P;
        int64_t shape[2] = {(int64_t)N * g * g, (int64_t)P * P * 3};
        /* The output outlives this call (the message takes it): one allocation per clip. */
        uint8_t *patches = util_malloc((size_t)N * S * S * 3);
        vid_info_t info;
        char why[400];
        if (vid_process(self->ctx, f->data, f->len, N, S, P, patches, NULL, &info, why,
                        sizeof why) != 0) {
            free(patches);
            return util_err(err, errlen, "column %s: %s", col->column, why);
        }
        proto_msg_take_tensor(msg, col->column, PROTO_U8, 2, shape, patches);
        char key[PROTO_MAX_KEY];
        snprintf(key, sizeof key, "%s.grid", col->column);
        proto_msg_set_int(msg, key, g);
        snprintf(key, sizeof key, "%s.frames", col->column);
        proto_msg_set_int(msg, key, N);
    }
    return 0;
}
