/* broker_proc.h: the real ofa-broker as a child process of a test, for the suites that
 * check the whole program over sockets (test_broker_sock.c on ipc://, test_security.c on
 * tcp:// with CURVE).
 *
 * The test makes the temporary folder (bproc_tmpdir), chooses the two endpoints and
 * binds the stats socket as launch does (how: plain or CURVE, is the test's), then
 * starts the broker with its own flags; bproc_stop sends SIGTERM, requires exit status
 * 0 and reads the counters from every stats snapshot the broker sent:
 *
 *     bproc_t b;
 *     bproc_tmpdir(b.dir, sizeof b.dir, "ofa-brk");
 *     ... b.ep, b.stats_ep, b.ctx, b.pull (bound to stats_ep) ...
 *     bproc_start(&b, (const char *[]){"--dead-ms", "500", NULL});
 *     ... the test plays the peers ...
 *     bproc_stop(&b, keys, vals, n);
 *     ... close b.pull, end b.ctx, bproc_rmdir(b.dir) ...
 */
#ifndef OFA_TEST_BROKER_PROC_H
#define OFA_TEST_BROKER_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    char dir[64];                  /* temporary folder: --run-dir, broker.log */
    char ep[128], stats_ep[128];   /* --bind and --stats */
    pid_t pid;
    void *ctx;
    void *pull;                    /* the stats socket's bound end (launch's) */
} bproc_t;

/* Makes a fresh folder /tmp/PREFIX-XXXXXX into dir (asserts). */
void bproc_tmpdir(char *dir, size_t len, const char *prefix);
/* Removes folder dir and all in it (asserts). */
void bproc_rmdir(const char *dir);

/* Forks ofa-broker --id broker --bind ep --stats stats_ep --run-dir dir ARGS... (args:
 * NULL-terminated), its stderr in dir/broker.log. It dies with the test process, so a
 * failed assertion leaves no broker behind. */
void bproc_start(bproc_t *b, const char *const *args);

/* SIGTERM the broker: it must exit with status 0 within 10 s. vals[k] = the largest
 * value of counter keys[k] over its stats snapshots (-1 where none has it); at least
 * one snapshot (the final one) must arrive. */
void bproc_stop(bproc_t *b, const char **keys, double *vals, int n);

#endif
