/* conform.c: ofa-conform, the stage conformance kit.
 *
 * It plays the broker's side of the protocol (docs/protocol.md) to one worker stage:
 * it binds a ROUTER on an ipc:// endpoint under a temporary folder and a PULL for stats,
 * starts the stage from an argv list (no shell) with the flags launch gives a worker
 * (--id --ctl --plan --stats --run-dir --tier --credits), and drives it through a fixed
 * script. Each step is a named check printed as one line, PASS or FAIL with the reason:
 *
 *   handshake   the first message is CONTROL hello: role worker, the tier and id it was
 *               given, the routing identity = --id, credits = --credits (it asks for work)
 *   heartbeat   while idle the stage sends something at least every 2 x 500 ms, and it is
 *               never silent longer than --dead-ms (2000) while it holds work
 *   output      a good sample comes back as a SAMPLE: same task, ids, seq and @route,
 *               @hop + 1, every field the decoder accepts, the expected fields present
 *   credits     a full window (--credits samples at once) comes back exactly once each,
 *               twice over: never an answer for a sample it does not hold
 *   transports  the same sample with its binary fields in shared memory is processed
 *   reject      a bad sample is answered by a REJECT with the same ids and seq and a
 *               non-empty reason, and the next good sample is processed
 *   garbage     undecodable frames, a wrong magic, an unknown kind and an unknown op are
 *               survived (and every bad_* message of --garbage-dir, e.g. the decoder's
 *               corpus tests/data/bad/msg): the next good sample is processed
 *   stats       at least one STATS message with proc = --id reached --stats
 *   stop        after CONTROL stop the stage exits with status 0 within --stop-ms
 *
 * With --transport tcp the sockets are tcp://127.0.0.1 CURVE servers, as on a cluster:
 * the kit makes the run's key file and hands it to the stage with --curve FILE, and a
 * stage that does not connect as a CURVE client with those keys never gets through.
 *
 * Exit status 0 when every check passed, 1 otherwise, 2 on a usage error. The stage's
 * stdout and stderr go to a log whose last lines are printed when a check failed. */
#include "curve.h"
#include "proto.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_FIELDS 32
#define MAX_CREDITS 64   /* the credits check sends at most this many samples at once */

typedef struct {
    char key[PROTO_MAX_KEY];
    bool is_file;        /* KEY=@FILE: the file's bytes as a bin field */
    bool drop;           /* bad sample only: remove the field */
    char *data;          /* owned */
    size_t len;
} s_field_t;

typedef struct {
    char key[PROTO_MAX_KEY];
    int type;            /* proto_vtype_t, or -1 for any */
    int dtype;           /* tensors: proto_dtype_t, or -1 for any */
    int ndim;            /* tensors: dimensions, or -1 for any */
} s_expect_t;

typedef struct {
    /* options */
    char tier[32], task[128], plan[1024], run_dir[1024], id[64];
    int credits, hop, hb_ms, dead_ms, start_ms, answer_ms, stop_ms;
    s_field_t good[MAX_FIELDS];
    int ngood;
    s_field_t bad[MAX_FIELDS];
    int nbad;
    s_expect_t expect[MAX_FIELDS];
    int nexpect;
    char **argv;         /* the stage's argv (from the command line) */
    int argc;
    bool keep;
    bool tcp;            /* --transport tcp: tcp:// with CURVE */
    char garbage_dir[1024];
    /* run */
    void *zctx, *router, *pull;
    curve_zap_t *zap;
    char tmp[256], ep[320], stats_ep[320], log[320], keys[320];
    pid_t pid;
    int status;          /* waitpid status once exited */
    bool exited;
    double last_msg;     /* monotonic time of the last message from the stage */
    double idle_gap;     /* longest gap while the kit was waiting on nothing */
    double busy_gap;     /* longest gap while the stage held work */
    bool idle;           /* the stage holds nothing: gaps count as idle gaps */
    int heartbeats, stats_msgs, malformed, foreign;
    char malformed_why[400];
    uint64_t next_row;
    int npass, nfail;
} conform_t;

/* ---- reporting ---- */

static void s_check(conform_t *self, const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_check(conform_t *self, const char *name, bool ok, const char *fmt, ...) {
    char why[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    printf("%s %-10s %s\n", ok ? "PASS" : "FAIL", name, why);
    fflush(stdout);
    if (ok)
        self->npass++;
    else
        self->nfail++;
}

static void s_usage(FILE *out) {
    fprintf(out,
        "usage: ofa-conform --tier NAME --task TASK [options] -- PROGRAM [ARGS...]\n"
        "Checks a worker stage against the pipeline protocol (docs/conformance.md).\n"
        "  --tier NAME          the tier the stage serves (image, tokenize, ...)\n"
        "  --task NAME          the task name put on the samples (a task of --plan)\n"
        "  --plan FILE          plan passed to the stage with --plan\n"
        "  --run-dir DIR        passed with --run-dir (default: a temporary folder)\n"
        "  --field KEY=TEXT     a string field of the good sample (repeatable)\n"
        "  --field KEY=@FILE    a bin field holding FILE's bytes\n"
        "  --bad-field KEY=...  the bad sample: the good one with this field replaced;\n"
        "                       KEY=! removes it (default: every --field removed)\n"
        "  --expect KEY[:TYPE[:DTYPE[:NDIM]]]  a field every answer must carry; TYPE is\n"
        "                       int, float, str, bin or tensor (default: the tier's own)\n"
        "  --credits N          credits the stage is given (default 4)\n"
        "  --hop N              @hop of the samples sent (default 0)\n"
        "  --heartbeat-ms MS    the heartbeat interval (500)\n"
        "  --dead-ms MS         longest silence while holding work (2000)\n"
        "  --start-ms MS        time to say hello (15000)\n"
        "  --answer-ms MS       time to answer one round of samples (30000)\n"
        "  --stop-ms MS         time to exit after stop (5000)\n"
        "  --transport ipc|tcp  ipc:// sockets (default), or tcp://127.0.0.1 with CURVE and\n"
        "                       the run's key file passed as --curve FILE\n"
        "  --garbage-dir DIR    also send every bad_* file of DIR as a message (the split\n"
        "                       into frames of tests/fuzz_proto.c; tests/data/bad/msg)\n"
        "  --keep               keep the temporary folder (the stage's log is there)\n");
}

/* ---- options ---- */

static int s_parse_field(s_field_t *f, const char *spec, bool bad, char *err, size_t errlen) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || (size_t)(eq - spec) >= sizeof f->key)
        return util_err(err, errlen, "'%s' is not KEY=VALUE", spec);
    memset(f, 0, sizeof *f);
    memcpy(f->key, spec, (size_t)(eq - spec));
    const char *v = eq + 1;
    if (bad && strcmp(v, "!") == 0) {
        f->drop = true;
        return 0;
    }
    if (v[0] == '@') {
        f->data = util_read_file(v + 1, &f->len, err, errlen);
        if (!f->data)
            return -1;
        f->is_file = true;
        return 0;
    }
    f->data = util_strdup(v);
    f->len = strlen(v);
    return 0;
}

