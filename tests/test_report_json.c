/* test_report_json.c: the pieces under launch's profiling tools: the JSON reader
 * (launch/jsonr.c) that top, profile and report parse the run's records with, the span
 * tracer (common/trace.c), and the stats timeline (launch/timeline.c over statsdb). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../launch/jsonr.h"
#include "../launch/statsdb.h"
#include "../launch/timeline.h"
#include "trace.h"
#include "util.h"

static jsonr_t *parse(const char *s, char *err, size_t errlen) {
    return jsonr_parse(s, strlen(s), err, errlen);
}

Test(jsonr, parses_the_records_of_a_run) {
    char err[256];
    jsonr_t *o = parse("{\"t\": 1.5, \"proc\": \"image.0\", \"n\": -2e3, \"ok\": true, "
                       "\"none\": null, \"a\": [1, {\"b\": \"x\\u00e9\\n\"}], \"t\": 2}\n",
                       err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    cr_assert_eq(o->type, JSONR_OBJ);
    cr_assert_float_eq(jsonr_num(o, "t", 0), 2.0, 1e-12, "a repeated key: the last wins");
    cr_assert_str_eq(jsonr_str(o, "proc", ""), "image.0");
    cr_assert_float_eq(jsonr_num(o, "n", 0), -2000.0, 1e-9);
    cr_assert_eq(jsonr_get(o, "ok")->type, JSONR_BOOL);
    cr_assert_eq(jsonr_get(o, "none")->type, JSONR_NULL);
    cr_assert_float_eq(jsonr_num(o, "none", 7), 7.0, 0, "null is not a number: fallback");
    const jsonr_t *a = jsonr_get(o, "a");
    cr_assert_eq(a->n, 2);
    cr_assert_str_eq(jsonr_str(a->items[1], "b", ""), "x\xc3\xa9\n");
    cr_assert_null(jsonr_get(a, "b"), "an array has no members");
    jsonr_destroy(&o);
    cr_assert_null(o);
}

Test(jsonr, refuses_what_is_not_json_with_the_offset) {
    static const struct { const char *text; const char *why; } bad[] = {
        {"{\"t\": 1.5, \"proc\": ", "unexpected end"},     /* a line cut while written */
        {"{\"t\": nan}", "unexpected character"},
        {"{\"t\": 01}", "expected ',' or '}'"},
        {"{\"t\": 1.}", "digit expected"},
        {"{t: 1}", "expected a key"},
        {"[1, 2", "expected ','"},
        {"\"a\\x\"", "bad escape"},
        {"\"tab\there\"", "control character"},
        {"{} {}", "text after"},
        {"", "unexpected end"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        jsonr_t *o = parse(bad[i].text, err, sizeof err);
        cr_assert_null(o, "accepted %s", bad[i].text);
        cr_assert(strstr(err, "offset ") && strstr(err, bad[i].why), "%s: %s", bad[i].text,
                  err);
    }
    char deep[200];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    char err[256];
    cr_assert_null(parse(deep, err, sizeof err));
    cr_assert(strstr(err, "deeper than 64"), "%s", err);
}

/* Every prefix and every one-byte change of a valid line gives a tree or an error,
 * never a crash or a read past the end (the buffer is exactly the text, no NUL). */
Test(jsonr, any_bytes_give_a_tree_or_an_error) {
    const char *line = "{\"t\": 3.25, \"proc\": \"sink\", \"lat\": [0.1, 2e-3, -4], "
                       "\"s\": \"\\ud83d\\ude00\\\"\", \"ok\": false}";
    size_t n = strlen(line);
    util_rng_t rng = {42};
    for (int round = 0; round < 4000; round++) {
        size_t len = round < (int)n ? (size_t)round : n;
        char *buf = util_malloc(len ? len : 1);
        memcpy(buf, line, len);
        if (round >= (int)n && len)
            buf[util_rng_next(&rng) % len] = (char)(util_rng_next(&rng) & 0xff);
        char err[256];
        jsonr_t *o = jsonr_parse(buf, len, err, sizeof err);
        if (round == (int)n - 1 || round < (int)n)
            cr_assert_null(o, "a strict prefix (%d bytes) parsed", round);
        jsonr_destroy(&o);
        free(buf);
    }
    char err[256];
    jsonr_t *o = jsonr_parse(line, n, err, sizeof err);
    cr_assert_not_null(o, "%s", err);
    cr_assert_str_eq(jsonr_str(o, "s", ""), "\xf0\x9f\x98\x80\"", "surrogate pair to UTF-8");
    jsonr_destroy(&o);
}

/* A fresh temporary folder for span files. */
static void tmpdir(char *out, size_t outlen) {
    snprintf(out, outlen, "/tmp/ofa-test-trace-XXXXXX");
    cr_assert_not_null(mkdtemp(out));
}

