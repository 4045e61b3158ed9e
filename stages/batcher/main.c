/* ofa-batcher: pulls finished samples from the broker (role "batcher", by credit),
 * cuts batches in the source's order (batcher.h) and hands batch k of the run to
 * consumer rank k % world, each consumer by its own credit. After the end of data it
 * answers every consumer with CONTROL "end".
 *
 * Memory: the batcher asks the broker for at most WINDOW samples beyond what it has
 * turned into batches, and stops asking while the consumers are behind. Every credit
 * names the seq the walk waits for ("want_seq"); the broker sends that one even when
 * the window is full, so a re-dispatched sample can never be stuck behind later ones.
 *
 * Surviving a restart: the batcher keeps every batch it cut until its consumer confirms
 * it (CREDIT {n, ack: step}; a credit without "ack" confirms the rank's oldest batch
 * sent), and tells the broker CONTROL "ack" {seq, batch}: everything below seq is inside
 * confirmed batches, batch is the index of the first unconfirmed one. The broker keeps
 * what it sent until then; a batcher restarted by launch is told CONTROL "start" {seq,
 * batch}, gets everything after seq again and cuts the same batches with the same
 * indices (batch k to rank k % world). Consumers it does not know (they said hello to
 * the old process) are asked with CONTROL "rehello" to say hello again. */
#include "batcher.h"
#include "curve.h"
#include "planfile.h"
#include "stage.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

/* WINDOW: samples asked of the broker beyond those already cut into batches; it bounds
 * the reorder buffer (plus whatever the walk waits for). READY_PER_RANK: batches kept
 * ready per consumer before the batcher stops pulling: enough that a rank never waits
 * on the next batch, few enough that a slow trainer holds the whole pipeline back by
 * credit instead of filling memory. */
enum { WINDOW = 512, READY_PER_RANK = 4, MAX_RANKS = 64, MAX_STRANGERS = 16 };

typedef struct {
    char out[512];
    int world;                /* --world: consumers; 0 = from the plan */
} s_opts_t;

/* One consumer rank: its ZeroMQ identity (learnt from its hello), the batches it may
 * still receive (credits) and its queue. Batch k of the run always goes to rank
 * k % world, whatever the ranks' speeds: each rank's sequence of batches is then
 * fixed by the plan, which is what makes a multi-rank run reproducible. */
typedef struct {
    char ident[256];
    size_t identlen;
    int known;
    long credits;
    proto_msg_t **q;          /* batches for this rank, FIFO */
    int nq, capq;
    int ended;
} s_rank_t;

/* A batch cut and not yet confirmed by its consumer: queued or sent. With --arena its
 * large tensors lie in slots of the batcher's arena (the consumer reads them there), which
 * are released once the consumer confirmed the batch it was sent. */
enum { MAX_BATCH_SLOTS = 8 };
typedef struct {
    int64_t step, seq0, k;
    int rank;
    int sent, confirmed;
    shmarena_desc_t slots[MAX_BATCH_SLOTS];
    int nslots;
} s_pending_t;

/* Release the slots a batch's tensors lie in. */
static void s_release(s_pending_t *p) {
    for (int i = 0; i < p->nslots; i++) {
        char err[256];
        if (shmarena_reader_release(proto_arena_reader(), &p->slots[i], err, sizeof err) != 0)
            fprintf(stderr, "ofa-batcher: batch %lld: slot not released: %s\n",
                    (long long)p->step, err);
    }
    p->nslots = 0;
}

typedef struct {
    s_pending_t *v;
    int n, cap;
} s_pendq_t;

static void s_pend_add(s_pendq_t *q, s_pending_t p) {
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 64;
        q->v = util_realloc(q->v, (size_t)q->cap * sizeof *q->v);
    }
    q->v[q->n++] = p;
}

/* The consumer of rank confirmed the batch of this step (step < 0: its oldest batch
 * sent). Batches at the head that are confirmed and sent are forgotten (one confirmed
 * before it was sent, by a consumer that got the old batcher's copy, stays until sent,
 * so that s_pend_sent keeps marking the right entries). */