static int s_parse_expect(s_expect_t *e, const char *spec, char *err, size_t errlen) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    memset(e, 0, sizeof *e);
    e->type = e->dtype = e->ndim = -1;
    char *parts[4] = {0};
    int n = 0;
    for (char *s = buf, *tok; n < 4 && (tok = strsep(&s, ":")) != NULL;)
        parts[n++] = tok;
    if (!parts[0][0] || strlen(parts[0]) >= sizeof e->key)
        return util_err(err, errlen, "--expect '%s': no field name", spec);
    snprintf(e->key, sizeof e->key, "%s", parts[0]);
    if (n > 1 && parts[1][0]) {
        static const char *types[] = {"int", "float", "str", "bin", "tensor"};
        for (int t = 0; t < 5; t++)
            if (!strcmp(parts[1], types[t]))
                e->type = t;
        if (e->type < 0)
            return util_err(err, errlen, "--expect '%s': unknown type '%s'", spec, parts[1]);
    }
    if (n > 2 && parts[2][0] && (e->dtype = proto_dtype_from_name(parts[2])) < 0)
        return util_err(err, errlen, "--expect '%s': unknown dtype '%s'", spec, parts[2]);
    if (n > 3 && parts[3][0]) {
        char *end;
        long d = strtol(parts[3], &end, 10);
        if (*end || d < 0 || d > PROTO_MAX_DIMS)
            return util_err(err, errlen, "--expect '%s': bad ndim '%s'", spec, parts[3]);
        e->ndim = (int)d;
    }
    return 0;
}

/* What each built-in tier adds, for each of the sample's file (bin) fields COL: the
 * contracts of docs/protocol.md. A tier not listed needs --expect. */
static void s_default_expect(conform_t *self) {
    static const struct { const char *tier; const char *spec[4]; bool per_col; } rows[] = {
        {"image", {"%s:tensor:u8:2", "%s.grid:int", "%s.width:int", "%s.height:int"}, true},
        {"video", {"%s:tensor:u8:2", "%s.grid:int", "%s.frames:int", NULL}, true},
        {"audio", {"%s:tensor:f32:2", "%s.frames:int", NULL, NULL}, true},
        {"motion", {"%s:tensor:f32:2", "%s.frames:int", NULL, NULL}, true},
        {"tokenize", {"src_tok:tensor:i32:1", "src_mod:tensor:u8:1", "tgt_in:tensor:i32:1",
                      "tgt_out:tensor:i32:1"}, false},
    };
    char spec[128], err[256];
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
        if (strcmp(rows[r].tier, self->tier) != 0)
            continue;
        for (int c = 0; c < (rows[r].per_col ? self->ngood : 1); c++) {
            if (rows[r].per_col && !self->good[c].is_file)
                continue;
            for (int k = 0; k < 4 && rows[r].spec[k]; k++) {
                snprintf(spec, sizeof spec, rows[r].spec[k],
                         rows[r].per_col ? self->good[c].key : "");
                if (self->nexpect < MAX_FIELDS)
                    s_parse_expect(&self->expect[self->nexpect++], spec, err, sizeof err);
            }
        }
        if (!strcmp(self->tier, "tokenize") && self->nexpect < MAX_FIELDS)
            s_parse_expect(&self->expect[self->nexpect++], "ref:str", err, sizeof err);
    }
}

static long s_num(const char *flag, const char *v, long lo, long hi) {
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || n < lo || n > hi) {
        fprintf(stderr, "ofa-conform: %s takes an integer in [%ld, %ld]\n", flag, lo, hi);
        exit(2);
    }
    return n;
}

