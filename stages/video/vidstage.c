/* vidstage.c: see vidstage.h. */
#include "vidstage.h"

#include "decstage.h"
#include "taskplan.h"
#include "util.h"

#include <stdlib.h>

typedef struct {
    int frames, size, patch; /* N, S, P */
} s_col_t;

struct vidstage_t {
    const plan_t *plan;
    vid_ctx_t *ctx;
    decstage_t *cols;        /* each column's data: its s_col_t */
};

int vidstage_geometry(const taskplan_t *tp, const taskplan_slot_t *slot, int *frames,
                      int *size, int *patch, char *err, size_t errlen) {
    const instr_slot_t *in = slot->in;
    int N = in->frames ? in->frames : tp->opts.frames;
    int S = in->image_size ? in->image_size : tp->opts.image_size;
    int P = in->patch ? in->patch : tp->opts.patch;
    if (N <= 0)
        N = 8;
    if (N > VID_MAX_SAMPLE)
        return util_err(err, errlen, "column %s: frames=%d, at most %d", slot->column, N,
                        VID_MAX_SAMPLE);
    if (P <= 0 || S < P || S % P)
        return util_err(err, errlen, "column %s: size %d is not a multiple of patch %d",
                        slot->column, S, P);
    *frames = N, *size = S, *patch = P;
    return 0;
}

vid_opts_t vidstage_limits(const plan_t *plan, const vid_opts_t *opts) {
    /* The plan's limits, unless the program was given --max-frames. */
    vid_opts_t o = opts ? *opts : (vid_opts_t){0};
    if (o.max_frames <= 0)
        o.max_frames = plan->limits.video_frames;
    if (o.max_seconds <= 0)
        o.max_seconds = plan->limits.video_seconds;
    return o;
}

/* N, S and P of a column (vidstage_geometry). */
static int s_col_setup(void *ctx, const taskplan_t *tp, decstage_col_t *col, char *err,
                       size_t errlen) {
    (void)ctx;
    s_col_t c;
    if (vidstage_geometry(tp, col->slot, &c.frames, &c.size, &c.patch, err, errlen) != 0)
        return -1;
    *(s_col_t *)col->data = c;
    return 0;
}

vidstage_t *vidstage_new(const plan_t *plan, const vid_opts_t *opts, char *err,
                         size_t errlen) {
    vidstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    vid_opts_t o = vidstage_limits(plan, opts);
    self->ctx = vid_ctx_new(&o);
    self->cols = decstage_new(plan, MOD_VIDEO, "the video file's bytes", sizeof(s_col_t),
                              s_col_setup, NULL, NULL, err, errlen);
    if (!self->cols)
        vidstage_destroy(&self);
    return self;
}

void vidstage_destroy(vidstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    vidstage_t *self = *self_p;
    vid_ctx_destroy(&self->ctx);
    decstage_destroy(&self->cols);
    free(self);
    *self_p = NULL;
}

static int s_column(void *ctx, const decstage_col_t *col, const proto_field_t *f,
                    const decstage_sample_t *s, proto_msg_t *msg, char *err, size_t errlen) {
    (void)s;
    vidstage_t *self = ctx;
    const s_col_t *c = col->data;
    int N = c->frames, S = c->size, P = c->patch, g = S / P;
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
    decstage_set_int(msg, col->column, "grid", g);
    decstage_set_int(msg, col->column, "frames", N);
    return 0;
}

int vidstage_process(vidstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    return decstage_process(self->cols, msg, s_column, self, err, errlen);
}
