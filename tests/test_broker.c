/* test_broker.c: the broker's state machine (broker/broker.h) driven directly, without
 * sockets: fake peers (a source, workers of two tiers, a batcher) talk to it through
 * broker_on_message, and a send callback records what it sends to whom. Checked: credit
 * limits, every sample reaching the batcher exactly once along its route, the bound on
 * what the source is asked for, dead and restarted workers, late duplicates, rejects,
 * eof ordering, garbage, and the batcher's want_seq. */
#include "broker.h"
#include "broker_rec.h"
#include "util.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fake peers */

static void hello(broker_t *b, const char *id, const char *role, const char *tier,
                  int credits) {
    brec_hello(b, id, role, tier, credits, 0);
}

static void heartbeat(broker_t *b, const char *id) {
    brec_heartbeat(b, id);
}

static void credit(broker_t *b, const char *id, int n, int64_t want) {
    brec_credit(b, id, n, want);
}

/* A sample as the source emits it. */
static proto_msg_t *mk_sample(int64_t seq, const char *route) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, seq % 2 ? "vqa" : "caption");
    proto_msg_add_id(m, 1000 + (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", seq / 4);
    proto_msg_set_int(m, "epoch", 0);
    proto_msg_set_int(m, "row", seq);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_str(m, "@route", route);
    proto_msg_set_int(m, "@hop", 0);
    return m;
}

static void eof(broker_t *b, int64_t count) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "eof");
    proto_msg_set_int(m, "count", count);
    brec_on(b, "src", m);
}

/* The worker's answer: the sample processed (a field naming the worker) at @hop + 1. */
static void answer(broker_t *b, const char *worker, proto_msg_t *m) {
    char key[32];
    snprintf(key, sizeof key, "by.%s", worker);
    proto_msg_set_int(m, key, 1);
    proto_msg_set_int(m, "@hop", proto_msg_get_int(m, "@hop", 0) + 1);
    brec_on(b, worker, m);
}

/* A REJECT answering sample m (consumed), as stage_make_reject writes it. */
static void reject(broker_t *b, const char *from, proto_msg_t *m, const char *stage) {
    proto_msg_t *r = proto_msg_new(PROTO_REJECT, proto_msg_task(m));
    proto_msg_set_ids(r, proto_msg_ids(m), proto_msg_n_ids(m));
    proto_msg_set_int(r, "seq", proto_msg_get_int(m, "seq", -1));
    proto_msg_set_int(r, "row", proto_msg_get_int(m, "row", -1));
    proto_msg_set_int(r, "slot", proto_msg_get_int(m, "slot", -1));
    proto_msg_set_str(r, "split", "train");
    proto_msg_set_str(r, "stage", stage);
    proto_msg_set_str(r, "reason", "column img: corrupt JPEG: \"bad\" huffman\ttable");
    proto_msg_destroy(&m);
    brec_on(b, from, r);
}

static broker_t *mk_broker(int max_inflight, int dead_ms, const char *rejects,
                           stats_t *st) {
    brec_drop_all();
    broker_opts_t o = {.max_inflight = max_inflight, .dead_ms = dead_ms,
                       .rejects_path = rejects};
    broker_t *b = broker_new(&o, brec_send, NULL, st);
    cr_assert_not_null(b);
    return b;
}

/* Answer every CREDIT the source got by emitting that many samples (up to total);
 * returns the number emitted now. *next is the next seq. */
static int feed_source(broker_t *b, int64_t *next, int64_t total, const char *route,
                       long *asked) {
    int n = 0;
    for (proto_msg_t *c; (c = brec_take("src"));) {
        cr_assert_eq(proto_msg_kind(c), PROTO_CREDIT);
        int64_t k = proto_msg_get_int(c, "n", 0);
        cr_assert_gt(k, 0);
        if (asked)
            *asked += k;
        for (int64_t i = 0; i < k && *next < total; i++, n++)
            brec_on(b, "src", mk_sample((*next)++, route));
        proto_msg_destroy(&c);
    }
    return n;
}

/* ---------------------------------------------------------------- the whole flow */

