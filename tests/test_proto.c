/* test_proto.c: the message codec of common/proto.h: every field type through the
 * byte-level codec and through real ZeroMQ sockets (DEALER <-> ROUTER with identities),
 * large fields as zero-copy frames, the shared-memory transport and its lifetime rule,
 * deep copies, and every malformed input the decoder must refuse with a reason (never a
 * crash): each truncated prefix of a valid message included.
 *
 * Malformed envelopes are written with msgpack-c's packer directly, so each case states
 * on the wire exactly what a hostile or buggy peer could send. */
#include "proto.h"
#include "util.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zmq.h>

static char err[512];

/* ---------------------------------------------------------------- helpers */

static void pk_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* The standard head of an envelope: magic, v, kind, task, ids (5 entries). The caller
 * declared the map's size. */
static void pk_head(msgpack_packer *pk) {
    pk_str(pk, "magic");
    pk_str(pk, PROTO_MAGIC);
    pk_str(pk, "v");
    msgpack_pack_int(pk, PROTO_VERSION);
    pk_str(pk, "kind");
    msgpack_pack_int(pk, PROTO_SAMPLE);
    pk_str(pk, "task");
    pk_str(pk, "t");
    pk_str(pk, "ids");
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, 7);
}

/* Decode one buffer (plus optional extra frames); returns the message or NULL. */
static proto_msg_t *dec1(const void *buf, size_t len) {
    const void *bufs[1] = {buf};
    err[0] = 0;
    return proto_decode_frames(bufs, &len, 1, err, sizeof err);
}

/* The sbuffer's bytes must be refused with an error containing want. */
static void expect_bad_sb(msgpack_sbuffer *sb, const char *want) {
    proto_msg_t *m = dec1(sb->data, sb->size);
    cr_assert_null(m, "should be refused (want \"%s\")", want);
    cr_assert(strstr(err, want), "want \"%s\" in \"%s\"", want, err);
    msgpack_sbuffer_destroy(sb);
}

/* An envelope with the standard head and one field "x" whose value the statements in
 * the last argument pack. */
#define ONE_FIELD(sb, pk, ...)                                  \
    msgpack_sbuffer sb;                                             \
    msgpack_sbuffer_init(&sb);                                      \
    msgpack_packer pk;                                              \
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);           \
    msgpack_pack_map(&pk, 6);                                       \
    pk_head(&pk);                                                   \
    pk_str(&pk, "f");                                               \
    msgpack_pack_map(&pk, 1);                                       \
    pk_str(&pk, "x");                                               \
    __VA_ARGS__

/* A message with one field of every type and a tensor of every dtype. */
static proto_msg_t *mk_all_types(void) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "caption");
    proto_msg_set_op(m, "");
    proto_msg_add_id(m, 0);
    proto_msg_add_id(m, UINT64_MAX);
    proto_msg_add_id(m, (3ull << 40) | (1ull << 39) | 12345);
    proto_msg_set_int(m, "seq", 17);
    proto_msg_set_int(m, "neg", -5);
    proto_msg_set_int(m, "min", INT64_MIN);
    proto_msg_set_int(m, "max", INT64_MAX);
    proto_msg_set_float(m, "pi", 3.14159265358979);
    proto_msg_set_float(m, "tiny", -1e-300);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_str(m, "empty", "");
    proto_msg_set_str(m, "utf8", "caf\xc3\xa9 \xe2\x86\x92 ok");
    uint8_t raw[300];
    for (int i = 0; i < 300; i++)
        raw[i] = (uint8_t)(i * 7 + 3);
    proto_msg_set_bin(m, "img", raw, sizeof raw);
    proto_msg_set_bin(m, "nothing", raw, 0);
    for (int dt = 0; dt < PROTO__DTYPE_COUNT; dt++) {
        int64_t shape[2] = {2, 3};
        size_t n = 6 * proto_dtype_size((proto_dtype_t)dt);
        uint8_t *d = util_malloc(n);
        for (size_t i = 0; i < n; i++)
            d[i] = (uint8_t)(dt * 31 + i);
        char key[32];
        snprintf(key, sizeof key, "t_%s", proto_dtype_name((proto_dtype_t)dt));
        proto_msg_take_tensor(m, key, (proto_dtype_t)dt, 2, shape, d);
    }
    int64_t zero[1] = {0};
    proto_msg_set_tensor(m, "t_empty", PROTO_I32, 1, zero, NULL);
    int32_t scalar = 42;
    proto_msg_set_tensor(m, "t_scalar", PROTO_I32, 0, NULL, &scalar);
    return m;
}

/* a and b hold the same envelope and fields (values and bytes). */
static void assert_same(const proto_msg_t *a, const proto_msg_t *b) {
    cr_assert_eq(proto_msg_kind(a), proto_msg_kind(b));
    cr_assert_str_eq(proto_msg_task(a), proto_msg_task(b));
    cr_assert_str_eq(proto_msg_op(a), proto_msg_op(b));
    cr_assert_eq(proto_msg_n_ids(a), proto_msg_n_ids(b));
    for (int i = 0; i < proto_msg_n_ids(a); i++)
        cr_assert_eq(proto_msg_ids(a)[i], proto_msg_ids(b)[i], "id %d", i);
    cr_assert_eq(proto_msg_n_fields(a), proto_msg_n_fields(b));
    for (int i = 0; i < proto_msg_n_fields(a); i++) {
        const proto_field_t *fa = proto_msg_field(a, i);
        const proto_field_t *fb = proto_msg_get(b, fa->key);
        cr_assert_not_null(fb, "field %s missing", fa->key);
        cr_assert_eq(fa->type, fb->type, "field %s: type", fa->key);
        switch (fa->type) {
        case PV_INT: cr_assert_eq(fa->i, fb->i, "field %s", fa->key); break;
        case PV_FLOAT: cr_assert_eq(fa->f, fb->f, "field %s", fa->key); break;
        case PV_TENSOR:
            cr_assert_eq(fa->dtype, fb->dtype, "field %s", fa->key);
            cr_assert_eq(fa->ndim, fb->ndim, "field %s", fa->key);
            for (int d = 0; d < fa->ndim; d++)
                cr_assert_eq(fa->shape[d], fb->shape[d], "field %s dim %d", fa->key, d);
            /* fall through: the bytes */
            __attribute__((fallthrough));
        case PV_STR:
        case PV_BIN:
            cr_assert_eq(fa->len, fb->len, "field %s: len", fa->key);
            cr_assert(fa->len == 0 || memcmp(fa->data, fb->data, fa->len) == 0,
                      "field %s: bytes differ", fa->key);
            break;
        }
    }
}

