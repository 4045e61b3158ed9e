/* metrics.c: evaluation metrics over generated text (see metrics.h for the definitions).
 *
 * Everything works on normalised word lists. N-grams are counted in small string-keyed
 * hash maps, one per order, with keys "w1 w2 ..." (words never contain a space after
 * normalisation, so the key is unambiguous). The sizes here are validation sets of a
 * few thousand samples, so clarity wins over cleverness: each metric is a direct
 * transcription of its reference implementation, with the reference's corner cases
 * stated where they are kept. */
#include "metrics.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define NGRAM_MAX 4          /* BLEU-4 and CIDEr-D both use n = 1..4 */
#define CIDER_SIGMA 6.0
#define ROUGE_BETA 1.2

/* ---------------------------------------------------------------- normalisation */

/* Why not the PTB tokenizer coco-caption runs: it needs Java, and on the lowercase,
 * punctuation-free captions every dataset here has, splitting on spaces after folding
 * case and punctuation gives the same words. Both sides of every comparison go through
 * the same function, so the choice cannot favour the model. */
char *metric_normalize(const char *s) {
    if (!s)
        s = "";
    size_t n = strlen(s);
    char *out = util_malloc(n + 1);
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Only ASCII is folded: bytes >= 0x80 are parts of UTF-8 characters and are
         * kept as they are, so non-English words survive intact. */
        if (c < 0x80 && (isspace(c) || ispunct(c) || iscntrl(c))) {
            space = o > 0;
            continue;
        }
        if (space) {
            out[o++] = ' ';
            space = false;
        }
        out[o++] = (char)(c < 0x80 ? tolower(c) : c);
    }
    out[o] = '\0';
    return out;
}

/* VQA answers: the caption normalisation, then articles dropped and number words as
 * digits, as the official VQA evaluation does (it also expands contractions, which a
 * closed answer set made here never contains). */
