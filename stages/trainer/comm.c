/* comm.c: see comm.h. The single-rank and MPI implementations; NCCL lives in
 * comm_nccl.c (compiled only with CUDA) behind the small s_nccl_* surface declared here. */
#include "comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#ifdef OFA_HAVE_MPI
#include <mpi.h>
#endif

typedef enum { COMM_SINGLE, COMM_MPI, COMM_NCCL } s_kind_t;

#ifdef OFA_HAVE_NCCL
/* comm_nccl.c: an NCCL communicator over the ranks of MPI_COMM_WORLD. */
void *comm_nccl_new(int rank, int world, int device, char *err, size_t errlen);
void comm_nccl_destroy(void *nc);
int comm_nccl_allreduce(void *nc, float *buf, int64_t n, char *err, size_t errlen);
int comm_nccl_bcast(void *nc, void *buf, size_t bytes, int root, char *err, size_t errlen);
#endif

struct comm_t {
    s_kind_t kind;
    int rank, world, local_rank;
    int mpi_inited;      /* this object called MPI_Init (and so calls MPI_Finalize) */
    void *nccl;          /* comm_nccl.c state */
};

int comm_launched_by_mpi(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1)
            return 1;
    }
    /* srun --mpi=pmix sets none of those before MPI_Init: its step of several tasks with
     * an MPI plugin other than "none" is the group. */
    const char *mpi = getenv("SLURM_MPI_TYPE"), *n = getenv("SLURM_STEP_NUM_TASKS");
    if (!n)
        n = getenv("SLURM_NTASKS");
    return mpi && *mpi && strcmp(mpi, "none") && n && atoi(n) > 1;
}

const char *comm_kinds_built(void) {
#if defined(OFA_HAVE_MPI) && defined(OFA_HAVE_NCCL)
    return "single mpi nccl";
#elif defined(OFA_HAVE_MPI)
    return "single mpi";
#else
    return "single";
#endif
}

#ifdef OFA_HAVE_MPI
/* MPI's error string for rc into err, with the call's name. */
static int s_mpi_err(int rc, const char *what, char *err, size_t errlen) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "error %d", rc);
    return util_err(err, errlen, "%s: %s", what, msg);
}

static int s_mpi_init(comm_t *self, char *err, size_t errlen) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int rc = MPI_Init(NULL, NULL);
        if (rc != MPI_SUCCESS)
            return s_mpi_err(rc, "MPI_Init", err, errlen);
        self->mpi_inited = 1;
    }
    /* Errors come back as codes (with a message here) instead of aborting the job, so
     * the trainer can log what failed before it exits. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &self->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &self->world);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, self->rank, MPI_INFO_NULL,
                            &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &self->local_rank);
        MPI_Comm_free(&node);
    }
    return 0;
}
#endif

comm_t *comm_new(const char *kind, int cuda_device, char *err, size_t errlen) {
    comm_t *self = util_calloc(1, sizeof *self);
    self->world = 1;
    if (!kind || !strcmp(kind, "auto"))
        kind = comm_launched_by_mpi() ? "mpi" : "single";
    if (!strcmp(kind, "single")) {
        self->kind = COMM_SINGLE;
        return self;
    }
    if (strcmp(kind, "mpi") && strcmp(kind, "nccl")) {
        util_err(err, errlen, "trainer group '%s': unknown (this build has: %s)", kind,
                 comm_kinds_built());
        free(self);
        return NULL;
    }
#ifdef OFA_HAVE_MPI
    if (s_mpi_init(self, err, errlen) != 0) {
        free(self);
        return NULL;
    }
    self->kind = COMM_MPI;
    if (!strcmp(kind, "nccl")) {
#ifdef OFA_HAVE_NCCL
        int dev = cuda_device >= 0 ? cuda_device : self->local_rank;
        self->nccl = comm_nccl_new(self->rank, self->world, dev, err, errlen);
        if (!self->nccl) {
            comm_destroy(&self);
            return NULL;
        }
        self->kind = COMM_NCCL;
#else
        util_err(err, errlen, "trainer group 'nccl': this build has no CUDA/NCCL (it has: %s)",
                 comm_kinds_built());
        comm_destroy(&self);
        return NULL;
#endif
    }
    return self;
#else
    (void)cuda_device;
    util_err(err, errlen, "trainer group '%s': this build has no MPI (install libopenmpi-dev "
             "and rebuild; it has: %s)", kind, comm_kinds_built());
    free(self);
    return NULL;
#endif
}

void comm_destroy(comm_t **self_p) {
    if (!self_p || !*self_p)
        return;
    comm_t *self = *self_p;
#ifdef OFA_HAVE_NCCL
    if (self->nccl)
        comm_nccl_destroy(self->nccl);
#endif
#ifdef OFA_HAVE_MPI
    if (self->mpi_inited) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin)
            MPI_Finalize();
    }
#endif
    free(self);
    *self_p = NULL;
}

int comm_rank(const comm_t *self) { return self ? self->rank : 0; }
int comm_world(const comm_t *self) { return self ? self->world : 1; }
int comm_local_rank(const comm_t *self) { return self ? self->local_rank : 0; }
int comm_device_buffers(const comm_t *self) { return self && self->kind == COMM_NCCL; }

const char *comm_kind(const comm_t *self) {
    if (!self)
        return "single";
    return self->kind == COMM_MPI ? "mpi" : self->kind == COMM_NCCL ? "nccl" : "single";
}

/* MPI counts are ints: large buffers go in chunks of 2^30 elements. */
#define S_CHUNK ((int64_t)1 << 30)

