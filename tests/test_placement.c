/* test_placement.c: the plan's Slurm placement keys (placement.hubs, placement.trainer,
 * placement.workers_per_node, stages.NAME.nodes): how plans/planfile.c reads, checks and
 * writes them, and where launch/slurm.c's slurm_assign puts every process with them.
 * The real cluster is tested by e2e/slurm_test.sh. */
#include "planfile.h"
#include "slurm.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static char err[8192];

#define TASK "tasks = ( { name = \"cap\"; " \
             "instruction = \"[IMAGE:img] what does the image describe? -> [TEXT:cap]\"; " \
             "train = [\"/x.tsv\"]; columns = [\"id\", \"img\", \"cap\"]; } );\n"

static plan_t *load(const char *text) {
    return plan_load_string(text, "p.conf", "/tmp", err, sizeof err);
}

Test(placement, keys_are_read_and_written_back) {
    plan_t *p = load(TASK "placement = { hubs = \"n2\"; trainer = [\"n1\", \"2\"]; "
                     "workers_per_node = 2; };\n"
                     "stages = { image = { workers = 3; nodes = [\"n3\", \"n1\"]; }; };\n");
    cr_assert_not_null(p, "%s", err);
    cr_assert_str_eq(p->placement.hubs, "n2");
    cr_assert_eq(p->placement.ntrainer, 2);
    cr_assert_str_eq(p->placement.trainer[1], "2");
    cr_assert_eq(p->placement.workers_per_node, 2);
    const plan_stage_t *st = plan_stage(p, "image");
    cr_assert_eq(st->nnodes, 2);
    cr_assert_str_eq(st->nodes[0], "n3");
    /* The resolved plan carries them, and loads to the same values. */
    char *text = plan_resolved_text(p);
    cr_assert(strstr(text, "placement = {\n  hubs = \"n2\";\n  trainer = [\"n1\", \"2\"];\n"
                           "  workers_per_node = 2;\n};"), "%s", text);
    cr_assert(strstr(text, "nodes = [\"n3\", \"n1\"];"), "%s", text);
    plan_t *q = load(text);
    cr_assert_not_null(q, "%s", err);
    cr_assert_str_eq(q->placement.hubs, "n2");
    cr_assert_eq(q->placement.ntrainer, 2);
    cr_assert_eq(plan_stage(q, "image")->nnodes, 2);
    free(text);
    plan_destroy(&q);
    plan_destroy(&p);
}

Test(placement, defaults_are_empty) {
    plan_t *p = load(TASK);
    cr_assert_not_null(p, "%s", err);
    cr_assert_str_eq(p->placement.hubs, "");
    cr_assert_eq(p->placement.ntrainer, 0);
    cr_assert_eq(p->placement.workers_per_node, 0);
    cr_assert_eq(plan_stage(p, "image")->nnodes, 0);
    plan_destroy(&p);
}

Test(placement, bad_keys_are_reported_with_their_line) {
    plan_t *p = load(TASK "placement = {\n hubz = \"n1\";\n workers_per_node = -1;\n"
                     " trainer = [1];\n};\n"
                     "stages = { image = { nodes = \"\"; }; };\n");
    cr_assert_null(p);
    cr_assert(strstr(err, "p.conf:3: unknown key 'placement.hubz' (did you mean "
                          "'placement.hubs'?)"), "%s", err);
    cr_assert(strstr(err, "p.conf:4: 'placement.workers_per_node' = -1 is out of range"),
              "%s", err);
    cr_assert(strstr(err, "'placement.trainer'[0] wants a string, got an integer"), "%s", err);
    cr_assert(strstr(err, "stage 'image': 'nodes'[0] is empty"), "%s", err);
    p = load(TASK "placement = 3;\n");
    cr_assert_null(p);
    cr_assert(strstr(err, "'placement' wants a group { ... }, got an integer"), "%s", err);
}

/* The graph of a plan as graph_build orders it: hubs, workers, source, consumers. */
static proctab_t *graph(int nimage, int ntrainer) {
    proctab_t *t = proctab_new("/tmp");
    char *argv[] = {"prog", NULL};
    char name[32];
    proctab_add(t, "broker", "broker", PROC_CRITICAL, argv);
    proctab_add(t, "batcher", "batcher", PROC_CRITICAL, argv);
    for (int i = 0; i < nimage; i++) {
        snprintf(name, sizeof name, "image.%d", i);
        proctab_add(t, name, "image", PROC_WORKER, argv);
    }
    proctab_add(t, "tokenize.0", "tokenize", PROC_WORKER, argv);
    proctab_add(t, "source", "source", PROC_CRITICAL, argv);
    for (int i = 0; i < ntrainer; i++) {
        snprintf(name, sizeof name, "trainer.%d", i);
        proctab_add(t, name, "trainer", PROC_CONSUMER, argv);
    }
    return t;
}

