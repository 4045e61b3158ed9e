/* test_faults.c: the pieces that let a run survive a SIGKILLed batcher, without
 * sockets: the broker keeps what it sent to an acknowledging batcher until the ack and
 * sends it again to a restarted one (with "start"), the batcher library restarted at a
 * batch's seq0 cuts the same batches as an uninterrupted one, and the consumers' set of
 * samples already taken (common/seen.h) drops duplicates within its bound. */
#include "batcher.h"
#include "broker.h"
#include "broker_rec.h"
#include "seen.h"
#include "util.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- broker's fake peers */

static void hello(broker_t *b, const char *id, const char *role, int acks) {
    brec_hello(b, id, role, NULL, 0, acks);
}

static void credit(broker_t *b, int n) {
    brec_credit(b, "bat", n, -1);
}

/* n samples with an empty route (straight to the batcher), then the source's eof. */
static void feed(broker_t *b, int n) {
    for (int64_t seq = 0; seq < n; seq++) {
        proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "caption");
        proto_msg_add_id(m, (uint64_t)seq);
        proto_msg_set_int(m, "seq", seq);
        proto_msg_set_int(m, "slot", seq / 4);
        proto_msg_set_str(m, "@route", "");
        proto_msg_set_int(m, "@hop", 0);
        brec_on(b, "src", m);
    }
    proto_msg_t *e = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(e, "eof");
    proto_msg_set_int(e, "count", n);
    brec_on(b, "src", e);
}

/* Take every message sent to the batcher: the seqs of the samples into seqs (in order),
 * and whether an eof came (last). Returns the number of samples. */
static int take_batcher(int64_t *seqs, int max, int *eof) {
    int n = 0;
    *eof = 0;
    for (proto_msg_t *m; (m = brec_take("bat"));) {
        if (proto_msg_kind(m) == PROTO_CONTROL) {
            cr_assert_str_eq(proto_msg_op(m), "eof");
            *eof = 1;
        } else {
            cr_assert_eq(*eof, 0, "a sample after the eof");
            cr_assert_lt(n, max);
            seqs[n++] = proto_msg_get_int(m, "seq", -1);
        }
        proto_msg_destroy(&m);
    }
    return n;
}

Test(faults, broker_resends_what_a_killed_batcher_had_not_acknowledged) {
    broker_opts_t o = {.max_inflight = 64, .dead_ms = 2000};
    broker_t *b = broker_new(&o, brec_send, NULL, NULL);
    hello(b, "src", "source", 0);
    hello(b, "bat", "batcher", 1);
    proto_msg_t *st0 = brec_take("bat");
    cr_assert_not_null(st0, "an acknowledging batcher is told where to start");
    cr_assert_str_eq(proto_msg_op(st0), "start");
    cr_assert_eq(proto_msg_get_int(st0, "seq", -1), 0);
    cr_assert_eq(proto_msg_get_int(st0, "batch", -1), 0);
    proto_msg_destroy(&st0);
    feed(b, 12);
    credit(b, 100);
    broker_tick(b);
    int64_t seqs[64];
    int eof;
    cr_assert_eq(take_batcher(seqs, 64, &eof), 12);
    cr_assert(eof, "the eof follows the last sample");
    cr_assert_eq(broker_unacked(b), 12, "everything is kept until acknowledged");

    /* Batches up to seq 5 reached their consumers (batch index 2 is the first open). */
    brec_ack(b, 5, 2);
    cr_assert_eq(broker_unacked(b), 7);
    brec_ack(b, 3, 1);   /* stale: acknowledgements only move forward */
    cr_assert_eq(broker_unacked(b), 7);

    /* The batcher dies and a new one says hello under the same identity. */
    hello(b, "bat", "batcher", 1);
    proto_msg_t *st = brec_take("bat");
    cr_assert_not_null(st, "a restarted batcher is told where to start");
    cr_assert_str_eq(proto_msg_op(st), "start");
    cr_assert_eq(proto_msg_get_int(st, "seq", -1), 5);
    cr_assert_eq(proto_msg_get_int(st, "batch", -1), 2);
    proto_msg_destroy(&st);
    cr_assert_eq(broker_batcher_resent(b), 7);
    /* Nothing goes out before the new batcher grants credit; then seq 5..11 and eof. */
    broker_tick(b);
    cr_assert_null(brec_take("bat"), "the old batcher's credit died with it");
    credit(b, 100);
    broker_tick(b);
    cr_assert_eq(take_batcher(seqs, 64, &eof), 7);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(seqs[i], 5 + i, "resent in seq order");
    cr_assert(eof, "the end of data is forwarded again");
    brec_ack(b, 12, 3);
    cr_assert_eq(broker_unacked(b), 0);
    brec_drop_all();
    broker_destroy(&b);
}

Test(faults, broker_keeps_nothing_for_a_batcher_that_does_not_ack) {
    broker_opts_t o = {.max_inflight = 64, .dead_ms = 2000};
    broker_t *b = broker_new(&o, brec_send, NULL, NULL);
    hello(b, "src", "source", 0);
    hello(b, "bat", "batcher", 0);
    feed(b, 8);
    credit(b, 100);
    broker_tick(b);
    int64_t seqs[16];
    int eof;
    cr_assert_eq(take_batcher(seqs, 16, &eof), 8);
    cr_assert_eq(broker_unacked(b), 0, "memory stays bounded without acks");
    hello(b, "bat", "batcher", 0);
    cr_assert_null(brec_take("bat"), "nothing to start from or resend");
    brec_drop_all();
    broker_destroy(&b);
}

/* ---------------------------------------------------------------- batcher library */

