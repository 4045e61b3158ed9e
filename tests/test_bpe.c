/* test_bpe.c: byte-level BPE: round trips on random bytes, the heap encoder against a
 * naive reference, the trainer on a known toy corpus, the file format and its errors. */
#include <criterion/criterion.h>

#include "bpe.h"
#include "util.h"

#include <string.h>
#include <unistd.h>

static char *s_corpus(size_t *len) {
    char err[256];
    /* Real text that is always there: this project's own sources and docs. */
    char *a = util_read_file(OFA_SOURCE_DIR "/stages/text/bpe.c", len, err, sizeof err);
    cr_assert(a, "%s", err);
    return a;
}

static tok_bpe_t *s_trained(int merges) {
    size_t len;
    char *text = s_corpus(&len);
    tok_bpe_trainer_t *tr = tok_bpe_trainer_new();
    /* one text per line, as ofa-bpe-train feeds them */
    char *line = text;
    for (char *p = text; p <= text + len; p++)
        if (p == text + len || *p == '\n') {
            tok_bpe_trainer_add(tr, line, (size_t)(p - line));
            line = p + 1;
        }
    tok_bpe_t *bpe = tok_bpe_trainer_learn(tr, merges, 2);
    tok_bpe_trainer_destroy(&tr);
    cr_assert_null(tr);
    free(text);
    return bpe;
}

/* Reference encoder: GPT-2's loop (find the lowest-rank adjacent pair, merge all its
 * occurrences left to right, repeat) on one pre-token. */
typedef struct {
    const tok_bpe_t *bpe;
    int32_t *out;
    size_t n;
} s_ref_t;

static int s_rank(const tok_bpe_t *bpe, int32_t a, int32_t b) {
    const int32_t *m = tok_bpe_merges(bpe);
    for (int r = 0; r < tok_bpe_n_merges(bpe); r++)
        if (m[2 * r] == a && m[2 * r + 1] == b)
            return r;
    return -1;
}

static void s_ref_piece(const char *piece, size_t n, void *arg) {
    s_ref_t *st = arg;
    int32_t *sym = util_malloc(n * sizeof(int32_t));
    size_t k = n;
    for (size_t i = 0; i < n; i++)
        sym[i] = TOK_BYTE0 + (uint8_t)piece[i];
    for (;;) {
        int best = -1;
        for (size_t i = 0; i + 1 < k; i++) {
            int r = s_rank(st->bpe, sym[i], sym[i + 1]);
            if (r >= 0 && (best < 0 || r < best))
                best = r;
        }
        if (best < 0)
            break;
        const int32_t *m = tok_bpe_merges(st->bpe) + 2 * best;
        size_t o = 0;
        for (size_t i = 0; i < k; i++) {
            if (i + 1 < k && sym[i] == m[0] && sym[i + 1] == m[1]) {
                sym[o++] = TOK_NSPECIAL + TOK_NBYTES + best;
                i++;
            } else {
                sym[o++] = sym[i];
            }
        }
        k = o;
    }
    memcpy(st->out + st->n, sym, k * sizeof(int32_t));
    st->n += k;
    free(sym);
}

TestSuite(bpe);

Test(bpe, toy_corpus_learns_the_expected_merges) {
    tok_bpe_trainer_t *tr = tok_bpe_trainer_new();
    /* "low" x5, "lower" x2, "newest" x6, "widest" x3 (the classic example). */
    const char *words[] = {"low", "lower", "newest", "widest"};
    int counts[] = {5, 2, 6, 3};
    for (int w = 0; w < 4; w++)
        for (int c = 0; c < counts[w]; c++)
            tok_bpe_trainer_add(tr, words[w], strlen(words[w]));
    size_t occ;
    cr_assert_eq(tok_bpe_trainer_words(tr, &occ), 4);
    cr_assert_eq(occ, 16);
    tok_bpe_t *bpe = tok_bpe_trainer_learn(tr, 3, 2);
    cr_assert_eq(tok_bpe_n_merges(bpe), 3);
    const int32_t *m = tok_bpe_merges(bpe);
#define B(c) (TOK_BYTE0 + (c))
    /* es (9) and st (9) tie; 'e' < 's' picks es first; then es+t (9), then lo (7). */
    cr_assert(m[0] == B('e') && m[1] == B('s'), "merge 1 = %d %d", m[0], m[1]);
    cr_assert(m[2] == 261 && m[3] == B('t'), "merge 2 = %d %d", m[2], m[3]);
    cr_assert(m[4] == B('l') && m[5] == B('o'), "merge 3 = %d %d", m[4], m[5]);
    int32_t ids[8];
    cr_assert_eq(tok_bpe_encode(bpe, "lowest", 6, ids, 8), 3);
    cr_assert(ids[0] == 263 && ids[1] == B('w') && ids[2] == 262);
    cr_assert_eq(tok_bpe_vocab_size(bpe), 5 + 256 + 3 + 1000);
    cr_assert_eq(tok_bpe_bin0(bpe), 264);
    /* Asking for more merges than the corpus supports stops at min_count. */
    tok_bpe_t *all = tok_bpe_trainer_learn(tr, 1000, 2);
    cr_assert(tok_bpe_n_merges(all) < 20 && tok_bpe_n_merges(all) > 3, "%d",
              tok_bpe_n_merges(all));
    tok_bpe_destroy(&all);
    tok_bpe_destroy(&bpe);
    tok_bpe_trainer_destroy(&tr);
#undef B
}

