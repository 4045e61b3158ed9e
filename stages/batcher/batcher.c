/* batcher.c: see batcher.h. The reorder buffer is a ring indexed by seq modulo its
 * capacity, grown when a seq arrives too far ahead of the walk.
 *
 * Why a ring and not a sorted list or heap: seqs are dense (every seq from 0 to the
 * eof count arrives exactly once, as a sample or a reject), so slot seq % cap is free
 * for it whenever the buffer spans fewer than cap seqs; insertion and the walk's next
 * lookup are O(1), and a duplicate is found by looking at one slot.
 *
 * Why batches follow the source's "slot" field rather than counting batch_size here:
 * the source already decided which rows form a batch (and ends a slot early at an
 * epoch's end); a reject leaves its slot one sample short instead of pulling the next
 * slot's first sample forward, so one bad row never shifts every later batch. */
#include "batcher.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* The walk takes seqs in order; samples of the slot being walked gather in cur until
 * the first seq of another slot (or the end of data) closes it into a batch. */
struct batcher {
    shmarena_t *arena;         /* where batches' pixels are built (not owned), or NULL */
    proto_msg_t **ring;        /* ring[seq % cap] holds the message of seq, or NULL */
    int64_t cap;
    int64_t next_seq;          /* the walk: next seq to take */
    int64_t max_seq;           /* highest seq buffered */
    int64_t nbuffered;
    int64_t eof;               /* total count, or -1 while unknown */
    proto_msg_t **cur;         /* samples of the slot being collected */
    int ncur, capcur;
    int64_t cur_slot;
    int64_t cur_first;         /* the first seq of the slot being collected */
    proto_msg_t **ready;       /* finished batches, FIFO */
    int nready, capready;
    long duplicates, malformed, samples_out, batches_out;
};

batcher_t *batcher_new(void) {
    batcher_t *self = util_calloc(1, sizeof *self);
    self->cap = 1024;
    self->ring = util_calloc((size_t)self->cap, sizeof *self->ring);
    self->eof = -1;
    self->cur_slot = -1;
    self->max_seq = -1;
    return self;
}

void batcher_destroy(batcher_t **self_p) {
    if (!self_p || !*self_p)
        return;
    batcher_t *self = *self_p;
    for (int64_t i = 0; i < self->cap; i++)
        proto_msg_destroy(&self->ring[i]);
    free(self->ring);
    for (int i = 0; i < self->ncur; i++)
        proto_msg_destroy(&self->cur[i]);
    free(self->cur);
    for (int i = 0; i < self->nready; i++)
        proto_msg_destroy(&self->ready[i]);
    free(self->ready);
    free(self);
    *self_p = NULL;
}

/* Grow the ring to more than need seqs past the walk, re-placing every held message at
 * its seq modulo the new capacity (the old positions mean nothing under a new modulus). */
static void s_grow(batcher_t *self, int64_t need) {
    int64_t cap = self->cap;
    while (cap <= need)
        cap *= 2;
    proto_msg_t **ring = util_calloc((size_t)cap, sizeof *ring);
    for (int64_t i = 0; i < self->cap; i++)
        if (self->ring[i]) {
            int64_t seq = proto_msg_get_int(self->ring[i], "seq", 0);
            ring[seq % cap] = self->ring[i];
        }
    free(self->ring);
    self->ring = ring;
    self->cap = cap;
}

static void s_push_ready(batcher_t *self, proto_msg_t *b) {
    if (self->nready == self->capready) {
        self->capready = self->capready ? self->capready * 2 : 16;
        self->ready = util_realloc(self->ready, (size_t)self->capready * sizeof *self->ready);
    }
    self->ready[self->nready++] = b;
}

/* Close the slot being collected: its samples become one batch. A slot whose rows were
 * all rejected makes no batch; "step" is the slot number, so the steps of the run may
 * then skip a number, which the consumers accept (they count their own updates). */
static void s_close_slot(batcher_t *self) {
    if (self->ncur > 0) {
        int n = self->ncur;
        self->ncur = 0;
        proto_msg_t *b = batcher_make_batch_in(self->cur, n, self->cur_slot, self->arena);
        if (b) {
            proto_msg_set_int(b, "seq0", self->cur_first);
            self->samples_out += proto_msg_n_ids(b);
            self->batches_out++;
            s_push_ready(self, b);
        }
    }
    self->cur_slot = -1;
}

/* Walk the buffer in seq order as far as it goes: until a seq is missing (a sample
 * still in a worker), or the end of data, which also closes the last slot. */
