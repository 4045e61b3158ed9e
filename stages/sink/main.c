/* ofa-sink: a batch consumer that trains nothing. It counts batches, samples and
 * tokens per task, checks that every batch is well formed (s_check: one task, shapes
 * consistent with B, lengths within the padding, image grid, refs of validation batches;
 * a malformed batch is logged with its reason and counted, never delivered), drops
 * duplicates (a sample id seen twice in one epoch and split), writes every delivered
 * sample as "task<TAB>id<TAB>epoch<TAB>split" to --out in delivery order (tests compare
 * sets of ids), optionally one digest line per batch to --digest (tests compare runs
 * with different worker counts), reports task.<T>.delivered and
 * task.<T>.duplicates_dropped, and exits 0 after the batcher's "end" (or on a signal).
 * Each batch is answered with CREDIT {n: 1, ack: step}; CONTROL "rehello" from a
 * restarted batcher is answered with the hello again.
 *
 *   ofa-sink --id sink --in ipc://RUN/batches.sock --stats ipc://RUN/stats.sock \
 *            --out RUN/delivered.tsv [--digest RUN/batches.digest] [--rank 0 --world 1] */
#include "seen.h"
#include "stage.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    char in[512];
    char out[1024];
    char digest[1024];
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
    if (strcmp(flag, "--digest") == 0) {
        snprintf(o->digest, sizeof o->digest, "%s", value);
        return 1;
    }
    if (strcmp(flag, "--rank") == 0 || strcmp(flag, "--world") == 0) {
        char *end;
        long v = strtol(value, &end, 10);
        if (*end || v < 0 || v > 4096 || (flag[2] == 'w' && v < 1)) {
            fprintf(stderr, "%s: %s: not a valid value: %s\n", util_progname(), flag, value);
            exit(2);
        }
        *(flag[2] == 'r' ? &o->rank : &o->world) = (int)v;
        return 1;
    }
    return 0;
}

/* Element i of an i32 tensor; tensors may lie at any alignment inside a received frame,
 * so they are read with memcpy. */
static int32_t s_i32(const proto_field_t *f, int64_t i) {
    int32_t v;
    memcpy(&v, (const char *)f->data + i * 4, 4);
    return v;
}

/* A 2-D tensor of the dtype with B rows, or NULL. */
static const proto_field_t *s_mat(const proto_msg_t *b, const char *key, proto_dtype_t dt,
                                  int B) {
    const proto_field_t *f = proto_msg_get_tensor(b, key, dt);
    return f && f->ndim == 2 && f->shape[0] == B ? f : NULL;
}

/* The reason a batch is malformed, or NULL. Everything the trainer relies on is checked:
 * one task (every id carries the same task index), tensors of consistent shapes, lengths
 * within the padded widths, images (B, Np, D) with a grid that divides Np, and for
 * validation batches B references. The reason is static text or fmt into buf. */
static const char *s_check(const proto_msg_t *b, char *buf, size_t buflen) {
    int B = proto_msg_n_ids(b);
    if (B <= 0)
        return "no sample ids";
    const uint64_t *ids = proto_msg_ids(b);
    for (int i = 1; i < B; i++)
        if (ids[i] >> 40 != ids[0] >> 40)
            return "ids of more than one task (a batch never mixes tasks)";
    const proto_field_t *st = s_mat(b, "src_tok", PROTO_I32, B);
    const proto_field_t *sm = s_mat(b, "src_mod", PROTO_U8, B);
    const proto_field_t *ti = s_mat(b, "tgt_in", PROTO_I32, B);
    const proto_field_t *to = s_mat(b, "tgt_out", PROTO_I32, B);
    const proto_field_t *sl = proto_msg_get_tensor(b, "src_len", PROTO_I32);
    const proto_field_t *tl = proto_msg_get_tensor(b, "tgt_len", PROTO_I32);
    if (!st || !sm || sm->shape[1] != st->shape[1])
        return "src_tok i32 / src_mod u8 missing or not (B, S)";
    if (!ti || !to || to->shape[1] != ti->shape[1])
        return "tgt_in / tgt_out i32 missing or not (B, T)";
    if (!sl || sl->ndim != 1 || sl->shape[0] != B || !tl || tl->ndim != 1 || tl->shape[0] != B)
        return "src_len / tgt_len i32 missing or not (B)";
    for (int i = 0; i < B; i++) {
        int32_t s = s_i32(sl, i), t = s_i32(tl, i);
        if (s < 0 || s > st->shape[1] || t < 0 || t > ti->shape[1]) {
            snprintf(buf, buflen, "row %d: src_len %d / tgt_len %d outside 0..%lld / 0..%lld",
                     i, s, t, (long long)st->shape[1], (long long)ti->shape[1]);
            return buf;
        }
    }
    /* Images are optional (text-only tasks have none), but when present they must
     * stack one (Np, P*P*3) patch grid per sample. */
    const proto_field_t *img = proto_msg_get(b, "img");
    if (img) {
        if (img->type != PV_TENSOR || img->dtype != PROTO_U8 || img->ndim != 3 ||
            img->shape[0] != B)
            return "img is not u8 (B, Np, P*P*3)";
        int64_t grid = proto_msg_get_int(b, "img.grid", 0);
        if (grid <= 0 || img->shape[1] % grid != 0) {
            snprintf(buf, buflen, "img.grid %lld does not divide Np %lld", (long long)grid,
                     (long long)img->shape[1]);
            return buf;
        }
    }
    /* Evaluation pairs each validation sample with its reference by position in refs,
     * so a count that differs from B would score answers against the wrong text. */
    const char *split = proto_msg_get_str(b, "split");
    if (!split || (strcmp(split, "train") != 0 && strcmp(split, "valid") != 0))
        return "split is neither \"train\" nor \"valid\"";
    if (strcmp(split, "valid") == 0) {
        const char *refs = proto_msg_get_str(b, "refs");
        if (!refs)
            return "validation batch without refs";
        int lines = 1;
        for (const char *c = refs; *c; c++)
            lines += *c == '\n';
        if (lines != B) {
            snprintf(buf, buflen, "refs holds %d references for %d samples", lines, B);
            return buf;
        }
    }
    return NULL;
}

