/* top.c: `launch top RUN_DIR`, a top-like monitor of a run's processes.
 *
 * It follows RUN_DIR/stats.jsonl (timeline.h), reading only the lines added since the
 * last refresh, and keeps for every process its first snapshot and a ring of its recent
 * ones. Each figure is a difference of two snapshots of one process divided by the
 * difference of their times ("time", the process's own clock): items/s, the busy and
 * the wait fractions. Queue depth and latency percentiles are the latest snapshot's.
 * Live, the window is the last --window seconds (1); with --once it is the whole run
 * (first to last snapshot), so a finished run shows its final figures.
 *
 * The bottleneck: the tier (stage) whose processes are busiest on average over the
 * window; below 50% busy no stage is saturated and the line says so (then the limit is
 * outside the measured stages: the source's files, the credits, or the machine). The
 * rule is stated in docs/profiling.md.
 *
 * Without stats.jsonl (a run of an older launch) it reads stages.json: no rates then,
 * and the busy fraction is busy_s / (busy_s + wait_s). A malformed line is reported with
 * its line number and skipped. */
#include "jsonr.h"
#include "tools.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

enum { S_RING = 128 };

typedef struct {
    double t, time;                 /* launch's t, the process's wall clock */
    double items_in, items_out, busy, wait, cpu;
    double queue, p50, p90, p99;
    long pid;
    int has_out, has_in, has_wait, has_queue, has_cpu;
} s_snap_t;

typedef struct {
    char name[64], tier[32];
    s_snap_t first;
    s_snap_t ring[S_RING];
    long n;                         /* snapshots since the first (ring holds the last) */
} s_proc_t;

typedef struct {
    char run_dir[2048], path[2200];
    s_proc_t *procs;
    int nprocs, cap;
    long offset, lineno, bad;
    double t_last;                  /* t of the newest line */
    int from_stages;                /* figures from stages.json (no timeline) */
} s_top_t;

/* One process's figures over the window. */
typedef struct {
    const s_proc_t *p;
    double rate, busy, wait, span;  /* items/s, fractions, seconds covered */
    double cpu;                     /* CPU seconds per second (all threads), or NaN */
    int known;                      /* rate/busy computable */
    const s_snap_t *last;
} s_fig_t;

static volatile sig_atomic_t s_quit;
static void s_on_signal(int sig) { (void)sig; s_quit = 1; }

static s_proc_t *s_proc(s_top_t *top, const char *name, const char *tier) {
    for (int i = 0; i < top->nprocs; i++)
        if (strcmp(top->procs[i].name, name) == 0)
            return &top->procs[i];
    if (top->nprocs == top->cap) {
        top->cap = top->cap ? top->cap * 2 : 32;
        top->procs = util_realloc(top->procs, (size_t)top->cap * sizeof *top->procs);
    }
    s_proc_t *p = &top->procs[top->nprocs++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->tier, sizeof p->tier, "%s", tier && *tier ? tier : name);
    return p;
}

static void s_snap_of(const jsonr_t *o, s_snap_t *s) {
    memset(s, 0, sizeof *s);
    s->t = jsonr_num(o, "t", 0);
    s->time = jsonr_num(o, "time", s->t);
    s->pid = (long)jsonr_num(o, "pid", 0);
    s->has_in = jsonr_get(o, "items_in") != NULL;
    s->has_out = jsonr_get(o, "items_out") != NULL;
    s->has_wait = jsonr_get(o, "wait_s") != NULL;
    s->has_queue = jsonr_get(o, "queue_depth") != NULL;
    s->has_cpu = jsonr_get(o, "cpu_s") != NULL;
    s->cpu = jsonr_num(o, "cpu_s", 0);
    s->items_in = jsonr_num(o, "items_in", 0);
    s->items_out = jsonr_num(o, "items_out", 0);
    s->busy = jsonr_num(o, "busy_s", 0);
    s->wait = jsonr_num(o, "wait_s", 0);
    s->queue = jsonr_num(o, "queue_depth", 0);
    s->p50 = jsonr_num(o, "lat_p50_ms", 0);
    s->p90 = jsonr_num(o, "lat_p90_ms", 0);
    s->p99 = jsonr_num(o, "lat_p99_ms", 0);
}

