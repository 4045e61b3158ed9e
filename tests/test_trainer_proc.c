/* test_trainer_proc.c: the ofa-trainer program over ZeroMQ, with this test playing the
 * batcher (a ROUTER on ipc:// in a temporary folder) and launch's stats sink (a PULL):
 * hello with rank/world/credits, credits returned per batch, heartbeats while idle,
 * training, op="end" -> final checkpoint, eval.json and exit 0; SIGTERM -> checkpoint and
 * exit 0; --resume skips the batches already trained; bad flags exit non-zero. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "bpe.h"
#include "ckpt.h"
#include "proto.h"
#include "util.h"

static char s_dir[256], s_ep[400], s_stats_ep[400];
static void *s_zctx, *s_router, *s_pull;

static void s_setup(void) {
    snprintf(s_dir, sizeof s_dir, "/tmp/test_trproc.XXXXXX");
    cr_assert_not_null(mkdtemp(s_dir));
    char err[256], p[512];
    tok_bpe_t *bpe = tok_bpe_new(NULL, 0, err, sizeof err);
    snprintf(p, sizeof p, "%s/bpe.bin", s_dir);
    cr_assert_eq(tok_bpe_save(bpe, p, err, sizeof err), 0, "%s", err);
    tok_bpe_destroy(&bpe);
    char plan[2048];
    snprintf(plan, sizeof plan,
             "name = \"proc\";\nseed = 1;\nrun_dir = \"%s\";\n"
             "tasks = ( { name = \"copy\"; instruction = \"[TEXT:a] -> [TEXT:b]\"; train = [\"x.tsv\"];"
             " columns = [\"a\", \"b\"]; batch_size = 4; metric = \"exact_match\"; } );\n"
             "model = { size = \"nano\"; max_src_len = 16; max_tgt_len = 10; image_size = 96; patch = 16; };\n"
             "trainer = { backend = \"cpu\"; threads = 1; lr = 0.003; warmup = 5; max_steps = 40;"
             " log_every = 5; keep_checkpoints = 2; };\n", s_dir);
    snprintf(p, sizeof p, "%s/plan.resolved.conf", s_dir);
    cr_assert_eq(util_write_file_atomic(p, plan, strlen(plan), err, sizeof err), 0, "%s", err);
    snprintf(s_ep, sizeof s_ep, "ipc://%s/batches.sock", s_dir);
    snprintf(s_stats_ep, sizeof s_stats_ep, "ipc://%s/stats.sock", s_dir);
    s_zctx = zmq_ctx_new();
    s_router = zmq_socket(s_zctx, ZMQ_ROUTER);
    s_pull = zmq_socket(s_zctx, ZMQ_PULL);
    int zero = 0;
    zmq_setsockopt(s_router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s_pull, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_bind(s_router, s_ep), 0);
    cr_assert_eq(zmq_bind(s_pull, s_stats_ep), 0);
}

static void s_teardown(void) {
    zmq_close(s_router);
    zmq_close(s_pull);
    zmq_ctx_term(s_zctx);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(trainer_proc, .init = s_setup, .fini = s_teardown, .timeout = 120);

static pid_t s_start(int resume) {
    char plan[512];
    snprintf(plan, sizeof plan, "%s/plan.resolved.conf", s_dir);
    pid_t pid = fork();
    if (pid == 0) {
        char bin[512];
        snprintf(bin, sizeof bin, "%s/bin/ofa-trainer", OFA_BINARY_DIR);
        char *argv[] = {bin, "--id", "trainer.0", "--in", s_ep, "--plan", plan, "--stats", s_stats_ep,
                        "--run-dir", s_dir, "--rank", "0", "--world", "1", "--credits", "3",
                        resume ? "--resume" : NULL, NULL};
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}

typedef struct {
    uint8_t ident[256];
    size_t identlen;
    int credits;        /* credits granted by the trainer and not used */
    int hello;
    int heartbeats;
    int64_t acks[64];   /* the "ack" of each CREDIT, in order */
    int nacks;
} peer_t;

