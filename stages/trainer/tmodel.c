/* tmodel.c: see tmodel.h. The only file of the trainer that calls model/model.h. */
#include "tmodel.h"

#include <string.h>
#include <sys/resource.h>

#include "comm.h"
#include "model.h"
#ifdef OFA_HAVE_CUDA
#include "backend_cuda.h"
#endif

_Static_assert(sizeof(real_t) == sizeof(float), "the trainer links the float build of the model");
#include "util.h"

struct tmodel_t {
    backend_t *be;
    model_t *m;
    int64_t numel;
    float *hw, *hm, *hv;      /* host mirrors of the flat W/M/V buffers (lazy) */
    float *acc, *hg;          /* (numel) gradient sum of an accumulated step, and one
                               * batch's gradient (lazy) */
    model_cache_t *cache;     /* during generation */
    int cache_rows, cache_src, cache_len;
    char (*names)[MODEL_MAX_NAME];   /* (n_params) parameter names */
    comm_t *comm;             /* the trainer group (borrowed), or NULL */
    int64_t group_step;       /* largest batch step any rank trained in a group step */
    int stop_here;            /* this rank was asked to stop (tmodel_group_stop) */
    int stop_seen;            /* a group step saw a rank that was asked to stop */
    float *hgrp;              /* (numel) host staging of the gradient for a host-memory
                               * group over a device backend (lazy) */
    int on_gpu;               /* the backend is cuda */
};

int64_t tmodel_peak_mem(const tmodel_t *self, const char **kind) {
#ifdef OFA_HAVE_CUDA
    if (self->on_gpu) {
        *kind = "gpu";
        return (int64_t)backend_cuda_peak_bytes(self->be);
    }
#endif
    struct rusage ru;
    *kind = "rss";
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (int64_t)ru.ru_maxrss * 1024;   /* Linux reports kilobytes */
}

/* The compute backend: cuda when asked for (or, with auto, when this build has it and a
 * GPU is present), else the CPU reference. 0 or -1 with err. */
static int s_backend(tmodel_t *self, const tmodel_cfg_t *cfg, const char *be, char *err,
                     size_t errlen) {
#ifdef OFA_HAVE_CUDA
    char why[256] = "";
    if (!strcmp(be, "cuda") || (!strcmp(be, "auto") && backend_cuda_devices(why, sizeof why) > 0)) {
        const char *pr = cfg->precision ? cfg->precision : "auto";
        backend_cuda_math_t math = !strcmp(pr, "fp32") ? BACKEND_CUDA_FP32 : BACKEND_CUDA_BF16;
        self->be = backend_cuda_new(cfg->device, math, why, sizeof why);
        if (!self->be)
            return util_err(err, errlen, "trainer.backend cuda: %s", why);
        self->on_gpu = 1;
        return 0;
    }
#endif
    self->be = backend_cpu_new(cfg->threads > 0 ? cfg->threads : 1);
    if (!self->be)
        return util_err(err, errlen, "cannot start the cpu backend");
    return 0;
}

/* The plan's model section overrides the preset's positions and image grid: the preset
 * knows the sizes of DESIGN.md, the plan knows this run's inputs (max lengths after the
 * tokenizer's truncation rule, image side / patch). */
