/* trainlog.c: see trainlog.h. */
#include "trainlog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* Per-task accumulators of the current window (since that task's last line). */
typedef struct {
    char name[64];
    double loss_sum;     /* sum of batch loss x tokens */
    int64_t tokens;
    int64_t samples;
    double wait_s;
    double t0;           /* window start (monotonic) */
    int64_t g_samples0, g_tokens0;   /* global counts at the window start */
    int64_t last_step;   /* step of this task's last line */
    int pending;         /* batches since the last line */
} s_task_t;

struct trainlog_t {
    int fd;
    int tty;
    s_task_t *tasks;
    int ntasks;
    double last_draw;
    double rate_t0;      /* progress rate: samples since rate_t0 */
    int64_t rate_samples, rate_step0;
    int64_t g_samples, g_tokens;     /* every task's samples / tokens so far */
    double last_loss;
    int drawn;
    int64_t step0;                   /* a resumed run's windows count from here */
    const char *mem_kind;            /* NULL: no peak memory known */
    int64_t mem_bytes;
};

void trainlog_set_peak_mem(trainlog_t *self, const char *kind, int64_t bytes) {
    self->mem_kind = bytes >= 0 ? kind : NULL;
    self->mem_bytes = bytes;
}

trainlog_t *trainlog_new(const char *path, int tty, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        util_err(err, errlen, "%s: cannot open for appending: %s", path, strerror(errno));
        return NULL;
    }
    trainlog_t *self = util_calloc(1, sizeof *self);
    self->fd = fd;
    self->tty = tty < 0 ? isatty(2) : tty;
    self->rate_t0 = util_now();
    self->rate_step0 = -1;
    self->last_draw = -1;
    return self;
}

void trainlog_resume_at(trainlog_t *self, int64_t step, int log_every) {
    self->step0 = log_every > 1 ? step - step % log_every : step;
}

void trainlog_destroy(trainlog_t **self_p) {
    if (!self_p || !*self_p)
        return;
    trainlog_progress_end(*self_p);
    close((*self_p)->fd);
    free((*self_p)->tasks);
    free(*self_p);
    *self_p = NULL;
}

