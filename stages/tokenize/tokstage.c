/* tokstage.c: see tokstage.h. */
#include "tokstage.h"

#include "util.h"

#include <math.h>
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
    int stack;                   /* audio frames per position (model.audio_stack) */
};

tokstage_t *tokstage_new(const plan_t *plan, tok_bpe_t *bpe,
                         void (*warn)(void *arg, const char *task, const char *reason),
                         void *warn_arg) {
    tokstage_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    self->bpe = bpe;
    self->stack = plan->model.audio_stack > 0 ? plan->model.audio_stack : 4;
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

void tokstage_warn_stderr(void *arg, const char *task, const char *reason) {
    (void)arg;
    fprintf(stderr, "%s: warning: task %s cannot be tokenized, its samples will be "
            "rejected: %s\n", util_progname(), task, reason);
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

/* Renames "<from>.<suffix>" to "<to>.<suffix>" when present. */
static void s_rename_aux(proto_msg_t *m, const char *from, const char *to, const char *suffix) {
    char a[PROTO_MAX_KEY], b[PROTO_MAX_KEY];
    snprintf(a, sizeof a, "%s.%s", from, suffix);
    snprintf(b, sizeof b, "%s.%s", to, suffix);
    if (proto_msg_get(m, a)) {
        proto_msg_remove(m, b);
        proto_msg_rename(m, a, b);
    }
}

/* The batcher and the model know each modality's tensor by one name whatever the
 * column ("img", "vid", "mot"); its companion ints follow it. */
static void s_rename(proto_msg_t *m, const char *col, const char *to, const char *const *aux) {
    if (!col || strcmp(col, to) == 0)
        return;
    proto_msg_remove(m, to);
    proto_msg_rename(m, col, to);
    for (; *aux; aux++)
        s_rename_aux(m, col, to, *aux);
}

int tok_audio_stack(const float *x, int64_t F, int C, int k, float *out) {
    int64_t n = (F + k - 1) / k;
    memset(out, 0, sizeof(float) * (size_t)(n * k * C));
    /* Mean and variance of each mel bin over the utterance, in double: the log-mel values
     * sit around -15..10 with a per-recording offset (gain, microphone) that the model
     * should not have to learn. */
    for (int c = 0; c < C; c++) {
        double sum = 0, sq = 0;
        for (int64_t t = 0; t < F; t++) {
            double v = x[t * C + c];
            sum += v;
            sq += v * v;
        }
        double mean = sum / (double)F, var = sq / (double)F - mean * mean;
        double inv = 1.0 / sqrt(var > 1e-10 ? var : 1e-10);
        for (int64_t t = 0; t < F; t++)
            out[(t / k) * k * C + (t % k) * C + c] = (float)((x[t * C + c] - mean) * inv);
    }
    return (int)n;
}

/* Replace the audio column's (F, C) frames by "aud" (ceil(F/k), k*C), stacked and
 * normalised. */
static void s_stack_audio(proto_msg_t *m, const char *col, int k) {
    const proto_field_t *f = proto_msg_get(m, col);
    int64_t F = f->shape[0], C = f->shape[1];
    int64_t n = (F + k - 1) / k;
    float *out = util_malloc(sizeof(float) * (size_t)(n * k * C));
    /* an inline bin may sit at any offset of its frame: read the floats from a copy */
    float *x = util_malloc(sizeof(float) * (size_t)(F * C) + 1);
    memcpy(x, f->data, sizeof(float) * (size_t)(F * C));
    tok_audio_stack(x, F, (int)C, k, out);
    free(x);
    int64_t shape[2] = {n, k * C};
    char key[PROTO_MAX_KEY];
    snprintf(key, sizeof key, "%s.frames", col);
    int64_t frames = proto_msg_get_int(m, key, F);
    proto_msg_remove(m, key);
    proto_msg_remove(m, col);
    if (strcmp(col, "aud") != 0)
        proto_msg_remove(m, "aud");
    proto_msg_take_tensor(m, "aud", PROTO_F32, 2, shape, out);
    proto_msg_set_int(m, "aud.frames", frames);
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
            if ((col->mod == MOD_IMAGE || col->mod == MOD_VIDEO) && f->dtype != PROTO_U8)
                return util_err(err, errlen, "column %s: %s patches must be u8, got %s",
                                col->name, col->mod == MOD_IMAGE ? "image" : "video",
                                proto_dtype_name(f->dtype));
            if ((col->mod == MOD_AUDIO || col->mod == MOD_MOTION) &&
                (f->dtype != PROTO_F32 || f->ndim != 2 || f->shape[1] < 1))
                return util_err(err, errlen, "column %s: %s frames must be an f32 (frames, "
                                "%s) tensor, got %s with %d dimensions", col->name,
                                col->mod == MOD_AUDIO ? "audio" : "motion",
                                col->mod == MOD_AUDIO ? "mel bins" : "channels",
                                proto_dtype_name(f->dtype), f->ndim);
            if (col->mod == MOD_VIDEO && (f->ndim != 2 || s_get_int(msg, col->name, "frames") < 1 ||
                                          f->shape[0] % s_get_int(msg, col->name, "frames")))
                return util_err(err, errlen, "column %s: video patches must be (frames*Np, "
                                "P*P*3) with %s.frames dividing the rows", col->name,
                                col->name);
            v->npos = (int)f->shape[0];
            /* k frames of 10 ms make one position: the last, partial group counts */
            if (col->mod == MOD_AUDIO)
                v->npos = (int)((f->shape[0] + self->stack - 1) / self->stack);
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
    static const char *const img_aux[] = {"grid", "width", "height", NULL};
    static const char *const vid_aux[] = {"grid", "frames", NULL};
    static const char *const mot_aux[] = {"frames", NULL};
    s_rename(msg, r.image_column, "img", img_aux);
    s_rename(msg, r.video_column, "vid", vid_aux);
    s_rename(msg, r.motion_column, "mot", mot_aux);
    if (r.audio_column)
        s_stack_audio(msg, r.audio_column, self->stack);
    return 0;
}
