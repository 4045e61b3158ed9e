/* backend.h: the compute backend of the model as a table of function pointers, the way
 * ggml's backends fill ggml_backend_i. The model (model.c) calls only this table, so the
 * CPU reference (model/cpu/) and a CUDA backend are interchangeable behind it.
 *
 * Memory: every tensor pointer (real_t, i.e. float; int32_t) passed to an op is *backend memory* returned by
 * alloc (host memory on the CPU, device memory on CUDA). upload / download move bytes
 * between host and backend memory. All ops are asynchronous in principle: download and
 * synchronize are the points where the host may look at results.
 *
 * Layouts are row-major. Shapes are given in comments as (rows, cols); N is a number of
 * token rows (B*T flattened), D the model width, V the vocabulary, H heads, hd = D/H.
 *
 * Accumulation: every backward op *adds* into its gradient outputs (dx += ..., dw += ...)
 * so that the residual stream and shared weights (the tied embedding) sum their
 * contributions without extra buffers; the caller zeroes gradients once per step.
 *
 * Precision: the CPU backend computes in fp32 with the same definitions as PyTorch
 * (LayerNorm eps inside the sqrt, exact erf GELU, label smoothing as in
 * torch.nn.functional.cross_entropy, AdamW as torch.optim.AdamW). Reductions that feed
 * the loss and the gradient norm are accumulated in double. */
#ifndef OFA_BACKEND_H
#define OFA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "real.h"

typedef struct backend_t backend_t;

/* One attention call: softmax(q k^T * scale + mask) v per (batch, head).
 * Heads are column blocks of width hd inside a row of q/k/v (head h = cols [h*hd, (h+1)*hd)),
 * so q may point into a fused QKV buffer: each tensor has its own row stride (ld, in
 * floats) and batch stride (bs, in floats). Mask: key j of batch b is masked when
 * key_len != NULL and j >= key_len[b]; with causal, query i (absolute position
 * q_pos0 + i) sees keys j <= q_pos0 + i only. A query row whose keys are all masked gets
 * a zero output (PyTorch would give NaN; the loss never looks at such rows). */
typedef struct {
    int B, H, Tq, Tk, hd;
    real_t scale;                 /* usually 1/sqrt(hd) */
    const real_t *q; int64_t q_ld, q_bs;   /* (B, Tq, >= H*hd) */
    const real_t *k; int64_t k_ld, k_bs;   /* (B, Tk, >= H*hd) */
    const real_t *v; int64_t v_ld, v_bs;   /* (B, Tk, >= H*hd) */
    real_t *out;     int64_t o_ld, o_bs;   /* (B, Tq, >= H*hd) written (not accumulated) */
    const int32_t *key_len;      /* (B) backend memory, or NULL: no padding mask */
    int causal;
    int q_pos0;                  /* absolute position of query 0 (decode steps) */
    real_t *probs;                /* (B, H, Tq, Tk) softmax saved for backward, or NULL */
    const int32_t *kv_map;       /* (B) backend memory, or NULL: query batch b attends to the
                                    keys/values (and key_len) of batch kv_map[b] instead of b
                                    (decoder rows sharing one encoded source; forward only) */
} be_attn_t;

/* Backward of one attention call: same geometry as the forward (a, with a->probs filled
 * by it). dout (B, Tq, H*hd) with stride d_ld/d_bs; dq/dk/dv use the strides of q/k/v
 * in `a` and are accumulated into. */
typedef struct {
    const be_attn_t *a;
    const real_t *dout; int64_t d_ld, d_bs;
    real_t *dq, *dk, *dv;
} be_attn_bwd_t;

