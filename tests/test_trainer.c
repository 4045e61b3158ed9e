/* test_trainer.c: the trainer library (stages/trainer/trainer.c) on synthetic batches
 * with the real nano model on the CPU: the loss falls on a repeated batch, a resumed run
 * continues with exactly the losses of an uninterrupted one, a closed-set task and a
 * text task are evaluated into eval.json, and malformed batches are refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpe.h"
#include "ckpt.h"
#include "planfile.h"
#include "tokenize.h"
#include "trainer.h"
#include "util.h"

static char s_dir[256];

static void s_setup(void) {
    snprintf(s_dir, sizeof s_dir, "/tmp/test_trainer.XXXXXX");
    cr_assert_not_null(mkdtemp(s_dir));
    /* A BPE with no merges: V = 5 + 256 + 1000. */
    char err[256], p[512];
    tok_bpe_t *bpe = tok_bpe_new(NULL, 0, err, sizeof err);
    cr_assert_not_null(bpe, "%s", err);
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    cr_assert_eq(tok_bpe_save(bpe, p, err, sizeof err), 0, "%s", err);
    tok_bpe_destroy(&bpe);
}

static void s_teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(trainer, .init = s_setup, .fini = s_teardown, .timeout = 240);

static plan_t *s_plan(const char *trainer_extra) {
    char text[4096], err[4096];
    snprintf(text, sizeof text,
             "name = \"synthetic\";\nseed = 3;\nrun_dir = \"%s\";\n"
             "tasks = (\n"
             " { name = \"copy\"; instruction = \"[TEXT:a] -> [TEXT:b]\"; train = [\"copy.tsv\"];"
             "   columns = [\"a\", \"b\"]; batch_size = 4; metric = \"exact_match\"; },\n"
             " { name = \"cls\"; instruction = \"[TEXT:q] -> [TEXT:ans,closed_set]\";"
             "   train = [\"cls.tsv\"]; columns = [\"q\", \"ans\"]; batch_size = 4; },\n"
             " { name = \"cap\"; instruction = \"[IMAGE:img] what? -> [TEXT:cap]\"; train = [\"cap.tsv\"];"
             "   columns = [\"img\", \"cap\"]; batch_size = 4; metric = \"exact_match\"; },\n"
             " { name = \"where\"; instruction = \"[IMAGE:img] where? -> [BOX:box]\"; train = [\"box.tsv\"];"
             "   columns = [\"img\", \"box\"]; batch_size = 4; }\n"
             ");\n"
             "model = { size = \"nano\"; max_src_len = 64; max_tgt_len = 10; image_size = 96; patch = 16; };\n"
             "trainer = { backend = \"cpu\"; threads = 1; lr = 0.003; warmup = 5; label_smoothing = 0.0;"
             " log_every = 5; keep_checkpoints = 2; %s };\n",
             s_dir, trainer_extra);
    plan_t *plan = plan_load_string(text, "test.conf", s_dir, err, sizeof err);
    cr_assert_not_null(plan, "%s", err);
    return plan;
}

/* A synthetic batch: storage for its arrays. */
typedef struct {
    trainer_batch_t b;
    uint64_t ids[8];
    int32_t src_tok[8 * 64], src_len[8], tgt_in[8 * 10], tgt_out[8 * 10], tgt_len[8];
    uint8_t src_mod[8 * 64];
    uint8_t img[4 * 36 * 768];
    char refs[512];
} sbatch_t;

/* Put <s> toks </s> in src row r and toks as the target (tgt_in = <s> toks,
 * tgt_out = toks </s>), padding the rest. */
static void s_row(sbatch_t *s, int r, const int32_t *src, int ns, const int32_t *tgt, int nt) {
    trainer_batch_t *b = &s->b;
    int32_t *st = s->src_tok + r * b->S, *ti = s->tgt_in + r * b->T, *to = s->tgt_out + r * b->T;
    for (int i = 0; i < b->S; i++)
        st[i] = TOK_PAD;
    st[0] = TOK_BOS;
    memcpy(st + 1, src, sizeof(int32_t) * ns);
    st[ns + 1] = TOK_EOS;
    s->src_len[r] = ns + 2;
    for (int i = 0; i < b->T; i++)
        ti[i] = to[i] = TOK_PAD;
    ti[0] = TOK_BOS;
    memcpy(ti + 1, tgt, sizeof(int32_t) * nt);
    memcpy(to, tgt, sizeof(int32_t) * nt);
    to[nt] = TOK_EOS;
    s->tgt_len[r] = nt + 1;
}

