/* runner.c: see runner.h.
 *
 * The supervision loop is the one poll loop of launch: it waits on the stats socket with
 * a short timeout, and on every turn reaps exited children (SIGCHLD only sets a flag),
 * restarts crashed workers whose back-off has passed, and acts on SIGINT/SIGTERM. */
#include "runner.h"
#include "curve.h"
#include "shmarena.h"
#include "slurm.h"
#include "statsdb.h"
#include "statsrx.h"
#include "timeline.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

static volatile sig_atomic_t s_stop_signal = 0;

static void s_on_signal(int sig) { s_stop_signal = sig; }

typedef struct {
    const plan_t *plan;
    runner_opts_t *opts;
    proctab_t *procs;
    statsdb_t *db;
    int fatal;                 /* a process the run cannot do without died */
    char fatal_reason[1024];
    int consumers_left;
} s_run_t;

/* Signal hook of a local trainer group (graph.c: mpirun -np W ofa-trainer): a signal
 * for the group goes to its ranks, mpirun's children. mpirun answers SIGINT or SIGTERM
 * by terminating the ranks (SIGKILL after a moment) and exits 1 even when they stop
 * cleanly, which would read as the group dying; the ranks themselves checkpoint and
 * exit 0, and so then does mpirun. SIGKILL, and a group whose ranks are not started
 * yet, go to mpirun. */
static int s_signal_mpirun_ranks(void *ctx, proc_t *p, int sig) {
    (void)ctx;
    if (sig == SIGKILL || p->role != PROC_CONSUMER || strcmp(p->name, "trainer") != 0)
        return -1;
    return proctab_signal_children(p, sig) > 0 ? 0 : -1;
}

/* A crash handler: restart workers and the batcher, fail the run for everything else. */
static void s_on_exit(void *ctx, proc_t *p) {
    s_run_t *run = ctx;
    char how[128];
    proctab_describe_status(p->last_status, how, sizeof how);
    if (p->role == PROC_CONSUMER) {
        if (p->exited_ok) {
            run->consumers_left--;
            fprintf(stderr, "launch: %s finished\n", p->name);
        } else if (!run->fatal) {
            run->fatal = 1;
            char log[1200], hint[256] = "";
            snprintf(log, sizeof log, "%s/logs/%s.log", run->opts->env.run_dir, p->name);
            /* Under Slurm the trainer group is one srun step through trainer.mpi. */
            if (run->opts->env.slurm && strcmp(p->name, "trainer") == 0 &&
                run->plan->trainer.ranks > 1)
                slurm_mpi_hint(log, run->plan->trainer.mpi, hint, sizeof hint);
            snprintf(run->fatal_reason, sizeof run->fatal_reason, "%s died (%s); see %s%s",
                     p->name, how, log, hint);
        }
        return;
    }
    if (s_stop_signal)
        return;
    if (p->role == PROC_WORKER) {
        if (proctab_schedule_restart(run->procs, p, 5, 30.0)) {
            fprintf(stderr, "launch: worker %s %s; restarting (restart %d)\n", p->name, how,
                    p->restarts);
            return;
        }
        /* Given up: the run fails only when no worker of that tier is left. */
        int alive = 0;
        for (int i = 0; i < proctab_count(run->procs); i++) {
            proc_t *q = proctab_get(run->procs, i);
            alive += strcmp(q->tier, p->tier) == 0 && !q->gave_up;
        }
        fprintf(stderr, "launch: worker %s crashed %d times in a row (%s); giving up on it; "
                "see %s/logs/%s.log, and %s/logs/broker.log for the samples it held each "
                "time (\"%s held task ... id ...\")\n", p->name, p->crashes_recent, how,
                run->opts->env.run_dir, p->name, run->opts->env.run_dir, p->name);
        if (alive == 0 && !run->fatal) {
            run->fatal = 1;
            snprintf(run->fatal_reason, sizeof run->fatal_reason,
                     "every %s worker crashed repeatedly; last: %s (%s); see %s/logs/", p->tier,
                     p->name, how, run->opts->env.run_dir);
        }
        return;
    }
    if (strcmp(p->tier, "batcher") == 0 && !p->exited_ok) {
        /* The broker keeps what the batcher has not acknowledged and sends it to the
         * restarted one, which cuts the same batches (docs/protocol.md, the ack
         * contract): a crashed batcher is restarted like a worker, and the run fails
         * only when it crashes in a loop. */
        if (proctab_schedule_restart(run->procs, p, 5, 30.0)) {
            fprintf(stderr, "launch: %s %s; restarting (restart %d)\n", p->name, how,
                    p->restarts);
            return;
        }
        if (!run->fatal) {
            run->fatal = 1;
            snprintf(run->fatal_reason, sizeof run->fatal_reason,
                     "%s crashed %d times in a row (%s); see %s/logs/%s.log", p->name,
                     p->crashes_recent, how, run->opts->env.run_dir, p->name);
        }
        return;
    }
    if (!run->fatal && !(p->exited_ok && run->consumers_left == 0)) {
        run->fatal = 1;
        snprintf(run->fatal_reason, sizeof run->fatal_reason,
                 "%s %s, and the run cannot go on without it; see %s/logs/%s.log", p->name,
                 p->exited_ok ? "exited early" : how, run->opts->env.run_dir, p->name);
    }
}

