/* model.h: the encoder-decoder transformer trained on every task of a plan, with its
 * modality adapters, loss, optimizer and an incremental decoder for generation.
 *
 * Architecture (the core is /work/shared/reference/encdec_golden.py exactly; the golden
 * test checks it against PyTorch):
 *   encoder input  x[b,s] = E(b,s) + enc_pos[s] (+ type_emb[src_mod[b,s]])
 *     E = tok_emb[src_tok]                               for non-image positions
 *     E = img.proj.w (patch/255*2-1) + img.proj.b + img.row[r] + img.col[c]
 *                                                       where src_mod == MOD_IMAGE (1):
 *         the k-th image position of row b takes patch k of img[b], r = k / grid,
 *         c = k % grid
 *     E = aud.proj.w aud[b,k] + aud.proj.b              where src_mod == MOD_AUDIO (3):
 *         the k-th audio position takes stacked frame k of aud[b]
 *     E = vid.proj.w (patch/255*2-1) + vid.proj.b + vid.time[f] + vid.row[r] + vid.col[c]
 *                                                       where src_mod == MOD_VIDEO (4):
 *         the k-th video position takes patch k of vid[b] (frame-major): f = k / Npv,
 *         r = (k % Npv) / vid_grid, c = (k % Npv) % vid_grid
 *     E = mot.proj.w mot[b,k] + mot.proj.b              where src_mod == MOD_MOTION (6):
 *         the k-th motion position takes frame k of mot[b]
 *   encoder layer  x += attn(ln1(x)); x += ffn(ln2(x))   (pre-LN, eps 1e-5, exact GELU)
 *   mem = enc_ln(x); source keys j >= src_len[b] are masked everywhere
 *   decoder input  y = tok_emb[tgt_in] + dec_pos[t] (+ type_emb[MOD_TEXT])
 *   decoder layer  y += self_causal(ln1 y); y += cross(ln2 y, mem); y += ffn(ln3 y)
 *   logits = dec_ln(y) @ tok_emb^T                       (tied output embedding)
 *   loss = mean over targets != pad of label-smoothed cross-entropy (PyTorch's)
 * Modality experts (mod_experts = 1, OFA+'s MoE variant): the encoder layer's FFN is one
 * FFN per modality group, enc.{l}.ffn.{group}.fc1.w ... fc2.b with group text (TEXT, BOX,
 * PHONE, STRUCT, CATEGORY positions), image, audio, video, motion (the last four only when
 * the model has that adapter); position (b,s) goes through the FFN of src_mod[b,s]'s group.
 * The decoder generates text only, so its FFN stays the one dec.{l}.ffn.* (the text
 * expert of the decoder). Without experts the names are enc.{l}.ffn.fc1.w as below.
 * type_emb and the img.*, aud.*, vid.*, mot.* tensors exist only when the config asks for
 * them (n_mod > 0, patch_dim > 0, aud_dim > 0, vid_dim > 0, mot_dim > 0), so a config with
 * all 0 is the golden architecture, and a config without the new adapters has exactly
 * the tensors (and checkpoints) it had before them.
 *
 * Parameters live in one flat backend buffer, named as the golden file names them
 * (tok_emb, enc_pos, dec_pos, enc.{l}.ln1.w, enc.{l}.attn.q.w, ..., dec_ln.b, and
 * type_emb, img.proj.w, img.proj.b, img.row, img.col, aud.proj.w, aud.proj.b, vid.proj.w,
 * vid.proj.b, vid.time, vid.row, vid.col, mot.proj.w, mot.proj.b); gradients and the
 * AdamW moments are three more flat buffers with the same offsets.
 *
 * Usage (training):
 *   model_config_t c; model_config_preset(&c, "nano", V, err, errlen);
 *   backend_t *be = backend_cpu_new(2);
 *   model_t *m = model_new(&c, be, seed, err, errlen);
 *   model_batch_t b = { ... borrowed arrays ... };
 *   model_forward(m, &b, &out, err, errlen);  model_backward(m);
 *   model_clip_grad(m, 1.0);  model_step(m, model_lr_at(&sched, step));
 * Usage (generation):
 *   model_cache_t *kv = model_cache_new(m, max_rows, max_src, max_len);
 *   model_encode(m, &b, kv, err, errlen);             // rows 0..B-1 = the B sources
 *   model_decode_step(m, kv, n, tokens, logits, ...); // one token per row, logits (n,V)
 *   model_cache_reorder(m, kv, n_new, src_rows, ...); // beam search bookkeeping
 *
 * Threading: a model_t is used by one thread at a time. */
#ifndef OFA_MODEL_H
#define OFA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "real.h"

#include "backend.h"

#define MODEL_MOD_TEXT 0
#define MODEL_MOD_IMAGE 1
#define MODEL_MOD_AUDIO 3
#define MODEL_MOD_VIDEO 4
#define MODEL_MOD_MOTION 6
#define MODEL_MAX_NAME 48

