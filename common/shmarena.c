/* shmarena.c: the shared-memory arena (see shmarena.h).
 *
 * Layout of the shared object:
 *
 *   [arena header, 128 bytes][slot][slot]...[pad slot]        (all 64-byte aligned)
 *   slot = [slot header, 64 bytes][payload, len bytes][padding to 64]
 *
 * A slot header's tag word is gen << 2 | state. The producer writes a USED tag when it
 * reserves a slot; a consumer's release turns USED into FREE under the same generation
 * with one compare-and-swap, so a stale descriptor (older generation) or a second
 * release cannot free a slot that was already reused. PAD marks the unused tail of the
 * ring before a wrap. The ring's head, tail and fill level live in the producer's own
 * memory: only the producer allocates, so they need no sharing. */
#include "shmarena.h"
#include "util.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_MAGIC 0x414e455241414f46ull   /* "FOAARENA" little-endian */
#define S_VERSION 1u
#define S_HDR 128u                       /* arena header bytes */
#define S_SLOT_HDR 64u                   /* slot header bytes */
#define S_ALIGN 64u

enum { S_FREE = 0, S_USED = 1, S_PAD = 2 };

typedef struct {
    uint64_t magic;
    uint32_t version, hdr_size;
    uint64_t size;        /* bytes of the whole object */
    uint64_t data_off;    /* where the ring starts */
    uint64_t data_cap;    /* ring bytes */
    uint64_t creator;     /* the producer's pid, for diagnostics */
} s_arena_hdr_t;

typedef struct {
    _Atomic uint64_t tag;   /* gen << 2 | state */
    uint64_t len;           /* payload bytes */
    uint64_t total;         /* slot bytes, header and padding included */
} s_slot_hdr_t;

struct shmarena {
    char name[SHMARENA_NAME_MAX];
    uint8_t *base;
    size_t size;
    uint64_t cap;           /* ring bytes */
    uint64_t head, tail;    /* ring offsets of the next write and of the oldest slot */
    uint64_t used;          /* ring bytes held between tail and head */
    uint64_t gen;           /* last generation handed out */
};

static_assert(sizeof(s_arena_hdr_t) <= S_HDR, "arena header fits");
static_assert(sizeof(s_slot_hdr_t) <= S_SLOT_HDR, "slot header fits");

static _Atomic unsigned s_counter;

static uint64_t s_round(uint64_t n, uint64_t a) {
    return (n + a - 1) / a * a;
}

static s_slot_hdr_t *s_slot(uint8_t *base, uint64_t off) {
    return (s_slot_hdr_t *)(void *)(base + off);
}

/* ---------------------------------------------------------------- producer */

static int s_tag_ok(const char *tag) {
    size_t n = strlen(tag);
    if (n == 0 || n >= SHMARENA_TAG_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)tag[i]) || tag[i] == '_'))
            return 0;
    return 1;
}

shmarena_t *shmarena_new(size_t size, char *err, size_t errlen) {
    return shmarena_new_tagged(NULL, size, err, errlen);
}