/* Run a helper program to completion (the BPE trainer). Returns its exit status. */
static int s_run_sync(char *const argv[], const char *log_path) {
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        FILE *f = freopen(log_path, "a", stdout);
        (void)f;
        dup2(1, 2);
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

/* Learn the BPE merges from every text column of every task's training files plus the
 * prompts' plain text, into RUN/bpe.bin (kept as is on --resume). */
static int s_train_bpe(const plan_t *plan, const runner_opts_t *o, char *err, size_t errlen) {
    char out[1200], prompts[1200], log_path[1200];
    snprintf(out, sizeof out, "%s/bpe.bin", o->env.run_dir);
    if (o->env.resume && access(out, R_OK) == 0)
        return 0;
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", o->env.run_dir);
    snprintf(log_path, sizeof log_path, "%s/logs/bpe-train.log", o->env.run_dir);
    FILE *pf = fopen(prompts, "w");
    if (!pf)
        return util_err(err, errlen, "%s: %s", prompts, strerror(errno));

    enum { MAXA = 512 };
    static char store[MAXA][1100];
    char *argv[MAXA + 1];
    int n = 0;
#define ARG(...) do { if (n < MAXA) { snprintf(store[n], sizeof store[n], __VA_ARGS__); \
                      argv[n] = store[n]; n++; } } while (0)
    ARG("%s/ofa-bpe-train", o->env.bin_dir);
    ARG("--out");
    ARG("%s", out);
    ARG("--vocab");
    ARG("%d", plan->model.vocab_size);
    ARG("--text");
    ARG("%s", prompts);
    for (int t = 0; t < plan->ntasks; t++) {
        const plan_task_t *task = &plan->tasks[t];
        const taskplan_t *tp = task->plan;
        for (int k = 0; k < tp->ntmpls; k++) {
            const taskplan_template_t *tm = &tp->tmpls[k];
            for (int s = 0; s < tm->nsrc; s++)
                for (int i = 0; i < tm->src[s].nitems; i++)
                    if (tm->src[s].items[i].kind == TP_ITEM_TEXT)
                        fprintf(pf, "%s\n", tm->src[s].items[i].text);
            for (int s = 0; s < tm->ntgt; s++)
                for (int i = 0; i < tm->tgt[s].nitems; i++)
                    if (tm->tgt[s].items[i].kind == TP_ITEM_TEXT)
                        fprintf(pf, "%s\n", tm->tgt[s].items[i].text);
        }
        for (int c = 0; c < tp->ncolumns; c++) {
            if (!mod_is_textlike(tp->columns[c].mod))
                continue;
            int col = -1;
            for (int j = 0; j < task->ncolumns; j++)
                if (strcmp(task->columns[j], tp->columns[c].name) == 0)
                    col = j;
            for (int f = 0; f < task->ntrain; f++) {
                if (strcmp(task->format, "jsonl") == 0) {
                    ARG("--jsonl");
                    ARG("%s", task->train[f]);
                    ARG("--key");
                    ARG("%s", tp->columns[c].name);
                } else if (col >= 0) {
                    ARG("--tsv");
                    ARG("%s", task->train[f]);
                    ARG("--column");
                    ARG("%d", col);
                }
            }
        }
    }
