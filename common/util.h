/* util.h: the small things every program here uses: the assert macro for broken
 * invariants (tier 1 of STYLE.md's errors), error-buffer helpers for errors that come
 * from outside (tier 2), the fatal helper for set-up failures in main (tier 3),
 * clocks, and checked allocation.
 *
 * Error buffers: functions that can fail on outside input take `char *err, size_t errlen`
 * and fill it with a one-line reason via util_err(); the caller decides what to do. */
#ifndef OFA_UTIL_H
#define OFA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>

/* Programmer errors: print file:line and the expression, then abort. */
#define OFA_ASSERT(cond) \
    do { if (!(cond)) util_assert_fail(#cond, __FILE__, __LINE__, __func__); } while (0)
void util_assert_fail(const char *expr, const char *file, int line, const char *func);

/* Fill err (may be NULL) with a printf-style reason; returns -1 for `return util_err(...)`. */
int util_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Set-up failure in main: print "PROG: reason", an optional hint line, exit(1). */
void util_fatal(const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Allocation that aborts on failure (memory exhaustion is not recoverable here).
 * The caller owns the returned memory. */
void *util_malloc(size_t n);
void *util_calloc(size_t n, size_t size);
void *util_realloc(void *p, size_t n);
char *util_strdup(const char *s);

/* Monotonic seconds and nanoseconds; wall-clock seconds since the epoch. */
double util_now(void);
uint64_t util_now_ns(void);
double util_wall(void);

/* Read a whole file into a malloc'd buffer (NUL-terminated; *len excludes the NUL).
 * Returns NULL and fills err on failure. The caller owns the buffer. */
char *util_read_file(const char *path, size_t *len, char *err, size_t errlen);

/* Write a file atomically: temp file in the same folder, fsync, rename. */
int util_write_file_atomic(const char *path, const void *data, size_t len,
                           char *err, size_t errlen);

/* mkdir -p. Returns 0 or -1 with err filled. */
int util_mkdirs(const char *path, char *err, size_t errlen);

/* Program name used in messages (set once from argv[0] by util_set_progname). */
void util_set_progname(const char *argv0);
const char *util_progname(void);

/* Escape s as the body of a JSON string into out (always NUL-terminated). */
void util_json_escape(const char *s, char *out, size_t outlen);

/* splitmix64: the one seeded RNG of the project (deterministic across machines). */
typedef struct { uint64_t s; } util_rng_t;
static inline uint64_t util_rng_next(util_rng_t *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* Uniform double in [0,1). */
static inline double util_rng_uniform(util_rng_t *r) {
    return (double)(util_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
