/* test_broker_arena.c: the broker releases the shared-memory arena slots that samples'
 * tensors lie in (broker.c, "arena slots"), each exactly once and never one that a
 * message it still keeps names: after the batcher's ack, on a reject after the tier that
 * made the slot, on a duplicate answer (only the slot that nothing else names), and at
 * once for a batcher that does not acknowledge (which is sent the bytes). The slots are
 * real (an arena made by the test, common/shmarena.h); whether a slot is free is read
 * from the arena itself: a released slot's descriptor no longer maps. */
#include "broker.h"
#include "broker_rec.h"
#include "shmarena.h"
#include "util.h"

#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

enum { PIXELS = 96 * 1024 };

static shmarena_t *s_arena;

static void setup(void) {
    char err[256];
    s_arena = shmarena_new(1 << 20, err, sizeof err);
    cr_assert_not_null(s_arena, "%s", err);
}

static void teardown(void) {
    brec_drop_all();
    shmarena_destroy(&s_arena);
}

static void credit(broker_t *b, const char *id, int n) {
    brec_credit(b, id, n, -1);
}

static proto_msg_t *mk_sample(int64_t seq, const char *route) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "caption");
    proto_msg_add_id(m, 1000 + (uint64_t)seq);
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "slot", seq);
    proto_msg_set_int(m, "row", seq);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_str(m, "@route", route);
    proto_msg_set_int(m, "@hop", 0);
    return m;
}

/* An image worker's answer: the sample with its pixels in a new slot of the arena
 * (filled with `fill`); *desc gets the slot. */
static void answer_pixels(broker_t *b, const char *worker, proto_msg_t *m, int fill,
                          shmarena_desc_t *desc) {
    uint8_t *px = util_malloc(PIXELS);
    memset(px, fill, PIXELS);
    int64_t shape[2] = {PIXELS / 768, 768};
    proto_msg_take_tensor(m, "img", PROTO_U8, 2, shape, px);
    cr_assert_eq(proto_msg_field_to_arena(m, "img", s_arena), 0, "the arena has room");
    cr_assert(proto_msg_field_arena(m, "img", desc));
    proto_msg_set_int(m, "@hop", proto_msg_get_int(m, "@hop", 0) + 1);
    brec_on(b, worker, m);
}

/* A tokenize worker's answer: the sample passed on as it came (its slot too). */
static void answer_as_is(broker_t *b, const char *worker, proto_msg_t *m) {
    proto_msg_set_int(m, "tok", 1);
    proto_msg_set_int(m, "@hop", proto_msg_get_int(m, "@hop", 0) + 1);
    brec_on(b, worker, m);
}

static int slot_held(const shmarena_desc_t *d) {
    char err[256];
    return shmarena_reader_map(proto_arena_reader(), d, err, sizeof err) != NULL;
}

/* A broker with a source "src" and a batcher "bat" (acknowledging when acks is set, its
 * "start" taken) that has credit for 10 samples. */
static broker_t *mk_broker(int dead_ms, int acks) {
    brec_drop_all();
    broker_opts_t o = {.max_inflight = 64, .dead_ms = dead_ms};
    broker_t *b = broker_new(&o, brec_send, NULL, NULL);
    cr_assert_not_null(b);
    brec_hello(b, "src", "source", NULL, 0, 0);
    brec_hello(b, "bat", "batcher", NULL, 0, acks);
    if (acks) {
        proto_msg_t *start = brec_take("bat");
        cr_assert_str_eq(proto_msg_op(start), "start");
        proto_msg_destroy(&start);
    }
    credit(b, "bat", 10);
    return b;
}

/* Sample 0 on the route image,tokenize: image worker "w1" answers with its pixels in a
 * slot (*d, filled with `fill`), and the sample as tokenize worker "t1" (of tcredits)
 * receives it is returned. */
static proto_msg_t *to_tokenize(broker_t *b, int tcredits, int fill, shmarena_desc_t *d) {
    brec_hello(b, "w1", "worker", "image", 4, 0);
    brec_hello(b, "t1", "worker", "tokenize", tcredits, 0);
    brec_on(b, "src", mk_sample(0, "image,tokenize"));
    broker_tick(b);
    answer_pixels(b, "w1", brec_take("w1"), fill, d);
    broker_tick(b);
    proto_msg_t *t = brec_take("t1");
    cr_assert_not_null(t);
    return t;
}

/* Make worker `slow` look dead (silent past dead_ms) while `alive` keeps beating, so
 * that what slow holds goes to alive. */
static void outlive(broker_t *b, const char *alive, const char *alive2) {
    for (int i = 0; i < 4; i++) {
        usleep(25000);
        brec_heartbeat(b, alive);
        if (alive2)
            brec_heartbeat(b, alive2);
        brec_heartbeat(b, "bat");
        broker_tick(b);
    }
}

TestSuite(broker_arena, .init = setup, .fini = teardown);