#define NW 3
Test(broker, credits_route_and_exactly_once) {
    stats_t *st = stats_new(NULL, NULL, "broker", "broker");
    broker_t *b = mk_broker(32, 60000, NULL, st);
    static const char *W[NW] = {"img1", "img2", "tok1"};
    static const char *TIER[NW] = {"image", "image", "tokenize"};
    static const int CRED[NW] = {2, 3, 1};
    hello(b, "src", "source", NULL, 0);
    for (int w = 0; w < NW; w++)
        hello(b, W[w], "worker", TIER[w], CRED[w]);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 1000000, -1);

    enum { TOTAL = 300 };
    int delivered[TOTAL] = {0};
    proto_msg_t *held[NW][8];
    int nheld[NW] = {0};
    int64_t next = 0;
    long ndelivered = 0, asked = 0;
    int got_eof = 0, eof_sent = 0, served[NW] = {0};
    util_rng_t rng = {99};
    for (int round = 0; round < 100000 && !got_eof; round++) {
        broker_tick(b);
        feed_source(b, &next, TOTAL, "image,tokenize", &asked);
        if (next == TOTAL && !eof_sent) {
            eof(b, TOTAL);
            eof_sent = 1;
        }
        for (int w = 0; w < NW; w++) {
            for (proto_msg_t *m; (m = brec_take(W[w]));) {
                cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE);
                cr_assert_lt(nheld[w], CRED[w], "%s holds more than its %d credits", W[w],
                             CRED[w]);
                /* The sample arrives at the hop of this worker's tier. */
                cr_assert_eq(proto_msg_get_int(m, "@hop", -1), w < 2 ? 0 : 1);
                held[w][nheld[w]++] = m;
                served[w]++;
            }
            /* Answer a random subset, in random order. */
            for (int i = 0; i < nheld[w];) {
                if (util_rng_next(&rng) % 3 == 0) {
                    answer(b, W[w], held[w][i]);
                    held[w][i] = held[w][--nheld[w]];
                } else {
                    i++;
                }
            }
        }
        for (proto_msg_t *m; (m = brec_take("bat"));) {
            if (proto_msg_kind(m) == PROTO_CONTROL) {
                cr_assert_str_eq(proto_msg_op(m), "eof");
                cr_assert_eq(proto_msg_get_int(m, "count", -1), TOTAL);
                cr_assert_eq(ndelivered, TOTAL, "eof only after everything before it");
                got_eof = 1;
            } else {
                cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE);
                int64_t seq = proto_msg_get_int(m, "seq", -1);
                cr_assert(seq >= 0 && seq < TOTAL);
                cr_assert_eq(delivered[seq], 0, "seq %lld delivered twice", (long long)seq);
                delivered[seq] = 1;
                ndelivered++;
                /* Along its route: one image worker, then the tokenize worker. */
                cr_assert_eq(proto_msg_get_int(m, "@hop", -1), 2);
                cr_assert_eq(proto_msg_get_int(m, "by.img1", 0) +
                             proto_msg_get_int(m, "by.img2", 0), 1);
                cr_assert_eq(proto_msg_get_int(m, "by.tok1", 0), 1);
                cr_assert_eq(proto_msg_ids(m)[0], 1000u + (uint64_t)seq);
            }
            proto_msg_destroy(&m);
        }
        /* What the source emitted and the batcher has not got stays within the bound. */
        cr_assert_leq(next - ndelivered, 32);
        /* Everyone keeps talking, so no one is declared dead. */
        for (int w = 0; w < NW; w++)
            heartbeat(b, W[w]);
    }
    cr_assert(got_eof);
    cr_assert_eq(ndelivered, TOTAL);
    cr_assert_eq(broker_redispatched(b), 0);
    cr_assert_eq(broker_duplicates(b), 0);
    cr_assert_eq(broker_in_system(b), 0);
    /* Both image workers did work (round robin among those with credit). */
    cr_assert_gt(served[0], TOTAL / 5, "served %d %d %d", served[0], served[1], served[2]);
    cr_assert_gt(served[1], TOTAL / 5, "served %d %d %d", served[0], served[1], served[2]);
    cr_assert_eq(served[0] + served[1], TOTAL);
    cr_assert_eq(served[2], TOTAL);
    cr_assert_eq(stats_get(st, "items_out"), 2 * TOTAL);
    cr_assert_leq(asked, 32 + TOTAL);
    cr_assert_eq(brec_count(), 0, "nothing left unaccounted");
    broker_destroy(&b);
    cr_assert_null(b);
    stats_destroy(&st);
}

/* A sample with an empty route goes straight to the batcher. */
Test(broker, empty_route_goes_to_the_batcher) {
    broker_t *b = mk_broker(8, 60000, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 10, -1);
    brec_on(b, "src", mk_sample(0, ""));
    broker_tick(b);
    proto_msg_t *m = brec_take("bat");
    cr_assert_not_null(m);
    cr_assert_eq(proto_msg_get_int(m, "seq", -1), 0);
    proto_msg_destroy(&m);
    brec_drop_all();
    broker_destroy(&b);
}

