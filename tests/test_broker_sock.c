/* test_broker_sock.c: the ofa-broker program over real ZeroMQ sockets (ipc:// in a
 * temporary folder), as a run uses it. test_broker.c drives the state machine directly;
 * this suite checks what only the whole program shows: the poll loop, ROUTER identities,
 * frames on the wire, heartbeats in real time, the stats it pushes, SIGTERM.
 *
 * The broker runs as a child process. The test plays every other peer (a source, workers
 * of two tiers, a batcher), each with its own DEALER, in one event loop: each peer keeps
 * its own books (what it holds, what it received), so credit limits and exactly-once
 * delivery are checked from the peers' side of the wire. */
#define _GNU_SOURCE   /* memmem */
#include "broker_proc.h"
#include "hand_msg.h"
#include "proto.h"
#include "util.h"

#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_N 2000
#define MAX_HELD 64

static char err[512];

/* ---------------------------------------------------------------- the broker process */

/* The broker on ipc:// sockets in a fresh temporary folder, with a plain stats socket. */
static void run_start(bproc_t *r, int max_inflight, int dead_ms) {
    memset(r, 0, sizeof *r);
    bproc_tmpdir(r->dir, sizeof r->dir, "ofa-brk");
    snprintf(r->ep, sizeof r->ep, "ipc://%s/broker", r->dir);
    snprintf(r->stats_ep, sizeof r->stats_ep, "ipc://%s/stats", r->dir);
    r->ctx = zmq_ctx_new();
    r->pull = zmq_socket(r->ctx, ZMQ_PULL);
    cr_assert_eq(zmq_bind(r->pull, r->stats_ep), 0);
    char mi[16], dm[16];
    snprintf(mi, sizeof mi, "%d", max_inflight);
    snprintf(dm, sizeof dm, "%d", dead_ms);
    bproc_start(r, (const char *[]){"--max-inflight", mi, "--dead-ms", dm, NULL});
}

static void run_end(bproc_t *r) {
    zmq_close(r->pull);
    zmq_ctx_term(r->ctx);
    bproc_rmdir(r->dir);
}

/* Lines of a file (0 when absent). */
static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    for (int c; (c = fgetc(f)) != EOF;)
        n += c == '\n';
    fclose(f);
    return n;
}

/* ---------------------------------------------------------------- fake peers */

typedef enum { P_SOURCE, P_WORKER, P_BATCHER, P_RAW } s_role_t;

typedef struct {
    s_role_t role;
    char id[32], tier[16];
    void *sock;
    int credits;                  /* workers: the credits granted in hello */
    double last_send;
    /* workers */
    int64_t held[MAX_HELD];       /* seqs received and not answered */
    double held_at[MAX_HELD];
    int nheld, max_held;
    double delay;                 /* seconds before answering */
    int reject_mod;               /* reject seq % reject_mod == 1 (0: never) */
    double silent_from, silent_until;   /* no message at all in [from, until) */
    long hang_after;              /* hang (go silent) once this many answers are sent */
    double hang_for;              /* ... holding items, for this many seconds */
    int late_answers;             /* answers to items received before the silence, sent
                                   * after it (the broker re-dispatched those) */
    long answered;
} s_peer_t;

static void peer_send(s_peer_t *p, proto_msg_t **m) {
    cr_assert_eq(proto_send(p->sock, NULL, 0, m, 0), 0, "send from %s", p->id);
    p->last_send = util_now();
}

static void peer_init(s_peer_t *p, void *ctx, const char *ep, s_role_t role, const char *id,
                      const char *tier, int credits) {
    memset(p, 0, sizeof *p);
    p->role = role;
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->tier, sizeof p->tier, "%s", tier ? tier : "");
    p->credits = credits;
    p->sock = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, id, strlen(id));
    int linger = 0;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_connect(p->sock, ep), 0);
    if (role == P_RAW)
        return;
    static const char *roles[] = {"source", "worker", "batcher"};
    proto_msg_t *h = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(h, "hello");
    proto_msg_set_str(h, "role", roles[role]);
    proto_msg_set_str(h, "id", id);
    proto_msg_set_str(h, "tier", p->tier);
    proto_msg_set_int(h, "credits", credits);
    peer_send(p, &h);
}

static bool peer_silent(const s_peer_t *p, double now) {
    return now >= p->silent_from && now < p->silent_until;
}

/* What the fake batcher saw. */
typedef struct {
    int delivered[MAX_N];         /* samples per seq */
    int rejected[MAX_N];          /* reject notices per seq */
    int eof;
    int64_t eof_count;
    int bad_route;                /* samples that reached it before the end of the route */
} s_seen_t;

