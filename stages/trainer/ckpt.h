/* ckpt.h: checkpoint files of the trainer: one safetensors file that is enough for
 * inference, plus a small binary state file that makes a run resume exactly.
 *
 * A checkpoint of step S in folder DIR (RUN/checkpoints) is two files:
 *
 *   DIR/ckpt-%08lld.safetensors   (readable by PyTorch / HF safetensors)
 *     - every model weight under the model's own tensor names (F32);
 *     - "meta.bpe" (U8): the bytes of the BPE file (RUN/bpe.bin) the run trained with;
 *     - "meta.closed_set.<TASK>" (I32): the closed answer set of a closed-set task, each
 *       answer's token ids followed by -1;
 *     - __metadata__ (string -> string, as the format allows): "format": "ofa-ckpt",
 *       "version": "1", "step", "model" (the size name), "vocab" (V), "plan": the resolved
 *       plan text (plan.resolved.conf), so the model can be rebuilt from this file alone.
 *   DIR/ckpt-%08lld.state         (this project's format, little-endian)
 *       u8[8]  magic "OFASTATE"
 *       u32    version (1)
 *       u32    number of tensors N
 *       i64    step (optimizer steps done)
 *       i64    cursor (the "step" of the last batch consumed; -1 none)
 *       u64    rng state (util_rng_t)
 *       f64    elapsed training seconds
 *       N x { u16 name length, name bytes, u64 numel, f32 m[numel], f32 v[numel] }
 *       u64    FNV-1a 64 of every byte before it
 *     The moments are AdamW's first and second moments, by the weight's name.
 *
 * Atomicity: each file is written to DIR/.NAME.tmp, fsync'd, renamed into place, and
 * the folder fsync'd. The state file is written first and the safetensors file last, so
 * a checkpoint counts as complete only when its .safetensors exists (ckpt_latest looks
 * for that and skips steps whose state file is missing or fails its checksum). A crash
 * at any moment leaves the previous complete checkpoint usable. After a save, all but
 * the newest `keep` complete checkpoints are deleted (keep <= 0 keeps all).
 *
 * Errors: readers take outside bytes and never crash on them; they return NULL / -1
 * with a reason naming the file. */
#ifndef OFA_CKPT_H
#define OFA_CKPT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { CKPT_F32 = 0, CKPT_I32, CKPT_U8, CKPT_I64 } ckpt_dtype_t;

#define CKPT_MAX_DIMS 6

/* A tensor to write (data borrowed) or one read back (data points into the file
 * buffer owned by the ckpt_file_t). */
typedef struct {
    const char *name;
    ckpt_dtype_t dtype;
    int ndim;
    int64_t shape[CKPT_MAX_DIMS];
    const void *data;
    size_t nbytes;
} ckpt_tensor_t;

typedef struct {
    const char *key;
    const char *value;
} ckpt_meta_t;

const char *ckpt_dtype_name(ckpt_dtype_t dt);   /* "F32", "I32", "U8", "I64" */
size_t ckpt_dtype_size(ckpt_dtype_t dt);

/* Write a safetensors file atomically (tensors in the given order; metadata optional).
 * Returns 0 or -1 with err. */
int ckpt_write_safetensors(const char *path, const ckpt_tensor_t *tensors, int n,
                           const ckpt_meta_t *meta, int nmeta, char *err, size_t errlen);

/* A safetensors file read into memory. */
typedef struct ckpt_file_t ckpt_file_t;

/* Read and validate (header JSON, dtypes, shapes matching byte ranges, ranges inside the
 * file). NULL + err on any problem. The caller owns the result. */
ckpt_file_t *ckpt_file_open(const char *path, char *err, size_t errlen);
void ckpt_file_destroy(ckpt_file_t **self_p);
int ckpt_file_count(const ckpt_file_t *self);
/* i-th tensor in file order, or NULL. Borrowed: valid while the file is open. */
const ckpt_tensor_t *ckpt_file_tensor(const ckpt_file_t *self, int i);
const ckpt_tensor_t *ckpt_file_find(const ckpt_file_t *self, const char *name);
/* Metadata value or NULL. Borrowed. */
const char *ckpt_file_meta(const ckpt_file_t *self, const char *key);

/* The optimizer/data state. Arrays are owned by the struct after ckpt_state_read and
 * borrowed when the caller fills it for ckpt_state_write. */
typedef struct {
    int64_t step;
    int64_t cursor;
    uint64_t rng;
    double elapsed_s;
    int n;
    char **names;        /* (n) */
    int64_t *numel;      /* (n) */
    float **m, **v;      /* (n) arrays of numel[i] floats each */
} ckpt_state_t;

int ckpt_state_write(const char *path, const ckpt_state_t *st, char *err, size_t errlen);
/* Fills *st (zeroed first); free with ckpt_state_free. */
int ckpt_state_read(const char *path, ckpt_state_t *st, char *err, size_t errlen);
void ckpt_state_free(ckpt_state_t *st);

/* Paths of step S's files in dir (out gets "" if it does not fit). */
void ckpt_path(const char *dir, int64_t step, const char *ext, char *out, size_t outlen);

/* Save a checkpoint: state first, weights last (see above), then prune to `keep`.
 * Returns 0 or -1 with err. */
int ckpt_save(const char *dir, int64_t step, const ckpt_tensor_t *tensors, int n,
              const ckpt_meta_t *meta, int nmeta, const ckpt_state_t *st, int keep,
              char *err, size_t errlen);

/* The newest complete checkpoint in dir: its step, or -1 when there is none (dir
 * missing included). A step whose state file does not read back is skipped with a
 * warning on stderr. */
int64_t ckpt_latest(const char *dir);

/* Delete all but the newest `keep` complete checkpoints (and stray temp files). */
int ckpt_prune(const char *dir, int keep, char *err, size_t errlen);

/* Write data to path atomically from pieces (temp, fsync, rename, fsync folder). */
int ckpt_write_atomic_iov(const char *path, const void *const *bufs, const size_t *lens,
                          int n, char *err, size_t errlen);

#endif