char *metric_normalize_answer(const char *s) {
    static const char *numbers[] = {"zero", "one", "two", "three", "four", "five",
                                    "six", "seven", "eight", "nine", "ten"};
    char *norm = metric_normalize(s);
    char *out = util_malloc(strlen(norm) + 1);
    size_t o = 0;
    char *save = NULL;
    for (char *w = strtok_r(norm, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (!strcmp(w, "a") || !strcmp(w, "an") || !strcmp(w, "the"))
            continue;
        char digit[4];
        for (int k = 0; k <= 10; k++)
            if (!strcmp(w, numbers[k])) {
                snprintf(digit, sizeof digit, "%d", k);
                w = digit;
                break;
            }
        if (o)
            out[o++] = ' ';
        size_t l = strlen(w);
        memcpy(out + o, w, l);
        o += l;
    }
    out[o] = '\0';
    free(norm);
    return out;
}

/* A normalised sentence split into words; w[i] point into buf. */
typedef struct {
    char *buf;
    char **w;   /* (n) */
    int n;
} s_toks_t;

/* Normalise s and split it in place; at most (len + 1) / 2 words fit in len bytes,
 * which bounds the word array without a second pass. */
static void s_toks_init(s_toks_t *t, const char *s) {
    t->buf = metric_normalize(s);
    t->n = 0;
    size_t len = strlen(t->buf);
    t->w = util_malloc((len / 2 + 2) * sizeof *t->w);
    char *save = NULL;
    for (char *w = strtok_r(t->buf, " ", &save); w; w = strtok_r(NULL, " ", &save))
        t->w[t->n++] = w;
}

static void s_toks_free(s_toks_t *t) {
    free(t->buf);
    free(t->w);
    t->buf = NULL;
    t->w = NULL;
    t->n = 0;
}

/* ---------------------------------------------------------------- string -> double map */

/* Open addressing, linear probing, power-of-two capacity, at most half full. Keys are
 * owned copies. Iteration order depends only on the insertion sequence, so sums over
 * a map are reproducible run to run. */
typedef struct {
    char **keys;     /* (cap) NULL = empty slot */
    double *vals;    /* (cap) */
    size_t cap, len;
} s_map_t;

static uint64_t s_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;            /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void s_map_init(s_map_t *m) {
    m->cap = 16;
    m->len = 0;
    m->keys = util_calloc(m->cap, sizeof *m->keys);
    m->vals = util_calloc(m->cap, sizeof *m->vals);
}

static void s_map_free(s_map_t *m) {
    if (!m->keys)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t s_map_find(const s_map_t *m, const char *key) {
    size_t i = s_hash(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

/* The value of key, or 0 when absent. */
static double s_map_get(const s_map_t *m, const char *key) {
    size_t i = s_map_find(m, key);
    return m->keys[i] ? m->vals[i] : 0.0;
}

/* A pointer to key's value, inserting it with value 0 when absent. */
static double *s_map_ref(s_map_t *m, const char *key) {
    if (2 * (m->len + 1) > m->cap) {
        s_map_t big = {util_calloc(m->cap * 2, sizeof(char *)),
                       util_calloc(m->cap * 2, sizeof(double)), m->cap * 2, 0};
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = s_map_find(&big, m->keys[i]);
                big.keys[j] = m->keys[i];
                big.vals[j] = m->vals[i];
                big.len++;
            }
        free(m->keys);
        free(m->vals);
        *m = big;
    }
    size_t i = s_map_find(m, key);
    if (!m->keys[i]) {
        m->keys[i] = util_strdup(key);
        m->vals[i] = 0.0;
        m->len++;
    }
    return &m->vals[i];
}

/* Counts of every n-gram of t, one map per order: cnt[k] holds the (k+1)-grams. */
typedef struct {
    s_map_t cnt[NGRAM_MAX];
    int len;   /* words */
} s_ngrams_t;

/* One scratch key buffer as long as the whole sentence serves every n-gram: an n-gram
 * is never longer than the sentence it comes from. */
static void s_ngrams_init(s_ngrams_t *g, const s_toks_t *t) {
    g->len = t->n;
    size_t total = 0;
    for (int i = 0; i < t->n; i++)
        total += strlen(t->w[i]) + 1;
    char *key = util_malloc(total + 1);
    for (int k = 0; k < NGRAM_MAX; k++) {
        s_map_init(&g->cnt[k]);
        for (int i = 0; i + k < t->n; i++) {
            size_t o = 0;
            for (int j = i; j <= i + k; j++) {
                size_t l = strlen(t->w[j]);
                if (j > i)
                    key[o++] = ' ';
                memcpy(key + o, t->w[j], l);
                o += l;
            }
            key[o] = '\0';
            *s_map_ref(&g->cnt[k], key) += 1.0;
        }
    }
    free(key);
}

static void s_ngrams_free(s_ngrams_t *g) {
    for (int k = 0; k < NGRAM_MAX; k++)
        s_map_free(&g->cnt[k]);
}

static s_ngrams_t s_ngrams_of(const char *s) {
    s_toks_t t;
    s_toks_init(&t, s);
    s_ngrams_t g;
    s_ngrams_init(&g, &t);
    s_toks_free(&t);
    return g;
}

/* A missing output (the generator produced nothing, or the caller passed NULL) is
 * scored as the empty string: it is a wrong answer, not an error of the evaluation. */
static const char *s_hyp(const char *const *hyps, int i) {
    return hyps && hyps[i] ? hyps[i] : "";
}

/* ---------------------------------------------------------------- BLEU-4 */

/* Corpus BLEU sums the clipped matches and the candidate n-grams over all samples before
 * dividing, so a short corpus of perfect sentences and one bad one is not averaged away
 * as a mean of sentence scores would be; the brevity penalty is also taken on the summed
 * lengths. */
double metric_bleu4(const char *const *hyps, const metric_refs_t *refs, int n) {
    double correct[NGRAM_MAX] = {0}, guess[NGRAM_MAX] = {0};
    double hyp_len = 0, ref_len = 0;
    for (int i = 0; i < n; i++) {
        s_ngrams_t h = s_ngrams_of(s_hyp(hyps, i));
        /* Clipping: an n-gram earns at most as many matches as the one reference that
         * holds it most often. */
        s_map_t maxc[NGRAM_MAX];
        for (int k = 0; k < NGRAM_MAX; k++)
            s_map_init(&maxc[k]);
        int closest = -1;
        for (int r = 0; r < refs[i].nrefs; r++) {
            s_ngrams_t g = s_ngrams_of(refs[i].refs[r]);
            for (int k = 0; k < NGRAM_MAX; k++)
                for (size_t s = 0; s < g.cnt[k].cap; s++)
                    if (g.cnt[k].keys[s]) {
                        double *v = s_map_ref(&maxc[k], g.cnt[k].keys[s]);
                        if (g.cnt[k].vals[s] > *v)
                            *v = g.cnt[k].vals[s];
                    }
            /* The closest reference length; on a tie the shorter (nltk, coco). */
            int d = abs(g.len - h.len), dc = abs(closest - h.len);
            if (closest < 0 || d < dc || (d == dc && g.len < closest))
                closest = g.len;
            s_ngrams_free(&g);
        }
        for (int k = 0; k < NGRAM_MAX; k++) {
            for (size_t s = 0; s < h.cnt[k].cap; s++)
                if (h.cnt[k].keys[s]) {
                    double m = s_map_get(&maxc[k], h.cnt[k].keys[s]);
                    correct[k] += fmin(m, h.cnt[k].vals[s]);
                }
            guess[k] += h.len - k > 0 ? h.len - k : 0;
            s_map_free(&maxc[k]);
        }
        hyp_len += h.len;
        ref_len += closest;
        s_ngrams_free(&h);
    }
    /* nltk without smoothing: any order without a match (or without any n-gram at all)
     * makes the geometric mean 0. */
    double logsum = 0;
    for (int k = 0; k < NGRAM_MAX; k++) {
        if (correct[k] <= 0 || guess[k] <= 0)
            return 0.0;
        logsum += log(correct[k] / guess[k]);
    }
    double bp = hyp_len > ref_len ? 1.0 : exp(1.0 - ref_len / hyp_len);
    return bp * exp(logsum / NGRAM_MAX);
}

/* ---------------------------------------------------------------- CIDEr-D */

/* A sentence as CIDEr-D sees it: tf-idf weights per order, their norms, and its
 * "length", which coco-caption counts as the number of bigrams (it adds term
 * frequencies only for n == 1 in 0-based order): kept, so values match. */
typedef struct {
    s_ngrams_t g;            /* g.cnt[k] values replaced by tf-idf weights */
    double norm[NGRAM_MAX];
    double length;
} s_cvec_t;

static void s_cvec_init(s_cvec_t *v, const char *s, const s_map_t *df, double log_n) {
    v->g = s_ngrams_of(s);
    v->length = 0;
    for (int k = 0; k < NGRAM_MAX; k++) {
        double sq = 0;
        s_map_t *m = &v->g.cnt[k];
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                if (k == 1)
                    v->length += m->vals[i];
                double d = s_map_get(&df[k], m->keys[i]);
                m->vals[i] *= log_n - log(d > 1.0 ? d : 1.0);
                sq += m->vals[i] * m->vals[i];
            }
        v->norm[k] = sqrt(sq);
    }
}

static double s_cider_sim(const s_cvec_t *h, const s_cvec_t *r) {
    double delta = h->length - r->length;
    double penalty = exp(-(delta * delta) / (2 * CIDER_SIGMA * CIDER_SIGMA));
    double total = 0;
    for (int k = 0; k < NGRAM_MAX; k++) {
        double val = 0;
        const s_map_t *m = &h->g.cnt[k];
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                double wr = s_map_get(&r->g.cnt[k], m->keys[i]);
                val += fmin(m->vals[i], wr) * wr;   /* CIDEr-D's clipping */
            }
        /* The CIDEr-D scorer skips the division when a norm is 0 (a sentence shorter
         * than k+1 words): val is 0 then anyway. */
        if (h->norm[k] != 0 && r->norm[k] != 0)
            val /= h->norm[k] * r->norm[k];
        total += val * penalty;
    }
    return total;
}

/* CIDEr-D rewards n-grams that the references of this image share and the other
 * images' references do not (the idf part), compares each reference separately (the
 * consensus part), caps a hypothesis weight at the reference's (the "-D": repeating a
 * rare word does not pay) and penalises length differences. Reference vectors are
 * rebuilt for each sample: memory stays proportional to one sample, and the cost (a few
 * hundred milliseconds for thousands of samples) is far below one evaluation step. */
double metric_cider_d(const char *const *hyps, const metric_refs_t *refs, int n) {
    /* Document frequency: in how many samples' reference sets each n-gram occurs. */
    s_map_t df[NGRAM_MAX];
    for (int k = 0; k < NGRAM_MAX; k++)
        s_map_init(&df[k]);
    for (int i = 0; i < n; i++) {
        s_map_t seen[NGRAM_MAX];
        for (int k = 0; k < NGRAM_MAX; k++)
            s_map_init(&seen[k]);
        for (int r = 0; r < refs[i].nrefs; r++) {
            s_ngrams_t g = s_ngrams_of(refs[i].refs[r]);
            for (int k = 0; k < NGRAM_MAX; k++)
                for (size_t s = 0; s < g.cnt[k].cap; s++)
                    if (g.cnt[k].keys[s])
                        *s_map_ref(&seen[k], g.cnt[k].keys[s]) = 1.0;
            s_ngrams_free(&g);
        }
        for (int k = 0; k < NGRAM_MAX; k++) {
            for (size_t s = 0; s < seen[k].cap; s++)
                if (seen[k].keys[s])
                    *s_map_ref(&df[k], seen[k].keys[s]) += 1.0;
            s_map_free(&seen[k]);
        }
    }
    double log_n = log((double)n);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s_cvec_t h;
        s_cvec_init(&h, s_hyp(hyps, i), df, log_n);
        double score = 0;
        for (int r = 0; r < refs[i].nrefs; r++) {
            s_cvec_t rv;
            s_cvec_init(&rv, refs[i].refs[r], df, log_n);
            score += s_cider_sim(&h, &rv);
            s_ngrams_free(&rv.g);
        }
        /* Mean over the orders, mean over the references, times 10. */
        sum += score / NGRAM_MAX / refs[i].nrefs * 10.0;
        s_ngrams_free(&h.g);
    }
    for (int k = 0; k < NGRAM_MAX; k++)
        s_map_free(&df[k]);
    return sum / n;
}