/* ---------------------------------------------------------------- building */

Test(proto, setters_getters_remove_rename) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    cr_assert_str_eq(proto_msg_task(m), "");
    cr_assert_str_eq(proto_msg_op(m), "");
    proto_msg_set_op(m, "hello");
    proto_msg_set_int(m, "n", 3);
    proto_msg_set_int(m, "n", 4);                      /* replaces */
    cr_assert_eq(proto_msg_n_fields(m), 1);
    cr_assert_eq(proto_msg_get_int(m, "n", 0), 4);
    cr_assert_eq(proto_msg_get_float(m, "n", 0), 4.0);  /* ints read as floats */
    proto_msg_set_str(m, "n", "text");                 /* replaces with another type */
    cr_assert_eq(proto_msg_get_int(m, "n", -9), -9);
    cr_assert_str_eq(proto_msg_get_str(m, "n"), "text");
    cr_assert_null(proto_msg_get_str(m, "absent"));
    int64_t sh[1] = {2};
    int32_t v[2] = {1, 2};
    proto_msg_set_tensor(m, "t", PROTO_I32, 1, sh, v);
    cr_assert_not_null(proto_msg_get_tensor(m, "t", PROTO_I32));
    cr_assert_null(proto_msg_get_tensor(m, "t", PROTO_F32));   /* another dtype */
    cr_assert_eq(proto_msg_rename(m, "t", "n"), 0);            /* replaces "n" */
    cr_assert_eq(proto_msg_n_fields(m), 1);
    cr_assert_not_null(proto_msg_get_tensor(m, "n", PROTO_I32));
    cr_assert_eq(proto_msg_rename(m, "absent", "y"), -1);
    cr_assert_eq(proto_msg_rename(m, "n", "n"), 0);             /* to its own name */
    cr_assert_not_null(proto_msg_get_tensor(m, "n", PROTO_I32));
    cr_assert_eq(proto_msg_n_fields(m), 1);
    cr_assert_eq(proto_msg_remove(m, "n"), 0);
    cr_assert_eq(proto_msg_remove(m, "n"), -1);
    cr_assert_eq(proto_msg_n_fields(m), 0);
    proto_msg_destroy(&m);
    cr_assert_null(m);
    proto_msg_destroy(&m);   /* NULL is fine */
    for (int dt = 0; dt < PROTO__DTYPE_COUNT; dt++)
        cr_assert_eq(proto_dtype_from_name(proto_dtype_name((proto_dtype_t)dt)), dt);
    cr_assert_eq(proto_dtype_from_name("f16"), -1);
    cr_assert_str_eq(proto_kind_name(PROTO_CONTROL), "control");
    cr_assert_str_eq(proto_kind_name((proto_kind_t)99), "?");
}

/* ---------------------------------------------------------------- byte codec */

Test(proto, every_field_type_round_trips) {
    proto_msg_t *m = mk_all_types();
    size_t len;
    void *bytes = proto_encode_bytes(m, &len);
    proto_msg_t *d = dec1(bytes, len);
    cr_assert_not_null(d, "%s", err);
    assert_same(m, d);
    /* Decoded data is copied (the buffer may go away) and strings are NUL-terminated. */
    const proto_field_t *s = proto_msg_get(d, "split");
    cr_assert(s->own);
    cr_assert_eq(((const char *)s->data)[s->len], 0);
    /* Encoding is a function of the message: encoding the decoded copy gives the same
     * bytes (which the batcher's determinism test relies on). */
    size_t len2;
    void *bytes2 = proto_encode_bytes(d, &len2);
    cr_assert_eq(len2, len);
    cr_assert(memcmp(bytes, bytes2, len) == 0);
    free(bytes2);
    free(bytes);
    proto_msg_destroy(&d);
    proto_msg_destroy(&m);
}

Test(proto, every_kind_and_op_round_trips) {
    for (int k = 1; k <= PROTO__KIND_MAX; k++) {
        proto_msg_t *m = proto_msg_new((proto_kind_t)k, k % 2 ? "vqa" : NULL);
        if (k == PROTO_CONTROL)
            proto_msg_set_op(m, "heartbeat");
        size_t len;
        void *bytes = proto_encode_bytes(m, &len);
        proto_msg_t *d = dec1(bytes, len);
        cr_assert_not_null(d, "kind %d: %s", k, err);
        assert_same(m, d);
        free(bytes);
        proto_msg_destroy(&d);
        proto_msg_destroy(&m);
    }
}

/* Other writers (Python's msgpack) may use any integer width, float32, and bool: the
 * reader takes them all. Unknown envelope keys and tensor keys are skipped. */
Test(proto, foreign_encodings_accepted) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pk_str(&pk, "v");
    msgpack_pack_uint8(&pk, 1);
    pk_str(&pk, "extra");                 /* unknown: skipped */
    msgpack_pack_array(&pk, 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_map(&pk, 0);
    pk_str(&pk, "magic");
    pk_str(&pk, "OFAC");
    pk_str(&pk, "kind");
    msgpack_pack_int64(&pk, PROTO_CONTROL);
    pk_str(&pk, "op");
    pk_str(&pk, "eof");
    pk_str(&pk, "ids");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int8(&pk, 5);            /* a non-negative signed int is an id too */
    msgpack_pack_uint16(&pk, 300);
    pk_str(&pk, "f");
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "count");
    msgpack_pack_uint32(&pk, 100000);
    pk_str(&pk, "half");
    msgpack_pack_float(&pk, 0.5f);
    pk_str(&pk, "flag");
    msgpack_pack_true(&pk);
    pk_str(&pk, "t");
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "note");                  /* unknown tensor key: skipped */
    pk_str(&pk, "hi");
    pk_str(&pk, "data");
    msgpack_pack_bin(&pk, 4);
    msgpack_pack_bin_body(&pk, "\x01\x00\x02\x00", 4);
    pk_str(&pk, "shape");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint8(&pk, 2);
    pk_str(&pk, "dtype");
    pk_str(&pk, "u16");
    proto_msg_t *m = dec1(sb.data, sb.size);
    cr_assert_not_null(m, "%s", err);
    cr_assert_eq(proto_msg_kind(m), PROTO_CONTROL);
    cr_assert_str_eq(proto_msg_op(m), "eof");
    cr_assert_eq(proto_msg_n_ids(m), 2);
    cr_assert_eq(proto_msg_ids(m)[1], 300u);
    cr_assert_eq(proto_msg_get_int(m, "count", 0), 100000);
    cr_assert_eq(proto_msg_get_float(m, "half", 0), 0.5);
    cr_assert_eq(proto_msg_get_int(m, "flag", 0), 1);
    const proto_field_t *t = proto_msg_get_tensor(m, "t", PROTO_U16);
    cr_assert_not_null(t);
    cr_assert_eq(((const uint16_t *)t->data)[1], 2);
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&sb);
}

