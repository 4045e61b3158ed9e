/* runner.h: one run of a plan: run directory, BPE vocabulary, process graph,
 * supervision loop, and the records written at the end (stages.json, summary.json). */
#ifndef OFA_LAUNCH_RUNNER_H
#define OFA_LAUNCH_RUNNER_H

#include "graph.h"
#include "planfile.h"

typedef struct {
    graph_env_t env;
    int dry_run;
    int slurm;    /* 1 --slurm, -1 --local, 0 Slurm when SLURM_JOB_ID is set (slurm.h) */
    double time_limit_s;   /* > 0: after this long, stop as on SIGINT and count it a
                            * success (launch profile's short runs) */
} runner_opts_t;

/* Returns the exit code of launch: 0 when the run completed, non-zero with err filled
 * when it failed or was stopped. */
int runner_run(const plan_t *plan, runner_opts_t *opts, char *err, size_t errlen);

#endif
