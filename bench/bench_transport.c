/* bench_transport.c: how fast tensors cross a process boundary on one host.
 *
 *   bench_transport [--seconds T] [--sizes 1024,65536,442368,4194304]
 *
 * A sender process and a receiver process joined by one ZeroMQ PUSH/PULL connection over
 * ipc:// (what the stages use on one host). For each tensor size S the sender builds
 * messages of one u8 tensor of S bytes (written by memcpy from a prepared buffer, as a
 * stage writes its output) and the receiver decodes each and copies the tensor out (as
 * the batcher copies samples into a batch), in three ways:
 *   frame: proto_send/proto_recv, the tensor inline when small, else its own frame sent
 *          zero-copy (the default transport);
 *   shm:   the same, with the tensor moved to a POSIX shared-memory object and only its
 *          descriptor on the socket (proto_msg_field_to_shm; the receiver maps and
 *          unlinks it);
 *   arena: the tensor written into a slot of a long-lived shared-memory arena that the
 *          sender creates once and the receiver maps once (common/shmarena.h); only
 *          the descriptor {name, offset, len, gen} is on the socket; the receiver
 *          copies the bytes out and releases the slot. When the ring is full the
 *          tensor goes as a frame (the share of such messages is printed);
 *   raw:   zmq_send/zmq_recv of S bytes with no envelope: the floor, measured in the same
 *          run, that the protocol's own cost is compared against.
 * It prints messages/s, GB/s and each mode's ratio to raw. The reference for the other
 * side of the comparison, torch's DataLoader transport (a multiprocessing queue with the
 * tensor in shared memory), is bench/bench_transport_torch.py, run by the same
 * invocation first for every size (when /usr/bin/python3 has torch; else the ratios
 * to it are left out with a message). */
#include "proto.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

enum { MODE_RAW = 0, MODE_FRAME, MODE_SHM, MODE_ARENA, MODE__N };
static const char *const s_mode_name[] = {"raw", "frame", "shm", "arena"};

/* Arena mode, the sender's side: messages sent, and those that went as frames because
 * the ring was full. */
static long s_arena_sent, s_arena_full;

/* The receiver: counts messages until an empty one, copies each payload to dst, and
 * writes (count, seconds from the first to the last message) to the pipe. */
static void s_receiver(const char *ep, int mode, size_t size, int fd) {
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PULL);
    int hwm = 16;
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    int tmo = 30000;   /* a lost message fails the run instead of hanging it */
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    if (zmq_bind(s, ep) != 0) {
        fprintf(stderr, "bench_transport: bind %s: %s\n", ep, zmq_strerror(errno));
        _exit(1);
    }
    char ready = 1;
    if (write(fd, &ready, 1) != 1)   /* bound: the sender may connect */
        _exit(1);
    uint8_t *dst = util_malloc(size);
    char *rbuf = util_malloc(size + 1);
    long n = 0;
    double t0 = 0, t1 = 0;
    char err[256];
    for (;;) {
        size_t got = 0;
        if (mode == MODE_RAW) {
            int r = zmq_recv(s, rbuf, size + 1, 0);
            if (r < 0 && errno == EAGAIN) {
                fprintf(stderr, "bench_transport: nothing received for 30 s after %ld\n", n);
                _exit(1);
            }
            if (r < 0)
                continue;
            if (r == 0)
                break;
            memcpy(dst, rbuf, (size_t)r);
            got = (size_t)r;
        } else {
            proto_msg_t *m = proto_recv(s, NULL, NULL, 0, err, sizeof err);
            if (!m) {
                if (err[0]) {
                    fprintf(stderr, "bench_transport: receive: %s\n", err);
                    _exit(1);
                }
                if (errno == EAGAIN) {
                    fprintf(stderr, "bench_transport: nothing received for 30 s after %ld\n",
                            n);
                    _exit(1);
                }
                continue;
            }
            const proto_field_t *f = proto_msg_get_tensor(m, "x", PROTO_U8);
            if (!f) {
                proto_msg_destroy(&m);
                break;   /* the end marker */
            }
            memcpy(dst, f->data, f->len);
            got = f->len;
            shmarena_desc_t d;
            if (proto_msg_field_arena(m, "x", &d) &&
                shmarena_reader_release(proto_arena_reader(), &d, err, sizeof err) != 0) {
                fprintf(stderr, "bench_transport: release: %s\n", err);
                _exit(1);
            }
            proto_msg_destroy(&m);
        }
        if (got != size) {
            fprintf(stderr, "bench_transport: %zu bytes received, %zu sent\n", got, size);
            _exit(1);
        }
        double now = util_now();
        if (n == 0)
            t0 = now;
        t1 = now;
        n++;
    }
    double out[2] = {(double)n, t1 - t0};
    if (write(fd, out, sizeof out) != sizeof out)
        _exit(1);
    free(dst);
    free(rbuf);
    zmq_close(s);
    zmq_ctx_term(ctx);
    _exit(0);
}

