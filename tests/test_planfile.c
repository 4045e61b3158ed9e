/* test_planfile.c: the plan loader (plans/planfile.c): defaults, paths, every kind of
 * bad key reported with its line (all of them at once), instruction errors, stages, the
 * resolved plan's round trip, and docs/plan.md staying in sync with the key table. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "planfile.h"
#include "util.h"

static char err[8192];

#define CAPTION_TASK                                                                   \
    "  { name = \"caption\";\n"                                                       \
    "    instruction = \"[IMAGE:img] what does the image describe? -> [TEXT:cap]\";\n" \
    "    train = [\"data/stamps/train.tsv\"];\n"                                       \
    "    columns = [\"id\", \"img\", \"cap\"]; }\n"

static plan_t *load_ok(const char *text) {
    err[0] = '\0';
    plan_t *p = plan_load_string(text, "t.conf", "/srv/plans", err, sizeof err);
    cr_assert_not_null(p, "plan should load, got:\n%s", err);
    return p;
}

static void load_fails(const char *text) {
    err[0] = '\0';
    plan_t *p = plan_load_string(text, "t.conf", "/srv/plans", err, sizeof err);
    cr_assert_null(p, "plan should not load");
}

static int count_lines(const char *s) {
    int n = *s ? 1 : 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(planfile, defaults) {
    plan_t *p = load_ok("tasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(p->name, "t");
    cr_assert_eq(p->seed, 1);
    /* run_dir defaults to runs/ under the working directory (DESIGN.md) */
    char cwd[4096], want_run[4200];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    snprintf(want_run, sizeof want_run, "%s/runs", strcmp(cwd, "/") ? cwd : "");
    cr_assert_str_eq(p->run_dir, want_run);
    cr_assert_str_eq(p->data_dir, "/srv/plans");
    cr_assert_str_eq(p->model.size, "tiny");
    cr_assert_eq(p->model.image_size, 96);
    cr_assert_eq(p->model.patch, 16);
    cr_assert_eq(p->model.max_src_len, 256);
    cr_assert_eq(p->model.max_tgt_len, 64);
    cr_assert_eq(p->model.vocab_size, 4096);
    cr_assert_str_eq(p->trainer.backend, "auto");
    cr_assert_str_eq(p->trainer.consumer, "trainer");
    cr_assert_float_eq(p->trainer.label_smoothing, 0.1, 1e-12);
    cr_assert_eq(p->trainer.ranks, 1);
    cr_assert_eq(p->trainer.beam, 1);
    cr_assert_eq(p->trainer.max_gen_len, 64);
    cr_assert_eq(p->ntasks, 1);
    const plan_task_t *t = plan_task(p, "caption");
    cr_assert_not_null(t);
    cr_assert_eq(plan_task_index(p, "caption"), 0);
    cr_assert_str_eq(t->train[0], "/srv/plans/data/stamps/train.tsv");
    cr_assert_eq(t->nvalid, 0);
    cr_assert_str_eq(t->format, "tsv");
    cr_assert_float_eq(t->weight, 1.0, 1e-12);
    cr_assert_eq(t->epochs, 1);
    cr_assert_eq(t->max_rows, 0);
    cr_assert_eq(t->batch_size, 16);
    cr_assert_str_eq(t->metric, "cider");
    cr_assert_eq(t->image_size, 96);
    cr_assert_not_null(t->plan);
    cr_assert_str_eq(t->plan->route, "image,tokenize");
    /* the stages the run needs, nothing else */
    const char *want[] = {"broker", "source", "image", "tokenize", "batcher", "trainer"};
    cr_assert_eq(p->nstages, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(p->stages[i].name, want[i]);
    cr_assert_str_eq(plan_stage(p, "image")->program[0], "ofa-image");
    cr_assert_null(plan_stage(p, "image")->program[1]);
    cr_assert_null(plan_stage(p, "sink"));
    plan_destroy(&p);
    cr_assert_null(p);
    plan_destroy(&p);
}

