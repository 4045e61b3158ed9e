/* test_batcher.c: the batcher library (stages/batcher/batcher.h) without sockets:
 * order restored from any arrival order, rejects skipped, duplicates and malformed
 * messages dropped, padding values, images, refs, and byte-identical batches whatever
 * the arrival order (the determinism contract). Then the programs over ZeroMQ, with the
 * test playing their peers: ofa-batcher between a broker and two consumer ranks, and
 * ofa-sink behind a batcher (checks, duplicates, delivered ids). */
#include "batcher.h"
#include "child_proc.h"
#include "util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

/* A finished sample as the tokenize tier leaves it: src of length s, tgt of length t,
 * tokens derived from seq so that every position is recognisable. */
static proto_msg_t *mk_sample(const char *task, int64_t seq, int64_t slot, int s, int t) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, task);
    proto_msg_add_id(m, 1000 + (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", slot);
    proto_msg_set_int(m, "epoch", 0);
    proto_msg_set_str(m, "split", "train");
    int32_t tok[64], tin[64], tout[64];
    uint8_t mod[64];
    /* Token values only need to differ between samples: wrap in unsigned arithmetic, so
     * that a seq near INT64_MAX (the malformed-message test) is no overflow. */
    uint64_t u = (uint64_t)seq;
    for (int i = 0; i < s; i++) {
        tok[i] = (int32_t)(uint32_t)(100 * u + (uint64_t)i + 5);
        mod[i] = (uint8_t)(i % 2);
    }
    for (int i = 0; i < t; i++) {
        tin[i] = (int32_t)(uint32_t)(200 * u + (uint64_t)i + 5);
        tout[i] = (int32_t)(uint32_t)(300 * u + (uint64_t)i + 5);
    }
    int64_t ss[1] = {s}, ts[1] = {t};
    proto_msg_set_tensor(m, "src_tok", PROTO_I32, 1, ss, tok);
    proto_msg_set_tensor(m, "src_mod", PROTO_U8, 1, ss, mod);
    proto_msg_set_tensor(m, "tgt_in", PROTO_I32, 1, ts, tin);
    proto_msg_set_tensor(m, "tgt_out", PROTO_I32, 1, ts, tout);
    char ref[32];
    snprintf(ref, sizeof ref, "ref %lld", (long long)seq);
    proto_msg_set_str(m, "ref", ref);
    return m;
}

static proto_msg_t *mk_reject(const char *task, int64_t seq, int64_t slot) {
    proto_msg_t *m = proto_msg_new(PROTO_REJECT, task);
    proto_msg_add_id(m, 1000 + (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", slot);
    proto_msg_set_str(m, "reason", "column img: corrupt JPEG");
    return m;
}

static void add_img(proto_msg_t *m, int np, int d, uint8_t fill) {
    uint8_t *px = util_malloc((size_t)(np * d));
    memset(px, fill, (size_t)(np * d));
    int64_t sh[2] = {np, d};
    proto_msg_take_tensor(m, "img", PROTO_U8, 2, sh, px);
    proto_msg_set_int(m, "img.grid", 2);
}

/* 10 samples in 3 slots: slot 0 = seq 0..3 (task a), slot 1 = seq 4..6 (task b, seq 5
 * rejected), slot 2 = seq 7..9 (task a). */
static const int64_t SLOT_OF[10] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2};

static proto_msg_t *mk_item(int64_t seq) {
    const char *task = SLOT_OF[seq] == 1 ? "b" : "a";
    if (seq == 5)
        return mk_reject(task, seq, SLOT_OF[seq]);
    return mk_sample(task, seq, SLOT_OF[seq], 2 + (int)(seq % 4), 1 + (int)(seq % 3));
}

/* Feed the 10 items in the given order, then eof; return the encoded batches. */
static int run_order(const int *order, char **bytes, size_t *lens, int max) {
    batcher_t *bt = batcher_new();
    for (int i = 0; i < 10; i++)
        batcher_add(bt, mk_item(order[i]));
    batcher_set_eof(bt, 10);
    int n = 0;
    for (proto_msg_t *b; (b = batcher_next(bt));) {
        cr_assert_lt(n, max);
        bytes[n] = proto_encode_bytes(b, &lens[n]);
        n++;
        proto_msg_destroy(&b);
    }
    cr_assert(batcher_done(bt));
    cr_assert_eq(batcher_duplicates(bt), 0);
    batcher_destroy(&bt);
    cr_assert_null(bt);
    return n;
}

Test(batcher, order_restored_and_rejects_skipped) {
    int rev[10];
    for (int i = 0; i < 10; i++)
        rev[i] = 9 - i;
    batcher_t *bt = batcher_new();
    /* Reverse arrival: nothing can be cut until seq 0 comes last. */
    for (int i = 0; i < 9; i++) {
        batcher_add(bt, mk_item(rev[i]));
        cr_assert_null(batcher_next(bt));
        cr_assert(batcher_waiting_for_gap(bt));
    }
    cr_assert_eq(batcher_next_seq(bt), 0);
    batcher_add(bt, mk_item(0));
    /* Slots 0 and 1 are closed by the first seq of the next slot; slot 2 waits for eof. */
    proto_msg_t *b0 = batcher_next(bt), *b1 = batcher_next(bt);
    cr_assert_not_null(b0);
    cr_assert_not_null(b1);
    cr_assert_null(batcher_next(bt));
    cr_assert_not(batcher_done(bt));
    batcher_set_eof(bt, 10);
    proto_msg_t *b2 = batcher_next(bt);
    cr_assert_not_null(b2);
    cr_assert(batcher_done(bt));

    cr_assert_str_eq(proto_msg_task(b0), "a");
    cr_assert_eq(proto_msg_n_ids(b0), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(proto_msg_ids(b0)[i], 1000u + (unsigned)i);
    cr_assert_eq(proto_msg_get_int(b0, "step", -1), 0);
    /* The reject (seq 5) only moves the walk on: slot 1 has seq 4 and 6. */
    cr_assert_str_eq(proto_msg_task(b1), "b");
    cr_assert_eq(proto_msg_n_ids(b1), 2);
    cr_assert_eq(proto_msg_ids(b1)[0], 1004u);
    cr_assert_eq(proto_msg_ids(b1)[1], 1006u);
    cr_assert_eq(proto_msg_get_int(b1, "step", -1), 1);
    cr_assert_eq(proto_msg_n_ids(b2), 3);
    cr_assert_eq(proto_msg_ids(b2)[0], 1007u);
    cr_assert_eq(batcher_samples_out(bt), 9);
    cr_assert_eq(batcher_batches_out(bt), 3);
    proto_msg_destroy(&b0);
    proto_msg_destroy(&b1);
    proto_msg_destroy(&b2);
    batcher_destroy(&bt);
}

Test(batcher, same_batches_whatever_the_arrival_order) {
    int inorder[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    char *ref[8];
    size_t reflen[8];
    int nref = run_order(inorder, ref, reflen, 8);
    cr_assert_eq(nref, 3);
    util_rng_t rng = {42};
    for (int trial = 0; trial < 50; trial++) {
        int order[10];
        memcpy(order, inorder, sizeof order);
        for (int i = 9; i > 0; i--) {
            int j = (int)(util_rng_next(&rng) % (uint64_t)(i + 1));
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        char *got[8];
        size_t gotlen[8];
        int n = run_order(order, got, gotlen, 8);
        cr_assert_eq(n, nref);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(gotlen[i], reflen[i], "trial %d batch %d: length differs", trial, i);
            cr_assert(memcmp(got[i], ref[i], reflen[i]) == 0,
                      "trial %d batch %d: bytes differ", trial, i);
            free(got[i]);
        }
    }
    for (int i = 0; i < nref; i++)
        free(ref[i]);
}

Test(batcher, duplicates_dropped) {
    batcher_t *bt = batcher_new();
    batcher_add(bt, mk_sample("a", 1, 0, 3, 2));
    batcher_add(bt, mk_sample("a", 1, 0, 3, 2));   /* buffered twice */
    cr_assert_eq(batcher_duplicates(bt), 1);
    batcher_add(bt, mk_sample("a", 0, 0, 3, 2));
    batcher_add(bt, mk_sample("a", 0, 0, 3, 2));   /* already walked */
    cr_assert_eq(batcher_duplicates(bt), 2);
    batcher_add(bt, mk_reject("a", 1, 0));           /* a late reject of a walked seq */
    cr_assert_eq(batcher_duplicates(bt), 3);
    batcher_set_eof(bt, 2);
    batcher_add(bt, mk_sample("a", 2, 0, 3, 2));   /* past the end of data */
    cr_assert_eq(batcher_duplicates(bt), 4);
    proto_msg_t *b = batcher_next(bt);
    cr_assert_not_null(b);
    cr_assert_eq(proto_msg_n_ids(b), 2);
    cr_assert_null(batcher_next(bt));
    cr_assert(batcher_done(bt));
    proto_msg_destroy(&b);
    batcher_destroy(&bt);
}

Test(batcher, malformed_messages_dropped_without_growing) {
    batcher_t *bt = batcher_new();
    proto_msg_t *noseq = proto_msg_new(PROTO_SAMPLE, "a");
    batcher_add(bt, noseq);
    batcher_add(bt, mk_sample("a", BATCHER_MAX_AHEAD, 0, 3, 2));
    batcher_add(bt, mk_sample("a", INT64_MAX, 0, 3, 2));
    proto_msg_t *ctl = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_int(ctl, "seq", 0);
    batcher_add(bt, ctl);
    cr_assert_eq(batcher_malformed(bt), 4);
    cr_assert_eq(batcher_buffered(bt), 0);
    /* A seq far ahead but inside the bound is kept (the ring grows). */
    batcher_add(bt, mk_sample("a", 5000, 0, 3, 2));
    cr_assert_eq(batcher_buffered(bt), 1);
    batcher_destroy(&bt);
}

Test(batcher, padding_values) {
    proto_msg_t *s[2] = {mk_sample("a", 0, 0, 3, 1), mk_sample("a", 1, 0, 5, 4)};
    proto_msg_t *b = batcher_make_batch(s, 2, 7);
    cr_assert_not_null(b);
    const proto_field_t *st = proto_msg_get_tensor(b, "src_tok", PROTO_I32);
    const proto_field_t *sm = proto_msg_get_tensor(b, "src_mod", PROTO_U8);
    const proto_field_t *sl = proto_msg_get_tensor(b, "src_len", PROTO_I32);
    const proto_field_t *ti = proto_msg_get_tensor(b, "tgt_in", PROTO_I32);
    const proto_field_t *to = proto_msg_get_tensor(b, "tgt_out", PROTO_I32);
    const proto_field_t *tl = proto_msg_get_tensor(b, "tgt_len", PROTO_I32);
    cr_assert(st && sm && sl && ti && to && tl);
    cr_assert_eq(st->ndim, 2);
    cr_assert_eq(st->shape[0], 2);
    cr_assert_eq(st->shape[1], 5);   /* S = the longest source */
    cr_assert_eq(ti->shape[1], 4);   /* T = the longest target */
    const int32_t *tok = st->data, *len = sl->data, *tin = ti->data, *tout = to->data,
                  *tlen = tl->data;
    const uint8_t *mod = sm->data;
    cr_assert_eq(len[0], 3);
    cr_assert_eq(len[1], 5);
    cr_assert_eq(tlen[0], 1);
    cr_assert_eq(tlen[1], 4);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(tok[i], i < 3 ? 5 + i : 1, "row 0 pos %d", i);
        cr_assert_eq(mod[i], i < 3 ? i % 2 : 255, "row 0 pos %d", i);
        cr_assert_eq(tok[5 + i], 105 + i);
        cr_assert_eq(mod[5 + i], i % 2);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(tin[i], i < 1 ? 5 + i : 1);
        cr_assert_eq(tout[i], i < 1 ? 5 + i : 1);
        cr_assert_eq(tin[4 + i], 205 + i);
        cr_assert_eq(tout[4 + i], 305 + i);
    }
    cr_assert_eq(proto_msg_get_int(b, "step", -1), 7);
    cr_assert_str_eq(proto_msg_get_str(b, "split"), "train");
    cr_assert_str_eq(proto_msg_get_str(b, "refs"), "ref 0\nref 1");
    cr_assert_null(proto_msg_get(b, "img"));
    proto_msg_destroy(&b);
}

Test(batcher, images_stacked_and_misfits_dropped) {
    proto_msg_t *s[4] = {mk_sample("a", 0, 0, 3, 1), mk_sample("a", 1, 0, 3, 1),
                         mk_sample("a", 2, 0, 3, 1), mk_sample("b", 3, 0, 3, 1)};
    add_img(s[0], 4, 12, 10);
    add_img(s[1], 4, 12, 20);
    add_img(s[2], 9, 12, 30);     /* another shape: dropped */
    add_img(s[3], 4, 12, 40);     /* another task: dropped */
    proto_msg_t *b = batcher_make_batch(s, 4, 0);
    cr_assert_not_null(b);
    cr_assert_eq(proto_msg_n_ids(b), 2);
    const proto_field_t *img = proto_msg_get_tensor(b, "img", PROTO_U8);
    cr_assert_not_null(img);
    cr_assert_eq(img->ndim, 3);
    cr_assert_eq(img->shape[0], 2);
    cr_assert_eq(img->shape[1], 4);
    cr_assert_eq(img->shape[2], 12);
    const uint8_t *px = img->data;
    cr_assert_eq(px[0], 10);
    cr_assert_eq(px[47], 10);
    cr_assert_eq(px[48], 20);
    cr_assert_eq(proto_msg_get_int(b, "img.grid", 0), 2);
    proto_msg_destroy(&b);
    /* No well-formed sample at all: no batch. */
    proto_msg_t *bad[1] = {proto_msg_new(PROTO_SAMPLE, "a")};
    proto_msg_add_id(bad[0], 1);
    cr_assert_null(batcher_make_batch(bad, 1, 0));
    cr_assert_null(batcher_make_batch(NULL, 0, 0));
}

Test(batcher, valid_refs_never_hold_newlines) {
    proto_msg_t *s[2] = {mk_sample("a", 0, 0, 2, 2), mk_sample("a", 1, 0, 2, 2)};
    proto_msg_set_str(s[0], "ref", "two\nlines");
    proto_msg_set_str(s[0], "split", "valid");
    proto_msg_set_str(s[1], "split", "valid");
    proto_msg_t *b = batcher_make_batch(s, 2, 3);
    cr_assert_str_eq(proto_msg_get_str(b, "split"), "valid");
    cr_assert_str_eq(proto_msg_get_str(b, "refs"), "two lines\nref 1");
    proto_msg_destroy(&b);
}

/* A batch survives the wire: encode, decode, same ids and tensors. */
Test(batcher, batch_round_trips_through_the_codec) {
    proto_msg_t *s[2] = {mk_sample("a", 0, 0, 3, 2), mk_sample("a", 1, 0, 4, 2)};
    proto_msg_t *b = batcher_make_batch(s, 2, 0);
    size_t len;
    void *bytes = proto_encode_bytes(b, &len);
    const void *bufs[1] = {bytes};
    char err[256];
    proto_msg_t *d = proto_decode_frames(bufs, &len, 1, err, sizeof err);
    cr_assert_not_null(d, "%s", err);
    cr_assert_eq(proto_msg_kind(d), PROTO_BATCH);
    cr_assert_eq(proto_msg_n_ids(d), 2);
    const proto_field_t *st = proto_msg_get_tensor(d, "src_tok", PROTO_I32);
    cr_assert_eq(st->shape[1], 4);
    cr_assert_eq(memcmp(st->data, proto_msg_get(b, "src_tok")->data, st->len), 0);
    free(bytes);
    proto_msg_destroy(&d);
    proto_msg_destroy(&b);
}

/* Random runs against a plain model of the contract: random slots (task, size), random
 * rejects, random arrival orders with duplicates, eof at a random moment after the last
 * item. The batches must be exactly the slots' surviving samples in seq order, and two
 * arrival orders must give byte-identical batches. */
Test(batcher, random_runs_match_the_model) {
    util_rng_t rng = {2024};
    for (int run = 0; run < 200; run++) {
        enum { MAXN = 200 };
        int64_t slot_of[MAXN];
        int rejected[MAXN];
        const char *task_of[MAXN];
        int n = 0;
        int nslots = 1 + (int)(util_rng_next(&rng) % 30);
        for (int sl = 0; sl < nslots && n < MAXN - 8; sl++) {
            int size = 1 + (int)(util_rng_next(&rng) % 6);
            const char *task = util_rng_next(&rng) % 2 ? "a" : "b";
            for (int k = 0; k < size; k++, n++) {
                slot_of[n] = sl;
                task_of[n] = task;
                rejected[n] = util_rng_next(&rng) % 7 == 0;
            }
        }
        char *bytes[2][40];
        size_t lens[2][40];
        int nb[2] = {0, 0};
        for (int pass = 0; pass < 2; pass++) {
            /* Arrival: a shuffle, with about one item in ten sent twice. */
            int order[2 * MAXN], m = 0;
            for (int i = 0; i < n; i++) {
                order[m++] = i;
                if (util_rng_next(&rng) % 10 == 0)
                    order[m++] = i;
            }
            for (int i = m - 1; i > 0; i--) {
                int j = (int)(util_rng_next(&rng) % (uint64_t)(i + 1));
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            batcher_t *bt = batcher_new();
            int eof_at = (int)(util_rng_next(&rng) % (uint64_t)(m + 1));
            for (int i = 0; i <= m; i++) {
                if (i == eof_at)
                    batcher_set_eof(bt, n);
                if (i == m)
                    break;
                int q = order[i];
                batcher_add(bt, rejected[q] ? mk_reject(task_of[q], q, slot_of[q])
                                            : mk_sample(task_of[q], q, slot_of[q],
                                                        1 + q % 9, 1 + q % 4));
            }
            cr_assert_eq(batcher_buffered(bt), 0, "run %d: items left in the buffer", run);
            cr_assert_eq(batcher_duplicates(bt), m - n, "run %d: duplicates", run);
            /* The model: each slot's surviving samples, in seq order. */
            int b = 0, i = 0;
            for (proto_msg_t *batch; (batch = batcher_next(bt)); b++) {
                while (i < n && rejected[i])
                    i++;
                cr_assert_lt(i, n, "run %d: more batches than slots with samples", run);
                int64_t sl = slot_of[i];
                cr_assert_eq(proto_msg_get_int(batch, "step", -1), sl);
                cr_assert_str_eq(proto_msg_task(batch), task_of[i]);
                int k = 0;
                for (; i < n && slot_of[i] == sl; i++)
                    if (!rejected[i]) {
                        cr_assert_lt(k, proto_msg_n_ids(batch));
                        cr_assert_eq(proto_msg_ids(batch)[k], 1000u + (unsigned)i);
                        k++;
                    }
                cr_assert_eq(k, proto_msg_n_ids(batch), "run %d slot %lld", run, (long long)sl);
                cr_assert_lt(b, 40);
                bytes[pass][b] = proto_encode_bytes(batch, &lens[pass][b]);
                proto_msg_destroy(&batch);
            }
            while (i < n && rejected[i])
                i++;
            cr_assert_eq(i, n, "run %d: slots without their batch", run);
            cr_assert(batcher_done(bt));
            nb[pass] = b;
            batcher_destroy(&bt);
        }
        cr_assert_eq(nb[0], nb[1]);
        for (int b = 0; b < nb[0]; b++) {
            cr_assert_eq(lens[0][b], lens[1][b]);
            cr_assert(memcmp(bytes[0][b], bytes[1][b], lens[0][b]) == 0, "run %d batch %d", run,
                      b);
            free(bytes[0][b]);
            free(bytes[1][b]);
        }
    }
}

/* ---------------------------------------------------------------- the programs */

static char dir[256];

static void mk_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/ofa_test_batcher_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rm_dir(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void *mk_socket(void *zctx, int type) {
    void *s = zmq_socket(zctx, type);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    return s;
}

static proto_msg_t *mk_hello(int rank, int world, int credits) {
    proto_msg_t *h = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(h, "hello");
    proto_msg_set_str(h, "role", "consumer");
    proto_msg_set_int(h, "rank", rank);
    proto_msg_set_int(h, "world", world);
    proto_msg_set_int(h, "credits", credits);
    return h;
}

TestSuite(batcher_programs, .init = mk_dir, .fini = rm_dir);

/* The test is the broker and two consumer ranks. The ten items of mk_item arrive
 * shuffled and one twice; batch k goes to rank k % 2; both ranks get "end". */
Test(batcher_programs, ofa_batcher_over_zeromq, .timeout = 60) {
    char ctl[300], out[300], stats_ep[300], log[512], prog[1024];
    snprintf(ctl, sizeof ctl, "ipc://%s/b.sock", dir);
    snprintf(out, sizeof out, "ipc://%s/o.sock", dir);
    snprintf(stats_ep, sizeof stats_ep, "ipc://%s/s.sock", dir);
    snprintf(log, sizeof log, "%s/batcher.log", dir);
    snprintf(prog, sizeof prog, "%s/bin/ofa-batcher", OFA_BINARY_DIR);
    void *zctx = zmq_ctx_new();
    void *broker = mk_socket(zctx, ZMQ_ROUTER), *pull = mk_socket(zctx, ZMQ_PULL);
    cr_assert_eq(zmq_bind(broker, ctl), 0);
    cr_assert_eq(zmq_bind(pull, stats_ep), 0);
    char *argv[] = {prog, "--id", "batcher", "--ctl", ctl, "--out", out, "--stats", stats_ep,
                    "--world", "2", NULL};
    pid_t pid = cproc_spawn(argv, log);
    uint8_t ident[256];
    size_t identlen = 0;
    proto_msg_t *m = cproc_next_msg(broker, ident, &identlen, 10000);
    cr_assert_not_null(m, "no hello (see %s)", log);
    cr_assert_str_eq(proto_msg_op(m), "hello");
    cr_assert_str_eq(proto_msg_get_str(m, "role"), "batcher");
    cr_assert_eq(proto_msg_get_int(m, "acks", 0), 1, "the batcher acknowledges");
    proto_msg_destroy(&m);
    /* As the broker answers an acknowledging batcher: where to start (a first one: 0). */
    proto_msg_t *start = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(start, "start");
    proto_msg_set_int(start, "seq", 0);
    proto_msg_set_int(start, "batch", 0);
    cr_assert_eq(proto_send(broker, ident, identlen, &start, 0), 0);
    m = cproc_next_msg(broker, ident, &identlen, 5000);
    cr_assert_not_null(m);
    cr_assert_eq(proto_msg_kind(m), PROTO_CREDIT);
    cr_assert_geq(proto_msg_get_int(m, "n", 0), 11, "the batcher asks for a window");
    proto_msg_destroy(&m);

    /* Consumers connect (the batcher binds its ROUTER before it says hello). */
    void *rank[2];
    for (int r = 0; r < 2; r++) {
        rank[r] = mk_socket(zctx, ZMQ_DEALER);
        cr_assert_eq(zmq_connect(rank[r], out), 0);
        proto_msg_t *h = mk_hello(r, 2, 8);
        cr_assert_eq(proto_send(rank[r], NULL, 0, &h, 0), 0);
    }
    int order[11] = {6, 2, 9, 5, 0, 8, 3, 3, 1, 7, 4};
    for (int i = 0; i < 11; i++) {
        proto_msg_t *it = mk_item(order[i]);
        cr_assert_eq(proto_send(broker, ident, identlen, &it, 0), 0);
    }
    proto_msg_t *eof = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(eof, "eof");
    proto_msg_set_int(eof, "count", 10);
    cr_assert_eq(proto_send(broker, ident, identlen, &eof, 0), 0);

    /* Rank 0: steps 0 and 2, then end; rank 1: step 1, then end. */
    static const int64_t want_steps[2][2] = {{0, 2}, {1, -1}};
    static const int want_n[3] = {4, 2, 3};
    for (int r = 0; r < 2; r++) {
        for (int k = 0; k < 2 && want_steps[r][k] >= 0; k++) {
            proto_msg_t *b = cproc_next_msg(rank[r], NULL, NULL, 5000);
            cr_assert_not_null(b, "rank %d: batch %d missing (see %s)", r, k, log);
            cr_assert_eq(proto_msg_kind(b), PROTO_BATCH);
            int64_t step = proto_msg_get_int(b, "step", -1);
            cr_assert_eq(step, want_steps[r][k], "rank %d got step %lld", r, (long long)step);
            cr_assert_eq(proto_msg_n_ids(b), want_n[step]);
            proto_msg_destroy(&b);
        }
        proto_msg_t *e = cproc_next_msg(rank[r], NULL, NULL, 5000);
        cr_assert_not_null(e, "rank %d: no end", r);
        cr_assert_eq(proto_msg_kind(e), PROTO_CONTROL);
        cr_assert_str_eq(proto_msg_op(e), "end");
        proto_msg_destroy(&e);
    }
    /* The duplicate of seq 3 is counted for its task. */
    double dups = -1;
    double end = util_now() + 5;
    while (util_now() < end && dups != 1) {
        proto_msg_t *s = cproc_next_msg(pull, NULL, NULL, 500);
        if (s)
            dups = proto_msg_get_float(s, "task.a.duplicates_dropped", -1);
        proto_msg_destroy(&s);
    }
    cr_assert_eq(dups, 1);
    kill(pid, SIGTERM);
    cr_assert_eq(cproc_wait_exit(pid, 5), 0, "ofa-batcher should exit 0 on SIGTERM");
    for (int r = 0; r < 2; r++)
        zmq_close(rank[r]);
    zmq_close(broker);
    zmq_close(pull);
    zmq_ctx_term(zctx);
}

/* The test is the batcher: a good train batch, a malformed one, the good one again
 * (its samples are duplicates), a validation batch, then end. */
Test(batcher_programs, ofa_sink_over_zeromq, .timeout = 60) {
    char in[300], stats_ep[300], log[512], outfile[512], digest[512], prog[1024];
    snprintf(in, sizeof in, "ipc://%s/o.sock", dir);
    snprintf(stats_ep, sizeof stats_ep, "ipc://%s/s.sock", dir);
    snprintf(log, sizeof log, "%s/sink.log", dir);
    snprintf(outfile, sizeof outfile, "%s/delivered.tsv", dir);
    snprintf(digest, sizeof digest, "%s/batches.digest", dir);
    snprintf(prog, sizeof prog, "%s/bin/ofa-sink", OFA_BINARY_DIR);
    void *zctx = zmq_ctx_new();
    void *router = mk_socket(zctx, ZMQ_ROUTER), *pull = mk_socket(zctx, ZMQ_PULL);
    cr_assert_eq(zmq_bind(router, in), 0);
    cr_assert_eq(zmq_bind(pull, stats_ep), 0);
    char *argv[] = {prog, "--id", "sink", "--in", in, "--stats", stats_ep, "--out", outfile,
                    "--digest", digest, NULL};
    pid_t pid = cproc_spawn(argv, log);
    uint8_t ident[256];
    size_t identlen = 0;
    proto_msg_t *m = cproc_next_msg(router, ident, &identlen, 10000);
    cr_assert_not_null(m, "no hello (see %s)", log);
    cr_assert_str_eq(proto_msg_op(m), "hello");
    cr_assert_eq(proto_msg_get_int(m, "rank", -1), 0);
    cr_assert_eq(proto_msg_get_int(m, "world", -1), 1);
    cr_assert_gt(proto_msg_get_int(m, "credits", 0), 0);
    proto_msg_destroy(&m);

    proto_msg_t *s1[2] = {mk_sample("a", 0, 0, 3, 2), mk_sample("a", 1, 0, 4, 2)};
    proto_msg_t *good = batcher_make_batch(s1, 2, 0);
    proto_msg_t *again = proto_msg_clone(good);
    proto_msg_t *s2[2] = {mk_sample("a", 2, 1, 3, 2), mk_sample("a", 3, 1, 3, 2)};
    proto_msg_t *bad = batcher_make_batch(s2, 2, 1);
    int64_t one[1] = {1};
    int32_t len1[1] = {3};
    proto_msg_set_tensor(bad, "src_len", PROTO_I32, 1, one, len1);   /* not (B) */
    proto_msg_t *s3[2] = {mk_sample("a", 4, 2, 3, 2), mk_sample("a", 5, 2, 3, 2)};
    for (int i = 0; i < 2; i++) {
        proto_msg_set_str(s3[i], "split", "valid");
        proto_msg_set_ids(s3[i], (uint64_t[]){(1ull << 39) | (uint64_t)i}, 1);
    }
    proto_msg_t *valid = batcher_make_batch(s3, 2, 2);
    proto_msg_t *seq[4] = {good, bad, again, valid};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(proto_send(router, ident, identlen, &seq[i], 0), 0);
    proto_msg_t *e = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(e, "end");
    cr_assert_eq(proto_send(router, ident, identlen, &e, 0), 0);
    cr_assert_eq(cproc_wait_exit(pid, 10), 0, "ofa-sink exits 0 after end (see %s)", log);

    size_t n;
    char *text = util_read_file(outfile, &n, NULL, 0);
    cr_assert_not_null(text);
    cr_assert_str_eq(text, "a\t1000\t0\ttrain\na\t1001\t0\ttrain\n"
                           "a\t549755813888\t0\tvalid\na\t549755813889\t0\tvalid\n");
    free(text);
    char *dig = util_read_file(digest, &n, NULL, 0);
    cr_assert_not_null(dig);
    int lines = 0;
    for (char *c = dig; *c; c++)
        lines += *c == '\n';
    /* The good batch sent again (all its samples delivered already) is a copy a
     * restarted batcher would send: no digest line, so digests compare runs with and
     * without a batcher restart. */
    cr_assert_eq(lines, 2, "one digest line per well-formed batch that is not a copy");
    free(dig);
    char *lg = util_read_file(log, &n, NULL, 0);
    cr_assert(lg && strstr(lg, "malformed batch of task a: src_len / tgt_len"), "%s", lg);
    free(lg);
    /* The final stats: 4 delivered, 2 duplicates. */
    double delivered = -1, dups = -1;
    for (proto_msg_t *st; (st = cproc_next_msg(pull, NULL, NULL, 500));) {
        delivered = proto_msg_get_float(st, "task.a.delivered", -1);
        dups = proto_msg_get_float(st, "task.a.duplicates_dropped", -1);
        proto_msg_destroy(&st);
    }
    cr_assert_eq(delivered, 4);
    cr_assert_eq(dups, 2);
    zmq_close(router);
    zmq_close(pull);
    zmq_ctx_term(zctx);
}