static void s_init(sbatch_t *s, const char *task, int64_t step, int B, int S, int T) {
    memset(s, 0, sizeof *s);
    trainer_batch_t *b = &s->b;
    b->task = task, b->step = step, b->B = B, b->S = S, b->T = T;
    b->ids = s->ids, b->src_tok = s->src_tok, b->src_mod = s->src_mod, b->src_len = s->src_len;
    b->tgt_in = s->tgt_in, b->tgt_out = s->tgt_out, b->tgt_len = s->tgt_len;
    for (int i = 0; i < B; i++)
        s->ids[i] = (uint64_t)step * 16 + i;
}

/* Copy batch number `step`: 4 rows of 4 random lower-case letters, target = source. */
static void s_copy_batch(sbatch_t *s, int64_t step) {
    s_init(s, "copy", step, 4, 8, 6);
    util_rng_t rng = {(uint64_t)step * 7919 + 1};
    for (int r = 0; r < 4; r++) {
        int32_t t[4];
        for (int i = 0; i < 4; i++)
            t[i] = TOK_BYTE0 + 'a' + (int)(util_rng_next(&rng) % 26);
        s_row(s, r, t, 4, t, 4);
    }
}

/* Closed-set batch: question colour -> answer word, 4 rows cycling through 3 pairs,
 * built by the tokenize tier's library from the task plan exactly as the pipeline (and
 * ofa-infer) builds samples: " red" with its leading space, <s> ... </s>. */
static const char *s_q[3] = {"red", "green", "amber"}, *s_a[3] = {"stop", "go", "wait"};

static void s_cls_batch(sbatch_t *s, const plan_t *plan, int64_t step, int valid) {
    s_init(s, "cls", step, 4, 8, 6);
    s->b.valid = valid;
    char err[512], p[512];
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    tok_bpe_t *bpe = tok_bpe_load(p, err, sizeof err);
    cr_assert_not_null(bpe, "%s", err);
    tok_opts_t to = {.no_masking = true};
    tok_ctx_t *tc = tok_ctx_new(plan_task(plan, "cls")->plan, bpe, &to, err, sizeof err);
    cr_assert_not_null(tc, "%s", err);
    size_t o = 0;
    for (int r = 0; r < 4; r++) {
        int k = (int)((step + r) % 3);
        tok_value_t v[2] = {{.column = "q", .text = s_q[k], .len = strlen(s_q[k])},
                            {.column = "ans", .text = s_a[k], .len = strlen(s_a[k])}};
        tok_sample_t smp = {.id = (uint64_t)r, .values = v, .nvalues = 2};
        tok_result_t res;
        cr_assert_eq(tok_build(tc, &smp, &res, err, sizeof err), 0, "%s", err);
        cr_assert_leq(res.src_len, 8);
        cr_assert_leq(res.tgt_len, 6);
        for (int i = 0; i < 8; i++) {
            s->src_tok[r * 8 + i] = i < res.src_len ? res.src_tok[i] : TOK_PAD;
            s->src_mod[r * 8 + i] = i < res.src_len ? res.src_mod[i] : 0;
        }
        for (int i = 0; i < 6; i++) {
            s->tgt_in[r * 6 + i] = i < res.tgt_len ? res.tgt_in[i] : TOK_PAD;
            s->tgt_out[r * 6 + i] = i < res.tgt_len ? res.tgt_out[i] : TOK_PAD;
        }
        s->src_len[r] = res.src_len;
        s->tgt_len[r] = res.tgt_len;
        o += snprintf(s->refs + o, sizeof s->refs - o, "%s%s", r ? "\n" : "", res.ref);
    }
    if (valid)
        s->b.refs = s->refs;
    tok_ctx_destroy(&tc);
    tok_bpe_destroy(&bpe);
}

