/* proc.h: the process table of launch: starts stage programs from argv lists (never
 * through a shell), sends each one's stdout and stderr to its own log file, restarts
 * crashed workers with back-off, and reports exits to the supervisor loop.
 *
 * Usage: proctab_new(), proctab_add() for every process of the graph, proctab_start_all(),
 * then in the poll loop proctab_reap() after SIGCHLD and proctab_restart_due() on a timer;
 * at the end proctab_stop_all() and proctab_destroy(). */
#ifndef OFA_LAUNCH_PROC_H
#define OFA_LAUNCH_PROC_H

#include <stdbool.h>
#include <sys/types.h>

typedef enum {
    PROC_CRITICAL,   /* broker, source, batcher: the run cannot go on without it */
    PROC_WORKER,     /* a stage worker: restarted when it crashes */
    PROC_CONSUMER,   /* sink or trainer rank: the run ends when all consumers exit 0 */
} proc_role_t;

typedef struct {
    char name[64];        /* unique, e.g. "image.2"; also the --id and the log name */
    char tier[32];        /* stage name, e.g. "image" */
    char **argv;          /* NULL-terminated; owned */
    proc_role_t role;
    pid_t pid;            /* 0 when not running */
    bool running;
    bool gave_up;         /* crashed in a loop; not restarted again */
    int last_status;      /* raw wait status of the last exit */
    int restarts;
    int crashes_recent;   /* crashes inside the current back-off window */
    double started_at;
    double restart_at;    /* monotonic time of the pending restart, 0 = none */
    bool exited_ok;       /* exited with status 0 */
    char node[64];        /* Slurm node it is placed on, "" when local */
} proc_t;

typedef struct proctab proctab_t;

/* Create a table whose logs go to LOG_DIR/<name>.log. The caller owns the table. */
proctab_t *proctab_new(const char *log_dir);
void proctab_destroy(proctab_t **self_p);

/* Add a process; argv is copied. Returns its index. */
int proctab_add(proctab_t *self, const char *name, const char *tier, proc_role_t role,
                char *const argv[]);

int proctab_count(const proctab_t *self);
proc_t *proctab_get(proctab_t *self, int i);
proc_t *proctab_find_pid(proctab_t *self, pid_t pid);

/* Start process i. Returns 0, or -1 with err filled (fork failed; an exec failure shows
 * up as an exit status of 127 and a line in the process's log). */
int proctab_start(proctab_t *self, int i, char *err, size_t errlen);

/* Reap every exited child. For each exit, calls on_exit(ctx, proc) after updating its
 * fields; restarts are the caller's decision (proctab_schedule_restart). */
void proctab_reap(proctab_t *self, void (*on_exit)(void *ctx, proc_t *p), void *ctx);

/* Schedule a restart with exponential back-off (0.25 s doubling to 8 s). Returns false
 * when the process crashed more than max_crashes times within window_s: give up. */
bool proctab_schedule_restart(proctab_t *self, proc_t *p, int max_crashes, double window_s);

/* Start the processes whose restart time has come. */
void proctab_restart_due(proctab_t *self);

/* Send sig to every running process of the given role (or all when role < 0). */
void proctab_signal(proctab_t *self, int role, int sig);

/* SIGTERM everything running, wait up to grace_s, then SIGKILL what is left. */
void proctab_stop_all(proctab_t *self, double grace_s);

/* Replace process i's argv (copied), e.g. to wrap it in srun; takes effect at its next
 * start. */
void proctab_set_argv(proctab_t *self, int i, char *const argv[]);

/* Route signals to processes through fn (Slurm: scancel --signal of the process's step)
 * instead of kill(2); fn returns 0 when it delivered the signal, -1 to fall back to
 * kill(2) of the child. */
typedef int (*proc_signal_fn)(void *ctx, proc_t *p, int sig);
void proctab_set_signal_hook(proctab_t *self, proc_signal_fn fn, void *ctx);

/* Send sig to the child processes of p's process (every thread's, from
 * /proc/PID/task/TID/children), not to p: for a process that runs its tasks as its
 * children and answers a signal by ending them (mpirun). Returns how many were
 * signalled (0: none found, e.g. still starting). */
int proctab_signal_children(const proc_t *p, int sig);

/* Number of running processes. */
int proctab_running(const proctab_t *self);

/* Describe an exit status ("exit 1", "killed by signal 9 (Killed)"). */
void proctab_describe_status(int status, char *out, size_t outlen);

/* Write RUN/pids.json: {"name": pid, ...} of the running processes (for tests/tools). */
int proctab_write_pids(const proctab_t *self, const char *path);

#endif
