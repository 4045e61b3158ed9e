/* decmain.h: the main of a decoder tier's program (ofa-image, ofa-audio, ofa-video,
 * ofa-motion): the common flags and the tier's own, the plan, the tier's set-up, the
 * stage runtime's worker loop (common/stage.h), tear-down. A tier's main.c declares its
 * flags and hands its constructor, transform and destructor to decmain_run.
 *
 * Set-up failures are fatal, as in every main: a plan that does not load ("cannot load
 * plan FILE:" and the loader's lines), or a tier that cannot be set up (its own
 * message and hint). */
#ifndef OFA_DECMAIN_H
#define OFA_DECMAIN_H

#include "planfile.h"
#include "stage.h"

#include <stddef.h>

/* A decoder tier's program. new_fn gets the loaded plan (which outlives the tier) and
 * opts; on NULL the program exits 1 with "<fail><err>" and fail_hint. */
typedef struct {
    const char *usage;             /* stage_args_parse's text: the program, its flags */
    stage_extra_fn extra_fn;       /* the tier's own flags */
    void *opts;                    /* what extra_fn fills and new_fn reads */
    void *(*new_fn)(const plan_t *plan, void *opts, char *err, size_t errlen);
    void (*destroy_fn)(void *st);
    stage_work_fn work_fn;         /* the tier's transform of one sample */
    const char *fail;              /* the set-up failure's message, before new_fn's err */
    const char *fail_hint;         /* ... and its hint (may be NULL) */
} decmain_t;

/* The whole main of a decoder tier. Returns main's exit code. */
int decmain_run(int argc, char **argv, const decmain_t *m);

#endif
