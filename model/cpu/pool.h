/* pool.h: a tiny persistent thread pool with one operation, a parallel for over [0, n).
 * The CPU backend splits row-wise ops (cross-entropy, GELU, attention heads) over it;
 * OpenBLAS threads its own matrix products, so the pool is idle while a gemm runs.
 * Workers are created once; a parallel for costs two condition-variable round trips. */
#ifndef OFA_MODEL_POOL_H
#define OFA_MODEL_POOL_H

#include <stdint.h>

typedef struct pool_t pool_t;

/* The body of a parallel for: process items [i0, i1) as thread `tid` (0..threads-1). */
typedef void (*pool_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* threads >= 1 (1: everything runs on the caller). NULL on failure. */
pool_t *pool_new(int threads);
void pool_destroy(pool_t **self_p);
int pool_threads(const pool_t *self);
/* Split [0, n) into contiguous chunks, one per thread, and wait for all. Runs inline
 * when n < min_per_thread * 2 (not worth waking anyone). */
void pool_for(pool_t *self, int64_t n, int64_t min_per_thread, pool_fn fn, void *ctx);

#endif
