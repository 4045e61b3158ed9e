/* metrics.h: the evaluation metrics of the tasks, computed from generated text.
 *
 * The evaluator collects, for each validation sample, the model's output (a hypothesis
 * string) and the sample's references (one or more strings), then calls metric_compute()
 * with the task's metric name (the names plans/ accepts: "cider", "bleu", "accuracy",
 * ...) and metric_baseline() for the best constant output, which eval.json reports
 * beside the value:
 *
 *     metric_refs_t refs[n];            // refs[i].refs[0..nrefs-1] for sample i
 *     double v;
 *     if (metric_compute("cider", hyps, refs, n, &v, err, sizeof err) != 0) ...
 *     metric_baseline_t b;
 *     if (metric_baseline("cider", refs, n, &b, err, sizeof err) == 0) {
 *         ... b.value, b.output, b.kind ...
 *         metric_baseline_clear(&b);
 *     }
 *
 * Definitions follow the reference implementations people compare against:
 * - text is normalised first: ASCII letters lowercased, every ASCII punctuation character
 *   becomes a space, runs of white space collapse to one; words are what the spaces
 *   separate. (coco-caption runs the PTB tokenizer and drops punctuation tokens; on
 *   plain captions the two agree.)
 * - "bleu": BLEU-4 at corpus level as nltk's corpus_bleu (uniform weights, no smoothing)
 *   and coco-caption's Bleu: clipped n-gram counts summed over the corpus, brevity
 *   penalty exp(1 - r/c) when c <= r, r = sum of the reference lengths closest to each
 *   hypothesis (ties: the shorter). 0 when some n-gram order has no match.
 *   Range 0..1. (coco-caption uses the average reference length when the corpus has one
 *   sample and adds 1e-15 to each count: both differ only in corner cases.)
 * - "cider": CIDEr-D as coco-caption's cider_scorer: n = 1..4, tf-idf vectors with the
 *   document frequencies taken over the references of the evaluated set (idf =
 *   log(N) - log(max(1, df)), N = samples), clipped cosine min(h, r) * r / (|h| |r|),
 *   Gaussian length penalty with sigma 6 (length counted as coco-caption does: the
 *   number of bigrams), averaged over n and the references, times 10, mean over samples.
 *   With one sample every idf is 0 and so is CIDEr-D (as in coco-caption).
 * - "rouge_l": ROUGE-L F-measure with beta 1.2 as coco-caption: LCS precision and
 *   recall maximised separately over the references, mean over samples. Range 0..1.
 * - "accuracy": fraction of samples whose normalised output equals one of its normalised
 *   references. "exact_match": the same on the raw strings with only leading and
 *   trailing white space removed (case and punctuation count).
 * - "vqa_score": VQA accuracy min(#references equal to the answer / 3, 1), with answers
 *   normalised as the VQA evaluation does (normalisation above, articles a/an/the
 *   dropped, number words zero..ten written as digits). With fewer than 3 references
 *   the divisor is their count, so a single reference is exact match.
 * - "f1": SQuAD's token F1 (multiset overlap of the words after the VQA answer
 *   normalisation), best over the references, mean over samples; two empty answers
 *   count as 1.
 * - "mcc": Matthews correlation coefficient of labels (normalised; the first reference
 *   is the true label), in the multi-class form scikit-learn uses; 0 when undefined
 *   (e.g. a constant prediction). Range -1..1.
 * - "iou_acc": fraction of samples whose box has IoU >= 0.5 with one of its reference
 *   boxes. A box is four numbers "x0 y0 x1 y1" (spaces or commas) or four location
 *   tokens "<bin_12> <bin_40> <bin_80> <bin_99>"; hypothesis and references must use
 *   the same units. An output that is not a box scores 0; a reference that is not a
 *   box is an error.
 * - "map": mean average precision at IoU 0.5 over classes, for object detection. An
 *   output is objects "<bin_a> <bin_b> <bin_c> <bin_d> label", one after another (what the
 *   decoder writes for `( [BOX] [TEXT])*`; the spaces between location tokens are
 *   optional, labels are normalised as captions). The references' first string gives the
 *   ground truth. Per class (every label of the references): detections ranked by their
 *   position in their output (first object first; ties by sample order: a generated
 *   sequence has no per-object confidence), each matched as PASCAL VOC's devkit does to
 *   the ground truth of its sample and class with the highest IoU: IoU >= 0.5 with one
 *   not matched yet is a true positive, otherwise (too far, wrong place, duplicate) a
 *   false positive; AP = area under the precision envelope at every recall step
 *   (all-point interpolation, VOC2010+, not VOC2007's 11 points nor COCO's 101); mAP =
 *   mean AP over the classes. A class the model never names has AP 0; a label only the
 *   model uses has no AP (and costs nothing). In an output, stray location tokens (fewer
 *   than 4 before a word or the end) are dropped and text before the first box is
 *   ignored; a reference that is not such a list is an error. Range 0..1.
 * - "wer": word error rate, sum over samples of the word edit distance (substitutions,
 *   insertions, deletions) to the closest reference, over the sum of those references'
 *   word counts. "cer": the same on characters of the normalised text. Lower is better.
 * - "solved_acc": fraction of sudoku outputs that solve their puzzle: the output's
 *   numbers (runs of digits; '|' and spaces only separate) form a grid of the puzzle's
 *   size whose every row, column and box holds 1..n once, and every given cell of the
 *   puzzle keeps its number. The first reference is the solution, the second (if any)
 *   the puzzle (its numbers in order, 0 = empty cell; surrounding words are ignored, so
 *   the whole prompt will do). Without a puzzle the solution's cells are the givens: the
 *   output must then be that grid. A valid completion other than the reference counts
 *   as solved (a puzzle with several solutions). 4x4 (16 cells) to 16x16 grids. A
 *   puzzle that is not such a grid is an error.
 *
 * Errors: functions return 0, or -1 with a one-line reason in err for bad input that
 * comes from outside (no samples, a sample without references, a reference box that is
 * not a box, an unknown metric). NULL hypotheses count as empty outputs.
 */
