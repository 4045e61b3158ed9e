/* timeline.h: the per-second stats timeline of a run, RUN/stats.jsonl.
 *
 * While a run goes, launch appends once a second one JSON line per process whose stats
 * snapshot arrived in that second:
 *
 *     {"t": 12.004, "proc": "image.0", "tier": "image", "pid": 1622, "time": 1795541071.39,
 *      "items_in": 3120, "busy_s": 1.2, "wait_s": 10.4, "lat_p50_ms": 0.04, ...}
 *
 * t is seconds since launch started the processes; "time" is the process's own wall clock
 * when it sent the snapshot; the counters are cumulative, so a rate is the difference of
 * two lines of one process divided by the difference of their times. The file grows by
 * at most one line per process per second (processes send about one snapshot a second;
 * a process that stopped sending adds nothing). `launch top` and `launch report` read it.
 *
 * Usage (runner.c): timeline_open() after the run directory exists, timeline_tick() on
 * every turn of the supervision loop, timeline_close() at the end (writes what arrived
 * last). */
#ifndef OFA_LAUNCH_TIMELINE_H
#define OFA_LAUNCH_TIMELINE_H

#include "statsdb.h"

#include <stddef.h>

typedef struct timeline timeline_t;

/* Open RUN_DIR/stats.jsonl for appending (a resumed run continues the file; its t starts
 * from 0 again). Returns NULL with err filled when the file cannot be opened. The caller
 * owns the result. */
timeline_t *timeline_open(const char *run_dir, char *err, size_t errlen);

/* Write the fresh snapshots of db when a second has passed since the last write. */
void timeline_tick(timeline_t *self, statsdb_t *db);

/* Write the last fresh snapshots and close the file. */
void timeline_close(timeline_t **self_p, statsdb_t *db);

#endif
