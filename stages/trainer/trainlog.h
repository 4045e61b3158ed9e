/* trainlog.h: the trainer's outputs for people and tools: RUN/metrics.jsonl lines and
 * the live progress line.
 *
 * metrics.jsonl: one JSON object per line, appended (a resumed run continues the file):
 *   {"step":S,"task":"caption","loss":L,"lr":LR,"samples_per_s":X,"tokens_per_s":Y,
 *    "data_wait_s":W,"time":T,"peak_mem_bytes":M,"peak_mem_kind":"gpu"|"rss"}
 * step = optimizer steps done after this batch (1-based); loss = the mean token loss of
 * the task's batches since the task's previous line (label smoothing included); rates
 * over the same window, all tasks counted; data_wait_s = seconds spent waiting for
 * batches in that window; time = wall-clock seconds since the epoch. Each line is written
 * with one write(2) and flushed, so a reader never sees half a line. Lines are written
 * every `log_every` steps per task (and for the last step). peak_mem_bytes: the
 * trainer's peak memory when the line was written (trainlog_set_peak_mem): device bytes
 * on the GPU ("gpu"), the process's peak resident set on the CPU ("rss").
 *
 * The progress line goes to stderr only when stderr is a terminal:
 *   "\rstep 120/1000  loss 3.214  41.2 samples/s  ETA 5m12s"
 * (a log file gets no carriage-return noise). */
#ifndef OFA_TRAINLOG_H
#define OFA_TRAINLOG_H

#include <stdint.h>
#include <stdio.h>

typedef struct trainlog_t trainlog_t;

/* Open (append) RUN/metrics.jsonl at path. NULL + err on failure. tty < 0: detect
 * whether stderr is a terminal; 0/1 force it (tests). */
trainlog_t *trainlog_new(const char *path, int tty, char *err, size_t errlen);
void trainlog_destroy(trainlog_t **self_p);
/* A run resumed after step: each task's windows count from the multiple of log_every
 * at or before it, as if its last line had been written there, so a task's lines come
 * at the steps of a run that was never stopped (the first window may hold fewer
 * batches). Call before the first batch. */
void trainlog_resume_at(trainlog_t *self, int64_t step, int log_every);

/* Account one trained batch: its task, loss (mean over its target tokens), number of
 * samples and target tokens, and seconds spent waiting for it. Writes the task's
 * metrics line when due (every log_every steps; force = 1 writes it now). */
void trainlog_batch(trainlog_t *self, int64_t step, const char *task, double loss, double lr,
                    int samples, int64_t tokens, double wait_s, int log_every, int force);

/* The peak memory the next lines report (kind "gpu" or "rss"; bytes < 0: none). */
void trainlog_set_peak_mem(trainlog_t *self, const char *kind, int64_t bytes);

/* Write every task's pending line (end of training, before a checkpoint on signal). */
void trainlog_flush(trainlog_t *self, int64_t step, double lr);

/* Redraw the progress line (at most ~4 times a second). total <= 0: unknown total,
 * no ETA. */
void trainlog_progress(trainlog_t *self, int64_t step, int64_t total);
/* End the progress line with a newline (before other stderr output). */
void trainlog_progress_end(trainlog_t *self);

/* Format one metrics line into out (no newline); returns its length. Exposed for tests. */
int trainlog_format(char *out, size_t outlen, int64_t step, const char *task, double loss,
                    double lr, double samples_per_s, double tokens_per_s, double data_wait_s,
                    double time);

/* "5m12s", "1h03m", "42s" into out. */
void trainlog_fmt_eta(double seconds, char *out, size_t outlen);

#endif
