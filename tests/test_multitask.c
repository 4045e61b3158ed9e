/* test_multitask.c: trainer.multitask = "round_robin" (stages/source, stages/trainer).
 *  - The source cuts rounds of one batch of every task, in task order, each with its own
 *    batch size; a round count of the longest task; small tasks repeat by their own
 *    epochs (each epoch a permutation of their rows); the order is a pure function of
 *    the plan and seed.
 *  - The trainer takes one optimizer step per round, and the step's gradient equals the
 *    weighted sum (weights / their sum) of the per-task micro-batch gradients computed
 *    one by one through the model API at the same weights.
 *  - metrics.jsonl then has a line of every task at every step.
 *  - solved_acc gets the puzzle from the prompt through the trainer's evaluation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe.h"
#include "planfile.h"
#include "proto.h"
#include "source.h"
#include "tmodel.h"
#include "tokenize.h"
#include "trainer.h"
#include "util.h"

static char s_dir[256];
static char err[8192];

static void s_write(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* n rows "<prefix><i>\t<prefix>-answer-<i>" */
static void s_rows(const char *name, const char *prefix, int n) {
    char *buf = util_malloc((size_t)n * 64 + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)sprintf(buf + o, "%s%d\t%s answer %d\n", prefix, i, prefix, i % 3);
    buf[o] = 0;
    s_write(name, buf);
    free(buf);
}

static void s_setup(void) {
    snprintf(s_dir, sizeof s_dir, "/tmp/test_multitask.XXXXXX");
    cr_assert_not_null(mkdtemp(s_dir));
    tok_bpe_t *bpe = tok_bpe_new(NULL, 0, err, sizeof err);
    cr_assert_not_null(bpe, "%s", err);
    char p[512];
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    cr_assert_eq(tok_bpe_save(bpe, p, err, sizeof err), 0, "%s", err);
    tok_bpe_destroy(&bpe);
    s_rows("a.tsv", "alpha", 10);
    s_rows("b.tsv", "beta", 25);
    s_rows("c.tsv", "gamma", 7);
}

static void s_teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(multitask, .init = s_setup, .fini = s_teardown, .timeout = 120);

/* Three text tasks: a (10 rows, batch 4, 1 epoch, weight 1), b (25 rows, batch 5,
 * 2 epochs, weight 3), c (7 rows, batch 3, 1 epoch, weight 2). */
static plan_t *s_plan(const char *mode, const char *extra) {
    char text[4096];
    snprintf(text, sizeof text,
             "name = \"mt\";\nseed = 5;\nrun_dir = \"%s\";\n"
             "tasks = (\n"
             " { name = \"a\"; instruction = \"[TEXT:q] -> [TEXT:ans]\"; train = [\"a.tsv\"];"
             "   columns = [\"q\", \"ans\"]; batch_size = 4; epochs = 1; weight = 1.0; },\n"
             " { name = \"b\"; instruction = \"question [TEXT:q] -> [TEXT:ans]\"; train = [\"b.tsv\"];"
             "   columns = [\"q\", \"ans\"]; batch_size = 5; epochs = 2; weight = 3.0; },\n"
             " { name = \"c\"; instruction = \"say [TEXT:q] -> [TEXT:ans]\"; train = [\"c.tsv\"];"
             "   columns = [\"q\", \"ans\"]; batch_size = 3; epochs = 1; weight = 2.0; }\n"
             ");\n"
             "model = { size = \"nano\"; max_src_len = 32; max_tgt_len = 10; };\n"
             "trainer = { backend = \"cpu\"; threads = 1; lr = 0.003; warmup = 2; clip = 0.0;"
             " log_every = 1; multitask = \"%s\"; %s };\n",
             s_dir, mode, extra);
    plan_t *plan = plan_load_string(text, "mt.conf", s_dir, err, sizeof err);
    cr_assert_not_null(plan, "%s", err);
    return plan;
}

