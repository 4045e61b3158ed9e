/* test_tokenize.c: model inputs built from real compiled task plans (plans/) and a
 * small BPE trained here: layout of src/tgt, loss labels, boxes, masking, the
 * truncation rule, rejects, and the inverse used for evaluation. */
#include <criterion/criterion.h>

#include "child_proc.h"
#include "tokenize.h"
#include "util.h"

#include <math.h>
#include <string.h>

static const char *s_corpus[] = {
    "what does the image describe?",
    "which region does the text describe?",
    "what is the complete text of",
    "two dogs playing in the snow",
    "a man riding a horse on the beach",
    "a dog and a cat playing with a ball",
    "answer: dog",
    "answer: cat",
};

static tok_bpe_t *s_bpe(void) {
    tok_bpe_trainer_t *tr = tok_bpe_trainer_new();
    for (int r = 0; r < 3; r++)
        for (size_t i = 0; i < sizeof s_corpus / sizeof s_corpus[0]; i++)
            tok_bpe_trainer_add(tr, s_corpus[i], strlen(s_corpus[i]));
    tok_bpe_t *bpe = tok_bpe_trainer_learn(tr, 200, 2);
    tok_bpe_trainer_destroy(&tr);
    return bpe;
}

static taskplan_t *s_plan(const char *instr) {
    char err[512];
    taskplan_t *tp = taskplan_compile(instr, NULL, err, sizeof err);
    cr_assert(tp, "%s: %s", instr, err);
    return tp;
}

static tok_ctx_t *s_ctx(const taskplan_t *tp, tok_bpe_t *bpe, int src, int tgt) {
    char err[512];
    tok_opts_t o = {.max_src_len = src, .max_tgt_len = tgt, .seed = 1};
    tok_ctx_t *ctx = tok_ctx_new(tp, bpe, &o, err, sizeof err);
    cr_assert(ctx, "%s", err);
    return ctx;
}

/* " " + text encoded, into ids; returns the count. */
static int s_enc(tok_bpe_t *bpe, const char *text, int32_t *ids) {
    char buf[512];
    snprintf(buf, sizeof buf, " %s", text);
    return (int)tok_bpe_encode(bpe, buf, strlen(buf), ids, 512);
}

TestSuite(tokenize);

