/* source.c: see source.h. Files are mapped read-only and indexed by line once at
 * start; a row is parsed only when it is emitted, so memory holds offsets, not rows
 * (24 bytes a row), and every epoch re-reads the rows from the page cache.
 *
 * Why the order is built here and not in the batcher: the batcher sees samples in
 * whatever order the workers finish them, so anything it decided from arrival would
 * depend on timing. The source decides every sample's seq and slot from the plan and
 * the seed alone; downstream stages only restore that order. */
#include "source.h"
#include "base64.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* One mapped data file; a file named by several tasks or splits is mapped once. */
typedef struct {
    char *path;
    char *dir;             /* folder of the file: file-path columns resolve against it */
    const char *data;      /* mapped contents */
    size_t len;
} s_file_t;

/* Where a row lies: enough to parse it later and to name it in a reject. */
typedef struct {
    int file;              /* index into files */
    size_t off, len;       /* the line without its newline */
    int line;              /* 1-based line number */
} s_row_t;

typedef struct {
    s_row_t *rows;
    int64_t n, cap;
} s_rows_t;

/* A task's rows and its progress through its epochs. */
typedef struct {
    s_rows_t train, valid;
    int epoch;             /* current training epoch */
    int64_t *order;        /* permutation of train rows for the epoch */
    int64_t pos;           /* next position in order */
    int done;              /* finished all epochs */
    double weight;
    int32_t *keys;         /* text length of each train row (bucketing), or NULL */
} s_task_t;

/* The walk state: the training phase cuts slots task by task, then the validation
 * phase goes through each task's valid rows in file order. */
struct source {
    const plan_t *plan;
    s_file_t *files;
    int nfiles;
    s_task_t *tasks;
    util_rng_t rng;        /* task choice per slot */
    int64_t seq, slot;
    int cur_task;          /* task of the current slot, -1 = none */
    int left_in_slot;
    int phase;             /* 0 training, 1 validation, 2 done */
    int valid_first;       /* trainer.eval_every > 0: validation rows come first, so the
                            * trainer holds them for evaluations during training */
    int valid_task;        /* validation: current task */
    int64_t valid_pos;
    int bucket;            /* length bucketing: batches per sorted chunk (0/1 = off) */
    int rr;                /* trainer.multitask = round_robin (source.h) */
    int64_t rr_steps;      /* round_robin: rounds (optimizer steps) in the run */
    int64_t rr_step;       /* round_robin: current round */
    int rr_next;           /* round_robin: next task index within the round */
};

static void s_bucket(source_t *self, s_task_t *t, int ti, util_rng_t *r);
static int64_t s_rr_steps(const plan_t *plan, const int64_t *rows);

uint64_t source_sample_id(int task_index, int valid, int64_t row) {
    return ((uint64_t)task_index << 40) | (valid ? (1ull << 39) : 0) | (uint64_t)row;
}

/* Map a data file (once) and return its index, or -1 with err. A mapping, not a read:
 * datasets of many GB cost address space, not memory, and the kernel pages in only the
 * rows being emitted. The files must not be rewritten during a run (a truncated mapping
 * would fault); the dataset builder writes new files atomically, so it never is. */
static int s_map_file(source_t *self, const char *path, char *err, size_t errlen) {
    for (int i = 0; i < self->nfiles; i++)
        if (strcmp(self->files[i].path, path) == 0)
            return i;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return util_err(err, errlen, "%s: %s", path, strerror(errno)), -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return util_err(err, errlen, "%s: %s", path, strerror(errno)), -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return util_err(err, errlen, "%s: not a regular file", path), -1;
    }
    const char *data = "";
    if (st.st_size > 0) {
        data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) {
            close(fd);
            return util_err(err, errlen, "%s: mmap: %s", path, strerror(errno)), -1;
        }
    }
    close(fd);
    self->files = util_realloc(self->files, (size_t)(self->nfiles + 1) * sizeof *self->files);
    s_file_t *f = &self->files[self->nfiles];
    f->path = util_strdup(path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    f->dir = util_strdup(dirname(tmp));
    f->data = data;
    f->len = (size_t)st.st_size;
    return self->nfiles++;
}

