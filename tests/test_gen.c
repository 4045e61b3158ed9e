/* test_gen.c: the searches of model/gen against a tiny fake decoder whose next-token
 * probabilities are a fixed table indexed by the prefix, so the right answers can be
 * worked out by hand (the derivations are in the comments of each test).
 *
 * The fake keeps one prefix per row, exactly as a KV cache keeps one history per row:
 * step appends the fed token to each row and answers from that row's own prefix, and
 * reorder copies rows. A search that forgets to reorder, or feeds the wrong token, sees
 * different probabilities and gets a different answer. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gen.h"

/* Vocabulary: 0 <s> 1 <pad> 2 </s> 3 <unk> 4 <mask>, 5 'A', 6 'B', 7..9 three bins. */
enum { V = 10, EOS = 2, TA = 5, TB = 6, BIN0 = 7, MAXP = 16, MAXR = 64 };

typedef struct {
    int table;              /* which probability table */
    int n;                  /* rows */
    int32_t pre[MAXR][MAXP];/* each row's prefix (without <s>) */
    int len[MAXR];
    int steps, reorders;
    int rows_fed;           /* total rows over all steps */
    int pad_hot;            /* give <pad> and <unk> the highest logits */
} fake_t;

/* The prefix as a string of 'A'/'B'/'0'.. characters (bins as digits). */
static void s_key(const int32_t *p, int n, char *k) {
    for (int i = 0; i < n; i++)
        k[i] = p[i] == TA ? 'A' : p[i] == TB ? 'B' : (char)('0' + p[i] - BIN0);
    k[n] = 0;
}

/* Probabilities of </s>, A, B after prefix k (everything else 0 unless bins are set). */
static void s_probs(int table, const char *k, double *pe, double *pa, double *pb, double bins[3]) {
    *pe = 1, *pa = 0, *pb = 0;
    bins[0] = bins[1] = bins[2] = 0;
    if (table == 1) {
        if (!strcmp(k, "")) *pe = .1, *pa = .5, *pb = .4;
        else if (!strcmp(k, "A")) *pe = .4, *pa = .3, *pb = .3;
        else if (!strcmp(k, "B")) *pe = .9, *pa = .05, *pb = .05;
        else *pe = .6, *pa = .2, *pb = .2;
    } else if (table == 2) {
        if (!strcmp(k, "")) *pe = .4, *pa = .6, *pb = 0;
        else if (!strcmp(k, "A")) *pe = .5, *pa = .5, *pb = 0;
        else *pe = .5, *pa = .5, *pb = 0;
    } else if (table == 3) {   /* never wants to stop */
        *pe = .01, *pa = .99, *pb = 0;
    } else if (table == 4) {   /* box: the tokens prefer bins 2,0,1,2 in turn; A is likelier */
        int n = (int)strlen(k);
        static const int want[4] = {2, 0, 1, 2};
        *pe = 0.05, *pa = 0.5, *pb = 0.05;
        for (int i = 0; i < 3; i++)
            bins[i] = i == want[n < 4 ? n : 3] ? 0.3 : 0.05;
    }
}

static int fake_step(void *ctx, int n, const int32_t *tok, float *logits, char *err, size_t errlen) {
    fake_t *f = ctx;
    cr_assert_eq(n, f->n, "step with %d rows, the decoder holds %d", n, f->n);
    f->steps++;
    f->rows_fed += n;
    for (int i = 0; i < n; i++) {
        if (tok[i] != 0) {   /* <s> starts the decoder; everything else extends the prefix */
            cr_assert_lt(f->len[i], MAXP);
            f->pre[i][f->len[i]++] = tok[i];
        } else {
            cr_assert_eq(f->len[i], 0, "<s> fed to a row that already has a prefix");
        }
        char k[MAXP + 1];
        s_key(f->pre[i], f->len[i], k);
        double pe, pa, pb, bins[3];
        s_probs(f->table, k, &pe, &pa, &pb, bins);
        float *r = logits + (size_t)i * V;
        for (int v = 0; v < V; v++)
            r[v] = -INFINITY;
        /* logits = log p: the searches' log-softmax then gives back log p exactly
         * (up to rounding) because each table sums to 1 or is renormalised here. */
        double tot = pe + pa + pb + bins[0] + bins[1] + bins[2];
        r[EOS] = logf((float)(pe / tot));
        r[TA] = logf((float)(pa / tot));
        r[TB] = logf((float)(pb / tot));
        for (int j = 0; j < 3; j++)
            r[BIN0 + j] = logf((float)(bins[j] / tot));
        if (f->pad_hot)   /* <pad> and <unk> the most likely tokens: never to be chosen */
            r[1] = r[3] = 5.0f;
    }
    (void)err, (void)errlen;
    return 0;
}