Test(tokenize, caption_layout_and_labels) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    const char *cap = "two dogs playing in the snow";
    tok_value_t vals[] = {{.column = "img", .npos = 36, .width = 640, .height = 480},
                          {.column = "cap", .text = cap, .len = strlen(cap)}};
    tok_sample_t s = {.id = 5, .values = vals, .nvalues = 2};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int32_t prompt[512], capids[512];
    int np = s_enc(bpe, "what does the image describe?", prompt);
    int nc = s_enc(bpe, cap, capids);
    cr_assert_eq(r.src_len, 36 + 1 + np + 1);
    for (int i = 0; i < 36; i++) {
        cr_assert_eq(r.src_tok[i], TOK_PAD);
        cr_assert_eq(r.src_mod[i], MOD_IMAGE);
    }
    cr_assert_eq(r.src_tok[36], TOK_BOS);
    cr_assert(memcmp(r.src_tok + 37, prompt, np * sizeof(int32_t)) == 0);
    cr_assert_eq(r.src_tok[37 + np], TOK_EOS);
    for (int i = 36; i < r.src_len; i++)
        cr_assert_eq(r.src_mod[i], MOD_TEXT);
    cr_assert_str_eq(r.image_column, "img");
    cr_assert_eq(r.image_positions, 36);
    /* tgt_in = <s> cap ; tgt_out = cap </s>, all with loss */
    cr_assert_eq(r.tgt_len, nc + 1);
    cr_assert_eq(r.tgt_in[0], TOK_BOS);
    cr_assert(memcmp(r.tgt_in + 1, capids, nc * sizeof(int32_t)) == 0);
    cr_assert(memcmp(r.tgt_out, capids, nc * sizeof(int32_t)) == 0);
    cr_assert_eq(r.tgt_out[nc], TOK_EOS);
    cr_assert_str_eq(r.ref, cap);
    /* The inverse: decoding the target gives the reference back. */
    char text[256];
    tok_decode_text(bpe, r.tgt_out, r.tgt_len, text, sizeof text);
    cr_assert_str_eq(text, cap);
    cr_assert_eq(r.src_cut + r.tgt_cut + r.masked, 0);
    tok_ctx_destroy(&ctx);
    cr_assert_null(ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

Test(tokenize, grounding_boxes_become_bins_and_back) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("[IMAGE:img] which region does the text \" [TEXT:cap] \" describe? "
                            "-> [BOX:region]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    const char *cap = "a dog", *box = " 10, 20,30 ,40 ";
    tok_value_t vals[] = {{.column = "img", .npos = 36, .width = 100, .height = 200},
                          {.column = "cap", .text = cap, .len = strlen(cap)},
                          {.column = "region", .text = box, .len = strlen(box)}};
    tok_sample_t s = {.id = 9, .values = vals, .nvalues = 3};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int b0 = tok_bpe_bin0(bpe);
    /* round(10/100*999)=100, round(20/200*999)=100, round(30/100*999)=300, round(40/200*999)=200 */
    cr_assert_eq(r.tgt_len, 5);
    int want[4] = {100, 100, 300, 200};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(r.tgt_out[i], b0 + want[i], "bin %d: %d", i, r.tgt_out[i] - b0);
    cr_assert_eq(r.tgt_out[4], TOK_EOS);
    cr_assert_str_eq(r.ref, "10, 20,30 ,40");
    double boxes[8];
    cr_assert_eq(tok_decode_boxes(bpe, r.tgt_out, r.tgt_len, 100, 200, boxes, 2), 1);
    double exact[4] = {10, 20, 30, 40};
    for (int i = 0; i < 4; i++)
        cr_assert(fabs(boxes[i] - exact[i]) <= (i % 2 ? 200.0 : 100.0) / 999, "coord %d: %g",
                  i, boxes[i]);
    /* The source text holds the caption between the prompt pieces. */
    int32_t capids[64];
    int nc = s_enc(bpe, cap, capids);
    bool found = false;
    for (int i = 0; i + nc <= r.src_len; i++)
        found |= memcmp(r.src_tok + i, capids, nc * sizeof(int32_t)) == 0;
    cr_assert(found);
    /* Bad boxes are rejected with the column's name. */
    const char *bad[] = {"10,20,30", "a,b,c,d", "1,2,3,4,5", ""};
    for (int i = 0; i < 4; i++) {
        vals[2].text = bad[i];
        vals[2].len = strlen(bad[i]);
        err[0] = 0;
        cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1, "accepted box '%s'", bad[i]);
        cr_assert(strstr(err, "column region"), "%s", err);
    }
    /* Without an image size, normalised coordinates are accepted, pixels are not. */
    vals[0].width = vals[0].height = 0;
    vals[2].text = "0.1 0.1 0.5 1";
    vals[2].len = strlen(vals[2].text);
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(r.tgt_out[3], b0 + 999);
    vals[2].text = "10 10 50 100";
    vals[2].len = strlen(vals[2].text);
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

Test(tokenize, target_prompt_carries_no_loss) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("[IMAGE:image] what does the image describe? -> answer: "
                            "[TEXT:label,closed_set]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    tok_value_t vals[] = {{.column = "image", .npos = 4},
                          {.column = "label", .text = "dog", .len = 3}};
    tok_sample_t s = {.id = 1, .values = vals, .nvalues = 2};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int32_t a[64], d[64];
    int na = s_enc(bpe, "answer:", a), nd = s_enc(bpe, "dog", d);
    cr_assert_eq(r.tgt_len, na + nd + 1);
    for (int i = 0; i < na; i++) {
        cr_assert_eq(r.tgt_in[1 + i], a[i]);
        cr_assert_eq(r.tgt_out[i], TOK_PAD, "prompt label %d carries loss", i);
    }
    for (int i = 0; i < nd; i++)
        cr_assert_eq(r.tgt_out[na + i], d[i]);
    cr_assert_eq(r.tgt_out[na + nd], TOK_EOS);
    cr_assert_str_eq(r.ref, "dog");
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

static int s_count(const int32_t *t, int n, int32_t id) {
    int c = 0;
    for (int i = 0; i < n; i++)
        c += t[i] == id;
    return c;
}

Test(tokenize, infilling_masks_deterministically) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("what is the complete text of \" [TEXT:sentence,mask_ratio=0.3] \"? "
                            "-> [TEXT:sentence]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    const char *sent = "a man riding a horse on the beach while two dogs playing in the snow "
                       "and a cat playing with a ball";
    tok_value_t vals[] = {{.column = "sentence", .text = sent, .len = strlen(sent)}};
    tok_sample_t s = {.id = 77, .values = vals, .nvalues = 1};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int32_t first[256];
    int n1 = r.src_len;
    memcpy(first, r.src_tok, n1 * sizeof(int32_t));
    int32_t full[256];
    int nfull = s_enc(bpe, sent, full);
    cr_assert_gt(r.masked, 0);
    cr_assert(r.masked >= nfull * 0.3 - 1 && r.masked <= nfull * 0.3 + 1, "masked %d of %d",
              r.masked, nfull);
    cr_assert_gt(s_count(r.src_tok, r.src_len, TOK_MASK), 0);
    cr_assert_str_eq(r.ref, sent);
    /* The target is the whole sentence, unmasked. */
    cr_assert_eq(s_count(r.tgt_out, r.tgt_len, TOK_MASK), 0);
    cr_assert_eq(r.tgt_len, nfull + 1);
    /* Same id -> same masks; another id -> other masks (for at least one of 5 ids). */
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0);
    cr_assert_eq(r.src_len, n1);
    cr_assert(memcmp(r.src_tok, first, n1 * sizeof(int32_t)) == 0);
    bool differs = false;
    for (uint64_t id = 100; id < 105; id++) {
        s.id = id;
        cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0);
        differs |= r.src_len != n1 || memcmp(r.src_tok, first, n1 * sizeof(int32_t)) != 0;
    }
    cr_assert(differs);
    /* Another epoch of the same sample: other masks (for at least one of 5 epochs). */
    s.id = 77;
    differs = false;
    for (int e = 1; e < 6; e++) {
        s.epoch = e;
        cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0);
        differs |= r.src_len != n1 || memcmp(r.src_tok, first, n1 * sizeof(int32_t)) != 0;
    }
    cr_assert(differs, "masks do not change with the epoch");
    s.epoch = 0;
    tok_ctx_destroy(&ctx);
    /* Evaluation turns masking off. */
    tok_opts_t o = {.max_src_len = 256, .max_tgt_len = 64, .seed = 1, .no_masking = true};
    ctx = tok_ctx_new(tp, bpe, &o, err, sizeof err);
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0);
    cr_assert_eq(r.masked, 0);
    cr_assert_eq(s_count(r.src_tok, r.src_len, TOK_MASK), 0);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