tmodel_t *tmodel_new(const tmodel_cfg_t *cfg, char *err, size_t errlen) {
    const char *be = cfg->backend ? cfg->backend : "cpu";
    if (strcmp(be, "cpu") && strcmp(be, "auto") && strcmp(be, "cuda")) {
        util_err(err, errlen, "trainer.backend '%s': unknown (cpu, cuda or auto)", be);
        return NULL;
    }
#ifndef OFA_HAVE_CUDA
    if (!strcmp(be, "cuda")) {
        util_err(err, errlen, "trainer.backend 'cuda': this build has the cpu backend only "
                 "(configure with CUDA: OFA_CUDA=ON, see docs/cuda.md)");
        return NULL;
    }
#endif
    model_config_t c;
    if (model_config_preset(&c, cfg->size ? cfg->size : "nano", cfg->vocab, err, errlen) != 0)
        return NULL;
    if (cfg->max_src_len > 0)
        c.max_src = cfg->max_src_len;
    if (cfg->max_tgt_len > 0)
        c.max_tgt = cfg->max_tgt_len;
    if (cfg->patch > 0) {
        c.patch_dim = cfg->patch * cfg->patch * 3;
        if (cfg->image_size > 0) {
            if (cfg->image_size % cfg->patch != 0) {
                util_err(err, errlen, "model: image_size %d is not a multiple of patch %d",
                         cfg->image_size, cfg->patch);
                return NULL;
            }
            c.img_grid = cfg->image_size / cfg->patch;
        }
    }
    c.aud_dim = cfg->aud_dim;
    c.mot_dim = cfg->mot_dim;
    c.mod_experts = cfg->mod_experts;
    if (cfg->vid_patch > 0) {
        c.vid_dim = cfg->vid_patch * cfg->vid_patch * 3;
        c.vid_grid = cfg->vid_grid;
        c.vid_frames = cfg->vid_frames;
    }
    c.weight_decay = (float)cfg->weight_decay;
    c.label_smoothing = (float)cfg->label_smoothing;
    if (model_config_check(&c, err, errlen) != 0)
        return NULL;
    tmodel_t *self = util_calloc(1, sizeof *self);
    if (s_backend(self, cfg, be, err, errlen) != 0) {
        free(self);
        return NULL;
    }
    self->m = model_new(&c, self->be, cfg->seed, err, errlen);
    if (!self->m) {
        tmodel_destroy(&self);
        return NULL;
    }
    self->numel = model_numel(self->m);
    int np = model_n_params(self->m);
    self->names = util_calloc(np ? np : 1, MODEL_MAX_NAME);
    for (int i = 0; i < np; i++) {
        model_param_t p;
        OFA_ASSERT(model_param(self->m, i, &p) == 0);
        snprintf(self->names[i], MODEL_MAX_NAME, "%s", p.name);
    }
    return self;
}

void tmodel_destroy(tmodel_t **self_p) {
    if (!self_p || !*self_p)
        return;
    tmodel_t *self = *self_p;
    model_cache_destroy(&self->cache);
    model_destroy(&self->m);
    backend_destroy(&self->be);
    free(self->hw);
    free(self->hm);
    free(self->hv);
    free(self->acc);
    free(self->hg);
    free(self->names);
    free(self->hgrp);
    free(self);
    *self_p = NULL;
}

int tmodel_vocab(const tmodel_t *self) { return model_config(self->m)->vocab; }

static void s_batch(const trainer_batch_t *b, int r0, int n, model_batch_t *mb) {
    memset(mb, 0, sizeof *mb);
    mb->B = n;
    mb->S = b->S;
    mb->T = b->T;
    mb->src_tok = b->src_tok + (size_t)r0 * b->S;
    mb->src_mod = b->src_mod ? b->src_mod + (size_t)r0 * b->S : NULL;
    mb->src_len = b->src_len + r0;
    mb->tgt_in = b->tgt_in ? b->tgt_in + (size_t)r0 * b->T : NULL;
    mb->tgt_out = b->tgt_out ? b->tgt_out + (size_t)r0 * b->T : NULL;
    mb->img = b->img ? b->img + (size_t)r0 * b->Np * b->patch_dim : NULL;
    mb->Np = b->img ? b->Np : 0;
    mb->grid = b->img ? b->grid : 0;
    if (b->aud) {
        mb->aud = b->aud + (size_t)r0 * b->Fa * b->aud_dim;
        mb->Fa = b->Fa, mb->aud_dim = b->aud_dim;
    }
    if (b->vid) {
        mb->vid = b->vid + (size_t)r0 * b->Nf * b->Npv * b->vid_dim;
        mb->Nf = b->Nf, mb->Npv = b->Npv, mb->vid_grid = b->vid_grid, mb->vid_dim = b->vid_dim;
    }
    if (b->mot) {
        mb->mot = b->mot + (size_t)r0 * b->Fm * b->mot_dim;
        mb->Fm = b->Fm, mb->mot_dim = b->mot_dim;
    }
}

/* The adapters follow the plan's source slots, so a plan without audio, video or motion
 * builds exactly the model (and reads exactly the checkpoints) it did before they
 * existed. Each slot's own attributes win over the plan's defaults, as in the tiers. */
