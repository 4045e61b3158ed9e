/* test_security.c: CURVE on tcp:// (common/curve.h) with the real ofa-broker.
 *
 * The broker runs as a child process on tcp://127.0.0.1 with a key file made by
 * curve_keys_generate, as launch makes one per run. Four clients try it: one with the
 * run's keys, one plain socket, one that knows the client keys but a wrong server key,
 * and one that knows the server's public key but has its own client key pair. Each
 * sends a hello and a few messages, among them a sample and a batch it tries to inject.
 * The broker's own counters (its stats, sent to a CURVE-secured PULL socket here as to
 * launch's) must show exactly the messages of the client with the keys: nothing of the
 * others reaches it, and no handshake of theirs succeeds (socket monitor events).
 *
 * The key file itself: mode 0600, refused when others may read it, when it is not a key
 * file, or when a key is damaged. */
#include "broker_proc.h"
#include "curve.h"
#include "proto.h"
#include "util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

static char err[1400];

/* A free port on 127.0.0.1 (the kernel's choice; never a fixed port). */
static int s_free_port(void) {
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t len = sizeof ep;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return atoi(strrchr(ep, ':') + 1);
}

Test(curve, libzmq_has_curve) {
    /* Not a skip: without CURVE a cluster run would have to go unsecured. */
    cr_assert(curve_available(), "this libzmq has no CURVE (zmq_has(\"curve\") is false)");
}

Test(curve, key_file_is_private_and_checked) {
    char dir[64], path[128], bad[128];
    bproc_tmpdir(dir, sizeof dir, "ofa-sec");
    snprintf(path, sizeof path, "%s/curve.keys", dir);
    umask(022);   /* generate must not depend on the umask */
    curve_keys_t k, l;
    cr_assert_eq(curve_keys_generate(path, &k, err, sizeof err), 0, "%s", err);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "mode %o", sb.st_mode & 0777);
    cr_assert_eq(curve_keys_load(path, &l, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(&k, &l, sizeof k), 0);
    cr_assert_str_neq(k.server_public, k.client_public);
    cr_assert_eq(strlen(k.server_secret), 40);

    /* Readable by others: refused, naming the file and the mode. */
    chmod(path, 0644);
    cr_assert_eq(curve_keys_load(path, &l, err, sizeof err), -1);
    cr_assert(strstr(err, path) && strstr(err, "644"), "%s", err);
    chmod(path, 0600);

    /* Not a key file; a damaged key; a missing key: each refused with file and line. */
    snprintf(bad, sizeof bad, "%s/bad.keys", dir);
    struct { const char *text, *want; } cases[] = {
        {"server-public = x\n", ":1: not a key file"},
        {"# ofa-curve-keys 1\nserver-public = tooshort\n", ":2: server-public is not"},
        {"# ofa-curve-keys 1\nserver-public = 0123456789012345678901234567890123456789\n",
         "no server-secret"},
        {"# ofa-curve-keys 1\nbogus = 0123456789012345678901234567890123456789\n",
         ":2: unknown name 'bogus'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        FILE *f = fopen(bad, "w");
        fputs(cases[i].text, f);
        fclose(f);
        chmod(bad, 0600);
        cr_assert_eq(curve_keys_load(bad, &l, err, sizeof err), -1, "case %zu loaded", i);
        cr_assert(strstr(err, cases[i].want), "case %zu: %s", i, err);
    }
    cr_assert_eq(curve_keys_load("/nonexistent/curve.keys", &l, err, sizeof err), -1);
    bproc_rmdir(dir);
}

/* ---------------------------------------------------------------- the broker */

/* The broker on tcp://127.0.0.1 with the run's CURVE keys; its stats socket is a CURVE
 * server, as launch's. */
typedef struct {
    bproc_t p;
    char keys[128];
    curve_zap_t *zap;
    curve_keys_t k;
} s_broker_t;

static void broker_start_with(s_broker_t *b, const char *max_msg) {
    memset(b, 0, sizeof *b);
    bproc_tmpdir(b->p.dir, sizeof b->p.dir, "ofa-sec");
    snprintf(b->keys, sizeof b->keys, "%s/curve.keys", b->p.dir);
    cr_assert_eq(curve_keys_generate(b->keys, &b->k, err, sizeof err), 0, "%s", err);
    snprintf(b->p.ep, sizeof b->p.ep, "tcp://127.0.0.1:%d", s_free_port());
    snprintf(b->p.stats_ep, sizeof b->p.stats_ep, "tcp://127.0.0.1:%d", s_free_port());
    b->p.ctx = zmq_ctx_new();
    b->zap = curve_zap_new(b->p.ctx, &b->k, err, sizeof err);
    cr_assert_not_null(b->zap, "%s", err);
    b->p.pull = zmq_socket(b->p.ctx, ZMQ_PULL);
    cr_assert_eq(curve_server_apply(b->p.pull, &b->k, err, sizeof err), 0, "%s", err);
    cr_assert_eq(zmq_bind(b->p.pull, b->p.stats_ep), 0);
    bproc_start(&b->p, (const char *[]){"--curve", b->keys, "--max-msg-bytes", max_msg, NULL});
}

static void broker_start(s_broker_t *b) { broker_start_with(b, "268435456"); }

static void broker_end(s_broker_t *b) {
    zmq_close(b->p.pull);
    curve_zap_destroy(&b->zap);
    zmq_ctx_term(b->p.ctx);
    bproc_rmdir(b->p.dir);
}

/* ---------------------------------------------------------------- clients */

typedef struct {
    const char *name;
    void *sock, *mon;
    int succeeded, failed;    /* handshake events seen */
} s_client_t;

static void client_new(s_client_t *c, void *ctx, const char *name, const char *ep,
                       const curve_keys_t *k) {
    memset(c, 0, sizeof *c);
    c->name = name;
    c->sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sock, ZMQ_ROUTING_ID, name, strlen(name));
    if (k)
        cr_assert_eq(curve_client_apply(c->sock, k, err, sizeof err), 0, "%s", err);
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://mon-%s", name);
    cr_assert_eq(zmq_socket_monitor(c->sock, mon, ZMQ_EVENT_ALL), 0);
    c->mon = zmq_socket(ctx, ZMQ_PAIR);
    zmq_setsockopt(c->mon, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_connect(c->mon, mon), 0);
    cr_assert_eq(zmq_connect(c->sock, ep), 0);
}

