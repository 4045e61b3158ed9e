/* model.c: the encoder-decoder of model.h on top of the backend table.
 *
 * Memory plan. Weights, gradients and the two AdamW moments are four flat buffers with
 * one offset per named tensor. The order of the tensors inside them is chosen so that
 * related weights are adjacent: q.w, k.w, v.w of a self-attention follow each other and
 * so form one (3D, D) matrix (one fused QKV product instead of three), and likewise their
 * biases and the k/v of a cross-attention. The names stay those of the golden file.
 *
 * Activations live in one arena sized for the largest (B, S, T) seen so far; a
 * smaller batch reuses it with its own strides, so steady-state training allocates
 * nothing. Each modality adapter (image, audio, video, motion) keeps its own buffers,
 * grown the same way, because its row count (patches, frames) is independent of S. Backward adds into gradients (backend.h's convention) after zeroing the G
 * buffer once.
 *
 * Everything here is written against real_t, so the gradient-check test can build this
 * file in double precision (real.h). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "util.h"

/* The modality groups of the encoder's expert FFNs (model.h): group g >= 1 is the
 * modality of adapter g - 1, and the text group takes every token modality (TEXT, BOX,
 * PHONE, STRUCT, CATEGORY). */
enum { EX_TEXT = 0, EX_IMG, EX_AUD, EX_VID, EX_MOT, S_NEX };
static const char *s_ex_name[S_NEX] = {"text", "image", "audio", "video", "motion"};

/* Parameter indices of one FFN: fc1.w (F, D), fc1.b (F), fc2.w (D, F), fc2.b (D). */
typedef struct {
    int fc1_w, fc1_b, fc2_w, fc2_b;
} s_ffn_t;

/* Parameter indices of one layer. q/k/v weights are adjacent (see above), so qkv_w
 * points at a (3D, D) matrix and qkv_b at (3D); for cross-attention kv_w at (2D, D). */
typedef struct {
    int ln1_w, ln1_b, ln2_w, ln2_b, ln3_w, ln3_b;
    int qkv_w, qkv_b, o_w, o_b;          /* self-attention */
    int cq_w, cq_b, ckv_w, ckv_b, co_w, co_b;   /* cross-attention (decoder) */
    int fc1_w, fc1_b, fc2_w, fc2_b;      /* the FFN (with experts: the text expert's) */
    s_ffn_t ex[S_NEX];                   /* encoder experts; fc1_w -1 when absent */
} s_layer_t;

/* Activations of one layer (pointers into the arena). Shapes for the encoder use N =
 * B*S rows, the decoder N = B*T; Tk = S for cross-attention. */
typedef struct {
    real_t *x;                  /* (N, D) residual input of the layer */
    real_t *ln1, *ln1_m, *ln1_r;   /* (N, D), (N), (N) */
    real_t *qkv;                /* (N, 3D) */
    real_t *p;                  /* (B, H, T, T) self-attention probabilities */
    real_t *att;                /* (N, D) heads concatenated, before o */
    real_t *x1;                 /* (N, D) after the self-attention residual */
    real_t *ln2, *ln2_m, *ln2_r;
    real_t *cq;                 /* (N, D) cross queries (decoder) */
    real_t *ckv;                /* (B*S, 2D) cross keys/values (decoder) */
    real_t *cp;                 /* (B, H, T, S) cross probabilities */
    real_t *catt;               /* (N, D) */
    real_t *x2;                 /* (N, D) after the cross residual (decoder) */
    real_t *ln3, *ln3_m, *ln3_r;
    real_t *fc1;                /* (N, F) pre-activation (expert order with experts) */
    real_t *gel;                /* (N, F) */
    real_t *xg;                 /* (N, D) ln2 rows in expert order (encoder experts only) */
} s_acts_t;

/* The modality adapters of the encoder input, in the order their embeddings are added
 * (the image one first, so a text+image model computes exactly what it did before the
 * others existed). */
enum { AD_IMG = 0, AD_AUD, AD_VID, AD_MOT, S_NAD };

/* One adapter: E = proj.w x + proj.b (+ up to three learned position tables) for each
 * input row x (a patch or a frame) of the batch, then the k-th source position of its
 * modality in row b takes input row k of sample b. Everything is built from the
 * backend's gemm, bias and embedding ops, so any backend that fills the table runs it. */
typedef struct {
    const char *what;       /* "image", "audio", "video", "motion" (errors) */
    int mod;                /* MODEL_MOD_* of the positions it fills */
    int in_dim;             /* width of one input row; 0: the adapter is absent */
    int w, b;               /* parameter indices: proj.w (D, in_dim), proj.b (D) */
    int pos[3];             /* position tables (parameter indices), -1 unused */
    /* the current batch */
    int active;             /* the batch has positions of this modality */
    int n;                  /* input rows: B * rows per sample */
    /* buffers, grown to the largest batch seen */
    int64_t cap_n, cap_s;
    int32_t *map;           /* (B*S) backend: input row of each source position, or -1 */
    int32_t *pid[3];        /* (n) backend: row of each position table, or -1 */
    real_t *x;              /* (n, in_dim) backend: the input rows */
    real_t *e;              /* (n, D) backend: their embeddings */
    real_t *de;             /* (n, D) backend: gradient of e */
    real_t *hx;             /* (n * in_dim) host staging */
    int32_t *hi;            /* (max(n, B*S)) host staging */
} s_adapter_t;

struct model_t {
    model_config_t c;
    backend_t *be;
    int n_params;
    model_param_t *params;
    int64_t numel;
    real_t *W, *G, *M, *V;       /* flat (numel) */
    int64_t adam_t;
    /* top-level tensors (indices; -1 when absent) */
    int tok_emb, enc_pos, dec_pos, type_emb;
    int enc_ln_w, enc_ln_b, dec_ln_w, dec_ln_b;
    s_layer_t *enc, *dec;
    s_adapter_t ad[S_NAD];

    /* arena for (cap_B, cap_S, cap_T) */
    int cap_B, cap_S, cap_T;
    void *arena;
    size_t arena_bytes;
    /* current batch geometry */
    int B, S, T, has_loss;
    int64_t ntok;
    /* inputs on the backend */
    int32_t *src_ids;    /* (B*S) token id or -1 at adapter (image, audio, ...) positions */
    int32_t *src_pos;    /* (B*S) position s */
    int32_t *src_mod;    /* (B*S) modality */
    int32_t *src_len;    /* (B) */
    int32_t *tgt_ids;    /* (B*T) */
    int32_t *tgt_pos;    /* (B*T) */
    int32_t *tgt_mod;    /* (B*T) all MOD_TEXT */
    int32_t *tgt_out;    /* (B*T) */
    s_acts_t *ea, *da;   /* (n_enc + 1) and (n_dec + 1): the last holds only x */
    real_t *mem, *mem_m, *mem_r;      /* (B*S, D) enc_ln output */
    real_t *h, *h_m, *h_r;            /* (B*T, D) dec_ln output */
    real_t *logits;      /* (B*T, V), holds dlogits after backward */
    real_t *row_loss;    /* (B*T) */
    /* backward scratch */
    real_t *d_res, *d_y, *d_mem;      /* (B*S, D), (B*T, D), (B*S, D) */
    real_t *d_a, *d_qkv, *d_f, *d_kv;   /* (Nmax, D), (Nmax, 3D), (Nmax, F), (B*S, 2D) */
    int logits_valid;    /* logits still hold logits (not gradients) */
    /* host staging */
    int32_t *h_i32;      /* (max(B*S, B*T)) */
    /* Expert routing of the current source (mod_experts): the positions sorted by group
     * ("expert order"), so each expert's rows are one contiguous block that the plain
     * linear ops take; ex_perm gathers into that order, ex_inv scatters back out. */
    int ex_cnt[S_NEX], ex_off[S_NEX];   /* positions of each group, first row of its block */
    int ex_single;       /* the group of every position (no gather needed), or -1 */
    int32_t *ex_perm;    /* (B*S) backend: row r of expert order is position ex_perm[r] */
    int32_t *ex_inv;     /* (B*S) backend: position k is row ex_inv[k] of expert order */
    real_t *ex_tmp, *ex_tmp2;   /* (B*S, D) scratch in expert order */
};

#define PW(m, idx) ((m)->W + (m)->params[idx].offset)
#define PG(m, idx) ((m)->G + (m)->params[idx].offset)

/* ---- config ---- */

int model_config_preset(model_config_t *c, const char *size, int vocab, char *err,
                        size_t errlen) {
    memset(c, 0, sizeof *c);
    if (!size || !strcmp(size, "nano")) {
        c->d_model = 64, c->n_heads = 4, c->d_ffn = 256, c->n_enc = 2, c->n_dec = 2;
        c->img_grid = 6;
    } else if (!strcmp(size, "tiny")) {
        c->d_model = 256, c->n_heads = 4, c->d_ffn = 1024, c->n_enc = 4, c->n_dec = 4;
        c->img_grid = 6;
    } else if (!strcmp(size, "base")) {
        c->d_model = 768, c->n_heads = 12, c->d_ffn = 3072, c->n_enc = 6, c->n_dec = 6;
        c->img_grid = 24;
    } else {
        return util_err(err, errlen, "model: unknown size '%s' (nano, tiny, base)", size);
    }
    c->vocab = vocab;
    c->max_src = 256;
    c->max_tgt = 64;
    c->n_mod = 9;
    c->patch_dim = 16 * 16 * 3;
    c->pad_id = 1;
    c->ln_eps = (real_t)1e-5;
    c->label_smoothing = (real_t)0.1;
    c->beta1 = (real_t)0.9;
    c->beta2 = (real_t)0.999;
    c->eps = (real_t)1e-8;
    c->weight_decay = (real_t)0.01;
    c->decay_all = 1;
    c->init_std = (real_t)0.02;
    return model_config_check(c, err, errlen);
}