int tmodel_cfg_adapters(tmodel_cfg_t *cfg, const plan_t *plan, char *err, size_t errlen) {
    cfg->aud_dim = cfg->vid_patch = cfg->vid_grid = cfg->vid_frames = cfg->mot_dim = 0;
    /* the experts follow the adapters (one per adapter, and text), so they are set here */
    cfg->mod_experts = plan->model.modality_experts;
    for (int t = 0; t < plan->ntasks; t++) {
        const plan_task_t *pt = &plan->tasks[t];
        const taskplan_t *tp = pt->plan;
        if (!tp)
            continue;
        for (int a = 0; a < tp->ntmpls; a++)
            for (int i = 0; i < tp->tmpls[a].nslots; i++) {
                const taskplan_slot_t *sl = &tp->tmpls[a].slots[i];
                if (sl->target)
                    continue;
                if (sl->mod == MOD_AUDIO) {
                    int mels = sl->in->n_mels ? sl->in->n_mels : tp->opts.n_mels;
                    int dim = plan->model.audio_stack * mels;
                    if (cfg->aud_dim && cfg->aud_dim != dim)
                        return util_err(err, errlen, "task %s: AUDIO slot with %d mel bins, "
                                        "another task's has %d (one audio adapter)", pt->name,
                                        mels, cfg->aud_dim / plan->model.audio_stack);
                    cfg->aud_dim = dim;
                } else if (sl->mod == MOD_VIDEO) {
                    int size = sl->in->image_size ? sl->in->image_size : tp->opts.image_size;
                    int patch = sl->in->patch ? sl->in->patch : tp->opts.patch;
                    int frames = sl->in->frames ? sl->in->frames : tp->opts.frames;
                    if (cfg->vid_patch && cfg->vid_patch != patch)
                        return util_err(err, errlen, "task %s: VIDEO slot with patch %d, "
                                        "another task's has %d (one video adapter)", pt->name,
                                        patch, cfg->vid_patch);
                    cfg->vid_patch = patch;
                    if (patch > 0 && size / patch > cfg->vid_grid)
                        cfg->vid_grid = size / patch;
                    if (frames > cfg->vid_frames)
                        cfg->vid_frames = frames;
                } else if (sl->mod == MOD_MOTION) {
                    if (plan->model.motion_channels <= 0)
                        return util_err(err, errlen, "task %s has a MOTION source slot: set "
                                        "model.motion_channels to the motion tier's channels "
                                        "per frame (189 for the CMU skeleton)", pt->name);
                    cfg->mot_dim = plan->model.motion_channels;
                }
            }
    }
    if (cfg->vid_patch > 0) {
        if (plan->model.video_frames > cfg->vid_frames)
            cfg->vid_frames = plan->model.video_frames;
        int g = plan->model.patch == cfg->vid_patch ? plan->model.image_size / cfg->vid_patch : 0;
        if (g > cfg->vid_grid)
            cfg->vid_grid = g;
    }
    return 0;
}

int tmodel_loss(tmodel_t *self, const trainer_batch_t *b, float *loss, int64_t *ntok,
                char *err, size_t errlen) {
    model_batch_t mb;
    s_batch(b, 0, b->B, &mb);
    model_out_t out;
    if (model_forward(self->m, &mb, &out, NULL, err, errlen) != 0)
        return -1;
    *loss = (float)out.loss;
    *ntok = out.ntok;
    return 0;
}

static int s_group_reduce(tmodel_t *self, int idle, int64_t step, float *loss, int64_t *ntok,
                          double *h, char *err, size_t errlen);

int tmodel_train(tmodel_t *self, const trainer_batch_t *b, double lr, double clip,
                 float *loss, int64_t *ntok, char *err, size_t errlen) {
    if (tmodel_loss(self, b, loss, ntok, err, errlen) != 0)
        return -1;
    model_backward(self->m);
    double h[4];
    if (s_group_reduce(self, 0, b->step, loss, ntok, h, err, errlen) != 0)
        return -1;
    model_clip_grad(self->m, clip);
    model_step(self->m, (float)lr);
    return 0;
}

/* The sum lives in host memory and each batch's gradient is downloaded into it: the
 * model's backward overwrites G (it zeroes it first), and a copy of numel floats per
 * batch is small next to a forward and backward pass. On the GPU this costs a transfer
 * per micro-batch; an on-device sum would avoid it once that backend trains here. */
