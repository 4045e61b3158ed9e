/* test_ckpt.c: checkpoint files (stages/trainer/ckpt.c): safetensors and state round
 * trips, hostile bytes, keep-last-K, and atomicity when the writer dies mid-write. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt.h"
#include "util.h"

static char s_dir[256];

static void s_setup(void) {
    snprintf(s_dir, sizeof s_dir, "/tmp/test_ckpt.XXXXXX");
    cr_assert_not_null(mkdtemp(s_dir));
}

static void s_teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(ckpt, .init = s_setup, .fini = s_teardown);

static int s_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

Test(ckpt, safetensors_round_trip) {
    float w[6] = {1.5f, -2, 3, 4, 5, 6.25f};
    int32_t ids[3] = {7, -1, 9};
    uint8_t bytes[5] = {0, 255, 'a', '\n', '"'};
    ckpt_tensor_t t[3] = {
        {.name = "enc.0.attn.q.w", .dtype = CKPT_F32, .ndim = 2, .shape = {2, 3}, .data = w},
        {.name = "meta.closed_set.vqa", .dtype = CKPT_I32, .ndim = 1, .shape = {3}, .data = ids},
        {.name = "meta.bpe", .dtype = CKPT_U8, .ndim = 1, .shape = {5}, .data = bytes},
    };
    const char *plan = "name = \"x\";\ntrainer: { lr = 1e-3; }\t\\ \x01 end";
    ckpt_meta_t m[2] = {{"format", "ofa-ckpt"}, {"plan", plan}};
    char p[512], err[512];
    snprintf(p, sizeof p, "%s/a.safetensors", s_dir);
    cr_assert_eq(ckpt_write_safetensors(p, t, 3, m, 2, err, sizeof err), 0, "%s", err);

    /* The header is 8-aligned like the reference writer's. */
    FILE *f = fopen(p, "rb");
    uint8_t le[8];
    cr_assert_eq(fread(le, 1, 8, f), 8);
    fclose(f);
    cr_assert_eq(le[0] % 8, 0);

    ckpt_file_t *cf = ckpt_file_open(p, err, sizeof err);
    cr_assert_not_null(cf, "%s", err);
    cr_assert_eq(ckpt_file_count(cf), 3);
    const ckpt_tensor_t *q = ckpt_file_find(cf, "enc.0.attn.q.w");
    cr_assert_not_null(q);
    cr_assert_eq(q->dtype, CKPT_F32);
    cr_assert_eq(q->ndim, 2);
    cr_assert_eq(q->shape[0], 2);
    cr_assert_eq(q->shape[1], 3);
    cr_assert_eq(memcmp(q->data, w, sizeof w), 0);
    q = ckpt_file_find(cf, "meta.closed_set.vqa");
    cr_assert_eq(memcmp(q->data, ids, sizeof ids), 0);
    q = ckpt_file_find(cf, "meta.bpe");
    cr_assert_eq(q->nbytes, 5);
    cr_assert_eq(memcmp(q->data, bytes, 5), 0);
    cr_assert_str_eq(ckpt_file_meta(cf, "format"), "ofa-ckpt");
    cr_assert_str_eq(ckpt_file_meta(cf, "plan"), plan);
    cr_assert_null(ckpt_file_meta(cf, "nope"));
    cr_assert_null(ckpt_file_find(cf, "nope"));
    ckpt_file_destroy(&cf);
    cr_assert_null(cf);
}

Test(ckpt, safetensors_readable_by_python_json) {
    /* An independent reader: Python's json and struct parse our header and data. */
    float w[4] = {1, 2, 3, 4};
    ckpt_tensor_t t = {.name = "x", .dtype = CKPT_F32, .ndim = 2, .shape = {2, 2}, .data = w};
    ckpt_meta_t m = {"plan", "a \"quoted\"\nline"};
    char p[512], err[512], cmd[1024];
    snprintf(p, sizeof p, "%s/py.safetensors", s_dir);
    cr_assert_eq(ckpt_write_safetensors(p, &t, 1, &m, 1, err, sizeof err), 0, "%s", err);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import json,struct,sys; b=open('%s','rb').read(); "
             "n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); "
             "o=h['x']['data_offsets']; v=struct.unpack('<4f', b[8+n+o[0]:8+n+o[1]]); "
             "sys.exit(0 if v==(1,2,3,4) and h['__metadata__']['plan']=='a \\\"quoted\\\"\\nline' else 1)\"",
             p);
    if (!s_exists("/usr/bin/python3"))
        cr_skip_test("no /usr/bin/python3");
    cr_assert_eq(system(cmd), 0, "python could not read the file back");
}