/* Send messages for `seconds`, then the end marker; then read the receiver's result
 * (count, seconds) from fd into result. */
static void s_sender(const char *ep, int mode, const uint8_t *src, size_t size, double seconds,
                     int fd, double result[2]) {
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int hwm = 16;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_connect(s, ep);
    char err[256];
    int64_t shape[1] = {(int64_t)size};
    shmarena_t *arena = NULL;
    if (mode == MODE_ARENA && !(arena = shmarena_new(0, err, sizeof err))) {
        fprintf(stderr, "bench_transport: %s\n", err);
        exit(1);
    }
    s_arena_sent = s_arena_full = 0;
    double t0 = util_now();
    while (util_now() - t0 < seconds) {
        for (int k = 0; k < 16; k++) {
            if (mode == MODE_RAW) {
                uint8_t *buf = util_malloc(size);
                memcpy(buf, src, size);
                zmq_send(s, buf, size, 0);
                free(buf);
                continue;
            }
            proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "bench");
            if (mode == MODE_ARENA) {
                /* The tensor is written straight into its slot, as a stage would write
                 * its output; a full ring sends it as a frame. */
                shmarena_desc_t d;
                void *slot = shmarena_reserve(arena, size, &d);
                s_arena_sent++;
                if (slot) {
                    memcpy(slot, src, size);
                    proto_msg_arena_tensor(m, "x", PROTO_U8, 1, shape, slot, &d);
                } else {
                    s_arena_full++;
                    uint8_t *buf = util_malloc(size);
                    memcpy(buf, src, size);
                    proto_msg_take_tensor(m, "x", PROTO_U8, 1, shape, buf);
                }
                if (proto_send(s, NULL, 0, &m, 0) != 0) {
                    fprintf(stderr, "bench_transport: send: %s\n", zmq_strerror(errno));
                    exit(1);
                }
                continue;
            }
            uint8_t *buf = util_malloc(size);
            memcpy(buf, src, size);
            proto_msg_take_tensor(m, "x", PROTO_U8, 1, shape, buf);
            if (mode == MODE_SHM && proto_msg_field_to_shm(m, "x", err, sizeof err) != 0) {
                fprintf(stderr, "bench_transport: shm: %s\n", err);
                exit(1);
            }
            if (proto_send(s, NULL, 0, &m, 0) != 0) {
                fprintf(stderr, "bench_transport: send: %s\n", zmq_strerror(errno));
                exit(1);
            }
        }
    }
    if (mode == MODE_RAW) {
        zmq_send(s, "", 0, 0);
    } else {
        proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
        proto_msg_set_op(m, "end");
        proto_send(s, NULL, 0, &m, 0);
    }
    /* Keep the socket open until the receiver has reported: the end marker must reach it. */
    double out[2] = {0, 0};
    ssize_t r = read(fd, out, sizeof out);
    result[0] = r == sizeof out ? out[0] : -1;
    result[1] = out[1];
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    zmq_ctx_term(ctx);
    shmarena_destroy(&arena);
}