Test(proto, clone_is_deep) {
    proto_msg_t *m = mk_all_types();
    proto_msg_set_op(m, "x");
    proto_msg_t *c = proto_msg_clone(m);
    assert_same(m, c);
    for (int i = 0; i < proto_msg_n_fields(c); i++) {
        const proto_field_t *fc = proto_msg_field(c, i);
        if (fc->type >= PV_STR) {
            cr_assert(fc->own, "field %s", fc->key);
            cr_assert_neq(fc->data, proto_msg_get(m, fc->key)->data, "field %s", fc->key);
        }
    }
    proto_msg_t *c2 = proto_msg_clone(c);
    proto_msg_destroy(&m);   /* the copy outlives the original */
    assert_same(c2, c);
    proto_msg_destroy(&c);
    proto_msg_destroy(&c2);
}

/* ---------------------------------------------------------------- sockets */

typedef struct {
    void *ctx, *router, *dealer;
} s_pair_t;

static int s_pair_n;

/* A ROUTER bound on inproc and a DEALER with routing id "w1" connected to it. */
static s_pair_t pair_new(void) {
    s_pair_t p;
    p.ctx = zmq_ctx_new();
    p.router = zmq_socket(p.ctx, ZMQ_ROUTER);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://proto-%d", s_pair_n++);
    cr_assert_eq(zmq_bind(p.router, ep), 0);
    p.dealer = zmq_socket(p.ctx, ZMQ_DEALER);
    zmq_setsockopt(p.dealer, ZMQ_ROUTING_ID, "w1", 2);
    cr_assert_eq(zmq_connect(p.dealer, ep), 0);
    int linger = 0, tmo = 5000;
    zmq_setsockopt(p.router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p.dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p.router, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(p.dealer, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    return p;
}

static void pair_destroy(s_pair_t *p) {
    zmq_close(p->router);
    zmq_close(p->dealer);
    zmq_ctx_term(p->ctx);
}

Test(proto, dealer_router_round_trip_with_identity) {
    s_pair_t p = pair_new();
    proto_msg_t *m = mk_all_types();
    proto_msg_t *keep = proto_msg_clone(m);
    cr_assert_eq(proto_send(p.dealer, NULL, 0, &m, 0), 0);
    cr_assert_null(m, "proto_send takes ownership");
    char ident[256];
    size_t identlen = 0;
    proto_msg_t *r = proto_recv(p.router, ident, &identlen, 0, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    cr_assert_eq(identlen, 2);
    cr_assert(memcmp(ident, "w1", 2) == 0);
    assert_same(keep, r);
    /* Answer through the ROUTER by identity. */
    proto_msg_set_int(r, "@hop", 1);
    proto_msg_set_int(keep, "@hop", 1);
    cr_assert_eq(proto_send(p.router, ident, identlen, &r, 0), 0);
    proto_msg_t *back = proto_recv(p.dealer, NULL, NULL, 0, err, sizeof err);
    cr_assert_not_null(back, "%s", err);
    assert_same(keep, back);
    /* Nothing waiting: NULL without an error. */
    cr_assert_null(proto_recv(p.dealer, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err));
    cr_assert_eq(err[0], 0);
    proto_msg_destroy(&back);
    proto_msg_destroy(&keep);
    pair_destroy(&p);
}

/* Receive a whole multipart message raw: number of frames and their sizes. */
static int raw_recv(void *sock, zmq_msg_t *frames, int max) {
    int n = 0, more = 1;
    while (more) {
        cr_assert_lt(n, max);
        zmq_msg_init(&frames[n]);
        cr_assert_geq(zmq_msg_recv(&frames[n], sock, 0), 0, "%s", zmq_strerror(errno));
        more = zmq_msg_more(&frames[n]);
        n++;
    }
    return n;
}

Test(proto, large_fields_travel_as_frames_without_copies) {
    s_pair_t p = pair_new();
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "t");
    size_t big = 3 * PROTO_INLINE_MAX + 5;
    uint8_t *bin = util_malloc(big);
    for (size_t i = 0; i < big; i++)
        bin[i] = (uint8_t)(i * 13 + 1);
    proto_msg_set_bin(m, "img", bin, big);
    int64_t sh[2] = {100, 200};
    float *fl = util_malloc(100 * 200 * sizeof(float));
    for (int i = 0; i < 100 * 200; i++)
        fl[i] = (float)i * 0.25f;
    proto_msg_set_tensor(m, "feat", PROTO_F32, 2, sh, fl);
    proto_msg_set_bin(m, "small", bin, 10);   /* stays inline */
    proto_msg_t *keep = proto_msg_clone(m);

    /* On the wire: the envelope plus one frame per large field, in field order. */
    proto_msg_t *c = proto_msg_clone(m);
    cr_assert_eq(proto_send(p.dealer, NULL, 0, &c, 0), 0);
    zmq_msg_t frames[8];
    int n = raw_recv(p.router, frames, 8);
    cr_assert_eq(n, 4, "identity + envelope + 2 frames, got %d", n);
    cr_assert_eq(zmq_msg_size(&frames[2]), big);
    cr_assert(memcmp(zmq_msg_data(&frames[2]), bin, big) == 0);
    cr_assert_eq(zmq_msg_size(&frames[3]), 100 * 200 * sizeof(float));
    cr_assert_lt(zmq_msg_size(&frames[1]), 1024, "large data is not in the envelope");
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);

    /* Through proto_recv: fields point into the received frames (not copies). */
    cr_assert_eq(proto_send(p.dealer, NULL, 0, &m, 0), 0);
    char ident[256];
    size_t identlen;
    proto_msg_t *r = proto_recv(p.router, ident, &identlen, 0, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    assert_same(keep, r);
    const proto_field_t *fi = proto_msg_get(r, "img"), *ff = proto_msg_get(r, "feat");
    cr_assert_eq(fi->type, PV_BIN);
    cr_assert_not(fi->own);
    cr_assert_eq(fi->frame, 1);
    cr_assert_eq(ff->type, PV_TENSOR);
    cr_assert_not(ff->own);
    cr_assert_eq(ff->frame, 2);
    const proto_field_t *fs = proto_msg_get(r, "small");
    cr_assert_eq(fs->frame, 0, "inline data lies in the envelope frame");

    /* Passed on as received (the broker's and workers' case): still intact. */
    cr_assert_eq(proto_send(p.router, ident, identlen, &r, 0), 0);
    proto_msg_t *back = proto_recv(p.dealer, NULL, NULL, 0, err, sizeof err);
    cr_assert_not_null(back, "%s", err);
    assert_same(keep, back);
    /* A deep copy of a received message owns its data and outlives the frames. */
    proto_msg_t *cl = proto_msg_clone(back);
    proto_msg_destroy(&back);
    assert_same(keep, cl);
    cr_assert(proto_msg_get(cl, "img")->own);
    cr_assert_eq(proto_msg_get(cl, "img")->frame, -1);
    proto_msg_destroy(&cl);
    proto_msg_destroy(&keep);
    free(bin);
    free(fl);
    pair_destroy(&p);
}

/* Names under /dev/shm that this process created (proto names them /ofa-PID-N). */
static int count_own_shm(void) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "ofa-%d-", (int)getpid());
    DIR *d = opendir("/dev/shm");
    if (!d)
        return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

/* The shm name inside the raw envelope: f.<key>.data.name, found with msgpack-c. */
static void shm_name_of(const void *env, size_t len, const char *key, char *name,
                        size_t cap) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, env, len, NULL), MSGPACK_UNPACK_SUCCESS);
    name[0] = 0;
    msgpack_object_map top = u.data.via.map;
    for (uint32_t i = 0; i < top.size; i++) {
        msgpack_object_kv *kv = &top.ptr[i];
        if (kv->key.via.str.size != 1 || kv->key.via.str.ptr[0] != 'f')
            continue;
        for (uint32_t j = 0; j < kv->val.via.map.size; j++) {
            msgpack_object_kv *fk = &kv->val.via.map.ptr[j];
            if (fk->key.via.str.size != strlen(key) ||
                memcmp(fk->key.via.str.ptr, key, strlen(key)) != 0)
                continue;
            cr_assert_eq(fk->val.type, MSGPACK_OBJECT_MAP);
            for (uint32_t k = 0; k < fk->val.via.map.size; k++) {
                msgpack_object_kv *tk = &fk->val.via.map.ptr[k];
                if (tk->key.via.str.size == 4 && memcmp(tk->key.via.str.ptr, "data", 4) == 0) {
                    cr_assert_eq(tk->val.type, MSGPACK_OBJECT_MAP, "data is a descriptor");
                    for (uint32_t q = 0; q < tk->val.via.map.size; q++) {
                        msgpack_object_kv *dk = &tk->val.via.map.ptr[q];
                        if (dk->key.via.str.size == 4 &&
                            memcmp(dk->key.via.str.ptr, "name", 4) == 0)
                            snprintf(name, cap, "%.*s", (int)dk->val.via.str.size,
                                     dk->val.via.str.ptr);
                    }
                }
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    cr_assert(name[0], "no shm descriptor for %s", key);
}

Test(proto, shared_memory_transport_and_lifetime) {
    s_pair_t p = pair_new();
    int before = count_own_shm();
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "t");
    int64_t sh[3] = {4, 36, 768};
    size_t n = 4 * 36 * 768;
    uint8_t *px = util_malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i % 251);
    proto_msg_set_tensor(m, "img", PROTO_U8, 3, sh, px);
    proto_msg_set_bin(m, "raw", "abc", 3);
    proto_msg_t *keep = proto_msg_clone(m);
    cr_assert_eq(proto_msg_field_to_shm(m, "img", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_msg_field_to_shm(m, "raw", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_msg_field_to_shm(m, "absent", err, sizeof err), -1);
    cr_assert(strstr(err, "no field"));
    cr_assert_eq(count_own_shm(), before + 2, "the objects exist until received");

    /* 1. Raw: the envelope names the object; decoding maps it and unlinks the name. */
    proto_msg_t *c = proto_msg_clone(m);
    cr_assert_eq(proto_msg_field_to_shm(c, "img", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_msg_field_to_shm(c, "raw", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_send(p.dealer, NULL, 0, &c, 0), 0);
    zmq_msg_t frames[4];
    int nf = raw_recv(p.router, frames, 4);
    cr_assert_eq(nf, 2, "shm data travels in no frame");
    char name[256];
    shm_name_of(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), "img", name, sizeof name);
    int fd = shm_open(name, O_RDONLY, 0);
    cr_assert_geq(fd, 0, "%s exists before it is received", name);
    close(fd);
    const void *bufs[1] = {zmq_msg_data(&frames[1])};
    size_t lens[1] = {zmq_msg_size(&frames[1])};
    proto_msg_t *d = proto_decode_frames(bufs, lens, 1, err, sizeof err);
    cr_assert_not_null(d, "%s", err);
    assert_same(keep, d);
    errno = 0;
    cr_assert_lt(shm_open(name, O_RDONLY, 0), 0, "%s is unlinked once received", name);
    cr_assert_eq(errno, ENOENT);
    /* The data stays readable after the name is gone: the mapping keeps it. */
    const proto_field_t *f = proto_msg_get(d, "img");
    cr_assert_eq(f->frame, -1);
    cr_assert_not(f->own);
    cr_assert_eq(((const uint8_t *)f->data)[n - 1], (uint8_t)((n - 1) % 251));
    /* A second receiver of the same descriptor finds no object: a clear error. */
    proto_msg_destroy(&d);
    d = proto_decode_frames(bufs, lens, 1, err, sizeof err);
    cr_assert_null(d);
    cr_assert(strstr(err, "shm"), "%s", err);
    for (int i = 0; i < nf; i++)
        zmq_msg_close(&frames[i]);

    /* 2. Through proto_recv, and passed on again (a worker forwarding the sample). */
    cr_assert_eq(proto_send(p.dealer, NULL, 0, &m, 0), 0);
    char ident[256];
    size_t identlen;
    proto_msg_t *r = proto_recv(p.router, ident, &identlen, 0, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    assert_same(keep, r);
    cr_assert_eq(count_own_shm(), before, "every name unlinked by its receiver");
    cr_assert_eq(proto_send(p.router, ident, identlen, &r, 0), 0);
    proto_msg_t *back = proto_recv(p.dealer, NULL, NULL, 0, err, sizeof err);
    cr_assert_not_null(back, "%s", err);
    assert_same(keep, back);
    proto_msg_destroy(&back);
    cr_assert_eq(count_own_shm(), before);
    proto_msg_destroy(&keep);
    free(px);
    pair_destroy(&p);
}

/* Until a message is sent, its shared-memory objects are its own: dropping the message,
 * replacing or removing the field, or a send that fails must not leave them behind in
 * /dev/shm, since no receiver will ever unlink them. */
Test(proto, unsent_shared_memory_is_unlinked_by_the_writer) {
    int before = count_own_shm();
    int64_t sh[1] = {64};
    uint8_t px[64] = {1, 2, 3};
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "t");
    proto_msg_set_tensor(m, "a", PROTO_U8, 1, sh, px);
    proto_msg_set_tensor(m, "b", PROTO_U8, 1, sh, px);
    proto_msg_set_bin(m, "c", "xyz", 3);
    cr_assert_eq(proto_msg_field_to_shm(m, "a", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_msg_field_to_shm(m, "b", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_msg_field_to_shm(m, "c", err, sizeof err), 0, "%s", err);
    cr_assert_eq(count_own_shm(), before + 3);
    proto_msg_set_int(m, "a", 5);          /* replaced */
    cr_assert_eq(count_own_shm(), before + 2, "a replaced field's object is unlinked");
    cr_assert_eq(proto_msg_remove(m, "b"), 0);
    cr_assert_eq(count_own_shm(), before + 1, "a removed field's object is unlinked");
    proto_msg_destroy(&m);
    cr_assert_eq(count_own_shm(), before, "an unsent message's objects are unlinked");

    /* A send that fails (a ROUTER told to fail on unknown peers) unlinks them too. */
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1;
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    cr_assert_eq(zmq_bind(router, "inproc://shm-fail"), 0);
    m = proto_msg_new(PROTO_SAMPLE, "t");
    proto_msg_set_tensor(m, "a", PROTO_U8, 1, sh, px);
    cr_assert_eq(proto_msg_field_to_shm(m, "a", err, sizeof err), 0, "%s", err);
    cr_assert_eq(count_own_shm(), before + 1);
    cr_assert_eq(proto_send(router, "nobody", 6, &m, ZMQ_DONTWAIT), -1);
    cr_assert_null(m, "proto_send takes the message even when it fails");
    cr_assert_eq(count_own_shm(), before, "a failed send unlinks the objects");
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* A message bound for shared memory: proto_encode_bytes still writes every field inline
 * (its bytes go to files and comparisons), and putting a field into shared memory twice
 * leaves one object, not two. */
Test(proto, shm_fields_encode_inline_and_replace_their_object) {
    int before = count_own_shm();
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "t");
    proto_msg_set_bin(m, "raw", "abcdef", 6);
    cr_assert_eq(proto_msg_field_to_shm(m, "raw", err, sizeof err), 0, "%s", err);
    cr_assert_eq(proto_msg_field_to_shm(m, "raw", err, sizeof err), 0, "%s", err);
    cr_assert_eq(count_own_shm(), before + 1, "the first object is unlinked");
    size_t len;
    void *bytes = proto_encode_bytes(m, &len);
    proto_msg_t *d = dec1(bytes, len);
    cr_assert_not_null(d, "%s", err);
    const proto_field_t *f = proto_msg_get(d, "raw");
    cr_assert_eq(f->type, PV_BIN);
    cr_assert_eq(f->len, 6);
    cr_assert(memcmp(f->data, "abcdef", 6) == 0);
    cr_assert_eq(count_own_shm(), before + 1, "decoding inline bytes opens no object");
    free(bytes);
    proto_msg_destroy(&d);
    proto_msg_destroy(&m);
    cr_assert_eq(count_own_shm(), before, "an unsent object dies with its message");
}

Test(proto, malformed_message_on_a_socket_is_consumed) {
    s_pair_t p = pair_new();
    zmq_send(p.dealer, "\x93\x01\x02\x03", 4, 0);   /* an array, not a map */
    char ident[256];
    size_t identlen;
    err[0] = 0;
    cr_assert_null(proto_recv(p.router, ident, &identlen, 0, err, sizeof err));
    cr_assert(strstr(err, "not a msgpack map"), "%s", err);
    cr_assert_eq(identlen, 2, "the identity is known even for garbage");
    /* A frame-only message (identity and nothing else) from a ROUTER's view. */
    zmq_send(p.dealer, "", 0, 0);
    cr_assert_null(proto_recv(p.router, ident, &identlen, 0, err, sizeof err));
    cr_assert(err[0]);
    /* The next good message is received normally. */
    proto_msg_t *m = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(m, "n", 3);
    cr_assert_eq(proto_send(p.dealer, NULL, 0, &m, 0), 0);
    proto_msg_t *r = proto_recv(p.router, ident, &identlen, 0, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    cr_assert_eq(proto_msg_get_int(r, "n", 0), 3);
    proto_msg_destroy(&r);
    pair_destroy(&p);
}

/* ---------------------------------------------------------------- malformed envelopes */

Test(proto, bad_magic_version_kind) {
    static const struct {
        const char *magic;
        int v, kind;
        const char *want;
    } cases[] = {
        {"OFAX", 1, 1, "bad magic"},
        {"OFA", 1, 1, "bad magic"},
        {"OFAC", 2, 1, "unsupported version"},
        {"OFAC", 0, 1, "unsupported version"},
        {"OFAC", 1, 0, "unknown kind"},
        {"OFAC", 1, 7, "unknown kind"},
        {"OFAC", 1, -1, "unknown kind"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        pk_str(&pk, "magic");
        pk_str(&pk, cases[i].magic);
        pk_str(&pk, "v");
        msgpack_pack_int(&pk, cases[i].v);
        pk_str(&pk, "kind");
        msgpack_pack_int(&pk, cases[i].kind);
        expect_bad_sb(&sb, cases[i].want);
    }
    /* Magic of the wrong type, no magic, no version, no kind. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "magic");
    msgpack_pack_int(&pk, 5);
    expect_bad_sb(&sb, "bad magic");
    msgpack_sbuffer_init(&sb);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "v");
    msgpack_pack_int(&pk, 1);
    pk_str(&pk, "kind");
    msgpack_pack_int(&pk, 1);
    expect_bad_sb(&sb, "no magic");
    msgpack_sbuffer_init(&sb);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "magic");
    pk_str(&pk, "OFAC");
    pk_str(&pk, "kind");
    msgpack_pack_int(&pk, 1);
    expect_bad_sb(&sb, "missing v");
    msgpack_sbuffer_init(&sb);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "magic");
    pk_str(&pk, "OFAC");
    pk_str(&pk, "v");
    msgpack_pack_int(&pk, 1);
    expect_bad_sb(&sb, "missing kind");
}

Test(proto, envelope_not_a_map_or_with_garbage) {
    static const struct {
        const char *bytes;
        size_t len;
    } notmap[] = {
        {"", 0},
        {"\x90", 1},               /* empty array */
        {"\xa4OFAC", 5},           /* a string */
        {"\xc0", 1},               /* nil */
        {"\xc1", 1},               /* never-used byte */
        {"\x01", 1},
    };
    for (size_t i = 0; i < sizeof notmap / sizeof *notmap; i++) {
        cr_assert_null(dec1(notmap[i].bytes, notmap[i].len), "case %zu", i);
        cr_assert(strstr(err, "not a msgpack map"), "case %zu: %s", i, err);
    }
    /* A map key that is not a string. */
    cr_assert_null(dec1("\x81\x01\x02", 3));
    cr_assert(strstr(err, "not a string"), "%s", err);
    /* A valid message followed by one more byte. */
    proto_msg_t *m = mk_all_types();
    size_t len;
    uint8_t *bytes = proto_encode_bytes(m, &len);
    bytes = util_realloc(bytes, len + 1);
    bytes[len] = 0xc0;
    cr_assert_null(dec1(bytes, len + 1));
    cr_assert(strstr(err, "1 bytes of trailing garbage"), "%s", err);
    /* No frames at all. */
    err[0] = 0;
    cr_assert_null(proto_decode_frames(NULL, NULL, 0, err, sizeof err));
    cr_assert(strstr(err, "empty"), "%s", err);
    free(bytes);
    proto_msg_destroy(&m);
}

Test(proto, bad_task_op_and_ids) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    /* ids: not an array; a negative int; a string; a float. */
    const int bad_ids = 4;
    for (int c = 0; c < bad_ids; c++) {
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        pk_str(&pk, "magic");
        pk_str(&pk, "OFAC");
        pk_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pk_str(&pk, "kind");
        msgpack_pack_int(&pk, 1);
        pk_str(&pk, "ids");
        if (c == 0) {
            msgpack_pack_uint64(&pk, 5);
            expect_bad_sb(&sb, "ids must be an array");
            continue;
        }
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, 5);
        if (c == 1)
            msgpack_pack_int64(&pk, -1);
        else if (c == 2)
            pk_str(&pk, "12");
        else
            msgpack_pack_double(&pk, 1.0);
        expect_bad_sb(&sb, "id 1 is not an unsigned int");
    }
    /* task and op: not strings, or longer than the envelope keeps. */
    char longtask[200];
    memset(longtask, 'a', sizeof longtask - 1);
    longtask[sizeof longtask - 1] = 0;
    for (int c = 0; c < 3; c++) {
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        pk_str(&pk, "magic");
        pk_str(&pk, "OFAC");
        pk_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pk_str(&pk, "kind");
        msgpack_pack_int(&pk, 6);
        pk_str(&pk, c == 2 ? "op" : "task");
        if (c == 0)
            msgpack_pack_int(&pk, 3);
        else
            pk_str(&pk, longtask);
        expect_bad_sb(&sb, c == 2 ? "bad op" : "bad task");
    }
}

Test(proto, bad_fields) {
    /* Field value of an unsupported type: nil, array, ext. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_nil(&pk););
        expect_bad_sb(&sb, "field 'x': unsupported value type");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_array(&pk, 1); msgpack_pack_int(&pk, 1););
        expect_bad_sb(&sb, "field 'x': unsupported value type");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_ext(&pk, 1, 1); msgpack_pack_ext_body(&pk, "z", 1););
        expect_bad_sb(&sb, "field 'x': unsupported value type");
    }
    /* An integer beyond int64. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_uint64(&pk, UINT64_MAX););
        expect_bad_sb(&sb, "integer out of range");
    }
    /* Tensor: shape and data disagree. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 3); pk_str(&pk, "dtype"); pk_str(&pk, "i32");
                  pk_str(&pk, "shape"); msgpack_pack_array(&pk, 2); msgpack_pack_int(&pk, 2);
                  msgpack_pack_int(&pk, 3); pk_str(&pk, "data"); msgpack_pack_bin(&pk, 20);
                  msgpack_pack_bin_body(&pk, "01234567890123456789", 20););
        expect_bad_sb(&sb, "shape needs 24 bytes, data has 20");
    }
    /* Tensor: a shape whose product overflows 64 bits is a mismatch, not a wrap-around. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 3); pk_str(&pk, "dtype"); pk_str(&pk, "i64");
                  pk_str(&pk, "shape"); msgpack_pack_array(&pk, 3);
                  msgpack_pack_int64(&pk, 1LL << 31); msgpack_pack_int64(&pk, 1LL << 31);
                  msgpack_pack_int64(&pk, 1LL << 31); pk_str(&pk, "data");
                  msgpack_pack_bin(&pk, 0); msgpack_pack_bin_body(&pk, "", 0););
        expect_bad_sb(&sb, "shape needs");
    }
    /* Tensor: unknown dtype; dtype not a string. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 3); pk_str(&pk, "dtype"); pk_str(&pk, "f16");
                  pk_str(&pk, "shape"); msgpack_pack_array(&pk, 1); msgpack_pack_int(&pk, 1);
                  pk_str(&pk, "data"); msgpack_pack_bin(&pk, 2);
                  msgpack_pack_bin_body(&pk, "ab", 2););
        expect_bad_sb(&sb, "unknown dtype 'f16'");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "dtype");
                  msgpack_pack_int(&pk, 1););
        expect_bad_sb(&sb, "bad dtype");
    }
    /* Tensor: too many dimensions; a negative dimension; a dimension not an int. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 3); pk_str(&pk, "dtype"); pk_str(&pk, "u8");
                  pk_str(&pk, "shape"); msgpack_pack_array(&pk, PROTO_MAX_DIMS + 1);
                  for (int d = 0; d <= PROTO_MAX_DIMS; d++) msgpack_pack_int(&pk, 1);
                  pk_str(&pk, "data"); msgpack_pack_bin(&pk, 1);
                  msgpack_pack_bin_body(&pk, "a", 1););
        expect_bad_sb(&sb, "at most 6");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 2); pk_str(&pk, "shape");
                  msgpack_pack_array(&pk, 2); msgpack_pack_int(&pk, 1);
                  msgpack_pack_int(&pk, -1););
        expect_bad_sb(&sb, "bad dimension 1");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 2); pk_str(&pk, "shape");
                  msgpack_pack_array(&pk, 1); pk_str(&pk, "3"););
        expect_bad_sb(&sb, "bad dimension 0");
    }
    /* Tensor: dtype without shape; no data; data of a wrong type. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 2); pk_str(&pk, "dtype"); pk_str(&pk, "u8");
                  pk_str(&pk, "data"); msgpack_pack_bin(&pk, 1);
                  msgpack_pack_bin_body(&pk, "a", 1););
        expect_bad_sb(&sb, "needs dtype and shape");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "dtype"); pk_str(&pk, "u8"););
        expect_bad_sb(&sb, "field 'x': no data");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data"); pk_str(&pk, "abc"););
        expect_bad_sb(&sb, "data must be bin, frame index or shm descriptor");
    }
    /* A tensor map with a non-string key, and one with too many keys. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); msgpack_pack_int(&pk, 1);
                  msgpack_pack_int(&pk, 1););
        expect_bad_sb(&sb, "bad tensor key");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 9);
                  for (int k = 0; k < 9; k++) { pk_str(&pk, "k"); msgpack_pack_int(&pk, k); });
        expect_bad_sb(&sb, "tensor map with 9 keys");
    }
    /* Frame index out of range: 0 (the envelope itself) and past the last frame. */
    for (int idx = 0; idx < 3; idx += 2) {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_uint64(&pk, (uint64_t)idx););
        expect_bad_sb(&sb, idx == 0 ? "frame 0 of 1" : "frame 2 of 1");
    }
    /* Field keys: empty, too long, duplicated. */
    char longkey[PROTO_MAX_KEY + 1];
    memset(longkey, 'k', PROTO_MAX_KEY);
    longkey[PROTO_MAX_KEY] = 0;
    for (int c = 0; c < 3; c++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        pk_head(&pk);
        pk_str(&pk, "f");
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, c == 0 ? "" : c == 1 ? longkey : "seq");
        msgpack_pack_int(&pk, 1);
        pk_str(&pk, "seq");
        msgpack_pack_int(&pk, 2);
        expect_bad_sb(&sb, c == 2 ? "field 'seq' appears twice" : "field 0: bad key");
    }
    /* A key with a NUL byte inside. */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        pk_head(&pk);
        pk_str(&pk, "f");
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str(&pk, 3);
        msgpack_pack_str_body(&pk, "a\0b", 3);
        msgpack_pack_int(&pk, 1);
        expect_bad_sb(&sb, "NUL");
    }
    /* "f" not a map. */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        pk_head(&pk);
        pk_str(&pk, "f");
        msgpack_pack_array(&pk, 0);
        expect_bad_sb(&sb, "f must be a map");
    }
}

