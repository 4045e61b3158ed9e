/* proto.c: see proto.h.
 *
 * Encoding uses msgpack-c's packer. Decoding uses a small bounded reader written here
 * instead of msgpack_unpack: the reader never allocates on the say-so of a length
 * header (a hostile "array of 4 billion" costs nothing), checks every length against the
 * bytes actually present, and limits nesting, which is what a decoder facing arbitrary
 * bytes from a socket needs. */
#include "proto.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    void *addr;
    size_t len;
} s_map_t;

struct proto_msg {
    proto_kind_t kind;
    char task[128];
    char op[32];
    uint64_t *ids;
    int n_ids, cap_ids;
    proto_field_t *fields;
    char **shm_names;        /* parallel to fields: send this field through shm */
    shmarena_desc_t *arena;  /* parallel to fields: gen != 0: the field's bytes lie in
                              * an arena slot and travel as its descriptor */
    int n_fields, cap_fields;
    zmq_msg_t *frames;       /* received frames that fields may point into */
    int n_frames;
    s_map_t *maps;           /* shared-memory mappings that fields may point into */
    int n_maps;
};

/* ---------------------------------------------------------------- names */

static const char *s_dtype_names[PROTO__DTYPE_COUNT] = {"u8", "i32", "i64", "f32", "bf16",
                                                         "u16"};
static const size_t s_dtype_sizes[PROTO__DTYPE_COUNT] = {1, 4, 8, 4, 2, 2};

size_t proto_dtype_size(proto_dtype_t dtype) {
    return (unsigned)dtype < PROTO__DTYPE_COUNT ? s_dtype_sizes[dtype] : 0;
}

const char *proto_dtype_name(proto_dtype_t dtype) {
    return (unsigned)dtype < PROTO__DTYPE_COUNT ? s_dtype_names[dtype] : "?";
}

int proto_dtype_from_name(const char *name) {
    for (int i = 0; i < PROTO__DTYPE_COUNT; i++)
        if (strcmp(name, s_dtype_names[i]) == 0)
            return i;
    return -1;
}

const char *proto_kind_name(proto_kind_t kind) {
    static const char *names[] = {"?", "sample", "batch", "credit", "reject", "stats",
                                  "control"};
    return kind >= 1 && kind <= PROTO__KIND_MAX ? names[kind] : "?";
}

/* ---------------------------------------------------------------- building */

proto_msg_t *proto_msg_new(proto_kind_t kind, const char *task) {
    proto_msg_t *self = util_calloc(1, sizeof *self);
    self->kind = kind;
    if (task)
        snprintf(self->task, sizeof self->task, "%s", task);
    return self;
}

static void s_field_free(proto_msg_t *self, int i) {
    if (self->fields[i].own)
        free(self->fields[i].data);
    self->fields[i].data = NULL;
    self->fields[i].own = false;
    if (self->shm_names[i]) {
        /* Not handed to a receiver (proto_send clears the name once sent): nobody else
         * will unlink this object, so the writer does. */
        shm_unlink(self->shm_names[i]);
        free(self->shm_names[i]);
        self->shm_names[i] = NULL;
    }
    /* An arena slot is not the message's: its consumer releases it (see shmarena.h). */
    self->arena[i].gen = 0;
}

void proto_msg_destroy(proto_msg_t **self_p) {
    if (!self_p || !*self_p)
        return;
    proto_msg_t *self = *self_p;
    for (int i = 0; i < self->n_fields; i++)
        s_field_free(self, i);
    free(self->fields);
    free(self->shm_names);
    free(self->arena);
    free(self->ids);
    for (int i = 0; i < self->n_frames; i++)
        zmq_msg_close(&self->frames[i]);
    free(self->frames);
    for (int i = 0; i < self->n_maps; i++)
        munmap(self->maps[i].addr, self->maps[i].len);
    free(self->maps);
    free(self);
    *self_p = NULL;
}

proto_kind_t proto_msg_kind(const proto_msg_t *self) { return self->kind; }
void proto_msg_set_kind(proto_msg_t *self, proto_kind_t kind) { self->kind = kind; }
const char *proto_msg_task(const proto_msg_t *self) { return self->task; }
void proto_msg_set_task(proto_msg_t *self, const char *task) {
    snprintf(self->task, sizeof self->task, "%s", task ? task : "");
}
const char *proto_msg_op(const proto_msg_t *self) { return self->op; }
void proto_msg_set_op(proto_msg_t *self, const char *op) {
    snprintf(self->op, sizeof self->op, "%s", op ? op : "");
}

int proto_msg_n_ids(const proto_msg_t *self) { return self->n_ids; }
const uint64_t *proto_msg_ids(const proto_msg_t *self) { return self->ids; }

void proto_msg_add_id(proto_msg_t *self, uint64_t id) {
    if (self->n_ids == self->cap_ids) {
        self->cap_ids = self->cap_ids ? self->cap_ids * 2 : 4;
        self->ids = util_realloc(self->ids, (size_t)self->cap_ids * sizeof *self->ids);
    }
    self->ids[self->n_ids++] = id;
}

void proto_msg_set_ids(proto_msg_t *self, const uint64_t *ids, int n) {
    self->n_ids = 0;
    for (int i = 0; i < n; i++)
        proto_msg_add_id(self, ids[i]);
}

static int s_find(const proto_msg_t *self, const char *key) {
    for (int i = 0; i < self->n_fields; i++)
        if (strcmp(self->fields[i].key, key) == 0)
            return i;
    return -1;
}

/* Room for at least n fields. */
static void s_reserve(proto_msg_t *self, int n) {
    if (n <= self->cap_fields)
        return;
    self->cap_fields = n;
    self->fields = util_realloc(self->fields, (size_t)n * sizeof *self->fields);
    self->shm_names = util_realloc(self->shm_names, (size_t)n * sizeof(char *));
    self->arena = util_realloc(self->arena, (size_t)n * sizeof *self->arena);
}

/* Field f emptied and named key (keylen bytes, under PROTO_MAX_KEY). */
static proto_field_t *s_field_init(proto_field_t *f, const char *key, size_t keylen) {
    OFA_ASSERT(keylen < PROTO_MAX_KEY);
    memset(f, 0, sizeof *f);
    memcpy(f->key, key, keylen + 1);
    f->frame = -1;
    return f;
}