static int fake_reorder(void *ctx, int n_new, const int32_t *src, char *err, size_t errlen) {
    fake_t *f = ctx;
    cr_assert_leq(n_new, MAXR);
    int32_t pre[MAXR][MAXP];
    int len[MAXR];
    for (int i = 0; i < n_new; i++) {
        cr_assert(src[i] >= 0 && src[i] < f->n, "reorder source %d of %d rows", src[i], f->n);
        memcpy(pre[i], f->pre[src[i]], sizeof pre[i]);
        len[i] = f->len[src[i]];
    }
    memcpy(f->pre, pre, sizeof pre[0] * n_new);
    memcpy(f->len, len, sizeof len[0] * n_new);
    f->n = n_new;
    f->reorders++;
    (void)err, (void)errlen;
    return 0;
}

static gen_step_i s_iface(fake_t *f, int table, int B) {
    memset(f, 0, sizeof *f);
    f->table = table;
    f->n = B;
    gen_step_i st = {.ctx = f, .vocab = V, .step = fake_step, .reorder = fake_reorder};
    return st;
}

#define NEAR(a, b) cr_assert(fabs((double)(a) - (double)(b)) < 1e-5, "%g != %g", (double)(a), (double)(b))

Test(gen, greedy_takes_the_locally_best_token) {
    /* Table 1: greedy takes A (.5) then </s> (.4 beats .3/.3): [A], log .2. */
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 2);
    gen_opts_t o = gen_opts_default();
    gen_hyp_t h[2];
    char err[256];
    cr_assert_eq(gen_greedy(&st, 2, &o, h, err, sizeof err), 0, "%s", err);
    for (int b = 0; b < 2; b++) {
        cr_assert_eq(h[b].len, 1);
        cr_assert_eq(h[b].tokens[0], TA);
        NEAR(h[b].score, log(.2));
    }
    cr_assert_eq(f.steps, 2, "one step per generated token");
    gen_hyps_free(h, 2);
}

Test(gen, beam_finds_the_better_sequence) {
    /* Table 1, K=2, lenpen 1. t=0: A .5, B .4, </s> .1 (rank 2, not finalised); live A, B.
     * t=1: B</s> .36, A</s> .2, AA .15, AB .15: both </s> among the first 2 ranks, so
     * [B] (log .36 / 2) and [A] (log .2 / 2) finish, the sentence has K=2 and stops.
     * Best: [B], -0.5108. Greedy would say [A]. */
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 3);
    gen_opts_t o = gen_opts_default();
    o.beam = 2;
    gen_hyp_t h[3];
    char err[256];
    cr_assert_eq(gen_beam(&st, 3, &o, h, err, sizeof err), 0, "%s", err);
    for (int b = 0; b < 3; b++) {
        cr_assert_eq(h[b].len, 1);
        cr_assert_eq(h[b].tokens[0], TB);
        NEAR(h[b].score, log(.36) / 2);
    }
    cr_assert_eq(f.steps, 2, "no prefix is re-run");
    cr_assert_eq(f.rows_fed, 2 * 3 * 2, "B*K rows per step");
    gen_hyps_free(h, 3);
}

