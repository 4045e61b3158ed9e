/* taskplan.c: see taskplan.h.
 *
 * Compilation walks each sentence of each template once: plain text and text-like slots
 * accumulate into the open sequence segment, anything else (an IMAGE, AUDIO, VIDEO or
 * MOTION slot, a <BOS>/<EOS> marker, the border of a repeated group) closes it. Then
 * each slot gets its chain of steps from the modality, its attributes and the plan's
 * options, and the route is the set of tiers those steps name, in a fixed order. */
#include "taskplan.h"
#include "util.h"

#include <stdarg.h>
#include <string.h>

/* ---- steps ------------------------------------------------------------------------ */

/* Each step is named as the stage that runs it logs it, and tagged with its tier: the
 * route of a task is derived from these tags, so a step moved to another tier moves the
 * work of every task that uses it. Decoding and resizing run in the modality tiers
 * (they are the expensive, parallel part); everything that needs the vocabulary or the
 * sample's other slots (BPE, bins, masking, stacking) runs in the tokenize tier. */
static const struct {
    const char *name;
    const char *tier;
} s_steps[STEP__COUNT] = {
    [STEP_TEXT_NORMALIZE] = {"normalize", "tokenize"},
    [STEP_BPE] = {"bpe", "tokenize"},
    [STEP_PHONEMIZE] = {"phonemize", "tokenize"},
    [STEP_PHONE_LOOKUP] = {"phone-lookup", "tokenize"},
    [STEP_STRUCT_LINEARIZE] = {"struct-linearize", "tokenize"},
    [STEP_CATEGORY_LOOKUP] = {"category-lookup", "tokenize"},
    [STEP_TRUNCATE] = {"truncate", "tokenize"},
    [STEP_MASK] = {"mask-spans", "tokenize"},
    [STEP_NOISE] = {"noise-tokens", "tokenize"},
    [STEP_BOX_PARSE] = {"box-parse", "tokenize"},
    [STEP_BOX_BINS] = {"location-bins", "tokenize"},
    [STEP_IMAGE_DECODE] = {"jpeg-decode", "image"},
    [STEP_IMAGE_RESIZE] = {"resize", "image"},
    [STEP_IMAGE_PATCHIFY] = {"patchify", "image"},
    [STEP_IMAGE_MASK] = {"mask-patches", "tokenize"},
    [STEP_IMAGE_VQGAN] = {"vqgan-encode", "image"},
    [STEP_AUDIO_DECODE] = {"wav-decode", "audio"},
    [STEP_AUDIO_RESAMPLE] = {"resample", "audio"},
    [STEP_AUDIO_FBANK] = {"fbank", "audio"},
    [STEP_AUDIO_STACK] = {"stack-frames", "tokenize"},
    [STEP_VIDEO_DEMUX] = {"demux", "video"},
    [STEP_VIDEO_DECODE] = {"decode", "video"},
    [STEP_VIDEO_SAMPLE] = {"sample-frames", "video"},
    [STEP_VIDEO_RESIZE] = {"resize", "video"},
    [STEP_VIDEO_PATCHIFY] = {"patchify", "video"},
    [STEP_MOTION_PARSE] = {"bvh-parse", "motion"},
    [STEP_MOTION_6D] = {"rot-6d", "motion"},
};

const char *taskplan_step_name(step_kind_t kind) {
    OFA_ASSERT(kind >= 0 && kind < STEP__COUNT);
    return s_steps[kind].name;
}

const char *taskplan_step_tier(step_kind_t kind) {
    OFA_ASSERT(kind >= 0 && kind < STEP__COUNT);
    return s_steps[kind].tier;
}

/* The order in which a sample visits the tiers: decoders first, tokenize last. */
static const char *s_tier_order[] = {"image", "audio", "video", "motion", "tokenize"};

const char *taskplan_gen_name(taskplan_gen_t gen) {
    switch (gen) {
    case GEN_GREEDY: return "greedy";
    case GEN_BEAM: return "beam";
    case GEN_CLOSED_SET: return "closed_set";
    case GEN_BOX: return "box";
    }
    return "?";
}

