/* statsdb.c: see statsdb.h. Small and linear: a run has tens of processes with tens of
 * counters each, written once a second, so plain arrays are the right structure. */
#include "statsdb.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char key[96];
    double value;
    char *str;    /* string value, or NULL for a number */
} s_kv_t;

typedef struct {
    char name[64];
    char tier[32];
    s_kv_t *kv;
    int n, cap;
    long pid;      /* the incarnation: a restarted process gets a record of its own */
    int fresh;     /* a snapshot arrived since the last timeline line */
} s_rec_t;

struct statsdb {
    s_rec_t *recs;
    int n, cap;
};

statsdb_t *statsdb_new(void) { return util_calloc(1, sizeof(statsdb_t)); }

static void s_rec_clear(s_rec_t *r) {
    for (int i = 0; i < r->n; i++)
        free(r->kv[i].str);
    r->n = 0;
}

void statsdb_destroy(statsdb_t **self_p) {
    if (!self_p || !*self_p)
        return;
    statsdb_t *self = *self_p;
    for (int i = 0; i < self->n; i++) {
        s_rec_clear(&self->recs[i]);
        free(self->recs[i].kv);
    }
    free(self->recs);
    free(self);
    *self_p = NULL;
}

/* The record of (proc, pid); pid < 0 finds the newest incarnation of proc. */
static s_rec_t *s_find(statsdb_t *self, const char *proc, long pid, int create) {
    for (int i = self->n - 1; i >= 0; i--)
        if (strcmp(self->recs[i].name, proc) == 0 && (pid < 0 || self->recs[i].pid == pid))
            return &self->recs[i];
    if (!create)
        return NULL;
    if (self->n == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 32;
        self->recs = util_realloc(self->recs, (size_t)self->cap * sizeof *self->recs);
    }
    s_rec_t *r = &self->recs[self->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", proc);
    r->pid = pid;
    return r;
}

void statsdb_begin(statsdb_t *self, const char *proc, long pid, const char *tier) {
    s_rec_t *r = s_find(self, proc, pid, 1);
    s_rec_clear(r);
    r->fresh = 1;
    if (tier && *tier)
        snprintf(r->tier, sizeof r->tier, "%s", tier);
}

static s_kv_t *s_slot(s_rec_t *r, const char *key) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->kv[i].key, key) == 0)
            return &r->kv[i];
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 32;
        r->kv = util_realloc(r->kv, (size_t)r->cap * sizeof *r->kv);
    }
    s_kv_t *kv = &r->kv[r->n++];
    memset(kv, 0, sizeof *kv);
    snprintf(kv->key, sizeof kv->key, "%s", key);
    return kv;
}

void statsdb_put(statsdb_t *self, const char *proc, const char *key, double value) {
    s_kv_t *kv = s_slot(s_find(self, proc, -1, 1), key);
    free(kv->str);
    kv->str = NULL;
    kv->value = value;
}

void statsdb_put_str(statsdb_t *self, const char *proc, const char *key, const char *value) {
    s_kv_t *kv = s_slot(s_find(self, proc, -1, 1), key);
    free(kv->str);
    kv->str = util_strdup(value);
}

double statsdb_sum(const statsdb_t *self, const char *key) {
    double s = 0;
    for (int i = 0; i < self->n; i++) {
        const s_rec_t *r = &self->recs[i];
        for (int j = 0; j < r->n; j++)
            if (!r->kv[j].str && strcmp(r->kv[j].key, key) == 0)
                s += r->kv[j].value;
    }
    return s;
}

static void s_write_value(FILE *f, const s_kv_t *kv) {
    if (kv->str) {
        char esc[1024];
        util_json_escape(kv->str, esc, sizeof esc);
        fprintf(f, "\"%s\"", esc);
    } else if (kv->value == (double)(long long)kv->value && kv->value < 9e15 &&
               kv->value > -9e15) {
        fprintf(f, "%lld", (long long)kv->value);
    } else {
        fprintf(f, "%.6g", kv->value);
    }
}