Test(tokenize, truncation_rule) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("[IMAGE:img] which region does the text \" [TEXT:cap] \" describe? "
                            "-> [TEXT:out]");
    const char *cap = "a man riding a horse on the beach with two dogs playing in the snow";
    const char *outs = "two dogs playing in the snow and a dog and a cat playing with a ball";
    tok_value_t vals[] = {{.column = "img", .npos = 36},
                          {.column = "cap", .text = cap, .len = strlen(cap)},
                          {.column = "out", .text = outs, .len = strlen(outs)}};
    tok_sample_t s = {.id = 3, .values = vals, .nvalues = 3};
    tok_result_t r;
    char err[256];
    tok_ctx_t *big = s_ctx(tp, bpe, 512, 512);
    cr_assert_eq(tok_build(big, &s, &r, err, sizeof err), 0, "%s", err);
    int full_src = r.src_len, full_tgt = r.tgt_len;
    int32_t src_full[512];
    memcpy(src_full, r.src_tok, full_src * sizeof(int32_t));
    tok_ctx_destroy(&big);

    tok_ctx_t *ctx = s_ctx(tp, bpe, full_src - 5, full_tgt - 3);
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(r.src_len, full_src - 5);
    cr_assert_eq(r.src_cut, 5);
    cr_assert_eq(r.tgt_len, full_tgt - 3);
    cr_assert_eq(r.tgt_cut, 3);
    cr_assert_eq(r.tgt_out[r.tgt_len - 1], TOK_EOS, "</s> is never cut");
    /* The image and the prompt before the caption are intact, and the source still ends
     * with the prompt's tail and </s>: only the caption lost its last 5 tokens. */
    int32_t tail[64];
    int nt = s_enc(bpe, "\" describe?", tail);
    cr_assert(memcmp(r.src_tok + r.src_len - 1 - nt, tail, nt * sizeof(int32_t)) == 0);
    cr_assert(memcmp(r.src_tok, src_full, (r.src_len - 1 - nt) * sizeof(int32_t)) == 0);
    tok_ctx_destroy(&ctx);
    /* A budget smaller than the image + prompt: rejected, not silently cut. */
    ctx = s_ctx(tp, bpe, 40, 64);
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1);
    cr_assert(strstr(err, "max_src_len=40"), "%s", err);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

Test(tokenize, attributes_and_rejects) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("[TEXT:q,uncased,no_punctuation,max_length=3] -> [TEXT:a,uncased]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 64, 64);
    tok_value_t vals[] = {{.column = "q", .text = "Two, DOGS! playing in", .len = 21},
                          {.column = "a", .text = "  A Dog ", .len = 8}};
    tok_sample_t s = {.id = 1, .values = vals, .nvalues = 2};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int32_t q[64];
    int nq = s_enc(bpe, "two dogs playing in", q);
    cr_assert_gt(nq, 3);
    cr_assert_eq(r.src_len, 1 + 3 + 1, "max_length=3 keeps 3 tokens");
    cr_assert(memcmp(r.src_tok + 1, q, 3 * sizeof(int32_t)) == 0);
    cr_assert_str_eq(r.ref, "a dog");
    /* Missing column and non-text value: rejected with the column's name. */
    s.nvalues = 1;
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1);
    cr_assert(strstr(err, "column a: missing"), "%s", err);
    s.nvalues = 2;
    vals[1].text = NULL;
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1);
    cr_assert(strstr(err, "column a"), "%s", err);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    /* An image slot whose value never went through the image tier. */
    tp = s_plan("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    ctx = s_ctx(tp, bpe, 64, 64);
    tok_value_t v2[] = {{.column = "img", .text = "\xff\xd8", .len = 2},
                        {.column = "cap", .text = "x", .len = 1}};
    s.values = v2;
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1);
    cr_assert(strstr(err, "column img"), "%s", err);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    /* Plans this tokenizer cannot serve are refused up front. */
    tp = s_plan("[AUDIO:wav] what is the text corresponding to the voice? -> "
                "[AUDIO:fbank,adaptor=audio_tgt_fbank]");
    cr_assert_null(tok_ctx_new(tp, bpe, NULL, err, sizeof err));
    cr_assert(strstr(err, "AUDIO"), "%s", err);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

/* A PHONE target (text to phonemes, as configs/text_to_phone.conf has it): the IPA
 * symbols go through the BPE as text, the loss covers them, the reference is the phone
 * string itself (one word per phoneme, so WER is the phone error rate) and decoding the
 * target gives it back. */
