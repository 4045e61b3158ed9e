/* profile.c: `launch profile PLAN`: a short run of the plan with span tracing on, whose
 * span files are merged into one Chrome trace-event file, RUN/trace.json (open it in
 * https://ui.perfetto.dev or chrome://tracing; both read it offline from disk).
 *
 * main.c runs the plan as usual with a time limit; before, profile_setup() points
 * OFA_TRACE at RUN/trace (every process inherits launch's environment and records its
 * spans there, common/trace.h); after, profile_write() merges RUN/trace/<proc>.jsonl
 * into trace.json: one pid per process (named by a "process_name" metadata event), one
 * tid per OS process (a restarted worker's incarnations are separate rows), spans as
 * complete ("X") events with their task and counts as args, times in microseconds from
 * the first span. It also prints a digest: per process and span name, the count and the
 * total and mean duration. */
#include "jsonr.h"
#include "profile.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int profile_setup(const char *run_dir, char *err, size_t errlen) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/trace", run_dir);
    if (util_mkdirs(dir, err, errlen))
        return -1;
    /* Spans of an earlier profile in the same folder would be merged with these. */
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l > 6 && strcmp(e->d_name + l - 6, ".jsonl") == 0) {
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    if (setenv("OFA_TRACE", dir, 1) != 0)
        return util_err(err, errlen, "setenv OFA_TRACE: %s", strerror(errno));
    return 0;
}

static int s_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Per span name of one process: count and total microseconds (for the digest). */
typedef struct {
    char name[32];
    long long n, total_us;
} s_agg_t;

/* The files of RUN/trace, sorted (the pid numbering is then stable). */
static int s_list(const char *dir, char ***names_p) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **names = NULL;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l <= 6 || strcmp(e->d_name + l - 6, ".jsonl") != 0)
            continue;
        names = util_realloc(names, (size_t)(n + 1) * sizeof *names);
        names[n++] = util_strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, (size_t)n, sizeof *names, s_cmp);
    *names_p = names;
    return n;
}

/* Call fn for every well-formed span line of path; malformed lines (a process killed in
 * the middle of a write leaves half a line) are counted and reported once. */
typedef void (*s_span_fn)(void *ctx, const jsonr_t *span);

static long s_each(const char *path, s_span_fn fn, void *ctx, int report) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, bad = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        char err[256];
        jsonr_t *o = jsonr_parse(line, (size_t)len, err, sizeof err);
        if (!o || o->type != JSONR_OBJ || !jsonr_str(o, "name", NULL) ||
            !jsonr_get(o, "ts") || !jsonr_get(o, "dur")) {
            if (report && bad == 0)
                fprintf(stderr, "launch profile: %s:%ld: %s; skipped\n", path, lineno,
                        o ? "not a span (name, ts, dur)" : err);
            bad++;
        } else {
            fn(ctx, o);
        }
        jsonr_destroy(&o);
    }
    free(line);
    fclose(f);
    return bad;
}

static void s_min_ts(void *ctx, const jsonr_t *span) {
    double *min = ctx;
    double ts = jsonr_num(span, "ts", 0);
    if (*min < 0 || ts < *min)
        *min = ts;
}

typedef struct {
    FILE *out;
    int pid;
    double t0;
    long long spans;
    s_agg_t agg[32];
    int nagg;
} s_emit_t;

static void s_emit(void *ctx, const jsonr_t *span) {
    s_emit_t *e = ctx;
    const char *name = jsonr_str(span, "name", "?");
    char ename[128];
    util_json_escape(name, ename, sizeof ename);
    double dur = jsonr_num(span, "dur", 0);
    fprintf(e->out, ",\n{\"name\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%lld,\"ts\":%.0f,"
            "\"dur\":%.0f,\"args\":{", ename, e->pid, (long long)jsonr_num(span, "pid", 0),
            jsonr_num(span, "ts", 0) - e->t0, dur);
    /* Everything else on the line becomes an argument (task, step, n, B). */
    int first = 1;
    for (int i = 0; i < span->n; i++) {
        const char *k = span->keys[i];
        if (!strcmp(k, "name") || !strcmp(k, "ts") || !strcmp(k, "dur") || !strcmp(k, "pid"))
            continue;
        char ek[128], ev[512];
        util_json_escape(k, ek, sizeof ek);
        const jsonr_t *v = span->items[i];
        if (v->type == JSONR_STR) {
            util_json_escape(v->str, ev, sizeof ev);
            fprintf(e->out, "%s\"%s\":\"%s\"", first ? "" : ",", ek, ev);
        } else if (v->type == JSONR_NUM) {
            fprintf(e->out, "%s\"%s\":%.17g", first ? "" : ",", ek, v->num);
        } else {
            continue;
        }
        first = 0;
    }
    fputs("}}", e->out);
    e->spans++;
    int a = 0;
    while (a < e->nagg && strcmp(e->agg[a].name, name) != 0)
        a++;
    if (a == e->nagg && e->nagg < 32) {
        snprintf(e->agg[a].name, sizeof e->agg[a].name, "%s", name);
        e->nagg++;
    }
    if (a < e->nagg) {
        e->agg[a].n++;
        e->agg[a].total_us += (long long)dur;
    }
}

int profile_write(const char *run_dir, FILE *digest, char *err, size_t errlen) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/trace", run_dir);
    char **names = NULL;
    int n = s_list(dir, &names);
    if (n <= 0) {
        free(names);
        return util_err(err, errlen, "%s: no span files (was the run traced? OFA_TRACE)", dir);
    }
    double t0 = -1;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        s_each(path, s_min_ts, &t0, 0);
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    fputs("{\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"launch profile\"},"
          "\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
          "\"args\":{\"name\":\"launch\"}}", out);
    long long total = 0;
    long bad = 0;
    for (int i = 0; i < n; i++) {
        char proc[256];
        snprintf(proc, sizeof proc, "%.*s", (int)(strlen(names[i]) - 6), names[i]);
        char eproc[512];
        util_json_escape(proc, eproc, sizeof eproc);
        fprintf(out, ",\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"name\":\"%s\"}}", i + 1, eproc);
        s_emit_t e = {.out = out, .pid = i + 1, .t0 = t0 < 0 ? 0 : t0};
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        bad += s_each(path, s_emit, &e, 1);
        total += e.spans;
        if (digest) {
            fprintf(digest, "%-14s", proc);
            for (int a = 0; a < e.nagg; a++)
                fprintf(digest, "  %s %lld x %.1f us", e.agg[a].name, e.agg[a].n,
                        e.agg[a].n ? (double)e.agg[a].total_us / (double)e.agg[a].n : 0.0);
            fprintf(digest, "\n");
        }
        free(names[i]);
    }
    free(names);
    fputs("\n]}\n", out);
    fclose(out);
    snprintf(path, sizeof path, "%s/trace.json", run_dir);
    int rc = util_write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    if (rc == 0 && digest)
        fprintf(digest, "%s: %lld spans of %d processes%s\n", path, total, n,
                bad ? " (malformed span lines skipped)" : "");
    return rc;
}