/* Row indices live in the low 39 bits of a sample id (bit 39 marks validation rows). */
#define SOURCE_MAX_ROWS (1LL << 39)

/* Index the non-empty lines of a file (up to max rows in all; 0 = no limit). Blank
 * lines are not rows (a trailing newline, or a file edited by hand, must not make
 * empty rejects), and a CR before the LF is dropped so that files written on Windows
 * read the same. Returns 0, or -1 with err when the split has more rows than an id
 * can number. */
static int s_index(source_t *self, int fi, s_rows_t *rows, int64_t max, char *err,
                   size_t errlen) {
    const s_file_t *f = &self->files[fi];
    size_t p = 0;
    int line = 0;
    while (p < f->len && (max <= 0 || rows->n < max)) {
        const char *nl = memchr(f->data + p, '\n', f->len - p);
        size_t end = nl ? (size_t)(nl - f->data) : f->len;
        line++;
        size_t e = end;
        if (e > p && f->data[e - 1] == '\r')
            e--;
        if (e > p) {
            if (rows->n >= SOURCE_MAX_ROWS)
                return util_err(err, errlen, "%s: more than 2^39 rows in one split", f->path);
            if (rows->n == rows->cap) {
                rows->cap = rows->cap ? rows->cap * 2 : 1024;
                rows->rows = util_realloc(rows->rows, (size_t)rows->cap * sizeof *rows->rows);
            }
            rows->rows[rows->n++] = (s_row_t){fi, p, e - p, line};
        }
        p = end + 1;
    }
    return 0;
}

/* A fresh permutation of a task's training rows for its current epoch (Fisher-Yates).
 * Its RNG is seeded from (plan seed, task index, epoch) alone, not drawn from a shared
 * stream: a task's row order then does not depend on how many slots other tasks took
 * before its epoch ended, so adding or reweighting a task changes only the
 * interleaving, never the rows of an epoch of the others. */
static void s_shuffle(source_t *self, s_task_t *t, int ti) {
    uint64_t seed = (uint64_t)self->plan->seed;
    util_rng_t r = {seed ^ (0x51ed270b27e5a1c3ULL * (uint64_t)(ti + 1)) ^
                    (0x2545f4914f6cdd1dULL * (uint64_t)(t->epoch + 1))};
    for (int64_t i = 0; i < t->train.n; i++)
        t->order[i] = i;
    for (int64_t i = t->train.n - 1; i > 0; i--) {
        int64_t j = (int64_t)(util_rng_next(&r) % (uint64_t)(i + 1));
        int64_t tmp = t->order[i];
        t->order[i] = t->order[j];
        t->order[j] = tmp;
    }
    t->pos = 0;
    if (self->bucket > 1)
        s_bucket(self, t, ti, &r);
}