static void s_pend_confirm(s_pendq_t *q, int rank, int64_t step) {
    for (int i = 0; i < q->n; i++) {
        s_pending_t *p = &q->v[i];
        if (step == INT64_MIN)
            break;   /* only the head pruning below */
        if (p->rank == rank && !p->confirmed && (step < 0 ? p->sent : p->step == step)) {
            p->confirmed = 1;
            /* Confirmed before it was sent (the consumer had the old batcher's copy): its
             * slots go when it is sent, as bytes (s_send_batch). */
            if (p->sent)
                s_release(p);
            break;
        }
    }
    int h = 0;
    while (h < q->n && q->v[h].confirmed && q->v[h].sent)
        h++;
    if (h) {
        memmove(q->v, q->v + h, (size_t)(q->n - h) * sizeof *q->v);
        q->n -= h;
    }
}

/* The oldest unsent batch of rank (the one at the head of its queue), or NULL. */
static s_pending_t *s_pend_unsent(s_pendq_t *q, int rank) {
    for (int i = 0; i < q->n; i++)
        if (q->v[i].rank == rank && !q->v[i].sent)
            return &q->v[i];
    return NULL;
}

/* Mark the oldest unsent batch of rank as sent. */
static void s_pend_sent(s_pendq_t *q, int rank) {
    s_pending_t *p = s_pend_unsent(q, rank);
    if (p)
        p->sent = 1;
    s_pend_confirm(q, rank, INT64_MIN);   /* drops a head now confirmed and sent */
}

/* A consumer that says hello again is a new process: the batches the old one was sent
 * and never confirmed are not read by anyone any more; their slots are released. */
static void s_pend_consumer_gone(s_pendq_t *q, int rank) {
    for (int i = 0; i < q->n; i++)
        if (q->v[i].rank == rank && q->v[i].sent && !q->v[i].confirmed)
            s_release(&q->v[i]);
}

/* --arena, once the arena exists: the batch's large tensors not built in it already
 * (audio and motion features) are moved there; the slots are recorded with the batch. */
static void s_batch_slots(proto_msg_t *b, stage_arena_t *sa, const stage_args_t *a,
                          s_pending_t *p) {
    if (sa->arena)
        stage_msg_to_arena(sa, a, b, BATCHER_ARENA_MIN, NULL);
    for (int i = 0; i < proto_msg_n_fields(b); i++) {
        if (p->nslots < MAX_BATCH_SLOTS && proto_msg_field_arena_at(b, i, &p->slots[p->nslots]))
            p->nslots++;
        else if (proto_msg_field_arena_at(b, i, NULL))
            proto_msg_field_unarena_at(b, i);   /* more than it records: bytes */
    }
}

/* Peers on the consumer socket that spoke without a hello (they said it to a batcher
 * that has since been restarted), with when they were last asked to say it again. */
typedef struct {
    char ident[256];
    size_t identlen;
    double asked;
} s_stranger_t;

static int s_extra(void *ctx, const char *flag, const char *value) {
    s_opts_t *o = ctx;
    if (value && strcmp(flag, "--out") == 0) {
        snprintf(o->out, sizeof o->out, "%s", value);
        return 1;
    }
    if (value && strcmp(flag, "--world") == 0) {
        char *end;
        long v = strtol(value, &end, 10);
        if (*end || v < 1 || v > MAX_RANKS) {
            fprintf(stderr, "ofa-batcher: --world needs a number from 1 to %d, not '%s'\n",
                    MAX_RANKS, value);
            exit(2);
        }
        o->world = (int)v;
        return 1;
    }
    return 0;
}

static void s_enqueue(s_rank_t *r, proto_msg_t *b) {
    if (r->nq == r->capq) {
        r->capq = r->capq ? r->capq * 2 : 8;
        r->q = util_realloc(r->q, (size_t)r->capq * sizeof *r->q);
    }
    r->q[r->nq++] = b;
}