/* Metric names the evaluators know (OFASys's names, so that the presets' metric column
 * is accepted verbatim). */
static const char *s_metrics[] = {
    "accuracy", "mcc", "f1", "rouge_l", "bleu", "cider", "vqa_score", "clip_ti", "iou_acc",
    "map", "wer", "cer", "mcd", "exact_match", "solved_acc",
};
#define NMETRICS ((int)(sizeof(s_metrics) / sizeof(s_metrics[0])))

const char *taskplan_metric_names(void) {
    static char buf[256];
    if (!buf[0])
        for (int i = 0; i < NMETRICS; i++) {
            size_t used = strlen(buf);
            snprintf(buf + used, sizeof buf - used, "%s%s", i ? ", " : "", s_metrics[i]);
        }
    return buf;
}

/* Defaults of the tiny CPU configuration (DESIGN.md, "Images"): 96 px with 16 px
 * patches; audio at 16 kHz with 80 mel channels, as OFASys's speech tasks use. */
void taskplan_opts_default(taskplan_opts_t *opts) {
    memset(opts, 0, sizeof *opts);
    opts->image_size = 96;
    opts->patch = 16;
    opts->max_src_len = 256;
    opts->max_tgt_len = 64;
    opts->beam = 1;
    opts->sample_rate = 16000;
    opts->n_mels = 80;
    opts->frames = 8;
    opts->num_bins = 1000;
}

/* ---- steps per slot --------------------------------------------------------------- */

static void s_step(taskplan_slot_t *sl, step_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_step(taskplan_slot_t *sl, step_kind_t kind, const char *fmt, ...) {
    OFA_ASSERT(sl->nsteps < TASKPLAN_MAX_STEPS);
    taskplan_step_t *st = &sl->steps[sl->nsteps++];
    st->kind = kind;
    st->arg[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->arg, sizeof st->arg, fmt, ap);
        va_end(ap);
    }
}

/* The steps after tokenization common to token sequences. Truncation comes before masking
 * so that the mask ratio applies to what the model actually sees. */
static void s_text_tail(taskplan_slot_t *sl, const instr_slot_t *in) {
    if (in->max_length)
        s_step(sl, STEP_TRUNCATE, "%d tokens", in->max_length);
    if (in->mask_ratio > 0)
        s_step(sl, STEP_MASK, "ratio %.2f", in->mask_ratio);
    if (in->noise_ratio > 0)
        s_step(sl, STEP_NOISE, "ratio %.2f", in->noise_ratio);
}

/* Normalisation is a step only when asked for: most tasks keep case and punctuation. */
static void s_normalize(taskplan_slot_t *sl, const instr_slot_t *in) {
    if (in->uncased || in->no_punctuation)
        s_step(sl, STEP_TEXT_NORMALIZE, "%s%s%s", in->uncased ? "lower case" : "",
               in->uncased && in->no_punctuation ? ", " : "",
               in->no_punctuation ? "strip punctuation" : "");
}

/* Fill the chain of steps of one slot. A slot's own attributes (image_size=, patch=,
 * sample_rate=, ...) win over the plan's options. The chains say what happens, in order,
 * with the parameters a reader of `launch --dry-run` wants to check (sizes, counts);
 * the stages implement them. */
