/* instr.c: see instr.h.
 *
 * The parser works on the whole instruction text with byte offsets, so that every
 * error can name the line and column where it happened. It runs in three passes:
 * brackets first (an unbalanced bracket makes every later message misleading), then
 * the split into ||| alternatives and at the single '->', then each sentence. */
#include "instr.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

/* ---- modalities ---------------------------------------------------------------- */

/* Indexed by mod_t: the spelling an instruction uses is the enum's name, so a modality
 * added to the enum needs its name here and nowhere else. */
static const char *s_mod_names[MOD__COUNT] = {
    "TEXT", "IMAGE", "BOX", "AUDIO", "VIDEO", "PHONE", "MOTION", "STRUCT", "CATEGORY",
};

const char *mod_name(mod_t mod) {
    return (mod >= 0 && mod < MOD__COUNT) ? s_mod_names[mod] : "?";
}

int mod_from_name(const char *name) {
    for (int i = 0; i < MOD__COUNT; i++)
        if (strcmp(name, s_mod_names[i]) == 0)
            return i;
    return -1;
}

bool mod_is_textlike(mod_t mod) {
    return mod == MOD_TEXT || mod == MOD_BOX || mod == MOD_PHONE || mod == MOD_STRUCT ||
           mod == MOD_CATEGORY;
}

/* Sets of modalities as bit masks (one bit per mod_t), used by the attribute table and
 * the registry to say where an entry applies. */
#define M(x) (1u << (x))
#define M_TEXTLIKE (M(MOD_TEXT) | M(MOD_BOX) | M(MOD_PHONE) | M(MOD_STRUCT) | M(MOD_CATEGORY))
#define M_ALL ((1u << MOD__COUNT) - 1)

/* ---- registry of preprocess= and adaptor= names ---------------------------------- */

/* Names only: a plan can never point the pipeline at an arbitrary file or program
 * through an instruction. Each entry says which modalities it serves. */
typedef struct {
    const char *name;
    uint32_t mods;
} s_reg_t;

static const s_reg_t s_preprocess[] = {
    {"text", M(MOD_TEXT)},          {"text_phone", M(MOD_TEXT)},
    {"image", M(MOD_IMAGE)},        {"image_vqgan", M(MOD_IMAGE)},
    {"box", M(MOD_BOX)},            {"audio", M(MOD_AUDIO)},
    {"audio_tgt_fbank", M(MOD_AUDIO)}, {"phone", M(MOD_PHONE)},
    {"video", M(MOD_VIDEO)},        {"struct", M(MOD_STRUCT)},
    {"category", M(MOD_CATEGORY)},  {"motion_6d", M(MOD_MOTION)},
};
static const s_reg_t s_adaptor[] = {
    {"text_embed", M_TEXTLIKE},     {"image_patch", M(MOD_IMAGE)},
    {"image_vqgan", M(MOD_IMAGE)},  {"box_embed", M(MOD_BOX)},
    {"audio_fbank", M(MOD_AUDIO)},  {"audio_tgt_fbank", M(MOD_AUDIO)},
    {"phone_embed", M(MOD_PHONE)},  {"video_patch", M(MOD_VIDEO)},
    {"motion_6d", M(MOD_MOTION)},
};
#define NREG(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Registries are a dozen entries: a linear scan is the clearest lookup. */
static const s_reg_t *s_reg_find(const s_reg_t *reg, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(reg[i].name, name) == 0)
            return &reg[i];
    return NULL;
}

/* The modality an entry is "for", as the public lookups report it; text_embed serves
 * every text-like modality and reports TEXT, the first of them. */
static int s_reg_first_mod(const s_reg_t *r) {
    for (int m = 0; m < MOD__COUNT; m++)
        if (r->mods & M(m))
            return m;
    return -1;
}

int instr_registry_preprocess(const char *name) {
    const s_reg_t *r = s_reg_find(s_preprocess, NREG(s_preprocess), name);
    return r ? s_reg_first_mod(r) : -1;
}