/* Receive one message from the trainer (timeout ms) and account for it. Returns its
 * kind, or 0 on timeout. */
static int s_recv(peer_t *p, int timeout_ms) {
    zmq_pollitem_t it = {s_router, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return 0;
    char err[256];
    proto_msg_t *m = proto_recv(s_router, p->ident, &p->identlen, 0, err, sizeof err);
    cr_assert_not_null(m, "malformed message from the trainer: %s", err);
    int kind = proto_msg_kind(m);
    if (kind == PROTO_CONTROL && !strcmp(proto_msg_op(m), "hello")) {
        p->hello++;
        cr_assert_eq(proto_msg_get_int(m, "rank", -1), 0);
        cr_assert_eq(proto_msg_get_int(m, "world", -1), 1);
        cr_assert_eq(proto_msg_get_int(m, "credits", -1), 3);
        p->credits += 3;   /* hello's credits are the initial window */
    } else if (kind == PROTO_CONTROL && !strcmp(proto_msg_op(m), "heartbeat")) {
        p->heartbeats++;
    } else if (kind == PROTO_CREDIT) {
        p->credits += (int)proto_msg_get_int(m, "n", 0);
        if (p->nacks < 64)
            p->acks[p->nacks++] = proto_msg_get_int(m, "ack", -1);
    }
    proto_msg_destroy(&m);
    return kind;
}

/* Wait until the trainer has granted at least one credit. */
static void s_wait_credit(peer_t *p) {
    for (int i = 0; i < 200 && p->credits <= 0; i++)
        s_recv(p, 100);
    cr_assert_gt(p->credits, 0, "no credit from the trainer");
}

/* A batch of 4 rows; ids step*10 + row unless given. */
static void s_send_batch_ids(peer_t *p, int64_t step, int valid, const uint64_t *given) {
    enum { B = 4, S = 6, T = 5 };
    int32_t src[B * S], sl[B], ti[B * T], to[B * T], tl[B];
    uint8_t sm[B * S] = {0};
    uint64_t ids[B];
    char refs[64] = "";
    util_rng_t r = {(uint64_t)(valid ? 0 : step % 4) + 1};
    for (int b = 0; b < B; b++) {
        ids[b] = given ? given[b] : (uint64_t)step * 10 + b;
        src[b * S] = 0, src[b * S + S - 1] = 2;
        ti[b * T] = 0;
        for (int i = 0; i < 4; i++) {
            int32_t t = TOK_BYTE0 + 'a' + (int)(util_rng_next(&r) % 26);
            src[b * S + 1 + i] = t;
            ti[b * T + 1 + i] = t;
            to[b * T + i] = t;
            refs[strlen(refs) + 1] = 0;
            refs[strlen(refs)] = (char)(t - TOK_BYTE0);
        }
        to[b * T + 4] = 2;
        sl[b] = S, tl[b] = T;
        if (b < B - 1)
            strcat(refs, "\n");
    }
    proto_msg_t *m = proto_msg_new(PROTO_BATCH, "copy");
    proto_msg_set_ids(m, ids, B);
    int64_t sh2[2] = {B, S}, sh1[1] = {B}, sht[2] = {B, T};
    proto_msg_set_tensor(m, "src_tok", PROTO_I32, 2, sh2, src);
    proto_msg_set_tensor(m, "src_mod", PROTO_U8, 2, sh2, sm);
    proto_msg_set_tensor(m, "src_len", PROTO_I32, 1, sh1, sl);
    proto_msg_set_tensor(m, "tgt_in", PROTO_I32, 2, sht, ti);
    proto_msg_set_tensor(m, "tgt_out", PROTO_I32, 2, sht, to);
    proto_msg_set_tensor(m, "tgt_len", PROTO_I32, 1, sh1, tl);
    proto_msg_set_int(m, "step", step);
    proto_msg_set_int(m, "epoch", 0);
    proto_msg_set_str(m, "split", valid ? "valid" : "train");
    if (valid)
        proto_msg_set_str(m, "refs", refs);
    cr_assert_eq(proto_send(s_router, p->ident, p->identlen, &m, 0), 0);
    p->credits--;
}

static void s_send_batch(peer_t *p, int64_t step, int valid) {
    s_send_batch_ids(p, step, valid, NULL);
}

static void s_send_end(peer_t *p) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "end");
    cr_assert_eq(proto_send(s_router, p->ident, p->identlen, &m, 0), 0);
}