source_t *source_new(const plan_t *plan, char *err, size_t errlen) {
    source_t *self = util_calloc(1, sizeof *self);
    self->plan = plan;
    self->tasks = util_calloc((size_t)plan->ntasks, sizeof *self->tasks);
    /* The task-choice stream: one per run, advanced once per training slot. */
    self->rng.s = (uint64_t)plan->seed * 0x9e3779b97f4a7c15ULL + 12345;
    self->cur_task = -1;
    self->valid_first = plan->trainer.eval_every > 0;
    self->phase = self->valid_first ? 1 : 0;
    for (int t = 0; t < plan->ntasks; t++) {
        const plan_task_t *pt = &plan->tasks[t];
        s_task_t *st = &self->tasks[t];
        st->weight = pt->weight;
        for (int i = 0; i < pt->ntrain; i++) {
            int fi = s_map_file(self, pt->train[i], err, errlen);
            if (fi < 0)
                goto fail;
            if (s_index(self, fi, &st->train, pt->max_rows, err, errlen))
                goto fail;
        }
        for (int i = 0; i < pt->nvalid; i++) {
            int fi = s_map_file(self, pt->valid[i], err, errlen);
            if (fi < 0)
                goto fail;
            if (s_index(self, fi, &st->valid, pt->max_rows, err, errlen))
                goto fail;
        }
        st->order = util_malloc((size_t)(st->train.n + 1) * sizeof *st->order);
        /* A task without training rows (an evaluation-only task) takes no slot. */
        st->done = st->train.n == 0 || pt->epochs <= 0;
        if (!st->done)
            s_shuffle(self, st, t);
    }
    /* round_robin: one slot of every task per round, for as many rounds as the longest
     * task needs for its epochs (or trainer.max_steps rounds); shorter tasks start their
     * next epoch when they run out, so every round holds every task. */
    self->rr = plan->trainer.multitask && strcmp(plan->trainer.multitask, "round_robin") == 0;
    if (self->rr) {
        int64_t *rows = util_calloc((size_t)plan->ntasks + 1, sizeof *rows);
        for (int t = 0; t < plan->ntasks; t++)
            rows[t] = self->tasks[t].done ? 0 : self->tasks[t].train.n;
        self->rr_steps = s_rr_steps(plan, rows);
        free(rows);
    }
    return self;
fail:
    source_destroy(&self);
    return NULL;
}

void source_destroy(source_t **self_p) {
    if (!self_p || !*self_p)
        return;
    source_t *self = *self_p;
    for (int i = 0; i < self->nfiles; i++) {
        if (self->files[i].len)
            munmap((void *)self->files[i].data, self->files[i].len);
        free(self->files[i].path);
        free(self->files[i].dir);
    }
    free(self->files);
    if (self->tasks)
        for (int t = 0; t < self->plan->ntasks; t++) {
            free(self->tasks[t].train.rows);
            free(self->tasks[t].valid.rows);
            free(self->tasks[t].order);
            free(self->tasks[t].keys);
        }
    free(self->tasks);
    free(self);
    *self_p = NULL;
}

int64_t source_emitted(const source_t *self) { return self->seq; }

/* ---------------------------------------------------------------- row parsing */

/* Split a TSV line into at most max cells (pointers into a copy the caller frees).
 * Returns the real number of cells, which may exceed max, so that a row with too many
 * columns is still reported with its true count. OFA's TSV files quote nothing: a tab
 * always separates columns and no cell holds a tab or a newline. */
static int s_split_tsv(char *line, char **cells, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        char *tab = strchr(p, '\t');
        if (n < max)
            cells[n] = p;
        n++;
        if (!tab)
            break;
        *tab = 0;
        p = tab + 1;
    }
    return n;
}

/* Append the UTF-8 encoding of code point cp (at most U+10FFFF). */
static size_t s_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 63));
        out[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 63));
    out[2] = (char)(0x80 | ((cp >> 6) & 63));
    out[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Four hex digits at p into *cp; -1 when one is not a hex digit (a NUL included, so
 * the read never passes the end of the line). */
static int s_hex4(const char *p, unsigned *cp) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char h = p[k];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + (unsigned)d;
    }
    *cp = v;
    return 0;
}

/* Parse a JSON string at *p (after the opening quote) into out (in place is fine:
 * the output is never longer than the input). Surrogate pairs become one code point;
 * a lone surrogate or \u0000 (which would cut the value short) is an error.
 * Returns 0, or -1 with err. */
static int s_json_string(char **pp, char **out, char *err, size_t errlen) {
    char *p = *pp, *w = p;
    *out = w;
    for (;;) {
        char c = *p++;
        if (c == 0)
            return util_err(err, errlen, "unterminated string");
        if (c == '"')
            break;
        if (c != '\\') {
            *w++ = c;
            continue;
        }
        c = *p++;
        switch (c) {
        case '"': case '\\': case '/': *w++ = c; break;
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'u': {
            unsigned cp = 0, lo = 0;
            if (s_hex4(p, &cp))
                return util_err(err, errlen, "bad \\u escape");
            p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return util_err(err, errlen, "lone low surrogate \\u%04x", cp);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p[0] != '\\' || p[1] != 'u' || s_hex4(p + 2, &lo) || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return util_err(err, errlen, "high surrogate \\u%04x without its pair", cp);
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0)
                return util_err(err, errlen, "\\u0000 inside a string");
            w += s_utf8(w, cp);
            break;
        }
        default: return util_err(err, errlen, "bad escape '\\%c'", c ? c : '0');
        }
    }
    *w = 0;
    *pp = p;
    return 0;
}

