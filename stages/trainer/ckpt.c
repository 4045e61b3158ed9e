/* ckpt.c: see ckpt.h. The safetensors header is JSON; the small parser here accepts
 * exactly what the format needs (objects, arrays, strings, integers) and rejects
 * everything else with the byte offset of the problem. */
#include "ckpt.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static const char *s_dt_names[] = {"F32", "I32", "U8", "I64"};
static const size_t s_dt_sizes[] = {4, 4, 1, 8};

const char *ckpt_dtype_name(ckpt_dtype_t dt) {
    return (unsigned)dt < 4 ? s_dt_names[dt] : "?";
}

size_t ckpt_dtype_size(ckpt_dtype_t dt) { return (unsigned)dt < 4 ? s_dt_sizes[dt] : 0; }

/* ---------------------------------------------------------------- atomic writer */

/* A file written through a temp name beside its final one (same folder, so the rename
 * is atomic on POSIX file systems). The FNV-1a hash runs over every byte as it is
 * written, which gives the state file its checksum without a second pass. */
typedef struct {
    FILE *f;
    char tmp[4096];
    char path[4096];
    uint64_t fnv;        /* FNV-1a 64 of everything written */
    int failed;
} s_aw_t;

static int s_aw_open(s_aw_t *w, const char *path, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    w->fnv = 0xcbf29ce484222325ULL;
    char dir[4096], base[4096];
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(base, sizeof base, "%s", path);
    if (snprintf(w->tmp, sizeof w->tmp, "%s/.%s.tmp", dirname(dir), basename(base)) >= (int)sizeof w->tmp)
        return util_err(err, errlen, "%s: path too long", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->f = fopen(w->tmp, "wb");
    if (!w->f)
        return util_err(err, errlen, "%s: cannot create: %s", w->tmp, strerror(errno));
    return 0;
}

static void s_aw_put(s_aw_t *w, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        w->fnv ^= b[i];
        w->fnv *= 0x100000001b3ULL;
    }
    if (!w->failed && n && fwrite(p, 1, n, w->f) != n)
        w->failed = errno ? errno : EIO;
}

static int s_fsync_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Flush, fsync, rename into place, fsync the folder; on any failure remove the temp.
 * The data must be on disk before the rename makes it visible (else a crash can leave a
 * complete-looking name over empty blocks); the folder fsync makes the rename itself
 * durable. A failure leaves the previous file untouched. */
static int s_aw_commit(s_aw_t *w, char *err, size_t errlen) {
    int rc = 0;
    if (w->failed || fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
        rc = util_err(err, errlen, "%s: write failed: %s", w->tmp,
                      strerror(w->failed ? w->failed : errno));
    }
    if (fclose(w->f) != 0 && rc == 0)
        rc = util_err(err, errlen, "%s: close failed: %s", w->tmp, strerror(errno));
    w->f = NULL;
    if (rc == 0 && rename(w->tmp, w->path) != 0)
        rc = util_err(err, errlen, "%s: rename to %s failed: %s", w->tmp, w->path, strerror(errno));
    if (rc != 0) {
        unlink(w->tmp);
        return -1;
    }
    s_fsync_dir(w->path);
    return 0;
}

int ckpt_write_atomic_iov(const char *path, const void *const *bufs, const size_t *lens,
                          int n, char *err, size_t errlen) {
    s_aw_t w;
    if (s_aw_open(&w, path, err, errlen) != 0)
        return -1;
    for (int i = 0; i < n; i++)
        s_aw_put(&w, bufs[i], lens[i]);
    return s_aw_commit(&w, err, errlen);
}

/* ---------------------------------------------------------------- safetensors write */

/* Growable string. */
typedef struct {
    char *p;
    size_t n, cap;
} s_str_t;

