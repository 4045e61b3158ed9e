/* fuzz_make_corpus.c: writes the seed corpus of fuzz_proto (tests/data/bad/msg/): a
 * valid message of every kind and CONTROL op as the pipeline sends them (inline data,
 * a tensor in a following frame), and malformed ones (each a case the decoder must
 * refuse). Files use fuzz_proto.c's framing rule. The corpus is committed; run this
 * again only when the protocol changes:
 *
 *     build-core/bin/fuzz_make_corpus tests/data/bad/msg */
#include "proto.h"
#include "util.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

static const char *s_dir;

/* Write envelope + extra frames in fuzz_proto's input format. */
static void s_write(const char *name, const void *env, size_t envlen, const void *const *fr,
                    const size_t *frlen, int k) {
    size_t total = 1 + 2 * (size_t)k + envlen;
    for (int i = 0; i < k; i++)
        total += frlen[i];
    uint8_t *out = util_malloc(total);
    size_t o = 0;
    out[o++] = (uint8_t)k;
    for (int i = 0; i < k; i++) {
        out[o++] = (uint8_t)(frlen[i] & 0xff);
        out[o++] = (uint8_t)(frlen[i] >> 8);
    }
    memcpy(out + o, env, envlen);
    o += envlen;
    for (int i = 0; i < k; i++) {
        memcpy(out + o, fr[i], frlen[i]);
        o += frlen[i];
    }
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    if (util_write_file_atomic(path, out, total, err, sizeof err) != 0)
        util_fatal(NULL, "%s", err);
    free(out);
}

/* A valid message, all inline. */
static void s_msg(const char *name, proto_msg_t *m) {
    size_t len;
    void *b = proto_encode_bytes(m, &len);
    s_write(name, b, len, NULL, NULL, 0);
    free(b);
    proto_msg_destroy(&m);
}

static void pk_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void pk_head(msgpack_packer *pk, int kind) {
    pk_str(pk, "magic");
    pk_str(pk, "OFAC");
    pk_str(pk, "v");
    msgpack_pack_int(pk, 1);
    pk_str(pk, "kind");
    msgpack_pack_int(pk, kind);
    pk_str(pk, "task");
    pk_str(pk, "caption");
    pk_str(pk, "ids");
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, 42);
}

static proto_msg_t *s_sample(void) {
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "caption");
    proto_msg_add_id(m, (1ull << 40) | 17);
    proto_msg_set_int(m, "seq", 17);
    proto_msg_set_int(m, "slot", 1);
    proto_msg_set_int(m, "epoch", 0);
    proto_msg_set_int(m, "row", 17);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_str(m, "@route", "image,tokenize");
    proto_msg_set_int(m, "@hop", 1);
    proto_msg_set_str(m, "cap", "a red stamp");
    int64_t sh[2] = {4, 12};
    uint8_t px[48];
    for (int i = 0; i < 48; i++)
        px[i] = (uint8_t)(i * 5);
    proto_msg_set_tensor(m, "img", PROTO_U8, 2, sh, px);
    proto_msg_set_int(m, "img.grid", 2);
    int64_t s1[1] = {3};
    int32_t tok[3] = {0, 1, 2};
    proto_msg_set_tensor(m, "src_tok", PROTO_I32, 1, s1, tok);
    float f[3] = {0.5f, -1, 2};
    proto_msg_set_tensor(m, "feat", PROTO_F32, 1, s1, f);
    int64_t i64[3] = {1, -1, 1LL << 40};
    proto_msg_set_tensor(m, "i64", PROTO_I64, 1, s1, i64);
    uint16_t h[3] = {1, 2, 3};
    proto_msg_set_tensor(m, "bf", PROTO_BF16, 1, s1, h);
    proto_msg_set_tensor(m, "u16", PROTO_U16, 1, s1, h);
    proto_msg_set_float(m, "score", 0.25);
    proto_msg_set_bin(m, "raw", "\xff\xd8\xff", 3);
    return m;
}

