/* resize_simd.h: the inner loops of imgproc's bicubic resampler (internal to ofaimg).
 *
 * imgproc.c builds the weight tables and walks the rows; the kernels here do the sums.
 * Every kernel computes exactly what Pillow's ImagingResampleHorizontal/Vertical_8bpc
 * compute: products of 8-bit pixels with 22-bit fixed-point weights, summed in 32-bit
 * integers from a start of 0.5, shifted down and clipped. Integer sums do not depend on
 * the order of the terms, so a vector kernel agrees with the scalar one (and with PIL)
 * to the last bit; tests/test_imgproc.c checks that for every kernel the CPU can run.
 *
 * The vector kernels use 16-bit multiplies (pmaddwd), which cannot hold a 22-bit weight:
 * each weight k is split as k = kh * 256 + kl with 0 <= kl < 256, both halves are
 * summed separately and recombined as (sum_h << 8) + sum_l, which is the same integer. */
#ifndef OFA_RESIZE_SIMD_H
#define OFA_RESIZE_SIMD_H

#include <stddef.h>
#include <stdint.h>

#define RS_PRECISION_BITS (32 - 8 - 2)

/* One axis of a resize: for each output index, the first input index, the number of
 * taps and ksize fixed-point weights; plus the split weights the vector kernels read. */
typedef struct {
    int in_size, out_size;   /* the key; 0 = empty slot */
    int ksize;               /* taps per output, padded (zero weights past count) */
    int npairs;              /* (ksize + 1) / 2, rounded up to a multiple of 4 */
    int *bounds;             /* (out_size, 2): xmin, count */
    int32_t *kk;             /* (out_size, ksize) */
    int32_t *kh, *kl;        /* (out_size, npairs): two int16 per int32, taps 2j | 2j+1 */
    int split_ok;            /* every kh fits in int16 (always, for bicubic weights) */
    uint64_t last_use;
} rs_weights_t;

typedef enum { RS_SCALAR = 0, RS_AVX2, RS_AVX512 } rs_level_t;

/* One implementation of the two passes.
 * horiz: rows r0 and r1 (sw pixels of RGB each) resampled into o0 and o1 (dw pixels).
 *   r1 may equal r0 and o1 o0 (one row). The rows must stay readable 16 bytes past
 *   their last pixel (the caller copies the last row of a buffer to padded scratch)
 *   and, for the vector kernels, be at least 32 bytes long.
 * vert: one output row of len bytes from n input rows src, src + stride, ..., each
 *   multiplied by k[y]. */
typedef struct {
    rs_level_t level;
    const char *name;
    void (*horiz)(const uint8_t *r0, const uint8_t *r1, uint8_t *o0, uint8_t *o1, int dw,
                  const rs_weights_t *wt);
    void (*vert)(const uint8_t *src, size_t stride, int n, const int32_t *k, size_t len,
                 uint8_t *dst);
} rs_kernels_t;

/* The best kernels this CPU runs, at most at level max (RS_AVX512 for the best). */
const rs_kernels_t *rs_kernels(rs_level_t max);

/* The plain C kernels (the reference the vector ones are tested against). */
extern const rs_kernels_t rs_scalar;

#endif