static void s_str_add(s_str_t *s, const char *t, size_t n) {
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = util_realloc(s->p, s->cap);
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void s_str_cat(s_str_t *s, const char *t) { s_str_add(s, t, strlen(t)); }

static void s_str_json(s_str_t *s, const char *t) {
    s_str_cat(s, "\"");
    for (const unsigned char *c = (const unsigned char *)t; *c; c++) {
        char buf[8];
        switch (*c) {
        case '"': s_str_cat(s, "\\\""); break;
        case '\\': s_str_cat(s, "\\\\"); break;
        case '\n': s_str_cat(s, "\\n"); break;
        case '\t': s_str_cat(s, "\\t"); break;
        case '\r': s_str_cat(s, "\\r"); break;
        default:
            if (*c < 0x20) {
                snprintf(buf, sizeof buf, "\\u%04x", *c);
                s_str_cat(s, buf);
            } else {
                s_str_add(s, (const char *)c, 1);
            }
        }
    }
    s_str_cat(s, "\"");
}

int ckpt_write_safetensors(const char *path, const ckpt_tensor_t *tensors, int n,
                           const ckpt_meta_t *meta, int nmeta, char *err, size_t errlen) {
    s_str_t h = {0};
    char buf[160];
    s_str_cat(&h, "{");
    if (nmeta > 0) {
        s_str_cat(&h, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                s_str_cat(&h, ",");
            s_str_json(&h, meta[i].key);
            s_str_cat(&h, ":");
            s_str_json(&h, meta[i].value ? meta[i].value : "");
        }
        s_str_cat(&h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const ckpt_tensor_t *t = &tensors[i];
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= t->shape[d];
        size_t nb = (size_t)numel * ckpt_dtype_size(t->dtype);
        if (t->ndim < 0 || t->ndim > CKPT_MAX_DIMS || (t->nbytes && t->nbytes != nb)) {
            free(h.p);
            return util_err(err, errlen, "%s: tensor %s: shape does not match %zu bytes",
                            path, t->name, t->nbytes);
        }
        if (i || nmeta > 0)
            s_str_cat(&h, ",");
        s_str_json(&h, t->name);
        snprintf(buf, sizeof buf, ":{\"dtype\":\"%s\",\"shape\":[", ckpt_dtype_name(t->dtype));
        s_str_cat(&h, buf);
        for (int d = 0; d < t->ndim; d++) {
            snprintf(buf, sizeof buf, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            s_str_cat(&h, buf);
        }
        snprintf(buf, sizeof buf, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        s_str_cat(&h, buf);
        off += nb;
    }
    s_str_cat(&h, "}");
    /* The data starts 8-aligned, as the reference writer pads the header with spaces. */
    while ((h.n % 8) != 0)
        s_str_cat(&h, " ");
    s_aw_t w;
    if (s_aw_open(&w, path, err, errlen) != 0) {
        free(h.p);
        return -1;
    }
    uint64_t hl = h.n;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(hl >> (8 * i));
    s_aw_put(&w, le, 8);
    s_aw_put(&w, h.p, h.n);
    free(h.p);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor_t *t = &tensors[i];
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= t->shape[d];
        s_aw_put(&w, t->data, (size_t)numel * ckpt_dtype_size(t->dtype));
    }
    return s_aw_commit(&w, err, errlen);
}

/* ---------------------------------------------------------------- safetensors read */

struct ckpt_file_t {
    char *buf;            /* whole file */
    size_t len;
    ckpt_tensor_t *t;
    char **names;
    int n;
    char **mkeys, **mvals;
    int nmeta;
};

/* A tiny JSON reader over the header text. A general JSON library would be one more
 * dependency for the one object this file format needs; this reader accepts exactly
 * that shape and reports the byte offset of anything else. Every read is bounds-checked
 * against j->end: the header comes from a file that may be truncated or hostile. */
typedef struct {
    const char *p, *end, *begin;
    char *err;
    size_t errlen;
    const char *path;
    int bad;
} s_js_t;

static int s_js_fail(s_js_t *j, const char *what) {
    if (!j->bad)
        util_err(j->err, j->errlen, "%s: safetensors header: %s at byte %ld", j->path, what,
                 (long)(j->p - j->begin) + 8);
    j->bad = 1;
    return -1;
}

static void s_js_ws(s_js_t *j) {
    while (j->p < j->end && isspace((unsigned char)*j->p))
        j->p++;
}

static int s_js_lit(s_js_t *j, char c) {
    s_js_ws(j);
    if (j->p >= j->end || *j->p != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return s_js_fail(j, what);
    }
    j->p++;
    return 0;
}

static int s_js_peek(s_js_t *j, char c) {
    s_js_ws(j);
    return j->p < j->end && *j->p == c;
}

/* A string; returns a malloc'd copy (escapes decoded; \u escapes as UTF-8). */
static char *s_js_string(s_js_t *j) {
    if (s_js_lit(j, '"') != 0)
        return NULL;
    s_str_t s = {0};
    s_str_add(&s, "", 0);
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c == '\\') {
            if (j->p >= j->end)
                break;
            char e = *j->p++;
            const char *m = strchr("\"\\/bfnrt", e);
            if (m) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                s_str_add(&s, &map[m - "\"\\/bfnrt"], 1);
            } else if (e == 'u' && j->end - j->p >= 4) {
                unsigned cp = 0;
                for (int i = 0; i < 4; i++) {
                    char h = *j->p++;
                    cp <<= 4;
                    if (h >= '0' && h <= '9') cp |= h - '0';
                    else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
                    else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
                    else { free(s.p); s_js_fail(j, "bad \\u escape"); return NULL; }
                }
                char u[4];
                int un;
                if (cp < 0x80) u[0] = (char)cp, un = 1;
                else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), un = 2;
                else u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 63)),
                     u[2] = (char)(0x80 | (cp & 63)), un = 3;
                s_str_add(&s, u, un);
            } else {
                free(s.p);
                s_js_fail(j, "bad escape");
                return NULL;
            }
        } else {
            s_str_add(&s, &c, 1);
        }
    }
    if (j->p >= j->end) {
        free(s.p);
        s_js_fail(j, "unterminated string");
        return NULL;
    }
    j->p++;
    return s.p;
}

