/* proto.h: the messages every process of a run exchanges, and their codec.
 *
 * A message is a msgpack map (the envelope) in the first ZeroMQ frame, optionally
 * followed by more frames holding large tensors or byte strings (sent zero-copy):
 *
 *   {"magic": "OFAC", "v": 1, "kind": K, "task": "caption", "ids": [u64...],
 *    "op": "hello",                      (CONTROL messages)
 *    "f": {"seq": 17, "split": "train", "img": <bin>,
 *          "src_tok": {"dtype": "i32", "shape": [12], "data": <bin | frame | shm>}}}
 *
 * A tensor's data is an inline bin, the index of a following frame (1 = the first frame
 * after the envelope), or a POSIX shared-memory descriptor {"name", "offset", "len"},
 * which with a "gen" key names a slot of a long-lived arena (shmarena.h).
 * Every reader accepts all three; docs/protocol.md is the reference for other languages.
 *
 * The decoder is hardened: any byte string gives a message or an error naming what is
 * wrong, within fixed limits (fields, ids, dimensions, sizes), never a crash.
 *
 * Ownership: proto_msg_new() returns a message the caller owns; proto_send() takes
 * ownership of the message it sends (and sets the caller's pointer to NULL); a received
 * message belongs to the caller, and field data may point into the received frames or a
 * shared-memory mapping that the message keeps alive until it is destroyed. */
#ifndef OFA_PROTO_H
#define OFA_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shmarena.h"

#define PROTO_MAGIC "OFAC"
#define PROTO_VERSION 1
#define PROTO_MAX_DIMS 6
#define PROTO_MAX_FIELDS 256
#define PROTO_MAX_IDS 65536
#define PROTO_MAX_FRAMES 260
#define PROTO_MAX_KEY 64
#define PROTO_MAX_BYTES (1ull << 31)   /* one tensor or bin at most 2 GiB */
/* Fields larger than this travel as their own frame (zero-copy) instead of inline. */
#define PROTO_INLINE_MAX 16384

typedef enum {
    PROTO_SAMPLE = 1,   /* one sample moving through the stages */
    PROTO_BATCH = 2,    /* a padded batch for the trainer ranks */
    PROTO_CREDIT = 3,   /* the sender may receive "n" more items */
    PROTO_REJECT = 4,   /* a sample that a stage could not process; field "reason" */
    PROTO_STATS = 5,    /* a process's counters */
    PROTO_CONTROL = 6,  /* hello, heartbeat, eof, end, stop: in "op" */
    PROTO__KIND_MAX = 6
} proto_kind_t;

typedef enum {
    PROTO_U8 = 0,
    PROTO_I32,
    PROTO_I64,
    PROTO_F32,
    PROTO_BF16,
    PROTO_U16,
    PROTO__DTYPE_COUNT
} proto_dtype_t;

typedef enum {
    PV_INT = 0,
    PV_FLOAT,
    PV_STR,      /* data is NUL-terminated; len excludes the NUL */
    PV_BIN,
    PV_TENSOR,
} proto_vtype_t;

typedef struct {
    char key[PROTO_MAX_KEY];
    proto_vtype_t type;
    int64_t i;                        /* PV_INT */
    double f;                         /* PV_FLOAT */
    proto_dtype_t dtype;              /* PV_TENSOR */
    int ndim;
    int64_t shape[PROTO_MAX_DIMS];
    void *data;                       /* PV_STR, PV_BIN, PV_TENSOR */
    size_t len;                       /* bytes */
    bool own;                         /* data was malloc'd for this message */
    int frame;                        /* received: index of the frame data lies in, or -1 */
} proto_field_t;

typedef struct proto_msg proto_msg_t;

/* ---- building and reading ---- */

/* New empty message (task may be NULL). The caller owns it. */
proto_msg_t *proto_msg_new(proto_kind_t kind, const char *task);
void proto_msg_destroy(proto_msg_t **self_p);

