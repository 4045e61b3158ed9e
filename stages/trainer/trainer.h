/* trainer.h: the trainer library behind ofa-trainer: trains the model on batches and
 * evaluates it on the validation batches, with checkpoints, metrics and resume.
 * main.c only wires sockets to it; tests call it directly with synthetic batches.
 *
 *     trainer_t *tr = trainer_new(plan, &opts, err, sizeof err);     // --resume loads
 *     for each BATCH message b:  trainer_feed(tr, &b, wait_s, err, sizeof err);
 *     on op=end:                 trainer_finish(tr, err, sizeof err); // ckpt + eval.json
 *     on SIGTERM, or when trainer_stopping(tr): trainer_stop(tr, ...); // ckpt
 *     trainer_destroy(&tr);
 *
 * Rules (stated here because the rest of the run relies on them):
 *  - Model: built from the plan's model section (size, image size, patch, positions)
 *    with the vocabulary of the BPE file (opts.bpe_path, by default RUN/bpe.bin):
 *    V = 5 specials + 256 bytes + merges + 1000 bins (tok_bpe_vocab_size).
 *  - Schedule: linear warm-up over trainer.warmup steps to trainer.lr, then cosine decay
 *    to 0 at the last step. The total T is trainer.max_steps when set; otherwise an
 *    estimate from the data: for each task, ceil(rows / batch_size) x epochs, where rows
 *    is the number of non-empty lines of its train files (capped by max_rows), summed
 *    over tasks and divided by the number of ranks. Rejected rows make the estimate a
 *    little high, so the last steps keep a small positive learning rate; when the data
 *    runs longer than T the rate stays at 0. With max_steps set, training batches past
 *    max_steps are skipped (the validation batches are still evaluated).
 *  - trainer.multitask = "sample" (the default): one training batch = one AdamW step
 *    (weight decay trainer.weight_decay, gradient norm clipped to trainer.clip, label
 *    smoothing trainer.label_smoothing).
 *  - trainer.multitask = "round_robin": the source sends rounds of one batch of every
 *    task (source.h); the trainer sums the gradients of a round's batches, each of its
 *    batch's mean loss times the task's weight / the sum of the training tasks' weights,
 *    and takes one AdamW step on the sum (clipped as a whole). A round ends when it
 *    holds a batch of every task with training rows, or early when the next batch's task
 *    is already in it or its step is not the next one (a batch lost to rejects), or at
 *    the validation batches / trainer_finish. T is then the rounds of the longest task:
 *    max over tasks of ceil(rows / batch_size) x epochs. metrics.jsonl keeps one line
 *    per task (each micro-batch is accounted under the step it went into). The resume
 *    cursor is the last batch of the last complete step: a checkpoint taken mid-round
 *    drops the round's partial sum, and the resumed run sums those batches again.
 *  - Resume: the data cursor is the "step" field (batch index of the run) of the last
 *    batch this rank consumed. The source and batcher produce the same batch sequence
 *    again, and a resumed trainer skips every training batch with step <= cursor; the
 *    next one trains exactly as it would have without the interruption (same weights,
 *    moments, optimizer step count and schedule position).
 *  - Validation batches (split "valid": after all training batches, or before them when
 *    trainer.eval_every > 0) are kept and evaluated every eval_every steps and by
 *    trainer_finish with the task's generator (greedy, beam with
 *    trainer.beam, closed set, box), at most trainer.max_gen_len tokens. Text outputs are
 *    detokenised with the BPE; boxes are compared in location-bin units against the
 *    reference bins of tgt_out (IoU is invariant to scaling each axis, so this equals the
 *    pixel IoU up to bin rounding). eval.json goes to RUN/eval.json (teval.h).
 *  - Only rank 0 writes checkpoints, metrics.jsonl and eval.json (eval.json then covers
 *    the validation batches rank 0 received).
 *  - Trainer group (opts.comm with world > 1, comm.h): every training batch is one
 *    group step: the ranks' gradients are all-reduced (loss-token-weighted mean, so W
 *    ranks on batches of b rows take the step of one rank on W*b rows) and every rank
 *    takes the same AdamW step. Rank 0's weights are broadcast at start (and after a
 *    resume). A rank whose data ends first takes part in the remaining steps with a
 *    zero gradient (trainer_finish), and at the end every rank checks that its weights
 *    equal rank 0's bit for bit. The checkpoint's data cursor is the largest batch step
 *    of the group's last step. Without a group, world > 1 trains independent replicas.
 *  - Each evaluation rewrites eval.json and appends {"step", "eval"} to
 *    eval_history.jsonl. An evaluation during training uses the closed answer sets
 *    collected from the training batches seen so far.
 */
#ifndef OFA_TRAINER_H
#define OFA_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "planfile.h"