static void s_slot_steps(taskplan_slot_t *sl, const taskplan_opts_t *o) {
    const instr_slot_t *in = sl->in;
    int size = in->image_size ? in->image_size : o->image_size;
    int patch = in->patch ? in->patch : o->patch;
    bool vqgan = (in->preprocess && strcmp(in->preprocess, "image_vqgan") == 0) ||
                 (in->adaptor && strcmp(in->adaptor, "image_vqgan") == 0);
    switch (sl->mod) {
    case MOD_TEXT:
        s_normalize(sl, in);
        /* OFASys's text_phone also derives phone targets for an auxiliary CTC loss; this
         * system trains the text with BPE only, and the chain says so. */
        if (in->preprocess && strcmp(in->preprocess, "text_phone") == 0)
            s_step(sl, STEP_BPE, "text_phone: BPE text, no phone CTC targets");
        else
            s_step(sl, STEP_BPE, NULL);
        s_text_tail(sl, in);
        break;
    case MOD_BOX:
        s_step(sl, STEP_BOX_PARSE, "x0,y0,x1,y1 in source-image pixels");
        sl->num_bins = in->num_bins ? in->num_bins : o->num_bins > 1 ? o->num_bins : 1000;
        s_step(sl, STEP_BOX_BINS, "%d bins, 4 tokens per box", sl->num_bins);
        if (in->noise_ratio > 0)
            s_step(sl, STEP_NOISE, "ratio %.2f", in->noise_ratio);
        break;
    case MOD_PHONE:
        s_step(sl, STEP_PHONE_LOOKUP, NULL);
        s_text_tail(sl, in);
        break;
    case MOD_STRUCT:
        s_step(sl, STEP_STRUCT_LINEARIZE, NULL);
        s_normalize(sl, in);
        s_step(sl, STEP_BPE, NULL);
        s_text_tail(sl, in);
        break;
    case MOD_CATEGORY:
        s_normalize(sl, in);
        s_step(sl, STEP_CATEGORY_LOOKUP, NULL);
        break;
    case MOD_IMAGE:
        s_step(sl, STEP_IMAGE_DECODE, "JPEG or PNG");
        s_step(sl, STEP_IMAGE_RESIZE, "%dx%d", size, size);
        /* VQGAN codes replace patches; the step exists so that the plan of an image
         * generation task can be shown, while taskplan_runnable refuses to run it. */
        if (vqgan) {
            s_step(sl, STEP_IMAGE_VQGAN, "image codes");
        } else {
            s_step(sl, STEP_IMAGE_PATCHIFY, "%d px, %d patches", patch,
                   (size / patch) * (size / patch));
            if (in->mask_ratio > 0)
                s_step(sl, STEP_IMAGE_MASK, "ratio %.2f", in->mask_ratio);
        }
        break;
    case MOD_AUDIO:
        s_step(sl, STEP_AUDIO_DECODE, NULL);
        s_step(sl, STEP_AUDIO_RESAMPLE, "%d Hz", in->sample_rate ? in->sample_rate : o->sample_rate);
        s_step(sl, STEP_AUDIO_FBANK, "%d mels", in->n_mels ? in->n_mels : o->n_mels);
        if (in->max_length)
            s_step(sl, STEP_TRUNCATE, "%d frames", in->max_length);
        if (in->mask_ratio > 0)
            s_step(sl, STEP_MASK, "ratio %.2f", in->mask_ratio);
        s_step(sl, STEP_AUDIO_STACK, NULL);
        break;
    case MOD_VIDEO:
        s_step(sl, STEP_VIDEO_DEMUX, NULL);
        s_step(sl, STEP_VIDEO_DECODE, NULL);
        s_step(sl, STEP_VIDEO_SAMPLE, "%d frames", in->frames ? in->frames : o->frames);
        s_step(sl, STEP_VIDEO_RESIZE, "%dx%d", size, size);
        s_step(sl, STEP_VIDEO_PATCHIFY, "%d px, %d patches per frame", patch,
               (size / patch) * (size / patch));
        break;
    case MOD_MOTION:
        s_step(sl, STEP_MOTION_PARSE, NULL);
        s_step(sl, STEP_MOTION_6D, NULL);
        break;
    case MOD__COUNT:
        OFA_ASSERT(!"bad modality");
    }
}

/* ---- segments --------------------------------------------------------------------- */

/* The segments of one side while they are being built. */
typedef struct {
    taskplan_seg_t *segs;
    int nsegs, cap;
    bool open;            /* the last segment is a sequence still taking items */
} s_segs_t;

static taskplan_seg_t *s_seg_new(s_segs_t *ss, mod_t mod, bool wrapped, bool repeated) {
    if (ss->nsegs == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 4;
        ss->segs = util_realloc(ss->segs, (size_t)ss->cap * sizeof *ss->segs);
    }
    taskplan_seg_t *seg = &ss->segs[ss->nsegs++];
    memset(seg, 0, sizeof *seg);
    seg->mod = mod;
    seg->wrapped = wrapped;
    seg->repeated = repeated;
    return seg;
}

