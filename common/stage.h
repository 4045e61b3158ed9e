/* stage.h: what every stage program shares: the common command-line flags, the
 * connection to the broker (hello, credits, heartbeats), the stats reporter, signal
 * handling, and the whole poll loop of a worker.
 *
 * A worker's main is a few lines:
 *
 *     stage_args_t a;
 *     stage_args_parse(&a, argc, argv, "usage text of my extra flags", NULL, NULL);
 *     my_ctx_t *ctx = my_ctx_new(a.plan, ...);           // set-up failures: util_fatal
 *     return stage_worker_run(&a, my_work, ctx);
 *
 * where my_work(ctx, msg, err, errlen) transforms one sample in place and returns 0, or
 * returns -1 with the reason in err, which becomes a REJECT naming the stage.
 *
 * Common flags: --id ID --ctl ENDPOINT --plan FILE --stats ENDPOINT --run-dir DIR
 * --tier NAME --credits N --curve FILE --arena TAG --arena-mb N --help. With --curve the
 * keys are loaded at once (a bad file is fatal) and every socket the runtime connects is
 * a CURVE client (curve.h). With --arena a worker (and the source, and the batcher) puts
 * each output tensor or byte string of STAGE_ARENA_MIN bytes or more into a slot of its
 * own shared-memory arena ("/ofa-arena-TAG-PID-N", made on first use, left in place at
 * exit for the consumers of what is still in flight; launch removes the run's arenas at
 * its end), so that only the descriptor crosses the sockets; when the arena is full the
 * bytes go as a frame. Other flags are handed to the program's own parser (extra_fn);
 * an unknown flag is an error with a one-line reason. */
#ifndef OFA_STAGE_H
#define OFA_STAGE_H

#include "proto.h"
#include "stats.h"

#include <signal.h>
#include <stdbool.h>

typedef struct {
    char id[64];
    char ctl[512];        /* broker endpoint (--ctl) */
    char plan[1024];
    char stats[512];
    char run_dir[1024];
    char tier[32];
    int credits;          /* items this process may hold (default 8) */
    char curve[1024];     /* --curve FILE: the run's CURVE key file (tcp:// runs), or "" */
    char arena[SHMARENA_TAG_MAX]; /* --arena TAG: large outputs go through a shared-memory
                                     arena named by the run's tag (shmarena.h), or "" */
    int arena_mb;         /* --arena-mb N: the arena's size (default 128) */
} stage_args_t;

/* extra_fn(ctx, flag, value) handles a program-specific flag: returns 1 when it took
 * the flag and its value, 2 when it took the flag alone (a switch), 0 when unknown. */
typedef int (*stage_extra_fn)(void *ctx, const char *flag, const char *value);

/* Parse argv. Prints usage and exits 0 on --help; exits 2 with a one-line reason on an
 * unknown or incomplete flag. `usage` describes the program (first line) and its extra
 * flags. */
void stage_args_parse(stage_args_t *a, int argc, char **argv, const char *usage,
                      stage_extra_fn extra_fn, void *extra_ctx);

/* Value of a numeric program flag: the whole string must be a number in [lo, hi];
 * otherwise the program exits 1 with "FLAG takes a number in [lo, hi], got 'VALUE'".
 * For use inside an extra_fn. */
double stage_flag_number(const char *flag, const char *value, double lo, double hi);
/* The same for a decimal integer in [lo, hi]. */
long stage_flag_int(const char *flag, const char *value, long lo, long hi);

/* SIGINT/SIGTERM set this flag (installed by stage_install_signals). */
extern volatile sig_atomic_t stage_stop_flag;
void stage_install_signals(void);

/* A DEALER connection to the broker or the batcher, with hello and heartbeats. */
typedef struct stage_conn stage_conn_t;

/* Connect to endpoint and say hello: role ("worker", "source", "batcher", "consumer"),
 * the process id and tier, and the credits it grants. Extra hello fields can be set
 * on `hello` (may be NULL; ownership taken). Returns NULL with err on failure. */
stage_conn_t *stage_conn_new(void *zctx, const char *endpoint, const char *role,
                             const char *id, const char *tier, int credits,
                             proto_msg_t *hello, char *err, size_t errlen);
void stage_conn_destroy(stage_conn_t **self_p);
void *stage_conn_socket(stage_conn_t *self);
/* Send a message (takes ownership); records the time for heartbeats. */
int stage_conn_send(stage_conn_t *self, proto_msg_t **msg_p);
/* Send a heartbeat when nothing was sent for heartbeat_ms. */
void stage_conn_heartbeat(stage_conn_t *self);
/* Send CREDIT n. */
int stage_conn_credit(stage_conn_t *self, int n);
/* A consumer's answer to one batch: CREDIT {n: 1, ack: step}, which also confirms to
 * the batcher that the batch of that step arrived (docs/protocol.md, the ack contract). */
int stage_conn_ack(stage_conn_t *self, int64_t step);
/* Say the connection's hello again (asked by a restarted batcher: CONTROL "rehello"). */
int stage_conn_rehello(stage_conn_t *self);

/* Outputs from this size on go through the arena (--arena): smaller ones travel inline
 * in the envelope (PROTO_INLINE_MAX), which costs less than a slot's bookkeeping. */
#define STAGE_ARENA_MIN 16384

/* The arena of --arena made on first use (a->arena_mb MiB, halved down to 16 MiB while
 * /dev/shm has no room; when it cannot be made, the reason goes to stderr once and the
 * process sends frames): a process that never has a large tensor (a text-only plan)
 * reserves no shared memory. A pipeline process detaches it at exit (shmarena_detach),
 * launch unlinks it. */
typedef struct {
    shmarena_t *arena;
    int failed;    /* it could not be made (said once): frames from then on */
} stage_arena_t;

/* The arena, made at the first call; NULL without --arena or when it could not be made.
 * The caller detaches it at exit (shmarena_detach(&sa->arena)). */
shmarena_t *stage_arena_get(stage_arena_t *sa, const stage_args_t *a);

/* 1 if m has a tensor or bin field of STAGE_ARENA_MIN bytes or more (in a slot or not):
 * the batcher makes its arena with the first such sample, before it builds a batch. */
int stage_msg_big(const proto_msg_t *m);

/* Every tensor or bin field of m of `min` bytes or more and not in a slot yet into a slot
 * of the arena of --arena (stage_arena_get: made when the first such field needs it;
 * without --arena nothing happens), counted in st (may be NULL) as arena_slots, or
 * arena_full when the ring has no room (the field then travels as a frame). */
void stage_msg_to_arena(stage_arena_t *sa, const stage_args_t *a, proto_msg_t *m, size_t min,
                        stats_t *st);

/* Heartbeat period (ms): every process sends something at least this often. */
#define STAGE_HEARTBEAT_MS 500

typedef int (*stage_work_fn)(void *ctx, proto_msg_t *msg, char *err, size_t errlen);

/* The worker loop: connect to a.ctl as a worker of a.tier, take samples, call fn,
 * answer each with the processed sample (@hop + 1) or a REJECT, heartbeat, report
 * stats, stop on CONTROL "stop" or a signal. Returns the exit code for main. */
int stage_worker_run(const stage_args_t *a, stage_work_fn fn, void *ctx);

/* Make a REJECT answering `sample`: same task and ids, "seq", "slot", "row", "epoch",
 * "split", "stage" (the tier) and "reason". The caller owns the result. */
proto_msg_t *stage_make_reject(const proto_msg_t *sample, const char *stage,
                               const char *reason);

#endif
