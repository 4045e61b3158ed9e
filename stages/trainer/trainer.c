/* trainer.c: see trainer.h. */
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpe.h"
#include "ckpt.h"
#include "comm.h"
#include "gen.h"
#include "metrics.h"
#include "teval.h"
#include "tgen.h"
#include "tmodel.h"
#include "tokenize.h"
#include "trainlog.h"
#include "util.h"

#define CKPT_FORMAT "ofa-ckpt"
#define CKPT_VERSION "1"

/* A validation batch copied out of its message, kept until trainer_finish. */
typedef struct {
    trainer_batch_t b;      /* arrays below */
    char *task;
    uint64_t *ids;
    int32_t *src_tok, *src_len, *tgt_in, *tgt_out, *tgt_len;
    uint8_t *src_mod, *img, *vid;
    float *aud, *mot;
    char *refs;
} s_vbatch_t;

typedef struct {
    const plan_task_t *pt;
    taskplan_gen_t gen;
    int closed;             /* collect training targets for a closed set */
    double weight;          /* round_robin: the task's share of a step's gradient */
    int puzzle;             /* the metric is solved_acc: the prompt goes with the reference */
} s_task_t;

/* round_robin: a micro-batch summed into the pending step, kept for its metrics line. */
typedef struct {
    int task;
    float loss;
    int64_t ntok;
    int B;
    double wait_s;
} s_micro_t;

struct trainer_t {
    const plan_t *plan;
    trainer_opts_t opts;
    char run_dir[2048];
    char ckpt_dir[2200];
    char *bpe_bytes;        /* the BPE file, embedded in checkpoints */
    size_t bpe_len;
    tok_bpe_t *bpe;
    tmodel_t *model;
    teval_t *ev;
    trainlog_t *log;        /* rank 0 only */
    s_task_t *tasks;
    int ntasks;
    int64_t step, cursor, total, last_ckpt;
    util_rng_t rng;
    double elapsed;         /* training seconds, carried across resumes */
    float last_loss;
    int64_t n_batches, n_samples, n_skipped, n_bad;
    double busy_s;
    s_vbatch_t *valid;
    int nvalid, capvalid;
    /* trainer.multitask = round_robin: one optimizer step per round of micro-batches */
    int rr;
    int rr_tasks;           /* tasks with training rows: micro-batches in a full round */
    s_micro_t *rr_pending;  /* (ntasks) micro-batches summed so far in this round */
    int rr_n;
    int64_t rr_last;        /* batch step of the last micro-batch summed */
};

/* The model library has its own schedule (model_lr_at, 0-based); the trainer keeps this
 * 1-based one because its step numbers are the ones written to metrics.jsonl and the
 * checkpoint, and tests pin the exact values. */
double trainer_schedule(double lr, int64_t warmup, int64_t total, int64_t step) {
    if (step < 1)
        step = 1;
    if (warmup > 0 && step <= warmup)
        return lr * (double)step / (double)warmup;
    if (total <= warmup || step >= total)
        return step >= total && total > warmup ? 0.0 : lr;
    double p = (double)(step - warmup) / (double)(total - warmup);
    return lr * 0.5 * (1.0 + cos(M_PI * p));
}

/* Non-empty lines of a file (rows of a TSV or JSONL file); -1 if unreadable. Counting
 * is a read of the files at start-up only (MB/s of I/O, once), cheaper and simpler than
 * asking the source, which may not have started yet. */
static int64_t s_count_rows(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int64_t n = 0;
    int c, prev = '\n', nonempty = 0;
    char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < got; i++) {
            c = (unsigned char)buf[i];
            if (c == '\n') {
                n += nonempty;
                nonempty = 0;
            } else if (c != '\r') {
                nonempty = 1;
            }
            prev = c;
        }
    (void)prev;
    n += nonempty;
    fclose(f);
    return n;
}

static int s_round_robin(const plan_t *plan) {
    return plan->trainer.multitask && strcmp(plan->trainer.multitask, "round_robin") == 0;
}

/* The schedule's T. sample: every batch is a step, so the sum of the tasks' batches;
 * round_robin: every round is a step, so the batches of the longest task (source.h).
 * active[t] (may be NULL) is set to whether task t has training rows. */
static int64_t s_estimate_total(const plan_t *plan, int world, uint8_t *active) {
    int rr = s_round_robin(plan);
    int64_t total = 0;
    for (int t = 0; t < plan->ntasks; t++) {
        const plan_task_t *pt = &plan->tasks[t];
        int64_t rows = 0;
        for (int i = 0; i < pt->ntrain; i++) {
            int64_t r = s_count_rows(pt->train[i]);
            if (r > 0)
                rows += r;
        }
        if (pt->max_rows > 0 && rows > pt->max_rows)
            rows = pt->max_rows;
        if (active)
            active[t] = rows > 0 && pt->epochs > 0;
        int bs = pt->batch_size > 0 ? pt->batch_size : 1;
        int64_t n = (rows + bs - 1) / bs * (pt->epochs > 0 ? pt->epochs : 1);
        total = rr ? (n > total ? n : total) : total + n;
    }
    if (plan->trainer.max_steps > 0)
        return plan->trainer.max_steps;
    if (world > 1)
        total = (total + world - 1) / world;
    return total > 0 ? total : 1;
}

static s_task_t *s_find_task(trainer_t *self, const char *name) {
    for (int i = 0; i < self->ntasks; i++)
        if (!strcmp(self->tasks[i].pt->name, name))
            return &self->tasks[i];
    return NULL;
}