static void s_walk(batcher_t *self) {
    for (;;) {
        if (self->eof >= 0 && self->next_seq >= self->eof) {
            s_close_slot(self);
            return;
        }
        proto_msg_t *m = self->ring[self->next_seq % self->cap];
        if (!m)
            return;
        self->ring[self->next_seq % self->cap] = NULL;
        self->nbuffered--;
        self->next_seq++;
        int64_t slot = proto_msg_get_int(m, "slot", -1);
        if (slot != self->cur_slot) {
            s_close_slot(self);
            self->cur_first = self->next_seq - 1;
        }
        self->cur_slot = slot;
        if (proto_msg_kind(m) != PROTO_SAMPLE) {
            proto_msg_destroy(&m);
            continue;
        }
        if (self->ncur == self->capcur) {
            self->capcur = self->capcur ? self->capcur * 2 : 32;
            self->cur = util_realloc(self->cur, (size_t)self->capcur * sizeof *self->cur);
        }
        self->cur[self->ncur++] = m;
    }
}

void batcher_add(batcher_t *self, proto_msg_t *m) {
    int64_t seq = proto_msg_get_int(m, "seq", -1);
    /* A message without a seq, or one so far ahead that the ring would have to grow past
     * any window the batcher asks for, cannot come from the source: it is dropped, so a
     * bad message never makes the buffer allocate without bound. */
    if (seq < 0 || seq - self->next_seq >= BATCHER_MAX_AHEAD ||
        (proto_msg_kind(m) != PROTO_SAMPLE && proto_msg_kind(m) != PROTO_REJECT)) {
        fprintf(stderr, "ofa-batcher: dropped a %s message of task %s with seq %lld "
                "(the walk is at %lld)\n", proto_kind_name(proto_msg_kind(m)),
                proto_msg_task(m), (long long)seq, (long long)self->next_seq);
        self->malformed++;
        proto_msg_destroy(&m);
        return;
    }
    if (seq < self->next_seq || (self->eof >= 0 && seq >= self->eof)) {
        self->duplicates++;
        proto_msg_destroy(&m);
        return;
    }
    if (seq - self->next_seq >= self->cap)
        s_grow(self, seq - self->next_seq + 1);
    if (self->ring[seq % self->cap]) {
        self->duplicates++;
        proto_msg_destroy(&m);
        return;
    }
    self->ring[seq % self->cap] = m;
    self->nbuffered++;
    if (seq > self->max_seq)
        self->max_seq = seq;
    s_walk(self);
}

int batcher_start(batcher_t *self, int64_t seq) {
    if (seq < 0 || self->next_seq != 0 || self->nbuffered || self->ncur || self->nready ||
        self->batches_out)
        return -1;
    self->next_seq = seq;
    return 0;
}

int64_t batcher_open_seq(const batcher_t *self) {
    if (self->nready)
        return proto_msg_get_int(self->ready[0], "seq0", self->next_seq);
    return self->cur_slot != -1 ? self->cur_first : self->next_seq;
}

void batcher_set_eof(batcher_t *self, int64_t count) {
    self->eof = count;
    s_walk(self);
}

proto_msg_t *batcher_next(batcher_t *self) {
    if (!self->nready)
        return NULL;
    proto_msg_t *b = self->ready[0];
    memmove(self->ready, self->ready + 1, (size_t)(self->nready - 1) * sizeof *self->ready);
    self->nready--;
    return b;
}

int batcher_done(const batcher_t *self) {
    return self->eof >= 0 && self->next_seq >= self->eof && self->nready == 0 &&
           self->ncur == 0;
}

int64_t batcher_buffered(const batcher_t *self) { return self->nbuffered; }
int batcher_waiting_for_gap(const batcher_t *self) {
    return self->nbuffered > 0 && !self->ring[self->next_seq % self->cap];
}
int64_t batcher_next_seq(const batcher_t *self) { return self->next_seq; }
long batcher_duplicates(const batcher_t *self) { return self->duplicates; }
long batcher_malformed(const batcher_t *self) { return self->malformed; }
long batcher_samples_out(const batcher_t *self) { return self->samples_out; }
long batcher_batches_out(const batcher_t *self) { return self->batches_out; }