int model_config_check(const model_config_t *c, char *err, size_t errlen) {
    if (c->vocab < 5)
        return util_err(err, errlen, "model: vocab %d too small (>= 5)", c->vocab);
    if (c->d_model <= 0 || c->n_heads <= 0 || c->d_model % c->n_heads)
        return util_err(err, errlen, "model: d_model %d must be a positive multiple of n_heads %d",
                        c->d_model, c->n_heads);
    if (c->d_ffn <= 0 || c->n_enc < 0 || c->n_dec < 0)
        return util_err(err, errlen, "model: bad d_ffn %d or layer counts %d/%d", c->d_ffn,
                        c->n_enc, c->n_dec);
    if (c->max_src <= 0 || c->max_tgt <= 0)
        return util_err(err, errlen, "model: max_src %d / max_tgt %d must be positive",
                        c->max_src, c->max_tgt);
    /* type_emb must have a row for the highest modality an adapter fills */
    int top = c->mot_dim > 0   ? MODEL_MOD_MOTION
              : c->vid_dim > 0 ? MODEL_MOD_VIDEO
              : c->aud_dim > 0 ? MODEL_MOD_AUDIO
              : c->patch_dim > 0 ? MODEL_MOD_IMAGE : 0;
    if (c->n_mod < 0 || (c->n_mod > 0 && c->n_mod <= top))
        return util_err(err, errlen, "model: n_mod %d too small for the adapters (modality %d)",
                        c->n_mod, top);
    if (c->patch_dim < 0 || (c->patch_dim > 0 && c->img_grid <= 0))
        return util_err(err, errlen, "model: image adapter needs img_grid > 0 (patch_dim %d)",
                        c->patch_dim);
    if (c->aud_dim < 0 || c->mot_dim < 0 || c->vid_dim < 0)
        return util_err(err, errlen, "model: negative adapter width (audio %d, video %d, "
                        "motion %d)", c->aud_dim, c->vid_dim, c->mot_dim);
    if (c->vid_dim > 0 && (c->vid_grid <= 0 || c->vid_frames <= 0))
        return util_err(err, errlen, "model: video adapter needs vid_grid > 0 and vid_frames > 0 "
                        "(grid %d, frames %d)", c->vid_grid, c->vid_frames);
    if (c->mod_experts != 0 && c->mod_experts != 1)
        return util_err(err, errlen, "model: mod_experts %d is not 0 or 1", c->mod_experts);
    if (c->pad_id < 0 || c->pad_id >= c->vocab)
        return util_err(err, errlen, "model: pad_id %d outside the vocabulary", c->pad_id);
    if (!(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return util_err(err, errlen, "model: label_smoothing %g not in [0, 1)",
                        (double)c->label_smoothing);
    return 0;
}

/* ---- parameters ---- */

static int s_add(model_t *m, const char *name, int64_t d0, int64_t d1) {
    int i = m->n_params++;
    m->params = util_realloc(m->params, sizeof *m->params * m->n_params);
    model_param_t *p = &m->params[i];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = d1 > 0 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1 > 0 ? d1 : 0;
    p->numel = d0 * (d1 > 0 ? d1 : 1);
    p->offset = m->numel;
    /* Keep every tensor 16-element aligned so that vector loads never straddle. */
    m->numel += (p->numel + 15) / 16 * 16;
    return i;
}

static int s_addf(model_t *m, int64_t d0, int64_t d1, const char *fmt, int l) {
    char name[MODEL_MAX_NAME];
    snprintf(name, sizeof name, fmt, l);
    return s_add(m, name, d0, d1);
}

static void s_build_names(model_t *m) {
    const model_config_t *c = &m->c;
    int D = c->d_model, F = c->d_ffn;
    m->type_emb = -1;
    const char *what[S_NAD] = {"image", "audio", "video", "motion"};
    const int mods[S_NAD] = {MODEL_MOD_IMAGE, MODEL_MOD_AUDIO, MODEL_MOD_VIDEO, MODEL_MOD_MOTION};
    const int dims[S_NAD] = {c->patch_dim, c->aud_dim, c->vid_dim, c->mot_dim};
    for (int j = 0; j < S_NAD; j++) {
        s_adapter_t *a = &m->ad[j];
        memset(a, 0, sizeof *a);
        a->what = what[j], a->mod = mods[j], a->in_dim = dims[j];
        a->w = a->b = a->pos[0] = a->pos[1] = a->pos[2] = -1;
    }
    m->tok_emb = s_add(m, "tok_emb", c->vocab, D);
    m->enc_pos = s_add(m, "enc_pos", c->max_src, D);
    m->dec_pos = s_add(m, "dec_pos", c->max_tgt, D);
    if (c->n_mod > 0)
        m->type_emb = s_add(m, "type_emb", c->n_mod, D);
    if (c->patch_dim > 0) {
        s_adapter_t *a = &m->ad[AD_IMG];
        a->w = s_add(m, "img.proj.w", D, c->patch_dim);
        a->b = s_add(m, "img.proj.b", D, 0);
        a->pos[0] = s_add(m, "img.row", c->img_grid, D);
        a->pos[1] = s_add(m, "img.col", c->img_grid, D);
    }
    if (c->aud_dim > 0) {
        s_adapter_t *a = &m->ad[AD_AUD];
        a->w = s_add(m, "aud.proj.w", D, c->aud_dim);
        a->b = s_add(m, "aud.proj.b", D, 0);
    }
    if (c->vid_dim > 0) {
        s_adapter_t *a = &m->ad[AD_VID];
        a->w = s_add(m, "vid.proj.w", D, c->vid_dim);
        a->b = s_add(m, "vid.proj.b", D, 0);
        a->pos[0] = s_add(m, "vid.time", c->vid_frames, D);
        a->pos[1] = s_add(m, "vid.row", c->vid_grid, D);
        a->pos[2] = s_add(m, "vid.col", c->vid_grid, D);
    }
    if (c->mot_dim > 0) {
        s_adapter_t *a = &m->ad[AD_MOT];
        a->w = s_add(m, "mot.proj.w", D, c->mot_dim);
        a->b = s_add(m, "mot.proj.b", D, 0);
    }
    m->enc = util_calloc(c->n_enc ? c->n_enc : 1, sizeof *m->enc);
    m->dec = util_calloc(c->n_dec ? c->n_dec : 1, sizeof *m->dec);
    /* The tensors of one fused group must be added back to back with no padding between
     * them: D*D and D are multiples of 16 only when D is, so the fused views require
     * it and s_new checks adjacency. */
    for (int l = 0; l < c->n_enc; l++) {
        s_layer_t *L = &m->enc[l];
        L->ln1_w = s_addf(m, D, 0, "enc.%d.ln1.w", l);
        L->ln1_b = s_addf(m, D, 0, "enc.%d.ln1.b", l);
        L->qkv_w = s_addf(m, D, D, "enc.%d.attn.q.w", l);
        s_addf(m, D, D, "enc.%d.attn.k.w", l);
        s_addf(m, D, D, "enc.%d.attn.v.w", l);
        L->qkv_b = s_addf(m, D, 0, "enc.%d.attn.q.b", l);
        s_addf(m, D, 0, "enc.%d.attn.k.b", l);
        s_addf(m, D, 0, "enc.%d.attn.v.b", l);
        L->o_w = s_addf(m, D, D, "enc.%d.attn.o.w", l);
        L->o_b = s_addf(m, D, 0, "enc.%d.attn.o.b", l);
        L->ln2_w = s_addf(m, D, 0, "enc.%d.ln2.w", l);
        L->ln2_b = s_addf(m, D, 0, "enc.%d.ln2.b", l);
        for (int g = 0; g < S_NEX; g++)
            L->ex[g].fc1_w = L->ex[g].fc1_b = L->ex[g].fc2_w = L->ex[g].fc2_b = -1;
        if (!c->mod_experts) {
            L->fc1_w = s_addf(m, F, D, "enc.%d.ffn.fc1.w", l);
            L->fc1_b = s_addf(m, F, 0, "enc.%d.ffn.fc1.b", l);
            L->fc2_w = s_addf(m, D, F, "enc.%d.ffn.fc2.w", l);
            L->fc2_b = s_addf(m, D, 0, "enc.%d.ffn.fc2.b", l);
            continue;
        }
        /* one FFN per group, in group order, where the plain FFN would be */
        for (int g = 0; g < S_NEX; g++) {
            if (g != EX_TEXT && m->ad[g - 1].in_dim <= 0)
                continue;
            char name[MODEL_MAX_NAME];
            s_ffn_t *f = &L->ex[g];
            snprintf(name, sizeof name, "enc.%d.ffn.%s.fc1.w", l, s_ex_name[g]);
            f->fc1_w = s_add(m, name, F, D);
            snprintf(name, sizeof name, "enc.%d.ffn.%s.fc1.b", l, s_ex_name[g]);
            f->fc1_b = s_add(m, name, F, 0);
            snprintf(name, sizeof name, "enc.%d.ffn.%s.fc2.w", l, s_ex_name[g]);
            f->fc2_w = s_add(m, name, D, F);
            snprintf(name, sizeof name, "enc.%d.ffn.%s.fc2.b", l, s_ex_name[g]);
            f->fc2_b = s_add(m, name, D, 0);
        }
        L->fc1_w = L->ex[EX_TEXT].fc1_w, L->fc1_b = L->ex[EX_TEXT].fc1_b;
        L->fc2_w = L->ex[EX_TEXT].fc2_w, L->fc2_b = L->ex[EX_TEXT].fc2_b;
    }
    m->enc_ln_w = s_add(m, "enc_ln.w", D, 0);
    m->enc_ln_b = s_add(m, "enc_ln.b", D, 0);
    for (int l = 0; l < c->n_dec; l++) {
        s_layer_t *L = &m->dec[l];
        L->ln1_w = s_addf(m, D, 0, "dec.%d.ln1.w", l);
        L->ln1_b = s_addf(m, D, 0, "dec.%d.ln1.b", l);
        L->qkv_w = s_addf(m, D, D, "dec.%d.self.q.w", l);
        s_addf(m, D, D, "dec.%d.self.k.w", l);
        s_addf(m, D, D, "dec.%d.self.v.w", l);
        L->qkv_b = s_addf(m, D, 0, "dec.%d.self.q.b", l);
        s_addf(m, D, 0, "dec.%d.self.k.b", l);
        s_addf(m, D, 0, "dec.%d.self.v.b", l);
        L->o_w = s_addf(m, D, D, "dec.%d.self.o.w", l);
        L->o_b = s_addf(m, D, 0, "dec.%d.self.o.b", l);
        L->ln2_w = s_addf(m, D, 0, "dec.%d.ln2.w", l);
        L->ln2_b = s_addf(m, D, 0, "dec.%d.ln2.b", l);
        L->cq_w = s_addf(m, D, D, "dec.%d.cross.q.w", l);
        L->cq_b = s_addf(m, D, 0, "dec.%d.cross.q.b", l);
        L->ckv_w = s_addf(m, D, D, "dec.%d.cross.k.w", l);
        s_addf(m, D, D, "dec.%d.cross.v.w", l);
        L->ckv_b = s_addf(m, D, 0, "dec.%d.cross.k.b", l);
        s_addf(m, D, 0, "dec.%d.cross.v.b", l);
        L->co_w = s_addf(m, D, D, "dec.%d.cross.o.w", l);
        L->co_b = s_addf(m, D, 0, "dec.%d.cross.o.b", l);
        L->ln3_w = s_addf(m, D, 0, "dec.%d.ln3.w", l);
        L->ln3_b = s_addf(m, D, 0, "dec.%d.ln3.b", l);
        L->fc1_w = s_addf(m, F, D, "dec.%d.ffn.fc1.w", l);
        L->fc1_b = s_addf(m, F, 0, "dec.%d.ffn.fc1.b", l);
        L->fc2_w = s_addf(m, D, F, "dec.%d.ffn.fc2.w", l);
        L->fc2_b = s_addf(m, D, 0, "dec.%d.ffn.fc2.b", l);
    }
    m->dec_ln_w = s_add(m, "dec_ln.w", D, 0);
    m->dec_ln_b = s_add(m, "dec_ln.b", D, 0);
}

/* A fused group is usable as one matrix when its members are back to back. */
static int s_adjacent(const model_t *m, int first, int count) {
    for (int i = 1; i < count; i++) {
        const model_param_t *a = &m->params[first + i - 1], *b = &m->params[first + i];
        if (a->offset + a->numel != b->offset)
            return 0;
    }
    return 1;
}

static double s_gauss(util_rng_t *r) {
    double u1 = util_rng_uniform(r), u2 = util_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

model_t *model_new(const model_config_t *c, backend_t *be, uint64_t seed, char *err,
                   size_t errlen) {
    if (model_config_check(c, err, errlen))
        return NULL;
    if (c->d_model % 16) {
        util_err(err, errlen, "model: d_model %d must be a multiple of 16 (fused QKV layout)",
                 c->d_model);
        return NULL;
    }
    model_t *m = util_calloc(1, sizeof *m);
    m->c = *c;
    m->be = be;
    s_build_names(m);
    for (int l = 0; l < c->n_enc; l++)
        OFA_ASSERT(s_adjacent(m, m->enc[l].qkv_w, 3) && s_adjacent(m, m->enc[l].qkv_b, 3));
    for (int l = 0; l < c->n_dec; l++)
        OFA_ASSERT(s_adjacent(m, m->dec[l].qkv_w, 3) && s_adjacent(m, m->dec[l].qkv_b, 3) &&
                   s_adjacent(m, m->dec[l].ckv_w, 2) && s_adjacent(m, m->dec[l].ckv_b, 2));
    size_t bytes = sizeof(real_t) * m->numel;
    m->W = be->i->alloc(be, bytes);
    m->G = be->i->alloc(be, bytes);
    m->M = be->i->alloc(be, bytes);
    m->V = be->i->alloc(be, bytes);
    if (!m->W || !m->G || !m->M || !m->V) {
        util_err(err, errlen, "model: cannot allocate %zu bytes of parameters", 4 * bytes);
        model_destroy(&m);
        return NULL;
    }
    for (int i = 0; i < m->n_params; i++) {
        model_param_t *p = &m->params[i];
        p->w = m->W + p->offset;
        p->g = m->G + p->offset;
        p->m = m->M + p->offset;
        p->v = m->V + p->offset;
    }
    /* Initialisation on the host, then one upload: matrices and embeddings N(0, std),
     * biases 0, LayerNorm weights 1. */
    real_t *h = util_calloc(m->numel ? m->numel : 1, sizeof *h);
    util_rng_t rng = {seed};
    for (int i = 0; i < m->n_params; i++) {
        model_param_t *p = &m->params[i];
        real_t *w = h + p->offset;
        size_t nl = strlen(p->name);
        int is_ln = nl > 2 && !strcmp(p->name + nl - 2, ".w") && p->ndim == 1;
        if (p->ndim == 2)
            for (int64_t j = 0; j < p->numel; j++)
                w[j] = (real_t)(s_gauss(&rng) * c->init_std);
        else if (is_ln)
            for (int64_t j = 0; j < p->numel; j++)
                w[j] = 1;
    }
    be->i->upload(be, m->W, h, bytes);
    free(h);
    return m;
}

static void s_free_arena(model_t *m) {
    if (m->arena)
        m->be->i->free(m->be, m->arena);
    m->arena = NULL;
    free(m->ea);
    free(m->da);
    m->ea = m->da = NULL;
    free(m->h_i32);
    m->h_i32 = NULL;
    m->cap_B = m->cap_S = m->cap_T = 0;
}

static void s_adapter_free(model_t *m, s_adapter_t *a) {
    void *ps[] = {a->map, a->pid[0], a->pid[1], a->pid[2], a->x, a->e, a->de};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        if (ps[i])
            m->be->i->free(m->be, ps[i]);
    a->map = a->pid[0] = a->pid[1] = a->pid[2] = NULL;
    a->x = a->e = a->de = NULL;
    free(a->hx);
    free(a->hi);
    a->hx = NULL;
    a->hi = NULL;
    a->cap_n = a->cap_s = 0;
}

void model_destroy(model_t **self_p) {
    if (!self_p || !*self_p)
        return;
    model_t *m = *self_p;
    backend_t *be = m->be;
    s_free_arena(m);
    for (int j = 0; j < S_NAD; j++)
        s_adapter_free(m, &m->ad[j]);
    if (m->W) be->i->free(be, m->W);
    if (m->G) be->i->free(be, m->G);
    if (m->M) be->i->free(be, m->M);
    if (m->V) be->i->free(be, m->V);
    free(m->params);
    free(m->enc);
    free(m->dec);
    free(m);
    *self_p = NULL;
}

void backend_destroy(backend_t **self_p) {
    if (!self_p || !*self_p)
        return;
    backend_t *be = *self_p;
    be->i->destroy(be);
    *self_p = NULL;
}

const model_config_t *model_config(const model_t *self) { return &self->c; }
backend_t *model_backend(const model_t *self) { return self->be; }
int model_n_params(const model_t *self) { return self->n_params; }
int64_t model_numel(const model_t *self) { return self->numel; }

int model_param(const model_t *self, int i, model_param_t *out) {
    if (i < 0 || i >= self->n_params)
        return -1;
    *out = self->params[i];
    return 0;
}

int model_param_find(const model_t *self, const char *name) {
    for (int i = 0; i < self->n_params; i++)
        if (!strcmp(self->params[i].name, name))
            return i;
    return -1;
}

static real_t *s_buf(model_t *m, model_buf_t which) {
    switch (which) {
    case MODEL_W: return m->W;
    case MODEL_G: return m->G;
    case MODEL_M: return m->M;
    case MODEL_V: return m->V;
    }
    return NULL;
}

void model_buf_download(model_t *self, model_buf_t which, real_t *host) {
    self->be->i->download(self->be, host, s_buf(self, which), sizeof(real_t) * self->numel);
}

void model_buf_upload(model_t *self, model_buf_t which, const real_t *host) {
    self->be->i->upload(self->be, s_buf(self, which), host, sizeof(real_t) * self->numel);
}

int64_t model_adam_t(const model_t *self) { return self->adam_t; }
void model_set_adam_t(model_t *self, int64_t t) { self->adam_t = t; }

/* ---- activation arena ---- */

/* Carve the arena: with base == NULL only count bytes. Every piece is 64-byte aligned. */
typedef struct {
    char *base;
    size_t off;
} s_carve_t;

static void *s_take(s_carve_t *cv, size_t bytes) {
    void *p = cv->base ? cv->base + cv->off : NULL;
    cv->off += (bytes + 63) / 64 * 64;
    return p;
}
#define TAKE_R(cv, n) ((real_t *)s_take(cv, sizeof(real_t) * (size_t)(n)))
#define TAKE_I(cv, n) ((int32_t *)s_take(cv, sizeof(int32_t) * (size_t)(n)))

static void s_layout(model_t *m, s_carve_t *cv, int B, int S, int T) {
    const model_config_t *c = &m->c;
    int64_t D = c->d_model, F = c->d_ffn, H = c->n_heads, V = c->vocab;
    int64_t Ns = (int64_t)B * S, Nt = (int64_t)B * T;
    int64_t Nm = Ns > Nt ? Ns : Nt;
    m->src_ids = TAKE_I(cv, Ns);
    m->src_pos = TAKE_I(cv, Ns);
    m->src_mod = TAKE_I(cv, Ns);
    m->src_len = TAKE_I(cv, B);
    m->tgt_ids = TAKE_I(cv, Nt);
    m->tgt_pos = TAKE_I(cv, Nt);
    m->tgt_mod = TAKE_I(cv, Nt);
    m->tgt_out = TAKE_I(cv, Nt);
    for (int l = 0; l <= c->n_enc; l++) {
        s_acts_t *a = &m->ea[l];
        memset(a, 0, sizeof *a);
        a->x = TAKE_R(cv, Ns * D);
        if (l == c->n_enc)
            break;
        a->ln1 = TAKE_R(cv, Ns * D), a->ln1_m = TAKE_R(cv, Ns), a->ln1_r = TAKE_R(cv, Ns);
        a->qkv = TAKE_R(cv, Ns * 3 * D);
        a->p = TAKE_R(cv, (int64_t)B * H * S * S);
        a->att = TAKE_R(cv, Ns * D);
        a->x1 = TAKE_R(cv, Ns * D);
        a->ln2 = TAKE_R(cv, Ns * D), a->ln2_m = TAKE_R(cv, Ns), a->ln2_r = TAKE_R(cv, Ns);
        a->fc1 = TAKE_R(cv, Ns * F);
        a->gel = TAKE_R(cv, Ns * F);
    }
    m->mem = TAKE_R(cv, Ns * D), m->mem_m = TAKE_R(cv, Ns), m->mem_r = TAKE_R(cv, Ns);
    for (int l = 0; l <= c->n_dec; l++) {
        s_acts_t *a = &m->da[l];
        memset(a, 0, sizeof *a);
        a->x = TAKE_R(cv, Nt * D);
        if (l == c->n_dec)
            break;
        a->ln1 = TAKE_R(cv, Nt * D), a->ln1_m = TAKE_R(cv, Nt), a->ln1_r = TAKE_R(cv, Nt);
        a->qkv = TAKE_R(cv, Nt * 3 * D);
        a->p = TAKE_R(cv, (int64_t)B * H * T * T);
        a->att = TAKE_R(cv, Nt * D);
        a->x1 = TAKE_R(cv, Nt * D);
        a->ln2 = TAKE_R(cv, Nt * D), a->ln2_m = TAKE_R(cv, Nt), a->ln2_r = TAKE_R(cv, Nt);
        a->cq = TAKE_R(cv, Nt * D);
        a->ckv = TAKE_R(cv, Ns * 2 * D);
        a->cp = TAKE_R(cv, (int64_t)B * H * T * S);
        a->catt = TAKE_R(cv, Nt * D);
        a->x2 = TAKE_R(cv, Nt * D);
        a->ln3 = TAKE_R(cv, Nt * D), a->ln3_m = TAKE_R(cv, Nt), a->ln3_r = TAKE_R(cv, Nt);
        a->fc1 = TAKE_R(cv, Nt * F);
        a->gel = TAKE_R(cv, Nt * F);
    }
    m->h = TAKE_R(cv, Nt * D), m->h_m = TAKE_R(cv, Nt), m->h_r = TAKE_R(cv, Nt);
    m->logits = TAKE_R(cv, Nt * V);
    m->row_loss = TAKE_R(cv, Nt);
    m->d_res = TAKE_R(cv, Ns * D);
    m->d_y = TAKE_R(cv, Nt * D);
    m->d_mem = TAKE_R(cv, Ns * D);
    m->d_a = TAKE_R(cv, Nm * D);
    m->d_qkv = TAKE_R(cv, Nm * 3 * D);
    m->d_f = TAKE_R(cv, Nm * F);
    m->d_kv = TAKE_R(cv, Ns * 2 * D);
    /* last, so that a model without experts has the arena it always had */
    m->ex_perm = m->ex_inv = NULL;
    m->ex_tmp = m->ex_tmp2 = NULL;
    if (c->mod_experts) {
        m->ex_perm = TAKE_I(cv, Ns);
        m->ex_inv = TAKE_I(cv, Ns);
        m->ex_tmp = TAKE_R(cv, Ns * D);
        m->ex_tmp2 = TAKE_R(cv, Ns * D);
        for (int l = 0; l < c->n_enc; l++)
            m->ea[l].xg = TAKE_R(cv, Ns * D);
    }
}

/* Make the arena hold (B, S, T); grows to the largest of each dimension seen. The
 * pointers are laid out for the capacity, and a smaller batch uses a prefix of each. */
static int s_reserve(model_t *m, int B, int S, int T, char *err, size_t errlen) {
    if (m->arena && B <= m->cap_B && S <= m->cap_S && T <= m->cap_T)
        return 0;
    int cB = B > m->cap_B ? B : m->cap_B, cS = S > m->cap_S ? S : m->cap_S;
    int cT = T > m->cap_T ? T : m->cap_T;
    s_free_arena(m);
    m->ea = util_calloc(m->c.n_enc + 1, sizeof *m->ea);
    m->da = util_calloc(m->c.n_dec + 1, sizeof *m->da);
    s_carve_t cv = {NULL, 0};
    s_layout(m, &cv, cB, cS, cT);
    m->arena = m->be->i->alloc(m->be, cv.off);
    if (!m->arena) {
        s_free_arena(m);
        return util_err(err, errlen, "model: cannot allocate %zu bytes of activations for "
                        "B=%d S=%d T=%d", cv.off, cB, cS, cT);
    }
    m->arena_bytes = cv.off;
    cv.base = m->arena;
    cv.off = 0;
    s_layout(m, &cv, cB, cS, cT);
    int64_t ni = (int64_t)cB * (cS > cT ? cS : cT);
    m->h_i32 = util_malloc(sizeof(int32_t) * (ni > 0 ? ni : 1));
    m->cap_B = cB, m->cap_S = cS, m->cap_T = cT;
    m->logits_valid = 0;
    return 0;
}

/* ---- batch validation ---- */

/* The adapter that fills positions of modality mod, or -1 (token positions). */
static int s_adapter_of(int mod) {
    switch (mod) {
    case MODEL_MOD_IMAGE: return AD_IMG;
    case MODEL_MOD_AUDIO: return AD_AUD;
    case MODEL_MOD_VIDEO: return AD_VID;
    case MODEL_MOD_MOTION: return AD_MOT;
    default: return -1;
    }
}

/* Input rows per sample the batch gives adapter j (0 when its tensor is absent). */
static int s_adapter_rows(int j, const model_batch_t *b) {
    switch (j) {
    case AD_IMG: return b->img ? b->Np : 0;
    case AD_AUD: return b->aud ? b->Fa : 0;
    case AD_VID: return b->vid ? b->Nf * b->Npv : 0;
    case AD_MOT: return b->mot ? b->Fm : 0;
    }
    return 0;
}

/* Row i's n positions of adapter j against the batch's tensors and the config. */
static int s_check_adapter(const model_t *m, int j, const model_batch_t *b, int i, int n,
                           char *err, size_t errlen) {
    const model_config_t *c = &m->c;
    const s_adapter_t *a = &m->ad[j];
    static const char *field[S_NAD] = {"img", "aud", "vid", "mot"};
    if (a->in_dim <= 0)
        return util_err(err, errlen, "batch: row %d has %s positions but the model has no %s "
                        "adapter", i, a->what, a->what);
    int rows = s_adapter_rows(j, b);
    if (rows <= 0)
        return util_err(err, errlen, "batch: row %d has %d %s positions but no %s tensor", i, n,
                        a->what, field[j]);
    if (n > rows)
        return util_err(err, errlen, "batch: row %d has %d %s positions for %d %s rows", i, n,
                        a->what, rows, field[j]);
    switch (j) {
    case AD_IMG:
        if (b->grid <= 0 || (n - 1) / b->grid >= c->img_grid || b->grid > c->img_grid)
            return util_err(err, errlen, "batch: img.grid %d does not fit the model's "
                            "%dx%d patch grid (%d patches)", b->grid, c->img_grid,
                            c->img_grid, n);
        break;
    case AD_AUD:
        if (b->aud_dim != c->aud_dim)
            return util_err(err, errlen, "batch: aud has %d features per position, the audio "
                            "adapter takes %d (stack x mel bins)", b->aud_dim, c->aud_dim);
        break;
    case AD_VID:
        if (b->vid_dim != c->vid_dim)
            return util_err(err, errlen, "batch: vid patches have %d values, the video adapter "
                            "takes %d (P*P*3)", b->vid_dim, c->vid_dim);
        if (b->vid_grid <= 0 || b->vid_grid > c->vid_grid || b->Npv > b->vid_grid * b->vid_grid)
            return util_err(err, errlen, "batch: vid.grid %d with %d patches per frame does not "
                            "fit the model's %dx%d grid", b->vid_grid, b->Npv, c->vid_grid,
                            c->vid_grid);
        if ((n - 1) / b->Npv >= c->vid_frames)
            return util_err(err, errlen, "batch: row %d has %d video frames, the model's "
                            "vid.time has %d", i, (n - 1) / b->Npv + 1, c->vid_frames);
        break;
    case AD_MOT:
        if (b->mot_dim != c->mot_dim)
            return util_err(err, errlen, "batch: mot has %d channels per frame, the motion "
                            "adapter takes %d", b->mot_dim, c->mot_dim);
        break;
    }
    return 0;
}

int model_batch_check(const model_t *self, const model_batch_t *b, char *err, size_t errlen) {
    const model_config_t *c = &self->c;
    if (b->B <= 0 || b->S <= 0)
        return util_err(err, errlen, "batch: empty source (B=%d S=%d)", b->B, b->S);
    if (b->S > c->max_src)
        return util_err(err, errlen, "batch: source length %d exceeds the model's max_src %d",
                        b->S, c->max_src);
    if (b->T < 0 || b->T > c->max_tgt)
        return util_err(err, errlen, "batch: target length %d outside [0, max_tgt %d]", b->T,
                        c->max_tgt);
    if (!b->src_tok || !b->src_len)
        return util_err(err, errlen, "batch: src_tok and src_len are required");
    if (b->T > 0 && !b->tgt_in)
        return util_err(err, errlen, "batch: tgt_in is required when T > 0");
    for (int i = 0; i < b->B; i++) {
        if (b->src_len[i] < 0 || b->src_len[i] > b->S)
            return util_err(err, errlen, "batch: src_len[%d] = %d outside [0, %d]", i,
                            b->src_len[i], b->S);
        int nad[S_NAD] = {0};
        for (int s = 0; s < b->S; s++) {
            int64_t k = (int64_t)i * b->S + s;
            int mod = b->src_mod ? b->src_mod[k] : MODEL_MOD_TEXT;
            if (mod != MODEL_MOD_TEXT && mod >= (c->n_mod > 0 ? c->n_mod : 1))
                return util_err(err, errlen, "batch: src_mod[%d][%d] = %d: modality unknown to "
                                "the model (n_mod %d)", i, s, mod, c->n_mod);
            int j = s_adapter_of(mod);
            if (j >= 0) {
                nad[j]++;
                continue;
            }
            if (b->src_tok[k] < 0 || b->src_tok[k] >= c->vocab)
                return util_err(err, errlen, "batch: src_tok[%d][%d] = %d outside the "
                                "vocabulary [0, %d)", i, s, b->src_tok[k], c->vocab);
        }
        for (int j = 0; j < S_NAD; j++)
            if (nad[j] > 0 && s_check_adapter(self, j, b, i, nad[j], err, errlen))
                return -1;
        for (int t = 0; t < b->T; t++) {
            int64_t k = (int64_t)i * b->T + t;
            if (b->tgt_in[k] < 0 || b->tgt_in[k] >= c->vocab)
                return util_err(err, errlen, "batch: tgt_in[%d][%d] = %d outside the vocabulary "
                                "[0, %d)", i, t, b->tgt_in[k], c->vocab);
            if (b->tgt_out && (b->tgt_out[k] < 0 || b->tgt_out[k] >= c->vocab))
                return util_err(err, errlen, "batch: tgt_out[%d][%d] = %d outside the "
                                "vocabulary [0, %d)", i, t, b->tgt_out[k], c->vocab);
        }
    }
    return 0;
}

/* ---- building blocks ---- */

/* y (N, O) = x (N, I) W^T (+ y if acc) + b. W (O, I) row-major as torch.nn.Linear. */
static void s_linear(model_t *m, real_t *y, int ldy, const real_t *x, int ldx, const real_t *W,
                     const real_t *b, int N, int O, int I, int acc) {
    backend_t *be = m->be;
    be->i->gemm(be, 0, 1, N, O, I, 1, x, ldx, W, I, acc ? 1 : 0, y, ldy);
    if (b) {
        OFA_ASSERT(ldy == O);
        be->i->bias_add(be, y, b, N, O);
    }
}

/* Backward of s_linear: dx (N, I) (+)= dy W ; dW += dy^T x ; db += colsum dy. */
static void s_linear_bwd(model_t *m, real_t *dx, int acc_dx, const real_t *dy, const real_t *x,
                         const real_t *W, real_t *dW, real_t *db, int N, int O, int I) {
    backend_t *be = m->be;
    if (dx)
        be->i->gemm(be, 0, 0, N, I, O, 1, dy, O, W, I, acc_dx ? 1 : 0, dx, I);
    be->i->gemm(be, 1, 0, O, I, N, 1, dy, O, x, I, 1, dW, I);
    if (db)
        be->i->bias_bwd(be, db, dy, N, O);
}

static be_attn_t s_attn_desc(const model_t *m, int B, int Tq, int Tk, const real_t *q,
                             int64_t q_ld, const real_t *k, const real_t *v, int64_t kv_ld,
                             real_t *out, const int32_t *key_len, int causal, real_t *probs) {
    int D = m->c.d_model, H = m->c.n_heads;
    be_attn_t a = {0};
    a.B = B, a.H = H, a.Tq = Tq, a.Tk = Tk, a.hd = D / H;
    a.scale = (real_t)(1.0 / sqrt((double)(D / H)));
    a.q = q, a.q_ld = q_ld, a.q_bs = q_ld * Tq;
    a.k = k, a.k_ld = kv_ld, a.k_bs = kv_ld * Tk;
    a.v = v, a.v_ld = kv_ld, a.v_bs = kv_ld * Tk;
    a.out = out, a.o_ld = D, a.o_bs = (int64_t)D * Tq;
    a.key_len = key_len;
    a.causal = causal;
    a.probs = probs;
    return a;
}

/* ---- forward ---- */

/* Grow adapter a's buffers to n input rows and Ns source positions. */
static int s_adapter_reserve(model_t *m, s_adapter_t *a, int64_t n, int64_t Ns, char *err,
                             size_t errlen) {
    if (a->map && n <= a->cap_n && Ns <= a->cap_s)
        return 0;
    backend_t *be = m->be;
    int64_t cn = n > a->cap_n ? n : a->cap_n, cs = Ns > a->cap_s ? Ns : a->cap_s;
    int64_t D = m->c.d_model;
    s_adapter_free(m, a);
    int ok = 1;
#define AA(p, bytes) do { (p) = be->i->alloc(be, (bytes)); ok = ok && (p); } while (0)
    AA(a->map, sizeof(int32_t) * cs);
    for (int t = 0; t < 3; t++)
        if (a->pos[t] >= 0)
            AA(a->pid[t], sizeof(int32_t) * cn);
    AA(a->x, sizeof(real_t) * cn * a->in_dim);
    AA(a->e, sizeof(real_t) * cn * D);
    AA(a->de, sizeof(real_t) * cn * D);
#undef AA
    if (!ok) {
        s_adapter_free(m, a);
        return util_err(err, errlen, "model: cannot allocate the %s adapter's buffers for %lld "
                        "rows", a->what, (long long)cn);
    }
    a->hx = util_malloc(sizeof(real_t) * cn * a->in_dim);
    a->hi = util_malloc(sizeof(int32_t) * (cn > cs ? cn : cs));
    a->cap_n = cn, a->cap_s = cs;
    return 0;
}

/* Row t of position table `t` for input row r of a sample (r counts from 0 within the
 * sample), or -1 for a row no position uses (model_batch_check has made sure every row
 * that a position takes has its table rows). */
static int32_t s_adapter_pos(const model_t *m, int j, int t, const model_batch_t *b, int r) {
    const model_config_t *c = &m->c;
    if (j == AD_IMG) {
        int row = r / b->grid, col = r % b->grid;
        return t == 0 ? (row < c->img_grid ? row : -1) : col;
    }
    /* video: frame, then row and column inside the frame */
    int f = r / b->Npv, p = r % b->Npv, row = p / b->vid_grid, col = p % b->vid_grid;
    if (t == 0)
        return f < c->vid_frames ? f : -1;
    if (t == 1)
        return row < c->vid_grid ? row : -1;
    return col;
}

/* Embed adapter j's input rows and add them into the encoder input x at the positions of
 * its modality (the k-th such position of row i takes input row k of sample i). */
static int s_adapter_fwd(model_t *m, int j, const model_batch_t *b, real_t *x, char *err,
                         size_t errlen) {
    backend_t *be = m->be;
    s_adapter_t *a = &m->ad[j];
    int B = b->B, S = b->S, D = m->c.d_model, I = a->in_dim;
    int64_t Ns = (int64_t)B * S;
    a->active = 0;
    if (I <= 0 || !b->src_mod)
        return 0;
    int any = 0;
    for (int64_t k = 0; k < Ns && !any; k++)
        any = b->src_mod[k] == a->mod;
    if (!any)
        return 0;
    int per = s_adapter_rows(j, b);
    int64_t n = (int64_t)B * per;
    if (s_adapter_reserve(m, a, n, Ns, err, errlen))
        return -1;
    a->active = 1;
    a->n = (int)n;
    int32_t *h = a->hi;
    for (int i = 0; i < B; i++) {
        int cnt = 0;
        for (int s = 0; s < S; s++) {
            int64_t k = (int64_t)i * S + s;
            h[k] = b->src_mod[k] == a->mod ? i * per + cnt++ : -1;
        }
    }
    be->i->upload(be, a->map, h, sizeof *h * Ns);
    for (int t = 0; t < 3; t++) {
        if (a->pos[t] < 0)
            continue;
        for (int64_t k = 0; k < n; k++)
            h[k] = s_adapter_pos(m, j, t, b, (int)(k % per));
        be->i->upload(be, a->pid[t], h, sizeof *h * n);
    }
    /* Patches are normalised to [-1, 1] as the model's own first step; audio and motion
     * frames arrive normalised by their tiers. */
    int64_t nx = n * I;
    if (j == AD_IMG || j == AD_VID) {
        const uint8_t *u = j == AD_IMG ? b->img : b->vid;
        for (int64_t k = 0; k < nx; k++)
            a->hx[k] = (real_t)u[k] / 255 * 2 - 1;
    } else {
        const float *f = j == AD_AUD ? b->aud : b->mot;
        for (int64_t k = 0; k < nx; k++)
            a->hx[k] = (real_t)f[k];
    }
    be->i->upload(be, a->x, a->hx, sizeof(real_t) * nx);
    s_linear(m, a->e, D, a->x, I, PW(m, a->w), PW(m, a->b), (int)n, D, I, 0);
    for (int t = 0; t < 3; t++)
        if (a->pos[t] >= 0)
            be->i->embed_fwd(be, a->e, PW(m, a->pos[t]), a->pid[t], (int)n, D, 1);
    be->i->embed_fwd(be, x, a->e, a->map, (int)Ns, D, 1);
    return 0;
}

/* Backward of s_adapter_fwd from d_res, the gradient of the encoder input. */
static void s_adapter_bwd(model_t *m, s_adapter_t *a, const real_t *d_res, int64_t Ns) {
    backend_t *be = m->be;
    int D = m->c.d_model;
    if (!a->active)
        return;
    be->i->zero(be, a->de, sizeof(real_t) * a->n * D);
    be->i->embed_bwd(be, a->de, d_res, a->map, (int)Ns, D);
    for (int t = 0; t < 3; t++)
        if (a->pos[t] >= 0)
            be->i->embed_bwd(be, PG(m, a->pos[t]), a->de, a->pid[t], a->n, D);
    s_linear_bwd(m, NULL, 0, a->de, a->x, PW(m, a->w), PG(m, a->w), PG(m, a->b), a->n, D,
                 a->in_dim);
}

/* The expert group of a source position's modality. */
static int s_expert_of(int mod) {
    int j = s_adapter_of(mod);
    return j < 0 ? EX_TEXT : j + 1;
}

/* Route the source positions of b to the experts: count each group, and unless one
 * group takes them all, upload the permutation into expert order and its inverse. The
 * order inside a group is the positions' order, so routing is deterministic. */
static void s_route(model_t *m, const model_batch_t *b) {
    backend_t *be = m->be;
    int64_t Ns = (int64_t)b->B * b->S;
    int32_t *h = m->h_i32;
    memset(m->ex_cnt, 0, sizeof m->ex_cnt);
    for (int64_t k = 0; k < Ns; k++)
        m->ex_cnt[s_expert_of(b->src_mod ? b->src_mod[k] : MODEL_MOD_TEXT)]++;
    m->ex_single = -1;
    int off = 0;
    for (int g = 0; g < S_NEX; g++) {
        m->ex_off[g] = off;
        off += m->ex_cnt[g];
        if (m->ex_cnt[g] == Ns)
            m->ex_single = g;
    }
    if (m->ex_single >= 0)
        return;
    /* model_batch_check has refused positions of a modality without its adapter, so
     * every group that has positions has its expert. */
    int next[S_NEX];
    memcpy(next, m->ex_off, sizeof next);
    for (int64_t k = 0; k < Ns; k++)
        h[next[s_expert_of(b->src_mod[k])]++] = (int32_t)k;
    be->i->upload(be, m->ex_perm, h, sizeof *h * Ns);
    memcpy(next, m->ex_off, sizeof next);
    for (int64_t k = 0; k < Ns; k++)
        h[k] = next[s_expert_of(b->src_mod[k])]++;
    be->i->upload(be, m->ex_inv, h, sizeof *h * Ns);
}

/* Upload the batch's indices and build the encoder input ea[0].x: token embeddings,
 * then each adapter's embeddings at its positions, then positions and modality types. */
static int s_embed_src(model_t *m, const model_batch_t *b, char *err, size_t errlen) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    int B = b->B, S = b->S, D = c->d_model;
    int64_t Ns = (int64_t)B * S;
    int32_t *h = m->h_i32;
    /* token ids; -1 at adapter positions (they take the adapter's embedding instead) */
    for (int64_t k = 0; k < Ns; k++) {
        int mod = b->src_mod ? b->src_mod[k] : MODEL_MOD_TEXT;
        h[k] = s_adapter_of(mod) >= 0 ? -1 : b->src_tok[k];
    }
    be->i->upload(be, m->src_ids, h, sizeof *h * Ns);
    for (int64_t k = 0; k < Ns; k++)
        h[k] = (int32_t)(k % S);
    be->i->upload(be, m->src_pos, h, sizeof *h * Ns);
    for (int64_t k = 0; k < Ns; k++)
        h[k] = b->src_mod ? b->src_mod[k] : MODEL_MOD_TEXT;
    be->i->upload(be, m->src_mod, h, sizeof *h * Ns);
    be->i->upload(be, m->src_len, b->src_len, sizeof(int32_t) * B);
    if (c->mod_experts)
        s_route(m, b);

    real_t *x = m->ea[0].x;
    be->i->embed_fwd(be, x, PW(m, m->tok_emb), m->src_ids, (int)Ns, D, 0);
    for (int j = 0; j < S_NAD; j++)
        if (s_adapter_fwd(m, j, b, x, err, errlen))
            return -1;
    be->i->embed_fwd(be, x, PW(m, m->enc_pos), m->src_pos, (int)Ns, D, 1);
    if (m->type_emb >= 0)
        be->i->embed_fwd(be, x, PW(m, m->type_emb), m->src_mod, (int)Ns, D, 1);
    return 0;
}

/* The FFN that every position of the current source takes: the plain one, or with
 * experts the one group's expert when a single group holds them all (NULL: several). */
static const s_ffn_t *s_enc_ffn_one(const model_t *m, const s_layer_t *L, s_ffn_t *plain) {
    if (!m->c.mod_experts) {
        plain->fc1_w = L->fc1_w, plain->fc1_b = L->fc1_b;
        plain->fc2_w = L->fc2_w, plain->fc2_b = L->fc2_b;
        return plain;
    }
    return m->ex_single >= 0 ? &L->ex[m->ex_single] : NULL;
}

/* The FFN sub-block of an encoder layer: xo = x1 + ffn(ln2). With several experts in the
 * batch, ln2 and x1 are gathered into expert order, each expert runs the plain linear
 * ops on its block of rows, and the sums are scattered back to their positions (the
 * backend's gather_rows and embed_fwd; no op of its own, so every backend runs it). */
static void s_enc_ffn_fwd(model_t *m, const s_layer_t *L, s_acts_t *a, real_t *xo, int Ns) {
    backend_t *be = m->be;
    int D = m->c.d_model, F = m->c.d_ffn;
    s_ffn_t plain;
    const s_ffn_t *f = s_enc_ffn_one(m, L, &plain);
    if (f) {
        s_linear(m, a->fc1, F, a->ln2, D, PW(m, f->fc1_w), PW(m, f->fc1_b), Ns, F, D, 0);
        be->i->gelu_fwd(be, a->gel, a->fc1, (int64_t)Ns * F);
        be->i->copy(be, xo, a->x1, sizeof(real_t) * Ns * D);
        s_linear(m, xo, D, a->gel, F, PW(m, f->fc2_w), PW(m, f->fc2_b), Ns, D, F, 1);
        return;
    }
    be->i->gather_rows(be, a->xg, a->ln2, m->ex_perm, Ns, D);
    be->i->gather_rows(be, m->ex_tmp, a->x1, m->ex_perm, Ns, D);
    for (int g = 0; g < S_NEX; g++) {
        if (!m->ex_cnt[g])
            continue;
        const s_ffn_t *e = &L->ex[g];
        int64_t r0 = m->ex_off[g];
        s_linear(m, a->fc1 + r0 * F, F, a->xg + r0 * D, D, PW(m, e->fc1_w), PW(m, e->fc1_b),
                 m->ex_cnt[g], F, D, 0);
    }
    be->i->gelu_fwd(be, a->gel, a->fc1, (int64_t)Ns * F);
    for (int g = 0; g < S_NEX; g++) {
        if (!m->ex_cnt[g])
            continue;
        const s_ffn_t *e = &L->ex[g];
        int64_t r0 = m->ex_off[g];
        s_linear(m, m->ex_tmp + r0 * D, D, a->gel + r0 * F, F, PW(m, e->fc2_w), PW(m, e->fc2_b),
                 m->ex_cnt[g], D, F, 1);
    }
    be->i->embed_fwd(be, xo, m->ex_tmp, m->ex_inv, Ns, D, 0);
}

static void s_encoder(model_t *m, int B, int S) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    int D = c->d_model;
    int Ns = B * S;
    for (int l = 0; l < c->n_enc; l++) {
        s_layer_t *L = &m->enc[l];
        s_acts_t *a = &m->ea[l];
        real_t *xo = m->ea[l + 1].x;
        be->i->layernorm_fwd(be, a->ln1, a->ln1_m, a->ln1_r, a->x, PW(m, L->ln1_w),
                             PW(m, L->ln1_b), Ns, D, c->ln_eps);
        s_linear(m, a->qkv, 3 * D, a->ln1, D, PW(m, L->qkv_w), PW(m, L->qkv_b), Ns, 3 * D, D, 0);
        be_attn_t at = s_attn_desc(m, B, S, S, a->qkv, 3 * D, a->qkv + D, a->qkv + 2 * D, 3 * D,
                                   a->att, m->src_len, 0, a->p);
        be->i->attn_fwd(be, &at);
        be->i->copy(be, a->x1, a->x, sizeof(real_t) * Ns * D);
        s_linear(m, a->x1, D, a->att, D, PW(m, L->o_w), PW(m, L->o_b), Ns, D, D, 1);
        be->i->layernorm_fwd(be, a->ln2, a->ln2_m, a->ln2_r, a->x1, PW(m, L->ln2_w),
                             PW(m, L->ln2_b), Ns, D, c->ln_eps);
        s_enc_ffn_fwd(m, L, a, xo, Ns);
    }
    be->i->layernorm_fwd(be, m->mem, m->mem_m, m->mem_r, m->ea[c->n_enc].x,
                         PW(m, m->enc_ln_w), PW(m, m->enc_ln_b), Ns, D, c->ln_eps);
}

static void s_decoder(model_t *m, int B, int S, int T) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    int D = c->d_model, F = c->d_ffn;
    int Nt = B * T, Ns = B * S;
    for (int l = 0; l < c->n_dec; l++) {
        s_layer_t *L = &m->dec[l];
        s_acts_t *a = &m->da[l];
        real_t *yo = m->da[l + 1].x;
        be->i->layernorm_fwd(be, a->ln1, a->ln1_m, a->ln1_r, a->x, PW(m, L->ln1_w),
                             PW(m, L->ln1_b), Nt, D, c->ln_eps);
        s_linear(m, a->qkv, 3 * D, a->ln1, D, PW(m, L->qkv_w), PW(m, L->qkv_b), Nt, 3 * D, D, 0);
        be_attn_t at = s_attn_desc(m, B, T, T, a->qkv, 3 * D, a->qkv + D, a->qkv + 2 * D, 3 * D,
                                   a->att, NULL, 1, a->p);
        be->i->attn_fwd(be, &at);
        be->i->copy(be, a->x1, a->x, sizeof(real_t) * Nt * D);
        s_linear(m, a->x1, D, a->att, D, PW(m, L->o_w), PW(m, L->o_b), Nt, D, D, 1);
        /* cross-attention over the encoder output */
        be->i->layernorm_fwd(be, a->ln2, a->ln2_m, a->ln2_r, a->x1, PW(m, L->ln2_w),
                             PW(m, L->ln2_b), Nt, D, c->ln_eps);
        s_linear(m, a->cq, D, a->ln2, D, PW(m, L->cq_w), PW(m, L->cq_b), Nt, D, D, 0);
        s_linear(m, a->ckv, 2 * D, m->mem, D, PW(m, L->ckv_w), PW(m, L->ckv_b), Ns, 2 * D, D, 0);
        be_attn_t ac = s_attn_desc(m, B, T, S, a->cq, D, a->ckv, a->ckv + D, 2 * D, a->catt,
                                   m->src_len, 0, a->cp);
        be->i->attn_fwd(be, &ac);
        be->i->copy(be, a->x2, a->x1, sizeof(real_t) * Nt * D);
        s_linear(m, a->x2, D, a->catt, D, PW(m, L->co_w), PW(m, L->co_b), Nt, D, D, 1);
        be->i->layernorm_fwd(be, a->ln3, a->ln3_m, a->ln3_r, a->x2, PW(m, L->ln3_w),
                             PW(m, L->ln3_b), Nt, D, c->ln_eps);
        s_linear(m, a->fc1, F, a->ln3, D, PW(m, L->fc1_w), PW(m, L->fc1_b), Nt, F, D, 0);
        be->i->gelu_fwd(be, a->gel, a->fc1, (int64_t)Nt * F);
        be->i->copy(be, yo, a->x2, sizeof(real_t) * Nt * D);
        s_linear(m, yo, D, a->gel, F, PW(m, L->fc2_w), PW(m, L->fc2_b), Nt, D, F, 1);
    }
    be->i->layernorm_fwd(be, m->h, m->h_m, m->h_r, m->da[c->n_dec].x, PW(m, m->dec_ln_w),
                         PW(m, m->dec_ln_b), Nt, D, c->ln_eps);
    /* tied output embedding: logits (Nt, V) = h tok_emb^T */
    be->i->gemm(be, 0, 1, Nt, c->vocab, D, 1, m->h, D, PW(m, m->tok_emb), D, 0, m->logits,
                c->vocab);
}