static proto_msg_t *s_ctl(const char *op) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, op);
    return m;
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    if (argc != 2)
        util_fatal(NULL, "usage: fuzz_make_corpus DIR");
    s_dir = argv[1];
    char err[256];
    if (util_mkdirs(s_dir, err, sizeof err))
        util_fatal(NULL, "%s", err);

    /* ---- valid messages of every kind */
    s_msg("ok_sample", s_sample());
    proto_msg_t *m = s_ctl("hello");
    proto_msg_set_str(m, "role", "worker");
    proto_msg_set_str(m, "id", "image-0");
    proto_msg_set_str(m, "tier", "image");
    proto_msg_set_int(m, "credits", 8);
    s_msg("ok_hello", m);
    s_msg("ok_heartbeat", s_ctl("heartbeat"));
    m = s_ctl("eof");
    proto_msg_set_int(m, "count", 1234);
    s_msg("ok_eof", m);
    s_msg("ok_end", s_ctl("end"));
    s_msg("ok_stop", s_ctl("stop"));
    m = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(m, "n", 16);
    proto_msg_set_int(m, "want_seq", 3);
    s_msg("ok_credit", m);
    m = proto_msg_new(PROTO_REJECT, "caption");
    proto_msg_add_id(m, 5);
    proto_msg_set_int(m, "seq", 5);
    proto_msg_set_str(m, "stage", "image");
    proto_msg_set_str(m, "reason", "column img: corrupt JPEG");
    s_msg("ok_reject", m);
    m = proto_msg_new(PROTO_STATS, NULL);
    proto_msg_set_str(m, "proc", "image-0");
    proto_msg_set_float(m, "items_in", 10);
    proto_msg_set_float(m, "task.caption.read", 10);
    proto_msg_set_float(m, "lat_p50_ms", 1.5);
    s_msg("ok_stats", m);
    m = proto_msg_new(PROTO_BATCH, "caption");
    for (uint64_t i = 0; i < 2; i++)
        proto_msg_add_id(m, i);
    int64_t bs[2] = {2, 3};
    int32_t tok[6] = {0, 5, 2, 0, 2, 1};
    uint8_t mod[6] = {0, 0, 0, 0, 0, 255};
    proto_msg_set_tensor(m, "src_tok", PROTO_I32, 2, bs, tok);
    proto_msg_set_tensor(m, "src_mod", PROTO_U8, 2, bs, mod);
    proto_msg_set_int(m, "step", 0);
    proto_msg_set_str(m, "refs", "a\nb");
    s_msg("ok_batch", m);

    /* A tensor and a bin in following frames (as proto_send sends large fields). */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        pk_head(&pk, PROTO_SAMPLE);
        pk_str(&pk, "f");
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "img");
        msgpack_pack_map(&pk, 3);
        pk_str(&pk, "dtype");
        pk_str(&pk, "i32");
        pk_str(&pk, "shape");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int(&pk, 2);
        msgpack_pack_int(&pk, 2);
        pk_str(&pk, "data");
        msgpack_pack_uint8(&pk, 1);
        pk_str(&pk, "raw");
        msgpack_pack_map(&pk, 1);
        pk_str(&pk, "data");
        msgpack_pack_uint8(&pk, 2);
        int32_t v[4] = {1, 2, 3, 4};
        const void *fr[2] = {v, "jpegbytes"};
        size_t fl[2] = {sizeof v, 9};
        s_write("ok_frames", sb.data, sb.size, fr, fl, 2);
        /* The same envelope with a frame missing: index 2 of 2 frames. */
        s_write("bad_frame_index", sb.data, sb.size, fr, fl, 1);
        msgpack_sbuffer_destroy(&sb);
    }

    /* ---- malformed messages */
    struct {
        const char *name;
        const char *bytes;
        size_t len;
    } raw[] = {
#define RAW(name, lit) {name, lit, sizeof lit - 1}
        RAW("bad_empty", ""),
        RAW("bad_not_map", "\x93\x01\x02\x03"),
        RAW("bad_magic", "\x83\xa5magic\xa4OFAX\xa1v\x01\xa4kind\x01"),
        RAW("bad_version", "\x83\xa5magic\xa4OFAC\xa1v\x02\xa4kind\x01"),
        RAW("bad_kind", "\x83\xa5magic\xa4OFAC\xa1v\x01\xa4kind\x09"),
        RAW("bad_huge_map", "\xdf\xff\xff\xff\xff"),
        RAW("bad_huge_ids", "\x81\xa3ids\xdd\xff\xff\xff\xff"),
        RAW("bad_huge_bin", "\x81\xa1" "f\x81\xa1x\xc6\x7f\xff\xff\xff"),
        RAW("bad_ids_signed", "\x84\xa5magic\xa4OFAC\xa1v\x01\xa4kind\x01\xa3ids\x91\xff"),
#undef RAW
    };
    for (size_t i = 0; i < sizeof raw / sizeof *raw; i++)
        s_write(raw[i].name, raw[i].bytes, raw[i].len, NULL, NULL, 0);

    /* Field-level cases, each an envelope with one field "x". */
    for (int c = 0; c < 10; c++) {
        static const char *names[] = {"bad_shape_len", "bad_dtype", "bad_ndim",
                                      "bad_shm_noname", "bad_dup_key", "bad_field_nil",
                                      "bad_trailing", "bad_arena_gen_zero",
                                      "bad_arena_gen_str", "bad_arena_absent"};
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        pk_head(&pk, PROTO_SAMPLE);
        pk_str(&pk, "f");
        msgpack_pack_map(&pk, c == 4 ? 2 : 1);
        pk_str(&pk, "x");
        switch (c) {
        case 0:
        case 1:
        case 2:
            msgpack_pack_map(&pk, 3);
            pk_str(&pk, "dtype");
            pk_str(&pk, c == 1 ? "f16" : "i32");
            pk_str(&pk, "shape");
            msgpack_pack_array(&pk, c == 2 ? 7 : 1);
            for (int d = 0; d < (c == 2 ? 7 : 1); d++)
                msgpack_pack_int(&pk, c == 0 ? 3 : 1);
            pk_str(&pk, "data");
            msgpack_pack_bin(&pk, 4);
            msgpack_pack_bin_body(&pk, "abcd", 4);
            break;
        case 3:
            msgpack_pack_map(&pk, 1);
            pk_str(&pk, "data");
            msgpack_pack_map(&pk, 2);
            pk_str(&pk, "offset");
            msgpack_pack_int(&pk, 0);
            pk_str(&pk, "len");
            msgpack_pack_int(&pk, 4);
            break;
        case 4:
            msgpack_pack_int(&pk, 1);
            pk_str(&pk, "x");
            msgpack_pack_int(&pk, 2);
            break;
        case 7:
        case 8:
        case 9:
            /* Arena descriptors: gen 0, gen not an integer, an arena that is not there. */
            msgpack_pack_map(&pk, 1);
            pk_str(&pk, "data");
            msgpack_pack_map(&pk, 4);
            pk_str(&pk, "name");
            pk_str(&pk, "/ofa-arena-0-0");
            pk_str(&pk, "offset");
            msgpack_pack_int(&pk, 192);
            pk_str(&pk, "len");
            msgpack_pack_int(&pk, 4);
            pk_str(&pk, "gen");
            if (c == 8)
                pk_str(&pk, "7");
            else
                msgpack_pack_int(&pk, c == 7 ? 0 : 7);
            break;
        case 5: msgpack_pack_nil(&pk); break;
        default:
            msgpack_pack_int(&pk, 1);
            msgpack_pack_int(&pk, 0);   /* one byte after the envelope */
            break;
        }
        s_write(names[c], sb.data, sb.size, NULL, NULL, 0);
        msgpack_sbuffer_destroy(&sb);
    }
    /* A valid sample cut in the middle. */
    m = s_sample();
    size_t len;
    void *b = proto_encode_bytes(m, &len);
    s_write("bad_truncated", b, len / 2, NULL, NULL, 0);
    free(b);
    proto_msg_destroy(&m);
    return 0;
}