static void s_write_raw(const char *p, const void *d, size_t n) {
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(d, 1, n, f), n);
    fclose(f);
}

static void s_write_hdr(const char *p, const char *json, size_t extra_data) {
    size_t hl = strlen(json);
    uint8_t *b = calloc(1, 8 + hl + extra_data);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    s_write_raw(p, b, 8 + hl + extra_data);
    free(b);
}

Test(ckpt, safetensors_hostile_bytes_are_errors) {
    char p[512], err[512];
    snprintf(p, sizeof p, "%s/bad.safetensors", s_dir);
    struct { const char *json; size_t data; const char *want; } cases[] = {
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "match"},
        {"{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "lacks"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "expected"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8, "large"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,2,3,4,5,6,7],\"data_offsets\":[0,8]}}", 8, "dimensions"},
        {"{\"__metadata__\":{\"a\":\"unterminated}}", 8, "unterminated"},
        {"{} trailing", 0, "trailing"},
        {"[1,2]", 0, "expected"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_write_hdr(p, cases[i].json, cases[i].data);
        err[0] = 0;
        ckpt_file_t *f = ckpt_file_open(p, err, sizeof err);
        cr_assert_null(f, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].want), "case %zu: '%s' lacks '%s'", i, err, cases[i].want);
        cr_assert(strstr(err, p), "case %zu: error does not name the file: %s", i, err);
    }
    /* Header length larger than the file; a file shorter than 8 bytes. */
    uint8_t b[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    s_write_raw(p, b, 10);
    cr_assert_null(ckpt_file_open(p, err, sizeof err));
    s_write_raw(p, b, 3);
    cr_assert_null(ckpt_file_open(p, err, sizeof err));
    cr_assert_null(ckpt_file_open("/nonexistent/x.safetensors", err, sizeof err));
}

Test(ckpt, safetensors_random_corruption_never_crashes) {
    /* Flip bytes of a valid header at random: every outcome is a clean open or a clean
     * error (ASan builds make any overrun visible). */
    float w[8] = {0};
    ckpt_tensor_t t[2] = {
        {.name = "a", .dtype = CKPT_F32, .ndim = 2, .shape = {2, 2}, .data = w},
        {.name = "b", .dtype = CKPT_F32, .ndim = 1, .shape = {4}, .data = w},
    };
    ckpt_meta_t m = {"k", "v\\u00e9"};
    char p[512], q[512], err[512];
    snprintf(p, sizeof p, "%s/good.safetensors", s_dir);
    snprintf(q, sizeof q, "%s/mut.safetensors", s_dir);
    cr_assert_eq(ckpt_write_safetensors(p, t, 2, &m, 1, err, sizeof err), 0, "%s", err);
    size_t len;
    char *good = util_read_file(p, &len, err, sizeof err);
    cr_assert_not_null(good);
    util_rng_t rng = {42};
    int opened = 0;
    for (int it = 0; it < 2000; it++) {
        char *b = malloc(len);
        memcpy(b, good, len);
        int flips = 1 + (int)(util_rng_next(&rng) % 4);
        for (int k = 0; k < flips; k++)
            b[util_rng_next(&rng) % (len < 200 ? len : 200)] = (char)util_rng_next(&rng);
        s_write_raw(q, b, len);
        ckpt_file_t *f = ckpt_file_open(q, err, sizeof err);
        if (f) {
            opened++;
            for (int i = 0; i < ckpt_file_count(f); i++) {
                const ckpt_tensor_t *x = ckpt_file_tensor(f, i);
                /* Every accepted tensor lies inside the file. */
                cr_assert((const char *)x->data >= (const char *)0);
                cr_assert_leq(x->nbytes, len);
            }
            ckpt_file_destroy(&f);
        }
        free(b);
    }
    free(good);
    cr_assert_lt(opened, 2000, "corruption never detected");
}