/* One emitted training sample, as the order contract sees it. */
typedef struct {
    char task[16];
    int64_t slot, epoch, row;
} s_item_t;

static int s_walk(const plan_t *plan, s_item_t *out, int max) {
    source_t *src = source_new(plan, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    int n = 0;
    proto_msg_t *m;
    while ((m = source_next(src))) {
        cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE, "no row of these files is bad");
        cr_assert_lt(n, max);
        snprintf(out[n].task, sizeof out[n].task, "%s", proto_msg_task(m));
        out[n].slot = proto_msg_get_int(m, "slot", -1);
        out[n].epoch = proto_msg_get_int(m, "epoch", -1);
        out[n].row = proto_msg_get_int(m, "row", -1);
        n++;
        proto_msg_destroy(&m);
    }
    source_destroy(&src);
    return n;
}

Test(multitask, source_rounds_hold_every_task_and_small_tasks_repeat) {
    plan_t *plan = s_plan("round_robin", "");
    enum { MAX = 4096 };
    s_item_t *it = util_calloc(MAX, sizeof *it), *again = util_calloc(MAX, sizeof *again);
    int n = s_walk(plan, it, MAX);
    /* Rounds: the longest task is b with ceil(25/5) x 2 = 10 batches; a has 3 an epoch,
     * c 3 an epoch: they repeat. 10 rounds x (4 + 5 + 3) rows, except where an epoch
     * ends inside a batch (a: 10 = 4+4+2, c: 7 = 3+3+1). */
    const char *names[3] = {"a", "b", "c"};
    int bs[3] = {4, 5, 3}, rows[3] = {10, 25, 7};
    int64_t slot = -1;
    int round = 0, pos = 0, seen_in_epoch[3][64] = {{0}};
    int64_t epoch_of[3] = {0, 0, 0};
    int i = 0;
    while (i < n) {
        for (int t = 0; t < 3; t++) {
            cr_assert_lt(i, n, "round %d ends before task %s", round, names[t]);
            cr_assert_str_eq(it[i].task, names[t], "round %d, position %d: task %s, want %s",
                             round, t, it[i].task, names[t]);
            cr_assert_gt(it[i].slot, slot, "a new slot for every batch");
            slot = it[i].slot;
            int k = 0;
            while (i < n && it[i].slot == slot) {
                cr_assert_str_eq(it[i].task, names[t]);
                if (it[i].epoch != epoch_of[t]) {
                    /* The previous epoch of this task covered each of its rows once. */
                    cr_assert_eq(it[i].epoch, epoch_of[t] + 1);
                    for (int r = 0; r < rows[t]; r++)
                        cr_assert_eq(seen_in_epoch[t][r], 1, "task %s epoch %lld row %d",
                                     names[t], (long long)epoch_of[t], r);
                    memset(seen_in_epoch[t], 0, sizeof seen_in_epoch[t]);
                    epoch_of[t] = it[i].epoch;
                }
                seen_in_epoch[t][it[i].row]++;
                k++;
                i++;
            }
            cr_assert(k >= 1 && k <= bs[t], "task %s batch of %d rows (batch_size %d)",
                      names[t], k, bs[t]);
            pos++;
        }
        round++;
    }
    cr_assert_eq(round, 10, "rounds: %d, want the longest task's 10 batches", round);
    cr_assert_eq(pos, 30);
    /* a ran 10 batches = 3 + 3 + 3 + 1 of its epochs: epochs 0..3; c likewise; b its 2. */
    cr_assert_eq(epoch_of[0], 3);
    cr_assert_eq(epoch_of[1], 1);
    cr_assert_eq(epoch_of[2], 3);
    /* The same plan and seed give the same order. */
    cr_assert_eq(s_walk(plan, again, MAX), n);
    cr_assert_eq(memcmp(it, again, sizeof *it * (size_t)n), 0);
    plan_destroy(&plan);

    /* trainer.max_steps sets the rounds. */
    plan = s_plan("round_robin", "max_steps = 4;");
    n = s_walk(plan, it, MAX);
    int slots = 0;
    for (int j = 0; j < n; j++)
        slots += j == 0 || it[j].slot != it[j - 1].slot;
    cr_assert_eq(slots, 12, "4 rounds of 3 tasks: %d slots", slots);
    plan_destroy(&plan);

    /* sample mode keeps the weighted draw: some slot pair repeats a task. */
    plan = s_plan("sample", "");
    n = s_walk(plan, it, MAX);
    int repeats = 0;
    for (int j = 1; j < n; j++)
        repeats += it[j].slot != it[j - 1].slot && strcmp(it[j].task, it[j - 1].task) == 0;
    cr_assert_gt(repeats, 0);
    plan_destroy(&plan);
    free(it);
    free(again);
}