Test(planfile, base_size_and_overrides) {
    plan_t *p = load_ok("name = \"big\"; seed = 12345678901L; data_dir = \"../data\";\n"
                        "model = { size = \"base\"; };\n"
                        "trainer = { consumer = \"sink\"; beam = 4; lr = 1; };\n"
                        "tasks = (\n" CAPTION_TASK ",\n"
                        "  { name = \"cls\"; instruction = \"[IMAGE:image] what? -> "
                        "[TEXT:label,closed_set]\"; train = \"/abs/train.jsonl\"; format = "
                        "\"jsonl\"; image_size = 64; metric = \"accuracy/mcc\"; }\n);\n"
                        "stages = { image = { workers = 3; program = [\"/opt/img\", \"--fast\"]; "
                        "credits = 32; }; audio = { workers = 2; }; };\n");
    cr_assert_eq(p->seed, 12345678901LL);
    cr_assert_eq(p->model.image_size, 384);
    cr_assert_float_eq(p->trainer.lr, 1.0, 1e-12);
    cr_assert_str_eq(p->data_dir, "/srv/data");
    cr_assert_str_eq(p->tasks[0].train[0], "/srv/data/data/stamps/train.tsv");
    cr_assert_str_eq(p->tasks[1].train[0], "/abs/train.jsonl");
    cr_assert_eq(p->tasks[1].image_size, 64);
    cr_assert_eq(p->tasks[0].plan->gen, GEN_BEAM);
    cr_assert_eq(p->tasks[1].plan->gen, GEN_CLOSED_SET);
    cr_assert_str_eq(p->tasks[1].metric, "accuracy/mcc");
    cr_assert_str_eq(p->tasks[1].plan->metric, "accuracy/mcc");
    /* jsonl without columns reads the instruction's columns */
    cr_assert_eq(p->tasks[1].ncolumns, 2);
    cr_assert_str_eq(p->tasks[1].columns[0], "image");
    const plan_stage_t *im = plan_stage(p, "image");
    cr_assert_eq(im->workers, 3);
    cr_assert_eq(im->credits, 32);
    cr_assert_eq(im->nprogram, 2);
    cr_assert_str_eq(im->program[1], "--fast");
    cr_assert_not_null(plan_stage(p, "sink"));
    cr_assert_null(plan_stage(p, "trainer"));
    cr_assert_null(plan_stage(p, "audio"), "settings of unused stages are dropped");
    plan_destroy(&p);
}

Test(planfile, misspelled_key_with_its_line) {
    load_fails("seed = 3;\n"
               "model = { size = \"nano\";\n"
               "  image_sise = 64; };\n"
               "tasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:3: unknown key 'model.image_sise' (did you mean "
                          "'model.image_size'?)");
    load_fails("sede = 3;\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: unknown key 'sede' (did you mean 'seed'?)");
    load_fails("tasks = (\n" CAPTION_TASK ",\n { name = \"b\"; instruction = \"[TEXT:a] -> "
               "[TEXT:b]\"; train = \"x\"; columns = [\"a\", \"b\"];\n   bacth_size = 4; }\n);\n");
    cr_assert_str_eq(err, "t.conf:8: task 'b': unknown key 'bacth_size' (did you mean "
                          "'batch_size'?)");
    load_fails("tasks = (\n" CAPTION_TASK ");\nstages = { tokenise = { workers = 2; }; };\n");
    cr_assert(strstr(err, "t.conf:7: unknown stage 'tokenise' (did you mean 'tokenize'?)"), "%s",
              err);
}

Test(planfile, wrong_type_and_range) {
    load_fails("seed = \"one\";\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: 'seed' wants an integer, got a string");
    load_fails("trainer = { lr = 0.001; label_smoothing = 1.5; };\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: 'trainer.label_smoothing' = 1.5 is out of range [0, 0.99]");
    load_fails("model = { size = \"huge\"; };\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: 'model.size' is \"huge\", not one of nano|tiny|base");
    load_fails("model = { max_src_len = 2.5; };\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: 'model.max_src_len' wants an integer, got a float");
    load_fails("model = 3;\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: 'model' wants a group { ... }, got an integer");
    load_fails("tasks = ( { name = \"a\"; instruction = \"[TEXT:a] -> [TEXT:b]\";\n"
               " train = (\"x\", 3); columns = [\"a\",\"b\"]; } );\n");
    cr_assert_str_eq(err, "t.conf:2: task 'a': 'train'[1] wants a string, got an integer");
}