/* A segment carries loss when any of its items does: the tokenize tier still masks the
 * loss item by item (tgt_out = <pad> at no-loss positions). */
static void s_seg_add(taskplan_seg_t *seg, taskplan_item_t item) {
    seg->items = util_realloc(seg->items, (size_t)(seg->nitems + 1) * sizeof *seg->items);
    seg->items[seg->nitems++] = item;
    seg->loss |= item.loss;
}

/* The sequence segment that takes the next text-like item (opening one if needed). The
 * border of a repeated group also starts a new sequence: the group's body is repeated as
 * a whole, so it cannot share a sequence with what is around it. */
static taskplan_seg_t *s_seq(s_segs_t *ss, bool repeated) {
    if (!ss->open || ss->segs[ss->nsegs - 1].repeated != repeated) {
        s_seg_new(ss, MOD_TEXT, true, repeated);
        ss->open = true;
    }
    return &ss->segs[ss->nsegs - 1];
}

/* Turn one parsed side into segments and slots (appended to tm->slots). */
static int s_compile_sentence(taskplan_template_t *tm, const instr_sentence_t *sen,
                              bool target, s_segs_t *ss, const taskplan_opts_t *o) {
    for (int i = 0; i < sen->nsegs; i++) {
        const instr_seg_t *is = &sen->segs[i];
        switch (is->kind) {
        case INSTR_SEG_TEXT: {
            taskplan_item_t it = {.kind = TP_ITEM_TEXT, .text = is->text, .slot = -1};
            s_seg_add(s_seq(ss, is->repeated), it);
            break;
        }
        case INSTR_SEG_BOS:
        case INSTR_SEG_EOS:
            /* The older syntax marks the borders that grouping finds by itself; a
             * marker only ever closes the sequence that is open. */
            ss->open = false;
            break;
        case INSTR_SEG_SLOT: {
            const instr_slot_t *in = &is->slot;
            taskplan_slot_t *sl = &tm->slots[tm->nslots];
            memset(sl, 0, sizeof *sl);
            sl->in = in;
            sl->mod = in->mod;
            sl->column = in->column;
            sl->target = target;
            sl->loss = target && !in->no_loss;
            sl->repeated = is->repeated;
            s_slot_steps(sl, o);
            taskplan_item_t it = {.kind = TP_ITEM_SLOT, .slot = tm->nslots, .loss = sl->loss};
            tm->nslots++;
            /* add_bos/add_eos of the older syntax are borders, as <BOS>/<EOS> are. */
            if (mod_is_textlike(in->mod)) {
                if (in->add_bos)
                    ss->open = false;
                s_seg_add(s_seq(ss, is->repeated), it);
                if (in->add_eos)
                    ss->open = false;
            } else {
                ss->open = false;
                s_seg_add(s_seg_new(ss, in->mod, false, is->repeated), it);
            }
            break;
        }
        }
    }
    return 0;
}

/* ---- compile ---------------------------------------------------------------------- */

/* The generator follows from what carries loss on the target side: a closed set is
 * decoded by scoring its candidates, a lone box by decoding four location bins, and
 * anything else (free text, a repeated box+text group) by greedy or beam search. */
static taskplan_gen_t s_template_gen(const taskplan_template_t *tm, int beam) {
    int nloss = 0, nbox = 0;
    bool closed = false, repeated = false;
    for (int i = 0; i < tm->nslots; i++) {
        const taskplan_slot_t *sl = &tm->slots[i];
        if (!sl->loss)
            continue;
        nloss++;
        nbox += sl->mod == MOD_BOX;
        repeated |= sl->repeated;
        closed |= sl->in->closed_set || sl->mod == MOD_CATEGORY;
    }
    if (closed)
        return GEN_CLOSED_SET;
    if (nloss == 1 && nbox == 1 && !repeated)
        return GEN_BOX;
    return beam > 1 ? GEN_BEAM : GEN_GREEDY;
}

