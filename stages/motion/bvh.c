/* bvh.c: see bvh.h. */
#include "bvh.h"

#include "util.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A whitespace tokenizer over the NUL-terminated copy of the file that counts lines,
 * so every error can say where it is. */
typedef struct {
    const char *p;
    int line;
    char tok[128];
} s_lex_t;

static bool s_next(s_lex_t *lx) {
    while (*lx->p && isspace((unsigned char)*lx->p)) {
        lx->line += *lx->p == '\n';
        lx->p++;
    }
    if (!*lx->p)
        return false;
    size_t n = 0;
    while (*lx->p && !isspace((unsigned char)*lx->p)) {
        if (n + 1 < sizeof lx->tok)
            lx->tok[n++] = *lx->p;
        lx->p++;
    }
    lx->tok[n] = 0;
    return true;
}

/* The next token must be `want`. */
static int s_expect(s_lex_t *lx, const char *want, const char *where, char *err, size_t errlen) {
    if (!s_next(lx))
        return util_err(err, errlen, "line %d: truncated file: expected '%s' %s", lx->line,
                        want, where);
    if (strcmp(lx->tok, want) != 0)
        return util_err(err, errlen, "line %d: expected '%s' %s, found '%s'", lx->line, want,
                        where, lx->tok);
    return 0;
}

/* A whole token that is a finite number. */
static int s_number(s_lex_t *lx, double *v, const char *what, char *err, size_t errlen) {
    if (!s_next(lx))
        return util_err(err, errlen, "line %d: truncated file: expected %s", lx->line, what);
    char *end;
    *v = strtod(lx->tok, &end);
    if (end == lx->tok || *end || !isfinite(*v))
        return util_err(err, errlen, "line %d: %s is not a number: '%s'", lx->line, what, lx->tok);
    return 0;
}

static int s_channel(const char *name, bvh_channel_t *c) {
    static const char *names[] = {"Xposition", "Yposition", "Zposition",
                                  "Xrotation", "Yrotation", "Zrotation"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(name, names[i])) {
            *c = (bvh_channel_t)i;
            return 0;
        }
    return -1;
}

