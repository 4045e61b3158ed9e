/* stage.c: see stage.h. */
#include "stage.h"
#include "curve.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

volatile sig_atomic_t stage_stop_flag = 0;

static void s_on_signal(int sig) { stage_stop_flag = sig; }

void stage_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void s_usage(const char *usage, FILE *out) {
    fprintf(out, "%s\n", usage ? usage : util_progname());
    fprintf(out,
            "common flags:\n"
            "  --id ID          process id (names its log and stats)\n"
            "  --ctl ENDPOINT   broker endpoint to connect to\n"
            "  --plan FILE      resolved plan (plan.resolved.conf)\n"
            "  --stats ENDPOINT where to push stats (launch's PULL socket)\n"
            "  --run-dir DIR    run directory\n"
            "  --tier NAME      stage tier this worker serves\n"
            "  --credits N      items this process may hold at once (default 8)\n"
            "  --curve FILE     the run's CURVE key file (tcp:// endpoints; docs/protocol.md)\n"
            "  --arena TAG      put large outputs in a shared-memory arena of the run TAG\n"
            "  --arena-mb N     the arena's size in MiB (default 128)\n");
}

void stage_args_parse(stage_args_t *a, int argc, char **argv, const char *usage,
                      stage_extra_fn extra_fn, void *extra_ctx) {
    memset(a, 0, sizeof *a);
    util_set_progname(argv[0]);
    snprintf(a->id, sizeof a->id, "%s", util_progname());
    a->credits = 8;
    a->arena_mb = 128;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            s_usage(usage, stdout);
            exit(0);
        }
        struct { const char *flag; char *dst; size_t cap; } str_flags[] = {
            {"--id", a->id, sizeof a->id},           {"--ctl", a->ctl, sizeof a->ctl},
            {"--plan", a->plan, sizeof a->plan},     {"--stats", a->stats, sizeof a->stats},
            {"--run-dir", a->run_dir, sizeof a->run_dir},
            {"--tier", a->tier, sizeof a->tier},     {"--curve", a->curve, sizeof a->curve},
            {"--arena", a->arena, sizeof a->arena},
        };
        int took = 0;
        for (size_t k = 0; k < sizeof str_flags / sizeof *str_flags; k++) {
            if (strcmp(f, str_flags[k].flag) != 0)
                continue;
            if (!v) {
                fprintf(stderr, "%s: %s needs a value\n", util_progname(), f);
                exit(2);
            }
            snprintf(str_flags[k].dst, str_flags[k].cap, "%s", v);
            took = 1;
        }
        struct { const char *flag; int *dst; long hi; } int_flags[] = {
            {"--credits", &a->credits, 100000}, {"--arena-mb", &a->arena_mb, 65536},
        };
        for (size_t k = 0; !took && k < sizeof int_flags / sizeof *int_flags; k++) {
            if (strcmp(f, int_flags[k].flag) != 0)
                continue;
            char *end = NULL;
            long n = v ? strtol(v, &end, 10) : 0;
            if (!v || *end || n < 1 || n > int_flags[k].hi) {
                fprintf(stderr, "%s: %s needs a number from 1 to %ld\n", util_progname(), f,
                        int_flags[k].hi);
                exit(2);
            }
            *int_flags[k].dst = (int)n;
            took = 1;
        }
        if (took) {
            i++;
            continue;
        }
        int r = extra_fn ? extra_fn(extra_ctx, f, v) : 0;
        if (r == 1) {
            i++;
            continue;
        }
        if (r == 2)
            continue;
        fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", util_progname(), f);
        exit(2);
    }
    /* The keys are read once, before any socket exists; every connection the runtime
     * and the stats reporter make from now on is a CURVE client. */
    if (a->curve[0]) {
        curve_keys_t k;
        char err[1400];
        if (curve_keys_load(a->curve, &k, err, sizeof err) != 0)
            util_fatal("launch writes RUN/curve.keys (mode 0600) for tcp:// runs", "%s", err);
        curve_set_default(&k);
    }
}

