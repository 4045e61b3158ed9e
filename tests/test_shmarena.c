/* test_shmarena.c: the shared-memory arena (common/shmarena.c): put, read, release,
 * wrap-around, full, stale and forged descriptors, and two processes sharing one arena. */
#include "shmarena.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static void s_fill(uint8_t *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131 + seed * 7 + 1);
}

static bool s_exists(const char *name) {
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

Test(shmarena, put_get_release) {
    char err[256];
    shmarena_t *a = shmarena_new(256 << 10, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    cr_assert(strncmp(shmarena_name(a), "/ofa-arena-", 11) == 0);
    cr_assert(s_exists(shmarena_name(a)));
    shmarena_reader_t *r = shmarena_reader_new();
    uint8_t src[5000], dst[5000];
    shmarena_desc_t d[3];
    for (int k = 0; k < 3; k++) {
        s_fill(src, sizeof src, (unsigned)k);
        cr_assert_eq(shmarena_put(a, src, sizeof src - (size_t)k, &d[k]), 0);
        cr_assert_eq(d[k].len, sizeof src - (size_t)k);
        cr_assert(d[k].gen > 0);
    }
    cr_assert(d[1].gen > d[0].gen && d[2].gen > d[1].gen);
    for (int k = 0; k < 3; k++) {
        memset(dst, 0, sizeof dst);
        cr_assert_eq(shmarena_reader_get(r, &d[k], dst, sizeof dst, err, sizeof err), 0, "%s",
                     err);
        s_fill(src, sizeof src, (unsigned)k);
        cr_assert(memcmp(src, dst, d[k].len) == 0, "slot %d bytes differ", k);
        const uint8_t *p = shmarena_reader_map(r, &d[k], err, sizeof err);
        cr_assert_not_null(p, "%s", err);
        cr_assert(memcmp(p, src, d[k].len) == 0);
    }
    size_t held = shmarena_in_use(a);
    cr_assert(held >= 3 * 5000);
    /* Out of order: the middle slot is reclaimed only once the oldest is released. */
    cr_assert_eq(shmarena_reader_release(r, &d[1], err, sizeof err), 0, "%s", err);
    cr_assert_eq(shmarena_in_use(a), held);
    cr_assert_eq(shmarena_reader_release(r, &d[0], err, sizeof err), 0, "%s", err);
    cr_assert(shmarena_in_use(a) < held / 2);
    cr_assert_eq(shmarena_reader_release(r, &d[2], err, sizeof err), 0, "%s", err);
    cr_assert_eq(shmarena_in_use(a), 0);
    /* A second release of the same descriptor is refused. */
    cr_assert_eq(shmarena_reader_release(r, &d[2], err, sizeof err), -1);
    cr_assert(strstr(err, "stale"), "%s", err);
    char name[SHMARENA_NAME_MAX];
    snprintf(name, sizeof name, "%s", shmarena_name(a));
    shmarena_destroy(&a);
    cr_assert_null(a);
    cr_assert(!s_exists(name), "destroy unlinks the arena");
    shmarena_reader_destroy(&r);
    cr_assert_null(r);
}

/* Many puts of varying sizes through a small ring, each released a few puts later:
 * the ring wraps many times and every tensor read back is the one written. */
Test(shmarena, wrap_around) {
    char err[256];
    shmarena_t *a = shmarena_new(64 << 10, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    shmarena_reader_t *r = shmarena_reader_new();
    enum { LAG = 3, N = 400 };
    shmarena_desc_t q[LAG];
    size_t qn[LAG];
    uint8_t src[9000], dst[9000];
    uint64_t last_off = 0;
    int wraps = 0;
    for (int k = 0; k < N; k++) {
        size_t n = 1000 + (size_t)(k * 2654435761u % 8000);
        if (k >= LAG) {
            int j = k % LAG;
            s_fill(src, qn[j], (unsigned)(k - LAG));
            cr_assert_eq(shmarena_reader_get(r, &q[j], dst, sizeof dst, err, sizeof err), 0,
                         "put %d: %s", k - LAG, err);
            cr_assert(memcmp(src, dst, qn[j]) == 0, "put %d read back wrong", k - LAG);
            cr_assert_eq(shmarena_reader_release(r, &q[j], err, sizeof err), 0, "%s", err);
        }
        s_fill(src, n, (unsigned)k);
        int j = k % LAG;
        cr_assert_eq(shmarena_put(a, src, n, &q[j]), 0, "put %d of %zu bytes full", k, n);
        qn[j] = n;
        if (q[j].offset < last_off)
            wraps++;
        last_off = q[j].offset;
    }
    cr_assert(wraps >= 10, "the ring wrapped only %d times", wraps);
    shmarena_destroy(&a);
    shmarena_reader_destroy(&r);
}

/* Full: put says so at once and changes nothing; a release makes room again. */
Test(shmarena, full_then_fallback) {
    char err[256];
    shmarena_t *a = shmarena_new(64 << 10, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    shmarena_reader_t *r = shmarena_reader_new();
    uint8_t src[10000];
    s_fill(src, sizeof src, 1);
    shmarena_desc_t d[16];
    int n = 0;
    while (n < 16 && shmarena_put(a, src, sizeof src, &d[n]) == 0)
        n++;
    cr_assert(n >= 5 && n < 16, "%d puts of 10000 bytes into 64 KiB", n);
    size_t held = shmarena_in_use(a);
    shmarena_desc_t x;
    cr_assert_eq(shmarena_put(a, src, sizeof src, &x), 1);
    cr_assert_null(shmarena_reserve(a, sizeof src, &x));
    cr_assert_eq(shmarena_in_use(a), held, "a full put changes nothing");
    /* Larger than the whole ring: never fits. */
    cr_assert_null(shmarena_reserve(a, 1 << 20, &x));
    /* Earlier tensors are intact. */
    uint8_t dst[10000];
    for (int k = 0; k < n; k++) {
        cr_assert_eq(shmarena_reader_get(r, &d[k], dst, sizeof dst, err, sizeof err), 0,
                     "%s", err);
        cr_assert(memcmp(dst, src, sizeof dst) == 0);
    }
    cr_assert_eq(shmarena_reader_release(r, &d[0], err, sizeof err), 0, "%s", err);
    cr_assert_eq(shmarena_put(a, src, sizeof src, &x), 0, "room again after a release");
    shmarena_destroy(&a);
    shmarena_reader_destroy(&r);
}

/* A descriptor kept past its release is refused, even once its slot holds new data. */
Test(shmarena, stale_generation) {
    char err[256];
    shmarena_t *a = shmarena_new(64 << 10, err, sizeof err);
    shmarena_reader_t *r = shmarena_reader_new();
    uint8_t src[1000], dst[1000];
    s_fill(src, sizeof src, 3);
    shmarena_desc_t d, e;
    cr_assert_eq(shmarena_put(a, src, sizeof src, &d), 0);
    cr_assert_eq(shmarena_reader_release(r, &d, err, sizeof err), 0, "%s", err);
    cr_assert_eq(shmarena_reader_get(r, &d, dst, sizeof dst, err, sizeof err), -1);
    cr_assert(strstr(err, "gen") && strstr(err, "stale") && strstr(err, "released"), "%s",
              err);
    cr_assert_eq(shmarena_put(a, src, sizeof src, &e), 0);
    cr_assert_eq(e.offset, d.offset, "the empty ring starts over at the same slot");
    cr_assert_neq(e.gen, d.gen);
    cr_assert_null(shmarena_reader_map(r, &d, err, sizeof err));
    cr_assert(strstr(err, "gen") && strstr(err, "stale"), "%s", err);
    cr_assert_eq(shmarena_reader_release(r, &d, err, sizeof err), -1, "stale release");
    cr_assert_eq(shmarena_reader_get(r, &e, dst, sizeof dst, err, sizeof err), 0, "%s", err);
    shmarena_destroy(&a);
    shmarena_reader_destroy(&r);
}

/* Forged descriptors: every field wrong in turn gives an error naming it, no crash. */
Test(shmarena, forged_descriptors) {
    char err[256];
    shmarena_t *a = shmarena_new(64 << 10, err, sizeof err);
    shmarena_reader_t *r = shmarena_reader_new();
    uint8_t src[3000], dst[3000];
    s_fill(src, sizeof src, 5);
    shmarena_desc_t good, d;
    cr_assert_eq(shmarena_put(a, src, sizeof src, &good), 0);
    /* K: keep the good descriptor's value for that field. */
    const uint64_t K = 0x5eedull << 40;
    struct {
        uint64_t offset, len, gen;
        const char *want;
    } cases[] = {
        {0, 3000, K, "offset"},
        {1, 3000, K, "offset"},
        {64, 3000, K, "offset"},
        {good.offset + 1, 3000, K, "offset"},
        {good.offset + 64, 3000, K, "gen"},       /* inside the payload */
        {UINT64_MAX - 63, 3000, K, "offset"},
        {(64 << 10) - 64, 10, K, "gen"},          /* an empty slot at the very end */
        {(64 << 10) + 64, 3000, K, "offset"},
        {K, 2999, K, "len"},
        {K, 3001, K, "len"},
        {K, UINT64_MAX, K, "len"},
        {K, 3000, 1000, "gen"},
        {K, 3000, 0, "gen"},
        {K, 3000, UINT64_MAX, "gen"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        d = good;
        if (cases[i].offset != K)
            d.offset = cases[i].offset;
        d.len = cases[i].len;
        if (cases[i].gen != K)
            d.gen = cases[i].gen;
        err[0] = 0;
        cr_assert_eq(shmarena_reader_get(r, &d, dst, sizeof dst, err, sizeof err), -1,
                     "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].want), "case %zu: '%s' does not name %s", i, err,
                  cases[i].want);
        cr_assert_eq(shmarena_reader_release(r, &d, err, sizeof err), -1, "case %zu", i);
    }
    const char *names[] = {"", "/", "/etc/passwd", "/ofa-arena-", "/ofa-x", "ofa-arena-1-1",
                           "/ofa-arena-1/2", "/ofa-arena-999999999-1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        d = good;
        snprintf(d.name, sizeof d.name, "%s", names[i]);
        cr_assert_eq(shmarena_reader_get(r, &d, dst, sizeof dst, err, sizeof err), -1,
                     "name '%s' accepted", names[i]);
        cr_assert(strstr(err, "arena"), "%s", err);
    }
    /* Not NUL-terminated. */
    d = good;
    memset(d.name, 'a', sizeof d.name);
    memcpy(d.name, "/ofa-arena-", 11);
    cr_assert_eq(shmarena_reader_get(r, &d, dst, sizeof dst, err, sizeof err), -1);
    cr_assert(strstr(err, "name"), "%s", err);
    /* Too little room at the destination. */
    cr_assert_eq(shmarena_reader_get(r, &good, dst, 100, err, sizeof err), -1);
    cr_assert(strstr(err, "room"), "%s", err);
    /* The good one still reads and releases. */
    cr_assert_eq(shmarena_reader_get(r, &good, dst, sizeof dst, err, sizeof err), 0, "%s",
                 err);
    cr_assert(memcmp(dst, src, sizeof dst) == 0);
    cr_assert_eq(shmarena_reader_release(r, &good, err, sizeof err), 0, "%s", err);
    shmarena_destroy(&a);
    shmarena_reader_destroy(&r);
}

/* An object with an arena's name that is not an arena is refused. */
Test(shmarena, not_an_arena) {
    char name[64], err[256];
    snprintf(name, sizeof name, "/ofa-arena-%d-fake", (int)getpid());
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(ftruncate(fd, 1 << 16), 0);
    close(fd);
    shmarena_reader_t *r = shmarena_reader_new();
    shmarena_desc_t d = {.offset = 192, .len = 10, .gen = 1};
    snprintf(d.name, sizeof d.name, "%s", name);
    uint8_t dst[16];
    cr_assert_eq(shmarena_reader_get(r, &d, dst, sizeof dst, err, sizeof err), -1);
    cr_assert(strstr(err, "bad header"), "%s", err);
    shm_unlink(name);
    shmarena_reader_destroy(&r);
}

/* Two processes: the parent produces into the arena, a forked child (its own mapping by
 * name) reads each tensor, checks it and releases it; the parent keeps putting, so the
 * ring only keeps turning because the child's releases reach it. */
Test(shmarena, two_processes) {
    char err[256];
    shmarena_t *a = shmarena_new(128 << 10, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    int to_child[2], to_parent[2];
    cr_assert_eq(pipe(to_child), 0);
    cr_assert_eq(pipe(to_parent), 0);
    enum { N = 2000, SZ = 7000 };
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        shmarena_reader_t *r = shmarena_reader_new();
        uint8_t want[SZ], got[SZ];
        shmarena_desc_t d;
        int k = 0;
        while (read(to_child[0], &d, sizeof d) == (ssize_t)sizeof d) {
            s_fill(want, SZ, (unsigned)k);
            if (shmarena_reader_get(r, &d, got, sizeof got, err, sizeof err) != 0 ||
                memcmp(want, got, SZ) != 0 ||
                shmarena_reader_release(r, &d, err, sizeof err) != 0)
                _exit(10);
            k++;
            char one = 1;
            if (write(to_parent[1], &one, 1) != 1)
                _exit(11);
        }
        shmarena_reader_destroy(&r);
        _exit(k == N ? 0 : 12);
    }
    close(to_child[0]);
    close(to_parent[1]);
    uint8_t src[SZ];
    int full = 0, acked = 0;
    /* Descriptors are handed to the child only when the ring is full (and at the end),
     * so the first fill cannot be outrun by the child's releases, however fast it is. */
    shmarena_desc_t *pend = malloc(sizeof *pend * N);
    cr_assert_not_null(pend);
    int npend = 0;
    for (int k = 0; k < N; k++) {
        s_fill(src, SZ, (unsigned)k);
        shmarena_desc_t d;
        while (shmarena_put(a, src, SZ, &d) != 0) {
            /* Full: hand over what is pending and wait for the child to release one, as
             * a producer would send a frame. */
            full++;
            for (int i = 0; i < npend; i++)
                cr_assert_eq(write(to_child[1], &pend[i], sizeof pend[i]), (ssize_t)sizeof pend[i]);
            npend = 0;
            char one;
            cr_assert_eq(read(to_parent[0], &one, 1), 1, "the child stopped");
            acked++;
        }
        pend[npend++] = d;
    }
    for (int i = 0; i < npend; i++)
        cr_assert_eq(write(to_child[1], &pend[i], sizeof pend[i]), (ssize_t)sizeof pend[i]);
    free(pend);
    close(to_child[1]);
    int st = 0;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    cr_assert(full > 0, "the ring never filled: the test did not exercise reuse");
    cr_assert_eq(shmarena_in_use(a), 0, "every slot released by the child came back");
    (void)acked;
    shmarena_destroy(&a);
}

/* An arena larger than /dev/shm can hold is refused when it is made, with the reason,
 * and leaves no name behind (a sparse object would have been made, and the first write
 * past the room would have killed the writer with SIGBUS). */
Test(shmarena, no_room_in_dev_shm_is_an_error) {
    struct statvfs vfs;
    cr_assert_eq(statvfs("/dev/shm", &vfs), 0);
    size_t total = (size_t)vfs.f_blocks * vfs.f_frsize;
    char err[512] = "";
    shmarena_t *a = shmarena_new_tagged("t_noroom", total + ((size_t)1 << 30), err, sizeof err);
    cr_assert_null(a);
    cr_assert(strstr(err, "cannot reserve") && strstr(err, "/dev/shm"), "%s", err);
    cr_assert_eq(shmarena_unlink_tag("t_noroom"), 0, "no name left behind");
}

/* A tagged arena is named after its tag; detach leaves the name (and a reader can still
 * read what it holds); unlink_tag removes every arena of that tag and no other. */
Test(shmarena, tags_detach_and_unlink) {
    char err[512] = "";
    cr_assert_null(shmarena_new_tagged("bad/tag", 0, err, sizeof err));
    cr_assert(strstr(err, "tag 'bad/tag'"), "%s", err);
    cr_assert_null(shmarena_new_tagged("", 0, err, sizeof err));
    shmarena_t *a = shmarena_new_tagged("t_tagA", 1 << 20, err, sizeof err);
    shmarena_t *b = shmarena_new_tagged("t_tagA", 1 << 20, err, sizeof err);
    shmarena_t *c = shmarena_new_tagged("t_tagB", 1 << 20, err, sizeof err);
    cr_assert(a && b && c, "%s", err);
    char want[64];
    snprintf(want, sizeof want, "/ofa-arena-t_tagA-%d-", (int)getpid());
    cr_assert_eq(strncmp(shmarena_name(a), want, strlen(want)), 0, "%s", shmarena_name(a));
    shmarena_desc_t d;
    cr_assert_eq(shmarena_put(a, "pixels", 6, &d), 0);
    shmarena_detach(&a);
    cr_assert_null(a);
    shmarena_reader_t *r = shmarena_reader_new();
    char got[8] = "";
    cr_assert_eq(shmarena_reader_get(r, &d, got, sizeof got, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(got, "pixels", 6), 0);
    cr_assert_eq(shmarena_unlink_tag("t_tagA"), 2, "both arenas of the tag, the detached one too");
    cr_assert_eq(shmarena_unlink_tag("t_tagA"), 0);
    char name[SHMARENA_NAME_MAX];
    snprintf(name, sizeof name, "%s", shmarena_name(c));
    int fd = shm_open(name, O_RDONLY, 0);
    cr_assert_geq(fd, 0, "another tag's arena stays");
    close(fd);
    cr_assert_eq(shmarena_unlink_tag("bad/tag"), -1);
    shmarena_reader_destroy(&r);
    shmarena_destroy(&b);   /* its name is gone already: only unmapped */
    shmarena_destroy(&c);
}