static int s_js_int(s_js_t *j, int64_t *out) {
    s_js_ws(j);
    const char *q = j->p;
    int64_t v = 0;
    if (q >= j->end || !isdigit((unsigned char)*q))
        return s_js_fail(j, "expected a non-negative integer");
    while (q < j->end && isdigit((unsigned char)*q)) {
        if (v > (INT64_MAX - 9) / 10)
            return s_js_fail(j, "integer too large");
        v = v * 10 + (*q++ - '0');
    }
    j->p = q;
    *out = v;
    return 0;
}

/* [int, int, ...] into out (at most max); *n gets the count. */
static int s_js_int_array(s_js_t *j, int64_t *out, int max, int *n) {
    *n = 0;
    if (s_js_lit(j, '[') != 0)
        return -1;
    if (s_js_peek(j, ']')) {
        j->p++;
        return 0;
    }
    for (;;) {
        int64_t v;
        if (s_js_int(j, &v) != 0)
            return -1;
        if (*n >= max)
            return s_js_fail(j, "too many dimensions");
        out[(*n)++] = v;
        if (s_js_peek(j, ',')) {
            j->p++;
            continue;
        }
        return s_js_lit(j, ']');
    }
}

static int s_parse_meta(s_js_t *j, ckpt_file_t *f) {
    if (s_js_lit(j, '{') != 0)
        return -1;
    if (s_js_peek(j, '}')) {
        j->p++;
        return 0;
    }
    for (;;) {
        char *k = s_js_string(j);
        if (!k)
            return -1;
        if (s_js_lit(j, ':') != 0) {
            free(k);
            return -1;
        }
        char *v = s_js_string(j);
        if (!v) {
            free(k);
            return -1;
        }
        f->mkeys = util_realloc(f->mkeys, sizeof(char *) * (f->nmeta + 1));
        f->mvals = util_realloc(f->mvals, sizeof(char *) * (f->nmeta + 1));
        f->mkeys[f->nmeta] = k;
        f->mvals[f->nmeta++] = v;
        if (s_js_peek(j, ',')) {
            j->p++;
            continue;
        }
        return s_js_lit(j, '}');
    }
}

