/* bpe_train.c: ofa-bpe-train, learns the project's BPE merges from text columns.
 *
 *   ofa-bpe-train --out FILE (--vocab N | --merges M) [--min-count C]
 *                 [--tsv FILE --column K]... [--jsonl FILE --key NAME]... [--text FILE]...
 *
 * --vocab N is the plan's model.vocab_size, the BPE merges budget: it learns up to N
 * merges, and the whole vocabulary is then 5 specials + 256 bytes + N + 1000 location
 * bins. --merges M is the same thing under a plainer name. Each --tsv takes the --column (0-based index) that follows it; each --jsonl
 * the --key (a top-level string field) that follows it; --text reads every line as one
 * text. Training stops early when no pair occurs --min-count times (default 2); the
 * file then holds fewer merges and says how many. */
#include "bpe.h"
#include "util.h"

#include <errno.h>
#include <string.h>

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: ofa-bpe-train --out FILE (--vocab N | --merges M) [--min-count C]\n"
            "                     [--tsv FILE --column K]... [--jsonl FILE --key NAME]...\n"
            "                     [--text FILE]...\n"
            "  --vocab N      merges budget (the plan's model.vocab_size); the vocabulary is\n"
            "                 then 5 specials + 256 bytes + N merges + 1000 location bins\n"
            "  --merges M     the same as --vocab M\n"
            "  --min-count C  stop when the best pair occurs fewer than C times (default 2)\n"
            "  --tsv FILE --column K   text of column K (0-based) of each TSV row\n"
            "  --jsonl FILE --key NAME the string field NAME of each JSON line\n"
            "  --text FILE             each line of FILE\n");
}

typedef enum { SRC_TSV, SRC_JSONL, SRC_TEXT } s_kind_t;

typedef struct {
    s_kind_t kind;
    const char *path;
    long column;
    const char *key;
} s_source_t;

/* Four hex digits at s as a number, or -1. */
static int s_hex4(const char *s, const char *end) {
    if (end - s < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char h = s[i];
        int d = h >= '0' && h <= '9' ? h - '0' : (h | 32) >= 'a' && (h | 32) <= 'f' ? (h | 32) - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Parses a JSON string starting at *p (at the opening quote) into out (UTF-8); returns
 * 0 and advances *p past the closing quote, or -1. out may be NULL to skip. */
static int s_json_string(const char **p, const char *end, char *out, size_t *outlen) {
    const char *s = *p;
    size_t n = 0;
    if (s >= end || *s != '"')
        return -1;
    s++;
    while (s < end && *s != '"') {
        unsigned c = (unsigned char)*s++;
        if (c == '\\') {
            if (s >= end)
                return -1;
            char e = *s++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case '/': case '\\': case '"': c = (unsigned char)e; break;
            case 'u': {
                int cp = s_hex4(s, end);
                if (cp < 0)
                    return -1;
                s += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && s + 6 <= end && s[0] == '\\' && s[1] == 'u') {
                    int lo = s_hex4(s + 2, end);
                    if (lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        s += 6;
                    }
                }
                char u[4];
                int k;
                if (cp < 0x80) u[0] = (char)cp, k = 1;
                else if (cp < 0x800) u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), k = 2;
                else if (cp < 0x10000) u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 63)), u[2] = (char)(0x80 | (cp & 63)), k = 3;
                else u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 63)), u[2] = (char)(0x80 | ((cp >> 6) & 63)), u[3] = (char)(0x80 | (cp & 63)), k = 4;
                if (out)
                    memcpy(out + n, u, (size_t)k);
                n += (size_t)k;
                continue;
            }
            default:
                return -1;
            }
        }
        if (out)
            out[n] = (char)c;
        n++;
    }
    if (s >= end)
        return -1;
    *p = s + 1;
    if (outlen)
        *outlen = n;
    return 0;
}

/* Skips one JSON value (any type) at *p. */
static int s_json_skip(const char **p, const char *end) {
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    if (s < end && *s == '"') {
        *p = s;
        return s_json_string(p, end, NULL, NULL);
    }
    int depth = 0;
    while (s < end) {
        char c = *s;
        if (c == '"') {
            if (s_json_string(&s, end, NULL, NULL) != 0)
                return -1;
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0)
                break;
            depth--;
        } else if (c == ',' && depth == 0)
            break;
        s++;
    }
    *p = s;
    return depth == 0 ? 0 : -1;
}

/* The top-level string field key of a one-line JSON object, decoded into out (which must
 * hold len bytes: a decoded string is never longer than its source). 1 found, 0 absent
 * or not a string, -1 malformed. */
/* Only what ofa-bpe-train needs from JSON: one top-level string field of a one-line
 * object, with escapes decoded (\uXXXX and surrogate pairs to UTF-8). Nested values are
 * skipped by bracket depth, honouring strings, so a key inside them never matches. */
static int s_json_field(const char *line, size_t len, const char *key, char *out,
                        size_t *outlen) {
    const char *p = line, *end = line + len;
    while (p < end && *p != '{')
        p++;
    if (p >= end)
        return -1;
    p++;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p < end && *p == '}')
            return 0;
        size_t kl;
        if (s_json_string(&p, end, out, &kl) != 0)
            return -1;
        int match = kl == strlen(key) && memcmp(out, key, kl) == 0;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= end || *p != ':')
            return -1;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (match)
            return (p < end && *p == '"' && s_json_string(&p, end, out, outlen) == 0) ? 1 : 0;
        if (s_json_skip(&p, end) != 0)
            return -1;
    }
}

/* Feeds one corpus file to the trainer, one text per line. Lines without the column or
 * key are counted and reported, not fatal: OFA's TSVs have the odd short row, and one
 * bad line must not stop a run's set-up. */
