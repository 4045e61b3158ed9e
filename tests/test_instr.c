/* test_instr.c: the instruction parser (plans/instr.c): valid instructions of every
 * shape OFASys writes, and each error with its message and column. */
#include <criterion/criterion.h>
#include <string.h>

#include "instr.h"
#include "util.h"

static char err[512];

static instr_t *ok(const char *text) {
    err[0] = '\0';
    instr_t *in = instr_parse(text, err, sizeof err);
    cr_assert_not_null(in, "'%s' should parse, got: %s", text, err);
    return in;
}

/* Parse must fail with exactly this message. */
static void fails(const char *text, const char *want) {
    err[0] = '\0';
    instr_t *in = instr_parse(text, err, sizeof err);
    cr_assert_null(in, "'%s' should fail with \"%s\"", text, want);
    cr_assert(strstr(err, want) != NULL, "'%s': want \"%s\", got \"%s\"", text, want, err);
}

Test(instr, modality_values_are_the_wire_values) {
    /* src_mod carries these numbers; they must never move. */
    cr_assert_eq(MOD_TEXT, 0);
    cr_assert_eq(MOD_IMAGE, 1);
    cr_assert_eq(MOD_BOX, 2);
    cr_assert_eq(MOD_AUDIO, 3);
    cr_assert_eq(MOD_VIDEO, 4);
    cr_assert_eq(MOD_PHONE, 5);
    cr_assert_eq(MOD_MOTION, 6);
    cr_assert_eq(MOD_STRUCT, 7);
    cr_assert_eq(MOD_CATEGORY, 8);
    cr_assert_eq(MOD__COUNT, 9);
    for (int m = 0; m < MOD__COUNT; m++)
        cr_assert_eq(mod_from_name(mod_name((mod_t)m)), m);
    cr_assert_eq(mod_from_name("image"), -1);
    cr_assert(mod_is_textlike(MOD_BOX) && !mod_is_textlike(MOD_IMAGE));
}