/* FNV-1a over the bytes of a field (for the batch digests that tests compare). Not a
 * cryptographic hash: it only has to tell two runs' batches apart when they differ,
 * and it needs no library. */
static uint64_t s_fnv(uint64_t h, const void *data, size_t len) {
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* A digest of everything that makes a batch: task, ids, step, epoch, split and the
 * bytes and shapes of its tensors. Two runs with the same plan and seed must write the
 * same digests whatever their worker counts (DESIGN.md, Determinism). */
static uint64_t s_digest(const proto_msg_t *b) {
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *task = proto_msg_task(b);
    h = s_fnv(h, task, strlen(task) + 1);
    h = s_fnv(h, proto_msg_ids(b), (size_t)proto_msg_n_ids(b) * sizeof(uint64_t));
    static const char *const keys[] = {"src_tok", "src_mod", "src_len", "tgt_in",
                                       "tgt_out", "tgt_len", "img"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const proto_field_t *f = proto_msg_get(b, keys[k]);
        if (!f)
            continue;
        h = s_fnv(h, keys[k], strlen(keys[k]) + 1);
        h = s_fnv(h, f->shape, (size_t)f->ndim * sizeof f->shape[0]);
        h = s_fnv(h, f->data, f->len);
    }
    int64_t ints[3] = {proto_msg_get_int(b, "step", -1), proto_msg_get_int(b, "epoch", -1),
                       proto_msg_get_int(b, "img.grid", 0)};
    h = s_fnv(h, ints, sizeof ints);
    const char *split = proto_msg_get_str(b, "split");
    const char *refs = proto_msg_get_str(b, "refs");
    h = s_fnv(h, split ? split : "", split ? strlen(split) + 1 : 1);
    h = s_fnv(h, refs ? refs : "", refs ? strlen(refs) + 1 : 1);
    return h;
}

int main(int argc, char **argv) {
    stage_args_t a;
    s_opts_t o = {.rank = 0, .world = 1};
    stage_args_parse(&a, argc, argv,
                     "usage: ofa-sink --in BATCHER [--out FILE] [common flags]\n"
                     "  --in ENDPOINT   the batcher's consumer endpoint\n"
                     "  --out FILE      write one line per delivered sample (task id epoch split)\n"
                     "  --digest FILE   write one line per batch (step task B S T digest)\n"
                     "  --rank R --world W   this consumer's rank (0) among W (1)",
                     s_extra, &o);
    if (!o.in[0])
        util_fatal("launch passes --in", "no --in endpoint");
    FILE *out = NULL;
    if (o.out[0] && !(out = fopen(o.out, "w")))
        util_fatal(NULL, "%s: %s", o.out, strerror(errno));
    FILE *dig = NULL;
    if (o.digest[0] && !(dig = fopen(o.digest, "w")))
        util_fatal(NULL, "%s: %s", o.digest, strerror(errno));
    if (o.rank >= o.world)
        util_fatal(NULL, "--rank %d is not below --world %d", o.rank, o.world);
    stage_install_signals();
    void *zctx = zmq_ctx_new();
    stats_t *st = stats_new(zctx, a.stats, a.id, "sink");
    char err[1024];
    proto_msg_t *hello = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_int(hello, "rank", o.rank);
    proto_msg_set_int(hello, "world", o.world);
    stage_conn_t *conn = stage_conn_new(zctx, o.in, "consumer", a.id, "sink", a.credits, hello, err,
                                        sizeof err);
    if (!conn)
        util_fatal("is the batcher running?", "%s", err);
    void *sock = stage_conn_socket(conn);
    trace_open(a.id);
    /* The hello's credits are the initial window (as the trainer ranks give theirs):
     * after that, one CREDIT 1 per batch received. */
    /* Samples delivered, by (id, epoch, split): bounded (common/seen.h), so a long run's
     * sink stays flat while a copy sent again is still caught. */
    seen_t *seen = seen_new();
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
            if (proto_msg_kind(m) == PROTO_CONTROL && strcmp(proto_msg_op(m), "rehello") == 0) {
                /* A restarted batcher does not know this consumer yet. */
                stage_conn_rehello(conn);
                proto_msg_destroy(&m);
                continue;
            }
            if (proto_msg_kind(m) != PROTO_BATCH) {
                proto_msg_destroy(&m);
                continue;
            }
            /* Time between batches is the sink's wait; the time spent on one batch its
             * busy time: a sink that is mostly waiting shows the pipeline, not the
             * consumer, is the bottleneck. */
            double t0 = util_now();
            double tr0 = trace_now();
            stats_add(st, "wait_s", t0 - wait_start);
            char whybuf[256];
            const char *why = s_check(m, whybuf, sizeof whybuf);
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
                /* A batch whose every sample was delivered already is a copy sent
                 * again by a restarted batcher: counted as duplicates, not digested,
                 * so the digests compare runs with and without a batcher restart. */
                int fresh = 0;
                for (int i = 0; i < proto_msg_n_ids(m); i++)
                    fresh += !seen_has(seen, proto_msg_ids(m)[i], epoch, valid);
                if (dig && fresh)
                    fprintf(dig, "%lld\t%s\t%d\t%lld\t%lld\t%016llx\n",
                            (long long)proto_msg_get_int(m, "step", -1), task,
                            proto_msg_n_ids(m), (long long)proto_msg_get(m, "src_tok")->shape[1],
                            (long long)proto_msg_get(m, "tgt_in")->shape[1],
                            (unsigned long long)s_digest(m));
                for (int i = 0; i < proto_msg_n_ids(m); i++) {
                    uint64_t id = proto_msg_ids(m)[i];
                    if (!seen_add(seen, id, epoch, valid)) {
                        stats_task_add(st, task, "duplicates_dropped", 1);
                        continue;
                    }
                    stats_task_add(st, task, "delivered", 1);
                    samples++;
                    if (out)
                        fprintf(out, "%s\t%llu\t%lld\t%s\n", task, (unsigned long long)id,
                                (long long)epoch, valid ? "valid" : "train");
                }
                for (int i = 0; i < proto_msg_n_ids(m); i++) {
                    stats_add(st, "src_tokens", s_i32(sl, i));
                    stats_add(st, "tgt_tokens", s_i32(tl, i));
                    stats_task_add(st, task, "src_tokens", s_i32(sl, i));
                    stats_task_add(st, task, "tgt_tokens", s_i32(tl, i));
                }
                stats_task_add(st, task, "batches", 1);
                batches++;
            }
            /* Every batch, malformed or not, returns its credit: the batcher sent it
             * and must be allowed to send the next one. */
            stats_add(st, "items_in", 1);
            stats_add(st, "bytes_in", (double)proto_msg_bytes(m));
            trace_span_n("consume", tr0, task, "B", proto_msg_n_ids(m));
            int64_t step = proto_msg_get_int(m, "step", -1);
            proto_msg_destroy(&m);
            stage_conn_ack(conn, step);
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
    trace_close();
    if (out)
        fclose(out);
    if (dig)
        fclose(dig);
    fprintf(stderr, "ofa-sink: %ld batches, %ld samples, %ld malformed\n", batches, samples,
            bad);
    stage_conn_destroy(&conn);
    stats_destroy(&st);
    zmq_ctx_term(zctx);
    seen_destroy(&seen);
    return ended ? rc : (stage_stop_flag ? 0 : 1);
}
