/* safetensors.h: reader and writer of the safetensors format (what PyTorch / HF tools
 * read): u64 little-endian header length N, N bytes of JSON
 *   {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * then the data; offsets are relative to the first byte after the header.
 *
 * The reader takes outside bytes: it validates everything (header length against the
 * file size, JSON syntax, known dtype, shape product * dtype size == end - begin, ranges
 * inside the data, no overlap with other tensors is *not* required, duplicate names
 * rejected) and returns NULL with a message naming the file and the problem; it never
 * crashes on a malformed file. Module prefix: st_. */
#ifndef OFA_SAFETENSORS_H
#define OFA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I8, ST_I16, ST_I32, ST_I64, ST_U8, ST_U16,
    ST_U32, ST_U64, ST_BOOL, ST__COUNT
} st_dtype_t;

#define ST_MAX_DIMS 8

typedef struct {
    const char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;       /* borrowed: into the file's buffer (read) or the caller's */
    size_t nbytes;
} st_tensor_t;

const char *st_dtype_name(st_dtype_t dt);   /* "F32", ... */
int st_dtype_from_name(const char *s);      /* -1 if unknown */
size_t st_dtype_size(st_dtype_t dt);
int64_t st_numel(const st_tensor_t *t);

typedef struct st_file_t st_file_t;

/* Read and validate a file. NULL + err. Caller owns; destroy with st_close. */
st_file_t *st_open(const char *path, char *err, size_t errlen);
/* Parse bytes already in memory (copied). `what` names the source in errors. */
st_file_t *st_parse(const void *buf, size_t len, const char *what, char *err, size_t errlen);
void st_close(st_file_t **self_p);
int st_count(const st_file_t *self);
/* i-th tensor in header order, or NULL; borrowed while the file is open. */
const st_tensor_t *st_tensor(const st_file_t *self, int i);
const st_tensor_t *st_find(const st_file_t *self, const char *name);
/* __metadata__ value or NULL (borrowed). */
const char *st_meta(const st_file_t *self, const char *key);

/* Convert a tensor of dtype F32, BF16, F16 or F64 to n floats (n must equal its numel).
 * 0 or -1 with err. */
int st_to_f32(const st_tensor_t *t, float *out, int64_t n, char *err, size_t errlen);

/* Write a file atomically (temp + fsync + rename) with the tensors in the given order and
 * optional string metadata (nmeta pairs keys[i] -> values[i]). 0 or -1 with err. */
int st_write(const char *path, const st_tensor_t *tensors, int n, const char *const *keys,
             const char *const *values, int nmeta, char *err, size_t errlen);
/* The same into a malloc'ed buffer (*out, *outlen; caller frees). */
int st_serialize(const st_tensor_t *tensors, int n, const char *const *keys,
                 const char *const *values, int nmeta, void **out, size_t *outlen,
                 char *err, size_t errlen);

#endif