/* A finished sample (src of length 2 + seq % 3, tgt 2) or a reject, of slot `slot`. */
static proto_msg_t *mk_item(int64_t seq, int64_t slot, int reject) {
    proto_msg_t *m = proto_msg_new(reject ? PROTO_REJECT : PROTO_SAMPLE, "a");
    proto_msg_add_id(m, 1000 + (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", slot);
    proto_msg_set_str(m, "split", "train");
    if (reject)
        return m;
    int32_t tok[8];
    uint8_t mod[8] = {0};
    for (int i = 0; i < 8; i++)
        tok[i] = (int32_t)(10 * seq + i + 5);
    int64_t ss[1] = {2 + seq % 3}, ts[1] = {2};
    proto_msg_set_tensor(m, "src_tok", PROTO_I32, 1, ss, tok);
    proto_msg_set_tensor(m, "src_mod", PROTO_U8, 1, ss, mod);
    proto_msg_set_tensor(m, "tgt_in", PROTO_I32, 1, ts, tok);
    proto_msg_set_tensor(m, "tgt_out", PROTO_I32, 1, ts, tok);
    return m;
}

/* 20 seqs: slots of 3; slot 2 (seq 6..8) all rejected, seq 10 rejected. */
static int64_t slot_of(int64_t seq) { return seq / 3; }
static int rejected(int64_t seq) { return (seq >= 6 && seq <= 8) || seq == 10; }

/* Run a batcher from seq `from` (batcher_start) to 20 in the order from..19; the batches
 * (encoded) and their seq0 into the arrays; the open seq after each item into open[]. */
static int run_from(int64_t from, char **bytes, size_t *lens, int64_t *seq0, int64_t *open) {
    batcher_t *bt = batcher_new();
    if (from)
        cr_assert_eq(batcher_start(bt, from), 0);
    int nb = 0;
    for (int64_t s = from; s < 20; s++) {
        batcher_add(bt, mk_item(s, slot_of(s), rejected(s)));
        if (s == 19)
            batcher_set_eof(bt, 20);
        for (proto_msg_t *b; (b = batcher_next(bt));) {
            seq0[nb] = proto_msg_get_int(b, "seq0", -1);
            bytes[nb] = proto_encode_bytes(b, &lens[nb]);
            nb++;
            proto_msg_destroy(&b);
        }
        open[s] = batcher_open_seq(bt);
    }
    cr_assert_eq(batcher_start(bt, 3), -1, "no start once the walk has begun");
    cr_assert(batcher_done(bt));
    batcher_destroy(&bt);
    return nb;
}

Test(faults, batcher_restarted_at_a_seq0_cuts_the_same_batches) {
    char *a[16], *c[16];
    size_t la[16], lc[16];
    int64_t s0a[16], s0c[16], open[20];
    int na = run_from(0, a, la, s0a, open);
    cr_assert_eq(na, 6, "slots 0, 1, 3, 4, 5, 6 (slot 2 is all rejects): %d batches", na);
    /* seq0 of each batch is the first seq of its slot, rejects included. */
    int64_t want0[6] = {0, 3, 9, 12, 15, 18};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(s0a[i], want0[i], "batch %d: seq0 %lld", i, (long long)s0a[i]);
    /* The open seq: the slot being collected (slot 2, all rejects, is open until
     * slot 3 starts at seq 9), then the end. */
    cr_assert_eq(open[4], 3);
    cr_assert_eq(open[7], 6);
    cr_assert_eq(open[9], 9);
    cr_assert_eq(open[19], 20);
    /* A batcher restarted at batch 2's seq0 produces batches 2.. byte for byte. */
    int nc = run_from(9, c, lc, s0c, open);
    cr_assert_eq(nc, 4);
    for (int i = 0; i < nc; i++) {
        cr_assert_eq(lc[i], la[2 + i]);
        cr_assert_eq(memcmp(c[i], a[2 + i], lc[i]), 0, "batch %d differs after a restart", 2 + i);
    }
    for (int i = 0; i < na; i++)
        free(a[i]);
    for (int i = 0; i < nc; i++)
        free(c[i]);
}

/* ---------------------------------------------------------------- seen set */

Test(faults, seen_drops_duplicates_per_epoch_and_split) {
    seen_t *s = seen_new();
    cr_assert_eq(seen_add(s, 7, 0, 0), 1);
    cr_assert_eq(seen_add(s, 7, 0, 0), 0, "the same sample in the same epoch");
    cr_assert_eq(seen_add(s, 7, 1, 0), 1, "the next epoch counts again");
    cr_assert_eq(seen_add(s, 7, 0, 1), 1, "the validation split is another key");
    cr_assert(seen_has(s, 7, 1, 0));
    cr_assert_not(seen_has(s, 8, 0, 0));
    seen_destroy(&s);
    cr_assert_null(s);
}

Test(faults, seen_forgets_only_keys_older_than_its_bound) {
    seen_t *s = seen_new();
    const uint64_t N = 4 * SEEN_KEEP;
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(seen_add(s, (2ull << 40) | i, (int64_t)(i / 1000), 0), 1);
    cr_assert_leq(seen_count(s), 2 * SEEN_KEEP, "%zu keys held", seen_count(s));
    /* The last SEEN_KEEP keys are all still known (a duplicate of any is dropped). */
    for (uint64_t i = N - SEEN_KEEP; i < N; i++)
        cr_assert(seen_has(s, (2ull << 40) | i, (int64_t)(i / 1000), 0), "key %llu lost",
                  (unsigned long long)i);
    cr_assert_not(seen_has(s, 2ull << 40, 0, 0), "the oldest key is forgotten");
    seen_destroy(&s);
}