/* ---------------------------------------------------------------- padding
 *
 * Padding values: src_tok and tgt_in/tgt_out take 1 (<pad>; in tgt_out it also means
 * "no loss"), src_mod takes 255, a value no modality uses, so that a consumer can tell
 * padding from any real position even without src_len. Every batch is padded to its
 * own longest source and target, not to the model's maximum: the widths vary from
 * batch to batch, and short tasks pay for short sequences only. */

static int64_t s_len1(const proto_msg_t *m, const char *key, proto_dtype_t dt) {
    const proto_field_t *f = proto_msg_get_tensor(m, key, dt);
    return f && f->ndim == 1 ? f->shape[0] : -1;
}

/* Copy a 1-D tensor into row b of a (B, L) buffer padded with pad. */
static void s_row_i32(int32_t *dst, int64_t L, const proto_field_t *f, int32_t pad) {
    int64_t n = f ? f->shape[0] : 0;
    if (n > L)
        n = L;
    if (n)
        memcpy(dst, f->data, (size_t)n * sizeof(int32_t));
    for (int64_t i = n; i < L; i++)
        dst[i] = pad;
}

/* Why a sample's frame sequence `key` (f32 (F, C): "aud", "mot") cannot join a batch
 * whose first sample has first (NULL: the first has none), or NULL when it fits. Rows
 * may differ in F (they are padded), never in C. */
static const char *s_seq_misfit(const proto_msg_t *m, const char *key,
                                const proto_field_t *first, int B) {
    const proto_field_t *f = proto_msg_get(m, key);
    int aud = key[0] == 'a';
    if (f && (f->type != PV_TENSOR || f->dtype != PROTO_F32 || f->ndim != 2 || f->shape[0] < 1))
        return aud ? "aud is not an f32 (frames, features) tensor"
                   : "mot is not an f32 (frames, channels) tensor";
    if (B > 0 && !f != !first)
        return aud ? "some samples of the batch have audio and some not"
                   : "some samples of the batch have motion and some not";
    if (f && first && f->shape[1] != first->shape[1])
        return aud ? "aud features per frame differ from the batch's"
                   : "mot channels differ from the batch's";
    return NULL;
}

/* Pack the f32 (F_b, C) sequences `key` of the B samples into (B, F, C) padded with
 * zeros to the longest, plus "<key>_len" i32 (B) = F_b. */
static void s_pack_seq(proto_msg_t *out, proto_msg_t **ok, int B, const char *key) {
    int64_t F = 0, C = proto_msg_get(ok[0], key)->shape[1];
    for (int b = 0; b < B; b++) {
        int64_t f = proto_msg_get(ok[b], key)->shape[0];
        F = f > F ? f : F;
    }
    float *x = util_calloc((size_t)(B * F * C + 1), sizeof(float));
    int32_t *len = util_malloc((size_t)B * sizeof(int32_t));
    for (int b = 0; b < B; b++) {
        const proto_field_t *f = proto_msg_get(ok[b], key);
        memcpy(x + (size_t)b * F * C, f->data, (size_t)(f->shape[0] * C) * sizeof(float));
        len[b] = (int32_t)f->shape[0];
    }
    int64_t shape[3] = {B, F, C}, b1[1] = {B};
    char lk[PROTO_MAX_KEY];
    snprintf(lk, sizeof lk, "%s_len", key);
    proto_msg_take_tensor(out, key, PROTO_F32, 3, shape, x);
    proto_msg_take_tensor(out, lk, PROTO_I32, 1, b1, len);
}

/* Room for a batch's pixels: a slot of the arena when there is one with room (the batch
 * is built in shared memory and only its descriptor is sent), else the heap. */
static void *s_room(shmarena_t *arena, size_t n, shmarena_desc_t *d) {
    void *p = arena && n >= BATCHER_ARENA_MIN ? shmarena_reserve(arena, n, d) : NULL;
    if (p)
        return p;
    d->gen = 0;
    return util_malloc(n + 1);
}

static void s_take(proto_msg_t *out, const char *key, int ndim, const int64_t *shape, void *p,
                   const shmarena_desc_t *d) {
    if (d->gen)
        proto_msg_arena_tensor(out, key, PROTO_U8, ndim, shape, p, d);
    else
        proto_msg_take_tensor(out, key, PROTO_U8, ndim, shape, p);
}

proto_msg_t *batcher_make_batch(proto_msg_t **samples, int n, int64_t step) {
    return batcher_make_batch_in(samples, n, step, NULL);
}

