/* test_metrics.c: the metrics library (stages/eval/metrics.c).
 *
 * Two kinds of checks: small cases computed by hand (the arithmetic is in the comments),
 * and, for BLEU-4, CIDEr-D and ROUGE-L, agreement with the independent Python reference
 * stages/eval/metrics_ref.py, run with /usr/bin/python3 at test time on fixed and on
 * seeded random corpora. (That reference was itself checked against coco-caption's
 * scorers: equal CIDEr-D and ROUGE-L to the last digit, equal BLEU-4 up to coco's 1e-15
 * count offset, which only matters when an n-gram order has no match.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "util.h"

#define EPS 1e-12

/* One reference per sample, from a plain array. */
static metric_refs_t *one_ref_each(const char *const *r, int n) {
    metric_refs_t *refs = util_calloc(n, sizeof *refs);
    for (int i = 0; i < n; i++)
        refs[i] = (metric_refs_t){&r[i], 1};
    return refs;
}

static double compute(const char *name, const char *const *hyps, const metric_refs_t *refs,
                      int n) {
    double v = -1;
    char err[256] = "";
    cr_assert_eq(metric_compute(name, hyps, refs, n, &v, err, sizeof err), 0, "%s: %s", name,
                 err);
    return v;
}

TestSuite(metrics);

/* ---------------------------------------------------------------- normalisation */

Test(metrics, normalize_lowercases_and_strips_punctuation) {
    char *s = metric_normalize("  A Dog's, RUNNING!\tfast ");
    cr_assert_str_eq(s, "a dog s running fast");
    free(s);
    /* Non-ASCII bytes are kept as they are (UTF-8 "é" survives, only ASCII folds). */
    s = metric_normalize("Caf\xc3\xa9 au LAIT.");
    cr_assert_str_eq(s, "caf\xc3\xa9 au lait");
    free(s);
    s = metric_normalize("?!...");
    cr_assert_str_eq(s, "");
    free(s);
    s = metric_normalize(NULL);
    cr_assert_str_eq(s, "");
    free(s);
}

Test(metrics, normalize_answer_drops_articles_and_writes_digits) {
    char *s = metric_normalize_answer("The TWO dogs.");
    cr_assert_str_eq(s, "2 dogs");
    free(s);
    s = metric_normalize_answer("an apple");
    cr_assert_str_eq(s, "apple");
    free(s);
}

/* ---------------------------------------------------------------- BLEU-4 */

Test(metrics, bleu_hand_computed_single_sample) {
    /* hyp "a b c d e", ref "a b c d f":
     *   p1 = 4/5 (a b c d), p2 = 3/4 (ab bc cd), p3 = 2/3, p4 = 1/2
     *   product = 0.8 * 0.75 * 0.6667 * 0.5 = 0.2, BLEU = 0.2^(1/4) = 0.668740...
     *   c = 5, r = 5: c > r is false, BP = exp(1 - 5/5) = 1. */
    const char *h[] = {"a b c d e"}, *r[] = {"a b c d f"};
    metric_refs_t *refs = one_ref_each(r, 1);
    cr_assert_float_eq(metric_bleu4(h, refs, 1), pow(0.2, 0.25), EPS);
    free(refs);
}

Test(metrics, bleu_brevity_penalty) {
    /* hyp "a b c d" (c = 4), ref "a b c d e f" (r = 6): every precision is 1,
     * BP = exp(1 - 6/4) = exp(-0.5) = 0.6065. */
    const char *h[] = {"a b c d"}, *r[] = {"a b c d e f"};
    metric_refs_t *refs = one_ref_each(r, 1);
    cr_assert_float_eq(metric_bleu4(h, refs, 1), exp(-0.5), EPS);
    free(refs);
}

Test(metrics, bleu_closest_reference_tie_takes_shorter) {
    /* hyp has 5 words; references have 4 and 6: both 1 away, the shorter (4) counts,
     * so c = 5 > r = 4 and BP = 1. All n-grams of the hyp are in the second reference:
     * BLEU = 1. Taking the longer one would give exp(1 - 6/5) = 0.8187. */
    const char *h[] = {"a b c d e"};
    const char *rr[] = {"a b c d", "a b c d e x"};
    metric_refs_t refs[] = {{rr, 2}};
    cr_assert_float_eq(metric_bleu4(h, refs, 1), 1.0, EPS);
}

Test(metrics, bleu_clipping_and_zero_order) {
    /* Papineni's example: "the" x7 against "the cat is on the mat": p1 = 2/7 (clipped),
     * no bigram matches, so BLEU-4 without smoothing is 0. */
    const char *h[] = {"the the the the the the the"}, *r[] = {"the cat is on the mat"};
    metric_refs_t *refs = one_ref_each(r, 1);
    cr_assert_float_eq(metric_bleu4(h, refs, 1), 0.0, EPS);
    /* An empty output has no n-grams at all: 0, not a division by zero. */
    const char *e[] = {""};
    cr_assert_float_eq(metric_bleu4(e, refs, 1), 0.0, EPS);
    free(refs);
}

Test(metrics, bleu_is_corpus_level) {
    /* Two samples: "a b c d" vs "a b c d" and "e f g h" vs "e f x h".
     * Corpus sums: p1 = (4+3)/8, p2 = (3+1)/6, p3 = (2+0)/4, p4 = (1+0)/2; c = r = 8.
     * BLEU = (7/8 * 4/6 * 2/4 * 1/2)^(1/4). A mean of sentence BLEUs would give
     * (1 + 0)/2 = 0.5 instead. */
    const char *h[] = {"a b c d", "e f g h"}, *r[] = {"a b c d", "e f x h"};
    metric_refs_t *refs = one_ref_each(r, 2);
    cr_assert_float_eq(metric_bleu4(h, refs, 2), pow(7.0 / 8 * 4.0 / 6 * 0.5 * 0.5, 0.25), EPS);
    free(refs);
}

/* ---------------------------------------------------------------- CIDEr-D */

Test(metrics, cider_identical_two_word_captions_score_5) {
    /* N = 2 samples; each n-gram occurs in one sample's references: idf = log 2.
     * Unigram and bigram vectors of hyp and ref are equal: cosine 1 each. There are
     * no 3- and 4-grams: 0. Same length: penalty 1. Score = (1 + 1 + 0 + 0)/4 * 10 = 5. */
    const char *h[] = {"x y", "z w"}, *r[] = {"x y", "z w"};
    metric_refs_t *refs = one_ref_each(r, 2);
    cr_assert_float_eq(metric_cider_d(h, refs, 2), 5.0, EPS);
    free(refs);
}

