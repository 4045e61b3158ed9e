/* gen.h: sequence generation on top of an incremental decoder: greedy search, beam
 * search (fairseq's rules), exact decoding over a closed answer set, and location-bin
 * decoding for boxes.
 *
 * The searches know nothing about the model. They drive a *step interface* (gen_step_i)
 * that owns one decoder state ("row": a KV cache row in the real model) per live
 * hypothesis. Each step feeds exactly one new token per row and gets that row's logits
 * for the next position, so a prefix is never re-run; between steps the search tells the
 * interface which old row each new row continues (reorder), which is how a KV cache
 * follows beam search. Rows start as one per input (the caller encoded B inputs); the
 * first step feeds <s> (opts.bos) to each row, or opts.first[b] when the caller has fed
 * a decoder prompt (all but its last token) into the rows already.
 *
 * Scores: every search turns logits into log-probabilities with a log-softmax over the
 * full vocabulary first and then forbids tokens by setting them to -inf (no
 * renormalisation over the allowed tokens), as fairseq and OFA's constrained generator do.
 * <pad> is never generated.
 *
 * Lengths: opts.max_len counts generated tokens including the final </s>. Greedy and
 * beam force </s> at the last allowed position, so no hypothesis is longer than max_len.
 * The returned tokens exclude </s> (and <s>).
 *
 * Usage:
 *   gen_step_i st = { .ctx = my_decoder, .vocab = V, .step = my_step, .reorder = my_reorder };
 *   gen_opts_t o = gen_opts_default();  o.beam = 5;
 *   gen_hyp_t out[B];
 *   if (gen_beam(&st, B, &o, out, err, sizeof err) != 0) ... ;
 *   ... out[b].tokens ...;  gen_hyps_free(out, B);
 */
#ifndef OFA_GEN_H
#define OFA_GEN_H

#include <stddef.h>
#include <stdint.h>

/* The incremental decoder the searches drive. Both callbacks return 0, or -1 with err
 * filled (the search then stops and returns -1 with that reason). */
typedef struct {
    void *ctx;
    int vocab;   /* V: length of each logits row */
    /* Feed one token per row: tokens (n); write logits (n, V) for the next position of
     * each row. n equals the current number of rows. */
    int (*step)(void *ctx, int n, const int32_t *tokens, float *logits, char *err, size_t errlen);
    /* Rebuild the rows: new row i becomes a copy of old row src[i] (n_new rows; src
     * values index the old rows; n_new may be larger or smaller than the old count and
     * an old row may be copied several times). */
    int (*reorder)(void *ctx, int n_new, const int32_t *src, char *err, size_t errlen);
} gen_step_i;

typedef struct {
    int beam;            /* beam size K for gen_beam (>= 1) */
    int max_len;         /* most generated tokens per hypothesis, </s> included (>= 1) */
    int min_len;         /* </s> is forbidden at steps t < min_len (0: no limit) */
    float len_penalty;   /* fairseq's lenpen: final score = sum logprob / len^lenpen */
    int32_t bos, eos;    /* <s> fed first, </s> ends a hypothesis (0 and 2) */
    int32_t n_special;   /* ids [0, n_special) other than eos are never generated
                            (<s> <pad> </s> <unk> <mask>: 5) */
    int32_t bin_first;   /* id of <bin_0> (for gen_box) */
    int n_bins;          /* number of location bins (1000) */
    const int32_t *first;/* (B) tokens fed at the first step instead of <s> (the last
                            token of a decoder prompt the caller fed already), or NULL */
} gen_opts_t;

gen_opts_t gen_opts_default(void);

/* One result. tokens (len) are owned by the hypothesis; free with gen_hyps_free. */
typedef struct {
    int32_t *tokens;   /* (len) generated ids, without <s> and </s> */
    int len;
    float score;       /* greedy: sum logprob; beam: normalised as above; closed set:
                          the chosen answer's score; box: sum logprob of the 4 bins */
    int answer;        /* gen_closed_set: index of the chosen answer; else -1 */
} gen_hyp_t;

void gen_hyps_free(gen_hyp_t *hyps, int n);

/* Greedy: argmax at every step until </s> or max_len. B rows in, B hyps out (the
 * caller's array of B). Rows are never reordered. */
int gen_greedy(const gen_step_i *st, int B, const gen_opts_t *opts, gen_hyp_t *out,
               char *err, size_t errlen);

/* Beam search with fairseq's rules: at step t each of the K live beams of a sentence
 * offers its V continuations scored cum_logprob + logprob; the best 2K candidates are
 * ranked; a candidate ending in </s> among the first K ranks becomes a finished
 * hypothesis with score cum / (t+1)^len_penalty; the first K candidates not ending in
 * </s> stay live. A sentence is done once K hypotheses have finished (fairseq's early
 * stop); at t = max_len-1 only </s> is allowed, so all finish by then. At t = 0 only the
 * first beam of each sentence is expanded (all K are the same prefix). Ties are broken by
 * lower beam index, then lower token id. out[b] = the best finished hypothesis of input b.
 * Rows: the search first expands the B rows to B*K (row b*K+k is beam k of input b). */
int gen_beam(const gen_step_i *st, int B, const gen_opts_t *opts, gen_hyp_t *out,
             char *err, size_t errlen);

/* A closed answer set as a trie of token sequences (each answer tokenised, without
 * <s>/</s>; </s> is the implicit last token of every answer). */
typedef struct gen_trie_t gen_trie_t;

gen_trie_t *gen_trie_new(void);
void gen_trie_destroy(gen_trie_t **self_p);
/* Add answer number `answer` (0-based, caller's numbering). Returns 0; -1 with err when
 * the sequence is empty or identical to an earlier answer's. */
int gen_trie_add(gen_trie_t *self, const int32_t *tokens, int n, int answer,
                 char *err, size_t errlen);
int gen_trie_size(const gen_trie_t *self);   /* number of answers */
int gen_trie_depth(const gen_trie_t *self);  /* longest answer + 1 (the </s>) */
/* Most trie nodes at one depth: gen_closed_set holds at most width x B decoder rows. */
int gen_trie_width(const gen_trie_t *self);

/* Closed-set decoding, exact: every answer of the trie is scored by its full
 * log-likelihood under the model, sum over its tokens and the final </s> of
 * log p(token | prefix), divided by (len+1)^len_penalty (len_penalty 0 = the plain sum,
 * the default OFA uses when it scores all candidates). The best answer wins (ties: lower
 * answer index). Answers that share a prefix share the decoder rows of that prefix: the
 * search walks the trie level by level, one row per trie node, so the cost is one step per
 * trie level with (nodes at that level) x B rows, never a re-run of a prefix.
 * opts.max_len is ignored (the trie fixes the lengths). */
int gen_closed_set(const gen_step_i *st, int B, const gen_trie_t *trie, const gen_opts_t *opts,
                   gen_hyp_t *out, char *err, size_t errlen);

/* Box decoding: exactly 4 tokens, each the most likely location bin (ids bin_first ..
 * bin_first+n_bins-1); no </s> is generated. out[b].tokens are the 4 bin ids x0 y0 x1 y1
 * as generated. Greedy (the bins of one box are close to independent given the image). */
int gen_box(const gen_step_i *st, int B, const gen_opts_t *opts, gen_hyp_t *out,
            char *err, size_t errlen);

/* log-softmax of one row in place: x (V). Exposed for tests and the trainer. */
void gen_log_softmax(float *x, int V);

#endif