Test(tokenize, phone_target_is_bpe_of_its_symbols) {
    tok_bpe_trainer_t *tr = tok_bpe_trainer_new();
    const char *corpus[] = {"what are the phonemes of", "reading", "ɹ ˈiː d ɪ ŋ",
                            "ʃ ˈæ p", "h ə l ˈoʊ"};
    for (int r = 0; r < 3; r++)
        for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++)
            tok_bpe_trainer_add(tr, corpus[i], strlen(corpus[i]));
    tok_bpe_t *bpe = tok_bpe_trainer_learn(tr, 200, 2);
    tok_bpe_trainer_destroy(&tr);
    taskplan_t *tp = s_plan("what are the phonemes of \" [TEXT:text] \"? -> [PHONE:phone]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 64, 64);
    const char *ph = "ɹ ˈiː d ɪ ŋ";
    tok_value_t vals[] = {{.column = "text", .text = "reading", .len = 7},
                          {.column = "phone", .text = ph, .len = strlen(ph)}};
    tok_sample_t s = {.id = 1, .values = vals, .nvalues = 2};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int32_t ids[512];
    int n = s_enc(bpe, ph, ids);
    cr_assert_lt(n, (int)strlen(ph), "the BPE learnt no phoneme symbol: %d tokens", n);
    cr_assert_eq(r.tgt_len, n + 1);
    cr_assert(memcmp(r.tgt_out, ids, n * sizeof(int32_t)) == 0);
    cr_assert_eq(r.tgt_out[n], TOK_EOS);
    cr_assert_str_eq(r.ref, ph);
    char text[256];
    tok_decode_text(bpe, r.tgt_out, r.tgt_len, text, sizeof text);
    cr_assert_str_eq(text, ph);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

/* num_bins=N on the slot: coordinates go to N evenly spaced levels, written as the
 * location tokens nearest to them, so decoding (bin / 999 * size) is unchanged. */
Test(tokenize, box_num_bins_quantises_to_levels) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("[IMAGE:img] which region does the text \" [TEXT:cap] \" describe? "
                            "-> [BOX:region,num_bins=16]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    const char *cap = "a dog", *box = "10,20,30,96";
    tok_value_t vals[] = {{.column = "img", .npos = 36, .width = 96, .height = 96},
                          {.column = "cap", .text = cap, .len = strlen(cap)},
                          {.column = "region", .text = box, .len = strlen(box)}};
    tok_sample_t s = {.id = 3, .values = vals, .nvalues = 3};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int b0 = tok_bpe_bin0(bpe);
    /* levels round(c/96*15) = 2, 3, 5, 15 -> tokens round(level*999/15) = 133, 200, 333, 999 */
    int want[4] = {133, 200, 333, 999};
    cr_assert_eq(r.tgt_len, 5);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(r.tgt_out[i], b0 + want[i], "bin %d: %d", i, r.tgt_out[i] - b0);
    /* Every coordinate of the image lands on one of the 16 levels, and only there. */
    int seen[1000] = {0}, levels = 0;
    for (int c = 0; c <= 96; c++) {
        int k = tok_coord_bin_n(c, 96, 16);
        cr_assert(k >= 0 && k <= 999);
        if (!seen[k]++)
            levels++;
    }
    cr_assert_eq(levels, 16);
    cr_assert_eq(tok_coord_bin_n(48, 96, 1000), tok_coord_bin(48, 96));
    cr_assert_eq(tok_coord_bin_n(-3, 96, 16), 0);
    cr_assert_eq(tok_coord_bin_n(500, 96, 16), 999);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

Test(tokenize, decode_helpers) {
    tok_bpe_t *bpe = s_bpe();
    int b0 = tok_bpe_bin0(bpe);
    int32_t ids[] = {TOK_BOS, b0 + 0, b0 + 999, TOK_PAD, b0 + 500, b0 + 250, TOK_EOS, b0 + 1};
    double boxes[8];
    cr_assert_eq(tok_decode_boxes(bpe, ids, 8, 999, 1998, boxes, 2), 1);
    cr_assert_float_eq(boxes[0], 0, 1e-9);
    cr_assert_float_eq(boxes[1], 1998, 1e-9);
    cr_assert_float_eq(boxes[2], 500, 1e-9);
    cr_assert_float_eq(boxes[3], 500, 1e-9);
    cr_assert_eq(tok_coord_bin(-5, 100), 0);
    cr_assert_eq(tok_coord_bin(500, 100), 999);
    cr_assert_eq(tok_coord_bin(50, 100), 500);
    int32_t t[64];
    int n = s_enc(bpe, "a dog", t);
    t[n] = TOK_EOS;
    t[n + 1] = TOK_BYTE0 + 'x';
    char out[64];
    tok_decode_text(bpe, t, n + 2, out, sizeof out);
    cr_assert_str_eq(out, "a dog", "stops at </s>");
    tok_bpe_destroy(&bpe);
}

Test(tokenize, glue_echo_has_no_loss_and_ref_is_the_label) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("is the sentiment of text \" [TEXT:sentence] \" positive or negative? "
                            "-> is the sentiment of text \" [TEXT:sentence,no_loss] \" positive "
                            "or negative? [TEXT:label,closed_set]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    tok_value_t vals[] = {{.column = "sentence", .text = "a dog", .len = 5},
                          {.column = "label", .text = "positive", .len = 8}};
    tok_sample_t s = {.id = 2, .values = vals, .nvalues = 2};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(r.ref, "positive");
    int32_t lab[64];
    int nl = s_enc(bpe, "positive", lab);
    /* Only the label's tokens and </s> carry loss. */
    int with_loss = 0;
    for (int i = 0; i < r.tgt_len; i++)
        with_loss += r.tgt_out[i] != TOK_PAD;
    cr_assert_eq(with_loss, nl + 1);
    cr_assert(memcmp(r.tgt_out + r.tgt_len - 1 - nl, lab, nl * sizeof(int32_t)) == 0);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

Test(tokenize, target_noise_touches_decoder_input_only) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_plan("what is the summary of article \" [TEXT:src] \"? -> "
                            "[TEXT:tgt,noise_ratio=0.2]");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 128);
    const char *t = "a man riding a horse on the beach while two dogs playing in the snow";
    tok_value_t vals[] = {{.column = "src", .text = "x", .len = 1},
                          {.column = "tgt", .text = t, .len = strlen(t)}};
    tok_sample_t s = {.id = 4, .values = vals, .nvalues = 2};
    tok_result_t r;
    char err[256];
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), 0, "%s", err);
    int32_t clean[256];
    int n = s_enc(bpe, t, clean);
    cr_assert_eq(r.tgt_len, n + 1);
    cr_assert(memcmp(r.tgt_out, clean, n * sizeof(int32_t)) == 0, "labels must stay clean");
    int changed = 0;
    for (int i = 0; i < n; i++)
        changed += r.tgt_in[1 + i] != clean[i];
    cr_assert_gt(r.masked, 0);
    cr_assert_geq(r.masked, changed);
    cr_assert_gt(changed, 0, "noise_ratio=0.2 changed nothing in %d tokens", n);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

/* Every runnable text-output OFASys preset gets a context; the ones that need what this
 * tier lacks are refused with a reason. */
/* ---- object detection: the repeated target group ( [BOX] [TEXT])* ---- */

static const char *s_det_instr =
    "[IMAGE:img] what are the objects in the image? -> ( [BOX] [TEXT])*";

static taskplan_t *s_det_plan(const char *instr) {
    taskplan_t *tp = s_plan(instr);
    char err[256];
    cr_assert_eq(taskplan_bind_group(tp, "objects", err, sizeof err), 0, "%s", err);
    return tp;
}

static int s_det_build(tok_ctx_t *ctx, const char *objects, tok_result_t *r, char *err,
                       size_t errlen) {
    tok_value_t vals[] = {{.column = "img", .npos = 36, .width = 96, .height = 96},
                          {.column = "objects", .text = objects, .len = strlen(objects)}};
    tok_sample_t s = {.id = 5, .values = vals, .nvalues = 2};
    return tok_build(ctx, &s, r, err, errlen);
}

/* Each object: its 4 location tokens, then its class name's BPE, in the cell's order
 * (OFA's), then one </s>; every target token carries loss; ref spells the objects as
 * the "map" metric reads them. */
