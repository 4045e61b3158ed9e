/* backend_cuda.cu: see backend_cuda.h. Straightforward kernels, one per op, each written
 * after the CPU reference (model/cpu/backend_cpu.c) with the same definitions:
 * LayerNorm with eps inside the sqrt and statistics in double, exact erf GELU, label
 * smoothing as torch's cross_entropy, AdamW as torch.optim.AdamW's single-tensor path,
 * attention rows with all keys masked giving zeros. Fusion, flash attention and CUDA
 * graphs are the speed work's (issue 10); here every kernel is simple enough to check by
 * reading, with bounds on every index and a check after every launch.
 *
 * Work decomposition: elementwise ops use grid-stride loops over int64 indices; row ops
 * (LayerNorm, cross-entropy, one attention query row) use one block per row with
 * block reductions; column sums (bias and LayerNorm weight gradients) use one thread per
 * column over all rows, so they are deterministic. Gradients that many rows scatter into
 * (embedding rows, attention keys and values) use atomicAdd, as PyTorch's do. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
}
#include "backend_cuda.h"

static_assert(sizeof(real_t) == sizeof(float), "the CUDA backend is built in float only");

/* ---- checks ---- */

/* One generic check for device calls: the failing expression, function, file and line,
 * then abort (an op has no error return: a device error is not something to go on
 * from). Aliases for CUDA and cuBLAS. */
#define S_CHECK(ok, what, code, msg)                                                       \
    do {                                                                                   \
        if (!(ok)) {                                                                       \
            fprintf(stderr, "cuda backend: %s failed in %s at %s:%d: %s (%d)\n", what,     \
                    __func__, __FILE__, __LINE__, msg, (int)(code));                       \
            abort();                                                                       \
        }                                                                                  \
    } while (0)
#define CUDA_CHECK(call)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        S_CHECK(e_ == cudaSuccess, #call, e_, cudaGetErrorString(e_));                     \
    } while (0)
#define CUBLAS_CHECK(call)                                                                 \
    do {                                                                                   \
        cublasStatus_t s_ = (call);                                                        \
        S_CHECK(s_ == CUBLAS_STATUS_SUCCESS, #call, s_, cublasGetStatusString(s_));        \
    } while (0)
/* After every kernel launch: a bad configuration shows up here, not ops later. */
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

typedef struct {
    void *p;
    size_t n;
} s_live_t;

typedef struct {
    int device;
    backend_cuda_math_t math;
    cudaStream_t stream;
    cublasHandle_t blas;
    double *d_sum;          /* (1) device scratch of sqnorm */
    size_t bytes, peak;     /* allocated through alloc / free, and its peak */
    int max_smem;           /* shared memory per block */
    s_live_t *live;         /* (nlive) live allocations */
    int nlive, caplive;
} s_cuda_t;

static s_cuda_t *s_ctx(backend_t *be) { return (s_cuda_t *)be->ctx; }
static cudaStream_t s_stream(backend_t *be) { return s_ctx(be)->stream; }

/* Blocks for a grid-stride loop over n items of 256 threads (at most 65535*16 blocks;
 * the loop covers the rest). */
static unsigned s_blocks(int64_t n) {
    int64_t b = (n + 255) / 256;
    if (b < 1)
        b = 1;
    if (b > 65535 * 16)
        b = 65535 * 16;
    return (unsigned)b;
}

#define GRID_STRIDE(i, n)                                                                  \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);               \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- block reductions (blockDim.x a multiple of 32, at most 1024) ---- */

template <typename T> __device__ T s_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ float s_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block; every thread gets the result. sh: 32 slots of shared memory. */
template <typename T> __device__ T s_block_sum(T v, T *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = s_warp_sum(v);
    __syncthreads();   /* sh may still be read by a previous reduction */
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : (T)0;
    return s_warp_sum(r);
}
__device__ float s_block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = s_warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    return s_warp_max(r);
}

/* ---- memory ---- */

/* The size of every live allocation, for the peak accounting (the model allocates a
 * handful of buffers, so a small array searched linearly is enough). */
