/* bpe.c: see bpe.h.
 *
 * Encoding merges inside one pre-token with a min-heap of adjacent pairs keyed by
 * (merge rank, position), over a linked list of symbols: O(n log n) per pre-token, so a
 * long run of odd bytes costs no more than its length suggests. Results are cached per
 * pre-token (most text repeats its words), and the cache is simply emptied when full.
 *
 * Training keeps, for every adjacent pair, its count and the list of words it occurs in,
 * and a max-heap of (count, pair) with lazy updates: an entry whose count is stale is
 * pushed back with the current count when it surfaces. Only the words containing the
 * chosen pair are rewritten at each merge. */
#include "bpe.h"

#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

#define FIRST_MERGE (TOK_NSPECIAL + TOK_NBYTES)

/* ---------------------------------------------------------------------------------
 * u64 -> int32 open-addressing map (keys are pairs: left << 32 | right) */

typedef struct {
    uint64_t *keys;   /* UINT64_MAX = empty */
    int32_t *vals;
    size_t cap, n;    /* cap is a power of two */
} s_map_t;

/* murmur3's finaliser: pair keys are small dense integers, which a plain modulo would
 * cluster into a few buckets. */
static uint64_t s_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static void s_map_init(s_map_t *m, size_t cap) {
    m->cap = 16;
    while (m->cap < cap * 2)
        m->cap *= 2;
    m->keys = util_malloc(m->cap * sizeof *m->keys);
    memset(m->keys, 0xff, m->cap * sizeof *m->keys);
    m->vals = util_malloc(m->cap * sizeof *m->vals);
    m->n = 0;
}