static int s_offset(s_lex_t *lx, double *off, const char *name, char *err, size_t errlen) {
    char where[96];
    snprintf(where, sizeof where, "in joint %s", name);
    if (s_expect(lx, "OFFSET", where, err, errlen) != 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (s_number(lx, &off[i], "an OFFSET value", err, errlen) != 0)
            return -1;
    return 0;
}

/* One ROOT/JOINT block, its name already read into lx->tok. */
static int s_joint(bvh_t *b, s_lex_t *lx, int parent, int depth, char *err, size_t errlen) {
    if (depth > BVH_MAX_JOINTS || b->njoints >= BVH_MAX_JOINTS)
        return util_err(err, errlen, "line %d: more than %d joints", lx->line, BVH_MAX_JOINTS);
    if (!s_next(lx))
        return util_err(err, errlen, "line %d: truncated file: joint without a name", lx->line);
    int j = b->njoints++;
    bvh_joint_t *jt = &b->joints[j];
    /* Names longer than the field are cut (they only appear in messages). */
    snprintf(jt->name, sizeof jt->name, "%.63s", lx->tok);
    jt->parent = parent;
    char where[96];
    snprintf(where, sizeof where, "after joint %s", jt->name);
    if (s_expect(lx, "{", where, err, errlen) != 0 ||
        s_offset(lx, jt->offset, jt->name, err, errlen) != 0)
        return -1;
    int line = lx->line;
    if (!s_next(lx))
        return util_err(err, errlen, "line %d: truncated file inside joint %s", lx->line, jt->name);
    if (strcmp(lx->tok, "CHANNELS") != 0)
        return util_err(err, errlen, "line %d: joint %s has no CHANNELS line (found '%s')",
                        lx->line > line ? lx->line : line, jt->name, lx->tok);
    double n;
    if (s_number(lx, &n, "the channel count", err, errlen) != 0)
        return -1;
    if (n != floor(n) || n < 0 || n > 6)
        return util_err(err, errlen, "line %d: joint %s: channel count %g (0..6)", lx->line,
                        jt->name, n);
    jt->nch = (int)n;
    jt->first = b->nchannels;
    b->nchannels += jt->nch;
    int seen = 0, nrot = 0;
    for (int i = 0; i < jt->nch; i++) {
        if (!s_next(lx))
            return util_err(err, errlen, "line %d: truncated file in joint %s's channels",
                            lx->line, jt->name);
        if (s_channel(lx->tok, &jt->ch[i]) != 0)
            return util_err(err, errlen, "line %d: joint %s: unknown or missing channel '%s' "
                            "(%d of %d named)", lx->line, jt->name, lx->tok, i, jt->nch);
        if (seen & (1 << jt->ch[i]))
            return util_err(err, errlen, "line %d: joint %s: channel %s twice", lx->line,
                            jt->name, lx->tok);
        seen |= 1 << jt->ch[i];
        nrot += jt->ch[i] >= BVH_XROT;
    }
    /* A rotation needs all three angles; two of them cannot be turned into a matrix
     * without guessing the third. */
    if (nrot != 0 && nrot != 3)
        return util_err(err, errlen, "line %d: joint %s: missing rotation channels (%d of X/Y/Z "
                        "rotation)", lx->line, jt->name, nrot);
    for (;;) {
        if (!s_next(lx))
            return util_err(err, errlen, "line %d: truncated file: joint %s is not closed",
                            lx->line, jt->name);
        if (!strcmp(lx->tok, "}"))
            return 0;
        if (!strcmp(lx->tok, "JOINT")) {
            if (s_joint(b, lx, j, depth + 1, err, errlen) != 0)
                return -1;
            jt = &b->joints[j];
        } else if (!strcmp(lx->tok, "End")) {
            double off[3];
            if (s_expect(lx, "Site", "after End", err, errlen) != 0 ||
                s_expect(lx, "{", "after End Site", err, errlen) != 0 ||
                s_offset(lx, off, "End Site", err, errlen) != 0 ||
                s_expect(lx, "}", "closing End Site", err, errlen) != 0)
                return -1;
        } else {
            return util_err(err, errlen, "line %d: unexpected '%s' in joint %s", lx->line,
                            lx->tok, jt->name);
        }
    }
}

/* The frame lines: one per frame, exactly nchannels finite numbers each. */
static int s_frames(bvh_t *b, s_lex_t *lx, char *err, size_t errlen) {
    const char *p = lx->p;
    int line = lx->line;
    /* The rest of the "Frame Time:" line. */
    while (*p && *p != '\n')
        p++;
    int64_t f = 0;
    while (*p) {
        p++;                                  /* the '\n' */
        line++;
        const char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r')
            q++;
        if (!*q)
            break;
        if (*q == '\n') {                     /* blank line */
            p = q;
            continue;
        }
        if (f >= b->nframes)
            return util_err(err, errlen, "line %d: frame count mismatch: 'Frames: %lld' but "
                            "more frame lines follow", line, (long long)b->nframes);
        float *row = b->motion + f * b->nchannels;
        int k = 0;
        for (;;) {
            while (*q == ' ' || *q == '\t' || *q == '\r')
                q++;
            if (!*q || *q == '\n')
                break;
            char *end;
            double v = strtod(q, &end);
            /* Finite as the float it is stored in: 1e39 parses but would become inf. */
            if (end == q || (*end && !isspace((unsigned char)*end)) || !isfinite((float)v)) {
                const char *e = q;
                while (*e && !isspace((unsigned char)*e))
                    e++;
                return util_err(err, errlen, "line %d: frame %lld, value %d is not a number: "
                                "'%.*s'", line, (long long)f, k + 1, (int)(e - q > 40 ? 40 : e - q), q);
            }
            if (k < b->nchannels)
                row[k] = (float)v;
            k++;
            q = end;
        }
        if (k != b->nchannels)
            return util_err(err, errlen, "line %d: frame %lld has %d values, expected %d "
                            "(truncated or malformed)", line, (long long)f, k, b->nchannels);
        f++;
        p = q;
    }
    if (f < b->nframes)
        return util_err(err, errlen, "truncated file: 'Frames: %lld' but %lld frame lines",
                        (long long)b->nframes, (long long)f);
    return 0;
}

/* The text is copied once to NUL-terminate it: strtod and the tokenizer then never read
 * past the column's bytes, whatever they hold. */
bvh_t *bvh_parse(const char *text, size_t len, char *err, size_t errlen) {
    if (!text || len == 0) {
        util_err(err, errlen, "empty BVH file");
        return NULL;
    }
    char *copy = util_malloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = 0;
    if (strlen(copy) != len) {
        util_err(err, errlen, "not a BVH text file (NUL byte at offset %zu)", strlen(copy));
        free(copy);
        return NULL;
    }
    bvh_t *b = util_calloc(1, sizeof *b);
    b->joints = util_calloc(BVH_MAX_JOINTS, sizeof(bvh_joint_t));
    s_lex_t lx = {copy, 1, ""};
    double nf, dt;
    int rc = s_expect(&lx, "HIERARCHY", "at the start of a BVH file", err, errlen);
    if (rc == 0)
        rc = s_expect(&lx, "ROOT", "after HIERARCHY", err, errlen);
    if (rc == 0)
        rc = s_joint(b, &lx, -1, 0, err, errlen);
    if (rc == 0)
        rc = s_expect(&lx, "MOTION", "after the hierarchy (one ROOT only)", err, errlen);
    if (rc == 0)
        rc = s_expect(&lx, "Frames:", "after MOTION", err, errlen);
    if (rc == 0)
        rc = s_number(&lx, &nf, "the frame count", err, errlen);
    if (rc == 0 && (nf != floor(nf) || nf < 1 || nf > BVH_MAX_FRAMES))
        rc = util_err(err, errlen, "line %d: frame count %g (1..%d)", lx.line, nf, BVH_MAX_FRAMES);
    if (rc == 0)
        rc = s_expect(&lx, "Frame", "after Frames:", err, errlen);
    if (rc == 0)
        rc = s_expect(&lx, "Time:", "after Frame", err, errlen);
    if (rc == 0)
        rc = s_number(&lx, &dt, "the frame time", err, errlen);
    if (rc == 0 && !(dt > 0 && dt < 10))
        rc = util_err(err, errlen, "line %d: frame time %g s", lx.line, dt);
    if (rc == 0 && b->nchannels == 0)
        rc = util_err(err, errlen, "no channels in the hierarchy");
    if (rc == 0) {
        b->nframes = (int64_t)nf;
        b->frame_time = dt;
        /* Bounded by the bytes present: a frame line has at least 2 bytes per value, so
         * a header claiming more frames than the file could hold is caught without
         * allocating for it. */
        if ((double)b->nframes * b->nchannels * 2 > (double)len)
            rc = util_err(err, errlen, "truncated file: 'Frames: %lld' x %d channels cannot "
                          "fit in %zu bytes", (long long)b->nframes, b->nchannels, len);
    }
    if (rc == 0) {
        b->motion = util_malloc((size_t)b->nframes * b->nchannels * sizeof(float));
        rc = s_frames(b, &lx, err, errlen);
    }
    free(copy);
    if (rc != 0)
        bvh_destroy(&b);
    return b;
}

void bvh_destroy(bvh_t **self_p) {
    if (!self_p || !*self_p)
        return;
    bvh_t *b = *self_p;
    free(b->joints);
    free(b->motion);
    free(b);
    *self_p = NULL;
}

static int s_npos(const bvh_joint_t *j) {
    int n = 0;
    for (int i = 0; i < j->nch; i++)
        n += j->ch[i] < BVH_XROT;
    return n;
}

int bvh_feature_dim(const bvh_t *self) {
    int C = 0;
    for (int j = 0; j < self->njoints; j++) {
        const bvh_joint_t *jt = &self->joints[j];
        int np = s_npos(jt);
        C += np + (jt->nch - np ? 6 : 0);
    }
    return C;
}

int64_t bvh_num_windows(const bvh_t *self, int T, int stride, int step) {
    OFA_ASSERT(T > 0 && stride > 0 && step > 0);
    int64_t Fs = (self->nframes + step - 1) / step;
    return Fs < T ? 1 : 1 + (Fs - T) / stride;
}

/* m = m * R_axis(deg), m row-major 3x3. */
static void s_rotate(double m[9], int axis, double deg) {
    double a = deg * (M_PI / 180.0), c = cos(a), s = sin(a);
    double r[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    if (axis == 0) {          /* X */
        r[4] = c, r[5] = -s, r[7] = s, r[8] = c;
    } else if (axis == 1) {   /* Y */
        r[0] = c, r[2] = s, r[6] = -s, r[8] = c;
    } else {                  /* Z */
        r[0] = c, r[1] = -s, r[3] = s, r[4] = c;
    }
    double o[9];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            o[i * 3 + k] = m[i * 3] * r[k] + m[i * 3 + 1] * r[3 + k] + m[i * 3 + 2] * r[6 + k];
    memcpy(m, o, sizeof o);
}

int bvh_window(const bvh_t *self, int64_t start, int T, int step, float pos_scale, float *out) {
    OFA_ASSERT(T > 0 && step > 0 && start >= 0);
    int64_t Fs = (self->nframes + step - 1) / step;
    int C = bvh_feature_dim(self);
    int64_t first = (start < Fs ? start : Fs - 1) * step;
    const float *f0 = self->motion + first * self->nchannels;
    for (int t = 0; t < T; t++) {
        int64_t s = start + t < Fs ? start + t : Fs - 1;
        const float *row = self->motion + s * step * self->nchannels;
        float *o = out + (size_t)t * C;
        for (int j = 0; j < self->njoints; j++) {
            const bvh_joint_t *jt = &self->joints[j];
            /* Positions, in X, Y, Z order whatever the file's order. */
            for (int ax = BVH_XPOS; ax <= BVH_ZPOS; ax++)
                for (int i = 0; i < jt->nch; i++)
                    if (jt->ch[i] == (bvh_channel_t)ax) {
                        double v = row[jt->first + i];
                        if (jt->parent < 0 && ax != BVH_YPOS)
                            v -= f0[jt->first + i];
                        *o++ = (float)(v * pos_scale);
                    }
            if (jt->nch == s_npos(jt))
                continue;
            double m[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
            for (int i = 0; i < jt->nch; i++)
                if (jt->ch[i] >= BVH_XROT)
                    s_rotate(m, jt->ch[i] - BVH_XROT, row[jt->first + i]);
            /* First two columns. */
            *o++ = (float)m[0], *o++ = (float)m[3], *o++ = (float)m[6];
            *o++ = (float)m[1], *o++ = (float)m[4], *o++ = (float)m[7];
        }
    }
    int64_t real = Fs - start;
    return real < 0 ? 0 : real > T ? T : (int)real;
}
