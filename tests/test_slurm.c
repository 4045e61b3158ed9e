/* test_slurm.c: the pure parts of launch/slurm.c: the default placement rule, the srun
 * argv a process is wrapped in, and the parsing of scontrol's and squeue's output that
 * finds node addresses and step ids. The real cluster is tested by e2e/slurm_test.sh. */
#include "slurm.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(slurm, placement_puts_tiers_on_first_node_and_spreads_workers) {
    cr_assert_eq(slurm_place_index(PROC_CRITICAL, 0, 3), 0);
    cr_assert_eq(slurm_place_index(PROC_CONSUMER, 5, 3), 0);
    /* Workers start at the second node and wrap around. */
    int want[] = {1, 2, 0, 1};
    for (int k = 0; k < 4; k++)
        cr_assert_eq(slurm_place_index(PROC_WORKER, k, 3), want[k], "worker %d", k);
    cr_assert_eq(slurm_place_index(PROC_WORKER, 3, 1), 0);
}

Test(slurm, srun_argv_is_prefix_plus_program) {
    char *argv[] = {"/bin/ofa-image", "--id", "image.0", NULL};
    char **a = slurm_srun_argv("n2", "image.0", argv);
    const char *want[] = {"srun", "--overlap", "-N1", "-n1", "-w", "n2",
                          "--kill-on-bad-exit=1", "--input=none", "-J", "image.0",
                          "/bin/ofa-image", "--id", "image.0"};
    int n = 0;
    while (a[n])
        n++;
    cr_assert_eq(n, 13);
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(a[i], want[i]);
        free(a[i]);
    }
    free(a);
}

Test(slurm, node_addr_parses_the_token_not_a_suffix) {
    char out[64];
    const char *t = "NodeName=n1 Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName=localhost\n";
    cr_assert_eq(slurm_parse_node_addr(t, out, sizeof out), 0);
    cr_assert_str_eq(out, "127.0.0.1");
    cr_assert_eq(slurm_parse_node_addr("NodeName=n1 XNodeAddr=1.2.3.4\n", out, sizeof out), -1);
    cr_assert_eq(slurm_parse_node_addr("", out, sizeof out), -1);
}

Test(slurm, step_of_a_name_is_the_newest_of_this_job) {
    const char *t = "7.0|broker\n7.3|image.1\n7.12|image.1\n8.20|image.1\n7.4|image.10\n"
                    "garbage\n7.x|image.1\n";
    cr_assert_eq(slurm_parse_step(t, "7", "image.1"), 12);
    cr_assert_eq(slurm_parse_step(t, "7", "image.10"), 4);
    cr_assert_eq(slurm_parse_step(t, "7", "broker"), 0);
    cr_assert_eq(slurm_parse_step(t, "7", "sink"), -1);
    cr_assert_eq(slurm_parse_step(t, "77", "image.1"), -1);
}

/* ---- the trainer group as one srun step (trainer.ranks > 1) ------------------------- */

#include "graph.h"
#include "planfile.h"

static char err[8192];

#define TASK "tasks = ( { name = \"cap\"; " \
             "instruction = \"[IMAGE:img] what does the image describe? -> [TEXT:cap]\"; " \
             "train = [\"/x.tsv\"]; columns = [\"id\", \"img\", \"cap\"]; } );\n"

static plan_t *load(const char *text) {
    return plan_load_string(text, "p.conf", "/tmp", err, sizeof err);
}

static int argc_of(char **a) {
    int n = 0;
    while (a[n])
        n++;
    return n;
}

static void free_argv(char **a) {
    for (int i = 0; a[i]; i++)
        free(a[i]);
    free(a);
}

