/* test_presets.c: the 23 OFASys presets. Every instruction of ofasys_presets.tsv (read at
 * test time from the shared folder) compiles; every configs/tasks file loads inside a
 * plan and matches the TSV's name, instruction and metric; and taskplan_runnable refuses
 * exactly the presets whose output is an image, audio or motion. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planfile.h"
#include "util.h"

typedef struct {
    char *name, *mods, *metric, *instruction;
} preset_t;

static preset_t presets[64];
static int npresets;
static char *tsv;
static char err[8192];

/* Split the TSV in place: header "name modalities metric instruction", then rows. */
static void load_presets(void) {
    tsv = util_read_file(OFA_SHARED_DIR "/ofasys_presets.tsv", NULL, err, sizeof err);
    cr_assert_not_null(tsv, "%s", err);
    char *save = NULL;
    char *line = strtok_r(tsv, "\n", &save);
    cr_assert(line && strncmp(line, "name\tmodalities\tmetric\tinstruction", 34) == 0);
    while ((line = strtok_r(NULL, "\n", &save))) {
        cr_assert_lt(npresets, 64);
        preset_t *p = &presets[npresets++];
        char *f[4];
        for (int i = 0; i < 4; i++) {
            f[i] = line;
            char *tab = i < 3 ? strchr(line, '\t') : NULL;
            cr_assert(i == 3 || tab, "row %d has fewer than 4 fields", npresets);
            if (tab) {
                *tab = '\0';
                line = tab + 1;
            }
        }
        p->name = f[0];
        p->mods = f[1];
        p->metric = f[2];
        p->instruction = f[3];
    }
}

static void free_presets(void) {
    free(tsv);
    npresets = 0;
}

TestSuite(presets, .init = load_presets, .fini = free_presets);

/* What the modalities column says the task outputs: the part after "->". */
static bool generates_media(const preset_t *p) {
    const char *out = strstr(p->mods, "->");
    cr_assert_not_null(out, "%s: modalities '%s' without '->'", p->name, p->mods);
    return strstr(out, "image") || strstr(out, "audio") || strstr(out, "motion");
}

Test(presets, every_instruction_compiles_and_runnable_is_exact) {
    cr_assert_eq(npresets, 23);
    int refused = 0;
    for (int i = 0; i < npresets; i++) {
        const preset_t *p = &presets[i];
        taskplan_t *tp = taskplan_compile(p->instruction, NULL, err, sizeof err);
        cr_assert_not_null(tp, "%s: %s", p->name, err);
        char *r = taskplan_render(tp, p->name);
        cr_assert(strstr(r, "route: "), "%s", r);
        free(r);
        int rc = taskplan_runnable(tp, err, sizeof err);
        bool media = generates_media(p);
        cr_assert_eq(rc == -1, media, "%s (%s): runnable says %s", p->name, p->mods,
                     rc ? err : "yes");
        if (media) {
            cr_assert(strstr(err, "does not have yet"), "%s: %s", p->name, err);
            refused++;
        }
        /* the metric column is always accepted as an override */
        cr_assert_eq(taskplan_set_metric(tp, p->metric, err, sizeof err), 0, "%s: %s", p->name, err);
        taskplan_destroy(&tp);
    }
    cr_assert_eq(refused, 4);   /* image_gen, image_infilling, text_to_speech, diffusion */
}

Test(presets, every_task_file_matches_the_tsv) {
    for (int i = 0; i < npresets; i++) {
        const preset_t *p = &presets[i];
        char text[256];
        snprintf(text, sizeof text, "model = { size = \"nano\"; };\ntasks = (\n  @include "
                 "\"tasks/%s.conf\"\n);\n", p->name);
        plan_t *plan = plan_load_string(text, "preset.conf", OFA_SOURCE_DIR "/configs", err,
                                        sizeof err);
        cr_assert_not_null(plan, "configs/tasks/%s.conf:\n%s", p->name, err);
        cr_assert_eq(plan->ntasks, 1);
        const plan_task_t *t = &plan->tasks[0];
        cr_assert_str_eq(t->name, p->name);
        cr_assert_str_eq(t->instruction, p->instruction);
        cr_assert_str_eq(t->metric, p->metric);
        cr_assert_str_eq(t->plan->metric, p->metric);
        cr_assert_str_neq(t->dataset, "");
        cr_assert_gt(t->ntrain, 0);
        plan_destroy(&plan);
    }
}