Test(tokenize, detection_objects_become_bins_then_labels) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_det_plan(s_det_instr);
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    tok_result_t r;
    char err[256];
    const char *cell = " 39,0,60,52,23,dog&&41,41,65,94,1,teddy bear, brown ";
    cr_assert_eq(s_det_build(ctx, cell, &r, err, sizeof err), 0, "%s", err);
    int b0 = tok_bpe_bin0(bpe);
    int32_t want[64];
    int n = 0;
    want[n++] = TOK_BOS;
    const double c[2][4] = {{39, 0, 60, 52}, {41, 41, 65, 94}};
    const char *names[2] = {"dog", "teddy bear, brown"};
    char ref[256] = "";
    for (int o = 0; o < 2; o++) {
        for (int d = 0; d < 4; d++) {
            want[n++] = b0 + tok_coord_bin(c[o][d], 96);
            snprintf(ref + strlen(ref), sizeof ref - strlen(ref), "%s<bin_%d>",
                     ref[0] ? " " : "", tok_coord_bin(c[o][d], 96));
        }
        n += s_enc(bpe, names[o], want + n);
        snprintf(ref + strlen(ref), sizeof ref - strlen(ref), " %s", names[o]);
    }
    want[n++] = TOK_EOS;
    cr_assert_eq(r.tgt_len, n - 1);
    for (int i = 0; i < n - 1; i++) {
        cr_assert_eq(r.tgt_in[i], want[i], "tgt_in[%d]", i);
        cr_assert_eq(r.tgt_out[i], want[i + 1], "tgt_out[%d]", i);
    }
    cr_assert_str_eq(r.ref, ref);
    cr_assert_eq(r.tgt_cut, 0);
    /* the decoder's own output, rendered, reads back as the same objects */
    char text[512];
    tok_decode_text(bpe, r.tgt_out, (size_t)r.tgt_len, text, sizeof text);
    cr_assert(strstr(text, " teddy bear, brown"), "%s", text);
    cr_assert(!strncmp(text, "<bin_", 5), "%s", text);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

/* num_bins on the group's BOX slot, and objects that overflow max_tgt_len: the last
 * ones are dropped whole (counted), never a label cut in half. */
