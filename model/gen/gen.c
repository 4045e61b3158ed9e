/* gen.c: see gen.h. The searches keep their own bookkeeping (prefix tokens, scores,
 * finished hypotheses) and leave the decoder state to the step interface; every change of
 * the set of live hypotheses goes through st->reorder so that a KV cache stays in step. */
#include "gen.h"

#include <math.h>
#include <string.h>

#include "util.h"

gen_opts_t gen_opts_default(void) {
    gen_opts_t o = {
        .beam = 5, .max_len = 32, .min_len = 0, .len_penalty = 1.0f,
        .bos = 0, .eos = 2, .n_special = 5, .bin_first = -1, .n_bins = 1000, .first = NULL,
    };
    return o;
}

void gen_hyps_free(gen_hyp_t *hyps, int n) {
    if (!hyps)
        return;
    for (int i = 0; i < n; i++) {
        free(hyps[i].tokens);
        hyps[i].tokens = NULL;
        hyps[i].len = 0;
    }
}

void gen_log_softmax(float *x, int V) {
    float m = -INFINITY;
    for (int v = 0; v < V; v++)
        if (x[v] > m)
            m = x[v];
    /* Sum in double: V is up to ~60k and the tail of small terms matters for ranking. */
    double s = 0;
    for (int v = 0; v < V; v++)
        s += exp((double)x[v] - m);
    float lse = m + (float)log(s);
    for (int v = 0; v < V; v++)
        x[v] -= lse;
}

/* Forbid the specials (except </s>) and, by step, </s> itself or everything but </s>.
 * Forbidding means -inf after the log-softmax, never renormalising over what is left:
 * the scores stay comparable with the model's own log-likelihoods (and with fairseq's),
 * and a search under constraints ranks hypotheses by what the model actually believes. */
static void s_mask_step(float *lp, int V, const gen_opts_t *o, int t) {
    for (int v = 0; v < o->n_special && v < V; v++)
        if (v != o->eos)
            lp[v] = -INFINITY;
    if (t < o->min_len)
        lp[o->eos] = -INFINITY;
    if (t >= o->max_len - 1) {
        float e = lp[o->eos];
        for (int v = 0; v < V; v++)
            lp[v] = -INFINITY;
        lp[o->eos] = e;
    }
}

static int s_check_opts(const gen_step_i *st, int B, const gen_opts_t *o, char *err, size_t errlen) {
    if (!st || !st->step || !st->reorder || st->vocab <= 0)
        return util_err(err, errlen, "gen: incomplete step interface");
    if (B <= 0)
        return util_err(err, errlen, "gen: batch size %d", B);
    if (o->max_len < 1)
        return util_err(err, errlen, "gen: max_len %d < 1", o->max_len);
    if (o->min_len >= o->max_len)
        return util_err(err, errlen, "gen: min_len %d >= max_len %d", o->min_len, o->max_len);
    if (o->eos < 0 || o->eos >= st->vocab || o->bos < 0 || o->bos >= st->vocab)
        return util_err(err, errlen, "gen: special ids outside the vocabulary of %d", st->vocab);
    return 0;
}

/* Run one step and turn the logits into log-probabilities. lp (n, V). */
static int s_step(const gen_step_i *st, int n, const int32_t *tok, float *lp, char *err, size_t errlen) {
    if (st->step(st->ctx, n, tok, lp, err, errlen) != 0)
        return -1;
    for (int i = 0; i < n; i++)
        gen_log_softmax(lp + (size_t)i * st->vocab, st->vocab);
    return 0;
}

static void s_hyp_set(gen_hyp_t *h, const int32_t *tok, int len, float score, int answer) {
    h->tokens = util_malloc(sizeof(int32_t) * (len ? len : 1));
    if (len)
        memcpy(h->tokens, tok, sizeof(int32_t) * len);
    h->len = len;
    h->score = score;
    h->answer = answer;
}

/* ---------------------------------------------------------------- greedy */

