/* tokenize.h: the last tier: builds the model input of one sample from its task plan.
 *
 * From the plan's segments (plans/taskplan.h) and the sample's values it makes
 *     src_tok i32 (S)  src_mod u8 (S)  tgt_in i32 (T)  tgt_out i32 (T)  and "ref",
 * as the shared contracts say:
 *  - a text segment (prompt text and text-like slots grouped by the plan) becomes
 *    <s> tokens </s> when the plan wraps it; each item (a piece of prompt text, a slot
 *    value) is BPE-encoded on its own with one leading space, as OFA's GPT-2 BPE sees
 *    " what does the image describe?";
 *  - a BOX slot becomes 4 location-bin tokens per box: bin = round(c / size * 999) with
 *    size the source image's width (x) or height (y); boxes are written "x0,y0,x1,y1"
 *    (commas or spaces), several separated by ';'. Without a source image, coordinates
 *    must already be normalised to [0, 1];
 *  - a non-text source segment (IMAGE, AUDIO, VIDEO, MOTION) gives one position per
 *    patch / stacked audio frame / video patch / motion frame (the value's npos, which
 *    the caller computes: tokstage.h): src_tok = 1 (<pad>) and src_mod = its modality.
 *    A template has at most one source slot of each of these modalities;
 *  - the target: tgt_in = <s> t1..tn, tgt_out = t1..tn </s>; labels of tokens that come
 *    from prompt text or no_loss slots are 1 (<pad> = no loss);
 *  - attributes: uncased (ASCII lower case) and no_punctuation (ASCII punctuation
 *    dropped) before BPE; max_length=N keeps a slot's first N tokens; mask_ratio=r
 *    (text infilling as BART/OFA: spans with Poisson(3) lengths, ~r of the slot's tokens
 *    in all, each span replaced by one <mask>); noise_ratio=r replaces ~r of the tokens
 *    by random BPE tokens (on a target slot: in tgt_in only, the labels stay clean).
 *    Masking and noise are a pure function of (seed, sample id, epoch), so each epoch
 *    sees other masks of the same sentence, yet a rerun sees the same ones.
 *
 * TRUNCATION RULE (max_src_len / max_tgt_len): only the tokens of text slot values
 * (TEXT, CATEGORY, STRUCT; after max_length and masking) are ever cut, from the end of
 * the value, always the currently longest value first, until the sequence fits. Prompt
 * text, <s> </s>, location bins and image/audio/video/motion positions are never cut; a
 * sample that still does not fit is rejected with the reason, which counts the positions
 * of each non-text slot. The target budget counts tgt_in's
 * length (tokens + 1). Every cut is counted in tok_result_t.
 *
 * The "ref" string is the target as the model should produce it: the normalised text of
 * the target slots that carry loss, joined by one space (box values as given); prompt
 * text and no_loss slots (glue's and snli_ve's echoed inputs) are excluded.
 * tok_decode_text and tok_decode_boxes invert the target for evaluation.
 *
 * Usage: one tok_ctx_t per task and worker; tok_build reuses the context's buffers, and
 * the result stays valid until the next tok_build on the same context. */
#ifndef OFA_TOKENIZE_H
#define OFA_TOKENIZE_H

#include "bpe.h"
#include "taskplan.h"

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef struct {
    int max_src_len;     /* positions; 0 = the plan's opts.max_src_len */
    int max_tgt_len;     /* positions; 0 = the plan's opts.max_tgt_len */
    uint64_t seed;       /* template choice, masking and noise */
    bool no_masking;     /* evaluation: ignore mask_ratio / noise_ratio */
} tok_opts_t;

/* One value of the sample, found by column name. */
typedef struct {
    const char *column;
    const char *text;    /* text-like slots: the string (not NUL-terminated), else NULL */
    size_t len;
    int npos;            /* non-text slots: positions it fills (image patches, stacked audio
                            frames, video patches, motion frames); else 0 */
    int width, height;   /* IMAGE: the source image's size in pixels (0 = unknown) */
} tok_value_t;

typedef struct {
    uint64_t id;
    const tok_value_t *values;
    int nvalues;
    int epoch;           /* masking/noise differ per epoch (0 when unknown) */
} tok_sample_t;

typedef struct {
    const int32_t *src_tok;  /* (S) */
    const uint8_t *src_mod;  /* (S) mod_t values */
    int src_len;             /* S */
    const int32_t *tgt_in;   /* (T) */
    const int32_t *tgt_out;  /* (T), 1 = no loss */
    int tgt_len;             /* T */
    const char *ref;         /* NUL-terminated */
    int tmpl;                /* template (||| alternative) used */
    const char *image_column;/* the IMAGE source column, or NULL */
    int image_positions;     /* its positions in src (its npos) */
    const char *audio_column, *video_column, *motion_column;   /* likewise, or NULL */
    int audio_positions, video_positions, motion_positions;
    int src_cut, tgt_cut;    /* tokens removed by the truncation rule */
    int masked;              /* tokens replaced by mask spans or noise (src and tgt_in) */
} tok_result_t;

typedef struct tok_ctx_t tok_ctx_t;

/* tp and bpe are borrowed and must outlive the context; bpe is used (its encode cache
 * mutates), so give each thread its own. NULL + err when the plan has something this
 * tokenizer cannot build (e.g. a target AUDIO or IMAGE slot). The caller owns the result. */
tok_ctx_t *tok_ctx_new(const taskplan_t *tp, tok_bpe_t *bpe, const tok_opts_t *opts,
                       char *err, size_t errlen);
void tok_ctx_destroy(tok_ctx_t **self_p);

/* Builds the model input of one sample. 0, or -1 with a reason naming the column
 * ("column cap: missing from the sample"). *out points into the context. */
int tok_build(tok_ctx_t *self, const tok_sample_t *sample, tok_result_t *out, char *err,
              size_t errlen);

/* Generated target ids -> text: stops at the first </s>, skips <s> and <pad>, renders
 * bins as <bin_k>. Returns the length written (NUL-terminated when it fits in cap). */
size_t tok_decode_text(const tok_bpe_t *bpe, const int32_t *ids, size_t n, char *out,
                       size_t cap);

/* Generated ids -> boxes: every group of 4 consecutive bin tokens (other tokens are
 * skipped, decoding stops at </s>) becomes x0 y0 x1 y1 = bin / 999 * (width or height).
 * boxes is (max_boxes, 4). Returns the number of boxes written. */
int tok_decode_boxes(const tok_bpe_t *bpe, const int32_t *ids, size_t n, double width,
                     double height, double *boxes, int max_boxes);

/* Coordinate -> bin as the contracts say: round(c / size * 999), clamped to 0..999. */
int tok_coord_bin(double c, double size);

/* The same with a BOX slot's num_bins=N (2..1000): the coordinate goes to one of N evenly
 * spaced levels, round(c / size * (N - 1)), written as the location token nearest to
 * level / (N - 1) * 999. N = 1000 is tok_coord_bin; other N are clamped to it. */
int tok_coord_bin_n(double c, double size, int nbins);

#endif