/* {"dtype":..., "shape":[...], "data_offsets":[a,b]} in any key order. */
static int s_parse_tensor(s_js_t *j, ckpt_tensor_t *t, int64_t off[2]) {
    int have = 0;
    if (s_js_lit(j, '{') != 0)
        return -1;
    for (;;) {
        char *k = s_js_string(j);
        if (!k || s_js_lit(j, ':') != 0) {
            free(k);
            return -1;
        }
        int rc = 0;
        if (!strcmp(k, "dtype")) {
            char *v = s_js_string(j);
            rc = -1;
            for (int d = 0; v && d < 4; d++)
                if (!strcmp(v, s_dt_names[d]))
                    t->dtype = (ckpt_dtype_t)d, rc = 0;
            if (v && rc != 0) {
                char what[64];
                snprintf(what, sizeof what, "unsupported dtype '%.20s'", v);
                s_js_fail(j, what);
            }
            free(v);
            have |= 1;
        } else if (!strcmp(k, "shape")) {
            rc = s_js_int_array(j, t->shape, CKPT_MAX_DIMS, &t->ndim);
            have |= 2;
        } else if (!strcmp(k, "data_offsets")) {
            int n = 0;
            rc = s_js_int_array(j, off, 2, &n);
            if (rc == 0 && n != 2)
                rc = s_js_fail(j, "data_offsets needs 2 numbers");
            have |= 4;
        } else {
            rc = s_js_fail(j, "unknown tensor key");
        }
        free(k);
        if (rc != 0)
            return -1;
        if (s_js_peek(j, ',')) {
            j->p++;
            continue;
        }
        if (s_js_lit(j, '}') != 0)
            return -1;
        break;
    }
    if (have != 7)
        return s_js_fail(j, "tensor entry lacks dtype, shape or data_offsets");
    return 0;
}

void ckpt_file_destroy(ckpt_file_t **self_p) {
    if (!self_p || !*self_p)
        return;
    ckpt_file_t *f = *self_p;
    for (int i = 0; i < f->n; i++)
        free(f->names[i]);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->mkeys[i]);
        free(f->mvals[i]);
    }
    free(f->names);
    free(f->t);
    free(f->mkeys);
    free(f->mvals);
    free(f->buf);
    free(f);
    *self_p = NULL;
}

ckpt_file_t *ckpt_file_open(const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *buf = util_read_file(path, &len, err, errlen);
    if (!buf)
        return NULL;
    ckpt_file_t *f = util_calloc(1, sizeof *f);
    f->buf = buf;
    f->len = len;
    uint64_t hl = 0;
    if (len < 8) {
        util_err(err, errlen, "%s: not a safetensors file (%zu bytes)", path, len);
        goto fail;
    }
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)(uint8_t)buf[i] << (8 * i);
    if (hl < 2 || hl > len - 8) {
        util_err(err, errlen, "%s: safetensors header length %llu does not fit the file of %zu bytes",
                 path, (unsigned long long)hl, len);
        goto fail;
    }
    const size_t data0 = 8 + hl;
    /* Every tensor's byte range is checked against its dtype and shape and against the
     * file size before any pointer into the buffer is handed out. */
    s_js_t j = {buf + 8, buf + 8 + hl, buf + 8, err, errlen, path, 0};
    if (s_js_lit(&j, '{') != 0)
        goto fail;
    if (s_js_peek(&j, '}')) {
        j.p++;
    } else {
        for (;;) {
            char *k = s_js_string(&j);
            if (!k)
                goto fail;
            if (s_js_lit(&j, ':') != 0) {
                free(k);
                goto fail;
            }
            if (!strcmp(k, "__metadata__")) {
                free(k);
                if (s_parse_meta(&j, f) != 0)
                    goto fail;
            } else {
                ckpt_tensor_t t = {0};
                int64_t off[2];
                if (s_parse_tensor(&j, &t, off) != 0) {
                    free(k);
                    goto fail;
                }
                int64_t numel = 1;
                for (int d = 0; d < t.ndim; d++) {
                    if (t.shape[d] > 0 && numel > INT64_MAX / t.shape[d]) {
                        numel = -1;
                        break;
                    }
                    numel *= t.shape[d];
                }
                uint64_t nb = numel < 0 ? UINT64_MAX : (uint64_t)numel * ckpt_dtype_size(t.dtype);
                if (off[0] > off[1] || (uint64_t)(off[1] - off[0]) != nb ||
                    (uint64_t)off[1] > len - data0) {
                    util_err(err, errlen, "%s: tensor %s: data_offsets [%lld,%lld] do not match "
                             "its shape or lie outside the file", path, k,
                             (long long)off[0], (long long)off[1]);
                    free(k);
                    goto fail;
                }
                t.data = buf + data0 + off[0];
                t.nbytes = (size_t)nb;
                f->t = util_realloc(f->t, sizeof(ckpt_tensor_t) * (f->n + 1));
                f->names = util_realloc(f->names, sizeof(char *) * (f->n + 1));
                f->names[f->n] = k;
                t.name = k;
                f->t[f->n++] = t;
            }
            if (s_js_peek(&j, ',')) {
                j.p++;
                continue;
            }
            if (s_js_lit(&j, '}') != 0)
                goto fail;
            break;
        }
    }
    s_js_ws(&j);
    if (j.p != j.end) {
        s_js_fail(&j, "trailing bytes after the header object");
        goto fail;
    }
    return f;
