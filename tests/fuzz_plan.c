/* fuzz_plan.c: fuzz target for the plan loader (plan_load_string) on arbitrary file
 * contents: libconfig syntax, the key table, instructions, stages and paths.
 *
 * The plan stands for "fuzz.conf" in a folder that does not exist, so an @include of a
 * relative path names nothing that can be read. An input naming a device file is
 * skipped: `@include "/dev/zero"` would only measure libconfig's patience.
 *
 * Properties checked beyond "no crash":
 *  - a refusal has a reason, and every line of it names the plan ("fuzz.conf:...") or a
 *    file under its folder (an @include);
 *  - a loaded plan has at least one task, each with a name, a compiled instruction, a
 *    format and a positive batch size and weight; its resolved text loads again and
 *    resolves to the same text (plan_write_resolved's promise: loading that file gives
 *    the same plan).
 * Any failure aborts, which the fuzzer reports. */
#include "planfile.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libconfig keeps its scanner's string buffer when a file has a syntax error (the
 * sanitizer job suppresses it too: scripts/lsan.supp). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libconfig.so\n";
}

#define NAME "fuzz.conf"
#define DIR "/nonexistent-ofa-fuzz/plans"

static void s_fail(const char *what, const char *detail, const char *text) {
    fprintf(stderr, "fuzz_plan: %s\n%s\n---- plan:\n%s\n", what, detail ? detail : "", text);
    abort();
}

static void s_check_error(const char *err, size_t cap, const char *text) {
    size_t len = strlen(err);
    if (len == 0)
        s_fail("refused without a reason", NULL, text);
    bool full = len + 1 >= cap;   /* the last line may be cut by the buffer */
    for (const char *l = err; *l;) {
        size_t n = strcspn(l, "\n");
        bool last_cut = full && l[n] == '\0';
        if (!last_cut && strncmp(l, NAME ":", strlen(NAME ":")) != 0 &&
            strncmp(l, DIR "/", strlen(DIR "/")) != 0)
            s_fail("an error line names neither the plan nor an included file", err, text);
        l += n;
        if (*l == '\n')
            l++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    if (strstr(text, "/dev") || strstr(text, "/proc") || strstr(text, "/sys")) {
        free(text);
        return 0;
    }
    static char err[8192];
    err[0] = '\0';
    plan_t *p = plan_load_string(text, NAME, DIR, err, sizeof err);
    if (!p) {
        s_check_error(err, sizeof err, text);
        free(text);
        return 0;
    }
    if (p->ntasks < 1)
        s_fail("loaded a plan without tasks", NULL, text);
    for (int i = 0; i < p->ntasks; i++) {
        const plan_task_t *t = &p->tasks[i];
        if (!t->name || !t->name[0] || strlen(t->name) > PLAN_MAX_TASK_NAME || !t->plan ||
            !t->format || t->batch_size < 1 || !(t->weight > 0))
            s_fail("a loaded task is not sane", t->name, text);
    }
    char *r1 = plan_resolved_text(p);
    err[0] = '\0';
    plan_t *p2 = plan_load_string(r1, NAME, DIR, err, sizeof err);
    if (!p2)
        s_fail("the resolved plan does not load", err, r1);
    char *r2 = plan_resolved_text(p2);
    if (strcmp(r1, r2) != 0) {
        fprintf(stderr, "---- first resolution:\n%s\n", r1);
        s_fail("the resolved plan resolves to other text", r2, text);
    }
    free(r1);
    free(r2);
    plan_destroy(&p2);
    plan_destroy(&p);
    free(text);
    return 0;
}