static void s_parse_args(conform_t *self, int argc, char **argv) {
    self->credits = 4;
    self->hb_ms = 500;
    self->dead_ms = 2000;
    self->start_ms = 15000;
    self->answer_ms = 30000;
    self->stop_ms = 5000;
    char err[600];
    int i = 1;
    for (; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--")) {
            i++;
            break;
        }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            s_usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--keep")) {
            self->keep = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "ofa-conform: %s needs a value (see --help)\n", f);
            exit(2);
        }
        i++;
        if (!strcmp(f, "--tier"))
            snprintf(self->tier, sizeof self->tier, "%s", v);
        else if (!strcmp(f, "--task"))
            snprintf(self->task, sizeof self->task, "%s", v);
        else if (!strcmp(f, "--plan"))
            snprintf(self->plan, sizeof self->plan, "%s", v);
        else if (!strcmp(f, "--garbage-dir"))
            snprintf(self->garbage_dir, sizeof self->garbage_dir, "%s", v);
        else if (!strcmp(f, "--run-dir"))
            snprintf(self->run_dir, sizeof self->run_dir, "%s", v);
        else if (!strcmp(f, "--field") || !strcmp(f, "--bad-field")) {
            bool bad = f[2] == 'b';
            int *n = bad ? &self->nbad : &self->ngood;
            if (*n == MAX_FIELDS) {
                fprintf(stderr, "ofa-conform: at most %d %s flags\n", MAX_FIELDS, f);
                exit(2);
            }
            if (s_parse_field(bad ? &self->bad[*n] : &self->good[*n], v, bad, err,
                              sizeof err) != 0) {
                fprintf(stderr, "ofa-conform: %s: %s\n", f, err);
                exit(2);
            }
            (*n)++;
        } else if (!strcmp(f, "--expect")) {
            if (self->nexpect == MAX_FIELDS ||
                s_parse_expect(&self->expect[self->nexpect], v, err, sizeof err) != 0) {
                fprintf(stderr, "ofa-conform: %s\n",
                        self->nexpect == MAX_FIELDS ? "too many --expect" : err);
                exit(2);
            }
            self->nexpect++;
        } else if (!strcmp(f, "--credits"))
            self->credits = (int)s_num(f, v, 1, 100000);
        else if (!strcmp(f, "--hop"))
            self->hop = (int)s_num(f, v, 0, 7);
        else if (!strcmp(f, "--heartbeat-ms"))
            self->hb_ms = (int)s_num(f, v, 10, 60000);
        else if (!strcmp(f, "--dead-ms"))
            self->dead_ms = (int)s_num(f, v, 10, 600000);
        else if (!strcmp(f, "--start-ms"))
            self->start_ms = (int)s_num(f, v, 10, 600000);
        else if (!strcmp(f, "--answer-ms"))
            self->answer_ms = (int)s_num(f, v, 10, 600000);
        else if (!strcmp(f, "--stop-ms"))
            self->stop_ms = (int)s_num(f, v, 10, 600000);
        else if (!strcmp(f, "--transport")) {
            if (strcmp(v, "ipc") != 0 && strcmp(v, "tcp") != 0) {
                fprintf(stderr, "ofa-conform: --transport takes ipc or tcp, got '%s'\n", v);
                exit(2);
            }
            self->tcp = !strcmp(v, "tcp");
        }
        else {
            fprintf(stderr, "ofa-conform: unknown flag '%s' (see --help)\n", f);
            exit(2);
        }
    }
    if (i >= argc) {
        fprintf(stderr, "ofa-conform: no stage program given after '--' (see --help)\n");
        exit(2);
    }
    if (!self->tier[0] || !self->task[0]) {
        fprintf(stderr, "ofa-conform: --tier and --task are required (see --help)\n");
        exit(2);
    }
    self->argv = argv + i;
    self->argc = argc - i;
    snprintf(self->id, sizeof self->id, "%s.conform", self->tier);
    if (self->nexpect == 0)
        s_default_expect(self);
}

/* ---- the stage process ---- */