Test(metrics, cider_hand_computed_length_penalty) {
    /* Sample 1: hyp "x y z", ref "x y". Sample 2: hyp = ref = "p q" (scores 5 as above).
     * idf: x, y, "x y" occur in 1 of 2 samples: log 2; z, "y z", "x y z" occur in none:
     * log 2 - log(max(1, 0)) = log 2. Every weight is log 2 (L below).
     *   unigrams: h = (x L, y L, z L), r = (x L, y L): dot 2L^2, |h| = sqrt3 L,
     *             |r| = sqrt2 L: cos = 2/sqrt6 = 0.8165
     *   bigrams:  h = ("x y" L, "y z" L), r = ("x y" L): cos = 1/sqrt2 = 0.7071
     *   3-grams:  the reference has none (norm 0): 0; 4-grams: 0
     *   length (bigram count) 2 vs 1: delta 1, penalty exp(-1/72) = 0.98621
     *   score 1 = (0.8165 + 0.7071) * 0.98621 / 4 * 10 = 3.7565
     * CIDEr-D = (3.7565 + 5) / 2 = 4.378. */
    const char *h[] = {"x y z", "p q"}, *r[] = {"x y", "p q"};
    metric_refs_t *refs = one_ref_each(r, 2);
    double s1 = (2 / sqrt(6) + 1 / sqrt(2)) * exp(-1.0 / 72) / 4 * 10;
    cr_assert_float_eq(metric_cider_d(h, refs, 2), (s1 + 5) / 2, EPS);
    free(refs);
}

Test(metrics, cider_one_sample_is_zero) {
    /* log N = log 1 = 0: every idf weight is 0, as in coco-caption. */
    const char *h[] = {"a cat"}, *r[] = {"a cat"};
    metric_refs_t *refs = one_ref_each(r, 1);
    cr_assert_float_eq(metric_cider_d(h, refs, 1), 0.0, EPS);
    free(refs);
}

/* ---------------------------------------------------------------- ROUGE-L */

Test(metrics, rouge_l_hand_computed) {
    /* hyp "a b c d", ref "a c d e f": LCS = "a c d" = 3; P = 3/4, R = 3/5;
     * F = (1 + 1.44) * 0.75 * 0.6 / (0.6 + 1.44 * 0.75) = 1.098 / 1.68 = 0.653571. */
    const char *h[] = {"a b c d"}, *r[] = {"a c d e f"};
    metric_refs_t *refs = one_ref_each(r, 1);
    cr_assert_float_eq(metric_rouge_l(h, refs, 1), 1.098 / 1.68, EPS);
    free(refs);
}

/* ---------------------------------------------------------------- answers */

Test(metrics, accuracy_and_exact_match) {
    /* "Left" matches "left" once normalised (accuracy), not raw (exact match);
     * "dog" matches the second reference; "" matches nothing: 2/3 and 1/3. */
    const char *h[] = {"Left", "dog", ""};
    const char *r0[] = {"left"}, *r1[] = {"cat", "dog"}, *r2[] = {"x"};
    metric_refs_t refs[] = {{r0, 1}, {r1, 2}, {r2, 1}};
    cr_assert_float_eq(compute("accuracy", h, refs, 3), 2.0 / 3, EPS);
    cr_assert_float_eq(compute("exact_match", h, refs, 3), 1.0 / 3, EPS);
    /* NULL outputs count as empty ones. */
    const char *nh[] = {NULL, "dog", NULL};
    cr_assert_float_eq(compute("accuracy", nh, refs, 3), 1.0 / 3, EPS);
}

Test(metrics, vqa_score) {
    /* Ten human answers: "2" x2 and "two" x1 normalise to "2" (3 votes), "3" x1.
     *   "Two"  -> min(3/3, 1) = 1
     *   "3"    -> min(1/3, 1) = 1/3
     *   "four" -> 0
     * One reference: "yes" vs "yes" -> min(1/1, 1) = 1 (exact match).
     * Mean over the 4 samples = (1 + 1/3 + 0 + 1) / 4. */
    const char *ten[] = {"2", "2", "two", "3", "many", "lots", "some", "a few", "several", "x"};
    const char *yes[] = {"yes"};
    const char *h[] = {"Two", "3", "four", "yes"};
    metric_refs_t refs[] = {{ten, 10}, {ten, 10}, {ten, 10}, {yes, 1}};
    cr_assert_float_eq(compute("vqa_score", h, refs, 4), (1 + 1.0 / 3 + 0 + 1) / 4, EPS);
}

Test(metrics, f1_hand_computed) {
    /* "The cat sat" vs "a cat sat down": articles dropped, words {cat, sat} vs
     * {cat, sat, down}: 2 in common, P = 2/2, R = 2/3, F1 = 2 * 1 * 2/3 / (5/3) = 0.8.
     * Second sample: "" vs "" is 1 (SQuAD); third: "dog" vs {"cat", "dog"}: 1.
     * Mean = (0.8 + 1 + 1) / 3. */
    const char *h[] = {"The cat sat", "", "dog"};
    const char *r0[] = {"a cat sat down"}, *r1[] = {""}, *r2[] = {"cat", "dog"};
    metric_refs_t refs[] = {{r0, 1}, {r1, 1}, {r2, 2}};
    cr_assert_float_eq(compute("f1", h, refs, 3), (0.8 + 1 + 1) / 3, EPS);
    /* A repeated word earns at most as many matches as the reference holds:
     * "cat cat" vs "cat": common 1, P = 1/2, R = 1, F1 = 2/3. */
    const char *h2[] = {"cat cat"}, *r3[] = {"cat"};
    metric_refs_t refs2[] = {{r3, 1}};
    cr_assert_float_eq(compute("f1", h2, refs2, 1), 2.0 / 3, EPS);
}

Test(metrics, mcc_hand_computed) {
    /* Predictions yes yes no no yes, truth yes no no no yes:
     * TP = 2, FP = 1, TN = 2, FN = 0:
     *   (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 4 / sqrt(3*2*3*2) = 2/3.
     * The multi-class form gives the same: s = 5, c = 4, t = (2, 3), p = (3, 2):
     *   (4*5 - (3*2 + 2*3)) / sqrt((25 - 13)(25 - 13)) = 8/12. */
    const char *h[] = {"yes", "yes", "no", "no", "Yes"};
    const char *r[] = {"yes", "no", "no", "no", "yes"};
    metric_refs_t *refs = one_ref_each(r, 5);
    cr_assert_float_eq(compute("mcc", h, refs, 5), 2.0 / 3, EPS);
    /* A constant prediction: the denominator is 0, MCC is 0. */
    const char *c[] = {"no", "no", "no", "no", "no"};
    cr_assert_float_eq(compute("mcc", c, refs, 5), 0.0, EPS);
    /* All wrong on a balanced binary set: -1. */
    const char *w[] = {"no", "yes"}, *rw[] = {"yes", "no"};
    metric_refs_t *refs2 = one_ref_each(rw, 2);
    cr_assert_float_eq(compute("mcc", w, refs2, 2), -1.0, EPS);
    free(refs);
    free(refs2);
}