/* A new field for key, which the caller knows is not there yet. */
static proto_field_t *s_append(proto_msg_t *self, const char *key, size_t keylen) {
    if (self->n_fields == self->cap_fields)
        s_reserve(self, self->cap_fields ? self->cap_fields * 2 : 8);
    int i = self->n_fields++;
    self->shm_names[i] = NULL;
    self->arena[i].gen = 0;
    return s_field_init(&self->fields[i], key, keylen);
}

/* The slot for key: an existing field (its data released) or a new one. */
static proto_field_t *s_slot(proto_msg_t *self, const char *key) {
    size_t keylen = strlen(key);
    int i = s_find(self, key);
    if (i < 0)
        return s_append(self, key, keylen);
    s_field_free(self, i);
    return s_field_init(&self->fields[i], key, keylen);
}

void proto_msg_set_int(proto_msg_t *self, const char *key, int64_t v) {
    proto_field_t *f = s_slot(self, key);
    f->type = PV_INT;
    f->i = v;
}

void proto_msg_set_float(proto_msg_t *self, const char *key, double v) {
    proto_field_t *f = s_slot(self, key);
    f->type = PV_FLOAT;
    f->f = v;
}

void proto_msg_set_str(proto_msg_t *self, const char *key, const char *s) {
    size_t n = strlen(s);
    char *copy = util_malloc(n + 1);
    memcpy(copy, s, n + 1);
    proto_field_t *f = s_slot(self, key);
    f->type = PV_STR;
    f->data = copy;
    f->len = n;
    f->own = true;
}

void proto_msg_take_bin(proto_msg_t *self, const char *key, void *data, size_t len) {
    proto_field_t *f = s_slot(self, key);
    f->type = PV_BIN;
    f->data = data;
    f->len = len;
    f->own = true;
}

void proto_msg_set_bin(proto_msg_t *self, const char *key, const void *data, size_t len) {
    void *copy = util_malloc(len);
    if (len)
        memcpy(copy, data, len);
    proto_msg_take_bin(self, key, copy, len);
}

static size_t s_numel(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    return n;
}

void proto_msg_take_tensor(proto_msg_t *self, const char *key, proto_dtype_t dtype, int ndim,
                           const int64_t *shape, void *data) {
    OFA_ASSERT(ndim >= 0 && ndim <= PROTO_MAX_DIMS && proto_dtype_size(dtype) > 0);
    proto_field_t *f = s_slot(self, key);
    f->type = PV_TENSOR;
    f->dtype = dtype;
    f->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        OFA_ASSERT(shape[d] >= 0);
        f->shape[d] = shape[d];
    }
    f->len = s_numel(ndim, shape) * proto_dtype_size(dtype);
    f->data = data;
    f->own = true;
}

void proto_msg_set_tensor(proto_msg_t *self, const char *key, proto_dtype_t dtype, int ndim,
                          const int64_t *shape, const void *data) {
    size_t len = s_numel(ndim, shape) * proto_dtype_size(dtype);
    void *copy = util_malloc(len);
    if (len)
        memcpy(copy, data, len);
    proto_msg_take_tensor(self, key, dtype, ndim, shape, copy);
}

const proto_field_t *proto_msg_get(const proto_msg_t *self, const char *key) {
    int i = s_find(self, key);
    return i < 0 ? NULL : &self->fields[i];
}

int proto_msg_n_fields(const proto_msg_t *self) { return self->n_fields; }

const proto_field_t *proto_msg_field(const proto_msg_t *self, int i) {
    OFA_ASSERT(i >= 0 && i < self->n_fields);
    return &self->fields[i];
}

int proto_msg_remove(proto_msg_t *self, const char *key) {
    int i = s_find(self, key);
    if (i < 0)
        return -1;
    s_field_free(self, i);
    memmove(&self->fields[i], &self->fields[i + 1],
            (size_t)(self->n_fields - i - 1) * sizeof *self->fields);
    memmove(&self->shm_names[i], &self->shm_names[i + 1],
            (size_t)(self->n_fields - i - 1) * sizeof(char *));
    memmove(&self->arena[i], &self->arena[i + 1],
            (size_t)(self->n_fields - i - 1) * sizeof *self->arena);
    self->n_fields--;
    return 0;
}

int proto_msg_rename(proto_msg_t *self, const char *key, const char *new_key) {
    int i = s_find(self, key);
    if (i < 0)
        return -1;
    /* Renaming a field to its own name: removing "the other field of that name" below
     * would remove this one and leave i at -1. */
    if (strcmp(key, new_key) == 0)
        return 0;
    proto_msg_remove(self, new_key);
    i = s_find(self, key);
    OFA_ASSERT(strlen(new_key) < PROTO_MAX_KEY);
    snprintf(self->fields[i].key, sizeof self->fields[i].key, "%s", new_key);
    return 0;
}

int64_t proto_msg_get_int(const proto_msg_t *self, const char *key, int64_t dflt) {
    const proto_field_t *f = proto_msg_get(self, key);
    return f && f->type == PV_INT ? f->i : dflt;
}

double proto_msg_get_float(const proto_msg_t *self, const char *key, double dflt) {
    const proto_field_t *f = proto_msg_get(self, key);
    if (!f)
        return dflt;
    if (f->type == PV_FLOAT)
        return f->f;
    if (f->type == PV_INT)
        return (double)f->i;
    return dflt;
}

const char *proto_msg_get_str(const proto_msg_t *self, const char *key) {
    const proto_field_t *f = proto_msg_get(self, key);
    return f && f->type == PV_STR ? (const char *)f->data : NULL;
}

const proto_field_t *proto_msg_get_tensor(const proto_msg_t *self, const char *key,
                                          proto_dtype_t dtype) {
    const proto_field_t *f = proto_msg_get(self, key);
    return f && f->type == PV_TENSOR && f->dtype == dtype ? f : NULL;
}

size_t proto_msg_bytes(const proto_msg_t *self) {
    size_t n = 0;
    for (int i = 0; i < self->n_fields; i++)
        n += self->fields[i].type >= PV_STR ? self->fields[i].len : 8;
    return n;
}

/* ---------------------------------------------------------------- encoding */

static void s_pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Pack the envelope. Fields over inline_max bytes (bins, tensors) are replaced by frame
 * indices; their field numbers go to big[] in frame order (*n_big of them). */
