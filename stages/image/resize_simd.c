/* resize_simd.c: see resize_simd.h.
 *
 * Three levels, picked once per context from what the CPU reports
 * (__builtin_cpu_supports), so one binary runs everywhere and uses the widest units it
 * finds: plain C; AVX2 (any x86-64 since 2013); AVX-512 with VNNI (Ice Lake,
 * Zen 4 and later). The vector functions carry target attributes instead of the whole
 * file being compiled with -mavx2, so nothing outside them can pick up an instruction
 * an older CPU lacks. */
#include "resize_simd.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define RS_X86 1
#include <immintrin.h>
#endif

#define RS_HALF (1 << (RS_PRECISION_BITS - 1))

/* Fixed point back to a byte, saturating like Pillow's clip8 (the sums start at 0.5 in
 * fixed point, so the shift rounds to nearest). */
static inline uint8_t s_clip8(int32_t v) {
    if (v >= (1 << RS_PRECISION_BITS << 8))
        return 255;
    if (v <= 0)
        return 0;
    return (uint8_t)(v >> RS_PRECISION_BITS);
}

/* ---------------------------------------------------------------------------------
 * Plain C. Two rows at a time: they share the weights, which halves the weight loads
 * and gives the CPU six independent sums per tap. */

static void s_horiz_c(const uint8_t *r0, const uint8_t *r1, uint8_t *o0, uint8_t *o1, int dw,
                      const rs_weights_t *wt) {
    for (int xx = 0; xx < dw; xx++) {
        int xmin = wt->bounds[xx * 2], n = wt->bounds[xx * 2 + 1];
        const int32_t *k = wt->kk + (size_t)xx * wt->ksize;
        const uint8_t *p0 = r0 + (size_t)xmin * 3, *p1 = r1 + (size_t)xmin * 3;
        int32_t a0 = RS_HALF, b0 = RS_HALF, c0 = RS_HALF, a1 = RS_HALF, b1 = RS_HALF,
                c1 = RS_HALF;
        for (int x = 0; x < n; x++) {
            int32_t kx = k[x];
            a0 += p0[3 * x] * kx;
            b0 += p0[3 * x + 1] * kx;
            c0 += p0[3 * x + 2] * kx;
            a1 += p1[3 * x] * kx;
            b1 += p1[3 * x + 1] * kx;
            c1 += p1[3 * x + 2] * kx;
        }
        /* o1 last: when it aliases o0 the values are the same anyway. */
        o0[3 * xx] = s_clip8(a0);
        o0[3 * xx + 1] = s_clip8(b0);
        o0[3 * xx + 2] = s_clip8(c0);
        o1[3 * xx] = s_clip8(a1);
        o1[3 * xx + 1] = s_clip8(b1);
        o1[3 * xx + 2] = s_clip8(c1);
    }
}

/* A block of output bytes at a time, all taps for the block, so the sums stay in
 * registers instead of a row of int32 going back and forth through memory. */
static void s_vert_c(const uint8_t *src, size_t stride, int n, const int32_t *k, size_t len,
                     uint8_t *dst) {
    enum { B = 64 };
    for (size_t i0 = 0; i0 < len; i0 += B) {
        size_t m = len - i0 < B ? len - i0 : B;
        int32_t acc[B];
        for (size_t i = 0; i < m; i++)
            acc[i] = RS_HALF;
        for (int y = 0; y < n; y++) {
            const uint8_t *in = src + (size_t)y * stride + i0;
            int32_t ky = k[y];
            for (size_t i = 0; i < m; i++)
                acc[i] += in[i] * ky;
        }
        for (size_t i = 0; i < m; i++)
            dst[i0 + i] = s_clip8(acc[i]);
    }
}

const rs_kernels_t rs_scalar = {RS_SCALAR, "scalar", s_horiz_c, s_vert_c};

#ifdef RS_X86

/* ---------------------------------------------------------------------------------
 * AVX2.
 *
 * Horizontal: one output pixel of two rows per register, row 0 in the low 128-bit lane
 * and row 1 in the high one. Each step takes two taps: 8 bytes from each row (pixels
 * x and x+1, interleaved RGB) are shuffled into 16-bit [R0 R1 G0 G1 B0 B1 0 0], and
 * pmaddwd against the pair of weights (k_x, k_x+1) repeated gives [R G B 0] partial
 * sums. The two rows share the weights, the interleaved channels need no
 * de-interleaving pass, and four output pixels are packed to bytes together. */