static void s_track(s_cuda_t *c, void *p, size_t n) {
    if (c->nlive == c->caplive) {
        int cap = c->caplive ? 2 * c->caplive : 64;
        s_live_t *l = (s_live_t *)realloc(c->live, sizeof *l * cap);
        if (!l) {
            fprintf(stderr, "cuda backend: out of host memory\n");
            abort();
        }
        c->live = l;
        c->caplive = cap;
    }
    c->live[c->nlive].p = p;
    c->live[c->nlive].n = n;
    c->nlive++;
    c->bytes += n;
    if (c->bytes > c->peak)
        c->peak = c->bytes;
}

static void s_untrack(s_cuda_t *c, void *p) {
    for (int i = 0; i < c->nlive; i++)
        if (c->live[i].p == p) {
            c->bytes -= c->live[i].n;
            c->live[i] = c->live[--c->nlive];
            return;
        }
}

static void *s_alloc(backend_t *be, size_t bytes) {
    s_cuda_t *c = s_ctx(be);
    void *p = NULL;
    size_t n = bytes ? bytes : 64;
    if (cudaMalloc(&p, n) != cudaSuccess) {
        cudaGetLastError();   /* out of memory is not sticky: clear it, report NULL */
        return NULL;
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, n, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    s_track(c, p, n);
    return p;
}

static void s_free(backend_t *be, void *p) {
    if (!p)
        return;
    s_cuda_t *c = s_ctx(be);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaFree(p));
    s_untrack(c, p);
}

static void s_upload(backend_t *be, void *dst, const void *src, size_t bytes) {
    if (!bytes)
        return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(s_stream(be)));
}
static void s_download(backend_t *be, void *dst, const void *src, size_t bytes) {
    if (!bytes)
        return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(s_stream(be)));
}
static void s_copy(backend_t *be, void *dst, const void *src, size_t bytes) {
    if (bytes)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s_stream(be)));
}
static void s_zero(backend_t *be, void *p, size_t bytes) {
    if (bytes)
        CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s_stream(be)));
}
static void s_sync(backend_t *be) { CUDA_CHECK(cudaStreamSynchronize(s_stream(be))); }

/* ---- matrix products ---- */

/* Row-major C (M,N) = op(A) op(B) is column-major C^T (N,M) = op(B)^T op(A)^T: cuBLAS
 * gets the operands swapped, with the same leading dimensions. */
static void s_gemm_batched(backend_t *be, int tA, int tB, int M, int N, int K, real_t alpha,
                           const real_t *A, int lda, int64_t sA, const real_t *Bm, int ldb,
                           int64_t sB, real_t beta, real_t *C, int ldc, int64_t sC,
                           int batch) {
    if (M <= 0 || N <= 0 || batch <= 0)
        return;
    s_cuda_t *c = s_ctx(be);
    cublasOperation_t oa = tA ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tB ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (K <= 0) {
        /* C = beta C (0 when beta is 0, whatever C held), as the CPU backend does for an
         * empty inner dimension. */
        float zero = 0;
        for (int i = 0; i < batch; i++) {
            if (beta == 0)
                CUDA_CHECK(cudaMemset2DAsync(C + i * sC, sizeof(float) * ldc, 0,
                                             sizeof(float) * N, M, c->stream));
            else
                CUBLAS_CHECK(cublasSgeam(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, N, M, &beta,
                                         C + i * sC, ldc, &zero, C + i * sC, ldc, C + i * sC,
                                         ldc));
        }
        return;
    }
    cublasComputeType_t ct =
        c->math == BACKEND_CUDA_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    if (batch == 1)
        CUBLAS_CHECK(cublasGemmEx(c->blas, ob, oa, N, M, K, &alpha, Bm, CUDA_R_32F, ldb, A,
                                  CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, ct,
                                  CUBLAS_GEMM_DEFAULT));
    else
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(c->blas, ob, oa, N, M, K, &alpha, Bm,
                                                CUDA_R_32F, ldb, sB, A, CUDA_R_32F, lda, sA,
                                                &beta, C, CUDA_R_32F, ldc, sC, batch, ct,
                                                CUBLAS_GEMM_DEFAULT));
}

static void s_gemm(backend_t *be, int tA, int tB, int M, int N, int K, real_t alpha,
                   const real_t *A, int lda, const real_t *Bm, int ldb, real_t beta, real_t *C,
                   int ldc) {
    s_gemm_batched(be, tA, tB, M, N, K, alpha, A, lda, 0, Bm, ldb, 0, beta, C, ldc, 0, 1);
}

/* ---- bias ---- */