int model_forward(model_t *m, const model_batch_t *b, model_out_t *out, real_t *sample_loss,
                  char *err, size_t errlen) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    if (model_batch_check(m, b, err, errlen))
        return -1;
    if (b->T <= 0)
        return util_err(err, errlen, "batch: model_forward needs a target (T = 0)");
    if (s_reserve(m, b->B, b->S, b->T, err, errlen))
        return -1;
    int B = b->B, S = b->S, T = b->T, D = c->d_model;
    int64_t Nt = (int64_t)B * T;
    m->B = B, m->S = S, m->T = T;
    m->logits_valid = 0;
    if (s_embed_src(m, b, err, errlen))
        return -1;
    s_encoder(m, B, S);

    int32_t *h = m->h_i32;
    be->i->upload(be, m->tgt_ids, b->tgt_in, sizeof(int32_t) * Nt);
    for (int64_t k = 0; k < Nt; k++)
        h[k] = (int32_t)(k % T);
    be->i->upload(be, m->tgt_pos, h, sizeof *h * Nt);
    for (int64_t k = 0; k < Nt; k++)
        h[k] = MODEL_MOD_TEXT;
    be->i->upload(be, m->tgt_mod, h, sizeof *h * Nt);
    real_t *y = m->da[0].x;
    be->i->embed_fwd(be, y, PW(m, m->tok_emb), m->tgt_ids, (int)Nt, D, 0);
    be->i->embed_fwd(be, y, PW(m, m->dec_pos), m->tgt_pos, (int)Nt, D, 1);
    if (m->type_emb >= 0)
        be->i->embed_fwd(be, y, PW(m, m->type_emb), m->tgt_mod, (int)Nt, D, 1);
    s_decoder(m, B, S, T);
    m->logits_valid = 1;

    model_out_t o = {0};
    m->has_loss = b->tgt_out != NULL;
    if (m->has_loss) {
        be->i->upload(be, m->tgt_out, b->tgt_out, sizeof(int32_t) * Nt);
        be->i->xent_fwd(be, m->row_loss, m->logits, m->tgt_out, (int)Nt, c->vocab,
                        c->label_smoothing, c->pad_id);
        real_t *rl = util_malloc(sizeof *rl * Nt);
        be->i->download(be, rl, m->row_loss, sizeof *rl * Nt);
        if (sample_loss)
            for (int i = 0; i < B; i++)
                sample_loss[i] = 0;
        for (int64_t k = 0; k < Nt; k++) {
            if (b->tgt_out[k] == c->pad_id)
                continue;
            o.ntok++;
            o.loss_sum += rl[k];
            if (sample_loss)
                sample_loss[k / T] += rl[k];
        }
        free(rl);
        o.loss = o.ntok ? o.loss_sum / o.ntok : 0;
    }
    m->ntok = o.ntok;
    if (out)
        *out = o;
    return 0;
}

