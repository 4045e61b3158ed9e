/* taskplan.h: compile a parsed instruction (instr.h) into a task plan.
 *
 * The task plan is what the pipeline needs to know about one task:
 *  - the ordered segments of the source and the target: plain prompt text and
 *    text-like slots (TEXT, BOX, PHONE, STRUCT, CATEGORY) that stand next to each other
 *    are grouped into one token sequence wrapped with <s> ... </s> (as OFASys does);
 *    IMAGE, AUDIO, VIDEO and MOTION slots are segments of their own;
 *  - for each slot, the chain of steps that turns the raw column value into model
 *    input, each step tagged with the pipeline tier that runs it;
 *  - the route: the tiers a sample visits, in order ("image,tokenize"); the tokenize
 *    tier is always last, and a text-only task goes "tokenize";
 *  - the loss mask (which target segments carry loss), the generator used at
 *    inference and the metric.
 *
 * Plain text on the target side is a decoder prompt: it is fed to the decoder and
 * carries no loss, as a `no_loss` slot. A target slot carries loss unless no_loss.
 *
 * taskplan_runnable() refuses the tasks whose output this system cannot generate yet
 * (image codes, speech frames, motion, video), with a message saying what is missing;
 * every instruction still compiles, so `launch --dry-run` can show its plan. */
#ifndef OFA_TASKPLAN_H
#define OFA_TASKPLAN_H

#include "instr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Steps of the chains. The tier that runs a step is taskplan_step_tier(kind). */
typedef enum {
    STEP_TEXT_NORMALIZE = 0, /* tokenize: lower case / strip punctuation (uncased, ...) */
    STEP_BPE,                /* tokenize: byte-level BPE */
    STEP_PHONEMIZE,          /* tokenize: text -> phone tokens (preprocess=text_phone) */
    STEP_PHONE_LOOKUP,       /* tokenize: phone symbols -> phone tokens */
    STEP_STRUCT_LINEARIZE,   /* tokenize: table/triples -> text */
    STEP_CATEGORY_LOOKUP,    /* tokenize: label -> its closed-set entry */
    STEP_TRUNCATE,           /* tokenize: cut to max_length tokens */
    STEP_MASK,               /* tokenize: mask spans (mask_ratio) */
    STEP_NOISE,              /* tokenize: replace tokens at random (noise_ratio) */
    STEP_BOX_PARSE,          /* tokenize: "x0,y0,x1,y1" -> coordinates */
    STEP_BOX_BINS,           /* tokenize: coordinates -> <bin_k> tokens */
    STEP_IMAGE_DECODE,       /* image: JPEG/PNG -> RGB */
    STEP_IMAGE_RESIZE,       /* image: -> image_size x image_size */
    STEP_IMAGE_PATCHIFY,     /* image: -> (Np, P*P*3) u8 patches */
    STEP_IMAGE_MASK,         /* tokenize: mask patches (mask_ratio) */
    STEP_IMAGE_VQGAN,        /* image: -> VQGAN codes (not available yet) */
    STEP_AUDIO_DECODE,       /* audio: WAV/FLAC -> float samples */
    STEP_AUDIO_RESAMPLE,     /* audio: -> sample_rate */
    STEP_AUDIO_FBANK,        /* audio: -> (frames, n_mels) log-mel filterbank */
    STEP_AUDIO_STACK,        /* tokenize: stack frames into positions */
    STEP_VIDEO_DEMUX,        /* video: container -> packets */
    STEP_VIDEO_DECODE,       /* video: packets -> frames */
    STEP_VIDEO_SAMPLE,       /* video: keep `frames` frames evenly spaced */
    STEP_VIDEO_RESIZE,       /* video: -> image_size x image_size */
    STEP_VIDEO_PATCHIFY,     /* video: -> (F*Np, P*P*3) patches */
    STEP_MOTION_PARSE,       /* motion: BVH frames -> joint rotations */
    STEP_MOTION_6D,          /* motion: rotations -> 6-D representation */
    STEP__COUNT
} step_kind_t;

/* "jpeg-decode", "bpe", ... (static strings). */
const char *taskplan_step_name(step_kind_t kind);
/* "image", "audio", "video", "motion" or "tokenize" (static strings). */
const char *taskplan_step_tier(step_kind_t kind);

typedef struct {
    step_kind_t kind;
    char arg[48];            /* human-readable parameters: "96x96", "16 px, 36 patches" */
} taskplan_step_t;

#define TASKPLAN_MAX_STEPS 8

/* One compiled slot. `in` points into the instr_t the plan was compiled from (the
 * plan keeps its own copy of the instruction). */
typedef struct {
    const instr_slot_t *in;
    mod_t mod;
    const char *column;      /* NULL for an unnamed target slot */
    bool target;
    bool loss;               /* target slot that carries loss */
    bool repeated;           /* inside a `( ... )*` group */
    int num_bins;            /* BOX: location levels (num_bins= or the plan's default) */
    taskplan_step_t steps[TASKPLAN_MAX_STEPS];
    int nsteps;
} taskplan_slot_t;

