/* comm_nccl.c: the NCCL implementation of the trainer group (comm.h), compiled only when
 * CMake finds CUDA and NCCL. Rank 0 creates the unique id and MPI broadcasts it (the
 * usual NCCL bootstrap); every collective runs on the communicator's own stream and is
 * waited for before the call returns, so the caller sees the same blocking contract as
 * the MPI implementation. Buffers are device memory of the rank's GPU. */
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;
    int device;
} s_nccl_t;

/* One check for each library, with the failed expression, file and line in err. */
#define S_CUDA(call)                                                                      \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess)                                                            \
            return util_err(err, errlen, "%s failed at %s:%d: %s", #call, __FILE__,       \
                            __LINE__, cudaGetErrorString(e_));                            \
    } while (0)
#define S_NCCL(call)                                                                      \
    do {                                                                                  \
        ncclResult_t r_ = (call);                                                         \
        if (r_ != ncclSuccess)                                                            \
            return util_err(err, errlen, "%s failed at %s:%d: %s", #call, __FILE__,       \
                            __LINE__, ncclGetErrorString(r_));                            \
    } while (0)

static int s_init(s_nccl_t *s, int rank, int world, int device, char *err, size_t errlen) {
    int ndev = 0;
    S_CUDA(cudaGetDeviceCount(&ndev));
    if (device < 0 || device >= ndev)
        return util_err(err, errlen, "nccl: rank %d wants GPU %d but this node has %d", rank,
                        device, ndev);
    S_CUDA(cudaSetDevice(device));
    s->device = device;
    ncclUniqueId id;
    if (rank == 0)
        S_NCCL(ncclGetUniqueId(&id));
    if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        return util_err(err, errlen, "nccl: MPI_Bcast of the unique id failed");
    S_CUDA(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    S_NCCL(ncclCommInitRank(&s->comm, world, id, rank));
    return 0;
}

void *comm_nccl_new(int rank, int world, int device, char *err, size_t errlen) {
    s_nccl_t *s = util_calloc(1, sizeof *s);
    if (s_init(s, rank, world, device, err, errlen) != 0) {
        if (s->stream)
            cudaStreamDestroy(s->stream);
        free(s);
        return NULL;
    }
    return s;
}

void comm_nccl_destroy(void *nc) {
    s_nccl_t *s = nc;
    if (!s)
        return;
    if (s->comm)
        ncclCommDestroy(s->comm);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s);
}

int comm_nccl_allreduce(void *nc, float *buf, int64_t n, char *err, size_t errlen) {
    s_nccl_t *s = nc;
    /* The gradients were written on the backend's stream: a device-wide sync orders
     * them before the collective (the fast path with stream events is the speed
     * issue's job). */
    S_CUDA(cudaDeviceSynchronize());
    S_NCCL(ncclAllReduce(buf, buf, (size_t)n, ncclFloat32, ncclSum, s->comm, s->stream));
    S_CUDA(cudaStreamSynchronize(s->stream));
    return 0;
}

int comm_nccl_bcast(void *nc, void *buf, size_t bytes, int root, char *err, size_t errlen) {
    s_nccl_t *s = nc;
    S_CUDA(cudaDeviceSynchronize());
    S_NCCL(ncclBroadcast(buf, buf, bytes, ncclUint8, root, s->comm, s->stream));
    S_CUDA(cudaStreamSynchronize(s->stream));
    return 0;
}
