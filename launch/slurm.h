/* slurm.h: running the process graph inside a Slurm allocation. Every process becomes one
 * job step (`srun --overlap -N1 -n1 -w NODE --kill-on-bad-exit=1 -J NAME PROGRAM ARGS`,
 * an argv list, no shell); the supervisor treats the srun process like a local child, so a
 * failed step (scancel, a killed task) is a crash that restarts a worker.
 *
 * Placement (the default; the plan cannot change it yet): broker, batcher, source and the
 * consumers on the allocation's first node, workers round robin over all nodes starting
 * at the second one. Endpoints are tcp:// on the first node's address (NodeAddr), the
 * stats socket on the address of the host that runs launch.
 *
 * Usage: slurm_new() inside an allocation, slurm_endpoints() before graph_build(),
 * slurm_place() after it, slurm_destroy() after proctab_stop_all(). */
#ifndef OFA_LAUNCH_SLURM_H
#define OFA_LAUNCH_SLURM_H

#include "graph.h"
#include "proc.h"

#include <stddef.h>

typedef struct slurm slurm_t;

/* Whether launch should use Slurm: mode > 0 (--slurm) yes, mode < 0 (--local) no, mode 0
 * when SLURM_JOB_ID is set in the environment. */
int slurm_wanted(int mode);

/* Read the allocation (SLURM_JOB_ID, its node list and each node's address through
 * scontrol). Returns NULL with err when not inside an allocation or scontrol fails. */
slurm_t *slurm_new(char *err, size_t errlen);
void slurm_destroy(slurm_t **self_p);

int slurm_nnodes(const slurm_t *self);
const char *slurm_node(const slurm_t *self, int i);
const char *slurm_job_id(const slurm_t *self);

/* Set env's broker, batches and stats endpoints to tcp:// with free ports (see
 * docs/cluster.md for how ports are chosen). Returns 0 or -1 with err. */
int slurm_endpoints(slurm_t *self, graph_env_t *env, char *err, size_t errlen);

/* Wrap every process of the table in srun on its node, and route signals to processes
 * through `scancel --signal` of their step (a signal to srun itself would kill the step
 * at once and lose the stage's last stats). Returns 0 or -1 with err. */
int slurm_place(slurm_t *self, proctab_t *procs, char *err, size_t errlen);

/* Cancel the steps of processes that are still running (after proctab_stop_all had to
 * kill their srun: the step itself would live until the allocation ends). */
void slurm_cancel_left(slurm_t *self, proctab_t *procs);

/* The placement rule: the node index of a process of ROLE, WORKER_K being its number
 * among all workers of the graph (any tier) in graph order. */
int slurm_place_index(proc_role_t role, int worker_k, int nnodes);

/* Build the srun argv for a process (NULL-terminated; the caller frees each string and
 * the array). */
char **slurm_srun_argv(const char *node, const char *name, char *const argv[]);

/* Parse `scontrol show node -o` output: copy NodeAddr's value. Returns 0 or -1. */
int slurm_parse_node_addr(const char *text, char *out, size_t outlen);

/* Parse `squeue -h -s -o "%i|%j"` output: the newest step id (the number after the dot)
 * of the step named NAME in job JOB, or -1. */
long slurm_parse_step(const char *text, const char *job, const char *name);

#endif
