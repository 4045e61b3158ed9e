/* fuzz_main.c: a stand-in for libFuzzer's driver where clang's -fsanitize=fuzzer is not
 * available: it runs LLVMFuzzerTestOneInput on every file of the given corpus folders,
 * then on seeded random mutations of them (byte changes, inserts, deletes, cuts,
 * splices) until -runs=N inputs or -max_total_time=S seconds, whichever comes first.
 * It prints libFuzzer's final "Done N runs in S second(s)" line, so tests/fuzz_run.sh
 * reads both drivers the same way. No coverage guidance: a weaker fuzzer, but the same
 * properties are checked on the same seeds.
 *
 * usage: fuzz_main [-runs=N] [-seed=S] [-max_total_time=S] DIR... */
#include "util.h"

#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uint8_t *data;
    size_t len;
} s_input_t;

static s_input_t *s_corpus;
static int s_n, s_cap;

static void s_add(uint8_t *data, size_t len) {
    if (s_n == s_cap) {
        s_cap = s_cap ? s_cap * 2 : 64;
        s_corpus = util_realloc(s_corpus, (size_t)s_cap * sizeof *s_corpus);
    }
    s_corpus[s_n++] = (s_input_t){data, len};
}

static void s_load_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        util_fatal("pass the corpus folder", "cannot open %s", dir);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096], err[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *data = util_read_file(path, &len, err, sizeof err);
        if (data)
            s_add((uint8_t *)data, len);
    }
    closedir(d);
}

/* One mutation of a corpus entry into out (capacity cap); returns the length. */
static size_t s_mutate(util_rng_t *r, uint8_t *out, size_t cap) {
    const s_input_t *in = &s_corpus[util_rng_next(r) % (uint64_t)s_n];
    size_t n = in->len < cap ? in->len : cap;
    memcpy(out, in->data, n);
    int k = 1 + (int)(util_rng_next(r) % 6);
    for (int j = 0; j < k; j++) {
        size_t at = n ? util_rng_next(r) % n : 0;
        switch (util_rng_next(r) % 7) {
        case 0: if (n) out[at] = (uint8_t)util_rng_next(r); break;
        case 1: if (n) out[at] ^= (uint8_t)(1u << (util_rng_next(r) % 8)); break;
        case 2:   /* interesting values: length headers and their extremes */
            if (n) {
                static const uint8_t v[] = {0x00, 0x7f, 0x80, 0xff, 0xc4, 0xc6, 0xdc, 0xdd,
                                            0xde, 0xdf, 0xd9, 0xdb, 0xc0, 0x90, 0x8f};
                out[at] = v[util_rng_next(r) % sizeof v];
            }
            break;
        case 3: n = at; break;   /* cut */
        case 4:                  /* delete a range */
            if (n) {
                size_t m = 1 + util_rng_next(r) % 8;
                if (at + m > n)
                    m = n - at;
                memmove(out + at, out + at + m, n - at - m);
                n -= m;
            }
            break;
        case 5:                  /* insert random bytes */
            if (n + 8 <= cap) {
                memmove(out + at + 8, out + at, n - at);
                for (int q = 0; q < 8; q++)
                    out[at + q] = (uint8_t)util_rng_next(r);
                n += 8;
            }
            break;
        default: {               /* splice the tail of another entry */
            const s_input_t *o = &s_corpus[util_rng_next(r) % (uint64_t)s_n];
            size_t from = o->len ? util_rng_next(r) % o->len : 0;
            size_t m = o->len - from;
            if (at + m > cap)
                m = cap - at;
            memcpy(out + at, o->data + from, m);
            n = at + m;
        }
        }
    }
    return n;
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    long runs = LONG_MAX;   /* as libFuzzer: the time bound ends the run */
    double max_time = 20;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0)
            runs = atol(argv[i] + 6);
        else if (strncmp(argv[i], "-seed=", 6) == 0)
            seed = strtoull(argv[i] + 6, NULL, 10);
        else if (strncmp(argv[i], "-max_total_time=", 16) == 0)
            max_time = atof(argv[i] + 16);
        else if (argv[i][0] == '-')
            continue;   /* libFuzzer flags this driver does not have */
        else
            s_load_dir(argv[i]);
    }
    if (s_n == 0)
        util_fatal("pass a corpus folder with at least one file", "empty corpus");
    double t0 = util_now();
    long done = 0;
    for (int i = 0; i < s_n; i++, done++)
        LLVMFuzzerTestOneInput(s_corpus[i].data, s_corpus[i].len);
    util_rng_t r = {seed};
    enum { CAP = 1 << 16 };
    uint8_t *buf = util_malloc(CAP);
    while (done < runs && util_now() - t0 < max_time) {
        size_t n = s_mutate(&r, buf, CAP);
        /* An exact-size copy, as libFuzzer hands its inputs. */
        uint8_t *in = util_malloc(n ? n : 1);
        memcpy(in, buf, n);
        LLVMFuzzerTestOneInput(in, n);
        free(in);
        done++;
    }
    double dt = util_now() - t0;
    printf("stat::number_of_executed_units: %ld\n", done);
    printf("Done %ld runs in %.0f second(s)\n", done, dt);
    free(buf);
    for (int i = 0; i < s_n; i++)
        free(s_corpus[i].data);
    free(s_corpus);
    return 0;
}
