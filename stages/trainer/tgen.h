/* tgen.h: generation for a few rows of a batch with the trainer's model: the decoder
 * prompt goes into the KV cache, then the task's search (model/gen) runs, and the
 * output ids become text. Shared by the trainer's evaluation and ofa-infer.
 *
 * Output text: greedy/beam/closed-set outputs are detokenised with the BPE
 * (tok_decode_text: bins show as <bin_k>); a box output is its four bins written
 * "<bin_a> <bin_b> <bin_c> <bin_d>", which metric_parse_box reads. */
#ifndef OFA_TGEN_H
#define OFA_TGEN_H

#include "bpe.h"
#include "gen.h"
#include "taskplan.h"
#include "tmodel.h"
#include "trainer.h"

typedef struct {
    taskplan_gen_t gen;
    int beam;                /* beam size for GEN_BEAM */
    int max_gen_len;         /* generated tokens at most (</s> included) */
    int max_tgt_len;         /* decoder positions of the model */
    float len_penalty;
    const gen_trie_t *trie;  /* GEN_CLOSED_SET */
} tgen_cfg_t;

/* Decoder prompt length of row r: the first position whose label carries loss (the
 * prompt is tgt_in[0..p]); 0 when the target has no prompt. */
int tgen_prompt_len(const trainer_batch_t *b, int r);

/* Generate for rows [r0, r0+n) of b, which share prompt length p. hyps gets n malloc'd
 * strings (caller frees each); ids (optional) gets n malloc'd id arrays with lens.
 * Returns 0 or -1 with err. */
int tgen_rows(tmodel_t *model, const tok_bpe_t *bpe, const tgen_cfg_t *cfg,
              const trainer_batch_t *b, int r0, int n, int p, char **hyps,
              char *err, size_t errlen);

/* Bins among ids as "<bin_a> <bin_b> <bin_c> <bin_d>" (the first four bin ids). */
void tgen_bins_text(const int32_t *ids, int n, int bin0, char *out, size_t outlen);

#endif