Test(broker, source_asked_for_at_most_max_inflight) {
    broker_t *b = mk_broker(16, 60000, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "w", "worker", "image", 4);
    broker_tick(b);
    long asked = 0;
    int64_t next = 0;
    for (int i = 0; i < 20; i++) {
        broker_tick(b);
        feed_source(b, &next, 1000, "image", &asked);
    }
    cr_assert_eq(asked, 16, "asked %ld with nothing answered", asked);
    cr_assert_eq(next, 16);
    cr_assert_eq(broker_in_system(b), 16);
    /* The worker holds 4; answering them (no batcher yet: they wait toward it) keeps the
     * system full, so the source is asked for nothing more. */
    for (proto_msg_t *m; (m = brec_take("w"));)
        answer(b, "w", m);
    broker_tick(b);
    cr_assert_eq(brec_pending("src"), 0);
    cr_assert_eq(broker_in_system(b), 16);
    /* The batcher takes 8: room for 8 more. */
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 8, -1);
    broker_tick(b);   /* sends 4 finished to the batcher */
    for (int i = 0; i < 10; i++) {
        for (proto_msg_t *m; (m = brec_take("w"));)
            answer(b, "w", m);
        broker_tick(b);
    }
    cr_assert_eq(brec_pending("bat"), 8);
    asked = 0;
    feed_source(b, &next, 1000, "image", &asked);
    cr_assert(asked > 0 && asked <= 8, "asked %ld", asked);
    cr_assert_eq(broker_in_system(b), 8 + asked);
    brec_drop_all();
    broker_destroy(&b);
}

/* ---------------------------------------------------------------- failures */

Test(broker, silent_worker_redispatched_and_late_answer_dropped) {
    stats_t *st = stats_new(NULL, NULL, "broker", "broker");
    broker_t *b = mk_broker(64, 50, NULL, st);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 2);
    for (int s = 0; s < 2; s++)
        brec_on(b, "src", mk_sample(s, "image"));
    broker_tick(b);
    proto_msg_t *h0 = brec_take("w1"), *h1 = brec_take("w1");
    cr_assert(h0 && h1);
    hello(b, "w2", "worker", "image", 2);
    /* w1 says nothing past dead_ms; w2 heartbeats. */
    for (int i = 0; i < 4; i++) {
        usleep(25000);
        heartbeat(b, "w2");
        broker_tick(b);
    }
    cr_assert_eq(broker_redispatched(b), 2);
    cr_assert_eq(stats_get(st, "redispatched"), 2);
    cr_assert_eq(stats_get(st, "task.caption.redispatched"), 1);
    cr_assert_eq(brec_pending("w1"), 0, "nothing more for a dead worker");
    proto_msg_t *r0 = brec_take("w2"), *r1 = brec_take("w2");
    cr_assert(r0 && r1, "w2 got both re-dispatched samples");
    /* Re-dispatched in the order they were held. */
    cr_assert_eq(proto_msg_get_int(r0, "seq", -1), proto_msg_get_int(h0, "seq", -2));
    answer(b, "w2", r0);
    answer(b, "w2", r1);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 2);
    /* w1 comes back and answers late: both answers are duplicates, dropped. */
    answer(b, "w1", h0);
    answer(b, "w1", h1);
    broker_tick(b);
    cr_assert_eq(broker_duplicates(b), 2);
    cr_assert_eq(stats_get(st, "duplicates_dropped"), 2);
    cr_assert_eq(brec_pending("bat"), 2, "a duplicate never reaches the batcher");
    /* w1 is alive again and gets new work by its credit. */
    brec_on(b, "src", mk_sample(2, "image"));
    brec_on(b, "src", mk_sample(3, "image"));
    brec_on(b, "src", mk_sample(4, "image"));
    broker_tick(b);
    cr_assert_eq(brec_pending("w1") + brec_pending("w2"), 3);
    cr_assert_geq(brec_pending("w1"), 1);
    brec_drop_all();
    broker_destroy(&b);
    stats_destroy(&st);
}

/* A worker declared dead that was only stalled still holds what it had: when it comes
 * back (a heartbeat, no new hello) those items keep taking its credit until it answers
 * them, so it never holds more than its credits; a new hello (a restart) frees them. */
