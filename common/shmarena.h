/* shmarena.h: a long-lived POSIX shared-memory arena for large tensors on one host.
 *
 * A producer process creates one arena (shm name "/ofa-arena-<pid>-<n>", fixed size,
 * mapped once) and writes tensors into a ring of variable-size slots inside it. Each
 * slot starts with a small header in the shared memory itself: a tag word (the slot's
 * generation and state, changed atomically), the payload length and the slot's size.
 * shmarena_put() returns a descriptor {name, offset, len, gen} that travels on a socket
 * instead of the bytes; when the ring has no room it returns "full" at once and the
 * caller sends the bytes as a frame instead (never block, never lose).
 *
 * A consumer process maps an arena by name once (shmarena_reader_t caches the mappings),
 * validates each descriptor against the slot header (bounds, length, generation: a stale
 * or forged descriptor is an error naming the field, never a crash), copies the bytes
 * out or reads them in place, and releases the slot with one atomic store when it no
 * longer needs them (in the pipeline: after its consumer acknowledged the batch that
 * holds the sample). The producer reclaims released slots lazily, oldest first, on its
 * next put. A released slot's next use gets a new generation, so a descriptor kept past
 * its release is refused as stale.
 *
 * The producer owns the name: shmarena_destroy() unmaps it and unlinks the name
 * (readers that still map it keep their memory until they unmap). Readers never unlink.
 *
 * Threads: one shmarena_t belongs to one thread; a shmarena_reader_t may be shared
 * (its cache is locked). Releases from any process are safe against the producer. */
#ifndef OFA_SHMARENA_H
#define OFA_SHMARENA_H

#include <stddef.h>
#include <stdint.h>

#define SHMARENA_DEFAULT_SIZE ((size_t)64 << 20)   /* 64 MiB */
#define SHMARENA_MIN_SIZE ((size_t)64 << 10)
#define SHMARENA_PREFIX "/ofa-arena-"
#define SHMARENA_NAME_MAX 64
#define SHMARENA_READER_MAX 1024 /* arenas one reader maps at most (every worker of a run
                                   * and its restarts: each start makes a new arena) */
#define SHMARENA_TAG_MAX 24     /* a run's tag: letters, digits, '_' */

typedef struct shmarena shmarena_t;
typedef struct shmarena_reader shmarena_reader_t;

/* Where a tensor lies: `len` bytes at byte `offset` of arena `name`, written under
 * generation `gen` (never 0). */
typedef struct {
    char name[SHMARENA_NAME_MAX];
    uint64_t offset;
    uint64_t len;
    uint64_t gen;
} shmarena_desc_t;

/* ---- producer ---- */

/* Create and map a new arena of `size` bytes (rounded up to 4 KiB; 0 means the
 * default), its pages reserved at once (posix_fallocate: a /dev/shm without room is an
 * error here, never a SIGBUS later). Returns the arena (the caller owns it) or NULL with
 * err. */
shmarena_t *shmarena_new(size_t size, char *err, size_t errlen);

/* The same, named "/ofa-arena-<tag>-<pid>-<n>" (tag: 1 to SHMARENA_TAG_MAX-1 letters,
 * digits or '_'; NULL = no tag), so that whoever runs the producers can remove all of a
 * run's arenas by its tag (shmarena_unlink_tag) however the producers ended. */
shmarena_t *shmarena_new_tagged(const char *tag, size_t size, char *err, size_t errlen);

/* Unmap the arena and unlink its name. Accepts NULL; sets *self_p to NULL. */
void shmarena_destroy(shmarena_t **self_p);

/* Unmap the arena and leave its name: slots it handed out may still be read and
 * released by consumers after the producer is gone (a pipeline worker's arena; the run's
 * launcher unlinks it). Accepts NULL; sets *self_p to NULL. */
void shmarena_detach(shmarena_t **self_p);

/* Unlink every arena whose name starts with "/ofa-arena-<tag>-" (the shm folder,
 * /dev/shm, is scanned). Returns how many, or -1 when the tag is malformed or the folder
 * cannot be read. Mappings that exist stay valid until unmapped. */
int shmarena_unlink_tag(const char *tag);

/* The arena's shm name ("/ofa-arena-<pid>-<n>"); valid while the arena lives. */
const char *shmarena_name(const shmarena_t *self);

/* Reserve a slot of `len` bytes and return a pointer to write them to (valid until the
 * slot is released), filling *desc. NULL when the ring has no room now (or `len` can
 * never fit): the caller sends the bytes another way. Never blocks. */
void *shmarena_reserve(shmarena_t *self, size_t len, shmarena_desc_t *desc);

/* shmarena_reserve() and a copy of `len` bytes from `bytes`. Returns 0, or 1 when full. */
int shmarena_put(shmarena_t *self, const void *bytes, size_t len, shmarena_desc_t *desc);

/* Bytes of the ring held by slots not yet reclaimed (headers and padding included),
 * after reclaiming the released ones; and the ring's capacity. */
size_t shmarena_in_use(shmarena_t *self);
size_t shmarena_capacity(const shmarena_t *self);

/* ---- consumer ---- */

/* A cache of arena mappings. The caller owns the result. */
shmarena_reader_t *shmarena_reader_new(void);

/* Unmap every cached arena. Accepts NULL; sets *self_p to NULL. */
void shmarena_reader_destroy(shmarena_reader_t **self_p);

/* Validate `desc` (name, offset, len, gen against the slot header) and return a pointer
 * to its bytes in the mapping (valid until the slot is released), or NULL with err
 * naming the field that is wrong. Maps the arena on first use. */
const void *shmarena_reader_map(shmarena_reader_t *self, const shmarena_desc_t *desc,
                                char *err, size_t errlen);

/* Validate `desc`, copy its `len` bytes to dst (room for dstcap bytes) and check that
 * the slot was not released meanwhile. Returns 0, or -1 with err. */
int shmarena_reader_get(shmarena_reader_t *self, const shmarena_desc_t *desc, void *dst,
                        size_t dstcap, char *err, size_t errlen);

/* Release the slot `desc` names (an atomic compare-and-store of its tag: a stale or
 * repeated release fails and changes nothing). Returns 0, or -1 with err. */
int shmarena_reader_release(shmarena_reader_t *self, const shmarena_desc_t *desc,
                            char *err, size_t errlen);

#endif