static void s_pack(const proto_msg_t *self, size_t inline_max, bool use_shm,
                   msgpack_sbuffer *sb, int *big, int *n_big) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int n_top = 5 + (self->op[0] ? 1 : 0) + 1;
    msgpack_pack_map(&pk, (size_t)n_top);
    s_pack_str(&pk, "magic");
    s_pack_str(&pk, PROTO_MAGIC);
    s_pack_str(&pk, "v");
    msgpack_pack_int(&pk, PROTO_VERSION);
    s_pack_str(&pk, "kind");
    msgpack_pack_int(&pk, self->kind);
    s_pack_str(&pk, "task");
    s_pack_str(&pk, self->task);
    s_pack_str(&pk, "ids");
    msgpack_pack_array(&pk, (size_t)self->n_ids);
    for (int i = 0; i < self->n_ids; i++)
        msgpack_pack_uint64(&pk, self->ids[i]);
    if (self->op[0]) {
        s_pack_str(&pk, "op");
        s_pack_str(&pk, self->op);
    }
    s_pack_str(&pk, "f");
    msgpack_pack_map(&pk, (size_t)self->n_fields);
    *n_big = 0;
    for (int i = 0; i < self->n_fields; i++) {
        const proto_field_t *f = &self->fields[i];
        s_pack_str(&pk, f->key);
        switch (f->type) {
        case PV_INT: msgpack_pack_int64(&pk, f->i); continue;
        case PV_FLOAT: msgpack_pack_double(&pk, f->f); continue;
        case PV_STR:
            msgpack_pack_str(&pk, f->len);
            msgpack_pack_str_body(&pk, f->data, f->len);
            continue;
        case PV_BIN:
        case PV_TENSOR: break;
        }
        /* Arena descriptors travel on sockets only; encoded bytes hold the data inline. */
        const shmarena_desc_t *ad = use_shm && self->arena[i].gen ? &self->arena[i] : NULL;
        bool shm = !ad && use_shm && self->shm_names[i] != NULL;
        bool framed = !ad && !shm && f->len > inline_max;
        if (f->type == PV_BIN && !ad && !shm && !framed) {
            msgpack_pack_bin(&pk, f->len);
            msgpack_pack_bin_body(&pk, f->data, f->len);
            continue;
        }
        /* A tensor, or a bin that travels outside the envelope: a map with "data". */
        msgpack_pack_map(&pk, f->type == PV_TENSOR ? 3 : 1);
        if (f->type == PV_TENSOR) {
            s_pack_str(&pk, "dtype");
            s_pack_str(&pk, proto_dtype_name(f->dtype));
            s_pack_str(&pk, "shape");
            msgpack_pack_array(&pk, (size_t)f->ndim);
            for (int d = 0; d < f->ndim; d++)
                msgpack_pack_int64(&pk, f->shape[d]);
        }
        s_pack_str(&pk, "data");
        if (ad) {
            msgpack_pack_map(&pk, 4);
            s_pack_str(&pk, "name");
            s_pack_str(&pk, ad->name);
            s_pack_str(&pk, "offset");
            msgpack_pack_uint64(&pk, ad->offset);
            s_pack_str(&pk, "len");
            msgpack_pack_uint64(&pk, ad->len);
            s_pack_str(&pk, "gen");
            msgpack_pack_uint64(&pk, ad->gen);
        } else if (shm) {
            msgpack_pack_map(&pk, 3);
            s_pack_str(&pk, "name");
            s_pack_str(&pk, self->shm_names[i]);
            s_pack_str(&pk, "offset");
            msgpack_pack_uint64(&pk, 0);
            s_pack_str(&pk, "len");
            msgpack_pack_uint64(&pk, f->len);
        } else if (framed) {
            big[(*n_big)++] = i;
            msgpack_pack_uint64(&pk, (uint64_t)*n_big);
        } else {
            msgpack_pack_bin(&pk, f->len);
            msgpack_pack_bin_body(&pk, f->data, f->len);
        }
    }
}

void *proto_encode_bytes(const proto_msg_t *self, size_t *len) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int n_big = 0;
    int *big = util_malloc((size_t)(self->n_fields + 1) * sizeof(int));
    /* Inline even for a field bound for shared memory: these bytes go to files and
     * comparisons, where a descriptor of an object that a receiver unlinks is useless. */
    s_pack(self, SIZE_MAX, false, &sb, big, &n_big);
    free(big);
    *len = sb.size;
    return sb.data;   /* msgpack_sbuffer's buffer is malloc'd: the caller frees it */
}

proto_msg_t *proto_msg_clone(const proto_msg_t *self) {
    proto_msg_t *c = proto_msg_new(self->kind, self->task);
    proto_msg_set_op(c, self->op);
    proto_msg_set_ids(c, self->ids, self->n_ids);
    for (int i = 0; i < self->n_fields; i++) {
        const proto_field_t *f = &self->fields[i];
        if ((f->type == PV_BIN || f->type == PV_TENSOR) && self->arena[i].gen) {
            /* The slot is nobody's message's: the copy names the same slot. */
            proto_field_t *cf = s_slot(c, f->key);
            *cf = *f;
            cf->own = false;
            cf->frame = -1;
            c->arena[cf - c->fields] = self->arena[i];
            continue;
        }
        switch (f->type) {
        case PV_INT: proto_msg_set_int(c, f->key, f->i); break;
        case PV_FLOAT: proto_msg_set_float(c, f->key, f->f); break;
        case PV_STR: proto_msg_set_str(c, f->key, f->data); break;
        case PV_BIN: proto_msg_set_bin(c, f->key, f->data, f->len); break;
        case PV_TENSOR:
            proto_msg_set_tensor(c, f->key, f->dtype, f->ndim, f->shape, f->data);
            break;
        }
    }
    return c;
}

static void s_free_cb(void *data, void *hint) {
    (void)hint;
    free(data);
}