/* ---------------------------------------------------------------- checkpoints */

/* Restore weights, moments, counters and closed sets of checkpoint `step`. The weights
 * are checked against the model built from the plan: a plan edited between the run and
 * its resume (another size, another BPE) is refused instead of half-loaded. */
static int s_load_checkpoint(trainer_t *self, int64_t step, char *err, size_t errlen) {
    char p[2400];
    ckpt_path(self->ckpt_dir, step, "safetensors", p, sizeof p);
    ckpt_file_t *f = ckpt_file_open(p, err, errlen);
    if (!f)
        return -1;
    int rc = -1;
    ckpt_state_t st = {0};
    const char *fmt = ckpt_file_meta(f, "format"), *ver = ckpt_file_meta(f, "version");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) || !ver || strcmp(ver, CKPT_VERSION)) {
        util_err(err, errlen, "%s: not an %s version %s checkpoint", p, CKPT_FORMAT, CKPT_VERSION);
        goto out;
    }
    int n = tmodel_n_params(self->model);
    if (tmodel_load_weights(self->model, f, p, err, errlen) != 0)
        goto out;
    for (int i = 0; i < self->ntasks; i++) {
        char name[256];
        snprintf(name, sizeof name, "meta.closed_set.%s", self->tasks[i].pt->name);
        const ckpt_tensor_t *t = ckpt_file_find(f, name);
        if (t && t->dtype == CKPT_I32 &&
            teval_load_flat(self->ev, self->tasks[i].pt->name, t->data, (int64_t)(t->nbytes / 4),
                            err, errlen) != 0)
            goto out;
    }
    ckpt_path(self->ckpt_dir, step, "state", p, sizeof p);
    if (ckpt_state_read(p, &st, err, errlen) != 0)
        goto out;
    tmodel_sync_host(self->model);
    if (st.n != n) {
        util_err(err, errlen, "%s: %d moment tensors, the model has %d", p, st.n, n);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        tmodel_param_t pm;
        tmodel_param(self->model, i, &pm);
        if (strcmp(st.names[i], pm.name) || st.numel[i] != pm.numel) {
            util_err(err, errlen, "%s: moments of %s do not match weight %s", p, st.names[i], pm.name);
            goto out;
        }
        memcpy(pm.m, st.m[i], sizeof(float) * pm.numel);
        memcpy(pm.v, st.v[i], sizeof(float) * pm.numel);
    }
    self->step = st.step;
    self->cursor = st.cursor;
    self->rng.s = st.rng;
    self->elapsed = st.elapsed_s;
    self->last_ckpt = st.step;
    tmodel_sync_device(self->model);
    /* One AdamW step per trained batch, so the optimizer's t is the step count. */
    tmodel_set_adam_t(self->model, st.step);
    rc = 0;
out:
    ckpt_state_free(&st);
    ckpt_file_destroy(&f);
    return rc;
}

int trainer_checkpoint(trainer_t *self, char *err, size_t errlen) {
    /* Ranks hold the same data cursor rule and (without all-reduce) rank 0's weights are
     * the ones a resume needs; one writer avoids ranks racing on the same files. */
    if (self->opts.rank != 0)
        return 0;
    int n = tmodel_n_params(self->model);
    tmodel_sync_host(self->model);
    int ncs = 0;
    for (int i = 0; i < self->ntasks; i++)
        ncs += self->tasks[i].closed;
    ckpt_tensor_t *t = util_calloc(n + 1 + ncs, sizeof(ckpt_tensor_t));
    char **names = util_calloc(n + 1, sizeof(char *));
    float **m = util_calloc(n + 1, sizeof(float *)), **v = util_calloc(n + 1, sizeof(float *));
    int64_t *numel = util_calloc(n + 1, sizeof(int64_t));
    for (int i = 0; i < n; i++) {
        tmodel_param_t pm;
        tmodel_param(self->model, i, &pm);
        t[i] = (ckpt_tensor_t){.name = pm.name, .dtype = CKPT_F32, .ndim = pm.ndim, .data = pm.w};
        memcpy(t[i].shape, pm.shape, sizeof(int64_t) * pm.ndim);
        names[i] = (char *)pm.name;
        numel[i] = pm.numel;
        m[i] = pm.m;
        v[i] = pm.v;
    }
    int k = n;
    char (*csname)[160] = util_calloc(ncs + 1, sizeof *csname);
    int32_t **flat = util_calloc(ncs + 1, sizeof(int32_t *));
    int c = 0;
    for (int i = 0; i < self->ntasks; i++) {
        if (!self->tasks[i].closed)
            continue;
        int64_t len;
        flat[c] = teval_targets_flat(self->ev, self->tasks[i].pt->name, &len);
        snprintf(csname[c], sizeof csname[c], "meta.closed_set.%s", self->tasks[i].pt->name);
        t[k++] = (ckpt_tensor_t){.name = csname[c], .dtype = CKPT_I32, .ndim = 1, .shape = {len},
                                 .data = flat[c]};
        c++;
    }
    /* The BPE bytes go last: every tensor before it keeps 4-byte alignment. */
    t[k++] = (ckpt_tensor_t){.name = "meta.bpe", .dtype = CKPT_U8, .ndim = 1,
                             .shape = {(int64_t)self->bpe_len}, .data = self->bpe_bytes};
    char *plan_text = plan_resolved_text(self->plan);
    char sstep[32], svocab[32];
    snprintf(sstep, sizeof sstep, "%lld", (long long)self->step);
    snprintf(svocab, sizeof svocab, "%d", tmodel_vocab(self->model));
    ckpt_meta_t meta[] = {
        {"format", CKPT_FORMAT}, {"version", CKPT_VERSION}, {"step", sstep},
        {"model", self->plan->model.size}, {"vocab", svocab}, {"plan", plan_text},
    };
    ckpt_state_t st = {.step = self->step, .cursor = self->cursor, .rng = self->rng.s,
                       .elapsed_s = self->elapsed, .n = n, .names = names, .numel = numel,
                       .m = m, .v = v};
    int rc = ckpt_save(self->ckpt_dir, self->step, t, k, meta, (int)(sizeof meta / sizeof meta[0]),
                       &st, self->plan->trainer.keep_checkpoints, err, errlen);
    if (rc == 0)
        self->last_ckpt = self->step;
    for (int i = 0; i < c; i++)
        free(flat[i]);
    free(flat);
    free(csname);
    free(plan_text);
    free(t);
    free(names);
    free(m);
    free(v);
    free(numel);
    return rc;
}