__global__ void k_bias_add(float *y, const float *b, int64_t N, int O) {
    GRID_STRIDE(i, N * O) y[i] += b[i % O];
}
/* One thread per column: deterministic, and coalesced across the threads of a warp. */
__global__ void k_bias_bwd(float *db, const float *dy, int64_t N, int O) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= O)
        return;
    double s = 0;
    for (int64_t i = 0; i < N; i++)
        s += dy[i * O + j];
    db[j] += (float)s;
}

static void s_bias_add(backend_t *be, real_t *y, const real_t *b, int N, int O) {
    if (N <= 0 || O <= 0)
        return;
    k_bias_add<<<s_blocks((int64_t)N * O), 256, 0, s_stream(be)>>>(y, b, N, O);
    LAUNCH_CHECK();
}
static void s_bias_bwd(backend_t *be, real_t *db, const real_t *dy, int N, int O) {
    if (N <= 0 || O <= 0)
        return;
    k_bias_bwd<<<(O + 255) / 256, 256, 0, s_stream(be)>>>(db, dy, N, O);
    LAUNCH_CHECK();
}

/* ---- LayerNorm ---- */

/* One block per row; statistics in double as the CPU reference. */
__global__ void k_ln_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                         const float *b, int D, float eps) {
    __shared__ double sh[32];
    int64_t r = blockIdx.x;
    const float *xr = x + r * D;
    double s = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x)
        s += xr[j];
    double mu = s_block_sum(s, sh) / D;
    double v = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double d = xr[j] - mu;
        v += d * d;
    }
    double rs = 1.0 / sqrt(s_block_sum(v, sh) / D + (double)eps);
    float *o = out + r * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x)
        o[j] = (float)((xr[j] - mu) * rs) * w[j] + b[j];
    if (threadIdx.x == 0) {
        mean[r] = (float)mu;
        rstd[r] = (float)rs;
    }
}

/* dx (row r) += r * (g*w - mean(g*w) - xhat * mean(g*w*xhat)), one block per row. */
__global__ void k_ln_bwd_dx(float *dx, const float *dout, const float *x, const float *mean,
                            const float *rstd, const float *w, int D) {
    __shared__ double sh[32];
    int64_t r = blockIdx.x;
    const float *xr = x + r * D, *g = dout + r * D;
    double mu = mean[r], rs = rstd[r], m1 = 0, m2 = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double xh = (xr[j] - mu) * rs, gw = (double)g[j] * w[j];
        m1 += gw;
        m2 += gw * xh;
    }
    m1 = s_block_sum(m1, sh) / D;
    m2 = s_block_sum(m2, sh) / D;
    float *d = dx + r * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double xh = (xr[j] - mu) * rs, gw = (double)g[j] * w[j];
        d[j] += (float)(rs * (gw - m1 - xh * m2));
    }
}

/* dw[j] += sum_r g xhat ; db[j] += sum_r g: one thread per column. */
__global__ void k_ln_bwd_dw(float *dw, float *db, const float *dout, const float *x,
                            const float *mean, const float *rstd, int64_t N, int D) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D)
        return;
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < N; r++) {
        double g = dout[r * D + j], xh = (x[r * D + j] - (double)mean[r]) * rstd[r];
        sw += g * xh;
        sb += g;
    }
    dw[j] += (float)sw;
    db[j] += (float)sb;
}

static int s_row_threads(int D) {
    int t = 32;
    while (t < D && t < 1024)
        t *= 2;
    return t > 256 ? 256 : t;
}

static void s_ln_fwd(backend_t *be, real_t *out, real_t *mean, real_t *rstd, const real_t *x,
                     const real_t *w, const real_t *b, int N, int D, real_t eps) {
    if (N <= 0 || D <= 0)
        return;
    k_ln_fwd<<<N, s_row_threads(D), 0, s_stream(be)>>>(out, mean, rstd, x, w, b, D, eps);
    LAUNCH_CHECK();
}

static void s_ln_bwd(backend_t *be, real_t *dx, real_t *dw, real_t *db, const real_t *dout,
                     const real_t *x, const real_t *mean, const real_t *rstd, const real_t *w,
                     int N, int D) {
    if (N <= 0 || D <= 0)
        return;
    k_ln_bwd_dx<<<N, s_row_threads(D), 0, s_stream(be)>>>(dx, dout, x, mean, rstd, w, D);
    LAUNCH_CHECK();
    k_ln_bwd_dw<<<(D + 127) / 128, 128, 0, s_stream(be)>>>(dw, db, dout, x, mean, rstd, N, D);
    LAUNCH_CHECK();
}

