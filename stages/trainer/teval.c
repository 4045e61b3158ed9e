/* teval.c: see teval.h. */
#include "teval.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "metrics.h"
#include "util.h"

typedef struct {
    int32_t *tok;
    int n;
    uint64_t hash;
} s_seq_t;

typedef struct {
    char *name;
    s_seq_t *seqs;
    int nseqs, capseqs;
    int sorted;
    char **hyps, **refs;
    char **refs2;           /* (capres) a second reference per result, or NULL */
    int nres, capres;
} s_task_t;

struct teval_t {
    s_task_t *tasks;
    int ntasks;
};

teval_t *teval_new(void) { return util_calloc(1, sizeof(teval_t)); }

void teval_destroy(teval_t **self_p) {
    if (!self_p || !*self_p)
        return;
    teval_t *self = *self_p;
    for (int i = 0; i < self->ntasks; i++) {
        s_task_t *t = &self->tasks[i];
        for (int k = 0; k < t->nseqs; k++)
            free(t->seqs[k].tok);
        for (int k = 0; k < t->nres; k++) {
            free(t->hyps[k]);
            free(t->refs[k]);
            free(t->refs2[k]);
        }
        free(t->seqs);
        free(t->hyps);
        free(t->refs);
        free(t->refs2);
        free(t->name);
    }
    free(self->tasks);
    free(self);
    *self_p = NULL;
}

static s_task_t *s_task(teval_t *self, const char *name) {
    for (int i = 0; i < self->ntasks; i++)
        if (!strcmp(self->tasks[i].name, name))
            return &self->tasks[i];
    self->tasks = util_realloc(self->tasks, sizeof(s_task_t) * (self->ntasks + 1));
    s_task_t *t = &self->tasks[self->ntasks++];
    memset(t, 0, sizeof *t);
    t->name = util_strdup(name);
    t->sorted = 1;
    return t;
}

static uint64_t s_hash(const int32_t *tok, int n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < n; i++) {
        h ^= (uint32_t)tok[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (uint64_t)n;
}

/* Called for every row of every training batch of a closed-set task: cheap in the
 * common case (the answer is already known), one hash compare per known answer. */
void teval_add_target(teval_t *self, const char *task, const int32_t *tokens, int n) {
    if (n <= 0)
        return;
    s_task_t *t = s_task(self, task);
    uint64_t h = s_hash(tokens, n);
    /* Linear scan on the hash: closed sets hold hundreds to a few thousand answers. */
    for (int i = 0; i < t->nseqs; i++)
        if (t->seqs[i].hash == h && t->seqs[i].n == n &&
            !memcmp(t->seqs[i].tok, tokens, sizeof(int32_t) * n))
            return;
    if (t->nseqs == t->capseqs) {
        t->capseqs = t->capseqs ? 2 * t->capseqs : 16;
        t->seqs = util_realloc(t->seqs, sizeof(s_seq_t) * t->capseqs);
    }
    s_seq_t *s = &t->seqs[t->nseqs++];
    s->tok = util_malloc(sizeof(int32_t) * n);
    memcpy(s->tok, tokens, sizeof(int32_t) * n);
    s->n = n;
    s->hash = h;
    t->sorted = 0;
}

static int s_seq_cmp(const void *a, const void *b) {
    const s_seq_t *x = a, *y = b;
    for (int i = 0; i < x->n && i < y->n; i++)
        if (x->tok[i] != y->tok[i])
            return x->tok[i] < y->tok[i] ? -1 : 1;
    return (x->n > y->n) - (x->n < y->n);
}

/* The canonical order makes the answer numbering independent of arrival order. */
static s_task_t *s_sorted(teval_t *self, const char *task) {
    s_task_t *t = s_task(self, task);
    if (!t->sorted) {
        qsort(t->seqs, t->nseqs, sizeof(s_seq_t), s_seq_cmp);
        t->sorted = 1;
    }
    return t;
}

int teval_n_targets(teval_t *self, const char *task) { return s_task(self, task)->nseqs; }

const int32_t *teval_target(teval_t *self, const char *task, int i, int *n) {
    s_task_t *t = s_sorted(self, task);
    if (i < 0 || i >= t->nseqs)
        return NULL;
    *n = t->seqs[i].n;
    return t->seqs[i].tok;
}

gen_trie_t *teval_trie(teval_t *self, const char *task, char *err, size_t errlen) {
    s_task_t *t = s_sorted(self, task);
    if (t->nseqs == 0) {
        util_err(err, errlen, "task %s: closed set is empty (no training targets seen)", task);
        return NULL;
    }
    gen_trie_t *trie = gen_trie_new();
    for (int i = 0; i < t->nseqs; i++)
        if (gen_trie_add(trie, t->seqs[i].tok, t->seqs[i].n, i, err, errlen) != 0) {
            gen_trie_destroy(&trie);
            return NULL;
        }
    return trie;
}

int32_t *teval_targets_flat(teval_t *self, const char *task, int64_t *n) {
    s_task_t *t = s_sorted(self, task);
    int64_t len = 0;
    for (int i = 0; i < t->nseqs; i++)
        len += t->seqs[i].n + 1;
    int32_t *flat = util_malloc(sizeof(int32_t) * (len ? len : 1)), *p = flat;
    for (int i = 0; i < t->nseqs; i++) {
        memcpy(p, t->seqs[i].tok, sizeof(int32_t) * t->seqs[i].n);
        p += t->seqs[i].n;
        *p++ = -1;
    }
    *n = len;
    return flat;
}

int teval_load_flat(teval_t *self, const char *task, const void *flat_bytes, int64_t n,
                    char *err, size_t errlen) {
    /* The tensor may sit at any byte offset of a file: copy it to aligned memory. */
    int32_t *flat = util_malloc(sizeof(int32_t) * (n ? n : 1));
    memcpy(flat, flat_bytes, sizeof(int32_t) * n);
    int64_t start = 0;
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        if (flat[i] == -1) {
            if (i == start)
                rc = util_err(err, errlen, "closed set of %s: empty answer at %lld", task, (long long)i);
            else
                teval_add_target(self, task, flat + start, (int)(i - start));
            start = i + 1;
        } else if (flat[i] < 0) {
            rc = util_err(err, errlen, "closed set of %s: bad token %d at %lld", task, flat[i], (long long)i);
        }
    }
    if (rc == 0 && start != n)
        rc = util_err(err, errlen, "closed set of %s: last answer is not terminated by -1", task);
    free(flat);
    return rc;
}

