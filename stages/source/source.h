/* source.h: reads the dataset rows of every task of a plan and emits them as sample
 * messages in one deterministic order, which is also the order of the batches.
 *
 * Order (DESIGN.md, Determinism: a pure function of plan, seed and epoch):
 *  - Training rows are cut into batch slots. For each slot the source picks a task at
 *    random in proportion to its weight (one seeded RNG for the run), among the tasks
 *    that still have training rows left in their epochs, and emits that task's next
 *    batch_size rows of its current epoch (fewer at the end of an epoch: a slot never
 *    spans two epochs). Each task's rows are shuffled per epoch with a seed made of
 *    (plan seed, task index, epoch). A task with fewer rows simply runs out earlier;
 *    the run's training part ends when every task finished its epochs.
 *  - Then the validation rows of each task, in file order, in slots of batch_size.
 *    When the plan asks for evaluations during training (trainer.eval_every > 0), the
 *    validation rows come first instead, so the trainer holds them from the start.
 * Every sample carries "seq" (its position in this order, from 0), "slot" (the batch
 * it belongs to), "epoch", "row", "split", its route ("@route", "@hop") and the
 * columns its task's instruction names.
 *
 * Rows: TSV (tab-separated, no header; columns named by the task's `columns` list) or
 * JSONL (one flat JSON object per line: string keys; string, number, true, false or null
 * values, numbers passed on as their text; nested values, bad escapes, lone surrogates
 * and trailing text are rejects). Blank lines are not rows; a CR before the LF is
 * dropped; a row holding a NUL byte is a reject. IMAGE/AUDIO/VIDEO/MOTION columns: a
 * value under 1024 characters that names an existing regular file (absolute, or relative
 * to the data file's folder; at most 256 MiB) is that file's bytes; any other value is
 * base64 (standard or URL-safe, see base64.h); an empty value is a reject. A row that
 * cannot be read becomes a REJECT message naming file:line and the column; it still
 * takes its seq and slot, so nothing downstream waits for it.
 *
 * trainer.multitask = "round_robin" changes the training slots: they come in rounds of
 * one slot of every task with training rows, in the plan's task order (each task its own
 * batch_size), one round per optimizer step (the trainer sums the round's gradients).
 * The number of rounds is trainer.max_steps when set, else that of the longest task:
 * max over tasks of ceil(rows / batch_size) x epochs. A task that runs out of rows
 * before the last round starts its next epoch (new shuffle, epoch + 1), so small
 * datasets repeat by their own epochs and every round holds every task.
 *
 * Limits: max_rows of a task caps its train rows and, separately, its valid rows (the
 * first ones in file order). */
#ifndef OFA_SOURCE_H
#define OFA_SOURCE_H

#include "planfile.h"
#include "proto.h"

#include <stdint.h>

typedef struct source source_t;

/* Index every train/valid file of the plan. NULL + err when a file cannot be opened.
 * The plan is borrowed and must outlive the source. The caller owns the result. */
source_t *source_new(const plan_t *plan, char *err, size_t errlen);
void source_destroy(source_t **self_p);

/* Length bucketing (source.c): each run of k batches of a task is sorted by the rows'
 * text length, then its batches are shuffled among themselves. 0 or 1 = off (the
 * default). Call before the first source_next; the order stays a pure function of
 * (plan, seed, epoch, k). */
void source_set_bucket(source_t *self, int k);

/* The next message (a SAMPLE, or a REJECT for a bad row), or NULL at the end.
 * The caller owns it. */
proto_msg_t *source_next(source_t *self);

/* Messages emitted so far (= the next seq). */
int64_t source_emitted(const source_t *self);

/* Sample id of a row: (task_index << 40) | row, bit 39 set for validation rows. */
uint64_t source_sample_id(int task_index, int valid, int64_t row);

#endif