static void s_map_free(s_map_t *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* Slot of key: where it is, or the empty slot where it would go. */
static size_t s_map_slot(const s_map_t *m, uint64_t key) {
    size_t i = s_mix(key) & (m->cap - 1);
    while (m->keys[i] != UINT64_MAX && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int32_t s_map_get(const s_map_t *m, uint64_t key, int32_t dflt) {
    size_t i = s_map_slot(m, key);
    return m->keys[i] == key ? m->vals[i] : dflt;
}

static void s_map_put(s_map_t *m, uint64_t key, int32_t val) {
    if ((m->n + 1) * 2 > m->cap) {
        s_map_t big;
        s_map_init(&big, m->cap);
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i] != UINT64_MAX) {
                size_t j = s_map_slot(&big, m->keys[i]);
                big.keys[j] = m->keys[i];
                big.vals[j] = m->vals[i];
                big.n++;
            }
        s_map_free(m);
        *m = big;
    }
    size_t i = s_map_slot(m, key);
    if (m->keys[i] != key) {
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
}

static inline uint64_t s_pair(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

/* ---------------------------------------------------------------------------------
 * byte-string -> int32 map (pre-token cache, trainer word table) */

typedef struct {
    uint32_t *slots;  /* index + 1 into the entries; 0 = empty */
    size_t cap;
    uint32_t *off, *len;   /* key bytes: pool[off .. off+len) */
    int32_t *val;
    size_t n, ncap;
    char *pool;
    size_t pool_len, pool_cap;
} s_smap_t;

/* FNV-1a: pre-tokens are short, and this is cheap and good enough for them. */
static uint64_t s_hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static void s_smap_init(s_smap_t *m) {
    memset(m, 0, sizeof *m);
    m->cap = 1024;
    m->slots = util_calloc(m->cap, sizeof *m->slots);
}

static void s_smap_free(s_smap_t *m) {
    free(m->slots);
    free(m->off);
    free(m->len);
    free(m->val);
    free(m->pool);
    memset(m, 0, sizeof *m);
}

/* Empties the map but keeps its memory (the encode cache is cleared when full and then
 * refilled to the same size). */
static void s_smap_clear(s_smap_t *m) {
    memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->n = 0;
    m->pool_len = 0;
}

/* Index of the entry for key, or -1. */
static long s_smap_find(const s_smap_t *m, const char *key, size_t n, size_t *slot) {
    size_t i = s_hash_bytes(key, n) & (m->cap - 1);
    for (;;) {
        uint32_t e = m->slots[i];
        if (!e) {
            if (slot)
                *slot = i;
            return -1;
        }
        e--;
        if (m->len[e] == n && memcmp(m->pool + m->off[e], key, n) == 0) {
            if (slot)
                *slot = i;
            return (long)e;
        }
        i = (i + 1) & (m->cap - 1);
    }
}

/* Adds key (not present) with val; returns its index. */
static size_t s_smap_add(s_smap_t *m, const char *key, size_t n, int32_t val) {
    if ((m->n + 1) * 2 > m->cap) {
        free(m->slots);
        m->cap *= 2;
        m->slots = util_calloc(m->cap, sizeof *m->slots);
        for (size_t e = 0; e < m->n; e++) {
            size_t i = s_hash_bytes(m->pool + m->off[e], m->len[e]) & (m->cap - 1);
            while (m->slots[i])
                i = (i + 1) & (m->cap - 1);
            m->slots[i] = (uint32_t)e + 1;
        }
    }
    if (m->n == m->ncap) {
        m->ncap = m->ncap ? m->ncap * 2 : 256;
        m->off = util_realloc(m->off, m->ncap * sizeof *m->off);
        m->len = util_realloc(m->len, m->ncap * sizeof *m->len);
        m->val = util_realloc(m->val, m->ncap * sizeof *m->val);
    }
    if (m->pool_len + n > m->pool_cap) {
        m->pool_cap = (m->pool_len + n) * 2 + 4096;
        m->pool = util_realloc(m->pool, m->pool_cap);
    }
    size_t slot;
    s_smap_find(m, key, n, &slot);
    size_t e = m->n++;
    memcpy(m->pool + m->pool_len, key, n);
    m->off[e] = (uint32_t)m->pool_len;
    m->len[e] = (uint32_t)n;
    m->val[e] = val;
    m->pool_len += n;
    m->slots[slot] = (uint32_t)e + 1;
    return e;
}

/* ---------------------------------------------------------------------------------
 * Pre-tokenisation */

typedef enum { C_LETTER, C_DIGIT, C_SPACE, C_OTHER } s_class_t;

/* Byte classes of the pre-tokeniser. Every byte >= 0x80 counts as a letter: then a
 * UTF-8 character never splits between pre-tokens (its lead and continuation bytes are
 * all >= 0x80), and text in any script groups into words without a Unicode table. */
static inline s_class_t s_class(uint8_t c) {
    if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return C_LETTER;
    if (c >= '0' && c <= '9')
        return C_DIGIT;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
        return C_SPACE;
    return C_OTHER;
}

void tok_pretokenize(const char *text, size_t len,
                     void (*fn)(const char *piece, size_t n, void *arg), void *arg) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        s_class_t c = s_class(s[i]);
        if (s[i] == ' ' && i + 1 < len && s_class(s[i + 1]) != C_SPACE) {
            /* " word": the space belongs to the run that follows it. */
            c = s_class(s[i + 1]);
            i += 2;
            while (i < len && s_class(s[i]) == c)
                i++;
        } else if (c == C_SPACE) {
            while (i < len && s_class(s[i]) == C_SPACE)
                i++;
            /* Leave the last space to the next word, as GPT-2's \s+(?!\S) does. */
            if (i < len && i - start > 1 && s[i - 1] == ' ')
                i--;
        } else {
            while (i < len && s_class(s[i]) == c)
                i++;
        }
        fn(text + start, i - start, arg);
    }
}

/* ---------------------------------------------------------------------------------
 * The tokenizer */

#define CACHE_MAX_ENTRIES (1 << 16)
#define CACHE_MAX_IDS (1 << 22)

struct tok_bpe_t {
    int32_t *merges;          /* (n_merges, 2) */
    int n_merges;
    s_map_t ranks;            /* pair -> merge rank */
    char *bytes;              /* concatenated token bytes */
    uint32_t *tok_off, *tok_len; /* per BPE id (index id - TOK_BYTE0) */
    /* pre-token cache: value = offset into cache_ids; the count sits in front */
    s_smap_t cache;
    int32_t *cache_ids;
    size_t cache_n, cache_cap;
    /* encode scratch, grown to the longest pre-token seen */
    int32_t *sym, *prev, *next;
    struct s_heap_e *heap;
    size_t scratch_cap;
};

/* Builds the rank table and every token's bytes. A merge may only combine tokens that
 * exist before it; checking that here is what lets decode and the encoder trust ids
 * from a file without further bounds checks. */
tok_bpe_t *tok_bpe_new(const int32_t *merges, int n, char *err, size_t errlen) {
    if (n < 0)
        return util_err(err, errlen, "negative merge count %d", n), NULL;
    tok_bpe_t *self = util_calloc(1, sizeof *self);
    self->n_merges = n;
    self->merges = util_malloc((size_t)(n ? n : 1) * 2 * sizeof(int32_t));
    if (n)
        memcpy(self->merges, merges, (size_t)n * 2 * sizeof(int32_t));
    s_map_init(&self->ranks, (size_t)n + 1);
    int ntok = TOK_NBYTES + n;
    self->tok_off = util_malloc((size_t)ntok * sizeof(uint32_t));
    self->tok_len = util_malloc((size_t)ntok * sizeof(uint32_t));
    size_t cap = 4096, used = 0;
    self->bytes = util_malloc(cap);
    for (int b = 0; b < TOK_NBYTES; b++) {
        self->bytes[used] = (char)b;
        self->tok_off[b] = (uint32_t)used++;
        self->tok_len[b] = 1;
    }
    for (int r = 0; r < n; r++) {
        int32_t a = merges[2 * r], b = merges[2 * r + 1];
        int32_t limit = FIRST_MERGE + r;
        if (a < TOK_BYTE0 || a >= limit || b < TOK_BYTE0 || b >= limit) {
            util_err(err, errlen, "merge %d (%d %d) refers to a token that does not exist yet "
                     "(valid ids %d..%d)", r + 1, a, b, TOK_BYTE0, limit - 1);
            tok_bpe_destroy(&self);
            return NULL;
        }
        if (s_map_get(&self->ranks, s_pair(a, b), -1) >= 0) {
            util_err(err, errlen, "merge %d (%d %d) repeats an earlier merge", r + 1, a, b);
            tok_bpe_destroy(&self);
            return NULL;
        }
        s_map_put(&self->ranks, s_pair(a, b), r);
        uint32_t la = self->tok_len[a - TOK_BYTE0], lb = self->tok_len[b - TOK_BYTE0];
        if (used + la + lb > cap) {
            cap = (used + la + lb) * 2;
            self->bytes = util_realloc(self->bytes, cap);
        }
        memcpy(self->bytes + used, self->bytes + self->tok_off[a - TOK_BYTE0], la);
        memcpy(self->bytes + used + la, self->bytes + self->tok_off[b - TOK_BYTE0], lb);
        self->tok_off[TOK_NBYTES + r] = (uint32_t)used;
        self->tok_len[TOK_NBYTES + r] = la + lb;
        used += la + lb;
    }
    s_smap_init(&self->cache);
    return self;
}

void tok_bpe_destroy(tok_bpe_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tok_bpe_t *self = *self_p;
    free(self->merges);
    s_map_free(&self->ranks);
    free(self->bytes);
    free(self->tok_off);
    free(self->tok_len);
    s_smap_free(&self->cache);
    free(self->cache_ids);
    free(self->sym);
    free(self->prev);
    free(self->next);
    free(self->heap);
    free(self);
    *self_p = NULL;
}

tok_bpe_t *tok_bpe_clone(const tok_bpe_t *self) {
    return tok_bpe_new(self->merges, self->n_merges, NULL, 0);
}

int tok_bpe_n_merges(const tok_bpe_t *self) { return self->n_merges; }
int tok_bpe_vocab_size(const tok_bpe_t *self) { return FIRST_MERGE + self->n_merges + TOK_NBINS; }
int tok_bpe_bin0(const tok_bpe_t *self) { return FIRST_MERGE + self->n_merges; }
const int32_t *tok_bpe_merges(const tok_bpe_t *self) { return self->merges; }

/* Line-oriented on purpose: an error can name its line, and a checkpoint that embeds the
 * file can be inspected with a text editor. Nothing here trusts the input: counts are
 * bounded, numbers checked, and tok_bpe_new validates the merges themselves. */
tok_bpe_t *tok_bpe_parse(const char *text, size_t len, char *err, size_t errlen) {
    /* Header: "OFABPE <version>\nmerges <M>\n". */
    const char *p = text, *end = text + len;
    size_t ml = strlen(TOK_BPE_MAGIC);
    if (len < ml || memcmp(p, TOK_BPE_MAGIC, ml) != 0)
        return util_err(err, errlen, "line 1: not a BPE merges file (no '%s' magic)",
                        TOK_BPE_MAGIC), NULL;
    p += ml;
    int version, n, used = 0;
    char line[128];
    size_t ll = 0;
    while (p + ll < end && p[ll] != '\n' && ll < sizeof line - 1)
        ll++;
    memcpy(line, p, ll);
    line[ll] = 0;
    if (sscanf(line, " %d%n", &version, &used) != 1 || line[used] != 0)
        return util_err(err, errlen, "line 1: bad header '%s%s'", TOK_BPE_MAGIC, line), NULL;
    if (version != TOK_BPE_VERSION)
        return util_err(err, errlen, "line 1: BPE file version %d, this program reads %d",
                        version, TOK_BPE_VERSION), NULL;
    p += ll;
    if (p < end)
        p++;
    ll = 0;
    while (p + ll < end && p[ll] != '\n' && ll < sizeof line - 1)
        ll++;
    memcpy(line, p, ll);
    line[ll] = 0;
    if (sscanf(line, "merges %d%n", &n, &used) != 1 || line[used] != 0 || n < 0 ||
        n > 10000000)
        return util_err(err, errlen, "line 2: expected 'merges COUNT', got '%s'", line), NULL;
    p += ll;
    if (p < end)
        p++;
    int32_t *m = util_malloc((size_t)(n ? n : 1) * 2 * sizeof(int32_t));
    for (int r = 0; r < n; r++) {
        ll = 0;
        while (p + ll < end && p[ll] != '\n' && ll < sizeof line - 1)
            ll++;
        if (p >= end) {
            free(m);
            return util_err(err, errlen, "line %d: file ends after %d of %d merges", r + 3, r,
                            n), NULL;
        }
        memcpy(line, p, ll);
        line[ll] = 0;
        long a, b;
        char *e1, *e2;
        errno = 0;
        a = strtol(line, &e1, 10);
        b = strtol(e1, &e2, 10);
        if (e1 == line || e2 == e1 || *e2 != 0 || errno || a < 0 || b < 0 || a > INT32_MAX ||
            b > INT32_MAX) {
            free(m);
            return util_err(err, errlen, "line %d: expected 'LEFT RIGHT' ids, got '%.60s'",
                            r + 3, line), NULL;
        }
        m[2 * r] = (int32_t)a;
        m[2 * r + 1] = (int32_t)b;
        p += ll;
        if (p < end)
            p++;
    }
    while (p < end && (*p == '\n' || *p == ' '))
        p++;
    if (p < end) {
        free(m);
        return util_err(err, errlen, "line %d: text after the %d merges", n + 3, n), NULL;
    }
    char why[200];
    tok_bpe_t *self = tok_bpe_new(m, n, why, sizeof why);
    free(m);
    if (!self)
        util_err(err, errlen, "%s", why);
    return self;
}

tok_bpe_t *tok_bpe_load(const char *path, char *err, size_t errlen) {
    size_t len;
    char why[256];
    char *text = util_read_file(path, &len, why, sizeof why);
    if (!text)
        return util_err(err, errlen, "%s", why), NULL;
    tok_bpe_t *self = tok_bpe_parse(text, len, why, sizeof why);
    free(text);
    if (!self)
        util_err(err, errlen, "%s: %s", path, why);
    return self;
}

char *tok_bpe_serialize(const tok_bpe_t *self, size_t *len) {
    size_t cap = 64 + (size_t)self->n_merges * 24, n = 0;
    char *s = util_malloc(cap);
    n += (size_t)snprintf(s + n, cap - n, "%s %d\nmerges %d\n", TOK_BPE_MAGIC, TOK_BPE_VERSION,
                          self->n_merges);
    for (int r = 0; r < self->n_merges; r++)
        n += (size_t)snprintf(s + n, cap - n, "%d %d\n", self->merges[2 * r],
                              self->merges[2 * r + 1]);
    if (len)
        *len = n;
    return s;
}

int tok_bpe_save(const tok_bpe_t *self, const char *path, char *err, size_t errlen) {
    size_t len;
    char *s = tok_bpe_serialize(self, &len);
    int rc = util_write_file_atomic(path, s, len, err, errlen);
    free(s);
    return rc;
}

/* ---- encode ---- */

struct s_heap_e {
    int32_t rank;
    int32_t pos;
};

static inline int s_heap_less(const struct s_heap_e *a, const struct s_heap_e *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void s_heap_push(struct s_heap_e *h, size_t *n, struct s_heap_e e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!s_heap_less(&e, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static struct s_heap_e s_heap_pop(struct s_heap_e *h, size_t *n) {
    struct s_heap_e top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && s_heap_less(&h[c + 1], &h[c]))
            c++;
        if (!s_heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Encodes one pre-token into self->sym; returns the number of ids, which are read by
 * walking next[] from 0. The ids are compacted into sym[0..count) at the end. */
static size_t s_encode_piece(tok_bpe_t *self, const uint8_t *s, size_t n) {
    if (2 * n > self->scratch_cap) {
        size_t cap = n * 2;
        free(self->sym);
        free(self->prev);
        free(self->next);
        free(self->heap);
        self->sym = util_malloc(cap * sizeof(int32_t));
        self->prev = util_malloc(cap * sizeof(int32_t));
        self->next = util_malloc(cap * sizeof(int32_t));
        self->heap = util_malloc(cap * sizeof(struct s_heap_e));
        self->scratch_cap = cap;
    }
    int32_t *sym = self->sym, *prev = self->prev, *next = self->next;
    struct s_heap_e *heap = self->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = TOK_BYTE0 + s[i];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = s_map_get(&self->ranks, s_pair(sym[i], sym[i + 1]), -1);
        if (r >= 0)
            s_heap_push(heap, &hn, (struct s_heap_e){r, (int32_t)i});
    }
    /* A heap entry is valid if its pair still stands at pos: pos alive (sym >= 0), a
     * right neighbour, and the two ids still form the merge of that rank. The heap
     * starts with at most n - 1 entries, and every merge pops one entry and pushes at
     * most two, so it never holds more than 2(n - 1): the scratch (>= 2n) suffices. */
    while (hn) {
        struct s_heap_e e = s_heap_pop(heap, &hn);
        int32_t i = e.pos, j;
        if (sym[i] < 0 || (j = next[i]) < 0)
            continue;
        const int32_t *mg = self->merges + 2 * e.rank;
        if (sym[i] != mg[0] || sym[j] != mg[1])
            continue;
        sym[i] = FIRST_MERGE + e.rank;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0)
            prev[next[j]] = i;
        if (prev[i] >= 0) {
            int32_t r = s_map_get(&self->ranks, s_pair(sym[prev[i]], sym[i]), -1);
            if (r >= 0) {
                OFA_ASSERT(hn < self->scratch_cap);
                s_heap_push(heap, &hn, (struct s_heap_e){r, prev[i]});
            }
        }
        if (next[i] >= 0) {
            int32_t r = s_map_get(&self->ranks, s_pair(sym[i], sym[next[i]]), -1);
            if (r >= 0) {
                OFA_ASSERT(hn < self->scratch_cap);
                s_heap_push(heap, &hn, (struct s_heap_e){r, i});
            }
        }
    }
    size_t count = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        sym[count++] = sym[i];
    return count;
}

typedef struct {
    tok_bpe_t *self;
    int32_t *out;
    size_t cap, n;
} s_enc_t;

/* One pre-token: from the cache when seen before, else encoded and remembered. The ids
 * are copied out to the caller's buffer only up to its capacity, while the count goes
 * on, so the caller learns how much room the whole text needs. */
static void s_enc_piece(const char *piece, size_t n, void *arg) {
    s_enc_t *st = arg;
    tok_bpe_t *self = st->self;
    const int32_t *ids;
    size_t count;
    long e = s_smap_find(&self->cache, piece, n, NULL);
    if (e >= 0) {
        ids = self->cache_ids + self->cache.val[e] + 1;
        count = (size_t)self->cache_ids[self->cache.val[e]];
    } else {
        count = s_encode_piece(self, (const uint8_t *)piece, n);
        ids = self->sym;
        if (self->cache.n >= CACHE_MAX_ENTRIES || self->cache_n + count + 1 > CACHE_MAX_IDS) {
            s_smap_clear(&self->cache);
            self->cache_n = 0;
        }
        if (self->cache_n + count + 1 <= CACHE_MAX_IDS) {
            if (self->cache_n + count + 1 > self->cache_cap) {
                self->cache_cap = (self->cache_n + count + 1) * 2;
                self->cache_ids = util_realloc(self->cache_ids,
                                               self->cache_cap * sizeof(int32_t));
            }
            self->cache_ids[self->cache_n] = (int32_t)count;
            memcpy(self->cache_ids + self->cache_n + 1, ids, count * sizeof(int32_t));
            s_smap_add(&self->cache, piece, n, (int32_t)self->cache_n);
            self->cache_n += count + 1;
        }
    }
    for (size_t k = 0; k < count; k++, st->n++)
        if (st->n < st->cap)
            st->out[st->n] = ids[k];
}

size_t tok_bpe_encode(tok_bpe_t *self, const char *text, size_t len, int32_t *out,
                      size_t cap) {
    s_enc_t st = {.self = self, .out = out, .cap = out ? cap : 0, .n = 0};
    tok_pretokenize(text, len, s_enc_piece, &st);
    return st.n;
}

/* ---- decode ---- */

static const char *s_special_names[TOK_NSPECIAL] = {"", "", "", "<unk>", "<mask>"};

/* <s>, </s> and <pad> render as nothing because they frame text rather than belong to
 * it; <mask>, <unk> and bins render as their names so that a decoded sequence shows
 * where they were. */
const char *tok_bpe_token_bytes(const tok_bpe_t *self, int32_t id, size_t *len) {
    static __thread char binbuf[16];
    if (id >= 0 && id < TOK_NSPECIAL) {
        *len = strlen(s_special_names[id]);
        return s_special_names[id];
    }
    if (id >= TOK_BYTE0 && id < FIRST_MERGE + self->n_merges) {
        *len = self->tok_len[id - TOK_BYTE0];
        return self->bytes + self->tok_off[id - TOK_BYTE0];
    }
    int bin0 = FIRST_MERGE + self->n_merges;
    if (id >= bin0 && id < bin0 + TOK_NBINS) {
        *len = (size_t)snprintf(binbuf, sizeof binbuf, "<bin_%d>", id - bin0);
        return binbuf;
    }
    *len = 0;
    return "";
}

size_t tok_bpe_decode(const tok_bpe_t *self, const int32_t *ids, size_t n, char *out,
                      size_t cap) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *b = tok_bpe_token_bytes(self, ids[i], &l);
        if (total < cap)
            memcpy(out + total, b, l <= cap - total ? l : cap - total);
        total += l;
    }
    if (out && total < cap)
        out[total] = 0;
    return total;
}

/* ---------------------------------------------------------------------------------
 * Trainer */

typedef struct {
    int32_t *sym;       /* current symbols */
    int32_t n;
    int64_t count;      /* occurrences in the corpus */
    int32_t stamp;      /* last merge that rewrote it (dedupes the pair's word list) */
} s_word_t;

typedef struct {
    int32_t a, b;
    int64_t count;
    int32_t *words;     /* words it occurs (or occurred) in; may repeat */
    size_t nw, capw;
} s_pairstat_t;

typedef struct {
    int64_t count;
    int32_t a, b;
} s_theap_e;

struct tok_bpe_trainer_t {
    s_smap_t words;     /* pre-token -> occurrences (int32 index into counts) */
    int64_t *counts;
    size_t counts_cap;
    size_t occurrences;
};

tok_bpe_trainer_t *tok_bpe_trainer_new(void) {
    tok_bpe_trainer_t *self = util_calloc(1, sizeof *self);
    s_smap_init(&self->words);
    return self;
}

void tok_bpe_trainer_destroy(tok_bpe_trainer_t **self_p) {
    if (!self_p || !*self_p)
        return;
    s_smap_free(&(*self_p)->words);
    free((*self_p)->counts);
    free(*self_p);
    *self_p = NULL;
}

/* Training counts distinct pre-tokens: a caption corpus repeats its words so often that
 * the merge loop below works on tens of thousands of words, not millions of
 * occurrences. */
static void s_train_piece(const char *piece, size_t n, void *arg) {
    tok_bpe_trainer_t *self = arg;
    long e = s_smap_find(&self->words, piece, n, NULL);
    if (e < 0) {
        e = (long)s_smap_add(&self->words, piece, n, 0);
        if ((size_t)e >= self->counts_cap) {
            self->counts_cap = self->counts_cap ? self->counts_cap * 2 : 1024;
            self->counts = util_realloc(self->counts, self->counts_cap * sizeof(int64_t));
        }
        self->counts[e] = 0;
    }
    self->counts[e]++;
    self->occurrences++;
}

void tok_bpe_trainer_add(tok_bpe_trainer_t *self, const char *text, size_t len) {
    tok_pretokenize(text, len, s_train_piece, self);
}

size_t tok_bpe_trainer_words(const tok_bpe_trainer_t *self, size_t *occurrences) {
    if (occurrences)
        *occurrences = self->occurrences;
    return self->words.n;
}

/* Max-heap order: higher count first, then smaller (a, b). */
static inline int s_theap_before(const s_theap_e *x, const s_theap_e *y) {
    if (x->count != y->count)
        return x->count > y->count;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

typedef struct {
    s_theap_e *h;
    size_t n, cap;
} s_theap_t;

static void s_theap_push(s_theap_t *q, s_theap_e e) {
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 1024;
        q->h = util_realloc(q->h, q->cap * sizeof *q->h);
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!s_theap_before(&e, &q->h[p]))
            break;
        q->h[i] = q->h[p];
        i = p;
    }
    q->h[i] = e;
}

