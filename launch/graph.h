/* graph.h: the process graph of a run, built from a loaded plan: which programs run,
 * how many of each, with which argv, and how they are wired. launch starts it; the
 * dry run prints it and writes it as Graphviz (graph.dot). */
#ifndef OFA_LAUNCH_GRAPH_H
#define OFA_LAUNCH_GRAPH_H

#include "planfile.h"
#include "proc.h"
#include "shmarena.h"

#include <stdio.h>

typedef struct {
    char run_dir[1024];     /* absolute */
    char sock_dir[256];     /* short folder for ipc:// endpoints */
    char bin_dir[1024];     /* where the ofa-* programs are */
    char broker_ep[300], batches_ep[300], stats_ep[300];
    char curve_keys[1100];  /* RUN/curve.keys for tcp:// endpoints (--curve), or "" */
    int resume;
    int slurm;              /* processes run as Slurm job steps (launch/slurm.c): the
                             * trainer group is one srun step of its ranks, not mpirun */
    char arena_tag[SHMARENA_TAG_MAX]; /* the run's shared-memory arenas (--arena TAG), or "" */
    int arena_mb;
} graph_env_t;

/* Add every process of the plan's graph to the table, in start order (broker, batcher,
 * workers, source, consumers). Returns 0 or -1 with err. */
int graph_build(const plan_t *plan, const graph_env_t *env, proctab_t *procs,
                char *err, size_t errlen);

/* The tiers (worker stages) that the plan's tasks visit, in first-use order. */
int graph_tiers(const plan_t *plan, const char **tiers, int max);

/* Write graph.dot of the process table. */
int graph_write_dot(const plan_t *plan, proctab_t *procs, const char *path,
                    char *err, size_t errlen);

/* Print the graph and each task's stage chain (the dry run's output). */
void graph_print(const plan_t *plan, proctab_t *procs, FILE *out);

#endif
