/* report.c: `launch report RUN_DIR` writes RUN_DIR/report.html, one self-contained page
 * (inline SVG and CSS; no script, no network, no external file) with:
 *
 *   - the run's totals (summary.json);
 *   - loss per task over steps (metrics.jsonl): one line per task, one point per line
 *     of the file;
 *   - the evaluation (eval.json): per task, a bar for the model's metric beside one for
 *     the constant baseline;
 *   - per stage (tier) over time (stats.jsonl): throughput in items/s (summed over the
 *     tier's processes) and busy fraction (mean over them), one point per second;
 *   - the whole run's per-process figures and the bottleneck, as `launch top --once`.
 *
 * Every plotted point is an SVG element of class "pt" with data-* attributes naming its
 * series and values (data-task, data-step, data-loss; data-tier, data-t, data-v), and
 * every bar a rect of class "bar" (data-task, data-kind "model" or "baseline"), so tests
 * and other tools can read the figures back from the page. A record that is missing is
 * shown as a note in its place; a malformed line is skipped and counted in the note. */
#include "jsonr.h"
#include "tools.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Chart geometry: the plot area inside a W x H SVG. */
enum { W = 720, H = 300, ML = 64, MR = 150, MT = 28, MB = 40 };

static const char *const s_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                       "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

typedef struct {
    double x0, x1, y0, y1;
} s_axes_t;

static double s_px(const s_axes_t *a, double x) {
    return ML + (x - a->x0) / (a->x1 - a->x0) * (W - ML - MR);
}
static double s_py(const s_axes_t *a, double y) {
    return H - MB - (y - a->y0) / (a->y1 - a->y0) * (H - MT - MB);
}

/* Escape text for HTML element content and attribute values. */
static void s_html(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A "nice" tick step for a range: 1, 2 or 5 times a power of ten, about 5 ticks. */
static double s_step(double range) {
    double raw = range / 5, p = pow(10, floor(log10(raw)));
    return raw / p >= 5 ? 5 * p : raw / p >= 2 ? 2 * p : p;
}

/* Open an SVG with axes, ticks and labels for the given ranges (widened when empty). */
static void s_chart(FILE *f, s_axes_t *a, const char *id, const char *xlabel,
                    const char *ylabel) {
    if (!(a->x1 > a->x0))
        a->x1 = a->x0 + 1;
    if (!(a->y1 > a->y0))
        a->y1 = a->y0 + 1;
    fprintf(f, "<svg id=\"%s\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", id, W, H, W, H);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#999\"/>\n", ML, MT, W - ML - MR, H - MT - MB);
    double sx = s_step(a->x1 - a->x0), sy = s_step(a->y1 - a->y0);
    for (double x = ceil(a->x0 / sx) * sx; x <= a->x1 + 1e-9; x += sx)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>"
                "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%g</text>\n",
                s_px(a, x), MT, s_px(a, x), H - MB, s_px(a, x), H - MB + 14, x);
    for (double y = ceil(a->y0 / sy) * sy; y <= a->y1 + 1e-9; y += sy)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%g</text>\n",
                ML, s_py(a, y), W - MR, s_py(a, y), ML - 4, s_py(a, y) + 4, y);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">%s</text>\n",
            ML + (W - ML - MR) / 2, H - 6, xlabel);
    fprintf(f, "<text x=\"14\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 14 %d)\">%s</text>\n", MT + (H - MT - MB) / 2,
            MT + (H - MT - MB) / 2, ylabel);
}

static void s_legend(FILE *f, int i, const char *name) {
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>"
            "<text x=\"%d\" y=\"%d\" font-size=\"12\">", W - MR + 10, MT + 4 + 18 * i,
            s_colors[i % 10], W - MR + 26, MT + 14 + 18 * i);
    s_html(f, name);
    fputs("</text>\n", f);
}

/* ---- series: named lists of (x, y) ---- */

typedef struct {
    char name[64];
    double *x, *y;
    int n, cap;
} s_series_t;

typedef struct {
    s_series_t *s;
    int n, cap;
} s_set_t;