int proto_send(void *socket, const void *ident, size_t identlen, proto_msg_t **msg_p,
               int flags) {
    proto_msg_t *self = *msg_p;
    *msg_p = NULL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int *big = util_malloc((size_t)(self->n_fields + 1) * sizeof(int));
    int n_big = 0;
    s_pack(self, PROTO_INLINE_MAX, true, &sb, big, &n_big);

    int rc = 0;
    if (ident && zmq_send(socket, ident, identlen, ZMQ_SNDMORE | flags) < 0)
        rc = -1;
    if (rc == 0) {
        zmq_msg_t env;
        zmq_msg_init_data(&env, sb.data, sb.size, s_free_cb, NULL);
        sb.data = NULL;   /* the ZeroMQ message owns the buffer now */
        if (zmq_msg_send(&env, socket, (n_big ? ZMQ_SNDMORE : 0) | flags) < 0) {
            zmq_msg_close(&env);
            rc = -1;
        }
    }
    for (int k = 0; rc == 0 && k < n_big; k++) {
        proto_field_t *f = &self->fields[big[k]];
        zmq_msg_t m;
        if (f->own) {
            /* Hand the buffer to ZeroMQ: sent without a copy, freed when sent. */
            zmq_msg_init_data(&m, f->data, f->len, s_free_cb, NULL);
            f->own = false;
            f->data = NULL;
        } else if (f->frame >= 0 && zmq_msg_data(&self->frames[f->frame]) == f->data &&
                   zmq_msg_size(&self->frames[f->frame]) == f->len) {
            /* A received frame passed on as it is: shares the buffer, no copy. */
            zmq_msg_init(&m);
            zmq_msg_copy(&m, &self->frames[f->frame]);
        } else {
            zmq_msg_init_size(&m, f->len);
            memcpy(zmq_msg_data(&m), f->data, f->len);
        }
        if (zmq_msg_send(&m, socket, (k + 1 < n_big ? ZMQ_SNDMORE : 0) | flags) < 0) {
            zmq_msg_close(&m);
            rc = -1;
        }
    }
    int saved = errno;
    msgpack_sbuffer_destroy(&sb);
    free(big);
    if (rc == 0) {
        /* Sent: the shared-memory objects now belong to the receiver, which unlinks
         * them when it maps them. After a failed send they are unlinked here. */
        for (int i = 0; i < self->n_fields; i++) {
            free(self->shm_names[i]);
            self->shm_names[i] = NULL;
        }
    }
    proto_msg_destroy(&self);
    errno = saved;
    return rc;
}

/* ---------------------------------------------------------------- decoding */

typedef struct {
    const uint8_t *p, *end;
} s_rd_t;

typedef enum { T_NIL, T_BOOL, T_INT, T_UINT, T_FLOAT, T_STR, T_BIN, T_ARRAY, T_MAP, T_EXT,
               T_BAD } s_tag_t;

typedef struct {
    s_tag_t tag;
    int64_t i;
    uint64_t u;
    double f;
    const uint8_t *ptr;   /* STR, BIN */
    uint64_t n;           /* STR/BIN bytes, ARRAY/MAP entries */
} s_obj_t;

static int s_need(s_rd_t *r, size_t n) { return (size_t)(r->end - r->p) >= n ? 0 : -1; }

static uint64_t s_be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Read one header (scalars whole; str/bin with their bytes; array/map: the count). */
static int s_read(s_rd_t *r, s_obj_t *o) {
    if (s_need(r, 1))
        return -1;
    uint8_t b = *r->p++;
    memset(o, 0, sizeof *o);
    int len_bytes = 0;
    if (b <= 0x7f) { o->tag = T_UINT; o->u = b; return 0; }
    if (b >= 0xe0) { o->tag = T_INT; o->i = (int8_t)b; return 0; }
    if ((b & 0xf0) == 0x80) { o->tag = T_MAP; o->n = b & 0x0f; return 0; }
    if ((b & 0xf0) == 0x90) { o->tag = T_ARRAY; o->n = b & 0x0f; return 0; }
    if ((b & 0xe0) == 0xa0) { o->tag = T_STR; o->n = b & 0x1f; goto body; }
    switch (b) {
    case 0xc0: o->tag = T_NIL; return 0;
    case 0xc2: case 0xc3: o->tag = T_BOOL; o->u = b & 1; return 0;
    case 0xc4: case 0xc5: case 0xc6:
        o->tag = T_BIN; len_bytes = 1 << (b - 0xc4); break;
    case 0xd9: case 0xda: case 0xdb:
        o->tag = T_STR; len_bytes = 1 << (b - 0xd9); break;
    case 0xca:
        if (s_need(r, 4)) return -1;
        { uint32_t u = (uint32_t)s_be(r->p, 4); float f; memcpy(&f, &u, 4); o->f = f; }
        r->p += 4; o->tag = T_FLOAT; return 0;
    case 0xcb:
        if (s_need(r, 8)) return -1;
        { uint64_t u = s_be(r->p, 8); memcpy(&o->f, &u, 8); }
        r->p += 8; o->tag = T_FLOAT; return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        int n = 1 << (b - 0xcc);
        if (s_need(r, (size_t)n)) return -1;
        o->u = s_be(r->p, n); r->p += n; o->tag = T_UINT; return 0;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = 1 << (b - 0xd0);
        if (s_need(r, (size_t)n)) return -1;
        uint64_t u = s_be(r->p, n);
        r->p += n;
        if (n == 1) o->i = (int8_t)u;
        else if (n == 2) o->i = (int16_t)u;
        else if (n == 4) o->i = (int32_t)u;
        else o->i = (int64_t)u;
        o->tag = T_INT; return 0;
    }
    case 0xdc: case 0xdd: {
        int n = b == 0xdc ? 2 : 4;
        if (s_need(r, (size_t)n)) return -1;
        o->n = s_be(r->p, n); r->p += n; o->tag = T_ARRAY; return 0;
    }
    case 0xde: case 0xdf: {
        int n = b == 0xde ? 2 : 4;
        if (s_need(r, (size_t)n)) return -1;
        o->n = s_be(r->p, n); r->p += n; o->tag = T_MAP; return 0;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: {
        size_t n = (size_t)1 << (b - 0xd4);
        if (s_need(r, n + 1)) return -1;
        r->p += n + 1; o->tag = T_EXT; return 0;
    }
    case 0xc7: case 0xc8: case 0xc9: {
        int lb = 1 << (b - 0xc7);
        if (s_need(r, (size_t)lb + 1)) return -1;
        uint64_t n = s_be(r->p, lb);
        r->p += lb + 1;
        if (s_need(r, n)) return -1;
        r->p += n; o->tag = T_EXT; return 0;
    }
    default: o->tag = T_BAD; return -1;
    }
    if (s_need(r, (size_t)len_bytes))
        return -1;
    o->n = s_be(r->p, len_bytes);
    r->p += len_bytes;
body:
    if (s_need(r, o->n))
        return -1;
    o->ptr = r->p;
    r->p += o->n;
    return 0;
}