Test(gen, beam_length_penalty_as_fairseq) {
    /* Table 2, K=2. t=0: A .6, </s> .4 (rank 1 < K: [] finishes with log .4 / 1^lp);
     * only A lives (B has p=0: beam 2 is dead). t=1: from A: A</s> .3 and AA .3 tie,
     * </s> (id 2) ranks before A (id 5): [A] finishes with log .3 / 2^lp. K finished.
     * lenpen 1: [A] -0.602 beats [] -0.916; lenpen 0: [] -0.916 beats [A] -1.204. */
    char err[256];
    for (int pass = 0; pass < 2; pass++) {
        fake_t f;
        gen_step_i st = s_iface(&f, 2, 1);
        gen_opts_t o = gen_opts_default();
        o.beam = 2;
        o.len_penalty = pass == 0 ? 1.0f : 0.0f;
        gen_hyp_t h[1];
        cr_assert_eq(gen_beam(&st, 1, &o, h, err, sizeof err), 0, "%s", err);
        if (pass == 0) {
            cr_assert_eq(h[0].len, 1);
            cr_assert_eq(h[0].tokens[0], TA);
            NEAR(h[0].score, log(.3) / 2);
        } else {
            cr_assert_eq(h[0].len, 0);
            NEAR(h[0].score, log(.4));
        }
        gen_hyps_free(h, 1);
    }
}

