/* main.c: ofa-trainer, one trainer rank: a consumer of the batcher that trains the model
 * (trainer.h does the work; this file only wires the sockets, signals and stats).
 *
 *   ofa-trainer --id trainer.0 --in ipc://RUN/batches.sock --plan RUN/plan.resolved.conf
 *               --stats ipc://RUN/stats.sock --run-dir RUN [--resume] [--rank R --world W]
 *               [--credits N] [--bpe FILE] [--threads N]
 *
 * Protocol (the consumer side of the shared contracts): a DEALER connects to --in and
 * sends CONTROL op="hello" {role "consumer", tier "trainer", id, rank, world, credits}
 * (credits = the initial window, as ofa-batcher reads it); every BATCH received is trained (or kept for evaluation) and answered
 * with CREDIT {n: 1, ack: step}; a sample already taken in its epoch and split (a batch
 * sent again by a restarted batcher) is dropped and counted (task.<T>.duplicates_dropped);
 * CONTROL op="rehello" (from a restarted batcher) is answered with the hello again;
 * CONTROL op="end" ends the data: the trainer writes its final
 * checkpoint, evaluates the validation batches into RUN/eval.json, sends final stats and
 * exits 0. While it waits it sends CONTROL op="heartbeat" every 500 ms.
 *
 * SIGINT/SIGTERM: the current batch finishes, a checkpoint is written, final stats are
 * sent, exit 0. A malformed batch is counted and dropped (its credit is returned), never
 * fatal. Stats (common/stats.h, about once a second and at exit): items_in (batches
 * received), items_out (batches trained), bytes_in, busy_s, wait_s, queue_depth 0,
 * latency per batch, task.<T>.delivered (samples), and step, loss, skipped, bad. */
#include <errno.h>
#include <stdint.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "comm.h"
#include "curve.h"
#include "planfile.h"
#include "proto.h"
#include "seen.h"
#include "stage.h"
#include "stats.h"
#include "trace.h"
#include "trainer.h"
#include "util.h"

static volatile sig_atomic_t s_stop;

/* The handler only sets a flag: the loop finishes the batch in progress, so the
 * checkpoint written on the way out is consistent with the data cursor. */
static void s_on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

typedef struct {
    const char *id, *in, *plan, *stats, *run_dir, *bpe, *group;
    int resume, rank, world, credits, threads, rank_set;
} s_args_t;

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: ofa-trainer --id ID --in ENDPOINT --plan PLAN --stats ENDPOINT --run-dir DIR\n"
            "                   [--resume] [--rank R --world W] [--credits N] [--bpe FILE]\n"
            "                   [--threads N]\n"
            "  --id ID          process name in stats and logs (trainer.0)\n"
            "  --in ENDPOINT    the batcher's consumer socket (ipc://RUN/batches.sock)\n"
            "  --plan PLAN      the resolved plan (RUN/plan.resolved.conf)\n"
            "  --stats ENDPOINT where to push stats (launch's PULL socket)\n"
            "  --run-dir DIR    RUN: checkpoints/, metrics.jsonl, eval.json; BPE at DIR/bpe.bin\n"
            "  --resume         continue from the newest checkpoint in DIR/checkpoints\n"
            "  --rank R --world W  this rank and the number of ranks (0 and 1)\n"
            "  --credits N      batches requested ahead (default 4)\n"
            "  --bpe FILE       BPE file (default DIR/bpe.bin)\n"
            "  --threads N      CPU threads (default: the plan's trainer.threads, else 1)\n"
            "  --curve FILE     the run's CURVE key file (tcp:// runs)\n"
            "  --group KIND     trainer group: auto (mpi when started by mpirun or srun\n"
            "                   --mpi=pmix, nccl for the cuda backend; else single), single,\n"
            "                   mpi, nccl. Under MPI, rank and world come from MPI and an --id\n"
            "                   without a rank suffix gets '.RANK' appended\n");
}