/* One batch as the batcher sends it (arrays borrowed from the message for the call). */
typedef struct {
    const char *task;
    int64_t step;            /* batch index in the run */
    int epoch;
    int valid;               /* split == "valid" */
    int B, S, T;
    const uint64_t *ids;     /* (B) */
    const int32_t *src_tok;  /* (B, S) */
    const uint8_t *src_mod;  /* (B, S) */
    const int32_t *src_len;  /* (B) */
    const int32_t *tgt_in;   /* (B, T) */
    const int32_t *tgt_out;  /* (B, T), 1 = no loss */
    const int32_t *tgt_len;  /* (B) */
    const uint8_t *img;      /* (B, Np, patch_dim) or NULL */
    int Np, patch_dim, grid;
    const float *aud;        /* (B, Fa, aud_dim) stacked audio frames, or NULL */
    int Fa, aud_dim;
    const uint8_t *vid;      /* (B, Nf, Npv, vid_dim) video patches, or NULL */
    int Nf, Npv, vid_dim, vid_grid;
    const float *mot;        /* (B, Fm, mot_dim) motion frames, or NULL */
    int Fm, mot_dim;
    const char *refs;        /* validation: B references joined by '\n' (may be NULL) */
} trainer_batch_t;

typedef struct {
    const char *run_dir;     /* RUN: checkpoints/, metrics.jsonl, eval.json */
    const char *bpe_path;    /* NULL: RUN/bpe.bin */
    int resume;              /* load the newest checkpoint of RUN/checkpoints */
    int rank, world;
    int tty;                 /* progress line: -1 detect, 0 off, 1 on */
    int threads;             /* 0: the plan's trainer.threads */
    int quiet;               /* no informational lines on stderr */
    struct comm_t *comm;     /* the trainer group (comm.h; borrowed), or NULL: one rank */
} trainer_opts_t;

typedef struct trainer_t trainer_t;

/* Build the model (or load it with opts.resume). NULL + err (set-up failures: the plan,
 * the BPE file, an unreadable checkpoint). The caller owns the result. plan is borrowed
 * and must outlive the trainer. */
trainer_t *trainer_new(const plan_t *plan, const trainer_opts_t *opts, char *err, size_t errlen);
void trainer_destroy(trainer_t **self_p);

/* Consume one batch. Training: one optimizer step, unless skipped (resume cursor,
 * max_steps reached); validation: copied for trainer_finish. wait_s: seconds the caller
 * waited for this batch (metrics.jsonl's data_wait_s). Returns 0, or -1 with err when the
 * batch is malformed (wrong task, shapes, ids outside the vocabulary): the batch is
 * dropped and the run goes on. */
int trainer_feed(trainer_t *self, const trainer_batch_t *b, double wait_s, char *err, size_t errlen);

/* Write a checkpoint of the current state now (rank 0 only; others return 0). */
int trainer_checkpoint(trainer_t *self, char *err, size_t errlen);

/* Stop on a signal: write a checkpoint of the current state. In a trainer group this
 * rank first tells the others and takes part, idle, in the group's steps until every
 * rank has stopped (the others learn of it at the end of a group step: trainer_stopping),
 * so all ranks stop after the same step whichever of them the signal reached. 0 or -1. */
int trainer_stop(trainer_t *self, char *err, size_t errlen);
/* 1 when a rank of the group was stopped: the caller stops taking batches and calls
 * trainer_stop. Always 0 without a group. */
int trainer_stopping(const trainer_t *self);

/* End of data: final checkpoint (if anything trained since the last one), evaluation
 * of the kept validation batches, eval.json. Returns 0 or -1 with err. */
int trainer_finish(trainer_t *self, char *err, size_t errlen);

/* State. */
int64_t trainer_step(const trainer_t *self);         /* optimizer steps done */
int64_t trainer_cursor(const trainer_t *self);       /* last batch step consumed, -1 */
int64_t trainer_total_steps(const trainer_t *self);  /* the schedule's T */
double trainer_lr_at(const trainer_t *self, int64_t step);  /* lr of optimizer step `step` (1-based) */
float trainer_last_loss(const trainer_t *self);
int trainer_vocab(const trainer_t *self);
/* round_robin: the gradient sum of the last step (before clipping; during a round, the
 * partial sum), *n floats in the flat order of the model's parameters (tmodel.h).
 * NULL in sample mode. Owned by the trainer (tests). */
const float *trainer_step_grad(const trainer_t *self, int64_t *n);
/* Counters for the stats socket. */
void trainer_counters(const trainer_t *self, int64_t *batches, int64_t *samples,
                      int64_t *skipped, int64_t *bad, double *busy_s);

/* The learning-rate rule above as a pure function (tests). */
double trainer_schedule(double lr, int64_t warmup, int64_t total, int64_t step);

#endif