void model_logits(model_t *m, real_t *host) {
    OFA_ASSERT(m->logits_valid);
    m->be->i->download(m->be, host, m->logits,
                       sizeof(real_t) * (int64_t)m->B * m->T * m->c.vocab);
}

/* ---- backward ---- */

/* Backward of one FFN sub-block whose output was added to the residual: d_res holds
 * d(output) and receives d(input) through the LayerNorm. */
static void s_ffn_bwd(model_t *m, const s_ffn_t *L, const s_acts_t *a, const real_t *ln,
                      const real_t *ln_x, const real_t *ln_m, const real_t *ln_r, int lnw,
                      int lnb, real_t *d_res, int N) {
    backend_t *be = m->be;
    int D = m->c.d_model, F = m->c.d_ffn;
    s_linear_bwd(m, m->d_f, 0, d_res, a->gel, PW(m, L->fc2_w), PG(m, L->fc2_w), PG(m, L->fc2_b),
                 N, D, F);
    be->i->gelu_bwd(be, m->d_f, a->fc1, m->d_f, (int64_t)N * F);
    s_linear_bwd(m, m->d_a, 0, m->d_f, ln, PW(m, L->fc1_w), PG(m, L->fc1_w), PG(m, L->fc1_b), N,
                 F, D);
    be->i->layernorm_bwd(be, d_res, PG(m, lnw), PG(m, lnb), m->d_a, ln_x, ln_m, ln_r, PW(m, lnw),
                         N, D);
}