int instr_registry_adaptor(const char *name) {
    const s_reg_t *r = s_reg_find(s_adaptor, NREG(s_adaptor), name);
    return r ? s_reg_first_mod(r) : -1;
}

static void s_reg_join(const s_reg_t *reg, int n, char *out, size_t len) {
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i ? ", " : "", reg[i].name);
    }
}

/* The name lists are built once into static buffers: they appear in error messages,
 * which must not allocate on paths that are already failing. */
const char *instr_registry_preprocess_names(void) {
    static char buf[512];
    if (!buf[0])
        s_reg_join(s_preprocess, NREG(s_preprocess), buf, sizeof buf);
    return buf;
}

const char *instr_registry_adaptor_names(void) {
    static char buf[512];
    if (!buf[0])
        s_reg_join(s_adaptor, NREG(s_adaptor), buf, sizeof buf);
    return buf;
}

/* ---- attribute table ------------------------------------------------------------- */

/* How an attribute's value is written and checked: a bare flag, a ratio in [0, 1], an
 * integer within bounds, or a name that must be in one of the registries. */
typedef enum { A_FLAG, A_RATIO, A_INT, A_PREPROCESS, A_ADAPTOR } s_atype_t;

typedef struct {
    const char *name;
    uint32_t bit;
    s_atype_t type;
    uint32_t mods;       /* modalities the attribute applies to */
    bool target_only;
    int lo, hi;          /* A_INT bounds */
    size_t off;          /* destination in instr_slot_t */
} s_attr_t;

/* One row per attribute, Redis-config style: adding an attribute is one row here, one
 * bit in instr_attr_t and one field in instr_slot_t. The modality masks follow what the
 * stages can do with the attribute: masking makes sense for token and patch sequences,
 * noise only for tokens, sizes only for pixels. closed_set and no_loss describe what the
 * decoder learns, so they are refused on the source side rather than ignored there. */
#define OFF(f) offsetof(instr_slot_t, f)
static const s_attr_t s_attrs[] = {
    {"no_loss", INSTR_ATTR_NO_LOSS, A_FLAG, M_ALL, true, 0, 0, OFF(no_loss)},
    {"closed_set", INSTR_ATTR_CLOSED_SET, A_FLAG, M(MOD_TEXT) | M(MOD_CATEGORY), true, 0, 0,
     OFF(closed_set)},
    {"mask_ratio", INSTR_ATTR_MASK_RATIO, A_RATIO,
     M(MOD_TEXT) | M(MOD_IMAGE) | M(MOD_AUDIO) | M(MOD_VIDEO) | M(MOD_PHONE) | M(MOD_STRUCT),
     false, 0, 0, OFF(mask_ratio)},
    {"noise_ratio", INSTR_ATTR_NOISE_RATIO, A_RATIO,
     M(MOD_TEXT) | M(MOD_PHONE) | M(MOD_STRUCT) | M(MOD_BOX), false, 0, 0, OFF(noise_ratio)},
    {"max_length", INSTR_ATTR_MAX_LENGTH, A_INT, M_ALL & ~(M(MOD_IMAGE) | M(MOD_BOX)), false,
     1, 1000000, OFF(max_length)},
    {"uncased", INSTR_ATTR_UNCASED, A_FLAG, M(MOD_TEXT) | M(MOD_STRUCT) | M(MOD_CATEGORY),
     false, 0, 0, OFF(uncased)},
    {"no_punctuation", INSTR_ATTR_NO_PUNCTUATION, A_FLAG,
     M(MOD_TEXT) | M(MOD_STRUCT) | M(MOD_CATEGORY), false, 0, 0, OFF(no_punctuation)},
    {"preprocess", INSTR_ATTR_PREPROCESS, A_PREPROCESS, M_ALL, false, 0, 0, OFF(preprocess)},
    {"adaptor", INSTR_ATTR_ADAPTOR, A_ADAPTOR, M_ALL, false, 0, 0, OFF(adaptor)},
    {"add_bos", INSTR_ATTR_ADD_BOS, A_FLAG, M_TEXTLIKE, false, 0, 0, OFF(add_bos)},
    {"add_eos", INSTR_ATTR_ADD_EOS, A_FLAG, M_TEXTLIKE, false, 0, 0, OFF(add_eos)},
    {"image_size", INSTR_ATTR_IMAGE_SIZE, A_INT, M(MOD_IMAGE) | M(MOD_VIDEO), false, 16, 4096,
     OFF(image_size)},
    {"patch", INSTR_ATTR_PATCH, A_INT, M(MOD_IMAGE) | M(MOD_VIDEO), false, 1, 256, OFF(patch)},
    {"sample_rate", INSTR_ATTR_SAMPLE_RATE, A_INT, M(MOD_AUDIO), false, 1000, 192000,
     OFF(sample_rate)},
    {"n_mels", INSTR_ATTR_N_MELS, A_INT, M(MOD_AUDIO), false, 1, 512, OFF(n_mels)},
    {"frames", INSTR_ATTR_FRAMES, A_INT, M(MOD_VIDEO), false, 1, 256, OFF(frames)},
    {"num_bins", INSTR_ATTR_NUM_BINS, A_INT, M(MOD_BOX), false, 2, 1000, OFF(num_bins)},
};
#undef OFF
#define NATTRS ((int)(sizeof(s_attrs) / sizeof(s_attrs[0])))