static s_task_t *s_task(trainlog_t *self, const char *name) {
    for (int i = 0; i < self->ntasks; i++)
        if (!strcmp(self->tasks[i].name, name))
            return &self->tasks[i];
    self->tasks = util_realloc(self->tasks, sizeof(s_task_t) * (self->ntasks + 1));
    s_task_t *t = &self->tasks[self->ntasks++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->last_step = self->step0;
    t->t0 = util_now();
    t->g_samples0 = self->g_samples, t->g_tokens0 = self->g_tokens;
    return t;
}

/* JSON has no inf/nan: write null for them, so a diverged run still gives valid lines.
 * digits: significant digits (9 for the loss: a float32 reads back exactly, so two runs'
 * lines are equal only when their losses are equal bit for bit). */
static void s_num_g(char *out, size_t n, double v, int digits) {
    if (isfinite(v))
        snprintf(out, n, "%.*g", digits, v);
    else
        snprintf(out, n, "null");
}

static void s_num(char *out, size_t n, double v) { s_num_g(out, n, v, 6); }

int trainlog_format(char *out, size_t outlen, int64_t step, const char *task, double loss,
                    double lr, double samples_per_s, double tokens_per_s, double data_wait_s,
                    double time) {
    char esc[256], a[32], b[32], c[32], d[32], e[32];
    util_json_escape(task, esc, sizeof esc);
    s_num_g(a, sizeof a, loss, 9);
    s_num(b, sizeof b, lr);
    s_num(c, sizeof c, samples_per_s);
    s_num(d, sizeof d, tokens_per_s);
    s_num(e, sizeof e, data_wait_s);
    int n = snprintf(out, outlen,
                     "{\"step\":%lld,\"task\":\"%s\",\"loss\":%s,\"lr\":%s,\"samples_per_s\":%s,"
                     "\"tokens_per_s\":%s,\"data_wait_s\":%s,\"time\":%.3f}",
                     (long long)step, esc, a, b, c, d, e, time);
    return n < (int)outlen ? n : (int)outlen - 1;
}

static void s_emit(trainlog_t *self, s_task_t *t, int64_t step, double lr) {
    if (t->pending == 0)
        return;
    double now = util_now(), dt = now - t->t0;
    if (dt <= 0)
        dt = 1e-9;
    char line[720];
    int n = trainlog_format(line, sizeof line - 80, step, t->name,
                            t->tokens ? t->loss_sum / t->tokens : NAN, lr,
                            (self->g_samples - t->g_samples0) / dt,
                            (self->g_tokens - t->g_tokens0) / dt, t->wait_s, util_wall());
    if (self->mem_kind && n > 0 && line[n - 1] == '}')   /* the line's last keys */
        n = n - 1 + snprintf(line + n - 1, sizeof line - 1 - (size_t)(n - 1),
                             ",\"peak_mem_bytes\":%lld,\"peak_mem_kind\":\"%s\"}",
                             (long long)self->mem_bytes, self->mem_kind);
    line[n++] = '\n';
    /* One write per line: O_APPEND makes it land whole even with another writer. */
    if (write(self->fd, line, n) != n)
        fprintf(stderr, "%s: metrics.jsonl: short write: %s\n", util_progname(), strerror(errno));
    t->loss_sum = 0, t->tokens = 0, t->samples = 0, t->wait_s = 0, t->pending = 0;
    t->t0 = now;
    t->g_samples0 = self->g_samples, t->g_tokens0 = self->g_tokens;
    t->last_step = step;
}

/* Loss is averaged per task and weighted by tokens (a batch of long captions counts
 * more than one of short answers, as in the gradient); rates count every task, because
 * throughput is a property of the run, not of one task. */
void trainlog_batch(trainlog_t *self, int64_t step, const char *task, double loss, double lr,
                    int samples, int64_t tokens, double wait_s, int log_every, int force) {
    s_task_t *t = s_task(self, task);
    if (t->pending == 0) {   /* a new window starts with this batch */
        t->t0 = util_now() - wait_s;
        t->g_samples0 = self->g_samples, t->g_tokens0 = self->g_tokens;
    }
    self->g_samples += samples;
    self->g_tokens += tokens;
    t->loss_sum += loss * (double)tokens;
    t->tokens += tokens;
    t->samples += samples;
    t->wait_s += wait_s;
    t->pending++;
    self->rate_samples += samples;
    self->last_loss = loss;
    if (self->rate_step0 < 0)
        self->rate_step0 = step - 1;
    if (force || log_every <= 1 || step - t->last_step >= log_every)
        s_emit(self, t, step, lr);
}

void trainlog_flush(trainlog_t *self, int64_t step, double lr) {
    for (int i = 0; i < self->ntasks; i++)
        s_emit(self, &self->tasks[i], step, lr);
}

void trainlog_fmt_eta(double s, char *out, size_t outlen) {
    if (!isfinite(s) || s < 0) {
        snprintf(out, outlen, "?");
        return;
    }
    long long x = llround(s);
    if (x >= 3600)
        snprintf(out, outlen, "%lldh%02lldm", x / 3600, (x % 3600) / 60);
    else if (x >= 60)
        snprintf(out, outlen, "%lldm%02llds", x / 60, x % 60);
    else
        snprintf(out, outlen, "%llds", x);
}

void trainlog_progress(trainlog_t *self, int64_t step, int64_t total) {
    if (!self->tty)
        return;
    double now = util_now();
    if (self->last_draw >= 0 && now - self->last_draw < 0.25 && step != total)
        return;
    self->last_draw = now;
    double dt = now - self->rate_t0;
    double sps = dt > 0 ? self->rate_samples / dt : 0;
    double steps_ps = dt > 0 ? (step - self->rate_step0) / dt : 0;
    char eta[32] = "?";
    if (total > 0 && steps_ps > 0)
        trainlog_fmt_eta((total - step) / steps_ps, eta, sizeof eta);
    if (total > 0)
        fprintf(stderr, "\rstep %lld/%lld  loss %.4f  %.1f samples/s  ETA %s   ", (long long)step,
                (long long)total, self->last_loss, sps, eta);
    else
        fprintf(stderr, "\rstep %lld  loss %.4f  %.1f samples/s   ", (long long)step,
                self->last_loss, sps);
    fflush(stderr);
    self->drawn = 1;
}

void trainlog_progress_end(trainlog_t *self) {
    if (self->tty && self->drawn) {
        fputc('\n', stderr);
        self->drawn = 0;
    }
}