/* The body of the horizontal kernel, shared by the AVX2 and AVX-512 levels; MADD(acc,
 * d, w) is acc + pmaddwd(d, w), one vpdpwssd where VNNI is there. Four taps per step:
 * one 16-byte load per row covers pixels x..x+4, two shuffles make the pairs (x, x+1)
 * and (x+2, x+3). The weights are broadcast straight from memory (a load, not a
 * shuffle: the shuffle units are what limits this loop). The loads read up to 13
 * bytes past a row's last pixel. */
#define RS_HORIZ_BODY(MADD)                                                                  \
    const __m256i shuf_a = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, \
                                            -1, -1, 0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, \
                                            -1, -1, -1, -1);                                  \
    const __m256i shuf_b = _mm256_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1,   \
                                            -1, -1, -1, 6, -1, 9, -1, 7, -1, 10, -1, 8, -1,   \
                                            11, -1, -1, -1, -1, -1);                          \
    const __m256i pack3 = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1,    \
                                           -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14,    \
                                           -1, -1, -1, -1);                                   \
    const __m256i half = _mm256_set1_epi32(RS_HALF);                                          \
    const int np = wt->npairs;                                                                \
    for (int xx = 0; xx < dw; xx += 4) {                                                      \
        __m256i v[4];                                                                         \
        for (int q = 0; q < 4; q++) {                                                         \
            int x = xx + q < dw ? xx + q : dw - 1;                                            \
            int xmin = wt->bounds[x * 2], n = wt->bounds[x * 2 + 1];                          \
            const int32_t *kh = wt->kh + (size_t)x * np, *kl = wt->kl + (size_t)x * np;       \
            const uint8_t *p0 = r0 + (size_t)xmin * 3, *p1 = r1 + (size_t)xmin * 3;           \
            __m256i ah = _mm256_setzero_si256(), al = _mm256_setzero_si256();                 \
            for (int t = 0; t < n; t += 4, p0 += 12, p1 += 12) {                              \
                __m256i d = _mm256_inserti128_si256(                                          \
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),             \
                    _mm_loadu_si128((const __m128i *)p1), 1);                                 \
                __m256i da = _mm256_shuffle_epi8(d, shuf_a);                                  \
                const int32_t *h = kh + (t >> 1), *l = kl + (t >> 1);                         \
                ah = MADD(ah, da, _mm256_set1_epi32(h[0]));                                   \
                al = MADD(al, da, _mm256_set1_epi32(l[0]));                                   \
                if (t + 2 < n) { /* the second pair has a tap */                              \
                    __m256i db = _mm256_shuffle_epi8(d, shuf_b);                              \
                    ah = MADD(ah, db, _mm256_set1_epi32(h[1]));                               \
                    al = MADD(al, db, _mm256_set1_epi32(l[1]));                               \
                }                                                                             \
            }                                                                                 \
            __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(ah, 8), al), half); \
            v[q] = _mm256_srai_epi32(s, RS_PRECISION_BITS);                                   \
        }                                                                                     \
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(v[0], v[1]),                       \
                                        _mm256_packs_epi32(v[2], v[3]));                      \
        b = _mm256_shuffle_epi8(b, pack3);                                                    \
        __m128i b0 = _mm256_castsi256_si128(b), b1 = _mm256_extracti128_si256(b, 1);          \
        if (xx + 6 <= dw) {                                                                   \
            _mm_storeu_si128((__m128i *)(o0 + (size_t)xx * 3), b0);                           \
            _mm_storeu_si128((__m128i *)(o1 + (size_t)xx * 3), b1);                           \
        } else {                                                                              \
            uint8_t t0[16], t1[16];                                                           \
            size_t m = (size_t)(dw - xx < 4 ? dw - xx : 4) * 3;                               \
            _mm_storeu_si128((__m128i *)t0, b0);                                              \
            _mm_storeu_si128((__m128i *)t1, b1);                                              \
            memcpy(o0 + (size_t)xx * 3, t0, m);                                               \
            memcpy(o1 + (size_t)xx * 3, t1, m);                                               \
        }                                                                                     \
    }

#define RS_MADD_AVX2(acc, d, w) _mm256_add_epi32(acc, _mm256_madd_epi16(d, w))

__attribute__((target("avx2"))) static void s_horiz_avx2(const uint8_t *r0, const uint8_t *r1,
                                                         uint8_t *o0, uint8_t *o1, int dw,
                                                         const rs_weights_t *wt) {
    RS_HORIZ_BODY(RS_MADD_AVX2)
}

