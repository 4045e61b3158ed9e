/* statsdb.h: what launch knows of every process's counters. The supervisor feeds it the
 * key/value pairs of each stats message (the latest message of a process replaces its
 * earlier one: counters are cumulative), and at the end writes stages.json (per process)
 * and summary.json (per task: read, delivered, rejected, lost, redispatched,
 * duplicates_dropped, summed over the processes that count them). */
#ifndef OFA_LAUNCH_STATSDB_H
#define OFA_LAUNCH_STATSDB_H

#include <stddef.h>
#include <stdio.h>

typedef struct statsdb statsdb_t;

statsdb_t *statsdb_new(void);
void statsdb_destroy(statsdb_t **self_p);

/* Start a new snapshot of process `proc` with process id `pid` (the previous snapshot of
 * the same incarnation is dropped: counters are cumulative) and record its tier. Then
 * statsdb_put() each counter. A restarted worker has a new pid, so the counts of its
 * earlier incarnations stay in the sums. */
void statsdb_begin(statsdb_t *self, const char *proc, long pid, const char *tier);
void statsdb_put(statsdb_t *self, const char *proc, const char *key, double value);
/* Attach a string (e.g. node name, step id) to the process's record. */
void statsdb_put_str(statsdb_t *self, const char *proc, const char *key, const char *value);

/* Sum of `key` over all processes and all their incarnations (0 when absent). */
double statsdb_sum(const statsdb_t *self, const char *key);

/* Write stages.json: {"processes": {name: {"tier": .., counters...}}}. */
int statsdb_write_stages(const statsdb_t *self, const char *path, char *err, size_t errlen);

/* Append to f one JSON line per process whose snapshot arrived since the previous call
 * (the newest incarnation only): {"t": t, "proc": name, "tier": .., "pid": .., counters...}.
 * This is the per-second timeline RUN/stats.jsonl (launch/timeline.h). Returns the
 * number of lines written. */
int statsdb_write_timeline(statsdb_t *self, FILE *f, double t);

/* Write summary.json for the given task names. */
int statsdb_write_summary(const statsdb_t *self, const char *const *tasks, int n_tasks,
                          const char *path, char *err, size_t errlen);

#endif
