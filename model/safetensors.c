/* safetensors.c: see safetensors.h. The header JSON has a fixed shape (an object of
 * objects with dtype / shape / data_offsets, plus __metadata__ of strings), so it is
 * read by a small dedicated recursive-descent parser that checks every byte instead of
 * a general JSON library; anything outside that shape is an error. */
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Header bigger than this is refused (the format's own implementations use 100 MB). */
#define ST_MAX_HEADER (100u << 20)

static const char *s_names[ST__COUNT] = {"F32", "F16", "BF16", "F64", "I8",  "I16", "I32",
                                         "I64", "U8",  "U16", "U32",  "U64", "BOOL"};
static const size_t s_sizes[ST__COUNT] = {4, 2, 2, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1};

const char *st_dtype_name(st_dtype_t dt) {
    return dt >= 0 && dt < ST__COUNT ? s_names[dt] : "?";
}

int st_dtype_from_name(const char *s) {
    for (int i = 0; i < ST__COUNT; i++)
        if (!strcmp(s, s_names[i]))
            return i;
    return -1;
}

size_t st_dtype_size(st_dtype_t dt) { return dt >= 0 && dt < ST__COUNT ? s_sizes[dt] : 0; }

int64_t st_numel(const st_tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

typedef struct {
    char *key, *value;
} s_meta_t;

struct st_file_t {
    char *buf;          /* whole file */
    size_t len;
    int n;
    st_tensor_t *t;
    char **names;       /* owned names of t[i] */
    int64_t *offs;      /* data offset of t[i] while parsing */
    int nmeta;
    s_meta_t *meta;
};

/* ---- JSON reader over the header ---- */

typedef struct {
    const char *p, *end, *begin;
    const char *what;
    char *err;
    size_t errlen;
    int failed;
} s_json_t;

static int s_fail(s_json_t *j, const char *msg) {
    if (!j->failed)
        util_err(j->err, j->errlen, "%s: malformed safetensors header: %s", j->what, msg);
    j->failed = 1;
    return -1;
}

static void s_ws(s_json_t *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int s_expect(s_json_t *j, char c) {
    s_ws(j);
    if (j->p >= j->end || *j->p != c) {
        char msg[64];
        snprintf(msg, sizeof msg, "expected '%c' at header byte %ld", c, (long)(j->p - j->begin));
        return s_fail(j, msg);
    }
    j->p++;
    return 0;
}

/* A JSON string (escapes decoded; \u limited to the BMP, written as UTF-8). Returns a
 * malloc'ed string or NULL. */
static char *s_string(s_json_t *j) {
    s_ws(j);
    if (j->p >= j->end || *j->p != '"') {
        s_fail(j, "expected a string");
        return NULL;
    }
    j->p++;
    size_t cap = 32, n = 0;
    char *s = util_malloc(cap);
    while (j->p < j->end && *j->p != '"') {
        unsigned char ch = (unsigned char)*j->p++;
        char out[4];
        int k = 1;
        if (ch < 0x20) {
            free(s);
            s_fail(j, "control character in a string");
            return NULL;
        }
        out[0] = (char)ch;
        if (ch == '\\') {
            if (j->p >= j->end)
                break;
            char e = *j->p++;
            switch (e) {
            case '"': out[0] = '"'; break;
            case '\\': out[0] = '\\'; break;
            case '/': out[0] = '/'; break;
            case 'b': out[0] = '\b'; break;
            case 'f': out[0] = '\f'; break;
            case 'n': out[0] = '\n'; break;
            case 'r': out[0] = '\r'; break;
            case 't': out[0] = '\t'; break;
            case 'u': {
                if (j->end - j->p < 4) {
                    free(s);
                    s_fail(j, "short \\u escape");
                    return NULL;
                }
                unsigned u = 0;
                for (int i = 0; i < 4; i++) {
                    char h = j->p[i];
                    u <<= 4;
                    if (h >= '0' && h <= '9') u |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f') u |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') u |= (unsigned)(h - 'A' + 10);
                    else {
                        free(s);
                        s_fail(j, "bad \\u escape");
                        return NULL;
                    }
                }
                j->p += 4;
                if (u < 0x80) out[0] = (char)u;
                else if (u < 0x800) { out[0] = (char)(0xC0 | (u >> 6)); out[1] = (char)(0x80 | (u & 63)); k = 2; }
                else { out[0] = (char)(0xE0 | (u >> 12)); out[1] = (char)(0x80 | ((u >> 6) & 63)); out[2] = (char)(0x80 | (u & 63)); k = 3; }
                break;
            }
            default:
                free(s);
                s_fail(j, "unknown escape in a string");
                return NULL;
            }
        }
        if (n + k + 1 > cap) {
            cap *= 2;
            s = util_realloc(s, cap);
        }
        memcpy(s + n, out, k);
        n += k;
    }
    if (j->p >= j->end) {
        free(s);
        s_fail(j, "unterminated string");
        return NULL;
    }
    j->p++;
    s[n] = 0;
    return s;
}

/* A non-negative integer (the only numbers the header holds). */
static int s_uint(s_json_t *j, int64_t *out) {
    s_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return s_fail(j, "expected a non-negative integer");
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (v > (uint64_t)INT64_MAX / 10)
            return s_fail(j, "integer too large");
        v = v * 10 + (uint64_t)(*j->p++ - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return s_fail(j, "integer too large");
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return s_fail(j, "expected an integer, got a fraction");
    *out = (int64_t)v;
    return 0;
}

/* [int, int, ...] with at most maxn entries; *n receives the count. */
static int s_int_array(s_json_t *j, int64_t *vals, int maxn, int *n) {
    if (s_expect(j, '['))
        return -1;
    *n = 0;
    s_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        if (*n >= maxn)
            return s_fail(j, "too many dimensions");
        if (s_uint(j, &vals[(*n)++]))
            return -1;
        s_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return s_expect(j, ']');
    }
}

/* ---- file parsing ---- */

void st_close(st_file_t **self_p) {
    if (!self_p || !*self_p)
        return;
    st_file_t *f = *self_p;
    for (int i = 0; i < f->n; i++)
        free(f->names[i]);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->names);
    free(f->offs);
    free(f->t);
    free(f->meta);
    free(f->buf);
    free(f);
    *self_p = NULL;
}

static int s_parse_meta(st_file_t *f, s_json_t *j) {
    if (s_expect(j, '{'))
        return -1;
    s_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        char *k = s_string(j);
        if (!k)
            return -1;
        if (s_expect(j, ':')) {
            free(k);
            return -1;
        }
        char *v = s_string(j);
        if (!v) {
            free(k);
            return s_fail(j, "__metadata__ values must be strings");
        }
        f->meta = util_realloc(f->meta, sizeof *f->meta * (f->nmeta + 1));
        f->meta[f->nmeta].key = k;
        f->meta[f->nmeta].value = v;
        f->nmeta++;
        s_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return s_expect(j, '}');
    }
}