/* Vertical: 32 output bytes per step, each widened to 32 bits and multiplied by the
 * row's whole 22-bit weight (pmulld): the rows are contiguous, so every lane is used. */
__attribute__((target("avx2"))) static void s_vert_avx2(const uint8_t *src, size_t stride,
                                                        int n, const int32_t *k, size_t len,
                                                        uint8_t *dst) {
    const __m256i half = _mm256_set1_epi32(RS_HALF);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m256i a0 = half, a1 = half, a2 = half, a3 = half;
        const uint8_t *p = src + i;
        for (int y = 0; y < n; y++, p += stride) {
            __m256i ky = _mm256_set1_epi32(k[y]);
            a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)), ky));
            a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))), ky));
            a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16))), ky));
            a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 24))), ky));
        }
        a0 = _mm256_srai_epi32(a0, RS_PRECISION_BITS);
        a1 = _mm256_srai_epi32(a1, RS_PRECISION_BITS);
        a2 = _mm256_srai_epi32(a2, RS_PRECISION_BITS);
        a3 = _mm256_srai_epi32(a3, RS_PRECISION_BITS);
        /* The packs work per 128-bit lane: the dwords come out as 0 2 4 6 1 3 5 7 (in
         * 4-byte groups), which one cross-lane permute puts back in order. */
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
        b = _mm256_permutevar8x32_epi32(b, order);
        _mm256_storeu_si256((__m256i *)(dst + i), b);
    }
    if (i < len)
        s_vert_c(src + i, stride, n, k, len - i, dst + i);
}

static const rs_kernels_t s_avx2 = {RS_AVX2, "avx2", s_horiz_avx2, s_vert_avx2};

/* ---------------------------------------------------------------------------------
 * AVX-512 (BW, VL, VNNI).
 *
 * Horizontal: the AVX2 kernel with vpdpwssd (multiply, pair-add and accumulate in one
 * instruction) on 256-bit registers. A 512-bit version (eight taps of a row per
 * register, masked loads, vpermb, a four-pixel reduction) measured slower on Zen 4
 * than this one (0.89 vs 0.45 ms for 640x480 -> 384x480), so the wide registers are used
 * only in the vertical pass. */

#define RS_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512vnni"
#define RS_MADD_VNNI(acc, d, w) _mm256_dpwssd_epi32(acc, d, w)

__attribute__((target(RS_AVX512_TARGET))) static void
s_horiz_avx512(const uint8_t *r0, const uint8_t *r1, uint8_t *o0, uint8_t *o1, int dw,
               const rs_weights_t *wt) {
    RS_HORIZ_BODY(RS_MADD_VNNI)
}

/* Vertical: as the AVX2 one, 64 output bytes per step in 16-lane registers. */
__attribute__((target(RS_AVX512_TARGET))) static void
s_vert_avx512(const uint8_t *src, size_t stride, int n, const int32_t *k, size_t len,
              uint8_t *dst) {
    const __m512i half = _mm512_set1_epi32(RS_HALF), zero = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= len; i += 64) {
        __m512i a0 = half, a1 = half, a2 = half, a3 = half;
        const uint8_t *p = src + i;
        for (int y = 0; y < n; y++, p += stride) {
            __m512i ky = _mm512_set1_epi32(k[y]);
            a0 = _mm512_add_epi32(a0, _mm512_mullo_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)), ky));
            a1 = _mm512_add_epi32(a1, _mm512_mullo_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))), ky));
            a2 = _mm512_add_epi32(a2, _mm512_mullo_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 32))), ky));
            a3 = _mm512_add_epi32(a3, _mm512_mullo_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 48))), ky));
        }
        __m512i *acc[4] = {&a0, &a1, &a2, &a3};
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_max_epi32(_mm512_srai_epi32(*acc[j], RS_PRECISION_BITS), zero);
            _mm_storeu_si128((__m128i *)(dst + i + 16 * j), _mm512_cvtusepi32_epi8(v));
        }
    }
    if (i < len)
        s_vert_c(src + i, stride, n, k, len - i, dst + i);
}

static const rs_kernels_t s_avx512 = {RS_AVX512, "avx512", s_horiz_avx512, s_vert_avx512};

#endif /* RS_X86 */

const rs_kernels_t *rs_kernels(rs_level_t max) {
#ifdef RS_X86
    __builtin_cpu_init();
    if (max >= RS_AVX512 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
        return &s_avx512;
    if (max >= RS_AVX2 && __builtin_cpu_supports("avx2"))
        return &s_avx2;
#else
    (void)max;
#endif
    return &rs_scalar;
}