typedef struct {
    char (*p)[32];
    int *n;
    char *j;
} s_pieces_t;

static void s_piece_cb(const char *piece, size_t n, void *arg) {
    s_pieces_t *x = arg;
    memcpy(x->p[*x->n], piece, n);
    x->p[*x->n][n] = 0;
    strncat(x->j, piece, n);
    (*x->n)++;
}

Test(bpe, pretokenize_splits_and_covers) {
    const char *s = "Hello world  foo!! 42x\n\nend";
    char joined[64] = "";
    char pieces[16][32];
    int np = 0;
    s_pieces_t st = {pieces, &np, joined};
    tok_pretokenize(s, strlen(s), s_piece_cb, &st);
    cr_assert_str_eq(joined, s);
    const char *want[] = {"Hello", " world", " ", " foo", "!!", " 42", "x", "\n\n", "end"};
    cr_assert_eq(np, 9, "got %d pieces", np);
    for (int i = 0; i < 9; i++)
        cr_assert_str_eq(pieces[i], want[i], "piece %d", i);
}

Test(bpe, random_bytes_round_trip) {
    tok_bpe_t *bpe = s_trained(400);
    cr_assert_gt(tok_bpe_n_merges(bpe), 300);
    util_rng_t rng = {.s = 7};
    size_t cap = 5000;
    char *buf = util_malloc(cap), *back = util_malloc(cap + 1);
    int32_t *ids = util_malloc(cap * sizeof(int32_t));
    for (int it = 0; it < 300; it++) {
        size_t n = util_rng_next(&rng) % cap;
        int mode = it % 3;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = util_rng_next(&rng);
            /* raw bytes; text-like bytes with invalid UTF-8 mixed in; long runs */
            buf[i] = mode == 0 ? (char)r : mode == 1 ? (char)(r % 5 ? ' ' + r % 90 : 0x80 + r % 128)
                                                     : (char)(0xc3 + (r % 2));
        }
        size_t k = tok_bpe_encode(bpe, buf, n, ids, cap);
        cr_assert_leq(k, n, "more ids than bytes");
        for (size_t i = 0; i < k; i++)
            cr_assert(ids[i] >= TOK_BYTE0 && ids[i] < tok_bpe_bin0(bpe), "id %d", ids[i]);
        size_t m = tok_bpe_decode(bpe, ids, k, back, cap + 1);
        cr_assert_eq(m, n, "round trip length %zu != %zu (mode %d)", m, n, mode);
        cr_assert(memcmp(back, buf, n) == 0, "round trip differs (mode %d)", mode);
    }
    free(buf);
    free(back);
    free(ids);
    tok_bpe_destroy(&bpe);
}

Test(bpe, heap_encoder_matches_reference) {
    tok_bpe_t *bpe = s_trained(300);
    size_t len;
    char *text = s_corpus(&len);
    util_rng_t rng = {.s = 11};
    int32_t *a = util_malloc(4096 * sizeof(int32_t)), *b = util_malloc(4096 * sizeof(int32_t));
    for (int it = 0; it < 60; it++) {
        size_t off = util_rng_next(&rng) % (len - 2000), n = 1 + util_rng_next(&rng) % 1500;
        char chunk[1600];
        memcpy(chunk, text + off, n);
        if (it % 4 == 0)  /* some damage: random bytes inside words */
            for (int k = 0; k < 20; k++)
                chunk[util_rng_next(&rng) % n] = (char)util_rng_next(&rng);
        size_t ka = tok_bpe_encode(bpe, chunk, n, a, 4096);
        s_ref_t st = {bpe, b, 0};
        tok_pretokenize(chunk, n, s_ref_piece, &st);
        cr_assert_eq(ka, st.n, "lengths %zu vs %zu", ka, st.n);
        cr_assert(memcmp(a, b, ka * sizeof(int32_t)) == 0, "ids differ at iteration %d", it);
        /* Second call is served by the cache: same answer. */
        cr_assert_eq(tok_bpe_encode(bpe, chunk, n, b, 4096), ka);
        cr_assert(memcmp(a, b, ka * sizeof(int32_t)) == 0);
    }
    /* Compression on the text it was trained on: well under one id per 2 bytes. */
    int32_t *ids = util_malloc(len * sizeof(int32_t));
    size_t k = tok_bpe_encode(bpe, text, len, ids, len);
    cr_log_info("%zu bytes -> %zu ids with %d merges", len, k, tok_bpe_n_merges(bpe));
    cr_assert_lt(k * 2, len);
    /* A too-small buffer still reports the full count. */
    cr_assert_eq(tok_bpe_encode(bpe, text, len, ids, 10), k);
    cr_assert_eq(tok_bpe_encode(bpe, text, len, NULL, 0), k);
    free(ids);
    free(a);
    free(b);
    free(text);
    tok_bpe_destroy(&bpe);
}

