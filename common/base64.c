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

#include <string.h>

/* The value of each byte in either alphabet, -1 for any other byte. A table: decoding
 * is the source's inner loop over every image of a TSV file. */
static const int8_t s_tab[256] = {
    ['A'] = 0,  ['B'] = 1,  ['C'] = 2,  ['D'] = 3,  ['E'] = 4,  ['F'] = 5,  ['G'] = 6,
    ['H'] = 7,  ['I'] = 8,  ['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13,
    ['O'] = 14, ['P'] = 15, ['Q'] = 16, ['R'] = 17, ['S'] = 18, ['T'] = 19, ['U'] = 20,
    ['V'] = 21, ['W'] = 22, ['X'] = 23, ['Y'] = 24, ['Z'] = 25, ['a'] = 26, ['b'] = 27,
    ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31, ['g'] = 32, ['h'] = 33, ['i'] = 34,
    ['j'] = 35, ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39, ['o'] = 40, ['p'] = 41,
    ['q'] = 42, ['r'] = 43, ['s'] = 44, ['t'] = 45, ['u'] = 46, ['v'] = 47, ['w'] = 48,
    ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53, ['2'] = 54, ['3'] = 55,
    ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['+'] = 62,
    ['-'] = 62, ['/'] = 63, ['_'] = 63,
};

/* Entries not listed above are 0, which is also 'A': 'A' is told apart by s_val. */
static inline int s_val(unsigned char c) {
    return s_tab[c] || c == 'A' ? s_tab[c] : -1;
}

uint8_t *base64_decode(const char *s, size_t len, size_t *outlen, char *err, size_t errlen) {
    /* Padding: up to two '=' at the very end only; anywhere else '=' is a bad character. */
    size_t n = len;
    int pad = 0;
    while (n > 0 && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    /* Characters first, so that the error names the first bad one even when the
     * length is wrong too (a cell with junk in it is usually both). */
    for (size_t i = 0; i < n; i++) {
        if (s_val((unsigned char)s[i]) >= 0)
            continue;
        unsigned char c = (unsigned char)s[i];
        if (c > 0x20 && c < 0x7f)
            util_err(err, errlen, "base64: bad character '%c' at offset %zu", c, i);
        else
            util_err(err, errlen, "base64: bad byte 0x%02x at offset %zu", c, i);
        return NULL;
    }
    if (n % 4 == 1) {
        util_err(err, errlen, "base64: %zu characters cannot be a whole number of bytes", n);
        return NULL;
    }
    if (pad && (n + (size_t)pad) % 4 != 0) {
        util_err(err, errlen, "base64: padding at offset %zu does not end a 4-character group",
                 n);
        return NULL;
    }
    uint8_t *out = util_malloc(n / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 6) | (uint32_t)s_val((unsigned char)s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
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