static const char *s_attr_names(void) {
    static char buf[512];
    if (!buf[0])
        for (int i = 0; i < NATTRS; i++) {
            size_t used = strlen(buf);
            snprintf(buf + used, sizeof buf - used, "%s%s", i ? ", " : "", s_attrs[i].name);
        }
    return buf;
}

/* ---- parser state ----------------------------------------------------------------- */

/* The parser keeps the whole text so that any offset can be turned into a line and
 * column when an error is reported, wherever in the nesting it is found. */
typedef struct {
    const char *text;
    char *err;
    size_t errlen;
} s_parser_t;

/* 1-based line and column of byte offset off. Columns count bytes, as compilers do. */
static void s_linecol(const char *text, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* Fill the error buffer as "instruction:L:C: reason"; returns -1. */
static int s_fail(s_parser_t *p, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_fail(s_parser_t *p, size_t off, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    s_linecol(p->text, off, &line, &col);
    return util_err(p->err, p->errlen, "instruction:%d:%d: %s", line, col, msg);
}

/* Does tok start at text[i] and end before `end`? */
static bool s_at(const char *text, size_t i, size_t end, const char *tok) {
    size_t n = strlen(tok);
    return i + n <= end && strncmp(text + i, tok, n) == 0;
}

/* A copy of text[a..b) with surrounding white space removed; NULL when empty. */
static char *s_trimmed(const char *text, size_t a, size_t b, size_t *start) {
    while (a < b && isspace((unsigned char)text[a]))
        a++;
    while (b > a && isspace((unsigned char)text[b - 1]))
        b--;
    if (start)
        *start = a;
    if (a == b)
        return NULL;
    char *s = util_malloc(b - a + 1);
    memcpy(s, text + a, b - a);
    s[b - a] = '\0';
    return s;
}

/* Append a segment; the sentence owns the segment's strings from here on. */
static void s_sentence_push(instr_sentence_t *s, int *cap, const instr_seg_t *seg) {
    if (s->nsegs == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        s->segs = util_realloc(s->segs, (size_t)*cap * sizeof *s->segs);
    }
    s->segs[s->nsegs++] = *seg;
}

static void s_slot_free(instr_slot_t *slot) {
    free(slot->column);
    free(slot->preprocess);
    free(slot->adaptor);
}

static void s_sentence_free(instr_sentence_t *s) {
    for (int i = 0; i < s->nsegs; i++) {
        free(s->segs[i].text);
        if (s->segs[i].kind == INSTR_SEG_SLOT)
            s_slot_free(&s->segs[i].slot);
    }
    free(s->segs);
    memset(s, 0, sizeof *s);
}

/* ---- pass 1: brackets ------------------------------------------------------------- */

/* Slots do not nest, and every '[' is closed on the same template. Reporting the
 * opening bracket of an unclosed slot points the user at the slot that runs away. */
static int s_check_brackets(s_parser_t *p) {
    const char *t = p->text;
    long open = -1;
    for (size_t i = 0; t[i]; i++) {
        if (t[i] == '[') {
            if (open >= 0)
                return s_fail(p, (size_t)open, "unbalanced '[': this slot is not closed with "
                                               "']' before the next '['");
            open = (long)i;
        } else if (t[i] == ']') {
            if (open < 0)
                return s_fail(p, i, "unbalanced ']': no slot is open");
            open = -1;
        }
    }
    if (open >= 0)
        return s_fail(p, (size_t)open, "unbalanced '[': this slot is never closed with ']'");
    return 0;
}

/* ---- slots ------------------------------------------------------------------------ */

/* Column names are identifiers of data columns (TSV header names, JSON keys): letters,
 * digits, '_', '-' and '.'. Anything else (a '/', a space) is far more likely a typo or a
 * path than a column, so it is refused with the offending character's column. */
static bool s_is_name_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}

/* Parse one attribute text[a..b) ("mask_ratio=0.3", "no_loss") into slot. Checks run in
 * the order a user fixes them: is it an attribute at all, is it repeated, does it apply
 * to this modality and side, and only then is its value right. Every message points at
 * the attribute's name, or at its value when the value is what is wrong. */
static int s_parse_attr(s_parser_t *p, instr_slot_t *slot, bool target, size_t a, size_t b) {
    const char *t = p->text;
    size_t start;
    char *piece = s_trimmed(t, a, b, &start);
    if (!piece)
        return s_fail(p, a, "empty attribute in slot (stray ',')");
    char *eq = strchr(piece, '=');
    char *value = NULL;
    size_t value_off = start;
    if (eq) {
        *eq = '\0';
        value = eq + 1;
        value_off = start + (size_t)(value - piece);
        while (*value && isspace((unsigned char)*value)) {
            value++;
            value_off++;
        }
        /* trim the name's trailing blanks ("mask_ratio = 0.3") */
        for (char *e = eq - 1; e >= piece && isspace((unsigned char)*e); e--)
            *e = '\0';
    }
    const s_attr_t *at = NULL;
    for (int i = 0; i < NATTRS; i++)
        if (strcmp(s_attrs[i].name, piece) == 0)
            at = &s_attrs[i];
    int rc = 0;
    if (!at) {
        rc = s_fail(p, start, "unknown attribute '%s' (known: %s)", piece, s_attr_names());
        goto out;
    }
    if (slot->attrs & at->bit) {
        rc = s_fail(p, start, "repeated attribute '%s'", piece);
        goto out;
    }
    if (!(at->mods & M(slot->mod))) {
        rc = s_fail(p, start, "attribute '%s' does not apply to %s slots", piece,
                    mod_name(slot->mod));
        goto out;
    }
    if (at->target_only && !target) {
        rc = s_fail(p, start, "attribute '%s' applies to target slots only", piece);
        goto out;
    }
    char *dst = (char *)slot + at->off;
    if (at->type == A_FLAG) {
        if (value) {
            rc = s_fail(p, start, "attribute '%s' is a flag and takes no value", piece);
            goto out;
        }
        *(bool *)dst = true;
    } else if (!value || !*value) {
        rc = s_fail(p, start, "attribute '%s' needs a value (%s=...)", piece, piece);
        goto out;
    } else if (at->type == A_RATIO) {
        /* strtod alone would take "0.3abc" as 0.3: the whole value must be the number */
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || errno || !isfinite(v)) {
            rc = s_fail(p, value_off, "attribute '%s' wants a number in [0, 1], got '%s'",
                        piece, value);
            goto out;
        }
        if (v < 0 || v > 1) {
            rc = s_fail(p, value_off, "%s=%s is out of range [0, 1]", piece, value);
            goto out;
        }
        *(float *)dst = (float)v;
    } else if (at->type == A_INT) {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (end == value || *end || errno) {
            rc = s_fail(p, value_off, "attribute '%s' wants an integer, got '%s'", piece, value);
            goto out;
        }
        if (v < at->lo || v > at->hi) {
            rc = s_fail(p, value_off, "%s=%s is out of range [%d, %d]", piece, value, at->lo,
                        at->hi);
            goto out;
        }
        *(int *)dst = (int)v;
    } else {
        bool pre = at->type == A_PREPROCESS;
        const s_reg_t *r = pre ? s_reg_find(s_preprocess, NREG(s_preprocess), value)
                               : s_reg_find(s_adaptor, NREG(s_adaptor), value);
        if (!r) {
            rc = s_fail(p, value_off, "%s '%s' is not a registered name (known: %s)", piece,
                        value,
                        pre ? instr_registry_preprocess_names() : instr_registry_adaptor_names());
            goto out;
        }
        if (!(r->mods & M(slot->mod))) {
            rc = s_fail(p, value_off, "%s '%s' applies to %s slots, not %s", piece, value,
                        mod_name((mod_t)s_reg_first_mod(r)), mod_name(slot->mod));
            goto out;
        }
        *(char **)dst = util_strdup(value);
    }
    slot->attrs |= at->bit;
out:
    free(piece);
    return rc;
}