fail:
    ckpt_file_destroy(&f);
    return NULL;
}

int ckpt_file_count(const ckpt_file_t *self) { return self->n; }

const ckpt_tensor_t *ckpt_file_tensor(const ckpt_file_t *self, int i) {
    return i >= 0 && i < self->n ? &self->t[i] : NULL;
}

const ckpt_tensor_t *ckpt_file_find(const ckpt_file_t *self, const char *name) {
    for (int i = 0; i < self->n; i++)
        if (!strcmp(self->t[i].name, name))
            return &self->t[i];
    return NULL;
}

const char *ckpt_file_meta(const ckpt_file_t *self, const char *key) {
    for (int i = 0; i < self->nmeta; i++)
        if (!strcmp(self->mkeys[i], key))
            return self->mvals[i];
    return NULL;
}

/* ---------------------------------------------------------------- state file */

static const char s_state_magic[8] = {'O', 'F', 'A', 'S', 'T', 'A', 'T', 'E'};
#define STATE_VERSION 1u

static void s_le(uint8_t *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t s_rd(const uint8_t *b, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* The state file is this project's own format (not safetensors) because it must
 * round-trip exactly what a resume needs, with a checksum that catches a torn or
 * corrupted file before a run silently continues from garbage moments. */
int ckpt_state_write(const char *path, const ckpt_state_t *st, char *err, size_t errlen) {
    s_aw_t w;
    if (s_aw_open(&w, path, err, errlen) != 0)
        return -1;
    uint8_t h[48];
    memcpy(h, s_state_magic, 8);
    s_le(h + 8, STATE_VERSION, 4);
    s_le(h + 12, (uint32_t)st->n, 4);
    s_le(h + 16, (uint64_t)st->step, 8);
    s_le(h + 24, (uint64_t)st->cursor, 8);
    s_le(h + 32, st->rng, 8);
    uint64_t e;
    memcpy(&e, &st->elapsed_s, 8);
    s_le(h + 40, e, 8);
    s_aw_put(&w, h, sizeof h);
    for (int i = 0; i < st->n; i++) {
        size_t nl = strlen(st->names[i]);
        OFA_ASSERT(nl < 65536);
        uint8_t b[10];
        s_le(b, nl, 2);
        s_aw_put(&w, b, 2);
        s_aw_put(&w, st->names[i], nl);
        s_le(b, (uint64_t)st->numel[i], 8);
        s_aw_put(&w, b, 8);
        /* Floats as the machine stores them: little-endian on every target here. */
        s_aw_put(&w, st->m[i], sizeof(float) * st->numel[i]);
        s_aw_put(&w, st->v[i], sizeof(float) * st->numel[i]);
    }
    uint8_t c[8];
    s_le(c, w.fnv, 8);
    s_aw_put(&w, c, 8);
    return s_aw_commit(&w, err, errlen);
}

void ckpt_state_free(ckpt_state_t *st) {
    if (!st)
        return;
    for (int i = 0; i < st->n; i++) {
        if (st->names) free(st->names[i]);
        if (st->m) free(st->m[i]);
        if (st->v) free(st->v[i]);
    }
    free(st->names);
    free(st->numel);
    free(st->m);
    free(st->v);
    memset(st, 0, sizeof *st);
}

/* The checksum is verified before any field is trusted; then every length is checked
 * against the bytes left, so a file that passes the checksum but was written by a
 * buggy writer still cannot make the reader run past its buffer. */
int ckpt_state_read(const char *path, ckpt_state_t *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    size_t len = 0;
    char *buf = util_read_file(path, &len, err, errlen);
    if (!buf)
        return -1;
    const uint8_t *b = (const uint8_t *)buf;
    int rc = -1;
    if (len < 56 || memcmp(b, s_state_magic, 8) != 0) {
        util_err(err, errlen, "%s: not a trainer state file (bad magic or too short)", path);
        goto out;
    }
    uint64_t fnv = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len - 8; i++) {
        fnv ^= b[i];
        fnv *= 0x100000001b3ULL;
    }
    if (fnv != s_rd(b + len - 8, 8)) {
        util_err(err, errlen, "%s: checksum mismatch (truncated or corrupt)", path);
        goto out;
    }
    uint32_t ver = (uint32_t)s_rd(b + 8, 4);
    if (ver != STATE_VERSION) {
        util_err(err, errlen, "%s: state version %u, this program reads %u", path, ver, STATE_VERSION);
        goto out;
    }
    uint32_t n = (uint32_t)s_rd(b + 12, 4);
    st->step = (int64_t)s_rd(b + 16, 8);
    st->cursor = (int64_t)s_rd(b + 24, 8);
    st->rng = s_rd(b + 32, 8);
    uint64_t e = s_rd(b + 40, 8);
    memcpy(&st->elapsed_s, &e, 8);
    size_t pos = 48, end = len - 8;
    if (n > (end - pos) / 10) {
        util_err(err, errlen, "%s: %u tensors cannot fit in %zu bytes", path, n, len);
        goto out;
    }
    st->names = util_calloc(n ? n : 1, sizeof(char *));
    st->numel = util_calloc(n ? n : 1, sizeof(int64_t));
    st->m = util_calloc(n ? n : 1, sizeof(float *));
    st->v = util_calloc(n ? n : 1, sizeof(float *));
    for (uint32_t i = 0; i < n; i++) {
        if (end - pos < 2)
            goto trunc;
        size_t nl = s_rd(b + pos, 2);
        pos += 2;
        if (end - pos < nl + 8)
            goto trunc;
        st->names[i] = util_malloc(nl + 1);
        memcpy(st->names[i], b + pos, nl);
        st->names[i][nl] = 0;
        pos += nl;
        uint64_t numel = s_rd(b + pos, 8);
        pos += 8;
        st->n = (int)i + 1;
        if (numel > (end - pos) / 8)
            goto trunc;
        st->numel[i] = (int64_t)numel;
        st->m[i] = util_malloc(sizeof(float) * (numel ? numel : 1));
        st->v[i] = util_malloc(sizeof(float) * (numel ? numel : 1));
        memcpy(st->m[i], b + pos, 4 * numel);
        pos += 4 * numel;
        memcpy(st->v[i], b + pos, 4 * numel);
        pos += 4 * numel;
    }
    if (pos != end) {
        util_err(err, errlen, "%s: %zu unexpected bytes after the last tensor", path, end - pos);
        goto out;
    }
    rc = 0;
    goto out;
trunc:
    util_err(err, errlen, "%s: tensor %d runs past the end of the file", path, st->n);
out:
    free(buf);
    if (rc != 0)
        ckpt_state_free(st);
    return rc;
}

/* ---------------------------------------------------------------- folder */

void ckpt_path(const char *dir, int64_t step, const char *ext, char *out, size_t outlen) {
    if (snprintf(out, outlen, "%s/ckpt-%08lld.%s", dir, (long long)step, ext) >= (int)outlen)
        out[0] = 0;
}

/* Steps of complete checkpoints (a .safetensors present), ascending. Caller frees. */
static int64_t *s_list_steps(const char *dir, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    int64_t *steps = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long long s;
        char tail[32];
        if (sscanf(e->d_name, "ckpt-%lld.%31s", &s, tail) == 2 && !strcmp(tail, "safetensors") && s >= 0) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 8;
                steps = util_realloc(steps, sizeof(int64_t) * cap);
            }
            steps[(*n)++] = s;
        }
    }
    closedir(d);
    for (int i = 1; i < *n; i++)   /* insertion sort: a handful of entries */
        for (int k = i; k > 0 && steps[k] < steps[k - 1]; k--) {
            int64_t t = steps[k];
            steps[k] = steps[k - 1];
            steps[k - 1] = t;
        }
    return steps;
}

