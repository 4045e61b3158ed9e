/* profile.h: span tracing of a run for `launch profile` (profile.c has the details).
 *
 *     profile_setup(run_dir, ...);     // before the processes start: OFA_TRACE=RUN/trace
 *     runner_run(...);                 // with a time limit
 *     profile_write(run_dir, stdout, ...);   // RUN/trace/<proc>.jsonl -> RUN/trace.json */
#ifndef OFA_LAUNCH_PROFILE_H
#define OFA_LAUNCH_PROFILE_H

#include <stddef.h>
#include <stdio.h>

/* Create RUN/trace (emptied of earlier span files) and set OFA_TRACE to it in this
 * process's environment, which every child inherits. Returns 0 or -1 with err. */
int profile_setup(const char *run_dir, char *err, size_t errlen);

/* Merge RUN/trace/<proc>.jsonl into RUN/trace.json (Chrome trace-event format, written
 * atomically). digest (may be NULL) gets one line per process: its spans by name with
 * counts and mean durations. Returns 0 or -1 with err (no span files). */
int profile_write(const char *run_dir, FILE *digest, char *err, size_t errlen);

#endif
