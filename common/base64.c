/* base64.c: see base64.h.
 *
 * The rules, and why: OFA's released TSV files use the URL-safe alphabet without
 * padding, most other tools write the standard one with padding, and a dataset built by
 * concatenating both kinds of rows is common; accepting both everywhere costs nothing.
 * Whitespace is refused rather than skipped: a TSV cell cannot wrap, so a space or a
 * newline inside one is the sign of a broken row (a missing tab, a pasted value), and
 * skipping it would turn that into an image of the wrong bytes far downstream. Trailing
 * bits of a last partial group are ignored, as every common decoder does. */
#include "base64.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* The value of each byte in either alphabet plus one, 0 for any other byte. A table:
 * decoding is the source's inner loop over every image of a TSV file. */
static const uint8_t s_tab[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,
    ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
    ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
    ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
    ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
    ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
    ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63,
    ['-'] = 63, ['/'] = 64, ['_'] = 64,
};

/* The error for the first byte of s[0..n) outside both alphabets. */
static void s_bad_char(const char *s, size_t n, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (s_tab[c])
            continue;
        if (c > 0x20 && c < 0x7f)
            util_err(err, errlen, "base64: bad character '%c' at offset %zu", c, i);
        else
            util_err(err, errlen, "base64: bad byte 0x%02x at offset %zu", c, i);
        return;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define B64_HAVE_AVX2 1

/* 32 characters to 24 bytes per step with AVX2: each character's value by range tests
 * of both alphabets at once, then the 6-bit values packed with two multiply-adds and one
 * byte shuffle. Stops before a block holding any other byte (the scalar loop after it
 * names that byte), and before the last 32 characters of n. Writes up to 8 bytes past
 * the 24 of the last block (the caller leaves room). Returns the characters consumed. */
__attribute__((target("avx2"))) static size_t s_decode_avx2(const unsigned char *in, size_t n,
                                                           uint8_t *out) {
    const __m256i A = _mm256_set1_epi8('A' - 1), Z = _mm256_set1_epi8('Z' + 1);
    const __m256i a = _mm256_set1_epi8('a' - 1), z = _mm256_set1_epi8('z' + 1);
    const __m256i d0 = _mm256_set1_epi8('0' - 1), d9 = _mm256_set1_epi8('9' + 1);
    const __m256i plus = _mm256_set1_epi8('+'), minus = _mm256_set1_epi8('-');
    const __m256i slash = _mm256_set1_epi8('/'), under = _mm256_set1_epi8('_');
    const __m256i offU = _mm256_set1_epi8(-'A'), offL = _mm256_set1_epi8(26 - 'a');
    const __m256i offD = _mm256_set1_epi8(52 - '0');
    const __m256i v62 = _mm256_set1_epi8(62), v63 = _mm256_set1_epi8(63);
    const __m256i pairs = _mm256_set1_epi32(0x01400140), quads = _mm256_set1_epi32(0x00011000);
    const __m256i shuf = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
                                          2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i perm = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= n; i += 32, out += 24) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(const void *)(in + i));
        /* Signed byte compares: bytes of 0x80 and up are negative and match no range. */
        __m256i isU = _mm256_and_si256(_mm256_cmpgt_epi8(c, A), _mm256_cmpgt_epi8(Z, c));
        __m256i isL = _mm256_and_si256(_mm256_cmpgt_epi8(c, a), _mm256_cmpgt_epi8(z, c));
        __m256i isD = _mm256_and_si256(_mm256_cmpgt_epi8(c, d0), _mm256_cmpgt_epi8(d9, c));
        __m256i is62 = _mm256_or_si256(_mm256_cmpeq_epi8(c, plus), _mm256_cmpeq_epi8(c, minus));
        __m256i is63 = _mm256_or_si256(_mm256_cmpeq_epi8(c, slash), _mm256_cmpeq_epi8(c, under));
        __m256i ok = _mm256_or_si256(_mm256_or_si256(isU, isL),
                                     _mm256_or_si256(isD, _mm256_or_si256(is62, is63)));
        if ((unsigned)_mm256_movemask_epi8(ok) != 0xffffffffu)
            break;
        __m256i v = _mm256_and_si256(isU, _mm256_add_epi8(c, offU));
        v = _mm256_or_si256(v, _mm256_and_si256(isL, _mm256_add_epi8(c, offL)));
        v = _mm256_or_si256(v, _mm256_and_si256(isD, _mm256_add_epi8(c, offD)));
        v = _mm256_or_si256(v, _mm256_and_si256(is62, v62));
        v = _mm256_or_si256(v, _mm256_and_si256(is63, v63));
        /* a b c d (6 bits each) -> a*64+b, c*64+d -> (a*64+b)*4096 + c*64+d: 24 bits a lane,
         * whose bytes 2, 1, 0 are the output's. */
        __m256i w = _mm256_madd_epi16(_mm256_maddubs_epi16(v, pairs), quads);
        w = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(w, shuf), perm);
        _mm256_storeu_si256((__m256i *)(void *)out, w);
    }
    return i;
}
#endif