void tmodel_accum_begin(tmodel_t *self) {
    if (!self->acc) {
        self->acc = util_malloc(sizeof(float) * self->numel);
        self->hg = util_malloc(sizeof(float) * self->numel);
    }
    memset(self->acc, 0, sizeof(float) * self->numel);
}

int tmodel_grad(tmodel_t *self, const trainer_batch_t *b, float *out, char *err, size_t errlen) {
    float loss;
    int64_t ntok;
    if (tmodel_loss(self, b, &loss, &ntok, err, errlen) != 0)
        return -1;
    model_backward(self->m);
    model_buf_download(self->m, MODEL_G, out);
    return 0;
}

int tmodel_accum_add(tmodel_t *self, const trainer_batch_t *b, double weight, float *loss,
                     int64_t *ntok, char *err, size_t errlen) {
    OFA_ASSERT(self->acc);
    if (tmodel_loss(self, b, loss, ntok, err, errlen) != 0)
        return -1;
    model_backward(self->m);
    model_buf_download(self->m, MODEL_G, self->hg);
    float w = (float)weight;
    for (int64_t i = 0; i < self->numel; i++)
        self->acc[i] += w * self->hg[i];
    return 0;
}

void tmodel_accum_step(tmodel_t *self, double lr, double clip) {
    OFA_ASSERT(self->acc);
    model_buf_upload(self->m, MODEL_G, self->acc);
    model_clip_grad(self->m, clip);
    model_step(self->m, (float)lr);
}

const float *tmodel_accum_grad(const tmodel_t *self) { return self->acc; }
int64_t tmodel_numel(const tmodel_t *self) { return self->numel; }

/* Checkpoints go through host copies of the flat buffers because backend memory is
 * device memory on a GPU backend; on the CPU this is one memcpy per buffer, a small cost
 * next to writing the file. */
void tmodel_sync_host(tmodel_t *self) {
    if (!self->hw) {
        self->hw = util_malloc(sizeof(float) * self->numel);
        self->hm = util_malloc(sizeof(float) * self->numel);
        self->hv = util_malloc(sizeof(float) * self->numel);
    }
    model_buf_download(self->m, MODEL_W, self->hw);
    model_buf_download(self->m, MODEL_M, self->hm);
    model_buf_download(self->m, MODEL_V, self->hv);
}

void tmodel_sync_device(tmodel_t *self) {
    OFA_ASSERT(self->hw);
    model_buf_upload(self->m, MODEL_W, self->hw);
    model_buf_upload(self->m, MODEL_M, self->hm);
    model_buf_upload(self->m, MODEL_V, self->hv);
}

int tmodel_n_params(const tmodel_t *self) { return model_n_params(self->m); }

void tmodel_param(tmodel_t *self, int i, tmodel_param_t *out) {
    OFA_ASSERT(self->hw);
    model_param_t p;
    OFA_ASSERT(model_param(self->m, i, &p) == 0);
    memset(out, 0, sizeof *out);
    out->name = self->names[i];   /* model_param gives a copy: keep ours */
    out->ndim = p.ndim;
    OFA_ASSERT(p.ndim >= 0 && p.ndim <= (int)(sizeof p.shape / sizeof p.shape[0]));
    for (int d = 0; d < p.ndim; d++)
        out->shape[d] = p.shape[d];
    out->numel = p.numel;
    out->w = self->hw + p.offset;
    out->m = self->hm + p.offset;
    out->v = self->hv + p.offset;
}

int tmodel_load_weights(tmodel_t *self, const ckpt_file_t *f, const char *what, char *err,
                        size_t errlen) {
    int n = model_n_params(self->m);
    for (int i = 0; i < n; i++) {
        model_param_t p;
        OFA_ASSERT(model_param(self->m, i, &p) == 0);
        const ckpt_tensor_t *t = ckpt_file_find(f, self->names[i]);
        if (!t || t->dtype != CKPT_F32 || t->nbytes != sizeof(float) * (size_t)p.numel)
            return util_err(err, errlen, "%s: weight %s missing or of another shape (was the "
                            "checkpoint made with another model size or BPE?)", what,
                            self->names[i]);
    }
    tmodel_sync_host(self);
    for (int i = 0; i < n; i++) {
        model_param_t p;
        model_param(self->m, i, &p);
        const ckpt_tensor_t *t = ckpt_file_find(f, self->names[i]);
        memcpy(self->hw + p.offset, t->data, t->nbytes);
    }
    tmodel_sync_device(self);
    return 0;
}