static trainer_t *s_trainer(const plan_t *plan, int resume) {
    trainer_opts_t o = {.run_dir = s_dir, .resume = resume, .rank = 0, .world = 1, .tty = 0,
                        .quiet = 1};
    char err[1024];
    trainer_t *tr = trainer_new(plan, &o, err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    return tr;
}

Test(trainer, schedule_warmup_then_cosine) {
    cr_assert_float_eq(trainer_schedule(1.0, 10, 110, 1), 0.1, 1e-12);
    cr_assert_float_eq(trainer_schedule(1.0, 10, 110, 10), 1.0, 1e-12);
    cr_assert_float_eq(trainer_schedule(1.0, 10, 110, 60), 0.5, 1e-12);
    cr_assert_float_eq(trainer_schedule(1.0, 10, 110, 110), 0.0, 1e-12);
    cr_assert_float_eq(trainer_schedule(1.0, 10, 110, 500), 0.0, 1e-12);
    cr_assert_float_eq(trainer_schedule(2.0, 0, 100, 1), 2.0 * 0.5 * (1 + cos(M_PI * 0.01)), 1e-12);
}

Test(trainer, loss_falls_on_a_repeated_batch) {
    plan_t *plan = s_plan("max_steps = 50;");
    trainer_t *tr = s_trainer(plan, 0);
    cr_assert_eq(trainer_total_steps(tr), 50, "max_steps gives the schedule's total");
    sbatch_t s;
    s_copy_batch(&s, 0);
    char err[512];
    float first = 0, last = 0;
    for (int i = 0; i < 50; i++) {
        s.b.step = i;
        cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
        if (i == 0)
            first = trainer_last_loss(tr);
        last = trainer_last_loss(tr);
    }
    cr_assert_eq(trainer_step(tr), 50);
    cr_assert(isfinite(first) && first > 5.0, "initial loss %g should be near log(V)=7.1", first);
    cr_assert_lt(last, 0.3 * first, "loss %g -> %g did not fall", first, last);
    /* Past max_steps batches are skipped. */
    s.b.step = 50;
    cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    cr_assert_eq(trainer_step(tr), 50);
    trainer_destroy(&tr);
    cr_assert_null(tr);
    plan_destroy(&plan);
    /* metrics.jsonl has lines for step 5, 10, ..., 50. */
    char p[512];
    size_t len;
    snprintf(p, sizeof p, "%s/metrics.jsonl", s_dir);
    char *text = util_read_file(p, &len, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    cr_assert(strstr(text, "{\"step\":5,\"task\":\"copy\""), "%s", text);
    cr_assert(strstr(text, "{\"step\":50,\"task\":\"copy\""), "%s", text);
    free(text);
}

Test(trainer, resume_continues_exactly) {
    const int N = 20, CUT = 12;
    char err[512];
    float ref[20], got[20];
    sbatch_t s;
    /* Uninterrupted run. */
    plan_t *plan = s_plan("max_steps = 20;");
    trainer_t *tr = s_trainer(plan, 0);
    for (int i = 0; i < N; i++) {
        s_copy_batch(&s, i);
        cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
        ref[i] = trainer_last_loss(tr);
    }
    trainer_destroy(&tr);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/checkpoints' '%s/metrics.jsonl'", s_dir, s_dir);
    cr_assert_eq(system(cmd), 0);

    /* Interrupted after CUT batches (checkpoint as on SIGTERM), then resumed with the
     * whole batch sequence replayed from the start. */
    tr = s_trainer(plan, 0);
    for (int i = 0; i < CUT; i++) {
        s_copy_batch(&s, i);
        cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
        got[i] = trainer_last_loss(tr);
    }
    cr_assert_eq(trainer_checkpoint(tr, err, sizeof err), 0, "%s", err);
    trainer_destroy(&tr);
    char p[600];
    ckpt_path(s_dir, 0, "x", p, sizeof p);
    snprintf(p, sizeof p, "%s/checkpoints", s_dir);
    cr_assert_eq(ckpt_latest(p), CUT);

    tr = s_trainer(plan, 1);
    cr_assert_eq(trainer_step(tr), CUT);
    cr_assert_eq(trainer_cursor(tr), CUT - 1, "cursor = step field of the last batch consumed");
    for (int i = 0; i < N; i++) {
        s_copy_batch(&s, i);
        cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
        if (i < CUT)
            cr_assert_eq(trainer_step(tr), CUT, "batch %d should have been skipped", i);
        else
            got[i] = trainer_last_loss(tr);
    }
    cr_assert_eq(trainer_step(tr), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(ref[i], got[i], "step %d: uninterrupted %.9g, resumed %.9g", i + 1, ref[i], got[i]);
    trainer_destroy(&tr);
    plan_destroy(&plan);
}

Test(trainer, evaluates_closed_set_and_text_tasks) {
    plan_t *plan = s_plan("max_steps = 300; max_gen_len = 8;");
    trainer_t *tr = s_trainer(plan, 0);
    char err[512];
    sbatch_t s;
    for (int i = 0; i < 300; i++) {
        if (i % 2)
            s_cls_batch(&s, plan, i, 0);
        else
            s_copy_batch(&s, i % 8);   /* a few copy batches, repeated */
        s.b.step = i;
        cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    }
    /* Validation: the three questions, and two copy batches seen in training. */
    s_cls_batch(&s, plan, 1000, 1);
    cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    s_cls_batch(&s, plan, 1001, 1);
    cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    s_copy_batch(&s, 0);
    s.b.step = 1002, s.b.valid = 1;
    /* Copy refs: the letters of each row. */
    size_t o = 0;
    for (int r = 0; r < 4; r++) {
        o += snprintf(s.refs + o, sizeof s.refs - o, "%s", r ? "\n" : "");
        for (int i = 0; i < 4; i++)
            s.refs[o++] = (char)(s.src_tok[r * 8 + 1 + i] - TOK_BYTE0);
        s.refs[o] = 0;
    }
    s.b.refs = s.refs;
    cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_finish(tr, err, sizeof err), 0, "%s", err);
    trainer_destroy(&tr);
    plan_destroy(&plan);

    char p[512];
    size_t len;
    snprintf(p, sizeof p, "%s/eval.json", s_dir);
    char *text = util_read_file(p, &len, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    cr_log_info("eval.json: %s", text);
    /* The closed set {stop, go, wait} is learnt perfectly; the most frequent answer
     * gets at most 3/8 (the baseline). */
    cr_assert(strstr(text, "\"cls\": {\"metric\": \"accuracy\", \"value\": 1,"), "%s", text);
    cr_assert(strstr(text, "\"copy\": {\"metric\": \"exact_match\""), "%s", text);
    cr_assert(strstr(text, "\"n\": 8, \"step\": 300"), "%s", text);
    free(text);
    /* The final checkpoint carries the closed set and the plan. */
    snprintf(p, sizeof p, "%s/checkpoints/ckpt-00000300.safetensors", s_dir);
    ckpt_file_t *f = ckpt_file_open(p, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    const ckpt_tensor_t *cs = ckpt_file_find(f, "meta.closed_set.cls");
    cr_assert_not_null(cs);
    cr_assert_eq(cs->nbytes / 4, 5 + 1 + 3 + 1 + 5 + 1, "' go', ' stop', ' wait' with -1 after each");
    cr_assert_not_null(ckpt_file_find(f, "meta.bpe"));
    cr_assert(strstr(ckpt_file_meta(f, "plan"), "closed_set"));
    cr_assert_str_eq(ckpt_file_meta(f, "format"), "ofa-ckpt");
    ckpt_file_destroy(&f);

    /* ofa-infer answers from this one file: by task name, and by the instruction. */
    char cmd[2048], out[256];
    const char *q[3] = {"red", "green", "amber"}, *want[3] = {"stop", "go", "wait"};
    for (int k = 0; k < 3; k++) {
        if (k < 2)
            snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer '%s' --task cls --input q=%s", OFA_BINARY_DIR, p, q[k]);
        else
            snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer '%s' --instruction '[TEXT:q] -> [TEXT:ans,closed_set]' "
                     "--input q=%s", OFA_BINARY_DIR, p, q[k]);
        FILE *pp = popen(cmd, "r");
        cr_assert_not_null(pp);
        out[0] = 0;
        cr_assert_not_null(fgets(out, sizeof out, pp), "no output from: %s", cmd);
        cr_assert_eq(pclose(pp), 0, "%s failed", cmd);
        out[strcspn(out, "\n")] = 0;
        cr_assert_str_eq(out, want[k], "%s", cmd);
    }
    /* Bad invocations: a clear message and a non-zero status. */
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer '%s' --task nope --input q=red 2>/dev/null", OFA_BINARY_DIR, p);
    cr_assert_neq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer '%s' --task cls 2>/dev/null", OFA_BINARY_DIR, p);
    cr_assert_neq(system(cmd), 0, "missing --input accepted");
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer %s/bpe.bin --task cls --input q=red 2>/dev/null", OFA_BINARY_DIR, s_dir);
    cr_assert_neq(system(cmd), 0, "a non-checkpoint accepted");
}

Test(trainer, malformed_batches_are_refused_not_fatal) {
    plan_t *plan = s_plan("max_steps = 10;");
    trainer_t *tr = s_trainer(plan, 0);
    char err[512];
    sbatch_t s;
    s_copy_batch(&s, 0);
    s.b.task = "nope";
    cr_assert_neq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    cr_assert(strstr(err, "unknown task 'nope'"), "%s", err);
    s_copy_batch(&s, 0);
    s.src_tok[3] = 99999;
    cr_assert_neq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    cr_assert(strstr(err, "vocabulary"), "%s", err);
    s_copy_batch(&s, 0);
    s.src_len[2] = 0;
    cr_assert_neq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    cr_assert(strstr(err, "src_len[2]"), "%s", err);
    s_copy_batch(&s, 0);
    s.b.S = 80;   /* more than max_src_len (4 x 80 still inside the arrays) */
    cr_assert_neq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    s_copy_batch(&s, 0);
    s.src_mod[5] = 1;   /* an image position without an image */
    cr_assert_neq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    cr_assert(strstr(err, "img"), "%s", err);
    s_copy_batch(&s, 0);
    s.src_mod[2] = 255;   /* a real position with an unknown modality */
    cr_assert_neq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0);
    cr_assert(strstr(err, "modality 255"), "%s", err);
    /* A good batch still trains, with 255 at padded positions as ofa-batcher writes. */
    s_copy_batch(&s, 0);
    s.src_len[1] = 4;
    s.src_tok[8 + 4] = s.src_tok[8 + 5] = TOK_PAD;
    for (int j = 4; j < 8; j++)
        s.src_mod[8 + j] = 255;
    cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_step(tr), 1);
    int64_t bad;
    trainer_counters(tr, NULL, NULL, NULL, &bad, NULL);
    cr_assert_eq(bad, 6);
    trainer_destroy(&tr);
    plan_destroy(&plan);
}

Test(trainer, missing_bpe_file_is_a_setup_error) {
    plan_t *plan = s_plan("");
    trainer_opts_t o = {.run_dir = s_dir, .bpe_path = "/nonexistent/bpe.bin", .world = 1, .quiet = 1};
    char err[512];
    cr_assert_null(trainer_new(plan, &o, err, sizeof err));
    cr_assert(strstr(err, "/nonexistent/bpe.bin"), "%s", err);
    plan_destroy(&plan);
}

/* Train on one copy batch until it is memorised, then evaluate that batch: greedy and
 * beam search must reproduce the targets (exact match 1). */
static void s_memorise(const char *extra, const char *want) {
    plan_t *plan = s_plan(extra);
    trainer_t *tr = s_trainer(plan, 0);
    char err[512];
    sbatch_t s;
    s_copy_batch(&s, 0);
    for (int i = 0; i < 120; i++) {
        s.b.step = i;
        cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    }
    s.b.step = 120, s.b.valid = 1;
    size_t o = 0;
    for (int r = 0; r < 4; r++) {
        o += snprintf(s.refs + o, sizeof s.refs - o, "%s", r ? "\n" : "");
        for (int i = 0; i < 4; i++)
            s.refs[o++] = (char)(s.src_tok[r * 8 + 1 + i] - TOK_BYTE0);
        s.refs[o] = 0;
    }
    s.b.refs = s.refs;
    cr_assert_eq(trainer_feed(tr, &s.b, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(trainer_finish(tr, err, sizeof err), 0, "%s", err);
    cr_log_info("final loss %g", trainer_last_loss(tr));
    trainer_destroy(&tr);
    plan_destroy(&plan);
    char p[512];
    size_t len;
    snprintf(p, sizeof p, "%s/eval.json", s_dir);
    char *text = util_read_file(p, &len, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    cr_log_info("eval.json: %s", text);
    cr_assert(strstr(text, want), "%s", text);
    free(text);
}

Test(trainer, greedy_reproduces_a_memorised_batch) {
    s_memorise("max_steps = 120; beam = 1;",
               "\"copy\": {\"metric\": \"exact_match\", \"value\": 1,");
}

Test(trainer, beam_reproduces_a_memorised_batch) {
    s_memorise("max_steps = 120; beam = 3;",
               "\"copy\": {\"metric\": \"exact_match\", \"value\": 1,");
}

/* Image batches built with the tokenize library: rows alternate between a dark and a
 * bright synthetic image (all patches one grey level); task "cap" answers "night"/"day",
 * task "where" a box in the left or the right half (96 x 96 pixels). */
static void s_img_batch(sbatch_t *s, const plan_t *plan, const char *task, int64_t step, int valid) {
    char err[512], p[512];
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    tok_bpe_t *bpe = tok_bpe_load(p, err, sizeof err);
    cr_assert_not_null(bpe, "%s", err);
    tok_opts_t to = {.no_masking = true};
    tok_ctx_t *tc = tok_ctx_new(plan_task(plan, task)->plan, bpe, &to, err, sizeof err);
    cr_assert_not_null(tc, "%s", err);
    int is_box = !strcmp(task, "where");
    const int S = 64, T = 10, NP = 36, PD = 768;
    s_init(s, task, step, 4, S, T);
    s->b.valid = valid;
    s->b.img = s->img, s->b.Np = NP, s->b.patch_dim = PD, s->b.grid = 6;
    size_t o = 0;
    int maxS = 0, maxT = 0;
    for (int r = 0; r < 4; r++) {
        int bright = (int)((step + r) % 2);
        memset(s->img + (size_t)r * NP * PD, bright ? 230 : 20, (size_t)NP * PD);
        const char *ans = is_box ? (bright ? "50,10,90,60" : "5,30,45,90") : (bright ? "day" : "night");
        tok_value_t v[2] = {
            {.column = "img", .npos = NP, .width = 96, .height = 96},
            {.column = is_box ? "box" : "cap", .text = ans, .len = strlen(ans), .width = 96, .height = 96},
        };
        tok_sample_t smp = {.id = (uint64_t)r, .values = v, .nvalues = 2};
        tok_result_t res;
        cr_assert_eq(tok_build(tc, &smp, &res, err, sizeof err), 0, "%s", err);
        cr_assert_leq(res.src_len, S);
        cr_assert_leq(res.tgt_len, T);
        maxS = res.src_len > maxS ? res.src_len : maxS;
        maxT = res.tgt_len > maxT ? res.tgt_len : maxT;
        for (int i = 0; i < S; i++) {
            s->src_tok[r * S + i] = i < res.src_len ? res.src_tok[i] : TOK_PAD;
            s->src_mod[r * S + i] = i < res.src_len ? res.src_mod[i] : 0;
        }
        for (int i = 0; i < T; i++) {
            s->tgt_in[r * T + i] = i < res.tgt_len ? res.tgt_in[i] : TOK_PAD;
            s->tgt_out[r * T + i] = i < res.tgt_len ? res.tgt_out[i] : TOK_PAD;
        }
        s->src_len[r] = res.src_len;
        s->tgt_len[r] = res.tgt_len;
        o += snprintf(s->refs + o, sizeof s->refs - o, "%s%s", r ? "\n" : "", res.ref);
    }
    s->b.refs = valid ? s->refs : NULL;
    tok_ctx_destroy(&tc);
    tok_bpe_destroy(&bpe);
}

Test(trainer, image_caption_and_box_tasks_train_and_evaluate) {
    plan_t *plan = s_plan("max_steps = 240; max_gen_len = 8;");
    trainer_t *tr = s_trainer(plan, 0);
    char err[512];
    sbatch_t *s = malloc(sizeof *s);
    float first_cap = 0, first_box = 0;
    for (int i = 0; i < 240; i++) {
        s_img_batch(s, plan, i % 2 ? "where" : "cap", i, 0);
        cr_assert_eq(trainer_feed(tr, &s->b, 0, err, sizeof err), 0, "%s", err);
        if (i == 0)
            first_cap = trainer_last_loss(tr);
        if (i == 1)
            first_box = trainer_last_loss(tr);
    }
    float last = trainer_last_loss(tr);
    cr_log_info("loss cap %g box %g -> %g", first_cap, first_box, last);
    cr_assert_lt(last, 0.5 * first_box);
    for (int k = 0; k < 2; k++) {
        s_img_batch(s, plan, "cap", 1000 + k, 1);
        cr_assert_eq(trainer_feed(tr, &s->b, 0, err, sizeof err), 0, "%s", err);
        s_img_batch(s, plan, "where", 1002 + k, 1);
        cr_assert_eq(trainer_feed(tr, &s->b, 0, err, sizeof err), 0, "%s", err);
    }
    cr_assert_eq(trainer_finish(tr, err, sizeof err), 0, "%s", err);
    trainer_destroy(&tr);
    plan_destroy(&plan);
    free(s);
    char p[512];
    size_t len;
    snprintf(p, sizeof p, "%s/eval.json", s_dir);
    char *text = util_read_file(p, &len, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    cr_log_info("eval.json: %s", text);
    /* Dark/bright images are told apart: exact captions and boxes with IoU >= 0.5. */
    cr_assert(strstr(text, "\"cap\": {\"metric\": \"exact_match\", \"value\": 1,"), "%s", text);
    cr_assert(strstr(text, "\"where\": {\"metric\": \"iou_acc\", \"value\": 1,"), "%s", text);
    free(text);

    /* ofa-infer on real image files (PNG, uniform grey like the training images). */
    char cmd[2048], out[256];
    snprintf(cmd, sizeof cmd, "convert -size 96x96 xc:'rgb(20,20,20)' %s/dark.png && "
             "convert -size 96x96 xc:'rgb(230,230,230)' %s/bright.png", s_dir, s_dir);
    if (system(cmd) != 0) {
        cr_log_warn("ImageMagick's convert is missing: ofa-infer on image files not tested");
        return;
    }
    snprintf(p, sizeof p, "%s/checkpoints/ckpt-00000240.safetensors", s_dir);
    const char *img[2] = {"dark", "bright"}, *want[2] = {"night", "day"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer %s --task cap --input img=%s/%s.png",
                 OFA_BINARY_DIR, p, s_dir, img[k]);
        FILE *pp = popen(cmd, "r");
        out[0] = 0;
        cr_assert_not_null(fgets(out, sizeof out, pp), "no output: %s", cmd);
        cr_assert_eq(pclose(pp), 0);
        out[strcspn(out, "\n")] = 0;
        cr_assert_str_eq(out, want[k], "%s", cmd);
    }
    /* The box of the bright image: "50,10,90,60" in pixels, printed in pixels and bins. */
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-infer %s --instruction '[IMAGE:img] where? -> [BOX:box]' "
             "--input img=%s/bright.png", OFA_BINARY_DIR, p, s_dir);
    FILE *pp = popen(cmd, "r");
    out[0] = 0;
    cr_assert_not_null(fgets(out, sizeof out, pp), "no output: %s", cmd);
    cr_assert_eq(pclose(pp), 0);
    double x0, y0, x1, y1;
    cr_assert_eq(sscanf(out, "%lf %lf %lf %lf", &x0, &y0, &x1, &y1), 4, "%s", out);
    cr_log_info("box: %s", out);
    cr_assert(fabs(x0 - 50) < 6 && fabs(y0 - 10) < 6 && fabs(x1 - 90) < 6 && fabs(y1 - 60) < 6, "%s", out);
}
