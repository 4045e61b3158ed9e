/* ofa-broker: binds the run's ROUTER socket and runs the broker state machine
 * (broker.h) in one poll loop. Flags: the common stage flags plus --bind ENDPOINT,
 * --max-inflight N, --dead-ms MS, --max-msg-bytes N. */
#include "broker.h"
#include "curve.h"
#include "stage.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    char bind[512];
    int max_inflight, dead_ms;
    long long max_msg_bytes;
} s_opts_t;

static int s_extra(void *ctx, const char *flag, const char *value) {
    s_opts_t *o = ctx;
    if (!value)
        return 0;
    if (strcmp(flag, "--bind") == 0) {
        snprintf(o->bind, sizeof o->bind, "%s", value);
        return 1;
    }
    if (strcmp(flag, "--max-msg-bytes") == 0) {
        o->max_msg_bytes = stage_flag_int(flag, value, 1024, (long)1 << 40);
        return 1;
    }
    if (strcmp(flag, "--max-inflight") == 0 || strcmp(flag, "--dead-ms") == 0) {
        int v = (int)stage_flag_int(flag, value, 1, 10000000);
        *(flag[2] == 'm' ? &o->max_inflight : &o->dead_ms) = v;
        return 1;
    }
    return 0;
}

static int s_send(void *ctx, const void *ident, size_t identlen, proto_msg_t **msg_p) {
    /* ROUTER drops messages to unknown peers instead of blocking (ZMQ_ROUTER_MANDATORY
     * off), so a vanished worker never stalls the broker. */
    return proto_send(ctx, ident, identlen, msg_p, ZMQ_DONTWAIT);
}

int main(int argc, char **argv) {
    stage_args_t a;
    s_opts_t o = {.max_inflight = 256, .dead_ms = 2000};
    stage_args_parse(&a, argc, argv,
                     "usage: ofa-broker --bind ENDPOINT [--max-inflight N] [--dead-ms MS] "
                     "[common flags]\n"
                     "  --bind ENDPOINT    ROUTER endpoint every stage connects to\n"
                     "  --max-inflight N   samples inside the tiers at most (256)\n"
                     "  --dead-ms MS       a worker silent this long is dead (2000)\n"
                     "  --max-msg-bytes N  a peer sending a larger frame is disconnected "
                     "(limits.message_bytes; default none)",
                     s_extra, &o);
    if (!o.bind[0])
        util_fatal("launch passes --bind", "no --bind endpoint");
    stage_install_signals();
    void *zctx = zmq_ctx_new();
    void *sock = zmq_socket(zctx, ZMQ_ROUTER);
    /* No high-water mark: credits bound what is queued toward every peer, and a ROUTER
     * at its mark would drop messages silently. */
    int linger = 0, hwm = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* A restarted process reconnects under its old id: the new connection takes it over. */
    int handover = 1;
    zmq_setsockopt(sock, ZMQ_ROUTER_HANDOVER, &handover, sizeof handover);
    /* The plan's limits.message_bytes: one huge frame cannot exhaust the hub's memory. */
    if (o.max_msg_bytes > 0) {
        int64_t mx = o.max_msg_bytes;
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &mx, sizeof mx);
    }
    /* tcp:// runs: a CURVE server that admits only the run's clients (curve.h). */
    curve_zap_t *zap = NULL;
    if (curve_default()) {
        char e[512];
        if (!(zap = curve_zap_new(zctx, curve_default(), e, sizeof e)) ||
            curve_server_apply(sock, curve_default(), e, sizeof e) != 0)
            util_fatal(NULL, "%s", e);
    }
    if (zmq_bind(sock, o.bind) != 0)
        util_fatal("is another run using the same endpoint?", "bind %s: %s", o.bind,
                   zmq_strerror(errno));
    stats_t *st = stats_new(zctx, a.stats, a.id, "broker");
    char rejects[1200];
    snprintf(rejects, sizeof rejects, "%s/rejects.jsonl", a.run_dir[0] ? a.run_dir : ".");
    broker_opts_t bo = {.max_inflight = o.max_inflight, .dead_ms = o.dead_ms,
                        .rejects_path = rejects};
    broker_t *b = broker_new(&bo, s_send, sock, st);
    fprintf(stderr, "ofa-broker: bound %s%s (max in flight %d, dead after %d ms)\n", o.bind,
            zap ? " with CURVE" : "", o.max_inflight, o.dead_ms);

    trace_open(a.id);
    double busy = 0;
    while (!stage_stop_flag) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        double t_wait = util_now();
        int n = zmq_poll(&it, 1, 50);
        double t0 = util_now();
        stats_add(st, "wait_s", t0 - t_wait);
        if (n < 0 && errno != EINTR)
            break;
        double tr0 = trace_now();
        int k = 0;
        for (; k < 1000; k++) {
            char ident[256], err[512];
            size_t identlen = 0;
            proto_msg_t *m = proto_recv(sock, ident, &identlen, ZMQ_DONTWAIT, err, sizeof err);
            if (!m) {
                if (!err[0])
                    break;
                broker_on_garbage(b, ident, identlen, err);
                continue;
            }
            broker_on_message(b, ident, identlen, m);
        }
        broker_tick(b);
        /* One span per turn of the loop that routed something: n messages. */
        if (k > 0)
            trace_span_n("route", tr0, NULL, "n", k);
        busy += util_now() - t0;
        stats_set(st, "busy_s", busy);
        stats_tick(st);
    }
    trace_close();
    broker_destroy(&b);
    stats_destroy(&st);
    zmq_close(sock);
    curve_zap_destroy(&zap);
    zmq_ctx_term(zctx);
    return 0;
}
