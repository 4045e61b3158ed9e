/* imgtask.c: see imgtask.h. */
#include "imgtask.h"

#include "decstage.h"
#include "util.h"

/* The column's side S and patch P: the slot's own attributes, else the plan's. */
void img_task_col(const taskplan_t *tp, const taskplan_slot_t *sl, img_fit_t fit,
                  img_task_col_t *out) {
    out->column = sl->column;
    out->size = sl->in->image_size ? sl->in->image_size : tp->opts.image_size;
    out->patch = sl->in->patch ? sl->in->patch : tp->opts.patch;
    out->fit = fit;
}

int img_task_columns(const taskplan_t *tp, img_fit_t fit, img_task_col_t *out, int max) {
    const taskplan_slot_t **slots = util_calloc((size_t)(max > 0 ? max : 1), sizeof *slots);
    int n = decstage_slots(tp, MOD_IMAGE, slots, max);
    for (int k = 0; k < n; k++)
        img_task_col(tp, slots[k], fit, &out[k]);
    free(slots);
    return n;
}

int img_task_run(img_ctx_t *ctx, const img_task_col_t *col, const uint8_t *data,
                 size_t len, uint8_t *patches, int *grid, int *src_w, int *src_h,
                 char *err, size_t errlen) {
    char why[400];
    if (img_process(ctx, data, len, col->fit, col->size, col->patch, patches, grid, NULL, why,
                    sizeof why) != 0)
        return util_err(err, errlen, "column %s: %s", col->column, why);
    img_last_source(ctx, src_w, src_h, NULL);
    return 0;
}