/* A batch of B rows "<word> <i>" -> "<answer>", bytes as tokens. */
typedef struct {
    trainer_batch_t b;
    uint64_t ids[8];
    int32_t src_tok[8 * 16], src_len[8], tgt_in[8 * 8], tgt_out[8 * 8], tgt_len[8];
    uint8_t src_mod[8 * 16];
} sbatch_t;

static void s_batch(sbatch_t *s, const char *task, int64_t step, int B, const char *word,
                    const char *answer) {
    memset(s, 0, sizeof *s);
    trainer_batch_t *b = &s->b;
    b->task = task, b->step = step, b->B = B, b->S = 16, b->T = 8;
    b->ids = s->ids, b->src_tok = s->src_tok, b->src_mod = s->src_mod, b->src_len = s->src_len;
    b->tgt_in = s->tgt_in, b->tgt_out = s->tgt_out, b->tgt_len = s->tgt_len;
    for (int r = 0; r < B; r++) {
        char src[32];
        snprintf(src, sizeof src, "%s %d", word, r);
        int n = (int)strlen(src), na = (int)strlen(answer);
        int32_t *st = s->src_tok + r * 16, *ti = s->tgt_in + r * 8, *to = s->tgt_out + r * 8;
        for (int i = 0; i < 16; i++)
            st[i] = TOK_PAD;
        st[0] = TOK_BOS;
        for (int i = 0; i < n; i++)
            st[1 + i] = TOK_BYTE0 + (unsigned char)src[i];
        st[n + 1] = TOK_EOS;
        s->src_len[r] = n + 2;
        for (int i = 0; i < 8; i++)
            ti[i] = to[i] = TOK_PAD;
        ti[0] = TOK_BOS;
        for (int i = 0; i < na; i++)
            ti[1 + i] = to[i] = TOK_BYTE0 + (unsigned char)answer[(i + r) % na];
        to[na] = TOK_EOS;
        s->tgt_len[r] = na + 1;
        s->ids[r] = (uint64_t)step * 16 + (uint64_t)r;
    }
}

