/* ofa-sink: a batch consumer that trains nothing. It counts batches, samples and
 * tokens per task, checks that every batch is well formed (shapes consistent with B),
 * drops duplicates (a sample id seen twice in one epoch and split), writes every
 * delivered sample as "task<TAB>id<TAB>epoch<TAB>split" to --out (so tests compare sets
 * of ids), reports task.<T>.delivered, and exits 0 after the batcher's "end". */
#include "stage.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    char in[512];
    char out[1024];
    int rank, world;
} s_opts_t;

static int s_extra(void *ctx, const char *flag, const char *value) {
    s_opts_t *o = ctx;
    if (!value)
        return 0;
    if (strcmp(flag, "--in") == 0) {
        snprintf(o->in, sizeof o->in, "%s", value);
        return 1;
    }
    if (strcmp(flag, "--out") == 0) {
        snprintf(o->out, sizeof o->out, "%s", value);
        return 1;
    }
    if (strcmp(flag, "--rank") == 0 || strcmp(flag, "--world") == 0) {
        *(flag[2] == 'r' ? &o->rank : &o->world) = atoi(value);
        return 1;
    }
    return 0;
}

/* A set of (id, epoch, split) keys: open addressing over 64-bit hashes. */
typedef struct {
    uint64_t *v;
    size_t n, cap;
} s_set_t;

static int s_set_add(s_set_t *s, uint64_t key) {
    if (key == 0)
        key = 1;
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *v = util_calloc(cap, sizeof *v);
        for (size_t i = 0; i < s->cap; i++)
            if (s->v[i])
                for (size_t j = s->v[i] % cap;; j = (j + 1) % cap)
                    if (!v[j]) {
                        v[j] = s->v[i];
                        break;
                    }
        free(s->v);
        s->v = v;
        s->cap = cap;
    }
    for (size_t j = key % s->cap;; j = (j + 1) % s->cap) {
        if (s->v[j] == key)
            return 0;
        if (!s->v[j]) {
            s->v[j] = key;
            s->n++;
            return 1;
        }
    }
}

/* The reason a batch is malformed, or NULL. */
static const char *s_check(const proto_msg_t *b) {
    int B = proto_msg_n_ids(b);
    const proto_field_t *st = proto_msg_get_tensor(b, "src_tok", PROTO_I32);
    const proto_field_t *sm = proto_msg_get_tensor(b, "src_mod", PROTO_U8);
    const proto_field_t *ti = proto_msg_get_tensor(b, "tgt_in", PROTO_I32);
    const proto_field_t *to = proto_msg_get_tensor(b, "tgt_out", PROTO_I32);
    const proto_field_t *sl = proto_msg_get_tensor(b, "src_len", PROTO_I32);
    if (B <= 0)
        return "no sample ids";
    if (!st || !sm || !ti || !to || !sl)
        return "src_tok, src_mod, src_len, tgt_in or tgt_out missing or of the wrong dtype";
    if (st->ndim != 2 || st->shape[0] != B || sm->ndim != 2 || sm->shape[0] != B ||
        sm->shape[1] != st->shape[1])
        return "source tensors are not (B, S)";
    if (ti->ndim != 2 || ti->shape[0] != B || to->ndim != 2 || to->shape[0] != B ||
        to->shape[1] != ti->shape[1])
        return "target tensors are not (B, T)";
    if (sl->ndim != 1 || sl->shape[0] != B)
        return "src_len is not (B)";
    const int32_t *len = sl->data;
    for (int i = 0; i < B; i++)
        if (len[i] < 0 || len[i] > st->shape[1])
            return "src_len out of range";
    const proto_field_t *img = proto_msg_get(b, "img");
    if (img && (img->type != PV_TENSOR || img->ndim != 3 || img->shape[0] != B))
        return "img is not (B, Np, P*P*3)";
    return NULL;
}