/* Found by fuzz_plan: a quoted value holding a newline split one problem over two lines
 * of the error text (one problem per line is the contract). Control characters are
 * escaped. */
Test(planfile, control_characters_in_a_value_are_escaped) {
    load_fails("model = { size = \"ti\\nny\\t\\x01\"; };\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: 'model.size' is \"ti\\nny\\t\\x01\", not one of nano|tiny|base");
    cr_assert_eq(count_lines(err), 1, "%s", err);
}

Test(planfile, every_error_is_reported_in_file_order) {
    load_fails("seed = -1;\n"                                       /* 1 */
               "modle = { size = \"nano\"; };\n"                      /* 2 */
               "trainer = { consumer = \"sinks\"; ranks = 0; };\n"    /* 3 */
               "tasks = (\n"                                          /* 4 */
               "  { name = \"a b\"; instruction = \"[IMAGES:img] -> [TEXT:cap]\";\n" /* 5 */
               "    train = []; columns = [\"img\", \"cap\"]; weight = 0.0; },\n"    /* 6 */
               "  { name = \"c\"; instruction = \"[TEXT:x] -> [TEXT:y]\"; train = \"f\";\n" /* 7 */
               "    columns = [\"x\"]; epochs = 0; metric = \"cidr\"; }\n"          /* 8 */
               ");\n"
               "stages = { broker = { workers = 2; }; };\n");       /* 10 */
    const char *want[] = {
        "t.conf:1: 'seed' = -1 is out of range",
        "t.conf:2: unknown key 'modle' (did you mean 'model'?)",
        "t.conf:3: 'trainer.consumer' is \"sinks\", not one of trainer|sink",
        "t.conf:3: 'trainer.ranks' = 0 is out of range [1, 1024]",
        "t.conf:5: task name 'a b' may hold only letters",
        "t.conf:5: task 'a b': instruction:1:2: unknown modality 'IMAGES'",
        "t.conf:6: task 'a b': 'train' is empty",
        "t.conf:6: task 'a b': 'weight' = 0 is out of range",
        "t.conf:8: task 'c': 'epochs' = 0 is out of range",
        "t.conf:8: task 'c': unknown metric 'cidr'",
        "t.conf:8: task 'c': the instruction reads column 'y', which 'columns' does not list",
        "t.conf:10: stage 'broker': runs exactly one process",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(err, want[i]), "missing \"%s\" in:\n%s", want[i], err);
    cr_assert_eq(count_lines(err), (int)(sizeof want / sizeof want[0]), "%s", err);
    /* in file order */
    cr_assert(strstr(err, want[0]) < strstr(err, want[4]) && strstr(err, want[4]) < strstr(err, want[11]));
}

Test(planfile, instruction_error_names_task_and_line) {
    load_fails("tasks = (\n  { name = \"caption\";\n"
               "    instruction = \"[IMAGE:img] what does the image describe? -> [IMAGES:cap]\";\n"
               "    train = \"t.tsv\"; columns = [\"img\", \"cap\"]; }\n);\n");
    cr_assert_str_eq(err, "t.conf:3: task 'caption': instruction:1:47: unknown modality "
                          "'IMAGES' (known: TEXT, IMAGE, BOX, AUDIO, VIDEO, PHONE, MOTION, "
                          "STRUCT, CATEGORY)");
}