/* One measurement: messages/s over the receiver's first-to-last interval. */
static int s_measure(int mode, size_t size, double seconds, const uint8_t *src, double *rate) {
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/ofa-bench-transport-%d-%d", (int)getpid(), mode);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        s_receiver(ep, mode, size, fds[1]);
    }
    close(fds[1]);
    char ready;
    if (read(fds[0], &ready, 1) != 1) {   /* the receiver has bound */
        waitpid(pid, NULL, 0);
        return -1;
    }
    double out[2];
    s_sender(ep, mode, src, size, seconds, fds[0], out);
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (out[0] < 2 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || out[1] <= 0)
        return -1;
    *rate = (out[0] - 1) / out[1];
    return 0;
}

int main(int argc, char **argv) {
    double seconds = 2.0;
    const char *sizes = "1024,65536,442368,4194304";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
            sizes = argv[++i];
        else {
            fprintf(stderr, "usage: bench_transport [--seconds T] [--sizes S1,S2,...]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    printf("one PUSH/PULL connection over ipc://, sender and receiver in two processes;\n"
           "each message one u8 tensor written by the sender and copied out by the receiver\n");
    /* The reference: torch's DataLoader transport, measured first for every size. */
    double torch_rate[64] = {0};
    int ntorch = 0;
    {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/bench_transport_torch.py %g %s",
                 OFA_BENCH_SOURCE_DIR, seconds, sizes);
        for (char *c = cmd + strlen(cmd) - strlen(sizes); *c; c++)
            if (*c == ',')
                *c = ' ';
        FILE *p = popen(cmd, "r");
        char line[256];
        while (p && ntorch < 64 && fgets(line, sizeof line, p)) {
            double sz, r;
            if (sscanf(line, "%lf %lf", &sz, &r) == 2)
                torch_rate[ntorch++] = r;
        }
        if (!p || pclose(p) != 0)
            fprintf(stderr, "bench_transport: the torch reference did not run (%s); "
                    "ratios to it are left out\n", cmd);
    }
    printf("%10s %6s %12s %9s %9s %9s\n", "bytes", "mode", "msgs/s", "GB/s", "x raw",
           "x torch");
    int isize = 0;
    char *list = util_strdup(sizes);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        size_t size = (size_t)strtoull(tok, NULL, 10);
        if (size == 0 || size > (1u << 30)) {
            fprintf(stderr, "bench_transport: bad size '%s'\n", tok);
            return 2;
        }
        uint8_t *src = util_malloc(size);
        for (size_t i = 0; i < size; i++)
            src[i] = (uint8_t)(i * 131 + 7);
        double raw = 0;
        for (int mode = 0; mode < MODE__N; mode++) {
            double rate;
            if (s_measure(mode, size, seconds, src, &rate) != 0) {
                fprintf(stderr, "bench_transport: %s at %zu bytes failed\n", s_mode_name[mode],
                        size);
                return 1;
            }
            if (mode == MODE_RAW)
                raw = rate;
            printf("%10zu %6s %12.0f %9.2f %9.2f", size, s_mode_name[mode], rate,
                   rate * (double)size / 1e9, rate / raw);
            if (isize < ntorch && torch_rate[isize] > 0)
                printf(" %9.2f", rate / torch_rate[isize]);
            if (mode == MODE_ARENA && s_arena_full > 0)
                printf("  (%ld of %ld sent as frames: arena full)", s_arena_full,
                       s_arena_sent);
            printf("\n");
            fflush(stdout);
        }
        if (isize < ntorch)
            printf("%10zu %6s %12.0f %9.2f %9s %9.2f\n", size, "torch", torch_rate[isize],
                   torch_rate[isize] * (double)size / 1e9, "", 1.0);
        isize++;
        free(src);
    }
    free(list);
    return 0;
}
