/* fuzz_source_row.c: fuzz target for the source's row reader (TSV and JSONL rows, base64
 * and file-path media columns), reached through its public API: the input becomes the
 * contents of one task's training file and the source emits every row.
 *
 * Input format: byte 0 picks the task (even: "cap", TSV columns id, img, cap with an
 * IMAGE column; odd: "qa", JSONL keys q and a); the rest is the file.
 *
 * Properties checked beyond "no crash": each message is a SAMPLE or a REJECT; seqs run
 * 0, 1, 2... with no gap; a REJECT's reason names the file and line; a SAMPLE carries
 * every column of its task; the number of messages equals the number of non-empty lines.
 * Any failure aborts, which the fuzzer reports. */
#include "planfile.h"
#include "source.h"
#include "util.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char s_dir[64];
static char s_file[2][128];
static plan_t *s_plan;

static void s_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_source_row: %s: %s\n", what, detail ? detail : "");
    abort();
}

static void s_write(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len))
        s_fail("cannot write", path);
    close(fd);
}

static void s_remove_dir(void) {
    for (int i = 0; i < 2; i++)
        unlink(s_file[i]);
    rmdir(s_dir);
}

/* Once: a folder with the two training files and the plan naming them. */
static void s_init(void) {
    /* In memory where possible: rewriting a truncated file on a disk file system (ext4's
     * auto_da_alloc) waits for the disk and made each input cost a millisecond. */
    snprintf(s_dir, sizeof s_dir, "/dev/shm/ofa-fuzz-source-XXXXXX");
    if (!mkdtemp(s_dir)) {
        snprintf(s_dir, sizeof s_dir, "/tmp/ofa-fuzz-source-XXXXXX");
        if (!mkdtemp(s_dir))
            s_fail("mkdtemp", s_dir);
    }
    atexit(s_remove_dir);
    snprintf(s_file[0], sizeof s_file[0], "%s/cap.tsv", s_dir);
    snprintf(s_file[1], sizeof s_file[1], "%s/qa.jsonl", s_dir);
    s_write(s_file[0], "", 0);
    s_write(s_file[1], "", 0);
    static const char text[] =
        "name = \"fuzz\"; seed = 1;\n"
        "tasks = (\n"
        "  { name = \"cap\"; instruction = \"[IMAGE:img] what does the image describe? -> "
        "[TEXT:cap]\"; train = [\"cap.tsv\"]; format = \"tsv\"; columns = [\"id\", \"img\", "
        "\"cap\"]; batch_size = 4; },\n"
        "  { name = \"qa\"; instruction = \"what is the answer to \\\" [TEXT:q] \\\"? -> "
        "[TEXT:a]\"; train = [\"qa.jsonl\"]; format = \"jsonl\"; batch_size = 3; }\n"
        ");\n"
        "model = { size = \"nano\"; };\n"
        "trainer = { consumer = \"sink\"; };\n";
    char err[4096];
    s_plan = plan_load_string(text, "fuzz.conf", s_dir, err, sizeof err);
    if (!s_plan)
        s_fail("plan", err);
}

/* Non-empty lines (a lone "\r" counts as empty), as the source indexes rows. */
static long s_rows(const uint8_t *d, size_t n) {
    long rows = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || d[i] == '\n') {
            size_t e = i;
            if (e > start && d[e - 1] == '\r')
                e--;
            rows += e > start;
            start = i + 1;
        }
    }
    return rows;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_plan)
        s_init();
    if (size < 1)
        return 0;
    int t = data[0] & 1;
    s_write(s_file[t], data + 1, size - 1);
    s_write(s_file[1 - t], "", 0);
    char err[1024];
    source_t *src = source_new(s_plan, err, sizeof err);
    if (!src)
        s_fail("source_new", err);
    long n = 0;
    char where[200];
    snprintf(where, sizeof where, "%s:", s_file[t]);
    for (proto_msg_t *m; (m = source_next(src)); n++) {
        if (proto_msg_get_int(m, "seq", -1) != n)
            s_fail("seq", "not the position in the order");
        if (proto_msg_n_ids(m) != 1)
            s_fail("ids", "a sample carries one id");
        if (proto_msg_kind(m) == PROTO_REJECT) {
            const char *why = proto_msg_get_str(m, "reason");
            if (!why || strncmp(why, where, strlen(where)) != 0)
                s_fail("reject without file:line", why);
        } else if (proto_msg_kind(m) == PROTO_SAMPLE) {
            static const char *cols[2][2] = {{"img", "cap"}, {"q", "a"}};
            for (int c = 0; c < 2; c++)
                if (!proto_msg_get(m, cols[t][c]))
                    s_fail("sample without a column", cols[t][c]);
            if (t == 0 && proto_msg_get(m, "img")->type != PV_BIN)
                s_fail("image column", "not a bin");
        } else {
            s_fail("kind", proto_kind_name(proto_msg_kind(m)));
        }
        proto_msg_destroy(&m);
    }
    if (n != s_rows(data + 1, size - 1)) {
        char d[64];
        snprintf(d, sizeof d, "%ld messages for %ld rows", n, s_rows(data + 1, size - 1));
        s_fail("rows", d);
    }
    source_destroy(&src);
    return 0;
}