int64_t tmodel_adam_t(const tmodel_t *self) { return model_adam_t(self->m); }
void tmodel_set_adam_t(tmodel_t *self, int64_t t) { model_set_adam_t(self->m, t); }

static int s_step(void *ctx, int n, const int32_t *tokens, float *logits, char *err, size_t errlen) {
    tmodel_t *self = ctx;
    return model_decode_step(self->m, self->cache, n, tokens, logits, err, errlen);
}

static int s_reorder(void *ctx, int n_new, const int32_t *src, char *err, size_t errlen) {
    tmodel_t *self = ctx;
    return model_cache_reorder(self->m, self->cache, n_new, src, err, errlen);
}

/* Rows [row0, row0+n) of a batch are contiguous in every (B, ...) array, so the model
 * sees them as a smaller batch through offset pointers: no copy per chunk. */
int tmodel_gen_begin(tmodel_t *self, const trainer_batch_t *b, int row0, int n, int max_rows,
                     int max_len, gen_step_i *st, char *err, size_t errlen) {
    if (max_rows < n)
        max_rows = n;
    /* Keep the cache while it is big enough: evaluation calls this per batch chunk. */
    if (!self->cache || self->cache_rows < max_rows || self->cache_src < b->S ||
        self->cache_len < max_len) {
        model_cache_destroy(&self->cache);
        int rows = max_rows > self->cache_rows ? max_rows : self->cache_rows;
        int src = b->S > self->cache_src ? b->S : self->cache_src;
        int len = max_len > self->cache_len ? max_len : self->cache_len;
        self->cache = model_cache_new(self->m, rows, src, len, err, errlen);
        if (!self->cache)
            return -1;
        self->cache_rows = rows, self->cache_src = src, self->cache_len = len;
    }
    model_batch_t mb;
    s_batch(b, row0, n, &mb);
    mb.tgt_in = NULL;
    mb.tgt_out = NULL;
    if (model_encode(self->m, &mb, self->cache, err, errlen) != 0)
        return -1;
    *st = (gen_step_i){.ctx = self, .vocab = tmodel_vocab(self), .step = s_step, .reorder = s_reorder};
    return 0;
}

void tmodel_gen_end(tmodel_t *self) { (void)self; }

/* ---------------------------------------------------------------- trainer group */

void tmodel_set_comm(tmodel_t *self, comm_t *comm) {
    self->comm = comm;
    self->group_step = -1;
}

/* The flat gradient buffer (backend memory): parameter 0 sits at offset 0. */
static real_t *s_grad(tmodel_t *self) {
    model_param_t p;
    OFA_ASSERT(model_param(self->m, 0, &p) == 0 && p.offset == 0);
    return p.g;
}

/* All-reduce of the step's gradient (see tmodel.h). A header of doubles travels first:
 * {sum of loss-token counts, sum of losses, ranks with a batch, ranks idle, ranks asked
 * to stop, then one slot per rank with 1 + the batch step it trained (0: none)}; h (4
 * doubles) receives its first four. An idle rank contributes a zero gradient. A group
 * in host memory over a device backend stages the gradient through hgrp. One rank:
 * nothing to do. */
