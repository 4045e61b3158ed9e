/* tmodel.h: the trainer's narrow view of the model (model/model.h): build, one training
 * step on a batch, the parameters and moments by name for checkpoints, and a gen_step_i
 * over the KV-cache decoder for generation. Every call into the model library lives in
 * tmodel.c, so the trainer and ofa-infer depend on this small surface only. */
#ifndef OFA_TMODEL_H
#define OFA_TMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "gen.h"
#include "trainer.h"

typedef struct tmodel_t tmodel_t;

typedef struct {
    const char *size;        /* "nano" | "tiny" | "base" */
    int vocab;
    int max_src_len, max_tgt_len;
    int image_size, patch;
    uint64_t seed;           /* weight initialisation */
    int threads;
    const char *backend;     /* "cpu" | "cuda" | "auto" (cuda when built with it and a GPU
                                is present, else cpu) */
    const char *precision;   /* cuda matrix products: "fp32" | "bf16" | "auto" (bf16) */
    int device;              /* cuda: the GPU (a trainer group passes its local rank) */
    double weight_decay;     /* AdamW */
    double label_smoothing;
    /* The audio, video and motion adapters (0: absent; tmodel_cfg_adapters fills them) */
    int aud_dim;             /* audio_stack * n_mels */
    int vid_patch, vid_grid, vid_frames;   /* video patch side, patches per frame side, frames */
    int mot_dim;             /* channels per motion frame */
    int mod_experts;         /* 1: one encoder FFN per modality group (model.modality_experts;
                                tmodel_cfg_adapters fills it) */
} tmodel_cfg_t;

/* Fill cfg's adapter fields from the plan: an adapter exists when some task has a source
 * slot of its modality, sized by the plan's model section and the slots' attributes
 * (docs/modalities.md); and the modality experts from model.modality_experts. 0, or -1
 * with err (a MOTION slot without model.motion_channels, video or audio slots whose patch
 * or n_mels disagree). */
int tmodel_cfg_adapters(tmodel_cfg_t *cfg, const plan_t *plan, char *err, size_t errlen);

/* NULL + err on failure. The caller owns the result. */
tmodel_t *tmodel_new(const tmodel_cfg_t *cfg, char *err, size_t errlen);
void tmodel_destroy(tmodel_t **self_p);
int tmodel_vocab(const tmodel_t *self);

/* Forward + backward on the batch, gradient clipping to `clip` (<= 0: none) and one
 * AdamW step at lr. *loss = mean label-smoothed loss over the loss tokens, *ntok their
 * count. Returns 0 or -1 with err (the weights are unchanged then). */
int tmodel_train(tmodel_t *self, const trainer_batch_t *b, double lr, double clip,
                 float *loss, int64_t *ntok, char *err, size_t errlen);

/* Gradient accumulation over several batches for one optimizer step (the round_robin
 * multi-task step): tmodel_accum_begin zeroes the sum; each tmodel_accum_add runs
 * forward + backward on a batch and adds weight x its gradient (of the batch's mean
 * loss) to the sum; tmodel_accum_step puts the sum in place of the gradient, clips it to
 * `clip` (<= 0: none) and takes one AdamW step at lr. tmodel_accum_grad gives the sum
 * (host memory owned by tmodel, tmodel_numel floats, in the flat parameter order of
 * tmodel_param's offsets) as it stands, before clipping. accum_add returns 0 or -1 with
 * err (the sum is then unchanged). */
void tmodel_accum_begin(tmodel_t *self);
int tmodel_accum_add(tmodel_t *self, const trainer_batch_t *b, double weight, float *loss,
                     int64_t *ntok, char *err, size_t errlen);
void tmodel_accum_step(tmodel_t *self, double lr, double clip);
const float *tmodel_accum_grad(const tmodel_t *self);

/* The gradient of the mean loss of one batch at the current weights, without a step,
 * into out (tmodel_numel floats). 0 or -1 with err. */