/* Parse the slot text[open..close] where text[open]=='[' and text[close]==']'.
 * OFASys turns a malformed slot into plain text without a word; here every part of the
 * slot is checked, since a slot that silently became prompt text would train a
 * different task than the one written. */
static int s_parse_slot(s_parser_t *p, instr_slot_t *slot, bool target, size_t open,
                        size_t close) {
    const char *t = p->text;
    memset(slot, 0, sizeof *slot);
    s_linecol(t, open, &slot->line, &slot->col);
    size_t head_end = open + 1;
    while (head_end < close && t[head_end] != ',')
        head_end++;
    /* TYPE (':' name)? */
    size_t colon = open + 1;
    while (colon < head_end && t[colon] != ':')
        colon++;
    size_t tstart;
    char *type = s_trimmed(t, open + 1, colon, &tstart);
    if (!type)
        return s_fail(p, open + 1, "slot without a modality (write [TYPE:column])");
    int mod = mod_from_name(type);
    if (mod < 0) {
        /* "[image:img]" is the common slip: say that the case is what is wrong. */
        char upper[64];
        size_t n = 0;
        for (; type[n] && n + 1 < sizeof upper; n++)
            upper[n] = (char)toupper((unsigned char)type[n]);
        upper[n] = '\0';
        int rc;
        if (mod_from_name(upper) >= 0)
            rc = s_fail(p, tstart, "unknown modality '%s' (modalities are upper case: %s)",
                        type, upper);
        else
            rc = s_fail(p, tstart,
                        "unknown modality '%s' (known: TEXT, IMAGE, BOX, AUDIO, VIDEO, "
                        "PHONE, MOTION, STRUCT, CATEGORY)",
                        type);
        free(type);
        return rc;
    }
    free(type);
    slot->mod = (mod_t)mod;
    if (colon < head_end) {
        size_t nstart;
        char *name = s_trimmed(t, colon + 1, head_end, &nstart);
        if (!name)
            return s_fail(p, colon, "empty column name after ':' (write [%s:column] or [%s])",
                          mod_name(slot->mod), mod_name(slot->mod));
        for (size_t i = 0; name[i]; i++)
            if (!s_is_name_char(name[i])) {
                int rc = s_fail(p, nstart + i,
                                "bad character '%c' in column name '%s' (letters, digits, "
                                "'_', '-', '.')",
                                name[i], name);
                free(name);
                return rc;
            }
        slot->column = name;
    }
    size_t a = head_end;
    while (a < close) {
        size_t b = a + 1;
        while (b < close && t[b] != ',')
            b++;
        if (s_parse_attr(p, slot, target, a + 1, b) < 0)
            return -1;
        a = b;
    }
    /* A target slot may be unnamed (the model generates it); a source slot is input,
     * and input with no column to read it from is a mistake. */
    if (!target && !slot->column)
        return s_fail(p, open, "source slot [%s] needs a column name ([%s:column])",
                      mod_name(slot->mod), mod_name(slot->mod));
    return 0;
}

