/* broker.h: the hub between the tiers of a run.
 *
 * The broker hands samples to the workers of each tier by credit (a worker holds at
 * most as many samples as it granted), tracks which worker holds which sample, and
 * re-dispatches everything a dead or silent worker held. It pulls rows from the source
 * only while the number of samples inside the system is below a bound, so memory stays
 * bounded however slow the consumers are. Finished samples, reject notices and the end
 * of data go to the batcher, by the batcher's credit. The broker only dispatches:
 * ordering is the batcher's job (DESIGN.md, Determinism).
 *
 * Every sample is known by its "seq" (unique over the run) and the hop it is at; an
 * answer whose hop is not the one the broker waits for is a late duplicate (the sample
 * was re-dispatched and answered by someone else) and is dropped and counted.
 *
 * A batcher that says "acks" in its hello acknowledges with CONTROL "ack" {seq, batch}
 * once the batches holding everything below seq reached their consumers; until then the
 * broker keeps a copy of what it sent, and a restarted batcher (hello again under the same
 * identity) gets CONTROL "start" {seq, batch} and every unacknowledged message again.
 *
 * The state machine is independent of sockets: broker_on_message() takes one message
 * from a peer, and outgoing messages go through the send callback, so tests can drive
 * it directly. */
#ifndef OFA_BROKER_H
#define OFA_BROKER_H

#include "proto.h"
#include "stats.h"

#include <stddef.h>
#include <stdio.h>

/* A sample held by this many workers that each died or restarted while holding it is
 * rejected ("poison": the input that crashes its decoder) instead of re-dispatched. */
#define BROKER_POISON_HOLDERS 3

typedef struct broker broker_t;

typedef struct {
    int max_inflight;      /* samples inside the system at most (default 256) */
    int dead_ms;           /* a worker silent this long is dead (default 2000) */
    const char *rejects_path;   /* RUN/rejects.jsonl, or NULL */
} broker_opts_t;

/* send(ctx, ident, identlen, msg): deliver msg (ownership passes) to the peer. */
typedef int (*broker_send_fn)(void *ctx, const void *ident, size_t identlen,
                              proto_msg_t **msg_p);

/* Create; stats may be NULL. The caller owns the broker. */
broker_t *broker_new(const broker_opts_t *opts, broker_send_fn send, void *send_ctx,
                     stats_t *stats);
void broker_destroy(broker_t **self_p);

/* One message from the peer with this routing identity (ownership passes). */
void broker_on_message(broker_t *self, const void *ident, size_t identlen, proto_msg_t *msg);

/* Report a malformed message from a peer (logged, counted; the run goes on). */
void broker_on_garbage(broker_t *self, const void *ident, size_t identlen, const char *why);

/* Periodic work: declare silent workers dead and re-dispatch what they held, ask the
 * source for more, hand out work. Call at least every 100 ms. */
void broker_tick(broker_t *self);

/* Counters for tests. */
long broker_redispatched(const broker_t *self);
long broker_duplicates(const broker_t *self);
long broker_in_system(const broker_t *self);
/* Samples and notices sent to the batcher and not yet acknowledged (kept for a restart),
 * and how many were sent again to a restarted batcher. */
long broker_unacked(const broker_t *self);
long broker_batcher_resent(const broker_t *self);

#endif
