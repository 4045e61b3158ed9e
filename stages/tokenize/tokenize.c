/* tokenize.c: see tokenize.h.
 *
 * A sample is built in two passes. The first turns every item of every segment into a
 * "piece": a run of ids in one pool (prompt text, slot value, <s>/</s>, bins) or a count
 * of non-text positions, tagged with what the truncation rule and the loss mask need.
 * The second cuts (if the budget asks) and lays the pieces out into src/tgt. */
#include "tokenize.h"

#include "util.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

typedef enum { P_TOKENS = 0, P_POSITIONS } s_piece_kind_t;

typedef struct {
    s_piece_kind_t kind;
    mod_t mod;           /* modality id written into src_mod */
    size_t off;          /* into ctx->pool */
    int len;             /* tokens (or positions) */
    bool cuttable;       /* a text slot value */
    bool loss;           /* target: carries loss */
    float tgt_noise;     /* target: noise_ratio applied to tgt_in only */
} s_piece_t;

struct tok_ctx_t {
    const taskplan_t *tp;
    tok_bpe_t *bpe;
    tok_opts_t opts;
    int32_t *pool;     size_t pool_n, pool_cap;
    s_piece_t *pieces; int npieces, pieces_cap;
    int32_t *src_tok;  uint8_t *src_mod;  size_t src_cap;
    int32_t *tgt_in, *tgt_out;            size_t tgt_cap;
    char *ref;         size_t ref_n, ref_cap;
    char *text;        size_t text_cap;   /* normalised value scratch */
    uint8_t *mark;     size_t mark_cap;   /* masking scratch */
    /* The repeated target group of the sample being built: where each object's pieces
     * and its part of ref begin, so that objects can be dropped from the end. */
    int *grp_piece;    size_t *grp_ref;   int grp_n, grp_cap;
};

/* ---- small growable buffers ---- */

static void s_pool_reserve(tok_ctx_t *self, size_t extra) {
    if (self->pool_n + extra <= self->pool_cap)
        return;
    self->pool_cap = (self->pool_n + extra) * 2 + 256;
    self->pool = util_realloc(self->pool, self->pool_cap * sizeof(int32_t));
}