int ckpt_prune(const char *dir, int keep, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (d) {   /* temp files left by a crash in the middle of a write */
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t l = strlen(e->d_name);
            if (e->d_name[0] == '.' && l > 4 && !strcmp(e->d_name + l - 4, ".tmp") &&
                !strncmp(e->d_name, ".ckpt-", 6)) {
                char p[4096];
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    if (keep <= 0)
        return 0;
    int n;
    int64_t *steps = s_list_steps(dir, &n);
    int rc = 0;
    for (int i = 0; i + keep < n; i++) {
        char p[4096];
        /* Weights first: once they are gone the step no longer counts as complete. */
        ckpt_path(dir, steps[i], "safetensors", p, sizeof p);
        if (unlink(p) != 0 && errno != ENOENT)
            rc = util_err(err, errlen, "%s: cannot delete: %s", p, strerror(errno));
        ckpt_path(dir, steps[i], "state", p, sizeof p);
        unlink(p);
    }
    free(steps);
    return rc;
}

int ckpt_save(const char *dir, int64_t step, const ckpt_tensor_t *tensors, int n,
              const ckpt_meta_t *meta, int nmeta, const ckpt_state_t *st, int keep,
              char *err, size_t errlen) {
    if (util_mkdirs(dir, err, errlen) != 0)
        return -1;
    char p[4096];
    ckpt_path(dir, step, "state", p, sizeof p);
    if (!p[0])
        return util_err(err, errlen, "%s: checkpoint path too long", dir);
    if (ckpt_state_write(p, st, err, errlen) != 0)
        return -1;
    ckpt_path(dir, step, "safetensors", p, sizeof p);
    if (ckpt_write_safetensors(p, tensors, n, meta, nmeta, err, errlen) != 0)
        return -1;
    return ckpt_prune(dir, keep, err, errlen);
}

/* A complete checkpoint is one whose weights exist (written last) and whose state file
 * reads back: checking the state here means --resume never picks a step it then cannot
 * load, and falls back to the one before instead. */
int64_t ckpt_latest(const char *dir) {
    int n;
    int64_t *steps = s_list_steps(dir, &n), best = -1;
    for (int i = n - 1; i >= 0 && best < 0; i--) {
        char p[4096], err[512];
        ckpt_path(dir, steps[i], "state", p, sizeof p);
        ckpt_state_t st;
        if (ckpt_state_read(p, &st, err, sizeof err) != 0) {
            fprintf(stderr, "%s: skipping checkpoint %lld: %s\n", util_progname(),
                    (long long)steps[i], err);
            continue;
        }
        ckpt_state_free(&st);
        best = steps[i];
    }
    free(steps);
    return best;
}
