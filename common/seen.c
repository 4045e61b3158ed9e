/* seen.c: see seen.h. Open addressing with linear probing. Every key carries the count
 * of keys added before it; pruning rebuilds the table without the keys older than the
 * last SEEN_KEEP (when the table is half full, or holds 2 x SEEN_KEEP keys), and growing
 * happens only when pruning freed too little, so the cost stays amortised O(1) per key,
 * at most 2 x SEEN_KEEP keys are held and the table has at most 4 x SEEN_KEEP slots
 * (10 MB). */
#include "seen.h"
#include "util.h"

#include <string.h>

typedef struct {
    uint64_t id;
    int64_t epoch;
    uint64_t age;    /* keys added before this one */
    int valid;
    int used;
} s_key_t;

struct seen {
    s_key_t *v;
    size_t n, cap;   /* cap: a power of two */
    uint64_t added;
};

static size_t s_hash(uint64_t id, int64_t epoch, int valid, size_t cap) {
    uint64_t h = id * 0x9e3779b97f4a7c15ULL;
    h ^= ((uint64_t)epoch + 0x632be59bd9b4e019ULL) * 0xbf58476d1ce4e5b9ULL;
    h ^= (uint64_t)(valid != 0) << 63;
    h ^= h >> 31;
    return (size_t)(h & (cap - 1));
}

seen_t *seen_new(void) {
    seen_t *self = util_calloc(1, sizeof *self);
    self->cap = 1024;
    self->v = util_calloc(self->cap, sizeof *self->v);
    return self;
}

void seen_destroy(seen_t **self_p) {
    if (!self_p || !*self_p)
        return;
    free((*self_p)->v);
    free(*self_p);
    *self_p = NULL;
}

static s_key_t *s_slot(const seen_t *self, uint64_t id, int64_t epoch, int valid) {
    for (size_t j = s_hash(id, epoch, valid, self->cap);; j = (j + 1) & (self->cap - 1)) {
        s_key_t *e = &self->v[j];
        if (!e->used || (e->id == id && e->epoch == epoch && e->valid == valid))
            return e;
    }
}

/* Rebuild into a table of cap slots without the keys older than the last SEEN_KEEP. */
static void s_rebuild(seen_t *self, size_t cap) {
    s_key_t *old = self->v;
    size_t oldcap = self->cap;
    uint64_t keep_from = self->added > SEEN_KEEP ? self->added - SEEN_KEEP : 0;
    self->v = util_calloc(cap, sizeof *self->v);
    self->cap = cap;
    self->n = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].used && old[i].age >= keep_from) {
            *s_slot(self, old[i].id, old[i].epoch, old[i].valid) = old[i];
            self->n++;
        }
    free(old);
}

int seen_add(seen_t *self, uint64_t id, int64_t epoch, int valid) {
    valid = valid != 0;
    s_key_t *e = s_slot(self, id, epoch, valid);
    if (e->used)
        return 0;
    if (self->n + 1 > 2 * SEEN_KEEP || (self->n + 1) * 2 > self->cap) {
        s_rebuild(self, self->cap);          /* prune first */
        if ((self->n + 1) * 3 > self->cap)   /* still over a third full: grow */
            s_rebuild(self, self->cap * 2);
        e = s_slot(self, id, epoch, valid);
    }
    *e = (s_key_t){.id = id, .epoch = epoch, .age = self->added++, .valid = valid, .used = 1};
    self->n++;
    return 1;
}

int seen_has(const seen_t *self, uint64_t id, int64_t epoch, int valid) {
    return s_slot(self, id, epoch, valid != 0)->used;
}

size_t seen_count(const seen_t *self) { return self->n; }