static s_piece_t *s_piece_add(tok_ctx_t *self, s_piece_kind_t kind, mod_t mod) {
    if (self->npieces == self->pieces_cap) {
        self->pieces_cap = self->pieces_cap ? self->pieces_cap * 2 : 32;
        self->pieces = util_realloc(self->pieces, (size_t)self->pieces_cap * sizeof(s_piece_t));
    }
    s_piece_t *p = &self->pieces[self->npieces++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->mod = mod;
    p->off = self->pool_n;
    return p;
}

static void s_special(tok_ctx_t *self, int32_t id, bool loss) {
    s_pool_reserve(self, 1);
    s_piece_t *p = s_piece_add(self, P_TOKENS, MOD_TEXT);
    self->pool[self->pool_n++] = id;
    p->len = 1;
    p->loss = loss;
}

/* BPE of " " + text appended to the pool as a new piece. */
/* Encodes in two calls (count, then ids) so that the pool grows exactly once and the
 * ids land directly in it, with no temporary buffer. */
static s_piece_t *s_encode_piece(tok_ctx_t *self, const char *text, size_t len, mod_t mod) {
    if (self->text_cap < len + 2) {
        self->text_cap = len * 2 + 64;
        self->text = util_realloc(self->text, self->text_cap);
    }
    /* The copy may alias self->text (a normalised value): memmove. */
    memmove(self->text + 1, text, len);
    self->text[0] = ' ';
    size_t need = tok_bpe_encode(self->bpe, self->text, len + 1, NULL, 0);
    s_pool_reserve(self, need);
    s_piece_t *p = s_piece_add(self, P_TOKENS, mod);
    tok_bpe_encode(self->bpe, self->text, len + 1, self->pool + self->pool_n, need);
    self->pool_n += need;
    p->len = (int)need;
    return p;
}

static void s_ref_add(tok_ctx_t *self, const char *s, size_t n) {
    if (self->ref_n + n + 2 > self->ref_cap) {
        self->ref_cap = (self->ref_n + n + 2) * 2;
        self->ref = util_realloc(self->ref, self->ref_cap);
    }
    if (self->ref_n)
        self->ref[self->ref_n++] = ' ';
    memcpy(self->ref + self->ref_n, s, n);
    self->ref_n += n;
    self->ref[self->ref_n] = 0;
}

/* ---- context ---- */

/* The shape a repeated target group must have to be filled from one cell of objects:
 * one BOX slot, at most one other text-like slot (the label), every slot reading the
 * same column, and nothing after the group on the target side (objects that do not fit
 * max_tgt_len are dropped from the end, which needs the group last). */
static int s_group_check(const taskplan_template_t *tm, char *err, size_t errlen) {
    for (int g = 0; g < tm->ntgt; g++) {
        const taskplan_seg_t *seg = &tm->tgt[g];
        if (!seg->repeated)
            continue;
        if (g != tm->ntgt - 1)
            return util_err(err, errlen, "repeated target group ( ... )*: it must end the "
                            "target (objects that do not fit are dropped from the end)");
        int nbox = 0, nlabel = 0;
        const char *col = NULL;
        for (int k = 0; k < seg->nitems; k++) {
            if (seg->items[k].kind != TP_ITEM_SLOT)
                continue;
            const taskplan_slot_t *sl = &tm->slots[seg->items[k].slot];
            if (sl->mod == MOD_BOX)
                nbox++;
            else
                nlabel++;
            if (col && sl->column && strcmp(col, sl->column) != 0)
                return util_err(err, errlen, "repeated target group ( ... )*: its slots read "
                                "columns %s and %s; an object's box and label come from one "
                                "cell", col, sl->column);
            col = sl->column;
        }
        if (nbox != 1 || nlabel > 1)
            return util_err(err, errlen, "repeated target group ( ... )*: has %d BOX and %d "
                            "other slots; an object is one [BOX] and at most one label slot",
                            nbox, nlabel);
    }
    return 0;
}

/* Everything that depends only on the plan is checked here, once, so that a task this
 * tier cannot serve is refused with one clear message instead of a reject per sample
 * whose reason would only hint at it. */
tok_ctx_t *tok_ctx_new(const taskplan_t *tp, tok_bpe_t *bpe, const tok_opts_t *opts,
                       char *err, size_t errlen) {
    OFA_ASSERT(tp && bpe);
    for (int t = 0; t < tp->ntmpls; t++) {
        const taskplan_template_t *tm = &tp->tmpls[t];
        int nsrc[MOD__COUNT] = {0};
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            if (!sl->target && !mod_is_textlike(sl->mod) && ++nsrc[sl->mod] > 1)
                return util_err(err, errlen, "more than one source %s slot: a sample "
                                "carries one %s tensor", mod_name(sl->mod),
                                sl->mod == MOD_IMAGE ? "image" : mod_name(sl->mod)), NULL;
            if (sl->target && !mod_is_textlike(sl->mod))
                return util_err(err, errlen, "target %s slot: only text-like targets "
                                "(TEXT, BOX, CATEGORY, STRUCT) can be tokenized",
                                mod_name(sl->mod)), NULL;
            if (sl->repeated && !sl->target)
                return util_err(err, errlen, "repeated source group ( ... )*: only a target "
                                "group can be built (from a cell of objects)"), NULL;
            if (sl->repeated && !sl->column)
                return util_err(err, errlen, "repeated target group ( ... )*: its slots name "
                                "no column; set the task's group_column to the column of "
                                "x0,y0,x1,y1,class_id,class_name objects joined by &&"), NULL;
            if (!sl->column)
                return util_err(err, errlen, "%s slot without a column name: nothing to "
                                "read it from", mod_name(sl->mod)), NULL;
        }
    }
    for (int t = 0; t < tp->ntmpls; t++)
        if (s_group_check(&tp->tmpls[t], err, errlen) != 0)
            return NULL;
    tok_ctx_t *self = util_calloc(1, sizeof *self);
    self->tp = tp;
    self->bpe = bpe;
    if (opts)
        self->opts = *opts;
    if (!self->opts.max_src_len)
        self->opts.max_src_len = tp->opts.max_src_len;
    if (!self->opts.max_tgt_len)
        self->opts.max_tgt_len = tp->opts.max_tgt_len;
    if (self->opts.max_src_len <= 0 || self->opts.max_tgt_len <= 1) {
        util_err(err, errlen, "max lengths must be positive (src %d, tgt %d)",
                 self->opts.max_src_len, self->opts.max_tgt_len);
        free(self);
        return NULL;
    }
    return self;
}

void tok_ctx_destroy(tok_ctx_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tok_ctx_t *self = *self_p;
    free(self->pool);
    free(self->pieces);
    free(self->src_tok);
    free(self->src_mod);
    free(self->tgt_in);
    free(self->tgt_out);
    free(self->ref);
    free(self->text);
    free(self->mark);
    free(self->grp_piece);
    free(self->grp_ref);
    free(self);
    *self_p = NULL;
}

/* ---- values ---- */

static const tok_value_t *s_value(const tok_sample_t *s, const char *column) {
    for (int i = 0; i < s->nvalues; i++)
        if (s->values[i].column && !strcmp(s->values[i].column, column))
            return &s->values[i];
    return NULL;
}

/* Trimmed, normalised copy of a text value in self->text; returns its length. */
/* Only ASCII is lower-cased and stripped: that is what OFA's uncased/no_punctuation do
 * to English captions and answers, and it leaves other scripts' bytes (and invalid
 * UTF-8) untouched rather than guessing at them. The value is trimmed because every
 * item already gets one leading space of its own. */