typedef struct {
    int vocab;          /* V */
    int d_model;        /* D */
    int n_heads;        /* H (D % H == 0) */
    int d_ffn;          /* F */
    int n_enc, n_dec;   /* layers */
    int max_src;        /* rows of enc_pos: longest source S */
    int max_tgt;        /* rows of dec_pos: longest target T */
    int n_mod;          /* rows of type_emb (plans' MOD__COUNT = 9); 0: no type embedding */
    int patch_dim;      /* P*P*3 of the image adapter; 0: no image adapter */
    int img_grid;       /* G: patches per image side (rows of img.row / img.col) */
    int aud_dim;        /* features per audio position (stack * n_mels); 0: no audio adapter */
    int vid_dim;        /* P*P*3 of the video adapter; 0: no video adapter */
    int vid_grid;       /* patches per frame side (rows of vid.row / vid.col) */
    int vid_frames;     /* frames per clip at most (rows of vid.time) */
    int mot_dim;        /* channels per motion frame; 0: no motion adapter */
    int mod_experts;    /* 1: every encoder layer has one FFN per modality group (text, and
                           image / audio / video / motion where that adapter exists), each
                           source position routed by its src_mod; 0: one FFN (golden) */
    int pad_id;         /* 1: loss ignores it, it is never attended as a source key */
    real_t ln_eps;       /* 1e-5 */
    real_t label_smoothing;  /* 0.1 */
    /* AdamW */
    real_t beta1, beta2, eps, weight_decay;   /* 0.9 0.999 1e-8 0.01 */
    int decay_all;      /* 1: decay every tensor (golden, PyTorch's default param group);
                           0: matrices and embeddings only (no LayerNorm, no biases) */
    real_t init_std;     /* weight init N(0, std) for matrices and embeddings (0.02) */
} model_config_t;

/* Fill c for a named size ("nano", "tiny", "base") with vocabulary V: the sizes of
 * DESIGN.md, max_src 256 / max_tgt 64 (change them after), n_mod 9, patch_dim 16*16*3,
 * img_grid 6 (96 px / 16) for nano/tiny and 24 (384 px) for base, no audio, video or
 * motion adapter (aud_dim = vid_dim = mot_dim = 0), and the defaults above.
 * Returns 0, or -1 with err naming the unknown size. */
int model_config_preset(model_config_t *c, const char *size, int vocab, char *err,
                        size_t errlen);
/* Check a config (positive sizes, D % H, ...). 0 or -1 with err. */
int model_config_check(const model_config_t *c, char *err, size_t errlen);

typedef struct model_t model_t;

/* Build a model on backend `be` (borrowed; must outlive the model) with weights drawn
 * from `seed`: matrices/embeddings N(0, init_std), biases 0, LayerNorm w=1 b=0.
 * NULL + err on failure. Caller owns; destroy with model_destroy. */
model_t *model_new(const model_config_t *c, backend_t *be, uint64_t seed, char *err,
                   size_t errlen);
void model_destroy(model_t **self_p);
const model_config_t *model_config(const model_t *self);
backend_t *model_backend(const model_t *self);

/* ---- parameters ---- */
typedef struct {
    char name[MODEL_MAX_NAME];
    int ndim;
    int64_t shape[2];
    int64_t numel;
    int64_t offset;     /* in floats, into each of the flat buffers */
    /* Backend memory (host memory on the CPU backend), owned by the model:
     * weight, gradient, AdamW first and second moments. */
    real_t *w, *g, *m, *v;
} model_param_t;

int model_n_params(const model_t *self);
int64_t model_numel(const model_t *self);     /* total floats in one flat buffer */
/* The i-th parameter (fixed order), or -1 for i out of range. */
int model_param(const model_t *self, int i, model_param_t *out);
/* Index of a named parameter, or -1. */
int model_param_find(const model_t *self, const char *name);

typedef enum { MODEL_W = 0, MODEL_G, MODEL_M, MODEL_V } model_buf_t;
/* Copy a whole flat buffer (model_numel floats) between the backend and the host. */
void model_buf_download(model_t *self, model_buf_t which, real_t *host);
void model_buf_upload(model_t *self, model_buf_t which, const real_t *host);
/* AdamW's step count (number of model_step calls, or restored on resume). */
int64_t model_adam_t(const model_t *self);
void model_set_adam_t(model_t *self, int64_t t);

/* ---- training ---- */

