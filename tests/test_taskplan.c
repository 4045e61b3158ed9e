/* test_taskplan.c: compiling instructions into task plans (plans/taskplan.c): grouping
 * into <s>...</s> sequences, stage chains, routes, loss mask, generator, metric and the
 * runnable check. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "taskplan.h"

static char err[512];

static taskplan_t *compile(const char *text) {
    err[0] = '\0';
    taskplan_t *tp = taskplan_compile(text, NULL, err, sizeof err);
    cr_assert_not_null(tp, "'%s' should compile, got: %s", text, err);
    return tp;
}

/* The step names of one slot joined with ' ', for compact checks. */
static const char *chain(const taskplan_slot_t *sl) {
    static char buf[256];
    buf[0] = '\0';
    for (int i = 0; i < sl->nsteps; i++) {
        strcat(buf, i ? " " : "");
        strcat(buf, taskplan_step_name(sl->steps[i].kind));
    }
    return buf;
}

Test(taskplan, caption) {
    taskplan_t *tp = compile("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    cr_assert_str_eq(tp->route, "image,tokenize");
    cr_assert_eq(tp->ntiers, 2);
    cr_assert_str_eq(tp->tiers[1], "tokenize");
    const taskplan_template_t *tm = &tp->tmpls[0];
    cr_assert_eq(tm->nsrc, 2);
    cr_assert_eq(tm->src[0].mod, MOD_IMAGE);
    cr_assert(!tm->src[0].wrapped);
    cr_assert_eq(tm->src[1].mod, MOD_TEXT);
    cr_assert(tm->src[1].wrapped);
    cr_assert_eq(tm->src[1].nitems, 1);
    cr_assert_eq(tm->src[1].items[0].kind, TP_ITEM_TEXT);
    cr_assert_eq(tm->ntgt, 1);
    cr_assert(tm->tgt[0].loss);
    cr_assert_str_eq(chain(&tm->slots[0]), "jpeg-decode resize patchify");
    cr_assert_str_eq(tm->slots[0].steps[1].arg, "96x96");
    cr_assert_str_eq(tm->slots[0].steps[2].arg, "16 px, 36 patches");
    cr_assert_str_eq(chain(&tm->slots[1]), "bpe");
    cr_assert_eq(tp->gen, GEN_GREEDY);
    cr_assert_str_eq(tp->metric, "cider");
    cr_assert(tp->has_image_input);
    cr_assert_eq(tp->ncolumns, 2);
    cr_assert_eq(taskplan_column(tp, "img")->mod, MOD_IMAGE);
    cr_assert(taskplan_column(tp, "img")->source);
    cr_assert(!taskplan_column(tp, "cap")->source);
    cr_assert_null(taskplan_column(tp, "nope"));
    cr_assert_eq(taskplan_runnable(tp, err, sizeof err), 0);
    taskplan_destroy(&tp);
    cr_assert_null(tp);
}

Test(taskplan, text_like_slots_and_prompt_group_into_one_sequence) {
    taskplan_t *tp = compile("[IMAGE:img] which region does the text \" [TEXT:cap] \" describe? "
                             "-> [BOX:patch_boxes]");
    const taskplan_template_t *tm = &tp->tmpls[0];
    cr_assert_eq(tm->nsrc, 2);
    cr_assert_eq(tm->src[1].nitems, 3);   /* 'which ... "', [TEXT:cap], '" describe?' */
    cr_assert_eq(tm->src[1].items[1].kind, TP_ITEM_SLOT);
    cr_assert_str_eq(tm->src[1].items[2].text, "\" describe?");
    cr_assert_str_eq(chain(&tm->slots[2]), "box-parse location-bins");
    cr_assert_eq(tp->gen, GEN_BOX);
    cr_assert_str_eq(tp->metric, "iou_acc");
    taskplan_destroy(&tp);
    /* BOX, PHONE and STRUCT are text-like too */
    tp = compile("[IMAGE:img] region: [BOX:b] [STRUCT:t] [PHONE:p] -> [TEXT:cap]");
    cr_assert_eq(tp->tmpls[0].nsrc, 2);
    cr_assert_eq(tp->tmpls[0].src[1].nitems, 4);
    taskplan_destroy(&tp);
    /* a non-text slot splits the sequence */
    tp = compile("[TEXT:a] [IMAGE:i] [TEXT:b] -> [TEXT:c]");
    cr_assert_eq(tp->tmpls[0].nsrc, 3);
    taskplan_destroy(&tp);
}

Test(taskplan, bos_eos_give_the_same_plan) {
    taskplan_t *a = compile("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    taskplan_t *b = compile("[IMAGE:img] <BOS> what does the image describe? <EOS> -> "
                            "<BOS> [TEXT:cap,add_bos,add_eos] <EOS>");
    char *ra = taskplan_render(a, "t"), *rb = taskplan_render(b, "t");
    /* identical apart from the instruction line */
    cr_assert_str_eq(strchr(strstr(ra, "route:"), '\n'), strchr(strstr(rb, "route:"), '\n'));
    free(ra);
    free(rb);
    taskplan_destroy(&a);
    taskplan_destroy(&b);
    /* an explicit <EOS> <BOS> border splits a sequence */
    taskplan_t *c = compile("<BOS> [TEXT:a] <EOS> <BOS> [TEXT:b] <EOS> -> [TEXT:c]");
    cr_assert_eq(c->tmpls[0].nsrc, 2);
    taskplan_destroy(&c);
}

Test(taskplan, loss_mask_and_decoder_prompt) {
    taskplan_t *tp = compile("[IMAGE:img] can image and text1 \" [TEXT:cap] \" imply text2 \" "
                             "[TEXT:hyp] \"? -> can image and text1 \" [TEXT:cap,no_loss] \" "
                             "imply text2 \" [TEXT:hyp,no_loss] \"? [TEXT:label,closed_set]");
    const taskplan_template_t *tm = &tp->tmpls[0];
    cr_assert_eq(tm->ntgt, 1);
    const taskplan_seg_t *t = &tm->tgt[0];
    int loss = 0, items = 0;
    for (int i = 0; i < t->nitems; i++) {
        items++;
        loss += t->items[i].loss;
        if (t->items[i].kind == TP_ITEM_TEXT)
            cr_assert(!t->items[i].loss, "plain target text carries no loss");
    }
    cr_assert_eq(items, 6);
    cr_assert_eq(loss, 1);
    cr_assert(t->items[5].loss);
    cr_assert_eq(tp->gen, GEN_CLOSED_SET);
    cr_assert_str_eq(tp->metric, "accuracy");
    taskplan_destroy(&tp);
}

Test(taskplan, attributes_shape_the_chain) {
    taskplan_t *tp = compile("what is the complete text of \" [TEXT:text,mask_ratio=0.3,uncased] "
                             "\"? -> [TEXT:text,max_length=32,noise_ratio=0.1]");
    cr_assert_str_eq(chain(&tp->tmpls[0].slots[0]), "normalize bpe mask-spans");
    cr_assert_str_eq(chain(&tp->tmpls[0].slots[1]), "bpe truncate noise-tokens");
    cr_assert_str_eq(tp->route, "tokenize");
    cr_assert_eq(tp->ntiers, 1);
    taskplan_destroy(&tp);
    tp = compile("[IMAGE:img,image_size=64,patch=8,mask_ratio=0.5] -> [TEXT:t]");
    cr_assert_str_eq(chain(&tp->tmpls[0].slots[0]), "jpeg-decode resize patchify mask-patches");
    cr_assert_str_eq(tp->tmpls[0].slots[0].steps[2].arg, "8 px, 64 patches");
    taskplan_destroy(&tp);
    cr_assert_null(taskplan_compile("[IMAGE:img,image_size=100] -> [TEXT:t]", NULL, err, sizeof err));
    cr_assert(strstr(err, "instruction:1:1: image_size 100 is not a multiple of patch 16"), "%s", err);
}

Test(taskplan, other_modalities) {
    taskplan_t *tp = compile("[AUDIO:wav] what is the text corresponding to the voice? -> "
                             "[TEXT:text,preprocess=text_phone]");
    cr_assert_str_eq(tp->route, "audio,tokenize");
    cr_assert_str_eq(chain(&tp->tmpls[0].slots[0]), "wav-decode resample fbank stack-frames");
    cr_assert_str_eq(tp->metric, "wer");
    taskplan_destroy(&tp);
    tp = compile("[VIDEO:video] what does the video describe? -> [TEXT:cap]");
    cr_assert_str_eq(tp->route, "video,tokenize");
    cr_assert_str_eq(chain(&tp->tmpls[0].slots[0]),
                     "demux decode sample-frames resize patchify");
    taskplan_destroy(&tp);
    tp = compile("[IMAGE:a] [VIDEO:b] [AUDIO:c] -> [TEXT:t]");
    cr_assert_str_eq(tp->route, "image,audio,video,tokenize");
    taskplan_destroy(&tp);
}

Test(taskplan, repeated_group) {
    taskplan_t *tp = compile("[IMAGE:img] what are the objects in the image? -> ( [BOX] [TEXT])*");
    const taskplan_template_t *tm = &tp->tmpls[0];
    cr_assert_eq(tm->ntgt, 1);
    cr_assert(tm->tgt[0].repeated);
    cr_assert_eq(tm->tgt[0].nitems, 2);
    cr_assert(tm->slots[1].repeated && tm->slots[2].repeated);
    cr_assert_eq(tp->gen, GEN_GREEDY);
    cr_assert_str_eq(tp->metric, "map");
    cr_assert_eq(taskplan_runnable(tp, err, sizeof err), 0, "%s", err);
    /* The objects repeat inside one <s> ... </s>, as the tokenize tier writes them. */
    char *r = taskplan_render(tp, "od");
    cr_assert(strstr(r, "TEXT  <s> ( [BOX] [TEXT] )* </s>   [loss]"), "%s", r);
    free(r);
    taskplan_destroy(&tp);
}

Test(taskplan, alternatives) {
    taskplan_t *tp = compile("[IMAGE:img] what does the image describe? -> [TEXT:cap] ||| "
                             "[IMAGE:img] describe the image -> [TEXT:cap]");
    cr_assert_eq(tp->ntmpls, 2);
    int seen[2] = {0, 0};
    for (uint64_t id = 0; id < 200; id++) {
        int k = taskplan_pick_template(tp, 7, id);
        cr_assert(k == 0 || k == 1);
        cr_assert_eq(k, taskplan_pick_template(tp, 7, id));   /* deterministic */
        seen[k]++;
    }
    cr_assert(seen[0] > 50 && seen[1] > 50);
    taskplan_destroy(&tp);
    cr_assert_null(taskplan_compile("[IMAGE:i] -> [TEXT:a] ||| [IMAGE:i] -> [BOX:b]", NULL, err,
                                    sizeof err));
    cr_assert(strstr(err, "must produce the same kind of output"), "%s", err);
}

Test(taskplan, column_kinds_must_agree) {
    cr_assert_null(taskplan_compile("[IMAGE:x] -> [TEXT:x]", NULL, err, sizeof err));
    cr_assert(strstr(err, "column 'x' is used as TEXT here and as IMAGE before"), "%s", err);
    taskplan_t *tp = compile("[TEXT:x] -> [TEXT:x]");   /* a sentence on both sides */
    cr_assert_eq(tp->ncolumns, 1);
    taskplan_destroy(&tp);
}

Test(taskplan, runnable_refuses_what_cannot_be_generated) {
    struct {
        const char *instr, *why;
    } cases[] = {
        {"what is the complete image? caption: [TEXT:text]\"? -> "
         "[IMAGE,preprocess=image_vqgan,adaptor=image_vqgan]", "target IMAGE needs image-code"},
        {"[PHONE:text] -> [AUDIO:fbank,adaptor=audio_tgt_fbank]", "target AUDIO needs speech"},
        {"motion capture: [TEXT:text] -> [MOTION:bvh_frames,preprocess=motion_6d,adaptor=motion_6d]",
         "target MOTION needs motion generation"},
        {"[TEXT:t] -> [VIDEO]", "target VIDEO needs video generation"},
        {"[TEXT:t] -> [TEXT:u,no_loss]", "no slot that carries loss"},
        {"[TEXT:t] -> ", "no slot that carries loss"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        taskplan_t *tp = compile(cases[i].instr);
        err[0] = '\0';
        cr_assert_eq(taskplan_runnable(tp, err, sizeof err), -1, "%s", cases[i].instr);
        cr_assert(strstr(err, cases[i].why), "%s: %s", cases[i].instr, err);
        char *r = taskplan_render(tp, "x");
        cr_assert(strstr(r, "runnable: no:"), "%s", r);
        free(r);
        taskplan_destroy(&tp);
    }
}

Test(taskplan, metric_override) {
    taskplan_t *tp = compile("[IMAGE:img] [TEXT:question] -> [TEXT:answer,closed_set]");
    cr_assert_str_eq(tp->metric, "accuracy");
    cr_assert_eq(taskplan_set_metric(tp, "vqa_score", err, sizeof err), 0);
    cr_assert_str_eq(tp->metric, "vqa_score");
    cr_assert_eq(taskplan_set_metric(tp, "accuracy/mcc", err, sizeof err), 0);
    cr_assert_eq(taskplan_set_metric(tp, "-", err, sizeof err), 0);
    cr_assert_eq(taskplan_set_metric(tp, "acc", err, sizeof err), -1);
    cr_assert(strstr(err, "unknown metric 'acc'"), "%s", err);
    cr_assert_eq(taskplan_set_metric(tp, "accuracy/", err, sizeof err), -1);
    cr_assert_str_eq(tp->metric, "-");   /* unchanged by the failures */
    taskplan_destroy(&tp);
}

Test(taskplan, opts_and_beam) {
    taskplan_opts_t o;
    taskplan_opts_default(&o);
    o.image_size = 384;
    o.beam = 5;
    taskplan_t *tp = taskplan_compile("[IMAGE:img] -> [TEXT:cap]", &o, err, sizeof err);
    cr_assert_not_null(tp, "%s", err);
    cr_assert_str_eq(tp->tmpls[0].slots[0].steps[2].arg, "16 px, 576 patches");
    cr_assert_eq(tp->gen, GEN_BEAM);
    taskplan_destroy(&tp);
    o.image_size = 90;
    cr_assert_null(taskplan_compile("[IMAGE:img] -> [TEXT:cap]", &o, err, sizeof err));
}

Test(taskplan, render) {
    taskplan_t *tp = compile("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    char *r = taskplan_render(tp, "caption");
    cr_assert(strstr(r, "task caption\n"), "%s", r);
    cr_assert(strstr(r, "route: image,tokenize"), "%s", r);
    cr_assert(strstr(r, "src [IMAGE:img]: image: jpeg-decode (JPEG or PNG) -> resize (96x96) -> "
                        "patchify (16 px, 36 patches)"), "%s", r);
    cr_assert(strstr(r, "tgt [TEXT:cap] loss: tokenize: bpe"), "%s", r);
    cr_assert(strstr(r, "<s> 'what does the image describe?' </s>"), "%s", r);
    cr_assert(strstr(r, "generator: greedy"), "%s", r);
    cr_assert(strstr(r, "metric: cider"), "%s", r);
    cr_assert(strstr(r, "runnable: yes"), "%s", r);
    free(r);
    taskplan_destroy(&tp);
}
