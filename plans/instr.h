/* instr.h: the parser of OFASys-style multi-modal instructions.
 *
 * An instruction says which data columns fill which modality slots on the source
 * (encoder) and target (decoder) side of one task:
 *
 *     [IMAGE:img] what does the image describe? -> [TEXT:cap]
 *
 * Grammar (DESIGN.md, "Instructions"):
 *     instruction := template ('|||' template)*
 *     template    := sentence '->' sentence
 *     sentence    := (plain_text | slot | '<BOS>' | '<EOS>' | '(' sentence ')*')*
 *     slot        := '[' TYPE (':' name)? (',' attr ('=' value)?)* ']'
 *
 * instr_parse() checks everything it can without data (modalities, attribute names,
 * types and ranges, registry names, brackets, exactly one '->') and reports the first
 * error as "instruction:LINE:COL: reason", with COL the 1-based column of the offending
 * character in the whole instruction text. The parsed form is a plain tree that the
 * task-plan compiler (taskplan.h) walks; callers treat it as read-only. */
#ifndef OFA_INSTR_H
#define OFA_INSTR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Modalities. The numeric values travel on the wire as "src_mod" (one byte per source
 * position), so they never change: add new ones before MOD__COUNT only. */
typedef enum {
    MOD_TEXT = 0,
    MOD_IMAGE,
    MOD_BOX,
    MOD_AUDIO,
    MOD_VIDEO,
    MOD_PHONE,
    MOD_MOTION,
    MOD_STRUCT,
    MOD_CATEGORY,
    MOD__COUNT
} mod_t;

/* "TEXT", "IMAGE", ... ; "?" for a value out of range. Static strings. */
const char *mod_name(mod_t mod);
/* The modality spelled exactly (upper case) as in an instruction, or -1. */
int mod_from_name(const char *name);
/* TEXT, BOX, PHONE, STRUCT and CATEGORY are token sequences and are grouped with plain
 * text into one <s> ... </s> sequence; IMAGE, AUDIO, VIDEO, MOTION are not. */
bool mod_is_textlike(mod_t mod);

/* Attributes a slot may carry. Each bit says the attribute was written explicitly. */
typedef enum {
    INSTR_ATTR_NO_LOSS        = 1u << 0,
    INSTR_ATTR_CLOSED_SET     = 1u << 1,
    INSTR_ATTR_MASK_RATIO     = 1u << 2,
    INSTR_ATTR_NOISE_RATIO    = 1u << 3,
    INSTR_ATTR_MAX_LENGTH     = 1u << 4,
    INSTR_ATTR_UNCASED        = 1u << 5,
    INSTR_ATTR_NO_PUNCTUATION = 1u << 6,
    INSTR_ATTR_PREPROCESS     = 1u << 7,
    INSTR_ATTR_ADAPTOR        = 1u << 8,
    INSTR_ATTR_ADD_BOS        = 1u << 9,
    INSTR_ATTR_ADD_EOS        = 1u << 10,
    INSTR_ATTR_IMAGE_SIZE     = 1u << 11,   /* IMAGE, VIDEO: input side in pixels */
    INSTR_ATTR_PATCH          = 1u << 12,   /* IMAGE, VIDEO: patch side in pixels */
    INSTR_ATTR_SAMPLE_RATE    = 1u << 13,   /* AUDIO: resample to this rate (Hz) */
    INSTR_ATTR_N_MELS         = 1u << 14,   /* AUDIO: filterbank channels */
    INSTR_ATTR_FRAMES         = 1u << 15,   /* VIDEO: frames sampled per clip */
    INSTR_ATTR_NUM_BINS       = 1u << 16,   /* BOX: location bins (default 1000) */
} instr_attr_t;

/* One slot: `[IMAGE:img,mask_ratio=0.5]`. Strings are owned by the instr_t. */
typedef struct {
    mod_t mod;
    char *column;          /* data column that fills it; NULL for an unnamed target slot */
    uint32_t attrs;        /* instr_attr_t bits written in the instruction */
    bool no_loss, closed_set, uncased, no_punctuation, add_bos, add_eos;
    float mask_ratio;      /* 0..1, 0 when absent */
    float noise_ratio;     /* 0..1, 0 when absent */
    int max_length;        /* tokens (or positions); 0 when absent */
    int image_size, patch, sample_rate, n_mels, frames, num_bins;   /* 0 when absent */
    char *preprocess;      /* registry name (instr_registry_*) or NULL */
    char *adaptor;         /* registry name or NULL */
    int line, col;         /* position of the '[' in the instruction */
} instr_slot_t;

typedef enum {
    INSTR_SEG_TEXT = 0,    /* plain text of the prompt (trimmed, never empty) */
    INSTR_SEG_SLOT,
    INSTR_SEG_BOS,         /* <BOS> of the older syntax */
    INSTR_SEG_EOS,         /* <EOS> */
} instr_seg_kind_t;

typedef struct {
    instr_seg_kind_t kind;
    char *text;            /* INSTR_SEG_TEXT: the text; NULL otherwise */
    instr_slot_t slot;     /* INSTR_SEG_SLOT */
    bool repeated;         /* inside the sentence's `( ... )*` group */
    int line, col;
} instr_seg_t;

/* One side of a template. At most one repeated group; its segments are marked
 * `repeated` and lie contiguously in segs[rep_first .. rep_first+rep_count). */
typedef struct {
    instr_seg_t *segs;
    int nsegs;
    int nslots;
    int rep_first, rep_count;   /* rep_count == 0: no repeated group */
} instr_sentence_t;

typedef struct {
    instr_sentence_t src, tgt;
} instr_template_t;

/* The parsed instruction: one or more alternative templates (separated by |||). */
typedef struct {
    char *text;                 /* the instruction as given */
    instr_template_t *alts;
    int nalts;
} instr_t;

/* Parse an instruction. Returns NULL and fills err ("instruction:L:C: reason") on
 * error. The caller owns the result and frees it with instr_destroy. */
instr_t *instr_parse(const char *text, char *err, size_t errlen);
void instr_destroy(instr_t **self_p);

/* Built-in registry of preprocess= and adaptor= names (never paths). Returns the
 * modality the entry applies to, or -1 if the name is not registered for that use. */
int instr_registry_preprocess(const char *name);
int instr_registry_adaptor(const char *name);
/* Comma-separated lists of the registered names (static strings), for messages/docs. */
const char *instr_registry_preprocess_names(void);
const char *instr_registry_adaptor_names(void);

#endif