Test(tokenize, detection_num_bins_and_dropping_objects) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_det_plan("[IMAGE:img] what are the objects in the image? -> "
                                "( [BOX,num_bins=16] [TEXT])*");
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    tok_result_t r;
    char err[256];
    cr_assert_eq(s_det_build(ctx, "10,20,30,96,0,dog", &r, err, sizeof err), 0, "%s", err);
    int b0 = tok_bpe_bin0(bpe);
    int want[4] = {133, 200, 333, 999};   /* as box_num_bins_quantises_to_levels */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(r.tgt_out[i], b0 + want[i]);
    cr_assert_str_eq(r.ref, "<bin_133> <bin_200> <bin_333> <bin_999> dog");
    tok_ctx_destroy(&ctx);

    /* "dog" is one or more tokens: an object is 4 + len(dog) tokens; room for 2 */
    int32_t ids[64];
    int per = 4 + s_enc(bpe, "dog", ids);
    ctx = s_ctx(tp, bpe, 256, 2 * per + 1);
    const char *three = "0,0,10,10,0,dog&&20,0,30,10,0,dog&&40,0,50,10,0,dog";
    cr_assert_eq(s_det_build(ctx, three, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(r.tgt_len, 2 * per + 1);
    cr_assert_eq(r.tgt_cut, per);
    cr_assert_eq(r.tgt_out[r.tgt_len - 1], TOK_EOS);
    cr_assert_eq(r.tgt_out[r.tgt_len - 2], ids[per - 5]);   /* dog's last token */
    cr_assert_eq(strlen(r.ref), strlen("<bin_0> <bin_0> <bin_133> <bin_133> dog "
                                       "<bin_200> <bin_0> <bin_333> <bin_133> dog"));
    tok_ctx_destroy(&ctx);
    /* one object that does not fit is a reject */
    ctx = s_ctx(tp, bpe, 256, 4);
    cr_assert_eq(s_det_build(ctx, "0,0,10,10,0,dog", &r, err, sizeof err), -1);
    cr_assert(strstr(err, "max_tgt_len=4"), "%s", err);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

/* Every malformed cell is a reject whose reason names the column and the object. */
Test(tokenize, detection_malformed_cells_are_rejected) {
    tok_bpe_t *bpe = s_bpe();
    taskplan_t *tp = s_det_plan(s_det_instr);
    tok_ctx_t *ctx = s_ctx(tp, bpe, 256, 64);
    static const struct {
        const char *cell, *why;
    } bad[] = {
        {"", "column objects: no object (empty cell)"},
        {"   ", "no object (empty cell)"},
        {"1,2,30,40,cat", "object 1 '1,2,30,40,cat' has 5 fields"},
        {"1,2,30,40,3,cat&&1,2,30", "object 2 '1,2,30' has 3 fields"},
        {"1,2,30,40,3,cat&&", "object 2 is empty"},
        {"1,2,30,40,3,cat&&&&1,2,30,40,3,cat", "object 2 is empty"},
        {"a,2,30,40,3,cat", "object 1 'a,2,30,40,3,cat': x0 'a' is not a number"},
        {"1,2,30,4e999,3,cat", "y1 '4e999' is not a number"},
        {"1,2,30,nan,3,cat", "y1 'nan' is not a number"},
        {"1,2,30,40,,cat", "class_id '' is not a number"},
        {"1,2,30,40,-1,cat", "class_id -1 is not a non-negative integer"},
        {"1,2,30,40,1.5,cat", "class_id 1.5"},
        {"30,2,1,40,3,cat", "the box is empty or inverted"},
        {"1,2,1,40,3,cat", "the box is empty or inverted"},
        {"1,2,97,40,3,cat", "object 1 '1,2,97,40,3,cat': the box lies outside the image 96x96"},
        {"-1,2,30,40,3,cat", "lies outside the image"},
        {"1,2,30,40,3,  ", "empty class_name"},
    };
    tok_result_t r;
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_assert_eq(s_det_build(ctx, bad[i].cell, &r, err, sizeof err), -1, "'%s' accepted",
                     bad[i].cell);
        cr_assert(strstr(err, bad[i].why), "'%s': %s", bad[i].cell, err);
        cr_assert(strstr(err, "column objects"), "'%s': %s", bad[i].cell, err);
    }
    /* and the context goes on building good samples */
    cr_assert_eq(s_det_build(ctx, "1,2,30,40,3,cat", &r, err, sizeof err), 0, "%s", err);
    /* the column missing from the sample */
    tok_value_t vals[] = {{.column = "img", .npos = 36, .width = 96, .height = 96}};
    tok_sample_t s = {.id = 5, .values = vals, .nvalues = 1};
    cr_assert_eq(tok_build(ctx, &s, &r, err, sizeof err), -1);
    cr_assert(strstr(err, "column objects: missing"), "%s", err);
    tok_ctx_destroy(&ctx);
    taskplan_destroy(&tp);
    tok_bpe_destroy(&bpe);
}

/* Groups this tier cannot fill, and group_column without a group. */
Test(tokenize, detection_group_shapes_refused) {
    tok_bpe_t *bpe = s_bpe();
    char err[256];
    taskplan_t *tp = s_plan(s_det_instr);
    cr_assert_null(tok_ctx_new(tp, bpe, NULL, err, sizeof err));
    cr_assert(strstr(err, "group_column"), "%s", err);
    taskplan_destroy(&tp);
    tp = s_plan("[IMAGE:img] what does the image describe? -> [TEXT:cap]");
    cr_assert_eq(taskplan_bind_group(tp, "objects", err, sizeof err), -1);
    cr_assert(strstr(err, "no repeated target group"), "%s", err);
    taskplan_destroy(&tp);
    const char *refused[][2] = {
        {"[IMAGE:img] objects? -> ( [BOX] [TEXT] [TEXT])*", "an object is one [BOX]"},
        {"[IMAGE:img] objects? -> ( [TEXT])*", "has 0 BOX"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        tp = s_det_plan(refused[i][0]);
        err[0] = 0;
        tok_ctx_t *ctx = tok_ctx_new(tp, bpe, NULL, err, sizeof err);
        cr_assert_null(ctx, "%s accepted", refused[i][0]);
        cr_assert(strstr(err, refused[i][1]), "%s: %s", refused[i][0], err);
        taskplan_destroy(&tp);
    }
    tok_bpe_destroy(&bpe);
}

Test(tokenize, presets_accepted_or_refused_with_reason) {
    tok_bpe_t *bpe = s_bpe();
    const char *ok[] = {
        "[IMAGE:img] what does the image describe? -> [TEXT:cap]",
        "structured knowledge: \" [STRUCT:database,uncased] \"  . how to describe the tripleset ? -> [TEXT:tgt]",
        "[IMAGE:img] what does the region describe? region: [BOX:patch_boxes] -> [TEXT:cap]",
        "[TEXT:instruction] [TEXT:examples] [TEXT:src] -> [TEXT:tgt,max_length=128]",
        "[IMAGE:img] can image and text1 \" [TEXT:cap] \" imply text2 \" [TEXT:hyp] \"? -> can image and text1 \" [TEXT:cap,no_loss] \" imply text2 \" [TEXT:hyp,no_loss] \"? [TEXT:label,closed_set]",
        "\" [TEXT:src] \" ; structured knowledge: \" [STRUCT:database,max_length=876] \" . generating sql code. -> [TEXT:tgt]",
        "[VIDEO:video] [TEXT:question] -> [TEXT:answer]",
        "[IMAGE:image] [TEXT:question] -> [TEXT:answer,closed_set]",
    };
    const char *refused[] = {
        "[IMAGE:img] what are the objects in the image? -> ( [BOX] [TEXT])*",
        "[PHONE:text] -> [AUDIO:fbank,adaptor=audio_tgt_fbank]",
        "what is the complete image of \"[IMAGE:img,mask_ratio=0.5]\"? -> [IMAGE,preprocess=image_vqgan,adaptor=image_vqgan]",
    };
    char err[512];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        taskplan_t *tp = s_plan(ok[i]);
        tok_ctx_t *ctx = tok_ctx_new(tp, bpe, NULL, err, sizeof err);
        cr_expect(ctx, "%s: %s", ok[i], err);
        tok_ctx_destroy(&ctx);
        taskplan_destroy(&tp);
    }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        taskplan_t *tp = s_plan(refused[i]);
        err[0] = 0;
        tok_ctx_t *ctx = tok_ctx_new(tp, bpe, NULL, err, sizeof err);
        cr_expect_null(ctx, "%s accepted", refused[i]);
        cr_expect(err[0], "%s: no reason", refused[i]);
        tok_ctx_destroy(&ctx);
        taskplan_destroy(&tp);
    }
    tok_bpe_destroy(&bpe);
}

/* ---- tokstage: the worker's transform on real messages, after the image tier ---- */
#include "imgstage.h"
#include "tokstage.h"

static const char *s_plan_text =
    "name = \"t\";\nseed = 3;\n"
    "tasks = (\n"
    "  { name = \"vqa\"; instruction = \"[IMAGE:photo] [TEXT:q] -> [TEXT:a]\";\n"
    "    train = [\"y.tsv\"]; format = \"tsv\"; columns = [\"id\", \"photo\", \"q\", \"a\"]; },\n"
    "  { name = \"ground\"; instruction = \"[IMAGE:img] which region does the text \\\" "
    "[TEXT:text] \\\" describe? -> [BOX:box]\";\n"
    "    train = [\"z.tsv\"]; format = \"tsv\"; columns = [\"id\", \"img\", \"text\", \"box\"]; },\n"
    "  { name = \"infill\"; instruction = \"what is the complete text of \\\" "
    "[TEXT:s,mask_ratio=0.5] \\\"? -> [TEXT:s]\";\n"
    "    train = [\"w.tsv\"]; format = \"tsv\"; columns = [\"id\", \"s\"]; },\n"
    "  { name = \"det\"; instruction = \"[IMAGE:img] what are the objects in the image? -> "
    "( [BOX] [TEXT])*\";\n"
    "    train = [\"v.tsv\"]; format = \"tsv\"; columns = [\"id\", \"img\"]; }\n"
    ");\n"
    "model = { size = \"nano\"; };\n";

static void s_warn(void *arg, const char *task, const char *reason) {
    (*(int *)arg)++;
    cr_log_info("task %s refused: %s", task, reason);
}