/* Skip one complete value, nested at most `depth` levels. */
static int s_skip(s_rd_t *r, int depth) {
    s_obj_t o;
    if (depth <= 0 || s_read(r, &o))
        return -1;
    if (o.tag == T_ARRAY || o.tag == T_MAP) {
        uint64_t n = o.tag == T_MAP ? o.n * 2 : o.n;
        if (n > (uint64_t)(r->end - r->p))   /* each value takes at least one byte */
            return -1;
        for (uint64_t i = 0; i < n; i++)
            if (s_skip(r, depth - 1))
                return -1;
    }
    return 0;
}

static bool s_streq(const s_obj_t *o, const char *s) {
    size_t n = strlen(s);
    return o->tag == T_STR && o->n == n && memcmp(o->ptr, s, n) == 0;
}

static int s_as_int(const s_obj_t *o, int64_t *v) {
    if (o->tag == T_INT) { *v = o->i; return 0; }
    if (o->tag == T_UINT && o->u <= (uint64_t)INT64_MAX) { *v = (int64_t)o->u; return 0; }
    return -1;
}

typedef struct {
    const void *const *bufs;
    const size_t *lens;
    int n;
    bool copy;                /* copy data out (proto_decode_frames) or point into it */
} s_src_t;

/* Point or copy data into field f. */
static void s_attach(proto_field_t *f, const void *data, size_t len, bool copy, int frame) {
    if (copy) {
        f->data = util_malloc(len + 1);
        if (len)
            memcpy(f->data, data, len);
        ((char *)f->data)[len] = 0;
        f->own = true;
    } else {
        f->data = (void *)data;
        f->own = false;
        f->frame = frame;
    }
    f->len = len;
}

/* The process's cache of arena mappings, made on first use and kept for its life: an
 * arena is mapped once however many messages point into it. */
static shmarena_reader_t *s_arena_reader;
static pthread_once_t s_arena_once = PTHREAD_ONCE_INIT;

static void s_arena_reader_make(void) {
    s_arena_reader = shmarena_reader_new();
}

shmarena_reader_t *proto_arena_reader(void) {
    pthread_once(&s_arena_once, s_arena_reader_make);
    return s_arena_reader;
}

/* Map a shared-memory descriptor {name, offset, len} and unlink the name; or, with a
 * "gen" key, validate an arena descriptor against its slot and point into the arena's
 * cached mapping (never unlinked by a receiver: see shmarena.h). *arena gets the arena
 * descriptor (gen 0 for a plain shm object). */
static int s_map_shm(proto_msg_t *msg, s_rd_t *r, uint64_t n_keys, const void **data,
                     size_t *len, shmarena_desc_t *arena, char *err, size_t errlen) {
    char name[256] = "";
    int64_t off = -1, ln = -1;
    bool have_gen = false;
    uint64_t gen = 0;
    arena->gen = 0;
    for (uint64_t k = 0; k < n_keys; k++) {
        s_obj_t key, v;
        if (s_read(r, &key) || key.tag != T_STR)
            return util_err(err, errlen, "shm descriptor: bad key");
        if (s_streq(&key, "name")) {
            if (s_read(r, &v) || v.tag != T_STR || v.n == 0 || v.n >= sizeof name)
                return util_err(err, errlen, "shm descriptor: bad name");
            memcpy(name, v.ptr, v.n);
            name[v.n] = 0;
        } else if (s_streq(&key, "offset") || s_streq(&key, "len")) {
            int64_t x;
            if (s_read(r, &v) || s_as_int(&v, &x) || x < 0)
                return util_err(err, errlen, "shm descriptor: bad %.*s", (int)key.n,
                                (const char *)key.ptr);
            *(key.ptr[0] == 'o' ? &off : &ln) = x;
        } else if (s_streq(&key, "gen")) {
            if (s_read(r, &v) || v.tag != T_UINT || v.u == 0 || have_gen)
                return util_err(err, errlen, "arena descriptor: bad gen (a positive integer, "
                                "once)");
            gen = v.u;
            have_gen = true;
        } else if (s_skip(r, 4)) {
            return util_err(err, errlen, "shm descriptor: truncated");
        }
    }
    if (!name[0] || off < 0 || ln < 0)
        return util_err(err, errlen, "shm descriptor needs name, offset and len");
    if (name[0] != '/' || strchr(name + 1, '/'))
        return util_err(err, errlen, "shm descriptor: name '%s' must be /NAME", name);
    if ((uint64_t)ln > PROTO_MAX_BYTES)
        return util_err(err, errlen, "shm descriptor: len %lld over the limit", (long long)ln);
    if (have_gen) {
        shmarena_desc_t d = {.offset = (uint64_t)off, .len = (uint64_t)ln, .gen = gen};
        if (strlen(name) >= sizeof d.name)
            return util_err(err, errlen, "arena descriptor: name '%.80s' too long", name);
        memcpy(d.name, name, strlen(name) + 1);
        const void *p = shmarena_reader_map(proto_arena_reader(), &d, err, errlen);
        if (!p)
            return -1;
        *data = p;
        *len = (size_t)ln;
        *arena = d;
        return 0;
    }
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return util_err(err, errlen, "shm %s: %s", name, strerror(errno));
    shm_unlink(name);   /* the receiver ends the name's life; the mapping keeps the data */
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)off + (uint64_t)ln > (uint64_t)st.st_size) {
        close(fd);
        return util_err(err, errlen, "shm %s: offset+len beyond the object", name);
    }
    void *addr = NULL;
    size_t maplen = (size_t)off + (size_t)ln;
    if (maplen > 0) {
        addr = mmap(NULL, maplen, PROT_READ, MAP_SHARED, fd, 0);
        if (addr == MAP_FAILED) {
            close(fd);
            return util_err(err, errlen, "shm %s: mmap: %s", name, strerror(errno));
        }
        msg->maps = util_realloc(msg->maps, (size_t)(msg->n_maps + 1) * sizeof *msg->maps);
        msg->maps[msg->n_maps++] = (s_map_t){addr, maplen};
    }
    close(fd);
    *data = addr ? (const void *)((const uint8_t *)addr + off) : (const void *)"";
    *len = (size_t)ln;
    return 0;
}

