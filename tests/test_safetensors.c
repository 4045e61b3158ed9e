/* test_safetensors.c: the safetensors reader/writer: round trips of every dtype the
 * model uses, metadata, the golden file written by PyTorch's side, model save/load by
 * name, and malformed files refused with a reason (never a crash). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"

static char dir[64];
static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/test_st_XXXXXX");
    cr_assert(mkdtemp(dir));
}
static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(safetensors, .init = setup, .fini = teardown, .timeout = 30);

Test(safetensors, round_trip_dtypes_and_metadata) {
    float f[6] = {1.5f, -2, 3.25f, 0, 1e-3f, -7};
    int32_t i32[3] = {-1, 0, 2147483647};
    uint8_t u8[5] = {0, 1, 2, 254, 255};
    uint16_t bf[2] = {0x3fc0, 0xc000};   /* 1.5, -2.0 */
    st_tensor_t ts[4] = {
        {"a.w", ST_F32, 2, {2, 3}, f, sizeof f},
        {"ids", ST_I32, 1, {3}, i32, sizeof i32},
        {"bytes \"q\"", ST_U8, 1, {5}, u8, sizeof u8},
        {"half", ST_BF16, 2, {1, 2}, bf, sizeof bf},
    };
    const char *k[2] = {"format", "plan"}, *v[2] = {"ofa", "line1\nline2 \"x\""};
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    cr_assert_eq(st_write(path, ts, 4, k, v, 2, err, sizeof err), 0, "%s", err);
    st_file_t *f2 = st_open(path, err, sizeof err);
    cr_assert(f2, "%s", err);
    cr_assert_eq(st_count(f2), 4);
    const st_tensor_t *t = st_find(f2, "a.w");
    cr_assert(t);
    cr_expect_eq(t->ndim, 2);
    cr_expect_eq(t->shape[1], 3);
    cr_expect_eq(memcmp(t->data, f, sizeof f), 0);
    cr_expect_eq(memcmp(st_find(f2, "ids")->data, i32, sizeof i32), 0);
    cr_expect_eq(memcmp(st_find(f2, "bytes \"q\"")->data, u8, sizeof u8), 0);
    float h[2];
    cr_assert_eq(st_to_f32(st_find(f2, "half"), h, 2, err, sizeof err), 0, "%s", err);
    cr_expect_eq(h[0], 1.5f);
    cr_expect_eq(h[1], -2.0f);
    cr_expect_str_eq(st_meta(f2, "plan"), "line1\nline2 \"x\"");
    cr_expect_null(st_meta(f2, "nope"));
    cr_expect_neq(st_to_f32(st_find(f2, "ids"), h, 3, err, sizeof err), 0);
    st_close(&f2);
    cr_expect_null(f2);
}

/* The golden file comes from a Python writer: our reader takes it as is. */
Test(safetensors, reads_golden_file) {
    char err[256];
    st_file_t *f = st_open(OFA_SHARED_DIR "/reference/encdec_golden.safetensors", err, sizeof err);
    cr_assert(f, "%s", err);
    const st_tensor_t *c = st_find(f, "meta.config");
    cr_assert(c);
    cr_expect_eq(c->dtype, ST_I32);
    cr_expect_eq(((const int32_t *)c->data)[0], 512);
    cr_expect_eq(st_find(f, "tok_emb")->shape[0], 512);
    st_close(&f);
}

/* A header built by hand: 8-byte length then the JSON, then `data` bytes of zeros. */
static st_file_t *parse_hdr(const char *json, size_t data, uint64_t fake_len, char *err,
                            size_t errlen) {
    size_t hl = strlen(json), n = 8 + hl + data;
    unsigned char *b = calloc(1, n);
    uint64_t L = fake_len ? fake_len : hl;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(L >> (8 * i));
    memcpy(b + 8, json, hl);
    st_file_t *f = st_parse(b, n, "t.safetensors", err, errlen);
    free(b);
    return f;
}

static void refused(const char *json, size_t data, uint64_t fake_len, const char *needle) {
    char err[256] = "";
    st_file_t *f = parse_hdr(json, data, fake_len, err, sizeof err);
    cr_expect_null(f, "accepted: %s", json);
    st_close(&f);
    cr_expect(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
    cr_expect(strstr(err, "t.safetensors") != NULL, "error '%s' names no file", err);
}

Test(safetensors, malformed_files) {
    const char *ok = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    char err[256];
    st_file_t *f = parse_hdr(ok, 8, 0, err, sizeof err);
    cr_assert(f, "%s", err);
    st_close(&f);
    refused(ok, 8, 1u << 30, "header length");                 /* longer than the file */
    refused(ok, 8, 1, "header length");
    refused("{\"x\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "unknown dtype");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, 0, "outside");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12, 0, "bytes");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, 0, "outside");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0, "integer");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0, "data_offsets");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, 0, "malformed");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "twice");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
            "\"data_offsets\":[0,8]}}", 8, 0, "too large");
    refused("{\"__metadata__\":{\"a\":1}}", 0, 0, "string");
    refused("[1,2]", 0, 0, "malformed");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} junk", 8, 0, "after");
    /* shorter than the length field, and a missing file */
    f = st_parse("abc", 3, "t.safetensors", err, sizeof err);
    cr_expect_null(f);
    cr_expect(strstr(err, "shorter") != NULL, "%s", err);
    f = st_open("/nonexistent/x.safetensors", err, sizeof err);
    cr_expect_null(f);
    /* every truncation of a valid file is refused or parsed, never a crash */
    size_t hl = strlen(ok);
    unsigned char full[256];
    for (int i = 0; i < 8; i++)
        full[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(full + 8, ok, hl);
    memset(full + 8 + hl, 0, 8);
    for (size_t n = 0; n < 8 + hl + 8; n++) {
        f = st_parse(full, n, "t.safetensors", err, sizeof err);
        cr_expect_null(f, "truncated to %zu bytes yet accepted", n);
        st_close(&f);
    }
}

Test(safetensors, model_save_load_by_name) {
    char err[256], path[128];
    model_config_t c;
    cr_assert_eq(model_config_preset(&c, "nano", 64, err, sizeof err), 0);
    c.max_src = 16, c.max_tgt = 8, c.img_grid = 2, c.patch_dim = 12;
    backend_t *be = backend_cpu_new(1);
    model_t *a = model_new(&c, be, 1, err, sizeof err), *b = model_new(&c, be, 2, err, sizeof err);
    cr_assert(a && b, "%s", err);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    cr_assert_eq(model_save(a, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_load(b, path, err, sizeof err), 0, "%s", err);
    int64_t n = model_numel(a);
    float *wa = malloc(sizeof *wa * n), *wb = malloc(sizeof *wb * n);
    model_buf_download(a, MODEL_W, wa);
    model_buf_download(b, MODEL_W, wb);
    cr_expect_eq(memcmp(wa, wb, sizeof *wa * n), 0);
    /* a model of another shape refuses the file and names the tensor */
    c.d_model = 32;
    model_t *other = model_new(&c, be, 3, err, sizeof err);
    cr_assert(other, "%s", err);
    cr_expect_neq(model_load(other, path, err, sizeof err), 0);
    cr_expect(strstr(err, "tok_emb") != NULL, "%s", err);
    model_destroy(&a), model_destroy(&b), model_destroy(&other);
    backend_destroy(&be);
    free(wa), free(wb);
}