Test(planfile, task_rules) {
    load_fails("tasks = ();\n");
    cr_assert_str_eq(err, "t.conf:1: 'tasks' is empty: a plan needs at least one task");
    load_fails("seed = 1;\n");
    cr_assert_str_eq(err, "t.conf: missing 'tasks' (a list of task groups: tasks = ( { ... } );)");
    load_fails("tasks = ( { name = \"a\"; train = \"x\"; } );\n");
    cr_assert_str_eq(err, "t.conf:1: task 'a': missing required key 'instruction'");
    load_fails("tasks = ( { name = \"a\"; instruction = \"[TEXT:a] -> [TEXT:b]\"; train = \"x\"; } );\n");
    cr_assert(strstr(err, "format \"tsv\" needs 'columns'"), "%s", err);
    load_fails("tasks = (\n" CAPTION_TASK ",\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:7: task 'caption' is defined twice (first at line 2)");
    load_fails("tasks = ( { name = \"a\"; instruction = \"[TEXT:a] -> [TEXT:b]\"; train = \"x\";"
               " columns = [\"a\", \"b\", \"a\"]; } );\n");
    cr_assert(strstr(err, "column 'a' is listed twice"), "%s", err);
    load_fails("tasks = (\n" CAPTION_TASK ");\ntrainer = { ranks = 2; };\n"
               "stages = { trainer = { workers = 3; }; };\n");
    cr_assert(strstr(err, "t.conf:8: stage 'trainer': workers = 3 but trainer.ranks = 2"), "%s", err);
}

Test(planfile, syntax_error) {
    load_fails("tasks = ( { name = \"a\" } ;\n");
    cr_assert(strncmp(err, "t.conf:1: syntax error", 22) == 0, "%s", err);
    cr_assert_null(plan_load("/nonexistent/plan.conf", err, sizeof err));
    cr_assert(strstr(err, "/nonexistent/plan.conf: cannot read the plan file"), "%s", err);
}

Test(planfile, resolved_round_trip) {
    char dir[] = "/tmp/test_planfile_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], rpath[256], rpath2[256];
    snprintf(path, sizeof path, "%s/p.conf", dir);
    snprintf(rpath, sizeof rpath, "%s/sub/plan.resolved.conf", dir);
    snprintf(rpath2, sizeof rpath2, "%s/again.conf", dir);
    const char *text =
        "name = \"rt\"; seed = 99;\nmodel = { size = \"nano\"; image_size = 64; };\n"
        "trainer = { lr = 0.0003; clip = 0.5; beam = 3; weight_decay = 0.1; };\n"
        "tasks = (\n" CAPTION_TASK ",\n"
        "  { name = \"quote\"; instruction = \"what is \\\" [TEXT:s,mask_ratio=0.3] \\\"? -> "
        "[TEXT:s] ||| say [TEXT:s] -> [TEXT:s]\"; train = [\"a.tsv\", \"/b.tsv\"];\n"
        "    valid = \"v.tsv\"; columns = [\"s\"]; weight = 0.25; epochs = 3; max_rows = 100; }\n);\n"
        "stages = { tokenize = { workers = 2; program = [\"ofa-tokenize\", \"--x\", \"a b\"]; }; };\n";
    char e2[256];
    cr_assert_eq(util_write_file_atomic(path, text, strlen(text), e2, sizeof e2), 0, "%s", e2);
    plan_t *p = plan_load(path, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cr_assert(strncmp(p->tasks[0].train[0], dir, strlen(dir)) == 0);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    cr_assert_eq(util_mkdirs(sub, e2, sizeof e2), 0);
    cr_assert_eq(plan_write_resolved(p, rpath, err, sizeof err), 0, "%s", err);
    plan_t *q = plan_load(rpath, err, sizeof err);
    cr_assert_not_null(q, "the resolved plan must load:\n%s", err);
    /* the same plan: same values, same compiled tasks */
    cr_assert_str_eq(q->name, "rt");
    cr_assert_eq(q->seed, 99);
    cr_assert_str_eq(q->run_dir, p->run_dir);
    cr_assert_eq(q->model.image_size, 64);
    cr_assert_float_eq(q->trainer.lr, 0.0003, 1e-15);
    cr_assert_eq(q->ntasks, 2);
    cr_assert_str_eq(q->tasks[1].instruction, p->tasks[1].instruction);
    cr_assert_eq(q->tasks[1].ntrain, 2);
    cr_assert_str_eq(q->tasks[1].train[1], "/b.tsv");
    cr_assert_float_eq(q->tasks[1].weight, 0.25, 1e-15);
    cr_assert_str_eq(q->tasks[1].metric, p->tasks[1].metric);
    cr_assert_str_eq(plan_stage(q, "tokenize")->program[2], "a b");
    for (int i = 0; i < p->ntasks; i++) {
        char *a = taskplan_render(p->tasks[i].plan, p->tasks[i].name);
        char *b = taskplan_render(q->tasks[i].plan, q->tasks[i].name);
        cr_assert_str_eq(a, b);
        free(a);
        free(b);
    }
    /* and writing it again gives the same text (apart from the "# from" line) */
    char *ta = plan_resolved_text(p), *tb = plan_resolved_text(q);
    cr_assert_str_eq(strstr(ta, "\nname = "), strstr(tb, "\nname = "));
    free(ta);
    free(tb);
    cr_assert_eq(plan_write_resolved(q, rpath2, err, sizeof err), 0);
    plan_destroy(&p);
    plan_destroy(&q);
}

Test(planfile, check_files) {
    plan_t *p = load_ok("tasks = ( { name = \"a\"; instruction = \"[TEXT:a] -> [TEXT:b]\";\n"
                        " train = [\"/etc/hostname\", \"/nonexistent/x.tsv\"]; valid = "
                        "\"/nonexistent/v.tsv\"; columns = [\"a\", \"b\"]; } );\n");
    cr_assert_eq(plan_check_files(p, err, sizeof err), -1);
    cr_assert(strstr(err, "task 'a': train file /nonexistent/x.tsv cannot be read"), "%s", err);
    cr_assert(strstr(err, "task 'a': valid file /nonexistent/v.tsv cannot be read"), "%s", err);
    cr_assert_eq(count_lines(err), 2, "%s", err);
    plan_destroy(&p);
}

/* docs/plan.md documents every key of the table. */
Test(planfile, docs_list_every_key) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    plan_schema_markdown(f);
    fclose(f);
    char *doc = util_read_file(OFA_SOURCE_DIR "/docs/plan.md", NULL, err, sizeof err);
    cr_assert_not_null(doc, "%s", err);
    int n = 0;
    for (char *p = strstr(buf, "| `"); p; p = strstr(p + 1, "| `")) {
        char key[128];
        char *end = strchr(p + 3, '`');
        snprintf(key, sizeof key, "`%.*s`", (int)(end - p - 3), p + 3);
        cr_assert(strstr(doc, key), "docs/plan.md does not document %s", key);
        n++;
    }
    cr_assert_gt(n, 40);
    free(doc);
    free(buf);
}

