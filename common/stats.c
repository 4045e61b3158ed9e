/* stats.c: see stats.h. The latency histogram has logarithmic buckets from 1 us to
 * about 100 s (10 per decade), so percentiles cost a fixed 80 counters per process. */
#include "stats.h"
#include "curve.h"
#include "proto.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#define S_BUCKETS 80
#define S_MAX_KEYS 256

typedef struct {
    char key[96];
    double v;
    int warned;     /* the key is too long for a message and that was said */
} s_counter_t;

struct stats {
    void *sock;
    char proc[64], tier[32];
    s_counter_t c[S_MAX_KEYS];
    int n;
    char str_key[4][32], str_val[4][128];
    int n_str;
    uint64_t hist[S_BUCKETS];
    uint64_t hist_n;
    double last_send;
};

stats_t *stats_new(void *zctx, const char *endpoint, const char *proc, const char *tier) {
    stats_t *self = util_calloc(1, sizeof *self);
    snprintf(self->proc, sizeof self->proc, "%s", proc ? proc : "");
    snprintf(self->tier, sizeof self->tier, "%s", tier ? tier : "");
    if (zctx && endpoint && *endpoint) {
        self->sock = zmq_socket(zctx, ZMQ_PUSH);
        int hwm = 16, linger = 500;
        zmq_setsockopt(self->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
        /* In a CURVE run (curve.h) launch's stats socket admits only the run's clients. */
        const curve_keys_t *keys = curve_default();
        char e[256];
        if ((keys && curve_client_apply(self->sock, keys, e, sizeof e) != 0) ||
            zmq_connect(self->sock, endpoint) != 0) {
            zmq_close(self->sock);
            self->sock = NULL;
        }
    }
    const char *node = getenv("SLURMD_NODENAME");
    if (node)
        stats_set_str(self, "node", node);
    const char *step = getenv("SLURM_STEP_ID");
    if (step)
        stats_set_str(self, "slurm_step", step);
    self->last_send = util_now();
    return self;
}

void stats_destroy(stats_t **self_p) {
    if (!self_p || !*self_p)
        return;
    stats_t *self = *self_p;
    stats_flush(self);
    if (self->sock)
        zmq_close(self->sock);
    free(self);
    *self_p = NULL;
}

static s_counter_t *s_get(stats_t *self, const char *key) {
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->c[i].key, key) == 0)
            return &self->c[i];
    if (self->n == S_MAX_KEYS)
        return NULL;   /* a fixed budget: extra keys are not recorded */
    s_counter_t *c = &self->c[self->n++];
    snprintf(c->key, sizeof c->key, "%s", key);
    c->v = 0;
    c->warned = 0;
    return c;
}

void stats_add(stats_t *self, const char *key, double v) {
    s_counter_t *c = s_get(self, key);
    if (c)
        c->v += v;
}

void stats_set(stats_t *self, const char *key, double v) {
    s_counter_t *c = s_get(self, key);
    if (c)
        c->v = v;
}

double stats_get(const stats_t *self, const char *key) {
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->c[i].key, key) == 0)
            return self->c[i].v;
    return 0;
}

void stats_task_add(stats_t *self, const char *task, const char *what, double v) {
    char key[160];
    snprintf(key, sizeof key, "task.%s.%s", task, what);
    stats_add(self, key, v);
}

void stats_set_str(stats_t *self, const char *key, const char *value) {
    for (int i = 0; i < self->n_str; i++)
        if (strcmp(self->str_key[i], key) == 0) {
            snprintf(self->str_val[i], sizeof self->str_val[i], "%s", value);
            return;
        }
    if (self->n_str == 4)
        return;
    snprintf(self->str_key[self->n_str], sizeof self->str_key[0], "%s", key);
    snprintf(self->str_val[self->n_str], sizeof self->str_val[0], "%s", value);
    self->n_str++;
}

void stats_latency(stats_t *self, double seconds) {
    /* bucket b covers [1e-6 * 10^(b/10), 1e-6 * 10^((b+1)/10)) */
    int b = seconds <= 1e-6 ? 0 : (int)floor(10.0 * log10(seconds / 1e-6));
    if (b < 0)
        b = 0;
    if (b >= S_BUCKETS)
        b = S_BUCKETS - 1;
    self->hist[b]++;
    self->hist_n++;
}

double stats_percentile(const stats_t *self, double pct) {
    if (!self->hist_n)
        return 0;
    uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)self->hist_n);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int b = 0; b < S_BUCKETS; b++) {
        seen += self->hist[b];
        if (seen >= want)   /* the bucket's geometric middle */
            return 1e-6 * pow(10.0, (b + 0.5) / 10.0);
    }
    return 1e-6 * pow(10.0, S_BUCKETS / 10.0);
}

void stats_flush(stats_t *self) {
    self->last_send = util_now();
    if (!self->sock)
        return;
    proto_msg_t *m = proto_msg_new(PROTO_STATS, NULL);
    proto_msg_set_str(m, "proc", self->proc);
    proto_msg_set_str(m, "tier", self->tier);
    proto_msg_set_int(m, "pid", (int64_t)getpid());
    proto_msg_set_float(m, "time", util_wall());
    /* The process's CPU time, every thread's (ZeroMQ's I/O threads move the bytes of a
     * socket, outside any stage's own busy_s). */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        proto_msg_set_float(m, "cpu_s", (double)ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec +
                                            (double)ru.ru_stime.tv_sec + 1e-6 * ru.ru_stime.tv_usec);
    for (int i = 0; i < self->n_str; i++)
        proto_msg_set_str(m, self->str_key[i], self->str_val[i]);
    for (int i = 0; i < self->n && i < PROTO_MAX_FIELDS - 16; i++) {
        if (strlen(self->c[i].key) < PROTO_MAX_KEY)
            proto_msg_set_float(m, self->c[i].key, self->c[i].v);
        else if (!self->c[i].warned) {
            /* A message key holds PROTO_MAX_KEY - 1 bytes: say once which counter is
             * not reported rather than losing it silently. */
            fprintf(stderr, "%s: stats counter '%s' is longer than %d bytes; not reported\n",
                    self->proc, self->c[i].key, PROTO_MAX_KEY - 1);
            self->c[i].warned = 1;
        }
    }
    proto_msg_set_float(m, "lat_p50_ms", 1e3 * stats_percentile(self, 50));
    proto_msg_set_float(m, "lat_p90_ms", 1e3 * stats_percentile(self, 90));
    proto_msg_set_float(m, "lat_p99_ms", 1e3 * stats_percentile(self, 99));
    proto_send(self->sock, NULL, 0, &m, ZMQ_DONTWAIT);
}

void stats_tick(stats_t *self) {
    if (util_now() - self->last_send >= 1.0)
        stats_flush(self);
}
