/* batcher.h: restores the source's order and cuts padded batches.
 *
 * Samples (and reject notices) arrive in any order, each with its "seq" (position in the
 * source's order) and "slot" (the batch it belongs to). The batcher keeps a reorder
 * buffer by seq and walks it in order: consecutive samples of one slot form one batch
 * (a slot never mixes tasks, see source.h); a reject only moves the walk on. So the
 * batches, their contents and their order are a pure function of the source's order,
 * whatever the number of workers and the timing. A seq seen twice, or one already
 * passed, is a duplicate and is dropped (counted).
 *
 * Padding (DESIGN.md, Batches): "src_tok" i32 (B,S) with pad id 1, "src_mod" u8 (B,S)
 * with 255 at padded positions, "src_len" i32 (B), "tgt_in"/"tgt_out" i32 (B,T) with 1,
 * "tgt_len" i32 (B), "img" u8 (B,Np,P*P*3) with "img.grid" when the samples have images
 * (a sample whose image shape differs from the batch's first is dropped with a reason),
 * "aud" f32 (B,Fa,k*n_mels) + "aud_len" i32 (B) and "mot" f32 (B,Fm,C) + "mot_len" i32
 * (B) (zero-padded to the longest row) when they have audio / motion, "vid" u8
 * (B,Nf,Np,P*P*3) with "vid.grid" when they have video (docs/modalities.md),
 * plus "step" (the slot), "epoch", "split", "refs" (the references joined by '\n'), and
 * "seq0", the first seq of the slot (rejects included): a restarted batcher that starts
 * its walk at a batch's seq0 cuts that batch and every later one exactly as before. */
#ifndef OFA_BATCHER_H
#define OFA_BATCHER_H

#include "proto.h"

#include <stdint.h>

typedef struct batcher batcher_t;

/* A seq this far ahead of the walk is refused as malformed (the buffer never grows
 * past it; the batcher's credit window is far smaller). */
#define BATCHER_MAX_AHEAD (1LL << 22)

/* The caller owns the result. */
batcher_t *batcher_new(void);
void batcher_destroy(batcher_t **self_p);

/* A finished SAMPLE or a REJECT notice (ownership passes). A message of another kind,
 * without "seq", or with a seq BATCHER_MAX_AHEAD or more past the walk is dropped and
 * counted as malformed; a seq already buffered or already walked is a duplicate. */
void batcher_add(batcher_t *self, proto_msg_t *msg);
/* Start the walk at seq instead of 0 (a restarted batcher: everything before seq is in
 * batches the consumers have). Only before the first batcher_add; -1 otherwise. */
int batcher_start(batcher_t *self, int64_t seq);
/* The first seq that is not inside a batch taken with batcher_next: the seq0 of the
 * oldest ready batch, else the first seq of the slot being collected, else the walk. */
int64_t batcher_open_seq(const batcher_t *self);

/* The source emitted count messages in all (seq 0 .. count-1). */
void batcher_set_eof(batcher_t *self, int64_t count);

/* The next complete batch, or NULL. The caller owns it. */
proto_msg_t *batcher_next(batcher_t *self);
/* Every seq up to eof has been walked and every batch taken. */
int batcher_done(const batcher_t *self);

/* Items held in the reorder buffer, and whether the walk waits for a missing seq. */
int64_t batcher_buffered(const batcher_t *self);
int batcher_waiting_for_gap(const batcher_t *self);
int64_t batcher_next_seq(const batcher_t *self);

/* Counters. */
long batcher_duplicates(const batcher_t *self);
long batcher_malformed(const batcher_t *self);
long batcher_samples_out(const batcher_t *self);
long batcher_batches_out(const batcher_t *self);

/* Pad and stack samples of one task into a batch message (exposed for tests).
 * Takes ownership of the n samples. Returns NULL when n is 0. */
proto_msg_t *batcher_make_batch(proto_msg_t **samples, int n, int64_t step);

/* Pixel tensors of a batch ("img", "vid") of this size or more are built in a slot of
 * the batcher's arena when it has one with room (batcher_set_arena), else on the heap. */
#define BATCHER_ARENA_MIN 65536

/* The same, with the pixels built in `arena` (may be NULL). Such a slot is the
 * caller's to release once the batch's consumer confirmed it. */
proto_msg_t *batcher_make_batch_in(proto_msg_t **samples, int n, int64_t step,
                                   shmarena_t *arena);

/* Build the pixels of the batches batcher_next cuts in `arena` (not owned; NULL = on the
 * heap). */
void batcher_set_arena(batcher_t *self, shmarena_t *arena);

#endif
