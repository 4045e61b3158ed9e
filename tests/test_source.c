/* test_source.c: the source library (stages/source/source.h) on small files written by
 * the test: TSV and JSONL rows, base64 and file-path media, rejects naming file:line and
 * column, the order contract (slots of one task, per-epoch shuffles, validation last in
 * file order), task mixing by weight, determinism, max_rows, and garbage JSONL. */
#include "base64.h"
#include "child_proc.h"
#include "source.h"
#include "util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

static char dir[256];
static char err[8192];

static void write_file(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* "IMG <i>" as base64: URL-safe without padding for even rows, standard for odd ones. */
static void img_b64(int i, char *out, size_t outlen) {
    char raw[32];
    snprintf(raw, sizeof raw, "IMG %d?>", i);   /* '?' and '>' give '/' and '+' */
    char *e = base64_encode((const uint8_t *)raw, strlen(raw));
    if (i % 2 == 0) {
        for (char *c = e; *c; c++)
            *c = *c == '+' ? '-' : *c == '/' ? '_' : *c == '=' ? 0 : *c;
    }
    snprintf(out, outlen, "%s", e);
    free(e);
}

/* cap.tsv: 10 rows; row 3 has 2 columns, row 5 bad base64, row 7 a file path that is
 * valid base64 too ("pics/seven": the path wins), row 8 a path that does not exist. A
 * blank line after row 4 is not a row. cap_valid.tsv: 3 rows. qa.jsonl: 7 rows, row 2
 * cut short, row 4 nested. */
static void make_data(void) {
    snprintf(dir, sizeof dir, "/tmp/ofa_test_source_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char buf[8192] = "", line[512], b64[128];
    for (int i = 0; i < 10; i++) {
        img_b64(i, b64, sizeof b64);
        if (i == 3)
            snprintf(line, sizeof line, "%d\t%s\n", i, b64);
        else if (i == 5)
            snprintf(line, sizeof line, "%d\tSU1H*IDU\tcaption %d\n", i, i);
        else if (i == 7)
            snprintf(line, sizeof line, "%d\tpics/seven\tcaption %d\n", i, i);
        else if (i == 8)
            snprintf(line, sizeof line, "%d\tpics/missing.jpg\tcaption %d\n", i, i);
        else
            snprintf(line, sizeof line, "%d\t%s\tcaption %d\n", i, b64, i);
        strcat(buf, line);
        if (i == 4)
            strcat(buf, "\n");
    }
    write_file("cap.tsv", buf);
    buf[0] = 0;
    for (int i = 0; i < 3; i++) {
        img_b64(100 + i, b64, sizeof b64);
        snprintf(line, sizeof line, "v%d\t%s\tvalid caption %d\r\n", i, b64, i);
        strcat(buf, line);
    }
    write_file("cap_valid.tsv", buf);
    char pics[512];
    snprintf(pics, sizeof pics, "%s/pics", dir);
    cr_assert_eq(mkdir(pics, 0755), 0);
    write_file("pics/seven", "seven's bytes");
    buf[0] = 0;
    for (int i = 0; i < 7; i++) {
        img_b64(200 + i, b64, sizeof b64);
        if (i == 2)
            snprintf(line, sizeof line, "{\"image\": \"%s\", \"question\": \"q\\u00e9 %d\"\n",
                     b64, i);
        else if (i == 4)
            snprintf(line, sizeof line,
                     "{\"image\": \"%s\", \"question\": [1], \"answer\": \"a\"}\n", b64);
        else
            snprintf(line, sizeof line,
                     "{\"image\": \"%s\", \"question\": \"q\\u00e9 %d\", \"answer\": %d, "
                     "\"x\": null}\n", b64, i, i);
        strcat(buf, line);
    }
    write_file("qa.jsonl", buf);
}

static void rm_data(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The usual task settings: cap 4 a batch over 2 epochs, qa 3 a batch over 1. */
#define CAP_DEF "batch_size = 4; epochs = 2;"
#define QA_DEF "batch_size = 3;"

static void plan_text(char *text, size_t len, int seed, const char *cap_extra,
                      const char *qa_extra) {
    snprintf(text, len,
             "seed = %d;\n"
             "tasks = (\n"
             "  { name = \"cap\";\n"
             "    instruction = \"[IMAGE:img] what does the image describe? -> [TEXT:cap]\";\n"
             "    train = [\"cap.tsv\"]; valid = [\"cap_valid.tsv\"];\n"
             "    columns = [\"id\", \"img\", \"cap\"]; %s },\n"
             "  { name = \"qa\";\n"
             "    instruction = \"[IMAGE:image] [TEXT:question] -> [TEXT:answer]\";\n"
             "    train = [\"qa.jsonl\"]; format = \"jsonl\";\n"
             "    columns = [\"image\", \"question\", \"answer\"]; weight = 3.0;"
             " %s }\n"
             ");\n",
             seed, cap_extra, qa_extra);
}

static plan_t *load_plan(int seed, const char *cap_extra, const char *qa_extra) {
    char text[4096];
    plan_text(text, sizeof text, seed, cap_extra, qa_extra);
    plan_t *p = plan_load_string(text, "t.conf", dir, err, sizeof err);
    cr_assert_not_null(p, "plan: %s", err);
    return p;
}

/* Every message of a source, in order. */
static int drain(source_t *src, proto_msg_t **out, int max) {
    int n = 0;
    for (proto_msg_t *m; (m = source_next(src));) {
        cr_assert_lt(n, max, "more messages than expected");
        out[n++] = m;
    }
    cr_assert_null(source_next(src), "the end stays the end");
    return n;
}

TestSuite(source, .init = make_data, .fini = rm_data);

Test(source, order_contract) {
    plan_t *p = load_plan(5, CAP_DEF, QA_DEF);
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    proto_msg_t *m[64];
    int n = drain(src, m, 64);
    /* cap: 10 rows x 2 epochs + 3 valid; qa: 7 rows x 1 epoch. */
    cr_assert_eq(n, 20 + 3 + 7);
    cr_assert_eq(source_emitted(src), n);
    int seen[2][2][10] = {{{0}}};   /* [task][epoch][row] */
    int64_t prev_slot = -1, slot_n = 0;
    const char *slot_task = NULL;
    int64_t slot_epoch = -1;
    int first_valid = -1;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(proto_msg_get_int(m[i], "seq", -1), i);
        const char *task = proto_msg_task(m[i]);
        int ti = strcmp(task, "cap") == 0 ? 0 : 1;
        const char *split = proto_msg_get_str(m[i], "split");
        int64_t row = proto_msg_get_int(m[i], "row", -1);
        int64_t epoch = proto_msg_get_int(m[i], "epoch", -1);
        int64_t slot = proto_msg_get_int(m[i], "slot", -1);
        uint64_t id = proto_msg_ids(m[i])[0];
        cr_assert_eq(proto_msg_n_ids(m[i]), 1);
        int valid = strcmp(split, "valid") == 0;
        cr_assert_eq(id, source_sample_id(ti, valid, row));
        cr_assert_eq(id >> 40, (uint64_t)ti);
        cr_assert_eq((id >> 39) & 1, (uint64_t)valid);
        /* Slots: consecutive, numbered from 0 without gaps, one task and one epoch each,
         * at most the task's batch_size. */
        if (slot != prev_slot) {
            cr_assert_eq(slot, prev_slot + 1, "seq %d: slot %lld after %lld", i,
                         (long long)slot, (long long)prev_slot);
            prev_slot = slot;
            slot_n = 0;
            slot_task = task;
            slot_epoch = epoch;
        }
        cr_assert_str_eq(task, slot_task, "seq %d: a slot mixes tasks", i);
        cr_assert_eq(epoch, slot_epoch, "seq %d: a slot spans epochs", i);
        slot_n++;
        cr_assert_leq(slot_n, ti == 0 ? 4 : 3);
        if (valid) {
            if (first_valid < 0)
                first_valid = i;
            cr_assert_eq(ti, 0);
            cr_assert_eq(row, i - first_valid, "validation rows in file order");
            cr_assert_eq(epoch, 0);
        } else {
            cr_assert_eq(first_valid, -1, "a training row after the validation rows");
            cr_assert_lt(row, ti == 0 ? 10 : 7);
            seen[ti][epoch][row]++;
        }
    }
    /* Every training row exactly once per epoch. */
    for (int r = 0; r < 10; r++) {
        cr_assert_eq(seen[0][0][r], 1, "cap epoch 0 row %d", r);
        cr_assert_eq(seen[0][1][r], 1, "cap epoch 1 row %d", r);
    }
    for (int r = 0; r < 7; r++) {
        cr_assert_eq(seen[1][0][r], 1, "qa row %d", r);
        cr_assert_eq(seen[1][1][r], 0);
    }
    cr_assert_eq(first_valid, 27);
    /* The shuffle differs between epochs (10! orders: equal only by a seeded accident). */
    int same = 1;
    int64_t e0[10], e1[10];
    int k0 = 0, k1 = 0;
    for (int i = 0; i < first_valid; i++)
        if (strcmp(proto_msg_task(m[i]), "cap") == 0) {
            int64_t e = proto_msg_get_int(m[i], "epoch", 0), r = proto_msg_get_int(m[i], "row", 0);
            if (e == 0)
                e0[k0++] = r;
            else
                e1[k1++] = r;
        }
    for (int i = 0; i < 10; i++)
        same &= e0[i] == e1[i];
    cr_assert_not(same, "epoch 1 repeats epoch 0's order");
    for (int i = 0; i < n; i++)
        proto_msg_destroy(&m[i]);
    source_destroy(&src);
    cr_assert_null(src);
    plan_destroy(&p);
}

Test(source, sample_fields_and_media) {
    plan_t *p = load_plan(5, CAP_DEF, QA_DEF);
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    proto_msg_t *m[64];
    int n = drain(src, m, 64);
    int checked_path = 0, checked_b64 = 0, checked_json = 0;
    for (int i = 0; i < n; i++) {
        if (proto_msg_kind(m[i]) != PROTO_SAMPLE)
            continue;
        const char *task = proto_msg_task(m[i]);
        int64_t row = proto_msg_get_int(m[i], "row", -1);
        int valid = strcmp(proto_msg_get_str(m[i], "split"), "valid") == 0;
        cr_assert_str_eq(proto_msg_get_str(m[i], "@route"),
                         plan_task(p, task)->plan->route);
        cr_assert_eq(proto_msg_get_int(m[i], "@hop", -1), 0);
        const char *imgcol = strcmp(task, "cap") == 0 ? "img" : "image";
        const proto_field_t *img = proto_msg_get(m[i], imgcol);
        cr_assert_not_null(img);
        cr_assert_eq(img->type, PV_BIN, "image columns travel as bytes");
        char want[64];
        if (strcmp(task, "cap") == 0 && row == 7 && !valid) {
            snprintf(want, sizeof want, "seven's bytes");
            checked_path++;
        } else {
            snprintf(want, sizeof want, "IMG %lld?>",
                     (long long)(row + (valid ? 100 : strcmp(task, "qa") == 0 ? 200 : 0)));
            checked_b64++;
        }
        cr_assert_eq(img->len, strlen(want), "%s row %lld", task, (long long)row);
        cr_assert(memcmp(img->data, want, img->len) == 0, "%s row %lld", task, (long long)row);
        if (strcmp(task, "cap") == 0) {
            char cap[64];
            snprintf(cap, sizeof cap, valid ? "valid caption %lld" : "caption %lld",
                     (long long)row);
            cr_assert_str_eq(proto_msg_get_str(m[i], "cap"), cap, "a CR before LF is no text");
            cr_assert_null(proto_msg_get(m[i], "id"), "only the instruction's columns travel");
        } else {
            char q[32], a[32];
            snprintf(q, sizeof q, "q\xc3\xa9 %lld", (long long)row);
            snprintf(a, sizeof a, "%lld", (long long)row);
            cr_assert_str_eq(proto_msg_get_str(m[i], "question"), q);
            cr_assert_str_eq(proto_msg_get_str(m[i], "answer"), a, "numbers kept as text");
            checked_json++;
        }
    }
    cr_assert_eq(checked_path, 2);   /* row 7 in both epochs */
    cr_assert_eq(checked_json, 5);
    cr_assert_eq(checked_b64, 2 * 6 + 3 + 5);
    for (int i = 0; i < n; i++)
        proto_msg_destroy(&m[i]);
    source_destroy(&src);
    plan_destroy(&p);
}

Test(source, rejects_name_file_line_and_column) {
    plan_t *p = load_plan(5, CAP_DEF, QA_DEF);
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    proto_msg_t *m[64];
    int n = drain(src, m, 64);
    int nrej = 0, got[4] = {0};
    char want[4][512];
    /* Row 3 is on line 4; the blank line after row 4 moves rows 5.. one line down. */
    snprintf(want[0], sizeof want[0], "%s/cap.tsv:4: row has 2 columns, the plan names 3", dir);
    snprintf(want[1], sizeof want[1], "%s/cap.tsv:7: column img: base64: bad character '*' at "
             "offset 4", dir);
    snprintf(want[2], sizeof want[2],
             "%s/cap.tsv:10: column img: base64: bad character '.' at offset 12", dir);
    snprintf(want[3], sizeof want[3],
             "%s/qa.jsonl:3: expected ',' or '}' after key \"question\"", dir);
    for (int i = 0; i < n; i++) {
        if (proto_msg_kind(m[i]) != PROTO_REJECT)
            continue;
        nrej++;
        const char *reason = proto_msg_get_str(m[i], "reason");
        cr_assert_not_null(reason);
        cr_assert_str_eq(proto_msg_get_str(m[i], "stage"), "source");
        cr_assert_eq(proto_msg_get_int(m[i], "seq", -1), i, "a reject keeps its seq");
        cr_assert_geq(proto_msg_get_int(m[i], "slot", -1), 0);
        cr_assert_eq(proto_msg_n_ids(m[i]), 1);
        int64_t row = proto_msg_get_int(m[i], "row", -1);
        const char *task = proto_msg_task(m[i]);
        int which = strcmp(task, "qa") == 0 ? (row == 2 ? 3 : 4)
                    : row == 3 ? 0 : row == 5 ? 1 : row == 8 ? 2 : 5;
        cr_assert_lt(which, 5, "unexpected reject of %s row %lld: %s", task, (long long)row,
                     reason);
        if (which == 4) {
            cr_assert_eq(row, 4);
            cr_assert(strstr(reason, "qa.jsonl:5: key \"question\": nested values"), "%s",
                      reason);
            continue;
        }
        cr_assert(strstr(reason, want[which]), "want \"%s\" in \"%s\"", want[which], reason);
        if (which == 2)
            cr_assert(strstr(reason, "not a readable file"), "%s", reason);
        got[which]++;
    }
    /* cap's 3 bad rows in each of 2 epochs, qa's 2 once. */
    cr_assert_eq(nrej, 3 * 2 + 2);
    cr_assert_eq(got[0], 2);
    cr_assert_eq(got[1], 2);
    cr_assert_eq(got[2], 2);
    cr_assert_eq(got[3], 1);
    for (int i = 0; i < n; i++)
        proto_msg_destroy(&m[i]);
    source_destroy(&src);
    plan_destroy(&p);
}

/* The same plan and seed give the same bytes; another seed another order. */
Test(source, deterministic_from_plan_and_seed) {
    char *a[64], *c[64];
    size_t alen[64], clen[64];
    int na = 0, nc = 0, differ = 0;
    for (int run = 0; run < 3; run++) {
        plan_t *p = load_plan(run < 2 ? 5 : 6, CAP_DEF, QA_DEF);
        source_t *src = source_new(p, err, sizeof err);
        cr_assert_not_null(src, "%s", err);
        int k = 0;
        for (proto_msg_t *m; (m = source_next(src)); k++) {
            size_t len;
            char *bytes = proto_encode_bytes(m, &len);
            proto_msg_destroy(&m);
            if (run == 0) {
                a[k] = bytes;
                alen[k] = len;
                na++;
            } else if (run == 1) {
                c[k] = bytes;
                clen[k] = len;
                nc++;
            } else {
                differ |= k >= na || len != alen[k] || memcmp(bytes, a[k], len) != 0;
                free(bytes);
            }
        }
        source_destroy(&src);
        plan_destroy(&p);
    }
    cr_assert_eq(na, nc);
    for (int i = 0; i < na; i++) {
        cr_assert_eq(alen[i], clen[i], "message %d", i);
        cr_assert(memcmp(a[i], c[i], alen[i]) == 0, "message %d differs", i);
        free(a[i]);
        free(c[i]);
    }
    cr_assert(differ, "seed 6 gives the same order as seed 5");
}

Test(source, max_rows_limits_each_split) {
    plan_t *p = load_plan(5, "batch_size = 4; max_rows = 4; epochs = 1;",
                          "batch_size = 3; max_rows = 2;");
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    proto_msg_t *m[64];
    int n = drain(src, m, 64);
    cr_assert_eq(n, 4 + 3 + 2);
    for (int i = 0; i < n; i++) {
        int valid = strcmp(proto_msg_get_str(m[i], "split"), "valid") == 0;
        int64_t row = proto_msg_get_int(m[i], "row", -1);
        cr_assert_lt(row, valid ? 3 : strcmp(proto_msg_task(m[i]), "cap") == 0 ? 4 : 2);
        proto_msg_destroy(&m[i]);
    }
    source_destroy(&src);
    plan_destroy(&p);
}

Test(source, missing_file_is_an_error) {
    plan_t *p = load_plan(5, CAP_DEF, QA_DEF);
    char path[512];
    snprintf(path, sizeof path, "%s/qa.jsonl", dir);
    cr_assert_eq(unlink(path), 0);
    err[0] = 0;
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_null(src);
    cr_assert(strstr(err, path) && strstr(err, "No such file"), "%s", err);
    plan_destroy(&p);
}

/* Weights decide the share of slots while both tasks have rows: cap (weight 1, 1 row a
 * slot) against qa (weight 3). */
Test(source, mixing_follows_weights) {
    char *buf = util_malloc(400 * 64);
    buf[0] = 0;
    for (int i = 0; i < 400; i++) {
        char line[64];
        snprintf(line, sizeof line, "%d\taGVsbG8\tc\n", i);
        strcat(buf, line);
    }
    write_file("cap.tsv", buf);
    buf[0] = 0;
    for (int i = 0; i < 400; i++)
        strcat(buf, "{\"image\": \"aGVsbG8\", \"question\": \"q\", \"answer\": \"a\"}\n");
    write_file("qa.jsonl", buf);
    free(buf);
    plan_t *p = load_plan(9, "batch_size = 1; epochs = 1;", "batch_size = 1;");
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    int qa = 0;
    for (int i = 0; i < 200; i++) {
        proto_msg_t *m = source_next(src);
        cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE);
        qa += strcmp(proto_msg_task(m), "qa") == 0;
        proto_msg_destroy(&m);
    }
    /* Expected 150 of 200; binomial sd ~6. */
    cr_assert(qa > 125 && qa < 175, "qa took %d of 200 slots (weight 3 of 4)", qa);
    /* When qa runs out, cap takes every remaining slot; the run holds all 800 rows. */
    int rest = 0;
    for (proto_msg_t *m; (m = source_next(src)); rest++)
        proto_msg_destroy(&m);
    cr_assert_eq(rest, 600 + 3);
    source_destroy(&src);
    plan_destroy(&p);
}

/* Random edits of a good JSONL line and of a TSV line: each line gives one SAMPLE or one
 * REJECT with a reason, never a crash (run under ASan in the sanitizer build). */
Test(source, garbage_rows_never_crash) {
    static const char base[] = "{\"image\": \"aGVsbG8\", \"question\": \"q\\u00e9\\ud83d\\ude00\","
                               " \"answer\": -1.5e3}";
    static const char alphabet[] = "{}[]\":,\\u0e9d aZ-+.\t\x01\xff";
    util_rng_t rng = {1234};
    const int N = 3000;
    char *buf = util_malloc((size_t)N * (sizeof base + 8));
    size_t o = 0;
    for (int i = 0; i < N; i++) {
        char line[sizeof base];
        memcpy(line, base, sizeof base);
        int edits = (int)(util_rng_next(&rng) % 4);
        for (int e = 0; e < edits; e++)
            line[util_rng_next(&rng) % (sizeof base - 1)] =
                alphabet[util_rng_next(&rng) % (sizeof alphabet - 1)];
        size_t len = strlen(line);
        if (i % 7 == 3)
            len = util_rng_next(&rng) % len + 1;   /* truncated */
        memcpy(buf + o, line, len);
        o += len;
        buf[o++] = '\n';
    }
    buf[o] = 0;
    /* Blank lines are not rows: count the non-empty ones. */
    int rows = 0;
    for (size_t i = 0, start = 0; i < o; i++)
        if (buf[i] == '\n') {
            rows += i > start && !(i == start + 1 && buf[start] == '\r');
            start = i + 1;
        }
    write_file("qa.jsonl", buf);
    free(buf);
    plan_t *p = load_plan(3, "batch_size = 4; epochs = 1;", QA_DEF);
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    int nqa = 0, nsample = 0;
    for (proto_msg_t *m; (m = source_next(src));) {
        if (strcmp(proto_msg_task(m), "qa") == 0) {
            nqa++;
            if (proto_msg_kind(m) == PROTO_REJECT) {
                const char *r = proto_msg_get_str(m, "reason");
                cr_assert(r && strstr(r, "qa.jsonl:"), "%s", r ? r : "(none)");
            } else {
                cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE);
                nsample++;
            }
        }
        proto_msg_destroy(&m);
    }
    cr_assert_eq(nqa, rows);
    cr_assert_gt(nsample, 0, "unedited lines are samples");
    cr_assert_lt(nsample, rows, "most edits are rejects");
    source_destroy(&src);
    plan_destroy(&p);
}

