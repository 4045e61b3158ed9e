/* proc.c: see proc.h. Children are started with fork + execv of an absolute path or a
 * PATH lookup (execvp), each in its own process group so that a signal to one stage
 * never reaches another, and with PR_SET_PDEATHSIG so that nothing outlives launch. */
#include "proc.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct proctab {
    char log_dir[4096];
    proc_t *procs;
    int n, cap;
    proc_signal_fn sig_fn;    /* optional signal route (Slurm steps) */
    void *sig_ctx;
};

proctab_t *proctab_new(const char *log_dir) {
    proctab_t *self = util_calloc(1, sizeof *self);
    snprintf(self->log_dir, sizeof self->log_dir, "%s", log_dir);
    return self;
}

static void s_free_argv(char **argv) {
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

void proctab_destroy(proctab_t **self_p) {
    if (!self_p || !*self_p)
        return;
    proctab_t *self = *self_p;
    for (int i = 0; i < self->n; i++)
        s_free_argv(self->procs[i].argv);
    free(self->procs);
    free(self);
    *self_p = NULL;
}

int proctab_add(proctab_t *self, const char *name, const char *tier, proc_role_t role,
                char *const argv[]) {
    if (self->n == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 16;
        self->procs = util_realloc(self->procs, (size_t)self->cap * sizeof *self->procs);
    }
    proc_t *p = &self->procs[self->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->tier, sizeof p->tier, "%s", tier);
    p->role = role;
    int argc = 0;
    while (argv[argc])
        argc++;
    p->argv = util_calloc((size_t)argc + 1, sizeof *p->argv);
    for (int i = 0; i < argc; i++)
        p->argv[i] = util_strdup(argv[i]);
    return self->n++;
}

void proctab_set_argv(proctab_t *self, int i, char *const argv[]) {
    proc_t *p = proctab_get(self, i);
    int argc = 0;
    while (argv[argc])
        argc++;
    char **copy = util_calloc((size_t)argc + 1, sizeof *copy);
    for (int k = 0; k < argc; k++)
        copy[k] = util_strdup(argv[k]);
    s_free_argv(p->argv);
    p->argv = copy;
}

void proctab_set_signal_hook(proctab_t *self, proc_signal_fn fn, void *ctx) {
    self->sig_fn = fn;
    self->sig_ctx = ctx;
}

int proctab_count(const proctab_t *self) { return self->n; }

proc_t *proctab_get(proctab_t *self, int i) {
    OFA_ASSERT(i >= 0 && i < self->n);
    return &self->procs[i];
}

proc_t *proctab_find_pid(proctab_t *self, pid_t pid) {
    for (int i = 0; i < self->n; i++)
        if (self->procs[i].running && self->procs[i].pid == pid)
            return &self->procs[i];
    return NULL;
}

int proctab_start(proctab_t *self, int i, char *err, size_t errlen) {
    proc_t *p = proctab_get(self, i);
    char log_path[4200];
    snprintf(log_path, sizeof log_path, "%s/%s.log", self->log_dir, p->name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return util_err(err, errlen, "fork for %s: %s", p->name, strerror(errno));
    if (pid == 0) {
        /* Child: own process group, die with launch, logs to the process's file. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            if (fd > 2)
                close(fd);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
            if (devnull > 0)
                close(devnull);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        execvp(p->argv[0], p->argv);
        fprintf(stderr, "launch: cannot run %s: %s\n", p->argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    p->pid = pid;
    p->running = true;
    p->started_at = util_now();
    p->restart_at = 0;
    return 0;
}

void proctab_reap(proctab_t *self, void (*on_exit)(void *ctx, proc_t *p), void *ctx) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        proc_t *p = proctab_find_pid(self, pid);
        if (!p)
            continue;   /* a helper child of launch itself (e.g. the BPE trainer) */
        p->running = false;
        p->pid = 0;
        p->last_status = status;
        p->exited_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (on_exit)
            on_exit(ctx, p);
    }
}

bool proctab_schedule_restart(proctab_t *self, proc_t *p, int max_crashes, double window_s) {
    double now = util_now();
    /* A process that ran for longer than the window starts a fresh count. */
    if (now - p->started_at > window_s)
        p->crashes_recent = 0;
    p->crashes_recent++;
    if (p->crashes_recent > max_crashes) {
        p->gave_up = true;
        return false;
    }
    double delay = 0.25;
    for (int i = 1; i < p->crashes_recent && delay < 8.0; i++)
        delay *= 2;
    p->restart_at = now + delay;
    p->restarts++;
    (void)self;
    return true;
}

void proctab_restart_due(proctab_t *self) {
    double now = util_now();
    for (int i = 0; i < self->n; i++) {
        proc_t *p = &self->procs[i];
        if (!p->running && p->restart_at > 0 && now >= p->restart_at) {
            char err[256];
            if (proctab_start(self, i, err, sizeof err) != 0)
                fprintf(stderr, "launch: restart of %s failed: %s\n", p->name, err);
        }
    }
}

void proctab_signal(proctab_t *self, int role, int sig) {
    for (int i = 0; i < self->n; i++) {
        proc_t *p = &self->procs[i];
        if (p->running && (role < 0 || (int)p->role == role) &&
            !(self->sig_fn && self->sig_fn(self->sig_ctx, p, sig) == 0))
            kill(p->pid, sig);
    }
}

int proctab_signal_children(const proc_t *p, int sig) {
    if (!p->running || p->pid <= 0)
        return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)p->pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[sizeof path + sizeof e->d_name + 16];
        snprintf(cpath, sizeof cpath, "%s/%s/children", path, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (!f)
            continue;
        int child;
        while (fscanf(f, "%d", &child) == 1)
            n += child > 0 && kill(child, sig) == 0;
        fclose(f);
    }
    closedir(d);
    return n;
}

int proctab_running(const proctab_t *self) {
    int n = 0;
    for (int i = 0; i < self->n; i++)
        n += self->procs[i].running;
    return n;
}

void proctab_stop_all(proctab_t *self, double grace_s) {
    for (int i = 0; i < self->n; i++)
        self->procs[i].restart_at = 0;
    proctab_signal(self, -1, SIGTERM);
    double deadline = util_now() + grace_s;
    while (proctab_running(self) > 0 && util_now() < deadline) {
        proctab_reap(self, NULL, NULL);
        usleep(20000);
    }
    if (proctab_running(self) > 0) {
        for (int i = 0; i < self->n; i++) {
            proc_t *p = &self->procs[i];
            if (p->running) {
                fprintf(stderr, "launch: %s did not stop within %.1f s; killing it\n",
                        p->name, grace_s);
                kill(-p->pid, SIGKILL);
                kill(p->pid, SIGKILL);
            }
        }
        while (proctab_running(self) > 0) {
            int status;
            pid_t pid = waitpid(-1, &status, 0);
            if (pid < 0 && errno == ECHILD)
                break;
            proc_t *p = pid > 0 ? proctab_find_pid(self, pid) : NULL;
            if (p) {
                p->running = false;
                p->pid = 0;
                p->last_status = status;
            }
        }
    }
}

void proctab_describe_status(int status, char *out, size_t outlen) {
    if (WIFEXITED(status))
        snprintf(out, outlen, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "status 0x%x", status);
}

int proctab_write_pids(const proctab_t *self, const char *path) {
    char buf[16384];
    size_t o = 0;
    o += (size_t)snprintf(buf + o, sizeof buf - o, "{");
    int first = 1;
    for (int i = 0; i < self->n && o < sizeof buf - 128; i++) {
        const proc_t *p = &self->procs[i];
        if (!p->running)
            continue;
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"%s\": %d", first ? "" : ", ",
                              p->name, (int)p->pid);
        first = 0;
    }
    o += (size_t)snprintf(buf + o, sizeof buf - o, "}\n");
    return util_write_file_atomic(path, buf, o, NULL, 0);
}