/* ---------------------------------------------------------------- set-up */

trainer_t *trainer_new(const plan_t *plan, const trainer_opts_t *opts, char *err, size_t errlen) {
    trainer_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    self->opts = *opts;
    if (self->opts.world < 1)
        self->opts.world = 1;
    self->cursor = -1;
    self->last_ckpt = -1;
    self->rng.s = (uint64_t)plan->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)self->opts.rank;
    snprintf(self->run_dir, sizeof self->run_dir, "%s", opts->run_dir ? opts->run_dir : plan->run_dir);
    snprintf(self->ckpt_dir, sizeof self->ckpt_dir, "%s/checkpoints", self->run_dir);
    char bpe_path[2200];
    snprintf(bpe_path, sizeof bpe_path, "%s", opts->bpe_path ? opts->bpe_path : "");
    if (!opts->bpe_path)
        snprintf(bpe_path, sizeof bpe_path, "%s/bpe.bin", self->run_dir);
    self->bpe_bytes = util_read_file(bpe_path, &self->bpe_len, err, errlen);
    if (!self->bpe_bytes)
        goto fail;
    self->bpe = tok_bpe_parse(self->bpe_bytes, self->bpe_len, err, errlen);
    if (!self->bpe)
        goto fail;
    self->ntasks = plan->ntasks;
    self->tasks = util_calloc(plan->ntasks ? plan->ntasks : 1, sizeof(s_task_t));
    for (int i = 0; i < plan->ntasks; i++) {
        const plan_task_t *pt = &plan->tasks[i];
        self->tasks[i].pt = pt;
        self->tasks[i].gen = pt->plan->gen;
        self->tasks[i].closed = pt->plan->gen == GEN_CLOSED_SET;
        self->tasks[i].weight = pt->weight > 0 ? pt->weight : 1.0;
        const char *metric = pt->metric ? pt->metric : pt->plan->metric;
        self->tasks[i].puzzle = metric && strstr(metric, "solved_acc") != NULL;
        if (taskplan_runnable(pt->plan, err, errlen) != 0) {
            char e2[512];
            snprintf(e2, sizeof e2, "%s", err);
            util_err(err, errlen, "task %s: %s", pt->name, e2);
            goto fail;
        }
    }
    /* trainer.threads = 0: the cores of this machine shared among the ranks. */
    int threads = opts->threads > 0 ? opts->threads : plan->trainer.threads;
    if (threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc > 0 ? (int)(nc / self->opts.world) : 1;
        threads = threads > 0 ? threads : 1;
    }
    tmodel_cfg_t cfg = {
        .size = plan->model.size, .vocab = tok_bpe_vocab_size(self->bpe),
        .max_src_len = plan->model.max_src_len, .max_tgt_len = plan->model.max_tgt_len,
        .image_size = plan->model.image_size, .patch = plan->model.patch,
        .seed = (uint64_t)plan->seed, .threads = threads,
        .backend = plan->trainer.backend, .weight_decay = plan->trainer.weight_decay,
        .precision = plan->trainer.precision,
        .device = opts->comm ? comm_local_rank(opts->comm) : 0,
        .label_smoothing = plan->trainer.label_smoothing,
    };
    if (tmodel_cfg_adapters(&cfg, plan, err, errlen) != 0)
        goto fail;
    self->model = tmodel_new(&cfg, err, errlen);
    if (!self->model)
        goto fail;
    self->ev = teval_new();
    uint8_t *active = util_calloc(plan->ntasks + 1, 1);
    self->total = s_estimate_total(plan, self->opts.world, active);
    self->rr = s_round_robin(plan);
    if (self->rr) {
        /* Each task's share of a step: its weight over the weights of the tasks that
         * train, so a full round's gradient is their weighted mean. */
        double wsum = 0;
        for (int i = 0; i < plan->ntasks; i++) {
            self->rr_tasks += active[i];
            wsum += active[i] ? self->tasks[i].weight : 0;
        }
        for (int i = 0; i < plan->ntasks; i++)
            self->tasks[i].weight /= wsum > 0 ? wsum : 1;
        self->rr_pending = util_calloc(plan->ntasks + 1, sizeof *self->rr_pending);
        tmodel_accum_begin(self->model);
    }
    free(active);
    if (opts->resume) {
        int64_t s = ckpt_latest(self->ckpt_dir);
        if (s < 0) {
            if (!opts->quiet)
                fprintf(stderr, "%s: --resume: no checkpoint in %s, starting from scratch\n",
                        util_progname(), self->ckpt_dir);
        } else if (s_load_checkpoint(self, s, err, errlen) != 0) {
            goto fail;
        } else if (!opts->quiet) {
            fprintf(stderr, "%s: resumed from step %lld (skipping batches with step <= %lld)\n",
                    util_progname(), (long long)self->step, (long long)self->cursor);
        }
    }
    /* The trainer group: every rank starts from rank 0's state (trainer.h). */
    if (opts->comm && comm_world(opts->comm) > 1) {
        if (plan->trainer.multitask && !strcmp(plan->trainer.multitask, "round_robin")) {
            util_err(err, errlen, "trainer.multitask = round_robin with %d ranks: the group "
                     "step is not implemented for it yet (use trainer.ranks = 1)",
                     comm_world(opts->comm));
            goto fail;
        }
        tmodel_set_comm(self->model, opts->comm);
        if (tmodel_group_bcast(self->model, err, errlen) != 0)
            goto fail;
    }
    if (self->opts.rank == 0) {
        char mp[2200];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", self->run_dir);
        if (util_mkdirs(self->run_dir, err, errlen) != 0)
            goto fail;
        self->log = trainlog_new(mp, opts->tty, err, errlen);
        if (!self->log)
            goto fail;
        trainlog_resume_at(self->log, self->step, plan->trainer.log_every);
    }
    return self;