Test(proto, bad_shm_descriptors) {
    /* Missing name (the error must name the field and the problem, intact). */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 2); pk_str(&pk, "offset"); msgpack_pack_int(&pk, 0);
                  pk_str(&pk, "len"); msgpack_pack_int(&pk, 4););
        expect_bad_sb(&sb, "field 'x': shm descriptor needs name, offset and len");
    }
    /* A name that is not /NAME (a path elsewhere must never be opened). */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 3); pk_str(&pk, "name"); pk_str(&pk, "/a/../b");
                  pk_str(&pk, "offset"); msgpack_pack_int(&pk, 0);
                  pk_str(&pk, "len"); msgpack_pack_int(&pk, 4););
        expect_bad_sb(&sb, "field 'x': shm descriptor: name '/a/../b' must be /NAME");
    }
    /* Negative offset; name not a string. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 3); pk_str(&pk, "name"); pk_str(&pk, "/x");
                  pk_str(&pk, "offset"); msgpack_pack_int(&pk, -3);
                  pk_str(&pk, "len"); msgpack_pack_int(&pk, 4););
        expect_bad_sb(&sb, "field 'x': shm descriptor: bad offset");
    }
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 1); pk_str(&pk, "name"); msgpack_pack_int(&pk, 1););
        expect_bad_sb(&sb, "field 'x': shm descriptor: bad name");
    }
    /* A descriptor map with too many keys. */
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 9);
                  for (int k = 0; k < 9; k++) { pk_str(&pk, "k"); msgpack_pack_int(&pk, k); });
        expect_bad_sb(&sb, "field 'x': bad shm descriptor");
    }
    /* An object that does not exist. */
    char name[64];
    snprintf(name, sizeof name, "/ofa-test-absent-%d", (int)getpid());
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 3); pk_str(&pk, "name"); pk_str(&pk, name);
                  pk_str(&pk, "offset"); msgpack_pack_int(&pk, 0);
                  pk_str(&pk, "len"); msgpack_pack_int(&pk, 4););
        expect_bad_sb(&sb, "No such file");
    }
    /* offset + len beyond the object: refused, and the name is still unlinked. */
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 8), 0);
    close(fd);
    {
        ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 1); pk_str(&pk, "data");
                  msgpack_pack_map(&pk, 3); pk_str(&pk, "name"); pk_str(&pk, name);
                  pk_str(&pk, "offset"); msgpack_pack_int(&pk, 6);
                  pk_str(&pk, "len"); msgpack_pack_int(&pk, 4););
        expect_bad_sb(&sb, "offset+len beyond the object");
    }
    cr_assert_lt(shm_open(name, O_RDONLY, 0), 0);
}

