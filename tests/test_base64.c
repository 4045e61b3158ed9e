/* test_base64.c: common/base64.h: both alphabets, optional padding, errors naming the
 * offset of the first bad character, and encode/decode round trips. */
#include "base64.h"
#include "util.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static char err[256];

/* Decode s and compare with want (wantlen bytes). */
static void dec_ok(const char *s, const void *want, size_t wantlen) {
    size_t n = 12345;
    err[0] = 0;
    uint8_t *b = base64_decode(s, strlen(s), &n, err, sizeof err);
    cr_assert_not_null(b, "\"%s\" should decode, got: %s", s, err);
    cr_assert_eq(n, wantlen, "\"%s\": %zu bytes, want %zu", s, n, wantlen);
    cr_assert(memcmp(b, want, wantlen) == 0, "\"%s\": bytes differ", s);
    free(b);
}

/* Decoding s fails with an error containing want. */
static void dec_bad(const char *s, size_t len, const char *want) {
    size_t n = 0;
    err[0] = 0;
    uint8_t *b = base64_decode(s, len, &n, err, sizeof err);
    cr_assert_null(b, "\"%s\" should not decode", s);
    cr_assert(strstr(err, want), "want \"%s\" in \"%s\"", want, err);
}

Test(base64, standard_alphabet_with_and_without_padding) {
    dec_ok("aGVsbG8=", "hello", 5);
    dec_ok("aGVsbG8", "hello", 5);
    dec_ok("aGVsbA==", "hell", 4);
    dec_ok("aGVsbA", "hell", 4);
    dec_ok("aGVs", "hel", 3);
    dec_ok("", "", 0);
}

Test(base64, url_safe_alphabet) {
    static const uint8_t v[3] = {0xfb, 0xff, 0xbf};
    dec_ok("+/+/", v, 3);     /* standard */
    dec_ok("-_-_", v, 3);     /* URL-safe, as OFA's TSV files */
    dec_ok("-/+_", v, 3);     /* one value mixing both: accepted, a character per value */
    static const uint8_t w[2] = {0xfb, 0xff};
    dec_ok("-_8=", w, 2);
    dec_ok("-_8", w, 2);
}

Test(base64, errors_name_the_offset) {
    dec_bad("aGVs*G8=", 8, "'*' at offset 4");
    dec_bad("aGVsbG8!", 8, "'!' at offset 7");
    dec_bad("aGVs bG8", 8, "byte 0x20 at offset 4");     /* no whitespace inside a value */
    dec_bad("aGVs\nbG8=", 9, "byte 0x0a at offset 4");
    dec_bad("aGVs\xff" "bG8", 8, "byte 0xff at offset 4");
    dec_bad("a=bc", 4, "'=' at offset 1");        /* padding only at the very end */
    dec_bad("aGVsb", 5, "cannot be a whole number of bytes");
    dec_bad("aGVsbG8==", 9, "padding");
    dec_bad("ab=", 3, "padding");
    dec_bad("abc===", 6, "'=' at offset 3");
    /* An embedded NUL is a bad byte, not the end of the value. */
    dec_bad("aGVs\0bG8", 8, "byte 0x00 at offset 4");
}

Test(base64, encode_known_values) {
    char *e = base64_encode((const uint8_t *)"hello", 5);
    cr_assert_str_eq(e, "aGVsbG8=");
    free(e);
    e = base64_encode((const uint8_t *)"", 0);
    cr_assert_str_eq(e, "");
    free(e);
    static const uint8_t v[2] = {0xfb, 0xff};
    e = base64_encode(v, 2);
    cr_assert_str_eq(e, "+/8=");
    free(e);
}

/* Every length 0..200 of random bytes: encode, decode; also in the URL-safe form
 * without padding, as OFA writes it. */