Test(trace, off_without_the_variable_and_spans_when_on) {
    unsetenv("OFA_TRACE");
    cr_assert_eq(trace_open("w"), 1, "off when OFA_TRACE is unset");
    cr_assert(!trace_enabled());
    cr_assert_eq(trace_now(), 0.0, "no clock read when off");
    trace_span("work", trace_now(), "caption");   /* a no-op */

    char dir[64], path[128];
    tmpdir(dir, sizeof dir);
    setenv("OFA_TRACE", dir, 1);
    setenv("OFA_TRACE_MAX", "3", 1);
    cr_assert_eq(trace_open("image/0"), 0);
    for (int i = 0; i < 5; i++) {
        double t0 = trace_now();
        usleep(2000);
        trace_span_n("work", t0, i % 2 ? "vqa" : "cap\"tion", "i", i);
    }
    trace_close();
    unsetenv("OFA_TRACE");
    unsetenv("OFA_TRACE_MAX");
    /* The odd name becomes a safe file name; OFA_TRACE_MAX bounds the lines. */
    snprintf(path, sizeof path, "%s/image_0.jsonl", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        char err[256];
        jsonr_t *o = parse(line, err, sizeof err);
        cr_assert_not_null(o, "%s: %s", line, err);
        cr_assert_str_eq(jsonr_str(o, "name", ""), "work");
        cr_assert_geq(jsonr_num(o, "dur", 0), 1500, "a 2 ms span lasts >= 1.5 ms");
        cr_assert_gt(jsonr_num(o, "ts", 0), 1.7e15, "ts is wall-clock microseconds");
        cr_assert_float_eq(jsonr_num(o, "i", -1), n, 0);
        cr_assert_str_eq(jsonr_str(o, "task", ""), n % 2 ? "vqa" : "cap\"tion");
        jsonr_destroy(&o);
        n++;
    }
    fclose(f);
    cr_assert_eq(n, 3, "%d spans written, OFA_TRACE_MAX is 3", n);
    unlink(path);
    rmdir(dir);
}

Test(timeline, one_line_per_fresh_process_per_second) {
    char dir[64], path[128];
    tmpdir(dir, sizeof dir);
    char err[256];
    timeline_t *tl = timeline_open(dir, err, sizeof err);
    cr_assert_not_null(tl, "%s", err);
    statsdb_t *db = statsdb_new();
    statsdb_begin(db, "image.0", 10, "image");
    statsdb_put(db, "image.0", "items_out", 5);
    statsdb_put(db, "image.0", "busy_s", 0.25);
    statsdb_begin(db, "trainer", 11, "trainer");
    statsdb_put(db, "trainer", "loss", NAN);
    statsdb_put(db, "trainer", "time", 1795541071.395);
    timeline_tick(tl, db);                 /* less than a second since open: nothing */
    usleep(1050000);
    timeline_tick(tl, db);                 /* both processes */
    statsdb_begin(db, "image.0", 10, "image");
    statsdb_put(db, "image.0", "items_out", 9);
    statsdb_begin(db, "image.0", 10, "image");   /* two snapshots in one second: one line */
    statsdb_put(db, "image.0", "items_out", 12);
    timeline_tick(tl, db);                 /* too early */
    timeline_close(&tl, db);               /* the last snapshot of image.0 only */
    cr_assert_null(tl);
    statsdb_destroy(&db);

    snprintf(path, sizeof path, "%s/stats.jsonl", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[1024];
    const char *want_proc[] = {"image.0", "trainer", "image.0"};
    double want_items[] = {5, 0, 12};
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        jsonr_t *o = parse(line, err, sizeof err);
        cr_assert_not_null(o, "line %d is not JSON (%s): %s", n + 1, err, line);
        cr_assert_lt(n, 3, "more than 3 lines");
        cr_assert_str_eq(jsonr_str(o, "proc", ""), want_proc[n]);
        cr_assert_float_eq(jsonr_num(o, "items_out", 0), want_items[n], 0);
        cr_assert_geq(jsonr_num(o, "t", -1), 1.0);
        if (n == 1) {
            cr_assert_eq(jsonr_get(o, "loss")->type, JSONR_NULL, "NaN is written as null");
            cr_assert_float_eq(jsonr_num(o, "time", 0), 1795541071.395, 1e-4,
                               "time keeps its milliseconds");
        }
        jsonr_destroy(&o);
        n++;
    }
    fclose(f);
    cr_assert_eq(n, 3);
    unlink(path);
    rmdir(dir);
}

Test(timeline, refused_when_the_folder_is_missing) {
    char err[256] = "";
    timeline_t *tl = timeline_open("/nonexistent/run", err, sizeof err);
    cr_assert_null(tl);
    cr_assert(strstr(err, "/nonexistent/run/stats.jsonl"), "%s", err);
}