/* ---- GELU (exact) ---- */

__global__ void k_gelu_fwd(float *out, const float *x, int64_t n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
    }
}
__global__ void k_gelu_bwd(float *dx, const float *x, const float *dout, int64_t n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752440f));
        float pdf = 0.39894228040143267794f * expf(-0.5f * v * v);
        dx[i] = dout[i] * (cdf + v * pdf);
    }
}

static void s_gelu_fwd(backend_t *be, real_t *out, const real_t *x, int64_t n) {
    if (n <= 0)
        return;
    k_gelu_fwd<<<s_blocks(n), 256, 0, s_stream(be)>>>(out, x, n);
    LAUNCH_CHECK();
}
static void s_gelu_bwd(backend_t *be, real_t *dx, const real_t *x, const real_t *dout,
                       int64_t n) {
    if (n <= 0)
        return;
    k_gelu_bwd<<<s_blocks(n), 256, 0, s_stream(be)>>>(dx, x, dout, n);
    LAUNCH_CHECK();
}

/* ---- embeddings ---- */

__global__ void k_embed_fwd(float *out, const float *table, const int32_t *ids, int64_t N, int D,
                            int acc) {
    GRID_STRIDE(i, N * D) {
        int64_t r = i / D;
        int j = (int)(i % D);
        int32_t id = ids[r];
        if (id < 0) {
            if (!acc)
                out[i] = 0;
        } else {
            float t = table[(int64_t)id * D + j];
            out[i] = acc ? out[i] + t : t;
        }
    }
}
__global__ void k_embed_bwd(float *dtable, const float *dout, const int32_t *ids, int64_t N,
                            int D) {
    GRID_STRIDE(i, N * D) {
        int32_t id = ids[i / D];
        if (id >= 0)
            atomicAdd(dtable + (int64_t)id * D + i % D, dout[i]);
    }
}

static void s_embed_fwd(backend_t *be, real_t *out, const real_t *table, const int32_t *ids,
                        int N, int D, int accumulate) {
    if (N <= 0 || D <= 0)
        return;
    k_embed_fwd<<<s_blocks((int64_t)N * D), 256, 0, s_stream(be)>>>(out, table, ids, N, D,
                                                                     accumulate);
    LAUNCH_CHECK();
}
static void s_embed_bwd(backend_t *be, real_t *dtable, const real_t *dout, const int32_t *ids,
                        int N, int D) {
    if (N <= 0 || D <= 0)
        return;
    k_embed_bwd<<<s_blocks((int64_t)N * D), 256, 0, s_stream(be)>>>(dtable, dout, ids, N, D);
    LAUNCH_CHECK();
}

/* ---- attention ---- */

/* The attention descriptor's fields a kernel needs, by value. */
typedef struct {
    int B, H, Tq, Tk, hd;
    float scale;
    const float *q, *k, *v;
    int64_t q_ld, q_bs, k_ld, k_bs, v_ld, v_bs, o_ld, o_bs;
    float *out, *probs;
    const int32_t *key_len, *kv_map;
    int causal, q_pos0;
} s_attn_k_t;

/* Visible keys [0, n) of query i in batch b (the CPU reference's s_visible). */
__device__ int s_visible(const s_attn_k_t &a, int b, int i) {
    int n = a.Tk;
    if (a.kv_map)
        b = a.kv_map[b];
    if (a.key_len && a.key_len[b] < n)
        n = a.key_len[b] < 0 ? 0 : a.key_len[b];
    if (a.causal && a.q_pos0 + i + 1 < n)
        n = a.q_pos0 + i + 1;
    return n;
}

