/* test_trainer_log.c: metrics.jsonl lines and the progress line (stages/trainer/trainlog.c). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "trainlog.h"
#include "util.h"

Test(trainlog, line_format_is_json_with_every_key) {
    char line[512];
    int n = trainlog_format(line, sizeof line, 12, "cap\"tion", 3.25, 1e-4, 40.5, 800, 0.125, 1700000000.5);
    cr_assert_eq((size_t)n, strlen(line));
    cr_assert_str_eq(line, "{\"step\":12,\"task\":\"cap\\\"tion\",\"loss\":3.25,\"lr\":0.0001,"
                           "\"samples_per_s\":40.5,\"tokens_per_s\":800,\"data_wait_s\":0.125,"
                           "\"time\":1700000000.500}");
    /* A diverged loss is written as null (JSON has no NaN). */
    trainlog_format(line, sizeof line, 1, "t", NAN, INFINITY, 0, 0, 0, 0);
    cr_assert(strstr(line, "\"loss\":null,\"lr\":null"), "%s", line);
}

/* With a peak memory set, every line ends with it, still one JSON object. */
Test(trainlog, lines_carry_the_peak_memory) {
    char dir[] = "/tmp/test_tlogm.XXXXXX", path[256], err[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    trainlog_t *tl = trainlog_new(path, 0, err, sizeof err);
    cr_assert_not_null(tl, "%s", err);
    trainlog_batch(tl, 1, "a", 2.0, 1e-3, 4, 40, 0, 1, 1);
    trainlog_set_peak_mem(tl, "gpu", 123456789);
    trainlog_batch(tl, 2, "a", 1.0, 1e-3, 4, 40, 0, 1, 1);
    trainlog_set_peak_mem(tl, "rss", -1);
    trainlog_batch(tl, 3, "a", 1.0, 1e-3, 4, 40, 0, 1, 1);
    trainlog_destroy(&tl);
    char *text = util_read_file(path, NULL, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    /* Split the three lines. */
    char *l1 = text, *l2 = strchr(l1, '\n'), *l3;
    cr_assert_not_null(l2);
    *l2++ = 0;
    l3 = strchr(l2, '\n');
    cr_assert_not_null(l3);
    *l3++ = 0;
    cr_assert_null(strstr(l1, "peak_mem"), "%s", l1);
    const char *tail = ",\"peak_mem_bytes\":123456789,\"peak_mem_kind\":\"gpu\"}";
    cr_assert(strlen(l2) > strlen(tail) && !strcmp(l2 + strlen(l2) - strlen(tail), tail), "%s", l2);
    cr_assert_null(strstr(l3, "peak_mem"), "%s", l3);
    free(text);
    unlink(path);
    rmdir(dir);
}

Test(trainlog, lines_per_task_every_log_every_steps) {
    char dir[] = "/tmp/test_tlog.XXXXXX", path[256], err[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    trainlog_t *tl = trainlog_new(path, 0, err, sizeof err);
    cr_assert_not_null(tl, "%s", err);
    /* Steps 1..10 alternate tasks a/b; log_every 4: a task writes when 4 steps have passed
     * since its last line. Token-weighted mean loss over the window. */
    for (int s = 1; s <= 10; s++)
        trainlog_batch(tl, s, s % 2 ? "a" : "b", s % 2 ? 2.0 : 4.0, 1e-3, 8, 100, 0.01, 4, 0);
    trainlog_flush(tl, 10, 1e-3);
    trainlog_destroy(&tl);
    cr_assert_null(tl);
    size_t len;
    char *text = util_read_file(path, &len, err, sizeof err);
    cr_assert_not_null(text);
    /* a: 1,3,5 -> line at 5 (5-0 >= 4); 7,9 -> line at 9.
     * b: 2,4 -> line at 4; 6,8 -> line at 8; 10 -> written by the flush. */
    int lines = 0;
    for (char *p = text; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 5, "%s", text);
    cr_assert(strstr(text, "{\"step\":4,\"task\":\"b\",\"loss\":4,"), "%s", text);
    cr_assert(strstr(text, "{\"step\":5,\"task\":\"a\",\"loss\":2,"), "%s", text);
    cr_assert(strstr(text, "{\"step\":9,\"task\":\"a\""), "%s", text);
    cr_assert(strstr(text, "{\"step\":10,\"task\":\"b\""), "%s", text);
    free(text);
    /* Append, not truncate: a resumed run continues the file. */
    tl = trainlog_new(path, 0, err, sizeof err);
    trainlog_batch(tl, 11, "a", 1.0, 1e-3, 8, 100, 0, 1, 0);
    trainlog_destroy(&tl);
    text = util_read_file(path, &len, err, sizeof err);
    lines = 0;
    for (char *p = text; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 6);
    free(text);
    /* Resumed after step 14 with log_every 4: the lines come at 16 and 20, as in a run
     * that never stopped, not at 18 (4 steps after the resume). */
    tl = trainlog_new(path, 0, err, sizeof err);
    trainlog_resume_at(tl, 14, 4);
    for (int s = 15; s <= 20; s++)
        trainlog_batch(tl, s, "c", 1.0, 1e-3, 8, 100, 0, 4, 0);
    trainlog_destroy(&tl);
    text = util_read_file(path, &len, err, sizeof err);
    cr_assert(strstr(text, "{\"step\":16,\"task\":\"c\""), "%s", text);
    cr_assert(strstr(text, "{\"step\":20,\"task\":\"c\""), "%s", text);
    cr_assert_null(strstr(text, "{\"step\":18,\"task\":\"c\""), "%s", text);
    free(text);
    if (access("/usr/bin/python3", X_OK) == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"import json; [json.loads(l) for l in open('%s')]\"", path);
        cr_assert_eq(system(cmd), 0, "metrics.jsonl is not JSON lines");
    }
    cr_assert_null(trainlog_new("/nonexistent/m.jsonl", 0, err, sizeof err));
    cr_assert(strstr(err, "/nonexistent/m.jsonl"), "%s", err);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    cr_assert_eq(system(path), 0);
}

Test(trainlog, eta_format) {
    char b[32];
    trainlog_fmt_eta(42.4, b, sizeof b);
    cr_assert_str_eq(b, "42s");
    trainlog_fmt_eta(312, b, sizeof b);
    cr_assert_str_eq(b, "5m12s");
    trainlog_fmt_eta(3780, b, sizeof b);
    cr_assert_str_eq(b, "1h03m");
    trainlog_fmt_eta(NAN, b, sizeof b);
    cr_assert_str_eq(b, "?");
}