/* Backward of s_enc_ffn_fwd: d_res holds d(xo) and receives d(x1). With several experts
 * the gradient is gathered into expert order, each expert's block goes back through its
 * linear ops, and d(ln2) is scattered back to the positions. */
static void s_enc_ffn_bwd(model_t *m, const s_layer_t *L, const s_acts_t *a, real_t *d_res,
                          int N) {
    backend_t *be = m->be;
    int D = m->c.d_model, F = m->c.d_ffn;
    s_ffn_t plain;
    const s_ffn_t *f = s_enc_ffn_one(m, L, &plain);
    if (f) {
        s_ffn_bwd(m, f, a, a->ln2, a->x1, a->ln2_m, a->ln2_r, L->ln2_w, L->ln2_b, d_res, N);
        return;
    }
    be->i->gather_rows(be, m->ex_tmp, d_res, m->ex_perm, N, D);
    for (int g = 0; g < S_NEX; g++) {
        if (!m->ex_cnt[g])
            continue;
        const s_ffn_t *e = &L->ex[g];
        int64_t r0 = m->ex_off[g];
        s_linear_bwd(m, m->d_f + r0 * F, 0, m->ex_tmp + r0 * D, a->gel + r0 * F, PW(m, e->fc2_w),
                     PG(m, e->fc2_w), PG(m, e->fc2_b), m->ex_cnt[g], D, F);
    }
    be->i->gelu_bwd(be, m->d_f, a->fc1, m->d_f, (int64_t)N * F);
    for (int g = 0; g < S_NEX; g++) {
        if (!m->ex_cnt[g])
            continue;
        const s_ffn_t *e = &L->ex[g];
        int64_t r0 = m->ex_off[g];
        s_linear_bwd(m, m->ex_tmp2 + r0 * D, 0, m->d_f + r0 * F, a->xg + r0 * D,
                     PW(m, e->fc1_w), PG(m, e->fc1_w), PG(m, e->fc1_b), m->ex_cnt[g], F, D);
    }
    be->i->embed_fwd(be, m->d_a, m->ex_tmp2, m->ex_inv, N, D, 0);
    be->i->layernorm_bwd(be, d_res, PG(m, L->ln2_w), PG(m, L->ln2_b), m->d_a, a->x1, a->ln2_m,
                         a->ln2_r, PW(m, L->ln2_w), N, D);
}