Test(base64, round_trips) {
    util_rng_t rng = {7};
    uint8_t data[200];
    for (size_t len = 0; len <= sizeof data; len++) {
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)util_rng_next(&rng);
        char *e = base64_encode(data, len);
        cr_assert_eq(strlen(e), (len + 2) / 3 * 4);
        dec_ok(e, data, len);
        for (char *c = e; *c; c++)
            *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
        char *eq = strchr(e, '=');
        if (eq)
            *eq = 0;
        dec_ok(e, data, len);
        free(e);
    }
}

/* Random garbage: a buffer or an error, never a crash or a read past len. */
Test(base64, garbage_never_crashes) {
    util_rng_t rng = {11};
    static const char alphabet[] = "AZaz09+/-_= \n\t*\x80";
    for (int it = 0; it < 20000; it++) {
        size_t len = util_rng_next(&rng) % 24;
        char *s = util_malloc(len ? len : 1);   /* exactly len bytes: no NUL after it */
        for (size_t i = 0; i < len; i++)
            s[i] = alphabet[util_rng_next(&rng) % (sizeof alphabet - 1)];
        size_t n = 0;
        err[0] = 0;
        uint8_t *b = base64_decode(s, len, &n, err, sizeof err);
        if (b) {
            cr_assert_leq(n, len * 3 / 4);
            free(b);
        } else {
            cr_assert(strstr(err, "base64"), "%s", err);
        }
        free(s);
    }
}

/* The decoder's vector path (32 characters a step, where the CPU has AVX2) against a
 * plain bit-by-bit decoder written here: the same bytes for every valid input of every
 * length, both alphabets mixed, and the same error offset for a bad byte anywhere (in a
 * vector block, in the scalar tail, a byte of 0x80 and up). */
static size_t ref_decode(const char *s, size_t n, uint8_t *out, long *bad) {
    static const char *al[2] = {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"};
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    *bad = -1;
    for (size_t i = 0; i < n; i++) {
        const char *p = s[i] ? strchr(al[0], s[i]) : NULL;
        const char *q = s[i] ? strchr(al[1], s[i]) : NULL;
        if (!p && !q) {
            *bad = (long)i;
            return 0;
        }
        acc = acc << 6 | (uint32_t)(p ? p - al[0] : q - al[1]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o;
}

Test(base64, vector_path_matches_a_plain_decoder) {
    static const char chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_";
    uint64_t x = 88172645463325252ull;
    char *s = malloc(70000);
    uint8_t *want = malloc(70000);
    for (int it = 0; it < 20000; it++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = it < 100 ? (size_t)(x % 70000) : (size_t)(x % 200);
        if (n % 4 == 1)
            n++;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s[i] = chars[x % 66];
        }
        long want_bad = -1;
        if (n && it % 3 == 0) {   /* one bad byte somewhere */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            static const char badc[] = {'*', ' ', '\n', '=', '.', (char)0x80, (char)0xff, '@'};
            want_bad = (long)(x % n);
            s[want_bad] = badc[(x >> 20) % sizeof badc];
            if (s[want_bad] == '=' && want_bad + 2 >= (long)n)
                s[want_bad] = '*';   /* '=' at the very end is padding, not a bad byte */
        }
        long bad;
        size_t wl = ref_decode(s, n, want, &bad);
        cr_assert_eq(bad, want_bad);
        size_t gl = 0;
        char e[256] = "";
        uint8_t *got = base64_decode(s, n, &gl, e, sizeof e);
        if (want_bad >= 0) {
            cr_assert_null(got);
            char at[64];
            snprintf(at, sizeof at, "at offset %ld", want_bad);
            cr_assert(strstr(e, at), "n=%zu: '%s' should say %s", n, e, at);
        } else {
            cr_assert_not_null(got, "n=%zu: %s", n, e);
            cr_assert_eq(gl, wl, "n=%zu", n);
            cr_assert_eq(memcmp(got, want, wl), 0, "n=%zu: bytes differ", n);
        }
        free(got);
    }
    free(s);
    free(want);
}