/* Write to a memory stream, then atomically to the file: readers never see half a file. */
static int s_commit(char *buf, size_t len, const char *path, char *err, size_t errlen) {
    int rc = util_write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    return rc;
}

int statsdb_write_stages(const statsdb_t *self, const char *path, char *err, size_t errlen) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "{\"processes\": {");
    for (int i = 0; i < self->n; i++) {
        const s_rec_t *r = &self->recs[i];
        /* The newest incarnation goes under the process name, earlier ones (crashed and
         * restarted) under name#pid. */
        char name[96];
        if (s_find((statsdb_t *)self, r->name, -1, 0) == r)
            snprintf(name, sizeof name, "%s", r->name);
        else
            snprintf(name, sizeof name, "%s#%ld", r->name, r->pid);
        fprintf(f, "%s\n  \"%s\": {\"tier\": \"%s\", \"pid\": %ld", i ? "," : "", name,
                r->tier, r->pid);
        for (int j = 0; j < r->n; j++) {
            fprintf(f, ", \"%s\": ", r->kv[j].key);
            s_write_value(f, &r->kv[j]);
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n}}\n");
    fclose(f);
    return s_commit(buf, len, path, err, errlen);
}

int statsdb_write_timeline(statsdb_t *self, FILE *f, double t) {
    int lines = 0;
    for (int i = 0; i < self->n; i++) {
        s_rec_t *r = &self->recs[i];
        if (!r->fresh || s_find(self, r->name, -1, 0) != r)
            continue;
        r->fresh = 0;
        fprintf(f, "{\"t\": %.3f, \"proc\": \"%s\", \"tier\": \"%s\", \"pid\": %ld", t,
                r->name, r->tier, r->pid);
        for (int j = 0; j < r->n; j++) {
            fprintf(f, ", \"%s\": ", r->kv[j].key);
            /* Full precision: "time" is seconds since the epoch, and rates are taken
             * from differences of consecutive lines. */
            if (!r->kv[j].str && !isfinite(r->kv[j].value))
                fputs("null", f);   /* a diverged loss must not make the line invalid */
            else if (!r->kv[j].str && r->kv[j].value != (double)(long long)r->kv[j].value)
                fprintf(f, "%.15g", r->kv[j].value);
            else
                s_write_value(f, &r->kv[j]);
        }
        fprintf(f, "}\n");
        lines++;
    }
    return lines;
}

static const char *s_counters[] = {"read", "delivered", "rejected", "redispatched",
                                   "duplicates_dropped"};

int statsdb_write_summary(const statsdb_t *self, const char *const *tasks, int n_tasks,
                          const char *path, char *err, size_t errlen) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    long long tot[5] = {0};
    fprintf(f, "{\"tasks\": {");
    for (int t = 0; t < n_tasks; t++) {
        long long v[5];
        for (int c = 0; c < 5; c++) {
            char key[160];
            snprintf(key, sizeof key, "task.%s.%s", tasks[t], s_counters[c]);
            v[c] = (long long)statsdb_sum(self, key);
            tot[c] += v[c];
        }
        long long lost = v[0] - v[1] - v[2];
        fprintf(f, "%s\n  \"%s\": {\"read\": %lld, \"delivered\": %lld, \"rejected\": %lld, "
                   "\"lost\": %lld, \"redispatched\": %lld, \"duplicates_dropped\": %lld}",
                t ? "," : "", tasks[t], v[0], v[1], v[2], lost, v[3], v[4]);
    }
    fprintf(f, "\n},\n\"total\": {\"read\": %lld, \"delivered\": %lld, \"rejected\": %lld, "
               "\"lost\": %lld, \"redispatched\": %lld, \"duplicates_dropped\": %lld}}\n",
            tot[0], tot[1], tot[2], tot[0] - tot[1] - tot[2], tot[3], tot[4]);
    fclose(f);
    return s_commit(buf, len, path, err, errlen);
}