/* Backward of the self-attention sub-block (input a->x, LayerNorm ln1). */
static void s_self_bwd(model_t *m, const s_layer_t *L, const s_acts_t *a, real_t *d_res, int B,
                       int T, const int32_t *key_len, int causal) {
    backend_t *be = m->be;
    int D = m->c.d_model, N = B * T;
    s_linear_bwd(m, m->d_a, 0, d_res, a->att, PW(m, L->o_w), PG(m, L->o_w), PG(m, L->o_b), N, D,
                 D);
    be->i->zero(be, m->d_qkv, sizeof(real_t) * N * 3 * D);
    be_attn_t at = s_attn_desc(m, B, T, T, a->qkv, 3 * D, a->qkv + D, a->qkv + 2 * D, 3 * D,
                               (real_t *)a->att, key_len, causal, a->p);
    be_attn_bwd_t g = {&at, m->d_a, D, (int64_t)D * T, m->d_qkv, m->d_qkv + D, m->d_qkv + 2 * D};
    be->i->attn_bwd(be, &g);
    s_linear_bwd(m, m->d_a, 0, m->d_qkv, a->ln1, PW(m, L->qkv_w), PG(m, L->qkv_w),
                 PG(m, L->qkv_b), N, 3 * D, D);
    be->i->layernorm_bwd(be, d_res, PG(m, L->ln1_w), PG(m, L->ln1_b), m->d_a, a->x, a->ln1_m,
                         a->ln1_r, PW(m, L->ln1_w), N, D);
}

