/* graph.c: see graph.h. Every stage is an argv list: the plan's `program` when given
 * (the user's own binary), else the built-in ofa-<stage> beside launch. Common flags
 * (--id, --ctl, --plan, --stats, --run-dir, and --curve FILE on tcp:// runs) are appended
 * after the plan's argv. */
#include "graph.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 64

typedef struct {
    char *argv[MAX_ARGS + 1];
    int n;
    char store[MAX_ARGS][1024];
} s_argv_t;

static void s_arg(s_argv_t *a, const char *s) {
    OFA_ASSERT(a->n < MAX_ARGS);
    snprintf(a->store[a->n], sizeof a->store[a->n], "%s", s);
    a->argv[a->n] = a->store[a->n];
    a->n++;
    a->argv[a->n] = NULL;
}

/* Start an argv with the stage's program: the plan's argv list, or bin_dir/ofa-NAME.
 * Returns 1 when it is a program of this build (beside launch), 0 for the user's own. */
static int s_program(s_argv_t *a, const plan_t *plan, const graph_env_t *env,
                     const char *stage) {
    a->n = 0;
    a->argv[0] = NULL;
    const plan_stage_t *st = plan_stage(plan, stage);
    if (st && st->program && st->nprogram > 0) {
        /* A bare built-in name runs the copy beside launch, not whatever PATH finds. */
        char built[1400];
        snprintf(built, sizeof built, "%s/%s", env->bin_dir, st->program[0]);
        if (!strchr(st->program[0], '/') && access(built, X_OK) == 0) {
            s_arg(a, built);
            for (int i = 1; i < st->nprogram; i++)
                s_arg(a, st->program[i]);
            return 1;
        }
        for (int i = 0; i < st->nprogram; i++)
            s_arg(a, st->program[i]);
        return 0;
    }
    char path[1400];
    snprintf(path, sizeof path, "%s/ofa-%s", env->bin_dir, stage);
    s_arg(a, path);
    return 1;
}

static void s_common(s_argv_t *a, const graph_env_t *env, const char *id) {
    char buf[1200];
    s_arg(a, "--id");
    s_arg(a, id);
    s_arg(a, "--plan");
    snprintf(buf, sizeof buf, "%s/plan.resolved.conf", env->run_dir);
    s_arg(a, buf);
    s_arg(a, "--stats");
    s_arg(a, env->stats_ep);
    s_arg(a, "--run-dir");
    s_arg(a, env->run_dir);
    /* The key file's path, never a key: argv is visible to every user of the host. */
    if (env->curve_keys[0]) {
        s_arg(a, "--curve");
        s_arg(a, env->curve_keys);
    }
}

int graph_tiers(const plan_t *plan, const char **tiers, int max) {
    int n = 0;
    for (int t = 0; t < plan->ntasks; t++) {
        const taskplan_t *tp = plan->tasks[t].plan;
        for (int i = 0; i < tp->ntiers; i++) {
            int seen = 0;
            for (int j = 0; j < n; j++)
                seen |= strcmp(tiers[j], tp->tiers[i]) == 0;
            if (!seen && n < max)
                tiers[n++] = tp->tiers[i];
        }
    }
    return n;
}

static int s_workers(const plan_t *plan, const char *stage, int dflt) {
    const plan_stage_t *st = plan_stage(plan, stage);
    return st && st->workers > 0 ? st->workers : dflt;
}

static int s_credits(const plan_t *plan, const char *stage) {
    const plan_stage_t *st = plan_stage(plan, stage);
    return st && st->credits > 0 ? st->credits : 0;
}

/* mpirun from $OFA_MPIRUN, else the first one on PATH; NULL when there is none. */
static const char *s_mpirun(char *buf, size_t len) {
    const char *e = getenv("OFA_MPIRUN");
    if (e && *e)
        return e;
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, len, "%.*s/mpirun", (int)n, path);
        if (n > 0 && access(buf, X_OK) == 0)
            return buf;
        path += n + (path[n] == ':');
    }
    return NULL;
}

/* trainer.ranks > 1: the ranks form one trainer group (stages/trainer/comm.h), started
 * as one process from which each rank learns its rank and world; its --id "trainer"
 * becomes trainer.RANK in each rank.
 *  - Locally: `mpirun -np W ofa-trainer ...`. Open MPI needs --allow-run-as-root for
 *    root, --oversubscribe to place more ranks than cores, and --bind-to none so that
 *    each rank's threads are not pinned to one core.
 *  - Under Slurm (env->slurm): the bare `ofa-trainer ... --group KIND`, which
 *    slurm_place() wraps in one srun step of W tasks (`srun --mpi=PLUGIN -n W ...`,
 *    trainer.mpi): srun starts the ranks itself and MPI_Init learns rank and world from
 *    the plugin. The group kind is named rather than left to `--group auto`, which
 *    recognises such a step only by Slurm's environment (comm_launched_by_mpi). */