Test(broker_arena, released_after_the_ack_and_kept_for_a_resend) {
    broker_t *b = mk_broker(60000, 1);
    brec_hello(b, "w1", "worker", "image", 4, 0);
    brec_on(b, "src", mk_sample(0, "image"));
    broker_tick(b);
    shmarena_desc_t d;
    answer_pixels(b, "w1", brec_take("w1"), 7, &d);
    broker_tick(b);
    proto_msg_t *got = brec_take("bat");
    cr_assert_not_null(got);
    shmarena_desc_t g;
    cr_assert(proto_msg_field_arena(got, "img", &g), "the batcher gets the descriptor");
    cr_assert_eq(g.gen, d.gen);
    cr_assert_eq(((const uint8_t *)proto_msg_get(got, "img")->data)[PIXELS - 1], 7);
    proto_msg_destroy(&got);
    /* The batcher restarts before its ack: the kept copy goes again, same slot. */
    brec_hello(b, "bat", "batcher", NULL, 0, 1);
    proto_msg_destroy(&(proto_msg_t *){brec_take("bat")});
    credit(b, "bat", 10);
    broker_tick(b);
    got = brec_take("bat");
    cr_assert_not_null(got, "the unacknowledged sample is sent again");
    cr_assert(proto_msg_field_arena(got, "img", &g));
    cr_assert(slot_held(&d), "not released before the ack");
    proto_msg_destroy(&got);
    brec_ack(b, 1, 1);
    broker_tick(b);
    cr_assert_not(slot_held(&d), "released once the batcher acknowledged it");
    cr_assert_eq(shmarena_in_use(s_arena), 0, "the ring is empty again");
    broker_destroy(&b);
}

Test(broker_arena, reject_after_the_image_tier_releases_the_slot) {
    broker_t *b = mk_broker(60000, 1);
    shmarena_desc_t d;
    proto_msg_t *t = to_tokenize(b, 4, 3, &d);
    cr_assert(slot_held(&d));
    proto_msg_t *r = proto_msg_new(PROTO_REJECT, "caption");
    proto_msg_set_int(r, "seq", 0);
    proto_msg_set_str(r, "stage", "tokenize");
    proto_msg_set_str(r, "reason", "column region: box 'x' is not x0,y0,x1,y1");
    proto_msg_destroy(&t);
    brec_on(b, "t1", r);
    broker_tick(b);
    cr_assert_not(slot_held(&d), "a rejected sample's slot is released");
    proto_msg_t *n = brec_take("bat");
    cr_assert_eq(proto_msg_kind(n), PROTO_REJECT);
    proto_msg_destroy(&n);
    broker_destroy(&b);
}

Test(broker_arena, duplicate_image_answer_releases_only_its_own_slot) {
    broker_t *b = mk_broker(50, 1);
    brec_hello(b, "w1", "worker", "image", 1, 0);
    brec_on(b, "src", mk_sample(0, "image"));
    broker_tick(b);
    proto_msg_t *h = brec_take("w1");
    cr_assert_not_null(h);
    brec_hello(b, "w2", "worker", "image", 1, 0);
    outlive(b, "w2", NULL);
    proto_msg_t *copy = brec_take("w2");
    cr_assert_not_null(copy, "w1 went silent: the sample went to w2");
    shmarena_desc_t d1, d2;
    answer_pixels(b, "w1", h, 1, &d1);      /* late but first: accepted */
    broker_tick(b);
    answer_pixels(b, "w2", copy, 2, &d2);   /* second: a duplicate */
    broker_tick(b);
    cr_assert_eq(broker_duplicates(b), 1);
    cr_assert(slot_held(&d1), "the accepted answer's slot stays (it is on its way)");
    cr_assert_not(slot_held(&d2), "the duplicate's own slot is released");
    proto_msg_t *got = brec_take("bat");
    cr_assert_not_null(got);
    cr_assert_eq(((const uint8_t *)proto_msg_get(got, "img")->data)[0], 1);
    proto_msg_destroy(&got);
    broker_destroy(&b);
}

Test(broker_arena, duplicate_tokenize_answer_keeps_the_slot_it_passed_on) {
    broker_t *b = mk_broker(50, 1);
    shmarena_desc_t d;
    proto_msg_t *t = to_tokenize(b, 1, 5, &d);
    brec_hello(b, "t2", "worker", "tokenize", 1, 0);
    outlive(b, "t2", "w1");
    proto_msg_t *copy = brec_take("t2");
    cr_assert_not_null(copy, "t1 went silent: the sample went to t2");
    answer_as_is(b, "t1", t);
    broker_tick(b);
    answer_as_is(b, "t2", copy);   /* a duplicate naming the same slot */
    broker_tick(b);
    cr_assert_eq(broker_duplicates(b), 1);
    cr_assert(slot_held(&d), "the slot the delivered sample names is not released");
    proto_msg_t *got = brec_take("bat");
    cr_assert_not_null(got);
    proto_msg_destroy(&got);
    brec_ack(b, 1, 1);
    broker_tick(b);
    cr_assert_not(slot_held(&d), "released once, at the ack");
    broker_destroy(&b);
}

Test(broker_arena, batcher_without_acks_is_sent_the_bytes) {
    broker_t *b = mk_broker(60000, 0);
    brec_hello(b, "w1", "worker", "image", 4, 0);
    brec_on(b, "src", mk_sample(0, "image"));
    broker_tick(b);
    shmarena_desc_t d;
    answer_pixels(b, "w1", brec_take("w1"), 9, &d);
    broker_tick(b);
    proto_msg_t *got = brec_take("bat");
    cr_assert_not_null(got);
    cr_assert_not(proto_msg_field_arena(got, "img", NULL), "the bytes, not a descriptor");
    const proto_field_t *f = proto_msg_get(got, "img");
    cr_assert_eq(f->len, (size_t)PIXELS);
    for (size_t i = 0; i < f->len; i += 4093)
        cr_assert_eq(((const uint8_t *)f->data)[i], 9);
    cr_assert_not(slot_held(&d), "the slot is free at once");
    proto_msg_destroy(&got);
    broker_destroy(&b);
}
