/* decstage.h: what the decoder tiers (ofa-image, ofa-audio, ofa-video, ofa-motion)
 * share in their work on a sample, so that each tier's own files hold only what it does
 * to one column's bytes (their programs' shared main is decmain.h).
 *
 * - Which columns a tier decodes: for every task, the columns that fill a source slot of
 *   the tier's modality in any of the task's templates (||| alternatives may read
 *   different columns), deduplicated by name, the first slot's settings winning, at most
 *   DECSTAGE_MAX_COLS (decstage_slots). A decstage_t keeps them per task, with the
 *   tier's own settings for each (setup_fn, run once at start-up).
 * - The per-sample loop (decstage_process): the sample's task must be in the plan; each
 *   column must be present and hold bytes (bin, or str holding raw bytes, as the source
 *   put them); column_fn does the rest. The columns come from the task plan, not from
 *   the message: a field the plan does not name passes through untouched, and a missing
 *   one is a reject.
 *
 * Rejects keep one form across the tiers: "unknown task 'T' (not in the plan)",
 * "column C: missing from the sample", "column C: expected WHAT, got a tensor|number";
 * column_fn's own reasons start with "column C: " too. */
#ifndef OFA_DECSTAGE_H
#define OFA_DECSTAGE_H

#include "planfile.h"
#include "proto.h"
#include "taskplan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DECSTAGE_MAX_COLS 8

/* Fills out[0..n) with the first source slot of modality mod for each distinct column
 * of tp, in template and slot order, and returns n (at most max). */
int decstage_slots(const taskplan_t *tp, mod_t mod, const taskplan_slot_t **out, int max);

/* One column a task's samples carry for the tier. */
typedef struct {
    const char *column;            /* borrowed from the task plan */
    const taskplan_slot_t *slot;   /* the first slot that reads it (borrowed) */
    void *data;                    /* the tier's settings: col_size bytes, owned by the table */
} decstage_col_t;

/* What the loop knows of the sample it hands to column_fn. */
typedef struct {
    int task;                      /* index in the plan */
    uint64_t id;                   /* the sample's first id; 0 when it has none */
    bool train;                    /* its "split" is "train" */
} decstage_sample_t;

/* Fills col->data (zeroed) from col->slot and tp; 0, or -1 with err (set-up fails). */
typedef int (*decstage_setup_fn)(void *ctx, const taskplan_t *tp, decstage_col_t *col,
                                 char *err, size_t errlen);
/* Releases what setup_fn put in data (not data itself). */
typedef void (*decstage_free_fn)(void *data);
/* One column of one sample: f is the column's field (bin or str); replaces it in msg
 * and returns 0, or -1 with err = "column NAME: reason". */
typedef int (*decstage_column_fn)(void *ctx, const decstage_col_t *col,
                                  const proto_field_t *f, const decstage_sample_t *s,
                                  proto_msg_t *msg, char *err, size_t errlen);

typedef struct decstage_t decstage_t;

/* The columns of modality mod for every task of plan (borrowed: it must outlive the
 * table). `what` names what a column must hold in the reject ("the image's bytes").
 * setup_fn (may be NULL) runs for each column, in order; on its first failure the
 * columns set up so far are released (free_fn, may be NULL) and NULL is returned with
 * its err. The caller owns the result. */
decstage_t *decstage_new(const plan_t *plan, mod_t mod, const char *what, size_t col_size,
                         decstage_setup_fn setup_fn, decstage_free_fn free_fn, void *ctx,
                         char *err, size_t errlen);
void decstage_destroy(decstage_t **self_p);

/* Runs column_fn on each of the sample's columns, in order; 0, or -1 with err at the
 * first failure (columns done before it stay done). */
int decstage_process(const decstage_t *self, proto_msg_t *msg, decstage_column_fn fn,
                     void *ctx, char *err, size_t errlen);

/* Sets the int "<column>.<suffix>" of msg. */
void decstage_set_int(proto_msg_t *msg, const char *column, const char *suffix, int64_t v);

#endif