static s_series_t *s_series(s_set_t *set, const char *name) {
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->s[i].name, name) == 0)
            return &set->s[i];
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 8;
        set->s = util_realloc(set->s, (size_t)set->cap * sizeof *set->s);
    }
    s_series_t *s = &set->s[set->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

static void s_push(s_series_t *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->x = util_realloc(s->x, (size_t)s->cap * sizeof *s->x);
        s->y = util_realloc(s->y, (size_t)s->cap * sizeof *s->y);
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static void s_set_free(s_set_t *set) {
    for (int i = 0; i < set->n; i++)
        free(set->s[i].x), free(set->s[i].y);
    free(set->s);
    memset(set, 0, sizeof *set);
}

/* A line chart of every series; points carry class "pt KIND", data-SKEY (the series'
 * name), data-XKEY and data-YKEY. */
static void s_plot(FILE *f, const s_set_t *set, const char *id, const char *kind,
                   const char *skey, const char *xkey, const char *ykey, const char *xlabel,
                   const char *ylabel, double ymin_floor) {
    s_axes_t a = {INFINITY, -INFINITY, ymin_floor, -INFINITY};
    for (int i = 0; i < set->n; i++)
        for (int k = 0; k < set->s[i].n; k++) {
            a.x0 = fmin(a.x0, set->s[i].x[k]);
            a.x1 = fmax(a.x1, set->s[i].x[k]);
            a.y0 = isnan(ymin_floor) ? fmin(a.y0, set->s[i].y[k]) : a.y0;
            a.y1 = fmax(a.y1, set->s[i].y[k]);
        }
    if (isnan(a.y0))
        a.y0 = 0;
    a.y1 += (a.y1 - a.y0) * 0.05;
    s_chart(f, &a, id, xlabel, ylabel);
    for (int i = 0; i < set->n; i++) {
        const s_series_t *s = &set->s[i];
        const char *c = s_colors[i % 10];
        fprintf(f, "<polyline class=\"line\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" "
                "points=\"", c);
        for (int k = 0; k < s->n; k++)
            fprintf(f, "%s%.1f,%.1f", k ? " " : "", s_px(&a, s->x[k]), s_py(&a, s->y[k]));
        fputs("\"/>\n", f);
        /* Small points: a long run has thousands; they stay readable as a line. */
        double r = s->n > 400 ? 1.2 : 2.2;
        for (int k = 0; k < s->n; k++) {
            fprintf(f, "<circle class=\"pt %s\" data-%s=\"", kind, skey);
            s_html(f, s->name);
            fprintf(f, "\" data-%s=\"%g\" data-%s=\"%g\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" "
                    "fill=\"%s\"/>\n", xkey, s->x[k], ykey, s->y[k], s_px(&a, s->x[k]),
                    s_py(&a, s->y[k]), r, c);
        }
        s_legend(f, i, s->name);
    }
    fputs("</svg>\n", f);
}

/* Read a JSONL file and call fn on every object line; returns the lines read (or -1
 * when the file is missing) and counts malformed lines in *bad. */
typedef void (*s_line_fn)(void *ctx, const jsonr_t *o);

static long s_jsonl(const char *path, s_line_fn fn, void *ctx, long *bad) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long n = 0, lineno = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (len == 1 && line[0] == '\n')
            continue;
        char err[256];
        jsonr_t *o = jsonr_parse(line, (size_t)len, err, sizeof err);
        if (!o || o->type != JSONR_OBJ) {
            if ((*bad)++ == 0)
                fprintf(stderr, "launch report: %s:%ld: %s; line skipped\n", path, lineno,
                        o ? "not a JSON object" : err);
        } else {
            fn(ctx, o);
            n++;
        }
        jsonr_destroy(&o);
    }
    free(line);
    fclose(f);
    return n;
}

static void s_on_metric(void *ctx, const jsonr_t *o) {
    s_set_t *set = ctx;
    const jsonr_t *loss = jsonr_get(o, "loss"), *step = jsonr_get(o, "step");
    if (!loss || loss->type != JSONR_NUM || !step || step->type != JSONR_NUM)
        return;
    s_push(s_series(set, jsonr_str(o, "task", "?")), step->num, loss->num);
}

/* Per-process previous snapshot, to turn cumulative counters into per-second figures;
 * per tier and second, the sums that become the throughput and busy series. */
typedef struct {
    char name[64];
    long pid;
    double time, items, busy;
} s_prev_t;

typedef struct {
    s_prev_t *prev;
    int nprev;
    s_set_t rate, busy;         /* per tier: x = second, y = sum of rates / busy */
    s_set_t busy_n;             /* per tier: x = second, y = processes counted */
} s_stage_t;

