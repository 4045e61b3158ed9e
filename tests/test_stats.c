/* test_stats.c: the stats reporter of common/stats.h: counters, gauges and per-task
 * counters, the latency histogram's percentiles, the PROTO_STATS snapshot as launch
 * receives it on its PULL socket, the once-a-second rate, and the rule that matters
 * most in a run: reporting never stalls a process, even when nobody listens. */
#include "proto.h"
#include "stats.h"
#include "util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static char err[512];

/* A PULL socket bound where a stats reporter will push (what launch does). */
static void *pull_bind(void *ctx, const char *ep) {
    void *s = zmq_socket(ctx, ZMQ_PULL);
    cr_assert_not_null(s);
    cr_assert_eq(zmq_bind(s, ep), 0, "bind %s: %s", ep, zmq_strerror(zmq_errno()));
    int to = 2000;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
    return s;
}

/* Receive one snapshot (fails the test after the socket's timeout). */
static proto_msg_t *recv_stats(void *pull) {
    err[0] = 0;
    proto_msg_t *m = proto_recv(pull, NULL, NULL, 0, err, sizeof err);
    cr_assert_not_null(m, "no stats snapshot received (%s)", err[0] ? err : "timeout");
    cr_assert_eq(proto_msg_kind(m), PROTO_STATS);
    return m;
}

/* True when another message is waiting within ms. */
static bool pending(void *pull, int ms) {
    zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms) > 0;
}

TestSuite(stats, .timeout = 30);

Test(stats, counters_gauges_and_task_counters) {
    stats_t *s = stats_new(NULL, NULL, "image.0", "image");
    cr_assert_not_null(s);
    cr_assert_float_eq(stats_get(s, "items_in"), 0, 1e-12, "an absent counter reads 0");
    stats_add(s, "items_in", 1);
    stats_add(s, "items_in", 2);
    stats_add(s, "busy_s", 0.25);
    stats_add(s, "busy_s", 0.5);
    stats_set(s, "queue_depth", 7);
    stats_set(s, "queue_depth", 3);   /* a gauge: the last value wins */
    stats_task_add(s, "caption", "read", 1);
    stats_task_add(s, "caption", "read", 1);
    stats_task_add(s, "vqa", "rejected", 5);
    cr_assert_float_eq(stats_get(s, "items_in"), 3, 1e-12);
    cr_assert_float_eq(stats_get(s, "busy_s"), 0.75, 1e-12);
    cr_assert_float_eq(stats_get(s, "queue_depth"), 3, 1e-12);
    cr_assert_float_eq(stats_get(s, "task.caption.read"), 2, 1e-12);
    cr_assert_float_eq(stats_get(s, "task.vqa.rejected"), 5, 1e-12);
    cr_assert_float_eq(stats_get(s, "task.vqa.read"), 0, 1e-12);
    /* Without an endpoint the counters are kept and nothing is sent: flush is harmless. */
    stats_flush(s);
    stats_tick(s);
    stats_destroy(&s);
    cr_assert_null(s, "destroy sets the caller's pointer to NULL");
    stats_destroy(&s);   /* and accepts NULL */
    stats_destroy(NULL);
}