/* Whether s is a JSON number or one of the literals true, false, null. */
static int s_json_literal(const char *s) {
    if (!strcmp(s, "true") || !strcmp(s, "false") || !strcmp(s, "null"))
        return 1;
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return 0;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == 0;
}

static char *s_skip_ws(char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* Parse one flat JSON object: string keys; string, number, true/false/null values
 * (numbers and literals kept as their text). Nested values are an error. */
static int s_parse_jsonl(char *line, char **keys, char **vals, int max, int *n, char *err,
                         size_t errlen) {
    char *p = s_skip_ws(line);
    *n = 0;
    if (*p++ != '{')
        return util_err(err, errlen, "not a JSON object");
    p = s_skip_ws(p);
    if (*p == '}')
        return 0;
    for (;;) {
        p = s_skip_ws(p);
        if (*p++ != '"')
            return util_err(err, errlen, "expected a string key");
        char *k, *v;
        if (s_json_string(&p, &k, err, errlen))
            return -1;
        p = s_skip_ws(p);
        if (*p++ != ':')
            return util_err(err, errlen, "expected ':' after key \"%s\"", k);
        p = s_skip_ws(p);
        if (*p == '"') {
            p++;
            if (s_json_string(&p, &v, err, errlen))
                return -1;
        } else if (*p == '{' || *p == '[') {
            return util_err(err, errlen, "key \"%s\": nested values are not supported", k);
        } else {
            /* A number or literal: kept as its text. Terminating it in place would erase
             * the delimiter that follows, so the delimiter is remembered in `d`. */
            v = p;
            while (*p && *p != ',' && *p != '}' && *p != ' ' && *p != '\t')
                p++;
            if (v == p)
                return util_err(err, errlen, "key \"%s\": missing value", k);
            char d = *p;
            *p = 0;
            if (!s_json_literal(v))
                return util_err(err, errlen, "key \"%s\": '%s' is not a string, number, "
                                "true, false or null", k, v);
            if (d == ' ' || d == '\t') {
                p = s_skip_ws(p + 1);
                d = *p;
            }
            if (*n < max) {
                keys[*n] = k;
                vals[*n] = v;
                (*n)++;
            }
            if (d == ',') {
                p++;
                continue;
            }
            if (d == '}')
                break;
            return util_err(err, errlen, "expected ',' or '}' after key \"%s\"", k);
        }
        if (*n < max) {
            keys[*n] = k;
            vals[*n] = v;
            (*n)++;
        }
        p = s_skip_ws(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}')
            break;
        return util_err(err, errlen, "expected ',' or '}' after key \"%s\"", k);
    }
    p = s_skip_ws(p + 1);
    if (*p)
        return util_err(err, errlen, "trailing text after the object");
    return 0;
}

/* Media files read from a path column are at most this large: a value naming a device
 * or a huge file must not exhaust memory (a message field is at most 2 GiB anyway). */
#define SOURCE_MAX_MEDIA_FILE (256L << 20)

/* Bytes of a media column. The rule: a value under 1024 characters that names an existing
 * regular file (absolute, or relative to the data file's folder) is that file's bytes;
 * any other value is base64. Paths are tried first because short file names such as
 * "0001" or "img12345" are valid base64 too, and decoding them would hand the image tier
 * a few garbage bytes; no real base64 image is short enough to collide with a file name
 * in the data folder. An empty value is an error, not an empty image. */
static uint8_t *s_media(const s_file_t *f, const char *col, const char *v, size_t *len,
                        char *err, size_t errlen) {
    size_t vlen = strlen(v);
    if (vlen == 0) {
        util_err(err, errlen, "column %s: empty value", col);
        return NULL;
    }
    if (vlen < 1024) {
        char path[4200];
        if (v[0] == '/')
            snprintf(path, sizeof path, "%s", v);
        else
            snprintf(path, sizeof path, "%s/%s", f->dir, v);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (st.st_size > SOURCE_MAX_MEDIA_FILE) {
                util_err(err, errlen, "column %s: file %s is %lld bytes (at most %ld)", col,
                         path, (long long)st.st_size, SOURCE_MAX_MEDIA_FILE);
                return NULL;
            }
            char ferr[512];
            char *data = util_read_file(path, len, ferr, sizeof ferr);
            if (!data)
                util_err(err, errlen, "column %s: %s", col, ferr);
            else if (*len == 0) {
                util_err(err, errlen, "column %s: file %s is empty", col, path);
                free(data);
                data = NULL;
            }
            return (uint8_t *)data;
        }
    }
    char b64err[256];
    uint8_t *b = base64_decode(v, vlen, len, b64err, sizeof b64err);
    if (b)
        return b;
    util_err(err, errlen, "column %s: %s (and not a readable file)", col, b64err);
    return NULL;
}