/* A known envelope key given twice is refused: two "f" maps of 200 fields each would
 * otherwise make one message of 400 fields, past the limit and impossible to re-send. */
Test(proto, repeated_envelope_keys) {
    static const char *keys[] = {"magic", "v", "kind", "task", "op", "ids", "f"};
    for (size_t c = 0; c < sizeof keys / sizeof *keys; c++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 9);
        pk_head(&pk);
        pk_str(&pk, "op");
        pk_str(&pk, "x");
        pk_str(&pk, "f");
        msgpack_pack_map(&pk, 0);
        /* the repeated key, with a value valid on its own */
        pk_str(&pk, keys[c]);
        if (c == 0)
            pk_str(&pk, PROTO_MAGIC);
        else if (c == 1 || c == 2)
            msgpack_pack_int(&pk, 1);
        else if (c == 3 || c == 4)
            pk_str(&pk, "y");
        else if (c == 5)
            msgpack_pack_array(&pk, 0);
        else
            msgpack_pack_map(&pk, 0);
        pk_str(&pk, "other");   /* unknown keys may repeat: skipped */
        msgpack_pack_int(&pk, 1);
        char want[64];
        snprintf(want, sizeof want, "key '%s' appears twice", keys[c]);
        expect_bad_sb(&sb, want);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pk_head(&pk);
    pk_str(&pk, "other");
    msgpack_pack_int(&pk, 1);
    pk_str(&pk, "other");
    msgpack_pack_int(&pk, 2);
    proto_msg_t *m = dec1(sb.data, sb.size);
    cr_assert_not_null(m, "%s", err);
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&sb);
}