static size_t s_normalize(tok_ctx_t *self, const instr_slot_t *in, const char *s, size_t n) {
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (self->text_cap < n + 2) {
        self->text_cap = n * 2 + 64;
        self->text = util_realloc(self->text, self->text_cap);
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in->no_punctuation && c < 0x80 && ispunct(c))
            continue;
        self->text[o++] = (char)(in->uncased && c < 0x80 ? tolower(c) : c);
    }
    return o;
}

/* ---- masking and noise ---- */

/* Knuth's method: span lengths of BART's text infilling, Poisson with lambda 3. */
static int s_poisson3(util_rng_t *rng) {
    double l = exp(-3.0), p = 1.0;
    int k = 0;
    do {
        k++;
        p *= util_rng_uniform(rng);
    } while (p > l && k < 64);
    return k - 1;
}

/* Masks ~ratio of the piece's tokens in spans (each span -> one <mask>) and replaces
 * ~noise of the rest by random BPE tokens. The piece shrinks in place (its tokens are
 * the last ones in the pool). Returns the number of tokens affected. */
static int s_mask_piece(tok_ctx_t *self, s_piece_t *p, double ratio, double noise,
                        util_rng_t *rng) {
    int n = p->len, affected = 0;
    if (n <= 0)
        return 0;
    int32_t *t = self->pool + p->off;
    if (ratio > 0) {
        if (self->mark_cap < (size_t)n) {
            self->mark_cap = (size_t)n * 2;
            self->mark = util_realloc(self->mark, self->mark_cap);
        }
        memset(self->mark, 0, (size_t)n);
        int want = (int)lround(ratio * n), got = 0;
        for (int guard = 0; got < want && guard < 4 * n + 16; guard++) {
            int span = s_poisson3(rng);
            if (span < 1)
                span = 1;
            if (span > want - got)
                span = want - got;
            int start = (int)(util_rng_next(rng) % (uint64_t)n);
            for (int i = start; i < start + span && i < n; i++)
                if (!self->mark[i]) {
                    self->mark[i] = 1;
                    got++;
                }
        }
        int o = 0;
        for (int i = 0; i < n; i++) {
            if (!self->mark[i])
                t[o++] = t[i];
            else if (i == 0 || !self->mark[i - 1])
                t[o++] = TOK_MASK;
        }
        affected += got;
        n = o;
    }
    if (noise > 0) {
        uint64_t span = (uint64_t)(tok_bpe_bin0(self->bpe) - TOK_BYTE0);
        for (int i = 0; i < n; i++)
            if (t[i] != TOK_MASK && util_rng_uniform(rng) < noise) {
                t[i] = TOK_BYTE0 + (int32_t)(util_rng_next(rng) % span);
                affected++;
            }
    }
    p->len = n;
    self->pool_n = p->off + (size_t)n;
    return affected;
}

/* ---- boxes ---- */

/* nearbyint rounds half to even, like Python's round() in OFA's own preprocessing;
 * NaN falls to bin 0 through the !(b >= 0) test. */
int tok_coord_bin(double c, double size) { return tok_coord_bin_n(c, size, TOK_NBINS); }

int tok_coord_bin_n(double c, double size, int nbins) {
    if (nbins < 2 || nbins > TOK_NBINS)
        nbins = TOK_NBINS;
    double b = nearbyint(c / size * (nbins - 1));
    if (!(b >= 0))
        return 0;
    if (b > nbins - 1)
        b = nbins - 1;
    if (nbins == TOK_NBINS)
        return (int)b;
    /* Level b of nbins, as the location token nearest to it: the levels spread evenly
     * over 0..999, so every decoder of bins (evaluation, ofa-infer) reads them as is. */
    return (int)nearbyint(b * (TOK_NBINS - 1) / (nbins - 1));
}