/* Build the message for one row: a SAMPLE, or a REJECT with the reason. The seq is
 * taken in both cases: a reject stands in the order exactly where the sample would
 * have, so the batcher's walk passes it instead of waiting, and the slot it belongs to
 * is simply one sample shorter. Only the columns the instruction names travel (an "id"
 * column of the TSV stays behind); media columns as bytes, the rest as text. */
static proto_msg_t *s_emit(source_t *self, int ti, int valid, int64_t row_ix, int epoch) {
    const plan_task_t *pt = &self->plan->tasks[ti];
    const s_task_t *st = &self->tasks[ti];
    const s_row_t *row = &(valid ? st->valid.rows : st->train.rows)[row_ix];
    const s_file_t *f = &self->files[row->file];
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, pt->name);
    proto_msg_add_id(m, source_sample_id(ti, valid, row_ix));
    proto_msg_set_int(m, "seq", self->seq++);
    proto_msg_set_int(m, "slot", self->slot);
    proto_msg_set_int(m, "epoch", epoch);
    proto_msg_set_int(m, "row", row_ix);
    proto_msg_set_str(m, "split", valid ? "valid" : "train");

    char *line = util_malloc(row->len + 1);
    memcpy(line, f->data + row->off, row->len);
    line[row->len] = 0;
    enum { MAXC = 256 };
    char *keys[MAXC], *vals[MAXC];
    int n = 0;
    char err[600] = "", why[900];
    int bad = 0;
    /* A NUL byte would silently cut a cell short: such a row is refused outright. */
    const char *nul = memchr(line, 0, row->len);
    if (nul) {
        snprintf(err, sizeof err, "NUL byte at character %zu of the row",
                 (size_t)(nul - line) + 1);
        bad = 1;
    } else if (strcmp(pt->format, "jsonl") == 0) {
        if (s_parse_jsonl(line, keys, vals, MAXC, &n, err, sizeof err))
            bad = 1;
        else if (n >= MAXC) {
            snprintf(err, sizeof err, "more than %d keys in the object", MAXC - 1);
            bad = 1;
        }
    } else {
        n = s_split_tsv(line, vals, MAXC);
        if (n != pt->ncolumns) {
            snprintf(err, sizeof err, "row has %d columns, the plan names %d", n,
                     pt->ncolumns);
            bad = 1;
        }
    }
    const taskplan_t *tp = pt->plan;
    for (int c = 0; !bad && c < tp->ncolumns; c++) {
        const char *name = tp->columns[c].name;
        const char *v = NULL;
        if (strcmp(pt->format, "jsonl") == 0) {
            for (int k = 0; k < n; k++)
                if (strcmp(keys[k], name) == 0)
                    v = vals[k];
        } else {
            for (int k = 0; k < pt->ncolumns && k < n; k++)
                if (strcmp(pt->columns[k], name) == 0)
                    v = vals[k];
        }
        if (!v) {
            snprintf(err, sizeof err, "column %s missing", name);
            bad = 1;
            break;
        }
        mod_t mod = tp->columns[c].mod;
        if (mod == MOD_IMAGE || mod == MOD_AUDIO || mod == MOD_VIDEO || mod == MOD_MOTION) {
            size_t len = 0;
            uint8_t *bytes = s_media(f, name, v, &len, err, sizeof err);
            if (!bytes) {
                bad = 1;
                break;
            }
            /* A value larger than a message may be would be refused by the sockets
             * (ZMQ_MAXMSGSIZE): it is rejected here instead, with its row. */
            if ((int64_t)len > self->plan->limits.message_bytes) {
                snprintf(err, sizeof err, "column %s: %zu bytes exceeds limits.message_bytes "
                         "%lld", name, len, (long long)self->plan->limits.message_bytes);
                free(bytes);
                bad = 1;
                break;
            }
            proto_msg_take_bin(m, name, bytes, len);
        } else {
            size_t tl = strlen(v);
            if ((int64_t)tl > self->plan->limits.text_bytes) {
                snprintf(err, sizeof err, "column %s: text of %zu bytes exceeds "
                         "limits.text_bytes %lld", name, tl,
                         (long long)self->plan->limits.text_bytes);
                bad = 1;
                break;
            }
            proto_msg_set_str(m, name, v);
        }
    }
    free(line);
    if (bad) {
        /* file:line first, as compilers do: editors and grep jump straight to the row. */
        snprintf(why, sizeof why, "%s:%d: %s", f->path, row->line, err);
        proto_msg_t *r = proto_msg_new(PROTO_REJECT, pt->name);
        proto_msg_set_ids(r, proto_msg_ids(m), 1);
        proto_msg_set_int(r, "seq", proto_msg_get_int(m, "seq", -1));
        proto_msg_set_int(r, "slot", self->slot);
        proto_msg_set_int(r, "epoch", epoch);
        proto_msg_set_int(r, "row", row_ix);
        proto_msg_set_str(r, "split", valid ? "valid" : "train");
        proto_msg_set_str(r, "stage", "source");
        proto_msg_set_str(r, "reason", why);
        proto_msg_destroy(&m);
        return r;
    }
    proto_msg_set_str(m, "@route", tp->route);
    proto_msg_set_int(m, "@hop", 0);
    return m;
}