/* The metric a task of this shape is usually judged by (OFASys's choices). */
static const char *s_default_metric(const taskplan_t *tp) {
    const taskplan_template_t *tm = &tp->tmpls[0];
    bool src_audio = false, src_visual = false, rep_box = false;
    for (int i = 0; i < tm->nslots; i++) {
        const taskplan_slot_t *sl = &tm->slots[i];
        if (!sl->target) {
            src_audio |= sl->mod == MOD_AUDIO;
            src_visual |= sl->mod == MOD_IMAGE || sl->mod == MOD_VIDEO;
            continue;
        }
        if (!sl->loss)
            continue;
        switch (sl->mod) {
        case MOD_IMAGE: return "clip_ti";
        case MOD_AUDIO: return "mcd";
        case MOD_MOTION:
        case MOD_VIDEO: return "-";
        case MOD_BOX: rep_box |= sl->repeated; break;
        default: break;
        }
    }
    if (tp->gen == GEN_CLOSED_SET)
        return "accuracy";
    if (tp->gen == GEN_BOX)
        return "iou_acc";
    if (rep_box)
        return "map";
    if (src_audio)
        return "wer";
    if (src_visual)
        return "cider";
    return "bleu";
}

/* Record the column a slot reads, so that the source knows which columns to read and
 * how (an IMAGE column is bytes to base64-decode, a TEXT column is a string). */
static int s_add_column(taskplan_t *tp, const taskplan_slot_t *sl, char *err, size_t errlen) {
    if (!sl->column)
        return 0;
    for (int i = 0; i < tp->ncolumns; i++) {
        taskplan_column_t *c = &tp->columns[i];
        if (strcmp(c->name, sl->column) != 0)
            continue;
        /* One column feeds one kind of raw value: text-like slots may share it (a
         * sentence on both sides), but bytes of an image are no text. */
        bool both_text = mod_is_textlike(c->mod) && mod_is_textlike(sl->mod);
        if (c->mod != sl->mod && !both_text)
            return util_err(err, errlen,
                            "instruction:%d:%d: column '%s' is used as %s here and as %s "
                            "before",
                            sl->in->line, sl->in->col, sl->column, mod_name(sl->mod),
                            mod_name(c->mod));
        c->source |= !sl->target;
        return 0;
    }
    tp->columns = util_realloc(tp->columns, (size_t)(tp->ncolumns + 1) * sizeof *tp->columns);
    tp->columns[tp->ncolumns++] =
        (taskplan_column_t){.name = sl->column, .mod = sl->mod, .source = !sl->target};
    return 0;
}

/* The route: the tiers, joined by commas. */
static void s_set_route(taskplan_t *tp) {
    tp->route[0] = '\0';
    for (int k = 0; k < tp->ntiers; k++) {
        size_t used = strlen(tp->route);
        snprintf(tp->route + used, sizeof tp->route - used, "%s%s", used ? "," : "",
                 tp->tiers[k]);
    }
}

/* Parse, then compile every alternative. All alternatives of a task share one route and
 * one generator: a sample may take any of them, and the batcher and the evaluator treat
 * a task as one thing. The tokenize tier is always on the route, as the last tier,
 * because it is the one that builds the model input. */