/* Read the monitor's events so far: each is two frames, (u16 event, u32 value) and the
 * endpoint. */
static void client_events(s_client_t *c) {
    for (;;) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, c->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2)
            memcpy(&event, zmq_msg_data(&ev), 2);
        zmq_msg_close(&ev);
        zmq_msg_t addr;
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, c->mon, 0);
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            c->succeeded++;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
            event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            c->failed++;
    }
}

static void client_send(s_client_t *c, proto_msg_t *m) {
    /* DONTWAIT: a client that never completes a handshake has nowhere to queue to
     * beyond its pipe; what matters is that nothing of it arrives. */
    proto_send(c->sock, NULL, 0, &m, ZMQ_DONTWAIT);
    proto_msg_destroy(&m);
}

/* hello as a source, a heartbeat, a sample and a batch: four messages. */
static void client_talk(s_client_t *c) {
    proto_msg_t *h = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(h, "hello");
    proto_msg_set_str(h, "role", "source");
    proto_msg_set_str(h, "id", c->name);
    proto_msg_set_int(h, "credits", 1);
    client_send(c, h);
    proto_msg_t *hb = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(hb, "heartbeat");
    client_send(c, hb);
    proto_msg_t *s = proto_msg_new(PROTO_SAMPLE, "caption");
    uint64_t id = 7;
    proto_msg_set_ids(s, &id, 1);
    proto_msg_set_int(s, "seq", 0);
    proto_msg_set_str(s, "cap", "injected");
    client_send(c, s);
    proto_msg_t *bt = proto_msg_new(PROTO_BATCH, "caption");
    proto_msg_set_ids(bt, &id, 1);
    proto_msg_set_int(bt, "step", 0);
    client_send(c, bt);
}

static void client_close(s_client_t *c) {
    zmq_socket_monitor(c->sock, NULL, 0);
    zmq_close(c->mon);
    zmq_close(c->sock);
}