/* One tensor entry {"dtype": .., "shape": [..], "data_offsets": [b, e]} (any order). */
static int s_parse_entry(st_file_t *f, s_json_t *j, const char *name, size_t datalen) {
    int have_dt = 0, have_shape = 0, have_off = 0;
    st_tensor_t t = {0};
    int64_t off[2] = {0, 0};
    if (s_expect(j, '{'))
        return -1;
    for (;;) {
        char *k = s_string(j);
        if (!k)
            return -1;
        if (s_expect(j, ':')) {
            free(k);
            return -1;
        }
        if (!strcmp(k, "dtype")) {
            char *v = s_string(j);
            if (!v) {
                free(k);
                return -1;
            }
            int dt = st_dtype_from_name(v);
            if (dt < 0) {
                util_err(j->err, j->errlen, "%s: tensor '%s': unknown dtype '%s'", j->what, name, v);
                j->failed = 1;
                free(v);
                free(k);
                return -1;
            }
            free(v);
            t.dtype = (st_dtype_t)dt;
            have_dt = 1;
        } else if (!strcmp(k, "shape")) {
            if (s_int_array(j, t.shape, ST_MAX_DIMS, &t.ndim)) {
                free(k);
                return -1;
            }
            have_shape = 1;
        } else if (!strcmp(k, "data_offsets")) {
            int n = 0;
            if (s_int_array(j, off, 2, &n) || n != 2) {
                free(k);
                return s_fail(j, "data_offsets must be [begin, end]");
            }
            have_off = 1;
        } else {
            util_err(j->err, j->errlen, "%s: tensor '%s': unknown key '%s'", j->what, name, k);
            j->failed = 1;
            free(k);
            return -1;
        }
        free(k);
        s_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (s_expect(j, '}'))
            return -1;
        break;
    }
    if (!have_dt || !have_shape || !have_off) {
        util_err(j->err, j->errlen, "%s: tensor '%s' lacks %s", j->what, name,
                 !have_dt ? "dtype" : !have_shape ? "shape" : "data_offsets");
        j->failed = 1;
        return -1;
    }
    /* bytes implied by the shape, with overflow checks */
    uint64_t numel = 1;
    for (int i = 0; i < t.ndim; i++) {
        if (t.shape[i] != 0 && numel > UINT64_MAX / 16 / (uint64_t)t.shape[i]) {
            util_err(j->err, j->errlen, "%s: tensor '%s': shape too large", j->what, name);
            j->failed = 1;
            return -1;
        }
        numel *= (uint64_t)t.shape[i];
    }
    uint64_t bytes = numel * st_dtype_size(t.dtype);
    if (off[1] < off[0] || (uint64_t)off[1] > datalen) {
        util_err(j->err, j->errlen, "%s: tensor '%s': data_offsets [%lld, %lld] outside the "
                 "%zu data bytes", j->what, name, (long long)off[0], (long long)off[1], datalen);
        j->failed = 1;
        return -1;
    }
    if ((uint64_t)(off[1] - off[0]) != bytes) {
        util_err(j->err, j->errlen, "%s: tensor '%s': %lld data bytes for a %s tensor of %llu "
                 "elements (%llu bytes)", j->what, name, (long long)(off[1] - off[0]),
                 st_dtype_name(t.dtype), (unsigned long long)numel, (unsigned long long)bytes);
        j->failed = 1;
        return -1;
    }
    t.nbytes = (size_t)bytes;
    f->t = util_realloc(f->t, sizeof *f->t * (f->n + 1));
    f->offs = util_realloc(f->offs, sizeof *f->offs * (f->n + 1));
    f->offs[f->n] = off[0];   /* data pointers are set once the header is complete */
    f->names = util_realloc(f->names, sizeof *f->names * (f->n + 1));
    f->names[f->n] = util_strdup(name);
    t.name = f->names[f->n];
    f->t[f->n++] = t;
    return 0;
}