void model_backward(model_t *m) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    OFA_ASSERT(m->logits_valid && m->has_loss);
    int B = m->B, S = m->S, T = m->T, D = c->d_model, V = c->vocab;
    int Nt = B * T, Ns = B * S;
    be->i->zero(be, m->G, sizeof(real_t) * m->numel);

    /* loss -> logits (in place: the logits are not needed afterwards) */
    real_t scale = m->ntok ? (real_t)(1.0 / (double)m->ntok) : 0;
    be->i->xent_bwd(be, m->logits, m->logits, m->tgt_out, Nt, V, c->label_smoothing, c->pad_id,
                    scale);
    m->logits_valid = 0;
    /* tied embedding: d h = dlogits tok_emb ; d tok_emb += dlogits^T h */
    be->i->gemm(be, 0, 0, Nt, D, V, 1, m->logits, V, PW(m, m->tok_emb), D, 0, m->d_a, D);
    be->i->gemm(be, 1, 0, V, D, Nt, 1, m->logits, V, m->h, D, 1, PG(m, m->tok_emb), D);
    be->i->zero(be, m->d_y, sizeof(real_t) * Nt * D);
    be->i->layernorm_bwd(be, m->d_y, PG(m, m->dec_ln_w), PG(m, m->dec_ln_b), m->d_a,
                         m->da[c->n_dec].x, m->h_m, m->h_r, PW(m, m->dec_ln_w), Nt, D);

    be->i->zero(be, m->d_mem, sizeof(real_t) * Ns * D);
    for (int l = c->n_dec - 1; l >= 0; l--) {
        s_layer_t *L = &m->dec[l];
        s_acts_t *a = &m->da[l];
        s_ffn_t f = {L->fc1_w, L->fc1_b, L->fc2_w, L->fc2_b};
        s_ffn_bwd(m, &f, a, a->ln3, a->x2, a->ln3_m, a->ln3_r, L->ln3_w, L->ln3_b, m->d_y, Nt);
        /* cross-attention */
        s_linear_bwd(m, m->d_a, 0, m->d_y, a->catt, PW(m, L->co_w), PG(m, L->co_w),
                     PG(m, L->co_b), Nt, D, D);
        be->i->zero(be, m->d_qkv, sizeof(real_t) * Nt * D);
        be->i->zero(be, m->d_kv, sizeof(real_t) * Ns * 2 * D);
        be_attn_t ac = s_attn_desc(m, B, T, S, a->cq, D, a->ckv, a->ckv + D, 2 * D, a->catt,
                                   m->src_len, 0, a->cp);
        be_attn_bwd_t g = {&ac, m->d_a, D, (int64_t)D * T, m->d_qkv, m->d_kv, m->d_kv + D};
        be->i->attn_bwd(be, &g);
        /* d mem += d_kv Wkv ; queries back through ln2 into the residual */
        s_linear_bwd(m, m->d_mem, 1, m->d_kv, m->mem, PW(m, L->ckv_w), PG(m, L->ckv_w),
                     PG(m, L->ckv_b), Ns, 2 * D, D);
        s_linear_bwd(m, m->d_a, 0, m->d_qkv, a->ln2, PW(m, L->cq_w), PG(m, L->cq_w),
                     PG(m, L->cq_b), Nt, D, D);
        be->i->layernorm_bwd(be, m->d_y, PG(m, L->ln2_w), PG(m, L->ln2_b), m->d_a, a->x1,
                             a->ln2_m, a->ln2_r, PW(m, L->ln2_w), Nt, D);
        s_self_bwd(m, L, a, m->d_y, B, T, NULL, 1);
    }
    /* decoder input embeddings */
    be->i->embed_bwd(be, PG(m, m->tok_emb), m->d_y, m->tgt_ids, Nt, D);
    be->i->embed_bwd(be, PG(m, m->dec_pos), m->d_y, m->tgt_pos, Nt, D);
    if (m->type_emb >= 0)
        be->i->embed_bwd(be, PG(m, m->type_emb), m->d_y, m->tgt_mod, Nt, D);

    /* encoder */
    be->i->zero(be, m->d_res, sizeof(real_t) * Ns * D);
    be->i->layernorm_bwd(be, m->d_res, PG(m, m->enc_ln_w), PG(m, m->enc_ln_b), m->d_mem,
                         m->ea[c->n_enc].x, m->mem_m, m->mem_r, PW(m, m->enc_ln_w), Ns, D);
    for (int l = c->n_enc - 1; l >= 0; l--) {
        s_layer_t *L = &m->enc[l];
        s_acts_t *a = &m->ea[l];
        s_enc_ffn_bwd(m, L, a, m->d_res, Ns);
        s_self_bwd(m, L, a, m->d_res, B, S, m->src_len, 0);
    }
    be->i->embed_bwd(be, PG(m, m->tok_emb), m->d_res, m->src_ids, Ns, D);
    be->i->embed_bwd(be, PG(m, m->enc_pos), m->d_res, m->src_pos, Ns, D);
    if (m->type_emb >= 0)
        be->i->embed_bwd(be, PG(m, m->type_emb), m->d_res, m->src_mod, Ns, D);
    for (int j = 0; j < S_NAD; j++)
        s_adapter_bwd(m, &m->ad[j], m->d_res, Ns);
}

double model_clip_grad(model_t *m, double max_norm) {
    backend_t *be = m->be;
    double norm = sqrt(be->i->sqnorm(be, m->G, m->numel));
    if (max_norm > 0) {
        /* torch.nn.utils.clip_grad_norm_: coef = max/(norm + 1e-6), applied when < 1 */
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1)
            be->i->scale(be, m->G, m->numel, (real_t)coef);
    }
    return norm;
}

void model_step(model_t *m, real_t lr) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    m->adam_t++;
    for (int i = 0; i < m->n_params; i++) {
        model_param_t *p = &m->params[i];
        /* Without decay_all, LayerNorm weights and biases (the 1-D tensors) are not
         * decayed, the usual choice for transformers. */
        real_t wd = (c->decay_all || p->ndim == 2) ? c->weight_decay : 0;
        be->i->adamw(be, p->w, p->g, p->m, p->v, p->numel, lr, c->beta1, c->beta2, c->eps, wd,
                     m->adam_t);
    }
}

double model_lr_at(const model_sched_t *s, int64_t step) {
    if (step < 0)
        step = 0;
    if (s->warmup > 0 && step < s->warmup)
        return s->lr_max * (double)(step + 1) / (double)s->warmup;
    if (step >= s->total || s->total <= s->warmup)
        return s->lr_min;
    double p = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    return s->lr_min + 0.5 * (s->lr_max - s->lr_min) * (1 + cos(3.14159265358979323846 * p));
}

/* ---- checkpoints ---- */

int model_save(model_t *m, const char *path, char *err, size_t errlen) {
    real_t *h = util_malloc(sizeof(real_t) * (m->numel ? m->numel : 1));
    model_buf_download(m, MODEL_W, h);
    st_tensor_t *ts = util_calloc(m->n_params, sizeof *ts);
    float *f32 = NULL;
#ifdef OFA_REAL_DOUBLE
    f32 = util_malloc(sizeof(float) * (m->numel ? m->numel : 1));
    for (int64_t i = 0; i < m->numel; i++)
        f32[i] = (float)h[i];
#else
    f32 = h;
#endif
    for (int i = 0; i < m->n_params; i++) {
        model_param_t *p = &m->params[i];
        ts[i].name = p->name;
        ts[i].dtype = ST_F32;
        ts[i].ndim = p->ndim;
        ts[i].shape[0] = p->shape[0];
        ts[i].shape[1] = p->shape[1];
        ts[i].data = f32 + p->offset;
        ts[i].nbytes = sizeof(float) * p->numel;
    }
    int rc = st_write(path, ts, m->n_params, NULL, NULL, 0, err, errlen);
    if ((void *)f32 != (void *)h)
        free(f32);
    free(h);
    free(ts);
    return rc;
}

int model_load(model_t *m, const char *path, char *err, size_t errlen) {
    st_file_t *f = st_open(path, err, errlen);
    if (!f)
        return -1;
    real_t *h = util_malloc(sizeof(real_t) * (m->numel ? m->numel : 1));
    model_buf_download(m, MODEL_W, h);
    float *tmp = NULL;
    int rc = 0;
    for (int i = 0; i < m->n_params && rc == 0; i++) {
        model_param_t *p = &m->params[i];
        const st_tensor_t *t = st_find(f, p->name);
        if (!t) {
            rc = util_err(err, errlen, "%s: tensor '%s' missing", path, p->name);
            break;
        }
        int ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] &&
                 (p->ndim == 1 || t->shape[1] == p->shape[1]);
        if (!ok) {
            rc = util_err(err, errlen, "%s: tensor '%s' has shape (%lld%s%lld), the model wants "
                          "(%lld%s%lld)", path, p->name, (long long)t->shape[0],
                          t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                          (long long)p->shape[0], p->ndim > 1 ? ", " : "",
                          p->ndim > 1 ? (long long)p->shape[1] : 0LL);
            break;
        }
        tmp = util_realloc(tmp, sizeof(float) * p->numel);
        if (st_to_f32(t, tmp, p->numel, err, errlen)) {
            rc = -1;
            break;
        }
        for (int64_t j = 0; j < p->numel; j++)
            h[p->offset + j] = tmp[j];
    }
    if (rc == 0)
        model_buf_upload(m, MODEL_W, h);
    free(tmp);
    free(h);
    st_close(&f);
    return rc;
}

/* ---- generation: KV cache ---- */

struct model_cache_t {
    model_t *m;
    int max_rows, max_src, max_len;
    int rows, len, S;        /* current rows, tokens fed, source length of the encode */
    real_t **k, **v;         /* per decoder layer: (max_rows, max_len, D) self K / V */
    real_t **ckv;            /* per decoder layer: (max_rows, max_src, 2D) cross K|V, one
                                per encoded source (not per row) */
    int32_t *src_len;        /* (max_rows) backend: length of each encoded source */
    int32_t *src_map;        /* (max_rows) backend: row -> its encoded source */
    int32_t *h_src_map;      /* (max_rows) host copy */
    int32_t *idx;            /* (max_rows) backend: reorder indices */
    int32_t *tok;            /* (max_rows) backend: fed tokens */
    int32_t *pos;            /* (max_rows) backend: position ids */
    int32_t *mod;            /* (max_rows) backend: MOD_TEXT */
    real_t *ones;            /* (max_rows) 1.0: bias adds into strided outputs via gemm */
    real_t *y, *ln, *q, *att, *fc, *lg;   /* step scratch: (rows, D|3D|F|V) */
    real_t *tmp;             /* reorder scratch: (max_rows * max(max_len*D, max_src*2D)) */
};

model_cache_t *model_cache_new(model_t *m, int max_rows, int max_src, int max_len, char *err,
                               size_t errlen) {
    const model_config_t *c = &m->c;
    backend_t *be = m->be;
    if (max_rows <= 0 || max_src <= 0 || max_len <= 0 || max_src > c->max_src ||
        max_len > c->max_tgt) {
        util_err(err, errlen, "model cache: rows %d, source %d, length %d must be positive and "
                 "within the model's max_src %d / max_tgt %d", max_rows, max_src, max_len,
                 c->max_src, c->max_tgt);
        return NULL;
    }
    int64_t D = c->d_model, L = c->n_dec > 0 ? c->n_dec : 1;
    model_cache_t *kv = util_calloc(1, sizeof *kv);
    kv->m = m;
    kv->max_rows = max_rows, kv->max_src = max_src, kv->max_len = max_len;
    kv->k = util_calloc(L, sizeof *kv->k);
    kv->v = util_calloc(L, sizeof *kv->v);
    kv->ckv = util_calloc(L, sizeof *kv->ckv);
    int ok = 1;
#define CA(p, bytes) do { (p) = be->i->alloc(be, (bytes)); ok = ok && (p); } while (0)
    for (int l = 0; l < c->n_dec; l++) {
        CA(kv->k[l], sizeof(real_t) * max_rows * max_len * D);
        CA(kv->v[l], sizeof(real_t) * max_rows * max_len * D);
        CA(kv->ckv[l], sizeof(real_t) * max_rows * max_src * 2 * D);
    }
    CA(kv->src_len, sizeof(int32_t) * max_rows);
    CA(kv->src_map, sizeof(int32_t) * max_rows);
    CA(kv->idx, sizeof(int32_t) * max_rows);
    CA(kv->tok, sizeof(int32_t) * max_rows);
    CA(kv->pos, sizeof(int32_t) * max_rows);
    CA(kv->mod, sizeof(int32_t) * max_rows);
    CA(kv->ones, sizeof(real_t) * max_rows);
    CA(kv->y, sizeof(real_t) * max_rows * D);
    CA(kv->ln, sizeof(real_t) * max_rows * D);
    CA(kv->q, sizeof(real_t) * max_rows * D);
    CA(kv->att, sizeof(real_t) * max_rows * D);
    CA(kv->fc, sizeof(real_t) * max_rows * c->d_ffn);
    CA(kv->lg, sizeof(real_t) * max_rows * c->vocab);
    CA(kv->tmp, sizeof(real_t) * max_rows * max_len * D);
#undef CA
    kv->h_src_map = util_calloc(max_rows, sizeof *kv->h_src_map);
    if (!ok) {
        model_cache_destroy(&kv);
        util_err(err, errlen, "model cache: out of memory for %d rows", max_rows);
        return NULL;
    }
    real_t *one = util_malloc(sizeof *one * max_rows);
    int32_t *mod = util_malloc(sizeof *mod * max_rows);
    for (int i = 0; i < max_rows; i++)
        one[i] = 1, mod[i] = MODEL_MOD_TEXT;
    be->i->upload(be, kv->ones, one, sizeof *one * max_rows);
    be->i->upload(be, kv->mod, mod, sizeof *mod * max_rows);
    free(one);
    free(mod);
    return kv;
}