typedef enum {
    TP_ITEM_TEXT = 0,        /* plain prompt text */
    TP_ITEM_SLOT,            /* a slot; index into taskplan_template_t.slots */
} taskplan_item_kind_t;

typedef struct {
    taskplan_item_kind_t kind;
    const char *text;        /* TP_ITEM_TEXT */
    int slot;                /* TP_ITEM_SLOT */
    bool loss;               /* target items only */
} taskplan_item_t;

/* A segment: one <s>...</s> token sequence (mod = MOD_TEXT, wrapped = true) made of
 * items, or one non-text slot (IMAGE/AUDIO/VIDEO/MOTION, one item, not wrapped). */
typedef struct {
    mod_t mod;
    bool wrapped;
    bool loss;               /* some item of it carries loss */
    bool repeated;           /* the segment is the body of a `( ... )*` group */
    taskplan_item_t *items;
    int nitems;
} taskplan_seg_t;

typedef struct {
    taskplan_seg_t *src, *tgt;
    int nsrc, ntgt;
    taskplan_slot_t *slots;  /* every slot of this template, source first, in order */
    int nslots;
} taskplan_template_t;

typedef enum {
    GEN_GREEDY = 0,
    GEN_BEAM,
    GEN_CLOSED_SET,          /* score each answer of the closed set, pick the best */
    GEN_BOX,                 /* decode 4 location bins */
} taskplan_gen_t;
const char *taskplan_gen_name(taskplan_gen_t gen);

/* A data column the task reads and the modality it fills (first use wins). */
typedef struct {
    const char *name;
    mod_t mod;
    bool source;             /* read on the source side (else target only) */
} taskplan_column_t;

/* Compile-time settings from the plan (model and trainer sections). */
typedef struct {
    int image_size;          /* default input side (96 nano/tiny, 384 base) */
    int patch;               /* default patch side (16) */
    int max_src_len;         /* encoder positions */
    int max_tgt_len;         /* decoder positions */
    int beam;                /* 1 = greedy */
    int sample_rate;         /* audio: 16000 when 0 */
    int n_mels;              /* audio: 80 when 0 */
    int frames;              /* video: 8 when 0 */
    int num_bins;            /* box: location levels, 1000 when 0 */
} taskplan_opts_t;

/* Fill opts with the defaults of the tiny CPU configuration. */
void taskplan_opts_default(taskplan_opts_t *opts);

typedef struct {
    instr_t *instr;                  /* owned */
    taskplan_template_t *tmpls;      /* one per ||| alternative */
    int ntmpls;
    char route[64];                  /* "image,tokenize" */
    const char *tiers[8];            /* the route split, static strings */
    int ntiers;
    taskplan_column_t *columns;      /* union over the templates */
    int ncolumns;
    taskplan_gen_t gen;
    char metric[64];                 /* "cider", "accuracy/mcc", "-" = none */
    bool has_image_input;            /* some source slot is IMAGE */
    char *group_column;              /* taskplan_bind_group's column (owned), or NULL */
    taskplan_opts_t opts;
} taskplan_t;

/* Compile an instruction text (parsed here). NULL + err on failure (instruction
 * syntax errors keep their "instruction:L:C:" prefix). opts may be NULL (defaults).
 * The caller owns the result. */
taskplan_t *taskplan_compile(const char *instruction, const taskplan_opts_t *opts,
                             char *err, size_t errlen);
/* A route "X,...,tokenize" of two tiers or more becomes "X,..." (tiers and route): the
 * last decoder tier's workers tokenize (plan key fuse_tokenize). Returns 1 when it
 * changed the route. */
int taskplan_fuse_tokenize(taskplan_t *tp);

void taskplan_destroy(taskplan_t **self_p);

/* Replace the default metric (a name of taskplan_metric_names(), or several joined by
 * '/', or "-" for none). Returns 0, or -1 with err. */
int taskplan_set_metric(taskplan_t *tp, const char *metric, char *err, size_t errlen);
/* Comma-separated known metric names (static). */
const char *taskplan_metric_names(void);

/* Names the data column of the repeated target group's unnamed slots (object
 * detection's `( [BOX] [TEXT])*`, which OFASys fills from one cell of objects in its task
 * code): every slot of the group that names no column reads `column`, and the column
 * joins tp->columns. -1 with err when the plan has no repeated target group, or a slot of
 * it names another column. */
int taskplan_bind_group(taskplan_t *tp, const char *column, char *err, size_t errlen);

/* 0 when this system can train and evaluate the task end to end; -1 with a message
 * saying what is missing (e.g. "target IMAGE needs image-code generation (VQGAN), which
 * this system does not have yet"). */
int taskplan_runnable(const taskplan_t *tp, char *err, size_t errlen);

/* The readable form for `launch --dry-run`: route, segments, stage chain per slot,
 * loss mask, generator, metric. Returns a malloc'd string the caller frees. */
char *taskplan_render(const taskplan_t *tp, const char *task_name);

/* Which template (||| alternative) a sample uses: a pure function of (seed, id). */
int taskplan_pick_template(const taskplan_t *tp, uint64_t seed, uint64_t sample_id);

/* The column entry for name, or NULL. */
const taskplan_column_t *taskplan_column(const taskplan_t *tp, const char *name);

#endif