/* One block per (query i, head h, batch b). Shared memory: scores (Tk), q row (hd). */
__global__ void k_attn_fwd(s_attn_k_t a) {
    extern __shared__ float sm[];
    __shared__ float shr[32];
    __shared__ double shd[32];
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int Tk = a.Tk, hd = a.hd;
    float *sc = sm, *qs = sm + Tk;
    int kb = a.kv_map ? a.kv_map[b] : b;
    const float *q = a.q + b * a.q_bs + (int64_t)i * a.q_ld + h * hd;
    const float *k = a.k + kb * a.k_bs + h * hd;
    const float *v = a.v + kb * a.v_bs + h * hd;
    float *o = a.out + b * a.o_bs + (int64_t)i * a.o_ld + h * hd;
    float *p = a.probs ? a.probs + (((int64_t)b * a.H + h) * a.Tq + i) * Tk : NULL;
    int n = s_visible(a, b, i);
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = q[d];
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float *kj = k + (int64_t)j * a.k_ld;
        float s = 0;
        for (int d = 0; d < hd; d++)
            s += qs[d] * kj[d];
        s *= a.scale;
        sc[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = s_block_max(mx, shr);
    double sum = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = s_block_sum(sum, shd);
    float inv = n > 0 ? (float)(1.0 / sum) : 0.0f;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        float pj = j < n ? sc[j] * inv : 0.0f;
        sc[j] = pj;
        if (p)
            p[j] = pj;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < n; j++)
            acc += sc[j] * v[(int64_t)j * a.v_ld + d];
        o[d] = acc;
    }
}

/* Backward of one query row: ds_j = p_j (dp_j - sum p dp) scale with dp_j = dout . v_j;
 * dq_i += sum_j ds_j k_j (this block's row only), dk_j += ds_j q_i and dv_j += p_j dout_i
 * (atomics: every query row adds into every key row). Shared: p (Tk), ds (Tk), q (hd),
 * dout (hd). */
__global__ void k_attn_bwd(s_attn_k_t a, const float *dout, int64_t d_ld, int64_t d_bs, float *dq,
                           float *dk, float *dv) {
    extern __shared__ float sm[];
    __shared__ double shd[32];
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int Tk = a.Tk, hd = a.hd;
    float *ps = sm, *ds = sm + Tk, *qs = sm + 2 * Tk, *gs = sm + 2 * Tk + hd;
    int64_t qo = b * a.q_bs + (int64_t)i * a.q_ld + h * hd;
    const float *k = a.k + b * a.k_bs + h * hd, *v = a.v + b * a.v_bs + h * hd;
    const float *p = a.probs + (((int64_t)b * a.H + h) * a.Tq + i) * Tk;
    const float *g = dout + b * d_bs + (int64_t)i * d_ld + h * hd;
    int n = s_visible(a, b, i);   /* p_j = 0 beyond: no contribution */
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        qs[d] = a.q[qo + d];
        gs[d] = g[d];
    }
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        ps[j] = p[j];
    __syncthreads();
    double s = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float *vj = v + (int64_t)j * a.v_ld;
        float dp = 0;
        for (int d = 0; d < hd; d++)
            dp += gs[d] * vj[d];
        ds[j] = dp;
        s += (double)ps[j] * dp;
    }
    float sf = (float)s_block_sum(s, shd);
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        ds[j] = ps[j] * (ds[j] - sf) * a.scale;
    __syncthreads();
    float *dqr = dq + qo;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < n; j++)
            acc += ds[j] * k[(int64_t)j * a.k_ld + d];
        dqr[d] += acc;
    }
    float *dkb = dk + b * a.k_bs + h * hd, *dvb = dv + b * a.v_bs + h * hd;
    for (int64_t t = threadIdx.x; t < (int64_t)n * hd; t += blockDim.x) {
        int j = (int)(t / hd), d = (int)(t % hd);
        atomicAdd(dkb + (int64_t)j * a.k_ld + d, ds[j] * qs[d]);
        atomicAdd(dvb + (int64_t)j * a.v_ld + d, ps[j] * gs[d]);
    }
}

static s_attn_k_t s_attn_args(const be_attn_t *a) {
    s_attn_k_t k;
    k.B = a->B, k.H = a->H, k.Tq = a->Tq, k.Tk = a->Tk, k.hd = a->hd;
    k.scale = a->scale;
    k.q = a->q, k.k = a->k, k.v = a->v;
    k.q_ld = a->q_ld, k.q_bs = a->q_bs, k.k_ld = a->k_ld, k.k_bs = a->k_bs;
    k.v_ld = a->v_ld, k.v_bs = a->v_bs, k.o_ld = a->o_ld, k.o_bs = a->o_bs;
    k.out = a->out, k.probs = a->probs;
    k.key_len = a->key_len, k.kv_map = a->kv_map;
    k.causal = a->causal, k.q_pos0 = a->q_pos0;
    return k;
}