/* ---- sentences -------------------------------------------------------------------- */

/* Flush plain text text[a..b) into the sentence as one trimmed segment. */
static void s_flush_text(s_parser_t *p, instr_sentence_t *s, int *cap, size_t a, size_t b,
                         bool repeated) {
    size_t start;
    char *txt = s_trimmed(p->text, a, b, &start);
    if (!txt)
        return;
    instr_seg_t seg = {.kind = INSTR_SEG_TEXT, .text = txt, .repeated = repeated};
    s_linecol(p->text, start, &seg.line, &seg.col);
    s_sentence_push(s, cap, &seg);
}

/* First offset >= from where tok starts inside [from, end), or (size_t)-1. */
static size_t s_find(const char *t, size_t from, size_t end, const char *tok) {
    for (size_t i = from; i < end; i++)
        if (s_at(t, i, end, tok))
            return i;
    return (size_t)-1;
}

/* Parse one side text[a..b) of a template. The scan cuts plain text at the four kinds of
 * markup (slot, <BOS>/<EOS>, the '(' and ')*' of a repeated group); whatever lies between
 * is prompt text, trimmed, and kept only when not empty. */
static int s_parse_sentence(s_parser_t *p, instr_sentence_t *s, bool target, size_t a,
                            size_t b) {
    const char *t = p->text;
    int cap = 0;
    size_t text_from = a;
    bool in_group = false;
    size_t group_open = 0;
    s->rep_first = -1;
    for (size_t i = a; i < b;) {
        if (t[i] == '[') {
            s_flush_text(p, s, &cap, text_from, i, in_group);
            size_t close = i;
            while (t[close] != ']')
                close++;   /* pass 1 guarantees it exists */
            instr_seg_t seg = {.kind = INSTR_SEG_SLOT, .repeated = in_group};
            s_linecol(t, i, &seg.line, &seg.col);
            int rc = s_parse_slot(p, &seg.slot, target, i, close);
            s_sentence_push(s, &cap, &seg);   /* pushed even on error: freed with s */
            if (rc < 0)
                return -1;
            s->nslots++;
            i = close + 1;
            text_from = i;
        } else if (s_at(t, i, b, "<BOS>") || s_at(t, i, b, "<EOS>")) {
            s_flush_text(p, s, &cap, text_from, i, in_group);
            instr_seg_t seg = {.kind = t[i + 1] == 'B' ? INSTR_SEG_BOS : INSTR_SEG_EOS,
                               .repeated = in_group};
            s_linecol(t, i, &seg.line, &seg.col);
            s_sentence_push(s, &cap, &seg);
            i += 5;
            text_from = i;
        } else if (t[i] == '(') {
            /* A '(' opens a repeated group only when a ')*' closes it; otherwise it is
             * prose ("(roughly)") unless a slot follows it directly, which can only be
             * a group missing its ')*'. */
            size_t close = s_find(t, i + 1, b, ")*");
            size_t j = i + 1;
            while (j < b && isspace((unsigned char)t[j]))
                j++;
            if (close == (size_t)-1) {
                if (j < b && t[j] == '[')
                    return s_fail(p, i, "unbalanced '(': a repeated group needs ')*'");
                i++;
                continue;
            }
            if (in_group)
                return s_fail(p, i, "nested repeated groups are not supported");
            if (s->rep_count || s->rep_first >= 0)
                return s_fail(p, i, "only one repeated group per sentence");
            s_flush_text(p, s, &cap, text_from, i, false);
            in_group = true;
            group_open = i;
            s->rep_first = s->nsegs;
            i++;
            text_from = i;
        } else if (s_at(t, i, b, ")*")) {
            if (!in_group)
                return s_fail(p, i, "unbalanced ')*': no repeated group is open");
            s_flush_text(p, s, &cap, text_from, i, true);
            in_group = false;
            s->rep_count = s->nsegs - s->rep_first;
            int nslots = 0;
            for (int k = s->rep_first; k < s->nsegs; k++)
                nslots += s->segs[k].kind == INSTR_SEG_SLOT;
            if (nslots == 0)
                return s_fail(p, group_open, "repeated group without a slot");
            i += 2;
            text_from = i;
        } else {
            i++;
        }
    }
    s_flush_text(p, s, &cap, text_from, b, in_group);
    if (s->rep_first < 0)
        s->rep_first = 0;
    return 0;
}