/* Length headers that promise far more than the bytes present fail at once: the reader
 * never allocates or loops on a header's say-so. */
Test(proto, huge_declared_lengths_fail_fast) {
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        {"\xdf\xff\xff\xff\xff", 5},                           /* map32 of 4G entries */
        {"\xde\xff\xff\xa5magic", 9},                          /* map16 of 65535 */
        {"\x81\xa3ids\xdd\xff\xff\xff\xff", 10},               /* ids: array32 4G */
        {"\x81\xa3ids\xdd\x00\x01\x00\x00", 10},               /* ids: 65536 (allowed count,
                                                                  absent bytes) */
        {"\x81\xa1" "f\xdf\xff\xff\xff\xff", 8},               /* f: map32 4G */
        {"\x81\xa1" "f\xde\x00\xff", 6},                       /* f: 255 fields, no bytes */
        {"\x81\xa1z\xdd\xff\xff\xff\xff", 8},                  /* unknown key: array32 4G */
        {"\x81\xa1z\xdf\xff\xff\xff\xff", 8},                  /* unknown key: map32 4G */
        {"\x81\xa1z\xc6\xff\xff\xff\xff", 8},                  /* unknown key: bin32 4G */
        {"\x81\xa1z\xdb\xff\xff\xff\xff", 8},                  /* unknown key: str32 4G */
        {"\x81\xa1z\xc9\xff\xff\xff\xff\x01", 9},              /* unknown key: ext32 4G */
        {"\x81\xa1" "f\x81\xa1x\xc6\x7f\xff\xff\xff", 11},     /* field: bin32 2G */
        {"\x81\xa1" "f\x81\xa1x\x81\xa4" "data\xc6\xff\xff\xff\xff", 17},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double t0 = util_now();
        cr_assert_null(dec1(cases[i].bytes, cases[i].len), "case %zu", i);
        cr_assert(err[0], "case %zu: an error", i);
        cr_assert_lt(util_now() - t0, 0.05, "case %zu took %.3f s", i, util_now() - t0);
    }
    /* Deep nesting under an unknown key is refused, not recursed into without bound. */
    uint8_t deep[4096];
    size_t n = 0;
    memcpy(deep, "\x81\xa1z", 3);
    n = 3;
    while (n < sizeof deep)
        deep[n++] = 0x91;   /* array of one element, nested */
    cr_assert_null(dec1(deep, sizeof deep));
    cr_assert(err[0]);
    /* Too many frames. */
    const void *bufs[PROTO_MAX_FRAMES + 1];
    size_t lens[PROTO_MAX_FRAMES + 1];
    for (int i = 0; i <= PROTO_MAX_FRAMES; i++)
        bufs[i] = "\x80", lens[i] = 1;
    cr_assert_null(proto_decode_frames(bufs, lens, PROTO_MAX_FRAMES + 1, err, sizeof err));
    cr_assert(strstr(err, "frames"), "%s", err);
}