void teval_add_result(teval_t *self, const char *task, const char *hyp, const char *ref) {
    teval_add_result2(self, task, hyp, ref, NULL);
}

void teval_add_result2(teval_t *self, const char *task, const char *hyp, const char *ref,
                       const char *ref2) {
    s_task_t *t = s_task(self, task);
    if (t->nres == t->capres) {
        t->capres = t->capres ? 2 * t->capres : 64;
        t->hyps = util_realloc(t->hyps, sizeof(char *) * t->capres);
        t->refs = util_realloc(t->refs, sizeof(char *) * t->capres);
        t->refs2 = util_realloc(t->refs2, sizeof(char *) * t->capres);
    }
    t->hyps[t->nres] = util_strdup(hyp ? hyp : "");
    t->refs2[t->nres] = ref2 ? util_strdup(ref2) : NULL;
    t->refs[t->nres++] = util_strdup(ref ? ref : "");
}

int teval_n_results(teval_t *self, const char *task) { return s_task(self, task)->nres; }

void teval_clear_results(teval_t *self) {
    for (int i = 0; i < self->ntasks; i++) {
        s_task_t *t = &self->tasks[i];
        for (int k = 0; k < t->nres; k++) {
            free(t->hyps[k]);
            free(t->refs[k]);
            free(t->refs2[k]);
        }
        t->nres = 0;
    }
}

/* Growable text for the JSON file. */
typedef struct {
    char *p;
    size_t n, cap;
} s_buf_t;

static void s_put(s_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_put(s_buf_t *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (b->p && (size_t)n < b->cap - b->n) {
            b->n += n;
            return;
        }
        b->cap = (b->cap + n + 1) * 2;
        b->p = util_realloc(b->p, b->cap);
    }
}

static void s_put_str(s_buf_t *b, const char *s) {
    size_t n = strlen(s) * 6 + 1;
    char *e = util_malloc(n);
    util_json_escape(s, e, n);
    s_put(b, "\"%s\"", e);
    free(e);
}

static void s_put_num(s_buf_t *b, double v) {
    if (isfinite(v))
        s_put(b, "%.6g", v);
    else
        s_put(b, "null");
}