/* ---- instructions ----------------------------------------------------------------- */

/* Parse one ||| alternative text[a..b). The arrow is found before anything else is
 * parsed: the side decides what a slot may carry (closed_set, no_loss, no name). */
static int s_parse_template(s_parser_t *p, instr_template_t *tm, size_t a, size_t b) {
    const char *t = p->text;
    size_t arrow = (size_t)-1;
    for (size_t i = a; i + 1 < b; i++) {
        if (t[i] == '-' && t[i + 1] == '>') {
            if (arrow != (size_t)-1)
                return s_fail(p, i, "more than one '->' (the first is at column %d)",
                              (int)(arrow - a) + 1);
            arrow = i;
        }
    }
    if (arrow == (size_t)-1) {
        size_t at = a;
        while (at < b && isspace((unsigned char)t[at]))
            at++;
        return s_fail(p, at, "no '->' between source and target");
    }
    if (s_parse_sentence(p, &tm->src, false, a, arrow) < 0)
        return -1;
    if (s_parse_sentence(p, &tm->tgt, true, arrow + 2, b) < 0)
        return -1;
    /* Either side may be without slots, but not both: an instruction without any slot
     * reads no data and is almost always a slot that lost its brackets. */
    if (tm->src.nslots + tm->tgt.nslots == 0) {
        size_t at = a;
        while (at < b && isspace((unsigned char)t[at]))
            at++;
        return s_fail(p, at, "instruction has no slot (write at least one [TYPE:column])");
    }
    return 0;
}

