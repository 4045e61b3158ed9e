/* decstage.c: see decstage.h. */
#include "decstage.h"

#include "util.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    decstage_col_t cols[DECSTAGE_MAX_COLS];
    int ncols;
} s_task_t;

struct decstage_t {
    const plan_t *plan;
    const char *what;          /* "the image's bytes": what a column must hold */
    decstage_free_fn free_fn;
    s_task_t *tasks;           /* (plan->ntasks) */
    unsigned char *data;       /* (plan->ntasks, DECSTAGE_MAX_COLS, col_size): cols' data */
};

/* Every template is scanned (||| alternatives may read different columns); a column
 * used twice keeps its first slot, as the plan's column table does. */
int decstage_slots(const taskplan_t *tp, mod_t mod, const taskplan_slot_t **out, int max) {
    int n = 0;
    for (int t = 0; t < tp->ntmpls; t++) {
        const taskplan_template_t *tm = &tp->tmpls[t];
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            if (sl->target || sl->mod != mod || !sl->column)
                continue;
            bool seen = false;
            for (int k = 0; k < n; k++)
                seen |= strcmp(out[k]->column, sl->column) == 0;
            if (seen || n >= max)
                continue;
            out[n++] = sl;
        }
    }
    return n;
}

/* All of a tier's per-column state is made here, up front, so that nothing costly
 * (an FFTW plan, say) is ever built while samples flow. */
decstage_t *decstage_new(const plan_t *plan, mod_t mod, const char *what, size_t col_size,
                         decstage_setup_fn setup_fn, decstage_free_fn free_fn, void *ctx,
                         char *err, size_t errlen) {
    decstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    self->what = what;
    self->free_fn = free_fn;
    size_t ntasks = (size_t)(plan->ntasks ? plan->ntasks : 1);
    self->tasks = util_calloc(ntasks, sizeof(s_task_t));
    self->data = util_calloc(ntasks * DECSTAGE_MAX_COLS, col_size);
    for (int t = 0; t < plan->ntasks; t++) {
        const taskplan_t *tp = plan->tasks[t].plan;
        s_task_t *st = &self->tasks[t];
        const taskplan_slot_t *slots[DECSTAGE_MAX_COLS];
        int n = decstage_slots(tp, mod, slots, DECSTAGE_MAX_COLS);
        for (int c = 0; c < n; c++) {
            decstage_col_t *col = &st->cols[c];
            col->column = slots[c]->column;
            col->slot = slots[c];
            col->data = self->data + ((size_t)t * DECSTAGE_MAX_COLS + (size_t)c) * col_size;
            if (setup_fn && setup_fn(ctx, tp, col, err, errlen) != 0) {
                decstage_destroy(&self);
                return NULL;
            }
            st->ncols++;
        }
    }
    return self;
}

void decstage_destroy(decstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    decstage_t *self = *self_p;
    for (int t = 0; self->free_fn && t < self->plan->ntasks; t++)
        for (int c = 0; c < self->tasks[t].ncols; c++)
            self->free_fn(self->tasks[t].cols[c].data);
    free(self->data);
    free(self->tasks);
    free(self);
    *self_p = NULL;
}

int decstage_process(const decstage_t *self, proto_msg_t *msg, decstage_column_fn fn,
                     void *ctx, char *err, size_t errlen) {
    const char *task = proto_msg_task(msg);
    decstage_sample_t s = {.task = plan_task_index(self->plan, task)};
    if (s.task < 0)
        return util_err(err, errlen, "unknown task '%s' (not in the plan)", task);
    s.id = proto_msg_n_ids(msg) > 0 ? proto_msg_ids(msg)[0] : 0;
    const proto_field_t *split = proto_msg_get(msg, "split");
    s.train = split && split->type == PV_STR && !strcmp(split->data, "train");
    const s_task_t *st = &self->tasks[s.task];
    for (int c = 0; c < st->ncols; c++) {
        const decstage_col_t *col = &st->cols[c];
        const proto_field_t *f = proto_msg_get(msg, col->column);
        if (!f)
            return util_err(err, errlen, "column %s: missing from the sample", col->column);
        if (f->type != PV_BIN && f->type != PV_STR)
            return util_err(err, errlen, "column %s: expected %s, got a %s", col->column,
                            self->what, f->type == PV_TENSOR ? "tensor" : "number");
        if (fn(ctx, col, f, &s, msg, err, errlen) != 0)
            return -1;
    }
    return 0;
}

void decstage_set_int(proto_msg_t *msg, const char *column, const char *suffix, int64_t v) {
    char key[PROTO_MAX_KEY];
    snprintf(key, sizeof key, "%s.%s", column, suffix);
    proto_msg_set_int(msg, key, v);
}