Test(slurm, group_srun_argv_is_one_step_of_all_ranks) {
    char *argv[] = {"/bin/ofa-trainer", "--id", "trainer", "--world", "3", NULL};
    char *rank_nodes[] = {"n3", "n2", "n3"};
    char **a = slurm_group_srun_argv("pmix", 3, rank_nodes, "trainer", argv);
    const char *want[] = {"srun", "--overlap", "--overcommit", "--mpi=pmix", "-n", "3",
                          "-m", "arbitrary", "-w", "n3,n2,n3", "--kill-on-bad-exit=1",
                          "--input=none", "-J", "trainer", "/bin/ofa-trainer", "--id",
                          "trainer", "--world", "3"};
    int n = argc_of(a);
    cr_assert_eq(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(a[i], want[i], "argv[%d]", i);
    free_argv(a);
    /* One rank per node name, in rank order, whatever the plugin. */
    char *one[] = {"n1"};
    a = slurm_group_srun_argv("pmi2", 1, one, "trainer", argv);
    cr_assert_str_eq(a[3], "--mpi=pmi2");
    cr_assert_str_eq(a[5], "1");
    cr_assert_str_eq(a[9], "n1");
    free_argv(a);
}

static char *nodes3[] = {"n1", "n2", "n3"};

Test(slurm, group_ranks_follow_placement_trainer) {
    int at[8];
    /* rank r on placement.trainer[r mod 2]: n3, n2, n3, n2 */
    plan_t *p = load("trainer = { ranks = 4; };\n" TASK
                     "placement = { trainer = [\"n3\", \"1\"]; };\n");
    cr_assert_not_null(p, "%s", err);
    cr_assert_eq(slurm_group_nodes(p, 4, nodes3, 3, at, err, sizeof err), 0, "%s", err);
    int want[] = {2, 1, 2, 1};
    for (int r = 0; r < 4; r++)
        cr_assert_eq(at[r], want[r], "rank %d on %d", r, at[r]);
    plan_destroy(&p);
    /* No placement.trainer: every rank on the hubs' node. */
    p = load("trainer = { ranks = 2; };\n" TASK "placement = { hubs = \"2\"; };\n");
    cr_assert_not_null(p, "%s", err);
    cr_assert_eq(slurm_group_nodes(p, 2, nodes3, 3, at, err, sizeof err), 0, "%s", err);
    cr_assert(at[0] == 2 && at[1] == 2);
    plan_destroy(&p);
    cr_assert_eq(slurm_group_nodes(NULL, 2, nodes3, 3, at, err, sizeof err), 0, "%s", err);
    cr_assert(at[0] == 0 && at[1] == 0);
    /* A node outside the allocation is named with its key and index. */
    p = load("trainer = { ranks = 2; };\n" TASK "placement = { trainer = [\"n1\", \"n7\"]; };\n");
    cr_assert_not_null(p, "%s", err);
    cr_assert_eq(slurm_group_nodes(p, 2, nodes3, 3, at, err, sizeof err), -1);
    cr_assert(strstr(err, "placement.trainer[1]: no node 'n7' in the allocation"), "%s", err);
    plan_destroy(&p);
}

/* srun --mpi=list as Slurm 22.05 prints it here, and with a comma list of versions. */
Test(slurm, mpi_list_names_the_offered_plugins) {
    const char *t = "MPI plugin types are...\n\tpmix\n\tnone\n\tcray_shasta\n\tpmi2\n"
                    "specific pmix plugin versions available: pmix_v4\n";
    char off[256];
    cr_assert_eq(slurm_parse_mpi_list(t, "pmix", off, sizeof off), 1);
    cr_assert_str_eq(off, "pmix, none, cray_shasta, pmi2, pmix_v4");
    cr_assert_eq(slurm_parse_mpi_list(t, "pmix_v4", off, sizeof off), 1);
    cr_assert_eq(slurm_parse_mpi_list(t, "pmi2", off, sizeof off), 1);
    /* Neither a prefix of a name nor a word of a heading is a plugin. */
    cr_assert_eq(slurm_parse_mpi_list(t, "pmi", off, sizeof off), 0);
    cr_assert_eq(slurm_parse_mpi_list(t, "pmi9", off, sizeof off), 0);
    cr_assert_eq(slurm_parse_mpi_list(t, "plugin", off, sizeof off), 0);
    cr_assert_eq(slurm_parse_mpi_list(t, "specific", off, sizeof off), 0);
    const char *t2 = "MPI plugin types are...\n\tnone\n\tpmix\n"
                     "specific pmix plugin versions available: pmix_v3,pmix_v5\n";
    cr_assert_eq(slurm_parse_mpi_list(t2, "pmix_v5", off, sizeof off), 1);
    cr_assert_str_eq(off, "none, pmix, pmix_v3, pmix_v5");
    cr_assert_eq(slurm_parse_mpi_list(t2, "pmi2", off, sizeof off), 0);
    cr_assert_eq(slurm_parse_mpi_list("", "pmix", off, sizeof off), 0);
    cr_assert_str_eq(off, "");
}

Test(slurm, mpi_key_defaults_to_pmix_and_is_checked) {
    plan_t *p = load(TASK);
    cr_assert_not_null(p, "%s", err);
    cr_assert_str_eq(p->trainer.mpi, "pmix");
    plan_destroy(&p);
    p = load("trainer = { ranks = 2; mpi = \"pmi2\"; };\n" TASK);
    cr_assert_not_null(p, "%s", err);
    cr_assert_str_eq(p->trainer.mpi, "pmi2");
    char *text = plan_resolved_text(p);
    cr_assert(strstr(text, "mpi = \"pmi2\";"), "%s", text);
    plan_t *q = load(text);
    cr_assert_not_null(q, "%s", err);
    cr_assert_str_eq(q->trainer.mpi, "pmi2");
    free(text);
    plan_destroy(&q);
    plan_destroy(&p);
    /* The name becomes an srun option: nothing but a plugin name is accepted. */
    p = load("trainer = {\n ranks = 2;\n mpi = \"pmix --pty\";\n};\n" TASK);
    cr_assert_null(p);
    cr_assert(strstr(err, "p.conf:3: trainer.mpi: 'pmix --pty' is not an MPI plugin name"),
              "%s", err);
    cr_assert_null(load("trainer = { mpi = \"\"; };\n" TASK));
}

/* graph_build under Slurm: the group is the bare ofa-trainer of all ranks, told its
 * group kind (not left to `--group auto`'s reading of Slurm's environment), with no
 * mpirun; slurm_place wraps exactly this argv in the step above. */
Test(slurm, graph_starts_the_group_without_mpirun_under_slurm) {
    plan_t *p = load("trainer = { ranks = 2; backend = \"cpu\"; };\n" TASK);
    cr_assert_not_null(p, "%s", err);
    graph_env_t env;
    memset(&env, 0, sizeof env);
    snprintf(env.run_dir, sizeof env.run_dir, "/tmp/run");
    snprintf(env.bin_dir, sizeof env.bin_dir, "/nonexistent/bin");
    snprintf(env.broker_ep, sizeof env.broker_ep, "tcp://10.0.0.1:5000");
    snprintf(env.batches_ep, sizeof env.batches_ep, "tcp://10.0.0.1:5001");
    snprintf(env.stats_ep, sizeof env.stats_ep, "tcp://10.0.0.2:5002");
    env.slurm = 1;
    proctab_t *t = proctab_new("/tmp");
    cr_assert_eq(graph_build(p, &env, t, err, sizeof err), 0, "%s", err);
    proc_t *tr = proctab_get(t, proctab_count(t) - 1);
    cr_assert_str_eq(tr->name, "trainer");
    cr_assert(strstr(tr->argv[0], "ofa-trainer"), "%s", tr->argv[0]);
    int n = argc_of(tr->argv), world = 0, group = 0;
    for (int i = 0; i + 1 < n; i++) {
        cr_assert(!strstr(tr->argv[i], "mpirun"), "%s", tr->argv[i]);
        world |= !strcmp(tr->argv[i], "--world") && !strcmp(tr->argv[i + 1], "2");
        group |= !strcmp(tr->argv[i], "--group") && !strcmp(tr->argv[i + 1], "mpi");
    }
    cr_assert(world && group);
    proctab_destroy(&t);
    /* A cuda plan's ranks form an NCCL group. */
    plan_destroy(&p);
    p = load("trainer = { ranks = 2; backend = \"cuda\"; };\n" TASK);
    cr_assert_not_null(p, "%s", err);
    t = proctab_new("/tmp");
    cr_assert_eq(graph_build(p, &env, t, err, sizeof err), 0, "%s", err);
    tr = proctab_get(t, proctab_count(t) - 1);
    n = argc_of(tr->argv);
    cr_assert_str_eq(tr->argv[n - 1], "nccl");
    proctab_destroy(&t);
    /* Locally the same plan is one mpirun line (where mpirun is found). */
    env.slurm = 0;
    setenv("OFA_MPIRUN", "/usr/bin/mpirun", 1);
    t = proctab_new("/tmp");
    cr_assert_eq(graph_build(p, &env, t, err, sizeof err), 0, "%s", err);
    tr = proctab_get(t, proctab_count(t) - 1);
    cr_assert_str_eq(tr->argv[0], "/usr/bin/mpirun");
    proctab_destroy(&t);
    plan_destroy(&p);
}

/* A group whose ranks failed in MPI_Init (Open MPI's words under a plugin it cannot use)
 * gets a hint naming the plugin; any other end of the step does not. */
Test(slurm, mpi_init_failure_names_the_plugin) {
    char path[] = "/tmp/test_slurm_log_XXXXXX", out[256];
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "The application appears to have been direct launched using \"srun\",\n"
               "but OMPI was not built with SLURM's PMI support and therefore cannot\n"
               "execute.\n*** An error occurred in MPI_Init\n*** on a NULL communicator\n"
               "srun: error: n2: tasks 0-1: Exited with exit code 1\n");
    fclose(f);
    cr_assert_eq(slurm_mpi_hint(path, "pmi2", out, sizeof out), 1);
    cr_assert(strstr(out, "failed in MPI_Init under srun --mpi=pmi2 (trainer.mpi)"), "%s", out);
    f = fopen(path, "w");
    fprintf(f, "slurmstepd-n2: error: *** STEP 4.5 ON n2 CANCELLED ***\n"
               "srun: error: n2: tasks 0-1: Killed\n");
    fclose(f);
    out[0] = 0;
    cr_assert_eq(slurm_mpi_hint(path, "pmix", out, sizeof out), 0);
    cr_assert_str_eq(out, "");
    unlink(path);
    cr_assert_eq(slurm_mpi_hint(path, "pmix", out, sizeof out), 0);
}