proto_kind_t proto_msg_kind(const proto_msg_t *self);
void proto_msg_set_kind(proto_msg_t *self, proto_kind_t kind);
const char *proto_msg_task(const proto_msg_t *self);      /* "" when none */
void proto_msg_set_task(proto_msg_t *self, const char *task);
const char *proto_msg_op(const proto_msg_t *self);        /* "" when none */
void proto_msg_set_op(proto_msg_t *self, const char *op);

int proto_msg_n_ids(const proto_msg_t *self);
const uint64_t *proto_msg_ids(const proto_msg_t *self);
void proto_msg_set_ids(proto_msg_t *self, const uint64_t *ids, int n);
void proto_msg_add_id(proto_msg_t *self, uint64_t id);

/* Setters replace a field of the same key. set_str/set_bin/set_tensor copy the data;
 * take_bin/take_tensor take ownership of a malloc'd buffer. */
void proto_msg_set_int(proto_msg_t *self, const char *key, int64_t v);
void proto_msg_set_float(proto_msg_t *self, const char *key, double v);
void proto_msg_set_str(proto_msg_t *self, const char *key, const char *s);
void proto_msg_set_bin(proto_msg_t *self, const char *key, const void *data, size_t len);
void proto_msg_take_bin(proto_msg_t *self, const char *key, void *data, size_t len);
void proto_msg_set_tensor(proto_msg_t *self, const char *key, proto_dtype_t dtype, int ndim,
                          const int64_t *shape, const void *data);
void proto_msg_take_tensor(proto_msg_t *self, const char *key, proto_dtype_t dtype, int ndim,
                           const int64_t *shape, void *data);

/* Field lookup (NULL when absent). The pointer is valid until the field changes. */
const proto_field_t *proto_msg_get(const proto_msg_t *self, const char *key);
int proto_msg_n_fields(const proto_msg_t *self);
const proto_field_t *proto_msg_field(const proto_msg_t *self, int i);
/* Remove a field; returns 0, or -1 when absent. */
int proto_msg_remove(proto_msg_t *self, const char *key);
/* Rename a field (e.g. "img" bytes kept under another key); -1 when absent. */
int proto_msg_rename(proto_msg_t *self, const char *key, const char *new_key);

/* Typed getters: the default when absent or of another type (ints read as floats too). */
int64_t proto_msg_get_int(const proto_msg_t *self, const char *key, int64_t dflt);
double proto_msg_get_float(const proto_msg_t *self, const char *key, double dflt);
const char *proto_msg_get_str(const proto_msg_t *self, const char *key);   /* NULL if absent */
/* A tensor of the given dtype, or NULL (absent, or another type or dtype). */
const proto_field_t *proto_msg_get_tensor(const proto_msg_t *self, const char *key,
                                          proto_dtype_t dtype);

/* Payload bytes of all fields (for stats). */
size_t proto_msg_bytes(const proto_msg_t *self);

size_t proto_dtype_size(proto_dtype_t dtype);
const char *proto_dtype_name(proto_dtype_t dtype);     /* "u8", "i32", ... */
int proto_dtype_from_name(const char *name);            /* -1 when unknown */
const char *proto_kind_name(proto_kind_t kind);

/* ---- transport ---- */

/* Send over a ZeroMQ socket; takes ownership of *msg_p and sets it to NULL (also on
 * failure). ident/identlen: the routing identity for a ROUTER socket, or NULL. Fields
 * over PROTO_INLINE_MAX bytes go as their own frames without a copy of owned data.
 * flags: 0 or ZMQ_DONTWAIT. Returns 0, or -1 with errno set by ZeroMQ. */
int proto_send(void *socket, const void *ident, size_t identlen, proto_msg_t **msg_p,
               int flags);

/* Receive one message. ident (may be NULL): a ROUTER socket's first frame is copied
 * there (at most 255 bytes; *identlen set). flags: 0 or ZMQ_DONTWAIT.
 * Returns the message, or NULL: with err[0] == 0 when nothing was waiting (EAGAIN) or
 * the call was interrupted (EINTR), or with err filled when a malformed message was
 * received (its frames are consumed, so the caller simply goes on). */