int tmodel_grad(tmodel_t *self, const trainer_batch_t *b, float *out, char *err, size_t errlen);
int64_t tmodel_numel(const tmodel_t *self);
/* Peak memory so far: on the cuda backend the device bytes allocated through it at their
 * peak (*kind = "gpu"); on the cpu backend the process's peak resident set (*kind =
 * "rss"). -1 when unknown. */
int64_t tmodel_peak_mem(const tmodel_t *self, const char **kind);

/* Loss of the batch without training (tests, evaluation loss). */
int tmodel_loss(tmodel_t *self, const trainer_batch_t *b, float *loss, int64_t *ntok,
                char *err, size_t errlen);

/* Parameters in a fixed order, with their AdamW moments, as HOST copies: call
 * tmodel_sync_host() first (it downloads weights and moments from the backend), and
 * tmodel_sync_device() after writing them (resume). Pointers are owned by tmodel. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    float *w, *m, *v;
} tmodel_param_t;

void tmodel_sync_host(tmodel_t *self);
void tmodel_sync_device(tmodel_t *self);
int tmodel_n_params(const tmodel_t *self);
void tmodel_param(tmodel_t *self, int i, tmodel_param_t *out);
/* Copy every weight from a checkpoint file (by name, F32, same shape) into the model.
 * 0, or -1 with err naming the first missing or mismatched tensor (weights unchanged). */
int tmodel_load_weights(tmodel_t *self, const ckpt_file_t *f, const char *what, char *err,
                        size_t errlen);

/* AdamW's step count t (bias correction). */
int64_t tmodel_adam_t(const tmodel_t *self);
void tmodel_set_adam_t(tmodel_t *self, int64_t t);

/* Encode rows [row0, row0+n) of batch b and prepare the decoder: *st then drives
 * model_decode_step on a KV cache of up to max_rows rows (beam x n, or the largest
 * trie level x n). Valid until tmodel_gen_end. Returns 0 or -1 with err. */
int tmodel_gen_begin(tmodel_t *self, const trainer_batch_t *b, int row0, int n, int max_rows,
                     int max_len, gen_step_i *st, char *err, size_t errlen);
void tmodel_gen_end(tmodel_t *self);

/* ---- the trainer group (comm.h) ----
 * With a group of world > 1 set, tmodel_train all-reduces the gradient between backward
 * and clipping: each rank's gradient of its batch's mean loss is weighted by its number
 * of loss tokens, summed over the ranks and divided by the total, so W ranks on batches
 * b_1..b_W take exactly the step of one rank on their concatenation (up to the order of
 * float sums); *loss and *ntok become the group's. Every rank then clips the same
 * gradient and takes the same AdamW step. comm is borrowed (NULL: one rank). */
typedef struct comm_t comm_t;
void tmodel_set_comm(tmodel_t *self, comm_t *comm);
/* A rank without a batch takes part in the group's step with a zero gradient:
 * *stepped = 1 when another rank had a batch (the same AdamW step was taken here),
 * *all_done = 1 when every rank called this (no rank has data left). 0 or -1 + err. */
int tmodel_train_idle(tmodel_t *self, double lr, double clip, int *stepped, int *all_done,
                      char *err, size_t errlen);
/* The data cursor after a group step: the largest batch step that any rank trained in
 * the group's steps so far (step, this rank's own, without a group). */
int64_t tmodel_group_cursor(const tmodel_t *self, int64_t step);
/* Stopping a group (a signal): a rank that was asked to stop says so in every group
 * step it takes part in from now on (it takes part idle: tmodel_train_idle), so each
 * rank learns of it at the end of the same group step, whichever ranks the signal
 * reached; tmodel_group_stopping is then 1 (it is 1 at once on the rank that stops). */
void tmodel_group_stop(tmodel_t *self);
int tmodel_group_stopping(const tmodel_t *self);
/* Copy rank 0's weights, moments and AdamW step count to every rank (start and resume). */
int tmodel_group_bcast(tmodel_t *self, char *err, size_t errlen);
/* 1 when this rank's weights equal rank 0's bit for bit (rank 0's are broadcast to
 * compare), 0 when they differ, -1 + err when the collective fails. */
int tmodel_group_same(tmodel_t *self, char *err, size_t errlen);

#endif