int main(int argc, char **argv) {
    stage_args_t a;
    s_opts_t o = {0};
    stage_args_parse(&a, argc, argv,
                     "usage: ofa-batcher --ctl BROKER --out ENDPOINT [common flags]\n"
                     "  --out ENDPOINT      ROUTER endpoint the consumers connect to\n"
                     "  --world N           consumers (ranks); default: the plan's trainer.ranks\n"
                     "                      when its consumer is the trainer, else 1",
                     s_extra, &o);
    if (!o.out[0])
        util_fatal("launch passes --out", "no --out endpoint");
    char err[65536];
    int world = 1;
    if (a.plan[0]) {
        plan_t *plan = plan_load(a.plan, err, sizeof err);
        if (!plan)
            util_fatal("launch passes the resolved plan with --plan", "%s", err);
        if (plan->trainer.consumer && strcmp(plan->trainer.consumer, "trainer") == 0)
            world = plan->trainer.ranks > 0 ? plan->trainer.ranks : 1;
        plan_destroy(&plan);
    }
    if (o.world > 0)
        world = o.world;
    if (world > MAX_RANKS)
        util_fatal(NULL, "%d ranks (at most %d)", world, MAX_RANKS);

    stage_install_signals();
    void *zctx = zmq_ctx_new();
    stats_t *st = stats_new(zctx, a.stats, a.id, "batcher");
    /* --arena: batches are built in shared memory and the consumers read them there;
     * the arena is made with the first sample that has a large tensor. */
    stage_arena_t sa = {0};
    void *out = zmq_socket(zctx, ZMQ_ROUTER);
    /* Credits bound the queues; a ROUTER at its high-water mark would drop silently. */
    int linger = 1000, hwm = 0;
    zmq_setsockopt(out, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(out, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(out, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* A restarted process reconnects under its old id: the new connection takes it over. */
    int handover = 1;
    zmq_setsockopt(out, ZMQ_ROUTER_HANDOVER, &handover, sizeof handover);
    /* tcp:// runs: a CURVE server that admits only the run's clients (curve.h). */
    curve_zap_t *zap = NULL;
    if (curve_default() && (!(zap = curve_zap_new(zctx, curve_default(), err, sizeof err)) ||
                            curve_server_apply(out, curve_default(), err, sizeof err) != 0))
        util_fatal(NULL, "%s", err);
    if (zmq_bind(out, o.out) != 0)
        util_fatal(NULL, "bind %s: %s", o.out, zmq_strerror(errno));
    /* "acks": this batcher acknowledges, so the broker keeps what it sent until then. */
    proto_msg_t *hello = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_int(hello, "acks", 1);
    stage_conn_t *conn = stage_conn_new(zctx, a.ctl, "batcher", a.id, "batcher", 0, hello, err,
                                        sizeof err);
    if (!conn)
        util_fatal("is the broker running?", "%s", err);
    void *in = stage_conn_socket(conn);
    trace_open(a.id);

    batcher_t *bt = batcher_new();
    s_rank_t ranks[MAX_RANKS];
    memset(ranks, 0, sizeof ranks);
    long requested = 0;     /* samples asked of the broker, not yet received */
    long k = 0;             /* batches cut so far: batch k goes to rank k % world */
    int eof = 0, ended = 0;
    int64_t last_want = -1;
    s_pendq_t pend = {0};
    s_stranger_t strangers[MAX_STRANGERS];
    int nstrangers = 0;
    int64_t acked_seq = 0, acked_k = 0;   /* what the broker was last told */
    /* Nothing is taken before the broker's "start": a restarted batcher may be sent
     * samples between its connection and its hello (on the old one's credit); the
     * broker sends those again after the start. */
    int started = 0;
    long before_start = 0;
    double busy = 0;
    while (!stage_stop_flag && !ended) {
        zmq_pollitem_t items[2] = {{in, 0, ZMQ_POLLIN, 0}, {out, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 100) < 0 && errno != EINTR)
            break;
        double t0 = util_now();
        double tr0 = trace_now();
        long got = 0;
        /* From the broker: samples, rejects, eof. */
        for (;;) {
            proto_msg_t *m = proto_recv(in, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err);
            if (!m) {
                if (err[0])
                    fprintf(stderr, "ofa-batcher: dropped a malformed message: %s\n", err);
                if (!err[0])
                    break;
                continue;
            }
            proto_kind_t kind = proto_msg_kind(m);
            if (!started && !(kind == PROTO_CONTROL && (!strcmp(proto_msg_op(m), "start") ||
                                                        !strcmp(proto_msg_op(m), "stop")))) {
                before_start++;
                proto_msg_destroy(&m);
                continue;
            }
            if (kind == PROTO_SAMPLE || kind == PROTO_REJECT) {
                if (requested > 0)
                    requested--;
                got++;
                stats_add(st, "items_in", 1);
                stats_add(st, "bytes_in", (double)proto_msg_bytes(m));
                long dup0 = batcher_duplicates(bt);
                char task[128];
                snprintf(task, sizeof task, "%s", proto_msg_task(m));
                if (!sa.arena && !sa.failed && stage_msg_big(m) && stage_arena_get(&sa, &a))
                    batcher_set_arena(bt, sa.arena);
                batcher_add(bt, m);
                if (batcher_duplicates(bt) > dup0)
                    stats_task_add(st, task, "duplicates_dropped", 1);
            } else if (kind == PROTO_CONTROL && strcmp(proto_msg_op(m), "eof") == 0) {
                batcher_set_eof(bt, proto_msg_get_int(m, "count", 0));
                eof = 1;
                proto_msg_destroy(&m);
            } else if (kind == PROTO_CONTROL && strcmp(proto_msg_op(m), "start") == 0) {
                /* Restarted: the broker says where the confirmed batches end. */
                int64_t s0 = proto_msg_get_int(m, "seq", 0), k0 = proto_msg_get_int(m, "batch", 0);
                if (started || k0 < 0 || (s0 > 0 && batcher_start(bt, s0) != 0)) {
                    fprintf(stderr, "ofa-batcher: start at seq %lld, batch %lld refused: the "
                            "walk has begun\n", (long long)s0, (long long)k0);
                } else {
                    k = k0;
                    acked_seq = s0;
                    acked_k = k0;
                    started = 1;
                    if (s0 > 0 || k0 > 0 || before_start)
                        fprintf(stderr, "ofa-batcher: starting at seq %lld, batch %lld (a "
                                "restart; %ld message(s) before the start dropped, the "
                                "broker sends them again)\n", (long long)s0, (long long)k0,
                                before_start);
                }
                proto_msg_destroy(&m);
            } else if (kind == PROTO_CONTROL && strcmp(proto_msg_op(m), "stop") == 0) {
                stage_stop_flag = SIGTERM;
                proto_msg_destroy(&m);
            } else {
                proto_msg_destroy(&m);
            }
        }
        if (got)
            trace_span_n("recv", tr0, NULL, "n", got);
        /* From the consumers: hello and credits. A rank that says hello again (a
         * restarted trainer) takes over its queue under its new identity. */
        for (;;) {
            char ident[256];
            size_t identlen = 0;
            proto_msg_t *m = proto_recv(out, ident, &identlen, ZMQ_DONTWAIT, err, sizeof err);
            if (!m) {
                if (!err[0])
                    break;
                fprintf(stderr, "ofa-batcher: dropped a malformed message from a consumer: "
                        "%s\n", err);
                continue;
            }
            int rank = -1;
            for (int r = 0; r < world; r++)
                if (ranks[r].known && ranks[r].identlen == identlen &&
                    memcmp(ranks[r].ident, ident, identlen) == 0)
                    rank = r;
            if (proto_msg_kind(m) == PROTO_CONTROL && strcmp(proto_msg_op(m), "hello") == 0) {
                int64_t r = proto_msg_get_int(m, "rank", 0);
                int64_t w = proto_msg_get_int(m, "world", world);
                if (w != world)
                    fprintf(stderr, "ofa-batcher: consumer rank %lld says world %lld, the "
                            "batcher serves %d ranks\n", (long long)r, (long long)w, world);
                if (r < 0 || r >= world) {
                    fprintf(stderr, "ofa-batcher: hello from rank %lld of a world of %d; "
                            "ignored\n", (long long)r, world);
                } else {
                    if (ranks[r].known)
                        s_pend_consumer_gone(&pend, (int)r);
                    memcpy(ranks[r].ident, ident, identlen);
                    ranks[r].identlen = identlen;
                    ranks[r].known = 1;
                    ranks[r].credits = proto_msg_get_int(m, "credits", 0);
                    fprintf(stderr, "ofa-batcher: consumer rank %lld connected\n",
                            (long long)r);
                }
            } else if (proto_msg_kind(m) == PROTO_CREDIT && rank >= 0) {
                int64_t n = proto_msg_get_int(m, "n", 0);
                if (n > 0 && n < 1000000)
                    ranks[rank].credits += n;
                if (n > 0)
                    s_pend_confirm(&pend, rank, proto_msg_get_int(m, "ack", -1));
            } else if (rank < 0) {
                /* A consumer that said hello to the batcher this one replaced: ask it to
                 * say hello again (at most twice a second per peer). */
                int s = 0;
                while (s < nstrangers && !(strangers[s].identlen == identlen &&
                                           !memcmp(strangers[s].ident, ident, identlen)))
                    s++;
                if (s == nstrangers) {
                    s = nstrangers < MAX_STRANGERS ? nstrangers++ : 0;
                    memcpy(strangers[s].ident, ident, identlen);
                    strangers[s].identlen = identlen;
                    strangers[s].asked = 0;
                }
                if (util_now() - strangers[s].asked > 0.5) {
                    strangers[s].asked = util_now();
                    proto_msg_t *rh = proto_msg_new(PROTO_CONTROL, NULL);
                    proto_msg_set_op(rh, "rehello");
                    proto_send(out, ident, identlen, &rh, 0);
                    fprintf(stderr, "ofa-batcher: asked an unknown consumer to say hello "
                            "again\n");
                }
            }
            proto_msg_destroy(&m);
        }
        /* Cut batches and hand them out. */
        double tb = trace_now();
        for (proto_msg_t *b; (b = batcher_next(bt));) {
            stats_task_add(st, proto_msg_task(b), "batched", proto_msg_n_ids(b));
            trace_span("batch", tb, proto_msg_task(b));
            s_pending_t pb = {.step = proto_msg_get_int(b, "step", -1),
                              .seq0 = proto_msg_get_int(b, "seq0", 0), .k = k,
                              .rank = (int)(k % world)};
            s_batch_slots(b, &sa, &a, &pb);
            if (pb.nslots)
                stats_add(st, "arena_slots", pb.nslots);
            s_pend_add(&pend, pb);
            s_enqueue(&ranks[k % world], b);
            k++;
            tb = trace_now();
        }
        int backlog = 0;
        for (int r = 0; r < world; r++) {
            s_rank_t *rk = &ranks[r];
            while (rk->known && rk->credits > 0 && rk->nq > 0) {
                proto_msg_t *b = rk->q[0];
                memmove(rk->q, rk->q + 1, (size_t)(rk->nq - 1) * sizeof *rk->q);
                rk->nq--;
                rk->credits--;
                stats_add(st, "items_out", 1);
                stats_add(st, "bytes_out", (double)proto_msg_bytes(b));
                double ts = trace_now();
                s_pending_t *pb = s_pend_unsent(&pend, r);
                if (pb && pb->confirmed && pb->nslots) {
                    /* Confirmed already: nothing would say when the consumer is done with
                     * this copy, so it goes as bytes and the slots are free at once. */
                    for (int i = 0; i < proto_msg_n_fields(b); i++)
                        proto_msg_field_unarena_at(b, i);
                    s_release(pb);
                }
                proto_send(out, rk->ident, rk->identlen, &b, 0);
                s_pend_sent(&pend, r);
                trace_span("send", ts, NULL);
            }
            backlog += rk->nq;
        }
        /* Tell the broker how far the confirmed batches reach, when that moved. */
        int64_t wseq = pend.n ? pend.v[0].seq0 : batcher_open_seq(bt);
        int64_t wk = pend.n ? pend.v[0].k : k;
        if (wseq > acked_seq || wk > acked_k) {
            proto_msg_t *ack = proto_msg_new(PROTO_CONTROL, NULL);
            proto_msg_set_op(ack, "ack");
            proto_msg_set_int(ack, "seq", wseq);
            proto_msg_set_int(ack, "batch", wk);
            stage_conn_send(conn, &ack);
            acked_seq = wseq;
            acked_k = wk;
        }
        /* Ask the broker for more while there is room: the window counts what is held
         * in the reorder buffer plus what was asked and not yet received, and credits
         * are sent in chunks of 16 or more so that a busy run is not one CREDIT message
         * per sample. Pulling stops while the ranks have READY_PER_RANK batches
         * waiting: back-pressure from a slow consumer reaches the source by credit. */
        long held = batcher_buffered(bt) + requested;
        int gap = batcher_waiting_for_gap(bt);
        if (!started) {
            /* No credit before the start (it would name the wrong seq). */
        } else if (!eof && backlog < READY_PER_RANK * world && held < WINDOW) {
            long n = WINDOW - held;
            if (n >= 16 || requested == 0) {
                proto_msg_t *c = proto_msg_new(PROTO_CREDIT, NULL);
                proto_msg_set_int(c, "n", n);
                proto_msg_set_int(c, "want_seq", batcher_next_seq(bt));
                stage_conn_send(conn, &c);
                requested += n;
                last_want = batcher_next_seq(bt);
            }
        } else if (gap && last_want != batcher_next_seq(bt)) {
            /* The window is full of later samples: name the one the walk waits for, which
             * the broker sends even without credit. */
            proto_msg_t *c = proto_msg_new(PROTO_CREDIT, NULL);
            proto_msg_set_int(c, "n", 0);
            proto_msg_set_int(c, "want_seq", batcher_next_seq(bt));
            stage_conn_send(conn, &c);
            last_want = batcher_next_seq(bt);
        }
        /* The end: every seq walked, every batch handed out; each rank gets "end" once
         * it has said hello (a rank that never connects keeps the run waiting, and
         * launch's supervision decides what to do about it). */
        if (eof && batcher_done(bt) && backlog == 0) {
            int all = 1;
            for (int r = 0; r < world; r++) {
                if (!ranks[r].known) {
                    all = 0;
                    continue;
                }
                if (!ranks[r].ended) {
                    proto_msg_t *e = proto_msg_new(PROTO_CONTROL, NULL);
                    proto_msg_set_op(e, "end");
                    proto_send(out, ranks[r].ident, ranks[r].identlen, &e, 0);
                    ranks[r].ended = 1;
                }
            }
            if (all) {
                fprintf(stderr, "ofa-batcher: %ld batches, %ld samples; end sent\n",
                        batcher_batches_out(bt), batcher_samples_out(bt));
                ended = 1;
            }
        }
        busy += util_now() - t0;
        stats_set(st, "busy_s", busy);
        stats_set(st, "queue_depth", (double)(batcher_buffered(bt) + backlog));
        stats_set(st, "batches_out", (double)batcher_batches_out(bt));
        stats_set(st, "next_seq", (double)batcher_next_seq(bt));
        stats_set(st, "requested", (double)requested);
        stats_set(st, "samples_out", (double)batcher_samples_out(bt));
        stats_set(st, "malformed", (double)batcher_malformed(bt));
        stage_conn_heartbeat(conn);
        stats_tick(st);
    }
    /* Stay until launch stops the run, so late consumers still find the socket. */
    while (!stage_stop_flag) {
        zmq_pollitem_t it = {in, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 200);
        for (proto_msg_t *m; (m = proto_recv(in, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err));)
            proto_msg_destroy(&m);
        stage_conn_heartbeat(conn);
        stats_tick(st);
    }
    for (int r = 0; r < MAX_RANKS; r++) {
        for (int i = 0; i < ranks[r].nq; i++)
            proto_msg_destroy(&ranks[r].q[i]);
        free(ranks[r].q);
    }
    free(pend.v);
    trace_close();
    batcher_destroy(&bt);
    /* Batches sent may still be read: the name stays (launch removes it). */
    shmarena_detach(&sa.arena);
    stage_conn_destroy(&conn);
    zmq_close(out);
    curve_zap_destroy(&zap);
    stats_destroy(&st);
    zmq_ctx_term(zctx);
    return 0;
}
