/* launch: reads a plan, compiles its tasks, builds the process graph, starts and
 * supervises every process, and writes the run directory's records.
 *
 *   launch [--dry-run] [--resume] [--slurm|--local] [--run-dir DIR] PLAN
 *   launch data NAME [--out DIR]        build a dataset from Debian packages
 *   launch infer CKPT --instruction '...' --input col=path ...
 *   launch top [--once] RUN_DIR         live per-process figures and the bottleneck
 *   launch profile [--seconds S] PLAN   a short traced run: RUN/trace.json
 *   launch report RUN_DIR               RUN_DIR/report.html (docs/profiling.md)
 *
 * Supervision rules: a crashed worker is restarted with back-off and given up after
 * repeated crashes; a crash of the broker, the source, the batcher or a trainer rank
 * stops the run with the reason; the run ends when every consumer (sink or trainer
 * ranks) exits 0; SIGINT/SIGTERM asks the consumers to checkpoint and stop, then stops
 * the rest. */
#include "graph.h"
#include "planfile.h"
#include "proc.h"
#include "profile.h"
#include "runner.h"
#include "tools.h"
#include "util.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: launch [--dry-run] [--resume] [--run-dir DIR] [--bin-dir DIR] PLAN\n"
            "       launch data NAME [--out DIR]\n"
            "       launch infer CKPT --instruction TEXT --input COL=PATH ...\n"
            "       launch top [--once] [--interval S] [--window S] RUN_DIR\n"
            "       launch profile [--seconds S] [--run-dir DIR] PLAN\n"
            "       launch report [--out FILE] RUN_DIR\n"
            "  --dry-run   compile the plan, print the process graph and each task's stage\n"
            "              chain, write graph.dot into the run directory; start nothing\n"
            "  --resume    continue the newest run of this plan (or --run-dir) from its\n"
            "              last checkpoint\n"
            "  --run-dir   run directory (default RUN_DIR/<plan>-<time> from the plan)\n"
            "  --bin-dir   folder of the ofa-* stage programs (default: beside launch)\n"
            "  --slurm     run every process as a job step of the current Slurm allocation\n"
            "              (the default when SLURM_JOB_ID is set; see docs/cluster.md)\n"
            "  --local     run locally even inside a Slurm allocation\n");
}

/* The folder of this executable: the built-in stage programs live beside it. */
static void s_self_dir(char *out, size_t outlen) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) {
        snprintf(out, outlen, ".");
        return;
    }
    path[n] = 0;
    snprintf(out, outlen, "%s", dirname(path));
}

static int s_run_data(int argc, char **argv) {
    if (argc < 3 || strcmp(argv[2], "--help") == 0) {
        fprintf(argc < 3 ? stderr : stdout, "usage: launch data NAME [--out DIR]\n");
        return argc < 3 ? 2 : 0;
    }
    char script[PATH_MAX];
    snprintf(script, sizeof script, "%s/scripts/build_data.py", OFA_SOURCE_DIR);
    char *args[16];
    int n = 0;
    args[n++] = "/usr/bin/python3";
    args[n++] = script;
    for (int i = 2; i < argc && n < 15; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(args[0], args);
    util_fatal("is python3 installed at /usr/bin/python3? run scripts/setup.sh",
               "cannot run %s: %s", args[0], strerror(errno));
}

static int s_run_infer(int argc, char **argv) {
    char dir[PATH_MAX], prog[PATH_MAX + 16];
    s_self_dir(dir, sizeof dir);
    snprintf(prog, sizeof prog, "%s/ofa-infer", dir);
    argv[1] = prog;
    execv(prog, argv + 1);
    util_fatal("build the project first (scripts/setup.sh)", "cannot run %s: %s", prog,
               strerror(errno));
}

/* The newest folder RUN_ROOT/<name>-* (for --resume), or -1. */
static int s_latest_run(const char *root, const char *name, char *out, size_t outlen) {
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof cmd, "ls -1d '%s'/'%s'-* 2>/dev/null | sort | tail -n 1", root, name);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int ok = fgets(out, (int)outlen, p) != NULL;
    pclose(p);
    if (!ok)
        return -1;
    out[strcspn(out, "\n")] = 0;
    return out[0] ? 0 : -1;
}

