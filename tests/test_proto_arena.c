/* test_proto_arena.c: arena descriptors in the message codec (common/proto.c with
 * common/shmarena.c): a field put into an arena travels as {name, offset, len, gen},
 * the receiver reads it in place, forwards the descriptor untouched, and the consumer's
 * release makes any later use of it an error; a full arena falls back to a frame; bad
 * "gen" values and forged descriptors are refused with an error naming the field. */
#include "hand_msg.h"
#include "proto.h"
#include "shmarena.h"
#include "util.h"

#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

static char err[512];

typedef struct {
    void *ctx, *a, *b;
} s_pair_t;

static s_pair_t s_pair(void) {
    static int n;
    s_pair_t p;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://arena-%d", n++);
    p.ctx = zmq_ctx_new();
    p.a = zmq_socket(p.ctx, ZMQ_PAIR);
    p.b = zmq_socket(p.ctx, ZMQ_PAIR);
    cr_assert_eq(zmq_bind(p.a, ep), 0);
    cr_assert_eq(zmq_connect(p.b, ep), 0);
    return p;
}

static void s_pair_end(s_pair_t *p) {
    zmq_close(p->a);
    zmq_close(p->b);
    zmq_ctx_term(p->ctx);
}

/* Send m (taking it) from a to b and return how many frames arrived, decoding them. */
static proto_msg_t *s_hop(void *from, void *to, proto_msg_t **m, int *nframes) {
    cr_assert_eq(proto_send(from, NULL, 0, m, 0), 0);
    zmq_msg_t fr[8];
    int n = 0;
    int more = 1;
    while (more && n < 8) {
        zmq_msg_init(&fr[n]);
        cr_assert_geq(zmq_msg_recv(&fr[n], to, 0), 0);
        more = zmq_msg_more(&fr[n]);
        n++;
    }
    const void *bufs[8];
    size_t lens[8];
    for (int i = 0; i < n; i++) {
        bufs[i] = zmq_msg_data(&fr[i]);
        lens[i] = zmq_msg_size(&fr[i]);
    }
    err[0] = 0;
    proto_msg_t *r = proto_decode_frames(bufs, lens, n, err, sizeof err);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&fr[i]);
    *nframes = n;
    return r;
}

static proto_msg_t *s_sample(uint8_t *px, size_t n) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "caption");
    int64_t sh[1] = {(int64_t)n};
    proto_msg_set_tensor(m, "img", PROTO_U8, 1, sh, px);
    proto_msg_set_int(m, "seq", 3);
    return m;
}

Test(proto_arena, descriptor_travels_is_forwarded_and_released) {
    shmarena_t *a = shmarena_new(1 << 20, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    s_pair_t p = s_pair();
    size_t n = 384 * 384 * 3;
    uint8_t *px = util_malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i * 7 + 1);
    proto_msg_t *m = s_sample(px, n);
    cr_assert_eq(proto_msg_field_to_arena(m, "img", a), 0);
    cr_assert_eq(proto_msg_field_to_arena(m, "seq", a), -1, "an int has no bytes to move");
    cr_assert_eq(proto_msg_field_to_arena(m, "absent", a), -1);
    shmarena_desc_t d;
    cr_assert_eq(proto_msg_field_arena(m, "img", &d), 1);
    cr_assert_eq(proto_msg_field_arena(m, "seq", NULL), 0);
    cr_assert_str_eq(d.name, shmarena_name(a));
    cr_assert_eq(d.len, n);

    /* Hop 1: no frame carries the pixels; the receiver points into the slot. */
    int nf = 0;
    proto_msg_t *r = s_hop(p.a, p.b, &m, &nf);
    cr_assert_not_null(r, "%s", err);
    cr_assert_eq(nf, 1, "the tensor travels in no frame");
    const proto_field_t *f = proto_msg_get_tensor(r, "img", PROTO_U8);
    cr_assert_not_null(f);
    cr_assert_eq(f->len, n);
    cr_assert(memcmp(f->data, px, n) == 0);
    shmarena_desc_t e;
    cr_assert_eq(proto_msg_field_arena(r, "img", &e), 1);
    cr_assert_eq(e.gen, d.gen);
    cr_assert_eq(e.offset, d.offset);

    /* Hop 2: a forwarding process sends the descriptor on, untouched. */
    proto_msg_t *r2 = s_hop(p.b, p.a, &r, &nf);
    cr_assert_not_null(r2, "%s", err);
    cr_assert_eq(nf, 1);
    cr_assert_eq(proto_msg_field_arena(r2, "img", &e), 1);
    cr_assert_eq(e.gen, d.gen);
    f = proto_msg_get_tensor(r2, "img", PROTO_U8);
    cr_assert(memcmp(f->data, px, n) == 0);

    /* The copy-out path: unarena gives the message its own bytes; then release. */
    cr_assert_eq(proto_msg_field_unarena(r2, "img"), 0);
    cr_assert_eq(proto_msg_field_arena(r2, "img", NULL), 0);
    cr_assert_eq(shmarena_reader_release(proto_arena_reader(), &e, err, sizeof err), 0, "%s",
                 err);
    cr_assert_eq(shmarena_in_use(a), 0, "the release reached the producer");
    f = proto_msg_get_tensor(r2, "img", PROTO_U8);
    cr_assert(memcmp(f->data, px, n) == 0);

    /* A third hop of the copied message carries the bytes as a frame. */
    proto_msg_t *r3 = s_hop(p.a, p.b, &r2, &nf);
    cr_assert_not_null(r3, "%s", err);
    cr_assert_eq(nf, 2);
    proto_msg_destroy(&r3);

    /* The released descriptor, sent again, is refused as stale, naming gen. */
    m = s_sample(px, n);
    cr_assert_eq(proto_msg_field_to_arena(m, "img", a), 0);
    cr_assert_eq(proto_msg_field_arena(m, "img", &e), 1);
    cr_assert_neq(e.gen, d.gen);
    proto_msg_destroy(&m);   /* the slot stays held: the message does not own it */
    cr_assert(shmarena_in_use(a) > 0);
    cr_assert_eq(shmarena_reader_release(proto_arena_reader(), &e, err, sizeof err), 0);
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        /* Built by hand: a message can only hold a descriptor it put or received. */
        hand_sample_field(&pk, "caption", "img");
        msgpack_pack_map(&pk, 4);
        hand_str(&pk, "name");
        hand_str(&pk, d.name);
        const char *keys[] = {"offset", "len", "gen"};
        uint64_t vals[3] = {d.offset, d.len, d.gen};
        for (int i = 0; i < 3; i++) {
            hand_str(&pk, keys[i]);
            msgpack_pack_uint64(&pk, vals[i]);
        }
        const void *bufs[1] = {sb.data};
        size_t lens[1] = {sb.size};
        cr_assert_null(proto_decode_frames(bufs, lens, 1, err, sizeof err));
        cr_assert(strstr(err, "field 'img'") && strstr(err, "gen") && strstr(err, "stale"),
                  "%s", err);
        msgpack_sbuffer_destroy(&sb);
    }
    free(px);
    s_pair_end(&p);
    shmarena_destroy(&a);
}