/* Every file of configs/tasks is one of the presets (none stale, none extra). */
Test(presets, no_other_task_files) {
    DIR *d = opendir(OFA_SOURCE_DIR "/configs/tasks");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
            continue;
        n++;
        bool found = false;
        for (int i = 0; i < npresets; i++)
            found |= strlen(presets[i].name) == len - 5 &&
                     strncmp(presets[i].name, de->d_name, len - 5) == 0;
        cr_assert(found, "configs/tasks/%s is no OFASys preset", de->d_name);
    }
    closedir(d);
    cr_assert_eq(n, npresets);
}

/* All presets in one plan: names are unique and the stages cover every route. */
Test(presets, all_in_one_plan) {
    char text[4096] = "tasks = (\n";
    for (int i = 0; i < npresets; i++) {
        size_t used = strlen(text);
        snprintf(text + used, sizeof text - used, "%s  @include \"tasks/%s.conf\"\n",
                 i ? ",\n" : "", presets[i].name);
    }
    strcat(text, ");\n");
    plan_t *plan = plan_load_string(text, "all.conf", OFA_SOURCE_DIR "/configs", err, sizeof err);
    cr_assert_not_null(plan, "%s", err);
    cr_assert_eq(plan->ntasks, 23);
    const char *stages[] = {"broker", "source", "image", "audio", "video", "motion",
                            "tokenize", "batcher", "trainer"};
    cr_assert_eq(plan->nstages, 9);
    for (int i = 0; i < 9; i++)
        cr_assert_str_eq(plan->stages[i].name, stages[i]);
    plan_destroy(&plan);
}

/* ---- datasets: each preset's `dataset` against scripts/build_data.py --list ---------- */

/* The presets that have a real local dataset, and the builder entry each one reads.
 * Adding data to a preset means adding it here; the test below then holds the preset's
 * file to the builder's columns and paths. */
static const struct {
    const char *preset, *dataset;
} with_data[] = {
    {"caption", "stamps_caption"},
    {"vqa_gen", "stamps_vqa"},
    {"refcoco", "stamps_ground"},
    {"grounded_captioning", "stamps_ground"},
    {"gigaword", "gigaword"},
    {"glue", "glue"},
    {"text_infilling", "text_infilling"},
    {"sudoku", "sudoku"},
    {"natural_instruction_v2", "natural_instruction_v2"},
    {"spider", "spider"},
    {"fetaqa", "fetaqa"},
    {"dart", "dart"},
    {"image_classify", "image_classify"},
    {"snli_ve", "snli_ve"},
    {"object_detection", "object_detection"},
    {"speech_to_text", "speech_prompts"},
    {"video_caption", "video_moves_caption"},
    {"video_classify", "video_moves_classify"},
    {"video_question_answering_generative", "video_moves_qa"},
};
#define NWITH ((int)(sizeof with_data / sizeof with_data[0]))

typedef struct {
    char name[64];
    char cols[256];   /* space-separated, as --list prints them */
} builder_t;

/* Run the builder's --list ("NAME  columns: a b c" per line) and parse it. */
static int s_builders(builder_t *out, int max) {
    FILE *p = popen("/usr/bin/python3 " OFA_SOURCE_DIR "/scripts/build_data.py --list", "r");
    cr_assert_not_null(p, "cannot run scripts/build_data.py --list");
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        char *c = strstr(line, " columns: ");
        cr_assert_not_null(c, "build_data.py --list: unexpected line '%s'", line);
        cr_assert_lt(n, max);
        *c = 0;
        char *end = line + strlen(line);
        while (end > line && end[-1] == ' ')
            *--end = 0;
        const char *cols = c + strlen(" columns: ");
        cr_assert(strlen(line) < sizeof out[n].name && strlen(cols) < sizeof out[n].cols,
                  "build_data.py --list: line too long: '%s'", line);
        memcpy(out[n].name, line, strlen(line) + 1);
        memcpy(out[n].cols, cols, strlen(cols) + 1);
        n++;
    }
    cr_assert_eq(pclose(p), 0, "scripts/build_data.py --list failed (is python3-pil there?)");
    return n;
}