static void s_add(s_top_t *top, const char *name, const char *tier, const s_snap_t *s) {
    s_proc_t *p = s_proc(top, name, tier);
    /* A restarted process has a new pid and counters from 0: it starts a new history. */
    if (p->n > 0 && p->ring[(p->n - 1) % S_RING].pid != s->pid)
        p->n = 0;
    if (p->n == 0)
        p->first = *s;
    p->ring[p->n % S_RING] = *s;
    p->n++;
}

/* Read the lines appended since the last call; a last line without its newline is
 * being written and is read next time. Returns the number of new lines. */
static int s_follow(s_top_t *top) {
    FILE *f = fopen(top->path, "r");
    if (!f)
        return 0;
    if (fseek(f, top->offset, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int got = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] != '\n')
            break;
        top->offset += len;
        top->lineno++;
        char err[256];
        jsonr_t *o = jsonr_parse(line, (size_t)len, err, sizeof err);
        const char *name = o ? jsonr_str(o, "proc", NULL) : NULL;
        if (!o || o->type != JSONR_OBJ || !name || !*name) {
            if (top->bad++ < 5)
                fprintf(stderr, "launch top: %s:%ld: %s; line skipped\n", top->path,
                        top->lineno, o ? "not an object with a \"proc\" name" : err);
            jsonr_destroy(&o);
            continue;
        }
        s_snap_t s;
        s_snap_of(o, &s);
        s_add(top, name, jsonr_str(o, "tier", name), &s);
        if (s.t > top->t_last)
            top->t_last = s.t;
        jsonr_destroy(&o);
        got++;
    }
    free(line);
    fclose(f);
    return got;
}

/* stages.json: one snapshot per process (a run without a timeline). */
static int s_read_stages(s_top_t *top, char *err, size_t errlen) {
    char path[2200];
    snprintf(path, sizeof path, "%s/stages.json", top->run_dir);
    size_t len;
    char *text = util_read_file(path, &len, err, errlen);
    if (!text)
        return -1;
    char perr[256];
    jsonr_t *root = jsonr_parse(text, len, perr, sizeof perr);
    free(text);
    const jsonr_t *procs = jsonr_get(root, "processes");
    if (!procs || procs->type != JSONR_OBJ) {
        util_err(err, errlen, "%s: %s", path, root ? "no \"processes\" object" : perr);
        jsonr_destroy(&root);
        return -1;
    }
    for (int i = 0; i < procs->n; i++) {
        if (procs->items[i]->type != JSONR_OBJ || strchr(procs->keys[i], '#'))
            continue;   /* earlier incarnations of restarted workers */
        s_snap_t s;
        s_snap_of(procs->items[i], &s);
        s_add(top, procs->keys[i], jsonr_str(procs->items[i], "tier", procs->keys[i]), &s);
    }
    jsonr_destroy(&root);
    top->from_stages = 1;
    return 0;
}

/* Figures of p over the last `window` seconds (window <= 0: since its first snapshot). */
static void s_figures(const s_top_t *top, const s_proc_t *p, double window, s_fig_t *fg) {
    memset(fg, 0, sizeof *fg);
    fg->cpu = NAN;   /* stages.json holds totals only */
    fg->p = p;
    const s_snap_t *last = &p->ring[(p->n - 1) % S_RING];
    fg->last = last;
    if (top->from_stages) {
        if (last->has_wait && last->busy + last->wait > 0) {
            fg->busy = last->busy / (last->busy + last->wait);
            fg->wait = last->wait / (last->busy + last->wait);
            fg->known = 1;
        }
        fg->rate = NAN;
        return;
    }
    const s_snap_t *ref = NULL;
    if (window <= 0 || p->n == 1) {
        ref = p->n > 1 ? &p->first : NULL;
    } else {
        long lo = p->n > S_RING ? p->n - S_RING : 0;
        for (long k = p->n - 2; k >= lo; k--) {
            ref = &p->ring[k % S_RING];
            if (last->time - ref->time >= window * 0.99)
                break;
        }
    }
    s_snap_t zero;
    if (!ref) {
        /* One snapshot: the process is taken to have started with the run (t = 0). */
        memset(&zero, 0, sizeof zero);
        zero.time = last->time - last->t;
        ref = &zero;
    }
    double dt = last->time - ref->time;
    if (dt <= 1e-6)
        return;
    double items = last->has_out ? last->items_out - ref->items_out
                                 : last->items_in - ref->items_in;
    fg->rate = items / dt;
    fg->busy = (last->busy - ref->busy) / dt;
    fg->wait = last->has_wait ? (last->wait - ref->wait) / dt : NAN;
    fg->cpu = last->has_cpu && (ref == &zero || ref->has_cpu) ? (last->cpu - ref->cpu) / dt : NAN;
    fg->span = dt;
    fg->known = 1;
}