int gen_greedy(const gen_step_i *st, int B, const gen_opts_t *opts, gen_hyp_t *out,
               char *err, size_t errlen) {
    if (s_check_opts(st, B, opts, err, errlen) != 0)
        return -1;
    const int V = st->vocab, L = opts->max_len;
    float *lp = util_malloc(sizeof(float) * (size_t)B * V);
    int32_t *seq = util_malloc(sizeof(int32_t) * (size_t)B * L);   /* (B, L) */
    int32_t *feed = util_malloc(sizeof(int32_t) * B);
    int *len = util_calloc(B, sizeof(int));
    float *score = util_calloc(B, sizeof(float));
    char *done = util_calloc(B, 1);
    int rc = 0, n_done = 0;
    for (int b = 0; b < B; b++)
        feed[b] = opts->first ? opts->first[b] : opts->bos;
    /* All B rows advance together even when some have finished: the decoder's rows
     * stay aligned with the inputs, so greedy never needs a reorder. */
    for (int t = 0; t < L && n_done < B; t++) {
        if (s_step(st, B, feed, lp, err, errlen) != 0) {
            rc = -1;
            break;
        }
        for (int b = 0; b < B; b++) {
            if (done[b]) {
                /* Finished rows keep being fed </s> so that all rows stay in step. */
                feed[b] = opts->eos;
                continue;
            }
            float *r = lp + (size_t)b * V;
            s_mask_step(r, V, opts, t);
            int best = opts->eos;
            for (int v = 0; v < V; v++)
                if (r[v] > r[best] || (r[v] == r[best] && v < best))
                    best = v;
            score[b] += r[best];
            feed[b] = best;
            if (best == opts->eos) {
                done[b] = 1;
                n_done++;
            } else {
                seq[(size_t)b * L + len[b]++] = best;
            }
        }
    }
    if (rc == 0)
        for (int b = 0; b < B; b++)
            s_hyp_set(&out[b], seq + (size_t)b * L, len[b], score[b], -1);
    free(lp); free(seq); free(feed); free(len); free(score); free(done);
    return rc;
}

/* ---------------------------------------------------------------- beam */

typedef struct {
    float score;
    int beam;      /* index of the parent beam within its sentence */
    int32_t tok;
} s_cand_t;

/* Better candidate first: higher score, then lower (beam, token). A total order with
 * stated ties makes the search deterministic (torch.topk leaves ties unspecified); the
 * hand-worked tests rely on it. */
static int s_cand_better(const s_cand_t *a, const s_cand_t *b) {
    if (a->score != b->score)
        return a->score > b->score;
    if (a->beam != b->beam)
        return a->beam < b->beam;
    return a->tok < b->tok;
}

/* Keep the best `cap` candidates in c[0..*n) sorted best-first (insertion). cap = 2K is
 * small, and most of the K*V candidates fail the first comparison, so this costs about
 * one comparison per candidate: no sort of the whole vocabulary per beam. */
static void s_cand_push(s_cand_t *c, int *n, int cap, s_cand_t x) {
    if (*n == cap && !s_cand_better(&x, &c[cap - 1]))
        return;
    int i = *n < cap ? (*n)++ : cap - 1;
    while (i > 0 && s_cand_better(&x, &c[i - 1])) {
        c[i] = c[i - 1];
        i--;
    }
    c[i] = x;
}

typedef struct {
    int32_t *tok;   /* (len) */
    int len;
    float score;
} s_fin_t;