fail:
    trainer_destroy(&self);
    return NULL;
}

static void s_vbatch_free(s_vbatch_t *v) {
    free(v->task); free(v->ids); free(v->src_tok); free(v->src_len); free(v->tgt_in);
    free(v->tgt_out); free(v->tgt_len); free(v->src_mod); free(v->img); free(v->refs);
    free(v->aud); free(v->vid); free(v->mot);
}

void trainer_destroy(trainer_t **self_p) {
    if (!self_p || !*self_p)
        return;
    trainer_t *self = *self_p;
    if (self->log)   /* pending metrics lines (a run stopped by a signal) */
        trainlog_flush(self->log, self->step, trainer_lr_at(self, self->step));
    trainlog_destroy(&self->log);
    teval_destroy(&self->ev);
    tmodel_destroy(&self->model);
    tok_bpe_destroy(&self->bpe);
    for (int i = 0; i < self->nvalid; i++)
        s_vbatch_free(&self->valid[i]);
    free(self->valid);
    free(self->rr_pending);
    free(self->tasks);
    free(self->bpe_bytes);
    free(self);
    *self_p = NULL;
}

/* ---------------------------------------------------------------- batches */

/* Everything the model would index with values from the message is checked here, with
 * the batch's step and task in the reason: a bad batch costs one dropped batch and one
 * line on stderr, never the run. model_forward checks again (its own contract). */
static int s_check_batch(trainer_t *self, const trainer_batch_t *b, char *err, size_t errlen) {
    const int V = tmodel_vocab(self->model);
    if (!b->task || !s_find_task(self, b->task))
        return util_err(err, errlen, "batch %lld: unknown task '%s'", (long long)b->step,
                        b->task ? b->task : "(none)");
    if (b->B <= 0 || b->S <= 0 || b->T <= 0 || !b->src_tok || !b->src_mod || !b->src_len ||
        !b->tgt_in || !b->tgt_out)
        return util_err(err, errlen, "batch %lld (%s): missing tensors or empty shape B=%d S=%d T=%d",
                        (long long)b->step, b->task, b->B, b->S, b->T);
    if (b->S > self->plan->model.max_src_len || b->T > self->plan->model.max_tgt_len)
        return util_err(err, errlen, "batch %lld (%s): S=%d T=%d exceed the model's %d/%d positions",
                        (long long)b->step, b->task, b->S, b->T, self->plan->model.max_src_len,
                        self->plan->model.max_tgt_len);
    for (int i = 0; i < b->B; i++)
        if (b->src_len[i] < 1 || b->src_len[i] > b->S)
            return util_err(err, errlen, "batch %lld (%s): src_len[%d] = %d outside 1..%d",
                            (long long)b->step, b->task, i, b->src_len[i], b->S);
    /* Padded source positions (j >= src_len) carry no modality: ofa-batcher writes 255
     * there. Only real positions are checked; s_fix_mod clears the padding. */
    for (int r = 0; r < b->B; r++)
        for (int j = 0; j < b->S; j++) {
            int64_t i = (int64_t)r * b->S + j;
            if (b->src_tok[i] < 0 || b->src_tok[i] >= V)
                return util_err(err, errlen, "batch %lld (%s): source token %d at row %d position %d "
                                "outside the vocabulary of %d", (long long)b->step, b->task,
                                b->src_tok[i], r, j, V);
            if (j < b->src_len[r] && b->src_mod[i] >= MOD__COUNT)
                return util_err(err, errlen, "batch %lld (%s): modality %d at row %d position %d "
                                "is unknown", (long long)b->step, b->task, b->src_mod[i], r, j);
        }
    int64_t n = (int64_t)b->B * b->T;
    for (int64_t i = 0; i < n; i++)
        if (b->tgt_in[i] < 0 || b->tgt_in[i] >= V || b->tgt_out[i] < 0 || b->tgt_out[i] >= V)
            return util_err(err, errlen, "batch %lld (%s): target token at %lld outside the "
                            "vocabulary of %d", (long long)b->step, b->task, (long long)i, V);
    int image_pos = 0;   /* most image positions of a row */
    for (int r = 0; r < b->B; r++) {
        int k = 0;
        for (int j = 0; j < b->src_len[r]; j++)
            k += b->src_mod[(size_t)r * b->S + j] == MOD_IMAGE;
        image_pos = k > image_pos ? k : image_pos;
    }
    if (image_pos > 0) {
        if (!b->img)
            return util_err(err, errlen, "batch %lld (%s): image positions but no img tensor",
                            (long long)b->step, b->task);
        int P = self->plan->model.patch;
        if (b->patch_dim != P * P * 3 || b->Np < image_pos || b->grid <= 0)
            return util_err(err, errlen, "batch %lld (%s): img (%d, %d) grid %d does not fit %d "
                            "image positions of %dx%d patches", (long long)b->step, b->task,
                            b->Np, b->patch_dim, b->grid, image_pos, P, P);
    }
    return 0;
}