static plan_t *s_load_preset(const char *name) {
    char text[256];
    snprintf(text, sizeof text, "model = { size = \"nano\"; };\ntasks = (\n  @include "
             "\"tasks/%s.conf\"\n);\n", name);
    plan_t *plan = plan_load_string(text, "preset.conf", OFA_SOURCE_DIR "/configs", err,
                                    sizeof err);
    cr_assert_not_null(plan, "configs/tasks/%s.conf:\n%s", name, err);
    return plan;
}

/* Ends with "/data/DATASET/SPLIT.tsv"? */
static bool s_path_is(const char *path, const char *dataset, const char *split) {
    char want[160];
    snprintf(want, sizeof want, "/data/%s/%s.tsv", dataset, split);
    size_t n = strlen(path), w = strlen(want);
    return n >= w && strcmp(path + n - w, want) == 0;
}

Test(presets, datasets_resolve_to_builder_entries) {
    builder_t b[64];
    int nb = s_builders(b, 64);
    cr_assert_geq(nb, 8, "build_data.py --list printed %d datasets", nb);
    int resolved = 0;
    for (int i = 0; i < npresets; i++) {
        plan_t *plan = s_load_preset(presets[i].name);
        const plan_task_t *t = &plan->tasks[0];
        int k = -1;
        for (int j = 0; j < nb; j++)
            if (strcmp(b[j].name, t->dataset) == 0)
                k = j;
        int w = -1;
        for (int j = 0; j < NWITH; j++)
            if (strcmp(with_data[j].preset, t->name) == 0)
                w = j;
        /* A preset listed as having data names exactly its builder entry; one not listed
         * must not name a builder entry by accident (that would be data nobody checked). */
        if (w >= 0) {
            cr_assert_str_eq(t->dataset, with_data[w].dataset, "preset %s", t->name);
            cr_assert_geq(k, 0, "preset %s: dataset '%s' is not in build_data.py --list",
                          t->name, t->dataset);
        } else {
            cr_assert_lt(k, 0, "preset %s names builder dataset '%s' but is not in "
                         "with_data", t->name, t->dataset);
        }
        if (k >= 0) {
            /* the preset's columns, in file order, are the builder's */
            char cols[256] = "";
            for (int c = 0; c < t->ncolumns; c++) {
                size_t used = strlen(cols);
                snprintf(cols + used, sizeof cols - used, "%s%s", c ? " " : "", t->columns[c]);
            }
            cr_assert_str_eq(cols, b[k].cols, "preset %s: columns '%s', dataset %s has '%s'",
                             t->name, cols, t->dataset, b[k].cols);
            cr_assert_eq(t->ntrain, 1);
            cr_assert(s_path_is(t->train[0], t->dataset, "train"), "preset %s: train %s",
                      t->name, t->train[0]);
            cr_assert_eq(t->nvalid, 1);
            cr_assert(s_path_is(t->valid[0], t->dataset, "valid"), "preset %s: valid %s",
                      t->name, t->valid[0]);
            resolved++;
        }
        plan_destroy(&plan);
    }
    cr_assert_eq(resolved, NWITH);
}

/* The multi-task plan loads, has at least five presets, and each of its tasks reads a
 * dataset the builder knows, by the preset's instruction. */
Test(presets, multitask_plan_uses_built_datasets) {
    plan_t *plan = plan_load(OFA_SOURCE_DIR "/configs/multitask.conf", err, sizeof err);
    cr_assert_not_null(plan, "configs/multitask.conf:\n%s", err);
    cr_assert_geq(plan->ntasks, 5);
    builder_t b[64];
    int nb = s_builders(b, 64);
    for (int i = 0; i < plan->ntasks; i++) {
        const plan_task_t *t = &plan->tasks[i];
        const preset_t *p = NULL;
        for (int j = 0; j < npresets; j++)
            if (strcmp(presets[j].name, t->name) == 0)
                p = &presets[j];
        cr_assert_not_null(p, "multitask task %s is no preset", t->name);
        cr_assert_str_eq(t->instruction, p->instruction, "task %s", t->name);
        bool known = false;
        for (int j = 0; j < nb; j++)
            known |= strcmp(b[j].name, t->dataset) == 0;
        cr_assert(known, "task %s: dataset '%s' has no builder", t->name, t->dataset);
        cr_assert(s_path_is(t->train[0], t->dataset, "train"), "task %s: %s", t->name,
                  t->train[0]);
    }
    plan_destroy(&plan);
}