static int s_box_piece(tok_ctx_t *self, const char *column, const char *s, size_t n,
                       double w, double h, int nbins, char *err, size_t errlen) {
    s_piece_t *p = s_piece_add(self, P_TOKENS, MOD_BOX);
    int bin0 = tok_bpe_bin0(self->bpe);
    char buf[64];
    size_t i = 0;
    int nbox = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != ';')
            j++;
        size_t l = j - i;
        /* skip empty entries ("a;b;") */
        size_t k = 0;
        while (k < l && isspace((unsigned char)s[i + k]))
            k++;
        if (k < l) {
            if (l >= sizeof buf)
                return util_err(err, errlen, "column %s: box %d is too long (%zu bytes)",
                                column, nbox + 1, l);
            memcpy(buf, s + i, l);
            buf[l] = 0;
            double c[4];
            char *q = buf, *e;
            int got = 0;
            while (got < 4) {
                while (*q == ',' || isspace((unsigned char)*q))
                    q++;
                c[got] = strtod(q, &e);
                if (e == q || !isfinite(c[got]))
                    break;
                got++;
                q = e;
            }
            while (*q == ',' || isspace((unsigned char)*q))
                q++;
            if (got != 4 || *q)
                return util_err(err, errlen, "column %s: box '%s' is not x0,y0,x1,y1", column,
                                buf);
            double size[4] = {w, h, w, h};
            s_pool_reserve(self, 4);
            for (int d = 0; d < 4; d++) {
                if (size[d] <= 0) {
                    if (c[d] < 0 || c[d] > 1)
                        return util_err(err, errlen, "column %s: box '%s': coordinate %g is "
                                        "not in [0,1] and the image size is unknown", column,
                                        buf, c[d]);
                    size[d] = 1;
                }
                self->pool[self->pool_n++] = bin0 + tok_coord_bin_n(c[d], size[d], nbins);
            }
            nbox++;
        }
        i = j + 1;
    }
    if (!nbox)
        return util_err(err, errlen, "column %s: no box in '%.*s'", column, (int)(n < 40 ? n : 40),
                        s);
    p->len = 4 * nbox;
    return 0;
}

/* ---- repeated target group (object detection) ---- */

/* One number field of an object: the whole field, surrounding blanks aside. */
static int s_group_num(const char *f, size_t n, double *v) {
    char buf[64];
    while (n && isspace((unsigned char)*f))
        f++, n--;
    while (n && isspace((unsigned char)f[n - 1]))
        n--;
    if (!n || n >= sizeof buf)
        return -1;
    memcpy(buf, f, n);
    buf[n] = 0;
    char *e;
    *v = strtod(buf, &e);
    return *e || !isfinite(*v) ? -1 : 0;
}

static void s_ref_bins(tok_ctx_t *self, const int32_t *ids, int n, int bin0) {
    char b[24];
    for (int i = 0; i < n; i++) {
        int l = snprintf(b, sizeof b, "<bin_%d>", ids[i] - bin0);
        s_ref_add(self, b, (size_t)l);
    }
}

/* The group `( [BOX] [TEXT])*` from one cell, as OFA lays out detection targets:
 * objects "x0,y0,x1,y1,class_id,class_name" joined by "&&" (the name may hold commas: the
 * fields are split at the first five). Each object becomes the group's items in order:
 * the BOX slot its 4 location tokens, the label slot the BPE of its class name, plain
 * text inside the group its text (all carrying loss: the model must write them to lay
 * out the next object). Objects keep the cell's order, as OFA and OFASys do (they
 * neither sort nor shuffle them). The class id is checked but not written: OFA's target
 * is the name. ref gets "<bin_a> <bin_b> <bin_c> <bin_d> name" per object, the form the
 * "map" metric reads back from generated text. */