/* Decode the value of field f: a scalar, str, bin, or a map (tensor / out-of-line bin). */
static int s_decode_field(proto_msg_t *msg, s_rd_t *r, const s_src_t *src,
                          proto_field_t *f, char *err, size_t errlen) {
    s_obj_t o;
    if (s_read(r, &o))
        return util_err(err, errlen, "field '%s': truncated value", f->key);
    switch (o.tag) {
    case T_INT: f->type = PV_INT; f->i = o.i; return 0;
    case T_UINT:
        if (o.u > (uint64_t)INT64_MAX)
            return util_err(err, errlen, "field '%s': integer out of range", f->key);
        f->type = PV_INT; f->i = (int64_t)o.u; return 0;
    case T_BOOL: f->type = PV_INT; f->i = (int64_t)o.u; return 0;
    case T_FLOAT: f->type = PV_FLOAT; f->f = o.f; return 0;
    case T_STR:
        f->type = PV_STR;
        /* Strings always get their own NUL-terminated copy. */
        s_attach(f, o.ptr, o.n, true, -1);
        return 0;
    case T_BIN:
        f->type = PV_BIN;
        s_attach(f, o.ptr, o.n, src->copy, 0);
        return 0;
    case T_MAP: break;
    default: return util_err(err, errlen, "field '%s': unsupported value type", f->key);
    }
    if (o.n > 8)
        return util_err(err, errlen, "field '%s': tensor map with %llu keys", f->key,
                        (unsigned long long)o.n);
    int dtype = -1, ndim = -1;
    int64_t shape[PROTO_MAX_DIMS];
    const void *data = NULL;
    size_t len = 0;
    int frame = -1;
    bool have_data = false;
    shmarena_desc_t arena = {.gen = 0};
    for (uint64_t k = 0; k < o.n; k++) {
        s_obj_t key, v;
        if (s_read(r, &key) || key.tag != T_STR)
            return util_err(err, errlen, "field '%s': bad tensor key", f->key);
        if (s_streq(&key, "dtype")) {
            char name[16];
            if (s_read(r, &v) || v.tag != T_STR || v.n >= sizeof name)
                return util_err(err, errlen, "field '%s': bad dtype", f->key);
            memcpy(name, v.ptr, v.n);
            name[v.n] = 0;
            if ((dtype = proto_dtype_from_name(name)) < 0)
                return util_err(err, errlen, "field '%s': unknown dtype '%s'", f->key, name);
        } else if (s_streq(&key, "shape")) {
            if (s_read(r, &v) || v.tag != T_ARRAY || v.n > PROTO_MAX_DIMS)
                return util_err(err, errlen, "field '%s': shape must be an array of at most "
                                "%d ints", f->key, PROTO_MAX_DIMS);
            ndim = (int)v.n;
            for (int d = 0; d < ndim; d++) {
                s_obj_t e;
                if (s_read(r, &e) || s_as_int(&e, &shape[d]) || shape[d] < 0 ||
                    shape[d] > (int64_t)PROTO_MAX_BYTES)
                    return util_err(err, errlen, "field '%s': bad dimension %d", f->key, d);
            }
        } else if (s_streq(&key, "data")) {
            if (s_read(r, &v))
                return util_err(err, errlen, "field '%s': truncated data", f->key);
            if (v.tag == T_BIN) {
                data = v.ptr, len = v.n, frame = 0;
            } else if (v.tag == T_UINT) {
                if (v.u < 1 || v.u >= (uint64_t)src->n)
                    return util_err(err, errlen, "field '%s': frame %llu of %d", f->key,
                                    (unsigned long long)v.u, src->n);
                frame = (int)v.u;
                data = src->bufs[frame], len = src->lens[frame];
            } else if (v.tag == T_MAP) {
                /* The descriptor's reason goes to a buffer of its own: formatting err
                 * into itself would overwrite the text while it is being read. */
                char why[400] = "bad shm descriptor";
                if (v.n > 8 || s_map_shm(msg, r, v.n, &data, &len, &arena, why, sizeof why))
                    return util_err(err, errlen, "field '%s': %s", f->key, why);
                frame = -2;
            } else {
                return util_err(err, errlen, "field '%s': data must be bin, frame index or "
                                "shm descriptor", f->key);
            }
            have_data = true;
        } else if (s_skip(r, 4)) {
            return util_err(err, errlen, "field '%s': truncated", f->key);
        }
    }
    if (!have_data)
        return util_err(err, errlen, "field '%s': no data", f->key);
    if (len > PROTO_MAX_BYTES)
        return util_err(err, errlen, "field '%s': %zu bytes over the limit", f->key, len);
    if (dtype < 0 && ndim < 0) {
        f->type = PV_BIN;   /* a bin sent outside the envelope */
    } else {
        if (dtype < 0 || ndim < 0)
            return util_err(err, errlen, "field '%s': a tensor needs dtype and shape", f->key);
        /* shape x dtype must equal the bytes, without overflow. */
        unsigned __int128 want = proto_dtype_size((proto_dtype_t)dtype);
        for (int d = 0; d < ndim; d++)
            want *= (uint64_t)shape[d];
        if (want != len)
            return util_err(err, errlen, "field '%s': shape needs %llu bytes, data has %zu",
                            f->key, (unsigned long long)(want > UINT64_MAX ? UINT64_MAX
                                                                          : (uint64_t)want),
                            len);
        f->type = PV_TENSOR;
        f->dtype = (proto_dtype_t)dtype;
        f->ndim = ndim;
        memcpy(f->shape, shape, sizeof(int64_t) * (size_t)ndim);
    }
    /* Shared memory is always mapped (never copied); frames are copied or pointed to.
     * An arena field points into its slot and remembers the descriptor, so that the
     * consumer can release it and a forwarding process sends the descriptor on. */
    if (frame == -2 && arena.gen) {
        s_attach(f, data, len, false, -1);
        msg->arena[f - msg->fields] = arena;
    } else if (frame == -2)
        s_attach(f, data, len, false, -1);
    else
        s_attach(f, data, len, src->copy, frame);
    return 0;
}