static s_theap_e s_theap_pop(s_theap_t *q) {
    s_theap_e top = q->h[0], last = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n)
            break;
        if (c + 1 < q->n && s_theap_before(&q->h[c + 1], &q->h[c]))
            c++;
        if (!s_theap_before(&q->h[c], &last))
            break;
        q->h[i] = q->h[c];
        i = c;
    }
    if (q->n)
        q->h[i] = last;
    return top;
}

typedef struct {
    s_map_t index;      /* pair -> index into stats */
    s_pairstat_t *stats;
    size_t n, cap;
} s_pairs_t;

/* The stats of pair (a, b), created at count 0 when new. The returned pointer is valid
 * only until the next call (the array may move). */
static s_pairstat_t *s_pairs_get(s_pairs_t *ps, int32_t a, int32_t b) {
    int32_t i = s_map_get(&ps->index, s_pair(a, b), -1);
    if (i >= 0)
        return &ps->stats[i];
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 1024;
        ps->stats = util_realloc(ps->stats, ps->cap * sizeof *ps->stats);
    }
    s_pairstat_t *st = &ps->stats[ps->n];
    memset(st, 0, sizeof *st);
    st->a = a;
    st->b = b;
    s_map_put(&ps->index, s_pair(a, b), (int32_t)ps->n++);
    return st;
}

