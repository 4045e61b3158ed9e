/* fuzz_bvh.c: fuzz target for the motion tier's BVH reader and features (bvh_parse, then
 * bvh_window on the first and the last window) on arbitrary text. The input is the file.
 *
 * Properties checked beyond "no crash":
 *  - a refusal has a non-empty reason;
 *  - a parsed file is a sane skeleton: 1..BVH_MAX_JOINTS joints, the root first, every
 *    parent before its child, channel offsets that tile the frame line, nchannels their
 *    sum, 1..BVH_MAX_FRAMES frames, a frame time in (0, 10) s, and only finite values;
 *  - a window (8 frames, one in 2, every 4th) reports 1..8 real frames for the first and
 *    the last window, and its features are finite, the 6-D rotation parts within [-1, 1].
 * Any failure aborts, which the fuzzer reports. */
#include "bvh.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { T = 8, STEP = 2, STRIDE = 4 };

static void s_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_bvh: %s: %s\n", what, detail ? detail : "");
    abort();
}

static void s_check_window(const bvh_t *b, int64_t start, float *out, int C) {
    int real = bvh_window(b, start, T, STEP, 0.01f, out);
    if (real < 1 || real > T)
        s_fail("window", "real frame count outside 1..T");
    for (int t = 0; t < T; t++) {
        const float *o = out + (size_t)t * C;
        for (int j = 0; j < b->njoints; j++) {
            const bvh_joint_t *jt = &b->joints[j];
            int np = 0;
            for (int i = 0; i < jt->nch; i++)
                np += jt->ch[i] < BVH_XROT;
            for (int i = 0; i < np; i++, o++)
                if (!isfinite(*o))
                    s_fail("a position feature is not finite", jt->name);
            if (np == jt->nch)
                continue;
            for (int i = 0; i < 6; i++, o++)
                if (!(fabsf(*o) <= 1.0f + 1e-5f))
                    s_fail("a 6-D rotation feature outside [-1, 1]", jt->name);
        }
        if (o != out + (size_t)(t + 1) * C)
            s_fail("window", "features do not fill C per frame");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256] = "";
    bvh_t *b = bvh_parse((const char *)data, size, err, sizeof err);
    if (!b) {
        if (!err[0])
            s_fail("refused without a reason", NULL);
        return 0;
    }
    if (b->njoints < 1 || b->njoints > BVH_MAX_JOINTS || b->joints[0].parent != -1)
        s_fail("skeleton", "joint count or root");
    int first = 0;
    for (int j = 0; j < b->njoints; j++) {
        const bvh_joint_t *jt = &b->joints[j];
        if ((j && (jt->parent < 0 || jt->parent >= j)) || jt->nch < 0 || jt->nch > 6 ||
            jt->first != first)
            s_fail("skeleton", jt->name);
        first += jt->nch;
    }
    if (first != b->nchannels || b->nframes < 1 || b->nframes > BVH_MAX_FRAMES ||
        !(b->frame_time > 0 && b->frame_time < 10))
        s_fail("header", "channels, frames or frame time");
    for (int64_t i = 0; i < b->nframes * b->nchannels; i++)
        if (!isfinite(b->motion[i])) {
            char d[64];
            snprintf(d, sizeof d, "frame %lld, channel %lld", (long long)(i / b->nchannels),
                     (long long)(i % b->nchannels));
            s_fail("a motion value is not finite", d);
        }
    int C = bvh_feature_dim(b);
    if (C < 1)
        s_fail("feature width", "below 1");
    int64_t nw = bvh_num_windows(b, T, STRIDE, STEP);
    if (nw < 1)
        s_fail("windows", "none");
    float *out = malloc((size_t)T * C * sizeof *out);
    s_check_window(b, 0, out, C);
    s_check_window(b, (nw - 1) * STRIDE, out, C);
    free(out);
    bvh_destroy(&b);
    return 0;
}