static void s_pct(FILE *out, double v) {
    if (isnan(v))
        fprintf(out, " %6s", "-");
    else
        fprintf(out, " %6.1f", 100.0 * v);
}

/* Print the table, the tiers and the bottleneck line. */
/* Pipeline order of a tier, for the table: data flows top to bottom. */
static int s_rank(const char *tier) {
    static const char *const order[] = {"source", "broker"};
    static const char *const tail[] = {"tokenize", "batcher", "trainer", "sink"};
    for (int i = 0; i < 2; i++)
        if (!strcmp(tier, order[i]))
            return i;
    for (int i = 0; i < 4; i++)
        if (!strcmp(tier, tail[i]))
            return 3 + i;
    return 2;   /* decode workers */
}

static int s_cmp_proc(const void *a, const void *b) {
    const s_proc_t *p = a, *q = b;
    int d = s_rank(p->tier) - s_rank(q->tier);
    if (d)
        return d;
    d = strcmp(p->tier, q->tier);
    return d ? d : strcmp(p->name, q->name);
}

/* The worker-count suggestion. The trainer ranks (a sink has no limit to size for) could take
 * samples at its current rate divided by its busy fraction; a decode tier whose
 * processes each do rate/busy items per busy second needs demand / capacity of them,
 * plus 10% headroom. Only tiers between the broker and the tokenizer (the decode
 * workers) and the tokenizer itself are sized; the rule is in docs/profiling.md. */
static void s_suggest(const s_top_t *top, const s_fig_t *figs, FILE *out) {
    double cbusy = 0;
    int nc = 0;
    for (int i = 0; i < top->nprocs; i++)
        if (figs[i].known && !strcmp(top->procs[i].tier, "trainer"))
            cbusy += figs[i].busy, nc++;
    if (!nc || top->from_stages)
        return;
    cbusy /= nc;
    if (cbusy < 0.02)
        cbusy = 0.02;   /* an idle consumer: size for 50x today's rate at most */
    int said = 0;
    for (int i = 0; i < top->nprocs; i++) {
        const char *tier = top->procs[i].tier;
        int r = s_rank(tier);
        if (r != 2 && strcmp(tier, "tokenize") != 0)
            continue;
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(top->procs[j].tier, tier) == 0;
        if (seen)
            continue;
        int n = 0;
        double rate = 0, busy_s = 0;
        for (int j = i; j < top->nprocs; j++) {
            if (strcmp(top->procs[j].tier, tier) != 0)
                continue;
            n++;
            if (figs[j].known && !isnan(figs[j].rate)) {
                rate += figs[j].rate;
                busy_s += figs[j].busy;
            }
        }
        if (rate <= 0 || busy_s <= 0)
            continue;
        double capacity = rate / busy_s;           /* items per busy second, one process */
        double demand = rate / cbusy;              /* what the consumer could take */
        int want = (int)ceil(1.1 * demand / capacity);
        if (want < 1)
            want = 1;
        if (!said)
            fprintf(out, "\nsuggested workers (consumer busy %.0f%%, so it could take %.1fx "
                    "today's rate):\n", 100 * cbusy, 1 / cbusy);
        said = 1;
        fprintf(out, "  stages.%s.workers = %d;   # now %d; one does %.0f items/s busy\n",
                tier, want, n, capacity);
    }
}