static size_t s_feed(tok_bpe_trainer_t *tr, const s_source_t *src) {
    FILE *f = fopen(src->path, "rb");
    if (!f)
        util_fatal("check the --tsv/--jsonl/--text paths", "cannot open %s: %s",
                   src->path, strerror(errno));
    char *line = NULL, *buf = NULL;
    size_t cap = 0, bufcap = 0, rows = 0, lineno = 0, missing = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (src->kind == SRC_TEXT) {
            tok_bpe_trainer_add(tr, line, (size_t)n);
            rows++;
        } else if (src->kind == SRC_TSV) {
            const char *s = line, *e = line + n;
            for (long c = 0; c < src->column && s; c++) {
                s = memchr(s, '\t', (size_t)(e - s));
                if (s)
                    s++;
            }
            if (!s) {
                missing++;
                continue;
            }
            const char *t = memchr(s, '\t', (size_t)(e - s));
            tok_bpe_trainer_add(tr, s, (size_t)((t ? t : e) - s));
            rows++;
        } else {
            if (bufcap < (size_t)n + 1) {
                bufcap = (size_t)n + 1;
                buf = util_realloc(buf, bufcap);
            }
            size_t ol;
            int rc = s_json_field(line, (size_t)n, src->key, buf, &ol);
            if (rc == 1) {
                tok_bpe_trainer_add(tr, buf, ol);
                rows++;
            } else if (n > 0) {
                missing++;
            }
        }
    }
    free(line);
    free(buf);
    fclose(f);
    if (missing)
        fprintf(stderr, "%s: %s: %zu of %zu lines had no %s %s\n", util_progname(),
                src->path, missing, lineno, src->kind == SRC_TSV ? "column" : "string field",
                src->kind == SRC_TSV ? "at that index" : src->key);
    return rows;
}

static long s_int(const char *flag, const char *v, long lo, long hi) {
    char *e;
    errno = 0;
    long x = strtol(v, &e, 10);
    if (!*v || *e || errno || x < lo || x > hi)
        util_fatal(NULL, "%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
    return x;
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    const char *out = NULL;
    long vocab = -1, merges = -1, min_count = 2;
    s_source_t *srcs = util_calloc((size_t)argc, sizeof *srcs);
    int nsrc = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc)
            util_fatal("run ofa-bpe-train --help", "%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--vocab"))
            vocab = s_int(a, v, 0, 10000000);
        else if (!strcmp(a, "--merges"))
            merges = s_int(a, v, 0, 10000000);
        else if (!strcmp(a, "--min-count"))
            min_count = s_int(a, v, 2, 1000000000);
        else if (!strcmp(a, "--tsv"))
            srcs[nsrc++] = (s_source_t){SRC_TSV, v, -1, NULL};
        else if (!strcmp(a, "--jsonl"))
            srcs[nsrc++] = (s_source_t){SRC_JSONL, v, -1, NULL};
        else if (!strcmp(a, "--text"))
            srcs[nsrc++] = (s_source_t){SRC_TEXT, v, -1, NULL};
        else if (!strcmp(a, "--column")) {
            if (!nsrc || srcs[nsrc - 1].kind != SRC_TSV || srcs[nsrc - 1].column >= 0)
                util_fatal("write --column right after its --tsv FILE",
                           "--column %s does not follow a --tsv", v);
            srcs[nsrc - 1].column = s_int(a, v, 0, 100000);
        } else if (!strcmp(a, "--key")) {
            if (!nsrc || srcs[nsrc - 1].kind != SRC_JSONL || srcs[nsrc - 1].key)
                util_fatal("write --key right after its --jsonl FILE",
                           "--key %s does not follow a --jsonl", v);
            srcs[nsrc - 1].key = v;
        } else
            util_fatal("run ofa-bpe-train --help", "unknown flag %s", a);
    }
    if (!out)
        util_fatal("run ofa-bpe-train --help", "--out FILE is required");
    if ((vocab < 0) == (merges < 0))
        util_fatal("run ofa-bpe-train --help", "give exactly one of --vocab and --merges");
    if (!nsrc)
        util_fatal("run ofa-bpe-train --help", "no corpus: give --tsv, --jsonl or --text");
    for (int i = 0; i < nsrc; i++) {
        if (srcs[i].kind == SRC_TSV && srcs[i].column < 0)
            util_fatal(NULL, "--tsv %s has no --column", srcs[i].path);
        if (srcs[i].kind == SRC_JSONL && !srcs[i].key)
            util_fatal(NULL, "--jsonl %s has no --key", srcs[i].path);
    }
    if (merges < 0)
        merges = vocab;

    double t0 = util_now();
    tok_bpe_trainer_t *tr = tok_bpe_trainer_new();
    size_t rows = 0;
    for (int i = 0; i < nsrc; i++)
        rows += s_feed(tr, &srcs[i]);
    size_t occ, nwords = tok_bpe_trainer_words(tr, &occ);
    if (rows == 0)
        util_fatal("check the column index / key", "no text found in the corpus");
    tok_bpe_t *bpe = tok_bpe_trainer_learn(tr, (int)merges, (int)min_count);
    char err[512];
    if (tok_bpe_save(bpe, out, err, sizeof err) != 0)
        util_fatal(NULL, "cannot write %s: %s", out, err);
    fprintf(stderr,
            "%s: %zu texts, %zu pre-tokens (%zu distinct) -> %d merges (asked %ld), "
            "vocabulary %d, %.2f s -> %s\n",
            util_progname(), rows, occ, nwords, tok_bpe_n_merges(bpe), merges,
            tok_bpe_vocab_size(bpe), util_now() - t0, out);
    tok_bpe_destroy(&bpe);
    tok_bpe_trainer_destroy(&tr);
    free(srcs);
    return 0;
}