static int s_trainer_group(const plan_t *plan, const graph_env_t *env, proctab_t *procs,
                           int world, char *err, size_t errlen) {
    s_argv_t a, t;
    char mp[1400], ws[16];
    snprintf(ws, sizeof ws, "%d", world);
    s_program(&t, plan, env, "trainer");
    s_common(&t, env, "trainer");
    s_arg(&t, "--in");
    s_arg(&t, env->batches_ep);
    s_arg(&t, "--world");
    s_arg(&t, ws);
    if (env->resume)
        s_arg(&t, "--resume");
    if (env->slurm) {
        s_arg(&t, "--group");
        s_arg(&t, plan->trainer.backend && strcmp(plan->trainer.backend, "cuda") == 0
                      ? "nccl" : "mpi");
        proctab_add(procs, "trainer", "trainer", PROC_CONSUMER, t.argv);
        return 0;
    }
    const char *mpirun = s_mpirun(mp, sizeof mp);
    if (!mpirun)
        return util_err(err, errlen, "trainer.ranks = %d: the ranks are started with mpirun, "
                        "which is not on PATH (install openmpi-bin: scripts/setup.sh; or set "
                        "OFA_MPIRUN)", world);
    a.n = 0;
    a.argv[0] = NULL;
    s_arg(&a, mpirun);
    s_arg(&a, "-np");
    s_arg(&a, ws);
    s_arg(&a, "--oversubscribe");
    s_arg(&a, "--bind-to");
    s_arg(&a, "none");
    if (geteuid() == 0)
        s_arg(&a, "--allow-run-as-root");
    for (int i = 0; i < t.n; i++)
        s_arg(&a, t.argv[i]);
    proctab_add(procs, "trainer", "trainer", PROC_CONSUMER, a.argv);
    return 0;
}

/* The arena flags go to this build's workers and batcher only: a user's own program
 * need not know them (it sends frames, and reads arena descriptors as docs/protocol.md
 * says). */
static void s_arena_args(s_argv_t *a, const graph_env_t *env, int builtin) {
    if (!env->arena_tag[0] || !builtin)
        return;
    char buf[32];
    s_arg(a, "--arena");
    s_arg(a, env->arena_tag);
    snprintf(buf, sizeof buf, "%d", env->arena_mb);
    s_arg(a, "--arena-mb");
    s_arg(a, buf);
}