static int s_group_reduce(tmodel_t *self, int idle, int64_t step, float *loss, int64_t *ntok,
                          double *h, char *err, size_t errlen) {
    comm_t *c = self->comm;
    int world = c ? comm_world(c) : 1;
    if (world <= 1)
        return 0;
    double *hdr = util_calloc(5 + world, sizeof(double));
    hdr[0] = idle ? 0 : (double)*ntok;
    hdr[1] = idle ? 0 : (double)*loss * (double)*ntok;
    hdr[2] = !idle;
    hdr[3] = idle;
    hdr[4] = self->stop_here;
    hdr[5 + comm_rank(c)] = idle ? 0 : (double)step + 1;
    int rc = comm_allreduce_sum_f64(c, hdr, 5 + world, err, errlen);
    for (int r = 0; rc == 0 && r < world; r++)
        if (hdr[5 + r] > 0 && (int64_t)hdr[5 + r] - 1 > self->group_step)
            self->group_step = (int64_t)hdr[5 + r] - 1;
    if (rc == 0 && hdr[4] > 0)
        self->stop_seen = 1;
    memcpy(h, hdr, sizeof(double) * 4);
    free(hdr);
    if (rc != 0)
        return -1;
    backend_t *be = self->be;
    real_t *G = s_grad(self);
    if (idle)
        be->i->zero(be, G, sizeof(real_t) * self->numel);
    else
        be->i->scale(be, G, self->numel, (real_t)*ntok);   /* grad of this rank's loss sum */
    int host = !comm_device_buffers(c) && strcmp(be->i->name, "cpu") != 0;
    if (host) {
        if (!self->hgrp)
            self->hgrp = util_malloc(sizeof(float) * self->numel);
        be->i->download(be, self->hgrp, G, sizeof(float) * self->numel);
    }
    if (comm_allreduce_sum(c, host ? self->hgrp : G, self->numel, err, errlen) != 0)
        return -1;
    if (host)
        be->i->upload(be, G, self->hgrp, sizeof(float) * self->numel);
    /* Back to the gradient of the group's mean loss (a group with no loss token keeps
     * the zero gradient, as one rank would). */
    if (h[0] > 0)
        be->i->scale(be, G, self->numel, (real_t)(1.0 / h[0]));
    *ntok = (int64_t)h[0];
    *loss = h[0] > 0 ? (float)(h[1] / h[0]) : 0;
    return 0;
}

int64_t tmodel_group_cursor(const tmodel_t *self, int64_t step) {
    if (!self->comm || comm_world(self->comm) <= 1)
        return step;
    return self->group_step > step ? self->group_step : step;
}

int tmodel_train_idle(tmodel_t *self, double lr, double clip, int *stepped, int *all_done,
                      char *err, size_t errlen) {
    float loss = 0;
    int64_t ntok = 0;
    double h[4];
    if (s_group_reduce(self, 1, -1, &loss, &ntok, h, err, errlen) != 0)
        return -1;
    int world = self->comm ? comm_world(self->comm) : 1;
    *stepped = world > 1 && h[2] > 0;
    *all_done = world <= 1 || h[3] >= world;
    if (*stepped) {
        model_clip_grad(self->m, clip);
        model_step(self->m, (float)lr);
    }
    return 0;
}

void tmodel_group_stop(tmodel_t *self) { self->stop_here = self->stop_seen = 1; }

int tmodel_group_stopping(const tmodel_t *self) { return self->stop_seen; }

int tmodel_group_bcast(tmodel_t *self, char *err, size_t errlen) {
    comm_t *c = self->comm;
    if (!c || comm_world(c) <= 1)
        return 0;
    /* Through host memory whatever the backend: once per run, so simplicity wins. */
    tmodel_sync_host(self);
    size_t bytes = sizeof(float) * self->numel;
    double t = (double)model_adam_t(self->m);
    if (comm_bcast_host(c, self->hw, bytes, 0, err, errlen) != 0 ||
        comm_bcast_host(c, self->hm, bytes, 0, err, errlen) != 0 ||
        comm_bcast_host(c, self->hv, bytes, 0, err, errlen) != 0 ||
        comm_bcast_host(c, &t, sizeof t, 0, err, errlen) != 0)
        return -1;
    tmodel_sync_device(self);
    model_set_adam_t(self->m, (int64_t)t);
    return 0;
}

int tmodel_group_same(tmodel_t *self, char *err, size_t errlen) {
    comm_t *c = self->comm;
    if (!c || comm_world(c) <= 1)
        return 1;
    tmodel_sync_host(self);
    float *r0 = util_malloc(sizeof(float) * self->numel);
    memcpy(r0, self->hw, sizeof(float) * self->numel);
    int rc = comm_bcast_host(c, r0, sizeof(float) * self->numel, 0, err, errlen);
    if (rc == 0)
        rc = memcmp(r0, self->hw, sizeof(float) * self->numel) == 0;
    free(r0);
    return rc;
}