Test(curve, broker_admits_only_the_runs_clients, .timeout = 60) {
    s_broker_t b;
    broker_start(&b);
    void *ctx = zmq_ctx_new();

    curve_keys_t wrong_server = b.k, own_pair = b.k, other;
    cr_assert_eq(zmq_curve_keypair(other.server_public, other.server_secret), 0);
    snprintf(wrong_server.server_public, CURVE_KEY_LEN, "%s", other.server_public);
    cr_assert_eq(zmq_curve_keypair(own_pair.client_public, own_pair.client_secret), 0);

    enum { GOOD, PLAIN, WRONG_SERVER, OWN_PAIR, N };
    s_client_t c[N];
    client_new(&c[GOOD], ctx, "good", b.p.ep, &b.k);
    client_new(&c[PLAIN], ctx, "plain", b.p.ep, NULL);
    client_new(&c[WRONG_SERVER], ctx, "wrongserver", b.p.ep, &wrong_server);
    client_new(&c[OWN_PAIR], ctx, "ownpair", b.p.ep, &own_pair);

    /* Every client talks for 2 s (the broker may still be starting at first). Only the
     * good one's messages are counted below, and only once its handshake succeeded. */
    int sent_good = 0;
    double t0 = util_now();
    while (util_now() - t0 < 2.0) {
        for (int i = 0; i < N; i++) {
            client_events(&c[i]);
            if (i != GOOD)
                client_talk(&c[i]);
        }
        if (c[GOOD].succeeded && sent_good == 0) {
            client_talk(&c[GOOD]);
            sent_good = 4;
        }
        usleep(100000);
    }
    for (int i = 0; i < N; i++)
        client_events(&c[i]);
    cr_assert_eq(sent_good, 4, "the client with the run's keys never completed its handshake");
    cr_assert_eq(c[PLAIN].succeeded, 0, "a plain socket completed a handshake");
    cr_assert_eq(c[WRONG_SERVER].succeeded, 0, "a client with a wrong server key got in");
    cr_assert_eq(c[OWN_PAIR].succeeded, 0, "a client with its own key pair got in");
    cr_assert_gt(c[OWN_PAIR].failed + c[PLAIN].failed, 0,
                 "no handshake failure was reported to the refused clients");

    /* The broker's counters: the 4 messages of the good client, nothing else; of those,
     * the batch is refused as malformed (no peer may send the broker a batch), which
     * shows that even a batch from a client with the keys is looked at, not trusted. */
    const char *keys[] = {"items_in", "malformed"};
    double vals[2];
    usleep(300000);
    bproc_stop(&b.p, keys, vals, 2);
    for (int i = 0; i < N; i++)
        client_close(&c[i]);
    zmq_ctx_term(ctx);
    cr_assert_eq(vals[0], 4, "the broker received %g messages; only the 4 of the client with "
                 "the keys may arrive", vals[0]);
    if (vals[1] != 1) {
        char log[160];
        snprintf(log, sizeof log, "%s/broker.log", b.p.dir);
        char *t = util_read_file(log, NULL, err, sizeof err);
        cr_assert_fail("the broker saw %g malformed messages, not 1 (the good client's batch):\n%s", vals[1], t ? t : "");
    }

    /* Its log names the good client only. */
    char log[160];
    snprintf(log, sizeof log, "%s/broker.log", b.p.dir);
    char *text = util_read_file(log, NULL, err, sizeof err);
    cr_assert_not_null(text, "%s", err);
    cr_assert(strstr(text, "with CURVE"), "the broker did not bind with CURVE:\n%s", text);
    cr_assert(strstr(text, "good joined"), "no hello of the good client:\n%s", text);
    cr_assert_null(strstr(text, "plain"), "%s", text);
    cr_assert_null(strstr(text, "wrongserver"), "%s", text);
    cr_assert_null(strstr(text, "ownpair"), "%s", text);
    free(text);
    broker_end(&b);
}

/* The broker refuses to start with a key file others may read: no silent fallback to an
 * unsecured socket. */
Test(curve, broker_refuses_a_readable_key_file, .timeout = 30) {
    char dir[64], keys[128];
    bproc_tmpdir(dir, sizeof dir, "ofa-sec");
    snprintf(keys, sizeof keys, "%s/curve.keys", dir);
    cr_assert_eq(curve_keys_generate(keys, NULL, err, sizeof err), 0, "%s", err);
    chmod(keys, 0640);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-broker --id broker --bind tcp://127.0.0.1:%d "
             "--curve %s --run-dir %s > %s/out.log 2>&1", OFA_BINARY_DIR, s_free_port(), keys,
             dir, dir);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) != 0, "ofa-broker started with a 0640 key file");
    char log[128];
    snprintf(log, sizeof log, "%s/out.log", dir);
    char *text = util_read_file(log, NULL, err, sizeof err);
    cr_assert_not_null(text);
    cr_assert(strstr(text, "must be 0600"), "%s", text);
    free(text);
    bproc_rmdir(dir);
}

/* limits.message_bytes on the broker's socket (--max-msg-bytes, ZMQ_MAXMSGSIZE): a frame
 * over it never reaches the broker; the client's other messages do. */
Test(curve, broker_drops_a_frame_over_the_message_limit, .timeout = 60) {
    s_broker_t b;
    broker_start_with(&b, "1048576");
    void *ctx = zmq_ctx_new();
    s_client_t c;
    client_new(&c, ctx, "big", b.p.ep, &b.k);
    double t0 = util_now();
    while (!c.succeeded && util_now() - t0 < 10) {
        client_events(&c);
        usleep(20000);
    }
    cr_assert(c.succeeded, "no handshake");
    proto_msg_t *h = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(h, "hello");
    proto_msg_set_str(h, "role", "source");
    proto_msg_set_str(h, "id", "big");
    client_send(&c, h);
    usleep(300000);
    size_t n = 2u << 20;
    uint8_t *blob = calloc(1, n);
    proto_msg_t *s = proto_msg_new(PROTO_SAMPLE, "caption");
    uint64_t id = 1;
    proto_msg_set_ids(s, &id, 1);
    proto_msg_set_bin(s, "img", blob, n);
    free(blob);
    client_send(&c, s);
    usleep(500000);
    const char *keys[] = {"items_in", "malformed"};
    double vals[2];
    bproc_stop(&b.p, keys, vals, 2);
    client_close(&c);
    zmq_ctx_term(ctx);
    cr_assert_eq(vals[0], 1, "the broker received %g messages: only the hello may arrive, "
                 "not the 2 MiB sample", vals[0]);
    broker_end(&b);
}