static int s_group(tok_ctx_t *self, const taskplan_template_t *tm, const taskplan_seg_t *seg,
                   const tok_sample_t *sample, double w, double h, bool *any_loss, char *err,
                   size_t errlen) {
    const taskplan_slot_t *box = NULL;
    for (int k = 0; k < seg->nitems; k++)
        if (seg->items[k].kind == TP_ITEM_SLOT && tm->slots[seg->items[k].slot].mod == MOD_BOX)
            box = &tm->slots[seg->items[k].slot];
    OFA_ASSERT(box);   /* s_group_check */
    const char *col = box->column;
    const tok_value_t *v = s_value(sample, col);
    if (!v)
        return util_err(err, errlen, "column %s: missing from the sample", col);
    if (!v->text)
        return util_err(err, errlen, "column %s: expected text (objects) for a repeated "
                        "group", col);
    const char *s = v->text;
    size_t n = v->len;
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (!n)
        return util_err(err, errlen, "column %s: no object (empty cell); expected "
                        "x0,y0,x1,y1,class_id,class_name joined by &&", col);
    int bin0 = tok_bpe_bin0(self->bpe);
    int nbins = box->num_bins ? box->num_bins : TOK_NBINS;
    self->grp_n = 0;
    for (size_t i = 0, obj = 1; i <= n; obj++) {
        /* [i, j) is the object, up to the next "&&" or the end */
        size_t j = i;
        while (j < n && !(s[j] == '&' && j + 1 < n && s[j + 1] == '&'))
            j++;
        const char *o = s + i;
        size_t on = j - i;
        while (on && isspace((unsigned char)*o))
            o++, on--;
        while (on && isspace((unsigned char)o[on - 1]))
            on--;
        if (!on)
            return util_err(err, errlen, "column %s: object %zu is empty (an '&&' with "
                            "nothing on one side)", col, obj);
        int show = on < 60 ? (int)on : 60;
        /* the first five commas split the fields; the name keeps any others */
        const char *f[6];
        size_t fl[6];
        int nf = 0;
        size_t a = 0;
        for (size_t b = 0; b <= on && nf < 6; b++)
            if (b == on || (o[b] == ',' && nf < 5)) {
                f[nf] = o + a;
                fl[nf++] = b - a;
                a = b + 1;
            }
        if (nf != 6)
            return util_err(err, errlen, "column %s: object %zu '%.*s' has %d fields, expected "
                            "x0,y0,x1,y1,class_id,class_name", col, obj, show, o, nf);
        double c[5];
        static const char *names[5] = {"x0", "y0", "x1", "y1", "class_id"};
        for (int d = 0; d < 5; d++)
            if (s_group_num(f[d], fl[d], &c[d]) != 0)
                return util_err(err, errlen, "column %s: object %zu '%.*s': %s '%.*s' is not "
                                "a number", col, obj, show, o, names[d],
                                (int)(fl[d] < 20 ? fl[d] : 20), f[d]);
        if (c[4] < 0 || c[4] != floor(c[4]))
            return util_err(err, errlen, "column %s: object %zu '%.*s': class_id %g is not a "
                            "non-negative integer", col, obj, show, o, c[4]);
        if (!(c[0] < c[2]) || !(c[1] < c[3]))
            return util_err(err, errlen, "column %s: object %zu '%.*s': the box is empty or "
                            "inverted (x0 < x1 and y0 < y1 needed)", col, obj, show, o);
        double bw = w > 0 ? w : 1, bh = h > 0 ? h : 1;
        if (c[0] < 0 || c[1] < 0 || c[2] > bw || c[3] > bh)
            return util_err(err, errlen, "column %s: object %zu '%.*s': the box lies outside "
                            "the %s %gx%g", col, obj, show, o,
                            w > 0 && h > 0 ? "image" : "unit square (image size unknown)", bw,
                            bh);
        const char *name = f[5];
        size_t nl = fl[5];
        while (nl && isspace((unsigned char)*name))
            name++, nl--;
        while (nl && isspace((unsigned char)name[nl - 1]))
            nl--;
        if (!nl)
            return util_err(err, errlen, "column %s: object %zu '%.*s': empty class_name", col,
                            obj, show, o);
        if (self->grp_n == self->grp_cap) {
            self->grp_cap = self->grp_cap ? 2 * self->grp_cap : 16;
            self->grp_piece = util_realloc(self->grp_piece, (size_t)self->grp_cap * sizeof(int));
            self->grp_ref = util_realloc(self->grp_ref, (size_t)self->grp_cap * sizeof(size_t));
        }
        self->grp_piece[self->grp_n] = self->npieces;
        self->grp_ref[self->grp_n++] = self->ref_n;
        for (int k = 0; k < seg->nitems; k++) {
            const taskplan_item_t *it = &seg->items[k];
            if (it->kind == TP_ITEM_TEXT) {
                size_t tl = strlen(it->text);
                s_encode_piece(self, it->text, tl, MOD_TEXT)->loss = true;
                s_ref_add(self, it->text, tl);
                *any_loss = true;
                continue;
            }
            const taskplan_slot_t *sl = &tm->slots[it->slot];
            if (sl == box) {
                s_pool_reserve(self, 4);
                s_piece_t *p = s_piece_add(self, P_TOKENS, MOD_BOX);
                double size[4] = {bw, bh, bw, bh};
                for (int d = 0; d < 4; d++)
                    self->pool[self->pool_n++] = bin0 + tok_coord_bin_n(c[d], size[d], nbins);
                p->len = 4;
                p->loss = sl->loss;
                if (sl->loss)
                    s_ref_bins(self, self->pool + p->off, 4, bin0);
            } else {
                size_t tn = s_normalize(self, sl->in, name, nl);
                if (sl->loss)
                    s_ref_add(self, self->text, tn);
                s_piece_t *p = s_encode_piece(self, self->text, tn, sl->mod);
                p->loss = sl->loss;
                if (sl->in->max_length > 0 && p->len > sl->in->max_length) {
                    self->pool_n -= (size_t)(p->len - sl->in->max_length);
                    p->len = sl->in->max_length;
                }
            }
            *any_loss |= sl->loss;
        }
        i = j + 2;
    }
    return 0;
}

/* ---- build ---- */

/* Turns one side's segments into pieces. Returns 0 or -1 with err. */
/* The target side is always one sequence <s> ... </s> whatever the segments' wrapping:
 * the decoder needs a start token to be fed and an end token to learn to stop, and the
 * plans' runnable targets are one text-like group anyway. */