static proto_msg_t *s_decode(const s_src_t *src, proto_msg_t *msg, char *err, size_t errlen) {
    if (src->n < 1)
        return util_err(err, errlen, "empty message"), NULL;
    if (src->n > PROTO_MAX_FRAMES)
        return util_err(err, errlen, "%d frames (at most %d)", src->n, PROTO_MAX_FRAMES), NULL;
    s_rd_t r = {src->bufs[0], (const uint8_t *)src->bufs[0] + src->lens[0]};
    s_obj_t top;
    if (s_read(&r, &top) || top.tag != T_MAP || top.n > 32) {
        util_err(err, errlen, "not a message: the envelope is not a msgpack map");
        return NULL;
    }
    bool magic = false, version = false, kind = false;
    /* Each known key at most once: a repeated "ids" or "f" would add to the first and
     * could pass the limits on ids and fields that each one alone respects. */
    static const char *const known[] = {"magic", "v", "kind", "task", "op", "ids", "f"};
    unsigned seen = 0;
    for (uint64_t k = 0; k < top.n; k++) {
        s_obj_t key, v;
        if (s_read(&r, &key) || key.tag != T_STR) {
            util_err(err, errlen, "envelope: key %llu is not a string", (unsigned long long)k);
            return NULL;
        }
        for (unsigned q = 0; q < sizeof known / sizeof *known; q++) {
            if (!s_streq(&key, known[q]))
                continue;
            if (seen & (1u << q))
                return util_err(err, errlen, "envelope: key '%s' appears twice", known[q]),
                       NULL;
            seen |= 1u << q;
        }
        if (s_streq(&key, "magic")) {
            if (s_read(&r, &v) || !s_streq(&v, PROTO_MAGIC))
                return util_err(err, errlen, "envelope: bad magic"), NULL;
            magic = true;
        } else if (s_streq(&key, "v")) {
            int64_t x;
            if (s_read(&r, &v) || s_as_int(&v, &x) || x != PROTO_VERSION)
                return util_err(err, errlen, "envelope: unsupported version (want %d)",
                                PROTO_VERSION), NULL;
            version = true;
        } else if (s_streq(&key, "kind")) {
            int64_t x;
            if (s_read(&r, &v) || s_as_int(&v, &x) || x < 1 || x > PROTO__KIND_MAX)
                return util_err(err, errlen, "envelope: unknown kind"), NULL;
            msg->kind = (proto_kind_t)x;
            kind = true;
        } else if (s_streq(&key, "task") || s_streq(&key, "op")) {
            bool is_task = key.ptr[0] == 't';
            size_t cap = is_task ? sizeof msg->task : sizeof msg->op;
            if (s_read(&r, &v) || v.tag != T_STR || v.n >= cap)
                return util_err(err, errlen, "envelope: bad %s", is_task ? "task" : "op"), NULL;
            char *dst = is_task ? msg->task : msg->op;
            memcpy(dst, v.ptr, v.n);
            dst[v.n] = 0;
        } else if (s_streq(&key, "ids")) {
            if (s_read(&r, &v) || v.tag != T_ARRAY || v.n > PROTO_MAX_IDS)
                return util_err(err, errlen, "envelope: ids must be an array of at most %d",
                                PROTO_MAX_IDS), NULL;
            for (uint64_t i = 0; i < v.n; i++) {
                s_obj_t e;
                if (s_read(&r, &e) || !(e.tag == T_UINT || (e.tag == T_INT && e.i >= 0)))
                    return util_err(err, errlen, "envelope: id %llu is not an unsigned int",
                                    (unsigned long long)i), NULL;
                proto_msg_add_id(msg, e.tag == T_UINT ? e.u : (uint64_t)e.i);
            }
        } else if (s_streq(&key, "f")) {
            if (s_read(&r, &v) || v.tag != T_MAP || v.n > PROTO_MAX_FIELDS)
                return util_err(err, errlen, "envelope: f must be a map of at most %d fields",
                                PROTO_MAX_FIELDS), NULL;
            s_reserve(msg, msg->n_fields + (int)v.n);
            for (uint64_t i = 0; i < v.n; i++) {
                s_obj_t fk;
                if (s_read(&r, &fk) || fk.tag != T_STR || fk.n == 0 || fk.n >= PROTO_MAX_KEY)
                    return util_err(err, errlen, "field %llu: bad key", (unsigned long long)i),
                           NULL;
                char name[PROTO_MAX_KEY];
                memcpy(name, fk.ptr, fk.n);
                name[fk.n] = 0;
                if (memchr(name, 0, fk.n))
                    return util_err(err, errlen, "field %llu: key with a NUL byte",
                                    (unsigned long long)i), NULL;
                if (s_find(msg, name) >= 0)
                    return util_err(err, errlen, "field '%s' appears twice", name), NULL;
                proto_field_t *f = s_append(msg, name, fk.n);
                if (s_decode_field(msg, &r, src, f, err, errlen)) {
                    proto_msg_remove(msg, name);
                    return NULL;
                }
            }
        } else if (s_skip(&r, 8)) {
            return util_err(err, errlen, "envelope: truncated"), NULL;
        }
    }
    if (!magic)
        return util_err(err, errlen, "not a message: no magic"), NULL;
    if (!version || !kind)
        return util_err(err, errlen, "envelope: missing %s", !version ? "v" : "kind"), NULL;
    if (r.p != r.end)
        return util_err(err, errlen, "envelope: %zu bytes of trailing garbage",
                        (size_t)(r.end - r.p)), NULL;
    return msg;
}

proto_msg_t *proto_decode_frames(const void *const *bufs, const size_t *lens, int n,
                                 char *err, size_t errlen) {
    s_src_t src = {bufs, lens, n, true};
    proto_msg_t *msg = proto_msg_new(PROTO_SAMPLE, NULL);
    if (!s_decode(&src, msg, err, errlen)) {
        proto_msg_destroy(&msg);
        return NULL;
    }
    return msg;
}