int gen_beam(const gen_step_i *st, int B, const gen_opts_t *opts, gen_hyp_t *out,
             char *err, size_t errlen) {
    if (s_check_opts(st, B, opts, err, errlen) != 0)
        return -1;
    if (opts->beam < 1)
        return util_err(err, errlen, "gen: beam size %d < 1", opts->beam);
    const int V = st->vocab, K = opts->beam, L = opts->max_len, C = 2 * K;
    /* Per sentence b and beam k: prefix tokens, cumulative log-prob (-inf: dead beam). */
    int32_t *pre = util_malloc(sizeof(int32_t) * (size_t)B * K * L);    /* (B, K, L) */
    int32_t *pre2 = util_malloc(sizeof(int32_t) * (size_t)B * K * L);
    float *cum = util_malloc(sizeof(float) * (size_t)B * K);             /* (B, K) */
    float *cum2 = util_malloc(sizeof(float) * (size_t)B * K);
    s_fin_t *fin = util_calloc((size_t)B * K, sizeof(s_fin_t));          /* (B, K) */
    int *n_fin = util_calloc(B, sizeof(int));
    int *active = util_malloc(sizeof(int) * B);     /* sentence ids still searching */
    int32_t *src = util_malloc(sizeof(int32_t) * (size_t)B * K);
    int32_t *feed = util_malloc(sizeof(int32_t) * (size_t)B * K);
    float *lp = util_malloc(sizeof(float) * (size_t)B * K * V);
    s_cand_t *cand = util_malloc(sizeof(s_cand_t) * C);
    int n_act = B, rc = 0;
    /* Finished sentences leave the decoder (their rows are dropped by the reorder after
     * the step they finish in), as fairseq shrinks its batch: later steps cost only the
     * sentences still searching. active[a] maps decoder sentence slot a to input b. */

    for (int b = 0; b < B; b++) {
        active[b] = b;
        for (int k = 0; k < K; k++)
            cum[b * K + k] = 0.0f;
    }
    /* B rows -> B*K rows: every beam of a sentence starts from that sentence's row. */
    if (K > 1) {
        for (int i = 0; i < B * K; i++)
            src[i] = i / K;
        if (st->reorder(st->ctx, B * K, src, err, errlen) != 0)
            rc = -1;
    }
    for (int t = 0; rc == 0 && t < L && n_act > 0; t++) {
        const int rows = n_act * K;
        for (int a = 0; a < n_act; a++)
            for (int k = 0; k < K; k++)
                feed[a * K + k] = t > 0 ? pre[((size_t)active[a] * K + k) * L + t - 1]
                                  : opts->first ? opts->first[active[a]] : opts->bos;
        if (s_step(st, rows, feed, lp, err, errlen) != 0) {
            rc = -1;
            break;
        }
        int n_keep = 0;   /* sentences still active after this step */
        for (int a = 0; a < n_act; a++) {
            const int b = active[a];
            int nc = 0;
            /* At t = 0 all beams hold the same prefix: expanding one avoids K copies of
             * every candidate. */
            const int kmax = t == 0 ? 1 : K;
            for (int k = 0; k < kmax; k++) {
                float base = cum[b * K + k];
                if (base == -INFINITY)
                    continue;
                float *r = lp + ((size_t)a * K + k) * V;
                s_mask_step(r, V, opts, t);
                for (int v = 0; v < V; v++) {
                    if (r[v] == -INFINITY)
                        continue;
                    s_cand_t c = {base + r[v], k, v};
                    s_cand_push(cand, &nc, C, c);
                }
            }
            /* Finished hypotheses: </s> among the first K ranks. A </s> ranked K..2K-1
             * is dropped, as in fairseq: it could not have displaced a live beam. */
            for (int i = 0; i < nc && i < K; i++) {
                if (cand[i].tok != opts->eos || n_fin[b] >= K)
                    continue;
                s_fin_t *f = &fin[b * K + n_fin[b]++];
                f->len = t;
                f->tok = util_malloc(sizeof(int32_t) * (t ? t : 1));
                memcpy(f->tok, pre + ((size_t)b * K + cand[i].beam) * L, sizeof(int32_t) * t);
                f->score = cand[i].score / powf((float)(t + 1), opts->len_penalty);
            }
            /* The next live beams: the first K candidates that do not end the sentence. */
            int nk = 0;
            for (int i = 0; i < nc && nk < K; i++) {
                if (cand[i].tok == opts->eos)
                    continue;
                const int32_t *p = pre + ((size_t)b * K + cand[i].beam) * L;
                int32_t *q = pre2 + ((size_t)b * K + nk) * L;
                memcpy(q, p, sizeof(int32_t) * t);
                q[t] = cand[i].tok;
                cum2[b * K + nk] = cand[i].score;
                src[n_keep * K + nk] = a * K + cand[i].beam;
                nk++;
            }
            if (n_fin[b] >= K || nk == 0)
                continue;   /* done: K finished, or nothing left to extend */
            /* Too few candidates: the remaining beams are dead copies of beam 0 (a
             * valid prefix, so the decoder is never fed garbage; -inf keeps them out). */
            for (int k = nk; k < K; k++) {
                cum2[b * K + k] = -INFINITY;
                src[n_keep * K + k] = src[n_keep * K];
                memcpy(pre2 + ((size_t)b * K + k) * L, pre2 + (size_t)b * K * L,
                       sizeof(int32_t) * (t + 1));
            }
            for (int k = 0; k < K; k++) {
                cum[b * K + k] = cum2[b * K + k];
                memcpy(pre + ((size_t)b * K + k) * L, pre2 + ((size_t)b * K + k) * L,
                       sizeof(int32_t) * (t + 1));
            }
            active[n_keep++] = b;
        }
        n_act = n_keep;
        if (n_act > 0 && st->reorder(st->ctx, n_act * K, src, err, errlen) != 0)
            rc = -1;
    }
    for (int b = 0; b < B; b++) {
        if (rc == 0) {
            int best = -1;
            for (int i = 0; i < n_fin[b]; i++)
                if (best < 0 || fin[b * K + i].score > fin[b * K + best].score)
                    best = i;
            /* max_len forces </s>, so every sentence finishes at least one hypothesis. */
            OFA_ASSERT(best >= 0);
            s_fin_t *f = &fin[b * K + best];
            s_hyp_set(&out[b], f->tok, f->len, f->score, -1);
        }
        for (int i = 0; i < n_fin[b]; i++)
            free(fin[b * K + i].tok);
    }
    free(pre); free(pre2); free(cum); free(cum2); free(fin); free(n_fin); free(active);
    free(src); free(feed); free(lp); free(cand);
    return rc;
}