static int s_side(tok_ctx_t *self, const taskplan_template_t *tm, const taskplan_seg_t *segs,
                  int nsegs, bool target, const tok_sample_t *sample, util_rng_t *rng,
                  tok_result_t *out, char *err, size_t errlen) {
    /* Source-image size for boxes: the IMAGE source slot's value. */
    double img_w = 0, img_h = 0;
    for (int i = 0; i < tm->nslots; i++)
        if (!tm->slots[i].target && tm->slots[i].mod == MOD_IMAGE) {
            const tok_value_t *v = s_value(sample, tm->slots[i].column);
            if (v)
                img_w = v->width, img_h = v->height;
        }
    if (target)
        s_special(self, TOK_BOS, false);
    bool any_loss = false;
    for (int g = 0; g < nsegs; g++) {
        const taskplan_seg_t *seg = &segs[g];
        bool textlike = mod_is_textlike(seg->mod);
        if (target && seg->repeated) {
            if (s_group(self, tm, seg, sample, img_w, img_h, &any_loss, err, errlen) != 0)
                return -1;
            continue;
        }
        if (textlike && seg->wrapped && !target)
            s_special(self, TOK_BOS, false);
        for (int k = 0; k < seg->nitems; k++) {
            const taskplan_item_t *it = &seg->items[k];
            if (it->kind == TP_ITEM_TEXT) {
                s_piece_t *p = s_encode_piece(self, it->text, strlen(it->text), MOD_TEXT);
                p->loss = false;   /* prompt text never carries loss */
                continue;
            }
            const taskplan_slot_t *sl = &tm->slots[it->slot];
            const tok_value_t *v = s_value(sample, sl->column);
            if (!v)
                return util_err(err, errlen, "column %s: missing from the sample", sl->column);
            if (!mod_is_textlike(sl->mod)) {
                if (v->npos <= 0)
                    return util_err(err, errlen, "column %s: a %s slot needs a tensor from "
                                    "its tier (has the sample been through it?)", sl->column,
                                    mod_name(sl->mod));
                s_piece_t *p = s_piece_add(self, P_POSITIONS, sl->mod);
                p->len = v->npos;
                if (sl->mod == MOD_IMAGE) {
                    out->image_column = sl->column;
                    out->image_positions = v->npos;
                } else if (sl->mod == MOD_AUDIO) {
                    out->audio_column = sl->column;
                    out->audio_positions = v->npos;
                } else if (sl->mod == MOD_VIDEO) {
                    out->video_column = sl->column;
                    out->video_positions = v->npos;
                } else if (sl->mod == MOD_MOTION) {
                    out->motion_column = sl->column;
                    out->motion_positions = v->npos;
                }
                continue;
            }
            if (!v->text)
                return util_err(err, errlen, "column %s: expected text for a %s slot",
                                sl->column, mod_name(sl->mod));
            if (sl->mod == MOD_BOX) {
                if (s_box_piece(self, sl->column, v->text, v->len, img_w, img_h,
                                sl->num_bins ? sl->num_bins : TOK_NBINS, err,
                                errlen) != 0)
                    return -1;
                self->pieces[self->npieces - 1].loss = sl->loss;
                if (target && sl->loss) {
                    size_t n = v->len;
                    const char *s = v->text;
                    while (n && isspace((unsigned char)*s))
                        s++, n--;
                    while (n && isspace((unsigned char)s[n - 1]))
                        n--;
                    s_ref_add(self, s, n);
                }
            } else {
                /* TEXT, STRUCT and PHONE. A PHONE value is a pronunciation written as
                 * phoneme symbols separated by spaces (IPA from espeak-ng, as
                 * data/phone_words has it): it goes through the shared BPE like text.
                 * launch trains the BPE on PHONE columns too, so the frequent symbols
                 * become tokens of their own, and the reference keeps one word per
                 * phoneme, so WER on it is the phone error rate. */
                size_t n = s_normalize(self, sl->in, v->text, v->len);
                if (target && sl->loss)
                    s_ref_add(self, self->text, n);
                s_piece_t *p = s_encode_piece(self, self->text, n, sl->mod);
                p->cuttable = true;
                p->loss = sl->loss;
                if (sl->in->max_length > 0 && p->len > sl->in->max_length) {
                    self->pool_n -= (size_t)(p->len - sl->in->max_length);
                    p->len = sl->in->max_length;
                }
                if (!target && !self->opts.no_masking &&
                    (sl->in->mask_ratio > 0 || sl->in->noise_ratio > 0))
                    out->masked += s_mask_piece(self, p, sl->in->mask_ratio,
                                                sl->in->noise_ratio, rng);
                if (target && !self->opts.no_masking)
                    p->tgt_noise = sl->in->noise_ratio;
            }
            any_loss |= target && sl->loss;
        }
        if (textlike && seg->wrapped && !target)
            s_special(self, TOK_EOS, false);
    }
    if (target)
        s_special(self, TOK_EOS, any_loss);
    return 0;
}

