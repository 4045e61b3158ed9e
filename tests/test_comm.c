/* test_comm.c: the trainer group's single-rank implementation and kind selection
 * (stages/trainer/comm.h). The MPI implementation runs in test_mpi_group under mpirun. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

Test(comm, single_rank_collectives_leave_buffers_alone) {
    char err[256] = "";
    comm_t *c = comm_new("single", -1, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(comm_rank(c), 0);
    cr_assert_eq(comm_world(c), 1);
    cr_assert_str_eq(comm_kind(c), "single");
    cr_assert_eq(comm_device_buffers(c), 0);
    float g[5] = {1.5f, -2, 3, 0.25f, 7};
    double h[3] = {4, 5.5, -1};
    unsigned char b[4] = {1, 2, 3, 4};
    cr_assert_eq(comm_allreduce_sum(c, g, 5, err, sizeof err), 0);
    cr_assert_eq(comm_allreduce_sum_f64(c, h, 3, err, sizeof err), 0);
    cr_assert_eq(comm_bcast(c, b, sizeof b, 0, err, sizeof err), 0);
    cr_assert_eq(comm_bcast_host(c, b, sizeof b, 0, err, sizeof err), 0);
    cr_assert_eq(comm_barrier(c, err, sizeof err), 0);
    cr_assert(g[0] == 1.5f && g[1] == -2 && g[4] == 7);
    cr_assert(h[0] == 4 && h[1] == 5.5 && h[2] == -1);
    cr_assert(b[0] == 1 && b[3] == 4);
    comm_destroy(&c);
    cr_assert_null(c);
    comm_destroy(&c);   /* NULL is accepted */
}

Test(comm, null_group_is_one_rank) {
    cr_assert_eq(comm_rank(NULL), 0);
    cr_assert_eq(comm_world(NULL), 1);
    cr_assert_str_eq(comm_kind(NULL), "single");
    float g[2] = {1, 2};
    cr_assert_eq(comm_allreduce_sum(NULL, g, 2, NULL, 0), 0);
    cr_assert(g[0] == 1 && g[1] == 2);
}

Test(comm, unknown_kind_names_the_built_ones) {
    char err[256] = "";
    cr_assert_null(comm_new("gloo", -1, err, sizeof err));
    cr_assert(strstr(err, "'gloo'") && strstr(err, comm_kinds_built()), "%s", err);
    cr_assert(strstr(comm_kinds_built(), "single"));
}

Test(comm, auto_is_single_outside_an_mpi_launch) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMI_SIZE");
    unsetenv("PMIX_SIZE");
    unsetenv("SLURM_MPI_TYPE");
    unsetenv("SLURM_STEP_NUM_TASKS");
    unsetenv("SLURM_NTASKS");
    cr_assert_eq(comm_launched_by_mpi(), 0);
    setenv("PMI_SIZE", "1", 1);   /* a one-rank srun step is not a group */
    cr_assert_eq(comm_launched_by_mpi(), 0);
    char err[256] = "";
    comm_t *c = comm_new("auto", -1, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_assert_str_eq(comm_kind(c), "single");
    comm_destroy(&c);
    setenv("PMI_SIZE", "4", 1);
    cr_assert_eq(comm_launched_by_mpi(), 1);
    unsetenv("PMI_SIZE");
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    cr_assert_eq(comm_launched_by_mpi(), 1);
    unsetenv("OMPI_COMM_WORLD_SIZE");
    /* srun --mpi=pmix sets no size variable before MPI_Init: a step of several tasks
     * with an MPI plugin is the group; one task, or --mpi=none, is not. */
    setenv("SLURM_MPI_TYPE", "pmix", 1);
    setenv("SLURM_STEP_NUM_TASKS", "2", 1);
    cr_assert_eq(comm_launched_by_mpi(), 1);
    setenv("SLURM_STEP_NUM_TASKS", "1", 1);
    cr_assert_eq(comm_launched_by_mpi(), 0);
    setenv("SLURM_STEP_NUM_TASKS", "3", 1);
    setenv("SLURM_MPI_TYPE", "none", 1);
    cr_assert_eq(comm_launched_by_mpi(), 0);
    unsetenv("SLURM_MPI_TYPE");
    unsetenv("SLURM_STEP_NUM_TASKS");
}
