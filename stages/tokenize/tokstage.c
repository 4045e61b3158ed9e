/* tokstage.c: see tokstage.h. */
#include "tokstage.h"

#include "util.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    tok_ctx_t *train, *eval;     /* masking on / off */
    char why[400];               /* when both are NULL: the reason */
} s_task_t;

struct tokstage_t {
    const plan_t *plan;
    tok_bpe_t *bpe;
    s_task_t *tasks;             /* (plan->ntasks) */
    tok_value_t *vals;
    int vals_cap;
};

tokstage_t *tokstage_new(const plan_t *plan, tok_bpe_t *bpe,
                         void (*warn)(void *arg, const char *task, const char *reason),
                         void *warn_arg) {
    tokstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    self->bpe = bpe;
    self->tasks = util_calloc((size_t)(plan->ntasks ? plan->ntasks : 1), sizeof(s_task_t));
    for (int t = 0; t < plan->ntasks; t++) {
        const plan_task_t *task = &plan->tasks[t];
        s_task_t *st = &self->tasks[t];
        tok_opts_t o = {.seed = (uint64_t)plan->seed};
        st->train = tok_ctx_new(task->plan, bpe, &o, st->why, sizeof st->why);
        o.no_masking = true;
        if (st->train)
            st->eval = tok_ctx_new(task->plan, bpe, &o, st->why, sizeof st->why);
        if (!st->train && warn)
            warn(warn_arg, task->name, st->why);
    }
    return self;
}

void tokstage_destroy(tokstage_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tokstage_t *self = *self_p;
    for (int t = 0; t < self->plan->ntasks; t++) {
        tok_ctx_destroy(&self->tasks[t].train);
        tok_ctx_destroy(&self->tasks[t].eval);
    }
    free(self->tasks);
    free(self->vals);
    free(self);
    *self_p = NULL;
}

/* "<col>.<suffix>" as an int, 0 when absent (an image that did not come through
 * ofa-image has no size, and boxes then must be normalised). */
static int64_t s_get_int(const proto_msg_t *m, const char *col, const char *suffix) {
    char key[PROTO_MAX_KEY];
    snprintf(key, sizeof key, "%s.%s", col, suffix);
    return proto_msg_get_int(m, key, 0);
}

/* Renames "<from>.<suffix>" to "img.<suffix>" when present. */
static void s_rename_aux(proto_msg_t *m, const char *from, const char *suffix) {
    char a[PROTO_MAX_KEY], b[PROTO_MAX_KEY];
    snprintf(a, sizeof a, "%s.%s", from, suffix);
    snprintf(b, sizeof b, "img.%s", suffix);
    if (proto_msg_get(m, a))
        proto_msg_rename(m, a, b);
}

int tokstage_process(tokstage_t *self, proto_msg_t *msg, char *err, size_t errlen) {
    const char *task = proto_msg_task(msg);
    int t = plan_task_index(self->plan, task);
    if (t < 0)
        return util_err(err, errlen, "unknown task '%s' (not in the plan)", task);
    /* Two contexts per task: masking and noise are for training only, and the samples of
     * the valid split must give the same input on every evaluation. */
    s_task_t *st = &self->tasks[t];
    if (!st->train)
        return util_err(err, errlen, "task %s: %s", task, st->why);
    const taskplan_t *tp = self->plan->tasks[t].plan;
    if (proto_msg_n_ids(msg) != 1)
        return util_err(err, errlen, "a sample carries one id, this one %d",
                        proto_msg_n_ids(msg));
    const char *split = proto_msg_get_str(msg, "split");
    bool train = !split || strcmp(split, "valid") != 0;

    /* One value per column the plan reads; what is absent is left out, and tok_build
     * names it if the chosen template needs it. */
    if (self->vals_cap < tp->ncolumns) {
        self->vals_cap = tp->ncolumns;
        self->vals = util_realloc(self->vals, (size_t)self->vals_cap * sizeof(tok_value_t));
    }
    int nv = 0;
    for (int c = 0; c < tp->ncolumns; c++) {
        const taskplan_column_t *col = &tp->columns[c];
        const proto_field_t *f = proto_msg_get(msg, col->name);
        if (!f)
            continue;
        tok_value_t *v = &self->vals[nv++];
        memset(v, 0, sizeof *v);
        v->column = col->name;
        if (mod_is_textlike(col->mod)) {
            if (f->type == PV_STR || f->type == PV_BIN) {
                v->text = f->data ? f->data : "";
                v->len = f->len;
            }
        } else if (f->type == PV_TENSOR && f->ndim >= 1 && f->shape[0] > 0 &&
                   f->shape[0] <= INT32_MAX) {
            if (col->mod == MOD_IMAGE && f->dtype != PROTO_U8)
                return util_err(err, errlen, "column %s: image patches must be u8, got %s",
                                col->name, proto_dtype_name(f->dtype));
            v->npos = (int)f->shape[0];
            v->width = (int)s_get_int(msg, col->name, "width");
            v->height = (int)s_get_int(msg, col->name, "height");
        }
    }
    tok_sample_t sample = {.id = proto_msg_ids(msg)[0], .values = self->vals, .nvalues = nv,
                           .epoch = (int)proto_msg_get_int(msg, "epoch", 0)};
    tok_result_t r;
    if (tok_build(train ? st->train : st->eval, &sample, &r, err, errlen) != 0)
        return -1;

    int64_t s = r.src_len, tl = r.tgt_len;
    proto_msg_set_tensor(msg, "src_tok", PROTO_I32, 1, &s, r.src_tok);
    proto_msg_set_tensor(msg, "src_mod", PROTO_U8, 1, &s, r.src_mod);
    proto_msg_set_tensor(msg, "tgt_in", PROTO_I32, 1, &tl, r.tgt_in);
    proto_msg_set_tensor(msg, "tgt_out", PROTO_I32, 1, &tl, r.tgt_out);
    proto_msg_set_str(msg, "ref", r.ref);
    proto_msg_set_int(msg, "tok.src_cut", r.src_cut);
    proto_msg_set_int(msg, "tok.tgt_cut", r.tgt_cut);
    proto_msg_set_int(msg, "tok.masked", r.masked);
    if (r.image_column && strcmp(r.image_column, "img") != 0) {
        /* The batcher and the model know the image as "img" whatever the column. */
        proto_msg_remove(msg, "img");
        proto_msg_rename(msg, r.image_column, "img");
        s_rename_aux(msg, r.image_column, "grid");
        s_rename_aux(msg, r.image_column, "width");
        s_rename_aux(msg, r.image_column, "height");
    }
    return 0;
}