Test(broker, stalled_worker_back_never_over_its_credits) {
    broker_t *b = mk_broker(64, 30, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 2);
    hello(b, "w2", "worker", "image", 2);
    for (int s = 0; s < 4; s++)
        brec_on(b, "src", mk_sample(s, "image"));
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 2);
    proto_msg_t *h0 = brec_take("w1"), *h1 = brec_take("w1");
    brec_drop_all();   /* w2's two: it stays silent too, out of the way */
    /* w1 and w2 say nothing past dead_ms. */
    usleep(45000);
    broker_tick(b);
    cr_assert_geq(broker_redispatched(b), 2);
    brec_drop_all();
    /* w1 is back (a heartbeat): it still holds h0 and h1, so it gets nothing new. */
    for (int s = 4; s < 8; s++)
        brec_on(b, "src", mk_sample(s, "image"));
    heartbeat(b, "w1");
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 0, "a worker back from a stall got work on top of the %d "
                 "items it still holds", 2);
    /* One late answer frees one credit. */
    answer(b, "w1", h0);
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 1);
    /* A restart (hello) frees the rest: h1 is gone with the old process. */
    proto_msg_destroy(&h1);
    brec_drop_all();   /* the new process never saw what was sent to the old one */
    hello(b, "w1", "worker", "image", 2);
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 2, "after its hello w1 gets its full credit of 2");
    brec_drop_all();
    broker_destroy(&b);
}

/* The dead worker answers before the re-dispatched copy: its answer counts, the copy's
 * answer becomes the duplicate, and the second worker's credit comes back. */
Test(broker, late_answer_first_accepted_copy_dropped) {
    broker_t *b = mk_broker(64, 50, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 1);
    brec_on(b, "src", mk_sample(0, "image"));
    broker_tick(b);
    proto_msg_t *h = brec_take("w1");
    cr_assert_not_null(h);
    hello(b, "w2", "worker", "image", 1);
    for (int i = 0; i < 4; i++) {
        usleep(25000);
        heartbeat(b, "w2");
        broker_tick(b);
    }
    proto_msg_t *copy = brec_take("w2");
    cr_assert_not_null(copy);
    answer(b, "w1", h);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 1);
    answer(b, "w2", copy);
    broker_tick(b);
    cr_assert_eq(broker_duplicates(b), 1);
    cr_assert_eq(brec_pending("bat"), 1);
    brec_on(b, "src", mk_sample(1, "image"));
    brec_on(b, "src", mk_sample(2, "image"));
    broker_tick(b);
    cr_assert_eq(brec_pending("w2"), 1, "w2's credit came back with its (duplicate) answer");
    brec_drop_all();
    broker_destroy(&b);
}

/* A stale reject (for a hop the sample already left) must neither reject the sample nor
 * keep the rejecting worker's credit. */
Test(broker, stale_reject_is_a_duplicate) {
    broker_t *b = mk_broker(64, 50, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 1);
    hello(b, "t1", "worker", "tokenize", 1);
    brec_on(b, "src", mk_sample(0, "image,tokenize"));
    broker_tick(b);
    proto_msg_t *h = brec_take("w1");
    cr_assert_not_null(h);
    hello(b, "w2", "worker", "image", 1);
    for (int i = 0; i < 4; i++) {
        usleep(25000);
        heartbeat(b, "w2");
        heartbeat(b, "t1");
        broker_tick(b);
    }
    proto_msg_t *copy = brec_take("w2");
    cr_assert_not_null(copy);
    answer(b, "w1", h);           /* the late answer is good: on to tokenize */
    broker_tick(b);
    proto_msg_t *t = brec_take("t1");
    cr_assert_not_null(t);
    reject(b, "w2", copy, "image");   /* stale: the sample is past the image tier */
    broker_tick(b);
    cr_assert_eq(broker_duplicates(b), 1);
    cr_assert_eq(brec_pending("bat"), 0, "the stale reject is not forwarded");
    answer(b, "t1", t);
    broker_tick(b);
    proto_msg_t *done = brec_take("bat");
    cr_assert_not_null(done);
    cr_assert_eq(proto_msg_kind(done), PROTO_SAMPLE, "the sample is delivered, not rejected");
    proto_msg_destroy(&done);
    brec_on(b, "src", mk_sample(1, "image,tokenize"));
    broker_tick(b);
    cr_assert_eq(brec_pending("w2") + brec_pending("w1"), 1);
    brec_drop_all();
    broker_destroy(&b);
}