/* ---------------------------------------------------------------- trie
 * The answers of a closed set share prefixes ("a red car", "a red bus"): a trie lets the
 * exact search feed each shared prefix once. Nodes live in one array (children as a
 * sibling list) so that a trie of a few thousand answers is a few allocations. */

typedef struct {
    int32_t tok;       /* the token on the edge into this node (root: -1) */
    int first_child;   /* node index or -1 */
    int next_sibling;  /* node index or -1 */
    int answer;        /* answer ending at this node, or -1 */
    int depth;         /* tokens from the root */
    int parent;        /* node index (root: -1) */
} s_node_t;

struct gen_trie_t {
    s_node_t *nodes;   /* nodes[0] is the root */
    int n, cap;
    int n_answers;
    int depth;         /* longest answer in tokens */
};

gen_trie_t *gen_trie_new(void) {
    gen_trie_t *self = util_calloc(1, sizeof *self);
    self->cap = 16;
    self->nodes = util_malloc(sizeof(s_node_t) * self->cap);
    self->nodes[0] = (s_node_t){-1, -1, -1, -1, 0, -1};
    self->n = 1;
    return self;
}

void gen_trie_destroy(gen_trie_t **self_p) {
    if (!self_p || !*self_p)
        return;
    free((*self_p)->nodes);
    free(*self_p);
    *self_p = NULL;
}