int main(int argc, char **argv) {
    util_set_progname("launch");
    if (argc >= 2 && strcmp(argv[1], "data") == 0)
        return s_run_data(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "infer") == 0)
        return s_run_infer(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "top") == 0)
        return top_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "report") == 0)
        return report_main(argc, argv);
    /* launch profile: the plan's run with span tracing and a time limit (--seconds). */
    int profile = argc >= 2 && strcmp(argv[1], "profile") == 0;

    runner_opts_t o;
    memset(&o, 0, sizeof o);
    const char *plan_path = NULL;
    for (int i = 1 + profile; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            s_usage(stdout);
            return 0;
        } else if (strcmp(a, "--dry-run") == 0) {
            o.dry_run = 1;
        } else if (strcmp(a, "--resume") == 0) {
            o.env.resume = 1;
        } else if (strcmp(a, "--slurm") == 0) {
            o.slurm = 1;
        } else if (strcmp(a, "--local") == 0) {
            o.slurm = -1;
        } else if (strcmp(a, "--run-dir") == 0 && i + 1 < argc) {
            snprintf(o.env.run_dir, sizeof o.env.run_dir, "%s", argv[++i]);
        } else if (profile && strcmp(a, "--seconds") == 0 && i + 1 < argc) {
            char *end;
            o.time_limit_s = strtod(argv[++i], &end);
            if (*end || !(o.time_limit_s > 0) || o.time_limit_s > 86400)
                util_fatal(NULL, "--seconds needs a number of seconds (0 < S <= 86400)");
        } else if (strcmp(a, "--bin-dir") == 0 && i + 1 < argc) {
            snprintf(o.env.bin_dir, sizeof o.env.bin_dir, "%s", argv[++i]);
        } else if (a[0] == '-') {
            s_usage(stderr);
            util_fatal(NULL, "unknown option '%s'", a);
        } else if (!plan_path) {
            plan_path = a;
        } else {
            util_fatal("give one plan file", "unexpected argument '%s'", a);
        }
    }
    if (!plan_path) {
        s_usage(stderr);
        util_fatal(NULL, "no plan file given");
    }

    static char err[65536];
    plan_t *plan = plan_load(plan_path, err, sizeof err);
    if (!plan) {
        fprintf(stderr, "%s\n", err);
        util_fatal("see docs/plan.md for every key", "%s: the plan has errors", plan_path);
    }
    if (!o.env.bin_dir[0])
        s_self_dir(o.env.bin_dir, sizeof o.env.bin_dir);

    /* The run directory: given, the newest of this plan (--resume), or a new one. */
    if (!o.env.run_dir[0]) {
        if (o.env.resume) {
            if (s_latest_run(plan->run_dir, plan->name, o.env.run_dir, sizeof o.env.run_dir))
                util_fatal("give the run with --run-dir", "--resume: no earlier run of '%s' in %s",
                           plan->name, plan->run_dir);
        } else {
            char stamp[32];
            time_t now = time(NULL);
            strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
            snprintf(o.env.run_dir, sizeof o.env.run_dir, "%s/%s-%s%s", plan->run_dir,
                     plan->name, stamp, o.dry_run ? "-dry" : profile ? "-profile" : "");
        }
    }
    if (o.env.run_dir[0] != '/') {
        char cwd[PATH_MAX], tmp[sizeof o.env.run_dir];
        if (getcwd(cwd, sizeof cwd)) {
            snprintf(tmp, sizeof tmp, "%s/%s", cwd, o.env.run_dir);
            snprintf(o.env.run_dir, sizeof o.env.run_dir, "%s", tmp);
        }
    }
    if (profile && !o.dry_run) {
        if (o.time_limit_s <= 0)
            o.time_limit_s = 20;
        if (util_mkdirs(o.env.run_dir, err, sizeof err) ||
            profile_setup(o.env.run_dir, err, sizeof err))
            util_fatal(NULL, "profile: %s", err);
    }
    int rc = runner_run(plan, &o, err, sizeof err);
    if (rc != 0 && err[0])
        fprintf(stderr, "launch: %s\n", err);
    if (profile && !o.dry_run) {
        /* A failed run still leaves spans worth looking at: merge them either way. */
        char perr[1024];
        if (profile_write(o.env.run_dir, stdout, perr, sizeof perr) != 0) {
            fprintf(stderr, "launch profile: %s\n", perr);
            rc = rc ? rc : 1;
        }
    }
    plan_destroy(&plan);
    return rc;
}