Test(broker, restarted_worker_redispatched) {
    broker_t *b = mk_broker(64, 60000, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 3);
    for (int s = 0; s < 3; s++)
        brec_on(b, "src", mk_sample(s, "image"));
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 3);
    brec_drop_all();   /* the old process died with what it held */
    hello(b, "w1", "worker", "image", 3);
    cr_assert_eq(broker_redispatched(b), 3);
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 3, "the new process gets them again");
    for (proto_msg_t *m; (m = brec_take("w1"));)
        answer(b, "w1", m);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 3);
    cr_assert_eq(broker_duplicates(b), 0);
    brec_drop_all();
    broker_destroy(&b);
}

/* ---------------------------------------------------------------- rejects, eof, batcher */

/* A sample that every worker holding it dies with (a decoder crash on that input) is
 * rejected with the reason after BROKER_POISON_HOLDERS of them, instead of going round
 * the tier until launch gives up on every worker; the others are re-dispatched as before. */
Test(broker, poison_sample_rejected_after_killing_its_holders) {
    char dir[] = "/tmp/ofa-broker-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/rejects.jsonl", dir);
    stats_t *st = stats_new(NULL, NULL, "broker", "broker");
    broker_t *b = mk_broker(64, 60000, path, st);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 1);
    brec_on(b, "src", mk_sample(0, "image"));   /* the poison */
    brec_on(b, "src", mk_sample(1, "image"));
    broker_tick(b);
    for (int k = 1; k <= BROKER_POISON_HOLDERS; k++) {
        proto_msg_t *m = brec_take("w1");
        cr_assert(m, "restart %d: the worker got nothing", k);
        cr_assert_eq(proto_msg_get_int(m, "seq", -1), 0, "the poison goes out first");
        proto_msg_destroy(&m);
        cr_assert_eq(brec_pending("bat"), 0);
        hello(b, "w1", "worker", "image", 1);   /* it crashed on it and restarted */
        broker_tick(b);
    }
    /* The third death: seq 0 is rejected with the reason; seq 1 goes to the worker. */
    proto_msg_t *r = brec_take("bat");
    cr_assert(r && proto_msg_kind(r) == PROTO_REJECT);
    cr_assert_eq(proto_msg_get_int(r, "seq", -1), 0);
    const char *why = proto_msg_get_str(r, "reason");
    cr_assert(why && strstr(why, "3 image workers died or restarted while holding this sample"),
              "%s", why ? why : "(none)");
    proto_msg_destroy(&r);
    proto_msg_t *m = brec_take("w1");
    cr_assert(m && proto_msg_get_int(m, "seq", -1) == 1);
    answer(b, "w1", m);
    broker_tick(b);
    proto_msg_t *d = brec_take("bat");
    cr_assert(d && proto_msg_kind(d) == PROTO_SAMPLE && proto_msg_get_int(d, "seq", -1) == 1);
    proto_msg_destroy(&d);
    cr_assert_eq(stats_get(st, "poison"), 1);
    cr_assert_eq(stats_get(st, "redispatched"), 2, "two re-dispatches before the reject");
    broker_destroy(&b);
    size_t len;
    char *text = util_read_file(path, &len, NULL, 0);
    cr_assert(text && strstr(text, "\"seq\": 0") && strstr(text, "taken to be what crashes them"),
              "%s", text ? text : "(no rejects.jsonl)");
    free(text);
    unlink(path);
    rmdir(dir);
    stats_destroy(&st);
}

Test(broker, rejects_written_and_forwarded) {
    char dir[] = "/tmp/ofa-broker-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/rejects.jsonl", dir);
    stats_t *st = stats_new(NULL, NULL, "broker", "broker");
    broker_t *b = mk_broker(64, 60000, path, st);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 100, -1);
    hello(b, "w1", "worker", "image", 2);
    brec_on(b, "src", mk_sample(0, "image"));
    broker_tick(b);
    reject(b, "w1", brec_take("w1"), "image");
    /* A row the source could not read. */
    reject(b, "src", mk_sample(1, "image"), "source");
    broker_tick(b);
    proto_msg_t *r0 = brec_take("bat"), *r1 = brec_take("bat");
    cr_assert(r0 && r1);
    cr_assert_eq(proto_msg_kind(r0), PROTO_REJECT);
    cr_assert_eq(proto_msg_kind(r1), PROTO_REJECT);
    cr_assert_eq(proto_msg_get_int(r0, "seq", -1), 0);
    cr_assert_eq(proto_msg_get_int(r1, "seq", -1), 1);
    proto_msg_destroy(&r0);
    proto_msg_destroy(&r1);
    cr_assert_eq(stats_get(st, "rejected"), 2);
    cr_assert_eq(stats_get(st, "task.caption.rejected"), 1);
    cr_assert_eq(stats_get(st, "task.vqa.rejected"), 1);
    /* The worker's credit came back with its reject. */
    brec_on(b, "src", mk_sample(2, "image"));
    brec_on(b, "src", mk_sample(4, "image"));
    broker_tick(b);
    cr_assert_eq(brec_pending("w1"), 2);
    broker_destroy(&b);
    char rerr[256];
    size_t len;
    char *text = util_read_file(path, &len, rerr, sizeof rerr);
    cr_assert_not_null(text, "%s", rerr);
    cr_assert(strstr(text, "{\"task\": \"caption\", \"id\": 1000, \"seq\": 0, \"row\": 0, "
                           "\"split\": \"train\", \"stage\": \"image\", \"reason\": "
                           "\"column img: corrupt JPEG: \\\"bad\\\" huffman\\u0009table\"}\n"),
              "%s", text);
    cr_assert(strstr(text, "\"task\": \"vqa\", \"id\": 1001, \"seq\": 1"), "%s", text);
    cr_assert(strstr(text, "\"stage\": \"source\""), "%s", text);
    int lines = 0;
    for (char *c = text; *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 2);
    free(text);
    unlink(path);
    rmdir(dir);
    brec_drop_all();
    stats_destroy(&st);
}