/* A whole run: n samples along route "a,b" (an image-like blob that travels as a frame),
 * through the given workers. With `hold`, the batcher grants no credit until the source
 * has sent max_inflight samples and then nothing more for half a second (10 s at most),
 * so the bound on what the source is asked for is checked while nothing leaves the
 * system, whatever the machine's load. Returns when the batcher has the eof (or after
 * timeout_s). */
typedef struct {
    int n;
    int max_inflight;
    int hold;
    double timeout_s;
    long sent_during_hold;        /* samples the source had sent when the hold ended */
    s_seen_t seen;
} s_plan_t;

static void run_pipeline(s_plan_t *pl, void *ctx, const char *ep, s_peer_t *workers,
                         int nworkers, void *garbage_sock) {
    s_peer_t src, bat;
    peer_init(&src, ctx, ep, P_SOURCE, "source", "source", 0);
    peer_init(&bat, ctx, ep, P_BATCHER, "batcher", NULL, 0);
    long src_credits = 0, sent = 0;
    int eof_sent = 0, hold_over = 0;
    double last_source_send = util_now();
    size_t blob_len = 20000;      /* over PROTO_INLINE_MAX: a frame of its own */
    uint8_t *blob = util_malloc(blob_len);
    for (size_t i = 0; i < blob_len; i++)
        blob[i] = (uint8_t)(i * 7);
    double t0 = util_now();
    int n_items = 2 + nworkers + (garbage_sock ? 1 : 0);
    zmq_pollitem_t items[16];
    s_peer_t *peers[16];
    peers[0] = &src;
    peers[1] = &bat;
    for (int i = 0; i < nworkers; i++)
        peers[2 + i] = &workers[i];
    while (!pl->seen.eof && util_now() - t0 < pl->timeout_s) {
        double now = util_now();
        if (!hold_over && (!pl->hold || now - t0 > 10 ||
                           (sent >= pl->max_inflight && now - last_source_send > 0.5))) {
            hold_over = 1;
            pl->sent_during_hold = sent;
            proto_msg_t *c = proto_msg_new(PROTO_CREDIT, NULL);
            proto_msg_set_int(c, "n", 100000);
            peer_send(&bat, &c);
        }
        for (int i = 0; i < 2 + nworkers; i++)
            items[i] = (zmq_pollitem_t){peers[i]->sock, 0, ZMQ_POLLIN, 0};
        if (garbage_sock)
            items[n_items - 1] = (zmq_pollitem_t){garbage_sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(items, n_items, 10);
        now = util_now();
        cr_assert(!garbage_sock || !(items[n_items - 1].revents & ZMQ_POLLIN),
                  "the broker answered a peer that sent garbage");
        for (int i = 0; i < 2 + nworkers; i++) {
            s_peer_t *p = peers[i];
            if (p->role == P_WORKER && peer_silent(p, now))
                continue;   /* a hung process reads nothing either */
            for (proto_msg_t *m;
                 (m = proto_recv(p->sock, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err));) {
                proto_kind_t k = proto_msg_kind(m);
                int64_t seq = proto_msg_get_int(m, "seq", -1);
                if (p->role == P_SOURCE && k == PROTO_CREDIT) {
                    src_credits += proto_msg_get_int(m, "n", 0);
                } else if (p->role == P_WORKER && k == PROTO_SAMPLE) {
                    cr_assert_lt(p->nheld, MAX_HELD);
                    const char *route = proto_msg_get_str(m, "@route");
                    cr_assert_str_eq(route, "a,b");
                    int hop = (int)proto_msg_get_int(m, "@hop", -1);
                    cr_assert_eq(hop, strcmp(p->tier, "a") == 0 ? 0 : 1,
                                 "%s got seq %lld at hop %d", p->id, (long long)seq, hop);
                    const proto_field_t *f = proto_msg_get_tensor(m, "blob", PROTO_U8);
                    cr_assert_not_null(f, "the blob tensor arrives with the sample");
                    cr_assert_eq(f->len, blob_len);
                    cr_assert_eq(memcmp(f->data, blob, blob_len), 0, "blob corrupted");
                    p->held[p->nheld] = seq;
                    p->held_at[p->nheld] = now;
                    p->nheld++;
                    if (p->nheld > p->max_held)
                        p->max_held = p->nheld;
                } else if (p->role == P_BATCHER && k == PROTO_SAMPLE) {
                    cr_assert(seq >= 0 && seq < pl->n, "seq %lld", (long long)seq);
                    pl->seen.delivered[seq]++;
                    if (proto_msg_get_int(m, "@hop", -1) != 2 ||
                        proto_msg_get_int(m, "done_b", 0) != 1)
                        pl->seen.bad_route++;
                } else if (p->role == P_BATCHER && k == PROTO_REJECT) {
                    cr_assert(seq >= 0 && seq < pl->n, "reject seq %lld", (long long)seq);
                    pl->seen.rejected[seq]++;
                } else if (p->role == P_BATCHER && k == PROTO_CONTROL &&
                           strcmp(proto_msg_op(m), "eof") == 0) {
                    pl->seen.eof = 1;
                    pl->seen.eof_count = proto_msg_get_int(m, "count", -1);
                }
                proto_msg_destroy(&m);
            }
            cr_assert_eq(err[0], 0, "%s received a malformed message: %s", p->id, err);
        }
        /* The source: one sample per credit, then eof. */
        while (src_credits > 0 && sent < pl->n) {
            proto_msg_t *s = proto_msg_new(PROTO_SAMPLE, "t");
            proto_msg_add_id(s, (uint64_t)sent);
            proto_msg_set_int(s, "seq", sent);
            proto_msg_set_int(s, "row", sent);
            proto_msg_set_str(s, "@route", "a,b");
            proto_msg_set_int(s, "@hop", 0);
            int64_t shape[1] = {(int64_t)blob_len};
            proto_msg_set_tensor(s, "blob", PROTO_U8, 1, shape, blob);
            peer_send(&src, &s);
            last_source_send = util_now();
            sent++;
            src_credits--;
        }
        if (sent == pl->n && !eof_sent) {
            proto_msg_t *e = proto_msg_new(PROTO_CONTROL, NULL);
            proto_msg_set_op(e, "eof");
            proto_msg_set_int(e, "count", pl->n);
            peer_send(&src, &e);
            eof_sent = 1;
        }
        /* Workers answer what they held for `delay` (all at once after a silence). A worker
         * set to hang does so once it has answered hang_after items and holds some. */
        for (int i = 0; i < nworkers; i++) {
            s_peer_t *w = &workers[i];
            if (w->hang_after && w->silent_until == 0 && w->answered >= w->hang_after &&
                w->nheld > 0) {
                w->silent_from = now;
                w->silent_until = now + w->hang_for;
            }
            if (peer_silent(w, now))
                continue;
            for (int h = 0; h < w->nheld;) {
                if (now - w->held_at[h] < w->delay) {
                    h++;
                    continue;
                }
                int64_t seq = w->held[h];
                proto_msg_t *a;
                if (w->reject_mod && seq % w->reject_mod == 1) {
                    a = proto_msg_new(PROTO_REJECT, "t");
                    proto_msg_add_id(a, (uint64_t)seq);
                    proto_msg_set_int(a, "seq", seq);
                    proto_msg_set_str(a, "stage", w->tier);
                    proto_msg_set_str(a, "reason", "column blob: test reject");
                } else {
                    /* The answer: the sample with its tier's mark and @hop + 1. The blob
                     * goes back too, as a real stage's output would. */
                    a = proto_msg_new(PROTO_SAMPLE, "t");
                    proto_msg_add_id(a, (uint64_t)seq);
                    proto_msg_set_int(a, "seq", seq);
                    proto_msg_set_str(a, "@route", "a,b");
                    bool tier_a = strcmp(w->tier, "a") == 0;
                    proto_msg_set_int(a, "@hop", tier_a ? 1 : 2);
                    int64_t shape[1] = {(int64_t)blob_len};
                    proto_msg_set_tensor(a, "blob", PROTO_U8, 1, shape, blob);
                    proto_msg_set_int(a, tier_a ? "done_a" : "done_b", 1);
                }
                if (w->silent_until > 0 && now >= w->silent_until &&
                    w->held_at[h] <= w->silent_from)
                    w->late_answers++;
                peer_send(w, &a);
                w->answered++;
                w->held[h] = w->held[w->nheld - 1];
                w->held_at[h] = w->held_at[w->nheld - 1];
                w->nheld--;
            }
        }
        /* Heartbeats from everyone with nothing else to say (and not hung). */
        for (int i = 0; i < 2 + nworkers; i++) {
            s_peer_t *p = peers[i];
            if (p->role == P_WORKER && peer_silent(p, now))
                continue;
            if (now - p->last_send > 0.1) {
                proto_msg_t *hb = proto_msg_new(PROTO_CONTROL, NULL);
                proto_msg_set_op(hb, "heartbeat");
                peer_send(p, &hb);
            }
        }
    }
    if (!hold_over)
        pl->sent_during_hold = sent;
    zmq_close(src.sock);
    zmq_close(bat.sock);
    free(blob);
}

/* Every seq resolved exactly once: delivered, or rejected, never both, and the eof. */
static void assert_exactly_once(const s_plan_t *pl, int reject_mod) {
    cr_assert(pl->seen.eof, "the batcher never got the eof");
    cr_assert_eq(pl->seen.eof_count, pl->n);
    cr_assert_eq(pl->seen.bad_route, 0, "samples reached the batcher before their route ended");
    for (int s = 0; s < pl->n; s++) {
        bool rej = reject_mod && s % reject_mod == 1;
        cr_assert_eq(pl->seen.delivered[s], rej ? 0 : 1, "seq %d delivered %d times", s,
                     pl->seen.delivered[s]);
        cr_assert_eq(pl->seen.rejected[s], rej ? 1 : 0, "seq %d rejected %d times", s,
                     pl->seen.rejected[s]);
    }
}

TestSuite(broker_sock, .timeout = 60);

Test(broker_sock, credits_bound_and_exactly_once) {
    bproc_t r;
    run_start(&r, 24, 2000);
    static s_peer_t w[3];
    peer_init(&w[0], r.ctx, r.ep, P_WORKER, "a.0", "a", 2);
    peer_init(&w[1], r.ctx, r.ep, P_WORKER, "a.1", "a", 3);
    peer_init(&w[2], r.ctx, r.ep, P_WORKER, "b.0", "b", 4);
    w[0].delay = 0.002;
    w[1].delay = 0.001;
    w[2].delay = 0.0;
    w[2].reject_mod = 10;   /* tier b rejects seq 1, 11, 21, ... */
    static s_plan_t pl;
    memset(&pl, 0, sizeof pl);
    pl.n = 400;
    pl.max_inflight = 24;
    pl.hold = 1;
    pl.timeout_s = 40;
    run_pipeline(&pl, r.ctx, r.ep, w, 3, NULL);
    assert_exactly_once(&pl, 10);
    /* While the batcher took nothing, the source was asked for at most --max-inflight. */
    cr_assert_eq(pl.sent_during_hold, 24, "source sent %ld samples while the batcher was "
                 "closed (bound 24)", pl.sent_during_hold);
    for (int i = 0; i < 3; i++) {
        cr_assert_leq(w[i].max_held, w[i].credits, "%s held %d items with %d credits",
                      w[i].id, w[i].max_held, w[i].credits);
        cr_assert_gt(w[i].answered, 0, "%s never got work (round robin)", w[i].id);
    }
    /* Both tier-a workers share the work (round robin among workers with credit). */
    cr_assert_gt(w[0].answered, 40, "a.0 answered only %ld of 400", w[0].answered);
    cr_assert_gt(w[1].answered, 40, "a.1 answered only %ld of 400", w[1].answered);
    const char *keys[] = {"redispatched", "duplicates_dropped", "rejected", "items_in"};
    double v[4];
    for (int i = 0; i < 3; i++)
        zmq_close(w[i].sock);
    bproc_stop(&r, keys, v, 4);
    cr_assert_leq(v[0], 0, "nothing re-dispatched in a healthy run (%g)", v[0]);
    cr_assert_leq(v[1], 0);
    cr_assert_eq(v[2], 40, "rejected counter %g", v[2]);
    cr_assert_gt(v[3], 800, "items_in %g", v[3]);
    char path[128];
    snprintf(path, sizeof path, "%s/rejects.jsonl", r.dir);
    cr_assert_eq(count_lines(path), 40, "one rejects.jsonl line per reject");
    run_end(&r);
}

Test(broker_sock, silent_worker_items_redispatched_late_answers_dropped) {
    bproc_t r;
    run_start(&r, 64, 500);
    static s_peer_t w[3];
    peer_init(&w[0], r.ctx, r.ep, P_WORKER, "a.hang", "a", 6);
    peer_init(&w[1], r.ctx, r.ep, P_WORKER, "a.ok", "a", 2);
    peer_init(&w[2], r.ctx, r.ep, P_WORKER, "b.0", "b", 4);
    /* a.hang answers 10 items, then hangs for 2 s (four times --dead-ms) holding up to 6,
     * then wakes up and answers all of them: by then the others have. */
    w[0].delay = 0.05;
    w[0].hang_after = 10;
    w[0].hang_for = 2.0;
    w[1].delay = 0.02;
    static s_plan_t pl;
    memset(&pl, 0, sizeof pl);
    pl.n = 300;
    pl.timeout_s = 40;
    run_pipeline(&pl, r.ctx, r.ep, w, 3, NULL);
    assert_exactly_once(&pl, 0);
    cr_assert_gt(w[0].late_answers, 0, "the hung worker held nothing when it hung");
    /* The credit bound of the healthy workers. (The hung one, once back, is given a fresh
     * window while it still works through what reached it before it was declared dead.) */
    for (int i = 1; i < 3; i++)
        cr_assert_leq(w[i].max_held, w[i].credits, "%s held %d items with %d credits",
                      w[i].id, w[i].max_held, w[i].credits);
    const char *keys[] = {"redispatched", "duplicates_dropped", "task.t.redispatched"};
    double v[3];
    for (int i = 0; i < 3; i++)
        zmq_close(w[i].sock);
    bproc_stop(&r, keys, v, 3);
    cr_assert_geq(v[0], w[0].late_answers, "redispatched %g < items held by the hung "
                  "worker %d", v[0], w[0].late_answers);
    cr_assert_eq(v[2], v[0], "per-task redispatched %g, total %g", v[2], v[0]);
    cr_assert_gt(v[1], 0, "late answers not counted as duplicates_dropped");
    run_end(&r);
}

Test(broker_sock, garbage_logged_and_ignored) {
    bproc_t r;
    run_start(&r, 32, 2000);
    /* A peer that sends junk before and during the run: raw bytes, a bad magic, a
     * message with 3 frames whose envelope names frame 7, an empty frame. */
    s_peer_t junk;
    peer_init(&junk, r.ctx, r.ep, P_RAW, "junk", NULL, 0);
    cr_assert_eq(zmq_send(junk.sock, "\xc1\xff garbage", 10, 0), 10);
    cr_assert_eq(zmq_send(junk.sock, "", 0, 0), 0);
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "t");
    proto_msg_set_int(m, "seq", 5);
    size_t len;
    uint8_t *env = proto_encode_bytes(m, &len);
    proto_msg_destroy(&m);
    uint8_t *p = memmem(env, len, "OFAC", 4);
    cr_assert_not_null(p);
    p[0] = 'X';   /* bad magic */
    cr_assert_eq(zmq_send(junk.sock, env, len, 0), (int)len);
    free(env);
    /* A tensor whose data names frame 7 of a message with 2 frames. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    hand_sample_field(&pk, NULL, "x");
    msgpack_pack_uint64(&pk, 7);
    cr_assert_eq(zmq_send(junk.sock, sb.data, sb.size, ZMQ_SNDMORE), (int)sb.size);
    cr_assert_eq(zmq_send(junk.sock, "abcd", 4, 0), 4);
    msgpack_sbuffer_destroy(&sb);
    /* A well-formed sample from a peer that never said hello. */
    m = proto_msg_new(PROTO_SAMPLE, "t");
    proto_msg_set_int(m, "seq", 3);
    cr_assert_eq(proto_send(junk.sock, NULL, 0, &m, 0), 0);

    static s_peer_t w[2];
    peer_init(&w[0], r.ctx, r.ep, P_WORKER, "a.0", "a", 4);
    peer_init(&w[1], r.ctx, r.ep, P_WORKER, "b.0", "b", 4);
    static s_plan_t pl;
    memset(&pl, 0, sizeof pl);
    pl.n = 100;
    pl.timeout_s = 30;
    run_pipeline(&pl, r.ctx, r.ep, w, 2, junk.sock);
    assert_exactly_once(&pl, 0);
    cr_assert_eq(waitpid(r.pid, NULL, WNOHANG), 0, "ofa-broker died");
    const char *keys[] = {"malformed"};
    double v[1];
    for (int i = 0; i < 2; i++)
        zmq_close(w[i].sock);
    zmq_close(junk.sock);
    bproc_stop(&r, keys, v, 1);
    cr_assert_eq(v[0], 5, "malformed counter %g (want 5: raw, empty, bad magic, bad frame "
                 "index, sample without hello)", v[0]);
    /* Each is named in the broker's log. */
    char path[128];
    snprintf(path, sizeof path, "%s/broker.log", r.dir);
    char *log = util_read_file(path, NULL, err, sizeof err);
    cr_assert_not_null(log, "%s", err);
    cr_assert(strstr(log, "bad magic"), "log:\n%s", log);
    cr_assert(strstr(log, "frame 7"), "log:\n%s", log);
    free(log);
    run_end(&r);
}
