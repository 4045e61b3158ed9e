/* backend_cuda.h: the CUDA backend of the model (backend.h's table on one GPU).
 *
 * Matrix products go through cuBLAS; every other op is a kernel of backend_cuda.cu
 * written after the CPU reference's definition (model/cpu/backend_cpu.c). All work runs
 * on one stream of the backend; upload and download wait for it, so host buffers can be
 * reused as soon as they return (the model reuses its staging arrays).
 *
 * Math modes:
 *   BACKEND_CUDA_FP32  matrix products in full fp32 (no TF32): parity with the CPU
 *                      reference at a tight tolerance (test_cuda_parity).
 *   BACKEND_CUDA_BF16  matrix products with bf16 inputs on the tensor cores and fp32
 *                      accumulation (cuBLAS's CUBLAS_COMPUTE_32F_FAST_16BF); weights,
 *                      gradients, optimizer moments and every other op stay fp32
 *                      (mixed precision with fp32 master weights).
 *
 * Errors: a failed CUDA or cuBLAS call inside an op is a broken invariant of the
 * process (out of device memory, a lost device): it prints the call, function, file and
 * line and aborts. backend_cuda_new returns NULL with the reason where no GPU is usable.
 */
#ifndef OFA_BACKEND_CUDA_H
#define OFA_BACKEND_CUDA_H

#include <stddef.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BACKEND_CUDA_FP32 = 0, BACKEND_CUDA_BF16 = 1 } backend_cuda_math_t;

/* Number of usable CUDA devices (0 when there is no driver or no GPU; err says why). */
int backend_cuda_devices(char *err, size_t errlen);

/* The backend on GPU `device` in math mode `math`. NULL + err when the device cannot be
 * used. The caller owns the result; destroy with backend_destroy. */
backend_t *backend_cuda_new(int device, backend_cuda_math_t math, char *err, size_t errlen);

/* Peak device memory allocated through this backend, in bytes. */
size_t backend_cuda_peak_bytes(backend_t *be);

#ifdef __cplusplus
}
#endif

#endif
