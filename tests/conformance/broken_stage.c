/* broken_stage.c: conform-broken, a worker that breaks one rule of the protocol on
 * purpose, so that the tests can show ofa-conform failing it with the right reason.
 *
 * Its work is trivial: it copies the string field "text" to "out" upper-cased, and
 * rejects a sample without "text". `--break MODE` picks the fault:
 *
 *   none        no fault (the kit passes it)
 *   credits     answers every sample twice: more answers than samples granted
 *   heartbeat   never sends a heartbeat
 *   hello       announces 1000 credits whatever --credits says
 *   reject      drops a sample it cannot process instead of rejecting it
 *   garbage     exits with status 3 on a malformed message
 *   stop        ignores CONTROL stop
 *   slow        holds each sample 2.5 s without a heartbeat (declared dead)
 *   stats       never pushes a STATS message
 *   curve       ignores --curve FILE and connects without CURVE (refused on tcp://) */
#include "curve.h"
#include "stage.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    char mode[32];
} s_flags_t;

static int s_extra(void *ctx, const char *flag, const char *value) {
    s_flags_t *f = ctx;
    if (!strcmp(flag, "--break")) {
        static const char *modes[] = {"none", "credits", "heartbeat", "hello", "reject",
                                      "garbage", "stop", "slow", "stats", "curve"};
        for (size_t i = 0; value && i < sizeof modes / sizeof *modes; i++)
            if (!strcmp(value, modes[i])) {
                snprintf(f->mode, sizeof f->mode, "%s", value);
                return 1;
            }
        util_fatal(NULL, "--break takes none, credits, heartbeat, hello, reject, garbage, "
                   "stop, slow, stats or curve; got '%s'", value ? value : "");
    }
    return 0;
}

static bool s_is(const s_flags_t *f, const char *mode) { return strcmp(f->mode, mode) == 0; }

int main(int argc, char **argv) {
    s_flags_t flags = {"none"};
    stage_args_t a;
    stage_args_parse(&a, argc, argv,
                     "conform-broken: a worker that breaks one protocol rule on purpose\n"
                     "  --break MODE   none|credits|heartbeat|hello|reject|garbage|stop|slow|stats|"
                     "curve",
                     s_extra, &flags);
    if (s_is(&flags, "curve"))
        curve_set_default(NULL);   /* the keys stage_args_parse loaded are dropped */
    stage_install_signals();
    void *zctx = zmq_ctx_new();
    char err[1024];
    stats_t *st = stats_new(zctx, s_is(&flags, "stats") ? "" : a.stats, a.id, a.tier);
    stage_conn_t *conn = stage_conn_new(zctx, a.ctl, "worker", a.id, a.tier,
                                        s_is(&flags, "hello") ? 1000 : a.credits, NULL, err,
                                        sizeof err);
    if (!conn)
        util_fatal(NULL, "%s", err);
    void *sock = stage_conn_socket(conn);
    bool ignore_stop = s_is(&flags, "stop");
    while (!stage_stop_flag) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 100);
        proto_msg_t *m;
        while ((m = proto_recv(sock, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err)) != NULL ||
               err[0]) {
            if (!m) {
                fprintf(stderr, "conform-broken: malformed message: %s\n", err);
                if (s_is(&flags, "garbage"))
                    exit(3);
                continue;
            }
            if (proto_msg_kind(m) == PROTO_CONTROL && !strcmp(proto_msg_op(m), "stop") &&
                !ignore_stop)
                stage_stop_flag = SIGTERM;
            if (proto_msg_kind(m) != PROTO_SAMPLE) {
                proto_msg_destroy(&m);
                continue;
            }
            stats_add(st, "items_in", 1);
            const char *text = proto_msg_get_str(m, "text");
            if (!text) {
                if (s_is(&flags, "reject")) {
                    proto_msg_destroy(&m);
                    continue;
                }
                proto_msg_t *r = stage_make_reject(m, a.tier, "column text: missing from "
                                                   "the sample");
                proto_msg_destroy(&m);
                stage_conn_send(conn, &r);
                continue;
            }
            char *up = util_strdup(text);
            for (char *p = up; *p; p++)
                *p = (char)toupper((unsigned char)*p);
            proto_msg_set_str(m, "out", up);
            free(up);
            proto_msg_set_int(m, "@hop", proto_msg_get_int(m, "@hop", 0) + 1);
            if (s_is(&flags, "slow"))
                usleep(2500 * 1000);
            if (s_is(&flags, "credits")) {
                proto_msg_t *dup = proto_msg_clone(m);
                stage_conn_send(conn, &dup);
            }
            stage_conn_send(conn, &m);
            stats_add(st, "items_out", 1);
        }
        if (!s_is(&flags, "heartbeat"))
            stage_conn_heartbeat(conn);
        stats_tick(st);
    }
    stage_conn_destroy(&conn);
    stats_destroy(&st);
    zmq_ctx_term(zctx);
    return 0;
}
