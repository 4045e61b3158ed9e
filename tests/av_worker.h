/* av_worker.h: runs one of the audio/video/motion worker programs against a ROUTER
 * that the test plays as the broker, for test_audio.c, test_video.c and test_motion.c
 * (header-only: each test program includes it once).
 *
 *     avw_t w;
 *     avw_start(&w, "ofa-audio", "audio", plan_text);
 *     proto_msg_t *answer = avw_call(&w, sample);    // takes sample; caller owns answer
 *     avw_stop(&w);                                  // asserts exit status 0
 */
#ifndef OFA_TEST_AV_WORKER_H
#define OFA_TEST_AV_WORKER_H

#include <criterion/criterion.h>

#include "proto.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    void *zctx, *router;
    pid_t pid;
    uint8_t ident[256];
    size_t identlen;
    char dir[64], log[300], bin[300];
} avw_t;

/* Next non-heartbeat message within timeout_ms (NULL if none). */
static proto_msg_t *avw_next(avw_t *w, int timeout_ms) {
    double end = util_now() + timeout_ms / 1000.0;
    char err[256];
    uint8_t ident[256];
    size_t l = 0;
    while (util_now() < end) {
        zmq_pollitem_t it = {w->router, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 50);
        proto_msg_t *m = proto_recv(w->router, ident, &l, ZMQ_DONTWAIT, err, sizeof err);
        if (!m)
            continue;
        if (proto_msg_kind(m) == PROTO_CONTROL && !strcmp(proto_msg_op(m), "heartbeat")) {
            proto_msg_destroy(&m);
            continue;
        }
        memcpy(w->ident, ident, w->identlen = l);
        return m;
    }
    return NULL;
}

/* Runs `prog` "--help" / with a bad flag: usage on 0, a one-line reason and non-zero. */
static void avw_check_flags(const char *prog, const char *bad_flag, const char *bad_value) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s/bin/%s --help > /dev/null 2>&1", OFA_BINARY_DIR, prog);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s --help exit %d", prog, rc);
    snprintf(cmd, sizeof cmd, "%s/bin/%s --id x --ctl ipc:///nonexistent --plan /nonexistent "
             "--stats ipc:///nonexistent %s '%s' 2>&1 | wc -l | grep -qx 1", OFA_BINARY_DIR,
             prog, bad_flag, bad_value);
    rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s %s '%s': not a one-line error", prog,
              bad_flag, bad_value);
    snprintf(cmd, sizeof cmd, "%s/bin/%s --id x --ctl ipc:///nonexistent --plan /nonexistent "
             "--stats ipc:///nonexistent %s '%s' > /dev/null 2>&1", OFA_BINARY_DIR, prog,
             bad_flag, bad_value);
    rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) != 0, "%s accepted %s '%s'", prog, bad_flag,
              bad_value);
}

/* Writes the plan, binds the ROUTER, starts the program (extra flags: NULL-terminated,
 * may be NULL) and waits for its hello. */
static void avw_start(avw_t *w, const char *prog, const char *tier, const char *plan_text,
                      const char *const *extra) {
    memset(w, 0, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/test_av_XXXXXX");
    cr_assert(mkdtemp(w->dir));
    char plan[200], ep[200], stats[200], err[256];
    snprintf(plan, sizeof plan, "%s/plan.conf", w->dir);
    cr_assert_eq(util_write_file_atomic(plan, plan_text, strlen(plan_text), err, sizeof err),
                 0, "%s", err);
    snprintf(ep, sizeof ep, "ipc://%s/broker.sock", w->dir);
    snprintf(stats, sizeof stats, "ipc://%s/stats.sock", w->dir);
    snprintf(w->log, sizeof w->log, "%s/%s.log", w->dir, tier);
    snprintf(w->bin, sizeof w->bin, "%s/bin/%s", OFA_BINARY_DIR, prog);
    w->zctx = zmq_ctx_new();
    w->router = zmq_socket(w->zctx, ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(w->router, ep), 0);
    const char *argv[32] = {w->bin, "--id", "w.0", "--ctl", ep, "--plan", plan, "--stats",
                            stats, "--tier", tier, "--credits", "2"};
    int n = 13;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    w->pid = fork();
    cr_assert(w->pid >= 0);
    if (w->pid == 0) {
        FILE *f = freopen(w->log, "w", stderr);
        (void)f;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    proto_msg_t *h = avw_next(w, 10000);
    cr_assert(h, "no hello from %s (see %s)", prog, w->log);
    cr_assert_str_eq(proto_msg_op(h), "hello");
    cr_assert_str_eq(proto_msg_get_str(h, "tier"), tier);
    proto_msg_destroy(&h);
}

/* Sends m (ownership taken) and returns the answer (the caller owns it). */
static proto_msg_t *avw_call(avw_t *w, proto_msg_t *m) {
    cr_assert_eq(proto_send(w->router, w->ident, w->identlen, &m, 0), 0);
    proto_msg_t *a = avw_next(w, 20000);
    cr_assert(a, "no answer from %s (see %s)", w->bin, w->log);
    return a;
}

/* Asks the worker to stop, checks it exits 0, removes the temporary folder. */
static void avw_stop(avw_t *w) {
    proto_msg_t *stop = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(stop, "stop");
    cr_assert_eq(proto_send(w->router, w->ident, w->identlen, &stop, 0), 0);
    int st;
    cr_assert_eq(waitpid(w->pid, &st, 0), w->pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s exit status %d (see %s)", w->bin, st,
              w->log);
    zmq_close(w->router);
    zmq_ctx_term(w->zctx);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", w->dir);
    int rc = system(cmd);
    (void)rc;
}

#endif