/* Shared memory of an attention block, checked against the device's limit (a source
 * too long for this straightforward kernel is a configuration the caller must not
 * make: abort with the numbers). */
static size_t s_attn_smem(backend_t *be, const be_attn_t *a, int bwd) {
    size_t n = sizeof(float) * ((size_t)(bwd ? 2 : 1) * a->Tk + (size_t)(bwd ? 2 : 1) * a->hd);
    s_cuda_t *c = s_ctx(be);
    if (n > (size_t)c->max_smem) {
        fprintf(stderr, "cuda backend: attention over %d keys needs %zu bytes of shared "
                "memory per block, the device has %d\n", a->Tk, n, c->max_smem);
        abort();
    }
    return n;
}

static void s_attn_fwd(backend_t *be, const be_attn_t *a) {
    if (a->Tq <= 0 || a->B <= 0 || a->H <= 0)
        return;
    if (a->Tk <= 0) {
        for (int b = 0; b < a->B; b++)
            CUDA_CHECK(cudaMemset2DAsync(a->out + b * a->o_bs, sizeof(float) * a->o_ld, 0,
                                         sizeof(float) * a->H * a->hd, a->Tq, s_stream(be)));
        return;
    }
    if (a->H > 65535 || a->B > 65535) {
        fprintf(stderr, "cuda backend: attention grid (%d, %d, %d) too large\n", a->Tq, a->H,
                a->B);
        abort();
    }
    size_t smem = s_attn_smem(be, a, 0);
    dim3 grid(a->Tq, a->H, a->B);
    k_attn_fwd<<<grid, 128, smem, s_stream(be)>>>(s_attn_args(a));
    LAUNCH_CHECK();
}

static void s_attn_bwd(backend_t *be, const be_attn_bwd_t *g) {
    const be_attn_t *a = g->a;
    if (!a->probs || a->kv_map) {
        fprintf(stderr, "cuda backend: attn_bwd needs the forward's probs and no kv_map\n");
        abort();
    }
    if (a->Tq <= 0 || a->Tk <= 0 || a->B <= 0 || a->H <= 0)
        return;
    if (a->H > 65535 || a->B > 65535) {
        fprintf(stderr, "cuda backend: attention grid (%d, %d, %d) too large\n", a->Tq, a->H,
                a->B);
        abort();
    }
    size_t smem = s_attn_smem(be, a, 1);
    dim3 grid(a->Tq, a->H, a->B);
    k_attn_bwd<<<grid, 128, smem, s_stream(be)>>>(s_attn_args(a), g->dout, g->d_ld, g->d_bs,
                                                  g->dq, g->dk, g->dv);
    LAUNCH_CHECK();
}

/* ---- cross-entropy with label smoothing ---- */

/* One block per row: max, then sum of exponentials and of logits in double. */
__global__ void k_xent_fwd(float *loss, const float *logits, const int32_t *targets, int V,
                           float smooth, int32_t ignore) {
    __shared__ float shr[32];
    __shared__ double shd[32];
    int64_t r = blockIdx.x;
    int32_t y = targets[r];
    if (y == ignore || y < 0 || y >= V) {
        if (threadIdx.x == 0)
            loss[r] = 0;
        return;
    }
    const float *x = logits + r * V;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        mx = fmaxf(mx, x[j]);
    mx = s_block_max(mx, shr);
    double se = 0, sx = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        se += expf(x[j] - mx);
        sx += x[j];
    }
    se = s_block_sum(se, shd);
    sx = s_block_sum(sx, shd);
    if (threadIdx.x == 0) {
        double lse = mx + log(se);
        loss[r] = (float)((1.0 - smooth) * (lse - x[y]) + smooth * (lse - sx / V));
    }
}

/* dlogits = scale (softmax - smoothed one-hot); may alias logits: every thread reads x[j]
 * before it writes d[j] for the same j, and the target's extra term is added after a
 * barrier. */
__global__ void k_xent_bwd(float *d, const float *logits, const int32_t *targets, int V,
                           float smooth, int32_t ignore, float scale) {
    __shared__ float shr[32];
    __shared__ double shd[32];
    int64_t r = blockIdx.x;
    int32_t y = targets[r];
    float *dr = d + r * V;
    const float *x = logits + r * V;
    if (y == ignore || y < 0 || y >= V) {
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            dr[j] = 0;
        return;
    }
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        mx = fmaxf(mx, x[j]);
    mx = s_block_max(mx, shr);
    double se = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        se += expf(x[j] - mx);
    se = s_block_sum(se, shd);
    float inv = (float)(1.0 / se), u = smooth / V;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        dr[j] = scale * (expf(x[j] - mx) * inv - u);
    __syncthreads();
    if (threadIdx.x == 0)
        dr[y] -= scale * (1 - smooth);
}