/* Applies the truncation rule to pieces [first, npieces): total must become <= budget. */
/* Cutting the longest value first keeps short fields (a question, a label) whole while
 * a long context gives way; cutting it down to the second longest at a time makes the
 * loop run once per distinct length, not once per token. */
static int s_truncate(tok_ctx_t *self, int first, int budget, int *cut) {
    int total = 0;
    for (int i = first; i < self->npieces; i++)
        total += self->pieces[i].len;
    while (total > budget) {
        s_piece_t *a = NULL, *b = NULL;  /* longest and second longest cuttable */
        for (int i = first; i < self->npieces; i++) {
            s_piece_t *p = &self->pieces[i];
            if (!p->cuttable || p->len == 0)
                continue;
            if (!a || p->len > a->len)
                b = a, a = p;
            else if (!b || p->len > b->len)
                b = p;
        }
        if (!a)
            return -1;
        int c = total - budget, room = a->len - (b ? b->len : 0);
        if (room < 1)
            room = 1;
        if (c > room)
            c = room;
        a->len -= c;
        total -= c;
        *cut += c;
    }
    return 0;
}

/* Drops a repeated group's last objects while the target's uncuttable tokens exceed the
 * budget (at least one object stays): a detection target with more objects than the
 * decoder holds keeps its first ones whole rather than losing a label's tokens. The
 * group ends the target (s_group_check): its objects are followed by </s> alone. */
static void s_group_fit(tok_ctx_t *self, int first, int budget, tok_result_t *out) {
    while (self->grp_n > 1) {
        int fixed = 0;
        for (int i = first; i < self->npieces; i++)
            if (!self->pieces[i].cuttable)
                fixed += self->pieces[i].len;
        if (fixed <= budget)
            return;
        s_piece_t eos = self->pieces[self->npieces - 1];
        int from = self->grp_piece[--self->grp_n];
        for (int i = from; i < self->npieces - 1; i++)
            out->tgt_cut += self->pieces[i].len;
        self->npieces = from;
        self->pieces[self->npieces++] = eos;
        self->ref_n = self->grp_ref[self->grp_n];
        if (self->ref)
            self->ref[self->ref_n] = 0;
    }
}

static void s_grow32(int32_t **p, size_t *cap, size_t need, int32_t **p2, uint8_t **p3) {
    if (*cap >= need)
        return;
    size_t c = need * 2;
    *p = util_realloc(*p, c * sizeof(int32_t));
    if (p2)
        *p2 = util_realloc(*p2, c * sizeof(int32_t));
    if (p3)
        *p3 = util_realloc(*p3, c);
    *cap = c;
}