/* Every proper prefix of a valid message is an error (never a crash, never a message). */
Test(proto, every_truncation_is_an_error) {
    proto_msg_t *m = mk_all_types();
    proto_msg_set_op(m, "hello");
    size_t len;
    uint8_t *bytes = proto_encode_bytes(m, &len);
    for (size_t cut = 0; cut < len; cut++) {
        /* An exact-size copy so that any read past the end is caught by tools. */
        uint8_t *pre = util_malloc(cut ? cut : 1);
        memcpy(pre, bytes, cut);
        proto_msg_t *d = dec1(pre, cut);
        cr_assert_null(d, "prefix of %zu of %zu bytes decoded", cut, len);
        cr_assert(err[0], "prefix %zu: no reason given", cut);
        free(pre);
    }
    proto_msg_t *d = dec1(bytes, len);
    cr_assert_not_null(d, "%s", err);
    proto_msg_destroy(&d);
    free(bytes);
    proto_msg_destroy(&m);
}

/* Random corruptions of a valid message: each gives a message or an error. */
Test(proto, random_corruptions_never_crash) {
    proto_msg_t *m = mk_all_types();
    size_t len;
    uint8_t *bytes = proto_encode_bytes(m, &len);
    util_rng_t rng = {2024};
    uint8_t *buf = util_malloc(len + 16);
    int ok = 0, bad = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, bytes, len);
        size_t n = len;
        int k = 1 + (int)(util_rng_next(&rng) % 4);
        for (int j = 0; j < k; j++) {
            size_t at = util_rng_next(&rng) % n;
            switch (util_rng_next(&rng) % 3) {
            case 0: buf[at] = (uint8_t)util_rng_next(&rng); break;
            case 1: buf[at] ^= (uint8_t)(1u << (util_rng_next(&rng) % 8)); break;
            default: n = at + 1; break;   /* cut */
            }
        }
        proto_msg_t *d = dec1(buf, n);
        if (d) {
            ok++;
            /* Whatever decoded must encode again. */
            size_t l2;
            free(proto_encode_bytes(d, &l2));
            proto_msg_destroy(&d);
        } else {
            cr_assert(err[0]);
            bad++;
        }
    }
    cr_assert_gt(bad, 0);
    free(buf);
    free(bytes);
    proto_msg_destroy(&m);
}