Test(bpe, training_is_deterministic) {
    tok_bpe_t *x = s_trained(200), *y = s_trained(200);
    size_t lx, ly;
    char *sx = tok_bpe_serialize(x, &lx), *sy = tok_bpe_serialize(y, &ly);
    cr_assert_eq(lx, ly);
    cr_assert(memcmp(sx, sy, lx) == 0);
    free(sx);
    free(sy);
    tok_bpe_destroy(&x);
    tok_bpe_destroy(&y);
}

Test(bpe, file_round_trip_and_errors) {
    tok_bpe_t *bpe = s_trained(100);
    char path[] = "/tmp/test_bpe_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char err[256];
    cr_assert_eq(tok_bpe_save(bpe, path, err, sizeof err), 0, "%s", err);
    tok_bpe_t *back = tok_bpe_load(path, err, sizeof err);
    cr_assert(back, "%s", err);
    cr_assert_eq(tok_bpe_n_merges(back), tok_bpe_n_merges(bpe));
    cr_assert(memcmp(tok_bpe_merges(back), tok_bpe_merges(bpe),
                     (size_t)tok_bpe_n_merges(bpe) * 2 * sizeof(int32_t)) == 0);
    unlink(path);
    tok_bpe_destroy(&back);
    tok_bpe_destroy(&bpe);

    struct { const char *text, *needle; } bad[] = {
        {"", "magic"},
        {"GPT2 merges\n", "magic"},
        {"OFABPE 2\nmerges 0\n", "version 2"},
        {"OFABPE 1\nmerges x\n", "line 2"},
        {"OFABPE 1\nmerges 2\n5 6\n", "ends after 1 of 2"},
        {"OFABPE 1\nmerges 1\n5 261\n", "does not exist"},
        {"OFABPE 1\nmerges 1\n4 5\n", "does not exist"},
        {"OFABPE 1\nmerges 2\n5 6\n5 6\n", "repeats"},
        {"OFABPE 1\nmerges 1\n5 six\n", "line 3"},
        {"OFABPE 1\nmerges 1\n5 6\n7 8\n", "after the 1 merges"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        tok_bpe_t *t = tok_bpe_parse(bad[i].text, strlen(bad[i].text), err, sizeof err);
        cr_expect_null(t, "accepted bad file %zu", i);
        cr_expect(strstr(err, bad[i].needle), "file %zu: '%s' lacks '%s'", i, err,
                  bad[i].needle);
        tok_bpe_destroy(&t);
    }
    tok_bpe_t *ok = tok_bpe_parse("OFABPE 1\nmerges 1\n5 6\n", 22, err, sizeof err);
    cr_assert(ok, "%s", err);
    tok_bpe_destroy(&ok);
    cr_assert_null(tok_bpe_load("/nonexistent/merges.bpe", err, sizeof err));
}

Test(bpe, special_and_bin_tokens_decode) {
    tok_bpe_t *bpe = s_trained(50);
    int bin0 = tok_bpe_bin0(bpe);
    int32_t ids[] = {TOK_BOS, TOK_BYTE0 + 'h', TOK_BYTE0 + 'i', TOK_MASK, bin0 + 7, TOK_EOS,
                     TOK_PAD, bin0 + 999, bin0 + 1000, -3};
    char out[64];
    size_t n = tok_bpe_decode(bpe, ids, 10, out, sizeof out);
    cr_assert_str_eq(out, "hi<mask><bin_7><bin_999>");
    cr_assert_eq(n, strlen(out));
    tok_bpe_t *c = tok_bpe_clone(bpe);
    cr_assert_eq(tok_bpe_vocab_size(c), tok_bpe_vocab_size(bpe));
    tok_bpe_destroy(&c);
    tok_bpe_destroy(&bpe);
}

/* ofa-bpe-train end to end: TSV column + JSONL key (with escapes) + text file. */
Test(bpe, train_program_reads_tsv_jsonl_text) {
    char dir[] = "/tmp/test_bpe_cli_XXXXXX";
    cr_assert(mkdtemp(dir));
    char tsv[256], jsonl[256], txt[256], out[256], cmd[2048];
    snprintf(tsv, sizeof tsv, "%s/a.tsv", dir);
    snprintf(jsonl, sizeof jsonl, "%s/b.jsonl", dir);
    snprintf(txt, sizeof txt, "%s/c.txt", dir);
    snprintf(out, sizeof out, "%s/out.bpe", dir);
    FILE *f = fopen(tsv, "w");
    for (int i = 0; i < 50; i++)
        fprintf(f, "%d\tIMAGEBYTES\ttwo dogs playing in the snow %d\n", i, i);
    fclose(f);
    f = fopen(jsonl, "w");
    for (int i = 0; i < 50; i++)
        fprintf(f, "{\"id\": %d, \"meta\": {\"cap\": \"no\"}, \"cap\": \"caf\\u00e9 \\\"latte\\\" art\"}\n", i);
    fprintf(f, "not json\n");
    fclose(f);
    f = fopen(txt, "w");
    fprintf(f, "what does the image describe?\n");
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s/bin/ofa-bpe-train --out %s --vocab 60 --tsv %s --column 2 --jsonl %s --key cap "
             "--text %s 2>%s/log", OFA_BINARY_DIR, out, tsv, jsonl, txt, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    char err[256];
    tok_bpe_t *bpe = tok_bpe_load(out, err, sizeof err);
    cr_assert(bpe, "%s", err);
    /* The corpus is tiny: it runs out of pairs seen twice before 60 merges. */
    cr_assert(tok_bpe_n_merges(bpe) >= 20 && tok_bpe_n_merges(bpe) <= 60, "%d merges",
              tok_bpe_n_merges(bpe));
    /* The JSON escapes were decoded: "café" is one token or a few, never a backslash. */
    int32_t ids[64];
    size_t n = tok_bpe_encode(bpe, " caf\xc3\xa9", 6, ids, 64);
    cr_assert_leq(n, 2, "café not learned (%zu ids)", n);
    /* IMAGEBYTES (column 1) was not read: it is not a single token. */
    cr_assert_gt(tok_bpe_encode(bpe, "IMAGEBYTES", 10, ids, 64), 3);
    tok_bpe_destroy(&bpe);
    /* Bad invocations fail with a reason. */
    const char *bad[] = {"--out /dev/null --vocab 10",                  /* no corpus */
                         "--out /dev/null --vocab x --text /dev/null",  /* bad number */
                         "--out /dev/null --vocab 10 --tsv /dev/null",  /* no --column */
                         "--out /dev/null --vocab 10 --text /nonexistent/file",
                         "--frobnicate 1"};
    for (int i = 0; i < 5; i++) {
        snprintf(cmd, sizeof cmd, "%s/bin/ofa-bpe-train %s 2>/dev/null", OFA_BINARY_DIR, bad[i]);
        cr_expect_neq(system(cmd), 0, "accepted: %s", bad[i]);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Mutated merges files: parsed or refused with a reason, never a crash. */
Test(bpe, mutated_files_never_crash) {
    tok_bpe_t *bpe = s_trained(100);
    size_t len;
    char *orig = tok_bpe_serialize(bpe, &len);
    char *buf = util_malloc(len + 1);
    util_rng_t rng = {.s = 5};
    int refused = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(buf, orig, len);
        int flips = 1 + (int)(util_rng_next(&rng) % 4);
        for (int k = 0; k < flips; k++)
            buf[util_rng_next(&rng) % len] = (char)(util_rng_next(&rng) % 2 ? util_rng_next(&rng)
                                                                          : '0' + it % 10);
        size_t cut = it % 5 == 0 ? util_rng_next(&rng) % len : len;
        char err[256] = "";
        tok_bpe_t *t = tok_bpe_parse(buf, cut, err, sizeof err);
        if (!t) {
            cr_assert(err[0], "refused without a reason");
            refused++;
        } else {
            /* Whatever parsed must still round-trip bytes. */
            int32_t ids[64];
            char back[64];
            size_t n = tok_bpe_encode(t, "the quick \xff\xfe fox", 16, ids, 64);
            cr_assert_eq(tok_bpe_decode(t, ids, n, back, sizeof back), 16);
            cr_assert(memcmp(back, "the quick \xff\xfe fox", 16) == 0);
        }
        tok_bpe_destroy(&t);
    }
    cr_assert_gt(refused, 0);
    free(buf);
    free(orig);
    tok_bpe_destroy(&bpe);
}
