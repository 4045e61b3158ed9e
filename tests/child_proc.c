/* child_proc.c: see child_proc.h. */
#include "child_proc.h"
#include "util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

pid_t cproc_spawn(char *const argv[], const char *log) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (log && !freopen(log, "w", stderr))
            _exit(126);
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int cproc_wait_exit(pid_t pid, double timeout_s) {
    double end = util_now() + timeout_s;
    int st;
    while (util_now() < end) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

proto_msg_t *cproc_next_msg(void *sock, uint8_t *ident, size_t *identlen, int timeout_ms) {
    double end = util_now() + timeout_ms / 1000.0;
    char e[256];
    while (util_now() < end) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 20);
        proto_msg_t *m = proto_recv(sock, ident, identlen, ZMQ_DONTWAIT, e, sizeof e);
        cr_assert(m || !e[0], "malformed message: %s", e);
        if (!m)
            continue;
        if (proto_msg_kind(m) == PROTO_CONTROL && strcmp(proto_msg_op(m), "heartbeat") == 0) {
            proto_msg_destroy(&m);
            continue;
        }
        return m;
    }
    return NULL;
}
