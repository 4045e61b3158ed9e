/* tools.h: launch's profiling verbs (docs/profiling.md). Each takes the whole argv of
 * launch (argv[1] is the verb) and returns the exit code.
 *
 *   launch top [--once] [--interval S] [--window S] RUN_DIR    live per-process figures
 * (launch profile is main.c's run of a plan with profile.h around it.)
 *   launch report [--out FILE] RUN_DIR                          RUN_DIR/report.html */
#ifndef OFA_LAUNCH_TOOLS_H
#define OFA_LAUNCH_TOOLS_H

#include <stddef.h>
#include <stdio.h>

int top_main(int argc, char **argv);
int report_main(int argc, char **argv);

/* The table of `launch top --once` for RUN_DIR into out: per process and tier figures
 * over the last `window` seconds (<= 0: the whole run) and the bottleneck line. Returns
 * 0, or -1 with err when the folder has no stats.jsonl or stages.json with figures. */
int top_write(const char *dir, double window, FILE *out, char *err, size_t errlen);

#endif
