/* teval.h: the trainer's evaluation bookkeeping: closed answer sets and eval.json.
 *
 * Closed sets. A closed-set task (an answer slot marked closed_set, or a CATEGORY slot)
 * is decoded over the set of answers it can give. This system takes that set from the
 * data: the distinct target token sequences (the loss-carrying tokens of tgt_out before
 * </s>) of the task's TRAINING batches, collected as they stream past (also those a
 * resumed run skips, so a resumed run has the same set). The set travels in the
 * checkpoint ("meta.closed_set.<TASK>", see ckpt.h) so inference uses the same answers.
 * Validation answers never seen in training cannot be produced: they count as errors,
 * as in OFA's closed-set evaluation.
 *
 * Results. For each validation sample the trainer adds the generated text and the
 * reference; teval_write computes the task's metric and the best-constant baseline over
 * the same references (stages/eval/metrics.h) and writes eval.json as DESIGN.md says:
 *   {TASK: {"metric": NAME, "value": X, "baseline": B, "baseline_kind": "...", "n": N,
 *           "step": S}}
 * A plan metric "a/b" (several metrics) reports the first as "metric"/"value" and all of
 * them under "metrics": {"a": X, "b": Y}. A task with metric "-" or no validation
 * samples is written with "value": null and a "note" saying why. */
#ifndef OFA_TEVAL_H
#define OFA_TEVAL_H

#include <stddef.h>
#include <stdint.h>

#include "gen.h"

typedef struct teval_t teval_t;

teval_t *teval_new(void);
void teval_destroy(teval_t **self_p);

/* Record one training target of task (tokens before </s>, loss positions only). n <= 0
 * is ignored. Duplicates are counted once. */
void teval_add_target(teval_t *self, const char *task, const int32_t *tokens, int n);
/* The distinct targets seen for task, in a canonical order (sorted by tokens): the
 * count, and each sequence via teval_target. */
int teval_n_targets(teval_t *self, const char *task);
const int32_t *teval_target(teval_t *self, const char *task, int i, int *n);
/* A trie of the task's targets (answer i = teval_target i). NULL + err when none. The
 * caller owns it. */
gen_trie_t *teval_trie(teval_t *self, const char *task, char *err, size_t errlen);
/* Flattened for the checkpoint: each sequence followed by -1. Caller frees. */
int32_t *teval_targets_flat(teval_t *self, const char *task, int64_t *n);
/* The inverse of teval_targets_flat (checkpoint -> sets): n int32 values at flat (any
 * alignment). Returns 0 or -1 with err. */
int teval_load_flat(teval_t *self, const char *task, const void *flat, int64_t n,
                    char *err, size_t errlen);

/* Record one evaluated validation sample (strings copied). */
void teval_add_result(teval_t *self, const char *task, const char *hyp, const char *ref);
/* The same with a second reference (copied; NULL = none): solved_acc takes the puzzle
 * there (metrics.h). */
void teval_add_result2(teval_t *self, const char *task, const char *hyp, const char *ref,
                       const char *ref2);
int teval_n_results(teval_t *self, const char *task);
/* Forget every recorded result (before an evaluation at an interval); the closed sets
 * stay. */
void teval_clear_results(teval_t *self);

/* Write eval.json for the tasks named (in that order) with their metric names
 * (metrics[i], e.g. "cider" or "accuracy/vqa_score" or "-"), atomically. Returns 0, or
 * -1 with err (a metric that cannot be computed for a task is reported inside the file
 * as a "note", not as a failure). */
int teval_write(teval_t *self, const char *const *tasks, const char *const *metrics, int ntasks,
                int64_t step, const char *path, char *err, size_t errlen);

#endif
