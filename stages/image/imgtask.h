/* imgtask.h: what the image tier does for one task: which columns hold images and the
 * size, patch and fit each is prepared at.
 *
 * A column is an image column of a task when it fills a source IMAGE slot in any of the
 * task's templates. Its side S and patch P are the slot's own image_size= / patch=
 * attributes, else the plan's (taskplan_t.opts: the task's or the model's). The fit is
 * IMG_FIT_RESIZE (OFA's direct resize) unless the worker was told otherwise.
 *
 * img_task_run() is the whole per-column job of the worker, with no sockets: bytes in,
 * (Np, P*P*3) patches out, or a reject reason that names the column. */
#ifndef OFA_IMGTASK_H
#define OFA_IMGTASK_H

#include "imgproc.h"
#include "taskplan.h"

typedef struct {
    const char *column;   /* borrowed from the task plan */
    int size, patch;      /* S, P */
    img_fit_t fit;
} img_task_col_t;

/* Fills out[0..n) with the task's image columns (deduplicated by name, first use wins)
 * and returns n (at most max). */
int img_task_columns(const taskplan_t *tp, img_fit_t fit, img_task_col_t *out, int max);

/* Fills *out for the image column that slot sl of tp reads. */
void img_task_col(const taskplan_t *tp, const taskplan_slot_t *sl, img_fit_t fit,
                  img_task_col_t *out);

/* Patches of one column: patches must hold (S/P)^2 * P*P*3 bytes = S*S*3.
 * *grid = S/P; *src_w and *src_h = the image's size in the file. On failure returns -1
 * with err = "column NAME: reason". */
int img_task_run(img_ctx_t *ctx, const img_task_col_t *col, const uint8_t *data,
                 size_t len, uint8_t *patches, int *grid, int *src_w, int *src_h,
                 char *err, size_t errlen);

#endif
