/* broker_rec.h: the wire of the broker's fake peers, for tests that drive the broker's
 * state machine (broker/broker.h) directly, without sockets (test_broker.c,
 * test_faults.c).
 *
 * brec_send is the send callback given to broker_new: it records every message the
 * broker sends, with its addressee, in order. A test takes them back by addressee
 * (brec_take) and speaks to the broker as a peer with brec_on:
 *
 *     broker_t *b = broker_new(&opts, brec_send, NULL, stats);
 *     brec_on(b, "src", hello);                  // takes hello
 *     proto_msg_t *m = brec_take("bat");         // the caller owns m (NULL: none)
 */
#ifndef OFA_TEST_BROKER_REC_H
#define OFA_TEST_BROKER_REC_H

#include "broker.h"
#include "proto.h"

#include <stddef.h>

/* broker_send_fn: records the message (taking it) for the peer named by ident. */
int brec_send(void *ctx, const void *ident, size_t identlen, proto_msg_t **msg_p);

/* The oldest message sent to `to` and not yet taken, or NULL. The caller owns it. */
proto_msg_t *brec_take(const char *to);

/* How many messages wait for `to`; how many wait in all. */
int brec_pending(const char *to);
int brec_count(void);

/* Destroys every message not yet taken. */
void brec_drop_all(void);

/* Hands the broker message m (taken) as if peer `from` had sent it. */
void brec_on(broker_t *b, const char *from, proto_msg_t *m);

/* The fake peers' messages, as the stages send them (all through brec_on):
 * CONTROL hello from `id` with its role, tier ("" when NULL), credits, and "acks" when
 * acks is set (an acknowledging batcher); CONTROL heartbeat; CREDIT n (with want_seq
 * when want >= 0); the batcher "bat"'s CONTROL ack {seq, batch}. */
void brec_hello(broker_t *b, const char *id, const char *role, const char *tier, int credits,
                int acks);
void brec_heartbeat(broker_t *b, const char *id);
void brec_credit(broker_t *b, const char *id, int n, int64_t want);
void brec_ack(broker_t *b, int64_t seq, int64_t batch);

#endif
