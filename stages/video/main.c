/* main.c: ofa-video, the video tier's worker. It only wires the stage runtime
 * (common/stage.h) to vidstage_process (vidstage.h); see that header for what it does
 * to a sample.
 *
 * Own flags: --max-frames N (refuse clips with more frames; default 100000),
 * --max-pixels N (refuse larger frames; default 4096*4096). */
#include "stage.h"
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

static int s_work(void *ctx, proto_msg_t *msg, char *err, size_t errlen) {
    return vidstage_process(ctx, msg, err, errlen);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    vid_opts_t opts = {0};
    stage_args_t a;
    stage_args_parse(&a, argc, argv,
                     "ofa-video: video tier worker (MP4/AVI/WebM... -> sampled frame patches)\n"
                     "  --max-frames N         refuse clips with more frames (100000)\n"
                     "  --max-pixels N         refuse larger frames (16777216)",
                     s_extra, &opts);
    char err[1024];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "cannot load plan %s:\n%s",
                   a.plan, err);
    vidstage_t *st = vidstage_new(plan, &opts, err, sizeof err);
    if (!st)
        util_fatal("check the plan's frames=, image_size= and patch=",
                   "cannot set up the video tier: %s", err);
    int rc = stage_worker_run(&a, s_work, st);
    vidstage_destroy(&st);
    plan_destroy(&plan);
    return rc;
}