#undef ARG
    argv[n] = NULL;
    fclose(pf);
    int status = s_run_sync(argv, log_path);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char how[128];
        proctab_describe_status(status, how, sizeof how);
        return util_err(err, errlen, "BPE training failed (%s); see %s", how, log_path);
    }
    return 0;
}

/* shm_arena: the workers' arenas are named after this launch ("r<pid>"), so that the
 * run's end removes them however the workers ended; arenas of launches that died
 * without that step (killed) are removed here. Under Slurm the processes are on several
 * hosts: auto means off there, and on is refused. */
static int s_arena_setup(const plan_t *plan, graph_env_t *env, char *err, size_t errlen) {
    env->arena_tag[0] = 0;
    const char *mode = plan->shm_arena ? plan->shm_arena : "auto";
    if (strcmp(mode, "off") == 0)
        return 0;
    if (env->slurm) {
        if (strcmp(mode, "on") == 0)
            return util_err(err, errlen, "shm_arena = \"on\": shared memory reaches only the "
                            "processes of one host, and under Slurm they are spread over "
                            "nodes (use \"auto\" or \"off\")");
        return 0;
    }
    DIR *d = opendir("/dev/shm");
    for (struct dirent *e; d && (e = readdir(d));) {
        int pid = 0, used = 0;
        if (sscanf(e->d_name, "ofa-arena-r%d-%n", &pid, &used) == 1 && used > 0 && pid > 0 &&
            kill(pid, 0) != 0 && errno == ESRCH) {
            char tag[SHMARENA_TAG_MAX];
            snprintf(tag, sizeof tag, "r%d", pid);
            int n = shmarena_unlink_tag(tag);
            if (n > 0)
                fprintf(stderr, "launch: removed %d arena(s) left by launch %d, which is "
                        "gone\n", n, pid);
        }
    }
    if (d)
        closedir(d);
    snprintf(env->arena_tag, sizeof env->arena_tag, "r%d", (int)getpid());
    env->arena_mb = plan->shm_arena_mb;
    return 0;
}

/* transport = "tcp" on one host: the three endpoints on 127.0.0.1, at ports the kernel
 * chooses (each socket stays bound until all are chosen, so the ports differ). */
static int s_loopback_endpoints(graph_env_t *env, char *err, size_t errlen) {
    int fds[3], ports[3], rc = 0;
    for (int i = 0; i < 3; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof sa;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &sl) != 0)
            rc = util_err(err, errlen, "cannot choose a port on 127.0.0.1: %s",
                          strerror(errno));
        ports[i] = ntohs(sa.sin_port);
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (rc)
        return rc;
    snprintf(env->broker_ep, sizeof env->broker_ep, "tcp://127.0.0.1:%d", ports[0]);
    snprintf(env->batches_ep, sizeof env->batches_ep, "tcp://127.0.0.1:%d", ports[1]);
    snprintf(env->stats_ep, sizeof env->stats_ep, "tcp://127.0.0.1:%d", ports[2]);
    return 0;
}

static int s_prepare_dirs(const runner_opts_t *o, char *err, size_t errlen) {
    char p[1200];
    if (util_mkdirs(o->env.run_dir, err, errlen))
        return -1;
    snprintf(p, sizeof p, "%s/logs", o->env.run_dir);
    if (util_mkdirs(p, err, errlen))
        return -1;
    snprintf(p, sizeof p, "%s/checkpoints", o->env.run_dir);
    return util_mkdirs(p, err, errlen);
}

static void s_write_records(s_run_t *run) {
    char p[1200], e[512];
    const runner_opts_t *o = run->opts;
    snprintf(p, sizeof p, "%s/stages.json", o->env.run_dir);
    if (statsdb_write_stages(run->db, p, e, sizeof e))
        fprintf(stderr, "launch: %s\n", e);
    const char *names[256];
    int nt = run->plan->ntasks < 256 ? run->plan->ntasks : 256;
    for (int t = 0; t < nt; t++)
        names[t] = run->plan->tasks[t].name;
    snprintf(p, sizeof p, "%s/summary.json", o->env.run_dir);
    if (statsdb_write_summary(run->db, names, nt, p, e, sizeof e))
        fprintf(stderr, "launch: %s\n", e);
}