/* An error inside an included task file names that file and its line. */
Test(planfile, errors_in_included_files) {
    char dir[] = "/tmp/test_planfile_inc_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], e2[256];
    snprintf(path, sizeof path, "%s/cap.conf", dir);
    const char *frag = "{\n  name = \"cap\";\n  instruction = \"[IMAGE:img] -> [TEXT:cap]\";\n"
                       "  train = \"t.tsv\"; columns = [\"img\", \"cap\"];\n  wieght = 2.0;\n}\n";
    cr_assert_eq(util_write_file_atomic(path, frag, strlen(frag), e2, sizeof e2), 0);
    plan_t *p = plan_load_string("seed = 2;\ntasks = (\n  @include \"cap.conf\"\n);\nsede = 1;\n",
                                 "main.conf", dir, err, sizeof err);
    cr_assert_null(p);
    char want[512];
    snprintf(want, sizeof want, "%s/cap.conf:5: task 'cap': unknown key 'wieght' (did you mean "
             "'weight'?)", dir);
    cr_assert(strstr(err, want), "want \"%s\" in:\n%s", want, err);
    cr_assert(strstr(err, "main.conf:5: unknown key 'sede'"), "%s", err);
    unlink(path);
    rmdir(dir);
}

/* Random bytes and random edits of a real plan: a plan or an error, never a crash. */
Test(planfile, random_edits_never_crash) {
    const char *base = "name = \"x\"; seed = 3;\nmodel = { size = \"nano\"; patch = 16; };\n"
                       "trainer = { lr = 0.5; ranks = 1; };\ntasks = (\n" CAPTION_TASK ");\n"
                       "stages = { image = { workers = 2; program = [\"a\", \"b\"]; }; };\n";
    static const char alphabet[] = "{}()[];=,\"@ aZ_.0-9\nL";
    util_rng_t rng = {99};
    char buf[2048];
    for (int it = 0; it < 3000; it++) {
        size_t n = strlen(base);
        memcpy(buf, base, n + 1);
        for (int e = 0; e < 3; e++) {
            size_t at = util_rng_next(&rng) % n;
            buf[at] = alphabet[util_rng_next(&rng) % (sizeof alphabet - 1)];
        }
        plan_t *p = plan_load_string(buf, "f.conf", "/srv", err, sizeof err);
        if (!p)
            cr_assert(strncmp(err, "f.conf", 6) == 0 || strstr(err, ".conf"), "%s", err);
        plan_destroy(&p);
    }
}

