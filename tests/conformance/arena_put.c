/* arena_put: a real arena for testing another language's reader of arena descriptors
 * (tests/conformance/python_arena_test.py). It makes an arena, puts the bytes of FILE
 * into two slots, releases the first (its descriptor is then stale), prints one JSON
 * line {"good": DESC, "stale": DESC} (DESC = {"name", "offset", "len", "gen"}), and keeps
 * the arena until a line (or end of file) arrives on stdin; then it says whether the
 * good slot is still in use (a reader must never release or unlink) and exits. */
#include "shmarena.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

static void s_print(const char *what, const shmarena_desc_t *d) {
    printf("\"%s\": {\"name\": \"%s\", \"offset\": %llu, \"len\": %llu, \"gen\": %llu}", what,
           d->name, (unsigned long long)d->offset, (unsigned long long)d->len,
           (unsigned long long)d->gen);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: arena_put FILE\n");
        return 2;
    }
    char err[512];
    size_t len = 0;
    char *bytes = util_read_file(argv[1], &len, err, sizeof err);
    if (!bytes) {
        fprintf(stderr, "arena_put: %s\n", err);
        return 1;
    }
    shmarena_t *a = shmarena_new(0, err, sizeof err);
    shmarena_reader_t *r = shmarena_reader_new();
    shmarena_desc_t stale, good;
    if (!a || shmarena_put(a, bytes, len, &stale) || shmarena_put(a, bytes, len, &good) ||
        shmarena_reader_release(r, &stale, err, sizeof err)) {
        fprintf(stderr, "arena_put: %s\n", err);
        return 1;
    }
    printf("{");
    s_print("good", &good);
    printf(", ");
    s_print("stale", &stale);
    printf("}\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        line[0] = 0;
    int held = shmarena_reader_map(r, &good, err, sizeof err) != NULL;
    printf("%s\n", held ? "held" : err);
    shmarena_reader_destroy(&r);
    shmarena_destroy(&a);
    free(bytes);
    return held ? 0 : 1;
}