shmarena_t *shmarena_new_tagged(const char *tag, size_t size, char *err, size_t errlen) {
    if (tag && !s_tag_ok(tag)) {
        util_err(err, errlen, "arena: tag '%.40s' is not 1 to %d letters, digits or '_'",
                 tag, SHMARENA_TAG_MAX - 1);
        return NULL;
    }
    if (size == 0)
        size = SHMARENA_DEFAULT_SIZE;
    if (size < SHMARENA_MIN_SIZE) {
        util_err(err, errlen, "arena: size %zu under the minimum %zu", size,
                 (size_t)SHMARENA_MIN_SIZE);
        return NULL;
    }
    size = (size_t)s_round(size, 4096);
    shmarena_t *self = util_calloc(1, sizeof *self);
    snprintf(self->name, sizeof self->name, SHMARENA_PREFIX "%s%s%d-%u", tag ? tag : "",
             tag ? "-" : "", (int)getpid(), atomic_fetch_add(&s_counter, 1));
    int fd = shm_open(self->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        util_err(err, errlen, "arena: shm_open %s: %s", self->name, strerror(errno));
        free(self);
        return NULL;
    }
    /* The pages are reserved now: a shared-memory folder too small for the arena (a
     * container's 64 MiB /dev/shm, say) fails here with a reason, where a sparse object
     * would kill the first process to touch a page past the room with SIGBUS. */
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc != 0) {
        util_err(err, errlen, "arena: %s: cannot reserve %zu MiB in /dev/shm: %s", self->name,
                 size >> 20, strerror(rc));
        close(fd);
        shm_unlink(self->name);
        free(self);
        return NULL;
    }
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (addr == MAP_FAILED) {
        util_err(err, errlen, "arena: mmap %s: %s", self->name, strerror(errno));
        shm_unlink(self->name);
        free(self);
        return NULL;
    }
    self->base = addr;
    self->size = size;
    self->cap = size - S_HDR;
    s_arena_hdr_t *h = (s_arena_hdr_t *)addr;
    h->version = S_VERSION;
    h->hdr_size = S_HDR;
    h->size = size;
    h->data_off = S_HDR;
    h->data_cap = self->cap;
    h->creator = (uint64_t)getpid();
    /* The magic last: a reader that maps a half-made arena refuses it. */
    atomic_thread_fence(memory_order_release);
    h->magic = S_MAGIC;
    return self;
}

void shmarena_destroy(shmarena_t **self_p) {
    if (self_p && *self_p)
        shm_unlink((*self_p)->name);
    shmarena_detach(self_p);
}

void shmarena_detach(shmarena_t **self_p) {
    if (!self_p || !*self_p)
        return;
    shmarena_t *self = *self_p;
    munmap(self->base, self->size);
    free(self);
    *self_p = NULL;
}

int shmarena_unlink_tag(const char *tag) {
    if (!tag || !s_tag_ok(tag))
        return -1;
    char prefix[SHMARENA_NAME_MAX];
    snprintf(prefix, sizeof prefix, "%s%s-", &SHMARENA_PREFIX[1], tag);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char name[sizeof e->d_name + 1];
        snprintf(name, sizeof name, "/%s", e->d_name);
        if (shm_unlink(name) == 0)
            n++;
    }
    closedir(d);
    return n;
}

const char *shmarena_name(const shmarena_t *self) {
    return self->name;
}

size_t shmarena_capacity(const shmarena_t *self) {
    return (size_t)self->cap;
}

/* Reclaim released slots from the tail, oldest first; stop at the first one in use. */
static void s_reclaim(shmarena_t *self) {
    uint8_t *ring = self->base + S_HDR;
    while (self->used > 0) {
        s_slot_hdr_t *s = s_slot(ring, self->tail);
        uint64_t tag = atomic_load_explicit(&s->tag, memory_order_acquire);
        if ((tag & 3) == S_USED)
            break;
        self->used -= s->total;
        self->tail += s->total;
        if (self->tail >= self->cap)
            self->tail = 0;
    }
    if (self->used == 0)
        self->head = self->tail = 0;   /* empty: start over at the front */
}

size_t shmarena_in_use(shmarena_t *self) {
    s_reclaim(self);
    return (size_t)self->used;
}

void *shmarena_reserve(shmarena_t *self, size_t len, shmarena_desc_t *desc) {
    uint64_t need = s_round((uint64_t)S_SLOT_HDR + len, S_ALIGN);
    if (len > self->cap || need > self->cap)
        return NULL;
    s_reclaim(self);
    uint8_t *ring = self->base + S_HDR;
    uint64_t at;
    if (self->used == 0) {
        at = 0;
    } else if (self->head > self->tail) {
        /* Free: [head, cap) and [0, tail). */
        if (self->cap - self->head >= need) {
            at = self->head;
        } else if (self->tail >= need) {
            /* Wrap: the rest of the ring becomes a pad slot the reclaim skips. */
            uint64_t rest = self->cap - self->head;
            if (rest > 0) {
                s_slot_hdr_t *p = s_slot(ring, self->head);
                p->len = 0;
                p->total = rest;
                atomic_store_explicit(&p->tag, S_PAD, memory_order_release);
                self->used += rest;
            }
            at = 0;
        } else {
            return NULL;
        }
    } else {
        /* head <= tail with slots in use: free is [head, tail). */
        if (self->tail - self->head >= need)
            at = self->head;
        else
            return NULL;
    }
    s_slot_hdr_t *s = s_slot(ring, at);
    uint64_t gen = ++self->gen;
    s->len = len;
    s->total = need;
    atomic_store_explicit(&s->tag, gen << 2 | S_USED, memory_order_release);
    self->used += need;
    self->head = at + need;
    if (self->head >= self->cap)
        self->head = 0;
    snprintf(desc->name, sizeof desc->name, "%s", self->name);
    desc->offset = S_HDR + at + S_SLOT_HDR;
    desc->len = len;
    desc->gen = gen;
    return ring + at + S_SLOT_HDR;
}