uint8_t *base64_decode(const char *s, size_t len, size_t *outlen, char *err, size_t errlen) {
    /* Padding: up to two '=' at the very end only; anywhere else '=' is a bad character. */
    size_t n = len;
    int pad = 0;
    while (n > 0 && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    /* A bad character is named before a bad length (a cell with junk in it is usually
     * both), so the length checks wait until the characters have been read. */
    const unsigned char *u = (const unsigned char *)s;
    uint8_t *out = util_malloc(n / 4 * 3 + 3 + 8);   /* + 8: the vector loop's last store */
    size_t o = 0, i = 0;
#ifdef B64_HAVE_AVX2
    static int have_avx2 = -1;
    if (have_avx2 < 0)
        have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (have_avx2 && n >= 32) {
        i = s_decode_avx2(u, n, out);
        o = i / 4 * 3;
    }
#endif
    /* Whole groups of four characters: three bytes each, one validity test a group. */
    for (; i + 4 <= n; i += 4) {
        uint32_t a = s_tab[u[i]], b = s_tab[u[i + 1]], c = s_tab[u[i + 2]], d = s_tab[u[i + 3]];
        if (!a || !b || !c || !d) {
            s_bad_char(s, n, err, errlen);
            free(out);
            return NULL;
        }
        uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        out[o] = (uint8_t)(v >> 16);
        out[o + 1] = (uint8_t)(v >> 8);
        out[o + 2] = (uint8_t)v;
        o += 3;
    }
    /* The last partial group: 2 characters give one byte, 3 give two; its trailing bits
     * are ignored. */
    size_t rest = n - i;
    for (size_t k = i; k < n; k++)
        if (!s_tab[u[k]]) {
            s_bad_char(s, n, err, errlen);
            free(out);
            return NULL;
        }
    if (rest == 1) {
        util_err(err, errlen, "base64: %zu characters cannot be a whole number of bytes", n);
        free(out);
        return NULL;
    }
    if (pad && (n + (size_t)pad) % 4 != 0) {
        util_err(err, errlen, "base64: padding at offset %zu does not end a 4-character group",
                 n);
        free(out);
        return NULL;
    }
    if (rest >= 2) {
        uint32_t v = (uint32_t)(s_tab[u[i]] - 1) << 18 | (uint32_t)(s_tab[u[i + 1]] - 1) << 12;
        if (rest == 3)
            v |= (uint32_t)(s_tab[u[i + 2]] - 1) << 6;
        out[o++] = (uint8_t)(v >> 16);
        if (rest == 3)
            out[o++] = (uint8_t)(v >> 8);
    }
    *outlen = o;
    return out;
}

/* Standard alphabet with padding: the form every other tool reads. */
char *base64_encode(const uint8_t *data, size_t len) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = util_malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = 0;
    return out;
}