/* Image sizes must split into whole patches; a bad model size is reported once. */
Test(planfile, image_size_and_patch) {
    load_fails("model = { image_size = 90; };\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert_str_eq(err, "t.conf:1: model.image_size 90 is not a multiple of model.patch 16");
    load_fails("tasks = ( { name = \"a\"; instruction = \"[IMAGE:i] -> [TEXT:c]\"; train = \"x\";\n"
               "  columns = [\"i\", \"c\"]; image_size = 100; } );\n");
    cr_assert_str_eq(err, "t.conf:1: task 'a': image_size 100 is not a multiple of patch 16");
    plan_t *p = load_ok("tasks = ( { name = \"a\"; instruction = \"[IMAGE:i] -> [TEXT:c]\";\n"
                        " train = \"x\"; columns = [\"i\", \"c\"]; image_size = 128; patch = 32; } );\n");
    cr_assert_str_eq(p->tasks[0].plan->tmpls[0].slots[0].steps[2].arg, "32 px, 16 patches");
    plan_destroy(&p);
}

Test(planfile, long_task_name_is_an_error) {
    load_fails("tasks = (\n  { name = \"a_task_name_that_is_much_too_long_for_counters\";\n"
               "    instruction = \"[TEXT:x] -> [TEXT:y]\";\n"
               "    train = \"t.tsv\"; columns = [\"x\", \"y\"]; }\n);\n");
    cr_assert(strstr(err, "t.conf:2: task name 'a_task_name_that_is_much_too_long_for_counters' "
                          "is longer than 40 characters"), "%s", err);
}

/* model.num_bins is the BOX slots' default; a slot's own num_bins= wins over it. */
Test(planfile, num_bins_default_and_override) {
    const char *task = "tasks = ( { name = \"g\"; train = \"x\"; columns = [\"i\", \"c\", \"b\"];\n"
                       "  instruction = \"[IMAGE:i] [TEXT:c] -> [BOX:b%s]\"; } );\n";
    char text[512];
    snprintf(text, sizeof text, task, "");
    plan_t *p = load_ok(text);
    const taskplan_slot_t *box = &p->tasks[0].plan->tmpls[0].slots[2];
    cr_assert_eq(box->mod, MOD_BOX);
    cr_assert_eq(box->num_bins, 1000);
    plan_destroy(&p);
    char text2[600];
    snprintf(text2, sizeof text2, "model = { num_bins = 16; };\n%s", text);
    p = load_ok(text2);
    box = &p->tasks[0].plan->tmpls[0].slots[2];
    cr_assert_eq(box->num_bins, 16);
    cr_assert_str_eq(box->steps[1].arg, "16 bins, 4 tokens per box");
    plan_destroy(&p);
    snprintf(text, sizeof text, task, ",num_bins=32");
    snprintf(text2, sizeof text2, "model = { num_bins = 16; };\n%s", text);
    p = load_ok(text2);
    cr_assert_eq(p->tasks[0].plan->tmpls[0].slots[2].num_bins, 32);
    plan_destroy(&p);
    load_fails("model = { num_bins = 1; };\ntasks = (\n" CAPTION_TASK ");\n");
    cr_assert(strstr(err, "model.num_bins"), "%s", err);
}
