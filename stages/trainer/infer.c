/* infer.c: ofa-infer, generation from one checkpoint file, outside any pipeline.
 *
 *   ofa-infer CKPT --instruction '[IMAGE:img] what does the image describe? -> [TEXT:cap]'
 *             --input img=photo.jpg
 *   ofa-infer CKPT --task vqa --input image=photo.jpg --input question='what colour?'
 *   ofa-infer CKPT --task video_caption --input video=clip.mp4
 *   ofa-infer CKPT --task motion_label --input bvh=walk.bvh --verbose
 *
 * The checkpoint carries everything (ckpt.h): the weights, the resolved plan (model size,
 * image size, positions, generation settings), the BPE merges and the closed answer sets.
 * The instruction is compiled with the plan's settings and its inputs are prepared as the
 * pipeline would: image columns decoded, resized (OFA's direct resize) and cut into
 * patches with the image tier's library; audio columns through the audio tier's chain
 * and the tokenize tier's stacking; video columns through the video tier's chain
 * (vidstage.h: the slot's frames, size and patch; frames sampled as for any sample, no
 * randomness); motion columns through the motion tier's (motstage.h: the window a
 * validation sample takes, with the window/stride/step flags of the plan's
 * stages.motion program); text columns tokenised with the task plan (prompt text,
 * <s> </s>, BPE), no masking. Target columns get an empty value (a box
 * target a dummy one) only so that the decoder prompt of the instruction is laid out;
 * their tokens are never fed.
 *
 * The generator is the task's: closed-set instructions need the answer set of a plan
 * task, found by --task or by an identical instruction text in the plan. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bpe.h"
#include "ckpt.h"
#include "gen.h"
#include "imgproc.h"
#include "imgtask.h"
#include "metrics.h"
#ifdef OFA_INFER_AUDIO
#include "audstage.h"
#include "tokstage.h"
#endif
#ifdef OFA_INFER_VIDEO
#include "decstage.h"
#include "vidstage.h"
#endif
#ifdef OFA_INFER_MOTION
#include "motstage.h"
#endif
#include "planfile.h"
#include "teval.h"
#include "tgen.h"
#include "tmodel.h"
#include "tokenize.h"
#include "util.h"

#define MAX_INPUTS 16

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: ofa-infer CKPT [--instruction TEXT | --task NAME] --input COL=VALUE ...\n"
            "  CKPT                 a checkpoint file (RUN/checkpoints/ckpt-*.safetensors)\n"
            "  --instruction TEXT   the instruction ('[IMAGE:img] caption? -> [TEXT:cap]')\n"
            "  --task NAME          a task of the checkpoint's plan (its instruction and,\n"
            "                       for closed-set tasks, its answer set)\n"
            "  --input COL=VALUE    a source column: a file path for IMAGE, AUDIO, VIDEO\n"
            "                       (MP4, AVI, WebM...) and MOTION (BVH) columns; the text\n"
            "                       itself for text columns, or @FILE to read it from FILE\n"
            "  --beam N             beam size (default: the plan's trainer.beam)\n"
            "  --max-len N          most generated tokens (default: trainer.max_gen_len)\n"
            "  --threads N          CPU threads (default 1)\n"
            "  --verbose            say on stderr how each media input was prepared\n"
            "  --help               this text\n"
            "Prints the generated answer on stdout (boxes as x0 y0 x1 y1 in pixels of the\n"
            "input image, and their location bins).\n");
}

/* One box in location bins (0..999) as "x0 y0 x1 y1\tTAIL", in pixels of a w x h image. */
static void s_print_box(const double bins[4], int w, int h, const char *tail) {
    printf("%.1f %.1f %.1f %.1f\t%s\n", bins[0] / 999.0 * w, bins[1] / 999.0 * h,
           bins[2] / 999.0 * w, bins[3] / 999.0 * h, tail);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    const char *instruction = NULL, *task_name = NULL;
    const char *inputs[MAX_INPUTS];
    int ninputs = 0, beam = 0, max_len = 0, threads = 1, verbose = 0;
    static const struct option lo[] = {
        {"instruction", required_argument, 0, 'i'}, {"task", required_argument, 0, 't'},
        {"input", required_argument, 0, 'n'},       {"beam", required_argument, 0, 'b'},
        {"max-len", required_argument, 0, 'm'},     {"threads", required_argument, 0, 'j'},
        {"verbose", no_argument, 0, 'v'},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'i': instruction = optarg; break;
        case 't': task_name = optarg; break;
        case 'n':
            if (ninputs == MAX_INPUTS)
                util_fatal(NULL, "more than %d --input flags", MAX_INPUTS);
            if (!strchr(optarg, '='))
                util_fatal("write --input COLUMN=VALUE", "--input '%s' has no '='", optarg);
            inputs[ninputs++] = optarg;
            break;
        case 'b': beam = atoi(optarg); if (beam < 1) util_fatal(NULL, "--beam %s: want >= 1", optarg); break;
        case 'm': max_len = atoi(optarg); if (max_len < 1) util_fatal(NULL, "--max-len %s: want >= 1", optarg); break;
        case 'j': threads = atoi(optarg); if (threads < 1) util_fatal(NULL, "--threads %s: want >= 1", optarg); break;
        case 'v': verbose = 1; break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "%s: want exactly one checkpoint file (got %d arguments)\n",
                util_progname(), argc - optind);
        s_usage(stderr);
        return 2;
    }
    if (!instruction && !task_name)
        util_fatal("give --instruction or --task", "no instruction");
    const char *ckpt = argv[optind];
    char err[4096];

    ckpt_file_t *f = ckpt_file_open(ckpt, err, sizeof err);
    if (!f)
        util_fatal("is it a checkpoint written by ofa-trainer?", "%s", err);
    const char *fmt = ckpt_file_meta(f, "format"), *plan_text = ckpt_file_meta(f, "plan");
    const ckpt_tensor_t *bpe_t = ckpt_file_find(f, "meta.bpe");
    if (!fmt || strcmp(fmt, "ofa-ckpt") || !plan_text || !bpe_t || bpe_t->dtype != CKPT_U8)
        util_fatal("ofa-infer reads the checkpoints of ofa-trainer (with the plan and BPE inside)",
                   "%s: not an ofa-ckpt checkpoint (format, plan or meta.bpe missing)", ckpt);
    char what[600];
    snprintf(what, sizeof what, "%s:plan", ckpt);
    plan_t *plan = plan_load_string(plan_text, what, NULL, err, sizeof err);
    if (!plan)
        util_fatal(NULL, "the plan inside %s does not load: %s", ckpt, err);
    tok_bpe_t *bpe = tok_bpe_parse(bpe_t->data, bpe_t->nbytes, err, sizeof err);
    if (!bpe)
        util_fatal(NULL, "%s: meta.bpe: %s", ckpt, err);

    /* The task: named, or found by its instruction, or compiled afresh. A plan task
     * brings its closed answer set and its own image size; a fresh instruction gets the
     * model's image size, which is what the weights were trained at. */
    const plan_task_t *pt = NULL;
    if (task_name) {
        pt = plan_task(plan, task_name);
        if (!pt)
            util_fatal("--task names a task of the plan inside the checkpoint",
                       "no task '%s' in %s", task_name, ckpt);
    } else {
        for (int i = 0; i < plan->ntasks; i++)
            if (!strcmp(plan->tasks[i].instruction, instruction))
                pt = &plan->tasks[i];
    }
    taskplan_t *own = NULL;
    const taskplan_t *tp = pt ? pt->plan : NULL;
    if (instruction && (!pt || strcmp(pt->instruction, instruction))) {
        taskplan_opts_t o;
        taskplan_opts_default(&o);
        o.image_size = pt ? pt->image_size : plan->model.image_size;
        o.patch = pt ? pt->patch : plan->model.patch;
        o.max_src_len = plan->model.max_src_len;
        o.max_tgt_len = plan->model.max_tgt_len;
        o.beam = plan->trainer.beam;
        o.n_mels = plan->model.audio_mels;
        o.frames = plan->model.video_frames;
        o.num_bins = plan->model.num_bins;
        own = taskplan_compile(instruction, &o, err, sizeof err);
        if (!own)
            util_fatal(NULL, "%s", err);
        tp = own;
    }
    if (taskplan_runnable(tp, err, sizeof err) != 0)
        util_fatal(NULL, "%s", err);

    /* Inputs. */
    tok_value_t vals[MAX_INPUTS + 8];
    int nvals = 0;
    char *owned[MAX_INPUTS + 8];
    int nowned = 0;
    uint8_t *patches = NULL;
    int grid = 0, img_w = 0, img_h = 0, npatch = 0;
    float *aud = NULL;            /* (aud_frames, aud_dim) stacked audio frames */
    int aud_frames = 0, aud_dim = 0;
    uint8_t *vid = NULL;          /* (vid_frames, vid_npv, vid_dim) video patches */
    int vid_frames = 0, vid_npv = 0, vid_dim = 0, vid_grid = 0;
    float *mot = NULL;            /* (mot_frames, mot_dim) motion features */
    int mot_frames = 0, mot_dim = 0;
    img_task_col_t icols[4];
    int nicols = img_task_columns(tp, IMG_FIT_RESIZE, icols, 4);
    if (nicols > 1)
        util_fatal(NULL, "instructions with %d image inputs are not supported here", nicols);
    img_ctx_t *ictx = NULL;
    for (int i = 0; i < tp->ncolumns; i++) {
        const taskplan_column_t *col = &tp->columns[i];
        const char *v = NULL;
        size_t cl = strlen(col->name);
        for (int k = 0; k < ninputs; k++)
            if (!strncmp(inputs[k], col->name, cl) && inputs[k][cl] == '=')
                v = inputs[k] + cl + 1;
        tok_value_t *tv = &vals[nvals++];
        memset(tv, 0, sizeof *tv);
        tv->column = col->name;
        if (!col->source) {
            /* Target: a placeholder so that the layout (and the decoder prompt) is built. */
            /* (a repeated group's cell: one object, valid for any image size) */
            bool group = tp->group_column && !strcmp(col->name, tp->group_column);
            tv->text = group ? "0,0,1,1,0,object" : col->mod == MOD_BOX ? "0,0,0,0" : "";
            tv->len = strlen(tv->text);
            continue;
        }
        if (!v)
            util_fatal("give every source column with --input COL=VALUE",
                       "no --input for column '%s'", col->name);
        if (col->mod == MOD_IMAGE) {
            size_t len;
            char *bytes = util_read_file(v, &len, err, sizeof err);
            if (!bytes)
                util_fatal(NULL, "column %s: %s", col->name, err);
            ictx = ictx ? ictx : img_ctx_new(NULL);
            if (!ictx)
                util_fatal(NULL, "cannot start the JPEG decoder");
            const img_task_col_t *ic = &icols[0];
            patches = util_malloc((size_t)ic->size * ic->size * 3);
            if (img_task_run(ictx, ic, (const uint8_t *)bytes, len, patches, &grid, &img_w, &img_h,
                             err, sizeof err) != 0)
                util_fatal(NULL, "%s: %s", v, err);
            free(bytes);
            npatch = grid * grid;
            tv->npos = npatch;
            tv->width = img_w;
            tv->height = img_h;
#ifdef OFA_INFER_AUDIO
        } else if (col->mod == MOD_AUDIO) {
            /* The audio tier's chain (audstage.h: decode, mono, resample, fbank; no dither,
             * no SpecAugment, as for validation samples) and the tokenize tier's stacking. */
            if (aud)
                util_fatal(NULL, "instructions with more than one audio input are not "
                           "supported here");
            size_t len;
            char *bytes = util_read_file(v, &len, err, sizeof err);
            if (!bytes)
                util_fatal(NULL, "column %s: %s", col->name, err);
            int mels = tp->opts.n_mels > 0 ? tp->opts.n_mels : plan->model.audio_mels;
            int k = plan->model.audio_stack > 0 ? plan->model.audio_stack : 4;
            aud_dec_t *dec = aud_dec_new(NULL);
            fbank_t *fb = fbank_new(tp->opts.sample_rate > 0 ? tp->opts.sample_rate : 16000, mels);
            if (!fb)
                util_fatal(NULL, "column %s: no filterbank of %d mels", col->name, mels);
            float *feat = NULL;
            int64_t T = 0;
            if (aud_features(dec, fb, (const uint8_t *)bytes, len, 0, 0, &feat, &T, err,
                             sizeof err) != 0)
                util_fatal(NULL, "%s: %s", v, err);
            aud = util_malloc(sizeof(float) * (size_t)((T + k - 1) / k * k * mels));
            aud_frames = tok_audio_stack(feat, T, mels, k, aud);
            aud_dim = k * mels;
            tv->npos = aud_frames;
            free(feat);
            free(bytes);
            fbank_destroy(&fb);
            aud_dec_destroy(&dec);
#endif
#ifdef OFA_INFER_VIDEO
        } else if (col->mod == MOD_VIDEO) {
            /* The video tier's chain (vidstage.h): the slot's N, S and P, the plan's
             * limits, decode, N frames sampled uniformly, resize, patchify. */
            if (vid)
                util_fatal(NULL, "instructions with more than one video input are not "
                           "supported here");
            const taskplan_slot_t *slots[DECSTAGE_MAX_COLS], *slot = NULL;
            int ns = decstage_slots(tp, MOD_VIDEO, slots, DECSTAGE_MAX_COLS);
            for (int k = 0; k < ns; k++)
                if (!strcmp(slots[k]->column, col->name))
                    slot = slots[k];
            OFA_ASSERT(slot);
            int N, S, P;
            if (vidstage_geometry(tp, slot, &N, &S, &P, err, sizeof err) != 0)
                util_fatal(NULL, "%s", err);
            size_t len;
            char *bytes = util_read_file(v, &len, err, sizeof err);
            if (!bytes)
                util_fatal(NULL, "column %s: %s", col->name, err);
            vid_opts_t vo = vidstage_limits(plan, NULL);
            vid_ctx_t *vc = vid_ctx_new(&vo);
            vid = util_malloc((size_t)N * S * S * 3);
            vid_info_t info;
            if (vid_process(vc, (const uint8_t *)bytes, len, N, S, P, vid, NULL, &info, err,
                            sizeof err) != 0)
                util_fatal("is it a whole video file (MP4, AVI, WebM...)?",
                           "column %s: %s: %s", col->name, v, err);
            vid_ctx_destroy(&vc);
            free(bytes);
            if (verbose) {
                fprintf(stderr, "column %s: %s: %s %dx%d, %d of %lld frames (", col->name, v,
                        info.codec, info.w, info.h, N, (long long)info.frames);
                for (int k = 0; k < N; k++)
                    fprintf(stderr, "%s%lld", k ? " " : "", (long long)info.index[k]);
                fprintf(stderr, ") at %dx%d, %d px patches: %d positions\n", S, S, P,
                        N * (S / P) * (S / P));
            }
            vid_frames = N;
            vid_grid = S / P;
            vid_npv = vid_grid * vid_grid;
            vid_dim = P * P * 3;
            tv->npos = N * vid_npv;
#endif
#ifdef OFA_INFER_MOTION
        } else if (col->mod == MOD_MOTION) {
            /* The motion tier's chain (motstage.h) with the plan's ofa-motion flags:
             * parse, one frame in `step`, the middle window (a validation sample's),
             * root-relative positions and 6-D rotations. */
            if (mot)
                util_fatal(NULL, "instructions with more than one motion input are not "
                           "supported here");
            motstage_opts_t mo = {0};
            const plan_stage_t *ms = plan_stage(plan, "motion");
            if (ms && motstage_opts_from_argv(&mo, ms->nprogram, ms->program, err,
                                              sizeof err) != 0)
                util_fatal(NULL, "%s: the plan's stages.motion.program: %s", ckpt, err);
            size_t len;
            char *bytes = util_read_file(v, &len, err, sizeof err);
            if (!bytes)
                util_fatal(NULL, "column %s: %s", col->name, err);
            motstage_t *mst = motstage_new(plan, &mo);
            int C, real;
            if (motstage_features(mst, bytes, len, 0, 0, &mot, &C, &real, err, sizeof err) != 0)
                util_fatal("is it a whole BVH file?", "column %s: %s: %s", col->name, v, err);
            if (C != plan->model.motion_channels)
                util_fatal("the model reads the skeleton it was trained on",
                           "column %s: %s has %d features per frame, the model takes %d "
                           "(model.motion_channels)", col->name, v, C,
                           plan->model.motion_channels);
            const motstage_opts_t *mop = motstage_get_opts(mst);
            mot_frames = mop->window;
            if (verbose)
                fprintf(stderr, "column %s: %s: %d frames x %d features (window %d, stride %d, "
                        "step %d; %d real)\n", col->name, v, mop->window, C, mop->window,
                        mop->stride, mop->step, real);
            mot_dim = C;
            tv->npos = mot_frames;
            motstage_destroy(&mst);
            free(bytes);
#endif
        } else if (col->mod == MOD_AUDIO || col->mod == MOD_VIDEO || col->mod == MOD_MOTION) {
            util_fatal("the audio and video tiers need FFmpeg's and libsndfile's -dev packages "
                       "at build time", "column %s: this ofa-infer was built without the %s "
                       "tier", col->name, mod_name(col->mod));
        } else {
            if (v[0] == '@') {
                size_t len;
                char *t = util_read_file(v + 1, &len, err, sizeof err);
                if (!t)
                    util_fatal(NULL, "column %s: %s", col->name, err);
                while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r'))
                    t[--len] = 0;
                owned[nowned++] = t;
                v = t;
            }
            tv->text = v;
            tv->len = strlen(v);
        }
    }
    /* Image sizes for box targets: the bins are relative to the source image. */
    for (int i = 0; i < nvals; i++)
        if (!vals[i].npos && img_w > 0) {
            vals[i].width = img_w;
            vals[i].height = img_h;
        }
    tok_opts_t to = {.no_masking = true, .seed = (uint64_t)plan->seed};
    tok_ctx_t *tctx = tok_ctx_new(tp, bpe, &to, err, sizeof err);
    if (!tctx)
        util_fatal(NULL, "%s", err);
    tok_sample_t sample = {.id = 0, .values = vals, .nvalues = nvals};
    tok_result_t r;
    if (tok_build(tctx, &sample, &r, err, sizeof err) != 0)
        util_fatal(NULL, "%s", err);

    /* The model. */
    tmodel_cfg_t cfg = {
        .size = plan->model.size, .vocab = tok_bpe_vocab_size(bpe),
        .max_src_len = plan->model.max_src_len, .max_tgt_len = plan->model.max_tgt_len,
        .image_size = plan->model.image_size, .patch = plan->model.patch, .seed = 0,
        .threads = threads, .backend = "cpu", .weight_decay = 0, .label_smoothing = 0,
    };
    if (tmodel_cfg_adapters(&cfg, plan, err, sizeof err) != 0)
        util_fatal(NULL, "%s", err);
    tmodel_t *model = tmodel_new(&cfg, err, sizeof err);
    if (!model)
        util_fatal(NULL, "%s", err);
    if (tmodel_load_weights(model, f, ckpt, err, sizeof err) != 0)
        util_fatal(NULL, "%s", err);

    /* Closed answer set of the plan task: the set the trainer evaluated with, so
     * ofa-infer and eval.json agree on what the model can answer. */
    gen_trie_t *trie = NULL;
    teval_t *ev = teval_new();
    if (tp->gen == GEN_CLOSED_SET) {
        if (!pt)
            util_fatal("use --task NAME of a closed-set task of the plan",
                       "a closed-set instruction needs the answer set of a plan task");
        char name[256];
        snprintf(name, sizeof name, "meta.closed_set.%s", pt->name);
        const ckpt_tensor_t *cs = ckpt_file_find(f, name);
        if (!cs || cs->dtype != CKPT_I32 ||
            teval_load_flat(ev, pt->name, cs->data, (int64_t)(cs->nbytes / 4), err, sizeof err) != 0)
            util_fatal(NULL, "%s: no usable answer set %s", ckpt, name);
        trie = teval_trie(ev, pt->name, err, sizeof err);
        if (!trie)
            util_fatal(NULL, "%s", err);
    }

    uint64_t id = 0;
    int32_t src_len = r.src_len, tgt_len = r.tgt_len;
    trainer_batch_t b = {
        .task = pt ? pt->name : "infer", .B = 1, .S = r.src_len, .T = r.tgt_len, .ids = &id,
        .src_tok = r.src_tok, .src_mod = r.src_mod, .src_len = &src_len, .tgt_in = r.tgt_in,
        .tgt_out = r.tgt_out, .tgt_len = &tgt_len, .img = patches, .Np = npatch,
        .patch_dim = plan->model.patch * plan->model.patch * 3, .grid = grid,
        .aud = aud, .Fa = aud_frames, .aud_dim = aud_dim,
        .vid = vid, .Nf = vid_frames, .Npv = vid_npv, .vid_dim = vid_dim, .vid_grid = vid_grid,
        .mot = mot, .Fm = mot_frames, .mot_dim = mot_dim,
    };
    tgen_cfg_t gc = {
        .gen = tp->gen, .beam = beam ? beam : plan->trainer.beam,
        .max_gen_len = max_len ? max_len : plan->trainer.max_gen_len,
        .max_tgt_len = plan->model.max_tgt_len, .len_penalty = 1.0f, .trie = trie,
    };
    if (gc.gen == GEN_GREEDY && gc.beam > 1)
        gc.gen = GEN_BEAM;
    char *hyp = NULL;
    int p = tgen_prompt_len(&b, 0);
    if (tgen_rows(model, bpe, &gc, &b, 0, 1, p, &hyp, err, sizeof err) != 0)
        util_fatal(NULL, "generation failed: %s", err);
    if (tp->gen == GEN_BOX && img_w > 0) {
        int box[4];
        if (sscanf(hyp, "<bin_%d> <bin_%d> <bin_%d> <bin_%d>", &box[0], &box[1], &box[2], &box[3]) == 4)
            s_print_box((const double[4]){box[0], box[1], box[2], box[3]}, img_w, img_h, hyp);
        else
            printf("%s\n", hyp);
    } else if (tp->group_column && img_w > 0) {
        /* Detection: one object a line, its box in pixels of the input image. */
        metric_det_t *d;
        int nd = 0;
        metric_parse_detections(hyp, false, &d, &nd, NULL, 0);
        for (int i = 0; i < nd; i++)
            s_print_box(d[i].box, img_w, img_h, d[i].label);
        if (nd == 0)
            printf("%s\n", hyp);
        metric_dets_free(d, nd);
    } else {
        /* The BPE keeps the leading space of the first word: drop it for display. */
        printf("%s\n", hyp[0] == ' ' ? hyp + 1 : hyp);
    }
    free(hyp);
    gen_trie_destroy(&trie);
    teval_destroy(&ev);
    tmodel_destroy(&model);
    tok_ctx_destroy(&tctx);
    img_ctx_destroy(&ictx);
    free(patches);
    free(aud);
    free(vid);
    free(mot);
    for (int i = 0; i < nowned; i++)
        free(owned[i]);
    taskplan_destroy(&own);
    tok_bpe_destroy(&bpe);
    plan_destroy(&plan);
    ckpt_file_destroy(&f);
    return 0;
}