int tok_build(tok_ctx_t *self, const tok_sample_t *sample, tok_result_t *out, char *err,
              size_t errlen) {
    const taskplan_t *tp = self->tp;
    memset(out, 0, sizeof *out);
    int t = taskplan_pick_template(tp, self->opts.seed, sample->id);
    OFA_ASSERT(t >= 0 && t < tp->ntmpls);
    const taskplan_template_t *tm = &tp->tmpls[t];
    out->tmpl = t;
    self->pool_n = 0;
    self->npieces = 0;
    self->ref_n = 0;
    if (self->ref_cap)
        self->ref[0] = 0;
    util_rng_t rng = {.s = self->opts.seed * 0x9e3779b97f4a7c15ULL ^ sample->id};
    rng.s ^= util_rng_next(&rng) * (uint64_t)(sample->epoch + 1);
    util_rng_next(&rng);

    if (s_side(self, tm, tm->src, tm->nsrc, false, sample, &rng, out, err, errlen) != 0)
        return -1;
    int nsrc_pieces = self->npieces;
    if (s_truncate(self, 0, self->opts.max_src_len, &out->src_cut) != 0) {
        /* Name what fills the source: the non-text slots by column and count. */
        char what[256] = "";
        size_t wn = 0;
        const char *cols[4] = {out->image_column, out->audio_column, out->video_column,
                               out->motion_column};
        const int npos[4] = {out->image_positions, out->audio_positions,
                             out->video_positions, out->motion_positions};
        static const char *kind[4] = {"image", "audio", "video", "motion"};
        int other = 0;
        for (int i = 0; i < nsrc_pieces; i++)
            other += self->pieces[i].len;
        for (int i = 0; i < 4; i++)
            if (cols[i] && wn < sizeof what) {
                wn += (size_t)snprintf(what + wn, sizeof what - wn, "column %s: %d %s "
                                       "positions, ", cols[i], npos[i], kind[i]);
                other -= npos[i];
            }
        return util_err(err, errlen, "source needs more than max_src_len=%d positions even "
                        "with every text slot cut (%s%d other positions)",
                        self->opts.max_src_len, what, other);
    }
    self->grp_n = 0;
    if (s_side(self, tm, tm->tgt, tm->ntgt, true, sample, &rng, out, err, errlen) != 0)
        return -1;
    s_group_fit(self, nsrc_pieces, self->opts.max_tgt_len + 1, out);
    /* Target tokens Y = <s> ... </s>; tgt_in = Y[:-1], tgt_out = Y[1:]: the budget is
     * len(Y) - 1 positions. */
    if (s_truncate(self, nsrc_pieces, self->opts.max_tgt_len + 1, &out->tgt_cut) != 0)
        return util_err(err, errlen, "target needs more than max_tgt_len=%d positions even "
                        "with every text slot cut", self->opts.max_tgt_len);

    int S = 0, ny = 0;
    for (int i = 0; i < nsrc_pieces; i++)
        S += self->pieces[i].len;
    for (int i = nsrc_pieces; i < self->npieces; i++)
        ny += self->pieces[i].len;
    s_grow32(&self->src_tok, &self->src_cap, (size_t)S + 1, NULL, &self->src_mod);
    s_grow32(&self->tgt_in, &self->tgt_cap, (size_t)ny + 1, &self->tgt_out, NULL);
    int o = 0;
    for (int i = 0; i < nsrc_pieces; i++) {
        const s_piece_t *p = &self->pieces[i];
        for (int k = 0; k < p->len; k++, o++) {
            self->src_tok[o] = p->kind == P_POSITIONS ? TOK_PAD : self->pool[p->off + k];
            self->src_mod[o] = (uint8_t)(p->kind == P_POSITIONS ? p->mod : MOD_TEXT);
        }
    }
    /* Target: walk Y, writing tgt_in[j] = Y[j] and tgt_out[j-1] = Y[j] (or 1 when the
     * piece Y[j] comes from carries no loss). */
    int j = 0;
    uint64_t nbpe = (uint64_t)(tok_bpe_bin0(self->bpe) - TOK_BYTE0);
    for (int i = nsrc_pieces; i < self->npieces; i++) {
        const s_piece_t *p = &self->pieces[i];
        for (int k = 0; k < p->len; k++, j++) {
            int32_t id = self->pool[p->off + k];
            /* noise_ratio on a target slot (gigaword's preset) perturbs what the decoder
             * reads, never the labels. */
            if (j < ny - 1) {
                self->tgt_in[j] = id;
                if (p->tgt_noise > 0 && util_rng_uniform(&rng) < p->tgt_noise) {
                    self->tgt_in[j] = TOK_BYTE0 + (int32_t)(util_rng_next(&rng) % nbpe);
                    out->masked++;
                }
            }
            if (j > 0)
                self->tgt_out[j - 1] = p->loss ? id : TOK_PAD;
        }
    }
    out->src_tok = self->src_tok;
    out->src_mod = self->src_mod;
    out->src_len = S;
    out->tgt_in = self->tgt_in;
    out->tgt_out = self->tgt_out;
    out->tgt_len = ny - 1;
    if (!self->ref_cap) {
        self->ref_cap = 16;
        self->ref = util_malloc(self->ref_cap);
        self->ref[0] = 0;
    }
    out->ref = self->ref;
    return 0;
}

/* ---- inverse ---- */

size_t tok_decode_text(const tok_bpe_t *bpe, const int32_t *ids, size_t n, char *out,
                       size_t cap) {
    size_t total = 0;
    bool started = false;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == TOK_EOS)
            break;
        if (ids[i] == TOK_BOS || ids[i] == TOK_PAD)
            continue;
        size_t l;
        const char *b = tok_bpe_token_bytes(bpe, ids[i], &l);
        /* Items are encoded with one leading space each; the first one is not text. */
        if (!started && l && b[0] == ' ')
            b++, l--;
        if (l)
            started = true;
        if (total < cap)
            memcpy(out + total, b, l <= cap - total ? l : cap - total);
        total += l;
    }
    if (out && total < cap)
        out[total] = 0;
    return total;
}

/* Non-bin ids between bins are skipped rather than fatal: a model early in training
 * emits stray tokens, and the evaluation should still score the boxes it did emit. */
int tok_decode_boxes(const tok_bpe_t *bpe, const int32_t *ids, size_t n, double width,
                     double height, double *boxes, int max_boxes) {
    int bin0 = tok_bpe_bin0(bpe), have = 0, nb = 0;
    double c[4];
    for (size_t i = 0; i < n && nb < max_boxes; i++) {
        if (ids[i] == TOK_EOS)
            break;
        if (ids[i] < bin0 || ids[i] >= bin0 + TOK_NBINS)
            continue;
        double size = (have % 2 == 0) ? width : height;
        c[have++] = (double)(ids[i] - bin0) / (TOK_NBINS - 1) * size;
        if (have == 4) {
            memcpy(boxes + 4 * nb++, c, sizeof c);
            have = 0;
        }
    }
    return nb;
}