/* ---------------------------------------------------------------- ROUGE-L */

/* Length of the longest common subsequence of two word lists, with two rows of the
 * dynamic-programming table (O(|b|) memory: captions are short, transcripts are not). */
static int s_lcs(const s_toks_t *a, const s_toks_t *b) {
    int *prev = util_calloc(b->n + 1, sizeof(int)), *cur = util_calloc(b->n + 1, sizeof(int));
    for (int i = 1; i <= a->n; i++) {
        for (int j = 1; j <= b->n; j++)
            cur[j] = !strcmp(a->w[i - 1], b->w[j - 1]) ? prev[j - 1] + 1
                     : prev[j] > cur[j - 1]          ? prev[j]
                                                     : cur[j - 1];
        int *t = prev;
        prev = cur;
        cur = t;
    }
    int r = prev[b->n];
    free(prev);
    free(cur);
    return r;
}

/* Precision and recall are maximised separately over the references, as coco-caption
 * does, rather than taking the F-measure of the best single reference: the two can come
 * from different references. beta > 1 weighs recall more. */
double metric_rouge_l(const char *const *hyps, const metric_refs_t *refs, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s_toks_t h;
        s_toks_init(&h, s_hyp(hyps, i));
        double pmax = 0, rmax = 0;
        for (int r = 0; r < refs[i].nrefs; r++) {
            s_toks_t t;
            s_toks_init(&t, refs[i].refs[r]);
            int lcs = s_lcs(&t, &h);
            /* An empty sentence has precision/recall 0 (coco-caption would divide by
             * the length of [""], i.e. 1, with the same result). */
            double p = h.n ? (double)lcs / h.n : 0, rc = t.n ? (double)lcs / t.n : 0;
            pmax = fmax(pmax, p);
            rmax = fmax(rmax, rc);
            s_toks_free(&t);
        }
        if (pmax != 0 && rmax != 0) {
            double b2 = ROUGE_BETA * ROUGE_BETA;
            sum += (1 + b2) * pmax * rmax / (rmax + b2 * pmax);
        }
        s_toks_free(&h);
    }
    return sum / n;
}

/* ---------------------------------------------------------------- answers */

/* exact_match's only normalisation: surrounding white space is an artefact of how an
 * output was detokenised or a TSV cell was written, not part of the answer. */
static char *s_trim_dup(const char *s) {
    if (!s)
        s = "";
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1]))
        l--;
    char *o = util_malloc(l + 1);
    memcpy(o, s, l);
    o[l] = '\0';
    return o;
}

typedef char *(*s_norm_fn)(const char *);

/* Fraction of samples whose output, normalised by norm, equals one normalised
 * reference. */
static double s_match(const char *const *hyps, const metric_refs_t *refs, int n,
                      s_norm_fn norm) {
    int hits = 0;
    for (int i = 0; i < n; i++) {
        char *h = norm(s_hyp(hyps, i));
        for (int r = 0; r < refs[i].nrefs; r++) {
            char *t = norm(refs[i].refs[r]);
            bool eq = !strcmp(h, t);
            free(t);
            if (eq) {
                hits++;
                break;
            }
        }
        free(h);
    }
    return (double)hits / n;
}

double metric_accuracy(const char *const *hyps, const metric_refs_t *refs, int n) {
    return s_match(hyps, refs, n, metric_normalize);
}

double metric_exact_match(const char *const *hyps, const metric_refs_t *refs, int n) {
    return s_match(hyps, refs, n, s_trim_dup);
}

/* ---------------------------------------------------------------- sudoku */

/* The numbers of s in order (maximal runs of ASCII digits; everything else separates
 * them), at most max; returns how many there are (may exceed max). */
static int s_numbers(const char *s, int *out, int max) {
    int n = 0;
    for (const char *p = s ? s : ""; *p;) {
        if (*p < '0' || *p > '9') {
            p++;
            continue;
        }
        long v = 0;
        while (*p >= '0' && *p <= '9') {
            if (v < 1000000)
                v = v * 10 + (*p - '0');
            p++;
        }
        if (n < max)
            out[n] = (int)v;
        n++;
    }
    return n;
}

int metric_sudoku_check(const char *grid, const char *givens, char *why, size_t whylen) {
    enum { MAXC = METRIC_SUDOKU_MAX * METRIC_SUDOKU_MAX };
    int g[MAXC], c[MAXC];
    int n2 = s_numbers(grid, g, MAXC), ng = s_numbers(givens, c, MAXC);
    if (ng > MAXC)
        return util_err(why, whylen, "the givens have %d cells, more than %d", ng, MAXC), -1;
    int side = 0, box = 0;
    for (int k = 2; k * k <= METRIC_SUDOKU_MAX; k++)
        if (k * k * k * k == ng)
            side = k * k, box = k;
    if (!side)
        return util_err(why, whylen, "the givens have %d cells, not a square of a square "
                        "(16 for 4x4, 81 for 9x9)", ng), -1;
    if (n2 != ng)
        return util_err(why, whylen, "%d cells, the puzzle has %d", n2, ng), 0;
    for (int i = 0; i < ng; i++) {
        if (g[i] < 1 || g[i] > side)
            return util_err(why, whylen, "cell %d is %d, not 1..%d", i + 1, g[i], side), 0;
        if (c[i] != 0 && c[i] != g[i])
            return util_err(why, whylen, "cell %d is %d, the given is %d", i + 1, g[i], c[i]), 0;
    }
    /* Each row, column and box holds every number once: with side cells of 1..side, no
     * repeat is the same as a permutation. */
    for (int u = 0; u < side; u++) {
        unsigned row = 0, col = 0, blk = 0;
        for (int k = 0; k < side; k++) {
            int r = (u / box) * box + k / box, q = (u % box) * box + k % box;
            unsigned br = 1u << g[u * side + k], bc = 1u << g[k * side + u],
                     bb = 1u << g[r * side + q];
            if (row & br)
                return util_err(why, whylen, "row %d repeats %d", u + 1, g[u * side + k]), 0;
            if (col & bc)
                return util_err(why, whylen, "column %d repeats %d", u + 1, g[k * side + u]), 0;
            if (blk & bb)
                return util_err(why, whylen, "box %d repeats %d", u + 1, g[r * side + q]), 0;
            row |= br, col |= bc, blk |= bb;
        }
    }
    return 1;
}

