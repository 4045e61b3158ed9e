/* util.c: see util.h. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char s_progname[64] = "ofa";

void util_set_progname(const char *argv0) {
    const char *slash = strrchr(argv0, '/');
    snprintf(s_progname, sizeof s_progname, "%s", slash ? slash + 1 : argv0);
}

const char *util_progname(void) { return s_progname; }

void util_assert_fail(const char *expr, const char *file, int line, const char *func) {
    fprintf(stderr, "%s: %s:%d: %s: assertion failed: %s\n", s_progname, file, line, func, expr);
    fflush(stderr);
    abort();
}

int util_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void util_fatal(const char *hint, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", s_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (hint)
        fprintf(stderr, "---> HINT: %s\n", hint);
    exit(1);
}

void *util_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        util_fatal(NULL, "out of memory allocating %zu bytes", n);
    return p;
}

void *util_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        util_fatal(NULL, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *util_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        util_fatal(NULL, "out of memory reallocating %zu bytes", n);
    return q;
}

char *util_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = util_malloc(n);
    memcpy(d, s, n);
    return d;
}

double util_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t util_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double util_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

char *util_read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        util_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = util_malloc(cap);
    for (;;) {
        if (n + 1 >= cap)
            buf = util_realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        util_err(err, errlen, "%s: read error", path);
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

int util_write_file_atomic(const char *path, const void *data, size_t len,
                           char *err, size_t errlen) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return util_err(err, errlen, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            util_err(err, errlen, "%s: write: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        util_err(err, errlen, "%s: fsync/close: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        util_err(err, errlen, "rename %s -> %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int util_mkdirs(const char *path, char *err, size_t errlen) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return util_err(err, errlen, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return util_err(err, errlen, "mkdir %s: %s", buf, strerror(errno));
    return 0;
}

void util_json_escape(const char *s, char *out, size_t outlen) {
    size_t o = 0;
    if (!outlen)
        return;
    /* Each character is written whole or not at all: the check is the room that this
     * character's escape needs (1, 2 or 6 bytes plus the NUL), so a buffer of 6*len+1
     * always holds the whole string, a one-byte string included. */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        size_t need = (c == '"' || c == '\\') ? 2 : c < 0x20 ? 6 : 1;
        if (o + need + 1 > outlen)
            break;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
}