/* Word lists may hold a word twice or a word that lost the pair since: both are
 * harmless (the merge loop checks each word) and cheaper than keeping them exact. */
static void s_pairstat_addword(s_pairstat_t *st, int32_t w) {
    if (st->nw && st->words[st->nw - 1] == w)
        return;
    if (st->nw == st->capw) {
        st->capw = st->capw ? st->capw * 2 : 4;
        st->words = util_realloc(st->words, st->capw * sizeof(int32_t));
    }
    st->words[st->nw++] = w;
}

tok_bpe_t *tok_bpe_trainer_learn(tok_bpe_trainer_t *self, int n_merges, int min_count) {
    if (min_count < 2)
        min_count = 2;
    size_t nw = self->words.n;
    s_word_t *words = util_calloc(nw ? nw : 1, sizeof *words);
    s_pairs_t ps = {0};
    s_map_init(&ps.index, 1024);
    for (size_t w = 0; w < nw; w++) {
        const uint8_t *s = (const uint8_t *)self->words.pool + self->words.off[w];
        words[w].n = (int32_t)self->words.len[w];
        words[w].count = self->counts[w];
        words[w].stamp = -1;
        words[w].sym = util_malloc((size_t)words[w].n * sizeof(int32_t));
        for (int32_t i = 0; i < words[w].n; i++)
            words[w].sym[i] = TOK_BYTE0 + s[i];
        for (int32_t i = 0; i + 1 < words[w].n; i++) {
            s_pairstat_t *st = s_pairs_get(&ps, words[w].sym[i], words[w].sym[i + 1]);
            st->count += words[w].count;
            s_pairstat_addword(st, (int32_t)w);
        }
    }
    s_theap_t q = {0};
    for (size_t i = 0; i < ps.n; i++)
        s_theap_push(&q, (s_theap_e){ps.stats[i].count, ps.stats[i].a, ps.stats[i].b});

    int32_t *merges = util_malloc((size_t)(n_merges > 0 ? n_merges : 1) * 2 * sizeof(int32_t));
    int nm = 0;
    while (nm < n_merges && q.n) {
        s_theap_e top = s_theap_pop(&q);
        int32_t si = s_map_get(&ps.index, s_pair(top.a, top.b), -1);
        int64_t cur = ps.stats[si].count;
        if (cur != top.count) {
            /* Stale entry: the count fell since it was pushed. */
            if (cur > 0)
                s_theap_push(&q, (s_theap_e){cur, top.a, top.b});
            continue;
        }
        if (cur < min_count)
            break;
        int32_t a = top.a, b = top.b, id = FIRST_MERGE + nm;
        merges[2 * nm] = a;
        merges[2 * nm + 1] = b;
        /* Rewrite each word that holds (a, b): take its pairs out of the counts, merge,
         * put its new pairs back. The list is copied first: s_pairs_get may move stats. */
        size_t nlist = ps.stats[si].nw;
        int32_t *list = util_malloc((nlist ? nlist : 1) * sizeof(int32_t));
        memcpy(list, ps.stats[si].words, nlist * sizeof(int32_t));
        for (size_t k = 0; k < nlist; k++) {
            s_word_t *w = &words[list[k]];
            if (w->stamp == nm)
                continue;
            w->stamp = nm;
            int found = 0;
            for (int32_t i = 0; i + 1 < w->n; i++)
                if (w->sym[i] == a && w->sym[i + 1] == b) {
                    found = 1;
                    break;
                }
            if (!found)
                continue;
            for (int32_t i = 0; i + 1 < w->n; i++)
                s_pairs_get(&ps, w->sym[i], w->sym[i + 1])->count -= w->count;
            int32_t o = 0;
            for (int32_t i = 0; i < w->n; i++) {
                if (i + 1 < w->n && w->sym[i] == a && w->sym[i + 1] == b) {
                    w->sym[o++] = id;
                    i++;
                } else {
                    w->sym[o++] = w->sym[i];
                }
            }
            w->n = o;
            for (int32_t i = 0; i + 1 < w->n; i++) {
                s_pairstat_t *st = s_pairs_get(&ps, w->sym[i], w->sym[i + 1]);
                st->count += w->count;
                if (w->sym[i] == id || w->sym[i + 1] == id)
                    s_pairstat_addword(st, list[k]);
            }
        }
        /* Only pairs made with the new token gained counts (the others can only have
         * lost some, which the lazy check on pop handles): push them with their final
         * counts. A pair pushed twice is harmless: once merged its count is 0 and the
         * second entry is dropped as stale. */
        for (size_t k = 0; k < nlist; k++) {
            s_word_t *w = &words[list[k]];
            if (w->stamp != nm)
                continue;
            for (int32_t i = 0; i + 1 < w->n; i++)
                if (w->sym[i] == id || w->sym[i + 1] == id) {
                    s_pairstat_t *st = s_pairs_get(&ps, w->sym[i], w->sym[i + 1]);
                    s_theap_push(&q, (s_theap_e){st->count, st->a, st->b});
                }
        }
        free(list);
        nm++;
    }
    tok_bpe_t *bpe = tok_bpe_new(merges, nm, NULL, 0);
    OFA_ASSERT(bpe);
    free(merges);
    for (size_t w = 0; w < nw; w++)
        free(words[w].sym);
    free(words);
    for (size_t i = 0; i < ps.n; i++)
        free(ps.stats[i].words);
    free(ps.stats);
    s_map_free(&ps.index);
    free(q.h);
    return bpe;
}