/* ---------------------------------------------------------------- length bucketing
 *
 * Padding makes every sample of a batch as long as its longest: with captions of 5 to
 * 40 tokens, a random batch is mostly padding. Bucketing groups rows of similar length
 * while keeping the order a pure function of (plan, seed, epoch): after an epoch's
 * shuffle, each run of `bucket` x batch_size rows is sorted by the row's text length
 * (ties kept in shuffled order), cut into batches, and those batches are shuffled
 * among themselves with the epoch's RNG, so that lengths do not rise steadily through
 * the epoch. Rows never leave their chunk, so an epoch still visits every row once and
 * the randomness across chunks is that of the shuffle. The length is a proxy known at
 * the source: the bytes of the row's text (non-media) columns that the instruction
 * names; media lengths are fixed by the image size anyway. A row that cannot be parsed
 * has length 0 (it becomes a reject when emitted). */

/* Text bytes of train row `row` of task ti. */
static int32_t s_row_key(source_t *self, int ti, int64_t row) {
    const plan_task_t *pt = &self->plan->tasks[ti];
    const s_row_t *r = &self->tasks[ti].train.rows[row];
    const taskplan_t *tp = pt->plan;
    char *line = util_malloc(r->len + 1);
    memcpy(line, self->files[r->file].data + r->off, r->len);
    line[r->len] = 0;
    enum { MAXC = 256 };
    char *keys[MAXC], *vals[MAXC];
    int n = 0, json = strcmp(pt->format, "jsonl") == 0;
    char err[256];
    int64_t total = 0;
    if (json ? s_parse_jsonl(line, keys, vals, MAXC, &n, err, sizeof err) == 0
             : (n = s_split_tsv(line, vals, MAXC)) == pt->ncolumns) {
        for (int k = 0; k < n && k < MAXC; k++) {
            const char *name = json ? keys[k] : pt->columns[k];
            for (int c = 0; c < tp->ncolumns; c++) {
                mod_t mod = tp->columns[c].mod;
                if (strcmp(tp->columns[c].name, name) == 0 && mod != MOD_IMAGE &&
                    mod != MOD_AUDIO && mod != MOD_VIDEO && mod != MOD_MOTION) {
                    total += (int64_t)strlen(vals[k]);
                    break;
                }
            }
        }
    }
    free(line);
    return total > INT32_MAX ? INT32_MAX : (int32_t)total;
}