void model_cache_destroy(model_cache_t **self_p) {
    if (!self_p || !*self_p)
        return;
    model_cache_t *kv = *self_p;
    backend_t *be = kv->m->be;
    int L = kv->m->c.n_dec;
    void *ps[] = {kv->src_len, kv->src_map, kv->idx, kv->tok, kv->pos, kv->mod, kv->ones, kv->y, kv->ln,
                  kv->q, kv->att, kv->fc, kv->lg, kv->tmp};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        if (ps[i])
            be->i->free(be, ps[i]);
    for (int l = 0; l < L; l++) {
        if (kv->k[l]) be->i->free(be, kv->k[l]);
        if (kv->v[l]) be->i->free(be, kv->v[l]);
        if (kv->ckv[l]) be->i->free(be, kv->ckv[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->ckv);
    free(kv->h_src_map);
    free(kv);
    *self_p = NULL;
}

int model_cache_rows(const model_cache_t *c) { return c->rows; }
int model_cache_len(const model_cache_t *c) { return c->len; }

/* y (n, O) with row stride ldy += ones (n,1) b (1,O): a bias add into strided rows. */
static void s_bias_strided(model_t *m, model_cache_t *kv, real_t *y, int ldy, const real_t *b,
                           int n, int O) {
    m->be->i->gemm(m->be, 0, 0, n, O, 1, 1, kv->ones, 1, b, O, 1, y, ldy);
}

int model_encode(model_t *m, const model_batch_t *b, model_cache_t *kv, char *err,
                 size_t errlen) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    model_batch_t src = *b;
    src.T = 0;
    src.tgt_in = src.tgt_out = NULL;
    if (model_batch_check(m, &src, err, errlen))
        return -1;
    if (b->B > kv->max_rows || b->S > kv->max_src)
        return util_err(err, errlen, "model cache: batch of %d rows x %d positions exceeds the "
                        "cache (%d x %d)", b->B, b->S, kv->max_rows, kv->max_src);
    /* The encoder runs in the training arena (it clobbers the last forward's
     * activations) with T = 1 so that the arena exists. */
    if (s_reserve(m, b->B, b->S, 1, err, errlen))
        return -1;
    int B = b->B, S = b->S, D = c->d_model;
    m->B = B, m->S = S, m->T = 0;
    m->logits_valid = 0;
    if (s_embed_src(m, b, err, errlen))
        return -1;
    s_encoder(m, B, S);
    /* cross K|V of every decoder layer, straight into the cache rows */
    for (int l = 0; l < c->n_dec; l++) {
        const s_layer_t *L = &m->dec[l];
        for (int i = 0; i < B; i++) {
            real_t *dst = kv->ckv[l] + (int64_t)i * kv->max_src * 2 * D;
            be->i->gemm(be, 0, 1, S, 2 * D, D, 1, m->mem + (int64_t)i * S * D, D,
                        PW(m, L->ckv_w), D, 0, dst, 2 * D);
            be->i->bias_add(be, dst, PW(m, L->ckv_b), S, 2 * D);
        }
    }
    be->i->upload(be, kv->src_len, b->src_len, sizeof(int32_t) * B);
    for (int i = 0; i < B; i++)
        kv->h_src_map[i] = i;
    be->i->upload(be, kv->src_map, kv->h_src_map, sizeof(int32_t) * B);
    kv->rows = B;
    kv->len = 0;
    kv->S = S;
    return 0;
}

int model_decode_step(model_t *m, model_cache_t *kv, int n, const int32_t *tokens,
                      real_t *logits, char *err, size_t errlen) {
    backend_t *be = m->be;
    const model_config_t *c = &m->c;
    int D = c->d_model, F = c->d_ffn, V = c->vocab;
    if (n != kv->rows || n <= 0)
        return util_err(err, errlen, "decode step: %d tokens for %d cache rows", n, kv->rows);
    if (kv->len >= kv->max_len)
        return util_err(err, errlen, "decode step: cache full (%d tokens)", kv->max_len);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return util_err(err, errlen, "decode step: token %d of row %d outside [0, %d)",
                            tokens[i], i, V);
    int t = kv->len;
    int32_t *pos = util_malloc(sizeof *pos * n);
    for (int i = 0; i < n; i++)
        pos[i] = t;
    be->i->upload(be, kv->tok, tokens, sizeof(int32_t) * n);
    be->i->upload(be, kv->pos, pos, sizeof(int32_t) * n);
    free(pos);
    real_t *y = kv->y;
    be->i->embed_fwd(be, y, PW(m, m->tok_emb), kv->tok, n, D, 0);
    be->i->embed_fwd(be, y, PW(m, m->dec_pos), kv->pos, n, D, 1);
    if (m->type_emb >= 0)
        be->i->embed_fwd(be, y, PW(m, m->type_emb), kv->mod, n, D, 1);
    /* Scratch mean/rstd: one (n) pair, borrowed from the q buffer's tail is not safe, so
     * use the attention buffer rows (n <= max_rows, each row D >= 2 floats). */
    real_t *mu = kv->att, *rs = kv->att + kv->max_rows;
    int64_t self_bs = (int64_t)kv->max_len * D, cross_bs = (int64_t)kv->max_src * 2 * D;
    for (int l = 0; l < c->n_dec; l++) {
        const s_layer_t *L = &m->dec[l];
        /* self-attention: q into kv->q, k and v straight into the cache at position t */
        be->i->layernorm_fwd(be, kv->ln, mu, rs, y, PW(m, L->ln1_w), PW(m, L->ln1_b), n, D,
                             c->ln_eps);
        const real_t *Wq = PW(m, L->qkv_w), *bq = PW(m, L->qkv_b);
        s_linear(m, kv->q, D, kv->ln, D, Wq, bq, n, D, D, 0);
        real_t *kdst = kv->k[l] + (int64_t)t * D, *vdst = kv->v[l] + (int64_t)t * D;
        be->i->gemm(be, 0, 1, n, D, D, 1, kv->ln, D, Wq + (int64_t)D * D, D, 0, kdst,
                    (int)self_bs);
        s_bias_strided(m, kv, kdst, (int)self_bs, bq + D, n, D);
        be->i->gemm(be, 0, 1, n, D, D, 1, kv->ln, D, Wq + (int64_t)2 * D * D, D, 0, vdst,
                    (int)self_bs);
        s_bias_strided(m, kv, vdst, (int)self_bs, bq + 2 * D, n, D);
        be_attn_t a = s_attn_desc(m, n, 1, t + 1, kv->q, D, kv->k[l], kv->v[l], D, kv->fc, NULL,
                                  0, NULL);
        a.k_bs = a.v_bs = self_bs;
        /* the attention output goes to fc scratch (rows of D), then o adds to y */
        be->i->attn_fwd(be, &a);
        s_linear(m, y, D, kv->fc, D, PW(m, L->o_w), PW(m, L->o_b), n, D, D, 1);
        /* cross-attention over the cached encoder keys/values */
        be->i->layernorm_fwd(be, kv->ln, mu, rs, y, PW(m, L->ln2_w), PW(m, L->ln2_b), n, D,
                             c->ln_eps);
        s_linear(m, kv->q, D, kv->ln, D, PW(m, L->cq_w), PW(m, L->cq_b), n, D, D, 0);
        be_attn_t ca = s_attn_desc(m, n, 1, kv->S, kv->q, D, kv->ckv[l], kv->ckv[l] + D, 2 * D,
                                   kv->fc, kv->src_len, 0, NULL);
        ca.k_bs = ca.v_bs = cross_bs;
        ca.kv_map = kv->src_map;
        be->i->attn_fwd(be, &ca);
        s_linear(m, y, D, kv->fc, D, PW(m, L->co_w), PW(m, L->co_b), n, D, D, 1);
        /* feed-forward */
        be->i->layernorm_fwd(be, kv->ln, mu, rs, y, PW(m, L->ln3_w), PW(m, L->ln3_b), n, D,
                             c->ln_eps);
        s_linear(m, kv->fc, F, kv->ln, D, PW(m, L->fc1_w), PW(m, L->fc1_b), n, F, D, 0);
        be->i->gelu_fwd(be, kv->fc, kv->fc, (int64_t)n * F);
        s_linear(m, y, D, kv->fc, F, PW(m, L->fc2_w), PW(m, L->fc2_b), n, D, F, 1);
    }
    be->i->layernorm_fwd(be, kv->ln, mu, rs, y, PW(m, m->dec_ln_w), PW(m, m->dec_ln_b), n, D,
                         c->ln_eps);
    be->i->gemm(be, 0, 1, n, V, D, 1, kv->ln, D, PW(m, m->tok_emb), D, 0, kv->lg, V);
    be->i->download(be, logits, kv->lg, sizeof(real_t) * n * V);
    kv->len++;
    return 0;
}

/* Reorder one per-row buffer of `cols` elements per row: gather into the scratch and
 * swap the two pointers (the old buffer becomes the next scratch), so nothing is copied
 * twice. */
static void s_reorder_buf(model_t *m, model_cache_t *kv, real_t **buf, int n_new, int64_t cols) {
    m->be->i->gather_rows(m->be, kv->tmp, *buf, kv->idx, n_new, cols);
    real_t *t = *buf;
    *buf = kv->tmp;
    kv->tmp = t;
}

int model_cache_reorder(model_t *m, model_cache_t *kv, int n_new, const int32_t *src_rows,
                        char *err, size_t errlen) {
    backend_t *be = m->be;
    int D = m->c.d_model;
    if (n_new <= 0 || n_new > kv->max_rows)
        return util_err(err, errlen, "cache reorder: %d rows (cache holds at most %d)", n_new,
                        kv->max_rows);
    for (int i = 0; i < n_new; i++)
        if (src_rows[i] < 0 || src_rows[i] >= kv->rows)
            return util_err(err, errlen, "cache reorder: source row %d of new row %d outside "
                            "[0, %d)", src_rows[i], i, kv->rows);
    be->i->upload(be, kv->idx, src_rows, sizeof(int32_t) * n_new);
    /* Self-attention K/V move with their rows. The cross K/V stay where model_encode put
     * them, one per source: a row only changes which source it points at, so beam search
     * never copies the (large) encoder keys. */
    for (int l = 0; l < m->c.n_dec; l++) {
        s_reorder_buf(m, kv, &kv->k[l], n_new, (int64_t)kv->max_len * D);
        s_reorder_buf(m, kv, &kv->v[l], n_new, (int64_t)kv->max_len * D);
    }
    int32_t *nm = util_malloc(sizeof *nm * n_new);
    for (int i = 0; i < n_new; i++)
        nm[i] = kv->h_src_map[src_rows[i]];
    memcpy(kv->h_src_map, nm, sizeof *nm * n_new);
    be->i->upload(be, kv->src_map, nm, sizeof *nm * n_new);
    free(nm);
    kv->rows = n_new;
    return 0;
}