/* ---------------------------------------------------------------- boxes */

Test(metrics, iou_and_box_parsing) {
    double a[4] = {0, 0, 10, 10}, b[4] = {5, 0, 15, 10}, c[4] = {0, 0, 10, 8};
    /* a, b: intersection 5x10 = 50, union 100 + 100 - 50 = 150: 1/3.
     * a, c: intersection 80, union 100: 0.8. */
    cr_assert_float_eq(metric_iou(a, b), 1.0 / 3, EPS);
    cr_assert_float_eq(metric_iou(a, c), 0.8, EPS);
    double p[4];
    char err[256];
    cr_assert_eq(metric_parse_box("<bin_1> <bin_2> <bin_30> <bin_40>", p, err, sizeof err), 0);
    cr_assert(p[0] == 1 && p[1] == 2 && p[2] == 30 && p[3] == 40);
    cr_assert_eq(metric_parse_box("1.5, 2, 3 ,4", p, err, sizeof err), 0);
    cr_assert(p[0] == 1.5 && p[3] == 4);
    cr_assert_eq(metric_parse_box("1 2 3", p, err, sizeof err), -1);
    cr_assert(strstr(err, "3 numbers"), "%s", err);
    cr_assert_eq(metric_parse_box("1 2 3 4 5", p, err, sizeof err), -1);
    cr_assert_eq(metric_parse_box("1 2 x 4", p, err, sizeof err), -1);
    cr_assert(strstr(err, "column 5"), "%s", err);
    cr_assert_eq(metric_parse_box("5 5 1 1", p, err, sizeof err), -1);
    cr_assert_eq(metric_parse_box("<bin_> 1 2 3", p, err, sizeof err), -1);
}

Test(metrics, iou_acc) {
    /* Sample 0: IoU 0.8 (hit); 1: IoU 1/3 (miss); 2: output not a box (miss);
     * 3: second reference matches exactly (hit): 2/4. */
    const char *h[] = {"0 0 10 8", "5 0 15 10", "a dog", "<bin_0> <bin_0> <bin_9> <bin_9>"};
    const char *r0[] = {"0 0 10 10"}, *r3[] = {"50 50 60 60", "<bin_0> <bin_0> <bin_9> <bin_9>"};
    metric_refs_t refs[] = {{r0, 1}, {r0, 1}, {r0, 1}, {r3, 2}};
    cr_assert_float_eq(compute("iou_acc", h, refs, 4), 0.5, EPS);
    /* A reference that is not a box is an error that names the sample. */
    const char *bad[] = {"0 0 10"};
    metric_refs_t refs2[] = {{r0, 1}, {bad, 1}};
    double v;
    char err[256] = "";
    cr_assert_eq(metric_compute("iou_acc", h, refs2, 2, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "sample 1 reference 0"), "%s", err);
}

/* ---------------------------------------------------------------- WER, CER */

Test(metrics, wer_and_cer) {
    /* "the cat sat on the mat" -> "the cat sit on mat": 1 substitution + 1 deletion
     * over 6 words; "hello world" -> "hello world": 0 over 2. WER = 2/8 (corpus). */
    const char *h[] = {"the cat sit on mat", "Hello, world!"};
    const char *r[] = {"the cat sat on the mat", "hello world"};
    metric_refs_t *refs = one_ref_each(r, 2);
    cr_assert_float_eq(compute("wer", h, refs, 2), 2.0 / 8, EPS);
    free(refs);
    /* The closest of several references counts: "a b" vs {"x y z", "a b c"}:
     * distances 3 (over 3 words) and 1 (over 3 words): 1/3. */
    const char *h2[] = {"a b"};
    const char *rr[] = {"x y z", "a b c"};
    metric_refs_t refs2[] = {{rr, 2}};
    cr_assert_float_eq(compute("wer", h2, refs2, 1), 1.0 / 3, EPS);
    /* CER counts code points: "cafe" vs "café" is 1 substitution over 4 characters. */
    const char *h3[] = {"cafe"}, *r3[] = {"caf\xc3\xa9"};
    metric_refs_t *refs3 = one_ref_each(r3, 1);
    cr_assert_float_eq(compute("cer", h3, refs3, 1), 0.25, EPS);
    free(refs3);
    /* References without a word make WER undefined: an error, not a division by 0. */
    const char *h4[] = {"a"}, *r4[] = {"..."};
    metric_refs_t *refs4 = one_ref_each(r4, 1);
    double v;
    char err[256] = "";
    cr_assert_eq(metric_compute("wer", h4, refs4, 1, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "no words"), "%s", err);
    free(refs4);
    cr_assert(!metric_higher_is_better("wer"));
    cr_assert(metric_higher_is_better("cider"));
}

/* ---------------------------------------------------------------- baseline */