int graph_build(const plan_t *plan, const graph_env_t *env, proctab_t *procs,
                char *err, size_t errlen) {
    s_argv_t a;
    char buf[64];

    s_program(&a, plan, env, "broker");
    s_common(&a, env, "broker");
    s_arg(&a, "--bind");
    s_arg(&a, env->broker_ep);
    snprintf(buf, sizeof buf, "%lld", (long long)plan->limits.message_bytes);
    s_arg(&a, "--max-msg-bytes");
    s_arg(&a, buf);
    proctab_add(procs, "broker", "broker", PROC_CRITICAL, a.argv);

    int builtin = s_program(&a, plan, env, "batcher");
    s_common(&a, env, "batcher");
    s_arg(&a, "--ctl");
    s_arg(&a, env->broker_ep);
    s_arg(&a, "--out");
    s_arg(&a, env->batches_ep);
    s_arena_args(&a, env, builtin);
    proctab_add(procs, "batcher", "batcher", PROC_CRITICAL, a.argv);

    const char *tiers[16];
    int ntiers = graph_tiers(plan, tiers, 16);
    for (int t = 0; t < ntiers; t++) {
        int n = s_workers(plan, tiers[t], 1);
        for (int w = 0; w < n; w++) {
            char id[64];
            snprintf(id, sizeof id, "%s.%d", tiers[t], w);
            int builtin = s_program(&a, plan, env, tiers[t]);
            s_common(&a, env, id);
            s_arg(&a, "--ctl");
            s_arg(&a, env->broker_ep);
            s_arg(&a, "--tier");
            s_arg(&a, tiers[t]);
            s_arena_args(&a, env, builtin);
            int credits = s_credits(plan, tiers[t]);
            if (credits > 0) {
                snprintf(buf, sizeof buf, "%d", credits);
                s_arg(&a, "--credits");
                s_arg(&a, buf);
            }
            proctab_add(procs, id, tiers[t], PROC_WORKER, a.argv);
        }
    }

    builtin = s_program(&a, plan, env, "source");
    s_common(&a, env, "source");
    s_arg(&a, "--ctl");
    s_arg(&a, env->broker_ep);
    s_arena_args(&a, env, builtin);
    proctab_add(procs, "source", "source", PROC_CRITICAL, a.argv);

    const char *consumer = plan->trainer.consumer ? plan->trainer.consumer : "trainer";
    if (strcmp(consumer, "sink") == 0) {
        char out[1200];
        s_program(&a, plan, env, "sink");
        s_common(&a, env, "sink");
        s_arg(&a, "--in");
        s_arg(&a, env->batches_ep);
        s_arg(&a, "--out");
        snprintf(out, sizeof out, "%s/delivered.tsv", env->run_dir);
        s_arg(&a, out);
        proctab_add(procs, "sink", "sink", PROC_CONSUMER, a.argv);
    } else if (strcmp(consumer, "trainer") == 0) {
        int world = plan->trainer.ranks > 0 ? plan->trainer.ranks : 1;
        if (world > 1)
            return s_trainer_group(plan, env, procs, world, err, errlen);
        for (int r = 0; r < world; r++) {
            char id[64], rank[16], ws[16];
            snprintf(id, sizeof id, "trainer.%d", r);
            snprintf(rank, sizeof rank, "%d", r);
            snprintf(ws, sizeof ws, "%d", world);
            s_program(&a, plan, env, "trainer");
            s_common(&a, env, id);
            s_arg(&a, "--in");
            s_arg(&a, env->batches_ep);
            s_arg(&a, "--rank");
            s_arg(&a, rank);
            s_arg(&a, "--world");
            s_arg(&a, ws);
            if (env->resume)
                s_arg(&a, "--resume");
            proctab_add(procs, id, "trainer", PROC_CONSUMER, a.argv);
        }
    } else {
        return util_err(err, errlen, "trainer.consumer: unknown consumer '%s'", consumer);
    }
    return 0;
}

int graph_write_dot(const plan_t *plan, proctab_t *procs, const char *path,
                    char *err, size_t errlen) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "digraph \"%s\" {\n  rankdir=LR;\n  node [shape=box];\n", plan->name);
    const char *tiers[16];
    int ntiers = graph_tiers(plan, tiers, 16);
    for (int i = 0; i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        fprintf(f, "  \"%s\" [label=\"%s\\n%s\"];\n", p->name, p->name, p->argv[0]);
    }
    fprintf(f, "  \"source\" -> \"broker\";\n");
    for (int i = 0; i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        if (p->role == PROC_WORKER)
            fprintf(f, "  \"broker\" -> \"%s\" [dir=both];\n", p->name);
        if (p->role == PROC_CONSUMER)
            fprintf(f, "  \"batcher\" -> \"%s\";\n", p->name);
    }
    fprintf(f, "  \"broker\" -> \"batcher\";\n");
    /* Per task, the route its samples take through the tiers. */
    for (int t = 0; t < plan->ntasks; t++)
        fprintf(f, "  // task %s: source -> %s -> batcher\n", plan->tasks[t].name,
                plan->tasks[t].plan->route);
    (void)ntiers;
    fprintf(f, "}\n");
    fclose(f);
    int rc = util_write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    return rc;
}

void graph_print(const plan_t *plan, proctab_t *procs, FILE *out) {
    fprintf(out, "plan %s: %d task(s), model %s, consumer %s\n", plan->name, plan->ntasks,
            plan->model.size, plan->trainer.consumer);
    fprintf(out, "processes:\n");
    for (int i = 0; i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        fprintf(out, "  %-12s", p->name);
        for (char **a = p->argv; *a; a++)
            fprintf(out, " %s", *a);
        fprintf(out, "\n");
    }
    for (int t = 0; t < plan->ntasks; t++) {
        char *r = taskplan_render(plan->tasks[t].plan, plan->tasks[t].name);
        fprintf(out, "%s", r);
        free(r);
        char why[512];
        if (taskplan_runnable(plan->tasks[t].plan, why, sizeof why) != 0)
            fprintf(out, "  (a real run refuses this task: %s)\n", why);
    }
}
