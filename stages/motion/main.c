/* main.c: ofa-motion, the motion tier's worker. It only wires the stage runtime
 * (common/stage.h) to motstage_process (motstage.h) through the main the decoder tiers
 * share (stages/common/decmain.h); see motstage.h for what it does to a sample.
 *
 * Own flags: --window T (frames per sample; default 64), --stride S (between window
 * starts; default T/2), --step K (keep one frame in K; default 4, 120 -> 30 fps),
 * --pos-scale X (multiplies positions; default 0.01). */
#include "motstage.h"
#include "decmain.h"
#include "util.h"

/* The flags are motstage_flag's, which ofa-infer also reads from the plan. */
static int s_extra(void *ctx, const char *flag, const char *value) {
    char err[256];
    int r = motstage_flag(ctx, flag, value, err, sizeof err);
    if (r < 0)
        util_fatal(NULL, "%s", err);
    return r;
}

static void *s_new(const plan_t *plan, void *opts, char *err, size_t errlen) {
    (void)err, (void)errlen;
    return motstage_new(plan, opts);
}

static int s_work(void *st, proto_msg_t *msg, char *err, size_t errlen) {
    return motstage_process(st, msg, err, errlen);
}

static void s_destroy(void *st) {
    motstage_t *self = st;
    motstage_destroy(&self);
}

int main(int argc, char **argv) {
    motstage_opts_t opts = {0};
    decmain_t m = {
        .usage = "ofa-motion: motion tier worker (BVH -> (T, C) root-relative positions "
                 "and 6-D rotations)\n"
                 "  --window T             frames per sample (64)\n"
                 "  --stride S             frames between window starts (T/2)\n"
                 "  --step K               keep one frame in K (4: 120 -> 30 fps)\n"
                 "  --pos-scale X          multiplies positions (0.01)",
        .extra_fn = s_extra,
        .opts = &opts,
        .new_fn = s_new,
        .destroy_fn = s_destroy,
        .work_fn = s_work,
        .fail = "cannot set up the motion tier: ",
    };
    return decmain_run(argc, argv, &m);
}