/* A sample is solved when its output passes metric_sudoku_check against the puzzle
 * (the second reference), or, without one, against the first reference read as the
 * givens: then every cell must be the reference solution's. */
double metric_solved_acc(const char *const *hyps, const metric_refs_t *refs, int n) {
    int solved = 0;
    for (int i = 0; i < n; i++) {
        const char *givens = refs[i].nrefs > 1 ? refs[i].refs[1] : refs[i].refs[0];
        solved += metric_sudoku_check(s_hyp(hyps, i), givens, NULL, 0) == 1;
    }
    return (double)solved / n;
}

/* The official VQA metric also averages min(#matches/3, 1) over the ten 9-of-10 subsets
 * of the human answers; with three or more agreeing answers that changes nothing, and
 * our datasets have one reference, so the simple form is kept. */
double metric_vqa_score(const char *const *hyps, const metric_refs_t *refs, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        char *h = metric_normalize_answer(s_hyp(hyps, i));
        int same = 0;
        for (int r = 0; r < refs[i].nrefs; r++) {
            char *t = metric_normalize_answer(refs[i].refs[r]);
            same += !strcmp(h, t);
            free(t);
        }
        int div = refs[i].nrefs < 3 ? refs[i].nrefs : 3;
        sum += fmin((double)same / div, 1.0);
        free(h);
    }
    return sum / n;
}

/* SQuAD's token F1: the multiset overlap of the answer-normalised words, best over the
 * references. Both empty counts as a match (SQuAD's rule for unanswerable questions). */
double metric_f1(const char *const *hyps, const metric_refs_t *refs, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        char *hn = metric_normalize_answer(s_hyp(hyps, i));
        s_toks_t h;
        s_toks_init(&h, hn);
        free(hn);
        double best = 0;
        for (int r = 0; r < refs[i].nrefs; r++) {
            char *tn = metric_normalize_answer(refs[i].refs[r]);
            s_toks_t t;
            s_toks_init(&t, tn);
            free(tn);
            double f1;
            if (h.n == 0 || t.n == 0) {
                f1 = h.n == t.n;
            } else {
                /* Count the reference's words, then take each hypothesis word once. */
                s_map_t left;
                s_map_init(&left);
                for (int k = 0; k < t.n; k++)
                    *s_map_ref(&left, t.w[k]) += 1.0;
                int common = 0;
                for (int k = 0; k < h.n; k++) {
                    double *c = s_map_ref(&left, h.w[k]);
                    if (*c > 0) {
                        *c -= 1.0;
                        common++;
                    }
                }
                s_map_free(&left);
                double p = (double)common / h.n, rc = (double)common / t.n;
                f1 = common ? 2 * p * rc / (p + rc) : 0;
            }
            best = fmax(best, f1);
            s_toks_free(&t);
        }
        sum += best;
        s_toks_free(&h);
    }
    return sum / n;
}

/* Matthews correlation over labels (normalised text; the first reference is the true
 * label). The multi-class form (Gorodkin's R_K, as scikit-learn computes it):
 *   (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))
 * with s samples, c correct, t_k / p_k how often label k is true / predicted; 0 when
 * the denominator is 0 (a constant prediction or a single true label). */
double metric_mcc(const char *const *hyps, const metric_refs_t *refs, int n) {
    s_map_t t, p;
    s_map_init(&t);
    s_map_init(&p);
    double c = 0;
    for (int i = 0; i < n; i++) {
        char *h = metric_normalize(s_hyp(hyps, i)), *r = metric_normalize(refs[i].refs[0]);
        *s_map_ref(&t, r) += 1.0;
        *s_map_ref(&p, h) += 1.0;
        c += !strcmp(h, r);
        free(h);
        free(r);
    }
    double s = n, pt = 0, pp = 0, tt = 0;
    for (size_t k = 0; k < p.cap; k++)
        if (p.keys[k]) {
            pp += p.vals[k] * p.vals[k];
            pt += p.vals[k] * s_map_get(&t, p.keys[k]);
        }
    for (size_t k = 0; k < t.cap; k++)
        if (t.keys[k])
            tt += t.vals[k] * t.vals[k];
    s_map_free(&t);
    s_map_free(&p);
    double den = sqrt((s * s - pp) * (s * s - tt));
    return den > 0 ? (c * s - pt) / den : 0.0;
}

/* ---------------------------------------------------------------- boxes */

/* Boxes come as text because the evaluator only has text: the model's generated
 * location tokens, or a TSV cell. Both notations are accepted so either side can be
 * compared with the other without the image size, as long as both use the same units. */
int metric_parse_box(const char *s, double b[4], char *err, size_t errlen) {
    if (!s)
        return util_err(err, errlen, "no box (NULL)");
    const char *p = s;
    int k = 0;
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        if (!*p)
            break;
        if (k == 4)
            return util_err(err, errlen, "box '%.60s' has more than 4 numbers", s);
        char *end = NULL;
        errno = 0;
        if (!strncmp(p, "<bin_", 5)) {
            long v = strtol(p + 5, &end, 10);
            if (end == p + 5 || *end != '>' || v < 0 || errno)
                return util_err(err, errlen, "box '%.60s': bad location token at column %d",
                                s, (int)(p - s) + 1);
            b[k++] = (double)v;
            p = end + 1;
        } else {
            double v = strtod(p, &end);
            if (end == p || errno || !isfinite(v) ||
                (*end && !isspace((unsigned char)*end) && *end != ','))
                return util_err(err, errlen, "box '%.60s': not a number at column %d",
                                s, (int)(p - s) + 1);
            b[k++] = v;
            p = end;
        }
    }
    if (k != 4)
        return util_err(err, errlen, "box '%.60s' has %d numbers, expected 4", s, k);
    if (b[2] < b[0] || b[3] < b[1])
        return util_err(err, errlen, "box '%.60s' has x1 < x0 or y1 < y0", s);
    return 0;
}