int gen_trie_add(gen_trie_t *self, const int32_t *tokens, int n, int answer,
                 char *err, size_t errlen) {
    if (n <= 0)
        return util_err(err, errlen, "closed set: answer %d has no tokens", answer);
    int cur = 0;
    for (int i = 0; i < n; i++) {
        int c = self->nodes[cur].first_child;
        while (c >= 0 && self->nodes[c].tok != tokens[i])
            c = self->nodes[c].next_sibling;
        if (c < 0) {
            if (self->n == self->cap) {
                self->cap *= 2;
                self->nodes = util_realloc(self->nodes, sizeof(s_node_t) * self->cap);
            }
            c = self->n++;
            /* Prepend: sibling order does not affect the (exact) scores. */
            self->nodes[c] = (s_node_t){tokens[i], -1, self->nodes[cur].first_child, -1, i + 1, cur};
            self->nodes[cur].first_child = c;
        }
        cur = c;
    }
    if (self->nodes[cur].answer >= 0)
        return util_err(err, errlen, "closed set: answer %d tokenises like answer %d",
                        answer, self->nodes[cur].answer);
    self->nodes[cur].answer = answer;
    self->n_answers++;
    if (n > self->depth)
        self->depth = n;
    return 0;
}

int gen_trie_size(const gen_trie_t *self) { return self->n_answers; }
int gen_trie_depth(const gen_trie_t *self) { return self->depth + 1; }

int gen_trie_width(const gen_trie_t *self) {
    int *count = util_calloc(self->depth + 1, sizeof(int)), w = 1;
    for (int i = 0; i < self->n; i++)
        if (++count[self->nodes[i].depth] > w)
            w = count[self->nodes[i].depth];
    free(count);
    return w;
}

int gen_closed_set(const gen_step_i *st, int B, const gen_trie_t *trie, const gen_opts_t *opts,
                   gen_hyp_t *out, char *err, size_t errlen) {
    if (!st || !st->step || !st->reorder || st->vocab <= 0 || B <= 0)
        return util_err(err, errlen, "gen: bad closed-set call");
    if (!trie || trie->n_answers == 0)
        return util_err(err, errlen, "closed set: no answers");
    const int V = st->vocab;
    for (int i = 1; i < trie->n; i++)
        if (trie->nodes[i].tok < 0 || trie->nodes[i].tok >= V)
            return util_err(err, errlen, "closed set: token %d outside the vocabulary of %d",
                            trie->nodes[i].tok, V);
    /* Rows are (sentence, trie node) pairs; acc = log-prob of the node's prefix. Each
     * level feeds every child's token to a copy of its parent's row, so every answer's
     * full log-likelihood is computed exactly once and no candidate is ever pruned: the
     * result is the true argmax over the set, unlike a trie-constrained beam search. */
    int cap = B, n = B, rc = 0;
    int *row_b = util_malloc(sizeof(int) * cap), *row_node = util_malloc(sizeof(int) * cap);
    float *acc = util_malloc(sizeof(float) * cap);
    int32_t *feed = util_malloc(sizeof(int32_t) * cap);
    float *best = util_malloc(sizeof(float) * B);
    int *best_ans = util_malloc(sizeof(int) * B), *best_node = util_malloc(sizeof(int) * B);
    float *lp = NULL;
    for (int b = 0; b < B; b++) {
        row_b[b] = b, row_node[b] = 0, acc[b] = 0.0f;
        feed[b] = opts->first ? opts->first[b] : opts->bos;
        best[b] = -INFINITY, best_ans[b] = -1, best_node[b] = -1;
    }
    while (n > 0) {
        lp = util_realloc(lp, sizeof(float) * (size_t)n * V);
        if (s_step(st, n, feed, lp, err, errlen) != 0) {
            rc = -1;
            break;
        }
        /* Count the next level's rows: every child of every row's node. */
        int n2 = 0;
        for (int i = 0; i < n; i++)
            for (int c = trie->nodes[row_node[i]].first_child; c >= 0; c = trie->nodes[c].next_sibling)
                n2++;
        int *nb = util_malloc(sizeof(int) * (n2 ? n2 : 1)), *nn = util_malloc(sizeof(int) * (n2 ? n2 : 1));
        float *na = util_malloc(sizeof(float) * (n2 ? n2 : 1));
        int32_t *src = util_malloc(sizeof(int32_t) * (n2 ? n2 : 1));
        int j = 0;
        for (int i = 0; i < n; i++) {
            const s_node_t *nd = &trie->nodes[row_node[i]];
            const float *r = lp + (size_t)i * V;
            if (nd->answer >= 0) {
                float s = (acc[i] + r[opts->eos]) / powf((float)(nd->depth + 1), opts->len_penalty);
                int b = row_b[i];
                if (s > best[b] || (s == best[b] && nd->answer < best_ans[b]) || best_ans[b] < 0) {
                    best[b] = s, best_ans[b] = nd->answer, best_node[b] = row_node[i];
                }
            }
            for (int c = nd->first_child; c >= 0; c = trie->nodes[c].next_sibling) {
                nb[j] = row_b[i], nn[j] = c, na[j] = acc[i] + r[trie->nodes[c].tok], src[j] = i;
                j++;
            }
        }
        if (n2 > 0 && st->reorder(st->ctx, n2, src, err, errlen) != 0)
            rc = -1;
        free(row_b); free(row_node); free(acc); free(src);
        row_b = nb, row_node = nn, acc = na, n = n2;
        if (rc != 0)
            break;
        feed = util_realloc(feed, sizeof(int32_t) * (n ? n : 1));
        for (int i = 0; i < n; i++)
            feed[i] = trie->nodes[row_node[i]].tok;
    }
    if (rc == 0) {
        for (int b = 0; b < B; b++) {
            /* The answer's tokens: walk the parent links up from its node. */
            int node = best_node[b], d = trie->nodes[node].depth;
            int32_t *tok = util_malloc(sizeof(int32_t) * d);
            for (int i = d - 1; i >= 0; i--, node = trie->nodes[node].parent)
                tok[i] = trie->nodes[node].tok;
            s_hyp_set(&out[b], tok, d, best[b], best_ans[b]);
            free(tok);
        }
    }
    free(row_b); free(row_node); free(acc); free(feed); free(best); free(best_ans);
    free(best_node); free(lp);
    return rc;
}