proto_msg_t *batcher_make_batch_in(proto_msg_t **samples, int n, int64_t step,
                                   shmarena_t *arena) {
    /* Keep only well-formed samples: 1-D src/tgt tensors of equal source/target lengths
     * pairwise, and images of the first sample's shape. A misfit is dropped with its
     * reason on stderr (the batcher's log) rather than failing the batch: the others
     * are good, and a tier that produced it is the bug to look for. Whether a sample
     * fits depends only on itself and the first good one, so the outcome is still a
     * pure function of the slot's contents. */
    proto_msg_t **ok = util_malloc((size_t)(n ? n : 1) * sizeof *ok);
    int B = 0;
    const proto_field_t *img0 = NULL, *aud0 = NULL, *vid0 = NULL, *mot0 = NULL;
    int64_t vid_frames0 = 0;
    for (int i = 0; i < n; i++) {
        proto_msg_t *m = samples[i];
        int64_t s = s_len1(m, "src_tok", PROTO_I32), sm = s_len1(m, "src_mod", PROTO_U8);
        int64_t ti = s_len1(m, "tgt_in", PROTO_I32), to = s_len1(m, "tgt_out", PROTO_I32);
        const proto_field_t *img = proto_msg_get_tensor(m, "img", PROTO_U8);
        const proto_field_t *vid = proto_msg_get(m, "vid");
        int64_t vf = proto_msg_get_int(m, "vid.frames", 0);
        const char *why = NULL;
        if (proto_msg_n_ids(m) != 1)
            why = "a sample carries exactly one id";
        else if (B > 0 && strcmp(proto_msg_task(m), proto_msg_task(ok[0])) != 0)
            why = "task differs from the batch's (a batch never mixes tasks)";
        else if (s < 0 || sm != s || ti < 0 || to != ti)
            why = "src_tok/src_mod/tgt_in/tgt_out missing or of mismatched lengths";
        else if (img && img->ndim != 2)
            why = "img is not (Np, P*P*3)";
        else if (img && img0 && (img->shape[0] != img0->shape[0] ||
                                 img->shape[1] != img0->shape[1]))
            why = "img shape differs from the batch's";
        else if (!img != !img0 && B > 0)
            why = "some samples of the batch have an image and some not";
        else if ((why = s_seq_misfit(m, "aud", aud0, B)) || (why = s_seq_misfit(m, "mot", mot0, B)))
            ;
        else if (vid && (vid->type != PV_TENSOR || vid->dtype != PROTO_U8 || vid->ndim != 2 ||
                         vf < 1 || vid->shape[0] % vf))
            why = "vid is not a u8 (frames*Np, P*P*3) tensor with vid.frames dividing its rows";
        else if (!vid != !vid0 && B > 0)
            why = "some samples of the batch have a video and some not";
        else if (vid && vid0 && (vid->shape[0] != vid0->shape[0] ||
                                 vid->shape[1] != vid0->shape[1] || vf != vid_frames0))
            why = "vid shape differs from the batch's";
        if (why) {
            fprintf(stderr, "ofa-batcher: dropped sample seq %lld of task %s: %s\n",
                    (long long)proto_msg_get_int(m, "seq", -1), proto_msg_task(m), why);
            proto_msg_destroy(&samples[i]);
            continue;
        }
        if (B == 0) {
            img0 = img, vid0 = vid, vid_frames0 = vf;
            aud0 = proto_msg_get(m, "aud"), mot0 = proto_msg_get(m, "mot");
        }
        ok[B++] = m;
    }
    if (B == 0) {
        free(ok);
        return NULL;
    }
    int64_t S = 0, T = 0;
    uint8_t *vids = NULL;
    size_t vid_row = 0;
    shmarena_desc_t vid_slot = {.gen = 0}, img_slot = {.gen = 0};
    if (vid0) {
        vid_row = (size_t)vid0->shape[0] * (size_t)vid0->shape[1];
        vids = s_room(arena, (size_t)B * vid_row, &vid_slot);
        for (int b = 0; b < B; b++)
            memcpy(vids + (size_t)b * vid_row, proto_msg_get(ok[b], "vid")->data, vid_row);
    }
    for (int b = 0; b < B; b++) {
        int64_t s = s_len1(ok[b], "src_tok", PROTO_I32), t = s_len1(ok[b], "tgt_in", PROTO_I32);
        if (s > S) S = s;
        if (t > T) T = t;
    }
    proto_msg_t *out = proto_msg_new(PROTO_BATCH, proto_msg_task(ok[0]));
    int32_t *src_tok = util_malloc((size_t)(B * S + 1) * sizeof(int32_t));
    uint8_t *src_mod = util_malloc((size_t)(B * S + 1));
    int32_t *src_len = util_malloc((size_t)B * sizeof(int32_t));
    int32_t *tgt_in = util_malloc((size_t)(B * T + 1) * sizeof(int32_t));
    int32_t *tgt_out = util_malloc((size_t)(B * T + 1) * sizeof(int32_t));
    int32_t *tgt_len = util_malloc((size_t)B * sizeof(int32_t));
    uint8_t *img = NULL;
    size_t img_row = 0;
    if (img0) {
        img_row = (size_t)img0->shape[0] * (size_t)img0->shape[1];
        img = s_room(arena, (size_t)B * img_row, &img_slot);
    }
    size_t refs_len = 1;
    for (int b = 0; b < B; b++) {
        const char *r = proto_msg_get_str(ok[b], "ref");
        refs_len += (r ? strlen(r) : 0) + 1;
    }
    char *refs = util_malloc(refs_len);
    size_t ro = 0;
    for (int b = 0; b < B; b++) {
        proto_msg_t *m = ok[b];
        const proto_field_t *st = proto_msg_get(m, "src_tok"), *sm = proto_msg_get(m, "src_mod");
        int64_t s = st->shape[0];
        s_row_i32(src_tok + b * S, S, st, 1);
        memcpy(src_mod + b * S, sm->data, (size_t)s);
        memset(src_mod + b * S + s, 255, (size_t)(S - s));
        src_len[b] = (int32_t)s;
        const proto_field_t *ti = proto_msg_get(m, "tgt_in"), *to = proto_msg_get(m, "tgt_out");
        s_row_i32(tgt_in + b * T, T, ti, 1);
        s_row_i32(tgt_out + b * T, T, to, 1);
        tgt_len[b] = (int32_t)ti->shape[0];
        if (img) {
            const proto_field_t *f = proto_msg_get(m, "img");
            memcpy(img + (size_t)b * img_row, f->data, img_row);
        }
        const char *r = proto_msg_get_str(m, "ref");
        /* A reference never holds '\n' (it joins them); such text becomes a space. */
        for (const char *c = r ? r : ""; *c; c++)
            refs[ro++] = *c == '\n' ? ' ' : *c;
        refs[ro++] = b + 1 < B ? '\n' : 0;
        proto_msg_add_id(out, proto_msg_ids(m)[0]);
    }
    refs[ro] = 0;
    int64_t bs[2] = {B, S}, bt[2] = {B, T}, b1[1] = {B};
    proto_msg_take_tensor(out, "src_tok", PROTO_I32, 2, bs, src_tok);
    proto_msg_take_tensor(out, "src_mod", PROTO_U8, 2, bs, src_mod);
    proto_msg_take_tensor(out, "src_len", PROTO_I32, 1, b1, src_len);
    proto_msg_take_tensor(out, "tgt_in", PROTO_I32, 2, bt, tgt_in);
    proto_msg_take_tensor(out, "tgt_out", PROTO_I32, 2, bt, tgt_out);
    proto_msg_take_tensor(out, "tgt_len", PROTO_I32, 1, b1, tgt_len);
    if (img) {
        int64_t bi[3] = {B, img0->shape[0], img0->shape[1]};
        proto_msg_set_int(out, "img.grid", proto_msg_get_int(ok[0], "img.grid", 0));
        s_take(out, "img", 3, bi, img, &img_slot);
    }
    if (aud0)
        s_pack_seq(out, ok, B, "aud");
    if (mot0)
        s_pack_seq(out, ok, B, "mot");
    if (vids) {
        int64_t bv[4] = {B, vid_frames0, vid0->shape[0] / vid_frames0, vid0->shape[1]};
        proto_msg_set_int(out, "vid.grid", proto_msg_get_int(ok[0], "vid.grid", 0));
        s_take(out, "vid", 4, bv, vids, &vid_slot);
    }
    proto_msg_set_int(out, "step", step);
    proto_msg_set_int(out, "epoch", proto_msg_get_int(ok[0], "epoch", 0));
    const char *split = proto_msg_get_str(ok[0], "split");
    proto_msg_set_str(out, "split", split ? split : "train");
    proto_msg_set_str(out, "refs", refs);
    free(refs);
    for (int b = 0; b < B; b++)
        proto_msg_destroy(&ok[b]);
    free(ok);
    return out;
}

void batcher_set_arena(batcher_t *self, shmarena_t *arena) {
    self->arena = arena;
}