typedef struct {
    int32_t key;
    int64_t pos, row;
} s_keyed_t;

static int s_keyed_cmp(const void *a, const void *b) {
    const s_keyed_t *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Rearrange t->order for bucketing (see above); r is the epoch's RNG after its shuffle. */
static void s_bucket(source_t *self, s_task_t *t, int ti, util_rng_t *r) {
    int64_t bs = self->plan->tasks[ti].batch_size, n = t->train.n;
    if (bs <= 0 || n <= bs)
        return;
    if (!t->keys) {
        /* Once per run: the lengths do not change between epochs. */
        t->keys = util_malloc((size_t)n * sizeof *t->keys);
        for (int64_t i = 0; i < n; i++)
            t->keys[i] = s_row_key(self, ti, i);
    }
    int64_t chunk = bs * self->bucket;
    s_keyed_t *kv = util_malloc((size_t)chunk * sizeof *kv);
    int64_t *groups = util_malloc((size_t)self->bucket * sizeof *groups);
    int64_t *tmp = util_malloc((size_t)chunk * sizeof *tmp);
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        int64_t len = n - c0 < chunk ? n - c0 : chunk;
        for (int64_t i = 0; i < len; i++)
            kv[i] = (s_keyed_t){t->keys[t->order[c0 + i]], i, t->order[c0 + i]};
        qsort(kv, (size_t)len, sizeof *kv, s_keyed_cmp);
        /* Whole batches are shuffled among themselves; a last partial batch (the end of
         * the epoch) stays last, as the slot cutting expects. */
        int64_t g = len / bs;
        for (int64_t i = 0; i < g; i++)
            groups[i] = i;
        for (int64_t i = g - 1; i > 0; i--) {
            int64_t j = (int64_t)(util_rng_next(r) % (uint64_t)(i + 1));
            int64_t x = groups[i];
            groups[i] = groups[j];
            groups[j] = x;
        }
        for (int64_t i = 0; i < g; i++)
            for (int64_t k = 0; k < bs; k++)
                tmp[i * bs + k] = kv[groups[i] * bs + k].row;
        for (int64_t i = g * bs; i < len; i++)
            tmp[i] = kv[i].row;
        memcpy(t->order + c0, tmp, (size_t)len * sizeof *tmp);
    }
    free(kv);
    free(groups);
    free(tmp);
}

void source_set_bucket(source_t *self, int k) {
    OFA_ASSERT(self->seq == 0);
    self->bucket = k;
    for (int t = 0; t < self->plan->ntasks; t++)
        if (!self->tasks[t].done)
            s_shuffle(self, &self->tasks[t], t);
}

/* round_robin: rounds in the run (source.h's rule) from each task's training row count
 * rows[t] (max_rows applied here). The trainer sizes its schedule by the same rule. */
static int64_t s_rr_steps(const plan_t *plan, const int64_t *rows) {
    if (plan->trainer.max_steps > 0)
        return plan->trainer.max_steps;
    int64_t longest = 0;
    for (int t = 0; rows && t < plan->ntasks; t++) {
        const plan_task_t *pt = &plan->tasks[t];
        int64_t r = rows[t];
        if (pt->max_rows > 0 && r > pt->max_rows)
            r = pt->max_rows;
        if (r <= 0 || pt->epochs <= 0)
            continue;
        int64_t bs = pt->batch_size > 0 ? pt->batch_size : 1;
        int64_t n = (r + bs - 1) / bs * pt->epochs;
        longest = n > longest ? n : longest;
    }
    return longest;
}