double metric_iou(const double a[4], const double b[4]) {
    double iw = fmin(a[2], b[2]) - fmax(a[0], b[0]);
    double ih = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    double inter = iw > 0 && ih > 0 ? iw * ih : 0;
    double uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    return uni > 0 ? inter / uni : 0;
}

int metric_iou_acc(const char *const *hyps, const metric_refs_t *refs, int n,
                   double *value, char *err, size_t errlen) {
    int hits = 0;
    for (int i = 0; i < n; i++) {
        double h[4], r[4];
        char why[160];
        /* A model output that is not a box is a wrong answer, not an error. */
        bool hok = metric_parse_box(s_hyp(hyps, i), h, NULL, 0) == 0;
        bool hit = false;
        for (int j = 0; j < refs[i].nrefs; j++) {
            if (metric_parse_box(refs[i].refs[j], r, why, sizeof why) != 0)
                return util_err(err, errlen, "sample %d reference %d: %s", i, j, why);
            hit |= hok && metric_iou(h, r) >= 0.5;
        }
        hits += hit;
    }
    *value = (double)hits / n;
    return 0;
}

/* ---------------------------------------------------------------- detection: mAP */

void metric_dets_free(metric_det_t *dets, int n) {
    for (int i = 0; dets && i < n; i++)
        free(dets[i].label);
    free(dets);
}

/* The generated text of a detection target reads "<bin_a><bin_b><bin_c><bin_d> name"
 * per object (the location tokens render without spaces, BPE words with their leading
 * space): a scan that takes 4 location tokens, then every word up to the next location
 * token, reads both that and the tokenizer's spaced reference. */
int metric_parse_detections(const char *s, bool strict, metric_det_t **out, int *nout,
                            char *err, size_t errlen) {
    *out = NULL;
    *nout = 0;
    if (!s)
        s = "";
    size_t n = strlen(s);
    char *words = util_malloc(n + 1);   /* the current label's text */
    size_t wn = 0;
    metric_det_t *d = NULL;
    int nd = 0, cap = 0, nb = 0;
    double b[4];
    const char *p = s;
    int rc = 0;
    /* a label ends where the next box begins, and at the end */
#define S_FLUSH()                                                                            \
    do {                                                                                     \
        if (nd > 0 && !d[nd - 1].label) {                                                    \
            words[wn] = 0;                                                                   \
            d[nd - 1].label = metric_normalize(words);                                       \
        }                                                                                    \
        wn = 0;                                                                              \
    } while (0)
    while (*p && rc == 0) {
        if (!strncmp(p, "<bin_", 5)) {
            char *end;
            errno = 0;
            long v = strtol(p + 5, &end, 10);
            if (end == p + 5 || *end != '>' || v < 0 || errno) {
                if (!strict) {   /* a model's broken token is text of the label */
                    words[wn++] = *p++;
                    continue;
                }
                rc = util_err(err, errlen, "'%.60s': bad location token at column %d", s,
                              (int)(p - s) + 1);
                break;
            }
            if (nb == 0) {
                S_FLUSH();
            }
            b[nb++] = (double)v;
            p = end + 1;
            if (nb == 4) {
                if (nd == cap) {
                    cap = cap ? 2 * cap : 8;
                    d = util_realloc(d, (size_t)cap * sizeof *d);
                }
                memcpy(d[nd].box, b, sizeof b);
                d[nd].label = NULL;
                d[nd].valid = b[2] > b[0] && b[3] > b[1];
                nd++;
                nb = 0;
            }
            continue;
        }
        if (nb != 0 && !isspace((unsigned char)*p)) {
            if (!strict) {   /* a model's stray location tokens: dropped */
                nb = 0;
                continue;
            }
            rc = util_err(err, errlen, "'%.60s': a box with %d location tokens at column %d",
                          s, nb, (int)(p - s) + 1);
            break;
        }
        if (nd == 0 && !isspace((unsigned char)*p) && strict) {
            rc = util_err(err, errlen, "'%.60s': text before the first box", s);
            break;
        }
        words[wn++] = *p++;
    }
    if (rc == 0 && nb != 0 && strict)
        rc = util_err(err, errlen, "'%.60s': the last box has %d location tokens", s, nb);
    if (rc == 0)
        S_FLUSH();
#undef S_FLUSH
    for (int i = 0; rc == 0 && strict && i < nd; i++) {
        if (!d[i].valid)
            rc = util_err(err, errlen, "'%.60s': object %d has x1 <= x0 or y1 <= y0", s, i + 1);
        else if (!d[i].label[0])
            rc = util_err(err, errlen, "'%.60s': object %d has no label", s, i + 1);
    }
    free(words);
    if (rc != 0) {
        metric_dets_free(d, nd);
        return -1;
    }
    *out = d;
    *nout = nd;
    return 0;
}

/* One detection of one class, for the ranking. */
typedef struct {
    int img, rank;           /* sample, and position among that sample's detections */
    const double *box;
    bool valid;
} s_det_t;

/* Earlier in an output ranks higher; among equals, the earlier sample: a generated
 * sequence carries no confidence per object, and the order the model chose to write its
 * objects in is the only ranking it gives. */
static int s_det_cmp(const void *a, const void *b) {
    const s_det_t *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return (x->img > y->img) - (x->img < y->img);
}

static int s_str_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* PASCAL VOC's devkit (2010 on) and its voc_eval.py: detections of a class in rank
 * order; each takes the unmatched-or-not ground truth of its image with the highest IoU;
 * IoU >= 0.5 with one not yet taken is a true positive (and takes it), anything else
 * (too far, or that object already found: a duplicate) a false positive; AP is the area
 * under the precision envelope (precision made non-increasing from the right) at every
 * recall step: all-point interpolation, not the 11-point one of VOC2007. */
