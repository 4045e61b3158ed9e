/* broker.c: see broker.h.
 *
 * Data structures, all bounded by max_inflight:
 *  - entries: the samples inside the tiers, by seq (open-addressing hash table). Each
 *    keeps the latest version of its message, so a dead worker's samples can be sent
 *    again, and the hop it waits for.
 *  - one FIFO of (seq, hop) per tier: samples waiting for a worker. A queue slot whose
 *    entry moved on (answered by a slow worker after a re-dispatch) is skipped.
 *  - peers by routing identity, each worker with the (seq, hop) pairs it holds.
 *  - the batcher's FIFO of finished samples, reject notices and the final eof. */
#include "broker.h"
#include "stage.h"
#include "util.h"

#include <string.h>

enum { ROLE_UNKNOWN = 0, ROLE_SOURCE, ROLE_WORKER, ROLE_BATCHER };
enum { MAX_TIERS = 16, MAX_ROUTE = 8 };

typedef struct {
    int64_t seq;
    int hop;
} s_ref_t;

typedef struct {
    int64_t seq;
    proto_msg_t *msg;            /* the latest version of the sample (owned) */
    int hop;                     /* index of the tier it is at */
    int route[MAX_ROUTE];        /* tier indices */
    int nroute;
    int inflight;                /* 1 while a worker holds it */
    int lost_holders;            /* workers that died or restarted while holding it */
    int used;                    /* hash slot in use */
} s_entry_t;

typedef struct {
    s_ref_t *v;
    int head, n, cap;
} s_fifo_t;

typedef struct {
    char name[32];
    s_fifo_t queue;
    int rr;                      /* round-robin start among the tier's workers */
} s_tier_t;

typedef struct {
    char ident[256];
    size_t identlen;
    int role;
    int tier;                    /* workers: tier index */
    char id[64];
    int credits, outstanding;
    int ghost;                   /* items a worker declared dead may still hold and answer:
                                    they take credit when it comes back */
    double last_seen;
    int alive;
    s_ref_t *held;               /* what the worker holds */
    int nheld, capheld;
} s_peer_t;

/* Finished samples waiting for the batcher, as a min-heap by seq: the batcher walks
 * seqs in order, so the lowest one is always the most useful to send. */
typedef struct {
    proto_msg_t **v;
    int64_t *seq;
    int n, cap;
} s_msgq_t;

struct broker {
    broker_opts_t opts;
    broker_send_fn send;
    void *send_ctx;
    stats_t *stats;
    FILE *rejects;

    s_entry_t *tab;              /* hash table of entries, capacity a power of two */
    int tabcap, nentries;

    s_tier_t tiers[MAX_TIERS];
    int ntiers;

    s_peer_t *peers;
    int npeers, cappeers;

    s_msgq_t toward_batcher;
    /* Sent to a batcher that acknowledges (its hello says "acks"), kept until its "ack"
     * says they are inside batches a consumer received: a restarted batcher gets them
     * again, so a SIGKILLed batcher loses nothing. A min-heap by seq, like the queue. */
    s_msgq_t unacked;
    int batcher_acks;            /* the current batcher acknowledges */
    int64_t acked_seq;           /* every seq below is safe at a consumer */
    int64_t acked_batch;         /* index of the first batch not yet confirmed */
    proto_msg_t *eof_copy;       /* the eof as forwarded, for a restarted batcher */
    int batcher_credits;
    int64_t batcher_want;        /* the seq the batcher's walk waits for (-1: none) */
    int source_requested;        /* samples asked of the source, not yet received */
    proto_msg_t *eof;            /* the source's eof, forwarded once all is resolved */
    int eof_forwarded;

    long redispatched, duplicates, garbage, batcher_resent;
    long arena_release_failed;
    long unacked_slots;          /* arena slots named by the messages in unacked */
};

/* ---------------------------------------------------------------- small containers */

static void s_fifo_push(s_fifo_t *q, s_ref_t r, int front) {
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 64;
        s_ref_t *v = util_malloc((size_t)cap * sizeof *v);
        for (int i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = cap;
    }
    if (front) {
        q->head = (q->head - 1 + q->cap) % q->cap;
        q->v[q->head] = r;
    } else {
        q->v[(q->head + q->n) % q->cap] = r;
    }
    q->n++;
}

static s_ref_t s_fifo_pop(s_fifo_t *q) {
    s_ref_t r = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return r;
}

static void s_msgq_swap(s_msgq_t *q, int i, int j) {
    proto_msg_t *m = q->v[i];
    q->v[i] = q->v[j];
    q->v[j] = m;
    int64_t t = q->seq[i];
    q->seq[i] = q->seq[j];
    q->seq[j] = t;
}