/* Every task of the plan gets an entry, also one that could not be scored: a missing
 * key would read as "the task did not run", a null value with a note says why. The
 * baseline is computed from the same references in the same call, so value and baseline
 * always describe the same samples. */
int teval_write(teval_t *self, const char *const *tasks, const char *const *metrics, int ntasks,
                int64_t step, const char *path, char *err, size_t errlen) {
    s_buf_t b = {0};
    s_put(&b, "{");
    for (int i = 0; i < ntasks; i++) {
        s_task_t *t = s_task(self, tasks[i]);
        const char *mspec = metrics[i] ? metrics[i] : "-";
        char names[8][64];
        int nm = 0;
        /* "a/b" -> a, b */
        for (const char *p = mspec; *p && nm < 8;) {
            const char *q = strchr(p, '/');
            size_t l = q ? (size_t)(q - p) : strlen(p);
            snprintf(names[nm++], sizeof names[0], "%.*s", (int)l, p);
            p += l + (q ? 1 : 0);
        }
        s_put(&b, "%s\n  ", i ? "," : "");
        s_put_str(&b, tasks[i]);
        s_put(&b, ": {\"metric\": ");
        s_put_str(&b, nm ? names[0] : "-");
        char note[512] = "";
        double vals[8];
        for (int k = 0; k < 8; k++)
            vals[k] = NAN;
        metric_baseline_t base = {0};
        int have_base = 0;
        if (nm == 0 || !strcmp(names[0], "-")) {
            snprintf(note, sizeof note, "the task has no metric");
        } else if (t->nres == 0) {
            snprintf(note, sizeof note, "no validation samples were evaluated");
        } else {
            /* The second reference (the puzzle) is solved_acc's alone: another metric of
             * the task must not take it for an acceptable answer. */
            metric_refs_t *refs = util_malloc(sizeof(metric_refs_t) * t->nres);
            metric_refs_t *refs2 = util_malloc(sizeof(metric_refs_t) * t->nres);
            const char **pairs = util_malloc(sizeof(char *) * 2 * t->nres);
            for (int k = 0; k < t->nres; k++) {
                pairs[2 * k] = t->refs[k];
                pairs[2 * k + 1] = t->refs2[k];
                refs[k] = (metric_refs_t){&pairs[2 * k], 1};
                refs2[k] = (metric_refs_t){&pairs[2 * k], t->refs2[k] ? 2 : 1};
            }
            for (int k = 0; k < nm; k++) {
                char e2[256];
                const metric_refs_t *r = strcmp(names[k], "solved_acc") ? refs : refs2;
                if (metric_compute(names[k], (const char *const *)t->hyps, r, t->nres,
                                   &vals[k], e2, sizeof e2) != 0 && !note[0])
                    snprintf(note, sizeof note, "%.60s: %.400s", names[k], e2);
            }
            char e2[256];
            if (metric_baseline(names[0], strcmp(names[0], "solved_acc") ? refs : refs2,
                                t->nres, &base, e2, sizeof e2) == 0)
                have_base = 1;
            else if (!note[0])
                snprintf(note, sizeof note, "baseline: %.400s", e2);
            free(refs);
            free(refs2);
            free(pairs);
        }
        s_put(&b, ", \"value\": ");
        s_put_num(&b, vals[0]);
        s_put(&b, ", \"baseline\": ");
        s_put_num(&b, have_base ? base.value : NAN);
        s_put(&b, ", \"baseline_kind\": ");
        s_put_str(&b, have_base ? base.kind : "none");
        if (have_base) {
            s_put(&b, ", \"baseline_output\": ");
            s_put_str(&b, base.output ? base.output : "");
        }
        s_put(&b, ", \"n\": %d, \"step\": %lld", t->nres, (long long)step);
        if (nm > 1) {
            s_put(&b, ", \"metrics\": {");
            for (int k = 0; k < nm; k++) {
                s_put(&b, "%s", k ? ", " : "");
                s_put_str(&b, names[k]);
                s_put(&b, ": ");
                s_put_num(&b, vals[k]);
            }
            s_put(&b, "}");
        }
        if (note[0]) {
            s_put(&b, ", \"note\": ");
            s_put_str(&b, note);
        }
        s_put(&b, "}");
        metric_baseline_clear(&base);
    }
    s_put(&b, "\n}\n");
    int rc = util_write_file_atomic(path, b.p, b.n, err, errlen);
    free(b.p);
    return rc;
}
