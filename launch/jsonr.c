/* jsonr.c: see jsonr.h. A recursive-descent parser over a bounded cursor; every read
 * checks the end first, so a truncated file (a line being written while `launch top`
 * reads it) ends in an error, not a read past the buffer. */
#include "jsonr.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} s_cur_t;

static jsonr_t *s_fail(s_cur_t *c, const char *why) {
    if (!c->failed)
        util_err(c->err, c->errlen, "offset %ld: %s", (long)(c->p - c->start), why);
    c->failed = 1;
    return NULL;
}

static void s_ws(s_cur_t *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static jsonr_t *s_new(jsonr_type_t t) {
    jsonr_t *v = util_calloc(1, sizeof *v);
    v->type = t;
    return v;
}

static int s_hex4(s_cur_t *c, unsigned *out) {
    if (c->end - c->p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char h = c->p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
        else return -1;
    }
    c->p += 4;
    *out = v;
    return 0;
}

/* A string at c->p (the opening quote); returns a malloc'd, unescaped copy. */
static char *s_string(s_cur_t *c) {
    c->p++;
    size_t cap = 32, n = 0;
    char *s = util_malloc(cap);
    for (;;) {
        if (c->p >= c->end) {
            free(s);
            s_fail(c, "unterminated string");
            return NULL;
        }
        unsigned char ch = (unsigned char)*c->p++;
        if (n + 5 >= cap)
            s = util_realloc(s, cap *= 2);
        if (ch == '"')
            break;
        if (ch < 0x20) {
            free(s);
            s_fail(c, "control character in a string");
            return NULL;
        }
        if (ch != '\\') {
            s[n++] = (char)ch;
            continue;
        }
        if (c->p >= c->end) {
            free(s);
            s_fail(c, "unterminated escape");
            return NULL;
        }
        char e = *c->p++;
        const char *map = strchr("\"\"\\\\//b\bf\fn\nr\rt\t", e);
        if (e && map && (map - "\"\"\\\\//b\bf\fn\nr\rt\t") % 2 == 0) {
            s[n++] = map[1];
            continue;
        }
        unsigned u;
        if (e != 'u' || s_hex4(c, &u)) {
            free(s);
            s_fail(c, "bad escape in a string");
            return NULL;
        }
        /* A surrogate pair makes one code point; a lone surrogate becomes U+FFFD. */
        if (u >= 0xD800 && u < 0xDC00 && c->end - c->p >= 6 && c->p[0] == '\\' &&
            c->p[1] == 'u') {
            unsigned lo;
            c->p += 2;
            if (s_hex4(c, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000)
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            else
                u = 0xFFFD;
        } else if (u >= 0xD800 && u < 0xE000) {
            u = 0xFFFD;
        }
        if (u < 0x80) {
            s[n++] = (char)u;
        } else if (u < 0x800) {
            s[n++] = (char)(0xC0 | (u >> 6));
            s[n++] = (char)(0x80 | (u & 0x3F));
        } else if (u < 0x10000) {
            s[n++] = (char)(0xE0 | (u >> 12));
            s[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
            s[n++] = (char)(0x80 | (u & 0x3F));
        } else {
            s[n++] = (char)(0xF0 | (u >> 18));
            s[n++] = (char)(0x80 | ((u >> 12) & 0x3F));
            s[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
            s[n++] = (char)(0x80 | (u & 0x3F));
        }
    }
    s[n] = 0;
    return s;
}

static jsonr_t *s_value(s_cur_t *c, int depth);

static void s_push(jsonr_t *v, char *key, jsonr_t *item) {
    if ((v->n & (v->n - 1)) == 0) {   /* grow at powers of two */
        size_t cap = v->n ? (size_t)v->n * 2 : 1;
        v->items = util_realloc(v->items, cap * sizeof *v->items);
        if (v->type == JSONR_OBJ)
            v->keys = util_realloc(v->keys, cap * sizeof *v->keys);
    }
    if (v->type == JSONR_OBJ)
        v->keys[v->n] = key;
    v->items[v->n++] = item;
}

static jsonr_t *s_container(s_cur_t *c, int depth, int obj) {
    jsonr_t *v = s_new(obj ? JSONR_OBJ : JSONR_ARR);
    c->p++;
    s_ws(c);
    if (c->p < c->end && *c->p == (obj ? '}' : ']')) {
        c->p++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        s_ws(c);
        if (obj) {
            if (c->p >= c->end || *c->p != '"') {
                s_fail(c, "expected a key");
                break;
            }
            if (!(key = s_string(c)))
                break;
            s_ws(c);
            if (c->p >= c->end || *c->p != ':') {
                free(key);
                s_fail(c, "expected ':'");
                break;
            }
            c->p++;
        }
        jsonr_t *item = s_value(c, depth + 1);
        if (!item) {
            free(key);
            break;
        }
        s_push(v, key, item);
        s_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == (obj ? '}' : ']')) {
            c->p++;
            return v;
        }
        s_fail(c, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        break;
    }
    jsonr_destroy(&v);
    return NULL;
}

static jsonr_t *s_number(s_cur_t *c) {
    /* The JSON number grammar, checked before strtod (which accepts more). */
    const char *q = c->p;
    if (q < c->end && *q == '-')
        q++;
    if (q >= c->end || *q < '0' || *q > '9')
        return s_fail(c, "unexpected character");
    if (*q == '0')
        q++;
    else
        while (q < c->end && *q >= '0' && *q <= '9')
            q++;
    if (q < c->end && *q == '.') {
        q++;
        if (q >= c->end || *q < '0' || *q > '9')
            return s_fail(c, "digit expected after '.'");
        while (q < c->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < c->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < c->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= c->end || *q < '0' || *q > '9')
            return s_fail(c, "digit expected in the exponent");
        while (q < c->end && *q >= '0' && *q <= '9')
            q++;
    }
    char buf[64];
    size_t len = (size_t)(q - c->p);
    if (len >= sizeof buf)
        return s_fail(c, "number too long");
    memcpy(buf, c->p, len);
    buf[len] = 0;
    jsonr_t *v = s_new(JSONR_NUM);
    v->num = strtod(buf, NULL);
    c->p = q;
    return v;
}

static jsonr_t *s_value(s_cur_t *c, int depth) {
    if (depth > 64)
        return s_fail(c, "nested deeper than 64 levels");
    s_ws(c);
    if (c->p >= c->end)
        return s_fail(c, "unexpected end of the text");
    switch (*c->p) {
    case '{':
        return s_container(c, depth, 1);
    case '[':
        return s_container(c, depth, 0);
    case '"': {
        char *s = s_string(c);
        if (!s)
            return NULL;
        jsonr_t *v = s_new(JSONR_STR);
        v->str = s;
        return v;
    }
    }
    static const struct { const char *word; jsonr_type_t t; double num; } words[] = {
        {"true", JSONR_BOOL, 1}, {"false", JSONR_BOOL, 0}, {"null", JSONR_NULL, 0}};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(words[i].word);
        if ((size_t)(c->end - c->p) >= l && memcmp(c->p, words[i].word, l) == 0) {
            c->p += l;
            jsonr_t *v = s_new(words[i].t);
            v->num = words[i].num;
            return v;
        }
    }
    return s_number(c);
}

jsonr_t *jsonr_parse(const char *text, size_t len, char *err, size_t errlen) {
    s_cur_t c = {.p = text, .end = text + len, .start = text, .err = err, .errlen = errlen};
    jsonr_t *v = s_value(&c, 0);
    if (!v)
        return NULL;
    s_ws(&c);
    if (c.p != c.end) {
        s_fail(&c, "text after the value");
        jsonr_destroy(&v);
    }
    return v;
}

void jsonr_destroy(jsonr_t **self_p) {
    if (!self_p || !*self_p)
        return;
    jsonr_t *v = *self_p;
    for (int i = 0; i < v->n; i++) {
        jsonr_destroy(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
    *self_p = NULL;
}

const jsonr_t *jsonr_get(const jsonr_t *obj, const char *key) {
    if (!obj || obj->type != JSONR_OBJ)
        return NULL;
    for (int i = obj->n - 1; i >= 0; i--)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

double jsonr_num(const jsonr_t *obj, const char *key, double fallback) {
    const jsonr_t *v = jsonr_get(obj, key);
    return v && v->type == JSONR_NUM ? v->num : fallback;
}

const char *jsonr_str(const jsonr_t *obj, const char *key, const char *fallback) {
    const jsonr_t *v = jsonr_get(obj, key);
    return v && v->type == JSONR_STR ? v->str : fallback;
}