Test(broker, eof_only_after_everything_before_it) {
    broker_t *b = mk_broker(64, 60000, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    hello(b, "w1", "worker", "image", 8);
    for (int s = 0; s < 3; s++)
        brec_on(b, "src", mk_sample(s, "image"));
    eof(b, 3);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 0);
    proto_msg_t *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = brec_take("w1");
    answer(b, "w1", h[2]);
    answer(b, "w1", h[0]);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 0, "the batcher has no credit yet");
    credit(b, "bat", 1, -1);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 1);
    credit(b, "bat", 5, -1);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 2, "seq 1 is still at a worker: no eof");
    answer(b, "w1", h[1]);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 4);
    proto_msg_t *m;
    int64_t order[3];
    for (int i = 0; i < 3; i++) {
        m = brec_take("bat");
        cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE);
        order[i] = proto_msg_get_int(m, "seq", -1);
        proto_msg_destroy(&m);
    }
    cr_assert_eq(order[0], 0, "the lowest finished seq goes first");
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 1);
    m = brec_take("bat");
    cr_assert_eq(proto_msg_kind(m), PROTO_CONTROL);
    cr_assert_str_eq(proto_msg_op(m), "eof");
    cr_assert_eq(proto_msg_get_int(m, "count", -1), 3);
    proto_msg_destroy(&m);
    /* After eof the source is asked for nothing more, and eof is passed on once. */
    brec_drop_all();
    broker_tick(b);
    broker_tick(b);
    cr_assert_eq(brec_count(), 0);
    broker_destroy(&b);
}

Test(broker, want_seq_sent_without_credit) {
    broker_t *b = mk_broker(64, 60000, NULL, NULL);
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    hello(b, "w1", "worker", "image", 8);
    for (int s = 0; s < 4; s++)
        brec_on(b, "src", mk_sample(s, "image"));
    broker_tick(b);
    proto_msg_t *h[4];
    for (int i = 0; i < 4; i++)
        h[i] = brec_take("w1");
    credit(b, "bat", 2, -1);
    answer(b, "w1", h[1]);
    answer(b, "w1", h[2]);
    answer(b, "w1", h[3]);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 2, "seq 1 and 2 use the batcher's two credits");
    answer(b, "w1", h[0]);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 2, "no credit left");
    /* The batcher's window is full of later seqs; it names the one it waits for. */
    credit(b, "bat", 0, 0);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 3);
    proto_msg_t *m;
    while ((m = brec_take("bat"))) {
        if (!brec_pending("bat"))
            cr_assert_eq(proto_msg_get_int(m, "seq", -1), 0);
        proto_msg_destroy(&m);
    }
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 0, "seq 3 waits for credit");
    /* want_seq naming a seq that is not ready sends nothing. */
    credit(b, "bat", 0, 7);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 0);
    brec_drop_all();
    broker_destroy(&b);
}