static void s_render(s_top_t *top, double window, int finished, FILE *out) {
    qsort(top->procs, (size_t)top->nprocs, sizeof *top->procs, s_cmp_proc);
    fprintf(out, "launch top: %s   t=%.0f s   %s%s\n", top->run_dir, top->t_last,
            top->from_stages ? "figures from stages.json (no stats.jsonl)"
            : window > 0 ? "window: last second(s)" : "window: whole run",
            finished ? "   (run finished)" : "");
    if (window > 0 && !top->from_stages)
        fprintf(out, "(rates over the last %.0f s)\n", window);
    fprintf(out, "%-14s %-10s %10s %7s %7s %7s %7s %9s %9s %9s %10s\n", "PROCESS", "TIER",
            "ITEMS/S", "BUSY%", "WAIT%", "CPU%", "QUEUE", "P50_MS", "P90_MS", "P99_MS", "ITEMS");
    s_fig_t *figs = util_calloc((size_t)top->nprocs + 1, sizeof *figs);
    for (int i = 0; i < top->nprocs; i++) {
        s_fig_t *fg = &figs[i];
        s_figures(top, &top->procs[i], window, fg);
        const s_snap_t *l = fg->last;
        fprintf(out, "%-14s %-10s", fg->p->name, fg->p->tier);
        if (fg->known && !isnan(fg->rate))
            fprintf(out, " %10.1f", fg->rate);
        else
            fprintf(out, " %10s", "-");
        s_pct(out, fg->known ? fg->busy : NAN);
        s_pct(out, fg->known ? fg->wait : NAN);
        s_pct(out, fg->known ? fg->cpu : NAN);
        if (l->has_queue)
            fprintf(out, " %7.0f", l->queue);
        else
            fprintf(out, " %7s", "-");
        fprintf(out, " %9.3f %9.3f %9.3f %10.0f\n", l->p50, l->p90, l->p99,
                l->has_out ? l->items_out : l->items_in);
    }
    /* Tiers in first-seen order: processes, summed rate, mean busy per process. */
    fprintf(out, "\n%-10s %6s %10s %15s %15s\n", "TIER", "PROCS", "ITEMS/S", "BUSY%/PROC",
            "WAIT%/PROC");
    const char *best = NULL;
    double best_busy = -1, best_n = 0;
    for (int i = 0; i < top->nprocs; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(top->procs[j].tier, top->procs[i].tier) == 0;
        if (seen)
            continue;
        int n = 0, nk = 0, nw = 0;
        double rate = 0, busy = 0, wait = 0;
        for (int j = i; j < top->nprocs; j++) {
            if (strcmp(top->procs[j].tier, top->procs[i].tier) != 0)
                continue;
            n++;
            if (!figs[j].known)
                continue;
            nk++;
            if (!isnan(figs[j].rate))
                rate += figs[j].rate;
            busy += figs[j].busy;
            if (!isnan(figs[j].wait))
                wait += figs[j].wait, nw++;
        }
        fprintf(out, "%-10s %6d", top->procs[i].tier, n);
        if (nk && !top->from_stages)
            fprintf(out, " %10.1f", rate);
        else
            fprintf(out, " %10s", "-");
        fprintf(out, "        ");
        s_pct(out, nk ? busy / nk : NAN);
        fprintf(out, "        ");
        s_pct(out, nw ? wait / nw : NAN);
        fprintf(out, "\n");
        if (nk && busy / nk > best_busy) {
            best_busy = busy / nk;
            best = top->procs[i].tier;
            best_n = n;
        }
    }
    if (!best)
        fprintf(out, "\nbottleneck: unknown (no process has reported twice yet)\n");
    else if (best_busy >= 0.5)
        fprintf(out, "\nbottleneck: %s (busy %.0f%% per process, %.0f process%s): the stage "
                "the others wait for\n", best, 100 * best_busy, best_n, best_n > 1 ? "es" : "");
    else
        fprintf(out, "\nbottleneck: %s (busiest, %.0f%% per process, %.0f process%s); no "
                "stage is saturated: the limit is outside the stages (data, credits, "
                "machine)\n", best, 100 * best_busy, best_n, best_n > 1 ? "es" : "");
    s_suggest(top, figs, out);
    free(figs);
}

/* A run is finished when none of the processes in its pids.json is alive (launch
 * rewrites the file while it runs; a later run cannot reuse all those pids at once). */
static int s_finished(const char *dir) {
    char path[2200];
    snprintf(path, sizeof path, "%s/pids.json", dir);
    size_t len;
    char *text = util_read_file(path, &len, NULL, 0);
    if (!text)
        return 0;
    jsonr_t *o = jsonr_parse(text, len, NULL, 0);
    free(text);
    int alive = 0;
    for (int i = 0; o && o->type == JSONR_OBJ && i < o->n; i++) {
        pid_t pid = (pid_t)o->items[i]->num;
        if (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM))
            alive++;
    }
    int finished = o && alive == 0;
    jsonr_destroy(&o);
    return finished;
}