double stage_flag_number(const char *flag, const char *value, double lo, double hi) {
    char *end;
    errno = 0;
    double v = value ? strtod(value, &end) : 0;
    if (!value || !*value || *end || errno || !(v >= lo && v <= hi))
        util_fatal(NULL, "%s takes a number in [%g, %g], got '%s'", flag, lo, hi,
                   value ? value : "");
    return v;
}

long stage_flag_int(const char *flag, const char *value, long lo, long hi) {
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || !*value || *end || errno || v < lo || v > hi)
        util_fatal(NULL, "%s takes an integer in [%ld, %ld], got '%s'", flag, lo, hi,
                   value ? value : "");
    return v;
}

struct stage_conn {
    void *sock;
    double last_send;
    proto_msg_t *hello;     /* a copy of the hello, for stage_conn_rehello */
};

stage_conn_t *stage_conn_new(void *zctx, const char *endpoint, const char *role,
                             const char *id, const char *tier, int credits,
                             proto_msg_t *hello, char *err, size_t errlen) {
    if (!endpoint || !*endpoint) {
        proto_msg_destroy(&hello);
        util_err(err, errlen, "no endpoint to connect to");
        return NULL;
    }
    stage_conn_t *self = util_calloc(1, sizeof *self);
    self->sock = zmq_socket(zctx, ZMQ_DEALER);
    /* Flow is bounded by credits, not by high-water marks (which drop or block). */
    int linger = 1000, hwm = 0;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(self->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(self->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* The identity names the process in the broker's logs. */
    zmq_setsockopt(self->sock, ZMQ_ROUTING_ID, id, strlen(id) < 255 ? strlen(id) : 255);
    const curve_keys_t *keys = curve_default();
    if (keys && curve_client_apply(self->sock, keys, err, errlen) != 0) {
        zmq_close(self->sock);
        free(self);
        proto_msg_destroy(&hello);
        return NULL;
    }
    if (zmq_connect(self->sock, endpoint) != 0) {
        util_err(err, errlen, "connect %s: %s", endpoint, zmq_strerror(errno));
        zmq_close(self->sock);
        free(self);
        proto_msg_destroy(&hello);
        return NULL;
    }
    if (!hello)
        hello = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_kind(hello, PROTO_CONTROL);
    proto_msg_set_op(hello, "hello");
    proto_msg_set_str(hello, "role", role);
    proto_msg_set_str(hello, "id", id);
    proto_msg_set_str(hello, "tier", tier ? tier : "");
    proto_msg_set_int(hello, "credits", credits);
    self->hello = proto_msg_clone(hello);
    if (stage_conn_send(self, &hello) != 0) {
        util_err(err, errlen, "hello to %s: %s", endpoint, zmq_strerror(errno));
        stage_conn_destroy(&self);
        return NULL;
    }
    return self;
}

void stage_conn_destroy(stage_conn_t **self_p) {
    if (!self_p || !*self_p)
        return;
    zmq_close((*self_p)->sock);
    proto_msg_destroy(&(*self_p)->hello);
    free(*self_p);
    *self_p = NULL;
}

void *stage_conn_socket(stage_conn_t *self) { return self->sock; }

int stage_conn_send(stage_conn_t *self, proto_msg_t **msg_p) {
    self->last_send = util_now();
    return proto_send(self->sock, NULL, 0, msg_p, 0);
}

void stage_conn_heartbeat(stage_conn_t *self) {
    if ((util_now() - self->last_send) * 1000.0 < STAGE_HEARTBEAT_MS)
        return;
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "heartbeat");
    stage_conn_send(self, &m);
}

int stage_conn_credit(stage_conn_t *self, int n) {
    proto_msg_t *m = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(m, "n", n);
    return stage_conn_send(self, &m);
}

int stage_conn_ack(stage_conn_t *self, int64_t step) {
    proto_msg_t *m = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(m, "n", 1);
    proto_msg_set_int(m, "ack", step);
    return stage_conn_send(self, &m);
}

int stage_conn_rehello(stage_conn_t *self) {
    proto_msg_t *m = proto_msg_clone(self->hello);
    return m ? stage_conn_send(self, &m) : -1;
}

proto_msg_t *stage_make_reject(const proto_msg_t *sample, const char *stage,
                               const char *reason) {
    proto_msg_t *r = proto_msg_new(PROTO_REJECT, proto_msg_task(sample));
    proto_msg_set_ids(r, proto_msg_ids(sample), proto_msg_n_ids(sample));
    proto_msg_set_int(r, "seq", proto_msg_get_int(sample, "seq", -1));
    proto_msg_set_int(r, "row", proto_msg_get_int(sample, "row", -1));
    proto_msg_set_int(r, "slot", proto_msg_get_int(sample, "slot", -1));
    proto_msg_set_int(r, "epoch", proto_msg_get_int(sample, "epoch", 0));
    const char *split = proto_msg_get_str(sample, "split");
    if (split)
        proto_msg_set_str(r, "split", split);
    proto_msg_set_str(r, "stage", stage);
    proto_msg_set_str(r, "reason", reason);
    return r;
}

/* The arena --arena names, or NULL with the reason on stderr (see stage_arena_t). */
static shmarena_t *s_arena_new(const stage_args_t *a) {
    /* Without room for the whole size in /dev/shm, half of it, down to 16 MiB. */
    char err[512];
    size_t mb = (size_t)a->arena_mb;
    shmarena_t *arena;
    while (!(arena = shmarena_new_tagged(a->arena, mb << 20, err, sizeof err)) && mb > 16)
        mb /= 2;
    if (!arena)
        fprintf(stderr, "%s: --arena %s: %s; large tensors go as frames\n", util_progname(),
                a->arena, err);
    else if (mb < (size_t)a->arena_mb)
        fprintf(stderr, "%s: --arena %s: %d MiB do not fit in /dev/shm; the arena has %zu "
                "MiB\n", util_progname(), a->arena, a->arena_mb, mb);
    return arena;
}

void stage_msg_to_arena(stage_arena_t *sa, const stage_args_t *a, proto_msg_t *m, size_t min,
                        stats_t *st) {
    for (int i = 0; i < proto_msg_n_fields(m); i++) {
        const proto_field_t *f = proto_msg_field(m, i);
        if ((f->type != PV_TENSOR && f->type != PV_BIN) || f->len < min ||
            proto_msg_field_arena_at(m, i, NULL))
            continue;
        shmarena_t *arena = stage_arena_get(sa, a);
        if (!arena)
            return;
        char key[PROTO_MAX_KEY];
        snprintf(key, sizeof key, "%s", f->key);
        int r = proto_msg_field_to_arena(m, key, arena);
        if (st)
            stats_add(st, r == 0 ? "arena_slots" : "arena_full", 1);
    }
}

int stage_msg_big(const proto_msg_t *m) {
    for (int i = 0; i < proto_msg_n_fields(m); i++) {
        const proto_field_t *f = proto_msg_field(m, i);
        if ((f->type == PV_TENSOR || f->type == PV_BIN) && f->len >= STAGE_ARENA_MIN)
            return 1;
    }
    return 0;
}

shmarena_t *stage_arena_get(stage_arena_t *sa, const stage_args_t *a) {
    if (!sa->arena && !sa->failed && a->arena[0])
        sa->failed = !(sa->arena = s_arena_new(a));
    return sa->arena;
}

int stage_worker_run(const stage_args_t *a, stage_work_fn fn, void *ctx) {
    stage_install_signals();
    void *zctx = zmq_ctx_new();
    char err[1024];
    stats_t *st = stats_new(zctx, a->stats, a->id, a->tier);
    stage_conn_t *conn = stage_conn_new(zctx, a->ctl, "worker", a->id, a->tier, a->credits,
                                        NULL, err, sizeof err);
    if (!conn) {
        fprintf(stderr, "%s: %s\n", util_progname(), err);
        stats_destroy(&st);
        zmq_ctx_term(zctx);
        return 1;
    }
    void *sock = stage_conn_socket(conn);
    trace_open(a->id);   /* spans recv/work/send when launch profiles the run */
    double wait_start = util_now();
    stage_arena_t sa = {0};
    int rc = 0;
    while (!stage_stop_flag) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, 100);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "%s: poll: %s\n", util_progname(), zmq_strerror(errno));
            rc = 1;
            break;
        }
        while (!stage_stop_flag) {
            double tr0 = trace_now();
            proto_msg_t *m = proto_recv(sock, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err);
            if (!m) {
                if (err[0])
                    fprintf(stderr, "%s: dropped a malformed message: %s\n", util_progname(),
                            err);
                break;
            }
            if (proto_msg_kind(m) == PROTO_SAMPLE)
                trace_span("recv", tr0, proto_msg_task(m));
            proto_kind_t kind = proto_msg_kind(m);
            if (kind == PROTO_CONTROL) {
                if (strcmp(proto_msg_op(m), "stop") == 0)
                    stage_stop_flag = SIGTERM;
                proto_msg_destroy(&m);
                continue;
            }
            if (kind != PROTO_SAMPLE) {
                fprintf(stderr, "%s: ignored a %s message\n", util_progname(),
                        proto_kind_name(proto_msg_kind(m)));
                proto_msg_destroy(&m);
                continue;
            }
            double t0 = util_now();
            stats_add(st, "wait_s", t0 - wait_start);
            stats_add(st, "items_in", 1);
            stats_add(st, "bytes_in", (double)proto_msg_bytes(m));
            err[0] = 0;
            /* fn may replace the sample: the span keeps a copy of its task name. */
            char task[64] = "";
            if (trace_enabled())
                snprintf(task, sizeof task, "%s", proto_msg_task(m));
            double tw = trace_now();
            int ok = fn(ctx, m, err, sizeof err);
            trace_span("work", tw, task);
            proto_msg_t *out;
            if (ok == 0) {
                proto_msg_set_int(m, "@hop", proto_msg_get_int(m, "@hop", 0) + 1);
                /* The arena is made with the first output that needs it (a tokenize
                 * worker passes slots on and never makes one). */
                stage_msg_to_arena(&sa, a, m, STAGE_ARENA_MIN, st);
                stats_add(st, "items_out", 1);
                stats_add(st, "bytes_out", (double)proto_msg_bytes(m));
                out = m;
            } else {
                out = stage_make_reject(m, a->tier[0] ? a->tier : a->id,
                                        err[0] ? err : "rejected (no reason given)");
                stats_add(st, "rejected", 1);
                stats_task_add(st, proto_msg_task(m), "rejected_here", 1);
                proto_msg_destroy(&m);
            }
            double t1 = util_now();
            stats_add(st, "busy_s", t1 - t0);
            stats_latency(st, t1 - t0);
            wait_start = t1;
            double ts = trace_now();
            if (stage_conn_send(conn, &out) != 0 && errno != EINTR)
                fprintf(stderr, "%s: send: %s\n", util_progname(), zmq_strerror(errno));
            trace_span(ok == 0 ? "send" : "reject", ts, task);
            /* A worker that always has the next sample waiting never leaves this loop:
             * its stats must still go out about once a second. */
            stats_tick(st);
        }
        stage_conn_heartbeat(conn);
        stats_tick(st);
    }
    trace_close();
    stage_conn_destroy(&conn);
    /* What it put in slots may still be in flight: the name stays (launch removes it). */
    shmarena_detach(&sa.arena);
    stats_destroy(&st);   /* sends the final snapshot */
    zmq_ctx_term(zctx);
    return rc;
}
