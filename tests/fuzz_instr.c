/* fuzz_instr.c: fuzz target for the instruction parser (instr_parse) and the task-plan
 * compiler (taskplan_compile) on arbitrary bytes. The input is the instruction text (cut
 * at its first NUL byte, as a C string would be).
 *
 * Properties checked beyond "no crash":
 *  - a refusal has a reason "instruction:L:C: text" whose line and column lie inside the
 *    instruction (column at most one past the end of its line), or, from the compiler, a
 *    non-empty reason;
 *  - a parsed instruction is a sane tree: at least one template and one slot, segment
 *    and slot counts that agree, the repeated group inside its sentence, ratios in
 *    [0, 1], no empty column name or prompt text;
 *  - a compiled plan has a route ending in "tokenize", one template per alternative with
 *    every slot of it, 1..TASKPLAN_MAX_STEPS steps per slot, a rendering, and a template
 *    pick inside the range.
 * Any failure aborts, which the fuzzer reports. */
#include "instr.h"
#include "taskplan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_fail(const char *what, const char *text) {
    fprintf(stderr, "fuzz_instr: %s\n  instruction: \"%s\"\n", what, text);
    abort();
}

/* The error names a line and column inside text. */
static void s_check_where(const char *err, const char *text) {
    int line, col, n = 0;
    if (sscanf(err, "instruction:%d:%d: %n", &line, &col, &n) != 2 || n == 0 || !err[n])
        s_fail("error without instruction:L:C: reason", text);
    int l = 1;
    const char *start = text;
    for (const char *c = text; *c && l < line; c++)
        if (*c == '\n') {
            l++;
            start = c + 1;
        }
    if (line < 1 || l != line)
        s_fail("error names a line the instruction does not have", text);
    size_t len = strcspn(start, "\n");
    if (col < 1 || (size_t)col > len + 1)
        s_fail("error names a column past the end of its line", text);
}

static void s_check_sentence(const instr_sentence_t *s, size_t len, const char *text) {
    int slots = 0, rep = 0;
    for (int i = 0; i < s->nsegs; i++) {
        const instr_seg_t *g = &s->segs[i];
        if (g->kind == INSTR_SEG_SLOT) {
            const instr_slot_t *sl = &g->slot;
            slots++;
            if ((unsigned)sl->mod >= MOD__COUNT)
                s_fail("slot with a modality out of range", text);
            if (sl->column && !sl->column[0])
                s_fail("slot with an empty column name", text);
            if (!(sl->mask_ratio >= 0 && sl->mask_ratio <= 1 && sl->noise_ratio >= 0 &&
                  sl->noise_ratio <= 1) || sl->max_length < 0)
                s_fail("slot attribute out of range", text);
        } else if (g->kind == INSTR_SEG_TEXT) {
            if (!g->text || !g->text[0])
                s_fail("empty text segment", text);
        }
        if (g->line < 1 || g->col < 1 || (size_t)g->col > len + 1)
            s_fail("segment position outside the instruction", text);
        rep += g->repeated;
        if (g->repeated && (i < s->rep_first || i >= s->rep_first + s->rep_count))
            s_fail("repeated segment outside the repeated group", text);
    }
    if (slots != s->nslots)
        s_fail("nslots does not count the slots", text);
    if (rep != s->rep_count || s->rep_first < 0 || s->rep_first + s->rep_count > s->nsegs)
        s_fail("repeated group out of the sentence", text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);
    char err[512];

    err[0] = '\0';
    instr_t *in = instr_parse(text, err, sizeof err);
    if (!in) {
        s_check_where(err, text);
    } else {
        if (in->nalts < 1)
            s_fail("parsed with no template", text);
        int slots = 0;
        for (int a = 0; a < in->nalts; a++) {
            s_check_sentence(&in->alts[a].src, len, text);
            s_check_sentence(&in->alts[a].tgt, len, text);
            slots += in->alts[a].src.nslots + in->alts[a].tgt.nslots;
        }
        if (slots == 0)
            s_fail("parsed an instruction with no slot", text);
    }

    err[0] = '\0';
    taskplan_t *tp = taskplan_compile(text, NULL, err, sizeof err);
    if (!tp) {
        if (!err[0])
            s_fail("compile refused without a reason", text);
        /* A parsed instruction may still fail to compile (sizes, registry); one the
         * parser refused keeps the parser's position. */
        if (!in && strncmp(err, "instruction:", 12) != 0)
            s_fail("a syntax error lost its instruction:L:C: prefix", text);
    } else {
        if (!in)
            s_fail("compiled an instruction the parser refuses", text);
        if (tp->ntmpls != in->nalts)
            s_fail("one template per alternative", text);
        if (tp->ntiers < 1 || strcmp(tp->tiers[tp->ntiers - 1], "tokenize") != 0 ||
            !tp->route[0])
            s_fail("route does not end in tokenize", text);
        for (int t = 0; t < tp->ntmpls; t++) {
            const taskplan_template_t *tm = &tp->tmpls[t];
            if (tm->nslots != in->alts[t].src.nslots + in->alts[t].tgt.nslots)
                s_fail("compiled template lost a slot", text);
            for (int i = 0; i < tm->nslots; i++)
                if (tm->slots[i].nsteps < 1 || tm->slots[i].nsteps > TASKPLAN_MAX_STEPS)
                    s_fail("slot chain length out of range", text);
        }
        for (int c = 0; c < tp->ncolumns; c++)
            if (!tp->columns[c].name || !tp->columns[c].name[0])
                s_fail("column without a name", text);
        char *r = taskplan_render(tp, "fuzz");
        if (!r || !r[0])
            s_fail("empty rendering", text);
        free(r);
        err[0] = '\0';
        if (taskplan_runnable(tp, err, sizeof err) != 0 && !err[0])
            s_fail("not runnable without a reason", text);
        int k = taskplan_pick_template(tp, 7, (uint64_t)size);
        if (k < 0 || k >= tp->ntmpls)
            s_fail("template pick out of range", text);
        taskplan_destroy(&tp);
    }
    instr_destroy(&in);
    free(text);
    return 0;
}