static char *nodes[] = {"n1", "n2", "n3"};

Test(placement, default_rule_without_keys) {
    proctab_t *t = graph(3, 2);
    int at[16];
    cr_assert_eq(slurm_assign(NULL, t, nodes, 3, at, err, sizeof err), 0, "%s", err);
    /* broker batcher image.0-2 tokenize.0 source trainer.0-1 */
    int want[] = {0, 0, 1, 2, 0, 1, 0, 0, 0};
    for (int i = 0; i < 9; i++)
        cr_assert_eq(at[i], want[i], "%s", proctab_get(t, i)->name);
    proctab_destroy(&t);
}

Test(placement, keys_move_hubs_trainer_ranks_and_a_stage) {
    plan_t *p = load("trainer = { ranks = 2; };\n" TASK
                     "placement = { hubs = \"n2\"; trainer = [\"n3\", \"0\"]; };\n"
                     "stages = { image = { workers = 3; nodes = [\"n3\", \"1\"]; }; };\n");
    cr_assert_not_null(p, "%s", err);
    proctab_t *t = graph(3, 2);
    int at[16];
    cr_assert_eq(slurm_assign(p, t, nodes, 3, at, err, sizeof err), 0, "%s", err);
    /* image.k on its list's (k mod 2)-th node; tokenize.0 by the default rule (it is the
     * 4th worker: (3 + 1) mod 3 = 1); trainer ranks on n3 then n1. */
    int want[] = {1, 1, 2, 1, 2, 1, 1, 2, 0};
    for (int i = 0; i < 9; i++)
        cr_assert_eq(at[i], want[i], "%s on %d, want %d", proctab_get(t, i)->name, at[i],
                     want[i]);
    proctab_destroy(&t);
    plan_destroy(&p);
}

Test(placement, workers_per_node_passes_over_full_nodes) {
    plan_t *p = load(TASK "placement = { workers_per_node = 2; };\n"
                     "stages = { image = { workers = 5; }; };\n");
    cr_assert_not_null(p, "%s", err);
    proctab_t *t = graph(5, 1);
    int at[16];
    cr_assert_eq(slurm_assign(p, t, nodes, 3, at, err, sizeof err), 0, "%s", err);
    /* image.0-4 would go 1 2 0 1 2; tokenize.0 (k = 5) would go to 0: room for 2 each. */
    int load_of[3] = {0};
    for (int i = 2; i < 8; i++)
        load_of[at[i]]++;
    for (int n = 0; n < 3; n++)
        cr_assert_eq(load_of[n], 2, "node %d holds %d workers", n, load_of[n]);
    proctab_destroy(&t);
    /* Seven workers do not fit 3 nodes of 2. */
    t = graph(6, 1);
    cr_assert_eq(slurm_assign(p, t, nodes, 3, at, err, sizeof err), -1);
    cr_assert(strstr(err, "placement: worker tokenize.0 does not fit: each of its 3 node(s) "
                          "already holds placement.workers_per_node = 2 workers"), "%s", err);
    proctab_destroy(&t);
    plan_destroy(&p);
}

Test(placement, a_node_outside_the_allocation_is_named) {
    plan_t *p = load(TASK "placement = { hubs = \"n9\"; };\n");
    cr_assert_not_null(p, "%s", err);
    proctab_t *t = graph(1, 1);
    int at[16];
    cr_assert_eq(slurm_assign(p, t, nodes, 3, at, err, sizeof err), -1);
    cr_assert(strstr(err, "placement.hubs: no node 'n9' in the allocation (3 nodes, first n1)"),
              "%s", err);
    plan_destroy(&p);
    p = load(TASK "stages = { image = { nodes = [\"n1\", \"3\"]; }; };\n");
    cr_assert_not_null(p, "%s", err);
    cr_assert_eq(slurm_assign(p, t, nodes, 3, at, err, sizeof err), -1);
    cr_assert(strstr(err, "stages.image.nodes[1]: no node '3' in the allocation"), "%s", err);
    proctab_destroy(&t);
    plan_destroy(&p);
}

Test(placement, node_references) {
    cr_assert_eq(slurm_node_ref(nodes, 3, "n2"), 1);
    cr_assert_eq(slurm_node_ref(nodes, 3, "2"), 2);
    cr_assert_eq(slurm_node_ref(nodes, 3, "3"), -1);
    cr_assert_eq(slurm_node_ref(nodes, 3, "-1"), -1);
    cr_assert_eq(slurm_node_ref(nodes, 3, ""), -1);
    cr_assert_eq(slurm_node_ref(nodes, 3, "n"), -1);
}