#ifndef OFA_METRICS_H
#define OFA_METRICS_H

#include <stdbool.h>
#include <stddef.h>

/* The references of one sample. The strings are borrowed, never freed here. */
typedef struct {
    const char *const *refs;   /* (nrefs) */
    int nrefs;
} metric_refs_t;

/* The best constant output and its score (metric_baseline). */
typedef struct {
    double value;     /* the metric of the constant output over the same samples */
    char *output;     /* the constant output (owned: metric_baseline_clear frees it) */
    const char *kind; /* static text for eval.json's baseline_kind, e.g.
                         "most frequent caption" */
    int candidates;   /* how many constant outputs were tried */
} metric_baseline_t;

/* True when NAME is a metric this library computes. */
bool metric_known(const char *name);

/* Comma-separated list of the names metric_known accepts (static storage). */
const char *metric_names(void);

/* True for metrics where larger is better (false for "wer" and "cer"). Unknown names
 * are a programmer error. */
bool metric_higher_is_better(const char *name);

/* The metric NAME over n samples: hyps (n) outputs, refs (n) reference lists.
 * Writes the value to *value. Returns 0, or -1 with err filled. */
int metric_compute(const char *name, const char *const *hyps, const metric_refs_t *refs,
                   int n, double *value, char *err, size_t errlen);

/* Score of the best constant output, tried among the most frequent references (for
 * accuracy, exact_match, vqa_score, f1, mcc: answers; bleu, cider, rouge_l: captions; wer, cer:
 * single words; iou_acc: boxes, plus the coordinate-wise median box; map: the object
 * lists, and each object alone). At most
 * METRIC_BASELINE_TRIES candidates are scored, taken in order of frequency (ties broken
 * by byte order, so the result is deterministic), and the best one is reported.
 * Fills *out (clear it with metric_baseline_clear). Returns 0, or -1 with err filled. */
#define METRIC_BASELINE_TRIES 32
int metric_baseline(const char *name, const metric_refs_t *refs, int n,
                    metric_baseline_t *out, char *err, size_t errlen);

/* Frees out->output and zeroes *out. Accepts a zeroed struct. */
void metric_baseline_clear(metric_baseline_t *out);

/* The individual metrics (the same definitions as above; they cannot fail once n > 0
 * and every sample has a reference, which metric_compute checks). */
double metric_bleu4(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_cider_d(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_rouge_l(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_accuracy(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_exact_match(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_vqa_score(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_f1(const char *const *hyps, const metric_refs_t *refs, int n);
double metric_mcc(const char *const *hyps, const metric_refs_t *refs, int n);

/* iou_acc, wer and cer can meet a reference they cannot use: they return 0 or -1. */
int metric_iou_acc(const char *const *hyps, const metric_refs_t *refs, int n,
                   double *value, char *err, size_t errlen);
int metric_wer(const char *const *hyps, const metric_refs_t *refs, int n,
               double *value, char *err, size_t errlen);
int metric_cer(const char *const *hyps, const metric_refs_t *refs, int n,
               double *value, char *err, size_t errlen);

/* The sudoku check of solved_acc: 1 when grid is a valid completion of givens, 0 when
 * not (why says the first fault: "row 2 repeats 3"), -1 when givens is not a puzzle
 * (why says so). why may be NULL. Grids of side 4, 9 or 16 (METRIC_SUDOKU_MAX). */
#define METRIC_SUDOKU_MAX 16
int metric_sudoku_check(const char *grid, const char *givens, char *why, size_t whylen);
double metric_solved_acc(const char *const *hyps, const metric_refs_t *refs, int n);

/* Helpers, exposed for tests and for the evaluator's logs. All return malloc'd strings
 * the caller frees. */
char *metric_normalize(const char *s);        /* caption normalisation (see above) */
char *metric_normalize_answer(const char *s); /* VQA answer normalisation */

/* Parses a box ("x0 y0 x1 y1" or four <bin_k> tokens) into b[4]. Returns 0, or -1 with
 * err filled when s is not a box (wrong count, not numbers, x1 < x0 or y1 < y0). */
int metric_parse_box(const char *s, double b[4], char *err, size_t errlen);

/* One object of a detection output (metric_parse_detections). */
typedef struct {
    double box[4];            /* x0 y0 x1 y1, in the units of the text (location bins) */
    char *label;              /* normalised (metric_normalize), owned */
    bool valid;               /* x1 > x0 and y1 > y0 */
} metric_det_t;

/* Parses "<bin_a> <bin_b> <bin_c> <bin_d> label ..." into *out (nout objects; free with
 * metric_dets_free). strict (a reference): text before the first box, a box with no
 * label or an empty or inverted box is an error; otherwise such objects are kept (an
 * inverted box then never matches). A box of fewer than 4 location tokens is an error
 * either way. Returns 0, or -1 with err filled (err may be NULL). */
int metric_parse_detections(const char *s, bool strict, metric_det_t **out, int *nout,
                            char *err, size_t errlen);
void metric_dets_free(metric_det_t *dets, int n);

/* "map" over n samples (see above): 0, or -1 when a reference is not an object list. */
int metric_map(const char *const *hyps, const metric_refs_t *refs, int n, double *value,
               char *err, size_t errlen);

/* Intersection over union of two boxes (x0, y0, x1, y1); 0 when the union is empty. */
double metric_iou(const double a[4], const double b[4]);

#endif
