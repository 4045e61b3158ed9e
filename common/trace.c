/* trace.c: see trace.h. Spans are written with stdio into a 64 KiB buffer and flushed
 * about once a second, so a process stopped by SIGKILL loses at most its last second. */
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    FILE *f;
    char buf[65536];
    double mono0, wall0;   /* one pair of clock readings: spans are timed monotonically */
    double last_flush;
    long long n, max;
    long pid;
} s_tr;

int trace_open(const char *proc) {
    const char *dir = getenv("OFA_TRACE");
    if (s_tr.f || !dir || !*dir)
        return s_tr.f ? 0 : 1;
    char path[4096], err[512];
    if (util_mkdirs(dir, err, sizeof err)) {
        fprintf(stderr, "%s: tracing off: %s\n", util_progname(), err);
        return -1;
    }
    /* The process name becomes a file name: anything but [A-Za-z0-9._-] is replaced,
     * so an odd --id cannot write outside the folder. */
    char name[128];
    snprintf(name, sizeof name, "%s", proc && *proc ? proc : util_progname());
    for (char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-'))
            *c = '_';
    snprintf(path, sizeof path, "%s/%s.jsonl", dir, name);
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "%s: tracing off: %s: %s\n", util_progname(), path, strerror(errno));
        return -1;
    }
    setvbuf(f, s_tr.buf, _IOFBF, sizeof s_tr.buf);
    s_tr.f = f;
    s_tr.mono0 = util_now();
    s_tr.wall0 = util_wall();
    s_tr.last_flush = s_tr.mono0;
    s_tr.n = 0;
    const char *max = getenv("OFA_TRACE_MAX");
    s_tr.max = max && atoll(max) > 0 ? atoll(max) : 200000;
    s_tr.pid = (long)getpid();
    return 0;
}

bool trace_enabled(void) { return s_tr.f != NULL; }

double trace_now(void) { return s_tr.f ? util_now() : 0; }

/* One line; key may be NULL (no integer argument). */
static void s_write(const char *name, double t0, const char *task, const char *key,
                    long long value) {
    if (!s_tr.f || t0 <= 0 || s_tr.n >= s_tr.max)
        return;
    double t1 = util_now();
    long long ts = (long long)((s_tr.wall0 + (t0 - s_tr.mono0)) * 1e6);
    long long dur = (long long)((t1 - t0) * 1e6);
    fprintf(s_tr.f, "{\"name\":\"%s\",\"ts\":%lld,\"dur\":%lld,\"pid\":%ld", name, ts, dur,
            s_tr.pid);
    if (task && *task) {
        char esc[256];
        util_json_escape(task, esc, sizeof esc);
        fprintf(s_tr.f, ",\"task\":\"%s\"", esc);
    }
    if (key)
        fprintf(s_tr.f, ",\"%s\":%lld", key, value);
    fputs("}\n", s_tr.f);
    s_tr.n++;
    if (t1 - s_tr.last_flush >= 1.0) {
        fflush(s_tr.f);
        s_tr.last_flush = t1;
    }
}

void trace_span(const char *name, double t0, const char *task) {
    s_write(name, t0, task, NULL, 0);
}

void trace_span_n(const char *name, double t0, const char *task, const char *key,
                  long long value) {
    s_write(name, t0, task, key, value);
}

void trace_close(void) {
    if (!s_tr.f)
        return;
    fclose(s_tr.f);
    s_tr.f = NULL;
}