static void s_msgq_push(s_msgq_t *q, proto_msg_t *m) {
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 64;
        q->v = util_realloc(q->v, (size_t)q->cap * sizeof *q->v);
        q->seq = util_realloc(q->seq, (size_t)q->cap * sizeof *q->seq);
    }
    int i = q->n++;
    q->v[i] = m;
    q->seq[i] = proto_msg_get_int(m, "seq", 0);
    while (i > 0 && q->seq[(i - 1) / 2] > q->seq[i]) {
        s_msgq_swap(q, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static proto_msg_t *s_msgq_pop(s_msgq_t *q) {
    proto_msg_t *m = q->v[0];
    q->n--;
    if (q->n > 0) {
        q->v[0] = q->v[q->n];
        q->seq[0] = q->seq[q->n];
        for (int i = 0;;) {
            int l = 2 * i + 1, r = l + 1, min = i;
            if (l < q->n && q->seq[l] < q->seq[min])
                min = l;
            if (r < q->n && q->seq[r] < q->seq[min])
                min = r;
            if (min == i)
                break;
            s_msgq_swap(q, i, min);
            i = min;
        }
    }
    return m;
}

/* ---------------------------------------------------------------- entries */

static uint64_t s_hash(int64_t seq) {
    uint64_t z = (uint64_t)seq * 0x9e3779b97f4a7c15ULL;
    return z ^ (z >> 29);
}

static s_entry_t *s_lookup(broker_t *self, int64_t seq) {
    uint64_t mask = (uint64_t)self->tabcap - 1;
    for (uint64_t i = s_hash(seq) & mask;; i = (i + 1) & mask) {
        if (!self->tab[i].used)
            return NULL;
        if (self->tab[i].seq == seq)
            return &self->tab[i];
    }
}

static void s_grow(broker_t *self);

static s_entry_t *s_insert(broker_t *self, int64_t seq) {
    if ((self->nentries + 1) * 2 > self->tabcap)
        s_grow(self);
    uint64_t mask = (uint64_t)self->tabcap - 1;
    uint64_t i = s_hash(seq) & mask;
    while (self->tab[i].used)
        i = (i + 1) & mask;
    s_entry_t *e = &self->tab[i];
    memset(e, 0, sizeof *e);
    e->used = 1;
    e->seq = seq;
    self->nentries++;
    return e;
}

static void s_grow(broker_t *self) {
    s_entry_t *old = self->tab;
    int oldcap = self->tabcap;
    self->tabcap = oldcap ? oldcap * 2 : 1024;
    self->tab = util_calloc((size_t)self->tabcap, sizeof *self->tab);
    self->nentries = 0;
    for (int i = 0; i < oldcap; i++)
        if (old[i].used) {
            s_entry_t *e = s_insert(self, old[i].seq);
            *e = old[i];
        }
    free(old);
}

/* Remove an entry (backward-shift deletion keeps probe chains intact). */
static void s_erase(broker_t *self, s_entry_t *e) {
    proto_msg_destroy(&e->msg);
    uint64_t mask = (uint64_t)self->tabcap - 1;
    uint64_t i = (uint64_t)(e - self->tab);
    self->tab[i].used = 0;
    self->nentries--;
    for (uint64_t j = (i + 1) & mask; self->tab[j].used; j = (j + 1) & mask) {
        uint64_t home = s_hash(self->tab[j].seq) & mask;
        /* Move j back to the hole i when its home does not lie in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            self->tab[i] = self->tab[j];
            self->tab[j].used = 0;
            i = j;
        }
    }
}

/* ---------------------------------------------------------------- peers */

static s_peer_t *s_peer(broker_t *self, const void *ident, size_t identlen, int create) {
    for (int i = 0; i < self->npeers; i++)
        if (self->peers[i].identlen == identlen && memcmp(self->peers[i].ident, ident,
                                                          identlen) == 0)
            return &self->peers[i];
    if (!create)
        return NULL;
    if (self->npeers == self->cappeers) {
        self->cappeers = self->cappeers ? self->cappeers * 2 : 16;
        self->peers = util_realloc(self->peers, (size_t)self->cappeers * sizeof *self->peers);
    }
    s_peer_t *p = &self->peers[self->npeers++];
    memset(p, 0, sizeof *p);
    memcpy(p->ident, ident, identlen < sizeof p->ident ? identlen : sizeof p->ident);
    p->identlen = identlen;
    p->tier = -1;
    return p;
}

static int s_tier_index(broker_t *self, const char *name, int create) {
    for (int i = 0; i < self->ntiers; i++)
        if (strcmp(self->tiers[i].name, name) == 0)
            return i;
    if (!create || self->ntiers == MAX_TIERS)
        return -1;
    s_tier_t *t = &self->tiers[self->ntiers];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return self->ntiers++;
}

static void s_held_add(s_peer_t *p, s_ref_t r) {
    if (p->nheld == p->capheld) {
        p->capheld = p->capheld ? p->capheld * 2 : 16;
        p->held = util_realloc(p->held, (size_t)p->capheld * sizeof *p->held);
    }
    p->held[p->nheld++] = r;
}

/* Remove (seq, hop) from what p holds; 1 when it was there. */
static int s_held_remove(s_peer_t *p, int64_t seq, int hop) {
    for (int i = 0; i < p->nheld; i++)
        if (p->held[i].seq == seq && p->held[i].hop == hop) {
            p->held[i] = p->held[--p->nheld];
            return 1;
        }
    return 0;
}

/* The hop at which p holds seq, or -1 when it holds none. */
static int s_held_hop(const s_peer_t *p, int64_t seq) {
    for (int i = 0; i < p->nheld; i++)
        if (p->held[i].seq == seq)
            return p->held[i].hop;
    return -1;
}

/* ---------------------------------------------------------------- life cycle */

broker_t *broker_new(const broker_opts_t *opts, broker_send_fn send, void *send_ctx,
                     stats_t *stats) {
    broker_t *self = util_calloc(1, sizeof *self);
    self->opts = *opts;
    if (self->opts.max_inflight <= 0)
        self->opts.max_inflight = 256;
    if (self->opts.dead_ms <= 0)
        self->opts.dead_ms = 2000;
    self->send = send;
    self->send_ctx = send_ctx;
    self->stats = stats;
    self->batcher_want = -1;
    if (opts->rejects_path) {
        self->rejects = fopen(opts->rejects_path, "a");
        if (!self->rejects)
            fprintf(stderr, "broker: cannot open %s; rejects go to the log only\n",
                    opts->rejects_path);
    }
    s_grow(self);
    return self;
}

void broker_destroy(broker_t **self_p) {
    if (!self_p || !*self_p)
        return;
    broker_t *self = *self_p;
    for (int i = 0; i < self->tabcap; i++)
        if (self->tab[i].used)
            proto_msg_destroy(&self->tab[i].msg);
    free(self->tab);
    for (int i = 0; i < self->ntiers; i++)
        free(self->tiers[i].queue.v);
    for (int i = 0; i < self->npeers; i++)
        free(self->peers[i].held);
    free(self->peers);
    while (self->toward_batcher.n) {
        proto_msg_t *m = s_msgq_pop(&self->toward_batcher);
        proto_msg_destroy(&m);
    }
    free(self->toward_batcher.v);
    free(self->toward_batcher.seq);
    while (self->unacked.n) {
        proto_msg_t *m = s_msgq_pop(&self->unacked);
        proto_msg_destroy(&m);
    }
    free(self->unacked.v);
    free(self->unacked.seq);
    proto_msg_destroy(&self->eof);
    proto_msg_destroy(&self->eof_copy);
    if (self->rejects)
        fclose(self->rejects);
    free(self);
    *self_p = NULL;
}

long broker_redispatched(const broker_t *self) { return self->redispatched; }
long broker_duplicates(const broker_t *self) { return self->duplicates; }
long broker_in_system(const broker_t *self) {
    return self->nentries + self->toward_batcher.n;
}
long broker_unacked(const broker_t *self) { return self->unacked.n; }
long broker_batcher_resent(const broker_t *self) { return self->batcher_resent; }

static void s_count(broker_t *self, const char *task, const char *what) {
    if (self->stats) {
        stats_add(self->stats, what, 1);
        stats_task_add(self->stats, task, what, 1);
    }
}

/* ---------------------------------------------------------------- arena slots */

/* Large tensors may lie in shared-memory arena slots of the workers that made them
 * (common/shmarena.h); the messages the broker keeps and passes on carry only their
 * descriptors. The broker is the consumer that releases a slot: when the batcher
 * acknowledges the sample (its batch is confirmed, so no resend can need the slot
 * again), when the sample is rejected, when a newer version of the sample no longer
 * names it, and when an answer it drops as a duplicate names a slot nothing else does.
 * A slot never released would hold its arena's ring (reclaimed oldest first) and send
 * every later tensor of that worker as a frame: correct, but slow. */
static int s_queue_names_slot(const s_msgq_t *q, const shmarena_desc_t *d) {
    for (int i = 0; i < q->n; i++)
        if (proto_msg_names_slot(q->v[i], d))
            return 1;
    return 0;
}

/* Release slot d, which field i of m names (for the message when it cannot be). */
static void s_release_one(broker_t *self, const shmarena_desc_t *d, const proto_msg_t *m,
                          int i) {
    char why[256];
    if (shmarena_reader_release(proto_arena_reader(), d, why, sizeof why) != 0) {
        /* Stale: released already (a duplicate of a slot), or its arena is gone. */
        if (self->arena_release_failed++ < 10)
            fprintf(stderr, "broker: arena slot of seq %lld field %s not released: %s\n",
                    (long long)proto_msg_get_int(m, "seq", -1), proto_msg_field(m, i)->key,
                    why);
        if (self->stats)
            stats_add(self->stats, "arena_release_failed", 1);
        return;
    }
    if (self->stats)
        stats_add(self->stats, "arena_released", 1);
}

/* Release the slots m's fields lie in, except those `keep` names too and, with
 * `kept`, those of any message the broker still holds toward or at the batcher. */
static void s_release_slots(broker_t *self, const proto_msg_t *m, const proto_msg_t *keep,
                            int kept) {
    for (int i = 0; m && i < proto_msg_n_fields(m); i++) {
        shmarena_desc_t d;
        if (!proto_msg_field_arena_at(m, i, &d))
            continue;
        if ((keep && proto_msg_names_slot(keep, &d)) ||
            (kept && (s_queue_names_slot(&self->toward_batcher, &d) ||
                      s_queue_names_slot(&self->unacked, &d))))
            continue;
        s_release_one(self, &d, m, i);
    }
}

/* The slots that messages kept for the batcher name (a gauge: with arena_released, it
 * accounts for every slot the workers made, arena_slots in their stats). */
static void s_unacked_slots(broker_t *self, int delta) {
    self->unacked_slots += delta;
    if (self->stats && delta)
        stats_set(self->stats, "arena_unacked", (double)self->unacked_slots);
}

static int s_nslots(const proto_msg_t *m) {
    int n = 0;
    for (int i = 0; i < proto_msg_n_fields(m); i++)
        n += proto_msg_field_arena_at(m, i, NULL);
    return n;
}

/* A batcher that does not acknowledge never says when a slot is free: it is sent the
 * bytes (each field copied out of its slot), and the slots are released at once. */
static void s_unarena(broker_t *self, proto_msg_t *m) {
    for (int i = 0; i < proto_msg_n_fields(m); i++) {
        shmarena_desc_t d;
        if (proto_msg_field_arena_at(m, i, &d) && proto_msg_field_unarena_at(m, i) == 0)
            s_release_one(self, &d, m, i);
    }
}

/* ---------------------------------------------------------------- routing */

static void s_to_batcher(broker_t *self, proto_msg_t *m) {
    s_msgq_push(&self->toward_batcher, m);
}

/* Queue an entry for its current tier, or pass it to the batcher when done. */
static void s_advance(broker_t *self, s_entry_t *e) {
    if (e->hop >= e->nroute) {
        proto_msg_t *m = e->msg;
        e->msg = NULL;
        s_erase(self, e);
        s_to_batcher(self, m);
        return;
    }
    e->inflight = 0;
    s_fifo_push(&self->tiers[e->route[e->hop]].queue, (s_ref_t){e->seq, e->hop}, 0);
}

static void s_write_reject(broker_t *self, const proto_msg_t *r) {
    const char *reason = proto_msg_get_str(r, "reason");
    const char *stage = proto_msg_get_str(r, "stage");
    char esc_reason[2048], esc_task[256], esc_stage[128];
    util_json_escape(reason ? reason : "", esc_reason, sizeof esc_reason);
    util_json_escape(proto_msg_task(r), esc_task, sizeof esc_task);
    util_json_escape(stage ? stage : "", esc_stage, sizeof esc_stage);
    unsigned long long id = proto_msg_n_ids(r) ? (unsigned long long)proto_msg_ids(r)[0] : 0;
    const char *split = proto_msg_get_str(r, "split");
    char line[3000];
    snprintf(line, sizeof line,
             "{\"task\": \"%s\", \"id\": %llu, \"seq\": %lld, \"row\": %lld, \"split\": \"%s\", "
             "\"stage\": \"%s\", \"reason\": \"%s\"}\n",
             esc_task, id, (long long)proto_msg_get_int(r, "seq", -1),
             (long long)proto_msg_get_int(r, "row", -1), split ? split : "", esc_stage,
             esc_reason);
    if (self->rejects) {
        fputs(line, self->rejects);
        fflush(self->rejects);
    }
    fprintf(stderr, "broker: reject: %s", line);
}

/* A sample entering from the source. */
static void s_on_source_sample(broker_t *self, proto_msg_t *m) {
    int64_t seq = proto_msg_get_int(m, "seq", -1);
    if (seq < 0 || s_lookup(self, seq)) {
        fprintf(stderr, "broker: source sample without a fresh seq (%lld); dropped\n",
                (long long)seq);
        proto_msg_destroy(&m);
        self->garbage++;
        return;
    }
    s_entry_t *e = s_insert(self, seq);
    e->msg = m;
    const char *route = proto_msg_get_str(m, "@route");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", route ? route : "");
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && e->nroute < MAX_ROUTE;
         tok = strtok_r(NULL, ",", &save)) {
        int t = s_tier_index(self, tok, 1);
        if (t >= 0)
            e->route[e->nroute++] = t;
    }
    e->hop = (int)proto_msg_get_int(m, "@hop", 0);
    if (e->hop < 0)
        e->hop = 0;
    s_advance(self, e);
}

/* The answer of a worker: the processed sample or a reject. */
static void s_on_answer(broker_t *self, s_peer_t *p, proto_msg_t *m) {
    int64_t seq = proto_msg_get_int(m, "seq", -1);
    int is_reject = proto_msg_kind(m) == PROTO_REJECT;
    /* A processed sample carries @hop already advanced. A reject carries no hop: it is
     * the hop the worker holds the sample at; a worker declared dead holds nothing, and
     * its late reject counts only while the sample still waits at that worker's tier.
     * (Taking the entry's current hop instead let a stale reject from an earlier tier
     * reject a sample that had moved on, and left the rejecting worker's credit taken.) */
    int hop = is_reject ? -1 : (int)proto_msg_get_int(m, "@hop", 0) - 1;
    s_entry_t *e = s_lookup(self, seq);
    if (is_reject && p) {
        hop = s_held_hop(p, seq);
        if (hop < 0 && e && e->hop < e->nroute && p->tier == e->route[e->hop])
            hop = e->hop;
    }
    int held = p ? s_held_remove(p, seq, hop) : 0;
    if (held && p->outstanding > 0)
        p->outstanding--;
    else if (!held && p && p->ghost > 0)
        p->ghost--;   /* one of the items it held when declared dead */
    if (!e || hop != e->hop) {
        /* Answered already by another worker after a re-dispatch. */
        self->duplicates++;
        s_count(self, proto_msg_task(m), "duplicates_dropped");
        s_release_slots(self, m, e ? e->msg : NULL, 1);
        proto_msg_destroy(&m);
        return;
    }
    if (!held && p) {
        /* A worker that was declared dead answered after all: the answer is good; the
         * copy queued or held elsewhere becomes a duplicate. */
        fprintf(stderr, "broker: late answer for seq %lld from %s accepted\n",
                (long long)seq, p->id);
    }
    if (is_reject) {
        s_write_reject(self, m);
        s_count(self, proto_msg_task(m), "rejected");
        s_release_slots(self, e->msg, NULL, 0);
        proto_msg_destroy(&e->msg);
        e->msg = NULL;
        s_erase(self, e);
        s_to_batcher(self, m);
        return;
    }
    s_release_slots(self, e->msg, m, 0);
    proto_msg_destroy(&e->msg);
    e->msg = m;
    e->hop = hop + 1;
    s_advance(self, e);
}

void broker_on_garbage(broker_t *self, const void *ident, size_t identlen, const char *why) {
    s_peer_t *p = s_peer(self, ident, identlen, 0);
    fprintf(stderr, "broker: dropped a malformed message from %s: %s\n",
            p && p->id[0] ? p->id : "an unknown peer", why);
    self->garbage++;
    if (self->stats)
        stats_add(self->stats, "malformed", 1);
}

static void s_requeue_held(broker_t *self, s_peer_t *p);

/* A batcher said hello: the first one, or one restarted after a crash (same identity).
 * What the old one was sent and never acknowledged goes back into the queue toward the
 * batcher, the end of data too if it had been forwarded, and the new one is told where
 * the confirmed part ends ("start": the first seq and batch index it must produce), so
 * it cuts the same batches the old one would have (the first batcher gets start {0, 0}).
 * Credits die with the old process. */
static void s_on_batcher_hello(broker_t *self, s_peer_t *p, const proto_msg_t *hello) {
    int n = self->unacked.n;
    while (self->unacked.n) {
        proto_msg_t *m = s_msgq_pop(&self->unacked);
        s_unacked_slots(self, -s_nslots(m));
        s_count(self, proto_msg_task(m), "redispatched");
        s_to_batcher(self, m);
    }
    self->batcher_resent += n;
    if (self->stats && n)
        stats_add(self->stats, "batcher_resent", n);
    if (self->eof_forwarded && self->eof_copy) {
        proto_msg_destroy(&self->eof);
        self->eof = self->eof_copy;
        self->eof_copy = NULL;
        self->eof_forwarded = 0;
    }
    self->batcher_credits = 0;
    self->batcher_want = -1;
    self->batcher_acks = proto_msg_get_int(hello, "acks", 0) != 0;
    if (n || self->acked_seq > 0 || self->acked_batch > 0)
        fprintf(stderr, "broker: batcher %s (re)joined: it starts at seq %lld, batch %lld; "
                "%d sample(s) and notices it had not acknowledged are sent again\n", p->id,
                (long long)self->acked_seq, (long long)self->acked_batch, n);
    /* An acknowledging batcher takes nothing before its start: what the broker sent it
     * between its connection and this hello (on credit the old one left) is in the
     * unacknowledged set moved back above, and goes out again after the start. */
    if (self->batcher_acks) {
        proto_msg_t *st = proto_msg_new(PROTO_CONTROL, NULL);
        proto_msg_set_op(st, "start");
        proto_msg_set_int(st, "seq", self->acked_seq);
        proto_msg_set_int(st, "batch", self->acked_batch);
        self->send(self->send_ctx, p->ident, p->identlen, &st);
    }
}

/* The batcher's "ack" {seq, batch}: every seq below seq is inside a batch a consumer
 * confirmed (or was a reject notice the walk passed); batch is the index of the first
 * batch not yet confirmed. The kept copies below seq are freed. */
static void s_on_batcher_ack(broker_t *self, const proto_msg_t *m) {
    int64_t seq = proto_msg_get_int(m, "seq", -1), batch = proto_msg_get_int(m, "batch", -1);
    if (seq < self->acked_seq || batch < self->acked_batch)
        return;   /* stale or malformed: acknowledgements only move forward */
    self->acked_seq = seq;
    self->acked_batch = batch;
    while (self->unacked.n && self->unacked.seq[0] < seq) {
        proto_msg_t *d = s_msgq_pop(&self->unacked);
        s_unacked_slots(self, -s_nslots(d));
        s_release_slots(self, d, NULL, 0);
        proto_msg_destroy(&d);
    }
}

void broker_on_message(broker_t *self, const void *ident, size_t identlen, proto_msg_t *m) {
    s_peer_t *p = s_peer(self, ident, identlen, 1);
    p->last_seen = util_now();
    if (!p->alive && p->role == ROLE_WORKER) {
        fprintf(stderr, "broker: worker %s is back\n", p->id);
        p->alive = 1;
    }
    if (self->stats) {
        stats_add(self->stats, "items_in", 1);
        stats_add(self->stats, "bytes_in", (double)proto_msg_bytes(m));
    }
    switch (proto_msg_kind(m)) {
    case PROTO_CONTROL: {
        const char *op = proto_msg_op(m);
        if (strcmp(op, "hello") == 0) {
            const char *role = proto_msg_get_str(m, "role");
            const char *id = proto_msg_get_str(m, "id");
            const char *tier = proto_msg_get_str(m, "tier");
            snprintf(p->id, sizeof p->id, "%s", id ? id : "?");
            p->alive = 1;
            p->ghost = 0;   /* a (re)started process holds nothing */
            if (p->nheld > 0) {
                /* A restarted process reuses its identity: what the old one held is gone
                 * with it. */
                fprintf(stderr, "broker: %s said hello again (restarted); re-dispatching the "
                        "%d item(s) it held\n", p->id, p->nheld);
                s_requeue_held(self, p);
            }
            if (role && strcmp(role, "worker") == 0) {
                p->role = ROLE_WORKER;
                p->tier = s_tier_index(self, tier ? tier : "", 1);
                p->credits = (int)proto_msg_get_int(m, "credits", 1);
                if (p->credits < 1)
                    p->credits = 1;
            } else if (role && strcmp(role, "source") == 0) {
                p->role = ROLE_SOURCE;
            } else if (role && strcmp(role, "batcher") == 0) {
                p->role = ROLE_BATCHER;
                s_on_batcher_hello(self, p, m);
            } else {
                fprintf(stderr, "broker: hello with unknown role '%s' from %s\n",
                        role ? role : "", p->id);
            }
            fprintf(stderr, "broker: %s joined as %s%s%s\n", p->id, role ? role : "?",
                    p->role == ROLE_WORKER ? " of tier " : "",
                    p->role == ROLE_WORKER ? self->tiers[p->tier].name : "");
        } else if (strcmp(op, "ack") == 0 && p->role == ROLE_BATCHER) {
            s_on_batcher_ack(self, m);
        } else if (strcmp(op, "eof") == 0 && p->role == ROLE_SOURCE) {
            proto_msg_destroy(&self->eof);
            self->eof = m;
            return;
        }
        proto_msg_destroy(&m);
        return;
    }
    case PROTO_CREDIT:
        if (p->role == ROLE_BATCHER) {
            int64_t n = proto_msg_get_int(m, "n", 0);
            if (n > 0 && n <= 1000000)
                self->batcher_credits += (int)n;
            self->batcher_want = proto_msg_get_int(m, "want_seq", -1);
        }
        proto_msg_destroy(&m);
        return;
    case PROTO_SAMPLE:
        if (p->role == ROLE_SOURCE) {
            if (self->source_requested > 0)
                self->source_requested--;
            s_on_source_sample(self, m);
        } else if (p->role == ROLE_WORKER) {
            s_on_answer(self, p, m);
        } else {
            broker_on_garbage(self, ident, identlen, "a sample from a peer without a role");
            proto_msg_destroy(&m);
        }
        return;
    case PROTO_REJECT:
        if (p->role == ROLE_SOURCE) {
            /* A row the source could not read: it never entered the tiers. */
            if (self->source_requested > 0)
                self->source_requested--;
            s_write_reject(self, m);
            s_count(self, proto_msg_task(m), "rejected");
            s_to_batcher(self, m);
        } else if (p->role == ROLE_WORKER) {
            s_on_answer(self, p, m);
        } else {
            proto_msg_destroy(&m);
        }
        return;
    default:
        broker_on_garbage(self, ident, identlen, "unexpected message kind");
        proto_msg_destroy(&m);
        return;
    }
}

/* ---------------------------------------------------------------- periodic work */

static void s_declare_dead(broker_t *self, s_peer_t *p) {
    p->alive = 0;
    /* A silent worker may only be stalled: if it comes back without a new hello it still
     * holds these items and answers them late, so they keep taking its credit until
     * then (else it would get its whole credit again on top of them). */
    p->ghost += p->nheld;
    if (p->ghost > p->credits)
        p->ghost = p->credits;
    fprintf(stderr, "broker: worker %s silent for %d ms; re-dispatching the %d item(s) it "
            "held\n", p->id, self->opts.dead_ms, p->nheld);
    s_requeue_held(self, p);
}

/* Put everything p holds back at the front of its tier's queue. A sample that was held
 * by BROKER_POISON_HOLDERS workers that each died or restarted with it is taken to be
 * what kills them (a decoder crash on that input): it is rejected with the reason,
 * instead of going round the tier's workers until launch gives up on all of them. */
static void s_requeue_held(broker_t *self, s_peer_t *p) {
    /* Front of the queue, in the order they were held, so they go out first. */
    for (int i = p->nheld - 1; i >= 0; i--) {
        s_entry_t *e = s_lookup(self, p->held[i].seq);
        if (!e || e->hop != p->held[i].hop)
            continue;
        e->inflight = 0;
        const char *tier = self->tiers[e->route[e->hop]].name;
        unsigned long long id =
            proto_msg_n_ids(e->msg) ? (unsigned long long)proto_msg_ids(e->msg)[0] : 0;
        fprintf(stderr, "broker: %s held task %s id %llu (seq %lld, row %lld) when it went\n",
                p->id, proto_msg_task(e->msg), id, (long long)e->seq,
                (long long)proto_msg_get_int(e->msg, "row", -1));
        if (++e->lost_holders >= BROKER_POISON_HOLDERS) {
            char reason[256];
            snprintf(reason, sizeof reason,
                     "%d %s workers died or restarted while holding this sample (last: %s); "
                     "taken to be what crashes them", e->lost_holders, tier, p->id);
            proto_msg_t *r = stage_make_reject(e->msg, tier, reason);
            s_write_reject(self, r);
            s_count(self, proto_msg_task(r), "rejected");
            s_count(self, proto_msg_task(r), "poison");
            s_release_slots(self, e->msg, NULL, 0);
            proto_msg_destroy(&e->msg);
            e->msg = NULL;
            s_erase(self, e);
            s_to_batcher(self, r);
            continue;
        }
        s_fifo_push(&self->tiers[e->route[e->hop]].queue, p->held[i], 1);
        self->redispatched++;
        s_count(self, proto_msg_task(e->msg), "redispatched");
    }
    p->nheld = 0;
    p->outstanding = 0;
}

static s_peer_t *s_find_role(broker_t *self, int role) {
    for (int i = 0; i < self->npeers; i++)
        if (self->peers[i].role == role && self->peers[i].alive)
            return &self->peers[i];
    return NULL;
}

static void s_dispatch(broker_t *self) {
    /* Work to workers, round robin among those with credit left. */
    for (int t = 0; t < self->ntiers; t++) {
        s_fifo_t *q = &self->tiers[t].queue;
        while (q->n) {
            s_peer_t *w = NULL;
            /* One round-robin position per tier: a position shared by all tiers was
             * moved past every worker of this tier by the next tier's dispatch, so the
             * tier's first worker got nearly all the work while the others idled. */
            int *rr = &self->tiers[t].rr;
            for (int k = 0; k < self->npeers; k++) {
                s_peer_t *c = &self->peers[(*rr + k) % self->npeers];
                if (c->role == ROLE_WORKER && c->alive && c->tier == t &&
                    c->outstanding + c->ghost < c->credits) {
                    w = c;
                    *rr = (int)((c - self->peers) + 1) % self->npeers;
                    break;
                }
            }
            if (!w)
                break;
            s_ref_t r = s_fifo_pop(q);
            s_entry_t *e = s_lookup(self, r.seq);
            if (!e || e->hop != r.hop || e->inflight)
                continue;   /* answered meanwhile */
            proto_msg_t *copy = proto_msg_clone(e->msg);
            e->inflight = 1;
            w->outstanding++;
            s_held_add(w, r);
            if (self->stats) {
                stats_add(self->stats, "items_out", 1);
                stats_add(self->stats, "bytes_out", (double)proto_msg_bytes(copy));
            }
            self->send(self->send_ctx, w->ident, w->identlen, &copy);
        }
    }
    /* Finished samples to the batcher. */
    s_peer_t *b = s_find_role(self, ROLE_BATCHER);
    /* The seq the batcher waits for goes out even without credit: with its window full
     * of later samples, it could otherwise never arrive. */
    while (b && self->toward_batcher.n &&
           (self->batcher_credits > 0 || self->toward_batcher.seq[0] == self->batcher_want)) {
        proto_msg_t *m = s_msgq_pop(&self->toward_batcher);
        if (self->batcher_credits > 0)
            self->batcher_credits--;
        else
            self->batcher_want = -1;
        if (self->batcher_acks) {
            s_msgq_push(&self->unacked, proto_msg_clone(m));
            s_unacked_slots(self, s_nslots(m));
        } else
            s_unarena(self, m);
        self->send(self->send_ctx, b->ident, b->identlen, &m);
    }
    /* The end of data, once nothing before it is left. */
    if (b && self->eof && !self->eof_forwarded && self->nentries == 0 &&
        self->toward_batcher.n == 0) {
        proto_msg_t *m = self->eof;
        self->eof = NULL;
        self->eof_forwarded = 1;
        proto_msg_destroy(&self->eof_copy);
        if (self->batcher_acks)
            self->eof_copy = proto_msg_clone(m);
        self->send(self->send_ctx, b->ident, b->identlen, &m);
        fprintf(stderr, "broker: end of data passed to the batcher\n");
    }
    /* More rows from the source while the system has room. */
    s_peer_t *src = s_find_role(self, ROLE_SOURCE);
    if (src && !self->eof && !self->eof_forwarded) {
        long room = self->opts.max_inflight - broker_in_system(self) - self->source_requested;
        if (room >= 8 || (room > 0 && self->source_requested == 0)) {
            proto_msg_t *c = proto_msg_new(PROTO_CREDIT, NULL);
            proto_msg_set_int(c, "n", room);
            self->source_requested += (int)room;
            self->send(self->send_ctx, src->ident, src->identlen, &c);
        }
    }
}

void broker_tick(broker_t *self) {
    double now = util_now();
    for (int i = 0; i < self->npeers; i++) {
        s_peer_t *p = &self->peers[i];
        if (p->role == ROLE_WORKER && p->alive &&
            (now - p->last_seen) * 1000.0 > self->opts.dead_ms)
            s_declare_dead(self, p);
    }
    s_dispatch(self);
    if (self->stats) {
        long depth = 0;
        for (int t = 0; t < self->ntiers; t++)
            depth += self->tiers[t].queue.n;
        stats_set(self->stats, "queue_depth", (double)depth);
        stats_set(self->stats, "in_system", (double)broker_in_system(self));
        stats_set(self->stats, "in_tiers", (double)self->nentries);
        stats_set(self->stats, "toward_batcher", (double)self->toward_batcher.n);
        stats_set(self->stats, "batcher_credits", (double)self->batcher_credits);
        stats_set(self->stats, "unacked", (double)self->unacked.n);
    }
}