static int s_wait_exit(pid_t pid, peer_t *p) {
    int status = 0;
    for (int i = 0; i < 600; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        s_recv(p, 100);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    cr_assert_fail("ofa-trainer did not exit");
    return -1;
}

static int s_count_lines(const char *path) {
    size_t len;
    char err[256];
    char *t = util_read_file(path, &len, err, sizeof err);
    if (!t)
        return -1;
    int n = 0;
    for (size_t i = 0; i < len; i++)
        n += t[i] == '\n';
    free(t);
    return n;
}

Test(trainer_proc, trains_until_end_then_evaluates) {
    peer_t p = {0};
    pid_t pid = s_start(0);
    for (int64_t step = 0; step < 40; step++) {
        s_wait_credit(&p);
        s_send_batch(&p, step, 0);
    }
    s_wait_credit(&p);
    s_send_batch(&p, 40, 1);
    s_send_end(&p);
    cr_assert_eq(s_wait_exit(pid, &p), 0);
    cr_assert_eq(p.hello, 1);
    /* The window: 3 credits in hello, then one CREDIT back per batch. */
    cr_assert_eq(p.credits, 3, "every batch answered by one credit");
    char path[512];
    snprintf(path, sizeof path, "%s/eval.json", s_dir);
    size_t len;
    char err[256];
    char *t = util_read_file(path, &len, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert(strstr(t, "\"copy\": {\"metric\": \"exact_match\""), "%s", t);
    cr_assert(strstr(t, "\"n\": 4, \"step\": 40"), "%s", t);
    free(t);
    snprintf(path, sizeof path, "%s/metrics.jsonl", s_dir);
    cr_assert_eq(s_count_lines(path), 8, "a line every 5 steps");
    snprintf(path, sizeof path, "%s/checkpoints", s_dir);
    cr_assert_eq(ckpt_latest(path), 40);
    /* Stats reached the sink. */
    int got = 0;
    while (zmq_poll(&(zmq_pollitem_t){s_pull, 0, ZMQ_POLLIN, 0}, 1, 0) > 0) {
        proto_msg_t *m = proto_recv(s_pull, NULL, NULL, 0, err, sizeof err);
        if (m && proto_msg_kind(m) == PROTO_STATS)
            got++;
        proto_msg_destroy(&m);
    }
    cr_assert_gt(got, 0, "no stats");
}

Test(trainer_proc, sigterm_checkpoints_and_resume_skips) {
    peer_t p = {0};
    pid_t pid = s_start(0);
    for (int64_t step = 0; step < 7; step++) {
        s_wait_credit(&p);
        s_send_batch(&p, step, 0);
    }
    /* All 7 trained: the trainer has returned 7 credits beyond the initial window. */
    for (int i = 0; i < 100 && p.credits < 3; i++)
        s_recv(&p, 100);
    cr_assert_eq(p.credits, 3);
    /* Idle: heartbeats keep coming. */
    int hb = p.heartbeats;
    for (int i = 0; i < 12; i++)
        s_recv(&p, 100);
    cr_assert_gt(p.heartbeats, hb, "no heartbeat while idle");
    kill(pid, SIGTERM);
    cr_assert_eq(s_wait_exit(pid, &p), 0, "SIGTERM must exit 0");
    char path[512];
    snprintf(path, sizeof path, "%s/checkpoints", s_dir);
    cr_assert_eq(ckpt_latest(path), 7);

    /* Resume: the batcher replays steps 0..; the trainer skips 0..6 and trains 7..9. */
    peer_t q = {0};
    pid = s_start(1);
    for (int64_t step = 0; step < 10; step++) {
        s_wait_credit(&q);
        s_send_batch(&q, step, 0);
    }
    s_wait_credit(&q);
    s_send_end(&q);
    cr_assert_eq(s_wait_exit(pid, &q), 0);
    cr_assert_eq(ckpt_latest(path), 10);
    snprintf(path, sizeof path, "%s/metrics.jsonl", s_dir);
    size_t len;
    char err[256];
    char *t = util_read_file(path, &len, err, sizeof err);
    cr_assert_not_null(t);
    cr_assert(strstr(t, "{\"step\":10,"), "%s", t);
    cr_assert_null(strstr(t, "{\"step\":11,"), "%s", t);
    free(t);
}

Test(trainer_proc, bad_flags_exit_nonzero) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-trainer --bogus 2>/dev/null", OFA_BINARY_DIR);
    cr_assert_neq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-trainer --in %s 2>/dev/null", OFA_BINARY_DIR, s_ep);
    cr_assert_neq(system(cmd), 0, "missing --plan accepted");
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-trainer --in %s --plan /nonexistent.conf --run-dir %s 2>/dev/null",
             OFA_BINARY_DIR, s_ep, s_dir);
    cr_assert_neq(system(cmd), 0, "missing plan file accepted");
    snprintf(cmd, sizeof cmd, "%s/bin/ofa-trainer --help >/dev/null", OFA_BINARY_DIR);
    cr_assert_eq(system(cmd), 0);
}

