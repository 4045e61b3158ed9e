/* fuzz_video.c: fuzz target for the video tier (vid_process: FFmpeg demuxing from memory,
 * frame counting, decoding, uniform sampling, libswscale to 32 x 32, patches of 16) on
 * arbitrary bytes. The input is the file (MP4, AVI, Matroska, ... or garbage); 2 frames
 * are sampled.
 *
 * The context caps clips at 300 frames, 256 x 256 pixels and 60 s (the defaults would let
 * one forged header cost the fuzzer seconds; the bounds are what is checked, not their
 * size). FFmpeg costs about a millisecond per input even on garbage (probing every
 * demuxer), so this target runs far fewer inputs per second than the parsers.
 *
 * Properties checked beyond "no crash":
 *  - a refusal has a non-empty reason;
 *  - a success reports a frame size within the caps, 1..300 frames, 2 sampled indices
 *    inside the clip and in non-decreasing order, exactly those vid_sample_indices picks,
 *    a 2 x 2 grid and a codec name.
 * Any failure aborts, which the fuzzer reports. */
#include "vidproc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N = 2, S = 32, P = 16, MAX_FRAMES = 300, MAX_SIDE = 256 };

static vid_ctx_t *s_ctx;

static void s_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_video: %s: %s\n", what, detail ? detail : "");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_ctx) {
        vid_opts_t o = {.max_frames = MAX_FRAMES,
                        .max_pixels = (uint64_t)MAX_SIDE * MAX_SIDE,
                        .max_seconds = 60};
        s_ctx = vid_ctx_new(&o);
    }
    static uint8_t patches[N * S * S * 3];
    vid_info_t info;
    char err[256] = "";
    if (vid_process(s_ctx, data, size, N, S, P, patches, NULL, &info, err, sizeof err) != 0) {
        if (!err[0])
            s_fail("refused without a reason", NULL);
        return 0;
    }
    char d[160];
    snprintf(d, sizeof d, "%dx%d, %lld frames, n %d, grid %d", info.w, info.h,
             (long long)info.frames, info.n, info.grid);
    if (info.w < 1 || info.h < 1 || (uint64_t)info.w * (uint64_t)info.h >
        (uint64_t)MAX_SIDE * MAX_SIDE)
        s_fail("frame size outside 1 .. the pixel cap", d);
    if (info.frames < 1 || info.frames > MAX_FRAMES || info.n != N || info.grid != S / P ||
        !info.codec || !info.codec[0])
        s_fail("clip info not sane", d);
    int64_t want[N];
    vid_sample_indices(info.frames, N, want);
    for (int k = 0; k < N; k++) {
        if (info.index[k] < 0 || info.index[k] >= info.frames ||
            (k && info.index[k] < info.index[k - 1]))
            s_fail("sampled index outside the clip or out of order", d);
        if (info.index[k] != want[k])
            s_fail("sampled indices differ from vid_sample_indices", d);
    }
    return 0;
}