int runner_run(const plan_t *plan, runner_opts_t *o, char *err, size_t errlen) {
    graph_env_t *env = &o->env;
    if (s_prepare_dirs(o, err, errlen))
        return 1;
    char path[1200];
    snprintf(path, sizeof path, "%s/plan.resolved.conf", env->run_dir);
    if (!(env->resume && access(path, R_OK) == 0) &&
        plan_write_resolved(plan, path, err, errlen))
        return 1;

    /* ipc:// paths must be short (108 bytes): the sockets live in a folder of /tmp. */
    snprintf(env->sock_dir, sizeof env->sock_dir, "/tmp/ofa-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(env->sock_dir))
        return util_err(err, errlen, "mkdtemp %s: %s", env->sock_dir, strerror(errno)), 1;
    snprintf(env->broker_ep, sizeof env->broker_ep, "ipc://%s/broker", env->sock_dir);
    snprintf(env->batches_ep, sizeof env->batches_ep, "ipc://%s/batches", env->sock_dir);
    snprintf(env->stats_ep, sizeof env->stats_ep, "ipc://%s/stats", env->sock_dir);

    proctab_t *procs = NULL;
    slurm_t *slurm = NULL;
    curve_keys_t keys;
    curve_zap_t *zap = NULL;
    int have_keys = 0;
    statsdb_t *db = statsdb_new();
    void *zctx = NULL, *stats = NULL;
    int rc = 1;
    char logs[1200];
    snprintf(logs, sizeof logs, "%s/logs", env->run_dir);
    procs = proctab_new(logs);
    /* In a Slurm allocation, tcp:// endpoints and one job step per process. */
    if (slurm_wanted(o->slurm) &&
        (!(slurm = slurm_new(err, errlen)) || slurm_endpoints(slurm, env, err, errlen)))
        goto done;
    if (!slurm && plan->transport && strcmp(plan->transport, "tcp") == 0 &&
        s_loopback_endpoints(env, err, errlen))
        goto done;
    /* tcp:// endpoints are reachable from other hosts: every socket is secured with CURVE
     * keys made for this run (common/curve.h), in a 0600 file each process is told of. */
    if (strncmp(env->broker_ep, "tcp://", 6) == 0) {
        snprintf(env->curve_keys, sizeof env->curve_keys, "%s/curve.keys", env->run_dir);
        if (curve_keys_generate(env->curve_keys, &keys, err, errlen))
            goto done;
        have_keys = 1;
    }
    env->slurm = slurm != NULL;
    if (s_arena_setup(plan, env, err, errlen))
        goto done;
    if (graph_build(plan, env, procs, err, errlen))
        goto done;
    if (slurm && slurm_place(slurm, procs, err, errlen))
        goto done;
    if (!slurm && plan->trainer.ranks > 1)
        proctab_set_signal_hook(procs, s_signal_mpirun_ranks, NULL);
    snprintf(path, sizeof path, "%s/graph.dot", env->run_dir);
    if (graph_write_dot(plan, procs, path, err, errlen))
        goto done;

    if (o->dry_run) {
        graph_print(plan, procs, stdout);
        printf("run directory: %s (graph.dot, plan.resolved.conf)\n", env->run_dir);
        rc = 0;
        goto done;
    }
    for (int t = 0; t < plan->ntasks; t++) {
        char why[512];
        if (taskplan_runnable(plan->tasks[t].plan, why, sizeof why) != 0) {
            util_err(err, errlen, "task '%s' cannot run: %s", plan->tasks[t].name, why);
            goto done;
        }
    }
    if (plan_check_files(plan, err, errlen)) {
        size_t l = strlen(err);
        snprintf(err + l, errlen - l, "\n---> HINT: build the datasets with `launch data NAME`");
        goto done;
    }
    if (s_train_bpe(plan, o, err, errlen))
        goto done;

    zctx = zmq_ctx_new();
    stats = zmq_socket(zctx, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(stats, ZMQ_LINGER, &linger, sizeof linger);
    if (have_keys && (!(zap = curve_zap_new(zctx, &keys, err, errlen)) ||
                      curve_server_apply(stats, &keys, err, errlen) != 0))
        goto done;
    if (zmq_bind(stats, env->stats_ep) != 0) {
        util_err(err, errlen, "bind %s: %s", env->stats_ep, zmq_strerror(errno));
        goto done;
    }

    s_run_t run = {.plan = plan, .opts = o, .procs = procs, .db = db};
    /* The per-second timeline (stats.jsonl) is an aid, not part of the run: a failure
     * to open it is reported and the run goes on without it. */
    char tl_err[512];
    timeline_t *timeline = timeline_open(env->run_dir, tl_err, sizeof tl_err);
    if (!timeline)
        fprintf(stderr, "launch: no stats timeline: %s\n", tl_err);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        run.consumers_left += p->role == PROC_CONSUMER;
        if (proctab_start(procs, i, err, errlen)) {
            proctab_stop_all(procs, 2.0);
            timeline_close(&timeline, NULL);
            goto done;
        }
    }
    snprintf(path, sizeof path, "%s/pids.json", env->run_dir);
    proctab_write_pids(procs, path);
    fprintf(stderr, "launch: %d processes started; run directory %s\n", proctab_count(procs),
            env->run_dir);

    double last_write = util_now(), started = last_write;
    int stopping = 0, timed_out = 0;
    double stop_deadline = 0;
    while (!run.fatal && run.consumers_left > 0) {
        zmq_pollitem_t item = {stats, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 100);
        statsrx_drain(stats, db);
        int before = proctab_running(procs);
        proctab_reap(procs, s_on_exit, &run);
        proctab_restart_due(procs);
        if (proctab_running(procs) != before || util_now() - last_write > 1.0) {
            proctab_write_pids(procs, path);
            s_write_records(&run);
            last_write = util_now();
        }
        timeline_tick(timeline, db);
        if (o->time_limit_s > 0 && !stopping && util_now() - started > o->time_limit_s) {
            fprintf(stderr, "launch: time limit of %.0f s reached: asking the consumers to "
                    "stop\n", o->time_limit_s);
            proctab_signal(procs, PROC_CONSUMER, SIGINT);
            stopping = timed_out = 1;
            stop_deadline = util_now() + 60.0;
        }
        if (s_stop_signal && !stopping) {
            /* Ask consumers to checkpoint and stop; everything else stops after them. */
            fprintf(stderr, "launch: %s: asking the consumers to checkpoint and stop\n",
                    strsignal(s_stop_signal));
            proctab_signal(procs, PROC_CONSUMER, SIGINT);
            stopping = 1;
            stop_deadline = util_now() + 60.0;
        }
        if (stopping && util_now() > stop_deadline)
            break;
    }
    if (run.fatal) {
        fprintf(stderr, "launch: stopping the run: %s\n", run.fatal_reason);
        util_err(err, errlen, "%s", run.fatal_reason);
    }
    proctab_stop_all(procs, 10.0);
    if (slurm)
        slurm_cancel_left(slurm, procs);
    /* Final stats messages are sent on exit; collect what arrived. */
    for (int i = 0; i < 5; i++) {
        zmq_pollitem_t item = {stats, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 50);
        statsrx_drain(stats, db);
    }
    s_write_records(&run);
    timeline_close(&timeline, db);
    if (run.fatal)
        rc = 1;
    else if (timed_out && !s_stop_signal)
        rc = 0;
    else if (stopping)
        rc = 130, util_err(err, errlen, "stopped by %s", strsignal(s_stop_signal));
    else
        rc = 0;
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/summary.json", env->run_dir);
        char *s = util_read_file(path, NULL, NULL, 0);
        if (s) {
            printf("%s", s);
            free(s);
        }
        printf("run directory: %s\n", env->run_dir);
    }

done:
    /* Every process is gone (or never started): nothing can still need a slot. */
    if (env->arena_tag[0]) {
        int n = shmarena_unlink_tag(env->arena_tag);
        if (n > 0)
            fprintf(stderr, "launch: removed %d shared-memory arena(s) of the workers\n", n);
    }
    if (stats)
        zmq_close(stats);
    curve_zap_destroy(&zap);
    if (zctx)
        zmq_ctx_term(zctx);
    if (env->sock_dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", env->sock_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "launch: could not remove %s\n", env->sock_dir);
    }
    proctab_destroy(&procs);
    slurm_destroy(&slurm);
    statsdb_destroy(&db);
    return rc;
}