/* The loss tokens of row r of tgt_out before </s>: a training target of the task. */
static int s_row_target(const trainer_batch_t *b, int r, int32_t *out) {
    int n = 0;
    for (int t = 0; t < b->T; t++) {
        int32_t y = b->tgt_out[(size_t)r * b->T + t];
        if (y == TOK_EOS)
            break;
        if (y != TOK_PAD)
            out[n++] = y;
    }
    return n;
}

static void *s_dup(const void *p, size_t n) {
    if (!p)
        return NULL;
    void *q = util_malloc(n ? n : 1);
    memcpy(q, p, n);
    return q;
}

/* Validation batches arrive after all training batches, while the model is still
 * training on nothing: keeping copies and evaluating once at the end evaluates the final
 * weights, which is what eval.json reports. Validation splits are small. */
static void s_keep_valid(trainer_t *self, const trainer_batch_t *b) {
    if (self->nvalid == self->capvalid) {
        self->capvalid = self->capvalid ? 2 * self->capvalid : 16;
        self->valid = util_realloc(self->valid, sizeof(s_vbatch_t) * self->capvalid);
    }
    s_vbatch_t *v = &self->valid[self->nvalid++];
    memset(v, 0, sizeof *v);
    size_t BS = (size_t)b->B * b->S, BT = (size_t)b->B * b->T;
    v->task = util_strdup(b->task);
    v->ids = s_dup(b->ids, sizeof(uint64_t) * b->B);
    v->src_tok = s_dup(b->src_tok, 4 * BS);
    v->src_mod = s_dup(b->src_mod, BS);
    v->src_len = s_dup(b->src_len, 4 * b->B);
    v->tgt_in = s_dup(b->tgt_in, 4 * BT);
    v->tgt_out = s_dup(b->tgt_out, 4 * BT);
    v->tgt_len = s_dup(b->tgt_len, 4 * b->B);
    v->img = b->img ? s_dup(b->img, (size_t)b->B * b->Np * b->patch_dim) : NULL;
    v->aud = b->aud ? s_dup(b->aud, sizeof(float) * b->B * b->Fa * b->aud_dim) : NULL;
    v->vid = b->vid ? s_dup(b->vid, (size_t)b->B * b->Nf * b->Npv * b->vid_dim) : NULL;
    v->mot = b->mot ? s_dup(b->mot, sizeof(float) * b->B * b->Fm * b->mot_dim) : NULL;
    v->refs = b->refs ? util_strdup(b->refs) : NULL;
    v->b = *b;
    v->b.task = v->task, v->b.ids = v->ids, v->b.src_tok = v->src_tok, v->b.src_mod = v->src_mod;
    v->b.src_len = v->src_len, v->b.tgt_in = v->tgt_in, v->b.tgt_out = v->tgt_out;
    v->b.tgt_len = v->tgt_len, v->b.img = v->img, v->b.refs = v->refs;
    v->b.aud = v->aud, v->b.vid = v->vid, v->b.mot = v->mot;
}

/* A copy of src_mod with padded positions set to TEXT (0), which the model accepts
 * everywhere (their keys are masked by src_len anyway). Caller frees. */
static uint8_t *s_fix_mod(const trainer_batch_t *b) {
    uint8_t *m = util_malloc((size_t)b->B * b->S);
    for (int r = 0; r < b->B; r++)
        for (int j = 0; j < b->S; j++)
            m[(size_t)r * b->S + j] = j < b->src_len[r] ? b->src_mod[(size_t)r * b->S + j] : 0;
    return m;
}

static int s_feed(trainer_t *self, const trainer_batch_t *b, double wait_s, char *err, size_t errlen);

int trainer_feed(trainer_t *self, const trainer_batch_t *b0, double wait_s, char *err, size_t errlen) {
    if (s_check_batch(self, b0, err, errlen) != 0) {
        self->n_bad++;
        return -1;
    }
    trainer_batch_t b = *b0;
    uint8_t *mod = s_fix_mod(b0);
    b.src_mod = mod;
    int rc = s_feed(self, &b, wait_s, err, errlen);
    free(mod);
    return rc;
}

static int s_evaluate(trainer_t *self, char *err, size_t errlen);

static void s_after_step(trainer_t *self, char *err, size_t errlen);
static void s_rr_step(trainer_t *self, char *err, size_t errlen);

/* metrics.jsonl carries the peak memory so far (GPU bytes, or the CPU process's RSS). */
static void s_log_peak_mem(trainer_t *self) {
    const char *kind = NULL;
    int64_t bytes = tmodel_peak_mem(self->model, &kind);
    trainlog_set_peak_mem(self->log, kind, bytes);
}
static int s_feed_rr(trainer_t *self, s_task_t *task, const trainer_batch_t *b, double wait_s,
                     char *err, size_t errlen);