/* ---------------------------------------------------------------- ofa-source */

static void send_credit(void *router, const uint8_t *ident, size_t identlen, int n) {
    proto_msg_t *c = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(c, "n", n);
    cr_assert_eq(proto_send(router, ident, identlen, &c, 0), 0);
}

/* The test plays the broker: hello, CREDIT-bounded emission in the library's order,
 * eof with the count, task.<T>.read counters on the stats socket, exit 0 on SIGTERM. */
Test(source, program_over_zeromq, .timeout = 60) {
    char text[4096], path[512], ctl[300], stats_ep[300], log[512], prog[1024];
    plan_text(text, sizeof text, 5, CAP_DEF, QA_DEF);
    write_file("p.conf", text);
    snprintf(path, sizeof path, "%s/p.conf", dir);
    snprintf(ctl, sizeof ctl, "ipc://%s/b.sock", dir);
    snprintf(stats_ep, sizeof stats_ep, "ipc://%s/s.sock", dir);
    snprintf(log, sizeof log, "%s/source.log", dir);
    snprintf(prog, sizeof prog, "%s/bin/ofa-source", OFA_BINARY_DIR);
    void *zctx = zmq_ctx_new();
    void *router = zmq_socket(zctx, ZMQ_ROUTER), *pull = zmq_socket(zctx, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(pull, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(router, ctl), 0);
    cr_assert_eq(zmq_bind(pull, stats_ep), 0);
    char *argv[] = {prog, "--id", "src", "--ctl", ctl, "--plan", path, "--stats", stats_ep,
                    NULL};
    pid_t pid = cproc_spawn(argv, log);

    uint8_t ident[256];
    size_t identlen = 0;
    proto_msg_t *hello = cproc_next_msg(router, ident, &identlen, 10000);
    cr_assert_not_null(hello, "no hello from ofa-source (see %s)", log);
    cr_assert_str_eq(proto_msg_op(hello), "hello");
    cr_assert_str_eq(proto_msg_get_str(hello, "role"), "source");
    proto_msg_destroy(&hello);

    /* The library's order, to compare with. */
    plan_t *p = load_plan(5, CAP_DEF, QA_DEF);
    source_t *ref = source_new(p, err, sizeof err);
    cr_assert_not_null(ref, "%s", err);

    /* No credit, nothing sent; CREDIT 5, exactly 5. */
    cr_assert_null(cproc_next_msg(router, ident, &identlen, 300));
    send_credit(router, ident, identlen, 5);
    int got = 0;
    for (; got < 5; got++) {
        proto_msg_t *m = cproc_next_msg(router, ident, &identlen, 5000);
        cr_assert_not_null(m, "message %d of the first 5 missing", got);
        proto_msg_t *r = source_next(ref);
        cr_assert_eq(proto_msg_kind(m), proto_msg_kind(r));
        cr_assert_eq(proto_msg_ids(m)[0], proto_msg_ids(r)[0]);
        cr_assert_eq(proto_msg_get_int(m, "seq", -1), got);
        proto_msg_destroy(&m);
        proto_msg_destroy(&r);
    }
    cr_assert_null(cproc_next_msg(router, ident, &identlen, 300), "more than the credit");
    /* A malformed credit is ignored, a good one lets the rest through, then eof. */
    send_credit(router, ident, identlen, -7);
    send_credit(router, ident, identlen, 100);
    proto_msg_t *m;
    while ((m = cproc_next_msg(router, ident, &identlen, 5000)) && proto_msg_kind(m) != PROTO_CONTROL) {
        proto_msg_t *r = source_next(ref);
        cr_assert_not_null(r, "more messages than the library emits");
        cr_assert_eq(proto_msg_kind(m), proto_msg_kind(r));
        cr_assert_eq(proto_msg_ids(m)[0], proto_msg_ids(r)[0]);
        cr_assert_eq(proto_msg_get_int(m, "seq", -1), got);
        if (proto_msg_kind(m) == PROTO_SAMPLE)
            cr_assert_str_eq(proto_msg_get_str(m, "@route"), proto_msg_get_str(r, "@route"));
        got++;
        proto_msg_destroy(&m);
        proto_msg_destroy(&r);
    }
    cr_assert_not_null(m, "no eof");
    cr_assert_str_eq(proto_msg_op(m), "eof");
    cr_assert_eq(proto_msg_get_int(m, "count", -1), 30);
    cr_assert_eq(got, 30);
    cr_assert_null(source_next(ref));
    proto_msg_destroy(&m);

    /* Stats: cumulative read counters per task (rejects included). */
    double cap_read = -1, qa_read = -1;
    double end = util_now() + 5;
    while (util_now() < end && (cap_read != 23 || qa_read != 7)) {
        proto_msg_t *s = cproc_next_msg(pull, NULL, NULL, 500);
        if (!s)
            continue;
        cr_assert_eq(proto_msg_kind(s), PROTO_STATS);
        cap_read = proto_msg_get_float(s, "task.cap.read", -1);
        qa_read = proto_msg_get_float(s, "task.qa.read", -1);
        proto_msg_destroy(&s);
    }
    cr_assert_eq(cap_read, 23);
    cr_assert_eq(qa_read, 7);

    kill(pid, SIGTERM);
    cr_assert_eq(cproc_wait_exit(pid, 5), 0, "ofa-source should exit 0 on SIGTERM");
    source_destroy(&ref);
    plan_destroy(&p);
    zmq_close(router);
    zmq_close(pull);
    zmq_ctx_term(zctx);
}

/* --help exits 0; a bad flag or a plan that does not load exits non-zero with a reason. */
Test(source, program_flags, .timeout = 30) {
    char prog[1024], log[512], cmd[2400];
    snprintf(prog, sizeof prog, "%s/bin/ofa-source", OFA_BINARY_DIR);
    snprintf(log, sizeof log, "%s/flags.log", dir);
    char *help[] = {prog, "--help", NULL};
    cr_assert_eq(cproc_wait_exit(cproc_spawn(help, log), 10), 0);
    char *bogus[] = {prog, "--bogus", "1", NULL};
    cr_assert_eq(cproc_wait_exit(cproc_spawn(bogus, log), 10), 2);
    snprintf(cmd, sizeof cmd, "grep -q -- --bogus '%s'", log);
    cr_assert_eq(system(cmd), 0, "the reason names the flag");
    write_file("bad.conf", "tasks = (;\n");
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.conf", dir);
    char *badplan[] = {prog, "--id", "s", "--ctl", "ipc:///nonexistent/b.sock", "--plan", bad,
                       NULL};
    cr_assert_neq(cproc_wait_exit(cproc_spawn(badplan, log), 10), 0);
    snprintf(cmd, sizeof cmd, "grep -q 'bad.conf' '%s'", log);
    cr_assert_eq(system(cmd), 0, "the reason names the plan file");
}

/* ---------------------------------------------------------------- length bucketing */

/* cap.tsv with 96 rows whose captions are 1..60 characters long (pseudo-random). */
static void write_varied_captions(void) {
    char *buf = util_malloc(96 * 128);
    buf[0] = 0;
    util_rng_t rng = {77};
    for (int i = 0; i < 96; i++) {
        char line[128], cap[64];
        int len = 1 + (int)(util_rng_next(&rng) % 60);
        memset(cap, 'a' + i % 26, (size_t)len);
        cap[len] = 0;
        snprintf(line, sizeof line, "%d\taGVsbG8\t%s\n", i, cap);
        strcat(buf, line);
    }
    write_file("cap.tsv", buf);
    free(buf);
}

/* Padding of the caption column over the training slots: sum over slots of
 * (longest caption x slot size - the captions' lengths). Also checks that every
 * training row comes once per epoch and that slots stay whole. */
static long run_padding(int bucket, char **order_out) {
    plan_t *p = load_plan(5, "batch_size = 4; epochs = 2;", "batch_size = 3; epochs = 1;");
    source_t *src = source_new(p, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    source_set_bucket(src, bucket);
    long pad = 0, maxlen = 0, sum = 0, n = 0;
    int64_t cur_slot = -1;
    int seen[2][96] = {{0}};
    size_t olen = 0;
    char *order = util_malloc(65536);
    for (proto_msg_t *m; (m = source_next(src));) {
        int64_t slot = proto_msg_get_int(m, "slot", -1);
        olen += (size_t)snprintf(order + olen, 65536 - olen, "%s:%llu ", proto_msg_task(m),
                                 (unsigned long long)proto_msg_ids(m)[0]);
        if (slot != cur_slot) {
            pad += maxlen * n - sum;
            maxlen = sum = n = 0;
            cur_slot = slot;
        }
        const char *cap = proto_msg_get_str(m, "cap");
        if (cap && strcmp(proto_msg_get_str(m, "split"), "train") == 0) {
            long l = (long)strlen(cap);
            maxlen = l > maxlen ? l : maxlen;
            sum += l;
            n++;
            seen[proto_msg_get_int(m, "epoch", 0)][proto_msg_get_int(m, "row", 0)]++;
        }
        proto_msg_destroy(&m);
    }
    pad += maxlen * n - sum;
    for (int e = 0; e < 2; e++)
        for (int r = 0; r < 96; r++)
            cr_assert_eq(seen[e][r], 1, "bucket %d: epoch %d row %d seen %d times", bucket, e,
                         r, seen[e][r]);
    source_destroy(&src);
    plan_destroy(&p);
    *order_out = order;
    return pad;
}

Test(source, bucketing_cuts_padding_and_stays_deterministic) {
    write_varied_captions();
    char *off, *off2, *b8, *b8again, *b2;
    long pad_off = run_padding(0, &off);
    long pad_off1 = run_padding(1, &off2);
    long pad_b8 = run_padding(8, &b8);
    long pad_b8again = run_padding(8, &b8again);
    long pad_b2 = run_padding(2, &b2);
    cr_assert_str_eq(off, off2, "bucket 1 is the same as off");
    cr_assert_eq(pad_off, pad_off1);
    cr_assert_str_eq(b8, b8again, "bucketing is deterministic");
    cr_assert_eq(pad_b8, pad_b8again);
    cr_assert_str_neq(b8, off);
    /* Sorting 8 batches' worth of rows leaves a fraction of the random padding. */
    cr_assert_lt(pad_b8 * 3, pad_off, "padding %ld bucketed vs %ld off", pad_b8, pad_off);
    cr_assert_lt(pad_b8, pad_b2, "padding %ld with 8 vs %ld with 2", pad_b8, pad_b2);
    cr_log_info("caption padding: off %ld, bucket 2 %ld, bucket 8 %ld", pad_off, pad_b2, pad_b8);
    free(off);
    free(off2);
    free(b8);
    free(b8again);
    free(b2);
}