int shmarena_put(shmarena_t *self, const void *bytes, size_t len, shmarena_desc_t *desc) {
    void *dst = shmarena_reserve(self, len, desc);
    if (!dst)
        return 1;
    if (len)
        memcpy(dst, bytes, len);
    return 0;
}

/* ---------------------------------------------------------------- consumer */

typedef struct {
    char name[SHMARENA_NAME_MAX];
    uint8_t *base;
    size_t size;
} s_map_t;

struct shmarena_reader {
    pthread_mutex_t lock;
    s_map_t maps[SHMARENA_READER_MAX];
    int n;
    int last;          /* the last one found: one producer's descriptors come in runs */
};

shmarena_reader_t *shmarena_reader_new(void) {
    shmarena_reader_t *self = util_calloc(1, sizeof *self);
    pthread_mutex_init(&self->lock, NULL);
    return self;
}

void shmarena_reader_destroy(shmarena_reader_t **self_p) {
    if (!self_p || !*self_p)
        return;
    shmarena_reader_t *self = *self_p;
    for (int i = 0; i < self->n; i++)
        munmap(self->maps[i].base, self->maps[i].size);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

/* The mapping of arena `name`, mapped on first use. NULL with err. */
static s_map_t *s_reader_arena(shmarena_reader_t *self, const char *name, char *err,
                               size_t errlen) {
    size_t nl = strnlen(name, SHMARENA_NAME_MAX);
    if (nl == SHMARENA_NAME_MAX || strncmp(name, SHMARENA_PREFIX, strlen(SHMARENA_PREFIX)) ||
        strchr(name + 1, '/') || nl == strlen(SHMARENA_PREFIX)) {
        util_err(err, errlen, "arena descriptor: name '%.*s' is not " SHMARENA_PREFIX "...",
                 (int)(nl < 80 ? nl : 80), name);
        return NULL;
    }
    pthread_mutex_lock(&self->lock);
    if (self->last < self->n && strcmp(self->maps[self->last].name, name) == 0) {
        pthread_mutex_unlock(&self->lock);
        return &self->maps[self->last];
    }
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->maps[i].name, name) == 0) {
            self->last = i;
            pthread_mutex_unlock(&self->lock);
            return &self->maps[i];
        }
    s_map_t *m = NULL;
    if (self->n == SHMARENA_READER_MAX) {
        util_err(err, errlen, "arena %s: more than %d arenas mapped", name,
                 SHMARENA_READER_MAX);
        goto out;
    }
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) {
        util_err(err, errlen, "arena %s: %s", name, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < S_HDR + S_ALIGN) {
        util_err(err, errlen, "arena %s: too small to be an arena", name);
        close(fd);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (addr == MAP_FAILED) {
        util_err(err, errlen, "arena %s: mmap: %s", name, strerror(errno));
        goto out;
    }
    const s_arena_hdr_t *h = addr;
    uint64_t magic = h->magic;
    atomic_thread_fence(memory_order_acquire);
    if (magic != S_MAGIC || h->version != S_VERSION || h->hdr_size != S_HDR ||
        h->size != size || h->data_off != S_HDR || h->data_cap != size - S_HDR) {
        util_err(err, errlen, "arena %s: bad header (magic, version or size)", name);
        munmap(addr, size);
        goto out;
    }
    m = &self->maps[self->n++];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->base = addr;
    m->size = size;
out:
    pthread_mutex_unlock(&self->lock);
    return m;
}

/* Validate desc against its slot; the slot header and the tag it holds on success. */
static s_slot_hdr_t *s_check(shmarena_reader_t *self, const shmarena_desc_t *d, uint64_t *tag,
                             uint8_t **payload, char *err, size_t errlen) {
    s_map_t *m = s_reader_arena(self, d->name, err, errlen);
    if (!m)
        return NULL;
    /* The slot header sits right before the payload, at a 64-byte boundary of the ring. */
    if (d->offset < S_HDR + S_SLOT_HDR || d->offset > m->size - S_ALIGN ||
        (d->offset - S_HDR) % S_ALIGN != 0) {
        util_err(err, errlen, "arena %s: offset %llu is not a slot", d->name,
                 (unsigned long long)d->offset);
        return NULL;
    }
    if (d->len > m->size - d->offset) {
        util_err(err, errlen, "arena %s: len %llu at offset %llu beyond the arena", d->name,
                 (unsigned long long)d->len, (unsigned long long)d->offset);
        return NULL;
    }
    if (d->gen == 0 || d->gen > (UINT64_MAX >> 2)) {
        util_err(err, errlen, "arena %s: gen %llu out of range", d->name,
                 (unsigned long long)d->gen);
        return NULL;
    }
    s_slot_hdr_t *s = s_slot(m->base, d->offset - S_SLOT_HDR);
    uint64_t t = atomic_load_explicit(&s->tag, memory_order_acquire);
    if ((t & 3) != S_USED || t >> 2 != d->gen) {
        util_err(err, errlen, "arena %s: gen %llu at offset %llu is stale (the slot holds "
                 "gen %llu, %s)", d->name, (unsigned long long)d->gen,
                 (unsigned long long)d->offset, (unsigned long long)(t >> 2),
                 (t & 3) == S_USED ? "in use" : "released");
        return NULL;
    }
    uint64_t slen = s->len, total = s->total;
    if (total < S_SLOT_HDR + slen || total > m->size - (d->offset - S_SLOT_HDR)) {
        util_err(err, errlen, "arena %s: offset %llu is not a slot (bad slot header)",
                 d->name, (unsigned long long)d->offset);
        return NULL;
    }
    if (slen != d->len) {
        util_err(err, errlen, "arena %s: len %llu at offset %llu, the slot holds %llu",
                 d->name, (unsigned long long)d->len, (unsigned long long)d->offset,
                 (unsigned long long)slen);
        return NULL;
    }
    *tag = t;
    *payload = m->base + d->offset;
    return s;
}

const void *shmarena_reader_map(shmarena_reader_t *self, const shmarena_desc_t *desc,
                                char *err, size_t errlen) {
    uint64_t tag;
    uint8_t *p;
    return s_check(self, desc, &tag, &p, err, errlen) ? p : NULL;
}

int shmarena_reader_get(shmarena_reader_t *self, const shmarena_desc_t *desc, void *dst,
                        size_t dstcap, char *err, size_t errlen) {
    uint64_t tag;
    uint8_t *p;
    s_slot_hdr_t *s = s_check(self, desc, &tag, &p, err, errlen);
    if (!s)
        return -1;
    if (desc->len > dstcap)
        return util_err(err, errlen, "arena %s: len %llu over the %zu bytes of room",
                        desc->name, (unsigned long long)desc->len, dstcap);
    if (desc->len)
        memcpy(dst, p, desc->len);
    /* Released (and maybe reused) while copying: the copy is not the tensor. */
    if (atomic_load_explicit(&s->tag, memory_order_acquire) != tag)
        return util_err(err, errlen, "arena %s: gen %llu released while being read",
                        desc->name, (unsigned long long)desc->gen);
    return 0;
}

int shmarena_reader_release(shmarena_reader_t *self, const shmarena_desc_t *desc, char *err,
                            size_t errlen) {
    uint64_t tag;
    uint8_t *p;
    s_slot_hdr_t *s = s_check(self, desc, &tag, &p, err, errlen);
    if (!s)
        return -1;
    uint64_t want = tag;
    if (!atomic_compare_exchange_strong_explicit(&s->tag, &want, (tag & ~3ull) | S_FREE,
                                                 memory_order_acq_rel, memory_order_acquire))
        return util_err(err, errlen, "arena %s: gen %llu released twice", desc->name,
                        (unsigned long long)desc->gen);
    return 0;
}