/* The model the trainer builds from the plan, built again through the model API. */
static tmodel_t *s_model(const plan_t *plan) {
    char p[512];
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    tok_bpe_t *bpe = tok_bpe_load(p, err, sizeof err);
    cr_assert_not_null(bpe, "%s", err);
    tmodel_cfg_t cfg = {
        .size = plan->model.size, .vocab = tok_bpe_vocab_size(bpe),
        .max_src_len = plan->model.max_src_len, .max_tgt_len = plan->model.max_tgt_len,
        .image_size = plan->model.image_size, .patch = plan->model.patch,
        .seed = (uint64_t)plan->seed, .threads = 1, .backend = "cpu",
        .weight_decay = plan->trainer.weight_decay,
        .label_smoothing = plan->trainer.label_smoothing,
    };
    tok_bpe_destroy(&bpe);
    tmodel_t *m = tmodel_new(&cfg, err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    return m;
}

Test(multitask, round_robin_step_gradient_is_the_weighted_sum_of_the_tasks) {
    plan_t *plan = s_plan("round_robin", "");
    trainer_opts_t o = {.run_dir = s_dir, .rank = 0, .world = 1, .tty = 0, .quiet = 1,
                        .threads = 1};
    trainer_t *tr = trainer_new(plan, &o, err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    cr_assert_eq(trainer_total_steps(tr), 10, "T = the longest task's batches");

    sbatch_t ba, bb, bc;
    s_batch(&ba, "a", 0, 4, "alpha", "yes");
    s_batch(&bb, "b", 1, 5, "beta", "no way");
    s_batch(&bc, "c", 2, 3, "gamma", "maybe");

    /* The per-task gradients at the initial weights, one batch at a time. */
    tmodel_t *m = s_model(plan);
    int64_t N = tmodel_numel(m);
    float *ga = util_malloc(sizeof(float) * N), *gb = util_malloc(sizeof(float) * N),
          *gc = util_malloc(sizeof(float) * N);
    cr_assert_eq(tmodel_grad(m, &ba.b, ga, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tmodel_grad(m, &bb.b, gb, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tmodel_grad(m, &bc.b, gc, err, sizeof err), 0, "%s", err);

    cr_assert_eq(trainer_feed(tr, &ba.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 0, "no step before the round is complete");
    cr_assert_eq(trainer_feed(tr, &bb.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 0);
    cr_assert_eq(trainer_feed(tr, &bc.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 1, "one optimizer step for the round of three tasks");

    int64_t n = 0;
    const float *g = trainer_step_grad(tr, &n);
    cr_assert_not_null(g);
    cr_assert_eq(n, N);
    /* Weights 1, 3, 2 over their sum 6. */
    double wa = 1.0 / 6, wb = 3.0 / 6, wc = 2.0 / 6, maxdiff = 0, maxref = 0, dab = 0;
    for (int64_t i = 0; i < N; i++) {
        double want = wa * ga[i] + wb * gb[i] + wc * gc[i];
        double d = fabs(g[i] - want);
        cr_assert_leq(d, 1e-7 + 1e-5 * fabs(want), "gradient %lld: step %.9g, weighted sum %.9g",
                      (long long)i, g[i], want);
        maxdiff = d > maxdiff ? d : maxdiff;
        maxref = fabs(want) > maxref ? fabs(want) : maxref;
        dab += fabs(ga[i] - gb[i]);
    }
    /* The test can tell the tasks apart: their gradients differ, and an equal-weight
     * mean is not what the step used. */
    cr_assert_gt(dab, 1e-3);
    cr_assert_gt(maxref, 1e-4);
    double unweighted = 0;
    for (int64_t i = 0; i < N; i++)
        unweighted += fabs(g[i] - (ga[i] + gb[i] + gc[i]) / 3);
    cr_assert_gt(unweighted, 1e-4);

    /* Two more rounds, then the end: a line of every task at every step (log_every = 1). */
    for (int r = 1; r < 3; r++) {
        s_batch(&ba, "a", 3 * r, 4, "alpha", "yes");
        s_batch(&bb, "b", 3 * r + 1, 5, "beta", "no way");
        s_batch(&bc, "c", 3 * r + 2, 3, "gamma", "maybe");
        cr_assert_eq(trainer_feed(tr, &ba.b, 0, err, sizeof err), 0, "%s", err);
        cr_assert_eq(trainer_feed(tr, &bb.b, 0, err, sizeof err), 0, "%s", err);
        cr_assert_eq(trainer_feed(tr, &bc.b, 0, err, sizeof err), 0, "%s", err);
    }
    cr_assert_eq(trainer_step(tr), 3);
    cr_assert_eq(trainer_cursor(tr), 8, "cursor = the last batch of the last step");
    /* A round missing a batch (c's, rejected upstream): the next round's first batch
     * closes it, so the rounds stay the steps. */
    s_batch(&ba, "a", 9, 4, "alpha", "yes");
    s_batch(&bb, "b", 10, 5, "beta", "no way");
    cr_assert_eq(trainer_feed(tr, &ba.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_feed(tr, &bb.b, 0, err, sizeof err), 0, "%s", err);
    s_batch(&ba, "a", 12, 4, "alpha", "yes");
    cr_assert_eq(trainer_feed(tr, &ba.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 4, "the short round stepped when the next one began");
    cr_assert_eq(trainer_finish(tr, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 5, "the last partial round steps at the end");
    trainer_destroy(&tr);

    char p[512];
    snprintf(p, sizeof p, "%s/metrics.jsonl", s_dir);
    char *text = util_read_file(p, NULL, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    for (int step = 1; step <= 3; step++)
        for (int t = 0; t < 3; t++) {
            char want[64];
            snprintf(want, sizeof want, "{\"step\":%d,\"task\":\"%c\"", step, "abc"[t]);
            cr_assert(strstr(text, want), "step %d has no line of task %c:\n%s", step, "abc"[t], text);
        }
    free(text);
    free(ga);
    free(gb);
    free(gc);
    tmodel_destroy(&m);
    plan_destroy(&plan);
}

/* sample mode: every batch is its own step; no gradient sum is kept. */
Test(multitask, sample_mode_steps_per_batch) {
    plan_t *plan = s_plan("sample", "");
    trainer_opts_t o = {.run_dir = s_dir, .rank = 0, .world = 1, .tty = 0, .quiet = 1,
                        .threads = 1};
    trainer_t *tr = trainer_new(plan, &o, err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    cr_assert_eq(trainer_total_steps(tr), 3 + 10 + 3, "T = the sum of the tasks' batches");
    sbatch_t ba;
    s_batch(&ba, "a", 0, 4, "alpha", "yes");
    cr_assert_eq(trainer_feed(tr, &ba.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 1);
    cr_assert_null(trainer_step_grad(tr, NULL));
    trainer_destroy(&tr);
    plan_destroy(&plan);
}

/* solved_acc through the trainer: the prompt travels with the reference as the puzzle.
 * Three validation rows share an empty 4x4 puzzle (no givens) and have three different
 * reference solutions. With the puzzle, any one of those grids as a constant output
 * solves every row (baseline 1); were the solution taken as the givens, a constant grid
 * would solve one row in three. */
Test(multitask, solved_acc_gets_the_puzzle_from_the_prompt) {
    const char *puzzle = "0 0 0 0 | 0 0 0 0 | 0 0 0 0 | 0 0 0 0";
    const char *sols[3] = {"1 2 3 4 | 3 4 1 2 | 2 1 4 3 | 4 3 2 1",
                           "2 1 4 3 | 4 3 2 1 | 1 2 3 4 | 3 4 1 2",
                           "3 4 1 2 | 1 2 3 4 | 4 3 2 1 | 2 1 4 3"};
    char rows[512];
    snprintf(rows, sizeof rows, "0\t%s\t%s\n1\t%s\t%s\n2\t%s\t%s\n", puzzle, sols[0], puzzle,
             sols[1], puzzle, sols[2]);
    s_write("sudoku.tsv", rows);
    char text[2048];
    snprintf(text, sizeof text,
             "name = \"sud\";\nseed = 2;\nrun_dir = \"%s\";\n"
             "tasks = ( { name = \"sudoku\"; instruction = \"\\\" [TEXT:src] \\\"  .  solve the "
             "sudoku .  -> [TEXT:tgt]\"; train = [\"sudoku.tsv\"]; valid = [\"sudoku.tsv\"];"
             " columns = [\"id\", \"src\", \"tgt\"]; batch_size = 3; metric = \"solved_acc\"; } );\n"
             "model = { size = \"nano\"; max_src_len = 96; max_tgt_len = 48; };\n"
             "trainer = { backend = \"cpu\"; threads = 1; max_gen_len = 4; };\n", s_dir);
    plan_t *plan = plan_load_string(text, "sud.conf", s_dir, err, sizeof err);
    cr_assert_not_null(plan, "%s", err);
    char p[512];
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    tok_bpe_t *bpe = tok_bpe_load(p, err, sizeof err);
    cr_assert_not_null(bpe, "%s", err);
    tok_opts_t to = {.no_masking = true};
    tok_ctx_t *tc = tok_ctx_new(plan_task(plan, "sudoku")->plan, bpe, &to, err, sizeof err);
    cr_assert_not_null(tc, "%s", err);
    enum { B = 3, S = 96, T = 48 };
    static int32_t src_tok[B * S], src_len[B], tgt_in[B * T], tgt_out[B * T], tgt_len[B];
    static uint8_t src_mod[B * S];
    uint64_t ids[B];
    char refs[512];
    size_t o = 0;
    for (int r = 0; r < B; r++) {
        tok_value_t v[2] = {{.column = "src", .text = puzzle, .len = strlen(puzzle)},
                            {.column = "tgt", .text = sols[r], .len = strlen(sols[r])}};
        tok_sample_t smp = {.id = (uint64_t)r, .values = v, .nvalues = 2};
        tok_result_t res;
        cr_assert_eq(tok_build(tc, &smp, &res, err, sizeof err), 0, "%s", err);
        cr_assert_leq(res.src_len, S);
        cr_assert_leq(res.tgt_len, T);
        for (int i = 0; i < S; i++) {
            src_tok[r * S + i] = i < res.src_len ? res.src_tok[i] : TOK_PAD;
            src_mod[r * S + i] = i < res.src_len ? res.src_mod[i] : 0;
        }
        for (int i = 0; i < T; i++) {
            tgt_in[r * T + i] = i < res.tgt_len ? res.tgt_in[i] : TOK_PAD;
            tgt_out[r * T + i] = i < res.tgt_len ? res.tgt_out[i] : TOK_PAD;
        }
        src_len[r] = res.src_len;
        tgt_len[r] = res.tgt_len;
        ids[r] = (uint64_t)r;
        o += (size_t)snprintf(refs + o, sizeof refs - o, "%s%s", r ? "\n" : "", res.ref);
    }
    tok_ctx_destroy(&tc);
    tok_bpe_destroy(&bpe);
    trainer_batch_t b = {.task = "sudoku", .step = 0, .valid = 1, .B = B, .S = S, .T = T,
                         .ids = ids, .src_tok = src_tok, .src_mod = src_mod, .src_len = src_len,
                         .tgt_in = tgt_in, .tgt_out = tgt_out, .tgt_len = tgt_len, .refs = refs};
    trainer_opts_t opts = {.run_dir = s_dir, .rank = 0, .world = 1, .tty = 0, .quiet = 1,
                           .threads = 1};
    trainer_t *tr = trainer_new(plan, &opts, err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    cr_assert_eq(trainer_feed(tr, &b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_finish(tr, err, sizeof err), 0, "%s", err);
    trainer_destroy(&tr);
    snprintf(p, sizeof p, "%s/eval.json", s_dir);
    char *ev = util_read_file(p, NULL, err, sizeof err);
    cr_assert_not_null(ev, "%s", err);
    cr_assert(strstr(ev, "\"metric\": \"solved_acc\""), "%s", ev);
    cr_assert(strstr(ev, "\"value\": 0,"), "an untrained model solves nothing:\n%s", ev);
    cr_assert(strstr(ev, "\"baseline\": 1,"), "a constant grid solves every empty puzzle "
              "once the puzzle is known:\n%s", ev);
    cr_assert(strstr(ev, "\"n\": 3"), "%s", ev);
    free(ev);
    plan_destroy(&plan);
}