static st_file_t *s_parse_owned(char *buf, size_t len, const char *what, char *err,
                                size_t errlen) {
    st_file_t *f = util_calloc(1, sizeof *f);
    f->buf = buf;
    f->len = len;
    if (len < 8) {
        util_err(err, errlen, "%s: not a safetensors file (%zu bytes, shorter than the 8-byte "
                 "header length)", what, len);
        st_close(&f);
        return NULL;
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | (unsigned char)buf[i];
    if (hl < 2 || hl > ST_MAX_HEADER || hl > len - 8) {
        util_err(err, errlen, "%s: bad header length %llu (file has %zu bytes after the length)",
                 what, (unsigned long long)hl, len - 8);
        st_close(&f);
        return NULL;
    }
    s_json_t j = {buf + 8, buf + 8 + hl, buf + 8, what, err, errlen, 0};
    size_t datalen = len - 8 - hl;
    const char *data = buf + 8 + hl;
    if (s_expect(&j, '{'))
        goto fail;
    s_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            char *name = s_string(&j);
            if (!name)
                goto fail;
            if (s_expect(&j, ':')) {
                free(name);
                goto fail;
            }
            int rc;
            if (!strcmp(name, "__metadata__")) {
                rc = s_parse_meta(f, &j);
            } else if (st_find(f, name)) {
                util_err(err, errlen, "%s: tensor '%s' appears twice", what, name);
                j.failed = 1;
                rc = -1;
            } else {
                rc = s_parse_entry(f, &j, name, datalen);
            }
            free(name);
            if (rc)
                goto fail;
            s_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (s_expect(&j, '}'))
                goto fail;
            break;
        }
    }
    s_ws(&j);
    if (j.p != j.end) {
        s_fail(&j, "bytes after the closing brace");
        goto fail;
    }
    for (int i = 0; i < f->n; i++)
        f->t[i].data = data + f->offs[i];
    return f;
fail:
    st_close(&f);
    return NULL;
}

st_file_t *st_parse(const void *buf, size_t len, const char *what, char *err, size_t errlen) {
    char *copy = util_malloc(len ? len : 1);
    if (len)
        memcpy(copy, buf, len);
    return s_parse_owned(copy, len, what ? what : "buffer", err, errlen);
}

st_file_t *st_open(const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *buf = util_read_file(path, &len, err, errlen);
    if (!buf)
        return NULL;
    return s_parse_owned(buf, len, path, err, errlen);
}

int st_count(const st_file_t *self) { return self->n; }

const st_tensor_t *st_tensor(const st_file_t *self, int i) {
    return i >= 0 && i < self->n ? &self->t[i] : NULL;
}

const st_tensor_t *st_find(const st_file_t *self, const char *name) {
    for (int i = 0; i < self->n; i++)
        if (!strcmp(self->t[i].name, name))
            return &self->t[i];
    return NULL;
}