static void s_on_stats(void *ctx, const jsonr_t *o) {
    s_stage_t *st = ctx;
    const char *name = jsonr_str(o, "proc", NULL);
    if (!name)
        return;
    const char *tier = jsonr_str(o, "tier", name);
    double t = jsonr_num(o, "t", 0), time = jsonr_num(o, "time", t);
    long pid = (long)jsonr_num(o, "pid", 0);
    double items = jsonr_get(o, "items_out") ? jsonr_num(o, "items_out", 0)
                                             : jsonr_num(o, "items_in", 0);
    double busy = jsonr_num(o, "busy_s", 0);
    s_prev_t *p = NULL;
    for (int i = 0; i < st->nprev; i++)
        if (strcmp(st->prev[i].name, name) == 0)
            p = &st->prev[i];
    if (!p) {
        st->prev = util_realloc(st->prev, (size_t)(st->nprev + 1) * sizeof *st->prev);
        p = &st->prev[st->nprev++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", name);
        p->pid = pid;
        p->time = time - t;   /* the first snapshot counts from the run's start */
    }
    if (p->pid != pid) {      /* restarted: counters begin again at 0 */
        p->pid = pid;
        p->items = p->busy = 0;
        p->time = time - 1.0;
    }
    double dt = time - p->time;
    if (dt > 1e-3) {
        double sec = floor(t + 0.5);
        s_series_t *r = s_series(&st->rate, tier), *b = s_series(&st->busy, tier),
                   *bn = s_series(&st->busy_n, tier);
        /* Lines of one second arrive together: add to the tier's last point when it
         * is the same second. */
        if (r->n == 0 || r->x[r->n - 1] != sec) {
            s_push(r, sec, 0);
            s_push(b, sec, 0);
            s_push(bn, sec, 0);
        }
        r->y[r->n - 1] += (items - p->items) / dt;
        b->y[b->n - 1] += (busy - p->busy) / dt;
        bn->y[bn->n - 1] += 1;
    }
    p->time = time;
    p->items = items;
    p->busy = busy;
}

static void s_note(FILE *f, const char *fmt, const char *path) {
    fputs("<p class=\"note\">", f);
    char buf[4600];
    snprintf(buf, sizeof buf, fmt, path);
    s_html(f, buf);
    fputs("</p>\n", f);
}

/* Totals of summary.json as a table. */
static void s_summary(FILE *f, const char *dir) {
    char path[2200];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    size_t len;
    char *text = util_read_file(path, &len, NULL, 0);
    jsonr_t *o = text ? jsonr_parse(text, len, NULL, 0) : NULL;
    free(text);
    const jsonr_t *tasks = jsonr_get(o, "tasks");
    if (!tasks || tasks->type != JSONR_OBJ) {
        s_note(f, "no readable summary.json in %s", dir);
        jsonr_destroy(&o);
        return;
    }
    static const char *const cols[] = {"read", "delivered", "rejected", "lost",
                                       "redispatched", "duplicates_dropped"};
    fputs("<table id=\"summary\"><tr><th>task</th>", f);
    for (int c = 0; c < 6; c++)
        fprintf(f, "<th>%s</th>", cols[c]);
    fputs("</tr>\n", f);
    for (int i = 0; i <= tasks->n; i++) {
        const jsonr_t *t = i < tasks->n ? tasks->items[i] : jsonr_get(o, "total");
        if (!t)
            continue;
        fputs(i < tasks->n ? "<tr><td>" : "<tr class=\"total\"><td>", f);
        s_html(f, i < tasks->n ? tasks->keys[i] : "total");
        fputs("</td>", f);
        for (int c = 0; c < 6; c++)
            fprintf(f, "<td>%.0f</td>", jsonr_num(t, cols[c], 0));
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
    jsonr_destroy(&o);
}

/* eval.json: per task, the model's value and the baseline's as bars. */
static void s_eval(FILE *f, const char *dir) {
    char path[2200];
    snprintf(path, sizeof path, "%s/eval.json", dir);
    size_t len;
    char err[256] = "";
    char *text = util_read_file(path, &len, err, sizeof err);
    jsonr_t *o = text ? jsonr_parse(text, len, err, sizeof err) : NULL;
    free(text);
    if (!o || o->type != JSONR_OBJ || o->n == 0) {
        s_note(f, "no evaluation: %s is missing, empty or malformed", path);
        jsonr_destroy(&o);
        return;
    }
    /* One group per task, each on its own scale (metrics differ: CIDEr, accuracy, WER):
     * the bars are scaled to the larger of the two values of the task. */
    int n = o->n, gw = (W - ML - MR) / (n > 0 ? n : 1);
    fprintf(f, "<svg id=\"eval\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", W, H, W, H);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#999\"/>\n", ML,
            H - MB, W - MR, H - MB);
    for (int i = 0; i < n; i++) {
        const jsonr_t *t = o->items[i];
        double v = jsonr_num(t, "value", NAN), b = jsonr_num(t, "baseline", NAN);
        double top = fmax(isnan(v) ? 0 : v, isnan(b) ? 0 : b);
        if (!(top > 0))
            top = 1;
        double vals[2] = {v, b};
        const char *kinds[2] = {"model", "baseline"};
        for (int k = 0; k < 2; k++) {
            if (isnan(vals[k]))
                continue;
            double h = fmax(vals[k], 0) / top * (H - MT - MB - 20);
            double x = ML + gw * i + gw * 0.15 + k * gw * 0.36;
            fprintf(f, "<rect class=\"bar\" data-task=\"");
            s_html(f, o->keys[i]);
            fprintf(f, "\" data-kind=\"%s\" data-value=\"%g\" x=\"%.1f\" y=\"%.1f\" "
                    "width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", kinds[k], vals[k], x,
                    H - MB - h, gw * 0.32, h, k ? "#bbbbbb" : s_colors[i % 10]);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">"
                    "%.4g</text>\n", x + gw * 0.16, H - MB - h - 4, vals[k]);
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">",
                ML + gw * i + gw * 0.5, H - MB + 16);
        s_html(f, o->keys[i]);
        fputs(" (", f);
        s_html(f, jsonr_str(t, "metric", "?"));
        fputs(")</text>\n", f);
    }
    s_legend(f, 0, "model");
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"#bbbbbb\"/>"
            "<text x=\"%d\" y=\"%d\" font-size=\"12\">baseline</text>\n", W - MR + 10,
            MT + 22, W - MR + 26, MT + 32);
    fputs("</svg>\n<table id=\"evaltable\"><tr><th>task</th><th>metric</th><th>model</th>"
          "<th>baseline</th><th>baseline kind</th><th>n</th><th>step</th></tr>\n", f);
    for (int i = 0; i < n; i++) {
        const jsonr_t *t = o->items[i];
        fputs("<tr><td>", f);
        s_html(f, o->keys[i]);
        fputs("</td><td>", f);
        s_html(f, jsonr_str(t, "metric", "?"));
        fprintf(f, "</td><td>%.4g</td><td>%.4g</td><td>", jsonr_num(t, "value", NAN),
                jsonr_num(t, "baseline", NAN));
        s_html(f, jsonr_str(t, "baseline_kind", ""));
        fprintf(f, "</td><td>%.0f</td><td>%.0f</td></tr>\n", jsonr_num(t, "n", 0),
                jsonr_num(t, "step", 0));
    }
    fputs("</table>\n", f);
    jsonr_destroy(&o);
}