int main(int argc, char **argv) {
    stage_args_t a;
    s_opts_t o = {.rank = 0, .world = 1};
    stage_args_parse(&a, argc, argv,
                     "usage: ofa-sink --in BATCHER [--out FILE] [common flags]\n"
                     "  --in ENDPOINT   the batcher's consumer endpoint\n"
                     "  --out FILE      write one line per delivered sample (task id epoch split)",
                     s_extra, &o);
    if (!o.in[0])
        util_fatal("launch passes --in", "no --in endpoint");
    FILE *out = NULL;
    if (o.out[0] && !(out = fopen(o.out, "w")))
        util_fatal(NULL, "%s: %s", o.out, strerror(errno));
    stage_install_signals();
    void *zctx = zmq_ctx_new();
    stats_t *st = stats_new(zctx, a.stats, a.id, "sink");
    char err[1024];
    proto_msg_t *hello = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_int(hello, "rank", o.rank);
    proto_msg_set_int(hello, "world", o.world);
    stage_conn_t *conn = stage_conn_new(zctx, o.in, "consumer", a.id, "sink", 16, hello, err,
                                        sizeof err);
    if (!conn)
        util_fatal("is the batcher running?", "%s", err);
    void *sock = stage_conn_socket(conn);
    s_set_t seen = {0};
    long batches = 0, samples = 0, bad = 0;
    int rc = 0, ended = 0;
    double wait_start = util_now();
    while (!stage_stop_flag && !ended) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) < 0 && errno != EINTR)
            break;
        for (;;) {
            proto_msg_t *m = proto_recv(sock, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err);
            if (!m) {
                if (!err[0])
                    break;
                fprintf(stderr, "ofa-sink: dropped a malformed message: %s\n", err);
                bad++;
                continue;
            }
            if (proto_msg_kind(m) == PROTO_CONTROL && strcmp(proto_msg_op(m), "end") == 0) {
                ended = 1;
                proto_msg_destroy(&m);
                break;
            }
            if (proto_msg_kind(m) != PROTO_BATCH) {
                proto_msg_destroy(&m);
                continue;
            }
            double t0 = util_now();
            stats_add(st, "wait_s", t0 - wait_start);
            const char *why = s_check(m);
            const char *task = proto_msg_task(m);
            if (why) {
                fprintf(stderr, "ofa-sink: malformed batch of task %s: %s\n", task, why);
                bad++;
                stats_add(st, "malformed", 1);
            } else {
                const char *split = proto_msg_get_str(m, "split");
                int64_t epoch = proto_msg_get_int(m, "epoch", 0);
                int valid = split && strcmp(split, "valid") == 0;
                const proto_field_t *sl = proto_msg_get(m, "src_len");
                const proto_field_t *tl = proto_msg_get(m, "tgt_len");
                for (int i = 0; i < proto_msg_n_ids(m); i++) {
                    uint64_t id = proto_msg_ids(m)[i];
                    uint64_t key = (id * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)epoch << 1) ^
                                   (uint64_t)valid ^ (id >> 17);
                    if (!s_set_add(&seen, key)) {
                        stats_task_add(st, task, "duplicates_dropped", 1);
                        continue;
                    }
                    stats_task_add(st, task, "delivered", 1);
                    samples++;
                    if (out)
                        fprintf(out, "%s\t%llu\t%lld\t%s\n", task, (unsigned long long)id,
                                (long long)epoch, valid ? "valid" : "train");
                }
                const int32_t *sv = sl->data;
                const int32_t *tv = tl ? tl->data : NULL;
                for (int i = 0; i < proto_msg_n_ids(m); i++) {
                    stats_add(st, "src_tokens", sv[i]);
                    if (tv)
                        stats_add(st, "tgt_tokens", tv[i]);
                }
                batches++;
            }
            stats_add(st, "items_in", 1);
            stats_add(st, "bytes_in", (double)proto_msg_bytes(m));
            proto_msg_destroy(&m);
            stage_conn_credit(conn, 1);
            double t1 = util_now();
            stats_add(st, "busy_s", t1 - t0);
            stats_latency(st, t1 - t0);
            wait_start = t1;
        }
        stats_set(st, "batches", (double)batches);
        stats_set(st, "samples", (double)samples);
        stage_conn_heartbeat(conn);
        stats_tick(st);
    }
    if (out)
        fclose(out);
    fprintf(stderr, "ofa-sink: %ld batches, %ld samples, %ld malformed\n", batches, samples,
            bad);
    stage_conn_destroy(&conn);
    stats_destroy(&st);
    zmq_ctx_term(zctx);
    free(seen.v);
    return ended ? rc : (stage_stop_flag ? 0 : 1);
}