Test(broker, garbage_counted_and_ignored) {
    stats_t *st = stats_new(NULL, NULL, "broker", "broker");
    broker_t *b = mk_broker(8, 60000, NULL, st);
    broker_on_garbage(b, "x", 1, "not a msgpack map");
    brec_on(b, "nobody", mk_sample(0, "image"));            /* a sample from a peer with no role */
    brec_on(b, "nobody", proto_msg_new(PROTO_BATCH, "t"));   /* a kind the broker never takes */
    brec_on(b, "nobody", proto_msg_new(PROTO_STATS, NULL));
    cr_assert_eq(stats_get(st, "malformed"), 4);
    /* A credit from a non-batcher and an eof from a non-source change nothing. */
    credit(b, "nobody", 5, 0);
    proto_msg_t *e = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(e, "eof");
    brec_on(b, "nobody", e);
    hello(b, "odd", "conductor", NULL, 0);              /* unknown role: ignored */
    /* The source repeating a seq, or sending one without a seq: dropped. */
    hello(b, "src", "source", NULL, 0);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 10, -1);
    brec_on(b, "src", mk_sample(0, ""));
    hello(b, "w", "worker", "image", 1);
    brec_on(b, "src", mk_sample(1, "image"));
    brec_on(b, "src", mk_sample(1, "image"));
    proto_msg_t *noseq = mk_sample(2, "");
    proto_msg_remove(noseq, "seq");
    brec_on(b, "src", noseq);
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 1);
    cr_assert_eq(brec_pending("w"), 1);
    cr_assert_eq(brec_pending("nobody"), 0);
    cr_assert_eq(brec_pending("odd"), 0);
    /* The run goes on. */
    answer(b, "w", brec_take("w"));
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 2);
    brec_drop_all();
    broker_destroy(&b);
    stats_destroy(&st);
}

/* ---------------------------------------------------------------- random failures */

/* A long random run: workers answer in random order, reject some samples, restart
 * (answering part of what they held just before), and stall past dead_ms and answer
 * late. Whatever happens, the batcher gets every seq exactly once (a processed sample
 * that went through both tiers, or a reject), then eof; a worker never holds more than
 * its credits of what it was sent since it (re)joined. */