static void s_usage(FILE *out) {
    fprintf(out, "usage: launch report [--out FILE] RUN_DIR\n"
                 "  Writes RUN_DIR/report.html (or FILE): loss per task over steps, the\n"
                 "  evaluation against its baseline, and per stage the throughput and busy\n"
                 "  fraction over time. One self-contained file: no network, no scripts.\n");
}

int report_main(int argc, char **argv) {
    const char *dir = NULL, *out_path = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out_path = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            s_usage(stderr);
            fprintf(stderr, "launch report: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        s_usage(stderr);
        fprintf(stderr, "launch report: no run directory given\n");
        return 2;
    }
    char path[2200], outp[2200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    s_set_t loss = {0};
    long bad_m = 0, nm = s_jsonl(path, s_on_metric, &loss, &bad_m);
    snprintf(path, sizeof path, "%s/stats.jsonl", dir);
    s_stage_t st = {0};
    long bad_s = 0, ns = s_jsonl(path, s_on_stats, &st, &bad_s);
    snprintf(path, sizeof path, "%s/stages.json", dir);
    if (nm < 0 && ns < 0 && access(path, R_OK) != 0) {
        fprintf(stderr, "launch report: %s is not a run directory (no metrics.jsonl, "
                "stats.jsonl or stages.json)\n", dir);
        s_set_free(&loss);
        return 1;
    }
    /* Busy: the mean over the tier's processes of each second. */
    for (int i = 0; i < st.busy.n; i++)
        for (int k = 0; k < st.busy.s[i].n; k++)
            st.busy.s[i].y[k] /= fmax(1, st.busy_n.s[i].y[k]);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    const char *base = strrchr(dir, '/') && strrchr(dir, '/')[1] ? strrchr(dir, '/') + 1 : dir;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>", f);
    s_html(f, base);
    fputs(" - run report</title>\n<style>\n"
          "body{font-family:sans-serif;margin:24px;color:#222;max-width:960px}\n"
          "h1{font-size:20px}h2{font-size:16px;margin-top:28px}\n"
          "table{border-collapse:collapse;font-size:13px;margin:8px 0}\n"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\n"
          "td:first-child,th:first-child{text-align:left}tr.total{font-weight:bold}\n"
          ".note{color:#a33;font-size:13px}.chart{display:block;margin:6px 0}\n"
          "pre{font-size:11px;background:#f6f6f6;padding:8px;overflow-x:auto}\n"
          "</style></head><body>\n<h1>Run report: ", f);
    s_html(f, base);
    fputs("</h1>\n<h2>Samples</h2>\n", f);
    s_summary(f, dir);

    fputs("<h2 id=\"loss-title\">Training loss per task</h2>\n", f);
    if (nm < 0)
        s_note(f, "no metrics.jsonl in %s (a run with the sink as consumer trains nothing)",
               dir);
    else if (loss.n == 0)
        s_note(f, "metrics.jsonl of %s holds no loss yet", dir);
    else
        s_plot(f, &loss, "loss", "loss", "task", "step", "loss", "step", "loss", NAN);
    if (bad_m)
        fprintf(f, "<p class=\"note\">%ld malformed lines of metrics.jsonl skipped</p>\n",
                bad_m);

    fputs("<h2 id=\"eval-title\">Evaluation against the constant baseline</h2>\n", f);
    s_eval(f, dir);

    fputs("<h2 id=\"tput-title\">Throughput per stage (items/s, summed over its "
          "processes)</h2>\n", f);
    if (ns < 0 || st.rate.n == 0) {
        s_note(f, "no stats timeline (stats.jsonl) in %s", dir);
    } else {
        s_plot(f, &st.rate, "throughput", "tput", "tier", "t", "v", "seconds since start",
               "items/s", 0);
        fputs("<h2 id=\"busy-title\">Busy fraction per stage (mean over its processes)</h2>\n",
              f);
        s_plot(f, &st.busy, "busy", "busy", "tier", "t", "v", "seconds since start",
               "busy fraction", 0);
    }
    if (bad_s)
        fprintf(f, "<p class=\"note\">%ld malformed lines of stats.jsonl skipped</p>\n", bad_s);
    /* The whole run's per-process figures and the bottleneck, as `launch top --once`
     * prints them. */
    fputs("<h2 id=\"stages-title\">Stages over the whole run</h2>\n", f);
    char *tbuf = NULL;
    size_t tlen = 0;
    FILE *tf = open_memstream(&tbuf, &tlen);
    char terr[512];
    int trc = top_write(dir, 0, tf, terr, sizeof terr);
    fclose(tf);
    if (trc == 0) {
        fputs("<pre id=\"stages\">", f);
        s_html(f, tbuf);
        fputs("</pre>\n", f);
    } else {
        s_note(f, "%s", terr);
    }
    free(tbuf);
    fputs("<p style=\"font-size:12px;color:#777\">Written by launch report; figures are "
          "explained in docs/profiling.md.</p>\n</body></html>\n", f);
    fclose(f);

    if (!out_path) {
        snprintf(outp, sizeof outp, "%s/report.html", dir);
        out_path = outp;
    }
    char err[512];
    int rc = util_write_file_atomic(out_path, buf, len, err, sizeof err);
    free(buf);
    long pts = 0;
    for (int i = 0; i < loss.n; i++)
        pts += loss.s[i].n;
    s_set_free(&st.rate);
    s_set_free(&st.busy);
    s_set_free(&st.busy_n);
    free(st.prev);
    if (rc != 0) {
        fprintf(stderr, "launch report: %s\n", err);
        return 1;
    }
    s_set_free(&loss);
    printf("%s: %ld loss points, %ld stats lines\n", out_path, pts, ns < 0 ? 0 : ns);
    return 0;
}