/* round_robin: the next task of the current round (task order, skipping tasks without
 * training rows), moving to the next round after the last; -1 after the last round. */
static int s_pick_rr(source_t *self) {
    for (;;) {
        if (self->rr_step >= self->rr_steps)
            return -1;
        while (self->rr_next < self->plan->ntasks && self->tasks[self->rr_next].done)
            self->rr_next++;
        if (self->rr_next < self->plan->ntasks)
            return self->rr_next++;
        self->rr_next = 0;
        self->rr_step++;
    }
}

/* Pick the task of the next training slot, or -1 when every task is done. The choice is
 * among the tasks that still have epochs to run, in proportion to their weights: a
 * task that finished its epochs simply drops out and the others share its slots.
 * Tasks of different lengths therefore all run to their own epoch counts (nothing is
 * cut or repeated to make them even), and the run's training part ends with the
 * longest. The share weight/sum holds while every task has rows left. */
static int s_pick_task(source_t *self) {
    double total = 0;
    for (int t = 0; t < self->plan->ntasks; t++)
        if (!self->tasks[t].done)
            total += self->tasks[t].weight;
    if (total <= 0)
        return -1;
    double x = util_rng_uniform(&self->rng) * total;
    int last = -1;
    for (int t = 0; t < self->plan->ntasks; t++) {
        if (self->tasks[t].done)
            continue;
        last = t;
        if (x < self->tasks[t].weight)
            return t;
        x -= self->tasks[t].weight;
    }
    return last;
}

/* Slots: a training slot holds batch_size rows of one task, fewer when the task's
 * epoch ends inside it (a batch never spans two epochs, so "epoch" is one number per
 * batch). Validation slots cut each task's valid rows in file order, the last one of a
 * task possibly short. */
proto_msg_t *source_next(source_t *self) {
  for (;;) {
    while (self->phase == 0) {
        if (self->cur_task >= 0 && self->left_in_slot > 0) {
            int ti = self->cur_task;
            s_task_t *st = &self->tasks[ti];
            int64_t row = st->order[st->pos++];
            int epoch = st->epoch;
            self->left_in_slot--;
            if (st->pos == st->train.n) {
                /* End of an epoch: the slot ends here too. */
                self->left_in_slot = 0;
                st->epoch++;
                if (!self->rr && st->epoch >= self->plan->tasks[ti].epochs)
                    st->done = 1;
                else
                    s_shuffle(self, st, ti);
            }
            proto_msg_t *m = s_emit(self, ti, 0, row, epoch);
            if (self->left_in_slot == 0) {
                self->slot++;
                self->cur_task = -1;
            }
            return m;
        }
        int t = self->rr ? s_pick_rr(self) : s_pick_task(self);
        if (t < 0) {
            self->phase = self->valid_first ? 2 : 1;
            break;
        }
        self->cur_task = t;
        self->left_in_slot = self->plan->tasks[t].batch_size;
    }
    while (self->phase == 1) {
        if (self->valid_task >= self->plan->ntasks) {
            self->phase = self->valid_first ? 0 : 2;
            break;
        }
        s_task_t *st = &self->tasks[self->valid_task];
        if (self->valid_pos >= st->valid.n) {
            if (self->valid_pos > 0 && self->valid_pos % self->plan->tasks[self->valid_task]
                                               .batch_size != 0)
                self->slot++;   /* close the task's last, partial slot */
            self->valid_task++;
            self->valid_pos = 0;
            continue;
        }
        int64_t row = self->valid_pos++;
        proto_msg_t *m = s_emit(self, self->valid_task, 1, row, 0);
        if (self->valid_pos % self->plan->tasks[self->valid_task].batch_size == 0)
            self->slot++;
        return m;
    }
    if (self->phase == 2)
        return NULL;
  }
}