static double s_class_ap(const char *cls, metric_det_t *const *hd, const int *hn,
                         metric_det_t *const *rd, const int *rn, int n) {
    int npos = 0, ndet = 0;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < rn[i]; k++)
            npos += !strcmp(rd[i][k].label, cls);
        for (int k = 0; k < hn[i]; k++)
            ndet += !strcmp(hd[i][k].label, cls);
    }
    if (npos == 0 || ndet == 0)
        return 0;
    s_det_t *dets = util_malloc((size_t)ndet * sizeof *dets);
    int m = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < hn[i]; k++)
            if (!strcmp(hd[i][k].label, cls))
                dets[m++] = (s_det_t){i, k, hd[i][k].box, hd[i][k].valid};
    qsort(dets, (size_t)ndet, sizeof *dets, s_det_cmp);
    /* taken[i][k]: ground truth k of sample i already matched */
    int *off = util_malloc((size_t)(n + 1) * sizeof(int));
    off[0] = 0;
    for (int i = 0; i < n; i++)
        off[i + 1] = off[i] + rn[i];
    bool *taken = util_calloc((size_t)off[n] + 1, sizeof(bool));
    double *prec = util_malloc((size_t)(ndet + 2) * sizeof(double));
    double *rec = util_malloc((size_t)(ndet + 2) * sizeof(double));
    int tp = 0, fp = 0;
    for (int j = 0; j < ndet; j++) {
        const s_det_t *dj = &dets[j];
        double best = -1;
        int bk = -1;
        for (int k = 0; dj->valid && k < rn[dj->img]; k++) {
            const metric_det_t *g = &rd[dj->img][k];
            if (strcmp(g->label, cls))
                continue;
            double iou = metric_iou(dj->box, g->box);
            if (iou > best)
                best = iou, bk = k;
        }
        if (bk >= 0 && best >= 0.5 && !taken[off[dj->img] + bk]) {
            taken[off[dj->img] + bk] = true;
            tp++;
        } else {
            fp++;
        }
        prec[j + 1] = (double)tp / (tp + fp);
        rec[j + 1] = (double)tp / npos;
    }
    /* sentinels as voc_ap: recall 0 and 1, precision 0 at both ends */
    prec[0] = 0, rec[0] = 0;
    prec[ndet + 1] = 0, rec[ndet + 1] = 1;
    for (int j = ndet; j >= 0; j--)
        if (prec[j + 1] > prec[j])
            prec[j] = prec[j + 1];
    double ap = 0;
    for (int j = 0; j <= ndet; j++)
        if (rec[j + 1] != rec[j])
            ap += (rec[j + 1] - rec[j]) * prec[j + 1];
    free(dets);
    free(off);
    free(taken);
    free(prec);
    free(rec);
    return ap;
}

int metric_map(const char *const *hyps, const metric_refs_t *refs, int n, double *value,
               char *err, size_t errlen) {
    metric_det_t **hd = util_calloc((size_t)n, sizeof *hd), **rd = util_calloc((size_t)n, sizeof *rd);
    int *hn = util_calloc((size_t)n, sizeof(int)), *rn = util_calloc((size_t)n, sizeof(int));
    int rc = 0, ncls = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char why[200];
        if (metric_parse_detections(refs[i].refs[0], true, &rd[i], &rn[i], why, sizeof why) != 0)
            rc = util_err(err, errlen, "map: sample %d reference: %s", i, why);
        /* lenient on the model's side: cannot fail */
        else
            metric_parse_detections(s_hyp(hyps, i), false, &hd[i], &hn[i], NULL, 0);
        ncls += rn[i];
    }
    if (rc == 0) {
        /* the classes: every label of the references (COCO and VOC average over the
         * classes that have ground truth; a label only the model uses has no AP) */
        const char **cls = util_malloc((size_t)(ncls + 1) * sizeof *cls);
        int m = 0;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < rn[i]; k++)
                cls[m++] = rd[i][k].label;
        qsort(cls, (size_t)m, sizeof *cls, s_str_cmp);
        double sum = 0;
        int nc = 0;
        for (int k = 0; k < m; k++) {
            if (k && !strcmp(cls[k], cls[k - 1]))
                continue;
            sum += s_class_ap(cls[k], hd, hn, rd, rn, n);
            nc++;
        }
        if (nc == 0)
            rc = util_err(err, errlen, "map: the references hold no object");
        else
            *value = sum / nc;
        free(cls);
    }
    for (int i = 0; i < n; i++) {
        metric_dets_free(hd[i], hn[i]);
        metric_dets_free(rd[i], rn[i]);
    }
    free(hd);
    free(rd);
    free(hn);
    free(rn);
    return rc;
}

/* ---------------------------------------------------------------- WER, CER */

/* Levenshtein distance between two sequences of n-byte-free items, compared by eq. */
static int s_edit(int na, int nb, bool (*eq)(const void *, int, const void *, int),
                  const void *a, const void *b) {
    int *prev = util_malloc((nb + 1) * sizeof(int)), *cur = util_malloc((nb + 1) * sizeof(int));
    for (int j = 0; j <= nb; j++)
        prev[j] = j;
    for (int i = 1; i <= na; i++) {
        cur[0] = i;
        for (int j = 1; j <= nb; j++) {
            int sub = prev[j - 1] + !eq(a, i - 1, b, j - 1);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        int *t = prev;
        prev = cur;
        cur = t;
    }
    int d = prev[nb];
    free(prev);
    free(cur);
    return d;
}

static bool s_word_eq(const void *a, int i, const void *b, int j) {
    return !strcmp(((char *const *)a)[i], ((char *const *)b)[j]);
}

static bool s_cp_eq(const void *a, int i, const void *b, int j) {
    return ((const uint32_t *)a)[i] == ((const uint32_t *)b)[j];
}

/* The normalised text as Unicode code points (UTF-8 decoded leniently: a byte that
 * does not start a valid sequence counts as one character). */
/* Characters, not bytes: a CER over bytes would count one wrong accented letter as two
 * errors and make non-English transcripts look worse than they are. */
static uint32_t *s_codepoints(const char *s, int *n) {
    char *norm = metric_normalize(s);
    size_t len = strlen(norm);
    uint32_t *cp = util_malloc((len + 1) * sizeof *cp);
    int k = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)norm[i];
        int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        uint32_t v = c;
        size_t j = 1;
        for (; j <= (size_t)extra && i + j < len && ((unsigned char)norm[i + j] & 0xC0) == 0x80; j++)
            v = (v << 8) | (unsigned char)norm[i + j];
        cp[k++] = v;
        i += j;
    }
    free(norm);
    *n = k;
    return cp;
}

/* WER and CER at corpus level: total edits over total reference length, so long
 * utterances weigh more than short ones, as speech toolkits (sclite, jiwer) report it.
 * With several references the closest one counts, for both the edits and the length. */