static void s_instr_free(instr_t *in) {
    for (int i = 0; i < in->nalts; i++) {
        s_sentence_free(&in->alts[i].src);
        s_sentence_free(&in->alts[i].tgt);
    }
    free(in->alts);
    free(in->text);
    free(in);
}

/* Brackets are checked over the whole text first: an unclosed '[' would otherwise be
 * reported as some later, unrelated error (a '->' inside what looks like a slot). */
instr_t *instr_parse(const char *text, char *err, size_t errlen) {
    s_parser_t p = {.text = text ? text : "", .err = err, .errlen = errlen};
    size_t len = strlen(p.text);
    size_t first = 0;
    while (first < len && isspace((unsigned char)p.text[first]))
        first++;
    if (first == len) {
        s_fail(&p, 0, "empty instruction");
        return NULL;
    }
    if (s_check_brackets(&p) < 0)
        return NULL;
    instr_t *in = util_calloc(1, sizeof *in);
    in->text = util_strdup(p.text);
    size_t a = 0;
    for (;;) {
        size_t bar = s_find(p.text, a, len, "|||");
        size_t b = bar == (size_t)-1 ? len : bar;
        in->alts = util_realloc(in->alts, (size_t)(in->nalts + 1) * sizeof *in->alts);
        instr_template_t *tm = &in->alts[in->nalts++];
        memset(tm, 0, sizeof *tm);
        if (s_parse_template(&p, tm, a, b) < 0) {
            s_instr_free(in);
            return NULL;
        }
        if (bar == (size_t)-1)
            break;
        a = bar + 3;
    }
    return in;
}

void instr_destroy(instr_t **self_p) {
    if (!self_p || !*self_p)
        return;
    s_instr_free(*self_p);
    *self_p = NULL;
}
