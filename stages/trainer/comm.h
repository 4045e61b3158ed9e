/* comm.h: the trainer group, i.e. the collective operations between trainer ranks.
 *
 * One interface, three implementations picked at comm_new:
 *   single  one rank (world 1): every collective is a no-op. Always available.
 *   mpi     CPU ranks started by mpirun (Open MPI) or `srun --mpi=pmix` (Slurm; trainer.mpi); buffers
 *           are host memory. Built when CMake finds MPI (OFA_HAVE_MPI).
 *   nccl    GPU ranks, one per GPU; buffers are device memory. The NCCL unique id is
 *           created by rank 0 and handed to the others over MPI, so NCCL needs the MPI
 *           launch too. Built when CUDA is found (OFA_HAVE_NCCL).
 *
 *     comm_t *c = comm_new("auto", err, sizeof err);   // mpi under mpirun/srun, else single
 *     comm_bcast(c, weights, bytes, 0, err, sizeof err);  // same start on every rank
 *     per step: comm_allreduce_sum(c, grads, n, ...);      // sum; the caller divides
 *     comm_destroy(&c);                                    // MPI_Finalize
 *
 * Every collective must be called by every rank in the same order with the same sizes
 * (MPI's rule); a rank that has nothing to contribute to a step still takes part with
 * zeros (trainer.c does this for ranks whose data ran out first).
 *
 * Errors: a failed collective returns -1 with err naming the call; the trainer treats
 * it as fatal for the run (a broken group cannot continue), with the message in the log.
 */
#ifndef OFA_COMM_H
#define OFA_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct comm_t comm_t;

/* kind: "single", "mpi", "nccl", or "auto" (mpi when the process was started by mpirun
 * or srun with more than one rank, else single). For "nccl", cuda_device < 0 picks
 * the rank's local index on its node. NULL + err when the kind is not built in or its
 * set-up fails. The caller owns the result; comm_destroy finalizes MPI. */
comm_t *comm_new(const char *kind, int cuda_device, char *err, size_t errlen);
void comm_destroy(comm_t **self_p);

int comm_rank(const comm_t *self);
int comm_world(const comm_t *self);
/* Rank among the ranks of this node (GPU selection); 0 for single. */
int comm_local_rank(const comm_t *self);
const char *comm_kind(const comm_t *self);   /* "single" | "mpi" | "nccl" */
/* 1 when comm_allreduce_sum / comm_bcast take device memory (nccl). */
int comm_device_buffers(const comm_t *self);

/* In-place sum of buf (n floats) over all ranks: host memory for mpi, device memory for
 * nccl. Blocks until the result is in buf. 0 or -1 with err. */
int comm_allreduce_sum(comm_t *self, float *buf, int64_t n, char *err, size_t errlen);
/* In-place sum of a few doubles in host memory (counters: loss sums, token counts). */
int comm_allreduce_sum_f64(comm_t *self, double *buf, int n, char *err, size_t errlen);
/* Copy `bytes` of buf on rank `root` to buf on every rank (memory as for allreduce). */
int comm_bcast(comm_t *self, void *buf, size_t bytes, int root, char *err, size_t errlen);
/* The same, always in host memory (whatever the kind). */
int comm_bcast_host(comm_t *self, void *buf, size_t bytes, int root, char *err, size_t errlen);
int comm_barrier(comm_t *self, char *err, size_t errlen);

/* Which kinds this build has, e.g. "single mpi" (for --help and error messages). */
const char *comm_kinds_built(void);

/* 1 when the environment says this process is one rank of an MPI launch (mpirun's
 * OMPI_COMM_WORLD_SIZE, PMI's PMI_SIZE, PMIx's PMIX_RANK) with more than one rank. */
int comm_launched_by_mpi(void);

#endif
