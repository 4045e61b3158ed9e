/* tools.h: launch's profiling verbs (docs/profiling.md). Each takes the whole argv of
 * launch (argv[1] is the verb) and returns the exit code.
 *
 *   launch top [--once] [--interval S] [--window S] RUN_DIR    live per-process figures
 * (launch profile is main.c's run of a plan with profile.h around it.)
 *   launch report [--out FILE] RUN_DIR                          RUN_DIR/report.html */
#ifndef OFA_LAUNCH_TOOLS_H
#define OFA_LAUNCH_TOOLS_H

int top_main(int argc, char **argv);
int report_main(int argc, char **argv);

#endif