Test(stats, percentiles_from_the_histogram) {
    stats_t *s = stats_new(NULL, NULL, "p", "t");
    cr_assert_float_eq(stats_percentile(s, 50), 0, 1e-12, "no latency recorded: 0");
    /* 90 items at 1 ms, 9 at 20 ms, 1 at 2 s: p50 = 1 ms, p90 = 1 ms, p99 = 20 ms,
     * p100 = 2 s. The histogram has 10 buckets per decade, so a reported value is
     * within a factor 10^0.1 (26%) of the truth. */
    for (int i = 0; i < 90; i++)
        stats_latency(s, 1e-3);
    for (int i = 0; i < 9; i++)
        stats_latency(s, 20e-3);
    stats_latency(s, 2.0);
    double tol = pow(10.0, 0.1);
    struct { double pct, want; } cases[] = {{50, 1e-3}, {90, 1e-3}, {91, 20e-3},
                                            {99, 20e-3}, {100, 2.0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double got = stats_percentile(s, cases[i].pct);
        cr_assert(got >= cases[i].want / tol && got <= cases[i].want * tol,
                  "p%g = %g s, want %g s within a factor %g", cases[i].pct, got,
                  cases[i].want, tol);
    }
    /* Percentiles are monotonic in pct. */
    double last = 0;
    for (int p = 1; p <= 100; p++) {
        double v = stats_percentile(s, p);
        cr_assert(v >= last, "p%d = %g < p%d = %g", p, v, p - 1, last);
        last = v;
    }
    stats_destroy(&s);
}

Test(stats, latency_out_of_range_is_clamped) {
    stats_t *s = stats_new(NULL, NULL, "p", "t");
    /* Zero, negative, NaN-free extremes: each lands in the first or last bucket. */
    stats_latency(s, 0);
    stats_latency(s, -1);
    stats_latency(s, 1e-12);
    double lo = stats_percentile(s, 100);
    cr_assert(lo > 0 && lo < 2e-6, "tiny latencies land in the first bucket (%g)", lo);
    stats_latency(s, 1e9);
    double hi = stats_percentile(s, 100);
    cr_assert(hi >= 50 && hi <= 200, "huge latencies land in the last bucket (%g)", hi);
    stats_destroy(&s);
}

Test(stats, snapshot_carries_every_counter) {
    void *ctx = zmq_ctx_new();
    void *pull = pull_bind(ctx, "inproc://stats-snapshot");
    stats_t *s = stats_new(ctx, "inproc://stats-snapshot", "tokenize.1", "tokenize");
    cr_assert_not_null(s);
    stats_add(s, "items_in", 10);
    stats_add(s, "items_out", 9);
    stats_add(s, "bytes_in", 4096);
    stats_add(s, "bytes_out", 8192);
    stats_add(s, "busy_s", 1.5);
    stats_add(s, "wait_s", 0.5);
    stats_set(s, "queue_depth", 4);
    stats_task_add(s, "caption", "rejected", 1);
    stats_set_str(s, "node", "n01");
    for (int i = 0; i < 10; i++)
        stats_latency(s, 5e-3);
    stats_flush(s);

    proto_msg_t *m = recv_stats(pull);
    cr_assert_str_eq(proto_msg_get_str(m, "proc"), "tokenize.1");
    cr_assert_str_eq(proto_msg_get_str(m, "tier"), "tokenize");
    cr_assert_str_eq(proto_msg_get_str(m, "node"), "n01");
    cr_assert(proto_msg_get_int(m, "pid", 0) > 0);
    cr_assert(proto_msg_get_float(m, "time", 0) > 1e9, "wall-clock time of the snapshot");
    struct { const char *key; double want; } want[] = {
        {"items_in", 10}, {"items_out", 9}, {"bytes_in", 4096}, {"bytes_out", 8192},
        {"busy_s", 1.5}, {"wait_s", 0.5}, {"queue_depth", 4}, {"task.caption.rejected", 1}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_float_eq(proto_msg_get_float(m, want[i].key, -1), want[i].want, 1e-9,
                           "%s", want[i].key);
    double tol = pow(10.0, 0.1);
    const char *lat[] = {"lat_p50_ms", "lat_p90_ms", "lat_p99_ms"};
    for (int i = 0; i < 3; i++) {
        double v = proto_msg_get_float(m, lat[i], -1);
        cr_assert(v >= 5.0 / tol && v <= 5.0 * tol, "%s = %g ms, want about 5", lat[i], v);
    }
    proto_msg_destroy(&m);

    /* Counters are cumulative: the next snapshot carries the sums so far. */
    stats_add(s, "items_in", 5);
    stats_destroy(&s);   /* sends the final snapshot */
    m = recv_stats(pull);
    cr_assert_float_eq(proto_msg_get_float(m, "items_in", -1), 15, 1e-9);
    proto_msg_destroy(&m);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

Test(stats, tick_sends_about_once_a_second) {
    void *ctx = zmq_ctx_new();
    void *pull = pull_bind(ctx, "inproc://stats-tick");
    stats_t *s = stats_new(ctx, "inproc://stats-tick", "w", "image");
    /* Ticks in a tight loop for 1.3 s: exactly one snapshot (at about 1 s). */
    double t0 = util_now();
    while (util_now() - t0 < 1.3) {
        stats_add(s, "items_in", 1);
        stats_tick(s);
    }
    proto_msg_t *m = recv_stats(pull);
    proto_msg_destroy(&m);
    cr_assert_not(pending(pull, 50), "more than one snapshot within 1.3 s");
    stats_destroy(&s);
    m = recv_stats(pull);   /* the final one */
    proto_msg_destroy(&m);
    cr_assert_not(pending(pull, 50));
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

Test(stats, never_blocks_without_a_listener) {
    /* launch not there (yet): an ipc endpoint nobody binds. Each snapshot must be
     * dropped at once, not queued without bound and not waited for. */
    char dir[] = "/tmp/ofa-stats-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/nobody", dir);
    void *ctx = zmq_ctx_new();
    stats_t *s = stats_new(ctx, ep, "w", "image");
    cr_assert_not_null(s);
    for (int i = 0; i < 40; i++)
        stats_set(s, "filler", i);
    double t0 = util_now();
    for (int i = 0; i < 2000; i++) {
        stats_add(s, "items_in", 1);
        stats_flush(s);
    }
    double dt = util_now() - t0;
    cr_assert(dt < 1.0, "2000 snapshots without a listener took %.2f s", dt);
    /* Closing waits at most the linger (0.5 s), and zmq_ctx_term returns. */
    t0 = util_now();
    stats_destroy(&s);
    zmq_ctx_term(ctx);
    dt = util_now() - t0;
    cr_assert(dt < 2.0, "shutdown without a listener took %.2f s", dt);
    rmdir(dir);
}

Test(stats, a_late_listener_gets_later_snapshots) {
    /* The process starts before launch binds: nothing is lost that matters, because the
     * next snapshot carries cumulative counters. */
    char dir[] = "/tmp/ofa-stats-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/late", dir);
    void *ctx = zmq_ctx_new();
    stats_t *s = stats_new(ctx, ep, "w", "image");
    stats_add(s, "items_in", 3);
    stats_flush(s);
    void *pull = pull_bind(ctx, ep);
    stats_add(s, "items_in", 4);
    /* The reconnect takes a moment (ZeroMQ retries every 100 ms by default). */
    proto_msg_t *m = NULL;
    for (int i = 0; i < 40 && !m; i++) {
        stats_flush(s);
        if (pending(pull, 100)) {
            m = recv_stats(pull);
        }
    }
    cr_assert_not_null(m, "no snapshot reached the late listener");
    double v = proto_msg_get_float(m, "items_in", -1);
    cr_assert(v == 3 || v == 7, "items_in %g", v);
    proto_msg_destroy(&m);
    stats_destroy(&s);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    char path[160];
    snprintf(path, sizeof path, "%s/late", dir);
    unlink(path);
    rmdir(dir);
}

Test(stats, key_budget_is_bounded_and_snapshots_stay_valid) {
    /* More counters than the fixed budget, and keys too long for a message field: the
     * reporter keeps what fits, and every snapshot is still a message the decoder
     * accepts (at most PROTO_MAX_FIELDS fields, keys shorter than PROTO_MAX_KEY). */
    void *ctx = zmq_ctx_new();
    void *pull = pull_bind(ctx, "inproc://stats-budget");
    stats_t *s = stats_new(ctx, "inproc://stats-budget", "w", "t");
    char key[200];
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "k%03d", i);
        stats_add(s, key, i);
    }
    memset(key, 'x', 150);
    key[150] = 0;
    stats_task_add(s, key, "read", 1);   /* a task name far too long */
    stats_add(s, "k000", 1);
    cr_assert_float_eq(stats_get(s, "k000"), 1, 1e-12, "existing keys still count");
    stats_flush(s);
    proto_msg_t *m = recv_stats(pull);
    cr_assert(proto_msg_n_fields(m) <= PROTO_MAX_FIELDS);
    for (int i = 0; i < proto_msg_n_fields(m); i++)
        cr_assert(strlen(proto_msg_field(m, i)->key) < PROTO_MAX_KEY);
    cr_assert_float_eq(proto_msg_get_float(m, "k001", -1), 1, 1e-9);
    cr_assert_not_null(proto_msg_get(m, "lat_p99_ms"), "percentiles always present");
    proto_msg_destroy(&m);
    stats_destroy(&s);
    m = recv_stats(pull);
    proto_msg_destroy(&m);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}