static int s_spawn(conform_t *self, char *err, size_t errlen) {
    char credits[16];
    snprintf(credits, sizeof credits, "%d", self->credits);
    const char *extra[16] = {"--id", self->id, "--ctl", self->ep, "--stats", self->stats_ep,
                             "--run-dir", self->run_dir, "--tier", self->tier,
                             "--credits", credits};
    int nextra = 12;
    if (self->plan[0]) {
        extra[nextra++] = "--plan";
        extra[nextra++] = self->plan;
    }
    if (self->tcp) {
        extra[nextra++] = "--curve";
        extra[nextra++] = self->keys;
    }
    char **argv = util_calloc((size_t)(self->argc + nextra + 1), sizeof *argv);
    for (int i = 0; i < self->argc; i++)
        argv[i] = self->argv[i];
    for (int i = 0; i < nextra; i++)
        argv[self->argc + i] = (char *)extra[i];
    int fd = open(self->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(argv);
        return util_err(err, errlen, "%s: %s", self->log, strerror(errno));
    }
    fflush(NULL);
    self->pid = fork();
    if (self->pid < 0) {
        close(fd);
        free(argv);
        return util_err(err, errlen, "fork: %s", strerror(errno));
    }
    if (self->pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    free(argv);
    return 0;
}

/* True once the stage has exited (its status kept). */
static bool s_reap(conform_t *self) {
    if (self->exited)
        return true;
    if (self->pid > 0 && waitpid(self->pid, &self->status, WNOHANG) == self->pid)
        self->exited = true;
    return self->exited;
}

static const char *s_exit_text(const conform_t *self, char *buf, size_t len) {
    if (WIFEXITED(self->status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(self->status));
    else if (WIFSIGNALED(self->status))
        snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(self->status),
                 strsignal(WTERMSIG(self->status)));
    else
        snprintf(buf, len, "ended");
    return buf;
}

/* ---- messages ---- */

static void s_send(conform_t *self, proto_msg_t **m) {
    if (proto_send(self->router, self->id, strlen(self->id), m, ZMQ_DONTWAIT) != 0 &&
        errno != EAGAIN)
        fprintf(stderr, "ofa-conform: send: %s\n", zmq_strerror(errno));
}

static void s_send_raw(conform_t *self, const void *const *frames, const size_t *lens, int n) {
    zmq_send(self->router, self->id, strlen(self->id), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    for (int i = 0; i < n; i++)
        zmq_send(self->router, frames[i], lens[i], (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
}

static void s_drain_stats(conform_t *self) {
    char err[256];
    proto_msg_t *m;
    while ((m = proto_recv(self->pull, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err)) != NULL) {
        const char *proc = proto_msg_get_str(m, "proc");
        if (proto_msg_kind(m) == PROTO_STATS && proc && !strcmp(proc, self->id))
            self->stats_msgs++;
        proto_msg_destroy(&m);
    }
}

/* The next message from the stage other than a heartbeat, or NULL when `deadline`
 * (monotonic seconds) passed or the stage exited. Heartbeats, stats and the silence
 * between messages are accounted on the way. */
static proto_msg_t *s_next(conform_t *self, double deadline) {
    for (;;) {
        double now = util_now();
        if (now >= deadline || s_reap(self))
            return NULL;
        zmq_pollitem_t it[2] = {{self->router, 0, ZMQ_POLLIN, 0}, {self->pull, 0, ZMQ_POLLIN, 0}};
        long ms = (long)((deadline - now) * 1000) + 1;
        zmq_poll(it, 2, ms < 50 ? ms : 50);
        s_drain_stats(self);
        /* Silence is measured up to now even when nothing arrives, so a stage that
         * stops talking is seen before the next message. */
        now = util_now();
        double gap = now - self->last_msg;
        if (self->idle && gap > self->idle_gap)
            self->idle_gap = gap;
        if (!self->idle && gap > self->busy_gap)
            self->busy_gap = gap;
        if (!(it[0].revents & ZMQ_POLLIN))
            continue;
        char ident[256], err[400];
        size_t identlen = 0;
        proto_msg_t *m = proto_recv(self->router, ident, &identlen, ZMQ_DONTWAIT, err, sizeof err);
        if (!m && !err[0])
            continue;
        self->last_msg = util_now();
        if (identlen != strlen(self->id) || memcmp(ident, self->id, identlen) != 0)
            self->foreign++;
        if (!m) {
            if (!self->malformed++)
                snprintf(self->malformed_why, sizeof self->malformed_why, "%s", err);
            continue;
        }
        if (proto_msg_kind(m) == PROTO_CONTROL && !strcmp(proto_msg_op(m), "heartbeat")) {
            self->heartbeats++;
            proto_msg_destroy(&m);
            continue;
        }
        return m;
    }
}

static proto_msg_t *s_sample(conform_t *self, bool bad) {
    uint64_t row = self->next_row++;
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, self->task);
    proto_msg_add_id(m, row);
    proto_msg_set_int(m, "seq", (int64_t)row);
    proto_msg_set_int(m, "row", (int64_t)row);
    proto_msg_set_int(m, "epoch", 0);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_str(m, "@route", self->tier);
    proto_msg_set_int(m, "@hop", self->hop);
    for (int i = 0; i < self->ngood; i++) {
        const s_field_t *f = &self->good[i];
        if (bad && self->nbad == 0)
            continue;   /* default bad sample: its columns are missing */
        if (f->is_file)
            proto_msg_set_bin(m, f->key, f->data, f->len);
        else
            proto_msg_set_str(m, f->key, f->data);
    }
    for (int i = 0; bad && i < self->nbad; i++) {
        const s_field_t *f = &self->bad[i];
        if (f->drop)
            proto_msg_remove(m, f->key);
        else if (f->is_file)
            proto_msg_set_bin(m, f->key, f->data, f->len);
        else
            proto_msg_set_str(m, f->key, f->data);
    }
    return m;
}

static const char *s_type_name(int t) {
    static const char *n[] = {"int", "float", "str", "bin", "tensor"};
    return t >= 0 && t < 5 ? n[t] : "?";
}

/* Checks one answer to a good sample with id `row`: 0, or -1 with the reason. */
static int s_check_answer(conform_t *self, const proto_msg_t *m, uint64_t row, char *err,
                          size_t errlen) {
    if (proto_msg_kind(m) == PROTO_REJECT) {
        const char *r = proto_msg_get_str(m, "reason");
        return util_err(err, errlen, "a good sample (seq %llu) was rejected: %s",
                        (unsigned long long)row, r ? r : "(no reason)");
    }
    if (proto_msg_kind(m) != PROTO_SAMPLE)
        return util_err(err, errlen, "answered a sample with a %s message (op '%s')",
                        proto_kind_name(proto_msg_kind(m)), proto_msg_op(m));
    if (strcmp(proto_msg_task(m), self->task) != 0)
        return util_err(err, errlen, "task '%s' came back as '%s'", self->task,
                        proto_msg_task(m));
    if (proto_msg_n_ids(m) != 1 || proto_msg_ids(m)[0] != row)
        return util_err(err, errlen, "ids not preserved: sent [%llu], got %d id(s)%s",
                        (unsigned long long)row, proto_msg_n_ids(m),
                        proto_msg_n_ids(m) ? " with another value" : "");
    if (proto_msg_get_int(m, "seq", -1) != (int64_t)row)
        return util_err(err, errlen, "seq not preserved: sent %llu, got %lld",
                        (unsigned long long)row, (long long)proto_msg_get_int(m, "seq", -1));
    if (proto_msg_get_int(m, "@hop", -1) != self->hop + 1)
        return util_err(err, errlen, "@hop must be %d (sent %d), got %lld", self->hop + 1,
                        self->hop, (long long)proto_msg_get_int(m, "@hop", -1));
    const char *route = proto_msg_get_str(m, "@route");
    if (!route || strcmp(route, self->tier) != 0)
        return util_err(err, errlen, "@route not preserved: sent '%s', got '%s'", self->tier,
                        route ? route : "(none)");
    for (int i = 0; i < self->nexpect; i++) {
        const s_expect_t *e = &self->expect[i];
        const proto_field_t *f = proto_msg_get(m, e->key);
        if (!f)
            return util_err(err, errlen, "field '%s' missing from the answer", e->key);
        if (e->type >= 0 && (int)f->type != e->type)
            return util_err(err, errlen, "field '%s' is a %s, expected a %s", e->key,
                            s_type_name(f->type), s_type_name(e->type));
        if (f->type == PV_TENSOR && e->dtype >= 0 && (int)f->dtype != e->dtype)
            return util_err(err, errlen, "field '%s' has dtype %s, expected %s", e->key,
                            proto_dtype_name(f->dtype), proto_dtype_name(e->dtype));
        if (f->type == PV_TENSOR && e->ndim >= 0 && f->ndim != e->ndim)
            return util_err(err, errlen, "field '%s' has %d dimensions, expected %d", e->key,
                            f->ndim, e->ndim);
    }
    return 0;
}

/* Sends n good samples at once (shm: bin fields in shared memory) and collects the n
 * answers. 0, or -1 with the reason. */
static int s_round(conform_t *self, int n, bool shm, char *err, size_t errlen) {
    uint64_t first = self->next_row;
    char *held = util_calloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        proto_msg_t *m = s_sample(self, false);
        for (int k = 0; shm && k < self->ngood; k++)
            if (self->good[k].is_file &&
                proto_msg_field_to_shm(m, self->good[k].key, err, errlen) != 0) {
                proto_msg_destroy(&m);
                free(held);
                return util_err(err, errlen, "cannot put field %s in shared memory",
                                self->good[k].key);
            }
        s_send(self, &m);
    }
    self->idle = false;
    int rc = 0, got = 0;
    double deadline = util_now() + self->answer_ms / 1000.0;
    while (got < n) {
        proto_msg_t *m = s_next(self, deadline);
        if (!m) {
            char ex[128];
            rc = s_reap(self)
                     ? util_err(err, errlen, "the stage %s with %d of %d answers",
                                s_exit_text(self, ex, sizeof ex), got, n)
                     : util_err(err, errlen, "%d of %d samples answered in %d ms", got, n,
                                self->answer_ms);
            break;
        }
        uint64_t id = proto_msg_n_ids(m) == 1 ? proto_msg_ids(m)[0] : UINT64_MAX;
        if (proto_msg_kind(m) == PROTO_CONTROL) {
            proto_msg_destroy(&m);
            continue;
        }
        if (id < first || id >= first + (uint64_t)n || held[id - first]) {
            rc = util_err(err, errlen, "answered a sample it does not hold (id %llu, %s): "
                          "more answers than samples granted by credit",
                          (unsigned long long)id, proto_kind_name(proto_msg_kind(m)));
            proto_msg_destroy(&m);
            break;
        }
        held[id - first] = 1;
        got++;
        rc = s_check_answer(self, m, id, err, errlen);
        proto_msg_destroy(&m);
        if (rc)
            break;
    }
    /* Anything beyond the n answers within a short while is a surplus answer. */
    if (rc == 0) {
        proto_msg_t *m = s_next(self, util_now() + 0.3);
        if (m) {
            rc = util_err(err, errlen, "a %s message after all %d answers (id %llu): more "
                          "answers than samples granted by credit",
                          proto_kind_name(proto_msg_kind(m)), n,
                          proto_msg_n_ids(m) ? (unsigned long long)proto_msg_ids(m)[0] : 0ULL);
            proto_msg_destroy(&m);
        }
    }
    self->idle = true;
    free(held);
    return rc;
}

/* ---- the checks ---- */

static bool s_handshake(conform_t *self) {
    proto_msg_t *m = s_next(self, util_now() + self->start_ms / 1000.0);
    char ex[128];
    if (!m) {
        if (s_reap(self))
            s_check(self, "handshake", false, "the stage %s before saying hello",
                    s_exit_text(self, ex, sizeof ex));
        else if (self->malformed)
            s_check(self, "handshake", false, "no decodable hello; malformed: %s",
                    self->malformed_why);
        else
            s_check(self, "handshake", false, "no hello within %d ms%s", self->start_ms,
                    self->tcp ? " (over tcp:// with CURVE: does the stage take --curve FILE "
                                "and connect as a CURVE client with its keys?)" : "");
        return false;
    }
    bool ok = false;
    const char *role = proto_msg_get_str(m, "role"), *tier = proto_msg_get_str(m, "tier");
    const char *id = proto_msg_get_str(m, "id");
    int64_t credits = proto_msg_get_int(m, "credits", -1);
    if (proto_msg_kind(m) != PROTO_CONTROL || strcmp(proto_msg_op(m), "hello") != 0)
        s_check(self, "handshake", false, "the first message is a %s (op '%s'), not hello",
                proto_kind_name(proto_msg_kind(m)), proto_msg_op(m));
    else if (!role || strcmp(role, "worker") != 0)
        s_check(self, "handshake", false, "hello role '%s', expected 'worker'",
                role ? role : "(none)");
    else if (!tier || strcmp(tier, self->tier) != 0)
        s_check(self, "handshake", false, "hello tier '%s', expected '%s' (from --tier)",
                tier ? tier : "(none)", self->tier);
    else if (!id || strcmp(id, self->id) != 0)
        s_check(self, "handshake", false, "hello id '%s', expected '%s' (from --id)",
                id ? id : "(none)", self->id);
    else if (self->foreign)
        s_check(self, "handshake", false, "routing identity is not the --id '%s' (set "
                "ZMQ_ROUTING_ID before connecting)", self->id);
    else if (credits != self->credits)
        s_check(self, "handshake", false, "hello grants %lld credits, --credits gave %d "
                "(a worker asks for exactly the work it may hold)", (long long)credits,
                self->credits);
    else {
        s_check(self, "handshake", true, "hello from %s, worker of tier %s, %d credits", id,
                tier, self->credits);
        ok = true;
    }
    proto_msg_destroy(&m);
    return ok;
}

static void s_heartbeat_idle(conform_t *self) {
    /* Nothing is sent for three intervals: the stage must fill the silence itself. */
    self->idle = true;
    self->idle_gap = 0;
    int before = self->heartbeats;
    proto_msg_t *m = s_next(self, util_now() + 3.0 * self->hb_ms / 1000.0 + 0.25);
    if (m) {
        s_check(self, "heartbeat", false, "an unasked %s message (op '%s') while idle",
                proto_kind_name(proto_msg_kind(m)), proto_msg_op(m));
        proto_msg_destroy(&m);
        return;
    }
    char ex[128];
    double limit = 2.0 * self->hb_ms;
    if (s_reap(self))
        s_check(self, "heartbeat", false, "the stage %s while idle",
                s_exit_text(self, ex, sizeof ex));
    else if (self->heartbeats == before)
        s_check(self, "heartbeat", false, "no heartbeat in %.0f ms of idleness (send CONTROL "
                "heartbeat when nothing else was sent for %d ms)", self->idle_gap * 1000,
                self->hb_ms);
    else if (self->idle_gap * 1000 > limit)
        s_check(self, "heartbeat", false, "%.0f ms without a message while idle (at most "
                "%.0f ms; heartbeat every %d ms)", self->idle_gap * 1000, limit, self->hb_ms);
    else
        s_check(self, "heartbeat", true, "%d heartbeat(s) while idle, longest silence %.0f ms",
                self->heartbeats - before, self->idle_gap * 1000);
}

static void s_reject(conform_t *self) {
    char err[1200];
    uint64_t row = self->next_row;
    proto_msg_t *m = s_sample(self, true);
    s_send(self, &m);
    self->idle = false;
    m = s_next(self, util_now() + self->answer_ms / 1000.0);
    self->idle = true;
    char ex[128];
    if (!m) {
        if (s_reap(self))
            s_check(self, "reject", false, "the stage %s on the bad sample",
                    s_exit_text(self, ex, sizeof ex));
        else
            s_check(self, "reject", false, "no answer to the bad sample within %d ms (a bad "
                    "sample must be answered by a REJECT)", self->answer_ms);
        return;
    }
    const char *reason = proto_msg_get_str(m, "reason");
    bool ok = false;
    if (proto_msg_kind(m) != PROTO_REJECT)
        s_check(self, "reject", false, "the bad sample was answered by a %s, not a REJECT",
                proto_kind_name(proto_msg_kind(m)));
    else if (proto_msg_n_ids(m) != 1 || proto_msg_ids(m)[0] != row ||
             proto_msg_get_int(m, "seq", -1) != (int64_t)row ||
             strcmp(proto_msg_task(m), self->task) != 0)
        s_check(self, "reject", false, "the REJECT does not carry the sample's task, ids "
                "and seq");
    else if (!reason || !reason[0])
        s_check(self, "reject", false, "the REJECT has no 'reason' string");
    else
        ok = true;
    char why[600];
    snprintf(why, sizeof why, "%s", reason ? reason : "");
    proto_msg_destroy(&m);
    if (!ok)
        return;
    if (s_round(self, 1, false, err, sizeof err) != 0)
        s_check(self, "reject", false, "rejected ('%s') but then: %s", why, err);
    else
        s_check(self, "reject", true, "rejected with reason '%s', then processed the next "
                "sample", why);
}

/* Sends one corpus file as a message, split into frames as tests/fuzz_proto.c does:
 * byte 0 % 4 = k extra frames, then k u16 lengths, then the envelope with the extra
 * frames cut from its end. */
static void s_send_corpus(conform_t *self, const uint8_t *data, size_t size) {
    if (size < 1)
        return;
    int k = data[0] % 4;
    size_t head = 1 + 2 * (size_t)k, end = size;
    if (size < head)
        return;
    const void *bufs[5];
    size_t lens[5];
    for (int i = k; i >= 1; i--) {
        size_t want = (size_t)data[1 + 2 * (i - 1)] | ((size_t)data[2 + 2 * (i - 1)] << 8);
        size_t n = want < end - head ? want : end - head;
        lens[i] = n;
        bufs[i] = data + end - n;
        end -= n;
    }
    bufs[0] = data + head;
    lens[0] = end - head;
    s_send_raw(self, bufs, lens, k + 1);
}

/* Every bad_* file of the corpus folder, in name order; returns how many were sent. */
static int s_send_corpus_dir(conform_t *self, char *err, size_t errlen) {
    struct dirent **names = NULL;
    int n = scandir(self->garbage_dir, &names, NULL, alphasort), sent = 0;
    if (n < 0)
        return util_err(err, errlen, "--garbage-dir %s: %s", self->garbage_dir,
                        strerror(errno));
    for (int i = 0; i < n; i++) {
        if (strncmp(names[i]->d_name, "bad_", 4) == 0) {
            char path[1400];
            size_t len = 0;
            snprintf(path, sizeof path, "%s/%s", self->garbage_dir, names[i]->d_name);
            char *data = util_read_file(path, &len, err, errlen);
            if (data) {
                s_send_corpus(self, (const uint8_t *)data, len);
                sent++;
                free(data);
            }
        }
        free(names[i]);
    }
    free(names);
    return sent;
}

static void s_garbage(conform_t *self) {
    /* Each is something a decoder must refuse with an error, never a crash. */
    static const unsigned char noise[] = {0xc1, 0xff, 0x00, 0x93, 0xde, 0xad, 0xbe, 0xef};
    const void *f1[] = {noise};
    size_t l1[] = {sizeof noise};
    s_send_raw(self, f1, l1, 1);
    /* {"magic": "XXXX", "v": 1, "kind": 1} */
    static const unsigned char badmagic[] = {0x83, 0xa5, 'm', 'a', 'g', 'i', 'c', 0xa4, 'X',
                                             'X', 'X', 'X', 0xa1, 'v', 0x01, 0xa4, 'k', 'i',
                                             'n', 'd', 0x01};
    const void *f2[] = {badmagic};
    size_t l2[] = {sizeof badmagic};
    s_send_raw(self, f2, l2, 1);
    /* {"magic": "OFAC", "v": 1, "kind": 99} */
    static const unsigned char badkind[] = {0x83, 0xa5, 'm', 'a', 'g', 'i', 'c', 0xa4, 'O',
                                            'F', 'A', 'C', 0xa1, 'v', 0x01, 0xa4, 'k', 'i',
                                            'n', 'd', 0x63};
    const void *f3[] = {badkind};
    size_t l3[] = {sizeof badkind};
    s_send_raw(self, f3, l3, 1);
    /* A well-formed CONTROL with an op nobody knows: to be ignored. */
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "conform-unknown-op");
    s_send(self, &m);
    /* And a CREDIT, which workers never receive: to be ignored too. */
    m = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(m, "n", 5);
    s_send(self, &m);
    char err[1200], what[200];
    int ncorpus = 0;
    if (self->garbage_dir[0] && (ncorpus = s_send_corpus_dir(self, err, sizeof err)) < 0) {
        s_check(self, "garbage", false, "%s", err);
        return;
    }
    snprintf(what, sizeof what, "%d malformed messages, an unknown op and a CREDIT",
             3 + ncorpus);
    if (s_round(self, 1, false, err, sizeof err) != 0)
        s_check(self, "garbage", false, "after %s: %s", what, err);
    else
        s_check(self, "garbage", true, "survived %s, then processed a sample", what);
}

static void s_stop(conform_t *self) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "stop");
    s_send(self, &m);
    double deadline = util_now() + self->stop_ms / 1000.0;
    while (!s_reap(self) && util_now() < deadline) {
        /* Messages after stop (final stats, a last heartbeat) are fine. */
        proto_msg_t *x = s_next(self, deadline);
        proto_msg_destroy(&x);
    }
    s_drain_stats(self);
    char ex[128];
    if (!self->exited) {
        kill(self->pid, SIGKILL);
        waitpid(self->pid, &self->status, 0);
        self->exited = true;
        s_check(self, "stop", false, "still running %d ms after CONTROL stop (killed)",
                self->stop_ms);
    } else if (!WIFEXITED(self->status) || WEXITSTATUS(self->status) != 0)
        s_check(self, "stop", false, "after CONTROL stop the stage %s, not 0",
                s_exit_text(self, ex, sizeof ex));
    else
        s_check(self, "stop", true, "exited 0 after CONTROL stop");
}

