/* broker_rec.c: see broker_rec.h. */
#include "broker_rec.h"

#include <criterion/criterion.h>
#include <string.h>

typedef struct {
    char to[32];
    proto_msg_t *msg;
} s_sent_t;

/* Everything the broker sent, in order, not yet taken by a test. A whole run of
 * test_broker (thousands of samples, each sent to two tiers and the batcher) fits. */
static s_sent_t s_out[100000];
static int s_nout;

int brec_send(void *ctx, const void *ident, size_t identlen, proto_msg_t **msg_p) {
    (void)ctx;
    cr_assert_lt(s_nout, (int)(sizeof s_out / sizeof *s_out));
    cr_assert_lt(identlen, sizeof s_out[0].to);
    memcpy(s_out[s_nout].to, ident, identlen);
    s_out[s_nout].to[identlen] = 0;
    s_out[s_nout].msg = *msg_p;
    *msg_p = NULL;
    s_nout++;
    return 0;
}

proto_msg_t *brec_take(const char *to) {
    for (int i = 0; i < s_nout; i++)
        if (strcmp(s_out[i].to, to) == 0) {
            proto_msg_t *m = s_out[i].msg;
            memmove(&s_out[i], &s_out[i + 1], (size_t)(s_nout - i - 1) * sizeof *s_out);
            s_nout--;
            return m;
        }
    return NULL;
}

int brec_pending(const char *to) {
    int n = 0;
    for (int i = 0; i < s_nout; i++)
        n += strcmp(s_out[i].to, to) == 0;
    return n;
}

int brec_count(void) {
    return s_nout;
}

void brec_drop_all(void) {
    for (int i = 0; i < s_nout; i++)
        proto_msg_destroy(&s_out[i].msg);
    s_nout = 0;
}

void brec_on(broker_t *b, const char *from, proto_msg_t *m) {
    broker_on_message(b, from, strlen(from), m);
}

void brec_hello(broker_t *b, const char *id, const char *role, const char *tier, int credits,
                int acks) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "hello");
    proto_msg_set_str(m, "role", role);
    proto_msg_set_str(m, "id", id);
    proto_msg_set_str(m, "tier", tier ? tier : "");
    proto_msg_set_int(m, "credits", credits);
    if (acks)
        proto_msg_set_int(m, "acks", 1);
    brec_on(b, id, m);
}

void brec_heartbeat(broker_t *b, const char *id) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "heartbeat");
    brec_on(b, id, m);
}

void brec_credit(broker_t *b, const char *id, int n, int64_t want) {
    proto_msg_t *m = proto_msg_new(PROTO_CREDIT, NULL);
    proto_msg_set_int(m, "n", n);
    if (want >= 0)
        proto_msg_set_int(m, "want_seq", want);
    brec_on(b, id, m);
}

void brec_ack(broker_t *b, int64_t seq, int64_t batch) {
    proto_msg_t *m = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(m, "ack");
    proto_msg_set_int(m, "seq", seq);
    proto_msg_set_int(m, "batch", batch);
    brec_on(b, "bat", m);
}