/* ---------------------------------------------------------------- box */

int gen_box(const gen_step_i *st, int B, const gen_opts_t *opts, gen_hyp_t *out,
            char *err, size_t errlen) {
    if (!st || !st->step || st->vocab <= 0 || B <= 0)
        return util_err(err, errlen, "gen: bad box call");
    const int V = st->vocab;
    if (opts->bin_first < 0 || opts->n_bins <= 0 || opts->bin_first + opts->n_bins > V)
        return util_err(err, errlen, "box: location bins [%d, %d) outside the vocabulary of %d",
                        opts->bin_first, opts->bin_first + opts->n_bins, V);
    float *lp = util_malloc(sizeof(float) * (size_t)B * V);
    int32_t *seq = util_malloc(sizeof(int32_t) * (size_t)B * 4);   /* (B, 4) */
    int32_t *feed = util_malloc(sizeof(int32_t) * B);
    float *score = util_calloc(B, sizeof(float));
    int rc = 0;
    for (int b = 0; b < B; b++)
        feed[b] = opts->first ? opts->first[b] : opts->bos;
    for (int t = 0; t < 4; t++) {
        if (s_step(st, B, feed, lp, err, errlen) != 0) {
            rc = -1;
            break;
        }
        for (int b = 0; b < B; b++) {
            const float *r = lp + (size_t)b * V + opts->bin_first;
            int best = 0;
            for (int i = 1; i < opts->n_bins; i++)
                if (r[i] > r[best])
                    best = i;
            score[b] += r[best];
            feed[b] = seq[b * 4 + t] = opts->bin_first + best;
        }
    }
    if (rc == 0)
        for (int b = 0; b < B; b++)
            s_hyp_set(&out[b], seq + b * 4, 4, score[b], -1);
    free(lp); free(seq); free(feed); free(score);
    return rc;
}