/* A full arena: the field stays a frame, nothing is lost. */
Test(proto_arena, full_falls_back_to_a_frame) {
    shmarena_t *a = shmarena_new(SHMARENA_MIN_SIZE, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    s_pair_t p = s_pair();
    size_t n = 40000;
    uint8_t *px = util_malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i * 3);
    int in_arena = 0, framed = 0;
    for (int k = 0; k < 3; k++) {
        proto_msg_t *m = s_sample(px, n);
        int rc = proto_msg_field_to_arena(m, "img", a);
        cr_assert(rc == 0 || rc == 1);
        int nf;
        proto_msg_t *r = s_hop(p.a, p.b, &m, &nf);
        cr_assert_not_null(r, "%s", err);
        const proto_field_t *f = proto_msg_get_tensor(r, "img", PROTO_U8);
        cr_assert(f && f->len == n && memcmp(f->data, px, n) == 0, "message %d", k);
        if (rc == 0) {
            in_arena++;
            cr_assert_eq(nf, 1);
            cr_assert_eq(proto_msg_field_arena(r, "img", NULL), 1);
        } else {
            framed++;
            cr_assert_eq(nf, 2);
            cr_assert_eq(proto_msg_field_arena(r, "img", NULL), 0);
        }
        proto_msg_destroy(&r);
    }
    cr_assert_eq(in_arena, 1, "64 KiB holds one 40000-byte tensor");
    cr_assert_eq(framed, 2);
    free(px);
    s_pair_end(&p);
    shmarena_destroy(&a);
}

/* Bad "gen" values and arena descriptors that cannot be right: refused, naming why. */
static void s_expect_bad(const char *name, int gen_kind, const char *want) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
#define S(x) hand_str(&pk, x)
    hand_sample_field(&pk, NULL, "x");
    msgpack_pack_map(&pk, gen_kind == 5 ? 5 : 4);
    S("name"); S(name);
    S("offset"); msgpack_pack_int(&pk, 192);
    S("len"); msgpack_pack_int(&pk, 4);
    S("gen");
    switch (gen_kind) {
    case 0: msgpack_pack_int(&pk, 0); break;
    case 1: msgpack_pack_int(&pk, -1); break;
    case 2: S("1"); break;
    case 3: msgpack_pack_double(&pk, 1.0); break;
    case 4: msgpack_pack_int(&pk, 1); break;
    case 5: msgpack_pack_int(&pk, 1); S("gen"); msgpack_pack_int(&pk, 2); break;
    }
#undef S
    const void *bufs[1] = {sb.data};
    size_t lens[1] = {sb.size};
    err[0] = 0;
    proto_msg_t *m = proto_decode_frames(bufs, lens, 1, err, sizeof err);
    cr_assert_null(m, "gen kind %d name %s accepted", gen_kind, name);
    cr_assert(strstr(err, "field 'x'") && strstr(err, want), "want '%s' in '%s'", want, err);
    msgpack_sbuffer_destroy(&sb);
}

Test(proto_arena, bad_gen_and_forged) {
    shmarena_t *a = shmarena_new(SHMARENA_MIN_SIZE, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    const char *nm = shmarena_name(a);
    s_expect_bad(nm, 0, "bad gen");
    s_expect_bad(nm, 1, "bad gen");
    s_expect_bad(nm, 2, "bad gen");
    s_expect_bad(nm, 3, "bad gen");
    s_expect_bad(nm, 5, "bad gen");
    s_expect_bad(nm, 4, "stale");        /* a good shape, but no slot was ever put there */
    s_expect_bad("/x", 4, "name");       /* not an arena name: never opened */
    s_expect_bad("/ofa-arena-0-0", 4, "No such file");
    shmarena_destroy(&a);
}