static void s_parse(int argc, char **argv, s_args_t *a) {
    memset(a, 0, sizeof *a);
    a->world = 1;
    a->credits = 4;
    static const struct option lo[] = {
        {"id", required_argument, 0, 'i'},      {"in", required_argument, 0, 'n'},
        {"plan", required_argument, 0, 'p'},    {"stats", required_argument, 0, 's'},
        {"run-dir", required_argument, 0, 'r'}, {"resume", no_argument, 0, 'R'},
        {"rank", required_argument, 0, 'k'},    {"world", required_argument, 0, 'w'},
        {"credits", required_argument, 0, 'c'}, {"bpe", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {"ctl", required_argument, 0, 'x'},     {"group", required_argument, 0, 'g'},
        {"curve", required_argument, 0, 'C'},
        {0, 0, 0, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'i': a->id = optarg; break;
        case 'n': a->in = optarg; break;
        case 'p': a->plan = optarg; break;
        case 's': a->stats = optarg; break;
        case 'r': a->run_dir = optarg; break;
        case 'R': a->resume = 1; break;
        case 'b': a->bpe = optarg; break;
        case 'x': break;   /* accepted for uniformity with stage programs; unused */
        case 'g': a->group = optarg; break;
        case 'C': {
            /* tcp:// runs: the batcher admits only the run's CURVE clients (curve.h). */
            curve_keys_t k;
            char e[1400];
            if (curve_keys_load(optarg, &k, e, sizeof e) != 0)
                util_fatal("launch writes RUN/curve.keys for tcp:// runs", "%s", e);
            curve_set_default(&k);
            break;
        }
        case 'k': case 'w': case 'c': case 't': {
            long v = strtol(optarg, &end, 10);
            if (*end || v < (c == 'k' ? 0 : 1) || v > 1000000)
                util_fatal(NULL, "--%s %s: not a valid number",
                           c == 'k' ? "rank" : c == 'w' ? "world" : c == 'c' ? "credits" : "threads",
                           optarg);
            if (c == 'k') a->rank = (int)v, a->rank_set = 1;
            else if (c == 'w') a->world = (int)v;
            else if (c == 'c') a->credits = (int)v;
            else a->threads = (int)v;
            break;
        }
        case 'h': s_usage(stdout); exit(0);
        default: s_usage(stderr); exit(2);
        }
    }
    if (optind < argc)
        util_fatal("see --help", "unexpected argument '%s'", argv[optind]);
    if (!a->in || !a->plan || !a->run_dir)
        util_fatal("see --help", "--in, --plan and --run-dir are required");
    if (a->rank >= a->world)
        util_fatal(NULL, "--rank %d is not below --world %d", a->rank, a->world);
    if (!a->id)
        a->id = "trainer";
}

/* A field as a tensor of dtype and rank ndim, or NULL (and the reason in err). */
static const proto_field_t *s_tensor(const proto_msg_t *m, const char *key, proto_dtype_t dt,
                                     int ndim, int required, char *err, size_t errlen) {
    const proto_field_t *f = proto_msg_get_tensor(m, key, dt);
    if (!f) {
        if (required || proto_msg_get(m, key))
            util_err(err, errlen, "field %s: missing or not a %s tensor", key, proto_dtype_name(dt));
        return NULL;
    }
    if (f->ndim != ndim) {
        util_err(err, errlen, "field %s: %d dimensions, want %d", key, f->ndim, ndim);
        return NULL;
    }
    return f;
}

/* Aligned copies of tensors that arrived at odd offsets (an inline msgpack bin can
 * start anywhere in its frame; int32 loads need 4-byte alignment). */
typedef struct {
    void *copies[16];
    int n;
} s_align_t;

static const void *s_aligned(s_align_t *al, const proto_field_t *f) {
    if (!f || ((uintptr_t)f->data % 8) == 0)
        return f ? f->data : NULL;
    OFA_ASSERT(al->n < 16);
    void *c = util_malloc(f->len ? f->len : 1);
    memcpy(c, f->data, f->len);
    al->copies[al->n++] = c;
    return c;
}

static void s_align_free(s_align_t *al) {
    for (int i = 0; i < al->n; i++)
        free(al->copies[i]);
    al->n = 0;
}

/* BATCH message -> trainer_batch_t (arrays borrowed from the message or from al). */
static int s_batch(const proto_msg_t *m, s_align_t *al, trainer_batch_t *b, char *err,
                   size_t errlen) {
    memset(b, 0, sizeof *b);
    err[0] = 0;
    const proto_field_t *st = s_tensor(m, "src_tok", PROTO_I32, 2, 1, err, errlen);
    const proto_field_t *sm = s_tensor(m, "src_mod", PROTO_U8, 2, 1, err, errlen);
    const proto_field_t *sl = s_tensor(m, "src_len", PROTO_I32, 1, 1, err, errlen);
    const proto_field_t *ti = s_tensor(m, "tgt_in", PROTO_I32, 2, 1, err, errlen);
    const proto_field_t *to = s_tensor(m, "tgt_out", PROTO_I32, 2, 1, err, errlen);
    const proto_field_t *tl = s_tensor(m, "tgt_len", PROTO_I32, 1, 0, err, errlen);
    const proto_field_t *im = s_tensor(m, "img", PROTO_U8, 3, 0, err, errlen);
    const proto_field_t *au = s_tensor(m, "aud", PROTO_F32, 3, 0, err, errlen);
    const proto_field_t *vi = s_tensor(m, "vid", PROTO_U8, 4, 0, err, errlen);
    const proto_field_t *mo = s_tensor(m, "mot", PROTO_F32, 3, 0, err, errlen);
    if (err[0])
        return -1;
    int B = (int)st->shape[0], S = (int)st->shape[1], T = (int)ti->shape[1];
    if (sm->shape[0] != B || sm->shape[1] != S || sl->shape[0] != B || ti->shape[0] != B ||
        to->shape[0] != B || to->shape[1] != T || (tl && tl->shape[0] != B) ||
        (im && im->shape[0] != B) || (au && au->shape[0] != B) || (vi && vi->shape[0] != B) ||
        (mo && mo->shape[0] != B))
        return util_err(err, errlen, "tensor shapes disagree (src_tok (%d, %d), tgt_in (%d, %d))",
                        B, S, (int)ti->shape[0], T);
    if (proto_msg_n_ids(m) != B)
        return util_err(err, errlen, "%d ids for %d rows", proto_msg_n_ids(m), B);
    b->task = proto_msg_task(m);
    b->step = proto_msg_get_int(m, "step", -1);
    if (b->step < 0)
        return util_err(err, errlen, "field step: missing or negative");
    b->epoch = (int)proto_msg_get_int(m, "epoch", 0);
    const char *split = proto_msg_get_str(m, "split");
    b->valid = split && !strcmp(split, "valid");
    b->B = B, b->S = S, b->T = T;
    b->ids = proto_msg_ids(m);
    b->src_tok = s_aligned(al, st), b->src_mod = sm->data, b->src_len = s_aligned(al, sl);
    b->tgt_in = s_aligned(al, ti), b->tgt_out = s_aligned(al, to), b->tgt_len = s_aligned(al, tl);
    if (im) {
        b->img = im->data;
        b->Np = (int)im->shape[1];
        b->patch_dim = (int)im->shape[2];
        b->grid = (int)proto_msg_get_int(m, "img.grid", 0);
    }
    /* audio, video, motion (docs/modalities.md); the model checks them against its
     * adapters and the positions */
    if (au) {
        b->aud = s_aligned(al, au);
        b->Fa = (int)au->shape[1], b->aud_dim = (int)au->shape[2];
    }
    if (vi) {
        b->vid = vi->data;
        b->Nf = (int)vi->shape[1], b->Npv = (int)vi->shape[2], b->vid_dim = (int)vi->shape[3];
        b->vid_grid = (int)proto_msg_get_int(m, "vid.grid", 0);
    }
    if (mo) {
        b->mot = s_aligned(al, mo);
        b->Fm = (int)mo->shape[1], b->mot_dim = (int)mo->shape[2];
    }
    b->refs = proto_msg_get_str(m, "refs");
    return 0;
}

/* Keep only the rows r of b with keep[r] set, in copies owned by al (ids into the
 * caller's array of b->B). A batch sent again by a restarted batcher is cut the same
 * way as the first time, so it is either all new or all old; this handles the mixed
 * case anyway, so that no sample is ever trained twice. */
static void s_keep_rows(trainer_batch_t *b, const uint8_t *keep, s_align_t *al,
                        uint64_t *ids) {
    int B = 0;
    size_t S = (size_t)b->S, T = (size_t)b->T, P = (size_t)b->Np * b->patch_dim;
    int32_t *st = util_malloc(4 * (size_t)b->B * S + 4), *sl = util_malloc(4 * (size_t)b->B + 4);
    uint8_t *sm = util_malloc((size_t)b->B * S + 1);
    int32_t *ti = util_malloc(4 * (size_t)b->B * T + 4), *to = util_malloc(4 * (size_t)b->B * T + 4);
    int32_t *tl = b->tgt_len ? util_malloc(4 * (size_t)b->B + 4) : NULL;
    uint8_t *im = b->img ? util_malloc((size_t)b->B * P + 1) : NULL;
    char *refs = b->refs ? util_malloc(strlen(b->refs) + 1) : NULL;
    size_t ro = 0;
    const char *line = b->refs;
    for (int r = 0; r < b->B; r++) {
        const char *end = line ? strchr(line, '\n') : NULL;
        size_t ll = line ? (end ? (size_t)(end - line) : strlen(line)) : 0;
        if (keep[r]) {
            memcpy(st + B * S, b->src_tok + r * S, 4 * S);
            memcpy(sm + B * S, b->src_mod + r * S, S);
            memcpy(ti + B * T, b->tgt_in + r * T, 4 * T);
            memcpy(to + B * T, b->tgt_out + r * T, 4 * T);
            sl[B] = b->src_len[r];
            if (tl)
                tl[B] = b->tgt_len[r];
            if (im)
                memcpy(im + B * P, b->img + r * P, P);
            if (refs) {
                if (ro)
                    refs[ro++] = '\n';
                memcpy(refs + ro, line, ll);
                ro += ll;
            }
            ids[B++] = b->ids[r];
        }
        line = end ? end + 1 : NULL;
    }
    if (refs)
        refs[ro] = 0;
    void *bufs[] = {st, sl, sm, ti, to, tl, im, refs};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) {
            OFA_ASSERT(al->n < 16);
            al->copies[al->n++] = bufs[i];
        }
    b->B = B, b->ids = ids, b->src_tok = st, b->src_mod = sm, b->src_len = sl;
    b->tgt_in = ti, b->tgt_out = to, b->tgt_len = tl, b->img = im, b->refs = refs;
}