/* A message whose data lies in a following frame decodes from frames too (the fuzz
 * target's and a Python writer's form). */
Test(proto, frame_data_through_decode_frames) {
    ONE_FIELD(sb, pk, msgpack_pack_map(&pk, 3); pk_str(&pk, "dtype"); pk_str(&pk, "i32");
              pk_str(&pk, "shape"); msgpack_pack_array(&pk, 1); msgpack_pack_int(&pk, 2);
              pk_str(&pk, "data"); msgpack_pack_uint8(&pk, 1););
    int32_t v[2] = {-7, 9};
    const void *bufs[2] = {sb.data, v};
    size_t lens[2] = {sb.size, sizeof v};
    proto_msg_t *m = proto_decode_frames(bufs, lens, 2, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    const proto_field_t *f = proto_msg_get_tensor(m, "x", PROTO_I32);
    cr_assert_not_null(f);
    cr_assert(f->own, "decode_frames copies");
    cr_assert_eq(((const int32_t *)f->data)[0], -7);
    cr_assert_eq(((const int32_t *)f->data)[1], 9);
    proto_msg_destroy(&m);
    /* The frame holds the wrong number of bytes for the shape. */
    lens[1] = 4;
    cr_assert_null(proto_decode_frames(bufs, lens, 2, err, sizeof err));
    cr_assert(strstr(err, "shape needs 8 bytes, data has 4"), "%s", err);
    msgpack_sbuffer_destroy(&sb);
}