static void s_print_log(const conform_t *self) {
    size_t len = 0;
    char err[256];
    char *text = util_read_file(self->log, &len, err, sizeof err);
    if (!text)
        return;
    const char *start = text;
    int lines = 0;
    for (const char *p = text + len; p > text; p--)
        if (p[-1] == '\n' && p != text + len && ++lines == 15) {
            start = p;
            break;
        }
    printf("--- last lines of the stage's output (%s):\n%s%s", self->log, start,
           len && text[len - 1] != '\n' ? "\n" : "");
    free(text);
}

static void s_remove_tmp(conform_t *self) {
    char path[400];
    const char *names[] = {"stage.log", "conform.sock", "stats.sock", "curve.keys"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", self->tmp, names[i]);
        unlink(path);
    }
    rmdir(self->tmp);
}

int main(int argc, char **argv) {
    util_set_progname("ofa-conform");
    signal(SIGPIPE, SIG_IGN);
    conform_t c;
    memset(&c, 0, sizeof c);
    conform_t *self = &c;
    char err[1200];
    s_parse_args(self, argc, argv);
    const char *tmpdir = getenv("TMPDIR");
    snprintf(self->tmp, sizeof self->tmp, "%.200s/ofa-conform-XXXXXX",
             tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(self->tmp))
        util_fatal("is TMPDIR writable?", "cannot make a temporary folder: %s",
                   strerror(errno));
    if (!self->run_dir[0])
        snprintf(self->run_dir, sizeof self->run_dir, "%.250s", self->tmp);
    snprintf(self->ep, sizeof self->ep, "ipc://%.250s/conform.sock", self->tmp);
    snprintf(self->stats_ep, sizeof self->stats_ep, "ipc://%.250s/stats.sock", self->tmp);
    snprintf(self->log, sizeof self->log, "%.250s/stage.log", self->tmp);
    snprintf(self->keys, sizeof self->keys, "%.250s/curve.keys", self->tmp);

    self->zctx = zmq_ctx_new();
    self->router = zmq_socket(self->zctx, ZMQ_ROUTER);
    self->pull = zmq_socket(self->zctx, ZMQ_PULL);
    int zero = 0, one = 1;
    zmq_setsockopt(self->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(self->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(self->pull, ZMQ_LINGER, &zero, sizeof zero);
    if (self->tcp) {
        /* As launch does on tcp:// runs: both sockets are CURVE servers whose ZAP
         * handler admits only the run's client key. */
        curve_keys_t k;
        if (curve_keys_generate(self->keys, &k, err, sizeof err) != 0 ||
            !(self->zap = curve_zap_new(self->zctx, &k, err, sizeof err)) ||
            curve_server_apply(self->router, &k, err, sizeof err) != 0 ||
            curve_server_apply(self->pull, &k, err, sizeof err) != 0)
            util_fatal(NULL, "cannot set up CURVE: %s", err);
        snprintf(self->ep, sizeof self->ep, "tcp://127.0.0.1:*");
        snprintf(self->stats_ep, sizeof self->stats_ep, "tcp://127.0.0.1:*");
    }
    if (zmq_bind(self->router, self->ep) != 0 || zmq_bind(self->pull, self->stats_ep) != 0)
        util_fatal(NULL, "cannot bind %s: %s", self->ep, zmq_strerror(errno));
    /* The port the kernel chose (tcp) is what the stage must connect to. */
    size_t eplen = sizeof self->ep;
    zmq_getsockopt(self->router, ZMQ_LAST_ENDPOINT, self->ep, &eplen);
    eplen = sizeof self->stats_ep;
    zmq_getsockopt(self->pull, ZMQ_LAST_ENDPOINT, self->stats_ep, &eplen);

    printf("ofa-conform: %s as a worker of tier %s (task %s, %d credits, %s)\n",
           self->argv[0], self->tier, self->task, self->credits,
           self->tcp ? "tcp:// with CURVE" : "ipc://");
    if (s_spawn(self, err, sizeof err) != 0)
        util_fatal(NULL, "cannot start the stage: %s", err);
    self->last_msg = util_now();
    self->idle = true;

    static const char *later[] = {"heartbeat", "output", "credits", "transports", "reject",
                                  "garbage", "stats", "liveness", "decode",
                                  "stop"};
    if (!s_handshake(self)) {
        for (size_t i = 0; i < sizeof later / sizeof *later; i++)
            s_check(self, later[i], false, "not run: no handshake");
        if (!s_reap(self)) {
            kill(self->pid, SIGKILL);
            waitpid(self->pid, &self->status, 0);
        }
    } else {
        s_heartbeat_idle(self);
        self->busy_gap = 0;

        int rc = s_round(self, 1, false, err, sizeof err);
        s_check(self, "output", rc == 0, "%s", rc == 0 ? "a good sample came back with its "
                "ids, seq and route, @hop + 1 and the expected fields" : err);

        int n = self->credits < MAX_CREDITS ? self->credits : MAX_CREDITS;
        rc = s_round(self, n, false, err, sizeof err);
        if (rc == 0)
            rc = s_round(self, n, false, err, sizeof err);
        s_check(self, "credits", rc == 0, "%s", rc == 0 ? "two full windows answered exactly "
                "once each" : err);

        bool any_bin = false;
        for (int i = 0; i < self->ngood; i++)
            any_bin |= self->good[i].is_file;
        if (any_bin) {
            rc = s_round(self, 1, true, err, sizeof err);
            s_check(self, "transports", rc == 0, "%s", rc == 0 ? "a sample with its binary "
                    "fields in shared memory was processed" : err);
        } else {
            s_check(self, "transports", true, "no binary field to carry (text fields only)");
        }

        s_reject(self);
        s_garbage(self);

        /* Stats come about once a second; give a slow starter a little more time. */
        double deadline = util_now() + 1.5;
        while (!self->stats_msgs && util_now() < deadline && !s_reap(self)) {
            proto_msg_t *m = s_next(self, util_now() + 0.1);
            proto_msg_destroy(&m);
        }
        if (self->stats_msgs > 0)
            s_check(self, "stats", true, "%d STATS message(s) with proc '%s' on --stats",
                    self->stats_msgs, self->id);
        else
            s_check(self, "stats", false, "no STATS message with proc '%s' reached --stats "
                    "(push one about every second to the --stats endpoint)", self->id);
        s_check(self, "liveness", self->busy_gap * 1000 <= self->dead_ms,
                self->busy_gap * 1000 <= self->dead_ms
                ? "longest silence while holding work %.0f ms (at most %d)"
                : "silent for %.0f ms while holding work (the broker declares a worker dead "
                  "after %d ms: heartbeat while busy)", self->busy_gap * 1000, self->dead_ms);
        if (self->malformed)
            s_check(self, "decode", false, "%d message(s) from the stage did not decode: %s",
                    self->malformed, self->malformed_why);
        else
            s_check(self, "decode", true, "every message from the stage decoded");
        s_stop(self);
    }
    printf("conformance: %d passed, %d failed\n", self->npass, self->nfail);
    if (self->nfail)
        s_print_log(self);
    zmq_close(self->router);
    zmq_close(self->pull);
    curve_zap_destroy(&self->zap);
    zmq_ctx_term(self->zctx);
    if (!self->keep)
        s_remove_tmp(self);
    else
        printf("kept %s\n", self->tmp);
    for (int i = 0; i < self->ngood; i++)
        free(self->good[i].data);
    for (int i = 0; i < self->nbad; i++)
        free(self->bad[i].data);
    return self->nfail ? 1 : 0;
}