static int s_error_rate(const char *const *hyps, const metric_refs_t *refs, int n, bool chars,
                        double *value, char *err, size_t errlen) {
    double errors = 0, words = 0;
    for (int i = 0; i < n; i++) {
        int best = -1, best_len = 0;
        if (chars) {
            int nh;
            uint32_t *h = s_codepoints(s_hyp(hyps, i), &nh);
            for (int r = 0; r < refs[i].nrefs; r++) {
                int nr;
                uint32_t *t = s_codepoints(refs[i].refs[r], &nr);
                int d = s_edit(nr, nh, s_cp_eq, t, h);
                if (best < 0 || d < best)
                    best = d, best_len = nr;
                free(t);
            }
            free(h);
        } else {
            s_toks_t h;
            s_toks_init(&h, s_hyp(hyps, i));
            for (int r = 0; r < refs[i].nrefs; r++) {
                s_toks_t t;
                s_toks_init(&t, refs[i].refs[r]);
                int d = s_edit(t.n, h.n, s_word_eq, t.w, h.w);
                if (best < 0 || d < best)
                    best = d, best_len = t.n;
                s_toks_free(&t);
            }
            s_toks_free(&h);
        }
        errors += best;
        words += best_len;
    }
    if (words == 0)
        return util_err(err, errlen, "%s undefined: the references have no %s",
                        chars ? "CER" : "WER", chars ? "characters" : "words");
    *value = errors / words;
    return 0;
}

int metric_wer(const char *const *hyps, const metric_refs_t *refs, int n,
               double *value, char *err, size_t errlen) {
    return s_error_rate(hyps, refs, n, false, value, err, errlen);
}

int metric_cer(const char *const *hyps, const metric_refs_t *refs, int n,
               double *value, char *err, size_t errlen) {
    return s_error_rate(hyps, refs, n, true, value, err, errlen);
}

/* ---------------------------------------------------------------- by name */

typedef enum {
    K_BLEU, K_CIDER, K_ROUGE_L, K_ACCURACY, K_EXACT_MATCH, K_VQA, K_F1, K_MCC, K_IOU, K_WER, K_SOLVED,
    K_CER, K_MAP
} s_kind_t;

static const struct {
    const char *name;
    s_kind_t kind;
    bool higher;
} s_table[] = {
    {"bleu", K_BLEU, true},           {"cider", K_CIDER, true},
    {"rouge_l", K_ROUGE_L, true},     {"accuracy", K_ACCURACY, true},
    {"exact_match", K_EXACT_MATCH, true}, {"vqa_score", K_VQA, true},
    {"f1", K_F1, true},               {"mcc", K_MCC, true},
    {"iou_acc", K_IOU, true},         {"wer", K_WER, false},
    {"cer", K_CER, false},             {"solved_acc", K_SOLVED, true},
    {"map", K_MAP, true},
};
#define NTABLE ((int)(sizeof s_table / sizeof s_table[0]))

static int s_lookup(const char *name) {
    for (int i = 0; name && i < NTABLE; i++)
        if (!strcmp(s_table[i].name, name))
            return i;
    return -1;
}

bool metric_known(const char *name) {
    return s_lookup(name) >= 0;
}

const char *metric_names(void) {
    static char buf[160];
    if (!buf[0])
        for (int i = 0; i < NTABLE; i++) {
            size_t used = strlen(buf);
            snprintf(buf + used, sizeof buf - used, "%s%s", i ? ", " : "", s_table[i].name);
        }
    return buf;
}

bool metric_higher_is_better(const char *name) {
    int i = s_lookup(name);
    OFA_ASSERT(i >= 0);
    return s_table[i].higher;
}

/* The checks every metric relies on, done once here so that the metric functions
 * themselves stay free of error paths. */
static int s_check(const char *name, const metric_refs_t *refs, int n, char *err,
                   size_t errlen) {
    if (s_lookup(name) < 0)
        return util_err(err, errlen, "unknown metric '%s' (known: %s)", name ? name : "(null)",
                        metric_names());
    if (n <= 0)
        return util_err(err, errlen, "%s: no samples to evaluate", name);
    if (!refs)
        return util_err(err, errlen, "%s: no references", name);
    for (int i = 0; i < n; i++) {
        if (refs[i].nrefs <= 0 || !refs[i].refs)
            return util_err(err, errlen, "%s: sample %d has no reference", name, i);
        for (int r = 0; r < refs[i].nrefs; r++)
            if (!refs[i].refs[r])
                return util_err(err, errlen, "%s: sample %d reference %d is missing", name,
                                i, r);
    }
    return 0;
}

/* Dispatch without the input checks: metric_baseline calls it once per candidate after
 * checking the references once. */
static int s_compute(s_kind_t kind, const char *const *hyps, const metric_refs_t *refs,
                     int n, double *value, char *err, size_t errlen) {
    switch (kind) {
    case K_BLEU: *value = metric_bleu4(hyps, refs, n); return 0;
    case K_CIDER: *value = metric_cider_d(hyps, refs, n); return 0;
    case K_ROUGE_L: *value = metric_rouge_l(hyps, refs, n); return 0;
    case K_ACCURACY: *value = metric_accuracy(hyps, refs, n); return 0;
    case K_EXACT_MATCH: *value = metric_exact_match(hyps, refs, n); return 0;
    case K_VQA: *value = metric_vqa_score(hyps, refs, n); return 0;
    case K_F1: *value = metric_f1(hyps, refs, n); return 0;
    case K_MCC: *value = metric_mcc(hyps, refs, n); return 0;
    case K_IOU: return metric_iou_acc(hyps, refs, n, value, err, errlen);
    case K_MAP: return metric_map(hyps, refs, n, value, err, errlen);
    case K_WER: return metric_wer(hyps, refs, n, value, err, errlen);
    case K_CER: return metric_cer(hyps, refs, n, value, err, errlen);
    case K_SOLVED: {
        /* A puzzle that is not a grid is the data's fault, not the model's: an error. */
        for (int i = 0; i < n; i++) {
            const char *givens = refs[i].nrefs > 1 ? refs[i].refs[1] : refs[i].refs[0];
            char why[200];
            if (metric_sudoku_check("", givens, why, sizeof why) < 0)
                return util_err(err, errlen, "solved_acc: sample %d: %s", i, why);
        }
        *value = metric_solved_acc(hyps, refs, n);
        return 0;
    }
    }
    OFA_ASSERT(!"unreachable");
    return -1;
}

int metric_compute(const char *name, const char *const *hyps, const metric_refs_t *refs,
                   int n, double *value, char *err, size_t errlen) {
    OFA_ASSERT(value);
    if (s_check(name, refs, n, err, errlen) != 0)
        return -1;
    return s_compute(s_table[s_lookup(name)].kind, hyps, refs, n, value, err, errlen);
}

/* ---------------------------------------------------------------- baseline */

typedef struct {
    const char *key;
    double count;
} s_cand_t;

/* Most frequent first; equal counts in byte order, so the candidates, and with them
 * the reported baseline, do not depend on hash-table order. */
static int s_cand_cmp(const void *a, const void *b) {
    const s_cand_t *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->key, y->key);
}

