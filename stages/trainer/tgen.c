/* tgen.c: see tgen.h. */
#include "tgen.h"

#include <string.h>

#include "tokenize.h"
#include "util.h"

/* The tokenizer marks decoder-prompt tokens (target-side plain text, no_loss slots) with
 * label <pad>: the first labelled position is where the answer starts. */
int tgen_prompt_len(const trainer_batch_t *b, int r) {
    for (int t = 0; t < b->T; t++)
        if (b->tgt_out[(size_t)r * b->T + t] != TOK_PAD)
            return t;
    return 0;
}

void tgen_bins_text(const int32_t *ids, int n, int bin0, char *out, size_t outlen) {
    size_t o = 0;
    int k = 0;
    out[0] = 0;
    for (int i = 0; i < n && k < 4 && o < outlen; i++) {
        if (ids[i] < bin0 || ids[i] >= bin0 + TOK_NBINS)
            continue;
        o += snprintf(out + o, outlen - o, "%s<bin_%d>", k ? " " : "", ids[i] - bin0);
        k++;
    }
}

int tgen_rows(tmodel_t *model, const tok_bpe_t *bpe, const tgen_cfg_t *cfg,
              const trainer_batch_t *b, int r0, int n, int p, char **hyps,
              char *err, size_t errlen) {
    gen_opts_t o = gen_opts_default();
    o.beam = cfg->beam > 0 ? cfg->beam : 1;
    o.len_penalty = cfg->len_penalty;
    /* The prompt occupies p+1 decoder positions; generation gets what remains. */
    int room = cfg->max_tgt_len - p;
    o.max_len = cfg->max_gen_len > 0 ? cfg->max_gen_len : 32;
    if (cfg->gen == GEN_BOX)
        o.max_len = 5;
    if (o.max_len > room)
        o.max_len = room;
    if (o.max_len < 1)
        return util_err(err, errlen, "decoder prompt of %d tokens leaves no room to generate", p);
    o.bin_first = tok_bpe_bin0(bpe);
    o.n_bins = TOK_NBINS;
    if (cfg->gen == GEN_CLOSED_SET && !cfg->trie)
        return util_err(err, errlen, "closed-set generation without an answer set");
    int32_t *first = util_malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        first[i] = b->tgt_in[(size_t)(r0 + i) * b->T + p];
    o.first = first;
    int max_rows = n;
    if (cfg->gen == GEN_BEAM)
        max_rows = n * o.beam;
    else if (cfg->gen == GEN_CLOSED_SET)
        max_rows = n * gen_trie_width(cfg->trie);
    /* Tokens the decoder is fed: the prompt's first p, then one per search step (the
     * prompt's last token or <s>, then every generated token but the last). */
    int max_len = p + (cfg->gen == GEN_CLOSED_SET ? gen_trie_depth(cfg->trie)
                       : cfg->gen == GEN_BOX ? 4 : o.max_len);
    if (max_len > cfg->max_tgt_len) {
        free(first);
        return util_err(err, errlen, "decoder prompt (%d tokens) and answer (%d) exceed the "
                        "model's %d target positions", p, max_len - p, cfg->max_tgt_len);
    }
    gen_step_i st;
    gen_hyp_t *h = util_calloc(n, sizeof(gen_hyp_t));
    int32_t *tok = util_malloc(sizeof(int32_t) * n);
    float *junk = NULL;
    int rc = tmodel_gen_begin(model, b, r0, n, max_rows, max_len, &st, err, errlen);
    if (rc == 0 && p > 0)
        junk = util_malloc(sizeof(float) * (size_t)n * st.vocab);
    /* The prompt tokens before its last one go into the cache first; the last one is
     * the searches' first feed (opts.first). */
    for (int t = 0; rc == 0 && t < p; t++) {
        for (int i = 0; i < n; i++)
            tok[i] = b->tgt_in[(size_t)(r0 + i) * b->T + t];
        rc = st.step(st.ctx, n, tok, junk, err, errlen);
    }
    if (rc == 0) {
        switch (cfg->gen) {
        case GEN_GREEDY: rc = gen_greedy(&st, n, &o, h, err, errlen); break;
        case GEN_BEAM: rc = gen_beam(&st, n, &o, h, err, errlen); break;
        case GEN_CLOSED_SET: rc = gen_closed_set(&st, n, cfg->trie, &o, h, err, errlen); break;
        case GEN_BOX: rc = gen_box(&st, n, &o, h, err, errlen); break;
        default: rc = util_err(err, errlen, "unknown generator %d", (int)cfg->gen);
        }
    }
    tmodel_gen_end(model);
    for (int i = 0; rc == 0 && i < n; i++) {
        char buf[4096];
        if (cfg->gen == GEN_BOX) {
            tgen_bins_text(h[i].tokens, h[i].len, o.bin_first, buf, sizeof buf);
        } else {
            tok_decode_text(bpe, h[i].tokens, h[i].len, buf, sizeof buf);
            buf[sizeof buf - 1] = 0;
        }
        hyps[i] = util_strdup(buf);
    }
    if (rc == 0)
        gen_hyps_free(h, n);
    free(h);
    free(tok);
    free(junk);
    free(first);
    return rc;
}