static uint8_t *s_photo(size_t *len) {
    char err[256];
    uint8_t *b = (uint8_t *)util_read_file(OFA_SOURCE_DIR "/tests/data/images/fruits_640.jpg",
                                           len, err, sizeof err);
    cr_assert(b, "%s", err);
    return b;
}

Test(tokstage, image_then_tokenize_on_messages) {
    char err[1024];
    plan_t *plan = plan_load_string(s_plan_text, "t.conf", "/tmp", err, sizeof err);
    cr_assert(plan, "%s", err);
    tok_bpe_t *bpe = s_bpe();
    int refused = 0;
    imgstage_t *is = imgstage_new(plan, IMG_FIT_RESIZE, NULL);
    tokstage_t *ts = tokstage_new(plan, bpe, s_warn, &refused);
    cr_assert_eq(refused, 1, "the detection task is refused up front");
    size_t len;
    uint8_t *jpg = s_photo(&len);

    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "vqa");
    proto_msg_add_id(m, 7);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_bin(m, "photo", jpg, len);
    proto_msg_set_str(m, "q", "what is in the image?");
    proto_msg_set_str(m, "a", "a dog");
    /* Tokenize before the image tier: rejected, naming the column. */
    cr_assert_eq(tokstage_process(ts, m, err, sizeof err), -1);
    cr_assert(strstr(err, "column photo"), "%s", err);
    cr_assert_eq(imgstage_process(is, m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tokstage_process(ts, m, err, sizeof err), 0, "%s", err);
    const proto_field_t *img = proto_msg_get_tensor(m, "img", PROTO_U8);
    cr_assert(img, "image not renamed to img");
    cr_assert_null(proto_msg_get(m, "photo"));
    int np = (int)img->shape[0];
    cr_assert_eq(proto_msg_get_int(m, "img.grid", -1), plan->tasks[0].image_size /
                                                           plan->tasks[0].patch);
    cr_assert_eq(proto_msg_get_int(m, "img.width", -1), 640);
    const proto_field_t *st = proto_msg_get_tensor(m, "src_tok", PROTO_I32);
    const proto_field_t *sm = proto_msg_get_tensor(m, "src_mod", PROTO_U8);
    const proto_field_t *ti = proto_msg_get_tensor(m, "tgt_in", PROTO_I32);
    const proto_field_t *to = proto_msg_get_tensor(m, "tgt_out", PROTO_I32);
    cr_assert(st && sm && ti && to);
    cr_assert_eq(st->shape[0], sm->shape[0]);
    cr_assert_eq(ti->shape[0], to->shape[0]);
    int nimg = 0;
    for (int i = 0; i < st->shape[0]; i++)
        if (((uint8_t *)sm->data)[i] == MOD_IMAGE) {
            nimg++;
            cr_assert_eq(((int32_t *)st->data)[i], TOK_PAD);
        }
    cr_assert_eq(nimg, np);
    cr_assert_str_eq(proto_msg_get_str(m, "ref"), "a dog");
    cr_assert_eq(((int32_t *)to->data)[to->shape[0] - 1], TOK_EOS);
    proto_msg_destroy(&m);

    /* Grounding: the box in source pixels becomes bins with the size ofa-image passed. */
    m = proto_msg_new(PROTO_SAMPLE, "ground");
    proto_msg_add_id(m, 8);
    proto_msg_set_bin(m, "img", jpg, len);
    proto_msg_set_str(m, "text", "the orange");
    proto_msg_set_str(m, "box", "64,48,320,240");
    cr_assert_eq(imgstage_process(is, m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tokstage_process(ts, m, err, sizeof err), 0, "%s", err);
    to = proto_msg_get_tensor(m, "tgt_out", PROTO_I32);
    int b0 = tok_bpe_bin0(bpe);
    int want[4] = {100, 100, 500, 500};   /* round(64/640*999) = 100 ... 320/640 -> 500 */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(((int32_t *)to->data)[i], b0 + want[i], "bin %d", i);
    proto_msg_destroy(&m);

    /* Masking on train samples only. */
    const char *text = "a man riding a horse on the beach while two dogs playing in the snow";
    int masks[2];
    for (int v = 0; v < 2; v++) {
        m = proto_msg_new(PROTO_SAMPLE, "infill");
        proto_msg_add_id(m, 9);
        proto_msg_set_str(m, "split", v ? "valid" : "train");
        proto_msg_set_str(m, "s", text);
        cr_assert_eq(tokstage_process(ts, m, err, sizeof err), 0, "%s", err);
        st = proto_msg_get_tensor(m, "src_tok", PROTO_I32);
        masks[v] = 0;
        for (int i = 0; i < st->shape[0]; i++)
            masks[v] += ((int32_t *)st->data)[i] == TOK_MASK;
        cr_assert_eq(proto_msg_get_int(m, "tok.masked", -1) > 0, v == 0);
        proto_msg_destroy(&m);
    }
    cr_assert(masks[0] > 0 && masks[1] == 0, "train %d masks, valid %d", masks[0], masks[1]);

    /* The refused task's samples are rejected with its reason; unknown tasks too. */
    m = proto_msg_new(PROTO_SAMPLE, "det");
    proto_msg_add_id(m, 10);
    cr_assert_eq(tokstage_process(ts, m, err, sizeof err), -1);
    cr_assert(strstr(err, "task det: "), "%s", err);
    proto_msg_set_task(m, "zzz");
    cr_assert_eq(tokstage_process(ts, m, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown task"), "%s", err);
    proto_msg_destroy(&m);

    free(jpg);
    tokstage_destroy(&ts);
    imgstage_destroy(&is);
    tok_bpe_destroy(&bpe);
    plan_destroy(&plan);
}

/* ---- the two programs over ZeroMQ, with this test as the broker ---- */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

Test(workers, image_and_tokenize_programs_over_zeromq, .timeout = 60) {
    char dir[] = "/tmp/test_workers_XXXXXX", path[256], ep[300], stats[300], err[512];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/plan.conf", dir);
    cr_assert_eq(util_write_file_atomic(path, s_plan_text, strlen(s_plan_text), err,
                                        sizeof err), 0, "%s", err);
    tok_bpe_t *bpe = s_bpe();
    char bpe_path[300];
    snprintf(bpe_path, sizeof bpe_path, "%s/bpe.bin", dir);
    cr_assert_eq(tok_bpe_save(bpe, bpe_path, err, sizeof err), 0, "%s", err);
    snprintf(ep, sizeof ep, "ipc://%s/broker.sock", dir);
    snprintf(stats, sizeof stats, "ipc://%s/stats.sock", dir);
    void *zctx = zmq_ctx_new();
    void *router = zmq_socket(zctx, ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(router, ep), 0);

    char img_bin[300], tok_bin[300], log1[300], log2[300];
    snprintf(img_bin, sizeof img_bin, "%s/bin/ofa-image", OFA_BINARY_DIR);
    snprintf(tok_bin, sizeof tok_bin, "%s/bin/ofa-tokenize", OFA_BINARY_DIR);
    snprintf(log1, sizeof log1, "%s/image.log", dir);
    snprintf(log2, sizeof log2, "%s/tokenize.log", dir);
    char *a1[] = {img_bin, "--id", "image.0", "--ctl", ep, "--plan", path, "--stats", stats,
                  "--tier", "image", "--credits", "4", NULL};
    char *a2[] = {tok_bin, "--id", "tokenize.0", "--ctl", ep, "--plan", path, "--stats", stats,
                  "--tier", "tokenize", "--run-dir", dir, NULL};
    pid_t p1 = cproc_spawn(a1, log1), p2 = cproc_spawn(a2, log2);

    /* Both say hello; remember who is who. */
    uint8_t id_img[256], id_tok[256], ident[256];
    size_t l_img = 0, l_tok = 0, l;
    for (int k = 0; k < 2; k++) {
        proto_msg_t *h = cproc_next_msg(router, ident, &l, 10000);
        cr_assert(h, "no hello from the workers (see %s, %s)", log1, log2);
        cr_assert_str_eq(proto_msg_op(h), "hello");
        const char *tier = proto_msg_get_str(h, "tier");
        cr_assert(tier);
        if (!strcmp(tier, "image"))
            memcpy(id_img, ident, l_img = l);
        else
            memcpy(id_tok, ident, l_tok = l);
        proto_msg_destroy(&h);
    }
    cr_assert(l_img && l_tok);

    size_t len;
    uint8_t *jpg = s_photo(&len);
    proto_msg_t *m = proto_msg_new(PROTO_SAMPLE, "vqa");
    proto_msg_add_id(m, 11);
    proto_msg_set_str(m, "@route", "image,tokenize");
    proto_msg_set_int(m, "@hop", 0);
    proto_msg_set_str(m, "split", "train");
    proto_msg_set_bin(m, "photo", jpg, len);
    proto_msg_set_str(m, "q", "what is in the image?");
    proto_msg_set_str(m, "a", "fruits");
    cr_assert_eq(proto_send(router, id_img, l_img, &m, 0), 0);
    m = cproc_next_msg(router, ident, &l, 10000);
    cr_assert(m, "no answer from ofa-image");
    cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE, "%s: %s", proto_kind_name(proto_msg_kind(m)),
                 proto_msg_get_str(m, "reason") ? proto_msg_get_str(m, "reason") : "");
    cr_assert_eq(proto_msg_get_int(m, "@hop", -1), 1);
    cr_assert(proto_msg_get_tensor(m, "photo", PROTO_U8));
    cr_assert_eq(proto_send(router, id_tok, l_tok, &m, 0), 0);
    m = cproc_next_msg(router, ident, &l, 10000);
    cr_assert(m, "no answer from ofa-tokenize");
    cr_assert_eq(proto_msg_kind(m), PROTO_SAMPLE, "%s",
                 proto_msg_get_str(m, "reason") ? proto_msg_get_str(m, "reason") : "");
    cr_assert_eq(proto_msg_get_int(m, "@hop", -1), 2);
    cr_assert(proto_msg_get_tensor(m, "src_tok", PROTO_I32));
    cr_assert(proto_msg_get_tensor(m, "img", PROTO_U8));
    cr_assert_str_eq(proto_msg_get_str(m, "ref"), "fruits");
    proto_msg_destroy(&m);

    /* A truncated JPEG comes back as a REJECT naming the column. */
    m = proto_msg_new(PROTO_SAMPLE, "vqa");
    proto_msg_add_id(m, 12);
    proto_msg_set_int(m, "seq", 5);
    proto_msg_set_bin(m, "photo", jpg, len / 2);
    cr_assert_eq(proto_send(router, id_img, l_img, &m, 0), 0);
    m = cproc_next_msg(router, ident, &l, 10000);
    cr_assert(m);
    cr_assert_eq(proto_msg_kind(m), PROTO_REJECT);
    cr_assert_eq(proto_msg_ids(m)[0], 12);
    const char *reason = proto_msg_get_str(m, "reason");
    cr_assert(reason && strstr(reason, "column photo: "), "%s", reason ? reason : "(none)");
    proto_msg_destroy(&m);

    /* Stop: both exit 0. */
    proto_msg_t *stop = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(stop, "stop");
    cr_assert_eq(proto_send(router, id_img, l_img, &stop, 0), 0);
    stop = proto_msg_new(PROTO_CONTROL, NULL);
    proto_msg_set_op(stop, "stop");
    cr_assert_eq(proto_send(router, id_tok, l_tok, &stop, 0), 0);
    int st1, st2;
    cr_assert_eq(waitpid(p1, &st1, 0), p1);
    cr_assert_eq(waitpid(p2, &st2, 0), p2);
    cr_assert(WIFEXITED(st1) && WEXITSTATUS(st1) == 0, "ofa-image status %d", st1);
    cr_assert(WIFEXITED(st2) && WEXITSTATUS(st2) == 0, "ofa-tokenize status %d", st2);

    free(jpg);
    tok_bpe_destroy(&bpe);
    zmq_close(router);
    zmq_ctx_term(zctx);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