taskplan_t *taskplan_compile(const char *instruction, const taskplan_opts_t *opts,
                             char *err, size_t errlen) {
    instr_t *in = instr_parse(instruction, err, errlen);
    if (!in)
        return NULL;
    taskplan_t *tp = util_calloc(1, sizeof *tp);
    tp->instr = in;
    if (opts)
        tp->opts = *opts;
    else
        taskplan_opts_default(&tp->opts);
    const taskplan_opts_t *o = &tp->opts;
    if (o->patch <= 0 || o->image_size < o->patch || o->image_size % o->patch) {
        util_err(err, errlen, "image size %d is not a positive multiple of the patch %d",
                 o->image_size, o->patch);
        taskplan_destroy(&tp);
        return NULL;
    }
    tp->ntmpls = in->nalts;
    tp->tmpls = util_calloc((size_t)in->nalts, sizeof *tp->tmpls);
    bool tiers[5] = {false, false, false, false, true};
    for (int a = 0; a < in->nalts; a++) {
        const instr_template_t *it = &in->alts[a];
        taskplan_template_t *tm = &tp->tmpls[a];
        tm->slots = util_calloc((size_t)(it->src.nslots + it->tgt.nslots) + 1, sizeof *tm->slots);
        s_segs_t src = {0}, tgt = {0};
        s_compile_sentence(tm, &it->src, false, &src, o);
        s_compile_sentence(tm, &it->tgt, true, &tgt, o);
        tm->src = src.segs;
        tm->nsrc = src.nsegs;
        tm->tgt = tgt.segs;
        tm->ntgt = tgt.nsegs;
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            /* A slot's own image_size must also split into whole patches. */
            int size = sl->in->image_size ? sl->in->image_size : o->image_size;
            int patch = sl->in->patch ? sl->in->patch : o->patch;
            if ((sl->mod == MOD_IMAGE || sl->mod == MOD_VIDEO) && (size % patch || size < patch)) {
                util_err(err, errlen,
                         "instruction:%d:%d: image_size %d is not a multiple of patch %d",
                         sl->in->line, sl->in->col, size, patch);
                taskplan_destroy(&tp);
                return NULL;
            }
            if (s_add_column(tp, sl, err, errlen) < 0) {
                taskplan_destroy(&tp);
                return NULL;
            }
            if (!sl->target && sl->mod == MOD_IMAGE)
                tp->has_image_input = true;
            for (int s = 0; s < sl->nsteps; s++)
                for (int k = 0; k < 5; k++)
                    if (strcmp(taskplan_step_tier(sl->steps[s].kind), s_tier_order[k]) == 0)
                        tiers[k] = true;
        }
        taskplan_gen_t gen = s_template_gen(tm, o->beam);
        if (a == 0) {
            tp->gen = gen;
        } else if (gen != tp->gen) {
            util_err(err, errlen,
                     "instruction: template %d generates with %s but template 1 with %s; "
                     "alternatives (|||) must produce the same kind of output",
                     a + 1, taskplan_gen_name(gen), taskplan_gen_name(tp->gen));
            taskplan_destroy(&tp);
            return NULL;
        }
    }
    for (int k = 0; k < 5; k++)
        if (tiers[k])
            tp->tiers[tp->ntiers++] = s_tier_order[k];
    s_set_route(tp);
    snprintf(tp->metric, sizeof tp->metric, "%s", s_default_metric(tp));
    return tp;
}

int taskplan_fuse_tokenize(taskplan_t *tp) {
    if (tp->ntiers < 2 || strcmp(tp->tiers[tp->ntiers - 1], "tokenize") != 0)
        return 0;
    tp->ntiers--;
    s_set_route(tp);
    return 1;
}

void taskplan_destroy(taskplan_t **self_p) {
    if (!self_p || !*self_p)
        return;
    taskplan_t *tp = *self_p;
    for (int a = 0; a < tp->ntmpls; a++) {
        taskplan_template_t *tm = &tp->tmpls[a];
        for (int i = 0; i < tm->nsrc; i++)
            free(tm->src[i].items);
        for (int i = 0; i < tm->ntgt; i++)
            free(tm->tgt[i].items);
        free(tm->src);
        free(tm->tgt);
        free(tm->slots);
    }
    free(tp->tmpls);
    free(tp->columns);
    free(tp->group_column);
    instr_destroy(&tp->instr);
    free(tp);
    *self_p = NULL;
}

/* ---- metric, runnable ------------------------------------------------------------- */

int taskplan_bind_group(taskplan_t *tp, const char *column, char *err, size_t errlen) {
    if (!column || !*column)
        return util_err(err, errlen, "group_column: empty column name");
    int found = 0;
    for (int a = 0; a < tp->ntmpls; a++)
        for (int i = 0; i < tp->tmpls[a].nslots; i++) {
            const taskplan_slot_t *sl = &tp->tmpls[a].slots[i];
            if (!sl->target || !sl->repeated)
                continue;
            found++;
            if (sl->column && strcmp(sl->column, column) != 0)
                return util_err(err, errlen, "group_column '%s': the repeated group's %s slot "
                                "already reads column '%s'", column, mod_name(sl->mod),
                                sl->column);
        }
    if (!found)
        return util_err(err, errlen, "group_column '%s': the instruction has no repeated "
                        "target group ( ... )*", column);
    free(tp->group_column);
    tp->group_column = util_strdup(column);
    for (int a = 0; a < tp->ntmpls; a++)
        for (int i = 0; i < tp->tmpls[a].nslots; i++) {
            taskplan_slot_t *sl = &tp->tmpls[a].slots[i];
            if (!sl->target || !sl->repeated)
                continue;
            sl->column = tp->group_column;
            if (s_add_column(tp, sl, err, errlen) != 0)
                return -1;
        }
    return 0;
}