Test(metrics, baseline_answers) {
    /* References yes, yes, no, left: the constant "yes" is right on 2 of 4. */
    const char *r[] = {"yes", "Yes.", "no", "left"};
    metric_refs_t *refs = one_ref_each(r, 4);
    metric_baseline_t b;
    char err[256] = "";
    cr_assert_eq(metric_baseline("accuracy", refs, 4, &b, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(b.output, "yes");
    cr_assert_float_eq(b.value, 0.5, EPS);
    cr_assert_str_eq(b.kind, "constant answer");
    metric_baseline_clear(&b);
    cr_assert_null(b.output);
    free(refs);
}

Test(metrics, baseline_caption_equals_compute_of_the_constant) {
    const char *r[] = {"a dog on the left", "a dog on the left", "a cat at the top",
                       "a dog at the top", "a red apple in the middle"};
    metric_refs_t *refs = one_ref_each(r, 5);
    const char *names[] = {"cider", "bleu", "rouge_l"};
    for (int k = 0; k < 3; k++) {
        metric_baseline_t b;
        char err[256] = "";
        cr_assert_eq(metric_baseline(names[k], refs, 5, &b, err, sizeof err), 0, "%s", err);
        cr_assert_str_eq(b.kind, "constant caption");
        /* The reported value is the metric of the reported output, and no other
         * reference caption, used as the constant, does better. */
        const char *h[5];
        for (int i = 0; i < 5; i++)
            h[i] = b.output;
        cr_assert_float_eq(b.value, compute(names[k], h, refs, 5), EPS);
        for (int c = 0; c < 5; c++) {
            for (int i = 0; i < 5; i++)
                h[i] = r[c];
            cr_assert_leq(compute(names[k], h, refs, 5), b.value + EPS, "%s: '%s' beats '%s'",
                          names[k], r[c], b.output);
        }
        metric_baseline_clear(&b);
    }
    free(refs);
}

Test(metrics, baseline_wer_is_one_word) {
    /* Words: the x2, cat x2, dog x1, a x1. Constant "cat": errors 1 + 2 + 1 = 4;
     * "the": 1 + 1 + 2 = 4; over 6 reference words: 2/3. Ties keep the first in
     * (count, byte) order: "cat". */
    const char *r[] = {"the cat", "the dog", "a cat"};
    metric_refs_t *refs = one_ref_each(r, 3);
    metric_baseline_t b;
    char err[256] = "";
    cr_assert_eq(metric_baseline("wer", refs, 3, &b, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(b.output, "cat");
    cr_assert_float_eq(b.value, 4.0 / 6, EPS);
    cr_assert_str_eq(b.kind, "constant word");
    metric_baseline_clear(&b);
    free(refs);
}

Test(metrics, baseline_box_median) {
    /* Three different boxes; the coordinate-wise median (1 1 11 11) overlaps each of
     * them with IoU >= 0.5 (e.g. with 0 0 10 10: 81 / (100 + 100 - 81) = 0.68), while
     * each reference box used as the constant misses the others' thresholds... except
     * that the best is reported: it must score 1. */
    const char *r[] = {"0 0 10 10", "1 1 11 11", "2 2 12 12"};
    metric_refs_t *refs = one_ref_each(r, 3);
    metric_baseline_t b;
    char err[256] = "";
    cr_assert_eq(metric_baseline("iou_acc", refs, 3, &b, err, sizeof err), 0, "%s", err);
    cr_assert_float_eq(b.value, 1.0, EPS);
    cr_assert_str_eq(b.output, "1 1 11 11");
    metric_baseline_clear(&b);
    free(refs);
}

/* ---------------------------------------------------------------- bad input */

Test(metrics, bad_input_is_an_error) {
    const char *h[] = {"a"}, *r[] = {"a"};
    metric_refs_t *refs = one_ref_each(r, 1);
    double v;
    char err[256] = "";
    cr_assert_eq(metric_compute("ciderr", h, refs, 1, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown metric 'ciderr'") && strstr(err, "cider"), "%s", err);
    cr_assert_eq(metric_compute("cider", h, refs, 0, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "no samples"), "%s", err);
    metric_refs_t none[] = {{NULL, 0}};
    cr_assert_eq(metric_compute("bleu", h, none, 1, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "sample 0 has no reference"), "%s", err);
    const char *nullref[] = {NULL};
    metric_refs_t nr[] = {{nullref, 1}};
    cr_assert_eq(metric_compute("accuracy", h, nr, 1, &v, err, sizeof err), -1);
    metric_baseline_t b;
    cr_assert_eq(metric_baseline("accuracy", none, 1, &b, err, sizeof err), -1);
    cr_assert_null(b.output);
    cr_assert(metric_known("vqa_score") && metric_known("mcc") && metric_known("map") &&
              !metric_known("mAP") && !metric_known(NULL));
    free(refs);
}

/* ---------------------------------------------------------------- detection: map */

/* Boxes in bin units. A at the left, B at the right, C at the top: IoU(A, B) = 0. */
#define BOX_A "<bin_0> <bin_0> <bin_10> <bin_10>"
#define BOX_A2 "<bin_1> <bin_0> <bin_11> <bin_10>"   /* IoU with A = 90/110 = 0.82 */
#define BOX_B "<bin_20> <bin_0> <bin_30> <bin_10>"
#define BOX_C "<bin_0> <bin_20> <bin_10> <bin_30>"

Test(metrics, map_parses_generated_and_reference_objects) {
    metric_det_t *d;
    int n;
    char err[200];
    /* generated form: bins glued, words with their leading space */
    cr_assert_eq(metric_parse_detections("<bin_1><bin_2><bin_30><bin_40> Red apple<bin_5>"
                                         "<bin_6><bin_7><bin_8> car", false, &d, &n, err,
                                         sizeof err), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(d[0].label, "red apple");
    cr_assert_str_eq(d[1].label, "car");
    cr_assert(d[0].box[0] == 1 && d[0].box[3] == 40 && d[0].valid && d[1].valid);
    metric_dets_free(d, n);
    /* a model's stray tokens: the partial box is dropped, the rest kept */
    cr_assert_eq(metric_parse_detections("junk <bin_1><bin_2> x <bin_1><bin_2><bin_3><bin_4> "
                                         "cat <bin_9>", false, &d, &n, err, sizeof err), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(d[0].label, "cat");
    metric_dets_free(d, n);
    /* references are strict */
    static const char *bad[] = {"<bin_1> <bin_2> <bin_3> cat", "cat " BOX_A " dog",
                                BOX_A, "<bin_5> <bin_0> <bin_1> <bin_10> cat",
                                BOX_A " cat <bin_x>"};
    static const char *why[] = {"3 location tokens", "text before the first box",
                                "no label", "x1 <= x0", "bad location token"};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(metric_parse_detections(bad[i], true, &d, &n, err, sizeof err), -1,
                     "%s", bad[i]);
        cr_assert(strstr(err, why[i]), "%s: %s", bad[i], err);
        cr_assert_null(d);
    }
    const char *h[] = {BOX_A " cat"};
    const char *r[] = {"<bin_1> <bin_2> cat"};
    metric_refs_t *refs = one_ref_each(r, 1);
    double v;
    cr_assert_eq(metric_compute("map", h, refs, 1, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "sample 0 reference"), "%s", err);
    free(refs);
}

/* The hand-computed cases (VOC all-point AP, IoU >= 0.5, mean over the references'
 * classes). */
Test(metrics, map_hand_computed) {
    static const char *refs2[] = {BOX_A " cat", BOX_B " cat"};
    metric_refs_t *r2 = one_ref_each(refs2, 2);
    /* perfect, in any spelling */
    const char *perfect[] = {"<bin_0><bin_0><bin_10><bin_10> Cat", BOX_B " cat"};
    cr_assert_float_eq(compute("map", perfect, r2, 2), 1.0, EPS);
    /* a box that overlaps enough still counts */
    const char *close[] = {BOX_A2 " cat", BOX_B " cat"};
    cr_assert_float_eq(compute("map", close, r2, 2), 1.0, EPS);
    /* one miss: recall 1/2 at precision 1 */
    const char *miss[] = {BOX_A " cat", ""};
    cr_assert_float_eq(compute("map", miss, r2, 2), 0.5, EPS);
    /* one false positive ranked below the hits costs nothing ... */
    const char *fp_after[] = {BOX_A " cat" BOX_C " cat", BOX_B " cat"};
    cr_assert_float_eq(compute("map", fp_after, r2, 2), 1.0, EPS);
    /* ... ranked above one of them: ranks (0,img0) FP, (0,img1) TP, (1,img0) TP:
     * precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> envelope 2/3 -> AP 2/3 */
    const char *fp_first[] = {BOX_C " cat" BOX_A " cat", BOX_B " cat"};
    cr_assert_float_eq(compute("map", fp_first, r2, 2), 2.0 / 3.0, EPS);
    /* a duplicate of a found object is a false positive: (0,0) TP, (1,0) dup FP,
     * (1,1) TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2*1 + 1/2*2/3 */
    const char *dup[] = {BOX_A " cat" BOX_A " cat", BOX_C " dog" BOX_B " cat"};
    cr_assert_float_eq(compute("map", dup, r2, 2), 0.5 + 1.0 / 3.0, EPS);
    free(r2);

    /* wrong class: two classes; the model calls both objects dog.
     * cat: never named -> AP 0. dog: (0,img0) FP, (0,img1) TP -> AP 1/2. mAP 1/4. */
    static const char *refs3[] = {BOX_A " cat", BOX_B " dog"};
    metric_refs_t *r3 = one_ref_each(refs3, 2);
    const char *wrong[] = {BOX_A " dog", BOX_B " dog"};
    cr_assert_float_eq(compute("map", wrong, r3, 2), 0.25, EPS);
    /* right classes, one object at the wrong place: cat AP 1, dog AP 0 -> 1/2 */
    const char *place[] = {BOX_A " cat", BOX_C " dog"};
    cr_assert_float_eq(compute("map", place, r3, 2), 0.5, EPS);
    /* a label no reference has costs nothing */
    const char *extra[] = {BOX_A " cat" BOX_A " zebra", BOX_B " dog"};
    cr_assert_float_eq(compute("map", extra, r3, 2), 1.0, EPS);
    /* several objects per sample, in any order */
    free(r3);
    static const char *refs4[] = {BOX_A " cat " BOX_B " dog"};
    metric_refs_t *r4 = one_ref_each(refs4, 1);
    const char *swapped[] = {BOX_B " dog" BOX_A " cat"};
    cr_assert_float_eq(compute("map", swapped, r4, 1), 1.0, EPS);
    free(r4);
}

/* The constant baseline: the best fixed object list among the references' lists and
 * single objects. "A cat B dog": cat (0,0) TP, (0,1) TP, (0,2) FP -> AP 2/3; dog (1,0)
 * TP, (1,1) FP, (1,2) FP -> AP 1/2; mAP 7/12. "A cat" alone: 2/3 and 0 -> 1/3; "A cat C
 * dog": 2/3 and 1/4 -> 11/24. */
Test(metrics, map_baseline_is_a_constant_object_list) {
    static const char *refs[] = {BOX_A " cat " BOX_B " dog", BOX_A " cat " BOX_C " dog",
                                 BOX_B " cat"};
    metric_refs_t *r = one_ref_each(refs, 3);
    metric_baseline_t b;
    char err[200];
    cr_assert_eq(metric_baseline("map", r, 3, &b, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(b.kind, "constant objects");
    cr_assert_str_eq(b.output, BOX_A " cat " BOX_B " dog");
    cr_assert_float_eq(b.value, 7.0 / 12.0, EPS);
    cr_assert_geq(b.candidates, 6);
    /* and it is what compute gives for that output */
    const char *h[] = {b.output, b.output, b.output};
    cr_assert_float_eq(compute("map", h, r, 3), b.value, EPS);
    metric_baseline_clear(&b);
    free(r);
}

/* ---------------------------------------------------------------- Python reference */

typedef struct {
    int n;
    const char **hyps;        /* (n) */
    metric_refs_t *refs;      /* (n) */
} corpus_t;

static void json_str(FILE *f, const char *s) {
    char buf[1024];
    util_json_escape(s, buf, sizeof buf);
    fprintf(f, "\"%s\"", buf);
}

/* A seeded random corpus over a 12-word vocabulary: 1-4 references of 2-10 words per
 * sample, and a hypothesis that is the first reference with about a quarter of its words
 * replaced and some dropped, so every order of BLEU and CIDEr-D has matches and misses. */
static corpus_t random_corpus(uint64_t seed, int n, char *pool, size_t poolsz, size_t *used) {
    static const char *vocab[] = {"a", "the", "dog", "cat", "on", "left", "right", "red",
                                  "ball", "runs", "big", "in"};
    util_rng_t rng = {seed};
    corpus_t c = {n, util_calloc(n, sizeof(char *)), util_calloc(n, sizeof(metric_refs_t))};
    for (int i = 0; i < n; i++) {
        int nr = 1 + (int)(util_rng_next(&rng) % 4);
        const char **rs = util_calloc(nr, sizeof(char *));
        int first[10], nfirst = 0;
        for (int s = 0; s < nr; s++) {
            int len = 2 + (int)(util_rng_next(&rng) % 9);
            rs[s] = pool + *used;
            for (int w = 0; w < len; w++) {
                int k = (int)(util_rng_next(&rng) % 12);
                if (s == 0)
                    first[nfirst++] = k;
                *used += snprintf(pool + *used, poolsz - *used, "%s%s", w ? " " : "", vocab[k]);
            }
            (*used)++;   /* keep the NUL */
        }
        c.hyps[i] = pool + *used;
        int out = 0;
        for (int w = 0; w < nfirst; w++) {
            uint64_t r = util_rng_next(&rng) % 8;
            if (r == 0)
                continue;                                     /* dropped */
            int k = r <= 2 ? (int)(util_rng_next(&rng) % 12) : first[w];   /* replaced */
            *used += snprintf(pool + *used, poolsz - *used, "%s%s", out++ ? " " : "", vocab[k]);
        }
        (*used)++;
        OFA_ASSERT(*used < poolsz);
        c.refs[i] = (metric_refs_t){rs, nr};
    }
    return c;
}

Test(metrics, agrees_with_python_reference) {
    const char *py = "/usr/bin/python3";
    if (access(py, X_OK) != 0)
        cr_skip_test("%s not found: the Python cross-check needs it", py);
    /* Fixed corpora (captions as this project makes them, multi-reference COCO-like
     * sentences, repeated words, punctuation and case) plus seeded random ones. */
    static const char *h0[] = {"a string of garlic on the left", "an airplane in the middle",
                               "a koala at the top"};
    static const char *r0[] = {"a string of garlic on the left", "an airplane at the bottom",
                               "a pig at the top"};
    static const char *h1[] = {"The cat sat on the mat.", "a dog runs in the park",
                               "two birds fly over a lake"};
    static const char *r1a[] = {"the cat is sitting on the mat", "A cat sits on a mat!"};
    static const char *r1b[] = {"a dog is running in a park", "the dog runs in the park"};
    static const char *r1c[] = {"birds flying over the lake", "two birds fly above a lake"};
    static const char *h2[] = {"a a a a", "the the the the the"};
    static const char *r2a[] = {"a cat on a mat", "a a b"};
    static const char *r2b[] = {"the quick brown fox jumps", "the lazy dog"};
    metric_refs_t f0[3], f1[] = {{r1a, 2}, {r1b, 2}, {r1c, 2}}, f2[] = {{r2a, 2}, {r2b, 2}};
    for (int i = 0; i < 3; i++)
        f0[i] = (metric_refs_t){&r0[i], 1};

    enum { NFIX = 3, NRAND = 6 };
    corpus_t cases[NFIX + NRAND] = {{3, h0, f0}, {3, h1, f1}, {2, h2, f2}};
    static char pool[1 << 16];
    size_t used = 0;
    for (int k = 0; k < NRAND; k++)
        cases[NFIX + k] = random_corpus(1000 + k, 5 + 7 * k, pool, sizeof pool, &used);

    char dir[] = "/tmp/ofa_metrics_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], cmd[512];
    snprintf(path, sizeof path, "%s/cases.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "{\"cases\": [");
    for (int k = 0; k < NFIX + NRAND; k++) {
        fprintf(f, "%s{\"hyps\": [", k ? ", " : "");
        for (int i = 0; i < cases[k].n; i++) {
            fprintf(f, i ? ", " : "");
            json_str(f, cases[k].hyps[i]);
        }
        fprintf(f, "], \"refs\": [");
        for (int i = 0; i < cases[k].n; i++) {
            fprintf(f, "%s[", i ? ", " : "");
            for (int r = 0; r < cases[k].refs[i].nrefs; r++) {
                fprintf(f, r ? ", " : "");
                json_str(f, cases[k].refs[i].refs[r]);
            }
            fprintf(f, "]");
        }
        fprintf(f, "]}");
    }
    fprintf(f, "]}\n");
    fclose(f);

    snprintf(cmd, sizeof cmd, "%s %s/stages/eval/metrics_ref.py %s", py, OFA_SOURCE_DIR, path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    int nonzero_bleu = 0;
    for (int k = 0; k < NFIX + NRAND; k++) {
        double want[3];
        cr_assert_eq(fscanf(p, "%lf %lf %lf", &want[0], &want[1], &want[2]), 3,
                     "case %d: no output from %s", k, cmd);
        const char *const *h = cases[k].hyps;
        double got[3] = {metric_bleu4(h, cases[k].refs, cases[k].n),
                         metric_cider_d(h, cases[k].refs, cases[k].n),
                         metric_rouge_l(h, cases[k].refs, cases[k].n)};
        static const char *names[] = {"bleu", "cider", "rouge_l"};
        for (int m = 0; m < 3; m++)
            cr_expect(fabs(got[m] - want[m]) <= 1e-9 + 1e-9 * fabs(want[m]),
                      "case %d %s: C %.17g, Python %.17g", k, names[m], got[m], want[m]);
        nonzero_bleu += want[0] > 0;
    }
    cr_assert_eq(pclose(p), 0, "%s failed", cmd);
    /* The comparison must exercise the full BLEU formula, not only its zero case. */
    cr_assert_geq(nonzero_bleu, 3);
    unlink(path);
    rmdir(dir);
    for (int k = NFIX; k < NFIX + NRAND; k++) {
        for (int i = 0; i < cases[k].n; i++)
            free((void *)cases[k].refs[i].refs);
        free(cases[k].hyps);
        free(cases[k].refs);
    }
}

/* map against metrics_ref.py's voc_map on seeded random detection corpora: objects at
 * four places of a 40-bin grid with jitter, four classes; outputs that find most objects
 * (boxes moved enough that some IoUs fall under 0.5), with wrong labels, duplicates,
 * extra boxes, inverted boxes and shuffled order. Python gets the numbers, C the text. */
Test(metrics, map_agrees_with_python_voc_eval) {
    const char *py = "/usr/bin/python3";
    if (access(py, X_OK) != 0)
        cr_skip_test("%s not found: the Python cross-check needs it", py);
    static const char *cls[] = {"cat", "dog", "red car", "teddy bear"};
    static const int place[4][2] = {{2, 10}, {20, 10}, {10, 2}, {10, 20}};
    enum { NCASE = 8, NMAX = 40 };
    char dir[] = "/tmp/ofa_map_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], cmd[512];
    snprintf(path, sizeof path, "%s/dets.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    static char hyp[NCASE][NMAX][1024], ref[NCASE][NMAX][1024];
    int ns[NCASE];
    util_rng_t rng = {77};
    fprintf(f, "{\"cases\": [");
    for (int k = 0; k < NCASE; k++) {
        int n = ns[k] = 5 + 5 * k % NMAX;
        char hj[1 << 14] = "", rj[1 << 14] = "";
        size_t hl = 0, rl = 0;
        for (int i = 0; i < n; i++) {
            int box[8][4], lab[8], nh = 0, no = 1 + (int)(util_rng_next(&rng) % 3);
            int hb[16][4], hlab[16];
            hyp[k][i][0] = ref[k][i][0] = 0;
            rl += snprintf(rj + rl, sizeof rj - rl, "%s[", i ? ", " : "");
            hl += snprintf(hj + hl, sizeof hj - hl, "%s[", i ? ", " : "");
            for (int o = 0; o < no; o++) {
                const int *pl = place[util_rng_next(&rng) % 4];
                int x = pl[0] + (int)(util_rng_next(&rng) % 5), y = pl[1] + (int)(util_rng_next(&rng) % 5);
                int w = 12 + (int)(util_rng_next(&rng) % 6), h = 12 + (int)(util_rng_next(&rng) % 6);
                int b[4] = {x, y, x + w, y + h};
                memcpy(box[o], b, sizeof b);
                lab[o] = (int)(util_rng_next(&rng) % 4);
                snprintf(ref[k][i] + strlen(ref[k][i]), 1024 - strlen(ref[k][i]),
                         "%s<bin_%d> <bin_%d> <bin_%d> <bin_%d> %s", o ? " " : "", b[0], b[1],
                         b[2], b[3], cls[lab[o]]);
                rl += snprintf(rj + rl, sizeof rj - rl, "%s[%d, %d, %d, %d, \"%s\"]",
                               o ? ", " : "", b[0], b[1], b[2], b[3], cls[lab[o]]);
                double u = util_rng_uniform(&rng);
                if (u < 0.75) {   /* found, moved by up to 3 bins */
                    int *q = hb[nh];
                    for (int d = 0; d < 4; d++)
                        q[d] = b[d] + (int)(util_rng_next(&rng) % 7) - 3;
                    hlab[nh++] = util_rng_uniform(&rng) < 0.15 ? (lab[o] + 1) % 4 : lab[o];
                    if (util_rng_uniform(&rng) < 0.15) {   /* duplicate */
                        memcpy(hb[nh], hb[nh - 1], sizeof hb[0]);
                        hlab[nh] = hlab[nh - 1];
                        nh++;
                    }
                }
            }
            if (util_rng_uniform(&rng) < 0.3) {   /* an extra box, sometimes inverted */
                const int *pl = place[util_rng_next(&rng) % 4];
                int inv = util_rng_uniform(&rng) < 0.3;
                int q[4] = {pl[0], pl[1], pl[0] + 14, pl[1] + 14};
                if (inv)
                    q[0] = pl[0] + 20;
                memcpy(hb[nh], q, sizeof q);
                hlab[nh++] = (int)(util_rng_next(&rng) % 4);
            }
            for (int a = nh - 1; a > 0; a--) {   /* shuffle the output's order */
                int b = (int)(util_rng_next(&rng) % (uint64_t)(a + 1)), t[4], tl = hlab[a];
                memcpy(t, hb[a], sizeof t);
                memcpy(hb[a], hb[b], sizeof t);
                memcpy(hb[b], t, sizeof t);
                hlab[a] = hlab[b];
                hlab[b] = tl;
            }
            for (int o = 0; o < nh; o++) {
                for (int d = 0; d < 4; d++)
                    if (hb[o][d] < 0)
                        hb[o][d] = 0;
                snprintf(hyp[k][i] + strlen(hyp[k][i]), 1024 - strlen(hyp[k][i]),
                         "<bin_%d><bin_%d><bin_%d><bin_%d> %s", hb[o][0], hb[o][1], hb[o][2],
                         hb[o][3], cls[hlab[o]]);
                hl += snprintf(hj + hl, sizeof hj - hl, "%s[%d, %d, %d, %d, \"%s\"]",
                               o ? ", " : "", hb[o][0], hb[o][1], hb[o][2], hb[o][3],
                               cls[hlab[o]]);
            }
            rl += snprintf(rj + rl, sizeof rj - rl, "]");
            hl += snprintf(hj + hl, sizeof hj - hl, "]");
        }
        fprintf(f, "%s{\"hyps\": [%s], \"refs\": [%s]}", k ? ", " : "", hj, rj);
    }
    fprintf(f, "]}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s/stages/eval/metrics_ref.py --map %s", py, OFA_SOURCE_DIR,
             path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    int between = 0;
    for (int k = 0; k < NCASE; k++) {
        double want;
        cr_assert_eq(fscanf(p, "%lf", &want), 1, "case %d: no output from %s", k, cmd);
        const char *hs[NMAX], *rs[NMAX];
        for (int i = 0; i < ns[k]; i++)
            hs[i] = hyp[k][i], rs[i] = ref[k][i];
        metric_refs_t *refs = one_ref_each(rs, ns[k]);
        double got = compute("map", hs, refs, ns[k]);
        cr_expect(fabs(got - want) <= 1e-12, "case %d: C %.17g, Python %.17g", k, got, want);
        between += want > 0.2 && want < 0.95;
        cr_log_info("map case %d: %d samples, %.4f", k, ns[k], want);
        free(refs);
    }
    cr_assert_eq(pclose(p), 0, "%s failed", cmd);
    /* the cases must be neither trivial nor hopeless */
    cr_assert_geq(between, NCASE - 1);
    unlink(path);
    rmdir(dir);
}

/* ---------------------------------------------------------------- solved_acc */

/* A 4x4 puzzle from data/sudoku's generator and its unique solution (boxes 2x2). */
static const char *SUDOKU_PUZZLE = "0 1 2 0 | 0 4 3 0 | 0 0 0 0 | 4 0 0 3";
static const char *SUDOKU_SOLUTION = "3 1 2 4 | 2 4 3 1 | 1 3 4 2 | 4 2 1 3";

Test(metrics, sudoku_check_hand_made_grids) {
    char why[200];
    cr_assert_eq(metric_sudoku_check(SUDOKU_SOLUTION, SUDOKU_PUZZLE, why, sizeof why), 1, "%s", why);
    /* Separators do not matter, only the numbers in order. */
    cr_assert_eq(metric_sudoku_check("3124 2431 1342 4213", SUDOKU_PUZZLE, why, sizeof why), 0,
                 "3124 is one number, not four cells");
    cr_assert_eq(metric_sudoku_check("3,1,2,4,2,4,3,1,1,3,4,2,4,2,1,3", SUDOKU_PUZZLE, why,
                                     sizeof why), 1, "%s", why);
    /* Rows 1 and 2 swapped: every row, column and box still holds 1..4, but the given
     * 1 at cell 2 is now 4: not a completion of this puzzle. */
    cr_assert_eq(metric_sudoku_check("2 4 3 1 | 3 1 2 4 | 1 3 4 2 | 4 2 1 3", SUDOKU_PUZZLE,
                                     why, sizeof why), 0);
    cr_assert(strstr(why, "cell 2 is 4, the given is 1"), "%s", why);
    /* Consistent with the givens but a repeated number in a row and a column. */
    cr_assert_eq(metric_sudoku_check("3 1 2 4 | 2 4 3 1 | 1 3 4 2 | 4 2 2 3", SUDOKU_PUZZLE,
                                     why, sizeof why), 0);
    cr_assert(strstr(why, "repeats 2"), "%s", why);
    /* Columns and boxes: every row a permutation, column 1 repeats. */
    cr_assert_eq(metric_sudoku_check("1 2 3 4 | 1 2 3 4 | 1 2 3 4 | 1 2 3 4",
                                     "0 0 0 0 | 0 0 0 0 | 0 0 0 0 | 0 0 0 0", why, sizeof why), 0);
    cr_assert(strstr(why, "column 1 repeats 1"), "%s", why);
    /* Rows and columns Latin, a 2x2 box not: a Latin square that is no sudoku. */
    cr_assert_eq(metric_sudoku_check("1 2 3 4 | 2 3 4 1 | 3 4 1 2 | 4 1 2 3",
                                     "0 0 0 0 | 0 0 0 0 | 0 0 0 0 | 0 0 0 0", why, sizeof why), 0);
    cr_assert(strstr(why, "box 1 repeats 2"), "%s", why);
    /* Wrong size, out-of-range numbers, empty output. */
    cr_assert_eq(metric_sudoku_check("3 1 2 4 | 2 4 3 1 | 1 3 4 2 | 4 2 1", SUDOKU_PUZZLE, why,
                                     sizeof why), 0);
    cr_assert(strstr(why, "15 cells, the puzzle has 16"), "%s", why);
    cr_assert_eq(metric_sudoku_check("3 1 2 4 | 2 4 3 1 | 1 3 4 2 | 4 2 1 5", SUDOKU_PUZZLE, why,
                                     sizeof why), 0);
    cr_assert_eq(metric_sudoku_check("", SUDOKU_PUZZLE, why, sizeof why), 0);
    cr_assert_eq(metric_sudoku_check(NULL, SUDOKU_PUZZLE, NULL, 0), 0);
    /* A puzzle that is not a grid. */
    cr_assert_eq(metric_sudoku_check(SUDOKU_SOLUTION, "1 2 3", why, sizeof why), -1);
    cr_assert(strstr(why, "3 cells"), "%s", why);
    /* The givens may sit inside the prompt's words. */
    cr_assert_eq(metric_sudoku_check(SUDOKU_SOLUTION,
                                     "\" 0 1 2 0 | 0 4 3 0 | 0 0 0 0 | 4 0 0 3 \" . solve the sudoku .",
                                     why, sizeof why), 1, "%s", why);
}

/* A 9x9 grid: valid as a whole, with a third of its cells as the givens; one wrong cell. */
Test(metrics, sudoku_9x9) {
    const char *sol = "534678912672195348198342567859761423426853791713924856961537284287419635345286179";
    char grid[400] = "", puzzle[400] = "", why[200];
    size_t o = 0, p = 0;
    for (int i = 0; i < 81; i++) {
        o += (size_t)snprintf(grid + o, sizeof grid - o, "%c%s", sol[i], i % 9 == 8 ? " | " : " ");
        p += (size_t)snprintf(puzzle + p, sizeof puzzle - p, "%c ", i % 3 == 0 ? sol[i] : '0');
    }
    cr_assert_eq(metric_sudoku_check(grid, puzzle, why, sizeof why), 1, "%s", why);
    grid[0] = '9';
    cr_assert_eq(metric_sudoku_check(grid, puzzle, why, sizeof why), 0);
    cr_assert(strstr(why, "cell 1 is 9, the given is 5"), "%s", why);
    /* A 9-digit row where a box repeats although rows and columns would not: a cyclic
     * Latin square (row r = 1..9 shifted by r) is no sudoku. */
    o = 0;
    for (int r = 0; r < 9; r++)
        for (int c = 0; c < 9; c++)
            o += (size_t)snprintf(grid + o, sizeof grid - o, "%d ", (r + c) % 9 + 1);
    memset(puzzle, 0, sizeof puzzle);
    for (int i = 0; i < 81; i++)
        strcat(puzzle, "0 ");
    cr_assert_eq(metric_sudoku_check(grid, puzzle, why, sizeof why), 0);
    cr_assert(strstr(why, "box 1 repeats"), "%s", why);
}

Test(metrics, solved_acc_with_and_without_the_puzzle) {
    /* A 4x4 puzzle with two completions: blanking the rectangle 1 2 / 2 1 of rows 1 and
     * 3, columns 1 and 2, of the first grid lets it be filled either way. */
    const char *puzzle = "0 0 3 4 | 3 4 1 2 | 0 0 4 3 | 4 3 2 1";
    const char *ref = "1 2 3 4 | 3 4 1 2 | 2 1 4 3 | 4 3 2 1";
    const char *other = "2 1 3 4 | 3 4 1 2 | 1 2 4 3 | 4 3 2 1";
    char why[200];
    cr_assert_eq(metric_sudoku_check(ref, puzzle, why, sizeof why), 1, "%s", why);
    cr_assert_eq(metric_sudoku_check(other, puzzle, why, sizeof why), 1, "%s", why);
    const char *r0[2] = {ref, puzzle}, *r1[2] = {ref, puzzle}, *r2[2] = {ref, puzzle},
               *r3[1] = {ref};
    metric_refs_t refs[4] = {{r0, 2}, {r1, 2}, {r2, 2}, {r3, 1}};
    const char *hyps[4] = {ref, other, "1 2 3 4", other};
    /* Solved: the reference; the other completion; not: a short grid; the other
     * completion without the puzzle (then the solution is the givens). */
    cr_assert_float_eq(compute("solved_acc", hyps, refs, 4), 0.5, EPS);
    cr_assert_float_eq(compute("exact_match", hyps, refs, 4), 0.25, EPS);
    cr_assert(metric_known("solved_acc"));
    cr_assert(metric_higher_is_better("solved_acc"));
    /* The baseline is the most frequent solution, never the puzzle text. */
    metric_baseline_t b;
    char err[256];
    cr_assert_eq(metric_baseline("solved_acc", refs, 4, &b, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(b.output, ref);
    cr_assert_float_eq(b.value, 1.0, EPS, "every sample here accepts the reference grid");
    cr_assert_str_eq(b.kind, "constant grid");
    metric_baseline_clear(&b);
    /* A puzzle that is no grid is an error naming the sample. */
    const char *bad[2] = {ref, "no digits here"};
    metric_refs_t brefs[1] = {{bad, 2}};
    double v;
    cr_assert_eq(metric_compute("solved_acc", hyps, brefs, 1, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "sample 0"), "%s", err);
}