/* Adds every candidate output a reference suggests to counts. Candidates are stored in
 * the form the metric compares (normalised, or trimmed for exact_match, or a box
 * printed with full precision), so that spelling variants of one answer pool their
 * counts instead of splitting them. */
static void s_add_candidates(s_kind_t kind, const char *ref, s_map_t *counts) {
    switch (kind) {
    case K_WER:
    case K_CER: {
        s_toks_t t;
        s_toks_init(&t, ref);
        for (int i = 0; i < t.n; i++)
            *s_map_ref(counts, t.w[i]) += 1.0;
        s_toks_free(&t);
        return;
    }
    case K_MAP: {
        /* the whole object list, and each object alone, in one canonical spelling */
        metric_det_t *d;
        int nd;
        if (metric_parse_detections(ref, true, &d, &nd, NULL, 0) != 0)
            return;
        size_t cap = 64, len = 0;
        char *all = util_malloc(cap);
        all[0] = 0;
        for (int k = 0; k < nd; k++) {
            char one[512];
            snprintf(one, sizeof one, "<bin_%.0f> <bin_%.0f> <bin_%.0f> <bin_%.0f> %s",
                     d[k].box[0], d[k].box[1], d[k].box[2], d[k].box[3], d[k].label);
            *s_map_ref(counts, one) += 1.0;
            size_t l = strlen(one);
            if (len + l + 2 > cap) {
                cap = (len + l + 2) * 2;
                all = util_realloc(all, cap);
            }
            len += (size_t)snprintf(all + len, cap - len, "%s%s", k ? " " : "", one);
        }
        if (nd > 1)
            *s_map_ref(counts, all) += 1.0;
        free(all);
        metric_dets_free(d, nd);
        return;
    }
    case K_IOU: {
        double b[4];
        char buf[128];
        if (metric_parse_box(ref, b, NULL, 0) == 0) {
            snprintf(buf, sizeof buf, "%.17g %.17g %.17g %.17g", b[0], b[1], b[2], b[3]);
            *s_map_ref(counts, buf) += 1.0;
        }
        return;
    }
    default: {
        char *s = kind == K_EXACT_MATCH || kind == K_SOLVED ? s_trim_dup(ref)
                  : kind == K_VQA || kind == K_F1 ? metric_normalize_answer(ref)
                                                  : metric_normalize(ref);
        *s_map_ref(counts, s) += 1.0;
        free(s);
        return;
    }
    }
}

static int s_dbl_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Why a baseline at all: a model that learnt nothing but the output distribution emits
 * one frequent answer for every input, and on a skewed validation set that can look
 * like a good score. eval.json puts the best such constant beside the real value, so a
 * reader sees at once whether the model used its inputs. Trying the most frequent
 * references (not only the first) matters for BLEU and CIDEr-D, where the most frequent
 * caption need not be the best-scoring constant. */
int metric_baseline(const char *name, const metric_refs_t *refs, int n,
                    metric_baseline_t *out, char *err, size_t errlen) {
    OFA_ASSERT(out);
    memset(out, 0, sizeof *out);
    if (s_check(name, refs, n, err, errlen) != 0)
        return -1;
    int ti = s_lookup(name);
    s_kind_t kind = s_table[ti].kind;
    bool higher = s_table[ti].higher;

    s_map_t counts;
    s_map_init(&counts);
    for (int i = 0; i < n; i++)
        /* solved_acc: the second reference is the puzzle, not an output to try. */
        for (int r = 0; r < (kind == K_SOLVED ? 1 : refs[i].nrefs); r++)
            s_add_candidates(kind, refs[i].refs[r], &counts);
    s_cand_t *cand = util_malloc((counts.len + 1) * sizeof *cand);
    int nc = 0;
    for (size_t s = 0; s < counts.cap; s++)
        if (counts.keys[s])
            cand[nc++] = (s_cand_t){counts.keys[s], counts.vals[s]};
    qsort(cand, nc, sizeof *cand, s_cand_cmp);
    if (nc > METRIC_BASELINE_TRIES)
        nc = METRIC_BASELINE_TRIES;

    /* Boxes rarely repeat exactly: the coordinate-wise median box is a candidate too. */
    char median[128] = "";
    if (kind == K_IOU) {
        int nb = 0;
        for (int i = 0; i < n; i++)
            nb += refs[i].nrefs;
        double *c[4];
        for (int k = 0; k < 4; k++)
            c[k] = util_malloc(nb * sizeof(double));
        int m = 0;
        for (int i = 0; i < n; i++)
            for (int r = 0; r < refs[i].nrefs; r++) {
                double b[4];
                if (metric_parse_box(refs[i].refs[r], b, NULL, 0) == 0) {
                    for (int k = 0; k < 4; k++)
                        c[k][m] = b[k];
                    m++;
                }
            }
        if (m > 0) {
            double med[4];
            for (int k = 0; k < 4; k++) {
                qsort(c[k], m, sizeof(double), s_dbl_cmp);
                med[k] = m % 2 ? c[k][m / 2] : 0.5 * (c[k][m / 2 - 1] + c[k][m / 2]);
            }
            snprintf(median, sizeof median, "%.17g %.17g %.17g %.17g", med[0], med[1], med[2],
                     med[3]);
            cand[nc++] = (s_cand_t){median, 0};
        }
        for (int k = 0; k < 4; k++)
            free(c[k]);
    }

    const char **hyps = util_malloc(n * sizeof *hyps);
    int rc = 0, best = -1;
    double best_v = 0;
    for (int c = 0; c < nc && rc == 0; c++) {
        for (int i = 0; i < n; i++)
            hyps[i] = cand[c].key;
        double v;
        rc = s_compute(kind, hyps, refs, n, &v, err, errlen);
        if (rc == 0 && (best < 0 || (higher ? v > best_v : v < best_v)))
            best = c, best_v = v;
    }
    if (rc == 0 && best < 0)
        rc = util_err(err, errlen, "%s: the references suggest no constant output", name);
    if (rc == 0) {
        out->value = best_v;
        out->output = util_strdup(cand[best].key);
        out->candidates = nc;
        out->kind = kind == K_WER || kind == K_CER                  ? "constant word"
                    : kind == K_IOU                                 ? "constant box"
                    : kind == K_MAP                                 ? "constant objects"
                    : kind == K_BLEU || kind == K_CIDER || kind == K_ROUGE_L ? "constant caption"
                    : kind == K_SOLVED                              ? "constant grid"
                                                                    : "constant answer";
    }
    free(hyps);
    free(cand);
    s_map_free(&counts);
    return rc;
}

void metric_baseline_clear(metric_baseline_t *out) {
    if (!out)
        return;
    free(out->output);
    memset(out, 0, sizeof *out);
}