int taskplan_set_metric(taskplan_t *tp, const char *metric, char *err, size_t errlen) {
    if (!metric || !*metric)
        return util_err(err, errlen, "empty metric (known: %s, or \"-\" for none)",
                        taskplan_metric_names());
    if (strlen(metric) >= sizeof tp->metric)
        return util_err(err, errlen, "metric '%s' is too long", metric);
    if (strcmp(metric, "-") != 0) {
        /* "accuracy/mcc": several metrics, the first one is the headline. */
        char buf[64];
        snprintf(buf, sizeof buf, "%s", metric);
        char *save = NULL;
        for (char *m = strtok_r(buf, "/", &save); m; m = strtok_r(NULL, "/", &save)) {
            bool ok = false;
            for (int i = 0; i < NMETRICS; i++)
                ok |= strcmp(m, s_metrics[i]) == 0;
            if (!ok)
                return util_err(err, errlen, "unknown metric '%s' (known: %s, or \"-\")", m,
                                taskplan_metric_names());
        }
        if (metric[0] == '/' || metric[strlen(metric) - 1] == '/' || strstr(metric, "//"))
            return util_err(err, errlen, "bad metric list '%s'", metric);
    }
    snprintf(tp->metric, sizeof tp->metric, "%s", metric);
    return 0;
}

/* Generation of non-text outputs needs parts this system does not have (a VQGAN, a
 * vocoder, a motion decoder). Such tasks still compile, so that their plan can be shown
 * with --dry-run; a real run stops here with a message naming what is missing, rather
 * than training something that cannot be evaluated. */
int taskplan_runnable(const taskplan_t *tp, char *err, size_t errlen) {
    for (int a = 0; a < tp->ntmpls; a++) {
        const taskplan_template_t *tm = &tp->tmpls[a];
        int nloss = 0;
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            nloss += sl->loss;
            if (!sl->target)
                continue;
            switch (sl->mod) {
            case MOD_IMAGE:
                return util_err(err, errlen,
                                "target IMAGE needs image-code generation (a VQGAN tokenizer "
                                "and decoder), which this system does not have yet");
            case MOD_AUDIO:
                return util_err(err, errlen,
                                "target AUDIO needs speech-frame generation (fbank "
                                "regression and a vocoder), which this system does not have "
                                "yet");
            case MOD_MOTION:
                return util_err(err, errlen,
                                "target MOTION needs motion generation (6-D rotation "
                                "frames), which this system does not have yet");
            case MOD_VIDEO:
                return util_err(err, errlen,
                                "target VIDEO needs video generation, which this system "
                                "does not have yet");
            default: break;
            }
        }
        if (nloss == 0)
            return util_err(err, errlen,
                            "the target has no slot that carries loss: nothing to train "
                            "(template %d)",
                            a + 1);
    }
    return 0;
}

/* ---- render ----------------------------------------------------------------------- */

/* A growing string for the rendering. */
typedef struct {
    char *s;
    size_t len, cap;
} s_buf_t;

static void s_printf(s_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_printf(s_buf_t *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)(n > 0 ? n : 0) + 1) * 2;
        b->s = util_realloc(b->s, b->cap);
    }
}

static void s_render_slot_ref(s_buf_t *b, const taskplan_slot_t *sl) {
    s_printf(b, "[%s%s%s]", mod_name(sl->mod), sl->column ? ":" : "",
             sl->column ? sl->column : "");
}

