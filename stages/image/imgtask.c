/* imgtask.c: see imgtask.h. */
#include "imgtask.h"

#include "util.h"

#include <string.h>

/* All templates are scanned because ||| alternatives may use different image columns
 * (or sizes); a column shared by several keeps the first slot's size, as the plan's
 * column table does. */
int img_task_columns(const taskplan_t *tp, img_fit_t fit, img_task_col_t *out, int max) {
    int n = 0;
    for (int t = 0; t < tp->ntmpls; t++) {
        const taskplan_template_t *tm = &tp->tmpls[t];
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            if (sl->target || sl->mod != MOD_IMAGE || !sl->column)
                continue;
            bool seen = false;
            for (int k = 0; k < n; k++)
                seen |= strcmp(out[k].column, sl->column) == 0;
            if (seen || n >= max)
                continue;
            out[n].column = sl->column;
            out[n].size = sl->in->image_size ? sl->in->image_size : tp->opts.image_size;
            out[n].patch = sl->in->patch ? sl->in->patch : tp->opts.patch;
            out[n].fit = fit;
            n++;
        }
    }
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
