/* slurm.c: see slurm.h. Slurm is driven only through its client programs (scontrol,
 * srun, squeue, scancel), run from argv lists: launch links no Slurm library, so the same
 * binary runs with or without Slurm installed. */
#include "slurm.h"
#include "planfile.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_NODES 1024

struct slurm {
    char job[32];
    char **nodes;
    int nnodes;
    char first_addr[64];    /* numeric IPv4 of the first node */
    char hub_addr[64];      /* numeric IPv4 of the hubs' node (placement.hubs) */
    plan_t *plan;           /* the run's resolved plan: its placement keys */
    char self_addr[64];     /* numeric IPv4 of the host that runs launch */
    char *steps;            /* last squeue output (name -> step), and when it was read */
    double steps_at;
};

int slurm_wanted(int mode) {
    if (mode != 0)
        return mode > 0;
    const char *job = getenv("SLURM_JOB_ID");
    return job && *job;
}

/* Run argv (no shell) and return its stdout, or NULL with err when it cannot run or
 * exits non-zero (its stderr goes to launch's). */
static char *s_capture(char *const argv[], char *err, size_t errlen) {
    int fds[2];
    if (pipe(fds) != 0)
        return util_err(err, errlen, "pipe: %s", strerror(errno)), NULL;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return util_err(err, errlen, "fork for %s: %s", argv[0], strerror(errno)), NULL;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        execvp(argv[0], argv);
        fprintf(stderr, "launch: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *buf = util_malloc(cap);
    for (;;) {
        if (len + 1024 > cap)
            buf = util_realloc(buf, cap *= 2);
        ssize_t n = read(fds[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        free(buf);
        util_err(err, errlen, "%s failed (%s %d)%s", argv[0],
                 WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                 WIFEXITED(status) && WEXITSTATUS(status) == 127
                     ? ": is Slurm's client (slurm-client) installed?" : "");
        return NULL;
    }
    return buf;
}

int slurm_parse_node_addr(const char *text, char *out, size_t outlen) {
    /* Tokens are KEY=VALUE separated by blanks; match NodeAddr= at a token start. */
    for (const char *p = text; (p = strstr(p, "NodeAddr=")) != NULL; p++) {
        if (p != text && p[-1] != ' ' && p[-1] != '\n' && p[-1] != '\t')
            continue;
        p += strlen("NodeAddr=");
        size_t n = strcspn(p, " \t\n");
        if (n == 0 || n >= outlen)
            return -1;
        memcpy(out, p, n);
        out[n] = 0;
        return 0;
    }
    return -1;
}

long slurm_parse_step(const char *text, const char *job, const char *name) {
    long best = -1;
    size_t jl = strlen(job);
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        /* "JOB.STEP|NAME" */
        const char *bar = memchr(line, '|', len);
        if (bar && (size_t)(bar - line) > jl + 1 && strncmp(line, job, jl) == 0 &&
            line[jl] == '.' && strlen(name) == len - (size_t)(bar + 1 - line) &&
            strncmp(bar + 1, name, strlen(name)) == 0) {
            char *end;
            long step = strtol(line + jl + 1, &end, 10);
            if (end == bar && step > best)
                best = step;
        }
        line = eol ? eol + 1 : NULL;
    }
    return best;
}

/* Numeric IPv4 of a host name or address. */
static int s_resolve(const char *host, char *out, size_t outlen, char *err, size_t errlen) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return util_err(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
    struct sockaddr_in *sa = (struct sockaddr_in *)res->ai_addr;
    inet_ntop(AF_INET, &sa->sin_addr, out, (socklen_t)outlen);
    freeaddrinfo(res);
    return 0;
}

/* The address of node NAME: its NodeAddr from scontrol, resolved to a number. */
static int s_node_addr(const char *name, char *out, size_t outlen, char *err, size_t errlen) {
    char *argv[] = {"scontrol", "show", "node", "-o", (char *)name, NULL};
    char *text = s_capture(argv, err, errlen);
    if (!text)
        return -1;
    char addr[256];
    int rc = slurm_parse_node_addr(text, addr, sizeof addr);
    free(text);
    if (rc != 0)
        return util_err(err, errlen, "scontrol show node %s: no NodeAddr", name);
    return s_resolve(addr, out, outlen, err, errlen);
}

slurm_t *slurm_new(char *err, size_t errlen) {
    const char *job = getenv("SLURM_JOB_ID");
    const char *list = getenv("SLURM_JOB_NODELIST");
    if (!list || !*list)
        list = getenv("SLURM_NODELIST");
    if (!job || !*job || !list || !*list)
        return util_err(err, errlen, "--slurm: not inside a Slurm allocation (SLURM_JOB_ID "
                        "or SLURM_JOB_NODELIST unset); run launch in salloc or an sbatch "
                        "script"), NULL;
    char *argv[] = {"scontrol", "show", "hostnames", (char *)list, NULL};
    char *text = s_capture(argv, err, errlen);
    if (!text)
        return NULL;
    slurm_t *self = util_calloc(1, sizeof *self);
    snprintf(self->job, sizeof self->job, "%s", job);
    self->nodes = util_calloc(MAX_NODES, sizeof *self->nodes);
    for (char *save = NULL, *t = strtok_r(text, " \n", &save); t && self->nnodes < MAX_NODES;
         t = strtok_r(NULL, " \n", &save))
        self->nodes[self->nnodes++] = util_strdup(t);
    free(text);
    if (self->nnodes == 0) {
        util_err(err, errlen, "scontrol show hostnames %s: no nodes", list);
        slurm_destroy(&self);
        return NULL;
    }
    if (s_node_addr(self->nodes[0], self->first_addr, sizeof self->first_addr, err, errlen)) {
        slurm_destroy(&self);
        return NULL;
    }
    /* launch's own address: its node's when it runs on one (sbatch), the first node's when
     * that is a loopback address (every node on this host), else this host's name. */
    const char *here = getenv("SLURMD_NODENAME");
    int rc = 0;
    if (here && *here)
        rc = s_node_addr(here, self->self_addr, sizeof self->self_addr, err, errlen);
    else if (strncmp(self->first_addr, "127.", 4) == 0)
        snprintf(self->self_addr, sizeof self->self_addr, "%s", self->first_addr);
    else {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        rc = s_resolve(host, self->self_addr, sizeof self->self_addr, err, errlen);
    }
    if (rc) {
        slurm_destroy(&self);
        return NULL;
    }
    return self;
}

void slurm_destroy(slurm_t **self_p) {
    if (!self_p || !*self_p)
        return;
    slurm_t *self = *self_p;
    for (int i = 0; i < self->nnodes; i++)
        free(self->nodes[i]);
    free(self->nodes);
    free(self->steps);
    plan_destroy(&self->plan);
    free(self);
    *self_p = NULL;
}

int slurm_nnodes(const slurm_t *self) { return self->nnodes; }
const char *slurm_node(const slurm_t *self, int i) {
    OFA_ASSERT(i >= 0 && i < self->nnodes);
    return self->nodes[i];
}
const char *slurm_job_id(const slurm_t *self) { return self->job; }

/* Free ports on ADDR: where ADDR is an address of this host, the kernel's choice (each
 * socket stays bound until all are chosen, so the ports differ); elsewhere a random port
 * in 30000-59999. A port taken between the choice and the bind makes that bind fail
 * with "Address already in use" in the process's log, and the run stops saying so. */
static void s_ports(const char *addr, int *ports, int n) {
    int fds[8];
    OFA_ASSERT(n <= 8);
    unsigned seed = (unsigned)getpid() ^ (unsigned)(util_now() * 1e6);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
        inet_pton(AF_INET, addr, &sa.sin_addr);
        socklen_t sl = sizeof sa;
        if (fds[i] >= 0 && bind(fds[i], (struct sockaddr *)&sa, sizeof sa) == 0 &&
            getsockname(fds[i], (struct sockaddr *)&sa, &sl) == 0) {
            ports[i] = ntohs(sa.sin_port);
        } else {
            seed = seed * 1103515245u + 12345u;
            ports[i] = 30000 + (int)((seed >> 8) % 30000);
        }
    }
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* The placement keys come from the run's resolved plan, which launch has written by
 * now: the hubs' node decides the address of the broker and batcher endpoints. */
int slurm_endpoints(slurm_t *self, graph_env_t *env, char *err, size_t errlen) {
    char path[1100];
    snprintf(path, sizeof path, "%s/plan.resolved.conf", env->run_dir);
    plan_destroy(&self->plan);
    if (access(path, R_OK) == 0 && !(self->plan = plan_load(path, err, errlen)))
        return -1;
    int hub = 0;
    if (self->plan && self->plan->placement.hubs && self->plan->placement.hubs[0] &&
        (hub = slurm_node_ref(self->nodes, self->nnodes, self->plan->placement.hubs)) < 0)
        return util_err(err, errlen, "placement.hubs: no node '%s' in the allocation (%d "
                        "nodes, first %s)", self->plan->placement.hubs, self->nnodes,
                        self->nodes[0]);
    if (hub == 0)
        snprintf(self->hub_addr, sizeof self->hub_addr, "%s", self->first_addr);
    else if (s_node_addr(self->nodes[hub], self->hub_addr, sizeof self->hub_addr, err, errlen))
        return -1;
    int first[2], mine[1];
    s_ports(self->hub_addr, first, 2);
    s_ports(self->self_addr, mine, 1);
    if (first[0] == first[1])
        return util_err(err, errlen, "could not choose two ports on %s", self->hub_addr);
    snprintf(env->broker_ep, sizeof env->broker_ep, "tcp://%s:%d", self->hub_addr, first[0]);
    snprintf(env->batches_ep, sizeof env->batches_ep, "tcp://%s:%d", self->hub_addr,
             first[1]);
    snprintf(env->stats_ep, sizeof env->stats_ep, "tcp://%s:%d", self->self_addr, mine[0]);
    return 0;
}

int slurm_node_ref(char *const *nodes, int nnodes, const char *ref) {
    for (int i = 0; i < nnodes; i++)
        if (strcmp(nodes[i], ref) == 0)
            return i;
    char *end;
    long k = strtol(ref, &end, 10);
    if (*ref && !*end && k >= 0 && k < nnodes)
        return (int)k;
    return -1;
}

/* Resolve a list of node references of `key` into idx; -1 with err naming the bad one. */
static int s_node_list(char *const *refs, int n, char *const *nodes, int nnodes, int *idx,
                       const char *key, char *err, size_t errlen) {
    for (int i = 0; i < n; i++)
        if ((idx[i] = slurm_node_ref(nodes, nnodes, refs[i])) < 0)
            return util_err(err, errlen, "%s[%d]: no node '%s' in the allocation (%d nodes, "
                            "first %s)", key, i, refs[i], nnodes, nodes[0]);
    return 0;
}

int slurm_assign(const plan_t *plan, proctab_t *procs, char *const *nodes, int nnodes,
                 int *node_of, char *err, size_t errlen) {
    const plan_placement_t *pl = plan ? &plan->placement : NULL;
    int hub = 0, wpn = pl ? pl->workers_per_node : 0;
    if (pl && pl->hubs && pl->hubs[0] && (hub = slurm_node_ref(nodes, nnodes, pl->hubs)) < 0)
        return util_err(err, errlen, "placement.hubs: no node '%s' in the allocation (%d "
                        "nodes, first %s)", pl->hubs, nnodes, nodes[0]);
    int *trainer = util_calloc((size_t)(pl && pl->ntrainer ? pl->ntrainer : 1), sizeof(int));
    int *list = util_calloc((size_t)nnodes > 64 ? (size_t)nnodes : 64, sizeof(int));
    int *load = util_calloc((size_t)nnodes, sizeof(int));
    int rc = 0, worker_k = 0, rank = 0;
    if (pl && s_node_list(pl->trainer, pl->ntrainer, nodes, nnodes, trainer,
                          "placement.trainer", err, errlen))
        rc = -1;
    for (int i = 0; rc == 0 && i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        if (p->role == PROC_CONSUMER && strcmp(p->tier, "trainer") == 0 && pl &&
            pl->ntrainer > 0) {
            node_of[i] = trainer[rank++ % pl->ntrainer];
            continue;
        }
        if (p->role != PROC_WORKER) {
            node_of[i] = hub;
            continue;
        }
        /* A worker: the stage's own list from its k-th entry, else every node from the
         * default rule's choice; the first node on the way with room takes it. */
        const plan_stage_t *st = plan ? plan_stage(plan, p->tier) : NULL;
        int n, start, k = 0;
        for (int j = 0; j < i; j++)
            k += proctab_get(procs, j)->role == PROC_WORKER &&
                 strcmp(proctab_get(procs, j)->tier, p->tier) == 0;
        if (st && st->nnodes > 0) {
            char key[64];
            snprintf(key, sizeof key, "stages.%s.nodes", p->tier);
            n = st->nnodes < 64 ? st->nnodes : 64;
            if (s_node_list(st->nodes, n, nodes, nnodes, list, key, err, errlen)) {
                rc = -1;
                break;
            }
            start = k % n;
        } else {
            n = nnodes;
            for (int j = 0; j < n; j++)
                list[j] = j;
            start = slurm_place_index(PROC_WORKER, worker_k, nnodes);
        }
        worker_k++;
        node_of[i] = -1;
        for (int j = 0; j < n && node_of[i] < 0; j++) {
            int cand = list[(start + j) % n];
            if (wpn == 0 || load[cand] < wpn)
                node_of[i] = cand;
        }
        if (node_of[i] < 0) {
            rc = util_err(err, errlen, "placement: worker %s does not fit: each of its %d "
                          "node(s) already holds placement.workers_per_node = %d workers",
                          p->name, n, wpn);
            break;
        }
        load[node_of[i]]++;
    }
    free(trainer);
    free(list);
    free(load);
    return rc;
}

int slurm_place_index(proc_role_t role, int worker_k, int nnodes) {
    if (role != PROC_WORKER || nnodes <= 1)
        return 0;
    /* Start at the second node: with fewer workers than nodes, the first node (which
     * already runs the broker, batcher, source and consumers) gets workers last. */
    return (worker_k + 1) % nnodes;
}

/* A new NULL-terminated argv: copies of pre[0..npre) then of argv's strings. */
static char **s_prefixed_argv(const char *const pre[], int npre, char *const argv[]) {
    int argc = 0;
    while (argv[argc])
        argc++;
    char **out = util_calloc((size_t)(npre + argc + 1), sizeof *out);
    for (int i = 0; i < npre; i++)
        out[i] = util_strdup(pre[i]);
    for (int i = 0; i < argc; i++)
        out[npre + i] = util_strdup(argv[i]);
    return out;
}

char **slurm_srun_argv(const char *node, const char *name, char *const argv[]) {
    const char *pre[] = {"srun", "--overlap", "-N1", "-n1", "-w", node,
                         "--kill-on-bad-exit=1", "--input=none", "-J", name};
    return s_prefixed_argv(pre, (int)(sizeof pre / sizeof pre[0]), argv);
}

int slurm_group_nodes(const plan_t *plan, int world, char *const *nodes, int nnodes,
                      int *rank_node, char *err, size_t errlen) {
    const plan_placement_t *pl = plan ? &plan->placement : NULL;
    int hub = 0;
    if (pl && pl->hubs && pl->hubs[0] && (hub = slurm_node_ref(nodes, nnodes, pl->hubs)) < 0)
        return util_err(err, errlen, "placement.hubs: no node '%s' in the allocation (%d "
                        "nodes, first %s)", pl->hubs, nnodes, nodes[0]);
    if (!pl || pl->ntrainer == 0) {
        for (int r = 0; r < world; r++)
            rank_node[r] = hub;
        return 0;
    }
    int *list = util_calloc((size_t)pl->ntrainer, sizeof(int));
    int rc = s_node_list(pl->trainer, pl->ntrainer, nodes, nnodes, list, "placement.trainer",
                         err, errlen);
    for (int r = 0; rc == 0 && r < world; r++)
        rank_node[r] = list[r % pl->ntrainer];
    free(list);
    return rc;
}

char **slurm_group_srun_argv(const char *mpi, int world, char *const *rank_nodes,
                             const char *name, char *const argv[]) {
    /* -w lists one node per rank, in rank order: with -m arbitrary srun places task r on
     * the r-th entry (a node may repeat), which is the placement rule of the other steps
     * (rank r on placement.trainer[r mod n]). */
    size_t wlen = 1;
    for (int r = 0; r < world; r++)
        wlen += strlen(rank_nodes[r]) + 1;
    char *wl = util_malloc(wlen), mpiopt[96], ntasks[16];
    wl[0] = 0;
    for (int r = 0; r < world; r++) {
        if (r)
            strcat(wl, ",");
        strcat(wl, rank_nodes[r]);
    }
    snprintf(mpiopt, sizeof mpiopt, "--mpi=%s", mpi);
    snprintf(ntasks, sizeof ntasks, "%d", world);
    const char *pre[] = {"srun", "--overlap", "--overcommit", mpiopt, "-n", ntasks,
                         "-m", "arbitrary", "-w", wl, "--kill-on-bad-exit=1",
                         "--input=none", "-J", name};
    char **out = s_prefixed_argv(pre, (int)(sizeof pre / sizeof pre[0]), argv);
    free(wl);
    return out;
}

int slurm_parse_mpi_list(const char *text, const char *mpi, char *offered, size_t offlen) {
    /* srun 22.05 prints "MPI plugin types are...", one tab-indented type per line, then
     * "specific pmix plugin versions available: pmix_v3,pmix_v4". */
    int found = 0;
    size_t used = 0;
    if (offlen)
        offered[0] = 0;
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *p = line, *end = line + len;
        const char *colon = memchr(line, ':', len);
        if (colon && strstr(line, "available") && strstr(line, "available") < colon)
            p = colon + 1;
        else if (*line != '\t' && *line != ' ')
            p = end;   /* a heading */
        while (p < end) {
            p += strspn(p, " \t,");
            size_t n = strcspn(p, " \t,\n");
            if (p + n > end)
                n = (size_t)(end - p);
            if (n == 0)
                break;
            found |= strlen(mpi) == n && strncmp(p, mpi, n) == 0;
            if (used + n + 3 < offlen) {
                used += (size_t)snprintf(offered + used, offlen - used, "%s%.*s",
                                         used ? ", " : "", (int)n, p);
            }
            p += n;
        }
        line = eol ? eol + 1 : NULL;
    }
    return found;
}

/* The group's plugin must be one srun offers, and one that starts an MPI world: a bad
 * name is refused here, naming the key, rather than by every rank's srun later. */
static int s_check_mpi(const char *mpi, char *err, size_t errlen) {
    if (strcmp(mpi, "none") == 0)
        return util_err(err, errlen, "trainer.mpi = \"none\": the ranks of the trainer "
                        "group learn their rank and world from srun's MPI plugin; name one "
                        "(pmix, pmi2, ...; see `srun --mpi=list` and docs/ranks.md)");
    char *argv[] = {"srun", "--mpi=list", NULL}, e[512], offered[512];
    char *text = s_capture(argv, e, sizeof e);
    if (!text)
        return util_err(err, errlen, "trainer.mpi = \"%s\": cannot ask srun for its MPI "
                        "plugins: %s", mpi, e);
    int ok = slurm_parse_mpi_list(text, mpi, offered, sizeof offered);
    free(text);
    if (!ok)
        return util_err(err, errlen, "trainer.mpi = \"%s\": srun has no such MPI plugin "
                        "(srun --mpi=list offers: %s); see docs/ranks.md", mpi,
                        offered[0] ? offered : "none");
    return 0;
}

int slurm_mpi_hint(const char *log_path, const char *mpi, char *out, size_t outlen) {
    /* The end of the log is enough: the ranks stop right after MPI_Init fails. */
    char buf[16384];
    FILE *f = fopen(log_path, "r");
    if (!f)
        return 0;
    if (fseek(f, 0, SEEK_END) == 0 && ftell(f) > (long)sizeof buf - 1)
        fseek(f, -(long)(sizeof buf - 1), SEEK_END);
    else
        rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (!strstr(buf, "error occurred in MPI_Init") && !strstr(buf, "MPI_Init: "))
        return 0;
    snprintf(out, outlen, "; its ranks failed in MPI_Init under srun --mpi=%s (trainer.mpi): "
             "a plugin this MPI library cannot use? see docs/ranks.md, \"Which plugin\"", mpi);
    return 1;
}

/* The step id of the running step named NAME, from squeue (cached for a moment, since a
 * stop signals every process in one go). */
static long s_step_of(slurm_t *self, const char *name) {
    if (!self->steps || util_now() - self->steps_at > 0.5) {
        char e[256];
        char *argv[] = {"squeue", "-h", "-s", "-j", self->job, "-o", "%i|%j", NULL};
        free(self->steps);
        self->steps = s_capture(argv, e, sizeof e);
        self->steps_at = util_now();
        if (!self->steps)
            fprintf(stderr, "launch: %s\n", e);
    }
    return self->steps ? slurm_parse_step(self->steps, self->job, name) : -1;
}

/* Signal hook of the process table: a signal for a process goes to its step's task
 * through scancel. Returns -1 when the step is not known yet (srun still starting), so
 * the table signals srun itself. When scancel reports an error for a step squeue listed,
 * srun is not signalled either (a SIGTERM to srun kills the step at once): the step has
 * ended meanwhile, or the signal was delivered all the same (Slurm 22.05 reports
 * "Invalid job id specified" for a delivered step signal where several slurmd share a
 * host); a signal that was lost is covered by the stop's grace period and SIGKILL. */
static int s_signal(void *ctx, proc_t *p, int sig) {
    slurm_t *self = ctx;
    long step = s_step_of(self, p->name);
    if (step < 0)
        return -1;
    char id[64], sigarg[32], e[256];
    snprintf(id, sizeof id, "%s.%ld", self->job, step);
    snprintf(sigarg, sizeof sigarg, "--signal=%d", sig);
    char *argv[] = {"scancel", sigarg, id, NULL};
    if (sig == SIGKILL)
        argv[1] = "--quiet", argv[2] = id;
    char *out = s_capture(argv, e, sizeof e);
    if (!out) {
        fprintf(stderr, "launch: scancel %s %s of %s: %s%s\n", argv[1], id, p->name, e,
                sig == SIGKILL ? "; killing srun" : "; the step was listed: srun is not "
                "signalled");
        return sig == SIGKILL ? -1 : 0;
    }
    free(out);
    return 0;
}

/* Wrap the trainer group's process (graph.c: the bare ofa-trainer of all ranks) in one
 * srun step of its ranks; p->node lists the step's nodes. */
static int s_place_group(slurm_t *self, proctab_t *procs, int i, int world, char *err,
                         size_t errlen) {
    proc_t *p = proctab_get(procs, i);
    const char *mpi = self->plan->trainer.mpi ? self->plan->trainer.mpi : "pmix";
    if (s_check_mpi(mpi, err, errlen))
        return -1;
    int *rank_node = util_calloc((size_t)world, sizeof(int));
    char **names = util_calloc((size_t)world, sizeof *names);
    if (slurm_group_nodes(self->plan, world, self->nodes, self->nnodes, rank_node, err,
                          errlen)) {
        free(rank_node);
        free(names);
        return -1;
    }
    p->node[0] = 0;
    for (int r = 0; r < world; r++) {
        names[r] = self->nodes[rank_node[r]];
        int seen = 0;
        for (int q = 0; q < r; q++)
            seen |= rank_node[q] == rank_node[r];
        size_t used = strlen(p->node);
        if (!seen && used + strlen(names[r]) + 2 < sizeof p->node)
            snprintf(p->node + used, sizeof p->node - used, "%s%s", used ? "," : "",
                     names[r]);
    }
    char **argv = slurm_group_srun_argv(mpi, world, names, p->name, p->argv);
    proctab_set_argv(procs, i, argv);
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
    free(names);
    free(rank_node);
    return 0;
}

int slurm_place(slurm_t *self, proctab_t *procs, char *err, size_t errlen) {
    int *node_of = util_calloc((size_t)proctab_count(procs) + 1, sizeof(int));
    if (slurm_assign(self->plan, procs, self->nodes, self->nnodes, node_of, err, errlen)) {
        free(node_of);
        return -1;
    }
    int world = self->plan && self->plan->trainer.ranks > 1 ? self->plan->trainer.ranks : 1;
    for (int i = 0; i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        if (world > 1 && p->role == PROC_CONSUMER && strcmp(p->name, "trainer") == 0) {
            if (s_place_group(self, procs, i, world, err, errlen)) {
                free(node_of);
                return -1;
            }
            continue;
        }
        const char *node = self->nodes[node_of[i]];
        char **argv = slurm_srun_argv(node, p->name, p->argv);
        proctab_set_argv(procs, i, argv);
        for (char **a = argv; *a; a++)
            free(*a);
        free(argv);
        snprintf(p->node, sizeof p->node, "%s", node);
    }
    free(node_of);
    proctab_set_signal_hook(procs, s_signal, self);
    return 0;
}

void slurm_cancel_left(slurm_t *self, proctab_t *procs) {
    free(self->steps);
    self->steps = NULL;
    for (int i = 0; i < proctab_count(procs); i++) {
        proc_t *p = proctab_get(procs, i);
        long step = s_step_of(self, p->name);
        if (step < 0)
            continue;
        char id[64], e[256];
        snprintf(id, sizeof id, "%s.%ld", self->job, step);
        char *argv[] = {"scancel", "--quiet", id, NULL};
        char *out = s_capture(argv, e, sizeof e);
        if (out)
            fprintf(stderr, "launch: cancelled step %s of %s, still listed after the stop\n",
                    id, p->name);
        free(out);
    }
}
