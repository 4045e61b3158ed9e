/* imgstage.c: see imgstage.h. */
#include "imgstage.h"

#include "decstage.h"
#include "util.h"

#include <stdlib.h>

struct imgstage_t {
    img_ctx_t *ctx;
    img_fit_t fit;
    decstage_t *cols;         /* each column's data: its img_task_col_t */
    uint64_t samples, images;
};

static int s_col_setup(void *ctx, const taskplan_t *tp, decstage_col_t *col, char *err,
                       size_t errlen) {
    (void)err, (void)errlen;
    const imgstage_t *self = ctx;
    img_task_col(tp, col->slot, self->fit, col->data);
    return 0;
}

imgstage_t *imgstage_new(const plan_t *plan, img_fit_t fit, const img_opts_t *opts) {
    imgstage_t *self = util_calloc(1, sizeof *self);
    self->fit = fit;
    /* The plan's limits.image_pixels, unless the program was given --max-pixels. */
    img_opts_t o = opts ? *opts : (img_opts_t){0};
    if (!o.max_pixels && plan->limits.image_pixels > 0)
        o.max_pixels = (uint64_t)plan->limits.image_pixels;
    self->ctx = img_ctx_new(&o);
    if (!self->ctx) {
        free(self);
        return NULL;
    }
    self->cols = decstage_new(plan, MOD_IMAGE, "the image's bytes", sizeof(img_task_col_t),
                              s_col_setup, NULL, self, NULL, 0);
    return self;
}

void imgstage_destroy(imgstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    imgstage_t *self = *self_p;
    img_ctx_destroy(&self->ctx);
    decstage_destroy(&self->cols);
    free(self);
    *self_p = NULL;
}

void imgstage_counts(const imgstage_t *self, uint64_t *samples, uint64_t *images) {
    if (samples)
        *samples = self->samples;
    if (images)
        *images = self->images;
}

static int s_column(void *ctx, const decstage_col_t *col, const proto_field_t *f,
                    const decstage_sample_t *s, proto_msg_t *msg, char *err, size_t errlen) {
    (void)s;
    imgstage_t *self = ctx;
    const img_task_col_t *c = col->data;
    int S = c->size, P = c->patch, grid, w, h;
    int64_t shape[2] = {(int64_t)(S / P) * (S / P), (int64_t)P * P * 3};
    /* The output must outlive this call (the message takes it), so it is the one
     * allocation per image; every scratch buffer lives in the context. */
    uint8_t *patches = util_malloc((size_t)S * S * 3);
    if (img_task_run(self->ctx, c, f->data, f->len, patches, &grid, &w, &h, err,
                     errlen) != 0) {
        free(patches);
        return -1;
    }
    proto_msg_take_tensor(msg, col->column, PROTO_U8, 2, shape, patches);
    decstage_set_int(msg, col->column, "grid", grid);
    decstage_set_int(msg, col->column, "width", w);
    decstage_set_int(msg, col->column, "height", h);
    self->images++;
    return 0;
}

int imgstage_process(imgstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    if (decstage_process(self->cols, msg, s_column, self, err, errlen) != 0)
        return -1;
    self->samples++;
    return 0;
}