const char *st_meta(const st_file_t *self, const char *key) {
    for (int i = 0; i < self->nmeta; i++)
        if (!strcmp(self->meta[i].key, key))
            return self->meta[i].value;
    return NULL;
}

static float s_half(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

int st_to_f32(const st_tensor_t *t, float *out, int64_t n, char *err, size_t errlen) {
    if (st_numel(t) != n)
        return util_err(err, errlen, "tensor '%s': %lld elements, expected %lld", t->name,
                        (long long)st_numel(t), (long long)n);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, p, sizeof(float) * n);   /* little-endian host */
        return 0;
    case ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &u, 4);
        }
        return 0;
    case ST_F16:
        for (int64_t i = 0; i < n; i++)
            out[i] = s_half((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case ST_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return util_err(err, errlen, "tensor '%s': dtype %s is not a floating type", t->name,
                        st_dtype_name(t->dtype));
    }
}

/* ---- writer ---- */

static void s_puts(char **b, size_t *n, size_t *cap, const char *s) {
    size_t k = strlen(s);
    while (*n + k + 1 > *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *b = util_realloc(*b, *cap);
    }
    memcpy(*b + *n, s, k + 1);
    *n += k;
}

static void s_put_json_string(char **b, size_t *n, size_t *cap, const char *s) {
    size_t k = strlen(s);
    char *esc = util_malloc(k * 6 + 3);
    util_json_escape(s, esc, k * 6 + 3);
    s_puts(b, n, cap, "\"");
    s_puts(b, n, cap, esc);
    s_puts(b, n, cap, "\"");
    free(esc);
}

int st_serialize(const st_tensor_t *ts, int n, const char *const *keys,
                 const char *const *values, int nmeta, void **out, size_t *outlen, char *err,
                 size_t errlen) {
    char *h = NULL, num[128];
    size_t hn = 0, hcap = 0, off = 0;
    s_puts(&h, &hn, &hcap, "{");
    int first = 1;
    if (nmeta > 0) {
        s_puts(&h, &hn, &hcap, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                s_puts(&h, &hn, &hcap, ",");
            s_put_json_string(&h, &hn, &hcap, keys[i]);
            s_puts(&h, &hn, &hcap, ":");
            s_put_json_string(&h, &hn, &hcap, values[i]);
        }
        s_puts(&h, &hn, &hcap, "}");
        first = 0;
    }
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = &ts[i];
        if (t->dtype < 0 || t->dtype >= ST__COUNT || t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            free(h);
            return util_err(err, errlen, "safetensors: tensor '%s' has a bad dtype or rank",
                            t->name);
        }
        if ((uint64_t)st_numel(t) * st_dtype_size(t->dtype) != t->nbytes) {
            free(h);
            return util_err(err, errlen, "safetensors: tensor '%s': %zu bytes do not match its "
                            "shape", t->name, t->nbytes);
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(ts[k].name, t->name)) {
                free(h);
                return util_err(err, errlen, "safetensors: tensor '%s' given twice", t->name);
            }
        if (!first)
            s_puts(&h, &hn, &hcap, ",");
        first = 0;
        s_put_json_string(&h, &hn, &hcap, t->name);
        snprintf(num, sizeof num, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        s_puts(&h, &hn, &hcap, num);
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            s_puts(&h, &hn, &hcap, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        s_puts(&h, &hn, &hcap, num);
        off += t->nbytes;
    }
    s_puts(&h, &hn, &hcap, "}");
    /* pad the header with spaces to a multiple of 8 so the data stays aligned */
    while (hn % 8)
        s_puts(&h, &hn, &hcap, " ");
    size_t total = 8 + hn + off;
    unsigned char *buf = util_malloc(total ? total : 1);
    uint64_t hl = hn;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hl >> (8 * i));
    memcpy(buf + 8, h, hn);
    size_t pos = 8 + hn;
    for (int i = 0; i < n; i++) {
        if (ts[i].nbytes)
            memcpy(buf + pos, ts[i].data, ts[i].nbytes);
        pos += ts[i].nbytes;
    }
    free(h);
    *out = buf;
    *outlen = total;
    return 0;
}

int st_write(const char *path, const st_tensor_t *ts, int n, const char *const *keys,
             const char *const *values, int nmeta, char *err, size_t errlen) {
    void *buf = NULL;
    size_t len = 0;
    if (st_serialize(ts, n, keys, values, nmeta, &buf, &len, err, errlen))
        return -1;
    int rc = util_write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    return rc;
}
