/* main.c: ofa-video, the video tier's worker. It only wires the stage runtime
 * (common/stage.h) to vidstage_process (vidstage.h) through the main the decoder tiers
 * share (stages/common/decmain.h); see vidstage.h for what it does to a sample.
 *
 * Own flags: --max-frames N (refuse clips with more frames; default 100000),
 * --max-pixels N (refuse larger frames; default 4096*4096). */
#include "decmain.h"
#include "util.h"
#include "vidstage.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

static int s_extra(void *ctx, const char *flag, const char *value) {
    vid_opts_t *o = ctx;
    if (!strcmp(flag, "--max-frames")) {
        o->max_frames = (int64_t)stage_flag_int(flag, value, 1, LONG_MAX);
        return 1;
    }
    if (!strcmp(flag, "--max-pixels")) {
        o->max_pixels = (unsigned long long)stage_flag_int(flag, value, 1, LONG_MAX);
        return 1;
    }
    return 0;
}

static void *s_new(const plan_t *plan, void *opts, char *err, size_t errlen) {
    return vidstage_new(plan, opts, err, errlen);
}

static int s_work(void *st, proto_msg_t *msg, char *err, size_t errlen) {
    return vidstage_process(st, msg, err, errlen);
}

static void s_destroy(void *st) {
    vidstage_t *self = st;
    vidstage_destroy(&self);
}

int main(int argc, char **argv) {
    vid_opts_t opts = {0};
    decmain_t m = {
        .usage = "ofa-video: video tier worker (MP4/AVI/WebM... -> sampled frame patches)\n"
                 "  --max-frames N         refuse clips with more frames (100000)\n"
                 "  --max-pixels N         refuse larger frames (16777216)",
        .extra_fn = s_extra,
        .opts = &opts,
        .new_fn = s_new,
        .destroy_fn = s_destroy,
        .work_fn = s_work,
        .fail = "cannot set up the video tier: ",
        .fail_hint = "check the plan's frames=, image_size= and patch=",
    };
    return decmain_run(argc, argv, &m);
}