int top_write(const char *dir, double window, FILE *out, char *err, size_t errlen) {
    s_top_t top;
    memset(&top, 0, sizeof top);
    snprintf(top.run_dir, sizeof top.run_dir, "%s", dir);
    snprintf(top.path, sizeof top.path, "%s/stats.jsonl", dir);
    int rc = 0;
    if (access(top.path, R_OK) == 0) {
        s_follow(&top);
    } else if (s_read_stages(&top, err, errlen) != 0) {
        free(top.procs);
        return -1;
    }
    if (top.nprocs == 0)
        rc = util_err(err, errlen, "%s: no process figures in stats.jsonl", dir);
    else
        s_render(&top, window, s_finished(dir), out);
    free(top.procs);
    return rc;
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: launch top [--once] [--interval S] [--window S] RUN_DIR\n"
            "  Per process of a run: items/s, busy and wait fractions, queue depth, latency\n"
            "  p50/p90/p99, and the bottleneck stage (docs/profiling.md), from\n"
            "  RUN_DIR/stats.jsonl (or stages.json), refreshed every second.\n"
            "  --once        print once and exit; figures over the whole run\n"
            "  --interval S  seconds between refreshes (1)\n"
            "  --window S    seconds the figures cover (1 live; whole run with --once)\n");
}

static int s_seconds(const char *flag, const char *v, double *out) {
    char *end;
    double d = v ? strtod(v, &end) : 0;
    if (!v || *end || end == v || !(d > 0) || d > 86400) {
        fprintf(stderr, "launch top: %s needs seconds (0 < S <= 86400), not '%s'\n", flag,
                v ? v : "");
        return -1;
    }
    *out = d;
    return 0;
}

int top_main(int argc, char **argv) {
    int once = 0;
    double interval = 1.0, window = -1;
    const char *dir = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--once")) {
            once = 1;
        } else if (!strcmp(a, "--interval") || !strcmp(a, "--window")) {
            if (s_seconds(a, i + 1 < argc ? argv[i + 1] : NULL,
                          a[2] == 'i' ? &interval : &window))
                return 2;
            i++;
        } else if (a[0] == '-' || dir) {
            s_usage(stderr);
            fprintf(stderr, "launch top: unexpected argument '%s'\n", a);
            return 2;
        } else {
            dir = a;
        }
    }
    if (!dir) {
        s_usage(stderr);
        fprintf(stderr, "launch top: no run directory given\n");
        return 2;
    }
    if (window < 0)
        window = once ? 0 : 1.0;
    s_top_t top;
    memset(&top, 0, sizeof top);
    snprintf(top.run_dir, sizeof top.run_dir, "%s", dir);
    snprintf(top.path, sizeof top.path, "%s/stats.jsonl", dir);
    char err[512];
    int rc = 0;
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    for (;;) {
        if (access(top.path, R_OK) == 0) {
            s_follow(&top);
        } else if (once || top.nprocs == 0) {
            /* No timeline (yet): the final figures of stages.json, when there are any. */
            top.nprocs = 0;
            if (s_read_stages(&top, err, sizeof err) != 0 && once) {
                fprintf(stderr, "launch top: %s has neither stats.jsonl nor a readable "
                        "stages.json (%s)\n", dir, err);
                rc = 1;
                break;
            }
        }
        int finished = s_finished(dir);
        if (!once)
            fputs("\033[H\033[2J", stdout);
        if (top.nprocs == 0)
            printf("launch top: %s: no process has reported yet\n", dir);
        else
            s_render(&top, window, finished, stdout);
        fflush(stdout);
        if (once || s_quit)
            break;
        usleep((useconds_t)(interval * 1e6));
        if (s_quit)
            break;
        if (top.from_stages) {
            top.nprocs = 0;
            top.from_stages = 0;
        }
    }
    if (once && top.nprocs == 0 && rc == 0) {
        fprintf(stderr, "launch top: %s: no process figures in stats.jsonl\n", dir);
        rc = 1;
    }
    free(top.procs);
    return rc;
}