Test(instr, caption) {
    instr_t *in = ok("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    cr_assert_eq(in->nalts, 1);
    const instr_sentence_t *src = &in->alts[0].src, *tgt = &in->alts[0].tgt;
    cr_assert_eq(src->nsegs, 2);
    cr_assert_eq(src->nslots, 1);
    cr_assert_eq(src->segs[0].kind, INSTR_SEG_SLOT);
    cr_assert_eq(src->segs[0].slot.mod, MOD_IMAGE);
    cr_assert_str_eq(src->segs[0].slot.column, "img");
    cr_assert_eq(src->segs[0].slot.col, 1);
    cr_assert_eq(src->segs[1].kind, INSTR_SEG_TEXT);
    cr_assert_str_eq(src->segs[1].text, "what does the image describe?");
    cr_assert_eq(tgt->nsegs, 1);
    cr_assert_eq(tgt->segs[0].slot.mod, MOD_TEXT);
    cr_assert_str_eq(tgt->segs[0].slot.column, "cap");
    cr_assert_eq(tgt->segs[0].slot.col, 46);
    cr_assert_eq(tgt->rep_count, 0);
    instr_destroy(&in);
    cr_assert_null(in);
    instr_destroy(&in);   /* NULL is fine */
}

Test(instr, attributes) {
    instr_t *in = ok("what is the complete text of \" [TEXT:sentence, mask_ratio = 0.3,uncased] "
                     "\"? -> [TEXT:sentence,max_length=128,noise_ratio=0.2,no_punctuation] "
                     "[TEXT:label,closed_set,no_loss,preprocess=text_phone]");
    const instr_slot_t *s = &in->alts[0].src.segs[1].slot;
    cr_assert_float_eq(s->mask_ratio, 0.3f, 1e-6);
    cr_assert(s->uncased);
    cr_assert_eq(s->attrs, INSTR_ATTR_MASK_RATIO | INSTR_ATTR_UNCASED);
    const instr_slot_t *t = &in->alts[0].tgt.segs[0].slot;
    cr_assert_eq(t->max_length, 128);
    cr_assert_float_eq(t->noise_ratio, 0.2f, 1e-6);
    cr_assert(t->no_punctuation && !t->no_loss);
    const instr_slot_t *l = &in->alts[0].tgt.segs[1].slot;
    cr_assert(l->closed_set && l->no_loss);
    cr_assert_str_eq(l->preprocess, "text_phone");
    instr_destroy(&in);
}

Test(instr, per_modality_attributes) {
    instr_t *in = ok("[IMAGE:img,image_size=64,patch=8] [AUDIO:wav,sample_rate=8000,n_mels=40] "
                     "[VIDEO:clip,frames=4] -> [BOX:b,num_bins=500]");
    const instr_seg_t *sg = in->alts[0].src.segs;
    cr_assert_eq(sg[0].slot.image_size, 64);
    cr_assert_eq(sg[0].slot.patch, 8);
    cr_assert_eq(sg[1].slot.sample_rate, 8000);
    cr_assert_eq(sg[1].slot.n_mels, 40);
    cr_assert_eq(sg[2].slot.frames, 4);
    cr_assert_eq(in->alts[0].tgt.segs[0].slot.num_bins, 500);
    instr_destroy(&in);
}

Test(instr, alternatives) {
    instr_t *in = ok("[IMAGE:img] what does the image describe? -> [TEXT:cap] ||| "
                     "[IMAGE:img] describe the image. -> [TEXT:cap]");
    cr_assert_eq(in->nalts, 2);
    cr_assert_str_eq(in->alts[1].src.segs[1].text, "describe the image.");
    instr_destroy(&in);
    fails("[IMAGE:img] a -> [TEXT:cap] ||| [IMAGE:img] b [TEXT:cap]",
          "instruction:1:33: no '->'");
}

Test(instr, repeated_group_and_unnamed_target_slots) {
    instr_t *in = ok("[IMAGE:img] what are the objects in the image? -> ( [BOX] [TEXT])*");
    const instr_sentence_t *t = &in->alts[0].tgt;
    cr_assert_eq(t->nsegs, 2);
    cr_assert_eq(t->rep_first, 0);
    cr_assert_eq(t->rep_count, 2);
    cr_assert(t->segs[0].repeated && t->segs[1].repeated);
    cr_assert_null(t->segs[0].slot.column);
    cr_assert_eq(t->segs[0].slot.mod, MOD_BOX);
    instr_destroy(&in);
    in = ok("what is the complete image? caption: [TEXT:text]\"? -> "
            "[IMAGE,preprocess=image_vqgan,adaptor=image_vqgan]");
    cr_assert_null(in->alts[0].tgt.segs[0].slot.column);
    cr_assert_str_eq(in->alts[0].tgt.segs[0].slot.adaptor, "image_vqgan");
    instr_destroy(&in);
    /* a parenthesis in prose stays prose */
    in = ok("[TEXT:q] (roughly) -> [TEXT:a]");
    cr_assert_str_eq(in->alts[0].src.segs[1].text, "(roughly)");
    cr_assert_eq(in->alts[0].src.rep_count, 0);
    instr_destroy(&in);
}

Test(instr, old_bos_eos_syntax) {
    instr_t *in = ok("[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> "
                     "[TEXT:cap,add_bos,add_eos] <EOS>");
    const instr_sentence_t *s = &in->alts[0].src;
    cr_assert_eq(s->nsegs, 4);
    cr_assert_eq(s->segs[1].kind, INSTR_SEG_BOS);
    cr_assert_eq(s->segs[3].kind, INSTR_SEG_EOS);
    cr_assert(in->alts[0].tgt.segs[1].slot.add_bos && in->alts[0].tgt.segs[1].slot.add_eos);
    instr_destroy(&in);
}

Test(instr, multiline_positions) {
    fails("[IMAGE:img] what\n does [IMAGES:x] -> [TEXT:cap]",
          "instruction:2:8: unknown modality 'IMAGES'");
}

Test(instr, arrow_errors) {
    fails("[IMAGE:img] what does the image describe? [TEXT:cap]",
          "instruction:1:1: no '->' between source and target");
    fails("[IMAGE:img] a -> b -> [TEXT:cap]", "instruction:1:20: more than one '->'");
}

Test(instr, bracket_errors) {
    fails("[IMAGE:img what does the image describe? -> [TEXT:cap]",
          "instruction:1:1: unbalanced '['");
    fails("[IMAGE:img] what -> [TEXT:cap", "instruction:1:21: unbalanced '['");
    fails("IMAGE:img] what -> [TEXT:cap]", "instruction:1:10: unbalanced ']'");
    fails("[IMAGE:img] what -> ( [BOX] [TEXT]", "instruction:1:21: unbalanced '('");
    fails("[IMAGE:img] what -> [BOX] [TEXT])*", "instruction:1:33: unbalanced ')*'");
}

Test(instr, modality_errors) {
    fails("[IMAGE:img] what does the image describe? -> [IMAGES:cap]",
          "instruction:1:47: unknown modality 'IMAGES'");
    fails("[BOUNDING_BOX:b] -> [TEXT:cap]", "instruction:1:2: unknown modality 'BOUNDING_BOX'");
    fails("[image:img] -> [TEXT:cap]", "modalities are upper case: IMAGE");
    fails("[:img] -> [TEXT:cap]", "instruction:1:2: slot without a modality");
}

Test(instr, column_errors) {
    fails("[IMAGE:] what does the image describe? -> [TEXT:cap]",
          "instruction:1:7: empty column name");
    fails("[IMAGE: ,no_loss] a -> [TEXT:cap]", "instruction:1:7: empty column name");
    fails("[IMAGE:/etc/passwd] a -> [TEXT:cap]", "instruction:1:8: bad character '/'");
    fails("[TEXT] a -> [TEXT:cap]", "instruction:1:1: source slot [TEXT] needs a column name");
}

Test(instr, attribute_errors) {
    fails("[TEXT:a,mask_ratio=7] -> [TEXT:b]",
          "instruction:1:20: mask_ratio=7 is out of range [0, 1]");
    fails("[TEXT:a,mask_ratio=abc] -> [TEXT:b]",
          "instruction:1:20: attribute 'mask_ratio' wants a number in [0, 1], got 'abc'");
    fails("[TEXT:a,noise_ratio=-0.1] -> [TEXT:b]", "noise_ratio=-0.1 is out of range");
    fails("[TEXT:a] -> [TEXT:b,max_length=0]", "instruction:1:32: max_length=0 is out of range");
    fails("[TEXT:a] -> [TEXT:b,max_length=1.5]", "attribute 'max_length' wants an integer");
    fails("[TEXT:a,mask_ratio] -> [TEXT:b]", "instruction:1:9: attribute 'mask_ratio' needs a value");
    fails("[TEXT:a] -> [TEXT:b,no_loss=1]", "instruction:1:21: attribute 'no_loss' is a flag");
    fails("[TEXT:a,nloss] -> [TEXT:b]", "instruction:1:9: unknown attribute 'nloss'");
    fails("[TEXT:a] -> [TEXT:b,no_loss,no_loss]",
          "instruction:1:29: repeated attribute 'no_loss'");
    fails("[TEXT:a,] -> [TEXT:b]", "instruction:1:9: empty attribute");
    fails("[TEXT:a,closed_set] -> [TEXT:b]",
          "instruction:1:9: attribute 'closed_set' applies to target slots only");
    fails("[IMAGE:a,uncased] -> [TEXT:b]", "attribute 'uncased' does not apply to IMAGE slots");
    fails("[TEXT:a,preprocess=../../bin/sh] -> [TEXT:b]",
          "instruction:1:20: preprocess '../../bin/sh' is not a registered name");
    fails("[TEXT:a,adaptor=image_vqgan] -> [TEXT:b]",
          "adaptor 'image_vqgan' applies to IMAGE slots, not TEXT");
    fails("[IMAGE:a,image_size=8] -> [TEXT:b]", "image_size=8 is out of range [16, 4096]");
}

Test(instr, no_slot_at_all) {
    fails("what does the image describe? -> a caption", "instruction:1:1: instruction has no slot");
    fails("   ", "instruction:1:1: empty instruction");
    fails("", "empty instruction");
    fails("[TEXT:a] -> [TEXT:b] ||| plain -> text", "instruction:1:26: instruction has no slot");
    /* either side may be empty of slots */
    instr_t *in = ok("[TEXT:a] -> ");
    cr_assert_eq(in->alts[0].tgt.nsegs, 0);
    instr_destroy(&in);
}

Test(instr, registry) {
    cr_assert_eq(instr_registry_preprocess("text_phone"), MOD_TEXT);
    cr_assert_eq(instr_registry_adaptor("image_vqgan"), MOD_IMAGE);
    cr_assert_eq(instr_registry_adaptor("audio_tgt_fbank"), MOD_AUDIO);
    cr_assert_eq(instr_registry_preprocess("motion_6d"), MOD_MOTION);
    cr_assert_eq(instr_registry_preprocess("/bin/sh"), -1);
    cr_assert(strstr(instr_registry_adaptor_names(), "image_vqgan") != NULL);
}

/* Hostile input: every prefix of a tricky instruction either parses or fails cleanly. */
Test(instr, every_prefix_is_handled) {
    const char *text = "[IMAGE:img,mask_ratio=0.5] which ( region [TEXT:cap] )* <BOS> -> "
                       "( [BOX] [TEXT:x,closed_set])* ||| [VIDEO:v] -> [TEXT:t]";
    size_t n = strlen(text);
    char buf[256];
    for (size_t i = 0; i <= n; i++) {
        memcpy(buf, text, i);
        buf[i] = '\0';
        instr_t *in = instr_parse(buf, err, sizeof err);
        if (!in)
            cr_assert(strncmp(err, "instruction:", 12) == 0, "prefix %zu: %s", i, err);
        instr_destroy(&in);
    }
}

/* Random edits of real instructions (a bounded, deterministic fuzz): the parser gives an
 * instruction or an "instruction:L:C:" error, never a crash (run under ASan in CI with
 * OFA_SANITIZE=ON). */
Test(instr, random_edits_never_crash) {
    static const char *seeds[] = {
        "[IMAGE:img] which region does the text \" [TEXT:cap] \" describe? -> [BOX:patch_boxes]",
        "[IMAGE:img] what are the objects in the image? -> ( [BOX] [TEXT])*",
        "what is the complete text of \" [TEXT:text,mask_ratio=0.3] \"? -> [TEXT:text]",
        "[AUDIO:wav] what? -> [TEXT:text,preprocess=text_phone] ||| [AUDIO:wav] -> [TEXT:text]",
    };
    static const char alphabet[] = "[]():,=->|*<BOS>EOS_ aZ0.9\"\n\t";
    util_rng_t rng = {12345};
    char buf[512];
    for (int it = 0; it < 20000; it++) {
        const char *s = seeds[util_rng_next(&rng) % 4];
        size_t n = strlen(s);
        memcpy(buf, s, n + 1);
        int edits = 1 + (int)(util_rng_next(&rng) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = util_rng_next(&rng) % (n + 1);
            char c = alphabet[util_rng_next(&rng) % (sizeof alphabet - 1)];
            switch (util_rng_next(&rng) % 3) {
            case 0: if (at < n) buf[at] = c; break;                          /* replace */
            case 1: if (n + 1 < sizeof buf) {                                /* insert */
                        memmove(buf + at + 1, buf + at, n - at + 1); buf[at] = c; n++; }
                    break;
            case 2: if (at < n) { memmove(buf + at, buf + at + 1, n - at); n--; } break;
            }
        }
        instr_t *in = instr_parse(buf, err, sizeof err);
        if (!in)
            cr_assert(strncmp(err, "instruction:", 12) == 0, "'%s': %s", buf, err);
        instr_destroy(&in);
    }
}
