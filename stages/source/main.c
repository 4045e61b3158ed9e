/* ofa-source: emits the plan's rows (source.h) to the broker, as many as the broker's
 * credits allow, then the end of data; then idles (heartbeats) until launch stops it.
 *
 *   ofa-source --id source --ctl ipc://RUN/broker.sock --plan RUN/plan.resolved.conf \
 *              --stats ipc://RUN/stats.sock
 *
 * The source pushes nothing on its own: the broker's credits are the only thing that
 * lets rows into the system, so the number of samples in flight stays bounded however
 * large the dataset. It stays connected after eof (rather than exiting) because launch
 * treats a critical process that exits before the consumers finish as a failure of the
 * run. Counters: task.<T>.read for every row emitted (rejects included) and
 * task.<T>.rejected_here for the rows it rejected itself. */
#include "source.h"
#include "stage.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* --bucket K: length bucketing (source.h), off by default. A plan turns it on through
 * the source's program list: stages = { source = { program = ["ofa-source", "--bucket",
 * "8"]; }; }, so the setting is part of the plan and the order stays reproducible. */
static int s_extra(void *ctx, const char *flag, const char *value) {
    int *bucket = ctx;
    if (!value || strcmp(flag, "--bucket") != 0)
        return 0;
    char *end;
    long v = strtol(value, &end, 10);
    if (*end || end == value || v < 0 || v > 1024) {
        fprintf(stderr, "ofa-source: --bucket needs a number from 0 to 1024, not '%s'\n",
                value);
        exit(2);
    }
    *bucket = (int)v;
    return 1;
}

int main(int argc, char **argv) {
    stage_args_t a;
    int bucket = 0;
    stage_args_parse(&a, argc, argv,
                     "usage: ofa-source --ctl BROKER --plan PLAN [common flags]\n"
                     "Reads every task's train and valid rows and sends them to the broker.\n"
                     "  --bucket K   sort each run of K batches of a task by text length and\n"
                     "               shuffle those batches (less padding); 0 = off (default)",
                     s_extra, &bucket);
    char err[65536];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("launch passes the resolved plan with --plan", "%s", err);
    source_t *src = source_new(plan, err, sizeof err);
    if (!src)
        util_fatal("build the datasets with `launch data NAME`", "%s", err);
    source_set_bucket(src, bucket);
    stage_install_signals();
    void *zctx = zmq_ctx_new();
    stats_t *st = stats_new(zctx, a.stats, a.id, "source");
    stage_conn_t *conn = stage_conn_new(zctx, a.ctl, "source", a.id, "source", 0, NULL, err,
                                        sizeof err);
    if (!conn)
        util_fatal("is the broker running?", "%s", err);
    void *sock = stage_conn_socket(conn);
    trace_open(a.id);
    /* --arena: the rows' media bytes (a JPEG, a WAV) go into the source's arena and only
     * their descriptors through the broker; the broker releases a slot once the decoder
     * tier's answer no longer names it. */
    stage_arena_t arena = {0};
    long credits = 0;
    int finished = 0;
    double busy = 0;
    while (!stage_stop_flag) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) < 0 && errno != EINTR) {
            fprintf(stderr, "ofa-source: poll: %s\n", zmq_strerror(errno));
            break;
        }
        for (;;) {
            proto_msg_t *m = proto_recv(sock, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err);
            if (!m) {
                if (err[0])
                    fprintf(stderr, "ofa-source: dropped a malformed message: %s\n", err);
                break;
            }
            if (proto_msg_kind(m) == PROTO_CREDIT) {
                /* A credit outside 0..1e6 cannot come from the broker: ignored. */
                int64_t n = proto_msg_get_int(m, "n", 0);
                if (n > 0 && n <= 1000000)
                    credits += n;
            }
            else if (proto_msg_kind(m) == PROTO_CONTROL && strcmp(proto_msg_op(m), "stop") == 0)
                stage_stop_flag = SIGTERM;
            proto_msg_destroy(&m);
        }
        /* Answer the credits: one message per credit, a reject spending one like a
         * sample (the broker counts it as an answer too). */
        double t0 = util_now();
        while (credits > 0 && !finished && !stage_stop_flag) {
            double tr0 = trace_now();
            proto_msg_t *m = source_next(src);
            if (m)
                trace_span("read", tr0, proto_msg_task(m));
            if (!m) {
                proto_msg_t *eof = proto_msg_new(PROTO_CONTROL, NULL);
                proto_msg_set_op(eof, "eof");
                proto_msg_set_int(eof, "count", source_emitted(src));
                stage_conn_send(conn, &eof);
                finished = 1;
                fprintf(stderr, "ofa-source: all %lld rows sent\n",
                        (long long)source_emitted(src));
                break;
            }
            stats_task_add(st, proto_msg_task(m), "read", 1);
            if (proto_msg_kind(m) == PROTO_REJECT)
                stats_task_add(st, proto_msg_task(m), "rejected_here", 1);
            stats_add(st, "items_out", 1);
            stats_add(st, "bytes_out", (double)proto_msg_bytes(m));
            double ts = trace_now();
            stage_msg_to_arena(&arena, &a, m, STAGE_ARENA_MIN, st);
            stage_conn_send(conn, &m);
            trace_span("send", ts, NULL);
            credits--;
        }
        busy += util_now() - t0;
        stats_set(st, "busy_s", busy);
        stage_conn_heartbeat(conn);
        stats_tick(st);
    }
    if (stage_stop_flag)
        fprintf(stderr, "ofa-source: stopped by signal %d after %lld rows\n",
                (int)stage_stop_flag, (long long)source_emitted(src));
    trace_close();
    stage_conn_destroy(&conn);
    shmarena_detach(&arena.arena);   /* rows in flight may still name it: launch removes it */
    stats_destroy(&st);
    zmq_ctx_term(zctx);
    source_destroy(&src);
    plan_destroy(&plan);
    return 0;
}
