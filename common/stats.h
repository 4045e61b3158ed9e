/* stats.h: the counters every process reports to launch on its stats socket.
 *
 * A process keeps named counters (items_in, items_out, bytes_in, bytes_out, busy_s,
 * wait_s, per-task "task.<T>.read" ...), gauges (queue_depth) and a latency histogram,
 * and pushes them as one PROTO_STATS message about once a second (stats_tick) and at
 * exit (stats_flush). Every snapshot also carries cpu_s, the process's CPU seconds so far
 * (all its threads, from getrusage). Sending never blocks: when launch is slow a snapshot is dropped,
 * and the next one (counters are cumulative) carries the same information. */
#ifndef OFA_STATS_H
#define OFA_STATS_H

#include <stdint.h>

typedef struct stats stats_t;

/* zctx: the process's ZeroMQ context; endpoint NULL or "" = keep counters, send nothing.
 * proc: the process id (--id); tier: its stage. The caller owns the result. */
stats_t *stats_new(void *zctx, const char *endpoint, const char *proc, const char *tier);
/* Sends a final snapshot and closes the socket. */
void stats_destroy(stats_t **self_p);

/* Add to a counter (created at 0). */
void stats_add(stats_t *self, const char *key, double v);
/* Set a gauge or counter to v. */
void stats_set(stats_t *self, const char *key, double v);
/* Current value (0 when absent). */
double stats_get(const stats_t *self, const char *key);
/* Per-task counter "task.<task>.<what>" += v. */
void stats_task_add(stats_t *self, const char *task, const char *what, double v);
/* Record one item's latency in seconds (p50/p90/p99 are reported in ms). */
void stats_latency(stats_t *self, double seconds);
/* Attach a string to every snapshot (e.g. "node"). */
void stats_set_str(stats_t *self, const char *key, const char *value);

/* Send a snapshot when at least a second has passed since the last one. */
void stats_tick(stats_t *self);
/* Send a snapshot now. */
void stats_flush(stats_t *self);

/* Percentile (0..100) of the recorded latencies in seconds (0 when none). */
double stats_percentile(const stats_t *self, double pct);

#endif