#define RW 4
static void run_random(uint64_t seed) {
    broker_t *b = mk_broker(24, 30, NULL, NULL);
    static const char *W[RW] = {"i1", "i2", "i3", "t1"};
    static const char *TIER[RW] = {"image", "image", "image", "tokenize"};
    static const int CRED[RW] = {2, 3, 1, 2};
    hello(b, "src", "source", NULL, 0);
    for (int w = 0; w < RW; w++)
        hello(b, W[w], "worker", TIER[w], CRED[w]);
    hello(b, "bat", "batcher", NULL, 0);
    credit(b, "bat", 1000000, -1);
    enum { TOTAL = 1500, MAXH = 64 };
    static int got[TOTAL];
    memset(got, 0, sizeof got);
    proto_msg_t *inbox[RW][MAXH];     /* sent since the worker (re)joined, unanswered */
    proto_msg_t *stalled[RW][MAXH];   /* held across a stall: answered late */
    int nin[RW] = {0}, nst[RW] = {0};
    int stalling = -1;
    double stall_until = 0;
    int64_t next = 0;
    long ndone = 0;
    int eof_sent = 0, got_eof = 0, stalls = 0, restarts = 0;
    util_rng_t rng = {seed};
    for (int round = 0; round < 200000 && !got_eof; round++) {
        broker_tick(b);
        feed_source(b, &next, TOTAL, "image,tokenize", NULL);
        if (next == TOTAL && !eof_sent) {
            eof(b, TOTAL);
            eof_sent = 1;
        }
        for (int w = 0; w < RW; w++) {
            for (proto_msg_t *m; (m = brec_take(W[w]));) {
                cr_assert_lt(nin[w], CRED[w], "%s holds more than its credits", W[w]);
                inbox[w][nin[w]++] = m;
            }
            if (w == stalling)
                continue;
            /* Answer some: 1 in 20 a reject. */
            for (int i = 0; i < nin[w];) {
                if (util_rng_next(&rng) % 2) {
                    i++;
                    continue;
                }
                proto_msg_t *m = inbox[w][i];
                inbox[w][i] = inbox[w][--nin[w]];
                if (util_rng_next(&rng) % 20 == 0)
                    reject(b, W[w], m, TIER[w]);
                else
                    answer(b, W[w], m);
            }
            /* Late answers of what was held across a stall. The broker counts answers by
             * (seq, hop), not by copy: when the worker got the same sample again after
             * it came back, the late answer answers that copy too (which the worker
             * then answers once more, as a duplicate). */
            while (nst[w] && util_rng_next(&rng) % 2) {
                proto_msg_t *m = stalled[w][--nst[w]];
                int64_t seq = proto_msg_get_int(m, "seq", -1);
                int64_t hop = proto_msg_get_int(m, "@hop", -1);
                if (util_rng_next(&rng) % 10 == 0)
                    reject(b, W[w], m, TIER[w]);
                else
                    answer(b, W[w], m);
                for (int i = 0; i < nin[w]; i++)
                    if (proto_msg_get_int(inbox[w][i], "seq", -2) == seq &&
                        proto_msg_get_int(inbox[w][i], "@hop", -2) == hop) {
                        stalled[w][nst[w]++] = inbox[w][i];
                        inbox[w][i] = inbox[w][--nin[w]];
                        break;
                    }
            }
            heartbeat(b, W[w]);
            /* A restart: part of what it held is answered just before, the rest is lost. */
            if (util_rng_next(&rng) % 150 == 0) {
                restarts++;
                for (int i = 0; i < nin[w]; i++) {
                    if (util_rng_next(&rng) % 2)
                        answer(b, W[w], inbox[w][i]);
                    else
                        proto_msg_destroy(&inbox[w][i]);
                }
                nin[w] = 0;
                hello(b, W[w], "worker", TIER[w], CRED[w]);
            }
        }
        /* Now and then one worker stalls past dead_ms, its items move to others. */
        if (stalling < 0 && stalls < 8 && util_rng_next(&rng) % 100 == 0) {
            stalling = (int)(util_rng_next(&rng) % RW);
            stall_until = util_now() + 0.06;
            stalls++;
        }
        if (stalling >= 0 && util_now() > stall_until) {
            /* Declared dead by now: what it holds is answered late, from now on. */
            for (int i = 0; i < nin[stalling]; i++)
                stalled[stalling][nst[stalling]++] = inbox[stalling][i];
            nin[stalling] = 0;
            stalling = -1;
        }
        if (stalling >= 0)
            usleep(2000);
        for (proto_msg_t *m; (m = brec_take("bat"));) {
            if (proto_msg_kind(m) == PROTO_CONTROL) {
                cr_assert_str_eq(proto_msg_op(m), "eof");
                cr_assert_eq(ndone, TOTAL, "eof after %ld of %d", ndone, TOTAL);
                got_eof = 1;
            } else {
                int64_t seq = proto_msg_get_int(m, "seq", -1);
                cr_assert(seq >= 0 && seq < TOTAL);
                cr_assert_eq(got[seq], 0, "seq %lld reached the batcher twice", (long long)seq);
                got[seq] = 1;
                ndone++;
                if (proto_msg_kind(m) == PROTO_SAMPLE) {
                    cr_assert_eq(proto_msg_get_int(m, "@hop", -1), 2);
                    cr_assert_eq(proto_msg_get_int(m, "by.t1", 0), 1);
                } else {
                    cr_assert_eq(proto_msg_kind(m), PROTO_REJECT);
                }
            }
            proto_msg_destroy(&m);
        }
    }
    cr_assert(got_eof, "no eof: %ld of %d delivered, %ld in system", ndone, TOTAL,
              broker_in_system(b));
    cr_assert_gt(stalls, 0);
    cr_assert_gt(broker_redispatched(b), 0);
    cr_log_info("random run %llu: %d stalls, %d restarts, %ld redispatched, %ld duplicates",
                (unsigned long long)seed, stalls, restarts, broker_redispatched(b),
                broker_duplicates(b));
    /* Every copy still out is answered (each a duplicate now; those a worker holds by
     * a stale reject, which carries no hop): then every worker has all its credits back, so fresh samples fill every worker's credits exactly. */
    for (int w = 0; w < RW; w++) {
        for (int i = 0; i < nin[w]; i++)
            reject(b, W[w], inbox[w][i], TIER[w]);
        for (int i = 0; i < nst[w]; i++)
            answer(b, W[w], stalled[w][i]);
        heartbeat(b, W[w]);
    }
    broker_tick(b);
    cr_assert_eq(brec_pending("bat"), 0, "duplicates never reach the batcher");
    brec_drop_all();
    for (int k = 0; k < 20; k++)
        brec_on(b, "src", mk_sample(TOTAL + k, "image"));
    broker_tick(b);
    for (int w = 0; w < 3; w++)
        cr_assert_eq(brec_pending(W[w]), CRED[w], "seed %llu: %s has %d of its %d credits back",
                     (unsigned long long)seed, W[w], brec_pending(W[w]), CRED[w]);
    brec_drop_all();
    broker_destroy(&b);
}

Test(broker, random_failures_keep_exactly_once, .timeout = 60) {
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_random(seed);
}