static void s_xent_fwd(backend_t *be, real_t *loss, const real_t *logits,
                       const int32_t *targets, int N, int V, real_t smooth, int32_t ignore) {
    if (N <= 0 || V <= 0)
        return;
    k_xent_fwd<<<N, 256, 0, s_stream(be)>>>(loss, logits, targets, V, smooth, ignore);
    LAUNCH_CHECK();
}
static void s_xent_bwd(backend_t *be, real_t *dlogits, const real_t *logits,
                       const int32_t *targets, int N, int V, real_t smooth, int32_t ignore,
                       real_t scale) {
    if (N <= 0 || V <= 0)
        return;
    k_xent_bwd<<<N, 256, 0, s_stream(be)>>>(dlogits, logits, targets, V, smooth, ignore, scale);
    LAUNCH_CHECK();
}

/* ---- optimizer and vector ops ---- */

__global__ void k_adamw(float *w, const float *g, float *m, float *v, int64_t n, float decay,
                        float step, float bc2s, float b1, float b2, float a1, float a2,
                        float eps) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float wi = w[i] * decay;
        float mi = m[i] * b1 + a1 * gi;
        float vi = v[i] * b2 + a2 * gi * gi;
        float den = sqrtf(vi) / bc2s + eps;
        w[i] = wi - step * (mi / den);
        m[i] = mi;
        v[i] = vi;
    }
}

static void s_adamw(backend_t *be, real_t *w, const real_t *g, real_t *m, real_t *v, int64_t n,
                    real_t lr, real_t b1, real_t b2, real_t eps, real_t wd, int64_t t) {
    if (n <= 0)
        return;
    /* Scalars exactly as the CPU reference computes them (in double, then float). */
    double bc1 = 1.0 - pow((double)b1, (double)t), bc2 = 1.0 - pow((double)b2, (double)t);
    float decay = (float)(1.0 - (double)lr * (double)wd);
    float step = (float)((double)lr / bc1);
    float bc2s = (float)sqrt(bc2);
    float a1 = (float)(1.0 - (double)b1), a2 = (float)(1.0 - (double)b2);
    k_adamw<<<s_blocks(n), 256, 0, s_stream(be)>>>(w, g, m, v, n, decay, step, bc2s, b1, b2, a1,
                                                   a2, eps);
    LAUNCH_CHECK();
}

__global__ void k_sqnorm(double *out, const float *x, int64_t n) {
    __shared__ double sh[32];
    double s = 0;
    GRID_STRIDE(i, n) s += (double)x[i] * x[i];
    s = s_block_sum(s, sh);
    if (threadIdx.x == 0)
        atomicAdd(out, s);
}

