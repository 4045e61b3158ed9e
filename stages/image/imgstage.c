/* imgstage.c: see imgstage.h. */
#include "imgstage.h"

#include "util.h"

#include <stdio.h>
#include <string.h>

#define MAX_COLS 8

typedef struct {
    img_task_col_t cols[MAX_COLS];
    int ncols;
} s_task_t;

struct imgstage_t {
    const plan_t *plan;
    img_ctx_t *ctx;
    s_task_t *tasks;          /* (plan->ntasks) */
    uint64_t samples, images;
};

imgstage_t *imgstage_new(const plan_t *plan, img_fit_t fit, const img_opts_t *opts) {
    imgstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    /* The plan's limits.image_pixels, unless the program was given --max-pixels. */
    img_opts_t o = opts ? *opts : (img_opts_t){0};
    if (!o.max_pixels && plan->limits.image_pixels > 0)
        o.max_pixels = (uint64_t)plan->limits.image_pixels;
    self->ctx = img_ctx_new(&o);
    if (!self->ctx) {
        free(self);
        return NULL;
    }
    self->tasks = util_calloc((size_t)(plan->ntasks ? plan->ntasks : 1), sizeof(s_task_t));
    for (int t = 0; t < plan->ntasks; t++)
        self->tasks[t].ncols = img_task_columns(plan->tasks[t].plan, fit, self->tasks[t].cols,
                                                MAX_COLS);
    return self;
}

void imgstage_destroy(imgstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    imgstage_t *self = *self_p;
    img_ctx_destroy(&self->ctx);
    free(self->tasks);
    free(self);
    *self_p = NULL;
}

void imgstage_counts(const imgstage_t *self, uint64_t *samples, uint64_t *images) {
    if (samples)
        *samples = self->samples;
    if (images)
        *images = self->images;
}

/* The columns come from the task plan, not from the message: a field the plan does not
 * name as an IMAGE slot passes through untouched, and a missing one is a reject. */
int imgstage_process(imgstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    const char *task = proto_msg_task(msg);
    int t = plan_task_index(self->plan, task);
    if (t < 0)
        return util_err(err, errlen, "unknown task '%s' (not in the plan)", task);
    const s_task_t *st = &self->tasks[t];
    for (int c = 0; c < st->ncols; c++) {
        const img_task_col_t *col = &st->cols[c];
        const proto_field_t *f = proto_msg_get(msg, col->column);
        if (!f)
            return util_err(err, errlen, "column %s: missing from the sample", col->column);
        if (f->type != PV_BIN && f->type != PV_STR)
            return util_err(err, errlen, "column %s: expected the image's bytes, got a %s",
                            col->column, f->type == PV_TENSOR ? "tensor" : "number");
        int S = col->size, P = col->patch, grid, w, h;
        int64_t shape[2] = {(int64_t)(S / P) * (S / P), (int64_t)P * P * 3};
        /* The output must outlive this call (the message takes it), so it is the one
         * allocation per image; every scratch buffer lives in the context. */
        uint8_t *patches = util_malloc((size_t)S * S * 3);
        if (img_task_run(self->ctx, col, f->data, f->len, patches, &grid, &w, &h, err,
                         errlen) != 0) {
            free(patches);
            return -1;
        }
        proto_msg_take_tensor(msg, col->column, PROTO_U8, 2, shape, patches);
        char key[PROTO_MAX_KEY];
        snprintf(key, sizeof key, "%s.grid", col->column);
        proto_msg_set_int(msg, key, grid);
        snprintf(key, sizeof key, "%s.width", col->column);
        proto_msg_set_int(msg, key, w);
        snprintf(key, sizeof key, "%s.height", col->column);
        proto_msg_set_int(msg, key, h);
        self->images++;
    }
    self->samples++;
    return 0;
}