typedef struct {
    stage_conn_t *conn;
    stats_t *stats;
    trainer_t *tr;
    seen_t *seen;     /* samples taken: a batch sent again is not trained twice */
} s_self_t;

/* Cumulative counters into the stats reporter (sent about once a second). */
static void s_stats(s_self_t *self) {
    int64_t batches, samples, skipped, bad;
    double busy;
    trainer_counters(self->tr, &batches, &samples, &skipped, &bad, &busy);
    stats_set(self->stats, "items_out", (double)batches);
    stats_set(self->stats, "busy_s", busy);
    stats_set(self->stats, "queue_depth", 0);
    stats_set(self->stats, "samples", (double)samples);
    stats_set(self->stats, "step", (double)trainer_step(self->tr));
    stats_set(self->stats, "loss", trainer_last_loss(self->tr));
    stats_set(self->stats, "skipped", (double)skipped);
    stats_set(self->stats, "bad", (double)bad);
    stats_tick(self->stats);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    s_args_t a;
    s_parse(argc, argv, &a);
    char err[8192];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "%s", err);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The trainer group: MPI (CPU ranks) or NCCL (GPU ranks) when mpirun/srun started
     * this process as one of several ranks; then MPI says which rank this is. */
    const char *gk = a.group ? a.group : "auto";
    if (!strcmp(gk, "auto") && comm_launched_by_mpi())
        gk = plan->trainer.backend && !strcmp(plan->trainer.backend, "cuda") ? "nccl" : "mpi";
    comm_t *group = comm_new(gk, -1, err, sizeof err);
    if (!group)
        util_fatal("start CPU ranks with mpirun -np W (or srun --mpi=pmix); see docs/ranks.md",
                   "%s", err);
    char idbuf[128];
    if (comm_world(group) > 1) {
        if (a.world > 1 && a.world != comm_world(group))
            util_fatal(NULL, "--world %d but MPI started %d ranks", a.world, comm_world(group));
        if (a.rank_set && a.rank != comm_rank(group))
            util_fatal(NULL, "--rank %d but MPI says rank %d", a.rank, comm_rank(group));
        a.rank = comm_rank(group);
        a.world = comm_world(group);
        const char *dot = strrchr(a.id, '.');
        if (!dot || !dot[1] || strspn(dot + 1, "0123456789") != strlen(dot + 1)) {
            snprintf(idbuf, sizeof idbuf, "%s.%d", a.id, a.rank);
            a.id = idbuf;
        }
    }
    trainer_opts_t to = {.run_dir = a.run_dir, .bpe_path = a.bpe, .resume = a.resume,
                         .rank = a.rank, .world = a.world, .tty = -1, .threads = a.threads,
                         .comm = group};
    trainer_t *tr = trainer_new(plan, &to, err, sizeof err);
    if (!tr)
        util_fatal("the BPE file is written by launch before the trainer starts (RUN/bpe.bin)",
                   "%s", err);

    void *zctx = zmq_ctx_new();
    s_self_t self = {.tr = tr, .seen = seen_new()};
    self.stats = stats_new(zctx, a.stats, a.id, "trainer");
    /* hello carries rank, world and the credit window (the batcher's initial credit);
     * every batch is then answered by CREDIT 1, so at most `credits` batches wait here. */
    proto_msg_t *hello = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_int(hello, "rank", a.rank);
    proto_msg_set_int(hello, "world", a.world);
    self.conn = stage_conn_new(zctx, a.in, "consumer", a.id, "trainer", a.credits, hello, err,
                               sizeof err);
    if (!self.conn)
        util_fatal("check --in (the batcher's consumer endpoint)", "%s", err);
    void *sock = stage_conn_socket(self.conn);
    trace_open(a.id);

    int rc = 0, ended = 0;
    double wait_from = util_now();
    int stopping = 0;
    while (!ended && !(stopping = s_stop || trainer_stopping(tr))) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, 200);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "%s: poll: %s\n", util_progname(), zmq_strerror(errno));
            rc = 1;
            break;
        }
        stage_conn_heartbeat(self.conn);
        s_stats(&self);
        if (n <= 0 || !(it.revents & ZMQ_POLLIN))
            continue;
        double tr0 = trace_now();
        proto_msg_t *m = proto_recv(sock, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err);
        if (!m) {
            if (err[0])
                fprintf(stderr, "%s: dropped a malformed message: %s\n", util_progname(), err);
            continue;
        }
        if (proto_msg_kind(m) == PROTO_BATCH)
            trace_span("recv", tr0, proto_msg_task(m));
        proto_kind_t kind = proto_msg_kind(m);
        if (kind == PROTO_BATCH) {
            double wait = util_now() - wait_from;
            stats_add(self.stats, "wait_s", wait);
            stats_add(self.stats, "items_in", 1);
            stats_add(self.stats, "bytes_in", (double)proto_msg_bytes(m));
            double t0 = util_now();
            trainer_batch_t b;
            s_align_t al = {0};
            uint64_t *kept_ids = NULL;
            int ok = s_batch(m, &al, &b, err, sizeof err) == 0, dups = 0, all = 0;
            if (ok) {
                /* Samples taken already (a batch sent again after a batcher restart)
                 * are dropped and counted: each sample is trained once per epoch. */
                uint8_t *keep = util_malloc((size_t)b.B + 1);
                for (int r = 0; r < b.B; r++) {
                    keep[r] = (uint8_t)seen_add(self.seen, b.ids[r], b.epoch, b.valid);
                    dups += !keep[r];
                }
                all = dups == b.B;
                if (dups) {
                    stats_task_add(self.stats, b.task, "duplicates_dropped", dups);
                    if (!all) {
                        kept_ids = util_malloc(sizeof *kept_ids * (size_t)b.B);
                        s_keep_rows(&b, keep, &al, kept_ids);
                    }
                }
                free(keep);
            }
            if (ok && all) {
                fprintf(stderr, "%s: batch %lld (%s) delivered again; its %d samples are "
                        "dropped as duplicates\n", util_progname(), (long long)b.step, b.task,
                        b.B);
            } else if (!ok || trainer_feed(tr, &b, wait, err, sizeof err) != 0) {
                fprintf(stderr, "%s: batch %lld (%s) dropped: %s\n", util_progname(),
                        (long long)proto_msg_get_int(m, "step", -1), proto_msg_task(m), err);
            } else {
                stats_task_add(self.stats, b.task, "delivered", b.B);
                stats_latency(self.stats, util_now() - t0);
                trace_span_n("step", t0, b.task, "step", (long long)b.step);
            }
            free(kept_ids);
            s_align_free(&al);
            int64_t step = proto_msg_get_int(m, "step", -1);
            proto_msg_destroy(&m);
            /* The credit names the batch: the batcher's confirmation (the ack contract). */
            stage_conn_ack(self.conn, step);
            wait_from = util_now();
        } else if (kind == PROTO_CONTROL && !strcmp(proto_msg_op(m), "rehello")) {
            /* A restarted batcher does not know this rank yet. */
            stage_conn_rehello(self.conn);
            proto_msg_destroy(&m);
        } else if (kind == PROTO_CONTROL && !strcmp(proto_msg_op(m), "end")) {
            /* The batcher sends end after the last batch of this rank: no batch can
             * follow, so evaluation starts now. */
            ended = 1;
            proto_msg_destroy(&m);
        } else {
            proto_msg_destroy(&m);
        }
    }
    if (ended) {
        double tf = trace_now();
        if (trainer_finish(tr, err, sizeof err) != 0) {
            fprintf(stderr, "%s: end of training: %s\n", util_progname(), err);
            rc = 1;
        }
        trace_span("finish", tf, NULL);
    } else if (stopping) {
        /* In a group, a rank the signal did not reach stops with the others, and a rank
         * it reached may still take part in the step the others are in. */
        const char *why = s_stop ? "signal" : "a rank of the group was stopped";
        if (trainer_stop(tr, err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s: checkpoint failed: %s\n", util_progname(), why, err);
            rc = 1;
        } else {
            fprintf(stderr, "%s: %s: stopped with a checkpoint at step %lld\n",
                    util_progname(), why, (long long)trainer_step(tr));
        }
    }
    trace_close();
    s_stats(&self);
    stage_conn_destroy(&self.conn);
    stats_destroy(&self.stats);   /* sends the final snapshot */
    zmq_ctx_term(zctx);
    trainer_destroy(&tr);
    seen_destroy(&self.seen);
    comm_destroy(&group);
    plan_destroy(&plan);
    return rc;
}
