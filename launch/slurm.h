/* slurm.h: running the process graph inside a Slurm allocation. Every process becomes one
 * job step (`srun --overlap -N1 -n1 -w NODE --kill-on-bad-exit=1 -J NAME PROGRAM ARGS`,
 * an argv list, no shell); the supervisor treats the srun process like a local child, so a
 * failed step (scancel, a killed task) is a crash that restarts a worker. The trainer
 * group (trainer.ranks = W > 1) is one step of W tasks that srun starts through an MPI
 * plugin (`srun --mpi=PLUGIN -n W -m arbitrary -w NODES ...`, trainer.mpi, default pmix),
 * no mpirun; a signal or scancel of that step reaches every rank.
 *
 * Placement, by default: broker, batcher, source and the consumers on the allocation's
 * first node, workers round robin over all nodes starting at the second one. The plan's
 * placement keys change it (placement.hubs, placement.trainer, placement.workers_per_node,
 * stages.NAME.nodes; see slurm_assign). Endpoints are tcp:// on the hubs' node's address
 * (NodeAddr), the stats socket on the address of the host that runs launch.
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
 * docs/cluster.md for how ports are chosen). Reads the placement keys from the run's
 * resolved plan (env->run_dir/plan.resolved.conf) when it is there. Returns 0 or -1
 * with err (a placement.hubs naming no node of the allocation). */
int slurm_endpoints(slurm_t *self, graph_env_t *env, char *err, size_t errlen);

/* Wrap every process of the table in srun on its node (the trainer group in one step of
 * its ranks, after checking that srun offers trainer.mpi), and route signals to processes
 * through `scancel --signal` of their step (a signal to srun itself would kill the step
 * at once and lose the stage's last stats). Returns 0 or -1 with err. */
int slurm_place(slurm_t *self, proctab_t *procs, char *err, size_t errlen);

/* Cancel the steps of processes that are still running (after proctab_stop_all had to
 * kill their srun: the step itself would live until the allocation ends). */
void slurm_cancel_left(slurm_t *self, proctab_t *procs);

/* The placement rule: the node index of a process of ROLE, WORKER_K being its number
 * among all workers of the graph (any tier) in graph order. */
int slurm_place_index(proc_role_t role, int worker_k, int nnodes);

/* The index of a node reference of a plan: a node name of the allocation, else a decimal
 * index into it ("0" = the first node); -1 when it is neither. */
int slurm_node_ref(char *const *nodes, int nnodes, const char *ref);

/* The node (index into nodes) of every process of the table, in node_of (one per
 * process), under the plan's placement keys (plan may be NULL: the default rule):
 *  - broker, batcher, source, sink: placement.hubs (default the first node);
 *  - trainer rank r: placement.trainer[r mod n] (default the hubs' node);
 *  - the k-th worker of a stage with stages.NAME.nodes: the list's (k mod n)-th node,
 *    else the default rule's node (slurm_place_index); with placement.workers_per_node
 *    a full node is passed over for the next one of the list (or of the allocation).
 * Returns 0, or -1 with err naming the key (a node not in the allocation, workers that
 * do not fit). */
int slurm_assign(const plan_t *plan, proctab_t *procs, char *const *nodes, int nnodes,
                 int *node_of, char *err, size_t errlen);

/* Build the srun argv for a process (NULL-terminated; the caller frees each string and
 * the array). */
char **slurm_srun_argv(const char *node, const char *name, char *const argv[]);

/* The trainer group (trainer.ranks = W > 1, one process named "trainer" in the table):
 * the node (index into nodes) of each rank r in rank_node[0..world), placement.trainer's
 * (r mod n)-th entry, else the hubs' node. Returns 0 or -1 with err naming the key. */
int slurm_group_nodes(const plan_t *plan, int world, char *const *nodes, int nnodes,
                      int *rank_node, char *err, size_t errlen);

/* The srun argv of the trainer group: one step of WORLD tasks started by srun itself
 * through MPI plugin MPI (`--mpi=MPI`), rank r on rank_nodes[r] (`-m arbitrary -w
 * n0,n1,...`), `--overcommit` so that ranks need not have a CPU each of the allocation.
 * NULL-terminated; the caller frees each string and the array. */
char **slurm_group_srun_argv(const char *mpi, int world, char *const *rank_nodes,
                             const char *name, char *const argv[]);

/* Whether `srun --mpi=list` output TEXT offers plugin MPI (a tab-indented plugin type,
 * or one of the "specific ... plugin versions available:" list). Returns 1 or 0; with
 * the offered names, comma-separated, in offered. */
int slurm_parse_mpi_list(const char *text, const char *mpi, char *offered, size_t offlen);

/* When the trainer group's log (LOG_PATH, the step's output) shows that its ranks failed
 * in MPI_Init, a hint naming the plugin into out (" : ... trainer.mpi ..."): a plugin
 * srun offers but the MPI library cannot use. Returns 1 with the hint, else 0. */
int slurm_mpi_hint(const char *log_path, const char *mpi, char *out, size_t outlen);

/* Parse `scontrol show node -o` output: copy NodeAddr's value. Returns 0 or -1. */
int slurm_parse_node_addr(const char *text, char *out, size_t outlen);

/* Parse `squeue -h -s -o "%i|%j"` output: the newest step id (the number after the dot)
 * of the step named NAME in job JOB, or -1. */
long slurm_parse_step(const char *text, const char *job, const char *name);

#endif