static int s_feed(trainer_t *self, const trainer_batch_t *b, double wait_s, char *err, size_t errlen) {
    if (b->valid) {
        /* Validation batches after the training ones: the last round is complete. */
        if (self->rr)
            s_rr_step(self, err, errlen);
        s_keep_valid(self, b);
        return 0;
    }
    s_task_t *task = s_find_task(self, b->task);
    /* Closed sets are collected before the skip rules below, so a resumed run (which
     * skips the batches it trained already) ends with the same answer set. */
    if (task->closed) {
        int32_t *tmp = util_malloc(sizeof(int32_t) * b->T);
        for (int r = 0; r < b->B; r++)
            teval_add_target(self->ev, b->task, tmp, s_row_target(b, r, tmp));
        free(tmp);
    }
    const plan_trainer_t *pt = &self->plan->trainer;
    if (b->step <= self->cursor || (pt->max_steps > 0 && self->step >= pt->max_steps)) {
        self->n_skipped++;
        return 0;
    }
    if (self->rr)
        return s_feed_rr(self, task, b, wait_s, err, errlen);
    double t0 = util_now();
    /* The schedule is a function of the optimizer step only, so a resumed run continues
     * it exactly where the checkpoint left it. */
    double lr = trainer_schedule(pt->lr, pt->warmup, self->total, self->step + 1);
    float loss = 0;
    int64_t ntok = 0;
    if (tmodel_train(self->model, b, lr, pt->clip, &loss, &ntok, err, errlen) != 0) {
        self->n_bad++;
        return -1;
    }
    self->step++;
    self->cursor = tmodel_group_cursor(self->model, b->step);
    self->last_loss = loss;
    self->n_batches++;
    self->n_samples += b->B;
    double dt = util_now() - t0;
    self->busy_s += dt;
    self->elapsed += dt + wait_s;
    if (self->log) {
        int last = self->step == self->total || (pt->max_steps > 0 && self->step == pt->max_steps);
        s_log_peak_mem(self);
        trainlog_batch(self->log, self->step, b->task, loss, lr, b->B, ntok, wait_s,
                       pt->log_every, last);
        trainlog_progress(self->log, self->step, self->total);
    }
    s_after_step(self, err, errlen);
    return 0;
}

/* round_robin: the optimizer step of the micro-batches summed so far (a full round, or
 * what arrived of it), their metrics lines, then the evaluation and checkpoint rules. A
 * round with a missing batch (all its rows rejected) still steps, with the shares of the
 * batches it has. */
static void s_rr_step(trainer_t *self, char *err, size_t errlen) {
    if (self->rr_n == 0)
        return;
    const plan_trainer_t *pt = &self->plan->trainer;
    double t0 = util_now();
    double lr = trainer_schedule(pt->lr, pt->warmup, self->total, self->step + 1);
    tmodel_accum_step(self->model, lr, pt->clip);
    self->step++;
    self->cursor = self->rr_last;
    double loss = 0, dt = util_now() - t0;
    self->busy_s += dt;
    self->elapsed += dt;
    int last = self->step == self->total || (pt->max_steps > 0 && self->step == pt->max_steps);
    if (self->log)
        s_log_peak_mem(self);
    for (int i = 0; i < self->rr_n; i++) {
        const s_micro_t *u = &self->rr_pending[i];
        loss += self->tasks[u->task].weight * u->loss;
        if (self->log)
            trainlog_batch(self->log, self->step, self->tasks[u->task].pt->name, u->loss, lr,
                           u->B, u->ntok, u->wait_s, pt->log_every, last);
    }
    self->last_loss = (float)loss;
    self->rr_n = 0;   /* the sum stays readable (trainer_step_grad) until the next round */
    if (self->log)
        trainlog_progress(self->log, self->step, self->total);
    s_after_step(self, err, errlen);
}

/* round_robin: sum one micro-batch into the round; step when the round is full. A batch
 * that does not follow the previous one (a gap in the batch steps) or whose task is
 * already in the round starts a new round: the rounds the source cut stay the steps
 * even when a batch is missing. */
static int s_feed_rr(trainer_t *self, s_task_t *task, const trainer_batch_t *b, double wait_s,
                     char *err, size_t errlen) {
    int ti = (int)(task - self->tasks);
    int fresh = self->rr_n > 0 && b->step != self->rr_last + 1;
    for (int i = 0; i < self->rr_n && !fresh; i++)
        fresh = self->rr_pending[i].task == ti;
    if (fresh)
        s_rr_step(self, err, errlen);
    if (self->rr_n == 0)
        tmodel_accum_begin(self->model);
    double t0 = util_now();
    float loss = 0;
    int64_t ntok = 0;
    if (tmodel_accum_add(self->model, b, task->weight, &loss, &ntok, err, errlen) != 0) {
        self->n_bad++;
        return -1;
    }
    double dt = util_now() - t0;
    self->busy_s += dt;
    self->elapsed += dt + wait_s;
    self->rr_pending[self->rr_n++] = (s_micro_t){ti, loss, ntok, b->B, wait_s};
    self->rr_last = b->step;
    self->n_batches++;
    self->n_samples += b->B;
    if (self->rr_n >= self->rr_tasks)
        s_rr_step(self, err, errlen);
    return 0;
}