/* A restarted batcher sends batches again: samples the trainer has taken already are
 * dropped and counted (a whole batch, or the rows of a batch re-formed differently),
 * the rest is trained; each credit names the batch's step (the ack contract); "rehello"
 * gets the hello again. */
Test(trainer_proc, drops_samples_taken_acks_steps_and_says_hello_again) {
    peer_t p = {0};
    pid_t pid = s_start(0);
    uint64_t mixed[4] = {10, 11, 20, 21};
    s_wait_credit(&p);
    s_send_batch(&p, 0, 0);                   /* ids 0..3: trained */
    s_wait_credit(&p);
    s_send_batch(&p, 1, 0);                   /* ids 10..13: trained */
    s_wait_credit(&p);
    s_send_batch(&p, 1, 0);                   /* the same batch again: 4 duplicates */
    s_wait_credit(&p);
    s_send_batch_ids(&p, 2, 0, mixed);        /* 10, 11 again: 2 rows trained */
    for (int i = 0; i < 50 && p.nacks < 4; i++)
        s_recv(&p, 100);
    cr_assert_eq(p.nacks, 4, "one credit per batch");
    int64_t want[4] = {0, 1, 1, 2};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(p.acks[i], want[i], "credit %d acks step %lld", i, (long long)p.acks[i]);
    proto_msg_t *rh = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(rh, "rehello");
    cr_assert_eq(proto_send(s_router, p.ident, p.identlen, &rh, 0), 0);
    for (int i = 0; i < 50 && p.hello < 2; i++)
        s_recv(&p, 100);
    cr_assert_eq(p.hello, 2, "rehello is answered with the hello");
    s_send_end(&p);
    cr_assert_eq(s_wait_exit(pid, &p), 0);
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/checkpoints", s_dir);
    cr_assert_eq(ckpt_latest(path), 3, "three optimizer steps: the duplicate batch is not trained");
    double delivered = -1, dups = -1;
    while (zmq_poll(&(zmq_pollitem_t){s_pull, 0, ZMQ_POLLIN, 0}, 1, 200) > 0) {
        proto_msg_t *m = proto_recv(s_pull, NULL, NULL, 0, err, sizeof err);
        if (m && proto_msg_kind(m) == PROTO_STATS) {
            delivered = proto_msg_get_float(m, "task.copy.delivered", delivered);
            dups = proto_msg_get_float(m, "task.copy.duplicates_dropped", dups);
        }
        proto_msg_destroy(&m);
    }
    cr_assert_eq(delivered, 10, "distinct samples delivered: %g", delivered);
    cr_assert_eq(dups, 6, "duplicates dropped: %g", dups);
}