/* One batch (the Batches layout of the protocol). Arrays are borrowed host memory. */
typedef struct {
    int B, S, T;
    const int32_t *src_tok;  /* (B, S); 1 (pad) at image positions */
    const uint8_t *src_mod;  /* (B, S) modality per position, or NULL: all TEXT */
    const int32_t *src_len;  /* (B) keys j >= src_len[b] are padding */
    const int32_t *tgt_in;   /* (B, T) (NULL for model_encode) */
    const int32_t *tgt_out;  /* (B, T) labels; pad (1) = no loss (NULL: no loss) */
    const uint8_t *img;      /* (B, Np, patch_dim) u8 patches, or NULL */
    int Np, grid;            /* patches per image, patches per image row */
    const float *aud;        /* (B, Fa, aud_dim) stacked audio frames, or NULL */
    int Fa, aud_dim;
    const uint8_t *vid;      /* (B, Nf, Npv, vid_dim) u8 patches, frame-major, or NULL */
    int Nf, Npv, vid_grid, vid_dim;   /* frames, patches per frame, patches per frame row */
    const float *mot;        /* (B, Fm, mot_dim) motion frames, or NULL */
    int Fm, mot_dim;
} model_batch_t;

typedef struct {
    double loss;             /* mean loss over the loss tokens (0 when there are none) */
    int64_t ntok;            /* number of loss tokens */
    double loss_sum;         /* sum of per-token losses */
} model_out_t;

/* Check a batch against the config: shapes within max_src/max_tgt, ids in [0, V),
 * modalities known, image patches (audio, video, motion frames) present where src_mod
 * says IMAGE (AUDIO, VIDEO, MOTION) and of the adapter's width. 0 or -1 with err naming
 * the field and row. */
int model_batch_check(const model_t *self, const model_batch_t *b, char *err, size_t errlen);

/* Forward pass with loss. The batch is checked first (-1 with err: nothing computed).
 * Activations are kept for model_backward; their memory is allocated for the largest
 * (B,S,T) seen and reused. sample_loss (B), if not NULL, receives each row's sum of
 * per-token losses. Returns 0. */
int model_forward(model_t *self, const model_batch_t *b, model_out_t *out,
                  real_t *sample_loss, char *err, size_t errlen);
/* Logits of the last forward, (B, T, V), copied to host memory. */
void model_logits(model_t *self, real_t *host);
/* Gradients of the mean loss of the last forward into the G buffer (zeroed first).
 * Must follow model_forward with a batch that had tgt_out. */
void model_backward(model_t *self);
/* Global L2 norm of the gradients; if max_norm > 0 and the norm exceeds it, scale all
 * gradients by max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_). Returns the
 * norm before clipping. */
double model_clip_grad(model_t *self, double max_norm);
/* One AdamW step at learning rate lr with the config's betas, eps and weight decay. */
void model_step(model_t *self, real_t lr);

/* Linear warm-up to lr_max over `warmup` steps, then cosine decay to lr_min at `total`
 * steps (constant lr_min after). step counts from 0. */
typedef struct {
    double lr_max, lr_min;
    int64_t warmup, total;
} model_sched_t;
double model_lr_at(const model_sched_t *s, int64_t step);

/* ---- checkpoints (safetensors of the weights, by name) ---- */

/* Write every weight as F32 under its name. 0 or -1 with err. */
int model_save(model_t *self, const char *path, char *err, size_t errlen);
/* Load weights by name. Every parameter of the model must be present with its shape
 * (extra tensors in the file are ignored); F32 or BF16. 0 or -1 with err naming the
 * tensor (the weights are unchanged on error). */
int model_load(model_t *self, const char *path, char *err, size_t errlen);

/* ---- generation ---- */

/* A KV cache for up to max_rows decoder rows over sources of up to max_src positions and
 * max_len decoder steps: per decoder layer the self-attention K/V of every fed token and
 * the cross-attention K/V of the row's encoded source. NULL + err. Caller owns. */
typedef struct model_cache_t model_cache_t;
model_cache_t *model_cache_new(model_t *self, int max_rows, int max_src, int max_len,
                               char *err, size_t errlen);
void model_cache_destroy(model_cache_t **self_p);
int model_cache_rows(const model_cache_t *c);   /* current number of rows */
int model_cache_len(const model_cache_t *c);    /* tokens fed so far */

/* Encode the sources of b (src_tok, src_mod, src_len, img, aud, vid, mot; targets ignored) into the
 * cache: rows 0..B-1 become the B sources with no token fed. 0 or -1 with err. */
int model_encode(model_t *self, const model_batch_t *b, model_cache_t *c, char *err,
                 size_t errlen);
/* Feed one token per row (tokens (n), n == model_cache_rows) at the next position and
 * write the logits of the next token, (n, V) host memory. One step costs one token of
 * work per row. 0 or -1 with err (n mismatch, cache full, token out of range). */
int model_decode_step(model_t *self, model_cache_t *c, int n, const int32_t *tokens,
                      real_t *logits, char *err, size_t errlen);
/* New row i becomes a copy of old row src_rows[i] (n_new rows, n_new <= max_rows; rows
 * may repeat). 0 or -1 with err. */
int model_cache_reorder(model_t *self, model_cache_t *c, int n_new, const int32_t *src_rows,
                        char *err, size_t errlen);

#endif