static double s_sqnorm(backend_t *be, const real_t *x, int64_t n) {
    if (n <= 0)
        return 0;
    s_cuda_t *c = s_ctx(be);
    CUDA_CHECK(cudaMemsetAsync(c->d_sum, 0, sizeof(double), c->stream));
    unsigned blocks = s_blocks(n);
    if (blocks > 4096)
        blocks = 4096;
    k_sqnorm<<<blocks, 256, 0, c->stream>>>(c->d_sum, x, n);
    LAUNCH_CHECK();
    double h = 0;
    CUDA_CHECK(cudaMemcpyAsync(&h, c->d_sum, sizeof h, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return h;
}

__global__ void k_scale(float *x, int64_t n, float s) { GRID_STRIDE(i, n) x[i] *= s; }
__global__ void k_axpy(float *y, const float *x, int64_t n, float alpha) {
    GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx, int n,
                              int64_t cols) {
    GRID_STRIDE(t, (int64_t)n * cols) {
        int64_t i = t / cols, c = t % cols;
        dst[t] = src[(int64_t)idx[i] * cols + c];
    }
}

static void s_scale(backend_t *be, real_t *x, int64_t n, real_t s) {
    if (n <= 0)
        return;
    k_scale<<<s_blocks(n), 256, 0, s_stream(be)>>>(x, n, s);
    LAUNCH_CHECK();
}
static void s_axpy(backend_t *be, real_t *y, const real_t *x, int64_t n, real_t alpha) {
    if (n <= 0)
        return;
    k_axpy<<<s_blocks(n), 256, 0, s_stream(be)>>>(y, x, n, alpha);
    LAUNCH_CHECK();
}
static void s_gather_rows(backend_t *be, real_t *dst, const real_t *src, const int32_t *idx,
                          int n, int64_t cols) {
    if (n <= 0 || cols <= 0)
        return;
    k_gather_rows<<<s_blocks((int64_t)n * cols), 256, 0, s_stream(be)>>>(dst, src, idx, n, cols);
    LAUNCH_CHECK();
}

/* ---- set-up ---- */

static void s_destroy(backend_t *be) {
    s_cuda_t *c = s_ctx(be);
    cudaStreamSynchronize(c->stream);
    if (c->d_sum)
        cudaFree(c->d_sum);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    for (int i = 0; i < c->nlive; i++)   /* buffers the model did not free */
        cudaFree(c->live[i].p);
    free(c->live);
    free(c);
    free(be);
}

static backend_i s_cuda_i;

/* The table in C++: members set one by one (no designated initializers in C++17). */
static void s_table(void) {
    backend_i *t = &s_cuda_i;
    t->name = "cuda";
    t->alloc = s_alloc;
    t->free = s_free;
    t->upload = s_upload;
    t->download = s_download;
    t->copy = s_copy;
    t->zero = s_zero;
    t->synchronize = s_sync;
    t->gemm = s_gemm;
    t->gemm_batched = s_gemm_batched;
    t->bias_add = s_bias_add;
    t->bias_bwd = s_bias_bwd;
    t->layernorm_fwd = s_ln_fwd;
    t->layernorm_bwd = s_ln_bwd;
    t->gelu_fwd = s_gelu_fwd;
    t->gelu_bwd = s_gelu_bwd;
    t->embed_fwd = s_embed_fwd;
    t->embed_bwd = s_embed_bwd;
    t->attn_fwd = s_attn_fwd;
    t->attn_bwd = s_attn_bwd;
    t->xent_fwd = s_xent_fwd;
    t->xent_bwd = s_xent_bwd;
    t->adamw = s_adamw;
    t->sqnorm = s_sqnorm;
    t->scale = s_scale;
    t->axpy = s_axpy;
    t->gather_rows = s_gather_rows;
    t->destroy = s_destroy;
}

extern "C" int backend_cuda_devices(char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (err && errlen)
            snprintf(err, errlen, "no usable CUDA device: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0 && err && errlen)
        snprintf(err, errlen, "no CUDA device");
    return n;
}

extern "C" backend_t *backend_cuda_new(int device, backend_cuda_math_t math, char *err,
                                       size_t errlen) {
    int n = backend_cuda_devices(err, errlen);
    if (n <= 0)
        return NULL;
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "CUDA device %d does not exist (%d devices)", device, n);
        return NULL;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
        return NULL;
    }
    s_cuda_t *c = (s_cuda_t *)calloc(1, sizeof *c);
    backend_t *be = (backend_t *)calloc(1, sizeof *be);
    if (!c || !be) {
        free(c);
        free(be);
        snprintf(err, errlen, "out of host memory");
        return NULL;
    }
    c->device = device;
    c->math = math;
    be->ctx = c;
    be->threads = 1;
    s_table();
    be->i = &s_cuda_i;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc(&c->d_sum, sizeof(double))) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&c->max_smem, cudaDevAttrMaxSharedMemoryPerBlock,
                                    device)) != cudaSuccess) {
        snprintf(err, errlen, "CUDA set-up on device %d: %s", device, cudaGetErrorString(e));
        s_destroy(be);
        return NULL;
    }
    cublasStatus_t s;
    if ((s = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetMathMode(c->blas, math == BACKEND_CUDA_BF16 ? CUBLAS_DEFAULT_MATH
                                                                  : CUBLAS_PEDANTIC_MATH)) !=
            CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cuBLAS set-up: %s", cublasGetStatusString(s));
        s_destroy(be);
        return NULL;
    }
    return be;
}

extern "C" size_t backend_cuda_peak_bytes(backend_t *be) { return s_ctx(be)->peak; }