proto_msg_t *proto_recv(void *socket, void *ident, size_t *identlen, int flags,
                        char *err, size_t errlen) {
    if (err && errlen)
        err[0] = 0;
    zmq_msg_t frames[PROTO_MAX_FRAMES + 2];
    int n = 0, dropped = 0;
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, socket, n == 0 ? flags : 0) < 0) {
            zmq_msg_close(&m);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&frames[i]);
            return NULL;   /* EAGAIN / EINTR / closed: nothing to report */
        }
        more = zmq_msg_more(&m);
        if (n < PROTO_MAX_FRAMES + 2)
            frames[n++] = m;
        else {
            zmq_msg_close(&m);
            dropped++;
        }
    }
    int first = 0;
    if (ident) {
        size_t l = zmq_msg_size(&frames[0]);
        if (l > 255)
            l = 255;
        memcpy(ident, zmq_msg_data(&frames[0]), l);
        *identlen = l;
        first = 1;
    }
    proto_msg_t *msg = NULL;
    if (dropped || n - first < 1) {
        util_err(err, errlen, dropped ? "message with too many frames" : "empty message");
    } else {
        msg = proto_msg_new(PROTO_SAMPLE, NULL);
        int nf = n - first;
        msg->frames = util_malloc((size_t)nf * sizeof(zmq_msg_t));
        const void *bufs[PROTO_MAX_FRAMES + 2];
        size_t lens[PROTO_MAX_FRAMES + 2];
        for (int i = 0; i < nf; i++) {
            msg->frames[i] = frames[first + i];
            bufs[i] = zmq_msg_data(&msg->frames[i]);
            lens[i] = zmq_msg_size(&msg->frames[i]);
        }
        msg->n_frames = nf;
        n = first;   /* the message owns the rest now */
        s_src_t src = {bufs, lens, nf, false};
        if (!s_decode(&src, msg, err, errlen))
            proto_msg_destroy(&msg);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return msg;
}

/* ---------------------------------------------------------------- shared memory */

int proto_msg_field_to_shm(proto_msg_t *self, const char *key, char *err, size_t errlen) {
    static atomic_uint counter;
    int i = s_find(self, key);
    if (i < 0)
        return util_err(err, errlen, "no field '%s'", key);
    proto_field_t *f = &self->fields[i];
    if (f->type != PV_BIN && f->type != PV_TENSOR)
        return util_err(err, errlen, "field '%s' is not a bin or tensor", key);
    char name[64];
    snprintf(name, sizeof name, "/ofa-%d-%u", (int)getpid(), atomic_fetch_add(&counter, 1));
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return util_err(err, errlen, "shm_open %s: %s", name, strerror(errno));
    if (f->len && ftruncate(fd, (off_t)f->len) != 0) {
        util_err(err, errlen, "ftruncate %s: %s", name, strerror(errno));
        close(fd);
        shm_unlink(name);
        return -1;
    }
    if (f->len) {
        void *addr = mmap(NULL, f->len, PROT_WRITE, MAP_SHARED, fd, 0);
        if (addr == MAP_FAILED) {
            util_err(err, errlen, "mmap %s: %s", name, strerror(errno));
            close(fd);
            shm_unlink(name);
            return -1;
        }
        memcpy(addr, f->data, f->len);
        munmap(addr, f->len);
    }
    close(fd);
    if (self->shm_names[i]) {
        /* Called again for the same field: the earlier object would never be sent, so
         * nobody else would unlink it. */
        shm_unlink(self->shm_names[i]);
        free(self->shm_names[i]);
    }
    self->shm_names[i] = util_strdup(name);
    return 0;
}

int proto_msg_field_to_arena(proto_msg_t *self, const char *key, shmarena_t *arena) {
    int i = s_find(self, key);
    if (i < 0 || (self->fields[i].type != PV_TENSOR && self->fields[i].type != PV_BIN))
        return -1;
    proto_field_t *f = &self->fields[i];
    if (self->arena[i].gen)
        return 0;   /* already there */
    shmarena_desc_t d;
    void *dst = shmarena_reserve(arena, f->len, &d);
    if (!dst)
        return 1;   /* full: the field travels as before */
    if (f->len)
        memcpy(dst, f->data, f->len);
    /* The slot holds the bytes now: the field points there (valid until released). */
    if (f->own)
        free(f->data);
    f->data = dst;
    f->own = false;
    if (self->shm_names[i]) {
        shm_unlink(self->shm_names[i]);
        free(self->shm_names[i]);
        self->shm_names[i] = NULL;
    }
    self->arena[i] = d;
    return 0;
}

int proto_msg_field_arena(const proto_msg_t *self, const char *key, shmarena_desc_t *desc) {
    return proto_msg_field_arena_at(self, s_find(self, key), desc);
}

int proto_msg_field_arena_at(const proto_msg_t *self, int i, shmarena_desc_t *desc) {
    if (i < 0 || i >= self->n_fields || self->arena[i].gen == 0)
        return 0;
    if (desc)
        *desc = self->arena[i];
    return 1;
}

int proto_msg_names_slot(const proto_msg_t *self, const shmarena_desc_t *desc) {
    for (int i = 0; i < self->n_fields; i++) {
        const shmarena_desc_t *a = &self->arena[i];
        if (a->gen && a->gen == desc->gen && a->offset == desc->offset &&
            strcmp(a->name, desc->name) == 0)
            return 1;
    }
    return 0;
}

int proto_msg_field_unarena(proto_msg_t *self, const char *key) {
    return proto_msg_field_unarena_at(self, s_find(self, key));
}

int proto_msg_field_unarena_at(proto_msg_t *self, int i) {
    if (i < 0 || i >= self->n_fields || self->arena[i].gen == 0)
        return -1;
    proto_field_t *f = &self->fields[i];
    void *copy = util_malloc(f->len ? f->len : 1);
    if (f->len)
        memcpy(copy, f->data, f->len);
    f->data = copy;
    f->own = true;
    self->arena[i].gen = 0;
    return 0;
}

void proto_msg_arena_tensor(proto_msg_t *self, const char *key, proto_dtype_t dtype, int ndim,
                            const int64_t *shape, void *slot, const shmarena_desc_t *desc) {
    proto_msg_take_tensor(self, key, dtype, ndim, shape, slot);
    int i = s_find(self, key);
    OFA_ASSERT(i >= 0 && desc->gen != 0 && self->fields[i].len == desc->len);
    self->fields[i].own = false;   /* the slot is the arena's */
    self->arena[i] = *desc;
}