/* After every optimizer step: evaluation and checkpoint when due. */
static void s_after_step(trainer_t *self, char *err, size_t errlen) {
    const plan_trainer_t *pt = &self->plan->trainer;
    if (pt->eval_every > 0 && self->step % pt->eval_every == 0 && self->nvalid > 0 &&
        self->step != self->total) {
        /* The validation batches came first (source.h), so the model can be scored
         * during training; the last evaluation is trainer_finish's. */
        if (s_evaluate(self, err, errlen) != 0)
            fprintf(stderr, "%s: evaluation at step %lld failed: %s\n", util_progname(),
                    (long long)self->step, err);
    }
    if (pt->checkpoint_every > 0 && self->step % pt->checkpoint_every == 0 &&
        trainer_checkpoint(self, err, errlen) != 0) {
        /* A failed checkpoint is reported, not fatal: training goes on. */
        if (self->log)
            trainlog_progress_end(self->log);
        fprintf(stderr, "%s: checkpoint at step %lld failed: %s\n", util_progname(),
                (long long)self->step, err);
    }
}

/* ---------------------------------------------------------------- evaluation */

/* The reference of row r: line r of refs. */
static char *s_ref_line(const char *refs, int r) {
    if (!refs)
        return util_strdup("");
    const char *p = refs;
    for (int i = 0; i < r && p; i++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p)
        return util_strdup("");
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    char *s = util_malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* The text of source row r (its TEXT positions, specials left out), for solved_acc,
 * which reads the puzzle's givens from it. Caller frees. */
static char *s_src_text(const trainer_t *self, const trainer_batch_t *b, int r) {
    int32_t *ids = util_malloc(sizeof(int32_t) * (size_t)(b->S + 1));
    size_t n = 0;
    for (int j = 0; j < b->src_len[r]; j++) {
        int32_t t = b->src_tok[(size_t)r * b->S + j];
        if (b->src_mod[(size_t)r * b->S + j] == MOD_TEXT && t != TOK_BOS && t != TOK_EOS &&
            t != TOK_PAD)
            ids[n++] = t;
    }
    size_t cap = 16 * n + 16;
    char *s = util_malloc(cap);
    tok_decode_text(self->bpe, ids, n, s, cap);
    s[cap - 1] = 0;
    free(ids);
    return s;
}

/* Generate rows [r0, r0+n) of a validation batch and record outputs and references. */
static int s_eval_rows(trainer_t *self, const s_task_t *task, const trainer_batch_t *b, int r0,
                       int n, int p, gen_trie_t *trie, char *err, size_t errlen) {
    const plan_trainer_t *pt = &self->plan->trainer;
    tgen_cfg_t cfg = {.gen = task->gen, .beam = pt->beam > 0 ? pt->beam : 1,
                      .max_gen_len = pt->max_gen_len > 0 ? pt->max_gen_len : 32,
                      .max_tgt_len = self->plan->model.max_tgt_len, .len_penalty = 1.0f,
                      .trie = trie};
    char **hyps = util_calloc(n, sizeof(char *));
    int rc = tgen_rows(self->model, self->bpe, &cfg, b, r0, n, p, hyps, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++) {
        int r = r0 + i;
        char *ref;
        if (task->gen == GEN_BOX) {
            /* Boxes are compared in bin units against the reference bins (trainer.h). */
            char rb[256];
            tgen_bins_text(b->tgt_out + (size_t)r * b->T, b->T, tok_bpe_bin0(self->bpe), rb, sizeof rb);
            ref = util_strdup(rb);
        } else {
            ref = s_ref_line(b->refs, r);
        }
        char *puzzle = task->puzzle ? s_src_text(self, b, r) : NULL;
        teval_add_result2(self->ev, b->task, hyps[i], ref, puzzle);
        free(puzzle);
        free(ref);
    }
    for (int i = 0; i < n; i++)
        free(hyps[i]);
    free(hyps);
    return rc;
}

/* Every rank evaluates the validation batches it received (batch i goes to rank
 * i % world); only rank 0 writes eval.json, so with several ranks it covers rank 0's
 * share of the validation batches (trainer.h states this). */
static int s_evaluate(trainer_t *self, char *err, size_t errlen) {
    teval_clear_results(self->ev);
    gen_trie_t **tries = util_calloc(self->ntasks, sizeof(gen_trie_t *));
    int rc = 0;
    for (int v = 0; v < self->nvalid && rc == 0; v++) {
        const trainer_batch_t *b = &self->valid[v].b;
        s_task_t *task = s_find_task(self, b->task);
        int ti = (int)(task - self->tasks);
        if (task->gen == GEN_CLOSED_SET && !tries[ti]) {
            tries[ti] = teval_trie(self->ev, b->task, err, errlen);
            if (!tries[ti]) {
                /* No answers known: every sample of the task is an empty output. */
                for (int r = 0; r < b->B; r++) {
                    char *ref = s_ref_line(b->refs, r);
                    teval_add_result(self->ev, b->task, "", ref);
                    free(ref);
                }
                continue;
            }
        }
        /* Rows in runs of equal prompt length; for closed sets few enough that the
         * decoder (a row per trie node of a level, per sample) stays under 4096 rows. */
        int cap = b->B;
        if (task->gen == GEN_CLOSED_SET) {
            cap = 4096 / gen_trie_width(tries[ti]);
            cap = cap < 1 ? 1 : cap > b->B ? b->B : cap;
        }
        for (int r0 = 0; r0 < b->B && rc == 0;) {
            int p = tgen_prompt_len(b, r0), n = 1;
            while (r0 + n < b->B && n < cap && tgen_prompt_len(b, r0 + n) == p)
                n++;
            rc = s_eval_rows(self, task, b, r0, n, p, tries[ti], err, errlen);
            r0 += n;
        }
    }
    for (int i = 0; i < self->ntasks; i++)
        gen_trie_destroy(&tries[i]);
    free(tries);
    if (rc != 0 || self->opts.rank != 0)
        return rc;
    const char **names = util_malloc(sizeof(char *) * (self->ntasks + 1));
    const char **metrics = util_malloc(sizeof(char *) * (self->ntasks + 1));
    for (int i = 0; i < self->ntasks; i++) {
        names[i] = self->tasks[i].pt->name;
        metrics[i] = self->tasks[i].pt->metric ? self->tasks[i].pt->metric
                                               : self->tasks[i].pt->plan->metric;
    }
    char path[2200];
    snprintf(path, sizeof path, "%s/eval.json", self->run_dir);
    rc = teval_write(self->ev, names, metrics, self->ntasks, self->step, path, err, errlen);
    if (rc == 0) {
        /* Every evaluation also goes to eval_history.jsonl: one line per evaluation with
         * the step and the whole eval.json object, for plots of metrics over steps. */
        char *cur = util_read_file(path, NULL, NULL, 0);
        char hist[2200];
        snprintf(hist, sizeof hist, "%s/eval_history.jsonl", self->run_dir);
        FILE *f = cur ? fopen(hist, "a") : NULL;
        if (f) {
            for (char *c = cur; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            fprintf(f, "{\"step\": %lld, \"eval\": %s}\n", (long long)self->step, cur);
            fclose(f);
        }
        free(cur);
    }
    free(names);
    free(metrics);
    return rc;
}

/* End of data in a trainer group: this rank takes part, with a zero gradient, in the
 * steps of ranks that still have batches, until every rank is here; then it checks that
 * its weights are rank 0's. A rank whose weights differ fails the run. */
static int s_group_finish(trainer_t *self, char *err, size_t errlen) {
    comm_t *c = self->opts.comm;
    if (!c || comm_world(c) <= 1)
        return 0;
    const plan_trainer_t *pt = &self->plan->trainer;
    for (;;) {
        int stepped, done;
        double lr = trainer_schedule(pt->lr, pt->warmup, self->total, self->step + 1);
        if (tmodel_train_idle(self->model, lr, pt->clip, &stepped, &done, err, errlen) != 0)
            return -1;
        self->step += stepped;
        if (done)
            break;
    }
    self->cursor = tmodel_group_cursor(self->model, self->cursor);
    int same = tmodel_group_same(self->model, err, errlen);
    if (same < 0)
        return -1;
    if (!same)
        return util_err(err, errlen, "rank %d: weights differ from rank 0's after %lld group "
                        "steps", comm_rank(c), (long long)self->step);
    if (!self->opts.quiet)
        fprintf(stderr, "%s: rank %d of %d: %lld group steps, weights identical to rank 0's\n",
                util_progname(), comm_rank(c), comm_world(c), (long long)self->step);
    return 0;
}

int trainer_stop(trainer_t *self, char *err, size_t errlen) {
    if (self->opts.comm && comm_world(self->opts.comm) > 1) {
        tmodel_group_stop(self->model);
        if (s_group_finish(self, err, errlen) != 0)
            return -1;
    }
    return trainer_checkpoint(self, err, errlen);
}

int trainer_stopping(const trainer_t *self) { return tmodel_group_stopping(self->model); }

int trainer_finish(trainer_t *self, char *err, size_t errlen) {
    if (s_group_finish(self, err, errlen) != 0)
        return -1;
    if (tmodel_group_stopping(self->model)) {
        /* Another rank was stopped while this one finished: the group stops together,
         * with a checkpoint and no evaluation, as trainer_stop does. */
        if (!self->opts.quiet)
            fprintf(stderr, "%s: rank %d: the group is stopping: checkpoint at step %lld, no "
                    "evaluation\n", util_progname(), comm_rank(self->opts.comm),
                    (long long)self->step);
        return trainer_checkpoint(self, err, errlen);
    }
    if (self->rr)
        s_rr_step(self, err, errlen);
    if (self->log) {
        trainlog_flush(self->log, self->step,
                       trainer_schedule(self->plan->trainer.lr, self->plan->trainer.warmup,
                                        self->total, self->step));
        trainlog_progress_end(self->log);
    }
    if (self->step != self->last_ckpt && trainer_checkpoint(self, err, errlen) != 0)
        return -1;
    return s_evaluate(self, err, errlen);
}

/* ---------------------------------------------------------------- state */

int64_t trainer_step(const trainer_t *self) { return self->step; }
int64_t trainer_cursor(const trainer_t *self) { return self->cursor; }
int64_t trainer_total_steps(const trainer_t *self) { return self->total; }
float trainer_last_loss(const trainer_t *self) { return self->last_loss; }
int trainer_vocab(const trainer_t *self) { return tmodel_vocab(self->model); }

const float *trainer_step_grad(const trainer_t *self, int64_t *n) {
    if (n)
        *n = tmodel_numel(self->model);
    return self->rr ? tmodel_accum_grad(self->model) : NULL;
}

double trainer_lr_at(const trainer_t *self, int64_t step) {
    return trainer_schedule(self->plan->trainer.lr, self->plan->trainer.warmup, self->total, step);
}

void trainer_counters(const trainer_t *self, int64_t *batches, int64_t *samples,
                      int64_t *skipped, int64_t *bad, double *busy_s) {
    if (batches) *batches = self->n_batches;
    if (samples) *samples = self->n_samples;
    if (skipped) *skipped = self->n_skipped;
    if (bad) *bad = self->n_bad;
    if (busy_s) *busy_s = self->busy_s;
}
