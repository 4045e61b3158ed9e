/* bpe.h: byte-level BPE: the project's text tokenizer and its trainer.
 *
 * Every byte string has an encoding (the 256 byte tokens are always in the vocabulary),
 * and decode(encode(s)) == s for ANY bytes, invalid UTF-8 included. The vocabulary
 * layout is the one of the shared contracts:
 *
 *     0 <s>  1 <pad>  2 </s>  3 <unk>  4 <mask>          TOK_NSPECIAL = 5 ids
 *     5 .. 260                 the byte tokens (byte b is id 5 + b)
 *     261 .. 261+M-1           the M merges, in the order they were learned
 *     261+M .. 261+M+999       the location bins <bin_0> .. <bin_999>
 *
 * Pre-tokenisation (both for training and encoding) is a simple GPT-2-like split on
 * bytes: an optional single space followed by a run of letters (ASCII letters and every
 * byte >= 0x80, so UTF-8 characters stay inside words), or of digits, or of other
 * punctuation bytes; runs of white space stand alone, except that the last space before
 * a word goes with the word. Merges never cross pre-token boundaries.
 *
 * File format (text, so that it diffs and is easy to inspect):
 *     OFABPE 1\n
 *     merges M\n
 *     LEFT RIGHT\n      (M lines; ids of the two tokens merged; merge r makes id 261+r)
 * The loader checks the magic, the version, that every merge refers to ids that exist
 * before it, and that no pair is merged twice.
 *
 * Threads: a tok_bpe_t keeps a cache of encoded pre-tokens, so encode mutates it; use
 * one tok_bpe_t per thread (tok_bpe_clone is cheap enough for that). */
#ifndef OFA_BPE_H
#define OFA_BPE_H

#include <stddef.h>
#include <stdint.h>

enum {
    TOK_BOS = 0,
    TOK_PAD = 1,
    TOK_EOS = 2,
    TOK_UNK = 3,
    TOK_MASK = 4,
    TOK_NSPECIAL = 5,
    TOK_BYTE0 = 5,      /* id of byte 0 */
    TOK_NBYTES = 256,
    TOK_NBINS = 1000,
};

#define TOK_BPE_MAGIC "OFABPE"
#define TOK_BPE_VERSION 1

typedef struct tok_bpe_t tok_bpe_t;

/* From a merges table (n, 2) of (left, right) ids; NULL + err if it is inconsistent.
 * The caller owns the result. */
tok_bpe_t *tok_bpe_new(const int32_t *merges, int n, char *err, size_t errlen);
/* Load / parse the file format above. NULL + err (naming the line) on failure. */
tok_bpe_t *tok_bpe_load(const char *path, char *err, size_t errlen);
tok_bpe_t *tok_bpe_parse(const char *text, size_t len, char *err, size_t errlen);
/* The file text (malloc'd, NUL-terminated, caller frees); *len without the NUL. */
char *tok_bpe_serialize(const tok_bpe_t *self, size_t *len);
/* Write atomically. 0 or -1 + err. */
int tok_bpe_save(const tok_bpe_t *self, const char *path, char *err, size_t errlen);
/* Same merges, fresh cache (for another thread). */
tok_bpe_t *tok_bpe_clone(const tok_bpe_t *self);
void tok_bpe_destroy(tok_bpe_t **self_p);

int tok_bpe_n_merges(const tok_bpe_t *self);
/* Whole vocabulary: 5 + 256 + merges + 1000. */
int tok_bpe_vocab_size(const tok_bpe_t *self);
/* Id of <bin_0>; <bin_k> is tok_bpe_bin0() + k. */
int tok_bpe_bin0(const tok_bpe_t *self);
/* Merges table (n_merges, 2), owned by self. */
const int32_t *tok_bpe_merges(const tok_bpe_t *self);

/* Encode len bytes of text (any bytes; NUL is an ordinary byte). Writes at most cap ids
 * into out and returns the total number of ids of the encoding (which may exceed cap:
 * then call again with a bigger buffer). Never emits special or bin ids. */
size_t tok_bpe_encode(tok_bpe_t *self, const char *text, size_t len, int32_t *out,
                      size_t cap);

/* The bytes a token id stands for: BPE ids give their bytes; <mask> and <unk> give their
 * names, <bin_k> gives "<bin_k>", and <s> </s> <pad> give nothing. *len = 0 for ids out
 * of range. The pointer is owned by self (or static). */
const char *tok_bpe_token_bytes(const tok_bpe_t *self, int32_t id, size_t *len);

/* Decode n ids into out (at most cap bytes; NOT NUL-terminated unless there is room,
 * in which case a NUL follows). Returns the full decoded length. */
size_t tok_bpe_decode(const tok_bpe_t *self, const int32_t *ids, size_t n, char *out,
                      size_t cap);

/* Split text into pre-tokens: calls fn(piece, piece_len, arg) for each, in order. */
void tok_pretokenize(const char *text, size_t len,
                     void (*fn)(const char *piece, size_t n, void *arg), void *arg);

/* ---- trainer ---- */

typedef struct tok_bpe_trainer_t tok_bpe_trainer_t;

tok_bpe_trainer_t *tok_bpe_trainer_new(void);
void tok_bpe_trainer_destroy(tok_bpe_trainer_t **self_p);
/* Adds one text (a caption, a sentence...) to the corpus counts. */
void tok_bpe_trainer_add(tok_bpe_trainer_t *self, const char *text, size_t len);
/* Number of distinct pre-tokens and of pre-token occurrences seen so far. */
size_t tok_bpe_trainer_words(const tok_bpe_trainer_t *self, size_t *occurrences);
/* Learns up to n_merges merges, most frequent pair first (ties: smallest left id, then
 * smallest right id, so the result is a pure function of the corpus counts); stops early
 * when no pair occurs at least min_count times (min_count < 2 counts as 2). Returns a
 * new tokenizer the caller owns. The trainer may be reused after (counts are kept). */
tok_bpe_t *tok_bpe_trainer_learn(tok_bpe_trainer_t *self, int n_merges, int min_count);

#endif
