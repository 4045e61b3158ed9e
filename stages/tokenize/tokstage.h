/* tokstage.h: the tokenize tier's work on one sample message, without sockets.
 *
 * For the sample's task (and the template taskplan_pick_template picks for its id) it
 * reads every column the plan names: text-like columns as str (or bin) fields; IMAGE
 * columns as the u8 patch tensors the image tier made, with "<col>.width"/".height";
 * AUDIO/VIDEO/MOTION columns as tensors whose first dimension is the positions. It then
 * adds, as the shared contracts say:
 *     "src_tok" i32 (S), "src_mod" u8 (S), "tgt_in" i32 (T), "tgt_out" i32 (T),
 *     "ref" str, and the image tensor under "img" with "img.grid" (renamed from its
 *     column; "img.width"/"img.height" follow it), the video tensor under "vid" with
 *     "vid.grid"/"vid.frames", the motion tensor under "mot" with "mot.frames", and the
 *     audio frames (F, n_mels) stacked by model.audio_stack = k into "aud" f32
 *     (ceil(F/k), k*n_mels) with "aud.frames" = F (tok_audio_stack),
 * plus ints "tok.src_cut", "tok.tgt_cut", "tok.masked" (what the truncation rule and
 * masking did). Masking and noise are applied to "train" samples only (field "split").
 * The raw text columns are left in the message.
 *
 * A task the tokenizer cannot serve (tok_ctx_new refused it) has every sample rejected
 * with that reason; tokstage_new reports such tasks through its warning callback. */
#ifndef OFA_TOKSTAGE_H
#define OFA_TOKSTAGE_H

#include "planfile.h"
#include "proto.h"
#include "tokenize.h"

typedef struct tokstage_t tokstage_t;

/* plan and bpe are borrowed (bpe is used by this stage only: its cache mutates).
 * warn(arg, task, reason) is called for each task that cannot be tokenized (may be
 * NULL). The caller owns the result. */
tokstage_t *tokstage_new(const plan_t *plan, tok_bpe_t *bpe,
                         void (*warn)(void *arg, const char *task, const char *reason),
                         void *warn_arg);
void tokstage_destroy(tokstage_t **self_p);

/* A warn function for tokstage_new: "PROGRAM: warning: task T cannot be tokenized, its
 * samples will be rejected: REASON" on stderr (arg unused). */
void tokstage_warn_stderr(void *arg, const char *task, const char *reason);

/* Transforms msg in place; 0, or -1 with err naming the column or task. */
int tokstage_process(tokstage_t *self, proto_msg_t *msg, char *err, size_t errlen);

/* Audio frames x (F, C) -> out (ceil(F/k), k*C): each mel bin normalised over the
 * utterance to mean 0 and variance 1, then k consecutive frames side by side in one row
 * (frame t goes to row t/k, columns (t%k)*C ..), the last row's missing frames 0.
 * out holds ceil(F/k)*k*C floats. Returns ceil(F/k). */
int tok_audio_stack(const float *x, int64_t F, int C, int k, float *out);

#endif