typedef struct {
    const char *name;    /* "cpu", "cuda" */

    /* Memory. alloc returns zeroed backend memory or NULL. */
    void *(*alloc)(backend_t *be, size_t bytes);
    void (*free)(backend_t *be, void *p);
    void (*upload)(backend_t *be, void *dst, const void *src, size_t bytes);
    void (*download)(backend_t *be, void *dst, const void *src, size_t bytes);
    void (*copy)(backend_t *be, void *dst, const void *src, size_t bytes);
    void (*zero)(backend_t *be, void *p, size_t bytes);
    void (*synchronize)(backend_t *be);

    /* C = alpha * op(A) op(B) + beta * C; op(A) (M,K), op(B) (K,N), C (M,N), row-major,
     * with leading dimensions lda/ldb/ldc in floats (cblas_sgemm's row-major meaning). */
    void (*gemm)(backend_t *be, int transA, int transB, int M, int N, int K, real_t alpha,
                 const real_t *A, int lda, const real_t *Bm, int ldb, real_t beta,
                 real_t *C, int ldc);
    /* `batch` independent gemms, matrix i at A + i*sA, Bm + i*sB, C + i*sC. */
    void (*gemm_batched)(backend_t *be, int transA, int transB, int M, int N, int K,
                         real_t alpha, const real_t *A, int lda, int64_t sA,
                         const real_t *Bm, int ldb, int64_t sB, real_t beta, real_t *C,
                         int ldc, int64_t sC, int batch);
    /* y (N, O) += b (O) broadcast over rows. */
    void (*bias_add)(backend_t *be, real_t *y, const real_t *b, int N, int O);
    /* db (O) += sum over rows of dy (N, O). */
    void (*bias_bwd)(backend_t *be, real_t *db, const real_t *dy, int N, int O);

    /* LayerNorm over the last dim, eps inside the sqrt (PyTorch). out (N,D);
     * mean, rstd (N) saved for backward. */
    void (*layernorm_fwd)(backend_t *be, real_t *out, real_t *mean, real_t *rstd,
                          const real_t *x, const real_t *w, const real_t *b, int N, int D,
                          real_t eps);
    /* dx (N,D) += ; dw, db (D) += . */
    void (*layernorm_bwd)(backend_t *be, real_t *dx, real_t *dw, real_t *db, const real_t *dout,
                          const real_t *x, const real_t *mean, const real_t *rstd,
                          const real_t *w, int N, int D);

    /* Exact GELU: y = x/2 (1 + erf(x/sqrt 2)). out may alias x. */
    void (*gelu_fwd)(backend_t *be, real_t *out, const real_t *x, int64_t n);
    /* dx = dout * gelu'(x) (written, not accumulated); dx may alias dout. */
    void (*gelu_bwd)(backend_t *be, real_t *dx, const real_t *x, const real_t *dout, int64_t n);

    /* out[i] (+)= table[ids[i]] for rows with ids[i] >= 0; rows with ids[i] < 0 are left
     * as they are (accumulate) or zeroed (!accumulate). ids (N) backend memory. */
    void (*embed_fwd)(backend_t *be, real_t *out, const real_t *table, const int32_t *ids,
                      int N, int D, int accumulate);
    /* dtable[ids[i]] += dout[i] for ids[i] >= 0. */
    void (*embed_bwd)(backend_t *be, real_t *dtable, const real_t *dout, const int32_t *ids,
                      int N, int D);

    void (*attn_fwd)(backend_t *be, const be_attn_t *a);
    void (*attn_bwd)(backend_t *be, const be_attn_bwd_t *g);

    /* Softmax cross-entropy with label smoothing `smooth` (PyTorch's definition:
     * (1-s) * nll + s * mean_j(-log p_j)) of logits (N,V) against targets (N). Rows whose
     * target equals ignore_id get loss 0. loss (N) per row (backend memory). */
    void (*xent_fwd)(backend_t *be, real_t *loss, const real_t *logits, const int32_t *targets,
                     int N, int V, real_t smooth, int32_t ignore_id);
    /* dlogits (N,V) = scale * (softmax(logits) - smoothed one-hot), 0 on ignored rows;
     * written, and dlogits may alias logits (the logits are not needed afterwards). */
    void (*xent_bwd)(backend_t *be, real_t *dlogits, const real_t *logits,
                     const int32_t *targets, int N, int V, real_t smooth, int32_t ignore_id,
                     real_t scale);

    /* torch.optim.AdamW, single-tensor path: w *= 1 - lr*wd; m = b1 m + (1-b1) g;
     * v = b2 v + (1-b2) g^2; w -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), bc_i = 1 - b_i^t.
     * t >= 1 is the step count after this step. */
    void (*adamw)(backend_t *be, real_t *w, const real_t *g, real_t *m, real_t *v, int64_t n,
                  real_t lr, real_t b1, real_t b2, real_t eps, real_t wd, int64_t t);
    /* sum x^2 in double (synchronous: returns the value to the host). */
    double (*sqnorm)(backend_t *be, const real_t *x, int64_t n);
    void (*scale)(backend_t *be, real_t *x, int64_t n, real_t s);
    /* y += alpha * x */
    void (*axpy)(backend_t *be, real_t *y, const real_t *x, int64_t n, real_t alpha);
    /* Row gather: dst row i = src row idx[i] (rows of `cols` floats, idx backend memory);
     * used to reorder KV-cache rows for beam search. dst must not alias src. */
    void (*gather_rows)(backend_t *be, real_t *dst, const real_t *src, const int32_t *idx,
                        int n, int64_t cols);

    void (*destroy)(backend_t *be);
} backend_i;

/* A backend instance: the table plus the backend's own state. */
struct backend_t {
    const backend_i *i;
    void *ctx;
    int threads;
};

/* The CPU reference backend (model/cpu/). threads: OpenBLAS threads and the worker
 * threads of the attention (<= 0: 1). NULL on failure. Caller owns; destroy with
 * backend_destroy. */
backend_t *backend_cpu_new(int threads);
void backend_destroy(backend_t **self_p);

#endif