Test(gen, max_len_forces_eos) {
    /* Table 3 never wants to stop: greedy and beam stop at max_len tokens including
     * </s>, i.e. max_len-1 A's. Beam K=3: the only finite candidates per step are A and
     * </s>; with max_len 4 the answer is AAA. */
    char err[256];
    fake_t f;
    gen_step_i st = s_iface(&f, 3, 2);
    gen_opts_t o = gen_opts_default();
    o.max_len = 4;
    gen_hyp_t h[2];
    cr_assert_eq(gen_greedy(&st, 2, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 3);
    NEAR(h[0].score, 3 * log(.99) + log(.01));
    gen_hyps_free(h, 2);
    /* Beam K=1: </s> ranks second at every step, so it never finishes early; at t=3
     * only </s> is allowed (its log-prob stays log .01): [AAA], (3 log .99 + log .01)/4. */
    st = s_iface(&f, 3, 2);
    o.beam = 1;
    cr_assert_eq(gen_beam(&st, 2, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 3);
    NEAR(h[0].score, (3 * log(.99) + log(.01)) / 4);
    cr_assert_eq(f.steps, 4);
    gen_hyps_free(h, 2);
    /* Beam K=3 stops as fairseq does once K hypotheses have finished: [] at t=0, [A] at
     * t=1, [AA] at t=2 (each </s> ranks second of two candidates, inside the first K).
     * Best by normalised score: [AA], (2 log .99 + log .01)/3 = -1.542. */
    st = s_iface(&f, 3, 2);
    o.beam = 3;
    cr_assert_eq(gen_beam(&st, 2, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[1].len, 2);
    NEAR(h[1].score, (2 * log(.99) + log(.01)) / 3);
    cr_assert_eq(f.steps, 3);
    gen_hyps_free(h, 2);
}

Test(gen, min_len_forbids_early_eos) {
    /* Table 1 with min_len 2: </s> is forbidden at t=0,1. Greedy: A (.5), then A/B tie
     * at .3 -> A (lower id), then </s> (.6 at "AA"). */
    char err[256];
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 1);
    gen_opts_t o = gen_opts_default();
    o.min_len = 2;
    gen_hyp_t h[1];
    cr_assert_eq(gen_greedy(&st, 1, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 2);
    cr_assert_eq(h[0].tokens[0], TA);
    cr_assert_eq(h[0].tokens[1], TA);
    gen_hyps_free(h, 1);
}

/* Log-likelihood of a full answer under a table, computed directly from the prefixes. */
static double s_loglik(int table, const char *ans) {
    double ll = 0;
    char k[MAXP + 1];
    size_t n = strlen(ans);
    for (size_t i = 0; i <= n; i++) {
        memcpy(k, ans, i);
        k[i] = 0;
        double pe, pa, pb, bins[3];
        s_probs(table, k, &pe, &pa, &pb, bins);
        double tot = pe + pa + pb;
        ll += log((i == n ? pe : ans[i] == 'A' ? pa : pb) / tot);
    }
    return ll;
}

Test(gen, closed_set_scores_every_answer_exactly) {
    /* Table 1, answers {A, BA, BB, ABB}: log-likelihoods
     *   A   = log(.5 * .4)            = -1.609
     *   BA  = log(.4 * .05 * .6)      = -4.42
     *   BB  = log(.4 * .05 * .6)      = -4.42
     *   ABB = log(.5 * .3 * .2 * .6)  = -3.51
     * so A wins. With the answer set {BA, ABB} ABB wins although greedy starts with A and
     * beam K=1 would never reach it: the search is exact. */
    const int32_t a0[] = {TA}, a1[] = {TB, TA}, a2[] = {TB, TB}, a3[] = {TA, TB, TB};
    char err[256];
    gen_trie_t *t = gen_trie_new();
    cr_assert_eq(gen_trie_add(t, a0, 1, 0, err, sizeof err), 0);
    cr_assert_eq(gen_trie_add(t, a1, 2, 1, err, sizeof err), 0);
    cr_assert_eq(gen_trie_add(t, a2, 2, 2, err, sizeof err), 0);
    cr_assert_eq(gen_trie_add(t, a3, 3, 3, err, sizeof err), 0);
    cr_assert_eq(gen_trie_size(t), 4);
    cr_assert_eq(gen_trie_depth(t), 4);
    cr_assert_eq(gen_trie_width(t), 3, "levels {A,B} {AB,BA,BB} {ABB}");
    cr_assert_neq(gen_trie_add(t, a1, 2, 9, err, sizeof err), 0, "duplicate answer accepted");
    cr_assert(strstr(err, "answer 1"), "%s", err);
    cr_assert_neq(gen_trie_add(t, a1, 0, 9, err, sizeof err), 0, "empty answer accepted");

    fake_t f;
    gen_step_i st = s_iface(&f, 1, 2);
    gen_opts_t o = gen_opts_default();
    o.len_penalty = 0;
    gen_hyp_t h[2];
    cr_assert_eq(gen_closed_set(&st, 2, t, &o, h, err, sizeof err), 0, "%s", err);
    for (int b = 0; b < 2; b++) {
        cr_assert_eq(h[b].answer, 0);
        cr_assert_eq(h[b].len, 1);
        NEAR(h[b].score, s_loglik(1, "A"));
    }
    /* Trie levels: root, {A,B}, {AB, BA, BB}, {ABB}: 4 steps, (1+2+3+1)*B rows. */
    cr_assert_eq(f.steps, 4);
    cr_assert_eq(f.rows_fed, 7 * 2);
    gen_hyps_free(h, 2);
    gen_trie_destroy(&t);
    cr_assert_null(t);

    t = gen_trie_new();
    cr_assert_eq(gen_trie_add(t, a1, 2, 0, err, sizeof err), 0);
    cr_assert_eq(gen_trie_add(t, a3, 3, 1, err, sizeof err), 0);
    st = s_iface(&f, 1, 1);
    cr_assert_eq(gen_closed_set(&st, 1, t, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].answer, 1);
    cr_assert_eq(h[0].len, 3);
    cr_assert_eq(h[0].tokens[0], TA);
    cr_assert_eq(h[0].tokens[1], TB);
    cr_assert_eq(h[0].tokens[2], TB);
    NEAR(h[0].score, s_loglik(1, "ABB"));
    NEAR(s_loglik(1, "ABB"), log(.5 * .3 * .2 * .6));
    gen_hyps_free(h, 1);
    gen_trie_destroy(&t);
}

Test(gen, closed_set_rejects_tokens_outside_the_vocabulary) {
    const int32_t bad[] = {TA, 99};
    char err[256];
    gen_trie_t *t = gen_trie_new();
    cr_assert_eq(gen_trie_add(t, bad, 2, 0, err, sizeof err), 0);
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 1);
    gen_opts_t o = gen_opts_default();
    gen_hyp_t h[1];
    cr_assert_neq(gen_closed_set(&st, 1, t, &o, h, err, sizeof err), 0);
    cr_assert(strstr(err, "99"), "%s", err);
    gen_trie_destroy(&t);
}

Test(gen, box_decodes_four_bins_only) {
    /* Table 4: A is the likeliest token everywhere, but only bins are allowed; the
     * preferred bins are 2,0,1,2. Each bin's probability is .3 / (.05+.5+.05+.3+.05+.05). */
    fake_t f;
    gen_step_i st = s_iface(&f, 4, 2);
    gen_opts_t o = gen_opts_default();
    o.bin_first = BIN0;
    o.n_bins = 3;
    gen_hyp_t h[2];
    char err[256];
    cr_assert_eq(gen_box(&st, 2, &o, h, err, sizeof err), 0, "%s", err);
    const int32_t want[4] = {BIN0 + 2, BIN0, BIN0 + 1, BIN0 + 2};
    for (int b = 0; b < 2; b++) {
        cr_assert_eq(h[b].len, 4);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(h[b].tokens[i], want[i], "token %d: %d", i, h[b].tokens[i]);
        NEAR(h[b].score, 4 * log(.3 / 1.0));
    }
    gen_hyps_free(h, 2);
    o.bin_first = 8;   /* bins would run past V */
    st = s_iface(&f, 4, 1);
    cr_assert_neq(gen_box(&st, 1, &o, h, err, sizeof err), 0);
    cr_assert(strstr(err, "location bins"), "%s", err);
}

Test(gen, bad_options_are_refused) {
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 1);
    gen_opts_t o = gen_opts_default();
    gen_hyp_t h[1];
    char err[256];
    o.max_len = 0;
    cr_assert_neq(gen_greedy(&st, 1, &o, h, err, sizeof err), 0);
    o = gen_opts_default();
    o.beam = 0;
    cr_assert_neq(gen_beam(&st, 1, &o, h, err, sizeof err), 0);
    cr_assert(strstr(err, "beam"), "%s", err);
    o = gen_opts_default();
    o.min_len = 40;
    cr_assert_neq(gen_beam(&st, 1, &o, h, err, sizeof err), 0);
}

Test(gen, specials_are_never_generated) {
    /* Table 1 with <pad>/<unk> far likelier than anything: the searches still give the
     * same sequences as without them (scores shift, not the choice). */
    char err[256];
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 1);
    f.pad_hot = 1;
    gen_opts_t o = gen_opts_default();
    o.beam = 2;
    gen_hyp_t h[1];
    cr_assert_eq(gen_greedy(&st, 1, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 1);
    cr_assert_eq(h[0].tokens[0], TA);
    gen_hyps_free(h, 1);
    st = s_iface(&f, 1, 1);
    f.pad_hot = 1;
    cr_assert_eq(gen_beam(&st, 1, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 1);
    cr_assert_eq(h[0].tokens[0], TB);
    gen_hyps_free(h, 1);
}

Test(gen, log_softmax_normalises) {
    float x[4] = {1, 2, 3, -INFINITY};
    gen_log_softmax(x, 4);
    double s = 0;
    for (int i = 0; i < 4; i++)
        s += exp(x[i]);
    NEAR(s, 1.0);
    NEAR(x[2] - x[1], 1.0);
    cr_assert(x[3] == -INFINITY);
}

Test(gen, first_token_continues_a_decoder_prompt) {
    /* opts.first replaces <s> as the first feed (the last token of a prompt the caller
     * fed already). Table 1 after "A": </s> .4 is the best -> greedy gives [] with log .4.
     * After "B": </s> .9 ranks first at t=0, so beam K=2 finishes [] with log .9 / 1;
     * at t=1 "BA</s>" and "BB</s>" (.05 * .6 each) finish too; [] wins. */
    char err[256];
    fake_t f;
    gen_step_i st = s_iface(&f, 1, 1);
    gen_opts_t o = gen_opts_default();
    const int32_t fa[1] = {TA}, fb[1] = {TB};
    o.first = fa;
    gen_hyp_t h[1];
    cr_assert_eq(gen_greedy(&st, 1, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 0);
    NEAR(h[0].score, log(.4));
    cr_assert_eq(f.len[0], 1, "the first feed went into the row's prefix");
    cr_assert_eq(f.pre[0][0], TA);
    gen_hyps_free(h, 1);
    st = s_iface(&f, 1, 1);
    o.first = fb;
    o.beam = 2;
    cr_assert_eq(gen_beam(&st, 1, &o, h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h[0].len, 0);
    NEAR(h[0].score, log(.9));
    gen_hyps_free(h, 1);
}
