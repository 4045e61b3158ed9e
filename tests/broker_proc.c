/* broker_proc.c: see broker_proc.h. */
#include "broker_proc.h"

#include "proto.h"
#include "util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

void bproc_tmpdir(char *dir, size_t len, const char *prefix) {
    snprintf(dir, len, "/tmp/%s-XXXXXX", prefix);
    cr_assert_not_null(mkdtemp(dir));
}

void bproc_rmdir(const char *dir) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

void bproc_start(bproc_t *b, const char *const *args) {
    const char *argv[32] = {"ofa-broker", "--id", "broker", "--bind", b->ep, "--stats",
                            b->stats_ep, "--run-dir", b->dir};
    int argc = 9;
    for (; args && *args; args++) {
        cr_assert_lt(argc, 31, "too many flags for ofa-broker");
        argv[argc++] = *args;
    }
    argv[argc] = NULL;
    char log[128];
    snprintf(log, sizeof log, "%s/broker.log", b->dir);
    b->pid = fork();
    cr_assert_geq(b->pid, 0);
    if (b->pid == 0) {
        /* A failed assertion ends the test process without bproc_stop: the broker must
         * not outlive it (nor keep the test's stdout open). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        FILE *f = freopen(log, "w", stderr);
        f = freopen("/dev/null", "w", stdout);
        (void)f;
        execv(OFA_BINARY_DIR "/bin/ofa-broker", (char *const *)argv);
        _exit(127);
    }
}

void bproc_stop(bproc_t *b, const char **keys, double *vals, int n) {
    kill(b->pid, SIGTERM);
    int status = 0;
    double t0 = util_now();
    pid_t w;
    while ((w = waitpid(b->pid, &status, WNOHANG)) == 0 && util_now() - t0 < 10)
        usleep(10000);
    if (w == 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, &status, 0);
        cr_assert_fail("ofa-broker did not stop on SIGTERM");
    }
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "ofa-broker exited with status %d", status);
    for (int k = 0; k < n; k++)
        vals[k] = -1;
    /* The final snapshot is sent on the way out: what is queued now is all there is. */
    int to = 500, snapshots = 0;
    zmq_setsockopt(b->pull, ZMQ_RCVTIMEO, &to, sizeof to);
    char err[256];
    for (proto_msg_t *m; (m = proto_recv(b->pull, NULL, NULL, 0, err, sizeof err));) {
        snapshots++;
        for (int k = 0; k < n; k++) {
            double v = proto_msg_get_float(m, keys[k], -1);
            if (v > vals[k])
                vals[k] = v;
        }
        proto_msg_destroy(&m);
    }
    cr_assert_gt(snapshots, 0, "no stats from ofa-broker (not even the final one)");
}