static void s_fill_state(ckpt_state_t *st, float *m0, float *v0, float *m1, float *v1) {
    static char *names[2] = {"tok_emb", "enc.0.ln1.w"};
    static int64_t numel[2] = {5, 3};
    static float *ms[2], *vs[2];
    ms[0] = m0, ms[1] = m1, vs[0] = v0, vs[1] = v1;
    for (int i = 0; i < 5; i++)
        m0[i] = 0.1f * i, v0[i] = 0.01f * i;
    for (int i = 0; i < 3; i++)
        m1[i] = -1.0f * i, v1[i] = 2.0f * i;
    *st = (ckpt_state_t){.step = 123, .cursor = 130, .rng = 0xdeadbeefcafef00dULL,
                         .elapsed_s = 12.5, .n = 2, .names = names, .numel = numel,
                         .m = ms, .v = vs};
}

Test(ckpt, state_round_trip_and_corruption) {
    float m0[5], v0[5], m1[3], v1[3];
    ckpt_state_t st, back;
    s_fill_state(&st, m0, v0, m1, v1);
    char p[512], err[512];
    snprintf(p, sizeof p, "%s/s.state", s_dir);
    cr_assert_eq(ckpt_state_write(p, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ckpt_state_read(p, &back, err, sizeof err), 0, "%s", err);
    cr_assert_eq(back.step, 123);
    cr_assert_eq(back.cursor, 130);
    cr_assert_eq(back.rng, 0xdeadbeefcafef00dULL);
    cr_assert_eq(back.elapsed_s, 12.5);
    cr_assert_eq(back.n, 2);
    cr_assert_str_eq(back.names[1], "enc.0.ln1.w");
    cr_assert_eq(back.numel[0], 5);
    cr_assert_eq(memcmp(back.m[0], m0, sizeof m0), 0);
    cr_assert_eq(memcmp(back.v[1], v1, sizeof v1), 0);
    ckpt_state_free(&back);

    size_t len;
    char *b = util_read_file(p, &len, err, sizeof err);
    /* Truncated anywhere, or one byte changed anywhere: a checksum or format error. */
    for (size_t cut = 0; cut < len; cut += 7) {
        s_write_raw(p, b, cut);
        cr_assert_neq(ckpt_state_read(p, &back, err, sizeof err), 0, "truncated at %zu accepted", cut);
    }
    for (size_t i = 0; i < len; i++) {
        b[i] ^= 0x40;
        s_write_raw(p, b, len);
        cr_assert_neq(ckpt_state_read(p, &back, err, sizeof err), 0, "flip at %zu accepted", i);
        b[i] ^= 0x40;
    }
    memcpy(b, "NOTSTATE", 8);
    s_write_raw(p, b, len);
    cr_assert_neq(ckpt_state_read(p, &back, err, sizeof err), 0);
    cr_assert(strstr(err, "magic"), "%s", err);
    free(b);
}

static void s_save(const char *dir, int64_t step, int keep) {
    float m0[5], v0[5], m1[3], v1[3], w[2] = {(float)step, 1};
    ckpt_state_t st;
    s_fill_state(&st, m0, v0, m1, v1);
    st.step = step;
    ckpt_tensor_t t = {.name = "w", .dtype = CKPT_F32, .ndim = 1, .shape = {2}, .data = w};
    char err[512];
    cr_assert_eq(ckpt_save(dir, step, &t, 1, NULL, 0, &st, keep, err, sizeof err), 0, "%s", err);
}

Test(ckpt, keep_last_k_and_latest) {
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/checkpoints", s_dir);
    cr_assert_eq(ckpt_latest(dir), -1, "no folder: no checkpoint");
    for (int s = 10; s <= 40; s += 10)
        s_save(dir, s, 2);
    for (int s = 10; s <= 40; s += 10) {
        ckpt_path(dir, s, "safetensors", p, sizeof p);
        cr_assert_eq(s_exists(p), s >= 30, "step %d", s);
        ckpt_path(dir, s, "state", p, sizeof p);
        cr_assert_eq(s_exists(p), s >= 30, "step %d", s);
    }
    cr_assert_eq(ckpt_latest(dir), 40);

    /* A crash between the two files of step 50: its state exists, its weights do not:
     * step 40 stays the latest. A stray temp file is ignored and pruned later. */
    float m0[5], v0[5], m1[3], v1[3];
    ckpt_state_t st;
    s_fill_state(&st, m0, v0, m1, v1);
    char err[512];
    ckpt_path(dir, 50, "state", p, sizeof p);
    cr_assert_eq(ckpt_state_write(p, &st, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/.ckpt-00000050.safetensors.tmp", dir);
    s_write_raw(p, "partial", 7);
    cr_assert_eq(ckpt_latest(dir), 40);

    /* The newest state file is corrupt: fall back to the one before. */
    ckpt_path(dir, 40, "state", p, sizeof p);
    s_write_raw(p, "OFASTATE garbage", 16);
    cr_assert_eq(ckpt_latest(dir), 30);

    s_save(dir, 60, 2);
    snprintf(p, sizeof p, "%s/.ckpt-00000050.safetensors.tmp", dir);
    cr_assert(!s_exists(p), "temp file not pruned");
    cr_assert_eq(ckpt_latest(dir), 60);
}

Test(ckpt, killed_writer_leaves_old_file_or_new_file) {
    /* A child rewrites one checkpoint file with a 16 MiB tensor and is killed at a
     * random moment. The path then holds either the old complete file or the new one,
     * never a torn one. */
    char p[512], err[512];
    snprintf(p, sizeof p, "%s/atomic.safetensors", s_dir);
    float small[2] = {1, 2};
    ckpt_tensor_t t0 = {.name = "w", .dtype = CKPT_F32, .ndim = 1, .shape = {2}, .data = small};
    cr_assert_eq(ckpt_write_safetensors(p, &t0, 1, NULL, 0, err, sizeof err), 0);
    const int64_t n = 4 << 20;
    float *big = calloc(n, sizeof(float));
    util_rng_t rng = {7};
    int saw_old = 0, saw_new = 0;
    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            ckpt_tensor_t t1 = {.name = "w", .dtype = CKPT_F32, .ndim = 1, .shape = {n}, .data = big};
            char e2[256];
            _exit(ckpt_write_safetensors(p, &t1, 1, NULL, 0, e2, sizeof e2) == 0 ? 0 : 1);
        }
        usleep((useconds_t)(util_rng_next(&rng) % 60000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        ckpt_file_t *f = ckpt_file_open(p, err, sizeof err);
        cr_assert_not_null(f, "torn file after kill: %s", err);
        const ckpt_tensor_t *w = ckpt_file_find(f, "w");
        cr_assert_not_null(w);
        if (w->shape[0] == 2)
            saw_old++;
        else {
            cr_assert_eq(w->shape[0], n);
            saw_new++;
            /* Put the small file back for the next round. */
            ckpt_file_destroy(&f);
            cr_assert_eq(ckpt_write_safetensors(p, &t0, 1, NULL, 0, err, sizeof err), 0);
        }
        ckpt_file_destroy(&f);
    }
    free(big);
    cr_assert_eq(saw_old + saw_new, 6);
}

Test(ckpt, bad_tensor_keeps_the_old_file) {
    char p[512], err[512];
    snprintf(p, sizeof p, "%s/keep.safetensors", s_dir);
    float w[2] = {1, 2};
    ckpt_tensor_t t = {.name = "w", .dtype = CKPT_F32, .ndim = 1, .shape = {2}, .data = w};
    cr_assert_eq(ckpt_write_safetensors(p, &t, 1, NULL, 0, err, sizeof err), 0);
    t.nbytes = 12;   /* does not match the shape */
    cr_assert_neq(ckpt_write_safetensors(p, &t, 1, NULL, 0, err, sizeof err), 0);
    cr_assert(strstr(err, "shape"), "%s", err);
    ckpt_file_t *f = ckpt_file_open(p, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    ckpt_file_destroy(&f);
    /* A folder that does not exist: a clean error, nothing written. */
    cr_assert_neq(ckpt_write_safetensors("/nonexistent/dir/x.safetensors", &t, 1, NULL, 0,
                                         err, sizeof err), 0);
}