proto_msg_t *proto_recv(void *socket, void *ident, size_t *identlen, int flags,
                        char *err, size_t errlen);

/* ---- byte-level codec (files, tests, fuzzing) ---- */

/* Decode frames (frame 0 is the envelope); data is copied, so the buffers may go away.
 * NULL + err on a malformed message. */
proto_msg_t *proto_decode_frames(const void *const *bufs, const size_t *lens, int n,
                                 char *err, size_t errlen);

/* A deep copy (every field's data copied; the copy holds no frames or mappings),
 * except that a field in an arena slot stays there: the copy carries the same
 * descriptor and points at the same slot, whose release stays the consumer's (the
 * broker's kept copies and re-dispatches move descriptors, never the bytes).
 * The caller owns the result. */
proto_msg_t *proto_msg_clone(const proto_msg_t *self);

/* Encode with every field inline into one malloc'd buffer (the caller frees it). */
void *proto_encode_bytes(const proto_msg_t *self, size_t *len);

/* Put a tensor/bin field into a new POSIX shared-memory object and replace its data by
 * a descriptor when the message is sent. The receiver maps it and unlinks the name (so
 * the object lives exactly as long as the receiving message's mapping). Until it is
 * sent, the object belongs to this message: destroying the message, replacing or
 * removing the field, or a failed send unlinks it. Returns 0 or -1 with err. */
int proto_msg_field_to_shm(proto_msg_t *self, const char *key, char *err, size_t errlen);

/* ---- arena slots (shmarena.h) ---- */

/* Copy a tensor/bin field into a slot of `arena`; from then on the field's data points
 * into the slot and proto_send() sends the descriptor {name, offset, len, gen} instead
 * of the bytes. The slot is not the message's: the final consumer releases it
 * (shmarena_reader_release). Returns 0, 1 when the arena is full (the field is
 * unchanged and travels as a frame: the caller need do nothing), -1 when there is no
 * such tensor/bin field. */
int proto_msg_field_to_arena(proto_msg_t *self, const char *key, shmarena_t *arena);

/* A tensor field whose bytes the caller already wrote into an arena slot (slot and desc
 * from shmarena_reserve, desc->len the tensor's bytes): no copy; sent as the descriptor.
 * The slot stays the arena's (the message never frees it). */
void proto_msg_arena_tensor(proto_msg_t *self, const char *key, proto_dtype_t dtype, int ndim,
                            const int64_t *shape, void *slot, const shmarena_desc_t *desc);

/* 1 and *desc (when not NULL) if the field lies in an arena slot (put there by
 * proto_msg_field_to_arena, or received as an arena descriptor: the decoder validated it
 * and the field's data points into the slot, with no copy); else 0. A received message
 * that is sent on forwards the descriptor, not the bytes. */
int proto_msg_field_arena(const proto_msg_t *self, const char *key, shmarena_desc_t *desc);

/* The same for the i-th field (0 <= i < proto_msg_n_fields), without a lookup by key. */
int proto_msg_field_arena_at(const proto_msg_t *self, int i, shmarena_desc_t *desc);

/* Give an arena field its own copy of the bytes and forget the slot (the caller may then
 * release it, and a send carries the bytes). Returns 0, or -1 for a field not in an
 * arena. */
int proto_msg_field_unarena(proto_msg_t *self, const char *key);
/* The same for the i-th field. */
int proto_msg_field_unarena_at(proto_msg_t *self, int i);

/* 1 if one of the message's fields lies in the arena slot desc names (same arena,
 * offset and generation), else 0. */
int proto_msg_names_slot(const proto_msg_t *self, const shmarena_desc_t *desc);

/* The process's shared cache of arena mappings that the decoder validates descriptors
 * with; release received slots through it. Owned by the library (never destroy it). */
shmarena_reader_t *proto_arena_reader(void);

#endif