int comm_allreduce_sum(comm_t *self, float *buf, int64_t n, char *err, size_t errlen) {
    if (!self || self->world == 1 || n <= 0)
        return 0;
#ifdef OFA_HAVE_NCCL
    if (self->kind == COMM_NCCL)
        return comm_nccl_allreduce(self->nccl, buf, n, err, errlen);
#endif
#ifdef OFA_HAVE_MPI
    for (int64_t i = 0; i < n; i += S_CHUNK) {
        int c = (int)(n - i < S_CHUNK ? n - i : S_CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + i, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return s_mpi_err(rc, "MPI_Allreduce (gradients)", err, errlen);
    }
    return 0;
#else
    return util_err(err, errlen, "allreduce: no MPI in this build");
#endif
}

int comm_allreduce_sum_f64(comm_t *self, double *buf, int n, char *err, size_t errlen) {
    if (!self || self->world == 1 || n <= 0)
        return 0;
#ifdef OFA_HAVE_MPI
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_err(rc, "MPI_Allreduce (counters)", err, errlen);
    return 0;
#else
    return util_err(err, errlen, "allreduce: no MPI in this build");
#endif
}

int comm_bcast_host(comm_t *self, void *buf, size_t bytes, int root, char *err, size_t errlen) {
    if (!self || self->world == 1 || bytes == 0)
        return 0;
#ifdef OFA_HAVE_MPI
    for (size_t i = 0; i < bytes; i += (size_t)S_CHUNK) {
        int c = (int)(bytes - i < (size_t)S_CHUNK ? bytes - i : (size_t)S_CHUNK);
        int rc = MPI_Bcast((char *)buf + i, c, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return s_mpi_err(rc, "MPI_Bcast", err, errlen);
    }
    return 0;
#else
    return util_err(err, errlen, "broadcast: no MPI in this build");
#endif
}

int comm_bcast(comm_t *self, void *buf, size_t bytes, int root, char *err, size_t errlen) {
    if (!self || self->world == 1 || bytes == 0)
        return 0;
#ifdef OFA_HAVE_NCCL
    if (self->kind == COMM_NCCL)
        return comm_nccl_bcast(self->nccl, buf, bytes, root, err, errlen);
#endif
    return comm_bcast_host(self, buf, bytes, root, err, errlen);
}

int comm_barrier(comm_t *self, char *err, size_t errlen) {
    if (!self || self->world == 1)
        return 0;
#ifdef OFA_HAVE_MPI
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return s_mpi_err(rc, "MPI_Barrier", err, errlen);
    return 0;
#else
    return util_err(err, errlen, "barrier: no MPI in this build");
#endif
}
