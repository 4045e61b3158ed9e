/* test_slurm.c: the pure parts of launch/slurm.c: the default placement rule, the srun
 * argv a process is wrapped in, and the parsing of scontrol's and squeue's output that
 * finds node addresses and step ids. The real cluster is tested by e2e/slurm_test.sh. */
#include "slurm.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