static void s_render_segs(s_buf_t *b, const taskplan_template_t *tm, const taskplan_seg_t *segs,
                          int n, const char *side) {
    s_printf(b, "    %s:%s\n", side, n ? "" : " (empty)");
    for (int i = 0; i < n; i++) {
        const taskplan_seg_t *seg = &segs[i];
        /* A repeated group's items repeat inside one <s> ... </s> (the tokenize tier
         * writes every object of the cell, then one </s>). */
        s_printf(b, "      %d. %-5s ", i + 1, mod_name(seg->mod));
        if (seg->wrapped)
            s_printf(b, "<s> ");
        if (seg->repeated)
            s_printf(b, "( ");
        for (int k = 0; k < seg->nitems; k++) {
            const taskplan_item_t *it = &seg->items[k];
            if (it->kind == TP_ITEM_TEXT)
                s_printf(b, "'%s' ", it->text);
            else
                s_render_slot_ref(b, &tm->slots[it->slot]), s_printf(b, " ");
        }
        if (seg->repeated)
            s_printf(b, ")* ");
        if (seg->wrapped)
            s_printf(b, "</s>");
        s_printf(b, "%s\n", seg->loss ? "   [loss]" : "");
    }
}

/* The dry-run text: one line per segment, then per slot its chain grouped by tier
 * ("image: jpeg-decode -> resize | tokenize: mask-patches"), so that the route a
 * sample takes can be read off each slot. */
char *taskplan_render(const taskplan_t *tp, const char *task_name) {
    s_buf_t b = {util_malloc(256), 0, 256};
    b.s[0] = '\0';
    s_printf(&b, "task %s\n", task_name ? task_name : "?");
    s_printf(&b, "  instruction: %s\n", tp->instr->text);
    s_printf(&b, "  route: %s\n", tp->route);
    for (int a = 0; a < tp->ntmpls; a++) {
        const taskplan_template_t *tm = &tp->tmpls[a];
        s_printf(&b, "  template %d/%d\n", a + 1, tp->ntmpls);
        s_render_segs(&b, tm, tm->src, tm->nsrc, "source");
        s_render_segs(&b, tm, tm->tgt, tm->ntgt, "target");
        s_printf(&b, "    slots:\n");
        for (int i = 0; i < tm->nslots; i++) {
            const taskplan_slot_t *sl = &tm->slots[i];
            s_printf(&b, "      %s ", sl->target ? "tgt" : "src");
            s_render_slot_ref(&b, sl);
            s_printf(&b, "%s:", sl->target ? (sl->loss ? " loss" : " no_loss") : "");
            const char *tier = NULL;
            for (int s = 0; s < sl->nsteps; s++) {
                const taskplan_step_t *st = &sl->steps[s];
                const char *t = taskplan_step_tier(st->kind);
                if (!tier || strcmp(tier, t) != 0)
                    s_printf(&b, "%s %s: ", s ? " |" : "", t);
                else
                    s_printf(&b, " -> ");
                tier = t;
                s_printf(&b, "%s", taskplan_step_name(st->kind));
                if (st->arg[0])
                    s_printf(&b, " (%s)", st->arg);
            }
            s_printf(&b, "\n");
        }
    }
    s_printf(&b, "  generator: %s\n", taskplan_gen_name(tp->gen));
    s_printf(&b, "  metric: %s\n", tp->metric);
    char why[256];
    if (taskplan_runnable(tp, why, sizeof why) < 0)
        s_printf(&b, "  runnable: no: %s\n", why);
    else
        s_printf(&b, "  runnable: yes\n");
    return b.s;
}

/* A hash of (seed, id) rather than a running counter: whichever worker tokenizes a
 * sample, and however often it is re-dispatched, it takes the same template. */
int taskplan_pick_template(const taskplan_t *tp, uint64_t seed, uint64_t sample_id) {
    if (tp->ntmpls <= 1)
        return 0;
    util_rng_t r = {seed ^ (sample_id * 0x9e3779b97f4a7c15ULL)};
    return (int)(util_rng_next(&r) % (uint64_t)tp->ntmpls);
}

const taskplan_column_t *taskplan_column(const taskplan_t *tp, const char *name) {
    for (int i = 0; i < tp->ncolumns; i++)
        if (strcmp(tp->columns[i].name, name) == 0)
            return &tp->columns[i];
    return NULL;
}
